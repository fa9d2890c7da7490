"""Writing images: an all-or-nothing output file and the sink writers fill.

:class:`AtomicOutput` writes into a temporary file beside the target and
renames it into place only when everything succeeded, so an error or a
Ctrl-C never leaves a partial file and never touches an existing one.

:class:`ImageSink` is what every format writer receives: a file descriptor
and the offset at which the image starts inside it (an ELF object puts the
image after its header).  It offers sequential writes (cpio) and positioned
writes (FFS), and copies file data from the host straight into the output
with ``copy_file_range`` so the image is never held in memory.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import time

from .errors import RumpfsError

#: Small writes are gathered up to this size before one write(2).
BUFFER_SIZE = 1 << 20
#: Largest single copy_file_range / read request.
COPY_CHUNK = 1 << 30


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicOutput:
    """``with AtomicOutput(path) as out:`` then ``out.fd`` / ``out.file``."""

    def __init__(self, path: str, mode: int = 0o666):
        self.path = os.fspath(path)
        self.mode = mode
        self.fd = -1
        self.tmp = None

    def __enter__(self) -> "AtomicOutput":
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise RumpfsError(f"{self.path}: output directory {directory} does not exist")
        if os.path.isdir(self.path):
            raise RumpfsError(f"{self.path}: output is a directory")
        try:
            self.fd, self.tmp = tempfile.mkstemp(
                prefix="." + os.path.basename(self.path) + ".", suffix=".part", dir=directory)
        except OSError as e:
            raise RumpfsError(f"{self.path}: cannot create output: {e.strerror}") from None
        self.file = os.fdopen(self.fd, "r+b", buffering=0, closefd=False)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.file.close()
            if exc_type is None:
                os.fchmod(self.fd, self.mode & ~_current_umask())
        finally:
            os.close(self.fd)
            if exc_type is None:
                os.replace(self.tmp, self.path)
            else:
                try:
                    os.unlink(self.tmp)
                except FileNotFoundError:
                    pass


def open_source(data) -> int:
    """An fd on a node's host data, with an error that names the path."""
    try:
        return os.open(data.path, os.O_RDONLY)
    except OSError as e:
        raise RumpfsError(f"{os.fsdecode(data.path)}: cannot read: {e.strerror}") from None


