"""Run one scenario suite against one SGLang tree in this (fresh) process and save every output.

    python tests/harness/runner.py --tree SITE_DIR --suite nsa|radix --device cpu|cuda \
        --seed N --config JSON --out FILE.pt [--keep-going]

The tree goes first on sys.path, ahead of any installed SGLang; the test-only stand-ins
(tests/standins, see tests/README.md) come after it. Environment flags are inherited from the
caller, so pristine and patched runs differ only in the tree. A config may name its own
``suite`` (default --suite), ``env`` (set for that scenario only) and ``label`` (its outputs
are saved as ``@LABEL/<key>``: one process runs the same scenario under several flag sets,
harness.parity.labelled reads each back). --keep-going: a scenario
that raises is recorded under ``_errors/`` (the exception, where in SGLang and in the harness)
and the next one runs (harness/smoke.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
STANDINS = HERE.parent / "standins"
sys.path.insert(0, str(HERE))


def setup_paths(tree: Path, device: str) -> None:
    if device == "cpu":
        # Must be set before any @triton.jit function is defined, i.e. before importing SGLang.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    else:
        os.environ.setdefault("SGLANG_ENABLE_JIT_DEEPGEMM", "0")
    import releases

    rel = releases.tree_release(tree)
    standins = STANDINS / ("cpu" if device == "cpu" else "gpu")
    extra = releases.standin_dirs(rel, device)
    sys.path[:0] = [str(tree), *map(str, releases.deps_dirs(rel)), str(standins),
                    *map(str, extra), str(STANDINS), str(HERE)]
    import sglang

    where = Path(sglang.__file__).resolve()
    if not where.is_relative_to(tree.resolve()):
        sys.exit(f"runner: sglang resolved to {where}, not to the tree under test {tree}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, required=True)
    ap.add_argument("--suite", choices=["nsa", "radix"], required=True)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="[]", help="JSON list of scenario configs")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keep-going", action="store_true",
                    help="record a scenario's exception under _errors/ and run the next one")
    args = ap.parse_args()

    setup_paths(args.tree, args.device)
    import torch
    from sglang.srt.utils import configure_logger

    # Log as a server's scheduler process does (stderr, INFO; the caller keeps it: `_meta/stderr`).
    configure_logger(argparse.Namespace(log_level="info"), prefix=" TP0")

    torch.manual_seed(args.seed)
    out: dict = {}
    labelled: dict = {}  # label -> the outputs of its configs, as one unlabelled run's
    for cfg in json.loads(args.config):
        cfg = dict(cfg)
        suite, env = cfg.pop("suite", args.suite), cfg.pop("env", {})
        label = cfg.pop("label", None)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            run_scenario(labelled.setdefault(label, {}) if label else out, suite, args.device,
                         args.seed, cfg)
        except Exception as e:
            if not args.keep_going:
                raise
            label = " ".join(f"{k}={v}" for k, v in {**cfg, **({"env": env} if env else {})}.items())
            out[f"_errors/{suite}: {label}"] = describe_error(e, args.tree)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None)
                if v is not None:
                    os.environ[k] = v
    for label, part in labelled.items():
        out.update({f"@{label}/{k}": v for k, v in part.items()})
    fastpath = sys.modules.get("sglang.srt.layers.attention.nsa.replay_fastpath")
    if fastpath is not None:  # patched tree: replays served per path, paths disabled (and why)
        report = fastpath.path_report()
        out["_meta/served"] = dict(report["served"])
        out["_meta/nsa_failed"] = dict(report["disabled"])
    tree = str(args.tree.resolve())  # the tree's modules the run imported (test_shared_runs)
    out["_meta/modules"] = sorted({
        os.path.relpath(f, tree) for m in list(sys.modules.values())
        if (f := getattr(m, "__file__", None)) and str(Path(f).resolve()).startswith(tree + os.sep)})
    torch.save(out, args.out)
    print(f"runner: {len(out)} outputs from {args.suite} on {args.tree} -> {args.out}")


def run_scenario(out: dict, suite: str, device: str, seed: int, cfg: dict) -> None:
    if suite == "nsa":
        import nsa_scenarios

        nsa_scenarios.run(out, device, seed, [cfg])
    else:
        import radix_scenarios

        radix_scenarios.run(out, seed, [cfg])


def describe_error(e: BaseException, tree: Path) -> str:
    """The exception, the innermost frame in the tree under test and the innermost harness one."""
    frames = traceback.extract_tb(e.__traceback__)
    text = f"{type(e).__name__}: {e}"
    tree = str(tree.resolve())
    for where, root in (("in SGLang", tree), ("from the harness", str(HERE))):
        inside = [f for f in frames if str(Path(f.filename).resolve()).startswith(root)]
        if inside:
            f = inside[-1]
            name = os.path.relpath(f.filename, root)
            text += f"\n    {where}: {name}:{f.lineno} ({f.name}): {f.line}"
    return text


if __name__ == "__main__":
    main()
