#!/usr/bin/env bash
# One-time setup for the kernel tests (tests/test_kernel*.py): download a
# Debian kernel package with `apt-get download` and unpack it with
# `dpkg-deb -x` into a cache directory.  Nothing is installed on the host.
#
# The pinned version (tests/kernel/KERNEL_VERSION, the only place it is
# named) is preferred.  Debian's security archive drops a kernel package when
# it replaces it; then the kernel that linux-image-amd64 depends on now is
# taken instead, with a one-line note, so the tests keep running.  Either way
# "$cache/selected" records which kernel was unpacked; the harness boots that
# one and each boot's logs name it.
#
# Cache: $RUMPFS_KERNEL_CACHE, else ~/.cache/rumpfs-test-kernel.
# Pin file: $RUMPFS_KERNEL_PIN, else tests/kernel/KERNEL_VERSION.
# Idempotent: an unpacked kernel with a complete stamp is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
pin="${RUMPFS_KERNEL_PIN:-tests/kernel/KERNEL_VERSION}"
cache="${RUMPFS_KERNEL_CACHE:-$HOME/.cache/rumpfs-test-kernel}"
KABI=$(sed -n 's/^KABI=//p' "$pin")
DEB=$(sed -n 's/^DEB=//p' "$pin")

package_of() { echo "linux-image-$1-amd64-unsigned"; }

select_kernel() {  # KABI DEB: the kernel the harness boots
    printf 'KABI=%s\nDEB=%s\n' "$1" "$2" > "$cache/selected.tmp"
    mv "$cache/selected.tmp" "$cache/selected"
}

mkdir -p "$cache"
if [ -e "$cache/$(package_of "$KABI")_$DEB/.complete" ]; then
    select_kernel "$KABI" "$DEB"
    echo "test kernel: $(package_of "$KABI") $DEB (pinned, cached)"
    exit 0
fi
work=$(mktemp -d "$cache/.download.XXXXXX")
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download -q "$(package_of "$1")=$2" >/dev/null 2>"$work/apt.err"); }

# The kernel linux-image-amd64 depends on in the archive today: "KABI DEB".
offered() {
    local image kabi version
    image=$(apt-cache depends linux-image-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
    kabi=${image#linux-image-}
    kabi=${kabi%-amd64}
    [ -n "$kabi" ] || return 1
    version=$(apt-cache policy "$(package_of "$kabi")" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    [ -n "$version" ] && [ "$version" != "(none)" ] || return 1
    echo "$kabi $version"
}

# Stale package lists are the usual reason for a failure: refresh once (root only).
if download "$KABI" "$DEB" || { [ "$(id -u)" -eq 0 ] && apt-get update -qq && download "$KABI" "$DEB"; }; then
    note="pinned"
else
    read -r new_kabi new_deb < <(offered) || true
    if [ -n "${new_kabi:-}" ] && [ -e "$cache/$(package_of "$new_kabi")_$new_deb/.complete" ]; then
        select_kernel "$new_kabi" "$new_deb"
        echo "test kernel: $(package_of "$KABI") $DEB is no longer offered; using" \
             "$(package_of "$new_kabi") $new_deb (cached; update $pin to pin it)" >&2
        exit 0
    fi
    if [ -z "${new_kabi:-}" ] || ! download "$new_kabi" "$new_deb"; then
        echo "test kernel: 'apt-get download $(package_of "$KABI")=$DEB' failed, and the archive" \
             "offers no other linux-image-amd64 kernel: $(tail -n 1 "$work/apt.err")" >&2
        exit 1
    fi
    echo "test kernel: $(package_of "$KABI") $DEB is no longer offered; using" \
         "$(package_of "$new_kabi") $new_deb instead (update $pin to pin it)" >&2
    KABI=$new_kabi DEB=$new_deb note="fallback"
fi
dest="$cache/$(package_of "$KABI")_$DEB"
dpkg-deb -x "$work"/*.deb "$work/root"
test -f "$work/root/boot/vmlinuz-${KABI}-amd64"
rm -rf "$dest"
mv "$work/root" "$dest"
echo "$(package_of "$KABI") $DEB" > "$dest/.complete"
select_kernel "$KABI" "$DEB"
echo "test kernel: $dest ($note)"
