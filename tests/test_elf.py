"""The ELF object writer, judged by binutils, llvm, gcc, GNU ld/gold/lld and GNU cpio.

Default suite: every target's header against the object its own cross gcc
writes for an empty C file (when that gcc is installed), readelf/llvm-readelf
clean for every target, host (x86_64) programs linked with ld.bfd, ld.gold
and ld.lld, PIE and not, that find the images through the registry and the
symbols, templates, .S/.c outputs, inspection, streaming and bad input.
The cross matrix that runs programs under qemu-user is in test_elf_cross.py.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
from conftest import leftovers, run_rumpfs
from elf import toolchains as TC

HOST = TC.TOOLCHAINS["x86_64"]
_x86_64_host = pytest.mark.skipif(platform.machine() != "x86_64", reason="the host programs are x86_64 ones")


@pytest.fixture
def host_gcc():
    HOST.require()


def needs_host_gcc(test):
    """x86_64 hosts only; there, a missing gcc is a failure naming its package."""
    return _x86_64_host(pytest.mark.usefixtures("host_gcc")(test))


ALL_TARGETS = ["x86_64", "i386", "aarch64", "aarch64_be", "arm", "riscv64", "riscv32",
               "ppc64le", "ppc64", "ppc", "mips", "mipsel", "mips64el", "mips64", "s390x",
               "sparc64", "loongarch64"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two raw images with bytes no writer computed: random data of odd sizes."""
    d = tmp_path_factory.mktemp("images")
    one, two = d / "one.img", d / "two.img"
    one.write_bytes(os.urandom(10007))
    two.write_bytes(os.urandom(3333))
    return one, two


def wrap(image, out, *args, check=True):
    return run_rumpfs("wrap", image, "-o", out, *args, check=check)


def symbols(obj) -> dict:
    """name -> (value, size, type, bind, vis, ndx-name) from readelf -s -W."""
    secs = sections(obj)
    by_index = {s["nr"]: name for name, s in secs.items()}
    out = TC.run(["readelf", "-s", "-W", obj]).stdout
    syms = {}
    for line in out.splitlines():
        m = re.match(r"\s*\d+:\s+([0-9a-f]+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(\w+)\s+(\w+)\s+(\S+)$", line)
        if m:
            ndx = m.group(6)
            syms[m.group(7)] = (int(m.group(1), 16), int(m.group(2)), m.group(3), m.group(4),
                                m.group(5), by_index.get(int(ndx), ndx) if ndx.isdigit() else ndx)
    return syms


def sections(obj) -> dict:
    """name -> dict(nr, type, offset, size, flags, align) from readelf -S -W."""
    out = TC.run(["readelf", "-S", "-W", obj]).stdout
    secs = {}
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)"
                     r"\s+[0-9a-f]+\s+([A-Z]*)\s+\d+\s+\d+\s+(\d+)", line)
        if m:
            secs[m.group(2)] = dict(nr=int(m.group(1)), type=m.group(3),
                                    offset=int(m.group(4), 16), size=int(m.group(5), 16),
                                    flags=m.group(6), align=int(m.group(7)))
    return secs


def objcopy_section(obj, section, out) -> bytes:
    TC.run(["objcopy", "-O", "binary", "--only-section", section, obj, out])
    return out.read_bytes()


def section_bytes(obj, section) -> bytes:
    """A section's bytes where readelf says they are (objcopy lacks some targets)."""
    s = sections(obj)[section]
    with open(obj, "rb") as f:
        f.seek(s["offset"])
        return f.read(s["size"])


# -- headers: every target against its own gcc --------------------------------------

