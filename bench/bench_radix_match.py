#!/usr/bin/env python3
"""RadixCache prefix matching: SGLang 0.5.8 vs nsa-fastpath, side by side in one process.

    python bench/bench_radix_match.py [--tree SITE] [--device cpu|cuda] [--quick]
                                      [--sweep] [--ablation] [--lengths 1,64,...]

--tree: a site-packages dir holding SGLang 0.5.8 patched by scripts/apply.sh. Default: one is
built in a temp dir (pip install --no-deps --no-index --target of .cache/wheels' wheel, then
scripts/apply.sh apply --target). The patched tree is imported as `sglang`.

"0.5.8" (original) is SGLang 0.5.8's own radix_cache.py, read from the pinned wheel and loaded
under another module name (nsa_bench_pristine_radix_cache): its RadixKey, TreeNode, RadixCache
and _key_match_* functions are 0.5.8's; its imports resolve to the patched tree's modules, which
are byte-identical to 0.5.8 except environ.py (a superset). "fast" is the patched RadixCache with
the default flags. --device cuda puts the caches' values on the GPU, brackets every timing with
torch.cuda.synchronize() and adds the opt-in Triton matcher (SGLANG_RADIX_TRITON_MATCH=1) as a
column (--with-triton does so on cpu too, under the interpreter: a smoke test, not timings).

Tables (markdown); every time is the median over repeats of the mean per call, variants
interleaved, gc off while timing:
1. Whole match_prefix on realistic trees: a system prompt of S tokens shared by 64 branches (user
   turns of 16-256 tokens), split at 1/4, 1/2 and 3/4 by few-shot requests that share only part of
   it, plus unrelated prompts; queries are new requests (the system prompt plus a new user turn)
   whose token ids are fresh Python ints, as the scheduler gets them (unpickled from the
   tokenizer). Page size 1, 16, 64 and EAGLE bigram keys (page 1 and 64).
2. Key compare only, per key length: a tree key of L tokens against a query holding it plus 16
   more (fresh ints): 0.5.8's _key_match_page_size1 / _key_match_paged vs the comparison the
   patched match_prefix walk makes (match_at) and the patched key_match_fn (insert); and the
   query sharing the tree key's int objects (a request matched again after its own insert).
3. Per-token cost of what any matcher must do with a fresh query (read its Python ints).
--sweep: per overlap length, 0.5.8's loop vs each comparison path forced on alone (list slices,
packed ints), for whole matches, diverging keys and a one-token substitution: the thresholds.
--ablation: whole match_prefix with each comparison path alone vs the default.
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
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL = ROOT / ".cache" / "wheels" / "sglang-0.5.8-py3-none-any.whl"
RADIX_PATH = "sglang/srt/mem_cache/radix_cache.py"
PRISTINE_NAME = "nsa_bench_pristine_radix_cache"

MATCH_LENGTHS = (1, 8, 32, 64, 128, 512, 2048, 8192, 32768)
KEY_LENGTHS = (1, 8, 32, 64, 128, 512, 2048, 8192, 32768)
MODES = (  # (label, page_size, bigram)
    ("page 1", 1, False),
    ("paged 16", 16, False),
    ("paged 64", 64, False),
    ("bigram (EAGLE), page 1", 1, True),
    ("bigram (EAGLE), paged 64", 64, True),  # DeepSeek-V3.2 with MTP: page 64, EAGLE keys
)


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
    if not hasattr(fast, "NsaPrefixMatcher"):
        sys.exit(f"{tree} is not patched by nsa-fastpath (run scripts/apply.sh apply --target)")
    src = workdir / "pristine_radix_cache.py"
    with zipfile.ZipFile(WHEEL) as zf:
        src.write_bytes(zf.read(RADIX_PATH))
    spec = importlib.util.spec_from_file_location(PRISTINE_NAME, src)
    orig = importlib.util.module_from_spec(spec)
    sys.modules[PRISTINE_NAME] = orig
    spec.loader.exec_module(orig)
    return orig, fast


class Allocator:
    def __init__(self, device):
        self.device = device

    def free(self, indices):
        pass


def make_cache(mod, page_size: int, bigram: bool, device, triton: bool = False):
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams

    saved = os.environ.get("SGLANG_RADIX_TRITON_MATCH")
    os.environ["SGLANG_RADIX_TRITON_MATCH"] = "1" if triton else "0"
    try:
        return mod.RadixCache(CacheInitParams(
            disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=Allocator(device),
            page_size=page_size, is_eagle=bigram, eviction_policy="lru"))
    finally:
        if saved is None:
            os.environ.pop("SGLANG_RADIX_TRITON_MATCH", None)
        else:
            os.environ["SGLANG_RADIX_TRITON_MATCH"] = saved


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def fresh(tokens: list) -> list:
    """The same token ids as new int objects, as a request's ids arrive from the tokenizer."""
    return pickle.loads(pickle.dumps(tokens))


