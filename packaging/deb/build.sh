#!/usr/bin/env bash
# Builds the Debian package of mount-s3 from a release build, with cargo-deb (installed into
# ~/.cargo/bin if missing). Prints the path of the .deb on its last line; the debug symbols
# go into mount-s3-dbgsym_<version>-1_<arch>.ddeb beside it.
#
#   packaging/deb/build.sh                 # target/debian/mount-s3_<version>-1_<arch>.deb
#   packaging/deb/build.sh --no-build      # package the release binary already built
#
# Extra arguments go to `cargo deb` (see `cargo deb --help`). What goes into the package,
# and where, is [package.metadata.deb] in Cargo.toml.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build.sh: installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi

out_dir="$repo_root/target/debian"
mkdir -p "$out_dir"
# Remove older packages of this version, so that the .deb found below is this run's.
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
rm -f "$out_dir"/mount-s3_"$version"-*.deb "$out_dir"/mount-s3-dbgsym_"$version"-*.ddeb

cargo deb --locked --output "$out_dir" "$@" >&2

deb="$(ls -t "$out_dir"/mount-s3_"$version"-*.deb | head -n1)"
dpkg-deb --info "$deb" >&2
echo "$deb"
