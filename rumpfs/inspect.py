"""Opening what rumpfs wrote: bare images, compressed cpio, images inside objects."""

from __future__ import annotations

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


def locate(path: str):
    """(file, offset, size, container info or None) of the image in ``path``."""
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
                return _decompressed(part, path, method) + (found,)
            return f, found.offset, found.size, found
        method = compress.sniff(head)
        if method:
            return _decompressed(f, path, method) + (Compressed(method, size),)
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


def _decompressed(f, path: str, method: str):
    """Decompress into an anonymous temporary file (never into memory)."""
    tmp = tempfile.TemporaryFile()
    # Errors about the image name the compressed file, not the temporary one.
    tmp.raw.name = path
    f.seek(0)
    try:
        for piece in compress.decompressed(f, method):
            tmp.write(piece)
    except compress.CorruptStream as e:
        tmp.close()
        raise RumpfsError(f"{path}: corrupt {method} data: {e}") from None
    except BaseException:
        tmp.close()
        raise
    f.close()
    tmp.flush()
    return tmp, 0, tmp.seek(0, os.SEEK_END)


def open_image(path: str, offset: int | None = None, fmt: str | None = None) -> formats.ImageReader:
    """A reader of the image in ``path``; ``with`` it (or ``close()``) to close the file."""
    f, off, size, _container = locate(path)
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
        image = {"offset": off, "size": size}
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
