"""The CUDA metadata kernel's build (cuda_metadata_wrapper): built through apache-tvm-ffi with nvcc
and no GPU, for the architectures asked for, into a cache keyed by everything that makes a
library stale, by one process when several start at once, and with one clear WARNING when it
can't be built.

The architecture rule is a pure function of TORCH_CUDA_ARCH_LIST and the device's compute
capability, so it is tested for GPUs this machine doesn't have. The build tests run nvcc (CI's
machine has it, no GPU): the operator's prebuild command for sm_90a and sm_100a, started by six
processes at once into an empty directory, is the build that every later test loads or changes.
"""
from __future__ import annotations

import json
import logging
import os
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
    (None, None, "no CUDA device"),
])
def test_architectures_that_cannot_be_built_are_refused(arch_list, capability, message):
    with pytest.raises(ValueError, match=message):
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
    key = {"source_sha256": "s", "nvcc": "n", "tvm_ffi": "t", "flags": []}
    dirs = {WRAPPER.key_dir({**key, "archs": a}) for a in (["90"], ["100"], ["90", "100"], ["100+PTX"])}
    assert len(dirs) == 4, dirs


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
    assert stamp["key"]["archs"] == ARCHS
    if shutil.which("cuobjdump"):  # both machine codes are in the library
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
    with pytest.raises(WRAPPER.BuildError, match="not built for sm_80 .*NSA_FASTPATH_CUDA_JIT=0"):
        WRAPPER.library_for_device((8, 0), allow_build=False)


KEY_CHANGES = {  # each source file is in the key
    "source": lambda mp, tmp: mp.setattr(WRAPPER, "KERNEL", _edited(WRAPPER.KERNEL, tmp)),
    "binding": lambda mp, tmp: mp.setattr(WRAPPER, "BINDING", _edited(WRAPPER.BINDING, tmp)),
    "header": lambda mp, tmp: mp.setattr(WRAPPER, "HEADER", _edited(WRAPPER.HEADER, tmp)),
    "nvcc": lambda mp, tmp: mp.setattr(WRAPPER, "_nvcc_release", lambda nvcc: "Build cuda_13.9.r13.9"),
    "tvm-ffi": lambda mp, tmp: mp.setattr(WRAPPER, "tvm_ffi_version", lambda: "0.1.99"),
}


def _edited(source: Path, tmp: Path) -> Path:
    edited = tmp / source.name
    edited.write_text(source.read_text() + "\n// edited\n")
    return edited


@needs_nvcc
@pytest.mark.parametrize("change", list(KEY_CHANGES))
def test_a_stale_build_is_never_loaded(cache, change, monkeypatch, tmp_path):
    """Build, change one key input, load: reported not built (JIT forbidden), never loaded."""
    assert WRAPPER.library_for_device((9, 0), allow_build=False)  # the build, before
    KEY_CHANGES[change](monkeypatch, tmp_path)
    with pytest.raises(WRAPPER.BuildError, match="not built for sm_90 "):
        WRAPPER.library_for_device((9, 0), allow_build=False)
    with pytest.raises(WRAPPER.BuildError, match="not built for sm_90a, sm_100a "):
        WRAPPER.build(ARCHS, allow_build=False)


@needs_nvcc
def test_a_changed_source_is_rebuilt_and_loaded(cache, monkeypatch, tmp_path):
    """The server path with JIT allowed: a new build beside the stale one, which is untouched."""
    stale = WRAPPER.library_for_device((9, 0), allow_build=False)
    KEY_CHANGES["source"](monkeypatch, tmp_path)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")  # one architecture: a quicker build
    fresh = WRAPPER.library_for_device((9, 0), allow_build=True)
    assert fresh.parent != stale.parent and stale.exists()
    assert json.loads((fresh.parent / "built.json").read_text())["key"]["source_sha256"] == \
        WRAPPER.build_key(["90a"])["source_sha256"]
    import tvm_ffi

    assert tvm_ffi.load_module(str(fresh)).max_bs() == 1024


@needs_nvcc
@pytest.mark.parametrize("damage", ["library", "stamp"])
def test_a_damaged_build_is_not_loaded(cache, damage, monkeypatch, tmp_path):
    (built,) = cache.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    copy = tmp_path / built.name
    shutil.copytree(built, copy)
    monkeypatch.setenv("NSA_FASTPATH_BUILD_DIR", str(tmp_path))
    assert WRAPPER.build(ARCHS, allow_build=False) == copy / "nsa_fastpath_metadata.so"
    target = copy / ("nsa_fastpath_metadata.so" if damage == "library" else "built.json")
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(WRAPPER.BuildError, match="not built"):
        WRAPPER.build(ARCHS, allow_build=False)
    if damage == "library":  # allowed to build: rebuilt from scratch (ninja would keep the file)
        rebuilt = WRAPPER.build(ARCHS, allow_build=True)
        assert rebuilt == copy / "nsa_fastpath_metadata.so" and compiles(copy) == 1
        assert WRAPPER.build(ARCHS, allow_build=False) == rebuilt


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
    assert "no machine code for this GPU (sm_90)" in msg and "add 9.0" in msg, msg


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
    assert "not built for sm_90" in msg and "--build" in msg, msg
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
    assert (f"CUDA metadata kernel: built for TORCH_CUDA_ARCH_LIST=9.0a (sm_90a): "
            f"{directory / 'nsa_fastpath_metadata.so'}") in st.stdout, st.stdout
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
