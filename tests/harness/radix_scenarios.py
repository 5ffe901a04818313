"""RadixCache scenarios: SGLang's own RadixCache on randomized serving-like workloads.

``workload``: requests share system-prompt prefixes of 1 to 32k tokens, then diverge. Each
request does what the scheduler does: match_prefix, lock the matched node, insert its full key,
unlock; the cache is evicted under a token budget.

``rematch``: waiting requests matched again and again while inserts split their paths,
evictions remove them, locks, resets and a growing request change the tree under them (the
re-match cache's validation).

``scheduler``: SGLang's own scheduling code makes the calls. Requests (real ``Req`` objects, ids
fresh ints as from the tokenizer) wait in a queue; every round ``SchedulePolicy("lpm")
.calc_priority`` (odd rounds) matches every waiting request, and ``Req.init_next_round_input``
matches the ones the round looks at, so a request that keeps waiting is matched again with a new
list of its same ints; scheduled requests are locked, get KV slots in a real ``ReqToTokenPool``,
``cache_unfinished_req`` after prefill (EAGLE: a bigram-key match), decode tokens, then
``cache_finished_req``; the cache is evicted under a budget.

Every result (matched lengths and indices, last-node identity, the query key's token_ids as a
caller sees them afterwards, insert return values, lock deltas, sizes, freed indices) and the
final tree shape are recorded. Which nsa-fastpath matcher served is recorded under ``_meta/``
(not compared; the tests assert it).

Imported only inside a runner process whose sys.path starts with the SGLang tree under test.
"""
from __future__ import annotations

import hashlib
import pickle
import random
import sys
from types import SimpleNamespace

import torch

import releases


class CountingClock:
    """Deterministic stand-in for time.monotonic/perf_counter inside radix_cache only.

    LRU eviction orders nodes by last_access_time; a wall clock can tie or not from run to run,
    which would make two identical runs evict differently.
    """

    def __init__(self):
        self.t = 0

    def monotonic(self):
        self.t += 1
        return float(self.t)

    perf_counter = monotonic


class RecordingAllocator:
    device = torch.device("cpu")

    def __init__(self):
        self.freed: list[torch.Tensor] = []

    def free(self, indices: torch.Tensor):
        if len(indices):
            self.freed.append(indices.clone())


def tree_shape(cache) -> list:
    """Pre-order walk, children in key order: (depth, child key, node key, value, lock_ref)."""
    rows = []
    stack = [(cache.root_node, 0, None)]
    while stack:
        node, depth, ckey = stack.pop()
        rows.append((depth, repr(ckey), repr(node.key.extra_key), list(node.key.token_ids),
                     None if node.value is None else list(map(int, node.value)), node.lock_ref))
        for k in sorted(node.children, key=repr, reverse=True):
            stack.append((node.children[k], depth + 1, k))
    return rows


