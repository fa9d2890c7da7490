"""Archives as layers: a tar or cpio archive is a source like a directory.

``rumpfs pack rootfs.tar.gz app.cpio:/opt/app -o root.o``: every member
becomes a node of the tree; ``ARCHIVE:/dest`` grafts the archive's top at
``/dest`` as ``DIR:/dest`` does.

Nothing is extracted.  A member's data is ``HostSpan(archive, size,
offset)``: the copy workers take it straight from the archive with
``copy_file_range`` from that offset, as they copy host files.  A compressed
archive (gzip, xz, zstd, bzip2) is first decompressed once, as a stream, into
a spool file beside the temporary files (removed when the pack is done), and
read from there like an uncompressed one; the sparse members of a tar are
laid out in the spool with their holes.  Memory is the tree's (one node per
member), whatever the size of the archive.

Tar headers (ustar, GNU and POSIX pax: long names and link names, pax
times, base-256 numbers) are unpacked here with one ``struct`` format
derived from the declaration in rumpfs.tar_layout, from large reads of the
uncompressed file, and a member's directory is found by its path in a dict.
A directory is listed by two walker processes; a tar is one stream, so on a
machine with a second core a child process reads the headers after the
first few thousand and sends the members to this one in batches while this
one builds the tree: the two halves of the work overlap, and a tar packs
about as fast as the same tree given as a directory (docs/inputs.md has
the figures).  The rare members
this does not read (GNU and pax sparse files, global pax headers and every
member after one, pax headers that name a charset) are read by the
standard library's ``tarfile`` from their offset, in this process.  cpio
(newc, crc and odc, what GNU cpio writes) is parsed here.

Bad input is one line naming the archive and the member: ``..`` in a name,
a hard link to no earlier member, a relative symlink that climbs out of the
archive's top.  A leading ``/`` is stripped with one warning, as GNU tar does.
Owners are the archive's numeric uid and gid (a tar made with ``fakeroot``
or ``--owner`` says who owns what on purpose).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import marshal
import os
import signal
import stat
import string
import struct
import sys
import tarfile
import tempfile
import weakref
import zlib
from itertools import accumulate, islice, zip_longest
from zlib import adler32

from . import tar_layout
from .errors import RumpfsError
from .output import usable_cores
from .sources import Layer, Policy, warn
from .tree import (
    BLK,
    CHR,
    DIR,
    FIFO,
    ID_MAX,
    LNK,
    NAME_MAX,
    PATH_MAX,
    REG,
    HostSpan,
    Node,
    Tree,
    TreeError,
    display,
    join,
    make_rdev,
    split_path,
)

#: Leading bytes of compressed archives, and the stream that reads them.
COMPRESSED_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
)
#: cpio header magics (ASCII): SVR4 newc, newc with checksum (crc), POSIX odc.
NEWC_MAGIC = b"070701"
CRC_MAGIC = b"070702"
ODC_MAGIC = b"070707"
CPIO_TRAILER = b"TRAILER!!!"
#: newc/crc header: magic, then 13 fields of 8 hex digits.
NEWC_HEADER_SIZE = 6 + 13 * 8
NEWC_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
               "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check")
NEWC_ALIGN = 4
#: odc header: magic, then octal fields of these widths.
ODC_FIELDS = (("dev", 6), ("ino", 6), ("mode", 6), ("uid", 6), ("gid", 6), ("nlink", 6),
              ("rdev", 6), ("mtime", 11), ("namesize", 6), ("filesize", 11))
ODC_HEADER_SIZE = 6 + sum(width for _, width in ODC_FIELDS)
#: Where "ustar" stands in a POSIX tar header.
USTAR_MAGIC_OFFSET = 257
TAR_BLOCK = BLOCK = tar_layout.BLOCK
#: The header fields every member needs ...
_USED_FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "typeflag")
#: ... unpacked with one struct: rumpfs.tar_layout's format, the others
#: skipped as padding; and where they are.
_HEADER = struct.Struct(" ".join(
    item if name in _USED_FIELDS else item.replace("s", "x")
    for name, item in zip_longest(tar_layout.FIELDS, tar_layout.FORMAT.split())))
_UNPACKED = [name for name in tar_layout.FIELDS if name in _USED_FIELDS]
NAME, MODE, UID, GID, SIZE, MTIME, CHKSUM, TYPEFLAG = map(_UNPACKED.index, _USED_FIELDS)
#: What a cpio header's numbers are written with (newc, odc).
_HEX_DIGITS = string.hexdigits.encode()
_OCTAL_DIGITS = string.octdigits.encode()
#: Largest pax or GNU extended header read (names and records, read whole).
EXTENSION_MAX = 1 << 20
#: Where each field of the header is (start, end): those some members need
#: (link names, devices, a ustar name's prefix) are sliced from the block.
_FIELD_ENDS = list(accumulate(map(struct.calcsize, tar_layout.FORMAT.split()), initial=0))
_FIELD_AT = dict(zip(tar_layout.FIELDS, zip(_FIELD_ENDS, _FIELD_ENDS[1:])))
LINKNAME_AT, PREFIX_AT, DEVMAJOR_AT, DEVMINOR_AT = map(
    _FIELD_AT.get, ("linkname", "prefix", "devmajor", "devminor"))
#: The checksum: a header block of ASCII bytes, and half of any block, sum
#: to less than Adler-32's modulus, so the low 16 bits of their Adler-32
#: are 1 + their byte sum.
HALF_BLOCK = BLOCK // 2
ADLER_A = 0xFFFF
ADLER_MOD = 65521
assert BLOCK * 0x7F + 1 < ADLER_MOD and HALF_BLOCK * 0xFF + 1 < ADLER_MOD
CHKSUM_SPACES = tar_layout.CHKSUM_SPACES
AREGTYPE, DIRTYPE, LNKTYPE = tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE
GNU_LONGNAME, GNU_LONGLINK = tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK
#: Headers that say more about the member after them: pax (and Solaris)
#: extended headers, GNU long names and long link names.
PAX_TYPES = frozenset((tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE))
EXTENSION_TYPES = frozenset((*PAX_TYPES, GNU_LONGNAME, GNU_LONGLINK))
#: Members tarfile reads for us: GNU sparse files and global pax headers
#: (which change every member after them); and pax headers with these keys.
SLOW_TYPES = frozenset((tarfile.GNUTYPE_SPARSE, tarfile.XGLTYPE))
HDRCHARSET = b"hdrcharset"
GNU_SPARSE = b"GNU.sparse"
#: (Sets of type flags are frozensets: a member is tested against several,
#: and a set lookup costs a quarter of a search through a tuple.)
#: Members whose size field does not count data blocks after the header.
NO_DATA_TYPES = frozenset((LNKTYPE, tarfile.SYMTYPE, DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
                           tarfile.BLKTYPE))
DEVICE_TYPES = frozenset((tarfile.CHRTYPE, tarfile.BLKTYPE))
#: Members whose header names a link target.
LINK_TYPES = frozenset((LNKTYPE, tarfile.SYMTYPE))
PERMISSION_BITS = 0o7777
#: Bytes read or decompressed at a time.
CHUNK = 1 << 20
#: Read to the end of the archive (see ArchiveReader.readable).
UNTIL_THE_END = sys.maxsize
#: Bytes of a tar read at a time for its headers (member data is read
#: along: a read per member would cost more).  Parsing small100k's headers
#: took 0.43 s with 4 KiB reads, 0.37 s with 64 KiB, 0.36 s with 256 KiB;
#: stdlib's (larger files, whose data is read along) 12, 13 and 17 ms ...
READ_SIZE = 1 << 16
#: ... and after a member of more than READ_SIZE bytes, whose data is not
#: wanted: the next header and a few small members.
SHORT_READ = 1 << 12
#: Members laid out in the spool (sparse ones) start on this boundary, so
#: that their holes are holes of the spool file too.
SPOOL_ALIGN = 1 << 16

#: A normal member name starts with neither (see ArchiveReader.name).
NOT_FIRST = (b"/", b".", b"")
#: The origin of directories an archive implies without listing them.
IMPLIED = "(a directory the archive implies)"
#: OCI layer whiteouts: ``.wh.NAME`` deletes NAME from the layers below;
#: ``.wh..wh..opq`` in a directory hides everything the layers below put there.
WHITEOUT_PREFIX = b".wh."
OPAQUE_WHITEOUT = b".wh..wh..opq"

TAR_KINDS = {
    tarfile.REGTYPE: REG, tarfile.AREGTYPE: REG, tarfile.CONTTYPE: REG,
    tarfile.GNUTYPE_SPARSE: REG, tarfile.DIRTYPE: DIR, tarfile.SYMTYPE: LNK,
    tarfile.CHRTYPE: CHR, tarfile.BLKTYPE: BLK, tarfile.FIFOTYPE: FIFO,
}
#: The kinds ArchiveReader.tar_members places itself (the others go
#: through tar_member: devices, hard links, what is not supported).
FAST_KINDS = {flag: kind for flag, kind in TAR_KINDS.items() if kind in (REG, DIR, LNK, FIFO)}


class Spool:
    """A temporary file that holds what cannot be read in place (a
    decompressed archive, sparse members with their holes); removed when its
    layer is closed (the pack returned or failed), at the latest at exit.
    It has a name because the copy workers open their sources by name."""

    def __init__(self, label: str):
        fd, name = tempfile.mkstemp(prefix="rumpfs-", suffix=".spool")
        self.fd = fd
        self.path = os.fsencode(name)
        self.size = 0
        self.label = label
        self._cleanup = weakref.finalize(self, _remove, fd, name)

    def remove(self) -> None:
        """Close and delete the file now (the copies are done)."""
        self._cleanup()

    def reserve(self, size: int) -> int:
        """An aligned offset for ``size`` bytes at the end of the spool."""
        start = -(-self.size // SPOOL_ALIGN) * SPOOL_ALIGN
        self.size = start + size
        os.ftruncate(self.fd, self.size)
        return start


def _remove(fd: int, name: str) -> None:
    os.close(fd)
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


class ArchiveLayer(Layer):
    """A tar or cpio archive of the build host, laid over the image at ``dest``."""

    FIELDS = ("path", "dest")

    def __init__(self, path: str, dest: bytes = b""):
        self.path = path
        self.dest = dest
        #: Files read (the archive), for depfiles.
        self.inputs = [path]
        #: The spool the tree's data may live in: kept while the layer is.
        self.spool: Spool | None = None

    def describe(self) -> str:
        return f"archive {self.path}" + (f" -> {display(self.dest)}" if self.dest.strip(b"/") else "")

    def apply(self, tree: Tree, policy: Policy | None = None) -> None:
        try:
            st = os.stat(self.path)
            f = open(self.path, "rb")
        except OSError as e:
            raise RumpfsError(f"{self.path}: cannot read archive: {e.strerror}") from None
        with f:
            reader = ArchiveReader(self.path, f, st)
            try:
                layer_tree = reader.read()
            finally:
                self.spool = reader.spool  # removed by close(), also after an error
        graft(tree, self.dest, layer_tree.root, self.path)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.remove()


def graft(tree: Tree, dest: bytes, root: Node, label: str) -> None:
    """Lay an archive's tree over ``tree`` at ``dest``."""
    try:
        parts = split_path(dest)
        existing = tree.lookup(b"/".join(parts))
        if existing is not None and not existing.is_dir:
            raise RumpfsError(f"{label}: graft target {display(dest)} "
                              f"is not a directory in the image (from {existing.describe_origin()})")
        if existing is None:
            tree.mkdirs(b"/".join(parts[:-1]))
            tree.put(b"/".join(parts), root)
        else:
            overlay(existing, root)
    except TreeError as e:
        raise RumpfsError(f"{label}: {e}") from None


