#!/usr/bin/env bash
# Read benchmarks: starts a local S3 server, uploads the objects, mounts a release build for
# each fio job (page cache dropped first), and prints MiB/s next to a direct S3 read of the
# same bytes in the same run, with mount-s3's peak RSS and what it fetched from S3.
#
#   benches/fio/run.sh                   all jobs
#   BENCH_BIG_MIB=512 benches/fio/run.sh smaller objects for a quick look
#   BENCH_ONLY="reads cache" benches/fio/run.sh   some sections: reads, head, cache, write, peer
#
# Settings (environment): BENCH_BIG_MIB (2048) size of the large object; BENCH_QUAD_MIB (1024)
# size of each of the four objects; BENCH_WRITE_MIB (1024) size of the written file; BENCH_RUNTIME (15) seconds of each random job;
# BENCH_DIR (/tmp/mount-s3-bench) where the logs, the cache and the mount point live;
# BENCH_SERVER_DIR where the server keeps its data (default: in memory, /dev/shm, when it has
# room: S3 is remote in real use, and a server reading the same disk the cache writes would
# measure that disk twice; otherwise BENCH_DIR);
# BENCH_PEER, a Mountpoint binary to run the same sequential and cached jobs with, in the same
# run (section "peer"; CPU-seconds per GiB for both, and for curl's direct GET);
# BENCH_TLS=1: every read over https (the server serves TLS with the tests' certificate, its
# CA given to the mounts with --ca-bundle and to curl with --cacert; the peer is not run: it
# takes no bundle; the write section's direct upload stays on http);
# BENCH_PARALLEL (8) ranged GETs in the parallel direct read; BENCH_BIN, a mount-s3 binary built
# elsewhere (then nothing is built or installed: fio, curl and S3_WEED, the `weed` binary, must be
# there already; a bare machine without cargo or a package mirror). Needs root (to drop caches).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
jobs_dir=$repo/benches/fio
big_mib=${BENCH_BIG_MIB:-2048}
quad_mib=${BENCH_QUAD_MIB:-1024}
runtime=${BENCH_RUNTIME:-15}
write_mib=${BENCH_WRITE_MIB:-1024}
parallel=${BENCH_PARALLEL:-8}
dir=${BENCH_DIR:-/tmp/mount-s3-bench}
only=" ${BENCH_ONLY:-reads head cache write peer} "
peer=${BENCH_PEER:-}
want() { [[ $only == *" $1 "* ]]; }
bucket=bench
mnt=$dir/mnt
# shellcheck source=scripts/local-s3.sh
source "$repo/scripts/local-s3.sh"

bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  "$repo/scripts/setup-test-env.sh" >/dev/null
  for tool in fio curl; do
    command -v "$tool" >/dev/null || { apt-get update -q && apt-get install -y -q "$tool"; }
  done
  [ -x "$repo/.venv/bin/python3" ] && "$repo/.venv/bin/python3" -c "import boto3" 2>/dev/null ||
    "$repo/.venv/bin/python3" -m pip install --quiet --disable-pip-version-check boto3
  (cd "$repo" && cargo build --release --quiet)
  bin=$repo/target/release/mount-s3
fi

# The server's own subdirectory (deleted at the start and the end).
server_dir=${BENCH_SERVER_DIR:-}
if [ -z "$server_dir" ]; then
  needed=$(((big_mib + 4 * quad_mib + 1024) * 1048576))
  if [ "$(df --output=avail -B1 /dev/shm 2>/dev/null | tail -1)" -gt "$needed" ] 2>/dev/null; then
    server_dir=/dev/shm
  else
    server_dir=$dir
  fi
fi
server_dir=$server_dir/mount-s3-bench-server

trap 'local_s3_teardown "$mnt" "$server_dir"' EXIT

