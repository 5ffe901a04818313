#!/usr/bin/env python3
"""Make and check each supported release's set from our change and SGLang's wheels.

Our change is stored once: overlay/sglang/srt/ holds the SGLang files we fork, as written
against the base release (BASE, 0.5.8), and our modules beside them. Every other release
stores only its delta, patches/<release>.diff: each file it forks (PORTS), as a unified diff
from that release's own file to our fork of it. manifests/<release>.tsv holds the sha256 of
each SGLang file a set replaces and of each file it installs. apply.sh makes a release's forks
from the target's own files plus the delta, and checks them against the manifest.

  regen.py [--release X]...                 write manifests/<X>.tsv (default: every release)
  regen.py --check                          fail where a manifest or delta is not what it
                                            regenerates to (tests/test_drift.py)
  regen.py series --release X --out DIR     write X's `git am` series into DIR
  regen.py forks --release X --out DIR      write X's forks, whole, into DIR/sglang/...
  regen.py --release X --port [--from DIR [--from-base DIR]]
                                            merge our fork onto X, write its delta (port())
  regen.py --port --check                   every delta is that merge, resolutions excepted

Uses only the standard library and git, so it runs before any virtual environment exists.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from nsa_apply import delta, series
from nsa_apply.releases import BASE

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "overlay"
PORT_WORK = ROOT / ".cache" / "port"  # a port's open conflicts, for a human to resolve

# The PyPI wheels of every SGLang release this checkout knows: release -> {file name: sha256}.
# A release's pristine files come from its wheel; from 0.5.11 SGLang ships one wheel per CPython
# (a compiled gRPC module), whose Python files are the same in each (cp311: the CPU tier's Python;
# cp312: the GPU machine's). Releases past PORTS are pinned for measurement only.
_CP = "cp{0}-cp{0}-manylinux_2_34_x86_64.whl"
WHEELS = {
    "0.5.7": {"py3-none-any": "b77f9e5ca5a2ab19b3efba725958fc4de20ba97880e383738c695e8611b51100"},
    "0.5.8": {"py3-none-any": "b7fbd890f6edd87f46c6e3ce72d592316af316f183c9bd999c3cc44b20fa2451"},
    "0.5.8.post1": {
        "py3-none-any": "3fe5ddf6d8b47b234bb192737eb52c94e76282bf910b1185e020f88ec7367e6e"},
    "0.5.9": {"py3-none-any": "8a936c4d25fea605f44254e533cff2144c73ceffbc1f8738aba393461bbb64d1"},
    "0.5.10": {"py3-none-any": "ac8855a5d57dac8831fee526bca5212f1ae451f378e2ab08b3baecbc4deb4076"},
    "0.5.10.post1": {
        "py3-none-any": "a854a68b11caf6b4b55c241a44378a7cdede7ede325db85c955f131506703bc6"},
    "0.5.11": {"cp311": "fe0748beaff218d3e16c9018a5e19f018db06fc3c7ac4f90d2f93da1cf074b6f",
               "cp312": "0cdf73e8d463df53010c33017c7baa68ce5f2d0bf7d015923d6b37b809ca7c50"},
    "0.5.12": {"cp311": "4ed786a38655851fd055ef57380c34d29b87753b53f63457309f51e5bf48c2e6",
               "cp312": "d3fc7ecb61ad3e533ebe1ae9b4109fbb62ecbf2d17453b62770c8a7ec49d539a"},
    "0.5.12.post1": {
        "cp311": "94b3f3cc6b97f1364f247b8d9c1d106ec63cf22c55d6b65bc40ff29b0206ef5f",
        "cp312": "fb53554bcb592c26b94f609745620e1b1fa5e9fb4650de4bc3a8373542dacd4d"},
    "0.5.13": {"cp311": "9d26266ab7e99165098f9e173f4a5a0ef6a0b64a6f30ef0b5ee859eead37e75a",
               "cp312": "2c32b23dade35e3e5038ed200580a692ab378e1c232ad690d893c6cfce95c1e8"},
    "0.5.13.post1": {
        "cp311": "1c1653ecf2893c7d7b1cf0c3e1cc9b7550ebad95c809de2f44bcc91b7a1e1fe3",
        "cp312": "55a8f3a54cfb56d562ca5b3e77678d28a1ecb97eb89fc9f673c2fc3e33f2d544"},
    "0.5.14": {"cp311": "4fe16056b45c8aca00f5f90ceb174dc3a62a3f5dccf159c791370795cd00fc99",
               "cp312": "4573aac774045ba926bab2f7efaaad7b120e4f84695ccf27c59d276f856deca8"},
    "0.5.15": {"cp311": "21492759b4b99e117bd81610f633422f3fdae2896c2cde6931eab886deccc44f",
               "cp312": "b737df527bbba96fe098a02d182e98f72a1b3564d7fc754629041129a5d8edc1"},
    "0.5.15.post1": {
        "cp311": "8e182e1c449197cb6f98716a7cf432a3ea7af78c172f9b840ab28ad9e6cda9b4",
        "cp312": "d1cf208d6ed6bd1d66e6c284635cb671519855dcdfe119e3c4011b6797c90679"},
    "0.5.16": {"cp311": "d5f345a18953dd35df568ac56bdcb7f5ee910ab39efea4469b714556d1070713",
               "cp312": "b8ed16e72c7d6a643e31ba52e3ff106439e9dbb78543950e4c810158b826ea8e"},
    "0.5.23": {"cp311": "00b3cd5b265ac76c64185fbb6b95424f324ddd9f428d0306b77bc9db9d859937",
               "cp312": "8d257a319395b322bb1be327d05e5528859358153c8563b04c0a4a3c8af164b6"},
}


ENVIRON = "sglang/srt/environ.py"
NSA_BACKEND = "sglang/srt/layers/attention/nsa_backend.py"
RADIX_CACHE = "sglang/srt/mem_cache/radix_cache.py"
DSA_BACKEND = "sglang/srt/layers/attention/dsa_backend.py"  # the backend from 0.5.13 (NSA -> DSA)
NSA_FORKS = {ENVIRON: ENVIRON, NSA_BACKEND: NSA_BACKEND, RADIX_CACHE: RADIX_CACHE}
DSA_FORKS = {ENVIRON: ENVIRON, DSA_BACKEND: DSA_BACKEND, RADIX_CACHE: RADIX_CACHE}
# Every supported release: the release whose fork its port merges onto it (its merge base), and
# the SGLang files it forks, each with that file's path in the merge base's release. A release
# that renames a file names the old path, e.g. (the backend is dsa_backend.py from 0.5.13):
#   "0.5.13": ("0.5.12.post1", {ENVIRON: ENVIRON, "sglang/srt/layers/attention/dsa_backend.py":
#                               NSA_BACKEND, RADIX_CACHE: RADIX_CACHE}),
# A merge base None: forks written by hand, stored as they are (`--port --from DIR`).
PORTS = {
    "0.5.7": (BASE, NSA_FORKS),
    "0.5.8": (BASE, NSA_FORKS),  # BASE itself: its forks are overlay/'s, its port the identity
    "0.5.8.post1": (BASE, NSA_FORKS),
    "0.5.9": (BASE, NSA_FORKS),
    "0.5.10": (BASE, NSA_FORKS),
    "0.5.11": (BASE, NSA_FORKS),
    "0.5.12": (BASE, NSA_FORKS),
    # 0.5.13 renames the backend and its CUDA-graph entry points: our hooks were written at the
    # new call sites by hand (radix_cache.py: 0.5.12's fork's hooks on 0.5.13's array-id
    # RadixCache); 0.5.14's fork is 0.5.13's merged onto it.
    "0.5.13": (None, DSA_FORKS),
    "0.5.14": ("0.5.13", DSA_FORKS),
}
# Releases whose files a set forks are another supported release's, byte for byte: that
# release's set serves them (apply.sh chooses a set by those files' sha256, so two sets of the
# same files could not be told apart; tests/test_drift.py checks the files).
SERVED_BY = {"0.5.10.post1": "0.5.10", "0.5.12.post1": "0.5.12", "0.5.13.post1": "0.5.13"}
SUPPORTED = tuple(PORTS) + tuple(SERVED_BY)
# Our modules that serve one fork, by directory: a release that leaves that file SGLang's own
# gets none of them.
MODULES_OF = {"sglang/srt/mem_cache/": RADIX_CACHE}
# Supported releases: the sha256 of the wheel its pristine files are read from (the first pinned).
RELEASES = {r: next(iter(WHEELS[r].values())) for r in PORTS}


def wheel_names(release: str) -> dict[str, str]:
    """The release's pinned wheels: file name -> sha256."""
    return {f"sglang-{release}-" + (_CP.format(tag[2:]) if tag.startswith("cp")
                                    else f"{tag}.whl"): sha
            for tag, sha in WHEELS[release].items()}


