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

import io
import os
import stat
import struct
from typing import BinaryIO, Iterator

from .. import Entry, ImageReader, file_name, show
from . import layout as L

#: Read files in pieces of at most this many bytes.
_CHUNK = 1 << 20
#: What a hole reads as, one piece at a time (shared: holes cost no memory).
_ZEROS = bytes(_CHUNK)
#: Longest symlink target read (Linux PATH_MAX; NetBSD's MAXPATHLEN is 1024).
MAX_SYMLINK = 4096


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
    if n <= 0 or pos < 0:
        return b""
    try:
        return os.pread(f.fileno(), n, pos)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
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
        self.name = file_name(f)
        self.offset = offset
        if size is None:
            size = os.fstat(f.fileno()).st_size - offset
        self.size = size
        sb = find_superblock(f, offset, size)
        if sb is None:
            raise self.error(f"no FFS superblock at {', '.join(map(str, L.SBLOCKSEARCH))}")
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
        self._validate()
        order = "<" if sb.byteorder == "little" else ">"
        #: An indirect block: fs_nindir block pointers (int32 UFS1, int64 UFS2).
        self._indir = struct.Struct(f"{order}{self.nindir}{'q' if self.ufs2 else 'l'}")
        #: di_db and di_ib as the bytes of a fast symlink's target.
        self._inline = struct.Struct(f"{order}{L.UFS_NDADDR + L.UFS_NIADDR}{'q' if self.ufs2 else 'l'}")
        self.maxino = self.ncg * self.ipg

    def _validate(self) -> None:
        """What the reader itself relies on, checked before any of it is used
        to compute an offset, a loop count or a struct format (``check``
        reports everything else)."""
        fs, ufs2 = self.fs, self.ufs2
        where = f"ffs superblock at {self.sb.loc}"
        derived = (("fs_frag", self.bsize // self.fsize), ("fs_nindir", L.nindir(self.bsize, ufs2)),
                   ("fs_inopb", self.bsize // L.dinode_size(ufs2)))
        for field, want in derived:
            if fs[field] != want:
                raise self.error(f"{where}: {field} {fs[field]} does not match fs_bsize "
                                 f"{self.bsize} and fs_fsize {self.fsize} (expected {want})")
        if self.fpg % self.frag:
            raise self.error(f"{where}: fs_fpg {self.fpg} is not a whole number of "
                             f"{self.frag}-fragment blocks")
        # A cylinder group's maps (a bit per fragment, a bit per inode) live
        # in its one cg block.
        for field, value in (("fs_fpg", self.fpg), ("fs_ipg", self.ipg)):
            if value > self.bsize * L.NBBY:
                raise self.error(f"{where}: {field} {value} is more than the {self.bsize}-byte "
                                 f"cylinder group block can map ({self.bsize * L.NBBY})")
        frags = self.size // self.fsize
        if self.ncg > L.howmany(frags, self.fpg):
            raise self.error(f"{where}: fs_ncg {self.ncg} cylinder groups of {self.fpg} "
                             f"fragments do not fit in {self.size} bytes")
        if not 0 <= fs["fs_iblkno"] < self.fpg:
            raise self.error(f"{where}: fs_iblkno {fs['fs_iblkno']} is outside the "
                             f"{self.fpg} fragments of a cylinder group")
        if fs["fs_iblkno"] + L.howmany(self.ipg, self.inopb) * self.frag > self.fpg:
            raise self.error(f"{where}: fs_ipg {self.ipg} inodes from fragment "
                             f"{fs['fs_iblkno']} do not fit in a cylinder group of "
                             f"{self.fpg} fragments")
        last = self.cgstart(self.ncg - 1) + fs["fs_iblkno"] + \
            L.howmany(self.ipg, self.inopb) * self.frag
        if last > frags:
            raise self.error(f"{where}: the inodes of cylinder group {self.ncg - 1} end at "
                             f"fragment {last}, beyond the image ({frags} fragments)")
        inline = (L.UFS_NDADDR + L.UFS_NIADDR) * (8 if ufs2 else 4)
        if not 0 <= fs["fs_maxsymlinklen"] <= inline:
            raise self.error(f"{where}: fs_maxsymlinklen {fs['fs_maxsymlinklen']} out of "
                             f"range 0..{inline}")

    # --- raw access ---------------------------------------------------------

    def pread(self, n: int, pos: int) -> bytes:
        """``n`` bytes at image offset ``pos``, short at the end of the image
        (never more than the image holds is asked of the file)."""
        n = min(n, self.size - pos)
        if n <= 0 or pos < 0:
            return b""
        return _pread(self.f, n, self.offset + pos)

    def read_frags(self, addr: int, nbytes: int) -> bytes:
        data = self.pread(nbytes, addr * self.fsize)
        if len(data) < nbytes:
            raise self.error(f"fragment {addr}: beyond the end of the image "
                             f"({self.size} bytes)")
        return data

    def max_file_size(self) -> int:
        """Largest di_size a file may have (UFS1: 2**31 blocks, as fsck)."""
        if self.ufs2:
            return L.maxfilesize(self.bsize, True)
        return min(L.maxfilesize(self.bsize, False), 0x80000000 * self.bsize - 1)

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
            raise self.error(f"inode {ino} out of range (0..{self.maxino - 1})")
        pos = self.inode_offset(ino)
        raw = self.pread(self.dinode.size, pos)
        if len(raw) < self.dinode.size:
            raise self.error(f"inode {ino} at byte {pos} is beyond the end of the image "
                             f"({self.size} bytes)")
        din = self.dinode.unpack_dict(raw)
        if din["di_size"] > self.max_file_size():
            raise self.error(f"inode {ino}: di_size {din['di_size']} exceeds the largest "
                             f"file size {self.max_file_size()}")
        return din

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

    def bmap(self, din: dict, lbn: int) -> int:
        """The fragment address of logical block ``lbn`` of an inode, 0 for a
        hole (ufs_bmaparray: one pointer read per indirect level)."""
        if lbn < L.UFS_NDADDR:
            return din["di_db"][lbn]
        lbn -= L.UFS_NDADDR
        span = 1
        for level in range(1, L.UFS_NIADDR + 1):
            span *= self.nindir
            if lbn < span:
                addr = din["di_ib"][level - 1]
                while addr and span > 1:
                    span //= self.nindir
                    slot, lbn = divmod(lbn, span)
                    addr = self.pointers(addr)[slot]
                return addr
            lbn -= span
        raise self.error(f"logical block {lbn} is beyond what an inode maps")

    def last_block_hole(self, din: dict) -> int | None:
        """The logical block holding the last byte of the file when it is a
        hole, else None.  Every BSD kernel allocates a file's last byte
        (ffs_truncate: "We must ensure that the last byte of the file is
        allocated"), and FreeBSD's fsck_ffs calls a size past the last
        allocated block "FILE SIZE BEYOND END OF ALLOCATED FILE": a size that
        ends in a hole is a corrupted one (it would stream terabytes of
        zeros), not a sparse file."""
        size = din["di_size"]
        if size <= 0:
            return None
        last = (size - 1) // self.bsize
        return last if self.bmap(din, last) == 0 else None

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

    def data(self, din: dict, limit: int | None = None) -> Iterator[bytes]:
        """The bytes of an inode's data, in chunks; holes read as zeros.
        At most ``limit`` bytes (default: all of ``di_size``)."""
        size = din["di_size"]
        left = size if limit is None else min(size, limit)
        # Blocks read (data and indirect) can be no more than the image holds:
        # a block map that claims more repeats blocks, and would stream a
        # terabyte out of a small image.
        budget = self.size

        def spend(level, addr, lbn):
            nonlocal budget
            budget -= self.bsize
            if budget < 0:
                raise self.error(f"inode block map addresses more blocks than the image "
                                 f"holds ({self.size} bytes): blocks are repeated")

        for lbn, addr, count in self.block_map(din, spend):
            if left <= 0:
                return
            if addr == 0:
                n = min(count * self.bsize, left)
                left -= n
                while n:
                    piece = min(n, _CHUNK)
                    yield _ZEROS if piece == _CHUNK else _ZEROS[:piece]
                    n -= piece
                continue
            nbytes = self.blksize(size, lbn)
            spend(0, addr, lbn)
            n = min(nbytes, left)
            yield self.read_frags(addr, nbytes)[:n]
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
                        raise self.error(f"corrupt directory entry at byte {pos + base + off} "
                                         f"(d_reclen {reclen})")
                    if d["d_ino"]:
                        start = off + L.DIRECT_HEADER_SIZE
                        namlen = d["d_namlen"]
                        name = block[start:start + namlen]
                        if not namlen or L.DIRECT_HEADER_SIZE + namlen > reclen:
                            raise self.error(f"corrupt directory entry at byte "
                                             f"{pos + base + off}: d_namlen {namlen} with "
                                             f"d_reclen {reclen}")
                        if b"/" in name or b"\0" in name:
                            raise self.error(f"corrupt directory entry at byte "
                                             f"{pos + base + off}: name '{show(name)}' has "
                                             f"a '/' or a NUL byte")
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
            target = self._target(ino, din)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            rdev = decode_rdev(din["di_db"][0])
        return Entry(path=path, mode=mode, uid=din["di_uid"], gid=din["di_gid"], size=din["di_size"],
                     mtime_ns=din["di_mtime"] * 1_000_000_000 + din["di_mtimensec"],
                     nlink=din["di_nlink"], target=target, rdev=rdev, ino=ino)

    def symlink_target(self, din: dict) -> bytes:
        size = din["di_size"]
        if self.is_fast_symlink(din):
            return self._inline.pack(*din["di_db"], *din["di_ib"])[:size]
        if size > MAX_SYMLINK:
            raise self.error(f"symlink target of {size} bytes (at most {MAX_SYMLINK})")
        return b"".join(self.data(din))[:size]

    def _target(self, ino: int, din: dict) -> bytes:
        target = self.symlink_target(din)
        if b"\0" in target:
            raise self.error(f"inode {ino}: symlink target '{show(target)}' has a NUL byte")
        return target

    def is_fast_symlink(self, din: dict) -> bool:
        """A symlink whose target lives in the inode (the kernel's test:
        shorter than fs_maxsymlinklen, or no blocks at all)."""
        return (din["di_size"] < self.fs["fs_maxsymlinklen"]
                or (self.fs["fs_maxsymlinklen"] > 0 and din["di_blocks"] == 0))

    def entries(self) -> Iterator[Entry]:
        first_name: dict[int, bytes] = {}
        root = self.inode(L.UFS_ROOTINO)
        if not stat.S_ISDIR(root["di_mode"]):
            raise self.error(f"the root inode {L.UFS_ROOTINO} is not a directory "
                             f"(di_mode {root['di_mode']:#o})")
        yield self._entry(b"", L.UFS_ROOTINO, root)
        stack = [(b"", root)]
        seen_dirs = {L.UFS_ROOTINO}
        # All directories together hold no more than the image: each block
        # belongs to one directory.
        budget = self.size
        while stack:
            path, din = stack.pop()
            budget -= din["di_size"]
            if budget < 0:
                raise self.error(f"/{show(path)}: the directories hold more data "
                                 f"than the image ({self.size} bytes): blocks are shared")
            subdirs = []
            for ino, _dtype, name, _off in self.dir_entries(din):
                if name in (b".", b".."):
                    continue
                child_path = path + b"/" + name if path else name
                child = self.inode(ino)
                e = self._entry(child_path, ino, child)
                if stat.S_ISDIR(child["di_mode"]):
                    if ino in seen_dirs:
                        raise self.error(f"/{show(child_path)}: directory inode {ino} "
                                         f"has a second name (or a loop)")
                    seen_dirs.add(ino)
                    yield e
                    subdirs.append((child_path, child))
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
        ino = entry.ino or self.find(entry.path).ino
        din = self.inode(ino)
        if not stat.S_ISREG(din["di_mode"]):
            raise self.error(f"/{show(entry.path)}: not a regular file")
        hole = self.last_block_hole(din)
        if hole is not None:
            raise self.error(self.size_past_end(entry.path, ino, din["di_size"], hole))
        yield from self.data(din)

    def size_past_end(self, path: bytes, ino: int, size: int, lbn: int) -> str:
        """What is wrong with a file whose last block is a hole (the reader's
        and the checker's words)."""
        return (f"/{show(path)}: inode {ino}: di_size {size} is beyond the end of the "
                f"allocated file (block {lbn}, which would hold its last byte, is a hole)")

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
