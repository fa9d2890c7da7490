"""Precompiled layouts: what the writers need of the construct declarations,
worked out ahead of time.

Every on-disk structure is declared once, with construct, in a layout
module (:data:`LAYOUTS`: the FFS, cpio, ISO 9660 and FAT ``layout`` modules, the ELF
structures, the ELF registry record, the db 1.85 hash file, the tar header,
the framing of compressed streams).  The writers
need only the plain facts behind those declarations -- ``struct`` format
characters, field names, sizes, offsets -- but importing construct costs
35-55 ms (it imports pdb, inspect, dataclasses...), more than packing a
small tree.  So this module derives those facts from the declarations and
writes them, as Python literals, into a generated module beside each layout
(``_compiled.py`` beside a module named ``layout``, ``_compiled_NAME.py``
beside any other layout module ``NAME.py``; :func:`generated_name`), stamped
with the CRC-32 of the layout's source::

    python -m rumpfs.formats.precompile           # regenerate
    python -m rumpfs.formats.precompile --check   # exit 1 when one is stale

At run time a layout asks :func:`load` for its generated module and gets it
only when the stamp matches its own source; otherwise (the layout was
edited, or its source cannot be read) it gets None and derives the same
facts from construct: slower, never different.  A stale generated file can
cost start-up time but cannot make a wrong image.  The test suite runs the
check, so a commit that changes a layout also carries the regenerated file.

Importing this module is cheap (no construct, no hashlib): the layouts
import it on the writer's path.  Only :func:`render`, :func:`main` and the
helpers the layouts derive their facts with (:func:`describe`,
:func:`byteorder_of`, :func:`string_fields`) import construct.
"""

from __future__ import annotations

import importlib
import os
import sys
import zlib

#: Layout modules that have a generated module.  Each provides
#: ``precompile() -> {NAME: value}``: the module-level names to generate, with
#: values made of Python literals (ints, strings, None, tuples, dicts).
LAYOUTS = ("rumpfs.formats.ffs.layout", "rumpfs.formats.cpio.layout", "rumpfs.formats.iso.layout",
           "rumpfs.formats.fat.layout", "rumpfs.elf.layout", "rumpfs.elf.registry",
           "rumpfs.etc.db185", "rumpfs.tar_layout", "rumpfs.compress_layout")
#: The generated module's name, in the layout's package (see :func:`generated_name`).
GENERATED = "_compiled"
#: How to regenerate, as the generated files and the messages say it.
COMMAND = "python -m rumpfs.formats.precompile"
#: Generated lines stay within the project's line length (pyproject.toml).
WIDTH = 100


def source_digest(path: str) -> int | None:
    """CRC-32 of a source file with its line endings normalised to LF (a
    checkout with CRLF line ends still matches); None when it cannot be read.
    zlib rather than hashlib: it is already loaded, and only an accidental
    mismatch has to be caught."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return None
    return zlib.crc32(text.replace(b"\r\n", b"\n"))


def generated_name(layout_name: str) -> str:
    """``rumpfs.formats.ffs.layout`` -> ``rumpfs.formats.ffs._compiled``;
    a layout module with another name gets its name appended, so a package
    may hold several: ``rumpfs.elf.registry`` -> ``rumpfs.elf._compiled_registry``."""
    package, _, module = layout_name.rpartition(".")
    suffix = "" if module == "layout" else "_" + module
    return f"{package}.{GENERATED}{suffix}"


def load(layout_name: str, layout_file: str | None):
    """The generated module of the layout ``layout_name`` (whose source is
    ``layout_file``) when it was generated from exactly that source, else None."""
    digest = source_digest(layout_file) if layout_file else None
    if digest is None:
        return None
    try:
        module = importlib.import_module(generated_name(layout_name))
    except ImportError:
        return None
    return module if getattr(module, "SOURCE_CRC32", None) == digest else None


def declared_on_first_use(module_globals: dict, declare, names):
    """A module ``__getattr__`` that makes the construct declarations
    ``names`` with ``declare()`` when one is first asked for, so that
    importing the layout does not import construct."""
    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {module_globals['__name__']!r} has no attribute {name!r}")
        module_globals.update(declare())
        return module_globals[name]
    return __getattr__


def _source_path(layout_name: str) -> str:
    """The layout's path as the generated file names it (relative, '/')."""
    return layout_name.replace(".", "/") + ".py"


