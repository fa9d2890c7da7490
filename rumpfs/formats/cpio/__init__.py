"""cpio newc/crc initrd images (the Linux initramfs and Unikraft einitrd format)."""

from __future__ import annotations

from .. import ImageFormat, WriteOptions


class CpioFormat(ImageFormat):
    name = "cpio"
    suffixes = (".cpio",)
    description = "cpio newc (070701) or crc (070702) archive, optionally compressed"
    writes_while_listed = True
    sequential = True

    def add_arguments(self, parser) -> None:
        parser.add_argument("--cpio-variant", choices=["newc", "crc"], default="newc",
                            help="newc (070701, default) or crc (070702, with data checksums)")

    def options(self, args) -> dict:
        return {"cpio_variant": getattr(args, "cpio_variant", "newc")}

    def write(self, tree, sink, options: WriteOptions) -> int:
        from .writer import write_archive
        return write_archive(tree, sink, options.get("cpio_variant", "newc"))

    def probe(self, f, offset: int, size: int) -> bool:
        from .reader import probe
        return probe(f, offset, size)

    def open(self, f, offset: int, size: int):
        from .reader import CpioReader
        return CpioReader(f, offset, size)


FORMAT = CpioFormat()
