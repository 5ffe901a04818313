"""The real RadixCache, pristine SGLang vs patched (one subprocess each), on edge cases the
parity suites do not reach, under every matcher; and the patched caches' bounds. Token ids are
the release's own type (lists; ``array('q')`` from 0.5.13: ``releases.token_ids``).

Edge cases, compared exactly with every matcher (compiled, python, compiled without the re-match
cache, triton opt-in) and with every flag off: unaligned inserts hitting the paged partial-page
quirk, non-list and already-bigram queries, key_match_fn with differing extra keys, page size 2,
a disabled cache; an EAGLE query key's token_ids as its caller reads them afterwards (0.5.8
converts them in place; the patched walk converts on first read), also through copy and pickle;
the re-match cache fed a query list changed in place after it was remembered, and a different
query with the same fingerprint (length, extra key, the same objects at its end and middle); a
waiting request keyed as ``Req.init_next_round_input`` keys it (0.5.14: capped by ``limit``).

Bounds, patched: the packed ids cached on RadixKeys sit on tree keys (or on keys a re-match entry
pins) and are exact to their key (8 bytes a token, +8 for EAGLE); the re-match cache stays within
its entry and token limits; everything goes with the nodes when the cache is evicted and cleared.
"""
from __future__ import annotations

import copy
import gc
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness import releases
from harness.radix_build import helper_build_env

ROOT = Path(__file__).resolve().parent.parent
# RadixKey views (SGLang 0.5.11 on): nothing cached on keys, the triton opt-in declines (the
# compiled matcher serves, one WARNING)
VIEW_KEYS = releases.bigram_view_keys(releases.release())
# array('q') ids (0.5.13 on): the compiled walk does not consult the re-match cache there
# (radix_match.NSA_REMATCH_MIN_ARRAY), the pure-Python one does
ARRAY_IDS = releases.array_ids(releases.release())
WORKER_CONFIGS = [(1, False), (2, False), (16, False), (64, False), (1, True), (16, True),
                  (64, True)]
TAGS = {  # patched runs: flags per tag
    "compiled": {},
    "python": {"SGLANG_RADIX_COMPILED_MATCH": "0"},
    "nocache": {"SGLANG_RADIX_REMATCH_CACHE": "0"},
    "triton": {"SGLANG_RADIX_TRITON_MATCH": "1"},
    "off": {"SGLANG_RADIX_FAST_MATCH": "0"},
}
FLAGS = ("SGLANG_RADIX_FAST_MATCH", "SGLANG_RADIX_COMPILED_MATCH", "SGLANG_RADIX_REMATCH_CACHE",
         "SGLANG_RADIX_TRITON_MATCH")


def _match(rc, cache, tokens, extra):
    """A match of ``tokens`` (the container itself: a list or an array)."""
    r = releases.radix_match(cache, rc.RadixKey(tokens, extra))
    return len(r.device_indices), r.device_indices[:3].tolist(), r.last_device_node.id


