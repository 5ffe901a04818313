"""The harness must fail on a planted one-line difference; a harness that cannot fail proves nothing.

Each case copies the patched tree, changes one line, and asserts that the comparison against
pristine SGLang 0.5.8 reports it, in the outputs the line feeds.
"""
import shutil

import pytest
from harness.parity import compare, run_suite
from harness.served import expected_served, served_problems
from parity_configs import FLAGS_OFF

SMALL_NSA = [{"kind": "single", "page_size": 1, "topk": 128, "capture_bs": [1, 3, 8],
              "replays_per_bs": 2}]
SMALL_RADIX = [{"page_size": 1, "bigram": False, "n_requests": 300, "max_prefix": 4096,
                "budget_tokens": 20_000}]

MUTATIONS = [
    pytest.param(
        "sglang/srt/layers/attention/nsa_backend.py",
        "metadata.nsa_seqlens_expanded[: seqlens_expanded.shape[0]].copy_(\n"
        "                seqlens_expanded\n",
        "metadata.nsa_seqlens_expanded[: seqlens_expanded.shape[0]].copy_(\n"
        "                seqlens_expanded + 1\n",
        "nsa", SMALL_NSA, FLAGS_OFF, "single/draft_extend/", "/nsa_seqlens_expanded",
        id="upstream-draft-extend-seqlens-off-by-one",
    ),
    pytest.param(
        "sglang/srt/layers/attention/nsa/triton_metadata_kernel.py",
        "        expanded = kv_i - ext_i + 1 + js\n",
        "        expanded = kv_i - ext_i + 1 + js + MODE // 2\n",
        "nsa", SMALL_NSA, {}, "single/draft_extend/", "/nsa_seqlens_expanded",
        id="triton-draft-extend-seqlens-off-by-one",
    ),
    pytest.param(
        "sglang/srt/layers/attention/nsa/triton_metadata_kernel.py",
        "        cmask = cols < limit\n",
        "        cmask = cols < limit - 1\n",
        "nsa", SMALL_NSA, {}, "single/", "/page_table_1",
        id="triton-page-table-last-column-dropped",
    ),
    pytest.param(
        "sglang/srt/layers/attention/nsa_backend.py",
        "        assert seq_lens_cpu is not None\n\n        self.set_nsa_prefill_impl(forward_batch=None)\n",
        "        assert seq_lens_cpu is not None\n",
        "nsa", SMALL_NSA, {}, "single/", "/backend.use_mha",
        id="replay-skips-per-replay-state-reset",
    ),
    pytest.param(
        "sglang/srt/mem_cache/radix_cache.py",
        "            num_evicted += len(x.value)\n",
        "            num_evicted += len(x.value) + 1\n",
        "radix", SMALL_RADIX, {}, "radix/", "",
        id="radix-evict-count-off-by-one",
    ),
]


@pytest.mark.parametrize("path,old,new,suite,configs,env,where,what", MUTATIONS)
def test_harness_reports_planted_difference(pristine_template, patched_template, tmp_path,
                                            path, old, new, suite, configs, env, where, what):
    mutant = tmp_path / "site"
    shutil.copytree(patched_template, mutant, symlinks=True)
    src = mutant / path
    text = src.read_text()
    assert text.count(old) == 1, f"mutation anchor not unique in {path}: update this test"
    src.write_text(text.replace(old, new))

    strict = env == FLAGS_OFF  # fast paths on: compare what SGLang reads (see test_parity_nsa)
    expected = run_suite(pristine_template, suite, configs, reuse=True)
    patched = run_suite(patched_template, suite, configs, env=env, reuse=True)
    baseline = compare(expected, patched, strict=strict)
    assert not baseline, baseline
    problems = compare(expected, run_suite(mutant, suite, configs, env=env), strict=strict)
    assert problems, "harness did not notice the planted change"
    assert any(p.startswith(where) and what in p for p in problems), problems


def test_served_check_reports_a_silent_fallback(patched_template):
    """A fast path that silently falls back still passes parity (SGLang's code gives the same
    metadata), so only the served counts tell; their check must report it."""
    configs = [{"kind": "single", "page_size": 1, "topk": 128, "capture_bs": [1, 2],
                "replays_per_bs": 1, "modes": ["decode"]}]
    dump = run_suite(patched_template, "nsa", configs, env={"SGLANG_NSA_USE_TRITON_METADATA": "0"})
    expected = expected_served(dump["_meta/replays"], "triton")
    assert dump["_meta/replays"]["single"] > 0
    assert expected == {"metadata.triton": dump["_meta/replays"]["single"]}
    assert served_problems(dump, expected), dump["_meta/served"]
