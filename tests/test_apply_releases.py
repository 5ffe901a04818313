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
from harness import releases  # noqa: E402
from nsa_apply import series  # noqa: E402

OTHERS = sorted(p.stem for p in (ROOT / "manifests").glob("*.tsv")
                if p.stem != regen.BASE)


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
    files = regen.release_files(release)
    assert sorted(files) == sorted(rel for _, rel, _, _ in rows(release))
    for kind, rel, _, patched in rows(release):
        assert (root / rel).read_bytes() == files[rel], rel


@pytest.mark.parametrize("release", OTHERS + sorted(regen.SERVED_BY))
def test_apply_status_revert_round_trip(release, release_trees, tmp_path):
    """(A release whose files are another's byte for byte gets that release's set.)"""
    template, pristine_map = release_trees(release)
    site = link_tree(template, tmp_path / "site")
    p = run_apply("apply", "--target", str(site))
    rs = regen.SERVED_BY.get(release, release)
    assert f"nsa-fastpath set: sglang=={rs}" in p.stdout, out(p)
    assert_patched_with(rs, site)
    st = status(["--target", str(site)])
    assert st.returncode == 0 and "overall: patched" in st.stdout, out(st)
    assert f"nsa-fastpath set: sglang=={rs}" in st.stdout, out(st)
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
import importlib, os, sys
backend = sys.argv[1]
sys.path[:0] = sys.argv[2:]
nb = importlib.import_module(backend)
import sglang.srt.mem_cache.radix_cache as rc
from sglang.srt.layers.attention.nsa import replay_fastpath as rf
from sglang.srt.mem_cache import radix_match
assert nb.replay_fastpath is rf
assert rc.make_walker is radix_match.make_walker and hasattr(rc.RadixCache, "_nsa_init_matcher")
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
    subprocess.run(["bash", str(ROOT / "scripts" / "release_deps.sh"), release], check=True,
                   stdout=subprocess.DEVNULL)  # what the release imports beyond the venv
    backend = ("sglang.srt.layers.attention." +
               ("dsa_backend" if releases.dsa_named(release) else "nsa_backend"))
    paths = [str(site), *map(str, releases.deps_dirs(release)), str(standins / "cpu"),
             str(standins)]
    p = subprocess.run([sys.executable, "-c", IMPORT_CHECK, backend, *paths],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
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


@pytest.mark.parametrize("release", OTHERS)
def test_git_checkout_round_trip(release, tmp_path):
    repo = checkout(release, tmp_path)
    before = tree_map(repo / "python")
    head0 = git(repo, "rev-parse", "HEAD").strip()
    p = run_apply("apply", "--git", str(repo))
    assert_patched_with(release, repo / "python")
    assert git(repo, "status", "--porcelain") == "", out(p)
    n_patches = len({series.area(rel) for _, rel, _, _ in rows(release)})
    assert len(git(repo, "log", "--format=%H", f"{head0}..").split()) == n_patches
    st = status(["--git", str(repo)])
    assert st.returncode == 0 and "overall: patched" in st.stdout, out(st)
    assert f"nsa-fastpath set: sglang=={release}" in st.stdout, out(st)
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
    # status says the same, and nothing that contradicts it (no set named as the tree's)
    st = status(["--target", str(site)])
    assert st.returncode == 4 and "overall: foreign" in st.stdout, out(st)
    assert f"fits none of nsa-fastpath's release sets" in st.stdout, out(st)
    assert f"{rel}: SGLang {other}'s original" in st.stdout, out(st)
    assert "nsa-fastpath set" not in st.stdout and "its files are not" not in st.stdout, out(st)


@pytest.mark.parametrize("release", OTHERS)
def test_refuses_a_release_without_a_set(release, release_trees, tmp_path):
    """The release's real tree, with an nsa-fastpath checkout that lacks its set: apply refuses,
    naming the supported releases and the port command for this release; revert has nothing
    to do (its files are SGLang's own, by their RECORD); status says so. Nothing changed."""
    template, _ = release_trees(release)
    site = link_tree(template, tmp_path / "site")
    repo = tmp_path / "nsa-fastpath"
    for name in ("scripts", "overlay", "manifests", "patches"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "manifests" / f"{release}.tsv").unlink()
    (repo / "patches" / f"{release}.diff").unlink()
    before = tree_map(site)

    def run(cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(repo / "scripts" / "apply.sh"), cmd, "--target",
                               str(site)], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                   **FILES_ONLY})

    p = run("apply")
    assert p.returncode == 4 and "Nothing changed" in p.stderr, out(p)
    assert f"regen.py --release {release} --port" in p.stderr, out(p)
    assert f"SGLang {release} is installed in {site}: a release nsa-fastpath has no set for" \
        in p.stderr and "its own (their sha256 as in its RECORD)" in p.stderr, out(p)
    supported = p.stderr.split("supported: ", 1)[1].split(")", 1)[0].split(", ")
    assert sorted(supported) == sorted(set(OTHERS + [regen.BASE]) - {release}), out(p)
    r = run("revert")
    assert r.returncode == 0 and "already pristine" in r.stdout, out(r)
    st = run("status")
    assert st.returncode == 4 and "overall: unsupported" in st.stdout, out(st)
    assert "nsa-fastpath set:" not in st.stdout, out(st)
    assert tree_map(site) == before and not (site / "sglang" / ".nsa_fastpath").exists()


# The first pinned release whose own replay metadata is fused (nsa_apply.releases.BUILT_IN_FROM).
BUILT_IN = next((r for r in sorted(regen.WHEELS, key=releases._key)
                 if releases.own_fused_metadata(r) and not releases.has_set(r)), None)


