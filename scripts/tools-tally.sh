#!/usr/bin/env bash
# The everyday-tools tally (issue 18): runs 17 programs against a mount on a local SeaweedFS
# and says for each whether it worked, failed (the program reported an error), or corrupted
# (it reported success but the bytes read back through a fresh mount are wrong).
#
#   scripts/tools-tally.sh                 # mount-s3, default mode and opt-in mode
#   TALLY_MODES=opt-in scripts/tools-tally.sh
#   TALLY_PEER=/path/to/mountpoint-s3 scripts/tools-tally.sh   # Mountpoint too, same run
#
# default: --allow-overwrite --allow-delete (Mountpoint's most permissive flags).
# opt-in:  those plus --staged-writes --posix-metadata --max-rename-keys 10000.
# TALLY_BIN: a prebuilt mount-s3 (else a debug build); TALLY_DIR (/tmp/mount-s3-tally).
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${TALLY_DIR:-/tmp/mount-s3-tally}
modes=${TALLY_MODES:-default opt-in}
peer=${TALLY_PEER:-}
py=$repo/.venv/bin/python3
mnt=$dir/mnt
ref=$dir/ref
# shellcheck source=scripts/local-s3.sh
source "$repo/scripts/local-s3.sh"
bin=${TALLY_BIN:-}
if [ -z "$bin" ]; then
  (cd "$repo" && cargo build --quiet) || exit 1
  bin=$repo/target/debug/mount-s3
fi
export AWS_EC2_METADATA_DISABLED=true GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t

trap 'local_s3_teardown "$mnt" "$dir/server"' EXIT
rm -rf "$dir"
mkdir -p "$dir/server" "$mnt" "$ref"
local_s3_start "$dir/server" || exit 1