rm -rf "$dir" "$server_dir"
mkdir -p "$dir" "$mnt" "$server_dir"
touch "$dir/mount.log"
tls=${BENCH_TLS:-0}
LOCAL_S3_TLS=$tls local_s3_start "$server_dir"
s3_make_bucket "$bucket"
# Where the reads go: the server's https port with BENCH_TLS=1 (uploads stay on http).
read_endpoint=$S3_ENDPOINT
tls_mount=()
tls_curl=()
if [ "$tls" = 1 ]; then
  read_endpoint=$S3_ENDPOINT_TLS
  tls_mount=(--ca-bundle "$S3_CA_BUNDLE")
  tls_curl=(--cacert "$S3_CA_BUNDLE")
  if [ -n "$peer" ]; then
    echo "BENCH_TLS=1: the peer is not run (it takes no CA bundle)" >&2
    peer=
  fi
fi

echo "uploading ${big_mib} MiB + 4 x ${quad_mib} MiB of random data ..." >&2
# The large object is kept as a local file too: the cache benchmarks compare with it.
local=$dir/local
mkdir -p "$local/big"
head -c $((big_mib * 1024 * 1024)) /dev/urandom >"$local/big/object-0"
s3_put "$bucket" big/object-0 "$local/big/object-0"
if want reads; then
  head -c $((quad_mib * 1024 * 1024)) /dev/urandom >"$dir/quad.bin"
  for i in 0 1 2 3; do s3_put "$bucket" "quad/object-$i" "$dir/quad.bin"; done
  rm -f "$dir/quad.bin"
fi

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
mib_per_s() { python3 -c "print(f'{$1 / 1048576 / ($3 - $2):.1f}')"; }

# Direct S3 reads of the same bytes: one GET stream, and $parallel ranged GETs at once. Each
# is the best of three runs (the server is still busy for a while after the uploads, and one
# slow run would flatter every ratio below).
best() { python3 -c "import sys; print(max(float(x) for x in sys.argv[1:]))" "$@"; }
sync; sleep 5
# CPU-seconds (user + system) of the shell's children so far, from `times`.
# (`times` runs in this shell, not in a command substitution's subshell, whose children
# would be none.)
children_cpu() {
  times >"$dir/times"
  tail -1 "$dir/times" | awk '{ split($1, u, /[ms]/); split($2, k, /[ms]/); printf "%.3f", u[1] * 60 + u[2] + k[1] * 60 + k[2] }'
}
singles=()
curl_cpus=()
for _ in 1 2 3; do
  drop_caches
  children_cpu >"$dir/c0"
  t0=$(now); s3curl "${tls_curl[@]}" -o /dev/null "$read_endpoint/$bucket/big/object-0"; t1=$(now)
  children_cpu >"$dir/c1"
  c0=$(cat "$dir/c0") c1=$(cat "$dir/c1")
  singles+=("$(mib_per_s $((big_mib * 1048576)) "$t0" "$t1")")
  curl_cpus+=("$(python3 -c "print(f'{($c1 - $c0) / ($big_mib / 1024):.2f}')")")
done
curl_cpu=$(python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "${curl_cpus[@]}")
direct_single=$(best "${singles[@]}")
chunk=$((big_mib * 1048576 / parallel))
parallels=()
for _ in 1 2 3; do
  drop_caches
  t0=$(now)
  getters=()
  for i in $(seq 0 $((parallel - 1))); do
    s3curl "${tls_curl[@]}" -o /dev/null -H "Range: bytes=$((i * chunk))-$(((i + 1) * chunk - 1))" \
      "$read_endpoint/$bucket/big/object-0" &
    getters+=($!)
  done
  wait "${getters[@]}"
  t1=$(now)
  parallels+=("$(mib_per_s $((big_mib * 1048576)) "$t0" "$t1")")
done
direct_parallel=$(best "${parallels[@]}")
# The large object has now been read six times; the server answers the first reads of an
# object after its start more slowly (measured: 530 against 660-675 MiB/s for the 4-job run),
# so each of the four objects is read once too, for every job to meet the same server.
if want reads; then
  for i in 0 1 2 3; do s3curl "${tls_curl[@]}" -o /dev/null "$read_endpoint/$bucket/quad/object-$i"; done
fi

