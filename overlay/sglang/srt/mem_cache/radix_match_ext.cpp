// Copyright 2025-2026 nsa-fastpath authors
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.
//
// nsa-fastpath: the compiled helper of RadixCache prefix matching (radix_match.py).
//
// A match_prefix query arrives as a Python list of fresh Python ints (to SGLang 0.5.12) or as an
// array('q') (from 0.5.13). Reading each int's value straight from the object costs about 1 ns a
// token (4 if it left the CPU caches); anything CPython offers from Python (struct, array, numpy,
// list ==) costs 7-50 ns. So this helper reads the query list in place and compares it with tree
// keys kept packed as int64 bytes (or, from 0.5.11, the tree keys' own lists; from 0.5.13 both
// sides' int64 buffers, through the buffer protocol, no copy), and walks RadixCache's nodes
// (radix_match.Walker) with no Python frame per node. CPython C API only (no torch, no
// pybind11): it builds in seconds and loads without torch's libraries.
//
// Semantics are SGLang 0.5.8's, and where this code cannot be sure it does not guess:
// - token equality is `k0 != k1` on ints: only exact ints and bools are read (an int subclass
//   could redefine ==); an int beyond int64 differs from every packed (int64) value;
// - a child is found as `child_key in node.children` finds it: by a real dict lookup of the key
//   0.5.8 would build, or, for small dicts, by comparing the dict's own keys with the query
//   structurally where types make equality certain (exact ints, bools, tuples, str, None:
//   equal values of these hash equal, and dict keys are unique);
// - anything else (another token type, a key that does not pack, differing extra keys, a
//   children mapping that is not a dict) stops the walk at that node ("bail") and the caller
//   takes that step with SGLang's own code.

#include <Python.h>
#if PY_VERSION_HEX < 0x030B0000
#include <longintrepr.h>
#endif

#include <cstdint>
#include <cstring>

namespace {

constexpr int kOk = 1;        // value read
constexpr int kTooBig = 0;    // an int outside int64: equal to no packed value
constexpr int kNotInt = -1;   // not an exact int / bool: the caller must fall back
constexpr Py_ssize_t kPrefetch = 16;  // list items ahead (measured: 8-32 alike, 10% on cold ints)

// Query forms (radix_match.INTS / CHAIN / PAIRS): token ids; EAGLE ints whose bigram pairs
// 0.5.8 would build; EAGLE keys given as pairs.
constexpr int kInts = 0, kChain = 1, kPairs = 2;
// Tree keys (walk's `keys`, radix_match.Walker.keys): token ids, packed; EAGLE bigram tuples,
// packed as the ints they chain through (both cached on the key: _nsa_ints); RadixKey views
// (SGLang 0.5.11 on: the token ids, for EAGLE the raw ints its pairs are a view of), compared in
// place, nothing cached: kKeysView where the release's RadixKey.match counts a partial last page
// as 0.5.8's page loop does (0.5.11, 0.5.12), kKeysViewPages where it rounds every match down to
// whole pages (0.5.13 on). A view key's ids are a list (compared with a list query) or an
// array('q') (with an array('q') query); any other pairing is SGLang's to compare.
constexpr int kKeysInts = 0, kKeysPairs = 1, kKeysView = 2, kKeysViewPages = 3;
// walk() outcomes
constexpr int kDone = 0, kSplit = 1, kBail = 2;

PyObject* s_children;
PyObject* s_last_access_time;
PyObject* s_key;
PyObject* s_token_ids;
PyObject* s_extra_key;
PyObject* s_nsa_ints;
PyObject* s_value;
PyTypeObject* t_defaultdict;
PyTypeObject* t_array;  // array.array

inline int read_int(PyObject* o, int64_t* out) {
  if (!PyLong_CheckExact(o) && !PyBool_Check(o)) return kNotInt;
#if PY_VERSION_HEX >= 0x030C0000
  if (PyUnstable_Long_IsCompact(reinterpret_cast<PyLongObject*>(o))) {
    *out = static_cast<int64_t>(
        PyUnstable_Long_CompactValue(reinterpret_cast<PyLongObject*>(o)));
    return kOk;
  }
#else
  // Up to 3.11: a signed digit count in ob_size; one 30-bit digit (or zero) is compact.
  Py_ssize_t size = Py_SIZE(o);
  if (size == 0) {
    *out = 0;
    return kOk;
  }
  if (size == 1 || size == -1) {
    *out = static_cast<int64_t>(size) *
           static_cast<int64_t>(reinterpret_cast<PyLongObject*>(o)->ob_digit[0]);
    return kOk;
  }
#endif
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
  if (overflow) return kTooBig;
  if (v == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return kNotInt;
  }
  *out = static_cast<int64_t>(v);
  return kOk;
}

inline int64_t load64(const char* base, Py_ssize_t i) {
  int64_t v;
  std::memcpy(&v, base + 8 * i, 8);
  return v;
}

// ---- comparisons against packed keys: >= 0 the first differing index (count if none), -1 at a
// query element that is not an int / a pair of ints (its index in *bad) -------------------------
Py_ssize_t mismatch_ints(const char* base, PyObject** items, Py_ssize_t count, Py_ssize_t* bad) {
  for (Py_ssize_t i = 0; i < count; ++i) {
    // ints not in the CPU caches cost ~4 ns each to reach, ~1 ns if cached: fetch ahead
    if (i + kPrefetch < count) __builtin_prefetch(items[i + kPrefetch]);
    int64_t v;
    int r = read_int(items[i], &v);
    if (r == kNotInt) {
      *bad = i;
      return -1;
    }
    if (r == kTooBig || v != load64(base, i)) return i;
  }
  return count;
}

// a[i] vs b[i], two lists of ints read in place (tree key and query: kKeysView)
Py_ssize_t mismatch_lists(PyObject** a, PyObject** b, Py_ssize_t count, Py_ssize_t* bad) {
  for (Py_ssize_t i = 0; i < count; ++i) {
    if (i + kPrefetch < count) {
      __builtin_prefetch(a[i + kPrefetch]);
      __builtin_prefetch(b[i + kPrefetch]);
    }
    if (a[i] == b[i]) continue;
    int64_t x, y;
    int rx = read_int(a[i], &x), ry = read_int(b[i], &y);
    if (rx == kNotInt || ry == kNotInt) {
      *bad = i;
      return -1;
    }
    if (rx == kOk && ry == kOk) {
      if (x != y) return i;
      continue;
    }
    if (rx != ry) return i;  // one beyond int64, one not: different values
    int ne = PyObject_RichCompareBool(a[i], b[i], Py_NE);  // both beyond int64
    if (ne < 0) {
      PyErr_Clear();
      *bad = i;
      return -1;
    }
    if (ne) return i;
  }
  return count;
}

// a[i] vs b[i], two int64 buffers (tree key and query ids, array('q')): memcmp by blocks, then the
// differing block value by value
Py_ssize_t mismatch_vals(const int64_t* a, const int64_t* b, Py_ssize_t count) {
  constexpr Py_ssize_t kBlock = 64;
  Py_ssize_t i = 0;
  while (i + kBlock <= count && std::memcmp(a + i, b + i, 8 * kBlock) == 0) i += kBlock;
  while (i < count && a[i] == b[i]) ++i;
  return i;
}

// o is an array('q'): its buffer in *view (the caller releases it). 1 yes, 0 no (another type, or
// an array of another typecode), -1 error.
int q_buffer(PyObject* o, Py_buffer* view) {
  if (t_array == nullptr || !Py_IS_TYPE(o, t_array)) return 0;
  if (PyObject_GetBuffer(o, view, PyBUF_FORMAT) < 0) return -1;
  if (view->itemsize != 8 || view->format == nullptr || std::strcmp(view->format, "q") != 0) {
    PyBuffer_Release(view);
    return 0;
  }
  return 1;
}

// pairs[i] vs (packed[i], packed[i + 1]): base holds count + 1 values
Py_ssize_t mismatch_pairs(const char* base, PyObject** items, Py_ssize_t count, Py_ssize_t* bad) {
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* t = items[i];
    int64_t a = 0, b = 0;
    int ra = kNotInt, rb = kNotInt;
    if (PyTuple_CheckExact(t) && PyTuple_GET_SIZE(t) == 2) {
      ra = read_int(PyTuple_GET_ITEM(t, 0), &a);
      rb = read_int(PyTuple_GET_ITEM(t, 1), &b);
    }
    if (ra == kNotInt || rb == kNotInt) {
      *bad = i;
      return -1;
    }
    if (ra == kTooBig || rb == kTooBig || a != load64(base, i) || b != load64(base, i + 1))
      return i;
  }
  return count;
}

