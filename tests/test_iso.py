"""ISO 9660 images, judged by bsdtar (libarchive), xorriso, isoinfo/isovfy and
pycdlib, compared file by file with the source tree."""

from __future__ import annotations

import os
import subprocess

import pytest
import treecompare as tc

EPOCH = 1700000000
ENV = {"SOURCE_DATE_EPOCH": str(EPOCH)}

@pytest.fixture(scope="module")
def iso(fixture_tree, tmp_path_factory):
    from conftest import run_rumpfs
    out = tmp_path_factory.mktemp("iso") / "f.iso"
    run_rumpfs("pack", fixture_tree, "--no-stubetc", "-o", out, env=ENV)
    return out


def expected(fixture_tree):
    return tc.normalized(tc.scan_host(fixture_tree), mtime=EPOCH)


def test_bsdtar_extracts_the_tree(iso, fixture_tree, tmp_path):
    # libarchive reads Rock Ridge: names, modes, owners, times, symlinks, hard links.
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(iso)], cwd=dest, capture_output=True)
    want = expected(fixture_tree)
    # bsdtar makes a socket a plain file; a container may refuse mknod.
    skip = {p for p, r in want.items() if r["type"] in ("socket", "chardev", "blockdev")}
    tc.assert_same(want, tc.scan_host(dest), ignore=skip | {b""})


def test_xorriso_extracts_the_tree(iso, fixture_tree, tmp_path):
    dest = tmp_path / "x"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
                   capture_output=True, check=True)
    want = expected(fixture_tree)
    skip = {p for p, r in want.items() if r["type"] in ("socket", "chardev", "blockdev")}
    # xorriso extracts hard links as copies and cannot time symlinks.
    tc.assert_same(want, tc.scan_host(dest), keys=("type", "mode", "uid", "gid", "size",
                                                   "target", "sha256"), ignore=skip | {b""})


def test_xorriso_lists_devices_and_special_files(iso, fixture_tree):
    out = subprocess.run(["xorriso", "-indev", str(iso), "-find", "/dev", "-exec", "lsdl"],
                         capture_output=True, check=True).stdout.decode()
    lines = {line.rsplit("'", 2)[1]: line for line in out.splitlines() if line.endswith("'")}
    assert lines["/dev/fifo"].startswith("prw--w----")
    assert lines["/dev/sock"].startswith("srwxr-xr-x")
    if os.path.exists(os.path.join(fixture_tree, "dev", "null")):
        assert lines["/dev/null"].startswith("crw-rw-rw-")
        assert " 1,3 " in lines["/dev/null"].replace(",  ", ",").replace(", ", ",")


def test_isovfy_and_isoinfo_rock_ridge(iso, fixture_tree):
    vfy = subprocess.run(["isovfy", str(iso)], capture_output=True, check=True).stdout.decode()
    assert "No errors found" in vfy
    out = subprocess.run(["isoinfo", "-R", "-l", "-i", str(iso)], capture_output=True,
                         check=True).stdout.decode("utf-8", "replace")
    names = {line.split()[-1] for line in out.splitlines() if line[:1] in "-dlpsbc"
             and "[" in line}
    for top in os.listdir(fixture_tree):
        if top.isascii():
            assert top in names


def test_isoinfo_joliet_names(iso, fixture_tree):
    # isoinfo shows Joliet names in Latin-1 ('_' for what it cannot show).
    out = subprocess.run(["isoinfo", "-J", "-l", "-i", str(iso)], capture_output=True,
                         check=True).stdout.decode("latin-1")
    assert " hello.txt \n" in out
    assert " h\u00e9llo-__.txt \n" in out
    assert " " + "n" * 64 + " \n" in out  # cut to Joliet's 64 characters
    assert "fifo" not in out and "short" not in out  # Joliet has files and directories only


