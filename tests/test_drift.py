"""Our change is stored once and every release's files are made from it exactly.

overlay/sglang/srt/ holds our forks of SGLang's files as written against the base release and
our modules; every other release stores its delta (patches/<release>.diff) and manifest. For
every release set, regenerated from the wheels: the manifest and the delta, the `git am` series
(the one apply.sh --git applies is the one `regen.py series` gives), `git am` of that series
onto the release's own files gives the set's files, and each delta is the port of our base
fork (`regen.py --port --check`: the merge byte for byte, resolved conflicts excepted). The
port keeps every resolution whose conflict is unchanged, reports new ones as file:line, and
imports whole forks (`--from`). The stored lines per release stay under a bound."""
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import APPLY, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import regen  # noqa: E402
from nsa_apply import delta as D  # noqa: E402

RELEASES = sorted(p.stem for p in (ROOT / "manifests").glob("*.tsv"))
OTHERS = [r for r in RELEASES if r != regen.BASE]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}


def fetch(*releases: str) -> None:
    for release in releases:
        if not regen.default_wheel(release).exists():
            subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release],
                           check=True, stdout=subprocess.DEVNULL)


def regen_py(*args: str, repo: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(repo / "scripts" / "regen.py"), *args],
                          capture_output=True, text=True)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env={**GIT_ENV, "HOME": str(repo)}).stdout


def test_every_release_set_is_a_supported_release():
    assert RELEASES and set(RELEASES) == set(regen.PORTS)
    assert set(regen.SUPPORTED) == set(regen.PORTS) | set(regen.SERVED_BY)
    assert sorted(p.name for p in (ROOT / "patches").iterdir()) == \
        sorted(f"{r}.diff" for r in OTHERS)



@pytest.mark.parametrize("release,serving", sorted(regen.SERVED_BY.items()))
def test_a_release_served_by_another_set_has_its_files_byte_for_byte(release, serving):
    """apply.sh chooses a set by the sha256 of the files it replaces: a release whose files are
    another's byte for byte is served by that set (regen.SERVED_BY), and by no set of its own."""
    assert release not in RELEASES and serving in RELEASES
    fetch(release)
    with zipfile.ZipFile(regen.default_wheel(release)) as zf:
        for line in regen.manifest_path(serving).read_text().splitlines():
            if line.startswith("#"):
                continue
            kind, rel, pristine, _ = line.split("\t")
            if kind == "replace":
                assert hashlib.sha256(zf.read(rel)).hexdigest() == pristine, rel
            else:
                assert rel not in zf.namelist(), rel

@pytest.mark.parametrize("release", RELEASES)
def test_manifest_and_delta_regenerate(release):
    fetch(release)
    p = regen_py("--check", "--release", release)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("release", RELEASES)
def test_manifest_hashes_match_the_files_and_the_wheel(release):
    fetch(release)
    files = regen.release_files(release)
    rows = [ln.split("\t") for ln in regen.manifest_path(release).read_text().splitlines()
            if not ln.startswith("#")]
    assert sorted(rel for _, rel, _, _ in rows) == sorted(files)
    with zipfile.ZipFile(regen.default_wheel(release)) as zf:
        for kind, rel, pristine, patched in rows:
            assert hashlib.sha256(files[rel]).hexdigest() == patched, rel
            if kind == "replace":
                assert hashlib.sha256(zf.read(rel)).hexdigest() == pristine, rel
            else:
                assert kind == "add" and pristine == "-" and rel not in zf.namelist(), rel


