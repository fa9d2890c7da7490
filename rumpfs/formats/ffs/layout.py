"""On-disk structures and constants of the NetBSD Fast File System (UFS1, UFS2).

Every structure is declared here once, with :mod:`construct`, following the
NetBSD headers it mirrors; field names are the C names:

* ``struct fs`` (the superblock, 1376 bytes), ``struct csum`` and
  ``struct csum_total``, ``struct cg`` (the fixed 168-byte head of a
  cylinder group block): ``sys/ufs/ffs/fs.h``;
* ``struct ufs1_dinode`` (128 bytes) and ``struct ufs2_dinode`` (256 bytes):
  ``sys/ufs/ufs/dinode.h``;
* ``struct direct`` (the 8-byte header of a directory entry; the name follows):
  ``sys/ufs/ufs/dir.h``.

FFS metadata is stored in the byte order of the machine that made the file
system (NetBSD's ``FFS_EI`` option reads either), so the declarations are
built per byte order.  Use :func:`structs`::

    L = layout.structs("big")          # or layout.LITTLE / layout.BIG
    sb = L.fs.parse(raw)               # construct Container, C field names
    raw = L.fs.build(dict(fs_magic=layout.FS_UFS2_MAGIC, ...))  # omitted fields -> 0
    ino = L.fast("ufs2_dinode")        # precompiled struct.Struct, same layout
    d = ino.unpack_dict(buf, offset)   # {"di_mode": ..., "di_db": [12 ints], ...}
    raw = ino.pack_dict({"di_mode": 0o100644, "di_db": [...], ...})
    ino.struct.pack(*values)           # fastest: positional, order = ino.names

Every integer field defaults to 0 and every padding/spare area is written as
zeros when building (``construct`` ``Default``/``Padding``), so a built
structure never carries uninitialised bytes; in particular the 128 bytes of
in-core pointers of ``struct fs`` (``fs_ocsp`` ... ``fs_active``) are padding.

:func:`fast_struct` derives a :class:`struct.Struct` from a declaration (for
the writer's and reader's hot paths: thousands of inodes and directory
entries) so the layout is never written down twice.  :func:`offsetof` gives a
field's byte offset inside a declaration.

Importing this module does not import construct (35-55 ms, more than
packing a small tree): the construct objects are built the first time an
attribute such as ``L.fs`` is used, and :meth:`Layout.fast`, ``SIZEOF_FS``,
``SIZEOF_CSUM`` and ``FS_MAGIC_OFFSET`` come from ``_compiled.py``, generated
from these declarations by ``python -m rumpfs.formats.precompile``
(:mod:`rumpfs.formats.precompile`), as long as it was generated from this
very source; otherwise they are derived from construct, as before.

The geometry helpers at the end (:func:`cg_map_offsets`, :func:`cgsize`,
:func:`maxfilesize`, ...) are the formulas of ``fs.h`` and newfs/fsck that a
writer and a checker must compute identically.
"""

from __future__ import annotations

import struct as _struct
import sys as _sys
from array import array as _array
from functools import lru_cache

# --- Locations and sizes (fs.h) --------------------------------------------

#: Superblock of a UFS1 file system (byte offset in the image).
SBLOCK_UFS1 = 8192
#: Superblock of a UFS2 file system, where newfs, the kernels and Linux look.
SBLOCK_UFS2 = 65536
#: Superblock at the very start (small media).
SBLOCK_FLOPPY = 0
#: Superblock placed after a 256 KiB boot area.
SBLOCK_PIGGY = 262144
#: The kernel's and fsck's search order (fs.h SBLOCKSEARCH).
SBLOCKSEARCH = (SBLOCK_UFS2, SBLOCK_UFS1, SBLOCK_FLOPPY, SBLOCK_PIGGY)
#: Space reserved for a superblock.
SBLOCKSIZE = 8192
#: Boot area before the UFS1 superblock.
BBSIZE = 8192
#: Smallest and largest block sizes.
MINBSIZE = 4096
MAXBSIZE = 65536
#: At most this many fragments per block.
MAXFRAG = 8
#: Largest cluster summary (fs_contigsumsize).
FS_MAXCONTIG = 16
#: Default reserve, average file size and files per directory (newfs defaults).
MINFREE = 5
AVFILESIZ = 16384
AFPDIR = 64
#: newfs tries to create at least this many cylinder groups.
MINCYLGRPS = 4
#: Snapshot inode slots in the superblock.
FSMAXSNAP = 20
#: Length of fs_fsmnt and fs_volname.
MAXMNTLEN = 468
MAXVOLLEN = 32
#: Bytes of in-core pointers (fs_ocsp[], fs_contigdirs, fs_csp, fs_maxcluster,
#: fs_active) that sit in the on-disk superblock; always written as zeros.
FS_POINTERS_SIZE = 128
#: Sector size that fs_fsbtodb converts to (DEV_BSIZE).
DEV_BSIZE = 512
#: Bits per byte in the cylinder-group maps.
NBBY = 8

