"""README command 1 (scripts/setup.sh) as a new user meets it, and the docs' promises about
files: setup.sh says plainly which SGLang it patched, that a .venv it had to create is the
test environment and cannot serve, and prints status/revert commands that work as printed.

setup.sh runs from a copy of this repository whose `.venv` is a stand-in (a Python that
sees a pip-installed SGLang 0.5.8 tree) with make_venv.sh's stamp, so the test neither
creates a real venv nor touches the shared one.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from applytools import (  # noqa: F401  (fixtures are used by name)
    _tree_hygiene, assert_tree, link_tree, out, patched_map, pristine_map)
from conftest import ROOT


def repo_copy(dst: Path) -> Path:
    for name in ("scripts", "overlay", "patches", "manifests"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements-cpu.txt",):
        shutil.copy(ROOT / name, dst / name)
    return dst


def python_seeing(path: Path, site: Path | None) -> Path:
    """An executable 'python' that imports SGLang from `site` (None: sees no SGLang)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = (f'PYTHONPATH={site} exec {sys.executable} "$@"' if site
            else f'exec {sys.executable} -S "$@"')  # -S: no site-packages, no SGLang
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def run_setup(repo: Path, python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), *args],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(python),
                               "NSA_FASTPATH_STATUS_FILES_ONLY": "1"})


def printed(p: subprocess.CompletedProcess, what: str) -> str:
    m = re.search(rf"^\[nsa-fastpath\] {what}: (.*)$", p.stdout, re.M)
    assert m, f"no '{what}:' line\n{out(p)}"
    return m.group(1)


def run_printed(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                          env={**os.environ, "NSA_FASTPATH_STATUS_FILES_ONLY": "1"})


def test_setup_without_sglang_patches_the_test_venv_and_says_so(tmp_path, pristine_template,
                                                                pristine_map, patched_map):
    repo = repo_copy(tmp_path / "repo")
    site = link_tree(pristine_template, tmp_path / "venv-site")
    venv_py = python_seeing(repo / ".venv" / "bin" / "python", site)
    stamp = hashlib.sha256((repo / "requirements-cpu.txt").read_bytes()
                           + (repo / "scripts" / "make_venv.sh").read_bytes()).hexdigest()
    (repo / ".venv" / ".nsa-fastpath-stamp").write_text(stamp + "\n")
    plain = python_seeing(tmp_path / "bin" / "python3", None)

    p = run_setup(repo, plain)
    assert p.returncode == 9, out(p)  # it worked, but patched no Python that serves
    assert f"{plain} has no SGLang: reusing {repo}/.venv" in p.stderr, out(p)
    assert "creating" not in p.stderr and "minutes" not in p.stderr, out(p)  # the venv existed
    assert "test environment" in p.stderr
    last = p.stdout.splitlines()[-1]
    assert last.startswith("[nsa-fastpath] NOTE: exit 9: no Python that serves was patched"), last
    assert_tree(site, patched_map, "patched", out(p))
    assert f"setup: patched: the SGLang in {site} (sglang 0.5.8), the one {venv_py}" in p.stdout
    note = printed(p, "NOTE")
    for words in (f"{repo}/.venv is this repository's CPU test environment", "cannot serve",
                  "PYTHON=/path/to/its/python bash"):
        assert words in note, note
    st, rv = printed(p, "status"), printed(p, "revert")
    assert st.startswith(f"PYTHON={venv_py} bash {repo}/scripts/apply.sh status"), st
    s = run_printed(st)
    assert s.returncode == 0 and "overall: patched" in s.stdout and str(site) in s.stdout, out(s)
    r = run_printed(rv)
    assert r.returncode == 0, out(r)
    assert_tree(site, pristine_map, "pristine after the printed revert command")


