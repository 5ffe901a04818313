# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""One fused, sync-free Triton launch for NSA CUDA-graph replay metadata (nsa-fastpath).

SGLang 0.5.8's `NativeSparseAttnBackend.init_forward_metadata_replay_cuda_graph` builds the
replay metadata with host syncs (`accept_length.tolist()`, `repeat_interleave` with device
repeats), a Python loop of `torch.arange` per request and ~8 small launches. This kernel writes
all of it, in place, into the buffers captured with the CUDA graph, from device inputs only:

    cache_seqlens_int32[i]   kv_len_i                     (decode/draft_extend: seq_len_i,
                                                           target_verify: seq_len_i + n_draft)
    cu_seqlens_k[1 + i]      sum_{k <= i} kv_len_k
    for each of request i's e_i extend tokens j (decode: 1, target_verify: n_draft,
    draft_extend: accept_length_i), at row r = start_i + j:
      nsa_seqlens_expanded[r]      kv_len_i - e_i + 1 + j
      nsa_cache_seqlens_int32[r]   min(that, topk)
      nsa_cu_seqlens_k[1 + r]      running sum of the above
      page_table_1[r, :kv_len_i]   req_to_token[req_pool_indices[i], :kv_len_i]
      real_page_table[r, b]        req_to_token[..., b * page_size] // page_size,
                                   for blocks b < ceil(kv_len_i / page_size)   (page_size > 1)

Grid: (bs, column chunks). Program (i, 0) also writes request i's 1-D metadata; every program
copies one CHUNK of request i's page-table row into its e_i rows, so each `req_to_token` row is
read once per chunk and no program searches for its request. The outputs are addressed through
a small device table of buffer pointers (`destination_table`), one row per backend, so a single
launch also fills all N step backends of NativeSparseAttnMultiStepBackend. Prefix sums over requests are
recomputed per program from the bs inputs (bs <= a few hundred), closed form for the clamped
sums, so no temporaries and no second pass are needed.

Differences from SGLang 0.5.8's own path, all in entries SGLang never reads: page-table columns at
or past a row's kv length are left as they were (0.5.8 copies `req_to_token` garbage there up to
the batch's max length).

Seed entry points (docs in ../../../../../docs): `fill_draft_extend_metadata_inplace` and
`fill_draft_extend_metadata_fused_simple` are subsumed by `fill_replay_metadata` with
`mode=MODE_DRAFT_EXTEND`; the name says what it does for all three modes.

