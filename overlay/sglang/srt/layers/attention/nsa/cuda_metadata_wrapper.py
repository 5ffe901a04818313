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
include line, not by the source or tvm-ffi: the mechanism underneath is the same.

A build needs nvcc, not a GPU: for the architectures in `TORCH_CUDA_ARCH_LIST` ("9.0a;10.0a", as
for any PyTorch extension), else for this machine's GPU. An image build prebuilds it:

    TORCH_CUDA_ARCH_LIST="9.0a;10.0a" python -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build

Where: `$NSA_FASTPATH_BUILD_DIR` (default ~/.cache/nsa-fastpath/build), one directory per build,
`nsa_fastpath_metadata_<archs>_<key>`. The key is what makes a library stale: the kernel's
sources, the tvm-ffi release it links against and the flags. The build compiles it into the
library (`nsa_fastpath_build_key`, read from the file without loading it) and stamps the
directory (built.json, written last: the architectures asked for, the library's sha256, the nvcc
that built it). Loading needs no nvcc and ignores TORCH_CUDA_ARCH_LIST: a build is loaded when
its stamp matches the library byte for byte, the key the library records is the one computed now
from the installed sources and tvm-ffi, the machine code in the library (its fatbin) is for the
architectures the stamp names, one of which runs on this GPU, and the CUDA runtime the library
links is there. Anything else is never loaded. So a "9.0a;10.0a" prebuild serves an H200 and a
B200 from an image without the CUDA toolkit; TORCH_CUDA_ARCH_LIST only decides what a build at
run time targets. The nvcc release is recorded, not checked: it decides which architectures a
build can target and which CUDA runtime the library links (libcudart.so.<major>), and both are
read from the library itself; the code it generates for an architecture runs on that GPU
whatever nvcc made it. A runtime or driver too old for the library fails at load or at the
warm-up launch at capture, which is a WARNING and the Triton path, never a wrong result.

When: `is_cuda_kernel_available()` at CUDA-graph capture (replay_fastpath), never on a replay:
it loads the build with code for this GPU, building one first unless `NSA_FASTPATH_CUDA_JIT=0`.
Processes starting together (one per GPU) share one build: the builder holds a file lock in the
build directory (and clears whatever an unstamped directory held); the others wait, then find it
built. A failure (no nvcc, an architecture the GPU or nvcc doesn't support, a failing compile, an
unwritable build directory, a library that does not load) is logged once as a WARNING naming the
cause and the next step; the next replay path (Triton) serves. `kernel_state()` says all of this
for `apply.sh status` without building or loading anything.

`make_plan(...)` returns a FillPlan: everything of one captured (backends, bs, mode) that does
not change between replays, so a replay is `plan.fill(req_pool_indices, seq_lens,
accept_length)` (one launch) and `plan.copy_schedule(new_schedule)` (one launch).

Imports torch lazily and sglang never: tests load this file on its own.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

HEADER = Path(__file__).with_name("cuda_metadata_kernel.cuh")  # shared by the two below
KERNEL = Path(__file__).with_name("cuda_metadata_kernel.cu")  # device code and launchers: nvcc
BINDING = Path(__file__).with_name("cuda_metadata_binding.cc")  # tvm-ffi host side: c++
PREFIX = "nsa_fastpath_metadata"
LIBRARY = f"{PREFIX}.so"
STAMP = "built.json"
LOCK = "build.lock"
KEY_HEADER = "nsa_fastpath_build_key.h"  # generated into the build directory, for the binding
KEY_MARK = b"nsa-fastpath build key: "  # what precedes the key in the library's bytes
MIN_CAPABILITY = (8, 0)
EXTRA_CUDA_CFLAGS: list[str] = []  # tvm-ffi's defaults (-O2 host, ptxas -O3) are what we need
# Request-id search in the CUDA kernel: linear below this bs, binary from it. Measured on an
# H200 (docs/BENCHMARKS.md, "CUDA C++ request search"): within 2% of each other below bs 32,
# binary faster from 32 (11.1 vs 12.1 us) to 256 (14.0 vs 22.8 us). NSA_FASTPATH_BINARY_SEARCH_BS
# overrides it.
BINARY_SEARCH_MIN_BS = int(os.environ.get("NSA_FASTPATH_BINARY_SEARCH_BS", "32"))
PREBUILD = "python -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build"
IMAGE_ARCHS = '"9.0a;10.0a"'  # the example list: H100 / H200 (9.0a) and B200 / GB200 (10.0a)

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
        raise ValueError("no CUDA device here and no TORCH_CUDA_ARCH_LIST: set TORCH_CUDA_ARCH_LIST "
                         f"to the GPUs it will serve, e.g. TORCH_CUDA_ARCH_LIST={IMAGE_ARCHS} "
                         "(9.0a: H100 / H200, 10.0a: B200 / GB200)")
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


