# Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
"""nsa-fastpath: choose and run the fast path for NSA CUDA-graph replay metadata.

This module orchestrates; the kernel modules (cuda_metadata_wrapper, triton_metadata_kernel,
triton_batched_copy) are leaves that it loads lazily: a kernel module that can't load disables
its path (logged once), never the backend's import. The forked nsa_backend.py (dsa_backend.py
from 0.5.13, where NSA is named DSA and the CUDA-graph entries are init_forward_metadata_out_graph
and _apply_cuda_graph_metadata) calls:

- `prepare(backends, bs, owner, forward_mode)` from init_forward_metadata_capture_cuda_graph (a
  backend, or a NativeSparseAttnMultiStepBackend for all its step backends; from 0.5.13: where
  _build_forward_metadata_cuda_graph built a bs, and the multi-step out_graph's capture). At capture time it
  reads the flags, picks the path, and builds a plan for that bs: the device table of every
  buffer the replay writes, the CUDA extension loaded (built if need be) or every Triton variant
  a replay can launch compiled and loaded, and the DeepGEMM schedule step resolved. Capture runs
  at server start; a replay then never compiles, loads or reads a flag.
- `replay(...)` / `replay_multi(...)` first thing in the replay methods: one fused launch fills
  the captured buffers of every backend (no host sync), then the DeepGEMM schedule (and FlashMLA
  metadata) is refreshed as SGLang 0.5.8 does it. False lets SGLang's own code run instead.
- `copy_precomputed(...)` in the precomputed multi-step path, when the fused fill is off: every
  copy into every step backend by one launch (triton_batched_copy) or one `_foreach_copy_`.

Paths, in priority order, each behind its flag: CUDA C++ (`SGLANG_NSA_USE_CUDA_METADATA`, when
the extension loads), Triton (`SGLANG_NSA_USE_TRITON_METADATA`), then SGLang's own Python. The
flags are read when the CUDA graphs are captured (server start). A path that raises on a replay
is logged once with the reason and skipped for the rest of the process. `served` counts the
replays each path served and `path_report()` returns it; `describe()` says what this Python
would use (apply.sh status). A one-line INFO summary of `served` (and of disabled paths) is
logged every NSA_FASTPATH_SUMMARY_EVERY replays (default 10000, 0 = never) and at a normal
process exit, so an operator sees in the server log which path is serving.

The one host value the fast path needs is draft_extend's token count, for slicing the seqlens
handed to DeepGEMM (and FlashMLA). SGLang gets it with `accept_length.tolist()`, a sync (the
tensor is `num_accepted_tokens` in 0.5.11, `num_accept_tokens` from 0.5.12: _accept_counts).
We use `spec_info.extend_seq_lens_cpu`, which EAGLEDraftExtendCudaGraphRunner.replay sets right
before calling us: for DRAFT_EXTEND (EAGLE v1) it equals that tensor element for element
(0.5.8: eagle_info.prepare_extend_after_decode sets `extend_lens = accept_length_cpu + 1` and
`accept_length.add_(1)`, where `accept_length_cpu = accept_length.cpu()` in verify; from 0.5.12
verify makes `num_accept_tokens` and its list `num_accept_tokens_cpu`, which becomes
`extend_lens`; the runner pads both with num_tokens_per_bs). DRAFT_EXTEND_V2 gives no such
guarantee: it declines to SGLang's own path where anything needs the count (FlashMLA, or
DeepGEMM's schedule, which SGLang refreshes for V2 from 0.5.12), as does a missing hint.
The DeepGEMM schedule itself is refreshed by SGLang's own code (the fork's
`_refresh_paged_mqa_schedule`), so which modes refresh it and what DeepGEMM gets are the release's.
"""
from __future__ import annotations

import atexit
import logging
import os
from collections import Counter

import torch

from sglang.srt.environ import envs
from sglang.srt.layers.attention.nsa.metadata_table import (
    INDEX_DTYPES, MODE_DECODE, MODE_DRAFT_EXTEND, MODE_TARGET_VERIFY, N_FIELDS, plan_table)
