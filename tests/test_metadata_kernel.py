"""Unit tests of the fused replay-metadata kernels against SGLang 0.5.8's own expressions.

The reference below is the replay branch's arithmetic (arange per request + cat, clamp to topk,
int32 cumsum, repeat_interleave of req_to_token rows, `[:, ::page_size] // page_size`); the
whole-backend parity against SGLang's real methods is in test_parity_nsa.py. Outputs are
poisoned first and every element is checked (page-table cells past a row's kv length must stay
poisoned: the kernels skip them). Inputs come as SGLang's CUDA-graph runners pass them (int32
buffers), and also as int64 (a ScheduleBatch's own tensors), strided, out of range and of the
wrong dtype: each gives the right output or a clear error.

CPU: Triton under TRITON_INTERPRET=1. GPU (marker gpu): Triton and the CUDA C++ extension.
The modules come from the tree scripts/apply.sh patched (fixture `nsa_modules`).
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
    """A torch-only overlay module (cuda_metadata_wrapper) loaded by path, without SGLang."""
    spec = importlib.util.spec_from_file_location(f"nsa_fastpath_{name}", NSA_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def nsa(nsa_modules):
    return nsa_modules


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
    """req_to_token as an allocator fills it; inputs in the CUDA-graph runners' dtypes (int32)."""
    pool = max(64, 2 * bs)
    pages = ctx // page_size
    page_ids = torch.randperm(pool * pages * 2, generator=gen)[: pool * pages].view(pool, pages, 1)
    req_to_token = (page_ids * page_size + torch.arange(page_size)).view(pool, -1).to(torch.int32)
    lo = n_draft if mode == DRAFT_EXTEND else 1
    hi = ctx - (n_draft if mode == VERIFY else 0)
    seq = torch.randint(lo, (hi if long_tail else min(hi, 3 * topk)) + 1, (bs,), generator=gen)
    rpi = torch.randperm(pool, generator=gen)[:bs]
    accept = torch.randint(1, n_draft + 1, (bs,), generator=gen, dtype=torch.int32)
    return req_to_token, rpi.to(torch.int32), seq.to(torch.int32), accept


