"""cpio newc/crc initrd images (the Linux initramfs and Unikraft einitrd format)."""

from __future__ import annotations

from ...errors import OptionError
from .. import ImageFormat, WriteOptions

VARIANTS = ("newc", "crc")


class CpioFormat(ImageFormat):
    name = "cpio"
    suffixes = (".cpio",)
    description = "cpio newc (070701) or crc (070702) archive, optionally compressed"
    writes_while_listed = True
    option_names = ("cpio_variant",)
    sequential = True

    def add_arguments(self, parser) -> None:
        parser.add_argument("--cpio-variant", choices=VARIANTS,
                            help="newc (070701, default) or crc (070702, with data checksums)")

    def options(self, args) -> dict:
        variant = getattr(args, "cpio_variant", None)
        return {} if variant is None else {"cpio_variant": variant}

    def check_options(self, options: dict):
        variant = options.get("cpio_variant", "newc")
        if variant not in VARIANTS:
            raise OptionError(f"--cpio-variant {variant}: give {' or '.join(VARIANTS)}")
        return None

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
