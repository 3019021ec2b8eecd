#!/usr/bin/env bash
# Makes the container base image from Debian's packages, for a build host that reaches a
# Debian mirror but no image registry: debootstrap (minbase, bookworm) with fuse3 and
# ca-certificates, imported into the local engine (podman, else docker) under NAME.
#
#   packaging/container/base-image.sh [NAME]        default NAME: localhost/debian:bookworm-slim
#
# The mirror is the first one apt is configured with here (MIRROR overrides it). An image
# that already exists under NAME is kept (FORCE=1 makes it again). Needs root.
set -euo pipefail

name=${1:-localhost/debian:bookworm-slim}
engine=${ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$engine" ] || { echo "base-image.sh: neither podman nor docker is installed" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is not installed" >&2; exit 1; }

if [ -z "${FORCE:-}" ] && "$engine" image exists "$name" 2>/dev/null; then
    echo "base-image.sh: $name exists"
    exit 0
fi

mirror=${MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
        /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || { echo "base-image.sh: no Debian mirror found in apt's sources; set MIRROR" >&2; exit 1; }

root=$(mktemp -d "${TMPDIR:-/tmp}/mount-s3-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
echo "base-image.sh: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=fuse3,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$engine" import - "$name" >/dev/null
echo "base-image.sh: $name imported"
