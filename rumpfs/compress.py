"""Compressed streams for initrd images, framed the way the Linux kernel reads them.

xz comes from the standard library; gzip is deflated by the ``zlib-ng``
package (read back with the standard zlib), zstd and lz4 need the
``zstandard`` and ``lz4`` packages (all dependencies of rumpfs).  Output is
reproducible: the gzip header
carries no time and no name, xz uses CRC32 (what the kernel's XZ embedded
decoder is documented to expect), and lz4 uses the legacy frame that the
kernel's ``unlz4`` decodes (the same as ``lz4 -l``).

Writing compresses on several threads (docs/compression.md): the
uncompressed stream is cut into blocks of a fixed size, compressed on a pool
of threads while the archive writer goes on, and written in order.  The
block boundaries depend only on the method, the level and the bytes, never
on the thread count, so the output is the same on any number of cores
(the framing is declared in :mod:`rumpfs.compress_layout`):

* gzip: one gzip member whose deflate data is the blocks' raw deflate
  streams back to back (as pigz writes it), each primed with the 32 KiB
  before it and ended by a sync flush (the last one finished); rumpfs writes
  the gzip header and trailer.
* xz: one stream of independent LZMA2 blocks (as ``xz -T``) in the .xz
  container written here.
* lz4: the legacy frame's blocks are already independent.
* zstd: libzstd's own worker threads, whose output is the same for any
  number of them (but differs from none).
"""

from __future__ import annotations

import collections
import importlib
import lzma
import os
import zlib
from concurrent.futures import ThreadPoolExecutor

from . import compress_layout as layout
from .compress_layout import (
    GZIP_OS_UNIX,
    GZIP_XFL_BEST,
    GZIP_XFL_FASTEST,
    ISIZE_MASK,
    LZ4_LEGACY_CHUNK,
    LZ4_LEGACY_MAGIC,
    XZ_ALIGNMENT,
    XZ_CHECK_CRC32,
    XZ_CHECK_SIZE,
    XZ_FILTER_LZMA2,
    XZ_HEADER_MAGIC,
)
from .errors import RumpfsError
from .output import append_data, usable_cores

METHODS = ("gzip", "xz", "zstd", "lz4")

#: The levels each method takes (lowest, highest): what gzip(1), xz(1) and
#: zstd(1) accept, and LZ4HC's range (the lz4 module's high_compression mode).
LEVELS = {"gzip": (1, 9), "xz": (0, 9), "zstd": (1, 22), "lz4": (1, 12)}
#: The level when none is given: each tool's own default (lz4: what the
#: Linux kernel's build uses, ``lz4 -l -9``).
DEFAULT_LEVELS = {"gzip": 6, "xz": 6, "zstd": 3, "lz4": 9}

#: The fixed framing (rumpfs/compress_layout.py), packed without construct.
GZIP_HEADER = layout.PACKED["GZIP_HEADER"]
GZIP_TRAILER = layout.PACKED["GZIP_TRAILER"]
LZ4_LEGACY_HEADER = layout.PACKED["LZ4_LEGACY_HEADER"]
LZ4_LEGACY_BLOCK = layout.PACKED["LZ4_LEGACY_BLOCK"]
#: Deflate's window (wbits 15): what a block may refer back to, and so what
#: primes the next block's compressor.
DEFLATE_WBITS = zlib.MAX_WBITS
DEFLATE_WINDOW = 1 << DEFLATE_WBITS
#: LZMA2 dictionary size of each xz preset (xz(1)).
XZ_PRESET_DICT = (256 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20,
                  8 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20)
#: xz -T's block size: three dictionaries, and at least this.
XZ_MIN_BLOCK = 1 << 20
XZ_BLOCK_DICTS = 3

# -- how the work is cut and shared ------------------------------------------
#: Uncompressed bytes per gzip block: large enough that priming each block
#: with a window costs little, small enough to keep the threads busy on a
#: small archive.
GZIP_BLOCK = 1 << 20
#: Uncompressed bytes per lz4 block: the legacy frame allows up to 8 MiB
#: (LZ4_LEGACY_CHUNK, what ``lz4 -l`` writes) and the kernel reads any size
#: up to that; LZ4HC looks back only 64 KiB, so a quarter of that costs 0.1 %
#: of ratio and saves 48 MiB of blocks in flight on 2 threads.
LZ4_BLOCK = 2 << 20
#: The smallest zstd job (libzstd's own least is 512 KiB; below 1 MiB the ratio suffers).
ZSTD_MIN_JOB = 1 << 20
#: Blocks queued or being compressed, per thread: a bound on memory (a
#: method's blocks class may set fewer).
IN_FLIGHT_PER_WORKER = 2
#: The compressing threads (default: the cores this process may run on).
WORKERS_ENV = "RUMPFS_COMPRESS_WORKERS"
#: Uncompressed bytes per block instead of the method's (for tests: many
#: blocks from a small tree).  Changes the output; zstd ignores it.
BLOCK_SIZE_ENV = "RUMPFS_COMPRESS_BLOCK_SIZE"
MIN_BLOCK_SIZE = 4 << 10

