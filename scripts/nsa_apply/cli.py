"""Command line of apply.sh: strict parsing, dispatch, and the mapping of every outcome to an
exit code (USAGE below is the reference; ROLLBACK.md repeats it)."""
from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass

from . import errors as E
from . import gitmode, sitepkgs, sitestatus
from .context import Context
from .kernel_build import build_kernel
from .errors import Fail, Interrupted
from .output import Log
from .signals import Signals
from .releases import version_key

USAGE = """\
Usage: apply.sh apply|revert|status|help [--target SITE_PACKAGES_DIR | --git CHECKOUT] [--dry-run]
       apply.sh apply --build [...]   apply.sh revert --forget-state [--target SITE_PACKAGES_DIR]

Install the nsa-fastpath patch set into SGLang, or roll it back. There is one release set per
supported SGLang release, manifests/<release>.tsv; the sha256 of the target's files chooses it,
never the version string alone. This checkout has sets for: {releases}.

Commands (one is required)
  apply    Check our own inputs first (the release's files against manifests/<release>.tsv
           by sha256: our modules in overlay/, and the SGLang files we fork, made from the
           target's own files and patches/<release>.diff), then every target file by sha256;
           refuse, changing nothing, unless each is that release's original or already ours
           and there is room on the disk for what apply writes. Keep the originals (hard links
           in the state directory), then put our files in place. Re-running it is a no-op;
           after an interrupted run it completes the apply.
  revert   Rename the originals (and pip's bytecode of them) back, remove the files we added
           and the directories we created, then the state directory. Needs no free disk space
           and does not read overlay/ or patches/. After an interrupted run it completes the
           revert; reverting a pristine tree is a no-op. If SGLang itself was uninstalled (pip
           uninstall left our files behind), it removes those leftovers.
  status   Per file: pristine / patched (an SGLang file we replace) / added (a file we add) /
           left (ours, of another release's set) / foreign / missing; the overall state and
           the command that settles it; SGLang version; Triton, the CUDA C++ extension and the
           nsa-fastpath environment flags.
  help     this text (also -h, --help)

Upgrading SGLang (pip install -U sglang, or any other release, while patched)
  pip replaces SGLang's files with the new release's and leaves ours (pip does not list them).
  The files decide, not the recorded state: `status` says "SGLang was upgraded from A to B
  while patched" (exit 7) and how many of our files are left from the A set. Then either
    apply    removes what is left of the A set (our files, its state) and applies B's set
             (if nsa-fastpath has one for B; otherwise it refuses, nothing changed), or
    revert   removes what is left, leaving exactly a clean install of B (also for a release
             nsa-fastpath has no set for: its files are recognised by the sha256 in the RECORD
             pip wrote for it).
  Downgrades work the same way. --git: check out the new release's tag (git drops our
  commits with the old one) and run apply --git again; where the new release was merged or
  rebased under our commits instead, revert --git reverts them, then apply --git.

Trust
  Nothing read back from the state directory is trusted: the recorded manifest must match
  the sha256 in the journal, each of its rows must name a file some release set in manifests/
  adds (ours) or replaces (SGLang's, with a supported release's original), every backup must
  match the sha256 of SGLang's file, and pip's bytecode in the backup must be this Python's
  bytecode of the restored source (otherwise it is left out and Python writes it anew). When
  the journal or recorded manifest does not verify, every command refuses (exit 6) and names
  the way out:
  revert --forget-state   revert without reading the journal and recorded manifest: works from
           the release set (manifests/) whose files the tree holds, still checks every file and
           backup by sha256, then removes the state directory. A file in the way is named with
           what to do (exit 4, nothing changed).

Target (one of)
  (default)           the site-packages dir of the SGLang that $PYTHON (default python3) would
                      import (found with importlib.util.find_spec, not imported); apply.sh
                      itself runs under that Python (3.10 or newer)
  --target DIR        a site-packages dir that contains sglang/
  --git CHECKOUT      a git checkout of SGLang (repo root containing python/sglang/):
                      apply = `git am` of the release set's series, made from the checkout's
                      own files (`python3 scripts/regen.py series --release R --out DIR` writes
                      the same series), revert = `git revert` of the commits carrying the
                      `nsa-fastpath: N` trailer that are still in effect, status = per-file state
  Give each option at most once (--target=DIR and --git=DIR work too); an empty value is
  refused (it usually means an unset shell variable). An SGLang whose files git tracks (an
  editable or source install) is patched with --git CHECKOUT: apply refuses it otherwise.

Options
  --dry-run, -n       print what apply/revert would do; change nothing (status ignores it)
  --forget-state      revert only, site-packages only: see above
  --allow-source-tree apply in place to an SGLang whose files git tracks (status and revert
                      accept and ignore it)
  --build             apply, then build the CUDA metadata kernel with the target's Python into
                      the cache servers load from ($NSA_FASTPATH_BUILD_DIR): nvcc through
                      apache-tvm-ffi, SGLang's own JIT-kernel mechanism, no GPU needed.
                      TORCH_CUDA_ARCH_LIST="9.0a;10.0a" picks the architectures (else this
                      machine's GPU). The cache is keyed by source, architectures, nvcc and
                      tvm-ffi versions: an upgrade rebuilds. Without it the first CUDA-graph
                      capture builds the kernel (unless NSA_FASTPATH_CUDA_JIT=0); `status` says
                      for which GPU it is built.
  -h, --help          this text

Exit codes
  0  ok: done, or nothing to do (already applied / already pristine); status: pristine or patched
  1  unexpected error (a bug in apply.sh) outside a transaction (inside one, any error rolls
     back: 5); `apply.sh status` shows the tree's state; please report it
  2  usage error: bad command line or environment variable; nothing changed
  3  cannot work on this target, nothing changed: no SGLang found (or only our leftovers after
     `pip uninstall sglang`: `revert` removes them), target invalid, an SGLang whose files git
     tracks (use --git, or --allow-source-tree), not readable or writable by this user (the
     directory and why: its mode or its owner), a read-only file system or an immutable
     directory (each named as such), files on different filesystems, not enough free disk
     space, $PYTHON not a Python 3.10 or newer, or this checkout's overlay/, patches/ and
     manifests/ disagree (a file that is not its manifest's sha256, a delta that does not
     apply); status: unknown (files this user cannot read)
  4  refused, nothing changed: a file in the way (neither a supported release's nor ours: a
     local edit, an unsupported SGLang release, a tree mixing releases; also a
     sglang/.nsa_fastpath that is not a directory), uncommitted or staged changes (--git, any
     file while our commits need a clean index), or another nsa-fastpath version recorded
     (revert it first); status: foreign, or unsupported (a release without a set)
  5  stopped and rolled back: a failure (e.g. disk full) or a signal (SIGINT, SIGTERM, SIGHUP)
     stopped the run, and the tree is exactly as before it (--git: HEAD and files unchanged);
     a signal before the first change just stops the run (nothing changed)
  6  needs manual action, nothing changed unless the message says so: the rollback failed,
     a backup is missing or corrupt, the state directory is damaged (journal or recorded
     manifest do not verify, a recorded row names a file no release set backs, manifest.tsv
     deleted while our files remain: `revert --forget-state`), or a git operation apply.sh did
     not start is in progress; the message says what to do
  7  status only: unfinished -- an apply/revert was interrupted (SIGKILL, power loss): rerun
     `apply.sh apply` or `apply.sh revert`, either finishes; SGLang was upgraded or downgraded
     while patched (overall: upgraded / downgraded): `apply` or `revert`, as printed; or SGLang
     was uninstalled and our files remain: `apply.sh revert` removes them
  8  busy, nothing changed: another apply.sh run holds this target's lock, or (--git) git's own
     .git/index.lock exists (the message gives the command that clears it)
 10  apply --build: applied, but the CUDA metadata kernel did not build (the message says why
     and what to do; servers use the Triton path meanwhile)
  Other statuses the shell can show: 129/130/143 -- a SIGHUP/SIGINT/SIGTERM while the bash
  wrapper was still checking $PYTHON (nothing changed). While that Python starts up (a few
  milliseconds, until its first statement) these signals are ignored; from then on they give
  5 before the commit point and leave the run's own code after it. 137 -- SIGKILL (below).
  Never 141, never a KeyboardInterrupt traceback. A closed or failing stdout/stderr only
  loses the output; the exit code stays the run's own.

Signals and pipes
  SIGINT, SIGTERM, SIGHUP  noted; the run stops at the next step boundary and rolls back (exit 5).
                           During a rollback, or after the commit point, the run finishes and
                           exits with its own code (0 after a completed apply or revert).
                           --git: git runs in its own process group, so a Ctrl-C never
                           interrupts it mid-write; the step finishes, then it is undone (5).
  SIGPIPE                  ignored: output into a closed pipe (`apply.sh ... | head`) is dropped,
                           the run finishes and exits with its own code.
  SIGKILL, power loss      cannot be handled. Every file is always whole (its old or its new
                           content) and fsync'd at each commit point; `status` says partial (7);
                           rerun `apply` or `revert`, which finishes from wherever it stopped.

State directory (site-packages mode), inside the target; removed by a successful revert
  <target>/sglang/.nsa_fastpath/journal        op=apply, state=in-progress|done, sha256 of the
                                               manifest (and, while an apply replaces another
                                               release's set, of that one's)
  <target>/sglang/.nsa_fastpath/manifest.tsv   the manifest that was applied (revert uses it)
  <target>/sglang/.nsa_fastpath/created_dirs   directories apply created for added files
  <target>/sglang/.nsa_fastpath/backup/<path>  the original of each replaced file, a hard link
                                               to the file pip installed (sha256-checked), and
                                               pip's __pycache__ bytecode of it
  <target>/sglang/.nsa_fastpath/tmp-*          staging entries of a running apply/revert
Lock: flock on the directory <target>/sglang (--git: on the checkout's git directory). Every
  route to the tree -- another TMPDIR, a symlinked path, a bind mount, another container on the
  same volume -- meets the same lock; nothing is created for it, and the kernel releases it
  when the run ends, however it ends.

Environment
  PYTHON                       the Python that runs apply.sh and whose SGLang is the default
                               target (default python3)
  NSA_FASTPATH_MANIFEST        the one manifest to use (default: the one of manifests/ whose
                               files the target holds)
  NSA_FASTPATH_OVERLAY         a directory holding every file of that manifest (default: overlay/
                               and patches/<release>.diff)
  NSA_FASTPATH_BUILD_DIR       the CUDA kernel cache that --build fills and status reads
                               (default: ~/.cache/nsa-fastpath/build)
  NSA_FASTPATH_LOCK_TIMEOUT    seconds to wait for the lock (default 600)
  NSA_FASTPATH_STATUS_FILES_ONLY=1  status: file states only (no Triton/CUDA/flags report)
  NSA_FASTPATH_TRACE=1         log every mutating step
  NSA_FASTPATH_FAULT_AT=N, NSA_FASTPATH_FAULT_MODE=error|kill|enospc|sigint|sigterm|sighup|
    sigpipe|fill|slow, NSA_FASTPATH_FAULT_FILL=FILE: tests only, disturb the N-th mutating
    step (scripts/nsa_apply/faults.py)
"""


