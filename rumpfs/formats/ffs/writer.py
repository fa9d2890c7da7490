"""Writing a NetBSD FFS image (UFS1 or UFS2, either byte order).

The writer works in three steps:

1. **Plan** (:class:`Plan`): walk the tree once, give every node an inode
   number (the root is ``UFS_ROOTINO``; the entries of a directory get
   consecutive numbers, in byte order of their names, before the writer
   descends into its subdirectories, as makefs does), count link counts,
   build the directories' bytes and work out each inode's blocks: full blocks
   of data, the fragment tail of a small file's last block (only a direct
   block may be a run of fragments, fs.h ``blksize``), and the indirect
   blocks that map the rest.  Holes of sparse files get no block at all (a
   zero block pointer).
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

A tree may have hundreds of thousands of inodes, most of them small files, so
the plan keeps per-inode facts in parallel lists indexed by inode number and
keeps objects (:class:`Blocks`) only for the inodes that have full blocks.

Every structure comes from :mod:`.layout` (the declarations of fs.h,
dinode.h and dir.h) and is packed with the precompiled ``struct`` forms
derived from those declarations (:meth:`.layout.Layout.fast`), the
superblock included: writing an image does not import construct.
"""

from __future__ import annotations

import gc
import os
import stat
import struct
import sys
import zlib
from array import array
from bisect import bisect_left, bisect_right
from itertools import repeat
from operator import attrgetter, itemgetter

from ...errors import RumpfsError
from ...output import BATCH_JOBS
from ...tree import HostData, display, join
from . import geometry as G
from . import layout as L
from .layout import howmany

#: Typecode of the arrays of fragment addresses (64 bits).
_ADDR = "q"
#: Typecode of the arrays of inode numbers and tail block numbers: 32 bits
#: (a tree held in memory never reaches 2**31 inodes), half the memory.
_INO = "i"
#: Typecode of the arrays of first fragments in a block (at most MAXFRAG).
_FRAG = "B"
#: The owner of the csum area when it is packed among the fragment tails,
#: and of a fragment no tail starts at.
CSUM_OWNER = -1
NO_OWNER = -2
#: Whether an owner is an inode (neither of the above).
_is_inode = (0).__le__
#: Inodes packed in memory before one pwrite.
INODE_BATCH = 8192
#: Rounds of growing the image until --density gives the inodes it needs.
DENSITY_ROUNDS = 32
#: fs_old_rps: the revolutions per second newfs writes for UFS1 (unused since 4.4BSD).
OLD_RPS = 60
#: Largest second count UFS1 keeps in its 32-bit time fields.
INT32_MAX = 0x7FFFFFFF
INT32_MIN = -0x80000000
NS_PER_SEC = 1_000_000_000
#: Block pointers of an inode: di_db then di_ib.
NPTR = L.UFS_NDADDR + L.UFS_NIADDR
NO_POINTERS = (0,) * NPTR

_KIND_TO_DT = {
    stat.S_IFREG: L.DT_REG, stat.S_IFDIR: L.DT_DIR, stat.S_IFLNK: L.DT_LNK,
    stat.S_IFCHR: L.DT_CHR, stat.S_IFBLK: L.DT_BLK, stat.S_IFIFO: L.DT_FIFO,
    stat.S_IFSOCK: L.DT_SOCK,
}


#: NetBSD's 32-bit dev_t (sys/types.h makedev): 12 bits of major, 20 of minor.
DEV_MAJOR_MAX = 0xFFF
DEV_MINOR_MAX = 0xFFFFF
_DEV_MAJOR_BITS = 0x000FFF00
_DEV_MINOR_HIGH_BITS = 0xFFF00000
_DEV_MINOR_LOW_BITS = 0xFF


def encode_rdev(rdev: int) -> int:
    """A host ``st_rdev`` as NetBSD's ``makedev`` stores it: major in bits
    8-19, minor in bits 0-7 and 20-31."""
    major, minor = os.major(rdev), os.minor(rdev)
    if major > DEV_MAJOR_MAX or minor > DEV_MINOR_MAX:
        raise ValueError(f"device {major},{minor} does not fit NetBSD's dev_t")
    return (((major << 8) & _DEV_MAJOR_BITS) | ((minor << 12) & _DEV_MINOR_HIGH_BITS)
            | (minor & _DEV_MINOR_LOW_BITS))


#: di_gen: a multiplicative hash of the inode number (Knuth's golden ratio).
GEN_MULTIPLIER = 2654435761
GEN_MASK = 0x7FFFFFFF


def di_gens(first: int, end: int) -> list[int]:
    """The generation numbers of inodes ``first`` .. ``end - 1``: deterministic
    and non-zero (makefs uses random())."""
    return [((ino * GEN_MULTIPLIER) & GEN_MASK) or 1 for ino in range(first, end)]


class Blocks:
    """The full blocks of one inode (only inodes that have some get one)."""

    __slots__ = ("runs", "nfull", "nind", "start", "ib")

    def __init__(self, runs, nfull: int, nind: int):
        #: Full data blocks: [(first lbn, count)] in lbn order; their number.
        self.runs = runs
        self.nfull = nfull
        #: Indirect blocks that map them.
        self.nind = nind
        #: Data block index of the first full block (set by the allocation).
        self.start = 0
        #: di_ib: the indirect blocks' addresses (set when they are written).
        self.ib = [0] * L.UFS_NIADDR


