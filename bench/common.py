"""Shared benchmark plumbing: trees, timers, tables.

The NSA benchmarks run SGLang 0.5.8's own replay methods and the patched ones side by side in
ONE process: the patched tree is imported as `sglang`, and the pristine `nsa_backend.py` is
loaded from the pristine tree under another module name (its imports resolve to the patched
tree's modules, which are byte-identical to 0.5.8 except environ.py, a superset). The model-runner
stub and replay values come from bench/nsa_inputs.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import regen  # noqa: E402

# The SGLang release the benchmarks run (its wheel from scripts/fetch_wheel.sh; apply.sh picks
# its set): NSA_FASTPATH_BENCH_RELEASE=0.5.9 compares against 0.5.9's own code.
RELEASE = os.environ.get("NSA_FASTPATH_BENCH_RELEASE", "0.5.8")
WHEEL = regen.default_wheel(RELEASE)  # this Python's (from 0.5.11 one wheel per CPython)


def build_trees(workdir: Path) -> tuple[Path, Path]:
    """Pristine and patched (by scripts/apply.sh) pip installs of the pinned wheel."""
    pristine, patched = workdir / "pristine", workdir / "patched"
    if not pristine.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--target", str(pristine), str(WHEEL)], check=True)
    if not patched.exists():
        shutil.copytree(pristine, patched, symlinks=True)
    # every time: a no-op when already patched, and it refuses a tree it can't vouch for
    subprocess.run(["bash", str(ROOT / "scripts" / "apply.sh"), "apply", "--target",
                    str(patched)], check=True, env=dict(os.environ, PYTHON=sys.executable),
                   stdout=subprocess.DEVNULL)
    return pristine, patched


def import_trees(pristine: Path, patched: Path, device: str):
    """Import the patched tree as sglang; return (pristine nsa_backend module, patched one)."""
    sys.path[:0] = [str(patched), str(ROOT / "tests" / "standins" / ("gpu" if device == "cuda" else "cpu")),
                    str(ROOT / "tests" / "standins"), str(ROOT / "tests" / "harness")]
    os.environ.setdefault("SGLANG_ENABLE_JIT_DEEPGEMM", "0")
    import sglang.srt.layers.attention.nsa_backend as patched_mod

    spec = importlib.util.spec_from_file_location(
        "pristine_nsa_backend", pristine / "sglang/srt/layers/attention/nsa_backend.py")
    pristine_mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pristine_mod  # dataclasses look their module up there
    spec.loader.exec_module(pristine_mod)
    return pristine_mod, patched_mod


def default_workdir() -> Path:
    base = Path(os.environ.get("NSA_FASTPATH_BENCH_DIR", Path(tempfile.gettempdir()) / "nsa-fastpath-bench"))
    return base if RELEASE == "0.5.8" else base / RELEASE


def host_time_us(fn, *, iters: int, warmup: int, before=None, after=None) -> float:
    """Median host time of fn() in microseconds; `before`/`after` run untimed around each call."""
    samples = []
    for n in range(warmup + iters):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        if after:
            after()
        if n >= warmup:
            samples.append((t1 - t0) * 1e6)
    return statistics.median(samples)


def markdown_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def save_json(name: str, data) -> None:
    out = os.environ.get("OUT")
    if out:
        Path(out, name).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":  # print the pristine and patched tree paths (building them if needed)
    for tree in build_trees(default_workdir()):
        print(tree)
