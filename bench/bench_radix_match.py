#!/usr/bin/env python3
"""RadixCache prefix matching: SGLang 0.5.8 vs nsa-fastpath, side by side in one process.

    python bench/bench_radix_match.py [--tree SITE] [--device cpu|cuda] [--quick] [--sweep]

--tree: a site-packages dir holding SGLang 0.5.8 patched by scripts/apply.sh. Default: one is
built in a temp dir (pip install --no-deps --no-index --target of .cache/wheels' wheel, then
scripts/apply.sh apply --target). The patched tree is imported as `sglang`.

"original" is SGLang 0.5.8's own radix_cache.py, read from the pinned wheel and loaded under
another module name (nsa_bench_pristine_radix_cache): its RadixKey, TreeNode, RadixCache and
_key_match_* functions are 0.5.8's; its imports resolve to the patched tree's modules, which are
byte-identical to 0.5.8 except environ.py (a superset). "fast" is the patched RadixCache with
the default flags. With --device cuda the cache's values live on the GPU, timings are bracketed
by torch.cuda.synchronize(), and a third column runs the opt-in Triton matcher
(SGLANG_RADIX_TRITON_MATCH=1).

Tables (markdown), every number the median over repeats of the mean per call:
1. whole match_prefix on realistic trees: a system prompt of S tokens shared by 64 branches
   (user turns of 16-256 tokens), split at 1/4, 1/2 and 3/4 by few-shot requests that share only
   part of it, plus unrelated prompts; queries are new requests (the system prompt plus a new
   user turn) whose token ids are fresh Python ints, as the scheduler gets them from the
   tokenizer (pickled through ZMQ). Page size 1, 16, 64 and EAGLE bigram keys.
2. key compare only, per key length: a tree key of L tokens against a query holding it plus 16
   more tokens (fresh ints): SGLang's _key_match_page_size1 / _key_match_paged vs the patched
   key_match_fn, for page 1, paged 16/64 and bigram keys; and the query sharing the tree key's
   int objects (a request matched again after its own insert).
--sweep adds the threshold measurements: SGLang's loop vs the slice path forced on, per overlap
length, for whole matches and for a difference at a random position.
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
from types import SimpleNamespace

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


def bench_match_prefix(orig, fast, device, timer, lengths, n_queries, seed=0):
    import torch

    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams

    dev = torch.device(device)
    rows = []
    for label, ps, bigram in MODES:
        for S in lengths:
            rng = random.Random(seed * 1000003 + S)
            inserts, queries = workload(rng, S, n_queries)
            variants = {"orig": orig, "fast": fast}
            if device == "cuda":
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
    """(tree key of L tokens or pairs, query: the same ids plus 16 more), n of them."""
    out = []
    for _ in range(n):
        base = [rng.randrange(1000, 150_000) for _ in range(L + 1 if bigram else L)]
        query = (base if same_objects else fresh(base)) + [rng.randrange(1000, 150_000)
                                                            for _ in range(16)]
        if bigram:
            base, query = list(zip(base, base[1:])), list(zip(query, query[1:]))
        out.append((base, query))
    return out


def bench_key_compare(orig, fast, device, timer, lengths, n_pairs, seed=1):
    import torch

    rows = []
    ops = None
    if device == "cuda":
        from sglang.srt.mem_cache.radix_cache_kernels import OptimizedRadixCacheOps

        ops = OptimizedRadixCacheOps(True, torch.device("cuda"))
    for label, ps, bigram in MODES:
        ref = orig._key_match_page_size1 if ps == 1 else (
            lambda a, b, ps=ps: orig._key_match_paged(a, b, ps))
        new = fast.NsaPrefixMatcher(ps, bigram, fast._check_extra_key).key_match
        for L in lengths:
            rng = random.Random(seed * 1000003 + L)
            pairs = key_pairs(rng, L, bigram, n_pairs)
            a_orig = [(orig.RadixKey(s), orig.RadixKey(q)) for s, q in pairs]
            a_fast = [(fast.RadixKey(s), fast.RadixKey(q)) for s, q in pairs]
            want = [ref(a, b) for a, b in a_orig]
            assert [new(a, b) for a, b in a_fast] == want
            fns = {"orig": lambda p: ref(*p[0]), "fast": lambda p: new(*p[1])}
            args = list(zip(a_orig, a_fast))
            if ops is not None:
                for a, b in a_fast:  # the seed's tensor cache: tree key and query both cached
                    a.get_tensor(ops.device), b.get_tensor(ops.device)
                assert [ops.first_mismatch(a, b, 0, min(len(a), len(b))) for a, b in a_fast] == [
                    min(len(a), len(b)) for a, b in a_fast]

                def tri_cached(p):
                    a, b = p[1]
                    return ops.first_mismatch(a, b, 0, min(len(a), len(b)))

                def tri_query(p, RK=fast.RadixKey):
                    a, b = p[1]
                    b = RK(b.token_ids)  # a new request: its tensor is built in the call
                    return ops.first_mismatch(a, b, 0, min(len(a), len(b)))

                fns["triton, both cached"] = tri_cached
                fns["triton, query built"] = tri_query
            t = timer.per_call(fns, args)
            same = None
            if ps == 1 and not bigram:  # the query holds the tree key's own int objects
                sp = key_pairs(random.Random(L), L, False, n_pairs, same_objects=True)
                so = [(orig.RadixKey(s), orig.RadixKey(q)) for s, q in sp]
                sf = [(fast.RadixKey(s), fast.RadixKey(q)) for s, q in sp]
                same = timer.per_call({"orig": lambda p: ref(*p[0]),
                                       "fast": lambda p: new(*p[1])}, list(zip(so, sf)))
            rows.append((label, L, t, same))
    return rows


# ------------------------------------------------------------------------------------------------
# --sweep: threshold measurements
# ------------------------------------------------------------------------------------------------
SWEEP_LENGTHS = (8, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024)


def bench_sweep(orig, fast, timer, n_pairs, seed=2):
    """SGLang's loop vs the slice path forced on (long_min at its floor), per overlap length."""
    rows = []
    sweep_modes = MODES + (("bigram (EAGLE), paged 16", 16, True),)
    for label, ps, bigram in sweep_modes:
        ref = orig._key_match_page_size1 if ps == 1 else (
            lambda a, b, ps=ps: orig._key_match_paged(a, b, ps))
        forced = fast.NsaPrefixMatcher(ps, bigram, fast._check_extra_key, long_min=0)
        for L in SWEEP_LENGTHS:
            if L < forced.long_min:
                continue
            rng = random.Random(seed * 1000003 + L)
            whole = key_pairs(rng, L, bigram, n_pairs)
            diverge = []
            for s, q in key_pairs(rng, L, bigram, n_pairs):
                q = list(q)
                i = rng.randrange(L)
                q[i] = (-1, -1) if bigram else -1
                diverge.append((s, q))
            res = {}
            for kind, pairs in (("whole", whole), ("diverge", diverge)):
                a_orig = [(orig.RadixKey(s), orig.RadixKey(q)) for s, q in pairs]
                a_fast = [(fast.RadixKey(s), fast.RadixKey(q)) for s, q in pairs]
                assert [ref(a, b) for a, b in a_orig] == [forced.key_match(a, b) for a, b in a_fast]
                t = timer.per_call({"orig": lambda p: ref(*p[0]),
                                    "slice": lambda p: forced.key_match(*p[1])},
                                   list(zip(a_orig, a_fast)))
                res[kind] = t
            rows.append((label, L, res))
    return rows


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