def _sm(capability: tuple[int, int]) -> str:
    return f"sm_{capability[0]}{capability[1]}"


def _asked_archs() -> str | None:
    value = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    return value if value and value != "native" else None


def runtime_archs(capability: tuple[int, int]) -> list[str]:
    """What a build at run time targets on a GPU of `capability`: TORCH_CUDA_ARCH_LIST when set
    (it must include this GPU), else this GPU."""
    try:
        target_archs(None, capability)  # this GPU first: no arch list can make sm_75 work
        archs = target_archs(_asked_archs(), capability)
    except ValueError as e:
        raise BuildError(f"unsupported architecture: {e}") from None
    if not any(runs_on(a, capability) for a in archs if not a.endswith("+PTX")):
        raise BuildError(
            f"no build has code for this GPU ({_sm(capability)}) and TORCH_CUDA_ARCH_LIST="
            f"{_asked_archs()} has no machine code for it either: add "
            f"{capability[0]}.{capability[1]} to it")
    return archs


# ------------------------------------------------------------------ the key and the toolchain
def tvm_ffi_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-tvm-ffi")
    except PackageNotFoundError:
        raise BuildError("apache-tvm-ffi is not installed (SGLang 0.5.8 requires it): "
                         "pip install 'apache-tvm-ffi>=0.1.5,<0.2'") from None


def _sources_sha256() -> str:
    digest = hashlib.sha256()
    for path in (HEADER, KERNEL, BINDING):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_key() -> dict:
    """What a library must have been built from to be loaded here: our sources, the tvm-ffi
    release (its C++ ABI is not stable across releases) and the flags. Needs no nvcc and no GPU."""
    return {"source_sha256": _sources_sha256(), "tvm_ffi": tvm_ffi_version(),
            "flags": list(EXTRA_CUDA_CFLAGS)}


