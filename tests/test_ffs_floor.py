"""FFS images every BSD kernel mounts: never smaller than 73,728 bytes.

NetBSD (and FreeBSD) probe the superblock locations in turn, UFS2's at
65536 first, and a read past the end of the device aborts the mount, so an
image holds at least 64 KiB + one superblock (SBLOCKSIZE, 8192).  Above that
floor the image is still the smallest that holds the tree.  The judges:
the file size as the OS reports it, a NetBSD-style probe of every
superblock location (a full read each, dissect.ffs deciding what is a
superblock), dissect.ffs reading the files, and makefs's images.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import run_rumpfs
from ffs_testlib import dissect_records, makefs, needs_makefs
from treecompare import assert_same, normalized, scan_host

#: The numbers of sys/ufs/ffs/fs.h, written out so a change of the code's
#: constants cannot move the test with it.
SBLOCK_UFS1, SBLOCK_UFS2, SBLOCK_FLOPPY, SBLOCK_PIGGY = 8192, 65536, 0, 262144
SBLOCKSEARCH = (SBLOCK_UFS2, SBLOCK_UFS1, SBLOCK_FLOPPY, SBLOCK_PIGGY)
SBLOCKSIZE = 8192
FLOOR = 73728
FORMATS = [("ffs", "little"), ("ffs", "big"), ("ffs2", "little"), ("ffs2", "big")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    top = tmp_path_factory.mktemp("tiny") / "src"
    top.mkdir()
    (top / "hello").write_text("hello\n")
    (top / "d").mkdir()
    (top / "d" / "link").symlink_to("../hello")
    return top


def probe(image) -> int | None:
    """Where a NetBSD kernel finds the superblock: the SBLOCKSEARCH
    locations in turn, each a full SBLOCKSIZE read (a short read is the
    device error that aborts the mount); dissect.ffs judges each candidate."""
    from dissect.ffs.ffs import FFS

    size = os.path.getsize(image)
    with open(image, "rb") as f:
        for loc in SBLOCKSEARCH:
            assert loc + SBLOCKSIZE <= size, f"probe at {loc} reads past the end ({size} bytes)"
            f.seek(loc)
            if FFS.read_sb(f, loc) is not None:
                return loc
    return None


@pytest.mark.parametrize("fmt,endian", FORMATS)
def test_tiny_tree_reaches_the_floor(tiny, tmp_path, fmt, endian):
    out = tmp_path / "t.img"
    run_rumpfs("pack", "--no-stubetc", tiny, "-o", out, "--format", fmt, "--endian", endian)
    size = os.path.getsize(out)
    assert size >= FLOOR
    if fmt == "ffs":
        assert size == FLOOR  # the floor, not more: 8192-byte blocks divide it
        # The UFS2 candidate of a UFS1 image is free space: zeros, no superblock.
        with open(out, "rb") as f:
            f.seek(SBLOCK_UFS2)
            assert f.read(SBLOCKSIZE) == bytes(SBLOCKSIZE)
    if endian == "little":
        assert probe(out) == (SBLOCK_UFS1 if fmt == "ffs" else SBLOCK_UFS2)
        assert_same(normalized(scan_host(tiny)), dissect_records(out))
    run_rumpfs("check", out)


@needs_makefs
def test_floor_image_like_makefs_at_that_size(tmp_path):
    """makefs's own estimate for a one-file tree is 32 KiB, below its own
    minimum and below what NetBSD mounts from a device; ours is the floor.
    At ``-s 73728`` makefs's image is as large as ours and both read the
    same."""
    top = tmp_path / "src"
    top.mkdir()
    (top / "hello").write_text("hello\n")
    ours = tmp_path / "ours.img"
    run_rumpfs("pack", "--no-stubetc", top, "-o", ours, "--endian", "little")
    assert os.path.getsize(ours) == FLOOR
    theirs = makefs(tmp_path / "mk.img", top, size=str(FLOOR), endian="le")
    assert os.path.getsize(theirs) == os.path.getsize(ours)
    assert probe(theirs) == probe(ours) == SBLOCK_UFS1
    mine, makefs_view = dissect_records(ours), dissect_records(theirs)
    mine[b""]["mtime"] = makefs_view[b""]["mtime"] = None  # makefs stamps the root itself
    assert_same(makefs_view, mine)


@needs_makefs
@pytest.mark.parametrize("version", [1, 2])
def test_above_the_floor_still_smallest(tmp_path, version):
    """A tree that needs more than the floor gets no padding: no larger
    than makefs's image, and one block less does not hold it.  (makefs's
    own estimate fails for most small trees; this one it sizes.)"""
    top = tmp_path / "src"
    top.mkdir()
    for i in range(8):
        (top / f"f{i}").write_bytes(bytes([i + 1]) * (200000 + 70000 * i))
    out = tmp_path / "r.img"
    fmt = "ffs" if version == 1 else "ffs2"
    run_rumpfs("pack", "--no-stubetc", top, "-o", out, "--format", fmt, "--endian", "little")
    size = os.path.getsize(out)
    theirs = makefs(tmp_path / "mk.img", top, version=version, minsize=None, endian="le")
    assert FLOOR < size <= os.path.getsize(theirs)
    assert_same(normalized(scan_host(top)), dissect_records(out))
    res = run_rumpfs("pack", "--no-stubetc", top, "-o", tmp_path / "small.img", "--format", fmt,
                     "--max-size", str(size - 8192), check=False)
    assert res.returncode == 1 and "too small, the tree needs" in res.err


@pytest.mark.parametrize("option", ["--size", "--max-size"])
def test_below_the_floor_is_an_error(tiny, tmp_path, option):
    out = tmp_path / "t.img"
    out.write_bytes(b"old image")
    res = run_rumpfs("pack", "--no-stubetc", tiny, "-o", out, option, "65536", check=False)
    assert res.returncode == 1
    assert res.err == (f"rumpfs: error: {option} 65536: smaller than 73728 bytes, the smallest FFS "
                       "image every BSD kernel mounts (64 KiB + one 8192-byte superblock: "
                       "kernels probe for one at 65536)\n")
    assert out.read_bytes() == b"old image"
    assert sorted(os.listdir(tmp_path)) == ["t.img"]


def test_floor_in_whole_blocks(tiny, tmp_path):
    """With 16 KiB blocks the floor is 81920 bytes (the file system covers
    whole blocks), and the error says so."""
    out = tmp_path / "t.img"
    run_rumpfs("pack", "--no-stubetc", tiny, "-o", out, "--block-size", "16384",
               "--endian", "little")
    assert os.path.getsize(out) == 81920
    assert probe(out) == SBLOCK_UFS1
    res = run_rumpfs("pack", "--no-stubetc", tiny, "-o", tmp_path / "x.img", "--block-size",
                     "16384", "--size", "73728", check=False)
    assert res.returncode == 1
    assert res.err.endswith("kernels probe for one at 65536; in whole 16384-byte blocks)\n")


def test_min_size_below_the_floor_gives_the_floor(tiny, tmp_path):
    out = tmp_path / "t.img"
    run_rumpfs("pack", "--no-stubetc", tiny, "-o", out, "--min-size", "40k")
    assert os.path.getsize(out) == FLOOR


def test_object_carries_the_floor_image(tiny, tmp_path):
    obj = tmp_path / "t.o"
    run_rumpfs("pack", "--no-stubetc", tiny, "-o", obj, "--target", "x86_64")
    image = tmp_path / "t.img"
    subprocess.run(["objcopy", "-O", "binary", "--only-section", ".rodata.rumpfs.root",
                    str(obj), str(image)], check=True)
    assert os.path.getsize(image) == FLOOR
    assert probe(image) == SBLOCK_UFS1


# -- slow: the Linux ufs driver mounts the floor images ------------------------

#: label -> (pack options, the ufstype the guest mounts it with).
KERNEL_IMAGES = {
    "floor-ufs1-le": (["--format", "ffs", "--endian", "little"], "44bsd"),
    "floor-ufs1-be": (["--format", "ffs", "--endian", "big"], "44bsd"),
    "floor-ufs2": (["--format", "ffs2", "--endian", "little"], "ufs2"),
}


@pytest.mark.slow
def test_linux_mounts_the_floor_images(tmp_path_factory):
    """One boot of the pinned Debian kernel (tests/kernel/harness.py, used
    as it is): each floor-sized image attached as a virtio disk, mounted
    read-only by the ufs driver and listed by busybox in the guest."""
    from kernel import harness

    try:
        kernel = harness.Kernel.chosen()
    except harness.KernelMissing as e:
        pytest.fail(str(e))
    work = tmp_path_factory.mktemp("floor-boot") / "boot"

    def prepare(work):
        src = work / "src"
        src.mkdir()
        (src / "hello").write_text("hello\n")
        (src / "d").mkdir()
        (src / "d" / "link").symlink_to("../hello")
        disks, plan = [], []
        for i, (label, (opts, ufstype)) in enumerate(KERNEL_IMAGES.items()):
            image = work / f"{label}.img"
            run_rumpfs("pack", "--no-stubetc", "--keep-owner", *opts, src, "-o", image)
            assert os.path.getsize(image) >= FLOOR
            disks.append(harness.Disk(image, ufstype))
            plan.append(f"list_disk {harness.DISK_NAMES[i]} {ufstype} {label}")
        helper = harness.build_helper(work / "helper.cpio", kernel, "\n".join(plan))
        return harness.initrd_with(work / "initrd", helper, None), disks

    boot = harness.boot_once(kernel, work, prepare)
    boot.assert_clean()
    expected = scan_host(work / "src")
    for label in KERNEL_IMAGES:
        harness.compare(expected, boot.listing(label), what=f"{label} (Linux ufs)")