def render(layout_name: str) -> str:
    """The text of the generated module of ``layout_name``, derived from its
    construct declarations now."""
    import pprint

    layout = importlib.import_module(layout_name)
    digest = source_digest(layout.__file__)
    if digest is None:
        raise OSError(f"cannot read {layout.__file__}")
    lines = [
        f"# Generated from {_source_path(layout_name)} by `{COMMAND}`.",
        "# Do not edit: change the layout and run the command again.  The layout",
        "# ignores this file unless SOURCE_CRC32 matches its source, and then",
        "# derives the same values from its construct declarations (slower).",
        "",
        f"SOURCE = {_source_path(layout_name)!r}",
        f"SOURCE_CRC32 = 0x{digest:08x}",
    ]
    for name, value in layout.precompile().items():
        head = f"{name} = "
        text = pprint.pformat(value, width=WIDTH - len(head), sort_dicts=False)
        lines.append(head + text.replace("\n", "\n" + " " * len(head)))
    return "\n".join(lines) + "\n"


def generated_path(layout_name: str) -> str:
    layout = importlib.import_module(layout_name)
    return os.path.join(os.path.dirname(layout.__file__),
                        generated_name(layout_name).rpartition(".")[2] + ".py")


# -- Describing a declaration --------------------------------------------------------
#
# The description of a fixed-size construct Struct is what
# :class:`rumpfs.formats.ffs.layout.FastStruct` packs with: its ``struct``
# format characters without the byte-order prefix, and its field tree, per
# field in order ``(name, count, sub, default)`` -- count None for a scalar
# or the length of an array, sub the tree of a nested Struct, default what a
# dict that leaves the field out gets.  These helpers give the FFS layout's
# :func:`~rumpfs.formats.ffs.layout.describe` for the declarations it
# handles (the tests compare both) and also know the fields the ELF and
# registry, ISO 9660 and FAT declarations use: ``Const`` bytes or integers
# (default: the constant), a NUL-padded ``PaddedString`` (``Ns``; the caller
# encodes the text with the encoding :func:`string_fields` gives) and
# integers in the other byte order than the Struct's (``Ns``, see
# :func:`_integer`).


def unwrap(con):
    """The declaration inside ``Default`` and ``Renamed`` (transparent for
    layout purposes)."""
    from construct import Default, Renamed

    while isinstance(con, (Renamed, Default)):
        con = con.subcon
    return con


def describe(con) -> tuple:
    """``(format, field tree)`` of a construct Struct of fixed-size fields
    (imports construct)."""
    fmt: list = []
    fields = _flatten(con, fmt, _ORDER_CHARS[byteorder_of(con)])
    return " ".join(fmt), fields


#: ``struct`` byte-order characters of each order, as construct's formats use them.
_ORDER_CHARS = {"little": "<", "big": ">!"}


def _integer(inner, order: str) -> tuple[str, object]:
    """(format item, default) of an integer field.  ``struct`` packs a
    format in one byte order: an integer of the other order (ECMA-119's
    both-byte-order fields hold each value little- then big-endian) is an
    ``Ns`` slot the caller fills with ``value.to_bytes(N, ...)``."""
    size = inner.sizeof()
    if size > 1 and inner.fmtstr[0] not in order:
        return f"{size}s", bytes(size)
    return inner.fmtstr[1:], 0


def describe_all(declared: dict, names) -> dict:
    """``{name: (format, field tree, size)}`` of the declarations ``names``
    in ``declared`` (imports construct)."""
    table = {}
    for name in names:
        fmt, fields = describe(declared[name])
        table[name] = (fmt, fields, declared[name].sizeof())
    return table


def fast_struct(structs: dict, name: str, byteorder: str = "little"):
    """The :class:`~rumpfs.formats.ffs.layout.FastStruct` of the description
    ``structs[name]`` (a table :func:`describe_all` made)."""
    from .ffs.layout import FastStruct

    fmt, fields, size = structs[name]
    packer = FastStruct(fmt, fields, byteorder)
    if packer.size != size:  # pragma: no cover - the generator derived both
        raise AssertionError(f"{name}: struct size {packer.size} != {size}")
    return packer


