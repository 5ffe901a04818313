"""overlay/ and patches/ (and manifest.tsv) must never drift: each is regenerated from the other."""
import hashlib
import subprocess
import sys
import zipfile

from conftest import ROOT, WHEEL

OVERLAY = ROOT / "overlay"


def test_patches_and_manifest_regenerate_from_overlay():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "regen.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_git_am_of_patches_onto_pristine_gives_overlay(tmp_path):
    """The other direction: pristine 0.5.8 files + `git am patches/*` == overlay, byte for byte."""
    overlay_files = sorted(p.relative_to(OVERLAY).as_posix() for p in OVERLAY.rglob("*")
                           if p.is_file() and "__pycache__" not in p.parts)
    repo = tmp_path / "sglang"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)

    repo.mkdir()
    git("init", "-q")
    with zipfile.ZipFile(WHEEL) as zf:
        for rel in overlay_files:
            if rel in zf.namelist():
                (repo / "python" / rel).parent.mkdir(parents=True, exist_ok=True)
                (repo / "python" / rel).write_bytes(zf.read(rel))
    git("add", "-A")
    git("commit", "-q", "-m", "pristine")
    git("am", "-q", *sorted(str(p) for p in (ROOT / "patches").glob("*.patch")))
    for rel in overlay_files:
        got = (repo / "python" / rel).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256((OVERLAY / rel).read_bytes()).digest(), rel


def test_manifest_hashes_match_overlay_and_wheel():
    with zipfile.ZipFile(WHEEL) as zf:
        for line in (ROOT / "manifest.tsv").read_text().splitlines():
            if line.startswith("#"):
                continue
            kind, rel, pristine, patched = line.split("\t")
            assert hashlib.sha256((OVERLAY / rel).read_bytes()).hexdigest() == patched, rel
            if kind == "replace":
                assert hashlib.sha256(zf.read(rel)).hexdigest() == pristine, rel
            else:
                assert kind == "add" and pristine == "-" and rel not in zf.namelist(), rel