def overlay(into: Node, other: Node) -> None:
    """Lay directory ``other`` over ``into``: entries of ``other`` win and
    directories merge, as rumpfs.tree.merge_dir; a directory the archive
    only implied keeps the metadata the layers below gave it."""
    if other.origin is not IMPLIED:
        into.copy_meta_from(other)
    children = into.children
    for name, child in other.children.items():
        old = children.get(name)
        if old is not None and old.is_dir and child.is_dir and old is not child:
            overlay(old, child)
        else:
            children[name] = child


class ArchiveReader:
    """Reads one archive into a tree of its own (its top is the root).

    The archive is ``length`` bytes from ``start`` of the file (a layer
    inside a ``docker save`` tar); None: to the end.  With ``whiteouts``
    (OCI layers), ``.wh.NAME`` members are collected in ``self.whiteouts``
    and ``.wh..wh..opq`` in ``self.opaque`` instead of being placed."""

    def __init__(self, path: str, f, st: os.stat_result, start: int = 0,
                 length: int | None = None, whiteouts: bool = False, label: str | None = None):
        self.path = label or path
        self.file_path = path
        self.f = f
        self.st = st
        self.start = start
        self.end = st.st_size if length is None else start + length
        self.oci = whiteouts
        self.whiteouts: list[bytes] = []
        self.opaque: list[bytes] = []
        self.spool: Spool | None = None
        #: Reads the members read_tar leaves to tarfile (made when first needed).
        self._tarfile: tarfile.TarFile | None = None
        #: The child decompressing a compressed archive into the spool.
        self.decompressor: Decompressor | None = None
        self.stripped_slash = False
        #: The archive was decompressed into the spool, which is read instead.
        self.spooled_archive = False
        # Directories the archive implies but does not list: 0755, the
        # archive's time, unless a layer below has them (see overlay).
        self.template = Node(DIR | 0o755, 0, 0, st.st_mtime_ns, origin=IMPLIED)
        self.tree = Tree(Node(DIR | 0o755, 0, 0, st.st_mtime_ns, origin=IMPLIED))
        #: Directories of the tree by path (see place).
        self.dirs = {b"": self.tree.root}
        #: One int object per mode the members have (memory).
        self.modes: dict = {}

    def error(self, message: str) -> RumpfsError:
        return RumpfsError(f"{self.path}: {message}")

    def read(self) -> Tree:
        head = os.pread(self.f.fileno(), min(TAR_BLOCK, self.end - self.start), self.start)
        for magic, method in COMPRESSED_MAGICS:
            if head.startswith(magic):
                self.decompress(method)
                head = os.pread(self.f.fileno(), self.readable(TAR_BLOCK), 0)
                break
        #: The file the members' data is copied from.
        self.data_path = self.spool.path if self.spooled_archive else os.fsencode(self.file_path)
        try:
            if head[:6] in (NEWC_MAGIC, CRC_MAGIC, ODC_MAGIC):
                self.readable(UNTIL_THE_END)
                self.read_cpio()
            elif head[USTAR_MAGIC_OFFSET:USTAR_MAGIC_OFFSET + 5] == b"ustar" or _is_v7_tar(head):
                self.read_tar()
            else:
                raise self.error("source is neither a directory nor a tar or cpio archive")
            # The copies read the spool: all of it is there before the tree is used.
            self.readable(UNTIL_THE_END)
        finally:
            if self.decompressor is not None:
                self.decompressor.close()
            if self.spooled_archive:
                self.f.close()
        return self.tree

    def readable(self, upto: int) -> int:
        """How far, up to ``upto``, the archive can be read: where it ends,
        if before.  A compressed archive is decompressed while its headers
        are read: this waits until the decompressor got that far."""
        decompressor = self.decompressor
        if decompressor is not None and upto > decompressor.size and not decompressor.done:
            decompressor.wait_for(upto)
            if decompressor.done:
                self.end = self.spool.size = decompressor.size
        return min(upto, self.end)

    # -- compressed archives ----------------------------------------------------
    def decompress(self, method: str) -> None:
        """Decompress the archive once into a spool and read that instead;
        a child process decompresses while this one goes on (see readable)."""
        spool = self.spool = Spool(self.path)
        stream = _decompressing(method, _Window(self.f, self.start, self.end))
        errors = (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError, *_zstd_errors(method))
        self.spooled_archive = True
        self.f = open(spool.path, "rb")
        self.start, self.end = 0, UNTIL_THE_END
        if hasattr(os, "fork"):
            self.decompressor = Decompressor(stream, errors, spool.fd, self.error, method)
            return
        try:
            with stream:
                offset = _decompress_into(stream, spool.fd, lambda offset: None)
        except errors as e:
            raise self.error(f"corrupt {method} data: {e}") from None
        self.end = spool.size = offset

    def data(self, offset: int, size: int) -> HostSpan:
        """A member's data at ``offset`` of the (decompressed) archive."""
        return HostSpan(self.data_path, size, offset)

    # -- names ---------------------------------------------------------------------
    def name(self, raw: bytes, quiet: bool = False) -> bytes:
        """A member's path relative to the archive's top ('' is the top)."""
        path = raw[2:] if raw.startswith(b"./") else raw
        # Already in normal form (the usual case): no empty, '.' or '..'
        # component, no leading or trailing '/'.
        if (b"/." not in path and b"//" not in path and path[:1] not in NOT_FIRST
                and path[-1:] != b"/"):
            return path
        if raw.startswith(b"/") and not quiet:
            if not self.stripped_slash:
                warn(f"{self.path}: removing leading '/' from member names")
                self.stripped_slash = True
        parts = [p for p in raw.split(b"/") if p and p != b"."]
        if b".." in parts:
            raise self.error(f"member {_show(raw)}: '..' in the name")
        return b"/".join(parts)

    def place(self, path: bytes, node: Node, raw: bytes) -> None:
        """Put ``node`` at ``path`` of the archive's tree; a parent it lacks
        is made from the template.  The directories placed so far are kept
        by path (``self.dirs``): a member under one of them is one dict
        lookup and one insertion.  The archive's top (an empty path) gives
        the root its metadata."""
        if not path:
            if not node.is_dir:
                raise self.error(f"member {_show(raw)}: the archive's top is not a directory")
            self.tree.root.copy_meta_from(node)
            return
        parent_path, _, base = path.rpartition(b"/")
        parent = self.dirs.get(parent_path)
        if parent is not None and len(base) <= NAME_MAX and base not in parent.children:
            parent.children[base] = node
            if node.children is not None:
                self.dirs[path] = node
            return
        try:
            parts = split_path(path)
            old = self.tree.lookup(path)
            if old is not None and old.is_dir and not node.is_dir:
                self.dirs = {b"": self.tree.root}  # a directory is replaced: forget those below
            if parts:
                self.tree.mkdirs(b"/".join(parts[:-1]), self.template)
            self.tree.put(path, node)
        except TreeError as e:
            raise self.error(f"member {_show(raw)}: {e}") from None
        if parts:
            self.dirs[parent_path] = self.tree.lookup(parent_path)
        if node.is_dir:
            self.dirs[path] = self.tree.lookup(path)

    def whiteout(self, path: bytes) -> bool:
        """An OCI whiteout member: recorded for the layers below, not placed."""
        parent, _, base = path.rpartition(b"/")
        if base == OPAQUE_WHITEOUT:
            self.opaque.append(parent)
        elif base.startswith(WHITEOUT_PREFIX):
            self.whiteouts.append(join(parent, base[len(WHITEOUT_PREFIX):]))
        else:
            return False
        return True

    def check_symlink(self, path: bytes, target: bytes, raw: bytes) -> None:
        """A relative target may not climb above the archive's top."""
        if target.startswith(b"/"):
            return  # names a path of the image
        depth = path.count(b"/")  # directories above the link, below the top
        for part in target.split(b"/"):
            if part == b"..":
                depth -= 1
                if depth < 0:
                    raise self.error(f"member {_show(raw)}: symlink to {_show(target)} "
                                     f"points outside the archive")
            elif part and part != b".":
                depth += 1

    def hard_link(self, path: bytes, target_raw: bytes, raw: bytes) -> Node:
        target = self.name(target_raw, quiet=True)
        node = self.tree.lookup(target) if target else None
        if node is None or node.is_dir:
            raise self.error(f"member {_show(raw)}: hard link to {_show(target_raw)}, "
                             f"which is not an earlier file of the archive")
        return node

    # -- tar -----------------------------------------------------------------------
    def read_tar(self) -> None:
        """Every member: its header unpacked by :meth:`tar_headers`, here
        for the first IN_PROCESS_MEMBERS, then in a child process when there
        is a second core to run it on (:meth:`read_tar_forked`), while this
        one builds the tree; the rare members tar_headers leaves to
        ``tarfile`` (GNU and pax sparse files, global pax headers and what
        follows them, pax headers naming a charset) are read here, and the
        rest of the archive after them."""
        headers = self.tar_headers(self.start)
        stop = self.tar_members(islice(headers, IN_PROCESS_MEMBERS))
        if stop is None:
            record = next(headers, None)  # None: the archive ended
            if record is not None:
                stop = self.tar_members((record,))
                if stop is None:
                    stop = (self.read_tar_forked(_next_header(record)) if _parse_in_child()
                            else self.tar_members(headers))
        while stop is not None:  # (offset, rest_slow) of a member tarfile reads
            offset, rest_slow = stop
            offset = self.tar_member_slow(offset)
            if offset is None:
                return
            stop = (offset, True) if rest_slow else self.tar_members(self.tar_headers(offset))

    def tar_members(self, records) -> tuple | None:
        """Place the members :meth:`tar_headers` gives; where it stopped at
        a member ``tarfile`` is to read, its (offset, rest_slow).

        The common member (a file, directory, symlink or fifo with a name in
        normal form, under a directory already placed, not an OCI layer's)
        is placed in this loop, as tar_member and place would place it:
        this runs once per member, and calls cost more than the work."""
        member = self.tar_member
        if self.oci:
            for record in records:
                if record[0] is None:
                    return record[1:]
                member(*record)
            return None
        dirs = self.dirs
        origin = self.path
        data_path = self.data_path
        kinds = FAST_KINDS
        modes = self.modes
        for record in records:
            if record[0] is None:
                return record[1:]
            raw, typeflag, mode, uid, gid, mtime_ns, size, data_at, linkname, _, truncated = record
            path = raw[2:] if raw[:2] == b"./" else raw
            kind = kinds.get(typeflag)
            if (kind is None or truncated or b"/." in path or b"//" in path
                    or path[:1] in NOT_FIRST or path[-1:] == b"/"
                    or not (0 <= uid <= ID_MAX and 0 <= gid <= ID_MAX)):
                member(*record)
                dirs = self.dirs  # place() may have started it again
                continue
            parent_path, _, base = path.rpartition(b"/")
            parent = dirs.get(parent_path)
            if parent is None or len(base) > NAME_MAX or base in parent.children:
                member(*record)
                dirs = self.dirs
                continue
            mode = kind | (mode & PERMISSION_BITS)
            node = Node(modes.setdefault(mode, mode), uid, gid, mtime_ns, origin=origin)
            if kind == REG:
                node.data = HostSpan(data_path, size, data_at)
            elif kind == LNK:
                self.check_symlink(path, linkname, raw)
                node.target = linkname
            parent.children[base] = node
            if kind == DIR:
                dirs[path] = node
        return None

    def read_tar_forked(self, offset: int) -> tuple | None:
        """:meth:`tar_members` of :meth:`tar_headers` from the header at
        ``offset``, the headers read by
        a child process: it sends the members in batches (``marshal``, each
        after its length) on a pipe, then a last record, while this process
        builds the tree from what it received.  The members and the errors
        come in the archive's order, so the tree and the first error are
        those the reading in one process gives.  The child also reads the
        decompressing child's reports (see readable): its last record hands
        over how far the archive is known to go."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(r)
            os._exit(self._send_headers(w, offset))
        os.close(w)
        try:
            with open(r, "rb", buffering=PIPE_READ) as pipe:
                while True:
                    head = pipe.read(_FRAME_LENGTH.size)
                    if len(head) < _FRAME_LENGTH.size:
                        raise self.error("the process reading the archive's headers stopped")
                    records = marshal.loads(pipe.read(_FRAME_LENGTH.unpack(head)[0]))
                    last = self.tar_members(records)
                    if last is not None:
                        return self._headers_read(*last)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)  # it has ended, unless this process failed
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)

    def _send_headers(self, w: int, offset: int) -> int:  # pragma: no cover - runs in the child
        """The child of read_tar_forked: every member's record on ``w``,
        then ``(None, END or SLOW or ERROR, ...)``; its exit status."""
        decompressor = self.decompressor
        if decompressor is not None:
            decompressor.pid = None  # its parent reaps it, and stops it on an error
        batch: list = []
        size = FIRST_BATCH
        code = 0
        try:
            for record in self.tar_headers(offset):
                if record[0] is None:
                    batch.append((None, _HEADERS_SLOW, *record[1:], *self._reach()))
                    break
                batch.append(record)
                if len(batch) >= size:
                    _send_frame(w, batch)
                    batch = []
                    size = min(2 * size, BATCH)
            else:
                batch.append((None, _HEADERS_END, None, False, *self._reach()))
        except RumpfsError as e:
            batch.append((None, _HEADERS_ERROR, str(e)))
            code = 1
        except BaseException as e:  # noqa: B036 - report anything, never unwind
            batch.append((None, _HEADERS_ERROR, f"{self.path}: reading the headers failed: {e!r}"))
            code = 1
        try:
            _send_frame(w, batch)
        except OSError:
            code = 1  # the parent stopped reading: it failed, and says why
        return code

    def _reach(self) -> tuple:
        """How far the archive is known to go (see readable), for the parent."""
        d = self.decompressor
        return (self.end,) if d is None else (self.end, d.size, d.done, d._pending)

    def _headers_read(self, kind: int, *rest) -> tuple | None:
        """The child's last record: an error is raised; else the parent
        takes over how far the archive goes, and where tarfile is to read."""
        if kind == _HEADERS_ERROR:
            raise RumpfsError(rest[0])
        offset, rest_slow, end, *decompressed = rest
        self.end = end
        if decompressed:
            d = self.decompressor
            d.size, d.done, d._pending = decompressed
            if d.done:
                self.spool.size = d.size
        return (offset, rest_slow) if kind == _HEADERS_SLOW else None

    def tar_headers(self, offset: int):
        """The members from ``offset`` on, as the arguments of
        :meth:`tar_member`, their headers unpacked here (one ``struct``
        call, see rumpfs.tar_layout) from large reads of the archive.  At a
        member this does not handle it yields ``(None, offset, rest_slow)``
        and stops: ``tarfile`` reads that member (``rest_slow``: and every
        one after it: a global pax header)."""
        fd = self.f.fileno()
        unpack = _HEADER.unpack_from
        (prefix_at, prefix_end), (linkname_at, linkname_end) = PREFIX_AT, LINKNAME_AT
        buf, base = b"", 0  # bytes of the archive read so far, from offset base
        # Extension headers (pax "x", GNU "L"/"K") met before the member, in
        # order, and where the first one starts.
        extensions: list = []
        ext_start = 0
        member_slow = False  # a pax header tarfile is to read
        # Without a decompressor the archive's end is known: a member's data
        # is checked against it here rather than by a call (see readable).
        known_end = self.end if self.decompressor is None else None
        while True:
            pos = offset - base
            if pos + BLOCK > len(buf):
                # Long reads while the headers follow each other closely; a
                # short one after a large member (its data is not wanted).
                read = READ_SIZE if offset - base - len(buf) < READ_SIZE else SHORT_READ
                want = self.readable(offset + read) - offset
                # Past the end (after a member whose size runs past it) nothing
                # is read: such an offset may be more than pread takes.
                buf, base, pos = os.pread(fd, want, offset) if want > 0 else b"", offset, 0
                if len(buf) < BLOCK:
                    if not buf and not extensions:
                        return  # the archive ends without its end-of-archive blocks
                    raise self.error(f"offset {offset}: truncated tar header")
            if not buf[pos] and buf.count(0, pos, pos + BLOCK) == BLOCK:
                if extensions:
                    raise self.error(f"offset {offset}: the archive ends after an extended header")
                return  # the end-of-archive block
            fields = unpack(buf, pos)
            chksum = fields[CHKSUM]
            block = buf[pos:pos + BLOCK]
            try:
                # The sum of the header's bytes, the checksum's own counted
                # as spaces, exact from Adler-32 (see ADLER_MOD): the whole
                # block's when it is ASCII (names usually are), else each half's.
                if block.isascii():
                    total = (adler32(block) & ADLER_A) - 1
                else:
                    total = ((adler32(block[:HALF_BLOCK]) & ADLER_A)
                             + (adler32(block[HALF_BLOCK:]) & ADLER_A) - 2)
                if total - sum(chksum) + CHKSUM_SPACES != int(chksum.partition(b"\0")[0], 8):
                    self.check_chksum(block, chksum, offset)
                size = int(fields[SIZE].partition(b"\0")[0], 8)
            except ValueError:  # not plain octal: tarfile's readings
                self.check_chksum(block, chksum, offset)
                size = self.number(fields[SIZE], offset)
            if size < 0:  # base 256 holds negative numbers
                raise self.error(f"offset {offset}: tar header with a negative size ({size})")
            typeflag = fields[TYPEFLAG]
            data_at = offset + BLOCK
            if typeflag in EXTENSION_TYPES:
                if size > EXTENSION_MAX:
                    raise self.error(f"offset {offset}: extended header of {size} bytes "
                                     f"(at most {EXTENSION_MAX})")
                if not extensions:
                    ext_start = offset
                data = self.extension_data(data_at, size, buf, base)
                if typeflag in PAX_TYPES:
                    records = _pax_records(data)
                    if any(key == HDRCHARSET or key.startswith(GNU_SPARSE) for key in records):
                        member_slow = True
                    extensions.append((typeflag, records))
                else:
                    extensions.append((typeflag, data.partition(b"\0")[0]))
                offset = data_at + _align(size, BLOCK)
                continue
            if typeflag in SLOW_TYPES or member_slow:
                yield None, ext_start if extensions else offset, typeflag == tarfile.XGLTYPE
                return
            raw = fields[NAME].partition(b"\0")[0]
            if typeflag == AREGTYPE and raw.endswith(b"/"):
                typeflag = DIRTYPE  # an old (v7) tar's directory
            if typeflag == DIRTYPE:
                raw = raw.rstrip(b"/")
            if block[prefix_at]:
                raw = block[prefix_at:prefix_end].partition(b"\0")[0] + b"/" + raw
            linkname = (block[linkname_at:linkname_end].partition(b"\0")[0]
                        if typeflag in LINK_TYPES else b"")
            try:
                mode = int(fields[MODE].partition(b"\0")[0], 8)
                uid = int(fields[UID].partition(b"\0")[0], 8)
                gid = int(fields[GID].partition(b"\0")[0], 8)
                mtime_ns = int(fields[MTIME].partition(b"\0")[0], 8) * 1_000_000_000
            except ValueError:  # base 256, blanks: see number
                mode = self.number(fields[MODE], offset)
                uid = self.number(fields[UID], offset)
                gid = self.number(fields[GID], offset)
                mtime_ns = self.number(fields[MTIME], offset) * 1_000_000_000
            if extensions:
                # Each extension wraps what follows it: the last one met is
                # applied first, the first one has the last word (as tarfile).
                for kind, value in reversed(extensions):
                    if kind == GNU_LONGNAME:
                        raw = value.removesuffix(b"/") if typeflag == DIRTYPE else value
                    elif kind == GNU_LONGLINK:
                        linkname = value
                    else:
                        if b"path" in value:
                            raw = value[b"path"].rstrip(b"/")
                        linkname = value.get(b"linkpath", linkname)
                        uid = _pax_int(value, b"uid", uid)
                        gid = _pax_int(value, b"gid", gid)
                        size = _pax_int(value, b"size", size)
                        if size < 0:
                            raise self.error(f"member {_show(raw)}: pax size {size} is negative")
                        if b"mtime" in value:
                            mtime_ns = _pax_time_text(value[b"mtime"])
                extensions = []
            if typeflag in NO_DATA_TYPES:
                offset = data_at
                truncated = False
            else:
                offset = data_at + -(-size // BLOCK) * BLOCK
                stop = data_at + size
                truncated = stop > known_end if known_end is not None else self.readable(stop) < stop
            devices = None
            if typeflag in DEVICE_TYPES:
                devices = (block[DEVMAJOR_AT[0]:DEVMAJOR_AT[1]], block[DEVMINOR_AT[0]:DEVMINOR_AT[1]])
            yield (raw, typeflag, mode, uid, gid, mtime_ns, size, data_at, linkname, devices,
                   truncated)

    def tar_member_slow(self, offset: int) -> int | None:
        """The member at ``offset`` read by ``tarfile``; the next member's offset."""
        archive = self._tarfile
        self.readable(UNTIL_THE_END)  # tarfile reads on as it needs
        try:
            self.f.seek(offset)
            if archive is None:
                archive = self._tarfile = tarfile.TarFile(
                    fileobj=self.f, mode="r", encoding="utf-8", errors="surrogateescape")
                archive.firstmember = None
                self.f.seek(offset)
            info = tarfile.TarInfo.fromtarfile(archive)
        except tarfile.EOFHeaderError:
            return None
        except tarfile.EmptyHeaderError:
            return None
        except tarfile.TarError as e:
            raise self.error(f"offset {offset}: bad tar header ({e})") from None
        self.tar_info_member(info)
        return archive.offset

    def tar_info_member(self, info: tarfile.TarInfo) -> None:
        """A member as ``tarfile`` read it."""
        raw = os.fsencode(info.name)
        if info.sparse is not None:
            stored = sum(n for _, n in info.sparse)
            if info.offset_data + stored > self.end:
                raise self.error(f"member {_show(raw)}: truncated: its data ends past the "
                                 f"archive's {self.end} bytes")
        end = info.offset_data + info.size
        self.tar_member(raw, info.type, info.mode, info.uid, info.gid, _pax_time(info),
                        info.size, info.offset_data, os.fsencode(info.linkname), None,
                        self.readable(end) < end, info)

    def check_chksum(self, block: bytes, field: bytes, offset: int) -> None:
        """The exact check read_tar falls back on when the quick one fails:
        the field read as tarfile reads it (blanks, base 256), and the sum
        of signed bytes accepted too (some old tars)."""
        stored = _nti(field, self, offset)
        if stored not in tarfile.calc_chksums(block):
            raise self.error(f"offset {offset}: bad tar header (checksum mismatch)")

    def number(self, field: bytes, offset: int) -> int:
        """A numeric field: octal digits up to a NUL or space; else base 256 (GNU)."""
        try:
            return int(field.partition(b"\0")[0], 8)
        except ValueError:
            return _nti(field, self, offset)

    def extension_data(self, at: int, size: int, buf: bytes, base: int) -> bytes:
        """The data of an extended header (a pax record list, a GNU long name)."""
        if self.readable(at + size) < at + size:
            raise self.error(f"offset {at - BLOCK}: truncated extended header")
        if at - base + size <= len(buf):
            return buf[at - base:at - base + size]
        return os.pread(self.f.fileno(), size, at)

    def tar_member(self, raw: bytes, typeflag: bytes, mode: int, uid: int, gid: int,
                   mtime_ns: int, size: int, data_at: int, linkname: bytes, devices,
                   truncated: bool, info: tarfile.TarInfo | None = None) -> None:
        """Place one member: its header's fields read (and its extensions
        applied) by tar_headers, or by ``tarfile`` (``info``: a sparse
        member); ``devices``: a device's major and minor fields;
        ``truncated``: its data ends past the archive's end."""
        path = self.name(raw)
        if self.oci and self.whiteout(path):
            return
        if typeflag == LNKTYPE:
            self.place(path, self.hard_link(path, linkname, raw), raw)
            return
        kind = TAR_KINDS.get(typeflag)
        if kind is None:
            raise self.error(f"member {_show(raw)}: tar member type {typeflag!r} is not supported")
        for what, value in (("uid", uid), ("gid", gid)):
            if not 0 <= value <= ID_MAX:
                raise self.error(f"member {_show(raw)}: {what} {value} is outside 0..{ID_MAX}")
        node = Node(kind | (mode & PERMISSION_BITS), uid, gid, mtime_ns, origin=self.path)
        if kind == REG:
            if info is not None and info.sparse is not None:
                node.data = self.sparse_data(info)
            else:
                if truncated:
                    raise self.error(f"member {_show(raw)}: truncated: its data ends past the "
                                     f"archive's {self.end} bytes")
                node.data = self.data(data_at, size)
        elif kind == LNK:
            self.check_symlink(path, linkname, raw)
            node.target = linkname
        elif kind in (CHR, BLK):
            if info is not None:
                major, minor = info.devmajor, info.devminor
            else:
                major = self.number(devices[0], data_at - BLOCK)
                minor = self.number(devices[1], data_at - BLOCK)
            try:
                node.rdev = make_rdev(major, minor)
            except ValueError as e:
                raise self.error(f"member {_show(raw)}: {e}") from None
        self.place(path, node, raw)

    def sparse_data(self, info: tarfile.TarInfo) -> HostSpan:
        """A sparse member laid out with its holes in the spool."""
        if self.spool is None:
            self.spool = Spool(self.path)
        spool = self.spool
        base = spool.reserve(info.size)
        src = info.offset_data
        for offset, length in info.sparse:
            if offset + length > info.size:
                raise self.error(f"member {info.name}: sparse map runs past its size {info.size}")
            left, dst = length, base + offset
            while left:
                chunk = os.pread(self.f.fileno(), min(left, CHUNK), src)
                if not chunk:
                    raise self.error(f"member {info.name}: truncated sparse data")
                os.pwrite(spool.fd, chunk, dst)
                src += len(chunk)
                dst += len(chunk)
                left -= len(chunk)
        return HostSpan(spool.path, info.size, base, sparse_hint=True)

    # -- cpio ----------------------------------------------------------------------
    def read_cpio(self) -> None:
        fd = self.f.fileno()
        size = self.end
        offset = self.start
        links: dict[tuple, Node] = {}
        while True:
            magic = os.pread(fd, 6, offset)
            if magic in (NEWC_MAGIC, CRC_MAGIC):
                fields, head, align = self.newc_header(fd, offset), NEWC_HEADER_SIZE, NEWC_ALIGN
                dev = (fields["devmajor"], fields["devminor"])
                rdev = (fields["rdevmajor"], fields["rdevminor"])
            elif magic == ODC_MAGIC:
                fields, head, align = self.odc_header(fd, offset), ODC_HEADER_SIZE, 1
                dev = fields["dev"]
                rdev = fields["rdev"]
            else:
                raise self.error(f"offset {offset}: no cpio header (the archive ends "
                                 f"without {CPIO_TRAILER.decode()})")
            name_at = offset + head
            if not 0 < fields["namesize"] <= PATH_MAX:
                raise self.error(f"offset {offset}: cpio name of {fields['namesize']} bytes "
                                 f"(1 to {PATH_MAX})")
            raw = os.pread(fd, fields["namesize"], name_at)
            if len(raw) != fields["namesize"] or not raw.endswith(b"\0"):
                raise self.error(f"offset {offset}: cpio member name runs past the archive's end")
            raw = raw[:-1]
            data_at = _align(name_at + fields["namesize"], align)
            filesize = fields["filesize"]
            if data_at + filesize > size:
                raise self.error(f"member {_show(raw)}: truncated: its data ends past the "
                                 f"archive's {size} bytes")
            offset = _align(data_at + filesize, align)
            if raw == CPIO_TRAILER:
                return
            self.cpio_member(fd, raw, fields, dev, rdev, data_at, links)

    def newc_header(self, fd: int, offset: int) -> dict:
        head = os.pread(fd, NEWC_HEADER_SIZE, offset)
        if len(head) != NEWC_HEADER_SIZE:
            raise self.error(f"offset {offset}: truncated cpio header")
        # Digits only: int() would also take a sign, a 0x and blanks.
        if head[6:].translate(None, _HEX_DIGITS):
            raise self.error(f"offset {offset}: bad cpio header (a field is not hexadecimal)")
        return {name: int(head[6 + 8 * k:14 + 8 * k], 16) for k, name in enumerate(NEWC_FIELDS)}

    def odc_header(self, fd: int, offset: int) -> dict:
        head = os.pread(fd, ODC_HEADER_SIZE, offset)
        if len(head) != ODC_HEADER_SIZE:
            raise self.error(f"offset {offset}: truncated cpio header")
        if head[6:].translate(None, _OCTAL_DIGITS):
            raise self.error(f"offset {offset}: bad cpio header (a field is not octal)")
        fields, pos = {}, 6
        for name, width in ODC_FIELDS:
            fields[name] = int(head[pos:pos + width], 8)
            pos += width
        return fields

    def cpio_member(self, fd: int, raw: bytes, fields: dict, dev, rdev, data_at: int,
                    links: dict) -> None:
        path = self.name(raw)
        mode = fields["mode"]
        kind = stat.S_IFMT(mode)
        filesize = fields["filesize"]
        if kind not in (REG, DIR, LNK, CHR, BLK, FIFO, stat.S_IFSOCK):
            raise self.error(f"member {_show(raw)}: unknown file type in mode {mode:o}")
        key = (dev, fields["ino"])
        if kind == REG and fields["nlink"] > 1 and key in links:
            # Another name of a file already read (newc: the data is on one of them).
            node = links[key]
            if filesize:
                node.data = self.data(data_at, filesize)
            self.place(path, node, raw)
            return
        node = Node(mode, fields["uid"], fields["gid"], fields["mtime"] * 1_000_000_000,
                    origin=self.path)
        if kind == REG:
            node.data = self.data(data_at, filesize)
            if fields["nlink"] > 1:
                links[key] = node
        elif kind == LNK:
            if filesize > PATH_MAX:
                raise self.error(f"member {_show(raw)}: symlink target of {filesize} bytes "
                                 f"(at most {PATH_MAX})")
            target = os.pread(fd, filesize, data_at)
            self.check_symlink(path, target, raw)
            node.target = target
        elif kind in (CHR, BLK):
            # newc: (major, minor); odc: the number as it is.
            try:
                node.rdev = make_rdev(*rdev) if isinstance(rdev, tuple) else rdev
            except ValueError as e:
                raise self.error(f"member {_show(raw)}: {e}") from None
        self.place(path, node, raw)


