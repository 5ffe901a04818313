"""scripts/apply.sh when SGLang is upgraded or downgraded under the patch set.

The operator's path, for real: SGLang release A in a virtual environment, `apply`, then
`pip install --force-reinstall --no-deps` of release B into the same environment (pip removes
A's files by its RECORD, installs B's, and leaves ours: it does not list them). Then `status`
names what happened and prints the commands; each printed command is run as printed, and the
tree ends byte for byte as a clean install of B, patched (apply) or not (revert). For the
pairs of release sets in manifests/ (every set with the base release, both ways, and each with
its neighbours: sets added later are covered), a release without a set, `pip uninstall`
afterwards, an interrupted upgrade-apply, and git checkouts (a tag checked out, or a merge
under our commits).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from applytools import (
    FILES_ONLY, Venv, inode_index, link_tree, make_manifest, out, piponly_dir, remove_tree,
    run_apply, tree_map, wheel)
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import regen  # noqa: E402
from nsa_apply.releases import BUILT_IN_FROM, version_key  # noqa: E402

RELEASES = sorted((p.stem for p in (ROOT / "manifests").glob("*.tsv")), key=version_key)
BASE = regen.BASE
# A release pinned in scripts/regen.py without a set (0.5.15: deliberately not supported).
UNSUPPORTED = next(r for r in ["0.5.15", *sorted(regen.WHEELS, key=version_key)]
                   if r not in RELEASES)


def upgrade_pairs() -> list[tuple[str, str]]:
    pairs = {(a, b) for r in RELEASES if r != BASE for a, b in ((BASE, r), (r, BASE))}
    pairs |= {p for a, b in zip(RELEASES, RELEASES[1:]) for p in ((a, b), (b, a))}
    return sorted(pairs, key=lambda p: (version_key(p[0]), version_key(p[1])))


PAIRS = upgrade_pairs()


def rows(release: str) -> list[tuple[str, str, str, str]]:
    return [tuple(ln.split("\t")) for ln in regen.manifest_path(release).read_text().splitlines()
            if ln and not ln.startswith("#")]


def n_added(release: str) -> int:
    return sum(1 for kind, *_ in rows(release) if kind == "add")


def verb(a: str, b: str) -> str:
    return "upgraded" if version_key(a) < version_key(b) else "downgraded"


@pytest.fixture(scope="session")
def piponly(tmp_path_factory) -> Path:
    return piponly_dir(tmp_path_factory.mktemp("piponly"))


@pytest.fixture(scope="session")
def clean(tmp_path_factory, piponly):
    """release -> (tree map of a clean install of it, of that install patched by apply.sh)."""
    made = {}

    def get(release: str) -> tuple[dict, dict | None]:
        if release not in made:
            v = Venv(tmp_path_factory.mktemp(f"clean-{release}") / "venv", piponly)
            v.install(release)
            pristine = site_map(v.site)
            patched = None
            if release in RELEASES:
                run_apply("apply", "--target", str(v.site))
                patched = site_map(v.site)
            made[release] = (pristine, patched)
        return made[release]

    return get


def site_map(site: Path, known: dict | None = None) -> dict:
    """tree_map of a venv's site-packages; in pip's RECORD, the lines of the venv's bin/
    scripts (outside site-packages, their hash covers the venv's own path) are left out.
    known: applytools.inode_index of a tree this one is hard-linked from."""
    m = tree_map(site, known)
    for record in site.glob("sglang-*.dist-info/RECORD"):
        kept = [ln for ln in record.read_text().splitlines() if not ln.startswith("../")]
        m[str(record.relative_to(site))] = "RECORD without bin/: " + "\n".join(kept)
    return m


def upgraded(tmp_path: Path, piponly: Path, a: str, b: str) -> Venv:
    """A venv with SGLang a, patched through the default target ($PYTHON's SGLang), then
    replaced by b with pip."""
    v = Venv(tmp_path / "venv", piponly).install(a)
    p = run_apply("apply", env={"PYTHON": str(v.python)})
    assert f"nsa-fastpath set: sglang=={a}" in p.stdout, out(p)
    return v.install(b, force=True)


def status(site: Path) -> subprocess.CompletedProcess:
    return run_apply("status", "--target", str(site), env=FILES_ONLY, check=False)


def printed(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in\n{text}"
    return m.group(1)


def run_printed(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **FILES_ONLY})


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_upgrade_then_apply_or_revert(a, b, tmp_path, piponly, clean):
    pristine_b, patched_b = clean(b)
    v = upgraded(tmp_path, piponly, a, b)
    copy = link_tree(v.site, tmp_path / "copy")  # the same upgraded tree, for revert
    st = status(v.site)
    ctx = out(st)
    assert st.returncode == 7 and f"overall: {verb(a, b)}" in st.stdout, ctx
    assert (f"SGLang was {verb(a, b)} from {a} to {b} while patched; {n_added(a)} of our files "
            f"are left from the {a} set") in st.stdout, ctx
    assert f"nsa-fastpath set for SGLang {b}: sglang=={b} (not applied)" in st.stdout, ctx
    assert "nsa-fastpath set: " not in st.stdout and "foreign" not in st.stdout, ctx
    apply = printed(st.stdout, r"To patch it: (bash \S+ apply --target \S+) ")
    revert = printed(st.stdout, r"keep SGLang's own code: (bash \S+ revert --target \S+)")

    p = run_printed(apply)
    assert p.returncode == 0 and f"SGLang was {verb(a, b)} from {a} to {b}" in p.stdout, out(p)
    assert site_map(v.site) == patched_b, "apply did not end as a clean install of " \
        f"{b}, patched\n{out(p)}"
    st = status(v.site)
    assert st.returncode == 0 and "overall: patched" in st.stdout, out(st)
    assert f"nsa-fastpath set: sglang=={b}" in st.stdout, out(st)
    r = run_apply("revert", "--target", str(v.site))
    assert site_map(v.site) == pristine_b, out(r)

    r = run_printed(revert.replace(str(v.site), str(copy)))
    assert r.returncode == 0 and "reverted:" in r.stdout, out(r)
    assert f"the {n_added(a)} file(s) nsa-fastpath added are removed" in r.stdout, out(r)
    assert site_map(copy) == pristine_b, f"revert did not end as a clean install of {b}\n{out(r)}"
    st = status(copy)
    assert st.returncode == 0 and "overall: pristine" in st.stdout, out(st)


@pytest.mark.parametrize("a", RELEASES)
def test_upgrade_to_a_release_without_a_set(a, tmp_path, piponly, clean):
    """SGLang upgraded to a release nsa-fastpath has no set for: status says so; apply refuses
    (nothing changed) and names revert; revert removes what is left and says so, ending a clean
    install of that release (its files are recognised by the sha256 in pip's RECORD)."""
    b = UNSUPPORTED
    pristine_b, _ = clean(b)
    v = upgraded(tmp_path, piponly, a, b)
    st = status(v.site)
    assert st.returncode == 7 and f"overall: {verb(a, b)}" in st.stdout, out(st)
    assert f"SGLang {b} is installed here, a release nsa-fastpath has no set for" in st.stdout
    assert f"SGLang was {verb(a, b)} from {a} to {b} while patched; {n_added(a)} file(s) of " \
        f"nsa-fastpath's and its state directory are left here from the {a} set" in st.stdout
    before = site_map(v.site)
    p = run_apply("apply", "--target", str(v.site), check=False)
    assert p.returncode == 4 and "Nothing changed" in p.stderr, out(p)
    if BUILT_IN_FROM is not None and version_key(b) >= version_key(BUILT_IN_FROM):
        assert f"SGLang {b} computes this replay metadata itself" in p.stderr, out(p)
    else:
        assert f"regen.py --release {b} --port" in p.stderr, out(p)
    assert site_map(v.site) == before
    revert = printed(p.stderr, r"Remove them with: (bash \S+ revert --target \S+)")
    assert revert == printed(st.stdout, r"with: (bash \S+ revert --target \S+)")
    r = run_printed(revert)
    assert r.returncode == 0 and f"SGLang {b}'s own files are in place" in r.stdout, out(r)
    assert site_map(v.site) == pristine_b, out(r)
    st = status(v.site)
    assert st.returncode == 4 and "overall: unsupported" in st.stdout, out(st)


def test_pip_uninstall_after_an_upgrade(tmp_path, piponly):
    """Patched, upgraded, then `pip uninstall sglang`: what is left is ours (the old set's
    files and state); status says uninstalled, revert removes it, and nothing remains."""
    b = RELEASES[-1] if RELEASES[-1] != BASE else RELEASES[0]
    v = upgraded(tmp_path, piponly, BASE, b)
    v.pip("uninstall", "-y", "sglang")
    st = status(v.site)
    assert st.returncode == 7 and "overall: uninstalled" in st.stdout, out(st)
    revert = printed(st.stdout, r"Remove them with: (bash \S+ revert --target \S+)")
    r = run_printed(revert)
    assert r.returncode == 0 and "removed nsa-fastpath's leftovers" in r.stdout, out(r)
    assert list(v.site.iterdir()) == [], "nothing left: as after uninstalling a pristine SGLang"


def test_upgrade_over_another_nsa_fastpath_version(tmp_path, piponly, clean):
    """The set recorded is another nsa-fastpath version's (its own bytes for a file we add and
    one we replace), and SGLang was upgraded since: that version's added file is ours, of
    another set; apply replaces it with the new release's, revert removes it."""
    b = next(r for r in RELEASES if version_key(r) > version_key(BASE))
    pristine_b, patched_b = clean(b)
    added = next(rel for kind, rel, _, _ in rows(BASE) if kind == "add")
    replaced = next(rel for kind, rel, _, _ in rows(BASE) if kind == "replace")
    other = make_manifest(tmp_path / "other-version", {added: b"# an older module\n"},
                          {replaced: b"# an older fork\n"})
    v = Venv(tmp_path / "venv", piponly).install(BASE)
    run_apply("apply", "--target", str(v.site), env=other)
    v.install(b, force=True)
    copy = link_tree(v.site, tmp_path / "copy")
    st = status(v.site)
    assert st.returncode == 7 and f"upgraded from {BASE} to {b} while patched; 1 of our files " \
        f"are left from the {BASE} set" in st.stdout, out(st)
    assert f"  left      {added}" in st.stdout, out(st)
    p = run_apply("apply", "--target", str(v.site))
    assert site_map(v.site) == patched_b, out(p)
    r = run_apply("revert", "--target", str(copy))
    assert f"removed {added} (left from the {BASE} set)" in r.stdout, out(r)
    assert site_map(copy) == pristine_b, out(r)


def test_forget_state_after_an_upgrade_works_from_the_files(tmp_path, piponly, clean):
    """A damaged state directory on an upgraded tree: revert --forget-state works from the set
    the files fit (the new release's), as it says, and ends a clean install of it."""
    b = next(r for r in RELEASES if version_key(r) > version_key(BASE))
    pristine_b, _ = clean(b)
    v = upgraded(tmp_path, piponly, BASE, b)
    (v.site / "sglang" / ".nsa_fastpath" / "journal").write_text("garbage\n")
    st = status(v.site)
    assert st.returncode == 6 and "overall: damaged" in st.stdout, out(st)
    r = run_apply("revert", "--forget-state", "--target", str(v.site))
    assert "working from the release set whose files the tree holds" in r.stdout, out(r)
    assert f"nsa-fastpath set: sglang=={b}" in r.stdout, out(r)
    assert site_map(v.site) == pristine_b, out(r)


# ------------------------------------------------------------------ an interrupted upgrade-apply
SWEEP = [p for p in [(BASE, RELEASES[RELEASES.index(BASE) + 1])] if p in PAIRS] \
    if BASE in RELEASES[:-1] else []


@pytest.mark.parametrize("a,b", SWEEP)
def test_upgrade_apply_interrupted_at_every_step(a, b, tmp_path, piponly, clean):
    """The apply that replaces the old set: an error at any step rolls back to the upgraded
    tree (exit 5); a kill -9 at any step leaves a tree that status describes truly, and a rerun
    of apply ends patched for the new release, of revert (on a copy) its clean install."""
    pristine_b, patched_b = clean(b)
    start = upgraded(tmp_path, piponly, a, b).site
    start_map = site_map(start)
    known = inode_index(start)  # the cases are hard links of it: hash only what apply wrote
    trace = link_tree(start, tmp_path / "trace")
    p = run_apply("apply", "--target", str(trace), env={"NSA_FASTPATH_TRACE": "1"})
    steps = sum(1 for ln in p.stdout.splitlines() if ln.startswith("[nsa-fastpath] step "))
    assert steps > 10 and site_map(trace, known) == patched_b, out(p)
    remove_tree(trace)

    def case(n: int) -> None:
        site = link_tree(start, tmp_path / f"error-{n}")
        p = run_apply("apply", "--target", str(site), check=False,
                      env={"NSA_FASTPATH_FAULT_AT": str(n), "NSA_FASTPATH_FAULT_MODE": "error"})
        assert p.returncode == 5 and "rolled back" in p.stderr, f"error at {n}\n{out(p)}"
        assert site_map(site, known) == start_map, f"error at step {n}: not rolled back\n{out(p)}"
        remove_tree(site)

        site = link_tree(start, tmp_path / f"kill-{n}")
        p = run_apply("apply", "--target", str(site), check=False,
                      env={"NSA_FASTPATH_FAULT_AT": str(n), "NSA_FASTPATH_FAULT_MODE": "kill"})
        ctx = f"(killed at step {n} of {steps})\n{out(p)}"
        assert p.returncode == -9, ctx
        st = status(site)
        if st.returncode == 0:  # status may only claim a state the tree really is in
            assert site_map(site, known) == (patched_b if "overall: patched" in st.stdout
                                             else pristine_b), ctx + st.stdout
        else:
            assert st.returncode == 7 and re.search(r"overall: (partial|upgraded|downgraded)",
                                                    st.stdout), ctx + out(st)
        other = link_tree(site, tmp_path / f"kill-{n}-revert")
        r = run_apply("apply", "--target", str(site), check=False)
        assert r.returncode == 0 and site_map(site, known) == patched_b, ctx + out(r)
        r = run_apply("revert", "--target", str(other), check=False)
        assert r.returncode == 0 and site_map(other, known) == pristine_b, ctx + out(r)
        remove_tree(site)
        remove_tree(other)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for f in [pool.submit(case, n) for n in range(1, steps + 1)]:
            f.result()  # re-raises a failure
    assert site_map(start) == start_map, "apply.sh wrote into a file in place"


# ------------------------------------------------------------------ git checkouts
def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def checkout_of_releases(tmp_path: Path) -> Path:
    """A git repository laid out like SGLang's, one tagged commit per release with a set (in
    release order, as upstream's history): the files any set replaces, from each wheel."""
    repo = tmp_path / "sglang"
    paths = sorted({rel for r in RELEASES for kind, rel, _, _ in rows(r) if kind == "replace"})
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "config", "user.name", "Test Operator")
    git(repo, "config", "user.email", "operator@example.invalid")
    for release in RELEASES:
        with zipfile.ZipFile(wheel(release)) as zf:
            names = set(zf.namelist())
            for rel in paths:
                dest = repo / "python" / rel
                if rel in names:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(zf.read(rel))
                elif dest.exists():
                    dest.unlink()
        (repo / "python" / "pyproject.toml").write_text(
            f'[project]\nname = "sglang"\nversion = "{release}"\n')
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"SGLang v{release}")
        git(repo, "tag", f"v{release}")
    return repo


def git_status(repo: Path) -> subprocess.CompletedProcess:
    return run_apply("status", "--git", str(repo), env=FILES_ONLY, check=False)


def files_at(repo: Path, ref: str) -> str:
    return git(repo, "ls-tree", "-r", ref, "--", "python")


GIT_PAIRS = [p for p in PAIRS if BASE in p]


@pytest.mark.parametrize("a,b", GIT_PAIRS, ids=[f"{a}-to-{b}" for a, b in GIT_PAIRS])
def test_git_checkout_of_another_release(a, b, tmp_path):
    """Patched with apply --git on release a, then `git checkout v<b>`: git drops our commits
    with a's files; status says pristine for b, apply --git patches b, revert --git ends
    exactly at v<b>."""
    repo = checkout_of_releases(tmp_path)
    git(repo, "checkout", "-q", "-b", "serve", f"v{a}")
    run_apply("apply", "--git", str(repo))
    git(repo, "checkout", "-q", f"v{b}")
    st = git_status(repo)
    assert st.returncode == 0 and "overall: pristine" in st.stdout, out(st)
    assert f"nsa-fastpath set: sglang=={b}" in st.stdout, out(st)
    run_apply("apply", "--git", str(repo))
    st = git_status(repo)
    assert st.returncode == 0 and "overall: patched" in st.stdout, out(st)
    run_apply("revert", "--git", str(repo))
    assert git(repo, "diff", f"v{b}", "HEAD", "--", "python") == "", "not v" + b
    assert git(repo, "status", "--porcelain") == ""


UPGRADES = [(a, b) for a, b in GIT_PAIRS if version_key(a) < version_key(b)]


@pytest.mark.parametrize("a,b", UPGRADES, ids=[f"{a}-to-{b}" for a, b in UPGRADES])
def test_git_merge_of_a_newer_release_under_our_commits(a, b, tmp_path):
    """Patched with apply --git on release a, then `git merge v<b>` (upstream's history
    under our commits). Where git merges it cleanly, status names our commits in effect on b's
    files and the way out; revert --git reverts them, ending at b's own files, and apply --git
    patches b. Where the merge conflicts, apply.sh leaves the merge alone; after
    `git merge --abort`, the documented order (revert --git, merge, apply --git) works."""
    repo = checkout_of_releases(tmp_path)
    git(repo, "checkout", "-q", "-b", "serve", f"v{a}")
    run_apply("apply", "--git", str(repo))
    merge = subprocess.run(["git", "-C", str(repo), "merge", "-q", "--no-edit", f"v{b}"],
                           capture_output=True, text=True)
    if merge.returncode != 0:
        st = git_status(repo)
        assert st.returncode == 7 and "a git merge is in progress (not started by apply.sh)" \
            in st.stdout, out(st)
        p = run_apply("revert", "--git", str(repo), check=False)
        assert p.returncode == 6 and "git merge --abort" in p.stderr, out(p)
        git(repo, "merge", "--abort")
        run_apply("revert", "--git", str(repo))
        git(repo, "merge", "-q", "--no-edit", f"v{b}")
    else:
        st = git_status(repo)
        assert st.returncode == 4 and "overall: foreign" in st.stdout, out(st)
        assert "nsa-fastpath's commits are in effect" in st.stdout, out(st)
        revert = printed(st.stdout, r"Revert them first .*?: (bash \S+ revert --git \S+);")
        r = run_printed(revert)
        assert r.returncode == 0 and f"the files are SGLang {b}'s own" in r.stdout, out(r)
    assert files_at(repo, "HEAD") == files_at(repo, f"v{b}")
    run_apply("apply", "--git", str(repo))
    st = git_status(repo)
    assert st.returncode == 0 and "overall: patched" in st.stdout, out(st)
    assert f"nsa-fastpath set: sglang=={b}" in st.stdout, out(st)
    shutil.rmtree(repo)
