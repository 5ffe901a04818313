"""A site-packages target: where it is, what SGLang it holds, and the state of every file."""
from __future__ import annotations

import base64
import binascii
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Fail, TARGET
from .manifest import STATE_REL, Manifest, Row, file_state

JOURNAL_HEAD = ("# nsa-fastpath state (scripts/apply.sh). Do not edit or delete: "
                "`apply.sh revert` restores the originals from backup/.")


def sglang_version(d: Path) -> str:
    """Version(s) of SGLang installed in d (site-packages, or python/ of a checkout)."""
    found = []
    for meta in sorted(d.glob("sglang-*.dist-info/METADATA")) + sorted(
            d.glob("sglang-*.egg-info/PKG-INFO")):
        try:
            for line in meta.read_text(errors="replace").splitlines():
                if line.startswith("Version:"):
                    found.append(line.split(":", 1)[1].strip())
                    break
        except OSError:
            pass
    if not found and (d / "pyproject.toml").is_file():
        m = re.search(r'(?m)^version *= *"([^"]+)"', (d / "pyproject.toml").read_text(errors="replace"))
        if m:
            found.append(m.group(1))
    if not found:
        for name in ("_version.py", "version.py"):
            f = d / "sglang" / name
            if f.is_file():
                m = re.search(r"""(?m)^__version__ *= *(?:version *= *)?['"]([^'"]+)['"]""",
                              f.read_text(errors="replace"))
                if m:
                    found.append(m.group(1))
                    break
    return ", ".join(found) or "unknown"


def distributions(d: Path) -> list[Path]:
    """SGLang's installed-distribution metadata in d (empty: SGLang is not installed there)."""
    return sorted(d.glob("sglang-*.dist-info")) + sorted(d.glob("sglang-*.egg-info"))


