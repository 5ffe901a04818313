"""The SGLang release a test session runs against, and every way set-up differs per release.

One release per pytest session: ``NSA_FASTPATH_TEST_RELEASE`` (``scripts/test.sh --release R``,
``scripts/gpu_tier.sh``), default 0.5.8. conftest.py installs that release's pinned wheel
(scripts/regen.py RELEASES) ``--no-deps``, pristine and patched by apply.sh, which picks the
release set by file hashes. A runner process (harness/runner.py) keys its set-up on the version
of the tree it imports, so the pristine and the patched tree of one release get the same.

What differs, found by running the harness on each release's pristine tree (nothing else does:
the runners, buffers and spec-info classes are each release's own):

- 0.5.9: ``NativeSparseAttnBackend.__init__`` divides the heads by ``get_attention_tp_size()``,
  which now asks ``parallel_state.get_attn_tp_group()``, and the runners ask the attention
  context-parallel group's size (``get_attn_cp_group``); both assert ``initialize_model_parallel``
  ran. 0.5.8 read ``dp_attention``'s module globals, which the runners set up for every release.
  Its ``__init__`` also reads the MLA dims and ``kv_cache_dtype`` (the model-runner stub has
  DeepSeek-V3.2's for every release). ``EagleDraftInput.num_tokens_per_batch`` is now
  ``num_tokens_per_req`` (``spec_info_field``). The multi-step backend makes one step backend
  fewer for the same ``speculative_num_steps`` (``draft_steps``).
- RadixCache: 0.5.7's ``match_prefix`` takes the key itself (MatchPrefixParams from 0.5.8);
  0.5.9's ``insert`` and ``evict`` take InsertParams / EvictParams, its ReqToTokenPool.alloc the
  requests, and its scheduler releases a finished request by ``release_kv_cache`` (which frees the
  pool slot 0.5.8's ``cache_finished_req`` freed, and reads the global ServerArgs).
- 0.5.7: ``Req.pop_committed_kv_cache`` reads the global ServerArgs (``prepare_scheduler``).
  Its import chain reaches ``fastapi`` (``utils/common.py``: pure Python, in
  requirements-cpu.txt) and, on a machine without CUDA only, ``vllm``'s layernorm
  (``layers/layernorm.py``'s fallback: the stand-in ``standins/cpu-0.5.7``).
- 0.5.10: ``utils/common.py`` imports ``torchvision.io`` (the CPU stand-in has
  ``decode_jpeg``); the runners' ``req_pool_indices`` buffers are int64
  (``runner_buffer_dtypes``); the backend's replay expands seqlens with ``seqlens_expand_triton``,
  which asserts CUDA tensors (``_cpu_seqlens_expand``); ``inc_lock_ref`` / ``dec_lock_ref`` return
  result objects (``lock_delta``); the runners read ``hisparse_coordinator`` and
  ``use_ngram_embedding`` off the ModelRunner (the stub has them for every release).
- 0.5.11: RadixKey is a view (``bigram_view_keys``: an EAGLE key keeps its raw ints,
  ``insert_key``, ``bigram_key``, ``key_match``); ``retrive_*`` spec-info fields are
  ``retrieve_*`` and EAGLE's accept counts ``num_accepted_tokens`` / ``num_accepted_drafts``
  (``spec_info_field``, ``accept_fields``, ``accept_field``); the runners read
  ``device_timer`` and ``is_hybrid_swa``.
- 0.5.12: the draft-extend forward's spec info is ``EagleDraftExtendInput``
  (``draft_extend_input_class``) with ``num_correct_drafts`` / ``num_accept_tokens``;
  ``verified_id`` is ``bonus_tokens``; the draft-extend runner asks the EAGLE worker for
  ``speculative_num_steps`` and the target worker's model config (the stub has them).
- 0.5.13: token ids are ``array('q')``s (``array_ids``, ``token_ids``: requests, radix keys);
  the PrefillAdder sets an admitted request's ``fill_len`` (``admit``). 0.5.14:
  ``init_next_round_input`` matches the request's own ids capped by ``RadixKey.limit``
  (``next_round_key``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "standins"
DEFAULT_RELEASE = "0.5.8"
ENV = "NSA_FASTPATH_TEST_RELEASE"


# Releases whose parity runs stand for another's (.ci/run runs the key's suites on the value's
# trees only): their wheels hold the same code where the harness goes (tests/test_shared_runs.py
# checks it in the value's session) and this module sets them up alike.
SHARED_RUNS = {"0.5.10.post1": "0.5.10"}


def release() -> str:
    """The release this session tests."""
    return os.environ.get(ENV) or DEFAULT_RELEASE


def wheel(rel: str) -> Path:
    """The release's pinned wheel for this Python (scripts/fetch_wheel.sh REL fetches and checks
    it; scripts/regen.py WHEELS pins them)."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import regen

    return regen.default_wheel(rel)


