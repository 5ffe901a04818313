"""NSA replay metadata on any supported SGLang release: its own code vs nsa-fastpath's CUDA and
Triton paths, through that release's own CUDA-graph runners, side by side in one run.

    python bench/bench_release.py --release 0.5.12.post1 [--bs 1,8,32,128] [--iters 300]
    python bench/bench_release.py --release 0.5.12.post1 --device cpu   # smoke run (see below)

Three variants, each in a fresh process with empty cache directories (NSA_FASTPATH_BUILD_DIR,
TRITON_CACHE_DIR, TVM_FFI_CACHE_DIR), as at a first server start: `sglang` (the release's own
code: the pristine tree), `cuda` and `triton` (the tree patched by apply.sh, with the CUDA or
only the Triton metadata path on). In each, per mode (decode, target_verify, draft_extend, the
multi-step draft backend at MTP's 3 steps) the harness's driver (tests/harness/sglang_runners.py)
builds the release's runner around its NSA backend:

- first capture: the runner captures every bs of --bs (largest first, as its capture() does);
  the host time of the backend's `init_forward_metadata_capture_cuda_graph` calls, summed
  (building or loading our kernels included); then a second runner of the mode, captured in the
  same process (warm: what a capture costs once everything is loaded);
- replay: per captured bs, a raw batch one request short of it (the runner pads it) goes through
  the runner's replay once (its backend call timed: the first replay; for the patched tree the
  path meant must have served it), then the backend call the runner made (its arguments as the
  runner built them) is timed: the median host time of --iters calls after --warmup, each after
  a device sync;
- floors, measured in the same process: an empty Triton launch, an empty launch of our CUDA
  library (patched tree, CUDA), one torch op.

Writes bench_release_<release>.json and .md to --out (default $OUT, else the current
directory) and prints the table. On the CPU (--device cpu, TRITON_INTERPRET=1, no CUDA path)
it only checks that the bench runs: its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "tests" / "harness"), str(ROOT / "scripts")]
MODES = ("decode", "target_verify", "draft_extend", "draft")
VARIANTS = {  # name -> (tree, flags read at capture)
    "sglang": ("pristine", {}),
    "cuda": ("patched", {"SGLANG_NSA_USE_CUDA_METADATA": "1",
                         "SGLANG_NSA_USE_TRITON_METADATA": "1"}),
    "triton": ("patched", {"SGLANG_NSA_USE_CUDA_METADATA": "0",
                           "SGLANG_NSA_USE_TRITON_METADATA": "1"}),
}


# ------------------------------------------------------------------ one variant, this process
def measure(tree: Path, variant: str, device: str, capture_bs: list, page_size: int, topk: int,
            iters: int, warmup: int) -> dict:
    from runner import setup_paths

    setup_paths(tree, device)
    import torch
    import triton

    import nsa_scenarios as sc
    import sglang_runners as sr

    patched = (tree / "sglang/srt/layers/attention/nsa/replay_fastpath.py").exists()
    rf = None
    if patched:
        from sglang.srt.layers.attention.nsa import replay_fastpath as rf
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def median_us(fn) -> float:
        samples = []
        for n in range(warmup + iters):
            sync()
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            if n >= warmup:
                samples.append((t1 - t0) * 1e6)
        sync()
        return statistics.median(samples)

    @triton.jit
    def _empty(x):  # no constexpr: Triton resolves annotations in the module's globals
        pass

    dummy = torch.zeros(1, device=device)
    floors = {"triton_empty_launch_us": median_us(lambda: _empty[(1,)](dummy)),
              "torch_op_us": median_us(lambda: dummy.add_(0))}

    def captured(mode):
        """A runner of `mode`, captured; the summed host time of the backend's capture calls."""
        driver = sr.make_runner(mode, page_size, topk, capture_bs, device)
        spent = [0.0]
        original = driver.target.init_forward_metadata_capture_cuda_graph

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0

        driver.target.init_forward_metadata_capture_cuda_graph = timed
        driver.capture()
        return driver, spent[0]

    gen = torch.Generator().manual_seed(0)
    rows, capture = [], {}
    for mode in MODES:
        driver, first_s = captured(mode)  # the first capture of this mode in the process
        replay_call = driver.target.init_forward_metadata_replay_cuda_graph  # the harness's spy
        first_us = []

        def timed_replay(*args, **kwargs):  # the backend call of the runner's first replay
            sync()
            t0 = time.perf_counter()
            out = replay_call(*args, **kwargs)
            sync()
            first_us.append((time.perf_counter() - t0) * 1e6)
            return out

        for i, bs in enumerate(capture_bs):
            raw_bs = bs - 1 if i and bs - 1 > capture_bs[i - 1] else bs  # padded where it can be
            batch = sc.make_batch(driver, gen, raw_bs, topk)
            if rf is not None:
                rf.reset_for_tests()
            driver.target.init_forward_metadata_replay_cuda_graph = timed_replay
            assert driver.replay(batch) == bs
            driver.target.init_forward_metadata_replay_cuda_graph = replay_call
            served = dict(rf.served) if rf is not None else {}
            if rf is not None:
                want = f"metadata.{variant}"
                assert served == {want: 1} and not rf.path_report()["disabled"], \
                    f"{variant} {mode} bs={bs}: served {rf.path_report()}"
            rows.append({"mode": mode, "bs": bs, "raw_bs": raw_bs, "served": served,
                         "first_replay_us": first_us[-1],
                         "replay_us": median_us(driver.last_call.invoke)})
            print(f"{variant} {mode} bs={bs}: first {first_us[-1]:.1f} us, then "
                  f"{rows[-1]['replay_us']:.1f} us", flush=True)
        _, warm_s = captured(mode)  # a second runner: the caches and kernels warm
        capture[mode] = {"first_s": first_s, "warm_s": warm_s}
    if patched and device == "cuda" and variant == "cuda":  # our library, loaded by the captures
        from sglang.srt.layers.attention.nsa import cuda_metadata_wrapper as cw

        floors["cuda_ext_empty_launch_us"] = median_us(lambda: cw.empty_launch(dummy))
    return {"variant": variant, "floors": floors, "capture": capture, "rows": rows}


