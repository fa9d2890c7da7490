"""Extracting an image's tree into a host directory."""

from __future__ import annotations

import os
import stat
import sys

from . import formats


def extract(reader: formats.ImageReader, directory: str) -> None:
    """Recreate the image's tree under ``directory`` (owners only as root)."""
    os.makedirs(directory, exist_ok=True)
    base = os.fsencode(directory)
    as_root = os.geteuid() == 0
    by_ino: dict[int, bytes] = {}
    dirs = []
    skipped = 0
    for e in reader.entries():
        dest = os.path.join(base, e.path) if e.path else base
        kind = e.kind
        if kind == stat.S_IFDIR:
            os.makedirs(dest, exist_ok=True)
            dirs.append((dest, e))
            continue
        if os.path.lexists(dest):
            os.unlink(dest)
        first = None
        if e.nlink > 1:
            first = os.path.join(base, e.link_of) if e.link_of else by_ino.get(e.ino)
        if first is not None and os.path.lexists(first):
            os.link(first, dest)
            continue
        if kind == stat.S_IFREG:
            with open(dest, "wb") as out:
                for chunk in reader.read(e):
                    out.write(chunk)
        elif kind == stat.S_IFLNK:
            os.symlink(e.target, dest)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            if not as_root:
                skipped += 1
                continue
            os.mknod(dest, e.mode, e.rdev)
        elif kind == stat.S_IFIFO:
            os.mkfifo(dest, stat.S_IMODE(e.mode))
        else:
            skipped += 1
            continue
        if e.nlink > 1:
            by_ino.setdefault(e.ino, dest)
        _set_meta(dest, e, as_root)
    for dest, e in reversed(dirs):
        _set_meta(dest, e, as_root)
    if skipped:
        print(f"rumpfs: warning: {skipped} device or socket entries not extracted "
              f"(devices need root; sockets cannot be created)", file=sys.stderr)


def _set_meta(dest: bytes, e: formats.Entry, as_root: bool) -> None:
    if as_root:
        os.lchown(dest, e.uid, e.gid)
    if e.kind != stat.S_IFLNK:
        os.chmod(dest, stat.S_IMODE(e.mode))
    os.utime(dest, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


__all__ = ["extract"]