// ---- packing tree keys: a new bytes object, None (new ref) if it does not pack, null on error ---
PyObject* pack_ints(PyObject* list) {
  Py_ssize_t n = PyList_GET_SIZE(list);
  PyObject* out = PyBytes_FromStringAndSize(nullptr, 8 * n);
  if (out == nullptr) return nullptr;
  char* dst = PyBytes_AS_STRING(out);
  PyObject** items = reinterpret_cast<PyListObject*>(list)->ob_item;
  for (Py_ssize_t i = 0; i < n; ++i) {
    int64_t v;
    if (read_int(items[i], &v) != kOk) {
      Py_DECREF(out);
      Py_RETURN_NONE;
    }
    std::memcpy(dst + 8 * i, &v, 8);
  }
  return out;
}

// [(a, b), (b, c), ...] -> the n + 1 ints the pairs chain through; None if empty, not pairs of
// packable ints, or not chaining
PyObject* pack_chain(PyObject* list) {
  Py_ssize_t n = PyList_GET_SIZE(list);
  if (n == 0) Py_RETURN_NONE;
  PyObject* out = PyBytes_FromStringAndSize(nullptr, 8 * (n + 1));
  if (out == nullptr) return nullptr;
  char* dst = PyBytes_AS_STRING(out);
  PyObject** items = reinterpret_cast<PyListObject*>(list)->ob_item;
  int64_t prev = 0;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* t = items[i];
    int64_t a, b;
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 2 ||
        read_int(PyTuple_GET_ITEM(t, 0), &a) != kOk ||
        read_int(PyTuple_GET_ITEM(t, 1), &b) != kOk || (i > 0 && a != prev)) {
      Py_DECREF(out);
      Py_RETURN_NONE;
    }
    std::memcpy(dst + 8 * i, &a, 8);
    prev = b;
  }
  std::memcpy(dst + 8 * n, &prev, 8);
  return out;
}

// _key_match_paged's result given p, the first differing position (or m = min_len)
inline Py_ssize_t paged_result(Py_ssize_t p, Py_ssize_t m, Py_ssize_t len0, Py_ssize_t len1,
                               Py_ssize_t ps) {
  if (p < m) return p / ps * ps;
  Py_ssize_t full = m / ps * ps;
  if (full == m) return m;
  // the overlap ends in a partial page: 0.5.8's page slices are equal only if both keys end there
  return len0 == len1 ? full + ps : full;
}

// ---- child keys -------------------------------------------------------------------------------
// Structural equality where types make it certain: 1 equal, 0 different, 2 cannot tell.
inline bool is_int(PyObject* o) { return PyLong_CheckExact(o) || PyBool_Check(o); }

int category(PyObject* o) {  // 1 int, 2 tuple, 3 str, 4 None, 0 other
  if (is_int(o)) return 1;
  if (PyTuple_CheckExact(o)) return 2;
  if (PyUnicode_CheckExact(o)) return 3;
  if (o == Py_None) return 4;
  return 0;
}

