"""One sparse member in GNU tar's old format (``tar --format=oldgnu -S``),
the form Google Compute Engine's image import documents for ``disk.raw``.

Layout (GNU tar's tar.h, ``struct oldgnu_header``): the ustar fields up to
``prefix``'s place, where the old GNU format keeps times, four sparse map
entries, an "is extended" flag and the file's real size.  The member's
``size`` counts only the data blocks stored; the map says where they go.
More than four data runs continue in extension blocks of 21 entries each.
Numbers are octal, or base-256 with the high bit set when they do not fit
(GNU tar's extension for sizes of 8 GiB and more).
"""

from __future__ import annotations

from construct import Bytes, Const, Padding, Struct

from ..errors import RumpfsError
from ..tree import data_runs as file_data_runs

BLOCK = 512
#: GNU tar's magic and version together: "ustar " then " \0".
OLDGNU_MAGIC = b"ustar  \0"
SPARSE_TYPE = b"S"
#: Sparse map entries in the header and in each extension block.
HEADER_SPARSES = 4
EXTENSION_SPARSES = 21
#: Width of the numeric fields (octal digits and their terminator).
NUMBER12 = 12
NUMBER8 = 8
#: Zero blocks of this size in the disk are left out as holes.
HOLE_GRANULE = 4096

SparseEntry = Struct("offset" / Bytes(NUMBER12), "numbytes" / Bytes(NUMBER12))

OldGnuHeader = Struct(
    "name" / Bytes(100),
    "mode" / Bytes(NUMBER8),
    "uid" / Bytes(NUMBER8),
    "gid" / Bytes(NUMBER8),
    "size" / Bytes(NUMBER12),
    "mtime" / Bytes(NUMBER12),
    "chksum" / Bytes(NUMBER8),
    "typeflag" / Bytes(1),
    "linkname" / Bytes(100),
    "magic" / Const(OLDGNU_MAGIC),
    "uname" / Bytes(32),
    "gname" / Bytes(32),
    "devmajor" / Bytes(NUMBER8),
    "devminor" / Bytes(NUMBER8),
    "atime" / Bytes(NUMBER12),
    "ctime" / Bytes(NUMBER12),
    "offset" / Bytes(NUMBER12),
    "longnames" / Bytes(4),
    "unused" / Bytes(1),
    "sparse" / SparseEntry[HEADER_SPARSES],
    "isextended" / Bytes(1),
    "realsize" / Bytes(NUMBER12),
    Padding(17),
)

SparseExtension = Struct(
    "sparse" / SparseEntry[EXTENSION_SPARSES],
    "isextended" / Bytes(1),
    Padding(7),
)

CHKSUM_OFFSET = 148


def number(value: int, width: int) -> bytes:
    """A numeric field: octal with a NUL, or base-256 when it does not fit."""
    digits = width - 1
    if value < 8 ** digits:
        return b"%0*o\0" % (digits, value)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _entries(runs, count: int) -> list[dict]:
    out = [{"offset": number(o, NUMBER12), "numbytes": number(n, NUMBER12)} for o, n in runs]
    return out + [{"offset": bytes(NUMBER12), "numbytes": bytes(NUMBER12)}] * (count - len(runs))


def data_runs(f, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the parts of the file ``f`` that are not zeros:
    its holes (SEEK_HOLE) and its zero granules are left out.  The last run
    always reaches the end (a final empty run marks a file that ends in a
    hole: tar's map gives the real size that way)."""
    runs: list[tuple[int, int]] = []
    zero = bytes(HOLE_GRANULE)
    f.flush()  # what is still buffered is no data to SEEK_DATA
    for start, length in file_data_runs(f.fileno(), 0, size):
        f.seek(start)
        pos, end = start, start + length
        while pos < end:
            block = f.read(min(HOLE_GRANULE, end - pos))
            if not block:
                raise RumpfsError(f"the disk ended at {pos} of {size} bytes")
            if block != zero[:len(block)]:
                if runs and runs[-1][0] + runs[-1][1] == pos:
                    runs[-1] = (runs[-1][0], runs[-1][1] + len(block))
                else:
                    runs.append((pos, len(block)))
            pos += len(block)
    if not runs or runs[-1][0] + runs[-1][1] != size:
        runs.append((size, 0))
    return runs


def write_sparse_member(out, name: str, f, size: int, mtime: int, mode: int = 0o644) -> None:
    """Write ``size`` bytes of ``f`` as the sparse member ``name``, then the
    archive's end (two zero blocks), to the binary stream ``out``."""
    runs = data_runs(f, size)
    stored = sum(n for _, n in runs)
    head, rest = runs[:HEADER_SPARSES], runs[HEADER_SPARSES:]
    header = bytearray(OldGnuHeader.build({
        "name": name.encode().ljust(100, b"\0"),
        "mode": number(mode, NUMBER8), "uid": number(0, NUMBER8), "gid": number(0, NUMBER8),
        "size": number(stored, NUMBER12), "mtime": number(mtime, NUMBER12),
        "chksum": b" " * NUMBER8, "typeflag": SPARSE_TYPE, "linkname": bytes(100),
        "uname": bytes(32), "gname": bytes(32),
        "devmajor": bytes(NUMBER8), "devminor": bytes(NUMBER8),
        "atime": bytes(NUMBER12), "ctime": bytes(NUMBER12), "offset": bytes(NUMBER12),
        "longnames": bytes(4), "unused": bytes(1),
        "sparse": _entries(head, HEADER_SPARSES),
        "isextended": b"\1" if rest else b"\0",
        "realsize": number(size, NUMBER12),
    }))
    # The checksum: the header's bytes summed with its own field as blanks.
    header[CHKSUM_OFFSET:CHKSUM_OFFSET + NUMBER8] = b"%06o\0 " % sum(header)
    out.write(header)
    while rest:
        chunk, rest = rest[:EXTENSION_SPARSES], rest[EXTENSION_SPARSES:]
        out.write(SparseExtension.build({"sparse": _entries(chunk, EXTENSION_SPARSES),
                                         "isextended": b"\1" if rest else b"\0"}))
    for offset, length in runs:
        f.seek(offset)
        left = length
        while left:
            piece = f.read(min(left, 1 << 20))
            if not piece:
                raise RumpfsError(f"{name}: the disk ended at {offset + length - left} "
                                  f"of {size} bytes")
            out.write(piece)
            left -= len(piece)
    out.write(bytes(-stored % BLOCK))
    out.write(bytes(2 * BLOCK))
