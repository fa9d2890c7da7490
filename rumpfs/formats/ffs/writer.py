"""Writing a NetBSD FFS image (UFS1 or UFS2, either byte order).

The writer works in three steps:

1. **Plan** (:class:`Plan`): walk the tree once, give every node an inode
   number (the root is ``UFS_ROOTINO``; the entries of a directory get
   consecutive numbers, in byte order of their names, before the writer
   descends into its subdirectories, as makefs does), count link counts and
   work out each inode's blocks: full blocks of data, the fragment tail of a
   small file's last block (only a direct block may be a run of fragments,
   fs.h ``blksize``), and the indirect blocks that map the rest.  Holes of
   sparse files get no block at all (a zero block pointer).
2. **Size** (:mod:`.geometry`): the smallest layout that holds the plan, or
   the one the options ask for.
3. **Write**: data blocks are allocated in order from the first data block of
   cylinder group 0 -- each file's full blocks, then its indirect blocks --
   and the fragment tails are packed into shared blocks after them (best fit,
   largest first).  File data is copied from the source files straight into
   place (``copy_file_range``); fragment tails, directories, inodes, indirect
   blocks, cylinder groups, the csum area and the superblocks are built in
   memory in bulk and written with large ``pwrite`` calls.  Everything else
   stays a hole in the output file (reads as zeros).

Every structure comes from :mod:`.layout` (the declarations of fs.h,
dinode.h and dir.h); inodes and directory entries are packed with the
precompiled ``struct`` forms derived from those declarations.
"""

from __future__ import annotations

import gc
import os
import stat
import struct
import sys
import zlib
from array import array
from bisect import bisect_right

from ...errors import RumpfsError
from ...tree import display, join
from . import geometry as G
from . import layout as L
from .layout import howmany

#: Tail blocks gathered in memory before one pwrite (bounded memory).
TAIL_BATCH_BYTES = 4 << 20
#: Inodes packed in memory before one pwrite.
INODE_BATCH = 8192
#: Largest second count UFS1 keeps in its 32-bit time fields.
INT32_MAX = 0x7FFFFFFF
INT32_MIN = -0x80000000

_KIND_TO_DT = {
    stat.S_IFREG: L.DT_REG, stat.S_IFDIR: L.DT_DIR, stat.S_IFLNK: L.DT_LNK,
    stat.S_IFCHR: L.DT_CHR, stat.S_IFBLK: L.DT_BLK, stat.S_IFIFO: L.DT_FIFO,
    stat.S_IFSOCK: L.DT_SOCK,
}


def encode_rdev(rdev: int) -> int:
    """A host ``st_rdev`` as NetBSD's ``makedev`` stores it: major in bits
    8-19, minor in bits 0-7 and 20-31."""
    major, minor = os.major(rdev), os.minor(rdev)
    if major > 0xFFF or minor > 0xFFFFF:
        raise ValueError(f"device {major},{minor} does not fit NetBSD's dev_t")
    return ((major << 8) & 0x000FFF00) | ((minor << 12) & 0xFFF00000) | (minor & 0xFF)


def di_gen(ino: int) -> int:
    """A deterministic, non-zero generation number (makefs uses random())."""
    return ((ino * 2654435761) & 0x7FFFFFFF) or 1


class Inode:
    """The plan of one inode: its node, names and blocks."""

    __slots__ = ("ino", "node", "path", "kind", "nlink", "size", "entries", "parent",
                 "runs", "nfull", "nind", "tail", "start", "tail_bin", "tail_off", "extents", "ib")

    def __init__(self, ino: int, node, path: bytes):
        self.ino = ino
        self.node = node
        self.path = path
        self.kind = stat.S_IFMT(node.mode)
        self.nlink = 1
        self.size = 0
        #: Directories: [(name, Inode)] in name order; parent Inode.
        self.entries = None
        self.parent = None
        #: Full data blocks: [(first lbn, count)] in lbn order; their number.
        self.runs = ()
        self.nfull = 0
        #: Indirect blocks, fragments of the tail block (0: none).
        self.nind = 0
        self.tail = 0
        #: Data block index of the first full block; tail bin and fragment.
        self.start = 0
        self.tail_bin = 0
        self.tail_off = 0
        #: Byte runs of the source that hold data (sparse files), or None.
        self.extents = None


