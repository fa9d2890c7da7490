"""``rumpfs`` command line: a thin layer over :mod:`rumpfs.api`.

Other parts of rumpfs add their options and commands through the modules in
``EXTENSIONS``: each may define ``add_pack_arguments(parser)``,
``pack_options(args, opts)`` and ``add_commands(subparsers)``.

``rumpfs pack`` with ordinary arguments is parsed without argparse (which
imports re, gettext and enum, and builds every subcommand's parser: together
a good part of the start-up of a small pack).  The pack options are declared
once, in :func:`add_pack_arguments`, against any parser-like object: a
:class:`ArgumentRecorder` records them for :func:`parse_pack_quickly`, which
handles only the forms it gets exactly as argparse would and gives up (None)
on anything else; argparse, built from the same declaration, then decides,
and prints its help and errors as always.
"""

from __future__ import annotations

# _signal rather than signal: the signal module imports enum, which costs
# more start-up than everything rumpfs does before packing.
import _signal
import importlib
import os
import sys

from . import __version__, formats
from .errors import RumpfsError

EXTENSIONS = ("rumpfs.elf.cli", "rumpfs.etc.cli", "rumpfs.buildsys")

DESCRIPTION = """\
Bake a directory tree into a filesystem image (NetBSD FFS, cpio initrd) and,
for an output named *.o, wrap it in an ELF object a kernel links, so the
kernel mounts it as its root with no disk at all.
"""

PACK_EPILOG = """\
Sources are layers applied in order, later wins: the default /etc (stubetc,
unless --no-stubetc), then each SRC directory (DIR:/dest grafts it at /dest
inside the image), then --spec files, then --remove patterns.  The output is reproducible:
owners are 0:0 unless --keep-owner, times are clamped to SOURCE_DATE_EPOCH
when it is set, and nothing depends on directory order or umask.

The format comes from --format or the output name: .cpio, .cpio.gz,
.cpio.xz, .cpio.zst, .cpio.lz4 (cpio newc), .img/.ffs (FFS), .o/.S/.c (an
object holding the image).  The output is written to a temporary file and
renamed at the end: after an error there is no partial output.

examples:
  rumpfs pack rootfs/ -o root.cpio.gz
  rumpfs pack rootfs/ www/:/var/www --remove /etc/motd -o root.img
  SOURCE_DATE_EPOCH=1700000000 rumpfs pack rootfs/ -o root.o --target aarch64
"""


def _extensions():
    for name in EXTENSIONS:
        try:
            yield importlib.import_module(name)
        except ImportError:
            continue


def parse_timestamp(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    import datetime
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        import argparse  # here only: parsing a good value must not load argparse
        raise argparse.ArgumentTypeError(
            f"{text!r}: give seconds since the epoch or an ISO 8601 date") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp())


def _terminal_columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 80