def _padded_string(con):
    """The byte length of a ``PaddedString`` declaration, else None."""
    from construct import FixedSized, NullStripped, StringEncoded

    if (isinstance(con, StringEncoded) and isinstance(con.subcon, FixedSized)
            and isinstance(con.subcon.subcon, NullStripped) and isinstance(con.subcon.length, int)):
        return con.subcon.length
    return None


def _flatten(con, fmt: list, order: str) -> tuple:
    from construct import Array, Bytes, Const, FormatField, Padded, Pass, Struct

    fields = []
    for sc in con.subcons:
        name = sc.name
        inner = unwrap(sc)
        if isinstance(inner, FormatField):
            item, default = _integer(inner, order)
            fmt.append(item)
            fields.append((name, None, None, default))
        elif isinstance(inner, Const) and isinstance(inner.subcon, FormatField):
            item, default = _integer(inner.subcon, order)
            if default != 0:
                raise TypeError(f"describe: constant {name!r} is in the other byte order")
            fmt.append(item)
            fields.append((name, None, None, inner.value))
        elif (isinstance(inner, Array) and isinstance(inner.count, int)
              and isinstance(unwrap(inner.subcon), FormatField)
              and _integer(unwrap(inner.subcon), order)[1] == 0):
            fmt.append(f"{inner.count}{unwrap(inner.subcon).fmtstr[1:]}")
            fields.append((name, inner.count, None, 0))
        elif isinstance(inner, Bytes) and isinstance(inner.length, int):
            fmt.append(f"{inner.length}s")
            fields.append((name, None, None, b""))
        elif (isinstance(inner, Const) and isinstance(inner.subcon, Bytes)
              and isinstance(inner.value, bytes) and len(inner.value) == inner.subcon.length):
            fmt.append(f"{inner.subcon.length}s")
            fields.append((name, None, None, inner.value))
        elif _padded_string(inner) is not None:
            fmt.append(f"{_padded_string(inner)}s")
            fields.append((name, None, None, b""))
        elif isinstance(inner, Padded) and inner.subcon is Pass:
            fmt.append(f"{inner.length}x")
        elif isinstance(inner, Struct):
            fields.append((name, None, _flatten(inner, fmt, order), 0))
        else:
            raise TypeError(f"describe: cannot compile field {name!r} ({type(inner).__name__})")
    return tuple(fields)


def byteorder_of(con) -> str:
    """``"little"`` or ``"big"``: the byte order of a Struct's first integer
    field wider than a byte (``"little"`` when it has none)."""
    return _byteorder_of(con) or "little"


def _byteorder_of(con):
    from construct import Array, FormatField, Struct

    for sc in con.subcons:
        inner = unwrap(sc)
        if isinstance(inner, Array):
            inner = unwrap(inner.subcon)
        if isinstance(inner, Struct):
            found = _byteorder_of(inner)
            if found:
                return found
        elif isinstance(inner, FormatField) and inner.sizeof() > 1:
            return "big" if inner.fmtstr[0] in ">!" else "little"
    return None


def string_fields(con) -> dict:
    """``{field: (encoding, length)}`` of the ``PaddedString`` fields of a
    Struct: a caller encodes the text it packs into their ``Ns`` slots, and
    refuses what is longer (``struct`` would cut it short, construct refuses)."""
    out = {}
    for sc in con.subcons:
        inner = unwrap(sc)
        if _padded_string(inner) is not None:
            out[sc.name] = (inner.encoding, _padded_string(inner))
    return out


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Write the precompiled layouts (rumpfs/formats/*/_compiled.py, "
                                  "rumpfs/elf/_compiled*.py, rumpfs/etc/_compiled_db185.py, "
                                  "rumpfs/_compiled_compress_layout.py) "
                                  "from the construct declarations.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a generated file is missing or stale")
    args = parser.parse_args(argv)
    stale = 0
    for layout_name in LAYOUTS:
        text = render(layout_name)
        path = generated_path(layout_name)
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        if args.check:
            stale += 1
            print(f"{path}: {'missing' if current is None else 'stale'}; run {COMMAND}",
                  file=sys.stderr)
        else:
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
