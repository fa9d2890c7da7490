"""Writing cpio newc / crc archives from the tree.

Choices, each because some reader depends on it:

* The root is the first member, named ``.``: it carries the root directory's
  mode and owner (the Linux kernel applies them to its rootfs); every
  directory comes before its contents, names in byte order.
* Hard links: every name of a multiply-linked file carries the same
  ``c_ino`` and ``c_nlink``; the data is stored with the FIRST name and the
  later names have size 0.  The Linux kernel links later names to the first
  and writes any data it meets; GNU cpio and bsdtar link the size-0 names to
  the name that has the data; Unikraft's extractor keeps only the first
  occurrence of an inode, so the data must be there.  (gen_init_cpio puts the
  data on the last name, which loses it in Unikraft.)
* Inode numbers count from 1 in walk order; device fields are 0: nothing of
  the build host leaks.
* Files larger than 4 GiB - 1 byte cannot be stored (32-bit size field) and
  are refused; times outside 1970..2106 are clamped with a warning.
"""

from __future__ import annotations

import os
import sys
import zlib

from ...errors import RumpfsError
from ...output import (
    BATCH_JOBS,
    FIRST_BATCH_JOBS,
    InOrder,
    PipeStretchWriter,
    StretchWriter,
    grow_pipe,
    open_source,
    read_source,
)
from ...tree import IFMT, LNK, REG, HostData, WrittenSubtree, display
from .layout import (
    ALIGNMENT,
    BLOCK_SIZE,
    FIELD_MAX,
    HEADER_SIZE,
    MAGICS,
    TRAILER_NAME,
    build_header,
    header_words,
    pad,
)

#: Bytes summed per adler32 call: 256 * 255 stays below its modulus 65521,
#: so the low half of adler32 minus one is the exact byte sum of the piece.
_SUM_PIECE = 256
_READ_CHUNK = 1 << 20
_ZEROS = bytes(BLOCK_SIZE)
NS_PER_SEC = 1_000_000_000
#: The NUL after a name and the padding to 4 bytes, by len(name) % 4: header
#: and name together (HEADER_SIZE + len(name) + 1 bytes) end on the boundary.
_NAME_TAIL = [b"\0" + bytes(pad(HEADER_SIZE + n + 1)) for n in range(ALIGNMENT)]
#: The padding after data, by its size % 4.
_DATA_PAD = [bytes(pad(n)) for n in range(ALIGNMENT)]


def byte_sum(buf) -> int:
    """Sum of all bytes of ``buf`` (the 070702 checksum of a chunk)."""
    mv = memoryview(buf)
    total = 0
    for i in range(0, len(mv), _SUM_PIECE):
        total += (zlib.adler32(mv[i:i + _SUM_PIECE]) & 0xFFFF) - 1
    return total


def data_checksum(data) -> int:
    if not hasattr(data, "path"):
        return byte_sum(data.data) & FIELD_MAX
    fd = open_source(data)
    total = 0
    left = data.size  # an archive member's data ends before its archive does
    try:
        while left:
            chunk = os.read(fd, min(left, _READ_CHUNK))
            if not chunk:
                break
            left -= len(chunk)
            total += byte_sum(chunk)
    finally:
        os.close(fd)
    return total & FIELD_MAX


#: For a compressing sink, files up to this size are read into the write
#: buffer; larger ones are streamed through the sink.
SMALL_FILE = 1 << 16


