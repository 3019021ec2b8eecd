#!/usr/bin/env bash
# mmap benchmark: what ML loaders fetch through the mount for what they touch, against a
# local SeaweedFS. numpy.load(mmap_mode="r") of a 1 GiB .npy, then BENCH_MMAP_TOUCHES (2000)
# random 4 KiB page touches; a safetensors file of 64 tensors of 2 MiB, of which 8 are
# loaded (safe_open maps the file); each on a fresh mount with the page cache dropped. Prints
# bytes touched, bytes fetched (the mount's own counters) and their ratio, with sequential
# `dd` throughput of the same mount settings for reference. BENCH_READ_AHEAD_KB lists the
# mounts' `--read-ahead` values (default: mount-s3's own, 1024) to show the trade-off between
# mmap read-around and sequential reads.
#
#   benches/mmap/run.sh
#   BENCH_READ_AHEAD_KB="12 128 1024" benches/mmap/run.sh
#
# BENCH_BIN: a prebuilt mount-s3; BENCH_DIR (/tmp/mount-s3-mmap). Needs root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${BENCH_DIR:-/tmp/mount-s3-mmap}
touches=${BENCH_MMAP_TOUCHES:-2000}
read_aheads=${BENCH_READ_AHEAD_KB:-1024}
bucket=mmap
mnt=$dir/mnt
# shellcheck source=scripts/local-s3.sh
source "$repo/scripts/local-s3.sh"
py=$repo/.venv/bin/python3
access=$repo/benches/mmap/access.py
bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  "$repo/scripts/setup-test-env.sh" >/dev/null
  (cd "$repo" && cargo build --release --quiet)
  bin=$repo/target/release/mount-s3
fi
"$py" -c "import numpy, safetensors" 2>/dev/null ||
  "$py" -m pip install --quiet --disable-pip-version-check numpy safetensors
export AWS_EC2_METADATA_DISABLED=true

mount_pid=
trap 'local_s3_teardown "$mnt" "$dir/server" "$dir/files"' EXIT
rm -rf "$dir"
mkdir -p "$dir/server" "$dir/files" "$mnt"
local_s3_start "$dir/server"
s3_make_bucket "$bucket"
"$py" "$access" make "$dir/files"
s3_put "$bucket" array.npy "$dir/files/array.npy"
s3_put "$bucket" model.safetensors "$dir/files/model.safetensors"
head -c $((1024 * 1048576)) /dev/urandom >"$dir/files/seq.bin"
s3_put "$bucket" seq.bin "$dir/files/seq.bin"
rm -rf "$dir/files"

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
mount_it() { # READ_AHEAD_KB
  "$bin" -f --endpoint-url "$S3_ENDPOINT" --force-path-style --read-ahead "$1" "$bucket" "$mnt" \
    >"$dir/mount.log" 2>&1 &
  mount_pid=$!
  for _ in $(seq 1 100); do grep -qs " $mnt fuse" /proc/mounts && break; sleep 0.1; done
  # The mount's own device numbers (major:minor, whole): mount-s3 sets its readahead just
  # after mounting; the run goes on only once it reads back as asked.
  local ra
  ra="/sys/class/bdi/$(stat -c '%Hd:%Ld' "$mnt")/read_ahead_kb"
  for _ in $(seq 1 50); do [ "$(cat "$ra")" = "$1" ] && break; sleep 0.1; done
  [ "$(cat "$ra")" = "$1" ] || { echo "readahead not set to $1 KiB" >&2; exit 1; }
  drop_caches
}
unmount_it() {
  for _ in $(seq 1 25); do fusermount3 -u "$mnt" 2>/dev/null && break; sleep 0.2; done
  wait "$mount_pid" || true
}
fetched() { grep -o 'bytes_fetched=[0-9]*' "$dir/mount.log" | tail -1 | cut -d= -f2; }
row() { # label, read_ahead, "seconds touched", fetched
  python3 - "$@" <<'PY'
import sys
label, ra, out, fetched = sys.argv[1:5]
seconds, touched = out.split()
t, f = int(touched), int(fetched)
print(f"{label:<12} {ra:>6} KiB {t / 2**20:10.1f} {f / 2**20:11.1f} {f / t:8.1f} {float(seconds):9.2f}")
PY
}

printf '%-12s %10s %10s %11s %8s %9s\n' workload readahead "touched MiB" "fetched MiB" ratio seconds
for ra in $read_aheads; do
  mount_it "$ra"
  out=$("$py" "$access" npy "$mnt/array.npy" "$touches" 7)
  unmount_it
  row "npy mmap" "$ra" "$out" "$(fetched)"
  mount_it "$ra"
  out=$("$py" "$access" safetensors "$mnt/model.safetensors" 8)
  unmount_it
  row safetensors "$ra" "$out" "$(fetched)"
  mount_it "$ra"
  t0=$(now)
  dd if="$mnt/seq.bin" of=/dev/null bs=4K status=none
  t1=$(now)
  unmount_it
  printf '%-12s %6s KiB   sequential dd bs=4K of 1 GiB: %s MiB/s\n' dd "$ra" "$(python3 -c "print(f'{1024 / ($t1 - $t0):.0f}')")"
done
