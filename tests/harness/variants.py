"""The Triton variants a capture compiles and those its replays launch, through the release's own
CUDA-graph runners (tests/test_capture_variants.py; CPU, counted, nothing run).

    python tests/harness/variants.py --tree PATCHED_SITE --out FILE.json

Per mode, the release's runner captures bs 1, 2 and 4; then replays raw batches padded and not,
and again with a request that finished in verify (draft_extend unpadded then gets the batch's
int64 accept counts), so every dtype set the runner hands the backend occurs. Each variant (the
plan's constexprs and the input dtypes) is recorded when the capture warms it and when a replay
launches it; replays with a finished request apart (`*_finished`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CAPTURE_BS = [1, 2, 4]
MODES = ("decode", "target_verify", "draft_extend", "draft")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from runner import setup_paths

    setup_paths(args.tree, "cpu")
    import torch

    import nsa_scenarios as sc
    import sglang_runners as sr
    from sglang.srt.layers.attention.nsa import replay_fastpath as rf
    from sglang.srt.layers.attention.nsa import triton_metadata_kernel as tk

    warmed, launched, unwarmed = set(), set(), set()
    finished_now = [False]
    launched_finished, unwarmed_finished = set(), set()

    def variant(plan, dtypes) -> str:
        return json.dumps([list(map(str, plan._const_values)), [str(d) for d in dtypes]])

    def counted_warm(self, scratch_table, dtypes):
        warmed.add(variant(self, dtypes))
        self.warmed = getattr(self, "warmed", set()) | {dtypes}

    def counted_launch(self, rpi, seq, acc=None):  # what fill launches, after adapting inputs
        dtypes = (rpi.dtype, seq.dtype, None if acc is None else acc.dtype)
        launched_here, unwarmed_here = ((launched_finished, unwarmed_finished) if finished_now[0]
                                        else (launched, unwarmed))
        launched_here.add(variant(self, dtypes))
        if dtypes not in getattr(self, "warmed", ()):
            unwarmed_here.add(variant(self, dtypes))

    tk.FillPlan._warm, tk.FillPlan._launch = counted_warm, counted_launch
    gen = torch.Generator().manual_seed(0)
    for mode in MODES:
        driver = sr.make_runner(mode, 64, 128, CAPTURE_BS, "cpu")
        driver.capture()
        for i, bs in enumerate(CAPTURE_BS):
            for raw_bs in sorted({bs, max(bs - 1, CAPTURE_BS[i - 1] + 1 if i else 1)}):
                for finished in (False, True):
                    finished_now[0] = finished
                    driver.replay(sc.make_batch(driver, gen, raw_bs, 128, finished))
    report = rf.path_report()
    args.out.write_text(json.dumps({
        "warmed": sorted(warmed), "launched": sorted(launched), "unwarmed": sorted(unwarmed),
        "launched_finished": sorted(launched_finished),
        "unwarmed_finished": sorted(unwarmed_finished),
        "served": report["served"], "disabled": report["disabled"]}, indent=1))


if __name__ == "__main__":
    main()