int elem_eq(PyObject* x, PyObject* y, int depth = 0) {
  if (x == y) return 1;
  int cx = category(x), cy = category(y);
  if (cx == 0 || cy == 0) return 2;
  if (cx != cy) return 0;
  if (cx == 1) {
    int64_t a, b;
    int ra = read_int(x, &a), rb = read_int(y, &b);
    if (ra == kOk && rb == kOk) return a == b;
    int r = PyObject_RichCompareBool(x, y, Py_EQ);  // big ints: exact either way
    if (r < 0) {
      PyErr_Clear();
      return 2;
    }
    return r;
  }
  if (cx == 2) {
    Py_ssize_t n = PyTuple_GET_SIZE(x);
    if (n != PyTuple_GET_SIZE(y)) return 0;
    if (depth > 2) return 2;
    for (Py_ssize_t i = 0; i < n; ++i) {
      int r = elem_eq(PyTuple_GET_ITEM(x, i), PyTuple_GET_ITEM(y, i), depth + 1);
      if (r != 1) return r;
    }
    return 1;
  }
  if (cx == 3) {
    int r = PyUnicode_Compare(x, y);
    if (r == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      return 2;
    }
    return r == 0;
  }
  return 1;  // None, None
}

// The child key 0.5.8 builds for the query at off: (extra_key, plain) or plain; plain is the
// token (page 1) or the tuple of a page's tokens; EAGLE tokens are pairs. Described, not built.
// The query's tokens are list items (Python ints) or, for an array('q') query, int64 values.
struct QueryKey {
  PyObject* extra;       // extra_key (None: the key is plain)
  int form;
  Py_ssize_t ps;
  PyObject** items;      // q + off (a list query), or
  const int64_t* vals;   // q + off (an array('q') query)
  Py_ssize_t len;        // tokens in the page (e - off)
};

// a stored token vs the int value v: 1 equal, 0 different, 2 cannot tell
inline int val_eq(PyObject* k, int64_t v) {
  if (!is_int(k)) return category(k) ? 0 : 2;
  int64_t a;
  int r = read_int(k, &a);
  if (r == kNotInt) return 2;
  return r == kOk && a == v;  // an int beyond int64 differs from every int64 value
}

// a stored token vs the query's token i
inline int tok_eq(PyObject* k, const QueryKey& Q, Py_ssize_t i) {
  return Q.vals != nullptr ? val_eq(k, Q.vals[i]) : elem_eq(k, Q.items[i]);
}

// a stored pair (tuple) vs the query's pair (token i, token i + 1)
int pair_eq(PyObject* k, const QueryKey& Q, Py_ssize_t i) {
  if (!PyTuple_CheckExact(k)) return category(k) ? 0 : 2;
  if (PyTuple_GET_SIZE(k) != 2) return 0;
  int r = tok_eq(PyTuple_GET_ITEM(k, 0), Q, i);
  if (r != 1) return r;
  return tok_eq(PyTuple_GET_ITEM(k, 1), Q, i + 1);
}

// a stored page item vs the query's item i (a token, or a pair for kChain)
inline int item_eq(PyObject* k, const QueryKey& Q, Py_ssize_t i) {
  return Q.form == kChain ? pair_eq(k, Q, i) : tok_eq(k, Q, i);
}

int plain_eq(PyObject* k, const QueryKey& Q) {
  if (Q.ps == 1) return item_eq(k, Q, 0);
  if (!PyTuple_CheckExact(k)) return category(k) ? 0 : 2;
  if (PyTuple_GET_SIZE(k) != Q.len) return 0;
  for (Py_ssize_t i = 0; i < Q.len; ++i) {
    int r = item_eq(PyTuple_GET_ITEM(k, i), Q, i);
    if (r != 1) return r;
  }
  return 1;
}

// the plain part of a stored key (borrowed), or null with *r = 0 / 2 if it cannot be Q's
PyObject* plain_of(PyObject* k, const QueryKey& Q, int* r) {
  if (Q.extra == Py_None) return k;
  if (!PyTuple_CheckExact(k)) {
    *r = category(k) ? 0 : 2;
    return nullptr;
  }
  if (PyTuple_GET_SIZE(k) != 2) {
    *r = 0;
    return nullptr;
  }
  *r = elem_eq(PyTuple_GET_ITEM(k, 0), Q.extra);
  return *r == 1 ? PyTuple_GET_ITEM(k, 1) : nullptr;
}

int key_eq(PyObject* k, const QueryKey& Q) {
  int r = 1;
  PyObject* plain = plain_of(k, Q, &r);
  return plain == nullptr ? r : plain_eq(plain, Q);
}

// A cheap first look at a stored page key: its size and its last token (siblings share their
// first tokens, not their last). 0 different, 1 maybe equal, 2 cannot tell.
int page_may_eq(PyObject* k, const QueryKey& Q) {
  int r = 1;
  PyObject* plain = plain_of(k, Q, &r);
  if (plain == nullptr) return r;
  if (!PyTuple_CheckExact(plain)) return category(plain) ? 0 : 2;
  if (PyTuple_GET_SIZE(plain) != Q.len) return 0;
  Py_ssize_t i = Q.len - 1;
  return item_eq(PyTuple_GET_ITEM(plain, i), Q, i);
}

// The query's token i as a Python object (new ref): the list's own, or a new int.
inline PyObject* tok_obj(const QueryKey& Q, Py_ssize_t i) {
  if (Q.vals != nullptr) return PyLong_FromLongLong(Q.vals[i]);
  Py_INCREF(Q.items[i]);
  return Q.items[i];
}

// The query's item i (a token, or for kChain the pair (token i, token i + 1)), new ref.
PyObject* item_obj(const QueryKey& Q, Py_ssize_t i) {
  if (Q.form != kChain) return tok_obj(Q, i);
  PyObject* a = tok_obj(Q, i);
  PyObject* b = a == nullptr ? nullptr : tok_obj(Q, i + 1);
  PyObject* pair = b == nullptr ? nullptr : PyTuple_Pack(2, a, b);
  Py_XDECREF(a);
  Py_XDECREF(b);
  return pair;
}

