"""The precompiled layouts (rumpfs/formats/*/_compiled.py, rumpfs/elf/_compiled*.py,
rumpfs/etc/_compiled_db185.py): current, equal to what construct derives, and
enough for the writers to run without construct, dataclasses or typing --
while a stale one is ignored, not trusted.  ``rumpfs pack`` of every format
imports no construct."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rumpfs import _compiled_compress_layout as compress_generated
from rumpfs import compress_layout, formats
from rumpfs.elf import _compiled as elf_generated
from rumpfs.elf import _compiled_registry as registry_generated
from rumpfs.elf import layout as elf_layout
from rumpfs.elf import registry
from rumpfs.etc import _compiled_db185 as db185_generated
from rumpfs.etc import db185
from rumpfs.formats import precompile
from rumpfs.formats.cpio import _compiled as cpio_generated
from rumpfs.formats.cpio import layout as cpio_layout
from rumpfs.formats.fat import _compiled as fat_generated
from rumpfs.formats.fat import layout as fat_layout
from rumpfs.formats.ffs import _compiled as ffs_generated
from rumpfs.formats.ffs import layout as L
from rumpfs.formats.iso import _compiled as iso_generated
from rumpfs.formats.iso import layout as iso_layout

REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).with_name("precompile_probe.py")
OBJECT_PROBE = Path(__file__).with_name("object_probe.py")


def test_generated_modules_are_current(capsys):
    status = precompile.main(["--check"])
    assert status == 0, (f"stale generated layouts: run `{precompile.COMMAND}` and commit "
                         f"the result\n{capsys.readouterr().err}")


def test_layouts_use_their_generated_module():
    # The digests match this checkout, so the writer's path is the fast one.
    assert L._generated() is ffs_generated
    assert cpio_layout._GENERATED is cpio_generated
    assert elf_layout._generated() is elf_generated
    assert registry._generated() is registry_generated
    assert db185._generated() is db185_generated
    assert compress_layout._GENERATED is compress_generated
    assert iso_layout._GENERATED is iso_generated
    assert fat_layout._GENERATED is fat_generated


def test_generated_names():
    assert precompile.generated_name("rumpfs.formats.ffs.layout") == "rumpfs.formats.ffs._compiled"
    assert precompile.generated_name("rumpfs.elf.layout") == "rumpfs.elf._compiled"
    assert precompile.generated_name("rumpfs.elf.registry") == "rumpfs.elf._compiled_registry"
    assert precompile.generated_name("rumpfs.etc.db185") == "rumpfs.etc._compiled_db185"
    for name in precompile.LAYOUTS:
        # Imported here: which modules a worker already holds depends on the
        # tests it ran before this one.
        generated = importlib.import_module(precompile.generated_name(name))
        assert Path(precompile.generated_path(name)) == Path(generated.__file__)
        assert generated.SOURCE == name.replace(".", "/") + ".py"


@pytest.mark.parametrize("name", sorted(ffs_generated.STRUCTS))
def test_shared_describe_equals_the_ffs_one(name):
    # precompile.describe is the FFS layout's derivation, extended (Const,
    # PaddedString): for the FFS declarations both give the same.
    for order in ("little", "big"):
        con = getattr(L.structs(order), name)
        assert precompile.describe(con) == L.describe(con)
        assert precompile.byteorder_of(con) == order


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("name", sorted(ffs_generated.STRUCTS))
def test_ffs_generated_struct_equals_construct(name, order):
    fmt, fields, size = ffs_generated.STRUCTS[name]
    generated = L.FastStruct(fmt, fields, order)
    derived = L.fast_struct(getattr(L.structs(order), name))
    assert generated.struct.format == derived.struct.format
    assert generated.names == derived.names
    assert generated.fields == derived.fields
    assert generated.size == derived.size == size == getattr(L.structs(order), name).sizeof()
    # What the writer and reader are handed is the generated one.
    fast = L.structs(order).fast(name)
    assert (fast.struct.format, fast.names, fast.size) == (
        derived.struct.format, derived.names, derived.size)


def test_ffs_generated_covers_every_declaration_and_number():
    assert set(ffs_generated.STRUCTS) == set(L._SIZES)
    assert ffs_generated.SIZEOF_FS == L.LITTLE.fs.sizeof() == L.BIG.fs.sizeof()
    assert ffs_generated.FS_MAGIC_OFFSET == L.offsetof(L.BIG.fs, "fs_magic")
    assert ffs_generated.SIZEOF_CSUM == L.LITTLE.csum.sizeof()
    assert (L.SIZEOF_FS, L.FS_MAGIC_OFFSET, L.SIZEOF_CSUM) == (1376, 1372, 16)


def test_cpio_generated_equals_construct():
    header = cpio_layout.Header
    assert cpio_generated.FIELDS == cpio_layout.FIELDS == tuple(sc.name for sc in header.subcons[1:])
    assert cpio_generated.MAGIC_SIZE == header.subcons[0].sizeof() == 6
    assert cpio_generated.HEADER_SIZE == header.sizeof() == 110
    assert cpio_generated.FIELD_WIDTH == cpio_layout.HEX_DIGITS
    values = tuple(range(1, len(cpio_layout.FIELDS) + 1))
    raw = cpio_layout.build_header(cpio_layout.NEWC_MAGIC, values)
    assert header.build(dict(zip(cpio_layout.FIELDS, values), c_magic=cpio_layout.NEWC_MAGIC)) == raw


# -- ELF, registry record, db 1.85 -------------------------------------------------


def _sample(fields, seed: int) -> dict:
    """A dict for a field tree: distinct small values, bytes where the field is one."""
    out = {}
    for i, (name, count, sub, default) in enumerate(fields):
        if sub is not None:
            out[name] = _sample(sub, seed + 17 * i)
        elif isinstance(default, bytes):
            out[name] = default or bytes((seed + i + k) % 256 for k in range(3))
        elif count is None:
            out[name] = (seed + i) % 100
        else:
            out[name] = [(seed + i + k) % 100 for k in range(count)]
    return out


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("elfclass", [elf_layout.ELFCLASS32, elf_layout.ELFCLASS64])
@pytest.mark.parametrize("name", elf_layout.STRUCT_NAMES)
def test_elf_generated_struct_equals_construct(name, elfclass, order):
    fmt, fields, size = elf_generated.STRUCTS[elfclass][name]
    con = getattr(elf_layout.layouts(elfclass, order), name)
    assert precompile.describe(con) == (fmt, fields)
    assert size == con.sizeof()
    fast = getattr(elf_layout.fast(elfclass, order), name)
    assert (fast.format, fast.fields, fast.size) == (fmt, fields, size)
    values = _sample(fields, elfclass * 7 + len(name))
    if name == "Ehdr":
        values["e_ident"]["EI_MAG"] = elf_layout.ELFMAG
        values["e_ident"]["EI_PAD"] = bytes(7)
    raw = fast.pack_dict(values)
    assert raw == con.build(values)
    parsed = con.parse(raw)
    unpacked = fast.unpack_dict(raw)
    for field, value in unpacked.items():
        if isinstance(value, dict):
            assert value == {k: v for k, v in parsed[field].items() if not k.startswith("_")}
        else:
            assert value == parsed[field]


def test_elf_generated_covers_both_classes():
    assert set(elf_generated.STRUCTS) == {elf_layout.ELFCLASS32, elf_layout.ELFCLASS64}
    for per_class in elf_generated.STRUCTS.values():
        assert tuple(per_class) == elf_layout.STRUCT_NAMES
    assert elf_layout.fast(elf_layout.ELFCLASS64, "big").Ehdr.size == 64
    assert elf_layout.fast(elf_layout.ELFCLASS32, "little").Ehdr.size == 52
    assert elf_layout.Elf_Ident.sizeof() == elf_layout.EI_NIDENT


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("bits", [32, 64])
def test_registry_generated_record_equals_construct(bits, order):
    con = registry.record(bits, order)
    fmt, fields, size = registry_generated.RECORDS[bits]
    assert precompile.describe(con) == (fmt, fields)
    assert size == con.sizeof() == registry.RECORD_SIZE
    assert registry_generated.STRINGS == precompile.string_fields(con) == {
        "ri_name": ("utf8", registry.NAME_LEN)}
    for name in ("root", "x" * registry.NAME_LEN, "n\u00e9"):
        kw = dict(fmt=registry.FMT_FFS2, flags=registry.IMG_WRITABLE | registry.IMG_CONFIG,
                  size=0x123456789, name=name, mount_point="/srv/www", pointer=0x1234)
        expected = con.build(dict(
            ri_magic=registry.MAGIC, ri_version=registry.VERSION, ri_format=kw["fmt"],
            ri_flags=kw["flags"], ri_reclen=registry.RECORD_SIZE, ri_size=kw["size"],
            ri_image=kw["pointer"], ri_image_pad=0, ri_name=name,
            ri_mountpoint=b"/srv/www".ljust(registry.MOUNTPOINT_LEN, b"\0")))
        assert registry.build(bits, order, **kw) == expected
        assert registry.parse(expected, bits, order).ri_name == name
    with pytest.raises(ValueError, match="ri_name"):
        registry.build(bits, order, fmt=0, flags=0, size=0, mount_point="/",
                       name="x" * (registry.NAME_LEN + 1))


def test_db185_generated_equals_construct():
    header = db185.HASHHDR
    fmt, fields, size = db185_generated.HASHHDR
    assert precompile.describe(header) == (fmt, fields)
    assert size == header.sizeof() == db185.fast_header().size
    assert db185_generated.HASHHDR_BYTEORDER == precompile.byteorder_of(header) == "big"
    values = _sample(fields, 3)
    assert db185.fast_header().pack_dict(values) == header.build(values)
    assert db185.precompile() == {k: getattr(db185_generated, k)
                                  for k in ("HASHHDR", "HASHHDR_BYTEORDER", "PAGE_TABLE",
                                            "BITMAP_WORD")}
    for order in ("little", "big"):
        for entries in ([], [4090, 4000], list(range(100, 300, 2))):
            table = dict(n=len(entries), entries=entries, free=77, offset=3999)
            assert db185.pack_page_table(order, table) == db185.page_table(order).build(table)
        words = [(i * 2654435761) & 0xFFFFFFFF for i in range(4096 // 4)]
        assert (db185.pack_bitmap_page(order, words)
                == db185.bitmap_page(order, 4096).build(words))
    with pytest.raises(ValueError, match="page table"):
        db185.pack_page_table("little", dict(n=3, entries=[1, 2], free=0, offset=0))


def test_superblock_fast_pack_equals_construct_build():
    # The writer packs the superblock with the fast form now: nested dicts,
    # arrays, byte strings and fields left out must give construct's bytes.
    sb = {"fs_magic": L.FS_UFS1_MAGIC, "fs_old_cstotal": {"cs_ndir": 3, "cs_nifree": 7},
          "fs_cstotal": {"cs_nbfree": 9, "cs_ndir": 2}, "fs_id": [5, 6],
          "fs_volname": b"root".ljust(L.MAXVOLLEN, b"\0"), "fs_bmask": ~8191, "fs_qbmask": 8191,
          "fs_maxfilesize": 2**63 + 5, "fs_old_flags": L.FS_FLAGS_UPDATED}
    for layout in (L.LITTLE, L.BIG):
        assert layout.fast("fs").pack_dict(sb) == layout.fs.build(sb)


@pytest.mark.parametrize("misspelt, name", [({"fs_magik": 1}, "fs_magik"),
                                             ({"fs_cstotal": {"cs_nbfre": 9}}, "cs_nbfre")])
def test_fast_pack_refuses_a_name_the_declaration_lacks(misspelt, name):
    # construct's build ignores a key it has no field for, so a misspelt
    # field would be written as 0 without a word; the fast form refuses it.
    assert L.LITTLE.fs.build(misspelt) == L.LITTLE.fs.build({})
    with pytest.raises(KeyError, match=repr(name)):
        L.LITTLE.fast("fs").pack_dict(misspelt)


# -- ISO 9660, FAT ---------------------------------------------------------------------


def _values(con, fields, seed: int) -> tuple[dict, dict]:
    """Distinct values for every field of a construct Struct but its
    constants: (what construct builds from, what the FastStruct of the
    description ``fields`` packs from -- an integer the description gives a
    bytes slot, being of the other byte order, as its bytes)."""
    from construct import Const, FormatField, Struct

    built, packed = {}, {}
    described = {name: (sub, default) for name, _count, sub, default in fields}
    for i, sc in enumerate(con.subcons):
        inner = precompile.unwrap(sc)
        if sc.name is None or isinstance(inner, Const):
            continue
        sub, default = described[sc.name]
        if isinstance(inner, Struct):
            built[sc.name], packed[sc.name] = _values(inner, sub, seed + 31 * i)
        elif isinstance(inner, FormatField):
            size = inner.sizeof()
            value = (seed * 7919 + i * 104729 + 1) % (1 << 8 * size)
            built[sc.name] = value
            if isinstance(default, bytes):
                packed[sc.name] = value.to_bytes(size, "big" if inner.fmtstr[0] == ">" else "little")
            else:
                packed[sc.name] = value
        else:
            size = inner.sizeof()
            built[sc.name] = packed[sc.name] = bytes((seed + i + k) % 256 for k in range(size))
    return built, packed


@pytest.mark.parametrize("layout, generated, name", [
    *((iso_layout, iso_generated, name) for name in iso_layout.STRUCT_NAMES),
    *((fat_layout, fat_generated, name) for name in fat_layout.STRUCT_NAMES)],
    ids=lambda v: v if isinstance(v, str) else "")
def test_iso_fat_generated_struct_equals_construct(layout, generated, name):
    from rumpfs.formats.ffs.layout import FastStruct

    con = getattr(layout, name)
    fmt, fields, size = generated.STRUCTS[name]
    assert precompile.describe(con) == (fmt, fields)
    fast = FastStruct(fmt, fields, "little")
    assert fast.size == size == con.sizeof()
    built, packed = _values(con, fields, len(name))
    raw = fast.pack_dict(packed)
    assert raw == con.build(built)
    parsed = con.parse(raw)
    for field, value in built.items():
        if isinstance(value, dict):
            assert {k: parsed[field][k] for k in value} == value
        else:
            assert parsed[field] == value


def test_iso_fat_packers_are_the_generated_ones():
    # What the writers pack with is what the declarations describe:
    # ECMA-119's both-byte-order halves, the M path table big-endian.
    assert iso_layout.DIR_RECORD.format == "<" + iso_generated.STRUCTS["DirectoryRecord"][0]
    assert iso_layout.DIR_RECORD.size == 33
    assert iso_layout.PATH_RECORD_L.pack(3, 0, 99, 7) == bytes((3, 0, 99, 0, 0, 0, 7, 0))
    assert iso_layout.PATH_RECORD_M.pack(3, 0, 99, 7) == bytes((3, 0, 0, 0, 0, 99, 0, 7))
    assert iso_layout.VOLUME_DESCRIPTOR.size == iso_layout.TERMINATOR.size == iso_layout.SECTOR
    assert iso_layout.TERMINATOR.pack_dict({}) == iso_layout.Terminator.build({})
    assert fat_layout.DIR_ENTRY.format == "<" + fat_generated.STRUCTS["DirEntry"][0]
    assert fat_layout.DIR_ENTRY.size == fat_layout.LFN_ENTRY.size == fat_layout.DIR_ENTRY_SIZE
    assert fat_layout.BPB.size == 36  # the extended BPB starts at 36 (FAT12/16) ...
    assert fat_layout.BOOT_SECTOR[32].size == 90  # ... or at 64, and ends at 90 (FAT32)
    assert fat_layout.BOOT_SECTOR[12] is fat_layout.BOOT_SECTOR[16]
    assert fat_layout.BOOT_SECTOR[16].size == 62
    assert fat_layout.FSINFO.size == fat_layout.SECTOR


def test_describe_other_byte_order_and_integer_constants():
    from construct import Const, Int8ul, Int16ub, Int16ul, Int32ub, Int32ul, Struct

    both = Struct("le" / Int32ul, "be" / Int32ub)
    con = Struct("kind" / Const(7, Int8ul), "size" / both, "tag" / Const(0x1234, Int16ul),
                 "n" / Int16ub)
    assert precompile.describe(con) == ("B L 4s H 2s", (
        ("kind", None, None, 7), ("size", None, (("le", None, None, 0),
                                                 ("be", None, None, bytes(4))), 0),
        ("tag", None, None, 0x1234), ("n", None, None, bytes(2))))
    with pytest.raises(TypeError, match="other byte order"):
        precompile.describe(Struct("a" / Int16ul, "b" / Const(1, Int16ub)))


def _pack_probe(fmt: str, extra: list, tmp_path) -> dict:
    """``rumpfs pack examples/hello --format FMT EXTRA`` run by
    tests/precompile_probe.py in ``python -S`` (see :func:`_probe`)."""
    import construct

    path = [str(REPO), str(Path(construct.__file__).resolve().parent.parent)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), SOURCE_DATE_EPOCH="1700000000")
    suffix = ".o" if "--image-format" in extra else ".out"  # .out: no format of its own
    out = tmp_path / f"image{suffix}"
    args = ["--no-progress", *(["--format", fmt] if fmt else []), *extra]
    proc = subprocess.run([sys.executable, "-S", str(PROBE), "pack", str(out),
                           str(REPO / "examples" / "hello"), *args],
                          env=env, check=True, capture_output=True, text=True, timeout=120)
    got = json.loads(proc.stdout)
    got["size"] = out.stat().st_size
    return got


@pytest.mark.parametrize("fmt, extra", [
    *((name, []) for name in formats.names()),
    ("cpio", ["--compress", "gzip"]),
    ("", ["--image-format", "iso"]),
    ("", ["--image-format", "fat"])], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_pack_imports_no_construct(fmt, extra, tmp_path):
    # `rumpfs pack` of every format, through the command line in a fresh
    # interpreter: the writers pack with the generated layouts.
    got = _pack_probe(fmt, extra, tmp_path)
    assert got["status"] == 0 and got["size"] > 0
    assert got["preloaded"] == []
    assert "construct" not in got["slow_imported"], got


def _probe(mode: str) -> dict:
    """Run tests/precompile_probe.py in ``python -S`` (no site hook has
    imported typing before it), with the repository and construct on the path."""
    import construct

    path = [str(REPO), str(Path(construct.__file__).resolve().parent.parent)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    out = subprocess.run([sys.executable, "-S", str(PROBE), mode], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def fresh():
    return _probe("fresh")


def test_writers_import_none_of_construct_dataclasses_typing(fresh):
    # rumpfs, rumpfs.errors, .tree, .output and .formats are imported before
    # the count: they are not the FFS/cpio writers' own.
    assert fresh["slow_imported"] == [], fresh["imported"]
    assert fresh["ffs_generated"] and fresh["cpio_generated"]
    assert fresh["iso_generated"] and fresh["fat_generated"]
    for writer in ("ffs", "cpio", "iso", "fat"):
        assert f"rumpfs.formats.{writer}.writer" in fresh["imported"]
    assert len(fresh["images"]) == 11


@pytest.mark.parametrize("mode", ["stale", "unreadable"])
def test_stale_or_unreadable_falls_back_to_construct(mode, fresh):
    got = _probe(mode)
    assert not got["ffs_generated"] and not got["cpio_generated"]
    assert not got["iso_generated"] and not got["fat_generated"]
    assert "construct" in got["slow_imported"]
    for key in ("cpio_fields", "cpio_sizes", "ffs_numbers", "images"):
        assert got[key] == fresh[key], key


def _object_probe(mode: str, tmp_path) -> dict:
    """Run tests/object_probe.py in ``python -S`` (see :func:`_probe`): the
    command line packs examples/hello to an object, then more outputs."""
    import construct

    path = [str(REPO), str(Path(construct.__file__).resolve().parent.parent)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), SOURCE_DATE_EPOCH="1700000000")
    out = tmp_path / mode
    out.mkdir()
    proc = subprocess.run([sys.executable, "-S", str(OBJECT_PROBE), mode,
                           str(REPO / "examples" / "hello"), str(out)],
                          env=env, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def fresh_object(tmp_path_factory):
    return _object_probe("fresh", tmp_path_factory.mktemp("object"))


def test_pack_object_imports_none_of_the_slow_modules(fresh_object):
    # `rumpfs pack DIR -o x.o`, the default /etc layer on: the ELF writer,
    # the registry record and the password databases all packed without
    # construct, typing, tempfile or pathlib.
    assert fresh_object["preloaded"] == []
    assert fresh_object["slow_imported"] == [], fresh_object["imported"]
    for module in ("rumpfs.elf.writer", "rumpfs.etc.db185", "rumpfs.etc.passwd",
                   "rumpfs.elf._compiled", "rumpfs.elf._compiled_registry",
                   "rumpfs.etc._compiled_db185"):
        assert module in fresh_object["imported"], module
    assert all(fresh_object["generated"].values()), fresh_object["generated"]


@pytest.mark.parametrize("mode", ["stale", "unreadable"])
def test_object_stale_or_unreadable_falls_back_to_construct(mode, fresh_object, tmp_path):
    got = _object_probe(mode, tmp_path)
    assert not any(got["generated"].values()), got["generated"]
    assert "construct" in got["slow_imported"]
    assert got["outputs"] == fresh_object["outputs"]


def test_stale_generated_module_is_ignored_in_process(monkeypatch):
    monkeypatch.setattr(ffs_generated, "SOURCE_CRC32", ffs_generated.SOURCE_CRC32 ^ 1)
    assert precompile.load(L.__name__, L.__file__) is None
    monkeypatch.undo()
    assert precompile.load(L.__name__, L.__file__) is ffs_generated
    assert precompile.load(L.__name__, str(REPO / "no-such-file.py")) is None
    for layout, generated in ((elf_layout, elf_generated), (registry, registry_generated),
                              (db185, db185_generated), (iso_layout, iso_generated),
                              (fat_layout, fat_generated)):
        monkeypatch.setattr(generated, "SOURCE_CRC32", generated.SOURCE_CRC32 ^ 1)
        assert precompile.load(layout.__name__, layout.__file__) is None
        monkeypatch.undo()
        assert precompile.load(layout.__name__, layout.__file__) is generated


def test_fallback_facts_equal_the_generated_ones():
    # What each layout derives from construct when its generated module is
    # stale is exactly what the generated module holds.
    assert elf_layout.precompile() == {"STRUCTS": elf_generated.STRUCTS}
    assert registry.precompile() == {"RECORDS": registry_generated.RECORDS,
                                     "STRINGS": registry_generated.STRINGS}
    assert iso_layout.precompile() == {"STRUCTS": iso_generated.STRUCTS}
    assert fat_layout.precompile() == {"STRUCTS": fat_generated.STRUCTS}


def test_render_starts_with_the_generated_notice():
    text = precompile.render("rumpfs.formats.cpio.layout")
    assert text.startswith("# Generated from rumpfs/formats/cpio/layout.py by "
                           "`python -m rumpfs.formats.precompile`.\n# Do not edit")
    assert f"SOURCE_CRC32 = 0x{precompile.source_digest(cpio_layout.__file__):08x}" in text
