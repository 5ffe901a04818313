"""NSA CUDA-graph replay metadata, SGLang 0.5.8 vs nsa-fastpath, side by side on a GPU.

    python bench/bench_replay_metadata.py [--iters 200] [--bs 1,4,16,64,128,256]

Every call is made the way SGLang 0.5.8's CUDA-graph runners make it: int32 `req_pool_indices`
/ `seq_lens` buffers of the runner's size (CudaGraphRunner passes `[:bs]` slices of
GraphInputBuffers, the draft-extend runner its whole max_bs buffers), raw batches padded to the
captured bs with the runner's fill values, SGLang's EagleVerifyInput / EagleDraftInput as
spec_info. Per mode (decode, target_verify, draft_extend, and the multi-step draft backend with
3 steps) and captured bs, the median host time of one replay call, in one process:

- `0.5.8`: SGLang's own method (pristine nsa_backend.py), `cuda` / `triton` / `copy` (the
  multi-step batched copy, metadata kernels off): the patched method, each captured with its
  flags (flags are read at capture);
- idle (the GPU has nothing queued) and busy (~3.4 ms of GPU work queued just before the call:
  a call that waits for the GPU shows it there);
- whole call, and "share": the same call with DeepGEMM's two calls (`get_num_sms`,
  `get_paged_mqa_logits_metadata`) replaced by no-ops, i.e. what the replay costs besides them;
- the floors, measured in the same run: an empty launch of our CUDA kernel's library (one call
  through apache-tvm-ffi with one tensor, the mechanism its fill goes through), an empty Triton
  launch (Triton's dispatch, and the compiled kernel launched directly), one torch op; and the
  DeepGEMM stand-in's own call (one launch, no sync, like the real one).

Printed as markdown tables; numbers saved to $OUT/replay_metadata.json.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_trees, default_workdir, host_time_us, import_trees, markdown_table, save_json  # noqa: E402

BUSY_CYCLES = 6_700_000  # ~3.4 ms at the H200's 1.98 GHz boost clock
N_DRAFT = 4  # speculative_num_draft_tokens: MTP, 3 steps, topk 1
VARIANTS = {  # name -> flags for the patched tree, read at capture
    "cuda": {"SGLANG_NSA_USE_CUDA_METADATA": "1", "SGLANG_NSA_USE_TRITON_METADATA": "1"},
    "triton": {"SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "1"},
    "copy": {"SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "0",
             "SGLANG_NSA_USE_BATCHED_COPY": "1"},
}


@triton.jit
def _empty(x):
    pass


class NoDeepGemm:
    """DeepGEMM's calls as no-ops (a fixed schedule tensor), to time a replay without them."""

    def __init__(self, deep_gemm):
        self.mod, self.saved = deep_gemm, (deep_gemm.get_paged_mqa_logits_metadata,
                                           deep_gemm.get_num_sms)
        num_sms = deep_gemm.get_num_sms()
        self.out = torch.zeros((num_sms + 1, 2), dtype=torch.int32, device="cuda")

    def __enter__(self):
        self.mod.get_paged_mqa_logits_metadata = lambda seqlens, block, sms: self.out
        self.mod.get_num_sms = lambda: self.out.shape[0] - 1

    def __exit__(self, *exc):
        self.mod.get_paged_mqa_logits_metadata, self.mod.get_num_sms = self.saved


