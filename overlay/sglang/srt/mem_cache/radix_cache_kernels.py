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
"""nsa-fastpath: a Triton token-match kernel for RadixCache (opt-in).

A vectorized kernel finds the first position where two int64 token
sequences differ; each ``RadixKey`` caches its tokens as a tensor (``RadixKey.get_tensor()``)
so a tree key is converted once, not on every comparison; sequences shorter than
``min_kernel_len`` (512 tokens) are compared in Python.

It is opt-in (``SGLANG_RADIX_TRITON_MATCH=1`` or ``CacheInitParams.enable_triton_kernels``) and
off by default because the CPU matcher in radix_cache.py is faster as measured
(docs/BENCHMARKS.md, radix section): the query side of every ``match_prefix`` is a fresh Python
list, and turning it into a tensor alone costs about as much as comparing it on the CPU.

Kernel rules (must run on Triton 3.5.1, 3.6 and the 3.9 interpreter): no block pointers, no
libdevice, no inline asm, no multi-config autotune. On CPU tensors the kernel runs only under
``TRITON_INTERPRET=1`` (set before this module is imported); otherwise a torch comparison is used.
"""
from __future__ import annotations

import logging
import os
import struct
from itertools import chain
from typing import Optional

import torch

logger = logging.getLogger(__name__)

try:  # SGLang imports Triton elsewhere too; a missing Triton only disables the kernel.
    import triton
    import triton.language as tl

    _TRITON_ERROR: Optional[str] = None
except Exception as e:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    _TRITON_ERROR = f"{type(e).__name__}: {e}"

DEFAULT_MIN_KERNEL_LEN = 512  # tokens; below it Python compares
BLOCK_SIZE = 1024