def write_archive(tree, out, variant: str = "newc") -> int:
    """Write the archive to ``out`` (an ImageSink or a compressing sink);
    returns its size."""
    magic = MAGICS[variant]
    crc = variant == "crc"
    names = tree.name_counts()
    progress = getattr(out, "progress", None)
    # A file sink copies file data itself (worker processes, see ImageSink),
    # header included: this process writes only the other members, and the
    # copies fill the gaps.  A compressing sink needs every byte in order.
    scattered = hasattr(out, "write_scattered")
    in_order = None
    pipe_writers: list = []
    listed = hasattr(tree, "write_subtrees_with")
    if listed:
        # A tree still being listed: its walkers may write whole subtrees
        # (a crc header's checksum would need the data before the header),
        # into the file, or into pipes that InOrder reads in turn.
        def counter():
            return progress.worker_counter() if progress is not None else None

        def piped_writer():
            pipe_writers.append(SubtreeWriter.piped(magic, counter()))
            return pipe_writers[-1]

        if not scattered:
            out = in_order = InOrder(out)
        if not crc:
            tree.write_subtrees_with(
                piped_writer if in_order is not None
                else lambda: SubtreeWriter(magic, out.fd, out.base, counter()))
    # A whole tree's walk takes the counts just made (a listed one counts as it goes).
    walk = tree.walk() if listed else tree.walk(names)
    try:
        return _write_members(tree, walk, out, magic, crc, names, progress, scattered, in_order)
    except BaseException:
        if in_order is not None:
            walk.close()  # the walkers stop: their pipes end
            in_order.abort()
        raise
    finally:
        for writer in pipe_writers:
            if writer.reader_fd is not None:
                os.close(writer.reader_fd)