def runner_inputs(ns, gen, mode: str, bs: int, max_bs: int, topk: int):
    """The arguments a CUDA-graph runner passes for one replay at captured bs (raw_bs = bs - 1
    where bs > 1, so the padding is exercised), from SGLang's own buffer class and spec-info types.
    """
    from sglang.srt.model_executor.input_buffers import GraphInputBuffers
    from sglang.srt.speculative.eagle_info import EagleDraftInput

    raw = ns.make_replay_inputs(gen, mode, bs, max(bs - 1, 1), topk, 1, "cuda")
    tokens = 1 if mode in ("decode", "multi") else N_DRAFT
    buffers = GraphInputBuffers.create(
        device="cuda", max_bs=max_bs, max_num_token=max_bs * tokens, hidden_size=16,
        vocab_size=16, dtype=torch.bfloat16, dp_size=1, pp_size=1, is_encoder_decoder=False,
        require_mlp_tp_gather=False, seq_len_fill_value=1, encoder_len_fill_value=0,
        num_tokens_per_bs=tokens, cache_loc_dtype=torch.int64, enable_mamba_track=False)
    buffers.req_pool_indices[:bs].copy_(raw.req_pool_indices)  # int32 buffers, as the runners
    buffers.seq_lens[:bs].copy_(raw.seq_lens)
    buffers.seq_lens_cpu[:bs].copy_(raw.seq_lens_cpu)
    if mode == "draft_extend":  # EAGLEDraftExtendCudaGraphRunner: whole buffers, int32 accept
        accept = torch.full((max_bs,), N_DRAFT, dtype=torch.int32, device="cuda")
        accept[:bs].copy_(raw.accept_length)
        spec = EagleDraftInput(accept_length=accept[:bs])
        spec.extend_seq_lens_cpu = list(raw.extend_seq_lens_cpu)
        return buffers.req_pool_indices, buffers.seq_lens, buffers.seq_lens_cpu, spec
    # (target_verify: CudaGraphRunner passes the batch's EagleVerifyInput, which neither 0.5.8's
    # replay nor ours reads)
    return buffers.req_pool_indices[:bs], buffers.seq_lens[:bs], buffers.seq_lens_cpu[:bs], None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--bs", default="1,16,64,256")
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--topk", type=int, default=2048)
    args = ap.parse_args()
    bss = [int(x) for x in args.bs.split(",")]
    max_bs = max(bss)

    pristine_dir, patched_dir = build_trees(default_workdir())
    pristine_mod, patched_mod = import_trees(pristine_dir, patched_dir, "cuda")
    import deep_gemm
    import nsa_inputs as ns
    from sglang.srt.layers.attention.nsa import cuda_metadata_wrapper as cw
    from sglang.srt.layers.attention.nsa import replay_fastpath as rf

    ns.prepare_sglang_globals("cuda")
    assert cw.is_cuda_kernel_available(), cw.get_kernel_info()
    sync = torch.cuda.synchronize
    busy = lambda: torch.cuda._sleep(BUSY_CYCLES)  # noqa: E731
    time = lambda fn, **kw: host_time_us(fn, iters=args.iters, warmup=args.warmup, **kw)  # noqa: E731
    results = {"floors": {}, "rows": [], "args": vars(args)}

    # ---------------------------------------------------------------- floors
    f = results["floors"]
    dummy = torch.empty(1, device="cuda")
    f["cuda_ext_empty_launch_us"] = time(lambda: cw.empty_launch(dummy), before=sync)
    f["triton_empty_launch_us"] = time(lambda: _empty[(1,)](dummy), before=sync)
    direct = _empty[(1,)](dummy)[(1, 1, 1)]
    f["triton_empty_direct_launch_us"] = time(lambda: direct(dummy), before=sync)
    f["torch_op_us"] = time(lambda: dummy.add_(0), before=sync)
    busy_first = lambda: (sync(), busy())  # noqa: E731
    f["cuda_ext_empty_launch_busy_us"] = time(lambda: cw.empty_launch(dummy), before=busy_first,
                                              after=sync)
    f["triton_empty_launch_busy_us"] = time(lambda: _empty[(1,)](dummy), before=busy_first,
                                            after=sync)
    seqlens = torch.ones(256, dtype=torch.int32, device="cuda")
    f["deepgemm_standin_call_us"] = time(
        lambda: deep_gemm.get_paged_mqa_logits_metadata(seqlens, 64, deep_gemm.get_num_sms()),
        before=sync)
    print(f, flush=True)

    def make(mod, mode):
        runner = ns.make_model_runner("cuda", args.page_size, args.topk, 0)
        if mode == "multi":
            b = mod.NativeSparseAttnMultiStepBackend(runner, topk=1, speculative_num_steps=3)
            b.init_cuda_graph_state(max_bs, max_bs)
        else:
            b = mod.NativeSparseAttnBackend(runner)
            b.init_cuda_graph_state(max_bs, max_bs * (1 if mode == "decode" else N_DRAFT))
        return b

    def capture(b, mode, bs, rpi, seq, spec):
        rpi, seq = rpi[:bs], seq[:bs]  # every runner captures with [:bs] slices of its buffers
        if mode == "multi":
            b.init_forward_metadata_capture_cuda_graph(SimpleBatch(bs, rpi, seq, None, spec))
        else:
            b.init_forward_metadata_capture_cuda_graph(
                bs=bs, num_tokens=bs * (1 if mode == "decode" else N_DRAFT), req_pool_indices=rpi,
                seq_lens=seq, encoder_lens=None, forward_mode=ns.forward_mode_of(mode),
                spec_info=spec)

    def replay_call(b, mode, bs, rpi, seq, seq_cpu, spec):
        if mode == "multi":
            batch = SimpleBatch(bs, rpi, seq, seq_cpu, spec)
            return lambda: b.init_forward_metadata_replay_cuda_graph(batch, bs)
        kwargs = dict(bs=bs, req_pool_indices=rpi, seq_lens=seq, seq_lens_sum=int(seq_cpu.sum()),
                      encoder_lens=None, forward_mode=ns.forward_mode_of(mode), spec_info=spec,
                      seq_lens_cpu=seq_cpu)  # built once: the runner's own work is not timed
        return lambda: b.init_forward_metadata_replay_cuda_graph(**kwargs)

    gen = torch.Generator().manual_seed(0)
    for mode in ("decode", "target_verify", "draft_extend", "multi"):
        for bs in bss:
            rpi, seq, seq_cpu, spec = runner_inputs(ns, gen, mode, bs, max_bs, args.topk)
            row = {"mode": mode, "bs": bs}
            variants = [("0.5.8", pristine_mod, {})] + [
                (name, patched_mod, flags) for name, flags in VARIANTS.items()
                if name != "copy" or mode == "multi"]
            for share in (False, True):
                for name, mod, flags in variants:
                    os.environ.update(flags)
                    with (NoDeepGemm(deep_gemm) if share else _null()):
                        b = make(mod, mode)
                        capture(b, mode, bs, rpi, seq, spec)  # flags are read here
                        rf.reset_for_tests()
                        fn = replay_call(b, mode, bs, rpi, seq, seq_cpu, spec)
                        key = f"{name}_{'share' if share else 'whole'}"
                        row[f"{key}_idle_us"] = time(fn, before=sync)
                        row[f"{key}_busy_us"] = host_time_us(
                            fn, iters=args.iters // 2, warmup=5, before=lambda: (sync(), busy()),
                            after=sync)
                    for k in flags:
                        os.environ.pop(k)
                    if name != "0.5.8":  # the path meant served every call, none failed
                        want = ({"copy.triton", "copy.foreach"} if name == "copy"
                                else {f"metadata.{name}"})
                        assert want & set(rf.served) and not rf._failed, (name, rf.path_report())
                    if name in ("cuda", "triton") and not share:  # where the time goes
                        row.update(breakdown(name, b._nsa_fastpath_plans[bs], mode, bs, rpi, seq,
                                             spec, time, sync))
            first = b.attn_backends[0] if mode == "multi" else b
            row["set_nsa_prefill_impl_us"] = time(lambda: first.set_nsa_prefill_impl(None), before=sync)
            results["rows"].append(row)
            print(row, flush=True)

    save_json("replay_metadata.json", results)
    report(results, torch.cuda.get_device_name())