def _edge_op(rc, cache, rng, toks, extra, eagle, slot, i, log) -> int:
    ids = releases.token_ids  # a new container of the release's id type
    kind = rng.randrange(9)
    if kind == 0:  # unaligned insert, no page alignment (the paged quirk)
        key = releases.bigram_key(rc, ids(toks), extra, eagle)
        vals = torch.arange(slot, slot + len(key), dtype=torch.int64)
        slot += len(key)
        log.append(("ins", i, releases.radix_insert(cache, key, vals)))
    elif kind == 1:  # insert raw ints (in eagle mode insert converts them)
        vals = torch.arange(slot, slot + len(toks), dtype=torch.int64)
        slot += len(toks)
        log.append(("ins-raw", i, releases.radix_insert(cache, rc.RadixKey(ids(toks), extra),
                                                        vals)))
    elif kind == 2:  # tuple token ids
        r = releases.radix_match(cache, rc.RadixKey(tuple(toks), extra))
        log.append(("m-tuple", i, r.device_indices.tolist(), r.last_device_node.id))
    elif kind == 3 and eagle:  # already-bigram query
        key = releases.bigram_key(rc, ids(toks), extra)
        r = releases.radix_match(cache, key)
        log.append(("m-bigram", i, r.device_indices.tolist(), r.last_device_node.id))
    elif kind == 4 and eagle:  # the query key afterwards: copied, pickled, an unknown attribute
        key = rc.RadixKey(ids(toks), extra)
        r = releases.radix_match(cache, key)
        twin = copy.copy(key)
        frozen = pickle.loads(pickle.dumps(key))
        try:
            key.nsa_no_such_attribute
        except AttributeError as e:
            missing = str(e)
        log.append(("m-key", i, len(r.device_indices), twin.token_ids[:3],
                    len(frozen.token_ids), frozen.token_ids[-2:], len(key), missing,
                    hasattr(key, "token_ids"), getattr(key, "nsa_other", "absent")))
    elif kind == 5:  # waiting: the same ints matched again in new lists, then changed in place
        q = ids(toks)
        res = [_match(rc, cache, ids(q), extra) for _ in range(3)]
        res.append(_match(rc, cache, q, extra))
        res.append(_match(rc, cache, q, extra))
        if q:
            q[rng.randrange(len(q))] = rng.randrange(300, 90_000)  # the caller's list changes
        res.append(_match(rc, cache, q, extra))
        log.append(("m-again", i, res))
    elif kind == 6 and len(toks) > 4:  # another query with the same fingerprint
        q = ids(toks)
        res = [_match(rc, cache, ids(q), extra) for _ in range(3)]
        other = ids(pickle.loads(pickle.dumps(list(q))))
        other[-1], other[len(q) >> 1] = q[-1], q[len(q) >> 1]  # same objects there
        other[rng.choice([j for j in range(len(q) - 1) if j != len(q) >> 1])] = -5
        res.append(_match(rc, cache, other, extra))
        res.append(_match(rc, cache, ids(q), extra))
        log.append(("m-collide", i, res))
    elif kind == 7:  # a waiting request keyed as Req.init_next_round_input keys it, 3 rounds
        q = ids(toks)
        res = []
        for _ in range(3):
            r = releases.radix_match(cache, releases.next_round_key(rc, q, extra))
            res.append((len(r.device_indices), r.device_indices[:3].tolist(),
                        r.last_device_node.id))
        log.append(("m-round", i, res))
    else:
        key = rc.RadixKey(ids(toks), extra)
        r = releases.radix_match(cache, key)
        log.append(("m", i, r.device_indices.tolist(), r.last_device_node.id,
                    key.token_ids[:4], len(key.token_ids)))
    if rng.random() < 0.05:
        releases.radix_evict(cache, rng.randrange(1, 3000))
        log.append(("evict", i, cache.evictable_size(), cache.total_size()))
    return slot


