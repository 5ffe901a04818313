"""The one-launch batched copy of precomputed multi-step metadata (SGLANG_NSA_USE_BATCHED_COPY).

Parity through the harness with the metadata kernels off (so the multi-step backend precomputes
with SGLang 0.5.8's code and the batched copy does every copy), its verify mode, and a unit test
of the kernel against the plain `.copy_()` calls it replaces, every element, 1 to 5 backends.
"""
import os
import shutil
from types import SimpleNamespace

import pytest
import torch
from harness.parity import compare, run_suite
from harness.served import expected_served, served_problems
from conftest import RELEASE
from harness import releases
from parity_configs import REFRESHED_ON_PRECOMPUTE, nsa_multi_cpu

PRECOMPUTE = {"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": "1"}
MULTI_CPU, _ = nsa_multi_cpu(RELEASE, releases.draft_steps(RELEASE))
# SGLang's fused copy (0.5.9 on) off, so that ours serves (replay_fastpath.batched_copy_on)
COPY_ONLY = {"SGLANG_NSA_USE_TRITON_METADATA": "0", "SGLANG_NSA_USE_CUDA_METADATA": "0",
             "SGLANG_USE_FUSED_METADATA_COPY": "0", **PRECOMPUTE}
POISON = -777_777


def check_copy_run(expected, actual):
    """Parity with 0.5.8's precomputed copies, every element; the batched copy served every
    multi-step replay (_foreach_copy_ at bs 1, where every destination is contiguous; the Triton
    kernel at larger bs); no path disabled."""
    problems = compare(expected, actual, strict=True)
    problems += served_problems(actual, expected_served(
        actual["_meta/replays"], "upstream", precompute=True, batched_copy=True))
    if actual["_meta/nsa_failed"]:
        problems.append(f"paths disabled: {actual['_meta/nsa_failed']}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("verify", ["0", "1"], ids=["plain", "verify-mode"])
def test_multi_step_batched_copy_parity(pristine_template, patched_template, verify):
    expected = run_suite(pristine_template, "nsa", MULTI_CPU, env=PRECOMPUTE, reuse=True)
    actual = run_suite(patched_template, "nsa", MULTI_CPU,
                       env={**COPY_ONLY, "SGLANG_NSA_BATCHED_COPY_VERIFY": verify})
    check_copy_run(expected, actual)


def test_verify_mode_reports_a_bad_copy(patched_template, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(patched_template, broken, symlinks=True)
    src = broken / "sglang/srt/layers/attention/nsa/triton_batched_copy.py"
    text = src.read_text()
    old = "        m = offs < cols\n"
    assert text.count(old) == 1
    src.write_text(text.replace(old, "        m = offs < cols - 1\n"))
    configs = [{"kind": "multi", "page_size": 1, "topk": 128, "num_steps_list": [2],
                "capture_bs": [4], "replays_per_bs": 1}]
    with pytest.raises(RuntimeError, match="batched copy mismatch"):
        run_suite(broken, "nsa", configs, env={**COPY_ONLY, "SGLANG_NSA_BATCHED_COPY_VERIFY": "1"})


def _metadata(rows, cols, bs, page_size, decode):
    def buf(*shape):
        return torch.full(shape, POISON, dtype=torch.int32)
    m = SimpleNamespace(cache_seqlens_int32=buf(bs), cu_seqlens_k=buf(bs + 1),
                        page_table_1=buf(rows, cols), nsa_cache_seqlens_int32=buf(rows),
                        nsa_cu_seqlens_k=buf(rows + 1))
    m.real_page_table = buf(rows, -(-cols // page_size)) if page_size > 1 else m.page_table_1
    m.nsa_seqlens_expanded = m.cache_seqlens_int32 if decode else buf(rows)
    return m


def _precomputed(gen, bs, n, used_cols, page_size, size):
    def rnd(*shape):
        return torch.randint(0, 10**6, shape, generator=gen, dtype=torch.int32)
    real = rnd(size, -(-used_cols // page_size)) if page_size > 1 else None
    return SimpleNamespace(cache_seqlens=rnd(bs), cu_seqlens_k=rnd(bs + 1),
                           page_indices=rnd(size, used_cols), real_page_table=real,
                           seqlens_expanded=rnd(size), nsa_cache_seqlens=rnd(size),
                           nsa_cu_seqlens_k=rnd(size + 1), seqlens_expanded_size=size)


@pytest.mark.parametrize("n_dest", [1, 3, 5])
@pytest.mark.parametrize("decode,page_size", [(True, 1), (False, 1), (False, 64)])
def test_kernel_matches_plain_copies(nsa_modules, n_dest, decode, page_size):
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("CPU tensors need TRITON_INTERPRET=1")
    gen = torch.Generator().manual_seed(n_dest)
    bs, n, cols = 6, 1 if decode else 4, 700
    rows, used_cols, size = bs * n, 513, bs * n - (0 if decode else 3)
    pre = _precomputed(gen, bs, n, used_cols, page_size, size)
    mode = SimpleNamespace(is_decode_or_idle=lambda: decode)
    fast = [_metadata(rows, cols, bs, page_size, decode) for _ in range(n_dest)]
    plain = [_metadata(rows, cols, bs, page_size, decode) for _ in range(n_dest)]
    table = nsa_modules.table.plan_table(fast, req_to_token=torch.zeros(1, 1, dtype=torch.int32),
                                         bs=bs, topk=128, n_draft=n, device="cpu")
    copy = nsa_modules.batched_copy
    assert copy.unsupported_source(pre) is None
    copy.launch(pre, table, fast[0], n_dest, copy_expanded=not decode)
    for m in plain:
        for dst, src in copy.plain_copy_pairs(m, pre, mode):
            dst.copy_(src)
    for f, p in zip(fast, plain):
        for name in ("cache_seqlens_int32", "cu_seqlens_k", "page_table_1", "real_page_table",
                     "nsa_seqlens_expanded", "nsa_cache_seqlens_int32", "nsa_cu_seqlens_k"):
            assert torch.equal(getattr(f, name), getattr(p, name)), name


@pytest.mark.parametrize("field", ["cache_seqlens", "cu_seqlens_k", "seqlens_expanded",
                                   "nsa_cache_seqlens", "nsa_cu_seqlens_k", "page_indices",
                                   "real_page_table"])
def test_sources_the_kernel_cannot_read_are_named(nsa_modules, field):
    """Every precomputed source is checked (dtype, unit stride along its rows); one the kernel
    can't read is named, and replay_fastpath then leaves the copy to SGLang."""
    pre = _precomputed(torch.Generator().manual_seed(0), 4, 4, 130, 64, 16)
    t = getattr(pre, field)
    wide = torch.zeros(*t.shape[:-1], t.shape[-1] * 2, dtype=t.dtype)
    wide[..., ::2] = t
    setattr(pre, field, wide[..., ::2])
    assert nsa_modules.batched_copy.unsupported_source(pre).startswith(f"precomputed.{field} ")
    setattr(pre, field, t.long())
    assert nsa_modules.batched_copy.unsupported_source(pre).startswith(f"precomputed.{field} ")


@pytest.mark.gpu
def test_gpu_multi_step_batched_copy_parity(pristine_template, patched_template):
    from parity_configs import NSA_MULTI

    expected = dict(run_suite(pristine_template, "nsa", NSA_MULTI, device="cuda", env=PRECOMPUTE))
    # Deliberate differences: parity_configs.REFRESHED_ON_PRECOMPUTE.
    fresh = run_suite(pristine_template, "nsa", NSA_MULTI, device="cuda",
                      env={"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": "0"})
    expected.update({k: v for k, v in fresh.items() if k.endswith(REFRESHED_ON_PRECOMPUTE)})
    actual = run_suite(patched_template, "nsa", NSA_MULTI, device="cuda",
                       env={**COPY_ONLY, "SGLANG_NSA_BATCHED_COPY_VERIFY": "1"})
    check_copy_run(expected, actual)
