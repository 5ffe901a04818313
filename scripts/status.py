#!/usr/bin/env python3
"""Kernel-path part of `apply.sh status`: which nsa-fastpath code paths this Python would use.

Run by scripts/apply.sh with the target's interpreter ($PYTHON). Reports
  * Triton: importable? which version (the Triton metadata path needs it),
  * the CUDA C++ extension: built? (nsa_fastpath_metadata*.so under $NSA_FASTPATH_BUILD_DIR,
    default ~/.cache/nsa-fastpath/build),
  * each nsa-fastpath environment flag, read through the target's own (patched)
    sglang/srt/environ.py, loaded as a single file: it only imports os, subprocess,
    warnings, contextlib, enum and typing, so SGLang's heavy __init__ is not run;
  * the path each fast path would take in a server started from this environment
    (`replay_fastpath.describe()`, `radix_match.describe()` of the target tree), asked in a
    child process of the target's Python, which imports SGLang (a few seconds) and builds
    nothing.
Standard library only; never imports sglang itself.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

# The switches of the patch set; any other flag our environ.py adds over SGLang's (found by
# comparing with the backed-up original) is listed too.
FLAGS = {
    "SGLANG_NSA_USE_CUDA_METADATA": "NSA replay metadata by the CUDA C++ kernel",
    "SGLANG_NSA_USE_TRITON_METADATA": "NSA replay metadata by the Triton kernel",
    "SGLANG_NSA_USE_BATCHED_COPY": "batched copy of precomputed replay metadata",
    "SGLANG_RADIX_FAST_MATCH": "fast RadixCache key matching",
}


def say(msg: str = "") -> None:
    print(f"[nsa-fastpath] {msg}")


def triton_info() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "not installed"
    try:
        import triton  # noqa: F401  (a real import: "installed" is not "importable")
    except Exception as e:  # pragma: no cover - depends on the environment
        return False, f"import failed: {type(e).__name__}: {e}"
    return True, getattr(triton, "__version__", "unknown version")


def cuda_ext_info() -> tuple[bool, str]:
    build = Path(os.environ.get("NSA_FASTPATH_BUILD_DIR")
                 or Path.home() / ".cache" / "nsa-fastpath" / "build")
    # the NSA metadata extension only (the radix helper is built under the same directory)
    sos = sorted(build.rglob("nsa_fastpath_metadata*.so")) if build.is_dir() else []
    if sos:
        return True, ", ".join(str(p) for p in sos)
    return False, f"not built (no nsa_fastpath_metadata*.so under {build})"


def env_fields(envs) -> list[str]:
    """Names of the EnvField attributes of an Envs instance, in declaration order."""
    out = []
    for klass in reversed(type(envs).__mro__):
        for name, value in vars(klass).items():
            if hasattr(value, "get") and hasattr(value, "default") and name not in out:
                out.append(name)
    return out


def load_envs(environ_py: Path):
    spec = importlib.util.spec_from_file_location("_nsa_fastpath_target_environ", environ_py)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # some stdlib helpers look the module up by name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module.envs


# (label, module, function): what the patched tree says it would use. Each prints one line.
DESCRIBERS = (
    ("NSA replay metadata", "sglang.srt.layers.attention.nsa.replay_fastpath", "describe"),
    ("CUDA metadata kernel", "sglang.srt.layers.attention.nsa.cuda_metadata_wrapper", "build_report"),
    ("radix prefix matching", "sglang.srt.mem_cache.radix_match", "describe"),
)
_PROBE = """
import importlib, sys
sys.path.insert(0, sys.argv[1])
for module, function in zip(sys.argv[2::2], sys.argv[3::2]):
    try:
        print(getattr(importlib.import_module(module), function)())
    except Exception as e:
        print(f"unknown ({type(e).__name__}: {e})")
"""


def runtime_paths(site: Path) -> list[str]:
    """'label: path' for each fast path, as a server from this environment would choose it."""
    args = [str(site)] + [x for _, module, function in DESCRIBERS for x in (module, function)]
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return [f"{label}: unknown (importing SGLang took over 300 s)" for label, _, _ in DESCRIBERS]
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) != len(DESCRIBERS):
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"{label}: unknown (could not import SGLang: {why})" for label, _, _ in DESCRIBERS]
    return [f"{label}: {line}" for (label, _, _), line in zip(DESCRIBERS, lines)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--environ", default="",
                    help="the target's patched sglang/srt/environ.py ('' = not patched)")
    ap.add_argument("--pristine-environ", default="",
                    help="SGLang's original environ.py (the backup), to list every added flag")
    args = ap.parse_args()

    tri_ok, tri = triton_info()
    ext_ok, ext = cuda_ext_info()
    say(f"python: {sys.executable} ({sys.version.split()[0]})")
    say(f"triton: {'importable, ' + tri if tri_ok else 'not importable (' + tri + ')'}")
    say(f"CUDA C++ extension: {'built: ' + ext if ext_ok else ext}")

    if not args.environ:
        say("flags: absent (the target's environ.py is not nsa-fastpath's: SGLang's own code "
            "paths run; setting the flags has no effect)")
        return 0
    try:
        envs = load_envs(Path(args.environ))
    except Exception as e:
        say(f"flags: could not load {args.environ}: {type(e).__name__}: {e}")
        return 1
    names = list(FLAGS)
    if args.pristine_environ and Path(args.pristine_environ).is_file():
        try:
            ours, theirs = env_fields(envs), set(env_fields(load_envs(Path(args.pristine_environ))))
            names += [n for n in ours if n not in theirs and n not in FLAGS]
        except Exception as e:  # the required flags are still reported
            say(f"(could not compare with {args.pristine_environ}: {type(e).__name__}: {e})")
    say(f"flags (read through {args.environ}):")
    for name in names:
        field = getattr(envs, name, None)
        if field is None:
            say(f"  {name}: not declared in this environ.py")
            continue
        value = field.get()
        src = f"set to {os.environ[name]!r} in the environment" if name in os.environ else "default"
        what = FLAGS.get(name, "nsa-fastpath option")
        if name not in FLAGS:
            path = "on" if value else "off"
        elif not value:
            path = "off: SGLang 0.5.8's own code path"
        elif name == "SGLANG_NSA_USE_TRITON_METADATA" and not tri_ok:
            path = "on, but Triton is not importable: SGLang's own path is used"
        elif name == "SGLANG_NSA_USE_CUDA_METADATA":
            path = ("on: used on a CUDA GPU" + ("" if ext_ok else " (the extension is not built "
                    "yet: the first CUDA-graph capture builds it, unless NSA_FASTPATH_CUDA_JIT=0)"))
        else:
            path = "on: would be used"
        say(f"  {name}={value} ({src}) -> {what}: {path}")
    say("paths a server started from this environment would use:")
    for line in runtime_paths(Path(args.environ).resolve().parents[2]):
        say(f"  {line}")
    say("each fast path logs a line starting with 'nsa-fastpath:' once per server process "
        "naming the path it uses (grep nsa-fastpath: server.log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