def usage() -> str:
    """USAGE with the releases this checkout has a set for."""
    from .context import ROOT
    found = sorted((p.stem for p in (ROOT / "manifests").glob("*.tsv")), key=version_key)
    return USAGE.replace("{releases}", ", ".join(found) or "none in this checkout")


COMMANDS = ("apply", "revert", "status", "help")
USAGE_LINE = ("usage: apply.sh apply|revert|status|help [--target DIR | --git DIR] [--dry-run] "
              "[--build] [--forget-state] [--allow-source-tree]")
HELP_LINE = "`apply.sh --help` lists the commands, options and exit codes."
SHORT_USAGE = f"{USAGE_LINE}; {HELP_LINE}"


@dataclass
class Args:
    cmd: str | None = None
    target: str | None = None
    git: str | None = None
    dry: bool = False
    forget: bool = False
    help: bool = False
    build: bool = False
    allow_source: bool = False


def parse(argv: list[str]) -> Args:
    a, seen, cmd = Args(), set(), None

    def once(name: str) -> None:
        if name in seen:
            raise Fail(E.USAGE, f"{name} given more than once: give it once. Nothing changed.")
        seen.add(name)

    def value(name: str, v: str) -> str:
        if v == "":
            raise Fail(E.USAGE, f"{name} has an empty value (an unset shell variable, as in "
                                f"{name}=\"$DIR\"?): give the directory. Nothing changed.")
        if v.startswith("-"):
            raise Fail(E.USAGE, f"{name} needs a directory, got the option {v!r} (write ./{v} "
                                "for a directory with that name). Nothing changed.")
        return v

    it = iter(argv)
    for arg in it:
        if arg in COMMANDS:
            if cmd is not None:
                raise Fail(E.USAGE, f"more than one command: {cmd} and {arg}: give one of "
                                    f"{', '.join(COMMANDS)}. Nothing changed.")
            cmd = arg
        elif arg in ("--target", "--git") or arg.startswith(("--target=", "--git=")):
            name, eq, v = arg.partition("=")
            once(name)
            if not eq:
                v = next(it, None)
                if v is None:
                    raise Fail(E.USAGE, f"{name} needs a directory. Nothing changed.")
            setattr(a, name[2:], value(name, v))
        elif arg in ("--dry-run", "-n"):
            once("--dry-run")
            a.dry = True
        elif arg == "--forget-state":
            once("--forget-state")
            a.forget = True
        elif arg in ("-h", "--help"):
            a.help = True
        elif arg == "--build":
            once(arg)
            a.build = True
        elif arg == "--allow-source-tree":
            once(arg)
            a.allow_source = True
        else:
            raise Fail(E.USAGE, f"unknown argument {arg!r}: commands are {', '.join(COMMANDS)}; "
                                "options --target DIR, --git DIR, --dry-run, --build, "
                                "--forget-state, --allow-source-tree (see --help). "
                                "Nothing changed.")
    if a.target is not None and a.git is not None:
        raise Fail(E.USAGE, "--target and --git exclude each other: give one. Nothing changed.")
    a.cmd = cmd
    a.help = a.help or cmd == "help"
    if a.forget and (cmd != "revert" or a.git is not None):
        raise Fail(E.USAGE, "--forget-state goes with `revert` of a site-packages tree only. "
                            "Nothing changed.")
    if a.allow_source and a.git is not None:
        raise Fail(E.USAGE, "--allow-source-tree goes with a site-packages target (--git "
                            "changes a checkout by commits). Nothing changed.")
    if a.build and (a.cmd != "apply" or a.git is not None):
        raise Fail(E.USAGE, "--build goes with apply on a site-packages target (it builds with "
                            "that Python). Nothing changed.")
    return a