class Decompressor:
    """A child process that decompresses ``stream`` into the file ``fd``
    while this process reads the headers from what is there: it reports
    each megabyte it wrote on a pipe, and at the end its size or its error.
    (A thread would wait for the interpreter lock between the small reads
    of the gzip module; a process decompresses on the other core.)"""

    def __init__(self, stream, errors: tuple, fd: int, error, method: str):
        self.size = 0
        self.done = False
        self.error = error
        self.method = method
        self._pending = b""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(r)
            code = 0
            try:
                with stream:
                    size = _decompress_into(stream, fd,
                                            lambda n: _write_all(w, _RECORD.pack(_PROGRESS, n)))
                _write_all(w, _RECORD.pack(_DONE, size))
            except errors as e:
                _write_all(w, _ERROR + str(e).encode("utf-8", "backslashreplace"))
                code = 1
            except BaseException as e:  # noqa: B036 - report anything, never unwind
                _write_all(w, _ERROR + repr(e).encode("utf-8", "backslashreplace"))
                code = 1
            os._exit(code)
        os.close(w)
        self.pid, self.pipe = pid, r

    def wait_for(self, size: int) -> None:
        """Until the child wrote ``size`` bytes or ended; its error is raised."""
        record = _RECORD.size
        while self.size < size and not self.done:
            chunk = os.read(self.pipe, 1 << 16)
            pending = self._pending + chunk
            pos = 0
            while len(pending) - pos >= record and pending[pos:pos + 1] != _ERROR:
                kind, self.size = _RECORD.unpack_from(pending, pos)
                self.done = kind == _DONE
                pos += record
            pending = pending[pos:]
            if not self.done and (pending.startswith(_ERROR) or not chunk):
                while chunk:
                    chunk = os.read(self.pipe, 1 << 16)
                    pending += chunk
                self.close()
                message = (pending[len(_ERROR):].decode() if pending.startswith(_ERROR)
                           else "the decompressing process stopped")
                raise self.error(f"corrupt {self.method} data: {message}")
            self._pending = pending
        if self.done:
            self.close()

    def close(self) -> None:
        """Reap the child (stopped first if it is still at work)."""
        if self.pid is None:
            return
        if not self.done:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.waitpid(self.pid, 0)
        os.close(self.pipe)
        self.pid = None