# --- Magic numbers and format markers (fs.h) --------------------------------

FS_UFS1_MAGIC = 0x011954
FS_UFS2_MAGIC = 0x19540119
#: UFS2 with extended attributes (NetBSD 10).
FS_UFS2EA_MAGIC = 0x19012038
CG_MAGIC = 0x090255

FS_42INODEFMT = -1
FS_44INODEFMT = 2
FS_42POSTBLFMT = -1
FS_DYNAMICPOSTBLFMT = 1

#: fs_clean
FS_ISCLEAN = 0x01
FS_WASCLEAN = 0x02

#: fs_optim
FS_OPTTIME = 0
FS_OPTSPACE = 1

#: fs_flags (and fs_old_flags for FS_FLAGS_UPDATED)
FS_UNCLEAN = 0x001
FS_DOSOFTDEP = 0x002
FS_NEEDSFSCK = 0x004
FS_SUJ = 0x008
FS_POSIX1EACLS = 0x010
FS_ACLS = FS_POSIX1EACLS
FS_MULTILABEL = 0x020
FS_GJOURNAL = 0x040
#: The superblock uses the 64-bit fields (fs_size, fs_csaddr, fs_cstotal, ...).
FS_FLAGS_UPDATED = 0x080
FS_DOWAPBL = 0x100
FS_DOQUOTA2 = 0x200
FS_TRIM = 0x400
FS_NFS4ACLS = 0x800
#: Flags a NetBSD kernel mounts without complaint.
FS_KNOWN_FLAGS = FS_DOSOFTDEP | FS_DOWAPBL | FS_DOQUOTA2 | FS_POSIX1EACLS | FS_NFS4ACLS
#: In-core only; never on disk.
FS_INTERNAL = 0x80000000

# --- Inodes (dinode.h) ------------------------------------------------------

#: Direct and indirect block pointers in an inode, extattr pointers (UFS2).
UFS_NDADDR = 12
UFS_NIADDR = 3
UFS_NXADDR = 2
#: Inode 1 is the whiteout placeholder (once: bad blocks), 2 the root directory.
UFS_WINO = 1
UFS_ROOTINO = 2
DINODE1_SIZE = 128
DINODE2_SIZE = 256
#: Longest symlink target kept inside the inode (stored there when the length
#: is *less* than fs_maxsymlinklen): the bytes of di_db + di_ib.
MAXSYMLINKLEN_UFS1 = (UFS_NDADDR + UFS_NIADDR) * 4
MAXSYMLINKLEN_UFS2 = (UFS_NDADDR + UFS_NIADDR) * 8

#: File types in di_mode (same values as st_mode).
IFMT = 0o170000
IFIFO = 0o010000
IFCHR = 0o020000
IFDIR = 0o040000
IFBLK = 0o060000
IFREG = 0o100000
IFLNK = 0o120000
IFSOCK = 0o140000
IFWHT = 0o160000

# --- Directories (dir.h) ----------------------------------------------------

#: Directory data is a sequence of chunks this long; no entry crosses one.
DIRBLKSIZ = 512
UFS_DIRBLKSIZ = DIRBLKSIZ
FFS_MAXNAMLEN = 255
#: Size of the fixed header of a directory entry.
DIRECT_HEADER_SIZE = 8

DT_UNKNOWN = 0
DT_FIFO = 1
DT_CHR = 2
DT_DIR = 4
DT_BLK = 6
DT_REG = 8
DT_LNK = 10
DT_SOCK = 12
DT_WHT = 14


def IFTODT(mode: int) -> int:
    """d_type of an inode mode (dir.h)."""
    return (mode & IFMT) >> 12


def DTTOIF(dirtype: int) -> int:
    """Inode type bits of a d_type (dir.h)."""
    return dirtype << 12


def UFS_DIRECTSIZ(namlen: int) -> int:
    """Bytes an entry with a name of ``namlen`` bytes needs: header, name,
    NUL, padded to 4 (dir.h UFS_DIRECTSIZ)."""
    return DIRECT_HEADER_SIZE + ((namlen + 1 + 3) & ~3)


# --- Declarations -----------------------------------------------------------


#: sizeof() of each declaration, as the C headers give it.
_SIZES = {
    "csum": 16,
    "csum_total": 64,
    "fs": 1376,
    "cg": 168,
    "ufs1_dinode": DINODE1_SIZE,
    "ufs2_dinode": DINODE2_SIZE,
    "direct": DIRECT_HEADER_SIZE,
}

#: struct's and construct's byte-order prefixes.
_PREFIX = {"little": "<", "big": ">"}


