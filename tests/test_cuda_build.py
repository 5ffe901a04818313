"""The CUDA metadata kernel's build (cuda_metadata_wrapper): built through apache-tvm-ffi with nvcc
and no GPU, for the architectures asked for, into a cache keyed by everything that makes a
library stale, by one process when several start at once, and with one clear WARNING when it
can't be built. A build is loaded by what the library itself records (its key, its machine
code) with no nvcc, whatever TORCH_CUDA_ARCH_LIST says at run time, and never when stale.

The architecture rule is a pure function of TORCH_CUDA_ARCH_LIST and the device's compute
capability, so it is tested for GPUs this machine doesn't have. The build tests run nvcc (CI's
machine has it, no GPU): the operator's prebuild command for sm_90a and sm_100a, started by six
processes at once into an empty directory, is the build that every later test loads or changes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_metadata_kernel import NSA_DIR, load

WRAPPER = load("cuda_metadata_wrapper")
WRAPPER_PY = NSA_DIR / "cuda_metadata_wrapper.py"
needs_nvcc = pytest.mark.skipif(WRAPPER.cuda_home() is None, reason="no CUDA toolkit (nvcc)")


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
    (None, None, 'no CUDA device here and no TORCH_CUDA_ARCH_LIST: set TORCH_CUDA_ARCH_LIST to '
                 'the GPUs it will serve, e.g. TORCH_CUDA_ARCH_LIST="9.0a;10.0a"'),
])
def test_architectures_that_cannot_be_built_are_refused(arch_list, capability, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        WRAPPER.target_archs(arch_list, capability)


@pytest.mark.parametrize("arch,capability,runs", [
    ("90", (9, 0), True), ("90a", (9, 0), True), ("90a", (10, 0), False), ("80", (8, 6), True),
    ("86", (8, 0), False), ("100a", (10, 0), True), ("100", (12, 0), False), ("120f", (12, 0), True),
])
def test_which_machine_code_runs_on_which_gpu(arch, capability, runs):
    assert WRAPPER.runs_on(arch, capability) is runs


def test_each_architecture_set_gets_its_own_build_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("NSA_FASTPATH_BUILD_DIR", str(tmp_path))
    assert WRAPPER.gencode_flags(["90", "100+PTX"]) == [
        "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_100,code=sm_100",
        "-gencode=arch=compute_100,code=compute_100"]
    key = {"source_sha256": "s", "tvm_ffi": "t", "flags": []}
    dirs = {WRAPPER.key_dir(a, key) for a in (["90"], ["100"], ["90", "100"], ["100+PTX"])}
    assert len(dirs) == 4, dirs
    assert WRAPPER.key_dir(["90"], {**key, "tvm_ffi": "u"}) not in dirs


def this_machine() -> str:
    """What the kernel line says of this machine for a build with code for its GPU: no GPU on
    the CPU tier; the GPU tier's H100 / H200 (sm_90) load it."""
    if not torch.cuda.is_available():
        return "no CUDA device here"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) != (9, 0):
        pytest.skip(f"the builds checked here have no code for sm_{major}{minor}")
    return "this GPU (sm_90) loads it"


# ------------------------------------------------------------------ the prebuild (nvcc, no GPU)
ARCHS = ["90a", "100a"]