def wheel_name(release: str, python: tuple[int, int] | None = None) -> str:
    """The release's wheel for a CPython (default: this one): the universal wheel where SGLang
    ships one, else the cpXY wheel (an unpinned Python gets the first pinned one: its Python
    files are the same)."""
    tags = WHEELS[release]
    if "py3-none-any" in tags:
        return f"sglang-{release}-py3-none-any.whl"
    tag = "cp%d%d" % (python or sys.version_info[:2])
    return f"sglang-{release}-" + _CP.format((tag if tag in tags else next(iter(tags)))[2:])


def default_wheel(release: str) -> Path:
    return ROOT / ".cache" / "wheels" / wheel_name(release)


def manifest_path(release: str) -> Path:
    return ROOT / "manifests" / f"{release}.tsv"


def delta_path(release: str) -> Path:
    return ROOT / "patches" / f"{release}.diff"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> None:
    """Whole or not at all: a temp file renamed over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@lru_cache(maxsize=None)
def wheel(release: str) -> zipfile.ZipFile:
    path = default_wheel(release)
    if not path.exists():
        sys.exit(f"{path} missing: run scripts/fetch_wheel.sh {release}")
    digest = sha256_bytes(path.read_bytes())
    if digest not in WHEELS[release].values():
        sys.exit(f"{path}: sha256 {digest} is not the pinned SGLang {release} wheel")
    return zipfile.ZipFile(path)


def pristine(release: str, rel: str) -> bytes | None:
    """SGLang's own file `rel` of the release (None: the release has no such file)."""
    try:
        return wheel(release).read(rel)
    except KeyError:
        return None


