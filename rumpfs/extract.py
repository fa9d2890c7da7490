"""Extracting an image's tree into a host directory, never outside it.

Whatever the image says, nothing is created, changed or followed outside the
target directory:

- every path is walked one component at a time from a descriptor of the
  target (``openat`` with ``O_NOFOLLOW | O_DIRECTORY``), never as a joined
  string, so a symlink in the way, whether an earlier entry made it or it
  was already there, stops the entry instead of being followed;
- names with a ``..`` component or a NUL byte are refused; a leading ``/``
  is dropped (the readers already do, as bsdtar and GNU cpio do);
- files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` after whatever
  had the name is removed (bsdtar's overwrite), so data never lands through
  a symlink; a directory in the way is removed only when empty;
- a hard link is made only to an entry this run created, checked by device
  and inode right before ``linkat``.

Refused entries are skipped with one warning each and extraction goes on;
at the end an error says how many were not extracted (bsdtar's "Error exit
delayed from previous errors").  A full, read-only or forbidden target
stops at once with one line naming the host path.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable, Iterable

from . import formats
from .errors import RumpfsError
from .imagepath import Selection, components

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Mode of directories while they are filled (their own mode comes at the
#: end, so a read-only directory can still receive its entries).
_WORK_DIR_MODE = 0o700
#: Mode of parents an archive holds no entry for (bsdtar, GNU cpio: 0755
#: less the umask).
_IMPLIED_DIR_MODE = 0o755
#: Granularity of hole detection: zero blocks of this size are not written.
_HOLE_BLOCK = 4096
_ZEROS = bytes(_HOLE_BLOCK)
#: A target that cannot take anything more: no point going on entry by entry.
_FATAL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}
_SETID = stat.S_ISUID | stat.S_ISGID


class _Skip(Exception):
    """This entry is not extracted, for the reason given."""


def _name(path: bytes) -> str:
    """An entry's name for a message: undecodable bytes and control
    characters (a NUL, a newline) escaped, so the message stays one line."""
    text = path.decode("utf-8", "backslashreplace") or "."
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _warn(message: str) -> None:
    print(f"rumpfs: warning: {message}", file=sys.stderr)


class _Extractor:
    def __init__(self, reader: formats.ImageReader, directory: str, warn: Callable[[str], None]):
        self.reader = reader
        self.directory = directory
        self.warn = warn
        self.as_root = os.geteuid() == 0
        #: (device, inode) of every non-directory this run made, by entry path.
        self.made: dict[bytes, tuple[int, int]] = {}
        #: Entry paths refused: their hard links are refused too.
        self.refused: set[bytes] = set()
        #: First name of a hard-link group -> the name extracted in its place.
        self.stand_in: dict[bytes, bytes] = {}
        self.dirs: list[tuple[list[bytes], formats.Entry]] = []
        self.not_extracted = 0
        self.cannot_create = 0  # devices as a user, sockets
        self._cached: tuple[tuple[bytes, ...], int] | None = None
        #: The image root's owner, mode and time go to the target only when
        #: this run made it: an existing directory (say ".") is left alone.
        self.made_root = not os.path.isdir(directory)
        try:
            os.makedirs(directory, exist_ok=True)
            self.root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileExistsError:
            raise RumpfsError(f"{directory}: not a directory") from None
        except OSError as e:
            raise RumpfsError(f"{directory}: cannot extract into it: {e.strerror}") from None

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root)

    # --- walking ----------------------------------------------------------

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _walk(self, parts: list[bytes], create: bool) -> int:
        """A descriptor of the directory ``parts`` under the target, opened
        one component at a time without following symlinks; missing ones
        are created when ``create``.  The caller must not close it."""
        key = tuple(parts)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        fd = os.dup(self.root)
        try:
            for i, name in enumerate(parts):
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, _IMPLIED_DIR_MODE, dir_fd=fd)
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = _name(b"/".join(parts[:i + 1]))
                    if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise _Skip(f"cannot extract through symlink {where}") from None
                    raise _Skip(f"{where} is not a directory") from None
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        self._drop_cache()
        self._cached = (key, fd)
        return fd

    def _clear(self, fd: int, name: bytes, path: bytes, keep_dir: bool) -> bool:
        """Remove what has ``name`` in ``fd`` (never following it); True when
        it is a directory kept for a directory entry."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise _Skip("cannot replace a directory that is not empty") from None
                raise
        else:
            os.unlink(name, dir_fd=fd)
        # The cached directory is ``fd`` itself, which stays valid.
        self.made.pop(path, None)
        return False

    # --- entries ----------------------------------------------------------

    def run(self, selection: Selection) -> None:
        for e in self.reader.entries():
            if not selection.matches(e.path):
                continue
            try:
                self._entry(e)
            except _Skip as why:
                self.refused.add(e.path)
                self.not_extracted += 1
                self.warn(f"{_name(e.path)}: {why}; not extracted")
            except OSError as err:
                if err.errno in _FATAL:
                    where = _name(os.path.join(os.fsencode(self.directory), e.path))
                    raise RumpfsError(f"{where}: {err.strerror}") from None
                self.refused.add(e.path)
                self.not_extracted += 1
                self.warn(f"{_name(e.path)}: {err.strerror}; not extracted")
        self._finish_dirs()

    def _entry(self, e: formats.Entry) -> None:
        if b"\0" in e.path:
            raise _Skip("name contains a NUL byte")
        parts = components(e.path)
        if b".." in parts:
            raise _Skip("path contains '..'")
        kind = e.kind
        if not parts:
            if kind != stat.S_IFDIR:
                raise _Skip("the root of the image is not a directory")
            if self.made_root:
                self.dirs.append((parts, e))
            return
        *parent, leaf = parts
        if kind == stat.S_IFDIR:
            pfd = self._walk(parent, create=True)
            if not self._clear(pfd, leaf, e.path, keep_dir=True):
                os.mkdir(leaf, _WORK_DIR_MODE, dir_fd=pfd)
            self.dirs.append((parts, e))
            return
        if kind not in (stat.S_IFREG, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK):
            if kind == stat.S_IFSOCK:
                self.cannot_create += 1
                return
            raise _Skip(f"unknown file type {kind:#o}")
        if kind in (stat.S_IFCHR, stat.S_IFBLK) and not self.as_root:
            self.cannot_create += 1
            return
        if kind == stat.S_IFLNK:
            if not e.target:
                raise _Skip("empty symlink target")
            if b"\0" in e.target:
                raise _Skip("symlink target contains a NUL byte")
        if e.link_of is not None and e.nlink > 1:
            if self._link(e, parent, leaf):
                return
            # The first name is not there (not selected, or replaced since):
            # this one stands in for it, for the names that follow.
            self.stand_in[e.link_of] = e.path
        pfd = self._walk(parent, create=True)
        self._clear(pfd, leaf, e.path, keep_dir=False)
        if kind == stat.S_IFREG:
            self._file(e, pfd, leaf)
            return
        if kind == stat.S_IFLNK:
            os.symlink(e.target, leaf, dir_fd=pfd)
        elif kind == stat.S_IFIFO:
            os.mkfifo(leaf, 0o600, dir_fd=pfd)
        else:
            os.mknod(leaf, kind | 0o600, e.rdev, dir_fd=pfd)
        if self.as_root:
            os.chown(leaf, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if kind != stat.S_IFLNK:
            # We just made this node (not a symlink) in a directory we hold.
            os.chmod(leaf, self._mode(e), dir_fd=pfd)
        os.utime(leaf, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        self.made[e.path] = (st.st_dev, st.st_ino)

    def _mode(self, e: formats.Entry) -> int:
        mode = stat.S_IMODE(e.mode)
        return mode if self.as_root else mode & ~_SETID

    def _link(self, e: formats.Entry, parent: list[bytes], leaf: bytes) -> bool:
        """Make ``e`` a hard link to its first name; False when that name is
        not there to link to (outside the selection, or since replaced), so
        ``e`` is extracted on its own."""
        if e.link_of in self.refused:
            raise _Skip(f"hard link to {_name(e.link_of)}, which was not extracted")
        source = e.link_of if e.link_of in self.made else self.stand_in.get(e.link_of)
        made = self.made.get(source)
        if made is None:
            return False
        *src_parent, src_leaf = components(source)
        try:
            sfd = os.dup(self._walk(src_parent, create=False))
        except (_Skip, FileNotFoundError):
            return False
        try:
            st = os.stat(src_leaf, dir_fd=sfd, follow_symlinks=False)
            if (st.st_dev, st.st_ino) != made or stat.S_IFMT(st.st_mode) != e.kind:
                return False
            pfd = self._walk(parent, create=True)
            self._clear(pfd, leaf, e.path, keep_dir=False)
            os.link(src_leaf, leaf, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(sfd)
        self.made[e.path] = made
        return True

    def _file(self, e: formats.Entry, pfd: int, leaf: bytes) -> None:
        fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            _write_sparse(fd, self.reader.read(e))
            if self.as_root:
                os.fchown(fd, e.uid, e.gid)  # before fchmod: chown clears set-id bits
            os.fchmod(fd, self._mode(e))
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            os.unlink(leaf, dir_fd=pfd)  # no half-written file stays
            raise
        os.close(fd)
        self.made[e.path] = (st.st_dev, st.st_ino)

    def _finish_dirs(self) -> None:
        """Directories get their mode, owner and time last (deepest first),
        once nothing more is created in them."""
        self._drop_cache()
        for parts, e in reversed(self.dirs):
            try:
                fd = os.dup(self._walk(parts, create=False))
            except (_Skip, FileNotFoundError):
                continue  # replaced by a later entry, which said so
            self._drop_cache()
            try:
                if self.as_root:
                    os.fchown(fd, e.uid, e.gid)
                os.fchmod(fd, self._mode(e))
                os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
            finally:
                os.close(fd)


def _write_sparse(fd: int, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` from offset 0 leaving every all-zero block a hole;
    the file is cut to the length at the end.  Returns the length."""
    pos = written = 0
    for chunk in chunks:
        n = len(chunk)
        if chunk.count(0) == n:
            pos += n
            continue
        view = memoryview(chunk)
        start = run = 0
        while start < n:
            # Blocks aligned on the file offset, so holes fall on whole blocks.
            end = min(n, start + _HOLE_BLOCK - (pos + start) % _HOLE_BLOCK)
            if chunk.count(0, start, end) == end - start:
                if run < start:
                    _pwrite_all(fd, view[run:start], pos + run)
                    written = pos + start
                run = end
            start = end
        if run < n:
            _pwrite_all(fd, view[run:n], pos + run)
            written = pos + n
        pos += n
    if written < pos:  # a trailing hole
        os.ftruncate(fd, pos)
    return pos


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def extract(reader: formats.ImageReader, directory: str, paths: Iterable[bytes | str] = (),
            warn: Callable[[str], None] = _warn) -> None:
    """Recreate the image's tree (or the subtrees at ``paths``) under
    ``directory``, which is created if needed; see the module docstring for
    what is refused.  Owners, devices and set-id bits only as root."""
    selection = Selection(paths)
    selection.check(reader)
    x = _Extractor(reader, directory, warn)
    try:
        x.run(selection)
    finally:
        x.close()
    if x.cannot_create:
        warn(f"{x.cannot_create} device or socket entries not extracted "
             f"(devices need root; sockets cannot be created)")
    if x.not_extracted:
        source = getattr(reader, "source", "the image")
        raise RumpfsError(f"{source}: {x.not_extracted} "
                          f"entr{'y' if x.not_extracted == 1 else 'ies'} not extracted "
                          f"(see the warnings above)")


__all__ = ["extract"]
