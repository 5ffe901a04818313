"""overlay/ and each release's patches/ and manifest must never drift: each is regenerated from
the other, for every release set in manifests/."""
import hashlib
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