class Timer:
    def __init__(self, device: str, repeats: int, min_batch_s: float):
        self.cuda = device == "cuda"
        self.repeats = repeats
        self.min_batch_s = min_batch_s
        if self.cuda:
            import torch

            self.sync = torch.cuda.synchronize
        else:
            self.sync = lambda: None

    def per_call(self, fns: dict, args: list) -> dict:
        """Median over repeats of the mean time per call (us); variants interleaved per repeat."""
        inner = {}
        for name, fn in fns.items():  # warm up, and size batches to >= min_batch_s
            for a in args:
                fn(a)
            k = 1
            while True:
                self.sync()
                t0 = time.perf_counter()
                for _ in range(k):
                    for a in args:
                        fn(a)
                self.sync()
                if time.perf_counter() - t0 >= self.min_batch_s or k >= 1 << 16:
                    break
                k *= 2
            inner[name] = k
        samples = {name: [] for name in fns}
        gc_was = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            for _ in range(self.repeats):
                for name, fn in fns.items():
                    k = inner[name]
                    self.sync()
                    t0 = time.perf_counter()
                    for _ in range(k):
                        for a in args:
                            fn(a)
                    self.sync()
                    samples[name].append((time.perf_counter() - t0) / (k * len(args)) * 1e6)
        finally:
            if gc_was:
                gc.enable()
        return {name: statistics.median(v) for name, v in samples.items()}


# ------------------------------------------------------------------------------------------------
# 1. whole match_prefix on realistic trees
# ------------------------------------------------------------------------------------------------
def workload(rng: random.Random, S: int, n_queries: int):
    def rand(n):
        return [rng.randrange(1000, 150_000) for _ in range(n)]

    system = rand(S)
    inserts = []
    for frac in (0.25, 0.5, 0.75):  # few-shot requests sharing part of the system prompt
        cut = int(S * frac)
        if 0 < cut < S:
            inserts.append(system[:cut] + rand(64))
    for _ in range(64):  # branches: conversations under the system prompt
        inserts.append(system + rand(rng.choice((16, 64, 256))))
    for _ in range(16):  # other tenants
        inserts.append(rand(rng.choice((8, 64, 512, 2048))))
    queries = [fresh(system + rand(64)) for _ in range(n_queries)]
    return [fresh(t) for t in inserts], queries


