"""Multi-step (MTP) replay and the precomputed copies, SGLang 0.5.8 vs nsa-fastpath, on a GPU.

    python bench/bench_batched_copy.py [--iters 200]
    NSA_FASTPATH_BENCH_RELEASE=0.5.9 python bench/bench_batched_copy.py   # on SGLang 0.5.9

On 0.5.9 (a release with SGLang's own fused precomputed copy) the table adds `upstream-fused`:
the patched method with the metadata kernels and our batched copy off, so 0.5.9's fused copy
serves (`sglang-0.5.9`, the pristine method, runs it too), against `batched-copy` (ours). Both
tables add `floor`: one launch copying one small tensor, what any one-launch copy costs at least.
replay_fastpath.PREFER_UPSTREAM_FUSED_COPY picks between them when both are on.

1. The whole NativeSparseAttnMultiStepBackend.init_forward_metadata_replay_cuda_graph call
   (precompute on, SGLang's default), 2/3/4/8 step backends, bs 1/32/256, median host time:
   SGLang 0.5.8's method; the patched method with the fused metadata kernel filling all step
   backends in one launch (cuda, triton); metadata kernels off so 0.5.8's precompute runs and
   the batched copy does every copy (batched-copy); and the same with torch._foreach_copy_
   doing the copies (foreach). GPU idle, and with ~3.4 ms of GPU work queued first.
2. One backend's from-precomputed copies alone: 0.5.8's `.copy_()` calls vs one batched-copy
   launch vs `_foreach_copy_`.
Tables are printed; numbers saved to $OUT/batched_copy.json.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RELEASE, build_trees, default_workdir, host_time_us, import_trees, markdown_table, save_json  # noqa: E402

BUSY_CYCLES = 6_700_000
ON = {"SGLANG_NSA_USE_CUDA_METADATA": "1", "SGLANG_NSA_USE_TRITON_METADATA": "1",
      "SGLANG_NSA_USE_BATCHED_COPY": "1"}
VARIANTS = {
    "cuda": ON,
    "triton": {**ON, "SGLANG_NSA_USE_CUDA_METADATA": "0"},
    "batched-copy": {**ON, "SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "0"},
    "foreach": {**ON, "SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "0",
                "SGLANG_NSA_USE_BATCHED_COPY": "0"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--topk", type=int, default=2048)
    args = ap.parse_args()

    pristine_dir, patched_dir = build_trees(default_workdir())
    pristine_mod, patched_mod = import_trees(pristine_dir, patched_dir, "cuda")
    import nsa_inputs as ns
    from sglang.srt.layers.attention.nsa import replay_fastpath as rf
    from sglang.srt.layers.attention.nsa import triton_batched_copy as bc
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    ns.prepare_sglang_globals("cuda")
    os.environ["SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA"] = "1"
    gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize
    busy = lambda: torch.cuda._sleep(BUSY_CYCLES)  # noqa: E731
    results = {"multi": [], "single_copy": []}
    Pristine = pristine_mod.NativeSparseAttnMultiStepBackend
    Patched = patched_mod.NativeSparseAttnMultiStepBackend

    def foreach_replay(mb, batch, bs):
        """Patched multi-step replay with the copies done by torch._foreach_copy_."""
        pre = mb.attn_backends[0]._precompute_replay_metadata(
            bs=bs, req_pool_indices=batch.req_pool_indices, seq_lens=batch.seq_lens,
            seq_lens_cpu=batch.seq_lens_cpu, forward_mode=ForwardMode.DECODE,
            spec_info=batch.spec_info)
        bc.copy_with_foreach([b.decode_cuda_graph_metadata[bs] for b in mb.attn_backends], pre,
                             ForwardMode.DECODE)

    def captured(cls, steps, bs, batch, flags):
        """A multi-step backend captured at bs with `flags` (read at capture)."""
        os.environ.update(flags)
        mb = cls(ns.make_model_runner("cuda", args.page_size, args.topk, 0), topk=1,
                 speculative_num_steps=steps)
        mb.init_cuda_graph_state(256, 256)
        mb.init_forward_metadata_capture_cuda_graph(batch)
        for k in flags:
            os.environ.pop(k)
        return mb

    variants = dict(VARIANTS)
    if hasattr(patched_mod, "_USE_FUSED_METADATA_COPY"):  # SGLang's own fused copy (0.5.9)
        if not patched_mod._USE_FUSED_METADATA_COPY:
            sys.exit("SGLANG_USE_FUSED_METADATA_COPY is off: upstream's fused copy can't be timed")
        variants["upstream-fused"] = {**variants["foreach"]}
        variants["batched-copy"] = {**variants["batched-copy"], "SGLANG_USE_FUSED_METADATA_COPY": "0"}
    floor_src = torch.zeros(8, dtype=torch.int32, device="cuda")
    floor_dst = torch.empty_like(floor_src)
    floor = lambda: floor_dst.copy_(floor_src)  # noqa: E731
    upstream = f"sglang-{RELEASE}"

    for steps in (2, 3, 4, 8):
        for bs in (1, 32, 256):
            inputs = ns.make_replay_inputs(gen, "decode", bs, bs, args.topk, 1, "cuda")
            # the draft runner's int32 buffers (EAGLEDraftCudaGraphRunner)
            batch = SimpleNamespace(batch_size=bs,
                                    req_pool_indices=inputs.req_pool_indices.to(torch.int32),
                                    seq_lens=inputs.seq_lens.to(torch.int32),
                                    seq_lens_cpu=inputs.seq_lens_cpu.to(torch.int32),
                                    seq_lens_sum=int(inputs.seq_lens_cpu.sum()),
                                    spec_info=None)
            row = {"steps": steps, "bs": bs}
            pristine = captured(Pristine, steps, bs, batch, {})
            runs = [(upstream, lambda: Pristine.init_forward_metadata_replay_cuda_graph(
                pristine, batch, bs)), ("floor", floor)]
            for name, flags in variants.items():
                mb = captured(Patched, steps, bs, batch, flags)
                fn = (lambda mb=mb: foreach_replay(mb, batch, bs)) if name == "foreach" else (
                    lambda mb=mb: Patched.init_forward_metadata_replay_cuda_graph(mb, batch, bs))
                runs.append((name, fn))
            for name, fn in runs:
                rf.reset_for_tests()
                row[f"{name}_idle_us"] = host_time_us(fn, iters=args.iters, warmup=args.warmup,
                                                      before=sync)
                row[f"{name}_busy_us"] = host_time_us(fn, iters=args.iters // 2, warmup=5,
                                                      before=lambda: (sync(), busy()), after=sync)
                row[f"{name}_paths"] = rf.path_report()  # which path served (upstream's: none)
            results["multi"].append(row)
            print(row, flush=True)

            # one backend's copies alone (from the same precomputed source)
            if steps == 3:
                b = mb.attn_backends[0]
                pre = b._precompute_replay_metadata(
                    bs=bs, req_pool_indices=batch.req_pool_indices, seq_lens=batch.seq_lens,
                    seq_lens_cpu=batch.seq_lens_cpu, forward_mode=ForwardMode.DECODE,
                    spec_info=batch.spec_info)
                m = b.decode_cuda_graph_metadata[bs]
                table = b._nsa_fastpath_plans[bs].table
                pairs = bc.plain_copy_pairs(m, pre, ForwardMode.DECODE)
                one = {"bs": bs}
                one["plain_copies_us"] = host_time_us(
                    lambda: [d.copy_(s) for d, s in pairs], iters=args.iters, warmup=args.warmup,
                    before=sync)
                one["batched_us"] = host_time_us(
                    lambda: bc.launch(pre, table, m, 1, copy_expanded=False),
                    iters=args.iters, warmup=args.warmup, before=sync)
                one["floor_us"] = host_time_us(floor, iters=args.iters, warmup=args.warmup,
                                               before=sync)
                one["foreach_us"] = host_time_us(
                    lambda: torch._foreach_copy_([d for d, _ in pairs], [s for _, s in pairs]),
                    iters=args.iters, warmup=args.warmup, before=sync)
                results["single_copy"].append(one)
                print(one, flush=True)

    save_json("batched_copy.json", results)
    names = [upstream, *variants, "floor"]
    print(f"\n### Multi-step replay call, {torch.cuda.get_device_name()}, median host us idle / busy\n")
    print(markdown_table(
        ["steps", "bs", *names, "cuda speedup idle"],
        [[r["steps"], r["bs"], *[f"{r[f'{n}_idle_us']:.0f} / {r[f'{n}_busy_us']:.0f}" for n in names],
          f"{r[f'{upstream}_idle_us'] / r['cuda_idle_us']:.1f}x"] for r in results["multi"]]))
    print("\n### One backend's from-precomputed copies (decode), median host us\n")
    print(markdown_table(
        ["bs", "0.5.8 .copy_() calls", "batched copy (1 launch)", "_foreach_copy_", "floor", "speedup"],
        [[r["bs"], f"{r['plain_copies_us']:.1f}", f"{r['batched_us']:.1f}", f"{r['foreach_us']:.1f}",
          f"{r['floor_us']:.1f}", f"{r['plain_copies_us'] / r['batched_us']:.2f}x"]
         for r in results["single_copy"]]))


if __name__ == "__main__":
    main()