@pytest.mark.parametrize("key", list(TC.TOOLCHAINS))
def test_header_matches_the_target_gcc(key, images, tmp_path):
    tc = TC.TOOLCHAINS[key]
    tc.require()
    empty = tmp_path / "empty.c"
    empty.write_text("")
    TC.run([tc.gcc, *tc.cflags, "-c", empty, "-o", tmp_path / "gcc.o"])
    wrap(images[0], tmp_path / "ours.o", "--target", tc.target, *tc.rumpfs_args)
    ours, theirs = TC.readelf_header(tmp_path / "ours.o"), TC.readelf_header(tmp_path / "gcc.o")
    assert ours == theirs
    assert ours["Type"].startswith("REL")


#: A record of the registry as C code declares it: the target's gcc says what
#: section alignment and flags the linker must see (an image pointer needs a
#: relocation, so the section is writable for the dynamic linker), and, as
#: the sizes of two symbols, the record's _Alignof and sizeof.
REGISTRY_PROBE_C = """\
#include "rumpfs_images.h"
extern const char image[];
const char rumpfs_image_alignof[_Alignof(struct rumpfs_image)] = { 1 };
const char rumpfs_image_sizeof[sizeof(struct rumpfs_image)] = { 1 };
const struct rumpfs_image rec __attribute__((section("rumpfs_images"), used)) = {
\t.ri_magic = RUMPFS_IMAGE_MAGIC, .ri_image = { .ri_ptr = (void *)image } };
"""


@pytest.mark.parametrize("key", list(TC.TOOLCHAINS))
def test_registry_section_as_the_target_gcc_lays_out_the_record(key, images, tmp_path):
    """readelf -SW of our registry section against what the target's gcc makes
    of struct rumpfs_image (rumpfs/data/rumpfs_images.h): aligned to at least
    the record's _Alignof (a lesser one is a bus error on strict-alignment
    targets), the same flags, whole records."""
    tc = TC.TOOLCHAINS[key]
    tc.require()
    probe = tmp_path / "probe.c"
    probe.write_text(REGISTRY_PROBE_C)
    TC.run([tc.gcc, *tc.cflags, "-ffreestanding", "-fPIC", "-I", TC.HEADER_DIR, "-c", probe,
            "-o", tmp_path / "gcc.o"])
    theirs = sections(tmp_path / "gcc.o")["rumpfs_images"]
    syms = symbols(tmp_path / "gcc.o")
    alignof, sizeof = syms["rumpfs_image_alignof"][1], syms["rumpfs_image_sizeof"][1]
    wrap(images[0], tmp_path / "ours.o", "--target", tc.target, *tc.rumpfs_args)
    ours = sections(tmp_path / "ours.o")["rumpfs_images"]
    assert ours["align"] >= alignof and ours["align"] % alignof == 0, (ours, alignof)
    assert ours["flags"] == theirs["flags"] == "WA"
    assert ours["type"] == theirs["type"] == "PROGBITS"
    assert ours["size"] == sizeof == theirs["size"]
    assert ours["offset"] % ours["align"] == 0


