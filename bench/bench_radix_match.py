#!/usr/bin/env python3
"""RadixCache prefix matching: SGLang 0.5.8 vs nsa-fastpath, side by side in one process.

    python bench/bench_radix_match.py [--tree SITE] [--device cpu|cuda] [--quick] [--runs N]
                                      [--lengths 16,64,...] [--calls N] [--block N]
                                      [--only match|floor|scan|sweep]

--tree: a site-packages dir holding SGLang 0.5.8 patched by scripts/apply.sh. Default: one is
built in a temp dir (pip install --no-deps --no-index --target of .cache/wheels' wheel, then
scripts/apply.sh apply --target); the compiled helper is built into $NSA_FASTPATH_BUILD_DIR
(default ~/.cache/nsa-fastpath/build) when the first patched RadixCache is made, before any timing.

"0.5.8" is SGLang 0.5.8's own radix_cache.py, read from the pinned wheel and loaded under another
module name; its imports resolve to the patched tree's modules, byte-identical to 0.5.8 except
environ.py (a superset). The patched variants are the patched RadixCache with flags set at
construction: "compiled" (the default: C++ helper, re-match cache), "python" (the pure-Python
fallback, SGLANG_RADIX_COMPILED_MATCH=0), each also with SGLANG_RADIX_REMATCH_CACHE=0 ("no
cache", re-matched table only: on a new request it is the same code) and, with
--device cuda (or --with-triton on cpu, interpreted: a smoke test), "triton"
(SGLANG_RADIX_TRITON_MATCH=1).

Workload (every config: page size 1, 16, 64 x EAGLE keys off/on; shared lengths S): a system
prompt of S tokens shared by 64 conversations (user turns of 16-256 tokens), split at 1/4, 1/2
and 3/4 by requests sharing only part of it, plus 16 unrelated prompts; inserted as
cache_finished_req inserts (EAGLE: convert_to_bigram_key, page-aligned, is_bigram keys).
Requests are the system prompt plus a new 64-token user turn; the token list is built as
Req.init_next_round_input builds it (fill_ids = origin_input_ids + output_ids, then
fill_ids[:len - 1]) and matched by match_prefix(MatchPrefixParams(key=RadixKey(token_ids=...,
extra_key=None), req=None, cow_mamba=False)), the module's own classes.
- cold: a new request each call, its ids fresh int objects (unpickled, as from the tokenizer);
- re-matched: one waiting request matched again each call (after two untimed rounds: the
  re-match cache serves from a query's third match on), a new list of the same int objects each
  time, as each scheduler round does.

Timing: each call alone in thread CPU time (time.thread_time_ns; wall time with cuda, whose
syncs block), minus the timer's own cost; its result dropped after the clock stops (SGLang
keeps it); the median per variant; variants alternate in blocks of --block calls (default 8:
back-to-back calls, as the scheduler makes them; 1: every call after another variant's), gc off.
x = 0.5.8 / variant. Every variant's matched lengths are checked equal, and the patched variants
are checked to have been served by the matcher they name.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import os
import pickle
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL = ROOT / ".cache" / "wheels" / "sglang-0.5.8-py3-none-any.whl"
RADIX_PATH = "sglang/srt/mem_cache/radix_cache.py"
PRISTINE_NAME = "nsa_bench_pristine_radix_cache"

LENGTHS = (16, 64, 256, 1024, 4096, 8192, 32768)
CONFIGS = [(ps, eagle) for eagle in (False, True) for ps in (1, 16, 64)]
USER_TURN = 64


# ------------------------------------------------------------------------------------------------
# trees and imports
# ------------------------------------------------------------------------------------------------
def build_tree(workdir: Path) -> Path:
    site = workdir / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-compile", "--disable-pip-version-check", "--target", str(site),
                    str(WHEEL)], check=True)
    subprocess.run(["bash", str(ROOT / "scripts" / "apply.sh"), "apply", "--target", str(site)],
                   check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, PYTHON=sys.executable))
    return site


def import_modules(tree: Path, device: str, workdir: Path):
    """Import the patched tree as sglang; load 0.5.8's radix_cache.py from the wheel aside it."""
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # as the CPU test tier: SGLang imports Triton
    else:
        os.environ.setdefault("SGLANG_ENABLE_JIT_DEEPGEMM", "0")
    standins = ROOT / "tests" / "standins"
    sys.path[:0] = [str(tree), str(standins / ("gpu" if device == "cuda" else "cpu")),
                    str(standins)]
    import sglang
    from sglang.srt.mem_cache import radix_cache as fast

    if not Path(sglang.__file__).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"sglang resolved to {sglang.__file__}, not to --tree {tree}")
    if not hasattr(fast.RadixCache, "_nsa_match_prefix"):
        sys.exit(f"{tree} is not patched by nsa-fastpath (run scripts/apply.sh apply --target)")
    return load_wheel_radix_cache(WHEEL, workdir / "pristine_radix_cache.py", PRISTINE_NAME), fast