class Plan:
    """Inode numbers, directory contents and block needs of a tree.

    Per-inode facts are parallel lists indexed by inode number (0 and
    ``UFS_WINO`` are unused placeholders)."""

    def __init__(self, tree, p: G.Params, byteorder: str):
        self.p = p
        self.direct = L.structs(byteorder).fast("direct").struct
        #: The tree node, its S_IFMT type and link count.
        self.nodes: list = [None] * L.UFS_ROOTINO
        self.kinds = array("H", [0] * L.UFS_ROOTINO)  # S_IFMT values fit 16 bits
        self.nlinks = array("I", [0] * L.UFS_ROOTINO)
        #: di_size; fragments held (data, tail and indirect blocks).
        self.sizes: list[int] = [0] * L.UFS_ROOTINO
        self.frags: list[int] = [0] * L.UFS_ROOTINO
        #: Directories: ino -> (names in byte order, their inos); ino -> parent
        #: ino.  (Two flat sequences, not a pair per name: memory.)
        self.dirs: dict[int, tuple[list, array]] = {}
        self.parents: dict[int, int] = {}
        #: The bytes of directories with full blocks, built once.
        self.content: dict[int, bytes] = {}
        #: Inodes with full blocks, in inode order.
        self.blocks: dict[int, Blocks] = {}
        #: Sparse files: ino -> byte runs of the source that hold data.
        self.sparse: dict[int, list] = {}
        #: Per inode, 1 for a host file known to have no holes (the sink
        #: copies its tail as it is).
        self.dense_host = bytearray()
        #: Fast symlinks, devices, fifos and sockets.
        self.no_data: list[int] = []
        self.full_blocks = 0
        self.data_bytes = 0
        # tails[s]: inodes whose last block is a run of s fragments
        self.tails: list[array] = [array(_INO) for _ in range(p.frag)]
        self._number(tree)
        self.count = len(self.nodes)
        self.dense_host = bytearray(self.count)
        self._sizes()

    # -- inode numbers -------------------------------------------------------
    def _number(self, tree) -> None:
        # The nodes met so far, to find hard links (nodes hash by identity):
        # a set, not node -> ino, as it holds every file (memory); a further
        # name gets its number once all are numbered.
        seen: set = set()
        again = []  # (the directory's inos, index, node) of further names
        nodes, kinds, nlinks = self.nodes, self.kinds, self.nlinks
        dirs = self.dirs
        ifmt = stat.S_IFMT
        root = L.UFS_ROOTINO
        nodes.append(tree.root)
        kinds.append(stat.S_IFDIR)
        nlinks.append(0)
        self.parents[root] = root
        stack = [root]
        while stack:
            d = stack.pop()
            children = nodes[d].children
            if children and max(map(len, children)) > L.FFS_MAXNAMLEN:
                self._long_name(d, sorted(children))
            names = sorted(children)
            inos = array("I")  # d_ino: 32 bits
            dirs[d] = names, inos
            add_ino = inos.append
            subdirs = []
            for name in names:
                child = children[name]
                if child.children is not None:
                    ino = len(nodes)
                    nodes.append(child)
                    kinds.append(stat.S_IFDIR)
                    nlinks.append(0)
                    subdirs.append(ino)
                elif child in seen:
                    again.append((inos, len(inos), child))
                    ino = 0
                else:
                    seen.add(child)
                    ino = len(nodes)
                    nodes.append(child)
                    kinds.append(ifmt(child.mode))
                    nlinks.append(1)
                add_ino(ino)
            nlinks[d] = 2 + len(subdirs)
            for ino in subdirs:
                self.parents[ino] = d
            stack.extend(reversed(subdirs))
        del seen
        if again:
            linked = {node for _, _, node in again}
            first = {node: ino for ino, node in enumerate(nodes) if node in linked}
            for inos, k, node in again:
                ino = inos[k] = first[node]
                nlinks[ino] += 1

    def _long_name(self, d: int, names) -> None:
        name = next(n for n in names if len(n) > L.FFS_MAXNAMLEN)
        raise RumpfsError(f"{display(join(self.path_of(d), name))}: name is {len(name)} bytes, "
                          f"longer than {L.FFS_MAXNAMLEN}")

    def path_of(self, ino: int) -> bytes:
        """The first path of an inode (for messages: a search, not a table)."""
        if ino == L.UFS_ROOTINO:
            return b""
        for d, (names, inos) in self.dirs.items():
            for name, child in zip(names, inos):
                if child == ino:
                    return join(self.path_of(d), name)
        raise KeyError(ino)  # pragma: no cover

    # -- sizes and blocks ------------------------------------------------------
    def _sizes(self) -> None:
        """di_size and the blocks of every inode, in inode order."""
        p = self.p
        bsize, fsize, frag = p.bsize, p.fsize, p.frag
        direct_bytes = L.UFS_NDADDR * bsize
        maxfilesize = p.maxfilesize
        ifreg, ifdir, iflnk = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
        add_size, add_frags = self.sizes.append, self.frags.append
        tails, blocks, dense_host = self.tails, self.blocks, self.dense_host
        data_bytes = full_blocks = 0
        root = L.UFS_ROOTINO
        for ino, kind, node in zip(range(root, self.count), self.kinds[root:], self.nodes[root:]):
            extents = None
            if kind == ifreg:
                data = node.data
                size = data.size if data is not None else 0
                if not size:
                    add_size(0)
                    add_frags(0)
                    continue
                if size > maxfilesize:
                    raise RumpfsError(f"{display(self.path_of(ino))}: {size} bytes, more than the "
                                      f"largest file of this file system ({p.maxfilesize} bytes, "
                                      f"{p.describe()})")
                if data.dense:
                    data_bytes += size
                    if isinstance(data, HostData):
                        dense_host[ino] = 1
                else:
                    extents = data.extents()
                    if len(extents) != 1 or extents[0] != (0, size):
                        self.sparse[ino] = extents
                        data_bytes += sum(n for _, n in extents)
                    else:
                        extents = None
                        data_bytes += size
            elif kind == ifdir:
                size = self._dir_size(ino)
            elif kind == iflnk and len(node.target) >= p.maxsymlinklen:
                size = len(node.target)
            else:
                # Fast symlinks live in the inode; other kinds have no data.
                add_size(len(node.target) if kind == iflnk else 0)
                add_frags(0)
                self.no_data.append(ino)
                continue
            add_size(size)
            if extents is None and size <= direct_bytes:
                # Most inodes: dense, in direct blocks; the last one may be
                # a run of fragments unless it is full (or nearly: a tail of
                # ``frag`` fragments is a whole block).
                nfull, rest = divmod(size, bsize)
                tail = -(-rest // fsize)
                if tail == frag:
                    nfull, tail = nfull + 1, 0
                if nfull:
                    blocks[ino] = Blocks([(0, nfull)], nfull, 0)
                    full_blocks += nfull
                if tail:
                    tails[tail].append(ino)
                add_frags(nfull * frag + tail)
            else:
                add_frags(self._layout(ino, size, extents))
        self.data_bytes += data_bytes
        self.full_blocks += full_blocks

    def _layout(self, ino: int, size: int, extents) -> int:
        """Plan the blocks of a non-empty inode that needs indirect blocks or
        has holes; returns the fragments it holds."""
        p = self.p
        bsize, frag = p.bsize, p.frag
        nblk = howmany(size, bsize)
        runs = [(0, nblk)] if extents is None else _lbn_runs(extents, bsize)
        tail = 0
        if nblk <= L.UFS_NDADDR:
            last = nblk - 1
            tail = howmany(size - last * bsize, p.fsize)
            # The last direct block is always allocated, hole or not: the
            # kernel extends it in place when the file grows.
            runs = _without(runs, last) if tail < frag else _with(runs, last)
            if tail == frag:
                tail = 0
        else:
            # So is the last block past the direct ones: every BSD kernel
            # allocates a file's last byte, FreeBSD's fsck_ffs shortens a file
            # whose size ends in a hole, and rumpfs's readers refuse it.
            runs = _with(runs, nblk - 1)
        nfull = sum(n for _, n in runs)
        nind = count_indirect(runs, p.nindir)
        if nfull or nind:
            self.blocks[ino] = Blocks(runs, nfull, nind)
            self.full_blocks += nfull + nind
        if tail:
            self.tails[tail].append(ino)
        return (nfull + nind) * frag + tail

    def _dir_size(self, ino: int) -> int:
        """Bytes of a directory: '.', '..' and the entries packed into
        DIRBLKSIZ chunks that no entry crosses (dir.h).  The bytes themselves
        are made later (:meth:`dir_bytes`), while the copies run."""
        reclens = list(map(_RECLEN.__getitem__, map(len, self.dirs[ino][0])))
        pos = _DOTS_RECLEN + sum(reclens)
        if pos <= L.DIRBLKSIZ:
            return L.DIRBLKSIZ
        chunks = 1
        pos = _DOTS_RECLEN
        for n in reclens:
            if pos + n > L.DIRBLKSIZ:
                chunks += 1
                pos = 0
            pos += n
        return chunks * L.DIRBLKSIZ

    def dir_bytes(self, ino: int) -> bytes:
        """The directory's bytes: '.', '..' and the entries, packed into
        DIRBLKSIZ chunks that no entry crosses; the last entry of a chunk
        takes up its free end (dir.h).  Kept for a directory with full
        blocks, whose tail is written later; the many small ones are made
        when written (memory)."""
        raw = self.content.get(ino)
        if raw is None:
            raw = self._dir_bytes(ino)
            if len(raw) != self.sizes[ino]:  # pragma: no cover - _dir_size agrees
                raise AssertionError(f"{display(self.path_of(ino))}: directory size mismatch")
            if ino in self.blocks:
                self.content[ino] = raw
        return raw

    def _dir_bytes(self, ino: int) -> bytes:
        kinds = self.kinds
        records = [(b".", ino), (b"..", self.parents[ino])]
        records += zip(*self.dirs[ino])
        pack = self.direct.pack
        parts = []
        pos = 0
        last = None  # the last entry of this chunk: (ino, reclen, d_type, name)
        for name, child in records:
            namlen = len(name)
            n = _RECLEN[namlen]
            if pos + n > L.DIRBLKSIZ:
                free = L.DIRBLKSIZ - pos
                c, r, t, nm = last
                parts[-3] = pack(c, r + free, t, len(nm))
                parts.append(bytes(free))
                pos = 0
            dtype = _KIND_TO_DT[kinds[child]]
            parts += (pack(child, n, dtype, namlen), name, _NAME_PAD[namlen])
            last = (child, n, dtype, name)
            pos += n
        free = L.DIRBLKSIZ - pos
        c, r, t, nm = last
        parts[-3] = pack(c, r + free, t, len(nm))
        parts.append(bytes(free))
        return b"".join(parts)

    # -- tails ---------------------------------------------------------------
    def pack_tails(self, cs_frags: int):
        """Best-fit-decreasing packing of the fragment tails (and a csum area
        of ``cs_frags`` fragments, owner CSUM_OWNER) into blocks.

        Returns (number of blocks, (owners, blocks, first fragments) as
        three arrays, one item per tail, [(block, free fragments at its
        end)]).  Arrays, not a tuple per tail: memory."""
        frag = self.p.frag
        open_bins: list[list[int]] = [[] for _ in range(frag)]
        nbins = 0
        owners, blocks, firsts = array(_INO), array(_INO), array(_FRAG)
        for s in range(frag - 1, 0, -1):
            items = self.tails[s]
            if cs_frags == s:
                items = array(_INO, (CSUM_OWNER,)) + items
            i, n = 0, len(items)
            while i < n:
                # The fullest blocks with room (free fragments at their end).
                r = next((r for r in range(s, frag) if open_bins[r]), frag)
                if r < frag and r < 2 * s:
                    # Each of these blocks takes one tail (in the order best
                    # fit pops them); what is left is too small for another.
                    bins = open_bins[r]
                    k = min(len(bins), n - i)
                    taken = bins[len(bins) - k:][::-1]
                    del bins[len(bins) - k:]
                    owners.extend(items[i:i + k])
                    blocks.extend(taken)
                    firsts.extend(repeat(frag - r, k))
                    if r > s:
                        open_bins[r - s].extend(taken)
                    i += k
                elif r < frag:
                    # Best fit keeps choosing this block while a tail fits:
                    # its room is then the smallest that holds one.
                    b = open_bins[r].pop()
                    m = min(r // s, n - i)
                    owners.extend(items[i:i + m])
                    blocks.extend(repeat(b, m))
                    firsts.extend(range(frag - r, frag - r + m * s, s))
                    i += m
                    if r > m * s:
                        open_bins[r - m * s].append(b)
                else:
                    # No room anywhere: new blocks, each filled with per tails.
                    per = frag // s
                    k = n - i
                    nb = howmany(k, per)
                    owners.extend(items[i:])
                    blocks.extend(nbins + j // per for j in range(k))
                    firsts.extend(j % per * s for j in range(k))
                    full = k // per
                    if frag > per * s:
                        open_bins[frag - per * s].extend(range(nbins, nbins + full))
                    if k % per:
                        open_bins[frag - k % per * s].append(nbins + full)
                    nbins += nb
                    i = n
        free = sorted((b, r) for r in range(1, frag) for b in open_bins[r])
        return nbins, (owners, blocks, firsts), free


#: Bytes of a directory entry by name length (dir.h UFS_DIRECTSIZ), and the
#: NUL and padding that follow the name.
_RECLEN = [L.UFS_DIRECTSIZ(n) for n in range(L.FFS_MAXNAMLEN + 1)]
_NAME_PAD = [bytes(_RECLEN[n] - L.DIRECT_HEADER_SIZE - n) for n in range(L.FFS_MAXNAMLEN + 1)]
_DOTS_RECLEN = _RECLEN[len(b".")] + _RECLEN[len(b"..")]
_first = itemgetter(0)
#: Fields the writer fills that only struct ufs2_dinode has.
_UFS2_ONLY = {"di_birthtime", "di_birthnsec"}


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


#: Share of the tail copies handed to the sink before the directories are
#: made (about what the workers' pipes hold), the rest while inodes are.
FIRST_COPIES = 0.2
#: Fragment tails written from memory: at most this many pieces a pwrite.
PIECES_PER_WRITE = 4096
#: Directory tails made at a time.
DIRS_PER_BATCH = 4096
#: The di_db and di_ib fields, in order (positional names of the declaration).
_POINTER_NAMES = ([f"di_db[{i}]" for i in range(L.UFS_NDADDR)]
                  + [f"di_ib[{i}]" for i in range(L.UFS_NIADDR)])
_attr = {name: attrgetter(name)
         for name in ("atime_ns", "mtime_ns", "ctime_ns", "uid", "gid", "mode")}


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

        inodes = plan.count
        free_inodes = o.get("free_inodes")
        if free_inodes is not None:
            inodes += G.parse_amount(free_inodes, "--free-inodes", plan.count - 2)
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
        for _ in range(DENSITY_ROUNDS):
            if density is None:
                break
            want = howmany(geo.image_bytes, density)
            if want <= need.inodes:
                break
            need.inodes = want
            geo = G.solve_auto(p, need)
        minimum = geo.image_bytes
        floor = G.floor_bytes(p)

        exact = o.get("size")
        min_size = o.get("min_size")
        max_size = o.get("max_size")
        target = None
        if exact is not None:
            target = G.parse_amount(exact, "--size")
            what = "--size"
            if target < floor:
                raise RumpfsError(f"--size {target}: smaller than {floor} bytes, the smallest "
                                  f"FFS image every BSD kernel mounts ({_floor_why(p)})")
        elif min_size is not None and G.parse_amount(min_size, "--min-size") > max(minimum, floor):
            target = G.parse_amount(min_size, "--min-size")
            what = "--min-size"
        elif minimum < floor:
            # A small tree: the file system covers the floor, like --size would.
            target = floor
            what = "the smallest image"
        if target is not None:
            if density is not None:
                need.inodes = max(need.inodes, howmany(target, density))
            fixed = G.solve_fixed(p, need, target)
            if fixed is None and density is not None:
                need.inodes = inodes
                fixed = G.solve_fixed(p, need, target)
            if fixed is None:
                raise RumpfsError(f"{what} {target}: too small, the tree needs at least "
                                  f"{max(minimum, floor)} bytes ({_summary(plan, p, geo)})")
            geo = fixed
            self.file_size = target
        else:
            self.file_size = geo.image_bytes
        if max_size is not None:
            limit = G.parse_amount(max_size, "--max-size")
            if exact is not None and target > limit:
                raise RumpfsError(f"--size {target} is larger than --max-size {limit}")
            if limit < floor:
                raise RumpfsError(f"--max-size {limit}: smaller than {floor} bytes, the smallest "
                                  f"FFS image every BSD kernel mounts ({_floor_why(p)})")
            if self.file_size > limit:
                raise RumpfsError(f"--max-size {limit}: too small, the tree needs "
                                  f"{self.file_size} bytes ({_summary(plan, p, geo)})")
        return geo

    # -- the whole job -----------------------------------------------------------
    def write(self) -> int:
        p = self.params()
        self._superblock_options()
        plan = Plan(self.tree, p, self.byteorder)
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
        for blk in plan.blocks.values():
            blk.start = cursor
            cursor += blk.nfull + blk.nind
        self.tail_base = cursor
        key = cs_frags if cs_frags < p.frag else 0
        packing = self._packing.get(key) or plan.pack_tails(key)
        self._packing = None  # the sizing's other packings: memory
        plan.tails = None  # packed
        nbins, (owners, blocks, firsts), free = packing
        self.used_blocks = self.tail_base + nbins
        if self.used_blocks > geo.data_blocks:  # pragma: no cover - sizing guarantees room
            raise AssertionError(f"planned {self.used_blocks} blocks, room for {geo.data_blocks}")
        bin_addrs = geo.block_addrs(self.tail_base, nbins)
        self.csaddr = geo.data_addr(0)
        #: Fragment address of each inode's tail (0: none).
        self.tail_addr = tail_addr = array(_ADDR, (0,)) * plan.count
        #: Whether the csum area is a tail among the others.
        self.cs_tail = False
        # The tails in image order: a counting sort on (block, fragment),
        # in an array (a sorted list would hold an int object per tail).
        by_place = array(_INO, (NO_OWNER,)) * (nbins * p.frag)
        for owner, b, off in zip(owners, blocks, firsts):
            by_place[b * p.frag + off] = owner
            if owner == CSUM_OWNER:
                self.csaddr = bin_addrs[b] + off
                self.cs_tail = True
            else:
                tail_addr[owner] = bin_addrs[b] + off
        self._tail_order = array(_INO, filter(_is_inode, by_place))
        del by_place
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
        nino = plan.count
        ndir = [plan.kinds[c * geo.ipg:(c + 1) * geo.ipg].count(stat.S_IFDIR)
                for c in range(geo.ncg)]
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
    def _data_offset_runs(self, blk: Blocks):
        """(first lbn, fragment address, blocks) of an inode's full blocks."""
        geo = self.geo
        idx = blk.start
        for lbn, n in blk.runs:
            for addr, m in geo.data_runs(idx, n):
                yield lbn, addr, m
                lbn += m
            idx += n

    def _content(self, ino: int):
        """The inode's data: a node's data object, or bytes."""
        plan = self.plan
        kind = plan.kinds[ino]
        if kind == stat.S_IFREG:
            return plan.nodes[ino].data
        if kind == stat.S_IFDIR:
            return plan.dir_bytes(ino)
        return plan.nodes[ino].target

    def _write_full_blocks(self, plan: Plan, geo: G.Geometry) -> None:
        p = self.p
        sink = self.sink
        bsize, fsize = p.bsize, p.fsize
        for ino, blk in plan.blocks.items():
            data = self._content(ino)
            size = plan.sizes[ino]
            extents = plan.sparse.get(ino) or ((0, size),)
            for lbn, addr, m in self._data_offset_runs(blk):
                lo, hi = lbn * bsize, min((lbn + m) * bsize, size)
                if isinstance(data, (bytes, bytearray)):
                    sink.pwrite(data[lo:hi], addr * fsize)
                    continue
                for off, length in extents:
                    a, b = max(off, lo), min(off + length, hi)
                    if a < b:
                        sink.copy_at(data, addr * fsize + (a - lo), a, b - a)
            if blk.nind:
                self._write_indirect(ino, blk)

    def _write_indirect(self, ino: int, blk: Blocks) -> None:
        """Build and write the indirect blocks of an inode (each as soon as it
        is complete, so memory does not grow with the file); set ``blk.ib``."""
        p = self.p
        geo = self.geo
        nindir = p.nindir
        frag = p.frag
        ptr_type = self.ptr_type
        empty = bytes(nindir * array(ptr_type).itemsize)
        # (first lbn, fragment address, blocks) runs and where each ends.
        runs = list(self._data_offset_runs(blk))
        ends = [s + n for s, _a, n in runs]
        next_idx = [blk.start + blk.nfull]

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

        try:
            blk.ib = [build(lo, spans[0], level)
                      for level, (lo, _hi, spans) in enumerate(_levels(nindir), start=1)]
        finally:
            # build calls itself through its closure cell: a reference cycle
            # that holds this writer, and through it the plan and the whole
            # tree, until the collector finds it (a full pass over every
            # node: 0.11 s for a /usr/share of 55,000 entries).
            build = None
        if next_idx[0] != blk.start + blk.nfull + blk.nind:  # pragma: no cover
            raise AssertionError(f"{display(self.plan.path_of(ino))}: indirect block count mismatch")

    def _write_tails(self, plan: Plan, geo: G.Geometry) -> None:
        """The fragment tails: host file tails are copied by the sink, the
        rest (directories, symlinks, generated files, a small csum area) is
        written from memory.  Free fragments are never written (holes)."""
        p = self.p
        bsize, fsize = p.bsize, p.fsize
        nodes, kinds, sizes, dir_bytes = plan.nodes, plan.kinds, plan.sizes, plan.dir_bytes
        sparse = plan.sparse
        tail_addr = self.tail_addr
        pieces = []  # (fragment address, bytes) written from memory
        if self.cs_tail:
            pieces.append((self.csaddr, self._csum_bytes(geo)))
        # The inodes whose tail the sink copies from a host file, in image
        # order, so that a worker writes neighbouring tails at once (the
        # zeros between them are their own fragments' ends); the copy jobs
        # are made a batch at a time (memory).
        copied = array(_INO)
        dirs = array(_INO)  # directories with a tail
        dense_host = plan.dense_host
        for owner in self._tail_order:
            if dense_host[owner]:
                # Most tails belong to dense host files: taken the short
                # way, as the copy workers are waiting for them.
                copied.append(owner)
                continue
            size = sizes[owner]
            lo = (size - 1) // bsize * bsize
            kind = kinds[owner]
            if kind == stat.S_IFREG:
                data = nodes[owner].data
                if not isinstance(data, HostData):
                    pieces.append((tail_addr[owner], data.data[lo:size]))
                elif owner not in sparse or any(off < size and off + n > lo
                                                for off, n in sparse[owner]):
                    copied.append(owner)
            elif kind == stat.S_IFDIR:
                dirs.append(owner)
            else:
                pieces.append((tail_addr[owner], nodes[owner].target[lo:]))
        self._tail_order = None
        self.sink.copies_own_units(fsize)
        self._copied = copied
        self._copies_sent = 0
        # The workers copy while this process makes the directories, a
        # batch at a time (a million small directories' bytes: memory).
        self._hand_over(FIRST_COPIES)
        self._write_pieces(pieces)
        for k in range(0, len(dirs), DIRS_PER_BATCH):
            pieces = []
            for owner in dirs[k:k + DIRS_PER_BATCH]:
                lo = (sizes[owner] - 1) // bsize * bsize
                pieces.append((tail_addr[owner], dir_bytes(owner)[lo:]))
            self._write_pieces(pieces)
        if self.cs_full:
            self.sink.pwrite(self._csum_bytes(geo), self.csaddr * fsize)

    def _hand_over(self, share: float) -> None:
        """Give the sink the first ``share`` of the tail copies.

        The same jobs as one ``sink.copy_at`` per tail, but a batch at a time
        (a hundred thousand small files make the per-call cost count), and
        spread over the writing of the inode tables: this process then packs
        inodes while the workers copy, instead of waiting for room in their
        pipes first."""
        copied = self._copied
        end = int(len(copied) * share)
        add = self.sink.copier.add
        for k in range(self._copies_sent, end, BATCH_JOBS):
            add(self._tail_copies(copied[k:min(k + BATCH_JOBS, end)]))
        self._copies_sent = max(end, self._copies_sent)

    def _tail_copies(self, owners: list) -> list:
        """The copy jobs (host data, source offset, image offset, length) of
        the tails of ``owners``."""
        bsize, fsize = self.p.bsize, self.p.fsize
        plan = self.plan
        sizes, nodes, tail_addr = plan.sizes, plan.nodes, self.tail_addr
        jobs = []
        for owner in owners:
            size = sizes[owner]
            lo = (size - 1) // bsize * bsize
            jobs.append((nodes[owner].data, lo, tail_addr[owner] * fsize, size - lo))
        return jobs

    def _write_pieces(self, pieces) -> None:
        """pwrite ``(fragment address, bytes)`` pieces, those that follow each
        other merged into one write (each padded to whole fragments: the
        padding is its owner's own free space)."""
        fsize = self.p.fsize
        pieces.sort(key=_first)
        run: list = []
        start = end = -1
        for addr, piece in pieces:
            if not piece:
                continue
            if addr != end or len(run) >= PIECES_PER_WRITE:
                if run:
                    self.sink.pwrite(b"".join(run), start * fsize)
                run = []
                start = addr
            nfrag = howmany(len(piece), fsize)
            run.append(piece)
            if len(piece) < nfrag * fsize:
                run.append(bytes(nfrag * fsize - len(piece)))
            end = addr + nfrag
        if run:
            self.sink.pwrite(b"".join(run), start * fsize)

    def _csum_bytes(self, geo: G.Geometry) -> bytes:
        csum = self.layout.fast("csum").struct
        out = bytearray()
        for cg in self.cgs:
            out += csum.pack(cg.ndir, cg.nbfree, cg.nifree, cg.nffree)
        return bytes(out)

    # -- inodes ----------------------------------------------------------------------
    def _unstorable(self, ino: int, error: Exception) -> RumpfsError:
        """Why an inode does not fit its on-disk fields (a UFS1 time after
        2038, an owner beyond 32 bits...), naming the path and the limit."""
        n = self.plan.nodes[ino]
        path = self.plan.path_of(ino)
        if not self.ufs2:
            for label, ns in (("mtime", n.mtime_ns), ("atime", n.atime_ns), ("ctime", n.ctime_ns)):
                sec = ns // NS_PER_SEC
                if not INT32_MIN <= sec <= INT32_MAX:
                    return RumpfsError(f"{display(path)}: {label} {sec} is outside the 32-bit "
                                       f"times of UFS1 ({INT32_MIN}..{INT32_MAX}); "
                                       f"use --format ffs2 or --timestamp")
        for label, value in (("uid", n.uid), ("gid", n.gid)):
            if not 0 <= value <= 0xFFFFFFFF:
                return RumpfsError(f"{display(path)}: {label} {value} is outside 0..{0xFFFFFFFF}")
        return RumpfsError(f"{display(path)}: cannot be stored in "
                           f"{'UFS2' if self.ufs2 else 'UFS1'}: {error}")

    def _pointers(self, plan: Plan) -> dict:
        """di_db + di_ib of the inodes that hold more than (at most) a tail
        in di_db[0]: files with full blocks, sparse files, fast symlinks (the
        target lives there) and devices (di_rdev)."""
        p = self.p
        frag, bsize = p.frag, p.bsize
        tail_addr = self.tail_addr
        out = {}
        for ino, blk in plan.blocks.items():
            v = [0] * NPTR
            for lbn, addr, m in self._data_offset_runs(blk):
                if lbn >= L.UFS_NDADDR:
                    break
                for k in range(min(m, L.UFS_NDADDR - lbn)):
                    v[lbn + k] = addr + k * frag
            if tail_addr[ino]:
                v[(plan.sizes[ino] - 1) // bsize] = tail_addr[ino]
            v[L.UFS_NDADDR:] = blk.ib
            out[ino] = v
        for ino in plan.sparse:
            if ino not in out and tail_addr[ino]:
                v = [0] * NPTR
                v[(plan.sizes[ino] - 1) // bsize] = tail_addr[ino]
                out[ino] = v
        inline = _inline_struct(self.byteorder, self.ufs2)
        nodes, kinds = plan.nodes, plan.kinds
        for ino in plan.no_data:
            kind = kinds[ino]
            if kind == stat.S_IFLNK:
                out[ino] = inline.unpack(nodes[ino].target.ljust(p.maxsymlinklen, b"\0"))
            elif kind == stat.S_IFCHR or kind == stat.S_IFBLK:
                try:
                    rdev = encode_rdev(nodes[ino].rdev)
                except ValueError as e:
                    raise RumpfsError(f"{display(plan.path_of(ino))}: {e}") from None
                if not self.ufs2 and rdev > INT32_MAX:
                    # UFS1's di_rdev is di_db[0], an int32_t: NetBSD's 32-bit
                    # dev_t lands there as the same bits, read as negative.
                    rdev -= 1 << 32
                out[ino] = (rdev,) + NO_POINTERS[1:]
        return out

    def _inode_columns(self, plan: Plan, first: int, last: int, pointers: dict,
                       special) -> tuple[dict, int]:
        """Field name -> the values of inodes ``first`` .. ``last - 1``
        (fields left out are zero), and the newest mtime or ctime among them
        (ns); ``special``: the sorted keys of ``pointers``, the inodes with
        more than a tail in di_db[0]."""
        nodes = plan.nodes[first:last]
        count = last - first
        spf = self.p.sectors_per_frag
        cols = {
            "di_mode": [n.mode & 0xFFFF for n in nodes],
            "di_nlink": plan.nlinks[first:last],
            "di_uid": list(map(_attr["uid"], nodes)),
            "di_gid": list(map(_attr["gid"], nodes)),
            "di_size": plan.sizes[first:last],
            "di_gen": di_gens(first, last),
            "di_blocks": [f * spf for f in plan.frags[first:last]],
        }
        # The reproducibility policy makes a node's three times equal: a
        # column of times is split into seconds and nanoseconds only once.
        split = []  # (times, (seconds, nanoseconds))
        newest = 0
        for field in ("mtime", "atime", "ctime"):
            ns = list(map(_attr[field + "_ns"], nodes))
            parts = next((parts for times, parts in split if times == ns), None)
            if parts is None:
                parts = tuple(zip(*map(divmod, ns, repeat(NS_PER_SEC))))
                split.append((ns, parts))
            if field != "atime":
                newest = max(newest, max(ns))
            cols["di_" + field], cols[f"di_{field}nsec"] = parts
        cols["di_birthtime"], cols["di_birthnsec"] = cols["di_mtime"], cols["di_mtimensec"]
        # Most inodes have at most a tail, in di_db[0]; patch in the others
        # (a pointer column left out is zero; di_db[0] always replaced, as a
        # sparse file's tail may be in a later block).
        ptrs = {0: self.tail_addr[first:last]}
        for ino in special[bisect_left(special, first):bisect_left(special, last)]:
            for k, value in enumerate(pointers[ino]):
                column = ptrs.get(k)
                if column is None:
                    if not value:
                        continue
                    column = ptrs[k] = [0] * count
                column[ino - first] = value
        cols.update((_POINTER_NAMES[k], column) for k, column in ptrs.items())
        return cols, newest

    def _write_inodes(self, plan: Plan, geo: G.Geometry) -> None:
        fast = self.layout.fast("ufs2_dinode" if self.ufs2 else "ufs1_dinode")
        pointers = self._pointers(plan)
        special = sorted(pointers)
        total = plan.count
        newest = 0
        # Batches of inodes within one group's table; the first starts at
        # a whole inode so the buffer lines up with the table.
        batches = []
        for c in range(geo.ncg):
            lo = max(c * geo.ipg, L.UFS_ROOTINO)
            hi = min((c + 1) * geo.ipg, total)
            batches += [(first, min(first + INODE_BATCH, hi)) for first in range(lo, hi, INODE_BATCH)]
        for done, (first, last) in enumerate(batches):
            self._hand_over(done / len(batches))
            cols, batch_newest = self._inode_columns(plan, first, last, pointers, special)
            unknown = cols.keys() - set(fast.names) - _UFS2_ONLY
            if unknown:  # pragma: no cover - a field name the layout does not have
                raise AssertionError(f"dinode has no field {sorted(unknown)}")
            try:
                table = fast.pack_columns(cols, last - first)
            except OverflowError:
                zeros = [0] * (last - first)
                self._find_unstorable(fast.struct, first,
                                      [cols.get(name, zeros) for name in fast.names])
                raise
            newest = max(newest, batch_newest)
            off, _ = geo.inode_addr(first)
            self.sink.pwrite(table, off)
        self._hand_over(1)
        self.newest_ns = newest

    def _find_unstorable(self, one: struct.Struct, first: int, columns) -> None:
        """Raise the message for the first inode of a batch that does not pack."""
        for k, row in enumerate(zip(*columns)):
            try:
                one.pack(*row)
            except struct.error as e:
                raise self._unstorable(first + k, e) from None

    # -- cylinder groups and superblocks ---------------------------------------------
    def _fs_time(self) -> int:
        """The newest inode change in the tree: a reproducible 'last written'."""
        t = self.newest_ns // NS_PER_SEC
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
                # One cylinder per group (geometry): the last, however
                # short, has one too.
                head["cg_old_ncyl"] = p.old_cpg
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
        """(minfree, optimization, label) from the options, which
        FfsFormat.check_options has checked before any work."""
        o = self.opts
        minfree = _int_opt(o.get("minfree"), "--minfree")
        minfree = L.MINFREE if minfree is None else minfree
        label = o.get("label") or b""
        if isinstance(label, str):
            label = label.encode()
        return minfree, o.get("optimization") or "time", label

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
        fs_id1 = zlib.crc32(b"%d/%d/%d/%d/%d" % (t, geo.size, geo.ncg, geo.ipg, self.plan.count))
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
                "fs_old_rps": OLD_RPS,
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
        raw = self.layout.fast("fs").pack_dict(f)
        return raw.ljust(f["fs_sbsize"], b"\0")

    def _write_superblocks(self, geo: G.Geometry) -> None:
        p = self.p
        raw = self.superblock(geo)
        self.sink.pwrite(raw, p.sblockloc)
        for c in range(geo.ncg):
            self.sink.pwrite(raw, (geo.cgbase(c) + p.sblkno) * p.fsize)


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


def _floor_why(p: G.Params) -> str:
    """Why the floor is what it is, for error messages."""
    what = f"64 KiB + one {L.SBLOCKSIZE}-byte superblock: kernels probe for one at {L.SBLOCK_UFS2}"
    if G.MIN_IMAGE_BYTES % p.bsize:
        what += f"; in whole {p.bsize}-byte blocks"
    return what


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
    return (f"{plan.count - 2} inodes, {plan.data_bytes} bytes of file data, "
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
