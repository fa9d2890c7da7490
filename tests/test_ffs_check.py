"""The fsck-grade FFS checker: clean on makefs images, exact about corruption.

makefs (NetBSD's own tool) makes the reference images; each corruption is a
copy with one field changed at an offset found through our layout
declarations, and the checker must name the defect.
"""

from __future__ import annotations

import shutil
import stat

import pytest
import treecompare as tc
from conftest import leftovers, run_rumpfs
from ffs_testlib import (
    IMAGE_NAMES,
    Patcher,
    dissect_records,
    extra_tree,
    makefs_images,
    needs_makefs,
    open_reader,
    reader_records,
    recount_summaries,
)

from rumpfs.formats.ffs import layout as L

__all__ = ["extra_tree", "makefs_images"]


def problems(path) -> list[str]:
    r = open_reader(path)
    try:
        return r.check()
    finally:
        r.f.close()


def assert_found(found: list[str], *needles: str) -> None:
    for needle in needles:
        assert any(needle in m for m in found), f"{needle!r} not reported; got {found}"


@needs_makefs
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_makefs_images_are_clean(makefs_images, name):
    image, _ = makefs_images[name]
    assert problems(image) == []


@pytest.fixture(params=["fixture-ufs1-le", "fixture-ufs2-be"])
def victim(request, makefs_images, tmp_path):
    """A private copy of a makefs image and a patcher for it."""
    src, _ = makefs_images[request.param]
    path = tmp_path / "victim.img"
    shutil.copyfile(src, path)
    assert problems(path) == []
    p = Patcher(path)
    yield p
    p.close()