from sglang.srt.utils import is_cuda

logger = logging.getLogger(__name__)

# Replay calls served, per path: "metadata.cuda" / "metadata.triton" / "metadata.upstream" for the
# replay entry points, "copy.triton" / "copy.foreach" / "copy.upstream" for the precomputed copy.
served: Counter = Counter()
_failed: dict[str, str] = {}  # path name -> reason it was disabled for this process
_logged: set[str] = set()
_since_summary = 0  # replays since the last served summary


def _summary_every() -> int:
    """NSA_FASTPATH_SUMMARY_EVERY, read once at import: replays between two summaries."""
    raw = os.environ.get("NSA_FASTPATH_SUMMARY_EVERY", "10000")
    try:
        value = int(raw)
        if value < 0:
            raise ValueError
        return value
    except ValueError:
        logger.warning("nsa-fastpath: NSA_FASTPATH_SUMMARY_EVERY=%r is not a whole number >= 0; "
                       "using 10000", raw)
        return 10000


SUMMARY_EVERY = _summary_every()

# Releases with SGLang's own fused precomputed copy (0.5.9: sglang.jit_kernel.fused_metadata_copy,
# on unless SGLANG_USE_FUSED_METADATA_COPY=0): which copy serves the precomputed multi-step path
# when both it and ours (SGLANG_NSA_USE_BATCHED_COPY) are on. False: ours; True: SGLang's. Set
# by the GPU comparison (bench/bench_batched_copy.py --upstream-fused, docs/BENCHMARKS.md).
# Either one alone: switch the other off by its flag.
# Measured on an H200 with SGLang 0.5.9 (docs/BENCHMARKS.md, "0.5.9: our batched copy or SGLang's
# fused copy"): the whole multi-step replay with SGLang's fused copy took 186-242 us idle against
# 248-340 us with ours in 5 of the 7 cases measured (level at 3 steps bs 32; ours faster only at 2
# steps, bs 1), so SGLang's serves. Both are far behind the metadata kernels (22-29 us), which serve first when on.
PREFER_UPSTREAM_FUSED_COPY = True


def _upstream_fused_copy_on() -> bool:
    """This release has SGLang's own fused precomputed copy and it is switched on."""
    flag = getattr(envs, "SGLANG_USE_FUSED_METADATA_COPY", None)  # declared from 0.5.9 on
    return flag is not None and bool(flag.get())


def batched_copy_on() -> bool:
    """Whether our batched precomputed copy serves (read at capture, like every flag)."""
    if not envs.SGLANG_NSA_USE_BATCHED_COPY.get():
        return False
    return not (PREFER_UPSTREAM_FUSED_COPY and _upstream_fused_copy_on())


def path_report() -> dict:
    """Which paths served this process's replays, and which were disabled (and why)."""
    return {"served": dict(served), "disabled": dict(_failed)}


def summary() -> str:
    """`path_report()` as the one line logged periodically and at exit."""
    counts = ", ".join(f"{k}={v}" for k, v in sorted(served.items())) or "none"
    disabled = "; ".join(f"{k}: {v}" for k, v in sorted(_failed.items())) or "none"
    return f"nsa-fastpath: NSA replays served: {counts}; disabled paths: {disabled}"


def _log_summary() -> None:
    if served:
        logger.info("%s", summary())


atexit.register(_log_summary)  # registered after logging's own atexit hook, so it runs first


def reset_for_tests() -> None:
    global _since_summary
    served.clear()
    _failed.clear()
    _logged.clear()
    _since_summary = 0


def _log_once(key: str, level: int, msg: str, *args) -> None:
    if key not in _logged:
        _logged.add(key)
        logger.log(level, msg, *args)


class _Reported(RuntimeError):
    """A path that can't load, already logged (WARNING) by the module that found out why."""


def _disable(name: str, error: Exception) -> None:
    if name not in _failed:
        _failed[name] = f"{type(error).__name__}: {error}"
        if not isinstance(error, _Reported):
            logger.warning("nsa-fastpath: %s replay path disabled for this process: %s",
                       name, _failed[name])