def test_pycdlib_reads_rock_ridge_and_joliet(iso, fixture_tree):
    import io

    import pycdlib
    p = pycdlib.PyCdlib()
    p.open(str(iso))
    try:
        rr = set()
        # Names as bytes from the records (pycdlib's walk decodes them as
        # UTF-8 and stops at the Latin-1 name).
        todo = [b""]
        while todo:
            top = todo.pop()
            for rec in p.list_children(rr_path="/" + top.decode()):
                if rec is None or rec.is_dot() or rec.is_dotdot():
                    continue
                path = (top + b"/" + rec.rock_ridge.name()).lstrip(b"/")
                rr.add(path)
                if rec.is_dir():
                    todo.append(path)
        assert rr == {k for k in expected(fixture_tree) if k}
        joliet = set()
        for root, dirs, files in p.walk(joliet_path="/"):
            joliet.update(os.path.join(root, n).lstrip("/") for n in dirs + files)
        assert "h\u00e9llo-\u65e5\u672c.txt" in joliet
        assert "deep/" + "/".join("d%02d" % i for i in range(40)) + "/bottom.txt" in joliet
        buf = io.BytesIO()
        p.get_file_from_iso_fp(buf, rr_path="/big.bin")
        assert buf.getvalue() == open(os.path.join(fixture_tree, "big.bin"), "rb").read()
        buf = io.BytesIO()
        p.get_file_from_iso_fp(buf, joliet_path="/hello.txt")
        assert buf.getvalue() == b"hello, rumpfs\n"
    finally:
        p.close()


def test_joliet_names_of_characters_it_cannot_hold(tmp_path, rumpfs):
    # Joliet refuses * / : ; ? \ (they become _), holds UCS-2 (bytes that
    # are not UTF-8 become U+FFFD) and 64 units, never half a surrogate
    # pair; names that become equal get ~N.  Read back by pycdlib.
    import pycdlib
    src = tmp_path / "src"
    src.mkdir()
    names = [b"a*b?c:d;e\\f.txt", b"a_b_c_d_e_f.txt", b"bad\xff\xfename", b"x" * 63 + "\U0001f600".encode(),
             "\u00e9t\u00e9 *.txt".encode()]
    for name in names:
        (src / os.fsdecode(name)).write_bytes(name)
    out = tmp_path / "j.iso"
    rumpfs("pack", src, "--no-stubetc", "-o", out, env=ENV)
    p = pycdlib.PyCdlib()
    p.open(str(out))
    try:
        got = {}
        for rec in p.list_children(joliet_path="/"):
            if rec.is_dot() or rec.is_dotdot():
                continue
            buf = __import__("io").BytesIO()
            ident = rec.file_identifier().decode("utf-16-be")
            p.get_file_from_iso_fp(buf, joliet_path="/" + ident)
            got[ident] = buf.getvalue()
    finally:
        p.close()
    assert got == {"a_b_c_d_e_f.txt": b"a*b?c:d;e\\f.txt", "a_b_c_d_e_f.txt~1": b"a_b_c_d_e_f.txt",
                   "bad\ufffd\ufffdname": b"bad\xff\xfename", "x" * 63: b"x" * 63 + "\U0001f600".encode(),
                   "\u00e9t\u00e9 _.txt": "\u00e9t\u00e9 *.txt".encode()}


def test_reproducible_and_no_larger_than_xorriso(fixture_tree, tmp_path, rumpfs):
    a, b, ref = tmp_path / "a.iso", tmp_path / "b.iso", tmp_path / "ref.iso"
    rumpfs("pack", fixture_tree, "--no-stubetc", "-o", a, env=ENV)
    rumpfs("pack", fixture_tree, "--no-stubetc", "-o", b, "--format", "iso", env=ENV)
    assert a.read_bytes() == b.read_bytes()
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-o", str(ref), str(fixture_tree)],
                   capture_output=True, check=True)
    assert a.stat().st_size <= ref.stat().st_size


