"""scripts/apply.sh on every supported release other than the base one (0.5.8, which
test_apply*.py cover in depth): pip-installed trees and git checkouts of each release's own
wheel. apply picks the release's set by file hashes, status names it, revert restores the tree
byte for byte; a release nsa-fastpath has no set for, a locally edited file and a tree mixing
two releases' files are refused with nothing changed; a killed or failing apply on another
release is finished by a rerun, or rolled back."""
from __future__ import annotations

import py_compile
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from applytools import (
    FILES_ONLY, count_steps, link_tree, out, remove_tree, rewrite, run_apply, tree_map)
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import regen  # noqa: E402

OTHERS = sorted(p.stem for p in (ROOT / "manifests").glob("*.tsv")
                if p.stem != regen.SGLANG_VERSION)


def wheel(release: str) -> Path:
    path = regen.default_wheel(release)
    if not path.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def rows(release: str) -> list[tuple[str, str, str, str]]:
    return [tuple(ln.split("\t")) for ln in regen.manifest_path(release).read_text().splitlines()
            if ln and not ln.startswith("#")]


def replaced(release: str) -> list[str]:
    return [rel for kind, rel, _, _ in rows(release) if kind == "replace"]


@pytest.fixture(scope="session")
def release_trees(tmp_path_factory):
    """release -> (pristine site-packages, its tree map), pip-installed once per session."""
    made = {}

    def get(release: str):
        if release not in made:
            site = tmp_path_factory.mktemp(f"site-{release}") / "site"
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                            "--no-deps", "--no-compile", "--disable-pip-version-check",
                            "--target", str(site), str(wheel(release))], check=True)
            made[release] = (site, tree_map(site))
        return made[release]

    return get


def status(target_args: list[str], env: dict | None = None):
    return run_apply("status", *target_args, env={**FILES_ONLY, **(env or {})}, check=False)


def assert_patched_with(release: str, root: Path) -> None:
    """Every file of the release's set is ours (by the manifest's sha256 and by content)."""
    files = regen.overlay_files(release)
    for kind, rel, _, patched in rows(release):
        data = (root / rel).read_bytes()
        assert data == files[rel].read_bytes(), rel


@pytest.mark.parametrize("release", OTHERS)
def test_apply_status_revert_round_trip(release, release_trees, tmp_path):
    template, pristine_map = release_trees(release)
    site = link_tree(template, tmp_path / "site")
    p = run_apply("apply", "--target", str(site))
    assert f"nsa-fastpath set: sglang=={release}" in p.stdout, out(p)
    assert_patched_with(release, site)
    st = status(["--target", str(site)])
    assert st.returncode == 0 and "overall: patched" in st.stdout, out(st)
    assert f"nsa-fastpath set: sglang=={release}" in st.stdout, out(st)
    again = run_apply("apply", "--target", str(site))
    assert "already" in again.stdout, out(again)
    r = run_apply("revert", "--target", str(site))
    assert tree_map(site) == pristine_map, out(r)
    st = status(["--target", str(site)])
    assert st.returncode == 0 and "overall: pristine" in st.stdout, out(st)
    assert tree_map(template) == pristine_map, "the session template was written into"


@pytest.mark.parametrize("release", OTHERS)
def test_patched_files_compile(release, release_trees, tmp_path):
    """Every Python file apply.sh installs compiles (syntax) in the patched tree."""
    template, _ = release_trees(release)
    site = link_tree(template, tmp_path / "site")
    run_apply("apply", "--target", str(site))
    compiled = 0
    for _, rel, _, _ in rows(release):
        if rel.endswith(".py"):
            py_compile.compile(str(site / rel), cfile=str(tmp_path / "x.pyc"), doraise=True)
            compiled += 1
    assert compiled >= 3


# Import needs per release: 0.5.7's import chain wants vllm and fastapi (tests/harness sets
# releases up for the parity suites); the others import with the CPU stand-ins.
IMPORTABLE = [r for r in OTHERS if r != "0.5.7"]
IMPORT_CHECK = """
import os, sys
sys.path[:0] = sys.argv[1:]
import sglang.srt.layers.attention.nsa_backend as nb
import sglang.srt.mem_cache.radix_cache as rc
from sglang.srt.layers.attention.nsa import replay_fastpath as rf
assert nb.replay_fastpath is rf and hasattr(rc.RadixCache, "_nsa_match_prefix")
# our batched copy vs SGLang's own fused one (0.5.9): the constant decides when both are on
both = [rf.batched_copy_on()]
rf.PREFER_UPSTREAM_FUSED_COPY = True
both.append(rf.batched_copy_on())
os.environ["SGLANG_USE_FUSED_METADATA_COPY"] = "0"
both.append(rf.batched_copy_on())
print("fused-copy-choice", both, hasattr(nb, "_USE_FUSED_METADATA_COPY"))
"""


