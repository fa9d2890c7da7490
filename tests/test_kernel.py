"""Linux boots our cpio as its initramfs and mounts our FFS images, as root too.

The slow tests boot Debian's kernel under qemu (see tests/kernel/harness.py
and docs/kernel-tests.md); the kernel's own view of each image, printed by
busybox in the guest, is compared entry by entry with the source tree.  The
fast tests check the harness itself: the guest's listing script run on the
host, the parsing of what the guest prints, and that every negative case is
reported with the difference named.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import make_tree
import pytest
import treecompare
from conftest import run_rumpfs
from kernel import harness

#: FFS images attached to the disk boot: label -> (rumpfs pack options, ufstype).
FFS_IMAGES = {
    "ufs1-le": (["--format", "ffs", "--endian", "little"], "44bsd"),
    "ufs1-be": (["--format", "ffs", "--endian", "big"], "44bsd"),
    "ufs2": (["--format", "ffs2", "--endian", "little"], "ufs2"),
}
#: A copy of the UFS1 little-endian image with one byte of big.bin inverted.
FLIPPED = "ufs1-le-flipped"
#: 64 bytes of big.bin at 1 MiB: where the flipped image is corrupted.
BIG_NEEDLE_AT = 1 << 20
#: UFS_MAGIC as statfs reports it for a ufs mount (Linux include/uapi/linux/magic.h).
UFS_MAGIC = 0x00011954

PACK = ["pack", "--no-stubetc", "--keep-owner", "--no-progress"]


def ffs_missing() -> str | None:
    """Why our FFS writer cannot be used yet, or None."""
    from rumpfs import formats
    for name in ("ffs", "ffs2"):
        try:
            formats.get(name)
        except Exception as e:  # noqa: BLE001 - the reason is reported
            return f"rumpfs.formats.get({name!r}) raises: {e}"
    return None


def big_needle() -> bytes:
    return make_tree.pattern(b"big", make_tree.BIG_SIZE)[BIG_NEEDLE_AT:BIG_NEEDLE_AT + 64]


# -- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="session")
def kernel():
    if shutil.which(harness.QEMU) is None:
        pytest.fail(f"{harness.QEMU} not found: apt-get install qemu-system-x86")
    try:
        return harness.Kernel.chosen()
    except harness.KernelMissing as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def boots_dir(tmp_path_factory) -> Path:
    """Where boots keep their inputs and logs; shared by xdist workers."""
    logs = os.environ.get("RUMPFS_TEST_LOGS")
    if logs:
        # One directory per run, the same for all xdist workers of the run.
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        return Path(logs) / f"kernel-{run}"
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / "kernel-boots"


def _source(work: Path) -> Path:
    src = work / "src"
    make_tree.make_tree(src)
    return src


def _initramfs_boot(kernel, work: Path, archive_name: str | None, plan: str, disks_of=None,
                    env=None):
    def prepare(work):
        src = _source(work)
        archive = None
        if archive_name:
            archive = work / archive_name
            run_rumpfs(*PACK, src, "-o", archive, env=env)
        disks = disks_of(work, src) if disks_of else []
        full_plan = "\n".join([plan] + [f"list_disk {harness.DISK_NAMES[i]} {d.ufstype} {label}"
                                        for i, (label, d) in enumerate(disks)])
        helper = harness.build_helper(work / "helper.cpio", kernel, full_plan)
        initrd = harness.initrd_with(work / "initrd", helper, archive)
        return initrd, [d for _, d in disks]
    return harness.boot_once(kernel, work, prepare)


def _ffs_disks(work: Path, src: Path):
    if ffs_missing():
        return []
    disks = []
    for label, (opts, ufstype) in FFS_IMAGES.items():
        image = work / f"{label}.img"
        run_rumpfs(*PACK, *opts, src, "-o", image)
        disks.append((label, harness.Disk(image, ufstype)))
    flipped = work / f"{FLIPPED}.img"
    shutil.copyfile(work / "ufs1-le.img", flipped)
    harness.flip_byte_in(flipped, big_needle())
    disks.append((FLIPPED, harness.Disk(flipped, "44bsd")))
    return disks


@pytest.fixture(scope="session")
def disk_boot(kernel, boots_dir):
    """One boot: our plain cpio as initramfs, our FFS images as virtio disks."""
    return _initramfs_boot(kernel, boots_dir / "disks", "root.cpio",
                           "list_initramfs initramfs", _ffs_disks)


@pytest.fixture(scope="session")
def root_boot(kernel, boots_dir):
    """One boot: the helper switch_roots into our FFS image and runs its init."""
    reason = ffs_missing()
    if reason:
        pytest.skip(reason)

    def prepare(work):
        src = _source(work)
        shutil.copyfile(harness.BUSYBOX, src / "bin" / "busybox")
        os.chmod(src / "bin" / "busybox", 0o755)
        (src / "sbin").mkdir(mode=0o755)
        shutil.copyfile(harness.GUEST / "root-init", src / "sbin" / "init")
        os.chmod(src / "sbin" / "init", 0o755)
        (src / "lib").mkdir(mode=0o755)
        shutil.copyfile(harness.GUEST / "lib.sh", src / "lib" / "rumpfs-test.sh")
        make_tree.set_times(os.fsencode(src))
        image = work / "root.img"
        run_rumpfs(*PACK, "--format", "ffs", "--endian", "little", src, "-o", image)
        helper = harness.build_helper(work / "helper.cpio", kernel, "switch_into vda 44bsd")
        return harness.initrd_with(work / "initrd", helper, None), [harness.Disk(image)]
    return harness.boot_once(kernel, boots_dir / "as-root", prepare)


@pytest.fixture(scope="session")
def negative_boot(kernel, boots_dir):
    """One boot that must go wrong: a cut image and a mount with the wrong ufstype."""
    reason = ffs_missing()
    if reason:
        pytest.skip(reason)

    def prepare(work):
        src = _source(work)
        image = work / "ufs1-le.img"
        run_rumpfs(*PACK, *FFS_IMAGES["ufs1-le"][0], src, "-o", image)
        cut = work / "cut.img"
        shutil.copyfile(image, cut)
        os.truncate(cut, os.path.getsize(cut) // 2 // 512 * 512)
        plan = "list_disk vda 44bsd cut\nlist_disk vdb ufs2 wrong-ufstype"
        helper = harness.build_helper(work / "helper.cpio", kernel, plan)
        return (harness.initrd_with(work / "initrd", helper, None),
                [harness.Disk(cut), harness.Disk(image, "ufs2")])
    return harness.boot_once(kernel, boots_dir / "negative", prepare)


def _expected(boot: harness.Boot) -> dict:
    return treecompare.scan_host(boot.log_dir.parent / "src")


def _compare(boot, expected, actual, what):
    try:
        harness.compare(expected, actual, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}\n(guest logs in {boot.log_dir})") from None


# -- slow: the kernel judges -------------------------------------------------

@pytest.mark.slow
def test_boot_is_clean(disk_boot):
    """No kernel message at error level, no I/O error, no failed mount."""
    disk_boot.assert_clean()


@pytest.mark.slow
def test_initramfs_plain(disk_boot):
    expected = _expected(disk_boot)
    actual = harness.initramfs_view(disk_boot.listing("initramfs"), expected)
    _compare(disk_boot, expected, actual, "initramfs root.cpio")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["gz", "xz", "zst", "lz4"])
def test_initramfs_compressed(kernel, boots_dir, suffix):
    # Blocks of 1 MiB: the fixture (13 MB) makes many gzip, xz and lz4
    # blocks, compressed on several threads, for the kernel to decode.
    boot = _initramfs_boot(kernel, boots_dir / f"initramfs-{suffix}", f"root.cpio.{suffix}",
                           "list_initramfs initramfs",
                           env={"RUMPFS_COMPRESS_BLOCK_SIZE": str(1 << 20), "RUMPFS_COMPRESS_WORKERS": "3"})
    boot.assert_clean()
    expected = _expected(boot)
    actual = harness.initramfs_view(boot.listing("initramfs"), expected)
    _compare(boot, expected, actual, f"initramfs root.cpio.{suffix}")


@pytest.mark.slow
@pytest.mark.parametrize("label", list(FFS_IMAGES))
def test_ffs_mounted_by_linux(disk_boot, label):
    reason = ffs_missing()
    if reason:
        pytest.skip(reason)
    _compare(disk_boot, _expected(disk_boot), disk_boot.listing(label), f"{label} image (Linux ufs)")


#: The longest Rock Ridge name Linux's isofs reads whole.
ISOFS_NAME_MAX = 254

#: The fixture's name that is not UTF-8: FAT stores names in UTF-16.
NOT_UTF8 = "/caf\udce9-latin1"


@pytest.fixture(scope="session")
def other_fs_boot(kernel, boots_dir):
    """One boot: our ISO 9660 image mounted with Rock Ridge and, as a second
    disk, with norock (Joliet), and our FAT image with vfat."""
    def prepare(work):
        src = _source(work)
        iso = work / "root.iso"
        run_rumpfs(*PACK, src, "-o", iso)
        joliet = work / "joliet.iso"
        shutil.copyfile(iso, joliet)
        fat = work / "root.fat"
        run_rumpfs(*PACK, "--fat-skip-special", "--remove", NOT_UTF8, src, "-o", fat)
        plan = ("list_fs vda iso9660 nojoliet iso-rr\n"
                "list_fs vdb iso9660 norock iso-joliet\n"
                "list_fs vdc vfat utf8,shortname=winnt fat")
        helper = harness.build_helper(work / "helper.cpio", kernel, plan,
                                      modules=harness.OTHER_FS_MODULES)
        disks = [harness.Disk(iso), harness.Disk(joliet), harness.Disk(fat)]
        return harness.initrd_with(work / "initrd", helper, None), disks
    return harness.boot_once(kernel, boots_dir / "other-fs", prepare)


def _regular_files(records: dict, keep=lambda path: True) -> dict:
    """path -> (size, sha256) of the regular files, and the directories."""
    return {p: (r["type"], r["size"] if r["type"] == "file" else None, r["sha256"])
            for p, r in records.items()
            if r["type"] in ("file", "dir") and p and keep(p)}


@pytest.mark.slow
def test_iso_rock_ridge_mounted_by_linux(other_fs_boot):
    """Linux's isofs reads every Rock Ridge field back as the source has it."""
    other_fs_boot.assert_clean()
    expected = _expected(other_fs_boot)
    actual = other_fs_boot.listing("iso-rr")
    # Linux reads at most 254 bytes of a Rock Ridge name (fs/isofs/rock.c
    # stops at the NM piece that would pass that): the fixture's 255-byte name
    # comes back cut where one of our NM pieces ends, with its contents.
    for path in [p for p in expected if len(p) > ISOFS_NAME_MAX]:
        record = expected.pop(path)
        cut = [p for p in actual if p and path.startswith(p) and len(p) <= ISOFS_NAME_MAX]
        assert len(cut) == 1 and actual.pop(cut[0])["sha256"] == record["sha256"], path
    # isofs numbers inodes by record position and counts a directory's links
    # itself; the link counts of files come from Rock Ridge (PX).
    for records in (expected, actual):
        for r in records.values():
            if r["type"] == "dir":
                r["nlink"] = None
    _compare(other_fs_boot, expected, actual, "ISO 9660 image (Linux isofs, Rock Ridge)")