def record_hashes(d: Path) -> dict[str, str]:
    """sha256 (hex) of each file pip installed under sglang/, from the RECORD of the one SGLang
    distribution in d: what pip says is SGLang's own file. Empty when there is not exactly one
    dist-info, or its RECORD cannot be read; entries without a sha256 are left out."""
    dists = distributions(d)
    if len(dists) != 1:
        return {}
    try:
        text = (dists[0] / "RECORD").read_text(errors="replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        path, _, rest = line.partition(",")
        algo, _, digest = rest.partition(",")[0].partition("=")
        if not path.startswith("sglang/") or algo != "sha256":
            continue
        try:
            raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
        except (ValueError, binascii.Error):
            continue
        if len(raw) == 32:
            out[path] = raw.hex()
    return out


def find_default_target() -> Path:
    """site-packages of the SGLang this Python would import (found, not imported)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd(), here)]
    try:
        spec = importlib.util.find_spec("sglang")
    finally:
        sys.path[:] = saved
    if spec is None:
        raise Fail(TARGET, f"no SGLang importable by {sys.executable}: set PYTHON=/path/to/python "
                           "of the SGLang environment, or pass --target SITE_PACKAGES_DIR. "
                           "Nothing changed.")
    locs = list(spec.submodule_search_locations or [])
    pkg = locs[0] if locs else os.path.dirname(spec.origin)
    return Path(os.path.dirname(os.path.abspath(pkg)))


@dataclass
class Target:
    root: Path       # site-packages (or python/ of a git checkout)
    version: str

    @property
    def state(self) -> Path:
        return self.root / STATE_REL

    def __truediv__(self, rel: str) -> Path:
        return self.root / rel

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root)


def resolve(arg: str | None, log) -> Target:
    if arg is None:
        root = find_default_target()
        if distributions(root):
            log.say(f"SGLang found by {sys.executable} in {root}")
        else:
            log.say(f"a `sglang` package found by {sys.executable} in {root}, but no SGLang "
                    "distribution is installed there (no sglang-*.dist-info)")
    else:
        root = Path(arg)
    if not (root / "sglang").is_dir():
        if not root.exists():
            raise Fail(TARGET, f"{root}: no such directory. Pass the site-packages directory "
                               "that contains sglang/. Nothing changed.")
        raise Fail(TARGET, f"no sglang/ package in {root} (pass the site-packages directory "
                           "that contains sglang/). Nothing changed.")
    root = Path(os.path.realpath(root))
    return Target(root, sglang_version(root))


# ---------------------------------------------------------------- file states
@dataclass
class Scan:
    # pristine / patched / foreign / missing; "stale" (add rows): ours, another set's bytes
    state: dict[str, str] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)    # sha256 or missing/symlink/...
    backup: dict[str, str] = field(default_factory=dict)  # replace rows: ok/missing/corrupt/unreadable

    def count(self, state: str) -> int:
        return sum(1 for s in self.state.values() if s == state)

    def rows_in(self, m: Manifest, *states: str) -> list[Row]:
        return [r for r in m.rows if self.state[r.rel] in states]

    @property
    def foreign(self) -> list[str]:
        return [rel for rel, s in self.state.items() if s in ("foreign", "missing")]


def classify(row: Row, seen: str, ours: frozenset | set = frozenset()) -> str:
    """`ours`: sha256 of every file any release set (or the recorded manifest) puts at this
    path: an added file of another set is ours, from that set ("stale")."""
    if seen == row.post:
        return "patched"
    if row.kind == "add" and seen == "missing":
        return "pristine"
    if row.kind == "replace" and seen == row.pre:
        return "pristine"
    if row.kind == "add" and seen in ours:
        return "stale"
    return "missing" if seen == "missing" else "foreign"


def scan(t: Target, m: Manifest, ours: dict[str, set[str]] | None = None) -> Scan:
    s = Scan()
    for row in m.rows:
        seen = file_state(t / row.rel)
        s.seen[row.rel] = seen
        s.state[row.rel] = classify(row, seen, (ours or {}).get(row.rel, frozenset()))
        if row.kind == "replace":
            b = file_state(t.state / "backup" / row.rel)
            s.backup[row.rel] = ("ok" if b == row.pre else b if b in ("missing", "unreadable")
                                 else "corrupt")
    return s


def require_readable(unreadable: list[str], t: Target) -> None:
    if unreadable:
        raise Fail(TARGET, "cannot read " + ", ".join(unreadable) + f" in {t.root}: "
                   "permission denied (the files may be fine; this user cannot read them). Run "
                   f"as the owner of this SGLang install ({owner_of(t.root / 'sglang')}). "
                   "Nothing changed.")


def state_unreadable(t: Target) -> Path | None:
    """The first directory of the state dir this user cannot list, if any."""
    for d in (t.state, t.state / "backup"):
        try:
            os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except PermissionError:
            return d
    return None


def require_state_readable(t: Target) -> None:
    d = state_unreadable(t)
    if d is not None:
        raise Fail(TARGET, f"cannot read {d}: permission denied. The backups may well be fine; "
                           "this user cannot read them. Run as the owner of this SGLang install "
                           f"({owner_of(t.root / 'sglang')}). Nothing changed.")


def owner_of(path: Path) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "unknown owner"
    try:
        import pwd
        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"uid {uid}"


# ---------------------------------------------------------------- journal
def read_journal(t: Target) -> dict[str, str]:
    try:
        text = (t.state / "journal").read_text(errors="replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def journal_text(op: str, state: str, manifest_sha: str, previous: str | None = None) -> bytes:
    """previous: while an apply replaces the recorded manifest of another release set (SGLang
    was upgraded or downgraded), the sha256 of that one: until the new manifest.tsv is in
    place, the old one still verifies (verify.damage)."""
    prev = f"previous_manifest_sha256={previous}\n" if previous else ""
    return (f"{JOURNAL_HEAD}\nop={op}\nstate={state}\nmanifest_sha256={manifest_sha}\n"
            f"{prev}").encode()


def read_created_dirs(t: Target, log=None) -> list[str]:
    try:
        lines = (t.state / "created_dirs").read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for d in lines:
        parts = d.split("/")
        if not d:
            continue
        if parts[0] != "sglang" or len(parts) < 2 or any(p in ("", ".", "..") for p in parts) \
                or (d + "/").startswith(STATE_REL + "/"):
            if log:
                log.warn(f"ignoring bad created_dirs entry: {d!r}")
            continue
        out.append(d)
    return sorted(set(out))


# ---------------------------------------------------------------- bytecode
def pyc_files(source: Path) -> list[Path]:
    """Bytecode Python may have written for `source` (__pycache__/stem.*.pyc, legacy stem.pyc)."""
    if source.suffix != ".py":
        return []
    stem, out = source.stem, []
    cache = source.parent / "__pycache__"
    try:
        names = os.listdir(cache)
    except OSError:
        names = []
    for name in sorted(names):
        if name.startswith(stem + ".") and name.endswith(".pyc") and \
                name[len(stem) + 1:-4].count(".") <= 1:
            out.append(cache / name)
    legacy = source.with_suffix(".pyc")
    if os.path.lexists(legacy):
        out.append(legacy)
    return out


def backup_pyc(t: Target, pyc: Path) -> Path:
    """Where apply keeps pip's bytecode of a replaced module (same relative place)."""
    return t.state / "backup" / t.rel(pyc)


# ---------------------------------------------------------------- leftovers
_OUR_TMP = re.compile(r"tmp-[0-9]+-[0-9]+\..+")   # Txn.staged(): tmp-<pid>-<n>.<name>


def staged_leftovers(t: Target, m: Manifest) -> list[Path]:
    """Temp entries of an interrupted run, by the exact names apply.sh gives them:
    STATE/tmp-<pid>-<n>.<name>, and the earlier bash apply.sh's .<name>.nsa-tmp.<pid> beside
    a file of the manifest (<name> one of its files). A user's file that merely looks alike
    (sglang/srt/.my.nsa-tmp.notes) is not ours and stays."""
    out = []
    try:
        out += sorted(t.state / n for n in os.listdir(t.state) if _OUR_TMP.fullmatch(n))
    except (FileNotFoundError, NotADirectoryError):
        pass
    names: dict[Path, set[str]] = {}
    for r in m.rows:
        names.setdefault((t / r.rel).parent, set()).add(Path(r.rel).name)
    for d in sorted(names):
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for n in sorted(entries):
            base, sep, pid = n[1:].rpartition(".nsa-tmp.")
            if n.startswith(".") and sep and pid.isdigit() and base in names[d]:
                out.append(d / n)
    return out


def sglang_uninstalled(t: Target, replaced, ours: dict[str, set[str]]) -> list[str] | None:
    """After `pip uninstall sglang` on a patched tree only our files remain under sglang/.
    Returns them (relative paths) if that is the state, else None. `replaced`: every path a
    release set replaces; `ours`: path -> the sha256 of our files there (survey.Known)."""
    if distributions(t.root):
        return None
    if any(os.path.lexists(t / rel) for rel in replaced):
        return None
    left = []
    for dirpath, dirnames, filenames in os.walk(t / "sglang"):
        rel_dir = t.rel(Path(dirpath))
        if rel_dir == STATE_REL:
            dirnames[:] = []
            left.append(STATE_REL + "/")
            continue
        for name in filenames:
            rel = f"{rel_dir}/{name}"
            if rel in ours and file_state(t / rel) in ours[rel]:
                left.append(rel)
            elif not (os.path.basename(dirpath) == "__pycache__" and name.endswith(".pyc")):
                return None  # something else of SGLang's (or someone's) is still there
    return left


def source_checkout(t: Target) -> Path | None:
    """The git work tree whose tracked files include this SGLang (an editable or source install),
    else None (also when git is not installed: then no `--git` mode could be offered)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        p = subprocess.run(["git", "-C", str(t / "sglang"), "ls-files", "--", "."],
                           capture_output=True, text=True, errors="replace", env=env,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0 or not p.stdout.strip():
            return None
        top = subprocess.run(["git", "-C", str(t / "sglang"), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, errors="replace", env=env,
                             stdin=subprocess.DEVNULL)
    except OSError:
        return None
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else None
