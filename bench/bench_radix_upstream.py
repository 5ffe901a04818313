#!/usr/bin/env python3
"""RadixCache prefix matching of a later SGLang release's own code, on bench_radix_match.py's
workload: is our matcher worth offering there?

    python bench/bench_radix_upstream.py --release 0.5.13 [--lengths 1024,4096,32768] [--calls N]

From 0.5.12 SGLang's RadixKey holds raw token ids (from 0.5.13 an `array('q')`, as the request's
ids are), compares them by C-level slices (0.5.13: a galloping search), and views EAGLE keys as
bigrams in O(1). This times that release's RadixCache.match_prefix, from its pristine wheel
(installed --no-deps into a temp dir; its own packages from scripts/release_deps.sh), on the
workload and calls of bench_radix_match.py's match tables: a system prompt of S tokens shared by
64 conversations, split at 1/4, 1/2, 3/4, 16 other prompts, inserted as cache_finished_req does
(page-aligned; EAGLE keys as bigram views); a request is the system prompt plus a new 64-token
user turn, its ids built as the release's Req.init_next_round_input builds them
(origin_input_ids + output_ids, all but the last), as a new `array('q')` (cold) or the same
waiting request's again (re-matched). Thread CPU time per call, median of --calls, minus the
timer's cost. Compare with bench_radix_match.py's columns from the same machine and load.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "harness"))
import releases  # noqa: E402

from bench_radix_match import CONFIGS, USER_TURN, workload  # noqa: E402


def install(release: str, where: Path) -> Path:
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["bash", str(ROOT / "scripts" / "release_deps.sh"), release], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target", str(where),
                    str(releases.wheel(release))], check=True)
    return where


def timer_cost_ns() -> int:
    samples = []
    for _ in range(2001):
        t0 = time.thread_time_ns()
        samples.append(time.thread_time_ns() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", required=True)
    ap.add_argument("--lengths", default="1024,4096,32768")
    ap.add_argument("--calls", type=int, default=21)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    with tempfile.TemporaryDirectory(prefix="nsa-bench-radix-upstream-") as tmp:
        tree = install(args.release, Path(tmp) / "site")
        standins = ROOT / "tests" / "standins"
        sys.path[:0] = [str(tree), *map(str, releases.deps_dirs(args.release)),
                        str(standins / "cpu"), str(standins)]
        os.environ.setdefault("TRITON_INTERPRET", "1")
        import torch
        from sglang.srt.mem_cache.base_prefix_cache import InsertParams, MatchPrefixParams
        from sglang.srt.mem_cache.cache_init_params import CacheInitParams
        from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey

        overhead = timer_cost_ns()
        print(f"## SGLang {args.release}'s own RadixCache.match_prefix (bench_radix_match.py's "
              f"workload)\n\n- command: python bench/bench_radix_upstream.py --release "
              f"{args.release} --lengths {args.lengths} --calls {args.calls}\n- load average "
              f"{os.getloadavg()[0]:.2f}; thread CPU time per call, us, median of {args.calls} "
              f"(timer cost {overhead} ns subtracted)\n")
        print("| page | EAGLE | S (shared) | matched | cold us | re-matched us |")
        print("|---:|---|---:|---:|---:|---:|")
        for ps, eagle in CONFIGS:
            for S in lengths:
                rng = random.Random(S * 7 + ps)
                system, inserts = workload(rng, S)
                cache = RadixCache(CacheInitParams(
                    disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=None,
                    page_size=ps, is_eagle=eagle, eviction_policy="lru"))
                slot = 0
                for fill_ids in inserts:
                    key = RadixKey(array("q", fill_ids), None)
                    key, _ = key.maybe_to_bigram_view(eagle)
                    key = key.page_aligned(ps)
                    cache.insert(InsertParams(key=key, value=torch.arange(
                        slot, slot + len(key), dtype=torch.int64)))
                    slot += len(key)
                turn_rng = random.Random(S)

                def request_ids(turn=None):
                    turn = turn or [turn_rng.randrange(1000, 150_000) for _ in range(USER_TURN)]
                    fill = array("q", system + turn) + array("q")  # origin_input_ids + output_ids
                    return fill[: len(fill) - 1]

                def match(ids):
                    return cache.match_prefix(MatchPrefixParams(key=RadixKey(ids, None)))

                waiting = system + [turn_rng.randrange(1000, 150_000) for _ in range(USER_TURN)]
                times = {"cold": [], "again": []}
                matched = len(match(request_ids()).device_indices)
                for _ in range(args.calls):
                    for kind, ids in (("cold", request_ids()),
                                      ("again", request_ids(waiting[S:]))):
                        t0 = time.thread_time_ns()
                        result = match(ids)
                        t1 = time.thread_time_ns()
                        del result
                        times[kind].append(max(t1 - t0 - overhead, 0) / 1000)
                print(f"| {ps} | {'yes' if eagle else 'no'} | {S} | {matched} | "
                      f"{statistics.median(times['cold']):.1f} | "
                      f"{statistics.median(times['again']):.1f} |", flush=True)


if __name__ == "__main__":
    main()
