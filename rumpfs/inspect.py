"""Opening what rumpfs wrote: bare images, compressed cpio, images inside objects."""

from __future__ import annotations

import io
import os
import stat
import tempfile

from . import compress, formats
from .errors import RumpfsError
from .extract import extract

ELF_MAGIC = b"\x7fELF"


def _open_file(path: str):
    """The image file, opened so that it cannot block (a FIFO named by
    mistake): only a regular file or a block device is read."""
    try:
        f = open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK))
    except FileNotFoundError:
        raise RumpfsError(f"{path}: no such file") from None
    except OSError as e:
        raise RumpfsError(f"{path}: cannot open: {e.strerror}") from None
    mode = os.fstat(f.fileno()).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        f.close()
        raise RumpfsError(f"{path}: not a regular file or block device")
    return f


def locate(path: str, fmt: str | None = None):
    """(file, offset, size, container info or None) of the image in ``path``.

    A compressed image is read through its decompressor: a cpio archive
    (what the readers read front to back) straight from the stream, other
    formats from a temporary copy no larger than :func:`spool_limit`."""
    f = _open_file(path)
    try:
        head = f.read(16)
        size = f.seek(0, os.SEEK_END)  # st_size is 0 for a block device
        if head.startswith(ELF_MAGIC):
            from .elf import reader as elf_reader
            found = elf_reader.locate_image(f, path)
            f.seek(found.offset)
            method = compress.sniff(f.read(min(16, found.size)))
            if method:
                # A compressed cpio in an object (an initramfs section).
                part = _Slice(f, found.offset, found.size)
                return _decompressed(part, path, method, fmt) + (found,)
            return f, found.offset, found.size, found
        method = compress.sniff(head)
        if method:
            return _decompressed(f, path, method, fmt) + (Compressed(method, size),)
        return f, 0, size, None
    except BaseException:
        f.close()
        raise


