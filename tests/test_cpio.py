"""cpio newc/crc archives, judged by GNU cpio, bsdtar and libarchive."""

from __future__ import annotations

import ctypes
import hashlib
import os
import stat
import subprocess

import pytest
from conftest import IS_ROOT, require_module, require_tool, run_rumpfs
from treecompare import assert_same, normalized, record, scan_host

libarchive = require_module("libarchive", "libarchive-c")
require_module("libarchive.ffi", "libarchive-c")

needs_root = pytest.mark.skipif(not IS_ROOT, reason="extracting owners and devices needs root")


@pytest.fixture(scope="module")
def archives(fixture_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("cpio")
    made = {}
    for variant in ("newc", "crc"):
        path = out / f"{variant}.cpio"
        run_rumpfs("pack", "--no-stubetc", "--cpio-variant", variant, fixture_tree, "-o", path)
        made[variant] = path
    path = out / "owners.cpio"
    run_rumpfs("pack", "--no-stubetc", "--keep-owner", fixture_tree, "-o", path)
    made["owners"] = path
    return made


def extract_with(tool: str, archive, dest) -> None:
    os.makedirs(dest)
    if tool == "cpio":
        with open(archive, "rb") as f:
            subprocess.run(["cpio", "-idm", "--quiet"], stdin=f, cwd=dest, check=True)
    else:
        subprocess.run(["bsdtar", "-xpf", str(archive)], cwd=dest, check=True)


def without_dir_mtimes(records):
    # GNU cpio sets a directory's time before it fills it, so the kernel bumps it,
    # and it never sets a symlink's time; libarchive's test below checks those times.
    return {p: dict(r, mtime=None) if r["type"] in ("dir", "symlink") else r for p, r in records.items()}


@needs_root
@pytest.mark.parametrize("variant", ["newc", "crc"])
def test_gnu_cpio_extracts_the_tree(archives, fixture_tree, tmp_path, variant):
    extract_with("cpio", archives[variant], tmp_path / "x")
    expected = without_dir_mtimes(normalized(scan_host(fixture_tree)))
    assert_same(expected, without_dir_mtimes(scan_host(tmp_path / "x")))


@needs_root
def test_bsdtar_extracts_the_tree(archives, fixture_tree, tmp_path):
    extract_with("bsdtar", archives["newc"], tmp_path / "x")
    expected = normalized(scan_host(fixture_tree))
    # libarchive cannot create sockets: it makes an empty file; the listing test checks the type.
    # It leaves the time of the extraction directory itself alone.
    expected[b""]["mtime"] = None
    actual = scan_host(tmp_path / "x")
    actual[b""]["mtime"] = None
    assert_same(expected, actual, ignore=(b"dev/sock",))


@needs_root
def test_owners_kept_with_keep_owner(archives, fixture_tree, tmp_path):
    extract_with("bsdtar", archives["owners"], tmp_path / "x")
    expected, actual = scan_host(fixture_tree), scan_host(tmp_path / "x")
    expected[b""]["mtime"] = actual[b""]["mtime"] = None
    assert_same(expected, actual, ignore=(b"dev/sock",))
    assert os.lstat(tmp_path / "x" / "bin" / "private").st_uid == 1000


def libarchive_records(archive) -> dict:
    """The archive as libarchive (python libarchive-c) reports it."""
    out, hardlinks = {}, []
    kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
             stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo",
             stat.S_IFSOCK: "socket"}
    with libarchive.file_reader(str(archive)) as reader:
        for e in reader:
            path = os.fsencode(e.pathname).rstrip(b"/")
            path = b"" if path in (b".", b"") else path.removeprefix(b"./")
            if e.linkpath and not e.issym:
                hardlinks.append((path, os.fsencode(e.linkpath).removeprefix(b"./")))
                continue
            digest = hashlib.sha256(b"".join(e.get_blocks())).hexdigest() if e.isreg else None
            kind = kinds[stat.S_IFMT(e.mode)]
            rdev = (e.rdevmajor, e.rdevminor) if kind in ("chardev", "blockdev") else None
            target = os.fsencode(e.linkpath) if e.issym else None
            nlink = _archive_entry_nlink(e._entry_p)
            out[path] = record(kind, e.mode, e.uid, e.gid, e.size, nlink, int(e.mtime), target, rdev, digest)
    for path, first in hardlinks:
        out[path] = dict(out[first])
    return out


