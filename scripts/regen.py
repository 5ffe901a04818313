#!/usr/bin/env python3
"""Regenerate a release's manifest and patch series from its pristine SGLang wheel plus overlay/.

A release's set is overlay/<release>/ (its forked SGLang files) plus overlay/shared/ (our modules,
the same for every release; a file in overlay/<release>/ wins over one of the same path there).
patches/<release>/ (a `git am` series against that release's repo layout, python/sglang/...) and
manifests/<release>.tsv (sha256 of each pristine file we replace and of our version) are derived
from it. `--check` regenerates into a temporary directory and fails on any difference, which is
what tests/test_drift.py runs.

`--port` (re)makes overlay/<release>/ first: it 3-way merges our change to the 0.5.8 base
(overlay/0.5.8/, the forks) onto the release's pristine files with `git merge-file`, see port().
A clean merge writes the forks and regenerates the derived files; a conflict is reported as
file:line with both sides, left in the fork with markers for a human to resolve (then
`regen.py --release X` regenerates the derived files), and exits 1. `--port --check` fails
when overlay/<release>/ is not what the merge gives (conflict regions excepted: see
check_port()).

Uses only the standard library and git, so it runs before any virtual environment exists.
"""
from __future__ import annotations

import argparse
import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "overlay"
SHARED = OVERLAY / "shared"

# The PyPI wheels of every SGLang release this checkout knows: release -> {file name: sha256}.
# A release's pristine files come from its wheel; from 0.5.11 SGLang ships one wheel per CPython
# (a compiled gRPC module), whose Python files are the same in each (cp311: the CPU tier's Python;
# cp312: the GPU machine's). Releases past SUPPORTED are pinned for measurement only.
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
# Supported releases (each has a release set: manifests/<release>.tsv): the sha256 of the wheel
# its pristine files are read from (the first pinned one).
SUPPORTED = ("0.5.7", "0.5.8", "0.5.8.post1", "0.5.9", "0.5.10", "0.5.10.post1", "0.5.11", "0.5.12",
             "0.5.12.post1")
RELEASES = {r: next(iter(WHEELS[r].values())) for r in SUPPORTED}
SGLANG_VERSION = "0.5.8"  # the release our change was written against (the merge base of ports)


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


def patches_dir(release: str) -> Path:
    return ROOT / "patches" / release

# One commit per area of SGLang we touch, in this order. Every overlay file must fall in one.
SERIES = [
    (
        "sglang/srt/environ.py",
        "environ: add nsa-fastpath environment flags",
        "Declare the flags that switch each nsa-fastpath optimization on or off\n"
        "(SGLANG_NSA_USE_TRITON_METADATA, SGLANG_NSA_USE_CUDA_METADATA,\n"
        "SGLANG_NSA_USE_BATCHED_COPY, SGLANG_RADIX_FAST_MATCH), declared like\n"
        "SGLang's own flags. Each flag off restores SGLang 0.5.8's own code path.",
    ),
    (
        "sglang/srt/layers/attention/",
        "nsa_backend: nsa-fastpath replay metadata paths",
        "NSA backend changes of the nsa-fastpath patch set: the forked\n"
        "nsa_backend.py and the kernel modules beside it.",
    ),
    (
        "sglang/srt/mem_cache/",
        "radix_cache: nsa-fastpath prefix matching",
        "RadixCache changes of the nsa-fastpath patch set: the forked\n"
        "radix_cache.py and the modules beside it.",
    ),
]
AUTHOR = "nsa-fastpath <nsa-fastpath@users.noreply.invalid>"
FIXED_DATE = "2026-01-01T00:00:00+00:00"  # fixed so regenerated patches are byte-identical


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def overlay_files(release: str) -> dict[str, Path]:
    """The release's set: package-relative path (sglang/...) -> our file; caches excluded."""
    out: dict[str, Path] = {}
    for top in (SHARED, OVERLAY / release):  # the release's own files win
        for p in sorted(top.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                out[p.relative_to(top).as_posix()] = p
    return dict(sorted(out.items()))


def read_wheel(wheel: Path, release: str) -> zipfile.ZipFile:
    digest = sha256_bytes(wheel.read_bytes())
    if digest not in WHEELS[release].values():
        sys.exit(f"{wheel}: sha256 {digest} is not the pinned SGLang {release} wheel")
    return zipfile.ZipFile(wheel)


def pristine_bytes(zf: zipfile.ZipFile, rel: str) -> bytes | None:
    try:
        return zf.read(rel)
    except KeyError:
        return None


def series_index(rel: str) -> int:
    for i, (prefix, _, _) in enumerate(SERIES):
        if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
            return i
    sys.exit(f"overlay/{rel} belongs to no patch in scripts/regen.py SERIES")


def build_manifest(zf: zipfile.ZipFile, release: str) -> str:
    lines = [
        "# nsa-fastpath manifest: generated by scripts/regen.py from overlay/ -- do not edit.",
        f"# target\tsglang=={release}\twheel {next(iter(wheel_names(release)))} sha256 "
        f"{RELEASES[release]}",
        "# kind\tpath (relative to site-packages)\tpristine sha256 ('-' = file we add)\tpatched sha256",
    ]
    for rel, src in overlay_files(release).items():
        ours = sha256_bytes(src.read_bytes())
        orig = pristine_bytes(zf, rel)
        if orig is None:
            lines.append(f"add\t{rel}\t-\t{ours}")
        else:
            lines.append(f"replace\t{rel}\t{sha256_bytes(orig)}\t{ours}")
    return "\n".join(lines) + "\n"


def git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="nsa-fastpath",
        GIT_AUTHOR_EMAIL="nsa-fastpath@users.noreply.invalid",
        GIT_COMMITTER_NAME="nsa-fastpath",
        GIT_COMMITTER_EMAIL="nsa-fastpath@users.noreply.invalid",
        GIT_AUTHOR_DATE=FIXED_DATE,
        GIT_COMMITTER_DATE=FIXED_DATE,
        GIT_CONFIG_NOSYSTEM="1",
        HOME=str(repo),
    )
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, env=env, capture_output=True, text=True
    ).stdout


