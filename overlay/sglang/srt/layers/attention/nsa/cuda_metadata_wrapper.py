# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""nsa-fastpath: build, load and call the CUDA C++ replay-metadata kernel (cuda_metadata_kernel.cu).

The extension is built with torch.utils.cpp_extension for sm_90 (H100/H200) into a cache
directory, `$NSA_FASTPATH_BUILD_DIR` (default ~/.cache/nsa-fastpath/build), and loaded from there
on later starts. Operators who pre-build run, with the Python that serves:

    python -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build

Without a pre-built extension the first call of `is_cuda_kernel_available()` builds it (about a
minute; logged) unless `NSA_FASTPATH_CUDA_JIT=0`. It is called at CUDA-graph capture time, so a
build never lands on a replay. Any build or load failure is logged once and reported as
"unavailable"; the Triton path is then used.

`fill_replay_metadata_cuda` has the signature of triton_metadata_kernel.fill_replay_metadata.
`fill_draft_extend_metadata_cuda` is the seed's name for the draft_extend case of it.
"""
from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cuda_metadata_kernel.cu")
EXTENSION_NAME = "nsa_fastpath_metadata_sm90"
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


def _load(allow_build: bool):
    from torch.utils.cpp_extension import load

    directory = build_dir()
    built = any(directory.glob(f"{EXTENSION_NAME}*.so"))
    if not built and not allow_build:
        raise RuntimeError(f"not built in {directory} and NSA_FASTPATH_CUDA_JIT=0")
    if not built:
        logger.info("nsa-fastpath: building the CUDA metadata extension in %s (once)", directory)
    directory.mkdir(parents=True, exist_ok=True)
    return load(
        name=EXTENSION_NAME,
        sources=[str(SOURCE)],
        build_directory=str(directory),
        extra_cuda_cflags=["-O3", "-gencode=arch=compute_90,code=sm_90", "-std=c++17"],
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
        major, _ = torch.cuda.get_device_capability()
        if major != 9:
            raise RuntimeError(f"built for sm_90 (Hopper); this GPU is sm_{major}x")
        _ext = _load(allow_build=os.environ.get("NSA_FASTPATH_CUDA_JIT", "1") != "0")
        logger.info("nsa-fastpath: CUDA metadata extension loaded from %s", build_dir())
        return True
    except Exception as e:  # compiler missing, wrong GPU, build failure ...
        _error = f"{type(e).__name__}: {e}"
        logger.warning("nsa-fastpath: CUDA metadata extension unavailable: %s", _error)
        return False


def get_kernel_info() -> dict:
    return {
        "available": _ext is not None,
        "backend": "CUDA C++",
        "error": _error,
        "build_dir": str(build_dir()),
        "binary_search_min_bs": BINARY_SEARCH_MIN_BS,
        "max_bs": getattr(_ext, "max_bs", None),
        "threads_per_block": 256,
    }


def fill_replay_metadata_cuda(
    mode: int,
    *,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    accept_length: torch.Tensor | None,
    n_draft: int,
    topk: int,
    page_size: int,
    bs: int,
    page_table_shape: tuple[int, int],
    page_table_stride: int,
    real_page_table_stride: int,
    dest_table: torch.Tensor,
    binary_search: bool | None = None,
) -> None:
    """Same contract as triton_metadata_kernel.fill_replay_metadata; one launch, no sync."""
    if binary_search is None:
        binary_search = bs >= BINARY_SEARCH_MIN_BS
    _ext.fill_replay_metadata(
        mode, req_to_token, req_pool_indices, seq_lens,
        accept_length if accept_length is not None else _dummy_int32(req_to_token.device),
        dest_table, n_draft, topk, page_size, bs, page_table_shape[0], page_table_shape[1],
        page_table_stride, real_page_table_stride, binary_search,
    )


_dummies: dict = {}


def _dummy_int32(device) -> torch.Tensor:
    """An int32 tensor for the unused accept_length argument (decode/target_verify)."""
    if device not in _dummies:
        _dummies[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return _dummies[device]


fill_draft_extend_metadata_cuda = partial(fill_replay_metadata_cuda, 2)


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