def breakdown(name, plan, mode, bs, rpi, seq, spec, time, sync) -> dict:
    """The fused fill alone, and the schedule step without DeepGEMM's call (SGLang's refresh
    around a no-op DeepGEMM: the copy, and for several step backends ours into the others)."""
    import deep_gemm

    _, fill, copy_schedule = plan.launchers[0]
    acc = spec.accept_length if mode == "draft_extend" else None
    n = plan.n_tokens or sum(spec.extend_seq_lens_cpu[:bs])
    out = {f"{name}_fill_only_us": time(lambda: fill(rpi, seq, acc), before=sync)}
    with NoDeepGemm(deep_gemm):
        out[f"{name}_schedule_copy_only_us"] = time(
            lambda: plan._refresh_schedule(n, copy_schedule), before=sync)
    return out


class SimpleBatch:
    """The ForwardBatch fields NativeSparseAttnMultiStepBackend reads, holding the draft
    runner's buffers (EAGLEDraftCudaGraphRunner.replay sets exactly these when it pads)."""

    def __init__(self, bs, rpi, seq, seq_cpu, spec):
        self.batch_size, self.req_pool_indices, self.seq_lens = bs, rpi, seq
        self.seq_lens_cpu = seq_cpu
        self.seq_lens_sum = int(seq_cpu.sum()) if seq_cpu is not None else None
        self.spec_info = spec


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def report(results: dict, device: str) -> None:
    f = results["floors"]
    print(f"\n### Floors ({device}): empty launch through tvm-ffi (the CUDA kernel's library) "
          f"{f['cuda_ext_empty_launch_us']:.1f} us, "
          f"empty Triton launch {f['triton_empty_launch_us']:.1f} us (direct "
          f"{f['triton_empty_direct_launch_us']:.1f} us); busy GPU: "
          f"{f['cuda_ext_empty_launch_busy_us']:.1f} / {f['triton_empty_launch_busy_us']:.1f} us; "
          f"one torch op {f['torch_op_us']:.1f} us, "
          f"DeepGEMM stand-in call {f['deepgemm_standin_call_us']:.1f} us\n")
    header = ["mode", "bs", "0.5.8 whole idle / busy", "cuda whole idle / busy",
              "triton whole idle / busy", "copy whole idle / busy",
              "0.5.8 share", "cuda share idle / busy (x ext launch)",
              "triton share idle / busy (x Triton launch)", "cuda fill / sched copy",
              "triton fill / sched copy", "speed-up whole idle / busy (cuda)"]
    rows = []
    for r in results["rows"]:
        def pair(k):
            return (f"{r[k + '_idle_us']:.0f} / {r[k + '_busy_us']:.0f}"
                    if k + "_idle_us" in r else "-")
        cext, tri = f["cuda_ext_empty_launch_us"], f["triton_empty_launch_us"]
        cext_busy, tri_busy = f["cuda_ext_empty_launch_busy_us"], f["triton_empty_launch_busy_us"]
        rows.append([
            r["mode"], r["bs"], pair("0.5.8_whole"), pair("cuda_whole"), pair("triton_whole"),
            pair("copy_whole"), pair("0.5.8_share"),
            f"{pair('cuda_share')} ({r['cuda_share_idle_us'] / cext:.1f}x / "
            f"{r['cuda_share_busy_us'] / cext_busy:.1f}x)",
            f"{pair('triton_share')} ({r['triton_share_idle_us'] / tri:.1f}x / "
            f"{r['triton_share_busy_us'] / tri_busy:.1f}x)",
            f"{r['cuda_fill_only_us']:.1f} / {r['cuda_schedule_copy_only_us']:.1f}",
            f"{r['triton_fill_only_us']:.1f} / {r['triton_schedule_copy_only_us']:.1f}",
            f"{r['0.5.8_whole_idle_us'] / r['cuda_whole_idle_us']:.1f}x / "
            f"{r['0.5.8_whole_busy_us'] / r['cuda_whole_busy_us']:.1f}x",
        ])
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
