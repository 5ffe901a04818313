"""Pristine SGLang vs the patched tree: NSA (DSA) backend CUDA-graph replay metadata, exactly.

Each run is a separate process (tests/harness/runner.py) importing one tree; SGLang's own
CUDA-graph runners call the backend (harness/sglang_runners.py, see tests/README.md). With the
fast paths on, page-table cells that 0.5.8 writes but no reader reads are exempt (`strict=False`,
see nsa_scenarios.unread_masks); with every flag off the whole buffers must match. Every patched
run must also report exactly the served counts its replays call for (harness/served.py).
"""
import re
import shutil
from collections import defaultdict

import pytest
from conftest import RELEASE
from harness import releases
from harness.parity import compare, run_suite
from harness.served import expected_served, logged_summaries, served_problems, summary_problems
from parity_configs import (FLAGS_OFF, NSA_MULTI, NSA_SINGLE, REFRESHED_ON_PRECOMPUTE,
                            nsa_multi_cpu, nsa_single_cpu)

MODES = ("single/decode", "single/target_verify", "single/draft_extend")
# the CPU matrices of this release (smaller on releases other than 0.5.8: parity_configs)
SINGLE_CPU = nsa_single_cpu(RELEASE)
MULTI_CPU, CPU_STEPS = nsa_multi_cpu(RELEASE, releases.draft_steps(RELEASE))
MULTI = tuple(f"multi/steps{n}" for n in releases.draft_steps(RELEASE))
MULTI_CPU_MODES = tuple(f"multi/steps{n}" for n in CPU_STEPS)
SUMMARY_EVERY = 7  # NSA_FASTPATH_SUMMARY_EVERY for the runs that check the periodic summary
# the clipped seqlens every replay writes (DSAMetadata's name from 0.5.13)
SEQLENS = ("dsa" if releases.dsa_named(RELEASE) else "nsa") + "_cache_seqlens_int32"


def pristine(tree, name, configs, device="cpu", env=None):
    """The pristine run for these configs (once per session: run_suite's reuse)."""
    return run_suite(tree, "nsa", configs, device=device, env=env, reuse=True)


def check_patched(expected, actual, *, strict, served, every=None):
    """Parity with pristine, exactly the expected served counts, no path disabled, and the log
    an operator reads says so (each path's first-serve line, the served summaries); every
    problem is reported at once."""
    problems = compare(expected, actual, strict=strict)
    if actual["_meta/replays"] != expected["_meta/replays"]:
        problems.append(f"replays {actual['_meta/replays']} vs {expected['_meta/replays']}")
    problems += served_problems(actual, served)
    problems += summary_problems(actual, served, every)
    problems += [f"no log line 'nsa-fastpath: NSA replay path: {path}'" for path in served
                 if f"nsa-fastpath: NSA replay path: {path}\n" not in actual["_meta/stderr"]]
    if actual["_meta/nsa_failed"]:
        problems.append(f"paths disabled: {actual['_meta/nsa_failed']}")
    # on a GPU: every input dtype a runner replayed with had its Triton fill compiled at capture
    # (replay_fastpath._input_dtypes; the interpreter compiles nothing, so the CPU never logs it)
    if "was not compiled at capture time" in actual["_meta/stderr"]:
        problems.append("a replay's Triton variant was not compiled at capture (log)")
    assert not problems, "patched tree differs from SGLang:\n" + "\n".join(problems)


def assert_meaningful(dump, modes):
    """Guard against a harness that compares nothing: every mode replayed, real values written."""
    for mode in modes:
        keys = [k for k in dump if k.startswith(mode) and k.endswith(f"/{SEQLENS}")]
        assert keys, f"no replays recorded for {mode}"
        assert any(int(dump[k].max()) > 0 for k in keys), f"{mode}: replays wrote nothing"


