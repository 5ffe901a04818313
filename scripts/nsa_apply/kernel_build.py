"""`apply.sh apply --build`: after the apply, build the CUDA metadata kernel with the target's
Python, into the cache a server loads from (cuda_metadata_wrapper --build; TORCH_CUDA_ARCH_LIST
picks the architectures, else this machine's GPU). Progress is one line, rewritten in place."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import errors as E
from .context import Context
from .tree import find_default_target

WRAPPER = Path("sglang/srt/layers/attention/nsa/cuda_metadata_wrapper.py")


def build_kernel(ctx: Context, target: str | None) -> int:
    """Run the patched tree's wrapper file (it imports no SGLang); E.BUILD_FAILED if it fails."""
    wrapper = Path(target or find_default_target()) / WRAPPER
    interactive = ctx.log.out.isatty() if hasattr(ctx.log.out, "isatty") else False
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:  # a file, not a pipe: the child never blocks on it
        proc = subprocess.Popen([sys.executable, str(wrapper), "--build"], stdout=out,
                                stderr=subprocess.STDOUT, text=True, env=ctx.env)
        while proc.poll() is None:
            if interactive:
                ctx.log._write("out", f"\r[nsa-fastpath] building the CUDA metadata kernel: "
                                      f"{time.monotonic() - start:.0f} s ")
            time.sleep(0.5)
        out.seek(0)
        lines = out.read().strip().splitlines() or ["(no output)"]
    if interactive:
        ctx.log._write("out", "\r" + " " * 60 + "\r")
    if proc.returncode == 0:
        ctx.say(lines[-1].removeprefix("nsa-fastpath: "))
        return E.OK
    for line in lines[-5:]:
        ctx.log.error(line.removeprefix("nsa-fastpath: "))
    ctx.log.error("the patch set is applied; servers use the Triton path until the kernel is "
                  f"built (rerun: {sys.executable} {wrapper} --build)")
    return E.BUILD_FAILED
