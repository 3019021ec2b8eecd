#!/usr/bin/env bash
# Fleet benchmark: N mounts on one machine (N nodes of a training job) read the same dataset,
# each in its own shuffled order, with and without a shared cache bucket (--cache-xz). A proxy
# in front of the S3 server holds every request to the source bucket for BENCH_FLEET_DELAY_MS
# (a source in a remote region) and none to the cache bucket (same zone). For each epoch it
# prints the time, the source bucket's requests (counted at the proxy), GETs and bytes (the
# mounts' own counters), and the bytes the cache bucket served. Without the shared cache the
# source is read N times per epoch; with it, about once in the first epoch and not at all after.
#
#   benches/fleet/run.sh                         defaults below (a 2-core machine: minutes)
#   BENCH_FLEET_SHARDS=128 BENCH_FLEET_FILES=20000 benches/fleet/run.sh   8 GiB of shards + 20,000 files
#
# Settings (environment): BENCH_FLEET_NODES ("4 8") mounts per run; BENCH_FLEET_SHARDS (16)
# shards of BENCH_FLEET_SHARD_MIB (64) MiB; BENCH_FLEET_FILES (2000) files of
# BENCH_FLEET_FILE_KIB (100) KiB; BENCH_FLEET_EPOCHS (2) epochs per run; BENCH_FLEET_WORKERS
# (4) readers per mount; BENCH_FLEET_DELAY_MS (20); BENCH_FLEET_MODES ("off xz");
# BENCH_DIR (/tmp/mount-s3-fleet) for the server's data, mounts and logs. BENCH_BIN and
# BENCH_PROXY name prebuilt binaries (then nothing is built). Needs root (to drop caches).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${BENCH_DIR:-/tmp/mount-s3-fleet}
nodes_list=${BENCH_FLEET_NODES:-4 8}
shards=${BENCH_FLEET_SHARDS:-16}
shard_mib=${BENCH_FLEET_SHARD_MIB:-64}
files=${BENCH_FLEET_FILES:-2000}
file_kib=${BENCH_FLEET_FILE_KIB:-100}
epochs=${BENCH_FLEET_EPOCHS:-2}
workers=${BENCH_FLEET_WORKERS:-4}
delay=${BENCH_FLEET_DELAY_MS:-20}
modes=${BENCH_FLEET_MODES:-off xz}
source_bucket=fleet-source
cache_bucket=fleet-cache
# shellcheck source=scripts/local-s3.sh
source "$repo/scripts/local-s3.sh"
py=$repo/.venv/bin/python3
dataset() { "$py" "$repo/benches/fleet/dataset.py" "$S3_ENDPOINT" "$@"; }

bin=${BENCH_BIN:-}
proxy_bin=${BENCH_PROXY:-}
if [ -z "$bin" ] || [ -z "$proxy_bin" ]; then
  "$repo/scripts/setup-test-env.sh" >/dev/null
  "$py" -c "import boto3" 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check boto3
  (cd "$repo" && cargo build --release --quiet && cargo build --release --quiet --example latency_proxy)
  bin=$repo/target/release/mount-s3
  proxy_bin=$repo/target/release/examples/latency_proxy
fi