class ImageSink:
    """The image being written: ``fd`` and the byte offset ``base`` where it starts.

    Offsets given to the methods are relative to the start of the image.
    """

    def __init__(self, fd: int, base: int = 0, progress=None):
        self.fd = fd
        self.base = base
        self.pos = 0  # sequential write position
        self._buf = bytearray()
        self._copy_range = hasattr(os, "copy_file_range")
        self.progress = progress

    # -- sequential interface ------------------------------------------------
    def write(self, data) -> None:
        self._buf += data
        if len(self._buf) >= BUFFER_SIZE:
            self.flush()

    def tell(self) -> int:
        return self.pos + len(self._buf)

    def flush(self) -> None:
        if self._buf:
            self._pwrite_all(self._buf, self.base + self.pos)
            self.pos += len(self._buf)
            self._buf.clear()

    def copy(self, data, length: int | None = None) -> None:
        """Append a node's data (``HostData`` or ``BytesData``) at the position."""
        size = data.size if length is None else length
        if not hasattr(data, "path"):
            self.write(data.data[:size])
            return
        if size < 65536:
            # Cheaper to read small files through the buffer than a syscall dance.
            fd = open_source(data)
            try:
                chunk = os.read(fd, size)
            finally:
                os.close(fd)
            if len(chunk) != size:
                raise _changed(data, size)
            self.write(chunk)
            if self.progress:
                self.progress.advance(size)
            return
        self.flush()
        self.copy_at(data, self.pos, 0, size)
        self.pos += size

    # -- positioned interface ----------------------------------------------------
    def pwrite(self, data, offset: int) -> None:
        self._pwrite_all(data, self.base + offset)

    def copy_at(self, data, dst_offset: int, src_offset: int = 0, length: int | None = None) -> None:
        """Copy ``length`` bytes of a node's data to ``dst_offset`` in the image."""
        size = data.size - src_offset if length is None else length
        if not hasattr(data, "path"):
            self.pwrite(data.data[src_offset:src_offset + size], dst_offset)
            return
        fd = open_source(data)
        try:
            self._copy_fd(fd, data, src_offset, self.base + dst_offset, size)
        finally:
            os.close(fd)

    def zero_fill(self, offset: int, length: int) -> None:
        """Zeros from ``offset``, written as real bytes (for formats without holes)."""
        block = bytes(min(length, BUFFER_SIZE))
        while length > 0:
            n = min(length, len(block))
            self.pwrite(block[:n], offset)
            offset += n
            length -= n

    def finish(self, size: int) -> None:
        """The image is ``size`` bytes long; the unwritten tail stays a hole."""
        self.flush()
        end = self.base + size
        if os.fstat(self.fd).st_size < end:
            os.ftruncate(self.fd, end)

    # -- internals ----------------------------------------------------------------
    def _pwrite_all(self, data, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def _copy_fd(self, src: int, data, src_off: int, dst_off: int, size: int) -> None:
        remaining = size
        while remaining > 0:
            n = 0
            if self._copy_range:
                try:
                    n = os.copy_file_range(src, self.fd, min(remaining, COPY_CHUNK), src_off, dst_off)
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise RumpfsError(f"{os.fsdecode(data.path)}: cannot read: {e.strerror}") from None
                    self._copy_range = False
                    continue
            else:
                chunk = os.pread(src, min(remaining, BUFFER_SIZE), src_off)
                n = len(chunk)
                if n:
                    self._pwrite_all(chunk, dst_off)
            if n == 0:
                raise _changed(data, size)
            src_off += n
            dst_off += n
            remaining -= n
            if self.progress:
                self.progress.advance(n)


def _changed(data, size: int) -> RumpfsError:
    return RumpfsError(f"{os.fsdecode(data.path)}: file changed while it was read "
                       f"(expected {size} bytes)")


class Progress:
    """Bytes written so far, on stderr, for long work (a terminal or ``--progress``)."""

    def __init__(self, total: int, label: str = "writing", enabled: bool | None = None,
                 stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= 0.5:
            self._last = now
            pct = min(100.0, 100.0 * self.done / self.total)
            self.stream.write(f"\r{self.label}: {self.done / 1048576:.0f} MiB ({pct:.0f}%)")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            self.stream.write(f"\r{self.label}: {self.done / 1048576:.0f} MiB, done\n")
            self.stream.flush()


class Prefetcher:
    """Read small files on a second thread, ahead of the writer that needs them.

    open/read/close release the GIL, so on a machine with two cores the
    system calls of the next files overlap the writer's own work.  Files come
    back in the order they were given, in batches to keep the hand-over cheap.
    ``get()`` returns the bytes of the next file, or raises what reading it raised.
    """

    BATCH = 64
    #: Batches read ahead at most: bounds memory whatever the tree.
    DEPTH = 32

    def __init__(self, sources):
        import queue
        import threading
        self._queue = queue.Queue(self.DEPTH)
        self._batch: list = []
        self._pos = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(list(sources),), daemon=True,
                                        name="rumpfs-prefetch")
        self._thread.start()

    def _run(self, sources) -> None:
        put = self._queue.put
        batch = []
        for data in sources:
            if self._stop:
                return
            try:
                if hasattr(data, "path"):
                    fd = os.open(data.path, os.O_RDONLY)
                    try:
                        chunk = os.read(fd, data.size) if data.size else b""
                    finally:
                        os.close(fd)
                    if len(chunk) != data.size:
                        chunk = _changed(data, data.size)
                else:
                    chunk = data.data
            except OSError as e:
                chunk = RumpfsError(f"{os.fsdecode(data.path)}: cannot read: {e.strerror}")
            batch.append(chunk)
            if len(batch) >= self.BATCH:
                put(batch)
                batch = []
        put(batch)

    def get(self) -> bytes:
        if self._pos >= len(self._batch):
            self._batch = self._queue.get()
            self._pos = 0
        chunk = self._batch[self._pos]
        self._pos += 1
        if isinstance(chunk, Exception):
            self.close()
            raise chunk
        return chunk

    def close(self) -> None:
        """Stop reading ahead (after an error or when done)."""
        self._stop = True
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except Exception:
                self._thread.join(0.01)
