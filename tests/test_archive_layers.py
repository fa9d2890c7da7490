"""Tar and cpio archives as layers.

GNU tar, bsdtar and GNU cpio make the archives from the fixture tree;
rumpfs packs each archive into cpio and FFS; GNU cpio, bsdtar and dissect.ffs
read the result, compared file by file with the source tree.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile

import pytest
from conftest import IS_ROOT, gc_disabled, run_rumpfs
from ffs_testlib import dissect_records
from treecompare import assert_same, normalized, scan_host

needs_root = pytest.mark.skipif(not IS_ROOT, reason="the fixture's devices and owners need root")


def source_records(tree) -> dict:
    """The source tree as an archive carries it: owners kept; no socket (tar
    and cpio -H newc keep no sockets... GNU cpio does: see cpio_records)."""
    records = normalized(scan_host(tree), uid=None, gid=None)
    return {p: r for p, r in records.items() if r["type"] != "socket"}


def gnu_tar(tree, archive, *options):
    subprocess.run(["tar", "-C", str(tree), *options, "-cf", str(archive), "."], check=True,
                   capture_output=True)
    return archive


def gnu_cpio(tree, archive, fmt):
    names = subprocess.run(["find", "."], cwd=tree, check=True, capture_output=True).stdout
    with open(archive, "wb") as f:
        subprocess.run(["cpio", "-o", "--quiet", "-H", fmt], cwd=tree, input=names, stdout=f,
                       check=True)
    return archive


def bsdtar_records(archive, dest) -> dict:
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(archive), "--numeric-owner"], cwd=dest, check=True)
    return scan_host(dest)


def gnu_cpio_records(archive, dest) -> dict:
    dest.mkdir()
    with open(archive, "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet", "--numeric-uid-gid"], stdin=f, cwd=dest,
                       check=True)
    return scan_host(dest)


def assert_same_as_extracted(expected: dict, actual: dict) -> None:
    """Compare with what GNU cpio -idm extracted: it sets no time on the root,
    on symlinks or (before filling them) on directories; those times are
    compared in the FFS tests."""
    for records in (expected, actual):
        records[b""]["mtime"] = None
        for r in records.values():
            if r["type"] == "symlink":
                r["mtime"] = None
    assert_same(no_dir_times(expected), no_dir_times(actual))


def no_dir_times(records):
    # Extractors set a directory's time before filling it; "." is left alone.
    return {p: dict(r, mtime=None) if r["type"] == "dir" else r for p, r in records.items()}


TARS = {
    "gnu": ["--format=gnu", "-S"],
    "posix-sparse-xz": ["--format=posix", "-S", "-J"],
    "gnu-gzip": ["--format=gnu", "-z"],
    "posix-zstd": ["--format=posix", "--zstd"],
    "gnu-bzip2": ["--format=gnu", "-j"],
}


@needs_root
@pytest.mark.parametrize("kind", sorted(TARS))
def test_gnu_tar_into_ffs_read_by_dissect(fixture_tree, tmp_path, kind):
    archive = gnu_tar(fixture_tree, tmp_path / "root.tar", *TARS[kind])
    out = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", archive, "-o", out, "--endian", "little")
    assert_same(source_records(fixture_tree), dissect_records(out))


@needs_root
def test_sparse_member_keeps_its_holes(fixture_tree, tmp_path):
    archive = gnu_tar(fixture_tree, tmp_path / "root.tar", "--format=gnu", "-S")
    out = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", archive, "-o", out, "--endian", "little")
    expanded = gnu_tar(fixture_tree, tmp_path / "dense.tar", "--format=gnu")
    dense = tmp_path / "d.img"
    run_rumpfs("pack", "--no-stubetc", expanded, "-o", dense, "--endian", "little")
    # The fixture's sparse file is mostly holes: the image from the sparse
    # archive allocates megabytes less than the one whose archive wrote zeros.
    assert os.stat(out).st_blocks * 512 + (4 << 20) < os.stat(dense).st_blocks * 512


@needs_root
@pytest.mark.parametrize("fmt", ["newc", "crc", "odc"])
def test_gnu_cpio_archive_into_cpio_read_by_gnu_cpio(fixture_tree, tmp_path, fmt):
    archive = gnu_cpio(fixture_tree, tmp_path / "root.cpio", fmt)
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", "--no-stubetc", archive, "-o", out)
    expected = normalized(scan_host(fixture_tree), uid=None, gid=None)
    actual = gnu_cpio_records(out, tmp_path / "x")
    assert_same_as_extracted(expected, actual)


@needs_root
@pytest.mark.parametrize("output", ["r.cpio.gz", "r.cpio.zst", "-"])
def test_tar_into_a_streamed_cpio_read_by_gnu_cpio(fixture_tree, tmp_path, output):
    """Compressed and stdout outputs read a member's data from its offset in
    the archive (a merge once read the archive from its start, and checked
    the member's size against the archive's)."""
    archive = gnu_tar(fixture_tree, tmp_path / "root.tar", "--format=gnu")
    out = tmp_path / "r.cpio"
    if output == "-":
        res = run_rumpfs("pack", "--no-stubetc", archive, "--format", "cpio", "-o", "-")
        out.write_bytes(res.stdout)
    else:
        compressed = tmp_path / output
        run_rumpfs("pack", "--no-stubetc", archive, "-o", compressed)
        tool = ["gzip", "-dc"] if output.endswith(".gz") else ["zstd", "-dcq"]
        with open(out, "wb") as f:
            subprocess.run([*tool, str(compressed)], stdout=f, check=True)
    expected = source_records(fixture_tree)
    actual = gnu_cpio_records(out, tmp_path / "x")
    assert_same_as_extracted(expected, actual)


@needs_root
@pytest.mark.parametrize("fmt", ["newc", "odc"])
def test_gnu_cpio_archive_into_ffs_read_by_dissect(fixture_tree, tmp_path, fmt):
    archive = gnu_cpio(fixture_tree, tmp_path / "root.cpio", fmt)
    out = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", archive, "-o", out, "--endian", "little")
    # GNU cpio keeps the fixture's socket, and so does FFS.
    expected = normalized(scan_host(fixture_tree), uid=None, gid=None)
    assert_same(expected, dissect_records(out))


@needs_root
@pytest.mark.parametrize("fmt", ["ustar", "pax"])
def test_bsdtar_archive_grafted_into_cpio_read_by_bsdtar(tmp_path, fmt, make_fixture_tree):
    # ustar cannot hold the fixture's long names: a small tree for both.
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n" * 100)
    (src / "bin" / "tool").chmod(0o755)
    os.link(src / "bin" / "tool", src / "bin" / "alias")
    (src / "lib").symlink_to("bin")
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", 0o20666, os.makedev(1, 3))
    os.chown(src / "bin", 1234, 5678)
    for p in (src, src / "bin"):
        os.utime(p, ns=(1_600_000_000_123_456_789,) * 2)
    archive = tmp_path / "app.tar"
    subprocess.run(["bsdtar", "-C", str(src), f"--format={fmt}", "-cf", str(archive), "."],
                   check=True)
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", "--no-stubetc", f"{archive}:/opt/app", "-o", out)
    actual = bsdtar_records(out, tmp_path / "x")
    grafted = {p.removeprefix(b"opt/app/") if p != b"opt/app" else b"": r
               for p, r in actual.items() if p == b"opt/app" or p.startswith(b"opt/app/")}
    expected = normalized(scan_host(src), uid=None, gid=None)
    assert expected[b"bin"]["uid"] == 1234
    assert_same(no_dir_times(expected), no_dir_times(grafted))


def test_pax_times_keep_nanoseconds(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    os.utime(src / "f", ns=(1_600_000_000_123_456_789,) * 2)
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-C", str(src), "--format=posix", "-cf", str(archive), "f"], check=True)
    out = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", "--format", "ffs2", archive, "-o", out,
               "--endian", "little")
    from dissect.ffs import FFS
    with open(out, "rb") as f:
        inode = FFS(f).get("f").inode
        assert (inode.di_mtime, inode.di_mtimensec) == (1_600_000_000, 123_456_789)


# -- bad input: one line, exit 1, nothing written --------------------------------

def tar_with(tmp_path, *members) -> str:
    """A tar made with Python's tarfile, holding what GNU tar would refuse to write."""
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def member(name, type_=tarfile.REGTYPE, data=b"", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.size = len(data) if type_ == tarfile.REGTYPE else 0
    info.linkname = linkname
    return info, data if type_ == tarfile.REGTYPE else None


def refused(tmp_path, archive, line):
    out = tmp_path / "r.cpio"
    out.write_bytes(b"old")
    res = run_rumpfs("pack", "--no-stubetc", archive, "-o", out, check=False)
    assert (res.returncode, res.err) == (1, f"rumpfs: error: {line}\n")
    assert out.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(archive), "r.cpio"])


