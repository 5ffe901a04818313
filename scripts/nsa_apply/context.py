"""What one run of apply.sh works with: the chosen release set, settings, log, signals, faults."""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import Fail, USAGE
from .faults import FaultHook
from .manifest import Manifest
from .output import Log
from .signals import Signals

if TYPE_CHECKING:
    from .releases import ReleaseSet
    from .tree import Target

ROOT = Path(__file__).resolve().parent.parent.parent   # the nsa-fastpath checkout
APPLY_SH = ROOT / "scripts" / "apply.sh"


@dataclass
class Context:
    log: Log
    signals: Signals
    hook: FaultHook
    lock_timeout: float
    status_kernels: bool
    env: dict
    release: "ReleaseSet | None" = None  # the set the target's files fit (survey.py, releases.py)

    @classmethod
    def from_env(cls, env, log: Log | None = None, signals: Signals | None = None,
                 hook: FaultHook | None = None) -> "Context":
        raw = env.get("NSA_FASTPATH_LOCK_TIMEOUT", "")
        try:
            timeout = float(raw) if raw != "" else 600.0
        except ValueError:
            timeout = -1.0
        if not (timeout >= 0 and math.isfinite(timeout)):
            raise Fail(USAGE, f"NSA_FASTPATH_LOCK_TIMEOUT must be a number of seconds >= 0 "
                              f"(got {raw!r}): set it like NSA_FASTPATH_LOCK_TIMEOUT=60, or unset "
                              "it (default 600). Nothing changed.")
        trace = env.get("NSA_FASTPATH_TRACE", "") not in ("", "0")
        return cls(
            log=log or Log(trace=trace),
            signals=signals or Signals(),
            hook=hook or FaultHook.from_env(env),
            lock_timeout=timeout,
            status_kernels=env.get("NSA_FASTPATH_STATUS_FILES_ONLY", "") in ("", "0"),
            env=dict(env),
        )

    def release_sets(self) -> "tuple[ReleaseSet, ...]":
        from .releases import discover
        return discover(self.env, ROOT)

    def use(self, rs: "ReleaseSet", t: "Target | None" = None) -> Manifest:
        """Work with release set `rs`; given the target t, our files for it must match the
        manifest first (ReleaseSet.check: nothing changed otherwise)."""
        if t is not None:
            rs.check(t)
        self.release = rs
        return rs.manifest

    def say(self, msg: str) -> None:
        self.log.say(msg)


def command(*args: str | Path, python: bool = False) -> str:
    """The apply.sh command line an operator can paste (absolute paths, shell-quoted)."""
    import sys
    pre = f"PYTHON={shlex.quote(sys.executable)} " if python else ""
    return pre + " ".join(["bash", shlex.quote(str(APPLY_SH))] + [shlex.quote(str(a)) for a in args])
