"""Shared helpers and fixtures of the test_apply*.py modules (scripts/apply.sh).

Every check compares whole trees: a map of every file's sha256 and mode (and every directory)
under the target, before vs after, against the pristine template and the `patched_template`
fixture (which apply.sh itself produced). Trees are hard-linked copies of the session
templates (cheap); apply.sh never writes into an existing file, and `_tree_hygiene` re-hashes
the templates after each test that linked one, so an in-place write would fail the test.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import APPLY, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from nsa_apply import series  # noqa: E402


def run_apply(*args: str, env: dict | None = None, check: bool = True
              ) -> subprocess.CompletedProcess:
    """conftest.run_apply, except that env may override PYTHON too."""
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    proc = subprocess.run(["bash", str(APPLY), *args], capture_output=True, text=True,
                          env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"apply.sh {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc

STATE = Path("sglang/.nsa_fastpath")
# The files apply.sh installs (it honours the same variables).
RELEASE = "0.5.8"  # the release set these tests apply (the pinned wheel's): the base release,
# whose files are all in overlay/ (its forks and our modules)
MANIFEST = Path(os.environ.get("NSA_FASTPATH_MANIFEST") or ROOT / "manifests" / f"{RELEASE}.tsv")
OVERLAY = Path(os.environ.get("NSA_FASTPATH_OVERLAY") or ROOT / "overlay")


def our_file(rel: str) -> Path:
    """The file apply.sh installs at site-packages path `rel`."""
    return OVERLAY / rel


def copy_overlay(dst: Path) -> Path:
    """The release's files as one overlay directory (NSA_FASTPATH_OVERLAY's form)."""
    shutil.copytree(OVERLAY, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


FILES_ONLY = {"NSA_FASTPATH_STATUS_FILES_ONLY": "1"}  # status without the Triton/flags report


def read_manifest(path: Path = MANIFEST) -> list[tuple[str, str, str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, rel, pre, post = line.split("\t")
            rows.append((kind, rel, pre, post))
    return rows


ROWS = read_manifest()
REPLACED = [r for k, r, _, _ in ROWS if k == "replace"]
ADDED_ROWS = [r for k, r, _, _ in ROWS if k == "add"]
# the commits of the set's `git am` series (scripts/nsa_apply/series.py: one per area we touch)
N_PATCHES = len({series.area(rel) for _, rel, _, _ in ROWS})


@pytest.fixture(scope="session")
def series_patches(tmp_path_factory) -> list[Path]:
    """The set's `git am` series, as `regen.py series` writes it for an operator."""
    out = tmp_path_factory.mktemp("series")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "regen.py"), "series", "--release",
                    RELEASE, "--out", str(out)], check=True, capture_output=True)
    patches = sorted(out.glob("*.patch"))
    assert len(patches) == N_PATCHES
    return patches


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_map(root: Path, known: dict | None = None) -> dict[str, str]:
    """relpath -> 'sha256 mode' for files, '<dir>' for directories, '-> target' for symlinks.

    known: {(dev, inode, size, mtime_ns): sha256} of a template's files (see inode_index);
    a file that *is* one of those inodes (a hard link) reuses its digest.
    """
    out = {}

    def walk(d: str, prefix: str) -> None:
        with os.scandir(d) as it:
            for e in it:
                rel = prefix + e.name
                st = e.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    out[rel] = "-> " + os.readlink(e.path)
                elif stat.S_ISDIR(st.st_mode):
                    out[rel] = "<dir>"
                    walk(e.path, rel + "/")
                else:
                    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                    digest = known[key] if known and key in known else sha(Path(e.path))
                    out[rel] = f"{digest} {stat.S_IMODE(st.st_mode):o}"

    walk(str(root), "")
    return out