#: The decompressing child's records: a kind (_PROGRESS, _DONE) and the
#: size written so far; or _ERROR and the error's text, up to the end.
_RECORD = struct.Struct("=cQ")
_PROGRESS = b"P"
_DONE = b"D"
_ERROR = b"E"


def _decompress_into(stream, fd: int, report) -> int:
    """Write what ``stream`` gives into ``fd`` from its start; ``report``
    is told the size so far after each chunk.  Returns the size."""
    offset = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return offset
        view = memoryview(chunk)
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
        report(offset)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Window:
    """Bytes ``start`` to ``end`` of a file, for a decompressor that would
    otherwise read on past a layer inside a larger tar."""

    def __init__(self, f, start: int, end: int):
        self.f = f
        self.pos = start
        self.end = end

    def read(self, n: int = -1) -> bytes:
        n = self.end - self.pos if n is None or n < 0 else min(n, self.end - self.pos)
        data = os.pread(self.f.fileno(), n, self.pos) if n > 0 else b""
        self.pos += len(data)
        return data

    def readable(self) -> bool:
        return True


class _GzipMembers:
    """The gzip members of ``f`` one after another, decompressed, as
    ``gzip -d`` and Python's gzip module read them (zero bytes after a
    member are padding; anything else must start another member), with
    zlib reading each member's header and checking its trailer, from
    CHUNK-sized reads.  The gzip module reads 8 KiB at a time and sums
    the CRC in a call of its own: inflating small100k.tar.gz (286 MB) cost
    0.88 s of CPU with it, 0.71 s this way.  A cut archive is the gzip
    module's EOFError."""

    def __init__(self, f):
        self.f = f
        self.member = zlib.decompressobj(GZIP_WBITS)
        self.pending = b""  # compressed bytes the member has not taken yet

    def read(self, size: int) -> bytes:
        while True:
            member = self.member
            if member.eof:
                rest = member.unused_data.lstrip(b"\0")
                while len(rest) < len(GZIP_MAGIC):
                    more = self.f.read(CHUNK)
                    if not more:
                        break
                    rest = (rest + more).lstrip(b"\0")
                if not rest:
                    return b""
                if not rest.startswith(GZIP_MAGIC):
                    raise gzip.BadGzipFile(f"Not a gzipped file ({rest[:len(GZIP_MAGIC)]!r})")
                member = self.member = zlib.decompressobj(GZIP_WBITS)
                self.pending = rest
            data = self.pending or self.f.read(CHUNK)
            out = member.decompress(data, size)  # with no data: what zlib still holds
            self.pending = member.unconsumed_tail
            if out:
                return out
            if not data and not member.eof:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