# ------------------------------------------------------------------ the run
def build_trees(release: str, workdir: Path) -> dict:
    """Pristine (the pinned wheel, pip-installed) and patched (a copy, apply.sh) trees."""
    import regen

    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release], check=True,
                   stdout=subprocess.DEVNULL)
    pristine, patched = workdir / "pristine", workdir / "patched"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target", str(pristine),
                    str(regen.default_wheel(release))], check=True)
    shutil.copytree(pristine, patched, symlinks=True)
    subprocess.run(["bash", str(ROOT / "scripts" / "apply.sh"), "apply", "--target",
                    str(patched)], check=True, env=dict(os.environ, PYTHON=sys.executable),
                   stdout=subprocess.DEVNULL)
    return {"pristine": pristine, "patched": patched}


def run_variant(name: str, tree: Path, flags: dict, args, workdir: Path) -> dict:
    caches = workdir / f"caches-{name}"  # empty: a first server start
    out = workdir / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_NSA_")}
    env.update(flags, NSA_FASTPATH_BUILD_DIR=str(caches / "nsa"),
               TRITON_CACHE_DIR=str(caches / "triton"), TVM_FFI_CACHE_DIR=str(caches / "tvm-ffi"))
    if args.device == "cuda":
        env.setdefault("SGLANG_ENABLE_JIT_DEEPGEMM", "0")
    subprocess.run([sys.executable, __file__, "--one", str(tree), "--variant", name,
                    "--device", args.device, "--bs", args.bs, "--page-size", str(args.page_size),
                    "--topk", str(args.topk), "--iters", str(args.iters),
                    "--warmup", str(args.warmup), "--json", str(out)], env=env, check=True)
    return json.loads(out.read_text())


