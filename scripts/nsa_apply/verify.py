"""What apply.sh reads back from a tree's state directory, verified before it is acted on.

The state directory (STATE = sglang/.nsa_fastpath) is written by apply.sh, but anything can
happen to it afterwards (a truncated copy, a disk error, an edit). Nothing read from it is used
unchecked:
  journal        must parse: op=apply (or an earlier apply.sh's op=revert),
                 state=in-progress|done, manifest_sha256=<64 hex> (and, while an apply
                 replaces another release's set, previous_manifest_sha256)
  manifest.tsv   its sha256 must be the journal's manifest_sha256 (or, then, the previous
                 one), it must parse, and each row must be backed by a release set of this
                 checkout: a file some set adds, or one some set replaces with an original of
                 a supported release (roles_problem). Missing while files of ours are in the
                 tree, it is damage too.
  backup/<path>  the sha256 of each original is checked against the manifest by tree.scan()
  backup bytecode is restored only if it is this Python's bytecode of the very source it is
                 restored beside (header and code object); otherwise it is left out and
                 Python writes it anew on the next import
When the journal or manifest does not verify, nothing is changed; the message names what is
damaged and the way out: `apply.sh revert --forget-state`, which does not read them.
"""
from __future__ import annotations

import importlib.util
import marshal
import os
import re
import stat
from pathlib import Path

from . import errors as E
from .context import command
from .errors import Fail
from .manifest import STATE_REL, Manifest, file_state, load
from .tree import Target

_SHA = re.compile(r"[0-9a-f]{64}")


def state_dir_problem(t: Target) -> str | None:
    """Why <target>/sglang/.nsa_fastpath cannot be apply.sh's state directory (None: it can)."""
    try:
        st = os.lstat(t.state)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return None
    kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "a file"
    return f"{STATE_REL} is {kind}, not the directory apply.sh keeps its state in"


def refuse_foreign_state(t: Target) -> None:
    """A `.nsa_fastpath` that is not a directory was not made by apply.sh: refuse (exit 4)."""
    why = state_dir_problem(t)
    if why:
        raise Fail(E.REFUSED, f"{why} (apply.sh never creates it so): it is not nsa-fastpath's. "
                              f"Move it away (mv {t.state} {t.state}.moved), then rerun. "
                              "Nothing changed.")