def prebuild(build_dir: Path, arch_list: str = "9.0a;10.0a", **env) -> subprocess.Popen:
    """The operator's command, started (not waited for), with the wrapper's own file as main."""
    full = dict(os.environ, NSA_FASTPATH_BUILD_DIR=str(build_dir), TORCH_CUDA_ARCH_LIST=arch_list,
                **env)
    return subprocess.Popen([sys.executable, str(WRAPPER_PY), "--build"], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def compiles(directory: Path) -> int:
    """nvcc runs that ninja recorded in the build directory."""
    log = directory / ".ninja_log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for ln in lines if ln.split("\t")[-2:-1] == ["cuda_0.o"])


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory):
    """Six processes run the prebuild for sm_90a + sm_100a at once, into an empty directory."""
    if WRAPPER.cuda_home() is None:
        pytest.skip("no CUDA toolkit (nvcc)")
    root = tmp_path_factory.mktemp("cuda-build")
    start = time.monotonic()
    procs = [prebuild(root) for _ in range(6)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    elapsed = time.monotonic() - start
    return root, procs, outputs, elapsed


@needs_nvcc
def test_prebuild_builds_hopper_and_blackwell_once_for_six_processes(prebuilt):
    root, procs, outputs, elapsed = prebuilt
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert "ready for sm_90a, sm_100a" in out, out
    (directory,) = root.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    assert compiles(directory) == 1, (directory / ".ninja_log").read_text()
    library = directory / "nsa_fastpath_metadata.so"
    assert {out.strip().rsplit(": ", 1)[-1] for out in outputs} == {str(library)}
    stamp = json.loads((directory / "built.json").read_text())
    assert stamp["archs"] == ARCHS and stamp["nvcc"].startswith("Build cuda_"), stamp
    data = library.read_bytes()  # what the library records about itself
    assert WRAPPER.recorded_key(data) == WRAPPER.build_key()
    assert WRAPPER.binary_archs(data) == ["90", "100"]  # its machine code, from its fatbin
    if shutil.which("cuobjdump"):  # the same as NVIDIA's tool lists
        listing = subprocess.run(["cuobjdump", "--list-elf", str(library)], capture_output=True,
                                 text=True, check=True).stdout
        assert "sm_90a" in listing and "sm_100a" in listing, listing
    print(f"prebuild for sm_90a + sm_100a by 6 processes at once: {elapsed:.1f} s")


@needs_nvcc
def test_a_second_prebuild_finds_it_built(prebuilt):
    root = prebuilt[0]
    (directory,) = root.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    before = (directory / "nsa_fastpath_metadata.so").stat().st_mtime_ns
    start = time.monotonic()
    proc = prebuild(root)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0 and "ready for sm_90a, sm_100a" in out, out
    assert "building" not in out, out
    assert time.monotonic() - start < 10
    assert compiles(directory) == 1
    assert (directory / "nsa_fastpath_metadata.so").stat().st_mtime_ns == before


@pytest.fixture
def cache(prebuilt, monkeypatch):
    """The wrapper pointed at the prebuilt cache, nothing loaded, no TORCH_CUDA_ARCH_LIST."""
    monkeypatch.setenv("NSA_FASTPATH_BUILD_DIR", str(prebuilt[0]))
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.delenv("NSA_FASTPATH_CUDA_JIT", raising=False)
    for name, value in (("_module", None), ("_library", None), ("_error", None)):
        monkeypatch.setattr(WRAPPER, name, value)
    return prebuilt[0]


@needs_nvcc
@pytest.mark.parametrize("capability", [(9, 0), (10, 0)])
def test_a_server_on_either_gpu_finds_the_prebuild(cache, capability):
    library = WRAPPER.library_for_device(capability, allow_build=False)
    assert library.parent.name.startswith("nsa_fastpath_metadata_sm90a_sm100a_")
    import tvm_ffi  # loads without a GPU: what a server does next

    module = tvm_ffi.load_module(str(library))
    assert module.max_bs() == 1024 and module.plan_words() > 20


@needs_nvcc
def test_build_on_a_gpu_without_an_arch_list_finds_the_prebuild(cache, monkeypatch, capsys):
    """`--build` on a serving machine checks what its servers would load: the prebuild."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (10, 0))
    before = sorted(cache.iterdir())
    assert WRAPPER.main(["--build"]) == 0  # found, then loaded (no GPU needed to load it)
    out = capsys.readouterr().out
    assert "nsa_fastpath_metadata_sm90a_sm100a_" in out and "building" not in out, out
    assert sorted(cache.iterdir()) == before


@needs_nvcc
def test_a_gpu_the_prebuild_has_no_code_for_is_reported_not_built(cache):
    with pytest.raises(WRAPPER.BuildError, match=r"no build in .* has code for this GPU \(sm_80\) "
                                                 r"and NSA_FASTPATH_CUDA_JIT=0"):
        WRAPPER.library_for_device((8, 0), allow_build=False)


def _no_toolchain(*args):
    raise AssertionError("a load asked for nvcc")


@needs_nvcc
@pytest.mark.parametrize("arch_list", [None, "8.0", "10.0a", "9.0a;10.0a"])
def test_loading_needs_no_nvcc_and_ignores_the_arch_list(cache, monkeypatch, arch_list):
    """Another nvcc release, or none at all, and any TORCH_CUDA_ARCH_LIST: the prebuild is what a
    server on either GPU loads, and status says so, without asking for nvcc."""
    if arch_list is not None:
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch_list)
    for name in ("cuda_home", "_nvcc_release", "toolchain"):
        monkeypatch.setattr(WRAPPER, name, _no_toolchain)
    (built,) = cache.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    library = built / "nsa_fastpath_metadata.so"
    for capability in ((9, 0), (10, 0)):
        assert WRAPPER.library_for_device(capability, allow_build=True) == library
        monkeypatch.setattr(WRAPPER, "_device_capability", lambda c=capability: c)
        state = WRAPPER.kernel_state()
        assert state["loads"] == str(library) and not state["unavailable"], state
        assert WRAPPER.build_report(state) == (f"built for sm_90a, sm_100a: {library}; this GPU "
                                               f"(sm_{capability[0]}0) loads it")


KEY_CHANGES = {  # each source file and tvm-ffi are in the key; nvcc is not (module docstring)
    "source": lambda mp, tmp: mp.setattr(WRAPPER, "KERNEL", _edited(WRAPPER.KERNEL, tmp)),
    "binding": lambda mp, tmp: mp.setattr(WRAPPER, "BINDING", _edited(WRAPPER.BINDING, tmp)),
    "header": lambda mp, tmp: mp.setattr(WRAPPER, "HEADER", _edited(WRAPPER.HEADER, tmp)),
    "tvm-ffi": lambda mp, tmp: mp.setattr(WRAPPER, "tvm_ffi_version", lambda: "0.1.99"),
}
STALE_BECAUSE = {"source": "built from other sources", "binding": "built from other sources",
                 "header": "built from other sources",
                 "tvm-ffi": "built against tvm-ffi .* \\(installed: 0.1.99\\)"}


def _edited(source: Path, tmp: Path) -> Path:
    edited = tmp / source.name
    edited.write_text(source.read_text() + "\n// edited\n")
    return edited


LIBRARY = "nsa_fastpath_metadata.so"


def restamp(directory: Path, archs: list[str]) -> None:
    """A stamp that matches the directory's library byte for byte and names `archs`."""
    data = (directory / LIBRARY).read_bytes()
    (directory / "built.json").write_text(json.dumps(
        {"archs": archs, "library_sha256": hashlib.sha256(data).hexdigest(), "nvcc": "test"}))


@needs_nvcc
@pytest.mark.parametrize("change", list(KEY_CHANGES))
def test_a_stale_build_is_never_loaded(cache, change, monkeypatch, tmp_path):
    """Build, change one key input, load: no build has code for the GPU (JIT forbidden), the
    stale one is never loaded, and the scan says why."""
    (built,) = cache.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    assert WRAPPER.library_for_device((9, 0), allow_build=False) == built / LIBRARY  # before
    KEY_CHANGES[change](monkeypatch, tmp_path)
    with pytest.raises(WRAPPER.BuildError, match=r"no build in .* has code for this GPU \(sm_90\)"):
        WRAPPER.library_for_device((9, 0), allow_build=False)
    builds, ignored = WRAPPER.scan(WRAPPER.build_key())
    assert builds == [] and len(ignored) == 1, (builds, ignored)
    assert re.fullmatch(f"{built.name}: {STALE_BECAUSE[change]}", ignored[0]), ignored


@needs_nvcc
def test_a_changed_source_is_rebuilt_and_loaded(cache, monkeypatch, tmp_path):
    """The server path with JIT allowed: a new build beside the stale one, which is untouched.
    Then what a library records decides, whatever its directory and stamp say: the new library
    under a stamp naming both architectures (its code is sm_90 only), or under the old build's
    name once the sources are back, is never loaded."""
    (built,) = cache.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    root = tmp_path / "build"  # a copy: the shared cache keeps only the prebuild
    shutil.copytree(cache, root)
    monkeypatch.setenv("NSA_FASTPATH_BUILD_DIR", str(root))
    stale, kernel = root / built.name / LIBRARY, WRAPPER.KERNEL
    KEY_CHANGES["source"](monkeypatch, tmp_path)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")  # one architecture: a quicker build
    fresh = WRAPPER.library_for_device((9, 0), allow_build=True)
    assert fresh.parent != stale.parent and stale.exists() and compiles(fresh.parent) == 1
    assert WRAPPER.recorded_key(fresh.read_bytes()) == WRAPPER.build_key()
    import tvm_ffi

    assert tvm_ffi.load_module(str(fresh)).max_bs() == 1024

    claims_both = WRAPPER.key_dir(ARCHS, WRAPPER.build_key())
    shutil.copytree(fresh.parent, claims_both)
    restamp(claims_both, ARCHS)
    with pytest.raises(WRAPPER.Stale, match=r"its code \(90\) is not for the architectures its "
                                            r"stamp names \(sm_90a, sm_100a\)"):
        WRAPPER.verify(claims_both, WRAPPER.build_key())
    monkeypatch.setattr(WRAPPER, "KERNEL", kernel)  # the sources the prebuild was built from
    stale.write_bytes(fresh.read_bytes())
    restamp(stale.parent, ["90a"])
    with pytest.raises(WRAPPER.Stale, match="built from other sources"):
        WRAPPER.verify(stale.parent, WRAPPER.build_key())
    with pytest.raises(WRAPPER.BuildError, match=r"no build in .* has code for this GPU"):
        WRAPPER.library_for_device((9, 0), allow_build=False)


@needs_nvcc
@pytest.mark.parametrize("damage", ["library", "stamp"])
def test_a_damaged_build_is_not_loaded(cache, damage, monkeypatch, tmp_path):
    (built,) = cache.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    copy = tmp_path / built.name
    shutil.copytree(built, copy)
    monkeypatch.setenv("NSA_FASTPATH_BUILD_DIR", str(tmp_path))
    key = WRAPPER.build_key()
    assert WRAPPER.verify(copy, key).library == copy / LIBRARY
    target = copy / (LIBRARY if damage == "library" else "built.json")
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(WRAPPER.Stale, match="damaged" if damage == "library" else "unreadable"):
        WRAPPER.verify(copy, key)
    with pytest.raises(WRAPPER.BuildError, match=r"no build in .* has code for this GPU"):
        WRAPPER.library_for_device((9, 0), allow_build=False)
    if damage == "library":  # allowed to build: rebuilt from scratch (ninja would keep the file)
        rebuilt = WRAPPER.build(ARCHS)
        assert rebuilt == copy / LIBRARY and compiles(copy) == 1
        assert WRAPPER.verify(copy, key).library == rebuilt


# ------------------------------------------------------------------ failures: one WARNING, no raise
def _server_start(monkeypatch, caplog, capability=(9, 0)):
    """is_cuda_kernel_available() as replay_fastpath calls it at capture, on a pretend GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=WRAPPER.__name__):
        ok = WRAPPER.is_cuda_kernel_available()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not ok and len(warnings) == 1, warnings
    assert WRAPPER.is_cuda_kernel_available() is False  # decided once per process
    return warnings[0]


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NSA_FASTPATH_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.delenv("NSA_FASTPATH_CUDA_JIT", raising=False)
    for name, value in (("_module", None), ("_library", None), ("_error", None)):
        monkeypatch.setattr(WRAPPER, name, value)
    return tmp_path / "build"


def test_no_nvcc_is_one_warning_with_the_next_step(empty_cache, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-cuda"))
    msg = _server_start(monkeypatch, caplog)
    assert "no nvcc found" in msg and "set CUDA_HOME" in msg and "Triton path" in msg, msg


@needs_nvcc
def test_an_architecture_nvcc_lacks_is_one_warning_with_the_next_step(empty_cache, monkeypatch,
                                                                       caplog):
    msg = _server_start(monkeypatch, caplog, capability=(9, 9))  # no such GPU: nvcc refuses it
    assert "does not support sm_99" in msg and "TORCH_CUDA_ARCH_LIST" in msg, msg


def test_a_gpu_below_sm80_is_one_warning(empty_cache, monkeypatch, caplog):
    msg = _server_start(monkeypatch, caplog, capability=(7, 5))
    assert "unsupported architecture" in msg and "sm_80 or newer" in msg, msg


def test_a_gpu_below_sm80_is_named_whatever_the_arch_list(empty_cache, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")  # as CUDA images set it
    msg = _server_start(monkeypatch, caplog, capability=(7, 5))
    assert "this GPU is sm_75" in msg and "sm_80 or newer" in msg and "add 7.5" not in msg, msg


def test_an_arch_list_without_this_gpu_is_one_warning(empty_cache, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "10.0a")
    msg = _server_start(monkeypatch, caplog, capability=(9, 0))
    assert "no build has code for this GPU (sm_90) and TORCH_CUDA_ARCH_LIST=10.0a has no machine " \
        "code for it either: add 9.0 to it" in msg, msg


@needs_nvcc
def test_a_failing_compile_is_one_warning_naming_the_log(empty_cache, monkeypatch, caplog,
                                                         tmp_path):
    broken = tmp_path / "cuda_metadata_kernel.cu"
    broken.write_text(WRAPPER.KERNEL.read_text().replace("const int64_t col0 =",
                                                         "const int64_t col0 = ;"))
    monkeypatch.setattr(WRAPPER, "KERNEL", broken)
    msg = _server_start(monkeypatch, caplog)
    assert "the compile failed" in msg and "error" in msg and "build.log" in msg, msg
    log = Path(msg.split("compiler output: ")[1].split(";")[0])
    assert "col0" in log.read_text()


@needs_nvcc
def test_an_unwritable_build_directory_is_one_warning(empty_cache, monkeypatch, caplog):
    # sysfs: nobody, root included, can create a directory there
    monkeypatch.setenv("NSA_FASTPATH_BUILD_DIR", "/sys/nsa-fastpath-build")
    msg = _server_start(monkeypatch, caplog)
    assert "/sys/nsa-fastpath-build" in msg and "not writable" in msg, msg
    assert "NSA_FASTPATH_BUILD_DIR" in msg and "--build" in msg, msg


@needs_nvcc
def test_jit_forbidden_and_not_built_is_one_warning(empty_cache, monkeypatch, caplog):
    monkeypatch.setenv("NSA_FASTPATH_CUDA_JIT", "0")
    msg = _server_start(monkeypatch, caplog)
    assert "no build in" in msg and "has code for this GPU (sm_90)" in msg, msg
    assert "NSA_FASTPATH_CUDA_JIT=0" in msg and "--build" in msg, msg
    assert not empty_cache.exists()  # nothing was attempted


# ------------------------------------------------------------------ apply.sh apply --build / status
@needs_nvcc
def test_apply_build_applies_then_builds_into_the_cache(fresh_site, tmp_path):
    from conftest import run_apply

    env = {"NSA_FASTPATH_BUILD_DIR": str(tmp_path / "build"), "TORCH_CUDA_ARCH_LIST": "9.0a"}
    p = run_apply("apply", "--build", "--target", str(fresh_site), env=env)
    assert "ready for sm_90a" in p.stdout, p.stdout
    (directory,) = (tmp_path / "build").glob("nsa_fastpath_metadata_sm90a_*")
    assert compiles(directory) == 1
    env["NSA_FASTPATH_STATUS_FILES_ONLY"] = "0"
    st = run_apply("status", "--target", str(fresh_site), env=env)
    assert (f"CUDA metadata kernel: built for sm_90a: {directory / 'nsa_fastpath_metadata.so'}; "
            f"{this_machine()}\n") in st.stdout, st.stdout
    p = run_apply("apply", "--build", "--target", str(fresh_site), env=env)  # a no-op, then found
    assert "ready for sm_90a" in p.stdout and compiles(directory) == 1, p.stdout


def test_apply_build_that_fails_says_why_after_applying(fresh_site, tmp_path):
    from conftest import run_apply

    env = {"NSA_FASTPATH_BUILD_DIR": str(tmp_path / "build"), "TORCH_CUDA_ARCH_LIST": "9.0a",
           "CUDA_HOME": str(tmp_path / "no-cuda")}
    p = run_apply("apply", "--build", "--target", str(fresh_site), env=env, check=False)
    assert p.returncode == 10, (p.stdout, p.stderr)
    assert "no nvcc found" in p.stderr and "the patch set is applied" in p.stderr, p.stderr
    st = run_apply("status", "--target", str(fresh_site), env={**env, "CUDA_HOME": ""})
    assert "patched" in st.stdout


def test_at_capture_an_unbuildable_kernel_is_one_warning_and_triton_serves(nsa_modules, monkeypatch,
                                                                           caplog, tmp_path):
    """replay_fastpath's launcher choice at capture, with the CUDA kernel unbuildable (a GPU
    below sm_80, pretended): the wrapper's WARNING is the only one, the Triton launcher is next."""
    from sglang.srt.layers.attention.nsa import replay_fastpath as rf

    cw = nsa_modules.cuda
    monkeypatch.setenv("NSA_FASTPATH_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")  # as CUDA images set it
    for name, value in (("_module", None), ("_library", None), ("_error", None)):
        monkeypatch.setattr(cw, name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    rf.reset_for_tests()
    plan = rf._Plan.__new__(rf._Plan)  # only the launcher choice, no backend
    plan.launchers = [["cuda", None, None], ["triton", None, None]]
    triton_fill = object()
    monkeypatch.setattr(rf._Plan, "_triton", lambda self: (triton_fill, None))
    with caplog.at_level(logging.INFO):
        plan._load_first_launcher()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "sm_80 or newer" in warnings[0], warnings
    assert plan.launchers == [["triton", triton_fill, None]]
    assert "sm_80 or newer" in rf.path_report()["disabled"]["cuda"]
    rf.reset_for_tests()


# ------------------------------------------------------------------ a process without nvcc
_NVCC_LOOKUP = """
import importlib.util, shutil, sys
spec = importlib.util.spec_from_file_location("cuda_metadata_wrapper", sys.argv[1])
w = importlib.util.module_from_spec(spec)
spec.loader.exec_module(w)
print(shutil.which("nvcc"), w.cuda_home())
"""


def without_nvcc(tmp: Path, **env) -> dict:
    """os.environ then `env`, as a process in a serving image without the CUDA toolkit has it:
    no nvcc on PATH, no CUDA_HOME or CUDA_PATH. Where the toolkit the wrapper falls back to
    (/usr/local/cuda) has an nvcc, which can't be removed from this machine, CUDA_HOME names a
    toolkit directory with its libraries and no nvcc instead, as a CUDA runtime image's
    /usr/local/cuda is. Asserted: neither PATH nor the wrapper's own lookup finds an nvcc."""
    full = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    full["PATH"] = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                                   if d and not (Path(d) / "nvcc").exists())
    fallback = Path("/usr/local/cuda")
    if (fallback / "bin" / "nvcc").exists():
        runtime = tmp / "cuda-runtime"
        runtime.mkdir(exist_ok=True)
        if not (runtime / "lib64").exists():
            (runtime / "lib64").symlink_to((fallback / "lib64").resolve())
        full["CUDA_HOME"] = str(runtime)
    full.update(env)
    lookup = subprocess.run([sys.executable, "-c", _NVCC_LOOKUP, str(WRAPPER_PY)], env=full,
                            capture_output=True, text=True, check=True).stdout
    assert lookup.split() == ["None", "None"], lookup
    return full


