"""--git CHECKOUT: apply = `git am` of the set's series, made from the checkout's own files
(series.py), revert = `git revert` of our commits.

Before running `git am` or `git revert` we write a marker, <git dir>/nsa-fastpath-op (op and
the HEAD it started from). A later run that finds the marker knows an interrupted git am /
git revert is our own: it aborts it (back to that HEAD) and then does what it was asked to.
Any other operation in progress, or git's own .git/index.lock, makes us stop without a change
and say which git command clears it.

git runs in a session (process group) of its own: a Ctrl-C or a signal to apply.sh's process
group never reaches it, so git is never stopped mid-write by one. apply.sh notes the signal,
lets the git command finish, then undoes its step (exit 5). Only SIGKILL / power loss can stop
git half way; the marker lets the next run recognise and undo what it left, including the
states git leaves when it dies early: a rebase-apply/ without `applying`, a sequencer/ without
a todo list, or changed files with no operation recorded at all.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from . import errors as E
from . import series
from .context import Context, command
from .engine import note_late_signal, reverted_summary
from .errors import Fail, Interrupted
from .lock import DirLock
from .signals import HANDLED
from .manifest import Manifest
from .releases import diagnose, fitting
from .tree import Scan, Target, scan, sglang_version
from .txn import fsync_dir

MARKER = "nsa-fastpath-op"
TRAILER = "nsa-fastpath"


class Checkout:
    def __init__(self, ctx: Context, arg: str):
        self.ctx = ctx
        if not Path(arg).is_dir():
            raise Fail(E.TARGET, f"--git {arg}: no such directory. Nothing changed.")
        self.co = Path(os.path.realpath(arg))
        top = self.git("rev-parse", "--show-toplevel")
        if top.returncode != 0:
            raise Fail(E.TARGET, f"{self.co} is not a usable git checkout (pass the root of your "
                                 f"SGLang clone); git says: {top.stderr.strip()}. Nothing "
                                 "changed.")
        if os.path.realpath(top.stdout.strip()) != str(self.co):
            raise Fail(E.TARGET, f"{self.co} is not the root of its git checkout "
                                 f"({top.stdout.strip()} is). Nothing changed.")
        if not (self.co / "python" / "sglang").is_dir():
            raise Fail(E.TARGET, f"{self.co} has no python/sglang/: not an SGLang checkout. "
                                 "Nothing changed.")
        gd = self.git("rev-parse", "--absolute-git-dir")
        gitdir = gd.stdout.strip()
        if gd.returncode != 0 or not gitdir or not os.path.isabs(gitdir):  # never '' as a path
            raise Fail(E.TARGET, f"cannot find the git directory of {self.co} (git rev-parse "
                                 f"said {gitdir!r}, exit {gd.returncode}). Nothing changed.")
        self.gitdir = Path(gitdir)
        self.target = Target(self.co / "python", sglang_version(self.co / "python"))
        self.steps = 0

    # ------------------------------------------------------------ git plumbing
    def git(self, *args: str) -> subprocess.CompletedProcess:
        """Runs git where no signal meant for apply.sh reaches it: in a session of its own
        (a Ctrl-C goes to our process group), and started with SIGINT/SIGTERM/SIGHUP blocked
        (the mask is inherited through exec), which also covers the instant between fork and
        setsid when the child is still in our group. apply.sh notes the signal and acts on
        it once git is done (signals.py)."""
        env = dict(os.environ, GIT_EDITOR="true", GIT_TERMINAL_PROMPT="0")
        old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            proc = subprocess.Popen(["git", "-C", str(self.co), *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                    errors="replace", env=env, start_new_session=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        with proc:
            try:
                stdout, stderr = proc.communicate()
            except BaseException:  # Interrupted: only before any change (read-only git)
                proc.kill()
                proc.wait()
                raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def out(self, *args: str) -> str:
        p = self.git(*args)
        if p.returncode != 0:
            raise Fail(E.MANUAL, f"`git {' '.join(args)}` failed in {self.co} (exit "
                                 f"{p.returncode}):",
                       *p.stderr.strip().splitlines(), "Check `git status` there.")
        return p.stdout

    def path(self, name: str) -> Path:
        """A file of this worktree's git directory (the states we look at are per worktree)."""
        return self.gitdir / name

    def head(self) -> str:
        return self.out("rev-parse", "HEAD").strip()

    def paths(self, m: Manifest) -> list[str]:
        return ["python/" + r.rel for r in m.rows]

    def dirty(self, paths: list[str]) -> str:
        return self.out("status", "--porcelain", "--untracked-files=all", "--", *paths)

    def identity(self) -> None:
        """`git am`/`git revert` need an identity; fall back to one naming this tool."""
        if not self.git("config", "user.name").stdout.strip():
            os.environ.setdefault("GIT_AUTHOR_NAME", "nsa-fastpath apply.sh")
            os.environ.setdefault("GIT_COMMITTER_NAME", "nsa-fastpath apply.sh")
        if not self.git("config", "user.email").stdout.strip():
            os.environ.setdefault("GIT_AUTHOR_EMAIL", "nsa-fastpath@localhost")
            os.environ.setdefault("GIT_COMMITTER_EMAIL", "nsa-fastpath@localhost")

    # ------------------------------------------------------------ state
    def in_progress(self, ours: str = "") -> str | None:
        """The git operation in progress. `ours`: the op our marker names; git's half-started
        states of it (killed before writing `applying` / the todo list) count as that op."""
        ra = self.path("rebase-apply")
        if ra.is_dir():
            if (ra / "applying").exists():
                return "am"
            if (ra / "rebasing").exists():
                return "rebase"
            return "am" if ours == "am" else "rebase"
        if self.path("rebase-merge").is_dir():
            return "rebase"
        if self.path("REVERT_HEAD").exists():
            return "revert"
        seq = self.path("sequencer")
        if seq.is_dir():
            try:
                first = (seq / "todo").read_text().split(None, 1)[0]
            except (OSError, IndexError):
                first = ""
            if first == "revert" or (first == "" and ours == "revert"):
                return "revert"
            return "cherry-pick"
        if self.path("CHERRY_PICK_HEAD").exists():
            return "cherry-pick"
        if self.path("MERGE_HEAD").exists():
            return "merge"
        return None

    def check_index_lock(self) -> None:
        lock = self.path("index.lock")
        if lock.exists():
            raise Fail(E.BUSY, f"git's own lock {lock} exists: a git command is running in "
                               f"{self.co}, or one was killed. If no git process is working "
                               f"there, clear it with: rm -f {lock}   -- then rerun. Nothing "
                               "changed.")

    def read_marker(self) -> dict[str, str]:
        try:
            text = self.path(MARKER).read_text()
        except OSError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def write_marker(self, op: str, head0: str) -> None:
        p = self.path(MARKER)
        tmp = p.with_name(p.name + f".tmp-{os.getpid()}")
        with open(tmp, "w") as fh:
            fh.write(f"# written by nsa-fastpath apply.sh while it runs git {op}\n"
                     f"op={op}\nhead={head0}\npid={os.getpid()}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
        fsync_dir(p.parent)

    def remove_marker(self) -> None:
        try:
            os.unlink(self.path(MARKER))
        except FileNotFoundError:
            pass
        fsync_dir(self.gitdir)

    def step(self, what: str) -> None:
        self.steps += 1
        self.ctx.log.trace(f"step {self.steps}: {what}")
        self.ctx.hook.after(self.steps, what)
        self.ctx.signals.check()

    # ------------------------------------------------------------ undo / recovery
    def ours_since(self, head0: str) -> bool:
        """Every commit in head0..HEAD is one of ours (a patch, or a revert of one)."""
        if self.git("merge-base", "--is-ancestor", head0, "HEAD").returncode != 0:
            return False
        for sha in self.out("rev-list", f"{head0}..HEAD").split():
            body = self.out("log", "-1", "--format=%B", sha)
            trailer = self.out("log", "-1", f"--format=%(trailers:key={TRAILER},valueonly)", sha)
            reverted = re.search(r"This reverts commit ([0-9a-f]{40})", body)
            if trailer.strip():
                continue
            if reverted and self.out("log", "-1", f"--format=%(trailers:key={TRAILER},valueonly)",
                                     reverted.group(1)).strip():
                continue
            return False
        return True

    def undo(self, paths: list[str], head0: str, op: str) -> str | None:
        """Abort our git `op` and go back to head0. Returns None, or why that failed.

        We start `git am`/`git revert` only on a clean index and with our files clean, so
        whatever is staged now, and any change to our files, is our operation's: `git reset
        --merge` drops the staged part, and our files are then taken from head0 (a git killed
        mid-write can leave them changed but not staged)."""
        self.git("update-index", "-q", "--refresh")  # stale stat info is not a change
        ip = self.in_progress(op)
        if ip in ("am", "revert") and ip == op:
            p = self.git(ip, "--abort")
            if p.returncode != 0 or self.in_progress(op) is not None:
                self.git(ip, "--quit")
            if self.in_progress(op) is not None:  # half-started: git's state dir is ours
                shutil.rmtree(self.path("rebase-apply" if ip == "am" else "sequencer"),
                              ignore_errors=True)
                for name in ("REVERT_HEAD", "CHERRY_PICK_HEAD"):
                    if ip == "revert" and self.path(name).exists():
                        os.unlink(self.path(name))
            if self.in_progress(op) is not None:
                return f"`git {ip} --abort` failed: {p.stderr.strip()}"
        elif ip is not None:
            return f"a git {ip} is in progress, which apply.sh did not start"
        if self.head() != head0 and not self.ours_since(head0):
            return f"HEAD moved from {head0[:12]} by commits that are not nsa-fastpath's"
        if self.head() != head0 or self.dirty(paths) or self.staged():
            p = self.git("reset", "--quiet", "--merge", head0)
            if p.returncode != 0:
                return f"`git reset --merge {head0[:12]}` failed: {p.stderr.strip()}"
        if self.dirty(paths):
            why = self.restore_paths(paths, head0)
            if why:
                return why
        if self.head() != head0 or self.dirty(paths):
            return f"{self.co} is not back at {head0[:12]} with clean files"
        self.remove_marker()
        return None

    def staged(self) -> list[str]:
        return self.out("diff", "--cached", "--name-only").splitlines()

    def restore_paths(self, paths: list[str], head0: str) -> str | None:
        """Our files exactly as in head0: tracked ones checked out, others removed."""
        tracked = set(self.out("ls-tree", "-r", "--name-only", head0, "--", *paths).split())
        extra = [p for p in paths if p not in tracked]
        if extra:
            self.git("rm", "-q", "--cached", "--ignore-unmatch", "--", *extra)
            for p in extra:
                if os.path.lexists(self.co / p):
                    os.unlink(self.co / p)
        if tracked:
            p = self.git("checkout", "-f", head0, "--", *sorted(tracked))
            if p.returncode != 0:
                return f"`git checkout {head0[:12]} -- <our files>` failed: {p.stderr.strip()}"
        return None

    def recover(self, paths: list[str], dry: bool = False) -> bool:
        """Abort our own interrupted git am / git revert; refuse on anyone else's. `paths`:
        every file any release set touches (this runs before a set is chosen by the files'
        hashes, which an interrupted operation may have left mixed). Returns whether there
        was something to clear (dry: what it would clear, changing nothing)."""
        marker = self.read_marker()
        ip = self.in_progress(marker.get("op", ""))
        if ip is not None and marker.get("op") != ip:
            cont = {"am": "git am --continue", "rebase": "git rebase --continue",
                    "revert": "git revert --continue", "cherry-pick": "git cherry-pick --continue",
                    "merge": "git commit"}[ip]
            abort = {"merge": "git merge --abort"}.get(ip, f"git {ip} --abort")
            raise Fail(E.MANUAL, f"a git {ip} is in progress in {self.co}, not started by "
                                 f"apply.sh: finish it ({cont}) or abort it ({abort}), then "
                                 "rerun. Nothing changed.")
        if not marker:
            return False
        head0, op = marker.get("head", ""), marker.get("op", "")
        if ip is None and not self.dirty(paths) and not self.staged():
            self.ctx.say(f"found the marker of an interrupted apply.sh run (git {op or '?'}; "
                         f"no git operation in progress, our files clean): "
                         + ("would remove it" if dry else "removed it"))
            if not dry:
                self.remove_marker()
            return True
        what = f"git {ip}" if ip else f"git {op or '?'} (it left changed files)"
        self.ctx.say(f"found an interrupted {what} of a killed apply.sh run: "
                     + ("would undo" if dry else "undoing") + f" it (back to {head0[:12]})")
        if dry:
            return True
        why = self.undo(paths, head0, op) if re.fullmatch(r"[0-9a-f]{40,64}", head0) else \
            f"the marker names no starting commit ({head0!r})"
        ip = ip or op
        if why:
            raise Fail(E.MANUAL, f"could not abort the interrupted git {ip} in {self.co}: {why}. "
                                 f"Check `git status` there; `git {ip} --abort` then `rm -f "
                                 f"{self.path(MARKER)}` clear it.")
        return True

    # ------------------------------------------------------------ one git operation
    def run_op(self, paths: list[str], op: str, args: list[str]) -> str:
        """Runs `git op args` as a transaction: on failure or a signal, back to HEAD (`paths`:
        the files it may change). Returns head0."""
        self.identity()
        head0 = self.head()
        with self.ctx.signals.deferred():
            try:
                self.write_marker(op, head0)
                self.step(f"wrote {self.path(MARKER)}")
                p = self.git(op, *args)
                if p.returncode != 0:
                    for line in (p.stdout + p.stderr).strip().splitlines():
                        self.ctx.log.error(f"git {op}: {line}")
                    raise RuntimeError(f"git {op} failed (exit {p.returncode})")
                self.step(f"git {op} {' '.join(args[:2])}...")
            except Exception as e:  # noqa: BLE001 -- any failure: back to head0
                self.ctx.hook.disarm()
                why = self.undo(paths, head0, op)
                reason = e.signame if isinstance(e, Interrupted) else str(e)
                if why:
                    raise Fail(E.MANUAL, f"{reason}; and going back to {head0[:12]} failed: "
                                         f"{why}. Check `git status` in {self.co}.")
                undo = "`git am --abort`" if op == "am" else "`git revert --abort`"
                raise Fail(E.ROLLED_BACK, f"{reason}; ran {undo} (and reset to our starting "
                                          f"point): {self.co} is unchanged (HEAD {head0[:12]})")
            self.remove_marker()
        return head0


def every_path(sets) -> list[str]:
    """Every file any release set touches, as checkout paths."""
    return sorted({"python/" + r.rel for rs in sets for r in rs.manifest.rows})


def _prepare(ctx: Context, arg: str, op: str, dry: bool
             ) -> tuple[Checkout, DirLock, Manifest | None, bool]:
    """The checkout, locked, our interrupted git operation undone (`cleared`), and the set its
    files fit. None: the dry run has something to clear first (what follows depends on it), or
    (revert) no set fits but our commits are in effect (SGLang merged in under them)."""
    sets = ctx.release_sets()
    co = Checkout(ctx, arg)
    _announce(ctx, co)
    lock = DirLock(co.gitdir, str(co.co))
    lock.acquire(ctx.lock_timeout, ctx.log)
    try:
        ctx.signals.hold()  # from here on changes can happen: a signal only stops at a step
        co.check_index_lock()
        cleared = co.recover(every_path(sets), dry)
        if dry and cleared:
            return co, lock, None, cleared
        rs, scans = fitting(sets, co.target)
        if rs is None:
            merged = our_commits(co, every_path(sets))
            if merged and op == "revert":
                return co, lock, None, cleared
            raise Fail(E.REFUSED, *no_fit_lines(co, sets, scans, merged))
        m = ctx.use(rs, co.target if op == "apply" else None)
    except BaseException:
        lock.release()
        raise
    ctx.say(f"nsa-fastpath set: {m.target_spec}")
    return co, lock, m, cleared


def no_fit_lines(co: Checkout, sets, scans, merged: list[str]) -> list[str]:
    """The checkout's files fit no set: which release each is, and the way out."""
    lines = diagnose(sets, scans, co.target, restore_hint(co))
    if not merged:
        return lines
    return lines[:-2] + [
        f"nsa-fastpath's commits are in effect ({len(merged)}), on files of another release: "
        "SGLang was merged or rebased under them? Revert them first (git revert; the files "
        f"are then that release's own): {command('revert', '--git', co.co)}; then apply "
        f"again: {command('apply', '--git', co.co)}.", "Nothing changed."]


def restore_hint(co: Checkout) -> str:
    """How to get a release's own files back in a checkout (releases.diagnose)."""
    v = co.target.version
    tag = f"v{v}" if re.fullmatch(r"[\w.+-]+", v) and v != "unknown" else "<its tag>"
    return (f"restore those files from the release's tag and commit them (git -C {co.co} "
            f"checkout {tag} -- <file>, then git -C {co.co} commit), or undo uncommitted edits "
            f"(git -C {co.co} checkout -- <file>)")


def _announce(ctx: Context, co: Checkout) -> None:
    head = co.git("rev-parse", "--short", "HEAD").stdout.strip() or "none"
    ctx.say(f"target: git checkout {co.co} (sglang {co.target.version}, HEAD {head})")


def _refuse_foreign(co: Checkout, m: Manifest, s: Scan, verb: str, what: str) -> None:
    if s.foreign:
        lines = [f"refusing to {verb}: python/{rel}: {s.state[rel]}"
                 + (f" (sha256 {s.seen[rel]})" if s.state[rel] == "foreign" else "")
                 for rel in s.foreign]
        raise Fail(E.REFUSED, *lines, what)


def _refuse_dirty(co: Checkout, m: Manifest) -> None:
    dirty = co.dirty(co.paths(m))
    if dirty:
        raise Fail(E.REFUSED, f"uncommitted changes in {co.co} to files nsa-fastpath touches:",
                   *("    " + ln for ln in dirty.splitlines()),
                   "Commit or stash them (git stash), then rerun. Nothing changed.")
    staged = co.staged()
    if staged:  # git am / git revert need a clean index, whatever file it is
        raise Fail(E.REFUSED, f"staged changes in {co.co} (git am and git revert need a clean "
                              "index):", *("    " + ln for ln in staged),
                   "Commit them, or unstage them (git restore --staged <file>), then rerun. "
                   "Nothing changed.")


def our_commits(co: Checkout, paths: list[str]) -> list[str]:
    """Commits carrying the nsa-fastpath trailer still in effect (not reverted), newest first
    (those that touch `paths`)."""
    reverted = set(re.findall(r"This reverts commit ([0-9a-f]{40})",
                              co.out("log", "--format=%B", "HEAD", "--", *paths)))
    out = []
    fmt = f"--format=%H%x09%(trailers:key={TRAILER},valueonly,separator=%x2C)"
    for line in co.out("log", fmt, "HEAD", "--", *paths).splitlines():
        sha, _, tr = line.partition("\t")
        if tr.strip() and sha not in reverted:
            out.append(sha)
    return out


def cmd_apply(ctx: Context, arg: str, dry: bool) -> int:
    co, lock, m, cleared = _prepare(ctx, arg, "apply", dry)
    try:
        if m is None:
            ctx.say("dry run: done (nothing changed; rerun it once the interrupted run is "
                    "cleared to see the rest)")
            return E.OK
        with ctx.signals.deferred():  # a signal is acted on at run_op's steps (-> rollback)
            return _apply(ctx, co, m, dry, cleared)
    finally:
        lock.release()


def _apply(ctx: Context, co: Checkout, m: Manifest, dry: bool, cleared: bool) -> int:
    n = len(m.rows)
    s = scan(co.target, m)
    _refuse_foreign(co, m, s, "apply",
                    f"SGLang found in {co.co}: version {co.target.version}; nsa-fastpath "
                    f"targets {m.target_spec} only. What to do: check out SGLang "
                    f"v{m.version} (or undo local edits to the file(s) above), then rerun. "
                    "Nothing changed.")
    if s.count("patched") == n and not co.dirty(co.paths(m)):
        ctx.say(f"already applied: all {n} files are nsa-fastpath's; nothing "
                + ("else " if cleared else "") + "to do")
        return E.OK
    _refuse_dirty(co, m)
    areas: dict[int, list[str]] = {}
    for row in m.rows:
        i = series.area(row.rel)
        if i is None:
            raise Fail(E.TARGET, f"{row.rel} (in {m.path.name}) belongs to no commit of the "
                                 "series (scripts/nsa_apply/series.py). Nothing changed.")
        areas.setdefault(i, []).append(row.rel)
    todo = set()
    for i, rels in sorted(areas.items()):
        states = {s.state[rel] for rel in rels}
        subject = series.SERIES[i][1]
        if states == {"patched"}:
            ctx.say(f"already applied: {subject}")
        elif states == {"pristine"}:
            todo.add(i)
        else:
            raise Fail(E.REFUSED, f"'{subject}' is partly applied in {co.co} (its files are: "
                                  f"{', '.join(sorted(states))}); revert it "
                                  f"(`{command('revert', '--git', co.co)}`) first. Nothing "
                                  "changed.")
    with tempfile.TemporaryDirectory(prefix="nsa-fastpath-series-") as tmp:
        try:
            patches = ctx.release.series(co.target, todo, Path(tmp))
        except (OSError, RuntimeError) as e:
            raise Fail(E.TARGET, f"could not make the git am series in {tmp}: {e}. Nothing "
                                 "changed.") from None
        if dry:
            for p in patches:
                ctx.say(f"would git am {p.name}")
            ctx.say("dry run: done (nothing changed)")
            return E.OK
        return _am(ctx, co, m, patches)


def _am(ctx: Context, co: Checkout, m: Manifest, patches: list[Path]) -> int:
    n = len(m.rows)
    head0 = co.run_op(co.paths(m), "am", ["--quiet", "--", *map(str, patches)])
    for p in patches:
        ctx.say(f"applied {p.name}")
    after = scan(co.target, m)
    if after.count("patched") != n:
        raise Fail(E.MANUAL, f"after git am, {n - after.count('patched')} file(s) are not "
                             f"nsa-fastpath's: check `git log` in {co.co}")
    ctx.say(f"applied: {co.head()[:12]} on top of {head0[:12]}; undo with: "
            f"{command('revert', '--git', co.co)}")
    note_late_signal(ctx)
    return E.OK


def cmd_revert(ctx: Context, arg: str, dry: bool) -> int:
    co, lock, m, cleared = _prepare(ctx, arg, "revert", dry)
    try:
        if m is None and dry and cleared:
            ctx.say("dry run: done (nothing changed; rerun it once the interrupted run is "
                    "cleared to see the rest)")
            return E.OK
        with ctx.signals.deferred():  # a signal is acted on at run_op's steps (-> rollback)
            if m is None:
                return _revert_merged(ctx, co, dry)
            return _revert(ctx, co, m, dry, cleared)
    finally:
        lock.release()


def _revert(ctx: Context, co: Checkout, m: Manifest, dry: bool, cleared: bool) -> int:
    n = len(m.rows)
    s = scan(co.target, m)
    _refuse_foreign(co, m, s, "revert",
                    "the file(s) above were changed by commits other than nsa-fastpath's, or "
                    f"locally. Restore them by hand (git checkout v{m.version} -- <file>). "
                    "Nothing changed.")
    _refuse_dirty(co, m)
    if s.count("pristine") == n:
        ctx.say(f"already pristine: all {n} files are SGLang's own; nothing "
                + ("else " if cleared else "") + "to revert")
        return E.OK
    commits = our_commits(co, co.paths(m))
    if not commits:
        raise Fail(E.MANUAL, "files are patched but no commit with an 'nsa-fastpath:' "
                             f"trailer is in effect in {co.co}: restore them by hand (git "
                             f"checkout v{m.version} -- {' '.join(co.paths(m))}). Nothing "
                             "changed.")
    subjects = {c: co.out("log", "-1", "--format=%h %s", c).strip() for c in commits}
    if dry:
        for c in commits:
            ctx.say(f"would git revert {subjects[c]}")
        ctx.say("dry run: done (nothing changed)")
        return E.OK
    co.run_op(co.paths(m), "revert", ["--no-edit", *commits])
    for c in commits:
        ctx.say(f"reverted {subjects[c]}")
    after = scan(co.target, m)
    if after.count("pristine") != n:
        raise Fail(E.MANUAL, f"after reverting, {n - after.count('pristine')} file(s) are "
                             f"still not SGLang's (other commits changed them): check `git "
                             f"log` in {co.co}")
    ctx.say(f"reverted: {reverted_summary(m)} (HEAD {co.head()[:12]})")
    note_late_signal(ctx)
    return E.OK


def _revert_merged(ctx: Context, co: Checkout, dry: bool) -> int:
    """No set fits the files, but our commits are in effect: SGLang of another release was
    merged or rebased under them. `git revert` of them leaves that release's own files; if it
    does not (a conflict, or other changes to those files), the checkout goes back to where it
    was and the message says so."""
    sets = ctx.release_sets()
    paths = every_path(sets)
    commits = our_commits(co, paths)
    subjects = {c: co.out("log", "-1", "--format=%h %s", c).strip() for c in commits}
    ctx.say(f"the files fit no release set, but {len(commits)} commit(s) of nsa-fastpath's "
            "are in effect on them (SGLang merged or rebased under them?): "
            + ("would revert" if dry else "reverting") + " them")
    dirty = co.dirty(paths)
    if dirty or co.staged():
        raise Fail(E.REFUSED, f"uncommitted or staged changes in {co.co}:",
                   *("    " + ln for ln in (dirty.splitlines() or co.staged())),
                   "Commit or stash them (git stash), then rerun. Nothing changed.")
    if dry:
        for c in commits:
            ctx.say(f"would git revert {subjects[c]}")
        ctx.say("dry run: done (nothing changed)")
        return E.OK
    head0 = co.run_op(paths, "revert", ["--no-edit", *commits])
    rs, _ = fitting(sets, co.target)
    s = scan(co.target, rs.manifest) if rs else None
    if s is None or s.count("pristine") != len(rs.manifest.rows):
        why = co.undo(paths, head0, "revert")
        raise Fail(E.REFUSED, "reverting nsa-fastpath's commits did not leave one release's own "
                              "files (other changes to them?): "
                   + (f"going back failed too: {why}." if why else
                      f"{co.co} is back at {head0[:12]}, nothing changed."),
                   f"Check out the release you run instead (git -C {co.co} checkout <its tag>), "
                   f"then apply again: {command('apply', '--git', co.co)}")
    for c in commits:
        ctx.say(f"reverted {subjects[c]}")
    ctx.say(f"reverted: the files are SGLang {rs.name}'s own (HEAD {co.head()[:12]}); to patch "
            f"them: {command('apply', '--git', co.co)}")
    note_late_signal(ctx)
    return E.OK


def cmd_status(ctx: Context, arg: str) -> int:
    sets = ctx.release_sets()
    co = Checkout(ctx, arg)
    _announce(ctx, co)
    ip, marker = co.in_progress(), co.read_marker()
    rs, scans = fitting(sets, co.target)
    if rs is None:  # which release each file is, and the way out
        for line in no_fit_lines(co, sets, scans, our_commits(co, every_path(sets)))[:-1]:
            ctx.say(line)
        overall, code = "foreign", E.REFUSED
        if marker:
            ctx.say(f"an interrupted apply.sh run (git {marker.get('op', '?')}"
                    f"{', still in progress' if ip else ''}) may have left them so: rerun "
                    f"`{command('apply', '--git', co.co)}` or "
                    f"`{command('revert', '--git', co.co)}`")
            overall, code = "partial", E.PARTIAL
        elif ip:
            ctx.say(f"a git {ip} is in progress (not started by apply.sh): finish or abort it")
            overall, code = "partial", E.PARTIAL
        ctx.say(f"overall: {overall}")
        return code
    m = ctx.use(rs)
    ctx.say(f"nsa-fastpath set: {m.target_spec}")
    n = len(m.rows)
    s = scan(co.target, m)
    for row in m.rows:
        st = s.state[row.rel]
        label = "added" if st == "patched" and row.kind == "add" else st
        ctx.say(f"  {label:<9} python/{row.rel}")
    for c in our_commits(co, co.paths(m)):
        ctx.say(f"commit in effect: {co.out('log', '-1', '--format=%h %s', c).strip()}")
    if co.dirty(co.paths(m)):
        ctx.say("note: uncommitted changes to these files")
    if co.path("index.lock").exists():
        ctx.say(f"note: git's own lock {co.path('index.lock')} exists (a git command is running, "
                f"or was killed: if none is running, rm -f {co.path('index.lock')})")
    if marker:
        overall, code = "partial", E.PARTIAL
        ctx.say(f"an interrupted apply.sh run (git {marker.get('op', '?')}"
                f"{', still in progress' if ip else ''}): rerun "
                f"`{command('apply', '--git', co.co)}` or `{command('revert', '--git', co.co)}`")
    elif s.foreign:
        overall, code = "foreign", E.REFUSED
    elif ip:
        overall, code = "partial", E.PARTIAL
        ctx.say(f"a git {ip} is in progress (not started by apply.sh): finish or abort it")
    elif s.count("pristine") == n:
        overall, code = "pristine", E.OK
    elif s.count("patched") == n:
        overall, code = "patched", E.OK
    else:
        overall, code = "partial", E.PARTIAL
    ctx.say(f"overall: {overall}")
    return code
