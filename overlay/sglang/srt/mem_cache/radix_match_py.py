# Copyright 2025-2026 nsa-fastpath authors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""nsa-fastpath: the pure-Python comparisons of RadixCache prefix matching.

What radix_match.Walker compares with when the compiled helper is unavailable (or
SGLANG_RADIX_COMPILED_MATCH=0), what it falls back to for keys and tokens the helper does not
take, and the drop-in ``key_match_fn`` that insert and subclasses call in every case.

Same results as SGLang 0.5.8's ``_key_match_page_size1`` / ``_key_match_paged`` (which stay in
radix_cache.py and are what the flag set to 0 uses), found faster. Per comparison, by the length
of the overlap and by what was measured fastest there (bench/bench_radix_match.py --only sweep):

- Short overlaps: exactly SGLang's own loops.
- Int keys, page size 1 and pages up to 16 tokens: C-level list slices. The first ``NSA_HEAD``
  positions / ``NSA_HEAD_PAGES`` pages go as in SGLang's loop (an early divergence costs what it
  costs there). If the overlap's last positions agree (a node matched whole, or a local
  difference such as a date in a system prompt), slices doubling from ``NSA_GALLOP`` positions are
  compared, a failing slice is binary-searched down to ``NSA_LINEAR`` positions, then one by one:
  the cost grows with the position found, not with the overlap. If they differ (the keys went on
  differently), single positions are probed (exponential, then binary search) for the boundary and
  one slice comparison checks everything before it (falling back to the galloping search).
- Pages of 32 tokens and more: SGLang's page loop, which already compares a page per C call.
- EAGLE bigram keys: packed ints. SGLang compares tuples there; a bigram key
  ``[(a, b), (b, c), ...]`` is equal to another over its first m pairs exactly when the ints they
  chain through are equal over m + 1 positions. The query's ints are packed as int64 in chunks
  doubling from ``NSA_BYTES_GALLOP`` (``QueryInts``) and compared with one memcmp each, then
  binary-searched by memcmp; each tree key keeps its ints packed (node_ints).
- Paged keys: the first differing position is mapped onto SGLang's page loop exactly, including
  its quirk of returning a value past ``min_len`` when both keys end in the same equal partial page.
- The EAGLE conversion of a key is built with ``zip`` (the same list of tuples, ~2x faster).

Equality: ``list ==`` compares elements by identity first, then ``==``; SGLang's loop uses
``!=``; packed ints compare the values ``struct`` packs (``__index__``). For token ids (ints) and
bigram keys (tuples of ints) these all agree. Only plain lists take the fast paths; other token
containers, and tokens that do not pack as int64, get SGLang's loop or the list path.

Why our own code and not a library: the keys are Python lists of fresh Python ints from the
scheduler. Turning a query into an array costs 7 ns a token with struct, 15 with array('q'), 17
with numpy and 50 with torch.tensor, against 25-35 ns a token for SGLang's loop and 7-8 for a
C-level ``list ==`` of slices, so only struct (for bigram keys, where SGLang compares tuples)
and list slices pay off in pure Python; nothing in the standard library finds a first difference.

