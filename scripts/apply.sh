#!/usr/bin/env bash
# nsa-fastpath: install the patch set into an SGLang 0.5.8 installation, or roll it back.
# Run `bash scripts/apply.sh --help` for usage, exit codes and the state-dir layout.
set -euo pipefail
shopt -s nullglob inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MANIFEST=${NSA_FASTPATH_MANIFEST:-$ROOT/manifest.tsv}
OVERLAY=${NSA_FASTPATH_OVERLAY:-$ROOT/overlay}
PATCHES_DIR=${NSA_FASTPATH_PATCHES:-$ROOT/patches}
PYTHON=${PYTHON:-python3}
STATE_REL=sglang/.nsa_fastpath

# Exit codes (documented in usage()).
E_OK=0 E_UNEXPECTED=1 E_USAGE=2 E_TARGET=3 E_REFUSED=4 E_ROLLED_BACK=5 E_MANUAL=6
E_PARTIAL=7 E_BUSY=8

usage() {
    cat <<'EOF'
Usage: apply.sh [apply|revert|status] [--target SITE_PACKAGES_DIR | --git CHECKOUT] [--dry-run] [-h|--help]

Install the nsa-fastpath patch set into SGLang 0.5.8, or roll it back.

Commands (default: apply)
  apply    Check every file listed in manifest.tsv first; refuse (and change nothing) unless
           each one is SGLang 0.5.8's original or already ours. Back up the originals, then
           write our files atomically. Re-running it is a no-op; after an interrupted run it
           completes the apply.
  revert   Restore the byte-identical originals from the backup, remove the files we added
           (and the directories we created), then remove the state directory. After an
           interrupted run it completes the revert. Reverting a pristine tree is a no-op.
  status   Per file: pristine / patched / foreign / missing; overall state; SGLang version;
           Triton, the CUDA C++ extension and the nsa-fastpath environment flags.

Target (one of)
  (default)           the site-packages dir of the SGLang that $PYTHON (default python3)
                      would import (found with importlib.util.find_spec; not imported)
  --target DIR        a site-packages dir that contains sglang/
  --git CHECKOUT      a git checkout of SGLang (repo root containing python/sglang/):
                      apply = `git am` the series in patches/, revert = `git revert` the
                      commits carrying the `nsa-fastpath: N` trailer, status = per-file state

Options
  --dry-run, -n       print what apply/revert would do; change nothing
  -h, --help          this text

Exit codes
  0  ok: done, or nothing to do (already applied / already pristine); status: pristine or patched
  1  unexpected error before any change (nothing changed)
  2  usage error
  3  no SGLang found, target invalid or not writable, or manifest/overlay/patches inconsistent
  4  refused, nothing changed: a foreign file (neither SGLang 0.5.8's nor ours, e.g. another
     SGLang version or a local edit), uncommitted changes (--git), or another nsa-fastpath
     version recorded (revert it first); status: foreign
  5  failed and rolled back: the tree is as before the run (pristine after a failed apply,
     patched after a failed revert; --git: HEAD and files unchanged)
  6  needs manual action: the rollback failed, a backup is missing or corrupt, or a git
     operation is in progress; the message says what to do
  7  status only: partial -- an apply/revert was interrupted (crash, kill -9):
     rerun `apply.sh apply` or `apply.sh revert`
  8  another apply.sh run holds the lock for this target (nothing changed)

State directory (site-packages mode), inside the target; removed by a successful revert
  <target>/sglang/.nsa_fastpath/journal        op=apply|revert, state=in-progress|done,
                                               sha256 of the manifest
  <target>/sglang/.nsa_fastpath/manifest.tsv   the manifest that was applied (revert uses it)
  <target>/sglang/.nsa_fastpath/created_dirs   directories apply created for added files
  <target>/sglang/.nsa_fastpath/backup/<path>  the original of each replaced file (sha256-checked)
Lock: ${TMPDIR:-/tmp}/nsa-fastpath-<sha256(target path)[:16]>.lock (flock; removed on exit).

Environment
  PYTHON                       interpreter used to find SGLang and for status (default python3)
  NSA_FASTPATH_MANIFEST        manifest to use (default: manifest.tsv next to scripts/)
  NSA_FASTPATH_OVERLAY         directory holding our files (default: overlay/)
  NSA_FASTPATH_PATCHES         patch series for --git (default: patches/)
  NSA_FASTPATH_BUILD_DIR       where status looks for the built CUDA extension
                               (default: ~/.cache/nsa-fastpath/build)
  NSA_FASTPATH_LOCK_TIMEOUT    seconds to wait for the lock (default 600)
  NSA_FASTPATH_TRACE=1         log every mutating step (write, rename, mkdir, rm)
  NSA_FASTPATH_FAULT_AT=N      tests: fail right after the N-th mutating step
  NSA_FASTPATH_FAULT_MODE      tests: error (default; rollback) or kill (kill -9, no cleanup)
EOF
}

log() { printf '[nsa-fastpath] %s\n' "$*"; }
warn() { printf '[nsa-fastpath] WARNING: %s\n' "$*" >&2; }
err() { printf '[nsa-fastpath] ERROR: %s\n' "$*" >&2; }
die() { local code=$1; shift; err "$@"; exit "$code"; }

# ---------------------------------------------------------------- arguments
CMD="" TARGET="" GITREPO="" DRY=0
while [ $# -gt 0 ]; do
    case $1 in
        apply | revert | status)
            [ -z "$CMD" ] || { err "more than one command: $CMD and $1"; usage >&2; exit $E_USAGE; }
            CMD=$1 ;;
        --target | --git)
            [ $# -ge 2 ] && [ -n "$2" ] || { err "$1 needs an argument"; exit $E_USAGE; }
            if [ "$1" = --target ]; then TARGET=$2; else GITREPO=$2; fi
            shift ;;
        --target=*) TARGET=${1#*=} ;;
        --git=*) GITREPO=${1#*=} ;;
        --dry-run | -n) DRY=1 ;;
        -h | --help) usage; exit $E_OK ;;
        *) err "unknown argument: $1"; usage >&2; exit $E_USAGE ;;
    esac
    shift
done
CMD=${CMD:-apply}
if [ -n "$TARGET" ] && [ -n "$GITREPO" ]; then
    err "--target and --git exclude each other"; exit $E_USAGE
fi
if [ "$CMD" = status ] && [ "$DRY" = 1 ]; then DRY=0; fi

FAULT_AT=${NSA_FASTPATH_FAULT_AT:-0}
FAULT_MODE=${NSA_FASTPATH_FAULT_MODE:-error}
case $FAULT_AT in '' | *[!0-9]*) err "NSA_FASTPATH_FAULT_AT must be a number"; exit $E_USAGE ;; esac
case $FAULT_MODE in error | kill) ;; *) err "NSA_FASTPATH_FAULT_MODE must be error or kill"; exit $E_USAGE ;; esac