def has_set(rel: str) -> bool:
    """Whether nsa-fastpath has a release set for `rel` (scripts/regen.py SUPPORTED). A release
    pinned without one (0.5.15 on) runs through the harness as its own code only: the pristine
    tree (harness/smoke.py, bench/bench_release.py --own-only)."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import regen

    return rel in regen.SUPPORTED


def tree_release(tree: Path) -> str:
    """The release of an installed SGLang tree, from its _version.py (the build writes it; its
    version.py falls back to a placeholder without it) or version.py; nothing imported."""
    for name in ("_version.py", "version.py"):
        path = Path(tree) / "sglang" / name
        found = path.is_file() and re.search(
            r"""__version__\s*=\s*(?:version\s*=\s*)?["']([^"']+)["']""", path.read_text())
        if found:
            return found.group(1)
    raise RuntimeError(f"no SGLang version in {tree}/sglang")


def imported_release() -> str:
    """The release of the SGLang this process imported."""
    from sglang.version import __version__

    return __version__


def _key(rel: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.]", rel))


def dsa_named(rel: str) -> bool:
    """From 0.5.13 SGLang names NSA "DSA": DeepseekSparseAttnBackend in dsa_backend.py, DSAMetadata
    and its dsa_* fields, server_args.dsa_*_backend, the SGLANG_DSA_* flags (SGLANG_NSA_* still
    read as aliases), and the backend's CUDA-graph entry is init_forward_metadata_out_graph."""
    return _key(rel) >= _key("0.5.13")


def runner_backends(rel: str) -> bool:
    """From 0.5.14 the decode CUDA-graph runners (DecodeCudaGraphRunner and the EAGLE draft
    runners derived from it) capture and replay through a pluggable backend
    (FullCudaGraphBackend): capture_one_shape / execute instead of capture_one_batch_size /
    replay."""
    return _key(rel) >= _key("0.5.14")


# The dtypes of the runners' own buffers the backend gets (req_pool_indices, seq_lens,
# seq_lens_cpu), as each release's CudaGraphRunner / DecodeCudaGraphRunner and EAGLE draft
# runners allocate them; newest range first. (The draft runner passes the batch's own int64
# tensors when it does not pad; the draft-extend runner its int32 accept counts, and up to
# 0.5.12 EAGLE v1's int64 ones once a request finished in verify.)
RUNNER_BUFFER_DTYPES = (
    ("0.5.14", ("int64", "int64", "int64")),
    ("0.5.10", ("int64", "int32", "int32")),
    ("0.5.7", ("int32", "int32", "int32")),
)


def runner_buffer_dtypes(rel: str) -> dict[str, str]:
    dtypes = next(d for low, d in RUNNER_BUFFER_DTYPES if _key(rel) >= _key(low))
    return dict(zip(("req_pool_indices", "seq_lens", "seq_lens_cpu"), dtypes))


def shared_graph_output(rel: str) -> bool:
    """From 0.5.15 the decode runners ask the ModelRunner for their tokens per bs
    (``decode_num_tokens_per_bs``) and take their logits buffer from the process's
    ``GraphSharedOutput`` (``model_runner.graph_shared_output``), which ModelRunner makes before
    capturing; the stub gets ModelRunner's own methods and that object (sglang_runners)."""
    return _key(rel) >= _key("0.5.15")


# Where SGLang's own fused replay-metadata kernels live (fused_dsa_{decode,target_verify,
# draft_extend}_metadata, Triton): from 0.5.15 its DSA backend's replay and MTP precompute call
# them on CUDA (SGLang's own answer to the per-replay loops and syncs nsa-fastpath removes);
# newest range first. 0.5.23's backend binds them at __init__ (_fused_decode_metadata, ...).
OWN_FUSED_METADATA = (
    ("0.5.23", "sglang.kernels.ops.attention.dsa.metadata"),
    ("0.5.16", "sglang.kernels.ops.attention.dsa_metadata"),
    ("0.5.15", "sglang.srt.layers.attention.triton_ops.dsa_metadata"),
)
OWN_FUSED_NAMES = ("fused_dsa_decode_metadata", "fused_dsa_target_verify_metadata",
                   "fused_dsa_draft_extend_metadata")


