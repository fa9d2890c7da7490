"""``rumpfs`` command line: a thin layer over :mod:`rumpfs.api`, parsed by argparse.

Other parts of rumpfs add their options and commands through the modules in
``EXTENSIONS``: each may define ``add_pack_arguments(parser)``,
``pack_options(args, opts)`` and ``add_commands(subparsers)``.

Every error is one line on stderr, ``rumpfs: error: ...``, with exit status
1: a bad or contradictory option as much as a bad input file (see
docs/options.md).  Options that argparse alone cannot judge (ranges that
depend on the format or the compressor, contradictions) are checked by
:func:`rumpfs.api.check_options` before any work.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from . import __version__, formats, sources
from .errors import RumpfsError

EXTENSIONS = ("rumpfs.elf.cli", "rumpfs.etc.cli", "rumpfs.buildsys")

DESCRIPTION = """\
Bake a directory tree into a filesystem image (NetBSD FFS, cpio initrd) and,
for an output named *.o, wrap it in an ELF object a kernel links, so the
kernel mounts it as its root with no disk at all.
"""

PACK_USAGE = "%(prog)s [SRC ...] -o OUT [options]"

PACK_EPILOG = """\
Sources are layers applied in order, later wins: the default /etc (stubetc,
unless --no-stubetc), then each SRC (a directory, a tar or cpio archive,
oci:DIR[:REF] or docker-archive:FILE; SRC:/dest grafts it at /dest inside
the image), then --spec files, then --mtree specs, then --remove patterns.
The output is reproducible: owners are 0:0 unless --keep-owner, times are
clamped to SOURCE_DATE_EPOCH when it is set, and nothing depends on
directory order or umask.

Defaults and generated files: the default /etc holds hosts, services,
protocols, networks, nsswitch.conf, resolv.conf, shells and the
account files master.passwd and group.  Each is added only where your
layers have no file of that name; the account files are left out altogether
when your layers bring passwd, group, shadow, gshadow, pwd.db or spwd.db but
no master.passwd (a Linux-style /etc).  When the final tree has an
/etc/master.passwd (yours or the default), pwd.db, spwd.db and passwd are
generated from it (--no-pwdb skips that), and --config adds
/etc/rumprun.json.  Nothing else is generated.

The format comes from --format or the output name: .cpio, .cpio.gz,
.cpio.xz, .cpio.zst, .cpio.lz4 (cpio newc), .img (FFS, or the file system
--format names), .ffs (FFS), .iso (ISO 9660), .fat (FAT), .o/.S/.c (an
object holding the image: FFS, or cpio for --template linux-initramfs and
unikraft-einitrd; --image-format chooses), - (cpio to stdout).  Options
that contradict each other or the output name are errors (docs/options.md
lists the rules).  The output is created unnamed and linked into place when
complete: after an error, Ctrl-C or a kill there is no partial output.

examples:
  rumpfs pack rootfs/ -o root.cpio.gz
  rumpfs pack rootfs/ www/:/var/www --remove /etc/motd -o root.img
  SOURCE_DATE_EPOCH=1700000000 rumpfs pack rootfs/ -o root.o --target aarch64
  rumpfs pack rootfs/ -o initramfs.o --template linux-initramfs --compress gzip
"""

#: --endian spellings: ours and makefs's (-B be|le|4321|1234|big|little).
ENDIAN_SPELLINGS = {"big": "big", "be": "big", "4321": "big",
                    "little": "little", "le": "little", "1234": "little"}

#: Largest --timestamp: its nanoseconds still fit the signed 64-bit times of UFS2.
MAX_TIMESTAMP = ((1 << 63) - 1) // 1_000_000_000


def _extensions():
    for name in EXTENSIONS:
        try:
            yield importlib.import_module(name)
        except ImportError:
            continue


def parse_timestamp(text: str) -> int:
    """Seconds since the epoch, or an ISO 8601 date (UTC unless it says otherwise)."""
    try:
        value = int(text)
    except ValueError:
        import datetime  # only for a date: a few ms of every run's start-up otherwise
        try:
            dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give seconds since the epoch or an ISO 8601 date") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        value = int(dt.timestamp())
    if not 0 <= value <= MAX_TIMESTAMP:
        raise argparse.ArgumentTypeError(f"{text}: must be from 0 (1970) to {MAX_TIMESTAMP}")
    return value


def parse_endian(text: str) -> str:
    """'big' or 'little' from any of makefs's spellings."""
    try:
        return ENDIAN_SPELLINGS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give {', '.join(ENDIAN_SPELLINGS)}") from None