# Mounts in the foreground (so its PID is ours), waits until live.
# Mounts with $mount_bin: mount-s3 (BENCH_MOUNT_ARGS added), or the peer for its section.
mount_bin=$bin
mount_it() {
  log_from=$(($(wc -l <"$dir/mount.log") + 1)) # where this mount's lines start
  local extra=()
  if [ "$mount_bin" = "$bin" ]; then
    # shellcheck disable=SC2206 # BENCH_MOUNT_ARGS is split into flags on purpose
    extra=(${BENCH_MOUNT_ARGS:-} "${tls_mount[@]}")
  else
    extra=(--upload-checksums off)
  fi
  AWS_EC2_METADATA_DISABLED=true "$mount_bin" -f --endpoint-url "$read_endpoint" --force-path-style \
    "$bucket" "$mnt" "$@" "${extra[@]}" >>"$dir/mount.log" 2>&1 &
  mount_pid=$!
  for _ in $(seq 1 100); do
    grep -qs " $mnt fuse" /proc/mounts && return 0
    kill -0 "$mount_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "mount failed:" >&2; cat "$dir/mount.log" >&2; exit 1
}
unmount_it() {
  # The kernel may call the mount busy for a moment after the last reader closed.
  for _ in $(seq 1 25); do fusermount3 -u "$mnt" 2>/dev/null && break; sleep 0.2; done
  grep -qs " $mnt fuse" /proc/mounts && umount "$mnt"
  wait "$mount_pid" || true
}
peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$mount_pid/status"; }
# CPU-seconds (user + system) the mount process has used so far (its comm has no spaces).
clock_ticks=$(getconf CLK_TCK)
cpu_seconds() { awk -v hz="$clock_ticks" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$mount_pid/stat"; }
summary() { tail -n "+$log_from" "$dir/mount.log" | grep -o "$1=[0-9]*" | tail -1 | cut -d= -f2; }

printf '\nlocal S3 at %s (data in %s); objects: %s MiB and 4 x %s MiB\n' "$read_endpoint" "$server_dir" "$big_mib" "$quad_mib"
printf 'direct S3 read of %s MiB, best of 3: single GET %s MiB/s (%s), %s parallel ranged GETs %s MiB/s (%s)\n\n' \
  "$big_mib" "$direct_single" "${singles[*]}" "$parallel" "$direct_parallel" "${parallels[*]}"
printf '%-16s %10s %12s %14s %10s %12s %12s %8s %10s\n' job MiB/s "vs 1 GET" "vs ${parallel} GETs" "RSS MiB" "fetched MiB" "read MiB" "CPU s" "CPU s/GiB"

export MNT=$mnt BIG_SIZE=${big_mib}M QUAD_SIZE=${quad_mib}M RUNTIME=$runtime
read_jobs="seq_read_1job seq_read_4jobs rand_read_4k rand_read_1m"
want reads || read_jobs=seq_read_1job # the cache section compares with it
# The sequential jobs, like the direct reads, are the best of three runs (a fresh mount and a
# dropped page cache each time; peak RSS is the highest of the three); the random jobs run once
# for $runtime seconds.
fio_json_bw() { python3 -c "import json; j=json.load(open('$1')); print(f\"{sum(x['read']['bw_bytes'] for x in j['jobs'])/1048576:.1f}\")"; }
# CPU-seconds per GiB that fio read: CPU, fio's JSON.
cpu_per_gib() { python3 -c "import json; j=json.load(open('$2')); b=sum(x['read']['io_bytes'] for x in j['jobs']); print(f'{$1 / max(b, 1) * 1073741824:.2f}')"; }
all_runs=""
declare -A ours_bw ours_cpu
for job in $read_jobs; do
  runs=1
  case $job in seq_*) runs=3 ;; esac
  bw=0 rss=0 tries=() cpus=()
  for _ in $(seq 1 "$runs"); do
    mount_it
    drop_caches
    fio --output-format=json --output="$dir/$job-try.json" "$jobs_dir/$job.fio" >/dev/null
    try_rss=$(peak_rss_mib)
    try_cpu=$(cpu_seconds)
    unmount_it
    try_bw=$(fio_json_bw "$dir/$job-try.json")
    tries+=("$try_bw")
    ((try_rss > rss)) && rss=$try_rss
    if python3 -c "import sys; sys.exit(0 if $try_bw > $bw else 1)"; then
      bw=$try_bw
      mv "$dir/$job-try.json" "$dir/$job.json"
      fetched=$(summary bytes_fetched); served=$(summary bytes_served); cpu=$try_cpu
    fi
    cpus+=("$try_cpu")
  done
  all_runs+="$job: ${tries[*]} (CPU s: ${cpus[*]}); "
  per_gib=$(cpu_per_gib "$cpu" "$dir/$job.json")
  ours_bw[$job]=$bw
  ours_cpu[$job]=$per_gib
  printf '%-16s %10s %12s %14s %10s %12s %12s %8s %10s\n' "$job" "$bw" \
    "$(python3 -c "print(f'{$bw / $direct_single:.2f}')")" \
    "$(python3 -c "print(f'{$bw / $direct_parallel:.2f}')")" "$rss" \
    "$((fetched / 1048576))" "$((served / 1048576))" "$cpu" "$per_gib"
