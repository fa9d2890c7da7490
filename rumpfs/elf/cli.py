"""Command-line options for objects (``pack -o x.o``) and the ``wrap`` command.

Thin: everything is in :mod:`rumpfs.elf` (``wrap``) and its container module.
"""

from __future__ import annotations

import argparse

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


def _wrap_format(text: str) -> str:
    """An image format name the registry records (ours, and iso/fat/raw for wrap)."""
    from .registry import FORMAT_CODES
    if text.lower() not in FORMAT_CODES:
        raise argparse.ArgumentTypeError(f"{text!r}: give {', '.join(FORMAT_CODES)}")
    return text.lower()


class _WhenShown:
    """Help text made only when help is printed (argparse expands
    ``%(name)s`` from the action's attributes at that moment): the target
    and template tables import the ELF layouts, which a run that prints no
    help need not pay for."""

    def __init__(self, make):
        self.make = make

    def __str__(self) -> str:
        return self.make()


def _target_names() -> str:
    from . import targets
    return ", ".join(targets.names())


def _template_names() -> str:
    from . import templates
    return ", ".join(templates.BUILTIN)


def _default_name() -> str:
    from . import templates
    return templates.DEFAULT_NAME


def add_object_arguments(group, image_format: bool = True) -> None:
    action = group.add_argument("--target", metavar="NAME",
                                help="target: %(known)s (default: the host)")
    action.known = _WhenShown(_target_names)
    group.add_argument("--like", metavar="OBJECT",
                       help="copy class, byte order, machine, flags and OS ABI from this ELF file")
    group.add_argument("--float-abi", metavar="ABI",
                       help="float ABI: arm hard|soft, riscv double|single|soft|quad, "
                            "loongarch64 double|single|soft")
    action = group.add_argument("--template", metavar="NAME|FILE.toml",
                                help="section template: %(known)s (default rumpfs), or a TOML file")
    action.known = _WhenShown(_template_names)
    action = group.add_argument("--name", metavar="NAME", help="component name in section and "
                                "symbol names (C identifier; default %(default_name)s)")
    action.default_name = _WhenShown(_default_name)
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
                           help="image format inside the object, the same as --format (default: "
                                "cpio for linux-initramfs and unikraft-einitrd, else ffs)")


#: The container options (PackOptions.container_options) by name.
OPTION_KEYS = ("target", "like", "float_abi", "template", "name", "mount_point", "writable",
         "align", "registry", "image_format")


def add_pack_arguments(parser) -> None:
    add_object_arguments(parser.add_argument_group(
        "object options", "for an output named .o, .S/.s or .c"))


def pack_options(args, opts) -> None:
    for key in OPTION_KEYS:
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
    p.add_argument("--format", dest="image_format", metavar="FMT", type=_wrap_format,
                   help="image format for the registry (default: detected, else raw)")
    add_object_arguments(p.add_argument_group("object options"), image_format=False)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_wrap)


def check_template_format(template: str | None, image_format: str | None) -> None:
    """An image format named for wrap must be one the template's kernel reads
    (raw, an unknown kind of image, is left to the user)."""
    from ..errors import OptionError
    from . import registry, templates
    if template is None or image_format is None:
        return
    tmpl = templates.resolve(template)
    code = registry.format_code(image_format)
    if tmpl.formats and code != registry.FMT_RAW and code not in map(registry.format_code, tmpl.formats):
        raise OptionError(f"--template {template}: its kernel reads {' or '.join(tmpl.formats)} "
                          f"images, not {image_format}")


def cmd_wrap(args) -> int:
    from . import wrap
    check_template_format(args.template, args.image_format)
    size = wrap(args.image, args.output, target=args.target, like=args.like,
                float_abi=args.float_abi, template=args.template, name=args.name,
                mount_point=args.mount_point, writable=bool(args.writable),
                image_format=args.image_format, align=args.align, registry=args.registry)
    if args.verbose:
        print(f"{args.output}: image {size} bytes")
    return 0
