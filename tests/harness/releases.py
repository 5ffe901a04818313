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
    ("0.5.13", ("int64", "int32", "int32")),
    ("0.5.7", ("int32", "int32", "int32")),
)


def runner_buffer_dtypes(rel: str) -> dict[str, str]:
    dtypes = next(d for low, d in RUNNER_BUFFER_DTYPES if _key(rel) >= _key(low))
    return dict(zip(("req_pool_indices", "seq_lens", "seq_lens_cpu"), dtypes))


def radix_replaced(rel: str) -> bool:
    """Whether the release set replaces RadixCache: not from 0.5.13, whose own matcher compares
    array token ids in C and views EAGLE bigrams in O(1) (docs/BENCHMARKS.md: within 10 to 70 us
    a match of ours); there SGLang's radix_cache.py stays and none of our mem_cache modules is
    installed (scripts/regen.py SHARED_WITH_FORK)."""
    return not dsa_named(rel)


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


def deps_dirs(rel: str) -> list[Path]:
    """The release's own packages (scripts/release_deps.sh made them), to put on sys.path."""
    deps = release_deps(rel)
    if deps is None:
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
    return []


def prepare_process(rel: str, device: str = "cpu") -> None:
    """Process state a single-GPU server has set up that this release reads and 0.5.8 did not
    (sglang_runners.prepare_process sets up what every release reads)."""
    if device == "cpu":
        _cpu_seqlens_expand()
    if _key(rel) >= _key("0.5.9"):
        from sglang.srt.distributed import parallel_state

        # initialize_model_parallel with TP 1, no DP attention, no context parallelism: the
        # attention TP and CP groups are the single rank.
        for name in ("_ATTN_TP", "_ATTN_CP"):
            if getattr(parallel_state, name) is None:
                setattr(parallel_state, name, SimpleNamespace(world_size=1, rank_in_group=0))


def _cpu_seqlens_expand() -> None:
    """CPU stand-in for SGLang's `seqlens_expand_triton` (attention/triton_ops/pad.py, called by
    the NSA/DSA backend's replay from 0.5.10): the same launch of SGLang's own
    `seqlens_expand_kernel`, without its two `assert ....is_cuda` (the Triton interpreter runs
    the kernel on CPU tensors). Bound wherever SGLang imported the name; both trees get it."""
    import sys

    import torch

    try:
        from sglang.srt.layers.attention.triton_ops import pad
    except ImportError:
        return
    if not hasattr(pad, "seqlens_expand_triton"):
        return
    original = pad.seqlens_expand_triton

    def seqlens_expand_triton(extend_seq_lens, seq_lens, total_len, max_q_len):
        import triton

        n = extend_seq_lens.numel()
        offsets = torch.zeros(n + 1, device=extend_seq_lens.device, dtype=torch.int32)
        offsets[1:] = torch.cumsum(extend_seq_lens, dim=0)
        output = torch.empty(total_len, device=extend_seq_lens.device, dtype=torch.int32)
        pad.seqlens_expand_kernel[(n,)](extend_seq_lens, seq_lens, offsets, output, n,
                                        BLOCK=triton.next_power_of_2(max_q_len))
        return output

    for module in list(sys.modules.values()):
        if module is not None and module.__name__.startswith("sglang.") and \
                getattr(module, "seqlens_expand_triton", None) is original:
            module.seqlens_expand_triton = seqlens_expand_triton


def spec_info_field(name: str) -> str:
    """A spec-info field's name in the imported release (the harness writes 0.5.8's)."""
    rel = _key(imported_release())
    if rel >= _key("0.5.12") and name == "accept_length":
        return "num_accept_tokens"  # EagleDraftInput / EagleDraftExtendInput
    if rel >= _key("0.5.12") and name == "verified_id":
        return "bonus_tokens"  # EagleDraftInput
    if rel >= _key("0.5.11") and name.startswith("retrive_"):
        return name.replace("retrive_", "retrieve_")  # EagleVerifyInput's spelling fixed
    if rel >= _key("0.5.9"):
        return name.replace("_per_batch", "_per_req")  # EagleDraftInput.num_tokens_per_req
    return name


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
