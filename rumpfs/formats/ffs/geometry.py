"""Exact sizing of an FFS image: block and fragment sizes, cylinder groups,
inodes per group, and the byte ranges every part of the image occupies.

NetBSD's makefs guesses the image size and then lets newfs's ``mkfs`` lay it
out; the guess leaves out indirect blocks, the cylinder-group blocks and the
csum area, so small and very full trees fail.  Here it is the other way round:
the writer first *plans* the tree (how many full blocks, how many fragment
tails, how many inodes -- :class:`Need`), then :func:`solve` picks the
smallest layout that holds exactly that, using the formulas of
``sys/ufs/ffs/fs.h`` (``CGSIZE``, ``cgbase``, ``cgdmin``...) through
:mod:`.layout`.

The layout of one cylinder group, in fragments from its start (fs.h names)::

    0 .. sblkno            cg 0: boot area and primary superblock;
                           other cgs: free data (left free, never allocated)
    sblkno                 a copy of the superblock (SBLOCKSIZE)
    cblkno                 the cylinder group block (one full block)
    iblkno                 ipg inodes (ipg / inopb blocks)
    dblkno .. end          data blocks

All data blocks of the image are numbered 0, 1, 2, ... in cylinder-group
order ("data block index"); the writer allocates in that order, so the used
space is a prefix of it and the rest stays free (a hole in the output file).
"""

from __future__ import annotations

import math

from ...errors import RumpfsError
from . import layout as L
from .layout import howmany, roundup

#: makefs's and newfs's defaults.
DEFAULT_BSIZE = 8192
DEFAULT_FRAGS_PER_BLOCK = 8
#: newfs: fs_maxcontig = MAXPHYS / bsize (clusters of up to 64 KiB).
MAXPHYS = 65536
#: UFS1 keeps ipg in cg_old_niblk, a 16-bit field: stay below its limit.
UFS1_MAX_IPG = 0x7FFF
#: Largest fs_size of UFS1 (32-bit fragment numbers in inodes and fs_old_size).
UFS1_MAX_FRAGS = 0x7FFFFFFF
#: The smallest image every BSD kernel mounts: NetBSD and FreeBSD probe the
#: superblock locations in turn (fs.h SBLOCKSEARCH, UFS2's at 65536 first),
#: and a read past the end of the device aborts the mount (fsck: "CANNOT
#: READ: BLK 128").  So an image covers 64 KiB plus one superblock; in a UFS1
#: image that candidate is free space, zeros, which no probe takes for a
#: superblock.
MIN_IMAGE_BYTES = L.SBLOCK_UFS2 + L.SBLOCKSIZE
#: Largest cylinder-group count tried before giving up.
MAX_NCG = 1 << 20