def test_registry_section_on_loongarch64(images, tmp_path):
    """No loongarch gcc in Debian 12: the LP64 psABI aligns uint64_t, and so
    the record, to 8 bytes; readelf must see at least that."""
    wrap(images[0], tmp_path / "ours.o", "--target", "loongarch64")
    ours = sections(tmp_path / "ours.o")["rumpfs_images"]
    assert ours["align"] >= 8 and ours["align"] % 8 == 0
    assert ours["flags"] == "WA" and ours["size"] == 128


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_readelf_reads_every_target_without_warnings(target, images, tmp_path):
    obj = tmp_path / f"{target}.o"
    wrap(images[0], obj, "--target", target)
    assert TC.readelf_clean(obj) == ""
    secs = sections(obj)
    assert list(secs) == [".rodata.rumpfs.root", ".rodata.rumpfs.root.size",
                              "rumpfs_images",
                              ".rel.rumpfs_images" if target in ("i386", "arm", "mips", "mipsel")
                              else ".rela.rumpfs_images",
                              ".note.GNU-stack", ".symtab", ".strtab", ".shstrtab"]
    assert secs[".note.GNU-stack"]["size"] == 0 and secs[".note.GNU-stack"]["flags"] == ""
    assert secs[".rodata.rumpfs.root"]["align"] == 4096
    assert secs[".rodata.rumpfs.root"]["offset"] % 4096 == 0
    # The image bytes are in the section, as objcopy extracts them.
    assert section_bytes(obj, ".rodata.rumpfs.root") == images[0].read_bytes()
    relocs = TC.run(["readelf", "-r", "-W", obj]).stdout
    expected = {"x86_64": "R_X86_64_64", "i386": "R_386_32", "aarch64": "R_AARCH64_ABS64",
                "aarch64_be": "R_AARCH64_ABS64", "arm": "R_ARM_ABS32", "riscv64": "R_RISCV_64",
                "riscv32": "R_RISCV_32", "ppc64le": "R_PPC64_ADDR64", "ppc64": "R_PPC64_ADDR64",
                "ppc": "R_PPC_ADDR32", "mips": "R_MIPS_32", "mipsel": "R_MIPS_32",
                "mips64el": "R_MIPS_64", "mips64": "R_MIPS_64", "s390x": "R_390_64",
                "sparc64": "R_SPARC_64", "loongarch64": "R_LARCH_64"}[target]
    assert re.search(rf"\b0+18\s+\S+\s+{expected}\s", relocs), relocs


def test_loongarch_header_as_documented(images, tmp_path):
    """No loongarch gcc in Debian 12: readelf decodes the psABI flags we write."""
    obj = tmp_path / "la.o"
    wrap(images[0], obj, "--target", "loongarch64")
    h = TC.readelf_header(obj)
    assert h["Class"] == "ELF64" and "little endian" in h["Data"]
    assert h["Machine"] == "LoongArch"
    assert h["Flags"] == "0x43, DOUBLE-FLOAT, OBJ-v1"


def test_float_abi_flags(images, tmp_path):
    for target, abi, flags in [("riscv64", "soft", "0x1, RVC, soft-float ABI"),
                               ("riscv32", "single", "0x3, RVC, single-float ABI"),
                               ("loongarch64", "soft", "0x41, SOFT-FLOAT, OBJ-v1")]:
        obj = tmp_path / f"{target}-{abi}.o"
        wrap(images[0], obj, "--target", target, "--float-abi", abi)
        assert TC.readelf_header(obj)["Flags"] == flags


# -- host programs: registry and symbols, byte-exact ------------------------------------

@needs_host_gcc
@pytest.mark.parametrize("linker", ["bfd", "gold", "lld"])
@pytest.mark.parametrize("pie", [True, False], ids=["pie", "nopie"])
def test_host_program_finds_two_components(linker, pie, images, tmp_path):
    TC.require_linker(linker)
    one, two = images
    wrap(one, tmp_path / "one.o", "--name", "one")
    wrap(two, tmp_path / "two.o", "--name", "two", "--mount-point", "/data", "--writable")
    exe = tmp_path / "walk"
    warnings = TC.link_walker(HOST, [tmp_path / "one.o", tmp_path / "two.o"], exe,
                              linker=linker, pie=pie, comps=("one", "two"))
    assert warnings == ""
    got = TC.run_walker(HOST, exe)
    assert got["count"] == 2
    assert got["records"]["one"][1] == one.read_bytes()
    assert got["records"]["two"][1] == two.read_bytes()
    assert got["records"]["one"][0] == dict(format="0", flags="0", mount="/", version="1",
                                            size=str(one.stat().st_size))
    assert got["records"]["two"][0]["mount"] == "/data"
    assert got["records"]["two"][0]["flags"] == "1"  # RUMPFS_IMG_WRITABLE
    for name, path in (("one", one), ("two", two)):
        fields, data = got["symbols"][name]
        assert data == path.read_bytes()
        assert fields == dict(size=str(path.stat().st_size), span=str(path.stat().st_size))


