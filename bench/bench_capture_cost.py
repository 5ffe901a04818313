"""What a server start pays for NSA replay metadata at CUDA-graph capture, 0.5.8 vs nsa-fastpath.

    python bench/bench_capture_cost.py                  # GPU: the table below, fresh processes
    python bench/bench_capture_cost.py --one TREE ...   # one measurement (what the table runs)

One measurement runs in a fresh process: SGLang's NativeSparseAttnBackend for decode,
target_verify and draft_extend, and NativeSparseAttnMultiStepBackend with 3 steps, each captured
over CAPTURE_BS the way the runners capture (largest bs first, int32 buffers); the host time of
every `init_forward_metadata_capture_cuda_graph` call, summed. It also records the Triton
variants the capture compiled (one per distinct constexprs + input dtypes: FillPlan._warm), and
can then replay every captured bs with the input dtypes SGLang 0.5.8's runners bring
(`--replay`), recording which replays found their variant compiled at capture.

The table: 0.5.8, patched on the CUDA path, patched on the Triton path (CUDA metadata off);
"empty" = empty NSA_FASTPATH_BUILD_DIR, TRITON_CACHE_DIR and TVM_FFI_CACHE_DIR (a first server
start), "warm" = the same directories again (a restart). On CPU (TRITON_INTERPRET=1) only the
variant count means anything: tests/test_capture_variants.py uses it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# 36 capture sizes up to 256, as a large-GPU server captures (cuda_graph_max_bs 256)
CAPTURE_BS = (1, 2, 3, 4, *range(8, 257, 8))
MODES = ("decode", "target_verify", "draft_extend", "multi")
TREES = {"0.5.8": {}, "cuda": {"SGLANG_NSA_USE_CUDA_METADATA": "1"},
         "triton": {"SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "1"}}


def runner_inputs(ns, torch, gen, mode, bs, device):
    """The replay inputs SGLang 0.5.8's runners pass for this mode: their int32 buffers (padded),
    and for the multi-step draft backend unpadded also the batch's own int64 tensors
    (EAGLEDraftCudaGraphRunner passes forward_batch's when bs == raw_bs)."""
    x = ns.make_replay_inputs(gen, "decode" if mode == "multi" else mode, bs, max(bs - 1, 1),
                              2048, 1, device)
    padded = SimpleNamespace(**vars(x))
    padded.req_pool_indices = x.req_pool_indices.to(torch.int32)
    padded.seq_lens = x.seq_lens.to(torch.int32)
    return [padded, x] if mode == "multi" else [padded]


def measure(tree: Path, device: str, capture_bs, modes, replay: bool, count_only: bool) -> dict:
    sys.path[:0] = [str(ROOT / "tests" / "harness"), str(HERE)]
    from runner import setup_paths

    setup_paths(tree, device)
    import torch

    import nsa_inputs as ns
    from sglang.srt.layers.attention.nsa_backend import (
        NativeSparseAttnBackend, NativeSparseAttnMultiStepBackend)

    patched = (tree / "sglang/srt/layers/attention/nsa/replay_fastpath.py").exists()
    variants, used, unwarmed = [], [], []
    if patched:
        from sglang.srt.layers.attention.nsa import replay_fastpath as rf
        from sglang.srt.layers.attention.nsa import triton_metadata_kernel as tk

        warm, fill = tk.FillPlan._warm, tk.FillPlan.fill

        def variant(plan, dtypes):
            return [list(map(str, plan._const_values)), [str(d) for d in dtypes]]

        def counted_warm(self, scratch_table, dtypes):
            variants.append(variant(self, dtypes))
            self.warmed = getattr(self, "warmed", set()) | {dtypes}
            if not count_only:
                warm(self, scratch_table, dtypes)

        def checked_fill(self, rpi, seq, acc=None):
            dtypes = (rpi.dtype, seq.dtype, None if acc is None else acc.dtype)
            used.append(variant(self, dtypes))
            if dtypes not in getattr(self, "warmed", ()):
                unwarmed.append(variant(self, dtypes))
            if not count_only:
                fill(self, rpi, seq, acc)

        tk.FillPlan._warm, tk.FillPlan.fill = counted_warm, checked_fill
    ns.prepare_sglang_globals(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    seconds, served = {}, {}
    for mode in modes:
        tokens = 1 if mode in ("decode", "multi") else ns.NUM_DRAFT_TOKENS
        runner = ns.make_model_runner(device, 64, 2048, 0)
        if mode == "multi":
            backend = NativeSparseAttnMultiStepBackend(runner, topk=1, speculative_num_steps=3)
        else:
            backend = NativeSparseAttnBackend(runner)
        backend.init_cuda_graph_state(max(capture_bs), max(capture_bs) * tokens)
        total, inputs = 0.0, {}
        for bs in sorted(capture_bs, reverse=True):  # SGLang captures the largest bs first
            inputs[bs] = runner_inputs(ns, torch, gen, mode, bs, device)
            x = inputs[bs][0]
            spec = ns.spec_info_for(x)
            sync()
            t0 = time.perf_counter()
            if mode == "multi":
                backend.init_forward_metadata_capture_cuda_graph(SimpleNamespace(
                    batch_size=bs, req_pool_indices=x.req_pool_indices, seq_lens=x.seq_lens,
                    spec_info=spec))
            else:
                backend.init_forward_metadata_capture_cuda_graph(
                    bs=bs, num_tokens=bs * tokens, req_pool_indices=x.req_pool_indices,
                    seq_lens=x.seq_lens, encoder_lens=None, forward_mode=ns.forward_mode_of(mode),
                    spec_info=spec)
            sync()
            total += time.perf_counter() - t0
        seconds[mode] = total
        if replay and patched:
            rf.reset_for_tests()
            for bs in capture_bs:
                for x in inputs[bs]:
                    if mode == "multi":
                        backend.init_forward_metadata_replay_cuda_graph(SimpleNamespace(
                            req_pool_indices=x.req_pool_indices, seq_lens=x.seq_lens,
                            seq_lens_cpu=x.seq_lens_cpu, seq_lens_sum=int(x.seq_lens_cpu.sum()),
                            spec_info=ns.spec_info_for(x)), bs)
                    else:
                        backend.init_forward_metadata_replay_cuda_graph(
                            bs=bs, req_pool_indices=x.req_pool_indices, seq_lens=x.seq_lens,
                            seq_lens_sum=int(x.seq_lens_cpu.sum()), encoder_lens=None,
                            forward_mode=ns.forward_mode_of(mode), spec_info=ns.spec_info_for(x),
                            seq_lens_cpu=x.seq_lens_cpu)
            served[mode] = dict(rf.served)
    return {"seconds": seconds, "total_s": sum(seconds.values()), "variants": variants,
            "replayed_variants": used, "unwarmed_replays": unwarmed, "served": served,
            "failed": dict(rf._failed) if patched else {}}


def run_one(tree: Path, flags: dict, caches: Path, device: str, extra=()) -> dict:
    out = caches / f"result-{time.monotonic_ns()}.json"
    env = dict(os.environ, **flags, NSA_FASTPATH_BUILD_DIR=str(caches / "nsa"),
               TRITON_CACHE_DIR=str(caches / "triton"), TVM_FFI_CACHE_DIR=str(caches / "tvm-ffi"))
    subprocess.run([sys.executable, __file__, "--one", str(tree), "--device", device,
                    "--out", str(out), *extra], env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", type=Path, help="measure this tree in this process")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--bs", default=",".join(map(str, CAPTURE_BS)))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--replay", action="store_true",
                    help="then replay every captured bs with the runners' input dtypes")
    ap.add_argument("--count-only", action="store_true",
                    help="record the Triton variants without running them (CPU test)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    capture_bs = [int(b) for b in args.bs.split(",")]
    if args.one:
        result = measure(args.one, args.device, capture_bs, args.modes.split(","), args.replay,
                         args.count_only)
        args.out.write_text(json.dumps(result, indent=1))
        return
    from common import build_trees, default_workdir, markdown_table, save_json

    trees = dict(zip(("pristine", "patched"), build_trees(default_workdir())))
    rows, results = [], {}
    for name, flags in TREES.items():
        tree = trees["pristine" if name == "0.5.8" else "patched"]
        with tempfile.TemporaryDirectory() as caches:
            empty = run_one(tree, flags, Path(caches), args.device)
            warm = run_one(tree, flags, Path(caches), args.device)
        results[name] = {"empty": empty, "warm": warm}
        rows.append([name, f"{empty['total_s']:.2f} s", f"{warm['total_s']:.2f} s",
                     len({json.dumps(v) for v in empty["variants"]}),
                     ", ".join(f"{m} {s:.2f}" for m, s in empty["seconds"].items())])
    print(f"\n### Capture cost: summed host time of init_forward_metadata_capture_cuda_graph over "
          f"{len(capture_bs)} batch sizes (1..{max(capture_bs)}), decode + target_verify + "
          f"draft_extend + 3-step multi-step, {args.device}\n")
    print(markdown_table(["tree", "empty caches (first start)", "warm caches (restart)",
                          "Triton variants compiled", "empty, per mode (s)"], rows))
    save_json("capture_cost.json", results)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