def build_cache(mod, page_size, bigram, device, inserts, triton=False):
    import torch

    from sglang.srt.mem_cache.utils import convert_to_bigram_key

    cache = make_cache(mod, page_size, bigram, device, triton)
    slot = 0
    for tokens in inserts:
        keys = convert_to_bigram_key(tokens) if bigram else tokens
        keys = keys[: len(keys) // page_size * page_size]
        values = torch.arange(slot, slot + len(keys), dtype=torch.int64, device=device)
        slot += len(keys)
        cache.insert(mod.RadixKey(keys, None, is_bigram=bigram), values)
    return cache


def bench_match_prefix(orig, fast, device, timer, lengths, n_queries, triton, seed=0):
    import torch

    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams

    dev = torch.device(device)
    rows = []
    for label, ps, bigram in MODES:
        for S in lengths:
            rng = random.Random(seed * 1000003 + S)
            inserts, queries = workload(rng, S, n_queries)
            variants = {"orig": orig, "fast": fast}
            if triton:
                variants["triton"] = fast
            caches = {name: build_cache(mod, ps, bigram, dev, inserts, triton=(name == "triton"))
                      for name, mod in variants.items()}
            fns, matched = {}, {}
            for name, cache in caches.items():
                mod = variants[name]

                def call(q, cache=cache, RK=mod.RadixKey):
                    return cache.match_prefix(MatchPrefixParams(key=RK(q)))

                fns[name] = call
                matched[name] = [len(call(q).device_indices) for q in queries]
            assert all(m == matched["orig"] for m in matched.values()), "results differ"
            t = timer.per_call(fns, queries)
            rows.append((label, S, statistics.median(matched["orig"]), t))
    return rows


# ------------------------------------------------------------------------------------------------
# 2. key compare only
# ------------------------------------------------------------------------------------------------
def key_pairs(rng, L, bigram, n, same_objects=False):
    """(tree key of L tokens or pairs, query: the same ids plus 16 more, the query's ints), n
    of them; for bigram keys the query's ints are those its pairs are made of."""
    out = []
    for _ in range(n):
        base = [rng.randrange(1000, 150_000) for _ in range(L + 1 if bigram else L)]
        ints = (base if same_objects else fresh(base)) + [rng.randrange(1000, 150_000)
                                                           for _ in range(16)]
        if bigram:
            out.append((list(zip(base, base[1:])), list(zip(ints, ints[1:])), ints))
        else:
            out.append((base, ints, ints))
    return out


def _walk_packed(match_at, QI, key0, key, tokens, n, ints, bigram):
    return match_at(key0, key, tokens, 0, n, QI(ints, bigram))  # a new request: packed here


def walk_calls(fast, matcher, bigram, pairs):
    """Each pair's comparison as RadixCache's match_prefix walk makes it (match_at); where the
    overlap takes the packed path, the query's ints are packed in the call (a new request) and the
    tree key's packed ints are cached on it. Zero-argument calls, as for every variant."""
    RK, b = fast.RadixKey, matcher.bytes_min
    out = []
    for s, q, ints in pairs:
        key0, key = RK(s), RK(q)
        if len(q) >= b and len(s) >= b:  # as the walk: a QueryInts only for long overlaps
            out.append(partial(_walk_packed, matcher.match_at, fast.QueryInts, key0, key, q,
                               len(q), ints, bigram))
        else:
            out.append(partial(matcher.match_at, key0, key, q, 0, len(q), None))
    return out


def orig_calls(orig, ps, pairs):
    """SGLang 0.5.8's own key_match_fn on each pair."""
    out = []
    for s, q, _ in pairs:
        a, b = orig.RadixKey(s), orig.RadixKey(q)
        out.append(partial(orig._key_match_page_size1, a, b) if ps == 1
                   else partial(orig._key_match_paged, a, b, ps))
    return out


def _call(i):
    return lambda p: p[i]()


def bench_key_compare(orig, fast, device, timer, lengths, n_pairs, triton, seed=1):
    import torch

    rows = []
    ops = None
    if triton:
        from sglang.srt.mem_cache.radix_cache_kernels import OptimizedRadixCacheOps

        ops = OptimizedRadixCacheOps(True, torch.device(device))
    for label, ps, bigram in MODES:
        matcher = fast.NsaPrefixMatcher(ps, bigram, fast._check_extra_key)
        for L in lengths:
            rng = random.Random(seed * 1000003 + L)
            pairs = key_pairs(rng, L, bigram, n_pairs)
            c_orig = orig_calls(orig, ps, pairs)
            c_walk = walk_calls(fast, matcher, bigram, pairs)
            keys = [(fast.RadixKey(s), fast.RadixKey(q)) for s, q, _ in pairs]
            c_key = [partial(matcher.key_match, a, b) for a, b in keys]
            want = [c() for c in c_orig]
            assert [c() for c in c_walk] == want and [c() for c in c_key] == want
            cols = [c_orig, c_walk, c_key]
            fns = {"orig": _call(0), "walk": _call(1), "key_match": _call(2)}
            if ops is not None:
                for a, b in keys:  # the seed's tensor cache: tree key and query both cached
                    a.get_tensor(ops.device), b.get_tensor(ops.device)
                cached = [partial(ops.first_mismatch, a, b, 0, min(len(a), len(b)))
                          for a, b in keys]
                assert [c() for c in cached] == [min(len(a), len(b)) for a, b in keys]

                def tri_query(a, b, RK=fast.RadixKey):
                    b = RK(b.token_ids)  # a new request: its tensor is built in the call
                    return ops.first_mismatch(a, b, 0, min(len(a), len(b)))

                cols += [cached, [partial(tri_query, a, b) for a, b in keys]]
                fns["triton, both cached"] = _call(3)
                fns["triton, query built"] = _call(4)
            t = timer.per_call(fns, list(zip(*cols)))
            same = None
            if ps == 1 and not bigram:  # the query holds the tree key's own int objects
                sp = key_pairs(random.Random(L), L, False, n_pairs, same_objects=True)
                skeys = [(fast.RadixKey(s), fast.RadixKey(q)) for s, q, _ in sp]
                same = timer.per_call(
                    {"orig": _call(0), "walk": _call(1), "key_match": _call(2)},
                    list(zip(orig_calls(orig, ps, sp), walk_calls(fast, matcher, False, sp),
                             [partial(matcher.key_match, a, b) for a, b in skeys])))
            rows.append((label, L, t, same))
    return rows


# ------------------------------------------------------------------------------------------------
# 3. per-token floor
# ------------------------------------------------------------------------------------------------
def bench_floor(timer, n=8192):
    """What reading a fresh query costs, per token: the bound on any CPU matcher of such keys."""
    import struct
    from array import array

    import numpy as np
    import torch

    rng = random.Random(7)
    tree = [rng.randrange(1000, 150_000) for _ in range(n)]
    query = fresh(tree)
    same = list(tree)

    def loop(a, b):
        i = 0
        for k0, k1 in zip(a, b):
            if k0 != k1:
                break
            i += 1
        return i

    fns = {
        "0.5.8's loop (zip, !=)": lambda _: loop(tree, query),
        "list == (C), fresh ints": lambda _: tree == query,
        "list == (C), the same int objects": lambda _: tree == same,
        "list slice (copy)": lambda _: query[0:n],
        "struct.pack('q') of the query": lambda _: struct.pack(f"={n}q", *query),
        "array('q', query)": lambda _: array("q", query),
        "numpy.array(query, int64)": lambda _: np.array(query, dtype=np.int64),
        "torch.tensor(query, int64)": lambda _: torch.tensor(query, dtype=torch.int64),
    }
    t = timer.per_call(fns, [None])
    return [(name, us * 1000 / n) for name, us in t.items()]


def report_floor(rows, n=8192):
    print(f"\n### Per-token cost of reading a fresh query ({n} tokens; ns a token)\n")
    print("| operation | ns / token |")
    print("|---|---:|")
    for name, ns in rows:
        print(f"| {name} | {ns:.2f} |")


# ------------------------------------------------------------------------------------------------
# --sweep: threshold measurements
# ------------------------------------------------------------------------------------------------
SWEEP_LENGTHS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096)
NEVER = 1 << 62