def own_fused_metadata(rel: str) -> str | None:
    """The module of the release's own fused replay-metadata kernels, or None (to 0.5.14)."""
    return next((module for low, module in OWN_FUSED_METADATA if _key(rel) >= _key(low)), None)


def mtp_precompute_switch(rel: str) -> bool:
    """Whether the multi-step backend's precomputed replay can be switched off
    (SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA, from 0.5.13 SGLANG_DSA_* with the NSA name as an
    alias): 0.5.8 to 0.5.14. 0.5.7 has a module constant; from 0.5.15 it always precomputes."""
    return _key("0.5.8") <= _key(rel) < _key("0.5.15")


def draft_extend_v2(rel: str) -> bool:
    """From 0.5.13 only EAGLE's overlap worker exists: the draft-extend runner replays
    DRAFT_EXTEND_V2 (every request the whole tree width, accept counts <= num_draft_tokens).
    A server there never captures it around the DSA backend (EagleDraftWorker builds that runner
    only for the Triton / TRT-LLM / FlashInfer backends); the harness still drives it."""
    return dsa_named(rel)


# Packages a release imports at another version than the shared CPU venv holds
# (requirements-cpu.txt, SGLang 0.5.8's): scripts/release_deps.sh installs them --no-deps into
# .cache/release-deps/<first release of the range>/, put first on sys.path for the processes of
# those releases only. Newest range first: a release takes the first whose lower bound it reaches.
RELEASE_DEPS = (
    ("0.5.13", ("transformers==5.8.1", "huggingface_hub==1.33.0")),  # SGLang's pin: 5.8.1
)
DEPS_DIR = ROOT / ".cache" / "release-deps"


def release_deps(rel: str) -> tuple[Path, tuple[str, ...]] | None:
    """(directory, pinned packages) `rel` needs beyond the shared venv, or None."""
    return next(((DEPS_DIR / low, pins) for low, pins in RELEASE_DEPS
                 if _key(rel) >= _key(low)), None)


# NSA_FASTPATH_RELEASE_DEPS=python: the Python's own packages serve every release (none from
# RELEASE_DEPS): the GPU tier's `measure` stage, whose image has transformers 5.17.0,
# huggingface-hub 1.33.0 and tokenizers 0.23.2, which import for 0.5.13 to 0.5.15 as SGLang's
# pins do (checked on the CPU: the smoke of each release with them; docs/GPU_TIER.md).
DEPS_ENV = "NSA_FASTPATH_RELEASE_DEPS"


def deps_dirs(rel: str) -> list[Path]:
    """The release's own packages (scripts/release_deps.sh made them), to put on sys.path."""
    deps = release_deps(rel)
    if deps is None or os.environ.get(DEPS_ENV) == "python":
        return []
    if not (deps[0] / ".pins").is_file() or (deps[0] / ".pins").read_text().split() != \
            list(deps[1]):
        raise RuntimeError(f"{deps[0]} does not hold {' '.join(deps[1])}: run "
                           f"`bash scripts/release_deps.sh {rel}`")
    return [deps[0]]


def standin_dirs(rel: str, device: str = "cpu") -> list[Path]:
    """Extra stand-in directories a release's imports need (after the tree on sys.path)."""
    if device == "cpu" and _key(rel) < _key("0.5.8"):
        return [STANDINS / "cpu-0.5.7"]  # vllm's layernorm (layers/layernorm.py without CUDA)
    dirs = []
    if _key(rel) >= _key("0.5.15"):
        # the DSA import chain reaches the CuTe DSL kernels of sglang.jit_kernel.dsa (SM100),
        # which import cutlass and cuda.bindings at module level: stand-ins where not installed
        for module, standin in (("cutlass", "cutlass-dsl"), ("cuda.bindings", "cuda-python")):
            if not _installed(module):
                dirs.append(STANDINS / standin)
    return dirs


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing
        return False


