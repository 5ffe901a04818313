# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""nsa-fastpath: build, load and call the CUDA replay-metadata kernel (cuda_metadata_kernel.cu).

How it is built: SGLang's own JIT-kernel mechanism, apache-tvm-ffi (which SGLang 0.5.8 requires;
`sglang.jit_kernel` builds its kernels with it). `tvm_ffi.cpp.build` runs, through ninja and at
once, nvcc on the GPU code (cuda_metadata_kernel.cu) and the host C++ compiler on the tvm-ffi
binding (cuda_metadata_binding.cc; what both use is cuda_metadata_kernel.cuh): nvcc never sees
the tvm-ffi headers, which doubled its work. Tensors cross as DLPack, so no torch header is
compiled and the library does not depend on the torch it runs with. We call tvm_ffi.cpp.build
directly rather than sglang.jit_kernel's `load_jit` because load_jit only takes sources under
sglang/jit_kernel/csrc, always loads what it builds (a prebuild has no GPU), takes its
architectures from nvidia-smi or TVM_FFI_CUDA_ARCH_LIST only, and keys its cache by the generated
include line, not by the source, the CUDA toolkit or tvm-ffi: the mechanism underneath is the same.

For which GPUs: the architectures in `TORCH_CUDA_ARCH_LIST` when set ("9.0a;10.0a", as for any
PyTorch extension), otherwise the current device's compute capability. A prebuild needs nvcc but
no GPU:

    TORCH_CUDA_ARCH_LIST="9.0a;10.0a" python -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build