def _write_members(tree, walk, out, magic: bytes, crc: bool, names, progress, scattered: bool,
                   in_order) -> int:
    """The loop of :func:`write_archive` over ``walk``, ``tree``'s walk;
    ``in_order`` is ``out`` when that is an InOrder."""
    ino_of: dict[int, int] = {}  # nodes with several names
    next_ino = 1
    clamped = []
    buf = bytearray()  # members this process writes, from image offset start
    start = out.tell()
    runs: list = []  # (image offset, bytes) of such members, not yet handed over
    jobs: list = []  # copies of member data, and their headers
    heads: list = []
    hand_over = FIRST_BATCH_JOBS  # copies handed to a file sink at a time, growing to BATCH_JOBS
    # Members whose link count was not known when they were met (a tree
    # listed while it is written counts a hard-linked node's names only at
    # the end): (image offset, ino, node, mtime, size, name, check).  An
    # InOrder holds back what follows the first, to correct them.
    late: list = []
    # This loop runs once per member: locals, tables and one struct call.
    data_pad = _DATA_PAD
    for path, node, link_of, _depth in walk:
        if node.__class__ is WrittenSubtree:
            if buf:
                if in_order is not None:
                    out.write(buf)
                else:
                    runs.append((start, bytes(buf)))
                start += len(buf)
                buf = bytearray()
            node.place(start, next_ino)
            if in_order is not None:
                out.pipe(node.writer.reader_fd, node.size)
            start += node.size
            next_ino += node.count
            continue
        mode = node.mode
        children = node.children
        size = 0
        payload = data = None
        check = 0
        if children is None:
            nlink = names[id(node)]
            if nlink == 1:
                ino = next_ino
                next_ino += 1
            else:
                ino = ino_of.get(id(node))
                if ino is None:
                    ino = ino_of[id(node)] = next_ino
                    next_ino += 1
            kind = mode & IFMT
            if kind == REG:
                data = node.data
                if link_of is not None or data is None or not data.size:
                    data = None
                else:
                    size = data.size
                    if size > FIELD_MAX:
                        raise RumpfsError(
                            f"{display(path)}: file is {size} bytes; a cpio newc archive stores "
                            f"at most {FIELD_MAX} bytes per file (32-bit size field): use an FFS image")
                    if not isinstance(data, HostData):
                        payload, data = data.data, None
                    elif not scattered and size <= SMALL_FILE:
                        payload, data = _read_small(data, size), None
                        if progress is not None:
                            progress.advance(size)
                    if crc:
                        check = (byte_sum(payload) & FIELD_MAX if payload is not None
                                 else data_checksum(data))
            elif kind == LNK:
                payload = node.target
                size = len(payload)
        else:
            ino = next_ino
            next_ino += 1
            nlink = _dir_nlink(children)
        mtime = node.mtime_ns // NS_PER_SEC
        if not 0 <= mtime <= FIELD_MAX:
            clamped.append(path)
            mtime = min(max(mtime, 0), FIELD_MAX)
        name = path or b"."
        head = _member_header(magic, ino, node, nlink, mtime, size, name, check)
        if not nlink:
            if in_order is not None:
                in_order.hold()
            late.append((start + len(buf), ino, node, mtime, size, name, check))
        if data is not None and scattered:
            # The copy writes the whole member and, before it, what this
            # process has gathered since the last copy (members without
            # data, padding): the copies write the image front to back.
            if buf:
                head = bytes(buf) + head
                buf = bytearray()
            jobs.append((data, 0, start + len(head), size))
            heads.append(head)
            start += len(head) + size
            buf += data_pad[size & 3]
            if len(jobs) >= hand_over:
                out.write_scattered(runs, jobs, heads, start)
                runs, jobs, heads = [], [], []
                hand_over = min(2 * hand_over, BATCH_JOBS)
            continue
        buf += head
        if data is not None:
            # A compressing sink reads a large file itself.
            out.write(buf)
            buf = bytearray()
            out.copy(data)
            start = out.tell()
        elif payload is not None:
            buf += payload
        buf += data_pad[size & 3]
        if len(buf) >= _READ_CHUNK:
            if scattered:
                runs.append((start, bytes(buf)))
            else:
                out.write(buf)
            start += len(buf)
            buf = bytearray()

    if scattered:
        if buf:
            runs.append((start, bytes(buf)))
            start += len(buf)
        out.write_scattered(runs, jobs, heads, start)
    else:
        out.write(buf)
    buf = bytearray()
    trailer = build_header(magic, (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(TRAILER_NAME) + 1, 0))
    tail = trailer + TRAILER_NAME + b"\0"
    buf += tail + _ZEROS[:pad(len(tail))]
    out.write(buf)
    end = out.tell()
    out.write(_ZEROS[:pad(end, BLOCK_SIZE)])
    corrections = []
    if late:
        # Headers written with a link count of 0 (maybe by a copy), now final.
        names = tree.name_counts()
        corrections = [(offset, _member_header(magic, ino, node, names[id(node)], mtime, size,
                                               name, check))
                       for offset, ino, node, mtime, size, name, check in late]
    if in_order is not None:
        in_order.finish(corrections)
    elif corrections:
        out.wait_for_copies()
        for offset, header in corrections:
            out.pwrite(header, offset)
    if clamped:
        print(f"rumpfs: warning: {len(clamped)} time(s) outside the 32-bit cpio range were clamped "
              f"(first: {display(clamped[0])})", file=sys.stderr)
    return out.tell()