Compatible with Triton 3.5.1 (SGLang 0.5.8's pin), 3.6 and the 3.9 interpreter: no block
pointers, libdevice, inline asm or autotune; loop bounds are compile-time constants.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MODE_DECODE = 0
MODE_TARGET_VERIFY = 1
MODE_DRAFT_EXTEND = 2

CHUNK = 2048  # page-table columns per program


@triton.jit
def _clamped_run_sum(a, n, topk):
    """sum_{t=a}^{a+n-1} min(t, topk), elementwise; n >= 0 (int64 math, exact)."""
    last = a + n - 1
    full = n * (a + last) // 2  # no clamp applies
    m = tl.maximum(tl.minimum(topk - a + 1, n), 0)  # terms <= topk
    part = m * (a + a + m - 1) // 2 + (n - m) * topk
    return tl.where(last <= topk, full, tl.where(a > topk, n * topk, part))


# Output buffers, in the order of a destination-table row (see `destination_table`).
FIELDS = (
    "cache_seqlens_int32",
    "cu_seqlens_k",
    "page_table_1",
    "real_page_table",
    "nsa_seqlens_expanded",
    "nsa_cache_seqlens_int32",
    "nsa_cu_seqlens_k",
)


def destination_table(metadatas, device) -> torch.Tensor:
    """[N, len(FIELDS)] int64 device table of the buffers' addresses, one row per backend.

    Built once per captured bs (it copies to the device: call it at capture time, not on
    replay). Every backend's buffers must have the shapes and strides of the first one's.
    """
    first = metadatas[0]
    rows = []
    for m in metadatas:
        row = []
        for name in FIELDS:
            t, t0 = getattr(m, name), getattr(first, name)
            if t.dtype != torch.int32 or t.shape != t0.shape or t.stride() != t0.stride():
                raise ValueError(f"nsa-fastpath: {name} buffers differ between backends")
            row.append(t.data_ptr())
        rows.append(row)
    return torch.tensor(rows, dtype=torch.int64, device=device)


@triton.jit
def _dest(table_ptr, d, field: tl.constexpr):
    return tl.load(table_ptr + d * 7 + field).to(tl.pointer_type(tl.int32))


@triton.jit
def _fill_replay_metadata_kernel(
    req_to_token_ptr, req_to_token_stride,
    req_pool_indices_ptr, seq_lens_ptr, accept_length_ptr, dest_table_ptr,
    page_table_stride, real_page_table_stride,
    bs, topk, n_draft, max_rows, max_cols,
    MODE: tl.constexpr, PAGE_SIZE: tl.constexpr, MAX_EXT: tl.constexpr,
    BLOCK_BS: tl.constexpr, CHUNK: tl.constexpr, N_DEST: tl.constexpr,
):
    i = tl.program_id(0)
    c = tl.program_id(1)

    # ---- per-request lengths, for this request and (vectorized) all requests
    ks = tl.arange(0, BLOCK_BS)
    kmask = ks < bs
    seq_k = tl.load(seq_lens_ptr + ks, mask=kmask, other=0).to(tl.int64)
    seq_i = tl.load(seq_lens_ptr + i).to(tl.int64)
    if MODE == 1:  # target_verify: kv includes the draft tokens, n_draft rows each
        kv_k = seq_k + n_draft
        kv_i = seq_i + n_draft
        ext_k = tl.where(kmask, n_draft, 0).to(tl.int64)
        ext_i = n_draft + 0 * seq_i
    elif MODE == 2:  # draft_extend: accept_length rows each
        kv_k = seq_k
        kv_i = seq_i
        ext_k = tl.load(accept_length_ptr + ks, mask=kmask, other=0).to(tl.int64)
        ext_i = tl.load(accept_length_ptr + i).to(tl.int64)
    else:  # decode: one row each
        kv_k = seq_k
        kv_i = seq_i
        ext_k = tl.where(kmask, 1, 0).to(tl.int64)
        ext_i = 1 + 0 * seq_i
    before = kmask & (ks < i)
    start_i = tl.sum(tl.where(before, ext_k, 0), axis=0)  # first row of request i

    if c == 0:
        js = tl.arange(0, MAX_EXT)
        rows = start_i + js
        row_mask = (js < ext_i) & (rows < max_rows)
        cu_k = tl.sum(tl.where(kmask & (ks <= i), kv_k, 0), axis=0)
        first_k = kv_k - ext_k + 1
        nsa_before = tl.sum(tl.where(before, _clamped_run_sum(first_k, ext_k, topk), 0), axis=0)
        expanded = kv_i - ext_i + 1 + js
        clamped = tl.minimum(expanded, topk)
        nsa_cu = nsa_before + tl.cumsum(tl.where(js < ext_i, clamped, 0), axis=0)
        for d in tl.static_range(N_DEST):
            tl.store(_dest(dest_table_ptr, d, 0) + i, kv_i.to(tl.int32))
            tl.store(_dest(dest_table_ptr, d, 1) + 1 + i, cu_k.to(tl.int32))
            if MODE != 0:  # decode: nsa_seqlens_expanded IS cache_seqlens_int32 (same tensor)
                tl.store(_dest(dest_table_ptr, d, 4) + rows, expanded.to(tl.int32), mask=row_mask)
            tl.store(_dest(dest_table_ptr, d, 5) + rows, clamped.to(tl.int32), mask=row_mask)
            tl.store(_dest(dest_table_ptr, d, 6) + 1 + rows, nsa_cu.to(tl.int32), mask=row_mask)

    # ---- page table: this chunk of request i's row, into each of its rows
    limit = tl.minimum(kv_i, max_cols)
    if c * CHUNK < limit:
        rpi = tl.load(req_pool_indices_ptr + i).to(tl.int64)
        src = req_to_token_ptr + rpi * req_to_token_stride
        cols = c * CHUNK + tl.arange(0, CHUNK)
        cmask = cols < limit
        vals = tl.load(src + cols, mask=cmask)
        # Row conditions are compared as vectors (`zero + ...`): Triton 3.9's interpreter
        # rejects a scalar bool broadcast into a vector mask.
        zero = cols * 0
        if PAGE_SIZE > 1:
            blocks = c * (CHUNK // PAGE_SIZE) + tl.arange(0, CHUNK // PAGE_SIZE)
            bmask = blocks * PAGE_SIZE < limit
            pages = tl.load(src + blocks * PAGE_SIZE, mask=bmask) // PAGE_SIZE
            bzero = blocks * 0
        for d in tl.static_range(N_DEST):
            table = _dest(dest_table_ptr, d, 2)
            for j in tl.static_range(MAX_EXT):
                rj = start_i + j
                ok = cmask & (zero + j < ext_i) & (zero + rj < max_rows)
                tl.store(table + rj * page_table_stride + cols, vals, mask=ok)
            if PAGE_SIZE > 1:
                real = _dest(dest_table_ptr, d, 3)
                for j in tl.static_range(MAX_EXT):
                    rj = start_i + j
                    ok = bmask & (bzero + j < ext_i) & (bzero + rj < max_rows)
                    tl.store(real + rj * real_page_table_stride + blocks, pages, mask=ok)


def fill_replay_metadata(
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
) -> None:
    """Write one replay's metadata in place into every backend of `dest_table` (one launch, no
    host sync). See the module docstring for what is written.

    `seq_lens`, `req_pool_indices` (and `accept_length` for draft_extend) hold at least bs
    entries; rows past `page_table_shape[0]` and columns past `page_table_shape[1]` are never
    written.
    """
    max_rows, max_cols = page_table_shape
    if page_size > 1 and CHUNK % page_size:
        raise ValueError(f"nsa-fastpath: page_size {page_size} must divide {CHUNK}")
    if bs == 0:
        return
    grid = (bs, triton.cdiv(max_cols, CHUNK))
    _fill_replay_metadata_kernel[grid](
        req_to_token, req_to_token.stride(0),
        req_pool_indices, seq_lens, accept_length if accept_length is not None else seq_lens,
        dest_table, page_table_stride, real_page_table_stride,
        bs, topk, n_draft, max_rows, max_cols,
        MODE=mode, PAGE_SIZE=page_size,
        MAX_EXT=triton.next_power_of_2(1 if mode == MODE_DECODE else n_draft),
        BLOCK_BS=triton.next_power_of_2(bs), CHUNK=CHUNK, N_DEST=dest_table.shape[0],
    )
