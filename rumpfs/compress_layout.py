"""The framing of the compressed streams rumpfs writes, declared once with construct.

* gzip (RFC 1952): the member header and trailer around the deflate data.
* xz (the .xz file format, version 1.1.0): stream header and footer, block
  header, index; every one ends with a CRC32 of what precedes it.
* lz4 legacy frame (``lz4 -l``, what the Linux kernel's ``unlz4`` reads): a
  magic, then blocks each led by its compressed size.

Importing this module does not import construct (20-35 ms, a good part of
compressing a small archive).  The gzip and lz4 framing is packed with
``struct`` formats derived from the declarations (:class:`Packed`), which
``python -m rumpfs.formats.precompile`` writes into
``_compiled_compress_layout.py`` (see :mod:`rumpfs.formats.precompile`);
the declarations themselves are built on first use: xz (whose compression
takes far longer than the import) and the tests use them.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

# -- gzip (RFC 1952) ----------------------------------------------------------
GZIP_ID = b"\x1f\x8b"  # ID1, ID2
GZIP_CM_DEFLATE = 8
#: OS: what gzip(1) and zlib write on Unix, whatever the build host.
GZIP_OS_UNIX = 3
#: XFL: the compressor used its slowest and best level, or its fastest.
GZIP_XFL_BEST = 2
GZIP_XFL_FASTEST = 4
#: ISIZE is the size modulo 2**32.
ISIZE_MASK = 0xFFFFFFFF

# -- xz -----------------------------------------------------------------------
XZ_HEADER_MAGIC = b"\xfd7zXZ\x00"
XZ_FOOTER_MAGIC = b"YZ"
XZ_CHECK_CRC32 = 0x01
XZ_CHECK_SIZE = 4
XZ_FILTER_LZMA2 = 0x21
#: Block headers, blocks and the index are padded to this boundary.
XZ_ALIGNMENT = 4

# -- lz4 legacy frame -----------------------------------------------------------
LZ4_LEGACY_MAGIC = 0x184C2102
#: Uncompressed bytes per legacy block (LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE).
LZ4_LEGACY_CHUNK = 8 << 20

#: The declarations :class:`Packed` packs on the writer's path.
FIXED = ("GZIP_HEADER", "GZIP_TRAILER", "LZ4_LEGACY_HEADER", "LZ4_LEGACY_BLOCK")


def _declare() -> dict:
    """The construct declarations, by name (imports construct)."""
    from construct import (
        Array,
        BitsInteger,
        BitStruct,
        Bytes,
        Const,
        Flag,
        If,
        Int8ul,
        Int32ul,
        Struct,
        VarInt,
        this,
    )

    GZIP_HEADER = Struct(
        "id" / Const(GZIP_ID),
        "cm" / Const(GZIP_CM_DEFLATE, Int8ul),
        "flg" / Const(0, Int8ul),  # no FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT
        "mtime" / Int32ul,  # 0: no time
        "xfl" / Int8ul,
        "os" / Int8ul,
    )
    GZIP_TRAILER = Struct(
        "crc32" / Int32ul,  # of the uncompressed data
        "isize" / Int32ul,  # its size modulo 2**32
    )

    XZ_STREAM_FLAGS = Struct(
        "reserved" / Const(0, Int8ul),
        "check_type" / Int8ul,
    )
    XZ_STREAM_HEADER = Struct(
        "header_magic" / Const(XZ_HEADER_MAGIC),
        "stream_flags" / XZ_STREAM_FLAGS,
        "crc32" / Int32ul,  # of stream_flags
    )
    XZ_STREAM_FOOTER = Struct(
        "crc32" / Int32ul,  # of backward_size and stream_flags
        "backward_size" / Int32ul,  # index size / 4 - 1
        "stream_flags" / XZ_STREAM_FLAGS,
        "footer_magic" / Const(XZ_FOOTER_MAGIC),
    )
    XZ_FILTER_FLAGS = Struct(
        "filter_id" / VarInt,
        "size_of_properties" / VarInt,
        "filter_properties" / Bytes(this.size_of_properties),
    )
    #: Followed by zeros to a multiple of 4 bytes and a CRC32 of all of it.
    XZ_BLOCK_HEADER = Struct(
        "block_header_size" / Int8ul,  # the header's size, CRC32 included, / 4 - 1
        "block_flags" / BitStruct(
            "uncompressed_size_present" / Flag,
            "compressed_size_present" / Flag,
            "reserved" / Const(0, BitsInteger(4)),
            "number_of_filters_minus_one" / BitsInteger(2),
        ),
        "compressed_size" / If(this.block_flags.compressed_size_present, VarInt),
        "uncompressed_size" / If(this.block_flags.uncompressed_size_present, VarInt),
        "filter_flags" / Array(this.block_flags.number_of_filters_minus_one + 1, XZ_FILTER_FLAGS),
    )
    XZ_INDEX_RECORD = Struct(
        "unpadded_size" / VarInt,  # block header, compressed data and check
        "uncompressed_size" / VarInt,
    )
    #: Followed by zeros to a multiple of 4 bytes and a CRC32 of all of it.
    XZ_INDEX = Struct(
        "index_indicator" / Const(0, Int8ul),
        "number_of_records" / VarInt,
        "records" / Array(this.number_of_records, XZ_INDEX_RECORD),
    )

    LZ4_LEGACY_HEADER = Struct("magic" / Const(LZ4_LEGACY_MAGIC, Int32ul))
    LZ4_LEGACY_BLOCK = Struct("compressed_size" / Int32ul)
    return {name: value for name, value in locals().items() if name.isupper()}


#: Every declaration (built on first use: see ``__getattr__``).
DECLARED = FIXED + ("XZ_STREAM_FLAGS", "XZ_STREAM_HEADER", "XZ_STREAM_FOOTER", "XZ_FILTER_FLAGS",
                    "XZ_BLOCK_HEADER", "XZ_INDEX_RECORD", "XZ_INDEX")


def __getattr__(name: str):
    # Only the declarations' names: the import system asks for others
    # (__path__...), which must not import construct.
    if name not in DECLARED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    declared = _declare()
    globals().update(declared)
    return declared[name]


def fixed_format(con) -> tuple[str, tuple]:
    """The ``struct`` format of a Struct whose fields are integers,
    constant integers or constant bytes, and per field ``(name, constant)``
    (None for a variable one).  Imports construct."""
    from construct import Bytes, Const, FormatField

    fmt = ["<"]
    fields = []
    for sc in con.subcons:
        inner = sc.subcon
        const = None
        if isinstance(inner, Const):
            const, inner = inner.value, inner.subcon
        if isinstance(inner, FormatField) and inner.fmtstr[0] == "<":
            fmt.append(inner.fmtstr[1:])
        elif isinstance(inner, Bytes) and isinstance(inner.length, int):
            fmt.append(f"{inner.length}s")
        else:
            raise TypeError(f"fixed_format: cannot pack field {sc.name!r} ({type(inner).__name__})")
        fields.append((sc.name, const))
    return "".join(fmt), tuple(fields)


def precompile() -> dict:
    """What ``python -m rumpfs.formats.precompile`` writes into
    ``_compiled_compress_layout.py``: the format and fields of each FIXED
    declaration."""
    declared = _declare()
    return {"FORMATS": {name: fixed_format(declared[name]) for name in FIXED}}


class Packed:
    """A FIXED declaration as the writer packs it: ``build`` takes the
    variable fields by name, ``parse`` gives every field as an attribute."""

    def __init__(self, fmt: str, fields: tuple):
        self.struct = struct.Struct(fmt)
        self.fields = fields
        self.size = self.struct.size

    def build(self, values: dict) -> bytes:
        return self.struct.pack(*(values[name] if const is None else const
                                  for name, const in self.fields))

    def parse(self, data) -> SimpleNamespace:
        out = SimpleNamespace()
        for (name, const), value in zip(self.fields, self.struct.unpack(data)):
            if const is not None and value != const:
                raise ValueError(f"{name} is {value!r}, not {const!r}")
            setattr(out, name, value)
        return out


def _generated():
    """``_compiled_compress_layout``, if it was generated from this very
    source; else None (construct derives the same)."""
    from .formats.precompile import load

    return load(__name__, globals().get("__file__"))


_GENERATED = _generated()
FORMATS = precompile()["FORMATS"] if _GENERATED is None else _GENERATED.FORMATS
#: The FIXED declarations, packed with ``struct``.
PACKED = {name: Packed(fmt, fields) for name, (fmt, fields) in FORMATS.items()}