def test_dotdot_member_is_refused(tmp_path):
    archive = tar_with(tmp_path, member("a/../../etc/passwd", data=b"x"))
    refused(tmp_path, archive, f"{archive}: member a/../../etc/passwd: '..' in the name")


def test_a_top_that_is_no_directory_is_refused(tmp_path):
    archive = tar_with(tmp_path, member("./", data=b"x"))
    refused(tmp_path, archive, f"{archive}: member ./: the archive's top is not a directory")


def test_hard_link_to_no_member_is_refused(tmp_path):
    archive = tar_with(tmp_path, member("a", tarfile.LNKTYPE, linkname="/etc/shadow"))
    refused(tmp_path, archive, f"{archive}: member a: hard link to /etc/shadow, "
                               f"which is not an earlier file of the archive")


def test_symlink_out_of_the_archive_is_refused(tmp_path):
    archive = tar_with(tmp_path, member("d", tarfile.DIRTYPE),
                       member("d/up", tarfile.SYMTYPE, linkname="../../outside"))
    refused(tmp_path, archive, f"{archive}: member d/up: symlink to ../../outside "
                               f"points outside the archive")


def test_truncated_archive_is_refused(tmp_path):
    archive = tar_with(tmp_path, member("big", data=b"y" * 10000))
    with open(archive, "r+b") as f:
        f.truncate(4096)
    refused(tmp_path, archive, f"{archive}: member big: truncated: its data ends past "
                               f"the archive's 4096 bytes")


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 200)
    refused(tmp_path, str(path), f"{path}: source is neither a directory nor a tar or cpio archive")