def load_wheel_radix_cache(wheel: Path, dest: Path, name: str):
    """The wheel's own radix_cache.py, written to dest and imported as module `name`, beside
    the patched tree's (which is `sglang.srt.mem_cache.radix_cache`)."""
    with zipfile.ZipFile(wheel) as zf:
        dest.write_bytes(zf.read(RADIX_PATH))
    spec = importlib.util.spec_from_file_location(name, dest)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Allocator:
    def __init__(self, device):
        self.device = device

    def free(self, indices):
        pass


VARIANT_FLAGS = {  # patched variants: flags at RadixCache construction
    "compiled": {},
    "compiled, no cache": {"SGLANG_RADIX_REMATCH_CACHE": "0"},
    "python": {"SGLANG_RADIX_COMPILED_MATCH": "0"},
    "python, no cache": {"SGLANG_RADIX_COMPILED_MATCH": "0", "SGLANG_RADIX_REMATCH_CACHE": "0"},
    "triton": {"SGLANG_RADIX_TRITON_MATCH": "1"},
}
EXTRA_MODULES: dict = {}  # variant -> its radix_cache module, when not the tree's (--against)
NO_CACHE = ("compiled, no cache", "python, no cache")  # same as their matcher on a new request
SERVED = {"compiled": "compiled", "compiled, no cache": "compiled", "python": "python",
          "python, no cache": "python", "triton": "triton"}
FLAG_NAMES = ("SGLANG_RADIX_FAST_MATCH", "SGLANG_RADIX_COMPILED_MATCH",
              "SGLANG_RADIX_REMATCH_CACHE", "SGLANG_RADIX_TRITON_MATCH")


def make_cache(mod, page_size: int, eagle: bool, device, flags: dict):
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams

    saved = {k: os.environ.pop(k, None) for k in FLAG_NAMES}
    os.environ.update(flags)
    try:
        return mod.RadixCache(CacheInitParams(
            disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=Allocator(device),
            page_size=page_size, is_eagle=eagle, eviction_policy="lru"))
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def fresh(tokens: list) -> list:
    """The same token ids as new int objects, as a request's ids arrive from the tokenizer."""
    return pickle.loads(pickle.dumps(tokens))


# ------------------------------------------------------------------------------------------------
# workload
# ------------------------------------------------------------------------------------------------
def workload(rng: random.Random, S: int):
    def rand(n):
        return [rng.randrange(1000, 150_000) for _ in range(n)]

    system = rand(S)
    inserts = []
    for frac in (0.25, 0.5, 0.75):  # requests sharing part of the system prompt
        cut = int(S * frac)
        if 0 < cut < S:
            inserts.append(system[:cut] + rand(64))
    for _ in range(64):  # conversations under the system prompt
        inserts.append(system + rand(rng.choice((16, 64, 256))))
    for _ in range(16):  # other tenants
        inserts.append(rand(rng.choice((8, 64, 512, 2048))))
    return system, [fresh(t) for t in inserts]