def report_match(rows, device):
    extra = device == "cuda"
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


def report_keys(rows, device):
    extra = device == "cuda"
    print("\n### Key compare only (tree key of L tokens vs a query holding it; fresh int objects)\n")
    head = "| keys | L | 0.5.8 us | fast us | fast x |"
    sep = "|---|---:|---:|---:|---:|"
    if extra:
        head += " triton (both cached) us | x | triton (query built) us | x |"
        sep += "---:|---:|---:|---:|"
    print(head)
    print(sep)
    for label, L, t, _ in rows:
        line = f"| {label} | {L} | {fmt(t['orig'])} | {fmt(t['fast'])} | {t['orig'] / t['fast']:.2f} |"
        if extra:
            a, b = t["triton, both cached"], t["triton, query built"]
            line += f" {fmt(a)} | {t['orig'] / a:.2f} | {fmt(b)} | {t['orig'] / b:.2f} |"
        print(line)
    same = [(L, s) for label, L, t, s in rows if s is not None]
    if same:
        print("\n### Key compare, page 1, query sharing the tree key's int objects "
              "(a request matched again after its own insert)\n")
        print("| L | 0.5.8 us | fast us | fast x |")
        print("|---:|---:|---:|---:|")
        for L, s in same:
            print(f"| {L} | {fmt(s['orig'])} | {fmt(s['fast'])} | {s['orig'] / s['fast']:.2f} |")


def report_sweep(rows):
    print("\n### Threshold sweep: SGLang's loop vs the slice path forced on (key compare, us)\n")
    print("| keys | overlap L | whole: loop | whole: slice | x | diverge: loop | diverge: slice | x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, L, r in rows:
        w, d = r["whole"], r["diverge"]
        print(f"| {label} | {L} | {fmt(w['orig'])} | {fmt(w['slice'])} | "
              f"{w['orig'] / w['slice']:.2f} | {fmt(d['orig'])} | {fmt(d['slice'])} | "
              f"{d['orig'] / d['slice']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, help="site-packages with SGLang 0.5.8 patched by "
                    "nsa-fastpath (default: build one in a temp dir)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and queries (smoke run)")
    ap.add_argument("--sweep", action="store_true", help="also the threshold sweep")
    ap.add_argument("--only", choices=("match", "keys", "sweep"), action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    parts = set(args.only or (["match", "keys"] + (["sweep"] if args.sweep else [])))

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
        print("## RadixCache prefix matching: SGLang 0.5.8 vs nsa-fastpath\n")
        print("\n".join(env_lines(args, tree)))
        sys.stdout.flush()
        if "match" in parts:
            report_match(bench_match_prefix(orig, fast, args.device, timer, MATCH_LENGTHS, n),
                         args.device)
            sys.stdout.flush()
        if "keys" in parts:
            report_keys(bench_key_compare(orig, fast, args.device, timer, KEY_LENGTHS, n),
                        args.device)
            sys.stdout.flush()
        if "sweep" in parts:
            report_sweep(bench_sweep(orig, fast, timer, n))


if __name__ == "__main__":
    main()