Memory: the list paths keep nothing. Packed ints are cached on tree keys (``_nsa_ints``, shared
with the compiled helper: the same bytes): 8 bytes a token plus 8 a bigram key (and a 3-tuple and
bytes header, ~100 bytes a key), exact to the key and dropped with it.
"""
from __future__ import annotations

import logging
import struct
from array import array
from itertools import chain
from typing import Callable, Optional

logger = logging.getLogger(__name__)
_pack = struct.pack
_warned: set = set()

NEVER = 1 << 62

# Comparison paths, each measured against SGLang's own loops per overlap length (key compare
# sweep and match_prefix ablation of bench/bench_radix_match.py, docs/BENCHMARKS.md):
# - list slices (prefix_len_page1 / prefix_len_paged): int keys, page size 1 and paged up to
#   NSA_PAGED_MAX_PAGE_SIZE; also every key_match_fn call (insert, subclasses).
NSA_HEAD = 16  # positions compared one by one before any slice comparison (page size 1)
NSA_HEAD_PAGES = 2  # pages compared as SGLang does before any longer slice comparison (paged)
NSA_GALLOP = 32  # first slice of the galloping search (positions), doubling
NSA_LINEAR = 16  # the binary search stops at this many positions, then one by one
NSA_LONG_PAGE1 = 64  # from this overlap (tokens) on; below, SGLang's loop
NSA_DIVERGE_PAGE1 = 256  # the same where the keys' last overlapping tokens differ
NSA_LONG_PAGED_PAGES = 8  # paged, in pages
NSA_DIVERGE_PAGED_PAGES = 16
# SGLang's page loop compares a whole page per C call: from 32 tokens a page the slice path gains
# about 10% on whole matches and loses 20-30% where one token differs, so larger pages keep it.
NSA_PAGED_MAX_PAGE_SIZE = 16
# - packed ints (bytes_prefix): EAGLE bigram keys in the match_prefix walk, where SGLang compares
#   tuples. Int keys do not use it by default: packing a fresh query costs about what comparing
#   its ints does, and list slices need no cache.
NSA_BYTES_MIN_BIGRAM = 96  # from this overlap (tokens), and at least NSA_BYTES_MIN_PAGES pages
NSA_BYTES_MIN_PAGES = 2
NSA_BYTES_DIVERGE_BIGRAM = 384  # where the last overlapping tokens differ, and >= 12 pages
NSA_BYTES_DIVERGE_PAGES = 12
NSA_BYTES_GALLOP = 64  # first chunk (tokens) packed and compared, doubling
NSA_BYTES_NODE_FACTOR = 4  # a tree key is packed only if at most this many times the overlap
# - the Triton kernel (opt-in): from this overlap (tokens).
NSA_TRITON_MIN = 512


def _boundary(t0: list, t1: list, off: int, lo: int, hi: int, verify: bool = True) -> int:
    """First i in [lo, hi] with t0[i] != t1[off + i], where position hi is known to differ.

    For keys that went on differently from some position: find it with single-position probes
    (exponential, then binary), then check everything before it with one slice comparison; if
    that finds an earlier difference (the probes' premise failed), search there with slices.
    verify=False returns the probes' candidate unchecked (the caller checks).
    """
    a = lo
    step = 1
    b = hi
    while True:
        y = lo + step - 1
        if y >= b:
            break
        if t0[y] != t1[off + y]:
            b = y
            break
        a = y + 1
        step <<= 1
    while a < b:
        mid = (a + b) >> 1
        if t0[mid] != t1[off + mid]:
            b = mid
        else:
            a = mid + 1
    if not verify or b == lo or t0[lo:b] == t1[off + lo : off + b]:
        return b
    return _gallop(t0, t1, off, lo, b, False)


def _gallop(t0: list, t1: list, off: int, lo: int, hi: int, maybe_equal: bool) -> int:
    """First i in [lo, hi) with t0[i] != t1[off + i]; if none, hi (only if maybe_equal).

    Slices doubling from NSA_GALLOP positions, a binary search of the failing slice down to
    NSA_LINEAR positions, then one by one: the cost grows with the position found.
    """
    step = NSA_GALLOP
    while True:
        end = lo + step
        if end >= hi:
            if maybe_equal and t0[lo:hi] == t1[off + lo : off + hi]:
                return hi
            break
        if t0[lo:end] != t1[off + lo : off + end]:
            hi = end
            break
        lo = end
        step <<= 1
    while hi - lo > NSA_LINEAR:
        mid = (lo + hi) >> 1
        if t0[lo:mid] == t1[off + lo : off + mid]:
            lo = mid
        else:
            hi = mid
    for k0, k1 in zip(t0[lo:hi], t1[off + lo : off + hi]):
        if k0 != k1:
            break
        lo += 1
    return lo


def prefix_len_page1(t0: list, t1: list, off: int, m: int, diverged: bool) -> int:
    """Common prefix length of t0[0:m] and t1[off:off + m], m > NSA_HEAD.

    ``diverged``: position m - 1 differs (the caller probed it).
    """
    i = 0
    for k0, k1 in zip(t0, t1[off : off + NSA_HEAD]):
        if k0 != k1:
            return i
        i += 1
    if diverged:
        return _boundary(t0, t1, off, i, m - 1)
    return _gallop(t0, t1, off, i, m, True)


def ints_prefix(t0: list, t1: list, off: int, k: int) -> int:
    """First i in [0, k) with t0[i] != t1[off + i], or k: SGLang's one-by-one loop for short
    spans, list slices (prefix_len_page1) from NSA_LONG_PAGE1 positions."""
    if k >= NSA_LONG_PAGE1:
        return prefix_len_page1(t0, t1, off, k, t0[k - 1] != t1[off + k - 1])
    i = 0
    for k0, k1 in zip(t0[:k], t1[off : off + k]):
        if k0 != k1:
            break
        i += 1
    return i


def ids_prefix(t0, t1, off: int, k: int) -> int:
    """ints_prefix for two lists, or for two arrays (SGLang 0.5.13's ``array('q')`` ids): C-level
    slice comparisons, galloping (their values are in the buffers: no head compared one by
    one)."""
    if t0.__class__ is list:
        return ints_prefix(t0, t1, off, k)
    return _gallop(t0, t1, off, 0, k, True)


def paged_result(p: int, m: int, len0: int, len1: int, page_size: int) -> int:
    """_key_match_paged's result, given p = the first differing position (or m = min_len)."""
    if p < m:
        return p // page_size * page_size
    full = m // page_size * page_size
    if full == m:
        return m
    # The overlap ends in a partial page: SGLang's two page slices are equal only if both keys
    # end there (equal lengths), and then its loop steps one page past min_len.
    return full + page_size if len0 == len1 else full


def _first_page(t0: list, t1: list, off: int, lo: int, hi: int, ps: int, maybe_equal: bool):
    """Start of the first page in [lo, hi) where t0 and t1[off:] differ; hi if none (only if
    maybe_equal). lo is page aligned; the last page may be partial (hi = min_len).

    Like _gallop, in whole pages: slices doubling, then a binary search down to one page.
    """
    step = (NSA_GALLOP + ps - 1) // ps * ps
    while True:
        end = lo + step
        if end >= hi:
            if maybe_equal and t0[lo:hi] == t1[off + lo : off + hi]:
                return hi
            break
        if t0[lo:end] != t1[off + lo : off + end]:
            hi = end
            break
        lo = end
        step <<= 1
    while hi - lo > ps:
        mid = lo + max(1, (hi - lo) // ps // 2) * ps
        if t0[lo:mid] == t1[off + lo : off + mid]:
            lo = mid
        else:
            hi = mid
    return lo


def prefix_len_paged(
    t0: list, t1: list, off: int, m: int, len0: int, len1: int, ps: int, diverged: bool
) -> int:
    """_key_match_paged(key0=t0 (len0), key1=t1[off:off + len1]), m = min_len > head pages.

    ``diverged``: position m - 1 differs (the caller probed it).
    """
    i = 0
    head = NSA_HEAD_PAGES * ps
    while i < head:  # whole pages (head < m): exactly SGLang's loop
        if t0[i : i + ps] != t1[off + i : off + i + ps]:
            return i
        i += ps
    if diverged:
        q = _boundary(t0, t1, off, i, m - 1, False) // ps * ps
        # [i, q) is unchecked unless the probes' premise held: check it, else search it.
        if q > i and t0[i:q] != t1[off + i : off + q]:
            q = _first_page(t0, t1, off, i, q, ps, False)
        return q
    q = _first_page(t0, t1, off, i, m, ps, True)
    if q < m:
        return q
    return paged_result(m, m, len0, len1, ps)


def convert_to_bigram_key_fast(tokens, fallback: Callable):
    """SGLang's convert_to_bigram_key (utils.py) with the list built by zip: same tuples."""
    if len(tokens) and isinstance(tokens[0], tuple):
        return tokens
    if len(tokens) < 2:
        return []
    if type(tokens) is list:
        return list(zip(tokens, tokens[1:]))
    return fallback(tokens)


def bigram_pairs(src, fallback: Callable):
    """An EAGLE query key's bigram token_ids from what it kept of its list (Walker.snapshot):
    the ints packed as int64 bytes, or a copy of the list."""
    if src.__class__ is bytes:
        src = memoryview(src).cast("q").tolist()
    return convert_to_bigram_key_fast(src, fallback)


def owned_key(key):
    """The RadixKey a new tree node keeps when ``insert`` was given ``key`` whole: the same
    attributes over its own copy of the token list (0.5.8 stores the caller's key, list and all;
    from 0.5.13 an ``array('q')``, copied the same way).

    The packed ids (``node_ints``, the helper's ``packed_key``) and the re-match cache trust a
    tree key's list to change only by reassignment; a caller editing, in place, the list it
    inserted would leave them stale. 0.5.8 already clones the inserted value for the same
    reason. Costs a list copy (about 1 ns a token; an array's, a memcpy) for a new child of the
    root only: every other new node holds a slice the tree made. RadixKey has ``__slots__`` from
    0.5.11 on."""
    t = key.token_ids
    if t.__class__ is not list and t.__class__ is not array:
        return key  # a tuple cannot change; other sequences are matched by 0.5.8's code
    cls = key.__class__
    own = object.__new__(cls)
    d = getattr(key, "__dict__", None)
    if d is not None:
        own.__dict__.update(d)
        own.__dict__.pop("_nsa_ints", None)
        own.__dict__.pop("_tensor_cache", None)
    for klass in cls.__mro__:  # slotted attributes (0.5.11 on: token_ids, extra_key, is_bigram)
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(key, name):
                setattr(own, name, getattr(key, name))
    own.token_ids = t[:]
    return own


def tokens_to_tensor(tokens):
    """int64 tensor of token ids (bigram tuples: shape (n, 2)), same values as torch.tensor.

    struct.pack reads a Python int list about 7x faster than torch.tensor does.
    """
    import torch

    n = len(tokens)
    if n == 0:
        return torch.empty((0,), dtype=torch.int64)
    try:
        if isinstance(tokens[0], tuple):
            buf = bytearray(struct.pack(f"={2 * n}q", *chain.from_iterable(tokens)))
            return torch.frombuffer(buf, dtype=torch.int64).view(n, 2)
        return torch.frombuffer(bytearray(struct.pack(f"={n}q", *tokens)), dtype=torch.int64)
    except (struct.error, TypeError, OverflowError):
        return torch.tensor(tokens, dtype=torch.int64)


class QueryInts:
    """A match_prefix query's token ids packed as int64 bytes, as far as the walk has needed them.

    ``ints`` are the query's ints; for EAGLE bigram keys the ints the pairs were made of (pair i
    is (ints[i], ints[i + 1])). ``ok`` turns False if they do not pack (not ints, or beyond int64):
    the walk then compares lists.
    """

    __slots__ = ("ints", "pairs", "buf", "done", "ok")

    def __init__(self, ints: list, pairs: bool):
        self.ints = ints
        self.pairs = pairs
        self.buf = bytearray()  # ints [0, done) packed
        self.done = 0
        self.ok = True

def node_ints(key0, pairs: bool):
    """The tree key's ints packed as int64 bytes, cached on the key (None: not packable).

    Bigram keys: the ints their pairs chain through (n + 1 of them), if consecutive pairs do
    chain; else None. The cache is exact to the key (8 bytes a token, plus 8 for bigram keys), is
    rebuilt if ``token_ids`` was reassigned or changed length, and goes with the key: when the
    node is split or evicted, the old key and its bytes are dropped.
    """
    t0 = key0.token_ids
    cached = getattr(key0, "_nsa_ints", None)
    if cached is not None and cached[0] is t0 and cached[1] == len(t0):
        return cached[2]
    packed = None
    try:
        if pairs:
            if t0:
                firsts = [a for a, _ in t0]
                seconds = [b for _, b in t0]
                if firsts[1:] == seconds[:-1]:
                    packed = _pack(f"={len(t0) + 1}q", firsts[0], *seconds)
        else:
            packed = _pack(f"={len(t0)}q", *t0)
    except (struct.error, TypeError, OverflowError, ValueError):
        packed = None
    key0._nsa_ints = (t0, len(t0), packed)
    return packed


def bytes_prefix(b0: bytes, q: QueryInts, off: int, k: int) -> Optional[int]:
    """First i in [0, k) where the tree key's ints b0[i] != the query's ints[off + i], or k.

    Packs the query in chunks doubling from NSA_BYTES_GALLOP ints (so the work grows with the
    position found), compares each chunk with one memcmp (bytearray.startswith), then binary
    searches a differing chunk with memcmp. None if the query does not pack.
    """
    mv0 = memoryview(b0)
    buf = q.buf
    lo = 0
    step = NSA_BYTES_GALLOP
    while True:
        hi = lo + step
        if hi > k:
            hi = k
        need = off + hi
        done = q.done
        if done < need:
            try:
                buf += _pack(f"={need - done}q", *q.ints[done:need])
            except (struct.error, TypeError, OverflowError):
                q.ok = False
                return None
            q.done = need
        if not buf.startswith(mv0[8 * lo : 8 * hi], 8 * (off + lo)):
            break
        lo = hi
        if lo == k:
            return k
        step <<= 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if buf.startswith(mv0[8 * lo : 8 * mid], 8 * (off + lo)):
            lo = mid
        else:
            hi = mid
    return lo


class NsaPrefixMatcher:
    """The adaptive matcher of one RadixCache (page size, key kind and thresholds fixed).

    ``key_match(key0, key1)``: drop-in for SGLang's key_match_fn: the same results, and the same
    ValueError through ``check_extra_key`` (SGLang's ``_check_extra_key``, passed in).
    ``match_at(key0, key, tokens, off, n, q)``: ``key_match(key0, RadixKey(tokens[off:n],
    key.extra_key))`` without building that key, for RadixCache's match_prefix walk; ``q`` (a
    QueryInts of the query, or None) lets it compare packed ints with the tree key's cached ints.

    The keyword thresholds override the measured defaults (benchmarks and tests force each path
    on alone with them); ``NEVER`` turns a path off.
    """

    def __init__(
        self,
        page_size: int,
        is_eagle: bool = False,
        check_extra_key: Optional[Callable] = None,
        triton_ops=None,
        long_min: Optional[int] = None,
        diverge_min: Optional[int] = None,
        bytes_min: Optional[int] = None,
        bytes_diverge_min: Optional[int] = None,
        triton_min: int = NSA_TRITON_MIN,
    ):
        self.page_size = ps = page_size
        self.is_eagle = is_eagle
        if check_extra_key is None:
            raise TypeError("check_extra_key (SGLang's _check_extra_key) is required")
        self.check_extra_key = check_extra_key
        if ps == 1:
            d_long, d_diverge = NSA_LONG_PAGE1, NSA_DIVERGE_PAGE1
        elif ps <= NSA_PAGED_MAX_PAGE_SIZE:
            d_long, d_diverge = NSA_LONG_PAGED_PAGES * ps, NSA_DIVERGE_PAGED_PAGES * ps
        else:
            d_long = d_diverge = NEVER
        if is_eagle:
            d_bytes = max(NSA_BYTES_MIN_BIGRAM, NSA_BYTES_MIN_PAGES * ps)
            d_bytes_diverge = max(NSA_BYTES_DIVERGE_BIGRAM, NSA_BYTES_DIVERGE_PAGES * ps)
        else:
            d_bytes = d_bytes_diverge = NEVER
        # The slice path needs more positions than its head compared one by one / page by page.
        floor = NSA_HEAD + 1 if ps == 1 else NSA_HEAD_PAGES * ps + 1
        self.long_min = max(int(d_long if long_min is None else long_min), floor)
        self.diverge_min = max(int(d_diverge if diverge_min is None else diverge_min),
                               self.long_min)
        self.bytes_min = max(int(d_bytes if bytes_min is None else bytes_min), 1)
        self.bytes_diverge_min = max(
            int(d_bytes_diverge if bytes_diverge_min is None else bytes_diverge_min),
            self.bytes_min)
        self.triton_ops = triton_ops if triton_ops is not None and triton_ops.enabled else None
        self.triton_min = int(triton_min)
        self.key_match, self.match_at = self._build()

    def _build(self):
        long_min = self.long_min
        diverge_min = self.diverge_min
        bytes_min = self.bytes_min
        bytes_diverge_min = self.bytes_diverge_min
        ps = self.page_size
        ops = self.triton_ops
        triton_min = self.triton_min if ops is not None else NEVER
        gate = min(long_min, triton_min)
        walk_gate = min(gate, bytes_min)
        pairs = self.is_eagle
        ext = 1 if pairs else 0  # bigram keys: pairs [0, m) are ints [0, m + 1)
        node_factor = NSA_BYTES_NODE_FACTOR
        check = self.check_extra_key
        page1_long = prefix_len_page1
        paged_long = prefix_len_paged
        _list = list

        def _triton(key0, key1, off, m):
            try:
                return ops.first_mismatch(key0, key1, off, m)
            except Exception as e:  # any failure: this comparison on the CPU path
                msg = f"nsa-fastpath: radix triton matcher failed, the CPU comparison takes over: {e!r}"
                if msg not in _warned:
                    _warned.add(msg)
                    logger.warning(msg)
                return None

        def _packed(key0, t0, q, off, m):
            """First differing pair/token in [0, m) via packed ints, or None (not packable)."""
            b0 = node_ints(key0, pairs)
            if b0 is None:
                return None
            j = bytes_prefix(b0, q, off, m + ext)
            if j is None or not ext:
                return j
            return m if j > m else (j - 1 if j else 0)

        if ps == 1:

            def key_match(key0, key1):
                if key0.extra_key != key1.extra_key:
                    check(key0, key1)
                t0 = key0.token_ids
                t1 = key1.token_ids
                m = len(t0)
                if m >= gate:  # short tree keys go straight to SGLang's loop
                    n1 = len(t1)
                    if n1 < m:
                        m = n1
                    if m >= gate and t0.__class__ is _list and t1.__class__ is _list:
                        if m >= triton_min:
                            p = _triton(key0, key1, 0, m)
                            if p is not None:
                                return p
                        if m >= long_min:
                            if t0[m - 1] == t1[m - 1]:
                                return page1_long(t0, t1, 0, m, False)
                            if m >= diverge_min:
                                return page1_long(t0, t1, 0, m, True)
                i = 0
                for k0, k1 in zip(t0, t1):
                    if k0 != k1:
                        break
                    i += 1
                return i

            def match_at(key0, key, tokens, off, n, q=None):
                if key0.extra_key != key.extra_key:
                    check(key0, key)
                t0 = key0.token_ids
                m = len(t0)
                if n - off < m:
                    m = n - off
                if m >= walk_gate and t0.__class__ is _list:
                    if m >= triton_min:
                        p = _triton(key0, key, off, m)
                        if p is not None:
                            return p
                    same_end = t0[m - 1] == tokens[off + m - 1]
                    if (
                        m >= bytes_min
                        and q is not None
                        and (same_end or m >= bytes_diverge_min)
                        and q.ok
                        and len(t0) <= node_factor * m
                    ):
                        p = _packed(key0, t0, q, off, m)
                        if p is not None:
                            return p
                    if m >= long_min:
                        if same_end:
                            return page1_long(t0, tokens, off, m, False)
                        if m >= diverge_min:
                            return page1_long(t0, tokens, off, m, True)
                i = 0
                for k0, k1 in zip(t0, tokens[off : off + m]):
                    if k0 != k1:
                        break
                    i += 1
                return i

        else:

            def key_match(key0, key1):
                if key0.extra_key != key1.extra_key:
                    check(key0, key1)
                t0 = key0.token_ids
                t1 = key1.token_ids
                len0 = len(t0)
                len1 = len(t1)
                min_len = len0 if len0 < len1 else len1
                if min_len >= gate and t0.__class__ is _list and t1.__class__ is _list:
                    if min_len >= triton_min:
                        p = _triton(key0, key1, 0, min_len)
                        if p is not None:
                            return paged_result(p, min_len, len0, len1, ps)
                    if min_len >= long_min:
                        if t0[min_len - 1] == t1[min_len - 1]:
                            return paged_long(t0, t1, 0, min_len, len0, len1, ps, False)
                        if min_len >= diverge_min:
                            return paged_long(t0, t1, 0, min_len, len0, len1, ps, True)
                i = 0
                while i < min_len:
                    if t0[i : i + ps] != t1[i : i + ps]:
                        break
                    i += ps
                return i

            def match_at(key0, key, tokens, off, n, q=None):
                if key0.extra_key != key.extra_key:
                    check(key0, key)
                t0 = key0.token_ids
                len0 = len(t0)
                len1 = n - off
                m = len0 if len0 < len1 else len1
                if m >= walk_gate and t0.__class__ is _list:
                    if m >= triton_min:
                        p = _triton(key0, key, off, m)
                        if p is not None:
                            return paged_result(p, m, len0, len1, ps)
                    same_end = t0[m - 1] == tokens[off + m - 1]
                    if (
                        m >= bytes_min
                        and q is not None
                        and (same_end or m >= bytes_diverge_min)
                        and q.ok
                        and len0 <= node_factor * m
                    ):
                        p = _packed(key0, t0, q, off, m)
                        if p is not None:
                            return paged_result(p, m, len0, len1, ps)
                    if m >= long_min:
                        if same_end:
                            return paged_long(t0, tokens, off, m, len0, len1, ps, False)
                        if m >= diverge_min:
                            return paged_long(t0, tokens, off, m, len0, len1, ps, True)
                i = 0
                while i < m:
                    j = off + i + ps
                    if t0[i : i + ps] != tokens[off + i : j if j < n else n]:
                        break
                    i += ps
                return i

        return key_match, match_at