// The key object itself (new ref), for a real dict lookup.
PyObject* build_key(const QueryKey& Q) {
  PyObject* plain;
  if (Q.ps == 1) {
    plain = item_obj(Q, 0);
  } else {
    plain = PyTuple_New(Q.len);
    if (plain == nullptr) return nullptr;
    for (Py_ssize_t i = 0; i < Q.len; ++i) {
      PyObject* item = item_obj(Q, i);
      if (item == nullptr) {
        Py_DECREF(plain);
        return nullptr;
      }
      PyTuple_SET_ITEM(plain, i, item);
    }
  }
  if (plain == nullptr || Q.extra == Py_None) return plain;
  PyObject* key = PyTuple_Pack(2, Q.extra, plain);
  Py_DECREF(plain);
  return key;
}

inline bool is_children_dict(PyObject* d) {
  return PyDict_CheckExact(d) || (t_defaultdict != nullptr && Py_IS_TYPE(d, t_defaultdict));
}

// The tree key's packed ids from its _nsa_ints cache (token_ids, len, bytes), refreshed if
// token_ids was reassigned or changed length. New ref to bytes or None; null on error.
PyObject* packed_key(PyObject* key0, PyObject* t0, bool pairs_keys) {
  Py_ssize_t len0 = PyList_GET_SIZE(t0);
  PyObject* c = PyObject_GetAttr(key0, s_nsa_ints);
  if (c == nullptr) {  // a key class without the cache slot: packed here, cached if it can be
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return nullptr;
    PyErr_Clear();
    c = Py_None;
    Py_INCREF(c);
  }
  if (PyTuple_CheckExact(c) && PyTuple_GET_SIZE(c) == 3 && PyTuple_GET_ITEM(c, 0) == t0 &&
      PyLong_Check(PyTuple_GET_ITEM(c, 1)) &&
      PyLong_AsSsize_t(PyTuple_GET_ITEM(c, 1)) == len0) {
    PyObject* b = PyTuple_GET_ITEM(c, 2);
    Py_INCREF(b);
    Py_DECREF(c);
    return b;
  }
  Py_DECREF(c);
  if (PyErr_Occurred()) return nullptr;
  PyObject* b = pairs_keys ? pack_chain(t0) : pack_ints(t0);
  if (b == nullptr) return nullptr;
  PyObject* entry = Py_BuildValue("(OnO)", t0, len0, b);
  if (entry == nullptr) {
    Py_DECREF(b);
    return nullptr;
  }
  if (PyObject_SetAttr(key0, s_nsa_ints, entry) < 0) {  // not cacheable: used once
    if (!PyErr_ExceptionMatches(PyExc_AttributeError) && !PyErr_ExceptionMatches(PyExc_TypeError)) {
      Py_DECREF(entry);
      Py_DECREF(b);
      return nullptr;
    }
    PyErr_Clear();
  }
  Py_DECREF(entry);
  return b;
}

inline bool is_view(int keys) { return keys == kKeysView || keys == kKeysViewPages; }

// A scanned dict entry whose key may equal the query's page: RadixCache builds a child key from
// the first page of the child's own key (tuple(key.token_ids[:page_size])), so its items are
// those very objects. If they are (identity), the key equals the query's page exactly when the
// child's packed key does over that page: a memcmp-speed check instead of comparing every
// token (or pair) of the page structurally. 1 equal, 0 different, 2 cannot tell this way (an
// array('q') tree key's items are new ints each read: never the key's objects).
int page_eq_via_child(PyObject* k, PyObject* child, const QueryKey& Q, int keys) {
  if (Q.vals != nullptr) return 2;
  int r = 1;
  PyObject* plain = plain_of(k, Q, &r);
  if (plain == nullptr) return r;
  if (!PyTuple_CheckExact(plain) || PyTuple_GET_SIZE(plain) != Q.len) return 2;
  PyObject* key0 = PyObject_GetAttr(child, s_key);
  if (key0 == nullptr) {
    PyErr_Clear();
    return 2;
  }
  PyObject* t0 = PyObject_GetAttr(key0, s_token_ids);
  PyObject* b = nullptr;
  r = 2;
  if (t0 == nullptr) {
    PyErr_Clear();
  } else if (is_view(keys) && Q.form == kInts && PyList_CheckExact(t0) &&
             PyList_GET_SIZE(t0) >= Q.len) {  // the page's ints, in place
    bool same = true;
    for (Py_ssize_t i = 0; i < Q.len && same; ++i)
      same = PyTuple_GET_ITEM(plain, i) == PyList_GET_ITEM(t0, i);
    if (same) {
      Py_ssize_t bad = 0;
      Py_ssize_t j = mismatch_lists(reinterpret_cast<PyListObject*>(t0)->ob_item, Q.items,
                                    Q.len, &bad);
      r = j < 0 ? 2 : j == Q.len;
    }
  } else if (!is_view(keys) && PyList_CheckExact(t0) && PyList_GET_SIZE(t0) >= Q.len) {
    bool same = true;
    for (Py_ssize_t i = 0; i < Q.len && same; ++i)
      same = PyTuple_GET_ITEM(plain, i) == PyList_GET_ITEM(t0, i);
    if (same) b = packed_key(key0, t0, keys == kKeysPairs);
    if (b == nullptr) {
      PyErr_Clear();
    } else if (b != Py_None) {
      Py_ssize_t bad = 0, j;
      const char* base = PyBytes_AS_STRING(b);
      if (Q.form == kPairs) {
        j = mismatch_pairs(base, Q.items, Q.len, &bad);
        r = j < 0 ? 2 : j == Q.len;
      } else {
        Py_ssize_t count = Q.form == kChain ? Q.len + 1 : Q.len;
        j = PyBytes_GET_SIZE(b) / 8 >= count ? mismatch_ints(base, Q.items, count, &bad) : -1;
        r = j < 0 ? 2 : j == count;
      }
    }
  }
  Py_XDECREF(b);
  Py_XDECREF(t0);
  Py_DECREF(key0);
  return r;
}

