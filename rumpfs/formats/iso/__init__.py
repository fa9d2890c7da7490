"""ISO 9660 images with Rock Ridge and Joliet (CD-ROM, VM and boot media).

The writer (:mod:`.writer`) lays out the image itself; pycdlib, xorriso,
isoinfo and the Linux kernel read it back in the tests.  The volume label
comes from ``--label``, the option the FFS format declares (one option
serves every format that has a label).
"""

from __future__ import annotations

from .. import ImageFormat, WriteOptions


class IsoFormat(ImageFormat):
    name = "iso"
    suffixes = (".iso",)
    description = "ISO 9660 level 3 with Rock Ridge and Joliet"
    #: label is declared by the FFS format's arguments and serves ISO too.
    option_names = ("label",)

    def write(self, tree, sink, options: WriteOptions) -> int:
        from .writer import write_image
        return write_image(tree, sink, options.extra)

    def probe(self, f, offset: int, size: int) -> bool:
        # Imported here: every command line lists this format (its
        # options), few read or write an ISO image.
        from .layout import SECTOR, STANDARD_ID, SYSTEM_AREA_SECTORS

        where = SYSTEM_AREA_SECTORS * SECTOR
        if size < where + SECTOR:
            return False
        f.seek(offset + where)
        return f.read(6)[1:6] == STANDARD_ID

    def open(self, f, offset: int, size: int):
        from .reader import IsoReader
        return IsoReader(f, offset, size)


FORMAT = IsoFormat()