class Plan:
    """Inode numbers, directory contents and block needs of a tree."""

    def __init__(self, tree, p: G.Params):
        self.p = p
        self.inodes: list[Inode | None] = [None, None]  # 0 and UFS_WINO unused
        self.full_blocks = 0
        self.data_bytes = 0
        # tails[s]: inodes whose last block is a run of s fragments
        self.tails: list[list] = [[] for _ in range(p.frag)]
        self._number(tree)
        for rec in self.inodes[L.UFS_ROOTINO:]:
            self._blocks(rec)

    # -- inode numbers -------------------------------------------------------
    def _number(self, tree) -> None:
        seen: dict[int, Inode] = {}
        inodes = self.inodes
        root = Inode(L.UFS_ROOTINO, tree.root, b"")
        root.parent = root
        inodes.append(root)
        stack = [root]
        while stack:
            d = stack.pop()
            d.entries = entries = []
            children = d.node.children
            subdirs = []
            for name in sorted(children):
                child = children[name]
                if len(name) > L.FFS_MAXNAMLEN:
                    raise RumpfsError(f"{display(join(d.path, name))}: name is {len(name)} bytes, "
                                      f"longer than {L.FFS_MAXNAMLEN}")
                if child.children is not None:
                    rec = Inode(len(inodes), child, join(d.path, name))
                    rec.parent = d
                    inodes.append(rec)
                    subdirs.append(rec)
                else:
                    rec = seen.get(id(child))
                    if rec is None:
                        rec = Inode(len(inodes), child, join(d.path, name))
                        seen[id(child)] = rec
                        inodes.append(rec)
                    else:
                        rec.nlink += 1
                entries.append((name, rec))
            d.nlink = 2 + len(subdirs)
            stack.extend(reversed(subdirs))

    # -- blocks ----------------------------------------------------------------
    def _blocks(self, rec: Inode) -> None:
        p = self.p
        node = rec.node
        kind = rec.kind
        if kind == stat.S_IFREG:
            data = node.data
            size = data.size if data is not None else 0
            if size > p.maxfilesize:
                raise RumpfsError(f"{display(rec.path)}: {size} bytes, more than the largest "
                                  f"file of this file system ({p.maxfilesize} bytes, {p.describe()})")
            rec.size = size
            if size:
                extents = data.extents()
                if len(extents) != 1 or extents[0] != (0, size):
                    rec.extents = extents
                    self.data_bytes += sum(n for _, n in extents)
                else:
                    self.data_bytes += size
                self._layout(rec, size, rec.extents)
        elif kind == stat.S_IFDIR:
            rec.size = dir_size(rec.entries)
            self._layout(rec, rec.size, None)
        elif kind == stat.S_IFLNK:
            rec.size = len(node.target)
            if rec.size >= p.maxsymlinklen:
                self._layout(rec, rec.size, None)

    def _layout(self, rec: Inode, size: int, extents) -> None:
        p = self.p
        bsize = p.bsize
        nblk = howmany(size, bsize)
        if extents is None:
            runs = [(0, nblk)]
        else:
            runs = _lbn_runs(extents, bsize)
        tail = 0
        if nblk <= L.UFS_NDADDR:
            last = nblk - 1
            tail = howmany(size - last * bsize, p.fsize)
            # The last direct block is always allocated, hole or not: the
            # kernel extends it in place when the file grows.
            runs = _without(runs, last) if tail < p.frag else _with(runs, last)
            if tail == p.frag:
                tail = 0
        rec.runs = runs
        rec.nfull = sum(n for _, n in runs)
        rec.nind = count_indirect(runs, p.nindir)
        rec.tail = tail
        self.full_blocks += rec.nfull + rec.nind
        if tail:
            self.tails[tail].append(rec)

    # -- tails ---------------------------------------------------------------
    def pack_tails(self, cs_frags: int):
        """Best-fit-decreasing packing of the fragment tails (and a csum area
        of ``cs_frags`` fragments, owner None) into blocks.

        Returns (number of blocks, [(owner, block, fragment)], [(block, free
        fragments at its end)])."""
        frag = self.p.frag
        open_bins: list[list[int]] = [[] for _ in range(frag)]
        nbins = 0
        placed = []
        for s in range(frag - 1, 0, -1):
            items = self.tails[s]
            if cs_frags == s:
                items = [None] + items
            for owner in items:
                for r in range(s, frag):
                    if open_bins[r]:
                        b = open_bins[r].pop()
                        break
                else:
                    b = nbins
                    nbins += 1
                    r = frag
                if r > s:
                    open_bins[r - s].append(b)
                placed.append((owner, b, frag - r))
        free = sorted((b, r) for r in range(1, frag) for b in open_bins[r])
        return nbins, placed, free


def _lbn_runs(extents, bsize: int) -> list[tuple[int, int]]:
    """Logical blocks that hold data, as merged (first, count) runs."""
    runs: list[list[int]] = []
    for off, length in extents:
        if length <= 0:
            continue
        a, b = off // bsize, (off + length - 1) // bsize + 1
        if runs and a <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    return [(a, b - a) for a, b in runs]


def _without(runs, lbn):
    out = []
    for s, n in runs:
        if s <= lbn < s + n:
            if lbn > s:
                out.append((s, lbn - s))
            if s + n > lbn + 1:
                out.append((lbn + 1, s + n - lbn - 1))
        else:
            out.append((s, n))
    return out


def _with(runs, lbn):
    if any(s <= lbn < s + n for s, n in runs):
        return runs
    return _lbn_runs(sorted(list(runs) + [(lbn, 1)]), 1)


def _touched(runs, lo: int, hi: int, k: int) -> int:
    """How many distinct ``(lbn - lo) // k`` the runs' lbns in [lo, hi) give."""
    count = 0
    last = -1
    for s, n in runs:
        a, b = max(s, lo), min(s + n, hi)
        if a >= b:
            continue
        i0, i1 = (a - lo) // k, (b - 1 - lo) // k
        if i0 <= last:
            i0 = last + 1
        if i1 >= i0:
            count += i1 - i0 + 1
        last = max(last, i1)
    return count


