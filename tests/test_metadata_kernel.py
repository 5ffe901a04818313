"""Unit tests of the fused replay-metadata kernels against SGLang 0.5.8's own expressions.

The reference below is the replay branch's arithmetic (arange per request + cat, clamp to topk,
int32 cumsum, repeat_interleave of req_to_token rows, `[:, ::page_size] // page_size`); the
whole-backend parity against SGLang's real methods is in test_parity_nsa.py. Outputs are
poisoned first and every element is checked (page-table cells past a row's kv length must stay
poisoned: the kernels skip them).

CPU: Triton under TRITON_INTERPRET=1. GPU (marker gpu): Triton and the CUDA C++ extension.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

NSA_DIR = Path(__file__).resolve().parent.parent / "overlay/sglang/srt/layers/attention/nsa"
POISON = -777_777
DECODE, VERIFY, DRAFT_EXTEND = 0, 1, 2


def load(name):
    spec = importlib.util.spec_from_file_location(f"nsa_fastpath_{name}", NSA_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


KERNEL = load("triton_metadata_kernel")  # also holds destination_table, shared by both paths


def reference(mode, req_to_token, rpi, seq, accept, n_draft, topk, page_size):
    """SGLang 0.5.8 replay arithmetic (nsa_backend.py, init_forward_metadata_replay_cuda_graph)."""
    seq = seq.long()
    if mode == DECODE:
        kv, ext = seq, torch.ones_like(seq)
    elif mode == VERIFY:
        kv, ext = seq + n_draft, torch.full_like(seq, n_draft)
    else:
        kv, ext = seq, accept.long()
    expanded = torch.cat([torch.arange(k - e + 1, k + 1) for k, e in zip(kv.tolist(), ext.tolist())]
                         + [torch.empty(0, dtype=torch.long)]).to(torch.int32)
    nsa = expanded.clamp(max=topk)
    return {
        "cache_seqlens": kv.to(torch.int32),
        "cu_seqlens_k": torch.cumsum(kv.to(torch.int32), 0, dtype=torch.int32),
        "seqlens_expanded": expanded,
        "nsa_cache_seqlens": nsa,
        "nsa_cu_seqlens_k": torch.cumsum(nsa, 0, dtype=torch.int32),
        "rows": torch.repeat_interleave(rpi.long(), ext),
        "row_kv": torch.repeat_interleave(kv, ext),
    }


def make_case(gen, mode, bs, n_draft, topk, page_size, ctx, long_tail=True):
    pool = max(64, 2 * bs)
    pages = ctx // page_size
    page_ids = torch.randperm(pool * pages * 2, generator=gen)[: pool * pages].view(pool, pages, 1)
    req_to_token = (page_ids * page_size + torch.arange(page_size)).view(pool, -1).to(torch.int32)
    lo = n_draft if mode == DRAFT_EXTEND else 1
    hi = ctx - (n_draft if mode == VERIFY else 0)
    seq = torch.randint(lo, (hi if long_tail else min(hi, 3 * topk)) + 1, (bs,), generator=gen)
    rpi = torch.randperm(pool, generator=gen)[:bs]
    accept = torch.randint(1, n_draft + 1, (bs,), generator=gen, dtype=torch.int32)
    return req_to_token, rpi, seq, accept


def run_kernel(fill, mode, device, req_to_token, rpi, seq, accept, n_draft, topk, page_size, bs,
               n_dest=1):
    """Run `fill` into n_dest poisoned buffer sets; return them (on CPU), checking they agree."""
    rows = bs * (1 if mode == DECODE else n_draft)
    ctx = req_to_token.shape[1]

    def buf(*shape):
        return torch.full(shape, POISON, dtype=torch.int32, device=device)

    sets = []
    for _ in range(n_dest):
        m = SimpleNamespace(
            cache_seqlens_int32=buf(bs), cu_seqlens_k=buf(bs + 1),
            page_table_1=buf(max(rows, 1), ctx),
            nsa_cache_seqlens_int32=buf(max(rows, 1)), nsa_cu_seqlens_k=buf(rows + 1))
        m.real_page_table = buf(max(rows, 1), -(-ctx // page_size)) if page_size > 1 else m.page_table_1
        # decode: SGLang's nsa_seqlens_expanded is the cache_seqlens tensor itself
        m.nsa_seqlens_expanded = m.cache_seqlens_int32 if mode == DECODE else buf(max(rows, 1))
        sets.append(m)
    table = KERNEL.destination_table(sets, device)
    fill(mode, req_to_token=req_to_token.to(device), req_pool_indices=rpi.to(device),
         seq_lens=seq.to(device), accept_length=accept.to(device) if mode == DRAFT_EXTEND else None,
         n_draft=n_draft, topk=topk, page_size=page_size, bs=bs,
         page_table_shape=tuple(sets[0].page_table_1.shape),
         page_table_stride=sets[0].page_table_1.stride(0),
         real_page_table_stride=sets[0].real_page_table.stride(0), dest_table=table)
    outs = []
    for m in sets:
        outs.append({
            "cache_seqlens": m.cache_seqlens_int32.cpu(), "cu_seqlens_k": m.cu_seqlens_k.cpu(),
            "page_table_1": m.page_table_1.cpu(),
            "real_page_table": m.real_page_table.cpu() if page_size > 1 else None,
            "seqlens_expanded": m.nsa_seqlens_expanded.cpu(),
            "nsa_cache_seqlens": m.nsa_cache_seqlens_int32.cpu(),
            "nsa_cu_seqlens_k": m.nsa_cu_seqlens_k.cpu(),
            "decode_alias": mode == DECODE,
        })
    for o in outs[1:]:
        for k, v in o.items():
            assert (v is None and outs[0][k] is None) or isinstance(v, bool) or torch.equal(v, outs[0][k]), k
    return outs[0]


def check(out, ref, req_to_token, page_size):
    n = ref["seqlens_expanded"].shape[0]
    bs = ref["cache_seqlens"].shape[0]
    assert torch.equal(out["cache_seqlens"], ref["cache_seqlens"])
    assert int(out["cu_seqlens_k"][0]) == POISON  # [0] belongs to capture time, never rewritten
    assert torch.equal(out["cu_seqlens_k"][1:], ref["cu_seqlens_k"])
    assert torch.equal(out["seqlens_expanded"][:n], ref["seqlens_expanded"])
    assert torch.equal(out["nsa_cache_seqlens"][:n], ref["nsa_cache_seqlens"])
    assert int(out["nsa_cu_seqlens_k"][0]) == POISON
    assert torch.equal(out["nsa_cu_seqlens_k"][1 : n + 1], ref["nsa_cu_seqlens_k"])
    rows_total = out["page_table_1"].shape[0]
    # rows past the token count: untouched (SGLang 0.5.8 leaves them stale too)
    if n < rows_total and not out["decode_alias"]:
        assert (out["nsa_cache_seqlens"][n:] == POISON).all()
        assert (out["nsa_cu_seqlens_k"][n + 1 :] == POISON).all()
    assert (out["page_table_1"][n:] == POISON).all()
    cols = torch.arange(req_to_token.shape[1])
    for r in range(n):
        kv = int(ref["row_kv"][r])
        src = req_to_token[int(ref["rows"][r])]
        row = out["page_table_1"][r]
        assert torch.equal(row[:kv], src[:kv]), f"row {r}"
        assert (row[cols >= kv] == POISON).all(), f"row {r} written past kv length {kv}"
        if page_size > 1:
            nb = -(-kv // page_size)
            real = out["real_page_table"][r]
            assert torch.equal(real[:nb], src[::page_size][:nb] // page_size), f"real row {r}"
            assert (real[nb:] == POISON).all()
    if page_size > 1:
        assert (out["real_page_table"][n:] == POISON).all()
    assert bs == ref["cache_seqlens"].shape[0]


CASES = [
    # (mode, bs, n_draft, topk, page_size, ctx)
    *[(m, bs, 4, topk, 1, 1200) for m in (DECODE, VERIFY, DRAFT_EXTEND)
      for bs in (1, 3, 8, 32) for topk in (128, 256, 512)],
    *[(m, bs, 4, 128, 64, 4352) for m in (DECODE, VERIFY, DRAFT_EXTEND) for bs in (2, 17)],
    (DRAFT_EXTEND, 1, 1, 128, 1, 300),  # single token
    (DRAFT_EXTEND, 4, 16, 256, 1, 600),  # large extend
    (VERIFY, 64, 2, 2048, 64, 6144),  # large batch, long rows (several column chunks)
    (DECODE, 130, 1, 2048, 1, 5000),
]


def kernel_params():
    yield pytest.param("triton", id="triton")
    yield pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)


def device_for(path):
    """CUDA for the CUDA kernel, and for Triton when NSA_FASTPATH_TEST_DEVICE=cuda (GPU tier)."""
    if path == "cuda" or os.environ.get("NSA_FASTPATH_TEST_DEVICE") == "cuda":
        return "cuda"
    return "cpu"


def fill_fn(path):
    if path == "triton":
        if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
            pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
        return KERNEL.fill_replay_metadata
    wrapper = load("cuda_metadata_wrapper")
    assert wrapper.is_cuda_kernel_available(), wrapper.get_kernel_info()
    return wrapper.fill_replay_metadata_cuda


@pytest.mark.parametrize("path", kernel_params())
@pytest.mark.parametrize("mode,bs,n_draft,topk,page_size,ctx", CASES)
def test_kernel_matches_sglang_arithmetic(path, mode, bs, n_draft, topk, page_size, ctx):
    device = device_for(path)
    fill = fill_fn(path)
    gen = torch.Generator().manual_seed(hash((mode, bs, n_draft, topk, page_size, ctx)) % 2**31)
    r2t, rpi, seq, accept = make_case(gen, mode, bs, n_draft, topk, page_size, ctx)
    out = run_kernel(fill, mode, device, r2t, rpi, seq, accept, n_draft, topk, page_size, bs)
    check(out, reference(mode, r2t, rpi, seq, accept, n_draft, topk, page_size), r2t, page_size)


@pytest.mark.parametrize("path", kernel_params())
@pytest.mark.parametrize("mode,page_size", [(DECODE, 1), (VERIFY, 64), (DRAFT_EXTEND, 64)])
def test_one_launch_fills_every_destination(path, mode, page_size):
    """Multi-step backends: one launch writes the same metadata into 3 buffer sets."""
    device = device_for(path)
    fill = fill_fn(path)
    gen = torch.Generator().manual_seed(7)
    r2t, rpi, seq, accept = make_case(gen, mode, 5, 4, 128, page_size, 1024)
    out = run_kernel(fill, mode, device, r2t, rpi, seq, accept, 4, 128, page_size, 5, n_dest=3)
    check(out, reference(mode, r2t, rpi, seq, accept, 4, 128, page_size), r2t, page_size)


@pytest.mark.parametrize("path", kernel_params())
def test_empty_batch_writes_nothing(path):
    fill = fill_fn(path)
    device = device_for(path)
    r2t = torch.arange(64, dtype=torch.int32).view(2, 32)
    empty = torch.empty(0, dtype=torch.int64)
    out = run_kernel(fill, DRAFT_EXTEND, device, r2t, empty, empty,
                     torch.empty(0, dtype=torch.int32), 4, 128, 1, 0)
    assert out["cache_seqlens"].numel() == 0
    assert (out["cu_seqlens_k"] == POISON).all() and (out["page_table_1"] == POISON).all()
