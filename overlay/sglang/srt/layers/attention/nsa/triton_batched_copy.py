# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""nsa-fastpath: one launch for the precomputed multi-step replay copies.

SGLang 0.5.8's `init_forward_metadata_replay_cuda_graph_from_precomputed` makes 6-8 `.copy_()`
calls per step backend (1-D seqlens and cu_seqlens slices, the 2-D strided `page_table_1[:, :max_len]`,
`real_page_table` when page_size > 1), and NativeSparseAttnMultiStepBackend repeats that for
each of its N step backends. `launch` does all of it, for all N backends, in one Triton launch:
every field of one precomputed source into every backend's buffers, 2-D strided sources and
destinations handled in the kernel (row strides as arguments). Destination buffers are addressed
through the table built at capture time (metadata_table.plan_table), so a replay
passes only the sources. replay_fastpath decides when this runs; this module only copies.

Why our own kernel and not only `torch._foreach_copy_`: its fast path (one multi-tensor-apply
launch) needs contiguous destinations; the page-table slice `page_table_1[:rows, :max_len]` is
strided whenever rows > 1, and it then falls back to one copy per tensor (N backends x 6-8
launches). Measured on an H200 (docs/BENCHMARKS.md): at bs 1, where every slice is contiguous,
`_foreach_copy_` takes 8 us against the kernel's 24 us; from bs 2 on it takes 35-47 us (0.5-0.8 ms
for 8 backends) against 25 us. So replay_fastpath uses `_foreach_copy_` exactly when every
destination slice is contiguous (`destinations_contiguous`), and this kernel otherwise.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sglang.srt.layers.attention.nsa.triton_metadata_kernel import _dest, _jit

BLOCK = 1024
_SOURCES = ["cache_src", "cu_src", "pt_src", "real_src", "expanded_src", "nsa_src", "nsa_cu_src"]


@_jit(do_not_specialize=["pt_src_stride", "real_src_stride", "pt_dst_stride", "real_dst_stride",
                         "bs", "rows", "cols", "real_cols", "size"],
      do_not_specialize_on_alignment=_SOURCES)
