"""Which path must have served a patched run's replays: expected `replay_fastpath.served` counts,
derived from what the harness replayed (`_meta/replays`, written by nsa_scenarios.run).

The contract, per replay call SGLang's runners make:
- single backend (`replay`): one count for the path that served it;
- multi-step backend (`replay_multi`), served by a fast path: ONE count, precompute on or off;
- multi-step backend no fast path serves: what SGLang's code then calls is counted:
  - precompute off: each step backend's replay (`metadata.upstream` per step backend);
  - precompute on: the copy of the precomputed metadata, one batched copy for all step backends
    (`copy.foreach` where every destination is contiguous, i.e. captured bs 1; `copy.triton`
    otherwise), or SGLang's own copy per step backend (`copy.upstream`).
A replay the fast path rejects as bad input (`rejected`) is served by nobody.
"""
from __future__ import annotations

from collections import Counter


def expected_served(replays: dict, metadata: str, *, precompute: bool = False,
                    batched_copy: bool = False) -> dict:
    """metadata: "cuda", "triton" or "upstream", the path that must serve the metadata replays;
    precompute: SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA; batched_copy: SGLANG_NSA_USE_BATCHED_COPY
    (it matters only where SGLang's precompute-and-copy runs, i.e. metadata "upstream")."""
    served = Counter()
    served[f"metadata.{metadata}"] += replays.get("single", 0)
    multi, step_backends = replays.get("multi", 0), replays.get("multi.step_backends", 0)
    if metadata != "upstream":
        served[f"metadata.{metadata}"] += multi
    elif not precompute:
        served["metadata.upstream"] += step_backends
    elif batched_copy:
        served["copy.foreach"] += replays.get("multi.bs1", 0)
        served["copy.triton"] += multi - replays.get("multi.bs1", 0)
    else:
        served["copy.upstream"] += step_backends
    return {k: v for k, v in served.items() if v}


def served_problems(dump: dict, expected: dict) -> list[str]:
    """[] when a patched run's served counts are exactly `expected`, else what differs."""
    if dump["_meta/served"] == expected:
        return []
    return [f"served {dump['_meta/served']}, expected {expected} "
            f"(harness replays: {dump['_meta/replays']})"]
