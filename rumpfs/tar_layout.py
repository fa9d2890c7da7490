"""The tar header, as the archive layers read it (rumpfs.archives).

POSIX.1-2017 ``pax`` (ustar interchange format) and GNU tar's ``tar.h``:
every member starts with a 512-byte block whose fields are text -- names
NUL-terminated unless they fill their field, numbers in octal digits ended
by a NUL or a space (GNU tar writes a number too large for its digits in
base 256, the first byte's high bit set) -- followed by the member's data in
whole blocks.  ``chksum`` is the sum of the header's bytes, its own eight
counted as spaces.  GNU's format keeps times and a sparse map where ustar
has ``prefix``; type ``x`` (pax) and ``L``/``K`` (GNU) members carry the
next member's long name, link name, size or times in their data.

The header is declared once, below, with construct.  The reader unpacks it
with one ``struct`` format derived from that declaration (:data:`FORMAT`)
because it handles one header per file; as for the cpio layout, the
format comes from ``_compiled_tar_layout.py`` (``python -m
rumpfs.formats.precompile``) when that was generated from this very source,
else it is derived from the declaration (importing construct).
"""

from __future__ import annotations

from .formats.precompile import load

#: Headers and data come in blocks of this size.
BLOCK = 512
NAME_SIZE = 100
PREFIX_SIZE = 155
#: Width of the numeric fields: octal digits and their terminator.
NUMBER8 = 8
NUMBER12 = 12
#: What follows ``prefix`` to the end of the block.
HEADER_PAD = 12
#: Where the checksum field sits, and its width (summed as spaces).
CHKSUM_OFFSET = 148
CHKSUM_SPACES = NUMBER8 * ord(" ")
#: The first byte of a base-256 number (GNU): high bit set, 0xff if negative.
BASE256_POSITIVE = 0x80
BASE256_NEGATIVE = 0xFF


def _declare():
    """The construct declaration (imports construct)."""
    from construct import Bytes, Padding, Struct

    return Struct(
        "name" / Bytes(NAME_SIZE),
        "mode" / Bytes(NUMBER8),
        "uid" / Bytes(NUMBER8),
        "gid" / Bytes(NUMBER8),
        "size" / Bytes(NUMBER12),
        "mtime" / Bytes(NUMBER12),
        "chksum" / Bytes(NUMBER8),
        "typeflag" / Bytes(1),
        "linkname" / Bytes(NAME_SIZE),
        "magic" / Bytes(6),
        "version" / Bytes(2),
        "uname" / Bytes(32),
        "gname" / Bytes(32),
        "devmajor" / Bytes(NUMBER8),
        "devminor" / Bytes(NUMBER8),
        "prefix" / Bytes(PREFIX_SIZE),
        Padding(HEADER_PAD),
    )


def __getattr__(name: str):
    if name != "Header":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _declare()


def precompile() -> dict:
    """The ``struct`` format of the header and its field names, in order
    (what ``python -m rumpfs.formats.precompile`` writes; imports construct)."""
    from .formats.precompile import describe

    header = _declare()
    fmt, fields = describe(header)
    return {"FORMAT": fmt, "FIELDS": tuple(name for name, *_ in fields),
            "SIZE": header.sizeof()}


#: The generated module, when it was generated from this very source; else
#: None (construct derives the same).
_GENERATED = load(__name__, globals().get("__file__"))
_facts = precompile() if _GENERATED is None else vars(_GENERATED)
#: The header's fields as ``struct`` items (``Ns`` each, the padding ``x``) ...
FORMAT = _facts["FORMAT"]
#: ... and their names, in the order ``struct.unpack`` gives them.
FIELDS = _facts["FIELDS"]
SIZE = _facts["SIZE"]
del _facts
assert SIZE == BLOCK
