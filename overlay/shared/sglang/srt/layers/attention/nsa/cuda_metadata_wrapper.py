# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""nsa-fastpath: build, load and call the CUDA C++ replay-metadata kernel (cuda_metadata_kernel.cu).

The extension is built with torch.utils.cpp_extension for the GPU it runs on: the architectures
in `TORCH_CUDA_ARCH_LIST` when set (as for any PyTorch extension, e.g. "9.0;10.0"), otherwise the
current device's compute capability (sm_90 on H100/H200, sm_100 on B200/GB200, ...). The kernel
uses only portable CUDA (cub block scans, plain loads and stores), so it builds for sm_80 and up.
Each architecture set gets its own build (`nsa_fastpath_metadata_sm90`, `..._sm90_sm100`) under
`$NSA_FASTPATH_BUILD_DIR` (default ~/.cache/nsa-fastpath/build), loaded from there on later
starts. Operators who pre-build run, with the Python that serves, on the serving GPU (or with
TORCH_CUDA_ARCH_LIST set):

    python -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build

Without a pre-built extension, `is_cuda_kernel_available()` builds it (about a minute; logged)
unless `NSA_FASTPATH_CUDA_JIT=0`. replay_fastpath calls it at CUDA-graph capture time, so a build
never lands on a replay. Any build or load failure is logged once and reported as "unavailable";
the Triton path is then used.

`make_plan(...)` returns the extension's FillPlan: everything of one captured (backends, bs,
mode) that does not change between replays, so a replay is `plan.fill(req_pool_indices,
seq_lens, accept_length)` (one launch) and `plan.copy_schedule(new_schedule)` (one launch).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cuda_metadata_kernel.cu")
EXTENSION_PREFIX = "nsa_fastpath_metadata"
MIN_CAPABILITY = (8, 0)
# Request-id search in the CUDA kernel: linear below this bs, binary from it. Measured on an
# H200 (docs/BENCHMARKS.md, "CUDA C++ request search"): within 2% of each other below bs 32,
# binary faster from 32 (11.1 vs 12.1 us) to 256 (14.0 vs 22.8 us). NSA_FASTPATH_BINARY_SEARCH_BS
# overrides it.
BINARY_SEARCH_MIN_BS = int(os.environ.get("NSA_FASTPATH_BINARY_SEARCH_BS", "32"))

_ext = None
_error: str | None = None


def build_dir() -> Path:
    default = Path.home() / ".cache" / "nsa-fastpath" / "build"
    return Path(os.environ.get("NSA_FASTPATH_BUILD_DIR", default))


def target_archs(arch_list: str | None, capability: tuple[int, int] | None) -> list[str]:
    """The architectures to build for, e.g. ["90"], ["90", "100a"], ["100+PTX"].

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


def extension_name(archs: list[str]) -> str:
    return EXTENSION_PREFIX + "".join(f"_sm{a.replace('+PTX', 'ptx')}" for a in archs)


def _current_archs() -> list[str]:
    capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    return target_archs(os.environ.get("TORCH_CUDA_ARCH_LIST"), capability)


def _load(allow_build: bool):
    from torch.utils.cpp_extension import load

    archs = _current_archs()
    name = extension_name(archs)
    directory = build_dir() / name
    built = any(directory.glob(f"{name}*.so"))
    if not built and not allow_build:
        raise RuntimeError(f"not built in {directory} and NSA_FASTPATH_CUDA_JIT=0")
    if not built:
        logger.info("nsa-fastpath: building the CUDA metadata extension for %s in %s (once)",
                    ", ".join(f"sm_{a}" for a in archs), directory)
    directory.mkdir(parents=True, exist_ok=True)
    return load(
        name=name,
        sources=[str(SOURCE)],
        build_directory=str(directory),
        extra_cuda_cflags=["-O3", *gencode_flags(archs)],
        extra_cflags=["-O3"],
        verbose=False,
    )


def is_cuda_kernel_available() -> bool:
    """True once the extension is loaded (building it first if allowed); never raises."""
    global _ext, _error
    if _ext is not None:
        return True
    if _error is not None:
        return False
    try:
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device")
        _ext = _load(allow_build=os.environ.get("NSA_FASTPATH_CUDA_JIT", "1") != "0")
        logger.info("nsa-fastpath: CUDA metadata extension %s loaded from %s",
                    _ext.__name__, build_dir())
        return True
    except Exception as e:  # compiler missing, unsupported GPU, build failure ...
        _error = f"{type(e).__name__}: {e}"
        logger.warning("nsa-fastpath: CUDA metadata extension unavailable: %s", _error)
        return False


def built_extension() -> Path | None:
    """The built library for this machine's architectures, if any (no build, no import)."""
    try:
        name = extension_name(_current_archs())
    except ValueError:
        return None
    return next(iter(sorted((build_dir() / name).glob(f"{name}*.so"))), None)


def make_plan(*, req_to_token, dest_table, schedules, mode, n_draft, topk, page_size, bs,
              page_table_shape, page_table_stride, real_page_table_stride):
    """The extension's FillPlan for one captured (backends, bs, mode); see the module docstring."""
    return _ext.FillPlan(
        req_to_token, dest_table, list(schedules), mode, n_draft, topk, page_size, bs,
        page_table_shape[0], page_table_shape[1], page_table_stride, real_page_table_stride,
        bs >= BINARY_SEARCH_MIN_BS,
    )


def get_kernel_info() -> dict:
    return {
        "available": _ext is not None,
        "extension": getattr(_ext, "__name__", None),
        "error": _error,
        "build_dir": str(build_dir()),
        "binary_search_min_bs": BINARY_SEARCH_MIN_BS,
        "max_bs": getattr(_ext, "max_bs", None),
        "max_schedule_dests": getattr(_ext, "max_schedule_dests", None),
    }


def empty_launch() -> None:
    _ext.empty_launch()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Pre-build the nsa-fastpath CUDA extension.")
    ap.add_argument("--build", action="store_true", help="build (or verify) into the cache dir")
    if ap.parse_args().build:
        logging.basicConfig(level=logging.INFO)
        ok = is_cuda_kernel_available()
        print(get_kernel_info())
        raise SystemExit(0 if ok else 1)
    ap.print_help()
