"""Run one scenario suite against one SGLang tree in this (fresh) process and save every output.

    python tests/harness/runner.py --tree SITE_DIR --suite nsa|radix --device cpu|cuda \
        --seed N --config JSON --out FILE.pt

The tree goes first on sys.path, ahead of any installed SGLang; the test-only stand-ins
(tests/standins, see tests/README.md) come after it. Environment flags are inherited from the
caller, so pristine and patched runs differ only in the tree.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
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
    args = ap.parse_args()

    setup_paths(args.tree, args.device)
    import torch
    from sglang.srt.utils import configure_logger

    # Log as a server's scheduler process does (stderr, INFO; the caller keeps it: `_meta/stderr`).
    configure_logger(argparse.Namespace(log_level="info"), prefix=" TP0")

    torch.manual_seed(args.seed)
    out: dict = {}
    configs = json.loads(args.config)
    if args.suite == "nsa":
        import nsa_scenarios

        nsa_scenarios.run(out, args.device, args.seed, configs)
    else:
        import radix_scenarios

        radix_scenarios.run(out, args.seed, configs)
    fastpath = sys.modules.get("sglang.srt.layers.attention.nsa.replay_fastpath")
    if fastpath is not None:  # patched tree: replays served per path, paths disabled (and why)
        report = fastpath.path_report()
        out["_meta/served"] = dict(report["served"])
        out["_meta/nsa_failed"] = dict(report["disabled"])
    torch.save(out, args.out)
    print(f"runner: {len(out)} outputs from {args.suite} on {args.tree} -> {args.out}")


if __name__ == "__main__":
    main()