# construct is imported by the functions that build declarations, not by the
# module: the writer gets by without it (see the module docstring).


class _Types:
    """The C integer types of one byte order, as construct fields."""

    def __init__(self, byteorder: str):
        from construct import FormatField

        e = _PREFIX[byteorder]
        self.int8 = FormatField(e, "b")
        self.uint8 = FormatField(e, "B")
        self.int16 = FormatField(e, "h")
        self.uint16 = FormatField(e, "H")
        self.int32 = FormatField(e, "l")
        self.uint32 = FormatField(e, "L")
        self.int64 = FormatField(e, "q")
        self.uint64 = FormatField(e, "Q")


def _zero(field):
    from construct import Default

    return Default(field, 0)


def _zeros(field, count):
    from construct import Array, Default

    return Default(Array(count, field), [0] * count)


class Layout:
    """The FFS structures in one byte order (``"little"`` or ``"big"``).

    Attributes ``fs``, ``csum``, ``csum_total``, ``cg``, ``ufs1_dinode``,
    ``ufs2_dinode`` and ``direct`` are construct Structs, declared when one
    of them is first used; :meth:`fast` gives their precompiled
    :class:`FastStruct`, without construct while ``_compiled.py`` is current.
    """

    def __init__(self, byteorder: str):
        if byteorder not in _PREFIX:
            raise ValueError(f"byte order must be 'little' or 'big', not {byteorder!r}")
        self.byteorder = byteorder

    def __getattr__(self, name: str):
        # Only reached when the attribute is missing: declare on first use.
        if name not in _SIZES:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._declare()
        return self.__dict__[name]

    def _declare(self) -> None:
        """The declarations, field by field as in the C headers."""
        from construct import Bytes, Default, Padding, Struct

        t = _Types(self.byteorder)
        i8, u8, i16, u16 = map(_zero, (t.int8, t.uint8, t.int16, t.uint16))
        i32, u32, i64, u64 = map(_zero, (t.int32, t.uint32, t.int64, t.uint64))

        # fs.h struct csum: per-cg summary, also the csum area entries.
        self.csum = Struct(
            "cs_ndir" / i32,     # number of directories
            "cs_nbfree" / i32,   # number of free blocks
            "cs_nifree" / i32,   # number of free inodes
            "cs_nffree" / i32,   # number of free frags
        )
        # fs.h struct csum_total: the 64-bit file system totals.
        self.csum_total = Struct(
            "cs_ndir" / i64,
            "cs_nbfree" / i64,
            "cs_nifree" / i64,
            "cs_nffree" / i64,
            "cs_numclusters" / i64,
            "cs_spare" / _zeros(t.int64, 3),
        )
        _csum0 = Default(self.csum, {})
        _csum_total0 = Default(self.csum_total, {})

        # fs.h struct fs (NetBSD 10 layout, 1376 bytes).
        self.fs = Struct(
            "fs_firstfield" / i32,      # historic file system linked list
            "fs_unused_1" / i32,
            "fs_sblkno" / i32,          # offset of super-block in filesys (frags)
            "fs_cblkno" / i32,          # offset of cyl-block in filesys
            "fs_iblkno" / i32,          # offset of inode-blocks in filesys
            "fs_dblkno" / i32,          # offset of first data after cg
            "fs_old_cgoffset" / i32,    # cylinder group offset in cylinder
            "fs_old_cgmask" / i32,      # used to calc mod fs_ntrak
            "fs_old_time" / i32,        # last time written
            "fs_old_size" / i32,        # number of blocks in fs
            "fs_old_dsize" / i32,       # number of data blocks in fs
            "fs_ncg" / i32,             # number of cylinder groups
            "fs_bsize" / i32,           # size of basic blocks in fs
            "fs_fsize" / i32,           # size of frag blocks in fs
            "fs_frag" / i32,            # number of frags in a block in fs
            "fs_minfree" / i32,         # minimum percentage of free blocks
            "fs_old_rotdelay" / i32,
            "fs_old_rps" / i32,         # disk revolutions per second
            "fs_bmask" / i32,           # ~(bsize - 1)
            "fs_fmask" / i32,           # ~(fsize - 1)
            "fs_bshift" / i32,          # log2(bsize)
            "fs_fshift" / i32,          # log2(fsize)
            "fs_maxcontig" / i32,       # max number of contiguous blks
            "fs_maxbpg" / i32,          # max number of blks per cyl group
            "fs_fragshift" / i32,       # log2(frag)
            "fs_fsbtodb" / i32,         # log2(fsize / DEV_BSIZE)
            "fs_sbsize" / i32,          # actual size of super block
            "fs_spare1" / _zeros(t.int32, 2),  # old fs_csmask, fs_csshift
            "fs_nindir" / i32,          # block pointers per indirect block
            "fs_inopb" / i32,           # inodes per block
            "fs_old_nspf" / i32,        # sectors per frag
            "fs_optim" / i32,           # FS_OPTTIME / FS_OPTSPACE
            "fs_old_npsect" / i32,      # sectors/track including spares
            "fs_old_interleave" / i32,  # hardware sector interleave
            "fs_old_trackskew" / i32,
            "fs_id" / _zeros(t.int32, 2),  # unique file system id
            "fs_old_csaddr" / i32,      # blk addr of cyl grp summary area
            "fs_cssize" / i32,          # size of cyl grp summary area
            "fs_cgsize" / i32,          # cylinder group size
            "fs_spare2" / i32,          # old fs_ntrak
            "fs_old_nsect" / i32,       # sectors per track
            "fs_old_spc" / i32,         # sectors per cylinder
            "fs_old_ncyl" / i32,        # cylinders in file system
            "fs_old_cpg" / i32,         # cylinders per group
            "fs_ipg" / i32,             # inodes per group
            "fs_fpg" / i32,             # blocks per group * fs_frag
            "fs_old_cstotal" / _csum0,  # cylinder summary information (32-bit)
            "fs_fmod" / i8,             # super block modified flag
            "fs_clean" / i8,            # file system is clean flag
            "fs_ronly" / i8,            # mounted read-only flag
            "fs_old_flags" / u8,        # FS_FLAGS_UPDATED
            "fs_fsmnt" / Default(Bytes(MAXMNTLEN), bytes(MAXMNTLEN)),    # name mounted on
            "fs_volname" / Default(Bytes(MAXVOLLEN), bytes(MAXVOLLEN)),  # volume name
            "fs_swuid" / u64,           # system-wide uid
            "fs_pad" / i32,
            "fs_cgrotor" / i32,         # last cg searched (unused)
            # fs_ocsp[], fs_contigdirs, fs_csp, fs_maxcluster, fs_active:
            # in-core pointers, zero on disk.
            Padding(FS_POINTERS_SIZE),
            "fs_old_cpc" / i32,         # cyl per cycle in postbl
            "fs_maxbsize" / i32,        # maximum blocking factor permitted
            "fs_journal_version" / u8,  # WAPBL
            "fs_journal_location" / u8,
            "fs_journal_reserved" / _zeros(t.uint8, 2),
            "fs_journal_flags" / u32,
            "fs_journallocs" / _zeros(t.uint64, 4),
            "fs_quota_magic" / u32,     # QUOTA2
            "fs_quota_flags" / u8,
            "fs_quota_reserved" / _zeros(t.uint8, 3),
            "fs_quotafile" / _zeros(t.uint64, 2),
            "fs_sparecon64" / _zeros(t.int64, 9),
            "fs_sblockloc" / i64,       # byte offset of standard superblock
            "fs_cstotal" / _csum_total0,  # cylinder summary information (64-bit)
            "fs_time" / i64,            # last time written
            "fs_size" / i64,            # number of blocks in fs (frags)
            "fs_dsize" / i64,           # number of data blocks in fs
            "fs_csaddr" / i64,          # blk addr of cyl grp summary area
            "fs_pendingblocks" / i64,
            "fs_pendinginodes" / i32,
            "fs_snapinum" / _zeros(t.int32, FSMAXSNAP),
            "fs_avgfilesize" / i32,     # expected average file size
            "fs_avgfpdir" / i32,        # expected # of files per directory
            "fs_save_cgsize" / i32,
            "fs_sparecon32" / _zeros(t.int32, 26),
            "fs_flags" / u32,           # FS_* flags
            "fs_contigsumsize" / i32,   # size of cluster summary array
            "fs_maxsymlinklen" / i32,   # max length of an internal symlink
            "fs_old_inodefmt" / i32,    # FS_44INODEFMT
            "fs_maxfilesize" / u64,     # maximum representable file size
            "fs_qbmask" / i64,          # ~fs_bmask for use with 64-bit size
            "fs_qfmask" / i64,          # ~fs_fmask for use with 64-bit size
            "fs_state" / i32,
            "fs_old_postblformat" / i32,  # FS_DYNAMICPOSTBLFMT
            "fs_old_nrpos" / i32,       # number of rotational positions
            "fs_spare5" / _zeros(t.int32, 2),  # old fs_postbloff, fs_rotbloff
            "fs_magic" / i32,           # FS_UFS1_MAGIC / FS_UFS2_MAGIC
        )

        # fs.h struct cg, without the variable cg_space[] (maps follow at
        # cg_iusedoff, cg_freeoff, cg_clustersumoff, cg_clusteroff).
        self.cg = Struct(
            "cg_firstfield" / i32,
            "cg_magic" / i32,           # CG_MAGIC
            "cg_old_time" / i32,        # time last written (UFS1)
            "cg_cgx" / i32,             # we are the cgx'th cylinder group
            "cg_old_ncyl" / i16,        # number of cyl's this cg (UFS1)
            "cg_old_niblk" / i16,       # number of inodes this cg (UFS1)
            "cg_ndblk" / i32,           # number of data frags this cg
            "cg_cs" / _csum0,           # cylinder summary information
            "cg_rotor" / i32,           # position of last used block
            "cg_frotor" / i32,          # position of last used frag
            "cg_irotor" / i32,          # position of last used inode
            "cg_frsum" / _zeros(t.int32, MAXFRAG),  # counts of available frags
            "cg_old_btotoff" / i32,     # (int32) block totals per cylinder
            "cg_old_boff" / i32,        # (u_int16) free block positions
            "cg_iusedoff" / i32,        # (u_int8) used inode map
            "cg_freeoff" / i32,         # (u_int8) free block map
            "cg_nextfreeoff" / i32,     # (u_int8) next available space
            "cg_clustersumoff" / i32,   # (u_int32) counts of avail clusters
            "cg_clusteroff" / i32,      # (u_int8) free cluster map
            "cg_nclusterblks" / i32,    # number of clusters this cg
            "cg_niblk" / i32,           # number of inodes this cg (UFS2)
            "cg_initediblk" / i32,      # last initialized inode (UFS2)
            "cg_sparecon32" / _zeros(t.int32, 3),
            "cg_time" / i64,            # time last written (UFS2)
            "cg_sparecon64" / _zeros(t.int64, 3),
        )

        # dinode.h struct ufs1_dinode
        self.ufs1_dinode = Struct(
            "di_mode" / u16,            #   0: IFMT, permissions
            "di_nlink" / i16,           #   2: file link count
            "di_oldids" / _zeros(t.uint16, 2),  # 4: 4.2BSD uid, gid
            "di_size" / u64,            #   8: file byte count
            "di_atime" / i32,           #  16
            "di_atimensec" / i32,       #  20
            "di_mtime" / i32,           #  24
            "di_mtimensec" / i32,       #  28
            "di_ctime" / i32,           #  32
            "di_ctimensec" / i32,       #  36
            "di_db" / _zeros(t.int32, UFS_NDADDR),  # 40: direct blocks (di_rdev = di_db[0])
            "di_ib" / _zeros(t.int32, UFS_NIADDR),  # 88: indirect blocks
            "di_flags" / u32,           # 100: chflags
            "di_blocks" / u32,          # 104: DEV_BSIZE sectors actually held
            "di_gen" / i32,             # 108: generation number
            "di_uid" / u32,             # 112: file owner
            "di_gid" / u32,             # 116: file group
            "di_modrev" / u64,          # 120: i_modrev for NFSv4
        )

        # dinode.h struct ufs2_dinode
        self.ufs2_dinode = Struct(
            "di_mode" / u16,            #   0
            "di_nlink" / i16,           #   2
            "di_uid" / u32,             #   4
            "di_gid" / u32,             #   8
            "di_blksize" / u32,         #  12
            "di_size" / u64,            #  16
            "di_blocks" / u64,          #  24: DEV_BSIZE sectors actually held
            "di_atime" / i64,           #  32
            "di_mtime" / i64,           #  40
            "di_ctime" / i64,           #  48
            "di_birthtime" / i64,       #  56
            "di_mtimensec" / i32,       #  64
            "di_atimensec" / i32,       #  68
            "di_ctimensec" / i32,       #  72
            "di_birthnsec" / i32,       #  76
            "di_gen" / i32,             #  80
            "di_kernflags" / u32,       #  84
            "di_flags" / u32,           #  88
            "di_extsize" / i32,         #  92
            "di_extb" / _zeros(t.int64, UFS_NXADDR),  # 96
            "di_db" / _zeros(t.int64, UFS_NDADDR),    # 112 (di_rdev = di_db[0])
            "di_ib" / _zeros(t.int64, UFS_NIADDR),    # 208
            "di_modrev" / u64,          # 232
            "di_spare" / _zeros(t.int64, 2),          # 240
        )

        # dir.h struct direct, header only: d_namlen name bytes and a NUL
        # follow, padded to a multiple of 4 (UFS_DIRECTSIZ).
        self.direct = Struct(
            "d_ino" / u32,              # inode number of entry (d_fileno)
            "d_reclen" / u16,           # length of this record
            "d_type" / u8,              # file type (DT_*)
            "d_namlen" / u8,            # length of string in d_name
        )

        for name, size in _SIZES.items():
            got = getattr(self, name).sizeof()
            assert got == size, f"sizeof(struct {name}) = {got}, expected {size}"

    def dinode(self, ufs2: bool):
        """The construct declaration of the inode of UFS1 or UFS2."""
        return self.ufs2_dinode if ufs2 else self.ufs1_dinode

    def fast(self, name: str) -> FastStruct:
        """The precompiled form of the declaration called ``name``."""
        return _fast_cached(self.byteorder, name)

    def __repr__(self):
        return f"<FFS layout, {self.byteorder} endian>"