done
printf 'curl, one GET of the %s MiB object: %s CPU s/GiB (best of 3: %s)\n' "$big_mib" "$curl_cpu" "${curl_cpus[*]}"
printf '(each run, MiB/s: %s)\n' "$all_runs"

# The peer (BENCH_PEER, Mountpoint): the sequential jobs, best of three each, with its
# CPU-seconds per GiB, next to mount-s3's figures of this run.
if want peer && [ -n "$peer" ]; then
  printf '\npeer: %s\n' "$("$peer" --version 2>/dev/null | head -1)"
  printf '%-16s %11s %11s %10s %13s %13s %10s\n' job "peer MiB/s" "ours MiB/s" ours/peer \
    "peer CPU/GiB" "ours CPU/GiB" ours/peer
  mount_bin=$peer
  for job in seq_read_1job seq_read_4jobs; do
    [ -n "${ours_bw[$job]:-}" ] || continue
    bw=0 per_gib=0 tries=()
    for _ in 1 2 3; do
      mount_it
      drop_caches
      fio --output-format=json --output="$dir/peer-$job-try.json" "$jobs_dir/$job.fio" >/dev/null
      try_cpu=$(cpu_seconds)
      unmount_it
      try_bw=$(fio_json_bw "$dir/peer-$job-try.json")
      tries+=("$try_bw")
      if python3 -c "import sys; sys.exit(0 if $try_bw > $bw else 1)"; then
        bw=$try_bw
        per_gib=$(cpu_per_gib "$try_cpu" "$dir/peer-$job-try.json")
      fi
    done
    printf '%-16s %11s %11s %10s %13s %13s %10s   (peer runs: %s)\n' "$job" "$bw" "${ours_bw[$job]}" \
      "$(python3 -c "print(f'{${ours_bw[$job]} / $bw:.2f}')")" "$per_gib" "${ours_cpu[$job]}" \
      "$(python3 -c "print(f'{${ours_cpu[$job]} / $per_gib:.2f}')")" "${tries[*]}"
  done
  mount_bin=$bin
  printf 'ours against curl (CPU per GiB of one GET stream): %s\n' \
    "$(python3 -c "print(f'{${ours_cpu[seq_read_1job]} / $curl_cpu:.2f}')")"
fi

# `head -c 100` of the large object: how much did the mount fetch for 100 bytes?
if want head; then
mount_it
drop_caches
head -c 100 "$mnt/big/object-0" >/dev/null
unmount_it
printf '\nhead -c 100 of the %s MiB object fetched %s KiB in %s GET(s)\n' "$big_mib" \
  "$(($(summary bytes_fetched) / 1024))" "$(summary get_requests)"
fi

