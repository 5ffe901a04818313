# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""nsa-fastpath: choose and run the fast path for NSA CUDA-graph replay metadata.

Everything the forked nsa_backend.py calls lives here and imports our kernel modules lazily: a
kernel module that can't load disables its path (logged once), never the backend's import.

`replay(backend, ...)` is called first thing by the forked
`NativeSparseAttnBackend.init_forward_metadata_replay_cuda_graph`. It fills the capture-time
metadata buffers with one fused kernel launch and no host sync, then refreshes the DeepGEMM
schedule (and FlashMLA metadata) exactly as SGLang 0.5.8 does; it returns False to let
SGLang's own code run instead.

Paths, in priority order, each behind its flag (read on every call, so tests and operators can
flip them): CUDA C++ (`SGLANG_NSA_USE_CUDA_METADATA`, when the extension is built), Triton
(`SGLANG_NSA_USE_TRITON_METADATA`), then SGLang's own Python. A path that raises is logged once
with the reason and skipped for the rest of the process.

The one host value the fast path needs is draft_extend's token count, for slicing the seqlens
handed to DeepGEMM (and FlashMLA). SGLang 0.5.8 gets it with `accept_length.tolist()`, a sync.
We use `spec_info.extend_seq_lens_cpu`, which EAGLEDraftExtendCudaGraphRunner.replay sets right
before calling us: for DRAFT_EXTEND (EAGLE v1) it equals accept_length element for element
(eagle_info.prepare_extend_after_decode sets `extend_lens = accept_length_cpu + 1` and
`accept_length.add_(1)`, where `accept_length_cpu = accept_length.cpu()` in verify; the
runner pads both with num_tokens_per_bs). DRAFT_EXTEND_V2 gives no such guarantee, and
SGLang 0.5.8 never refreshes the DeepGEMM schedule there, so it needs the count only for
FlashMLA: that combination (and a missing hint) declines to SGLang's own path.
"""
from __future__ import annotations

import logging
import os
from collections import Counter

import torch

from sglang.srt.environ import envs

logger = logging.getLogger(__name__)

MODE_DECODE, MODE_TARGET_VERIFY, MODE_DRAFT_EXTEND = 0, 1, 2

_failed: dict[str, str] = {}  # path name -> reason it was disabled for this process
_announced: set[str] = set()
# Replay calls served, per path: "metadata.cuda" / "metadata.triton" / "metadata.upstream" for the
# replay entry points, "copy.triton" / "copy.foreach" / "copy.upstream" for the precomputed copy.
served: Counter = Counter()


def path_report() -> dict:
    """Which paths served this process's replays, and which were disabled (and why)."""
    return {"served": dict(served), "disabled": dict(_failed)}


def _triton_fill():
    from sglang.srt.layers.attention.nsa.triton_metadata_kernel import fill_replay_metadata

    return fill_replay_metadata


def _cuda_fill():
    from sglang.srt.layers.attention.nsa import cuda_metadata_wrapper as w

    if not w.is_cuda_kernel_available():
        return None
    return w.fill_replay_metadata_cuda


def _candidates(device):
    on_gpu = torch.device(device).type == "cuda"  # SGLang passes a str, e.g. "cuda"
    if on_gpu and envs.SGLANG_NSA_USE_CUDA_METADATA.get():
        yield "cuda", _cuda_fill
    triton_runs_here = on_gpu or os.environ.get("TRITON_INTERPRET") == "1"
    if triton_runs_here and envs.SGLANG_NSA_USE_TRITON_METADATA.get():
        yield "triton", _triton_fill


def _announce(name: str, detail: str = "") -> None:
    if name not in _announced:
        _announced.add(name)
        logger.info("nsa-fastpath: NSA replay metadata path: %s%s", name, detail)


def _mode_of(forward_mode) -> int | None:
    if forward_mode.is_decode_or_idle():
        return MODE_DECODE
    if forward_mode.is_target_verify():
        return MODE_TARGET_VERIFY
    if forward_mode.is_draft_extend(include_v2=True):
        return MODE_DRAFT_EXTEND
    return None


