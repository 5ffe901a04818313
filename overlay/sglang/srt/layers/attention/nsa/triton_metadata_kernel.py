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

Inputs as SGLang passes them: `req_pool_indices` and `seq_lens` int32 (the CUDA-graph runners'
buffers) or int64 (a ScheduleBatch's own tensors), `accept_length` int32 or int64, any stride;
`req_to_token` int32, any strides. Bounds (never an out-of-bounds read): a request index outside
[0, pool rows) gets page-table cells of 0 (SGLang's padding slot) and no req_to_token read; a kv
length above the req_to_token row or the page-table width is clamped to it.

Grid: (bs, column chunks). Program (i, 0) also writes request i's 1-D metadata; every program
copies one CHUNK of request i's page-table row into its e_i rows, so each `req_to_token` row is
read once per chunk and no program searches for its request. Prefix sums over requests are
recomputed per program from the bs inputs (closed form for the clamped sums), so no temporaries
and no second pass are needed.

Everything that is fixed for a captured batch size lives in one small device table built at
capture time (metadata_table.plan_table): one row of output-buffer addresses per backend (so a
single launch fills all N step backends of NativeSparseAttnMultiStepBackend), then the constants. A replay
passes only that table and its three inputs, which keeps Triton's per-argument launch cost down.
`FillPlan` compiles and loads, at capture time, the input-dtype variants the plan's replays can
bring (replay_fastpath._input_dtypes) and, on a GPU, launches the compiled kernel directly (no
Triton dispatch on a replay): a replay never compiles.

Differences from SGLang 0.5.8's own path, all in entries SGLang never reads: page-table columns at
or past a row's kv length are left as they were (0.5.8 copies `req_to_token` garbage there up to
the batch's max length).

Compatible with Triton 3.5.1 (SGLang 0.5.8's pin), 3.6 and the 3.9 interpreter: no block
pointers, libdevice, inline asm or autotune; loop bounds are compile-time constants.
"""
from __future__ import annotations

import inspect
import logging

import torch
import triton
import triton.language as tl

from sglang.srt.layers.attention.nsa.metadata_table import (  # noqa: F401 (MODE_* re-exported)
    INDEX_DTYPES, MODE_DECODE, MODE_DRAFT_EXTEND, MODE_TARGET_VERIFY, N_FIELDS, PARAMS)

logger = logging.getLogger(__name__)

CHUNK = 2048  # page-table columns per program


@triton.jit
def _clamped_run_sum(a, n, topk):
    """sum_{t=a}^{a+n-1} min(t, topk), elementwise; n >= 0 (int64 math, exact)."""
    last = a + n - 1
    full = n * (a + last) // 2  # no clamp applies
    m = tl.maximum(tl.minimum(topk - a + 1, n), 0)  # terms <= topk
    part = m * (a + a + m - 1) // 2 + (n - m) * topk
    return tl.where(last <= topk, full, tl.where(a > topk, n * topk, part))


@triton.jit
def _dest(table_ptr, d, field: tl.constexpr):
    return tl.load(table_ptr + d * 7 + field).to(tl.pointer_type(tl.int32))


ALIGNMENT_FREE = "do_not_specialize_on_alignment" in inspect.signature(triton.jit).parameters


def _jit(**kw):
    """triton.jit, not specializing the given arguments on alignment where this Triton can (so a
    compiled variant serves inputs at any address)."""
    if not ALIGNMENT_FREE:
        kw.pop("do_not_specialize_on_alignment", None)
    return triton.jit(**kw)
_INPUTS = ["req_pool_indices_ptr", "seq_lens_ptr", "accept_length_ptr"]


@_jit(do_not_specialize=["rpi_stride", "seq_stride", "acc_stride"],
      do_not_specialize_on_alignment=_INPUTS)
def _fill_replay_metadata_kernel(
    table_ptr, req_pool_indices_ptr, rpi_stride, seq_lens_ptr, seq_stride,
    accept_length_ptr, acc_stride,
    MODE: tl.constexpr, PAGE_SIZE: tl.constexpr, MAX_EXT: tl.constexpr,
    BLOCK_BS: tl.constexpr, CHUNK: tl.constexpr, N_DEST: tl.constexpr,
):
    i = tl.program_id(0)
    c = tl.program_id(1)
    p = table_ptr + N_DEST * 7  # PARAMS
    req_to_token_ptr = tl.load(p + 0).to(tl.pointer_type(tl.int32))
    r2t_stride0 = tl.load(p + 1)
    r2t_stride1 = tl.load(p + 2)
    pool_rows = tl.load(p + 3)
    r2t_cols = tl.load(p + 4)
    page_table_stride = tl.load(p + 5)
    real_page_table_stride = tl.load(p + 6)
    bs = tl.load(p + 7)
    topk = tl.load(p + 8)
    n_draft = tl.load(p + 9)
    max_rows = tl.load(p + 10)
    max_cols = tl.load(p + 11)

    # ---- per-request lengths, for this request and (vectorized) all requests
    ks = tl.arange(0, BLOCK_BS)
    kmask = ks < bs
    seq_k = tl.load(seq_lens_ptr + ks * seq_stride, mask=kmask, other=0).to(tl.int64)
    seq_i = tl.load(seq_lens_ptr + i * seq_stride).to(tl.int64)
    if MODE == 1:  # target_verify: kv includes the draft tokens, n_draft rows each
        kv_k = seq_k + n_draft
        kv_i = seq_i + n_draft
        ext_k = tl.where(kmask, n_draft, 0).to(tl.int64)
        ext_i = n_draft + 0 * seq_i
    elif MODE == 2:  # draft_extend: accept_length rows each
        kv_k = seq_k
        kv_i = seq_i
        ext_k = tl.load(accept_length_ptr + ks * acc_stride, mask=kmask, other=0).to(tl.int64)
        ext_i = tl.load(accept_length_ptr + i * acc_stride).to(tl.int64)
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
            tl.store(_dest(table_ptr, d, 0) + i, kv_i.to(tl.int32))
            tl.store(_dest(table_ptr, d, 1) + 1 + i, cu_k.to(tl.int32))
            if MODE != 0:  # decode: nsa_seqlens_expanded IS cache_seqlens_int32 (same tensor)
                tl.store(_dest(table_ptr, d, 4) + rows, expanded.to(tl.int32), mask=row_mask)
            tl.store(_dest(table_ptr, d, 5) + rows, clamped.to(tl.int32), mask=row_mask)
            tl.store(_dest(table_ptr, d, 6) + 1 + rows, nsa_cu.to(tl.int32), mask=row_mask)

    # ---- page table: this chunk of request i's row, into each of its rows
    limit = tl.minimum(tl.minimum(kv_i, max_cols), r2t_cols)
    if c * CHUNK < limit:
        rpi = tl.load(req_pool_indices_ptr + i * rpi_stride).to(tl.int64)
        in_pool = (rpi >= 0) & (rpi < pool_rows)  # else: padding slot 0, no read
        src = req_to_token_ptr + tl.where(in_pool, rpi, 0) * r2t_stride0
        cols = c * CHUNK + tl.arange(0, CHUNK)
        # Row conditions are compared as vectors (`zero + ...`): Triton 3.9's interpreter
        # rejects a scalar bool broadcast into a vector mask.
        zero = cols * 0
        cmask = cols < limit
        pool_ok = (zero + in_pool.to(tl.int32)) > 0
        vals = tl.load(src + cols * r2t_stride1, mask=cmask & pool_ok, other=0)
        if PAGE_SIZE > 1:
            blocks = c * (CHUNK // PAGE_SIZE) + tl.arange(0, CHUNK // PAGE_SIZE)
            bzero = blocks * 0
            bmask = blocks * PAGE_SIZE < limit
            bpool_ok = (bzero + in_pool.to(tl.int32)) > 0
            pages = tl.load(src + blocks * PAGE_SIZE * r2t_stride1, mask=bmask & bpool_ok,
                            other=0) // PAGE_SIZE
        for d in tl.static_range(N_DEST):
            table = _dest(table_ptr, d, 2)
            for j in tl.static_range(MAX_EXT):
                rj = start_i + j
                ok = cmask & (zero + j < ext_i) & (zero + rj < max_rows)
                tl.store(table + rj * page_table_stride + cols, vals, mask=ok)
            if PAGE_SIZE > 1:
                real = _dest(table_ptr, d, 3)
                for j in tl.static_range(MAX_EXT):
                    rj = start_i + j
                    ok = bmask & (bzero + j < ext_i) & (bzero + rj < max_rows)
                    tl.store(real + rj * real_page_table_stride + blocks, pages, mask=ok)


def block_bs(bs: int) -> int:
    """BLOCK_BS for a batch size: at least 256, so that one variant per mode covers every bs
    SGLang captures up to 256. Each variant is a Triton compile at server start (~0.45 s on an
    H200); scanning 256 lanes instead of 64 for a small batch is a few masked loads."""
    return max(256, triton.next_power_of_2(bs))


class FillPlan:
    """The Triton fill for one captured (backends, bs, mode), compiled and loaded at capture time.

    `fill(req_pool_indices, seq_lens, accept_length)` writes one replay's metadata (see the module
    docstring) with one launch and no host sync. A variant for every input-dtype combination in
    `input_dtypes` ((req_pool_indices, seq_lens, accept_length or None) dtypes) is compiled, loaded
    and launched once here, into scratch memory; on a GPU a replay then launches the compiled
    kernel directly, skipping Triton's dispatch. Inputs of another dtype combination (or, on a
    Triton that specializes pointers on alignment, an unaligned input) go through Triton's
    dispatch, which may compile: correct, slower, logged once.
    """

    def __init__(self, table: torch.Tensor, *, mode: int, n_draft: int, page_size: int, bs: int,
                 n_dest: int, page_table_shape: tuple[int, int], input_dtypes):
        max_rows, max_cols = page_table_shape
        if page_size > 1 and CHUNK % page_size:
            raise ValueError(f"nsa-fastpath: page_size {page_size} must divide {CHUNK}")
        self.table, self.bs = table, bs
        self.grid = (bs, triton.cdiv(max_cols, CHUNK), 1)
        self.constexprs = dict(
            MODE=mode, PAGE_SIZE=page_size,
            MAX_EXT=triton.next_power_of_2(1 if mode == MODE_DECODE else n_draft),
            BLOCK_BS=block_bs(bs), CHUNK=CHUNK, N_DEST=n_dest)
        self._const_values = tuple(self.constexprs.values())
        self._compiled: dict = {}  # (rpi dtype, seq dtype, accept dtype) -> direct launcher
        self._warned: set = set()
        # Warm-up target: every destination points at one scratch buffer, and the page table
        # is 0 columns wide, so a launch writes only 1-D fields (max_rows + 1 entries at most).
        self._scratch = torch.empty(max_rows + 2, dtype=torch.int32, device=table.device)
        dests = torch.full((n_dest * N_FIELDS,), self._scratch.data_ptr(), dtype=torch.int64,
                           device=table.device)
        scratch_table = torch.cat([dests, table[n_dest * N_FIELDS:]])
        scratch_table[n_dest * N_FIELDS + PARAMS.index("max_cols")] = 0
        self._warmed = set(input_dtypes)  # the dtype sets compiled at capture (on any device)
        for dtypes in dict.fromkeys(input_dtypes):
            self._warm(scratch_table, dtypes)

    def _warm(self, scratch_table, dtypes) -> None:
        rpi, seq = (torch.zeros(self.bs, dtype=dt, device=scratch_table.device) for dt in dtypes[:2])
        acc = seq if dtypes[2] is None else torch.zeros(self.bs, dtype=dtypes[2], device=seq.device)
        compiled = _fill_replay_metadata_kernel[(self.bs, 1)](  # the grid is not compiled in
            scratch_table, rpi, 1, seq, 1, acc, 1, **self.constexprs)
        if hasattr(compiled, "__getitem__"):  # a GPU build (the interpreter returns nothing)
            self._compiled[dtypes] = compiled[self.grid]

    def fill(self, req_pool_indices, seq_lens, accept_length=None) -> None:
        if accept_length is not None and accept_length.dtype == torch.int64:
            own = (req_pool_indices.dtype, seq_lens.dtype)
            if (*own, torch.int64) not in self._warmed and (*own, torch.int32) in self._warmed:
                # EAGLE's draft extend right after a request finished in verify hands the batch's
                # int64 accept counts (each at most num_draft_tokens): the int32 variant the
                # capture compiled takes them after one small copy on the stream, where a launch
                # of their own dtype would compile on this replay (~0.27 s on an H200)
                accept_length = accept_length.to(torch.int32)
        self._launch(req_pool_indices, seq_lens, accept_length)

    def _launch(self, req_pool_indices, seq_lens, accept_length=None) -> None:
        acc = seq_lens if accept_length is None else accept_length
        if req_pool_indices.shape[0] < self.bs or seq_lens.shape[0] < self.bs or acc.shape[0] < self.bs:
            check_inputs(self.bs, req_pool_indices, seq_lens, accept_length)  # raises, names it
        args = (self.table, req_pool_indices, req_pool_indices.stride(0), seq_lens,
                seq_lens.stride(0), acc, acc.stride(0))
        dtypes = (req_pool_indices.dtype, seq_lens.dtype,
                  None if accept_length is None else accept_length.dtype)
        launch = self._compiled.get(dtypes)
        if launch is not None and (ALIGNMENT_FREE or all(
                t.data_ptr() % 16 == 0 for t in (req_pool_indices, seq_lens, acc))):
            launch(*args, *self._const_values)
            return
        check_inputs(self.bs, req_pool_indices, seq_lens, accept_length)
        if self._compiled and dtypes not in self._warned:
            self._warned.add(dtypes)
            logger.warning("nsa-fastpath: Triton replay fill for input dtypes %s was not compiled "
                           "at capture time; Triton dispatches (and may compile) it", dtypes)
        _fill_replay_metadata_kernel[self.grid[:2]](*args, **self.constexprs)


def check_inputs(bs: int, req_pool_indices, seq_lens, accept_length) -> None:
    """What the kernels need of a replay's inputs (host attributes only, no sync)."""
    for name, t in (("req_pool_indices", req_pool_indices), ("seq_lens", seq_lens),
                    ("accept_length", accept_length)):
        if t is None:
            continue
        if t.dtype not in INDEX_DTYPES:
            raise TypeError(f"nsa-fastpath: {name} must be int32 or int64, got {t.dtype}")
        if t.dim() != 1 or t.shape[0] < bs:
            raise ValueError(f"nsa-fastpath: {name} has shape {tuple(t.shape)}; 1-D with at "
                             f"least bs={bs} entries is needed")
