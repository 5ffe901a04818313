"""The compiled radix match helper (overlay/.../radix_match_ext.cpp) and its build.

1. Its functions, built this session (tests/harness/radix_build.py), against Python and
   SGLang 0.5.8's semantics on fresh, small, negative, non-compact, int64-edge, too-big and
   non-int tokens, and its argument checks.
2. Its walk against SGLang 0.5.8's own ``_match_prefix_helper`` (pristine tree, a subprocess)
   on trees built by 0.5.8's insert: page 1/16/64, EAGLE pairs and chains, extra keys of
   several types, children dicts small enough to scan and large enough to look up, siblings
   sharing all but their last token, odd tokens (floats, bools, big ints); and over RadixKey
   views against 0.5.12.post1's own loop (list ids) and 0.5.14's (``array('q')`` ids, keys
   capped by ``limit``, arrays of another typecode).
3. The build: one build for racing processes (the file lock), a stale torch lock left by a killed
   build, no compiler (a WARNING, the pure-Python matcher), the ``--build`` command, and
   ``describe()`` for each state without building or importing torch.
"""
from __future__ import annotations

import json
import os
import pickle
import random
from array import array
import struct
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from harness.radix_build import NATIVE, ROOT, helper_build_env, helper_module

BIG = 1 << 63


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    return helper_module(tmp_path_factory)


def _ref_first_mismatch(tree: list, q: list, off: int, count: int) -> int:
    for i in range(count):
        if tree[i] != q[off + i]:
            return i
    return count


ODD_INTS = [0, 1, -1, 255, 256, 257, -5, -6, (1 << 30) - 1, 1 << 30, -(1 << 30), (1 << 31) + 7,
            (1 << 62), BIG - 1, -BIG, True, False]


def _tokens(rng, n, odd=False):
    out = []
    for _ in range(n):
        if odd and rng.random() < 0.3:
            out.append(rng.choice(ODD_INTS))
        else:
            out.append(rng.randrange(-(1 << 40), 1 << 40) if odd else rng.randrange(300, 10 ** 6))
    return pickle.loads(pickle.dumps(out))  # fresh int objects (bools stay bools)


# ------------------------------------------------------------------------------------------------
# 1. the functions
# ------------------------------------------------------------------------------------------------
def test_first_mismatch_fuzz(ext):
    rng = random.Random(1)
    for trial in range(3000):
        n = rng.choice((0, 1, 2, 15, 16, 17, 33, rng.randrange(200), 1000))
        odd = trial % 3 == 0
        tree = _tokens(rng, n, odd)
        q = _tokens(rng, rng.randrange(4), odd) + pickle.loads(pickle.dumps(tree))
        off = len(q) - n
        q += _tokens(rng, rng.randrange(3), odd)
        if n and rng.random() < 0.7:
            q[off + rng.randrange(n)] = rng.choice(ODD_INTS + [rng.randrange(10 ** 6)])
        count = rng.randrange(n + 1)
        packed = struct.pack(f"={n}q", *tree)
        assert ext.pack(tree) == packed
        assert ext.first_mismatch(packed, q, off, count) == _ref_first_mismatch(tree, q, off,
                                                                                count)


