"""``rumpfs bundle``: bootable images judged by xorriso, sfdisk, qemu-img, GNU
tar and, in the slow tests, by SeaBIOS + ISOLINUX booting the Multiboot test
kernel (tests/bundle/), whose report of its command line and modules (length,
SHA-256, string) is compared with the inputs byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
from bundle import testkernel
from conftest import ROOT, leftovers, run_rumpfs

from rumpfs.bundle import disk, kernel, loader

ISOHDPFX = Path(loader.ISOLINUX_FILES["isohdpfx.bin"][0]) / "isohdpfx.bin"
SECTOR = 512
MIB = 1 << 20
EPOCH = "1700000000"
#: The compact config fits on the command line; the pretty one does not survive ISOLINUX.
CONFIG = {"hostname": "bundle-test", "env": {"A": "1", "B": "two words"}, "cmdline": "app -x"}
#: ISO 9660 path of each input, as xorriso lists them.
ISO_PATHS = {"kernel": "/KERNEL", "root": "/ROOT.IMG", "mod1": "/MOD1", "mod2": "/MOD2"}


def _pseudo_random(n: int, seed: bytes) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:n])


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """The test kernel, a root image packed by rumpfs, two modules and configs."""
    d = tmp_path_factory.mktemp("bundle-inputs")
    ins = {"kernel": testkernel.build(d / "build")}
    ins["root"] = d / "root.ffs"
    run_rumpfs("pack", ROOT / "examples" / "hello", "-o", ins["root"], "--no-progress",
               env={"SOURCE_DATE_EPOCH": EPOCH})
    ins["mod1"] = d / "data.bin"
    ins["mod1"].write_bytes(_pseudo_random(123457, b"mod1"))  # not a whole sector
    ins["mod2"] = d / "note.txt"
    # 124 bytes: 60 past a 64-byte block, so the SHA-256 padding takes a
    # second block in the test kernel (the other inputs end 1, 0, 13 past one).
    ins["mod2"].write_bytes(b"a small module\n".ljust(124, b"."))
    ins["compact"] = d / "compact.json"
    ins["compact"].write_text(json.dumps(CONFIG, separators=(",", ":")))
    ins["pretty"] = d / "pretty.json"
    ins["pretty"].write_text(json.dumps(CONFIG, indent=2) + "\n")
    return ins


@pytest.fixture(scope="session")
def built(inputs, tmp_path_factory) -> Path:
    """The same bundle in every output kind, made once: b.iso, b.img, b.raw, b.vhd, b.tar.gz."""
    d = tmp_path_factory.mktemp("built")
    for suffix in ("iso", "img", "raw", "vhd", "tar.gz"):
        make(inputs, d / f"b.{suffix}")
    return d


def bundle_args(inputs, out, *extra):
    return [inputs["kernel"], "--root", inputs["root"], "--module", f"{inputs['mod1']}=data x",
            "--module", inputs["mod2"], "-o", out, *extra]


def make(inputs, out, *extra, env=None):
    return run_rumpfs("bundle", *bundle_args(inputs, out, *extra),
                      env={"SOURCE_DATE_EPOCH": EPOCH, **(env or {})})


def expected_modules(inputs, config=None):
    mods = [(inputs["root"], b"/root.img"), (inputs["mod1"], b"/mod1 data x"), (inputs["mod2"], b"/mod2")]
    if config is not None:
        mods.append((config, b"/json.cfg"))
    return mods


# --- kernel detection ------------------------------------------------------------

def _multiboot_header(flags=0x3, magic=0x1BADB002):
    return struct.pack("<III", magic, flags, (-(magic + flags)) & 0xFFFFFFFF)


def _elf(cls=1, machine=3) -> bytes:
    ident = b"\x7fELF" + bytes([cls, 1, 1]) + bytes(9)
    return ident + struct.pack("<HH", 2, machine) + bytes(64 - 20)


def _bzimage(version=0x020F) -> bytes:
    data = bytearray(1024)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    data[0x206:0x208] = struct.pack("<H", version)
    return bytes(data)


@pytest.mark.parametrize("name,data,kind", [
    ("elf32", _elf(1) + bytes(4096 - 64) + _multiboot_header(), "multiboot"),
    ("elf64", _elf(2, 62) + bytes(60) + _multiboot_header(), "multiboot"),
    ("last-offset", _elf() + bytes(8192 - 12 - 64) + _multiboot_header(), "multiboot"),
    ("aout-kludge", bytes(64) + _multiboot_header(flags=0x10003) + bytes(20), "multiboot"),
    ("bzimage", _bzimage(), "linux"),
])
def test_detect_kinds(tmp_path, name, data, kind):
    p = tmp_path / name
    p.write_bytes(data)
    assert kernel.detect(str(p)).kind == kind


@pytest.mark.parametrize("name,data,found", [
    ("past-8k", _elf() + bytes(8192 - 8 - 64) + _multiboot_header(),
     "an ELF32 i386 file without a Multiboot header in its first 8192 bytes"),
    ("misaligned", _elf() + bytes(2) + _multiboot_header() + bytes(100),
     "an ELF32 i386 file without a Multiboot header in its first 8192 bytes"),
    ("bad-checksum", _elf() + struct.pack("<III", 0x1BADB002, 3, 0) + bytes(100),
     "an ELF32 i386 file without a Multiboot header in its first 8192 bytes"),
    ("gzip", b"\x1f\x8b\x08" + bytes(40), "gzip data"),
    ("empty", b"", "an empty file"),
    ("text", b"hello, world\n", "13 bytes starting 68 65 6c 6c 6f 2c 20 77"),
])
def test_detect_rejects(tmp_path, name, data, found):
    from rumpfs.errors import RumpfsError
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(RumpfsError) as e:
        kernel.detect(str(p))
    assert str(e.value) == f"{p}: not a Multiboot kernel or a Linux bzImage: {found}"


def test_detect_multiboot_without_elf_or_addresses(tmp_path):
    p = tmp_path / "raw"
    p.write_bytes(bytes(16) + _multiboot_header() + bytes(16))
    with pytest.raises(Exception, match="has a Multiboot header at 0x10 but is not ELF"):
        kernel.detect(str(p))


def test_detect_old_linux(tmp_path):
    p = tmp_path / "zImage"
    p.write_bytes(_bzimage(0x0104))
    with pytest.raises(Exception, match=r"boot protocol 1\.04, not a bzImage"):
        kernel.detect(str(p))


def test_detect_test_kernel_and_debian_kernel(inputs):
    info = kernel.detect(str(inputs["kernel"]))
    # The header's offset as readelf sees it: the .text section, where
    # linker.ld puts .multiboot first.
    sections = subprocess.run(["readelf", "-SW", str(inputs["kernel"])], capture_output=True,
                              text=True, check=True).stdout
    text = next(line for line in sections.splitlines() if " .text " in line).split()
    text_offset = int(text[text.index(".text") + 3], 16)
    assert (info.kind, info.elf, info.offset) == ("multiboot", "ELF32 i386", text_offset)
    from kernel import harness
    try:
        image = harness.Kernel.chosen().image
    except harness.KernelMissing as e:
        pytest.fail(str(e))
    assert kernel.detect(str(image)).kind == "linux"


# --- the ISO, judged without booting ---------------------------------------------

def el_torito(path) -> dict:
    out = subprocess.run(["xorriso", "-indev", str(path), "-report_el_torito", "plain"],
                         capture_output=True, text=True, check=True).stdout
    report = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            report.setdefault(key.strip(), []).append(value.strip())
    return report


def extract(iso, dest: Path) -> Path:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
                   capture_output=True, check=True)
    return dest


def test_iso_catalog_files_and_boot_info_table(inputs, built, tmp_path):
    iso = built / "b.iso"
    et = el_torito(iso)
    assert et["El Torito img path"] == ["1  /ISOLINUX/ISOLINUX.BIN"]
    fields = et["El Torito boot img"][0].split()
    assert fields[:6] == ["1", "BIOS", "y", "none", "0x0000", "0x00"] and fields[6] == "4"
    boot_lba = int(fields[7])
    assert "boot-info-table" in et["El Torito img opts"][0]
    tree = extract(iso, tmp_path / "x")
    for name, iso_path in ISO_PATHS.items():
        assert (tree / iso_path[1:]).read_bytes() == inputs[name].read_bytes(), name
    for name in ("ldlinux.c32", "libcom32.c32", "mboot.c32"):
        original = Path(loader.ISOLINUX_FILES[name][0]) / name
        assert (tree / "ISOLINUX" / name.upper()).read_bytes() == original.read_bytes()
    # Boot info table (El Torito / ISOLINUX): PVD LBA 16, own LBA, length,
    # 32-bit sum of the words from byte 64; the rest of isolinux.bin unchanged.
    patched = (tree / "ISOLINUX" / "ISOLINUX.BIN").read_bytes()
    original = (Path(loader.ISOLINUX_FILES["isolinux.bin"][0]) / "isolinux.bin").read_bytes()
    assert len(patched) == len(original) and patched[64:] == original[64:] and patched[:8] == original[:8]
    words = struct.unpack(f"<{(len(patched) - 64) // 4}I", patched[64:])
    assert struct.unpack("<IIII", patched[8:24]) == (16, boot_lba, len(patched), sum(words) & 0xFFFFFFFF)
    cfg = (tree / "ISOLINUX" / "ISOLINUX.CFG").read_text()
    assert "  KERNEL mboot.c32\n  APPEND /kernel --- /root.img --- /mod1 data x --- /mod2\n" in cfg
    # isoinfo (genisoimage) walks the same directories: these files, these sizes.
    listing = subprocess.run(["isoinfo", "-l", "-i", str(iso)], capture_output=True, text=True,
                             check=True).stdout
    sizes, directory = {}, ""
    for line in listing.splitlines():
        if line.startswith("Directory listing of "):
            directory = line[len("Directory listing of "):].rstrip("/")
        elif line.startswith("-"):
            name = line.split("]")[1].strip()
            sizes[f"{directory}/{name.removesuffix(';1')}"] = int(line.split()[4])
    boot_files = {f"/ISOLINUX/{n.upper()}": (Path(loader.ISOLINUX_FILES[n][0]) / n).stat().st_size
                  for n in ("isolinux.bin", "ldlinux.c32", "libcom32.c32", "mboot.c32")}
    assert sizes == {**{p: inputs[n].stat().st_size for n, p in ISO_PATHS.items()}, **boot_files,
                     "/ISOLINUX/ISOLINUX.CFG": len(cfg.encode()), "/ISOLINUX/BOOT.CAT": 2048}


def test_iso_isohybrid_mbr(built):
    iso = built / "b.iso"
    data = iso.read_bytes()
    size = len(data)
    assert size % MIB == 0
    table = json.loads(subprocess.run(["sfdisk", "--json", str(iso)], capture_output=True,
                                      check=True, text=True).stdout)["partitiontable"]
    assert table["label"] == "dos"
    assert table["partitions"] == [{"node": f"{iso}1", "start": 0, "size": size // SECTOR,
                                    "type": "17", "bootable": True}]
    assert data[:432] == ISOHDPFX.read_bytes()[:432]
    boot_lba = int(el_torito(iso)["El Torito boot img"][0].split()[7])
    assert struct.unpack_from("<II", data, 432) == (boot_lba * 4, 0)
    assert data[510:512] == b"\x55\xaa"
    assert int(table["id"], 16) != 0


def test_reproducible_and_dated(inputs, built, tmp_path):
    shutil.copyfile(built / "b.iso", tmp_path / "a.iso")
    make(inputs, tmp_path / "b.iso")
    make(inputs, tmp_path / "c.iso", env={"SOURCE_DATE_EPOCH": "1800000000"})
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.iso", "b.iso", "c.iso"))
    assert a == b and a != c
    for suffix in ("vhd", "tar.gz"):
        make(inputs, tmp_path / f"again.{suffix}")
        assert (tmp_path / f"again.{suffix}").read_bytes() == (built / f"b.{suffix}").read_bytes(), suffix
    pvd = subprocess.run(["xorriso", "-indev", str(tmp_path / "a.iso"), "-pvd_info"],
                         capture_output=True, text=True, check=True).stdout
    assert "Creation Time: 2023111422132000" in pvd  # 1700000000 in UTC
    assert "Volume Id    : RUMPFS_" in pvd
    # The volume ID and disk signature follow the content.
    (tmp_path / "other").write_bytes(b"another module\n")
    run_rumpfs("bundle", inputs["kernel"], "--module", tmp_path / "other", "-o", tmp_path / "d.iso")
    d = (tmp_path / "d.iso").read_bytes()
    assert d[440:444] != a[440:444] and d[0x8028:0x8048] != a[0x8028:0x8048]


def test_img_is_the_iso(built):
    iso = (built / "b.iso").read_bytes()
    assert (built / "b.img").read_bytes() == iso and (built / "b.raw").read_bytes() == iso


def test_root_directory_is_packed_as_pack_does(inputs, tmp_path):
    hello = ROOT / "examples" / "hello"
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    run_rumpfs("bundle", inputs["kernel"], "--root", hello, "--remove", "/etc/motd", "-o", tmp_path / "b.iso",
               env=env)
    run_rumpfs("pack", hello, "--remove", "/etc/motd", "--no-progress", "-o", tmp_path / "root.ffs", env=env)
    tree = extract(tmp_path / "b.iso", tmp_path / "x")
    assert (tree / "ROOT.IMG").read_bytes() == (tmp_path / "root.ffs").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["b.iso", "root.ffs", "x"]  # no scratch left behind


def test_root_layers_are_packed_as_pack_does(inputs, tmp_path):
    """--layer adds pack's sources (here a tar grafted at /extra) over --root
    DIR, or makes the root alone; --timestamp and --keep-owner as in pack."""
    hello = ROOT / "examples" / "hello"
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "note.txt").write_text("from a layer\n")
    archive = tmp_path / "layer.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(layer), "note.txt"], check=True)
    opts = ["--timestamp", "1600000000", "--keep-owner"]
    run_rumpfs("bundle", inputs["kernel"], "--root", hello, "--layer", f"{archive}:/extra", *opts,
               "-o", tmp_path / "b.iso")
    run_rumpfs("pack", hello, f"{archive}:/extra", *opts, "--no-progress", "-o", tmp_path / "root.ffs")
    tree = extract(tmp_path / "b.iso", tmp_path / "x")
    assert (tree / "ROOT.IMG").read_bytes() == (tmp_path / "root.ffs").read_bytes()
    run_rumpfs("bundle", inputs["kernel"], "--layer", archive, "-f", "cpio", "-o", tmp_path / "c.iso")
    run_rumpfs("pack", archive, "-o", tmp_path / "root.cpio", "--no-progress")
    tree = extract(tmp_path / "c.iso", tmp_path / "y")
    assert (tree / "ROOT.IMG").read_bytes() == (tmp_path / "root.cpio").read_bytes()
    # GNU cpio finds the layer's file in it.
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=(tree / "ROOT.IMG").read_bytes(),
                             capture_output=True, check=True).stdout.decode().split()
    assert "note.txt" in listing and "etc/passwd" in listing


def test_describe_reads_the_bundle_back(inputs, built, tmp_path):
    """rumpfs.bundle.inspect.describe (for rumpfs info): every module's string
    and size, and the config, as the inputs give them."""
    from rumpfs.bundle.inspect import describe
    info = describe(str(built / "b.vhd"))
    assert (info["container"], info["partition_table"], info["uefi"]) == ("vhd", "mbr", False)
    assert info["loader"].startswith("ISOLINUX 6.")
    assert info["kernel"] == {"kind": "multiboot", "path": "/kernel", "size": inputs["kernel"].stat().st_size,
                              "cmdline": ""}
    assert info["modules"] == [{"string": s.decode(), "size": p.stat().st_size}
                               for p, s in expected_modules(inputs)]
    assert "config" not in info
    make(inputs, tmp_path / "c.iso", "--config", inputs["compact"])
    assert describe(str(tmp_path / "c.iso"))["config"] == {"delivery": "cmdline",
                                                           "text": inputs["compact"].read_text()}
    make(inputs, tmp_path / "p.img", "--config", inputs["pretty"])
    assert describe(str(tmp_path / "p.img"))["config"] == {"delivery": "file", "path": "/json.cfg",
                                                           "text": inputs["pretty"].read_text()}
    from rumpfs.errors import RumpfsError
    with pytest.raises(RumpfsError, match="not a bundle"):
        describe(str(inputs["root"]))


def test_info_shows_the_bundle(inputs, built, tmp_path):
    """rumpfs info on a bundle: the ISO, and the loader, kernel and modules
    (the same description as above); a plain ISO of pack has no bundle part."""
    info = json.loads(run_rumpfs("info", "--json", built / "b.iso").out)
    assert info["image"]["format"] == "iso"
    assert info["bundle"]["kernel"]["size"] == inputs["kernel"].stat().st_size
    assert [m["size"] for m in info["bundle"]["modules"]] == \
        [p.stat().st_size for p, _ in expected_modules(inputs)]
    plain = tmp_path / "plain.iso"
    run_rumpfs("pack", "--no-stubetc", inputs["kernel"].parent, "-o", plain)
    assert "bundle" not in json.loads(run_rumpfs("info", "--json", plain).out)
    # xorriso makes a bootable ISO that is no bundle of ours: described as an ISO.
    other = tmp_path / "other.iso"
    boot = tmp_path / "boot"
    boot.mkdir()
    shutil.copyfile(built / "b.iso", boot / "disk.img")
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(other), "-b", "disk.img",
                    "-no-emul-boot", str(boot)], check=True, capture_output=True)
    info = json.loads(run_rumpfs("info", "--json", other).out)
    assert info["image"]["format"] == "iso" and "bundle" not in info


# --- a truncated bundle, judged without booting ------------------------------------

def file_extents(iso) -> dict:
    """ISO path -> (first 2 KiB block, blocks), as xorriso reports them."""
    out = subprocess.run(["xorriso", "-indev", str(iso), "-find", "/", "-exec", "report_lba"],
                         capture_output=True, text=True, check=True).stdout
    extents = {}
    for line in out.splitlines():
        if line.startswith("File data lba:"):
            fields = [f.strip() for f in line.split(":", 1)[1].split(",")]
            extents[fields[4].strip("'")] = (int(fields[1]), int(fields[2]))
    return extents


def volume_bytes(iso) -> int:
    """The ISO 9660 volume's size, as isoinfo reads it from the volume descriptor."""
    out = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("Volume size is:"))
    return int(line.split()[-1]) * 2048


