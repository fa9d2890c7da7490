#!/usr/bin/env bash
# One-time setup for the kernel tests (tests/test_kernel*.py): download the
# pinned Debian kernel package with `apt-get download` and unpack it with
# `dpkg-deb -x` into a cache directory.  Nothing is installed on the host.
#
# Cache: $RUMPFS_KERNEL_CACHE, else ~/.cache/rumpfs-test-kernel.
# The version is pinned in tests/kernel/KERNEL_VERSION (only there).
# Idempotent: an unpacked kernel with a complete stamp is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
pin=tests/kernel/KERNEL_VERSION
KABI=$(sed -n 's/^KABI=//p' "$pin")
DEB=$(sed -n 's/^DEB=//p' "$pin")
pkg="linux-image-${KABI}-amd64-unsigned"
cache="${RUMPFS_KERNEL_CACHE:-$HOME/.cache/rumpfs-test-kernel}"
dest="$cache/$pkg"_"$DEB"
if [ -e "$dest/.complete" ]; then
    echo "test kernel: $dest (cached)"
    exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/.download.XXXXXX")
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download -q "$pkg=$DEB"); }
# Stale package lists are the usual reason for a failure: refresh once (root only).
download || { [ "$(id -u)" -eq 0 ] && apt-get update -qq && download; } || {
    echo "test kernel: 'apt-get download $pkg=$DEB' failed." >&2
    echo "  Run 'apt-get update', or pin a version 'apt-cache policy linux-image-amd64' offers" >&2
    echo "  in $pin." >&2
    exit 1
}
dpkg-deb -x "$work"/*.deb "$work/root"
test -f "$work/root/boot/vmlinuz-${KABI}-amd64"
rm -rf "$dest"
mv "$work/root" "$dest"
echo "$pkg $DEB" > "$dest/.complete"
echo "test kernel: $dest"