# ---------------------------------------------------------------- manifest
M_KIND=() M_PATH=() M_PRE=() M_POST=()
TARGET_SPEC=sglang==0.5.8
load_manifest() {  # $1 = manifest file
    local file=$1 kind path pre post extra line=0
    M_KIND=() M_PATH=() M_PRE=() M_POST=()
    [ -f "$file" ] || die $E_TARGET "manifest not found: $file"
    while IFS=$'\t' read -r kind path pre post extra || [ -n "$kind" ]; do
        line=$((line + 1))
        case $kind in
            '#'*)
                if [ "$kind" = "# target" ] && [ -n "$path" ]; then TARGET_SPEC=$path; fi
                continue ;;
            '') continue ;;
            replace | add) ;;
            *) die $E_TARGET "$file:$line: unknown kind '$kind'" ;;
        esac
        [ -z "${extra:-}" ] || die $E_TARGET "$file:$line: too many columns"
        case $path in
            sglang/.nsa_fastpath | sglang/.nsa_fastpath/*) die $E_TARGET "$file:$line: reserved path $path" ;;
            sglang/*) ;;
            *) die $E_TARGET "$file:$line: path must start with sglang/: $path" ;;
        esac
        case "/$path/" in */../* | */./* | *//*) die $E_TARGET "$file:$line: bad path $path" ;; esac
        [[ $path =~ ^[A-Za-z0-9_.+/-]+$ ]] || die $E_TARGET "$file:$line: unexpected characters in $path"
        [[ $post =~ ^[0-9a-f]{64}$ ]] || die $E_TARGET "$file:$line: bad patched sha256"
        if [ "$kind" = replace ]; then
            [[ $pre =~ ^[0-9a-f]{64}$ ]] || die $E_TARGET "$file:$line: bad pristine sha256"
        else
            [ "$pre" = - ] || die $E_TARGET "$file:$line: add rows have '-' as pristine sha256"
        fi
        M_KIND+=("$kind") M_PATH+=("$path") M_PRE+=("$pre") M_POST+=("$post")
    done <"$file"
    [ "${#M_PATH[@]}" -gt 0 ] || die $E_TARGET "manifest $file lists no files"
}

# fhash FILE: sets FH to its sha256, or missing / symlink / notafile / unreadable.
fhash() {
    local f=$1
    if [ -L "$f" ]; then FH=symlink
    elif [ ! -e "$f" ]; then FH=missing
    elif [ ! -f "$f" ]; then FH=notafile
    elif FH=$(sha256sum <"$f" 2>/dev/null); then FH=${FH%% *}
    else FH=unreadable
    fi
}
dirof() { case $1 in */*) D=${1%/*} ;; *) D=. ;; esac; }

# hash_files FILE...: sets HASHES[k] like fhash for the k-th file, with one sha256sum run.
hash_files() {
    local f k=0 todo=() pos=() lines=() line
    HASHES=()
    for f in "$@"; do
        if [ -L "$f" ]; then HASHES[k]=symlink
        elif [ ! -e "$f" ]; then HASHES[k]=missing
        elif [ ! -f "$f" ]; then HASHES[k]=notafile
        else todo+=("$f") pos+=("$k")
        fi
        k=$((k + 1))
    done
    [ "${#todo[@]}" -gt 0 ] || return 0
    if mapfile -t lines < <(sha256sum -- "${todo[@]}" 2>/dev/null) && [ "${#lines[@]}" -eq "${#todo[@]}" ]; then
        for k in "${!pos[@]}"; do
            line=${lines[$k]#\\}  # sha256sum prefixes a backslash when it escapes the name
            HASHES[${pos[$k]}]=${line:0:64}
        done
    else  # an unreadable file: one at a time
        for k in "${!pos[@]}"; do fhash "${todo[$k]}"; HASHES[${pos[$k]}]=$FH; done
    fi
}

# classify INDEX HASH -> sets ST (pristine|patched|foreign|missing) and HS (the hash seen).
# pristine = as in SGLang 0.5.8 (for an `add` row: absent).
classify() {
    local i=$1
    HS=$2
    if [ "$HS" = "${M_POST[$i]}" ]; then ST=patched
    elif [ "${M_KIND[$i]}" = add ] && [ "$HS" = missing ]; then ST=pristine
    elif [ "${M_KIND[$i]}" = replace ] && [ "$HS" = "${M_PRE[$i]}" ]; then ST=pristine
    elif [ "$HS" = missing ]; then ST=missing
    else ST=foreign
    fi
}

overlay_matches() {  # 0 if every overlay file has the manifest's sha256 (else BAD_OVERLAY)
    local i files=()
    for i in "${!M_PATH[@]}"; do files+=("$OVERLAY/${M_PATH[$i]}"); done
    hash_files "${files[@]}"
    for i in "${!M_PATH[@]}"; do
        if [ "${HASHES[$i]}" != "${M_POST[$i]}" ]; then BAD_OVERLAY="${M_PATH[$i]} (${HASHES[$i]})"; return 1; fi
    done
}

check_overlay() {
    overlay_matches || die $E_TARGET \
        "$OVERLAY/$BAD_OVERLAY does not match $MANIFEST: this nsa-fastpath checkout is inconsistent (run scripts/regen.py, or check out a release). Nothing changed."
}

# ---------------------------------------------------------------- target
sglang_version() {  # $1 = dir containing sglang/ (site-packages, or python/ of a checkout)
    local d=$1 m v out=""
    for m in "$d"/sglang-*.dist-info/METADATA "$d"/sglang-*.egg-info/PKG-INFO; do
        v=$(sed -n 's/^Version: *//p' "$m" | head -n1)
        [ -n "$v" ] && out=${out:+$out, }$v
    done
    if [ -z "$out" ] && [ -f "$d/pyproject.toml" ]; then
        out=$(sed -n -E 's/^version *= *"([^"]+)".*/\1/p' "$d/pyproject.toml" | head -n1)
    fi
    if [ -z "$out" ]; then
        for m in "$d/sglang/_version.py" "$d/sglang/version.py"; do
            [ -f "$m" ] || continue
            v=$(sed -n -E "s/^__version__ *= *(version *= *)?['\"]([^'\"]+)['\"].*/\2/p" "$m" | head -n1)
            if [ -n "$v" ]; then out=$v; break; fi
        done
    fi
    echo "${out:-unknown}"
}

