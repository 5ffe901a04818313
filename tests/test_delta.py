"""scripts/nsa_apply/delta.py: the unified diffs a release's forks are stored as, and the strict
applier apply.sh materializes them with (exact lines at exact places, no fuzz), checked against
random edits and against `git apply` reading the same diffs."""
from __future__ import annotations

import random
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from nsa_apply import delta as D  # noqa: E402


def random_pair(rng: random.Random) -> tuple[bytes, bytes]:
    words = [b"a\n", b"b\n", b"c\n", b"\n", b"dd\n", b"x", b""]
    old = b"".join(rng.choice(words[:5]) for _ in range(rng.randint(0, 40)))
    if old and rng.random() < 0.3:
        old = old[:-1]  # no newline at the end
    lines = D.split_lines(old)
    for _ in range(rng.randint(0, 6)):
        k = rng.randint(0, len(lines))
        r = rng.random()
        if r < 0.4:
            lines.insert(k, rng.choice(words))
        elif lines and r < 0.8:
            del lines[min(k, len(lines) - 1)]
        elif lines:
            lines[min(k, len(lines) - 1)] = b"z\n"
    return old, b"".join(lines)


def test_random_edits_round_trip_both_ways():
    rng = random.Random(20261206)
    for _ in range(3000):
        old, new = random_pair(rng)
        diff = D.make(old, new, "f.py", context=rng.choice([0, 1, 3]))
        if old == new:
            assert diff == b""
            continue
        _, files = D.parse(diff)
        assert D.apply(old, files["f.py"]) == new, diff
        assert D.apply(new, files["f.py"], reverse=True) == old, diff


def test_git_apply_reads_the_same_diffs(tmp_path):
    """The stored format is plain unified diff: git applies it to the same result."""
    rng = random.Random(7)
    checked = 0
    while checked < 40:
        old, new = random_pair(rng)
        diff = D.make(old, new, "f.py")
        if not diff or not old:
            continue
        (tmp_path / "f.py").write_bytes(old)
        (tmp_path / "d.diff").write_bytes(diff)
        p = subprocess.run(["git", "apply", "d.diff"], cwd=tmp_path, capture_output=True)
        assert p.returncode == 0 and (tmp_path / "f.py").read_bytes() == new, p.stderr
        checked += 1


OLD = b"".join(b"line %d\n" % i for i in range(1, 21))
NEW = OLD.replace(b"line 10\n", b"line 10\nours\n")


def test_strict_no_offset_no_fuzz():
    _, files = D.parse(D.make(OLD, NEW, "f.py"))
    hunks = files["f.py"]
    assert D.apply(OLD, hunks) == NEW
    with pytest.raises(D.DeltaError, match="hunk 1: line"):
        D.apply(b"extra\n" + OLD, hunks)               # the same lines, one further down
    with pytest.raises(D.DeltaError, match="hunk 1: line 9 differs"):
        D.apply(OLD.replace(b"line 9\n", b"line 9 \n"), hunks)  # a context line changed
    with pytest.raises(D.DeltaError, match="outside the file"):
        D.apply(OLD[:40], hunks)
    with pytest.raises(D.DeltaError):
        D.apply(OLD, hunks, reverse=True)                 # OLD is not the patched file


@pytest.mark.parametrize("text,why", [
    (b"--- a/f.py\n+++ b/g.py\n@@ -1 +1 @@\n-a\n+b\n", "file header"),
    (b"--- a/f.py\n+++ b/f.py\n", "no hunks"),
    (b"--- a/f.py\n+++ b/f.py\n@@ -1,2 +1,2 @@\n-a\n+b\n", "ends inside a hunk"),
    (b"--- a/f.py\n+++ b/f.py\n@@ -1 +1,2 @@\n-a\n-b\n+c\n+d\n", "counts"),
    (b"--- a/f.py\n+++ b/f.py\n@@ -1 +1 @@\n?a\n+b\n", "not a hunk line"),
    (b"--- a/f.py\n+++ b/f.py\n@@ -5 +5 @@\n-a\n+b\n@@ -3 +3 @@\n-a\n+b\n", "out of order"),
    (b"--- a/f.py\n+++ b/f.py\n@@ -1 +1 @@\n-a\n+b\n--- a/f.py\n+++ b/f.py\n@@ -1 +1 @@\n-a\n+b\n",
     "twice"),
    (b"# a comment\nnot a diff\n", "file header"),
])
def test_malformed_deltas_are_named(text, why):
    with pytest.raises(D.DeltaError, match=why):
        D.parse(text)


def test_comments_and_several_files():
    text = b"# one\n# two\n" + D.make(OLD, NEW, "a.py") + D.make(NEW, OLD, "b.py")
    comments, files = D.parse(text)
    assert comments == ["# one", "# two"] and list(files) == ["a.py", "b.py"]
    assert D.apply(NEW, files["b.py"]) == OLD
