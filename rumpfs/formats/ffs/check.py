"""An fsck-grade consistency check of an FFS image, read-only.

It follows the passes of NetBSD's ``fsck_ffs`` (sbin/fsck_ffs: setup.c,
pass1.c to pass5.c) and the superblock validation of the kernel
(``ffs_superblock_validate`` in sys/ufs/ffs/ffs_vfsops.c):

* superblock: sizes, shifts and masks derived from bsize/fsize, limits
  (minfree, optim, flags, fs_maxfilesize, fs_maxsymlinklen), the geometry
  (ncg, cssize, dblkno, dsize), the UFS1 copies of the 64-bit fields, and the
  superblock copy in every cylinder group;
* pass 1, every inode: a known type, no pointer past the size, every block
  pointer in range and inside its cylinder group's data area, never used
  twice, ``di_blocks`` recounted, fast symlinks, devices;
* pass 2, every directory: 512-byte chunks, entry sanity (``d_reclen``,
  ``d_namlen``, name bytes), ``d_type`` agreeing with the inode, ``.`` and
  ``..`` first and right, entries naming allocated inodes;
* pass 3/4: every directory reachable exactly once, link counts;
* pass 5: each cylinder group block rebuilt from what passes 1-4 found (the
  header, the inode map, the free-fragment map, ``cg_frsum``, the cluster map
  and cluster summary, ``cg_cs``) and compared, then the csum area,
  ``fs_cstotal`` and, for UFS1, ``fs_old_cstotal``.

:func:`check` returns the problems as strings, each naming the inode (and
its path when known), the cylinder group, the field or the fragment; an
empty list means the image is consistent.
"""

from __future__ import annotations

import stat
import struct
from array import array

from . import layout as L
from .reader import MAX_SYMLINK

#: Report at most this many problems of one kind in one place.
_MAX_PER_KIND = 10

_KNOWN_TYPES = {L.IFIFO, L.IFCHR, L.IFDIR, L.IFBLK, L.IFREG, L.IFLNK, L.IFSOCK}

#: Superblock fields fsck compares with the alternate copies (setup.c
#: cmpsblks and the "VALUES IN SUPER BLOCK DISAGREE" check), plus the other
#: fields newfs/makefs write identically into every copy.
_SB_COPY_FIELDS = (
    "fs_sblkno", "fs_cblkno", "fs_iblkno", "fs_dblkno", "fs_ncg", "fs_bsize",
    "fs_fsize", "fs_frag", "fs_bmask", "fs_fmask", "fs_bshift", "fs_fshift",
    "fs_fragshift", "fs_fsbtodb", "fs_sbsize", "fs_nindir", "fs_inopb",
    "fs_cssize", "fs_cgsize", "fs_ipg", "fs_fpg", "fs_magic", "fs_size",
    "fs_dsize", "fs_csaddr", "fs_maxsymlinklen", "fs_old_inodefmt",
    "fs_maxfilesize", "fs_qbmask", "fs_qfmask", "fs_contigsumsize",
    "fs_maxcontig", "fs_minfree", "fs_optim", "fs_sblockloc", "fs_volname",
    "fs_old_cgoffset", "fs_old_cgmask", "fs_old_size", "fs_old_dsize",
    "fs_old_csaddr", "fs_old_cpg", "fs_old_nrpos", "fs_old_postblformat",
)

_CSUM_FIELDS = ("cs_ndir", "cs_nbfree", "cs_nifree", "cs_nffree")


