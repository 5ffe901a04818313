"""RadixCache scenarios: SGLang's own RadixCache on randomized serving-like workloads.

Requests share system-prompt prefixes of 1 to 32k tokens, then diverge. Each request does what
the scheduler does: match_prefix, lock the matched node, insert its full key, unlock; the cache
is evicted under a token budget. Every result (matched lengths and indices, last-node identity,
insert return values, lock deltas, sizes, freed indices) and the final tree shape are recorded.

Imported only inside a runner process whose sys.path starts with the SGLang tree under test.
"""
from __future__ import annotations

import random
from types import SimpleNamespace

import torch


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
    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.utils import convert_to_bigram_key

    rc.time = SimpleNamespace(monotonic=CountingClock().monotonic,
                              perf_counter=lambda: 0.0)
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
        m = cache.match_prefix(MatchPrefixParams(key=rc.RadixKey(list(tokens), extra)))
        node = m.last_device_node
        log.append(("match", i, len(m.device_indices), node.id, len(node.key)))
        out[f"{prefix}/match{i}.indices"] = m.device_indices.clone()
        log.append(("inc", i, cache.inc_lock_ref(node), cache.evictable_size(),
                     cache.protected_size()))
        locked.append(node)

        # Insert the whole request as cache_finished_req does: bigram keys for EAGLE, page-aligned,
        # its KV slots fresh indices.
        keys = convert_to_bigram_key(list(tokens)) if bigram else list(tokens)
        keys = keys[: len(keys) // page_size * page_size]
        values = torch.arange(next_slot, next_slot + len(keys), dtype=torch.int64)
        next_slot += len(keys)
        inserted = cache.insert(rc.RadixKey(keys, extra, is_bigram=bigram), values)
        log.append(("insert", i, inserted, cache.evictable_size(), cache.protected_size()))

        if len(locked) > 8 or rng.random() < 0.3:
            victim = locked.pop(rng.randrange(len(locked)))
            log.append(("dec", i, cache.dec_lock_ref(victim), cache.evictable_size(),
                        cache.protected_size()))
        if cache.evictable_size() > budget_tokens:
            cache.evict(cache.evictable_size() - budget_tokens // 2)
            log.append(("evict", i, cache.evictable_size(), cache.total_size()))
    for node in locked:
        log.append(("dec-final", cache.dec_lock_ref(node)))
    out[f"{prefix}/log"] = log
    out[f"{prefix}/freed"] = torch.cat(allocator.freed) if allocator.freed else torch.empty(0)
    out[f"{prefix}/tree"] = tree_shape(cache)
    out[f"{prefix}/sizes"] = (cache.evictable_size(), cache.protected_size(), cache.total_size())


def run(out: dict, seed: int, configs: list[dict]) -> None:
    for cfg in configs:
        name = "/".join(f"{k}{v}" for k, v in cfg.items())
        run_workload(out, f"radix/{name}", seed, **cfg)
