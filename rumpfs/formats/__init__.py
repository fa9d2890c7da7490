"""The image formats rumpfs writes and reads, behind one small interface.

Each format lives in its own sub-package and knows nothing of the others or
of the command line.  A format module provides a module-level object named
``FORMAT`` (an :class:`ImageFormat`); the registry below imports it lazily,
so ``rumpfs --help`` does not pay for every writer.

Writers get the finished :class:`~rumpfs.tree.Tree`, an
:class:`~rumpfs.output.ImageSink` and a :class:`WriteOptions`; they return
the image size in bytes.  Readers report :class:`Entry` records.
"""

from __future__ import annotations

import importlib
import os
import stat
import time
from collections.abc import Iterator
from io import IOBase as BinaryIO

from ..errors import RumpfsError
from ..tree import KIND_LETTERS, KIND_NAMES, display

# Plain classes rather than dataclasses: every ``rumpfs`` run imports this
# module, and the dataclasses module alone costs more start-up time than
# packing a small tree.


class WriteOptions:
    """Everything a writer may be told; formats read the fields they know."""

    __slots__ = ("byteorder", "extra", "progress")

    def __init__(self, byteorder: str = "little", extra: dict | None = None, progress=None):
        #: Byte order of the target ('little' or 'big'): FFS metadata, pwd.db.
        self.byteorder = byteorder
        #: Format-specific options from the command line or the API, by name.
        self.extra = {} if extra is None else extra
        self.progress = progress

    def get(self, name, default=None):
        return self.extra.get(name, default)


