"""Scenario matrices shared by the CPU parity tests and the GPU tier (scripts/gpu_tier.sh)."""

# GPU tier: page 1/64, topk 128/2048 (the extremes; 256/512 are in the kernel tests on the GPU),
# captured bs 1..32, 3 replays each: sized so a gpu_tier.sh stage takes under 10 minutes on an H200.
NSA_SINGLE = [
    {"kind": "single", "page_size": ps, "topk": topk}
    for ps in (1, 64)
    for topk in (128, 2048)
]
NSA_MULTI = [
    {"kind": "multi", "page_size": ps, "topk": topk} for ps in (1, 64) for topk in (128, 2048)
]
# CPU tier (CI): the Triton interpreter runs every program of every launch in Python, so CI takes
# the extremes of the same matrix (topk 256/512 are in the kernel unit tests and the GPU tier).
NSA_SINGLE_CPU = [
    {"kind": "single", "page_size": ps, "topk": topk, "capture_bs": [1, 3, 8, 16],
     "replays_per_bs": 2}
    for ps in (1, 64)
    for topk in (128, 2048)
]
NSA_MULTI_CPU = [
    {"kind": "multi", "page_size": ps, "topk": topk, "capture_bs": [1, 4, 16]}
    for ps in (1, 64) for topk in (128, 2048)
]
RADIX = [
    {"page_size": ps, "bigram": bigram, "n_requests": n, "max_prefix": 32768,
     "budget_tokens": 150_000}
    for ps, bigram, n in ((1, False, 1000), (16, False, 1000), (64, False, 1000), (1, True, 1000),
                          (16, True, 1000), (64, True, 1000))
]
RADIX_PAIRS = ((1, False), (16, False), (64, False), (1, True), (16, True), (64, True))
SCHEDULER = [
    {"scenario": "scheduler", "page_size": ps, "bigram": bigram, "n_requests": 200,
     "max_prefix": 8192, "budget_tokens": 12_000}
    for ps, bigram in RADIX_PAIRS
]
REMATCH = [
    {"scenario": "rematch", "page_size": ps, "bigram": bigram, "n_ops": 700, "max_prefix": 6000}
    for ps, bigram in ((1, False), (64, False), (1, True), (16, True), (64, True))
]

# ---- every other release (CI runs each one's suites too: tests/README.md) ----------------------
# The base release (0.5.8, our change's merge base) runs the matrices above. Every other one runs
# the same code paths on fewer sizes, so that CI covers every release in its time budget: page
# 1/64, topk 128 (lengths from 1 to 3x topk: rows clipped at topk and not), captured bs 1/3/8
# (replays that fill a bs and padded ones; bs 1 takes the contiguous copy), each mode, the
# multi-step backend with the fewest and the most step backends, MTP precompute on and off; the
# radix suites on smaller workloads with the same page sizes, EAGLE keys, extra keys, locks and
# evictions. `least`: what a run must have done for its comparison to mean something.
BASE_RELEASE = "0.5.8"
NSA_SINGLE_OTHER = [
    {"kind": "single", "page_size": ps, "topk": 128, "capture_bs": [1, 3, 8], "replays_per_bs": 2}
    for ps in (1, 64)
]
RADIX_OTHER = {
    "workload": [{"page_size": ps, "bigram": bigram, "n_requests": 250, "max_prefix": 8192,
                  "budget_tokens": 40_000} for ps, bigram in RADIX_PAIRS],
    "scheduler": [{"scenario": "scheduler", "page_size": ps, "bigram": bigram, "n_requests": 80,
                   "max_prefix": 4096, "budget_tokens": 3000} for ps, bigram in RADIX_PAIRS],
    "rematch": [dict(c, n_ops=300, max_prefix=4000) for c in REMATCH],
}


def nsa_single_cpu(release: str) -> list:
    return NSA_SINGLE_CPU if release == BASE_RELEASE else NSA_SINGLE_OTHER


def nsa_multi_cpu(release: str, draft_steps: tuple) -> tuple[list, tuple]:
    """(configs, the speculative_num_steps they run): every value of `draft_steps` on the base
    release, its fewest and most step backends on the others."""
    if release == BASE_RELEASE:
        return NSA_MULTI_CPU, draft_steps
    steps = (draft_steps[0], draft_steps[-1])
    return [{"kind": "multi", "page_size": ps, "topk": 128, "capture_bs": [1, 4],
             "num_steps_list": list(steps)} for ps in (1, 64)], steps


def radix_cpu(release: str) -> tuple[dict, dict]:
    """(suite -> configs, least): `least` per suite: hits per config (the workload's matches,
    the scheduler's match_prefix calls), matches the named matcher served over the suite, and
    the re-match cache's validated hits (compiled matcher)."""
    if release == BASE_RELEASE:
        return ({"workload": RADIX, "scheduler": SCHEDULER, "rematch": REMATCH},
                {"workload": (50, 1000, 0), "scheduler": (300, 1000, 100),
                 "rematch": (50, 1000, 50)})
    return RADIX_OTHER, {"workload": (50, 1000, 0), "scheduler": (200, 1000, 30),
                         "rematch": (30, 300, 10)}

# Every fast path off: the patched tree must then run SGLang 0.5.8's own code (ROLLBACK.md, way 1).
FLAGS_OFF = {
    "SGLANG_NSA_USE_TRITON_METADATA": "0",
    "SGLANG_NSA_USE_CUDA_METADATA": "0",
    "SGLANG_NSA_USE_BATCHED_COPY": "0",
    "SGLANG_RADIX_FAST_MATCH": "0",
}

# Outputs our multi-step precomputed replay sets as SGLang's per-backend replay (precompute off)
# does, not as its precomputed path leaves them (docs/DIFFERENCES.md items 2 and 6): the DeepGEMM
# schedule (0.5.8's is stale) and each step backend's forward_metadata (0.5.9's fused copy leaves
# three unset). The GPU parity tests take these keys from the per-backend replay.
REFRESHED_ON_PRECOMPUTE = ("paged_mqa_schedule_metadata", "forward_metadata_is_graph_metadata")
