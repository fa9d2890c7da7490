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
import stat
import struct
import sys
import time
from array import array
from bisect import bisect_left
from itertools import accumulate, repeat
from operator import add, attrgetter, itemgetter

from .errors import RumpfsError
from .tree import IFMT, KIND_NAMES, REG, UNCHECKED_SIZE, data_runs

#: Small writes are gathered up to this size before one write(2).
BUFFER_SIZE = 1 << 20
#: Largest single copy_file_range / read request.
COPY_CHUNK = 1 << 30


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Kinds of output that are never replaced nor written, by their type bits.
_NOT_WRITTEN = {stat.S_IFLNK: "a symlink", stat.S_IFSOCK: "a socket",
                stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}
#: Kinds that a sequential writer writes into as they are (no temporary file).
_STREAMS = frozenset((stat.S_IFIFO, stat.S_IFCHR))
#: The output named "-": standard output.
STDOUT_NAME = "-"
#: Errors of a write that say the output, not a source, is at fault.
_OUTPUT_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS))


class OutputError(RumpfsError):
    """A write into the output failed; :class:`AtomicOutput` adds its name
    (the code that writes knows only a file descriptor)."""


def output_error(error: OSError) -> OutputError:
    return OutputError(f"cannot write: {error.strerror}")


class AtomicOutput:
    """``with AtomicOutput(path) as out:`` then ``out.fd`` / ``out.file``.

    A regular file (new, or replacing an old one) is created unnamed
    (Linux ``O_TMPFILE``) in the output's directory and given its name only
    once everything is written: an error, a signal or even SIGKILL leaves
    neither a partial file nor a changed old one.  Where the file system
    has no ``O_TMPFILE``, a named ``.OUT.RANDOM.part`` beside the output
    is removed on errors and signals that Python sees.

    A symlink, socket, block device or directory is never replaced.  A
    fifo or character device, or standard output for ``-``, is written as
    it is when the writer writes front to back (``sequential``; then
    ``out.streaming`` is true and ``out.fd`` may be a pipe); else ``what``
    (e.g. "an ffs image") says what needed a seekable output.

    While the output is open, the host walk leaves out the old output and
    the temporary file (:func:`rumpfs.hostwalk.leave_out`): an output
    inside a source tree is never packed into itself.
    """

    def __init__(self, path: str, mode: int = 0o666, sequential: bool = False,
                 what: str = "the image"):
        self.path = os.fspath(path)
        self.mode = mode
        self.sequential = sequential
        self.what = what
        self.fd = -1
        self.tmp = None  # the named temporary file (no O_TMPFILE)
        self.streaming = False
        self._dir_fd = -1
        self._left_out: list = []

    def __enter__(self) -> "AtomicOutput":
        from .hostwalk import leave_out
        if self.path == STDOUT_NAME:
            self._open_stdout()
        else:
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                st = None
            except OSError as e:
                raise RumpfsError(f"{self.path}: cannot create output: {e.strerror}") from None
            kind = None if st is None else stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFLNK:
                self._check_symlink()
            elif kind in _STREAMS:
                self._open_stream(kind)
            elif kind is not None and kind != stat.S_IFREG:
                raise RumpfsError(f"{self.path}: output is {_NOT_WRITTEN.get(kind, 'a special file')}; "
                                  "it is not replaced")
            else:
                self._open_regular()
            if self.streaming:
                st = os.fstat(self.fd)
            if st is not None:
                # "Can't add archive to itself", as bsdtar says.
                self._left_out.append(leave_out(st.st_dev, st.st_ino, True))
        if not self.streaming:
            st = os.fstat(self.fd)  # the temporary file
            self._left_out.append(leave_out(st.st_dev, st.st_ino, False))
        self.file = os.fdopen(self.fd, "r+b" if not self.streaming else "wb",
                              buffering=0, closefd=False)
        return self

    def _seekable_needed(self) -> RumpfsError:
        return RumpfsError(f"{self.path}: {self.what} needs a seekable output (a regular file)")

    def _open_stdout(self) -> None:
        if not self.sequential:
            raise self._seekable_needed()
        if os.isatty(STDOUT_FILENO):
            raise RumpfsError(f"{self.path}: not writing {self.what} to a terminal")
        try:
            self.fd = os.dup(STDOUT_FILENO)
        except OSError as e:  # closed (>&-)
            raise RumpfsError(f"{self.path}: cannot write to standard output: {e.strerror}") from None
        self.streaming = True
        st = os.fstat(self.fd)
        if stat.S_ISREG(st.st_mode):  # stdout redirected into a source tree
            from .hostwalk import leave_out
            self._left_out.append(leave_out(st.st_dev, st.st_ino, True))

    def _check_symlink(self) -> None:
        """A symlink is followed only to a fifo or character device (as
        /dev/stdout is to a pipe); it is never replaced."""
        try:
            kind = stat.S_IFMT(os.stat(self.path).st_mode)
        except OSError:
            kind = None
        if kind in _STREAMS:
            self._open_stream(kind)
            return
        raise RumpfsError(f"{self.path}: output is a symlink; it is not replaced "
                          "(name the file it points to)")

    def _open_stream(self, kind: int) -> None:
        if not self.sequential:
            raise self._seekable_needed()
        try:
            # A fifo waits here for its reader, as a shell redirection does.
            self.fd = os.open(self.path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            raise RumpfsError(f"{self.path}: cannot write: {e.strerror}") from None
        if os.isatty(self.fd):
            os.close(self.fd)
            self.fd = -1
            raise RumpfsError(f"{self.path}: not writing {self.what} to a terminal")
        self.streaming = True

    def _open_regular(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise RumpfsError(f"{self.path}: output directory {directory} does not exist")
        try:
            self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise RumpfsError(f"{self.path}: cannot create output: {e.strerror}") from None
        if _O_TMPFILE and os.path.isdir(_PROC_FD):
            try:
                self.fd = os.open(".", _O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600,
                                  dir_fd=self._dir_fd)
                return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    self._close_dir()
                    raise RumpfsError(f"{self.path}: cannot create output: {e.strerror}") from None
        try:
            self.fd, self.tmp = _create_temporary(directory, self.path)
        except BaseException:
            self._close_dir()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        from .hostwalk import stop_leaving_out
        for token in self._left_out:
            stop_leaving_out(token)
        self._left_out = []
        try:
            self.file.close()
            if exc_type is None and not self.streaming:
                os.fchmod(self.fd, self.mode & ~_current_umask())
                self._name()
        except OSError as e:
            exc_type = type(e)
            raise RumpfsError(f"{self.path}: cannot write: {e.strerror}") from None
        finally:
            os.close(self.fd)
            if exc_type is not None and self.tmp is not None:
                try:
                    os.unlink(self.tmp)
                except FileNotFoundError:
                    pass
            self._close_dir()
        if isinstance(exc, OutputError):
            raise RumpfsError(f"{self.path}: {exc}") from None
        if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
            # From a writer that writes the output itself (an ELF header).
            raise RumpfsError(f"{self.path}: cannot write: {exc.strerror}") from None

    def _name(self) -> None:
        """Give the finished file its name: the unnamed file linked in (to
        a temporary name first when an old output is to be replaced, then
        put in its place: atomic), or the named temporary file put in place."""
        name = os.path.basename(self.path)
        if self.tmp is None:
            source = f"{_PROC_FD}/{self.fd}"
            try:
                os.link(source, name, dst_dir_fd=self._dir_fd, follow_symlinks=True)
                return
            except FileExistsError:
                pass
            for _ in range(TEMPORARY_ATTEMPTS):
                tmp = f".{name}.{os.urandom(6).hex()}.part"
                try:
                    os.link(source, tmp, dst_dir_fd=self._dir_fd, follow_symlinks=True)
                    break
                except FileExistsError:
                    continue
            else:
                raise RumpfsError(f"{self.path}: cannot create output: no free temporary name")
            self.tmp = os.path.join(os.path.dirname(os.path.abspath(self.path)), tmp)
        _replace(self._dir_fd, os.path.basename(self.tmp), name)
        self.tmp = None

    def _close_dir(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1


def _replace(dir_fd: int, tmp: str, name: str) -> None:
    """Put the file ``tmp`` in the place of ``name`` (both in ``dir_fd``),
    atomically, as rename(2) does, but by exchanging the two names and then
    removing the old file.

    Why not rename: ext4 (``auto_da_alloc``, on by default) starts the
    writeback of the whole renamed file inside rename(2) when it replaces
    an existing file, so that a crash cannot leave the new name on a file
    whose data was never allocated.  For an image of hundreds of MiB that
    is most of a second of system time, in this process, more or less
    depending on what the disk is doing: replacing a 724 MiB FFS image took
    0.91-2.11 s of system time, packing it anew 0.82-1.71 s (six runs each).
    An exchange is not a rename over a file, so the kernel writes the image
    back later, as it does a new output's.  (Neither is durable after a
    crash without an fsync, which a rebuildable output does not need.)"""
    if _exchange(dir_fd, tmp, name):
        os.unlink(tmp, dir_fd=dir_fd)  # the old output, now under the temporary name
    else:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


#: renameat2's flag to swap two names (linux/fs.h).
RENAME_EXCHANGE = 2
#: Errors of renameat2 that mean "no exchange here": no such call or flag
#: (an old kernel or libc, a file system without it), no such target.
_NO_EXCHANGE = frozenset((errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOENT))


def _exchange(dir_fd: int, a: str, b: str) -> bool:
    """Swap the names ``a`` and ``b`` in ``dir_fd`` (renameat2
    RENAME_EXCHANGE); False if that cannot be done here (then nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a libc older than glibc 2.28
        return False
    if renameat2(dir_fd, os.fsencode(a), dir_fd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), b)


STDOUT_FILENO = 1
#: Linux's flag for an unnamed file (0: unknown here, use a named one).
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
#: Where an open file's magic link is, for linkat to give it a name.
_PROC_FD = "/proc/self/fd"

#: Attempts at a free temporary name before giving up.
TEMPORARY_ATTEMPTS = 100


_TEMPORARY_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                    | getattr(os, "O_CLOEXEC", 0))


def _create_temporary(directory: str, output: str) -> tuple[int, str]:
    """A new file ``.OUTPUT.RANDOM.part`` in ``directory``, mode 0600: what
    tempfile.mkstemp does, without the start-up cost of importing tempfile."""
    prefix = os.path.join(directory, "." + os.path.basename(output))
    for _ in range(TEMPORARY_ATTEMPTS):
        path = f"{prefix}.{os.urandom(6).hex()}.part"
        try:
            return os.open(path, _TEMPORARY_FLAGS, 0o600), path
        except FileExistsError:
            continue
        except OSError as e:
            raise RumpfsError(f"{output}: cannot create output: {e.strerror}") from None
    raise RumpfsError(f"{output}: cannot create output: no free temporary name in {directory}")


#: How a source file is opened: never blocking (a fifo or a device put in
#: its place since the walk), never through a symlink, never a terminal.
_SOURCE_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY
                 | getattr(os, "O_CLOEXEC", 0))
#: A job's modification time when the walk did not record one.
NO_MTIME = -(1 << 63)


def open_source(data) -> int:
    """An fd on a node's host data, checked to be the regular file of the
    size and time the walk saw, positioned where the data starts (an archive
    member's offset); errors name the path."""
    fd = _open_source(data.path, data.file_size, _mtime_of(data))
    if data.offset:
        os.lseek(fd, data.offset, os.SEEK_SET)
    return fd


def _mtime_of(data) -> int:
    mtime = data.mtime_ns
    return NO_MTIME if mtime is None else mtime


def _open_path(path: bytes) -> int:
    """An fd on a source path, not followed through a symlink; errors name the path."""
    try:
        return os.open(path, _SOURCE_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _changed(path, "now a symlink") from None
        raise _unreadable(path, e) from None


def _open_source(path: bytes, size: int, mtime_ns: int) -> int:
    fd = _open_path(path)
    try:
        st = os.fstat(fd)
        # The usual case in one test; check_source says what differs.
        if st.st_size != size or st.st_mtime_ns != mtime_ns or st.st_mode & IFMT != REG:
            check_source(fd, path, size, mtime_ns)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_source(fd: int, path: bytes, size: int, mtime_ns: int = NO_MTIME) -> None:
    """Raise if the open source ``fd`` is not (or no longer) the regular file
    of ``size`` bytes and modification time ``mtime_ns`` that the walk saw:
    the image would hold a mix of before and after."""
    st = os.fstat(fd)
    kind = st.st_mode & IFMT
    if kind != REG:
        raise _changed(path, f"now a {KIND_NAMES.get(kind, 'special file')}")
    if size != UNCHECKED_SIZE and st.st_size != size:
        raise _changed(path, f"size {size} -> {st.st_size}")
    if mtime_ns != NO_MTIME and st.st_mtime_ns != mtime_ns:
        raise _changed(path, f"mtime {_show_ns(mtime_ns)} -> {_show_ns(st.st_mtime_ns)}")


def _short(fd: int, path: bytes, size: int, mtime_ns: int) -> RumpfsError:
    """The error for a read that came back short: what changed, if fstat
    tells, else that the file is shorter."""
    check_source(fd, path, size, mtime_ns)
    return _changed(path, f"shorter than its {size} bytes")


def _changed(path: bytes, what: str) -> RumpfsError:
    return RumpfsError(f"{os.fsdecode(path)}: changed while being packed ({what})")


def _show_ns(ns: int) -> str:
    """A time in nanoseconds as seconds, with the fraction only when there is one."""
    seconds, fraction = divmod(ns, 10**9)
    return f"{seconds}.{fraction:09d}".rstrip("0").rstrip(".")


def _unreadable(path: bytes, error: OSError) -> RumpfsError:
    return RumpfsError(f"{os.fsdecode(path)}: cannot read: {error.strerror}")


class _Buffered:
    """Sequential writes gathered into ``_buf`` up to BUFFER_SIZE; the sink's
    ``flush`` writes them at ``pos`` and advances it."""

    pos: int
    _buf: bytearray

    def write(self, data) -> None:
        self._buf += data
        if len(self._buf) >= BUFFER_SIZE:
            self.flush()

    def tell(self) -> int:
        return self.pos + len(self._buf)

    def flush(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class ImageSink(_Buffered):
    """The image being written: ``fd`` and the byte offset ``base`` where it starts.

    Offsets given to the methods are relative to the start of the image.

    Copies of host file data are recorded, not done at once: a
    :class:`Copier` runs them in worker processes while the writer goes on
    laying out metadata, and :meth:`finish` waits for the last of them.
    Every offset is known before the data is needed, and processes put the
    second core to work on the open/copy/close calls that dominate a tree of
    small files (threads would queue on the GIL between those calls).

    The contract with writers: a region given to :meth:`copy_at` is never
    written again with :meth:`pwrite`.  The image is a new file: bytes that
    nothing writes read as zeros, so the holes of a source file are not
    copied but left holes.
    """

    def __init__(self, fd: int, base: int = 0, progress=None, workers: int | None = None):
        self.fd = fd
        self.base = base
        self.pos = 0  # sequential write position
        self._buf = bytearray()
        self.progress = progress
        self.copier = Copier(fd, base, workers, progress)
        #: Jobs whose placeholders are still in the buffer (not yet on disk).
        self._held: list = []

    def use_copier(self, copier: "Copier") -> None:
        """Copy with ``copier`` (workers started earlier on this sink's file,
        see :meth:`Copier.start`) instead of a new one."""
        if copier.fd != self.fd:
            raise ValueError("the copier writes another file")
        copier.base = self.base
        copier.progress = self.progress
        self.copier = copier

    # -- sequential interface (write, tell: _Buffered) -------------------------
    def flush(self) -> None:
        if self._buf:
            self._pwrite_all(self._buf, self.base + self.pos)
            self.pos += len(self._buf)
            self._buf.clear()
        if self._held:
            # Their placeholders are written: the copies may overwrite them now.
            self.copier.add(self._held)
            self._held = []

    def write_scattered(self, runs, jobs: list, headers: list, end: int) -> None:
        """Write ``runs`` -- ``(image offset, bytes)`` -- and queue ``jobs``
        -- ``(data, src_offset, image_offset, length)`` -- each of whose
        copies also writes its ``headers`` entry just before its data.  The
        sequential position moves to ``end``.  Bytes that neither covers are
        never written: the file reads zeros there."""
        self.flush()
        for offset, chunk in runs:
            self._pwrite_all(chunk, self.base + offset)
        if jobs:
            self.copier.add(jobs, headers)
        self.pos = end

    def copy(self, data, length: int | None = None) -> None:
        """Append a node's data (``HostData`` or ``BytesData``) at the position."""
        size = data.size if length is None else length
        if not hasattr(data, "path"):
            self.write(data.data[:size])
            return
        if size <= PLACEHOLDER_MAX:
            # Hold the place with zeros rather than cut the buffer into
            # one write per file; the copy overwrites them once they are out.
            self._held.append((data, 0, self.tell(), size))
            self.write(PLACEHOLDER[:size])
            return
        self.flush()
        self.copy_at(data, self.pos, 0, size)
        self.pos += size

    # -- positioned interface ----------------------------------------------------
    def pwrite(self, data, offset: int) -> None:
        self._pwrite_all(data, self.base + offset)

    def copy_at(self, data, dst_offset: int, src_offset: int = 0, length: int | None = None) -> None:
        """Copy ``length`` bytes of a node's data to ``dst_offset`` in the image
        (soon, by a worker; :meth:`finish` waits for it)."""
        size = data.size - src_offset if length is None else length
        if not hasattr(data, "path"):
            self.pwrite(data.data[src_offset:src_offset + size], dst_offset)
            return
        if size:
            self.copier.add(((data, src_offset, dst_offset, size),))

    def copies_own_units(self, unit: int) -> None:
        """Tell the sink that the image is made of ``unit``-byte units (from
        its start) and that a unit holding a byte of a copy belongs to that
        copy alone: nothing else writes it, and its bytes outside the copy
        are zeros.  (An FFS fragment belongs to one inode.)  A worker may then
        write the gap between two copies less than a unit apart as zeros and
        join them into one write."""
        if unit > len(_ZEROS):
            raise ValueError(f"unit of {unit} bytes: at most {len(_ZEROS)}")
        self.copier.unit = unit

    def finish(self, size: int) -> None:
        """The image is ``size`` bytes long: wait for every copy; the
        unwritten tail stays a hole."""
        self.flush()
        self.copier.finish()
        end = self.base + size
        if os.fstat(self.fd).st_size < end:
            try:
                os.ftruncate(self.fd, end)
            except OSError as e:
                raise output_error(e) from None

    def wait_for_copies(self) -> None:
        """Return once every copy handed over so far is written (before
        overwriting bytes a copy may have written)."""
        self.flush()
        self.copier.finish()

    def abort(self) -> None:
        """Stop the workers (after an error)."""
        self.copier.abort()

    # -- internals ----------------------------------------------------------------
    def _pwrite_all(self, data, offset: int) -> None:
        pwrite_all(self.fd, data, offset)


class StreamSink(_Buffered):
    """The sequential part of :class:`ImageSink` for an output that cannot
    seek (a pipe, a fifo, a character device: ``AtomicOutput.streaming``):
    every byte in order with write(2), file data read in order here (no
    copy workers: they write at offsets)."""

    def __init__(self, fd: int, progress=None):
        self.fd = fd
        self.progress = progress
        self.pos = 0
        self._buf = bytearray()

    def flush(self) -> None:
        if self._buf:
            view = memoryview(self._buf)
            try:
                while view:
                    view = view[os.write(self.fd, view):]
            except BrokenPipeError:
                raise  # the reader is gone: the command ends quietly, as cat does
            except OSError as e:
                raise output_error(e) from None
            finally:
                view.release()
            self.pos += len(self._buf)
            self._buf.clear()

    def copy(self, data, length: int | None = None) -> None:
        """Append a node's data (``HostData`` or ``BytesData``)."""
        append_data(self, data, length)

    def finish(self, size: int) -> None:
        self.flush()

    def wait_for_copies(self) -> None:
        self.flush()

    def abort(self) -> None:
        self._buf.clear()


def append_data(sink, data, length: int | None = None) -> None:
    """Write ``length`` bytes (default: all) of a node's data to a sequential
    ``sink`` (its ``write`` and ``progress``), reading host files as
    :func:`read_source` does."""
    size = data.size if length is None else length
    if not hasattr(data, "path"):
        sink.write(data.data[:size])
        return
    for chunk in read_source(data, size):
        sink.write(chunk)
        if sink.progress:
            sink.progress.advance(len(chunk))


def read_source(data, size: int):
    """The first ``size`` bytes of the host data ``data`` (from its offset in
    its file), in chunks of at most BUFFER_SIZE, checked before and after as
    :func:`open_source` does."""
    mtime = _mtime_of(data)
    fd = open_source(data)
    try:
        left = size
        while left:
            try:
                chunk = os.read(fd, min(left, BUFFER_SIZE))
            except OSError as e:
                raise _unreadable(data.path, e) from None
            if not chunk:
                raise _short(fd, data.path, data.file_size, mtime)
            left -= len(chunk)
            yield chunk
        check_source(fd, data.path, data.file_size, mtime)
    finally:
        os.close(fd)


class InOrder:
    """Writes to a sequential ``sink`` (a compressing sink, a StreamSink) on
    a thread of its own, in the order it is given them: bytes, host files,
    and stretches that directory walkers write into pipes (see
    :class:`PipeStretchWriter`).  The writer goes on laying out what
    follows a stretch while the stretch is being read, and the walkers read
    their files while this process compresses.

    :meth:`hold` keeps what comes from then on in a temporary file, where
    :meth:`finish` can still correct it (headers whose link counts were
    known only at the end) before it goes to the sink.  After an error the
    thread reads on and drops what it is given, so that no walker is left
    waiting on a full pipe; the error is raised at the writer's next call
    (a pipe that ends early, at :meth:`finish`: the walk raises the walker's
    own error first).
    """

    #: Items queued at most (each up to about BUFFER_SIZE bytes, or a pipe's stretch).
    QUEUE_ITEMS = 8

    def __init__(self, sink):
        import queue
        import threading

        self.sink = sink
        self.progress = getattr(sink, "progress", None)
        self.pos = sink.tell()
        self.error: BaseException | None = None
        self._spill = None
        self._held_from = None
        self._pipe_buffer = None  # what pipes are read into, made by the thread
        self._pipe_ended: RumpfsError | None = None
        self._queue = queue.Queue(self.QUEUE_ITEMS)
        self._thread = threading.Thread(target=self._run, name="rumpfs-in-order", daemon=True)
        self._thread.start()

    # -- the writer's side ---------------------------------------------------------
    def tell(self) -> int:
        return self.pos

    def write(self, data) -> None:
        if data:
            self._put((self._write, data))
            self.pos += len(data)

    def copy(self, data, length: int | None = None) -> None:
        """Append a node's data (``HostData`` or ``BytesData``)."""
        size = data.size if length is None else length
        self._put((self._copy, (data, size)))
        self.pos += size

    def pipe(self, fd: int, size: int) -> None:
        """Append the next ``size`` bytes that a walker writes into the pipe ``fd``."""
        self._put((self._drain, (fd, size)))
        self.pos += size

    def hold(self) -> None:
        """Keep what follows for :meth:`finish` (once: later calls do nothing)."""
        if self._held_from is None:
            self._held_from = self.pos
            self._put((self._start_spill, None))

    def finish(self, corrections=()) -> int:
        """Wait until everything given is written; ``corrections`` --
        ``(offset, bytes)`` within what was held -- overwrite bytes first.
        Returns the position."""
        self._put(None)
        self._thread.join()
        self._raise()
        spill = self._spill
        if spill is not None:
            self._spill = None
            with spill:
                for offset, data in corrections:
                    pwrite_all(spill.fileno(), data, offset - self._held_from)
                spill.seek(0)
                while chunk := spill.read(BUFFER_SIZE):
                    self.sink.write(chunk)
        elif corrections:  # pragma: no cover - the writer held before any
            raise ValueError("corrections of bytes that were not held")
        return self.pos

    def abort(self) -> None:
        """Stop after an error (the walkers are stopped first, so that the
        pipes end); nothing more reaches the sink."""
        if self.error is None:
            self.error = RumpfsError("writing stopped")
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def _put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def _raise(self) -> None:
        error = self.error or self._pipe_ended
        if error is not None:
            raise error

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        get = self._queue.get
        target = self.sink
        while (item := get()) is not None:
            action, argument = item
            try:
                if self._dropping() and action is not self._drain:
                    continue
                target = action(argument, target) or target
            except _PipeEnded as e:
                # The walker's own message (from its record pipe) says why;
                # the walk raises it, so this one waits for finish().
                if self._pipe_ended is None:
                    self._pipe_ended = e
            except BaseException as e:  # raised in the writer's thread
                if self.error is None:
                    self.error = e

    def _dropping(self) -> bool:
        return self.error is not None or self._pipe_ended is not None

    def _write(self, data, target) -> None:
        target.write(data)

    def _copy(self, job, target) -> None:
        data, size = job
        append_data(target, data, size)

    def _drain(self, job, target) -> None:
        fd, left = job
        if self._pipe_buffer is None:
            self._pipe_buffer = memoryview(bytearray(PIPE_SIZE))
        buffer = self._pipe_buffer
        while left:
            n = os.readv(fd, [buffer[:min(left, PIPE_SIZE)]])
            if not n:
                raise _PipeEnded("directory walker: ended before it had written its subtree")
            left -= n
            if not self._dropping():
                target.write(buffer[:n])  # sinks copy what they keep

    def _start_spill(self, _argument, _target):
        import tempfile

        try:
            file = tempfile.TemporaryFile(prefix="rumpfs-")
        except OSError as e:
            raise _spill_error(e) from None
        self._spill = _SpillFile(file, self.progress)
        return self._spill


class _PipeEnded(RumpfsError):
    """A walker's pipe ended before its stretch did (the walker failed)."""


class _SpillFile:
    """Where :class:`InOrder` keeps held bytes: a file with ``write`` and
    ``progress`` as a sink has them."""

    def __init__(self, file, progress):
        self.file = file
        self.progress = progress

    def write(self, data) -> None:
        try:
            self.file.write(data)
        except OSError as e:
            raise _spill_error(e) from None

    def fileno(self) -> int:
        try:
            self.file.flush()
        except OSError as e:
            raise _spill_error(e) from None
        return self.file.fileno()

    def seek(self, pos: int) -> None:
        self.file.seek(pos)

    def read(self, size: int) -> bytes:
        return self.file.read(size)

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _spill_error(error: OSError) -> OutputError:
    """An error of the held bytes' file: it says where that file is."""
    import tempfile

    return OutputError(f"cannot write a temporary file in {tempfile.gettempdir()}: "
                       f"{error.strerror}")


#: Files up to this size keep their place in the write buffer (see ImageSink.copy).
PLACEHOLDER_MAX = 64 << 10
PLACEHOLDER = memoryview(bytes(PLACEHOLDER_MAX))
#: Copies larger than this are cut into pieces of this size (shared between workers).
PIECE_BYTES = 8 << 20
#: Jobs go to the workers in batches of this many files or bytes (small
#: enough that the workers start early, large enough that handing a batch
#: over costs little next to copying it) ...
BATCH_JOBS = 256
BATCH_BYTES = 8 << 20
#: The first batch is this many files, and each next one twice as many up
#: to BATCH_JOBS: the copying starts as soon as a few files are known.
FIRST_BATCH_JOBS = 16
#: ... and below this much work in all, this process copies them at the end.
PARALLEL_MIN_JOBS = 1024
PARALLEL_MIN_BYTES = 64 << 20
#: What opening, reading and closing one more file costs a worker, in bytes
#: copied in the same time (about 5 us, at 3 GB/s): the small files' shares
#: are evened out by bytes plus this per file.
JOB_COST_BYTES = 16 << 10

#: Leads a copy worker's error message that is about the output.
_OUTPUT_MARK = b"\0"
#: Pipe capacity asked for (Linux allows up to /proc/sys/fs/pipe-max-size, 1 MiB).
PIPE_SIZE = 1 << 20
#: A batch of copy jobs on a worker's pipe: this head (the number of jobs,
#: the bytes of their paths, the bytes of their headers, the unit the copies
#: own as in ImageSink.copies_own_units or 0), then seven native signed
#: 64-bit numbers per job (source offset, destination offset, length, length
#: of the path, length of the header, and the file's size and mtime as the
#: walk saw them, NO_MTIME for none), then the paths one after the other,
#: then the headers.  Columns rather than one record per job: both ends
#: build and read them with a few calls per batch, not per job.
_FRAME_HEAD = struct.Struct("=QQQQ")
_NUMBERS_PER_JOB = 7
_NUMBER = "q"
_SIZE_OF_JOB = itemgetter(3)
#: What a frame takes from a job's data object (a HostData: its path is
#: head + name, joined in one map rather than a property call each).
_FRAME_FIELDS = attrgetter("head", "name", "mtime_ns", "offset", "file_size")


class Copier:
    """Runs recorded copies ``(data, src_offset, dst_offset, length)`` into
    ``fd``; destination offsets are relative to ``base``.

    Once there is enough work, ``workers`` processes are forked and fed
    batches of jobs through pipes (a job is a few numbers and a path), while
    this process goes on with the metadata; small images are copied here at
    :meth:`finish`.  The workers are forked once, so the parent's memory is
    not made copy-on-write again and again; a worker that fails writes its
    one-line error to its result pipe and stops.
    """

    def __init__(self, fd: int, base: int = 0, workers: int | None = None, progress=None):
        self.fd = fd
        self.base = base
        self.workers = min(usable_cores(), 4) if workers is None else workers
        if not hasattr(os, "fork"):
            self.workers = 0
        self.progress = progress
        self.ready: list = []
        #: Bytes to write just before each ready job's data (b"": none).
        self.headers: list = []
        self.ready_bytes = 0
        self.procs: list = []  # (pid, job pipe, result pipe)
        #: For each worker, whether it reports its bytes to the progress
        #: itself (a Progress.worker_counter); the bytes handed to the others
        #: are counted when they are reaped.
        self.reporting: list = []
        self.unreported_bytes = 0
        #: Work handed to each worker so far (bytes, JOB_COST_BYTES per file).
        self.handed: list = []
        self.batch_jobs = FIRST_BATCH_JOBS
        #: See :meth:`ImageSink.copies_own_units` (0: no such units).
        self.unit = 0

    def add(self, jobs, headers=None) -> None:
        """Queue ``jobs``; ``headers``, when given, holds for each job bytes
        to write just before its data (the job's copy writes them)."""
        sizes = list(map(_SIZE_OF_JOB, jobs))
        if sizes and max(sizes) > PIECE_BYTES:
            for job, header in zip(jobs, headers or repeat(b"")):
                self._add_pieces(job, header)
        else:
            self.ready += jobs
            self.headers += headers if headers is not None else repeat(b"", len(jobs))
            self.ready_bytes += sum(sizes)
        if self.workers >= 1 and (len(self.ready) >= self.batch_jobs
                                  or self.ready_bytes >= BATCH_BYTES):
            self._send()

    def _add_pieces(self, job, header: bytes) -> None:
        """A large file in pieces, so that every worker takes a share (a
        piece that is all hole costs its worker a few seeks: _copy_fd)."""
        data, src, dst, size = job
        if size <= PIECE_BYTES:
            self.ready.append(job)
            self.headers.append(header)
        else:
            pieces = [(data, src + k, dst + k, min(PIECE_BYTES, size - k))
                      for k in range(0, size, PIECE_BYTES)]
            self.ready += pieces
            self.headers += [header] + [b""] * (len(pieces) - 1)
        self.ready_bytes += size

    def start(self) -> None:
        """Fork the workers now (else they are forked when the first batch
        is ready).  Forking before the tree is built is cheaper: the child
        gets small page tables, and the parent's later work on a large tree
        does not copy pages it shares with the children."""
        if not self.procs:
            self._start()

    def _start(self) -> None:
        progress = self.progress
        for _ in range(self.workers):
            counter = progress.worker_counter() if progress is not None else None
            jr, jw = os.pipe()
            rr, rw = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the worker
                os.close(jw)
                os.close(rr)
                for _, other_jw, other_rr in self.procs:
                    os.close(other_jw)
                    os.close(other_rr)
                code = 0
                try:
                    _worker(self.fd, jr, counter)
                except RumpfsError as e:
                    # An error of the output is marked: the parent names it.
                    marker = _OUTPUT_MARK if isinstance(e, OutputError) else b""
                    os.write(rw, marker + str(e).encode("utf-8", "surrogateescape"))
                    code = 1
                except BaseException as e:  # noqa: B036 - report anything, never unwind
                    os.write(rw, f"copy worker failed: {e!r}".encode())
                    code = 1
                os._exit(code)
            os.close(jr)
            os.close(rw)
            grow_pipe(jw)
            self.procs.append((pid, jw, rr))
            self.reporting.append(counter is not None)
            self.handed.append(0)

    def _send(self) -> None:
        if not self.procs:
            self._start()
        jobs, self.ready = self.ready, []
        headers, self.headers = self.headers, []
        self.ready_bytes = 0
        self.batch_jobs = min(2 * self.batch_jobs, BATCH_JOBS)
        n = len(self.procs)
        if max(map(_SIZE_OF_JOB, jobs)) > GATHER_FILE_MAX:
            # The copies of large files (copy_file_range, see StretchWriter)
            # all go to the first worker.  Writes into one file take its lock
            # in turn, so a second worker would not copy them sooner, and
            # waiting for the lock cost it as much CPU as the copy itself.
            large = [k for k, job in enumerate(jobs) if job[3] > GATHER_FILE_MAX]
            self._hand(0, [jobs[k] for k in large], [headers[k] for k in large])
            small = [k for k, job in enumerate(jobs) if job[3] <= GATHER_FILE_MAX]
            jobs, headers = [jobs[k] for k in small], [headers[k] for k in small]
        if jobs:
            # Each worker gets a share of the small files in one piece of
            # the image (written in long runs, see GATHER_BYTES), their opens
            # and reads side by side; the shares even out the work handed
            # so far, so the worker with the large files gets fewer.
            ends = list(accumulate(map(_job_cost, jobs, headers)))
            total = ends[-1]
            goal = (sum(self.handed) + total) / n
            wants = [max(0.0, goal - handed) for handed in self.handed]
            scale = total / sum(wants)
            cuts, reach = [0], 0.0
            for k in range(n - 1):
                reach += wants[k] * scale
                cuts.append(bisect_left(ends, reach))
            cuts.append(len(jobs))
            for k in range(n):
                self._hand(k, jobs[cuts[k]:cuts[k + 1]], headers[cuts[k]:cuts[k + 1]])

    def _hand(self, worker: int, jobs: list, headers: list) -> None:
        """Send ``worker`` a frame of ``jobs``."""
        if not jobs:
            return
        if not self.reporting[worker]:
            self.unreported_bytes += sum(map(_SIZE_OF_JOB, jobs))
        self.handed[worker] += sum(map(_job_cost, jobs, headers))
        try:
            _write_all(self.procs[worker][1], _frame(jobs, headers, self.base, self.unit))
        except BrokenPipeError:
            self.finish()  # the worker stopped: report its error
            raise RumpfsError("copy worker stopped unexpectedly") from None

    def finish(self) -> None:
        try:
            if not self.procs and not (len(self.ready) >= PARALLEL_MIN_JOBS
                                       or self.ready_bytes >= PARALLEL_MIN_BYTES):
                jobs, self.ready = self.ready, []
                headers, self.headers = self.headers, []
                _copy_jobs(self.fd, self.base, jobs, headers, self.progress)
                return
            if self.workers >= 1:
                if self.ready:
                    self._send()  # what is left, shared between the workers
            else:
                jobs, self.ready = self.ready, []
                headers, self.headers = self.headers, []
                _copy_jobs(self.fd, self.base, jobs, headers, self.progress)
            errors = []
            for _pid, jw, _rr in self.procs:
                os.close(jw)
            for pid, _jw, rr in self.procs:
                with os.fdopen(rr, "rb") as r:
                    message = r.read()
                _, status = os.waitpid(pid, 0)
                if message or status:
                    errors.append(message.decode("utf-8", "surrogateescape")
                                  or f"copy worker ended with status {status}")
            self.procs = []
            self.reporting = []
            self.handed = []
            if errors:
                if errors[0].startswith(_OUTPUT_MARK.decode()):
                    raise OutputError(errors[0][len(_OUTPUT_MARK):])
                raise RumpfsError(errors[0])
            if self.unreported_bytes and self.progress is not None:
                self.progress.advance(self.unreported_bytes)
            self.unreported_bytes = 0
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        for pid, jw, rr in self.procs:
            for fd in (jw, rr):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.procs = []
        self.reporting = []
        self.handed = []
        self.unreported_bytes = 0
        self.ready = []
        self.headers = []


def _job_cost(job, header: bytes) -> int:
    return job[3] + len(header) + JOB_COST_BYTES


def usable_cores() -> int:
    """The cores this process may run on (``taskset``, a cpuset), which can
    be fewer than the machine has: what sizes every pool of workers."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def grow_pipe(fd: int) -> None:
    """Room for whole batches in a pipe (PIPE_SIZE), so that the process
    writing it need not wait for the reader at every 64 KiB."""
    try:
        import fcntl
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of ``data`` into the output at ``offset``."""
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
    except OSError as e:
        raise output_error(e) from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _frame(jobs: list, headers: list, base: int, unit: int = 0) -> bytes:
    """The frame of a batch of jobs ``(data, src_offset, dst_offset, length)``
    and their headers, whose copies own ``unit``-byte units of the image
    (see :meth:`ImageSink.copies_own_units`)."""
    count = len(jobs)
    datas, src_offsets, dst_offsets, lengths = zip(*jobs)
    # One pass over the data objects: on a large tree each is a cache miss.
    heads, names, mtimes, offsets, file_sizes = zip(*map(_FRAME_FIELDS, datas))
    paths = list(map(add, heads, names))
    if None in mtimes:
        mtimes = [NO_MTIME if m is None else m for m in mtimes]
    if any(offsets):
        # Offsets within the data; an archive member's data starts inside its archive.
        src_offsets = map(add, src_offsets, offsets)
    if base:
        dst_offsets = map(add, dst_offsets, repeat(base))
    # Each column into its place in the rows (one strided copy each).
    numbers = array(_NUMBER, bytes(count * _NUMBERS_PER_JOB * array(_NUMBER).itemsize))
    columns = (src_offsets, dst_offsets, lengths, map(len, paths), map(len, headers),
               file_sizes, mtimes)
    for k, column in enumerate(columns):
        numbers[k::_NUMBERS_PER_JOB] = array(_NUMBER, column)
    path_blob = b"".join(paths)
    header_blob = b"".join(headers)
    return (_FRAME_HEAD.pack(count, len(path_blob), len(header_blob), unit) + numbers.tobytes()
            + path_blob + header_blob)


#: A worker gathers small copies that follow each other in the image into
#: a buffer of this size and writes it at once: one write (and one turn of
#: the output file's lock) for many files instead of two each.
GATHER_BYTES = 1 << 20
#: Files up to this size are gathered; larger ones use copy_file_range.
GATHER_FILE_MAX = 64 << 10


def _worker(out_fd: int, job_fd: int, counter=None) -> None:  # pragma: no cover - runs in a worker
    """Read job frames from ``job_fd`` until it closes; copy each one.  The
    data bytes written are added to ``counter`` (a Progress.worker_counter)."""
    pending = b""
    head = _FRAME_HEAD.size
    itemsize = array(_NUMBER).itemsize * _NUMBERS_PER_JOB
    # Consecutive jobs (the common case: a batch is one piece of the image)
    # go out in long writes.
    out = StretchWriter(out_fd, 0, counter)
    while True:
        chunk = os.read(job_fd, 1 << 20)
        if not chunk:
            break
        pending += chunk
        start = 0  # of the next frame in pending
        while len(pending) - start >= head:
            count, paths_size, headers_size, unit = _FRAME_HEAD.unpack_from(pending, start)
            pos = start + head + count * itemsize
            hpos = pos + paths_size
            end = hpos + headers_size
            if len(pending) < end:
                break
            numbers = array(_NUMBER)
            numbers.frombytes(pending[start + head:pos])
            start = end
            (src_offsets, dst_offsets, lengths, path_lengths, header_lengths, sizes,
             mtimes) = (numbers[k::_NUMBERS_PER_JOB] for k in range(_NUMBERS_PER_JOB))
            paths = _slices(pending, pos, path_lengths)
            headers = _slices(pending, hpos, header_lengths) if headers_size else repeat(b"")
            out.copy_run(zip(paths, src_offsets, dst_offsets, lengths, headers, sizes, mtimes),
                         unit)
        pending = pending[start:]
    out.close()


_ZEROS = bytes(1 << 16)


class StretchWriter:
    """Writes the image front to back from image offset ``offset`` (in
    ``fd``): bytes and host files go through one buffer and out in writes of
    :data:`GATHER_BYTES` (a small file is read straight into it with
    ``preadv``); a larger file is copied with ``copy_file_range``.
    ``counter.advance(n)`` (a Progress, or a Progress.worker_counter in a
    child) is told the file data bytes written.  Used by copy workers, by
    directory walkers that write whole subtrees, and for copies done here."""

    def __init__(self, fd: int, offset: int, counter=None):
        self.fd = fd
        #: Image offset just past everything put so far.
        self.end = offset
        self.counter = counter
        self._buf = memoryview(bytearray(GATHER_BYTES))
        self._filled = 0
        self._data = 0  # file data bytes in the buffer
        self._use_range = hasattr(os, "copy_file_range")

    def put(self, data) -> None:
        n = len(data)
        if self._filled + n > GATHER_BYTES:
            self.flush()
            if n > GATHER_BYTES:
                self._write_at(data, self.end)
                self.end += n
                return
        self._buf[self._filled:self._filled + n] = data
        self._filled += n
        self.end += n

    def copy(self, data, size: int, src_offset: int = 0) -> None:
        """``size`` bytes of the host file ``data`` (its ``path``) from ``src_offset``."""
        self.copy_run(((data.path, data.offset + src_offset, self.end, size, b"", data.file_size,
                        _mtime_of(data)),))

    def copy_run(self, jobs, unit: int = 0) -> None:
        """Copy ``jobs`` ``(path, source offset, image offset, length,
        header, file size, mtime)``, each ``header`` written just before its
        data; the file must still be the regular file of that size and
        mtime (as the walk saw it) before and after the copy.  A gap
        shorter than ``unit`` before a job other than the first is written as
        zeros when it joins two buffered pieces (see
        :meth:`ImageSink.copies_own_units`; the gap before the first job may
        be another writer's); a longer one is left a hole.

        One loop for the whole run, its state in local names: a hundred
        thousand small files make a call per file count."""
        buf = self._buf
        filled, end, data = self._filled, self.end, 0
        room = 0
        fstat, close, preadv = os.fstat, os.close, os.preadv
        kept = kept_path = None  # the source kept open between jobs, and its path
        try:
            for path, src_offset, offset, size, header, file_size, mtime in jobs:
                start = offset - len(header)
                gap = start - end
                gathered = size if size <= GATHER_FILE_MAX else 0
                joined = 0 < gap < room and filled
                if gap and not joined or filled + gap + len(header) + gathered > GATHER_BYTES:
                    self._filled, self.end, self._data = filled, end, self._data + data
                    self.flush()
                    if joined:  # the buffer is full: the gap's zeros on their own
                        self._write_at(_ZEROS[:gap], end)
                    filled, end, data, gap = 0, start, 0, 0
                room = unit
                if gap:
                    buf[filled:filled + gap] = _ZEROS[:gap]
                    filled += gap
                if len(header) > GATHER_BYTES:
                    self._write_at(header, start)  # the buffer is empty: flushed above
                elif header:
                    buf[filled:filled + len(header)] = header
                    filled += len(header)
                end = offset
                if path == kept_path:
                    src = kept
                else:
                    if kept is not None:
                        os.close(kept)
                        kept = kept_path = None
                    if gathered and file_size != UNCHECKED_SIZE:
                        # Checked once, after the read (the fstat below): a
                        # small file read whole cannot change unseen between.
                        src = _open_path(path)
                    else:
                        src = _open_source(path, file_size, mtime)
                    if file_size == UNCHECKED_SIZE:
                        # Part of a larger file (archive members): the next
                        # job is likely to read it too, so it stays open.
                        kept, kept_path = src, path
                try:
                    if gathered:
                        try:
                            got = preadv(src, [buf[filled:filled + size]], src_offset)
                        except OSError as e:
                            # A fifo or directory now: say that, not the errno.
                            check_source(src, path, file_size, mtime)
                            raise _unreadable(path, e) from None
                        if got != size:
                            raise _short(src, path, file_size, mtime)
                        filled += size
                        data += size
                    elif size:
                        self._filled, self.end, self._data = filled, end, self._data + data
                        self.flush()
                        filled = data = 0
                        self._copy_large(src, path, src_offset, end, size, file_size, mtime)
                    if src != kept:
                        st = fstat(src)
                        if (st.st_size != file_size or st.st_mtime_ns != mtime
                                or st.st_mode & IFMT != REG):
                            check_source(src, path, file_size, mtime)
                finally:
                    if src != kept:
                        close(src)
                end = offset + size
        finally:
            self._filled, self.end, self._data = filled, end, self._data + data
            if kept is not None:
                close(kept)

    def flush(self) -> None:
        if self._filled:
            self._write_at(self._buf[:self._filled], self.end - self._filled)
            self._filled = 0
        if self._data and self.counter is not None:
            self.counter.advance(self._data)
        self._data = 0

    close = flush

    def _write_at(self, data, offset: int) -> None:
        pwrite_all(self.fd, data, offset)

    def _copy_large(self, src: int, path: bytes, src_offset: int, offset: int, size: int,
                    file_size: int, mtime: int) -> None:
        """Copy a file too large to gather (its holes left holes)."""
        self._use_range = _copy_fd(src, self.fd, path, src_offset, offset, size, self._use_range,
                                   self.counter, file_size, mtime)


class PipeStretchWriter(StretchWriter):
    """A :class:`StretchWriter` into a pipe: the same bytes, written in
    order with write(2) (a stretch has no gaps), holes read as zeros."""

    def _write_at(self, data, offset: int) -> None:
        _write_all(self.fd, data)

    def _copy_large(self, src: int, path: bytes, src_offset: int, offset: int, size: int,
                    file_size: int, mtime: int) -> None:
        left = size
        while left:
            try:
                chunk = os.pread(src, min(left, BUFFER_SIZE), src_offset)
            except OSError as e:
                raise _unreadable(path, e) from None
            if not chunk:
                raise _short(src, path, file_size, mtime)
            _write_all(self.fd, chunk)
            src_offset += len(chunk)
            left -= len(chunk)
            if self.counter:
                self.counter.advance(len(chunk))


def _copy_jobs(fd: int, base: int, jobs: list, headers: list, progress) -> None:
    """Copy ``jobs`` and their headers here, as a worker copies a frame."""
    out = StretchWriter(fd, 0, progress)
    out.copy_run((data.path, data.offset + src_off, base + dst_off, size, header, data.file_size,
                  _mtime_of(data))
                 for (data, src_off, dst_off, size), header in zip(jobs, headers))
    out.close()


def _slices(blob: bytes, pos: int, lengths) -> list[bytes]:
    """The pieces of ``blob`` of ``lengths``, one after another from ``pos``."""
    ends = list(accumulate(lengths, initial=pos))
    return [blob[a:b] for a, b in zip(ends, ends[1:])]


def _copy_fd(src: int, dst: int, path: bytes, src_off: int, dst_off: int, size: int,
             use_range: bool, progress, file_size: int, mtime: int) -> bool:
    """Copy one range of a source checked by _open_source, its holes left
    unwritten (the image is a new file and reads zeros there); returns
    whether copy_file_range still works here."""
    copied = 0
    for off, n in data_runs(src, src_off, size):
        use_range = _copy_run(src, dst, path, off, dst_off + off - src_off, n, use_range, progress,
                              file_size, mtime)
        copied += n
    if progress and copied < size:
        progress.advance(size - copied)
    return use_range


def _copy_run(src: int, dst: int, path: bytes, src_off: int, dst_off: int, size: int,
              use_range: bool, progress, file_size: int, mtime: int) -> bool:
    remaining = size
    while remaining > 0:
        n = 0
        if use_range:
            try:
                n = os.copy_file_range(src, dst, min(remaining, COPY_CHUNK), src_off, dst_off)
            except OSError as e:
                if e.errno in _OUTPUT_ERRNOS:
                    raise output_error(e) from None
                if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise _unreadable(path, e) from None
                use_range = False
                continue
        else:
            try:
                chunk = os.pread(src, min(remaining, BUFFER_SIZE), src_off)
            except OSError as e:
                raise _unreadable(path, e) from None
            n = len(chunk)
            pwrite_all(dst, chunk, dst_off)
        if n == 0:
            raise _short(src, path, file_size, mtime)
        src_off += n
        dst_off += n
        remaining -= n
        if progress:
            progress.advance(n)
    return use_range


#: On a terminal the progress line is drawn again at most this often (seconds) ...
REDRAW_SECONDS = 0.5
#: ... and elsewhere (a log file, a CI job) a plain line is printed at most
#: this often, the first one after as long.
LOG_SECONDS = 5.0
MiB = 1 << 20


class Progress:
    """Bytes written so far, on stderr, for long work (a terminal or ``--progress``).

    On a terminal one line is drawn over and over (``\\r``) with the rate and,
    once the total is known, the percentage and the time left; elsewhere
    (``terminal`` false: stderr is a file or a pipe) the same is printed as
    plain lines, one every :data:`LOG_SECONDS`.  The rate is the average
    since the progress was made; ``clock`` (default ``time.monotonic``) is
    there for tests.

    ``done`` counts what this process reports with :meth:`advance` and what
    forked children (copy workers, walkers) report through
    :meth:`worker_counter`.  When enabled, a daemon thread draws the line
    again (at most every ``REDRAW_SECONDS``) so that it moves while this
    process waits on a pipe or a child; :meth:`close` stops it.  A disabled
    progress only adds up :meth:`advance`: no thread, no shared memory, and
    :meth:`worker_counter` gives ``None``.
    """

    def __init__(self, total: int | None, label: str = "writing", enabled: bool | None = None,
                 stream=None, clock=None, terminal: bool | None = None):
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.enabled = self.terminal if enabled is None else enabled
        #: None until known (a tree listed while it is written).
        self.total = None if total is None else max(total, 1)
        self.label = label
        self._clock = clock if clock is not None else time.monotonic
        self._start = self._clock()
        self._interval = REDRAW_SECONDS if self.terminal else LOG_SECONDS
        self._own = 0  # bytes advanced by this process
        # When the line was last drawn: a terminal's first line comes at
        # once, a log's first after an interval.
        self._last = -self._interval if self.terminal else self._start
        self._line = ""
        #: One native 64-bit counter per reporting child, in anonymous shared
        #: memory made before any child is forked (see worker_counter).
        self._counts = None
        self._slots_given = 0
        self._stop = None
        if self.enabled:
            import atexit
            import mmap
            import threading
            import weakref
            if hasattr(os, "fork"):
                self._counts = memoryview(mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED)).cast("Q")
            self._lock = threading.Lock()
            self._stop = threading.Event()
            # The thread holds the progress weakly: one never closed (a pack
            # that failed) ends its thread once it is dropped, or at exit
            # (not stopped in the middle of a write to the stream, which
            # would abort the interpreter's shutdown).
            self._thread = threading.Thread(target=_redraw, args=(weakref.ref(self), self._stop),
                                            name="rumpfs-progress", daemon=True)
            self._thread.start()
            self._halt = _Halt(self._stop, self._thread)
            atexit.register(self._halt)

    @property
    def done(self) -> int:
        """Bytes done so far: this process's and its reporting children's."""
        counts = self._counts
        return self._own if counts is None else self._own + sum(counts[:self._slots_given])

    @done.setter
    def done(self, value: int) -> None:
        self._own += value - self.done

    def advance(self, n: int) -> None:
        self._own += n
        if self.enabled and self._clock() - self._last >= self._interval:
            self._draw(False)

    def worker_counter(self):
        """A counter for one child process to report its bytes with
        ``add(n)``, or None (progress disabled, or every slot given out).

        Any code that forks workers (the copy workers of :class:`Copier`, a
        directory walker that copies files) does the same: call this in the
        parent *before* forking the child, once per child, and call ``add``
        in the child only.  Each counter is a slot of its own in memory
        shared with the children, written by that one child (so no lock:
        one aligned 8-byte store) and read by the parent for :attr:`done`;
        what a child added stays counted after it ends (slots are not
        reused).  On None the child reports nothing, and the parent must
        count that child's bytes itself (e.g. advance when it reaps it).
        """
        counts = self._counts
        if counts is None or self._slots_given >= len(counts):
            return None
        self._slots_given += 1
        return _SlotCounter(counts, self._slots_given - 1)

    def _draw(self, wait: bool) -> None:
        """Draw the line if it is due and says something new (this thread
        or the redraw thread, never both at once)."""
        if not self._lock.acquire(wait):
            return
        try:
            now = self._clock()
            if now - self._last < self._interval:
                return
            self._last = now
            line = self.status(now)
            if line == self._line:
                return
            if self.terminal:
                # Blanks over what a longer line before left.
                self.stream.write(f"\r{line}{' ' * (len(self._line) - len(line))}")
            else:
                self.stream.write(line + "\n")
            self._line = line
            self.stream.flush()
        finally:
            self._lock.release()

    def status(self, now: float) -> str:
        """The progress as one line (no \\r or newline): bytes done, and the
        total's share, the rate and the time left as far as they are known."""
        done = self.done
        line = f"{self.label}: {done / MiB:.0f} MiB"
        total = self.total
        if total is not None:
            line += f" of {total / MiB:.0f} MiB ({min(100.0, 100.0 * done / total):.0f}%)"
        elapsed = now - self._start
        if elapsed > 0 and done:
            rate = done / elapsed
            line += f", {rate / MiB:.1f} MiB/s"
            if total is not None and total > done:
                line += f", {_duration((total - done) / rate)} left"
        return line

    def close(self, finished: bool = True) -> None:
        """Stop drawing.  A finished job's line ends with its total; an
        unfinished one's just ends, so that what follows (an error) starts a
        line of its own."""
        if self._stop is not None:
            import atexit
            self._halt()
            atexit.unregister(self._halt)
            self._stop = None
        if not self.enabled:
            return
        if finished and (self._line or self.done):
            line = f"{self.label}: {self.done / MiB:.0f} MiB, done"
            if self.terminal:
                line = f"\r{line}{' ' * (len(self._line) - len(line))}"
            self.stream.write(line + "\n")
            self.stream.flush()
        elif not finished and self._line and self.terminal:
            self.stream.write("\n")  # the error that follows gets a line of its own
            self.stream.flush()
        self._line = ""


def _duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _SlotCounter:
    """A forked child's slot in a :class:`Progress`: ``add(n)`` after n bytes."""

    __slots__ = ("_counts", "_slot")

    def __init__(self, counts: memoryview, slot: int):
        self._counts = counts
        self._slot = slot

    def add(self, n: int) -> None:
        # One aligned 8-byte store into memory the parent reads: never torn.
        self._counts[self._slot] += n

    advance = add  # as Progress.advance: StretchWriter reports through either


class _Halt:
    """Stops a redraw thread (at close, or at exit for a progress never closed)."""

    def __init__(self, stop, thread):
        self.stop, self.thread = stop, thread
        self.pid = os.getpid()

    def __call__(self) -> None:
        if os.getpid() == self.pid:  # not in a forked child that exits normally
            self.stop.set()
            self.thread.join()


def _redraw(ref, stop) -> None:
    """The redraw thread of a :class:`Progress` (``ref``, a weak reference)."""
    while not stop.wait(REDRAW_SECONDS / 2):
        progress = ref()
        if progress is None:
            return
        progress._draw(True)
        del progress