class SubtreeWriter:
    """Writes one subtree as a stretch of the archive, in a directory walker
    process (see :meth:`rumpfs.hostwalk.HostStream.write_subtrees_with`):
    the members of a subtree are contiguous in the archive and, with no hard
    link among them, depend on the rest only through their offset and first
    inode number.  The bytes are those :func:`write_archive` writes.

    Into the output file ``fd`` (whose image starts at ``base``) at the
    stretch's offset; or, made by :meth:`piped`, in order into a pipe whose
    read end ``reader_fd`` this process keeps (for a sink that takes bytes
    only in order: the stretches go through :class:`~rumpfs.output.InOrder`)."""

    def __init__(self, magic: bytes, fd: int, base: int = 0, counter=None,
                 reader_fd: int | None = None):
        self.magic = magic
        self.fd = fd
        self.base = base
        self.counter = counter
        self.reader_fd = reader_fd
        self.stretch_writer = StretchWriter if reader_fd is None else PipeStretchWriter

    @classmethod
    def piped(cls, magic: bytes, counter=None) -> "SubtreeWriter":
        reader_fd, fd = os.pipe()
        grow_pipe(fd)
        return cls(magic, fd, 0, counter, reader_fd)

    def close_unused(self, in_walker: bool, own: bool = False) -> None:
        """Once a walker is forked: the pipe ends a process does not use are
        closed (the walker writing this pipe keeps its write end, this
        process its read end), so that a walker's exit ends its pipe."""
        if self.reader_fd is None:
            return
        if in_walker:
            os.close(self.reader_fd)
            self.reader_fd = None
        if self.fd >= 0 and not (in_walker and own):
            os.close(self.fd)
            self.fd = -1

    def layout(self, path: bytes, walk) -> "_Stretch | None":
        """The plan of the subtree named ``path`` from its walk; None when a
        member needs what only :func:`write_archive` does (a size or time
        out of range: the error or warning is given there)."""
        members = []
        size_total = data_bytes = 0
        prefix = path + b"/"
        for rel, node, _link_of, _depth in walk:
            name = prefix + rel if rel else path
            mode = node.mode
            children = node.children
            size = 0
            if children is None:
                nlink = 1
                kind = mode & IFMT
                if kind == REG:
                    size = node.data.size
                    if size > FIELD_MAX:
                        return None
                    data_bytes += size
                elif kind == LNK:
                    size = len(node.target)
            else:
                nlink = _dir_nlink(children)
            mtime = node.mtime_ns // NS_PER_SEC
            if not 0 <= mtime <= FIELD_MAX:
                return None
            members.append((name, node, size, nlink, mtime))
            head = HEADER_SIZE + len(name) + 1
            size_total += head + pad(head) + size + pad(size)
        return _Stretch(members, size_total, data_bytes)

    def write(self, plan: "_Stretch", offset: int, first_ino: int) -> None:
        """Write the planned members from image ``offset``, numbered from ``first_ino``."""
        magic = self.magic
        data_pad = _DATA_PAD
        start = self.base + offset
        out = self.stretch_writer(self.fd, start, self.counter)
        ino = first_ino
        for name, node, size, nlink, mtime in plan.members:
            out.put(_member_header(magic, ino, node, nlink, mtime, size, name))
            ino += 1
            if size:
                if node.target is not None:
                    out.put(node.target)
                else:
                    out.copy(node.data, size)
                out.put(data_pad[size & 3])
        out.close()
        if out.end != start + plan.size:  # pragma: no cover - layout and write disagree
            raise RumpfsError(f"{display(plan.members[0][0])}: subtree written in "
                              f"{out.end - start} bytes, planned {plan.size}")


class _Stretch:
    """A subtree's plan: ``(name, node, size, nlink, mtime)`` per member."""

    __slots__ = ("members", "size", "count", "data_bytes")

    def __init__(self, members: list, size: int, data_bytes: int):
        self.members = members
        self.size = size
        self.count = len(members)
        self.data_bytes = data_bytes


_PACK_WORDS = header_words().pack


def _member_header(magic: bytes, ino: int, node, nlink: int, mtime: int, size: int, name: bytes,
                   check: int = 0) -> bytes:
    """A member's header, its name and the padding to the data (the
    fields as header_words packs them: device fields 0, rdev split)."""
    rdev = node.rdev
    return (magic + _PACK_WORDS(ino, node.mode, node.uid, node.gid, nlink, mtime, size, 0, 0,
                                os.major(rdev) if rdev else 0, os.minor(rdev) if rdev else 0,
                                len(name) + 1, check).hex().upper().encode()
            + name + _NAME_TAIL[len(name) & 3])


def _dir_nlink(children: dict) -> int:
    """A directory's link count: its own, '.', and each subdirectory's '..'."""
    nlink = 2
    for c in children.values():
        if c.children is not None:
            nlink += 1
    return nlink


def _read_small(data, size: int) -> bytes:
    if not hasattr(data, "path"):
        return data.data
    return b"".join(read_source(data, size))