def _draft_extend_tokens(backend, bs: int, forward_mode, spec_info, capacity: int):
    """Host token count for draft_extend, or None when it can't be had without a sync."""
    needs_count = backend.nsa_decode_impl == "flashmla_kv" or forward_mode.is_draft_extend()
    if not needs_count:
        return 0  # DRAFT_EXTEND_V2 without FlashMLA: nothing on the host needs the count
    if forward_mode.is_draft_extend_v2():
        return None
    hint = getattr(spec_info, "extend_seq_lens_cpu", None)
    if hint is None or len(hint) < bs:
        return None
    total = sum(hint[:bs])
    if total > capacity:
        raise ValueError(
            f"nsa-fastpath: draft_extend has {total} tokens for bs={bs}, above the "
            f"{capacity} rows captured for it (bs * speculative_num_draft_tokens)"
        )
    return total


_resolved: dict = {}  # (device, flag values) -> [(name, fill)], so replays skip the lookups


def _fast_fills(backend) -> list:
    """The fast-path fill functions to try for this backend, in priority order."""
    key = (backend.device, envs.SGLANG_NSA_USE_CUDA_METADATA.get(),
           envs.SGLANG_NSA_USE_TRITON_METADATA.get(), len(_failed))
    fills = _resolved.get(key)
    if fills is None:
        fills = []
        for name, load in _candidates(backend.device):
            if name in _failed:
                continue
            try:
                fill = load()
            except Exception as e:  # extension failed to build/load, Triton missing ...
                _disable(name, e)
                continue
            if fill is not None:
                fills.append((name, fill))
        _resolved[(*key[:3], len(_failed))] = fills
    return fills


def prepare(backends, bs: int, owner) -> None:
    """At capture time: the device table of every backend's buffers for `bs`, and the CUDA
    extension loaded (or built).

    `owner` (the backend, or the multi-step backend for all its step backends) keeps the table.
    Capture may sync; replay must not, so everything that needs the host happens here. (A Triton
    kernel still compiles on its first launch per mode and batch-size bucket; Triton caches it
    on disk for later starts.)
    """
    tables = owner.__dict__.setdefault("_nsa_fastpath_dest", {})
    _fast_fills(backends[0])  # load (or build) the CUDA extension now, not on a replay
    try:
        from sglang.srt.layers.attention.nsa.triton_metadata_kernel import destination_table

        tables[bs] = destination_table(
            [b.decode_cuda_graph_metadata[bs] for b in backends], backends[0].device
        )
    except Exception as e:
        tables.pop(bs, None)
        logger.warning("nsa-fastpath: no fast replay for bs=%d: %s: %s", bs, type(e).__name__, e)


def replay(backend, bs, req_pool_indices, seq_lens, forward_mode, spec_info) -> bool:
    """Fill backend.decode_cuda_graph_metadata[bs] for this replay; False = not handled."""
    return _replay([backend], backend, bs, req_pool_indices, seq_lens, forward_mode, spec_info)


def replay_multi(multi, bs, forward_batch, forward_mode) -> bool:
    """One launch fills every step backend of a NativeSparseAttnMultiStepBackend."""
    return _replay(multi.attn_backends, multi, bs, forward_batch.req_pool_indices,
                   forward_batch.seq_lens, forward_mode, forward_batch.spec_info)


def _replay(backends, owner, bs, req_pool_indices, seq_lens, forward_mode, spec_info) -> bool:
    mode = _mode_of(forward_mode)
    if mode is None:
        return False
    table = getattr(owner, "_nsa_fastpath_dest", {}).get(bs)
    for name, fill in _fast_fills(backends[0]) if table is not None else ():
        try:
            handled = _run(backends, table, fill, mode, bs, req_pool_indices, seq_lens,
                           forward_mode, spec_info)
        except ValueError:
            raise  # bad input: report it, don't mask it by falling back
        except Exception as e:  # compile error, launch failure: next path from now on
            _disable(name, e)
            continue
        if handled:
            _announce(name)
            served[f"metadata.{name}"] += 1
            return True
        break
    _announce("upstream (SGLang 0.5.8)", "" if not _failed else f"; disabled: {_failed}")
    served["metadata.upstream"] += 1
    return False