def sweep_pairs(rng, L, bigram, n):
    """whole: the query holds the tree key; diverge: from a random position on the query goes on
    differently; substitute: one random position differs (a date in a system prompt)."""
    out = {"whole": key_pairs(rng, L, bigram, n)}
    for kind in ("diverge", "substitute"):
        rows = []
        for s, _, ints in key_pairs(rng, L, bigram, n):
            ints = list(ints)
            i = rng.randrange(L)
            if kind == "diverge":
                ints[i:] = [-1 - j for j in range(len(ints) - i)]
            else:
                ints[i] = -1
            q = list(zip(ints, ints[1:])) if bigram else ints
            rows.append((s, q, ints))
        out[kind] = rows
    return out


def bench_sweep(orig, fast, timer, n_pairs, seed=2):
    """Per overlap length: SGLang's loop vs the list-slice path forced on (the key_match_fn
    path) vs the packed-int path forced on (the match_prefix walk), each alone."""
    rows = []
    sweep_modes = MODES + (("bigram (EAGLE), paged 16", 16, True), ("paged 32", 32, False))
    for label, ps, bigram in sweep_modes:
        slice_m = fast.NsaPrefixMatcher(ps, bigram, fast._check_extra_key, long_min=0,
                                        diverge_min=0, bytes_min=NEVER)
        packed_m = fast.NsaPrefixMatcher(ps, bigram, fast._check_extra_key, long_min=NEVER,
                                         diverge_min=NEVER, bytes_min=1, bytes_diverge_min=1)
        for L in SWEEP_LENGTHS:
            res = {}
            for kind, pairs in sweep_pairs(random.Random(seed * 1000003 + L), L, bigram,
                                           n_pairs).items():
                c_orig = orig_calls(orig, ps, pairs)
                cols = [c_orig, walk_calls(fast, packed_m, bigram, pairs)]
                want = [c() for c in c_orig]
                assert [c() for c in cols[1]] == want
                fns = {"orig": _call(0), "packed": _call(1)}
                if L >= slice_m.long_min:
                    cols.append([partial(slice_m.key_match, fast.RadixKey(s), fast.RadixKey(q))
                                 for s, q, _ in pairs])
                    assert [c() for c in cols[2]] == want
                    fns["slice"] = _call(2)
                res[kind] = timer.per_call(fns, list(zip(*cols)))
            rows.append((label, L, res))
    return rows