# --- Precompiled structs ----------------------------------------------------

# For struct, a declaration is its format characters without the byte-order
# prefix (the same in both orders) and its field tree: per field, in order,
# (name, count, sub, default) -- count None for a scalar or the length of an
# array; sub the field tree of a nested struct, else None; default what
# pack_dict writes for a field a dict leaves out.  Padding is in the format
# but has no field.  _compiled.py stores exactly these.


class FastStruct:
    """A :class:`struct.Struct` for one declaration, from its description.

    ``struct`` packs and unpacks positionally, in :attr:`names` order (arrays
    and nested structs flattened); :meth:`unpack_dict` and :meth:`pack_dict`
    give C-shaped dicts (arrays as lists, nested structs as dicts).
    """

    __slots__ = ("format", "fields", "struct", "size", "names", "byteorder", "_columns")

    def __init__(self, fmt: str, fields: tuple, byteorder: str):
        #: The description: format characters without byte order, field tree.
        self.format = fmt
        self.fields = fields
        self.struct = _struct.Struct(_PREFIX[byteorder] + fmt)
        self.size = self.struct.size
        self.names = tuple(_names(fields))
        self.byteorder = byteorder
        self._columns = None

    def pack_columns(self, columns: dict, count: int) -> bytes:
        """``count`` records from ``columns`` (field name -> ``count``
        values; a field left out is zero): the bytes ``struct.pack`` of each
        row makes, with one strided copy per field instead of a call per
        record.  A value that its field cannot hold raises OverflowError
        (where ``struct.pack`` raises struct.error).  Every field must be an
        integer at an offset that is a multiple of its size (true of the
        inodes this packs)."""
        if self._columns is None:
            self._columns = _column_slots(self.format, self.names, self.size)
        table = bytearray(count * self.size)
        view = memoryview(table)
        swap = self.byteorder != _sys.byteorder
        for name, code, start, step in self._columns:
            values = columns.get(name)
            if values is None or not any(values):
                continue  # the table is zeros already
            column = _array(code, values)
            if swap:
                column.byteswap()
            view.cast(code)[start::step] = column
        return bytes(table)

    def unpack_dict(self, buf, offset: int = 0) -> dict:
        values = iter(self.struct.unpack_from(buf, offset))
        return _regroup(self.fields, values)

    def pack_dict(self, d: dict) -> bytes:
        return self.struct.pack(*_spread(self.fields, d))

    def pack_into_dict(self, buf, offset: int, d: dict) -> None:
        self.struct.pack_into(buf, offset, *_spread(self.fields, d))


