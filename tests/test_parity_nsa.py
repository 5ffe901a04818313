"""Pristine SGLang 0.5.8 vs the patched tree: NSA backend CUDA-graph replay metadata, exactly.

Each run is a separate process (tests/harness/runner.py) importing one tree; see tests/README.md.
With the fast paths on, page-table cells that 0.5.8 writes but no reader reads are exempt
(`strict=False`, see nsa_scenarios.unread_masks); with every flag off the whole buffers must match.
"""
import shutil

import pytest
from harness.parity import compare, run_suite
from parity_configs import FLAGS_OFF, NSA_MULTI, NSA_MULTI_CPU, NSA_SINGLE, NSA_SINGLE_CPU

_cache: dict = {}
SCHEDULE = "paged_mqa_schedule_metadata"


def pristine(tree, name, configs, device="cpu", env=None):
    key = (name, device, tuple(sorted((env or {}).items())))
    if key not in _cache:
        _cache[key] = run_suite(tree, "nsa", configs, device=device, env=env)
    return _cache[key]


def assert_parity(expected, actual, strict):
    problems = compare(expected, actual, strict=strict)
    assert not problems, "patched tree differs from SGLang 0.5.8:\n" + "\n".join(problems)


def assert_meaningful(dump, modes):
    """Guard against a harness that compares nothing: every mode replayed, real values written."""
    for mode in modes:
        keys = [k for k in dump if k.startswith(mode) and k.endswith("/nsa_cache_seqlens_int32")]
        assert keys, f"no replays recorded for {mode}"
        assert any(int(dump[k].max()) > 0 for k in keys), f"{mode}: replays wrote nothing"


def assert_path(dump, fast: str | None):
    """The patched run used the path it was meant to (and never fell back silently)."""
    paths, failed = dump["_meta/nsa_paths"], dump["_meta/nsa_failed"]
    if fast is None:
        assert paths == ["upstream (SGLang 0.5.8)"] and not failed, (paths, failed)
    else:
        assert paths == [fast] and not failed, (paths, failed)


MODES = ("single/decode", "single/target_verify", "single/draft_extend")
MULTI = ("multi/steps1", "multi/steps3", "multi/steps5")


@pytest.mark.parametrize("env,fast", [({}, "triton"), (FLAGS_OFF, None)],
                         ids=["flags-default", "flags-off"])
def test_single_backend_replay_parity(pristine_template, patched_template, env, fast):
    expected = pristine(pristine_template, "single", NSA_SINGLE_CPU)
    assert_meaningful(expected, MODES)
    actual = run_suite(patched_template, "nsa", NSA_SINGLE_CPU, env=env)
    assert_path(actual, fast)
    assert_parity(expected, actual, strict=fast is None)


@pytest.mark.parametrize("precompute", ["1", "0"], ids=["precompute-on", "precompute-off"])
@pytest.mark.parametrize("env,fast", [({}, "triton"), (FLAGS_OFF, None)],
                         ids=["flags-default", "flags-off"])
def test_multi_step_replay_parity(pristine_template, patched_template, precompute, env, fast):
    mtp = {"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": precompute}
    expected = pristine(pristine_template, "multi", NSA_MULTI_CPU, env=mtp)
    assert_meaningful(expected, MULTI)
    actual = run_suite(patched_template, "nsa", NSA_MULTI_CPU, env={**mtp, **env})
    assert_path(actual, fast)
    assert_parity(expected, actual, strict=fast is None)


def test_fast_path_failure_falls_back_to_sglang(pristine_template, patched_template, tmp_path):
    """A fast path that can't load (here: the Triton module raises on import) is logged, disabled,
    and SGLang 0.5.8's own code gives the exact upstream result."""
    broken = tmp_path / "site"
    shutil.copytree(patched_template, broken, symlinks=True)
    kernel = broken / "sglang/srt/layers/attention/nsa/triton_metadata_kernel.py"
    kernel.write_text('raise ImportError("simulated: Triton kernels unavailable")\n')
    configs = NSA_SINGLE_CPU[:1]
    actual = run_suite(broken, "nsa", configs)
    assert actual["_meta/nsa_paths"] == ["upstream (SGLang 0.5.8)"]
    assert "simulated" in actual["_meta/nsa_failed"]["triton"]
    assert_parity(run_suite(pristine_template, "nsa", configs), actual, strict=True)


def test_bad_input_is_reported_not_written(patched_template):
    """More draft_extend tokens than the rows captured for bs: a clear error, and the fast path
    stays on (a bad input is not a reason to fall back)."""
    dump = run_suite(patched_template, "nsa", [{"kind": "bad_input"}])
    assert dump["bad/draft_extend_overflow"].startswith("ValueError: nsa-fastpath: draft_extend"), \
        dump["bad/draft_extend_overflow"]
    assert "above the 16 rows captured" in dump["bad/draft_extend_overflow"]
    assert not dump["_meta/nsa_failed"]


@pytest.mark.gpu
@pytest.mark.parametrize("env,fast", [({}, "cuda"), ({"SGLANG_NSA_USE_CUDA_METADATA": "0"}, "triton"),
                                      (FLAGS_OFF, None)],
                         ids=["flags-default", "cuda-off", "flags-off"])
def test_gpu_single_backend_replay_parity(pristine_template, patched_template, env, fast):
    expected = pristine(pristine_template, "single", NSA_SINGLE, device="cuda")
    assert any(k.endswith("graph_read.nsa_cache_seqlens_int32") for k in expected)
    actual = run_suite(patched_template, "nsa", NSA_SINGLE, device="cuda", env=env)
    assert_path(actual, fast)
    assert_parity(expected, actual, strict=fast is None)


@pytest.mark.gpu
@pytest.mark.parametrize("precompute", ["1", "0"], ids=["precompute-on", "precompute-off"])
@pytest.mark.parametrize("env,fast", [({}, "cuda"), ({"SGLANG_NSA_USE_CUDA_METADATA": "0"}, "triton"),
                                      (FLAGS_OFF, None)],
                         ids=["flags-default", "cuda-off", "flags-off"])
def test_gpu_multi_step_replay_parity(pristine_template, patched_template, precompute, env, fast):
    mtp = {"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": precompute}
    expected = dict(pristine(pristine_template, "multi", NSA_MULTI, device="cuda", env=mtp))
    if precompute == "1" and fast is not None:
        # Deliberate difference (docs/DIFFERENCES.md): 0.5.8's precomputed path leaves the DeepGEMM
        # schedule stale; the fast path refreshes it, exactly as 0.5.8's per-backend path does.
        fresh = pristine(pristine_template, "multi", NSA_MULTI, device="cuda",
                         env={"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": "0"})
        expected.update({k: v for k, v in fresh.items() if k.endswith(SCHEDULE)})
    actual = run_suite(patched_template, "nsa", NSA_MULTI, device="cuda", env={**mtp, **env})
    assert_path(actual, fast)
    assert_parity(expected, actual, strict=fast is None)