def test_make_venv_state(tmp_path):
    """What setup.sh announces comes from `make_venv.sh --state`: absent (create), stale
    (update), ready (reuse); --state changes nothing."""
    repo = repo_copy(tmp_path / "repo")
    state = lambda: subprocess.run(["bash", str(repo / "scripts" / "make_venv.sh"), "--state"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    assert state() == "absent" and not (repo / ".venv").exists()
    python_seeing(repo / ".venv" / "bin" / "python", None)
    assert state() == "stale"
    stamp = hashlib.sha256((repo / "requirements-cpu.txt").read_bytes()
                           + (repo / "scripts" / "make_venv.sh").read_bytes()).hexdigest()
    (repo / ".venv" / ".nsa-fastpath-stamp").write_text(stamp + "\n")
    assert state() == "ready"


@pytest.mark.quick  # apply (and --dry-run), status, revert: byte-identical round trip
def test_setup_with_sglang_patches_it(tmp_path, pristine_template, pristine_map, patched_map):
    repo = repo_copy(tmp_path / "repo")
    site = link_tree(pristine_template, tmp_path / "site")
    py = python_seeing(tmp_path / "bin" / "python3", site)
    d = run_setup(repo, py, "--dry-run")
    assert d.returncode == 0 and "dry run" in d.stdout, out(d)
    assert_tree(site, pristine_map, "unchanged by --dry-run")
    p = run_setup(repo, py)
    assert p.returncode == 0, out(p)
    assert f"setup: patched: the SGLang in {site} (sglang 0.5.8), the one {py} imports" in p.stdout
    assert "NOTE" not in p.stdout and not (repo / ".venv").exists()
    assert_tree(site, patched_map, "patched")
    assert run_printed(printed(p, "status")).returncode == 0
    r = run_printed(printed(p, "revert"))
    assert r.returncode == 0, out(r)
    assert_tree(site, pristine_map, "pristine")
    p = run_setup(repo, tmp_path / "no-such-python")
    assert p.returncode == 3 and "no Python at" in p.stderr and not (repo / ".venv").exists()


def test_setup_refuses_a_source_checkout_and_points_to_git(tmp_path, pristine_template):
    """An SGLang whose files git tracks (an editable or source install): setup.sh (apply)
    changes nothing and prints the --git command, which works as printed; --allow-source-tree
    patches in place, and the revert command setup prints takes it out again."""
    repo = repo_copy(tmp_path / "repo")
    co = tmp_path / "sglang"
    shutil.copytree(pristine_template / "sglang", co / "python" / "sglang")
    (co / "python" / "pyproject.toml").write_text('[project]\nname = "sglang"\nversion = "0.5.8"\n')
    git = lambda *a: subprocess.run(["git", "-C", str(co), *a], check=True, capture_output=True,
                                    text=True).stdout
    git("init", "-q", "-b", "main")
    git("config", "user.name", "Test Operator")
    git("config", "user.email", "operator@example.invalid")
    git("add", "-A")
    git("commit", "-q", "-m", "SGLang v0.5.8")
    py = python_seeing(tmp_path / "bin" / "python3", co / "python")

    p = run_setup(repo, py)
    assert p.returncode == 3 and "Nothing changed" in p.stderr, out(p)
    assert f"{co}/python/sglang is a source checkout: git tracks its files in the work tree " \
        f"{co}" in p.stderr, out(p)
    assert git("status", "--porcelain") == "" and not (repo / ".venv").exists(), out(p)
    as_commits = re.search(r"instead .*?: (bash \S+ apply --git \S+)$", p.stderr, re.M)
    assert as_commits and "--allow-source-tree" in p.stderr, out(p)
    r = run_printed(as_commits.group(1))
    assert r.returncode == 0 and git("status", "--porcelain") == "", out(r)
    st = run_printed(f"bash {repo}/scripts/apply.sh status --git {co}")
    assert st.returncode == 0 and "overall: patched" in st.stdout, out(st)
    r = run_printed(f"bash {repo}/scripts/apply.sh revert --git {co}")
    assert r.returncode == 0, out(r)

    head = git("rev-parse", "HEAD")
    p = run_setup(repo, py, "--allow-source-tree")
    assert p.returncode == 0 and "setup: patched" in p.stdout, out(p)
    assert git("status", "--porcelain") != ""  # in place: changed and untracked files
    rv = printed(p, "revert")
    assert "--allow-source-tree" not in rv and "--allow-source-tree" not in printed(p, "status")
    r = run_printed(rv)
    assert r.returncode == 0, out(r)
    assert git("status", "--porcelain") == "" and git("rev-parse", "HEAD") == head, out(r)


# ------------------------------------------------------------------ docs
DOCS = ["README.md", "ROLLBACK.md", "tests/README.md", "requirements-cpu.txt"]


@pytest.mark.parametrize("doc", DOCS)
def test_docs_name_only_files_that_exist(doc):
    """(The issue: requirements-cpu.txt named a scripts/setup_env.sh that does not exist.)"""
    text = (ROOT / doc).read_text()
    named = {p.rstrip(".") for p in re.findall(
        r"(?<![\w/.<])((?:scripts|tests|docs|bench|overlay|patches|harness|standins)/[\w./-]*)",
        text)}
    named = {p for p in named if p.endswith("/") or "." in p.rsplit("/", 1)[-1]}  # files, dirs/
    assert named
    for path in sorted(named):
        assert (ROOT / path).exists() or (ROOT / "tests" / path).exists(), f"{doc} names {path}"
    if doc == "requirements-cpu.txt":
        assert "scripts/make_venv.sh" in named


def test_readme_says_how_long_command_2_takes():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands on a fresh machine")[1].split("\n## ")[0]
    assert re.search(r"Command 2 .*\d+ minutes", section.replace("\n", " "))


@pytest.mark.parametrize("doc", ["ROLLBACK.md", "docs/SERVING.md"])
def test_docs_give_the_upgrade_path(doc):
    """What tests/test_apply_upgrade.py runs is what the operator docs say to run."""
    text = (ROOT / doc).read_text()
    section = text.split("Upgrading SGLang\n", 1)[1].split("\n## ", 1)[0]
    for words in ("pip install -U sglang", "apply.sh status", "apply.sh apply", "revert",
                  "upgraded from 0.5.8", "exit 7"):
        assert words in section, f"{doc}: {words!r}"