def forks(release: str) -> list[str]:
    """The SGLang files the release forks (site-packages paths)."""
    return sorted(PORTS[release][1])


def modules(release: str = BASE) -> dict[str, Path]:
    """Our modules in the release's set (every file under overlay/sglang/ but the base's forks,
    and MODULES_OF only with their fork): path -> file."""
    out = {}
    for p in sorted((OVERLAY / "sglang").rglob("*")):
        rel = p.relative_to(OVERLAY).as_posix()
        serves = [f for d, f in MODULES_OF.items() if rel.startswith(d)]
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" \
                and rel not in PORTS[BASE][1] and all(f in PORTS[release][1] for f in serves):
            out[rel] = p
    return out


# ------------------------------------------------------------------ a release's files
RECORD = re.compile(r"# resolved (\S+):(\d+)\+(\d+) conflict ([0-9a-f]{16})")


def read_delta(release: str) -> tuple[list[str], dict[str, tuple]]:
    path = delta_path(release)
    if not path.exists():
        sys.exit(f"{path.relative_to(ROOT)} missing: SGLang {release} is not ported (python3 "
                 f"scripts/regen.py --release {release} --port)")
    try:
        return delta.parse(path.read_bytes())
    except delta.DeltaError as e:
        sys.exit(f"{path.relative_to(ROOT)}: {e}")


def fork_texts(release: str, only: set[str] | None = None) -> dict[str, bytes]:
    """Our forks for the release: overlay/'s for BASE, else the release's files plus its delta
    (``only``: those of these files)."""
    if release == BASE:
        return {rel: (OVERLAY / rel).read_bytes() for rel in forks(release)}
    _, files = read_delta(release)
    extra = sorted(set(files) - set(forks(release)))
    if extra:
        sys.exit(f"patches/{release}.diff holds {', '.join(extra)}, which PORTS does not fork")
    out = {}
    for rel in forks(release):
        if only is not None and rel not in only:
            continue
        orig = pristine(release, rel)
        if rel not in files or orig is None:
            sys.exit(f"patches/{release}.diff has no diff for {rel}" if orig is not None else
                     f"{rel} is missing from SGLang {release}'s wheel")
        try:
            out[rel] = delta.apply(orig, files[rel])
        except delta.DeltaError as e:
            sys.exit(f"patches/{release}.diff does not apply to SGLang {release}'s {rel}: {e}")
    return out


