#!/usr/bin/env bash
# Starts a local S3 server (SeaweedFS) with a demo bucket of sample files and mounts it with
# mount-s3, so you can `ls` and `cat` through the mount.
#
#   scripts/demo.sh          set up (first run installs packages), start, mount, list
#   scripts/demo.sh stop     unmount and stop the server
#
# Everything lives under $DEMO_DIR (default /tmp/mount-s3-demo); the mount is $DEMO_DIR/mnt.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
demo=${DEMO_DIR:-/tmp/mount-s3-demo}
mnt=$demo/mnt
bucket=demo
# shellcheck source=scripts/local-s3.sh
source "$repo/scripts/local-s3.sh"

stop() {
  if grep -qs " $mnt fuse" /proc/mounts; then
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
    echo "unmounted $mnt"
  fi
  if [ -f "$demo/weed.pid" ]; then
    S3_PID=$(cat "$demo/weed.pid")
    local_s3_stop
    rm -f "$demo/weed.pid"
    echo "stopped the local S3 server"
  fi
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

"$repo/scripts/setup-test-env.sh"
command -v curl >/dev/null || { apt-get update -q && apt-get install -y -q curl; }
(cd "$repo" && cargo build --release --quiet)
stop >/dev/null 2>&1 || true
rm -rf "$demo/data"
mkdir -p "$mnt"

local_s3_start "$demo"
echo "waiting for the local S3 server at $S3_ENDPOINT ..."
s3_make_bucket "$bucket" || { stop; exit 1; }

tmp=$(mktemp -d)
echo "Hello from S3, through mount-s3." >"$tmp/hello"
printf 'epoch,loss\n1,0.91\n2,0.57\n3,0.42\n' >"$tmp/csv"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$tmp/shard"
s3_put "$bucket" README.txt "$tmp/hello"
s3_put "$bucket" metrics/train.csv "$tmp/csv"
s3_put "$bucket" datasets/shard-00000.bin "$tmp/shard"
s3_put "$bucket" datasets/shard-00001.bin "$tmp/shard"
rm -rf "$tmp"

"$repo/target/release/mount-s3" --endpoint-url "$S3_ENDPOINT" --force-path-style "$bucket" "$mnt"

echo
echo "Bucket '$bucket' is mounted at $mnt:"
ls -lR "$mnt"
echo
cat "$mnt/README.txt"
echo
echo "Try: ls -l $mnt/datasets; cat $mnt/metrics/train.csv"
echo "Credentials for other tools: AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY, endpoint $S3_ENDPOINT"
echo "Stop with: $0 stop"