#: Leading bytes of each compressed stream, to recognise them when reading.
MAGICS = {
    "gzip": layout.GZIP_ID,
    "xz": XZ_HEADER_MAGIC,
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


def compressor(method: str, level: int | None = None):
    """An object with ``compress(bytes) -> bytes`` and ``flush() -> bytes``
    that makes the same stream as :class:`CompressingSink` (in memory, on
    this thread: for tests and small data)."""
    return _InMemory(method, level)


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


def _positive_env(name: str, what: str, least: int) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < least:
        raise RumpfsError(f"{name}={value}: not a {what} (at least {least})")
    return number


def default_workers() -> int:
    """Threads that compress: $RUMPFS_COMPRESS_WORKERS, else the cores this
    process may run on."""
    workers = _positive_env(WORKERS_ENV, "number of threads", 1)
    return workers if workers is not None else usable_cores()


def _pad(size: int) -> bytes:
    return bytes(-size % XZ_ALIGNMENT)


def _crc32_le(data) -> bytes:
    return zlib.crc32(data).to_bytes(XZ_CHECK_SIZE, "little")  # as every CRC32 field of .xz


class _GzipBlocks:
    """Raw deflate blocks of one gzip member (see the module's docstring)."""

    needs_last = True  # the deflate data must end with a final block
    in_flight_per_worker = IN_FLIGHT_PER_WORKER

    def __init__(self, level: int, block_size: int | None):
        self.zlib = _library("zlib_ng.zlib_ng", "gzip")
        self.level = level
        self.block_size = block_size or GZIP_BLOCK
        self.window = b""  # the last DEFLATE_WINDOW bytes before the next block
        self.crc = 0
        self.size = 0

    def head(self) -> bytes:
        xfl = (GZIP_XFL_BEST if self.level == LEVELS["gzip"][1]
               else GZIP_XFL_FASTEST if self.level == LEVELS["gzip"][0] else 0)
        return GZIP_HEADER.build({"mtime": 0, "xfl": xfl, "os": GZIP_OS_UNIX})

    def job(self, data: bytes, last: bool) -> tuple:
        """What a thread needs to compress ``data``; called in stream order."""
        self.crc = self.zlib.crc32(data, self.crc)
        self.size += len(data)
        window = self.window
        self.window = (window + data)[-DEFLATE_WINDOW:] if len(data) < DEFLATE_WINDOW \
            else data[-DEFLATE_WINDOW:]
        return data, window, last

    def compress(self, data: bytes, window: bytes, last: bool):
        """(compressed bytes, index record) of one block; runs on a pool thread."""
        z = self.zlib
        if window:
            comp = z.compressobj(self.level, z.DEFLATED, -DEFLATE_WBITS, z.DEF_MEM_LEVEL,
                                 z.Z_DEFAULT_STRATEGY, window)
        else:
            comp = z.compressobj(self.level, z.DEFLATED, -DEFLATE_WBITS)
        # A sync flush ends the block on a byte boundary without ending the
        # deflate stream: the next block's bytes follow it directly.
        return comp.compress(data) + comp.flush(z.Z_FINISH if last else z.Z_SYNC_FLUSH), None

    def done(self, record) -> None:
        pass

    def tail(self) -> bytes:
        return GZIP_TRAILER.build({"crc32": self.crc, "isize": self.size & ISIZE_MASK})


def lzma2_dict_code(dict_size: int) -> int:
    """The LZMA2 filter property byte for a dictionary of ``dict_size``
    bytes: code c stands for (2 | c & 1) << (c // 2 + 11) bytes."""
    code = 0
    while ((2 | code & 1) << (code // 2 + 11)) < dict_size:
        code += 1
    return code


class _XzBlocks:
    """Independent LZMA2 blocks of one .xz stream, checked with CRC32."""

    needs_last = False
    #: A block takes seconds to compress and moments to gather, so a thread
    #: never waits long for its next one: no 24 MiB block queued per thread.
    in_flight_per_worker = 1

    def __init__(self, level: int, block_size: int | None):
        dict_size = XZ_PRESET_DICT[level]
        self.filters = [{"id": lzma.FILTER_LZMA2, "preset": level, "dict_size": dict_size}]
        self.filter_flags = [{"filter_id": XZ_FILTER_LZMA2, "size_of_properties": 1,
                              "filter_properties": bytes([lzma2_dict_code(dict_size)])}]
        self.block_size = block_size or max(XZ_BLOCK_DICTS * dict_size, XZ_MIN_BLOCK)
        self.flags = {"check_type": XZ_CHECK_CRC32}
        self.records: list = []

    def head(self) -> bytes:
        flags = layout.XZ_STREAM_FLAGS.build(self.flags)
        return layout.XZ_STREAM_HEADER.build({"stream_flags": self.flags, "crc32": zlib.crc32(flags)})

    def job(self, data: bytes, last: bool) -> tuple:
        return (data,)

    def compress(self, data: bytes):
        packed = lzma.compress(data, format=lzma.FORMAT_RAW, filters=self.filters)
        header = self._block_header(len(packed), len(data))
        block = header + packed + _pad(len(packed)) + _crc32_le(data)
        return block, {"unpadded_size": len(header) + len(packed) + XZ_CHECK_SIZE,
                       "uncompressed_size": len(data)}

    def _block_header(self, compressed: int, uncompressed: int) -> bytes:
        fields = {"block_header_size": 0,
                  "block_flags": {"uncompressed_size_present": True, "compressed_size_present": True,
                                  "number_of_filters_minus_one": len(self.filter_flags) - 1},
                  "compressed_size": compressed, "uncompressed_size": uncompressed,
                  "filter_flags": self.filter_flags}
        size = len(layout.XZ_BLOCK_HEADER.build(fields))
        fields["block_header_size"] = (size + len(_pad(size)) + XZ_CHECK_SIZE) // XZ_ALIGNMENT - 1
        header = layout.XZ_BLOCK_HEADER.build(fields)
        header += _pad(len(header))
        return header + _crc32_le(header)

    def done(self, record) -> None:
        self.records.append(record)

    def tail(self) -> bytes:
        index = layout.XZ_INDEX.build({"number_of_records": len(self.records),
                                       "records": self.records})
        index += _pad(len(index))
        index += _crc32_le(index)
        backward_size = len(index) // XZ_ALIGNMENT - 1
        fields = {"crc32": 0, "backward_size": backward_size, "stream_flags": self.flags}
        # The CRC32 (first) covers what lies between it and the magic (last).
        covered = layout.XZ_STREAM_FOOTER.build(fields)[XZ_CHECK_SIZE:-len(layout.XZ_FOOTER_MAGIC)]
        return index + layout.XZ_STREAM_FOOTER.build(dict(fields, crc32=zlib.crc32(covered)))


class _Lz4Blocks:
    """The blocks of an lz4 legacy frame, each compressed on its own."""

    needs_last = False
    in_flight_per_worker = IN_FLIGHT_PER_WORKER

    def __init__(self, level: int, block_size: int | None):
        self.lz4 = _library("lz4.block", "lz4")
        self.level = level
        self.block_size = min(block_size or LZ4_BLOCK, LZ4_LEGACY_CHUNK)

    def head(self) -> bytes:
        return LZ4_LEGACY_HEADER.build({})

    def job(self, data: bytes, last: bool) -> tuple:
        return (data,)

    def compress(self, data: bytes):
        packed = self.lz4.compress(data, mode="high_compression", compression=self.level,
                                   store_size=False)
        return LZ4_LEGACY_BLOCK.build({"compressed_size": len(packed)}) + packed, None

    def done(self, record) -> None:
        pass

    def tail(self) -> bytes:
        return b""


_BLOCKS = {"gzip": _GzipBlocks, "xz": _XzBlocks, "lz4": _Lz4Blocks}


class CompressingSink:
    """The sequential part of :class:`~rumpfs.output.ImageSink`, compressed
    on ``workers`` threads (default: :func:`default_workers`).

    What is written is gathered into blocks of the method's size; each full
    block goes to the pool as soon as a byte after it arrives (so the last
    block is known as the last), and the compressed blocks are written to
    ``sink`` in order.  At most IN_FLIGHT_PER_WORKER blocks per thread
    (xz: one) wait or are being compressed.  With one worker the blocks are
    compressed on this thread.  A context manager: leaving it stops the threads.
    """

    def __init__(self, sink, method: str, level: int | None = None, workers: int | None = None):
        if method not in METHODS:
            raise RumpfsError(f"unknown compression {method!r} (known: {', '.join(METHODS)}, none)")
        self.sink = sink
        self.raw = 0
        self.progress = sink.progress
        if workers is None:
            workers = default_workers()
        level = DEFAULT_LEVELS[method] if level is None else level
        self.stream = self.blocks = self.pool = None
        if method == "zstd":
            # libzstd's threads: its output is the same for any count from 1.
            zstandard = _library("zstandard", "zstd")
            # Jobs of one window, not libzstd's four: a quarter of the
            # buffers in flight (level 3 on 2 threads: 64 -> 27 MiB) for
            # 0.2 % of ratio.  A stream writer hands the output on in pieces
            # as the threads finish it (compressobj gathers whole jobs).
            window_log = zstandard.ZstdCompressionParameters.from_level(level).window_log
            params = zstandard.ZstdCompressionParameters.from_level(
                level, threads=workers, job_size=max(1 << window_log, ZSTD_MIN_JOB))
            self.stream = zstandard.ZstdCompressor(compression_params=params).stream_writer(
                _WriteOnly(sink), closefd=False)
            return
        self.blocks = _BLOCKS[method](level, _positive_env(BLOCK_SIZE_ENV, "block size in bytes",
                                                           MIN_BLOCK_SIZE))
        self.pending = bytearray()
        self.in_flight: collections.deque = collections.deque()
        self.limit = self.blocks.in_flight_per_worker * workers
        if workers > 1:
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="rumpfs-compress")
        sink.write(self.blocks.head())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, data) -> None:
        self.raw += len(data)
        if self.stream is not None:
            self.stream.write(data)
            return
        pending = self.pending
        pending += data
        size = self.blocks.block_size
        if len(pending) > size:
            whole = (len(pending) - 1) // size * size  # not the last block: bytes follow
            with memoryview(pending) as view:
                cut = [bytes(view[at:at + size]) for at in range(0, whole, size)]
            del pending[:whole]
            for block in cut:
                self._submit(block, False)

    def _submit(self, block: bytes, last: bool) -> None:
        job = self.blocks.job(block, last)
        if self.pool is None:
            self._put(self.blocks.compress(*job))
            return
        in_flight = self.in_flight
        in_flight.append(self.pool.submit(self.blocks.compress, *job))
        while in_flight and (len(in_flight) > self.limit or in_flight[0].done()):
            self._put(in_flight.popleft().result())

    def _put(self, result) -> None:
        data, record = result
        self.sink.write(data)
        self.blocks.done(record)

    def tell(self) -> int:
        return self.raw

    def copy(self, data, length: int | None = None) -> None:
        append_data(self, data, length)

    def finish(self) -> int:
        if self.stream is not None:
            self.stream.close()  # ends the frame (the sink stays open: closefd=False)
        else:
            if self.pending or self.blocks.needs_last:
                self._submit(bytes(self.pending), True)
                self.pending = bytearray()
            while self.in_flight:
                self._put(self.in_flight.popleft().result())
            self.sink.write(self.blocks.tail())
        self.close()
        size = self.sink.tell()
        self.sink.finish(size)
        return size

    def close(self) -> None:
        """Stop the threads; blocks not started are dropped (after an error).
        A zstd stream's context (its own thread and buffers) goes at once,
        not when a reference cycle through the sink is collected."""
        self.stream = None
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
            self.in_flight.clear()


class _WriteOnly:
    """A sink seen only through its ``write`` (a zstd stream writer would
    call a ``flush`` too)."""

    __slots__ = ("write",)

    def __init__(self, sink):
        self.write = sink.write


class _InMemory:
    """:func:`compressor`: a CompressingSink on one thread into memory."""

    progress = None

    def __init__(self, method: str, level: int | None):
        self.out = bytearray()
        self.size = 0
        self.sink = CompressingSink(self, method, level, workers=1)

    # As the CompressingSink's sink.
    def write(self, data) -> None:
        self.out += data
        self.size += len(data)

    def tell(self) -> int:
        return self.size

    def finish(self, size: int) -> None:
        pass

    # As a compressor.
    def _taken(self) -> bytes:
        out = bytes(self.out)
        self.out = bytearray()
        return out

    def compress(self, data) -> bytes:
        self.sink.write(data)
        return self._taken()

    def flush(self) -> bytes:
        self.sink.finish()
        return self._taken()
