"""Smoke check of one SGLang release: `bash scripts/test.sh --release X --smoke`.

Installs the release's pinned wheel (pristine) and a copy patched by apply.sh, runs the NSA and
radix harness on small configs on both trees at once (one runner process per tree, see
runner.py --keep-going: a scenario that raises does not stop the others), and lists every
problem in one report: a tree that does not import or patch, each scenario that raises on
either tree (the exception, where in SGLang and in the harness), each output of the patched tree
that differs from the pristine one, and served counts that are not the fast path's. Exit 0 when
there is none. It runs each NSA mode, page size 1 and 64, the multi-step backend with the MTP
precompute on and off, the bad-input check, and the radix workload, scheduler and re-match
scenarios (EAGLE and not), with every flag at its default; the parity suites then run the full
matrix (tests/README.md, "One release per session").

`--device cuda` (a GPU machine set up as scripts/gpu_tier.sh does: its Python dependencies on
PYTHONPATH) runs the same on CUDA tensors with real CUDA graphs, the CUDA path serving.

A release nsa-fastpath has no set for (releases.has_set; 0.5.15 on) runs its pristine tree only,
the NSA scenarios: its own replay code through its own runners, every problem listed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import releases  # noqa: E402

SMALL_NSA = [  # every mode on its own, so that one failing mode does not hide another
    {"kind": "single", "page_size": ps, "topk": 128, "capture_bs": [1, 2], "replays_per_bs": 2,
     "modes": [mode]}
    for ps in (1, 64) for mode in ("decode", "target_verify", "draft_extend")
] + [
    {"kind": "multi", "page_size": 64, "topk": 128, "capture_bs": [1, 2], "replays_per_bs": 2,
     "num_steps_list": [steps], "env": {"SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": precompute}}
    for steps in releases.draft_steps(releases.release())[:1] for precompute in ("1", "0")
] + [{"kind": "bad_input"}]
SMALL_RADIX = [
    {"suite": "radix", "page_size": ps, "bigram": bigram, "n_requests": 60, "max_prefix": 2048,
     "budget_tokens": 4000}
    for ps, bigram in ((1, False), (16, True))
] + [
    {"suite": "radix", "scenario": "scheduler", "page_size": ps, "bigram": bigram,
     "n_requests": 40, "max_prefix": 2048, "budget_tokens": 3000}
    for ps, bigram in ((1, True), (64, False))
] + [
    {"suite": "radix", "scenario": "rematch", "page_size": ps, "bigram": bigram, "n_ops": 150,
     "max_prefix": 3000}
    for ps, bigram in ((1, True), (64, False))
]
# the flags a patched run must leave at their defaults (the caller's environment is cleared)
FLAGS = ("SGLANG_NSA_USE_TRITON_METADATA", "SGLANG_NSA_USE_CUDA_METADATA",
         "SGLANG_NSA_USE_BATCHED_COPY", "SGLANG_RADIX_FAST_MATCH", "SGLANG_RADIX_COMPILED_MATCH",
         "SGLANG_RADIX_REMATCH_CACHE", "SGLANG_RADIX_TRITON_MATCH",
         "SGLANG_NSA_BATCHED_COPY_VERIFY", "SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA")


def install(release: str, tmp: Path, problems: list) -> tuple[Path, Path | None]:
    """(pristine site-packages, patched copy or None), as conftest.py makes them; a release
    without a set (releases.has_set) is its pristine tree only."""
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["bash", str(ROOT / "scripts" / "release_deps.sh"), release], check=True,
                   stdout=subprocess.DEVNULL)
    pristine = tmp / "pristine"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target", str(pristine),
                    str(releases.wheel(release))], check=True)
    if not releases.has_set(release):
        return pristine, None
    patched = tmp / "patched"
    shutil.copytree(pristine, patched, symlinks=True)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "apply.sh"), "apply", "--target",
                           str(patched)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable))
    if proc.returncode != 0:
        problems.append(f"patched tree: apply.sh apply exited {proc.returncode}:\n"
                        + indent((proc.stdout + proc.stderr)[-3000:]))
        return pristine, None
    return pristine, patched


def scenarios(own_only: bool) -> list:
    """A release without a set runs the NSA scenarios only: its own replay code, the part of it
    bench_release.py --own-only times (its RadixCache is another question than replay
    metadata)."""
    return SMALL_NSA if own_only else SMALL_NSA + SMALL_RADIX


def start(tree: Path, out: Path, build_dir: Path, device: str, config: list) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in FLAGS}
    env.update(NSA_FASTPATH_BUILD_DIR=str(build_dir))
    if device == "cpu":
        env.update(TRITON_INTERPRET="1")
    else:
        env.pop("TRITON_INTERPRET", None)
        env.update(SGLANG_ENABLE_JIT_DEEPGEMM="0")
    return subprocess.Popen(
        [sys.executable, str(HERE / "runner.py"), "--tree", str(tree), "--suite", "nsa",
         "--device", device, "--config", json.dumps(config), "--out", str(out),
         "--keep-going"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def indent(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.rstrip("\n").splitlines())


def served_problems(dump: dict, device: str) -> list[str]:
    """The patched run's paths: Triton (on CUDA: the CUDA kernel) served every NSA replay,
    nothing was disabled; the compiled radix matcher (or its re-match cache) served every match."""
    from served import expected_served

    problems = []
    want = expected_served(dump.get("_meta/replays", {}), "cuda" if device == "cuda" else "triton")
    if dump.get("_meta/served") != want:
        problems.append(f"NSA replays served {dump.get('_meta/served')}, expected {want} "
                        f"(harness replays: {dump.get('_meta/replays')})")
    if dump.get("_meta/nsa_failed"):
        problems.append(f"NSA paths disabled: {dump['_meta/nsa_failed']}")
    for key, stats in dump.items():
        if key.startswith("_meta/radix") and key.endswith("/stats"):
            served = {k: v for k, v in stats.items() if k in ("compiled", "rematch", "python",
                                                               "upstream")}
            if not served.get("compiled") or served.get("upstream") or served.get("python"):
                problems.append(f"{key[6:-6]}: radix matches served {stats}, expected the "
                                "compiled matcher's")
    return problems


def main() -> int:
    import argparse

    import torch
    from parity import compare

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    device = ap.parse_args().device
    release = releases.release()
    own_only = not releases.has_set(release)
    t0 = time.monotonic()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nsa-smoke-") as tmp:
        tmp = Path(tmp)
        pristine, patched = install(release, tmp, problems)
        trees = {"pristine": pristine, "patched": patched}
        procs = {name: start(tree, tmp / f"{name}.pt", tmp / "build", device,
                             scenarios(own_only))
                 for name, tree in trees.items() if tree is not None}
        dumps = {}
        for name, proc in procs.items():
            _, stderr = proc.communicate(timeout=900)
            if proc.returncode != 0:
                problems.append(f"{name} tree: the runner exited {proc.returncode} before any "
                                f"scenario ran:\n" + indent(stderr[-3000:]))
                continue
            dumps[name] = torch.load(tmp / f"{name}.pt", weights_only=False)
        for name, dump in dumps.items():  # one entry per distinct error, with its scenarios
            by_error: dict = {}  # the exception and its place in SGLang -> scenarios
            for key, text in sorted(dump.items()):
                if key.startswith("_errors/"):
                    error = "\n".join(ln for ln in text.splitlines()
                                      if "from the harness:" not in ln)
                    by_error.setdefault(error, []).append(key[8:])
            for error, where in by_error.items():
                problems.append(f"{name} tree, {len(where)} scenario(s): "
                                + "; ".join(where) + "\n" + indent(error))
        if own_only:
            pass  # nothing to compare: the release's own code ran (or its errors are listed)
        elif len(dumps) == 2:
            failed = {k.split(": ", 1)[1] for d in dumps.values() for k in d
                      if k.startswith("_errors/")}
            if failed:
                problems.append("parity: not compared (scenarios raised, above)")
            else:  # the bad input: SGLang's own error vs ours (test_parity_nsa's check)
                pristine, patched = ({k: v for k, v in dumps[n].items() if not k.startswith("bad/")}
                                     for n in ("pristine", "patched"))
                problems += [f"parity: {p}" for p in compare(pristine, patched, strict=False,
                                                             limit=40)]
                bad = dumps["patched"].get("bad/draft_extend_overflow", "")
                if releases.draft_extend_v2(release):  # test_parity_nsa's check: no host count
                    if bad != "no error" or dumps["patched"].get("bad/rows_past_capture_written"):
                        problems.append(f"bad input: the patched tree reported {bad!r}, rows "
                                        "past the capture written: "
                                        f"{dumps['patched'].get('bad/rows_past_capture_written')}")
                elif not bad.startswith("ValueError: nsa-fastpath: draft_extend"):
                    problems.append(f"bad input: the patched tree reported {bad!r}")
            problems += [f"served: {p}" for p in served_problems(dumps["patched"], device)]
    took = time.monotonic() - t0
    ran = len(scenarios(own_only))
    trees = ("its pristine tree (no release set: SGLang's own code, NSA scenarios only)"
             if own_only else "the pristine and the patched tree")
    if problems:
        print(f"SGLang {release}: {len(problems)} problem(s) in {ran} scenarios on "
              f"{trees} ({took:.0f} s):\n")
        print("\n".join(f"{i}. {p}" for i, p in enumerate(problems, 1)))
        return 1
    print(f"SGLang {release}: {ran} scenarios ran on {trees}"
          + ("" if own_only else ", outputs identical, the fast paths served")
          + f" ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
