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
