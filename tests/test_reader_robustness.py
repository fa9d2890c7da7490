"""Readers on damaged images: the crash classes of issue 17, each as one crafted image.

Every case runs the command line and expects exit status 1, exactly one
stderr line (the one given, naming the file and what is wrong) and no
traceback.  Images are made by packing a small tree and changing one field
where the format's own declaration (not the reader) says it lives.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import struct
import subprocess

import pytest
from conftest import ROOT, run_rumpfs
from fuzz_readers import SPEC, make_tree

from rumpfs import api
from rumpfs.elf import layout as E
from rumpfs.elf import registry
from rumpfs.formats.cpio.layout import FIELDS, HEADER_SIZE, MAGIC_SIZE
from rumpfs.formats.ffs import layout as L


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust")
    make_tree(str(d / "tree"))
    (d / "tree.spec").write_text(SPEC)
    out = {}
    for name, opts in (("u1.img", {"format": "ffs", "byteorder": "little"}),
                       ("u2.img", {"format": "ffs2", "byteorder": "big"}),
                       ("a.cpio", {}),
                       ("a.o", {"container_options": {"target": "x86_64"}})):
        api.pack([str(d / "tree")], str(d / name),
                 api.PackOptions(stubetc=False, pwdb=False, spec=[str(d / "tree.spec")],
                                 timestamp=1_700_000_000, **opts))
        out[name] = (d / name).read_bytes()
    return out


def one_error(res, line: str) -> None:
    assert res.returncode == 1, res
    assert "Traceback" not in res.err
    assert res.err == f"rumpfs: error: {line}\n"


def sb_field(data: bytearray, name: str, value: int | None = None, loc=L.SBLOCK_UFS1,
             order="<") -> int:
    """Read (and with ``value`` set) a superblock field, where layout.py declares it."""
    lay = L.structs("little" if order == "<" else "big")
    off = loc + L.offsetof(lay.fs, name)
    size = {n: sc.sizeof() for n, sc in ((sc.name, sc) for sc in lay.fs.subcons)}[name]
    code = order + {4: "i", 8: "q"}[size]
    old = struct.unpack_from(code, data, off)[0]
    if value is not None:
        struct.pack_into(code, data, off, value)
    return old


def cpio_field(data: bytearray, member: int, name: str, value: bytes) -> None:
    """Set a header field of the ``member``-th member (0: the first)."""
    pos = 0
    for _ in range(member):
        namesize = int(data[pos + MAGIC_SIZE + 8 * FIELDS.index("c_namesize"):][:8], 16)
        filesize = int(data[pos + MAGIC_SIZE + 8 * FIELDS.index("c_filesize"):][:8], 16)
        pos += HEADER_SIZE + namesize
        pos += -pos % 4 + filesize
        pos += -pos % 4
    off = pos + MAGIC_SIZE + 8 * FIELDS.index(name)
    data[off:off + 8] = value


def write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


# --- FFS -------------------------------------------------------------------


def test_ffs_ncg_in_the_millions(images, tmp_path):
    data = bytearray(images["u1.img"])
    fpg = sb_field(data, "fs_fpg")
    sb_field(data, "fs_ncg", 4_000_000)
    path = write(tmp_path, "x.img", data)
    for cmd in ("ls", "check", "info"):
        res = run_rumpfs(cmd, path, check=False)
        one_error(res, f"{path}: ffs superblock at 8192: fs_ncg 4000000 cylinder groups of "
                       f"{fpg} fragments do not fit in {len(data)} bytes")
        assert res.out == ""


def test_ffs_nindir_that_no_struct_format_takes(images, tmp_path):
    data = bytearray(images["u1.img"])
    sb_field(data, "fs_nindir", -1)
    path = write(tmp_path, "x.img", data)
    one_error(run_rumpfs("ls", path, check=False),
              f"{path}: ffs superblock at 8192: fs_nindir -1 does not match fs_bsize 8192 and "
              f"fs_fsize 1024 (expected 2048)")


@pytest.mark.parametrize("field, value, message", [
    ("fs_ipg", 1 << 20, "fs_ipg 1048576 is more than the 8192-byte cylinder group block can "
                        "map (65536)"),
    ("fs_fpg", 1 << 30, "fs_fpg 1073741824 is more than the 8192-byte cylinder group block can "
                        "map (65536)"),
    ("fs_iblkno", 155, "fs_ipg 64 inodes from fragment 155 do not fit in a cylinder group "
                       "of 160 fragments"),
])
def test_ffs_geometry_beyond_the_image(images, tmp_path, field, value, message):
    data = bytearray(images["u1.img"])
    assert len(data) == 160 * 1024  # the message below counts 1 KiB fragments
    assert sb_field(data, "fs_ipg") == 64 and sb_field(data, "fs_fpg") == 160
    sb_field(data, field, value)
    path = write(tmp_path, "x.img", data)
    one_error(run_rumpfs("ls", path, check=False), f"{path}: ffs superblock at 8192: {message}")


def test_ffs_truncated(images, tmp_path):
    data = images["u1.img"]
    path = write(tmp_path, "x.img", data[:len(data) // 2])
    res = run_rumpfs("ls", path, check=False)
    assert res.returncode == 1 and res.err.count("\n") == 1
    assert res.err.startswith(f"rumpfs: error: {path}: ")
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1 and "Traceback" not in res.err
    assert f"{path}: superblock: fs_size" in res.out


def test_ffs_time_out_of_range_in_ls(images, tmp_path):
    """A UFS2 time of 2**60 seconds lists as the bare number (gmtime cannot)."""
    data = bytearray(images["u2.img"])
    lay = L.structs("big")
    sb_loc = L.SBLOCK_UFS2
    sb = lay.fs.parse(bytes(data[sb_loc:sb_loc + L.SIZEOF_FS]))
    # Inode 2 (the root): cg 0, at fs_iblkno.
    at = sb.fs_iblkno * sb.fs_fsize + 2 * lay.ufs2_dinode.sizeof() + \
        L.offsetof(lay.ufs2_dinode, "di_mtime")
    struct.pack_into(">q", data, at, 1 << 60)
    path = write(tmp_path, "x.img", data)
    res = run_rumpfs("ls", path)
    first = res.out.splitlines()[0]
    assert first.endswith(f"@{1 << 60} /"), first


def test_ffs_symlink_target_with_nul_check_is_the_gate(images, tmp_path):
    data = bytearray(images["u1.img"])
    target = b"etc/f1"
    at = data.find(target + b"\0")  # the fast symlink's target, in its inode
    assert at > 0
    data[at + 3] = 0
    path = write(tmp_path, "x.img", data)
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1 and "symlink target has a NUL byte" in res.out
    res = run_rumpfs("ls", path, check=False)
    assert res.returncode == 1 and res.err.endswith("symlink target 'etc\\x00f1' has a NUL byte\n")


def _inode_at(data: bytes, ino: int, order: str, loc: int) -> int:
    """Image offset of inode ``ino`` of cylinder group 0, from the superblock
    fields as layout.py declares them (fs.h ino_to_fsba)."""
    lay = L.structs("little" if order == "<" else "big")
    sb = lay.fs.parse(bytes(data[loc:loc + L.SIZEOF_FS]))
    dinode = lay.ufs2_dinode if sb.fs_magic == L.FS_UFS2_MAGIC else lay.ufs1_dinode
    assert ino < sb.fs_ipg
    return sb.fs_iblkno * sb.fs_fsize + ino * dinode.sizeof()


@pytest.mark.parametrize("name, order, loc", [("u1.img", "<", L.SBLOCK_UFS1),
                                              ("u2.img", ">", L.SBLOCK_UFS2)])
def test_ffs_size_past_the_allocated_file(images, tmp_path, name, order, loc):
    """A di_size grown to a TiB over a file whose last block was its last
    data: the block that would hold the new last byte is a hole, which no
    BSD kernel makes (FreeBSD's fsck_ffs: FILE SIZE BEYOND END OF ALLOCATED
    FILE).  check names the file and the inode; cat and extract refuse the
    file with the same line instead of streaming a TiB of zeros."""
    from ffs_testlib import dissect_open

    data = bytearray(images[name])
    path = write(tmp_path, "ok.img", data)
    with open(path, "rb") as f:  # dissect.ffs, not our reader, names the inode
        ino = dissect_open(f, "little" if order == "<" else "big").get("/sparse").inum
    at = _inode_at(data, ino, order, loc) + L.offsetof(
        L.structs("little").ufs2_dinode if name == "u2.img" else L.structs("little").ufs1_dinode,
        "di_size")
    assert struct.unpack_from(order + "Q", data, at)[0] == 300_004  # fuzz_readers' tree
    size = 1 << 40
    struct.pack_into(order + "Q", data, at, size)
    path = write(tmp_path, "x.img", data)
    line = (f"/sparse: inode {ino}: di_size {size} is beyond the end of the allocated file "
            f"(block {(size - 1) // 8192}, which would hold its last byte, is a hole)")
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1
    assert res.out == f"{path}: {line}\n"
    assert res.err == f"{path}: 1 problem(s) found\n"
    res = run_rumpfs("cat", path, "/sparse", check=False)
    one_error(res, f"{path}: {line}")
    assert res.out == ""
    res = run_rumpfs("extract", path, tmp_path / "out", check=False)
    one_error(res, f"{path}: {line}")
    assert not (tmp_path / "out" / "sparse").exists()
    # ls still lists it, with the size the inode claims.
    assert any(row.endswith(" /sparse") and f" {size} " in row
               for row in run_rumpfs("ls", path).out.splitlines())


@pytest.mark.parametrize("fmt, byteorder", [("ffs", "little"), ("ffs2", "big")])
def test_ffs_sparse_files_that_end_in_a_hole(tmp_path, fmt, byteorder):
    """Sparse sources whose tails are holes (in the direct blocks, under a
    single and a double indirect block, and no data at all) keep working:
    the writer allocates the block of the last byte, as a kernel does, so
    check calls the image clean; dissect.ffs reads every file as the source
    and sees that last block allocated; cat gives the source's bytes and
    extract makes them sparse again."""
    import hashlib

    from ffs_testlib import dissect_open

    src = tmp_path / "src"
    src.mkdir()
    files = {"direct": (b"head", 50_000), "single": (b"head", 1 << 20),
             "double": (b"head", 40 << 20), "nothing": (b"", 5 << 20)}
    for name, (head, size) in files.items():
        with open(src / name, "wb") as f:
            f.write(head)
            f.truncate(size)
    image = tmp_path / "img"
    api.pack([str(src)], str(image), api.PackOptions(format=fmt, byteorder=byteorder,
                                                     stubetc=False, pwdb=False,
                                                     format_options={"block_size": 8192}))
    assert run_rumpfs("check", image).out == f"{image}: {fmt}: clean\n"
    with open(image, "rb") as f:
        fs = dissect_open(f, byteorder)
        for name, (_head, size) in files.items():
            node = fs.get("/" + name)
            assert node.size == size
            assert hashlib.sha256(node.open().read()).digest() == \
                hashlib.sha256((src / name).read_bytes()).digest()
            last_run_start, _frags = node.dataruns()[-1]
            assert last_run_start is not None, name  # the last block is not a hole
            assert node.inode.di_blocks * 512 <= 4 * 8192 + 4096, name  # holes stay holes
    for name in files:
        assert run_rumpfs("cat", image, name).stdout == (src / name).read_bytes()
    run_rumpfs("extract", image, tmp_path / "x")
    for name, (_head, size) in files.items():
        st = os.stat(tmp_path / "x" / name)
        assert st.st_size == size and st.st_blocks * 512 < max(size, 64 << 10)


# --- cpio ------------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("c_namesize", b"FFFFFFFF", "cpio header at offset 0: c_namesize 4294967295 out of range "
                                "1..4097"),
    ("c_namesize", b"00000000", "cpio header at offset 0: c_namesize 0 out of range 1..4097"),
    ("c_filesize", b"-0000001", "corrupt cpio header at offset 0: not hexadecimal"),
    ("c_mode", b"0x0041ED", "corrupt cpio header at offset 0: not hexadecimal"),
    # The same on every Python (os.makedev took a C int before 3.13).
    ("c_rdevmajor", b"FFFFFFFF", ".: device number 4294967295, 0 is beyond what this host "
                                 "can hold (major and minor at most 2147483647)"),
])
def test_cpio_header_fields(images, tmp_path, field, value, message):
    data = bytearray(images["a.cpio"])
    cpio_field(data, 0, field, value)
    path = write(tmp_path, "x.cpio", data)
    for cmd in ("ls", "check"):
        res = run_rumpfs(cmd, path, check=False)
        one_error(res, f"{path}: {message}")
        assert res.out == ""


@pytest.mark.parametrize("field, value, problem", [
    ("c_rdevmajor", b"00001000", "device number 4096, 1 is beyond what Linux holds "
                                 "(major < 4096, minor < 1048576)"),
    ("c_rdevminor", b"00100000", "device number 5, 1048576 is beyond what Linux holds "
                                 "(major < 4096, minor < 1048576)"),
    ("c_mode", b"000221A4", "c_mode 0o420644 has bits beyond the file type and permissions"),
])
def test_cpio_check_reports_what_extract_cannot_make(images, tmp_path, field, value, problem):
    """Device numbers mknod refuses on Linux and modes with bits beyond
    st_mode are problems for check (found by the fuzzer: extract failed on
    archives check called clean)."""
    data = bytearray(images["a.cpio"])
    listing = run_rumpfs("ls", write(tmp_path, "ok.cpio", data)).out.splitlines()
    console = next(i for i, line in enumerate(listing) if line.endswith(" /dev/console"))
    if field == "c_mode":
        console = next(i for i, line in enumerate(listing) if line.endswith(" /etc/f0"))
    cpio_field(data, console, field, value)
    path = write(tmp_path, "x.cpio", data)
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1
    name = "/dev/console" if field != "c_mode" else "/etc/f0"
    assert res.out == f"{path}: {name}: {problem}\n"
    assert run_rumpfs("ls", path).out.count("\n") == len(listing)


def test_cpio_symlink_size_of_4_gib(images, tmp_path):
    data = bytearray(images["a.cpio"])
    names = [n for n in run_rumpfs("ls", write(tmp_path, "ok.cpio", data)).out.splitlines()]
    member = next(i for i, line in enumerate(names) if line.startswith("l"))
    cpio_field(data, member, "c_filesize", b"FFFFFFFF")
    path = write(tmp_path, "x.cpio", data)
    res = run_rumpfs("ls", path, check=False)
    assert res.returncode == 1 and res.err.count("\n") == 1
    assert "truncated cpio archive" in res.err and "needs 4294967295 bytes" in res.err


def test_cpio_of_files_only_is_not_clean(tmp_path):
    """GNU cpio's archive of files without their directories: check names
    the missing parents (extract would have to invent them)."""
    tree = tmp_path / "t"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_bytes(b"x")
    archive = tmp_path / "files.cpio"
    with open(archive, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=b"a/b/f\n", cwd=tree,
                       stdout=out, check=True)
    res = run_rumpfs("check", archive, check=False)
    assert res.returncode == 1
    assert res.out == f"{archive}: /a/b/f: its directory /a/b is not an earlier member\n"
    # With the directories listed first, GNU cpio's archive is clean.
    with open(archive, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=b"a\na/b\na/b/f\n",
                       cwd=tree, stdout=out, check=True)
    assert run_rumpfs("check", archive).out == f"{archive}: cpio: clean\n"


# --- compressed ------------------------------------------------------------


def test_damaged_gzip(images, tmp_path):
    packed = bytearray(gzip.compress(images["a.cpio"], mtime=0))
    packed[len(packed) // 2] ^= 0xFF
    path = write(tmp_path, "x.cpio.gz", packed)
    res = run_rumpfs("ls", path, check=False)
    assert res.returncode == 1 and res.err.count("\n") == 1
    assert res.err.startswith(f"rumpfs: error: {path}: corrupt gzip data: ")


def test_truncated_xz(images, tmp_path):
    packed = lzma.compress(images["a.cpio"], check=lzma.CHECK_CRC32)
    path = write(tmp_path, "x.cpio.xz", packed[:len(packed) // 2])
    one_error(run_rumpfs("ls", path, check=False),
              f"{path}: corrupt xz data: the compressed data ends in the middle of a stream")


def test_gzip_bomb_memory_is_bounded(tmp_path):
    """256 MiB of zeros compress to 250 KiB: reading them keeps to small
    pieces (RLIMIT_AS of 400 MiB for the whole command) and reports the
    result is not a cpio archive."""
    zeros = gzip.compress(bytes(256 << 20), compresslevel=9, mtime=0)
    path = write(tmp_path, "bomb.gz", zeros)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20));"
            "from rumpfs.cli import main; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([os.sys.executable, "-c", code, "ls", path], capture_output=True,
                         text=True)
    assert res.returncode == 1, res.stderr
    assert res.stderr == (f"rumpfs: error: {path}: not an image rumpfs can read "
                          f"(known formats: cpio, fat, ffs, ffs2, iso)\n")


def _gnu_cpio_gz(tmp_path, files: dict[str, tuple[bytes, int]]) -> str:
    """A gzip'd newc archive made by GNU cpio and gzip(1) from a tree of
    files (head bytes, then a hole to the size)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, (head, size) in files.items():
        with open(tree / name, "wb") as f:
            f.write(head)
            f.truncate(size)
    archive = tmp_path / "a.cpio.gz"
    listing = "".join(f"{n}\n" for n in files).encode()
    with open(archive, "wb") as out:
        subprocess.run(["sh", "-c", "set -e; cpio -o -H newc --quiet | gzip -9 -n"], cwd=tree,
                       input=listing, stdout=out, check=True)
    return str(archive)