def _fingerprint(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def key_dir(archs: list[str], key: dict) -> Path:
    return build_dir() / f"{PREFIX}_{arch_tag(archs)}_{_fingerprint(key)}"


def cuda_home() -> Path | None:
    """The CUDA toolkit with nvcc and libcudart: $CUDA_HOME / $CUDA_PATH, else nvcc's on PATH,
    else /usr/local/cuda (a wrapper nvcc on PATH may not sit inside its toolkit). Only a build
    asks."""
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


def toolchain() -> tuple[Path, str]:
    """(CUDA toolkit, ninja's directory) for a build; BuildError naming what is missing."""
    home = cuda_home()
    if home is None:
        raise BuildError("no nvcc found (CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda): a build "
                         "needs the CUDA toolkit (a server with a build needs none): install it "
                         "or set CUDA_HOME, or prebuild where nvcc is, e.g. in the image build, "
                         f"with `TORCH_CUDA_ARCH_LIST=... {PREBUILD}`")
    ninja = _ninja_dir()
    if ninja is None:
        raise BuildError("no ninja found (SGLang depends on it): pip install ninja")
    return home, ninja


# ------------------------------------------------------------------ what a library records
def recorded_key(data: bytes) -> dict | None:
    """The key compiled into the library (cuda_metadata_binding.cc), None if it has none."""
    start = data.find(KEY_MARK)
    if start < 0 or data.find(KEY_MARK, start + 1) >= 0:
        return None
    end = data.find(b"\0", start)
    try:
        key = json.loads(data[start + len(KEY_MARK):end])
    except ValueError:
        return None
    return key if isinstance(key, dict) else None


FATBIN_MAGIC = 0xBA55ED50  # nvcc's fatbin container (cuda/include/fatbinary_section.h names it)
FATBIN_CUBIN, FATBIN_PTX = 2, 1  # an entry's kind: machine code, PTX


def binary_archs(data: bytes) -> list[str]:
    """The code in the library's `.nv_fatbin` section: "90" for sm_90 machine code (a cubin),
    "100+PTX" for compute_100 PTX. Each fatbin is a 16-byte header (magic, version, header size,
    size) and entries, each a header (kind u16 at 0, header size u32 at 4, payload size u64 at 8,
    SM number u32 at 28) and its payload. The suffix of "90a" is the stamp's: nvcc has changed
    the flag bits that mark it, the SM number it has kept. ValueError: not such a library."""
    if data[:6] != b"\x7fELF\x02\x01":
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = sections[shstrndx][4]  # (name, type, flags, addr, offset, size)

    def name(section) -> bytes:
        return data[names + section[0]:data.index(b"\0", names + section[0])]

    found = [s for s in sections if name(s) == b".nv_fatbin"]
    if len(found) != 1:
        raise ValueError("no .nv_fatbin section (no GPU code)")
    pos, end = found[0][4], found[0][4] + found[0][5]
    archs = []
    while pos + 16 <= end:
        magic, _, header, size = struct.unpack_from("<IHHQ", data, pos)
        if magic == 0:  # alignment between two fatbins
            pos += 8
            continue
        if magic != FATBIN_MAGIC or header < 16:
            raise ValueError(f"the fatbin at offset {pos} is damaged")
        entry, stop = pos + header, pos + header + size
        while entry < stop:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            sm, = struct.unpack_from("<I", data, entry + 28)
            if kind not in (FATBIN_CUBIN, FATBIN_PTX) or entry_header < 32:
                raise ValueError(f"the fatbin entry at offset {entry} is damaged")
            archs.append(f"{sm}" if kind == FATBIN_CUBIN else f"{sm}+PTX")
            entry += entry_header + payload
        pos = stop
    return archs


def _needed_cudart(data: bytes) -> str | None:
    """The CUDA runtime the library links (its DT_NEEDED name, e.g. libcudart.so.13)."""
    m = re.search(rb"libcudart\.so\.\d+", data)
    return m[0].decode() if m else None


def _runtime_found(soname: str | None) -> bool:
    """Whether this process finds the CUDA runtime `soname` (torch's, or the system's)."""
    if soname is None:
        return True  # linked statically
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


class Build(NamedTuple):
    """A verified build: the architectures it has machine code for (as asked at build time),
    its library, the nvcc that built it, the CUDA runtime it links."""
    archs: tuple[str, ...]
    library: Path
    nvcc: str
    cudart: str | None

    def runs_on(self, capability: tuple[int, int]) -> bool:
        return any(runs_on(a, capability) for a in self.archs if not a.endswith("+PTX"))


class Stale(Exception):
    """A build directory that is never loaded, and why."""


def _code_for(archs: list[str]) -> list[str]:
    """`binary_archs` of a build for `archs`: machine code for each, PTX where "+PTX" asks."""
    code = []
    for arch in archs:
        m = re.fullmatch(r"(\d+)[af]?(\+PTX)?", arch)
        if m is None:
            raise Stale(f"its stamp names an unknown architecture {arch!r}")
        code += [m[1]] + ([f"{m[1]}+PTX"] if m[2] else [])
    return sorted(code)


def verify(directory: Path, key: dict) -> Build:
    """The build in `directory` if it is whole and current (see the module docstring); Stale
    otherwise. Nothing read from disk is trusted before it is checked."""
    try:
        stamp = json.loads((directory / STAMP).read_text())
        data = (directory / LIBRARY).read_bytes()
    except FileNotFoundError:
        raise Stale("incomplete (no stamp or no library: an interrupted or failed build)") from None
    except (OSError, ValueError) as e:
        raise Stale(f"unreadable ({e})") from None
    if not (isinstance(stamp, dict) and isinstance(stamp.get("archs"), list)
            and isinstance(stamp.get("library_sha256"), str)):
        raise Stale("its stamp is not one this version writes")
    if stamp["library_sha256"] != hashlib.sha256(data).hexdigest():
        raise Stale("damaged: the library is not the one its stamp describes")
    recorded = recorded_key(data)
    if recorded is None:
        raise Stale("its library records no build key")
    if recorded.get("source_sha256") != key["source_sha256"]:
        raise Stale("built from other sources")
    if recorded.get("tvm_ffi") != key["tvm_ffi"]:
        raise Stale(f"built against tvm-ffi {recorded.get('tvm_ffi')} (installed: {key['tvm_ffi']})")
    if recorded != key:
        raise Stale("built with other flags")
    try:
        code = binary_archs(data)
    except (ValueError, IndexError, OverflowError, struct.error) as e:
        raise Stale(f"damaged: {e or type(e).__name__}") from None
    archs = [str(a) for a in stamp["archs"]]
    if sorted(code) != _code_for(archs):
        raise Stale(f"its code ({', '.join(code)}) is not for the architectures its stamp names "
                    f"({describe_archs(archs)})")
    return Build(tuple(archs), directory / LIBRARY, str(stamp.get("nvcc")), _needed_cudart(data))


def scan(key: dict) -> tuple[list[Build], list[str]]:
    """The builds in the cache that may be loaded, and '<directory>: why not' for the others."""
    builds, ignored = [], []
    for directory in sorted(build_dir().glob(f"{PREFIX}_*")):
        try:
            builds.append(verify(directory, key))
        except Stale as e:
            ignored.append(f"{directory.name}: {e}")
    return builds, ignored


def choose(capability: tuple[int, int], builds: list[Build], allow_build: bool) -> Build | list[str]:
    """What a server on a GPU of `capability` does at capture: load a build with code for it
    (whatever TORCH_CUDA_ARCH_LIST says), else build for `runtime_archs` (the architectures
    returned). BuildError: neither can be done, and why. The loader and status both ask this."""
    try:
        target_archs(None, capability)
    except ValueError as e:
        raise BuildError(f"unsupported architecture: {e}") from None
    fits = [b for b in builds if b.runs_on(capability)]
    for b in fits:
        if _runtime_found(b.cudart):
            return b
    if fits:
        raise BuildError(
            f"{fits[0].library} has code for this GPU ({_sm(capability)}) but links "
            f"{fits[0].cudart}, which this Python does not find: install that CUDA runtime, or "
            f"remove {fits[0].library.parent} and rebuild it with the nvcc of the CUDA release "
            "torch uses here")
    if not allow_build:
        raise BuildError(
            f"no build in {build_dir()} has code for this GPU ({_sm(capability)}) and "
            "NSA_FASTPATH_CUDA_JIT=0 forbids building one: prebuild it with "
            f"`TORCH_CUDA_ARCH_LIST={capability[0]}.{capability[1]} {PREBUILD}`")
    archs = runtime_archs(capability)
    toolchain()
    return archs


# ------------------------------------------------------------------ build
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


def _compile_error(message: str, archs: list[str], nvcc: str, log: Path) -> BuildError:
    if re.search(r"[Uu]nsupported gpu architecture|not defined for option 'gpu-name'", message):
        return BuildError(
            f"nvcc ({nvcc}) does not support {describe_archs(archs)}: set "
            f"TORCH_CUDA_ARCH_LIST to architectures it supports, or use a newer CUDA toolkit "
            f"(compiler output: {log})")
    lines = [ln for ln in message.splitlines() if "error" in ln.lower()]
    first = lines[0].strip() if lines else message.strip().splitlines()[0]
    return BuildError(f"the compile failed ({first[:300]}); compiler output: {log}; "
                      f"`{PREBUILD}` repeats it")


def build(archs: list[str]) -> Path:
    """The library for exactly `archs`: found in the cache, else built there and stamped.

    Concurrent callers build once: the first takes the directory's lock, builds from an empty
    directory and stamps the result; the others wait for the lock and then find it built.
    Raises BuildError naming the cause and the next step.
    """
    key = build_key()
    directory = key_dir(archs, key)
    try:
        return verify(directory, key).library
    except Stale:
        pass
    home, ninja = toolchain()
    with _build_lock(directory):  # the others wait here, then find it built
        try:
            return verify(directory, key).library
        except Stale:
            pass
        _clear(directory)
        return _compile(archs, key, directory, home, ninja)


def _compile(archs: list[str], key: dict, directory: Path, home: Path, ninja: str) -> Path:
    import tvm_ffi.cpp

    nvcc = _nvcc_release(str(home / "bin" / "nvcc"))
    # tvm-ffi emits machine code for TVM_FFI_CUDA_ARCH_LIST ("9.0a 10.0a"); PTX, where asked, on top
    tvm_archs = " ".join(re.sub(r"^(\d+)(\d)", r"\1.\2", a.removesuffix("+PTX")) for a in archs)
    ptx = [f for f in gencode_flags(archs) if "code=compute_" in f]
    # the key, compiled into the library: a JSON string literal is a C string literal
    (directory / KEY_HEADER).write_text(
        "// Generated by cuda_metadata_wrapper for this build: what the library is built from.\n"
        f"#define NSA_FASTPATH_BUILD_KEY {json.dumps(KEY_MARK.decode() + json.dumps(key, sort_keys=True))}\n")
    logger.info("nsa-fastpath: building the CUDA metadata kernel for %s in %s (once)",
                describe_archs(archs), directory)
    start = time.monotonic()
    path = os.pathsep.join([ninja, os.environ.get("PATH", "")])
    with _environ(CUDA_HOME=str(home), TVM_FFI_CUDA_ARCH_LIST=tvm_archs, PATH=path):
        try:
            # tvm-ffi gives the host compiler only its own include directories; the binding
            # needs cuda_runtime_api.h, the header beside it (the sources may be elsewhere) and
            # the key header
            includes = [str(home / "include"), str(HEADER.parent), str(directory)]
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
            raise _compile_error(str(e), archs, nvcc, log) from None
    stamp = directory / f".{STAMP}.tmp"
    stamp.write_text(json.dumps({"archs": archs, "library_sha256": hashlib.sha256(
        library.read_bytes()).hexdigest(), "nvcc": nvcc}, indent=1))
    os.replace(stamp, directory / STAMP)  # readers see a whole stamp or none
    try:  # what the loader will check, checked now: a build that can't be loaded is an error here
        verify(directory, key)
    except Stale as e:
        (directory / STAMP).unlink()
        raise BuildError(f"the build in {directory} does not verify: {e}") from None
    logger.info("nsa-fastpath: CUDA metadata kernel ready in %.1f s: %s",
                time.monotonic() - start, library)
    return library


def library_for_device(capability: tuple[int, int], *, allow_build: bool) -> Path:
    """The library a server on a GPU of `capability` loads: a build with code for this GPU,
    else one built now (for TORCH_CUDA_ARCH_LIST, else this GPU) unless `allow_build` is False."""
    builds, _ = scan(build_key())
    choice = choose(capability, builds, allow_build)
    return choice.library if isinstance(choice, Build) else build(choice)


# ------------------------------------------------------------------ load
def _device_capability() -> tuple[int, int] | None:
    try:
        import torch
    except ImportError:
        return None
    return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None


def is_cuda_kernel_available() -> bool:
    """True once the kernel is loaded (building it first if allowed); never raises. A failure
    is logged once (WARNING: the cause and the next step)."""
    global _module, _library, _error
    if _module is not None:
        return True
    if _error is not None:
        return False
    try:
        capability = _device_capability()
        if capability is None:
            raise BuildError("no CUDA device")
        library = library_for_device(capability, allow_build=jit_allowed())
        _module, _library = _load(library), library
        logger.info("nsa-fastpath: CUDA metadata kernel loaded from %s", library)
        return True
    except Exception as e:  # the cause is named; nothing raises into the server
        _error = str(e) if isinstance(e, BuildError) else f"{type(e).__name__}: {e}"
        logger.warning("nsa-fastpath: CUDA metadata kernel unavailable: %s; the Triton path "
                       "(else SGLang's own code) serves", _error)
        return False


def _load(library: Path):
    import tvm_ffi

    try:
        module = tvm_ffi.load_module(str(library))
        module.plan_words()  # a library of this source exports it
    except Exception as e:
        raise BuildError(f"{library} does not load here ({type(e).__name__}: {e}): remove "
                         f"{library.parent} and rebuild it here with `{PREBUILD}`") from None
    return module


def unavailable_reason() -> str | None:
    return _error


def kernel_state() -> dict:
    """What `apply.sh status` says about the kernel, each fact found once: the builds in the
    cache and the ones never loaded (and why), this machine's GPU, and what a server here does
    at capture: `loads` a build, `builds_at_capture` for these architectures, or can't
    (`unavailable`, why). Builds and loads nothing; needs neither nvcc nor a GPU."""
    state = {"build_dir": str(build_dir()), "builds": [], "ignored": [], "device": None,
             "jit": jit_allowed(), "nvcc": None, "loads": None, "builds_at_capture": None,
             "unavailable": None}
    try:
        builds, state["ignored"] = scan(build_key())
    except BuildError as e:
        state["unavailable"] = str(e)
        return state
    state["builds"] = [{"archs": list(b.archs), "library": str(b.library), "nvcc": b.nvcc,
                        "cudart": b.cudart} for b in builds]
    capability = _device_capability()
    if capability is None:
        home = cuda_home() if not builds else None  # could a server here build one?
        state["nvcc"] = str(home / "bin" / "nvcc") if home else None
        return state
    state["device"] = _sm(capability)
    try:
        choice = choose(capability, builds, state["jit"])
    except BuildError as e:
        state["unavailable"] = str(e)
        return state
    if isinstance(choice, Build):
        state["loads"] = str(choice.library)
    else:
        state["builds_at_capture"] = choice
    return state


def build_report(state: dict | None = None) -> str:
    """`kernel_state()` as the one line of `apply.sh status` ("built for sm_90a, sm_100a: ...")."""
    s = kernel_state() if state is None else state
    if s["builds"]:
        text = "; ".join(f"built for {describe_archs(b['archs'])}: {b['library']}"
                         for b in s["builds"])
    elif s["unavailable"] and s["device"] is None:
        return f"not built: {s['unavailable']}"  # e.g. no tvm-ffi
    else:
        text = f"not built in {s['build_dir']}"
    if s["device"] is None:
        text += "; no CUDA device here"
        if not s["builds"]:
            text += (": a server builds it at its first CUDA-graph capture"
                     if s["jit"] and s["nvcc"] else
                     ", NSA_FASTPATH_CUDA_JIT=0 forbids a build at run time" if not s["jit"] else
                     ", and no nvcc here to build it")
            text += f"; prebuild it with `TORCH_CUDA_ARCH_LIST={IMAGE_ARCHS} {PREBUILD}`"
    elif s["loads"]:
        which = "it" if len(s["builds"]) == 1 else s["loads"]
        text += f"; this GPU ({s['device']}) loads {which}"
    elif s["builds_at_capture"]:
        text += (f"; {'none has code for ' if s['builds'] else 'for '}this GPU ({s['device']}): "
                 "the first CUDA-graph capture builds it for "
                 f"{describe_archs(s['builds_at_capture'])}")
    else:
        text += f"; this GPU ({s['device']}) gets none: {s['unavailable']}"
    if s["ignored"]:
        text += (f" ({len(s['ignored'])} other build director{'y' if len(s['ignored']) == 1 else 'ies'}"
                 f" never loaded: {'; '.join(s['ignored'])})")
    return text


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

    ap = argparse.ArgumentParser(description=(
        "Build the nsa-fastpath CUDA metadata kernel into its cache ($NSA_FASTPATH_BUILD_DIR, "
        "default ~/.cache/nsa-fastpath/build), or find it built there. With "
        f"TORCH_CUDA_ARCH_LIST (e.g. {IMAGE_ARCHS} in an image build) it builds for those "
        "architectures and needs nvcc but no GPU; without it, it finds or builds what a server on "
        "this machine's GPU loads, and loads it."))
    ap.add_argument("--build", action="store_true", help="build (or find built) and report")
    if not ap.parse_args(argv).build:
        ap.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.monotonic()
    capability = None
    try:
        if _asked_archs() is not None:
            library = build(target_archs(_asked_archs(), None))
        else:
            capability = _device_capability()
            if capability is None:
                target_archs(None, None)  # raises: what to set
            library = library_for_device(capability, allow_build=True)
        archs = list(verify(library.parent, build_key()).archs)
    except (BuildError, ValueError, Stale) as e:
        print(f"nsa-fastpath: CUDA metadata kernel NOT built: {e}", flush=True)
        return 1
    print(f"nsa-fastpath: CUDA metadata kernel ready for {describe_archs(archs)} "
          f"({time.monotonic() - start:.1f} s): {library}", flush=True)
    if capability is not None and not is_cuda_kernel_available():
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