def test_label(fixture_tree, tmp_path, rumpfs):
    out = tmp_path / "l.iso"
    rumpfs("pack", fixture_tree, "--no-stubetc", "--label", "My_Volume", "-o", out, env=ENV)
    info = subprocess.run(["isoinfo", "-d", "-i", str(out)], capture_output=True,
                          check=True).stdout.decode()
    assert "Volume id: MY_VOLUME" in info


def test_many_files_in_one_directory(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"file-with-a-long-name-{i:05d}.txt").write_bytes(b"%d\n" % i)
    out = tmp_path / "m.iso"
    rumpfs("pack", src, "--no-stubetc", "-o", out, env=ENV)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xf", str(out)], cwd=dest, check=True)
    tc.assert_same(tc.scan_host(src), tc.scan_host(dest), keys=("type", "size", "sha256"))


def test_bad_label_is_one_line_and_writes_nothing(fixture_tree, tmp_path, rumpfs):
    out = tmp_path / "bad.iso"
    res = rumpfs("pack", fixture_tree, "--no-stubetc", "--label", "x" * 33, "-o", out,
                 check=False)
    assert res.returncode == 1
    assert res.err == ("rumpfs: error: --label 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': an ISO 9660 "
                       "volume label is 1 to 32 characters\n")
    assert not out.exists()


def test_more_directories_than_path_tables_number_is_one_line(tmp_path, rumpfs):
    """A path table names a directory's parent by a 16-bit number: 65,535
    directories at most, the root included."""
    src = tmp_path / "src"
    src.mkdir()
    for k in range(65_535):  # with the root, one too many
        os.mkdir(src / f"d{k:05}")
    out = tmp_path / "x.iso"
    res = rumpfs("pack", src, "--no-stubetc", "-o", out, check=False)
    assert res.returncode == 1
    assert res.err == ("rumpfs: error: /d65534: more than 65535 directories; ISO 9660 path "
                       "tables number at most that many\n")
    assert not out.exists()
    os.rmdir(src / "d65534")  # now exactly as many as they number
    rumpfs("pack", src, "--no-stubetc", "-o", out)
    assert out.stat().st_size > 65_534 * 2048


def test_rumpfs_reader_and_check(iso, fixture_tree, rumpfs):
    assert rumpfs("check", iso).out == f"{iso}: iso: clean\n"
    assert rumpfs("cat", iso, "/hello.txt").stdout == b"hello, rumpfs\n"


@pytest.mark.slow
def test_file_of_4_gib_is_multi_extent(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    big = src / "huge.bin"
    with open(big, "wb") as f:
        f.truncate((4 << 30) + 4096)
        f.seek(4 << 30)
        f.write(b"tail" * 1024)
    out = tmp_path / "h.iso"
    rumpfs("pack", src, "--no-stubetc", "-o", out, env=ENV)
    listing = subprocess.run(["xorriso", "-indev", str(out), "-find", "/", "-exec", "lsdl"],
                             capture_output=True, check=True).stdout.decode()
    assert str((4 << 30) + 4096) in listing
    tail = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(out), "-extract_cut",
                           "/huge.bin", str(4 << 30), "4096", str(tmp_path / "tail")],
                          capture_output=True, check=True)
    assert tail.returncode == 0
    assert (tmp_path / "tail").read_bytes() == b"tail" * 1024


def test_reader_survives_damaged_metadata(tmp_path, rumpfs):
    # Bytes of the descriptors, path tables and directories changed at
    # random (seeded): the reader reports a RumpfsError or reads on, nothing else.
    import io
    import random

    from rumpfs import formats
    from rumpfs.errors import RumpfsError
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "file").write_bytes(b"data")
    os.symlink("d/file", src / "link")
    image = tmp_path / "s.iso"
    rumpfs("pack", src, "-o", image, env=ENV)
    data = image.read_bytes()
    rng = random.Random(19)
    for _ in range(300):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(16 * 2048, 40 * 2048)] = rng.randrange(256)
        f = io.BytesIO(bytes(buf))
        try:
            reader = formats.get("iso").open(f, 0, len(buf))
            for e in reader.entries():
                for _chunk in reader.read(e):
                    pass
            reader.check()
        except RumpfsError:
            pass