# ------------------------------------------------------------------------------------------------
# --ablation: match_prefix with each comparison path alone
# ------------------------------------------------------------------------------------------------
def bench_ablation(orig, fast, timer, lengths, n_queries, seed=0):
    import torch

    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams

    def variants(ps):
        loops = dict(long_min=NEVER, diverge_min=NEVER, bytes_min=NEVER)
        slices = dict(long_min=64 if ps == 1 else 8 * ps, diverge_min=256 if ps == 1 else 16 * ps,
                      bytes_min=NEVER)
        packed = dict(long_min=NEVER, diverge_min=NEVER, bytes_min=max(96, 2 * ps),
                      bytes_diverge_min=max(384, 12 * ps))
        return {"walk + SGLang loops": loops, "walk + list slices": slices,
                "walk + packed ints": packed, "default": {}}

    rows = []
    for label, ps, bigram in MODES:
        for S in lengths:
            rng = random.Random(seed * 1000003 + S)
            inserts, queries = workload(rng, S, n_queries)
            fns = {}
            co = build_cache(orig, ps, bigram, torch.device("cpu"), inserts)
            fns["orig"] = lambda q, c=co: c.match_prefix(MatchPrefixParams(key=orig.RadixKey(q)))
            for name, kw in variants(ps).items():
                cache = build_cache(fast, ps, bigram, torch.device("cpu"), inserts)
                m = fast.NsaPrefixMatcher(ps, bigram, fast._check_extra_key, **kw)
                cache._nsa_matcher = m
                cache.key_match_fn = cache._nsa_key_match_ref = m.key_match
                fns[name] = lambda q, c=cache: c.match_prefix(MatchPrefixParams(
                    key=fast.RadixKey(q)))
            rows.append((label, S, timer.per_call(fns, queries)))
    return rows, list(variants(1))


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def env_lines(args, tree: Path) -> list[str]:
    import torch

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
    lines = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {model}, {os.cpu_count()} cores; {platform.platform()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, triton {triton_v}",
        f"- device: {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
        f"- patched tree: {tree}",
        f"- original: SGLang 0.5.8's {RADIX_PATH} from {WHEEL.name}, loaded as {PRISTINE_NAME}",
        f"- command: python bench/bench_radix_match.py {' '.join(sys.argv[1:])}".rstrip(),
        "- times: median over repeats of the mean per call, us; x = original / variant",
    ]
    return lines


def fmt(us: float) -> str:
    return f"{us:.2f}" if us < 10 else f"{us:.1f}" if us < 1000 else f"{us:.0f}"


def report_match(rows, extra):
    print("\n### Whole match_prefix (new request: system prompt of S tokens + 64-token user turn)\n")
    head = "| keys | S (shared tokens) | matched | 0.5.8 us | fast us | fast x |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if extra:
        head += " triton us | triton x |"
        sep += "---:|---:|"
    print(head)
    print(sep)
    for label, S, matched, t in rows:
        line = (f"| {label} | {S} | {matched:.0f} | {fmt(t['orig'])} | {fmt(t['fast'])} | "
                f"{t['orig'] / t['fast']:.2f} |")
        if extra:
            line += f" {fmt(t['triton'])} | {t['orig'] / t['triton']:.2f} |"
        print(line)


def report_keys(rows, extra):
    print("\n### Key compare only (tree key of L tokens vs a query holding it; fresh int objects)\n")
    print("walk: the comparison match_prefix makes (the query's ints packed in the call, the tree "
          "key's cached); key_match: the key_match_fn that insert and subclasses call.\n")
    head = "| keys | L | 0.5.8 us | walk us | walk x | key_match us | key_match x |"
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if extra:
        head += " triton (both cached) us | x | triton (query built) us | x |"
        sep += "---:|---:|---:|---:|"
    print(head)
    print(sep)
    for label, L, t, _ in rows:
        o = t["orig"]
        line = (f"| {label} | {L} | {fmt(o)} | {fmt(t['walk'])} | {o / t['walk']:.2f} | "
                f"{fmt(t['key_match'])} | {o / t['key_match']:.2f} |")
        if extra:
            a, b = t["triton, both cached"], t["triton, query built"]
            line += f" {fmt(a)} | {o / a:.2f} | {fmt(b)} | {o / b:.2f} |"
        print(line)
    same = [(L, s) for label, L, t, s in rows if s is not None]
    if same:
        print("\n### Key compare, page 1, query sharing the tree key's int objects "
              "(a request matched again after its own insert)\n")
        print("| L | 0.5.8 us | walk us | walk x | key_match us | key_match x |")
        print("|---:|---:|---:|---:|---:|---:|")
        for L, s in same:
            o = s["orig"]
            print(f"| {L} | {fmt(o)} | {fmt(s['walk'])} | {o / s['walk']:.2f} | "
                  f"{fmt(s['key_match'])} | {o / s['key_match']:.2f} |")


