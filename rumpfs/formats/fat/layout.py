"""FAT12/16/32 structures, as the Microsoft FAT specification (FAT: General
Overview of On-Disk Format, 1.03) names them.

The boot sector (BPB), the FSInfo sector and the directory entries are
declared once, with construct, below.  The writer and the reader pack and
unpack with ``struct`` formats derived from those declarations
(:data:`DIR_ENTRY`, :data:`LFN_ENTRY`, :data:`BOOT_SECTOR`...), read from
``_compiled.py`` (``python -m rumpfs.formats.precompile``) when that was
generated from this very source, else derived from construct: importing
construct costs more than writing a small image.
"""

from __future__ import annotations

from ..precompile import declared_on_first_use, fast_struct, load

SECTOR = 512
NUM_FATS = 2
MEDIA_FIXED = 0xF8
BOOT_SIGNATURE = b"\x55\xaa"
EXT_BOOT_SIGNATURE = 0x29
DRIVE_NUMBER = 0x80
OEM_NAME = b"MSWIN4.1"  # the specification's advice for compatibility
JUMP_FAT16 = b"\xeb\x3c\x90"  # jmp over the FAT12/16 BPB (to 0x3E)
JUMP_FAT32 = b"\xeb\x58\x90"  # ... and over the FAT32 one (to 0x5A)
#: Geometry fields nothing reads any more; mkfs.fat's values for a disk image.
SECTORS_PER_TRACK = 32
HEADS = 64

#: The FAT type follows from the cluster count alone (specification, section 3.5).
FAT12_MAX_CLUSTERS = 4084
FAT16_MAX_CLUSTERS = 65524
FAT32_MAX_CLUSTERS = 0x0FFFFFF5 - 2
MIN_CLUSTERS = {12: 1, 16: FAT12_MAX_CLUSTERS + 1, 32: FAT16_MAX_CLUSTERS + 1}
MAX_CLUSTERS = {12: FAT12_MAX_CLUSTERS, 16: FAT16_MAX_CLUSTERS, 32: FAT32_MAX_CLUSTERS}
#: End-of-chain marks and the reserved entries 0 and 1 of each FAT.
EOC = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}
FIRST_CLUSTER = 2
RESERVED_SECTORS = {12: 1, 16: 1, 32: 32}
FSINFO_SECTOR = 1
BACKUP_BOOT_SECTOR = 6
#: Largest cluster the specification calls compatible (32 KiB).
MAX_CLUSTER_BYTES = 32768

FSINFO_LEAD = 0x41615252
FSINFO_STRUCT = 0x61417272
FSINFO_TRAIL = 0xAA550000
FSINFO_UNKNOWN = 0xFFFFFFFF

DIR_ENTRY_SIZE = 32
#: A directory holds at most 65536 entries (2 MiB): the specification's limit.
MAX_DIR_ENTRIES = 65536
#: A FAT12/16 root's entry count is a 16-bit field, a multiple of 16 (a sector).
MAX_ROOT_ENTRIES = 65520
ATTR_READ_ONLY = 0x01
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LONG_NAME = 0x0F
#: DIR_NTRes flags of Windows NT (and mtools, Linux): the short name's base
#: or extension is shown in lower case, so such a name needs no long entry.
NT_LOWER_BASE = 0x08
NT_LOWER_EXT = 0x10
LFN_LAST = 0x40
LFN_CHARS = 13
LFN_MAX = 255
FILE_SIZE_MAX = 0xFFFFFFFF
#: Characters a long name must not hold (besides controls below 0x20).
LFN_FORBIDDEN = '"*/:<>?\\|'
#: Characters a short name may hold besides A-Z and 0-9.
SHORT_EXTRA = b"$%'-_@~`!(){}^#&"
DATE_EPOCH_YEAR = 1980
DATE_LAST_YEAR = 2107