// `child_key in children`: 1 found (*child borrowed, *dkey new ref: the dict's key or an equal
// one), 0 absent, -1 error. Small dicts are scanned (no key built or hashed: for EAGLE pages
// that is 64 tuples per node); pages are first told apart by their last token, then checked
// through the child's packed key (page_eq_via_child) or token by token; a scan that meets a key
// it cannot judge, or more than two pages alike at the end, does the real lookup.
int find_child(PyObject* children, const QueryKey& Q, Py_ssize_t scan_max, int keys,
               PyObject** child, PyObject** dkey) {
  Py_ssize_t size = PyDict_GET_SIZE(children);
  if (size == 0) return 0;
  bool direct = Q.ps == 1 && Q.form != kChain && Q.extra == Py_None;  // the key is q[off]
  if (!direct && size <= scan_max) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    bool unsure = false;
    int alike = 0;
    while (PyDict_Next(children, &pos, &k, &v)) {
      int r = Q.ps > 1 ? page_may_eq(k, Q) : 1;
      if (r == 1) {
        if (Q.ps > 1 && ++alike > 2) {
          unsure = true;
          break;
        }
        r = Q.ps > 1 ? page_eq_via_child(k, v, Q, keys) : 2;
        if (r == 2) r = key_eq(k, Q);
      }
      if (r == 1) {
        *child = v;
        Py_INCREF(k);
        *dkey = k;
        return 1;
      }
      if (r == 2) unsure = true;
    }
    if (!unsure) return 0;
  }
  PyObject* key = build_key(Q);
  if (key == nullptr) return -1;
  PyObject* v = PyDict_GetItemWithError(children, key);
  if (v == nullptr) {
    Py_DECREF(key);
    return PyErr_Occurred() ? -1 : 0;
  }
  *child = v;
  *dkey = key;
  return 1;
}

// ---- Python-facing functions ------------------------------------------------------------------
bool get_ssize(PyObject* o, Py_ssize_t* out, const char* what) {
  Py_ssize_t v = PyLong_AsSsize_t(o);
  if (v == -1 && PyErr_Occurred()) return false;
  if (v < 0) {
    PyErr_Format(PyExc_ValueError, "%s must be >= 0", what);
    return false;
  }
  *out = v;
  return true;
}

PyObject* not_int(Py_ssize_t i) {
  PyErr_Format(PyExc_TypeError, "token at position %zd is not an int (or a pair of ints)", i);
  return nullptr;
}

// first_mismatch(packed: bytes, ints: list, off: int, count: int) -> int
// The first i in [0, count) with packed[i] != ints[off + i], or count. TypeError at a token that
// is not an int.
PyObject* first_mismatch(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  Py_ssize_t off, count;
  if (nargs != 4 || !PyBytes_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
    PyErr_SetString(PyExc_TypeError, "first_mismatch(packed: bytes, ints: list, off, count)");
    return nullptr;
  }
  if (!get_ssize(args[2], &off, "off") || !get_ssize(args[3], &count, "count")) return nullptr;
  if (off > PyList_GET_SIZE(args[1]) || count > PyList_GET_SIZE(args[1]) - off ||
      count > PyBytes_GET_SIZE(args[0]) / 8) {
    PyErr_SetString(PyExc_IndexError, "first_mismatch: range outside the key or the query");
    return nullptr;
  }
  Py_ssize_t bad = 0;
  Py_ssize_t j = mismatch_ints(PyBytes_AS_STRING(args[0]),
                               reinterpret_cast<PyListObject*>(args[1])->ob_item + off, count,
                               &bad);
  return j < 0 ? not_int(off + bad) : PyLong_FromSsize_t(j);
}

// first_mismatch_pairs(packed: bytes, pairs: list, off: int, count: int) -> int
// For bigram pairs and a key packed as the n + 1 ints its pairs chain through: the first i in
// [0, count) with pairs[off + i] != (packed[i], packed[i + 1]), or count.
PyObject* first_mismatch_pairs(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  Py_ssize_t off, count;
  if (nargs != 4 || !PyBytes_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
    PyErr_SetString(PyExc_TypeError, "first_mismatch_pairs(packed: bytes, pairs: list, off, count)");
    return nullptr;
  }
  if (!get_ssize(args[2], &off, "off") || !get_ssize(args[3], &count, "count")) return nullptr;
  if (off > PyList_GET_SIZE(args[1]) || count > PyList_GET_SIZE(args[1]) - off ||
      (count > 0 && count + 1 > PyBytes_GET_SIZE(args[0]) / 8)) {
    PyErr_SetString(PyExc_IndexError, "first_mismatch_pairs: range outside the key or the query");
    return nullptr;
  }
  Py_ssize_t bad = 0;
  Py_ssize_t j = mismatch_pairs(PyBytes_AS_STRING(args[0]),
                                reinterpret_cast<PyListObject*>(args[1])->ob_item + off, count,
                                &bad);
  return j < 0 ? not_int(off + bad) : PyLong_FromSsize_t(j);
}

// pack(ints: list) -> bytes | None: native int64
PyObject* pack(PyObject*, PyObject* arg) {
  if (!PyList_CheckExact(arg)) Py_RETURN_NONE;
  return pack_ints(arg);
}

// pack_pairs(pairs: list) -> bytes | None: the n + 1 ints bigram pairs chain through
PyObject* pack_pairs(PyObject*, PyObject* arg) {
  if (!PyList_CheckExact(arg)) Py_RETURN_NONE;
  return pack_chain(arg);
}