def _libarchive_fn(name, restype):
    """A libarchive C function libarchive-c does not wrap (archive_entry(3))."""
    fn = getattr(libarchive.ffi.libarchive, name)
    fn.argtypes, fn.restype = [ctypes.c_void_p], restype
    return fn


_archive_entry_nlink = _libarchive_fn("archive_entry_nlink", ctypes.c_uint)


def source_nlinks(top) -> dict[bytes, int]:
    """Link counts as the archive must give them, from the source tree alone:
    a directory has 2 + its subdirectories (its name, its "." and each
    child's ".."), whatever the host file system says (btrfs says 1); a
    hard-linked file has the number of its names inside the tree."""
    top = os.fsencode(top)
    out, names = {}, {}
    for root, _dirs, _files in os.walk(top):
        rel = os.path.relpath(root, top)
        rel = b"" if rel == b"." else rel
        with os.scandir(root) as it:
            entries = list(it)
        out[rel] = 2 + sum(e.is_dir(follow_symlinks=False) for e in entries)
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                names.setdefault((st.st_dev, st.st_ino), []).append(os.path.join(rel, e.name) if rel
                                                                    else e.name)
    for group in names.values():
        for path in group:
            out[path] = len(group)
    return out


def test_libarchive_reads_every_entry(archives, fixture_tree):
    expected = normalized(scan_host(fixture_tree))
    for path, nlink in source_nlinks(fixture_tree).items():
        expected[path]["nlink"] = nlink
    actual = libarchive_records(archives["newc"])
    assert_same(expected, actual)


# --- the headers at the specification's offsets ------------------------------------

#: The "new" ASCII header (cpio(5), and the kernel's initramfs buffer format):
#: a 6-byte magic, then these 13 fields of 8 hexadecimal digits; the name
#: (with its NUL) follows, then the data, each padded to 4 bytes.
NEWC_FIELDS = ("c_ino", "c_mode", "c_uid", "c_gid", "c_nlink", "c_mtime", "c_filesize",
               "c_devmajor", "c_devminor", "c_rdevmajor", "c_rdevminor", "c_namesize", "c_check")
NEWC_MAGIC, CRC_MAGIC = b"070701", b"070702"
MAGIC_LEN, FIELD_LEN = 6, 8
HEADER_LEN = MAGIC_LEN + FIELD_LEN * len(NEWC_FIELDS)  # 110
TRAILER = b"TRAILER!!!"


def newc_headers(data: bytes) -> dict[bytes, dict]:
    """{path: header fields (and "data")} of every member before the trailer,
    parsed here at the specification's offsets (no cpio code of ours)."""
    out, pos = {}, 0
    while True:
        magic = data[pos:pos + MAGIC_LEN]
        assert magic in (NEWC_MAGIC, CRC_MAGIC), (pos, magic)
        h = {"magic": magic}
        for i, name in enumerate(NEWC_FIELDS):
            at = pos + MAGIC_LEN + i * FIELD_LEN
            h[name] = int(data[at:at + FIELD_LEN], 16)
        name_at = pos + HEADER_LEN
        name = data[name_at:name_at + h["c_namesize"] - 1]
        assert data[name_at + h["c_namesize"] - 1] == 0
        data_at = name_at + h["c_namesize"]
        data_at += -data_at % 4
        h["data"] = data[data_at:data_at + h["c_filesize"]]
        pos = data_at + h["c_filesize"]
        pos += -pos % 4
        if name == TRAILER:
            return out
        out[b"" if name == b"." else name.removeprefix(b"./")] = h