def report_sweep(rows):
    print("\n### Threshold sweep: key compare with each path forced on (us; x = loop / path)\n")
    print("loop: SGLang's; slice: list slices (key_match_fn); packed: packed ints (match_prefix "
          "walk, the query packed in the call). whole: the query holds the tree key; diverge: "
          "from a random position on the query differs; substitute: one random position "
          "differs.\n")
    print("| keys | L | whole: loop | slice x | packed x | diverge: loop | slice x | packed x | "
          "substitute: loop | slice x | packed x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, L, r in rows:
        cells = []
        for kind in ("whole", "diverge", "substitute"):
            t = r[kind]
            o = t["orig"]
            sl = f"{o / t['slice']:.2f}" if "slice" in t else "-"
            cells += [fmt(o), sl, f"{o / t['packed']:.2f}"]
        print(f"| {label} | {L} | " + " | ".join(cells) + " |")


def report_ablation(rows, names):
    print("\n### Ablation: whole match_prefix with each comparison path alone (x = 0.5.8 / variant)\n")
    print("| keys | S | 0.5.8 us | " + " | ".join(f"{n} x" for n in names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for label, S, t in rows:
        print(f"| {label} | {S} | {fmt(t['orig'])} | "
              + " | ".join(f"{t['orig'] / t[n]:.2f}" for n in names) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, help="site-packages with SGLang 0.5.8 patched by "
                    "nsa-fastpath (default: build one in a temp dir)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and queries (smoke run)")
    ap.add_argument("--sweep", action="store_true", help="also the threshold sweep")
    ap.add_argument("--ablation", action="store_true",
                    help="also match_prefix with each comparison path alone")
    ap.add_argument("--only", choices=("match", "keys", "floor", "sweep", "ablation"),
                    action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--lengths", help="comma-separated lengths instead of the defaults")
    ap.add_argument("--with-triton", action="store_true",
                    help="the Triton columns on cpu too (interpreter; a smoke test, not timings)")
    args = ap.parse_args()
    parts = set(args.only or (["match", "keys", "floor"] + (["sweep"] if args.sweep else [])
                              + (["ablation"] if args.ablation else [])))

    with tempfile.TemporaryDirectory(prefix="nsa-bench-radix-") as tmp:
        tmp = Path(tmp)
        tree = args.tree.resolve() if args.tree else build_tree(tmp)
        orig, fast = import_modules(tree, args.device, tmp)
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device")
        repeats = args.repeats or (3 if args.quick else 11)
        timer = Timer(args.device, repeats, 0.002 if args.quick else 0.02)
        n = 8 if args.quick else 32
        triton = args.device == "cuda" or args.with_triton
        match_lengths, key_lengths = MATCH_LENGTHS, KEY_LENGTHS
        if args.lengths:
            match_lengths = key_lengths = tuple(int(x) for x in args.lengths.split(","))
        print("## RadixCache prefix matching: SGLang 0.5.8 vs nsa-fastpath\n")
        print("\n".join(env_lines(args, tree)))
        sys.stdout.flush()
        if "match" in parts:
            report_match(bench_match_prefix(orig, fast, args.device, timer, match_lengths, n,
                                            triton), triton)
            sys.stdout.flush()
        if "keys" in parts:
            report_keys(bench_key_compare(orig, fast, args.device, timer, key_lengths, n,
                                          triton), triton)
            sys.stdout.flush()
        if "floor" in parts:
            report_floor(bench_floor(timer))
            sys.stdout.flush()
        if "sweep" in parts:
            report_sweep(bench_sweep(orig, fast, timer, n))
            sys.stdout.flush()
        if "ablation" in parts:
            report_ablation(*bench_ablation(orig, fast, timer, match_lengths, n))


if __name__ == "__main__":
    main()
