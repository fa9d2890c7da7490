"""Every field of every cpio header against the source tree, and the trailer against GNU cpio's.

GNU cpio and bsdtar extract our archives file by file (test_cpio.py), but
they ignore some fields (device numbers of the archive's own files, a
directory's c_nlink, the trailer's fields) and forgive others.  Here every
header is parsed at cpio(5)'s offsets (test_cpio.newc_headers) and each
field compared with what ``os.lstat`` says of the source: mode, owner, link
count (test_cpio.source_nlinks), mtime, size, device numbers, the data or
link target, c_check (0 in 070701; in 070702 a regular file's byte sum);
c_devmajor/c_devminor are 0 and c_ino counts from 1 in archive
order (rumpfs's documented choices: nothing of the build host leaks).  The
archives are the whole-tree path (the fixture tree) and the directory
walkers' scattered path (SubtreeWriter, test_hostwalk's edge tree).  The
trailer and the padding after it are compared with what GNU cpio writes.

These tests kill the mutants of ``rumpfs/formats/cpio/writer.py`` that the
extraction tests let through (docs/testing.md).
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from conftest import run_rumpfs
from test_cpio import archives, newc_headers, source_nlinks  # noqa: F401 - a fixture
from test_hostwalk import EARLY_SHARE, _count_written, edge_tree  # noqa: F401 - a fixture

from rumpfs import hostwalk
from rumpfs.formats.cpio import writer as cpio_writer
from rumpfs.tree import HostData

BLOCK = 512


def assert_headers_as_the_source(data: bytes, top, clamped=(), keep_owner=False) -> None:
    """Every header field against the source tree (``clamped``: paths whose
    time is before 1970, stored as 0; owners 0:0 unless ``keep_owner``)."""
    headers = newc_headers(data)
    top_b = os.fsencode(top)
    nlinks = source_nlinks(top)
    assert sorted(headers) == sorted(nlinks)
    seen_ino = []
    first_name = {}
    for path, h in headers.items():
        st = os.lstat(os.path.join(top_b, path) if path else top_b)
        rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0
        want = {
            "c_mode": st.st_mode,
            "c_uid": st.st_uid if keep_owner else 0, "c_gid": st.st_gid if keep_owner else 0,
            "c_nlink": nlinks[path],
            "c_mtime": 0 if path in clamped else st.st_mtime_ns // 1_000_000_000,
            "c_devmajor": 0, "c_devminor": 0,
            "c_rdevmajor": os.major(rdev), "c_rdevminor": os.minor(rdev),
        }
        got = {k: h[k] for k in want}
        assert got == want, path
        # c_check: 0 in a 070701 header; in 070702 the sum of a regular
        # file's data (GNU cpio sums nothing else).
        summed = h["magic"] == b"070702" and stat.S_ISREG(st.st_mode)
        assert h["c_check"] == (sum(h["data"]) & 0xFFFFFFFF if summed else 0), path
        key = (st.st_dev, st.st_ino)
        if key not in first_name:
            first_name[key] = path
            seen_ino.append(h["c_ino"])
            if stat.S_ISREG(st.st_mode):
                with open(os.path.join(top_b, path), "rb") as f:
                    assert h["data"] == f.read(), path
            elif stat.S_ISLNK(st.st_mode):
                assert h["data"] == os.readlink(os.path.join(top_b, path)), path
            else:
                assert h["c_filesize"] == 0, path
        else:
            assert h["c_ino"] == headers[first_name[key]]["c_ino"], path
            assert h["c_filesize"] == 0, path
    # One number per inode, 1, 2, 3... in the order the archive meets them.
    assert seen_ino == list(range(1, len(seen_ino) + 1))


@pytest.mark.parametrize("variant", ["newc", "crc", "owners"])
def test_whole_tree_headers_as_the_source(archives, fixture_tree, variant):  # noqa: F811
    assert_headers_as_the_source(archives[variant].read_bytes(), fixture_tree,
                                 keep_owner=variant == "owners")


def test_walker_headers_as_the_source(edge_tree, tmp_path, monkeypatch):  # noqa: F811
    """The members the directory walkers write themselves (SubtreeWriter)."""
    from rumpfs import api
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    written = _count_written(monkeypatch)
    out = tmp_path / "edges.cpio"
    api.pack([edge_tree], out, stubetc=False, progress=False, keep_owner=True)
    assert len(written) == 5
    clamped = {p for p in newc_headers(out.read_bytes())
               if p and os.lstat(os.path.join(os.fsencode(edge_tree), p)).st_mtime < 0}
    assert clamped
    assert_headers_as_the_source(out.read_bytes(), edge_tree, clamped, keep_owner=True)


@pytest.mark.parametrize("variant,fmt", [("newc", "newc"), ("crc", "crc")])
def test_trailer_as_gnu_cpio_writes_it(archives, variant, fmt, tmp_path):  # noqa: F811
    """GNU cpio given no files writes just its trailer, padded to 512 bytes:
    our archive ends with the same bytes, and is 512-byte padded too."""
    theirs = subprocess.run(["cpio", "-o", "--quiet", "-H", fmt], input=b"", capture_output=True,
                            check=True).stdout
    assert len(theirs) == BLOCK
    data = archives[variant].read_bytes()
    assert len(data) % BLOCK == 0
    at = data.rindex(b"TRAILER!!!\0") - 110
    trailer = theirs.rstrip(b"\0")
    assert data[at:at + len(trailer)] == trailer
    assert data[at + len(trailer):] == bytes(len(data) - at - len(trailer))
    # ... and ends where GNU cpio's padding would end it.
    assert len(data) == -(-(at + len(trailer)) // BLOCK) * BLOCK


def test_checksum_of_a_file_shorter_than_listed(tmp_path, monkeypatch):
    """A file that shrinks after it was opened (open_source checks the size
    it had then): the 070702 sum is of the bytes there are (the copy then
    reports the change); it must not wait for more."""
    monkeypatch.setattr(cpio_writer, "open_source", lambda d: os.open(d.path, os.O_RDONLY))
    src = tmp_path / "f"
    src.write_bytes(b"\x01\x02\xff" * 1000)
    data = HostData(os.fsencode(src), 5000)
    assert cpio_writer.data_checksum(data) == sum(src.read_bytes())


def test_crc_archive_of_large_files_verifies_with_gnu_cpio(tmp_path):
    """Files larger than the writer's read chunk and than a compressing
    sink's in-buffer limit: the sums GNU cpio verifies, the data it extracts."""
    src = tmp_path / "src"
    src.mkdir()
    for name, size in (("a", 3 << 20), ("b", (1 << 16) + 3), ("c", 1 << 16), ("d", 7)):
        (src / name).write_bytes(os.urandom(size))
    # 0xff bytes: the largest sums a piece of the checksum can reach.
    (src / "ff").write_bytes(b"\xff" * 100_003)
    for out in (tmp_path / "x.cpio", tmp_path / "x.cpio.gz"):
        run_rumpfs("pack", "--no-stubetc", "--cpio-variant", "crc", src, "-o", out)
        raw = out.read_bytes()
        if out.suffix == ".gz":
            raw = subprocess.run(["gzip", "-dc", str(out)], capture_output=True, check=True).stdout
        proc = subprocess.run(["cpio", "-it", "--only-verify-crc"], input=raw, capture_output=True)
        assert proc.returncode == 0 and b"checksum error" not in proc.stderr.lower(), proc.stderr
        assert_headers_as_the_source(raw, src)