def test_odd_tokens(ext):
    tree = [5, 6, 7]
    packed = ext.pack(tree)
    assert ext.first_mismatch(packed, [5, 6, BIG], 0, 3) == 2  # beyond int64: differs
    assert ext.first_mismatch(packed, [5, 6, 7 + (1 << 64)], 0, 3) == 2
    assert ext.first_mismatch(ext.pack([1, 0]), [True, False], 0, 2) == 2  # True == 1
    assert ext.pack([1, BIG]) is None and ext.pack([1.0]) is None and ext.pack((1,)) is None

    class MyInt(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    for bad in (5.0, "5", None, MyInt(5), [5]):
        with pytest.raises(TypeError, match="position 1"):
            ext.first_mismatch(packed, [5, bad, 7], 0, 3)
    with pytest.raises(TypeError, match="position 2"):
        ext.first_mismatch_pairs(ext.pack_pairs([(1, 2), (2, 3)]), [0, (1, 2), [2, 3]], 1, 2)


def test_argument_checks(ext):
    packed = ext.pack([1, 2, 3])
    for args, err in (((packed, [1, 2], 0, 3), IndexError), ((packed, [1, 2, 3, 4], 2, 3),
                                                              IndexError),
                      ((packed[:8], [1, 2, 3], 0, 2), IndexError), ((packed, [1, 2, 3], -1, 1),
                                                                    ValueError),
                      ((bytearray(packed), [1, 2, 3], 0, 1), TypeError),
                      ((packed, (1, 2, 3), 0, 1), TypeError), ((packed, [1]), TypeError)):
        with pytest.raises(err):
            ext.first_mismatch(*args)
    with pytest.raises(TypeError):
        ext.same_prefix([1], (1,))
    with pytest.raises(TypeError):
        ext.walk(None, [], 0, 0)


def test_pairs(ext):
    rng = random.Random(2)
    for trial in range(1500):
        ints = _tokens(rng, rng.randrange(1, 150), odd=trial % 4 == 0)
        pairs = list(zip(ints, ints[1:]))
        chain = ext.pack_pairs(pairs)
        if pairs:
            assert chain == ext.pack(ints) == struct.pack(f"={len(ints)}q", *ints)
        else:
            assert chain is None
        q_ints = pickle.loads(pickle.dumps(ints)) + _tokens(rng, rng.randrange(3))
        if len(q_ints) > 2 and rng.random() < 0.6:
            q_ints[rng.randrange(len(q_ints))] = rng.choice(ODD_INTS)
        q = list(zip(q_ints, q_ints[1:]))
        count = rng.randrange(min(len(pairs), len(q)) + 1)
        if chain is not None:
            want = _ref_first_mismatch(pairs, q, 0, count)
            assert ext.first_mismatch_pairs(chain, q, 0, count) == want
            # the same through the chain ints (the EAGLE query form): pair i <=> ints i, i + 1
            j = ext.first_mismatch(chain, q_ints, 0, count + 1) if count else 0
            assert (count if j > count else max(j - 1, 0)) == want
    for broken in ([(1, 2), (3, 4)], [(1, 2, 3)], [[1, 2]], [(1, 2), (2, BIG)], [(1.0, 2)]):
        assert ext.pack_pairs(broken) is None


def test_same_prefix(ext):
    a = pickle.loads(pickle.dumps(list(range(1000, 3000))))
    same = list(a)
    fresh = pickle.loads(pickle.dumps(a))
    assert ext.same_prefix(a, same) and ext.same_prefix(a, fresh) and ext.same_prefix(a[:7], a)
    assert ext.same_prefix([], []) and not ext.same_prefix(a, a[:-1])
    for i in (0, 1, 999, 1999):
        other = list(fresh)
        other[i] = -other[i]
        assert not ext.same_prefix(a, other)
    odd = [BIG + 1, 1.5]
    assert ext.same_prefix(odd, pickle.loads(pickle.dumps(odd))) is False  # equal, not ints
    assert ext.same_prefix(odd, list(odd))  # the same objects


def test_same_prefix_array_ids(ext):
    """Two array('q')s (SGLang 0.5.13's ids): their int64 values, any length, any position."""
    rng = random.Random(5)
    for n in (0, 1, 63, 64, 65, 128, 1000, 4097):
        a = array("q", [rng.randrange(-BIG, BIG) for _ in range(n)])
        q = a + array("q", [7, 8])
        assert ext.same_prefix(a, q) and ext.same_prefix(a, array("q", a))
        assert ext.same_prefix(a[: n // 2], q) and not ext.same_prefix(q, a)
        for i in {0, n // 2, n - 1} if n else ():
            other = array("q", q)
            other[i] ^= 1
            assert not ext.same_prefix(a, other), (n, i)
    for stored, ids in ((array("q", [1]), [1]), ([1], array("q", [1])),
                        (array("i", [1]), array("i", [1])), (array("q", [1]), array("l", [1])),
                        (array("q", [1]), (1,))):
        with pytest.raises(TypeError):
            ext.same_prefix(stored, ids)


def test_walk_argument_checks_array_ids(ext):
    """An array('q') query only with view keys; another typecode or container is refused
    (radix_match.Walker hands those to SGLang before calling the helper)."""
    root = _Node(_Key(array("q")), [])
    q = array("q", [1, 2, 3])
    assert ext.walk(root, q, 0, 3, 0, 1, 1.0, [], None, None, 3, 4)[:3] == (root, 0, ext.DONE)
    assert ext.walk(root, q, 0, 2, 1, 1, 1.0, [], None, None, 2, 4)[:3] == (root, 0, ext.DONE)
    for bad_q, keys in ((array("i", [1, 2, 3]), 3), (q, 0), (q, 1), ((1, 2, 3), 3)):
        with pytest.raises(TypeError):
            ext.walk(root, bad_q, 0, 3, 0, 1, 1.0, [], None, None, keys, 4)
    with pytest.raises(IndexError):
        ext.walk(root, q, 0, 3, 1, 1, 1.0, [], None, None, 3, 4)  # 3 pairs need 4 ints


class _Node:
    def __init__(self, key, value):
        self.key, self.value, self.children, self.last_access_time = key, value, {}, 0.0


class _Key:
    def __init__(self, token_ids):
        self.token_ids, self.extra_key = token_ids, None


def _path(rng, n_children=3):
    """root -> a -> b, each with siblings; steps as the walk records them."""
    root = _Node(_Key([]), [])
    ints = [rng.randrange(300, 10 ** 6) for _ in range(40)]
    a, b = _Node(_Key(ints[:25]), "va"), _Node(_Key(ints[25:]), "vb")
    for parent, child in ((root, a), (a, b)):
        parent.children[child.key.token_ids[0]] = child
        for _ in range(n_children - 1):
            sib = _Node(_Key([rng.randrange(10 ** 6, 2 * 10 ** 6)]), "vs")
            parent.children[sib.key.token_ids[0]] = sib
    steps = ((ints[0], a, a.key), (ints[25], b, b.key))
    return root, a, b, steps, ints


@pytest.mark.parametrize("n_children", [3, 300])  # scanned, looked up
def test_replay_checks_everything_before_changing_anything(ext, n_children):
    """A re-match hit (radix_rematch): content and every step checked first; on any failure
    nothing is touched (no clock read, no access time, no value)."""
    rng = random.Random(n_children)
    calls = []

    def clock():
        calls.append(1)
        return 42.0

    def attempt(root, steps, stored, q):
        value = []
        t = ext.replay(root, steps, stored, q, clock, value, 8)
        return t, value

    root, a, b, steps, ints = _path(rng, n_children)
    stored = list(ints)
    q = pickle.loads(pickle.dumps(ints)) + [5, 6]  # equal values, other objects: still valid
    assert attempt(root, steps, stored, q) == (42.0, ["va", "vb"]) and len(calls) == 1
    assert root.last_access_time == a.last_access_time == b.last_access_time == 42.0

    def broken(change):
        root, a, b, steps, ints = _path(rng, n_children)
        stored, q = list(ints), list(ints)
        change(root, a, b, stored, q)
        calls.clear()
        assert attempt(root, steps, stored, q) == (None, [])
        assert not calls and root.last_access_time == a.last_access_time == b.last_access_time == 0

    broken(lambda r, a, b, s, q: q.__setitem__(30, -1))  # content differs at the end
    broken(lambda r, a, b, s, q: q.__setitem__(0, q[0] + 1))  # ... at the start
    broken(lambda r, a, b, s, q: q.pop())  # the query is shorter than what was remembered
    broken(lambda r, a, b, s, q: q.__setitem__(3, float(q[3])))  # equal value, not an int
    broken(lambda r, a, b, s, q: r.children.pop(a.key.token_ids[0]))  # evicted
    broken(lambda r, a, b, s, q: a.children.pop(b.key.token_ids[0]))
    broken(lambda r, a, b, s, q: setattr(b, "key", _Key(list(b.key.token_ids))))  # re-keyed
    broken(lambda r, a, b, s, q: r.children.__setitem__(a.key.token_ids[0], _Node(a.key, "x")))


def test_replay_array_ids(ext):
    """The same for array('q') ids (SGLang 0.5.13): the remembered values against the query's."""
    rng = random.Random(9)
    root, a, b, steps, ints = _path(rng)
    stored = array("q", ints)

    def attempt(q):
        value = []
        return ext.replay(root, steps, stored, q, lambda: 7.0, value, 8), value

    assert attempt(array("q", ints + [5])) == (7.0, ["va", "vb"])
    for i in (0, 20, 39):
        q = array("q", ints)
        q[i] += 1
        assert attempt(q) == (None, [])
    assert attempt(array("q", ints[:-1])) == (None, [])
    with pytest.raises(TypeError):
        attempt(list(ints))  # remembered as an array, asked with a list


# ------------------------------------------------------------------------------------------------
# 2. the walk against 0.5.8's _match_prefix_helper (pristine tree, in a subprocess)
# ------------------------------------------------------------------------------------------------
def _walk_worker(tree: str, build_dir: str, out: str) -> None:
    sys.path[:0] = [tree, str(ROOT / "tests" / "standins" / "cpu"),
                    str(ROOT / "tests" / "standins"), str(ROOT / "tests")]
    os.environ["NSA_FASTPATH_BUILD_DIR"] = build_dir
    import torch

    from harness.radix_build import load_native
    from sglang.srt.mem_cache import radix_cache as rc
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.utils import convert_to_bigram_key

    ext = load_native().load(allow_build=False)
    assert ext is not None
    INTS, CHAIN, PAIRS = 0, 1, 2
    checked = {"done": 0, "split": 0, "bail": 0, "scan": 0, "lookup": 0}

    class Alloc:
        device = torch.device("cpu")

        def free(self, x):
            pass

    rng = random.Random(11)
    extras = [None, "lora-a", "lora-b", 7, ("x", 1)]
    for ps in (1, 16, 64):
        for eagle in (False, True):
            cache = rc.RadixCache(CacheInitParams(
                disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=Alloc(),
                page_size=ps, is_eagle=eagle, eviction_policy="lru"))
            stems = [[rng.randrange(300, 10 ** 6) for _ in range(rng.randrange(1, 4 * ps + 200))]
                     for _ in range(6)]
            odd = [1.0, True, BIG, 2 ** 70, -3]
            seqs = []
            for i in range(160):
                s = list(rng.choice(stems))
                cut = rng.randrange(len(s) + 1)
                s = s[:cut] + [rng.randrange(300, 10 ** 6) for _ in range(rng.randrange(ps + 3))]
                if i % 11 == 0 and s:  # siblings alike but for the last token of a page
                    s[-1] = rng.randrange(300, 10 ** 6)
                if i % 17 == 0 and s:
                    s[rng.randrange(len(s))] = rng.choice(odd)
                if len(s) < 2:
                    s += [5, 6]
                seqs.append((s, rng.choice(extras)))
            slot = 0
            for s, extra in seqs:
                keys = convert_to_bigram_key(s) if eagle else s
                keys = keys[: len(keys) // ps * ps]
                cache.insert(rc.RadixKey(keys, extra, is_bigram=eagle),
                             torch.arange(slot, slot + len(keys)))
                slot += len(keys)
            for s, extra in seqs + [(list(s[:-1]) + [9], e) for s, e in seqs[:40]]:
                q = pickle.loads(pickle.dumps(s))
                for form in ((CHAIN, PAIRS) if eagle else (INTS,)):
                    qq = q if form != PAIRS else convert_to_bigram_key(q)
                    n = (len(q) - 1 if form == CHAIN else len(qq)) // ps * ps
                    if n == 0:
                        continue
                    for scan in (0, 1 << 30):
                        value = []
                        node, off, outcome, p, ck = ext.walk(cache.root_node, qq, 0, n, form,
                                                             ps, -1.0, value, [], extra, eagle,
                                                             scan)
                        checked["scan" if scan else "lookup"] += 1
                        key = rc.RadixKey(convert_to_bigram_key(q) if eagle else list(q), extra)
                        key = key[:n]
                        # 0.5.8's loop, without splitting: the nodes it matches whole, and where
                        # it stops
                        want_nodes, cur, k = [], cache.root_node, key
                        stop = ("done", cur, 0)
                        while len(k) and cache.get_child_key_fn(k) in cur.children:
                            child = cur.children[cache.get_child_key_fn(k)]
                            plen = cache.key_match_fn(child.key, k)
                            if plen < len(child.key):
                                stop = ("split", child, plen)
                                break
                            want_nodes.append(child)
                            cur, k = child, k[plen:]
                            stop = ("done", cur, 0)
                        got_values = [v.tolist() for v in value]
                        want_values = [c.value.tolist() for c in want_nodes]
                        if outcome == ext.BAIL:
                            checked["bail"] += 1
                            # stopped early, at a node 0.5.8 passes through, with what it has
                            assert got_values == want_values[: len(got_values)]
                            continue
                        assert got_values == want_values, (ps, eagle, form, scan)
                        name = "done" if outcome == ext.DONE else "split"
                        checked[name] += 1
                        assert (name, node, p) == stop, (ps, eagle, form, scan, outcome)
    with open(out, "w") as f:
        json.dump(checked, f)


def test_walk_matches_sglang_loop(pristine_template, tmp_path_factory, tmp_path):
    env = dict(os.environ, **helper_build_env(tmp_path_factory))
    out = tmp_path / "walk.json"
    proc = subprocess.run([sys.executable, __file__, "--walk-worker", str(pristine_template),
                           env["NSA_FASTPATH_BUILD_DIR"], str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    checked = json.loads(out.read_text())
    print(checked)
    assert checked["split"] > 100 and checked["done"] > 100 and checked["bail"] > 5, checked


# RadixKey views (SGLang 0.5.11 on): the walk's view key kinds. 0.5.12.post1: list ids, keys=2
# (RadixKey.match counts an equal partial last page); 0.5.14: array('q') ids, keys=3 (whole
# pages), keys capped by `limit`.
VIEW_RELEASES = {"0.5.12.post1": 2, "0.5.14": 3}


def _view_walk_worker(tree: str, build_dir: str, out: str, release: str) -> None:
    """The walk over RadixKey views (tree keys' ids compared in place; EAGLE keys their raw
    ints) against the release's own _match_prefix_helper loop, odd tokens included: for list
    ids floats, bools, big ints, a str; for array ids int64 edges and tree keys held in arrays
    of another typecode (SGLang compares their values; the helper leaves them to it)."""
    sys.path.insert(0, str(ROOT / "tests" / "harness"))
    import releases

    sys.path[:0] = [tree, *map(str, releases.deps_dirs(release)),
                    str(ROOT / "tests" / "standins" / "cpu"), str(ROOT / "tests" / "standins"),
                    str(ROOT / "tests")]
    os.environ["NSA_FASTPATH_BUILD_DIR"] = build_dir
    import torch

    from harness.radix_build import load_native
    from sglang.srt.mem_cache import radix_cache as rc
    from sglang.srt.mem_cache.base_prefix_cache import InsertParams
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams

    ext = load_native().load(allow_build=False)
    assert ext is not None
    INTS, CHAIN, VIEW = 0, 1, VIEW_RELEASES[release]
    arrays = releases.array_ids(release)
    checked = {"done": 0, "split": 0, "bail": 0}

    class Alloc:
        device = torch.device("cpu")

        def free(self, x):
            pass

    rng = random.Random(12)
    extras = [None, "lora-a", 7, ("x", 1)]
    for ps in (1, 16, 64):
        for eagle in (False, True):
            cache = rc.RadixCache(CacheInitParams(
                disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=Alloc(),
                page_size=ps, is_eagle=eagle, eviction_policy="lru"))
            stems = [[rng.randrange(300, 10 ** 6) for _ in range(rng.randrange(1, 4 * ps + 200))]
                     for _ in range(6)]
            odd = [BIG - 1, -BIG, -3, 0] if arrays else [1.0, True, BIG, 2 ** 70, -3, "t"]
            seqs = []
            for i in range(160):
                s = list(rng.choice(stems))
                cut = rng.randrange(len(s) + 1)
                s = s[:cut] + [rng.randrange(300, 10 ** 6) for _ in range(rng.randrange(ps + 3))]
                if i % 17 == 0 and s:
                    s[rng.randrange(len(s))] = rng.choice(odd)
                if len(s) < 2:
                    s += [5, 6]
                seqs.append((s, rng.choice(extras)))

            def ids(s, i=0):
                if not arrays:
                    return pickle.loads(pickle.dumps(s))
                # a tree key now and then in an array('l') (int64, another typecode)
                return array("l" if i % 13 == 5 else "q", s)

            slot = 0
            for i, (s, extra) in enumerate(seqs):
                key = rc.RadixKey(ids(s, i), extra, is_bigram=eagle).page_aligned(ps)
                cache.insert(InsertParams(key=key, value=torch.arange(slot, slot + len(key))))
                slot += len(key)
            for i, (s, extra) in enumerate(seqs + [(list(s[:-1]) + [9], e) for s, e in seqs[:40]]):
                if arrays and i % 3 == 1:  # 0.5.14's Req: its own ids, capped by limit
                    key = rc.RadixKey(ids(s + [4, 5, 6]), extra, is_bigram=eagle, limit=len(s))
                else:
                    key = rc.RadixKey(ids(s), extra, is_bigram=eagle)
                key = key.page_aligned(ps)
                n = len(key)
                if n == 0:
                    continue
                for scan in (0, 1 << 30):
                    value = []
                    node, off, outcome, p, ck = ext.walk(
                        cache.root_node, key.token_ids, 0, n, CHAIN if eagle else INTS, ps,
                        -1.0, value, [], extra, VIEW, scan)
                    # 0.5.12.post1's loop, without splitting
                    want_nodes, cur, k = [], cache.root_node, key
                    stop = ("done", cur, 0)
                    while len(k) and k.child_key(ps) in cur.children:
                        child = cur.children[k.child_key(ps)]
                        plen = child.key.match(k, page_size=ps)
                        if plen < len(child.key):
                            stop = ("split", child, plen)
                            break
                        want_nodes.append(child)
                        cur, k = child, k[plen:]
                        stop = ("done", cur, 0)
                    got_values = [v.tolist() for v in value]
                    want_values = [c.value.tolist() for c in want_nodes]
                    if outcome == ext.BAIL:
                        checked["bail"] += 1
                        assert got_values == want_values[: len(got_values)]
                        continue
                    assert got_values == want_values, (ps, eagle, scan)
                    name = "done" if outcome == ext.DONE else "split"
                    checked[name] += 1
                    assert (name, node, p) == stop, (ps, eagle, scan, outcome)
    with open(out, "w") as f:
        json.dump(checked, f)


@pytest.mark.parametrize("release", list(VIEW_RELEASES))
def test_walk_over_radix_key_views_matches_sglang_loop(tmp_path_factory, tmp_path, release):
    """The same on that release's own tree, whatever release the session tests."""
    site = tmp_path / "site"
    wheel = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release],
                           check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["bash", str(ROOT / "scripts" / "release_deps.sh"), release], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target", str(site), wheel],
                   check=True)
    env = dict(os.environ, **helper_build_env(tmp_path_factory))
    out = tmp_path / "walk.json"
    proc = subprocess.run([sys.executable, __file__, "--view-walk-worker", str(site),
                           env["NSA_FASTPATH_BUILD_DIR"], str(out), release],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    checked = json.loads(out.read_text())
    print(checked)
    assert checked["split"] > 100 and checked["done"] > 100 and checked["bail"] > 5, checked


# ------------------------------------------------------------------------------------------------
# 3. build and describe()
# ------------------------------------------------------------------------------------------------
def _py(code: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("SGLANG_RADIX_", "NSA_FASTPATH_"))}
    full.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=timeout)


LOAD_NATIVE = f"""
import importlib.util, logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
spec = importlib.util.spec_from_file_location("native", {str(NATIVE)!r})
native = importlib.util.module_from_spec(spec); spec.loader.exec_module(native)
"""


def test_racing_processes_build_once(tmp_path):
    code = LOAD_NATIVE + "m = native.load(allow_build=True); print('LOADED', m.__file__)"
    env = {"NSA_FASTPATH_BUILD_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, **env)) for _ in range(3)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(o.count("building the radix prefix-match helper") for o in outs) == 1, outs
    assert len({o.split("LOADED")[1].split()[0] for o in outs}) == 1
    assert len(list(tmp_path.rglob("nsa_radix_match_ext.so"))) == 2  # build/ and the final one


def test_stale_torch_lock_does_not_hang(tmp_path):
    env = {"NSA_FASTPATH_BUILD_DIR": str(tmp_path)}
    where = _py(LOAD_NATIVE + "print(native.so_path())", env).stdout.strip()
    stale = Path(where).parent / "build" / "lock"  # what a build killed mid-way leaves
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    r = _py(LOAD_NATIVE + "assert native.load(allow_build=True) is not None", env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_build_is_not_broken_by_what_the_caller_imported(tmp_path):
    """A server process may have imported the standard library's distutils before the first
    RadixCache is made; setuptools (which torch's build imports) then refuses to load. The build
    runs in a child process, so it doesn't care, and the caller never imports setuptools."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]) / "distutils" / "__init__.py"
    if not stdlib.exists():
        pytest.skip(f"this Python ({sys.version.split()[0]}) has no distutils in its stdlib")
    code = LOAD_NATIVE + f"""
spec = importlib.util.spec_from_file_location("distutils", {str(stdlib)!r},
                                              submodule_search_locations=[{str(stdlib.parent)!r}])
sys.modules["distutils"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(sys.modules["distutils"])
m = native.load(allow_build=True)
print(m is not None, native.state()[0], "setuptools" in sys.modules)
"""
    r = _py(code, {"NSA_FASTPATH_BUILD_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["True", "loaded", "False"], (r.stdout, r.stderr[-3000:])


def test_no_compiler_falls_back_with_a_warning(tmp_path):
    env = {"NSA_FASTPATH_BUILD_DIR": str(tmp_path), "CXX": str(tmp_path / "no-such-c++")}
    r = _py(LOAD_NATIVE + "print(native.load(allow_build=True), native.state()[0])", env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "failed"]
    assert "WARNING nsa-fastpath: radix prefix-match helper unavailable, the pure-Python " \
           "packed matcher takes over" in r.stderr
    assert not list(tmp_path.rglob("*.so"))


def test_build_command(patched_template, tmp_path):
    env = {"NSA_FASTPATH_BUILD_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(patched_template), str(ROOT / "tests" / "standins")])}
    cmd = "import runpy; runpy.run_module('sglang.srt.mem_cache.radix_match', run_name='__main__')"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_RADIX_",
                                                                    "NSA_FASTPATH_"))}
    r = subprocess.run([sys.executable, "-c", cmd, "--build"], env=dict(full, **env),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.stdout.startswith("compiled (C++ helper loaded from " + str(tmp_path)), r.stdout
    assert "building the radix prefix-match helper" in r.stderr
    r = subprocess.run([sys.executable, "-c", cmd, "--build"], env=dict(full, **env),
                       capture_output=True, text=True, timeout=600)  # again: loads, no build
    assert r.returncode == 0 and "building" not in r.stderr, r.stderr


DESCRIBE = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("nsa_radix_match", {path!r})
rm = importlib.util.module_from_spec(spec); spec.loader.exec_module(rm)
print(rm.describe())
print("torch" in sys.modules, "sglang" in sys.modules, sorted(os.listdir(os.environ["NSA_FASTPATH_BUILD_DIR"])))
"""


@pytest.mark.parametrize("case", ["built", "buildable", "no-jit", "no-compiler", "compiled-off",
                                  "flags-off", "triton-and-no-cache"])
def test_describe(case, tmp_path, tmp_path_factory, patched_template):
    empty = tmp_path / "build"
    empty.mkdir()
    env = {"NSA_FASTPATH_BUILD_DIR": str(empty)}
    if case == "built":
        env = helper_build_env(tmp_path_factory)
    elif case == "no-jit":
        env["NSA_FASTPATH_RADIX_JIT"] = "0"
    elif case == "no-compiler":
        env["CXX"] = str(tmp_path / "no-such-c++")
    elif case == "compiled-off":
        env["SGLANG_RADIX_COMPILED_MATCH"] = "0"
    elif case == "flags-off":
        env["SGLANG_RADIX_FAST_MATCH"] = "0"
    elif case == "triton-and-no-cache":
        env.update(SGLANG_RADIX_TRITON_MATCH="1", SGLANG_RADIX_REMATCH_CACHE="false")
    before = sorted(os.listdir(env["NSA_FASTPATH_BUILD_DIR"]))
    # radix_match.py as installed: its flags come from the environ.py beside it (per release)
    match_py = patched_template / "sglang" / "srt" / "mem_cache" / "radix_match.py"
    r = _py(DESCRIBE.format(path=str(match_py)), env, timeout=60)
    assert r.returncode == 0, r.stderr
    line, imported = r.stdout.splitlines()
    assert imported == f"False False {before}", "describe() imported torch/sglang or built"
    want = {
        "built": "compiled (C++ helper built: ",
        "buildable": "compiled (C++ helper not built yet: builds at the first RadixCache into ",
        "no-jit": "python (pure-Python packed matcher: C++ helper unbuildable: not built (",
        "no-compiler": "python (pure-Python packed matcher: C++ helper unbuildable: no C++ "
                       "compiler",
        "compiled-off": "python (pure-Python packed matcher: SGLANG_RADIX_COMPILED_MATCH=0); "
                        "re-match cache on",
        "flags-off": "upstream (SGLANG_RADIX_FAST_MATCH=0: SGLang's own prefix matching)",
        "triton-and-no-cache": "compiled (C++ helper not built yet",
    }[case]
    assert line.startswith(want), line
    if case == "triton-and-no-cache":
        assert line.endswith("; re-match cache off; triton opt-in on (from 512 tokens)"), line
    elif case != "flags-off":
        assert line.endswith("; re-match cache on"), line


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--view-walk-worker":
    _view_walk_worker(*sys.argv[2:])

if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--walk-worker":
    _walk_worker(sys.argv[2], sys.argv[3], sys.argv[4])
