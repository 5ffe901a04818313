"""A release's delta: each SGLang file we fork, as a unified diff from that release's own file to
our fork of it (patches/<release>.diff, made by scripts/regen.py), and the strict applier that
turns the target's own file back into our fork, with no `patch` or `git` on a serving host.

Strict: every hunk must meet its lines exactly where its header says (context and removed lines
byte for byte; no offset, no fuzz), and the result is then checked against the manifest's
sha256 by the caller. Files are bytes split after each b"\\n"; a last line without one is marked
as `diff` marks it. Comment lines (`#`) may precede the first file.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

NO_EOL = b"\\ No newline at end of file\n"
_HUNK = re.compile(rb"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@\n")


class DeltaError(ValueError):
    """The delta is malformed, or does not apply to the bytes it was given."""


@dataclass(frozen=True)
class Hunk:
    old_start: int               # 1-based line of the first old line (the line before, if none)
    old: tuple[bytes, ...]       # context and removed lines, as in the old file
    new_start: int
    new: tuple[bytes, ...]       # context and added lines, as in the new file


def split_lines(data: bytes) -> list[bytes]:
    """data's lines, each with its b"\\n" (the last one without, if data does not end in one)."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _span(start: int, stop: int) -> bytes:
    """A hunk header's range, as diff writes it (difflib._format_range_unified)."""
    n = stop - start
    if n == 1:
        return b"%d" % (start + 1)
    return b"%d,%d" % (start + 1 if n else start, n)


def _body(tag: bytes, lines: list[bytes]) -> list[bytes]:
    return [tag + ln if ln.endswith(b"\n") else tag + ln + b"\n" + NO_EOL for ln in lines]


def make(old: bytes, new: bytes, rel: str, context: int = 3) -> bytes:
    """The unified diff of one file from `old` to `new` (empty when they are equal). Python's
    own SequenceMatcher without its junk heuristic: the same bytes on every machine."""
    a, b = split_lines(old), split_lines(new)
    out: list[bytes] = []
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(context):
        out.append(b"@@ -%s +%s @@\n" % (_span(group[0][1], group[-1][2]),
                                         _span(group[0][3], group[-1][4])))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += _body(b" ", a[i1:i2])
                continue
            out += _body(b"-", a[i1:i2]) + _body(b"+", b[j1:j2])
    if not out:
        return b""
    return b"".join([f"--- a/{rel}\n+++ b/{rel}\n".encode()] + out)


def parse(data: bytes) -> tuple[list[str], dict[str, tuple[Hunk, ...]]]:
    """(the leading comment lines, {file: its hunks in order}); DeltaError names the bad line."""
    lines = split_lines(data)
    comments: list[str] = []
    files: dict[str, tuple[Hunk, ...]] = {}
    i = 0
    while i < len(lines) and lines[i].startswith(b"#"):
        comments.append(lines[i].decode("utf-8", "replace").rstrip("\n"))
        i += 1

    def bad(n: int, why: str) -> DeltaError:
        return DeltaError(f"line {n + 1}: {why}")

    while i < len(lines):
        m_old = re.fullmatch(rb"--- a/(\S+)\n", lines[i])
        m_new = re.fullmatch(rb"\+\+\+ b/(\S+)\n", lines[i + 1]) if i + 1 < len(lines) else None
        if not (m_old and m_new and m_old.group(1) == m_new.group(1)):
            raise bad(i, "expected a file header (--- a/PATH, +++ b/PATH)")
        rel = m_old.group(1).decode()
        if rel in files:
            raise bad(i, f"{rel} appears twice")
        i += 2
        hunks: list[Hunk] = []
        while i < len(lines) and lines[i].startswith(b"@@"):
            m = _HUNK.fullmatch(lines[i])
            if not m:
                raise bad(i, "malformed hunk header")
            o_start, n_start = int(m.group(1)), int(m.group(3))
            o_count = int(m.group(2)) if m.group(2) is not None else 1
            n_count = int(m.group(4)) if m.group(4) is not None else 1
            old: list[bytes] = []
            new: list[bytes] = []
            i += 1
            while len(old) < o_count or len(new) < n_count:
                if i >= len(lines):
                    raise bad(i - 1, "the delta ends inside a hunk")
                tag, text = lines[i][:1], lines[i][1:]
                if tag not in (b" ", b"-", b"+") or not text.endswith(b"\n"):
                    raise bad(i, "not a hunk line")
                no_eol = i + 1 < len(lines) and lines[i + 1] == NO_EOL
                if no_eol:
                    text = text[:-1]
                if tag in (b" ", b"-"):
                    old.append(text)
                if tag in (b" ", b"+"):
                    new.append(text)
                i += 2 if no_eol else 1
            if len(old) != o_count or len(new) != n_count:
                raise bad(i - 1, "a hunk's lines disagree with its header's counts")
            if hunks and o_start <= hunks[-1].old_start + len(hunks[-1].old) - 1:
                raise bad(i - 1, "hunks overlap or are out of order")
            hunks.append(Hunk(o_start, tuple(old), n_start, tuple(new)))
        if not hunks:
            raise bad(i, f"{rel} has no hunks")
        files[rel] = tuple(hunks)
    return comments, files


def apply(data: bytes, hunks: tuple[Hunk, ...], reverse: bool = False) -> bytes:
    """`data` with the hunks applied (reverse: undone), each exactly at its line."""
    src = split_lines(data)
    out: list[bytes] = []
    pos = 0
    for n, h in enumerate(hunks, 1):
        (o_start, old), (n_start, new) = ((h.new_start, h.new), (h.old_start, h.old)) if reverse \
            else ((h.old_start, h.old), (h.new_start, h.new))
        at = o_start - 1 if old else o_start
        if at < pos or at + len(old) > len(src):
            raise DeltaError(f"hunk {n} (line {o_start}) lies outside the file")
        out += src[pos:at]
        if (n_start - 1 if new else n_start) != len(out):
            raise DeltaError(f"hunk {n}: its header's line numbers are inconsistent")
        if src[at:at + len(old)] != list(old):
            first = next(k for k, (x, y) in enumerate(zip(src[at:], old)) if x != y)
            raise DeltaError(f"hunk {n}: line {at + first + 1} differs from the delta's")
        out += new
        pos = at + len(old)
    return b"".join(out + src[pos:])
