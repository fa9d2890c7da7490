"""Precompiled layouts: what the writers need of the construct declarations,
worked out ahead of time.

Every on-disk structure is declared once, with construct, in its format's
``layout`` module.  The writers need only the plain facts behind those
declarations -- ``struct`` format characters, field names, sizes, offsets --
but importing construct costs 35-55 ms (it imports pdb, inspect,
dataclasses...), more than packing a small tree.  So this module derives
those facts from the declarations and writes them, as Python literals, into
a generated module beside each layout (``_compiled.py``), stamped with the
CRC-32 of the layout's source::

    python -m rumpfs.formats.precompile           # regenerate
    python -m rumpfs.formats.precompile --check   # exit 1 when one is stale

At run time a layout asks :func:`load` for its generated module and gets it
only when the stamp matches its own source; otherwise (the layout was
edited, or its source cannot be read) it gets None and derives the same
facts from construct: slower, never different.  A stale generated file can
cost start-up time but cannot make a wrong image.  The test suite runs the
check, so a commit that changes a layout also carries the regenerated file.

Importing this module is cheap (no construct, no hashlib): the layouts
import it on the writer's path.  Only :func:`render` and :func:`main` import
the layouts' construct declarations.
"""

from __future__ import annotations

import importlib
import os
import sys
import zlib

#: Layout modules that have a generated module.  Each provides
#: ``precompile() -> {NAME: value}``: the module-level names to generate, with
#: values made of Python literals (ints, strings, None, tuples, dicts).
LAYOUTS = ("rumpfs.formats.ffs.layout", "rumpfs.formats.cpio.layout")
#: The generated module's name, in the layout's package.
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
    """``rumpfs.formats.ffs.layout`` -> ``rumpfs.formats.ffs._compiled``."""
    return layout_name.rpartition(".")[0] + "." + GENERATED


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
    return os.path.join(os.path.dirname(layout.__file__), GENERATED + ".py")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Write the precompiled layouts (rumpfs/formats/*/_compiled.py) "
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