@needs_host_gcc
def test_pack_cpio_object_links_and_gnu_cpio_reads_it(fixture_tree, tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    run_rumpfs("pack", fixture_tree, "-o", tmp_path / "root.o", "--image-format", "cpio",
               "--mount-point", "/", env=env)
    run_rumpfs("pack", fixture_tree, "-o", tmp_path / "root.cpio", env=env)
    bare = (tmp_path / "root.cpio").read_bytes()
    exe = tmp_path / "walk"
    assert TC.link_walker(HOST, [tmp_path / "root.o"], exe, comps=("root",)) == ""
    got = TC.run_walker(HOST, exe)
    assert got["records"]["root"][1] == bare
    assert got["records"]["root"][0]["format"] == "3"  # RUMPFS_FMT_CPIO
    # GNU cpio lists the image objcopy takes out of the object.
    img = objcopy_section(tmp_path / "root.o", ".rodata.rumpfs.root", tmp_path / "x.cpio")
    assert img == bare
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=img, capture_output=True)
    assert listing.returncode == 0
    assert b"etc/passwd" in listing.stdout
    # rumpfs ls finds the same image through the registry.
    ls = run_rumpfs("ls", "--json", tmp_path / "root.o").out.splitlines()
    assert {json.loads(x)["path"] for x in ls} >= {"/etc/passwd"}


@needs_host_gcc
def test_gc_sections_keeps_the_registry(images, tmp_path):
    wrap(images[0], tmp_path / "one.o", "--name", "one")
    exe = tmp_path / "walk"
    TC.run(["gcc", "-I", TC.HEADER_DIR, "-ffunction-sections", "-fdata-sections",
            "-Wl,--gc-sections", "-Wl,--fatal-warnings", TC.WALK_C, tmp_path / "one.o", "-o", exe])
    assert TC.run_walker(HOST, exe)["records"]["one"][1] == images[0].read_bytes()


# -- templates -----------------------------------------------------------------------

def test_template_rumpfs_writable(images, tmp_path):
    obj = tmp_path / "w.o"
    wrap(images[0], obj, "--name", "www", "--writable")
    secs = sections(obj)
    assert secs[".data.rumpfs.www"]["flags"] == "WA"
    syms = symbols(obj)
    size = images[0].stat().st_size
    assert syms["rumpfs_www_start"] == (0, size, "OBJECT", "GLOBAL", "DEFAULT", ".data.rumpfs.www")
    assert syms["rumpfs_www_end"][0] == size
    assert syms["rumpfs_www_size"][1:] == (8, "OBJECT", "GLOBAL", "DEFAULT",
                                           ".rodata.rumpfs.www.size")


def test_template_objcopy(images, tmp_path):
    obj = tmp_path / "o.o"
    wrap(images[0], obj, "--template", "objcopy", "--name", "rootfs")
    syms = symbols(obj)
    assert {"_binary_rootfs_start", "_binary_rootfs_end", "_binary_rootfs_size"} <= set(syms)
    # The size is a data object (PIE-safe), not an absolute symbol.
    assert syms["_binary_rootfs_size"][5] == ".rodata.rootfs.size"


@pytest.mark.parametrize("target,word", [("x86_64", 8), ("i386", 4), ("ppc", 4), ("s390x", 8)])
def test_template_linux_initramfs(target, word, images, tmp_path):
    obj = tmp_path / "i.o"
    wrap(images[0], obj, "--template", "linux-initramfs", "--target", target)
    secs = sections(obj)
    assert secs[".init.ramfs"]["flags"] == "A" and secs[".init.ramfs"]["align"] == 4
    assert secs[".init.ramfs.info"]["size"] == word
    assert "rumpfs_images" not in secs  # Linux warns about orphan sections
    syms = symbols(obj)
    assert syms["__initramfs_start"][5] == ".init.ramfs"
    assert syms["__initramfs_size"][5] == ".init.ramfs.info"
    info = objcopy_section(obj, ".init.ramfs.info", tmp_path / "info")
    order = "big" if target in ("ppc", "s390x") else "little"
    assert int.from_bytes(info, order) == images[0].stat().st_size


