#!/usr/bin/env bash
# Listing benchmark: `ls -lR`, `find` and `du` over DIRS x KEYS keys (default 100 x 1000) on a
# local SeaweedFS, each on a fresh mount with the page cache dropped, for mount-s3 and, when
# BENCH_PEER names a Mountpoint binary, for it too (same server, same run). Then a second
# `ls -lR` on a mount that has just listed everything, with --metadata-ttl 60: mount-s3 serves
# it from remembered pages (the LISTs it sent are counted from its metrics).
#
#   benches/listing/run.sh
#   BENCH_PEER=/path/to/mountpoint-s3 BENCH_LIST_DIRS=100 BENCH_LIST_KEYS=1000 benches/listing/run.sh
#
# BENCH_BIN: a prebuilt mount-s3 (else a release build); BENCH_DIR (/tmp/mount-s3-listing).
# Needs root (to drop caches).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${BENCH_DIR:-/tmp/mount-s3-listing}
dirs=${BENCH_LIST_DIRS:-100}
keys=${BENCH_LIST_KEYS:-1000}
peer=${BENCH_PEER:-}
bucket=listing
mnt=$dir/mnt
# shellcheck source=scripts/local-s3.sh
source "$repo/scripts/local-s3.sh"
py=$repo/.venv/bin/python3
bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  "$repo/scripts/setup-test-env.sh" >/dev/null
  "$py" -c "import boto3" 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check boto3
  (cd "$repo" && cargo build --release --quiet)
  bin=$repo/target/release/mount-s3
fi
export AWS_EC2_METADATA_DISABLED=true

trap 'local_s3_teardown "$mnt" "$dir/server"' EXIT
rm -rf "$dir"
mkdir -p "$dir/server" "$mnt"
local_s3_start "$dir/server"
s3_make_bucket "$bucket"
echo "uploading $dirs x $keys keys ..." >&2
"$py" - "$S3_ENDPOINT" "$bucket" "$dirs" "$keys" <<'PY'
import sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config
endpoint, bucket, dirs, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                  request_checksum_calculation="when_required"))
def put(i):
    client.put_object(Bucket=bucket, Key=f"d{i // keys:03}/k{i % keys:05}", Body=b"x" * (i % 100))
with ThreadPoolExecutor(32) as pool:
    list(pool.map(put, range(dirs * keys)))
PY

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
mount_with() { # BIN ARGS...
  local_s3_mount "$1" "$mnt" "$dir/mount.log" "${@:2}" "$bucket" || exit 1
}
unmount() { local_s3_unmount "$mnt"; }
timed() { # prints the seconds COMMAND took on a fresh mount of BIN (the rest of the args)
  local command=$1
  shift
  mount_with "$@"
  drop_caches
  local t0 t1
  t0=$(now)
  (cd "$mnt" && eval "$command") >/dev/null
  t1=$(now)
  unmount
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

declare -A commands=([ls_lR]="ls -lR ." [find]="find . -type f" [du]="du -s .")
printf '%-8s %12s %12s %8s\n' command mount-s3 Mountpoint ratio
for name in ls_lR find du; do
  ours=$(timed "${commands[$name]}" "$bin")
  theirs=-
  ratio=-
  if [ -n "$peer" ]; then
    theirs=$(timed "${commands[$name]}" "$peer" --upload-checksums off)
    ratio=$(python3 -c "print(f'{$ours / $theirs:.2f}')")
  fi
  printf '%-8s %12s %12s %8s\n' "$name" "$ours" "$theirs" "$ratio"
done

# A second `ls -lR` within the metadata TTL, after a first one on the same mount.
port=$(local_s3_free_port)
# LISTs so far, from the mount's metrics (refreshed every second).
lists() {
  sleep 1.2
  curl -s "127.0.0.1:$port/metrics" | awk '/^s3_request_count\{s3_request="ListObjectsV2"\}/ { print $2 }'
}
mount_with "$bin" --metadata-ttl 60 --metrics-address "127.0.0.1:$port"
(cd "$mnt" && ls -lR . >/dev/null)
before=$(lists)
t0=$(now)
(cd "$mnt" && ls -lR . >/dev/null)
t1=$(now)
after=$(lists)
unmount
printf '\nsecond ls -lR within --metadata-ttl 60: %s s, %s LISTs (the first: %s)' \
  "$(python3 -c "print(f'{$t1 - $t0:.2f}')")" "$((${after%.*} - ${before%.*}))" "${before%.*}"
if [ -n "$peer" ]; then
  mount_with "$peer" --upload-checksums off --metadata-ttl 60
  (cd "$mnt" && ls -lR . >/dev/null)
  t0=$(now)
  (cd "$mnt" && ls -lR . >/dev/null)
  t1=$(now)
  unmount
  printf ' (Mountpoint: %s s)' "$(python3 -c "print(f'{$t1 - $t0:.2f}')")"
fi
printf '\n'