def build_patches(zf: zipfile.ZipFile, release: str, out_dir: Path) -> None:
    """Commit pristine files, then one commit per SERIES entry, and format-patch them."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        git(repo, "init", "-q", "-b", "main")
        files = overlay_files(release)
        for rel in files:
            orig = pristine_bytes(zf, rel)
            if orig is not None:
                dst = repo / "python" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(orig)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"SGLang v{release} (pristine files)")
        n_commits = 0
        for i, (_, subject, body) in enumerate(SERIES):
            members = [rel for rel in files if series_index(rel) == i]
            if not members:
                continue
            for rel in members:
                dst = repo / "python" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(files[rel], dst)
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"{subject}\n\n{body}\n\nnsa-fastpath: {i + 1}")
            n_commits += 1
        out_dir.mkdir(parents=True, exist_ok=True)
        git(
            repo, "format-patch", "-q", "--zero-commit", "--no-signature", "--full-index",
            "-o", str(out_dir), f"HEAD~{n_commits}",
        )


def generate(wheel: Path, release: str, manifest: Path, patches: Path) -> None:
    zf = read_wheel(wheel, release)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(build_manifest(zf, release))
    if patches.exists():
        shutil.rmtree(patches)
    build_patches(zf, release, patches)


def check(wheel: Path, release: str) -> int:
    MANIFEST, PATCHES = manifest_path(release), patches_dir(release)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_manifest, tmp_patches = Path(tmp) / "manifest.tsv", Path(tmp) / "patches"
        generate(wheel, release, tmp_manifest, tmp_patches)
        problems = []
        if not MANIFEST.exists() or MANIFEST.read_bytes() != tmp_manifest.read_bytes():
            problems.append(str(MANIFEST.relative_to(ROOT)))
        ours = sorted(p.name for p in PATCHES.glob("*.patch")) if PATCHES.exists() else []
        fresh = sorted(p.name for p in tmp_patches.glob("*.patch"))
        if ours != fresh:
            problems.append(f"patch names: committed {ours} vs regenerated {fresh}")
        for name in set(ours) & set(fresh):
            if not filecmp.cmp(PATCHES / name, tmp_patches / name, shallow=False):
                problems.append(f"patches/{release}/{name}")
    if problems:
        print(f"DRIFT: overlay/ and SGLang {release}'s derived files differ:", *problems,
              sep="\n  ")
        print(f"Run `python3 scripts/regen.py --release {release}` and commit the result.")
        return 1
    print(f"{release}: manifests/{release}.tsv and patches/{release}/ match overlay/")
    return 0


# ------------------------------------------------------------------ port (--port)
# The notice line of each fork's header names the release it is based on. Every fork keeps
# SGLang's Apache-2.0 header (tests/test_drift.py).
NOTICE = "Based on SGLang {release} (PyPI wheel)"
MARK_OURS, MARK_BASE, MARK_THEIRS, MARK_END = "<<<<<<< ", "||||||| ", "=======", ">>>>>>> "


def forks() -> list[str]:
    """The SGLang files we fork (package-relative), as overlay/<SGLANG_VERSION>/ holds them."""
    top = OVERLAY / SGLANG_VERSION
    return sorted(p.relative_to(top).as_posix() for p in top.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def merge_file(ours: bytes, base: bytes, theirs: bytes, release: str) -> tuple[str, bool]:
    """`git merge-file --diff3` of our 0.5.8 fork onto the release's file: (text, conflicted).
    The notice then names the release (outside any conflict: the header is ours alone)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            paths.append(Path(tmp) / name)
            paths[-1].write_bytes(data)
        proc = subprocess.run(
            ["git", "merge-file", "-p", "--diff3", "-L", f"nsa-fastpath (our {SGLANG_VERSION} fork)",
             "-L", f"SGLang {SGLANG_VERSION}", "-L", f"SGLang {release}", *map(str, paths)],
            capture_output=True)
    if proc.returncode < 0 or proc.returncode > 127:
        sys.exit(f"git merge-file failed: {proc.stderr.decode(errors='replace')}")
    text = proc.stdout.decode()
    old, new = NOTICE.format(release=SGLANG_VERSION), NOTICE.format(release=release)
    if old not in text:
        sys.exit(f"our fork's header has no notice line '{old}'")
    return text.replace(old, new, 1), proc.returncode > 0