def test_long_symlink_target_and_name(tmp_path, rumpfs):
    # 255-byte name and a 1007-byte target: Rock Ridge entries continued in
    # a continuation area; libarchive and libisofs read them back.
    src = tmp_path / "src"
    src.mkdir()
    target = "/".join("c%03d-" % i + "x" * 30 for i in range(28))
    name = "L" * 255
    os.symlink(target, src / name)
    out = tmp_path / "l.iso"
    rumpfs("pack", src, "--no-stubetc", "-o", out, env=ENV)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xf", str(out)], cwd=dest, check=True)
    assert os.readlink(dest / name) == target
    listing = subprocess.run(["xorriso", "-indev", str(out), "-find", "/", "-exec", "lsdl"],
                             capture_output=True, check=True).stdout.decode()
    assert f"'/{name}' -> '{target}'" in listing


def test_identifiers_in_one_string_make_the_same_image(fixture_tree, tmp_path, monkeypatch):
    """A large tree's record identifiers are kept as one string, not a
    bytes object each (memory): the image is the same byte for byte (hard
    links, devices, long names, a Rock Ridge continuation area)."""
    from rumpfs import api
    from rumpfs.formats.iso import writer
    src = tmp_path / "src"
    subprocess.run(["cp", "-a", str(fixture_tree), str(src)], check=True)
    os.symlink("/".join("c%03d-" % i + "x" * 30 for i in range(28)), src / ("L" * 255))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    images = []
    for after in (writer.STRINGS_AFTER, 0):
        monkeypatch.setattr(writer, "STRINGS_AFTER", after)
        out = tmp_path / f"{after}.iso"
        api.pack([src], out, stubetc=False, progress=False)
        images.append(out.read_bytes())
    assert images[0] == images[1]
    assert len(images[0]) > 100_000


def test_symlink_target_over_1024_bytes_is_an_error(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("t" * 1025, src / "link")
    out = tmp_path / "e.iso"
    res = rumpfs("pack", src, "--no-stubetc", "-o", out, check=False)
    assert res.returncode == 1
    assert res.err == ("rumpfs: error: /link: symlink target of 1025 bytes; ISO 9660 Rock Ridge "
                       "readers take at most 1024 (libisofs)\n")
    assert not out.exists()


def test_reader_reads_what_xorriso_wrote(fixture_tree, tmp_path):
    # The reader against an image nobody here wrote, file by file.
    from rumpfs.api import open_image
    image = tmp_path / "x.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-o", str(image),
                    str(fixture_tree)], capture_output=True, check=True)
    reader = open_image(str(image))
    got = tc.from_entries(reader.entries(), reader.read)
    want = tc.scan_host(fixture_tree)
    tc.assert_same(want, got, keys=("type", "mode", "uid", "gid", "size", "target", "rdev",
                                    "sha256"), ignore={b""})
    assert reader.check() == []


def test_struct_formats_mirror_the_construct_declarations():
    from rumpfs.formats.iso import layout
    values = dict(length=40, ext_attr_length=0, extent=dict(le=0x1234, be=0x1234),
                  data_length=dict(le=70000, be=70000), recording_date=bytes(range(7)),
                  flags=2, file_unit_size=0, interleave_gap=0,
                  volume_sequence=dict(le=1, be=1), name_length=5)
    packed = layout.DIR_RECORD.pack(40, 0, 0x1234, (0x1234).to_bytes(4, "big"), 70000,
                                    (70000).to_bytes(4, "big"), bytes(range(7)), 2, 0, 0, 1,
                                    b"\0\1", 5)
    assert layout.DirectoryRecord.build(values) == packed
    assert layout.PathTableRecord.build(dict(name_length=3, ext_attr_length=0, extent=99,
                                             parent=7)) == layout.PATH_RECORD_L.pack(3, 0, 99, 7)
    assert layout.VolumeDescriptor.sizeof() == layout.SECTOR


