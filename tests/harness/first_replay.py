"""Time the first replays after capture, per path (GPU tier; tests/test_first_replay.py).

    python tests/harness/first_replay.py --tree PATCHED_SITE --out FILE.json [--paths cuda,...]

In this fresh process (the caller points TRITON_CACHE_DIR at an empty directory), for each path
(cuda, triton, the multi-step batched copy; `sglang`: every flag off, SGLang's own code, which
also runs on a pristine tree) and mode: build SGLang's backend, capture batch sizes 1, 4 and 32
the way the runners do (int32 buffers), then replay each bs 6 times and record the host time of
every call (synchronized). Nothing a replay launches may compile or load then: the first replay
must cost what the later ones do. Prints a table of first and median later replay per row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
PATHS = {
    "cuda": {"SGLANG_NSA_USE_CUDA_METADATA": "1", "SGLANG_NSA_USE_TRITON_METADATA": "1"},
    "triton": {"SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "1"},
    # SGLang's own fused copy (0.5.9 on) off: it serves first when on (PREFER_UPSTREAM_FUSED_COPY)
    "copy": {"SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "0",
             "SGLANG_NSA_USE_BATCHED_COPY": "1", "SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA": "1",
             "SGLANG_USE_FUSED_METADATA_COPY": "0"},
    "sglang": {"SGLANG_NSA_USE_CUDA_METADATA": "0", "SGLANG_NSA_USE_TRITON_METADATA": "0",
               "SGLANG_NSA_USE_BATCHED_COPY": "0"},
}
CAPTURE_BS = (1, 4, 32)
REPLAYS = 6


def batch_view(ns, mode: str, x, bs: int, spec, draft_extend_v2: bool) -> SimpleNamespace:
    """What a runner hands init_forward_metadata_out_graph (0.5.13 on): its view of the batch."""
    forward_mode = ns.forward_mode_of("decode" if mode == "multi" else mode, draft_extend_v2)
    return SimpleNamespace(
        batch_size=bs, forward_mode=forward_mode, req_pool_indices=x.req_pool_indices,
        seq_lens=x.seq_lens, seq_lens_cpu=x.seq_lens_cpu, seq_lens_sum=int(x.seq_lens_cpu.sum()),
        spec_info=spec, out_cache_loc=None, input_ids=None, positions=None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of this script only")
    ap.add_argument("--paths", default="cuda,triton,copy", help=f"comma-separated, of {list(PATHS)}")
    args = ap.parse_args()
    paths = args.paths.split(",")
    if not set(paths) <= set(PATHS):
        ap.error(f"--paths: unknown {sorted(set(paths) - set(PATHS))}")
    from runner import setup_paths

    dev = args.device
    setup_paths(args.tree, dev)
    import torch

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    sys.path.insert(0, str(HERE.parent.parent / "bench"))
    import nsa_inputs as ns  # the model-runner stub and replay values the benchmarks use
    try:
        from sglang.srt.layers.attention.nsa import replay_fastpath as rf
    except ImportError:  # a pristine tree: only SGLang's own path
        if paths != ["sglang"]:
            sys.exit(f"first_replay: {args.tree} is not patched; only --paths sglang runs there")
        rf = SimpleNamespace(served={}, _failed={}, reset_for_tests=lambda: None)
    import releases
    from sglang_runners import backend_classes

    NativeSparseAttnBackend, NativeSparseAttnMultiStepBackend = backend_classes()
    out_graph = releases.dsa_named(releases.imported_release())  # 0.5.13's entry points

    ns.prepare_sglang_globals(dev)
    releases.prepare_process(releases.imported_release(), dev)  # what only some releases read
    gen = torch.Generator().manual_seed(0)
    results = []
    for path in paths:
        flags = PATHS[path]
        os.environ.update(flags)
        modes = ("multi",) if path == "copy" else ("decode", "target_verify", "draft_extend", "multi")
        for mode in modes:
            tokens = 1 if mode in ("decode", "multi") else ns.NUM_DRAFT_TOKENS
            runner = ns.make_model_runner(dev, 64, 2048, 0)
            if mode == "multi":
                backend = NativeSparseAttnMultiStepBackend(runner, topk=1, speculative_num_steps=3)
            else:
                backend = NativeSparseAttnBackend(runner)
            backend.init_cuda_graph_state(max(CAPTURE_BS), max(CAPTURE_BS) * tokens)
            inputs = {}
            for bs in CAPTURE_BS:
                x = ns.make_replay_inputs(gen, "decode" if mode == "multi" else mode, bs,
                                          max(bs - 1, 1), 2048, 1, dev)
                x.req_pool_indices = x.req_pool_indices.to(torch.int32)  # the runners' buffers
                x.seq_lens = x.seq_lens.to(torch.int32)
                inputs[bs] = x
                spec = ns.spec_info_for(x)
                if out_graph:  # 0.5.13 on: the runners capture through out_graph
                    backend.init_forward_metadata_out_graph(
                        batch_view(ns, mode, x, bs, spec, out_graph), in_capture=True)
                elif mode == "multi":
                    backend.init_forward_metadata_capture_cuda_graph(SimpleNamespace(
                        batch_size=bs, req_pool_indices=x.req_pool_indices, seq_lens=x.seq_lens,
                        spec_info=spec))
                else:
                    backend.init_forward_metadata_capture_cuda_graph(
                        bs=bs, num_tokens=bs * tokens, req_pool_indices=x.req_pool_indices,
                        seq_lens=x.seq_lens, encoder_lens=None,
                        forward_mode=ns.forward_mode_of(mode), spec_info=spec)
            sync()
            rf.reset_for_tests()
            for bs in CAPTURE_BS:
                x = inputs[bs]
                times = []
                for _ in range(REPLAYS):
                    sync()
                    t0 = time.perf_counter()
                    if out_graph:
                        backend.init_forward_metadata_out_graph(
                            batch_view(ns, mode, x, bs, ns.spec_info_for(x), out_graph))
                    elif mode == "multi":
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
                    sync()
                    times.append((time.perf_counter() - t0) * 1e6)
                results.append({"path": path, "mode": mode, "bs": bs, "times_us": times,
                                "served": dict(rf.served), "failed": dict(rf._failed)})
                print(results[-1], flush=True)
        for k in flags:
            os.environ.pop(k)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\n{'path':8} {'mode':14} {'bs':>3} {'first us':>9} {'median later us':>16}")
    for r in results:
        later = sorted(r["times_us"][1:])
        print(f"{r['path']:8} {r['mode']:14} {r['bs']:3} {r['times_us'][0]:9.0f} "
              f"{later[len(later) // 2]:16.0f}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