// same_prefix(stored, ints) -> bool: len(stored) <= len(ints) and each stored[i] is ints[i] or
// both are ints of equal value (exact ints / bools only): two lists, or two array('q')s (their
// int64 values compared)
PyObject* same_prefix(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs == 2 && !PyList_CheckExact(args[0])) {
    Py_buffer a, b;
    int ra = q_buffer(args[0], &a);
    if (ra < 0) return nullptr;
    int rb = ra == 1 ? q_buffer(args[1], &b) : 0;
    if (rb < 0) {
      PyBuffer_Release(&a);
      return nullptr;
    }
    if (ra == 1 && rb == 1) {
      Py_ssize_t n = a.len / 8;
      bool same = n <= b.len / 8 &&
                  mismatch_vals(static_cast<const int64_t*>(a.buf),
                                static_cast<const int64_t*>(b.buf), n) == n;
      PyBuffer_Release(&a);
      PyBuffer_Release(&b);
      return PyBool_FromLong(same);
    }
    if (ra == 1) PyBuffer_Release(&a);
  }
  if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
    PyErr_SetString(PyExc_TypeError,
                    "same_prefix(stored, ints): two lists or two array('q')s");
    return nullptr;
  }
  Py_ssize_t n = PyList_GET_SIZE(args[0]);
  if (n > PyList_GET_SIZE(args[1])) Py_RETURN_FALSE;
  PyObject** a = reinterpret_cast<PyListObject*>(args[0])->ob_item;
  PyObject** b = reinterpret_cast<PyListObject*>(args[1])->ob_item;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (a[i] == b[i]) continue;
    int64_t x, y;
    if (read_int(a[i], &x) != kOk || read_int(b[i], &y) != kOk || x != y) Py_RETURN_FALSE;
  }
  Py_RETURN_TRUE;
}

// walk(node, q, off, n, form, ps, t, value, path, extra_key, keys, scan_max)
//   -> (node, off, outcome, prefix_len, child_key)
// 0.5.8's _match_prefix_helper loop from `node` at key position `off` of the query `q` (a list;
// for view keys also an array('q'), read through its buffer) (n key positions; EAGLE CHAIN: pair
// i is (q[i], q[i + 1])), over tree keys of kind `keys` (for view keys: RadixKey.match's, whose
// EAGLE matches are rounded down to whole pages; kKeysViewPages: every match): each child found gets
// last_access_time = t, its value appended to `value` and, if `path` is a list, (child key,
// child, child.key) appended to it. Outcomes: done (node, off: where the walk stops); split
// (node: the child to split at prefix_len, child_key its key: the caller calls _split_node);
// bail (node, off: the caller takes this step itself).
PyObject* walk(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 12) {
    PyErr_SetString(PyExc_TypeError, "walk() takes 12 arguments");
    return nullptr;
  }
  PyObject* node = args[0];
  PyObject* q = args[1];
  Py_ssize_t off, n, ps, scan_max;
  long form = PyLong_AsLong(args[4]);
  PyObject* t = args[6];
  PyObject* value = args[7];
  PyObject* path = args[8];
  PyObject* extra = args[9];
  long keys = PyLong_AsLong(args[10]);
  if (!get_ssize(args[2], &off, "off") || !get_ssize(args[3], &n, "n") ||
      !get_ssize(args[5], &ps, "ps") || !get_ssize(args[11], &scan_max, "scan_max") ||
      (keys == -1 && PyErr_Occurred()) || (form == -1 && PyErr_Occurred()))
    return nullptr;
  if (!PyList_CheckExact(value) || (path != Py_None && !PyList_CheckExact(path)) ||
      form < kInts || form > kPairs || ps < 1 || keys < kKeysInts || keys > kKeysViewPages ||
      (is_view(keys) && form == kPairs)) {
    PyErr_SetString(PyExc_TypeError, "walk: bad arguments");
    return nullptr;
  }
  // the query's ids: a list's items, or (view keys) an array('q')'s values, held until the end
  PyObject** qi = nullptr;
  const int64_t* qv = nullptr;
  Py_buffer qb;
  Py_ssize_t qlen;
  if (PyList_CheckExact(q)) {
    qi = reinterpret_cast<PyListObject*>(q)->ob_item;
    qlen = PyList_GET_SIZE(q);
  } else {
    int rq = is_view(keys) ? q_buffer(q, &qb) : 0;
    if (rq < 0) return nullptr;
    if (rq == 0) {
      PyErr_SetString(PyExc_TypeError, "walk: the query is not a list (or, for view keys, an "
                                       "array('q'))");
      return nullptr;
    }
    qv = static_cast<const int64_t*>(qb.buf);
    qlen = qb.len / 8;
  }
  if (n + (form == kChain ? 1 : 0) > qlen && n > 0) {
    if (qv != nullptr) PyBuffer_Release(&qb);
    PyErr_SetString(PyExc_IndexError, "walk: n beyond the query");
    return nullptr;
  }
  Py_INCREF(node);
  int outcome = kDone;
  Py_ssize_t prefix_len = 0;
  PyObject* split_key = Py_None;
  Py_INCREF(split_key);
  while (off < n) {
    PyObject* children = PyObject_GetAttr(node, s_children);
    if (children == nullptr) goto error;
    if (!is_children_dict(children)) {
      Py_DECREF(children);
      outcome = kBail;
      break;
    }
    QueryKey Q{extra, static_cast<int>(form), ps, qi ? qi + off : nullptr, qv ? qv + off : nullptr,
               (off + ps < n ? off + ps : n) - off};
    PyObject *child = nullptr, *dkey = nullptr;
    int found = find_child(children, Q, scan_max, static_cast<int>(keys), &child, &dkey);
    if (found < 0) {
      Py_DECREF(children);
      goto error;
    }
    if (found == 0) {
      Py_DECREF(children);
      break;
    }
    Py_INCREF(child);
    Py_DECREF(children);
    // from here: child and dkey are owned
    PyObject *key0 = nullptr, *ek = nullptr, *t0 = nullptr, *b = nullptr;
    Py_ssize_t len0, rem, m, j, bad, p;
    int ne;
    if (PyObject_SetAttr(child, s_last_access_time, t) < 0) goto step_error;
    key0 = PyObject_GetAttr(child, s_key);
    if (key0 == nullptr) goto step_error;
    ek = PyObject_GetAttr(key0, s_extra_key);
    if (ek == nullptr) goto step_error;
    ne = ek == extra ? 0 : PyObject_RichCompareBool(ek, extra, Py_NE);
    Py_DECREF(ek);
    if (ne != 0) {  // differing extra keys: 0.5.8 raises; the caller does it
      if (ne < 0) PyErr_Clear();
      goto step_bail;
    }
    t0 = PyObject_GetAttr(key0, s_token_ids);
    if (t0 == nullptr) goto step_error;
    bad = 0;
    if (is_view(keys)) {  // the key's own ids; an EAGLE key's positions are its pairs
      Py_buffer kb;
      if (qv == nullptr) {  // a list query: a list key
        if (!PyList_CheckExact(t0)) goto step_bail;
        len0 = PyList_GET_SIZE(t0);
      } else {  // an array('q') query: an array('q') key
        int rk = q_buffer(t0, &kb);
        if (rk < 0) goto step_error;
        if (rk == 0) goto step_bail;
        len0 = kb.len / 8;
      }
      if (form == kChain) len0 = len0 > 0 ? len0 - 1 : -1;
      rem = n - off;
      m = len0 < rem ? len0 : rem;
      if (m < 0) {  // an EAGLE key of no ints: SGLang's comparison
        if (qv != nullptr) PyBuffer_Release(&kb);
        goto step_bail;
      }
      Py_ssize_t count = form == kChain ? m + 1 : m;  // ints [0, m + 1) make pairs [0, m)
      if (qv == nullptr) {
        j = mismatch_lists(reinterpret_cast<PyListObject*>(t0)->ob_item, qi + off, count, &bad);
      } else {
        j = mismatch_vals(static_cast<const int64_t*>(kb.buf), qv + off, count);
        PyBuffer_Release(&kb);
      }
      if (j < 0) goto step_bail;  // a token that is not an int: SGLang's comparison
      p = form == kChain ? (j > m ? m : (j ? j - 1 : 0)) : j;  // ints [0, j), pairs [0, j - 1)
      if (ps > 1)  // RadixKey.match: whole pages (0.5.11, 0.5.12: but a partial last page of ids)
        p = keys == kKeysView && form == kInts ? paged_result(p, m, len0, rem, ps) : p / ps * ps;
      goto compared;
    }
    if (!PyList_CheckExact(t0)) goto step_bail;
    len0 = PyList_GET_SIZE(t0);
    b = packed_key(key0, t0, keys == kKeysPairs);
    if (b == nullptr) goto step_error;
    if (b == Py_None) goto step_bail;
    rem = n - off;
    m = len0 < rem ? len0 : rem;
    if (form == kInts) {
      p = mismatch_ints(PyBytes_AS_STRING(b), qi + off, m, &bad);
    } else if (form == kChain) {
      j = PyBytes_GET_SIZE(b) / 8 >= m + 1 ? mismatch_ints(PyBytes_AS_STRING(b), qi + off, m + 1, &bad)
                                           : -2;
      p = j < 0 ? j : (j > m ? m : (j ? j - 1 : 0));  // ints [0, j) equal: pairs [0, j - 1)
    } else {
      p = m == 0 ? 0 : mismatch_pairs(PyBytes_AS_STRING(b), qi + off, m, &bad);
    }
    if (p < 0) goto step_bail;  // a query token that is not an int: SGLang's comparison
    if (ps > 1) p = paged_result(p, m, len0, rem, ps);
    Py_DECREF(b);
    b = nullptr;
  compared:
    if (p < len0) {  // the caller splits the child
      Py_DECREF(node);
      node = child;
      child = nullptr;
      Py_DECREF(split_key);
      split_key = dkey;
      dkey = nullptr;
      outcome = kSplit;
      prefix_len = p;
      Py_DECREF(key0);
      Py_DECREF(t0);
      break;
    }
    {
      PyObject* v = PyObject_GetAttr(child, s_value);
      if (v == nullptr) goto step_error;
      int rc = PyList_Append(value, v);
      Py_DECREF(v);
      if (rc < 0) goto step_error;
      if (path != Py_None) {
        PyObject* step = PyTuple_Pack(3, dkey, child, key0);
        if (step == nullptr) goto step_error;
        rc = PyList_Append(path, step);
        Py_DECREF(step);
        if (rc < 0) goto step_error;
      }
    }
    Py_DECREF(key0);
    Py_DECREF(t0);
    Py_DECREF(dkey);
    Py_DECREF(node);
    node = child;  // owned
    off += p;
    continue;
  step_bail:
    Py_XDECREF(key0);
    Py_XDECREF(t0);
    Py_XDECREF(b);
    Py_DECREF(dkey);
    Py_DECREF(child);
    outcome = kBail;
    break;
  step_error:
    Py_XDECREF(key0);
    Py_XDECREF(t0);
    Py_XDECREF(b);
    Py_DECREF(dkey);
    Py_DECREF(child);
    goto error;
  }
  if (qv != nullptr) PyBuffer_Release(&qb);
  return Py_BuildValue("(NninN)", node, off, outcome, prefix_len, split_key);
