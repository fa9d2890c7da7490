"""The FFS writer's inodes, directories, cylinder groups and superblock,
judged field by field where dissect.ffs does not look.

dissect.ffs reads files back and ffs_testlib.recount_summaries recounts the
free counts from the maps; neither asks whether the maps themselves are
right.  Here the test works out, from the specification alone (fs.h, and
newfs's layout of a cylinder group), which fragments and inodes are in use
-- each group's superblock copy, cg block and inode blocks, group 0's boot
area and csum area, and every block an inode points at, directly or through
its indirect blocks, as dissect.ffs's structs read them -- and compares that
with every group's free map, inode map, cluster map and cluster summary, every
inode's di_blocks, and the group header fields.  The superblock's constants
that follow from the block and fragment size are compared with the superblock
NetBSD makefs writes for the same sizes; its UFS1 compatibility fields with
the UFS2-era fields they mirror (a relation makefs's images satisfy too).

These tests kill the mutants of ``rumpfs/formats/ffs/writer.py`` that the
round trips of test_ffs_write.py let through (docs/testing.md).
"""

from __future__ import annotations

import os
import stat
import struct
import subprocess

import pytest
from conftest import IS_ROOT, require_module
from ffs_testlib import dissect_open, dissect_records, recount_summaries
from treecompare import assert_same, normalized, scan_host

from rumpfs.api import pack

require_module("dissect.ffs", "dissect.ffs")
needs_makefs = pytest.mark.usefixtures("makefs_tool")

UFS_NDADDR, UFS_NIADDR = 12, 3
UFS_ROOTINO = 2
DEV_BSIZE = 512
FS_MAXCONTIG = 16


def _bits(raw: bytes, count: int) -> list[bool]:
    return [bool(raw[i >> 3] >> (i & 7) & 1) for i in range(count)]


def make_tree(top):
    """Files with tails, full blocks, single and double indirect blocks,
    holes (one file of a hole and a tail), symlinks of both kinds, devices (root only), nested directories and
    one directory of several DIRBLKSIZ chunks."""
    top.mkdir()
    (top / "empty").write_bytes(b"")
    for n in (1, 511, 513, 1500, 4095, 4097, 9000, 30000):
        (top / f"f{n}").write_bytes(bytes([n & 0xFF]) * n)
    (top / "indirect").write_bytes(os.urandom(200_000))   # > 12 blocks of 4 KiB
    with open(top / "sparse", "wb") as f:
        f.seek(3_000_000)                                  # double indirect at 4 KiB
        f.write(b"end")
    with open(top / "holetail", "wb") as f:
        f.seek(131072)                                     # a hole, then only a tail
        f.write(b"tail")
    (top / "fast").symlink_to("t" * 20)
    (top / "slow").symlink_to("s" * 300)
    big = top / "d1" / "d2" / "many"
    big.mkdir(parents=True)
    for i in range(60):
        (big / (f"entry-with-a-longish-name-{i:03}" + "x" * (i % 9))).write_bytes(b"%d" % i)
    (top / "d1" / "sub").mkdir()
    # 31 entries of 32 bytes (20-byte names): with '.' and '..' (24 bytes)
    # the first chunk takes 15, the second exactly 16, filling it to the byte.
    exact = top / "exact"
    exact.mkdir()
    for i in range(31):
        (exact / f"{i:020d}").write_bytes(b"")
    if IS_ROOT:
        os.mknod(top / "chr", stat.S_IFCHR | 0o600, os.makedev(4095, 0xFFFFF))
        os.mknod(top / "blk", stat.S_IFBLK | 0o600, os.makedev(3, 257))
        os.mknod(top / "fifo", stat.S_IFIFO | 0o600)


def _pointers(f, addr: int, level: int, sb, fmt: str, out: set, frags_per_block: int) -> None:
    """Mark an indirect block at fragment ``addr`` and what it maps."""
    out.update(range(addr, addr + frags_per_block))
    f.seek(addr * sb.fs_fsize)
    raw = f.read(sb.fs_bsize)
    for ptr in struct.unpack(f"{fmt[0]}{sb.fs_bsize // struct.calcsize(fmt)}{fmt[1]}", raw):
        if not ptr:
            continue
        if level:
            _pointers(f, ptr, level - 1, sb, fmt, out, frags_per_block)
        else:
            out.add(("data", ptr))


