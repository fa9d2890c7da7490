"""The floors of any Python packer, in one process:

    python -m bench.walkfloor DIR             scandir + lstat of every entry
    python -m bench.walkfloor DIR --copy OUT  the same, and every regular file
                                              read and written, in turn, into OUT

(prints the entry count).  A packer in Python does at least this much.
"""

from __future__ import annotations

import os
import stat
import sys

#: Bytes read at a time from a large file.
CHUNK = 1 << 20


def walk(top: bytes, out: int | None = None) -> int:
    count = 0
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = os.lstat(entry.path)
                count += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif out is not None and stat.S_ISREG(st.st_mode):
                    _copy(entry.path, st.st_size, out)
    return count


def _copy(path: bytes, size: int, out: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        while size > 0:
            data = os.read(fd, min(size, CHUNK))
            if not data:
                break
            os.write(out, data)
            size -= len(data)
    finally:
        os.close(fd)


def main(argv: list) -> None:
    top = os.fsencode(argv[0])
    if argv[1:2] == ["--copy"]:
        out = os.open(argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            print(walk(top, out))
        finally:
            os.close(out)
    else:
        print(walk(top))


if __name__ == "__main__":
    main(sys.argv[1:])