Where: `$NSA_FASTPATH_BUILD_DIR` (default ~/.cache/nsa-fastpath/build), one directory per build,
`nsa_fastpath_metadata_<archs>_<key>`. The key hashes everything that makes a binary
incompatible or stale: the kernel's sources, the nvcc release, the tvm-ffi version and the flags
(the architectures are in the name). A build is used only when its stamp (built.json, written
after the library, with the library's sha256) matches the key computed now, so after an upgrade
it is rebuilt, or reported not built, never loaded stale. A server with no TORCH_CUDA_ARCH_LIST
uses any matching build with machine code for its GPU (a prebuild for "9.0a;10.0a" serves an
H200 and a B200).

When: `is_cuda_kernel_available()` at CUDA-graph capture (replay_fastpath), never on a replay:
it loads the build, building it first unless `NSA_FASTPATH_CUDA_JIT=0`. Processes starting
together (one per GPU) share one build: the builder holds a file lock in the build directory
(and clears whatever an unstamped directory held); the others wait, then find it built. A failure (no nvcc, an architecture the GPU or
nvcc doesn't support, a failing compile, an unwritable build directory) is logged once as a
WARNING naming the cause and the next step; the next replay path (Triton) serves.

`make_plan(...)` returns a FillPlan: everything of one captured (backends, bs, mode) that does
not change between replays, so a replay is `plan.fill(req_pool_indices, seq_lens,
accept_length)` (one launch) and `plan.copy_schedule(new_schedule)` (one launch).

Imports torch lazily and sglang never: tests load this file on its own.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

HEADER = Path(__file__).with_name("cuda_metadata_kernel.cuh")  # shared by the two below
KERNEL = Path(__file__).with_name("cuda_metadata_kernel.cu")  # device code and launchers: nvcc
BINDING = Path(__file__).with_name("cuda_metadata_binding.cc")  # tvm-ffi host side: c++
PREFIX = "nsa_fastpath_metadata"
STAMP = "built.json"
LOCK = "build.lock"
MIN_CAPABILITY = (8, 0)
EXTRA_CUDA_CFLAGS: list[str] = []  # tvm-ffi's defaults (-O2 host, ptxas -O3) are what we need
# Request-id search in the CUDA kernel: linear below this bs, binary from it. Measured on an
# H200 (docs/BENCHMARKS.md, "CUDA C++ request search"): within 2% of each other below bs 32,
# binary faster from 32 (11.1 vs 12.1 us) to 256 (14.0 vs 22.8 us). NSA_FASTPATH_BINARY_SEARCH_BS
# overrides it.
BINARY_SEARCH_MIN_BS = int(os.environ.get("NSA_FASTPATH_BINARY_SEARCH_BS", "32"))
PREBUILD = "python -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build"

_module = None  # the loaded tvm-ffi module
_library: Path | None = None
_error: str | None = None


class BuildError(RuntimeError):
    """Why the kernel can't be built or loaded here, and what to do about it."""


def jit_allowed() -> bool:
    return os.environ.get("NSA_FASTPATH_CUDA_JIT", "1") != "0"


def build_dir() -> Path:
    default = Path.home() / ".cache" / "nsa-fastpath" / "build"
    return Path(os.environ.get("NSA_FASTPATH_BUILD_DIR") or default)


# ------------------------------------------------------------------ architectures
def target_archs(arch_list: str | None, capability: tuple[int, int] | None) -> list[str]:
    """The architectures to build for, e.g. ["90"], ["90a", "100a"], ["100+PTX"].

    `arch_list` is TORCH_CUDA_ARCH_LIST ("9.0;10.0", "9.0a 10.0+PTX", "8.0,9.0"); empty, unset or
    "native" means the current device's `capability`. Named lists ("Hopper") are not accepted:
    name the numbers. Raises ValueError for what can't be built.
    """
    if arch_list and arch_list.strip() and arch_list.strip() != "native":
        archs = []
        for entry in re.split(r"[;, ]+", arch_list.strip()):
            m = re.fullmatch(r"(\d+)\.(\d)([af]?)(\+PTX)?", entry)
            if not m:
                raise ValueError(f"TORCH_CUDA_ARCH_LIST entry {entry!r}: expected e.g. 9.0, 10.0a, 12.0+PTX")
            major, minor, suffix, ptx = m.groups()
            if (int(major), int(minor)) < MIN_CAPABILITY:
                raise ValueError(f"TORCH_CUDA_ARCH_LIST entry {entry!r}: sm_80 or newer is needed")
            archs.append(f"{major}{minor}{suffix}{ptx or ''}")
        return archs
    if capability is None:
        raise ValueError("no CUDA device and no TORCH_CUDA_ARCH_LIST: nothing to build for")
    if tuple(capability) < MIN_CAPABILITY:
        raise ValueError(f"this GPU is sm_{capability[0]}{capability[1]}; sm_80 or newer is needed")
    return [f"{capability[0]}{capability[1]}"]


def gencode_flags(archs: list[str]) -> list[str]:
    """nvcc flags for `target_archs`: machine code for each, plus PTX where "+PTX" asks for it."""
    flags = []
    for arch in archs:
        sm = arch.removesuffix("+PTX")
        flags.append(f"-gencode=arch=compute_{sm},code=sm_{sm}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{sm},code=compute_{sm}")
    return flags


def runs_on(arch: str, capability: tuple[int, int]) -> bool:
    """Whether machine code for `arch` runs on a GPU of `capability`: "90a"/"100f" on that exact
    GPU, plain "90" on 9.0 and later 9.x (PTX-only code is not counted)."""
    m = re.fullmatch(r"(\d+)(\d)([af]?)(\+PTX)?", arch)
    major, minor, suffix = int(m[1]), int(m[2]), m[3]
    if suffix:
        return (major, minor) == tuple(capability)
    return major == capability[0] and minor <= capability[1]


def arch_tag(archs: list[str]) -> str:
    return "_".join(f"sm{a.replace('+PTX', 'ptx')}" for a in archs)


def describe_archs(archs: list[str]) -> str:
    return ", ".join(f"sm_{a}" for a in archs)


# ------------------------------------------------------------------ toolchain and cache key
def cuda_home() -> Path | None:
    """The CUDA toolkit with nvcc and libcudart: $CUDA_HOME / $CUDA_PATH, else nvcc's on PATH,
    else /usr/local/cuda (a wrapper nvcc on PATH may not sit inside its toolkit)."""
    given = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [Path(given)] if given else []
    nvcc = shutil.which("nvcc")
    if nvcc and not given:
        candidates += [Path(nvcc).resolve().parent.parent, Path("/usr/local/cuda")]
    elif not given:
        candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if (home / "bin" / "nvcc").is_file() and (home / "lib64").is_dir():
            return home
    return None


@lru_cache(maxsize=None)
def _nvcc_release(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise BuildError(f"{nvcc} --version failed ({out.stderr.strip()[-200:]}): check the CUDA "
                         f"toolkit installation, or set CUDA_HOME to a working one")
    return lines[-1]  # "Build cuda_13.0.r13.0/compiler.36424714_0"


def tvm_ffi_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-tvm-ffi")
    except PackageNotFoundError:
        raise BuildError("apache-tvm-ffi is not installed (SGLang 0.5.8 requires it): "
                         "pip install 'apache-tvm-ffi>=0.1.5,<0.2'") from None


def build_key(archs: list[str]) -> dict:
    """Everything that makes a built library incompatible or stale; BuildError without nvcc."""
    home = cuda_home()
    if home is None:
        raise BuildError("no nvcc found (CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda): install "
                         "the CUDA toolkit or set CUDA_HOME, then prebuild with "
                         f"`TORCH_CUDA_ARCH_LIST=... {PREBUILD}`")
    return {
        "source_sha256": _sources_sha256(),
        "archs": list(archs),
        "nvcc": _nvcc_release(str(home / "bin" / "nvcc")),
        "tvm_ffi": tvm_ffi_version(),
        "flags": EXTRA_CUDA_CFLAGS,
    }


def _sources_sha256() -> str:
    digest = hashlib.sha256()
    for path in (HEADER, KERNEL, BINDING):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _fingerprint(key: dict) -> str:
    rest = {k: v for k, v in key.items() if k != "archs"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:16]


def key_dir(key: dict) -> Path:
    return build_dir() / f"{PREFIX}_{arch_tag(key['archs'])}_{_fingerprint(key)}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _built(directory: Path, key: dict) -> Path | None:
    """The library in `directory` if its stamp says it was built for exactly `key` and the file
    is the one the stamp describes; None otherwise (nothing read from disk is trusted)."""
    library = directory / f"{PREFIX}.so"
    try:
        stamp = json.loads((directory / STAMP).read_text())
        ok = isinstance(stamp, dict) and stamp.get("key") == key and \
            stamp.get("library_sha256") == _sha256(library)
    except (OSError, ValueError):
        return None
    return library if ok else None


# ------------------------------------------------------------------ build
def _ninja_dir() -> str | None:
    """Directory of a ninja binary: on PATH, beside this Python (a venv), or pip's package."""
    found = shutil.which("ninja")
    if found:
        return str(Path(found).parent)
    beside = Path(sys.executable).parent / "ninja"
    if beside.exists():
        return str(beside.parent)
    try:
        import ninja

        return str(ninja.BIN_DIR)
    except Exception:
        return None


@contextmanager
def _environ(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _build_lock(directory: Path):
    """One builder per build directory: an flock (the kernel releases it if the holder dies)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise BuildError(f"the build directory {directory} is not writable ({e.strerror}): set "
                         "NSA_FASTPATH_BUILD_DIR to a writable directory, or prebuild there with "
                         f"`{PREBUILD}`") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _clear(directory: Path) -> None:
    """Everything but our lock: files without a valid stamp are half built, damaged or stale,
    and ninja would take an existing output as up to date."""
    for entry in directory.iterdir():
        if entry.name != LOCK:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _compile_error(message: str, archs: list[str], key: dict, log: Path) -> BuildError:
    if re.search(r"[Uu]nsupported gpu architecture|not defined for option 'gpu-name'", message):
        return BuildError(
            f"nvcc ({key['nvcc']}) does not support {describe_archs(archs)}: set "
            f"TORCH_CUDA_ARCH_LIST to architectures it supports, or use a newer CUDA toolkit "
            f"(compiler output: {log})")
    lines = [ln for ln in message.splitlines() if "error" in ln.lower()]
    first = lines[0].strip() if lines else message.strip().splitlines()[0]
    return BuildError(f"the compile failed ({first[:300]}); compiler output: {log}; "
                      f"`{PREBUILD}` repeats it")


def build(archs: list[str], *, allow_build: bool = True) -> Path:
    """The built library for `archs`: found in the cache, else built there and stamped.

    Concurrent callers build once: the first takes the directory's lock, builds from an empty
    directory and stamps the result; the others wait for the lock and then find it built.
    Raises BuildError naming the cause and the next step.
    """
    key = build_key(archs)
    directory = key_dir(key)
    found = _built(directory, key)
    if found is not None:
        return found
    if not allow_build:
        raise BuildError(f"not built for {describe_archs(archs)} in {build_dir()} and "
                         f"NSA_FASTPATH_CUDA_JIT=0: prebuild with `TORCH_CUDA_ARCH_LIST=... {PREBUILD}`")
    ninja = _ninja_dir()
    if ninja is None:
        raise BuildError("no ninja found (SGLang depends on it): pip install ninja")
    with _build_lock(directory):  # the others wait here, then find it built
        found = _built(directory, key)
        if found is not None:
            return found
        _clear(directory)
        return _compile(archs, key, directory, ninja)


def _compile(archs: list[str], key: dict, directory: Path, ninja: str) -> Path:
    import tvm_ffi.cpp

    # tvm-ffi emits machine code for TVM_FFI_CUDA_ARCH_LIST ("9.0a 10.0a"); PTX, where asked, on top
    tvm_archs = " ".join(re.sub(r"^(\d+)(\d)", r"\1.\2", a.removesuffix("+PTX")) for a in archs)
    ptx = [f for f in gencode_flags(archs) if "code=compute_" in f]
    logger.info("nsa-fastpath: building the CUDA metadata kernel for %s in %s (once)",
                describe_archs(archs), directory)
    start = time.monotonic()
    path = os.pathsep.join([ninja, os.environ.get("PATH", "")])
    with _environ(CUDA_HOME=str(cuda_home()), TVM_FFI_CUDA_ARCH_LIST=tvm_archs, PATH=path):
        try:
            # tvm-ffi gives the host compiler only its own include directories; the binding
            # needs cuda_runtime_api.h, and the header beside it (the sources may be elsewhere)
            includes = [str(cuda_home() / "include"), str(HEADER.parent)]
            library = Path(tvm_ffi.cpp.build(PREFIX, cpp_files=[str(BINDING)],
                                             cuda_files=[str(KERNEL)],
                                             extra_cuda_cflags=EXTRA_CUDA_CFLAGS + ptx,
                                             extra_include_paths=includes,
                                             build_directory=str(directory)))
        except Exception as e:
            log = directory / "build.log"
            try:
                log.write_text(f"{type(e).__name__}: {e}\n")
            except OSError:
                pass
            raise _compile_error(str(e), archs, key, log) from None
    stamp = directory / f".{STAMP}.tmp"
    stamp.write_text(json.dumps({"key": key, "library_sha256": _sha256(library)}, indent=1))
    os.replace(stamp, directory / STAMP)  # readers see a whole stamp or none
    logger.info("nsa-fastpath: CUDA metadata kernel ready in %.1f s: %s",
                time.monotonic() - start, library)
    return library


def _asked_archs() -> str | None:
    value = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    return value if value and value != "native" else None


def library_for_device(capability: tuple[int, int], *, allow_build: bool) -> Path:
    """The library a server on a GPU of `capability` loads: built for TORCH_CUDA_ARCH_LIST when
    set (which must include this GPU), else any matching build with code for this GPU, else one
    built now for this GPU (unless `allow_build` is False)."""
    try:
        target_archs(None, capability)  # this GPU first: no arch list can make sm_75 work
        archs = target_archs(_asked_archs(), capability)
    except ValueError as e:
        raise BuildError(f"unsupported architecture: {e}") from None
    if not any(runs_on(a, capability) for a in archs if not a.endswith("+PTX")):
        raise BuildError(
            f"TORCH_CUDA_ARCH_LIST={_asked_archs()} has no machine code for this GPU "
            f"(sm_{capability[0]}{capability[1]}): add {capability[0]}.{capability[1]} to it")
    if _asked_archs() is None:
        key = build_key(archs)
        for directory in sorted(build_dir().glob(f"{PREFIX}_*_{_fingerprint(key)}")):
            try:
                built_archs = json.loads((directory / STAMP).read_text())["key"]["archs"]
                if any(runs_on(a, capability) for a in built_archs if not a.endswith("+PTX")):
                    found = _built(directory, {**key, "archs": built_archs})
                    if found is not None:
                        return found
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # a broken stamp: not a build
    return build(archs, allow_build=allow_build)


# ------------------------------------------------------------------ load
def is_cuda_kernel_available() -> bool:
    """True once the kernel is loaded (building it first if allowed); never raises. A failure
    is logged once (WARNING: the cause and the next step)."""
    global _module, _library, _error
    if _module is not None:
        return True
    if _error is not None:
        return False
    try:
        import torch

        if not torch.cuda.is_available():
            raise BuildError("no CUDA device")
        library = library_for_device(torch.cuda.get_device_capability(), allow_build=jit_allowed())
        import tvm_ffi

        module = tvm_ffi.load_module(str(library))
        module.plan_words()  # a library of this source exports it
        _module, _library = module, library
        logger.info("nsa-fastpath: CUDA metadata kernel loaded from %s", library)
        return True
    except Exception as e:  # the cause is named; nothing raises into the server
        _error = str(e) if isinstance(e, BuildError) else f"{type(e).__name__}: {e}"
        logger.warning("nsa-fastpath: CUDA metadata kernel unavailable: %s; the Triton path "
                       "(else SGLang's own code) serves", _error)
        return False


def unavailable_reason() -> str | None:
    return _error


def build_report() -> str:
    """One line for `apply.sh status`: is the kernel built for this machine's GPU, or for the
    architectures TORCH_CUDA_ARCH_LIST asks for? Builds and loads nothing."""
    asked = _asked_archs()
    try:
        capability = None
        if asked is None:
            import torch

            capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
        archs = target_archs(asked, capability)
        target = (f"TORCH_CUDA_ARCH_LIST={asked}" if asked else "this GPU") + \
            f" ({describe_archs(archs)})"
        library = (library_for_device(capability, allow_build=False) if capability
                   else build(archs, allow_build=False))
        return f"built for {target}: {library}"
    except (BuildError, ValueError) as e:
        return f"not built: {e}"


def get_kernel_info() -> dict:
    return {
        "available": _module is not None,
        "library": str(_library) if _library else None,
        "error": _error,
        "build_dir": str(build_dir()),
        "binary_search_min_bs": BINARY_SEARCH_MIN_BS,
        "max_bs": _module.max_bs() if _module is not None else None,
        "max_schedule_dests": _module.max_schedule_dests() if _module is not None else None,
    }


# ------------------------------------------------------------------ plans
class FillPlan:
    """One captured (backends, bs, mode): the kernel's plan words (a CPU tensor the library
    fills at capture), and the buffers they point into, kept alive with it."""

    def __init__(self, module, *, req_to_token, dest_table, schedules, mode, n_draft, topk,
                 page_size, bs, page_table_shape, page_table_stride, real_page_table_stride):
        import torch

        self.words = torch.zeros(module.plan_words(), dtype=torch.int64)
        self._buffers = (req_to_token, dest_table, list(schedules))
        module.init_plan(self.words, req_to_token, dest_table, mode, n_draft, topk, page_size, bs,
                         page_table_shape[0], page_table_shape[1], page_table_stride,
                         real_page_table_stride, bs >= BINARY_SEARCH_MIN_BS)
        for s in schedules:
            module.add_schedule(self.words, s)
        self._fill, self._copy, self._warm = module.fill, module.copy_schedule, module.warm

    def fill(self, req_pool_indices, seq_lens, accept_length=None) -> None:
        """One replay's metadata, one launch, no host sync (TypeError / ValueError name a bad input)."""
        self._fill(self.words, req_pool_indices, seq_lens, accept_length)

    def copy_schedule(self, src) -> None:
        self._copy(self.words, src)

    def warm(self) -> None:
        self._warm(self.words, self._buffers[0])


def make_plan(**kw) -> FillPlan:
    """The FillPlan for one captured (backends, bs, mode); see the module docstring."""
    return FillPlan(_module, **kw)


def empty_launch(on) -> None:
    """Benchmark floor: one call through tvm-ffi with a CUDA tensor and an empty launch."""
    _module.empty_launch(on)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Build the nsa-fastpath CUDA metadata kernel into "
                                 "its cache ($NSA_FASTPATH_BUILD_DIR) for TORCH_CUDA_ARCH_LIST, "
                                 "else for this machine's GPU; no GPU needed with the list.")
    ap.add_argument("--build", action="store_true", help="build (or find built) and report")
    if not ap.parse_args(argv).build:
        ap.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.monotonic()
    try:
        capability = None
        if _asked_archs() is None:
            import torch

            capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
        archs = target_archs(_asked_archs(), capability)
        # on a GPU, what a server there would load (a prebuild with code for it, else a build)
        library = (library_for_device(capability, allow_build=True) if capability
                   else build(archs))
    except (BuildError, ValueError) as e:
        print(f"nsa-fastpath: CUDA metadata kernel NOT built: {e}", flush=True)
        return 1
    print(f"nsa-fastpath: CUDA metadata kernel ready for {describe_archs(archs)} "
          f"({time.monotonic() - start:.1f} s): {library}", flush=True)
    if capability is not None and not is_cuda_kernel_available():
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