def _serve(key: str) -> None:
    global _since_summary
    if not served[key]:
        logger.info("nsa-fastpath: NSA replay path: %s", key)
    served[key] += 1
    _since_summary += 1
    if _since_summary == SUMMARY_EVERY:
        _since_summary = 0
        _log_summary()


# ------------------------------------------------------------------ SGLang's names, per release
# Every way what we read from SGLang is named differently across the releases we support, resolved
# from the objects SGLang hands us (not from a version string: a source checkout resolves like
# its release):
# - from 0.5.13 NSA is named DSA: DSAMetadata's and PrecomputedMetadata's dsa_* fields, the
#   backend's dsa_index_topk, dsa_decode_impl and set_dsa_prefill_impl; its DeepGEMM schedule
#   refresh takes 2-D context lengths that it keeps too (paged_mqa_ctx_lens_2d): we run the
#   fork's _refresh_paged_mqa_schedule, SGLang's code factored out;
# - spec_info's accepted-token counts: accept_length, num_accepted_tokens (0.5.11),
#   num_accept_tokens (from 0.5.12);
# - ForwardMode.is_draft_extend is gone in 0.5.14 (DRAFT_EXTEND_V2 only).
ACCEPT_NAMES = ("num_accept_tokens", "num_accepted_tokens", "accept_length")


class _Names:
    """A backend's names for what the plan reads (DSA-named from 0.5.13)."""

    def __init__(self, backend):
        self.dsa = hasattr(backend, "dsa_index_topk")
        prefix = "dsa_" if self.dsa else "nsa_"
        self.topk = prefix + "index_topk"
        self.decode_impl = prefix + "decode_impl"
        self.set_prefill_impl = f"set_{prefix}prefill_impl"

    def view(self, obj):
        """A metadata / precomputed object under the nsa_* names the kernel modules read."""
        return _DsaView(obj) if self.dsa else obj


class _DsaView:
    """Reads a DSA-named SGLang object (0.5.13 on) under its NSA names: nsa_x is dsa_x."""

    __slots__ = ("_obj",)

    def __init__(self, obj):
        self._obj = obj

    def __getattr__(self, name):
        return getattr(self._obj, "dsa_" + name[4:] if name.startswith("nsa_") else name)


def _accept_counts(spec_info):
    """The draft_extend batch's tokens per request, by the release's name for them."""
    for name in ACCEPT_NAMES:
        counts = getattr(spec_info, name, None)
        if counts is not None:
            return counts
    raise ValueError(f"nsa-fastpath: {type(spec_info).__name__} has none of {ACCEPT_NAMES}")


def _is_draft_extend_v1(forward_mode) -> bool:
    is_v1 = getattr(forward_mode, "is_draft_extend", None)  # gone in 0.5.14
    return bool(is_v1 is not None and is_v1())


def _mode_of(forward_mode) -> int | None:
    if forward_mode.is_decode_or_idle():
        return MODE_DECODE
    if forward_mode.is_target_verify():
        return MODE_TARGET_VERIFY
    if forward_mode.is_draft_extend_v2() or _is_draft_extend_v1(forward_mode):
        return MODE_DRAFT_EXTEND
    return None


# ------------------------------------------------------------------ capture time
def prepare(backends, bs: int, owner, forward_mode, req_pool_indices=None, seq_lens=None,
            spec_info=None) -> None:
    """At capture time: the replay plan of `owner` for `bs` (see the module docstring).

    `owner` (the backend, or the multi-step backend for all its step backends) keeps the plan.
    `req_pool_indices`, `seq_lens`, `spec_info`: what the runner's capture passed (its own
    buffers, whose dtypes its replays bring: _input_dtypes). A plan that can't be built is
    logged and SGLang's own replay code serves that bs.
    """
    plans = owner.__dict__.setdefault("_nsa_fastpath_plans", {})
    plans.pop(bs, None)
    mode = _mode_of(forward_mode)
    if mode is None or not backends:  # 0.5.9 makes speculative_num_steps - 1 step backends
        return
    if torch.device(backends[0].device).type == "cuda" and torch.cuda.is_current_stream_capturing():
        logger.warning("nsa-fastpath: capture metadata for bs=%d was initialized inside a CUDA "
                       "graph capture; SGLang's own replay code serves it", bs)
        return
    try:
        plans[bs] = _Plan(backends, bs, mode, forward_mode, multi=owner is not backends[0],
                          captured=(req_pool_indices, seq_lens, spec_info))
    except Exception as e:
        logger.warning("nsa-fastpath: no fast replay for bs=%d: %s: %s", bs, type(e).__name__, e)


