"""ISO 9660 (ECMA-119) structures, with the Rock Ridge (RRIP 1.12 over
SUSP 1.12) and Joliet extensions.

The volume descriptors, directory records and path table records are
declared once, with construct, below, as ECMA-119 8.4, 9.1 and 9.4 list
their fields.  "Both-endian" fields hold the value twice, little-endian
first (ECMA-119 7.2.3, 7.3.3).  The writer packs with ``struct`` formats
derived from those declarations (:data:`DIR_RECORD`, :data:`PATH_RECORD_L`,
:data:`VOLUME_DESCRIPTOR`...; a both-endian field's big-endian half is an
``Ns`` slot given ``value.to_bytes(N, "big")``), read from
``_compiled.py`` (``python -m rumpfs.formats.precompile``) when that was
generated from this very source, else derived from construct: importing
construct costs more than writing a small image.  The System Use entries
are packed with the small formats below.
"""

from __future__ import annotations

import functools
import struct
import time

from ..precompile import declared_on_first_use, fast_struct, load

SECTOR = 2048
#: Sectors 0-15 are the system area; the volume descriptors start at 16.
SYSTEM_AREA_SECTORS = 16
STANDARD_ID = b"CD001"

VD_PRIMARY = 1
VD_SUPPLEMENTARY = 2
VD_TERMINATOR = 255

#: Joliet's escape sequence for UCS-2 level 3, in the supplementary descriptor.
JOLIET_ESCAPE = b"%/E"
#: Longest Joliet name in UCS-2 characters (the Joliet specification).
JOLIET_NAME_MAX = 64

#: File flags of a directory record (ECMA-119 9.1.6).
FLAG_DIRECTORY = 0x02
FLAG_MULTI_EXTENT = 0x80

#: A directory record's length is one byte.
RECORD_MAX = 255
RECORD_FIXED = 33  # bytes before the file identifier
#: An extent's size is a 32-bit field; multi-extent files are cut into
#: extents of at most this many bytes (a whole number of sectors).
EXTENT_MAX = 0xFFFFF800
#: Level 2/3 file identifiers: at most 30 characters plus ";1" (ECMA-119 7.5.1).
ISO_FILE_ID_MAX = 30
ISO_DIR_ID_MAX = 31
INTERCHANGE_LEVEL = 3

# -- SUSP / Rock Ridge entries: a 2-letter signature, length, version 1 --------
SUSP_HEADER = struct.Struct("<2sBB")
SUSP_VERSION = 1
SP_CHECK = b"\xbe\xef"
#: SP, CE: SUSP 1.12 5.3, 5.1; ER 5.5.
CE_SIZE = 28
RRIP_ID = b"RRIP_1991A"
RRIP_DESCRIPTOR = (b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE "
                   b"SYSTEM SEMANTICS")
RRIP_SOURCE = (b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER "
               b"IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.")
#: PX with the file serial number (RRIP 1.12): 44 bytes.
PX_SIZE = 44
#: TF flags (RRIP 4.1.6): which times follow, each 7 bytes (short form).
TF_MODIFY, TF_ACCESS, TF_ATTRIBUTES = 0x02, 0x04, 0x08
TF_FLAGS = TF_MODIFY | TF_ACCESS | TF_ATTRIBUTES
#: TF with those three times: header, flags, 3 x 7 bytes.
TF_SIZE = 26
#: NM's bytes before the name: header and flags.
NM_HEAD = 5
NM_CONTINUE = 0x01
SL_CONTINUE = 0x01
SL_CURRENT, SL_PARENT, SL_ROOT = 0x02, 0x04, 0x08
#: Longest symlink target kept: libisofs (xorriso) refuses a longer Rock
#: Ridge path, and with a 255-byte name it still fits one continuation area,
#: which is all libarchive follows.
SYMLINK_TARGET_MAX = 1024
#: Longest System Use entry (its length is one byte).
SUSP_ENTRY_MAX = 255


def both(value: int, size: int) -> dict:
    """A both-endian field of ``size`` bytes per half, as the packers of
    :data:`VOLUME_DESCRIPTOR` take it (the big-endian half as bytes)."""
    return {"le": value, "be": value.to_bytes(size, "big")}


def both16(v: int) -> bytes:
    return struct.pack("<H", v) + struct.pack(">H", v)


def both32(v: int) -> bytes:
    return struct.pack("<I", v) + struct.pack(">I", v)


@functools.lru_cache(maxsize=4096)
def record_date(seconds: int) -> bytes:
    """The 7-byte date of a directory record (ECMA-119 9.1.5), in UTC:
    years since 1900, month, day, hour, minute, second, GMT offset 0.
    (Cached: a tree has few distinct times.)"""
    seconds = clamp_date(seconds)
    t = time.gmtime(seconds)
    return bytes((t.tm_year - 1900, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, 0))


