"""The ELF writer's every section header, symbol and relocation, judged by GNU as.

The judge: the same component written as assembler source (``wrap -o
x.S``, which only states sections, alignments, symbols and bytes) and
assembled by the target's own cross gcc/gas, which lays out the object by
itself.  readelf then reads both objects, and every section rumpfs writes must
have the type, flags, alignment, entry size, link and info (as the names of
the sections they point at), size and bytes gas gives it; every global symbol
the same value, size, type, binding, visibility and section; the registry
pointer the same relocation.  What the assembler lays out differently (it
adds .text/.data/.bss and machine sections, more local symbols, and names
``.relarumpfs_images`` without the dot) is compared by what the ELF
specification requires instead: ``.symtab``'s sh_info is one more than its
last local symbol, every section starts at a multiple of its alignment and
no two overlap, the section header table is word-aligned.

These tests kill the mutants of ``rumpfs/elf/writer.py`` that the header and
linker tests of test_elf.py let through (docs/testing.md).
"""

from __future__ import annotations

import os
import re
import struct

import pytest
from conftest import run_rumpfs
from elf import toolchains as TC

from rumpfs.errors import RumpfsError

#: (toolchain, template, extra wrap options): each byte order and class, REL,
#: RELA and MIPS64 relocations, every template's size/end/trailer shape,
#: a writable section and a non-default visibility or alignment.
CASES = [
    ("x86_64", "rumpfs", ()),
    ("x86_64", "objcopy", ("--writable",)),
    ("x86_64", "linux-initramfs", ()),
    ("i386", "unikraft-einitrd", ()),
    ("ppc64", "rumpfs", ("--align", "64")),
    ("mips64el", "freebsd-mfs", ()),
    ("arm", "rumpfs", ("--writable",)),
    ("s390x", "linux-initramfs", ()),
    ("x86_64", "user.toml", ()),
    ("ppc64", "user.toml", ()),
]

#: A user template no built-in matches: a trailer of odd length, then the
#: size word in the image section itself, and protected symbols.
USER_TEMPLATE = """\
[template]
section = ".rodata.user.{name}"
start = "user_{name}_start"
end = "user_{name}_end"
size = "user_{name}_size"
visibility = "protected"
trailer = [1, 2, 3]
align = 32
"""

#: Targets whose gas rounds a section's size up to its alignment, with zeros.
GAS_PADS = ("mips", "s390x")

_SECTION = re.compile(
    r"\s*\[\s*(\d+)\]\s+(\S*?)\s*(NULL|\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)"
    r"\s+([A-Za-z]*)\s+(\d+)\s+(\d+)\s+(\d+)$")
_SYMBOL = re.compile(r"\s*(\d+):\s+([0-9a-f]+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(\w+)\s+(\w+)\s*(\S*)$")
_RELOC = re.compile(r"([0-9a-f]{8,16})\s+[0-9a-f]+\s+(R_\w+)\s+[0-9a-f]+\s+(\S+)(?:\s+\+\s+([0-9a-f]+))?$")