find_default_target() {
    local out
    out=$("$PYTHON" - <<'PY' 2>/dev/null
import importlib.util, os, sys
sys.path = [p for p in sys.path if p not in ("", ".", os.getcwd())]
spec = importlib.util.find_spec("sglang")
if spec is None:
    sys.exit(1)
locs = list(spec.submodule_search_locations or [])
pkg = locs[0] if locs else os.path.dirname(spec.origin)
print(os.path.dirname(os.path.abspath(pkg)))
PY
    ) || die $E_TARGET "no SGLang importable by $PYTHON (set PYTHON=/path/to/python of the SGLang environment, or pass --target SITE_PACKAGES_DIR)"
    echo "$out"
}

resolve_target() {
    if [ -z "$TARGET" ]; then
        TARGET=$(find_default_target)
        log "SGLang found by $PYTHON in $TARGET"
    fi
    [ -d "$TARGET/sglang" ] || die $E_TARGET "no sglang/ package in $TARGET (pass the site-packages dir that contains sglang/)"
    TARGET=$(cd "$TARGET" && pwd -P)
    S="$TARGET/$STATE_REL"
    VERSION=$(sglang_version "$TARGET")
    log "target: $TARGET (sglang $VERSION); nsa-fastpath targets $TARGET_SPEC"
    case $VERSION in
        "${TARGET_SPEC#sglang==}") ;;
        *) warn "SGLang version found is $VERSION, nsa-fastpath targets $TARGET_SPEC: files are checked by hash" ;;
    esac
}

# ---------------------------------------------------------------- locking
# The lock file is removed again on exit (after kill -9 it stays, and is reused). A run that
# got the lock on a file its predecessor had just removed retries on the new file.
take_lock() {  # $1 = key (target or checkout path)
    local dir=${TMPDIR:-/tmp} key tries=0
    key=$(printf '%s' "$1" | sha256sum | cut -c1-16)
    LOCKFILE="$dir/nsa-fastpath-$key.lock"
    while :; do
        exec {LOCKFD}>>"$LOCKFILE" || die $E_UNEXPECTED "cannot open lock file $LOCKFILE"
        if ! flock -n "$LOCKFD"; then
            log "waiting for another apply.sh run on $1 (lock $LOCKFILE)"
            flock -w "${NSA_FASTPATH_LOCK_TIMEOUT:-600}" "$LOCKFD" ||
                die $E_BUSY "another apply.sh run on $1 still holds $LOCKFILE; nothing changed"
        fi
        if [ "$(stat -c %d:%i -- "$LOCKFILE" 2>/dev/null)" = "$(stat -L -c %d:%i "/dev/fd/$LOCKFD")" ]; then
            LOCKED=1
            return 0
        fi
        exec {LOCKFD}>&-
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || die $E_BUSY "could not lock $LOCKFILE; nothing changed"
    done
}
release_lock() {
    if [ "$LOCKED" = 1 ]; then rm -f -- "$LOCKFILE"; LOCKED=0; fi
}

# ---------------------------------------------------------------- mutation primitives
STEP=0 MUTATING=0 OP="" TMPFILES=() CAN_REAPPLY=1 LOCKFD="" LOCKED=0

# Called right after every mutating step (write, rename, mkdir, rm of a real change).
step() {
    STEP=$((STEP + 1))
    if [ -n "${NSA_FASTPATH_TRACE:-}" ]; then log "step $STEP: $1"; fi
    if [ "$FAULT_AT" -gt 0 ] && [ "$STEP" -eq "$FAULT_AT" ]; then
        if [ "$FAULT_MODE" = kill ]; then kill -9 $$; fi
        err "injected fault (NSA_FASTPATH_FAULT_AT=$FAULT_AT) after step $STEP: $1"
        exit $E_UNEXPECTED
    fi
}

tmp_for() { TMP="${1%/*}/.${1##*/}.nsa-tmp.$$"; }  # absolute paths only

# put_file SRC DEST SHA [keep]: copy SRC to a temp file beside DEST, check its sha256, rename
# it over DEST. keep = preserve SRC's mode and mtime (restoring originals); otherwise DEST's
# current mode is kept (0644 for a new file).
put_file() {
    local src=$1 dest=$2 sha=$3 keep=${4:-} tmp
    tmp_for "$dest"; tmp=$TMP
    TMPFILES+=("$tmp")
    if [ "$keep" = keep ]; then
        cp -p -- "$src" "$tmp"
    else
        cp -- "$src" "$tmp"
        if [ -f "$dest" ]; then chmod --reference="$dest" -- "$tmp"; else chmod 0644 -- "$tmp"; fi
    fi
    step "wrote $tmp"
    fhash "$tmp"
    [ "$FH" = "$sha" ] || { err "copy of $src has sha256 $FH, expected $sha"; exit $E_UNEXPECTED; }
    mv -f -- "$tmp" "$dest"
    step "renamed $tmp -> $dest"
}

# write_text DEST CONTENT: atomically replace DEST with CONTENT (no-op if equal).
write_text() {
    local dest=$1 content=$2 tmp
    if [ -f "$dest" ] && [ "$(cat -- "$dest")" = "${content%$'\n'}" ]; then return 0; fi
    tmp_for "$dest"; tmp=$TMP
    TMPFILES+=("$tmp")
    printf '%s' "$content" >"$tmp"
    step "wrote $tmp"
    mv -f -- "$tmp" "$dest"
    step "renamed $tmp -> $dest"
}

make_dirs() {  # mkdir -p DIR... (one step), if any is missing
    local d missing=()
    for d in "$@"; do [ -d "$d" ] || missing+=("$d"); done
    [ "${#missing[@]}" -gt 0 ] || return 0
    mkdir -p -- "${missing[@]}"
    step "mkdir -p ${missing[*]}"
}

rm_file() {
    rm -f -- "$1"
    step "rm $1"
}

# Remove stale bytecode of a module we replaced/added/removed (path relative to target).
clear_pyc() {
    local rel=$1 d stem f
    case $rel in *.py) ;; *) return 0 ;; esac
    dirof "$TARGET/$rel"; d=$D
    stem=${rel##*/}; stem=${stem%.py}
    for f in "$d/__pycache__/$stem".*.pyc "$d/$stem.pyc"; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        if [ "$DRY" = 1 ]; then log "would remove stale ${f#"$TARGET"/}"; continue; fi
        rm_file "$f"
        log "removed stale ${f#"$TARGET"/}"
    done
}

# Leftover temp files of interrupted runs (ours are named .<name>.nsa-tmp.<pid>).
list_tmp() {
    local i d seen=" " f
    for i in "${!M_PATH[@]}"; do
        dirof "$TARGET/${M_PATH[$i]}"; d=$D
        case $seen in *" $d "*) continue ;; esac
        seen="$seen$d "
        for f in "$d"/.*.nsa-tmp.*; do printf '%s\n' "$f"; done
    done
    if [ -d "$S" ]; then find "$S" -name '.*.nsa-tmp.*' -print; fi
}