#: zlib's window bits for a gzip member, header and trailer included.
GZIP_WBITS = 16 + zlib.MAX_WBITS
GZIP_MAGIC = COMPRESSED_MAGICS[0][0]


def _decompressing(method: str, f):
    if method == "gzip":
        return _GzipMembers(f)
    if method == "xz":
        return lzma.LZMAFile(f)
    if method == "bzip2":
        return bz2.BZ2File(f)
    from .compress import _library
    zstandard = _library("zstandard", "zstd")
    return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)


def _zstd_errors(method: str) -> tuple:
    if method != "zstd":
        return ()
    from .compress import _library
    return (_library("zstandard", "zstd").ZstdError,)


def _is_v7_tar(head: bytes) -> bool:
    """An old (v7) tar header: its checksum field matches its bytes."""
    if len(head) < TAR_BLOCK:
        return False
    try:
        tarfile.nti(head[148:156])
    except tarfile.HeaderError:
        return False
    return tarfile.nti(head[148:156]) in tarfile.calc_chksums(head)


def _pax_time(info: tarfile.TarInfo) -> int:
    """The member's mtime in nanoseconds, exactly as a pax header says it."""
    text = info.pax_headers.get("mtime")
    if text:
        return _pax_time_text(text.encode("utf-8", "surrogateescape"))
    return int(info.mtime) * 1_000_000_000