_SERVE_EACH_GPU = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("cuda_metadata_wrapper", sys.argv[1])
w = importlib.util.module_from_spec(spec)
spec.loader.exec_module(w)
out = {}
for capability in [(9, 0), (10, 0)]:  # no GPU here: what a server on each GPU of the prebuild does
    w._module = w._library = w._error = None
    w._device_capability = lambda c=capability: c
    ok = w.is_cuda_kernel_available()  # the server's call at capture: find, check, load
    out[f"sm_{capability[0]}{capability[1]}"] = {
        "ok": ok, "info": w.get_kernel_info(), "report": w.build_report()}
print(json.dumps(out))
"""


@needs_nvcc
def test_a_prebuild_loads_in_a_process_without_nvcc(prebuilt, tmp_path):
    """Built in one process (the prebuild, with nvcc), loaded in another whose environment has no
    nvcc and TORCH_CUDA_ARCH_LIST=8.0 (a list without either GPU), with run-time builds allowed:
    the server's own call finds the prebuild for sm_90 and for sm_100, checks it, loads it
    (tvm-ffi loads it without a GPU) and builds nothing; status's line says the same. The GPU
    tier serves from it (test_a_prebuild_serves_metadata_cuda_from_a_process_without_nvcc)."""
    root = prebuilt[0]
    (directory,) = root.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    library = directory / LIBRARY
    before = sorted(p.name for p in root.rglob("*"))
    env = without_nvcc(tmp_path, NSA_FASTPATH_BUILD_DIR=str(root), TORCH_CUDA_ARCH_LIST="8.0")
    env.pop("NSA_FASTPATH_CUDA_JIT", None)
    proc = subprocess.run([sys.executable, "-c", _SERVE_EACH_GPU, str(WRAPPER_PY)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for sm, result in json.loads(proc.stdout.strip().splitlines()[-1]).items():
        assert result["ok"] and result["info"]["library"] == str(library), (sm, result)
        assert result["info"]["max_bs"] == 1024, result
        assert result["report"] == f"built for sm_90a, sm_100a: {library}; this GPU ({sm}) loads it"
    assert "building" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing built or changed


# ------------------------------------------------------------------ GPU tier
_SERVER_START = """
import importlib.util, json, sys, time
t0 = time.monotonic()
spec = importlib.util.spec_from_file_location("cuda_metadata_wrapper", sys.argv[1])
w = importlib.util.module_from_spec(spec)
spec.loader.exec_module(w)
ok = w.is_cuda_kernel_available()
print(json.dumps({"ok": ok, "seconds": time.monotonic() - t0, "info": w.get_kernel_info()}))
"""


@pytest.mark.gpu
def test_eight_processes_starting_at_once_build_once_and_all_load(tmp_path):
    """A TP-8 server's start on one GPU: eight processes reach capture at once with an empty
    cache and no TORCH_CUDA_ARCH_LIST; one builds for this GPU, the others wait and load it."""
    env = dict(os.environ, NSA_FASTPATH_BUILD_DIR=str(tmp_path))
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    procs = [subprocess.Popen([sys.executable, "-c", _SERVER_START, str(WRAPPER_PY)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["ok"] for r in results), [r["info"]["error"] for r in results]
    (directory,) = {Path(r["info"]["library"]).parent for r in results}
    assert compiles(directory) == 1
    waits = sorted(r["seconds"] for r in results)
    print(f"eight processes at once, empty cache: one build; ready after {waits[0]:.1f} .. "
          f"{waits[-1]:.1f} s (import and load included)")


def test_apply_build_is_refused_where_it_cannot_build(tmp_path):
    from conftest import run_apply

    for args in (["revert", "--build"], ["status", "--build"], ["apply", "--build", "--git", str(tmp_path)]):
        p = run_apply(*args, check=False)
        assert p.returncode == 2 and "--build goes with apply" in p.stderr, (args, p.stderr)


@pytest.mark.gpu
def test_a_prebuild_serves_metadata_cuda_from_a_process_without_nvcc(pristine_template,
                                                                      patched_template, tmp_path):
    """The image recipe on a GPU: the prebuild for "9.0a;10.0a" in one process (nvcc), then
    SGLang's own CUDA-graph runners capture and replay in another process whose environment has
    no nvcc, no CUDA_HOME (see without_nvcc) and TORCH_CUDA_ARCH_LIST=8.0, run-time builds
    allowed: metadata.cuda serves every replay, from the prebuild, with parity to SGLang."""
    from harness.parity import run_suite
    from harness.served import expected_served
    from test_parity_nsa import check_patched

    capability = torch.cuda.get_device_capability()
    if capability not in ((9, 0), (10, 0)):
        pytest.skip(f"the image's prebuild (sm_90a, sm_100a) has no code for sm_{capability[0]}"
                    f"{capability[1]}")
    root = tmp_path / "build"
    wrapper = patched_template / "sglang/srt/layers/attention/nsa/cuda_metadata_wrapper.py"
    p = subprocess.run([sys.executable, str(wrapper), "--build"], capture_output=True, text=True,
                       env=dict(os.environ, NSA_FASTPATH_BUILD_DIR=str(root),
                                TORCH_CUDA_ARCH_LIST="9.0a;10.0a"), timeout=600)
    assert p.returncode == 0 and "ready for sm_90a, sm_100a" in p.stdout, p.stdout + p.stderr
    (directory,) = root.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    env = without_nvcc(tmp_path, NSA_FASTPATH_BUILD_DIR=str(root), TORCH_CUDA_ARCH_LIST="8.0")
    overrides = {k: env.get(k, "") for k in ("PATH", "CUDA_HOME", "CUDA_PATH",
                                             "NSA_FASTPATH_BUILD_DIR", "TORCH_CUDA_ARCH_LIST")}
    configs = [{"kind": "single", "page_size": 64, "topk": 2048, "capture_bs": [1, 8, 32],
                "replays_per_bs": 2}]
    expected = run_suite(pristine_template, "nsa", configs, device="cuda")
    actual = run_suite(patched_template, "nsa", configs, device="cuda",
                       env={**overrides, "NSA_FASTPATH_CUDA_JIT": "1"})
    check_patched(expected, actual, strict=False,
                  served=expected_served(actual["_meta/replays"], "cuda"))
    log = actual["_meta/stderr"]
    assert f"nsa-fastpath: CUDA metadata kernel loaded from {directory / LIBRARY}" in log, log[-3000:]
    assert "building the CUDA metadata kernel" not in log, log[-3000:]