def prepare_process(rel: str, device: str = "cpu") -> None:
    """Process state a single-GPU server has set up that this release reads and 0.5.8 did not
    (sglang_runners.prepare_process sets up what every release reads)."""
    if device == "cpu":
        _cpu_seqlens_expand()
        if _key(rel) >= _key("0.5.15"):
            # the DSA top-k v2 plan (SGLANG_OPT_USE_TOPK_V2, on by default) is a CUDA kernel
            # JIT-built through tvm-ffi: off, as ServerArgs sets it where that kernel can't run
            from sglang.srt.environ import envs

            envs.SGLANG_OPT_USE_TOPK_V2.set(False)
    if _key(rel) >= _key("0.5.9"):
        from sglang.srt.distributed import parallel_state

        # initialize_model_parallel with TP 1, no DP attention, no context parallelism: the
        # attention TP and CP groups are the single rank.
        for name in ("_ATTN_TP", "_ATTN_CP"):
            if getattr(parallel_state, name) is None:
                setattr(parallel_state, name, SimpleNamespace(world_size=1, rank_in_group=0))


def _cpu_seqlens_expand() -> None:
    """CPU stand-in for SGLang's ``seqlens_expand_triton`` (layers/attention/utils.py, from 0.5.13
    triton_ops/pad.py), which the NSA/DSA backend's replay calls from 0.5.10 and which asserts CUDA
    tensors before launching its Triton kernel: that very function recompiled from its own source
    minus its asserts (the same kernel launch, under the Triton interpreter), bound wherever
    SGLang imported the name (the backend module first). Both trees get it."""
    import importlib
    import sys

    original = None
    for name in ("sglang.srt.layers.attention.triton_ops.pad", "sglang.srt.layers.attention.utils"):
        try:
            original = getattr(importlib.import_module(name), "seqlens_expand_triton", None)
        except ImportError:
            continue
        if original is not None:
            break
    if original is None or getattr(original, "_nsa_fastpath_cpu", False):
        return
    backend = "dsa_backend" if dsa_named(imported_release()) else "nsa_backend"
    importlib.import_module(f"sglang.srt.layers.attention.{backend}")
    cpu = _without_asserts(original)
    for module in list(sys.modules.values()):
        if module is not None and module.__name__.startswith("sglang.") and \
                getattr(module, "seqlens_expand_triton", None) is original:
            module.seqlens_expand_triton = cpu


