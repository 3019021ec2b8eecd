#!/usr/bin/env bash
# Container entrypoint: mounts a bucket in the foreground from environment variables and
# unmounts it on SIGTERM or SIGINT (docker stop, pod deletion), then exits with mount-s3's
# status (0 after a clean unmount).
#
#   MOUNT_S3_BUCKET       bucket to mount (required)
#   MOUNT_S3_MOUNT_POINT  where to mount it, created if missing (required); in a Kubernetes
#                         sidecar, a directory inside the shared volume, not the volume's own
#                         mount point (mount-s3 refuses a mount point that is already one)
#   MOUNT_S3_ARGS         more mount-s3 flags, split on whitespace (no quoting)
#   MOUNT_S3_BIN          the mount-s3 binary (default: mount-s3 on PATH)
#   AWS_*                 credentials and region, read by mount-s3 itself
set -euo pipefail

log() { echo "mount-s3-entrypoint: $*" >&2; }

bin="${MOUNT_S3_BIN:-mount-s3}"
bucket="${MOUNT_S3_BUCKET:?MOUNT_S3_BUCKET must name the bucket to mount}"
mount_point="${MOUNT_S3_MOUNT_POINT:?MOUNT_S3_MOUNT_POINT must name the directory to mount at}"

# Word splitting without glob expansion: "--prefix a/ --read-only" becomes three flags.
set -f
# shellcheck disable=SC2206
extra_args=(${MOUNT_S3_ARGS:-})
set +f

mkdir -p "$mount_point"

pid=""
stop() {
    log "$1 received, unmounting $mount_point"
    # fusermount3 -u fails while a program still uses the mount; SIGTERM to mount-s3 then
    # detaches it lazily (as root), and mount-s3 exits once the kernel lets go.
    if ! fusermount3 -u "$mount_point" 2>/dev/null; then
        log "fusermount3 -u failed; asking mount-s3 to detach the mount"
        kill -TERM "$pid" 2>/dev/null || true
    fi
}
trap 'stop SIGTERM' TERM
trap 'stop SIGINT' INT

"$bin" --foreground "${extra_args[@]}" -- "$bucket" "$mount_point" &
pid=$!
log "mount-s3 started (pid $pid) for $bucket at $mount_point"

# `wait` returns early when a trapped signal arrives: wait again until mount-s3 has exited,
# then once more for its status (bash keeps the status of a child it has reaped).
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" || true
done
status=0
wait "$pid" || status=$?
log "mount-s3 exited with status $status"
exit "$status"