clean_tmp() {
    local f
    while IFS= read -r f; do
        [ -n "$f" ] || continue
        if [ "$DRY" = 1 ]; then log "would remove leftover temp file ${f#"$TARGET"/}"; continue; fi
        rm_file "$f"
        log "removed leftover temp file ${f#"$TARGET"/}"
    done < <(list_tmp)
}

# ---------------------------------------------------------------- state directory
MANIFEST_SHA=""
J_OP="" J_STATE=""
read_journal() {
    J_OP="" J_STATE=""
    [ -f "$S/journal" ] || return 0
    J_OP=$(sed -n 's/^op=//p' "$S/journal" | head -n1)
    J_STATE=$(sed -n 's/^state=//p' "$S/journal" | head -n1)
}

write_journal() {  # op state
    [ "$DRY" = 1 ] && return 0
    write_text "$S/journal" "# nsa-fastpath state (scripts/apply.sh). Do not edit or delete: \`apply.sh revert\` restores the originals from backup/.
op=$1
state=$2
manifest_sha256=$MANIFEST_SHA
"
}

backup_ok() {  # index -> 0 if the backup of a replace row verified in the last scan
    [ "${BK_OK[$1]}" = 1 ]
}

record_created_dir() {  # rel dir
    local cur=""
    [ -f "$S/created_dirs" ] && cur=$(cat -- "$S/created_dirs")
    write_text "$S/created_dirs" "$(printf '%s\n%s\n' "$cur" "$1" | sed '/^$/d' | LC_ALL=C sort -u)
"
}

# ---------------------------------------------------------------- apply / revert engines
# Both converge from any state reachable by an interrupted apply or revert (every file is
# always either the original or ours, thanks to the temp-file + rename writes).

do_apply() {
    local i rel d parts p acc dirs=("$S")
    clean_tmp
    for i in "${!M_PATH[@]}"; do
        if [ "${M_KIND[$i]}" = replace ]; then dirof "$S/backup/${M_PATH[$i]}"; dirs+=("$D"); fi
    done
    if [ "$DRY" = 1 ]; then
        [ -d "$S" ] || log "would create state dir ${S#"$TARGET"/}"
    else
        make_dirs "${dirs[@]}"
    fi
    write_journal apply in-progress
    if [ "$DRY" = 0 ] && ! cmp -s -- "$MANIFEST" "$S/manifest.tsv"; then
        put_file "$MANIFEST" "$S/manifest.tsv" "$MANIFEST_SHA"
    fi
    scan  # (the steps below only touch files they have just classified)
    # 1. back up every original before touching any file
    for i in "${!M_PATH[@]}"; do
        [ "${M_KIND[$i]}" = replace ] || continue
        rel=${M_PATH[$i]}
        backup_ok "$i" && continue
        if [ "${ROW_ST[$i]}" != pristine ]; then
            err "$rel is ${ROW_ST[$i]} and its backup is missing or corrupt: cannot back up the original"
            exit $E_MANUAL
        fi
        if [ "$DRY" = 1 ]; then log "would back up $rel -> ${S#"$TARGET"/}/backup/$rel"; continue; fi
        put_file "$TARGET/$rel" "$S/backup/$rel" "${M_PRE[$i]}" keep
        log "backed up $rel"
    done
    # 2. directories for added files (recorded before they are created)
    for i in "${!M_PATH[@]}"; do
        [ "${M_KIND[$i]}" = add ] || continue
        dirof "${M_PATH[$i]}"; d=$D
        IFS=/ read -r -a parts <<<"$d"
        acc=""
        for p in "${parts[@]}"; do
            acc=${acc:+$acc/}$p
            [ -d "$TARGET/$acc" ] && continue
            if [ "$DRY" = 1 ]; then log "would create directory $acc"; continue; fi
            record_created_dir "$acc"
            mkdir -- "$TARGET/$acc"
            step "mkdir $TARGET/$acc"
            log "created directory $acc"
        done
    done
    # 3. our files
    for i in "${!M_PATH[@]}"; do
        rel=${M_PATH[$i]}
        case ${ROW_ST[$i]} in
            patched) ;;
            pristine)
                if [ "$DRY" = 1 ]; then
                    log "would $([ "${M_KIND[$i]}" = add ] && echo add || echo patch) $rel"
                else
                    put_file "$OVERLAY/$rel" "$TARGET/$rel" "${M_POST[$i]}"
                    log "$([ "${M_KIND[$i]}" = add ] && echo added || echo patched) $rel"
                fi ;;
            *) err "$rel is ${ROW_ST[$i]}"; exit $E_UNEXPECTED ;;
        esac
        clear_pyc "$rel"
    done
    write_journal apply done
}