pids=()
proxy_pid=
cleanup() {
  for m in "$dir"/mnt/*; do
    grep -qs " $m fuse" /proc/mounts && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null
  local_s3_stop
  rm -rf "$dir/server"
}
trap cleanup EXIT

rm -rf "$dir"
mkdir -p "$dir/mnt" "$dir/logs" "$dir/server"
local_s3_start "$dir/server"
s3_make_bucket "$source_bucket"
s3_make_bucket "$cache_bucket"
echo "uploading $shards x $shard_mib MiB shards and $files x $file_kib KiB files ..." >&2
dataset upload "$source_bucket" "$shards" "$shard_mib" "$files" "$file_kib"
dataset_mib=$(python3 -c "print(f'{($shards * $shard_mib * 1024 + $files * $file_kib) / 1024:.0f}')")

"$proxy_bin" "$S3_ENDPOINT" "$source_bucket" "$delay" "$dir/proxy.state" &
proxy_pid=$!
for _ in $(seq 1 50); do [ -s "$dir/proxy.state" ] && break; sleep 0.1; done
proxy_url=$(head -1 "$dir/proxy.state")
source_requests() { sed -n 2p "$dir/proxy.state" | cut -d' ' -f1; }

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# Sum of FIELD=N over the lines of the logs that contain MARKER.
sum_field() {
  local marker=$1 field=$2
  shift 2
  { grep -h "$marker" "$@" || true; } | { grep -o "$field=[0-9]*" || true; } | cut -d= -f2 |
    awk '{ s += $1 } END { printf "%.0f\n", s }'
}

printf '%-5s %-4s %-5s %9s %11s %11s %11s %11s %9s %9s\n' nodes mode epoch seconds src_requests src_GETs src_MiB shared_MiB src_reads MiB/s
for nodes in $nodes_list; do
  for mode in $modes; do
    [ "$mode" = xz ] && dataset empty "$cache_bucket"
    extra=()
    [ "$mode" = xz ] && extra=(--cache-xz "$cache_bucket" --cache-xz-max-object-size "$shard_mib")
    for epoch in $(seq 1 "$epochs"); do
      logs=()
      pids=()
      for i in $(seq 1 "$nodes"); do
        mkdir -p "$dir/mnt/$i"
        log=$dir/logs/$nodes-$mode-$epoch-$i.log
        logs+=("$log")
        "$bin" -f --endpoint-url "$proxy_url" --force-path-style "${extra[@]}" \
          "$source_bucket" "$dir/mnt/$i" >"$log" 2>&1 &
        pids+=($!)
        dataset order "$source_bucket" $((epoch * 1000 + i)) >"$dir/order-$i"
      done
      for i in $(seq 1 "$nodes"); do
        for _ in $(seq 1 100); do grep -qs " $dir/mnt/$i fuse" /proc/mounts && break; sleep 0.1; done
      done
      drop_caches
      before=$(source_requests)
      t0=$(now)
      readers=()
      for i in $(seq 1 "$nodes"); do
        (cd "$dir/mnt/$i" && xargs -a "$dir/order-$i" -d '\n' -P "$workers" -n 8 cat >/dev/null) &
        readers+=($!)
      done
      wait "${readers[@]}"
      t1=$(now)
      sleep 0.5
      after=$(source_requests)
      for i in $(seq 1 "$nodes"); do fusermount3 -u "$dir/mnt/$i" 2>/dev/null || umount -l "$dir/mnt/$i"; done
      for p in "${pids[@]}"; do wait "$p" || true; done
      pids=()
      gets=$(sum_field "read summary" get_requests "${logs[@]}")
      fetched=$(sum_field "read summary" bytes_fetched "${logs[@]}")
      shared=$(sum_field "shared cache summary" hit_bytes "${logs[@]}")
      python3 - "$nodes" "$mode" "$epoch" "$t0" "$t1" "$before" "$after" "$gets" "$fetched" "$shared" "$dataset_mib" <<'PY'
import sys
n, mode, epoch = sys.argv[1:4]
t0, t1 = float(sys.argv[4]), float(sys.argv[5])
requests = int(sys.argv[7]) - int(sys.argv[6])
gets, fetched, shared = (int(x) for x in sys.argv[8:11])
dataset = float(sys.argv[11])
seconds = t1 - t0
mib = fetched / 1048576
print(f"{n:<5} {mode:<4} {epoch:<5} {seconds:9.1f} {requests:11d} {gets:11d} {mib:11.0f} "
      f"{shared / 1048576:11.0f} {mib / dataset:9.2f} {int(n) * dataset / seconds:9.1f}")
PY
    done
  done
done
echo "dataset: $dataset_mib MiB per node per epoch ($shards x $shard_mib MiB + $files x $file_kib KiB); src_reads = source bytes / dataset; MiB/s = all nodes together" >&2
