"""Shared fixtures: real pip-installed SGLang trees of the release under test (default 0.5.8;
NSA_FASTPATH_TEST_RELEASE, harness/releases.py), pristine and patched by apply.sh."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPLY = ROOT / "scripts" / "apply.sh"

sys.path.insert(0, str(ROOT / "tests"))
from harness import releases  # noqa: E402

RELEASE = releases.release()
WHEEL = releases.wheel(RELEASE)


def pytest_report_header(config):
    return f"nsa-fastpath: SGLang {RELEASE} ({releases.ENV})"


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: docs/GPU_TIER.md (bash scripts/gpu_tier.sh all)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pip_install_sglang(target: Path) -> Path:
    """`pip install --no-deps --target` the pinned wheel: a real site-packages layout."""
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_wheel.sh"), RELEASE], check=True,
                   stdout=subprocess.DEVNULL)  # fetches it if missing; checks its sha256
    # the packages this release imports at other versions than the venv's (harness/releases.py)
    subprocess.run(["bash", str(ROOT / "scripts" / "release_deps.sh"), RELEASE], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "PYTHON": sys.executable})
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
         "--disable-pip-version-check", "--target", str(target), str(WHEEL)],
        check=True,
    )
    return target


def run_apply(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    proc = subprocess.run(
        ["bash", str(APPLY), *args], capture_output=True, text=True, env=full_env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"apply.sh {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def pristine_template(tmp_path_factory) -> Path:
    """A pristine pip-installed SGLang of the release under test; never modified (copy it
    before changing)."""
    return pip_install_sglang(tmp_path_factory.mktemp("pristine") / "site")


@pytest.fixture
def fresh_site(pristine_template, tmp_path) -> Path:
    """A private copy of the pristine site-packages that a test may modify."""
    dst = tmp_path / "site"
    shutil.copytree(pristine_template, dst, symlinks=True)
    return dst


@pytest.fixture(scope="session")
def patched_template(pristine_template, tmp_path_factory) -> Path:
    """A copy of the pristine tree patched by scripts/apply.sh itself; never modified."""
    dst = tmp_path_factory.mktemp("patched") / "site"
    shutil.copytree(pristine_template, dst, symlinks=True)
    run_apply("apply", "--target", str(dst))
    return dst


@pytest.fixture(scope="session")
def nsa_modules(patched_template):
    """nsa-fastpath's NSA modules imported in this process from the patched tree, with the
    test-only stand-ins the runner uses (tests/README.md), for the kernel unit tests."""
    from types import SimpleNamespace

    from harness.runner import STANDINS

    kind = "gpu" if _cuda_available() else "cpu"
    extra = [str(d) for d in releases.standin_dirs(RELEASE, 'cpu' if kind == 'cpu' else 'cuda')]
    deps = [str(d) for d in releases.deps_dirs(RELEASE)]
    sys.path[:0] = [str(patched_template), *deps, str(STANDINS / kind), *extra, str(STANDINS)]
    from sglang.srt.layers.attention.nsa import (
        cuda_metadata_wrapper, metadata_table, triton_batched_copy, triton_metadata_kernel)

    return SimpleNamespace(table=metadata_table, triton=triton_metadata_kernel,
                           cuda=cuda_metadata_wrapper, batched_copy=triton_batched_copy)