def test_template_unikraft_einitrd(images, tmp_path):
    obj = tmp_path / "u.o"
    wrap(images[0], obj, "--template", "unikraft-einitrd")
    secs = sections(obj)
    assert secs[".rodata"]["align"] == 16
    size = images[0].stat().st_size
    assert objcopy_section(obj, ".rodata", tmp_path / "r") == images[0].read_bytes() + b"\0"
    syms = symbols(obj)
    assert syms["vfscore_einitrd_start"][0] == 0
    assert syms["vfscore_einitrd_end"][0] == size


def test_template_freebsd_mfs(images, tmp_path):
    obj = tmp_path / "f.o"
    wrap(images[0], obj, "--template", "freebsd-mfs", "--target", "aarch64")
    secs = sections(obj)
    assert secs["mfs"]["flags"] == "A"
    syms = symbols(obj)
    assert {"mfs_root", "mfs_root_end", "__mfs_root_size"} <= set(syms)
    assert syms["mfs_root_end"][0] - syms["mfs_root"][0] == images[0].stat().st_size


@needs_host_gcc
def test_user_template_toml(images, tmp_path):
    toml = tmp_path / "kern.toml"
    toml.write_text('[template]\nsection = ".rodata.kern.{name}"\n'
                    'writable_section = ".data.kern.{name}"\nalign = 512\n'
                    'start = "kern_{name}_begin"\nend = "kern_{name}_finish"\n'
                    'size = "kern_{name}_len"\nvisibility = "hidden"\ntrailer = [0, 0]\n')
    obj = tmp_path / "k.o"
    wrap(images[0], obj, "--template", toml, "--name", "boot")
    secs = sections(obj)
    assert secs[".rodata.kern.boot"]["align"] == 512
    syms = symbols(obj)
    assert syms["kern_boot_begin"][4] == "HIDDEN"
    # The size sits after the image and its trailer, word-aligned, in the same section.
    assert syms["kern_boot_len"][5] == ".rodata.kern.boot"
    main = tmp_path / "main.c"
    main.write_text('#include <stdio.h>\nextern const unsigned char kern_boot_begin[], '
                    'kern_boot_finish[];\nextern const unsigned long kern_boot_len;\n'
                    'int main(void) { fwrite(kern_boot_begin, 1, kern_boot_len, stdout);\n'
                    'return kern_boot_finish - kern_boot_begin != (long)kern_boot_len; }\n')
    TC.run(["gcc", "-Wl,--fatal-warnings", main, obj, "-o", tmp_path / "m"])
    out = subprocess.run([tmp_path / "m"], capture_output=True)
    assert out.returncode == 0 and out.stdout == images[0].read_bytes()


# -- .S and .c outputs ----------------------------------------------------------------

@needs_host_gcc
def test_asm_and_c_outputs_link_to_the_same_bytes(images, tmp_path):
    one, two = images
    wrap(one, tmp_path / "one.S", "--name", "one")
    wrap(two, tmp_path / "two.c", "--name", "two")
    assert (tmp_path / "one.S.img").read_bytes() == one.read_bytes()
    exe = tmp_path / "walk"
    assert TC.link_walker(HOST, [], exe, comps=("one", "two"),
                          sources=[tmp_path / "one.S", tmp_path / "two.c"]) == ""
    got = TC.run_walker(HOST, exe)
    assert got["records"]["one"][1] == one.read_bytes()
    assert got["records"]["two"][1] == two.read_bytes()
    assert got["symbols"]["two"][1] == two.read_bytes()
    # The assembled .S has the symbols and sections of the object rumpfs writes.
    TC.run(["gcc", "-c", tmp_path / "one.S", "-o", tmp_path / "as.o"], cwd=tmp_path)
    wrap(one, tmp_path / "ours.o", "--name", "one")
    sa, so = symbols(tmp_path / "as.o"), symbols(tmp_path / "ours.o")
    for name in ("rumpfs_one_start", "rumpfs_one_end", "rumpfs_one_size"):
        assert sa[name] == so[name]
    assert (objcopy_section(tmp_path / "as.o", "rumpfs_images", tmp_path / "a")
            == objcopy_section(tmp_path / "ours.o", "rumpfs_images", tmp_path / "b"))