def report(release: str, device: str, device_name: str, args, results: dict) -> str:
    variants = [v for v in VARIANTS if v in results]
    lines = [f"## SGLang {release}: NSA replay metadata, its own code vs nsa-fastpath "
             f"({device_name})", ""]
    if device != "cuda":
        lines += ["**CPU smoke run (Triton interpreter, no CUDA path): these numbers mean "
                  "nothing; run it on a GPU.**", ""]
    lines += [f"page size {args.page_size}, topk {args.topk}, captured bs {args.bs}; replay: "
              f"median host time of {args.iters} calls after {args.warmup}, each after a "
              "device sync, the runner's own arguments (a raw batch padded where it can be)", ""]
    floors = {f"{v}: {k}": round(val, 2) for v in variants
              for k, val in results[v]["floors"].items()}
    lines += ["Floors (same processes): " + ", ".join(f"{k} {val} us"
                                                      for k, val in floors.items()), ""]
    header = ["mode", "bs"] + [f"{v} (us)" for v in variants] + [
        f"sglang / {v}" for v in variants if v != "sglang"] + [
        f"{v} first replay (us)" for v in variants]
    rows = []
    by_key = {v: {(r["mode"], r["bs"]): r for r in results[v]["rows"]} for v in variants}
    for r in results[variants[0]]["rows"]:
        key = (r["mode"], r["bs"])
        us = {v: by_key[v][key]["replay_us"] for v in variants}
        rows.append([r["mode"], r["bs"]] + [f"{us[v]:.1f}" for v in variants] + [
            f"{us['sglang'] / us[v]:.1f}x" for v in variants if v != "sglang" and "sglang" in us
        ] + [f"{by_key[v][key]['first_replay_us']:.0f}" for v in variants])
    lines += _table(header, rows) + ["", "A first replay (the backend call of the runner's "
                                     "first replay of that bs, synchronized) that costs far more "
                                     "than the median compiled or loaded something.", ""]
    header = ["mode"] + [f"{v} first / warm (s)" for v in variants]
    rows = [[m] + [f"{results[v]['capture'][m]['first_s']:.2f} / "
                   f"{results[v]['capture'][m]['warm_s']:.2f}" for v in variants]
            for m in MODES]
    lines += ["First capture (empty caches) and a second one (warm), summed host time of the "
              "backend's capture calls:", ""] + _table(header, rows)
    return "\n".join(lines) + "\n"


def _table(header, rows) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", default=os.environ.get("NSA_FASTPATH_BENCH_RELEASE", "0.5.8"))
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--bs", default=None, help="captured batch sizes (GPU 1,8,32,128; CPU 1,2)")
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--topk", type=int, default=None, help="GPU 2048 (DeepSeek-V3.2), CPU 128")
    ap.add_argument("--iters", type=int, default=None, help="GPU 300, CPU 3")
    ap.add_argument("--warmup", type=int, default=None, help="GPU 30, CPU 1")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a variant, in this process
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args.device == "cuda"
    args.bs = args.bs or ("1,8,32,128" if gpu else "1,2")
    args.topk = args.topk or (2048 if gpu else 128)
    args.iters = args.iters or (300 if gpu else 3)
    args.warmup = args.warmup or (30 if gpu else 1)
    capture_bs = sorted(int(b) for b in args.bs.split(","))
    if args.one:
        result = measure(args.one, args.variant, args.device, capture_bs, args.page_size,
                         args.topk, args.iters, args.warmup)
        args.json.write_text(json.dumps(result, indent=1))
        return 0
    if not gpu:
        os.environ["TRITON_INTERPRET"] = "1"
    with tempfile.TemporaryDirectory(prefix="nsa-bench-release-") as tmp:
        workdir = Path(tmp)
        trees = build_trees(args.release, workdir)
        results = {}
        for name, (tree, flags) in VARIANTS.items():
            if name == "cuda" and not gpu:
                continue  # the CUDA path needs a GPU
            results[name] = run_variant(name, trees[tree], flags, args, workdir)
    import torch

    device_name = torch.cuda.get_device_name() if gpu else "CPU"
    text = report(args.release, args.device, device_name, args, results)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_release_{args.release}"
    Path(f"{stem}.json").write_text(json.dumps(
        {"release": args.release, "device": device_name, "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
         "results": results}, indent=1))
    Path(f"{stem}.md").write_text(text)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