def test_corrupt_compressed_archive_is_refused(tmp_path):
    path = tmp_path / "a.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 100)
    out = tmp_path / "r.cpio"
    res = run_rumpfs("pack", "--no-stubetc", path, "-o", out, check=False)
    assert res.returncode == 1 and res.err.startswith(f"rumpfs: error: {path}: corrupt gzip data: ")
    assert res.err.count("\n") == 1 and not out.exists()


def test_absolute_names_are_stripped_with_one_warning(tmp_path):
    archive = tar_with(tmp_path, member("/etc/a", data=b"A"), member("/etc/b", data=b"B"))
    out = tmp_path / "r.cpio"
    res = run_rumpfs("pack", "--no-stubetc", archive, "-o", out)
    assert res.err == f"rumpfs: warning: {archive}: removing leading '/' from member names\n"
    listing = subprocess.run(["cpio", "-it", "--quiet"], stdin=open(out, "rb"),
                             capture_output=True, text=True, check=True).stdout.split()
    assert listing == [".", "etc", "etc/a", "etc/b"]


def test_directory_an_archive_only_implies_keeps_its_metadata(tmp_path):
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "motd").write_text("from the tar\n")
    archive = tmp_path / "motd.tar"
    # Only the file: the archive implies /etc without a header for it.
    subprocess.run(["tar", "-C", str(src), "-cf", str(archive), "etc/motd"], check=True)
    assert subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True,
                          check=True).stdout == "etc/motd\n"
    os.utime(archive, (978_307_200, 978_307_200))  # 2001: what an implied directory would get

    def etc_line(*sources):
        out = tmp_path / "r.cpio"
        run_rumpfs("pack", *sources, "-o", out)
        lines = subprocess.run(["bsdtar", "-tvf", str(out), "--numeric-owner"], capture_output=True,
                               text=True, check=True).stdout.splitlines()
        return [line for line in lines if line.endswith((" etc", " etc/motd"))]

    plain, layered = etc_line(), etc_line(archive)
    assert layered[0] == plain[0]  # the default /etc's mode, owner and time
    assert layered[1].split()[4] == "13"  # the tar's motd