def test_c_output_warns_when_large(tmp_path):
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate((16 << 20) + 1)
    res = wrap(big, tmp_path / "big.c", "--name", "big")
    assert "compiles slowly (above 16 MiB)" in res.err


# -- inspection ------------------------------------------------------------------------

def test_info_describes_target_sections_symbols_descriptors(images, tmp_path):
    obj = tmp_path / "m.o"
    wrap(images[0], obj, "--target", "mips", "--name", "etc", "--mount-point", "/etc")
    info = json.loads(run_rumpfs("info", "--json", obj).out)
    c = info["container"]
    assert c["target"]["name"] == "mips" and c["target"]["byteorder"] == "big"
    assert [d["name"] for d in c["descriptors"]] == ["etc"]
    assert c["descriptors"][0]["mount_point"] == "/etc"
    assert c["descriptors"][0]["offset"] == sections(obj)[".rodata.rumpfs.etc"]["offset"]
    assert {"rumpfs_etc_start", "rumpfs_etc_end", "rumpfs_etc_size"} <= {
        s["name"] for s in c["symbols"]}
    text = run_rumpfs("info", obj).out
    assert "rumpfs_images" in text and "mips" in text


def test_reader_finds_an_objcopy_object(images, tmp_path):
    """An object made by objcopy -I binary (no registry) is found by its symbols."""
    src = tmp_path / "blob"
    shutil.copy(images[1], src)
    TC.run(["objcopy", "-I", "binary", "-O", "elf64-x86-64", "-B", "i386:x86-64",
            "blob", "blob.o"], cwd=tmp_path)
    info = json.loads(run_rumpfs("info", "--json", tmp_path / "blob.o").out)
    im = info["container"]["images"][0]
    assert im["found_by"].startswith("symbols") and im["size"] == images[1].stat().st_size
    with open(tmp_path / "blob.o", "rb") as f:
        f.seek(im["offset"])
        assert f.read(im["size"]) == images[1].read_bytes()


def test_same_input_same_bytes(images, tmp_path):
    for name in ("a.o", "b.o"):
        wrap(images[0], tmp_path / name, "--target", "riscv64", "--name", "x")
    assert (tmp_path / "a.o").read_bytes() == (tmp_path / "b.o").read_bytes()


# -- --like ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["aarch64", "mips64el", "arm", "ppc64"])
def test_like_copies_the_header_of_a_cross_object(key, images, tmp_path):
    tc = TC.TOOLCHAINS[key]
    tc.require()
    (tmp_path / "k.c").write_text("int kernel_thing = 1;\n")
    TC.run([tc.gcc, *tc.cflags, "-c", tmp_path / "k.c", "-o", tmp_path / "k.o"])
    wrap(images[0], tmp_path / "like.o", "--like", tmp_path / "k.o")
    assert TC.readelf_header(tmp_path / "like.o") == TC.readelf_header(tmp_path / "k.o")
    assert TC.readelf_clean(tmp_path / "like.o") == ""


# -- streaming --------------------------------------------------------------------------

