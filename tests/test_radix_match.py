"""nsa-fastpath's pure-Python radix comparisons and the seed's Triton kernel, against SGLang 0.5.8.

1. Fuzz (in process, fast): radix_match_py.py's comparisons (the pure-Python matcher, and the
   drop-in key_match_fn of insert and subclasses) against 0.5.8's `_key_match_page_size1` /
   `_key_match_paged` / `_check_extra_key` / `convert_to_bigram_key`, compiled from the pinned
   wheel's own source (so nothing is copied by hand): page sizes 1, 2, 16, 64; int and bigram
   (EAGLE) keys; overlaps 0..40k; equal, prefix, diverging, substituted and unaligned keys;
   default thresholds and every path forced on; the drop-in key_match_fn and the walk's match_at
   (list and packed-int paths, one query buffer across offsets).
2. The seed's Triton kernel under TRITON_INTERPRET=1 on small CPU tensors (and on CUDA, marker
   gpu) against the Python loop, through token_match_fast and OptimizedRadixCacheOps, including
   the walk's query windows (first_mismatch_query).
3. RadixKey views (SGLang 0.5.11 on): the pure-Python walk's comparisons (``Walker._cmps``)
   against each view release's own ``RadixKey.match``, compiled from its pinned wheel's source:
   0.5.12.post1 (list ids; an equal partial last page counts), 0.5.13 and 0.5.14 (``array('q')``
   ids, whole pages; 0.5.14's ``limit``); ``partial_last_page`` tells them apart.

The compiled helper: tests/test_radix_helper.py; the real RadixCache: tests/test_radix_cache.py
and tests/test_parity_radix.py.
"""
from __future__ import annotations

import __future__
import ast
import hashlib
import importlib.util
import os
import pickle
import random
import subprocess
import sys
import zipfile
from array import array
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import pytest
import torch