def build_parser():
    """The argparse parser of every command: help, errors, and whatever
    :func:`parse_pack_quickly` leaves to it."""
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse makes a help formatter for every add_argument (to check the
        metavar), and each one asks the terminal for its width: asked once here,
        which keeps building the parser cheap."""

        width = None

        def _get_formatter(self):
            if Parser.width is None:
                Parser.width = _terminal_columns() - 2  # the margin argparse keeps
            return self.formatter_class(prog=self.prog, width=Parser.width)

    parser = Parser(
        prog="rumpfs", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rumpfs {__version__}")
    from .buildsys import print_include_dir_action
    parser.add_argument("--print-include-dir", action=print_include_dir_action(), nargs=0,
                        default=argparse.SUPPRESS,
                        help="print the directory of rumpfs_images.h (for -I) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("pack", help="bake directories into an image or object",
                       description="Bake directories into an image or a linkable object.",
                       epilog=PACK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pack_arguments(p)

    def image_command(name, help_text, func):
        q = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        q.add_argument("image", metavar="IMAGE", help="image file, compressed cpio, or object (.o)")
        q.set_defaults(func=func)
        return q

    q = image_command("ls", "list an image like ls -l", cmd_ls)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q = image_command("cat", "write a file of an image to stdout", cmd_cat)
    q.add_argument("path", metavar="PATH")
    q = image_command("extract", "extract an image into a directory", cmd_extract)
    q.add_argument("directory", metavar="DIR")
    q = image_command("check", "check an image's consistency", cmd_check)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q = image_command("info", "describe an image or object", cmd_info)
    q.add_argument("--json", action="store_true")

    for ext in _extensions():
        if hasattr(ext, "add_commands"):
            ext.add_commands(sub)
    return parser


def add_pack_arguments(p) -> None:
    """Declare every option of ``rumpfs pack`` on ``p``: the argparse parser,
    or an :class:`ArgumentRecorder` for the quick parser."""
    p.add_argument("sources", nargs="*", metavar="SRC",
                   help="host directory, or DIR:/dest to graft it at /dest in the image")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    p.add_argument("-f", "--format", metavar="FMT",
                   help=f"image format: {', '.join(formats.names())} (default: from the output name)")
    p.add_argument("--no-stubetc", dest="stubetc", action="store_false",
                   help="do not start from the default minimal /etc")
    p.add_argument("--spec", action="append", default=[], metavar="FILE",
                   help="spec file creating entries (devices, links...) or setting modes and "
                        "owners without root: the Linux gen_init_cpio list format plus "
                        "'meta PATTERN mode=.. uid=.. gid=..' lines; applied after the directories")
    p.add_argument("--remove", action="append", default=[], metavar="PATTERN",
                   help="remove image paths matching a glob (repeatable; applied last)")
    p.add_argument("--keep-owner", action="store_true",
                   help="keep host uid/gid instead of 0:0")
    p.add_argument("--timestamp", type=parse_timestamp, metavar="TIME",
                   help="set every time to TIME (seconds or ISO 8601); "
                        "default: host times clamped to SOURCE_DATE_EPOCH when set")
    p.add_argument("--compress", choices=["none", "gzip", "xz", "zstd", "lz4"],
                   help="compress a cpio image (default: from the output suffix)")
    p.add_argument("--compress-level", type=int, metavar="N", help="compression level")
    p.add_argument("--endian", choices=["little", "big"],
                   help="byte order of the image metadata (default: the target's, else the host's)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show progress on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("-v", "--verbose", action="store_true", help="print what was written")
    for fmt in formats.available():
        group = p.add_argument_group(f"{fmt.name} options")
        fmt.add_arguments(group)
    for ext in _extensions():
        if hasattr(ext, "add_pack_arguments"):
            ext.add_pack_arguments(p)
    p.set_defaults(func=cmd_pack)


# -- the quick parser of ``rumpfs pack`` ----------------------------------------------

#: The add_argument actions the quick parser handles, with argparse's default for each.
_KIND_DEFAULTS = {"store": None, "store_true": False, "store_false": True, "append": None}
_KNOWN_KEYWORDS = {"action", "dest", "default", "type", "choices", "required", "nargs",
                   "metavar", "help"}
_SUPPRESS = "==SUPPRESS=="  # argparse.SUPPRESS, without importing argparse
_INVALID = object()  # a value its type function refused


class _Declared:
    """One add_argument call.  Its attributes have the names argparse's
    Action uses, so that code setting one after the call (elf/cli.py sets
    ``known``) does on the record what it does on the Action."""

    def __init__(self, flags, kw, defaults):
        self.option_strings = [f for f in flags if f.startswith("-")]
        self.kind = kw.get("action", "store")
        self.nargs = kw.get("nargs")
        self.type = kw.get("type")
        self.choices = kw.get("choices")
        self.required = kw.get("required", False)
        self.metavar = kw.get("metavar")
        self.help = kw.get("help")
        if self.option_strings:
            long_flags = [f for f in flags if f.startswith("--")]
            self.dest = kw.get("dest")
            if self.dest is None:
                self.dest = (long_flags or flags)[0].lstrip("-").replace("-", "_")
        else:
            self.dest = flags[0] if flags else None
        # As argparse: an explicit default, else one given to set_defaults
        # before this call, else the action's own.
        if "default" in kw:
            self.default = kw["default"]
        elif self.dest in defaults:
            self.default = defaults[self.dest]
        else:
            self.default = _KIND_DEFAULTS.get(self.kind)
        self.handled = self._handled(flags, kw)
        self.exclusive = None

    def _handled(self, flags, kw) -> bool:
        """Whether the quick parser treats this argument exactly as argparse."""
        if not flags or set(kw) - _KNOWN_KEYWORDS or self.kind not in _KIND_DEFAULTS:
            return False
        if _SUPPRESS in (self.default, self.dest):
            return False
        if not self.option_strings:  # the positional: only sources, nargs="*"
            return (len(flags) == 1 and self.kind == "store" and self.nargs == "*"
                    and self.type is None and self.choices is None and self.default is None
                    and not self.required and "dest" not in kw)
        if len(self.option_strings) != len(flags) or self.nargs is not None:
            return False
        if self.kind in ("store_true", "store_false"):
            return self.type is None and self.choices is None
        return self.type is None or callable(self.type)

    def takes_value(self) -> bool:
        return self.kind in ("store", "append")

    def convert(self, text):
        if self.type is None:
            return text
        try:
            return self.type(text)
        except Exception:  # argparse, run next, reports it (or lets it through) as always
            return _INVALID


class _ExclusiveGroup:
    def __init__(self, required):
        self.required = required
        self.members = []


class ArgumentRecorder:
    """Accepts the calls :func:`add_pack_arguments` makes on an argparse
    parser (add_argument, add_argument_group, add_mutually_exclusive_group,
    set_defaults), records them, and parses with them (:meth:`parse`)."""

    def __init__(self, parent=None, exclusive=None):
        # Groups share their parser's records, as argparse groups share its actions.
        self.arguments = parent.arguments if parent else []
        self.defaults = parent.defaults if parent else {}
        self.exclusive_groups = parent.exclusive_groups if parent else []
        self._exclusive = exclusive

    def add_argument(self, *flags, **kw) -> _Declared:
        declared = _Declared(flags, kw, self.defaults)
        if self._exclusive is not None:
            declared.exclusive = self._exclusive
            self._exclusive.members.append(declared)
        self.arguments.append(declared)
        return declared

    def add_argument_group(self, title=None, description=None, **kw) -> ArgumentRecorder:
        return ArgumentRecorder(self, self._exclusive)

    def add_mutually_exclusive_group(self, required=False) -> ArgumentRecorder:
        group = _ExclusiveGroup(required)
        self.exclusive_groups.append(group)
        return ArgumentRecorder(self, group)

    def set_defaults(self, **kw) -> None:
        self.defaults.update(kw)
        for declared in self.arguments:  # argparse updates the arguments declared so far
            if declared.dest in kw:
                declared.default = kw[declared.dest]

    def parse(self, args) -> dict | None:
        """The values by dest that argparse gives for ``args``, or None for
        anything not handled here exactly as argparse handles it: help,
        errors, abbreviations, values starting with '-', '--', short
        options with attached values, words on both sides of an option."""
        positionals = [d for d in self.arguments if not d.option_strings]
        if (len(positionals) != 1 or not all(d.handled for d in self.arguments)
                or any(group.required for group in self.exclusive_groups)):
            return None
        by_flag = {}
        for declared in self.arguments:
            for flag in declared.option_strings:
                if flag in by_flag:
                    return None  # argparse refuses the conflict
                by_flag[flag] = declared

        # Defaults as argparse sets them: the first argument of each dest, then set_defaults.
        values = {}
        for declared in self.arguments:
            values.setdefault(declared.dest, declared.default)
        for dest, value in self.defaults.items():
            values.setdefault(dest, value)

        words = []
        # argparse gives the positional (nargs="*") the first run of words
        # only: a word after an option that follows that run is an error.
        words_ended = False
        seen = set()
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if not isinstance(arg, str):
                return None
            if not arg.startswith("-"):
                if words_ended:
                    return None
                words.append(arg)
                continue
            if words:  # an option after the words ends them
                words_ended = True
            declared, value = by_flag.get(arg), None
            if declared is None:
                flag, equals, value = arg.partition("=")
                if not flag.startswith("--") or not equals or not value:
                    return None
                declared = by_flag.get(flag)
                if declared is None or not declared.takes_value():
                    return None
            if declared.kind == "store_true":
                values[declared.dest] = True
            elif declared.kind == "store_false":
                values[declared.dest] = False
            else:
                if value is None:
                    if i == len(args) or not isinstance(args[i], str):
                        return None
                    value = args[i]
                    i += 1
                if value.startswith("-"):
                    return None
                value = declared.convert(value)
                if value is _INVALID or (declared.choices is not None
                                         and value not in declared.choices):
                    return None
                if declared.kind == "append":
                    items = values[declared.dest]
                    if items is None:
                        items = []
                    elif type(items) is not list:
                        return None
                    value = items + [value]  # a new list, as argparse copies it
                values[declared.dest] = value
            seen.add(declared)

        for declared in self.arguments:
            if declared.required and declared not in seen:
                return None
        for group in self.exclusive_groups:
            if len([d for d in group.members if d in seen]) > 1:
                return None
        values[positionals[0].dest] = words
        # argparse passes a string default that was not overridden through the type function.
        for declared in self.arguments:
            if (declared.option_strings and declared not in seen
                    and isinstance(declared.default, str)
                    and values[declared.dest] is declared.default):
                value = declared.convert(declared.default)
                if value is _INVALID:
                    return None
                values[declared.dest] = value
        return values


class Arguments:
    """Parsed arguments: the attributes argparse's Namespace would have."""

    def __init__(self, values: dict):
        self.__dict__.update(values)

    def __repr__(self):
        return "Arguments(" + ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items())) + ")"