def _levels(nindir: int):
    """(first lbn, end lbn, spans) of the single, double and triple indirect
    trees; ``spans`` are the lbns covered by one block of each level, root first."""
    base = L.UFS_NDADDR
    out = []
    span = 1
    for level in range(1, L.UFS_NIADDR + 1):
        span *= nindir
        out.append((base, base + span, [span // nindir ** i for i in range(level)]))
        base += span
    return out


def count_indirect(runs, nindir: int) -> int:
    """Indirect blocks needed to map the runs (blocks under holes are not made)."""
    if not runs or runs[-1][0] + runs[-1][1] <= L.UFS_NDADDR:
        return 0
    total = 0
    for lo, hi, spans in _levels(nindir):
        for span in spans:
            total += _touched(runs, lo, hi, span)
    return total


def dir_size(entries) -> int:
    """Bytes of a directory: '.', '..' and the entries packed into
    DIRBLKSIZ chunks that no entry crosses (dir.h)."""
    chunks = 1
    pos = L.UFS_DIRECTSIZ(len(b".")) + L.UFS_DIRECTSIZ(len(b".."))
    for name, _ in entries:
        n = L.UFS_DIRECTSIZ(len(name))
        if pos + n > L.DIRBLKSIZ:
            chunks += 1
            pos = 0
        pos += n
    return chunks * L.DIRBLKSIZ


class Writer:
    """Writes one planned tree into an :class:`~rumpfs.output.ImageSink`."""

    def __init__(self, tree, sink, byteorder: str, ufs2: bool, opts: dict, progress=None):
        self.tree = tree
        self.sink = sink
        self.byteorder = byteorder
        self.ufs2 = ufs2
        self.opts = opts
        self.progress = progress
        self.layout = L.structs(byteorder)
        self.swap = byteorder != sys.byteorder
        #: array typecode of a block pointer: int64 (UFS2) or int32 (UFS1).
        self.ptr_type = "q" if ufs2 else "i"

    # -- sizing ----------------------------------------------------------------
    def params(self) -> G.Params:
        o = self.opts
        bsize = _int_opt(o.get("block_size"), "--block-size")
        fsize = _int_opt(o.get("frag_size"), "--frag-size")
        return G.Params(self.ufs2, bsize, fsize)

    def size(self, plan: Plan) -> G.Geometry:
        p = plan.p
        o = self.opts
        memo = {}

        def tail_bins(cs_frags):
            if cs_frags not in memo:
                memo[cs_frags] = plan.pack_tails(cs_frags)
            return memo[cs_frags][0]
        self._packing = memo

        inodes = len(plan.inodes)
        free_inodes = o.get("free_inodes")
        if free_inodes is not None:
            inodes += G.parse_amount(free_inodes, "--free-inodes", len(plan.inodes) - 2)
        need = G.Need(plan.full_blocks, tail_bins, inodes, plan.data_bytes)
        free_space = o.get("free_space")
        if free_space is not None:
            base_blocks = need.data_blocks(p, 1)
            extra = G.parse_amount(free_space, "--free-space", base_blocks * p.bsize)
            need.blocks += howmany(extra, p.bsize)
        density = _int_opt(o.get("density"), "--density")
        if density is not None and density < p.fsize:
            raise RumpfsError(f"--density {density}: must be at least the fragment size {p.fsize}")

        geo = G.solve_auto(p, need)
        for _ in range(32):
            if density is None:
                break
            want = howmany(geo.image_bytes, density)
            if want <= need.inodes:
                break
            need.inodes = want
            geo = G.solve_auto(p, need)
        minimum = geo.image_bytes

        exact = o.get("size")
        min_size = o.get("min_size")
        max_size = o.get("max_size")
        target = None
        if exact is not None:
            target = G.parse_amount(exact, "--size")
            what = "--size"
        elif min_size is not None and G.parse_amount(min_size, "--min-size") > minimum:
            target = G.parse_amount(min_size, "--min-size")
            what = "--min-size"
        if target is not None:
            if density is not None:
                need.inodes = max(need.inodes, howmany(target, density))
            fixed = G.solve_fixed(p, need, target)
            if fixed is None and density is not None:
                need.inodes = inodes
                fixed = G.solve_fixed(p, need, target)
            if fixed is None:
                raise RumpfsError(f"{what} {target}: too small, the tree needs at least "
                                  f"{minimum} bytes ({_summary(plan, p, geo)})")
            geo = fixed
            self.file_size = target
        else:
            self.file_size = geo.image_bytes
        if max_size is not None:
            limit = G.parse_amount(max_size, "--max-size")
            if exact is not None and target > limit:
                raise RumpfsError(f"--size {target} is larger than --max-size {limit}")
            if self.file_size > limit:
                raise RumpfsError(f"--max-size {limit}: too small, the tree needs "
                                  f"{self.file_size} bytes ({_summary(plan, p, geo)})")
        return geo

    # -- the whole job -----------------------------------------------------------
    def write(self) -> int:
        p = self.params()
        self._superblock_options()
        plan = Plan(self.tree, p)
        self.plan = plan
        geo = self.size(plan)
        self.geo = geo
        self.p = p
        self._allocate(plan, geo)
        self._summaries(plan, geo)
        self._write_full_blocks(plan, geo)
        self._write_tails(plan, geo)
        self._write_inodes(plan, geo)
        self._write_cgs(geo)
        self._write_superblocks(geo)
        return self.file_size

    # -- allocation ----------------------------------------------------------------
    def _allocate(self, plan: Plan, geo: G.Geometry) -> None:
        p = self.p
        cs_frags = geo.cs_frags
        cursor = 0
        self.cs_full = 0
        if cs_frags >= p.frag:
            self.cs_full = howmany(cs_frags, p.frag)
            cursor = self.cs_full
        for rec in plan.inodes[L.UFS_ROOTINO:]:
            if rec.nfull or rec.nind:
                rec.start = cursor
                cursor += rec.nfull + rec.nind
        self.tail_base = cursor
        key = cs_frags if cs_frags < p.frag else 0
        packing = self._packing.get(key) or plan.pack_tails(key)
        nbins, placed, free = packing
        self.csaddr = geo.data_addr(0)
        self.bins: list[list] = [[] for _ in range(nbins)]
        for owner, b, off in placed:
            if owner is None:
                self.csaddr = geo.data_addr(self.tail_base + b) + off
            else:
                owner.tail_bin, owner.tail_off = b, off
            self.bins[b].append((off, owner))
        self.used_blocks = self.tail_base + nbins
        if self.used_blocks > geo.data_blocks:  # pragma: no cover - sizing guarantees room
            raise AssertionError(f"planned {self.used_blocks} blocks, room for {geo.data_blocks}")
        # Free fragments inside used blocks: (data block index, first frag, count).
        self.partial = []
        if self.cs_full and cs_frags % p.frag:
            used = cs_frags % p.frag
            self.partial.append((self.cs_full - 1, used, p.frag - used))
        self.partial.extend((self.tail_base + b, p.frag - r, r) for b, r in free)

    # -- cylinder group summaries ---------------------------------------------------
    def _summaries(self, plan: Plan, geo: G.Geometry) -> None:
        """Free maps and counts of every cylinder group, from the allocation."""
        p = self.p
        nino = len(plan.inodes)
        dir_inos = [rec.ino for rec in plan.inodes[L.UFS_ROOTINO:] if rec.kind == stat.S_IFDIR]
        ndir = [0] * geo.ncg
        for ino in dir_inos:
            ndir[ino // geo.ipg] += 1
        partial_by_cg: dict[int, list] = {}
        for idx, first, count in self.partial:
            c = min(idx // geo.cap, geo.ncg - 1)
            partial_by_cg.setdefault(c, []).append((idx, first, count))
        self.cgs = []
        for c in range(geo.ncg):
            cap_c = geo.cap if c < geo.ncg - 1 else geo.cap_last
            free = []
            if c > 0 and p.sblkno:
                free.append((0, p.sblkno))
            for idx, first, count in partial_by_cg.get(c, ()):
                free.append((geo.dblkno + (idx - c * geo.cap) * p.frag + first, count))
            used_here = min(max(self.used_blocks - c * geo.cap, 0), cap_c)
            if used_here < cap_c:
                free.append((geo.dblkno + used_here * p.frag, (cap_c - used_here) * p.frag))
            used_inodes = min(max(nino - c * geo.ipg, 0), geo.ipg)
            self.cgs.append(_CgState(p, geo, c, _merge(free), used_inodes, ndir[c]))

    # -- data ------------------------------------------------------------------------
    def _data_offset_runs(self, rec: Inode):
        """(first lbn, fragment address, blocks) of the inode's full blocks."""
        geo = self.geo
        idx = rec.start
        for lbn, n in rec.runs:
            for addr, m in geo.data_runs(idx, n):
                yield lbn, addr, m
                lbn += m
            idx += n

    def _write_full_blocks(self, plan: Plan, geo: G.Geometry) -> None:
        p = self.p
        sink = self.sink
        bsize, fsize = p.bsize, p.fsize
        for rec in plan.inodes[L.UFS_ROOTINO:]:
            if not rec.nfull and not rec.nind:
                continue
            data = self._content(rec)
            for lbn, addr, m in self._data_offset_runs(rec):
                lo, hi = lbn * bsize, min((lbn + m) * bsize, rec.size)
                if isinstance(data, (bytes, bytearray)):
                    sink.pwrite(data[lo:hi], addr * fsize)
                    continue
                for off, length in (rec.extents or ((0, rec.size),)):
                    a, b = max(off, lo), min(off + length, hi)
                    if a < b:
                        sink.copy_at(data, addr * fsize + (a - lo), a, b - a)
            if rec.nind:
                self._write_indirect(rec)

    def _content(self, rec: Inode):
        """The inode's data: a node's data object, or bytes we make."""
        if rec.kind == stat.S_IFREG:
            return rec.node.data
        if rec.kind == stat.S_IFDIR:
            return self._dir_bytes(rec)
        return rec.node.target

    def _dir_bytes(self, rec: Inode) -> bytes:
        direct = self.layout.fast("direct").struct
        buf = bytearray(rec.size)
        entries = [(b".", rec), (b"..", rec.parent)] + rec.entries
        chunk_start = 0
        pos = 0
        last = None  # offset of the last entry written in this chunk
        for name, child in entries:
            n = L.UFS_DIRECTSIZ(len(name))
            if pos + n > L.DIRBLKSIZ:
                _fix_reclen(buf, direct, chunk_start + last, L.DIRBLKSIZ - last)
                chunk_start += L.DIRBLKSIZ
                pos = 0
            off = chunk_start + pos
            direct.pack_into(buf, off, child.ino, n, _KIND_TO_DT[child.kind], len(name))
            buf[off + L.DIRECT_HEADER_SIZE:off + L.DIRECT_HEADER_SIZE + len(name)] = name
            last = pos
            pos += n
        _fix_reclen(buf, direct, chunk_start + last, L.DIRBLKSIZ - last)
        if chunk_start + L.DIRBLKSIZ != rec.size:  # pragma: no cover - dir_size agrees
            raise AssertionError(f"{display(rec.path)}: directory size mismatch")
        return bytes(buf)

    def _write_indirect(self, rec: Inode) -> None:
        """Build and write the indirect blocks of an inode (each as soon as it
        is complete, so memory does not grow with the file); set ``rec.ib``."""
        p = self.p
        geo = self.geo
        nindir = p.nindir
        frag = p.frag
        ptr_type = self.ptr_type
        empty = bytes(nindir * array(ptr_type).itemsize)
        # (first lbn, fragment address, blocks) runs and where each ends.
        runs = self._lbn_addresses(rec)
        ends = [s + n for s, _a, n in runs]
        next_idx = [rec.start + rec.nfull]

        def runs_in(lo, hi):
            """The runs that hold some lbn of [lo, hi)."""
            k = bisect_right(ends, lo)
            while k < len(runs) and runs[k][0] < hi:
                yield runs[k]
                k += 1

        def build(lo, cover, level):
            """The block of ``level`` mapping lbns [lo, lo + cover); 0 if they
            are all holes."""
            hi = lo + cover
            if next(runs_in(lo, hi), None) is None:
                return 0
            addr = geo.data_addr(next_idx[0])
            next_idx[0] += 1
            ptrs = array(ptr_type, empty)
            if level == 1:
                for s, a, n in runs_in(lo, hi):
                    x, y = max(s, lo), min(s + n, hi)
                    first = a + (x - s) * frag
                    ptrs[x - lo:y - lo] = array(ptr_type, range(first, first + (y - x) * frag, frag))
            else:
                sub = cover // nindir
                for s, _a, n in list(runs_in(lo, hi)):
                    # Only the children under some run; the rest stay holes.
                    first = (max(s, lo) - lo) // sub
                    last = (min(s + n, hi) - 1 - lo) // sub
                    for i in range(first, last + 1):
                        if ptrs[i] == 0:
                            ptrs[i] = build(lo + i * sub, sub, level - 1)
            if self.swap:
                ptrs.byteswap()
            self.sink.pwrite(ptrs.tobytes(), addr * p.fsize)
            return addr

        rec.ib = [build(lo, spans[0], level)
                  for level, (lo, _hi, spans) in enumerate(_levels(nindir), start=1)]
        if next_idx[0] != rec.start + rec.nfull + rec.nind:  # pragma: no cover
            raise AssertionError(f"{display(rec.path)}: indirect block count mismatch")

    def _lbn_addresses(self, rec: Inode):
        """(first lbn, fragment address, count) runs of the full blocks."""
        return list(self._data_offset_runs(rec))

    def _write_tails(self, plan: Plan, geo: G.Geometry) -> None:
        p = self.p
        bsize, fsize = p.bsize, p.fsize
        batch = max(1, TAIL_BATCH_BYTES // bsize)
        nbins = len(self.bins)
        for first in range(0, nbins, batch):
            count = min(batch, nbins - first)
            buf = bytearray(count * bsize)
            copies = []
            for b in range(first, first + count):
                for off, owner in self.bins[b]:
                    pos = (b - first) * bsize + off * fsize
                    if owner is None:
                        piece = self._csum_bytes(geo)
                    else:
                        piece = self._tail_source(owner)
                        if isinstance(piece, tuple):
                            copies.append((b, off, piece))
                            continue
                    buf[pos:pos + len(piece)] = piece
            pos = 0
            for addr, m in geo.data_runs(self.tail_base + first, count):
                self.sink.pwrite(memoryview(buf)[pos:pos + m * bsize], addr * fsize)
                pos += m * bsize
            # Host file tails are copied into the bins once the bins are out
            # (the sink's copies never precede a write they would lie under).
            for b, off, (data, lo, length) in copies:
                self.sink.copy_at(data, (geo.data_addr(self.tail_base + b) + off) * fsize, lo, length)
        if self.cs_full:
            self.sink.pwrite(self._csum_bytes(geo), self.csaddr * fsize)

    def _tail_source(self, rec: Inode):
        """The bytes of the inode's last, partial block, or ``(host data,
        offset, length)`` for the sink to copy."""
        lo = (rec.size - 1) // self.p.bsize * self.p.bsize
        length = rec.size - lo
        if rec.kind == stat.S_IFREG:
            data = rec.node.data
            if not hasattr(data, "path"):
                return data.data[lo:rec.size]
            if rec.extents is not None and not any(
                    off < rec.size and off + n > lo for off, n in rec.extents):
                return b""  # the last block is a hole
            return (data, lo, length)
        if rec.kind == stat.S_IFDIR:
            return self._dir_bytes(rec)[lo:]
        return rec.node.target[lo:]

    def _csum_bytes(self, geo: G.Geometry) -> bytes:
        csum = self.layout.fast("csum").struct
        out = bytearray()
        for cg in self.cgs:
            out += csum.pack(cg.ndir, cg.nbfree, cg.nifree, cg.nffree)
        return bytes(out)

    # -- inodes ----------------------------------------------------------------------
    def _unstorable(self, rec: Inode, error: Exception) -> RumpfsError:
        """Why an inode does not fit its on-disk fields (a UFS1 time after
        2038, an owner beyond 32 bits...), naming the path and the limit."""
        n = rec.node
        if not self.ufs2:
            for label, ns in (("mtime", n.mtime_ns), ("atime", n.atime_ns), ("ctime", n.ctime_ns)):
                sec = ns // 1_000_000_000
                if not INT32_MIN <= sec <= INT32_MAX:
                    return RumpfsError(f"{display(rec.path)}: {label} {sec} is outside the 32-bit "
                                       f"times of UFS1 ({INT32_MIN}..{INT32_MAX}); "
                                       f"use --format ffs2 or --timestamp")
        for label, value in (("uid", n.uid), ("gid", n.gid)):
            if not 0 <= value <= 0xFFFFFFFF:
                return RumpfsError(f"{display(rec.path)}: {label} {value} is outside 0..{0xFFFFFFFF}")
        return RumpfsError(f"{display(rec.path)}: cannot be stored in "
                           f"{'UFS2' if self.ufs2 else 'UFS1'}: {error}")

    def _inode_values(self):
        """(field positions, template) for positional packing."""
        fast = self.layout.fast("ufs2_dinode" if self.ufs2 else "ufs1_dinode")
        pos = {name: i for i, name in enumerate(fast.names)}
        return fast.struct, pos, [0] * len(fast.names)

    def _write_inodes(self, plan: Plan, geo: G.Geometry) -> None:
        p = self.p
        st, pos, template = self._inode_values()
        isize = p.isize
        ufs2 = self.ufs2
        i_mode, i_nlink, i_uid, i_gid = pos["di_mode"], pos["di_nlink"], pos["di_uid"], pos["di_gid"]
        i_size, i_blocks, i_gen = pos["di_size"], pos["di_blocks"], pos["di_gen"]
        i_atime, i_atimens = pos["di_atime"], pos["di_atimensec"]
        i_mtime, i_mtimens = pos["di_mtime"], pos["di_mtimensec"]
        i_ctime, i_ctimens = pos["di_ctime"], pos["di_ctimensec"]
        i_db, i_ib = pos["di_db[0]"], pos["di_ib[0]"]
        i_birth, i_birthns = pos.get("di_birthtime"), pos.get("di_birthnsec")
        inline = _inline_struct(self.byteorder, ufs2)
        nptr = L.UFS_NDADDR + L.UFS_NIADDR
        sectors = p.sectors_per_frag
        frag = p.frag
        inodes = plan.inodes
        total = len(inodes)
        newest = 0
        for c in range(geo.ncg):
            lo = max(c * geo.ipg, L.UFS_ROOTINO)
            hi = min((c + 1) * geo.ipg, total)
            for first in range(lo, hi, INODE_BATCH):
                last = min(first + INODE_BATCH, hi)
                # Start at a whole inode so the buffer lines up with the table.
                buf = bytearray((last - first) * isize)
                for ino in range(first, last):
                    rec = inodes[ino]
                    n = rec.node
                    v = template[:]
                    v[i_mode] = n.mode & 0xFFFF
                    v[i_nlink] = rec.nlink
                    v[i_uid] = n.uid
                    v[i_gid] = n.gid
                    v[i_size] = rec.size
                    v[i_gen] = di_gen(ino)
                    s, ns = divmod(n.atime_ns, 1_000_000_000)
                    v[i_atime], v[i_atimens] = s, ns
                    s, ns = divmod(n.mtime_ns, 1_000_000_000)
                    v[i_mtime], v[i_mtimens] = s, ns
                    if i_birth is not None:
                        v[i_birth], v[i_birthns] = s, ns
                    s, ns = divmod(n.ctime_ns, 1_000_000_000)
                    v[i_ctime], v[i_ctimens] = s, ns
                    if n.ctime_ns > newest:
                        newest = n.ctime_ns
                    if n.mtime_ns > newest:
                        newest = n.mtime_ns
                    kind = rec.kind
                    if kind == stat.S_IFLNK and rec.size < p.maxsymlinklen:
                        v[i_db:i_db + nptr] = inline.unpack(
                            n.target.ljust(p.maxsymlinklen, b"\0"))
                    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                        try:
                            v[i_db] = encode_rdev(n.rdev)
                        except ValueError as e:
                            raise RumpfsError(f"{display(rec.path)}: {e}") from None
                    elif rec.nfull or rec.tail:
                        nfr = rec.nfull * frag + rec.tail + rec.nind * frag
                        v[i_blocks] = nfr * sectors
                        if rec.nfull:
                            for lbn, addr, m in self._data_offset_runs(rec):
                                if lbn >= L.UFS_NDADDR:
                                    break
                                for k in range(min(m, L.UFS_NDADDR - lbn)):
                                    v[i_db + lbn + k] = addr + k * frag
                        if rec.tail:
                            v[i_db + (rec.size - 1) // p.bsize] = (
                                geo.data_addr(self.tail_base + rec.tail_bin) + rec.tail_off)
                        if rec.nind:
                            v[i_ib:i_ib + L.UFS_NIADDR] = rec.ib
                    try:
                        st.pack_into(buf, (ino - first) * isize, *v)
                    except struct.error as e:
                        raise self._unstorable(rec, e) from None
                off, _ = geo.inode_addr(first)
                self.sink.pwrite(buf, off)
        self.newest_ns = newest

    # -- cylinder groups and superblocks ---------------------------------------------
    def _fs_time(self) -> int:
        """The newest inode change in the tree: a reproducible 'last written'."""
        t = self.newest_ns // 1_000_000_000
        return min(t, INT32_MAX) if not self.ufs2 else t

    def _write_cgs(self, geo: G.Geometry) -> None:
        p = self.p
        cg_fast = self.layout.fast("cg")
        t = self._fs_time()
        offsets = L.cg_map_offsets(self.ufs2, geo.ipg, geo.fpg, p.frag, p.contigsumsize)
        for cg in self.cgs:
            block = bytearray(p.bsize)
            head = {
                "cg_magic": L.CG_MAGIC,
                "cg_cgx": cg.c,
                "cg_ndblk": cg.ndblk,
                "cg_cs": {"cs_ndir": cg.ndir, "cs_nbfree": cg.nbfree,
                          "cs_nifree": cg.nifree, "cs_nffree": cg.nffree},
                "cg_frsum": cg.frsum,
                "cg_nclusterblks": cg.ndblk // p.frag if p.contigsumsize > 0 else 0,
            }
            head.update(offsets)
            if self.ufs2:
                head["cg_time"] = t
                head["cg_niblk"] = geo.ipg
                head["cg_initediblk"] = geo.ipg
            else:
                head["cg_old_time"] = t
                head["cg_old_niblk"] = geo.ipg
                head["cg_old_ncyl"] = (howmany(cg.ndblk, geo.fpg // p.old_cpg)
                                       if cg.c == geo.ncg - 1 else p.old_cpg)
            cg_fast.pack_into_dict(block, 0, head)
            iused = offsets["cg_iusedoff"]
            block[iused:iused + len(cg.inomap)] = cg.inomap
            freeoff = offsets["cg_freeoff"]
            block[freeoff:freeoff + len(cg.freemap)] = cg.freemap
            if p.contigsumsize > 0:
                # cg_clustersum[0] is never used, and newfs places the array so
                # that this slot overlaps the end of the free map: skip it.
                sums = array("i", cg.clustersum[1:])
                if self.swap:
                    sums.byteswap()
                so = offsets["cg_clustersumoff"] + sums.itemsize
                block[so:so + len(sums) * sums.itemsize] = sums.tobytes()
                co = offsets["cg_clusteroff"]
                block[co:co + len(cg.clustermap)] = cg.clustermap
            self.sink.pwrite(block, (geo.cgbase(cg.c) + p.cblkno) * p.fsize)

    def _superblock_options(self):
        """(minfree, optimization, label) from the options, checked."""
        o = self.opts
        minfree = _int_opt(o.get("minfree"), "--minfree")
        minfree = L.MINFREE if minfree is None else minfree
        if not 0 <= minfree <= 99:
            raise RumpfsError(f"--minfree {minfree}: must be 0 to 99 (percent)")
        optim = o.get("optimization") or "time"
        if optim not in ("time", "space"):
            raise RumpfsError(f"--optimization {optim}: must be time or space")
        label = o.get("label") or b""
        if isinstance(label, str):
            label = label.encode()
        if label and not self.ufs2:
            raise RumpfsError("--label: only UFS2 (--format ffs2) has a volume label")
        if len(label) >= L.MAXVOLLEN or b"\0" in label:
            raise RumpfsError(f"--label {label.decode(errors='replace')}: {len(label)} bytes, "
                              f"at most {L.MAXVOLLEN - 1} and no NUL")
        return minfree, optim, label

    def superblock(self, geo: G.Geometry) -> bytes:
        p = self.p
        t = self._fs_time()
        tot = {"cs_ndir": 0, "cs_nbfree": 0, "cs_nifree": 0, "cs_nffree": 0}
        for cg in self.cgs:
            tot["cs_ndir"] += cg.ndir
            tot["cs_nbfree"] += cg.nbfree
            tot["cs_nifree"] += cg.nifree
            tot["cs_nffree"] += cg.nffree
        dsize = geo.size - p.sblkno - geo.ncg * (geo.dblkno - p.sblkno) - geo.cs_frags
        minfree, optim, label = self._superblock_options()
        fs_id1 = zlib.crc32(b"%d/%d/%d/%d/%d" % (t, geo.size, geo.ncg, geo.ipg, len(self.plan.inodes)))
        f = {
            "fs_sblkno": p.sblkno,
            "fs_cblkno": p.cblkno,
            "fs_iblkno": p.iblkno,
            "fs_dblkno": geo.dblkno,
            "fs_ncg": geo.ncg,
            "fs_bsize": p.bsize,
            "fs_fsize": p.fsize,
            "fs_frag": p.frag,
            "fs_minfree": minfree,
            "fs_bmask": ~(p.bsize - 1),
            "fs_fmask": ~(p.fsize - 1),
            "fs_bshift": L.ilog2(p.bsize),
            "fs_fshift": L.ilog2(p.fsize),
            "fs_maxcontig": p.maxcontig,
            "fs_maxbpg": p.bsize // 4,
            "fs_fragshift": L.ilog2(p.frag),
            "fs_fsbtodb": L.ilog2(p.sectors_per_frag),
            "fs_sbsize": min(L.roundup(L.SIZEOF_FS, p.fsize), L.SBLOCKSIZE),
            "fs_nindir": p.nindir,
            "fs_inopb": p.inopb,
            "fs_optim": L.FS_OPTSPACE if optim == "space" else L.FS_OPTTIME,
            "fs_id": [t & 0x7FFFFFFF, fs_id1 & 0x7FFFFFFF],
            "fs_cssize": geo.cssize,
            "fs_cgsize": geo.cgsize,
            "fs_ipg": geo.ipg,
            "fs_fpg": geo.fpg,
            "fs_clean": L.FS_ISCLEAN,
            "fs_old_flags": L.FS_FLAGS_UPDATED,
            "fs_volname": label.ljust(L.MAXVOLLEN, b"\0"),
            "fs_maxbsize": p.bsize,
            "fs_sblockloc": p.sblockloc,
            "fs_cstotal": tot,
            "fs_time": t,
            "fs_size": geo.size,
            "fs_dsize": dsize,
            "fs_csaddr": self.csaddr,
            "fs_avgfilesize": L.AVFILESIZ,
            "fs_avgfpdir": L.AFPDIR,
            "fs_contigsumsize": p.contigsumsize,
            "fs_maxsymlinklen": p.maxsymlinklen,
            "fs_old_inodefmt": L.FS_44INODEFMT,
            "fs_maxfilesize": p.maxfilesize,
            "fs_qbmask": p.bsize - 1,
            "fs_qfmask": p.fsize - 1,
            "fs_magic": L.FS_UFS2_MAGIC if self.ufs2 else L.FS_UFS1_MAGIC,
        }
        if not self.ufs2:
            # The 4.4BSD fields a UFS1 reader without FS_FLAGS_UPDATED uses.
            spc = geo.fpg * p.sectors_per_frag
            f.update({
                "fs_old_cgmask": -1,
                "fs_old_time": t,
                "fs_old_size": geo.size,
                "fs_old_dsize": dsize,
                "fs_old_rps": 60,
                "fs_old_nspf": p.sectors_per_frag,
                "fs_old_npsect": spc,
                "fs_old_interleave": 1,
                "fs_old_csaddr": self.csaddr,
                "fs_old_nsect": spc,
                "fs_old_spc": spc,
                "fs_old_ncyl": geo.ncg,
                "fs_old_cpg": 1,
                "fs_old_cstotal": dict(tot),
                "fs_old_postblformat": L.FS_DYNAMICPOSTBLFMT,
                "fs_old_nrpos": 1,
            })
        raw = self.layout.fs.build(f)
        return raw.ljust(f["fs_sbsize"], b"\0")

    def _write_superblocks(self, geo: G.Geometry) -> None:
        p = self.p
        raw = self.superblock(geo)
        self.sink.pwrite(raw, p.sblockloc)
        for c in range(geo.ncg):
            self.sink.pwrite(raw, (geo.cgbase(c) + p.sblkno) * p.fsize)


def _fix_reclen(buf, direct, off: int, reclen: int) -> None:
    ino, _, dtype, namlen = direct.unpack_from(buf, off)
    direct.pack_into(buf, off, ino, reclen, dtype, namlen)


def _inline_struct(byteorder: str, ufs2: bool):
    """di_db + di_ib as block pointers, to place a fast symlink's target."""
    order = "<" if byteorder == "little" else ">"
    return struct.Struct(f"{order}{L.UFS_NDADDR + L.UFS_NIADDR}{'q' if ufs2 else 'l'}")


def _merge(extents):
    extents = sorted(e for e in extents if e[1] > 0)
    out = []
    for s, n in extents:
        if out and s <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], s + n - out[-1][0])
        else:
            out.append([s, n])
    return [(s, n) for s, n in out]


class _CgState:
    """The maps and counts of one cylinder group, from its free extents
    (fragment runs relative to the group's start)."""

    def __init__(self, p: G.Params, geo: G.Geometry, c: int, free, used_inodes: int, ndir: int):
        self.c = c
        self.ndblk = geo.ndblk(c)
        self.ndir = ndir
        self.nifree = geo.ipg - used_inodes
        self.inomap = _bitmap(howmany(geo.ipg, L.NBBY), [(0, used_inodes)])
        self.nbfree = 0
        self.nffree = 0
        self.frsum = [0] * L.MAXFRAG
        css = p.contigsumsize
        self.clustersum = [0] * (css + 1)
        cluster_runs = []
        frag = p.frag
        for s, n in free:
            e = s + n
            head_end = min(e, -(-s // frag) * frag)
            if head_end > s and s % frag:
                self.nffree += head_end - s
                self.frsum[head_end - s] += 1
                s = head_end
            full = (e - s) // frag
            if full:
                self.nbfree += full
                cluster_runs.append((s // frag, full))
                if css > 0:
                    self.clustersum[min(full, css)] += 1
                s += full * frag
            if e > s:
                self.nffree += e - s
                self.frsum[e - s] += 1
        self.freemap = _bitmap(howmany(geo.fpg, L.NBBY), free)
        self.clustermap = _bitmap(howmany(geo.fpg // frag, L.NBBY), cluster_runs) if css > 0 else b""


def _bitmap(nbytes: int, runs) -> bytearray:
    """A little-endian-bit map (bit i of byte i // 8 is item i) with the
    given (first, count) runs set."""
    buf = bytearray(nbytes)
    for s, n in runs:
        e = s + n
        while s < e and s & 7:
            buf[s >> 3] |= 1 << (s & 7)
            s += 1
        whole = (e - s) >> 3
        if whole:
            buf[s >> 3:(s >> 3) + whole] = b"\xff" * whole
            s += whole << 3
        while s < e:
            buf[s >> 3] |= 1 << (s & 7)
            s += 1
    return buf


def _int_opt(value, name: str):
    if value is None:
        return None
    try:
        return G.parse_amount(value, name)
    except RumpfsError:
        raise
    except Exception:  # pragma: no cover
        raise RumpfsError(f"{name} {value}: not a number") from None


def _summary(plan: Plan, p: G.Params, geo: G.Geometry) -> str:
    return (f"{len(plan.inodes) - 2} inodes, {plan.data_bytes} bytes of file data, "
            f"{geo.describe()}; {p.describe()}")


def write_image(tree, sink, byteorder: str, ufs2: bool, opts: dict, progress=None) -> int:
    """Write ``tree`` as an FFS image into ``sink``; returns the image size."""
    # The plan makes an object per inode and nothing cyclic worth collecting:
    # the collector's full passes over the tree would cost more than the work.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return Writer(tree, sink, byteorder, ufs2, opts, progress).write()
    finally:
        if enabled:
            gc.enable()