@pytest.mark.slow
def test_iso_joliet_mounted_by_linux(other_fs_boot):
    """With norock, Linux reads the Joliet tree: every file's contents under
    its Joliet name (UTF-16, so bytes that are not UTF-8 become U+FFFD, and
    at most 64 characters: docs/iso.md)."""
    def joliet(path: bytes) -> bytes:
        parts = path.decode("utf-8", "replace").split("/")
        return "/".join(part[:64] for part in parts).encode()

    expected = {joliet(p): v for p, v in _regular_files(_expected(other_fs_boot)).items()}
    assert _regular_files(other_fs_boot.listing("iso-joliet")) == expected


@pytest.mark.slow
def test_fat_mounted_by_linux(other_fs_boot):
    """Linux's vfat reads the long names and the contents of the FAT image."""
    dropped = os.fsencode(NOT_UTF8.lstrip("/"))
    expected = _regular_files(_expected(other_fs_boot), lambda p: p != dropped)
    actual = _regular_files(other_fs_boot.listing("fat"))
    assert actual == expected


@pytest.mark.slow
def test_ffs_flipped_byte_is_caught(disk_boot):
    """One inverted byte in big.bin's data: the listing names that file only."""
    reason = ffs_missing()
    if reason:
        pytest.skip(reason)
    with pytest.raises(AssertionError) as err:
        harness.compare(_expected(disk_boot), disk_boot.listing(FLIPPED), what=FLIPPED)
    msg = str(err.value)
    assert "1 difference(s)" in msg, msg
    assert "/big.bin: sha256 expected '" in msg, msg