def _i32(x: int) -> int:
    """``x`` as a C int32 (fs_bmask is ~(bsize-1))."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


class _Problems(list):
    """Problem strings, with a cap per (where, kind)."""

    def __init__(self):
        super().__init__()
        self._counts: dict = {}

    def add(self, msg: str, key=None) -> None:
        if key is not None:
            n = self._counts.get(key, 0) + 1
            self._counts[key] = n
            if n > _MAX_PER_KIND:
                return
        self.append(msg)

    def summarize(self) -> None:
        for key, n in self._counts.items():
            if n > _MAX_PER_KIND:
                self.append(f"{key[0]}: {n - _MAX_PER_KIND} more problems of this kind not shown")


class _Inode:
    """What pass 1 learnt about one allocated inode."""

    __slots__ = ("ino", "mode", "nlink", "size", "din", "ok", "frags", "refs", "parent")

    def __init__(self, ino, din):
        self.ino = ino
        self.din = din
        self.mode = din["di_mode"]
        self.nlink = din["di_nlink"]
        self.size = din["di_size"]
        self.ok = True       # block map sane enough to read
        self.frags = 0       # fragments held, data and indirect
        self.refs = 0        # directory entries naming it (incl. . and ..)
        self.parent = None   # for directories: inode of the directory naming it


class Checker:
    def __init__(self, reader):
        self.r = reader
        self.fs = reader.fs
        self.p = _Problems()
        self.inodes: dict[int, _Inode] = {}
        self.paths: dict[int, bytes] = {L.UFS_ROOTINO: b""}
        #: Per fragment: the inode that holds it, 0 when free, -1 for metadata.
        self.used = array("i")
        #: (inode, logical block) of the regular files whose last block is a
        #: hole, reported with their paths once pass 2 knows them.
        self.past_end: list = []
        #: (inode, fragment, what, other inode or None) for every fragment
        #: claimed twice.
        self.dups: list = []

    # --- helpers ------------------------------------------------------------

    def name(self, ino: int) -> str:
        path = self.paths.get(ino)
        if path is None:
            return f"inode {ino}"
        return f"inode {ino} (/{path.decode('utf-8', 'backslashreplace')})"

    def cgbase(self, c: int) -> int:
        return self.r.fpg * c

    def cgstart(self, c: int) -> int:
        return self.r.cgstart(c)

    # --- entry point --------------------------------------------------------

    def run(self) -> list[str]:
        if not self.check_superblock():
            self.p.summarize()
            return list(self.p)
        self.used = array("i", bytes(4 * (self.fs["fs_size"] + self.r.frag)))
        self.mark_metadata()
        self.pass1()
        self.pass2()
        self.report_past_end()
        self.pass4()
        self.pass5()
        self.p.summarize()
        return list(self.p)

    # --- superblock ---------------------------------------------------------

    def check_superblock(self) -> bool:
        """Internal consistency of the primary superblock.  False when the
        geometry is too broken to go on."""
        fs, r, add = self.fs, self.r, self.p.add
        ufs2 = r.ufs2
        bad_geometry = False

        def expect(field, want, fatal=False):
            nonlocal bad_geometry
            got = fs[field]
            if got != want:
                add(f"superblock: {field} is {got}, expected {want}")
                if fatal:
                    bad_geometry = True

        bsize, fsize = fs["fs_bsize"], fs["fs_fsize"]
        frag = bsize // fsize
        expect("fs_frag", frag, True)
        if fsize < L.DEV_BSIZE:
            add(f"superblock: fs_fsize {fsize} is below {L.DEV_BSIZE}")
            return False
        expect("fs_bmask", _i32(~(bsize - 1)))
        expect("fs_fmask", _i32(~(fsize - 1)))
        expect("fs_bshift", L.ilog2(bsize))
        expect("fs_fshift", L.ilog2(fsize))
        expect("fs_fragshift", L.ilog2(frag))
        expect("fs_fsbtodb", L.ilog2(fsize // L.DEV_BSIZE))
        expect("fs_qbmask", bsize - 1)
        expect("fs_qfmask", fsize - 1)
        expect("fs_nindir", L.nindir(bsize, ufs2), True)
        expect("fs_inopb", bsize // L.dinode_size(ufs2), True)
        expect("fs_maxfilesize", L.maxfilesize(bsize, ufs2))
        expect("fs_maxsymlinklen", L.maxsymlinklen(ufs2))
        expect("fs_old_inodefmt", L.FS_44INODEFMT)
        if not 0 <= fs["fs_minfree"] <= 99:
            add(f"superblock: fs_minfree {fs['fs_minfree']} is not a percentage (0..99)")
        if fs["fs_optim"] not in (L.FS_OPTTIME, L.FS_OPTSPACE):
            add(f"superblock: fs_optim {fs['fs_optim']} is neither time (0) nor space (1)")
        unknown = fs["fs_flags"] & ~L.FS_KNOWN_FLAGS
        if unknown:
            add(f"superblock: fs_flags {fs['fs_flags']:#x} has unknown bits {unknown:#x} "
                f"(the kernel refuses to mount)")
        if not fs["fs_old_flags"] & L.FS_FLAGS_UPDATED:
            add("superblock: FS_FLAGS_UPDATED is not set in fs_old_flags")
        if fs["fs_maxbpg"] == 0:
            add("superblock: fs_maxbpg is 0 (the kernel refuses to mount)")
        if not fs["fs_clean"] & L.FS_ISCLEAN:
            add(f"superblock: fs_clean is {fs['fs_clean']} (file system not marked clean)")
        if not 0 <= fs["fs_contigsumsize"] <= L.FS_MAXCONTIG:
            add(f"superblock: fs_contigsumsize {fs['fs_contigsumsize']} out of range "
                f"0..{L.FS_MAXCONTIG}")
            bad_geometry = True
        if fs["fs_ipg"] % fs["fs_inopb"] or fs["fs_fpg"] % frag:
            add(f"superblock: fs_ipg {fs['fs_ipg']} is not a multiple of fs_inopb "
                f"{fs['fs_inopb']} or fs_fpg {fs['fs_fpg']} not a multiple of fs_frag {frag}")
            bad_geometry = True
        if bad_geometry:
            return False

        size, fpg, ncg = fs["fs_size"], fs["fs_fpg"], fs["fs_ncg"]
        expect("fs_ncg", L.howmany(size, fpg), True)
        expect("fs_cssize", L.roundup(ncg * self.r.layout.csum.sizeof(), fsize))
        if size * fsize > r.size:
            # Fatal: the checker keeps a word per fragment of fs_size.
            add(f"superblock: fs_size {size} fragments ({size * fsize} bytes) "
                f"but the image has only {r.size} bytes")
            return False
        inopf = fs["fs_inopb"] // frag
        expect("fs_dblkno", fs["fs_iblkno"] + fs["fs_ipg"] // inopf, True)
        if not (0 <= fs["fs_sblkno"] < fs["fs_cblkno"] < fs["fs_iblkno"] < fs["fs_dblkno"] <= fpg):
            add(f"superblock: cylinder group layout out of order (sblkno {fs['fs_sblkno']}, "
                f"cblkno {fs['fs_cblkno']}, iblkno {fs['fs_iblkno']}, dblkno {fs['fs_dblkno']}, "
                f"fpg {fpg})")
            return False
        if r.sb.loc + fs["fs_sbsize"] > fs["fs_sblkno"] * fsize:
            add(f"superblock: the primary superblock at {r.sb.loc} overlaps cylinder group 0's "
                f"copy at fragment {fs['fs_sblkno']}")
        if not L.SIZEOF_FS <= fs["fs_sbsize"] <= L.SBLOCKSIZE:
            add(f"superblock: fs_sbsize {fs['fs_sbsize']} out of range "
                f"{L.SIZEOF_FS}..{L.SBLOCKSIZE}")
        old_cpg = 0 if ufs2 else fs["fs_old_cpg"]
        maps = L.cg_map_offsets(ufs2, fs["fs_ipg"], fpg, frag, fs["fs_contigsumsize"],
                                max(old_cpg, 1) if not ufs2 else 0,
                                max(fs["fs_old_nrpos"], 1) if not ufs2 else 1)
        if not L.CG_SPACE_OFFSET <= fs["fs_cgsize"] <= bsize:
            add(f"superblock: fs_cgsize {fs['fs_cgsize']} out of range "
                f"{L.CG_SPACE_OFFSET}..{bsize}")
            return False
        if maps["cg_nextfreeoff"] > fs["fs_cgsize"]:
            add(f"superblock: cylinder group maps need {maps['cg_nextfreeoff']} bytes, "
                f"fs_cgsize is {fs['fs_cgsize']}")
            return False
        if fs["fs_cgsize"] > (fs["fs_iblkno"] - fs["fs_cblkno"]) * fsize:
            add(f"superblock: fs_cgsize {fs['fs_cgsize']} does not fit between cblkno and iblkno")
        csfrags = L.howmany(fs["fs_cssize"], fsize)
        dsize = size - fs["fs_sblkno"] - ncg * (fs["fs_dblkno"] - fs["fs_sblkno"]) - csfrags
        expect("fs_dsize", dsize)
        if fs["fs_csaddr"] != self.cgstart(0) + fs["fs_dblkno"]:
            # Not required by the kernel, but where newfs and makefs put it.
            if not (0 < fs["fs_csaddr"] and fs["fs_csaddr"] + csfrags <= size):
                add(f"superblock: fs_csaddr {fs['fs_csaddr']} out of range")
                return False
        for field in ("cs_numclusters",):
            if fs["fs_cstotal"][field]:
                add(f"superblock: fs_cstotal.{field} is {fs['fs_cstotal'][field]}, expected 0")
        if fs["fs_pendingblocks"] or fs["fs_pendinginodes"]:
            add("superblock: fs_pendingblocks/fs_pendinginodes are not 0")
        if not ufs2:
            expect("fs_old_size", size)
            expect("fs_old_dsize", fs["fs_dsize"])
            expect("fs_old_csaddr", fs["fs_csaddr"])
            expect("fs_old_nspf", fsize // L.DEV_BSIZE)
            expect("fs_old_postblformat", L.FS_DYNAMICPOSTBLFMT)
            if fs["fs_old_interleave"] < 1:
                add(f"superblock: impossible fs_old_interleave {fs['fs_old_interleave']}")
            if fs["fs_old_npsect"] < fs["fs_old_nsect"]:
                add(f"superblock: impossible fs_old_npsect {fs['fs_old_npsect']} "
                    f"(< fs_old_nsect {fs['fs_old_nsect']})")
            if fs["fs_old_cpg"] < 1 or fs["fs_old_nrpos"] < 1:
                add("superblock: fs_old_cpg and fs_old_nrpos must be at least 1 in UFS1")
                return False
            for f in _CSUM_FIELDS:
                if fs["fs_old_cstotal"][f] != fs["fs_cstotal"][f]:
                    add(f"superblock: fs_old_cstotal.{f} {fs['fs_old_cstotal'][f]} differs from "
                        f"fs_cstotal.{f} {fs['fs_cstotal'][f]}")
        self.maps = maps
        self.check_sb_copies()
        return True

    def check_sb_copies(self) -> None:
        fs, r = self.fs, self.r
        fast = r.layout.fast("fs")
        for c in range(fs["fs_ncg"]):
            frag = self.cgstart(c) + fs["fs_sblkno"]
            raw = r.pread(L.SIZEOF_FS, frag * r.fsize)
            if len(raw) < L.SIZEOF_FS:
                self.p.add(f"cg {c}: superblock copy at fragment {frag} is beyond the image end")
                continue
            copy = fast.unpack_dict(raw)
            diffs = [f"{name} {copy[name]!r} != {fs[name]!r}" for name in _SB_COPY_FIELDS
                     if copy[name] != fs[name]]
            if diffs:
                self.p.add(f"cg {c}: superblock copy at fragment {frag} disagrees with the "
                           f"primary: {', '.join(diffs[:4])}"
                           + (f" (and {len(diffs) - 4} more fields)" if len(diffs) > 4 else ""),
                           key=("superblock copies", "differ"))

    # --- metadata areas -----------------------------------------------------

    def mark_metadata(self) -> None:
        """Fragments that belong to no inode: the boot area and primary
        superblock in cg 0, each cg's superblock copy, cg block and inode
        blocks, and the csum area (fsck pass1 setup)."""
        fs = self.fs
        used = self.used

        def mark(start, end):
            end = min(end, len(used))
            if end > start:
                used[start:end] = array("i", [-1]) * (end - start)

        for c in range(fs["fs_ncg"]):
            start = self.cgbase(c) if c == 0 else self.cgstart(c) + fs["fs_sblkno"]
            mark(start, self.cgstart(c) + fs["fs_dblkno"])
        cs = fs["fs_csaddr"]
        mark(cs, cs + L.howmany(fs["fs_cssize"], self.r.fsize))
        # Fragments past the end of the file system up to a block boundary.
        mark(fs["fs_size"], L.roundup(fs["fs_size"], self.r.frag))

    # --- pass 1: inodes -----------------------------------------------------

    def pass1(self) -> None:
        r, fs = self.r, self.fs
        dsize = r.dinode.size
        self.cgs = [self.read_cg(c) for c in range(fs["fs_ncg"])]
        self.initedi = []
        for cg in self.cgs:
            n = fs["fs_ipg"]
            if r.ufs2 and cg is not None:
                n = min(max(cg["cg_initediblk"], 0), fs["fs_ipg"])
            self.initedi.append(n)
        unpack = r.dinode.unpack_dict
        mode_off = 0  # di_mode is the first field of both dinodes
        for c in range(fs["fs_ncg"]):
            n = self.initedi[c]
            if not n:
                continue
            first = c * fs["fs_ipg"]
            raw = r.pread(n * dsize, r.inode_offset(first))
            if len(raw) < n * dsize:
                self.p.add(f"cg {c}: inode blocks extend beyond the image end")
                continue
            for i in range(n):
                ino = first + i
                off = i * dsize
                if ino < L.UFS_ROOTINO:
                    continue
                if raw[off + mode_off:off + mode_off + 2] == b"\0\0":
                    if any(raw[off:off + dsize]):
                        din = unpack(raw, off)
                        if any(din["di_db"]) or any(din["di_ib"]) or din["di_size"]:
                            self.p.add(f"inode {ino}: partially allocated (mode 0 but size "
                                       f"or block pointers set)", key=(f"cg {c}", "partial"))
                    continue
                self.check_inode(ino, unpack(raw, off))
        root = self.inodes.get(L.UFS_ROOTINO)
        if root is None or not stat.S_ISDIR(root.mode):
            self.p.add("inode 2: the root inode is not an allocated directory")

    def read_cg(self, c: int):
        r = self.r
        addr = self.cgstart(c) + self.fs["fs_cblkno"]
        raw = r.pread(self.fs["fs_cgsize"], addr * r.fsize)
        if len(raw) < self.fs["fs_cgsize"]:
            self.p.add(f"cg {c}: cylinder group block at fragment {addr} is beyond the image end")
            return None
        cg = r.layout.fast("cg").unpack_dict(raw)
        cg["_raw"] = raw
        if cg["cg_magic"] != L.CG_MAGIC:
            self.p.add(f"cg {c}: bad magic number {cg['cg_magic']:#x} in the cylinder group block "
                       f"at fragment {addr} (expected {L.CG_MAGIC:#x})")
            return None
        return cg

    def check_inode(self, ino: int, din: dict) -> None:
        r, fs, add = self.r, self.fs, self.p.add
        info = _Inode(ino, din)
        self.inodes[ino] = info
        mode = din["di_mode"]
        kind = mode & L.IFMT
        size = din["di_size"]
        where = (f"inode {ino}", "bad")
        if kind not in _KNOWN_TYPES:
            add(f"inode {ino}: unknown file type {kind:#o} in di_mode {mode:#o}", key=where)
            info.ok = False
            return
        limit = fs["fs_maxfilesize"] if r.ufs2 else 0x80000000 * r.bsize - 1
        if size > limit:
            add(f"inode {ino}: di_size {size} exceeds the maximum file size {limit}", key=where)
            info.ok = False
            return
        if din["di_nlink"] <= 0:
            add(f"inode {ino}: allocated but di_nlink is {din['di_nlink']}", key=where)
        ptr_size = 8 if r.ufs2 else 4
        ndb = L.howmany(size, r.bsize)
        fast_link = False
        if kind in (L.IFBLK, L.IFCHR):
            ndb += 1
            if size:
                add(f"inode {ino}: device with di_size {size} (expected 0)", key=where)
        elif kind == L.IFLNK and size < fs["fs_maxsymlinklen"]:
            fast_link = True
            ndb = L.howmany(size, ptr_size)
        elif kind in (L.IFIFO, L.IFSOCK) and size:
            add(f"inode {ino}: {'fifo' if kind == L.IFIFO else 'socket'} with di_size {size}",
                key=where)
        elif kind == L.IFDIR:
            if size == 0 or size % L.DIRBLKSIZ:
                add(f"inode {ino}: directory size {size} is not a positive multiple of "
                    f"{L.DIRBLKSIZ}", key=where)
        # No pointer past what the size needs (pass1 "bad direct/indirect addr").
        db, ib = din["di_db"], din["di_ib"]
        if fast_link:
            # The target fills the first ndb pointer slots; the rest is zero.
            slots = list(db) + list(ib)
            if any(slots[ndb:]):
                add(f"inode {ino}: fast symlink has garbage after its {size}-byte target",
                    key=where)
            if din["di_blocks"]:
                add(f"inode {ino}: fast symlink with di_blocks {din['di_blocks']} (expected 0)",
                    key=where)
            if b"\0" in r.symlink_target(din):
                add(f"inode {ino}: symlink target has a NUL byte", key=where)
            return
        for j in range(min(ndb, L.UFS_NDADDR), L.UFS_NDADDR):
            if db[j]:
                add(f"inode {ino}: di_db[{j}] = {db[j]} beyond the end of the file "
                    f"(size {size})", key=where)
                info.ok = False
        # The first indirect level covers nindir blocks, the second nindir**2...
        rest, span, levels_needed = ndb - L.UFS_NDADDR, 1, 0
        while rest > 0 and levels_needed < L.UFS_NIADDR:
            span *= r.nindir
            levels_needed += 1
            rest -= span
        for j in range(levels_needed, L.UFS_NIADDR):
            if ib[j]:
                add(f"inode {ino}: di_ib[{j}] = {ib[j]} beyond the end of the file "
                    f"(size {size})", key=where)
                info.ok = False
        if kind in (L.IFBLK, L.IFCHR, L.IFIFO, L.IFSOCK):
            if din["di_blocks"]:
                add(f"inode {ino}: {stat.filemode(mode)[0]}-type inode with di_blocks "
                    f"{din['di_blocks']} (expected 0)", key=where)
            return
        if not info.ok:
            return
        if kind == L.IFLNK and size > MAX_SYMLINK:
            add(f"inode {ino}: symlink target of {size} bytes (at most {MAX_SYMLINK})",
                key=where)
            info.ok = False
            return
        self.claim_blocks(info)
        if kind == L.IFLNK and info.ok and b"\0" in r.symlink_target(din):
            add(f"inode {ino}: symlink target has a NUL byte", key=where)
        want = info.frags * (r.fsize // L.DEV_BSIZE)
        if din["di_blocks"] != want:
            add(f"inode {ino}: di_blocks is {din['di_blocks']}, recounted {want} "
                f"(512-byte sectors of data and indirect blocks)", key=where)

    def chkrange(self, addr: int, nfrags: int) -> str | None:
        """Why the run of ``nfrags`` fragments at ``addr`` is not a valid
        allocation, or None (fsck chkrange)."""
        fs, r = self.fs, self.r
        if addr < 0 or addr + nfrags > fs["fs_size"]:
            return f"outside the file system (0..{fs['fs_size'] - 1})"
        if nfrags > r.frag or addr % r.frag + nfrags > r.frag:
            return "crosses a block boundary"
        c = addr // r.fpg
        dmin = self.cgstart(c) + fs["fs_dblkno"]
        if addr < dmin:
            if addr + nfrags > self.cgstart(c) + fs["fs_sblkno"]:
                return f"in the metadata of cylinder group {c}"
        elif addr + nfrags > self.cgbase(c + 1):
            return f"crosses the end of cylinder group {c}"
        return None

    def claim(self, info: _Inode, addr: int, nfrags: int, what: str) -> bool:
        why = self.chkrange(addr, nfrags)
        where = (f"inode {info.ino}", "blocks")
        if why:
            self.p.add(f"inode {info.ino}: {what} at fragment {addr} is {why}", key=where)
            info.ok = False
            return False
        used = self.used
        for a in range(addr, addr + nfrags):
            other = used[a]
            if other == 0:
                used[a] = info.ino
            elif other < 0:
                self.p.add(f"inode {info.ino}: {what} at fragment {a} lies in file system "
                           f"metadata", key=where)
            else:
                self.dups.append((info.ino, a, what, other))
        info.frags += nfrags
        return True

    def claim_blocks(self, info: _Inode) -> None:
        r = self.r
        din = info.din
        size = din["di_size"]
        kind = din["di_mode"] & L.IFMT
        bad = []

        def indirect(level, addr, lbn):
            if self.claim(info, addr, r.frag, f"level-{level} indirect block (lbn {lbn})"):
                return
            bad.append(addr)
            raise _Stop()

        nblocks = L.howmany(size, r.bsize)
        addr = None
        try:
            for lbn, addr, _count in r.block_map(din, indirect):
                if addr == 0:
                    if kind == L.IFDIR:
                        self.p.add(f"inode {info.ino}: directory has a hole at block {lbn}",
                                   key=(f"inode {info.ino}", "blocks"))
                        info.ok = False
                    continue
                nfrags = r.blksize(size, lbn) // r.fsize
                self.claim(info, addr, nfrags, f"data block {lbn}")
            self.check_tail_pointers(info, nblocks)
        except _Stop:
            info.ok = False
            return
        if addr == 0 and kind == L.IFREG:
            # The block map ended in a hole: see FfsReader.last_block_hole.
            self.past_end.append((info.ino, nblocks - 1))

    def report_past_end(self) -> None:
        for ino, lbn in self.past_end:
            size = self.inodes[ino].size
            path = self.paths.get(ino)
            if path is None:
                self.p.add(f"inode {ino}: di_size {size} is beyond the end of the allocated "
                           f"file (block {lbn}, which would hold its last byte, is a hole)")
            else:
                self.p.add(self.r.size_past_end(path, ino, size, lbn))

    def check_tail_pointers(self, info: _Inode, nblocks: int) -> None:
        """Pointers in the last indirect block of each level past the end of
        the file must be zero (fsck: partially truncated inode)."""
        # block_map stops at nblocks; re-read the indirect blocks that hold
        # the last pointer of each level and check the slots after it.
        r = self.r
        din = info.din
        lbn = L.UFS_NDADDR
        span = 1
        for level in range(1, L.UFS_NIADDR + 1):
            span *= r.nindir
            if lbn >= nblocks:
                return
            if nblocks < lbn + span:
                self._tail(info, din["di_ib"][level - 1], level, nblocks - lbn, span)
            lbn += span

    def _tail(self, info, addr, level, count, span):
        r = self.r
        if addr == 0:
            return
        sub = span // r.nindir
        ptrs = r.pointers(addr)
        used_slots = L.howmany(count, sub)
        for i, p in enumerate(ptrs[used_slots:], used_slots):
            if p:
                self.p.add(f"inode {info.ino}: level-{level} indirect block at fragment {addr} "
                           f"has pointer {p} in slot {i}, past the end of the file",
                           key=(f"inode {info.ino}", "blocks"))
                return
        if level > 1 and count % sub:
            self._tail(info, ptrs[used_slots - 1], level - 1, count % sub, sub)

    # --- pass 2/3: directories ------------------------------------------------

    def pass2(self) -> None:
        r, add = self.r, self.p.add
        root = self.inodes.get(L.UFS_ROOTINO)
        if root is None or not stat.S_ISDIR(root.mode):
            return
        root.parent = L.UFS_ROOTINO
        stack = [L.UFS_ROOTINO]
        while stack:
            dino = stack.pop()
            d = self.inodes[dino]
            path = self.paths.get(dino, b"?")
            if not d.ok:
                continue
            where = (f"directory inode {dino}", "entries")
            for name, ino, dtype, off in self.dir_entries(d, where):
                self_name = f"directory {self.name(dino)}"
                child = self.inodes.get(ino)
                if ino >= r.maxino:
                    add(f"{self_name}: entry {name!r} at offset {off} names inode {ino}, "
                        f"beyond the last inode {r.maxino - 1}", key=where)
                    continue
                if child is None:
                    add(f"{self_name}: entry {name!r} at offset {off} names unallocated "
                        f"inode {ino}", key=where)
                    continue
                child.refs += 1
                want = L.IFTODT(child.mode)
                if dtype != want:
                    add(f"{self_name}: entry {name!r} at offset {off} has d_type {dtype}, "
                        f"but inode {ino} is of type {want}", key=where)
                if name in (b".", b".."):
                    continue
                if stat.S_ISDIR(child.mode):
                    if child.parent is not None:
                        add(f"{self_name}: entry {name!r} names directory inode {ino}, "
                            f"which already has a name in inode {child.parent}", key=where)
                        continue
                    child.parent = dino
                    self.paths[ino] = path + b"/" + name if path else name
                    stack.append(ino)
                else:
                    self.paths.setdefault(ino, path + b"/" + name if path else name)
        for dino, d in self.inodes.items():
            if not stat.S_ISDIR(d.mode):
                continue
            if d.parent is None:
                add(f"inode {dino}: directory not reachable from the root")

    def dir_entries(self, d: _Inode, where):
        """Valid entries of a directory as (name, ino, d_type, offset), with
        pass-2 checks of every chunk (fsck dircheck)."""
        r, add = self.r, self.p.add
        hdr = r.direct
        who = f"directory {self.name(d.ino)}"
        pos = 0
        count = 0
        for chunk in r.data(d.din):
            for base in range(0, len(chunk), L.DIRBLKSIZ):
                block = chunk[base:base + L.DIRBLKSIZ]
                off = 0
                # A short last chunk (a size not a multiple of DIRBLKSIZ,
                # reported in pass 1) is read as far as it goes.
                while off + L.DIRECT_HEADER_SIZE <= len(block):
                    at = pos + base + off
                    e = hdr.unpack_dict(block, off)
                    reclen, namlen = e["d_reclen"], e["d_namlen"]
                    room = len(block) - off
                    if (reclen == 0 or reclen % 4 or reclen > room
                            or (e["d_ino"] and reclen < L.UFS_DIRECTSIZ(namlen))
                            or reclen < L.DIRECT_HEADER_SIZE):
                        add(f"{who}: bad d_reclen {reclen} at offset {at} "
                            f"(namlen {namlen}, {room} bytes left in the chunk)", key=where)
                        break
                    start = off + L.DIRECT_HEADER_SIZE
                    name = block[start:start + namlen]
                    if e["d_ino"]:
                        if e["d_type"] > 15:
                            add(f"{who}: bad d_type {e['d_type']} at offset {at}", key=where)
                        if namlen == 0 or b"/" in name or b"\0" in name or block[start + namlen]:
                            add(f"{who}: bad name {name!r} at offset {at}", key=where)
                        elif count == 0 and name != b".":
                            add(f"{who}: first entry is {name!r}, not '.'", key=where)
                        elif count == 1 and name != b"..":
                            add(f"{who}: second entry is {name!r}, not '..'", key=where)
                        else:
                            if name == b"." and e["d_ino"] != d.ino:
                                add(f"{who}: '.' names inode {e['d_ino']}, not itself",
                                    key=where)
                            if name == b".." and count != 1:
                                add(f"{who}: extra '..' entry at offset {at}", key=where)
                            if name == b"." and count != 0:
                                add(f"{who}: extra '.' entry at offset {at}", key=where)
                            if name == b".." and d.parent is not None and e["d_ino"] != d.parent:
                                add(f"{who}: '..' names inode {e['d_ino']}, but its parent is "
                                    f"inode {d.parent}", key=where)
                            yield name, e["d_ino"], e["d_type"], at
                        count += 1
                    elif count == 0 and off == 0 and at == 0:
                        add(f"{who}: first entry is empty, not '.'", key=where)
                        count += 1
                    off += reclen
            pos += len(chunk)
        if count < 2:
            add(f"{who}: missing '.' or '..'", key=where)

    # --- pass 4: link counts --------------------------------------------------

    def pass4(self) -> None:
        add = self.p.add
        for ino, info in sorted(self.inodes.items()):
            if info.refs == 0 and not stat.S_ISDIR(info.mode):
                add(f"inode {ino}: allocated ({stat.filemode(info.mode)}) but no directory "
                    f"entry names it", key=("links", "unref"))
            elif info.refs != info.nlink:
                add(f"{self.name(ino)}: link count di_nlink is {info.nlink}, but {info.refs} "
                    f"directory entries name it", key=("links", "count"))

    # --- pass 5: cylinder groups ------------------------------------------------

    def pass5(self) -> None:
        fs, r, add = self.fs, self.r, self.p.add
        ufs2 = r.ufs2
        ipg, fpg, frag = fs["fs_ipg"], fs["fs_fpg"], r.frag
        contig = fs["fs_contigsumsize"]
        maps = self.maps
        csum_fast = r.layout.fast("csum")
        csarea = r.pread(fs["fs_cssize"], fs["fs_csaddr"] * r.fsize)
        total = dict.fromkeys(_CSUM_FIELDS, 0)
        used = self.used
        for c in range(fs["fs_ncg"]):
            cg = self.cgs[c]
            dbase = self.cgbase(c)
            dmax = min(dbase + fpg, fs["fs_size"])
            ndblk = dmax - dbase
            # The expected header, pass5 style.
            want = {
                "cg_firstfield": 0, "cg_magic": L.CG_MAGIC, "cg_cgx": c, "cg_ndblk": ndblk,
                "cg_nclusterblks": ndblk // frag if contig > 0 else 0,
                "cg_niblk": 0 if not ufs2 else ipg,
                "cg_old_niblk": ipg if not ufs2 else 0,
                "cg_sparecon32": [0, 0, 0], "cg_sparecon64": [0, 0, 0],
            }
            want.update(maps)
            if not ufs2:
                if c == fs["fs_ncg"] - 1:
                    want["cg_old_ncyl"] = L.howmany(ndblk, fpg // fs["fs_old_cpg"])
                else:
                    want["cg_old_ncyl"] = fs["fs_old_cpg"]
                want["cg_initediblk"] = 0
            else:
                want["cg_old_ncyl"] = 0
            # Inode map and counts.
            inomap = bytearray(L.howmany(ipg, 8))
            nifree, ndir = ipg, 0
            for i in range(ipg):
                ino = c * ipg + i
                info = self.inodes.get(ino)
                if info is not None or (c == 0 and ino < L.UFS_ROOTINO):
                    inomap[i >> 3] |= 1 << (i & 7)
                    nifree -= 1
                    if info is not None and stat.S_ISDIR(info.mode):
                        ndir += 1
            # Free map, free counts, frsum, cluster map.
            freemap = bytearray(L.howmany(fpg, 8))
            frsum = [0] * L.MAXFRAG
            nbfree = nffree = 0
            clustermap = bytearray(L.howmany(fpg // frag, 8))
            for i in range(0, ndblk, frag):
                d = dbase + i
                run = 0
                nfree = 0
                for j in range(frag):
                    if used[d + j]:
                        if 0 < run < frag:
                            frsum[run] += 1
                        run = 0
                        continue
                    freemap[(i + j) >> 3] |= 1 << ((i + j) & 7)
                    nfree += 1
                    run += 1
                if nfree == frag:
                    nbfree += 1
                    b = i // frag
                    clustermap[b >> 3] |= 1 << (b & 7)
                elif nfree:
                    nffree += nfree
                    if run:
                        frsum[run] += 1
            cs = {"cs_ndir": ndir, "cs_nbfree": nbfree, "cs_nifree": nifree, "cs_nffree": nffree}
            want["cg_frsum"] = frsum
            want["cg_cs"] = cs
            for k in _CSUM_FIELDS:
                total[k] += cs[k]
            # The csum area entry for this cg.
            if (c + 1) * csum_fast.size <= len(csarea):
                entry = csum_fast.unpack_dict(csarea, c * csum_fast.size)
                for k in _CSUM_FIELDS:
                    if entry[k] != cs[k]:
                        add(f"csum area: cg {c} {k} is {entry[k]}, recomputed {cs[k]}")
            if cg is None:
                continue
            for k, v in want.items():
                if k == "cg_cs":
                    for f in _CSUM_FIELDS:
                        if cg["cg_cs"][f] != v[f]:
                            add(f"cg {c}: cg_cs.{f} is {cg['cg_cs'][f]}, recomputed {v[f]}")
                elif cg[k] != v:
                    add(f"cg {c}: {k} is {cg[k]}, expected {v}")
            if not 0 <= cg["cg_rotor"] < max(ndblk, 1) or not 0 <= cg["cg_frotor"] < max(ndblk, 1):
                add(f"cg {c}: allocation rotor out of range (cg_rotor {cg['cg_rotor']}, "
                    f"cg_frotor {cg['cg_frotor']})")
            if not 0 <= cg["cg_irotor"] < ipg:
                add(f"cg {c}: cg_irotor {cg['cg_irotor']} out of range")
            if ufs2 and not 0 <= cg["cg_initediblk"] <= ipg:
                add(f"cg {c}: cg_initediblk {cg['cg_initediblk']} out of range 0..{ipg}")
            if cg["cg_iusedoff"] != maps["cg_iusedoff"] or cg["cg_nextfreeoff"] != maps["cg_nextfreeoff"]:
                continue  # maps are elsewhere; already reported
            raw = cg["_raw"]
            self.compare_bits(c, "inode map", raw, maps["cg_iusedoff"], inomap, ipg,
                              lambda i, first=c * ipg: f"inode {first + i}", "used", "free")
            self.compare_bits(c, "free-fragment map", raw, maps["cg_freeoff"], freemap, fpg,
                              lambda i, base=dbase: f"fragment {base + i}", "free", "in use")
            if contig > 0:
                nblk = ndblk // frag
                self.compare_bits(c, "cluster map", raw, maps["cg_clusteroff"], clustermap,
                                  L.howmany(fpg // frag, 8) * 8,
                                  lambda b, base=dbase: f"block {b} (fragment {base + b * frag})",
                                  "free", "not free")
                sums = [0] * (contig + 1)
                run = 0
                for b in range(nblk):
                    if clustermap[b >> 3] >> (b & 7) & 1:
                        run += 1
                    elif run:
                        sums[min(run, contig)] += 1
                        run = 0
                if run:
                    sums[min(run, contig)] += 1
                fmt = ("<" if r.byteorder == "little" else ">") + f"{contig + 1}l"
                # Slot 0 is unused: it overlaps the last bytes of the free map.
                ondisk = list(struct.unpack_from(fmt, raw, maps["cg_clustersumoff"]))[1:]
                if ondisk != sums[1:]:
                    add(f"cg {c}: cluster summary is {ondisk}, recomputed {sums[1:]} "
                        f"(counts of free runs of 1..{contig} blocks)")
        # File system totals.
        for k in _CSUM_FIELDS:
            if fs["fs_cstotal"][k] != total[k]:
                add(f"superblock: fs_cstotal.{k} is {fs['fs_cstotal'][k]}, recomputed {total[k]}")
            if not ufs2 and fs["fs_old_cstotal"][k] != total[k]:
                add(f"superblock: fs_old_cstotal.{k} is {fs['fs_old_cstotal'][k]}, "
                    f"recomputed {total[k]}")
        self.report_dups()

    def compare_bits(self, c, what, raw, off, want: bytearray, nbits, label, set_word, clear_word):
        have = raw[off:off + len(want)]
        if have == want:
            return
        where = (f"cg {c}", what)
        for i in range(min(nbits, len(want) * 8)):
            h = have[i >> 3] >> (i & 7) & 1 if (i >> 3) < len(have) else 0
            w = want[i >> 3] >> (i & 7) & 1
            if h != w:
                state = set_word if h else clear_word
                should = set_word if w else clear_word
                self.p.add(f"cg {c}: {what}: {label(i)} is marked {state} but is {should}",
                           key=where)

    def report_dups(self) -> None:
        for ino, frag, what, other in self.dups:
            if other is None:
                continue
            self.p.add(f"{self.name(ino)}: {what} at fragment {frag} is shared with "
                       f"{self.name(other)}", key=("blocks", "dup"))


class _Stop(Exception):
    pass


def check(reader) -> list[str]:
    """Problems found in the image behind ``reader`` (an FfsReader)."""
    return Checker(reader).run()


__all__ = ["check", "Checker"]