def build_cache(mod, page_size, eagle, device, inserts, flags):
    """The tree as cache_finished_req leaves it after these requests."""
    import torch

    from sglang.srt.mem_cache.utils import convert_to_bigram_key

    cache = make_cache(mod, page_size, eagle, device, flags)
    slot = 0
    for fill_ids in inserts:
        keys = convert_to_bigram_key(fill_ids) if eagle else fill_ids
        keys = keys[: len(keys) // page_size * page_size]
        values = torch.arange(slot, slot + len(keys), dtype=torch.int64, device=device)
        slot += len(keys)
        cache.insert(mod.RadixKey(keys, None, is_bigram=eagle), values)
    return cache


class Request:
    """A waiting request's ids as SGLang holds them (origin_input_ids, output_ids)."""

    def __init__(self, origin_input_ids: list):
        self.origin_input_ids = origin_input_ids
        self.output_ids = []

    def next_round_ids(self) -> list:
        fill_ids = self.origin_input_ids + self.output_ids  # Req.init_next_round_input
        return fill_ids[: max(len(fill_ids) - 1, 0)]


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self, device: str):
        if device == "cuda":
            import torch

            self.sync, self.now, self.kind = torch.cuda.synchronize, time.perf_counter_ns, "wall"
        else:
            self.sync, self.now, self.kind = (lambda: None), time.thread_time_ns, "thread CPU"
        samples = []
        for _ in range(2001):
            t0 = self.now()
            samples.append(self.now() - t0)
        self.overhead_ns = statistics.median(samples)

    def call_us(self, fn, arg) -> float:
        """One call; its result is dropped after the clock stops (SGLang keeps a match's result
        in the request), the temporaries it made inside (key, params) before."""
        self.sync()
        t0 = self.now()
        result = fn(arg)
        self.sync()
        t1 = self.now()
        del result
        return max(t1 - t0 - self.overhead_ns, 0) / 1000


BLOCK = 8  # calls of one variant in a row (--block)
EAGLE_ONLY = False  # --eagle-only


def interleaved(clock: Clock, fns: dict, args_for: dict, calls: int) -> dict:
    """Median per-call time (us) of each variant; variants alternate in blocks of BLOCK calls
    (1: call i of every variant runs before call i + 1 of any), in an order rotated every block;
    args_for[name](i) makes the argument outside the timing."""
    samples = {name: [] for name in fns}
    names = list(fns)
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for b, i0 in enumerate(range(0, calls, BLOCK)):
            r = b % len(names)  # rotate the order: no variant always follows the same one
            for name in names[r:] + names[:r]:
                fn = fns[name]
                for i in range(i0, min(i0 + BLOCK, calls)):
                    arg = args_for[name](i)
                    samples[name].append(clock.call_us(fn, arg))
    finally:
        if gc_was:
            gc.enable()
    return {name: statistics.median(v) for name, v in samples.items()}


# ------------------------------------------------------------------------------------------------
# the match_prefix table
# ------------------------------------------------------------------------------------------------
def bench_match(orig, fast, device, clock, lengths, calls, variants, seed=0):
    import torch

    from sglang.srt.mem_cache import radix_match
    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams

    from sglang.srt.mem_cache import radix_match_native

    dev = torch.device(device)
    floor_ops = radix_match_native.load()
    rows = []
    for ps, eagle in CONFIGS:
        if EAGLE_ONLY and not eagle:
            continue
        for S in lengths:
            rng = random.Random(seed * 1000003 + S * 7 + ps)
            system, inserts = workload(rng, S)
            mods = {"0.5.8": orig, **{v: EXTRA_MODULES.get(v, fast) for v in variants}}
            caches = {name: build_cache(mod, ps, eagle, dev, inserts,
                                        VARIANT_FLAGS.get(name, {}))
                      for name, mod in mods.items()}

            def matcher(name):
                cache, RK = caches[name], mods[name].RadixKey

                def call(token_ids):
                    return cache.match_prefix(MatchPrefixParams(
                        key=RK(token_ids=token_ids, extra_key=None), req=None, cow_mamba=False))
                return call

            fns = {name: matcher(name) for name in caches}
            turn = [rng.randrange(1000, 150_000) for _ in range(USER_TURN)]
            turn_rng = random.Random(seed + S)

            def new_request(_i):  # a new user turn, fresh ints: never seen by any cache
                t = [turn_rng.randrange(1000, 150_000) for _ in range(USER_TURN)]
                return Request(fresh(system + t)).next_round_ids()

            # results and the matcher that served them, once per variant on a new request
            matched, served = {}, {}
            for name, fn in fns.items():
                radix_match.reset_stats()
                matched[name] = len(fn(new_request(0)).device_indices)
                served[name] = radix_match.last_served()
            assert len(set(matched.values())) == 1, f"results differ: {matched}"
            for name in variants:
                assert served[name] == SERVED[name], (name, served[name])
            cold_fns = {k: f for k, f in fns.items() if k not in NO_CACHE}
            if floor_ops is not None:  # read every query int once, concatenate the match
                r = fns["compiled"](new_request(0))
                values, node = [], r.last_device_node
                while node is not caches["compiled"].root_node:
                    values.append(node.value)
                    node = node.parent
                values.reverse()
                cold_fns["floor"] = lambda q, v=values: (floor_ops.pack(q), torch.cat(v)
                                                         if v else None)
            cold = interleaved(clock, cold_fns, {name: new_request for name in cold_fns}, calls)

            # re-matched: one waiting request per variant, its same ints in a new list each round
            # (rounds 1 and 2 untimed: the re-match cache marks, then remembers; then it serves)
            waiting = {name: Request(fresh(system + turn)) for name in fns}
            for name, fn in fns.items():
                for _ in range(2):
                    assert len(fn(waiting[name].next_round_ids()).device_indices) == matched[name]
                radix_match.reset_stats()
                fn(waiting[name].next_round_ids())
                served[name] = radix_match.last_served()
            for name in variants:
                remembered = matched["0.5.8"] + eagle >= radix_match.rematch_min(SERVED[name])
                want = "rematch" if remembered and name not in NO_CACHE else SERVED[name]
                assert served[name] == want, (name, served[name])
            again = interleaved(clock, fns, {name: (lambda _i, r=waiting[name]: r.next_round_ids())
                                             for name in fns}, calls)
            rows.append(dict(page_size=ps, eagle=eagle, S=S, matched=matched["0.5.8"],
                             cold=cold, rematched=again))
            print(f"  page {ps:2d} eagle {int(eagle)} S {S:5d}: 0.5.8 {cold['0.5.8']:.1f} us, "
                  f"compiled {cold['compiled']:.1f} us cold / {again['compiled']:.1f} us again",
                  file=sys.stderr, flush=True)
            del caches, fns
    return rows


