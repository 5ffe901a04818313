"""Capture compiles exactly the Triton variants that replays launch (CPU, counted).

Each Triton variant (constexprs + input dtypes) costs a compile at a first server start (~0.27 s
on an H200). bench/bench_capture_cost.py captures SGLang's backends over 36 batch sizes (decode,
target_verify, draft_extend, 3-step multi-step) and replays every bs with the input dtypes SGLang
0.5.8's runners pass (int32 buffers; the batch's own int64 tensors where the EAGLE draft runner
doesn't pad); here it records the variants instead of running them. A replay whose variant was not
compiled at capture would compile on the replay; a compiled variant no replay launches is wasted
start-up time. The GPU timing is `python bench/bench_capture_cost.py` (scripts/gpu_tier.sh build).
The same through the session release's own runners (harness/variants.py): their buffers' dtypes
change between releases (req_pool_indices int64 from 0.5.10), and the variants compiled at capture
follow what the capture got.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_capture_compiles_what_replays_launch_and_nothing_else(patched_template, tmp_path):
    out = tmp_path / "capture.json"
    env = dict(os.environ, TRITON_INTERPRET="1", SGLANG_NSA_USE_CUDA_METADATA="0")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_capture_cost.py"), "--one",
                           str(patched_template), "--device", "cpu", "--replay", "--count-only",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert not r["failed"], r["failed"]
    for mode, served in r["served"].items():
        assert set(served) == {"metadata.triton"}, (mode, served)
    assert r["unwarmed_replays"] == [], "replays that would compile: " + str(r["unwarmed_replays"])
    compiled = {json.dumps(v) for v in r["variants"]}
    launched = {json.dumps(v) for v in r["replayed_variants"]}
    assert compiled == launched, f"compiled, never launched: {sorted(compiled - launched)}"
    # what compiling every dtype combination per plan (the rule before) would have cost
    every = {(json.dumps(c), 8 if c[0] == "2" else 4) for c, _ in r["variants"]}  # c[0]: MODE
    print(f"Triton variants compiled at capture: {len(compiled)} (every dtype combination: "
          f"{sum(n for _, n in every)})")


def test_runners_replay_only_variants_their_capture_compiled(patched_template, tmp_path):
    out = tmp_path / "variants.json"
    env = dict(os.environ, TRITON_INTERPRET="1", SGLANG_NSA_USE_CUDA_METADATA="0")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "harness" / "variants.py"),
                           "--tree", str(patched_template), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert not r["disabled"] and set(r["served"]) == {"metadata.triton"}, r
    assert r["launched"] and r["unwarmed"] == [], "replays that would compile: " + str(r["unwarmed"])
    assert set(r["launched"]) == set(r["warmed"]), \
        f"compiled, never launched: {sorted(set(r['warmed']) - set(r['launched']))}"
    # An unpadded draft-extend replay right after a request finished in verify brings the
    # batch's int64 accept counts: they are launched as the int32 variant the capture compiled
    # (one small copy), never compiled on a replay (~0.27 s on an H200).
    assert r["launched_finished"] and r["unwarmed_finished"] == [], r["unwarmed_finished"]
    finished = [json.loads(v) for v in r["launched_finished"]]
    assert all(d[2] != "torch.int64" for _, d in finished), finished