def read_object(path):
    """Sections, symbols, relocations and the header's section table offset, by readelf."""
    secs = {}
    for line in TC.run(["readelf", "-S", "-W", path]).stdout.splitlines():
        m = _SECTION.match(line)
        if m:
            secs[int(m.group(1))] = dict(
                name=m.group(2), type=m.group(3), offset=int(m.group(4), 16),
                size=int(m.group(5), 16), entsize=int(m.group(6), 16), flags=m.group(7),
                link=int(m.group(8)), info=int(m.group(9)), align=int(m.group(10)))
    syms = []
    for line in TC.run(["readelf", "-s", "-W", path]).stdout.splitlines():
        m = _SYMBOL.match(line)
        if m:
            ndx = m.group(7)
            syms.append(dict(num=int(m.group(1)), value=int(m.group(2), 16), size=int(m.group(3)),
                             type=m.group(4), bind=m.group(5), vis=m.group(6),
                             section=secs[int(ndx)]["name"] if ndx.isdigit() else ndx,
                             name=m.group(8)))
    relocs = []
    for line in TC.run(["readelf", "-r", "-W", path]).stdout.splitlines():
        m = _RELOC.match(line.strip())
        if m:
            relocs.append((int(m.group(1), 16), m.group(2), m.group(3), int(m.group(4) or "0", 16)))
        elif line.strip().startswith(("Type2:", "Type3:")):   # MIPS64's three types
            relocs.append(line.strip())
    header = TC.run(["readelf", "-h", "-W", path]).stdout
    relocs += raw_relocations(path, secs, syms, "big endian" in header)
    shoff = int(re.search(r"Start of section headers:\s+(\d+)", header).group(1))
    shnum = int(re.search(r"Number of section headers:\s+(\d+)", header).group(1))
    return secs, syms, relocs, shoff, shnum


def raw_relocations(path, secs: dict, syms: list, big: bool) -> list:
    """Each relocation entry's bytes with its symbol index (which differs
    with the symbol table's order) replaced by the symbol it names: the
    fields readelf does not print (MIPS64's r_ssym) are compared too.
    Entry layouts of the ELF gABI (Elf32/64_Rel/Rela) and the MIPS64 ABI."""
    e = ">" if big else "<"
    out = []
    for s in secs.values():
        if s["type"] not in ("REL", "RELA"):
            continue
        raw = _bytes(path, s)
        for at in range(0, len(raw), s["entsize"]):
            entry = bytearray(raw[at:at + s["entsize"]])
            if s["entsize"] == 24 and s["name"] and "MIPS" in open_machine(path):
                sym = struct.unpack_from(e + "I", entry, 8)[0]
                entry[8:12] = bytes(4)
            elif s["entsize"] in (16, 24):               # Elf64: r_info = sym << 32 | type
                info = struct.unpack_from(e + "Q", entry, 8)[0]
                sym = info >> 32
                struct.pack_into(e + "Q", entry, 8, info & 0xFFFFFFFF)
            else:                                         # Elf32: r_info = sym << 8 | type
                info = struct.unpack_from(e + "I", entry, 4)[0]
                sym = info >> 8
                struct.pack_into(e + "I", entry, 4, info & 0xFF)
            named = next(x for x in syms if x["num"] == sym)
            out.append(((named["type"], named["section"], named["name"]), bytes(entry)))
    return out


#: readelf -h lines that depend on how many sections there are and where.
_LAYOUT_KEYS = ("Start of section headers", "Number of section headers",
                "Section header string table index")


def header_fields(path) -> list:
    """The ELF header as readelf -h shows it, but the section table's place and count."""
    fields = []
    for line in TC.run(["readelf", "-h", path]).stdout.splitlines()[1:]:
        key, _, value = line.partition(":")
        if key.strip() not in _LAYOUT_KEYS:
            fields.append((key.strip(), value.strip()))
    return fields


def open_machine(path) -> str:
    return re.search(r"Machine:\s+(.*)", TC.run(["readelf", "-h", path]).stdout).group(1)


def _described(secs: dict) -> dict:
    """name -> what a section is, its link and info given as section names
    (a relocation section is named by the section it applies to)."""
    out = {}
    for s in secs.values():
        if s["type"] == "NULL":
            continue
        link = secs[s["link"]]["name"] if s["link"] else None
        info = s["info"]
        if s["type"] in ("REL", "RELA"):
            info = secs[info]["name"]
            name = s["type"].lower() + ":" + info
        elif s["type"] == "SYMTAB":
            info = None  # counts local symbols: checked against the symbols
            name = s["name"]
        else:
            name = s["name"]
        out[name] = dict(type=s["type"], flags=s["flags"], align=s["align"],
                         entsize=s["entsize"], link=link, info=info)
    return out