def inode_index(root: Path) -> dict:
    """Digest of every file of a template, keyed by inode (+ size and mtime)."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = sha(Path(p))
    return out


def remove_tree(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def stat_map(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (
                st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def diff_maps(got: dict, want: dict) -> str:
    lines = []
    for k in sorted(set(got) | set(want)):
        if got.get(k) != want.get(k):
            lines.append(f"  {k}: got {got.get(k, 'ABSENT')!s:.20} want {want.get(k, 'ABSENT')!s:.20}")
    return "\n".join(lines[:20]) + (f"\n  ... {len(lines) - 20} more" if len(lines) > 20 else "")


def assert_tree(root: Path, want: dict, what: str, context: str = "", known=None) -> None:
    got = tree_map(root, known)
    assert got == want, f"{root} is not {what} {context}\n{diff_maps(got, want)}"


def copy_tree(src: Path, dst: Path) -> Path:
    """A real copy (used for git checkouts, which git may rewrite in place)."""
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


LINKS_MADE = [0]


def link_tree(src: Path, dst: Path) -> Path:
    """A hard-linked copy of a site-packages tree (see the module docstring)."""
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    LINKS_MADE[0] += 1
    return dst


def rewrite(path: Path, data: bytes) -> None:
    """Give `path` new content through a new inode (never write into a hard-linked file)."""
    tmp = path.with_name(path.name + ".test-tmp")
    tmp.write_bytes(data)
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def wheel(release: str) -> Path:
    """The pinned wheel of an SGLang release for this Python (fetched and sha256-checked)."""
    p = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), release],
                       check=True, capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable})
    return Path(p.stdout.strip().splitlines()[-1])


class Venv:
    """A real virtual environment (no pip of its own: made in milliseconds) whose SGLang is
    installed, replaced and uninstalled by this Python's pip running inside it, as an operator's
    `pip install` would: pip acts on the venv's site-packages only, through its RECORD."""

    def __init__(self, path: Path, piponly: Path):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
        self.python = path / "bin" / "python"
        self.site = Path(subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True).stdout.strip())
        self.env = {**os.environ, "PYTHONPATH": str(piponly)}

    def pip(self, *args: str) -> None:
        subprocess.run([str(self.python), "-m", "pip", *args, "--quiet",
                        "--disable-pip-version-check"], check=True, env=self.env)

    def install(self, release: str, force: bool = False) -> "Venv":
        """`pip install --no-deps [--force-reinstall] sglang-<release>.whl` (no bytecode: the
        trees are compared byte for byte, and pip stamps bytecode with the install's mtimes)."""
        self.pip("install", "--no-index", "--no-deps", "--no-compile",
                 *(["--force-reinstall"] if force else []), str(wheel(release)))
        return self


def piponly_dir(tmp: Path) -> Path:
    """A directory that puts only this Python's pip on PYTHONPATH (for Venv)."""
    import pip
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp / "pip").exists():
        (tmp / "pip").symlink_to(Path(pip.__file__).parent)
    return tmp


