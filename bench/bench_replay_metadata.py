"""Whole `init_forward_metadata_replay_cuda_graph` call, SGLang 0.5.8 vs nsa-fastpath, on a GPU.

    python bench/bench_replay_metadata.py [--iters 200] [--bs 1,4,16,32,64,128,256]

Per mode and bs: the median host time of one replay call for SGLang 0.5.8's own method and for
the patched method on its CUDA C++ and Triton paths, in one process, once with the GPU idle
and once with ~3.4 ms of GPU work queued just before each call (a call that waits for the GPU
shows it there). Also: each launcher's empty launch (the floor), the fill kernel's own host
cost, and the CUDA kernel's linear-vs-binary request search (GPU time) that sets its threshold.
The multi-step backend is measured by bench_batched_copy.py.
Everything is printed as markdown tables and saved to $OUT/replay_metadata.json.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_trees, default_workdir, host_time_us, import_trees, markdown_table, save_json  # noqa: E402

FLAGS = ("SGLANG_NSA_USE_CUDA_METADATA", "SGLANG_NSA_USE_TRITON_METADATA")
VARIANTS = {  # name -> flag values for the patched method
    "cuda": {"SGLANG_NSA_USE_CUDA_METADATA": "1", "SGLANG_NSA_USE_TRITON_METADATA": "1"},
    "triton": {"SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "1"},
}
BUSY_CYCLES = 6_700_000  # ~3.4 ms at the H200's 1.98 GHz boost clock


@triton.jit
def _empty(x):
    pass


def set_flags(values: dict) -> None:
    for k, v in values.items():
        os.environ[k] = v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--bs", default="1,4,16,32,64,128,256")
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--topk", type=int, default=2048)
    args = ap.parse_args()
    bss = [int(x) for x in args.bs.split(",")]

    pristine_dir, patched_dir = build_trees(default_workdir())
    pristine_mod, patched_mod = import_trees(pristine_dir, patched_dir, "cuda")
    import nsa_scenarios as ns
    from sglang.srt.layers.attention.nsa import cuda_metadata_wrapper as cw
    from sglang.srt.layers.attention.nsa import replay_fastpath as rf
    from sglang.srt.layers.attention.nsa import triton_metadata_kernel as tk

    ns.prepare_sglang_globals("cuda")
    assert cw.is_cuda_kernel_available(), cw.get_kernel_info()
    gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize
    busy = lambda: torch.cuda._sleep(BUSY_CYCLES)  # noqa: E731
    results = {"single": [], "floors": {}, "search": []}

    # ---------------------------------------------------------------- floors
    dummy = torch.empty(1, device="cuda")
    results["floors"]["triton_empty_launch_us"] = host_time_us(
        lambda: _empty[(1,)](dummy), iters=args.iters, warmup=args.warmup, before=sync)
    results["floors"]["cuda_empty_launch_us"] = host_time_us(
        cw.empty_launch, iters=args.iters, warmup=args.warmup, before=sync)
    results["floors"]["torch_empty_op_us"] = host_time_us(
        lambda: dummy.add_(0), iters=args.iters, warmup=args.warmup, before=sync)

    # ---------------------------------------------------------------- single backend
    for mode in ("decode", "target_verify", "draft_extend"):
        tokens = 1 if mode == "decode" else ns.NUM_DRAFT_TOKENS
        backends = {}
        for name, mod in (("sglang-0.5.8", pristine_mod), ("patched", patched_mod)):
            b = mod.NativeSparseAttnBackend(ns.make_model_runner("cuda", args.page_size, args.topk, 0))
            b.init_cuda_graph_state(max(bss), max(bss) * tokens)
            backends[name] = b
        fill_value = backends["patched"].get_cuda_graph_seq_len_fill_value()
        for bs in bss:
            inputs = ns.make_replay_inputs(gen, mode, bs, bs, args.topk, fill_value, "cuda")
            for b in backends.values():
                b.init_forward_metadata_capture_cuda_graph(
                    bs=bs, num_tokens=bs * tokens, req_pool_indices=inputs.req_pool_indices,
                    seq_lens=inputs.seq_lens, encoder_lens=None,
                    forward_mode=ns.forward_mode_of(mode), spec_info=ns.spec_info_for(inputs))

            def call(b, method):
                return lambda: method(
                    b, bs=bs, req_pool_indices=inputs.req_pool_indices, seq_lens=inputs.seq_lens,
                    seq_lens_sum=int(inputs.seq_lens_cpu.sum()), encoder_lens=None,
                    forward_mode=ns.forward_mode_of(mode), spec_info=ns.spec_info_for(inputs),
                    seq_lens_cpu=inputs.seq_lens_cpu)

            row = {"mode": mode, "bs": bs}
            runs = [("sglang-0.5.8", {}, call(backends["sglang-0.5.8"],
                     pristine_mod.NativeSparseAttnBackend.init_forward_metadata_replay_cuda_graph))]
            for variant, flags in VARIANTS.items():
                runs.append((variant, flags, call(backends["patched"],
                             patched_mod.NativeSparseAttnBackend.init_forward_metadata_replay_cuda_graph)))
            for name, flags, fn in runs:
                set_flags(flags)
                rf.reset_for_tests()
                row[f"{name}_idle_us"] = host_time_us(fn, iters=args.iters, warmup=args.warmup,
                                                      before=sync)
                row[f"{name}_busy_us"] = host_time_us(fn, iters=args.iters // 2, warmup=5,
                                                      before=lambda: (sync(), busy()), after=sync)
                if name != "sglang-0.5.8":
                    assert rf._announced == {name}, (name, rf._announced, rf._failed)
            # the fill kernel alone, per launcher (host time), against its empty launch
            m = backends["patched"].decode_cuda_graph_metadata[bs]
            kw = dict(req_to_token=backends["patched"].req_to_token,
                      req_pool_indices=inputs.req_pool_indices, seq_lens=inputs.seq_lens,
                      accept_length=inputs.accept_length, n_draft=ns.NUM_DRAFT_TOKENS,
                      topk=args.topk, page_size=args.page_size, bs=bs,
                      page_table_shape=tuple(m.page_table_1.shape),
                      page_table_stride=m.page_table_1.stride(0),
                      real_page_table_stride=m.real_page_table.stride(0),
                      dest_table=backends["patched"]._nsa_fastpath_dest[bs])
            kmode = {"decode": 0, "target_verify": 1, "draft_extend": 2}[mode]
            row["cuda_fill_only_us"] = host_time_us(lambda: cw.fill_replay_metadata_cuda(kmode, **kw),
                                                    iters=args.iters, warmup=args.warmup, before=sync)
            row["triton_fill_only_us"] = host_time_us(lambda: tk.fill_replay_metadata(kmode, **kw),
                                                      iters=args.iters, warmup=args.warmup, before=sync)
            # the DeepGEMM schedule refresh both paths make (the stand-in's call plus the copy)
            fm = ns.forward_mode_of(mode)
            n_tok = {"decode": bs, "target_verify": bs * ns.NUM_DRAFT_TOKENS,
                     "draft_extend": sum(inputs.extend_seq_lens_cpu[:bs])}[mode]
            row["deepgemm_refresh_us"] = host_time_us(
                lambda: backends["patched"]._refresh_paged_mqa_schedule(
                    m, fm, m.nsa_seqlens_expanded[:n_tok]),
                iters=args.iters, warmup=args.warmup, before=sync)
            results["single"].append(row)
            print(row, flush=True)

    # ---------------------------------------------------------------- CUDA search threshold
    for bs in (8, 16, 32, 64, 128, 256):
        b = patched_mod.NativeSparseAttnBackend(ns.make_model_runner("cuda", 1, args.topk, 0))
        b.init_cuda_graph_state(bs, bs * ns.NUM_DRAFT_TOKENS)
        inputs = ns.make_replay_inputs(gen, "draft_extend", bs, bs, args.topk, 1, "cuda")
        b.init_forward_metadata_capture_cuda_graph(
            bs=bs, num_tokens=bs * ns.NUM_DRAFT_TOKENS, req_pool_indices=inputs.req_pool_indices,
            seq_lens=inputs.seq_lens, encoder_lens=None,
            forward_mode=ns.forward_mode_of("draft_extend"), spec_info=ns.spec_info_for(inputs))
        m = b.decode_cuda_graph_metadata[bs]
        kw = dict(req_to_token=b.req_to_token, req_pool_indices=inputs.req_pool_indices,
                  seq_lens=inputs.seq_lens, accept_length=inputs.accept_length,
                  n_draft=ns.NUM_DRAFT_TOKENS, topk=args.topk, page_size=1, bs=bs,
                  page_table_shape=tuple(m.page_table_1.shape),
                  page_table_stride=m.page_table_1.stride(0),
                  real_page_table_stride=m.real_page_table.stride(0),
                  dest_table=b._nsa_fastpath_dest[bs])
        row = {"bs": bs}
        for search in (False, True):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(10):
                cw.fill_replay_metadata_cuda(2, binary_search=search, **kw)
            times = []
            for _ in range(50):
                start.record()
                for _ in range(20):
                    cw.fill_replay_metadata_cuda(2, binary_search=search, **kw)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1000 / 20)
            times.sort()
            row["binary_gpu_us" if search else "linear_gpu_us"] = times[len(times) // 2]
        results["search"].append(row)
        print(row, flush=True)

    save_json("replay_metadata.json", results)
    report(results, torch.cuda.get_device_name())


def report(results: dict, device: str) -> None:
    f = results["floors"]
    print(f"\n### Floors ({device}): empty Triton launch {f['triton_empty_launch_us']:.1f} us, "
          f"empty CUDA-extension launch {f['cuda_empty_launch_us']:.1f} us, "
          f"one torch op {f['torch_empty_op_us']:.1f} us\n")
    names = ["sglang-0.5.8", "cuda", "triton"]
    rows = []
    for r in results["single"]:
        base_i, base_b = r["sglang-0.5.8_idle_us"], r["sglang-0.5.8_busy_us"]
        rows.append([r["mode"], r["bs"]]
                    + [f"{r[f'{n}_idle_us']:.0f} / {r[f'{n}_busy_us']:.0f}" for n in names]
                    + [f"{base_i / r['cuda_idle_us']:.1f}x / {base_b / r['cuda_busy_us']:.1f}x",
                       f"{r['cuda_fill_only_us']:.1f} / {r['triton_fill_only_us']:.1f}",
                       f"{r['deepgemm_refresh_us']:.1f}"])
    print(markdown_table(["mode", "bs", "0.5.8 idle / busy us", "cuda idle / busy us",
                          "triton idle / busy us", "cuda speedup idle / busy",
                          "fill only cuda / triton us", "DeepGEMM refresh (stand-in) us"], rows))
    print(markdown_table(["bs", "linear search GPU us", "binary search GPU us"],
                         [[r["bs"], f"{r['linear_gpu_us']:.2f}", f"{r['binary_gpu_us']:.2f}"]
                          for r in results["search"]]))


if __name__ == "__main__":
    main()