do_revert() {
    local i rel d
    clean_tmp
    if [ -d "$S" ]; then write_journal revert in-progress; fi
    scan
    for i in "${!M_PATH[@]}"; do
        rel=${M_PATH[$i]}
        case ${ROW_ST[$i]} in
            pristine) ;;
            patched)
                if [ "${M_KIND[$i]}" = add ]; then
                    if [ "$DRY" = 1 ]; then log "would remove $rel"; else rm_file "$TARGET/$rel"; log "removed $rel"; fi
                else
                    backup_ok "$i" || { err "backup of $rel is missing or corrupt"; exit $E_MANUAL; }
                    if [ "$DRY" = 1 ]; then
                        log "would restore $rel from backup"
                    else
                        put_file "$S/backup/$rel" "$TARGET/$rel" "${M_PRE[$i]}" keep
                        log "restored $rel"
                    fi
                fi ;;
            *) err "$rel is ${ROW_ST[$i]}"; exit $E_UNEXPECTED ;;
        esac
        clear_pyc "$rel"
    done
    if [ -f "$S/created_dirs" ]; then
        while IFS= read -r d; do
            case "/$d/" in //) continue ;; /sglang/*/) ;; *) warn "ignoring bad created_dirs entry: $d"; continue ;; esac
            case "/$d/" in */../* | */./*) warn "ignoring bad created_dirs entry: $d"; continue ;; esac
            [ -d "$TARGET/$d" ] && [ ! -L "$TARGET/$d" ] || continue
            if [ "$DRY" = 1 ]; then log "would remove directory $d (if empty)"; continue; fi
            if [ -d "$TARGET/$d/__pycache__" ] && [ -z "$(ls -A -- "$TARGET/$d/__pycache__")" ]; then
                rmdir -- "$TARGET/$d/__pycache__"
                step "rmdir $TARGET/$d/__pycache__"
            fi
            if [ -z "$(ls -A -- "$TARGET/$d")" ]; then
                rmdir -- "$TARGET/$d"
                step "rmdir $TARGET/$d"
                log "removed directory $d"
            else
                warn "directory $d (created by apply) is not empty: left in place"
            fi
        done < <(LC_ALL=C sort -r -- "$S/created_dirs")
    fi
    if [ -d "$S" ]; then
        if [ "$DRY" = 1 ]; then log "would remove state dir ${S#"$TARGET"/}"; else
            rm -rf -- "$S"
            step "rm -r $S"
            log "removed state dir ${S#"$TARGET"/}"
        fi
    fi
}

# Rollback on any error while mutating (not on kill -9: then rerun apply or revert).
on_exit() {
    local rc=$? r goal
    trap - EXIT
    trap '' INT TERM HUP
    if [ "$MUTATING" = 1 ]; then
        MUTATING=0 FAULT_AT=0
        set +e
        if [ "$OP" = apply ]; then goal=pristine; else goal=patched; fi
        if [ "$OP" = revert ] && [ "$CAN_REAPPLY" = 0 ]; then
            err "revert failed (exit $rc) after $STEP step(s); $TARGET is partially reverted and cannot be rolled back to patched (this nsa-fastpath checkout is not the version that was applied). Fix the cause shown above, then rerun \`apply.sh revert --target $(printf %q "$TARGET")\`; if that fails: pip install --force-reinstall --no-deps $TARGET_SPEC"
            for f in "${TMPFILES[@]}"; do [ -e "$f" ] && rm -f -- "$f"; done
            release_lock
            exit $E_MANUAL
        fi
        err "$OP failed (exit $rc) after $STEP step(s); rolling back to $goal"
        if [ "$OP" = apply ]; then (set -e; do_revert); r=$?; else (set -e; do_apply); r=$?; fi
        if [ "$r" -eq 0 ]; then
            err "rolled back: $TARGET is $goal again, as before this run"
            rc=$E_ROLLED_BACK
        else
            err "ROLLBACK FAILED: $TARGET is left partially patched. Fix the cause shown above, then rerun \`apply.sh revert --target $(printf %q "$TARGET")\` (or \`apply.sh apply\`); if that fails: pip install --force-reinstall --no-deps $TARGET_SPEC"
            rc=$E_MANUAL
        fi
    fi
    for f in "${TMPFILES[@]}"; do [ -e "$f" ] && rm -f -- "$f"; done
    release_lock
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------- commands (site-packages)
prepare_files_mode() {  # sets the manifest to use ($1 = apply|revert|status)
    resolve_target
    if [ "$1" != apply ] && [ -f "$S/manifest.tsv" ] && ! cmp -s -- "$MANIFEST" "$S/manifest.tsv"; then
        log "using the manifest recorded at apply time: ${S#"$TARGET"/}/manifest.tsv"
        MANIFEST="$S/manifest.tsv"
        load_manifest "$MANIFEST"
        CAN_REAPPLY=0  # our overlay/ is another version: a failed revert cannot re-apply
    fi
    fhash "$MANIFEST"; MANIFEST_SHA=$FH
}

report_foreign() {  # prints the refusal for rows in FOREIGN_IDX
    local i
    for i in "${FOREIGN_IDX[@]}"; do
        if [ "${FOREIGN_ST[$i]}" = missing ]; then
            err "$1 ${M_PATH[$i]}: missing (SGLang $TARGET_SPEC has it)"
        else
            err "$1 ${M_PATH[$i]}: sha256 ${FOREIGN_HS[$i]} is neither SGLang ${TARGET_SPEC#sglang==}'s (${M_PRE[$i]}) nor nsa-fastpath's (${M_POST[$i]})"
        fi
    done
}

scan() {  # classify all rows against $TARGET; check the backups (BK_OK)
    local i files=()
    N_PRISTINE=0 N_PATCHED=0 FOREIGN_IDX=() FOREIGN_ST=() FOREIGN_HS=() ROW_ST=() BK_OK=()
    for i in "${!M_PATH[@]}"; do files+=("$S/backup/${M_PATH[$i]}"); done
    hash_files "${files[@]}"
    for i in "${!M_PATH[@]}"; do
        BK_OK[$i]=0
        if [ "${M_KIND[$i]}" = replace ] && [ "${HASHES[$i]}" = "${M_PRE[$i]}" ]; then BK_OK[$i]=1; fi
    done
    files=()
    for i in "${!M_PATH[@]}"; do files+=("$TARGET/${M_PATH[$i]}"); done
    hash_files "${files[@]}"
    for i in "${!M_PATH[@]}"; do
        classify "$i" "${HASHES[$i]}"
        ROW_ST[$i]=$ST
        case $ST in
            pristine) N_PRISTINE=$((N_PRISTINE + 1)) ;;
            patched) N_PATCHED=$((N_PATCHED + 1)) ;;
            *) FOREIGN_IDX+=("$i"); FOREIGN_ST[$i]=$ST; FOREIGN_HS[$i]=$HS ;;
        esac
    done
}

check_writable() {
    local i d
    for d in "$TARGET/sglang" "${S}"; do
        [ ! -e "$d" ] || [ -w "$d" ] || die $E_TARGET "no write permission on $d (run as the owner of this SGLang install)"
    done
    for i in "${!M_PATH[@]}"; do
        dirof "$TARGET/${M_PATH[$i]}"; d=$D
        [ ! -e "$d" ] || [ -w "$d" ] || die $E_TARGET "no write permission on $d (run as the owner of this SGLang install)"
    done
}

cmd_apply() {
    local i n bad_backup=()
    load_manifest "$MANIFEST"
    prepare_files_mode apply
    check_overlay
    take_lock "$TARGET"
    if [ -f "$S/manifest.tsv" ] && ! cmp -s -- "$MANIFEST" "$S/manifest.tsv"; then
        die $E_REFUSED "another nsa-fastpath version is applied to $TARGET (${S#"$TARGET"/}/manifest.tsv differs from $MANIFEST). Run \`apply.sh revert\` first (it uses the recorded manifest and backups), then apply. Nothing changed."
    fi
    n=${#M_PATH[@]}
    scan
    if [ "${#FOREIGN_IDX[@]}" -gt 0 ]; then
        report_foreign "refusing to apply:"
        err "SGLang found in $TARGET: version $VERSION; nsa-fastpath targets $TARGET_SPEC only."
        err "What to do: install it (pip install --force-reinstall --no-deps $TARGET_SPEC), or undo local edits to the file(s) above, then rerun. Nothing changed."
        exit $E_REFUSED
    fi
    read_journal
    for i in "${!M_PATH[@]}"; do
        if [ "${M_KIND[$i]}" = replace ] && [ "${ROW_ST[$i]}" = patched ] && ! backup_ok "$i"; then
            bad_backup+=("${M_PATH[$i]}")
        fi
    done
    if [ "${#bad_backup[@]}" -gt 0 ]; then
        if [ "$N_PATCHED" -eq "$n" ] && [ ! -d "$S" ]; then
            log "already applied: all $n files are nsa-fastpath's; nothing to do"
            warn "but there is no backup (${S#"$TARGET"/} is missing): \`apply.sh revert\` cannot restore the originals; to go back: pip install --force-reinstall --no-deps $TARGET_SPEC"
            exit $E_OK
        fi
        die $E_MANUAL "patched file(s) without a valid backup: ${bad_backup[*]} (in ${S#"$TARGET"/}/backup). Nothing changed. To get back to stock SGLang: pip install --force-reinstall --no-deps $TARGET_SPEC, then \`apply.sh revert\` removes our leftovers."
    fi
    if [ "$N_PATCHED" -eq "$n" ] && [ "$J_OP" = apply ] && [ "$J_STATE" = done ] &&
        [ -f "$S/manifest.tsv" ] && [ -z "$(list_tmp)" ]; then
        log "already applied: all $n files are nsa-fastpath's; nothing to do"
        exit $E_OK
    fi
    if [ -d "$S" ] && { [ "$J_STATE" != done ] || [ "$J_OP" != apply ]; }; then
        log "an interrupted ${J_OP:-apply} was found: completing the apply"
    fi
    if [ "$DRY" = 1 ]; then
        log "dry run: nothing will be changed"
        do_apply
        log "dry run: done (nothing changed)"
        exit $E_OK
    fi
    check_writable
    OP=apply MUTATING=1
    do_apply
    MUTATING=0
    scan
    [ "$N_PATCHED" -eq "$n" ] || die $E_MANUAL "after apply, $((n - N_PATCHED)) file(s) are not nsa-fastpath's (concurrent change?): run \`apply.sh status\`"
    log "applied: $n files are nsa-fastpath's ($STEP steps); originals in ${S#"$TARGET"/}/backup; undo with: bash scripts/apply.sh revert --target $(printf %q "$TARGET")"
}

cmd_revert() {
    local i n bad_backup=() leftovers=()
    load_manifest "$MANIFEST"
    prepare_files_mode revert
    take_lock "$TARGET"
    if [ "$CAN_REAPPLY" = 1 ] && ! overlay_matches; then CAN_REAPPLY=0; fi
    n=${#M_PATH[@]}
    scan
    if [ "${#FOREIGN_IDX[@]}" -gt 0 ]; then
        report_foreign "refusing to revert:"
        err "apply.sh only overwrites files that are SGLang's or its own (was the file edited after apply, or SGLang upgraded?)."
        err "What to do: pip install --force-reinstall --no-deps $TARGET_SPEC (restores SGLang's files), then rerun \`apply.sh revert\` to remove nsa-fastpath leftovers. Nothing changed."
        for i in "${!M_PATH[@]}"; do
            if [ "${M_KIND[$i]}" = add ] && [ "${ROW_ST[$i]}" = patched ]; then leftovers+=("${M_PATH[$i]}"); fi
        done
        if [ -d "$S" ]; then leftovers+=("$STATE_REL/"); fi
        if [ "${#leftovers[@]}" -gt 0 ]; then
            err "(If you upgraded SGLang on purpose, delete nsa-fastpath's leftovers in $TARGET by hand instead: ${leftovers[*]})"
        fi
        exit $E_REFUSED
    fi
    for i in "${!M_PATH[@]}"; do
        if [ "${M_KIND[$i]}" = replace ] && [ "${ROW_ST[$i]}" = patched ] && ! backup_ok "$i"; then
            bad_backup+=("${M_PATH[$i]}")
        fi
    done
    if [ "${#bad_backup[@]}" -gt 0 ]; then
        die $E_MANUAL "cannot revert: backup of ${bad_backup[*]} is missing or corrupt (${S#"$TARGET"/}/backup). Nothing changed. What to do: pip install --force-reinstall --no-deps $TARGET_SPEC, then rerun \`apply.sh revert\` to remove nsa-fastpath leftovers."
    fi
    if [ "$N_PRISTINE" -eq "$n" ] && [ ! -d "$S" ] && [ -z "$(list_tmp)" ]; then
        log "already pristine: all $n files are SGLang's own; nothing to revert"
        exit $E_OK
    fi
    read_journal
    if [ -n "$J_STATE" ] && [ "$J_STATE" != done ]; then
        log "an interrupted $J_OP was found: completing the revert"
    fi
    if [ "$DRY" = 1 ]; then
        log "dry run: nothing will be changed"
        do_revert
        log "dry run: done (nothing changed)"
        exit $E_OK
    fi
    check_writable
    OP=revert MUTATING=1
    do_revert
    MUTATING=0
    scan
    [ "$N_PRISTINE" -eq "$n" ] || die $E_MANUAL "after revert, $((n - N_PRISTINE)) file(s) are not SGLang's (concurrent change?): run \`apply.sh status\`"
    log "reverted: all $n files are SGLang ${TARGET_SPEC#sglang==}'s originals again; state dir removed"
}

cmd_status() {
    local i n overall code note="" environ="" holder tmpleft
    load_manifest "$MANIFEST"
    prepare_files_mode status
    n=${#M_PATH[@]}
    scan
    read_journal
    for i in "${!M_PATH[@]}"; do
        case ${ROW_ST[$i]} in
            pristine) [ "${M_KIND[$i]}" = add ] && note=" (absent, as in SGLang)" || note="" ;;
            patched) note="" ;;
            foreign) note=" (sha256 ${FOREIGN_HS[$i]})" ;;
            missing) note="" ;;
        esac
        printf '[nsa-fastpath]   %-9s %s%s\n' "${ROW_ST[$i]}" "${M_PATH[$i]}" "$note"
    done
    local bad_backup=0
    for i in "${!M_PATH[@]}"; do
        if [ "${M_KIND[$i]}" = replace ] && [ "${ROW_ST[$i]}" = patched ] && ! backup_ok "$i"; then
            bad_backup=$((bad_backup + 1))
        fi
    done
    if [ -d "$S" ]; then
        log "state dir: ${S#"$TARGET"/} (journal: op=${J_OP:-?} state=${J_STATE:-?})"
    fi
    tmpleft=$(list_tmp)
    if [ -n "$tmpleft" ]; then log "leftover temp files of an interrupted run are present (apply or revert removes them)"; fi
    if [ "${#FOREIGN_IDX[@]}" -gt 0 ]; then
        overall=foreign code=$E_REFUSED
        note="file(s) above are neither SGLang $TARGET_SPEC's nor nsa-fastpath's: pip install --force-reinstall --no-deps $TARGET_SPEC, then \`apply.sh revert\`"
    elif { [ -d "$S" ] && { [ "$J_STATE" != done ] || [ "$J_OP" != apply ]; }; } || [ -n "$tmpleft" ]; then
        overall=partial code=$E_PARTIAL
        note="an interrupted ${J_OP:-run} (crash / kill -9): rerun \`apply.sh apply\` or \`apply.sh revert\`"
    elif [ "$N_PRISTINE" -eq "$n" ] && [ ! -d "$S" ]; then
        overall=pristine code=$E_OK note="SGLang's own code; nsa-fastpath not installed"
    elif [ "$N_PATCHED" -eq "$n" ] && [ "$bad_backup" -eq 0 ] && [ -d "$S" ]; then
        overall=patched code=$E_OK note="undo with: bash scripts/apply.sh revert --target $(printf %q "$TARGET")"
    elif [ "$N_PATCHED" -eq "$n" ]; then
        overall=patched code=$E_MANUAL
        note="but the backup of $bad_backup original(s) is missing or corrupt: \`apply.sh revert\` cannot restore them; to go back: pip install --force-reinstall --no-deps $TARGET_SPEC, then \`apply.sh revert\`"
    else
        overall=partial code=$E_PARTIAL
        note="$N_PATCHED of $n files are nsa-fastpath's (interrupted run, or SGLang reinstalled over a patched tree): rerun \`apply.sh apply\` or \`apply.sh revert\`"
    fi
    holder=$(printf '%s' "$TARGET" | sha256sum | cut -c1-16)
    if [ -e "${TMPDIR:-/tmp}/nsa-fastpath-$holder.lock" ] &&
        ! flock -n -s "${TMPDIR:-/tmp}/nsa-fastpath-$holder.lock" true 2>/dev/null; then
        log "note: another apply.sh run on this target is in progress right now"
    fi
    log "overall: $overall -- $note"
    # Kernel paths as the target's own environ.py would see them.
    i=0
    for i in "${!M_PATH[@]}"; do
        if [ "${M_PATH[$i]}" = sglang/srt/environ.py ] && [ "${ROW_ST[$i]}" = patched ]; then
            environ="$TARGET/sglang/srt/environ.py"
        fi
    done
    "$PYTHON" "$ROOT/scripts/status.py" --environ "$environ" \
        --pristine-environ "$S/backup/sglang/srt/environ.py" ||
        warn "could not run $ROOT/scripts/status.py with $PYTHON"
    exit "$code"
}

# ---------------------------------------------------------------- --git mode
git_c() {  # git in the checkout, without our lock fd (git may leave `gc --auto` running)
    if [ -n "$LOCKFD" ]; then git -C "$CO" "$@" {LOCKFD}>&-; else git -C "$CO" "$@"; fi
}

git_identity() {
    # `git am`/`git revert` need an identity; fall back to one naming this tool.
    if [ -z "$(git_c config user.name 2>/dev/null || true)" ]; then
        export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-nsa-fastpath apply.sh} GIT_COMMITTER_NAME=${GIT_COMMITTER_NAME:-nsa-fastpath apply.sh}
    fi
    if [ -z "$(git_c config user.email 2>/dev/null || true)" ]; then
        export GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-nsa-fastpath@localhost} GIT_COMMITTER_EMAIL=${GIT_COMMITTER_EMAIL:-nsa-fastpath@localhost}
    fi
}

git_path() {  # absolute path of a file under .git
    local p
    p=$(git_c rev-parse --git-path "$1")
    case $p in /*) echo "$p" ;; *) echo "$CO/$p" ;; esac
}

prepare_git_mode() {
    local top
    [ -d "$GITREPO" ] || die $E_TARGET "--git $GITREPO: no such directory"
    CO=$(cd "$GITREPO" && pwd -P)
    top=$(git_c rev-parse --show-toplevel 2>/dev/null) || die $E_TARGET "$CO is not a git checkout"
    [ "$(cd "$top" && pwd -P)" = "$CO" ] || die $E_TARGET "$CO is not the root of its git checkout ($top is)"
    [ -d "$CO/python/sglang" ] || die $E_TARGET "$CO has no python/sglang/: not an SGLang checkout"
    TARGET="$CO/python" S="$CO/python/$STATE_REL"
    VERSION=$(sglang_version "$CO/python")
    log "target: git checkout $CO (sglang $VERSION, HEAD $(git_c rev-parse --short HEAD 2>/dev/null || echo none)); nsa-fastpath targets $TARGET_SPEC"
    if [ -e "$(git_path rebase-apply)" ] || [ -e "$(git_path rebase-merge)" ] ||
        [ -e "$(git_path sequencer)" ] || [ -e "$(git_path REVERT_HEAD)" ] || [ -e "$(git_path CHERRY_PICK_HEAD)" ]; then
        die $E_MANUAL "a git am/rebase/revert/cherry-pick is in progress in $CO: finish or abort it first. Nothing changed."
    fi
    GPATHS=()
    local i
    for i in "${!M_PATH[@]}"; do GPATHS+=("python/${M_PATH[$i]}"); done
}

git_dirty_check() {
    local dirty
    dirty=$(git_c status --porcelain --untracked-files=all -- "${GPATHS[@]}")
    if [ -n "$dirty" ]; then
        err "uncommitted changes in $CO to files nsa-fastpath touches:"
        printf '%s\n' "$dirty" | sed 's/^/[nsa-fastpath]     /' >&2
        die $E_REFUSED "commit or stash them (git stash), then rerun. Nothing changed."
    fi
}

row_of() {  # path -> index in the manifest
    local i
    for i in "${!M_PATH[@]}"; do [ "${M_PATH[$i]}" = "$1" ] && { echo "$i"; return 0; }; done
    return 1
}

# Commits carrying the nsa-fastpath trailer that are still in effect, newest first.
git_our_commits() {
    local reverted sha tr
    reverted=$(git_c log --format=%B HEAD -- "${GPATHS[@]}" |
        sed -n 's/.*This reverts commit \([0-9a-f]\{40\}\).*/\1/p')
    while IFS=$'\t' read -r sha tr; do
        [ -n "$tr" ] || continue
        case $reverted in *"$sha"*) continue ;; esac
        printf '%s\n' "$sha"
    done < <(git_c log --format='%H%x09%(trailers:key=nsa-fastpath,valueonly,separator=%x2C)' HEAD -- "${GPATHS[@]}")
}