# Reference inputs, made once.
make_inputs() {
  mkdir -p "$ref/src" "$ref/tree/empty" "$ref/tree/sub" "$ref/wheel/demo_pkg"
  (cd "$ref/src" && git init -q && for i in 1 2 3; do echo "v$i" >f; git add f; git commit -qm "c$i"; done)
  for i in $(seq 1 20); do head -c $((i * 1000)) /dev/urandom >"$ref/tree/sub/f$i"; done
  printf '#!/bin/sh\necho hi\n' >"$ref/tree/run.sh" && chmod 755 "$ref/tree/run.sh"
  ln -s sub/f1 "$ref/tree/link"
  tar -cf "$ref/tree.tar" -C "$ref" tree
  head -c $((1 << 30)) /dev/urandom >"$ref/big"
  echo 'ANSWER = 42' >"$ref/wheel/demo_pkg/__init__.py"
  "$py" - "$ref/wheel" <<'PY'
import base64, hashlib, os, sys, zipfile
root = sys.argv[1]
files = {"demo_pkg/__init__.py": open(os.path.join(root, "demo_pkg/__init__.py"), "rb").read(),
         "demo_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
         "demo_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tally\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
record = ""
for name, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += f"{name},sha256={digest},{len(data)}\n"
record += "demo_pkg-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile(os.path.join(root, "demo_pkg-1.0-py3-none-any.whl"), "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
    z.writestr("demo_pkg-1.0.dist-info/RECORD", record)
PY
}
make_inputs

mount_with() { # BIN BUCKET ARGS...
  local_s3_mount "$1" "$mnt" "$dir/mount.log" --upload-checksums off "${@:3}" "$2" || exit 1
}
unmount() { local_s3_unmount "$mnt"; }

# Each tool: run_NAME does the work in the mount (its status: did the program succeed);
# check_NAME verifies through a fresh mount of the same bucket.
tools="git_clone git_commit tar_x rsync cp_a sqlite np_savez h5py appended_log safe_save rdwr_ftruncate mv_dir ln_s chmod_x cp_1gib pip_target dd_notrunc"
run_git_clone() { git clone -q "file://$ref/src" "$mnt/clone" && git -C "$mnt/clone" fsck --no-progress; }
check_git_clone() { git -C "$mnt/clone" fsck --no-progress --full && [ "$(git -C "$mnt/clone" log --oneline | wc -l)" = 3 ]; }
run_git_commit() { git init -q "$mnt/repo" && echo a >"$mnt/repo/a" && git -C "$mnt/repo" add a && git -C "$mnt/repo" commit -qm one; }
check_git_commit() { git -C "$mnt/repo" fsck --no-progress && [ "$(git -C "$mnt/repo" show HEAD:a)" = a ]; }
run_tar_x() { mkdir "$mnt/tarx" && tar -xf "$ref/tree.tar" -C "$mnt/tarx"; }
check_tar_x() { diff -r --no-dereference "$ref/tree" "$mnt/tarx/tree" && [ -d "$mnt/tarx/tree/empty" ]; }
run_rsync() {
  rsync -a "$ref/tree/" "$mnt/rs/" && echo changed >"$dir/changed" && cp -a "$ref/tree" "$dir/tree2" &&
    cp "$dir/changed" "$dir/tree2/sub/f3" &&
    [ "$(rsync -a --stats "$dir/tree2/" "$mnt/rs/" | awk -F': ' '/files transferred/ {print $2}')" = 1 ]
}
check_rsync() { diff -r --no-dereference "$dir/tree2" "$mnt/rs"; }
run_cp_a() { cp -a "$ref/tree" "$mnt/cpa"; }
check_cp_a() { diff -r --no-dereference "$ref/tree" "$mnt/cpa"; }
py_run() { (cd "$mnt" && "$py" -c "$1"); }
run_sqlite() {
  py_run 'import sqlite3
c = sqlite3.connect("t.db"); c.execute("create table t(x)")
with c: c.executemany("insert into t values (?)", [(i,) for i in range(10000)])
c.close()'
}
check_sqlite() { cp "$mnt/t.db" "$dir/t.db" && [ "$("$py" -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*), sum(x) from t").fetchone())' "$dir/t.db")" = "(10000, 49995000)" ]; }
run_np_savez() { py_run 'import numpy as np; np.savez("a.npz", a=np.arange(100000))'; }
check_np_savez() { py_run 'import numpy as np; assert (np.load("a.npz")["a"] == np.arange(100000)).all()'; }
run_h5py() { py_run 'import h5py, numpy as np
with h5py.File("d.h5", "w") as f: f["x"] = np.arange(100000).reshape(100, 1000)'; }
check_h5py() { cp "$mnt/d.h5" "$dir/d.h5" && (cd "$dir" && "$py" -c 'import h5py, numpy as np; assert (h5py.File("d.h5")["x"][:] == np.arange(100000).reshape(100, 1000)).all()'); }
run_appended_log() { py_run 'for i in range(200):
    with open("train.log", "a") as f: f.write(f"step {i}\n"); f.flush()'; }
check_appended_log() { [ "$(cat "$mnt/train.log")" = "$(for i in $(seq 0 199); do echo "step $i"; done)" ]; }
run_safe_save() { py_run 'import os
for v in range(3):
    with open("notes.txt.tmp", "w") as f: f.write(f"version {v}\n"); f.flush(); os.fsync(f.fileno())
    os.replace("notes.txt.tmp", "notes.txt")
    assert open("notes.txt").read() == f"version {v}\n"'; }
check_safe_save() { [ "$(cat "$mnt/notes.txt")" = "version 2" ]; }
run_rdwr_ftruncate() {
  head -c 1048576 "$ref/big" >"$mnt/rw.bin" && py_run 'import os
fd = os.open("rw.bin", os.O_RDWR); os.pwrite(fd, b"X" * 100, 1000); os.ftruncate(fd, 500000); os.close(fd)'
}
check_rdwr_ftruncate() {
  head -c 1048576 "$ref/big" >"$dir/rw.bin" && printf 'X%.0s' $(seq 1 100) | dd of="$dir/rw.bin" bs=1 seek=1000 conv=notrunc status=none &&
    truncate -s 500000 "$dir/rw.bin" && cmp "$dir/rw.bin" "$mnt/rw.bin"
}
run_mv_dir() { mkdir "$mnt/mvsrc" && for i in $(seq 1 200); do echo "$i" >"$mnt/mvsrc/f$i"; done && mv "$mnt/mvsrc" "$mnt/mvdst"; }
# SeaweedFS keeps a prefix listed after its last key is deleted: an empty source is gone.
check_mv_dir() { [ -z "$(ls -A "$mnt/mvsrc" 2>/dev/null)" ] && [ "$(ls "$mnt/mvdst" | wc -l)" = 200 ] && [ "$(cat "$mnt/mvdst/f77")" = 77 ]; }
run_ln_s() { echo data >"$mnt/target" && ln -s target "$mnt/link" && [ "$(readlink "$mnt/link")" = target ]; }
check_ln_s() { [ "$(readlink "$mnt/link")" = target ] && [ "$(cat "$mnt/link")" = data ]; }
run_chmod_x() { printf '#!/bin/sh\necho ran\n' >"$mnt/tool.sh" && chmod +x "$mnt/tool.sh" && [ "$("$mnt/tool.sh")" = ran ]; }
check_chmod_x() { [ "$("$mnt/tool.sh")" = ran ]; }
run_cp_1gib() { cp "$ref/big" "$mnt/big"; }
check_cp_1gib() { cmp "$ref/big" "$mnt/big"; }
run_pip_target() { "$py" -m pip install --quiet --no-index --disable-pip-version-check --target "$mnt/site" "$ref/wheel/demo_pkg-1.0-py3-none-any.whl"; }
check_pip_target() { [ "$(PYTHONPATH="$mnt/site" "$py" -c 'import demo_pkg; print(demo_pkg.ANSWER)')" = 42 ]; }
run_dd_notrunc() { head -c 4194304 "$ref/big" >"$mnt/dd.bin" && head -c 4096 /dev/zero | dd of="$mnt/dd.bin" bs=4096 seek=100 conv=notrunc status=none; }
check_dd_notrunc() { head -c 4194304 "$ref/big" >"$dir/dd.bin" && head -c 4096 /dev/zero | dd of="$dir/dd.bin" bs=4096 seek=100 conv=notrunc status=none && cmp "$dir/dd.bin" "$mnt/dd.bin"; }

tally() { # LABEL BIN ARGS...
  local label=$1 b=$2 bucket ok=0 failed=0 corrupt=0 t
  shift 2
  bucket="tally-$(echo "$label" | tr -c 'a-z0-9\n' '-')"
  s3_make_bucket "$bucket" >/dev/null
  declare -A ran
  mount_with "$b" "$bucket" "$@"
  for t in $tools; do
    if "run_$t" >>"$dir/$label.out" 2>&1; then ran[$t]=1; else ran[$t]=0; fi
  done
  unmount
  mount_with "$b" "$bucket" "$@"
  for t in $tools; do
    if [ "${ran[$t]}" = 0 ]; then
      printf '%-10s %-16s fails\n' "$label" "$t"
      failed=$((failed + 1))
    elif "check_$t" >>"$dir/$label.out" 2>&1; then
      printf '%-10s %-16s works\n' "$label" "$t"
      ok=$((ok + 1))
    else
      printf '%-10s %-16s CORRUPTED\n' "$label" "$t"
      corrupt=$((corrupt + 1))
    fi
  done
  unmount
  echo "$label: $ok of 17 work, $failed fail, $corrupt corrupted (details: $dir/$label.out)"
}

common=(--allow-overwrite --allow-delete)
for mode in $modes; do
  case $mode in
  default) tally default "$bin" "${common[@]}" ;;
  opt-in) tally opt-in "$bin" "${common[@]}" --staged-writes --posix-metadata --max-rename-keys 10000 --staging-dir "$dir/staging" ;;
  *) echo "unknown mode $mode" >&2 ;;
  esac
done
[ -n "$peer" ] && tally mountpoint "$peer" "${common[@]}"
exit 0
