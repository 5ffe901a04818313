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

import re
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


_SUMMARY = re.compile(r"nsa-fastpath: NSA replays served: ([^;\n]*); disabled paths: (.*)")


def logged_summaries(log: str) -> list[tuple[dict, str]]:
    """The served summaries `replay_fastpath` logged (periodic ones, then the one at exit), as
    (counts, disabled) in log order."""
    out = []
    for counts, disabled in _SUMMARY.findall(log):
        pairs = [] if counts == "none" else [c.split("=") for c in counts.split(", ")]
        out.append(({k: int(v) for k, v in pairs}, disabled))
    return out


def summary_problems(dump: dict, expected: dict, every: int | None = None) -> list[str]:
    """[] when the patched runner's log holds the served summary an operator reads: the last
    (at exit) with exactly `expected`; with `every` (NSA_FASTPATH_SUMMARY_EVERY), before it one
    line per `every` replays, the i-th counting i * every."""
    lines = logged_summaries(dump["_meta/stderr"])
    if not expected:
        return [f"summaries logged though nothing was served: {lines}"] if lines else []
    if not lines or lines[-1][0] != expected:
        return [f"served summary at exit: {lines[-1:] or 'none'}, expected {expected}"]
    if every:
        totals = [sum(counts.values()) for counts, _ in lines[:-1]]
        want = [every * i for i in range(1, sum(expected.values()) // every + 1)]
        if totals != want:
            return [f"periodic summaries counted {totals} replays, expected {want}"]
    return []
