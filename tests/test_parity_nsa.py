"""Pristine SGLang 0.5.8 vs the patched tree: NSA backend CUDA-graph replay metadata, exactly.

Each run is a separate process (tests/harness/runner.py) importing one tree; see tests/README.md.
"""
import pytest
from harness.parity import compare, run_suite
from parity_configs import FLAGS_OFF, NSA_MULTI, NSA_SINGLE

_cache: dict = {}


def pristine(tree, name, configs, device="cpu", env=None):
    key = (name, device, tuple(sorted((env or {}).items())))
    if key not in _cache:
        _cache[key] = run_suite(tree, "nsa", configs, device=device, env=env)
    return _cache[key]


def assert_parity(expected, actual):
    problems = compare(expected, actual)
    assert not problems, "patched tree differs from SGLang 0.5.8:\n" + "\n".join(problems)


def assert_meaningful(dump, modes):
    """Guard against a harness that compares nothing: every mode replayed, real values written."""
    for mode in modes:
        keys = [k for k in dump if k.startswith(mode) and k.endswith("/nsa_cache_seqlens_int32")]
        assert keys, f"no replays recorded for {mode}"
        assert any(int(dump[k].max()) > 0 for k in keys), f"{mode}: replays wrote nothing"


@pytest.mark.parametrize("env", [{}, FLAGS_OFF], ids=["flags-default", "flags-off"])
def test_single_backend_replay_parity(pristine_template, patched_template, env):
    expected = pristine(pristine_template, "single", NSA_SINGLE)
    assert_meaningful(expected, ("single/decode", "single/target_verify", "single/draft_extend"))
    assert_parity(expected, run_suite(patched_template, "nsa", NSA_SINGLE, env=env))


@pytest.mark.parametrize("precompute", ["1", "0"], ids=["precompute-on", "precompute-off"])
@pytest.mark.parametrize("env", [{}, FLAGS_OFF], ids=["flags-default", "flags-off"])
def test_multi_step_replay_parity(pristine_template, patched_template, precompute, env):
    mtp = {"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": precompute}
    expected = pristine(pristine_template, "multi", NSA_MULTI, env=mtp)
    assert_meaningful(expected, ("multi/steps1", "multi/steps3", "multi/steps5"))
    assert_parity(expected, run_suite(patched_template, "nsa", NSA_MULTI, env={**mtp, **env}))


@pytest.mark.gpu
@pytest.mark.parametrize("env", [{}, FLAGS_OFF], ids=["flags-default", "flags-off"])
def test_gpu_single_backend_replay_parity(pristine_template, patched_template, env):
    expected = pristine(pristine_template, "single", NSA_SINGLE, device="cuda")
    assert any(k.endswith("graph_read.nsa_cache_seqlens_int32") for k in expected)
    assert_parity(expected, run_suite(patched_template, "nsa", NSA_SINGLE, device="cuda", env=env))


@pytest.mark.gpu
@pytest.mark.parametrize("precompute", ["1", "0"], ids=["precompute-on", "precompute-off"])
def test_gpu_multi_step_replay_parity(pristine_template, patched_template, precompute):
    mtp = {"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": precompute}
    expected = pristine(pristine_template, "multi", NSA_MULTI, device="cuda", env=mtp)
    assert_parity(expected, run_suite(patched_template, "nsa", NSA_MULTI, device="cuda", env=mtp))