def _input_dtypes(mode: int, multi: bool, captured):
    """The input dtypes (req_pool_indices, seq_lens, accept_length) a replay of this plan can
    bring from SGLang's runners, each a Triton variant compiled at capture (one compile per
    dtype set, constexprs and BLOCK_BS: ~0.27 s each on an H200). The runners pass their own
    buffers, those the capture got (`captured`: int32 to SGLang 0.5.9, req_pool_indices int64
    from 0.5.10, both int64 in 0.5.14; accept_length the draft-extend runner's int32 buffer or
    eagle_info's int32 tensor). EAGLEDraftCudaGraphRunner, which calls the multi-step backend,
    passes its buffers when it pads and the batch's own int64 tensors when it doesn't
    (bs == raw_bs). Anything else (e.g. a step backend replayed on its own, which happens only
    when the multi-step fill declined) is still served: through Triton's dispatch, which
    compiles it on that replay, logged once."""
    i32, i64 = INDEX_DTYPES
    req_pool_indices, seq_lens, spec_info = captured
    accept = None
    if mode == MODE_DRAFT_EXTEND:
        counts = _accept_counts(spec_info) if spec_info is not None else None
        accept = getattr(counts, "dtype", i32)
    own = (getattr(req_pool_indices, "dtype", i32), getattr(seq_lens, "dtype", i32), accept)
    unpadded = (i64, i64, accept)
    return [own] + ([unpadded] if multi and unpadded != own else [])


