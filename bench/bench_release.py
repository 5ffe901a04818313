"""NSA/DSA replay metadata through SGLang's own CUDA-graph runners: a release's own code beside
nsa-fastpath's CUDA and Triton paths, and beside other releases' own code, in one run.

    python bench/bench_release.py --release 0.5.12.post1 [--bs 1,8,32,128] [--iters 300]
    python bench/bench_release.py --release 0.5.14,0.5.15,0.5.23   # several releases, one table
    python bench/bench_release.py --release 0.5.15 --own-only --device cpu   # smoke run

Variants, each in a fresh process with empty cache directories (NSA_FASTPATH_BUILD_DIR,
TRITON_CACHE_DIR, TVM_FFI_CACHE_DIR: SGLang's own JIT kernels too), as at a first server start: per
release `sglang` (its own code: the pristine tree) and, for a release nsa-fastpath has a set for
(unless --own-only), `cuda` and `triton` (the tree patched by apply.sh, with the CUDA or only the
Triton metadata path on). A release without a set (0.5.15 on) runs its own code only: there that
is SGLang's own fused replay metadata (the Triton `fused_dsa_{decode,target_verify,
draft_extend}_metadata`, harness/releases.py OWN_FUSED_METADATA). In each variant, per mode
(decode, target_verify, draft_extend, the multi-step draft backend at MTP's 3 steps, with its
precomputed replay on and, where the release can switch it off, off) the harness's driver
(tests/harness/sglang_runners.py) builds the release's runner around its NSA/DSA backend:

- first capture: the runner captures every bs of --bs (largest first, as its capture() does);
  the host time of the backend's capture calls, summed (building or loading kernels included);
  then a second runner of the mode, captured in the same process (warm);
- replay: per captured bs, a raw batch one request short of it (the runner pads it) goes through
  the runner's replay once (its backend call timed: the first replay; what served it is
  checked: for the patched tree the path meant, for a release with its own fused metadata on
  CUDA those kernels), then the backend call the runner made (its arguments as the runner built
  them) is timed: the median host time of --iters calls after --warmup, each after a device
  sync; for SGLang's own fused metadata also the fused kernel call alone, with the arguments
  the backend passed it;
- floors, measured in the same process: an empty Triton launch, an empty launch of our CUDA
  library (patched tree, CUDA), one torch op.

Writes bench_release_<releases>.json and .md to --out (default $OUT, else the current
directory) and prints the tables. On the CPU (--device cpu, TRITON_INTERPRET=1, no CUDA path,
and from 0.5.15 SGLang's non-CUDA fallback instead of its fused kernels) it only checks that the
bench runs: its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import inspect
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
VARIANTS = {  # name -> (tree, flags read at capture)
    "sglang": ("pristine", {}),
    "cuda": ("patched", {"SGLANG_NSA_USE_CUDA_METADATA": "1",
                         "SGLANG_NSA_USE_TRITON_METADATA": "1"}),
    "triton": ("patched", {"SGLANG_NSA_USE_CUDA_METADATA": "0",
                           "SGLANG_NSA_USE_TRITON_METADATA": "1"}),
}
PRECOMPUTE = ("SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA",  # to 0.5.12; an alias from 0.5.13
              "SGLANG_DSA_ENABLE_MTP_PRECOMPUTE_METADATA")


def modes(rel: str) -> list[tuple[str, str, dict]]:
    """(row label, driver mode, environment) of each timed mode of release `rel`."""
    import releases

    out = [(m, m, {}) for m in ("decode", "target_verify", "draft_extend")]
    if releases.mtp_precompute_switch(rel):
        out += [("draft", "draft", dict.fromkeys(PRECOMPUTE, "1")),
                ("draft, no precompute", "draft", dict.fromkeys(PRECOMPUTE, "0"))]
    else:
        out.append(("draft", "draft", {}))
    return out


# ------------------------------------------------------------------ one variant, this process
def spy_own_fused(driver, rel: str):
    """Record calls of the release's own fused replay-metadata kernels wherever it binds them
    (module globals, and 0.5.23's backend attributes). Returns (calls, undo) or None."""
    import importlib

    import releases

    module_name = releases.own_fused_metadata(rel)
    if module_name is None:
        return None
    module = importlib.import_module(module_name)
    by_id = {id(getattr(module, n)): n for n in releases.OWN_FUSED_NAMES}
    calls, undo = [], []

    def wrap(name, fn):
        def spy(*args, **kwargs):
            calls.append((name, fn, args, kwargs))
            return fn(*args, **kwargs)
        return spy

    holders = [m for m in list(sys.modules.values())
               if m is not None and m.__name__.startswith("sglang")] + list(driver.backends)
    for holder in holders:
        for attr, value in list(vars(holder).items()):
            if id(value) in by_id:
                setattr(holder, attr, wrap(by_id[id(value)], value))
                undo.append((holder, attr, value))

    def restore():
        for holder, attr, value in undo:
            setattr(holder, attr, value)
    return calls, restore


def measure(tree: Path, variant: str, device: str, capture_bs: list, page_size: int, topk: int,
            iters: int, warmup: int) -> dict:
    from runner import setup_paths

    setup_paths(tree, device)
    import releases
    import torch
    import triton

    import nsa_scenarios as sc
    import sglang_runners as sr

    rel = releases.tree_release(tree)
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

    # from 0.5.13 capture and replay go through one entry, init_forward_metadata_out_graph
    # (in_capture=True at capture); before, through two
    capture_name = ("init_forward_metadata_out_graph" if releases.dsa_named(rel)
                    else "init_forward_metadata_capture_cuda_graph")
    replay_name = sr.replay_entry(rel)

    def captured(mode):
        """A runner of `mode`, captured; the summed host time of the backend's capture calls."""
        driver = sr.make_runner(mode, page_size, topk, capture_bs, device)
        spent = [0.0]
        original = getattr(driver.target, capture_name)  # the harness's spy, for replays
        signature = inspect.signature(getattr(type(driver.target), capture_name))

        def timed(*args, **kwargs):
            if capture_name == replay_name and not signature.bind(
                    driver.target, *args, **kwargs).arguments.get("in_capture", False):
                return original(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0

        setattr(driver.target, capture_name, timed)
        driver.capture()
        setattr(driver.target, capture_name, original)
        return driver, spent[0]

    gen = torch.Generator().manual_seed(0)
    rows, capture = [], {}
    for label, mode, env in modes(rel):
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        driver, first_s = captured(mode)  # the first capture of this mode in the process
        replay_call = getattr(driver.target, replay_name)  # the harness's spy
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
            own = spy_own_fused(driver, rel) if not patched else None
            setattr(driver.target, replay_name, timed_replay)
            try:
                assert driver.replay(batch) == bs
            finally:
                setattr(driver.target, replay_name, replay_call)
                if own is not None:
                    own[1]()
            served, fused_us = {}, None
            if rf is not None:
                served = dict(rf.served)
                want = f"metadata.{variant}"
                assert served == {want: 1} and not rf.path_report()["disabled"], \
                    f"{variant} {label} bs={bs}: served {rf.path_report()}"
            elif own is not None and device == "cuda":
                # SGLang's own fused kernels must have served this replay (on CUDA its backend
                # takes them for every mode); timed alone with the arguments it passed
                for name, *_ in own[0]:
                    served[f"own.{name}"] = served.get(f"own.{name}", 0) + 1
                assert served, f"{rel} {label} bs={bs}: SGLang's own fused metadata did not run"
                _, fn, args, kwargs = own[0][0]
                fused_us = median_us(lambda: fn(*args, **kwargs))
            rows.append({"mode": label, "bs": bs, "raw_bs": raw_bs, "served": served,
                         "first_replay_us": first_us[-1],
                         "replay_us": median_us(driver.last_call.invoke),
                         "own_fused_kernel_us": fused_us})
            print(f"{rel} {variant} {label} bs={bs}: first {first_us[-1]:.1f} us, then "
                  f"{rows[-1]['replay_us']:.1f} us"
                  + (f" (fused kernel alone {fused_us:.1f} us)" if fused_us else ""), flush=True)
        _, warm_s = captured(mode)  # a second runner: the caches and kernels warm
        capture[label] = {"first_s": first_s, "warm_s": warm_s}
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    if patched and device == "cuda" and variant == "cuda":  # our library, loaded by the captures
        from sglang.srt.layers.attention.nsa import cuda_metadata_wrapper as cw

        floors["cuda_ext_empty_launch_us"] = median_us(lambda: cw.empty_launch(dummy))
    versions = {"torch": torch.__version__, "triton": triton.__version__}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except Exception as e:  # noqa: BLE001 (recorded, not needed by the replay)
        versions["transformers"] = f"not importable: {type(e).__name__}"
    return {"release": rel, "variant": variant, "floors": floors, "capture": capture,
            "rows": rows, "versions": versions}


# ------------------------------------------------------------------ the run
def build_trees(release: str, workdir: Path, patched: bool) -> dict:
    """Pristine (the pinned wheel, pip-installed) and, if asked, patched (a copy, apply.sh)
    trees; the release's own packages installed (scripts/release_deps.sh)."""
    import regen

    for script in ("fetch_wheel.sh", "release_deps.sh"):
        subprocess.run(["bash", str(ROOT / "scripts" / script), release], check=True,
                       stdout=subprocess.DEVNULL)
    trees = {"pristine": workdir / "pristine"}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target",
                    str(trees["pristine"]), str(regen.default_wheel(release))], check=True)
    if patched:
        trees["patched"] = workdir / "patched"
        shutil.copytree(trees["pristine"], trees["patched"], symlinks=True)
        subprocess.run(["bash", str(ROOT / "scripts" / "apply.sh"), "apply", "--target",
                        str(trees["patched"])], check=True,
                       env=dict(os.environ, PYTHON=sys.executable), stdout=subprocess.DEVNULL)
    return trees