def _edge_run(rc, out: dict, tag: str) -> None:
    """Edge cases on SGLang's RadixCache with a counting clock; every result recorded."""
    from types import SimpleNamespace

    from radix_scenarios import CountingClock, RecordingAllocator, tree_shape
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams

    for ps, eagle in WORKER_CONFIGS:
        # node ids and clock restart per config, so every run of it sees the same sequence
        rc.time = SimpleNamespace(monotonic=CountingClock().monotonic, perf_counter=lambda: 0.0)
        rc.TreeNode.counter = 0
        rng = random.Random(ps * 10 + eagle)
        log = []
        alloc = RecordingAllocator()
        cache = rc.RadixCache(CacheInitParams(
            disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=alloc,
            page_size=ps, is_eagle=eagle, eviction_policy="lru"))
        prompts = [[rng.randrange(300, 90_000) for _ in range(L)]
                   for L in (1, 5, ps + 3, 3 * ps + 1, 700, 2600, 9000)]
        slot = 0
        for i in range(200):
            p = rng.choice(prompts)
            cut = rng.randrange(0, len(p) + 1)
            toks = pickle.loads(pickle.dumps(p[:cut])) + [rng.randrange(300, 90_000)
                                                          for _ in range(rng.choice((0, 1, 7)))]
            extra = rng.choice((None, None, "salt"))
            try:  # unaligned paged inserts can trip SGLang's own asserts: same in both trees
                slot = _edge_op(rc, cache, rng, toks, extra, eagle, slot, i, log)
            except Exception as e:
                log.append(("exception", i, type(e).__name__, str(e)))
        # key_match_fn directly (RadixKey.match from 0.5.11), extra keys that differ
        for a, b in ((prompts[3], prompts[3]), ([], [])):
            ka = releases.bigram_key(rc, releases.token_ids(a), "x", eagle)
            kb = releases.bigram_key(rc, releases.token_ids(b), "y", eagle)
            try:
                log.append(("kmf", releases.key_match(cache, ka, kb)))
            except ValueError as e:
                log.append(("kmf-error", str(e)))
        empty = releases.radix_match(cache, rc.RadixKey(releases.token_ids([]), None))
        log.append(("empty", empty.device_indices.tolist(), empty.last_device_node.id))
        out[f"{tag}/{ps}/{eagle}/log"] = log
        out[f"{tag}/{ps}/{eagle}/tree"] = tree_shape(cache)
        out[f"{tag}/{ps}/{eagle}/freed"] = [t.tolist() for t in alloc.freed]
    disabled = rc.RadixCache(CacheInitParams(disable=True, req_to_token_pool=None,
                                             token_to_kv_pool_allocator=RecordingAllocator(),
                                             page_size=1, is_eagle=True))
    key = rc.RadixKey(releases.token_ids([1, 2, 3]))
    r = releases.radix_match(disabled, key)
    out[f"{tag}/disabled"] = (r.device_indices.tolist(), key.token_ids, releases.radix_insert(
        disabled, rc.RadixKey(releases.token_ids([1, 2]))))


def _alias_run(rc, out: dict, tag: str, copied: bool = False) -> None:
    """A caller's token list edited in place after SGLang got it (issue 13, item 6).

    (a) a list that became a tree key (inserted whole: is_bigram pairs for EAGLE), edited before
    any match, after one, after the re-match cache remembered it; 0.5.8's tree follows the edit,
    the patched one keeps what was inserted, as 0.5.8 does for a caller that inserted a copy
    (``copied``). (b) a query's list edited after match_prefix returned, then the key read."""
    from types import SimpleNamespace

    from radix_scenarios import CountingClock, RecordingAllocator, tree_shape
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams

    n = 2048  # the re-match cache remembers walks from 1024 ints (compiled), 64 (python)
    for ps, eagle in ((1, False), (16, False), (1, True), (16, True)):
        rc.time = SimpleNamespace(monotonic=CountingClock().monotonic, perf_counter=lambda: 0.0)
        rc.TreeNode.counter = 0
        rng = random.Random(7 * ps + eagle)
        cache = rc.RadixCache(CacheInitParams(
            disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=RecordingAllocator(),
            page_size=ps, is_eagle=eagle, eviction_policy="lru"))
        log = []
        for slot, (step, matches_before) in enumerate((("before", 0), ("after-match", 1),
                                                       ("after-rematch", 3))):
            t = [rng.randrange(300, 90_000) for _ in range(n)]
            key = releases.bigram_key(rc, releases.token_ids(t), step, eagle)
            keys = key.token_ids  # what the caller edits: its tokens, or its bigram tuples
            if copied:
                key.token_ids = keys[:]
            releases.radix_insert(cache, key, torch.arange(slot * n, slot * n + len(key),
                                                           dtype=torch.int64))
            res = [_match(rc, cache, releases.token_ids(t), step)
                   for _ in range(matches_before)]
            k = n // 2 + 3  # inside a page
            keys[k] = (keys[k][0], -1) if isinstance(keys[k], tuple) else -1
            res += [_match(rc, cache, releases.token_ids(t), step) for _ in range(2)]
            log.append(("tree-key-edited", step, res))
        # (b): the query's own list edited after the call, then its key read
        q = releases.token_ids([rng.randrange(300, 90_000) for _ in range(n)])
        key = rc.RadixKey(q, "b")
        r = releases.radix_match(cache, key)
        q[5], q[-1] = -2, -3
        q.append(-4)
        log.append(("query-edited", len(r.device_indices), list(key.token_ids)))
        out[f"{tag}/{ps}/{eagle}/log"] = log
        out[f"{tag}/{ps}/{eagle}/tree"] = tree_shape(cache)