def test_compressed_cpio_is_read_as_a_stream(tmp_path):
    """A compressed cpio is read straight from its decompressor: with no
    room at all for a temporary copy (RUMPFS_SPOOL_LIMIT=0), ls, check, cat
    and extract of 16 MiB of zeros in 16 KB of gzip work, and give the
    files GNU cpio archived."""
    files = {"a": (b"first\n", 6), "zeros": (b"", 16 << 20), "z": (b"last\n", 5)}
    archive = _gnu_cpio_gz(tmp_path, files)
    assert os.path.getsize(archive) < 40_000
    env = {"RUMPFS_SPOOL_LIMIT": "0"}
    rows = run_rumpfs("ls", archive, env=env).out.splitlines()
    assert [r.rsplit(" ", 1)[1] for r in rows] == ["/a", "/zeros", "/z"]
    assert f" {16 << 20} " in rows[1]
    assert run_rumpfs("check", archive, env=env).out == f"{archive}: cpio: clean\n"
    for name in ("z", "a", "zeros"):  # the last member first: the stream starts again
        res = run_rumpfs("cat", archive, name, env=env)
        assert res.stdout == (tmp_path / "tree" / name).read_bytes()
    run_rumpfs("extract", archive, tmp_path / "x", env=env)
    for name in files:
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "tree" / name).read_bytes()