class _Plan:
    """Everything one captured (backends, bs) replay needs, resolved at capture time."""

    def __init__(self, backends, bs: int, mode: int, forward_mode, multi: bool, captured):
        first = backends[0]
        self.names = _Names(first)
        self.backends = backends
        self.bs, self.mode, self.forward_mode = bs, mode, forward_mode
        self.graph_metadatas = [b.decode_cuda_graph_metadata[bs] for b in backends]
        self.metadatas = [self.names.view(m) for m in self.graph_metadatas]  # nsa_* names
        self.metadata = self.metadatas[0]
        self.pairs = list(zip(backends, self.graph_metadatas))
        self.multi = multi  # a multi-step backend's plan: see replay_multi
        self.input_dtypes = _input_dtypes(mode, multi, captured)
        self.n_draft = first.speculative_num_draft_tokens or 0
        self.rows = self.metadata.page_table_1.shape[0]
        self.n_tokens = {MODE_DECODE: bs, MODE_TARGET_VERIFY: bs * self.n_draft}.get(mode)
        self.flashmla = getattr(first, self.names.decode_impl) == "flashmla_kv"
        self.on_gpu = torch.device(first.device).type == "cuda"
        self.table = plan_table(
            self.metadatas, req_to_token=first.req_to_token, bs=bs,
            topk=getattr(first, self.names.topk), n_draft=self.n_draft, device=first.device)
        self._schedule_init()
        self.verify_copy = envs.SGLANG_NSA_BATCHED_COPY_VERIFY.get()
        self.copy_on = batched_copy_on()
        self.launchers = []  # [name, fill, copy_schedule or None]: the first one serves
        if self.on_gpu and envs.SGLANG_NSA_USE_CUDA_METADATA.get():
            self.launchers.append(["cuda", None, None])
        if (self.on_gpu or os.environ.get("TRITON_INTERPRET") == "1") and \
                envs.SGLANG_NSA_USE_TRITON_METADATA.get():
            self.launchers.append(["triton", None, None])
        self._load_first_launcher()
        if not self.launchers and self.copy_on and multi:
            self._warm_copy()

    # -------------------------------------------------------------- launchers
    def _load_first_launcher(self) -> None:
        """Drop launchers that are disabled or can't load, until the first one is ready."""
        while self.launchers and self.launchers[0][1] is None:
            name = self.launchers[0][0]
            try:
                if name in _failed:
                    raise RuntimeError(_failed[name])
                self.launchers[0][1:] = self._cuda() if name == "cuda" else self._triton()
            except Exception as e:  # extension can't build/load, Triton missing or failing ...
                if name not in _failed:
                    _disable(name, e)
                self.launchers.pop(0)

    def _cuda(self):
        from sglang.srt.layers.attention.nsa import cuda_metadata_wrapper as cw

        if not cw.is_cuda_kernel_available():  # it logged the cause and the next step
            raise _Reported(cw.unavailable_reason())
        m = self.metadata
        plan = cw.make_plan(
            req_to_token=self.backends[0].req_to_token, dest_table=self._dest_table(),
            schedules=self.schedules or [], mode=self.mode, n_draft=self.n_draft,
            topk=getattr(self.backends[0], self.names.topk),
            page_size=self.backends[0].real_page_size,
            bs=self.bs, page_table_shape=tuple(m.page_table_1.shape),
            page_table_stride=m.page_table_1.stride(0),
            real_page_table_stride=m.real_page_table.stride(0))
        plan.warm()  # CUDA loads kernels lazily, at their first launch: do that now
        return plan.fill, plan.copy_schedule if self.schedules else None

    def _triton(self):
        from sglang.srt.layers.attention.nsa import triton_metadata_kernel as tk

        b = self.backends[0]
        plan = tk.FillPlan(
            self.table, mode=self.mode, n_draft=self.n_draft, page_size=b.real_page_size,
            bs=self.bs, n_dest=len(self.backends),
            page_table_shape=tuple(self.metadata.page_table_1.shape),
            input_dtypes=self.input_dtypes)
        return plan.fill, None

    def _dest_table(self) -> torch.Tensor:
        """The destination rows of the plan table as [n_dest, 7] (a view, no copy)."""
        n = len(self.backends)
        return self.table[: n * N_FIELDS].view(n, N_FIELDS)

    def _warm_copy(self) -> None:
        from sglang.srt.layers.attention.nsa import triton_batched_copy as bc

        try:
            bc.warm(self.table, self.metadata, len(self.backends), copy_expanded=False,
                    has_real=self.backends[0].real_page_size > 1)
        except Exception as e:
            _disable("batched-copy", e)

    # -------------------------------------------------------------- DeepGEMM schedule
    def _schedule_init(self) -> None:
        """On CUDA a replay refreshes DeepGEMM's paged-MQA schedule with SGLang's own code, the
        fork's `_refresh_paged_mqa_schedule` (which modes, which seqlens and in which shape are
        the release's), for the first backend; with several step backends that schedule is then
        copied into the others (they replay the same seqlens), and from 0.5.13 the 2-D context
        lengths it keeps beside it too. `schedules`: their captured buffers (None: no DeepGEMM
        here, each backend's own call then does what SGLang does)."""
        self.refresh_schedule = is_cuda()
        self.schedules = self.ctx_lens = None
        self._seqlens_views: dict = {}
        if not self.refresh_schedule:
            return
        try:
            import deep_gemm  # noqa: F401
        except (ImportError, ModuleNotFoundError):
            return
        self.schedules = [m.paged_mqa_schedule_metadata for m in self.graph_metadatas]
        if any(s is None for s in self.schedules):
            raise ValueError("nsa-fastpath: no DeepGEMM schedule buffer was captured")
        if len(self.schedules) > 1 and self.names.dsa:
            self.ctx_lens = [m.paged_mqa_ctx_lens_2d for m in self.graph_metadatas]
            if any(c is None for c in self.ctx_lens):
                raise ValueError("nsa-fastpath: no DeepGEMM context-length buffer was captured")
        if len(self.schedules) > 1:  # load torch's multi-tensor copy now, not on a replay
            src = self.schedules[0].clone()  # the step backends captured equal schedules
            torch._foreach_copy_(self.schedules[1:], [src] * (len(self.schedules) - 1))

    def _seqlens_for_schedule(self, n: int) -> torch.Tensor:
        view = self._seqlens_views.get(n)
        if view is None:
            m = self.metadata
            view = m.cache_seqlens_int32 if self.mode == MODE_DECODE else m.nsa_seqlens_expanded[:n]
            self._seqlens_views[n] = view
        return view

    def _refresh_schedule(self, n: int, copy_schedule) -> None:
        if not self.refresh_schedule:
            return
        seqlens = self._seqlens_for_schedule(n)
        if self.schedules is None:  # no DeepGEMM: what SGLang's replay of each backend does
            for b, m in self.pairs:
                b._refresh_paged_mqa_schedule(m, self.forward_mode, seqlens, self.bs)
            return
        self.backends[0]._refresh_paged_mqa_schedule(
            self.graph_metadatas[0], self.forward_mode, seqlens, self.bs)
        if len(self.schedules) > 1:
            first = self.schedules[0]
            if copy_schedule is not None:
                copy_schedule(first)  # into every step backend's (its own: the same values)
            else:
                torch._foreach_copy_(self.schedules[1:], [first] * (len(self.schedules) - 1))
            if self.ctx_lens is not None:  # 0.5.13 on: DeepGEMM's 2-D context lengths too
                torch._foreach_copy_(self.ctx_lens[1:],
                                     [self.ctx_lens[0]] * (len(self.ctx_lens) - 1))

    def _refresh_flashmla(self, n: int) -> None:
        first, m = self.backends[0], self.metadata
        first._refresh_flashmla_metadata(self.graph_metadatas[0], m.nsa_cache_seqlens_int32[:n])
        for other in self.metadatas[1:]:
            other.flashmla_metadata.slice(slice(0, n + 1)).copy_(
                m.flashmla_metadata.slice(slice(0, n + 1)))

    # -------------------------------------------------------------- replay
    def run(self, req_pool_indices, seq_lens, spec_info) -> bool:
        if self.multi:  # 0.5.8 resets each step backend's prefill state on every replay
            for b in self.backends:
                getattr(b, self.names.set_prefill_impl)(forward_batch=None)
        n, accept = self.n_tokens, None
        if n is None:  # draft_extend
            n = self._draft_extend_tokens(spec_info)
            if n is None:
                _serve("metadata.upstream")
                return False
            accept = _accept_counts(spec_info)
        while self.launchers:
            name, fill, copy_schedule = self.launchers[0]
            if name in _failed:  # another plan's launch of this path failed
                self.launchers.pop(0)
                self._load_first_launcher()
                continue
            try:
                fill(req_pool_indices, seq_lens, accept)
            except ValueError:
                raise  # bad input: report it, don't mask it by falling back
            except TypeError as e:  # an input dtype the kernels don't take: SGLang's code
                _log_once(f"type:{e}", logging.WARNING, "nsa-fastpath: %s; SGLang's own replay "
                          "code serves such inputs", e)
                break
            except Exception as e:  # launch failure: the next path from now on
                _disable(name, e)
                continue
            if self.flashmla:
                self._refresh_flashmla(n)
            self._refresh_schedule(n, copy_schedule)
            for b, m in self.pairs:
                b.forward_metadata = m
            _serve(f"metadata.{name}")
            return True
        if not self.multi:  # a declined multi-step replay: what SGLang's code then runs counts
            _serve("metadata.upstream")
        return False

    def _draft_extend_tokens(self, spec_info) -> int | None:
        """Host token count for draft_extend, or None when it can't be had without a sync."""
        if self.forward_mode.is_draft_extend_v2():
            # no host count without a sync: only where nothing needs one: no FlashMLA, and no
            # DeepGEMM schedule sized by it (SGLang refreshes it for V2 replays from 0.5.12; from
            # 0.5.13 that refresh reads the whole captured seqlens buffer)
            needs = self.flashmla or (self.schedules is not None and not self.names.dsa)
            return None if needs else 0
        hint = getattr(spec_info, "extend_seq_lens_cpu", None)
        if hint is None or len(hint) < self.bs:
            return None
        hint = hint[: self.bs]
        total = sum(hint)
        if total > self.rows or max(hint) > self.n_draft:
            raise ValueError(
                f"nsa-fastpath: draft_extend has {total} tokens for bs={self.bs} (at most "
                f"{max(hint)} for one request), above the {self.rows} rows captured for it "
                f"(bs * speculative_num_draft_tokens, {self.n_draft} per request)")
        return total

    def copy(self, precomputed, forward_mode) -> str | None:
        """The precomputed copies into every backend; the path that did them, None = declined."""
        from sglang.srt.layers.attention.nsa import triton_batched_copy as bc

        m = self.metadata
        precomputed = self.names.view(precomputed)
        if precomputed.page_indices.shape[0] > self.rows:
            raise ValueError(
                f"nsa-fastpath: {precomputed.page_indices.shape[0]} precomputed page-table rows "
                f"for bs={self.bs}, above the {self.rows} captured")
        if bc.destinations_contiguous(m, precomputed):  # _foreach_copy_ is one launch, cheaper
            bc.copy_with_foreach(self.metadatas, precomputed, forward_mode)
            path = "foreach"
        else:
            why = bc.unsupported_source(precomputed)
            if why is not None:
                _log_once(f"copy-source:{why}", logging.WARNING, "nsa-fastpath: %s; SGLang's "
                          "per-tensor copies serve such sources", why)
                return None
            try:
                bc.launch(precomputed, self.table, m, len(self.backends),
                          copy_expanded=not forward_mode.is_decode_or_idle())
            except Exception as e:  # compile error, launch failure: plain copies from now on
                _disable("batched-copy", e)
                return None
            path = "triton"
        size = precomputed.seqlens_expanded_size
        if precomputed.flashmla_metadata is not None:
            for other in self.metadatas:
                other.flashmla_metadata.slice(slice(0, size + 1)).copy_(precomputed.flashmla_metadata)
        self._refresh_schedule(size, None)
        for b, md in self.pairs:
            b.forward_metadata = md
        if self.verify_copy:
            bc.verify(self.metadatas, precomputed, forward_mode)
        return path