def split_conflicts(text: str) -> list:
    """The merge output as [str, (ours, base, theirs, line), str, ...]: the text outside the
    conflicts (always at even positions) and each conflict with its marker's line number."""
    parts, cur, block, side = [], [], None, 0
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if block is None and line.startswith(MARK_OURS):
            parts.append("".join(cur))
            cur, block, side = [], [[], [], [], n], 0
        elif block is not None and line.startswith(MARK_BASE) and side == 0:
            side = 1
        elif block is not None and line.rstrip("\n") == MARK_THEIRS and side == 1:
            side = 2
        elif block is not None and line.startswith(MARK_END) and side == 2:
            parts.append(tuple("".join(s) for s in block[:3]) + (block[3],))
            block = None
        elif block is not None:
            block[side].append(line)
        else:
            cur.append(line)
    parts.append("".join(cur))
    return parts


def resolutions(parts: list, resolved: str) -> list[str] | None:
    """What a human wrote for each conflict of `parts` in `resolved`, or None when `resolved`
    is not the merge output outside its conflicts (verbatim, in order)."""
    pattern = "(.*?)".join(re.escape(t) for t in parts[::2])
    m = re.fullmatch(pattern, resolved, re.DOTALL)
    if m is None or any(MARK_OURS in r or MARK_END in r for r in m.groups()):
        return None
    return list(m.groups())


def merged(rel: str, base_zf, theirs_zf, release: str) -> tuple[str, bool]:
    """Our base fork of `rel` merged onto the release's file: (text, conflicted)."""
    base, theirs = pristine_bytes(base_zf, rel), pristine_bytes(theirs_zf, rel)
    if base is None or theirs is None:
        sys.exit(f"{rel} is missing from SGLang {SGLANG_VERSION if base is None else release}'s "
                 "wheel: a fork needs the file in both")
    return merge_file((OVERLAY / SGLANG_VERSION / rel).read_bytes(), base, theirs, release)


def port_file(rel: str, base_zf, theirs_zf, release: str) -> tuple[str, list]:
    """The fork of `rel` for `release`: (text, conflicts still open). A conflict the existing
    overlay/<release>/ file already resolves keeps that resolution."""
    text, conflicted = merged(rel, base_zf, theirs_zf, release)
    if not conflicted:
        return text, []
    parts = split_conflicts(text)
    existing = OVERLAY / release / rel
    if existing.exists() and resolutions(parts, existing.read_bytes().decode()) is not None:
        return existing.read_bytes().decode(), []
    return text, parts[1::2]


def report_conflict(rel: str, release: str, conflict) -> str:
    ours, base, theirs, line = conflict
    show = lambda s: "".join(f"    | {ln}" for ln in s.splitlines(keepends=True)) or "    | (nothing)\n"
    return (f"overlay/{release}/{rel}:{line}: conflict\n"
            f"  ours (nsa-fastpath on SGLang {SGLANG_VERSION}):\n{show(ours)}"
            f"  SGLang {SGLANG_VERSION} (base):\n{show(base)}"
            f"  SGLang {release} (theirs):\n{show(theirs)}")


