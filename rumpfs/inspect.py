"""Opening what rumpfs wrote: bare images, compressed cpio, images inside objects."""

from __future__ import annotations

import os
import tempfile

from . import compress, formats
from .errors import RumpfsError
from .extract import extract

ELF_MAGIC = b"\x7fELF"


def _open_file(path: str):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise RumpfsError(f"{path}: no such file") from None
    except OSError as e:
        raise RumpfsError(f"{path}: cannot open: {e.strerror}") from None


def locate(path: str):
    """(file, offset, size, container info or None) of the image in ``path``."""
    f = _open_file(path)
    head = f.read(16)
    size = os.fstat(f.fileno()).st_size
    if head.startswith(ELF_MAGIC):
        from .elf import reader as elf_reader
        found = elf_reader.locate_image(f, path)
        f.seek(found.offset)
        method = compress.sniff(f.read(16))
        if method:  # a compressed cpio (--template linux-initramfs --compress ...)
            return _decompressed(f, path, method, found.offset, found.size) + (found,)
        return f, found.offset, found.size, found
    method = compress.sniff(head)
    if method:
        return _decompressed(f, path, method) + (Compressed(method, size),)
    return f, 0, size, None


class Compressed:
    """What ``info`` says of a compressed image."""

    def __init__(self, method: str, size: int):
        self.method, self.size = method, size

    def describe(self) -> dict:
        return {"compression": self.method, "compressed_size": self.size}


def _decompressed(f, path: str, method: str, offset: int = 0, size: int | None = None):
    """Decompress ``size`` bytes from ``offset`` (default: to the end) into an
    anonymous temporary file (never into memory)."""
    dec = compress.decompressor(method)
    tmp = tempfile.TemporaryFile()
    f.seek(offset)
    left = size
    try:
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(left, 1 << 20))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            tmp.write(dec.decompress(chunk))
            # A kernel initramfs may be several compressed archives back to back.
            while getattr(dec, "eof", False) and dec.unused_data:
                rest = dec.unused_data
                dec = compress.decompressor(compress.sniff(rest) or method)
                tmp.write(dec.decompress(rest))
    except (OSError, EOFError, ValueError) as e:
        raise RumpfsError(f"{path}: corrupt {method} data: {e}") from None
    f.close()
    tmp.flush()
    tmp.seek(0)
    return tmp, 0, os.fstat(tmp.fileno()).st_size


def open_image(path: str, offset: int | None = None, fmt: str | None = None) -> formats.ImageReader:
    f, off, size, _container = locate(path)
    if offset is not None:
        off, size = offset, size - offset
    image_format = formats.get(fmt) if fmt else formats.detect(f, off, size)
    reader = image_format.open(f, off, size)
    reader.source = path
    return reader


def describe(path: str) -> dict:
    f, off, size, container = locate(path)
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
    return info


__all__ = ["open_image", "describe", "extract", "locate"]