def _declare() -> dict:
    """The construct declarations (imports construct)."""
    from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Struct

    Bpb = Struct(
        "BS_jmpBoot" / Bytes(3),
        "BS_OEMName" / Bytes(8),
        "BPB_BytsPerSec" / Int16ul,
        "BPB_SecPerClus" / Int8ul,
        "BPB_RsvdSecCnt" / Int16ul,
        "BPB_NumFATs" / Int8ul,
        "BPB_RootEntCnt" / Int16ul,
        "BPB_TotSec16" / Int16ul,
        "BPB_Media" / Int8ul,
        "BPB_FATSz16" / Int16ul,
        "BPB_SecPerTrk" / Int16ul,
        "BPB_NumHeads" / Int16ul,
        "BPB_HiddSec" / Int32ul,
        "BPB_TotSec32" / Int32ul,
    )
    ExtBpb = Struct(  # the tail both kinds share, after their own fields
        "BS_DrvNum" / Int8ul,
        "BS_Reserved1" / Int8ul,
        "BS_BootSig" / Int8ul,
        "BS_VolID" / Int32ul,
        "BS_VolLab" / Bytes(11),
        "BS_FilSysType" / Bytes(8),
    )
    Fat32Bpb = Struct(
        "BPB_FATSz32" / Int32ul,
        "BPB_ExtFlags" / Int16ul,
        "BPB_FSVer" / Int16ul,
        "BPB_RootClus" / Int32ul,
        "BPB_FSInfo" / Int16ul,
        "BPB_BkBootSec" / Int16ul,
        "BPB_Reserved" / Bytes(12),
    )
    # The extended BPB follows the BPB at offset 36 on FAT12/16 and after
    # the FAT32 fields, at offset 64, on FAT32 (specification, section 3).
    BootSector16 = Struct(
        "bpb" / Bpb,
        "ext" / ExtBpb,
    )
    BootSector32 = Struct(
        "bpb" / Bpb,
        "fat32" / Fat32Bpb,
        "ext" / ExtBpb,
    )
    FsInfo = Struct(
        "FSI_LeadSig" / Const(FSINFO_LEAD, Int32ul),
        "FSI_Reserved1" / Bytes(480),
        "FSI_StrucSig" / Const(FSINFO_STRUCT, Int32ul),
        "FSI_Free_Count" / Int32ul,
        "FSI_Nxt_Free" / Int32ul,
        "FSI_Reserved2" / Bytes(12),
        "FSI_TrailSig" / Const(FSINFO_TRAIL, Int32ul),
    )
    DirEntry = Struct(
        "DIR_Name" / Bytes(11),
        "DIR_Attr" / Int8ul,
        "DIR_NTRes" / Int8ul,
        "DIR_CrtTimeTenth" / Int8ul,
        "DIR_CrtTime" / Int16ul,
        "DIR_CrtDate" / Int16ul,
        "DIR_LstAccDate" / Int16ul,
        "DIR_FstClusHI" / Int16ul,
        "DIR_WrtTime" / Int16ul,
        "DIR_WrtDate" / Int16ul,
        "DIR_FstClusLO" / Int16ul,
        "DIR_FileSize" / Int32ul,
    )
    LfnEntry = Struct(
        "LDIR_Ord" / Int8ul,
        "LDIR_Name1" / Bytes(10),
        "LDIR_Attr" / Int8ul,
        "LDIR_Type" / Int8ul,
        "LDIR_Chksum" / Int8ul,
        "LDIR_Name2" / Bytes(12),
        "LDIR_FstClusLO" / Int16ul,
        "LDIR_Name3" / Bytes(4),
    )
    return {"Bpb": Bpb, "BootSector16": BootSector16, "BootSector32": BootSector32,
            "FsInfo": FsInfo, "DirEntry": DirEntry, "LfnEntry": LfnEntry}


#: The declarations :func:`precompile` describes, in order.
STRUCT_NAMES = ("Bpb", "BootSector16", "BootSector32", "FsInfo", "DirEntry", "LfnEntry")


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
#: Directory entries come once per name: packed positionally, fields in
#: declaration order (DIR_Name ... DIR_FileSize; LDIR_Ord ... LDIR_Name3).
DIR_ENTRY = fast_struct(_STRUCTS, "DirEntry").struct
LFN_ENTRY = fast_struct(_STRUCTS, "LfnEntry").struct
#: The BPB alone (what every FAT type shares), as the reader probes it.
BPB = fast_struct(_STRUCTS, "Bpb").struct
#: The boot sectors and FSInfo are packed from dicts (``.pack_dict``;
#: constants filled in).
_BOOT_SECTOR16 = fast_struct(_STRUCTS, "BootSector16")
BOOT_SECTOR = {12: _BOOT_SECTOR16, 16: _BOOT_SECTOR16, 32: fast_struct(_STRUCTS, "BootSector32")}
FSINFO = fast_struct(_STRUCTS, "FsInfo")


def fat_date(t) -> int:
    return ((t.tm_year - DATE_EPOCH_YEAR) << 9) | (t.tm_mon << 5) | t.tm_mday


def fat_time(t) -> int:
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)


#: A byte rotated right by one bit, by value (the checksum's step).
_ROTATE_RIGHT = bytes(((s & 1) << 7) | (s >> 1) for s in range(256))


def short_name_checksum(name11: bytes) -> int:
    """The long-name entries' checksum of their short name (specification 7.2)."""
    s = 0
    for c in name11:
        s = (_ROTATE_RIGHT[s] + c) & 0xFF
    return s