def _pax_time_text(text: bytes) -> int:
    """A pax time ("SECONDS[.FRACTION]") in nanoseconds, exactly; what
    Python reads as a number otherwise (as tarfile does), else 0."""
    whole, _, frac = text.partition(b".")
    try:
        seconds = int(whole)
        ns = int((frac + b"000000000")[:9]) if frac else 0
    except ValueError:
        try:
            return int(float(text) * 1_000_000_000)
        except ValueError:
            return 0
    return seconds * 1_000_000_000 + (-ns if seconds < 0 or whole.startswith(b"-") else ns)


def _pax_int(records: dict, key: bytes, default: int) -> int:
    """A pax record's whole number; 0 when it is not one (as tarfile)."""
    if key not in records:
        return default
    try:
        return int(records[key])
    except ValueError:
        return 0


def _pax_records(data: bytes) -> dict:
    """The records of a pax extended header, ``"%d %s=%s\\n" % (length,
    keyword, value)`` each, as raw bytes; reading stops at the first thing
    that is not a record (the NULs that pad the block)."""
    records = {}
    pos, n = 0, len(data)
    while pos < n:
        space = data.find(b" ", pos)
        equals = data.find(b"=", space + 1)
        if space < 0 or equals <= space + 1 or not data[pos:space].isdigit():
            break
        length = int(data[pos:space])
        if length == 0:
            break
        records[data[space + 1:equals]] = data[equals + 1:pos + length - 1]
        pos += length
    return records


