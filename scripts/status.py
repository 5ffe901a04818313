#!/usr/bin/env python3
"""Kernel-path part of `apply.sh status`: which nsa-fastpath code paths the target would use.

Run by scripts/apply.sh (under $PYTHON) with --site, the target site-packages. Every line is
about the Python that owns that site-packages (the one whose sys.path holds it: for
<prefix>/lib/pythonX.Y/site-packages, <prefix>/bin/pythonX.Y, a venv's or a system install's):
when that is not the Python running this script, the script re-runs itself under it. When no
Python owns it (a --target tree of one's own), every line is about this Python with the target
first on its path (PYTHONPATH=<site>), and the first line says so. Reports
  * Triton: importable? which version (the Triton metadata path needs it),
  * the CUDA C++ extension: built? (nsa_fastpath_metadata*.so under $NSA_FASTPATH_BUILD_DIR,
    default ~/.cache/nsa-fastpath/build),
  * each nsa-fastpath environment flag, read through the target's own (patched)
    sglang/srt/environ.py, loaded as a single file: it only imports os, subprocess,
    warnings, contextlib, enum and typing, so SGLang's heavy __init__ is not run;
  * the path each fast path would take in a server started from this environment
    (`replay_fastpath.describe()`, `radix_match.describe()` of the target tree), asked in a
    child process of the same Python, which imports SGLang (a few seconds) and builds nothing.
Standard library only; never imports sglang itself.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
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
# A release whose set leaves RadixCache as SGLang ships it (from 0.5.13): no radix_match.py.
RADIX_NOT_REPLACED = ("SGLang's own (nsa-fastpath leaves RadixCache as this SGLang release ships "
                      "it; the SGLANG_RADIX_* flags do not exist here)")


def radix_replaced(site: Path | None) -> bool:
    return site is None or (site / "sglang" / "srt" / "mem_cache" / "radix_match.py").is_file()
_PROBE = """
import importlib, sys
import sglang
print(sglang.__file__)
for module, function in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        print(getattr(importlib.import_module(module), function)())
    except Exception as e:
        print(f"unknown ({type(e).__name__}: {e})")
"""


def runtime_paths(site: Path) -> list[str]:
    """'label: path' for each fast path, as a server from this environment would choose it."""
    args = [x for _, module, function in DESCRIBERS for x in (module, function)]
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return [f"{label}: unknown (importing SGLang took over 300 s)" for label, _, _ in DESCRIBERS]
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) != len(DESCRIBERS) + 1:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"{label}: unknown (could not import SGLang: {why})" for label, _, _ in DESCRIBERS]
    found = Path(lines[0]).resolve()
    if not found.is_relative_to(site.resolve()):
        return [f"{label}: not this target's: {sys.executable} imports SGLang from {found}"
                for label, _, _ in DESCRIBERS]
    out = [f"{label}: {line}" for (label, _, _), line in zip(DESCRIBERS, lines[1:])]
    if not radix_replaced(site):
        out[-1] = f"{DESCRIBERS[-1][0]}: {RADIX_NOT_REPLACED}"
    return out


# ------------------------------------------------------------------ the Python that owns --site
_SYS_PATH = "import os, sys; print('\\n'.join(os.path.realpath(p) for p in sys.path if p))"


def on_path(python: str, site: Path) -> bool:
    """Does `python` (run in this environment) have `site` on its sys.path?"""
    try:
        proc = subprocess.run([python, "-c", _SYS_PATH], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and str(site) in proc.stdout.splitlines()


def owner_candidates(site: Path) -> list[str]:
    """Interpreters that may own `site`, from its layout: <prefix>/lib/pythonX.Y/site-packages
    (a venv, pyenv, /usr/local) or Debian's <prefix>/lib/python3/dist-packages and
    /usr/local/lib/pythonX.Y/dist-packages (owned by /usr/bin/pythonX.Y); then PATH's."""
    lib = site.parent
    prefix, version = lib.parent.parent, lib.name.removeprefix("python")
    names = ([f"python{version}"] if version[:2] == "3." else []) + ["python3", "python"]
    layout = lib.name.startswith("python") and lib.parent.name in ("lib", "lib64")
    found = [str(prefix / "bin" / n) for n in names] if layout else []
    if layout and version == "3":
        found += sorted(str(p) for p in (prefix / "bin").glob("python3.*")
                        if p.name[len("python3."):].isdigit())
    if layout and str(prefix) == "/usr/local" and version[:2] == "3.":
        found.append(f"/usr/bin/python{version}")
    found += [w for n in names if (w := shutil.which(n))]
    return [c for i, c in enumerate(found) if c not in found[:i] and os.access(c, os.X_OK)]