def volume_date(seconds: int | None) -> bytes:
    """The 17-byte date of a volume descriptor (ECMA-119 8.4.26.1);
    None: "not specified" (digits zero, offset zero)."""
    if seconds is None:
        return b"0" * 16 + b"\0"
    t = time.gmtime(clamp_date(seconds))
    return time.strftime("%Y%m%d%H%M%S", t).encode() + b"00\0"


#: A record date's year is one byte after 1900: the last second it holds
#: (2155-12-31 23:59:59 UTC).  Earlier than 1970 does not occur: the time
#: policy gives Unix times, clamped to 0 and up.
DATE_MAX = 5869583999


def clamp_date(seconds: int) -> int:
    """Seconds within what both date forms hold (1970 .. end of 2155)."""
    return max(0, min(seconds, DATE_MAX))


def _declare() -> dict:
    """The construct declarations (imports construct)."""
    from construct import Bytes, Const, Int8ul, Int16ub, Int16ul, Int32ub, Int32ul, Padding, Struct

    Both16 = Struct("le" / Int16ul, "be" / Int16ub)
    Both32 = Struct("le" / Int32ul, "be" / Int32ub)

    DirectoryRecord = Struct(
        "length" / Int8ul,
        "ext_attr_length" / Int8ul,
        "extent" / Both32,
        "data_length" / Both32,
        "recording_date" / Bytes(7),
        "flags" / Int8ul,
        "file_unit_size" / Int8ul,
        "interleave_gap" / Int8ul,
        "volume_sequence" / Both16,
        "name_length" / Int8ul,
    )

    PathTableRecord = Struct(   # L table; the M table is the same, big-endian
        "name_length" / Int8ul,
        "ext_attr_length" / Int8ul,
        "extent" / Int32ul,
        "parent" / Int16ul,
    )

    VolumeDescriptor = Struct(  # primary (type 1) and supplementary (type 2)
        "type" / Int8ul,
        "standard_id" / Const(STANDARD_ID),
        "version" / Const(1, Int8ul),
        "flags" / Int8ul,
        "system_id" / Bytes(32),
        "volume_id" / Bytes(32),
        Padding(8),
        "volume_space_size" / Both32,
        "escape_sequences" / Bytes(32),
        "volume_set_size" / Both16,
        "volume_sequence_number" / Both16,
        "logical_block_size" / Both16,
        "path_table_size" / Both32,
        "l_path_table" / Int32ul,
        "l_path_table_optional" / Int32ul,
        "m_path_table" / Int32ub,
        "m_path_table_optional" / Int32ub,
        "root_directory_record" / Bytes(34),
        "volume_set_id" / Bytes(128),
        "publisher_id" / Bytes(128),
        "preparer_id" / Bytes(128),
        "application_id" / Bytes(128),
        "copyright_file_id" / Bytes(37),
        "abstract_file_id" / Bytes(37),
        "bibliographic_file_id" / Bytes(37),
        "creation_date" / Bytes(17),
        "modification_date" / Bytes(17),
        "expiration_date" / Bytes(17),
        "effective_date" / Bytes(17),
        "file_structure_version" / Const(1, Int8ul),
        Padding(1),
        "application_use" / Bytes(512),
        Padding(653),
    )
    Terminator = Struct(
        "type" / Const(VD_TERMINATOR, Int8ul),
        "standard_id" / Const(STANDARD_ID),
        "version" / Const(1, Int8ul),
        Padding(SECTOR - 7),
    )
    return {"DirectoryRecord": DirectoryRecord, "PathTableRecord": PathTableRecord,
            "VolumeDescriptor": VolumeDescriptor, "Terminator": Terminator}


#: The declarations :func:`precompile` describes, in order.
STRUCT_NAMES = ("DirectoryRecord", "PathTableRecord", "VolumeDescriptor", "Terminator")


__getattr__ = declared_on_first_use(globals(), _declare, STRUCT_NAMES)


def precompile() -> dict:
    """What ``python -m rumpfs.formats.precompile`` writes into
    ``_compiled.py`` (imports construct): per declaration its ``struct``
    format without byte order, field tree and size."""
    from ..precompile import describe_all

    return {"STRUCTS": describe_all(_declare(), STRUCT_NAMES)}


#: ``_compiled``, when it was generated from this very source; else None
#: (construct derives the same).
_GENERATED = load(__name__, globals().get("__file__"))
_STRUCTS = _GENERATED.STRUCTS if _GENERATED is not None else precompile()["STRUCTS"]
#: Directory records and path table records come once per name: packed
#: positionally, fields in declaration order.  The M path table is the L
#: one with its numbers big-endian (ECMA-119 9.4.3).
DIR_RECORD = fast_struct(_STRUCTS, "DirectoryRecord").struct
PATH_RECORD_L = fast_struct(_STRUCTS, "PathTableRecord").struct
PATH_RECORD_M = fast_struct(_STRUCTS, "PathTableRecord", "big").struct
#: The descriptors are packed from dicts (``.pack_dict``; constants filled in).
VOLUME_DESCRIPTOR = fast_struct(_STRUCTS, "VolumeDescriptor")
TERMINATOR = fast_struct(_STRUCTS, "Terminator")