def parse_journal(text: str) -> dict[str, str] | None:
    """The journal's fields, or None if it is not a journal apply.sh wrote."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, eq, v = line.partition("=")
        if not eq or k in out:
            return None
        out[k] = v
    # op=revert: journals of the earlier bash apply.sh, interrupted while reverting
    ok = (out.get("op") in ("apply", "revert") and out.get("state") in ("in-progress", "done")
          and _SHA.fullmatch(out.get("manifest_sha256", "")) is not None
          and ("previous_manifest_sha256" not in out
               or (out["state"] == "in-progress"
                   and _SHA.fullmatch(out["previous_manifest_sha256"]) is not None)))
    return out if ok else None


def damage(t: Target, known) -> tuple[list[str], dict[str, str], Path | None]:
    """(what is damaged, the verified journal, the verified recorded manifest's path).

    A journal without manifest.tsv is damage only while something of ours is in the tree (a
    file of ours, a backup of a file we replace): then the manifest that says how to take it
    out is gone. Without any, it is what apply leaves between creating the journal and the
    manifest, or revert between removing the manifest and the journal (engine.py)."""
    S, bad = t.state, []
    jstate, rec = file_state(S / "journal"), S / "manifest.tsv"
    journal: dict[str, str] = {}
    if jstate not in ("missing", "symlink", "notafile", "unreadable"):
        try:
            parsed = parse_journal((S / "journal").read_text(errors="replace"))
        except OSError as e:
            parsed = None
            bad.append(f"{STATE_REL}/journal cannot be read ({e.strerror})")
        if parsed is None and not bad:
            bad.append(f"{STATE_REL}/journal is not a journal apply.sh wrote (corrupt or edited)")
        journal = parsed or {}
    elif jstate != "missing":
        bad.append(f"{STATE_REL}/journal is {jstate}")
    rstate = file_state(rec)
    if rstate == "missing":
        if journal and known.ours_in(t):
            bad.append(f"{STATE_REL}/manifest.tsv is missing, while files of nsa-fastpath's "
                       f"are in the tree ({', '.join(known.ours_in(t)[:3])}"
                       f"{', ...' if len(known.ours_in(t)) > 3 else ''}): which ones the "
                       "applied set holds cannot be known")
        return bad, journal, None
    if rstate in ("symlink", "notafile", "unreadable"):
        bad.append(f"{STATE_REL}/manifest.tsv is {rstate}")
    elif jstate == "missing":
        bad.append(f"{STATE_REL}/manifest.tsv is there but the journal holding its sha256 is "
                   "missing: it cannot be verified")
    elif journal and rstate not in (journal["manifest_sha256"],
                                    journal.get("previous_manifest_sha256")):
        bad.append(f"{STATE_REL}/manifest.tsv has sha256 {rstate}, the journal recorded "
                   f"{journal['manifest_sha256']} (truncated or edited)")
    return bad, journal, rec


def damaged_fail(t: Target, bad: list[str]) -> Fail:
    return Fail(E.MANUAL, f"the state nsa-fastpath keeps in {t.state} is damaged:",
                *("  " + b for b in bad),
                "Nothing changed: acting on it could destroy SGLang's original files.",
                f"The way out: {command('revert', '--forget-state', '--target', t.root)}",
                "  (it ignores the damaged journal and recorded manifest, works from the "
                "release set of this checkout (manifests/) that fits the files, checks every "
                "file and every backup by sha256, and "
                f"removes {STATE_REL}; if it refuses because a file is neither SGLang's nor "
                "nsa-fastpath's, it names the file and what to do)")


def roles_problem(m: Manifest, known) -> list[str]:
    """Rows of a recorded manifest that no release set of this checkout backs: a row may only
    name a file some set adds (ours to remove), or one some set replaces, with an original that
    is that release's (SGLang's to restore). Anything else -- even a consistent edit, the
    journal's sha256 updated -- would let revert delete or overwrite a file it does not own."""
    bad = []
    for r in m.rows:
        if r.kind == "add" and r.rel not in known.added:
            what = ("a file SGLang ships, which nsa-fastpath replaces" if r.rel in known.replaced
                    else "a file no release set of this checkout adds")
            bad.append(f"{STATE_REL}/manifest.tsv lists {r.rel} as a file nsa-fastpath added: "
                       f"it is {what}")
        elif r.kind == "replace" and r.rel not in known.replaced:
            bad.append(f"{STATE_REL}/manifest.tsv lists {r.rel} as a file nsa-fastpath "
                       "replaced: no release set of this checkout replaces it")
        elif r.kind == "replace" and r.pre not in known.replaced[r.rel]:
            bad.append(f"{STATE_REL}/manifest.tsv gives {r.rel} the original sha256 {r.pre}, "
                       "which is no supported SGLang release's")
    return bad


def read_recorded(t: Target, known) -> Manifest | None:
    """The recorded manifest, verified (journal sha256, parse, roles); None when none is
    recorded. Refuses (exit 6, nothing changed) on anything that does not verify, and (exit 4)
    on a .nsa_fastpath that is not apply.sh's directory."""
    refuse_foreign_state(t)
    bad, _, rec = damage(t, known)
    if bad:
        raise damaged_fail(t, bad)
    if rec is None:
        return None
    try:
        recorded = load(rec)
    except Fail as f:
        raise damaged_fail(t, [f"{STATE_REL}/manifest.tsv does not parse: "
                               + " ".join(f.lines).split(": this nsa-fastpath")[0]])
    bad = roles_problem(recorded, known)
    if bad:
        raise damaged_fail(t, bad + ["  (or it was written by another nsa-fastpath version: "
                                     "revert with that version's apply.sh)"])
    return recorded


def bytecode_matches(pyc: Path, source: Path) -> bool:
    """pyc is this Python's bytecode of `source` as it is now: magic number, the header's
    source stamp (mtime and size, or the source hash), and a code object equal to the one
    compiling the source gives. Anything else is not restored (Python rewrites it)."""
    try:
        data, src = pyc.read_bytes(), source.read_bytes()
        st = os.stat(source)
    except OSError:
        return False
    if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags = int.from_bytes(data[4:8], "little")
    if flags & 1:
        if data[8:16] != importlib.util.source_hash(src):
            return False
    elif (int.from_bytes(data[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
          or int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF):
        return False
    opt = 2 if ".opt-2." in pyc.name else 1 if ".opt-1." in pyc.name else 0
    try:
        code = marshal.loads(data[16:])
        want = compile(src, str(source), "exec", dont_inherit=True, optimize=opt)
    except (ValueError, EOFError, TypeError, SyntaxError):
        return False
    return code == want
