"""Command-line options for objects (``pack -o x.o``) and the ``wrap`` command.

Thin: everything is in :mod:`rumpfs.elf` (``wrap``) and its container module.
"""

from __future__ import annotations

import argparse

from . import targets, templates

OBJECT_EPILOG = """\
An output named .o is an ELF relocatable object holding the image; .S/.s is
assembler source that .incbins OUT.img; .c is a C array.  The object defines
start/end/size symbols (by the template) and a registry record in section
rumpfs_images, so a kernel finds every image between __start_rumpfs_images
and __stop_rumpfs_images.  See docs/elf.md.
"""


def _align(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number") from None
    return value


def add_object_arguments(group, image_format: bool = True) -> None:
    group.add_argument("--target", metavar="NAME",
                       help=f"target: {', '.join(targets.names())} (default: the host)")
    group.add_argument("--like", metavar="OBJECT",
                       help="copy class, byte order, machine, flags and OS ABI from this ELF file")
    group.add_argument("--float-abi", metavar="ABI",
                       help="float ABI: arm hard|soft, riscv double|single|soft|quad, "
                            "loongarch64 double|single|soft")
    group.add_argument("--template", metavar="NAME|FILE.toml",
                       help=f"section template: {', '.join(templates.BUILTIN)} "
                            f"(default rumpfs), or a TOML file")
    group.add_argument("--name", metavar="NAME",
                       help=f"component name in section and symbol names "
                            f"(C identifier; default {templates.DEFAULT_NAME})")
    group.add_argument("--mount-point", metavar="PATH",
                       help="mount point recorded in the registry (default /)")
    group.add_argument("--writable", action="store_true", default=None,
                       help="put the image in the template's writable section (.data.*) "
                            "for kernels that mount it read-write in place (MFS)")
    group.add_argument("--align", type=_align, metavar="N",
                       help="section alignment (power of two; default: the template's, 4096)")
    reg = group.add_mutually_exclusive_group()
    reg.add_argument("--registry", dest="registry", action="store_true", default=None,
                     help="add the rumpfs_images record (default: per template)")
    reg.add_argument("--no-registry", dest="registry", action="store_false")
    if image_format:
        group.add_argument("--image-format", metavar="FMT",
                           help="image format inside the object (default ffs)")


_KEYS = ("target", "like", "float_abi", "template", "name", "mount_point", "writable",
         "align", "registry", "image_format")


def add_pack_arguments(parser) -> None:
    add_object_arguments(parser.add_argument_group(
        "object options", "for an output named .o, .S/.s or .c"))


def pack_options(args, opts) -> None:
    for key in _KEYS:
        value = getattr(args, key, None)
        if value is not None:
            opts.container_options[key] = value


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "wrap", help="wrap an existing image file into a linkable object",
        description="Wrap an existing image file into an ELF object (.o), assembly "
                    "(.S/.s) or C (.c) that a kernel links.",
        epilog=OBJECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", help="image file (any bytes)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output: NAME.o, NAME.S, NAME.s or NAME.c")
    p.add_argument("--format", dest="image_format", metavar="FMT",
                   help="image format for the registry (default: detected, else raw)")
    add_object_arguments(p.add_argument_group("object options"), image_format=False)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_wrap)


def cmd_wrap(args) -> int:
    from . import wrap
    size = wrap(args.image, args.output, target=args.target, like=args.like,
                float_abi=args.float_abi, template=args.template, name=args.name,
                mount_point=args.mount_point, writable=bool(args.writable),
                image_format=args.image_format, align=args.align, registry=args.registry)
    if args.verbose:
        print(f"{args.output}: image {size} bytes")
    return 0
