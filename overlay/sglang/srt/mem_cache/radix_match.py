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
"""nsa-fastpath: RadixCache prefix matching (SGLANG_RADIX_FAST_MATCH=1, the default).

``match_prefix`` of a plain-list query walks the tree by offset into the query's token ids
(``Walker``); each tree key keeps its ids packed as int64 bytes (``_nsa_ints`` on the RadixKey,
built on first compare, sliced by ``_split_node``, gone with the key), and each comparison finds
the first differing position with one of these matchers, chosen once per RadixCache:

- ``compiled`` (default): radix_match_ext.cpp reads the query's Python ints in place (about 1 ns
  a token; radix_match_native.py builds it with a lock and a cache dir).
- ``python``: when the helper is unavailable (no compiler, NSA_FASTPATH_RADIX_JIT=0 and not
  built, a build failure) or SGLANG_RADIX_COMPILED_MATCH=0: radix_match_py.py's pure-Python
  comparisons (list slices for int keys, struct-packed ints and memcmp for EAGLE keys).
- ``triton`` (opt-in, SGLANG_RADIX_TRITON_MATCH=1 or CacheInitParams.enable_triton_kernels): the
  Triton token-match kernel (radix_cache_kernels.py) for overlaps from 512 tokens, the above
  below.

EAGLE (``is_eagle``): SGLang converts the query into bigram tuples ``[(a, b), (b, c), ...]`` on
every call and compares tuples. Pairs [0, m) of two such keys are equal exactly when the ints
they chain through are equal over [0, m + 1), so the walk compares the query's own ints with the
tree key's packed chain ints; child keys (one pair, or a page of pairs) are the only tuples it
builds. The query RadixKey gets its bigram ``token_ids`` on first read afterwards (identical to
0.5.8's; ``RadixKey.__getattr__`` in radix_cache.py).

From SGLang 0.5.11 a RadixKey is a view (``maybe_to_bigram_view``): an EAGLE key keeps its raw
ints and ``is_bigram``, and SGLang's own ``match_prefix`` only flips that flag. There the walk
replaces ``_match_prefix_helper`` instead (``Walker.match_helper``: SGLang's match_prefix makes
the query key, the result and the empty result), comparing tree keys' ids in place (nothing
packed or cached; an EAGLE match ends on a whole page, as ``RadixKey.match`` rounds it; from
0.5.13 every match, as a probe of the release's own ``RadixKey.match`` finds:
``partial_last_page``). From 0.5.13 the ids are ``array('q')``s (the request's own, and slices
of them in the tree): the compiled walk reads both sides' int64 buffers in place (the buffer
protocol, no copy), the pure-Python one compares C-level slices.

A waiting request matched again (same ints) is served by the re-match cache (radix_rematch.py,
SGLANG_RADIX_REMATCH_CACHE=1), validated on every hit.

Every result, tree update and clock read is 0.5.8's (tests/test_parity_radix.py,
tests/test_radix_match.py). ``describe()`` says which matcher this Python would use without
building anything; ``stats`` / ``last_served()`` say which one served (the tests read them).
One INFO line ``nsa-fastpath: radix prefix matcher: <name>`` is logged when a matcher is first
used, a WARNING when one fails and the next takes over.

Pre-build the helper: ``python -m sglang.srt.mem_cache.radix_match --build``.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
from array import array
from pathlib import Path
from typing import Callable, Optional

if __package__:
    from sglang.srt.mem_cache import radix_match_native as native
    from sglang.srt.mem_cache.radix_match_py import (  # noqa: F401 (re-exported)
        NEVER,
        NsaPrefixMatcher,
        QueryInts,
        bigram_pairs,
        bytes_prefix,
        convert_to_bigram_key_fast,
        ids_prefix,
        ints_prefix,
        node_ints,
        owned_key,
        paged_result,
        tokens_to_tensor,
    )
    from sglang.srt.mem_cache.radix_rematch import UNSEEN, RematchCache
else:  # loaded as a single file (tests, scripts): the sibling modules the same way
    def _sibling(name):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return sys.modules[name]

    native = _sibling("radix_match_native")
    _py = _sibling("radix_match_py")
    NEVER, NsaPrefixMatcher, QueryInts = _py.NEVER, _py.NsaPrefixMatcher, _py.QueryInts
    bytes_prefix, convert_to_bigram_key_fast = _py.bytes_prefix, _py.convert_to_bigram_key_fast
    node_ints, paged_result, tokens_to_tensor = _py.node_ints, _py.paged_result, _py.tokens_to_tensor
    ints_prefix, ids_prefix = _py.ints_prefix, _py.ids_prefix
    owned_key, bigram_pairs = _py.owned_key, _py.bigram_pairs
    RematchCache, UNSEEN = _sibling("radix_rematch").RematchCache, _sibling("radix_rematch").UNSEEN

logger = logging.getLogger(__name__)

# Query forms (fixed per call): the ids themselves; EAGLE ints whose bigram pairs SGLang would
# build; EAGLE keys already given as pairs (cache_unfinished_req passes is_bigram keys).
INTS, CHAIN, PAIRS = 0, 1, 2
# Tree keys (per RadixCache): token ids and EAGLE bigram tuples (to SGLang 0.5.10), packed and
# cached on the key; RadixKey views (0.5.11 on: RadixKey.maybe_to_bigram_view; an EAGLE key's ids
# are the raw ints its pairs are a view of), compared in place: KEYS_VIEW where RadixKey.match
# counts an equal partial last page as 0.5.8's page loop does (0.5.11, 0.5.12), KEYS_VIEW_PAGES
# where it rounds every match down to whole pages (0.5.13 on; ids are array('q')s there).
KEYS_INTS, KEYS_PAIRS, KEYS_VIEW, KEYS_VIEW_PAGES = 0, 1, 2, 3

NSA_TRITON_MIN = 512  # the Triton kernel from this overlap (tokens); shorter: the above
# The re-match cache looks queries up, and remembers walks, from this many matched ints, per
# matcher: shorter ones cost less to walk again than to look up and replay
# (bench_radix_match.py, re-matched table: the cache against "no cache" per length).
NSA_REMATCH_MIN = {"compiled": 1024, "python": 64}
# The same for array('q') ids (SGLang 0.5.13 on): the compiled walk compares them at memcmp
# speed, as a replay would check them, so a re-match costs it what a walk does at every length
# measured (bench_radix_upstream.py, re-matched: "compiled" against "compiled, no cache"): it
# never consults the cache there; the pure-Python matcher gains from 64 ints, as with lists.
NSA_REMATCH_MIN_ARRAY = {"compiled": NEVER, "python": 64}


def rematch_min(kind: str, array_ids: bool = False) -> int:
    table = NSA_REMATCH_MIN_ARRAY if array_ids else NSA_REMATCH_MIN
    return table.get(kind, table["compiled"])


def scan_max(page_size: int, form: int) -> int:
    """The compiled walk finds a child by comparing the query with each key of a node's children
    dict (about 9 ns a key) up to this many children, and beyond by a dict lookup of the key it
    builds, whose building and hashing cost this pays for (bench_radix_match.py --only scan:
    page 64: EAGLE 2.0 us, int tokens 0.2 us; page 16: 0.43 / 0.06 us; page 1 EAGLE 0.02 us;
    page 1 int tokens: the key is the token, looked up directly)."""
    if page_size == 1:
        return 2
    if form == CHAIN:
        return 2 * page_size
    return max(2, page_size // 3) if form == INTS else page_size

# ------------------------------------------------------------------------------------------------
# which matcher served: tests and benchmarks read these (one dict update per match_prefix)
# ------------------------------------------------------------------------------------------------
stats: dict = {}
_last = [None]
_logged: set = set()


def last_served() -> Optional[str]:
    """Name of what served the latest match_prefix in this process: 'compiled', 'python',
    'triton', 'rematch' (a validated re-match hit) or 'upstream' (SGLang 0.5.8's code)."""
    return _last[0]


def reset_stats() -> None:
    stats.clear()
    _last[0] = None


def served(name: str) -> None:
    stats[name] = stats.get(name, 0) + 1
    _last[0] = name


def log_once(message: str, level: int = logging.INFO) -> None:
    if message not in _logged:
        _logged.add(message)
        logger.log(level, message)


# ------------------------------------------------------------------------------------------------
# flags and describe()
# ------------------------------------------------------------------------------------------------
def _envs():
    """SGLang's ``envs``: the imported module's, else environ.py beside us loaded as one file
    (it imports only the standard library), so describe() works without importing sglang."""
    module = sys.modules.get("sglang.srt.environ")
    if module is None:
        path = Path(__file__).resolve().parent.parent / "environ.py"
        spec = importlib.util.spec_from_file_location("_nsa_radix_environ", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(spec.name, None)
    return module.envs


def flags() -> dict:
    e = _envs()
    return {name: getattr(e, name).get() for name in (
        "SGLANG_RADIX_FAST_MATCH", "SGLANG_RADIX_COMPILED_MATCH", "SGLANG_RADIX_REMATCH_CACHE",
        "SGLANG_RADIX_TRITON_MATCH")}


def describe(as_facts: bool = False):
    """One line: the matcher a RadixCache of this Python would use, and why. Builds nothing,
    loads nothing (the state of a load in this process is reported if there was one). With
    `as_facts`, the facts that line says, for `apply.sh status`: the flags, `matcher`
    ("compiled", "python" or "upstream"), `cause` (why not the compiled one, if not) and `line`."""
    f = flags()
    cause = None
    if not f["SGLANG_RADIX_FAST_MATCH"]:
        matcher, cause = "upstream", "SGLANG_RADIX_FAST_MATCH=0"
        line = "upstream (SGLANG_RADIX_FAST_MATCH=0: SGLang's own prefix matching)"
    else:
        state, detail = native.state()
        if not f["SGLANG_RADIX_COMPILED_MATCH"]:
            matcher, cause = "python", "SGLANG_RADIX_COMPILED_MATCH=0"
            name = "python (pure-Python packed matcher: SGLANG_RADIX_COMPILED_MATCH=0)"
        elif state == "loaded":
            matcher, name = "compiled", f"compiled (C++ helper loaded from {detail})"
        elif state == "built":
            matcher, name = "compiled", f"compiled (C++ helper built: {detail})"
        elif state == "buildable":
            matcher = "compiled"
            name = f"compiled (C++ helper not built yet: builds at the first RadixCache into {detail})"
        else:
            matcher, cause = "python", f"C++ helper {state}: {detail}"
            name = f"python (pure-Python packed matcher: {cause})"
        extras = ["re-match cache " + ("on" if f["SGLANG_RADIX_REMATCH_CACHE"] else "off")]
        if f["SGLANG_RADIX_TRITON_MATCH"]:
            extras.append(f"triton opt-in on (from {NSA_TRITON_MIN} tokens)")
        line = f"{name}; {'; '.join(extras)}"
    if not as_facts:
        return line
    return {"flags": f, "matcher": matcher, "cause": cause, "line": line}


# ------------------------------------------------------------------------------------------------
# the walk
# ------------------------------------------------------------------------------------------------
class Walker:
    """match_prefix's walk for one RadixCache: page size, key kind and matcher fixed.

    ``walk(cache, key, q, n, form, clock)`` returns 0.5.8's ``_match_prefix_helper(root,
    key[:n])`` result (value list, last node) with the same splits and access times, for the
    query ``q`` (a plain list) in ``form``; ``n`` counts key positions (pairs for EAGLE).
    """

    def __init__(self, cache_is_eagle: bool, page_size: int, check_extra_key: Callable,
                 kind: str, ext=None, triton_ops=None, rematch: Optional[RematchCache] = None,
                 py_matcher: Optional[NsaPrefixMatcher] = None, triton_min: int = NSA_TRITON_MIN,
                 key_class=None, marks_bigram: bool = False):
        self.page_size = page_size
        self.pairs_keys = cache_is_eagle  # tree keys are bigram pairs
        self.key_class = key_class  # SGLang's RadixKey (the walk takes queries of exactly it)
        # RadixKey views (0.5.11 on): match_helper serves, _match_prefix_helper's place
        self.view_keys = hasattr(key_class, "maybe_to_bigram_view")
        if self.view_keys:
            self.keys = KEYS_VIEW if partial_last_page(key_class) else KEYS_VIEW_PAGES
        else:
            self.keys = KEYS_PAIRS if cache_is_eagle else KEYS_INTS
        self._key_ext = 1 if self.view_keys and cache_is_eagle else 0  # raw ints past positions
        # SGLang's conversion of an EAGLE query also sets is_bigram (0.5.10): the walk does too
        self.marks_bigram = marks_bigram
        self.check_extra_key = check_extra_key
        self.ext = ext
        self.rematch = rematch
        self.rematch_min_array = rematch_min(kind, array_ids=True)  # a list query: rematch.min_len
        self.py = py_matcher or NsaPrefixMatcher(
            page_size, cache_is_eagle and not self.view_keys, check_extra_key)
        if self.view_keys and triton_ops is not None and triton_ops.enabled:
            log_once("nsa-fastpath: the radix triton matcher compares bigram tuples, which "
                     "this SGLang's RadixKey does not build: the "
                     f"{kind} matcher serves", logging.WARNING)
            triton_ops = None
        self.triton_ops = triton_ops if triton_ops is not None and triton_ops.enabled else None
        self.triton_min = triton_min
        self.kind = kind if self.triton_ops is None else "triton"
        self.base_kind = kind
        self._pack_query = ext.pack if kind == "compiled" else None
        if self.view_keys:  # ids compared in place (the compiled walk does the same)
            self._pack = None
            cmps = (self._cmp_view_ints, self._cmp_view_chain, self._cmp_python_list)
        elif kind == "compiled":
            self._pack = ext.pack_pairs if cache_is_eagle else ext.pack
            cmps = (self._cmp_compiled_ints, self._cmp_compiled_chain, self._cmp_compiled_pairs)
        else:
            self._pack = None
            cmps = (self._cmp_python_list, self._cmp_python_chain, self._cmp_python_list)
        if self.triton_ops is not None:
            cmps = tuple(self._with_triton(c, form) for form, c in enumerate(cmps))
        self._cmps = cmps
        self._qi = None  # python CHAIN: the query's packed ints, per walk
        self._announced = False  # the matcher's INFO line, at its first walk
        self.scan_max = tuple(scan_max(page_size, form) for form in (INTS, CHAIN, PAIRS))
        if self.kind == "compiled":
            self._walk = self._walk_compiled
        else:
            self._walk = lambda *a: self._walk_py(*a)[:2]

    def describe(self) -> str:
        ps = "page_size=1" if self.page_size == 1 else f"page_size={self.page_size}"
        keys = "EAGLE bigram keys" if self.pairs_keys else "token keys"
        extra = []
        if self.triton_ops is not None:
            extra.append(f"triton {self.triton_ops.describe()} from {self.triton_min} tokens, "
                         f"{self.base_kind} below")
        extra.append("re-match cache " + ("on" if self.rematch is not None else "off"))
        return f"{self.kind} ({ps}, {keys}; {'; '.join(extra)})"

    def snapshot(self, q: list):
        """What an EAGLE query key keeps for the bigram token_ids it builds on first read
        (RadixKey.__getattr__): not the caller's list, which may change after match_prefix
        returns (0.5.8 built the pairs in the call). The compiled matcher packs the ints (no
        reference taken and dropped per int: a list copy costs more, BENCHMARKS radix section);
        else, or where they do not pack, a copy of the list."""
        b = self._pack_query(q) if self._pack_query is not None else None
        return b if b is not None else q[:]

    # -- packed tree keys ------------------------------------------------------------------------
    def packed(self, key0, t0) -> Optional[bytes]:
        """The tree key's ids as int64 bytes (EAGLE: the n + 1 ints its pairs chain through),
        cached on the key; None if they do not pack. Rebuilt if token_ids was reassigned or
        changed length."""
        c = key0._nsa_ints
        if c is not None and c[0] is t0 and c[1] == len(t0):
            return c[2]
        if self._pack is None:
            return node_ints(key0, self.pairs_keys)
        b = self._pack(t0)
        key0._nsa_ints = (t0, len(t0), b)
        return b

    # -- comparisons: each returns 0.5.8's key_match_fn(child.key, key[off:n]) ------------------
    def _generic(self, key0, key, q, off, n, form):
        """SGLang's own comparison (radix_match_py's exact loops), for keys or queries that do
        not pack; CHAIN builds the pairs it needs (min(n - off, len0 + 1) decides paged ends)."""
        stats["generic"] = stats.get("generic", 0) + 1
        if form != CHAIN:
            return self.py.match_at(key0, key, q, off, n, None)
        e = off + min(n - off, len(key0.token_ids) + 1)
        w = list(zip(q[off:e], q[off + 1:e + 1]))
        return self.py.match_at(key0, key, w, 0, len(w), None)

    def _cmp_compiled_ints(self, key0, key, q, off, n):
        t0 = key0.token_ids
        len0 = len(t0)
        rem = n - off
        m = len0 if len0 < rem else rem
        b0 = self.packed(key0, t0)
        if b0 is not None:
            try:
                j = self.ext.first_mismatch(b0, q, off, m)
            except TypeError:
                return self._generic(key0, key, q, off, n, INTS)
            ps = self.page_size
            return j if ps == 1 else paged_result(j, m, len0, rem, ps)
        return self._generic(key0, key, q, off, n, INTS)

    def _cmp_compiled_chain(self, key0, key, q, off, n):
        t0 = key0.token_ids
        len0 = len(t0)
        rem = n - off
        m = len0 if len0 < rem else rem
        b0 = self.packed(key0, t0)
        if b0 is not None:
            try:
                j = self.ext.first_mismatch(b0, q, off, m + 1)
            except TypeError:
                return self._generic(key0, key, q, off, n, CHAIN)
            p = m if j > m else (j - 1 if j else 0)  # ints [0, j) equal: pairs [0, j - 1)
            ps = self.page_size
            return p if ps == 1 else paged_result(p, m, len0, rem, ps)
        return self._generic(key0, key, q, off, n, CHAIN)

    def _cmp_compiled_pairs(self, key0, key, q, off, n):
        t0 = key0.token_ids
        len0 = len(t0)
        rem = n - off
        m = len0 if len0 < rem else rem
        b0 = self.packed(key0, t0)
        if b0 is not None and m:
            try:
                j = self.ext.first_mismatch_pairs(b0, q, off, m)
            except TypeError:
                return self._generic(key0, key, q, off, n, PAIRS)
            ps = self.page_size
            return j if ps == 1 else paged_result(j, m, len0, rem, ps)
        return self._generic(key0, key, q, off, n, PAIRS)

    def _cmp_python_list(self, key0, key, q, off, n):
        return self.py.match_at(key0, key, q, off, n, None)

    def _cmp_view_ints(self, key0, key, q, off, n):
        """RadixKey.match of a tree key and the query's ids [off, n). Lists where it counts a
        partial last page (0.5.11, 0.5.12): radix_match_py's comparisons; else ids of the query's
        own type (0.5.13: array('q')s) by C-level slices, whole pages. Anything else (differing
        extra keys, or types): SGLang's own comparison."""
        if self.keys == KEYS_VIEW and q.__class__ is list:
            return self.py.match_at(key0, key, q, off, n, None)
        t0 = key0.token_ids
        if key0.extra_key != key.extra_key or t0.__class__ is not q.__class__ or \
                self.keys == KEYS_VIEW:
            return self._generic_view(key0, key, q, off, n, INTS)
        len0 = len(t0)
        rem = n - off
        p = ids_prefix(t0, q, off, len0 if len0 < rem else rem)
        ps = self.page_size
        return p if ps == 1 else p // ps * ps

    def _cmp_view_chain(self, key0, key, q, off, n):
        """RadixKey.match of an EAGLE tree key (its raw ints) and the query's pairs [off, n):
        pairs [0, p) are equal when ints [0, p + 1) are; whole pages. Ids that are not both
        lists or both arrays: SGLang's own comparison."""
        t0 = key0.token_ids
        len0 = len(t0) - 1
        rem = n - off
        m = len0 if len0 < rem else rem
        if key0.extra_key != key.extra_key or t0.__class__ is not q.__class__ or m < 0:
            return self._generic_view(key0, key, q, off, n, CHAIN)
        j = ids_prefix(t0, q, off, m + 1)
        p = m if j > m else (j - 1 if j else 0)
        ps = self.page_size
        return p if ps == 1 else p // ps * ps

    def _generic_view(self, key0, key, q, off, n, form):
        """SGLang's own RadixKey.match against the query window its walk would hold."""
        stats["generic"] = stats.get("generic", 0) + 1
        chain = form == CHAIN
        window = self.key_class(q[off : n + chain], key.extra_key, is_bigram=chain)
        return key0.match(window, page_size=self.page_size)

    def _cmp_python_chain(self, key0, key, q, off, n):
        t0 = key0.token_ids
        len0 = len(t0)
        rem = n - off
        m = len0 if len0 < rem else rem
        c = key0._nsa_ints
        # pack a tree key the first time only if the overlap is a fair share of it
        if (c is not None and c[0] is t0 and c[1] == len0) or len0 <= 4 * m:
            b0 = node_ints(key0, True)
            qi = self._qi
            if b0 is not None and (qi is None or qi.ok):
                if qi is None:
                    qi = self._qi = QueryInts(q, True)
                j = bytes_prefix(b0, qi, off, m + 1)
                if j is not None:
                    p = m if j > m else (j - 1 if j else 0)
                    ps = self.page_size
                    return p if ps == 1 else paged_result(p, m, len0, rem, ps)
        return self._generic(key0, key, q, off, n, CHAIN)

    def _with_triton(self, base, form):
        ops, tmin, ps = self.triton_ops, self.triton_min, self.page_size

        def cmp(key0, key, q, off, n):
            len0 = len(key0.token_ids)
            rem = n - off
            m = len0 if len0 < rem else rem
            if m >= tmin:
                try:
                    p = ops.first_mismatch_query(key0, q, off, m, form == CHAIN)
                except Exception as e:  # this comparison on the CPU matcher
                    log_once(f"nsa-fastpath: radix triton matcher failed, the "
                             f"{self.base_kind} matcher takes over: {e!r}", logging.WARNING)
                else:
                    return p if ps == 1 else paged_result(p, m, len0, rem, ps)
            return base(key0, key, q, off, n)

        return cmp

    # -- the walk --------------------------------------------------------------------------------
    def match_helper(self, cache, node, key, clock, page_aligned: bool = True):
        """RadixKey views (0.5.11 on): ``_match_prefix_helper(node, key)``'s (value, last node)
        for the query key SGLang's match_prefix made (page-aligned, EAGLE ones flipped to their
        bigram view); None where the walk does not take it (SGLang's loop runs). Before 0.5.11
        the walk serves match_prefix itself (None here). The key's ids: a list or an array('q');
        ``len(key)`` positions of them (0.5.14's ``limit`` caps them without slicing).
        ``page_aligned`` False (0.5.13 on): match_prefix's key before SGLang page-aligns it,
        which copies its ids; the walk takes the page-aligned prefix in place, and where it
        does not, leaves the key to SGLang's code (and _match_prefix_helper to record it)."""
        if not self.view_keys:
            return None
        q = key.token_ids
        cls = q.__class__
        if not (cache._nsa_walk_ok and node is cache.root_node
                and (cls is list or (cls is array and q.typecode == "q"))
                and key.__class__ is self.key_class and key.is_bigram == self.pairs_keys):
            if page_aligned:
                served("upstream")
            return None
        n = len(key)
        if not page_aligned:
            n = n // self.page_size * self.page_size
        if n <= 0:
            if page_aligned:
                served("upstream")
            return None
        return self.walk(cache, key, q, n, CHAIN if key.is_bigram else INTS, clock)

    def walk(self, cache, key, q: list, n: int, form: int, clock):
        if not self._announced:
            self._announced = True
            log_once(f"nsa-fastpath: radix prefix matcher: {self.describe()}")
        root = cache.root_node
        extra_key = key.extra_key
        ext = 1 if form == CHAIN else 0
        rm = self.rematch if form != PAIRS else None
        fp = None
        self._qi = None
        value = []
        if rm is not None:
            if q.__class__ is list:
                if n >= rm.min_len:  # RematchCache.fingerprint, inline
                    nq = len(q)
                    last, mid = q[-1], q[nq >> 1]
                    fp = (extra_key, nq, id(last), id(mid), last, mid)
            elif n >= self.rematch_min_array:
                fp = rm.fingerprint(q, extra_key, n + ext)
        if fp is not None:
            try:
                entry = rm.entries.get(fp, UNSEEN)
            except TypeError:  # an unhashable extra_key: the walk raises as 0.5.8 does
                fp = None
            if fp is not None and entry is not None and entry is not UNSEEN:
                hit = rm.replay_entry(fp, entry, root, q, clock, value)
                if hit is not None:  # access times set, values appended: resume where it stopped
                    t, steps, stored = hit
                    off = len(stored) - ext
                    path = list(steps)
                    end, end_off = self._walk(cache, key, q, n, form, steps[-1][1], off, t,
                                              value, path)
                    if end_off != off:
                        rm.store(fp, root, q, end_off + ext, path)
                    served("rematch")
                    return value, end
                entry = None  # now a mark
        t = clock()
        root.last_access_time = t
        path = [] if fp is not None and entry is None else None
        node, off = self._walk(cache, key, q, n, form, root, 0, t, value, path)
        if path:
            rm.store(fp, root, q, off + ext, path)
        elif fp is not None and off + ext >= rm.min_len:
            rm.mark(fp, off + ext)
        served(self.kind)
        return value, node

    def _walk_compiled(self, cache, key, q, n, form, node, off, t, value, path):
        """The helper's walk; at a split it returns here, at anything it cannot judge it hands
        over one step to the Python walk (SGLang's own semantics), then takes over again."""
        helper = self.ext.walk
        ps = self.page_size
        extra_key = key.extra_key
        keys = self.keys
        scan_max = self.scan_max[form]
        while True:
            node, off, outcome, prefix_len, child_key = helper(
                node, q, off, n, form, ps, t, value, path, extra_key, keys, scan_max)
            if outcome == 0:  # done
                return node, off
            if outcome == 1:  # split node (the child) at prefix_len
                new_node = cache._split_node(node.key, node, prefix_len)
                value.append(new_node.value)
                if path is not None:
                    path.append((child_key, new_node, new_node.key))
                return new_node, off + prefix_len
            stats["bail"] = stats.get("bail", 0) + 1
            node, off, stop = self._walk_py(cache, key, q, n, form, node, off, t, value, path,
                                            one_step=True)
            if stop:
                return node, off

    def _walk_py(self, cache, key, q, n, form, node, off, t, value, path, one_step=False):
        """0.5.8's loop from ``node`` at key position ``off``; appends (child key, node, node
        key) per node to ``path`` (if given). Returns (node, off, stopped): ``one_step`` stops
        after one node matched whole (stopped False)."""
        ps = self.page_size
        extra_key = key.extra_key
        cmp = self._cmps[form]
        while off < n:
            if ps == 1:
                plain = (q[off], q[off + 1]) if form == CHAIN else q[off]
            else:
                e = off + ps
                if e > n:
                    e = n
                if form == CHAIN:
                    plain = tuple(zip(q[off:e], q[off + 1:e + 1]))
                else:
                    plain = tuple(q[off:e])
            child_key = plain if extra_key is None else (extra_key, plain)
            child = node.children.get(child_key)
            if child is None:
                break
            child.last_access_time = t
            key0 = child.key
            if key0.extra_key != extra_key:
                self.check_extra_key(key0, key)
            prefix_len = cmp(key0, key, q, off, n)
            if prefix_len < len(key0.token_ids) - self._key_ext:
                new_node = cache._split_node(key0, child, prefix_len)
                value.append(new_node.value)
                if path is not None:
                    path.append((child_key, new_node, new_node.key))
                return new_node, off + prefix_len, True
            value.append(child.value)
            if path is not None:
                path.append((child_key, child, key0))
            node = child
            off += prefix_len
            if one_step:
                return node, off, False
        return node, off, True


def make_walker(page_size: int, is_eagle: bool, check_extra_key: Callable, triton_ops=None, *,
                key_class=None, marks_bigram: bool = False):
    """The Walker a RadixCache gets: the flags are read here, once (server start). Loads the
    compiled helper, building it if needed and allowed (logged). ``check_extra_key``: SGLang's
    own check (it raises on differing extra keys), ``key_class``: its RadixKey,
    ``marks_bigram``: conversion_marks_bigram()."""
    f = flags()
    ext = native.load() if f["SGLANG_RADIX_COMPILED_MATCH"] else None
    kind = "compiled" if ext is not None else "python"
    rematch = None
    if f["SGLANG_RADIX_REMATCH_CACHE"]:
        replay = None
        if ext is not None:
            # a path step is checked by finding the node among its parent's children (about 2 ns
            # a child) or by a lookup of its key (hashing it: cheap for page 1, ~0.3 us for a page
            # of 64 ints, ~1.5 us for 64 pairs)
            scan = 4 if page_size == 1 else (256 if is_eagle else 64)

            def replay(root, steps, stored, q, clock, value, _replay=ext.replay):
                return _replay(root, steps, stored, q, clock, value, scan)
        rematch = RematchCache(replay, rematch_min(kind))
    return Walker(is_eagle, page_size, check_extra_key, kind, ext, triton_ops, rematch,
                  key_class=key_class, marks_bigram=marks_bigram)


def partial_last_page(key_class) -> bool:
    """Whether the release's ``RadixKey.match`` (0.5.11 on) counts an equal partial last page of
    two keys' ids as one more page, as 0.5.8's page loop does (0.5.11, 0.5.12), rather than
    rounding every match down to whole pages (0.5.13 on): found by asking its own match."""
    three = key_class([1, 2, 3])
    return three.match(key_class([1, 2, 3]), page_size=2) == 4


def conversion_marks_bigram(cache, key_class) -> bool:
    """Whether SGLang's own EAGLE conversion of a query key (RadixCache.maybe_bigram_convert, to
    0.5.10) also sets its ``is_bigram`` (0.5.10 does, 0.5.8 does not), found by converting a
    probe key with that code, so that the walk leaves a query key as SGLang's match_prefix does.
    Run before the walk is attached (the conversion is then SGLang's own)."""
    convert = getattr(cache, "maybe_bigram_convert", None)
    if convert is None or not cache.is_eagle or hasattr(key_class, "maybe_to_bigram_view"):
        return False
    probe = key_class([1, 2])
    convert(probe)
    return bool(probe.is_bigram)


def _main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description="nsa-fastpath radix prefix matcher")
    ap.add_argument("--build", action="store_true",
                    help="build the C++ helper into $NSA_FASTPATH_BUILD_DIR (or verify it loads)")
    args = ap.parse_args()
    if args.build:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        ok = native.load(allow_build=True) is not None
        print(describe())
        return 0 if ok else 1
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(_main())