def parse_pack_quickly(argv) -> Arguments | None:
    """``rumpfs pack ...`` parsed without argparse, or None when argparse
    must decide."""
    if not argv or argv[0] != "pack":
        return None
    recorder = ArgumentRecorder()
    add_pack_arguments(recorder)
    values = recorder.parse(argv[1:])
    if values is None:
        return None
    # As argparse: the subcommand's name, then the subcommand's values.
    return Arguments({"command": "pack", **values})


def pack_options(args):
    from .api import PackOptions
    opts = PackOptions(
        format=args.format, stubetc=args.stubetc, remove=args.remove, spec=args.spec,
        keep_owner=args.keep_owner, timestamp=args.timestamp, compress=args.compress,
        compress_level=args.compress_level, byteorder=args.endian, progress=args.progress)
    for fmt in formats.available():
        opts.format_options.update(fmt.options(args))
    for ext in _extensions():
        if hasattr(ext, "pack_options"):
            ext.pack_options(args, opts)
    return opts


def cmd_pack(args) -> int:
    from .api import pack
    if not args.sources and not args.stubetc and not args.spec:
        raise RumpfsError("nothing to pack: give a source directory or drop --no-stubetc")
    result = pack(args.sources, args.output, pack_options(args))
    if args.json:
        from .buildsys import print_pack_json
        print_pack_json(result)
    elif args.verbose:
        what = result.format + (f" in {result.container}" if result.container else "")
        print(f"{result.output}: {what}, {result.entries} entries, image {result.image_size} bytes")
        for side in result.side_outputs:
            print(f"{side}: the image, which {result.output} includes")
    return 0