def test_a_bad_or_cut_header_is_refused_not_taken_for_the_end(tmp_path):
    """Python's tarfile ends the archive silently at a damaged header; GNU
    tar reports it, and so does rumpfs (one line), rather than packing half."""
    archive = tar_with(tmp_path, member("a", data=b"x" * 600), member("b", data=b"y"))
    with open(archive, "rb") as f:
        intact = f.read()
    second = 3 * 512  # a's header and its two data blocks
    assert intact[second:second + 1] == b"b"
    with open(archive, "wb") as f:
        f.write(intact[:second] + b"c" + intact[second + 1:])
    assert subprocess.run(["tar", "-tf", archive], capture_output=True).returncode != 0
    refused(tmp_path, archive, f"{archive}: offset {second}: bad tar header (checksum mismatch)")
    with open(archive, "wb") as f:
        f.write(intact[:second + 100])
    refused(tmp_path, archive, f"{archive}: offset {second}: truncated tar header")


def test_global_pax_header_base256_and_long_names(tmp_path):
    """Members rumpfs reads itself and those it leaves to tarfile (after a
    global pax header) in one archive; bsdtar reads the owners, names and
    sizes back from the cpio, and they are what the test wrote."""
    path = tmp_path / "a.tar"
    long_name = "d/" + "n" * 150
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for name, uid, data in ((long_name, 3_000_000, b"L" * 700), ("d/small", 5, b"s")):
            info = tarfile.TarInfo(name)  # GNU: an 'L' member for the long name,
            info.uid, info.size = uid, len(data)  # base 256 for the large uid
            t.addfile(info, io.BytesIO(data))
    with tarfile.open(tmp_path / "g.tar", "w", format=tarfile.PAX_FORMAT,
                      pax_headers={"uid": "77"}) as t:
        for name in ("g1", "g2"):
            info = tarfile.TarInfo(name)
            info.size = 2
            t.addfile(info, io.BytesIO(b"gg"))
    both = tmp_path / "both.cpio"
    run_rumpfs("pack", "--no-stubetc", path, f"{tmp_path / 'g.tar'}:/g", "-o", both)
    listing = subprocess.run(["bsdtar", "-tvf", str(both), "--numeric-owner"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    owners = {line.split()[-1]: (line.split()[2], line.split()[4]) for line in listing}
    assert owners[long_name] == ("3000000", "700")
    assert owners["d/small"] == ("5", "1")
    assert owners["g/g1"] == owners["g/g2"] == ("77", "2")


def test_cut_compressed_archive_is_refused(tmp_path):
    """The headers are read while a child process decompresses: an archive
    cut short is still one error line, and nothing is written."""
    import gzip
    plain = tar_with(tmp_path, member("a", data=os.urandom(300_000)), member("b", data=b"b"))
    data = gzip.compress(open(plain, "rb").read())
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[:len(data) // 2])
    assert subprocess.run(["gzip", "-t", str(cut)], capture_output=True).returncode != 0
    out = tmp_path / "r.cpio"
    out.write_bytes(b"old")
    res = run_rumpfs("pack", "--no-stubetc", cut, "-o", out, check=False)
    assert (res.returncode, res.err) == (1, f"rumpfs: error: {cut}: corrupt gzip data: Compressed "
                                            f"file ended before the end-of-stream marker was "
                                            f"reached\n")
    assert out.read_bytes() == b"old"


def test_gzip_members_and_padding_are_read_as_gzip_reads_them(tmp_path):
    """A .tar.gz of several gzip members (``cat a.gz b.gz``, each with the
    file name in its header, as the gzip program writes it) and zero
    padding after them packs as the plain tar does; what follows the
    padding must be another member, else it is the gzip module's error."""
    plain = tar_with(tmp_path, *(member(f"d/f{k}", data=os.urandom(k * 37)) for k in range(200)))
    data = open(plain, "rb").read()
    third = len(data) // 3 + 5  # not on a block boundary
    parts = []
    for k, piece in enumerate((data[:third], data[third:2 * third], data[2 * third:])):
        part = tmp_path / f"part{k}"
        part.write_bytes(piece)
        subprocess.run(["gzip", str(part)], check=True)
        parts.append((tmp_path / f"part{k}.gz").read_bytes())
    joined = tmp_path / "joined.tar.gz"
    joined.write_bytes(b"".join(parts) + bytes(1000))
    os.utime(joined, ns=(os.stat(plain).st_mtime_ns,) * 2)  # the time of the implied "d"
    assert subprocess.run(["gzip", "-dc", str(joined)], capture_output=True,
                          check=True).stdout == data
    for source, out in ((plain, tmp_path / "plain.cpio"), (joined, tmp_path / "joined.cpio")):
        run_rumpfs("pack", "--no-stubetc", source, "-o", out)
    assert (tmp_path / "plain.cpio").read_bytes() == (tmp_path / "joined.cpio").read_bytes()

    joined.write_bytes(b"".join(parts) + bytes(1000) + b"junk")
    with pytest.raises(gzip.BadGzipFile) as error:
        gzip.decompress(joined.read_bytes())
    out = tmp_path / "r.cpio"
    res = run_rumpfs("pack", "--no-stubetc", joined, "-o", out, check=False)
    assert (res.returncode, res.err) == (1, f"rumpfs: error: {joined}: corrupt gzip data: "
                                            f"{error.value}\n")
    assert not out.exists()


def test_spool_files_are_gone_when_pack_returns(tmp_path, monkeypatch):
    """A compressed archive is decompressed into a spool file, and sparse
    members are laid out in one: as large as the archive's contents, so
    removed when ``api.pack`` returns or fails, not when a reference cycle
    is next collected (a forked caller that ends with os._exit, as build
    tools and our fuzzer do, never collects it)."""
    import tempfile

    from rumpfs import api
    from rumpfs.errors import RumpfsError

    spools = tmp_path / "spools"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(300_000))
    with open(src / "holes", "wb") as f:
        f.seek(1 << 20)
        f.write(b"end")
    sparse = gnu_tar(src, tmp_path / "sparse.tar", "--format=gnu", "-S")
    compressed = gnu_tar(src, tmp_path / "src.tar.gz", "--format=gnu", "-z")
    data = compressed.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[:len(data) // 2])
    with gc_disabled():
        for archive, fmt in ((compressed, "cpio"), (compressed, "ffs"), (sparse, "iso"),
                             (sparse, "fat")):
            out = tmp_path / f"out.{fmt}"
            api.pack([str(archive)], str(out), format=fmt, stubetc=False, progress=False)
            assert out.stat().st_size > 300_000
            assert os.listdir(spools) == [], (archive.name, fmt)
        with pytest.raises(RumpfsError, match="corrupt gzip data"):
            api.pack([str(cut)], str(tmp_path / "cut.cpio"), format="cpio", stubetc=False,
                     progress=False)
        assert os.listdir(spools) == []