def base_wheel() -> zipfile.ZipFile:
    path = default_wheel(SGLANG_VERSION)
    if not path.exists():
        sys.exit(f"{path} missing: run scripts/fetch_wheel.sh {SGLANG_VERSION} (the merge base)")
    return read_wheel(path, SGLANG_VERSION)


def port(release: str, wheel: Path) -> int:
    """Write overlay/<release>/ by merging our change onto the release; 1 = conflicts left."""
    base_zf = base_wheel()
    theirs_zf = read_wheel(wheel, release)
    open_conflicts = []
    for rel in forks():
        text, conflicts = port_file(rel, base_zf, theirs_zf, release)
        dst = OVERLAY / release / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(text.encode())
        open_conflicts += [report_conflict(rel, release, c) for c in conflicts]
    if open_conflicts:
        print(*open_conflicts, sep="\n", file=sys.stderr)
        print(f"{len(open_conflicts)} conflict(s) left with markers in overlay/{release}/: "
              f"resolve them, then run `python3 scripts/regen.py --release {release}` (and "
              f"`--port --check`) and the tests (README: \"Supporting another SGLang release\").",
              file=sys.stderr)
        return 1
    generate(wheel, release, manifest_path(release), patches_dir(release))
    print(f"ported our change onto SGLang {release}: wrote overlay/{release}/, "
          f"manifests/{release}.tsv and patches/{release}/")
    return 0


def check_port(release: str, wheel: Path) -> int:
    """overlay/<release>/ is the merge of our 0.5.8 fork onto the release, byte for byte;
    in a conflict's place any resolution (the fork records it), everything else verbatim."""
    base_zf = base_wheel()
    theirs_zf = read_wheel(wheel, release)
    problems, resolved = [], []
    for rel in forks():
        text, conflicted = merged(rel, base_zf, theirs_zf, release)
        fork = OVERLAY / release / rel
        have = fork.read_bytes().decode() if fork.exists() else None
        if not conflicted:
            if have != text:
                problems.append(f"overlay/{release}/{rel} is not the clean merge of our "
                                f"{SGLANG_VERSION} fork onto SGLang {release}")
            continue
        parts = split_conflicts(text)
        res = resolutions(parts, have) if have is not None else None
        if res is None:
            problems.append(f"overlay/{release}/{rel} differs from the merge outside its "
                            "conflicts (or a conflict is unresolved)")
            continue
        resolved += [f"{rel}:{c[3]}" for c in parts[1::2]]
        # a resolution keeps our hooks: every line of ours in a conflict marked nsa-fastpath
        for our_side, _, _, line in parts[1::2]:
            for hook in (ln for ln in our_side.splitlines() if "nsa-fastpath" in ln):
                if not any(hook in r for r in res):
                    problems.append(f"overlay/{release}/{rel}:{line}: the resolution drops our "
                                    f"line {hook.strip()!r}")
    if problems:
        print(f"PORT DRIFT ({release}):", *problems, sep="\n  ")
        print(f"Run `python3 scripts/regen.py --release {release} --port`.")
        return 1
    print(f"{release}: overlay/{release}/ is the merge of our {SGLANG_VERSION} fork"
          + (f" (hand-resolved: {', '.join(resolved)})" if resolved else ""))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", choices=sorted(RELEASES), action="append",
                    help="release(s) to regenerate (default: every supported release)")
    ap.add_argument("--wheel", type=Path, help="the release's wheel (default: .cache/wheels/)")
    ap.add_argument("--check", action="store_true", help="fail if committed files drifted")
    ap.add_argument("--port", action="store_true",
                    help="first merge our change onto the release (writes overlay/<release>/)")
    args = ap.parse_args()
    releases = args.release or sorted(RELEASES)
    if args.wheel and len(releases) != 1:
        sys.exit("--wheel needs exactly one --release")
    rc = 0
    for release in releases:
        wheel = args.wheel or default_wheel(release)
        if not wheel.exists():
            sys.exit(f"{wheel} missing: run scripts/fetch_wheel.sh first")
        if args.port and args.check:
            rc |= check_port(release, wheel)
            continue
        if args.check:
            rc |= check(wheel, release)
            continue
        if args.port:
            rc |= port(release, wheel)
            continue
        generate(wheel, release, manifest_path(release), patches_dir(release))
        print(f"wrote manifests/{release}.tsv and patches/{release}/")
    return rc


if __name__ == "__main__":
    sys.exit(main())