def _tree_keys(cache):
    ids, tokens, stack = set(), 0, [cache.root_node]
    while stack:
        node = stack.pop()
        ids.add(id(node.key))
        tokens += len(node.key)
        stack.extend(node.children.values())
    return ids, tokens


def _census(rc, allowed: set, eagle: bool):
    """(packed bytes, tokens they cover, tensor bytes) over every live RadixKey; packed ids must
    sit on allowed keys only and be exact to their key, tensors exact and not views."""
    gc.collect()
    packed = tensors = packed_tokens = 0
    for obj in gc.get_objects():
        if not isinstance(obj, rc.RadixKey):
            continue
        d = getattr(obj, "__dict__", {})  # RadixKey has __slots__ from 0.5.11 (nothing cached)
        if d.get("_nsa_ints") is not None and d["_nsa_ints"][2] is not None:
            b = d["_nsa_ints"][2]
            assert id(obj) in allowed, "packed ids cached on a key that is not in the tree"
            assert len(b) == 8 * (len(obj.token_ids) + (1 if eagle else 0))
            packed += len(b)
            packed_tokens += len(obj.token_ids)
        if d.get("_tensor_cache") is not None:
            t = d["_tensor_cache"][3]
            assert id(obj) in allowed, "a tensor cached on a key that is not in the tree"
            assert t.numel() == len(obj.token_ids) * (2 if eagle else 1)
            assert t.untyped_storage().nbytes() == t.numel() * 8  # no view of a bigger buffer
            tensors += t.numel() * 8
    return packed, packed_tokens, tensors


def _pinned_keys(cache) -> set:
    rm = cache._nsa_walker.rematch if cache._nsa_walker is not None else None
    if rm is None:
        return set()
    return {id(key) for e in rm.entries.values() if e is not None for _, _, key in e[1]}


def _memory_run(rc, out: dict, tag: str) -> None:
    """Per-key caches and the re-match cache after a workload with evictions and re-matches."""
    from types import SimpleNamespace

    from radix_scenarios import CountingClock, RecordingAllocator, make_workload
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams

    rc.time = SimpleNamespace(monotonic=CountingClock().monotonic, perf_counter=lambda: 0.0)
    for ps, eagle in ((1, False), (64, False), (1, True), (64, True)):
        rng = random.Random(ps + eagle)
        cache = rc.RadixCache(CacheInitParams(
            disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=RecordingAllocator(),
            page_size=ps, is_eagle=eagle, eviction_policy="lru"))
        rm = cache._nsa_walker.rematch
        # small limits, to see them hold; every walk long enough to remember (array ids too)
        rm.max_entries, rm.max_tokens, rm.min_len = 24, 30_000, 64
        cache._nsa_walker.rematch_min_array = 64
        slot = 0
        requests = make_workload(rng, 150, 4096, eagle)
        for n, (tokens, extra) in enumerate(requests):
            for _ in range(3):  # matched three times, as a waiting request
                releases.radix_match(cache, rc.RadixKey(releases.token_ids(tokens), extra))
            assert len(rm.entries) <= rm.max_entries and rm.tokens <= rm.max_tokens
            assert rm.tokens == sum(len(e[2]) for e in rm.entries.values() if e is not None)
            key = releases.insert_key(rc, tokens, extra, eagle, ps)
            releases.radix_insert(cache, key,
                                  torch.arange(slot, slot + len(key), dtype=torch.int64))
            slot += len(key)
            if cache.evictable_size() > 30_000:
                releases.radix_evict(cache, cache.evictable_size() - 15_000)
        node_keys, tree_tokens = _tree_keys(cache)
        packed, packed_tokens, tensors = _census(rc, node_keys | _pinned_keys(cache), eagle)
        out[f"{tag}/{ps}/{eagle}"] = dict(
            tree_tokens=tree_tokens, packed_bytes=packed, packed_tokens=packed_tokens,
            tensor_bytes=tensors, rematch_hits=rm.hits, rematch_tokens=rm.tokens,
            rematch_entries=len(rm.entries))
        releases.radix_evict(cache, 10 ** 9)  # nothing is locked: every node goes
        assert not cache.root_node.children
        cache.reset()  # and the re-match cache with it
        assert not rm.entries and rm.tokens == 0
        packed, _, tensors = _census(rc, _tree_keys(cache)[0], eagle)
        out[f"{tag}/{ps}/{eagle}/after-evict"] = packed + tensors


