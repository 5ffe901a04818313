"""overlay/ and each release's patches/ and manifest must never drift: each is regenerated from
the other, for every release set in manifests/. And every release's forks are the port of our
0.5.8 forks (`regen.py --port`): the merge output byte for byte, or, where the merge conflicted,
everything outside the hand-resolved conflicts."""
import hashlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import regen  # noqa: E402

RELEASES = sorted(p.stem for p in (ROOT / "manifests").glob("*.tsv"))


def wheel(release: str):
    path = regen.default_wheel(release)
    if not path.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def test_every_release_set_is_a_supported_release():
    assert RELEASES and set(RELEASES) == set(regen.RELEASES)


@pytest.mark.parametrize("release,serving", sorted(regen.SERVED_BY.items()))
def test_a_release_served_by_another_set_has_its_files_byte_for_byte(release, serving):
    """apply.sh chooses a set by the sha256 of the files it replaces: a release whose files are
    another's byte for byte is served by that set (regen.SERVED_BY), and by no set of its own."""
    assert release not in RELEASES and serving in RELEASES
    with zipfile.ZipFile(wheel(release)) as zf:
        for line in regen.manifest_path(serving).read_text().splitlines():
            if line.startswith("#"):
                continue
            kind, rel, pristine, _ = line.split("\t")
            if kind == "replace":
                assert hashlib.sha256(zf.read(rel)).hexdigest() == pristine, rel
            else:
                assert rel not in zf.namelist(), rel


def test_apply_and_regen_agree_on_which_shared_modules_a_set_has():
    from nsa_apply import manifest  # scripts/ is on sys.path

    assert manifest.SHARED_WITH_FORK == regen.SHARED_WITH_FORK


@pytest.mark.parametrize("release", RELEASES)
def test_patches_and_manifest_regenerate_from_overlay(release):
    wheel(release)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "regen.py"), "--check",
                           "--release", release], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("release", RELEASES)
def test_git_am_of_patches_onto_pristine_gives_overlay(tmp_path, release):
    """The other direction: pristine files + `git am patches/<release>/*` == the release's
    overlay, byte for byte."""
    files = regen.overlay_files(release)
    repo = tmp_path / "sglang"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)

    repo.mkdir()
    git("init", "-q")
    with zipfile.ZipFile(wheel(release)) as zf:
        for rel in files:
            if rel in zf.namelist():
                (repo / "python" / rel).parent.mkdir(parents=True, exist_ok=True)
                (repo / "python" / rel).write_bytes(zf.read(rel))
    git("add", "-A")
    git("commit", "-q", "-m", "pristine")
    git("am", "-q", *sorted(str(p) for p in regen.patches_dir(release).glob("*.patch")))
    for rel, src in files.items():
        got = (repo / "python" / rel).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(src.read_bytes()).digest(), rel


@pytest.mark.parametrize("release", RELEASES)
def test_manifest_hashes_match_overlay_and_wheel(release):
    files = regen.overlay_files(release)
    with zipfile.ZipFile(wheel(release)) as zf:
        for line in regen.manifest_path(release).read_text().splitlines():
            if line.startswith("#"):
                continue
            kind, rel, pristine, patched = line.split("\t")
            assert hashlib.sha256(files[rel].read_bytes()).hexdigest() == patched, rel
            if kind == "replace":
                assert hashlib.sha256(zf.read(rel)).hexdigest() == pristine, rel
            else:
                assert kind == "add" and pristine == "-" and rel not in zf.namelist(), rel


@pytest.mark.parametrize("release", [r for r in RELEASES if r not in regen.HAND_PORTED])
def test_release_forks_are_the_port_of_our_base_forks(release):
    wheel(release)
    wheel(regen.SGLANG_VERSION)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "regen.py"), "--port", "--check",
                           "--release", release], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def repo_copy(tmp_path):
    """What regen.py reads and writes, copied (the wheels linked): a port may write there."""
    dst = tmp_path / "repo"
    for name in ("scripts", "overlay", "manifests", "patches"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / ".cache").mkdir()
    (dst / ".cache" / "wheels").symlink_to((ROOT / ".cache" / "wheels").resolve())
    return dst


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def port(repo, release):
    return subprocess.run([sys.executable, str(repo / "scripts" / "regen.py"), "--port",
                           "--release", release], capture_output=True, text=True)


@pytest.mark.parametrize("release", [regen.SGLANG_VERSION, "0.5.8.post1"])
def test_port_command_remakes_the_committed_set(tmp_path, release):
    """`regen.py --release X --port` from nothing but our base forks and X's wheel gives the
    committed set byte for byte (for the base release itself: the identity)."""
    wheel(release)
    wheel(regen.SGLANG_VERSION)
    repo = repo_copy(tmp_path)
    if release != regen.SGLANG_VERSION:
        shutil.rmtree(repo / "overlay" / release)
        shutil.rmtree(repo / "patches" / release)
        (repo / "manifests" / f"{release}.tsv").unlink()
    proc = port(repo, release)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("overlay", "manifests", "patches"):
        assert tree_bytes(repo / name) == tree_bytes(ROOT / name), name