def _power_of_two(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


class Params:
    """The choices that do not depend on the tree: version, block and fragment
    sizes, and the superblock fields newfs derives from them."""

    def __init__(self, ufs2: bool, bsize: int | None = None, fsize: int | None = None):
        bsize = bsize or DEFAULT_BSIZE
        if not _power_of_two(bsize) or not L.MINBSIZE <= bsize <= L.MAXBSIZE:
            raise RumpfsError(f"--block-size {bsize}: must be a power of two from "
                              f"{L.MINBSIZE} to {L.MAXBSIZE}")
        if fsize is None:
            fsize = max(bsize // DEFAULT_FRAGS_PER_BLOCK, L.DEV_BSIZE)
        if (not _power_of_two(fsize) or fsize < L.DEV_BSIZE or fsize > bsize
                or bsize // fsize > L.MAXFRAG):
            raise RumpfsError(f"--frag-size {fsize}: must be a power of two from "
                              f"{max(L.DEV_BSIZE, bsize // L.MAXFRAG)} to {bsize} "
                              f"(block size {bsize}, at most {L.MAXFRAG} fragments a block)")
        self.ufs2 = ufs2
        self.bsize = bsize
        self.fsize = fsize
        self.frag = bsize // fsize
        self.isize = L.dinode_size(ufs2)
        self.inopb = bsize // self.isize
        self.nindir = L.nindir(bsize, ufs2)
        self.sblockloc = L.SBLOCK_UFS2 if ufs2 else L.SBLOCK_UFS1
        # newfs mkfs(): the superblock copy follows the area that holds the
        # primary one; then the cg block, then the inodes.
        self.sblkno = roundup(howmany(self.sblockloc + L.SBLOCKSIZE, fsize), self.frag)
        self.cblkno = self.sblkno + roundup(howmany(L.SBLOCKSIZE, fsize), self.frag)
        self.iblkno = self.cblkno + self.frag
        self.maxcontig = max(1, MAXPHYS // bsize)
        self.contigsumsize = L.contigsumsize(self.maxcontig)
        self.old_cpg = 0 if ufs2 else 1
        self.maxsymlinklen = L.maxsymlinklen(ufs2)
        self.maxfilesize = L.maxfilesize(bsize, ufs2)
        self.sectors_per_frag = fsize // L.DEV_BSIZE
        self.max_ipg = None if ufs2 else UFS1_MAX_IPG // self.inopb * self.inopb

    def ipg_for(self, ninodes: int, ncg: int) -> int:
        """Inodes per group so ``ncg`` groups hold ``ninodes`` (whole inode blocks)."""
        return roundup(howmany(ninodes, ncg), self.inopb)

    def dblkno(self, ipg: int) -> int:
        return self.iblkno + ipg // self.inopb * self.frag

    def cgsize(self, ipg: int, fpg: int) -> int:
        return L.cgsize(ipg, fpg, self.frag, self.contigsumsize, self.old_cpg)

    def max_fpg(self, ipg: int) -> int:
        """The largest fs_fpg (whole blocks) whose cg block still fits in one
        block (fs.h CGSIZE <= fs_bsize)."""
        # Each block costs frag bits of free map plus one bit of cluster map.
        bits_per_block = self.frag + (1 if self.contigsumsize > 0 else 0)
        spare = self.bsize - self.cgsize(ipg, 0)
        fpg = max(spare * L.NBBY // bits_per_block, 0) * self.frag
        while fpg > 0 and self.cgsize(ipg, fpg) > self.bsize:
            fpg -= self.frag
        while self.cgsize(ipg, fpg + self.frag) <= self.bsize:
            fpg += self.frag
        return fpg

    def describe(self) -> str:
        return (f"{'UFS2' if self.ufs2 else 'UFS1'}, {self.bsize}-byte blocks, "
                f"{self.fsize}-byte fragments")


class Need:
    """What the tree needs, from the writer's plan.  (A plain class: the
    writer's imports stay free of dataclasses, a start-up cost of its own.)"""

    __slots__ = ("blocks", "tail_bins", "inodes", "data_bytes")

    def __init__(self, blocks: int, tail_bins, inodes: int, data_bytes: int = 0):
        #: Full data blocks (file data, indirect blocks, directories, symlinks).
        self.blocks = blocks
        #: tail_bins(cs_frags) -> blocks that hold all fragment tails plus a
        #: csum area tail of ``cs_frags`` fragments.
        self.tail_bins = tail_bins
        #: Inodes in use, counting the reserved inodes 0 and 1.
        self.inodes = inodes
        #: Bytes of file data (for messages).
        self.data_bytes = data_bytes

    def __repr__(self):
        return (f"Need(blocks={self.blocks}, inodes={self.inodes}, "
                f"data_bytes={self.data_bytes})")

    def data_blocks(self, p: Params, ncg: int) -> int:
        """Blocks of the data area for ``ncg`` cylinder groups (the csum area
        grows with them)."""
        cs_frags = csum_frags(p, ncg)
        if cs_frags < p.frag:
            # A small csum area shares a block with fragment tails.
            return self.blocks + self.tail_bins(cs_frags)
        return self.blocks + howmany(cs_frags, p.frag) + self.tail_bins(0)

    #: sizeof(struct csum): one per cylinder group in the csum area.
    csum_size = L.SIZEOF_CSUM


def csum_frags(p: Params, ncg: int) -> int:
    """Fragments of the csum area (fs_cssize / fs_fsize) for ``ncg`` groups."""
    return howmany(ncg * Need.csum_size, p.fsize)


class Geometry:
    """Where everything is: ``ncg`` groups of ``fpg`` fragments (the last one
    may be shorter), ``ipg`` inodes each, ``size`` fragments in all."""

    def __init__(self, p: Params, ncg: int, ipg: int, fpg: int, size: int):
        self.p = p
        self.ncg = ncg
        self.ipg = ipg
        self.fpg = fpg
        self.size = size
        self.dblkno = p.dblkno(ipg)
        self.cgsize = roundup(p.cgsize(ipg, fpg), p.fsize)
        self.cssize = roundup(ncg * Need.csum_size, p.fsize)
        self.cs_frags = self.cssize // p.fsize
        #: Data blocks in every cylinder group but the last, and in the last.
        self.cap = (fpg - self.dblkno) // p.frag
        self.cap_last = (self.ndblk(ncg - 1) - self.dblkno) // p.frag
        self.data_blocks = (ncg - 1) * self.cap + self.cap_last
        self.ninodes = ncg * ipg

    # fs.h cgbase; fs_old_cgoffset is 0, so a group starts at its base.
    def cgbase(self, c: int) -> int:
        return c * self.fpg

    def ndblk(self, c: int) -> int:
        """Fragments in cylinder group ``c`` (cg_ndblk)."""
        return min(self.fpg, self.size - c * self.fpg)

    @property
    def image_bytes(self) -> int:
        return self.size * self.p.fsize

    def data_addr(self, index: int) -> int:
        """Fragment address of data block ``index``."""
        c = min(index // self.cap, self.ncg - 1)
        return c * self.fpg + self.dblkno + (index - c * self.cap) * self.p.frag

    def data_runs(self, index: int, count: int):
        """``(fragment address, blocks)`` runs that hold data blocks
        ``index`` .. ``index + count - 1`` (split where a cylinder group's
        metadata interrupts them)."""
        while count > 0:
            c = min(index // self.cap, self.ncg - 1)
            room = (self.cap if c < self.ncg - 1 else self.cap_last) - (index - c * self.cap)
            n = min(count, room)
            if n <= 0:
                raise AssertionError(f"data block {index} beyond the data area")
            yield self.data_addr(index), n
            index += n
            count -= n

    def block_addrs(self, index: int, count: int) -> list[int]:
        """Fragment addresses of data blocks ``index`` .. ``index + count - 1``
        (one arithmetic range per cylinder group, not one call per block)."""
        frag = self.p.frag
        out: list[int] = []
        for addr, n in self.data_runs(index, count):
            out.extend(range(addr, addr + n * frag, frag))
        return out

    def inode_addr(self, ino: int) -> tuple[int, int]:
        """(byte offset in the image, cylinder group) of inode ``ino``."""
        c, i = divmod(ino, self.ipg)
        frag = c * self.fpg + self.p.iblkno + i // self.p.inopb * self.p.frag
        return frag * self.p.fsize + (i % self.p.inopb) * self.p.isize, c

    def describe(self) -> str:
        return (f"{self.ncg} cylinder group(s) of {self.fpg} fragments, "
                f"{self.ipg} inodes each, {self.data_blocks} data blocks")


def solve_auto(p: Params, need: Need) -> Geometry:
    """The smallest geometry that holds ``need``."""
    for ncg in range(1, MAX_NCG):
        ipg = p.ipg_for(need.inodes, ncg)
        if p.max_ipg is not None and ipg > p.max_ipg:
            continue
        dblkno = p.dblkno(ipg)
        fmax = p.max_fpg(ipg)
        if fmax < dblkno + p.frag:
            continue
        cap_max = (fmax - dblkno) // p.frag
        blocks = max(need.data_blocks(p, ncg), ncg)
        if blocks > ncg * cap_max:
            continue
        per = howmany(blocks, ncg)
        last = blocks - (ncg - 1) * per
        if last < 1:
            last = 1
        fpg = dblkno + per * p.frag
        size = (ncg - 1) * fpg + dblkno + last * p.frag
        return _checked(p, Geometry(p, ncg, ipg, fpg, size))
    raise RumpfsError(f"the tree does not fit in {MAX_NCG} cylinder groups ({p.describe()})")


def floor_bytes(p: Params) -> int:
    """The smallest image size for these parameters: :data:`MIN_IMAGE_BYTES`
    in whole blocks (the file system covers whole blocks of an image)."""
    return roundup(MIN_IMAGE_BYTES, p.bsize)


def solve_fixed(p: Params, need: Need, size_bytes: int) -> Geometry | None:
    """A geometry of exactly ``size_bytes`` (rounded down to whole blocks)
    that holds ``need``; None when it does not fit."""
    total = size_bytes // p.bsize * p.frag
    for ncg in range(1, MAX_NCG):
        ipg = p.ipg_for(need.inodes, ncg)
        dblkno = p.dblkno(ipg)
        if ncg * (dblkno + p.frag) > total:
            return None
        if p.max_ipg is not None and ipg > p.max_ipg:
            continue
        fpg = roundup(howmany(total, ncg), p.frag)
        if p.cgsize(ipg, fpg) > p.bsize:
            continue
        last = total - (ncg - 1) * fpg
        if last < dblkno + p.frag:
            continue
        g = Geometry(p, ncg, ipg, fpg, total)
        if g.data_blocks < need.data_blocks(p, ncg):
            return None
        return _checked(p, g)
    return None


def _checked(p: Params, g: Geometry) -> Geometry:
    if not p.ufs2 and g.size > UFS1_MAX_FRAGS:
        raise RumpfsError(f"the image needs {g.image_bytes} bytes, more than UFS1 can address "
                          f"({UFS1_MAX_FRAGS} fragments of {p.fsize} bytes); "
                          f"use --format ffs2 or a larger --frag-size")
    return g


def parse_amount(text, name: str, base: int | None = None) -> int:
    """``"64m"``, ``"1.5G"``, ``"4096"`` -> bytes (or a count); ``"10%"`` of
    ``base`` when ``base`` is given."""
    if isinstance(text, int):
        return text
    s = str(text).strip()
    if s.endswith("%"):
        if base is None:
            raise RumpfsError(f"{name} {text}: a percentage is not allowed here")
        try:
            pct = float(s[:-1])
        except ValueError:
            raise RumpfsError(f"{name} {text}: not a percentage") from None
        if not math.isfinite(pct) or pct < 0:
            raise RumpfsError(f"{name} {text}: not a percentage from 0 up")
        return int(-(-base * pct // 100))
    low = s.lower()
    for suffix in ("ib", "b"):
        if low.endswith(suffix) and len(low) > len(suffix) and low[-len(suffix) - 1] in "kmgt":
            low = low[:-len(suffix)]
            break
    mult = 1
    if low and low[-1] in "kmgt":
        mult = 1024 ** ("kmgt".index(low[-1]) + 1)
        low = low[:-1]
    try:
        value = float(low) if "." in low else int(low)
    except ValueError:
        raise RumpfsError(f"{name} {text}: not a size (bytes, or with a k/m/g/t suffix)") from None
    if not math.isfinite(value):
        raise RumpfsError(f"{name} {text}: not a finite size")
    if value < 0:
        raise RumpfsError(f"{name} {text}: must not be negative")
    return int(value * mult)