@pytest.mark.slow
def test_wrong_mode_in_expected_tree_is_caught(disk_boot):
    expected = _expected(disk_boot)
    expected[b"hello.txt"] = dict(expected[b"hello.txt"], mode=0o600)
    actual = harness.initramfs_view(disk_boot.listing("initramfs"), expected)
    with pytest.raises(AssertionError) as err:
        harness.compare(expected, actual, what="initramfs")
    assert str(err.value).splitlines()[-2:] == [
        "initramfs: 1 difference(s) from the source tree:",
        "/hello.txt: mode expected '0o600', got '0o644'",
    ]


@pytest.mark.slow
def test_ffs_as_root(root_boot):
    """The kernel mounts our image, switch_roots into it and runs OUR /sbin/init."""
    root_boot.assert_clean()
    hello = root_boot.section("hello").lines[0].decode()
    pid, fstype = hello.split()[1], hello.split()[3]
    assert pid == "1", hello
    assert int(fstype, 16) == UFS_MAGIC, f"/ is not a ufs mount: {hello}"
    _compare(root_boot, _expected(root_boot), root_boot.listing("root"), "FFS root image")


@pytest.mark.slow
def test_kernel_complaints_fail_the_boot(negative_boot):
    """I/O errors, kernel errors and a failed mount are each reported."""
    problems = negative_boot.problems()
    text = "\n".join(problems)
    assert any(p.startswith("mount-failed vdb: ") for p in problems), text
    assert any(p.startswith("kernel error: ") for p in problems), text
    assert any(p.startswith("console: ") and "I/O error" in p for p in problems), text
    with pytest.raises(harness.BootError) as err:
        negative_boot.assert_clean()
    assert f"problem(s) in the boot (logs in {negative_boot.log_dir})" in str(err.value)