@pytest.mark.parametrize("variant", ["newc", "crc"])
def test_headers_link_counts_and_inodes_as_the_source_tree(archives, fixture_tree, variant):
    """c_nlink of every member against the source tree (directories: 2 + their
    subdirectories; hard links: their group's size), one c_ino per group and
    a different one for every other member, the data on the first name only
    (later names of a group have c_filesize 0), and c_check as the variant
    defines it (070702: the sum of a regular file's data bytes; 070701: 0)."""
    headers = newc_headers(archives[variant].read_bytes())
    nlinks = source_nlinks(fixture_tree)
    assert sorted(headers) == sorted(nlinks)
    assert {p: h["c_nlink"] for p, h in headers.items()} == nlinks
    host = {}
    for path in headers:
        st = os.lstat(os.path.join(os.fsencode(fixture_tree), path) if path else fixture_tree)
        host.setdefault((st.st_dev, st.st_ino), []).append(path)
    groups = sorted(sorted(g) for g in host.values())
    by_ino = {}
    for path, h in headers.items():
        by_ino.setdefault(h["c_ino"], []).append(path)
    assert sorted(sorted(g) for g in by_ino.values()) == groups
    assert 0 not in by_ino
    order = list(headers)
    for group in groups:
        first, *later = sorted(group, key=order.index)
        st = os.lstat(os.path.join(os.fsencode(fixture_tree), first) if first else fixture_tree)
        if stat.S_ISREG(st.st_mode):
            assert headers[first]["c_filesize"] == st.st_size, first
        for path in later:
            assert headers[path]["c_filesize"] == 0, path
    magic = {"newc": NEWC_MAGIC, "crc": CRC_MAGIC}[variant]
    for path, h in headers.items():
        assert h["magic"] == magic
        if variant == "newc":
            assert h["c_check"] == 0, path
        elif stat.S_ISREG(h["c_mode"]):  # GNU cpio sums (and verifies) regular files' data only
            assert h["c_check"] == sum(h["data"]) & 0xFFFFFFFF, path


def test_gnu_cpio_lists_every_entry(archives, fixture_tree):
    with open(archives["newc"], "rb") as f:
        proc = subprocess.run(["cpio", "-itv"], stdin=f, capture_output=True, check=True)
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    assert len(lines) == len(scan_host(fixture_tree))
    sock = [ln for ln in lines if ln.endswith("dev/sock")]
    assert sock and sock[0].startswith("s"), sock


def test_bsdtar_lists_hard_links_and_devices(archives):
    out = subprocess.run(["bsdtar", "-tvf", str(archives["newc"])], capture_output=True,
                         check=True).stdout.decode("utf-8", "replace")
    assert "hard/b link to hard/a" in out
    assert "hard/c link to hard/a" in out
    if IS_ROOT:
        assert any(ln.startswith("c") and ln.endswith("dev/null") for ln in out.splitlines())
        assert any(ln.startswith("b") and ln.endswith("dev/sda1") for ln in out.splitlines())


def test_hard_link_data_is_on_the_first_name(archives):
    """Unikraft keeps only the first occurrence: the data must be there."""
    reader = run_rumpfs("ls", "--json", archives["newc"]).out
    import json
    entries = {e["path"]: e for e in map(json.loads, reader.splitlines())}
    assert entries["/hard/a"]["nlink"] == 3
    data = archives["newc"].read_bytes()
    first = data.index(b"hard/a\0")
    assert b"three names, one inode" in data[first:first + 200]
    for later in (b"hard/b\0", b"hard/c\0"):
        at = data.index(later)
        header = data[at - 110:at]
        assert header[54:62] == b"00000000"  # c_filesize


