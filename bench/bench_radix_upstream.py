#!/usr/bin/env python3
"""RadixCache prefix matching on a later SGLang release: its own match_prefix beside ours on
that release, side by side in one process.

    python bench/bench_radix_upstream.py --release 0.5.13 [--lengths 16,64,...] [--calls N]
                                         [--block N] [--configs 1:0,64:1]

From 0.5.11 SGLang's RadixKey is a view over the ids (EAGLE keys as bigrams in O(1)); from 0.5.13
the ids are `array('q')`s, compared by C-level slices (a galloping search). The release's pinned
wheel is installed --no-deps into a temp dir (its own packages from scripts/release_deps.sh) and
patched by scripts/apply.sh in a copy; the patched tree is imported as sglang, the release's own
radix_cache.py is read from the wheel and loaded under another module name (its imports resolve
to the patched tree's modules: SGLang's own but environ.py, a superset). Variants: "sglang" (the
release's own), "compiled" (ours, the default: C++ helper, re-match cache), "python" (the
pure-Python matcher, SGLANG_RADIX_COMPILED_MATCH=0), each also with SGLANG_RADIX_REMATCH_CACHE=0
("no cache"); "compiled, cache from 1k": the compiled walk consulting the re-match cache from
1024 matched ints, as it does for lists (radix_match.NSA_REMATCH_MIN; for array ids it does not:
NSA_REMATCH_MIN_ARRAY, decided by this column against "compiled").

Workload (bench_radix_match.py's): a system prompt of S tokens shared by 64 conversations, split
at 1/4, 1/2 and 3/4 by requests sharing part of it, 16 other prompts; inserted as
cache_finished_req inserts (`RadixKey(ids, is_bigram=EAGLE).page_aligned(page)`). A request is
the system prompt plus a new 64-token user turn, its key made as the release's
Req.init_next_round_input makes it (origin_input_ids + output_ids, all but the last id: a new
array sliced from it, or from 0.5.14 the request's own array capped by `limit`):
- cold: a new request each call;
- re-matched: one waiting request again each call (after two untimed rounds: the re-match cache
  marks, remembers, then serves, where it is consulted).

Timing (bench_radix_match.py's Clock and interleaving): each call alone in thread CPU time
(time.thread_time_ns) minus the timer's cost, its result dropped after the clock stops; median of
--calls per variant; variants alternating in blocks of --block calls (order rotated), gc off.
x = sglang / variant. Every variant's matched lengths are checked equal and ours checked to have
been served by the matcher they name.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "harness"))
import releases  # noqa: E402

import bench_radix_match as brm  # noqa: E402

OWN_NAME = "nsa_bench_release_radix_cache"
VARIANTS = {  # ours: flags at RadixCache construction
    "compiled": {},
    "compiled, cache from 1k": {},
    "compiled, no cache": {"SGLANG_RADIX_REMATCH_CACHE": "0"},
    "python": {"SGLANG_RADIX_COMPILED_MATCH": "0"},
    "python, no cache": {"SGLANG_RADIX_COMPILED_MATCH": "0", "SGLANG_RADIX_REMATCH_CACHE": "0"},
}
SERVED = {"compiled": "compiled", "compiled, cache from 1k": "compiled",
          "compiled, no cache": "compiled", "python": "python", "python, no cache": "python"}


def trees(release: str, tmp: Path) -> tuple[Path, Path]:
    """(the release's wheel, a site-packages of it patched by apply.sh)."""
    for script in ("fetch_wheel.sh", "release_deps.sh"):
        subprocess.run(["bash", str(ROOT / "scripts" / script), release], check=True,
                       stdout=subprocess.DEVNULL)
    wheel, site = releases.wheel(release), tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target", str(site),
                    str(wheel)], check=True)
    subprocess.run(["bash", str(ROOT / "scripts" / "apply.sh"), "apply", "--target", str(site)],
                   check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, PYTHON=sys.executable))
    return wheel, site


def import_modules(release: str, wheel: Path, site: Path, tmp: Path):
    os.environ.setdefault("TRITON_INTERPRET", "1")
    standins = ROOT / "tests" / "standins"
    sys.path[:0] = [str(site), *map(str, releases.deps_dirs(release)), str(standins / "cpu"),
                    str(standins)]
    from sglang.srt.mem_cache import radix_cache as ours

    if not hasattr(ours.RadixCache, "_nsa_init_matcher"):
        sys.exit(f"{site}: RadixCache is not nsa-fastpath's")
    return brm.load_wheel_radix_cache(wheel, tmp / "release_radix_cache.py", OWN_NAME), ours


def build(mod, ps: int, eagle: bool, inserts: list, flags: dict):
    import torch

    from sglang.srt.mem_cache.base_prefix_cache import InsertParams

    cache = brm.make_cache(mod, ps, eagle, "cpu", flags)
    slot = 0
    for ids in inserts:
        key = mod.RadixKey(array("q", ids), None, is_bigram=eagle).page_aligned(ps)
        cache.insert(InsertParams(key=key, value=torch.arange(slot, slot + len(key),
                                                              dtype=torch.int64)))
        slot += len(key)
    return cache


