"""What a site-packages tree holds, decided by its files: the release set that fits them, what
is left of another set, and whether SGLang was upgraded, downgraded or uninstalled under it.

The recorded state (sglang/.nsa_fastpath) says which set was applied; the files say which
SGLang is installed now. When pip replaced SGLang's files with another release's while it was
patched, they disagree, and the files decide: the set that fits them is the one to apply, and
what is left of the recorded set (our added files, its backups) goes. A file at a path some set
replaces is SGLang's when it is a supported release's original or, for a release without a set,
when the RECORD of the installed SGLang (pip's list of what it installed) gives its sha256.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import STATE_REL, Manifest, file_state
from .releases import ReleaseSet, fits, version_key
from .tree import Scan, Target, record_hashes, scan, sglang_uninstalled
from .verify import read_recorded


@dataclass
class Known:
    """What the release sets of this checkout (and a verified recorded manifest) say about
    each path: which files there are ours, which are SGLang's."""
    added: dict[str, set[str]] = field(default_factory=dict)     # path -> sha256 of ours
    replaced: dict[str, set[str]] = field(default_factory=dict)  # path -> SGLang's originals
    forks: dict[str, set[str]] = field(default_factory=dict)     # path -> sha256 of our forks

    @classmethod
    def of(cls, manifests) -> "Known":
        k = cls()
        for m in manifests:
            k.learn(m)
        return k

    def learn(self, m: Manifest) -> None:
        for r in m.rows:
            if r.kind == "add":
                self.added.setdefault(r.rel, set()).add(r.post)
            else:
                self.replaced.setdefault(r.rel, set()).add(r.pre)
                self.forks.setdefault(r.rel, set()).add(r.post)

    def ours_in(self, t: Target) -> list[str]:
        """Files of ours in the tree, and backups of files we replace (relative paths)."""
        out = [rel for rel, shas in sorted({**self.added, **self.forks}.items())
               if file_state(t / rel) in shas]
        return out + [f"{STATE_REL}/backup/{rel}" for rel in sorted(self.replaced)
                      if os.path.lexists(t.state / "backup" / rel)]


@dataclass
class Survey:
    t: Target
    known: Known
    recorded: Manifest | None   # verified; None: no state recorded (or --forget-state)
    rs: ReleaseSet | None       # the set whose files the tree holds (None: none of ours fits)
    m: Manifest | None          # the manifest to act on: rs's, or the recorded one if it fits
    scan: Scan | None           # of m
    left: list[str]             # our added files that m does not list (another set's)
    old: str | None             # the recorded set's release, when the files are another's
    own: bool                   # (m is None) each path a set replaces holds the installed
                                # SGLang's own file, by its RECORD: a release without a set
    uninstalled: list[str] | None  # after `pip uninstall sglang`: what is left (ours)
    unreadable: list[str]       # files of the paths sets know, or backups, this user can't read

    @property
    def new(self) -> str:
        """The release whose files the tree holds."""
        return self.rs.name if self.rs else self.m.version if self.m else self.t.version

    @property
    def ours(self) -> list[str]:
        """Our files present: m's patched and added ones, and the others left."""
        rows = [r.rel for r in self.m.rows if self.scan.state[r.rel] in ("patched", "stale")] \
            if self.m else []
        return rows + self.left

    @property
    def added_left(self) -> list[str]:
        """Our added files present (what an upgrade leaves behind)."""
        rows = [r.rel for r in self.m.rows if r.kind == "add"
                and self.scan.state[r.rel] in ("patched", "stale")] if self.m else []
        return rows + self.left

    def change(self) -> str:
        """'upgraded from A to B', 'downgraded ...', or 'changed ...' (old is set)."""
        a, b = version_key(self.old), version_key(self.new)
        verb = "upgraded" if a < b else "downgraded" if b < a else "changed"
        return f"{verb} from {self.old} to {self.new}"

    def change_word(self) -> str:
        return self.change().split()[0]


def survey(t: Target, sets: tuple[ReleaseSet, ...], forget: bool = False) -> Survey:
    """Reads the recorded state (verified: verify.read_recorded refuses what does not verify)
    unless `forget`, then lets the files choose the set."""
    known = Known.of(rs.manifest for rs in sets)
    rec = None if forget else read_recorded(t, known)
    if rec is not None:
        known.learn(rec)

    rs = m = sc = None
    if rec is not None:
        sc = scan(t, rec, known.added)
        if fits(rec, sc):
            m = rec
            rs = next((x for x in sets if x.manifest.sha256 == rec.sha256), None)
    if m is None:
        cands = [(x, s) for x in sets for s in [scan(t, x.manifest, known.added)]
                 if fits(x.manifest, s)]
        if cands:
            rs, sc = next(((x, s) for x, s in cands if x.name == t.version), cands[0])
            m = rs.manifest
    listed = {r.rel for r in m.rows} if m else set()
    left = [rel for rel, shas in sorted(known.added.items())
            if rel not in listed and file_state(t / rel) in shas]
    own = False
    if m is None:
        record = record_hashes(t.root)
        own = bool(record) and all(
            file_state(t / rel) == record[rel] if rel in record else
            not os.path.lexists(t / rel) for rel in known.replaced)
    old = None
    if rec is not None and m is not rec and (m is not None or own):
        old = rec.version
    gone = sglang_uninstalled(t, known.replaced, known.added)
    unreadable = [rel for rel in sorted({**known.added, **known.replaced})
                  if file_state(t / rel) == "unreadable"]
    unreadable += [f"{STATE_REL}/backup/{rel}" for rel in sorted(known.replaced)
                   if file_state(t.state / "backup" / rel) == "unreadable"]
    return Survey(t, known, rec, rs, m, sc if m else None, left, old, own, gone, unreadable)


def empty_manifest(t: Target) -> Manifest:
    """A manifest with no rows: for removing what is left where no set fits."""
    return Manifest(Path("-"), b"", (), f"sglang=={t.version}")