def run_variant(key: str, name: str, tree: Path, flags: dict, args, workdir: Path) -> dict:
    caches = workdir / f"caches-{key.replace(' ', '-')}"  # empty: a first server start
    out = workdir / f"{key.replace(' ', '-')}.json"
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


def report(rels: list, device: str, device_name: str, args, results: dict) -> str:
    keys = list(results)
    ours = [k for k in keys if results[k]["variant"] != "sglang"]
    owns = [k for k in keys if results[k]["variant"] == "sglang"]
    lines = [f"## NSA/DSA replay metadata: SGLang {', '.join(rels)}, its own code vs "
             f"nsa-fastpath ({device_name})", ""]
    if device != "cuda":
        lines += ["**CPU smoke run (Triton interpreter, no CUDA path, and from 0.5.15 SGLang's "
                  "non-CUDA fallback instead of its fused kernels): these numbers mean nothing; "
                  "run it on a GPU.**", ""]
    lines += [f"page size {args.page_size}, topk {args.topk}, captured bs {args.bs}; replay: "
              f"median host time of {args.iters} calls after {args.warmup}, each after a "
              "device sync, of the backend call the release's own runner made (its own "
              "arguments; a raw batch padded where it can be). `R sglang`: release R's own "
              "code; `R cuda` / `R triton`: nsa-fastpath's paths on R.", ""]
    lines += ["Versions: " + "; ".join(f"{k}: " + ", ".join(
        f"{n} {v}" for n, v in results[k]["versions"].items()) for k in keys), ""]
    lines += ["Floors (same processes): " + "; ".join(
        f"{k}: " + ", ".join(f"{n} {v:.2f} us" for n, v in results[k]["floors"].items())
        for k in keys), ""]
    by_key = {k: {(r["mode"], r["bs"]): r for r in results[k]["rows"]} for k in keys}
    order = []
    for k in keys:
        order += [(r["mode"], r["bs"]) for r in results[k]["rows"]
                  if (r["mode"], r["bs"]) not in order]

    def cell(k, key, field, fmt):
        r = by_key[k].get(key)
        return "-" if r is None or r.get(field) is None else fmt.format(r[field])

    header = ["mode", "bs"] + [f"{k} (us)" for k in keys] + [
        f"{o} / {u}" for o in owns for u in ours]
    rows = []
    for key in order:
        ratios = []
        for o in owns:
            for u in ours:
                a, b = by_key[o].get(key), by_key[u].get(key)
                ratios.append("-" if a is None or b is None
                              else f"{a['replay_us'] / b['replay_us']:.2f}x")
        rows.append(list(key) + [cell(k, key, "replay_us", "{:.1f}") for k in keys] + ratios)
    lines += ["Replay, the backend call (host time):", ""] + _table(header, rows)
    fused = [k for k in owns if any(r.get("own_fused_kernel_us") for r in results[k]["rows"])]
    if fused:
        header = ["mode", "bs"] + [f"{k}: fused kernel alone (us)" for k in fused] + [
            f"{k}: served" for k in fused]
        rows = [list(key) + [cell(k, key, "own_fused_kernel_us", "{:.1f}") for k in fused]
                + [", ".join(f"{n[4:]} x{c}" for n, c in by_key[k][key]["served"].items())
                   if key in by_key[k] else "-" for k in fused] for key in order]
        lines += ["", "SGLang's own fused replay metadata alone (its first kernel call of the "
                  "replay, the arguments the backend passed), and the fused kernels that served "
                  "the first replay:", ""] + _table(header, rows)
    header = ["mode", "bs"] + [f"{k} first replay (us)" for k in keys]
    rows = [list(key) + [cell(k, key, "first_replay_us", "{:.0f}") for k in keys]
            for key in order]
    lines += ["", "First replay of each bs (the backend call of the runner's first replay, "
              "synchronized; far above the median: something compiled or loaded):", ""] \
        + _table(header, rows)
    labels = []
    for k in keys:
        labels += [m for m in results[k]["capture"] if m not in labels]
    header = ["mode"] + [f"{k} first / warm (ms)" for k in keys]
    rows = [[m] + [(f"{results[k]['capture'][m]['first_s'] * 1e3:.1f} / "
                    f"{results[k]['capture'][m]['warm_s'] * 1e3:.1f}")
                   if m in results[k]["capture"] else "-" for k in keys] for m in labels]
    lines += ["", "First capture (empty caches) and a second one (warm), summed host time of the "
              "backend's capture calls:", ""] + _table(header, rows)
    return "\n".join(lines) + "\n"