def pristine_checkout(release: str, repo: Path) -> str:
    """A git checkout of the release's files we replace (SGLang's layout); returns HEAD."""
    with zipfile.ZipFile(regen.default_wheel(release)) as zf:
        for rel in regen.forks(release):
            (repo / "python" / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / "python" / rel).write_bytes(zf.read(rel))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"SGLang v{release}")
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.mark.parametrize("release", RELEASES)
def test_git_am_of_the_series_onto_pristine_gives_the_set(tmp_path, release):
    """`regen.py series` (what an operator gets) onto the release's own files: the set's
    files, byte for byte, as apply.sh installs them; and the series apply.sh --git makes from
    the checkout's files is that series, byte for byte (format-patch of its commits)."""
    fetch(release)
    out = tmp_path / "series"
    p = regen_py("series", "--release", release, "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    patches = sorted(out.glob("*.patch"))
    repo = tmp_path / "am"
    head0 = pristine_checkout(release, repo)
    git(repo, "am", "-q", *map(str, patches))
    files = regen.release_files(release)
    got = {p.relative_to(repo / "python").as_posix(): p.read_bytes()
           for p in (repo / "python").rglob("*") if p.is_file()}
    assert got == files
    assert len(patches) == len(git(repo, "log", "--format=%H", f"{head0}..").split())

    repo = tmp_path / "apply"
    head0 = pristine_checkout(release, repo)
    p = subprocess.run(["bash", str(APPLY), "apply", "--git", str(repo)], capture_output=True,
                       text=True, env={**GIT_ENV, "HOME": str(tmp_path), "PYTHON": sys.executable})
    assert p.returncode == 0, p.stdout + p.stderr
    again = tmp_path / "again"
    git(repo, "format-patch", "-q", "--zero-commit", "--no-signature", "--full-index", "-o",
        str(again), f"{head0}..HEAD")
    assert {q.name: q.read_bytes() for q in sorted(again.iterdir())} == \
        {q.name: q.read_bytes() for q in patches}


@pytest.mark.parametrize("release", RELEASES)
def test_each_delta_is_the_port_of_our_base_fork(release):
    fetch(release, *filter(None, [regen.PORTS[release][0]]))
    p = regen_py("--port", "--check", "--release", release)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("release", RELEASES)
def test_every_fork_keeps_the_license_header_and_names_its_release(release):
    fetch(release)
    forks = regen.fork_texts(release)
    assert sorted(forks) == regen.forks(release)
    for rel, data in forks.items():
        head = data.decode().splitlines()[:16]
        assert head[0].startswith("# Copyright") and "Apache License, Version 2.0" in head[1], rel
        assert any(ln.startswith("# MODIFIED by nsa-fastpath") for ln in head), rel
        notice = f"# {regen.NOTICE.format(release=release)};"  # Based on SGLang 0.5.9 (...);
        assert any(ln.startswith(notice) for ln in head), rel


# ------------------------------------------------------------------ storage
# What a release adds to the repository: its delta and manifest. Our change against the base
# is about 500 diff lines (three forks) and a manifest 20; a release's own conflicts add their
# resolutions. 1,000 leaves a release room for those and its tests' adaptations within the
# 1,500 lines a new release may add.
STORED_LINES_PER_RELEASE = 1000


@pytest.mark.parametrize("release", RELEASES)
def test_a_release_stores_only_its_delta_and_manifest(release):
    stored = [regen.manifest_path(release)] + ([] if release == regen.BASE
                                               else [regen.delta_path(release)])
    lines = sum(len(p.read_bytes().splitlines()) for p in stored)
    assert lines <= STORED_LINES_PER_RELEASE, (release, lines)
    if release != regen.BASE:  # a delta holds the release's forks, never a module
        _, files = D.parse(regen.delta_path(release).read_bytes())
        assert sorted(files) == regen.forks(release)


def test_no_module_is_stored_twice():
    """overlay/ holds sglang/ only, and no tracked file has the content of one of our modules
    but the module itself."""
    assert sorted(p.name for p in (ROOT / "overlay").iterdir()) == ["sglang"]
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                             check=True).stdout.decode().split("\0")
    by_hash: dict[str, list[str]] = {}
    for name in filter(None, tracked):
        path = ROOT / name
        if path.is_file():
            by_hash.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(name)
    for rel, path in regen.modules().items():
        assert by_hash[hashlib.sha256(path.read_bytes()).hexdigest()] == [f"overlay/{rel}"], rel