# ------------------------------------------------------------------ replay time
_NO_PLANS: dict = {}


def _plan_for(owner, bs: int, forward_mode):
    plan = owner.__dict__.get("_nsa_fastpath_plans", _NO_PLANS).get(bs)
    if plan is not None and forward_mode is not plan.forward_mode and \
            _mode_of(forward_mode) != plan.mode:
        return None  # replayed in another mode than captured: SGLang's own code
    return plan


def replay(backend, bs, req_pool_indices, seq_lens, forward_mode, spec_info) -> bool:
    """Fill backend.decode_cuda_graph_metadata[bs] for this replay; False = not handled."""
    plan = _plan_for(backend, bs, forward_mode)
    if plan is None:
        _serve("metadata.upstream")
        return False
    return plan.run(req_pool_indices, seq_lens, spec_info)


def replay_multi(multi, bs, forward_batch) -> bool:
    """One launch fills every step backend of a NativeSparseAttnMultiStepBackend (with or without
    SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA: the result is the same). Each step backend's
    `set_nsa_prefill_impl(None)` runs first, as in every 0.5.8 replay path. When it declines
    (False), nothing is counted: SGLang's code then runs the step backends' replays (precompute
    off) or the precomputed copies, and those count."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    plan = _plan_for(multi, bs, ForwardMode.DECODE)
    if plan is None:
        return False
    return plan.run(forward_batch.req_pool_indices, forward_batch.seq_lens, forward_batch.spec_info)


def copy_precomputed(owner, bs, precomputed, forward_mode) -> bool:
    """The precomputed metadata copied into every backend of `owner` by one launch (or one
    `_foreach_copy_`); False = SGLang 0.5.8's per-tensor copies run instead (counted per step
    backend, by the step backends' own calls, when `owner` is the multi-step backend)."""
    plan = _plan_for(owner, bs, forward_mode)
    path = None
    if plan is not None and plan.copy_on and "batched-copy" not in _failed:
        path = plan.copy(precomputed, forward_mode)
    if path is not None or not hasattr(owner, "attn_backends"):  # multi-step: see above
        _serve(f"copy.{path or 'upstream'}")
    return path is not None