class Parser(argparse.ArgumentParser):
    """argparse with rumpfs's error convention: one line, exit status 1."""

    def error(self, message):
        self.exit(1, f"rumpfs: error: {shown(message)} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    """The parser of every command."""
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
                       usage=PACK_USAGE,
                       description="Bake directories into an image or a linkable object.",
                       epilog=PACK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pack_arguments(p)

    def image_command(name, help_text, func):
        q = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        q.add_argument("image", metavar="IMAGE", help="image file, compressed cpio, or object (.o)")
        q.set_defaults(func=func)
        return q

    q = image_command("ls", "list an image like ls -l", cmd_ls)
    q.add_argument("paths", nargs="*", metavar="PATH",
                   help="list only these paths inside the image, a directory with "
                        "everything below it (default: the whole image)")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q = image_command("cat", "write a file of an image to stdout", cmd_cat)
    q.add_argument("path", metavar="PATH",
                   help="path inside the image; symlinks are followed inside the image "
                        "(at most 40; a target that leaves the image is an error)")
    q = image_command("extract", "extract an image into a directory", cmd_extract)
    q.description = "Extract an image into a directory, never writing outside it."
    q.epilog = EXTRACT_EPILOG
    q.formatter_class = argparse.RawDescriptionHelpFormatter
    q.add_argument("directory", metavar="DIR", help="target directory (created if needed)")
    q.add_argument("paths", nargs="*", metavar="PATH",
                   help="extract only these paths inside the image, with everything below them")
    q = image_command("check", "check an image's consistency", cmd_check)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q = image_command("info", "describe an image or object", cmd_info)
    q.add_argument("--json", action="store_true")

    for ext in _extensions():
        if hasattr(ext, "add_commands"):
            ext.add_commands(sub)
    from .bundle.cli import add_command as add_bundle_command
    add_bundle_command(sub)
    for command in sub.choices.values():
        # Words no option takes are reported by the command's parser, with its help.
        command.set_defaults(command_parser=command)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def add_pack_arguments(p: argparse.ArgumentParser) -> None:
    """Declare every option of ``rumpfs pack`` on ``p``."""
    p.add_argument("sources", nargs="*", metavar="SRC",
                   help="host directory, tar or cpio archive, oci:DIR[:REF] or "
                        "docker-archive:FILE; SRC:/dest grafts it at /dest in the image")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    p.add_argument("-f", "--format", metavar="FMT",
                   help=f"image format: {', '.join(formats.names())} (default: from the output "
                        f"name; for an object, the image inside)")
    p.add_argument("--no-stubetc", dest="stubetc", action="store_false",
                   help="do not start from the default minimal /etc (see below for what it "
                        "holds and when its files step aside)")
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
                   help="compress a cpio image (default: from the output suffix; "
                        "must agree with it)")
    p.add_argument("--compress-level", type=int, metavar="N",
                   help="compression level: gzip 1-9, xz 0-9, zstd 1-22, lz4 1-12")
    p.add_argument("--endian", type=parse_endian, metavar="ORDER",
                   help="byte order of the image metadata: big (be, 4321) or little (le, 1234); "
                        "default: the target's, else the host's")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show progress on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="print what was written")
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="print no warnings (and no progress unless --progress)")
    for fmt in formats.available():
        group = p.add_argument_group(f"{fmt.name} options")
        fmt.add_arguments(group)
    for ext in _extensions():
        if hasattr(ext, "add_pack_arguments"):
            ext.add_pack_arguments(p)
    p.set_defaults(func=cmd_pack)


def pack_options(args):
    from .api import PackOptions
    opts = PackOptions(
        format=args.format, stubetc=args.stubetc, remove=args.remove, spec=args.spec,
        keep_owner=args.keep_owner, timestamp=args.timestamp, compress=args.compress,
        compress_level=args.compress_level, byteorder=args.endian,
        progress=False if args.quiet and args.progress is None else args.progress)
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
    sources.QUIET = args.quiet
    result = pack(args.sources, args.output, pack_options(args))
    if args.json:
        from .buildsys import print_pack_json
        print_pack_json(result)
    elif args.verbose:
        what = result.format + (f" in {result.container}" if result.container else "")
        print(f"{result.output}: {what}, {result.entries} entries, image {result.image_size} bytes")
        for side in result.side_outputs:
            print(f"{side}: the image, which {result.output} includes")
        for image in result.images:
            for line in image.lines():
                print(line)
    return 0


EXTRACT_EPILOG = """\
Nothing is ever written outside DIR, whatever the image says. An entry whose
name has a '..' component or a NUL byte, that would be created through a
symlink (one an earlier entry made or one already in DIR), or that is a hard
link to such an entry is skipped with one warning; the other entries are
extracted and the exit status is 1 at the end (bsdtar's rule). A leading '/'
is dropped. An existing file, symlink or empty directory of the same name is
replaced (never followed); a directory that is not empty is not. Missing
parent directories are created. Holes are not written. Owners, devices and
set-user/group-id bits only as root. A full, read-only or forbidden DIR stops
with one error naming the path. See docs/extract.md.
"""


class _Stdout:
    """Standard output for the commands that print what they read: a write
    the output cannot take (a full disk, /dev/full) is one line naming it,
    not a traceback (a closed pipe stays a BrokenPipeError)."""

    def __init__(self, stream):
        self._stream = stream
        self.failed = False

    def _guard(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            self.failed = True
            raise RumpfsError(f"standard output: {e.strerror}") from None

    def write(self, data):
        return self._guard(self._stream.write, data)

    def flush(self):
        return self._guard(self._stream.flush)

    @property
    def buffer(self):
        guarded = _Stdout(self._stream.buffer)
        guarded._guard = self._guard
        return guarded

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _printing(command):
    """Run ``command`` with sys.stdout guarded (see _Stdout) and flushed."""
    def run(args) -> int:
        real = sys.stdout
        sys.stdout = guarded = _Stdout(real)
        try:
            status = command(args)
            guarded.flush()
            return status
        finally:
            # After a failed write the unwritten rest is dropped: the exit
            # must not try (and fail) again.
            sys.stdout = open(os.devnull, "w") if guarded.failed else real
    run.__name__, run.__doc__ = command.__name__, command.__doc__
    return run


@_printing
def cmd_ls(args) -> int:
    import json

    from .imagepath import Selection
    from .inspect import open_image
    reader = open_image(args.image)
    selection = Selection(args.paths)
    selection.check(reader)
    out = sys.stdout
    for entry in reader.entries():
        if not selection.matches(entry.path):
            continue
        if args.json:
            out.write(json.dumps(entry.as_json()) + "\n")
        else:
            out.write(entry.ls_line() + "\n")
    return 0


@_printing
def cmd_cat(args) -> int:
    from .imagepath import resolve
    from .inspect import open_image
    reader = open_image(args.image)
    entry = resolve(reader, args.path)
    if entry.kind != 0o100000:
        raise RumpfsError(f"{args.path}: not a regular file in {args.image}")
    out = sys.stdout.buffer
    for chunk in reader.read(entry):
        out.write(chunk)
    out.flush()
    return 0


def cmd_extract(args) -> int:
    from .extract import extract
    from .inspect import open_image
    extract(open_image(args.image), args.directory, args.paths)
    return 0


@_printing
def cmd_check(args) -> int:
    from .inspect import disk_problems, open_image
    reader = open_image(args.image)
    problems = reader.check() + disk_problems(args.image)
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


@_printing
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


def shown(text: str) -> str:
    """A message as printed: bytes of host names that are not UTF-8 (which
    argv and os.fsdecode keep as lone surrogates) as \\xNN, the way names
    from images are shown, instead of \\udcNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("ascii")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, stopping a command as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # nohup keeps it ignored
        signal.signal(signal.SIGHUP, _terminate)
    args = parse_args(argv)
    try:
        return args.func(args)
    except RumpfsError as e:
        print(f"rumpfs: error: {shown(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("rumpfs: interrupted; no output written", file=sys.stderr)
        # The shell's convention: 128 + the signal's number (130 for Ctrl-C).
        return 128 + getattr(e, "signum", signal.SIGINT)
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