error:
  if (qv != nullptr) PyBuffer_Release(&qb);
  Py_DECREF(node);
  Py_DECREF(split_key);
  return nullptr;
}

// Is `child` node.children[k] (the same dict entry)? 1 yes, 0 no, -1 error.
int holds(PyObject* node, PyObject* k, PyObject* child, Py_ssize_t scan_max) {
  PyObject* children = PyObject_GetAttr(node, s_children);
  if (children == nullptr) return -1;
  int r = 0;
  if (!PyDict_Check(children)) {
    r = 0;  // not a dict: no hit (the caller walks with SGLang's code)
  } else if (PyDict_GET_SIZE(children) <= scan_max) {
    Py_ssize_t pos = 0;
    PyObject *dk, *v;
    while (PyDict_Next(children, &pos, &dk, &v)) {
      if (v == child) {
        r = dk == k ? 1 : PyObject_RichCompareBool(dk, k, Py_EQ);
        break;
      }
    }
  } else {
    PyObject* v = PyDict_GetItemWithError(children, k);
    r = v == child ? 1 : (PyErr_Occurred() ? -1 : 0);
  }
  Py_DECREF(children);
  return r;
}

// replay(root, steps, stored, ints, clock, value, scan_max) -> t | None
// A re-match hit, all or nothing: if the tree still holds every step (child key, node, node key)
// from `root` and `ints` starts with `stored` (two lists: same objects or equal ints; two
// array('q')s: equal values), reads the clock
// once, sets root's and each node's last_access_time to it, appends each node's value to
// `value` and returns it; else changes nothing and returns None.
PyObject* replay(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  Py_ssize_t scan_max;
  if (nargs != 7 || !PyTuple_CheckExact(args[1]) || !PyList_CheckExact(args[5]) ||
      !get_ssize(args[6], &scan_max, "scan_max")) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_TypeError, "replay(root, steps: tuple, stored, ints, clock, "
                                       "value: list, scan_max)");
    return nullptr;
  }
  PyObject* root = args[0];
  PyObject* steps = args[1];
  PyObject* value = args[5];
  PyObject* vargs[2] = {args[2], args[3]};
  PyObject* same = same_prefix(nullptr, vargs, 2);
  if (same == nullptr) return nullptr;
  bool ok = same == Py_True;
  Py_DECREF(same);
  if (!ok) Py_RETURN_NONE;
  Py_ssize_t nsteps = PyTuple_GET_SIZE(steps);
  PyObject* node = root;
  for (Py_ssize_t i = 0; i < nsteps; ++i) {
    PyObject* step = PyTuple_GET_ITEM(steps, i);
    if (!PyTuple_CheckExact(step) || PyTuple_GET_SIZE(step) != 3) Py_RETURN_NONE;
    PyObject* child = PyTuple_GET_ITEM(step, 1);
    int r = holds(node, PyTuple_GET_ITEM(step, 0), child, scan_max);
    if (r < 0) return nullptr;
    if (r == 0) Py_RETURN_NONE;
    PyObject* key = PyObject_GetAttr(child, s_key);
    if (key == nullptr) return nullptr;
    Py_DECREF(key);  // compared by identity only; the step tuple keeps it alive
    if (key != PyTuple_GET_ITEM(step, 2)) Py_RETURN_NONE;
    node = child;
  }
  PyObject* t = PyObject_CallNoArgs(args[4]);
  if (t == nullptr) return nullptr;
  if (PyObject_SetAttr(root, s_last_access_time, t) < 0) goto error;
  for (Py_ssize_t i = 0; i < nsteps; ++i) {
    PyObject* child = PyTuple_GET_ITEM(PyTuple_GET_ITEM(steps, i), 1);
    if (PyObject_SetAttr(child, s_last_access_time, t) < 0) goto error;
    PyObject* v = PyObject_GetAttr(child, s_value);
    if (v == nullptr) goto error;
    int rc = PyList_Append(value, v);
    Py_DECREF(v);
    if (rc < 0) goto error;
  }
  return t;
