"""The `git am` series of a release set: one commit per area of SGLang we touch, made from the
release's own files and ours with a fixed author and date, so that the same inputs always give
the same bytes. apply.sh --git makes it from the checkout's files; scripts/regen.py (`series`)
from the release's wheel. Each commit carries the trailer `nsa-fastpath: N`, by which revert
finds it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

from .signals import HANDLED

# One commit per area, in this order; every file of a set falls in one (a path, or a prefix
# ending in /).
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
TRAILER = "nsa-fastpath"
NAME, EMAIL = "nsa-fastpath", "nsa-fastpath@users.noreply.invalid"
FIXED_DATE = "2026-01-01T00:00:00+00:00"


def area(rel: str) -> int | None:
    """The index in SERIES of the commit that carries site-packages path `rel`."""
    for i, (prefix, _, _) in enumerate(SERIES):
        if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
            return i
    return None


def git(repo: Path, *args: str) -> str:
    """git in `repo` with a fixed identity and date and no user or system configuration; in a
    session of its own with apply.sh's signals blocked, so a Ctrl-C never kills it half way
    (apply.sh notes the signal and acts on it at its next step)."""
    env = dict(os.environ, GIT_AUTHOR_NAME=NAME, GIT_AUTHOR_EMAIL=EMAIL, GIT_COMMITTER_NAME=NAME,
               GIT_COMMITTER_EMAIL=EMAIL, GIT_AUTHOR_DATE=FIXED_DATE,
               GIT_COMMITTER_DATE=FIXED_DATE, GIT_CONFIG_NOSYSTEM="1", HOME=str(repo),
               XDG_CONFIG_HOME=str(repo))
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        proc = subprocess.Popen(["git", "-C", str(repo), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                env=env, start_new_session=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed (exit {proc.returncode}): {err.strip()}")
    return out


def build(release: str, files: dict[str, tuple[bytes | None, bytes]], out_dir: Path,
          areas: set[int] | None = None) -> list[Path]:
    """Write the series into out_dir and return its patches in order. files: site-packages
    path -> (SGLang's bytes, or None for a file we add; our bytes). areas: only those commits
    (default: all), e.g. the ones a partly patched checkout still needs."""
    chosen = {rel: v for rel, v in files.items()
              if areas is None or area(rel) in areas}
    with tempfile.TemporaryDirectory(prefix="nsa-fastpath-series-") as tmp:
        repo = Path(tmp)
        git(repo, "init", "-q", "-b", "main")
        for rel, (orig, _) in chosen.items():
            if orig is not None:
                dst = repo / "python" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(orig)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", f"SGLang v{release} (pristine files)")
        n = 0
        for i, (_, subject, body) in enumerate(SERIES):
            members = sorted(rel for rel in chosen if area(rel) == i)
            if not members:
                continue
            for rel in members:
                dst = repo / "python" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(chosen[rel][1])
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"{subject}\n\n{body}\n\n{TRAILER}: {i + 1}")
            n += 1
        out_dir.mkdir(parents=True, exist_ok=True)
        if n == 0:
            return []
        names = git(repo, "format-patch", "--zero-commit", "--no-signature", "--full-index",
                    "-o", str(out_dir.resolve()), f"HEAD~{n}")
    return [Path(p) for p in names.splitlines()]