# ---------------------------------------------------------------- what the runners hand the backend
def server_inputs(mode: str, padded: bool, device: str) -> list[dict]:
    """The index / length inputs the release's runner for `mode` hands the backend (every
    variant must occur): CudaGraphRunner and the draft-extend runner pass their own buffers
    (SGLang 0.5.8: int32; req_pool_indices int64 from 0.5.10: releases.runner_buffer_dtypes); the draft runner passes the
    ScheduleBatch's own int64 tensors when it does not pad; the draft-extend runner passes the
    batch's accept counts when it does not pad (int32; EAGLE v1: int64 once a request finished
    in verify), its int32 buffer when it does."""
    dtypes = releases.runner_buffer_dtypes(RELEASE)
    buffers = {name: f"{dtype}@{'cpu' if name == 'seq_lens_cpu' else device}"
               for name, dtype in dtypes.items()}
    if mode.startswith("multi/"):
        if padded:
            return [buffers]
        return [{**buffers, "req_pool_indices": f"int64@{device}", "seq_lens": f"int64@{device}"}]
    if mode == "single/draft_extend":
        v1 = not releases.draft_extend_v2(RELEASE)
        accept = ["int32"] if padded or not v1 else ["int32", "int64"]
        # recorded under 0.5.8's name (nsa_scenarios.backend_inputs)
        return [{**buffers, "spec_info.accept_length": f"{a}@{device}"} for a in accept]
    return [buffers]


def assert_server_inputs(dump, modes, device="cpu"):
    """The backend got what a server's runners give it, padded and unpadded, for every mode."""
    seen = defaultdict(list)
    for key, text in dump.items():
        if not key.endswith("/received"):
            continue
        prefix = key.removesuffix("/received")
        captured = int(re.search(r"/bs(\d+)(/|$)", prefix).group(1))
        mode = "/".join(prefix.split("/")[:2])
        inputs = {name: f"{dtype}@{dev}" for name, dtype, dev in
                  re.findall(r"(\S+)=(\w+)\[[\d, ]*\]@(\w+)", text)}
        seen[(mode, dump[f"{prefix}/raw_bs"] < captured)].append(inputs)
    for mode in modes:
        for padded in (False, True):
            got, want = seen[(mode, padded)], server_inputs(mode, padded, device)
            assert got, f"{mode}: no {'padded' if padded else 'unpadded'} replay"
            assert all(g in want for g in got) and all(w in got for w in want), \
                f"{mode}, padded={padded}: backend got {got}, a server gives {want}"


# ---------------------------------------------------------------- CPU tier
@pytest.mark.parametrize("env,fast", [pytest.param({}, "triton", marks=pytest.mark.quick),
                                      (FLAGS_OFF, None)], ids=["flags-default", "flags-off"])
def test_single_backend_replay_parity(pristine_template, patched_template, env, fast):
    expected = pristine(pristine_template, "single", SINGLE_CPU)
    assert_meaningful(expected, MODES)
    assert_server_inputs(expected, MODES)
    actual = run_suite(patched_template, "nsa", SINGLE_CPU,
                       env={**env, "NSA_FASTPATH_SUMMARY_EVERY": str(SUMMARY_EVERY)})
    check_patched(expected, actual, strict=fast is None, every=SUMMARY_EVERY,
                  served=expected_served(actual["_meta/replays"], fast or "upstream"))


@pytest.mark.parametrize("precompute", ["1", "0"], ids=["precompute-on", "precompute-off"])
@pytest.mark.parametrize("env,fast", [({}, "triton"), (FLAGS_OFF, None)],
                         ids=["flags-default", "flags-off"])
def test_multi_step_replay_parity(pristine_template, patched_template, precompute, env, fast):
    mtp = {"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": precompute}
    expected = pristine(pristine_template, "multi", MULTI_CPU, env=mtp)
    assert_meaningful(expected, MULTI_CPU_MODES)
    assert_server_inputs(expected, MULTI_CPU_MODES)
    actual = run_suite(patched_template, "nsa", MULTI_CPU, env={**mtp, **env})
    check_patched(expected, actual, strict=fast is None,
                  served=expected_served(actual["_meta/replays"], fast or "upstream",
                                         precompute=precompute == "1"))


def test_fast_path_failure_falls_back_to_sglang(pristine_template, patched_template, tmp_path):
    """A fast path that can't load (here: the Triton module raises on import) is logged, disabled,
    and SGLang 0.5.8's own code serves every replay with the exact upstream result."""
    broken = tmp_path / "site"
    shutil.copytree(patched_template, broken, symlinks=True)
    kernel = broken / "sglang/srt/layers/attention/nsa/triton_metadata_kernel.py"
    kernel.write_text('raise ImportError("simulated: Triton kernels unavailable")\n')
    configs = SINGLE_CPU[:1]
    actual = run_suite(broken, "nsa", configs)
    assert "simulated" in actual["_meta/nsa_failed"]["triton"], actual["_meta/nsa_failed"]
    # what the operator reads: the WARNING once, and the summary at exit naming the disabled path
    warning = "nsa-fastpath: triton replay path disabled for this process: ImportError: simulated"
    assert actual["_meta/stderr"].count(warning) == 1, actual["_meta/stderr"][-3000:]
    assert "triton: ImportError: simulated" in logged_summaries(actual["_meta/stderr"])[-1][1]
    problems = compare(run_suite(pristine_template, "nsa", configs), actual, strict=True)
    served = expected_served(actual["_meta/replays"], "upstream")
    problems += served_problems(actual, served) + summary_problems(actual, served)
    assert not problems, "\n".join(problems)