@pytest.mark.skipif(BUILT_IN is None, reason="no pinned release computes its own fused metadata")
def test_release_with_fused_replay_metadata_refused(release_trees, tmp_path):
    """A release that computes the replay metadata itself (0.5.15 on): apply refuses saying so
    and naming the supported range, nothing changed; revert has nothing to do, status says
    unsupported. With BUILT_IN_FROM flipped to None (the lead's switch) the same tree gets the
    advice to port, as any other release without a set."""
    from nsa_apply import releases as apply_releases

    assert apply_releases.BUILT_IN_FROM == BUILT_IN, "BUILT_IN_FROM names the first such release"
    template, _ = release_trees(BUILT_IN)
    site = link_tree(template, tmp_path / "site")
    before = tree_map(site)
    supported = sorted(OTHERS + [regen.BASE], key=releases._key)
    p = run_apply("apply", "--target", str(site), check=False)
    assert p.returncode == 4, out(p)
    assert (f"SGLang {BUILT_IN} computes this replay metadata itself (fused Triton kernels, from "
            f"{BUILT_IN}): nsa-fastpath supports {supported[0]} to {supported[-1]} and has no "
            f"set for {BUILT_IN} or later. Nothing changed.") in p.stderr, out(p)
    assert "--port" not in p.stderr, out(p)
    r = run_apply("revert", "--target", str(site), check=False)
    assert r.returncode == 0 and "already pristine" in r.stdout, out(r)
    st = status(["--target", str(site)])
    assert st.returncode == 4 and "overall: unsupported" in st.stdout, out(st)
    assert f"SGLang {BUILT_IN} computes this replay metadata itself" in st.stdout, out(st)
    assert tree_map(site) == before and not (site / "sglang" / ".nsa_fastpath").exists()

    repo = checkout_copy(tmp_path)  # the switch flipped: port advice
    module = repo / "scripts" / "nsa_apply" / "releases.py"
    text = module.read_text()
    assert text.count(f'BUILT_IN_FROM: str | None = "{BUILT_IN}"') == 1
    module.write_text(text.replace(f'BUILT_IN_FROM: str | None = "{BUILT_IN}"',
                                   "BUILT_IN_FROM: str | None = None"))
    p = subprocess.run(["bash", str(repo / "scripts" / "apply.sh"), "apply", "--target",
                        str(site)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert p.returncode == 4 and f"regen.py --release {BUILT_IN} --port" in p.stderr, out(p)
    assert "computes this replay metadata itself" not in p.stderr, out(p)
    assert tree_map(site) == before


def checkout_copy(tmp_path: Path) -> Path:
    """This nsa-fastpath checkout's scripts and stored files, copied (to be damaged)."""
    repo = tmp_path / "nsa-fastpath"
    for name in ("scripts", "overlay", "manifests", "patches"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def damaged(text: str, how: str) -> str:
    """A delta whose first hunk of environ.py no longer fits SGLang's file (`context`), or
    still applies but gives other bytes than the manifest's (`added`), or no delta (`syntax`)."""
    head, sep, rest = text.partition("\n@@ ")
    body = rest.split("\n")
    if how == "context":
        i = next(i for i, ln in enumerate(body) if ln.startswith(" "))
    elif how == "added":
        i = next(i for i, ln in enumerate(body) if ln.startswith("+"))
    else:
        return head + sep + rest.replace("\n+", "\n?", 1)
    body[i] = body[i][0] + "# changed: " + body[i][1:]
    return head + sep + "\n".join(body)


@pytest.mark.parametrize("how", ["context", "added", "syntax"])
def test_a_delta_that_does_not_give_our_files_changes_nothing(how, release_trees, tmp_path):
    """apply materializes each fork from the target's own file and the delta and checks it
    against the manifest before the first change: a delta that does not fit, or gives other
    bytes, or does not parse is exit 3 with nothing changed, also for --git and for a tree
    that holds our files already (their originals are then undone from ours, and checked)."""
    release = OTHERS[-1]
    template, pristine_map = release_trees(release)
    repo = checkout_copy(tmp_path)
    script = repo / "scripts" / "apply.sh"
    delta = repo / "patches" / f"{release}.diff"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **FILES_ONLY}

    def run(*args):
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                              env=env)

    patched = link_tree(template, tmp_path / "patched")
    assert run("apply", "--target", str(patched)).returncode == 0
    shutil.rmtree(patched / "sglang" / ".nsa_fastpath")  # ours, with no backup: undone, checked
    p = run("apply", "--target", str(patched))
    assert p.returncode == 0 and "already applied" in p.stdout, out(p)
    patched_map = tree_map(patched)

    delta.write_text(damaged(delta.read_text(), how))
    site = link_tree(template, tmp_path / "site")
    git_repo = checkout(release, tmp_path)
    git_before, head = tree_map(git_repo), git(git_repo, "rev-parse", "HEAD")
    for target, before in ((["--target", str(site)], pristine_map),
                           (["--target", str(patched)], patched_map),
                           (["--git", str(git_repo)], git_before)):
        p = run("apply", *target)
        assert p.returncode == 3, out(p)
        assert f"our files and {repo / 'manifests' / release}.tsv disagree" in p.stderr, out(p)
        assert f"{delta}" in p.stderr and "Nothing changed" in p.stderr, out(p)
        assert tree_map(Path(target[1])) == before, out(p)
    assert git(git_repo, "rev-parse", "HEAD") == head


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
