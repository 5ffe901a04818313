# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""nsa-fastpath: one launch for the precomputed multi-step replay copies.

SGLang 0.5.8's `init_forward_metadata_replay_cuda_graph_from_precomputed` issues 6-8 `.copy_()`
calls per step backend (1-D seqlens and cu_seqlens slices, the 2-D strided `page_table_1[:, :max_len]`,
`real_page_table` when page_size > 1), and NativeSparseAttnMultiStepBackend repeats that for
each of its N step backends. `copy_precomputed` does all of it, for all N backends, in one
Triton launch: every field of one precomputed source into every backend's buffers, 2-D strided
sources and destinations handled in the kernel (row strides as arguments). Destination buffers
are addressed through the device pointer table built at capture time
(triton_metadata_kernel.destination_table), so a replay passes only the sources.

Why our own kernel and not only `torch._foreach_copy_`: its fast path (one multi-tensor-apply
launch) needs contiguous destinations; the page-table slice `page_table_1[:rows, :max_len]` is
strided whenever rows > 1, and it then falls back to one copy per tensor (N backends x 6-8
launches). Measured on an H200 (docs/BENCHMARKS.md): at bs 1, where every slice is contiguous,
`_foreach_copy_` takes 8 us against the kernel's 24 us; from bs 2 on it takes 35-47 us (0.5-0.8 ms
for 8 backends) against 25 us. So `copy_precomputed` uses `_foreach_copy_` exactly when every
destination slice is contiguous, and this kernel otherwise.

FlashMLA metadata (only with nsa_decode_backend=flashmla_kv) is not a plain int32 table; it is
copied with `.copy_()` after the launch (logged once).