def upstream_copies_served(step_backends: int) -> None:
    """SGLang's fused multi-backend copy (0.5.9 on) filled `step_backends` backends in one call:
    counted per step backend, as SGLang's per-backend copies are."""
    for _ in range(step_backends):
        _serve("copy.upstream")


# ------------------------------------------------------------------ apply.sh status
def describe(as_facts: bool = False):
    """The replay-metadata path a server started by this Python on this machine would take, and
    why each path ahead of it would not; builds and loads nothing. One line, or (`as_facts`) the
    facts it is made of, for `apply.sh status` to derive its other lines from: the flags, the
    CUDA kernel's state (cuda_metadata_wrapper.kernel_state) and its line, Triton's version or
    import error, `path` ("cuda", "triton" or "upstream"), `not_taken` (path -> why) and `copy`,
    the multi-step precomputed copy where the metadata paths don't fill ("nsa-fastpath",
    "sglang-fused" or "sglang")."""
    from sglang.srt.layers.attention.nsa import cuda_metadata_wrapper as cw

    flags = {name: bool(getattr(envs, name).get()) for name in (
        "SGLANG_NSA_USE_CUDA_METADATA", "SGLANG_NSA_USE_TRITON_METADATA",
        "SGLANG_NSA_USE_BATCHED_COPY")}
    kernel = cw.kernel_state()
    try:
        import triton

        triton_info = {"version": triton.__version__}
    except Exception as e:
        triton_info = {"error": f"{type(e).__name__}: {e}"}
    not_taken = {}
    if not flags["SGLANG_NSA_USE_CUDA_METADATA"]:
        not_taken["cuda"] = "SGLANG_NSA_USE_CUDA_METADATA=0"
    elif kernel["device"] is None:
        not_taken["cuda"] = "no CUDA device here"
    elif not (kernel["loads"] or kernel["builds_at_capture"]):
        not_taken["cuda"] = kernel["unavailable"]
    if "cuda" in not_taken:
        if not flags["SGLANG_NSA_USE_TRITON_METADATA"]:
            not_taken["triton"] = "SGLANG_NSA_USE_TRITON_METADATA=0"
        elif "error" in triton_info:
            not_taken["triton"] = f"Triton not importable: {triton_info['error']}"
    path = "cuda" if "cuda" not in not_taken else "triton" if "triton" not in not_taken \
        else "upstream"
    if batched_copy_on():
        copy = "nsa-fastpath"
    else:
        copy = "sglang-fused" if _upstream_fused_copy_on() else "sglang"
    if path == "cuda":
        how = (f"loads {kernel['loads']}" if kernel["loads"] else "built at the first CUDA-graph "
               f"capture for {cw.describe_archs(kernel['builds_at_capture'])}")
        line = f"cuda (the CUDA metadata kernel: {how})"
    else:
        why = "; ".join(f"{name}: {reason}" for name, reason in not_taken.items())
        line = (f"triton {triton_info['version']} ({why})" if path == "triton" else
                f"upstream (SGLang's own replay code; {why})")
    if not as_facts:
        return line
    return {"flags": flags, "kernel": kernel, "kernel_line": cw.build_report(kernel),
            "triton": triton_info, "path": path, "not_taken": not_taken, "copy": copy,
            "line": line}