def test_volume_descriptors_read_by_the_declarations(iso):
    # What the precompiled packers wrote, parsed by the construct
    # declarations: both byte orders agree, the volume is the file.
    from rumpfs.formats.iso import layout
    raw = iso.read_bytes()
    start = layout.SYSTEM_AREA_SECTORS * layout.SECTOR
    for k, kind in enumerate((layout.VD_PRIMARY, layout.VD_SUPPLEMENTARY)):
        vd = layout.VolumeDescriptor.parse(raw[start + k * layout.SECTOR:])
        assert vd.type == kind
        for name in ("volume_space_size", "volume_set_size", "volume_sequence_number",
                     "logical_block_size", "path_table_size"):
            assert vd[name].le == vd[name].be, name
        assert vd.volume_space_size.le * layout.SECTOR == len(raw)
        assert vd.logical_block_size.le == layout.SECTOR
        table = raw[vd.l_path_table * layout.SECTOR:][:vd.path_table_size.le]
        assert raw[vd.m_path_table * layout.SECTOR:][:2] == table[:2]  # the root's record
        assert vd.escape_sequences.rstrip(b"\0") == (layout.JOLIET_ESCAPE if k else b"")
    layout.Terminator.parse(raw[start + 2 * layout.SECTOR:])


def test_rumpfs_extract_gives_back_the_tree(iso, fixture_tree, tmp_path, rumpfs):
    # Our own reader, after the independent ones: every field, hard links too.
    dest = tmp_path / "x"
    rumpfs("extract", iso, dest)
    want = expected(fixture_tree)
    skip = {p for p, r in want.items() if r["type"] == "socket"}
    if not os.path.exists(os.path.join(fixture_tree, "dev", "null")):
        skip |= {p for p, r in want.items() if r["type"] in ("chardev", "blockdev")}
    tc.assert_same(want, tc.scan_host(dest), ignore=skip | {b""})


def test_check_finds_a_wrong_path_table(tmp_path, rumpfs):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    image = tmp_path / "p.iso"
    rumpfs("pack", src, "--no-stubetc", "-o", image, env=ENV)
    data = bytearray(image.read_bytes())
    pt_l = int.from_bytes(data[16 * 2048 + 140:16 * 2048 + 144], "little")
    second = pt_l * 2048 + 10  # the record after the root's (8 + 2 bytes)
    extent = int.from_bytes(data[second + 2:second + 6], "little")
    data[second + 2:second + 6] = (extent + 1).to_bytes(4, "little")
    image.write_bytes(bytes(data))
    res = rumpfs("check", image, check=False)
    assert res.returncode == 1
    assert "the L and M path tables differ" in res.out + res.err
    assert "not those of the tree's 2 directories" in res.out + res.err


def test_inside_an_object(tmp_path, rumpfs):
    # --image-format iso: objcopy takes the image out of the object, and
    # bsdtar judges it; rumpfs reads it straight from the object.
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_bytes(b"inside an object\n")
    obj = tmp_path / "root.o"
    rumpfs("pack", src, "--no-stubetc", "--image-format", "iso", "-o", obj, env=ENV)
    image = tmp_path / "image.iso"
    subprocess.run(["objcopy", "-O", "binary", "--only-section", ".rodata.rumpfs.root",
                    str(obj), str(image)], check=True)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xf", str(image)], cwd=dest, check=True)
    assert (dest / "hello.txt").read_bytes() == b"inside an object\n"
    assert rumpfs("cat", obj, "/hello.txt").stdout == b"inside an object\n"
    assert "format: iso" in rumpfs("info", obj).out