# The data cache: first read with the cache on (vs off above), second read after a remount
# (vs fio on the local file, in the same filesystem as the cache), random 4 KiB reads over the
# fully cached object (vs the same job on the local file).
fio_bw() { # job, MNT → MiB/s
  MNT=$2 fio --output-format=json --output="$dir/$1-$3.json" "$jobs_dir/$1.fio" >/dev/null
  fio_json_bw "$dir/$1-$3.json"
}
if want cache; then
cache_dir=$dir/cache
drop_caches
local_seq=$(fio_bw seq_read_1job "$local" local)
drop_caches
local_rand=$(fio_bw rand_read_4k "$local" local)
# The first read with the cache is, like the uncached one, the best of three (each into an
# empty cache; the unmount waits for the blocks and the whole copy to be written).
first_cached=0 first_tries=()
for _ in 1 2 3; do
  rm -rf "$cache_dir"
  mount_it --cache "$cache_dir"
  drop_caches
  try=$(fio_bw seq_read_1job "$mnt" cache-first)
  first_tries+=("$try")
  python3 -c "import sys; sys.exit(0 if $try > $first_cached else 1)" && first_cached=$try
  unmount_it
done
mount_it --cache "$cache_dir"
drop_caches
second_cached=$(fio_bw seq_read_1job "$mnt" cache-second)
drop_caches
rand_cached=$(fio_bw rand_read_4k "$mnt" cache-rand)
unmount_it
first_plain=$(fio_json_bw "$dir/seq_read_1job.json")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
printf '\ncache: first read %s MiB/s (%s of the uncached %s; runs %s); second read after remount %s MiB/s (%s of the local file %s)\n' \
  "$first_cached" "$(ratio "$first_cached" "$first_plain")" "$first_plain" "${first_tries[*]}" \
  "$second_cached" "$(ratio "$second_cached" "$local_seq")" "$local_seq"
printf 'cache: random 4 KiB over the cached object %s MiB/s (%s of the local file %s); %s\n' \
  "$rand_cached" "$(ratio "$rand_cached" "$local_rand")" "$local_rand" \
  "$(tail -n "+$log_from" "$dir/mount.log" | grep -o 'cache summary: .*' | tail -1)"
# Pass 2 in the same mount (page cache dropped between the passes), for mount-s3 and the
# peer, best of three: what a second epoch of one job sees.
pass_two() {
  local best=0 try
  for _ in 1 2 3; do
    rm -rf "$cache_dir"
    mkdir -p "$cache_dir"
    mount_it --cache "$cache_dir"
    drop_caches
    fio_bw seq_read_1job "$mnt" pass-one >/dev/null
    drop_caches
    try=$(fio_bw seq_read_1job "$mnt" pass-two)
    unmount_it
    python3 -c "import sys; sys.exit(0 if $try > $best else 1)" && best=$try
  done
  echo "$best"
}
ours_two=$(pass_two)
line="cache: pass 2 in the same mount $ours_two MiB/s ($(ratio "$ours_two" "$local_seq") of the local file)"
if want peer && [ -n "$peer" ]; then
  mount_bin=$peer
  peer_two=$(pass_two)
  mount_bin=$bin
  line+="; peer $peer_two MiB/s, ours/peer $(ratio "$ours_two" "$peer_two")"
fi
printf '%s\n' "$line"
fi

# Sequential write of a new file (commit included) next to a direct multipart upload of the
# same number of bytes with the same part size and 4 parts in flight, as mount-s3 uses.
want write || exit 0
head -c $((write_mib * 1024 * 1024)) /dev/urandom >"$dir/write.bin"
drop_caches
direct_upload=$("$repo/.venv/bin/python3" "$jobs_dir/direct_upload.py" "$S3_ENDPOINT" "$bucket" \
  direct/upload "$dir/write.bin" 8388608 4)
rm -f "$dir/write.bin"
mount_it
drop_caches
WRITE_SIZE=${write_mib}M fio --output-format=json --output="$dir/seq_write.json" \
  "$jobs_dir/seq_write.fio" >/dev/null
rss=$(peak_rss_mib)
unmount_it
bw=$(python3 -c "import json; j=json.load(open('$dir/seq_write.json')); print(f\"{sum(x['write']['bw_bytes'] for x in j['jobs'])/1048576:.1f}\")")
printf '\nsequential write of %s MiB: mount-s3 %s MiB/s, direct multipart upload %s MiB/s, ratio %s, peak RSS %s MiB\n' \
  "$write_mib" "$bw" "$direct_upload" "$(python3 -c "print(f'{$bw / $direct_upload:.2f}')")" "$rss"