error:
  Py_DECREF(t);
  return nullptr;
}

#define NSA_FASTCALL(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(f))

PyMethodDef kMethods[] = {
    {"first_mismatch", NSA_FASTCALL(first_mismatch), METH_FASTCALL,
     "first_mismatch(packed, ints, off, count) -> first differing position"},
    {"first_mismatch_pairs", NSA_FASTCALL(first_mismatch_pairs), METH_FASTCALL,
     "first_mismatch_pairs(packed, pairs, off, count) -> first differing pair"},
    {"pack", pack, METH_O, "pack(ints) -> int64 bytes or None"},
    {"pack_pairs", pack_pairs, METH_O, "pack_pairs(pairs) -> the chained ints as int64 bytes or None"},
    {"same_prefix", NSA_FASTCALL(same_prefix), METH_FASTCALL,
     "same_prefix(stored, ints) -> ints starts with stored (identity or value)"},
    {"walk", NSA_FASTCALL(walk), METH_FASTCALL,
     "walk(node, q, off, n, form, ps, t, value, path, extra_key, keys, scan_max)"},
    {"replay", NSA_FASTCALL(replay), METH_FASTCALL,
     "replay(root, steps, stored, ints, clock, value, scan_max) -> t or None"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "nsa_radix_match_ext",
                       "nsa-fastpath RadixCache prefix-match helper", -1, kMethods,
                       nullptr, nullptr, nullptr, nullptr};

}  // namespace

// Bumped whenever the functions above change meaning; radix_match_native.py checks it.
#define NSA_ABI_VERSION 4

PyMODINIT_FUNC PyInit_nsa_radix_match_ext(void) {
  s_children = PyUnicode_InternFromString("children");
  s_last_access_time = PyUnicode_InternFromString("last_access_time");
  s_key = PyUnicode_InternFromString("key");
  s_token_ids = PyUnicode_InternFromString("token_ids");
  s_extra_key = PyUnicode_InternFromString("extra_key");
  s_nsa_ints = PyUnicode_InternFromString("_nsa_ints");
  s_value = PyUnicode_InternFromString("value");
  if (!s_children || !s_last_access_time || !s_key || !s_token_ids || !s_extra_key ||
      !s_nsa_ints || !s_value)
    return nullptr;
  PyObject* collections = PyImport_ImportModule("collections");
  if (collections == nullptr) return nullptr;
  PyObject* dd = PyObject_GetAttrString(collections, "defaultdict");
  Py_DECREF(collections);
  if (dd == nullptr || !PyType_Check(dd)) {
    Py_XDECREF(dd);
    return nullptr;
  }
  t_defaultdict = reinterpret_cast<PyTypeObject*>(dd);  // kept for the process
  PyObject* array_mod = PyImport_ImportModule("array");
  if (array_mod == nullptr) return nullptr;
  PyObject* at = PyObject_GetAttrString(array_mod, "array");
  Py_DECREF(array_mod);
  if (at == nullptr || !PyType_Check(at)) {
    Py_XDECREF(at);
    return nullptr;
  }
  t_array = reinterpret_cast<PyTypeObject*>(at);  // kept for the process
  PyObject* m = PyModule_Create(&kModule);
  if (m == nullptr) return nullptr;
  if (PyModule_AddIntConstant(m, "ABI_VERSION", NSA_ABI_VERSION) < 0 ||
      PyModule_AddIntConstant(m, "DONE", kDone) < 0 ||
      PyModule_AddIntConstant(m, "SPLIT", kSplit) < 0 ||
      PyModule_AddIntConstant(m, "BAIL", kBail) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
