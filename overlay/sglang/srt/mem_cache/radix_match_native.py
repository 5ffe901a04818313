# Copyright 2025-2026 nsa-fastpath authors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""nsa-fastpath: build and load the compiled RadixCache match helper (radix_match_ext.cpp).

Where: ``$NSA_FASTPATH_BUILD_DIR/radix_match/<python tag>-<machine>-<source hash>/`` (default
``~/.cache/nsa-fastpath/build``, as the CUDA extension). The source hash and the Python ABI are in
the path, so a helper found there was built from this source for this Python.

How: ``torch.utils.cpp_extension.load`` (a C++ compiler and ninja; SGLang already depends on
ninja), a few seconds, in a child process of the same Python: what the calling process has
imported (a server imports a lot; stdlib ``distutils`` imported before setuptools makes
setuptools refuse) can't break the build, and the caller never imports setuptools. One process
builds at a time: an ``fcntl.flock`` on a lock file there, which
the kernel releases if the builder dies (torch's own lock file would then stay and hang every later
build, so it is removed under our lock). The finished ``.so`` is moved into place with one rename:
readers see a whole file or none. The helper uses the CPython C API only and is linked
``--as-needed``, so it loads without torch's libraries.

When: ``load()`` at RadixCache construction (server start), which builds if needed and logs it;
``NSA_FASTPATH_RADIX_JIT=0`` forbids building at run time. Operators pre-build with
``python -m sglang.srt.mem_cache.radix_match --build``. ``state()`` says what ``load()`` would do
without doing it (``apply.sh status``). Standard library only at import.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("radix_match_ext.cpp")
MODULE_NAME = "nsa_radix_match_ext"  # PyInit_nsa_radix_match_ext in the source
ABI_VERSION = 4  # NSA_ABI_VERSION in the source
LOCK_TIMEOUT_S = 600.0

_module = None  # the loaded helper
_error: Optional[str] = None  # why it is unavailable in this process (set once)


def jit_allowed() -> bool:
    return os.environ.get("NSA_FASTPATH_RADIX_JIT", "1") != "0"


def base_dir() -> Path:
    default = Path.home() / ".cache" / "nsa-fastpath" / "build"
    return Path(os.environ.get("NSA_FASTPATH_BUILD_DIR") or default)


def helper_dir() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    tag = f"{sys.implementation.cache_tag}-{platform.machine()}-{digest}"
    return base_dir() / "radix_match" / tag


def so_path() -> Path:
    return helper_dir() / f"{MODULE_NAME}.so"


def _compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CXX", "c++"))


def _ninja_dir() -> Optional[str]:
    """Directory of a ninja binary: on PATH, or pip's (the venv's bin, or the ninja package)."""
    found = shutil.which("ninja")
    if found:
        return str(Path(found).parent)
    beside = Path(sys.executable).parent / "ninja"
    if beside.exists():
        return str(beside.parent)
    try:
        import ninja  # the PyPI package ships the binary

        return str(ninja.BIN_DIR)
    except Exception:
        return None


def state() -> tuple[str, str]:
    """(state, detail) without building or loading: 'loaded', 'failed', 'built', 'buildable' or
    'unbuildable'."""
    if _module is not None:
        return "loaded", str(getattr(_module, "__file__", so_path()))
    if _error is not None:
        return "failed", _error
    try:
        path = so_path()
    except OSError as e:
        return "unbuildable", f"source unreadable: {e}"
    if path.exists():
        return "built", str(path)
    if not jit_allowed():
        return "unbuildable", f"not built ({path}) and NSA_FASTPATH_RADIX_JIT=0"
    if _compiler() is None:
        return "unbuildable", f"no C++ compiler ({os.environ.get('CXX', 'c++')} not on PATH)"
    if _ninja_dir() is None:
        return "unbuildable", "no ninja (pip install ninja)"
    return "buildable", str(path.parent)


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if getattr(module, "ABI_VERSION", None) != ABI_VERSION:
        raise ImportError(f"{path}: ABI_VERSION {getattr(module, 'ABI_VERSION', None)}, "
                          f"expected {ABI_VERSION}")
    return module


class _FileLock:
    """fcntl.flock on ``path``, waiting up to ``timeout`` s; released by the kernel if we die."""

    def __init__(self, path: Path, timeout: float):
        self.path, self.timeout, self.fd = path, timeout, None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise TimeoutError(f"{self.path} held by another build for {self.timeout} s")
                time.sleep(0.05)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _build(directory: Path, target: Path) -> None:
    """Compile into directory/build and move the .so to ``target`` (caller holds the lock)."""
    from torch.utils.cpp_extension import load

    build = directory / "build"
    build.mkdir(parents=True, exist_ok=True)
    stale = build / "lock"  # torch's lock file, left behind by a killed build
    if stale.exists():
        stale.unlink()
    path_saved = os.environ.get("PATH", "")
    ninja_dir = _ninja_dir()
    if ninja_dir and shutil.which("ninja") is None:
        os.environ["PATH"] = ninja_dir + os.pathsep + path_saved
    try:
        load(name=MODULE_NAME, sources=[str(SOURCE)], build_directory=str(build),
             extra_cflags=["-O3"], extra_ldflags=["-Wl,--as-needed"], verbose=False)
    finally:
        os.environ["PATH"] = path_saved
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(build / f"{MODULE_NAME}.so", tmp)
    os.replace(tmp, target)


_CHILD = """import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("nsa_radix_match_build", sys.argv[1])
native = importlib.util.module_from_spec(spec)
spec.loader.exec_module(native)
native._build(Path(sys.argv[2]), Path(sys.argv[3]))
"""


def _build_in_child(directory: Path, target: Path) -> None:
    """_build in a fresh interpreter (caller holds the lock); raises with the child's error."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, __file__, str(directory), str(target)],
                          capture_output=True, text=True, timeout=LOCK_TIMEOUT_S)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit {proc.returncode}"]
        raise RuntimeError(f"build failed: {lines[-1]}")


def load(allow_build: Optional[bool] = None):
    """The helper module, building it first if needed and allowed; None if unavailable (the
    reason is logged once as a WARNING and kept in ``state()``). Never raises."""
    global _module, _error
    if _module is not None or _error is not None:
        return _module
    if allow_build is None:
        allow_build = jit_allowed()
    try:
        target = so_path()
        if not target.exists():
            if not allow_build:
                raise RuntimeError(f"not built ({target}) and NSA_FASTPATH_RADIX_JIT=0")
            target.parent.mkdir(parents=True, exist_ok=True)
            with _FileLock(target.parent / ".lock", LOCK_TIMEOUT_S):
                if not target.exists():  # else another process built it while we waited
                    logger.info("nsa-fastpath: building the radix prefix-match helper in %s "
                                "(once per source and Python)", target.parent)
                    t0 = time.monotonic()
                    _build_in_child(target.parent, target)
                    logger.info("nsa-fastpath: radix prefix-match helper built in %.1f s",
                                time.monotonic() - t0)
        _module = _import(target)
    except Exception as e:  # no compiler, build or load failure: the pure-Python matcher
        _error = f"{type(e).__name__}: {e}".strip()
        logger.warning("nsa-fastpath: radix prefix-match helper unavailable, the pure-Python "
                       "packed matcher takes over: %s", _error[-2000:])
    return _module
