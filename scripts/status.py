#!/usr/bin/env python3
"""Kernel-path part of `apply.sh status`: which nsa-fastpath code paths the target would use.

Run by scripts/apply.sh (under $PYTHON) with --site, the target site-packages. Every line is
about the Python that owns that site-packages (the one whose sys.path holds it: for
<prefix>/lib/pythonX.Y/site-packages, <prefix>/bin/pythonX.Y, a venv's or a system install's):
when that is not the Python running this script, the script re-runs itself under it. When no
Python owns it (a --target tree of one's own), every line is about this Python with the target
first on its path (PYTHONPATH=<site>), and the first line says so.

Each fact is found once, by one child process of that Python (`--probe`, which imports SGLang:
a few seconds, and builds nothing): each flag's value as SGLang reads it, Triton, the CUDA
metadata kernel (built? for which architectures? what a server here loads, builds or lacks,
and why: cuda_metadata_wrapper.kernel_state), the path each fast path would take in a server
started from this environment and why the paths ahead of it would not
(`replay_fastpath.describe()`, `radix_match.describe()` of the target tree). Every line printed
is derived from those facts, so no two lines can disagree. The flag names come from the target's
own (patched) sglang/srt/environ.py, loaded as a single file (it only imports os, subprocess,
warnings, contextlib, enum and typing), which also gives the values when SGLang can't be
imported. Standard library only; imports sglang only in the child.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
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
OPTIONS = {
    "SGLANG_RADIX_COMPILED_MATCH": "the compiled radix prefix-match helper",
    "SGLANG_RADIX_REMATCH_CACHE": "the radix re-match cache",
    "SGLANG_RADIX_TRITON_MATCH": "the Triton token match (opt-in)",
    "SGLANG_NSA_BATCHED_COPY_VERIFY": "verify each batched copy (opt-in)",
}
METADATA_PATH = {"SGLANG_NSA_USE_CUDA_METADATA": "cuda", "SGLANG_NSA_USE_TRITON_METADATA": "triton"}


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


# ------------------------------------------------------------------ the facts, found once
def probe(names: list[str]) -> dict:
    """In the child: every fact the report needs, from the SGLang this Python imports."""
    import sglang
    from sglang.srt.environ import envs

    facts = {"sglang": sglang.__file__,
             "flags": {n: getattr(envs, n).get() for n in names if hasattr(envs, n)}}
    for key, module in (("nsa", "sglang.srt.layers.attention.nsa.replay_fastpath"),
                        ("radix", "sglang.srt.mem_cache.radix_match")):
        try:
            facts[key] = importlib.import_module(module).describe(as_facts=True)
        except Exception as e:
            facts[key] = {"error": f"{type(e).__name__}: {e}"}
    return facts


def gather(site: Path, names: list[str]) -> tuple[dict | None, str]:
    """(facts, "") from one child process of this Python, or (None, why there are none)."""
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe", *names],
                              capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "importing SGLang took over 300 s"
    try:
        facts = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"could not import SGLang: {why}"
    found = Path(facts["sglang"]).resolve()
    if not found.is_relative_to(site.resolve()):
        return None, f"not this target's: {sys.executable} imports SGLang from {found}"
    return facts, ""


# ------------------------------------------------------------------ every line, from the facts
def serving(kind: str, name: str) -> str:
    """The clause naming what serves: 'the triton path serves', 'SGLang's own code path (...)'."""
    if name == "upstream":
        return f"SGLang's own code path (the upstream {kind} serves)"
    return f"the {name} {kind} serves"