if not torch.cuda.is_available():  # CPU: Triton's interpreter, set before any @triton.jit
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
WHEEL = ROOT / ".cache" / "wheels" / "sglang-0.5.8-py3-none-any.whl"
MEM_CACHE = ROOT / "overlay" / "sglang" / "srt" / "mem_cache"
NEVER = 1 << 62


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _compile_defs(src: str, names: set, filename: str, ns: dict) -> dict:
    """Exec only the named top-level defs of a source file (its own code, not a copy)."""
    tree = ast.parse(src)
    body = [n for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    assert {n.name for n in body} == names, f"{filename}: missing {names - {n.name for n in body}}"
    code = compile(ast.Module(body=body, type_ignores=[]), filename, "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, ns)
    return ns


def _upstream():
    if not WHEEL.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh")], check=True)
    with zipfile.ZipFile(WHEEL) as zf:
        radix = zf.read("sglang/srt/mem_cache/radix_cache.py").decode()
        utils = zf.read("sglang/srt/mem_cache/utils.py").decode()
    ns = dict(List=List, Optional=Optional, Iterator=Iterator, Union=Union, Tuple=Tuple)
    _compile_defs(radix, {"RadixKey", "_check_extra_key", "_key_match_page_size1",
                          "_key_match_paged"}, "sglang-0.5.8/radix_cache.py", ns)
    _compile_defs(utils, {"convert_to_bigram_key"}, "sglang-0.5.8/utils.py", ns)
    return ns


UP = _upstream()
RM = _load("nsa_fastpath_radix_match", MEM_CACHE / "radix_match.py")
KERNELS = _load("nsa_fastpath_radix_cache_kernels", MEM_CACHE / "radix_cache_kernels.py")
RadixKey = UP["RadixKey"]


def _fork_radix_key():
    """The fork's RadixKey (with get_tensor), from overlay radix_cache.py's own source."""
    src = (MEM_CACHE / "radix_cache.py").read_text()
    ns = dict(List=List, Optional=Optional, Iterator=Iterator, Union=Union, Tuple=Tuple,
              torch=torch, tokens_to_tensor=RM.tokens_to_tensor,
              convert_to_bigram_key_fast=RM.convert_to_bigram_key_fast,
              convert_to_bigram_key=UP["convert_to_bigram_key"])
    return _compile_defs(src, {"RadixKey"}, "overlay/radix_cache.py", ns)["RadixKey"]


def upstream_match(page_size, key0, key1):
    if page_size == 1:
        return UP["_key_match_page_size1"](key0, key1)
    return UP["_key_match_paged"](key0, key1, page_size)


def matchers(page_size, bigram):
    """Default thresholds, and each path forced on alone (list slices / packed ints)."""
    chk = UP["_check_extra_key"]
    return {
        "default": RM.NsaPrefixMatcher(page_size, bigram, chk),
        "slices": RM.NsaPrefixMatcher(page_size, bigram, chk, long_min=0, diverge_min=0,
                                      bytes_min=NEVER),
        "slices-no-probe": RM.NsaPrefixMatcher(page_size, bigram, chk, long_min=0,
                                               diverge_min=NEVER, bytes_min=NEVER),
        "packed": RM.NsaPrefixMatcher(page_size, bigram, chk, long_min=NEVER,
                                      diverge_min=NEVER, bytes_min=1, bytes_diverge_min=1),
        "packed-no-diverge": RM.NsaPrefixMatcher(page_size, bigram, chk, long_min=0,
                                                 diverge_min=0, bytes_min=1,
                                                 bytes_diverge_min=NEVER),
    }


# ------------------------------------------------------------------------------------------------
# key generation
# ------------------------------------------------------------------------------------------------
def _tok(rng, small):
    # Small ints (< 257) are shared objects in CPython: identity shortcuts and chance equalities.
    return rng.randrange(0, 4) if small else rng.randrange(300, 200_000)


def key_pair(rng, length, small=False):
    """Two int lists sharing a prefix, with a random shape; values are fresh int objects."""
    a = [_tok(rng, small) for _ in range(length)]
    shape = rng.randrange(7)
    b = pickle.loads(pickle.dumps(a))
    if shape == 0:  # equal
        pass
    elif shape == 1:  # prefix
        b = b[: rng.randrange(0, length + 1)]
    elif shape == 2:  # longer
        b += [_tok(rng, small) for _ in range(rng.randrange(1, 70))]
    elif shape == 3 and length:  # diverge and go on differently
        i = rng.randrange(length)
        b[i:] = [-1 - j for j in range(rng.randrange(length - i, length - i + 40))]
    elif shape == 4 and length:  # one substitution (rest equal)
        b[rng.randrange(length)] = -7
    elif shape == 5 and length:  # two substitutions, then cut
        for _ in range(2):
            b[rng.randrange(length)] = -9
        b = b[: rng.randrange(0, length + 1)]
    elif shape == 6:  # same prefix objects (a request's own tokens)
        b = a[: rng.randrange(0, length + 1)] + [_tok(rng, small) for _ in range(rng.randrange(3))]
    if rng.random() < 0.5:
        a, b = b, a
    return a, b


def bigrams(ints):
    return UP["convert_to_bigram_key"](ints)


LENGTHS = [0, 1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 95, 127, 128, 129, 130, 191,
           255, 256, 257, 300, 511, 512, 513, 777, 1023, 1024, 1025, 2049, 3000]


def _lengths(rng, n_random):
    out = list(LENGTHS)
    out += [int(2 ** rng.uniform(0, 12)) for _ in range(n_random)]
    return out


# ------------------------------------------------------------------------------------------------
# 1. fuzz against 0.5.8
# ------------------------------------------------------------------------------------------------
@pytest.mark.quick
@pytest.mark.parametrize("bigram", [False, True], ids=["ints", "bigram"])
@pytest.mark.parametrize("page_size", [1, 2, 16, 64])
def test_key_match_fuzz(page_size, bigram):
    rng = random.Random(page_size * 7 + bigram)
    ms = matchers(page_size, bigram)
    n = 0
    for length in _lengths(rng, 250):
        for small in (False, True):
            a, b = key_pair(rng, length, small)
            if bigram:
                a, b = bigrams(a), bigrams(b)
            extra = rng.choice((None, "lora-x"))
            want = upstream_match(page_size, RadixKey(a, extra), RadixKey(b, extra))
            for name, m in ms.items():
                got = m.key_match(RadixKey(a, extra), RadixKey(b, extra))
                assert got == want, (name, page_size, bigram, len(a), len(b), want, got)
            n += 1
    assert n > 150


@pytest.mark.parametrize("bigram", [False, True], ids=["ints", "bigram"])
@pytest.mark.parametrize("page_size", [1, 2, 16, 64])
def test_match_at_fuzz(page_size, bigram):
    """The walk's comparison: tree key vs query[off:n], list and packed paths, one query buffer
    reused across offsets as the walk does (offsets increase, the buffer grows)."""
    rng = random.Random(1000 + page_size * 7 + bigram)
    ms = matchers(page_size, bigram)
    for length in _lengths(rng, 150):
        a, b = key_pair(rng, length, small=rng.random() < 0.3)
        prefix = [_tok(rng, False) for _ in range(rng.randrange(0, 3 * page_size + 5))]
        q_ints = pickle.loads(pickle.dumps(prefix)) + b  # query: something, then b
        off = len(prefix)
        if bigram:
            key0_tokens, q_tokens = bigrams(a), bigrams(q_ints)
            if off >= len(q_tokens):
                continue
        else:
            key0_tokens, q_tokens = a, q_ints
        ends = {len(q_tokens), len(q_tokens) // page_size * page_size}
        ends.add(rng.randrange(off, len(q_tokens) + 1))
        for n in sorted(ends):
            if n < off:
                continue
            want = upstream_match(page_size, RadixKey(key0_tokens), RadixKey(q_tokens[off:n]))
            for name, m in ms.items():
                for q in (None, RM.QueryInts(q_ints, bigram)):
                    if q is not None and off and rng.random() < 0.5:
                        # warm the buffer as earlier nodes of the walk would
                        head = RadixKey(q_tokens[: min(off, n)])
                        m.match_at(head, RadixKey(q_tokens), q_tokens, 0, min(off, n), q)
                    got = m.match_at(RadixKey(key0_tokens), RadixKey(q_tokens), q_tokens, off,
                                     n, q)
                    assert got == want, (name, q is not None, page_size, bigram, len(a),
                                         len(b), off, n, want, got)


@pytest.mark.parametrize("page_size", [1, 16, 64])
def test_long_keys(page_size):
    """Overlaps up to 40k tokens, whole and diverging at far positions, every path."""
    rng = random.Random(page_size)
    for bigram in (False, True):
        ms = matchers(page_size, bigram)
        for length in (4096, 40_000):
            base = [rng.randrange(300, 200_000) for _ in range(length + 1)]
            variants = [list(base), base[: length - 5]]
            for pos in (length // 2, length - 1, 37, 4095):
                v = pickle.loads(pickle.dumps(base))
                v[pos] = -1
                variants.append(v)
            v = pickle.loads(pickle.dumps(base))
            v[length // 3:] = [-2] * (len(v) - length // 3)
            variants.append(v)
            for v in variants:
                a, b = (bigrams(base), bigrams(v)) if bigram else (base, v)
                want = upstream_match(page_size, RadixKey(a), RadixKey(b))
                for name, m in ms.items():
                    assert m.key_match(RadixKey(a), RadixKey(b)) == want, (name, length)
                    q = RM.QueryInts(v, bigram)
                    assert m.match_at(RadixKey(a), RadixKey(b), b, 0, len(b), q) == want, name


@pytest.mark.parametrize("page_size", [2, 16, 64])
def test_paged_partial_page_quirk(page_size):
    """0.5.8's page loop steps past min_len when both keys end in the same equal partial page."""
    chk = UP["_check_extra_key"]
    m_default = RM.NsaPrefixMatcher(page_size, False, chk)
    m_forced = matchers(page_size, False)
    for full_pages in (0, 1, 3, 40):
        for tail in range(1, page_size):
            a = list(range(300, 300 + full_pages * page_size + tail))
            cases = [
                (a, list(a)),  # equal lengths, equal partial page: past min_len
                (a, a + [5]),  # one longer: floor
                (a, a[:-1] + [-1]),  # partial page differs
            ]
            for x, y in cases:
                want = upstream_match(page_size, RadixKey(x), RadixKey(y))
                if x == y:
                    assert want == (full_pages + 1) * page_size > len(x)
                for m in [m_default, *m_forced.values()]:
                    assert m.key_match(RadixKey(x), RadixKey(y)) == want
                    assert m.match_at(RadixKey(x), RadixKey(y), y, 0, len(y),
                                      RM.QueryInts(y, False)) == want


@pytest.mark.parametrize("page_size", [1, 2, 16, 64])
def test_extra_key_mismatch_raises_the_same(page_size):
    for bigram in (False, True):
        for m in matchers(page_size, bigram).values():
            for a, b in (([], []), ([1, 2, 3], [1, 2, 3]), (list(range(5000)), list(range(5000)))):
                if bigram:
                    a, b = bigrams(a), bigrams(b)
                k0, k1 = RadixKey(a, "lora-a"), RadixKey(b, None)
                with pytest.raises(ValueError) as want:
                    upstream_match(page_size, k0, k1)
                with pytest.raises(ValueError) as got:
                    m.key_match(k0, k1)
                assert str(got.value) == str(want.value)
                with pytest.raises(ValueError) as got:
                    m.match_at(k0, k1, b, 0, len(b), RM.QueryInts(list(range(len(b) + 1)), bigram))
                assert str(got.value) == str(want.value)


def test_non_list_tokens_take_sglangs_loop():
    """Tuples / other containers: same result as 0.5.8 (its loop), no slice path."""
    for ps in (1, 16):
        for m in matchers(ps, False).values():
            a = tuple(range(300, 900))
            b = list(range(300, 700)) + [1]
            for x, y in ((a, b), (b, a), (a, a)):
                want = upstream_match(ps, RadixKey(x), RadixKey(y))
                assert m.key_match(RadixKey(x), RadixKey(y)) == want


def test_tokens_that_do_not_pack_fall_back():
    """Ints beyond int64 or non-ints: the packed path gives up and the list path answers."""
    for ps in (1, 16):
        m = matchers(ps, False)["packed"]
        big = [2 ** 70 + i for i in range(200)]
        for a, b in ((big, list(big)), (big, big[:100] + [0] * 100),
                     ([1.5] * 100, [1.5] * 100)):
            want = upstream_match(ps, RadixKey(a), RadixKey(b))
            q = RM.QueryInts(b, False)
            assert m.match_at(RadixKey(a), RadixKey(b), b, 0, len(b), q) == want
            assert m.key_match(RadixKey(a), RadixKey(b)) == want


def test_convert_to_bigram_key_fast_is_the_same():
    up = UP["convert_to_bigram_key"]
    rng = random.Random(5)
    for tokens in ([], [7], [1, 2], list(range(1000)), [rng.randrange(99999) for _ in range(513)],
                   [(1, 2), (2, 3)], (4, 5, 6)):
        got = RM.convert_to_bigram_key_fast(tokens, up)
        want = up(tokens)
        assert got == want and type(got) is type(want)
        if tokens and isinstance(tokens[0], tuple):
            assert got is tokens  # 0.5.8 returns an already-bigram list itself


def test_node_ints_cache_is_exact_and_follows_the_key():
    key = RadixKey(list(range(300, 1300)))
    b = RM.node_ints(key, False)
    assert len(b) == 8 * 1000 and RM.node_ints(key, False) is b
    key.token_ids = list(range(300, 1200))  # reassigned (as maybe_bigram_convert does)
    assert len(RM.node_ints(key, False)) == 8 * 900
    key.token_ids.append(5)  # grew in place
    assert len(RM.node_ints(key, False)) == 8 * 901
    pairs = RadixKey(bigrams(list(range(300, 400))))
    assert len(RM.node_ints(pairs, True)) == 8 * (99 + 1)
    broken = RadixKey([(1, 2), (3, 4)])  # pairs that do not chain: no packed form
    assert RM.node_ints(broken, True) is None
    m = matchers(1, True)["packed"]
    q_ints = [1, 2, 3, 4]
    assert m.match_at(broken, RadixKey(bigrams(q_ints)), bigrams(q_ints), 0, 3,
                      RM.QueryInts(q_ints, True)) == upstream_match(1, broken,
                                                                     RadixKey(bigrams(q_ints)))


# ------------------------------------------------------------------------------------------------
# 2. the seed's Triton kernel
# ------------------------------------------------------------------------------------------------
def _kernel_cases(rng):
    for n in (0, 1, 2, 31, 511, 512, 513, 1023, 1024, 1025, 2500):
        a = torch.randint(300, 200_000, (n,), dtype=torch.int64)
        b = a.clone()
        yield a, b
        if n:
            for pos in (0, n - 1, rng.randrange(n)):
                c = b.clone()
                c[pos] = -1
                yield a, c
            yield a, b[: rng.randrange(n + 1)]


def _loop(a, b):
    i = 0
    for x, y in zip(a.tolist(), b.tolist()):
        if x != y:
            break
        i += 1
    return i


def _check_kernel(device):
    rng = random.Random(3)
    backend = KERNELS.kernel_backend(torch.device(device))[0]
    assert backend in ("triton", "triton-interpreter"), backend
    for a, b in _kernel_cases(rng):
        a, b = a.to(device), b.to(device)
        want = _loop(a.cpu(), b.cpu())
        assert KERNELS.token_match_fast(a, b, min_kernel_len=0) == want  # the kernel itself
        assert KERNELS.token_match_fast(a, b) == want  # seed threshold: Python below 512
        assert KERNELS.token_match_fast(a, b, 0, "torch") == want
    # through the ops, with offsets and bigram keys, on the fork's RadixKey tensor cache
    FRK = _fork_radix_key()
    ops = KERNELS.OptimizedRadixCacheOps(True, device, min_kernel_len=0)
    base = [rng.randrange(300, 200_000) for _ in range(1500)]
    for bigram in (False, True):
        for pos in (None, 0, 700, 1400):
            q = pickle.loads(pickle.dumps(base))
            if pos is not None:
                q[pos] = -1
            k0 = FRK(bigrams(base[100:]) if bigram else base[100:])
            k1 = FRK(bigrams(q) if bigram else q)
            m = min(len(k0), len(k1) - 100)
            want = upstream_match(1, RadixKey(k0.token_ids), RadixKey(k1.token_ids[100:100 + m]))
            assert ops.first_mismatch(k0, k1, 100, m) == want
            t = k0.get_tensor(device)
            assert k0.get_tensor(device) is t  # cached
            assert t.shape[0] == len(k0) and t.untyped_storage().nbytes() == t.numel() * 8
        k = FRK(list(range(10)))
        assert ops.key_match(k, FRK(list(range(5)) + [0])) == 5
    k = FRK(list(range(10)))
    t = k.get_tensor(device)
    k.token_ids = list(range(20))  # reassigned: rebuilt
    assert k.get_tensor(device).numel() == 20 and t.numel() == 10
    # the walk's comparison: a tree key against a window of the query list (ints, EAGLE ints
    # whose pairs are compared, or pairs), fresh int objects
    for pos in (None, 0, 1, 511, 1399):
        q = pickle.loads(pickle.dumps(base))
        if pos is not None:
            q[pos] = -1
        for off in (0, 37):
            for form in ("ints", "chain", "pairs"):
                if form == "ints":
                    k0, qq = FRK(base[off:]), q
                else:
                    k0, qq = FRK(bigrams(base[off:])), (q if form == "chain" else bigrams(q))
                m = min(len(k0), len(bigrams(q)) - off)
                want = upstream_match(1, RadixKey(k0.token_ids),
                                      RadixKey((qq if form != "chain" else bigrams(q))[off:off + m]))
                got = ops.first_mismatch_query(k0, qq, off, m, form == "chain")
                assert got == want, (pos, off, form, got, want)


def test_triton_kernel_interpreter():
    if not KERNELS.triton_interpreted():
        pytest.skip("TRITON_INTERPRET=1 not set before import (run through scripts/test.sh)")
    _check_kernel("cpu")


@pytest.mark.gpu
def test_triton_kernel_cuda():
    if KERNELS.triton_interpreted():
        pytest.skip("TRITON_INTERPRET=1 set: the kernel would run interpreted")
    _check_kernel("cuda")


# ------------------------------------------------------------------------------------------------
# 3. RadixKey views: the walk's pure-Python comparisons against each release's RadixKey.match
# ------------------------------------------------------------------------------------------------
VIEW_RELEASES = ("0.5.12.post1", "0.5.13", "0.5.14")


def _view_radix_key(release: str):
    """The release's own RadixKey class, compiled from its pinned wheel's radix_cache.py."""
    sys.path.insert(0, str(ROOT / "tests" / "harness"))
    import releases

    wheel = releases.wheel(release)
    if not wheel.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release], check=True,
                       stdout=subprocess.DEVNULL)
    with zipfile.ZipFile(wheel) as zf:
        src = zf.read("sglang/srt/mem_cache/radix_cache.py").decode()
    ns = dict(List=List, Optional=Optional, Iterator=Iterator, Union=Union, Tuple=Tuple,
              array=array, torch=torch, hashlib=hashlib)
    return _compile_defs(src, {"RadixKey"}, f"sglang-{release}/radix_cache.py", ns)["RadixKey"]


@pytest.mark.parametrize("release", VIEW_RELEASES)
def test_partial_last_page_probe(release):
    RK = _view_radix_key(release)
    assert RM.partial_last_page(RK) == (release == "0.5.12.post1")


@pytest.mark.parametrize("bigram", [False, True], ids=["ints", "bigram"])
@pytest.mark.parametrize("page_size", [1, 2, 16, 64])
@pytest.mark.parametrize("release", VIEW_RELEASES)
def test_view_comparisons_match_radix_key_match(release, page_size, bigram):
    """Walker's comparison of a tree key with the query's positions [off, n) (the pure-Python
    matcher; the compiled walk's bails land here too) against ``key0.match(key[off:])``, the
    window SGLang's own loop holds: ids of the release's type (arrays from 0.5.13, also queries
    capped by 0.5.14's ``limit``), differing extra keys and mixed id types raise as SGLang does."""
    RK = _view_radix_key(release)
    arrays = release != "0.5.12.post1"
    ids = (lambda t: array("q", t)) if arrays else (lambda t: pickle.loads(pickle.dumps(t)))
    walker = RM.Walker(bigram, page_size, RK._check_compatible, "python", key_class=RK)
    cmp = walker._cmps[RM.CHAIN if bigram else RM.INTS]
    rng = random.Random(VIEW_RELEASES.index(release) * 1000 + page_size * 7 + bigram)
    checked = 0
    for length in _lengths(rng, 200):
        a, b = key_pair(rng, length)
        if len(a) < 1 + bigram:
            continue
        prefix = [_tok(rng, False) for _ in range(page_size * rng.randrange(0, 4))]
        q_ints = prefix + b
        limit = None
        if release == "0.5.14" and rng.random() < 0.4:  # the request's ids, capped
            limit = rng.randrange(len(prefix), len(q_ints) + 1)
        extra = rng.choice((None, "lora-x"))
        key0 = RK(ids(a), extra, is_bigram=bigram).page_aligned(page_size)
        if len(key0) == 0:
            continue
        key = RK(ids(q_ints), extra, is_bigram=bigram) if limit is None else \
            RK(ids(q_ints), extra, is_bigram=bigram, limit=limit)
        n = len(key) // page_size * page_size  # the walk's positions (match_prefix aligns)
        off = len(prefix)
        if off >= n:
            continue
        want = key0.match(key[:n][off:], page_size=page_size)
        got = cmp(key0, key, key.token_ids, off, n)
        assert got == want, (release, page_size, bigram, len(a), len(b), off, n, limit)
        checked += 1
    assert checked > 50, checked
    # SGLang's own errors: differing extra keys; from 0.5.13 ids of two types
    key0, key = RK(ids([5, 6, 7, 8]), "x", is_bigram=bigram), RK(ids([5, 6, 7, 8]), "y",
                                                                 is_bigram=bigram)
    with pytest.raises(ValueError) as want:
        key0.match(key, page_size=page_size)
    with pytest.raises(ValueError) as got:
        cmp(key0, key, key.token_ids, 0, len(key))
    assert str(got.value) == str(want.value)
    if arrays:
        key = RK([5, 6, 7, 8], None, is_bigram=bigram)
        key0 = RK(array("q", [5, 6, 7, 8]), None, is_bigram=bigram)
        with pytest.raises(AssertionError):
            key0.match(key, page_size=page_size)
        with pytest.raises(AssertionError):
            cmp(key0, key, key.token_ids, 0, len(key))