def cmd_ls(args) -> int:
    import json

    from .inspect import open_image
    reader = open_image(args.image)
    out = sys.stdout
    for entry in reader.entries():
        if args.json:
            out.write(json.dumps(entry.as_json()) + "\n")
        else:
            out.write(entry.ls_line() + "\n")
    return 0


def cmd_cat(args) -> int:
    from .inspect import open_image
    reader = open_image(args.image)
    entry = reader.find(args.path)
    if entry.kind != 0o100000:
        raise RumpfsError(f"{args.path}: not a regular file in {args.image}")
    out = sys.stdout.buffer
    for chunk in reader.read(entry):
        out.write(chunk)
    out.flush()
    return 0


def cmd_extract(args) -> int:
    from .inspect import extract, open_image
    extract(open_image(args.image), args.directory)
    return 0


def cmd_check(args) -> int:
    from .inspect import open_image
    reader = open_image(args.image)
    problems = reader.check()
    if args.json:
        from .buildsys import print_check_json
        return print_check_json(args.image, reader.format_name, problems)
    for p in problems:
        print(f"{args.image}: {p}")
    if problems:
        print(f"{args.image}: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{args.image}: {reader.format_name}: clean")
    return 0


def cmd_info(args) -> int:
    import json

    from .inspect import describe
    info = describe(args.image)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print_info(info)
    return 0


def _print_info(info, indent=""):
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_info(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{indent}{key}:")
            for item in value:
                print(f"{indent}  - " + ", ".join(f"{k}={v}" for k, v in item.items()))
        else:
            print(f"{indent}{key}: {value}")


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    _signal.signal(_signal.SIGTERM, _terminate)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_pack_quickly(argv)
    if args is None:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RumpfsError as e:
        print(f"rumpfs: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rumpfs: interrupted; no output written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