def _bytes(path, s) -> bytes:
    with open(path, "rb") as f:
        f.seek(s["offset"])
        return f.read(s["size"])


@pytest.mark.parametrize("key,template,extra", CASES,
                         ids=[f"{k}-{t}{''.join(e[:1])}" for k, t, e in CASES])
def test_object_as_gas_lays_out_the_same_component(key, template, extra, tmp_path):
    tc = TC.TOOLCHAINS[key]
    tc.require()
    image = tmp_path / "image.bin"
    image.write_bytes(os.urandom(1001))   # an odd size: the trailer and size word need padding
    if template.endswith(".toml"):
        (tmp_path / template).write_text(USER_TEMPLATE)
        template = str(tmp_path / template)
    args = ["--target", tc.target, *tc.rumpfs_args, "--template", template, "--name", "one", *extra]
    run_rumpfs("wrap", image, "-o", tmp_path / "ours.o", *args)
    run_rumpfs("wrap", image, "-o", tmp_path / "one.S", *args)
    TC.run([tc.gcc, *tc.cflags, "-c", tmp_path / "one.S", "-o", tmp_path / "gas.o"], cwd=tmp_path)

    # The ELF header as gas writes it: ident, type, machine, versions, entry,
    # flags, the (absent) program headers and the header sizes.
    assert header_fields(tmp_path / "ours.o") == header_fields(tmp_path / "gas.o")
    ours, gas = read_object(tmp_path / "ours.o"), read_object(tmp_path / "gas.o")
    o_secs, o_syms, o_relocs, o_shoff, o_shnum = ours
    g_secs, g_syms, g_relocs, _, _ = gas

    # Every section rumpfs writes is one gas writes, described alike.
    o_desc, g_desc = _described(o_secs), _described(g_secs)
    for name, desc in o_desc.items():
        assert name in g_desc, f"gas has no section {name}"
        assert desc == g_desc[name], name
    # Sizes and bytes of the sections with contents (the string and symbol
    # tables differ with the symbols gas adds).
    g_by_name = {s["name"]: s for s in g_secs.values()}
    for s in o_secs.values():
        if s["type"] in ("PROGBITS", "NOBITS"):
            g = g_by_name[s["name"]]
            mine, theirs = _bytes(tmp_path / "ours.o", s), _bytes(tmp_path / "gas.o", g)
            if tc.target.startswith(GAS_PADS):
                assert theirs[len(mine):] == bytes(len(theirs) - len(mine)), s["name"]
                theirs = theirs[:len(mine)]
            assert mine == theirs, s["name"]

    # Global symbols as gas defines them; the registry pointer relocated alike.
    def globals_of(syms):
        return {s["name"]: s | {"num": None} for s in syms if s["bind"] != "LOCAL"}
    assert globals_of(o_syms) == globals_of(g_syms)
    # The local symbols (the null symbol, the image section's) are ones gas
    # has too (gas leaves out a section symbol no relocation uses).
    def locals_of(syms):
        return [tuple(v for k, v in s.items() if k != "num") for s in syms if s["bind"] == "LOCAL"]
    assert locals_of(o_syms)[0] == (0, 0, "NOTYPE", "LOCAL", "DEFAULT", "UND", "")
    if o_relocs:
        assert set(locals_of(o_syms)) <= set(locals_of(g_syms))
    assert o_relocs == g_relocs
    entries = [r for r in o_relocs if isinstance(r, tuple) and isinstance(r[0], int)]
    assert len(entries) == (0 if template == "linux-initramfs" else 1)

    # What the ELF specification requires of the layout rumpfs chose.
    symtab = next(s for s in o_secs.values() if s["type"] == "SYMTAB")
    last_local = max(s["num"] for s in o_syms if s["bind"] == "LOCAL")
    assert symtab["info"] == last_local + 1
    assert all(s["bind"] != "LOCAL" for s in o_syms if s["num"] > last_local)
    word = 8 if o_secs and "64" in tc.target or tc.target == "s390x" else 4
    assert o_shoff % word == 0
    assert o_shnum == len(o_secs)
    size = os.path.getsize(tmp_path / "ours.o")
    spans = []
    for s in o_secs.values():
        if s["type"] == "NULL":
            assert (s["offset"], s["size"], s["align"]) == (0, 0, 0)
            continue
        assert s["offset"] % max(s["align"], 1) == 0, s["name"]
        assert s["offset"] + s["size"] <= o_shoff, s["name"]
        spans.append((s["offset"], s["offset"] + s["size"]))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "sections overlap"
    # The section header table ends the file.
    entsize = 64 if word == 8 else 40
    assert o_shoff + o_shnum * entsize == size
    # The gABI's section header 0 (SHN_UNDEF) is all zeros.
    with open(tmp_path / "ours.o", "rb") as f:
        f.seek(o_shoff)
        assert f.read(entsize) == bytes(entsize)
    # Packed tight: each section starts at the first offset its alignment
    # allows after the one before (the first after the ELF header), and the
    # header table at the first word boundary after the last.
    ehsize = 64 if word == 8 else 52
    by_offset = sorted((s for s in o_secs.values() if s["type"] != "NULL"),
                       key=lambda s: s["offset"])
    end = ehsize
    for s in by_offset:
        align = max(s["align"], 1)
        assert s["offset"] == -(-end // align) * align, s["name"]
        end = s["offset"] + s["size"]
    assert o_shoff == -(-end // word) * word


def _sparse_object(path, target: str, image_size: int) -> None:
    """An object whose image is ``image_size`` bytes of hole: the writer is
    given no image bytes, only the size (nothing of it is read back)."""
    from rumpfs.elf import component, writer

    # No registry record: its alignment (8) would make the steps coarser.
    comp = component.resolve({"target": target, "registry": False}, "raw")
    with open(path, "wb") as f:
        writer.write_object(f.fileno(), comp, lambda sink: image_size, str(path))


@pytest.mark.parametrize("target, bits", [("i386", 32), ("x86_64", 64)])
def test_object_size_limit_of_elf32_at_the_byte(target, bits, tmp_path):
    """ELF32 offsets are 32-bit words: an object of at most 0xFFFFFFFF bytes
    is written, one word more is refused with the exact error; ELF64 goes
    past 4 GiB.  The objects are sparse; readelf judges them."""
    tc = TC.TOOLCHAINS[target]
    tc.require()
    small = tmp_path / "small.o"
    _sparse_object(small, tc.target, 4096)
    # Every section after the image is word-aligned, so an image size of the
    # same residue modulo the word adds the same bytes around it, and object
    # sizes go in steps of a word: ELF32's largest is 0xFFFFFFFC.
    word = bits // 8
    overhead = os.path.getsize(small) - 4096
    largest = (0xFFFFFFFF - overhead) // word * word
    fits = tmp_path / "fits.o"
    _sparse_object(fits, tc.target, largest)
    assert os.path.getsize(fits) == 0x100000000 - word
    secs = read_object(fits)[0]
    image = next(s for s in secs.values() if s["name"].startswith(".rodata.rumpfs"))
    assert image["size"] >= largest
    beyond = tmp_path / "beyond.o"
    if bits == 32:
        with pytest.raises(RumpfsError) as err:
            _sparse_object(beyond, tc.target, largest + word)
        assert str(err.value) == (f"{beyond}: object of {1 << 32} bytes does "
                                  f"not fit a 32-bit ELF object (limit 4 GiB)")
    else:
        _sparse_object(beyond, tc.target, 1 << 33)
        secs = read_object(beyond)[0]
        image = next(s for s in secs.values() if s["name"].startswith(".rodata.rumpfs"))
        assert image["size"] >= 1 << 33
