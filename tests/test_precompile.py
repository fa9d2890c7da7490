"""The precompiled layouts (rumpfs/formats/*/_compiled.py): current, equal to
what construct derives, and enough for the writers to run without construct,
dataclasses or typing -- while a stale one is ignored, not trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rumpfs.formats import precompile
from rumpfs.formats.cpio import _compiled as cpio_generated
from rumpfs.formats.cpio import layout as cpio_layout
from rumpfs.formats.ffs import _compiled as ffs_generated
from rumpfs.formats.ffs import layout as L

REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).with_name("precompile_probe.py")


def test_generated_modules_are_current(capsys):
    status = precompile.main(["--check"])
    assert status == 0, (f"stale generated layouts: run `{precompile.COMMAND}` and commit "
                         f"the result\n{capsys.readouterr().err}")


def test_layouts_use_their_generated_module():
    # The digests match this checkout, so the writer's path is the fast one.
    assert L._generated() is ffs_generated
    assert cpio_layout._GENERATED is cpio_generated


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


def test_superblock_fast_pack_equals_construct_build():
    # The writer packs the superblock with the fast form now: nested dicts,
    # arrays, byte strings and fields left out must give construct's bytes.
    sb = {"fs_magic": L.FS_UFS1_MAGIC, "fs_old_cstotal": {"cs_ndir": 3, "cs_nifree": 7},
          "fs_cstotal": {"cs_nbfree": 9, "cs_ndir": 2}, "fs_id": [5, 6],
          "fs_volname": b"root".ljust(L.MAXVOLLEN, b"\0"), "fs_bmask": ~8191, "fs_qbmask": 8191,
          "fs_maxfilesize": 2**63 + 5, "fs_old_flags": L.FS_FLAGS_UPDATED, "unrelated": 1}
    for layout in (L.LITTLE, L.BIG):
        assert layout.fast("fs").pack_dict(sb) == layout.fs.build(sb)


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
    assert "rumpfs.formats.ffs.writer" in fresh["imported"]


@pytest.mark.parametrize("mode", ["stale", "unreadable"])
def test_stale_or_unreadable_falls_back_to_construct(mode, fresh):
    got = _probe(mode)
    assert not got["ffs_generated"] and not got["cpio_generated"]
    assert "construct" in got["slow_imported"]
    for key in ("cpio_fields", "cpio_sizes", "ffs_numbers", "images"):
        assert got[key] == fresh[key], key


def test_stale_generated_module_is_ignored_in_process(monkeypatch):
    monkeypatch.setattr(ffs_generated, "SOURCE_CRC32", ffs_generated.SOURCE_CRC32 ^ 1)
    assert precompile.load(L.__name__, L.__file__) is None
    monkeypatch.undo()
    assert precompile.load(L.__name__, L.__file__) is ffs_generated
    assert precompile.load(L.__name__, str(REPO / "no-such-file.py")) is None


def test_render_starts_with_the_generated_notice():
    text = precompile.render("rumpfs.formats.cpio.layout")
    assert text.startswith("# Generated from rumpfs/formats/cpio/layout.py by "
                           "`python -m rumpfs.formats.precompile`.\n# Do not edit")
    assert f"SOURCE_CRC32 = 0x{precompile.source_digest(cpio_layout.__file__):08x}" in text