def _nti(field: bytes, reader: "ArchiveReader", offset: int) -> int:
    """tarfile's reading of a numeric field (base 256, blanks), for what
    is not plain octal."""
    try:
        return tarfile.nti(field)
    except tarfile.HeaderError:
        raise reader.error(f"offset {offset}: bad tar header (a number that is "
                           f"neither octal nor base 256)") from None


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


#: The last record of read_tar_forked's child: the archive ended, a member
#: tarfile is to read, or the error that stopped it.
_HEADERS_END, _HEADERS_SLOW, _HEADERS_ERROR = 0, 1, 2
#: Members read in this process before a child takes over the headers (a
#: smaller archive is read without one: it would save less than it costs).
IN_PROCESS_MEMBERS = 4096
#: Members per batch the child sends: a few at first, so that the parent
#: starts at once, then more (fewer calls).
FIRST_BATCH = 64
BATCH = 4096
#: A batch's length before it.
_FRAME_LENGTH = struct.Struct("=Q")
#: The parent's read buffer on the child's pipe.
PIPE_READ = 1 << 20


def _next_header(record: tuple) -> int:
    """Where the header after a member of tar_headers starts (as tar_headers
    finds it: after the data blocks, which some types do not have)."""
    typeflag, size, data_at = record[1], record[6], record[7]
    return data_at if typeflag in NO_DATA_TYPES else data_at + _align(size, BLOCK)


def _send_frame(fd: int, records: list) -> None:
    blob = marshal.dumps(records)
    _write_all(fd, _FRAME_LENGTH.pack(len(blob)) + blob)


def _parse_in_child() -> bool:
    """Whether read_tar reads the headers in a child process: there is a
    second core to run it on (on one, the pipe only adds work)."""
    if not hasattr(os, "fork"):
        return False
    return usable_cores() > 1