# ------------------------------------------------------------------ the port
def repo_copy(tmp_path: Path) -> Path:
    """What regen.py reads and writes, copied (the wheels linked): a port may write there."""
    dst = tmp_path / "repo"
    for name in ("scripts", "overlay", "manifests", "patches"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / ".cache").mkdir()
    (dst / ".cache" / "wheels").symlink_to((ROOT / ".cache" / "wheels").resolve())
    return dst


def tree_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def stored(repo: Path) -> dict:
    return {name: tree_bytes(repo / name) for name in ("overlay", "manifests", "patches")}


@pytest.mark.parametrize("release", RELEASES)
def test_port_command_remakes_the_committed_set(tmp_path, release):
    """`regen.py --release X --port` rewrites nothing: from the stored delta (its resolutions)
    and, for a release that merges cleanly, from nothing but our base fork and X's wheel (for
    the base release itself: the identity)."""
    fetch(release, *filter(None, [regen.PORTS[release][0]]))
    repo = repo_copy(tmp_path)
    p = regen_py("--port", "--release", release, repo=repo)
    assert p.returncode == 0, p.stdout + p.stderr
    assert stored(repo) == stored(ROOT)
    if release == "0.5.8.post1":
        (repo / "patches" / f"{release}.diff").unlink()
        (repo / "manifests" / f"{release}.tsv").unlink()
        p = regen_py("--port", "--release", release, repo=repo)
        assert p.returncode == 0, p.stdout + p.stderr
        assert stored(repo) == stored(ROOT)


def test_a_release_ports_from_another_releases_fork(tmp_path):
    """A PORTS row whose merge base is not the base release (as the DSA-named releases port
    from 0.5.12.post1's fork): 0.5.9 ported from our 0.5.8.post1 fork, whose three files are
    0.5.8's but environ.py, gives the same forks, its resolution kept (same conflict)."""
    fetch("0.5.9", "0.5.8.post1", regen.BASE)
    repo = repo_copy(tmp_path)
    script = repo / "scripts" / "regen.py"
    text = script.read_text()
    row = '    "0.5.9": (BASE, NSA_FORKS),\n'
    assert text.count(row) == 1
    script.write_text(text.replace(row, '    "0.5.9": ("0.5.8.post1", NSA_FORKS),\n'))
    p = regen_py("--port", "--release", "0.5.9", repo=repo)
    assert p.returncode == 0 and "ported our 0.5.8.post1 fork onto SGLang 0.5.9" in p.stdout, \
        p.stdout + p.stderr
    ours = (repo / "patches" / "0.5.9.diff").read_bytes().split(b"\n", 2)
    committed = regen.delta_path("0.5.9").read_bytes().split(b"\n", 2)
    assert b"from our 0.5.8.post1 fork" in ours[1] and ours[2] == committed[2]
    assert (repo / "manifests" / "0.5.9.tsv").read_bytes() == \
        regen.manifest_path("0.5.9").read_bytes()
    assert regen_py("--port", "--check", "--release", "0.5.9", repo=repo).returncode == 0


