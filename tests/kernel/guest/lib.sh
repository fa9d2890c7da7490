# Shell functions the guest runs (busybox ash) to report what the kernel sees.
#
# Sourced by the helper initramfs' init and by /sbin/init of an FFS root
# image.  Every applet is called as "$BB applet": the standalone shell would
# need /proc, which a read-only root image may have no directory for.
#
# Results go to file descriptor 3 (the second serial port, /dev/ttyS1), so
# kernel messages on the console can never split a line.  Each section reads
#   @@RUMPFS-BEGIN <label>@@
#   ... lines ...
#   @@RUMPFS-END <label> <status>@@
# and the host refuses a section without its end marker.
#
# A listing section is hex (xxd -p) of a stream of records, one per entry:
#   E <st_mode-hex> <uid> <gid> <size> <nlink> <rdev-major-hex>
#     <rdev-minor-hex> <mtime> <sha256|-> NUL <path> NUL <symlink target> NUL
# The path is relative to the listed root ("" for the root itself); hex
# carries every byte of names and targets through the serial port.  One stat
# and one xxd serve a whole batch of entries: under TCG each process costs.

: "${BB:=/bin/busybox}"

begin() { echo "@@RUMPFS-BEGIN $1@@" >&3; }
end() { echo "@@RUMPFS-END $1 $2@@" >&3; }

# entry PATH...: the records of the paths (as find prints them: ./x).
entry() {
    "$BB" stat -c '%f %u %g %s %h %t %T %Y' -- "$@" | {
        for p in "$@"; do
            read -r st || st="0 stat-failed"
            rel=${p#.}
            rel=${rel#/}
            # Octal 0170000 is the file type field of st_mode.
            kind=$(( 0x${st%% *} & 61440 ))
            target=
            sum=-
            if [ "$kind" -eq 40960 ]; then          # S_IFLNK
                # The x keeps a target's own trailing newlines; then drop readlink's.
                target=$("$BB" readlink -- "$p"; echo x)
                target=${target%x}
                target=${target%?}
            elif [ "$kind" -eq 32768 ]; then        # S_IFREG
                sum=$("$BB" sha256sum < "$p") || sum=read-error
                sum=${sum%% *}
            fi
            printf 'E %s %s\0%s\0%s\0' "$st" "$sum" "$rel" "$target"
        done
    } | "$BB" xxd -p >&3
}

# list ROOT LABEL [PRUNE]: a section listing every entry under ROOT without
# crossing into other filesystems; PRUNE (relative to ROOT) is left out.
list() {
    begin "$2"
    if cd "$1"; then
        if [ -n "$3" ]; then
            "$BB" find . -xdev -path "./$3" -prune -o -exec "$BB" sh "$LIB" entry {} +
        else
            "$BB" find . -xdev -exec "$BB" sh "$LIB" entry {} +
        fi
        end "$2" "rc=$?"
        cd /
    else
        end "$2" "rc=cd-failed"
    fi
}

# kernel_log: the kernel's ring buffer with raw <level> prefixes.
kernel_log() {
    begin dmesg
    "$BB" dmesg -r >&3
    end dmesg "rc=$?"
}

# finish: the last section, then leave the VM (qemu runs with -no-reboot).
finish() {
    kernel_log
    begin done
    end done "rc=0"
    "$BB" sync
    "$BB" reboot -f
}

# Run as a script ("sh lib.sh entry PATH...") from find -exec.
if [ "${1-}" = entry ]; then
    shift
    entry "$@"
fi
