"""Writing cpio newc / crc archives from the tree.

Choices, each because some reader depends on it:

* The root is the first member, named ``.``: it carries the root directory's
  mode and owner (the Linux kernel applies them to its rootfs); every
  directory comes before its contents, names in byte order.
* Hard links: every name of a multiply-linked file carries the same
  ``c_ino`` and ``c_nlink``; the data is stored with the FIRST name and the
  later names have size 0.  The Linux kernel links later names to the first
  and writes any data it meets; GNU cpio and bsdtar link the size-0 names to
  the name that has the data; Unikraft's extractor keeps only the first
  occurrence of an inode, so the data must be there.  (gen_init_cpio puts the
  data on the last name, which loses it in Unikraft.)
* Inode numbers count from 1 in walk order; device fields are 0: nothing of
  the build host leaks.
* Files larger than 4 GiB - 1 byte cannot be stored (32-bit size field) and
  are refused; times outside 1970..2106 are clamped with a warning.
"""

from __future__ import annotations

import os
import sys
import zlib

from ...errors import RumpfsError
from ...output import open_source
from ...tree import DIR, LNK, REG, display
from .layout import BLOCK_SIZE, FIELD_MAX, MAGICS, TRAILER_NAME, build_header, pad

#: Bytes summed per adler32 call: 256 * 255 stays below its modulus 65521,
#: so the low half of adler32 minus one is the exact byte sum of the piece.
_SUM_PIECE = 256
_READ_CHUNK = 1 << 20
_ZEROS = bytes(BLOCK_SIZE)


def byte_sum(buf) -> int:
    """Sum of all bytes of ``buf`` (the 070702 checksum of a chunk)."""
    mv = memoryview(buf)
    total = 0
    for i in range(0, len(mv), _SUM_PIECE):
        total += (zlib.adler32(mv[i:i + _SUM_PIECE]) & 0xFFFF) - 1
    return total


def data_checksum(data) -> int:
    if not hasattr(data, "path"):
        return byte_sum(data.data) & FIELD_MAX
    fd = open_source(data)
    total = 0
    try:
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            total += byte_sum(chunk)
    finally:
        os.close(fd)
    return total & FIELD_MAX


def write_archive(tree, out, variant: str = "newc") -> int:
    """Write the archive to ``out`` (``write``/``copy``/``tell``); returns its size."""
    magic = MAGICS[variant]
    crc = variant == "crc"
    entries = list(tree.walk())
    names_of: dict[int, int] = {}
    subdirs: dict[int, int] = {}
    for e in entries:
        node = e.node
        if node.is_dir:
            subdirs[id(node)] = sum(1 for c in node.children.values() if c.is_dir)
        else:
            names_of[id(node)] = names_of.get(id(node), 0) + 1
            if node.data is not None and node.data.size > FIELD_MAX and e.link_of is None:
                # Refuse before writing gigabytes.
                raise RumpfsError(
                    f"{display(e.path)}: file is {node.data.size} bytes; a cpio newc archive stores "
                    f"at most {FIELD_MAX} bytes per file (32-bit size field): use an FFS image")

    ino_of: dict[int, int] = {}
    clamped = []
    for e in entries:
        node = e.node
        key = id(node)
        ino = ino_of.get(key)
        if ino is None:
            ino = ino_of[key] = len(ino_of) + 1
        kind = node.mode & 0o170000
        if kind == DIR:
            nlink = 2 + subdirs[key]
        else:
            nlink = names_of[key]
        size = 0
        data = None
        if kind == REG:
            if e.link_of is None and node.data is not None and node.data.size:
                data = node.data
                size = data.size
        elif kind == LNK:
            size = len(node.target)
        mtime = node.mtime_ns // 1_000_000_000
        if not 0 <= mtime <= FIELD_MAX:
            clamped.append(e.path)
            mtime = min(max(mtime, 0), FIELD_MAX)
        name = e.path or b"."
        check = data_checksum(data) if (crc and data is not None) else 0
        rdev = node.rdev
        header = build_header(magic, (
            ino, node.mode, node.uid, node.gid, nlink, mtime, size,
            0, 0, os.major(rdev), os.minor(rdev), len(name) + 1, check))
        head_len = len(header) + len(name) + 1
        out.write(header + name + b"\0" + _ZEROS[:pad(head_len)])
        if data is not None:
            out.copy(data)
        elif kind == LNK:
            out.write(node.target)
        if size:
            out.write(_ZEROS[:pad(size)])

    trailer = build_header(magic, (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(TRAILER_NAME) + 1, 0))
    tail = trailer + TRAILER_NAME + b"\0"
    out.write(tail + _ZEROS[:pad(len(tail))])
    end = out.tell()
    out.write(_ZEROS[:pad(end, BLOCK_SIZE)])
    if clamped:
        print(f"rumpfs: warning: {len(clamped)} time(s) outside the 32-bit cpio range were clamped "
              f"(first: {display(clamped[0])})", file=sys.stderr)
    return out.tell()