def find_owner(site: Path) -> str | None:
    """The first candidate Python whose sys.path holds `site` (its own prefix path, not a copy:
    the symlink a venv's bin/python is, is kept)."""
    for candidate in owner_candidates(site):
        if on_path(candidate, site):
            return candidate
    return None


def rerun(python: str, extra_env: dict | None = None) -> int:
    """This script again under `python`, output straight through; its exit status."""
    argv = [python, str(Path(__file__).resolve()), *sys.argv[1:], "--owner-checked"]
    sys.stdout.flush()  # our lines first
    try:
        return subprocess.run(argv, env={**os.environ, **(extra_env or {})},
                              stdin=subprocess.DEVNULL).returncode
    except OSError as e:
        say(f"python: could not run {python}: {e}; Triton, the CUDA extension, the flags and "
            "the paths are unknown")
        return 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--environ", default="",
                    help="the target's patched sglang/srt/environ.py ('' = not patched)")
    ap.add_argument("--pristine-environ", default="",
                    help="SGLang's original environ.py (the backup), to list every added flag")
    ap.add_argument("--site", default="",
                    help="the target site-packages: report for the Python that owns it")
    ap.add_argument("--owner-checked", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    site = Path(os.path.realpath(args.site)) if args.site else None
    if site is None and args.environ:
        site = Path(os.path.realpath(args.environ)).parents[2]

    here = f"{sys.executable} ({sys.version.split()[0]})"
    if site is not None and not args.owner_checked and str(site) not in \
            [os.path.realpath(p) for p in sys.path if p]:
        owner = find_owner(site)
        if owner is not None:  # every line from the Python that owns the target
            return rerun(owner)
        pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        looked = ", ".join(owner_candidates(site)) or "none"
        say(f"no Python found whose sys.path holds {site} (looked at: {looked}): the lines below "
            f"are for {here} run with PYTHONPATH={site}; for the Python you serve with, run "
            "status with PYTHON=/path/to/that/python")
        return rerun(sys.executable, {"PYTHONPATH": pythonpath})

    tri_ok, tri = triton_info()
    ext_ok, ext = cuda_ext_info()
    say(f"python: {here}" + (f", which imports from {site}" if site is not None else ""))
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
    names = [n for n in FLAGS if radix_replaced(site) or not n.startswith("SGLANG_RADIX_")]
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
            path = "off: SGLang's own code path"
        elif name == "SGLANG_NSA_USE_TRITON_METADATA" and not tri_ok:
            path = "on, but Triton is not importable by this Python: the Triton path cannot serve"
        elif name == "SGLANG_NSA_USE_CUDA_METADATA":
            path = ("on: used on a CUDA GPU" + ("" if ext_ok else " (the extension is not built "
                    "yet: the first CUDA-graph capture builds it, unless NSA_FASTPATH_CUDA_JIT=0)"))
        else:
            path = "on: would be used"
        say(f"  {name}={value} ({src}) -> {what}: {path}")
    say(f"paths a server started by {sys.executable} from this environment would use:")
    for line in runtime_paths(site):
        say(f"  {line}")
    say("a server logs which path serves in lines starting with 'nsa-fastpath:' "
        "(grep nsa-fastpath: server.log; docs/SERVING.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