def release_files(release: str) -> dict[str, bytes]:
    """The release's set: site-packages path -> the bytes apply.sh installs there."""
    files = {rel: p.read_bytes() for rel, p in modules(release).items()}
    files.update(fork_texts(release))
    return dict(sorted(files.items()))


def build_manifest(release: str) -> str:
    lines = [
        "# nsa-fastpath manifest: generated by scripts/regen.py from overlay/ -- do not edit.",
        f"# target\tsglang=={release}\twheel {next(iter(wheel_names(release)))} sha256 "
        f"{RELEASES[release]}",
        "# kind\tpath (relative to site-packages)\tpristine sha256 ('-' = file we add)\tpatched sha256",
    ]
    for rel, data in release_files(release).items():
        orig = pristine(release, rel)
        if orig is None:
            lines.append(f"add\t{rel}\t-\t{sha256_bytes(data)}")
        else:
            lines.append(f"replace\t{rel}\t{sha256_bytes(orig)}\t{sha256_bytes(data)}")
    return "\n".join(lines) + "\n"


def render_delta(release: str, fork: dict[str, bytes], records: list[tuple]) -> bytes:
    """patches/<release>.diff: a header (with where each conflict's resolution lies in the
    fork, by rel:line+count and the conflict's key), then each fork against the release's file."""
    base = PORTS[release][0]
    made = (f"Made by `python3 scripts/regen.py --release {release} --port` from our {base} fork"
            if base else f"Written by hand, stored by `python3 scripts/regen.py --release "
                         f"{release} --port --from DIR`")
    out = [f"# nsa-fastpath: our change on SGLang {release}, each file it forks as a diff from "
           "the release's own file\n", f"# to our fork of it. {made}; do not edit.\n"]
    out += [f"# resolved {rel}:{line}+{n} conflict {key}\n" for rel, line, n, key in records]
    body = b""
    for rel in forks(release):
        diff = delta.make(pristine(release, rel), fork[rel], rel)
        if not diff:
            sys.exit(f"our fork of {rel} for SGLang {release} is SGLang's own file")
        body += diff
    return "".join(out).encode() + body


def stored_records(release: str) -> list[tuple[str, int, int, str]]:
    comments, _ = read_delta(release)
    return [(m.group(1), int(m.group(2)), int(m.group(3)), m.group(4))
            for m in map(RECORD.fullmatch, comments) if m]


def write_series(release: str, out: Path) -> list[Path]:
    files = {}
    for rel, data in release_files(release).items():
        if series.area(rel) is None:
            sys.exit(f"{rel} belongs to no commit of SERIES (scripts/nsa_apply/series.py)")
        files[rel] = (pristine(release, rel), data)
    return series.build(release, files, out)


def check(release: str) -> int:
    """The release's manifest and delta are what they regenerate to."""
    if release != BASE and not delta_path(release).exists():
        print(f"DRIFT: patches/{release}.diff is missing: run `python3 scripts/regen.py "
              f"--release {release} --port`")
        return 1
    problems = []
    if release != BASE and delta_path(release).read_bytes() != render_delta(
            release, fork_texts(release), stored_records(release)):
        problems.append(f"patches/{release}.diff is not the diff its own forks give (run "
                        f"`python3 scripts/regen.py --release {release} --port`)")
    if not manifest_path(release).exists() or \
            manifest_path(release).read_text() != build_manifest(release):
        problems.append(f"manifests/{release}.tsv (run `python3 scripts/regen.py --release "
                        f"{release}`)")
    if problems:
        print(f"DRIFT: SGLang {release}'s stored files differ from what overlay/ and the wheel "
              "give:", *problems, sep="\n  ")
        return 1
    print(f"{release}: manifests/{release}.tsv" +
          ("" if release == BASE else f" and patches/{release}.diff") + " regenerate")
    return 0


