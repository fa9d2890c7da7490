"""Reading NetBSD FFS images (UFS1 and UFS2, either byte order).

The reader finds the superblock the way NetBSD's ``ffs_mountfs`` does
(``SBLOCKSEARCH``: 65536, 8192, 0, 262144, each tried in both byte orders;
a superblock counts only where its ``fs_sblockloc`` says it lives), then
reads inodes, block maps and directories straight from the image file with
``pread`` -- nothing is loaded whole.

Interface used by ``rumpfs/formats/ffs/__init__.py`` (owned by the writer
side): ``probe(f, offset, size) -> bool`` (any FFS version),
``probe_version(f, offset, size) -> 1 | 2 | None`` and
``FfsReader(f, offset, size)``; ``FfsReader.check()`` runs the fsck-grade
checker of :mod:`.check`.

Entries are reported in directory order (the order of the entries on disk),
root first, each directory before its contents; the root has path ``b""``.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import BinaryIO, Iterator

from ...errors import RumpfsError
from .. import Entry, ImageReader
from . import layout as L

#: Read files in pieces of at most this many bytes.
_CHUNK = 1 << 20


class Superblock:
    """Where a superblock was found and what it says (a dict of its fields)."""

    def __init__(self, loc: int, byteorder: str, fields: dict):
        self.loc = loc
        self.byteorder = byteorder
        self.fields = fields
        self.ufs2 = fields["fs_magic"] == L.FS_UFS2_MAGIC

    def __getitem__(self, name):
        return self.fields[name]


def _pread(f: BinaryIO, n: int, pos: int) -> bytes:
    try:
        return os.pread(f.fileno(), n, pos)
    except (AttributeError, OSError, ValueError):
        f.seek(pos)
        return f.read(n)


def _plausible(sb: dict) -> bool:
    """The superblock sanity tests of ffs_superblock_validate that decide
    whether the magic number was a coincidence."""
    bsize, fsize = sb["fs_bsize"], sb["fs_fsize"]
    if not (L.MINBSIZE <= bsize <= L.MAXBSIZE) or bsize & (bsize - 1):
        return False
    if fsize <= 0 or fsize & (fsize - 1) or fsize > bsize:
        return False
    if not (0 < bsize // fsize <= L.MAXFRAG):
        return False
    if not (L.SIZEOF_FS <= sb["fs_sbsize"] <= L.SBLOCKSIZE):
        return False
    return sb["fs_ncg"] > 0 and sb["fs_ipg"] > 0 and sb["fs_fpg"] > 0


def find_superblock(f: BinaryIO, offset: int = 0, size: int | None = None) -> Superblock | None:
    """The primary superblock of the FFS image at ``offset`` of ``f``, or None."""
    for loc in L.SBLOCKSEARCH:
        if size is not None and loc + L.SIZEOF_FS > size:
            continue
        raw = _pread(f, L.SIZEOF_FS, offset + loc)
        if len(raw) < L.SIZEOF_FS:
            continue
        for byteorder in ("little", "big"):
            magic = int.from_bytes(raw[L.FS_MAGIC_OFFSET:L.FS_MAGIC_OFFSET + 4], byteorder)
            if magic not in (L.FS_UFS1_MAGIC, L.FS_UFS2_MAGIC):
                continue
            sb = L.structs(byteorder).fast("fs").unpack_dict(raw)
            if not _plausible(sb):
                continue
            updated = sb["fs_old_flags"] & L.FS_FLAGS_UPDATED
            if magic == L.FS_UFS1_MAGIC and not updated:
                # Old UFS1 superblocks do not record their place; one at
                # 64 KiB is the first copy of a 64 KiB-block file system.
                if loc == L.SBLOCK_UFS2:
                    continue
            elif sb["fs_sblockloc"] != loc:
                continue
            return Superblock(loc, byteorder, sb)
    return None


def probe_version(f: BinaryIO, offset: int, size: int) -> int | None:
    """1 or 2 for a UFS1 or UFS2 image at ``offset``, None when none is there."""
    sb = find_superblock(f, offset, size)
    if sb is None:
        return None
    return 2 if sb.ufs2 else 1


def probe(f: BinaryIO, offset: int, size: int) -> bool:
    return find_superblock(f, offset, size) is not None


def decode_rdev(raw: int) -> int:
    """A device number as NetBSD stores it (``makedev``: major in bits 8-19,
    minor in bits 0-7 and 20-31) as a host ``st_rdev``."""
    raw &= 0xFFFFFFFF
    major = (raw >> 8) & 0xFFF
    minor = (raw & 0xFF) | ((raw >> 12) & 0xFFF00)
    return os.makedev(major, minor)


class FfsReader(ImageReader):
    """An FFS image inside ``f`` at ``offset`` (``size`` bytes available)."""

    def __init__(self, f: BinaryIO, offset: int = 0, size: int | None = None):
        self.f = f
        self.offset = offset
        if size is None:
            size = os.fstat(f.fileno()).st_size - offset
        self.size = size
        sb = find_superblock(f, offset, size)
        if sb is None:
            raise RumpfsError(f"{getattr(f, 'name', 'image')}: no FFS superblock at "
                              f"{', '.join(map(str, L.SBLOCKSEARCH))}")
        self.sb = sb
        self.fs = sb.fields
        self.ufs2 = sb.ufs2
        self.byteorder = sb.byteorder
        self.layout = L.structs(sb.byteorder)
        self.format_name = "ffs2" if self.ufs2 else "ffs"
        fs = self.fs
        self.bsize = fs["fs_bsize"]
        self.fsize = fs["fs_fsize"]
        self.frag = fs["fs_frag"]
        self.ncg = fs["fs_ncg"]
        self.ipg = fs["fs_ipg"]
        self.fpg = fs["fs_fpg"]
        self.inopb = fs["fs_inopb"]
        self.nindir = fs["fs_nindir"]
        self.dinode = self.layout.fast("ufs2_dinode" if self.ufs2 else "ufs1_dinode")
        self.direct = self.layout.fast("direct")
        order = "<" if sb.byteorder == "little" else ">"
        #: An indirect block: fs_nindir block pointers (int32 UFS1, int64 UFS2).
        self._indir = struct.Struct(f"{order}{self.nindir}{'q' if self.ufs2 else 'l'}")
        #: di_db and di_ib as the bytes of a fast symlink's target.
        self._inline = struct.Struct(f"{order}{L.UFS_NDADDR + L.UFS_NIADDR}{'q' if self.ufs2 else 'l'}")
        self.maxino = self.ncg * self.ipg

    # --- raw access ---------------------------------------------------------

    def pread(self, n: int, pos: int) -> bytes:
        """``n`` bytes at image offset ``pos`` (short at the end of the file)."""
        return _pread(self.f, n, self.offset + pos)

    def read_frags(self, addr: int, nbytes: int) -> bytes:
        data = self.pread(nbytes, addr * self.fsize)
        if len(data) < nbytes:
            raise RumpfsError(f"fragment {addr}: beyond the end of the image "
                              f"({self.size} bytes)")
        return data

    def cgstart(self, c: int) -> int:
        """First fragment of cylinder group ``c`` (fs.h cgstart)."""
        base = self.fpg * c
        if self.ufs2:
            return base
        return base + self.fs["fs_old_cgoffset"] * (c & ~self.fs["fs_old_cgmask"])

    def inode_offset(self, ino: int) -> int:
        """Byte offset of inode ``ino`` in the image (fs.h ino_to_fsba/fsbo)."""
        c, i = divmod(ino, self.ipg)
        frag = self.cgstart(c) + self.fs["fs_iblkno"] + (i // self.inopb) * self.frag
        return frag * self.fsize + (i % self.inopb) * self.dinode.size

    def inode(self, ino: int) -> dict:
        if not 0 <= ino < self.maxino:
            raise RumpfsError(f"inode {ino} out of range (0..{self.maxino - 1})")
        raw = self.pread(self.dinode.size, self.inode_offset(ino))
        return self.dinode.unpack_dict(raw)

    def pointers(self, addr: int) -> tuple:
        """The block pointers held by the indirect block at fragment ``addr``."""
        return self._indir.unpack(self.read_frags(addr, self.bsize))

    # --- block maps ---------------------------------------------------------

    def blksize(self, size: int, lbn: int) -> int:
        """Bytes of logical block ``lbn`` of a file of ``size`` bytes (fs.h
        sblksize): full blocks except a direct last block, which ends at the
        fragment boundary."""
        if lbn >= L.UFS_NDADDR or size >= (lbn + 1) * self.bsize:
            return self.bsize
        rest = size % self.bsize
        return (rest + self.fsize - 1) // self.fsize * self.fsize

    def block_map(self, din: dict, indirect=None) -> Iterator[tuple[int, int, int]]:
        """``(lbn, addr, count)`` runs of data blocks of an inode in logical
        order: ``addr`` 0 is a hole of ``count`` blocks, otherwise ``count``
        is 1.  ``indirect(level, addr, lbn)`` is called for every indirect
        block met (level 1..3)."""
        nblocks = (din["di_size"] + self.bsize - 1) // self.bsize
        db = din["di_db"]
        for lbn in range(min(nblocks, L.UFS_NDADDR)):
            yield lbn, db[lbn], 1
        lbn = L.UFS_NDADDR
        span = 1
        for level in range(1, L.UFS_NIADDR + 1):
            span *= self.nindir
            if lbn >= nblocks:
                return
            yield from self._indirect(din["di_ib"][level - 1], level, lbn, span,
                                      nblocks, indirect)
            lbn += span

    def _indirect(self, addr, level, lbn, span, nblocks, indirect):
        count = min(span, nblocks - lbn)
        if addr == 0:
            yield lbn, 0, count
            return
        if indirect is not None:
            indirect(level, addr, lbn)
        ptrs = self.pointers(addr)
        sub = span // self.nindir
        for p in ptrs:
            if lbn >= nblocks:
                return
            if level == 1:
                yield lbn, p, 1
            else:
                yield from self._indirect(p, level - 1, lbn, sub, nblocks, indirect)
            lbn += sub

    def data(self, din: dict) -> Iterator[bytes]:
        """The bytes of an inode's data, in chunks; holes read as zeros."""
        size = din["di_size"]
        left = size
        for lbn, addr, count in self.block_map(din):
            if left <= 0:
                return
            if addr == 0:
                n = min(count * self.bsize, left)
                left -= n
                while n:
                    piece = min(n, _CHUNK)
                    yield bytes(piece)
                    n -= piece
                continue
            n = min(self.blksize(size, lbn), left)
            yield self.read_frags(addr, self.blksize(size, lbn))[:n]
            left -= n

    # --- directories --------------------------------------------------------

    def dir_entries(self, din: dict) -> Iterator[tuple[int, int, bytes, int]]:
        """``(d_ino, d_type, name, byte offset in the directory)`` of the live
        entries of a directory inode."""
        pos = 0
        hdr = self.direct
        for chunk in self.data(din):
            for base in range(0, len(chunk), L.DIRBLKSIZ):
                block = chunk[base:base + L.DIRBLKSIZ]
                off = 0
                while off + L.DIRECT_HEADER_SIZE <= len(block):
                    d = hdr.unpack_dict(block, off)
                    reclen = d["d_reclen"]
                    if reclen < L.DIRECT_HEADER_SIZE or off + reclen > len(block):
                        raise RumpfsError(f"corrupt directory entry at byte {pos + base + off} "
                                          f"(d_reclen {reclen})")
                    if d["d_ino"]:
                        start = off + L.DIRECT_HEADER_SIZE
                        name = block[start:start + d["d_namlen"]]
                        yield d["d_ino"], d["d_type"], name, pos + base + off
                    off += reclen
            pos += len(chunk)

    # --- ImageReader --------------------------------------------------------

    def _entry(self, path: bytes, ino: int, din: dict) -> Entry:
        mode = din["di_mode"]
        kind = stat.S_IFMT(mode)
        target = None
        rdev = 0
        if kind == stat.S_IFLNK:
            target = self.symlink_target(din)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            rdev = decode_rdev(din["di_db"][0])
        return Entry(path=path, mode=mode, uid=din["di_uid"], gid=din["di_gid"], size=din["di_size"],
                     mtime_ns=din["di_mtime"] * 1_000_000_000 + din["di_mtimensec"],
                     nlink=din["di_nlink"], target=target, rdev=rdev, ino=ino)

    def symlink_target(self, din: dict) -> bytes:
        size = din["di_size"]
        if self.is_fast_symlink(din):
            return self._inline.pack(*din["di_db"], *din["di_ib"])[:size]
        return b"".join(self.data(din))[:size]

    def is_fast_symlink(self, din: dict) -> bool:
        """A symlink whose target lives in the inode (the kernel's test:
        shorter than fs_maxsymlinklen, or no blocks at all)."""
        return (din["di_size"] < self.fs["fs_maxsymlinklen"]
                or (self.fs["fs_maxsymlinklen"] > 0 and din["di_blocks"] == 0))

    def entries(self) -> Iterator[Entry]:
        first_name: dict[int, bytes] = {}
        root = self.inode(L.UFS_ROOTINO)
        yield self._entry(b"", L.UFS_ROOTINO, root)
        stack = [(b"", root, {L.UFS_ROOTINO})]
        while stack:
            path, din, ancestors = stack.pop()
            subdirs = []
            for ino, _dtype, name, _off in self.dir_entries(din):
                if name in (b".", b".."):
                    continue
                child_path = path + b"/" + name if path else name
                child = self.inode(ino)
                e = self._entry(child_path, ino, child)
                if stat.S_ISDIR(child["di_mode"]):
                    if ino in ancestors:
                        raise RumpfsError(f"{child_path!r}: directory loop (inode {ino})")
                    yield e
                    subdirs.append((child_path, child, ancestors | {ino}))
                    continue
                if e.nlink > 1:
                    e.link_of = first_name.get(ino)
                    if e.link_of is None:
                        first_name[ino] = child_path
                yield e
            # Pre-order: the first subdirectory's contents come next.
            for item in reversed(subdirs):
                stack.append(item)

    def read(self, entry: Entry) -> Iterator[bytes]:
        din = self.inode(entry.ino) if entry.ino else self.inode(self.find(entry.path).ino)
        if not stat.S_ISREG(din["di_mode"]):
            raise RumpfsError(f"{entry.path!r}: not a regular file")
        yield from self.data(din)

    def info(self) -> dict:
        fs = self.fs
        total = fs["fs_cstotal"]
        label = fs["fs_volname"].split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
        return {
            "format": self.format_name,
            "version": "UFS2" if self.ufs2 else "UFS1",
            "byteorder": self.byteorder,
            "superblock": self.sb.loc,
            "fs_bytes": fs["fs_size"] * self.fsize,
            "bsize": self.bsize,
            "fsize": self.fsize,
            "ncg": self.ncg,
            "ipg": self.ipg,
            "fpg": self.fpg,
            "inodes": self.maxino,
            "free_inodes": total["cs_nifree"],
            "free_blocks": total["cs_nbfree"],
            "free_frags": total["cs_nffree"],
            "free_bytes": (total["cs_nbfree"] * self.frag + total["cs_nffree"]) * self.fsize,
            "directories": total["cs_ndir"],
            "minfree": fs["fs_minfree"],
            "optimization": "space" if fs["fs_optim"] == L.FS_OPTSPACE else "time",
            "clean": bool(fs["fs_clean"] & L.FS_ISCLEAN),
            "label": label,
            "time": fs["fs_time"],
        }

    def check(self) -> list[str]:
        from .check import check
        return check(self)


__all__ = ["FfsReader", "Superblock", "find_superblock", "probe", "probe_version", "decode_rdev"]