def test_bad_input_is_reported_not_written(patched_template):
    """More draft_extend tokens than the rows captured for bs, through the real draft-extend
    runner: a clear error, nothing served, and the fast path stays on (a bad input is not a
    reason to fall back). DRAFT_EXTEND_V2 (from 0.5.13) has no host count to check without a
    sync, and its worker never makes such a batch (accept counts <= num_draft_tokens): the fill
    serves it within the captured rows (docs/DIFFERENCES.md)."""
    dump = run_suite(patched_template, "nsa", [{"kind": "bad_input"}])
    if releases.draft_extend_v2(RELEASE):
        assert dump["_meta/replays"] == {"single": 1}
        assert dump["bad/draft_extend_overflow"] == "no error", dump["bad/draft_extend_overflow"]
        assert dump["bad/rows_past_capture_written"] is False
        assert dump["_meta/served"] == {"metadata.triton": 1} and not dump["_meta/nsa_failed"]
        return
    assert dump["_meta/replays"] == {"rejected": 1}
    assert dump["bad/draft_extend_overflow"].startswith("ValueError: nsa-fastpath: draft_extend"), \
        dump["bad/draft_extend_overflow"]
    assert "above the 16 rows captured" in dump["bad/draft_extend_overflow"]
    served = expected_served(dump["_meta/replays"], "triton")
    problems = served_problems(dump, served) + summary_problems(dump, served)
    assert not problems and not dump["_meta/nsa_failed"], (problems, dump["_meta/nsa_failed"])


# ---------------------------------------------------------------- GPU tier (scripts/gpu_tier.sh)
GPU_PATHS = [({}, "cuda"), ({"SGLANG_NSA_USE_CUDA_METADATA": "0"}, "triton"), (FLAGS_OFF, None)]


@pytest.mark.gpu
@pytest.mark.parametrize("env,fast", GPU_PATHS, ids=["flags-default", "cuda-off", "flags-off"])
def test_gpu_single_backend_replay_parity(pristine_template, patched_template, env, fast):
    expected = pristine(pristine_template, "single", NSA_SINGLE, device="cuda")
    assert any(k.endswith(f"graph_read.{SEQLENS}") for k in expected)
    assert_server_inputs(expected, MODES, device="cuda")
    actual = run_suite(patched_template, "nsa", NSA_SINGLE, device="cuda", env=env)
    check_patched(expected, actual, strict=fast is None,
                  served=expected_served(actual["_meta/replays"], fast or "upstream"))


@pytest.mark.gpu
@pytest.mark.parametrize("precompute", ["1", "0"], ids=["precompute-on", "precompute-off"])
@pytest.mark.parametrize("env,fast", GPU_PATHS, ids=["flags-default", "cuda-off", "flags-off"])
def test_gpu_multi_step_replay_parity(pristine_template, patched_template, precompute, env, fast):
    mtp = {"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": precompute}
    expected = dict(pristine(pristine_template, "multi", NSA_MULTI, device="cuda", env=mtp))
    assert_server_inputs(expected, MULTI, device="cuda")
    if precompute == "1" and fast is not None:
        # Deliberate differences: parity_configs.REFRESHED_ON_PRECOMPUTE.
        fresh = pristine(pristine_template, "multi", NSA_MULTI, device="cuda",
                         env={"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": "0"})
        expected.update({k: v for k, v in fresh.items() if k.endswith(REFRESHED_ON_PRECOMPUTE)})
    actual = run_suite(patched_template, "nsa", NSA_MULTI, device="cuda", env={**mtp, **env})
    check_patched(expected, actual, strict=fast is None,
                  served=expected_served(actual["_meta/replays"], fast or "upstream",
                                         precompute=precompute == "1"))
