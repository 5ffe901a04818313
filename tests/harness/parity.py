"""Run a scenario suite against two SGLang trees in separate processes and compare exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

RUNNER = Path(__file__).resolve().parent / "runner.py"

# Flags that select nsa-fastpath code paths; a run names the ones it sets, the rest are cleared
# so the caller's environment cannot leak into a comparison.
FASTPATH_FLAGS = (
    "SGLANG_NSA_USE_TRITON_METADATA",
    "SGLANG_NSA_USE_CUDA_METADATA",
    "SGLANG_NSA_USE_BATCHED_COPY",
    "SGLANG_RADIX_FAST_MATCH",
    "SGLANG_RADIX_COMPILED_MATCH",
    "SGLANG_RADIX_REMATCH_CACHE",
    "SGLANG_RADIX_TRITON_MATCH",
    "SGLANG_NSA_BATCHED_COPY_VERIFY",
    "SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA",
)


_runs: dict = {}  # run_suite(reuse=True) results of this session, by every input of the run


def run_suite(tree: Path, suite: str, configs: list, *, device: str = "cpu", seed: int = 0,
              env: dict | None = None, timeout: int = 1200, reuse: bool = False) -> dict:
    """The runner's outputs for `suite` on `tree`. reuse=True, for a tree nothing modifies
    (conftest's templates): a run with the same inputs earlier in this session is returned
    (a shallow copy) instead of run again, e.g. the pristine run several test files compare to."""
    full_env = {k: v for k, v in os.environ.items() if k not in FASTPATH_FLAGS}
    full_env.update(env or {})
    key = (str(tree), suite, json.dumps(configs, sort_keys=True), device, seed,
           tuple(sorted(full_env.items())))
    if reuse and key in _runs:
        return dict(_runs[key])
    dump = _run(tree, suite, configs, device, seed, full_env, timeout)
    if reuse:
        _runs[key] = dict(dump)
    return dump


def labelled(dump: dict, label: str) -> dict:
    """The outputs of the configs run with ``label`` (runner.py), under their own keys."""
    head = f"@{label}/"
    return {k[len(head):]: v for k, v in dump.items() if k.startswith(head)}


def _run(tree: Path, suite: str, configs: list, device: str, seed: int, full_env: dict,
         timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.pt"
        proc = subprocess.run(
            [sys.executable, str(RUNNER), "--tree", str(tree), "--suite", suite,
             "--device", device, "--seed", str(seed), "--config", json.dumps(configs),
             "--out", str(out)],
            env=full_env, capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"runner failed on {tree} ({proc.returncode}):\n{proc.stderr[-6000:]}")
        dump = torch.load(out, weights_only=False)
        dump["_meta/stderr"] = proc.stderr  # the runner's log, at exit included (not compared;
        # the name must not end in "/log": radix suites' per-config logs do)
        return dump


def _unread_mask(key: str, expected: dict, shape) -> torch.Tensor | None:
    """The `unread.*` mask a scenario recorded for this page-table output, padded to its shape."""
    prefix, name = key.rsplit("/", 1)
    name = name.removeprefix("graph_read.")
    if name == "graph_state.page_table":  # page_table_1 is a row-slice of this buffer
        name = "page_table_1"
    mask = expected.get(f"{prefix}/unread.{name}")
    if mask is None or len(shape) != 2:
        return None
    full = torch.zeros(shape, dtype=torch.bool)
    full[: mask.shape[0], : mask.shape[1]] = mask
    return full


def compare(expected: dict, actual: dict, limit: int = 20, strict: bool = True) -> list[str]:
    """Every key present in both, every tensor torch.equal (dtype and shape included).

    strict=False exempts the page-table cells a scenario marked `unread` (written by SGLang
    0.5.8, read by nobody; see nsa_scenarios.unread_masks): the fast paths skip them.
    """
    problems = []
    expected = {k: v for k, v in expected.items() if not k.startswith("_meta/")}
    actual = {k: v for k, v in actual.items() if not k.startswith("_meta/")}
    for key in sorted(expected.keys() - actual.keys()):
        problems.append(f"missing in patched: {key}")
    for key in sorted(actual.keys() - expected.keys()):
        problems.append(f"extra in patched: {key}")
    for key in sorted(expected.keys() & actual.keys()):
        a, b = expected[key], actual[key]
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                problems.append(f"{key}: tensor vs {type(b).__name__}")
            elif a.dtype != b.dtype or a.shape != b.shape:
                problems.append(f"{key}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
            elif not torch.equal(a, b):
                mask = None if strict else _unread_mask(key, expected, a.shape)
                if mask is not None and torch.equal(a[~mask], b[~mask]):
                    continue
                diff = (a != b).nonzero()
                problems.append(f"{key}: {diff.shape[0]} elements differ, first at {diff[0].tolist()}")
        elif a != b:
            problems.append(f"{key}: {a!r} vs {b!r}")
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more"]
    return problems