def dispatch(ctx: Context, a: Args) -> int:
    if a.git is not None:
        if a.cmd == "status":
            return gitmode.cmd_status(ctx, a.git)
        return (gitmode.cmd_apply if a.cmd == "apply" else gitmode.cmd_revert)(ctx, a.git, a.dry)
    if a.cmd == "status":
        return sitestatus.cmd_status(ctx, a.target)
    if a.cmd == "apply":
        rc = sitepkgs.cmd_apply(ctx, a.target, a.dry, a.allow_source)
    else:
        rc = sitepkgs.cmd_revert(ctx, a.target, a.dry, a.forget)
    if rc == E.OK and a.build and a.cmd == "apply" and not a.dry:
        rc = build_kernel(ctx, a.target)
    return rc


def main(argv: list[str], env=None, log: Log | None = None, hook=None,
         early: list | None = None, standalone: bool = False) -> int:
    """early: signal numbers __main__'s first handler noted while Python was starting (it
    stays installed until signals.install() below, so none is missed); standalone: this
    process ends after main() (our handlers stay: a late signal is only a note)."""
    env = os.environ if env is None else env
    log = log or Log(trace=env.get("NSA_FASTPATH_TRACE", "") not in ("", "0"))
    signals = Signals()
    try:
        signals.install()  # inside the try: a signal during it is "interrupted, nothing changed"
        if early:
            raise Interrupted(signal.Signals(early[0]).name)
        try:
            a = parse(argv)
        except Fail as f:
            f.lines.append(SHORT_USAGE)
            raise
        if a.help:
            log.raw(usage().rstrip("\n"))
            return E.OK
        if a.cmd is None:
            log.error("no command given: say `apply`, `revert` or `status`. Nothing changed.")
            log.raw_err(USAGE_LINE)
            log.raw_err(HELP_LINE)
            return E.USAGE
        ctx = Context.from_env(env, log=log, signals=signals, hook=hook)
        return dispatch(ctx, a)
    except Fail as f:
        signals.hold()
        for line in f.lines:
            log.error(line)
        return f.code
    except Interrupted as i:  # raised only while nothing has been changed (signals.py)
        signals.hold()
        log.error(f"interrupted by {i.signame} before any change: nothing changed")
        return E.ROLLED_BACK
    except OSError as e:
        signals.hold()
        log.error(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
                  + " (no transaction was running: the target is as it was)")
        return E.TARGET
    except Exception:  # noqa: BLE001
        signals.hold()
        for line in traceback.format_exc().rstrip().splitlines():
            log.error(line)
        log.error("unexpected error (a bug in apply.sh), outside a transaction: run "
                  "`apply.sh status` to see the state of the tree, and please report the lines "
                  "above.")
        return E.UNEXPECTED
    finally:
        signals.hold()
        if not standalone:
            signals.restore()
