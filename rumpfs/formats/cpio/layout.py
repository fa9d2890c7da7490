"""cpio "new ASCII" (newc) and "new CRC" archive layout.

As described in cpio(5) (libarchive) and the Linux kernel's
Documentation/driver-api/early-userspace/buffer-format.rst: every member is a
110-byte ASCII header -- a 6-byte magic and thirteen fields of 8 hexadecimal
digits -- followed by the NUL-terminated name, padded so that the data starts
on a 4-byte boundary, then the data, padded to 4 bytes again.  The archive
ends with a member named ``TRAILER!!!``.  ``070702`` archives carry in
``c_check`` the sum of all data bytes of a regular file, modulo 2**32.

The header is declared once, below, with construct.  The writer and reader
use a ``struct`` format and slice offsets derived from that declaration
(:func:`header_words`, :data:`FIELD_SLICES`) because they handle one header
per file and construct's per-field machinery would dominate the cost.

Importing this module does not import construct (35-55 ms, more than
writing a small archive): ``HexField``, ``Header`` and ``Trailer`` are built
when first used, and :data:`FIELDS`, :data:`MAGIC_SIZE` and
:data:`HEADER_SIZE` come from ``_compiled.py``, generated from this module by
``python -m rumpfs.formats.precompile`` (:mod:`rumpfs.formats.precompile`),
as long as it was generated from this very source; otherwise they are
derived from the declaration.
"""

from __future__ import annotations

import struct

from ..precompile import declared_on_first_use, load

NEWC_MAGIC = b"070701"
CRC_MAGIC = b"070702"
MAGICS = {"newc": NEWC_MAGIC, "crc": CRC_MAGIC}

TRAILER_NAME = b"TRAILER!!!"
#: Header plus name, and data, are each padded to this boundary.
ALIGNMENT = 4
#: GNU cpio and the kernel's gen_init_cpio end archives on a 512-byte block.
BLOCK_SIZE = 512
#: Largest value of an 8-hex-digit field: files, times and ids are limited by it.
FIELD_MAX = 0xFFFFFFFF

HEX_DIGITS = 8


def _declare() -> dict:
    """The construct declarations, by name (imports construct)."""
    from construct import Bytes, Const, ExprAdapter, OneOf, Struct

    #: An 8-digit upper-case hexadecimal number (readers accept either case).
    HexField = ExprAdapter(
        Bytes(HEX_DIGITS),
        decoder=lambda obj, ctx: int(obj, 16),
        encoder=lambda obj, ctx: b"%08X" % obj,
    )

    Header = Struct(
        "c_magic" / OneOf(Bytes(6), [NEWC_MAGIC, CRC_MAGIC]),
        "c_ino" / HexField,
        "c_mode" / HexField,
        "c_uid" / HexField,
        "c_gid" / HexField,
        "c_nlink" / HexField,
        "c_mtime" / HexField,
        "c_filesize" / HexField,
        "c_devmajor" / HexField,
        "c_devminor" / HexField,
        "c_rdevmajor" / HexField,
        "c_rdevminor" / HexField,
        "c_namesize" / HexField,
        "c_check" / HexField,
    )

    Trailer = Struct("name" / Const(TRAILER_NAME + b"\0"))
    return {"HexField": HexField, "Header": Header, "Trailer": Trailer}


__getattr__ = declared_on_first_use(globals(), _declare, ("HexField", "Header", "Trailer"))


def precompile() -> dict:
    """What ``python -m rumpfs.formats.precompile`` writes into
    ``_compiled.py``, derived from ``Header`` (imports construct): the
    numeric fields in on-disk order, the width they all share, the sizes of
    the magic and of the whole header."""
    header = _declare()["Header"]
    numeric = header.subcons[1:]
    widths = {sc.subcon.sizeof() for sc in numeric}
    if len(widths) != 1:
        raise AssertionError(f"cpio header fields of several widths: {sorted(widths)}")
    return {
        "FIELDS": tuple(sc.name for sc in numeric),
        "FIELD_WIDTH": widths.pop(),
        "MAGIC_SIZE": header.subcons[0].sizeof(),
        "HEADER_SIZE": header.sizeof(),
    }


#: The generated module, when it was generated from this very source; else
#: None (construct derives the same).
_GENERATED = load(__name__, globals().get("__file__"))
_facts = precompile() if _GENERATED is None else vars(_GENERATED)
#: The numeric fields in on-disk order, as declared above.
FIELDS = _facts["FIELDS"]
#: Hex digits of each numeric field; bytes of the magic; of a whole header.
FIELD_WIDTH = _facts["FIELD_WIDTH"]
MAGIC_SIZE = _facts["MAGIC_SIZE"]
HEADER_SIZE = _facts["HEADER_SIZE"]
del _facts
assert HEADER_SIZE == 110
assert FIELD_WIDTH == HEX_DIGITS  # one 32-bit word per field, below

#: The numeric fields as big-endian 32-bit words: their hex digits, upper
#: case, are exactly the header's text (one word per 8-digit field).
_WORDS = struct.Struct(">%dI" % len(FIELDS))
#: Byte ranges of each numeric field inside a header.
FIELD_SLICES = {name: slice(MAGIC_SIZE + i * HEX_DIGITS, MAGIC_SIZE + (i + 1) * HEX_DIGITS)
                for i, name in enumerate(FIELDS)}


def pad(n: int, boundary: int = ALIGNMENT) -> int:
    """Bytes of padding after ``n`` bytes."""
    return -n % boundary


def build_header(magic: bytes, values: tuple) -> bytes:
    """A header from the numeric field values in :data:`FIELDS` order."""
    return magic + _WORDS.pack(*values).hex().upper().encode()


def header_words() -> struct.Struct:
    """The numeric fields as big-endian 32-bit words, one per field in
    :data:`FIELDS` order: the upper-case hex digits of the packed words are
    the header after its magic (the writer's hot path)."""
    return _WORDS


def parse_header(buf: bytes) -> dict:
    """A header as a dict of its fields (``c_magic`` as bytes)."""
    out = {"c_magic": bytes(buf[:MAGIC_SIZE])}
    for name, sl in FIELD_SLICES.items():
        out[name] = int(buf[sl], 16)
    return out