# -- fast: the harness itself ------------------------------------------------

def _host_listing(top: Path, tmp_path: Path, prune: str = "") -> dict:
    """Run the guest's listing function with the host's busybox."""
    out = tmp_path / "results"
    script = f'. "$LIB"; exec 3>"{out}"; list "$1" tree "$2"'
    env = {"BB": str(harness.BUSYBOX), "LIB": str(harness.GUEST / "lib.sh"), "PATH": "/nonexistent"}
    subprocess.run([str(harness.BUSYBOX), "sh", "-c", script, "sh", str(top), prune],
                   env=env, check=True)
    return harness.parse_sections(out.read_bytes())


def test_guest_listing_matches_host_scan(fixture_tree, tmp_path):
    """The guest script run on the host agrees with Python's own lstat walk."""
    sections = _host_listing(fixture_tree, tmp_path)
    assert sections["tree"].status == "rc=0"
    listing = harness.parse_listing(sections["tree"].lines)
    harness.compare(treecompare.scan_host(fixture_tree), listing)
    assert listing[b"links/long"]["target"] == make_tree.LONG_TARGET
    assert make_tree.LATIN1_NAME in listing and make_tree.LONG_NAME in listing


def test_guest_listing_prunes(tmp_path):
    top = tmp_path / "top"
    (top / "keep").mkdir(parents=True)
    (top / ".rumpfs-test" / "x").mkdir(parents=True)
    listing = harness.parse_listing(_host_listing(top, tmp_path, ".rumpfs-test")["tree"].lines)
    assert sorted(listing) == [b"", b"keep"]