def effect(name: str, value, nsa: dict | None, radix: dict | None, tri_ok: bool) -> str:
    """What flag `name` at `value` does here, as the facts say."""
    on = "on" if value else "off"
    if name in METADATA_PATH and nsa is not None:
        now = serving("path", nsa["path"])
        mine = METADATA_PATH[name]
        if not value or nsa["path"] == mine:
            return f"{on}: {now}"
        if mine in nsa["not_taken"]:
            return f"on, but it cannot serve here ({nsa['not_taken'][mine]}): {now}"
        return f"on, the fallback: {now}"
    if name == "SGLANG_NSA_USE_TRITON_METADATA" and value and not tri_ok:
        return "on, but Triton is not importable by this Python: the Triton path cannot serve"
    if name == "SGLANG_NSA_USE_BATCHED_COPY" and nsa is not None:
        if nsa["copy"] == "nsa-fastpath":
            return "on: copies precomputed multi-step metadata where SGLang's own replay code runs"
        if value:  # both on: SGLang's serves (replay_fastpath.PREFER_UPSTREAM_FUSED_COPY)
            return ("on, but SGLang's own fused copy serves in its place "
                    "(SGLANG_USE_FUSED_METADATA_COPY=1)")
        return f"off: SGLang's own {'fused copy' if nsa['copy'] == 'sglang-fused' else 'copies'}"
    if name.startswith("SGLANG_RADIX_") and radix is not None:
        fast = radix["flags"]["SGLANG_RADIX_FAST_MATCH"]
        now = serving("matcher", radix["matcher"])
        if name == "SGLANG_RADIX_FAST_MATCH":
            return f"{on}: {now}"
        if not fast:
            return f"{on} (no effect: SGLANG_RADIX_FAST_MATCH=0)"
        if name == "SGLANG_RADIX_COMPILED_MATCH" and value and radix["matcher"] != "compiled":
            return f"on, but the helper cannot serve here ({radix['cause']}): {now}"
        if name == "SGLANG_RADIX_COMPILED_MATCH":
            return f"{on}: {now}"
    return on


def told(facts: dict | None, why: str, key: str, field: str) -> str:
    """facts[key][field], or "unknown (why)" where the child could not tell."""
    if facts is None:
        return f"unknown ({why})"
    return facts[key][field] if "error" not in facts[key] else f"unknown ({facts[key]['error']})"


def report(args, site: Path) -> int:
    here = f"{sys.executable} ({sys.version.split()[0]})"
    say(f"python: {here}" + (f", which imports from {site}" if site is not None else ""))
    if not args.environ:
        tri_ok, tri = triton_info()
        say(f"triton: {'importable, ' + tri if tri_ok else 'not importable (' + tri + ')'}")
        say("flags: absent (the target's environ.py is not nsa-fastpath's: SGLang's own code "
            "paths run; setting the flags has no effect)")
        return 0
    try:
        envs = load_envs(Path(args.environ))
    except Exception as e:
        say(f"flags: could not load {args.environ}: {type(e).__name__}: {e}")
        return 1
    names, notes = list(FLAGS), []
    if args.pristine_environ and Path(args.pristine_environ).is_file():
        try:
            ours, theirs = env_fields(envs), set(env_fields(load_envs(Path(args.pristine_environ))))
            names += [n for n in ours if n not in theirs and n not in FLAGS]
        except Exception as e:  # the required flags are still reported
            notes.append(f"(could not compare with {args.pristine_environ}: {type(e).__name__}: {e})")

    facts, why = gather(site, names)
    nsa = facts["nsa"] if facts and "error" not in facts["nsa"] else None
    radix = facts["radix"] if facts and "error" not in facts["radix"] else None
    if nsa is not None:
        tri_ok, tri = "version" in nsa["triton"], nsa["triton"].get("version") or nsa["triton"]["error"]
    else:
        tri_ok, tri = triton_info()
    say(f"triton: {'importable, ' + tri if tri_ok else 'not importable (' + tri + ')'}")
    say(f"CUDA metadata kernel: {told(facts, why, 'nsa', 'kernel_line')}")
    for note in notes:
        say(note)
    say(f"flags (read through {args.environ}):")
    for name in names:
        if facts is not None and name in facts["flags"]:
            value = facts["flags"][name]
        elif getattr(envs, name, None) is not None:
            value = getattr(envs, name).get()
        else:
            say(f"  {name}: not declared in this environ.py")
            continue
        src = f"set to {os.environ[name]!r} in the environment" if name in os.environ else "default"
        what = FLAGS.get(name) or OPTIONS.get(name, "nsa-fastpath option")
        say(f"  {name}={value} ({src}) -> {what}: {effect(name, value, nsa, radix, tri_ok)}")
    say(f"paths a server started by {sys.executable} from this environment would use:")
    say(f"  NSA replay metadata: {told(facts, why, 'nsa', 'line')}")
    say(f"  radix prefix matching: {told(facts, why, 'radix', 'line')}")
    say("a server logs which path serves in lines starting with 'nsa-fastpath:' "
        "(grep nsa-fastpath: server.log; docs/SERVING.md)")
    return 0


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
    if sys.argv[1:2] == ["--probe"]:  # the child: the facts, as JSON on the last line
        print(json.dumps(probe(sys.argv[2:])))
        return 0
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
    return report(args, site)


if __name__ == "__main__":
    sys.exit(main())