def partition_ends(disk) -> list:
    """(number, type, end in bytes) of each partition, as sfdisk reads the table."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True,
                                      text=True).stdout)["partitiontable"]
    return [(i, p["type"], (p["start"] + p["size"]) * SECTOR) for i, p in enumerate(table["partitions"], 1)]


def truncated_copy(src: Path, dest: Path, size: int) -> Path:
    with open(src, "rb") as f:
        dest.write_bytes(f.read(size))
    return dest


def _info_fails(path, line):
    r = run_rumpfs("info", path, check=False)
    assert (r.returncode, r.err, r.out) == (1, f"rumpfs: error: {path}: {line}\n", "")


def _check_says(path, lines):
    r = run_rumpfs("check", path, check=False)
    assert r.returncode == 1 and r.err == f"{path}: {len(r.out.splitlines())} problem(s) found\n"
    for line in lines:
        assert f"{path}: {line}\n" in r.out, r.out


def test_truncated_bundle_is_reported_by_check_and_info(built, tmp_path):
    """Cut anywhere, a bundle is one line for info (exit 1) and problems for
    check: the ISO volume's end (isoinfo's volume size) or the MBR partition's
    end (sfdisk's) past the file's end, even where every file is still there."""
    iso = built / "b.iso"
    size = iso.stat().st_size
    [(_, kind, end)] = partition_ends(iso)
    assert (kind, end) == ("17", size)
    volume = volume_bytes(iso)
    root_lba, root_blocks = file_extents(iso)["/ROOT.IMG"]
    for cut in (size - 1, volume + 2048, volume):
        t = truncated_copy(iso, tmp_path / f"{cut}.iso", cut)
        line = f"MBR partition 1 (type 0x17) ends at byte {end}, past the disk's end at {cut}: truncated"
        lines = [line]
        if cut % SECTOR:
            lines.insert(0, f"disk of {cut} bytes, not a whole number of 512-byte sectors: truncated")
        _info_fails(t, lines[0])
        _check_says(t, lines)
    cut = (root_lba + root_blocks // 2) * 2048
    t = truncated_copy(iso, tmp_path / "mid-root.iso", cut)
    _info_fails(t, f"ISO 9660 volume of {volume} bytes, past the disk's end at {cut}: truncated")
    _check_says(t, [f"volume of {volume // 2048} sectors is larger than the image",
                    f"/ROOT.IMG: extent at sector {root_lba} ends past the image",
                    f"MBR partition 1 (type 0x17) ends at byte {end}, past the disk's end at {cut}: "
                    f"truncated"])
    # A VHD that lost the last byte of its footer is a raw disk of a part sector.
    vhd = built / "b.vhd"
    t = truncated_copy(vhd, tmp_path / "t.vhd", vhd.stat().st_size - 1)
    line = f"disk of {vhd.stat().st_size - 1} bytes, not a whole number of 512-byte sectors: truncated"
    _info_fails(t, line)
    _check_says(t, [line])
    # Whole, they are clean.
    for whole in (iso, vhd):
        assert run_rumpfs("check", whole).out == f"{whole}: iso: clean\n"


def test_truncated_gpt_disk_is_reported(inputs, tmp_path, grub_cache):
    """A --uefi disk cut by its last sector loses the GPT's backup header:
    sfdisk -V says so, and so do check and info."""
    img = tmp_path / "u.img"
    make_uefi(inputs, img, grub_cache)
    size = img.stat().st_size
    assert run_rumpfs("check", img).out == f"{img}: iso: clean\n"
    t = truncated_copy(img, tmp_path / "t.img", size - SECTOR)
    verify = subprocess.run(["sfdisk", "-V", str(t)], capture_output=True, text=True)
    assert "No errors detected." not in verify.stdout, verify.stdout
    [(_, kind, _)] = partition_ends(img)
    assert kind == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    protective = (f"MBR partition 1 (type 0xee) ends at byte {size}, past the disk's end at {size - SECTOR}: "
                  f"truncated")
    backup = f"GPT backup header at byte {size - SECTOR} is past the disk's end at {size - SECTOR}: truncated"
    _info_fails(t, protective)
    _check_says(t, [protective, backup])


# --- VHD and GCE -----------------------------------------------------------------

#: (cylinders, heads, sectors per track) from the VHD specification's
#: algorithm, worked by hand for these sizes.
VHD_CHS = {1 * MIB: (30, 4, 17), 2 * MIB: (60, 4, 17), 64 * MIB: (963, 8, 17), 4096 * MIB: (8322, 16, 63)}


@pytest.mark.parametrize("size", sorted(VHD_CHS))
def test_vhd_geometry(size):
    assert disk.vhd_geometry(size) == VHD_CHS[size]


def test_vhd_footer(built):
    raw = (built / "b.img").read_bytes()
    vhd = (built / "b.vhd").read_bytes()
    assert len(vhd) == len(raw) + 512 and vhd[:-512] == raw and len(raw) % MIB == 0
    footer = vhd[-512:]
    (cookie, features, version, data_offset, timestamp, app, app_version, host, original, current,
     cylinders, heads, spt, disk_type, checksum, unique, saved) = struct.unpack(
        ">8sIIQI4sI4sQQHBBII16sB", footer[:85])
    assert (cookie, features, version, data_offset) == (b"conectix", 2, 0x10000, 2**64 - 1)
    assert timestamp == int(EPOCH) - 946684800  # seconds since 2000-01-01 UTC
    assert (original, current, disk_type, saved) == (len(raw), len(raw), 2, 0)
    assert (cylinders, heads, spt) == VHD_CHS[len(raw)]
    assert checksum == ~(sum(footer) - sum(footer[64:68])) & 0xFFFFFFFF
    assert unique != bytes(16) and footer[85:] == bytes(427)
    # qemu's vpc driver: the size from the footer, and from the CHS geometry.
    def qemu_size(*opts):
        spec = ",".join(["driver=vpc", f"file.filename={built / 'b.vhd'}", *opts])
        out = subprocess.run(["qemu-img", "info", "--output=json", "--image-opts", spec],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["virtual-size"]
    assert qemu_size("force_size_calc=current_size") == len(raw)
    assert qemu_size() == cylinders * heads * spt * SECTOR


def test_gce_tar_gz(built, tmp_path):
    listing = subprocess.run(["tar", "-tvzf", str(built / "b.tar.gz")], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    assert len(listing) == 1 and listing[0].split()[-1] == "disk.raw"
    with gzip.open(built / "b.tar.gz") as gz:
        header = gz.read(512)
    assert header[257:265] == b"ustar  \0"  # GNU tar's magic and version
    assert header[156:157] == b"S"  # a sparse member (old GNU format)
    subprocess.run(["tar", "-xSzf", str(built / "b.tar.gz"), "-C", str(tmp_path)], check=True)
    raw = tmp_path / "disk.raw"
    assert raw.read_bytes() == (built / "b.img").read_bytes()
    with tarfile.open(built / "b.tar.gz") as t:
        member = t.getmember("disk.raw")
        assert (member.mtime, member.size, member.issparse()) == (int(EPOCH), raw.stat().st_size, True)
    # The disk's zeros were not stored (Python's tarfile reads the map), and
    # GNU tar made the file sparse again from it.
    stored = sum(n for _, n in member.sparse)
    assert stored < member.size - (64 << 10)
    assert raw.stat().st_blocks * 512 <= stored + (64 << 10)
    # bsdtar reads it the same way.
    other = tmp_path / "bsdtar"
    other.mkdir()
    subprocess.run(["bsdtar", "-xzf", str(built / "b.tar.gz"), "-C", str(other)], check=True)
    assert (other / "disk.raw").read_bytes() == (built / "b.img").read_bytes()


# --- config delivery ---------------------------------------------------------------

def _cfg(tree: Path) -> str:
    return (tree / "ISOLINUX" / "ISOLINUX.CFG").read_text()


def test_config_on_the_command_line(inputs, tmp_path):
    r = make(inputs, tmp_path / "b.iso", "--config", inputs["compact"], "--cmdline", "x=1", "-v")
    size = inputs["compact"].stat().st_size
    assert r.out.splitlines()[1] == (f"{tmp_path / 'b.iso'}: config on the kernel command line "
                                     f"({size} bytes, kept intact by ISOLINUX)")
    tree = extract(tmp_path / "b.iso", tmp_path / "x")
    assert f"APPEND /kernel x=1 {inputs['compact'].read_text()} --- /root.img" in _cfg(tree)
    assert not (tree / "JSON.CFG").exists()


def test_config_as_a_file(inputs, tmp_path):
    r = make(inputs, tmp_path / "b.iso", "--config", inputs["pretty"], "-v")
    assert r.out.splitlines()[1] == (f"{tmp_path / 'b.iso'}: config as module /json.cfg, named by "
                                     f"_RUMPRUN_ROOTFSCFG=/json.cfg (ISOLINUX would change its blanks "
                                     f"or line breaks)")
    tree = extract(tmp_path / "b.iso", tmp_path / "x")
    assert (tree / "JSON.CFG").read_bytes() == inputs["pretty"].read_bytes()
    assert "APPEND /kernel _RUMPRUN_ROOTFSCFG=/json.cfg --- /root.img" in _cfg(tree)
    assert _cfg(tree).rstrip("\n").endswith(" --- /mod2 --- /json.cfg")


def test_config_too_long_for_the_command_line(inputs, tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"env": {f"V{i}": "x" * 40 for i in range(60)}}, separators=(",", ":")))
    r = make(inputs, tmp_path / "b.iso", "--config", big, "-v")
    assert "(too long for ISOLINUX's command line)" in r.out.splitlines()[1]


# --- bad input: one line, exit 1, nothing written -----------------------------------

def _fails(args, line, out: Path, env=None):
    r = run_rumpfs("bundle", *args, check=False, env=env)
    assert (r.returncode, r.err, r.out) == (1, f"rumpfs: error: {line}\n", "")
    assert not out.exists() or out.read_bytes() == b"previous"
    assert leftovers(out.parent) == []


def test_bad_input(inputs, tmp_path):
    out = tmp_path / "o.iso"
    missing = tmp_path / "nothing"
    _fails([missing, "-o", out], f"{missing}: cannot read kernel: No such file or directory", out)
    _fails([inputs["mod2"], "-o", out], f"{inputs['mod2']}: not a Multiboot kernel or a Linux bzImage: "
           f"124 bytes starting 61 20 73 6d 61 6c 6c 20", out)
    _fails([inputs["kernel"], "-o", tmp_path / "o.qcow2"],
           f"{tmp_path / 'o.qcow2'}: unknown output kind; name it *.iso, *.img, *.raw, *.vhd, *.tar.gz",
           tmp_path / "o.qcow2")
    _fails([inputs["kernel"], "--module", missing, "-o", out],
           f"{missing}: cannot read module: No such file or directory", out)
    empty_file = tmp_path / "empty"
    empty_file.write_bytes(b"")
    _fails([inputs["kernel"], "--module", empty_file, "-o", out],
           f"{empty_file}: empty module; the loaders cannot load an empty file", out)
    huge = tmp_path / "huge"
    with open(huge, "wb") as f:
        f.truncate(1 << 32)  # sparse: 4 GiB of nothing on disk
    _fails([inputs["kernel"], "--root", huge, "-o", out],
           f"{huge}: root image of {1 << 32} bytes, larger than 4294967295 "
           f"(one ISO 9660 extent, and 32-bit Multiboot memory)", out)
    empty = tmp_path / "loaders"
    empty.mkdir()
    _fails([inputs["kernel"], "--loader-dir", empty, "-o", out],
           f"{empty}/isolinux.bin: missing from --loader-dir "
           f"(the Debian package isolinux ships isolinux.bin)",
           out)
    long_line = "a" * 2100
    _fails([inputs["kernel"], "--cmdline", long_line, "-o", out],
           f"{inputs['kernel']}: KERNEL and APPEND of isolinux.cfg are {10 + 8 + 2100} bytes, "
           f"over ISOLINUX's limit of 2047", out)
    _fails([inputs["kernel"], "--cmdline", "a  b", "-o", out],
           "--cmdline: 'a  b' would not arrive intact through ISOLINUX (runs of blanks, "
           "control characters or a '---' word)", out)
    _fails([inputs["kernel"], "--root", inputs["root"], "--layer", inputs["mod2"], "-o", out],
           f"{inputs['root']}: --layer adds to a root packed from sources: give --root a directory, "
           f"or no --root, not an image", out)
    bad = tmp_path / "bad.json"
    bad.write_text('{"hostname": 1}')
    _fails([inputs["kernel"], "--config", bad, "-o", out],
           f"{bad}: hostname: expected a string, got a number", out)
    _fails([inputs["kernel"], "-o", out], "SOURCE_DATE_EPOCH='soon': not a whole number of seconds",
           out, env={"SOURCE_DATE_EPOCH": "soon"})
    # An existing output stays as it was.
    out.write_bytes(b"previous")
    _fails([inputs["kernel"], "--cmdline", long_line, "-o", out],
           f"{inputs['kernel']}: KERNEL and APPEND of isolinux.cfg are 2118 bytes, "
           f"over ISOLINUX's limit of 2047",
           out)


def test_linux_takes_no_modules_or_config(inputs, tmp_path):
    bz = tmp_path / "bzImage"
    bz.write_bytes(_bzimage())
    out = tmp_path / "o.iso"
    _fails([bz, "--module", inputs["mod2"], "-o", out],
           f"{bz}: a Linux bzImage takes --root (its initrd) and --cmdline; "
           f"--module and --config are for Multiboot kernels", out)


def test_missing_debian_package_is_named(inputs, tmp_path, monkeypatch):
    from rumpfs.bundle.build import bundle
    from rumpfs.errors import RumpfsError
    monkeypatch.setitem(loader.ISOLINUX_FILES, "mboot.c32", (str(tmp_path / "nowhere"), "syslinux-common"))
    with pytest.raises(RumpfsError) as e:
        bundle(str(inputs["kernel"]), str(tmp_path / "o.iso"))
    assert str(e.value) == (f"{tmp_path}/nowhere/mboot.c32: missing; install the Debian package "
                            f"syslinux-common (or give --loader-dir)")
    assert not (tmp_path / "o.iso").exists()


# --- booting: SeaBIOS + ISOLINUX + mboot.c32 + the test kernel ------------------------

def assert_boots(inputs, drive_args, cmdline=b"/kernel", config=None):
    booted = testkernel.boot(*drive_args)
    assert booted.returncode == testkernel.KERNEL_EXIT_STATUS, booted.serial[-2000:]
    assert booted.report == testkernel.expected(cmdline, expected_modules(inputs, config))
    return booted.report


@pytest.mark.slow
def test_boot_iso_as_cdrom_and_as_disk(inputs, built):
    iso = built / "b.iso"
    assert_boots(inputs, ["-cdrom", str(iso)])
    assert_boots(inputs, ["-drive", f"file={iso},format=raw,snapshot=on"])


@pytest.mark.slow
def test_boot_catches_a_flipped_module_byte(inputs, built, tmp_path):
    iso = tmp_path / "b.iso"
    data = bytearray((built / "b.iso").read_bytes())
    needle = inputs["mod1"].read_bytes()[5000:5064]
    at = data.index(needle)
    data[at] ^= 0xFF
    iso.write_bytes(data)
    booted = testkernel.boot("-cdrom", str(iso))
    want = testkernel.expected(b"/kernel", expected_modules(inputs))
    got = booted.report
    assert got.modules[1][0] == want.modules[1][0] and got.modules[1][1] != want.modules[1][1]
    assert got != want
    assert got.modules[0] == want.modules[0] and got.modules[2] == want.modules[2]


@pytest.mark.slow
def test_boot_config_both_ways(inputs, tmp_path):
    make(inputs, tmp_path / "c.iso", "--config", inputs["compact"], "--cmdline", "x=1")
    assert_boots(inputs, ["-cdrom", str(tmp_path / "c.iso")],
                 cmdline=b"/kernel x=1 " + inputs["compact"].read_bytes())
    make(inputs, tmp_path / "p.iso", "--config", inputs["pretty"])
    assert_boots(inputs, ["-cdrom", str(tmp_path / "p.iso")],
                 cmdline=b"/kernel _RUMPRUN_ROOTFSCFG=/json.cfg", config=inputs["pretty"])


@pytest.mark.slow
def test_boot_longest_command_line(inputs, tmp_path, monkeypatch):
    """2047 bytes of KERNEL + APPEND boot; one more is refused by rumpfs, and
    by ISOLINUX too (which stops at its prompt) when rumpfs's check is lifted."""
    from rumpfs.bundle.build import bundle
    arg = "a" * (loader.ISOLINUX_CMDLINE_MAX - len("mboot.c32 /kernel "))
    run_rumpfs("bundle", inputs["kernel"], "--cmdline", arg, "-o", tmp_path / "ok.iso")
    booted = testkernel.boot("-cdrom", str(tmp_path / "ok.iso"))
    assert booted.report.cmdline == b"/kernel " + arg.encode()
    monkeypatch.setattr(loader, "ISOLINUX_CMDLINE_MAX", 4096)
    bundle(str(inputs["kernel"]), str(tmp_path / "long.iso"), cmdline=arg + "a")
    booted = testkernel.boot("-cdrom", str(tmp_path / "long.iso"))
    assert b"cmdline too long" in booted.serial and testkernel.END not in booted.serial


@pytest.mark.slow
def test_boot_disk_formats(inputs, built, tmp_path):
    assert_boots(inputs, ["-drive", f"file={built / 'b.img'},format=raw,snapshot=on"])
    assert_boots(inputs, ["-drive", f"file={built / 'b.vhd'},format=vpc,snapshot=on"])
    stripped = tmp_path / "stripped.raw"
    stripped.write_bytes((built / "b.vhd").read_bytes()[:-512])
    assert_boots(inputs, ["-drive", f"file={stripped},format=raw"])
    subprocess.run(["tar", "-xzf", str(built / "b.tar.gz"), "-C", str(tmp_path)], check=True)
    assert_boots(inputs, ["-drive", f"file={tmp_path / 'disk.raw'},format=raw"])


# --- a truncated bundle, booted --------------------------------------------------------
#
# Where the cut falls decides what the loaders say (docs/bundle.md, "A truncated
# bundle"); the verdict comes from what COM1 and the screen (SeaBIOS's mirror of
# it) show, never from a timeout.  A cut inside isolinux.bin past its first 2 KiB
# or inside ldlinux.c32 hangs without a word (isolinux.bin retries its INT 13h
# read for ever): not booted here.

#: Truncation point -> the block to cut at, from the extents xorriso reports
#: (path -> (first block, blocks)) and the El Torito catalog's block.
def _middle(extent):
    return extent[0] + extent[1] // 2


CUTS = {
    "catalog": lambda ext, catalog: catalog,
    "kernel": lambda ext, catalog: ext["/KERNEL"][0] + 1,
    "root module": lambda ext, catalog: _middle(ext["/ROOT.IMG"]),
    "libcom32.c32": lambda ext, catalog: _middle(ext["/ISOLINUX/LIBCOM32.C32"]),
    "mboot.c32": lambda ext, catalog: _middle(ext["/ISOLINUX/MBOOT.C32"]),
}
MEDIA = {"cd": lambda path: ["-cdrom", str(path)],
         "disk": lambda path: ["-drive", f"file={path},format=raw,snapshot=on"]}


def _cut_bundle(built, tmp_path, point):
    iso = built / "b.iso"
    ext = file_extents(iso)
    catalog = int(el_torito(iso)["El Torito catalog"][0].split()[0])
    block = CUTS[point](ext, catalog)
    return truncated_copy(iso, tmp_path / "cut.iso", block * 2048), block, ext


@pytest.mark.slow
@pytest.mark.parametrize("medium", sorted(MEDIA))
@pytest.mark.parametrize("point", list(CUTS))
def test_boot_truncated_bundle_fails_on_the_console(built, tmp_path, point, medium):
    cut, block, ext = _cut_bundle(built, tmp_path, point)
    booted = testkernel.boot(*MEDIA[medium](cut))
    screen = booted.screen_text
    assert testkernel.BEGIN not in booted.serial, booted.serial[-2000:]
    # ISOLINUX reads ldlinux.c32 (then mboot.c32 and libcom32.c32) after the
    # payload: a cut in the payload loses them too.
    assert ext["/KERNEL"][0] < ext["/ROOT.IMG"][0] < ext["/ISOLINUX/LDLINUX.C32"][0] < \
        ext["/ISOLINUX/LIBCOM32.C32"][0] < ext["/ISOLINUX/MBOOT.C32"][0]
    if point == "catalog":
        # SeaBIOS cannot read the catalog (CD), isohdpfx.bin's code cannot
        # read isolinux.bin (disk); then there is nothing else to boot.
        cd = medium == "cd"
        gone = b"Boot failed: Could not read from CDROM" if cd else b"Operating system load error."
        assert gone in screen and b"No bootable device" in screen, screen[-2000:]
    elif point in ("kernel", "root module"):
        # isolinux.bin finds ldlinux.c32 wholly past the end, before any config.
        assert b"Failed to load ldlinux.c32" in screen and b"Boot failed: press a key to retry" in screen, \
            screen[-2000:]
    else:
        # ldlinux.c32 runs, with the config's SERIAL: it says on COM1 which
        # sector it cannot read (in 2 KiB blocks as a CD, 512-byte sectors as a
        # disk): the first of mboot.c32 (loaded before libcom32.c32, which it
        # needs), or the first one cut off.
        found = testkernel.LOADER_READ_ERROR.search(booted.serial)
        assert found, booted.serial[-2000:]
        sector = int(found.group().split(b"reading sector ")[1].split()[0])
        first = ext["/ISOLINUX/MBOOT.C32"][0] if point == "libcom32.c32" else block
        assert sector == first * (1 if medium == "cd" else 4), found.group()


@pytest.mark.slow
def test_boot_truncated_padding_still_boots(inputs, built, tmp_path):
    """Cut after the ISO volume (inside the MBR partition's padding): every
    sector the loaders read is there and the bundle boots; only check and info
    see the damage (test_truncated_bundle_is_reported_by_check_and_info)."""
    iso = built / "b.iso"
    cut = truncated_copy(iso, tmp_path / "cut.iso", volume_bytes(iso) + 2048)
    assert_boots(inputs, ["-cdrom", str(cut)])
    assert_boots(inputs, ["-drive", f"file={cut},format=raw,snapshot=on"])
    assert run_rumpfs("check", cut, check=False).returncode == 1


@pytest.mark.slow
def test_boot_uefi_truncated_bundle_stops_at_grubs_prompt(inputs, tmp_path, grub_cache):
    """Under OVMF a --uefi bundle cut inside the root module has lost
    /grub/bundle.cfg too (its directory comes after the root directory's
    files): GRUB's search for it fails and GRUB waits at its prompt, on COM1."""
    assert OVMF.exists(), f"{OVMF}: missing; install the Debian package ovmf"
    iso = tmp_path / "u.iso"
    make_uefi(inputs, iso, grub_cache)
    ext = file_extents(iso)
    assert ext["/ROOT.IMG"][0] < ext["/GRUB/BUNDLE.CFG"][0]
    cut = truncated_copy(iso, tmp_path / "cut.iso", _middle(ext["/ROOT.IMG"]) * 2048)
    for medium in ("-cdrom", str(cut)), ("-drive", f"file={cut},format=raw,snapshot=on"):
        booted = testkernel.boot(*medium, extra=["-bios", str(OVMF), "-m", "128"])
        serial = testkernel.screen_text(booted.serial)
        assert b"Welcome to GRUB!" in serial and serial.rstrip().endswith(b"grub>"), serial[-2000:]
        assert testkernel.BEGIN not in serial



# --- a Linux bzImage bundle: Debian's kernel, our cpio as its initrd ----------------

@pytest.mark.slow
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_boot_linux_bundle(tmp_path, make_fixture_tree, grub_cache, firmware):
    """ISOLINUX (BIOS) or GRUB (--uefi, OVMF) boots Debian's kernel with our
    cpio (behind the kernel harness's helper archive) as initrd; the guest's
    listing of its initramfs is compared with the source tree entry by entry."""
    import treecompare
    from kernel import harness
    try:
        linux = harness.Kernel.chosen()
    except harness.KernelMissing as e:
        pytest.fail(str(e))
    src = tmp_path / "src"
    make_fixture_tree(src)
    archive = tmp_path / "root.cpio"
    run_rumpfs("pack", "--no-stubetc", "--keep-owner", "--no-progress", src, "-o", archive)
    helper = harness.build_helper(tmp_path / "helper.cpio", linux, "list_initramfs initramfs")
    initrd = harness.initrd_with(tmp_path / "initrd", helper, archive)
    iso = tmp_path / "linux.iso"
    uefi = ["--uefi"] if firmware == "uefi" else []
    r = run_rumpfs("bundle", linux.image, "--root", initrd, "--cmdline", harness.KERNEL_CMDLINE,
                   "-o", iso, "-v", *uefi, env=grub_cache)
    assert "Linux bzImage (boot protocol 2." in r.out
    tree = extract(iso, tmp_path / "x")
    cfg = (tree / "ISOLINUX" / "ISOLINUX.CFG").read_text()
    assert f"  KERNEL /vmlinuz\n  APPEND initrd=/initrd.img {harness.KERNEL_CMDLINE}\n" in cfg
    if uefi:
        words = " ".join(f"'{w}'" for w in harness.KERNEL_CMDLINE.split())
        assert (tree / "GRUB" / "BUNDLE.CFG").read_text() == (
            f"set timeout=0\nlinux /vmlinuz {words}\ninitrd /initrd.img\nboot\n")
        assert OVMF.exists(), f"{OVMF}: missing; install the Debian package ovmf"
    firmware_args = ["-bios", str(OVMF)] if uefi else []
    console, results = tmp_path / "console.log", tmp_path / "results.log"
    proc = subprocess.run([testkernel.QEMU, "-accel", "tcg", "-cpu", "max", "-m", "768", "-display", "none",
                           "-no-reboot", "-nic", "none", "-cdrom", str(iso), *firmware_args,
                           "-serial", f"file:{console}", "-serial", f"file:{results}"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=harness.DEFAULT_TIMEOUT)
    boot = harness.Boot(console.read_text(errors="replace"), harness.parse_sections(results.read_bytes()),
                        tmp_path, 0.0, proc.returncode)
    boot.assert_clean()
    expected = treecompare.scan_host(src)
    harness.compare(expected, harness.initramfs_view(boot.listing("initramfs"), expected),
                    what="initramfs from the bundle")


# --- --uefi: an El Torito EFI entry and an EFI system partition with GRUB -------------

OVMF = Path("/usr/share/ovmf/OVMF.fd")  # Debian package ovmf


@pytest.fixture(scope="session")
def grub_cache(tmp_path_factory):
    """A cache of the GRUB EFI image of its own: grub-mkstandalone runs once per session."""
    return {"XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}


def make_uefi(inputs, out, grub_cache, *extra):
    return make(inputs, out, "--uefi", *extra, env=grub_cache)


def test_uefi_catalog_partition_and_esp(inputs, tmp_path, grub_cache):
    iso = tmp_path / "u.iso"
    r = make_uefi(inputs, iso, grub_cache, "--cmdline", "x=1", "-v")
    assert r.out.startswith(f"{iso}: iso (BIOS and UEFI), Multiboot 1 kernel")
    et = el_torito(iso)
    assert et["El Torito img path"] == ["1  /ISOLINUX/ISOLINUX.BIN", "2  /EFIBOOT.IMG"]
    bios, efi = (line.split() for line in et["El Torito boot img"])
    assert bios[1] == "BIOS" and efi[1:4] == ["UEFI", "y", "none"]
    tree = extract(iso, tmp_path / "x")
    esp = tree / "EFIBOOT.IMG"
    # The MBR lists the ESP as partition 2 (type 0xEF) where the catalog says it is.
    parts = json.loads(subprocess.run(["sfdisk", "--json", str(iso)], capture_output=True, check=True,
                                      text=True).stdout)["partitiontable"]["partitions"]
    assert parts[1] == {"node": f"{iso}2", "start": int(efi[7]) * 4, "size": -(-esp.stat().st_size // SECTOR),
                        "type": "ef"}
    assert iso.read_bytes()[int(efi[7]) * 2048:][:esp.stat().st_size] == esp.read_bytes()
    # fsck.fat finds nothing to fix; mtools reads GRUB back byte for byte.
    fsck = subprocess.run(["fsck.fat", "-n", "-v", str(esp)], capture_output=True, text=True)
    assert fsck.returncode == 0 and "2 FATs, 16 bit entries" in fsck.stdout, fsck.stdout + fsck.stderr
    assert int(fsck.stdout.split(" data clusters")[0].split()[-1]) >= 4085  # FAT16 by its cluster count
    assert "Auto-" not in fsck.stdout and "Fix" not in fsck.stdout
    grub_image = next(Path(grub_cache["XDG_CACHE_HOME"]).rglob("bootx64-*.efi"))
    got = subprocess.run(["mcopy", "-n", "-i", str(esp), "::/EFI/BOOT/BOOTX64.EFI", "-"],
                         capture_output=True, check=True).stdout
    assert got == grub_image.read_bytes() and got[:2] == b"MZ"
    cfg = (tree / "GRUB" / "BUNDLE.CFG").read_text()
    assert cfg == ("set timeout=0\nmultiboot /kernel '/kernel' 'x=1'\n"
                   "module --nounzip /root.img '/root.img'\n"
                   "module --nounzip /mod1 '/mod1' 'data' 'x'\n"
                   "module --nounzip /mod2 '/mod2'\nboot\n")
    make_uefi(inputs, tmp_path / "v.iso", grub_cache, "--cmdline", "x=1")
    assert (tmp_path / "v.iso").read_bytes() == iso.read_bytes()


def test_uefi_config_goes_to_a_file_and_quotes_are_refused(inputs, tmp_path, grub_cache):
    r = make_uefi(inputs, tmp_path / "u.iso", grub_cache, "--config", inputs["compact"], "-v")
    assert r.out.splitlines()[1].endswith("named by _RUMPRUN_ROOTFSCFG=/json.cfg "
                                          "(GRUB (--uefi) would escape its quotes)")
    out = tmp_path / "q.iso"
    _fails(["--uefi", inputs["kernel"], "--cmdline", 'a="b"', "-o", out],
           "--cmdline: 'a=\"b\"' would not arrive intact through GRUB (--uefi): it escapes \"", out,
           env=grub_cache)


def boot_uefi(inputs, drive_args, cmdline=b"/kernel", config=None):
    assert OVMF.exists(), f"{OVMF}: missing; install the Debian package ovmf"
    booted = testkernel.boot(*drive_args, extra=["-bios", str(OVMF), "-m", "128"])
    assert booted.returncode == testkernel.KERNEL_EXIT_STATUS, booted.serial[-2000:]
    assert booted.report == testkernel.expected(cmdline, expected_modules(inputs, config))


@pytest.mark.slow
def test_boot_uefi_as_cdrom_and_as_disk_and_bios_still(inputs, tmp_path, grub_cache):
    iso = tmp_path / "u.iso"
    make_uefi(inputs, iso, grub_cache, "--config", inputs["compact"])
    cmdline = b"/kernel _RUMPRUN_ROOTFSCFG=/json.cfg"
    boot_uefi(inputs, ["-cdrom", str(iso)], cmdline, inputs["compact"])
    boot_uefi(inputs, ["-drive", f"file={iso},format=raw"], cmdline, inputs["compact"])
    assert_boots(inputs, ["-cdrom", str(iso)], cmdline, inputs["compact"])
    assert_boots(inputs, ["-drive", f"file={iso},format=raw"], cmdline, inputs["compact"])
    make_uefi(inputs, tmp_path / "u.vhd", grub_cache, "--config", inputs["compact"])
    boot_uefi(inputs, ["-drive", f"file={tmp_path / 'u.vhd'},format=vpc"], cmdline, inputs["compact"])


def test_uefi_disk_has_a_gpt(inputs, tmp_path, grub_cache):
    """--uefi disks: a protective MBR (keeping the isohybrid code) and a GPT
    whose one partition is the ESP where the El Torito catalog puts it."""
    img = tmp_path / "u.img"
    make_uefi(inputs, img, grub_cache)
    verify = subprocess.run(["sfdisk", "-V", str(img)], capture_output=True, text=True)
    assert verify.returncode == 0 and "No errors detected." in verify.stdout, verify.stdout + verify.stderr
    table = json.loads(subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, check=True,
                                      text=True).stdout)["partitiontable"]
    efi = next(line.split() for line in el_torito(img)["El Torito boot img"] if " UEFI " in line)
    esp_size = (extract(img, tmp_path / "x") / "EFIBOOT.IMG").stat().st_size
    data = img.read_bytes()
    sectors = len(data) // SECTOR
    assert (table["label"], table["firstlba"], table["lastlba"]) == ("gpt", 34, sectors - 34)
    [part] = table["partitions"]
    assert (part["start"], part["size"], part["type"]) == (int(efi[7]) * 4, -(-esp_size // SECTOR),
                                                          "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
    assert data[-SECTOR:][:8] == b"EFI PART"  # the backup header in the last sector
    assert data[:432] == ISOHDPFX.read_bytes()[:432] and data[446 + 4] == 0xEE
    assert len(data) % MIB == 0
    from rumpfs.bundle.inspect import describe
    info = describe(str(img))
    assert (info["partition_table"], info["uefi"]) == ("gpt", True)
    assert info["loader"].endswith("+ GRUB (UEFI)")


@pytest.mark.slow
def test_boot_uefi_gpt_disk(inputs, tmp_path, grub_cache):
    img = tmp_path / "u.img"
    make_uefi(inputs, img, grub_cache, "--cmdline", "x=1")
    boot_uefi(inputs, ["-drive", f"file={img},format=raw"], b"/kernel x=1")
    assert_boots(inputs, ["-drive", f"file={img},format=raw"], b"/kernel x=1")
    # GCE's --uefi import: the disk.raw GNU tar extracts is the same GPT disk.
    make_uefi(inputs, tmp_path / "u.tar.gz", grub_cache, "--cmdline", "x=1")
    subprocess.run(["tar", "-xSzf", str(tmp_path / "u.tar.gz"), "-C", str(tmp_path)], check=True)
    assert (tmp_path / "disk.raw").read_bytes() == img.read_bytes()
    boot_uefi(inputs, ["-drive", f"file={tmp_path / 'disk.raw'},format=raw"], b"/kernel x=1")


@pytest.mark.parametrize("where", ["esp", "iso"])
def test_full_disk_is_one_line(inputs, tmp_path, grub_cache, monkeypatch, where):
    """No space left while the ESP (a scratch file beside the output) or the
    image is written: one line naming the output, nothing left behind."""
    import errno

    from rumpfs.bundle import fat, iso
    from rumpfs.bundle.build import bundle
    from rumpfs.errors import RumpfsError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setenv("XDG_CACHE_HOME", grub_cache["XDG_CACHE_HOME"])
    if where == "esp":
        monkeypatch.setattr(fat, "write_fat16", full)
    else:
        monkeypatch.setattr(iso, "write_hybrid_iso", full)
    out = tmp_path / "o.iso"
    out.write_bytes(b"previous")
    with pytest.raises(RumpfsError) as e:
        bundle(str(inputs["kernel"]), str(out), uefi=True)
    assert str(e.value) == f"{out}: cannot write: No space left on device"
    assert out.read_bytes() == b"previous" and leftovers(tmp_path) == []


def test_missing_grub_package_is_named(inputs, tmp_path, monkeypatch):
    """--uefi without grub-common's grub-mkstandalone, or without
    grub-efi-amd64-bin's modules: one line naming the package, no output."""
    from rumpfs.bundle import grub
    from rumpfs.bundle.build import bundle
    from rumpfs.errors import RumpfsError
    out = tmp_path / "o.iso"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(grub, "MKSTANDALONE", "rumpfs-test-no-grub-mkstandalone")
    with pytest.raises(RumpfsError) as e:
        bundle(str(inputs["kernel"]), str(out), uefi=True)
    assert str(e.value) == ("rumpfs-test-no-grub-mkstandalone: not found; install the Debian package "
                            "grub-common (--uefi makes its GRUB EFI image with it)")
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(grub, "EFI_MODULES_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(RumpfsError) as e:
        bundle(str(inputs["kernel"]), str(out), uefi=True)
    assert str(e.value) == (f"{tmp_path}/nowhere/multiboot.mod: missing; install the Debian package "
                            f"grub-efi-amd64-bin")
    assert not out.exists() and leftovers(tmp_path) == []


def test_sparse_member_with_extension_blocks_read_by_gnu_tar(tmp_path):
    """More data runs than the header's four and an extension block's 21, a
    hole at the start and at the end: GNU tar and bsdtar give the bytes back."""
    import io

    from rumpfs.bundle.gnutar import write_sparse_member
    disk_path = tmp_path / "disk"
    with open(disk_path, "wb") as f:
        f.truncate(8 << 20)
        for i in range(60):
            f.seek((i * 2 + 1) * 65536)
            f.write(bytes([i + 1]) * (4096 * (1 + i % 3)))
    archive = io.BytesIO()
    with open(disk_path, "rb") as f:
        write_sparse_member(archive, "disk.raw", f, 8 << 20, 1_700_000_000)
    tar_path = tmp_path / "d.tar"
    tar_path.write_bytes(archive.getvalue())
    for tool, dest in ((["tar", "-xSf"], tmp_path / "gnu"), (["bsdtar", "-xf"], tmp_path / "bsd")):
        dest.mkdir()
        subprocess.run([*tool, str(tar_path), "-C", str(dest)], check=True)
        assert (dest / "disk.raw").read_bytes() == disk_path.read_bytes(), tool
    listing = subprocess.run(["tar", "-tvf", str(tar_path)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert listing[2] == str(8 << 20)  # the real size, not the stored bytes
    # 60 runs of 4-12 KiB stored, not 8 MiB.
    assert len(archive.getvalue()) < 1 << 20