class _Slice:
    """``size`` bytes of ``f`` from ``offset``, read like a file from its start."""

    def __init__(self, f, offset: int, size: int):
        self.f, self.offset, self.size, self.pos = f, offset, size, 0

    def seek(self, pos: int) -> None:
        self.pos = pos

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self.f.seek(self.offset + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def close(self) -> None:
        self.f.close()


class Compressed:
    """What ``info`` says of a compressed image."""

    def __init__(self, method: str, size: int):
        self.method, self.size = method, size

    def describe(self) -> dict:
        return {"compression": self.method, "compressed_size": self.size}


#: Formats read front to back, straight from a decompressing stream.
STREAMED_FORMATS = ("cpio",)
#: How much a compressed image of another format may need in the temporary
#: directory by default (RUMPFS_SPOOL_LIMIT changes it)...
DEFAULT_SPOOL_LIMIT = 4 << 30
SPOOL_LIMIT_VARIABLE = "RUMPFS_SPOOL_LIMIT"
#: ... and the free space it always leaves there.
SPOOL_MARGIN = 64 << 20
_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _decompressed(f, path: str, method: str, fmt: str | None):
    """The decompressed image as (file, 0, size): the stream itself for the
    formats read front to back, otherwise a bounded temporary copy."""
    stream = _Decompressing(f, path, method)
    try:
        # The format first, from the first bytes: a bomb that is no image
        # is refused before it is decompressed whole.
        image_format = formats.get(fmt) if fmt else formats.detect(stream, 0, stream.UNKNOWN_SIZE)
        if image_format.name in STREAMED_FORMATS:
            # Measured by the reader, once it has read what it needs.
            return stream, 0, stream.UNKNOWN_SIZE
        size = stream.measure()
        return _spool(stream, path, method, size), 0, size
    except BaseException:
        stream.close()
        raise


class _Decompressing:
    """The decompressed bytes of a compressed file, read like a file without
    being stored anywhere: a read after the position decompresses and drops
    what lies before it, a read before it starts again from the beginning
    (the cpio reader goes front to back: at most once more for ``cat``,
    ``check`` and hard links whose data came earlier)."""

    #: The size readers are given until the stream is measured (the cpio
    #: reader asks :meth:`holds` instead).
    UNKNOWN_SIZE = 1 << 62
    #: Bytes before the current piece still read without starting again.
    KEEP = 8 << 10
    #: Starts from the beginning before the stream is copied to a temporary
    #: file instead (within spool_limit): a crafted archive of hard links
    #: read backwards must not cost a decompression each.
    MAX_RESTARTS = 8

    def __init__(self, source, name: str, method: str):
        self.source, self.name, self.method = source, name, method
        self.size = None
        self._pieces = None
        self.restarts = -1
        self._copy = None
        self._restart()

    def _restart(self) -> None:
        if self._pieces is not None:
            self._pieces.close()
        self.source.seek(0)
        self._pieces = compress.decompressed(self.source, self.method)
        self._piece = b""
        self._piece_at = 0  # stream offset of self._piece[0]
        self._pos = 0
        self.restarts += 1

    def _copy_to_file(self) -> None:
        """Decompress the whole stream once more, into a temporary file that
        serves every read from now on."""
        size = self.measure()
        limit, why = spool_limit()
        if size > limit:
            raise RumpfsError(f"{self.name}: reading this archive backwards (hard links whose "
                              f"data came earlier) needs a temporary copy of it ({size} "
                              f"bytes) larger than {why}")
        self._restart()

        def new_bytes():
            held = 0
            while self._next_piece():
                # The piece's new bytes: those after what the copy holds.
                new = self._piece[held - self._piece_at:]
                held += len(new)
                yield new

        self._copy = _temporary_copy(new_bytes(), self.name, "archive")

    def _next_piece(self) -> bool:
        """Decompress the next piece, keeping the end of the last one (a
        symlink target is read just after its end was checked)."""
        try:
            piece = next(self._pieces)
        except StopIteration:
            return False
        except compress.CorruptStream as e:
            raise RumpfsError(f"{self.name}: corrupt {self.method} data: {e}") from None
        kept = self._piece[-self.KEEP:]
        self._piece_at += len(self._piece) - len(kept)
        self._piece = kept + piece
        return True

    def measure(self) -> int:
        """The decompressed size (decompressing what is left of the stream)."""
        if self.size is None:
            while self._next_piece():
                pass
            self.size = self._piece_at + len(self._piece)
        return self.size

    def holds(self, end: int) -> bool:
        """Whether the stream has at least ``end`` bytes (decompressing up
        to there, where a front-to-back reader goes next anyway)."""
        if self.size is not None:
            return end <= self.size
        if end <= self._piece_at + len(self._piece):
            return True
        pos = self._pos
        self._pos = end - 1
        held = len(self.read(1)) == 1
        self._pos = pos
        return held

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            pos += self.measure()
        elif whence == os.SEEK_CUR:
            pos += self._pos
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if self._copy is not None:
            self._copy.seek(self._pos)
            data = self._copy.read(n)
            self._pos += len(data)
            return data
        if self._pos < self._piece_at:
            pos = self._pos
            if self.restarts >= self.MAX_RESTARTS:
                self._copy_to_file()
                self._pos = pos
                return self.read(n)
            self._restart()
            self._pos = pos
        out = []
        left = (1 << 63) if n is None or n < 0 else n
        while left > 0:
            off = self._pos - self._piece_at
            if off < len(self._piece):
                chunk = self._piece[off:off + left]
                out.append(chunk)
                self._pos += len(chunk)
                left -= len(chunk)
            elif not self._next_piece():
                break
        return b"".join(out)

    def fileno(self):
        raise io.UnsupportedOperation("a decompressing stream has no file descriptor")

    def close(self) -> None:
        if self._pieces is not None:
            self._pieces.close()
        if self._copy is not None:
            self._copy.close()
        self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def spool_limit() -> tuple[int, str]:
    """The most a decompressed image may take in the temporary directory,
    and how an error names that limit: RUMPFS_SPOOL_LIMIT (bytes, or with a
    k/m/g/t suffix; default 4g), never more than the directory's free space
    less SPOOL_MARGIN."""
    text = os.environ.get(SPOOL_LIMIT_VARIABLE, "").strip()
    limit, why = DEFAULT_SPOOL_LIMIT, f"the limit of {DEFAULT_SPOOL_LIMIT} bytes"
    if text:
        digits, mult = text.lower(), 1
        if digits[-1:] in _SUFFIXES:
            digits, mult = digits[:-1], _SUFFIXES[digits[-1]]
        if not digits.isdigit():
            raise RumpfsError(f"{SPOOL_LIMIT_VARIABLE}={text}: not a size (bytes, or with a "
                              f"k/m/g/t suffix)")
        limit = int(digits) * mult
        why = f"the limit of {limit} bytes"
    why += f" ({SPOOL_LIMIT_VARIABLE})"
    directory = tempfile.gettempdir()
    try:
        st = os.statvfs(directory)
    except OSError:
        return limit, why
    room = max(0, st.f_bavail * st.f_frsize - SPOOL_MARGIN)
    if room < limit:
        return room, (f"the free space of {directory} less {SPOOL_MARGIN >> 20} MiB "
                      f"({room} bytes)")
    return limit, why


def _temporary_copy(pieces, name: str, what: str):
    """An unnamed temporary file holding ``pieces``; a write error (a full
    TMPDIR) is one line naming ``name``."""
    copy = tempfile.TemporaryFile()
    try:
        for piece in pieces:
            copy.write(piece)
        copy.flush()
    except OSError as e:
        copy.close()
        raise RumpfsError(f"{name}: cannot copy the decompressed {what} into "
                          f"{tempfile.gettempdir()}: {e.strerror}") from None
    except BaseException:
        copy.close()
        raise
    return copy


def _spool(stream: _Decompressing, path: str, method: str, size: int):
    """A temporary copy of the decompressed image, for readers that seek
    (FFS, ISO, FAT): refused beyond :func:`spool_limit`, before anything is
    written."""
    limit, why = spool_limit()
    if size > limit:
        raise RumpfsError(f"{path}: the decompressed image ({size} bytes) needs a temporary "
                          f"copy larger than {why}")
    stream.seek(0)
    tmp = _temporary_copy(iter(lambda: stream.read(_SPOOL_PIECE), b""), path, "image")
    stream.close()
    # Errors about the image name the compressed file, not the temporary one.
    tmp.raw.name = path
    return tmp


_SPOOL_PIECE = 1 << 20


def open_image(path: str, offset: int | None = None, fmt: str | None = None) -> formats.ImageReader:
    """A reader of the image in ``path``; ``with`` it (or ``close()``) to close the file."""
    f, off, size, _container = locate(path, fmt)
    try:
        if offset is not None:
            if not 0 <= offset <= size:
                raise RumpfsError(f"{path}: offset {offset} is beyond the image ({size} bytes)")
            off, size = offset, size - offset
        image_format = formats.get(fmt) if fmt else formats.detect(f, off, size)
        reader = image_format.open(f, off, size)
    except BaseException:
        f.close()
        raise
    reader.source = path
    return reader


def describe(path: str) -> dict:
    f, off, size, container = locate(path)
    with f:
        info: dict = {"file": path}
        if container is not None:
            info["container"] = container.describe()
        try:
            image_format = formats.detect(f, off, size)
        except RumpfsError as e:
            info["image"] = {"offset": off, "size": size, "format": f"unknown ({e})"}
            return info
        reader = image_format.open(f, off, size)
        # A decompressing stream's size is known once its reader has read it.
        image = {"offset": off, "size": getattr(reader, "size", size)}
        image.update(reader.info())
        info["image"] = image
        bootable = container is None and image_format.name == "iso" and _has_el_torito(f, off)
        if bootable:
            from .bundle.inspect import truncation
            truncated = truncation(f, size)
            if truncated:
                # A bootable disk that lost its end: one line, as a bad image is.
                raise RumpfsError(f"{path}: {truncated}")
    if bootable:
        # A bootable ISO: what rumpfs bundle put in it (loader, kernel, modules,
        # config); another tool's bootable ISO is described as an ISO only.
        from .bundle.inspect import describe as describe_bundle
        try:
            info["bundle"] = describe_bundle(path)
        except RumpfsError:
            pass
    return info


def disk_problems(path: str) -> list[str]:
    """For a bootable ISO (a bundle), what its MBR, GPT and VHD footer say
    lies past the end of the file (``rumpfs check`` adds them to the file
    system's problems)."""
    f, off, size, container = locate(path)
    with f:
        if container is not None or not _has_el_torito(f, off):
            return []
        from .bundle.inspect import disk_problems as bundle_disk_problems
        return bundle_disk_problems(f, size)


#: The El Torito boot record: the volume descriptor after the primary one
#: (ECMA-119 sector 17: type 0, "CD001", version 1, the boot system id).
EL_TORITO_SECTOR = 17
EL_TORITO_RECORD = b"\0CD001\x01EL TORITO SPECIFICATION"


def _has_el_torito(f, offset: int) -> bool:
    f.seek(offset + EL_TORITO_SECTOR * 2048)
    return f.read(len(EL_TORITO_RECORD)) == EL_TORITO_RECORD


__all__ = ["open_image", "describe", "disk_problems", "extract", "locate"]
