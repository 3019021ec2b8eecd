# Functions to run a local S3 server (SeaweedFS) for the demo and the benchmarks.
# Source this file; it defines:
#   local_s3_start DIR     start `weed` with its data and log in DIR, on free loopback ports,
#                          with signature checking on; sets S3_ENDPOINT and S3_PID
#   local_s3_stop          stop it by PID
#   s3curl ARGS...         curl with SigV4 and the local credentials
#   s3_make_bucket NAME    create a bucket (waits until the server answers)
#   s3_put BUCKET KEY FILE upload FILE as KEY
# The server is S3_WEED (default: the `weed` that scripts/setup-test-env.sh installs in .venv).
# The credentials are in S3_ACCESS_KEY / S3_SECRET_KEY (exported as AWS_* for mount-s3).

S3_REPO=${S3_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
S3_WEED=${S3_WEED:-$S3_REPO/.venv/bin/weed}
export S3_ACCESS_KEY=${S3_ACCESS_KEY:-local-access-key}
export S3_SECRET_KEY=${S3_SECRET_KEY:-local-secret-key-not-for-production}
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY AWS_REGION=us-east-1

# A port that is free, and whose +10000 (SeaweedFS's gRPC port) is free too.
local_s3_free_port() {
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

local_s3_start() {
  local dir=$1 name port pair
  mkdir -p "$dir/data"
  cat >"$dir/s3.json" <<JSON
{"identities":[{"name":"local","credentials":[{"accessKey":"$S3_ACCESS_KEY","secretKey":"$S3_SECRET_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  local args=(-v=0 server "-dir=$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1
    -master.telemetry=false -volume.max=0 -master.volumeSizeLimitMB=1024 -filer -s3
    "-s3.config=$dir/s3.json" -s3.port.iceberg=0 -s3.port.lance=0)
  local s3_port
  for name in master volume filer s3; do
    port=$(local_s3_free_port)
    args+=("-$name.port=$port" "-$name.port.grpc=$((port + 10000))")
    [ "$name" = s3 ] && s3_port=$port
  done
  # LOCAL_S3_TLS=1: S3 on https too (for benchmarks over TLS), with the test certificate the
  # unit and integration tests use (src/s3/sdk/testdata: a CA, and a certificate it signed
  # for 127.0.0.1). S3_ENDPOINT_TLS and S3_CA_BUNDLE say where and what to trust.
  if [ "${LOCAL_S3_TLS:-0}" = 1 ]; then
    local certs=$S3_REPO/src/s3/sdk/testdata
    port=$(local_s3_free_port)
    args+=("-s3.cert.file=$certs/server.pem" "-s3.key.file=$certs/server.key"
      "-s3.port.https=$port")
    S3_ENDPOINT_TLS=https://127.0.0.1:$port
    S3_CA_BUNDLE=$certs/ca.pem
    export S3_ENDPOINT_TLS S3_CA_BUNDLE
  fi
  setsid "$S3_WEED" "${args[@]}" >"$dir/weed.log" 2>&1 &
  S3_PID=$!
  echo "$S3_PID" >"$dir/weed.pid"
  S3_ENDPOINT=http://127.0.0.1:$s3_port
  export S3_ENDPOINT S3_PID
}

local_s3_stop() {
  [ -n "${S3_PID:-}" ] || return 0
  if kill "$S3_PID" 2>/dev/null; then
    for _ in $(seq 1 25); do kill -0 "$S3_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$S3_PID" 2>/dev/null || true
  fi
  S3_PID=
}

# local_s3_mount BIN MNT LOG ARGS...: runs BIN in the foreground mode (in this shell's
# background) against the local server with ARGS (the bucket among them) at MNT, its output
# in LOG; sets MOUNT_PID. Returns 1, with the log on stderr, if MNT is not mounted in 10 s.
local_s3_mount() {
  local bin=$1 mnt=$2 log=$3
  shift 3
  "$bin" -f --endpoint-url "$S3_ENDPOINT" --force-path-style "$@" "$mnt" >"$log" 2>&1 &
  MOUNT_PID=$!
  for _ in $(seq 1 100); do grep -qs " $mnt fuse" /proc/mounts && return 0; sleep 0.1; done
  echo "mount failed:" >&2
  cat "$log" >&2
  return 1
}

# local_s3_unmount MNT: unmounts MNT (retrying while it is busy) and waits for MOUNT_PID.
local_s3_unmount() {
  for _ in $(seq 1 50); do fusermount3 -u "$1" 2>/dev/null && break; sleep 0.2; done
  wait "$MOUNT_PID" 2>/dev/null || true
}

# local_s3_teardown MNT DIR...: for an EXIT trap. Unmounts MNT if it is still mounted (lazily
# if busy), stops the local server, removes the DIRs.
local_s3_teardown() {
  local mnt=$1
  shift
  grep -qs " $mnt fuse" /proc/mounts && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
  local_s3_stop
  rm -rf "$@"
}

s3curl() {
  curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$@"
}

s3_make_bucket() {
  local i
  for i in $(seq 1 120); do
    # 200 on creation; 409 if it already exists (a reused data directory).
    code=$(curl -sS -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
      --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -X PUT "$S3_ENDPOINT/$1" 2>/dev/null || true)
    case $code in 200|409) return 0 ;; esac
    sleep 0.5
  done
  echo "local S3 server did not answer at $S3_ENDPOINT" >&2
  return 1
}

s3_put() {
  # SeaweedFS checks the payload hash, which curl does not send by itself.
  # --upload-file streams the file (--data-binary would hold it in memory).
  s3curl -H "x-amz-content-sha256: $(sha256sum "$3" | cut -d' ' -f1)" \
    --upload-file "$3" "$S3_ENDPOINT/$1/$2" -o /dev/null
}