def copy_precomputed(backends, owner, bs, precomputed, forward_mode) -> bool:
    """The batched copy of precomputed metadata (triton_batched_copy.copy_precomputed), loaded
    lazily so that a module that can't load costs only this path, never the backend's import."""
    path = None
    if "batched-copy" not in _failed and envs.SGLANG_NSA_USE_BATCHED_COPY.get():
        try:
            from sglang.srt.layers.attention.nsa.triton_batched_copy import copy_precomputed as impl
        except Exception as e:
            _disable("batched-copy", e)
        else:
            path = impl(backends, owner, bs, precomputed, forward_mode)
    served[f"copy.{path or 'upstream'}"] += 1
    return path is not None


def _disable(name: str, error: Exception) -> None:
    _failed[name] = f"{type(error).__name__}: {error}"
    logger.warning("nsa-fastpath: %s replay-metadata path disabled for this process: %s",
                   name, _failed[name])


def _run(backends, table, fill, mode, bs, req_pool_indices, seq_lens, forward_mode,
         spec_info) -> bool:
    first = backends[0]
    metadata = first.decode_cuda_graph_metadata[bs]
    rows = metadata.page_table_1.shape[0]
    n_draft = first.speculative_num_draft_tokens or 0
    accept_length = None
    n_tokens = bs if mode == MODE_DECODE else bs * n_draft
    if mode == MODE_DRAFT_EXTEND:
        n_tokens = _draft_extend_tokens(first, bs, forward_mode, spec_info, rows)
        if n_tokens is None:
            return False
        accept_length = spec_info.accept_length
    if req_pool_indices.shape[0] < bs or seq_lens.shape[0] < bs:
        raise ValueError(f"nsa-fastpath: replay inputs hold fewer than bs={bs} requests")

    fill(
        mode,
        req_to_token=first.req_to_token,
        req_pool_indices=req_pool_indices,
        seq_lens=seq_lens,
        accept_length=accept_length,
        n_draft=n_draft,
        topk=first.nsa_index_topk,
        page_size=first.real_page_size,
        bs=bs,
        page_table_shape=tuple(metadata.page_table_1.shape),
        page_table_stride=metadata.page_table_1.stride(0),
        real_page_table_stride=metadata.real_page_table.stride(0),
        dest_table=table,
    )
    # FlashMLA metadata: computed once from the first backend's buffers, exactly as SGLang
    # 0.5.8's replay does, then copied to the other step backends.
    first._refresh_flashmla_metadata(metadata, metadata.nsa_cache_seqlens_int32[:n_tokens])
    if first.nsa_decode_impl == "flashmla_kv":
        for b in backends[1:]:
            b.decode_cuda_graph_metadata[bs].flashmla_metadata.slice(slice(0, n_tokens + 1)).copy_(
                metadata.flashmla_metadata.slice(slice(0, n_tokens + 1)))
    finish(backends, bs, forward_mode, n_tokens)
    return True


def finish(backends, bs, forward_mode, n_tokens) -> None:
    """After the metadata is in place: the DeepGEMM schedule, refreshed once from the first
    backend's seqlens as SGLang 0.5.8's replay does, copied to the other step backends; and
    every backend's forward_metadata set. Shared by the fused fill and the batched copy."""
    metadata = backends[0].decode_cuda_graph_metadata[bs]
    backends[0]._refresh_paged_mqa_schedule(
        metadata, forward_mode, metadata.nsa_seqlens_expanded[:n_tokens])
    for b in backends:
        m = b.decode_cuda_graph_metadata[bs]
        if m is not metadata and m.paged_mqa_schedule_metadata is not None:
            m.paged_mqa_schedule_metadata.copy_(metadata.paged_mqa_schedule_metadata)
        b.forward_metadata = m


def reset_for_tests() -> None:
    served.clear()
    _failed.clear()
    _announced.clear()
    _resolved.clear()