def worker(tree: str, out_path: str, patched: bool) -> None:
    rel = releases.tree_release(Path(tree))
    extra = [str(d) for d in releases.standin_dirs(rel)]
    sys.path[:0] = [tree, *map(str, releases.deps_dirs(rel)),
                    str(ROOT / "tests" / "standins" / "cpu"), *extra,
                    str(ROOT / "tests" / "standins"), str(ROOT / "tests" / "harness")]
    import logging

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.levelname, record.getMessage()))

    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.INFO)
    from sglang.srt.mem_cache import radix_cache as rc

    out: dict = {}
    for tag, env in (TAGS if patched else {"pristine": {}}).items():
        saved = {k: os.environ.pop(k, None) for k in FLAGS}
        os.environ.update(env)
        try:
            rm = sys.modules.get("sglang.srt.mem_cache.radix_match")
            if rm is not None:
                rm.reset_stats()
            _edge_run(rc, out, f"edge-{tag}")
            _alias_run(rc, out, f"alias-{tag}")
            if not patched:
                _alias_run(rc, out, "alias-copied", copied=True)
            if patched:
                out[f"stats-{tag}"] = dict(rm.stats)
                if tag in ("compiled", "python", "triton"):
                    _memory_run(rc, out, f"mem-{tag}")
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None)
                if v is not None:
                    os.environ[k] = v
    out["log"] = [r for r in records if "nsa-fastpath" in r[1]]
    with open(out_path, "wb") as f:
        pickle.dump(out, f)


def test_patched_radix_cache_is_ours(pristine_template, patched_template):
    """The patched radix_cache.py is our fork of the release's, beside our mem_cache modules."""
    rel = "sglang/srt/mem_cache/radix_cache.py"
    ours = (patched_template / rel).read_bytes()
    added = sorted(p.name for p in (patched_template / "sglang/srt/mem_cache").iterdir()
                   if not (pristine_template / "sglang/srt/mem_cache" / p.name).exists())
    assert ours != (pristine_template / rel).read_bytes() and b"nsa-fastpath" in ours
    assert {"radix_match.py", "radix_match_ext.cpp", "radix_rematch.py"} <= set(added), added


