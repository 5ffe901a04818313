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
"""nsa-fastpath: recognise a RadixCache query matched again unchanged (SGLANG_RADIX_REMATCH_CACHE).

SGLang 0.5.8 matches a waiting request again every scheduler round: FCFS from
``Req.init_next_round_input`` (``fill_ids[:max_prefix_len]``), LPM from ``calc_priority``
(``origin_input_ids + output_ids``). Each time the list is new but holds the same int objects,
and 0.5.8 compares every token again. This cache remembers, per query, where the walk went: the
path of nodes and the query's ints up to where it stopped. A later query is served from it only
if all of this holds, checked on every hit:

- content: the query starts with the remembered ints, element by element (the same object, or an
  int of equal value): O(n) at identity speed (``same_prefix`` of the compiled helper, or
  ``list ==``, which also checks identity first); for an ``array('q')`` query (SGLang 0.5.13 on)
  the remembered values, compared as int64 buffers (memcmp speed);
- structure: the tree still holds the path: the same root, each node still its parent's child
  under the same child key, with the same key object (a split, an eviction, a reset or any
  re-keying breaks this), checked node by node.

Then SGLang's walk over those nodes would find the same nodes and full matches (their keys are
unchanged and equal the query there), so the caller resumes the walk at the last node and offset,
refreshing the same access times; whatever the tree gained since is found from there. Nothing is
trusted that is not checked: a miss is always possible, a wrong hit is not.

Remembering copies the matched ints (about 1.4 ns a token), which a request matched only once
should not pay: the first sighting of a query (by fingerprint: its length, extra key, and the
identity and value of two of its ints) only marks it, if it matched ``min_len`` ints or more;
the walk is remembered when the same query comes again, and served from the third time on.

Bounds: at most ``max_entries`` queries (marks included) and ``max_tokens`` remembered ints
(each a reference to an int the request holds anyway, 8 bytes), least recently used first out;
an entry also pins its path's nodes, whose values cover no more tokens than it remembers.
``clear()`` on reset.
"""
from __future__ import annotations

from typing import Callable, Optional

DEFAULT_MAX_ENTRIES = 512
DEFAULT_MAX_TOKENS = 1 << 20
UNSEEN = object()


def replay_py(root, steps: tuple, stored: list, ints: list, clock, value: list):
    """The compiled helper's ``replay`` in Python: all checks first, then, only if all pass,
    one clock read, the access times and the values; the clock value, or None."""
    n = len(stored)
    if len(ints) < n or ints[:n] != stored:  # list ==: identity first, then ==
        return None
    node = root
    for child_key, child, key in steps:
        if node.children.get(child_key) is not child or child.key is not key:
            return None
        node = child
    t = clock()
    root.last_access_time = t
    for _, child, _ in steps:
        child.last_access_time = t
        value.append(child.value)
    return t


class RematchCache:
    """Per RadixCache. ``entries.get(fingerprint)``: a remembered walk, ``None`` (a mark: the
    next walk is remembered) or absent; ``replay_entry`` serves a validated hit; ``mark`` and
    ``store`` only take walks that matched ``min_len`` ints or more (shorter walks cost less
    than the remembering)."""

    __slots__ = ("replay", "max_entries", "max_tokens", "min_len", "entries", "tokens", "hits",
                 "invalidated", "stores")

    def __init__(self, replay: Optional[Callable] = None, min_len: int = 64,
                 max_entries: int = DEFAULT_MAX_ENTRIES, max_tokens: int = DEFAULT_MAX_TOKENS):
        self.replay = replay or replay_py
        self.min_len = min_len
        self.max_entries = max_entries
        self.max_tokens = max_tokens
        self.entries: dict = {}  # fingerprint -> (root, steps, stored ints) or None (a mark)
        self.tokens = 0
        self.hits = self.invalidated = self.stores = 0

    @staticmethod
    def fingerprint(ints, extra_key, n_ints: int = -1):
        """Cheap: the length, and which objects end and split the query, and their values (a
        request keeps its ints; a new request whose ints took the memory of a freed one's has
        other values there). A different query with the same fingerprint costs a miss only.
        Walker.walk computes the same inline for a list. An ``array('q')`` (SGLang 0.5.13 on)
        holds values, not objects: its first ``n_ints`` ints (the walk's), by length and the
        values there."""
        if ints.__class__ is list:
            n = len(ints)
            last, mid = ints[-1], ints[n >> 1]
            return (extra_key, n, id(last), id(mid), last, mid)
        return (extra_key, n_ints, ints[n_ints - 1], ints[n_ints >> 1])

    def replay_entry(self, fp, entry, root, ints: list, clock, value: list):
        """For ``entry = entries[fp]`` (not a mark): (clock value, steps, stored) after replaying
        it (access times set, values appended to ``value``) if it is valid; else None, and the
        entry is back to a mark (the caller's walk is remembered anew)."""
        e_root, steps, stored = entry
        t = self.replay(root, steps, stored, ints, clock, value) if e_root is root else None
        if t is not None:
            self.entries[fp] = self.entries.pop(fp)  # most recently used last
            self.hits += 1
            return t, steps, stored
        self._drop(fp)  # stale, or another query
        self.entries[fp] = None
        self.invalidated += 1
        return None

    def mark(self, fp, n_ints: int) -> None:
        """A first sighting that matched ``n_ints`` ints: remember the next walk of it (only
        walks worth remembering are marked)."""
        if n_ints >= self.min_len:
            self.entries[fp] = None
            if len(self.entries) > self.max_entries:
                self._drop(next(iter(self.entries)))

    def store(self, fp, root, ints: list, n_ints: int, steps: list) -> None:
        """Remember that the walk over ``steps`` (child key, node, node key) matched the first
        ``n_ints`` ints of ``ints`` exactly (a copy: the caller's list may change later)."""
        if n_ints < self.min_len or n_ints > self.max_tokens or not steps:
            return
        self._drop(fp)
        self.entries[fp] = (root, tuple(steps), ints[:n_ints])
        self.tokens += n_ints
        self.stores += 1
        while len(self.entries) > self.max_entries or self.tokens > self.max_tokens:
            self._drop(next(iter(self.entries)))

    def _drop(self, fp) -> None:
        entry = self.entries.pop(fp, None)
        if entry is not None:
            self.tokens -= len(entry[2])

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()
        self.tokens = 0