Deliberate difference from SGLang 0.5.8 (docs/DIFFERENCES.md): after the copy, the DeepGEMM
paged-MQA schedule is refreshed from the new seqlens when deep_gemm is importable, as 0.5.8's
non-precomputed replay does; 0.5.8's precomputed path leaves it stale, which later SGLang
versions fixed because a stale schedule can deadlock DeepGEMM.
"""
from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl

from sglang.srt.environ import envs
from sglang.srt.layers.attention.nsa import replay_fastpath
from sglang.srt.layers.attention.nsa.triton_metadata_kernel import _dest

logger = logging.getLogger(__name__)

BLOCK = 1024
_logged: set[str] = set()
_failed: list[str] = []  # reason the kernel was disabled for this process, if it was


def _log_once(key: str, msg: str, *args) -> None:
    if key not in _logged:
        _logged.add(key)
        logger.info(msg, *args)


@triton.jit
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


def launch(precomputed, dest_table: torch.Tensor, metadata, copy_expanded: bool) -> None:
    """One launch: every field of `precomputed` into every backend row of `dest_table`."""
    pages = precomputed.page_indices
    real = precomputed.real_page_table
    for t in (pages, precomputed.cache_seqlens, precomputed.cu_seqlens_k,
              precomputed.nsa_cache_seqlens, precomputed.nsa_cu_seqlens_k):
        if t.dtype != torch.int32 or t.stride(-1) != 1:
            raise ValueError(f"nsa-fastpath: batched copy needs int32 rows, got {t.dtype} {t.stride()}")
    rows, cols = pages.shape
    real_cols = real.shape[1] if real is not None else 0
    size = precomputed.seqlens_expanded_size
    bs = precomputed.cache_seqlens.shape[0]
    width = max(cols, real_cols, bs, size, 1)
    _batched_copy_kernel[(rows + 1, triton.cdiv(width, BLOCK))](
        precomputed.cache_seqlens, precomputed.cu_seqlens_k, pages, pages.stride(0),
        real if real is not None else pages, real.stride(0) if real is not None else 0,
        precomputed.seqlens_expanded, precomputed.nsa_cache_seqlens, precomputed.nsa_cu_seqlens_k,
        dest_table, metadata.page_table_1.stride(0), metadata.real_page_table.stride(0),
        bs, rows, cols, real_cols, size,
        COPY_EXPANDED=copy_expanded, HAS_REAL=real is not None, N_DEST=dest_table.shape[0],
        BLOCK=BLOCK,
    )


def copy_precomputed(backends, owner, bs: int, precomputed, forward_mode) -> str | None:
    """Fill every backend's replay metadata from `precomputed`; returns the path that did it
    ("foreach" or "triton"), None = not handled (use 0.5.8's).

    `owner` holds the capture-time destination table (replay_fastpath.prepare).
    """
    if _failed or not envs.SGLANG_NSA_USE_BATCHED_COPY.get():
        return None
    table = getattr(owner, "_nsa_fastpath_dest", {}).get(bs)
    first = backends[0]
    if table is None or not (forward_mode.is_decode_or_idle() or forward_mode.is_target_verify()
                             or forward_mode.is_draft_extend()):
        return None
    metadata = first.decode_cuda_graph_metadata[bs]
    if precomputed.page_indices.shape[0] > metadata.page_table_1.shape[0]:
        raise ValueError(
            f"nsa-fastpath: {precomputed.page_indices.shape[0]} precomputed page-table rows for "
            f"bs={bs}, above the {metadata.page_table_1.shape[0]} captured")
    rows, cols = precomputed.page_indices.shape
    real = precomputed.real_page_table
    if metadata.page_table_1[:rows, :cols].is_contiguous() and (
        real is None or metadata.real_page_table[: real.shape[0], : real.shape[1]].is_contiguous()
    ):  # every destination contiguous: _foreach_copy_'s single launch is the cheaper one
        copy_with_foreach(backends, bs, precomputed, forward_mode)
        path = "foreach"
        _log_once("foreach", "nsa-fastpath: precomputed replay copy path: torch._foreach_copy_ "
                  "(contiguous destinations) for %d backend(s)", len(backends))
    else:
        try:
            launch(precomputed, table, metadata, copy_expanded=not forward_mode.is_decode_or_idle())
        except ValueError:
            raise
        except Exception as e:  # compile error, launch failure: plain copies from now on
            _failed.append(f"{type(e).__name__}: {e}")
            logger.warning("nsa-fastpath: batched copy disabled for this process: %s", _failed[0])
            return None
        path = "triton"
        _log_once("kernel", "nsa-fastpath: precomputed replay copy path: one Triton launch for "
                  "%d backend(s)", len(backends))
    size = precomputed.seqlens_expanded_size
    if precomputed.flashmla_metadata is not None:
        _log_once("flashmla", "nsa-fastpath: FlashMLA metadata copied with .copy_() (not int32 rows)")
        for b in backends:
            b.decode_cuda_graph_metadata[bs].flashmla_metadata.slice(slice(0, size + 1)).copy_(
                precomputed.flashmla_metadata)
    replay_fastpath.finish(backends, bs, forward_mode, size)
    if envs.SGLANG_NSA_BATCHED_COPY_VERIFY.get():
        verify(backends, bs, precomputed, forward_mode)
    return path


def _plain_copy_pairs(metadata, precomputed, forward_mode):
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


def verify(backends, bs, precomputed, forward_mode) -> None:
    """SGLANG_NSA_BATCHED_COPY_VERIFY=1: check every copied field against its source (syncs)."""
    for i, b in enumerate(backends):
        for dst, src in _plain_copy_pairs(b.decode_cuda_graph_metadata[bs], precomputed, forward_mode):
            if not torch.equal(dst, src):
                raise RuntimeError(
                    f"nsa-fastpath: batched copy mismatch in step backend {i}, bs={bs}, "
                    f"shape {tuple(src.shape)}; set SGLANG_NSA_USE_BATCHED_COPY=0 and report it")


def copy_with_foreach(backends, bs, precomputed, forward_mode) -> None:
    """The same copies through torch._foreach_copy_: one launch when every destination is
    contiguous (copy_precomputed uses it then), one copy per tensor otherwise."""
    dsts, srcs = [], []
    for b in backends:
        for dst, src in _plain_copy_pairs(b.decode_cuda_graph_metadata[bs], precomputed, forward_mode):
            dsts.append(dst)
            srcs.append(src)
    torch._foreach_copy_(dsts, srcs)