def test_times_outside_the_cpio_range_are_clamped_with_one_warning(tmp_path):
    """c_mtime is 32 bits unsigned: a time before 1970 is stored as 0, one
    after 2106 as 0xffffffff (read at the header's offsets), with one warning
    naming how many and the first."""
    src = tmp_path / "src"
    src.mkdir()
    for name, t in (("early", -86400), ("late", 1 << 33), ("ok", 1_000_000_000),
                    ("edge0", 0), ("edge1", 0xFFFFFFFF)):   # the range's own ends: no warning
        (src / name).write_bytes(b"x")
        os.utime(src / name, (t, t))
    out = tmp_path / "t.cpio"
    res = run_rumpfs("pack", "--no-stubetc", "--no-progress", src,
                     "-o", out)
    assert res.err.strip() == ("rumpfs: warning: 2 time(s) outside the 32-bit cpio range were "
                               "clamped (first: /early)")
    headers = newc_headers(out.read_bytes())
    assert {p: headers[p]["c_mtime"] for p in (b"early", b"late", b"ok", b"edge0", b"edge1")} == {
        b"early": 0, b"late": 0xFFFFFFFF, b"ok": 1_000_000_000, b"edge0": 0, b"edge1": 0xFFFFFFFF}


def test_crc_of_members_read_straight_from_a_plain_tar(tmp_path):
    """Data read straight from a tar archive (the member ends before the
    archive does): GNU cpio verifies every sum and extracts the same bytes."""
    src = tmp_path / "src"
    src.mkdir()
    for name, size in (("a", 5000), ("b", 70_000), ("c", 3)):
        (src / name).write_bytes(os.urandom(size))
    tar = tmp_path / "in.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(src), "a", "b", "c"], check=True)
    out = tmp_path / "t.cpio"
    run_rumpfs("pack", "--no-stubetc", "--cpio-variant", "crc", tar, "-o", out)
    with open(out, "rb") as f:
        proc = subprocess.run(["cpio", "-it", "--only-verify-crc"], stdin=f, capture_output=True)
    assert proc.returncode == 0 and b"checksum error" not in proc.stderr.lower(), proc.stderr
    headers = newc_headers(out.read_bytes())
    for name in ("a", "b", "c"):
        assert headers[name.encode()]["data"] == (src / name).read_bytes()


