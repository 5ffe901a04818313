"""`apply.sh status --target SITE` is about that site-packages' own Python, line for line.

The status run by one Python about another's site-packages (ROLLBACK.md's check) once mixed the
two: the caller's Triton, the target's paths. Here the caller and the target are different
venvs made from this interpreter's base (`--without-pip`, no packages of their own), one with
Triton and torch (a .pth to this test run's site-packages) and one without.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import triton
from conftest import APPLY

BASE = getattr(sys, "_base_executable", sys.executable)
VERSION = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def make_venv(path: Path, with_torch: bool) -> Path:
    """A venv (no pip); with_torch: it sees this run's site-packages (torch, Triton). Its
    site-packages."""
    subprocess.run([BASE, "-m", "venv", "--without-pip", str(path)], check=True)
    site = path / "lib" / VERSION / "site-packages"
    assert site.is_dir(), site
    if with_torch:
        ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
        (site / "this_run.pth").write_text("\n".join(ours) + "\n")
    return site


def status(site: Path, python: Path, **env) -> str:
    """`apply.sh status --target site` run with PYTHON=python."""
    p = subprocess.run(["bash", str(APPLY), "status", "--target", str(site)], capture_output=True,
                       text=True, env={**os.environ, "PYTHON": str(python), **env})
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def line(out: str, start: str) -> str:
    found = [x for x in out.splitlines() if x.startswith(f"[nsa-fastpath] {start}")]
    assert len(found) == 1, (start, out)
    return found[0]


def install_patched(site: Path, patched_template: Path) -> None:
    shutil.copytree(patched_template, site, symlinks=True, dirs_exist_ok=True)


@pytest.mark.quick
def test_status_target_venv_is_reported_for_its_own_python(tmp_path, patched_template):
    """Caller without Triton, target venv with it: every line is the target's (its python, its
    Triton, the paths its server would take), none the caller's; flags agree with paths."""
    caller_py = tmp_path / "caller" / "bin" / "python3"
    make_venv(tmp_path / "caller", with_torch=False)
    no_triton = subprocess.run([str(caller_py), "-c", "import triton"], capture_output=True)
    assert no_triton.returncode != 0, "the caller venv must not import Triton"
    site = make_venv(tmp_path / "target", with_torch=True)
    install_patched(site, patched_template)

    out = status(site, caller_py)
    py = line(out, "python: ")
    assert py.startswith(f"[nsa-fastpath] python: {tmp_path / 'target' / 'bin'}/python"), py
    assert f"which imports from {site}" in py
    assert line(out, "triton: ") == f"[nsa-fastpath] triton: importable, {triton.__version__}"
    assert "Triton is not importable" not in out
    assert line(out, "  SGLANG_NSA_USE_TRITON_METADATA=").endswith("on: the triton path serves")
    assert line(out, "  NSA replay metadata: ").startswith(
        f"[nsa-fastpath]   NSA replay metadata: triton {triton.__version__}")
    assert line(out, "paths a server started by ").startswith(
        f"[nsa-fastpath] paths a server started by {tmp_path / 'target' / 'bin'}/python")
    assert str(tmp_path / "caller") not in out, out  # nothing about the caller's Python

    # the flags as the target's SGLang reads them, and the paths agree with them
    off = status(site, caller_py, SGLANG_RADIX_FAST_MATCH="0", SGLANG_NSA_USE_TRITON_METADATA="0")
    assert "SGLANG_RADIX_FAST_MATCH=False (set to '0' in the environment)" in off
    assert line(off, "  radix prefix matching: ").endswith(
        "upstream (SGLANG_RADIX_FAST_MATCH=0: SGLang's own prefix matching)")
    assert "SGLANG_NSA_USE_TRITON_METADATA=False (set to '0' in the environment)" in off
    assert line(off, "  NSA replay metadata: ").startswith(
        "[nsa-fastpath]   NSA replay metadata: upstream")


def test_status_target_venv_without_triton(tmp_path, patched_template):
    """Caller with Triton (this run's Python), target venv without it (nor torch): the target's
    facts, which say the same thing everywhere: no Triton, no path known."""
    site = make_venv(tmp_path / "target", with_torch=False)
    install_patched(site, patched_template)
    out = status(site, Path(sys.executable))
    assert line(out, "python: ").startswith(
        f"[nsa-fastpath] python: {tmp_path / 'target' / 'bin'}/python"), out
    assert line(out, "triton: ") == "[nsa-fastpath] triton: not importable (not installed)"
    assert line(out, "  SGLANG_NSA_USE_TRITON_METADATA=").endswith(
        "on, but Triton is not importable by this Python: the Triton path cannot serve")
    for label in ("CUDA metadata kernel", "  NSA replay metadata", "  radix prefix matching"):
        assert "unknown (could not import SGLang" in line(out, f"{label}: "), out
    assert f"triton {triton.__version__}" not in out and sys.executable not in out, out


def test_status_target_no_python_owns(tmp_path, patched_template):
    """A --target tree no Python has on its path: said first; the lines are this Python's with
    the tree on PYTHONPATH, consistently."""
    site = tmp_path / "site"
    install_patched(site, patched_template)
    out = status(site, Path(sys.executable))
    assert f"no Python found whose sys.path holds {site.resolve()}" in out
    assert f"the lines below are for {sys.executable}" in out
    assert line(out, "python: ").startswith(f"[nsa-fastpath] python: {sys.executable} ")
    assert line(out, "triton: ") == f"[nsa-fastpath] triton: importable, {triton.__version__}"
    assert line(out, "  NSA replay metadata: ").startswith(
        f"[nsa-fastpath]   NSA replay metadata: triton {triton.__version__}")