if triton is not None:

    @triton.jit
    def _token_match_vectorized_kernel(a_ptr, b_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
        """out[0] = min(out[0], first i in this block with a[i] != b[i]); out[0] preset to n."""
        pid = tl.program_id(0)
        offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < n
        a = tl.load(a_ptr + offs, mask=mask, other=0)
        b = tl.load(b_ptr + offs, mask=mask, other=0)
        cand = tl.where(mask & (a != b), offs, n)
        first = tl.min(cand, axis=0)
        tl.atomic_min(out_ptr, first)


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernel_backend(device: torch.device) -> tuple[str, str]:
    """(backend, why) for tensors on ``device``: 'triton', 'triton-interpreter' or 'torch'."""
    if triton is None:
        return "torch", f"triton unavailable ({_TRITON_ERROR})"
    if device.type == "cuda":
        return "triton", "cuda tensors"
    if triton_interpreted():
        return "triton-interpreter", "TRITON_INTERPRET=1 on cpu tensors"
    return "torch", f"{device.type} tensors without TRITON_INTERPRET"


def _first_mismatch_python(a: torch.Tensor, b: torch.Tensor, n: int) -> int:
    i = 0
    for x, y in zip(a[:n].tolist(), b[:n].tolist()):
        if x != y:
            break
        i += 1
    return i


def _first_mismatch_torch(a: torch.Tensor, b: torch.Tensor, n: int) -> int:
    ne = (a[:n] != b[:n]).nonzero()
    return int(ne[0, 0]) if ne.numel() else n


def _first_mismatch_kernel(a: torch.Tensor, b: torch.Tensor, n: int) -> int:
    out = torch.full((1,), n, dtype=torch.int32, device=a.device)
    grid = (triton.cdiv(n, BLOCK_SIZE),)
    _token_match_vectorized_kernel[grid](a, b, out, n, BLOCK_SIZE=BLOCK_SIZE)
    return int(out.item())


def _ints_tensor(tokens: list, device) -> torch.Tensor:
    """int64 tensor of a list of ids, or of pairs (shape (n, 2)); struct reads Python ints
    about 7x faster than torch.tensor."""
    n = len(tokens)
    try:
        if n and isinstance(tokens[0], tuple):
            flat = struct.pack(f"={2 * n}q", *chain.from_iterable(tokens))
            t = torch.frombuffer(bytearray(flat), dtype=torch.int64).view(n, 2)
        else:
            t = torch.frombuffer(bytearray(struct.pack(f"={n}q", *tokens)), dtype=torch.int64)
    except (struct.error, TypeError, OverflowError, ValueError):
        t = torch.tensor(tokens, dtype=torch.int64)
    return t.to(device)


def token_match_fast(
    a: torch.Tensor,
    b: torch.Tensor,
    min_kernel_len: int = DEFAULT_MIN_KERNEL_LEN,
    backend: Optional[str] = None,
) -> int:
    """Number of leading positions where 1-D int64 tensors ``a`` and ``b`` agree.

    Below ``min_kernel_len`` the comparison runs in Python; otherwise the Triton kernel
    (cuda, or cpu under TRITON_INTERPRET=1) or, where the kernel cannot run, torch ops.
    """
    n = min(a.numel(), b.numel())
    if n == 0:
        return 0
    if n < min_kernel_len:
        return _first_mismatch_python(a, b, n)
    if backend is None:
        backend = kernel_backend(a.device)[0]
    if backend == "torch":
        return _first_mismatch_torch(a, b, n)
    return _first_mismatch_kernel(a.contiguous(), b.contiguous(), n)


class OptimizedRadixCacheOps:
    """The kernel's operation set: prefix lengths of cached RadixKey tensors.

    ``first_mismatch(key0, key1, off, m)`` compares ``key0[0:m]`` with ``key1[off:off+m]`` on the
    tensors ``RadixKey.get_tensor(device)`` caches (bigram keys: pairs, compared flattened) and
    returns the first differing position, or ``m``. radix_cache.py maps that onto SGLang's page
    semantics and uses it only for ``m >= min_kernel_len``.
    """

    def __init__(
        self,
        enable_triton_kernels: bool = True,
        device=None,
        min_kernel_len: int = DEFAULT_MIN_KERNEL_LEN,
    ):
        self.enabled = bool(enable_triton_kernels)
        self.device = torch.device(device if device is not None else "cpu")
        self.min_kernel_len = int(min_kernel_len)
        self.backend, self.why = kernel_backend(self.device)

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        return f"on (backend={self.backend}: {self.why}; min_len={self.min_kernel_len})"

    def first_mismatch(self, key0, key1, off: int, m: int) -> int:
        a = key0.get_tensor(self.device)
        b = key1.get_tensor(self.device)
        if a.dim() == 2:  # bigram keys: (n, 2) pairs
            if b.dim() != 2:
                raise TypeError("bigram key compared with a plain key")
            p = token_match_fast(
                a.reshape(-1)[: 2 * m],
                b.reshape(-1)[2 * off : 2 * (off + m)],
                0,
                self.backend,
            )
            return p // 2
        return token_match_fast(a[:m], b[off : off + m], 0, self.backend)

    def first_mismatch_query(self, key0, q: list, off: int, m: int, chain: bool) -> int:
        """The first differing position of ``key0[0:m]`` and the query ``q[off:off + m]``
        (a list of ids or of bigram pairs), or m; ``chain``: ``q`` holds EAGLE ints whose pairs
        the tree key's pairs are compared with. The query window is made a tensor here (a new
        request's is never cached); the tree key's tensor is cached on it."""
        a = key0.get_tensor(self.device)
        if chain:
            w = _ints_tensor(q[off:off + m + 1], self.device)
            b = torch.stack((w[:-1], w[1:]), 1).reshape(-1)
            return token_match_fast(a.reshape(-1)[: 2 * m], b, 0, self.backend) // 2
        w = _ints_tensor(q[off:off + m], self.device)
        if a.dim() == 2:  # bigram keys: (n, 2) pairs
            return token_match_fast(a.reshape(-1)[: 2 * m], w.reshape(-1), 0, self.backend) // 2
        return token_match_fast(a[:m], w, 0, self.backend)

    def key_match(self, key0, key1) -> int:
        """Page-size-1 prefix length of two RadixKeys; extra keys must be equal."""
        if key0.extra_key != key1.extra_key:
            raise ValueError(
                f"_key_match should be run on the same extra key, but got key0.extra_key={key0.extra_key} != key1.extra_key={key1.extra_key}"
            )
        m = min(len(key0), len(key1))
        if m < self.min_kernel_len:
            i = 0
            for k0, k1 in zip(key0.token_ids, key1.token_ids):
                if k0 != k1:
                    break
                i += 1
            return i
        return self.first_mismatch(key0, key1, 0, m)