DIRBLKSIZ = 512
#: dir.h's d_type of each inode kind.
DT = {stat.S_IFIFO: 1, stat.S_IFCHR: 2, stat.S_IFDIR: 4, stat.S_IFBLK: 6, stat.S_IFREG: 8,
      stat.S_IFLNK: 10, stat.S_IFSOCK: 12}


def check_directory(data: bytes, ino: int, fs, byteorder: str) -> list[str]:
    """A directory's bytes at dir.h's offsets: chunks of DIRBLKSIZ that the
    entries' d_reclen exactly fill, each entry at least its 4-aligned size,
    its name NUL-padded, its d_type the inode's kind; '.' and '..' first."""
    bad = []
    e = "<" if byteorder == "little" else ">"
    if len(data) % DIRBLKSIZ or not data:
        return [f"dir {ino}: {len(data)} bytes"]
    names = []
    for chunk in range(0, len(data), DIRBLKSIZ):
        pos = chunk
        while pos < chunk + DIRBLKSIZ:
            d_ino, reclen, d_type, namlen = struct.unpack_from(e + "IHBB", data, pos)
            need = (8 + namlen + 1 + 3) & ~3
            if reclen < need or pos + reclen > chunk + DIRBLKSIZ:
                return bad + [f"dir {ino}: entry at {pos}: d_reclen {reclen}, needs {need}"]
            name = data[pos + 8:pos + 8 + namlen]
            if data[pos + 8 + namlen:pos + need] != bytes(need - 8 - namlen):
                bad.append(f"dir {ino}: {name!r} not NUL-padded")
            if d_ino:
                kind = stat.S_IFMT(fs.inode(d_ino).inode.di_mode)
                if DT.get(kind) != d_type:
                    bad.append(f"dir {ino}: {name!r} d_type {d_type}, inode kind {kind:o}")
                names.append((name, d_ino))
            pos += reclen
    if [n for n, _ in names[:2]] != [b".", b".."] or names[0][1] != ino:
        bad.append(f"dir {ino}: starts with {names[:2]}")
    return bad


