"""The registry record: one ``struct rumpfs_image`` per baked image.

Every object rumpfs writes carries one record in the section
``rumpfs_images``.  The linker concatenates the sections of all objects and,
because the name is a C identifier, GNU ld and lld define
``__start_rumpfs_images`` and ``__stop_rumpfs_images`` around them: a kernel
walks the array and finds every image without knowing any names.  The C
declaration is ``rumpfs/data/rumpfs_images.h``; this module declares the
same layout once, for both word sizes and byte orders::

    offset  size  field
         0     4  ri_magic       RUMPFS_IMAGE_MAGIC
         4     2  ri_version     RUMPFS_IMAGE_VERSION
         6     2  ri_format      RUMPFS_FMT_*
         8     4  ri_flags       RUMPFS_IMG_*
        12     4  ri_reclen      sizeof(struct rumpfs_image): 128
        16     8  ri_size        image size in bytes
        24     8  ri_image       pointer to the image (a union with a
                                 uint64_t: the pointer is the first 4 bytes
                                 on 32-bit targets, in either byte order)
        32    32  ri_name        component name, NUL-terminated
        64    64  ri_mountpoint  mount point, NUL-terminated

Every field sits at a multiple of its size and the record is 128 bytes, a
multiple of its 8-byte alignment, so the C layout is the same on every ABI
and records from several objects lie back to back with no padding.

Importing this module does not import construct: :func:`record` declares
the construct Struct when first called (:func:`parse`, the reader, uses
it), and :func:`build`, on the writer's path, packs with a ``struct`` form
described by ``_compiled_registry.py``, generated from :func:`record` by
``python -m rumpfs.formats.precompile`` (:mod:`rumpfs.formats.precompile`)
as long as it was generated from this very source; otherwise the
description is derived from construct.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import RumpfsError

SECTION = "rumpfs_images"
MAGIC = 0x52465349  # "RFSI"
VERSION = 1
RECORD_SIZE = 128
RECORD_ALIGN = 8
#: Offset of ri_image in the record: where the relocation applies.
IMAGE_POINTER_OFFSET = 24
NAME_LEN = 32
MOUNTPOINT_LEN = 64

# ri_format
FMT_RAW = 0
FMT_FFS1 = 1
FMT_FFS2 = 2
FMT_CPIO = 3
FMT_ISO = 4
FMT_FAT = 5
FORMAT_CODES = {"raw": FMT_RAW, "ffs": FMT_FFS1, "ffs1": FMT_FFS1, "ufs1": FMT_FFS1,
                "ffs2": FMT_FFS2, "ufs2": FMT_FFS2, "cpio": FMT_CPIO, "newc": FMT_CPIO,
                "iso": FMT_ISO, "iso9660": FMT_ISO, "cd9660": FMT_ISO, "fat": FMT_FAT}
FORMAT_NAMES = {FMT_RAW: "raw", FMT_FFS1: "ffs1", FMT_FFS2: "ffs2", FMT_CPIO: "cpio",
                FMT_ISO: "iso", FMT_FAT: "fat"}

# ri_flags
IMG_WRITABLE = 0x1     # in a writable section: may be mounted read-write in place
IMG_CONFIG = 0x2       # carries a launch configuration
IMG_COMPRESSED = 0x4   # the image is compressed (cpio: gzip, xz, zstd or lz4)
FLAG_NAMES = {IMG_WRITABLE: "writable", IMG_CONFIG: "config", IMG_COMPRESSED: "compressed"}


@lru_cache(maxsize=None)
def record(bits: int, byteorder: str):
    """``struct rumpfs_image`` for one word size and byte order, as a
    construct Struct (imports construct; :func:`build` uses :func:`fast_record`)."""
    from construct import Bytes, Int16ub, Int16ul, Int32ub, Int32ul, Int64ub, Int64ul, PaddedString, Struct

    big = byteorder == "big"
    u16 = Int16ub if big else Int16ul
    u32 = Int32ub if big else Int32ul
    u64 = Int64ub if big else Int64ul
    pointer = (["ri_image" / u64] if bits == 64
               else ["ri_image" / u32, "ri_image_pad" / u32])
    return Struct(
        "ri_magic" / u32,
        "ri_version" / u16,
        "ri_format" / u16,
        "ri_flags" / u32,
        "ri_reclen" / u32,
        "ri_size" / u64,
        *pointer,
        "ri_name" / PaddedString(NAME_LEN, "utf8"),
        "ri_mountpoint" / Bytes(MOUNTPOINT_LEN),
    )


def precompile() -> dict:
    """What ``python -m rumpfs.formats.precompile`` writes into
    ``_compiled_registry.py`` (imports construct): per word size, the
    record's description (``struct`` format without byte order, field tree,
    size), the same in both byte orders; and the encoding and length of each
    text field."""
    from ..formats.precompile import describe, string_fields

    records = {}
    for bits in (32, 64):
        fmt, fields = describe(record(bits, "little"))
        if describe(record(bits, "big")) != (fmt, fields):  # pragma: no cover
            raise AssertionError("the byte orders differ beyond the prefix")
        records[bits] = (fmt, fields, record(bits, "little").sizeof())
    strings = string_fields(record(64, "little"))
    if string_fields(record(32, "little")) != strings:  # pragma: no cover
        raise AssertionError("the word sizes differ in their text fields")
    return {"RECORDS": records, "STRINGS": strings}


@lru_cache(maxsize=None)
def _generated():
    """``_compiled_registry``, generated from this module, if it was
    generated from this very source; else None (construct derives)."""
    from ..formats.precompile import load

    return load(__name__, globals().get("__file__"))


@lru_cache(maxsize=None)
def _facts() -> dict:
    generated = _generated()
    return vars(generated) if generated is not None else precompile()


@lru_cache(maxsize=None)
def fast_record(bits: int, byteorder: str):
    """:func:`record` as a precompiled ``struct`` form
    (:class:`~rumpfs.formats.ffs.layout.FastStruct`); its text fields take
    bytes, encoded as :func:`build` does."""
    from ..formats.ffs.layout import FastStruct

    fmt, fields, size = _facts()["RECORDS"][bits]
    packer = FastStruct(fmt, fields, byteorder)
    if packer.size != size:  # pragma: no cover - the generator derived both
        raise AssertionError(f"registry record: struct size {packer.size} != {size}")
    return packer


def format_code(fmt_name: str) -> int:
    return FORMAT_CODES.get(fmt_name.lower(), FMT_RAW)


def check_mount_point(path: str) -> bytes:
    raw = path.encode("utf-8")
    if not raw.startswith(b"/"):
        raise RumpfsError(f"--mount-point {path!r}: must be an absolute path")
    if len(raw) >= MOUNTPOINT_LEN or b"\0" in raw:
        raise RumpfsError(f"--mount-point {path!r}: longer than {MOUNTPOINT_LEN - 1} bytes")
    return raw


def build(bits: int, byteorder: str, *, fmt: int, flags: int, size: int, name: str,
          mount_point: str, pointer: int = 0) -> bytes:
    """One record; ``pointer`` is the in-place addend (0: the relocation fills it)."""
    fields = dict(ri_magic=MAGIC, ri_version=VERSION, ri_format=fmt, ri_flags=flags,
                  ri_reclen=RECORD_SIZE, ri_size=size, ri_image=pointer,
                  ri_name=name,
                  ri_mountpoint=check_mount_point(mount_point).ljust(MOUNTPOINT_LEN, b"\0"))
    for field, (encoding, length) in _facts()["STRINGS"].items():
        # struct would cut a long text short where construct refuses it.
        raw = fields[field].encode(encoding)
        if len(raw) > length:
            raise ValueError(f"{field} {fields[field]!r}: {len(raw)} bytes, at most {length}")
        fields[field] = raw
    data = fast_record(bits, byteorder).pack_dict(fields)
    assert len(data) == RECORD_SIZE
    return data


def parse(data: bytes, bits: int, byteorder: str):
    rec = record(bits, byteorder).parse(data)
    if rec.ri_magic != MAGIC:
        return None
    return rec


def describe(rec) -> dict:
    return {
        "name": rec.ri_name,
        "format": FORMAT_NAMES.get(rec.ri_format, str(rec.ri_format)),
        "flags": ",".join(n for bit, n in FLAG_NAMES.items() if rec.ri_flags & bit) or "read-only",
        "mount_point": rec.ri_mountpoint.split(b"\0", 1)[0].decode("utf-8", "replace"),
        "size": rec.ri_size,
        "version": rec.ri_version,
    }