def test_compressed_cpio_read_backwards_is_copied_once(tmp_path, monkeypatch):
    """Hard links whose data sits on an earlier name that is not extracted
    are read backwards in the stream; past a few starts from the beginning
    the archive is decompressed once more into a temporary file (within the
    spool limit) instead of once per link."""
    from test_escape import REG, newc

    from rumpfs import compress
    from rumpfs.extract import extract
    from rumpfs.inspect import _Decompressing, open_image

    groups = 2 * _Decompressing.MAX_RESTARTS
    # The data first, in reverse order, each larger than a decompressed
    # piece: every b{i} reads before the data b{i-1} read.
    size = compress._OUT_PIECE + 1
    members = [(f"a{i}", REG, b"%x" % i * size, 100 + i, 2) for i in reversed(range(groups))]
    members += [(f"b{i}", REG, b"", 100 + i, 2) for i in range(groups)]
    path = write(tmp_path, "links.cpio.gz", gzip.compress(newc(members), mtime=0))
    wanted = [f"b{i}" for i in range(groups)]
    calls = []
    real = compress.decompressed
    monkeypatch.setattr(compress, "decompressed", lambda *a: calls.append(1) or real(*a))
    extract(open_image(path), str(tmp_path / "x"), wanted)
    for i in range(groups):
        assert (tmp_path / "x" / f"b{i}").read_bytes() == b"%x" % i * size
    assert len(calls) == _Decompressing.MAX_RESTARTS + 2  # the first pass, restarts, the copy
    res = run_rumpfs("extract", path, tmp_path / "y", *wanted, env={"RUMPFS_SPOOL_LIMIT": "0"},
                     check=False)
    size = len(newc(members))
    one_error(res, f"{path}: reading this archive backwards (hard links whose data came "
                   f"earlier) needs a temporary copy of it ({size} bytes) larger than the "
                   f"limit of 0 bytes (RUMPFS_SPOOL_LIMIT)")