def test_crc_checksums_match_gnu_cpio(archives):
    # GNU cpio verifies 070702 checksums while reading and complains otherwise.
    with open(archives["crc"], "rb") as f:
        proc = subprocess.run(["cpio", "-it", "--only-verify-crc"], stdin=f, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert b"checksum error" not in proc.stderr.lower()
    assert run_rumpfs("check", archives["crc"]).returncode == 0


def test_crc_of_generated_files(tmp_path):
    """The default /etc's generated files (pwd.db, passwd: data made in memory,
    not copied from a source file) carry the 070702 checksum too: summed in
    the test at the header's offsets, and verified by GNU cpio."""
    out = tmp_path / "etc.cpio"
    run_rumpfs("pack", "--cpio-variant", "crc", "-o", out)
    headers = newc_headers(out.read_bytes())
    assert {b"etc/pwd.db", b"etc/spwd.db", b"etc/passwd"} <= set(headers)
    for path, h in headers.items():
        if stat.S_ISREG(h["c_mode"]):
            assert h["c_check"] == sum(h["data"]) & 0xFFFFFFFF, path
    with open(out, "rb") as f:
        proc = subprocess.run(["cpio", "-it", "--only-verify-crc"], stdin=f, capture_output=True)
    assert proc.returncode == 0 and b"checksum error" not in proc.stderr.lower(), proc.stderr


def test_crc_check_catches_a_flipped_byte(archives, tmp_path):
    bad = tmp_path / "bad.cpio"
    data = bytearray(archives["crc"].read_bytes())
    data[data.index(b"hello, rumpfs")] ^= 0x20
    bad.write_bytes(data)
    res = run_rumpfs("check", bad, check=False)
    assert res.returncode == 1
    assert "/hello.txt: checksum" in res.out
    with open(bad, "rb") as f:
        proc = subprocess.run(["cpio", "-it", "--only-verify-crc"], stdin=f, capture_output=True)
    assert b"checksum error" in proc.stderr.lower()


def test_alignment_and_trailer(archives):
    data = archives["newc"].read_bytes()
    assert len(data) % 512 == 0
    assert b"TRAILER!!!\0" in data[-1024:]
    pos = 0
    while True:
        assert pos % 4 == 0
        assert data[pos:pos + 6] == b"070701"
        namesize = int(data[pos + 94:pos + 102], 16)
        size = int(data[pos + 54:pos + 62], 16)
        name = data[pos + 110:pos + 110 + namesize - 1]
        start = pos + 110 + namesize
        start += -start % 4
        assert start % 4 == 0
        if name == b"TRAILER!!!":
            break
        pos = start + size + (-size % 4)


@pytest.mark.parametrize("method,tool", [("gzip", "gzip"), ("xz", "xz"), ("zstd", "zstd"), ("lz4", "lz4")])
def test_compressed_archives_decompress_with_the_standard_tools(fixture_tree, tmp_path, method, tool,
                                                                archives):
    require_tool(tool, {"gzip": "gzip", "xz": "xz-utils", "zstd": "zstd", "lz4": "lz4"}[tool])
    suffix = {"gzip": "gz", "xz": "xz", "zstd": "zst", "lz4": "lz4"}[method]
    out = tmp_path / f"root.cpio.{suffix}"
    run_rumpfs("pack", "--no-stubetc", fixture_tree, "-o", out)
    plain = subprocess.run([tool, "-dc", str(out)], capture_output=True, check=True).stdout
    assert plain == archives["newc"].read_bytes()
    if method == "gzip":
        raw = out.read_bytes()
        assert raw[4:8] == b"\0\0\0\0", "gzip header carries a time"
        assert not raw[3] & 0x08, "gzip header carries a file name"
    if method == "lz4":
        assert out.read_bytes()[:4] == bytes.fromhex("02214c18"), "not the legacy lz4 frame"
    # And our own reader opens it too.
    listing = run_rumpfs("ls", out).out
    assert "/hard/c link to /hard/a" in listing


def test_compress_option_for_a_name_without_a_suffix(fixture_tree, tmp_path):
    # A name that says neither format nor compression: the options decide
    # (a name that says otherwise is an error: tests/test_bad_input.py).
    out = tmp_path / "root.initrd"
    run_rumpfs("pack", "--no-stubetc", "--format", "cpio", "--compress", "xz", fixture_tree, "-o", out)
    assert out.read_bytes()[:6] == b"\xfd7zXZ\x00"
