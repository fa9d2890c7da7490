"""The ``rumpfs bundle`` subcommand: argparse setup over :func:`rumpfs.bundle.build.bundle`."""

from __future__ import annotations

import os

from ..errors import RumpfsError

EPILOG = """\
output kinds, from OUT's name:
  .iso          hybrid ISO: boots as a CD-ROM and as a hard disk (ISOLINUX, BIOS;
                with --uefi also GRUB under UEFI)
  .img, .raw    the same bytes, a bootable MBR disk (GPT with --uefi)
  .vhd          Azure's fixed VHD (raw disk of whole MiB + 512-byte footer)
  .tar.gz       GCE's import format: one member disk.raw, GNU tar, gzip

A Multiboot kernel gets the root image and each --module as Multiboot modules,
in order; --config is validated and put on the kernel command line when
ISOLINUX keeps it intact, else into the file /json.cfg named by
_RUMPRUN_ROOTFSCFG=/json.cfg (-v says which; always the file with --uefi, as
GRUB escapes quotes). A Linux bzImage gets --root as its initrd. Dates come
from SOURCE_DATE_EPOCH (default 0). See docs/bundle.md.

example:
  rumpfs pack rootfs/ -o root.ffs
  rumpfs bundle app.bin --root root.ffs --config cfg.json -o app.iso -v
  qemu-system-x86_64 -m 128 -cdrom app.iso -serial stdio
"""


def add_command(sub) -> None:
    """Register ``bundle`` on the subparsers ``sub`` of rumpfs's parser."""
    import argparse
    p = sub.add_parser("bundle", help="make a bootable machine image from a kernel, root and config",
                       description="Make a bootable machine image (ISO, disk, VHD, GCE tar.gz) "
                                   "from a kernel, its root image and its configuration.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kernel", metavar="KERNEL", help="Multiboot 1 kernel (ELF) or Linux bzImage")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file: .iso, .img, .raw, .vhd or .tar.gz")
    p.add_argument("--root", metavar="IMAGE|DIR",
                   help="root image: first Multiboot module, or the initrd; a directory is packed "
                        "first (ffs for a Multiboot kernel, cpio for Linux, or --format)")
    p.add_argument("--module", action="append", default=[], metavar="FILE[=ARGS]",
                   help="another Multiboot module and the arguments of its string (repeatable)")
    p.add_argument("--config", metavar="JSON", help="rumprun JSON configuration (validated)")
    p.add_argument("--cmdline", default="", metavar="ARGS", help="kernel command line arguments")
    p.add_argument("--uefi", action="store_true",
                   help="also boot under UEFI: an El Torito EFI entry and an EFI system partition "
                        "with a standalone GRUB (made once by grub-mkstandalone and cached)")
    p.add_argument("--loader-dir", metavar="DIR",
                   help="take isolinux.bin, isohdpfx.bin, ldlinux.c32, libcom32.c32 and mboot.c32 "
                        "from DIR instead of Debian's isolinux and syslinux-common directories")
    from ..cli import parse_timestamp
    g = p.add_argument_group("packing a --root DIR (as rumpfs pack)")
    g.add_argument("--layer", action="append", default=[], metavar="SRC",
                   help="another source over --root DIR, as rumpfs pack's SRC: a directory, tar or "
                        "cpio archive, oci:DIR[:REF], docker-archive:FILE; SRC:/dest grafts it "
                        "(repeatable; without --root, the root is packed from the layers alone)")
    g.add_argument("-f", "--format", metavar="FMT", help="image format: cpio, ffs, ffs2")
    g.add_argument("--no-stubetc", dest="stubetc", action="store_false",
                   help="do not start from the default minimal /etc")
    g.add_argument("--remove", action="append", default=[], metavar="GLOB",
                   help="remove image paths matching a glob (repeatable)")
    g.add_argument("--spec", action="append", default=[], metavar="FILE",
                   help="spec file of devices, owners and modes (repeatable)")
    g.add_argument("--keep-owner", action="store_true", help="keep host uid/gid instead of 0:0")
    g.add_argument("--timestamp", type=parse_timestamp, metavar="TIME",
                   help="set every time to TIME (seconds or ISO 8601); default: host times "
                        "clamped to SOURCE_DATE_EPOCH when set")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say what was written and where the config went")
    p.set_defaults(func=cmd_bundle)


def source_date_epoch() -> int:
    text = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise RumpfsError(f"SOURCE_DATE_EPOCH={text!r}: not a whole number of seconds") from None
    if value < 0:
        raise RumpfsError(f"SOURCE_DATE_EPOCH={text!r}: negative")
    return value


def cmd_bundle(args) -> int:
    from ..api import PackOptions
    from .build import bundle
    pack_options = PackOptions(format=args.format, stubetc=args.stubetc, remove=args.remove, spec=args.spec,
                               keep_owner=args.keep_owner, timestamp=args.timestamp)
    result = bundle(args.kernel, args.output, root=args.root, modules=args.module, config=args.config,
                    cmdline=args.cmdline, loader_dir=args.loader_dir, epoch=source_date_epoch(),
                    pack_options=pack_options, uefi=args.uefi, layers=args.layer)
    if args.verbose:
        for line in result.describe():
            print(line)
    return 0