def check_image(path, byteorder: str) -> list[str]:
    """Every map and count of the image against what the test works out; one line per difference."""
    bad = []
    with open(path, "rb") as f:
        fs = dissect_open(f, byteorder)
        mod, sb = fs.module, fs.sb
        ufs1 = fs.version == 1
        frag, fsize, bsize, fpg, ipg = sb.fs_frag, sb.fs_fsize, sb.fs_bsize, sb.fs_fpg, sb.fs_ipg
        size = sb.fs_size
        ptr_fmt = ("<" if byteorder == "little" else ">") + ("i" if ufs1 else "q")
        used = set()
        gens: dict = {}
        # Metadata, by fs.h's cgsblock/cgdmin: in every group the superblock
        # copy, the cg block and the inode blocks (fs_sblkno .. fs_dblkno);
        # group 0 also the boot area before them and the csum area.
        for c in range(sb.fs_ncg):
            base = c * fpg
            start = base if c == 0 else base + sb.fs_sblkno
            used.update(range(start, base + sb.fs_dblkno))
        used.update(range(sb.fs_csaddr, sb.fs_csaddr + -(-sb.fs_cssize // fsize)))
        # Every inode's blocks.
        for c in range(sb.fs_ncg):
            group = mod.CylinderGroup(fs, c)
            cg = group.cg
            f.seek(group.offset)
            raw = f.read(sb.fs_cgsize)
            iused = _bits(raw[cg.cg_iusedoff:], ipg)
            for i in range(ipg):
                ino = c * ipg + i
                node = fs.inode(ino).inode
                allocated = node.di_mode != 0
                if iused[i] != (allocated or ino < UFS_ROOTINO):
                    state = "used" if iused[i] else "free"
                    bad.append(f"inode {ino}: map says {state}, mode {node.di_mode:o}")
                if not allocated:
                    continue
                # di_gen is an int32_t (dinode.h); the writer promises non-zero,
                # and one per inode (NFS file handles tell reused inodes by it).
                if not 0 < node.di_gen <= 0x7FFFFFFF:
                    bad.append(f"inode {ino}: di_gen {node.di_gen}")
                if node.di_gen in gens:
                    bad.append(f"inode {ino}: di_gen {node.di_gen} as inode {gens[node.di_gen]}")
                gens[node.di_gen] = ino
                kind = stat.S_IFMT(node.di_mode)
                mine = set()
                fast_link = kind == stat.S_IFLNK and node.di_size < sb.fs_maxsymlinklen
                if kind in (stat.S_IFREG, stat.S_IFDIR) or (kind == stat.S_IFLNK and not fast_link):
                    last = (node.di_size - 1) // bsize if node.di_size else -1
                    for lbn, addr in enumerate(list(node.di_db)):
                        if not addr:
                            continue
                        n = frag
                        if lbn == last:
                            n = -(-(node.di_size - lbn * bsize) // fsize)
                        mine.update(range(addr, addr + n))
                    for level, addr in enumerate(list(node.di_ib)):
                        if addr:
                            found = set()
                            _pointers(f, addr, level, sb, ptr_fmt, found, frag)
                            for x in found:
                                if isinstance(x, tuple):
                                    mine.update(range(x[1], x[1] + frag))
                                else:
                                    mine.add(x)
                elif any(node.di_ib) or (any(list(node.di_db)[1:]) and not fast_link):
                    bad.append(f"inode {ino}: a {kind:o} with block pointers")
                if kind == stat.S_IFDIR:
                    bad += check_directory(fs.inode(ino).open().read(), ino, fs, byteorder)
                if node.di_blocks != len(mine) * fsize // DEV_BSIZE:
                    bad.append(f"inode {ino}: di_blocks {node.di_blocks}, holds {len(mine)} fragments")
                if mine & used:
                    bad.append(f"inode {ino}: {len(mine & used)} fragments used twice")
                used |= mine
        # Each group's superblock copy (fs.h cgsblock) is the primary's.
        f.seek(sb.fs_sblockloc)
        primary = f.read(sb.fs_sbsize)
        for c in range(sb.fs_ncg):
            f.seek((c * fpg + sb.fs_sblkno) * fsize)
            if f.read(sb.fs_sbsize) != primary:
                bad.append(f"cg {c}: the superblock copy differs from the primary")
        # Each group's maps and header against that.
        for c in range(sb.fs_ncg):
            group = mod.CylinderGroup(fs, c)
            cg = group.cg
            f.seek(group.offset)
            raw = f.read(sb.fs_cgsize)
            ndblk = min(fpg, size - c * fpg)
            if (cg.cg_cgx, cg.cg_ndblk) != (c, ndblk):
                bad.append(f"cg {c}: cg_cgx {cg.cg_cgx}, cg_ndblk {cg.cg_ndblk} (want {ndblk})")
            niblk = cg.cg_old_niblk if ufs1 else cg.cg_niblk
            if niblk != ipg:
                bad.append(f"cg {c}: niblk {niblk}, fs_ipg {ipg}")
            # The kernel zeroes inode blocks past cg_initediblk before it
            # allocates there: every inode we wrote must be below it.
            if not ufs1 and cg.cg_initediblk != ipg:
                bad.append(f"cg {c}: cg_initediblk {cg.cg_initediblk}, fs_ipg {ipg}")
            if ufs1:
                per_cyl = fpg // sb.fs_old_cpg
                want = -(-ndblk // per_cyl) if c == sb.fs_ncg - 1 else sb.fs_old_cpg
                if cg.cg_old_ncyl != want:
                    bad.append(f"cg {c}: cg_old_ncyl {cg.cg_old_ncyl}, want {want}")
            t = cg.cg_old_time if ufs1 else cg.cg_time
            if t != (sb.fs_old_time if ufs1 else sb.fs_time):
                bad.append(f"cg {c}: time {t} is not the superblock's")
            free = _bits(raw[cg.cg_freeoff:], ndblk)
            for i in range(ndblk):
                if free[i] == (c * fpg + i in used):
                    bad.append(f"cg {c}: fragment {c * fpg + i} is {'free' if free[i] else 'used'} "
                               f"in the map but {'used' if free[i] else 'unused'}")
                    break
            if sb.fs_contigsumsize <= 0:
                # No cluster summary (newfs sets cg_nclusterblks only with one).
                if cg.cg_nclusterblks != 0:
                    bad.append(f"cg {c}: cg_nclusterblks {cg.cg_nclusterblks} without clusters")
            else:
                nblk = ndblk // frag
                if cg.cg_nclusterblks != nblk:
                    bad.append(f"cg {c}: cg_nclusterblks {cg.cg_nclusterblks}, want {nblk}")
                whole = [all(free[b * frag:(b + 1) * frag]) for b in range(nblk)]
                sums = [0] * (sb.fs_contigsumsize + 1)
                run = 0
                for b in whole + [False]:
                    if b:
                        run += 1
                    elif run:
                        sums[min(run, sb.fs_contigsumsize)] += 1
                        run = 0
                fmt = ("<" if byteorder == "little" else ">") + f"{sb.fs_contigsumsize + 1}i"
                claimed = list(struct.unpack_from(fmt, raw, cg.cg_clustersumoff))
                if claimed[1:] != sums[1:]:
                    bad.append(f"cg {c}: cg_clustersum {claimed[1:]}, counted {sums[1:]}")
    return bad


CASES = [
    ("ffs", "little", dict(block_size=4096, frag_size=512, size="40m")),
    # More inodes than the tree needs: free inodes in every group.
    ("ffs2", "big", dict(block_size=4096, frag_size=512, size="40m", density=8192)),
    ("ffs2", "little", {}),
    ("ffs", "big", {}),
    ("ffs2", "little", dict(block_size=65536)),   # one block per cluster: no cluster summary
]


@pytest.mark.parametrize("fmt,byteorder,options", CASES,
                         ids=[f"{f}-{b}-{'-'.join(map(str, o)) or 'default'}" for f, b, o in CASES])
def test_maps_and_counts_as_the_specification_derives_them(tmp_path, fmt, byteorder, options):
    src = tmp_path / "src"
    make_tree(src)
    image = tmp_path / "fs.img"
    pack([str(src)], str(image), format=fmt, stubetc=False, byteorder=byteorder,
         format_options=dict(options))
    with open(image, "rb") as f:
        sb = dissect_open(f, byteorder).sb
        assert sb.fs_ncg >= (3 if "size" in options else 1)
    assert check_image(image, byteorder) == []
    # Free counts recounted from the maps (ffs_testlib); the 40 MB images have
    # free whole blocks, which the smallest images rumpfs sizes by default lack.
    assert recount_summaries(image, byteorder) == []
    assert_same(normalized(scan_host(src)), dissect_records(image, byteorder))


#: Superblock fields that follow from the block and fragment size and the
#: format alone, as makefs writes them.
SIZE_FIELDS = ["fs_bsize", "fs_fsize", "fs_frag", "fs_bmask", "fs_fmask", "fs_bshift",
               "fs_fshift", "fs_fragshift", "fs_fsbtodb", "fs_sbsize", "fs_nindir", "fs_inopb",
               "fs_maxbpg", "fs_qbmask", "fs_qfmask", "fs_maxsymlinklen", "fs_maxfilesize",
               "fs_old_inodefmt", "fs_contigsumsize", "fs_avgfilesize", "fs_avgfpdir",
               "fs_maxbsize", "fs_magic", "fs_clean", "fs_maxcontig", "fs_optim"]
#: (fs_sblockloc too for UFS1: makefs puts a UFS2 superblock at 8192,
#: rumpfs at 65536, where every BSD kernel looks first; see test_ffs_write.py.)
UFS1_SIZE_FIELDS = ["fs_sblockloc", "fs_old_nspf", "fs_old_interleave", "fs_old_rps", "fs_old_postblformat",
                    "fs_old_nrpos", "fs_old_cgmask"]


@needs_makefs
@pytest.mark.parametrize("version,bsize,fsize", [(1, 8192, 1024), (2, 16384, 2048), (1, 4096, 512),
                                                 (2, 65536, 8192)])
def test_superblock_constants_as_makefs_writes_them(tmp_path, version, bsize, fsize):
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(b"x" * 5000)
    ours, theirs = tmp_path / "ours.img", tmp_path / "makefs.img"
    fmt = "ffs" if version == 1 else "ffs2"
    pack([str(src)], str(ours), format=fmt, stubetc=False, byteorder="little",
         format_options=dict(block_size=bsize, frag_size=fsize))
    subprocess.run(["makefs", "-t", "ffs", "-o", f"version={version},bsize={bsize},fsize={fsize}",
                    "-s", "4m", str(theirs), str(src)], check=True, capture_output=True)
    fields = SIZE_FIELDS + (UFS1_SIZE_FIELDS if version == 1 else [])
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        mine, ref = dissect_open(a, "little").sb, dissect_open(b, "little").sb
        got = {k: getattr(mine, k) for k in fields}
        want = {k: getattr(ref, k) for k in fields}
        assert got == want
        if version == 1:
            for sb in (mine, ref):
                # UFS1 compatibility fields mirror the 64-bit ones.
                assert sb.fs_old_size == sb.fs_size
                assert sb.fs_old_dsize == sb.fs_dsize
                assert sb.fs_old_csaddr == sb.fs_csaddr
                assert sb.fs_old_time == sb.fs_time
                assert sb.fs_old_spc == sb.fs_old_nsect == sb.fs_old_npsect   # one track per cylinder
                assert sb.fs_old_cpg * sb.fs_old_spc == sb.fs_fpg * sb.fs_old_nspf
                assert sb.fs_old_ncyl == -(-sb.fs_size * sb.fs_old_nspf // sb.fs_old_spc)
        for sb in (mine, ref):
            # fs_dsize: what the groups' headers leave for data, less the csum area.
            overhead = sb.fs_sblkno + sb.fs_ncg * (sb.fs_dblkno - sb.fs_sblkno)
            assert sb.fs_dsize == sb.fs_size - overhead - -(-sb.fs_cssize // sb.fs_fsize)
            assert sb.fs_cssize == -(-sb.fs_ncg * 16 // sb.fs_fsize) * sb.fs_fsize


@pytest.mark.parametrize("options,message", [
    ({"minfree": -1}, "--minfree -1: must be 0 to 99 (percent)"),
    ({"minfree": 100}, "--minfree 100: must be 0 to 99 (percent)"),
    ({"optimization": "fast"}, "--optimization fast: must be time or space"),
    ({"label": "L" * 32}, f"--label {'L' * 32}: 32 bytes, at most 31 and no NUL"),
    ({"label": "a\0b"}, "--label a\0b: 3 bytes, at most 31 and no NUL"),
])
def test_superblock_option_limits(tmp_path, options, message):
    """Out-of-range superblock options: the one-line error, nothing written."""
    from rumpfs.errors import RumpfsError
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(RumpfsError) as exc:
        pack([str(src)], str(tmp_path / "x.img"), format="ffs2", stubetc=False,
             format_options=options)
    assert str(exc.value) == message
    assert not (tmp_path / "x.img").exists()


@pytest.mark.parametrize("options,fields", [
    ({"minfree": 0, "optimization": "time"}, {"fs_minfree": 0, "fs_optim": 0}),
    ({"minfree": 99, "label": "L" * 31}, {"fs_minfree": 99, "fs_volname": b"L" * 31 + b"\0"}),
    ({"optimization": "space", "label": b"root"}, {"fs_optim": 1, "fs_minfree": 5}),
])
def test_superblock_option_edges_as_dissect_reads_them(tmp_path, options, fields):
    """The accepted extremes (fs.h: FS_OPTTIME 0, FS_OPTSPACE 1; minfree's
    default is docs/ffs.md's 5)."""
    src = tmp_path / "src"
    src.mkdir()
    image = tmp_path / "x.img"
    pack([str(src)], str(image), format="ffs2", stubetc=False, format_options=options)
    with open(image, "rb") as f:
        sb = dissect_open(f, "little").sb
        got = {k: bytes(getattr(sb, k)) if k == "fs_volname" else getattr(sb, k) for k in fields}
    assert got == fields


@pytest.mark.parametrize("major,minor", [(4096, 0), (0, 0x100000)])
def test_device_number_beyond_netbsd_dev_t(tmp_path, major, minor):
    """NetBSD's 32-bit dev_t has 12 bits of major, 20 of minor (sys/types.h)."""
    from rumpfs.errors import RumpfsError
    spec = tmp_path / "dev.spec"
    spec.write_text(f"nod /dev/x 0600 0 0 c {major} {minor}\n")
    with pytest.raises(RumpfsError) as exc:
        pack([], str(tmp_path / "d.img"), stubetc=False, spec=[str(spec)], format="ffs")
    assert str(exc.value) == f"/dev/x: device {major},{minor} does not fit NetBSD's dev_t"
    assert not (tmp_path / "d.img").exists()


def test_ufs2_keeps_a_time_past_2038(tmp_path):
    """UFS2's times are int64_t: a file of 2040 keeps its mtime, and fs_time
    (the newest inode time) is that second, not clamped as UFS1's must be."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "late").write_bytes(b"x")
    late = 2_200_000_000
    os.utime(src / "late", (late, late))
    os.utime(src, (1_000_000_000, 1_000_000_000))
    image = tmp_path / "fs.img"
    pack([str(src)], str(image), format="ffs2", stubetc=False, byteorder="little")
    with open(image, "rb") as f:
        fs = dissect_open(f, "little")
        assert fs.sb.fs_time == late
        assert fs.get("/late").inode.di_mtime == late