cmd_git_apply() {
    local p i rel todo=() covered=" " st_all head0 n
    load_manifest "$MANIFEST"
    prepare_git_mode
    take_lock "$CO"
    n=${#M_PATH[@]}
    scan
    if [ "${#FOREIGN_IDX[@]}" -gt 0 ]; then
        report_foreign "refusing to apply:"
        err "SGLang found in $CO: version $VERSION; nsa-fastpath targets $TARGET_SPEC only."
        err "What to do: check out SGLang v${TARGET_SPEC#sglang==} (or undo local edits to the file(s) above), then rerun. Nothing changed."
        exit $E_REFUSED
    fi
    if [ "$N_PATCHED" -eq "$n" ] && [ -z "$(git_c status --porcelain --untracked-files=all -- "${GPATHS[@]}")" ]; then
        log "already applied: all $n files are nsa-fastpath's; nothing to do"
        exit $E_OK
    fi
    git_dirty_check
    local patches=("$PATCHES_DIR"/*.patch)
    [ "${#patches[@]}" -gt 0 ] || die $E_TARGET "no patches in $PATCHES_DIR"
    for p in "${patches[@]}"; do
        st_all=""
        while IFS= read -r rel; do
            i=$(row_of "$rel") || die $E_TARGET "$(basename "$p") touches python/$rel, which manifest.tsv does not list (run scripts/regen.py)"
            covered="$covered$rel "
            case " $st_all " in *" ${ROW_ST[$i]} "*) ;; *) st_all="${st_all:+$st_all }${ROW_ST[$i]}" ;; esac
        done < <(sed -n 's#^diff --git a/python/\([^ ]*\) b/.*#\1#p' "$p")
        case $st_all in
            patched) log "already applied: $(basename "$p")" ;;
            pristine) todo+=("$p") ;;
            *) die $E_REFUSED "$(basename "$p") is partly applied in $CO (its files are: $st_all); revert it (apply.sh revert --git) first. Nothing changed." ;;
        esac
    done
    for i in "${!M_PATH[@]}"; do
        case $covered in *" ${M_PATH[$i]} "*) ;; *) die $E_TARGET "${M_PATH[$i]} is in manifest.tsv but in no patch (run scripts/regen.py)" ;; esac
    done
    if [ "$DRY" = 1 ]; then
        for p in "${todo[@]}"; do log "would git am $(basename "$p")"; done
        log "dry run: done (nothing changed)"
        exit $E_OK
    fi
    git_identity
    head0=$(git_c rev-parse HEAD)
    if ! git_c am --quiet -- "${todo[@]}"; then
        git_c am --abort || true
        [ "$(git_c rev-parse HEAD)" = "$head0" ] ||
            die $E_MANUAL "git am failed and \`git am --abort\` did not restore HEAD $head0 in $CO: check \`git status\`"
        die $E_ROLLED_BACK "git am failed (see above); ran \`git am --abort\`: $CO is unchanged (HEAD $head0)"
    fi
    for p in "${todo[@]}"; do log "applied $(basename "$p")"; done
    scan
    [ "$N_PATCHED" -eq "$n" ] || die $E_MANUAL "after git am, $((n - N_PATCHED)) file(s) are not nsa-fastpath's: check \`git log\` in $CO"
    log "applied: $(git_c rev-parse --short HEAD) on top of $(git_c rev-parse --short "$head0"); undo with: bash scripts/apply.sh revert --git $(printf %q "$CO")"
}

cmd_git_revert() {
    local commits head0 n c
    load_manifest "$MANIFEST"
    prepare_git_mode
    take_lock "$CO"
    n=${#M_PATH[@]}
    scan
    if [ "${#FOREIGN_IDX[@]}" -gt 0 ]; then
        report_foreign "refusing to revert:"
        die $E_REFUSED "the file(s) above were changed by commits other than nsa-fastpath's, or locally. Restore them by hand (git checkout v${TARGET_SPEC#sglang==} -- <file>). Nothing changed."
    fi
    git_dirty_check
    if [ "$N_PRISTINE" -eq "$n" ]; then
        log "already pristine: all $n files are SGLang's own; nothing to revert"
        exit $E_OK
    fi
    mapfile -t commits < <(git_our_commits)
    [ "${#commits[@]}" -gt 0 ] ||
        die $E_MANUAL "files are patched but no commit with an 'nsa-fastpath:' trailer is in effect in $CO: restore them by hand (git checkout v${TARGET_SPEC#sglang==} -- ${GPATHS[*]}). Nothing changed."
    if [ "$DRY" = 1 ]; then
        for c in "${commits[@]}"; do log "would git revert $(git_c log -1 --format='%h %s' "$c")"; done
        log "dry run: done (nothing changed)"
        exit $E_OK
    fi
    git_identity
    head0=$(git_c rev-parse HEAD)
    for c in "${commits[@]}"; do
        if ! git_c revert --no-edit "$c" >/dev/null; then
            git_c revert --abort 2>/dev/null || true
            git_c reset --quiet --keep "$head0" ||
                die $E_MANUAL "git revert of $c failed and HEAD could not be reset to $head0 in $CO: check \`git status\`"
            die $E_ROLLED_BACK "git revert of $c failed (see above); reset $CO to $head0: unchanged"
        fi
        log "reverted $(git_c log -1 --format='%h %s' "$c")"
    done
    scan
    [ "$N_PRISTINE" -eq "$n" ] ||
        die $E_MANUAL "after reverting, $((n - N_PRISTINE)) file(s) are still not SGLang's (other commits changed them): check \`git log\` in $CO"
    log "reverted: all $n files are SGLang's again ($(git_c rev-parse --short HEAD))"
}

cmd_git_status() {
    local i n code overall c
    load_manifest "$MANIFEST"
    prepare_git_mode
    n=${#M_PATH[@]}
    scan
    for i in "${!M_PATH[@]}"; do
        printf '[nsa-fastpath]   %-9s python/%s\n' "${ROW_ST[$i]}" "${M_PATH[$i]}"
    done
    while IFS= read -r c; do
        [ -n "$c" ] && log "commit in effect: $(git_c log -1 --format='%h %s' "$c")"
    done < <(git_our_commits)
    if [ "${#FOREIGN_IDX[@]}" -gt 0 ]; then overall=foreign code=$E_REFUSED
    elif [ "$N_PRISTINE" -eq "$n" ]; then overall=pristine code=$E_OK
    elif [ "$N_PATCHED" -eq "$n" ]; then overall=patched code=$E_OK
    else overall=partial code=$E_PARTIAL
    fi
    if [ -n "$(git_c status --porcelain --untracked-files=all -- "${GPATHS[@]}")" ]; then
        log "note: uncommitted changes to these files"
    fi
    log "overall: $overall"
    exit "$code"
}

case "$CMD:${GITREPO:+git}" in
    apply:) cmd_apply ;;
    revert:) cmd_revert ;;
    status:) cmd_status ;;
    apply:git) cmd_git_apply ;;
    revert:git) cmd_git_revert ;;
    status:git) cmd_git_status ;;
esac