@pytest.fixture(scope="module")
def worker_results(pristine_template, patched_template, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("radix-cache")
    env = {k: v for k, v in os.environ.items() if k not in FLAGS}
    env.update(helper_build_env(tmp_path_factory), TRITON_INTERPRET="1")
    releases.deps_dirs(releases.release())  # the release's own packages are there (conftest)
    procs = {}
    for name, tree in (("pristine", pristine_template), ("patched", patched_template)):
        out = tmp / f"{name}.pkl"
        procs[name] = (subprocess.Popen(
            [sys.executable, __file__, "--worker", str(tree), str(out), name],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)
    results = {}
    for name, (proc, out) in procs.items():
        text, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{name} worker failed:\n{text[-6000:]}"
        with open(out, "rb") as f:
            results[name] = pickle.load(f)
    return results


@pytest.mark.parametrize("tag", list(TAGS))
def test_edge_cases_match_sglang(worker_results, tag):
    want = {k.split("/", 1)[1]: v for k, v in worker_results["pristine"].items()
            if k.startswith("edge-pristine/")}
    assert want
    got = {k.split("/", 1)[1]: v for k, v in worker_results["patched"].items()
           if k.startswith(f"edge-{tag}/")}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k], f"flags {tag}: {k} differs from SGLang's own"
    logs = [v for k, v in want.items() if k.endswith("/log")]
    for kind in ("kmf-error", "m-again", "m-collide", "m-round", "m-key", "m-bigram", "m-tuple",
                 "exception"):
        assert any(e[0] == kind for log in logs for e in log), f"no {kind} case ran"
    stats = worker_results["patched"][f"stats-{tag}"]
    if tag == "off":
        assert not stats, stats
    else:
        served = {"nocache": "compiled", "triton": "compiled" if VIEW_KEYS else "triton"}.get(
            tag, tag)
        assert stats.get(served, 0) > 300, stats
        if tag == "nocache" or (ARRAY_IDS and served == "compiled"):
            assert "rematch" not in stats, stats
        else:
            assert stats.get("rematch", 0) > 20, stats
        assert stats.get("upstream", 0) > 0  # the tuple queries took 0.5.8's walk


@pytest.mark.parametrize("tag", list(TAGS))
def test_edited_caller_lists(worker_results, tag):
    """Issue 13 item 6: with the fast matcher, a tree key is not the caller's list (0.5.8's
    results for a caller that inserted a copy); every flag off, 0.5.8's aliasing itself. An EAGLE
    query key read after its list was edited holds 0.5.8's pairs (of the list as matched)."""
    pristine = worker_results["pristine"]
    aliased = {k.split("/", 1)[1]: v for k, v in pristine.items() if k.startswith("alias-pristine/")}
    copied = {k.split("/", 1)[1]: v for k, v in pristine.items() if k.startswith("alias-copied/")}
    assert aliased and aliased.keys() == copied.keys()
    for k in aliased:  # the edits change SGLang's tree: the case is live (from 0.5.11 only at
        # page size 1: insert page-aligns a key by slicing it, which copies the caller's ids)
        if k.endswith("/log") and (not VIEW_KEYS or k.startswith("1/")):
            assert [e for e in aliased[k] if e[0] == "tree-key-edited"] != \
                [e for e in copied[k] if e[0] == "tree-key-edited"], k
            assert [e for e in aliased[k] if e[0] == "query-edited"] == \
                [e for e in copied[k] if e[0] == "query-edited"], k
    want = aliased if tag == "off" else copied
    got = {k.split("/", 1)[1]: v for k, v in worker_results["patched"].items()
           if k.startswith(f"alias-{tag}/")}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k], f"flags {tag}: {k} differs from SGLang's own"


def test_caches_are_bounded(worker_results):
    res = worker_results["patched"]
    lines = []
    for tag in ("compiled", "python", "triton"):
        for ps, eagle in ((1, False), (64, False), (1, True), (64, True)):
            r = res[f"mem-{tag}/{ps}/{eagle}"]
            # packed ids: 8 bytes a token (+8 a key for EAGLE), on tree keys or keys a re-match
            # entry pins (at most its remembered tokens)
            assert r["packed_tokens"] <= r["tree_tokens"] + r["rematch_tokens"]
            per_token = r["packed_bytes"] / max(1, r["packed_tokens"])
            assert per_token <= 8 + (8 if eagle else 0)
            assert r["tensor_bytes"] <= (16 if eagle else 8) * r["tree_tokens"]
            assert r["rematch_entries"] <= 24 and r["rematch_tokens"] <= 30_000
            assert r["rematch_hits"] > 0
            assert res[f"mem-{tag}/{ps}/{eagle}/after-evict"] == 0
            if VIEW_KEYS:  # tree keys are compared in place: nothing cached on them
                assert r["packed_bytes"] == r["tensor_bytes"] == 0, r
            lines.append(f"{tag} ps={ps} eagle={eagle}: tree {r['tree_tokens']} tokens, packed "
                         f"{r['packed_bytes']} B on {r['packed_tokens']} tokens "
                         f"({per_token:.2f} B/token), tensors {r['tensor_bytes']} B, re-match "
                         f"{r['rematch_entries']} entries / {r['rematch_tokens']} tokens, "
                         f"{r['rematch_hits']} hits")
        if tag == "compiled" and not VIEW_KEYS:
            assert all(res[f"mem-compiled/{ps}/{e}"]["packed_tokens"] > 0
                       for ps, e in ((1, False), (64, True)))
            assert all(res[f"mem-compiled/{ps}/{e}"]["tensor_bytes"] == 0
                       for ps, e in ((1, False), (64, True)))
    if not VIEW_KEYS:
        assert res["mem-triton/1/False"]["tensor_bytes"] > 0, "triton path never ran"
    print("\n".join(lines))


