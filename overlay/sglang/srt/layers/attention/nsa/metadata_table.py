# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""nsa-fastpath: the device table a replay's kernels read (CUDA C++, Triton fill, batched copy).

Built once per captured batch size, at capture time (it copies to the device), from the
NSAMetadata buffers the CUDA graphs captured: one row of FIELDS addresses per backend (so one
launch fills every step backend of NativeSparseAttnMultiStepBackend), then the PARAMS constants.
The kernels index it by position: the CUDA kernel takes the [n_dest, 7] rows, the Triton kernels
the whole table (fields at d * 7 + field, PARAMS after the rows). torch only, so that every path
can build it whatever else fails to load.
"""
from __future__ import annotations

import torch

# Replay modes (the CUDA kernel's Mode enum has the same values) and the input dtypes the
# kernels take for req_pool_indices, seq_lens and accept_length.
MODE_DECODE, MODE_TARGET_VERIFY, MODE_DRAFT_EXTEND = 0, 1, 2
INDEX_DTYPES = (torch.int32, torch.int64)

# Output buffers, in the order of a destination row of the table.
FIELDS = (
    "cache_seqlens_int32",
    "cu_seqlens_k",
    "page_table_1",
    "real_page_table",
    "nsa_seqlens_expanded",
    "nsa_cache_seqlens_int32",
    "nsa_cu_seqlens_k",
)
N_FIELDS = len(FIELDS)
# Constants after the destination rows, in this order (the Triton kernel reads them by index).
PARAMS = ("req_to_token", "req_to_token_stride0", "req_to_token_stride1", "pool_rows",
          "req_to_token_cols", "page_table_stride", "real_page_table_stride", "bs", "topk",
          "n_draft", "max_rows", "max_cols")


def check_destinations(metadatas) -> None:
    """Every output buffer int32 with unit stride along its last dimension, and the same shapes
    and strides in every backend (one launch writes them all with the first one's strides)."""
    first = metadatas[0]
    for i, m in enumerate(metadatas):
        for name in FIELDS:
            t, t0 = getattr(m, name), getattr(first, name)
            if t.dtype != torch.int32 or t.stride(-1) != 1:
                raise ValueError(f"nsa-fastpath: metadata.{name} of step backend {i} is "
                                 f"{t.dtype} with strides {t.stride()}; int32 rows are needed")
            if t.shape != t0.shape or t.stride() != t0.stride():
                raise ValueError(f"nsa-fastpath: metadata.{name} differs in shape or strides "
                                 f"between step backends 0 and {i}")


def destination_rows(metadatas) -> list[list[int]]:
    return [[getattr(m, name).data_ptr() for name in FIELDS] for m in metadatas]


def plan_table(metadatas, *, req_to_token, bs, topk, n_draft, device) -> torch.Tensor:
    """The int64 device table of a captured bs: one row of FIELDS addresses per backend, then PARAMS.

    Built once per captured bs (it copies to the device: call it at capture time, never on a
    replay). Raises ValueError naming a buffer that the kernels can't write.
    """
    check_destinations(metadatas)
    if req_to_token.dtype != torch.int32 or req_to_token.dim() != 2:
        raise ValueError(f"nsa-fastpath: req_to_token must be a 2-D int32 tensor, got "
                         f"{req_to_token.dtype} {tuple(req_to_token.shape)}")
    first = metadatas[0]
    rows, cols = first.page_table_1.shape
    params = [req_to_token.data_ptr(), req_to_token.stride(0), req_to_token.stride(1),
              req_to_token.shape[0], req_to_token.shape[1], first.page_table_1.stride(0),
              first.real_page_table.stride(0), bs, topk, n_draft, rows, cols]
    flat = [v for row in destination_rows(metadatas) for v in row] + params
    return torch.tensor(flat, dtype=torch.int64, device=device)