def fmt(us: float) -> str:
    return f"{us:.2f}" if us < 10 else f"{us:.1f}" if us < 1000 else f"{us:.0f}"


def merge_runs(runs: list) -> list:
    """Per cell: each time the median over runs; ``x_range``: (min, max) of 0.5.8 / variant."""
    rows = []
    for cells in zip(*runs):
        row = dict(cells[0])
        for table in ("cold", "rematched"):
            row[table] = {v: statistics.median(c[table][v] for c in cells) for v in cells[0][table]}
            row[f"{table}_range"] = {
                v: (min(c[table]["0.5.8"] / c[table][v] for c in cells),
                    max(c[table]["0.5.8"] / c[table][v] for c in cells))
                for v in cells[0][table]}
        rows.append(row)
    return rows


def _x(r, table, v) -> str:
    x = r[table]["0.5.8"] / r[table][v]
    lo, hi = r.get(f"{table}_range", {}).get(v, (x, x))
    return f"{x:.1f}" if hi - lo < 0.05 else f"{x:.1f} ({lo:.1f}-{hi:.1f})"


def report_match(rows, variants):
    cold_v = [v for v in variants if v not in NO_CACHE]
    again_v = list(variants)
    floor = all("floor" in r["cold"] for r in rows)
    print("\n### Whole match_prefix, cold: a new request (fresh ints) each call\n")
    if floor:
        print("floor: reading every query int once (the helper's pack) plus torch.cat of the "
              "matched values, which any matcher returning 0.5.8's result does; x = 0.5.8 / "
              "floor is the most any matcher can gain.\n")
    print("| page | EAGLE | S (shared) | matched | 0.5.8 us | "
          + " | ".join(f"{v} us | {v} x" for v in cold_v)
          + (" | floor us | floor x |" if floor else " |"))
    print("|---:|---|---:|---:|---:|" + "---:|---:|" * (len(cold_v) + floor))
    for r in rows:
        t = r["cold"]
        cells = [f"{fmt(t[v])} | {_x(r, 'cold', v)}" for v in cold_v + ["floor"] * floor]
        print(f"| {r['page_size']} | {'yes' if r['eagle'] else 'no'} | {r['S']} | "
              f"{r['matched']} | {fmt(t['0.5.8'])} | " + " | ".join(cells) + " |")
    print("\n### Whole match_prefix, re-matched: the same request again, a new list of its ints\n")
    print("| page | EAGLE | S (shared) | 0.5.8 us | "
          + " | ".join(f"{v} us | {v} x" for v in again_v) + " |")
    print("|---:|---|---:|---:|" + "---:|---:|" * len(again_v))
    for r in rows:
        t = r["rematched"]
        cells = [f"{fmt(t[v])} | {_x(r, 'rematched', v)}" for v in again_v]
        print(f"| {r['page_size']} | {'yes' if r['eagle'] else 'no'} | {r['S']} | "
              f"{fmt(t['0.5.8'])} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------------------------------------
# per-token floor: what reading a fresh query costs
# ------------------------------------------------------------------------------------------------
def bench_floor(clock, calls, n=8192):
    import struct

    from sglang.srt.mem_cache import radix_match_native

    ext = radix_match_native.load()
    rng = random.Random(7)
    tree = [rng.randrange(1000, 150_000) for _ in range(n)]
    same = list(tree)
    packed = struct.pack(f"={n}q", *tree)

    def loop(q):
        i = 0
        for k0, k1 in zip(tree, q):
            if k0 != k1:
                break
            i += 1
        return i

    fns = {
        "0.5.8's loop (zip, !=), fresh ints": loop,
        "0.5.8's convert_to_bigram_key": lambda q: [(q[i], q[i + 1]) for i in range(len(q) - 1)],
        "list == (C), fresh ints": lambda q: tree == q,
        "list == (C), the same int objects": lambda q: tree == same,
        "list slice (copy)": lambda q: q[0:n],
        "struct.pack('q')": lambda q: struct.pack(f"={n}q", *q),
    }
    if ext is not None:
        fns["helper first_mismatch vs packed, fresh ints"] = \
            lambda q: ext.first_mismatch(packed, q, 0, n)
        fns["helper same_prefix, the same int objects"] = lambda q: ext.same_prefix(same, tree)
        fns["helper pack, fresh ints"] = lambda q: ext.pack(q)
    queries = [fresh(tree) for _ in range(4)]
    t = interleaved(clock, fns, {k: (lambda i: queries[i % 4]) for k in fns}, calls)
    return [(name, us * 1000 / n) for name, us in t.items()]


def report_floor(rows, n=8192):
    print(f"\n### Per-token cost of reading a query ({n} tokens; ns a token)\n")
    print("| operation | ns / token |")
    print("|---|---:|")
    for name, ns in rows:
        print(f"| {name} | {ns:.2f} |")


# ------------------------------------------------------------------------------------------------
# --only scan: how the compiled walk finds a child (radix_match.scan_max)
# ------------------------------------------------------------------------------------------------
SCAN_CHILDREN = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bench_scan(calls, seed=4):
    """One step of the helper's walk on a node with N children and a query that is none of them,
    finding the child by scanning the dict's keys vs by a lookup of the key it builds. Siblings
    either differ from the first token (random) or share all but the last one (the worst case
    for a scan: every key compared to its end, were it not for the last-token check)."""
    from sglang.srt.mem_cache import radix_match_native

    ext = radix_match_native.load()
    rng = random.Random(seed)
    clock = Clock("cpu")

    class Node:
        pass

    rows = []
    for ps, form in ((1, 1), (16, 0), (16, 1), (64, 0), (64, 1)):
        for alike in (False, True):
            cells = []
            for nchild in SCAN_CHILDREN:
                stem = [rng.randrange(300, 10 ** 6) for _ in range(ps + 1)]
                children = {}
                for _ in range(nchild):
                    ints = list(stem) if alike else [rng.randrange(300, 10 ** 6)
                                                     for _ in range(ps + 1)]
                    ints[ps - 1] = rng.randrange(300, 10 ** 6)
                    ints[ps] = rng.randrange(300, 10 ** 6)
                    if form == 1:
                        pairs = list(zip(ints, ints[1:]))
                        k = pairs[0] if ps == 1 else tuple(pairs[:ps])
                    else:
                        k = ints[0] if ps == 1 else tuple(ints[:ps])
                    children[k] = object()
                node = Node()
                node.children = children
                q = fresh(stem[:ps - 1] + [7, 8, 9])  # absent
                fns = {mode: (lambda _a, sm=sm: ext.walk(node, q, 0, ps, form, ps, 1.0, [], None,
                                                        None, form == 1, sm))
                       for mode, sm in (("scan", 1 << 30), ("lookup", 0))}
                t = interleaved(clock, fns, {k: (lambda i: None) for k in fns}, calls)
                cells.append((nchild, t["scan"], t["lookup"]))
            rows.append((ps, form, alike, cells))
    return rows


def report_scan(rows):
    print("\n### Finding a child: scanning the dict's keys vs a lookup of the built key "
          "(us per walk step)\n")
    print("| page | EAGLE | siblings | " + " | ".join(f"{n} children" for n in SCAN_CHILDREN)
          + " |")
    print("|---:|---|---|" + "---:|" * len(SCAN_CHILDREN))
    for ps, form, alike, cells in rows:
        print(f"| {ps} | {'yes' if form else 'no'} | {'alike' if alike else 'random'} | "
              + " | ".join(f"{a:.2f} / {b:.2f}" for _, a, b in cells) + " |")


# ------------------------------------------------------------------------------------------------
# --only sweep: the pure-Python fallback's thresholds (radix_match_py)
# ------------------------------------------------------------------------------------------------
SWEEP_LENGTHS = (8, 16, 32, 64, 96, 128, 256, 384, 512, 1024, 4096)
NEVER = 1 << 62


def bench_sweep(orig, fast, clock, calls, seed=2):
    """Key compare per overlap length, the pure-Python paths forced on alone vs SGLang's loop:
    whole (the query holds the tree key), diverge (goes on differently from a random position),
    substitute (one random position differs)."""
    from functools import partial

    from sglang.srt.mem_cache import radix_match_py as py

    rows = []
    for ps, eagle in CONFIGS:
        chk = fast._check_extra_key
        paths = {
            "slices": py.NsaPrefixMatcher(ps, eagle, chk, long_min=0, diverge_min=0,
                                          bytes_min=NEVER),
            "packed": py.NsaPrefixMatcher(ps, eagle, chk, long_min=NEVER, diverge_min=NEVER,
                                          bytes_min=1, bytes_diverge_min=1),
        }
        for L in SWEEP_LENGTHS:
            rng = random.Random(seed * 1000003 + L)
            res = {}
            for kind in ("whole", "diverge", "substitute"):
                base = [rng.randrange(1000, 150_000) for _ in range(L + 1 + 16)]
                ints = fresh(base)
                i = rng.randrange(L)
                if kind == "diverge":
                    ints[i:] = [-1 - j for j in range(len(ints) - i)]
                elif kind == "substitute":
                    ints[i] = -1
                tree = base[:L + 1]
                s = list(zip(tree, tree[1:])) if eagle else tree[:L]
                q = list(zip(ints, ints[1:])) if eagle else ints
                k0, k1 = orig.RadixKey(s), orig.RadixKey(q)
                want = (orig._key_match_page_size1(k0, k1) if ps == 1
                        else orig._key_match_paged(k0, k1, ps))
                fns = {"loop": (lambda _a, k0=k0, k1=k1: orig._key_match_page_size1(k0, k1))
                       if ps == 1 else (lambda _a, k0=k0, k1=k1: orig._key_match_paged(k0, k1,
                                                                                      ps))}
                for name, m in paths.items():
                    f0, f1 = fast.RadixKey(s), fast.RadixKey(q)

                    def run(_a, m=m, f0=f0, f1=f1):
                        qi = py.QueryInts(ints, eagle) if eagle else None
                        return m.match_at(f0, f1, q, 0, len(q), qi)
                    assert run(None) == want, (name, ps, eagle, L, kind)
                    fns[name] = run
                res[kind] = interleaved(clock, fns, {k: (lambda i: None) for k in fns}, calls)
            rows.append((ps, eagle, L, res))
    return rows


def report_sweep(rows):
    print("\n### Pure-Python fallback: key compare with each path forced on (x = loop / path)\n")
    print("| page | EAGLE | L | whole: loop us | slices x | packed x | diverge: loop us | "
          "slices x | packed x | substitute: loop us | slices x | packed x |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ps, eagle, L, r in rows:
        cells = []
        for kind in ("whole", "diverge", "substitute"):
            t = r[kind]
            cells += [fmt(t["loop"]), f"{t['loop'] / t['slices']:.2f}",
                      f"{t['loop'] / t['packed']:.2f}"]
        print(f"| {ps} | {'yes' if eagle else 'no'} | {L} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def env_lines(args, tree: Path, clock: Clock) -> list[str]:
    import torch

    from sglang.srt.mem_cache import radix_match

    try:
        import triton

        triton_v = triton.__version__
    except Exception:
        triton_v = "n/a"
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        commit = "?"
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"commit {commit}",
        f"- machine: {model}, {os.cpu_count()} cores; {platform.platform()}; "
        f"load average {os.getloadavg()[0]:.2f}",
        f"- python {platform.python_version()}, torch {torch.__version__}, triton {triton_v}",
        f"- device: {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
        f"- patched tree: {tree}",
        f"- matcher: {radix_match.describe()}",
        f"- original: SGLang 0.5.8's {RADIX_PATH} from {WHEEL.name}, loaded as {PRISTINE_NAME}",
        f"- command: python bench/bench_radix_match.py {' '.join(sys.argv[1:])}".rstrip(),
        f"- times: median of {args.calls} calls each, {clock.kind} time per call, us "
        f"(timer cost {clock.overhead_ns:.0f} ns subtracted), variants alternating every "
        f"{BLOCK} calls" + (f"; median of {args.runs} runs, each x with its range over the runs"
                            if args.runs > 1 else "") + "; x = 0.5.8 / variant",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, help="site-packages with SGLang 0.5.8 patched by "
                    "nsa-fastpath (default: build one in a temp dir)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer calls (smoke run)")
    ap.add_argument("--calls", type=int, default=None, help="timed calls per cell (default 41)")
    ap.add_argument("--lengths", help="comma-separated shared lengths instead of the defaults")
    ap.add_argument("--runs", type=int, default=1,
                    help="repeat the match tables (new trees each time); each time is the median "
                    "over runs, each x followed by its range over runs")
    ap.add_argument("--block", type=int, default=8,
                    help="calls of one variant in a row, variants alternating (default 8; "
                    "1: each call follows another variant's, whose work evicts this one's data "
                    "from the CPU caches)")
    ap.add_argument("--only", choices=("match", "floor", "scan", "sweep"), action="append",
                    help="run only these parts (repeatable; default: match and floor)")
    ap.add_argument("--with-triton", action="store_true",
                    help="the triton column on cpu too (interpreter; a smoke test, not timings)")
    ap.add_argument("--against", type=Path, action="append", default=[],
                    help="another patched radix_cache.py (e.g. an earlier commit's fork, from git "
                    "show), loaded beside the tree's and timed as the variant 'against:<file "
                    "name>' (compiled); repeatable")
    ap.add_argument("--eagle-only", action="store_true", help="only the EAGLE configurations")
    args = ap.parse_args()
    args.calls = args.calls or (5 if args.quick else 41)
    global BLOCK, EAGLE_ONLY
    BLOCK = max(1, args.block)
    EAGLE_ONLY = args.eagle_only
    parts = set(args.only or ("match", "floor"))

    with tempfile.TemporaryDirectory(prefix="nsa-bench-radix-") as tmp:
        tmp = Path(tmp)
        tree = args.tree.resolve() if args.tree else build_tree(tmp)
        orig, fast = import_modules(tree, args.device, tmp)
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device")
        from sglang.srt.mem_cache import radix_match_native

        radix_match_native.load()  # build (if needed) before any timing
        clock = Clock(args.device)
        variants = ["compiled", "compiled, no cache", "python", "python, no cache"]
        if args.device == "cuda" or args.with_triton:
            variants.append("triton")
        for i, path in enumerate(args.against):
            name = f"against:{path.stem}"
            spec = importlib.util.spec_from_file_location(f"nsa_bench_against_{i}", path)
            EXTRA_MODULES[name] = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = EXTRA_MODULES[name]
            spec.loader.exec_module(EXTRA_MODULES[name])
            VARIANT_FLAGS[name], SERVED[name] = {}, "compiled"
            variants.insert(1 + i, name)
        lengths = LENGTHS
        if args.lengths:
            lengths = tuple(int(x) for x in args.lengths.split(","))
        print("## RadixCache prefix matching: SGLang 0.5.8 vs nsa-fastpath\n")
        print("\n".join(env_lines(args, tree, clock)))
        sys.stdout.flush()
        if "match" in parts:
            runs = [bench_match(orig, fast, args.device, clock, lengths, args.calls, variants)
                    for _ in range(args.runs)]
            report_match(merge_runs(runs), variants)
            sys.stdout.flush()
        if "floor" in parts:
            report_floor(bench_floor(clock, args.calls))
            sys.stdout.flush()
        if "scan" in parts:
            report_scan(bench_scan(args.calls))
            sys.stdout.flush()
        if "sweep" in parts:
            report_sweep(bench_sweep(orig, fast, clock, args.calls))


if __name__ == "__main__":
    main()