def test_guest_listing_odd_names(tmp_path):
    """Newlines, a leading dash, spaces and trailing newlines in a target survive."""
    top = tmp_path / "top"
    top.mkdir()
    names = [b"new\nline", b"-dash", b" sp ace ", b"\xff\xfe"]
    for n in names:
        (top / os.fsdecode(n)).write_bytes(n)
    os.symlink(b"t\n\n", os.path.join(os.fsencode(top), b"nl-target"))
    listing = harness.parse_listing(_host_listing(top, tmp_path)["tree"].lines)
    harness.compare(treecompare.scan_host(top), listing)
    assert listing[b"nl-target"]["target"] == b"t\n\n"
    assert set(names) < set(listing)


def test_truncated_cpio_is_refused_before_boot(fixture_tree, tmp_path):
    """The kernel would unpack half an archive silently: GNU cpio must object first."""
    archive = tmp_path / "root.cpio"
    run_rumpfs(*PACK, fixture_tree, "-o", archive)
    assert harness.check_cpio(archive) == len(treecompare.scan_host(fixture_tree))
    with open(archive, "r+b") as f:
        f.truncate(os.path.getsize(archive) // 2)
    helper = tmp_path / "helper.cpio"
    helper.write_bytes(b"")
    with pytest.raises(harness.BootError, match=r"root.cpio: GNU cpio rejects the archive: .*premature end"):
        harness.initrd_with(tmp_path / "initrd", helper, archive)
    assert not (tmp_path / "initrd").exists()


def test_truncated_compressed_cpio_is_refused(fixture_tree, tmp_path):
    archive = tmp_path / "root.cpio.gz"
    run_rumpfs(*PACK, fixture_tree, "-o", archive)
    harness.check_cpio(archive)
    with open(archive, "r+b") as f:
        f.truncate(os.path.getsize(archive) - 100)
    with pytest.raises(harness.BootError, match=r"root.cpio.gz: gzip cannot decompress it: .*unexpected end"):
        harness.check_cpio(archive)


def _record(path: bytes, mode: int, target: bytes = b"", sha="-", rdev=(0, 0), nlink=1, size=0):
    return (f"E {mode:x} 0 0 {size} {nlink} {rdev[0]:x} {rdev[1]:x} 1704164645 {sha}".encode()
            + b"\0" + path + b"\0" + target + b"\0")


def _hex_lines(*records: bytes) -> list[bytes]:
    """As xxd -p prints them: 60 hex digits a line."""
    h = b"".join(records).hex().encode()
    return [h[i:i + 60] for i in range(0, len(h), 60)] + [b""]


def test_parse_listing_records():
    lines = _hex_lines(
        _record(b"", stat.S_IFDIR | 0o755, nlink=3),
        _record(b"caf\xe9\nx", stat.S_IFREG | 0o4755, sha="ab" * 32, size=5),
        _record(b"l", stat.S_IFLNK | 0o777, target=b"a\nb\n", size=4),
        _record(b"null", stat.S_IFCHR | 0o666, rdev=(1, 0x103)),
    )
    got = harness.parse_listing(lines)
    assert got[b"caf\xe9\nx"] == treecompare.record("file", 0o4755, size=5, mtime=1704164645,
                                                    sha256="ab" * 32)
    assert got[b"l"]["target"] == b"a\nb\n"
    assert got[b"null"]["rdev"] == (1, 0x103)
    assert got[b""]["nlink"] == 3


@pytest.mark.parametrize("lines, message", [
    (_hex_lines(_record(b"x", 0o100644)), "the listing has no root entry"),
    (_hex_lines(b"E 41ed 0 0\0\0\0"), "malformed record"),
    (_hex_lines(b"E 0 stat-failed -\0gone\0\0"), "malformed record .* for b'gone'"),
    (_hex_lines(_record(b"", 0o40755))[:-2], "does not end with a whole record"),
    ([b"E zz"], "not hex"),
    (_hex_lines(_record(b"", 0o40755), _record(b"", 0o40755)), "listed twice"),
])
def test_parse_listing_rejects(lines, message):
    with pytest.raises(harness.BootError, match=message):
        harness.parse_listing(lines)


def test_sections_need_their_end_marker():
    raw = (b"@@RUMPFS-BEGIN a@@\r\nE x\r\n@@RUMPFS-END a rc=0@@\r\n"
           b"<6>[ 1.0] noise\n@@RUMPFS-BEGIN cut@@\nE y\n")
    sections = harness.parse_sections(raw)
    assert list(sections) == ["a"]
    assert sections["a"].lines == [b"E x"] and sections["a"].status == "rc=0"
    with pytest.raises(harness.BootError, match="end of section 'b' without its beginning"):
        harness.parse_sections(b"@@RUMPFS-END b rc=0@@\n")
    with pytest.raises(harness.BootError, match="section 'a' reported twice"):
        harness.parse_sections(raw + raw)


def test_boot_problems_are_named(tmp_path):
    sections = harness.parse_sections(
        b"@@RUMPFS-BEGIN mount-failed vdb@@\nmount: mounting /dev/vdb failed: Invalid argument\n"
        b"@@RUMPFS-END mount-failed vdb rc=255@@\n"
        b"@@RUMPFS-BEGIN dmesg@@\n<6>[ 1.0] fine\n<3>[ 2.0] ufs: ufs_read_super: bad magic number\n"
        b"<3>[ 0.5] ..MP-BIOS bug: 8254 timer not connected to IO-APIC\n"
        b"<3>[ 0.6] ..MP-BIOS bug: 8254 timer not connected to IO-APIC, and then some\n"
        b"<4>[ 3.0] just a warning\n@@RUMPFS-END dmesg rc=0@@\n")
    boot = harness.Boot("[ 4.0] blk_update_request: I/O error, dev vda, sector 8\n", sections,
                        tmp_path, 1.0, 0)
    problems = boot.problems()
    assert problems == [
        "the guest did not reach the end of its plan",
        "mount-failed vdb: mount: mounting /dev/vdb failed: Invalid argument",
        "kernel error: [ 2.0] ufs: ufs_read_super: bad magic number",
        # Benign only as the whole message: the same words with more are an error.
        "kernel error: [ 0.6] ..MP-BIOS bug: 8254 timer not connected to IO-APIC, and then some",
        "console: [ 4.0] blk_update_request: I/O error, dev vda, sector 8",
    ]
    with pytest.raises(harness.BootError, match=f"5 problem.*logs in {tmp_path}"):
        boot.assert_clean()


def test_compare_names_a_wrong_mode(fixture_tree):
    expected = treecompare.scan_host(fixture_tree)
    actual = {p: dict(r) for p, r in expected.items()}
    actual[b"bin/setuid"]["mode"] = 0o755
    actual[b"big.bin"]["sha256"] = "0" * 64
    with pytest.raises(AssertionError) as err:
        harness.compare(expected, actual, what="ufs1-le")
    assert str(err.value).splitlines() == [
        "ufs1-le: 2 difference(s) from the source tree:",
        f"/big.bin: sha256 expected {expected[b'big.bin']['sha256']!r}, got '{'0' * 64}'",
        "/bin/setuid: mode expected '0o4755', got '0o755'",
    ]


def test_initramfs_view_drops_only_the_kernels_entries():
    rec = treecompare.record
    expected = {b"": rec("dir", 0o755, nlink=3), b"etc": rec("dir", 0o755, nlink=2)}
    listing = dict(expected)
    listing[b""] = rec("dir", 0o755, nlink=6)  # + /.rumpfs-test, /dev, /root
    listing[b"dev"] = rec("dir", 0o755, nlink=2)
    listing[b"dev/console"] = rec("chardev", 0o600, rdev=(5, 1))
    listing[b"root"] = rec("dir", 0o700, nlink=2)
    assert harness.initramfs_view(listing, expected) == expected
    listing[b"root"] = rec("dir", 0o755, nlink=2)
    with pytest.raises(AssertionError, match="/root: not the kernel's built-in entry"):
        harness.initramfs_view(listing, expected)


def test_module_depends_read_from_modinfo(tmp_path):
    ko = tmp_path / "virtio_blk.ko"
    ko.write_bytes(b"\x7fELF junk\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0")
    assert harness.module_depends(ko) == ["virtio", "virtio_ring"]
    ko.write_bytes(b"\x7fELF\0depends=\0name=ufs\0")
    assert harness.module_depends(ko) == []


def test_flip_byte_in(tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"\0" * 100 + b"needle-bytes" + b"\0" * 100)
    assert harness.flip_byte_in(image, b"needle-bytes", 3) == 103
    assert image.read_bytes()[103] == ord("d") ^ 0xFF
    with pytest.raises(AssertionError, match="not there exactly once"):
        harness.flip_byte_in(image, b"needle-bytes")


def test_timer_probe_is_skipped_at_the_source():
    """The MP-BIOS line is avoided by the command line, not only filtered."""
    assert "no_timer_check" in harness.KERNEL_CMDLINE.split()


def _stub(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def _fake_kernel_deb(tmp_path: Path, kabi: str) -> Path:
    pkg = tmp_path / "pkg"
    deb = tmp_path / "kernel.deb"
    if deb.exists():
        return deb
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "boot").mkdir()
    (pkg / "boot" / f"vmlinuz-{kabi}-amd64").write_bytes(b"not a kernel")
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: linux-image-{kabi}-amd64-unsigned\nVersion: 9.9.9-1\n"
        "Architecture: amd64\nMaintainer: test <t@example.invalid>\nDescription: test\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(deb)],
                   check=True, capture_output=True)
    return deb