@needs_makefs
def test_flipped_free_map_bit(victim):
    # The first fragment of /hello.txt is in use: mark it free.
    ino = victim.ino(b"hello.txt")
    frag = victim.r.inode(ino)["di_db"][0]
    c, i = divmod(frag, victim.r.fpg)
    cg = victim.r.layout.fast("cg").unpack_dict(victim.r.pread(168, victim.cg_offset(c)))
    victim.flip_bit(victim.cg_offset(c) + cg["cg_freeoff"] + i // 8, i % 8)
    assert_found(problems(victim.path),
                 f"cg {c}: free-fragment map: fragment {frag} is marked free but is in use")


@needs_makefs
def test_flipped_inode_map_bit(victim):
    ino = victim.ino(b"empty")
    c, i = divmod(ino, victim.r.ipg)
    cg = victim.r.layout.fast("cg").unpack_dict(victim.r.pread(168, victim.cg_offset(c)))
    victim.flip_bit(victim.cg_offset(c) + cg["cg_iusedoff"] + i // 8, i % 8)
    assert_found(problems(victim.path), f"cg {c}: inode map: inode {ino} is marked free but is used")


@needs_makefs
def test_wrong_link_count(victim):
    ino = victim.ino(b"hard/a")
    victim.put(victim.inode_field(ino, "di_nlink"), "h", 4)
    # The path named is the first one met in directory order (makefs keeps readdir order).
    assert_found(problems(victim.path), f"inode {ino} (/hard/",
                 "link count di_nlink is 4, but 3 directory entries name it")


@needs_makefs
def test_wrong_directory_link_count(victim):
    ino = victim.ino(b"deep")
    victim.add(victim.inode_field(ino, "di_nlink"), "h", 1)
    assert_found(problems(victim.path),
                 f"inode {ino} (/deep): link count di_nlink is 4, but 3 directory entries")


@needs_makefs
def test_wrong_cg_summary_count(victim):
    want = victim.get(victim.cg_field(0, "cg_cs.cs_nbfree"), "l")
    victim.put(victim.cg_field(0, "cg_cs.cs_nbfree"), "l", want + 1)
    assert_found(problems(victim.path), f"cg 0: cg_cs.cs_nbfree is {want + 1}, recomputed {want}")


@needs_makefs
def test_wrong_superblock_total(victim):
    off = victim.sb_field("fs_cstotal.cs_nffree")
    want = victim.get(off, "q")
    victim.put(off, "q", want + 3)
    assert_found(problems(victim.path),
                 f"superblock: fs_cstotal.cs_nffree is {want + 3}, recomputed {want}")


@needs_makefs
def test_wrong_csum_area(victim):
    off = victim.r.fs["fs_csaddr"] * victim.r.fsize + L.offsetof(victim.L.csum, "cs_nifree")
    want = victim.get(off, "l")
    victim.put(off, "l", want - 1)
    assert_found(problems(victim.path), f"csum area: cg 0 cs_nifree is {want - 1}, recomputed {want}")


@needs_makefs
def test_block_shared_by_two_files(victim):
    a, b = victim.ino(b"bin/setuid"), victim.ino(b"bin/setgid")
    frag = victim.r.inode(a)["di_db"][0]
    victim.put(victim.inode_field(b, "di_db[0]"), "q" if victim.r.ufs2 else "l", frag)
    found = [m for m in problems(victim.path) if f"at fragment {frag} is shared with" in m]
    assert len(found) == 1, found
    assert f"inode {a} (/bin/setuid)" in found[0] and f"inode {b} (/bin/setgid)" in found[0]


@needs_makefs
def test_wrong_di_blocks(victim):
    ino = victim.ino(b"big.bin")
    fmt = "Q" if victim.r.ufs2 else "L"
    want = victim.get(victim.inode_field(ino, "di_blocks"), fmt)
    victim.put(victim.inode_field(ino, "di_blocks"), fmt, want - 2)
    assert_found(problems(victim.path), f"inode {ino}: di_blocks is {want - 2}, recounted {want}")


@needs_makefs
def test_bad_d_type(victim):
    off = victim.dirent(b"", b"hello.txt") + L.offsetof(victim.L.direct, "d_type")
    victim.put(off, "B", L.DT_DIR)
    ino = victim.ino(b"hello.txt")
    assert_found(problems(victim.path),
                 "entry b'hello.txt' at offset", f"has d_type {L.DT_DIR}, but inode {ino} is of "
                 f"type {L.DT_REG}")


@needs_makefs
def test_bad_reclen(victim):
    off = victim.dirent(b"hard", b"b") + L.offsetof(victim.L.direct, "d_reclen")
    victim.put(off, "H", 6)
    assert_found(problems(victim.path), "directory inode", "bad d_reclen 6")


@needs_makefs
def test_superblock_copy_disagrees(victim):
    off = victim.sb_copy_field(0, "fs_dsize")
    dsize = victim.r.fs["fs_dsize"]
    victim.put(off, "q", dsize - 8)
    frag = victim.r.cgstart(0) + victim.r.fs["fs_sblkno"]
    assert_found(problems(victim.path),
                 f"cg 0: superblock copy at fragment {frag} disagrees with the primary: "
                 f"fs_dsize {dsize - 8} != {dsize}")


@needs_makefs
def test_pointer_out_of_range(victim):
    ino = victim.ino(b"hello.txt")
    size = victim.r.fs["fs_size"]
    victim.put(victim.inode_field(ino, "di_db[0]"), "q" if victim.r.ufs2 else "l", size + 100)
    assert_found(problems(victim.path),
                 f"inode {ino}: data block 0 at fragment {size + 100} is outside the file system")


@needs_makefs
def test_pointer_past_end_of_file(victim):
    ino = victim.ino(b"hello.txt")
    victim.put(victim.inode_field(ino, "di_db[3]"), "q" if victim.r.ufs2 else "l", 1234)
    assert_found(problems(victim.path), f"inode {ino}: di_db[3] = 1234 beyond the end of the file")


@needs_makefs
def test_bad_superblock_derived_field(victim):
    victim.put(victim.sb_field("fs_maxsymlinklen"), "l", 0)
    want = 120 if victim.r.ufs2 else 60
    assert_found(problems(victim.path), f"superblock: fs_maxsymlinklen is 0, expected {want}")


@needs_makefs
def test_check_command_reports_and_fails(makefs_images, tmp_path):
    src, _ = makefs_images["fixture-ufs1-le"]
    path = tmp_path / "bad.img"
    shutil.copyfile(src, path)
    run_rumpfs("check", path)
    p = Patcher(path)
    ino = p.ino(b"hard/a")
    p.put(p.inode_field(ino, "di_nlink"), "h", 7)
    p.close()
    res = run_rumpfs("check", path, check=False)
    assert res.returncode != 0
    assert "link count di_nlink is 7, but 3 directory entries name it" in res.out + res.err


# --- images written by rumpfs itself ---------------------------------------------


WRITER_VARIANTS = [("ffs", "little"), ("ffs", "big"), ("ffs2", "little"), ("ffs2", "big")]


@pytest.mark.parametrize("fmt,endian", WRITER_VARIANTS)
def test_rumpfs_images_check_and_read_back(fixture_tree, tmp_path, fmt, endian):
    out = tmp_path / f"root.{fmt}.img"
    run_rumpfs("pack", "--no-stubetc", "--format", fmt, "--endian", endian, fixture_tree, "-o", out)
    assert not leftovers(tmp_path)
    r = open_reader(out)
    assert (r.ufs2, r.byteorder) == (fmt == "ffs2", endian)
    if fmt == "ffs2":
        # Where newfs, the kernels and Linux look (makefs uses 8192).
        assert r.sb.loc == L.SBLOCK_UFS2
    r.f.close()
    expected = tc.normalized(tc.scan_host(fixture_tree))
    tc.assert_same(expected, reader_records(out))
    # The independent judges of the same image: dissect.ffs and the recount.
    tc.assert_same(expected, dissect_records(out, endian))
    assert recount_summaries(out, endian) == []
    assert problems(out) == []


@needs_makefs
def test_rumpfs_image_read_by_dissect(fixture_tree, tmp_path):
    for fmt in ("ffs", "ffs2"):
        out = tmp_path / f"{fmt}.img"
        run_rumpfs("pack", "--no-stubetc", "--format", fmt, "--endian", "little",
                   fixture_tree, "-o", out)
        tc.assert_same(dissect_records(out), reader_records(out))
        assert stat.S_ISDIR(open_reader(out).inode(L.UFS_ROOTINO)["di_mode"])


EXTRA_VARIANTS = [
    ("ffs", ("--block-size", "4096", "--frag-size", "512", "--endian", "little")),
    ("ffs2", ("--block-size", "65536", "--frag-size", "8192", "--endian", "big")),
    ("ffs", ("--size", "200m", "--endian", "big")),
    ("ffs2", ("--size", "200m", "--endian", "little")),
]


@pytest.mark.parametrize("fmt,opts", EXTRA_VARIANTS, ids=lambda v: "-".join(v) if isinstance(v, tuple) else v)
def test_rumpfs_variants_check_and_read_back(extra_tree, tmp_path, fmt, opts):
    """A 20 MB file (double indirect with 4 KiB blocks), 300 entries in one
    directory, 64 KiB blocks, several cylinder groups, both byte orders."""
    out = tmp_path / "root.img"
    run_rumpfs("pack", "--no-stubetc", "--format", fmt, *opts, extra_tree, "-o", out)
    r = open_reader(out)
    if "--size" in opts:
        assert r.ncg > 1 and r.fs["fs_size"] * r.fsize == 200 << 20
    if "4096" in opts:
        assert r.inode(r.find(b"big20").ino)["di_ib"][1] != 0
    r.f.close()
    expected = tc.normalized(tc.scan_host(extra_tree))
    tc.assert_same(expected, reader_records(out))
    endian = opts[opts.index("--endian") + 1]
    tc.assert_same(expected, dissect_records(out, endian))
    assert recount_summaries(out, endian) == []
    assert problems(out) == []


@needs_makefs
def test_unreferenced_inode(victim):
    # An entry whose d_ino is 0 is an empty slot: the file loses its only name.
    ino = victim.ino(b"bin/private")
    victim.put(victim.dirent(b"bin", b"private") + L.offsetof(victim.L.direct, "d_ino"), "L", 0)
    assert_found(problems(victim.path), f"inode {ino}: allocated (-rw-------) but no directory "
                                        f"entry names it")


@needs_makefs
def test_ufs1_old_totals_must_agree(makefs_images, tmp_path):
    src, _ = makefs_images["fixture-ufs1-le"]
    path = tmp_path / "old.img"
    shutil.copyfile(src, path)
    p = Patcher(path)
    off = p.sb_field("fs_old_cstotal.cs_nifree")
    want = p.get(off, "l")
    p.put(off, "l", want + 1)
    p.close()
    assert_found(problems(path), f"superblock: fs_old_cstotal.cs_nifree {want + 1} differs from "
                                 f"fs_cstotal.cs_nifree {want}")


def test_check_ls_info_on_an_object(fixture_tree, tmp_path):
    """The generic commands find the FFS image inside an ELF object."""
    obj = tmp_path / "root.o"
    run_rumpfs("pack", "--no-stubetc", fixture_tree, "-o", obj)
    assert "clean" in run_rumpfs("check", obj).out
    assert "/hard/c" in run_rumpfs("ls", obj).out
    info = run_rumpfs("info", obj).out
    assert "UFS1" in info and "free_inodes" in info