def bench(own, ours, release: str, clock, lengths, calls, configs) -> list[dict]:
    from sglang.srt.mem_cache import radix_match
    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams

    limit_keys = "limit" in getattr(own.RadixKey, "__slots__", ())  # 0.5.14's Req
    rows = []
    for ps, eagle in configs:
        for S in lengths:
            rng = random.Random(S * 7 + ps)
            system, inserts = brm.workload(rng, S)
            mods = {"sglang": own, **{v: ours for v in VARIANTS}}
            caches = {v: build(mods[v], ps, eagle, inserts, VARIANTS.get(v, {})) for v in mods}
            caches["compiled, cache from 1k"]._nsa_walker.rematch_min_array = \
                radix_match.rematch_min("compiled")

            def matcher(name):
                cache, RK = caches[name], mods[name].RadixKey

                def call(req):
                    ids, limit = req
                    key = RK(ids, None) if limit is None else RK(ids, None, limit=limit)
                    return cache.match_prefix(MatchPrefixParams(key=key))
                return call

            fns = {name: matcher(name) for name in caches}
            turn_rng = random.Random(S)

            def next_round(full):  # Req.init_next_round_input's key of origin + output ids
                n = len(full) - 1
                return (full, n) if limit_keys else (full[:n], None)

            def new_request(_i):
                turn = [turn_rng.randrange(1000, 150_000) for _ in range(brm.USER_TURN)]
                return next_round(array("q", system + turn) + array("q"))

            matched, served = {}, {}
            for name, fn in fns.items():
                radix_match.reset_stats()
                matched[name] = len(fn(new_request(0)).device_indices)
                served[name] = radix_match.last_served()
            assert len(set(matched.values())) == 1, f"results differ: {matched}"
            for name in VARIANTS:
                assert served[name] == SERVED[name], (name, served[name])
            cold = brm.interleaved(clock, fns, {name: new_request for name in fns}, calls)

            turn = [turn_rng.randrange(1000, 150_000) for _ in range(brm.USER_TURN)]
            waiting = {name: array("q", system + turn) for name in fns}  # each its own request
            again_args = {name: (lambda _i, w=waiting[name]: next_round(w + array("q"))
                                 if not limit_keys else next_round(w)) for name in fns}
            for name, fn in fns.items():
                for _ in range(2):
                    assert len(fn(again_args[name](0)).device_indices) == matched[name]
                radix_match.reset_stats()
                fn(again_args[name](0))
                served[name] = radix_match.last_served()
            for name in VARIANTS:
                consulted = "no cache" not in name and matched["sglang"] + eagle >= \
                    caches[name]._nsa_walker.rematch_min_array
                assert served[name] == ("rematch" if consulted else SERVED[name]), \
                    (name, served[name])
            again = brm.interleaved(clock, fns, again_args, calls)
            rows.append(dict(page_size=ps, eagle=eagle, S=S, matched=matched["sglang"],
                             cold=cold, rematched=again))
            print(f"  page {ps:2d} eagle {int(eagle)} S {S:5d}: sglang {cold['sglang']:.1f} us, "
                  f"compiled {cold['compiled']:.1f} us cold / {again['compiled']:.1f} us again",
                  file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict], release: str) -> None:
    names = list(VARIANTS)
    for table, title in (("cold", "cold: a new request each call"),
                         ("rematched", "re-matched: the same waiting request again")):
        print(f"\n### {title}\n")
        print(f"| page | EAGLE | S (shared) | matched | {release} us | "
              + " | ".join(f"{v} us | {v} x" for v in names) + " |")
        print("|---:|---|---:|---:|---:|" + "---:|---:|" * len(names))
        for r in rows:
            t = r[table]
            cells = [f"{brm.fmt(t[v])} | {t['sglang'] / t[v]:.1f}" for v in names]
            print(f"| {r['page_size']} | {'yes' if r['eagle'] else 'no'} | {r['S']} | "
                  f"{r['matched']} | {brm.fmt(t['sglang'])} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", required=True,
                    help="a supported release whose ids are array('q')s (0.5.13 on)")
    ap.add_argument("--lengths", default="16,64,256,1024,4096,8192,32768")
    ap.add_argument("--calls", type=int, default=21)
    ap.add_argument("--block", type=int, default=8, help="calls of one variant in a row")
    ap.add_argument("--configs", help="page:eagle pairs, e.g. 1:0,64:1 (default: page 1/16/64, "
                    "EAGLE off and on)")
    args = ap.parse_args()
    if not releases.array_ids(args.release):
        ap.error(f"SGLang {args.release} matches lists of ids: bench/bench_radix_match.py "
                 "measures those (against 0.5.8)")
    brm.BLOCK = max(1, args.block)
    lengths = [int(x) for x in args.lengths.split(",")]
    configs = brm.CONFIGS if not args.configs else [
        (int(p), e == "1") for p, e in (c.split(":") for c in args.configs.split(","))]
    with tempfile.TemporaryDirectory(prefix="nsa-bench-radix-release-") as tmp:
        tmp = Path(tmp)
        wheel, site = trees(args.release, tmp)
        own, ours = import_modules(args.release, wheel, site, tmp)
        import torch

        from sglang.srt.mem_cache import radix_match

        radix_match.native.load()  # build (if needed) before any timing
        clock = brm.Clock("cpu")
        model = platform.processor() or "?"
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "?"
        print(f"## RadixCache prefix matching on SGLang {args.release}: its own vs nsa-fastpath\n")
        print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"commit {commit}")
        print(f"- machine: {model}, {os.cpu_count()} cores; {platform.platform()}; load average "
              f"{os.getloadavg()[0]:.2f} at start")
        print(f"- python {platform.python_version()}, torch {torch.__version__}")
        print(f"- matcher: {radix_match.describe()}")
        print(f"- command: python bench/bench_radix_upstream.py {' '.join(sys.argv[1:])}".rstrip())
        print(f"- times: median of {args.calls} calls each, thread CPU time per call, us (timer "
              f"cost {clock.overhead_ns:.0f} ns subtracted), variants alternating every "
              f"{brm.BLOCK} calls; x = {args.release} / variant")
        sys.stdout.flush()
        rows = bench(own, ours, args.release, clock, lengths, args.calls, configs)
        report(rows, args.release)
        print(f"\n(load average {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    main()