def _table(header, rows) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", default=os.environ.get("NSA_FASTPATH_BENCH_RELEASE", "0.5.8"),
                    help="a release pinned in scripts/regen.py WHEELS, or several, comma-separated")
    ap.add_argument("--own-only", action="store_true",
                    help="each release's own code only (the only variant of a release without "
                         "a set)")
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
    import regen
    import releases

    rels = [r.strip() for r in args.release.split(",") if r.strip()]
    unknown = [r for r in rels if r not in regen.WHEELS]
    if unknown:
        ap.error(f"no pinned wheel for {', '.join(unknown)} (scripts/regen.py WHEELS: "
                 f"{', '.join(regen.WHEELS)})")
    if not gpu:
        os.environ["TRITON_INTERPRET"] = "1"
    results = {}
    with tempfile.TemporaryDirectory(prefix="nsa-bench-release-") as tmp:
        for rel in rels:
            own_only = args.own_only or not releases.has_set(rel)
            if own_only and not args.own_only:
                print(f"SGLang {rel}: nsa-fastpath has no set for it: its own code only",
                      flush=True)
            workdir = Path(tmp) / rel
            trees = build_trees(rel, workdir, patched=not own_only)
            for name, (tree, flags) in VARIANTS.items():
                if tree not in trees or (name == "cuda" and not gpu):
                    continue  # a release without a set; the CUDA path needs a GPU
                key = f"{rel} {name}"
                results[key] = run_variant(key, name, trees[tree], flags, args, workdir)
    import torch

    device_name = torch.cuda.get_device_name() if gpu else "CPU"
    text = report(rels, args.device, device_name, args, results)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_release_{'_'.join(rels)}"
    Path(f"{stem}.json").write_text(json.dumps(
        {"releases": rels, "device": device_name, "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
         "results": results}, indent=1))
    Path(f"{stem}.md").write_text(text)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
