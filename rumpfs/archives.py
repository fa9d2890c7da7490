"""Archives as layers: a tar or cpio archive is a source like a directory.

``rumpfs pack rootfs.tar.gz app.cpio:/opt/app -o root.o``: every member
becomes a node of the tree; ``ARCHIVE:/dest`` grafts the archive's top at
``/dest`` as ``DIR:/dest`` does.

Nothing is extracted.  A member's data is ``HostData(archive, offset,
size)``: the copy workers take it straight from the archive with
``copy_file_range`` from that offset, as they copy host files.  A compressed
archive (gzip, xz, zstd, bzip2) is first decompressed once, as a stream, into
a spool file beside the temporary files (removed when the pack is done), and
read from there like an uncompressed one; the sparse members of a tar are
laid out in the spool with their holes.  Memory is the tree's (one node per
member), whatever the size of the archive.

Tar headers are parsed by the standard library's ``tarfile`` on the
uncompressed file (GNU, ustar and POSIX pax: long names, sparse members,
pax times; it seeks over member data, never reads it).  cpio (newc, crc and
odc, what GNU cpio writes) is parsed here.

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
import os
import stat
import tarfile
import tempfile
import weakref
import zlib

from .errors import RumpfsError
from .sources import Layer, Policy, warn
from .tree import (
    BLK,
    CHR,
    DIR,
    FIFO,
    LNK,
    REG,
    UNCHECKED_SIZE,
    HostData,
    Node,
    Tree,
    TreeError,
    display,
    join,
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
TAR_BLOCK = tarfile.BLOCKSIZE
#: Bytes read or decompressed at a time.
CHUNK = 1 << 20
#: Members laid out in the spool (sparse ones) start on this boundary, so
#: that their holes are holes of the spool file too.
SPOOL_ALIGN = 1 << 16

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


class Spool:
    """A temporary file that holds what cannot be read in place (a
    decompressed archive, sparse members with their holes); removed when its
    layer is (the pack is over), or at exit.  It has a name because the copy
    workers open their sources by name."""

    def __init__(self, label: str):
        fd, name = tempfile.mkstemp(prefix="rumpfs-", suffix=".spool")
        self.fd = fd
        self.path = os.fsencode(name)
        self.size = 0
        self.label = label
        self._cleanup = weakref.finalize(self, _remove, fd, name)

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
            layer_tree = reader.read()
        self.spool = reader.spool
        graft(tree, self.dest, layer_tree.root, self.path)


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
        self.stripped_slash = False
        #: The archive was decompressed into the spool, which is read instead.
        self.spooled_archive = False
        # Directories the archive implies but does not list: 0755, the
        # archive's time, unless a layer below has them (see overlay).
        self.template = Node(DIR | 0o755, 0, 0, st.st_mtime_ns, origin=IMPLIED)
        self.tree = Tree(Node(DIR | 0o755, 0, 0, st.st_mtime_ns, origin=IMPLIED))

    def error(self, message: str) -> RumpfsError:
        return RumpfsError(f"{self.path}: {message}")

    def read(self) -> Tree:
        self.f.seek(self.start)
        head = self.f.read(min(TAR_BLOCK, self.end - self.start))
        for magic, method in COMPRESSED_MAGICS:
            if head.startswith(magic):
                self.decompress(method)
                head = self.f.read(TAR_BLOCK)
                break
        try:
            self.f.seek(self.start)
            if head[:6] in (NEWC_MAGIC, CRC_MAGIC, ODC_MAGIC):
                self.read_cpio()
            elif head[USTAR_MAGIC_OFFSET:USTAR_MAGIC_OFFSET + 5] == b"ustar" or _is_v7_tar(head):
                self.read_tar()
            else:
                raise self.error("source is neither a directory nor a tar or cpio archive")
        finally:
            if self.spooled_archive:
                self.f.close()
        return self.tree

    # -- compressed archives ----------------------------------------------------
    def decompress(self, method: str) -> None:
        """Decompress the archive once into a spool and read that instead."""
        self.f.seek(self.start)
        spool = self.spool = Spool(self.path)
        try:
            stream = _decompressing(method, _Window(self.f, self.start, self.end))
            with stream:
                offset = 0
                while True:
                    chunk = stream.read(CHUNK)
                    if not chunk:
                        break
                    os.pwrite(spool.fd, chunk, offset)
                    offset += len(chunk)
        except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError,
                *_zstd_errors(method)) as e:
            raise self.error(f"corrupt {method} data: {e}") from None
        spool.size = offset
        self.spooled_archive = True
        self.f = open(spool.path, "rb")
        self.start, self.end = 0, offset

    def data(self, offset: int, size: int) -> HostData:
        """A member's data at ``offset`` of the (decompressed) archive."""
        path = self.spool.path if self.spooled_archive else os.fsencode(self.file_path)
        return HostData(path, size, offset=offset, file_size=UNCHECKED_SIZE)

    # -- names ---------------------------------------------------------------------
    def name(self, raw: bytes, quiet: bool = False) -> bytes:
        """A member's path relative to the archive's top ('' is the top)."""
        if raw.startswith(b"/") and not quiet:
            if not self.stripped_slash:
                warn(f"{self.path}: removing leading '/' from member names")
                self.stripped_slash = True
        parts = [p for p in raw.split(b"/") if p and p != b"."]
        if b".." in parts:
            raise self.error(f"member {_show(raw)}: '..' in the name")
        return b"/".join(parts)

    def place(self, path: bytes, node: Node, raw: bytes) -> None:
        try:
            parts = split_path(path)
            if parts:
                self.tree.mkdirs(b"/".join(parts[:-1]), self.template)
            self.tree.put(path, node)
        except TreeError as e:
            raise self.error(f"member {_show(raw)}: {e}") from None

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
        try:
            archive = tarfile.open(fileobj=self.f, mode="r:", encoding="utf-8",
                                   errors="surrogateescape")
        except tarfile.TarError as e:
            raise self.error(f"not a readable tar archive: {e}") from None
        size = self.end
        while True:
            try:
                info = archive.next()
            except tarfile.TarError as e:
                raise self.error(f"bad tar header after offset {archive.offset}: {e}") from None
            if info is None:
                break
            archive.members.clear()  # tarfile keeps every header otherwise
            self.tar_member(info, size)

    def tar_member(self, info: tarfile.TarInfo, archive_size: int) -> None:
        raw = os.fsencode(info.name)
        path = self.name(raw)
        if self.oci and self.whiteout(path):
            return
        mtime_ns = _pax_time(info)
        kind = TAR_KINDS.get(info.type)
        if info.type == tarfile.LNKTYPE:
            self.place(path, self.hard_link(path, os.fsencode(info.linkname), raw), raw)
            return
        if kind is None:
            raise self.error(f"member {_show(raw)}: tar member type {info.type!r} is not supported")
        node = Node(kind | stat.S_IMODE(info.mode), info.uid, info.gid, mtime_ns, origin=self.path)
        if kind == REG:
            stored = sum(n for _, n in info.sparse) if info.sparse else info.size
            if info.offset_data + stored > archive_size:
                raise self.error(f"member {_show(raw)}: truncated: its data ends past the "
                                 f"archive's {archive_size} bytes")
            if info.sparse is not None:
                node.data = self.sparse_data(info)
            else:
                node.data = self.data(info.offset_data, info.size)
        elif kind == LNK:
            target = os.fsencode(info.linkname)
            self.check_symlink(path, target, raw)
            node.target = target
        elif kind in (CHR, BLK):
            node.rdev = os.makedev(info.devmajor, info.devminor)
        if not path:
            if kind != DIR:
                raise self.error(f"member {_show(raw)}: the archive's top is not a directory")
            self.tree.root.copy_meta_from(node)
            return
        self.place(path, node, raw)

    def sparse_data(self, info: tarfile.TarInfo) -> HostData:
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
        return HostData(spool.path, info.size, True, offset=base, file_size=UNCHECKED_SIZE)

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
                rdev = os.makedev(fields["rdevmajor"], fields["rdevminor"])
            elif magic == ODC_MAGIC:
                fields, head, align = self.odc_header(fd, offset), ODC_HEADER_SIZE, 1
                dev = fields["dev"]
                rdev = fields["rdev"]
            else:
                raise self.error(f"offset {offset}: no cpio header (the archive ends "
                                 f"without {CPIO_TRAILER.decode()})")
            name_at = offset + head
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
        try:
            return {name: int(head[6 + 8 * k:14 + 8 * k], 16) for k, name in enumerate(NEWC_FIELDS)}
        except ValueError:
            raise self.error(f"offset {offset}: bad cpio header (a field is not hexadecimal)") from None

    def odc_header(self, fd: int, offset: int) -> dict:
        head = os.pread(fd, ODC_HEADER_SIZE, offset)
        if len(head) != ODC_HEADER_SIZE:
            raise self.error(f"offset {offset}: truncated cpio header")
        fields, pos = {}, 6
        try:
            for name, width in ODC_FIELDS:
                fields[name] = int(head[pos:pos + width], 8)
                pos += width
        except ValueError:
            raise self.error(f"offset {offset}: bad cpio header (a field is not octal)") from None
        return fields

    def cpio_member(self, fd: int, raw: bytes, fields: dict, dev, rdev: int, data_at: int,
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
            target = os.pread(fd, filesize, data_at)
            self.check_symlink(path, target, raw)
            node.target = target
        elif kind in (CHR, BLK):
            node.rdev = rdev
        if not path:
            if kind != DIR:
                raise self.error(f"member {_show(raw)}: the archive's top is not a directory")
            self.tree.root.copy_meta_from(node)
            return
        self.place(path, node, raw)


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


def _decompressing(method: str, f):
    if method == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")
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
        whole, _, frac = text.partition(".")
        try:
            seconds = int(whole)
            ns = int((frac + "000000000")[:9]) if frac else 0
        except ValueError:
            return int(info.mtime * 1_000_000_000)
        return seconds * 1_000_000_000 + (-ns if seconds < 0 or whole.startswith("-") else ns)
    return int(info.mtime) * 1_000_000_000


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")
