"""The releases whose parity runs CI shares (harness/releases.SHARED_RUNS: release -> the one
whose runs stand for it), checked in the session of the release that runs: the two wheels hold
the same files, and every file whose code differs (docstrings, comments aside) is the version
file or one the harness never imports (the import closure of a run of the smoke scenarios on
this session's pristine tree); the files we fork are the same pristine bytes; releases.py keys
no set-up difference between the two versions."""
import ast
import re
import zipfile
from pathlib import Path

import pytest
from conftest import RELEASE, ROOT
from harness import releases
from harness.parity import run_suite
from harness.smoke import SMALL_NSA, SMALL_RADIX

SHARED = sorted(r for r, runs_on in releases.SHARED_RUNS.items() if runs_on == RELEASE)
VERSION_FILES = {"sglang/version.py", "sglang/_version.py", "tools/get_version_tag.py"}


def code(data: bytes) -> str:
    """A Python file's code: its AST without docstrings (comments never reach the AST)."""
    tree = ast.parse(data)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def differing_code(a: Path, b: Path) -> tuple[set, list]:
    """(files in one wheel only, files whose code differs) between two wheels (dist-info aside)."""
    za, zb = zipfile.ZipFile(a), zipfile.ZipFile(b)
    na = {n for n in za.namelist() if ".dist-info/" not in n}
    nb = {n for n in zb.namelist() if ".dist-info/" not in n}
    differ = []
    for name in sorted(na & nb):
        x, y = za.read(name), zb.read(name)
        if x != y and not (name.endswith(".py") and code(x) == code(y)):
            differ.append(name)
    return na ^ nb, differ


@pytest.mark.skipif(not SHARED, reason=f"no release shares SGLang {RELEASE}'s runs")
@pytest.mark.parametrize("other", SHARED)
def test_runs_stand_for(other, pristine_template):
    only_one, differ = differing_code(releases.wheel(RELEASE), releases.wheel(other))
    assert not only_one, f"files in one of {RELEASE} / {other} only: {sorted(only_one)[:20]}"
    dump = run_suite(pristine_template, "nsa", SMALL_NSA + SMALL_RADIX, reuse=True)
    imported = set(dump["_meta/modules"])  # paths in the tree: sglang/...
    assert len(imported) > 200, "the harness imported next to nothing: the check means nothing"
    where = [n for n in differ if n not in VERSION_FILES and n in imported]
    assert not where, f"{other}'s code differs from {RELEASE}'s where the harness goes: {where}"
    forked = [ln.split("\t")[1] for ln in (ROOT / "manifests" / f"{RELEASE}.tsv")
              .read_text().splitlines() if ln.startswith("replace\t")]
    assert forked, f"manifests/{RELEASE}.tsv replaces no file"
    za, zb = zipfile.ZipFile(releases.wheel(RELEASE)), zipfile.ZipFile(releases.wheel(other))
    assert [n for n in forked if za.read(n) != zb.read(n)] == [], "the files we fork differ"
    keyed = set(re.findall(r'_key\("([0-9][^"]*)"\)', (ROOT / "tests/harness/releases.py")
                           .read_text()))
    between = [v for v in keyed if releases._key(RELEASE) < releases._key(v)
               <= releases._key(other)]
    assert not between, f"releases.py sets {between} up differently from {RELEASE}"