def _setup_kernel(tmp_path: Path, offered_kabi: str | None):
    """Run scripts/setup-test-kernel.sh against a stub archive that no longer
    has the pinned version and offers ``offered_kabi`` (or nothing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    deb = _fake_kernel_deb(tmp_path, offered_kabi or "0")
    _stub(bin_dir, "apt-get", f"""case "$1" in
update) exit 0 ;;
download) case "$3" in *=9.9.9-1) cp {deb} . ; exit 0 ;; esac
   echo "E: Version '${{3#*=}}' for '${{3%=*}}' was not found" >&2; exit 100 ;;
esac
exit 1
""")
    depends = f"  Depends: linux-image-{offered_kabi}-amd64" if offered_kabi else ""
    _stub(bin_dir, "apt-cache", f"""case "$1" in
depends) echo linux-image-amd64; echo "{depends}" ;;
policy) echo "$2:"; echo "  Candidate: 9.9.9-1" ;;
esac
""")
    pin = tmp_path / "pin"
    pin.write_text("KABI=1.0.0-1\nDEB=1.0-1\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               RUMPFS_KERNEL_PIN=str(pin), RUMPFS_KERNEL_CACHE=str(tmp_path / "cache"))
    script = Path(harness.__file__).resolve().parent.parent.parent / "scripts" / "setup-test-kernel.sh"
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True), pin


def test_kernel_falls_back_when_the_pin_is_gone(tmp_path):
    proc, pin = _setup_kernel(tmp_path, "9.9.9-1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "test kernel: linux-image-1.0.0-1-amd64-unsigned 1.0-1 is no longer offered; using "
        f"linux-image-9.9.9-1-amd64-unsigned 9.9.9-1 instead (update {pin} to pin it)"]
    kernel = harness.Kernel.chosen(pin, tmp_path / "cache")
    assert kernel.image.read_bytes() == b"not a kernel"
    assert kernel.description == ("linux-image-9.9.9-1-amd64-unsigned_9.9.9-1 "
                                  "(selected by scripts/setup-test-kernel.sh)")
    # A second run finds it in the cache and says so again.
    again, _ = _setup_kernel(tmp_path, "9.9.9-1")
    assert again.returncode == 0 and "(cached; update" in again.stderr


def test_kernel_setup_fails_plainly_when_nothing_is_offered(tmp_path):
    proc, pin = _setup_kernel(tmp_path, None)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "test kernel: 'apt-get download linux-image-1.0.0-1-amd64-unsigned=1.0-1' failed, and the "
        "archive offers no other linux-image-amd64 kernel: E: Version '1.0-1' for "
        "'linux-image-1.0.0-1-amd64-unsigned' was not found"]
    with pytest.raises(harness.KernelMissing):
        harness.Kernel.chosen(pin, tmp_path / "cache")


def test_kernel_pinned_in_one_place():
    pin = harness.read_pin()
    assert set(pin) == {"KABI", "DEB"}
    root = Path(__file__).resolve().parent.parent
    for f in (root / "scripts" / "setup-test-kernel.sh", Path(harness.__file__)):
        text = f.read_text()
        assert pin["KABI"] not in text and pin["DEB"] not in text, f
