"""Compressed streams for initrd images, framed the way the Linux kernel reads them.

gzip and xz come from the standard library; zstd and lz4 need the optional
``zstandard`` and ``lz4`` packages.  Output is reproducible: the gzip header
carries no time and no name, xz uses CRC32 (what the kernel's XZ embedded
decoder is documented to expect), and lz4 uses the legacy frame that the
kernel's ``unlz4`` decodes (the same as ``lz4 -l``).
"""

from __future__ import annotations

import importlib
import lzma
import zlib

from construct import Const, Int32ul, Struct

from .errors import RumpfsError
from .output import append_data

METHODS = ("gzip", "xz", "zstd", "lz4")

#: The levels each method takes (lowest, highest): what gzip(1), xz(1) and
#: zstd(1) accept, and LZ4HC's range (the lz4 module's high_compression mode).
LEVELS = {"gzip": (1, 9), "xz": (0, 9), "zstd": (1, 22), "lz4": (1, 12)}

#: LZ4 legacy frame (lz4 -l): a magic, then blocks each led by its compressed size.
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_HEADER = Struct("magic" / Const(LZ4_LEGACY_MAGIC, Int32ul))
LZ4_LEGACY_BLOCK = Struct("compressed_size" / Int32ul)
#: Uncompressed bytes per legacy block (LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE).
LZ4_LEGACY_CHUNK = 8 << 20

#: Leading bytes of each compressed stream, to recognise them when reading.
MAGICS = {
    "gzip": b"\x1f\x8b",
    "xz": b"\xfd7zXZ\x00",
    "zstd": b"\x28\xb5\x2f\xfd",
    "lz4": LZ4_LEGACY_HEADER.build({}),
}


