"""The CUDA extension builds for the GPU it runs on (cuda_metadata_wrapper's architecture rule),
and its kernel source compiles for Hopper and Blackwell alike.

The rule is a pure function of TORCH_CUDA_ARCH_LIST and the device's compute capability, so it
is tested here for GPUs this machine doesn't have. The compile test runs nvcc (on CI's machine)
on the kernel part of cuda_metadata_kernel.cu, the part with the device code, for sm_90 and
sm_100 in one fat build with the flags the wrapper passes: nothing in it is sm_90-only.
"""
import shutil
import subprocess

import pytest
from test_metadata_kernel import NSA_DIR, load

WRAPPER = load("cuda_metadata_wrapper")


@pytest.mark.parametrize("arch_list,capability,expected", [
    (None, (9, 0), ["90"]),  # H100 / H200
    ("", (10, 0), ["100"]),  # B200 / GB200
    ("native", (12, 0), ["120"]),
    ("9.0;10.0", (9, 0), ["90", "100"]),
    ("9.0a 10.0+PTX", None, ["90a", "100+PTX"]),
    ("8.0,9.0", (10, 0), ["80", "90"]),  # the list wins over the device
])
def test_architectures_follow_torch_cuda_arch_list_then_the_device(arch_list, capability, expected):
    assert WRAPPER.target_archs(arch_list, capability) == expected


@pytest.mark.parametrize("arch_list,capability,message", [
    (None, (7, 5), "sm_80 or newer"),
    ("7.0", (9, 0), "sm_80 or newer"),
    ("Hopper", (9, 0), "expected e.g. 9.0"),
    (None, None, "no CUDA device"),
])
def test_architectures_that_cannot_be_built_are_refused(arch_list, capability, message):
    with pytest.raises(ValueError, match=message):
        WRAPPER.target_archs(arch_list, capability)


def test_each_architecture_set_gets_its_own_build():
    assert WRAPPER.gencode_flags(["90", "100+PTX"]) == [
        "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_100,code=sm_100",
        "-gencode=arch=compute_100,code=compute_100"]
    names = {WRAPPER.extension_name(a) for a in (["90"], ["100"], ["90", "100"], ["100+PTX"])}
    assert len(names) == 4, names


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_kernel_compiles_for_hopper_and_blackwell(tmp_path):
    flags = WRAPPER.gencode_flags(WRAPPER.target_archs("9.0;10.0", None))
    obj = tmp_path / "kernel.o"
    proc = subprocess.run(["nvcc", "-std=c++17", "-O3", *flags, "-c",
                           str(NSA_DIR / "cuda_metadata_kernel.cu"), "-o", str(obj)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("cuobjdump"):  # where it is installed: both machine codes are in the object
        listing = subprocess.run(["cuobjdump", "--list-elf", str(obj)], capture_output=True,
                                 text=True, check=True)
        assert "sm_90" in listing.stdout and "sm_100" in listing.stdout, listing.stdout
