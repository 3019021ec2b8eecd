#!/usr/bin/env bash
# Memory benchmark: the peak RSS of the mount (VmHWM) against its --memory-target, for
#   find     `find` over DIRS x KEYS keys (default 1000 x 1000 = 1,000,000), served by a
#            synthetic S3 endpoint (benches/memory/synthetic_s3.py: listings from arithmetic);
#   writers  64 programs writing 256 MiB files at once (a local SeaweedFS);
#   readers  64 programs reading 8 objects of 256 MiB at once (8 per object).
# Each figure is printed next to the target + 128 MiB it must stay under.
#
#   benches/memory/run.sh                        all three
#   BENCH_ONLY=find benches/memory/run.sh        one section: find, writers, readers
#
# Settings: BENCH_TARGET_MIB (256) the --memory-target; BENCH_DIRS, BENCH_KEYS (1000, 1000);
# BENCH_WRITERS (64), BENCH_WRITE_MIB (256); BENCH_READERS (64), BENCH_READ_MIB (256);
# BENCH_DIR (/tmp/mount-s3-membench); BENCH_BIN, a prebuilt mount-s3. Needs root (FUSE).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${BENCH_TARGET_MIB:-256}
dirs=${BENCH_DIRS:-1000}
keys=${BENCH_KEYS:-1000}
writers=${BENCH_WRITERS:-64}
write_mib=${BENCH_WRITE_MIB:-256}
readers=${BENCH_READERS:-64}
read_mib=${BENCH_READ_MIB:-256}
dir=${BENCH_DIR:-/tmp/mount-s3-membench}
only=" ${BENCH_ONLY:-find writers readers} "
want() { [[ $only == *" $1 "* ]]; }
mnt=$dir/mnt
# shellcheck source=scripts/local-s3.sh
source "$repo/scripts/local-s3.sh"

bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  "$repo/scripts/setup-test-env.sh" >/dev/null
  (cd "$repo" && cargo build --release --quiet)
  bin=$repo/target/release/mount-s3
fi

synthetic_pid=
cleanup() {
  [ -n "$synthetic_pid" ] && kill "$synthetic_pid" 2>/dev/null || true
  local_s3_teardown "$mnt" "$dir/server"
}
trap cleanup EXIT
rm -rf "$dir"
mkdir -p "$dir" "$mnt"
log=$dir/mount.log
touch "$log"

now() { date +%s.%N; }
# Mounts in the foreground with the memory target; sets mount_pid.
mount_it() {
  "$bin" -f --force-path-style --memory-target "$target" "$@" "$mnt" >>"$log" 2>&1 &
  mount_pid=$!
  for _ in $(seq 1 100); do
    grep -qs " $mnt fuse" /proc/mounts && return 0
    kill -0 "$mount_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "mount failed:" >&2; tail -5 "$log" >&2; exit 1
}
peak_mib() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$mount_pid/status"; }
unmount_it() {
  fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt"
  wait "$mount_pid" || true
}
# Runs `job I` for I in 1..N at once and times them; sets failed and seconds.
run_parallel() { # N, job
  local t0 p pids=()
  t0=$(now)
  for i in $(seq 1 "$1"); do "$2" "$i" & pids+=($!); done
  failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
  seconds=$(python3 -c "print(f'{$(now) - $t0:.1f}')")
}
report() { # name, peak MiB, extra
  local verdict=ok
  [ "$2" -le $((target + 128)) ] || verdict=OVER
  printf '%-8s peak RSS %5d MiB  (target %d + 128 = %d: %s)  %s\n' "$1" "$2" "$target" \
    $((target + 128)) "$verdict" "$3"
}

if want find; then
  port=$(local_s3_free_port)
  python3 "$repo/benches/memory/synthetic_s3.py" "$port" "$dirs" "$keys" >"$dir/synthetic.log" 2>&1 &
  synthetic_pid=$!
  for _ in $(seq 1 50); do grep -qs ready "$dir/synthetic.log" && break; sleep 0.1; done
  mount_it --endpoint-url "http://127.0.0.1:$port" --no-sign-request synthetic
  t0=$(now)
  found=$(find "$mnt" -type f | wc -l)
  t1=$(now)
  peak=$(peak_mib)
  kill -USR1 "$mount_pid"; sleep 0.5
  status=$(grep -o 'status: .*' "$log" | tail -1)
  unmount_it
  kill "$synthetic_pid" 2>/dev/null || true; synthetic_pid=
  report find "$peak" "$found files in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; $status"
fi

if want writers || want readers; then
  local_s3_start "$dir/server"
  s3_make_bucket bench
fi

if want writers; then
  mount_it --endpoint-url "$S3_ENDPOINT" bench
  write_one() { dd if=/dev/zero of="$mnt/w$1" bs=1M count="$write_mib" status=none; }
  run_parallel "$writers" write_one
  peak=$(peak_mib)
  unmount_it
  report writers "$peak" "$writers x $write_mib MiB in $seconds s, $failed failed"
fi

if want readers; then
  head -c $((read_mib * 1048576)) /dev/urandom >"$dir/object"
  for i in $(seq 0 7); do s3_put bench "r/$i" "$dir/object"; done
  rm -f "$dir/object"
  mount_it --endpoint-url "$S3_ENDPOINT" bench
  sync; echo 3 >/proc/sys/vm/drop_caches
  read_one() { cat "$mnt/r/$(($1 % 8))" >/dev/null; }
  run_parallel "$readers" read_one
  peak=$(peak_mib)
  unmount_it
  report readers "$peak" "$readers x $read_mib MiB in $seconds s, $failed failed"
fi