def _library(module: str, method: str):
    """Import the package behind a compression method, or say which is missing.

    Both are dependencies of rumpfs; an install that lost one (a distribution
    package split, --no-deps) gets one line instead of a traceback.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise RumpfsError(f"{method} needs the Python package '{package}', which is not installed "
                          f"(pip install {package})") from None


class _Lz4Legacy:
    def __init__(self, level):
        self.block = _library("lz4.block", "lz4")
        self.level = 9 if level is None else level
        self.pending = bytearray()
        self.started = False

    def _blocks(self, final):
        out = bytearray()
        if not self.started:
            out += LZ4_LEGACY_HEADER.build({})
            self.started = True
        while len(self.pending) >= LZ4_LEGACY_CHUNK or (final and self.pending):
            chunk = bytes(self.pending[:LZ4_LEGACY_CHUNK])
            del self.pending[:LZ4_LEGACY_CHUNK]
            packed = self.block.compress(chunk, mode="high_compression",
                                         compression=self.level, store_size=False)
            out += LZ4_LEGACY_BLOCK.build({"compressed_size": len(packed)}) + packed
        return bytes(out)

    def compress(self, data):
        self.pending += data
        return self._blocks(False)

    def flush(self):
        return self._blocks(True)


def compressor(method: str, level: int | None = None):
    """An object with ``compress(bytes) -> bytes`` and ``flush() -> bytes``."""
    if method == "gzip":
        # wbits 31: a gzip wrapper whose header has MTIME 0 and no file name.
        return zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
    if method == "xz":
        return lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                                   preset=6 if level is None else level)
    if method == "zstd":
        zstandard = _library("zstandard", "zstd")
        return zstandard.ZstdCompressor(level=3 if level is None else level).compressobj()
    if method == "lz4":
        return _Lz4Legacy(level)
    raise RumpfsError(f"unknown compression {method!r} (known: {', '.join(METHODS)}, none)")


#: Compressed bytes fed to a decompressor at once.
_IN_PIECE = 64 << 10
#: Most bytes a decompressor hands back at once: memory stays bounded
#: whatever the compression ratio (zstd and gzip reach 1000:1 and more).
_OUT_PIECE = 1 << 20
#: Memory an xz or zstd stream may ask for its window (the kernel's own
#: decoders are given far less; xz -9 needs 64 MiB).
DECODER_MEMORY = 128 << 20
#: lz4 legacy blocks hold at most LZ4_LEGACY_CHUNK bytes; compressed, at most
#: LZ4_compressBound of that.
LZ4_LEGACY_MAX_BLOCK = LZ4_LEGACY_CHUNK + LZ4_LEGACY_CHUNK // 255 + 16


class CorruptStream(ValueError):
    """Compressed data that does not decompress (damaged, truncated, too demanding)."""


def decompressed(f, method: str):
    """The decompressed bytes of the stream(s) read from ``f``, in pieces of
    at most about a MiB.  Streams may follow each other (a kernel initramfs
    may be several archives back to back).  Damaged, truncated or
    over-demanding input raises :class:`CorruptStream`."""
    if method == "zstd":
        yield from _zstd_stream(f)
        return
    dec = _decoder(method)
    while True:
        chunk = f.read(_IN_PIECE)
        if not chunk:
            break
        while chunk:
            yield from dec.feed(chunk)
            chunk = b""
            if dec.eof:
                chunk = dec.unused_data + f.read(_IN_PIECE)
                if not chunk:
                    return
                dec = _decoder(sniff(chunk) or method)
    if not dec.finished():
        raise CorruptStream("the compressed data ends in the middle of a stream")


def _decoder(method: str):
    if method == "gzip":
        return _ZlibDecoder()
    if method == "xz":
        return _XzDecoder()
    if method == "lz4":
        return _Lz4LegacyReader()
    raise RumpfsError(f"unknown compression {method!r}")


class _LibraryDecoder:
    """A decoder over a standard library decompressor ``d``: its end and
    what follows it come from ``d``."""

    d = None

    @property
    def eof(self):
        return self.d.eof

    @property
    def unused_data(self):
        return self.d.unused_data

    def finished(self):
        return self.d.eof


class _ZlibDecoder(_LibraryDecoder):
    def __init__(self):
        self.d = zlib.decompressobj(47)
        self.started = False

    def feed(self, data):
        d = self.d
        try:
            while data:
                out = d.decompress(data, _OUT_PIECE)
                if out:
                    yield out
                data = d.unconsumed_tail
        except zlib.error as e:
            raise CorruptStream(str(e)) from None


class _XzDecoder(_LibraryDecoder):
    def __init__(self):
        self.d = lzma.LZMADecompressor(memlimit=DECODER_MEMORY)

    def feed(self, data):
        d = self.d
        try:
            out = d.decompress(data, _OUT_PIECE)
            while True:
                if out:
                    yield out
                if d.eof or d.needs_input:
                    return
                out = d.decompress(b"", _OUT_PIECE)
        except lzma.LZMAError as e:
            raise CorruptStream(str(e)) from None


def _zstd_stream(f):
    zstandard = _library("zstandard", "zstd")
    dctx = zstandard.ZstdDecompressor(max_window_size=DECODER_MEMORY)
    try:
        with dctx.stream_reader(f, read_size=_IN_PIECE, read_across_frames=True,
                                closefd=False) as reader:
            while True:
                out = reader.read(_OUT_PIECE)
                if not out:
                    return
                yield out
    except zstandard.ZstdError as e:
        raise CorruptStream(str(e)) from None


def decompressor(method: str):
    """An object with ``decompress(bytes) -> bytes`` (whole streams, in
    memory: for tests and small data; readers use :func:`decompressed`)."""
    if method == "gzip":
        return zlib.decompressobj(47)
    if method == "xz":
        return lzma.LZMADecompressor()
    if method == "zstd":
        return _library("zstandard", "zstd").ZstdDecompressor().decompressobj()
    if method == "lz4":
        return _Lz4LegacyReader()
    raise RumpfsError(f"unknown compression {method!r}")


class _Lz4LegacyReader:
    """The legacy frame: a magic, then blocks each led by its compressed size,
    to the end of the input (a magic again starts a concatenated frame)."""

    eof = False
    unused_data = b""

    def __init__(self):
        self.block = _library("lz4.block", "lz4")
        self.buf = bytearray()
        self.started = False

    def finished(self):
        return self.started and not self.buf

    def decompress(self, data):
        return b"".join(self.feed(data))

    def feed(self, data):
        self.buf += data
        if not self.started:
            if len(self.buf) < 4:
                return
            if bytes(self.buf[:4]) != MAGICS["lz4"]:
                raise CorruptStream("not an lz4 legacy frame")
            del self.buf[:4]
            self.started = True
        while len(self.buf) >= 4:
            n = LZ4_LEGACY_BLOCK.parse(bytes(self.buf[:4])).compressed_size
            if n == LZ4_LEGACY_MAGIC:  # a concatenated frame
                del self.buf[:4]
                continue
            if n > LZ4_LEGACY_MAX_BLOCK:
                raise CorruptStream(f"lz4 block of {n} bytes (at most {LZ4_LEGACY_MAX_BLOCK})")
            if len(self.buf) < 4 + n:
                return
            try:
                out = self.block.decompress(bytes(self.buf[4:4 + n]),
                                            uncompressed_size=LZ4_LEGACY_CHUNK)
            except self.block.LZ4BlockError as e:
                raise CorruptStream(str(e)) from None
            del self.buf[:4 + n]
            yield out


def sniff(head: bytes) -> str | None:
    for method, magic in MAGICS.items():
        if head.startswith(magic):
            return method
    return None


class CompressingSink:
    """The sequential part of :class:`~rumpfs.output.ImageSink`, compressed."""

    def __init__(self, sink, method: str, level: int | None = None):
        self.sink = sink
        self.comp = compressor(method, level)
        self.raw = 0
        self.progress = sink.progress

    def write(self, data) -> None:
        self.raw += len(data)
        out = self.comp.compress(bytes(data))
        if out:
            self.sink.write(out)

    def tell(self) -> int:
        return self.raw

    def copy(self, data, length: int | None = None) -> None:
        append_data(self, data, length)

    def finish(self) -> int:
        tail = self.comp.flush()
        if tail:
            self.sink.write(tail)
        size = self.sink.tell()
        self.sink.finish(size)
        return size