def test_compressed_ffs_bomb_beyond_the_spool_limit(images, tmp_path):
    """An FFS image (read with seeks, so from a temporary copy) padded with
    zeros to 8 MiB, gzip'd to 10 KB: beyond RUMPFS_SPOOL_LIMIT it is one
    line naming the file and the limit, and nothing is decompressed to
    disk; under the limit it reads as the plain image does."""
    data = images["u1.img"] + bytes((8 << 20) - len(images["u1.img"]))
    plain = write(tmp_path, "plain.img", data)
    path = str(tmp_path / "bomb.img.gz")
    with open(path, "wb") as out:
        subprocess.run(["gzip", "-9", "-n", "-c", plain], stdout=out, check=True)
    assert os.path.getsize(path) < 20_000
    for limit, shown, cmds in (("1m", 1 << 20, ("ls", "check", "info")),
                               ("8388607", (8 << 20) - 1, ("cat",))):
        for cmd in cmds:
            res = run_rumpfs(cmd, path, *(["/etc/f1"] if cmd == "cat" else []),
                             env={"RUMPFS_SPOOL_LIMIT": limit}, check=False)
            one_error(res, f"{path}: the decompressed image ({8 << 20} bytes) needs a "
                           f"temporary copy larger than the limit of {shown} bytes "
                           f"(RUMPFS_SPOOL_LIMIT)")
            assert res.out == ""
    res = run_rumpfs("ls", path, env={"RUMPFS_SPOOL_LIMIT": "8m"})
    assert res.out == run_rumpfs("ls", plain).out
    one_error(run_rumpfs("ls", path, env={"RUMPFS_SPOOL_LIMIT": "lots"}, check=False),
              "RUMPFS_SPOOL_LIMIT=lots: not a size (bytes, or with a k/m/g/t suffix)")


