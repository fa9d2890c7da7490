"""FAT12/16/32 images with VFAT long names (EFI system partitions, disks
every OS reads).

The writer (:mod:`.writer`) picks the type by cluster count as the FAT
specification defines; fsck.fat, mtools and the Linux kernel judge it in the
tests.  ``--label`` and ``--size`` are the options the FFS format declares
(one option serves every format that has a label or a size).
"""

from __future__ import annotations

from .. import ImageFormat, WriteOptions


class FatFormat(ImageFormat):
    name = "fat"
    suffixes = (".fat", ".vfat")
    description = "FAT12/16/32 with VFAT long names"
    #: label and size are declared by the FFS format's arguments and serve FAT too.
    option_names = ("fat_type", "fat_skip_special", "label", "size")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--fat-type", dest="fat_type", choices=["12", "16", "32"],
                            help="FAT: force FAT12, FAT16 or FAT32 (default: by cluster count, "
                                 "the smallest image)")
        parser.add_argument("--fat-skip-special", dest="fat_skip_special", action="store_true",
                            help="FAT: leave out symlinks, devices, FIFOs and sockets "
                                 "(else they are an error)")

    def options(self, args) -> dict:
        out = {}
        if getattr(args, "fat_type", None) is not None:
            out["fat_type"] = int(args.fat_type)
        if getattr(args, "fat_skip_special", False):
            out["fat_skip_special"] = True
        return out

    def write(self, tree, sink, options: WriteOptions) -> int:
        from .writer import write_image
        return write_image(tree, sink, options.extra)

    def probe(self, f, offset: int, size: int) -> bool:
        # Imported here: every command line lists this format (its
        # options), few read or write a FAT image.
        from .layout import BOOT_SIGNATURE, SECTOR
        from .reader import looks_like_fat

        if size < SECTOR:
            return False
        f.seek(offset)
        boot = f.read(SECTOR)
        return boot[SECTOR - 2:] == BOOT_SIGNATURE and looks_like_fat(boot)

    def open(self, f, offset: int, size: int):
        from .reader import FatReader
        return FatReader(f, offset, size)


FORMAT = FatFormat()