def test_a_release_written_by_hand_forking_fewer_files(tmp_path):
    """A PORTS row with no merge base (forks written by hand, as a release whose interface
    changed may need) that leaves radix_cache.py SGLang's own: `--port --from DIR` stores DIR's
    forks as they are; its set has none of the modules that serve radix_cache.py, and
    apply.sh applies and reverts it (overlay/'s other files are not its files)."""
    fetch("0.5.9", regen.BASE)
    repo = repo_copy(tmp_path)
    script = repo / "scripts" / "regen.py"
    row = '    "0.5.9": (BASE, NSA_FORKS),\n'
    script.write_text(script.read_text().replace(
        row, '    "0.5.9": (None, {ENVIRON: ENVIRON, NSA_BACKEND: NSA_BACKEND}),\n'))
    forks = tmp_path / "forks"
    assert regen_py("forks", "--release", "0.5.9", "--out", str(forks)).returncode == 0
    (forks / "sglang/srt/mem_cache/radix_cache.py").unlink()
    p = regen_py("--port", "--release", "0.5.9", "--from", str(forks), repo=repo)
    assert p.returncode == 0 and "written by hand" in p.stdout, p.stdout + p.stderr
    delta = (repo / "patches" / "0.5.9.diff").read_text()
    assert "Written by hand" in delta and "# resolved" not in delta
    rows = [ln.split("\t")[1] for ln in (repo / "manifests" / "0.5.9.tsv").read_text()
            .splitlines() if not ln.startswith("#")]
    assert rows and not [r for r in rows if r.startswith("sglang/srt/mem_cache/")], rows
    for args in (["--check"], ["--port", "--check"]):
        p = regen_py(*args, "--release", "0.5.9", repo=repo)
        assert p.returncode == 0, p.stdout + p.stderr
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target", str(site),
                    str(regen.default_wheel("0.5.9"))], check=True)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "NSA_FASTPATH_STATUS_FILES_ONLY": "1"}
    for cmd in ("apply", "revert"):
        p = subprocess.run(["bash", str(repo / "scripts" / "apply.sh"), cmd, "--target", str(site)],
                           capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        if cmd == "apply":
            assert "sglang==0.5.9" in p.stdout and f"{len(rows)} files" in p.stdout, p.stdout


def test_port_from_whole_forks(tmp_path):
    """The import path: `--port --from DIR` takes each conflict's resolution from whole forks
    (as `regen.py forks` writes them, or as overlay/<X>/ held them); it remakes 0.5.9's delta
    from nothing but those. A fork edited outside its conflicts, or whose resolution drops our
    hook's line, is refused, nothing written."""
    fetch("0.5.9", regen.BASE)
    repo = repo_copy(tmp_path)
    forks = tmp_path / "forks"
    assert regen_py("forks", "--release", "0.5.9", "--out", str(forks)).returncode == 0
    want = stored(repo)
    (repo / "patches" / "0.5.9.diff").unlink()
    (repo / "manifests" / "0.5.9.tsv").unlink()
    p = regen_py("--port", "--release", "0.5.9", "--from", str(forks), repo=repo)
    assert p.returncode == 0 and "resolved: sglang/srt/layers/attention/nsa_backend.py:" in \
        p.stdout, p.stdout + p.stderr
    assert stored(repo) == want
    backend = forks / "sglang/srt/layers/attention/nsa_backend.py"
    text = backend.read_text()
    hook = "            # nsa-fastpath: one launch copies into every step backend\n"
    assert text.count(hook) == 1
    for edited, words in ((text + "# a local edit\n", "outside its conflicts"),
                          (text.replace(hook, ""), "drops our line")):
        backend.write_text(edited)
        p = regen_py("--port", "--release", "0.5.9", "--from", str(forks), repo=repo)
        assert p.returncode == 1 and words in p.stderr, p.stdout + p.stderr
        assert "nothing written" in p.stderr and stored(repo) == want


def test_port_from_forks_made_from_another_base_fork(tmp_path):
    """Whole forks ported from an earlier version of our base fork (as a port made elsewhere
    meanwhile): `--from DIR` alone refuses them (outside their conflicts they are not today's
    merge); with `--from-base` (the base forks they were made from) each conflict's resolution
    is matched by its three sides, and the port carries our base change into them."""
    fetch("0.5.7", regen.BASE)
    repo = repo_copy(tmp_path)
    before = resolutions(repo, "0.5.7")
    forks, base = tmp_path / "forks", tmp_path / "base"
    assert regen_py("forks", "--release", "0.5.7", "--out", str(forks)).returncode == 0
    assert regen_py("forks", "--release", regen.BASE, "--out", str(base)).returncode == 0
    rel = "sglang/srt/mem_cache/radix_cache.py"
    edit_base_fork(repo, rel, "used only by the opt-in Triton matcher.",
                   "used only by the opt-in Triton matcher (our ids, packed).")
    (repo / "patches" / "0.5.7.diff").unlink()
    (repo / "manifests" / "0.5.7.tsv").unlink()
    p = regen_py("--port", "--release", "0.5.7", "--from", str(forks), repo=repo)
    assert p.returncode == 1 and "outside its conflicts" in p.stderr, p.stdout + p.stderr
    p = regen_py("--port", "--release", "0.5.7", "--from", str(forks), "--from-base", str(base),
                 repo=repo)
    assert p.returncode == 0, p.stdout + p.stderr
    assert resolutions(repo, "0.5.7") == before
    out = tmp_path / "out"
    assert regen_py("forks", "--release", "0.5.7", "--out", str(out), repo=repo).returncode == 0
    assert "(our ids, packed)" in (out / rel).read_text()
    assert regen_py("--port", "--check", "--release", "0.5.7", repo=repo).returncode == 0


@pytest.mark.parametrize("edit,words", [
    ("outside", "differs from the merge outside its resolved conflicts"),
    ("drop-hook", "the resolution drops our line"),
])
def test_port_check_catches_a_bad_delta(tmp_path, edit, words):
    """A delta whose fork differs from the merge outside its conflicts, or whose resolution
    lost our hook's line: --port --check fails and says which."""
    fetch("0.5.9", regen.BASE)
    repo = repo_copy(tmp_path)
    forks = regen.fork_texts("0.5.9")
    records = regen.stored_records("0.5.9")
    rel = "sglang/srt/layers/attention/nsa_backend.py"
    if edit == "outside":
        forks["sglang/srt/environ.py"] += b"# a local edit\n"
    else:
        hook = b"            # nsa-fastpath: one launch copies into every step backend\n"
        assert forks[rel].count(hook) == 1
        forks[rel] = forks[rel].replace(hook, b"")
        records = [(r, line, n - 1, k) if r == rel else (r, line, n, k)
                   for r, line, n, k in records]
    (repo / "patches" / "0.5.9.diff").write_bytes(regen.render_delta("0.5.9", forks, records))
    p = regen_py("--port", "--check", "--release", "0.5.9", repo=repo)
    assert p.returncode == 1 and words in p.stdout, p.stdout + p.stderr


def edit_base_fork(repo: Path, rel: str, old: str, new: str) -> None:
    fork = repo / "overlay" / rel
    text = fork.read_text()
    assert text.count(old) == 1, old
    fork.write_text(text.replace(old, new))


def resolutions(repo: Path, release: str) -> list[tuple[str, str, str]]:
    """(file, conflict key, resolution text) of each conflict the release's delta resolves."""
    p = subprocess.run([sys.executable, "-c", "import sys, regen\n"
                        f"for rel, keys in regen.stored_resolutions({release!r}).items():\n"
                        "    for k, texts in keys.items():\n"
                        "        for t in texts: print(repr((rel, k, t)))"],
                       cwd=repo / "scripts", capture_output=True, text=True, check=True)
    return sorted(eval(line) for line in p.stdout.splitlines())


def test_a_re_port_keeps_every_resolution_whose_conflict_is_unchanged(tmp_path):
    """Our base fork of radix_cache.py changes away from 0.5.7's conflicts: the re-port keeps
    both of them resolved as committed and takes the change. Then a change inside one
    conflict's side of ours: that conflict alone is reported and written with markers to the
    work dir (the other keeps its resolution there), the delta left as it was; resolving it
    there and rerunning writes the delta."""
    fetch("0.5.7", regen.BASE)
    repo = repo_copy(tmp_path)
    rel = "sglang/srt/mem_cache/radix_cache.py"
    before = resolutions(repo, "0.5.7")
    assert [r for r in before if r[0] == rel] and len(before) == 3
    edit_base_fork(repo, rel, "used only by the opt-in Triton matcher.",
                   "used only by the opt-in Triton matcher (our ids, packed).")
    p = regen_py("--port", "--release", "0.5.7", repo=repo)
    assert p.returncode == 0, p.stdout + p.stderr
    assert resolutions(repo, "0.5.7") == before
    assert regen_py("--port", "--check", "--release", "0.5.7", repo=repo).returncode == 0
    fork = tmp_path / "fork"
    assert regen_py("forks", "--release", "0.5.7", "--out", str(fork), repo=repo).returncode == 0
    assert "(our ids, packed)" in (fork / rel).read_text()

    # now a change to our side of the second radix_cache.py conflict
    committed = (repo / "patches" / "0.5.7.diff").read_bytes()
    first, second = sorted((t for r, _, t in before if r == rel),
                           key=lambda t: "nsa-fastpath" in t)  # the second holds our hook
    ours_line = next(ln for ln in second.splitlines(keepends=True) if "nsa-fastpath" in ln)
    edit_base_fork(repo, rel, ours_line, ours_line.replace("nsa-fastpath", "nsa-fastpath (v2)"))
    p = regen_py("--port", "--release", "0.5.7", repo=repo)
    assert p.returncode == 1, p.stdout + p.stderr
    work = repo / ".cache" / "port" / "0.5.7" / rel
    marked = work.read_text()
    assert p.stderr.count(": conflict\n") == 1 and marked.count("<<<<<<< ") == 1
    line = marked[:marked.index("<<<<<<< ")].count("\n") + 1
    assert f".cache/port/0.5.7/{rel}:{line}: conflict" in p.stderr, p.stderr
    assert "nsa-fastpath (v2)" in p.stderr and "SGLang 0.5.7 (theirs)" in p.stderr
    assert first in marked  # the unchanged conflict keeps its resolution
    assert (repo / "patches" / "0.5.7.diff").read_bytes() == committed
    # the maintainer resolves it in the work dir; the rerun writes the delta, the work dir goes
    start = marked.index("<<<<<<< ")
    end = marked.index("\n", marked.index(">>>>>>> ")) + 1
    resolved = second.replace("nsa-fastpath", "nsa-fastpath (v2)", 1)
    work.write_text(marked[:start] + resolved + marked[end:])
    p = regen_py("--port", "--release", "0.5.7", repo=repo)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not (repo / ".cache" / "port" / "0.5.7").exists()
    assert regen_py("--port", "--check", "--release", "0.5.7", repo=repo).returncode == 0
    after = resolutions(repo, "0.5.7")
    assert sorted(t for r, _, t in after if r == rel) == sorted([first, resolved])


def test_port_reports_a_conflict_and_leaves_markers(tmp_path):
    """A base fork line that the release changed too: exit 1, file:line and the three sides
    named, the fork written with markers to the work dir, no delta or manifest written; the
    same port again reports it again and leaves the maintainer's file as it is."""
    fetch("0.5.8.post1", regen.BASE)
    repo = repo_copy(tmp_path)
    rel = "sglang/srt/environ.py"
    with zipfile.ZipFile(regen.default_wheel("0.5.8.post1")) as zf:
        theirs = zf.read(rel).decode()
    # 0.5.8.post1 adds a flag right before this line: our fork adds another one there
    anchor = "    SGLANG_JIT_DEEPGEMM_COMPILE_WORKERS"
    assert anchor in theirs
    edit_base_fork(repo, rel, anchor, "    OURS_CONFLICTING = 1\n" + anchor)
    (repo / "patches" / "0.5.8.post1.diff").unlink()
    (repo / "manifests" / "0.5.8.post1.tsv").unlink()
    for _ in range(2):
        p = regen_py("--port", "--release", "0.5.8.post1", repo=repo)
        assert p.returncode == 1, p.stdout + p.stderr
        written = (repo / ".cache" / "port" / "0.5.8.post1" / rel).read_text().splitlines()
        marker = next(i for i, ln in enumerate(written, 1) if ln.startswith("<<<<<<< "))
        assert f".cache/port/0.5.8.post1/{rel}:{marker}: conflict" in p.stderr
        assert "OURS_CONFLICTING = 1" in p.stderr and "SGLANG_JIT_DEEPGEMM_FAST_WARMUP" in p.stderr
        assert not (repo / "manifests" / "0.5.8.post1.tsv").exists()
        assert not (repo / "patches" / "0.5.8.post1.diff").exists()
