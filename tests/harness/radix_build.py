"""The compiled radix match helper for the tests: built once per test session into a fresh
directory (so CI builds it every run: a few seconds), then shared by every radix test through
NSA_FASTPATH_BUILD_DIR (passed to the processes they start, never set in this one)."""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "overlay" / "sglang" / "srt" / "mem_cache" / "radix_match_native.py"

_built: dict = {}


def load_native():
    """overlay's radix_match_native.py, loaded as one file (it imports only the standard
    library)."""
    name = "nsa_test_radix_match_native"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, NATIVE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def helper_build_env(tmp_path_factory) -> dict:
    """{"NSA_FASTPATH_BUILD_DIR": dir} holding this session's build of the helper (built on
    first use, here, with a compiler that CI has; a failure fails the test asking for it)."""
    if "env" not in _built:
        directory = tmp_path_factory.mktemp("radix-helper-build")
        native = load_native()
        saved = os.environ.get("NSA_FASTPATH_BUILD_DIR")
        os.environ["NSA_FASTPATH_BUILD_DIR"] = str(directory)
        t0 = time.monotonic()
        try:
            module = native.load(allow_build=True)
        finally:
            if saved is None:
                os.environ.pop("NSA_FASTPATH_BUILD_DIR", None)
            else:
                os.environ["NSA_FASTPATH_BUILD_DIR"] = saved
        assert module is not None, f"the radix match helper did not build: {native.state()}"
        _built.update(env={"NSA_FASTPATH_BUILD_DIR": str(directory)}, module=module,
                      seconds=time.monotonic() - t0)
        print(f"\nradix match helper built in {_built['seconds']:.1f} s into {directory}")
    return dict(_built["env"])


def helper_module(tmp_path_factory):
    helper_build_env(tmp_path_factory)
    return _built["module"]