def describe(con) -> tuple:
    """The description ``(format, field tree)`` of a construct declaration
    of fixed-size fields (imports construct): the one derivation every
    layout shares, :func:`rumpfs.formats.precompile.describe`."""
    from ..precompile import describe as shared
    return shared(con)


def _byteorder_of(con) -> str:
    from ..precompile import byteorder_of
    return byteorder_of(con)


def _unwrap(con):
    from ..precompile import unwrap
    return unwrap(con)


def _column_slots(fmt: str, names: tuple, size: int) -> list:
    """(name, array typecode, first item, items per record) of each field of
    a format of naturally aligned integers, for :meth:`FastStruct.pack_columns`."""
    slots = []
    offset = 0
    fields = iter(names)
    count = ""
    for char in fmt:
        if char.isdigit():
            count += char
            continue
        if char.isspace():
            continue
        repeat, count = int(count or 1), ""
        width = _struct.calcsize("<" + char)
        if char == "x":
            offset += repeat * width
            continue
        if char not in _STRUCT_INTEGERS:
            raise ValueError(f"format {char!r} is not an integer field")
        typecodes = _ARRAY_SIGNED if char.islower() else _ARRAY_UNSIGNED
        code = next(c for c in typecodes if _array(c).itemsize == width)
        if offset % width or size % width:
            raise ValueError(f"a {width}-byte field at offset {offset} is not aligned")
        for _ in range(repeat):
            slots.append((next(fields), code, offset // width, size // width))
            offset += width
    return slots


#: struct's integer format characters, and array's typecodes to match them with.
_STRUCT_INTEGERS = "bBhHiIlLqQ"
_ARRAY_SIGNED, _ARRAY_UNSIGNED = "bhilq", "BHILQ"


def _names(fields, prefix=""):
    for name, count, sub, _default in fields:
        if sub is not None:
            yield from _names(sub, prefix + name + ".")
        elif count is None:
            yield prefix + name
        else:
            for i in range(count):
                yield f"{prefix}{name}[{i}]"


def _regroup(fields, values) -> dict:
    out = {}
    for name, count, sub, _default in fields:
        if sub is not None:
            out[name] = _regroup(sub, values)
        elif count is None:
            out[name] = next(values)
        else:
            out[name] = [next(values) for _ in range(count)]
    return out


def _spread(fields, d: dict) -> list:
    out = []
    found = 0
    for name, count, sub, default in fields:
        v = d.get(name, _ABSENT)
        if v is _ABSENT:
            v = None
        else:
            found += 1
        if sub is not None:
            out.extend(_spread(sub, v or {}))
        elif count is None:
            out.append(v if v is not None else default)
        else:
            v = list(v or ())
            if len(v) > count:
                raise ValueError(f"{name}: {len(v)} values, at most {count}")
            out.extend(v + [0] * (count - len(v)))
    if found != len(d):
        # A misspelt field would otherwise be packed as its default, silently.
        unknown = sorted(set(d) - {name for name, *_ in fields})
        raise KeyError(f"no field {', '.join(map(repr, unknown))} in this structure")
    return out


#: A field the caller's dict leaves out (None is a value: "the default").
_ABSENT = object()


def fast_struct(con, byteorder: str | None = None) -> FastStruct:
    """Compile a construct declaration of fixed-size fields into a
    :class:`FastStruct`.  The byte order is the declaration's unless given."""
    fmt, fields = describe(con)
    fast = FastStruct(fmt, fields, byteorder or _byteorder_of(con))
    if fast.size != con.sizeof():
        raise AssertionError(f"fast_struct size {fast.size} != {con.sizeof()}")
    return fast


def offsetof(con, path: str) -> int:
    """Byte offset of field ``path`` (``"fs_cstotal.cs_nbfree"``, ``"di_db[3]"``)
    inside a declaration."""
    head, _, rest = path.partition(".")
    index = None
    if head.endswith("]"):
        head, _, idx = head[:-1].partition("[")
        index = int(idx)
    off = 0
    for sc in con.subcons:
        if sc.name == head:
            inner = _unwrap(sc)
            if index is not None:
                return off + index * _unwrap(inner.subcon).sizeof()
            if rest:
                return off + offsetof(inner, rest)
            return off
        off += sc.sizeof()
    raise KeyError(f"no field {path!r}")


# --- The two byte orders ----------------------------------------------------

LITTLE = Layout("little")
BIG = Layout("big")


def structs(byteorder: str) -> Layout:
    """The declarations for ``byteorder`` (``"little"`` or ``"big"``)."""
    if byteorder == "little":
        return LITTLE
    if byteorder == "big":
        return BIG
    raise ValueError(f"byte order must be 'little' or 'big', not {byteorder!r}")


@lru_cache(maxsize=None)
def _generated():
    """``_compiled``, the descriptions generated from these declarations, if
    it was generated from this very source; else None (construct derives)."""
    from ..precompile import load

    return load(__name__, globals().get("__file__"))


@lru_cache(maxsize=None)
def _fast_cached(byteorder: str, name: str) -> FastStruct:
    generated = _generated()
    if generated is None or name not in generated.STRUCTS:
        return fast_struct(getattr(structs(byteorder), name), byteorder)
    fmt, fields, size = generated.STRUCTS[name]
    fast = FastStruct(fmt, fields, byteorder)
    if fast.size != size:  # pragma: no cover - the generator derived both
        raise AssertionError(f"{name}: generated format is {fast.size} bytes, not {size}")
    return fast


#: Numbers derived from the declarations (the same in both byte orders):
#: module attributes computed on first use (:func:`__getattr__`), from
#: ``_compiled.py`` when it is current, else from construct.
_DERIVED = {
    #: sizeof(struct fs) and where fs_magic sits in it.
    "SIZEOF_FS": lambda: LITTLE.fs.sizeof(),
    "FS_MAGIC_OFFSET": lambda: offsetof(LITTLE.fs, "fs_magic"),
    #: sizeof(struct csum): one per cylinder group in the csum area.
    "SIZEOF_CSUM": lambda: LITTLE.csum.sizeof(),
}


def __getattr__(name: str):
    derive = _DERIVED.get(name)
    if derive is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    generated = _generated()
    value = derive() if generated is None else getattr(generated, name)
    globals()[name] = value
    return value


def precompile() -> dict:
    """What ``python -m rumpfs.formats.precompile`` writes into
    ``_compiled.py``, derived from the declarations (imports construct):
    ``STRUCTS``, name -> (format, field tree, size), and the numbers of
    :data:`_DERIVED`."""
    out = {}
    for name in _SIZES:
        desc = describe(getattr(LITTLE, name))
        if describe(getattr(BIG, name)) != desc:
            raise AssertionError(f"struct {name}: the byte orders differ beyond the prefix")
        out[name] = desc + (getattr(LITTLE, name).sizeof(),)
    return {"STRUCTS": out, **{name: derive() for name, derive in _DERIVED.items()}}


# --- Formulas shared by writer and checker ----------------------------------


def maxsymlinklen(ufs2: bool) -> int:
    """fs_maxsymlinklen: targets shorter than this live in the inode."""
    return MAXSYMLINKLEN_UFS2 if ufs2 else MAXSYMLINKLEN_UFS1


def dinode_size(ufs2: bool) -> int:
    return DINODE2_SIZE if ufs2 else DINODE1_SIZE


def nindir(bsize: int, ufs2: bool) -> int:
    """Block pointers in one indirect block (fs_nindir)."""
    return bsize // (8 if ufs2 else 4)


def maxfilesize(bsize: int, ufs2: bool) -> int:
    """fs_maxfilesize as newfs computes it and fsck_ffs expects it:
    the bytes addressable through the direct and the three indirect levels,
    minus one."""
    n = nindir(bsize, ufs2)
    size = bsize * UFS_NDADDR - 1
    per = bsize
    for _ in range(UFS_NIADDR):
        per *= n
        size += per
    return size


def contigsumsize(maxcontig: int) -> int:
    """fs_contigsumsize for a given fs_maxcontig (newfs: MIN(maxcontig,
    FS_MAXCONTIG), none when clustering is off)."""
    return min(maxcontig, FS_MAXCONTIG) if maxcontig > 1 else 0


def howmany(x: int, y: int) -> int:
    return (x + y - 1) // y


def roundup(x: int, y: int) -> int:
    return howmany(x, y) * y


#: Where the maps of a cg block start: right after the fixed part.
CG_SPACE_OFFSET = 168


def cg_map_offsets(ufs2: bool, ipg: int, fpg: int, frag: int, contigsum: int,
                   old_cpg: int = 1, old_nrpos: int = 1) -> dict:
    """The map offsets of a cylinder group block, computed the way newfs's
    ``initcg`` and fsck_ffs's pass 5 do (every cg has the same offsets):
    ``cg_old_btotoff``, ``cg_old_boff``, ``cg_iusedoff``, ``cg_freeoff``,
    ``cg_clustersumoff``, ``cg_clusteroff``, ``cg_nextfreeoff``."""
    start = CG_SPACE_OFFSET
    out = {"cg_old_btotoff": 0, "cg_old_boff": 0,
           "cg_clustersumoff": 0, "cg_clusteroff": 0}
    if ufs2:
        out["cg_iusedoff"] = start
    else:
        # The 4.4BSD rotational tables are kept (zeroed) for UFS1.
        out["cg_old_btotoff"] = start
        out["cg_old_boff"] = start + 4 * old_cpg
        out["cg_iusedoff"] = out["cg_old_boff"] + 2 * old_cpg * old_nrpos
    out["cg_freeoff"] = out["cg_iusedoff"] + howmany(ipg, NBBY)
    if contigsum <= 0:
        out["cg_nextfreeoff"] = out["cg_freeoff"] + howmany(fpg, NBBY)
    else:
        clustersum = roundup(out["cg_freeoff"] + howmany(fpg, NBBY) - 4, 4)
        out["cg_clustersumoff"] = clustersum
        out["cg_clusteroff"] = clustersum + 4 * (contigsum + 1)
        out["cg_nextfreeoff"] = out["cg_clusteroff"] + howmany(fpg // frag, NBBY)
    return out


#: sizeof(struct cg) as a C compiler on LP64 sees it (168 + cg_space[1],
#: padded to 8): CGSIZE uses it, so fs_cgsize depends on it.
SIZEOF_STRUCT_CG = 176


def cgsize(ipg: int, fpg: int, frag: int, contigsum: int, old_cpg: int) -> int:
    """fs.h CGSIZE_IF: bytes a cg block needs (before fragment rounding).
    ``old_cpg`` is 1 for UFS1 (newfs) and 0 for UFS2 in NetBSD's newfs."""
    size = (SIZEOF_STRUCT_CG + 4 + old_cpg * 4 + old_cpg * 2
            + howmany(ipg, NBBY) + howmany(fpg, NBBY))
    if contigsum > 0:
        size += contigsum * 4 + howmany(fpg // frag, NBBY)
    return size


def ilog2(x: int) -> int:
    """log2 of a power of two (fs_bshift, fs_fshift, fs_fragshift, fs_fsbtodb)."""
    if x <= 0 or x & (x - 1):
        raise ValueError(f"{x} is not a power of two")
    return x.bit_length() - 1


__all__ = [name for name in dir() if not name.startswith("_")] + list(_DERIVED)