def _batched_copy_kernel(
    cache_src, cu_src, pt_src, pt_src_stride, real_src, real_src_stride,
    expanded_src, nsa_src, nsa_cu_src,
    dest_table_ptr, pt_dst_stride, real_dst_stride,
    bs, rows, cols, real_cols, size,
    COPY_EXPANDED: tl.constexpr, HAS_REAL: tl.constexpr, N_DEST: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    if r < rows:  # one block of one page-table row (and of its real_page_table row)
        m = offs < cols
        v = tl.load(pt_src + r * pt_src_stride + offs, mask=m)
        if HAS_REAL:
            mr = offs < real_cols
            vr = tl.load(real_src + r * real_src_stride + offs, mask=mr)
        for d in tl.static_range(N_DEST):
            tl.store(_dest(dest_table_ptr, d, 2) + r * pt_dst_stride + offs, v, mask=m)
            if HAS_REAL:
                tl.store(_dest(dest_table_ptr, d, 3) + r * real_dst_stride + offs, vr, mask=mr)
    else:  # the extra row of programs: one block of each 1-D field
        mb = offs < bs
        ms = offs < size
        cache = tl.load(cache_src + offs, mask=mb)
        cu = tl.load(cu_src + 1 + offs, mask=mb)
        nsa = tl.load(nsa_src + offs, mask=ms)
        nsa_cu = tl.load(nsa_cu_src + 1 + offs, mask=ms)
        if COPY_EXPANDED:
            expanded = tl.load(expanded_src + offs, mask=ms)
        for d in tl.static_range(N_DEST):
            tl.store(_dest(dest_table_ptr, d, 0) + offs, cache, mask=mb)
            tl.store(_dest(dest_table_ptr, d, 1) + 1 + offs, cu, mask=mb)
            tl.store(_dest(dest_table_ptr, d, 5) + offs, nsa, mask=ms)
            tl.store(_dest(dest_table_ptr, d, 6) + 1 + offs, nsa_cu, mask=ms)
            if COPY_EXPANDED:
                tl.store(_dest(dest_table_ptr, d, 4) + offs, expanded, mask=ms)


def unsupported_source(precomputed) -> str | None:
    """Why the kernel can't read these precomputed sources (None: it can). 1-D sources must be
    contiguous int32, 2-D ones int32 rows with unit column stride."""
    sources = {
        "cache_seqlens": precomputed.cache_seqlens, "cu_seqlens_k": precomputed.cu_seqlens_k,
        "seqlens_expanded": precomputed.seqlens_expanded,
        "nsa_cache_seqlens": precomputed.nsa_cache_seqlens,
        "nsa_cu_seqlens_k": precomputed.nsa_cu_seqlens_k,
        "page_indices": precomputed.page_indices, "real_page_table": precomputed.real_page_table,
    }
    for name, t in sources.items():
        if t is None:
            continue
        if t.dtype != torch.int32 or t.stride(-1) != 1 or (t.dim() == 1) != (name not in (
                "page_indices", "real_page_table")):
            return f"precomputed.{name} is {t.dtype} {tuple(t.shape)} strides {t.stride()}"
    return None


def launch(precomputed, table: torch.Tensor, metadata, n_dest: int, copy_expanded: bool) -> None:
    """One launch: every field of `precomputed` into every backend row of `table`."""
    pages = precomputed.page_indices
    real = precomputed.real_page_table
    rows, cols = pages.shape
    real_cols = real.shape[1] if real is not None else 0
    size = precomputed.seqlens_expanded_size
    bs = precomputed.cache_seqlens.shape[0]
    width = max(cols, real_cols, bs, size, 1)
    _batched_copy_kernel[(rows + 1, triton.cdiv(width, BLOCK))](
        precomputed.cache_seqlens, precomputed.cu_seqlens_k, pages, pages.stride(0),
        real if real is not None else pages, real.stride(0) if real is not None else 0,
        precomputed.seqlens_expanded, precomputed.nsa_cache_seqlens, precomputed.nsa_cu_seqlens_k,
        table, metadata.page_table_1.stride(0), metadata.real_page_table.stride(0),
        bs, rows, cols, real_cols, size,
        COPY_EXPANDED=copy_expanded, HAS_REAL=real is not None, N_DEST=n_dest, BLOCK=BLOCK,
    )


def warm(table: torch.Tensor, metadata, n_dest: int, copy_expanded: bool, has_real: bool) -> None:
    """Compile and load the kernel variant a replay will launch, at capture time: a launch of
    empty sources (rows = bs = size = 0), which writes nothing."""
    one = torch.zeros(2, dtype=torch.int32, device=table.device)
    _batched_copy_kernel[(1, 1)](
        one, one, one, 1, one, 1, one, one, one,
        table, metadata.page_table_1.stride(0), metadata.real_page_table.stride(0),
        0, 0, 0, 0, 0,
        COPY_EXPANDED=copy_expanded, HAS_REAL=has_real, N_DEST=n_dest, BLOCK=BLOCK,
    )


def plain_copy_pairs(metadata, precomputed, forward_mode):
    """(destination view, source) pairs of SGLang 0.5.8's from-precomputed copies."""
    rows, cols = precomputed.page_indices.shape
    size = precomputed.seqlens_expanded_size
    pairs = [
        (metadata.cache_seqlens_int32, precomputed.cache_seqlens),
        (metadata.cu_seqlens_k[1:], precomputed.cu_seqlens_k[1:]),
        (metadata.page_table_1[:rows, :cols], precomputed.page_indices),
        (metadata.nsa_cache_seqlens_int32[:size], precomputed.nsa_cache_seqlens),
        (metadata.nsa_cu_seqlens_k[1 : 1 + size], precomputed.nsa_cu_seqlens_k[1 : 1 + size]),
    ]
    if not forward_mode.is_decode_or_idle():
        pairs.append((metadata.nsa_seqlens_expanded[:size], precomputed.seqlens_expanded))
    if precomputed.real_page_table is not None:
        r, c = precomputed.real_page_table.shape
        pairs.append((metadata.real_page_table[:r, :c], precomputed.real_page_table))
    return pairs


def destinations_contiguous(metadata, precomputed) -> bool:
    """Every destination slice contiguous: then `_foreach_copy_` is one launch, and cheaper."""
    rows, cols = precomputed.page_indices.shape
    real = precomputed.real_page_table
    return metadata.page_table_1[:rows, :cols].is_contiguous() and (
        real is None or metadata.real_page_table[: real.shape[0], : real.shape[1]].is_contiguous())


def copy_with_foreach(metadatas, precomputed, forward_mode) -> None:
    """The same copies through torch._foreach_copy_: one launch when every destination is
    contiguous, one copy per tensor otherwise."""
    dsts, srcs = [], []
    for m in metadatas:
        for dst, src in plain_copy_pairs(m, precomputed, forward_mode):
            dsts.append(dst)
            srcs.append(src)
    torch._foreach_copy_(dsts, srcs)


def verify(metadatas, precomputed, forward_mode) -> None:
    """SGLANG_NSA_BATCHED_COPY_VERIFY=1: check every copied field against its source (syncs)."""
    for i, m in enumerate(metadatas):
        for dst, src in plain_copy_pairs(m, precomputed, forward_mode):
            if not torch.equal(dst, src):
                raise RuntimeError(
                    f"nsa-fastpath: batched copy mismatch in step backend {i}, shape "
                    f"{tuple(src.shape)}; set SGLANG_NSA_USE_BATCHED_COPY=0 and report it")