def test_writer_streams_a_large_image(tmp_path):
    """A 512 MiB image goes through with a small resident set (never held in memory)."""
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(512 << 20)
        f.seek(100 << 20)
        f.write(b"marker")
    # VmHWM is this process's peak RSS (ru_maxrss would include the forking parent's).
    code = ("import re, sys; from rumpfs.elf import wrap; "
            "wrap(sys.argv[1], sys.argv[2]); "
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    proc = subprocess.run([sys.executable, "-c", code, big, tmp_path / "big.o"],
                          env=TC.rumpfs_env(), capture_output=True, text=True, check=True)
    assert int(proc.stdout) < 120 * 1024, f"max RSS {proc.stdout} KiB"
    secs = sections(tmp_path / "big.o")
    assert secs[".rodata.rumpfs.root"]["size"] == 512 << 20
    with open(tmp_path / "big.o", "rb") as f:
        f.seek(secs[".rodata.rumpfs.root"]["offset"] + (100 << 20))
        assert f.read(6) == b"marker"


# -- bad input: one clear line, no output ------------------------------------------------

def _fails(tmp_path, args, message, out="x.o"):
    res = run_rumpfs(*args, "-o", tmp_path / out, check=False)
    assert res.returncode == 1, res
    assert res.err == f"rumpfs: error: {message}\n"
    assert not (tmp_path / out).exists()
    assert not os.path.exists(tmp_path / (out + ".img"))
    assert leftovers(tmp_path) == []


def test_error_unknown_target(images, tmp_path):
    _fails(tmp_path, ["wrap", images[0], "--target", "vax"],
           "unknown target 'vax' (known: x86_64, i386, aarch64, aarch64_be, arm, riscv64, "
           "riscv32, ppc64le, ppc64, ppc, mips, mipsel, mips64el, mips64, s390x, sparc64, "
           "loongarch64)")


def test_error_unknown_target_in_pack(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _fails(tmp_path, ["pack", src, "--image-format", "cpio", "--target", "pdp11"],
           "unknown target 'pdp11' (known: x86_64, i386, aarch64, aarch64_be, arm, riscv64, "
           "riscv32, ppc64le, ppc64, ppc, mips, mipsel, mips64el, mips64, s390x, sparc64, "
           "loongarch64)")


def test_error_float_abi_for_a_target_without_one(images, tmp_path):
    _fails(tmp_path, ["wrap", images[0], "--target", "x86_64", "--float-abi", "hard"],
           "--float-abi hard: target x86_64 has no float ABI choice")


def test_error_missing_image(tmp_path):
    _fails(tmp_path, ["wrap", tmp_path / "nope.img"], f"{tmp_path / 'nope.img'}: no such file")


def test_error_name_not_a_c_identifier(images, tmp_path):
    _fails(tmp_path, ["wrap", images[0], "--name", "1st-image"],
           "--name '1st-image': not a C identifier of at most 31 characters "
           "(letters, digits, _; not starting with a digit)")


def test_error_name_not_a_c_identifier_in_pack(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _fails(tmp_path, ["pack", src, "--image-format", "cpio", "--name", "my.root"],
           "--name 'my.root': not a C identifier of at most 31 characters "
           "(letters, digits, _; not starting with a digit)", out="x.S")


def test_error_writable_without_writable_section(images, tmp_path):
    _fails(tmp_path, ["wrap", images[0], "--template", "linux-initramfs", "--writable"],
           "--writable: template 'linux-initramfs' has no writable section")


def _template(tmp_path, text):
    path = tmp_path / "t.toml"
    path.write_text("[template]\n" + text)
    return path


@pytest.mark.parametrize("text,message", [
    ('start = "a_start"\n', "{p}: template: missing field 'section'"),
    ('section = ".rodata.a"\n', "{p}: template: missing field 'start'"),
    ('section = ".rodata.a"\nstart = "s"\ncolour = "red"\n',
     "{p}: template: unknown field 'colour' (known: align, base, description, end, formats, name, "
     "registry, section, size, size_section, start, trailer, visibility, writable_section)"),
    ('section = ".rodata.a"\nstart = "s"\nalign = "big"\n',
     "{p}: template: field 'align' must be a int"),
    ('section = ".rodata.a"\nstart = "s"\nalign = 100\n',
     "{p}: template: align 100 is not a power of two between 1 and 1073741824"),
    ('section = ".data.a"\nstart = "s"\n',
     "{p}: template: section name '.data.a' contradicts its flags: a read-only section "
     "may not be named .data*"),
    ('section = ".rodata.a"\nwritable_section = ".rodata.b"\nstart = "s"\n',
     "{p}: template: section name '.rodata.b' contradicts its flags: a writable section "
     "may not be named .rodata*"),
    ('section = ".rodata.a"\nstart = "s"\nend = "s"\n',
     "{p}: template: start, end and size symbols must differ (got s, s)"),
    ('section = ".rodata.a"\nstart = "s"\nsize_section = ".rodata.b"\n',
     "{p}: template: size_section '.rodata.b' is given but there is no size symbol"),
    ('section = ".rodata.a"\nstart = "my-start"\n',
     "{p}: template: symbol 'my-start' is not a C identifier"),
    ('section = ".text.image"\nstart = "s"\n',
     "{p}: template: section name '.text.image' is not allowed: it is reserved for code, "
     "the toolchain or the ELF format"),
    ('section = "rumpfs_images"\nstart = "s"\n',
     "{p}: template: section name 'rumpfs_images' is not allowed: it is reserved for code, "
     "the toolchain or the ELF format"),
    ('section = ".rodata a"\nstart = "s"\n',
     "{p}: template: section name '.rodata a' is not allowed: use at most 200 letters, "
     "digits and . _ $ -"),
])
def test_error_bad_template(text, message, images, tmp_path):
    path = _template(tmp_path, text)
    _fails(tmp_path, ["wrap", images[0], "--template", path], message.format(p=path))


def test_error_template_file_missing(images, tmp_path):
    _fails(tmp_path, ["wrap", images[0], "--template", tmp_path / "none.toml"],
           f"--template {tmp_path / 'none.toml'}: no such file")


def test_error_unknown_builtin_template(images, tmp_path):
    _fails(tmp_path, ["wrap", images[0], "--template", "netbsd"],
           "unknown template 'netbsd' (built in: rumpfs, objcopy, linux-initramfs, "
           "unikraft-einitrd, freebsd-mfs; or a .toml file)")


def test_error_mount_point(images, tmp_path):
    _fails(tmp_path, ["wrap", images[0], "--mount-point", "data"],
           "--mount-point 'data': must be an absolute path")
    long = "/" + "x" * 70
    _fails(tmp_path, ["wrap", images[0], "--mount-point", long],
           f"--mount-point {long!r}: longer than 63 bytes")


def test_error_like_not_elf(images, tmp_path):
    _fails(tmp_path, ["wrap", images[0], "--like", images[1]],
           f"--like {images[1]}: not an ELF file")


@needs_host_gcc
def test_c_example_lists_the_images(images, tmp_path):
    example = TC.ROOT / "examples" / "c" / "list_images.c"
    wrap(images[0], tmp_path / "root.o")
    wrap(images[1], tmp_path / "www.o", "--name", "www", "--mount-point", "/var/www",
         "--writable", "--format", "cpio")
    TC.run(["gcc", "-Wall", "-Wextra", "-Werror", "-Wl,--fatal-warnings", "-I", TC.HEADER_DIR,
            example, tmp_path / "root.o", tmp_path / "www.o", "-o", tmp_path / "list"])
    lines = TC.run([tmp_path / "list"]).stdout.splitlines()
    assert len(lines) == 2
    assert re.match(rf"root +raw +{images[0].stat().st_size} bytes at 0x[0-9a-f]+, "
                    r"mount / read-only$", lines[0])
    assert re.match(rf"www +cpio +{images[1].stat().st_size} bytes at 0x[0-9a-f]+, "
                    r"mount /var/www read-write$", lines[1])
    # With no image linked in, the weak registry bounds are empty.
    TC.run(["gcc", "-I", TC.HEADER_DIR, example, "-o", tmp_path / "none"])
    assert TC.run([tmp_path / "none"]).stdout == "no images linked in\n"