def test_port_reports_a_conflict_and_leaves_markers(tmp_path):
    """A base fork line that the release changed too: exit 1, file:line and both sides named,
    the fork left with markers, no manifest or patches written for it."""
    wheel("0.5.8.post1")
    wheel(regen.SGLANG_VERSION)
    repo = repo_copy(tmp_path)
    rel = "sglang/srt/environ.py"
    fork = repo / "overlay" / regen.SGLANG_VERSION / rel
    with zipfile.ZipFile(regen.default_wheel("0.5.8.post1")) as zf:
        theirs = zf.read(rel).decode()
    # 0.5.8.post1 adds a flag right before this line: our fork adds another one there
    anchor = "    SGLANG_JIT_DEEPGEMM_COMPILE_WORKERS"
    assert anchor in fork.read_text() and anchor in theirs
    fork.write_text(fork.read_text().replace(anchor, "    OURS_CONFLICTING = 1\n" + anchor, 1))
    for d in ("overlay/0.5.8.post1", "patches/0.5.8.post1"):
        shutil.rmtree(repo / d)
    (repo / "manifests" / "0.5.8.post1.tsv").unlink()
    proc = port(repo, "0.5.8.post1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    written = (repo / "overlay" / "0.5.8.post1" / rel).read_text().splitlines()
    marker = next(i for i, ln in enumerate(written, 1) if ln.startswith("<<<<<<< "))
    assert f"overlay/0.5.8.post1/{rel}:{marker}: conflict" in proc.stderr
    assert "OURS_CONFLICTING = 1" in proc.stderr and "SGLANG_JIT_DEEPGEMM_FAST_WARMUP" in proc.stderr
    assert not (repo / "manifests" / "0.5.8.post1.tsv").exists()
    check = subprocess.run([sys.executable, str(repo / "scripts" / "regen.py"), "--port",
                            "--check", "--release", "0.5.8.post1"], capture_output=True, text=True)
    assert check.returncode == 1 and "unresolved" in check.stdout, check.stdout


def port_check(repo, release):
    return subprocess.run([sys.executable, str(repo / "scripts" / "regen.py"), "--port",
                           "--check", "--release", release], capture_output=True, text=True)


@pytest.mark.parametrize("edit,words", [
    ("outside", "differs from the merge outside its conflicts"),
    ("drop-hook", "the resolution drops our line"),
])
def test_port_check_catches_a_bad_hand_resolution(tmp_path, edit, words):
    """A hand-resolved fork (0.5.9's nsa_backend.py) edited outside its conflict, or whose
    resolution lost our hook's line: --port --check fails and says which."""
    wheel("0.5.9")
    wheel(regen.SGLANG_VERSION)
    repo = repo_copy(tmp_path)
    fork = repo / "overlay" / "0.5.9" / "sglang/srt/layers/attention/nsa_backend.py"
    text = fork.read_text()
    assert port_check(repo, "0.5.9").returncode == 0
    if edit == "outside":
        text += "# a local edit\n"
    else:
        hook = "            # nsa-fastpath: one launch copies into every step backend\n"
        assert text.count(hook) == 1
        text = text.replace(hook, "")
    fork.write_text(text)
    proc = port_check(repo, "0.5.9")
    assert proc.returncode == 1 and words in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("release", regen.HAND_PORTED[1:])
def test_hand_ported_forks_are_the_first_ones_merged_onto_the_release(release, tmp_path):
    """Each later release's forks are the first hand-ported release's (0.5.13) merged onto it
    with `git merge-file`, cleanly, the notice naming the release."""
    first = regen.HAND_PORTED[0]
    assert regen.forks(release) == regen.forks(first)
    with zipfile.ZipFile(wheel(first)) as base_zf, zipfile.ZipFile(wheel(release)) as zf:
        for rel in regen.forks(first):
            paths = []
            for name, data in (("ours", (ROOT / "overlay" / first / rel).read_bytes()),
                               ("base", base_zf.read(rel)), ("theirs", zf.read(rel))):
                paths.append(tmp_path / name)
                paths[-1].write_bytes(data)
            proc = subprocess.run(["git", "merge-file", "-p", *map(str, paths)],
                                  capture_output=True)
            assert proc.returncode == 0, f"{rel}: the merge onto {release} conflicts"
            merged = proc.stdout.decode().replace(regen.NOTICE.format(release=first),
                                                  regen.NOTICE.format(release=release), 1)
            assert merged == (ROOT / "overlay" / release / rel).read_text(), rel


@pytest.mark.parametrize("release", RELEASES)
def test_every_fork_keeps_the_license_header_and_names_its_release(release):
    forks = regen.forks(release)
    assert forks
    for rel in forks:
        head = (ROOT / "overlay" / release / rel).read_text().splitlines()[:16]
        assert head[0].startswith("# Copyright") and "Apache License, Version 2.0" in head[1], rel
        assert any(ln.startswith("# MODIFIED by nsa-fastpath") for ln in head), rel
        notice = f"# {regen.NOTICE.format(release=release)};"  # e.g. Based on SGLang 0.5.9 (...);
        assert any(ln.startswith(notice) for ln in head), rel
