"""What the operator docs promise, checked against the repository: README's Layout names every
script, the log lines docs/SERVING.md tells an operator to expect are ones the code logs, and no
doc, script or test names a tool only this project's developers have."""
from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

# A call of the development team's own GPU runner, or words that only make sense with it.
pytestmark = pytest.mark.quick

SKIP = {".git", ".venv", ".cache", ".whl", "__pycache__"}  # not this repository's text;
# docs/results/ holds raw logs of past runs, kept as they were written
TEAM_ONLY = re.compile(r"run\(command=|carry=\[|device tool|on the device\b|device machine")


def matching_lines(paths, pattern: re.Pattern) -> list[str]:
    """`path:line: text` of every line of these text files that `pattern` finds (binary skipped)."""
    hits = []
    for path in paths:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary
        hits += [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    return hits


def test_no_doc_script_or_test_names_a_team_only_tool():
    paths = []
    for top, dirs, files in os.walk(ROOT):
        rel_top = Path(top).relative_to(ROOT).as_posix()
        dirs[:] = [d for d in dirs
                   if d not in SKIP and os.path.normpath(f"{rel_top}/{d}") != "docs/results"]
        paths += [Path(top, name) for name in files]
    hits = matching_lines([p for p in paths if p != ROOT / "tests/test_docs.py"], TEAM_ONLY)
    assert not hits, "\n".join(hits)


def test_readme_layout_names_every_script():
    layout = (ROOT / "README.md").read_text().split("## Layout")[1].split("\n## ")[0]
    scripts = sorted(p.name for p in (ROOT / "scripts").iterdir()
                     if p.suffix in (".sh", ".py") or p.name == "nsa_apply")
    missing = [name for name in scripts if name not in layout]
    assert scripts and not missing, f"README's Layout does not name {missing}"


def _log_templates() -> list[re.Pattern]:
    """Every string literal (f-strings included) in the overlay's Python that starts with
    'nsa-fastpath:', as a regex: %-placeholders and {expressions} match anything."""
    out = []
    for path in (ROOT / "overlay").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".*"
                         for v in node.values]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts = [".*" if p.startswith("%") else re.escape(p)
                         for p in re.split(r"(%[-.\d]*[sdfr])", node.value)]
            else:
                continue
            text = "".join(parts)
            if text.startswith(re.escape("nsa-fastpath:")):
                out.append(re.compile(text, re.S))
    return out


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of each fenced block."""
    out, tag, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if tag is None:
                tag, body = line[3:].strip(), []
            else:
                out.append((tag, "\n".join(body)))
                tag = None
        elif tag is not None:
            body.append(line)
    assert tag is None, "unclosed code block"
    return out


def test_serving_guide_log_lines_are_logged_by_the_code():
    """Each `nsa-fastpath:` line of docs/SERVING.md's examples (`<...>` = a value) is one the
    overlay's code can produce."""
    doc = (ROOT / "docs" / "SERVING.md").read_text()
    lines = [line for tag, body in code_blocks(doc) if tag == "" for line in body.splitlines()
             if line.startswith("nsa-fastpath:")]
    assert len(lines) >= 10, lines
    templates = _log_templates()
    assert templates
    for line in lines:
        concrete = re.sub(r"<[^>]*>", "X", line)
        assert any(t.fullmatch(concrete) for t in templates), f"not logged by the code: {line}"


@pytest.mark.parametrize("doc", ["docs/SERVING.md", "docs/GPU_TIER.md"])
def test_operator_docs_commands_are_shell(doc):
    """Command blocks are bash; nothing else is presented as something to run but the serving
    image's Dockerfile, which tests/test_serving_image.py runs."""
    blocks = code_blocks((ROOT / doc).read_text())
    allowed = {"bash", ""} | ({"dockerfile"} if doc == "docs/SERVING.md" else set())
    assert blocks and {tag for tag, _ in blocks} <= allowed, blocks
    for tag, body in blocks:
        if tag == "bash":
            subprocess.run(["bash", "-n"], input=body, text=True, check=True)


# What an operator reads (docs, the installed code and its messages, --help) says how things are,
# not how the project got there: no development notes, ticket numbers or "no longer".
HISTORY = re.compile(r"\bseed\b(?! ?[=(:*+,)\]])|\bseed 0\d\d|\bissues? #?\d+|\bno longer\b", re.I)
SHIPPED = ["README.md", "ROLLBACK.md", "tests/README.md", "docs/*.md", "overlay/**/*",
           "patches/*", "scripts/*.sh", "scripts/*.py", "scripts/nsa_apply/*.py"]


def test_what_operators_read_has_no_project_history():
    paths = [p for pattern in SHIPPED for p in sorted(ROOT.glob(pattern))
             if p.is_file() and "__pycache__" not in p.parts]
    assert len(paths) > 50, "the shipped files were not found: the check means nothing"
    hits = matching_lines(paths, HISTORY)
    assert not hits, "\n".join(hits)