def metadata_buffers(mode, bs, rows, ctx, page_size, device):
    """Poisoned buffers shaped like a captured NSAMetadata (decode: nsa_seqlens_expanded IS
    cache_seqlens_int32, as in SGLang)."""
    def buf(*shape):
        return torch.full(shape, POISON, dtype=torch.int32, device=device)

    m = SimpleNamespace(
        cache_seqlens_int32=buf(bs), cu_seqlens_k=buf(bs + 1), page_table_1=buf(max(rows, 1), ctx),
        nsa_cache_seqlens_int32=buf(max(rows, 1)), nsa_cu_seqlens_k=buf(rows + 1))
    m.real_page_table = buf(max(rows, 1), -(-ctx // page_size)) if page_size > 1 else m.page_table_1
    m.nsa_seqlens_expanded = m.cache_seqlens_int32 if mode == DECODE else buf(max(rows, 1))
    return m


def make_fill(nsa, path, sets, *, mode, req_to_token, n_draft, topk, page_size, bs, device):
    """A plan's fill function for `path`, built the way replay_fastpath builds it at capture."""
    table = nsa.table.plan_table(sets, req_to_token=req_to_token, bs=bs, topk=topk,
                                 n_draft=n_draft, device=device)
    pt = sets[0].page_table_1
    if path == "triton":
        if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
            pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
        dtypes = [(torch.int32, torch.int32, torch.int32 if mode == DRAFT_EXTEND else None)]
        return nsa.triton.FillPlan(table, mode=mode, n_draft=n_draft, page_size=page_size, bs=bs,
                               n_dest=len(sets), page_table_shape=tuple(pt.shape),
                               input_dtypes=dtypes).fill
    assert nsa.cuda.is_cuda_kernel_available(), nsa.cuda.get_kernel_info()
    n = len(sets)
    plan = nsa.cuda.make_plan(
        req_to_token=req_to_token, dest_table=table[: n * 7].view(n, 7), schedules=[], mode=mode,
        n_draft=n_draft, topk=topk, page_size=page_size, bs=bs, page_table_shape=tuple(pt.shape),
        page_table_stride=pt.stride(0), real_page_table_stride=sets[0].real_page_table.stride(0))
    plan.warm()
    return plan.fill


def run_kernel(nsa, path, mode, device, req_to_token, rpi, seq, accept, n_draft, topk, page_size, bs,
               n_dest=1):
    """Fill n_dest poisoned buffer sets in one launch; return them (on CPU), checking they agree.
    Inputs are used as given (dtype, strides); move them to `device` first."""
    rows = bs * (1 if mode == DECODE else n_draft)
    ctx = req_to_token.shape[1]
    sets = [metadata_buffers(mode, bs, rows, ctx, page_size, device) for _ in range(n_dest)]
    fill = make_fill(nsa, path, sets, mode=mode, req_to_token=req_to_token, n_draft=n_draft, topk=topk,
                     page_size=page_size, bs=bs, device=device)
    fill(rpi, seq, accept if mode == DRAFT_EXTEND else None)
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


def check(out, ref, req_to_token, page_size, row_source=None):
    """Every element: the reference where SGLang reads, poison where nothing may be written.
    `row_source(request row index) -> expected req_to_token row` overrides the page-table source
    (for out-of-range request indices)."""
    n = ref["seqlens_expanded"].shape[0]
    assert torch.equal(out["cache_seqlens"], ref["cache_seqlens"])
    assert int(out["cu_seqlens_k"][0]) == POISON  # [0] belongs to capture time, never rewritten
    assert torch.equal(out["cu_seqlens_k"][1:], ref["cu_seqlens_k"])
    assert torch.equal(out["seqlens_expanded"][:n], ref["seqlens_expanded"])
    assert torch.equal(out["nsa_cache_seqlens"][:n], ref["nsa_cache_seqlens"])
    assert int(out["nsa_cu_seqlens_k"][0]) == POISON
    assert torch.equal(out["nsa_cu_seqlens_k"][1 : n + 1], ref["nsa_cu_seqlens_k"])
    rows_total, width = out["page_table_1"].shape
    # rows past the token count: untouched (SGLang 0.5.8 leaves them stale too)
    if n < rows_total and not out["decode_alias"]:
        assert (out["nsa_cache_seqlens"][n:] == POISON).all()
        assert (out["nsa_cu_seqlens_k"][n + 1 :] == POISON).all()
    assert (out["page_table_1"][n:] == POISON).all()
    cols = torch.arange(width)
    for r in range(n):
        kv = min(int(ref["row_kv"][r]), width, req_to_token.shape[1])
        src = row_source(r) if row_source else req_to_token[int(ref["rows"][r])]
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


def seeded(*key):
    return torch.Generator().manual_seed(hash(key) % 2**31)


@pytest.mark.parametrize("path", kernel_params())
@pytest.mark.parametrize("mode,bs,n_draft,topk,page_size,ctx", CASES)
def test_kernel_matches_sglang_arithmetic(nsa, path, mode, bs, n_draft, topk, page_size, ctx):
    device = device_for(path)
    r2t, rpi, seq, accept = make_case(seeded(mode, bs, n_draft, topk, page_size, ctx),
                                      mode, bs, n_draft, topk, page_size, ctx)
    out = run_kernel(nsa, path, mode, device, r2t.to(device), rpi.to(device), seq.to(device),
                     accept.to(device), n_draft, topk, page_size, bs)
    check(out, reference(mode, r2t, rpi, seq, accept, n_draft, topk, page_size), r2t, page_size)


@pytest.mark.parametrize("path", kernel_params())
@pytest.mark.parametrize("mode,page_size", [(DECODE, 1), (VERIFY, 64), (DRAFT_EXTEND, 64)])
def test_one_launch_fills_every_destination(nsa, path, mode, page_size):
    """Multi-step backends: one launch writes the same metadata into 3 buffer sets."""
    device = device_for(path)
    r2t, rpi, seq, accept = make_case(seeded(7), mode, 5, 4, 128, page_size, 1024)
    out = run_kernel(nsa, path, mode, device, r2t.to(device), rpi.to(device), seq.to(device),
                     accept.to(device), 4, 128, page_size, 5, n_dest=3)
    check(out, reference(mode, r2t, rpi, seq, accept, 4, 128, page_size), r2t, page_size)


def strided(t: torch.Tensor, step: int = 3) -> torch.Tensor:
    """The same values as a non-contiguous view (every `step`-th element of a bigger buffer)."""
    big = torch.full((t.shape[0] * step,), POISON, dtype=t.dtype, device=t.device)
    view = big[::step]
    view.copy_(t)
    assert not view.is_contiguous() or t.shape[0] <= 1
    return view


LAYOUTS = {
    # name -> (rpi dtype, seq dtype, accept dtype, strided inputs, strided req_to_token)
    "int32": (torch.int32, torch.int32, torch.int32, False, False),
    "int64": (torch.int64, torch.int64, torch.int64, False, False),
    "mixed": (torch.int32, torch.int64, torch.int64, False, False),
    "strided-inputs": (torch.int32, torch.int64, torch.int32, True, False),
    "strided-req_to_token": (torch.int64, torch.int32, torch.int32, False, True),
}


@pytest.mark.parametrize("path", kernel_params())
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("mode,page_size", [(DECODE, 64), (VERIFY, 1), (DRAFT_EXTEND, 64)])
def test_input_dtypes_and_strides(nsa, path, layout, mode, page_size):
    """int32 (the runners' buffers) and int64 (a ScheduleBatch's tensors), mixed, strided inputs
    and a req_to_token with a column stride: the same metadata as SGLang computes, no copy."""
    device = device_for(path)
    rpi_t, seq_t, acc_t, strided_inputs, strided_r2t = LAYOUTS[layout]
    bs = 9
    r2t, rpi, seq, accept = make_case(seeded(layout, mode), mode, bs, 4, 128, page_size, 1024)
    inputs = [x.to(dt).to(device) for x, dt in ((rpi, rpi_t), (seq, seq_t), (accept, acc_t))]
    if strided_inputs:
        inputs = [strided(x) for x in inputs]
    r2t_dev = r2t.to(device)
    if strided_r2t:
        wide = torch.full((r2t.shape[0], r2t.shape[1] * 2), POISON, dtype=torch.int32, device=device)
        wide[:, ::2] = r2t_dev
        r2t_dev = wide[:, ::2]
        assert r2t_dev.stride(1) == 2
    out = run_kernel(nsa, path, mode, device, r2t_dev, *inputs, 4, 128, page_size, bs)
    check(out, reference(mode, r2t, rpi, seq, accept, 4, 128, page_size), r2t, page_size)


@pytest.mark.parametrize("path", kernel_params())
@pytest.mark.parametrize("mode,page_size", [(DECODE, 1), (DRAFT_EXTEND, 64)])
def test_request_index_outside_the_pool_reads_nothing(nsa, path, mode, page_size):
    """Documented clamp: a request index below 0 or at/above the pool size gets page-table cells
    of 0 (SGLang's padding slot) and no req_to_token read; its lengths are still written."""
    device = device_for(path)
    bs = 6
    r2t, rpi, seq, accept = make_case(seeded("oob", mode), mode, bs, 4, 128, page_size, 512)
    pool = r2t.shape[0]
    bad = {1: -1, 3: pool, 4: pool + 1000}
    for i, v in bad.items():
        rpi[i] = v
    ref = reference(mode, r2t, rpi.clamp(0, pool - 1), seq, accept, 4, 128, page_size)
    request_of_row = torch.repeat_interleave(
        torch.arange(bs), torch.ones(bs, dtype=torch.long) if mode == DECODE else accept.long())
    zeros = torch.zeros(r2t.shape[1], dtype=torch.int32)

    def row_source(r):
        i = int(request_of_row[r])
        return zeros if i in bad else r2t[int(rpi[i])]

    out = run_kernel(nsa, path, mode, device, r2t.to(device), rpi.to(device), seq.to(device),
                     accept.to(device), 4, 128, page_size, bs)
    check(out, ref, r2t, page_size, row_source=row_source)


@pytest.mark.parametrize("path", kernel_params())
def test_lengths_above_the_row_width_are_clamped(nsa, path):
    """Documented clamp: kv lengths above req_to_token's row (and the page table's width) copy the
    whole row and write nothing past it; the length fields keep SGLang's values."""
    device = device_for(path)
    bs, ctx = 4, 256
    r2t, rpi, seq, accept = make_case(seeded("long"), VERIFY, bs, 4, 128, 64, ctx)
    seq[1], seq[3] = ctx + 5, 10 * ctx
    out = run_kernel(nsa, path, VERIFY, device, r2t.to(device), rpi.to(device), seq.to(device),
                     accept.to(device), 4, 128, 64, bs)
    check(out, reference(VERIFY, r2t, rpi, seq, accept, 4, 128, 64), r2t, 64)


@pytest.mark.parametrize("path", kernel_params())
def test_wrong_inputs_give_a_clear_error(nsa, path):
    """An input dtype the kernels don't take is a TypeError naming it (replay_fastpath then lets
    SGLang's code serve); too few entries is a ValueError naming it."""
    device = device_for(path)
    bs = 4
    r2t, rpi, seq, accept = make_case(seeded("bad"), DRAFT_EXTEND, bs, 4, 128, 1, 256)
    sets = [metadata_buffers(DRAFT_EXTEND, bs, bs * 4, 256, 1, device)]
    fill = make_fill(nsa, path, sets, mode=DRAFT_EXTEND, req_to_token=r2t.to(device), n_draft=4,
                     topk=128, page_size=1, bs=bs, device=device)
    rpi, seq, accept = rpi.to(device), seq.to(device), accept.to(device)
    with pytest.raises(TypeError, match="seq_lens must be int32 or int64"):
        fill(rpi, seq.float(), accept)
    with pytest.raises(TypeError, match="accept_length must be int32 or int64"):
        fill(rpi, seq, accept.to(torch.int16))
    with pytest.raises(ValueError, match="req_pool_indices"):
        fill(rpi[: bs - 1], seq, accept)
    with pytest.raises(ValueError, match="accept_length"):
        fill(rpi, seq, accept[:1])
    for name, t in vars(sets[0]).items():
        assert (t == POISON).all(), f"{name} written by a rejected call"


def test_unsupported_destination_is_named_at_capture(nsa):
    """A captured buffer the kernels can't write (not int32 rows) is refused when the plan is
    built, naming the buffer: replay_fastpath then leaves that bs to SGLang's own code."""
    sets = [metadata_buffers(VERIFY, 2, 8, 64, 1, "cpu")]
    sets[0].nsa_cache_seqlens_int32 = sets[0].nsa_cache_seqlens_int32.long()
    r2t = torch.zeros(4, 64, dtype=torch.int32)
    with pytest.raises(ValueError, match="metadata.nsa_cache_seqlens_int32"):
        nsa.table.plan_table(sets, req_to_token=r2t, bs=2, topk=128, n_draft=4, device="cpu")
    sets = [metadata_buffers(VERIFY, 2, 8, 64, 1, "cpu")]
    sets[0].page_table_1 = sets[0].page_table_1.t()
    with pytest.raises(ValueError, match="metadata.page_table_1"):
        nsa.table.plan_table(sets, req_to_token=r2t, bs=2, topk=128, n_draft=4, device="cpu")
