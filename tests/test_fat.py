"""FAT12/16/32 images, judged by fsck.fat and mtools, compared file by file
with the source tree."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import treecompare as tc

EPOCH = 1700000000  # even: FAT keeps 2-second times
ENV = {"SOURCE_DATE_EPOCH": str(EPOCH)}
#: What the fixture tree holds that FAT cannot: a name that is not UTF-8.
NOT_UTF8 = "/caf\udce9-latin1"

def fsck(image) -> str:
    res = subprocess.run(["fsck.fat", "-n", "-v", str(image)], capture_output=True)
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, out + res.stderr.decode()
    assert "Free cluster summary wrong" not in out and "differences" not in out.lower(), out
    return out


def fsck_geometry(image) -> tuple[int, int]:
    """(FAT bits, data clusters) as fsck.fat reads them from the boot sector."""
    out = fsck(image)
    bits = int(re.search(r"(\d+) bit entries", out).group(1))
    clusters = int(re.search(r"(\d+) data clusters", out).group(1))
    return bits, clusters


def mcopy_out(image, dest) -> None:
    dest.mkdir()
    subprocess.run(["mcopy", "-s", "-m", "-n", "-i", str(image), "::/", str(dest)],
                   check=True, capture_output=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})


def expected_fat(src) -> dict:
    """The source tree as FAT keeps it: files and directories, no owners or
    modes, times to the 2-second tick."""
    out = {}
    for p, r in tc.scan_host(src).items():
        if r["type"] in ("file", "dir"):
            out[p] = r
    return out


@pytest.fixture(scope="module")
def fat_image(fixture_tree, tmp_path_factory):
    from conftest import run_rumpfs
    out = tmp_path_factory.mktemp("fat") / "f.fat"
    res = run_rumpfs("pack", fixture_tree, "--no-stubetc", "--fat-skip-special",
                     "--remove", NOT_UTF8, "--label", "rumpfs test", "-o", out, env=ENV)
    return out, res


def test_fsck_fat_finds_no_problem(fat_image):
    fsck(fat_image[0])


def test_mcopy_extracts_the_tree(fat_image, fixture_tree, tmp_path):
    dest = tmp_path / "x" / "out"
    mcopy_out(fat_image[0], tmp_path / "x")
    dest = tmp_path / "x"
    want = {p: r for p, r in expected_fat(fixture_tree).items() if p != b"caf\xe9-latin1"}
    got = tc.scan_host(dest)
    # Hard links come out as copies; mtools times directories as it makes them.
    tc.assert_same(want, got, keys=("type", "size", "sha256"), ignore={b""})
    for p, r in got.items():
        if r["type"] == "file":
            assert r["mtime"] == EPOCH, p


def test_one_warning_per_kind_left_out(fat_image, fixture_tree):
    lines = fat_image[1].err.splitlines()
    kinds = sorted(line.split()[3] for line in lines)
    want = ["fifo", "socket", "symlink"]
    if os.path.exists(os.path.join(fixture_tree, "dev", "null")):
        want = ["blockdev", "chardev"] + want
    assert kinds == sorted(want)
    assert "rumpfs: warning: 4 symlink entries left out of the FAT image (--fat-skip-special)" \
        in lines


def test_mdir_shows_long_names_and_label(fat_image):
    out = subprocess.run(["mdir", "-i", str(fat_image[0]), "::/"], capture_output=True,
                         check=True).stdout.decode("utf-8", "replace")
    assert "Volume in drive : is RUMPFS TEST" in out
    assert "n" * 251 + ".txt" in out
    assert "h\u00e9llo-\u65e5\u672c.txt" in out


def test_deterministic_short_names(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("README", "readme.txt", "Long File Name.html", "long file name.htm",
                 "a.b.c"):
        (src / name).write_bytes(name.encode())
    out = tmp_path / "s.fat"
    rumpfs("pack", src, "--no-stubetc", "-o", out, env=ENV)
    fsck(out)
    listing = subprocess.run(["mdir", "-i", str(out), "::/"], capture_output=True,
                             check=True).stdout.decode()
    rows = {" ".join(line.split()[:2]) for line in listing.splitlines()}
    assert "README 6" in rows or "README 6" in listing.replace("  ", " ")
    assert "LONGFI~1 HTM" in listing and "LONGFI~2 HTM" in listing
    dest = tmp_path / "x"
    mcopy_out(out, dest)
    tc.assert_same(tc.scan_host(src), tc.scan_host(dest), keys=("type", "size", "sha256"),
                   ignore={b""})


def test_lower_case_short_names_need_no_long_entries(tmp_path, rumpfs):
    # As Windows NT and mtools store them: an 8.3 name whose base and
    # extension are each all lower or all upper case is a short entry with
    # DIR_NTRes case flags (0x08 base, 0x10 extension), no long entries.
    src = tmp_path / "src"
    src.mkdir()
    names = {"readme.txt": 0x18, "lower.C": 0x08, "UPPER.txt": 0x10, "x1": 0x08,
             "Makefile": None, "MiXed.txt": None, "ok.Tx": None}
    for name in names:
        (src / name).write_bytes(name.encode())
    out = tmp_path / "c.fat"
    rumpfs("pack", src, "--no-stubetc", "-o", out, env=ENV)
    fsck(out)
    dest = tmp_path / "x"
    mcopy_out(out, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(names)
    tc.assert_same(tc.scan_host(src), tc.scan_host(dest), keys=("type", "size", "sha256"),
                   ignore={b""})
    image = out.read_bytes()
    for name, flags in names.items():
        base, _, ext = name.upper().partition(".")
        short = base.encode().ljust(8) + ext.encode().ljust(3)
        at = image.find(short)
        if flags is None:
            assert at < 0, name  # a generated ~N short name and long entries
            continue
        assert at % 32 == 0 and image[at + 12] == flags, name
        assert image[at - 32 + 11] != 0x0F, name  # no long entry before it


def test_reproducible(fixture_tree, tmp_path, rumpfs):
    args = ("pack", fixture_tree, "--no-stubetc", "--fat-skip-special", "--remove", NOT_UTF8)
    rumpfs(*args, "-o", tmp_path / "a.fat", env=ENV)
    rumpfs(*args, "--format", "fat", "-o", tmp_path / "b.img", env=ENV)
    assert (tmp_path / "a.fat").read_bytes() == (tmp_path / "b.img").read_bytes()


def test_many_files_in_one_directory(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"File number {i:05d}.data").write_bytes(b"%d\n" % i)
    out = tmp_path / "m.fat"
    rumpfs("pack", src, "--no-stubetc", "-o", out, env=ENV)
    fsck(out)
    dest = tmp_path / "x"
    mcopy_out(out, dest)
    tc.assert_same(tc.scan_host(src), tc.scan_host(dest), keys=("type", "size", "sha256"),
                   ignore={b""})


@pytest.mark.parametrize("fat_type", ["12", "16", "32"])
def test_forced_type(tmp_path, rumpfs, fat_type):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "file.txt").write_bytes(b"x" * 3000)
    out = tmp_path / "t.fat"
    rumpfs("pack", src, "--no-stubetc", "--fat-type", fat_type, "-o", out, env=ENV)
    bits, clusters = fsck_geometry(out)
    assert bits == int(fat_type)
    dest = tmp_path / "x"
    mcopy_out(out, dest)
    assert (dest / "sub" / "file.txt").read_bytes() == b"x" * 3000
    # The boot sector the precompiled packer wrote, read by the construct
    # declaration of its type: the extended BPB where that type has it.
    from rumpfs.formats.fat import layout
    raw = out.read_bytes()
    boot = (layout.BootSector32 if bits == 32 else layout.BootSector16).parse(raw)
    assert boot.ext.BS_BootSig == layout.EXT_BOOT_SIGNATURE
    assert boot.ext.BS_FilSysType == b"FAT%d   " % bits
    assert (boot.bpb.BPB_TotSec16 or boot.bpb.BPB_TotSec32) * boot.bpb.BPB_BytsPerSec == len(raw)
    if bits == 32:
        assert raw[:layout.SECTOR] == raw[layout.BACKUP_BOOT_SECTOR * layout.SECTOR:][:layout.SECTOR]
        info = layout.FsInfo.parse(raw[layout.FSINFO_SECTOR * layout.SECTOR:])
        assert info.FSI_Free_Count < clusters


def _geometry_at(tmp_path, src, size) -> tuple[int, int]:
    from rumpfs.api import pack
    out = tmp_path / f"b{size}.fat"
    pack([str(src)], str(out), format="fat", stubetc=False, format_options={"size": size})
    geometry = fsck_geometry(out)
    out.unlink()
    return geometry


#: Image sizes in sectors around each boundary with one-sector clusters: FAT12
#: of 4084 clusters needs 1 + 2 * 12 + 1 + 4084 sectors (boot, FATs, root,
#: data), FAT16 of 4085 needs 1 + 2 * 16 + 1 + 4085; FAT16 of 65524 needs
#: 1 + 2 * 256 + 1 + 65524, FAT32 of 65525 needs 32 + 2 * 512 + 65525.  In
#: between, neither type fits one-sector clusters.
BOUNDARIES = [(4084, 4085, (4110, 4119)), (65524, 65525, (66038, 66581))]


@pytest.mark.parametrize("low, high, centres", BOUNDARIES)
def test_type_follows_the_cluster_count_at_the_boundaries(tmp_path, low, high, centres):
    # Sizes a sector apart around the boundary: fsck.fat reads the cluster
    # count from the boot sector, and the type must follow it as the FAT
    # specification says (FAT12 below 4085 clusters, FAT16 below 65525).
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    seen = {}
    for centre in centres:
        for sectors in range(centre - 1, centre + 2):
            bits, clusters = _geometry_at(tmp_path, src, sectors * 512)
            seen[clusters] = bits
            assert bits == (12 if clusters < 4085 else 16 if clusters < 65525 else 32)
    assert low in seen and high in seen, sorted(seen)


def test_symlink_is_an_error_without_the_option(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    os.symlink("a", src / "link")
    out = tmp_path / "e.fat"
    res = rumpfs("pack", src, "--no-stubetc", "-o", out, check=False)
    assert res.returncode == 1
    assert res.err == ("rumpfs: error: /link: a FAT image cannot hold a symlink; give "
                       "--fat-skip-special to leave such entries out\n")
    assert not out.exists()


def test_names_differing_in_case_are_an_error(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Makefile").write_bytes(b"1")
    (src / "makefile").write_bytes(b"2")
    out = tmp_path / "c.fat"
    out.write_bytes(b"old")
    res = rumpfs("pack", src, "--no-stubetc", "-o", out, check=False)
    assert res.returncode == 1
    assert res.err == ("rumpfs: error: /makefile: same name as /Makefile to FAT, whose names "
                       "ignore case\n")
    assert out.read_bytes() == b"old"


@pytest.mark.parametrize("name, bad", [("a*b.txt", "*"), ('quo"te', '"'),
                                       ("\u00e9t\u00e9\x01.txt", "\x01"),
                                       ("\u65e5\u672c>.txt", ">")])
def test_name_fat_cannot_hold_is_an_error(tmp_path, rumpfs, name, bad):
    src = tmp_path / "src"
    src.mkdir()
    (src / "\u00e9t\u00e9-\u65e5\u672c.txt").write_bytes(b"fine: not ASCII, nothing forbidden")
    (src / name).write_bytes(b"x")
    out = tmp_path / "n.fat"
    res = rumpfs("pack", src, "--no-stubetc", "-o", out, check=False)
    assert res.returncode == 1
    assert res.err.startswith("rumpfs: error: /")
    assert res.err.endswith(f": FAT names cannot hold {bad!r} (nor any of \"*/:<>?\\| or "
                            "control characters)\n")
    assert res.err.count("\n") == 1
    assert not out.exists()


def test_file_of_4_gib_is_an_error(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.truncate(4 << 30)
    out = tmp_path / "h.fat"
    res = rumpfs("pack", src, "--no-stubetc", "-o", out, check=False)
    assert res.returncode == 1
    assert res.err == ("rumpfs: error: /huge: file is 4294967296 bytes; a FAT file holds at "
                       "most 4294967295 bytes (32-bit size field)\n")
    assert not out.exists()


def test_tree_too_large_for_the_size(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100000)
    out = tmp_path / "s.fat"
    res = rumpfs("pack", src, "--no-stubetc", "--size", "64k", "-o", out, check=False)
    assert res.returncode == 1
    assert res.err.startswith("rumpfs: error: the tree does not fit a FAT12, FAT16 or FAT32 "
                              "image of 65536 bytes")
    assert not out.exists()


def test_rumpfs_reader_and_check(fat_image, rumpfs):
    image = fat_image[0]
    assert rumpfs("check", image).out == f"{image}: fat: clean\n"
    assert rumpfs("cat", image, "/hello.txt").stdout == b"hello, rumpfs\n"


def test_reader_survives_damaged_metadata(tmp_path, rumpfs):
    # Bytes of the boot sector, FATs and directories changed at random
    # (seeded): the reader reports a RumpfsError or reads on, nothing else.
    import io
    import random

    from rumpfs import formats
    from rumpfs.errors import RumpfsError
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a long file name.txt").write_bytes(b"data" * 300)
    image = tmp_path / "s.fat"
    rumpfs("pack", src, "-o", image, env=ENV)
    data = image.read_bytes()
    rng = random.Random(19)
    for _ in range(300):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(8192)] = rng.randrange(256)
        f = io.BytesIO(bytes(buf))
        try:
            reader = formats.get("fat").open(f, 0, len(buf))
            for e in reader.entries():
                for _chunk in reader.read(e):
                    pass
            reader.check()
        except RumpfsError:
            pass


def test_pyfatfs_reads_every_file(fat_image, fixture_tree):
    import hashlib

    from pyfatfs.PyFatFS import PyFatFS
    fs = PyFatFS(str(fat_image[0]), read_only=True)
    try:
        got = {}
        for path in fs.walk.files("/"):
            got[os.fsencode(path.lstrip("/")).upper()] = hashlib.sha256(
                fs.readbytes(path)).hexdigest()
    finally:
        fs.close()
    # pyfatfs ignores the lower-case flags of short names (readme.txt shows
    # as README.TXT; mcopy, mdir and Linux judge the case): names compare
    # upper-cased, which loses nothing since FAT names are unique ignoring case.
    want = {p.upper(): r["sha256"] for p, r in expected_fat(fixture_tree).items()
            if r["type"] == "file" and p != b"caf\xe9-latin1"}
    assert len(got) == len(want) > 10
    assert got == want


def test_reader_reads_what_mkfs_fat_and_mcopy_wrote(tmp_path):
    # The reader against an image nobody here wrote: short names with the
    # lower-case flags, long names, nested directories.
    from rumpfs.api import open_image
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "lower.txt").write_bytes(b"lower")
    (src / "A Long Name.data").write_bytes(b"long" * 1000)
    (src / "sub" / "deeper" / "x").write_bytes(b"")
    image = tmp_path / "m.fat"
    subprocess.run(["mkfs.fat", "-C", str(image), "1024"], check=True, capture_output=True)
    subprocess.run(["mcopy", "-s", "-i", str(image), *map(str, src.iterdir()), "::/"],
                   check=True, capture_output=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    reader = open_image(str(image))
    got = tc.from_entries(reader.entries(), reader.read)
    tc.assert_same(tc.scan_host(src), got, keys=("type", "size", "sha256"), ignore={b""})
    assert reader.check() == []


def test_struct_formats_mirror_the_construct_declarations():
    from rumpfs.formats.fat import layout
    names = ("DIR_Name", "DIR_Attr", "DIR_NTRes", "DIR_CrtTimeTenth", "DIR_CrtTime",
             "DIR_CrtDate", "DIR_LstAccDate", "DIR_FstClusHI", "DIR_WrtTime", "DIR_WrtDate",
             "DIR_FstClusLO", "DIR_FileSize")
    values = (b"HELLO   TXT", 0x20, 0, 0, 0x1234, 0x5678, 0x5678, 1, 0x1234, 0x5678, 2, 99999)
    assert layout.DirEntry.build(dict(zip(names, values))) == layout.DIR_ENTRY.pack(*values)
    lfn = (0x41, bytes(range(10)), 0x0F, 0, 0x5A, bytes(range(12)), 0, bytes(range(4)))
    lfn_names = ("LDIR_Ord", "LDIR_Name1", "LDIR_Attr", "LDIR_Type", "LDIR_Chksum",
                 "LDIR_Name2", "LDIR_FstClusLO", "LDIR_Name3")
    assert layout.LfnEntry.build(dict(zip(lfn_names, lfn))) == layout.LFN_ENTRY.pack(*lfn)
    assert layout.DIR_ENTRY.size == layout.LFN_ENTRY.size == layout.DIR_ENTRY_SIZE
    assert layout.FsInfo.sizeof() == layout.SECTOR


def test_check_finds_a_broken_chain_as_fsck_fat_does(tmp_path, rumpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 2000)  # four 512-byte clusters
    image = tmp_path / "c.fat"
    rumpfs("pack", src, "--no-stubetc", "--fat-type", "16", "-o", image, env=ENV)
    data = bytearray(image.read_bytes())
    reserved = int.from_bytes(data[14:16], "little")
    fat = reserved * 512
    # The file's chain starts at cluster 2: end it after the first cluster.
    data[fat + 4:fat + 6] = (0xFFFF).to_bytes(2, "little")
    image.write_bytes(bytes(data))
    res = rumpfs("check", image, check=False)
    assert res.returncode == 1
    assert "/f: 1 clusters for 2000 bytes (want 4)" in res.out + res.err
    assert "3 clusters in use by no file or directory" in res.out + res.err
    assert subprocess.run(["fsck.fat", "-n", str(image)], capture_output=True).returncode != 0


def test_inside_an_object(tmp_path, rumpfs):
    # --image-format fat: objcopy takes the image out of the object, and
    # fsck.fat and mcopy judge it; rumpfs reads it straight from the object.
    src = tmp_path / "src"
    src.mkdir()
    (src / "Hello World.txt").write_bytes(b"inside an object\n")
    obj = tmp_path / "root.o"
    rumpfs("pack", src, "--no-stubetc", "--image-format", "fat", "-o", obj, env=ENV)
    image = tmp_path / "image.fat"
    subprocess.run(["objcopy", "-O", "binary", "--only-section", ".rodata.rumpfs.root",
                    str(obj), str(image)], check=True)
    fsck(image)
    dest = tmp_path / "x"
    mcopy_out(image, dest)
    assert (dest / "Hello World.txt").read_bytes() == b"inside an object\n"
    assert rumpfs("cat", obj, "/Hello World.txt").stdout == b"inside an object\n"


def _sparse_tree(top, sizes: list[int], dirs: int = 1):
    for k, size in enumerate(sizes):
        d = top / f"d{k % dirs}"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"f{k}", "wb") as f:
            f.truncate(size)
    return top


#: Trees whose smallest image has 512-byte clusters (FAT12), 16 KiB ones
#: (2,000 files of 32 KiB: at 512 bytes their 128,000 clusters need FAT32
#: and 1 MiB of FATs, at 16 KiB 4,000 fit FAT12) and 1 KiB ones (FAT16).
CLUSTER_TREES = {
    "small files": [100 + 37 * k for k in range(300)],
    "32 KiB files": [32768] * 2000,
    "mixed": [4096 * (k % 9) + 700 for k in range(600)] + [5 << 20],
}


@pytest.mark.parametrize("name", sorted(CLUSTER_TREES))
@pytest.mark.parametrize("size", [None, 96 << 20])
def test_cluster_size_search_stops_early_without_missing_the_smallest(tmp_path, name, size):
    """choose() stops trying larger clusters once the data alone outgrows
    the best image; the geometry is still the smallest of every cluster
    size and type tried one by one."""
    from rumpfs import api
    from rumpfs.formats.fat import layout as fat_layout
    from rumpfs.formats.fat.writer import FatLayout
    from rumpfs.sources import HostDirectory, Policy
    top = _sparse_tree(tmp_path / "tree", CLUSTER_TREES[name], dirs=7)
    tree = api.prepare_tree([HostDirectory(str(top))], api.PackOptions(stubetc=False),
                            "little", Policy())
    fat = FatLayout(tree, {} if size is None else {"size": size})
    fat.build()
    fat.choose()
    candidates = []
    spc = 1
    while spc * fat_layout.SECTOR <= fat_layout.MAX_CLUSTER_BYTES:
        everything = fat._all_clusters(spc * fat_layout.SECTOR)
        for bits in (12, 16, 32):
            needed = fat._needed(spc * fat_layout.SECTOR, bits, everything)
            g = None if needed is None else fat._geometry(bits, spc, needed)
            if g is not None:
                candidates.append((g[0], spc, bits))
        spc *= 2
    least = min(total for total, _spc, _bits in candidates)
    assert fat.total == least
    # The first of the smallest, as the search that tried them all took.
    assert (fat.spc, fat.fat) == next((s, b) for t, s, b in candidates if t == least)
