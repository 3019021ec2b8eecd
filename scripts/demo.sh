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
access_key=demo-access-key
secret_key=demo-secret-key-not-for-production

stop() {
  if grep -qs " $mnt fuse" /proc/mounts; then
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
    echo "unmounted $mnt"
  fi
  if [ -f "$demo/weed.pid" ]; then
    pid=$(cat "$demo/weed.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      echo "stopped SeaweedFS (pid $pid)"
    fi
    rm -f "$demo/weed.pid"
  fi
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

# A port that is free, and whose +10000 (SeaweedFS's gRPC port) is free too.
free_port() {
  python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 50000)
    if free(p) and free(p + 10000):
        print(p); break
PY
}

"$repo/scripts/setup-test-env.sh"
command -v curl >/dev/null || { apt-get update -q && apt-get install -y -q curl; }
(cd "$repo" && cargo build --release --quiet)
stop >/dev/null 2>&1 || true
rm -rf "$demo/data"
mkdir -p "$demo/data" "$mnt"

cat >"$demo/s3.json" <<JSON
{"identities":[{"name":"demo","credentials":[{"accessKey":"$access_key","secretKey":"$secret_key"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
master=$(free_port); volume=$(free_port); filer=$(free_port); s3=$(free_port)
args=(-v=0 server "-dir=$demo/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false
      -volume.max=0 -master.volumeSizeLimitMB=256 -filer -s3 "-s3.config=$demo/s3.json"
      -s3.port.iceberg=0 -s3.port.lance=0)
for pair in master:$master volume:$volume filer:$filer s3:$s3; do
  name=${pair%%:*}; port=${pair#*:}
  args+=("-$name.port=$port" "-$name.port.grpc=$((port + 10000))")
done
setsid "$repo/.venv/bin/weed" "${args[@]}" >"$demo/weed.log" 2>&1 &
echo $! >"$demo/weed.pid"

endpoint=http://127.0.0.1:$s3
s3curl() { curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access_key:$secret_key" "$@"; }
echo "waiting for SeaweedFS at $endpoint ..."
for i in $(seq 1 120); do
  if s3curl -X PUT "$endpoint/$bucket" -o /dev/null 2>/dev/null; then break; fi
  [ "$i" = 120 ] && { echo "SeaweedFS did not start; see $demo/weed.log" >&2; stop; exit 1; }
  sleep 0.5
done

put() {
  # SeaweedFS checks the payload hash, which curl does not send by itself.
  s3curl -X PUT -H "x-amz-content-sha256: $(sha256sum "$2" | cut -d' ' -f1)" \
    --data-binary "@$2" "$endpoint/$bucket/$1" -o /dev/null
}
tmp=$(mktemp -d)
echo "Hello from S3, through mount-s3." >"$tmp/hello"
printf 'epoch,loss\n1,0.91\n2,0.57\n3,0.42\n' >"$tmp/csv"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$tmp/shard"
put README.txt "$tmp/hello"
put metrics/train.csv "$tmp/csv"
put datasets/shard-00000.bin "$tmp/shard"
put datasets/shard-00001.bin "$tmp/shard"
rm -rf "$tmp"

AWS_ACCESS_KEY_ID=$access_key AWS_SECRET_ACCESS_KEY=$secret_key AWS_REGION=us-east-1 \
  "$repo/target/release/mount-s3" --endpoint-url "$endpoint" --force-path-style "$bucket" "$mnt"

echo
echo "Bucket '$bucket' is mounted at $mnt:"
ls -lR "$mnt"
echo
cat "$mnt/README.txt"
echo
echo "Try: ls -l $mnt/datasets; cat $mnt/metrics/train.csv"
echo "Stop with: $0 stop"