def _hard_link_tree(top) -> None:
    """Files with one, two and three names, the pairs in different directories."""
    os.makedirs(top / "a")
    os.makedirs(top / "b")
    for name, data in (("one", b"1"), ("two", b"22"), ("three", b"333")):
        (top / "a" / name).write_bytes(data)
    os.link(top / "a" / "two", top / "b" / "two")
    os.link(top / "a" / "three", top / "b" / "three")
    os.link(top / "a" / "three", top / "three")


@pytest.mark.parametrize("variant", ["newc", "crc"])
@pytest.mark.parametrize("source", ["directory", "tar"])
def test_hard_link_groups_of_two_and_three_names(tmp_path, variant, source):
    """Each group shares one c_ino, its data on the first name only, and
    GNU cpio extracts them as links of one file.  (From a directory the
    walk counts a file's names only at its end; a tar layer is listed
    whole first: the two paths give a group's members its inode apart.)"""
    src = tmp_path / "src"
    _hard_link_tree(src)
    layer = src
    if source == "tar":
        layer = tmp_path / "src.tar"
        subprocess.run(["tar", "-cf", str(layer), "-C", str(src), "."], check=True)
    out = tmp_path / "h.cpio"
    run_rumpfs("pack", "--no-stubetc", "--cpio-variant", variant, layer, "-o", out)
    assert_headers_as_the_source(out.read_bytes(), src, keep_owner=source == "tar")
    dest = tmp_path / "x"
    dest.mkdir()
    with open(out, "rb") as f:
        subprocess.run(["cpio", "-id", "--quiet"], stdin=f, cwd=dest, check=True)
    assert os.path.samefile(dest / "a" / "two", dest / "b" / "two")
    assert os.path.samefile(dest / "a" / "three", dest / "three")
    assert not os.path.samefile(dest / "a" / "one", dest / "a" / "two")
    assert (dest / "b" / "two").read_bytes() == b"22"


@pytest.mark.parametrize("output", ["m.cpio", "m.cpio.gz"])
def test_a_megabyte_of_headers_after_a_file(tmp_path, output):
    """More than the writer's 1 MiB buffer of members without data (empty
    files with long names) after a file the copy workers (crc archive) or
    the compressing sink (larger than SMALL_FILE) copied: every header
    where cpio(5) puts it, and the sums GNU cpio verifies."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a").write_bytes(os.urandom(cpio_writer.SMALL_FILE + 5000))
    for k in range(4000):  # 4,000 x (110 + 216) bytes: 1.3 MB of headers
        (src / "d" / (f"{k:05}" + "e" * 200)).touch()
    (src / "z").write_bytes(os.urandom(7000))
    out = tmp_path / output
    # crc: written by this process, not the walkers, so the buffer fills.
    run_rumpfs("pack", "--no-stubetc", "--cpio-variant", "crc", src, "-o", out)
    raw = out.read_bytes()
    if output.endswith(".gz"):
        raw = subprocess.run(["gzip", "-dc", str(out)], capture_output=True, check=True).stdout
    assert_headers_as_the_source(raw, src)
    listed = subprocess.run(["cpio", "-it", "--only-verify-crc", "--quiet"], input=raw,
                            capture_output=True, check=True)
    assert listed.stderr == b""


def _recording_progress(monkeypatch) -> list:
    """The Progress objects api.pack makes, kept to be read afterwards."""
    from rumpfs import api
    made = []

    class Recorded(api.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "stream": _Discard(), "terminal": False})
            made.append(self)

    monkeypatch.setattr(api, "Progress", Recorded)
    return made


class _Discard:
    def write(self, text):
        pass

    def flush(self):
        pass

    def isatty(self):
        return False


@pytest.mark.parametrize("output", ["walkers.cpio", "crc.cpio", "small-and-large.cpio.gz"])
def test_progress_counts_every_data_byte_once(edge_tree, tmp_path, monkeypatch, output):  # noqa: F811
    """Bytes done at the end are the data of the source's files, each inode
    once (os.lstat's sizes), whichever process copied them: the walkers
    (newc), this process (crc) or a compressing sink (files below and above
    its in-buffer limit); and the total the line shows is that sum too."""
    from rumpfs import api
    src = edge_tree  # files of 0 to 70,000 bytes (SMALL_FILE is 65,536) and 3 MiB
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    made = _recording_progress(monkeypatch)
    api.pack([src], tmp_path / output, stubetc=False, progress=True,
             format_options={"cpio_variant": "crc" if output.startswith("crc") else "newc"})
    inodes = {}
    for root, _dirs, files in os.walk(src):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(st.st_mode):
                inodes[st.st_ino] = st.st_size
    [progress] = made
    assert progress.done == sum(inodes.values())
    assert progress.total == sum(inodes.values())