def out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def status(site: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`apply.sh status`, file states only."""
    return run_apply("status", "--target", str(site), env={**FILES_ONLY, **(env or {})},
                     check=False)


@pytest.fixture(autouse=True)
def _tree_hygiene(request, tmp_path, pristine_template, pristine_map, patched_template,
                  patched_map):
    """After a test: the session templates are unchanged (the trees were hard links to
    them), and the test's trees are deleted if it passed (~2000 files each)."""
    failed, links = request.session.testsfailed, LINKS_MADE[0]
    yield
    if LINKS_MADE[0] != links:
        assert tree_map(pristine_template) == pristine_map, "pristine template modified"
        assert tree_map(patched_template) == patched_map, "patched template modified"
        if "ext_patched" in request.fixturenames:
            ext_dir, ext_map = request.getfixturevalue("ext_patched")
            assert tree_map(ext_dir) == ext_map, "ext template modified"
    if request.session.testsfailed == failed:
        subprocess.run(["chmod", "-R", "u+rwX", str(tmp_path)], check=False)
        remove_tree(tmp_path)


@pytest.fixture
def site(pristine_template, tmp_path) -> Path:
    """Like conftest's fresh_site (a private pristine tree), as hard links (see link_tree)."""
    return link_tree(pristine_template, tmp_path / "pristine-site")


@pytest.fixture(scope="session")
def pristine_map(pristine_template) -> dict:
    return tree_map(pristine_template)


@pytest.fixture(scope="session")
def patched_map(patched_template, pristine_map) -> dict:
    m = tree_map(patched_template)
    assert m != pristine_map
    return m


# A manifest of `add` rows only (new modules in an existing directory and in new nested
# directories), as later versions of the patch set will have: NSA_FASTPATH_MANIFEST and
# NSA_FASTPATH_OVERLAY point apply.sh at it; its overlay holds exactly those files.
ADDED = {
    "sglang/srt/layers/attention/nsa_fastpath_kernels.py": b"# nsa-fastpath test module\nX = 1\n",
    "sglang/srt/nsa_fastpath/__init__.py": b"",
    "sglang/srt/nsa_fastpath/csrc/nsa_metadata.cu": b"// nsa-fastpath test kernel\n",
}


def make_manifest(base: Path, files: dict[str, bytes], replaced: dict[str, bytes] | None = None
                  ) -> dict:
    """A manifest + overlay under base: `files` added, `replaced` {rel: our bytes} replacing
    the pristine file (hash from the real manifest). Returns the env pointing apply.sh at it."""
    overlay = base / "overlay"
    lines = [ln for ln in MANIFEST.read_text().splitlines() if ln.startswith("#")]
    pre = {rel: p for k, rel, p, _ in ROWS if k == "replace"}
    for rel, data in sorted({**files, **(replaced or {})}.items()):
        (overlay / rel).parent.mkdir(parents=True, exist_ok=True)
        (overlay / rel).write_bytes(data)
        kind, p = ("replace", pre[rel]) if rel in (replaced or {}) else ("add", "-")
        lines.append(f"{kind}\t{rel}\t{p}\t{hashlib.sha256(data).hexdigest()}")
    (base / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return {"NSA_FASTPATH_MANIFEST": str(base / "manifest.tsv"),
            "NSA_FASTPATH_OVERLAY": str(overlay)}


@pytest.fixture(scope="session")
def ext_env(tmp_path_factory) -> dict:
    # only `add` rows: small, so its fault sweeps stay fast (the real manifest's sweeps
    # cover `replace` rows)
    return make_manifest(tmp_path_factory.mktemp("ext_manifest"), ADDED)


@pytest.fixture(scope="session")
def ext_patched(pristine_template, tmp_path_factory, ext_env) -> tuple[Path, dict]:
    dst = copy_tree(pristine_template, tmp_path_factory.mktemp("ext_patched") / "site")
    run_apply("apply", "--target", str(dst), env=ext_env)
    return dst, tree_map(dst)


# ------------------------------------------------------------------ fault sweeps
ROLLBACK_MODES = ("error", "enospc", "sigterm", "sigint", "sighup", "sigpipe")
EXPECTED_REASON = {"error": "injected fault", "enospc": "No space left on device",
                   "sigterm": "interrupted by SIGTERM", "sigint": "interrupted by SIGINT",
                   "sighup": "interrupted by SIGHUP"}


def count_steps(template: Path, tmp_path: Path, cmd: str, env: dict, end_map: dict) -> int:
    """Mutating steps of a complete, fault-free run (NSA_FASTPATH_TRACE logs each one)."""
    site = link_tree(template, tmp_path / f"{cmd}-trace")
    p = run_apply(cmd, "--target", str(site), env=dict(env, NSA_FASTPATH_TRACE="1"))
    assert_tree(site, end_map, f"the result of {cmd}", out(p))
    remove_tree(site)
    steps = [ln for ln in p.stdout.splitlines() if ln.startswith("[nsa-fastpath] step ")]
    assert steps and steps[-1].startswith(f"[nsa-fastpath] step {len(steps)}: "), p.stdout
    return len(steps)


def sweep(template: Path, tmp_path: Path, cmd: str, modes: tuple[str, ...], env: dict,
          start_map: dict, end_map: dict) -> int:
    """Disturb `cmd` at step N for N = 1, 2, ... one past the last step; step N gets
    modes[(N - 1) % len(modes)].

    kill:      rerunning `apply` on the crashed tree ends fully patched and, on a second
               copy, rerunning `revert` ends pristine; `status` says partial meanwhile (or
               the state the tree really is in, byte for byte).
    sigpipe:   output into a pipe without reader: the run finishes (exit 0, end_map).
    the rest:  the run rolls back: exit 5, the reason named, and the tree equals start_map.
    A few workers share the cases; each works on its own tree, which every case leaves
    verified identical (hash and mode of every file, every directory) to the template, so
    the next case starts from exactly what a fresh copy would be. Returns the step count.
    """
    assert tree_map(template) == start_map
    # The trees are hard links to the template: hash only what apply.sh wrote. The template
    # itself is re-hashed in full at the end (no in-place writes).
    known = inode_index(template)
    pristine, patched = (start_map, end_map) if cmd == "apply" else (end_map, start_map)
    back = "revert" if cmd == "apply" else "apply"
    steps = count_steps(template, tmp_path, cmd, env, end_map)

    def case(n: int, site: Path) -> Path:
        """Runs case n on `site` (== start_map); returns a tree == start_map (or end_map
        after the fault-free last case)."""
        mode = modes[(n - 1) % len(modes)]
        fenv = dict(env, NSA_FASTPATH_FAULT_AT=str(n), NSA_FASTPATH_FAULT_MODE=mode)
        p = run_apply(cmd, "--target", str(site), env=fenv, check=False)
        ctx = f"({cmd}, {mode} at step {n} of {steps})\n{out(p)}"
        if n > steps:  # past the last step: nothing happens
            assert p.returncode == 0 and "injected" not in out(p), ctx
            assert_tree(site, end_map, "the completed result", ctx, known)
            return site
        if mode == "sigpipe":
            assert p.returncode == 0, ctx
            assert_tree(site, end_map, "completed despite the closed pipe", ctx, known)
            r = run_apply(back, "--target", str(site), env=env, check=False)
            assert r.returncode == 0, ctx + out(r)
            assert_tree(site, start_map, f"back to the start after {back}", ctx, known)
            return site
        if mode != "kill":
            assert p.returncode == 5, ctx
            assert EXPECTED_REASON[mode] in p.stderr and "rolled back" in p.stderr, ctx
            assert_tree(site, start_map, "rolled back", ctx, known)
            return site
        assert p.returncode == -9, ctx
        st = status(site, env)
        if st.returncode == 0:  # status may only claim a state the tree really is in
            assert_tree(site, pristine if "overall: pristine" in st.stdout else patched,
                        "what status claims", ctx + st.stdout, known)
        else:
            assert st.returncode == 7 and "overall: partial" in st.stdout, ctx + out(st)
        other = link_tree(site, site.parent / f"{site.name}-{n}")
        r = run_apply("apply", "--target", str(site), env=env, check=False)
        assert r.returncode == 0, ctx + out(r)
        assert_tree(site, patched, "fully patched after rerunning apply", ctx + out(r), known)
        r = run_apply("revert", "--target", str(other), env=env, check=False)
        assert r.returncode == 0, ctx + out(r)
        assert_tree(other, pristine, "pristine after rerunning revert", ctx + out(r), known)
        keep, drop = (other, site) if start_map is pristine else (site, other)
        remove_tree(drop)
        return keep

    def worker(w: int, ns: list[int]) -> None:
        site = link_tree(template, tmp_path / f"{cmd}-w{w}")
        for n in ns:
            site = case(n, site)
        remove_tree(site)

    workers = min(4, os.cpu_count() or 1)
    ns = list(range(1, steps + 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(worker, w, ns[w::workers]) for w in range(workers)]:
            f.result()  # re-raises a failure
    assert tree_map(template) == start_map, "apply.sh wrote into a file in place"
    return steps