def test_compressed_ffs_beyond_the_free_space_of_tmpdir(images, tmp_path):
    """Whatever the limit, a temporary copy leaves 64 MiB free in TMPDIR
    (here a 72 MiB tmpfs, so 8 MiB may be used)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a tmpfs")
    data = images["u1.img"] + bytes((10 << 20) - len(images["u1.img"]))
    path = write(tmp_path, "big.img.gz", gzip.compress(data, compresslevel=1, mtime=0))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f'mount -t tmpfs -o size=72m t "{mnt}" && TMPDIR="{mnt}" '
              f'RUMPFS_SPOOL_LIMIT=1t "{os.sys.executable}" -m rumpfs ls "{path}"')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True,
                         text=True)
    if "mount:" in res.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr!r}")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr == (f"rumpfs: error: {path}: the decompressed image ({10 << 20} bytes) "
                          f"needs a temporary copy larger than the free space of {mnt} less "
                          f"64 MiB ({8 << 20} bytes)\n")


# --- ELF objects -----------------------------------------------------------


def _shdr(data: bytes, index: int):
    lay = E.layouts(E.ELFCLASS64, "little")
    eh = lay.Ehdr.parse(data[:lay.Ehdr.sizeof()])
    n = lay.Shdr.sizeof()
    at = eh.e_shoff + index * n
    return at, lay.Shdr.parse(data[at:at + n]), eh


def test_elf_section_header_table_beyond_the_file(images, tmp_path):
    data = bytearray(images["a.o"])
    struct.pack_into("<Q", data, 0x28, 1 << 62)  # e_shoff of ELF64
    path = write(tmp_path, "x.o", data)
    one_error(run_rumpfs("ls", path, check=False),
              f"{path}: ELF file without a readable section header table")


def test_elf_registry_section_offset_beyond_the_file(images, tmp_path):
    data = bytearray(images["a.o"])
    lay = E.layouts(E.ELFCLASS64, "little")
    eh = lay.Ehdr.parse(bytes(data[:lay.Ehdr.sizeof()]))
    names_at, names_sh, _ = _shdr(data, eh.e_shstrndx)
    table = bytes(data[names_sh.sh_offset:names_sh.sh_offset + names_sh.sh_size])
    for i in range(eh.e_shnum):
        at, sh, _ = _shdr(data, i)
        if table[sh.sh_name:].split(b"\0", 1)[0] == registry.SECTION.encode():
            struct.pack_into("<Q", data, at + 24, 1 << 40)  # sh_offset of Elf64_Shdr
            size = sh.sh_size
            break
    path = write(tmp_path, "x.o", data)
    one_error(run_rumpfs("ls", path, check=False),
              f"{path}: section {registry.SECTION} at offset {1 << 40}, {size} bytes, is beyond "
              f"the end of the file ({len(data)} bytes)")


def test_elf_registry_name_not_utf8(images, tmp_path):
    data = bytearray(images["a.o"])
    # struct rumpfs_image (rumpfs_images.h): ri_name follows the 8-byte pointer at 24.
    rec = data.find(struct.pack("<I", registry.MAGIC))
    at = rec + registry.IMAGE_POINTER_OFFSET + 8
    assert data[at:at + 5] == b"root\0"
    data[at:at + 4] = b"r\xffot"
    path = write(tmp_path, "x.o", data)
    res = run_rumpfs("ls", path, check=False)
    assert res.returncode == 1 and res.err.count("\n") == 1
    assert res.err == (f"rumpfs: error: {path}: registry record at byte 0 of rumpfs_images: "
                       f"ri_name b'r\\xffot' is not UTF-8\n")


# --- files that are not images -------------------------------------------------


def test_ls_of_a_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = subprocess.run([os.sys.executable, "-m", "rumpfs", "ls", str(fifo)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert res.stderr == f"rumpfs: error: {fifo}: not a regular file or block device\n"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# --- ISO 9660 and FAT ------------------------------------------------------
# Fields are located by the fuzzer's locators, which read the layouts'
# declarations (rumpfs.formats.iso.layout, rumpfs.formats.fat.layout).


@pytest.fixture(scope="module")
def iso_fat(tmp_path_factory):
    from fuzz_readers import make_names_tree
    d = tmp_path_factory.mktemp("isofat")
    make_tree(str(d / "tree"))
    make_names_tree(str(d / "names"))
    (d / "tree.spec").write_text(SPEC)
    out = {}
    for name, opts in (("a.iso", {}), ("a.fat", {"format_options": {"fat_skip_special": True}})):
        api.pack([str(d / "tree"), str(d / "names")], str(d / name),
                 api.PackOptions(stubetc=False, pwdb=False, spec=[str(d / "tree.spec")],
                                 timestamp=1_700_000_000, **opts))
        out[name] = (d / name).read_bytes()
    return out


def iso_susp_field(data: bytes, nm: bytes, field: str) -> tuple[int, int, int]:
    """(offset, size, offset of its directory record) of the System Use
    field ``field`` (e.g. "PX.mode") of the record whose Rock Ridge name is ``nm``."""
    from fuzz_readers import _iso_fields
    fields = _iso_fields(data)
    names = [k for k, f in enumerate(fields)
             if f[3] == "NM.name" and data[f[0]:f[0] + f[1]] == nm]
    assert len(names) == 1, nm
    start = max(k for k in range(names[0]) if fields[k][3] == "dr.length")
    end = next((k for k in range(names[0], len(fields)) if fields[k][3] == "dr.length"),
               len(fields))
    off, size, _, _ = next(f for f in fields[start:end] if f[3] == field)
    return off, size, fields[start][0]


def set_both32(data: bytearray, off: int, value: int) -> None:
    data[off:off + 8] = struct.pack("<I", value) + struct.pack(">I", value)


def test_iso_rock_ridge_name_that_is_a_path(iso_fat, tmp_path):
    # Found by the fuzzer: a name holding '/' listed under one path and was
    # looked up (cat) or extracted under another.
    data = bytearray(iso_fat["a.iso"])
    off, size, record = iso_susp_field(data, b"hardlink", "NM.name")
    data[off:off + size] = b"../../xy"
    path = write(tmp_path, "x.iso", data)
    line = (f"{path}: ISO 9660 directory record at byte {record} in /: name '../../xy' holds "
            "a '/' or a NUL byte")
    for cmd in ("ls", "cat"):
        res = run_rumpfs(cmd, path, *(["/etc/f1"] if cmd == "cat" else []), check=False)
        one_error(res, line)
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1 and res.out.splitlines()[0] == line


@pytest.mark.parametrize("nm, field, value, problem", [
    (b"f1", "PX.mode", 0o170644, "/etc/f1: unknown file type 0o170000 in Rock Ridge mode "
                                 "0o170644"),
    (b"etc", "PX.mode", 0o100644, "/etc: Rock Ridge mode 0o100644 and the directory flag "
                                  "(0x2) disagree"),
    (b"console", "PN.high", 466944, "/dev/console: device number 466949, 1 in PN is beyond "
                                    "what Linux holds (major < 4096, minor < 1048576)"),
])
def test_iso_check_reports_what_extract_cannot_make(iso_fat, tmp_path, nm, field, value,
                                                    problem):
    """Found by the fuzzer: extract refused entries (unknown type, a file
    that is also a directory, mknod's EINVAL) of images check called clean."""
    data = bytearray(iso_fat["a.iso"])
    off, _, _ = iso_susp_field(data, nm, field)
    set_both32(data, off, value)
    path = write(tmp_path, "x.iso", data)
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1
    assert res.out == f"{path}: {problem}\n"
    assert run_rumpfs("ls", path).out.count("\n") > 20


def test_iso_check_reports_a_name_twice_in_a_directory(iso_fat, tmp_path):
    data = bytearray(iso_fat["a.iso"])
    off, size, _ = iso_susp_field(data, b"short", "NM.name")
    data[off:off + size] = b"empty"  # the symlink now has the name of a directory
    path = write(tmp_path, "x.iso", data)
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1
    assert res.out.splitlines()[0] == f"{path}: /empty: a second entry of that name in its " \
                                      "directory"


def test_fat_long_name_that_is_a_path(iso_fat, tmp_path):
    from fuzz_readers import _fat_fields
    data = bytearray(iso_fat["a.fat"])
    # The first long-name entry part of "A Long File Name.txt": "A Lon".
    off, size, _, _ = next(f for f in _fat_fields(bytes(data)) if f[3] == "LDIR_Name1" and
                           data[f[0]:f[0] + f[1]] == "A Lon".encode("utf-16-le"))
    data[off:off + 2] = "/".encode("utf-16-le")
    path = write(tmp_path, "x.fat", data)
    line = (f"{path}: /Long Directory Name: directory entry '/ Long File Name.txt' is not a "
            "file name")
    one_error(run_rumpfs("ls", path, check=False), line)
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1 and res.out.splitlines()[0] == line


def test_fat_check_reports_a_name_twice_as_fsck_fat_does(iso_fat, tmp_path):
    from fuzz_readers import _fat_fields
    data = bytearray(iso_fat["a.fat"])
    off, size, _, _ = next(f for f in _fat_fields(bytes(data)) if f[3] == "DIR_Name" and
                           data[f[0]:f[0] + f[1]] == b"F1         ")
    data[off:off + size] = b"F0         "
    path = write(tmp_path, "x.fat", data)
    res = run_rumpfs("check", path, check=False)
    assert res.returncode == 1
    assert res.out.splitlines()[0] == (f"{path}: /etc/f0: a second entry of that name (FAT "
                                       "names ignore case) in its directory")
    fsck = subprocess.run(["fsck.fat", "-n", path], capture_output=True, text=True)
    assert fsck.returncode == 1 and "Duplicate directory entry" in fsck.stdout