class Entry:
    """One name inside an image, as a reader sees it."""

    __slots__ = ("path", "mode", "uid", "gid", "size", "mtime_ns", "nlink", "target",
                 "rdev", "ino", "link_of")

    def __init__(self, path: bytes, mode: int, uid: int = 0, gid: int = 0, size: int = 0,
                 mtime_ns: int = 0, nlink: int = 1, target: bytes | None = None,
                 rdev: int = 0, ino: int = 0, link_of: bytes | None = None):
        self.path = path
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime_ns = mtime_ns
        self.nlink = nlink
        self.target = target
        self.rdev = rdev
        self.ino = ino
        #: Path of the earlier name this one is a hard link to, when known.
        self.link_of = link_of

    def _key(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return self._key() == other._key() if isinstance(other, Entry) else NotImplemented

    def __repr__(self):
        return "Entry(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    def as_json(self) -> dict:
        d = {
            "path": display(self.path),
            "type": KIND_NAMES.get(self.kind, "unknown"),
            "mode": f"{stat.S_IMODE(self.mode):04o}",
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "mtime": self.mtime_ns // 1_000_000_000,
            "mtime_ns": self.mtime_ns,
            "nlink": self.nlink,
        }
        if self.target is not None:
            d["target"] = os.fsdecode(self.target)
        if self.kind in (stat.S_IFCHR, stat.S_IFBLK):
            d["rdev"] = [os.major(self.rdev), os.minor(self.rdev)]
        if self.link_of is not None:
            d["link_of"] = display(self.link_of)
        return d

    def ls_line(self) -> str:
        letter = KIND_LETTERS.get(self.kind, "?")
        perms = stat.filemode(self.mode)[1:]
        if self.kind in (stat.S_IFCHR, stat.S_IFBLK):
            size = f"{os.major(self.rdev)}, {os.minor(self.rdev)}"
        else:
            size = str(self.size)
        when = _when(self.mtime_ns // 1_000_000_000)
        line = (f"{letter}{perms} {self.nlink:>3} {self.uid:>5} {self.gid:>5} {size:>10} {when} "
                f"{display(self.path)}")
        if self.target is not None:
            line += " -> " + self.target.decode("utf-8", "backslashreplace")
        elif self.link_of is not None:
            line += " link to " + display(self.link_of)
        return line


def _when(seconds: int) -> str:
    """A time as ``ls`` shows it; one the C library cannot convert (beyond
    its years) as the bare number of seconds."""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"@{seconds}".rjust(16)


class ImageReader:
    """What every reader offers; ``open`` of a format returns one."""

    format_name = "?"
    #: The image file, closed by :meth:`close` (readers set it).
    f = None
    #: The file's name as errors give it (readers set it from ``f``).
    name = "image"

    def error(self, message: str) -> RumpfsError:
        """The error to raise for what is wrong in the image: one line that
        names the file first."""
        return RumpfsError(f"{self.name}: {message}")

    def read_exact(self, pos: int, length: int, what: str) -> bytes:
        """``length`` bytes at ``pos`` of the image (``self.f`` from
        ``self.offset``, ``self.size`` bytes): an error naming ``what`` when
        they lie outside it or the file ends first."""
        if pos < 0 or pos + length > self.size:
            raise self.error(f"{what} structure at byte {pos} (+{length}) lies outside the "
                             f"{self.size}-byte image")
        self.f.seek(self.offset + pos)
        data = self.f.read(length)
        if len(data) != length:
            raise self.error(f"truncated {what} image")
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()

    def entries(self) -> Iterator[Entry]:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self, entry: Entry) -> Iterator[bytes]:  # pragma: no cover - interface
        """The data of a regular file, in chunks."""
        raise NotImplementedError

    def info(self) -> dict:
        return {"format": self.format_name}

    def check(self) -> list[str]:
        """Problems found (empty when the image is consistent)."""
        return []

    def find(self, path: bytes | str) -> Entry:
        if isinstance(path, str):
            path = os.fsencode(path)
        want = path.strip(b"/")
        for e in self.entries():
            if e.path == want:
                return e
        raise RumpfsError(f"{display(want)}: not in the image")


def show(name: bytes) -> str:
    """Bytes from an image as an error message shows them: on one line,
    undecodable bytes and control characters escaped."""
    text = name.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def file_name(f) -> str:
    """How errors name the file open as ``f`` (``image`` when it has no name)."""
    name = getattr(f, "name", None)
    if isinstance(name, bytes):
        return os.fsdecode(name)
    return name if isinstance(name, str) else "image"


class ImageFormat:
    """A format: its names, how to write it, how to recognise and read it."""

    name = "?"
    suffixes: tuple[str, ...] = ()
    description = ""
    #: ``write`` needs of the tree only ``walk()`` and ``name_counts()``, and
    #: into a file it copes with a link count of 0 meaning "known at the end":
    #: a tree listed while it is written will do (see rumpfs.hostwalk.HostStream).
    writes_while_listed = False
    #: ``write`` into a sequential sink (rumpfs.output.StreamSink) makes the
    #: image front to back: a pipe or a fifo will do as the output.
    sequential = False

    #: The keys of this format's options (PackOptions.format_options,
    #: WriteOptions.extra); the command-line option is ``--`` + key with - for _.
    option_names: tuple[str, ...] = ()

    def add_arguments(self, parser) -> None:
        """Add this format's options to the ``pack`` parser's argument group."""

    def options(self, args) -> dict:
        """Pick the options given to this format out of parsed arguments."""
        return {}

    def check_options(self, options: dict) -> tuple[str, int] | None:
        """Check the values of this format's options before any work (raise
        :class:`~rumpfs.errors.OptionError`); return (option, bytes) when
        they ask for an image of at least that size, else None."""
        return None

    def write(self, tree, sink, options: WriteOptions) -> int:  # pragma: no cover
        raise NotImplementedError

    def probe(self, f: BinaryIO, offset: int, size: int) -> bool:  # pragma: no cover
        raise NotImplementedError

    def open(self, f: BinaryIO, offset: int, size: int) -> ImageReader:  # pragma: no cover
        raise NotImplementedError


#: Format name -> module that defines FORMAT, and the other names a format
#: answers to: declared here so that names resolve without importing writers.
_MODULES = {
    "cpio": "rumpfs.formats.cpio",
    "ffs": "rumpfs.formats.ffs",
    "ffs2": "rumpfs.formats.ffs",
    "iso": "rumpfs.formats.iso",
    "fat": "rumpfs.formats.fat",
}
_ALIASES = {"newc": "cpio", "ffs1": "ffs", "ufs1": "ffs", "ufs2": "ffs2", "iso9660": "iso",
            "vfat": "fat"}


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> ImageFormat:
    key = _ALIASES.get(name, name)
    module = _MODULES.get(key)
    if module is None:
        raise RumpfsError(f"unknown image format {name!r} (known: {', '.join(names())})")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise RumpfsError(f"format {name!r} is not available: {e}") from None
    fmt = getattr(mod, "FORMATS", {}).get(key) or getattr(mod, "FORMAT", None)
    if fmt is None:
        raise RumpfsError(f"format {name!r} is not available in this version")
    return fmt


def available() -> list[ImageFormat]:
    out = []
    for n in names():
        try:
            out.append(get(n))
        except RumpfsError:
            pass
    return out


def from_suffix(path: str) -> tuple[str | None, str | None]:
    """(format, compression) implied by an output name, or (None, None)."""
    lower = os.path.basename(path).lower()
    for comp, ext in (("gzip", ".gz"), ("xz", ".xz"), ("zstd", ".zst"), ("lz4", ".lz4")):
        if lower.endswith(".cpio" + ext):
            return "cpio", comp
    best = None
    for fmt in available():
        for suffix in fmt.suffixes:
            if lower.endswith(suffix) and (best is None or len(suffix) > len(best[1])):
                best = (fmt.name, suffix)
    return (best[0], None) if best else (None, None)


def detect(f: BinaryIO, offset: int = 0, size: int | None = None) -> ImageFormat:
    """The format of the image at ``offset`` in ``f``."""
    if size is None:
        size = os.fstat(f.fileno()).st_size - offset
    for fmt in available():
        if fmt.probe(f, offset, size):
            return fmt
    raise RumpfsError(f"{file_name(f)}: not an image rumpfs can read "
                      f"(known formats: {', '.join(names())})")