def make_workload(rng: random.Random, n_requests: int, max_prefix: int, bigram: bool):
    """System prompts with log-uniform lengths in [1, max_prefix], each shared by many requests."""
    n_prompts = max(4, n_requests // 25)
    prompts = []
    for _ in range(n_prompts):
        length = int(round(2 ** rng.uniform(0, max_prefix.bit_length() - 1)))
        prompts.append([rng.randrange(1, 50_000) for _ in range(max(1, min(length, max_prefix)))])
    requests = []
    for _ in range(n_requests):
        p = rng.choice(prompts)
        cut = len(p) if rng.random() < 0.7 else rng.randrange(0, len(p) + 1)  # partial reuse
        suffix = [rng.randrange(1, 50_000) for _ in range(rng.choice((0, 1, 3, 17, 64, 200)))]
        tokens = p[:cut] + suffix
        if not tokens:
            tokens = [rng.randrange(1, 50_000)]
        if bigram and len(tokens) < 2:
            tokens.append(rng.randrange(1, 50_000))
        extra = rng.choice((None, None, None, "lora-a", "salt-b"))
        requests.append((tokens, extra))
    return requests


def run_workload(out: dict, prefix: str, seed: int, page_size: int, bigram: bool,
                 n_requests: int, max_prefix: int, budget_tokens: int) -> None:
    from sglang.srt.mem_cache import radix_cache as rc
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams

    rc.time = SimpleNamespace(monotonic=CountingClock().monotonic,
                              perf_counter=lambda: 0.0)
    rc.TreeNode.counter = 0  # node ids as a fresh process's, whatever ran before in this one
    rng = random.Random(seed)
    allocator = RecordingAllocator()
    cache = rc.RadixCache(
        CacheInitParams(disable=False, req_to_token_pool=None,
                        token_to_kv_pool_allocator=allocator, page_size=page_size,
                        is_eagle=bigram, eviction_policy="lru")
    )
    next_slot = 0
    locked = []  # nodes held by "running" requests, released later in random order
    log = []
    for i, (tokens, extra) in enumerate(make_workload(rng, n_requests, max_prefix, bigram)):
        m = releases.radix_match(cache, rc.RadixKey(releases.token_ids(tokens), extra))
        node = m.last_device_node
        log.append(("match", i, len(m.device_indices), node.id, len(node.key)))
        out[f"{prefix}/match{i}.indices"] = m.device_indices.clone()
        log.append(("inc", i, releases.lock_delta(cache.inc_lock_ref(node)),
                    cache.evictable_size(), cache.protected_size()))
        locked.append(node)

        # Insert the whole request as cache_finished_req does: bigram keys for EAGLE, page-aligned,
        # its KV slots fresh indices.
        key = releases.insert_key(rc, tokens, extra, bigram, page_size)
        values = torch.arange(next_slot, next_slot + len(key), dtype=torch.int64)
        next_slot += len(key)
        inserted = releases.radix_insert(cache, key, values)
        log.append(("insert", i, inserted, cache.evictable_size(), cache.protected_size()))

        if len(locked) > 8 or rng.random() < 0.3:
            victim = locked.pop(rng.randrange(len(locked)))
            log.append(("dec", i, releases.lock_delta(cache.dec_lock_ref(victim)),
                        cache.evictable_size(), cache.protected_size()))
        if cache.evictable_size() > budget_tokens:
            releases.radix_evict(cache, cache.evictable_size() - budget_tokens // 2)
            log.append(("evict", i, cache.evictable_size(), cache.total_size()))
    for node in locked:
        log.append(("dec-final", releases.lock_delta(cache.dec_lock_ref(node))))
    out[f"{prefix}/log"] = log
    out[f"{prefix}/freed"] = torch.cat(allocator.freed) if allocator.freed else torch.empty(0)
    out[f"{prefix}/tree"] = tree_shape(cache)
    out[f"{prefix}/sizes"] = (cache.evictable_size(), cache.protected_size(), cache.total_size())


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def _stats_snapshot(out: dict, prefix: str) -> None:
    """Which nsa-fastpath matcher served (patched trees only; not compared)."""
    rm = sys.modules.get("sglang.srt.mem_cache.radix_match")
    if rm is not None:
        out[f"_meta/{prefix}/stats"] = dict(rm.stats)
        rm.reset_stats()


def run_scheduler(out: dict, prefix: str, seed: int, page_size: int, bigram: bool,
                  n_requests: int, max_prefix: int, budget_tokens: int, batch: int = 3) -> None:
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.managers.schedule_policy import SchedulePolicy
    from sglang.srt.mem_cache import radix_cache as rc
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.memory_pool import ReqToTokenPool
    from sglang.srt.sampling.sampling_params import SamplingParams

    releases.prepare_scheduler(releases.imported_release(), page_size)
    rc.time = SimpleNamespace(monotonic=CountingClock().monotonic, perf_counter=lambda: 0.0)
    rc.TreeNode.counter = 0
    rng = random.Random(seed)
    pool = ReqToTokenPool(size=64, max_context_len=max_prefix + 512, device="cpu",
                          enable_memory_saver=False)
    allocator = RecordingAllocator()
    cache = rc.RadixCache(CacheInitParams(
        disable=False, req_to_token_pool=pool, token_to_kv_pool_allocator=allocator,
        page_size=page_size, is_eagle=bigram, eviction_policy="lru"))
    log = []

    # Every match_prefix SGLang makes, as its caller sees it afterwards (0.5.8 converts an EAGLE
    # query key's token_ids in place: read them after the call).
    inner = cache.match_prefix

    def recording(*args, **kwargs):
        r = inner(*args, **kwargs)
        key = releases.match_call_key(*args, **kwargs)
        toks = key.token_ids
        log.append(("mp", len(toks), hash(tuple(toks)), repr(toks[:2]), key.is_bigram,
                    key.extra_key, len(r.device_indices), _digest(r.device_indices),
                    r.last_device_node.id, r.last_host_node.id))
        return r

    cache.match_prefix = recording
    policy = SchedulePolicy("lpm", cache, False, False, False)

    prompts = [p for p, _ in make_workload(rng, max(8, n_requests // 8), max_prefix, bigram)]
    waiting, running = [], []
    next_slot = 0
    created = 0
    rnd = 0
    while created < n_requests or waiting or running:
        rnd += 1
        for _ in range(rng.choice((0, 1, 1, 2, 3))):  # arrivals: fresh ints, as from the tokenizer
            if created >= n_requests:
                break
            ids = pickle.loads(pickle.dumps(rng.choice(prompts)))
            ids += [rng.randrange(1, 50_000) for _ in range(rng.choice((1, 5, 40)))]
            req = Req(f"r{created}", "", releases.token_ids(ids), SamplingParams(max_new_tokens=8),
                      extra_key=rng.choice((None, None, None, "lora-a")))
            req.nsa_decode = rng.randrange(1, 6)
            created += 1
            waiting.append(req)
        if rnd % 2 and waiting:  # LPM: matches every waiting request, sorts the queue
            policy.calc_priority(waiting)
            log.append(("lpm", [r.rid for r in waiting],
                        [(len(r.prefix_indices), r.last_node.id) for r in waiting]))
        capacity = rng.choice((0, 0, 1, batch))  # rounds that schedule nobody: requests wait
        for req in list(waiting[:batch]):
            req.init_next_round_input(cache)
            log.append(("init", req.rid, len(req.prefix_indices), _digest(req.prefix_indices),
                        req.last_node.id, req.extend_input_len))
            if capacity <= 0 or len(running) >= 16:
                continue
            capacity -= 1
            waiting.remove(req)
            log.append(("inc", req.rid, releases.lock_delta(cache.inc_lock_ref(req.last_node)),
                        cache.evictable_size(), cache.protected_size()))
            req.req_pool_idx = releases.req_pool_alloc(pool, req)
            n_pre, n_fill = len(req.prefix_indices), releases.admit(req)
            row = pool.req_to_token[req.req_pool_idx]
            row[:n_pre] = req.prefix_indices
            row[n_pre:n_fill] = torch.arange(next_slot, next_slot + n_fill - n_pre)
            next_slot += n_fill - n_pre
            req.kv_committed_len = req.kv_allocated_len = n_fill
            req.output_ids.append(rng.randrange(1, 50_000))  # the prefill's token
            cache.cache_unfinished_req(req)
            log.append(("unfinished", req.rid, len(req.prefix_indices),
                        _digest(req.prefix_indices), req.last_node.id, req.cache_protected_len,
                        cache.evictable_size(), cache.protected_size()))
            running.append(req)
        for req in list(running):  # decode: one token a round; finish after a few
            row = pool.req_to_token[req.req_pool_idx]
            row[req.kv_committed_len] = next_slot
            next_slot += 1
            req.kv_committed_len += 1
            req.kv_allocated_len += 1
            req.output_ids.append(rng.randrange(1, 50_000))
            req.nsa_decode -= 1
            if req.nsa_decode <= 0:
                running.remove(req)
                releases.finish_request(cache, req)
                log.append(("finished", req.rid, cache.evictable_size(), cache.protected_size()))
        if cache.evictable_size() > budget_tokens:
            releases.radix_evict(cache, cache.evictable_size() - budget_tokens // 2)
            log.append(("evict", rnd, cache.evictable_size(), cache.total_size()))
    out[f"{prefix}/log"] = log
    out[f"{prefix}/freed"] = torch.cat(allocator.freed) if allocator.freed else torch.empty(0)
    out[f"{prefix}/tree"] = tree_shape(cache)
    out[f"{prefix}/sizes"] = (cache.evictable_size(), cache.protected_size(), cache.total_size())


def run_rematch(out: dict, prefix: str, seed: int, page_size: int, bigram: bool, n_ops: int,
                max_prefix: int) -> None:
    """Waiting requests matched again and again (a new list of their same ints each time, as
    Req.init_next_round_input builds it) while the tree changes under them: inserts that split
    their paths, evictions that remove them, locks, resets, requests growing by a token."""
    from sglang.srt.mem_cache import radix_cache as rc
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams

    rc.time = SimpleNamespace(monotonic=CountingClock().monotonic, perf_counter=lambda: 0.0)
    rc.TreeNode.counter = 0
    rng = random.Random(seed)
    allocator = RecordingAllocator()
    cache = rc.RadixCache(CacheInitParams(
        disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=allocator,
        page_size=page_size, is_eagle=bigram, eviction_policy="lru"))
    systems = [[rng.randrange(1, 50_000) for _ in range(rng.randrange(1024, max_prefix))]
               for _ in range(4)]
    waiting, locked, log = [], [], []
    slot = 0

    def insert(tokens, extra):
        nonlocal slot
        key = releases.insert_key(rc, tokens, extra, bigram, page_size)
        values = torch.arange(slot, slot + len(key), dtype=torch.int64)
        slot += len(key)
        return releases.radix_insert(cache, key, values)

    for i in range(n_ops):
        op = rng.choice(("new", "match", "match", "match", "match", "insert", "split", "evict",
                         "lock", "unlock", "grow")) if waiting else "new"
        if op == "new" or (op == "grow" and len(waiting) < 2):
            base = rng.choice(systems)
            ids = pickle.loads(pickle.dumps(base[: rng.randrange(len(base) // 2, len(base) + 1)]))
            ids += [rng.randrange(1, 50_000) for _ in range(rng.choice((1, 9, 70)))]
            waiting.append((releases.token_ids(ids), rng.choice((None, None, "lora-a"))))
            if len(waiting) > 12:
                waiting.pop(rng.randrange(len(waiting)))
            if rng.random() < 0.5:
                insert(*waiting[-1])
        elif op == "match":
            ids, extra = rng.choice(waiting)
            key = releases.next_round_key(rc, ids, extra)  # fill_ids[:max_prefix_len]
            r = releases.radix_match(cache, key)
            log.append(("match", i, len(r.device_indices), _digest(r.device_indices),
                        r.last_device_node.id, len(key.token_ids)))
        elif op == "insert":
            log.append(("insert", i, insert(*rng.choice(waiting))))
        elif op == "split":  # a request sharing part of a waiting one's path, then diverging
            ids, extra = rng.choice(waiting)
            cut = rng.randrange(1, len(ids))
            log.append(("split", i, insert(list(ids[:cut]) + [rng.randrange(50_000, 60_000)],
                                           extra)))
        elif op == "evict":
            releases.radix_evict(cache, rng.choice((64, 1024, 10 ** 9)))
            log.append(("evict", i, cache.evictable_size(), cache.total_size()))
        elif op == "lock":
            ids, extra = rng.choice(waiting)
            r = releases.radix_match(cache, rc.RadixKey(releases.token_ids(ids), extra))
            locked.append(r.last_device_node)
            log.append(("lock", i, releases.lock_delta(cache.inc_lock_ref(r.last_device_node))))
        elif op == "unlock" and locked:
            victim = locked.pop(rng.randrange(len(locked)))
            log.append(("unlock", i, releases.lock_delta(cache.dec_lock_ref(victim))))
        elif op == "grow":  # a waiting request that got an output token: a longer list
            ids, extra = rng.choice(waiting)
            ids.append(rng.randrange(1, 50_000))
        if rng.random() < 0.01 and not locked:
            cache.reset()
            log.append(("reset", i))
    out[f"{prefix}/log"] = log
    out[f"{prefix}/freed"] = torch.cat(allocator.freed) if allocator.freed else torch.empty(0)
    out[f"{prefix}/tree"] = tree_shape(cache)
    out[f"{prefix}/sizes"] = (cache.evictable_size(), cache.protected_size(), cache.total_size())


def run(out: dict, seed: int, configs: list[dict]) -> None:
    for cfg in configs:
        cfg = dict(cfg)
        scenario = cfg.pop("scenario", "workload")
        name = "/".join(f"{k}{v}" for k, v in cfg.items())
        prefix = f"radix/{name}" if scenario == "workload" else f"radix-{scenario}/{name}"
        _stats_snapshot({}, prefix)  # start counting here
        if scenario == "workload":
            run_workload(out, prefix, seed, **cfg)
        elif scenario == "scheduler":
            run_scheduler(out, prefix, seed, **cfg)
        elif scenario == "rematch":
            run_rematch(out, prefix, seed, **cfg)
        else:
            raise ValueError(f"unknown radix scenario {scenario!r}")
        _stats_snapshot(out, prefix)