# ------------------------------------------------------------------ port (--port)
# Every fork keeps SGLang's Apache-2.0 header and a notice naming the release it is based on.
NOTICE = "Based on SGLang {release} (PyPI wheel)"
MARK_OURS, MARK_BASE, MARK_THEIRS, MARK_END = "<<<<<<< ", "||||||| ", "=======", ">>>>>>> "


def lines_of(text: str) -> list[str]:
    """text's lines, split after each \\n only (Python source may hold \\f and the like)."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def merge_file(ours: bytes, base: bytes, theirs: bytes, release: str) -> tuple[str, bool]:
    """`git merge-file --diff3` of our fork (of the merge base's release) onto the release's
    file: (text, conflicted). The notice then names the release (the header is ours alone)."""
    frm = PORTS[release][0]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            paths.append(Path(tmp) / name)
            paths[-1].write_bytes(data)
        proc = subprocess.run(
            ["git", "merge-file", "-p", "--diff3", "-L", f"nsa-fastpath (our {frm} fork)",
             "-L", f"SGLang {frm}", "-L", f"SGLang {release}", *map(str, paths)],
            capture_output=True)
    if proc.returncode < 0 or proc.returncode > 127:
        sys.exit(f"git merge-file failed: {proc.stderr.decode(errors='replace')}")
    text = proc.stdout.decode()
    old, new = NOTICE.format(release=frm), NOTICE.format(release=release)
    if old not in text:
        sys.exit(f"our {frm} fork's header has no notice line '{old}'")
    return text.replace(old, new, 1), proc.returncode > 0


def merged(release: str, rel: str, ours: dict[str, bytes]) -> list:
    """Our fork of the merge base's file merged onto the release's `rel`, split into
    [text, conflict, text, ...] (split_conflicts)."""
    frm, spec = PORTS[release]
    base, theirs = pristine(frm, spec[rel]), pristine(release, rel)
    if base is None or theirs is None:
        sys.exit(f"{spec[rel] if base is None else rel} is missing from SGLang "
                 f"{frm if base is None else release}'s wheel: a port needs the file in both")
    return split_conflicts(merge_file(ours[spec[rel]], base, theirs, release)[0])


def split_conflicts(text: str) -> list:
    """The merge output as [str, (ours, base, theirs, raw), str, ...]: the text outside the
    conflicts (always at even positions) and each conflict, its sides and its marked block."""
    parts, cur, block, side = [], [], None, 0
    for line in lines_of(text):
        if block is None and line.startswith(MARK_OURS):
            parts.append("".join(cur))
            cur, block, side = [], [[], [], [], [line]], 0
            continue
        if block is None:
            cur.append(line)
            continue
        block[3].append(line)
        if line.startswith(MARK_BASE) and side == 0:
            side = 1
        elif line.rstrip("\n") == MARK_THEIRS and side == 1:
            side = 2
        elif line.startswith(MARK_END) and side == 2:
            parts.append(tuple("".join(s) for s in block))
            block = None
        else:
            block[side].append(line)
    parts.append("".join(cur))
    return parts


def key(conflict: tuple) -> str:
    """A conflict's identity: its three sides (ours, base, theirs), hashed."""
    return sha256_bytes("\0".join(conflict[:3]).encode())[:16]


def marked(text: str) -> bool:
    return any(ln.startswith((MARK_OURS, MARK_END)) for ln in lines_of(text))


def extract(parts: list, text: str) -> list[tuple[str, int]] | None:
    """What stands in each conflict's place in `text`, with its first line there; None when
    `text` is not the merge output outside its conflicts (verbatim, in order)."""
    whole_lines = "((?:[^\n]*\n)*?)"  # a conflict's place holds whole lines
    m = re.fullmatch(whole_lines.join(re.escape(t) for t in parts[::2]), text)
    if m is None:
        return None
    return [(g, text.count("\n", 0, m.start(i + 1)) + 1) for i, g in enumerate(m.groups())]


def assemble(parts: list, chosen: list[str | None]) -> tuple[str, list[tuple[int, int]]]:
    """The merge with each conflict replaced by its resolution (None: left marked), and each
    conflict's (first line, line count) in the result."""
    out, spans, line = [], [], 1
    for i, part in enumerate(parts):
        if i % 2:
            res = chosen[i // 2]
            part = part[3] if res is None else res
            if res is not None and res and not res.endswith("\n"):
                sys.exit("a conflict's resolution must end with a newline")
            spans.append((line, part.count("\n")))
        out.append(part)
        line += part.count("\n")
    return "".join(out), spans


def dropped_hooks(conflict: tuple, resolution: str) -> list[str]:
    """Our lines of a conflict (those naming nsa-fastpath) that its resolution lacks."""
    return [ln.strip() for ln in conflict[0].splitlines()
            if "nsa-fastpath" in ln and ln.strip() not in resolution]


def shown(path: Path) -> str:
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)


def report_conflict(where: str, release: str, conflict: tuple) -> str:
    frm = PORTS[release][0]
    show = lambda s: "".join(f"    | {ln}" for ln in s.splitlines(keepends=True)) or "    | (nothing)\n"
    ours, base, theirs = conflict[:3]
    return (f"{where}: conflict\n"
            f"  ours (nsa-fastpath on SGLang {frm}):\n{show(ours)}"
            f"  SGLang {frm} (base):\n{show(base)}"
            f"  SGLang {release} (theirs):\n{show(theirs)}")


def stored_resolutions(release: str) -> dict[str, dict[str, list[str]]]:
    """file -> conflict key -> the resolutions the release's delta holds for such a conflict
    (a file PORTS forks and the delta does not yet hold has none)."""
    if not delta_path(release).exists():
        return {}
    records = stored_records(release)
    fork = fork_texts(release, only={r[0] for r in records})
    out: dict[str, dict[str, list[str]]] = {}
    for rel, line, n, k in records:
        lines = lines_of(fork[rel].decode())
        out.setdefault(rel, {}).setdefault(k, []).append("".join(lines[line - 1:line - 1 + n]))
    return out


def port_file(release: str, rel: str, ours: dict, stored: dict, work: Path,
              imported: tuple | None) -> tuple[str, list, list, list]:
    """Our fork of `rel` for the release: (its text, the records (rel, line, count, key) of its
    resolved conflicts, errors, open conflicts' reports). A conflict's resolution comes from
    `imported` (DIR: whole forks; with DIR_BASE, the whole forks of the merge base they were
    ported from, each conflict matched by key, else by place), else from the work file (by
    place), else from `stored` (key -> resolutions of the release's delta)."""
    frm, spec = PORTS[release]
    parts = merged(release, rel, ours)
    conflicts = parts[1::2]
    placed: list = [(None, None)] * len(conflicts)  # (resolution, line in the work file)
    imported_keyed: dict[str, list] = {}
    given = imported[0] / rel if imported else work / rel
    if given.exists():
        source = parts
        if imported and imported[1] is not None:
            base_fork = imported[1] / spec[rel]
            if not base_fork.exists():
                return "", [], [f"{shown(base_fork)} is missing (--from-base DIR holds the "
                                 "merge base's forks, as DIR/<path>)"], []
            source = merged(release, rel, {spec[rel]: base_fork.read_bytes()})
        found = extract(source, given.read_text())
        if found is None:
            return "", [], [f"{shown(given)} is not the merge of "
                            + (f"{shown(imported[1])}'s fork" if imported and imported[1]
                               else f"our {frm} fork")
                            + f" onto SGLang {release} outside its conflicts: edit only the "
                            "conflict regions" + ("" if imported else
                                                  " (or move the file away and rerun)")], []
        if source is parts:
            placed = [(res, None if imported else at) for res, at in found]
        else:
            for c, (res, _) in zip(source[1::2], found):
                imported_keyed.setdefault(key(c), []).append(res)
    elif imported:
        return "", [], [f"{shown(given)} is missing (--from DIR holds each fork, as "
                        f"DIR/{rel})"], []
    chosen, seen = [], {}
    for c, (res, _) in zip(conflicts, placed):
        k = key(c)
        n = seen[k] = seen.get(k, -1) + 1  # the n-th conflict with these three sides
        for texts in (imported_keyed.get(k, []), stored.get(rel, {}).get(k, [])):
            if (res is None or marked(res)) and n < len(texts):
                res = texts[n]
        chosen.append(None if res is None or marked(res) else res)
    text, spans = assemble(parts, chosen)
    records, errors, opened = [], [], []
    for c, res, (line, n), (_, at) in zip(conflicts, chosen, spans, placed):
        if res is None:
            where = at or line
            opened.append(report_conflict(f"{shown(work / rel)}:{where}", release, c))
            continue
        records.append((rel, line, n, key(c)))
        errors += [f"{shown(given) if given.exists() else rel}: the resolution of the conflict "
                   f"at line {line} drops our line {h!r}" for h in dropped_hooks(c, res)]
    if opened and not (work / rel).exists():
        write(work / rel, text.encode())
    return text, records, errors, opened


def port(release: str, from_dir: Path | None = None, from_base: Path | None = None) -> int:
    """Merge our fork of the merge base's release (PORTS) onto the release's files with
    `git merge-file` and write its delta and manifest. A conflict takes its resolution from
    --from DIR (whole forks, as in DIR/sglang/srt/...; --from-base: the merge base's forks they
    were ported from) or else from the work dir .cache/port/<release>/ (where a human resolves
    them), then from the release's delta, which keeps each resolution with its conflict's key:
    a re-port keeps every resolution whose conflict (ours, base, theirs) is unchanged. A
    conflict left open is written with markers to the work dir and reported as file:line with
    its three sides; exit 1, the delta untouched."""
    if release == BASE:
        write(manifest_path(release), build_manifest(release).encode())
        print(f"{release} is the base release (its forks are overlay/'s): wrote "
              f"manifests/{release}.tsv")
        return 0
    frm = PORTS[release][0]
    if frm is None:
        return store_hand_written(release, from_dir)
    ours, stored = fork_texts(frm), stored_resolutions(release)
    work = PORT_WORK / release
    imported = (from_dir, from_base) if from_dir else None
    fork, records, errors, opened = {}, [], [], []
    for rel in forks(release):
        text, recs, errs, opens = port_file(release, rel, ours, stored, work, imported)
        fork[rel] = text.encode()
        records, errors, opened = records + recs, errors + errs, opened + opens
    if errors:
        print(*errors, sep="\n", file=sys.stderr)
    if opened:
        print(*opened, sep="\n", file=sys.stderr)
        print(f"{len(opened)} conflict(s) left with markers in {shown(work)}/: resolve them there "
              f"(keep our hook, in SGLang {release}'s terms), then rerun `python3 "
              f"scripts/regen.py --release {release} --port` (README: \"Supporting another "
              "SGLang release\").", file=sys.stderr)
    if errors or opened:
        print(f"SGLang {release}: nothing written to patches/ or manifests/", file=sys.stderr)
        return 1
    write(delta_path(release), render_delta(release, fork, records))
    write(manifest_path(release), build_manifest(release).encode())
    shutil.rmtree(work, ignore_errors=True)
    resolved = ", ".join(f"{rel}:{line}" for rel, line, _, _ in records)
    print(f"ported our {frm} fork onto SGLang {release}: wrote patches/{release}.diff and "
          f"manifests/{release}.tsv" + (f" (resolved: {resolved})" if resolved else ""))
    return 0


def store_hand_written(release: str, from_dir: Path | None) -> int:
    """A release whose forks are written by hand (PORTS: no merge base): --from DIR's forks
    become its delta; without --from its stored delta stays (the manifest is rewritten)."""
    if from_dir is not None:
        missing = [rel for rel in forks(release) if not (from_dir / rel).is_file()]
        if missing:
            print(f"{shown(from_dir)} lacks {', '.join(missing)}", file=sys.stderr)
            return 1
        fork = {rel: (from_dir / rel).read_bytes() for rel in forks(release)}
        write(delta_path(release), render_delta(release, fork, []))
    write(manifest_path(release), build_manifest(release).encode())
    print(f"SGLang {release}'s forks are written by hand (PORTS): wrote "
          + ("" if from_dir is None else f"patches/{release}.diff from {shown(from_dir)} and ")
          + f"manifests/{release}.tsv")
    return 0


def check_port(release: str) -> int:
    """The release's forks are the merge of our fork of its merge base onto its files, byte
    for byte but in the conflicts its delta resolves (each resolution recorded with its
    conflict's key, and keeping our lines: those naming nsa-fastpath)."""
    if release == BASE or PORTS[release][0] is None:
        fork_texts(release)  # its delta applies
        print(f"{release}: " + ("the base release (its forks are overlay/'s)" if release == BASE
                                else "its forks are written by hand (PORTS)"))
        return 0
    frm = PORTS[release][0]
    ours, have = fork_texts(frm), fork_texts(release)
    records = stored_records(release)
    problems, resolved = [], []
    for rel in forks(release):
        parts = merged(release, rel, ours)
        conflicts = parts[1::2]
        mine = [r for r in records if r[0] == rel]
        if [r[3] for r in mine] != [key(c) for c in conflicts]:
            problems.append(f"{rel}: patches/{release}.diff resolves {len(mine)} conflict(s), "
                            f"the merge gives {len(conflicts)} other or changed ones")
            continue
        lines = lines_of(have[rel].decode())
        chosen = ["".join(lines[line - 1:line - 1 + n]) for _, line, n, _ in mine]
        text, spans = assemble(parts, chosen)
        if text.encode() != have[rel] or spans != [(r[1], r[2]) for r in mine]:
            problems.append(f"{rel}: our fork for SGLang {release} differs from the merge "
                            "outside its resolved conflicts")
            continue
        for c, res, (_, line, _, _) in zip(conflicts, chosen, mine):
            if marked(res):
                problems.append(f"{rel}:{line}: the resolution holds conflict markers")
            problems += [f"{rel}:{line}: the resolution drops our line {h!r}"
                         for h in dropped_hooks(c, res)]
            resolved.append(f"{rel}:{line}")
    stray = sorted({r[0] for r in records} - set(forks(release)))
    problems += [f"patches/{release}.diff records a resolution in {rel}, which it does not fork"
                 for rel in stray]
    if problems:
        print(f"PORT DRIFT ({release}):", *problems, sep="\n  ")
        print(f"Run `python3 scripts/regen.py --release {release} --port`.")
        return 1
    print(f"{release}: its forks are the merge of our {frm} fork"
          + (f" (resolved: {', '.join(resolved)})" if resolved else ""))
    return 0


def depth(release: str) -> int:
    """How many ports separate the release from BASE (its merge base's first)."""
    n = 0
    while release not in (BASE, None):
        release, n = PORTS[release][0], n + 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n")[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", choices=("series", "forks"),
                    help="write the release's git am series / its whole forks into --out DIR")
    ap.add_argument("--release", choices=tuple(PORTS), action="append",
                    help="release(s) to work on (default: every supported release)")
    ap.add_argument("--out", type=Path, metavar="DIR", help="where `series` and `forks` write")
    ap.add_argument("--check", action="store_true", help="fail if committed files drifted")
    ap.add_argument("--port", action="store_true",
                    help="merge our change onto the release, write its delta and manifest")
    ap.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                    help="with --port: the resolved forks, whole, in DIR/sglang/...")
    ap.add_argument("--from-base", type=Path, metavar="DIR",
                    help="with --from: the merge base's forks DIR's were ported from (default: "
                         "the merge base's as stored)")
    args = ap.parse_args()
    releases = args.release or list(PORTS)
    if args.command:
        if len(releases) != 1 or not args.out or args.check or args.port or args.from_dir:
            ap.error(f"{args.command} takes one --release and --out DIR")
        if args.command == "series":
            names = [p.name for p in write_series(releases[0], args.out)]
            print(f"wrote SGLang {releases[0]}'s git am series into {args.out}: "
                  + ", ".join(names))
        else:
            for rel, data in fork_texts(releases[0]).items():
                write(args.out / rel, data)
            print(f"wrote our forks for SGLang {releases[0]} into {args.out}")
        return 0
    if args.out:
        ap.error("--out goes with `series` or `forks`")
    if args.from_dir and (not args.port or args.check or len(releases) != 1):
        ap.error("--from DIR goes with --port and one --release")
    if args.from_base and not args.from_dir:
        ap.error("--from-base DIR goes with --from")
    rc = 0
    for release in sorted(releases, key=depth):
        if args.port and args.check:
            rc |= check_port(release)
        elif args.check:
            rc |= check(release)
        elif args.port:
            rc |= port(release, args.from_dir, args.from_base)
        else:
            write(manifest_path(release), build_manifest(release).encode())
            print(f"wrote manifests/{release}.tsv")
    return rc


if __name__ == "__main__":
    sys.exit(main())