def test_matcher_is_logged_once_per_configuration(worker_results):
    log = worker_results["patched"]["log"]
    lines = [m for _, m in log]
    assert len(lines) == len(set(lines)), lines
    declined = ("nsa-fastpath: the radix triton matcher compares bigram tuples, which this SGLang's "
                "RadixKey does not build: the compiled matcher serves")
    assert [m for level, m in log if level != "INFO"] == ([declined] if VIEW_KEYS else []), log
    for want in ("nsa-fastpath: radix prefix matcher: compiled (page_size=1, token keys; "
                 "re-match cache on)",
                 "nsa-fastpath: radix prefix matcher: compiled (page_size=64, EAGLE bigram keys; "
                 "re-match cache on)",
                 "nsa-fastpath: radix prefix matcher: python (page_size=16, token keys; "
                 "re-match cache on)",
                 "nsa-fastpath: radix prefix matcher: compiled (page_size=2, token keys; "
                 "re-match cache off)",
                 "nsa-fastpath: radix prefix matcher: upstream (SGLANG_RADIX_FAST_MATCH=0: "
                 "SGLang's own prefix matching)"):
        assert want in lines, (want, lines)
    if not VIEW_KEYS:
        assert any(m.startswith("nsa-fastpath: radix prefix matcher: triton (page_size=1, token "
                                "keys; triton on") for m in lines), lines
    assert not worker_results["pristine"]["log"]


def test_no_compiler_at_server_start(patched_template, tmp_path):
    """A RadixCache made where the helper cannot build: one WARNING, the pure-Python matcher
    serves, with 0.5.8's results (the parity suites check those in full)."""
    code = f"""
import logging, sys
sys.path[:0] = [{str(patched_template)!r},
                *{[str(d) for d in releases.deps_dirs(releases.tree_release(patched_template))]!r},
                {str(ROOT / 'tests' / 'standins' / 'cpu')!r},
                *{[str(d) for d in releases.standin_dirs(releases.tree_release(patched_template))]!r},
                {str(ROOT / 'tests' / 'standins')!r}, {str(ROOT / 'tests' / 'harness')!r}]
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
import torch
import releases
from sglang.srt.mem_cache import radix_match
from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey
from sglang.srt.mem_cache.cache_init_params import CacheInitParams
class A:
    device = torch.device("cpu")
    def free(self, x): pass
c = RadixCache(CacheInitParams(disable=False, req_to_token_pool=None,
                               token_to_kv_pool_allocator=A(), page_size=64, is_eagle=True))
ids = list(range(1000, 1300))
from sglang.srt.mem_cache import radix_cache
releases.radix_insert(c, releases.insert_key(radix_cache, ids, None, True, 64), torch.arange(256))
r = releases.radix_match(c, RadixKey(releases.token_ids(ids)))
print(len(r.device_indices), radix_match.last_served(), radix_match.describe())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_RADIX_",
                                                                    "NSA_FASTPATH_"))}
    env.update(NSA_FASTPATH_BUILD_DIR=str(tmp_path), CXX=str(tmp_path / "no-such-c++"),
               TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    n, served, describe = r.stdout.strip().split(" ", 2)
    assert (n, served) == ("256", "python"), r.stdout
    assert describe.startswith("python (pure-Python packed matcher: C++ helper failed: ")
    warnings = [l for l in r.stderr.splitlines() if l.startswith("WARNING nsa-fastpath")]
    assert len(warnings) == 1 and "the pure-Python packed matcher takes over" in warnings[0]
    assert ("INFO nsa-fastpath: radix prefix matcher: python (page_size=64, EAGLE bigram keys; "
            "re-match cache on)") in r.stderr


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    worker(sys.argv[2], sys.argv[3], sys.argv[4] == "patched")