@pytest.mark.parametrize("release", IMPORTABLE)
def test_patched_modules_import(release, release_trees, tmp_path):
    """The patched nsa_backend and radix_cache import from the release's tree (CPU stand-ins
    for sgl_kernel / torchvision, as the parity runner uses); on a release with SGLang's own
    fused precomputed copy, replay_fastpath.PREFER_UPSTREAM_FUSED_COPY picks it."""
    template, _ = release_trees(release)
    site = link_tree(template, tmp_path / "site")
    run_apply("apply", "--target", str(site))
    standins = ROOT / "tests" / "standins"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SGLANG_ENABLE_JIT_DEEPGEMM": "0",
           "PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run([sys.executable, "-c", IMPORT_CHECK, str(site), str(standins / "cpu"),
                        str(standins)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, out(p)
    has_fused = subprocess.run(["grep", "-q", "SGLANG_USE_FUSED_METADATA_COPY",
                                str(site / "sglang/srt/environ.py")]).returncode == 0
    # the constant prefers SGLang's own copy (measured, docs/BENCHMARKS.md): ours serves only
    # with SGLang's switched off, or on a release without one
    want = [False, False, True] if has_fused else [True, True, True]
    assert f"fused-copy-choice {want} {has_fused}" in p.stdout, out(p)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def checkout(release: str, tmp_path: Path) -> Path:
    """A git checkout of the release's files we replace, laid out like SGLang's repo. Its
    version string names no release (a development checkout): the set is chosen by hashes."""
    repo = tmp_path / "sglang"
    with zipfile.ZipFile(wheel(release)) as zf:
        for rel in replaced(release):
            (repo / "python" / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / "python" / rel).write_bytes(zf.read(rel))
    (repo / "python" / "pyproject.toml").write_text(
        '[project]\nname = "sglang"\nversion = "0.0.0.dev0"\n')
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test Operator")
    git(repo, "config", "user.email", "operator@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"SGLang v{release}")
    return repo


def twins(release: str) -> list[str]:
    """The releases whose files we replace are the same as `release`'s (0.5.10 / 0.5.10.post1,
    0.5.12 / 0.5.12.post1): a checkout naming no release fits each one's set."""
    def originals(r):
        return {rel: pre for kind, rel, pre, _ in rows(r) if kind == "replace"}
    return [r for r in [*OTHERS, regen.SGLANG_VERSION] if originals(r) == originals(release)]


@pytest.mark.parametrize("release", OTHERS)
def test_git_checkout_round_trip(release, tmp_path):
    repo = checkout(release, tmp_path)
    before = tree_map(repo / "python")
    head0 = git(repo, "rev-parse", "HEAD").strip()
    p = run_apply("apply", "--git", str(repo))
    st = status(["--git", str(repo)])
    assert st.returncode == 0 and "overall: patched" in st.stdout, out(st)
    chosen = next((r for r in twins(release) if f"nsa-fastpath set: sglang=={r}\n" in st.stdout),
                  None)
    assert chosen is not None, out(st)
    assert_patched_with(chosen, repo / "python")
    assert git(repo, "status", "--porcelain") == "", out(p)
    n_patches = len(list(regen.patches_dir(chosen).glob("*.patch")))
    assert len(git(repo, "log", "--format=%H", f"{head0}..").split()) == n_patches
    r = run_apply("revert", "--git", str(repo))
    assert tree_map(repo / "python") == before, out(r)
    assert git(repo, "diff", head0, "HEAD") == "" and git(repo, "status", "--porcelain") == ""


# ------------------------------------------------------------------ refusals
def assert_refused(site: Path, words: list[str], *, script: Path | None = None
                   ) -> subprocess.CompletedProcess:
    before = tree_map(site)
    for cmd in ("apply", "revert"):
        if script is None:
            p = run_apply(cmd, "--target", str(site), check=False)
        else:
            p = subprocess.run(["bash", str(script), cmd, "--target", str(site)],
                               capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
        assert p.returncode == 4, f"{cmd}: {out(p)}"
        for w in words + ["Nothing changed"]:
            assert w in p.stderr, f"{cmd}: {w!r} not in\n{out(p)}"
        assert tree_map(site) == before, f"{cmd} changed the tree\n{out(p)}"
    assert not (site / "sglang" / ".nsa_fastpath").exists()
    return p


@pytest.mark.parametrize("release", OTHERS)
def test_refuses_a_locally_edited_file(release, release_trees, tmp_path):
    template, _ = release_trees(release)
    site = link_tree(template, tmp_path / "site")
    rel = replaced(release)[-1]
    rewrite(site / rel, (site / rel).read_bytes() + b"# a local edit\n")
    assert_refused(site, [f"{rel}: sha256", "no supported release's file", "edited locally"])


MIXED = [m for m in [("0.5.9", "0.5.7")] if set(m) <= set(OTHERS)]  # (tree, nsa_backend.py of)


@pytest.mark.parametrize("tree_release,other", MIXED)
def test_refuses_a_mixed_tree(tree_release, other, release_trees, tmp_path):
    """A release's tree holding another release's nsa_backend.py: each file is some supported
    release's, together none."""
    template, _ = release_trees(tree_release)
    site = link_tree(template, tmp_path / "site")
    rel = "sglang/srt/layers/attention/nsa_backend.py"
    with zipfile.ZipFile(wheel(other)) as zf:
        rewrite(site / rel, zf.read(rel))
    assert_refused(site, [f"{rel}: SGLang {other}'s original", "mixed tree"])


@pytest.mark.parametrize("release", OTHERS)
def test_refuses_a_release_without_a_set(release, release_trees, tmp_path):
    """The release's real tree, with an nsa-fastpath checkout that lacks its set (and those of
    releases with the same files, which fit it as well): refused, naming the supported releases
    and the port command."""
    template, _ = release_trees(release)
    site = link_tree(template, tmp_path / "site")
    repo = tmp_path / "nsa-fastpath"
    for name in ("scripts", "overlay", "manifests", "patches"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for twin in twins(release):
        (repo / "manifests" / f"{twin}.tsv").unlink()
        shutil.rmtree(repo / "overlay" / twin)
        shutil.rmtree(repo / "patches" / twin)
    p = assert_refused(site, ["supported: ", "regen.py --release X --port"],
                       script=repo / "scripts" / "apply.sh")
    supported = p.stderr.split("supported: ", 1)[1].split(")", 1)[0].split(", ")
    assert sorted(supported) == sorted(set(OTHERS + [regen.SGLANG_VERSION])
                                       - set(twins(release))), out(p)


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize("release", OTHERS[:1] + OTHERS[-1:] if OTHERS else [])
def test_interrupted_apply_then_rerun(release, release_trees, tmp_path):
    """kill -9 in the middle of apply, then apply again: fully patched; revert: pristine. An
    injected error instead: rolled back (exit 5) to the pristine tree."""
    template, pristine_map = release_trees(release)
    done = link_tree(template, tmp_path / "done")
    run_apply("apply", "--target", str(done))
    patched_map = tree_map(done)
    remove_tree(done)
    steps = count_steps(template, tmp_path, "apply", {}, patched_map)
    for n in (steps // 3, 2 * steps // 3):
        site = link_tree(template, tmp_path / f"kill-{n}")
        p = run_apply("apply", "--target", str(site), check=False,
                      env={"NSA_FASTPATH_FAULT_AT": str(n), "NSA_FASTPATH_FAULT_MODE": "kill"})
        assert p.returncode == -9, out(p)
        st = status(["--target", str(site)])
        if st.returncode == 0:  # status may only claim a state the tree really is in
            claimed = pristine_map if "overall: pristine" in st.stdout else patched_map
            assert tree_map(site) == claimed, out(st)
        else:
            assert st.returncode == 7 and "overall: partial" in st.stdout, out(st)
        r = run_apply("apply", "--target", str(site), check=False)
        assert r.returncode == 0 and tree_map(site) == patched_map, out(r)
        r = run_apply("revert", "--target", str(site), check=False)
        assert r.returncode == 0 and tree_map(site) == pristine_map, out(r)
        remove_tree(site)
    site = link_tree(template, tmp_path / "error")
    p = run_apply("apply", "--target", str(site), check=False,
                  env={"NSA_FASTPATH_FAULT_AT": str(steps // 2), "NSA_FASTPATH_FAULT_MODE": "error"})
    assert p.returncode == 5 and "rolled back" in p.stderr, out(p)
    assert tree_map(site) == pristine_map
    assert tree_map(template) == pristine_map, "the session template was written into"