def _without_asserts(fn):
    """``fn`` recompiled from its own source minus its ``assert`` statements, in its module."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    func = tree.body[0]
    func.body = [s for s in func.body if not isinstance(s, ast.Assert)]
    func.decorator_list = []
    namespace = dict(fn.__globals__)
    exec(compile(tree, inspect.getsourcefile(fn), "exec"), namespace)
    out = namespace[fn.__name__]
    out._nsa_fastpath_cpu = True
    return out


# ---- EAGLE's spec-info objects as the worker hands them to the runners (the harness writes
# 0.5.8's field names; sglang_runners builds the objects through these) ------------------------
_SPEC_INFO_RENAMES = (  # (from release, 0.5.8's name or prefix, the release's)
    ("0.5.9", "num_tokens_per_batch", "num_tokens_per_req"),
    ("0.5.9", "num_tokens_for_logprob_per_batch", "num_tokens_for_logprob_per_req"),
    ("0.5.11", "retrive_", "retrieve_"),  # EagleVerifyInput.retrieve_index, ...
    ("0.5.12", "verified_id", "bonus_tokens"),  # EagleDraftInput
)


def spec_info_field(name: str) -> str:
    """A spec-info field's name in the imported release (the harness writes 0.5.8's)."""
    rel = _key(imported_release())
    for since, old, new in _SPEC_INFO_RENAMES:
        if rel >= _key(since) and name.startswith(old):
            name = new + name[len(old):]
    return name


def accept_field() -> str:
    """The draft-extend spec-info tensor of tokens each request extends by (accepted drafts + 1),
    which the runner pads and the backend's replay reads: ``accept_length`` to 0.5.10,
    ``num_accepted_tokens`` in 0.5.11, ``num_accept_tokens`` from 0.5.12."""
    rel = _key(imported_release())
    if rel >= _key("0.5.12"):
        return "num_accept_tokens"
    return "num_accepted_tokens" if rel >= _key("0.5.11") else "accept_length"


def accept_fields(tokens, dtype) -> dict:
    """The draft-extend spec-info fields EAGLE's verify step leaves for ``tokens`` (int64, per
    request: accepted drafts + 1), their tensors in ``dtype`` (int32; int64 once a request
    finished in that step): 0.5.8's ``accept_length`` (after prepare_extend_after_decode's
    ``add_(1)``) and ``accept_length_cpu`` (the drafts); 0.5.11's ``num_accepted_*`` and 0.5.12's
    ``num_correct_drafts`` / ``num_accept_tokens`` pairs (both counts, and their lists)."""
    drafts = tokens - 1
    rel = _key(imported_release())
    if rel >= _key("0.5.12"):
        return dict(num_correct_drafts=drafts.to(dtype), num_accept_tokens=tokens.to(dtype),
                    num_accept_tokens_cpu=tokens.tolist())
    if rel >= _key("0.5.11"):
        return dict(num_accepted_drafts=drafts.to(dtype), num_accepted_tokens=tokens.to(dtype),
                    num_accepted_drafts_cpu=drafts.tolist(),
                    num_accepted_tokens_cpu=tokens.tolist())
    return dict(accept_length=tokens.to(dtype), accept_length_cpu=drafts.tolist())


def draft_extend_input_class():
    """The spec-info class of a draft-extend forward: EagleDraftInput, from 0.5.12 its own
    EagleDraftExtendInput (hidden states and accept counts only: no top-k, no verified ids)."""
    from sglang.srt.speculative import eagle_info

    return getattr(eagle_info, "EagleDraftExtendInput", eagle_info.EagleDraftInput)


def draft_steps(rel: str) -> tuple:
    """speculative_num_steps values the multi-step scenarios run: 1, 3 and 5 step backends.
    0.5.9's NativeSparseAttnMultiStepBackend makes num_steps - 1 of them (0.5.8: num_steps), and
    its EAGLEWorker captures the draft runner only from 2 steps."""
    return (2, 4, 6) if _key(rel) >= _key("0.5.9") else (1, 3, 5)


def prepare_scheduler(rel: str, page_size: int) -> None:
    """Process state SGLang's scheduler calls read in this release and not in 0.5.8 (the radix
    scheduler scenario): the global ServerArgs, which a server sets at start (SGLang's defaults
    here), read by 0.5.7's Req.pop_committed_kv_cache and 0.5.9's release_kv_cache."""
    if _key(rel) < _key("0.5.8") or _key(rel) >= _key("0.5.9"):
        from sglang.srt.server_args import set_global_server_args_for_scheduler
        from sglang_runners import make_server_args

        args = make_server_args(False, 0, [1])
        args.page_size = page_size  # what __post_init__ resolves; the cache's
        set_global_server_args_for_scheduler(args)


# ---- RadixCache's calling conventions (the harness calls through these; SGLang's own callers,
# Req and SchedulePolicy, use their release's) ----------------------------------------------
def radix_match(cache, key):
    """``match_prefix`` of ``key``: a MatchPrefixParams from 0.5.8 on, the key itself in 0.5.7."""
    if _key(imported_release()) < _key("0.5.8"):
        return cache.match_prefix(key)
    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams

    return cache.match_prefix(MatchPrefixParams(key=key))


def radix_insert(cache, key, value=None) -> int:
    """``insert``; the matched prefix length (0.5.9 takes InsertParams, returns InsertResult)."""
    if _key(imported_release()) >= _key("0.5.9"):
        from sglang.srt.mem_cache.base_prefix_cache import InsertParams

        return cache.insert(InsertParams(key=key, value=value)).prefix_len
    return cache.insert(key, value)


def radix_evict(cache, num_tokens: int) -> None:
    """``evict`` (0.5.9 takes EvictParams)."""
    if _key(imported_release()) >= _key("0.5.9"):
        from sglang.srt.mem_cache.base_prefix_cache import EvictParams

        cache.evict(EvictParams(num_tokens=num_tokens))
    else:
        cache.evict(num_tokens)


def array_ids(rel: str | None = None) -> bool:
    """From 0.5.13 token ids are ``array('q')``s: a request's ``origin_input_ids`` (the tokenizer
    manager makes them) and ``output_ids``, the keys ``Req.init_next_round_input`` and
    ``cache_*_req`` make, and so the tree's keys; ``RadixKey.match`` asserts both keys' ids are
    of one type. ``rel``: default the imported release."""
    return _key(rel or imported_release()) >= _key("0.5.13")


def token_ids(tokens):
    """A request's token ids as the imported release holds them: a list, or (0.5.13 on) an
    ``array('q')`` (a new container either way)."""
    if array_ids():
        from array import array

        return array("q", tokens)
    return list(tokens)


def next_round_key(rc, ids, extra):
    """The RadixKey ``Req.init_next_round_input`` matches for a waiting request whose
    ``origin_input_ids + output_ids`` are ``ids`` (its prefix without the last token): a new
    list / array of those ids each round; from 0.5.14 the request's own array (the same object
    every round) capped by ``limit``."""
    n = max(len(ids) - 1, 0)
    if _key(imported_release()) >= _key("0.5.14"):
        return rc.RadixKey(token_ids=ids, extra_key=extra, limit=n)
    return rc.RadixKey(token_ids=(ids + ids[:0])[:n], extra_key=extra)


def admit(req) -> int:
    """What the PrefillAdder does to a waiting request it schedules whole (no chunking); its
    fill length (0.5.13: the ids it commits, ``fill_len``; before, ``fill_ids``)."""
    if hasattr(req, "fill_len") and hasattr(req, "full_untruncated_fill_ids"):
        req.fill_len = len(req.full_untruncated_fill_ids)
        return req.fill_len
    return len(req.fill_ids)


def bigram_view_keys(rel: str | None = None) -> bool:
    """RadixKey is a view from 0.5.11 on: an EAGLE key keeps its raw ints, ``is_bigram`` makes
    its positions the pairs (to 0.5.10: a list of bigram tuples, convert_to_bigram_key); the
    fast walk then caches nothing on keys and the opt-in triton matcher declines. ``rel``:
    default the imported release."""
    return _key(rel or imported_release()) >= _key("0.5.11")


def bigram_key(rc, tokens, extra, bigram: bool = True):
    """An ``is_bigram`` RadixKey of ``tokens`` (``bigram`` False: a plain one), the caller's
    list (or array) itself where the release keeps it (a view, 0.5.11 on), else its bigram
    tuples."""
    if bigram_view_keys() or not bigram:
        return rc.RadixKey(tokens, extra, is_bigram=bigram)
    from sglang.srt.mem_cache.utils import convert_to_bigram_key

    return rc.RadixKey(convert_to_bigram_key(tokens), extra, is_bigram=True)


def insert_key(rc, tokens: list, extra, bigram: bool, page_size: int):
    """The page-aligned RadixKey a request's tokens go into the cache under, as
    cache_finished_req makes it (EAGLE: bigram keys; ids of the release's type);
    ``len()`` is its length in positions."""
    key = bigram_key(rc, token_ids(tokens), extra, bigram)
    if bigram_view_keys():
        return key.page_aligned(page_size)
    key.token_ids = key.token_ids[: len(key) // page_size * page_size]
    return key


def key_match(cache, key0, key1) -> int:
    """SGLang's comparison of two keys as insert runs it: the cache's key_match_fn (the patched
    tree's drop-in matcher), ``RadixKey.match`` from 0.5.11 on (SGLang's own in both trees)."""
    if bigram_view_keys():
        return key0.match(key1, page_size=cache.page_size)
    return cache.key_match_fn(key0, key1)


def lock_delta(result) -> int:
    """What ``inc_lock_ref`` / ``dec_lock_ref`` returned, as the int 0.5.8 returns (from 0.5.10
    an IncLockRefResult / DecLockRefResult holding it: recorded as the int, so that a dump
    unpickles without SGLang)."""
    return getattr(result, "delta", result)


def match_call_key(*args, **kwargs):
    """The RadixKey of a ``match_prefix`` call as SGLang's own code makes it (0.5.7 passes the
    key, by keyword from Req; later releases a MatchPrefixParams)."""
    arg = args[0] if args else kwargs.get("params", kwargs.get("key"))
    return getattr(arg, "key", arg)


def finish_request(cache, req) -> None:
    """What the scheduler does with a finished request's KV cache: 0.5.9's release_kv_cache
    (cache_finished_req, then the request's pool slot freed; 0.5.8's cache_finished_req frees
    the slot itself)."""
    if _key(imported_release()) >= _key("0.5.9"):
        from sglang.srt.mem_cache.common import release_kv_cache

        release_kv_cache(req, cache)
    else:
        cache.cache_finished_req(req)


def req_pool_alloc(pool, req) -> int:
    """A ReqToTokenPool slot for ``req`` (0.5.9's alloc takes the requests and sets theirs)."""
    if _key(imported_release()) >= _key("0.5.9"):
        return pool.alloc([req])[0]
    return pool.alloc(1)[0]
