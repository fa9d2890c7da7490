"""The one metadata model of the tree that rumpfs bakes.

A :class:`Tree` holds :class:`Node` objects.  A node is what a path names
(an inode, in Unix terms): its type and permission bits (``mode``, exactly as
``st_mode``), owner, times in nanoseconds, device number, symlink target and
the source of its data.  A directory node keeps its entries in ``children``,
a ``dict`` from name (``bytes``) to node.

Hard links are the same :class:`Node` object standing under more than one
name; the link count of a node is the number of names it has.  The first name
in sorted walk order is the one that "owns" the data, the others are hard
links to it (``Tree.walk`` reports which).

Every writer (cpio, FFS, ISO, FAT) and every reader speaks this model, so
formats stay independent of each other and of where the tree came from.
Paths are ``bytes`` relative to the root, without a leading slash (the root
is ``b""``): a name that is not UTF-8 survives unchanged.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import namedtuple
from collections.abc import Iterator

S_IFMT = stat.S_IFMT
#: The type bits of st_mode (``mode & IFMT`` is ``S_IFMT(mode)`` without a call).
IFMT = 0o170000
REG = stat.S_IFREG
DIR = stat.S_IFDIR
LNK = stat.S_IFLNK
CHR = stat.S_IFCHR
BLK = stat.S_IFBLK
FIFO = stat.S_IFIFO
SOCK = stat.S_IFSOCK

KIND_NAMES = {
    REG: "file",
    DIR: "dir",
    LNK: "symlink",
    CHR: "chardev",
    BLK: "blockdev",
    FIFO: "fifo",
    SOCK: "socket",
}
KIND_LETTERS = {REG: "-", DIR: "d", LNK: "l", CHR: "c", BLK: "b", FIFO: "p", SOCK: "s"}

#: Longest name one directory entry may carry (FFS_MAXNAMLEN, NAME_MAX).
NAME_MAX = 255
#: Longest path or symlink target (Linux's PATH_MAX).
PATH_MAX = 4096
#: The largest uid and gid: uid_t and gid_t are 32 bits wide everywhere, and
#: every format stores 32 (cpio newc's 8 hex digits, FFS's 32-bit fields).
ID_MAX = 0xFFFFFFFF
#: The largest major and the largest minor number of a device here: what
#: os.makedev takes on every Python rumpfs runs on (a C int before 3.13).
#: (Linux itself makes devices of 12-bit majors and 20-bit minors.)
DEVICE_PART_MAX = (1 << 31) - 1


#: HostData.file_size of data that is part of a larger file: not checked.
UNCHECKED_SIZE = -1
#: HostData's extents of a file whose allocation hints at holes, not looked at yet.
_NOT_LOOKED = object()


def make_rdev(major: int, minor: int) -> int:
    """``os.makedev(major, minor)``, the same on every Python: a ValueError
    saying what is wrong when either number is negative or over
    :data:`DEVICE_PART_MAX`."""
    if not (0 <= major <= DEVICE_PART_MAX and 0 <= minor <= DEVICE_PART_MAX):
        raise ValueError(f"device number {major}, {minor} is beyond what this host can hold "
                         f"(major and minor at most {DEVICE_PART_MAX})")
    return os.makedev(major, minor)


class HostData:
    """File data read from a whole host file when the image is written
    (:class:`HostSpan`: from a part of one)."""

    __slots__ = ("head", "name", "size", "_extents", "mtime_ns")

    #: Where the data starts in the host file.
    offset = 0

    def __init__(self, path: bytes, size: int, sparse_hint: bool = False,
                 mtime_ns: int | None = None, name: bytes = b""):
        #: The host path is ``head + name``: a walked file keeps its
        #: directory's path (one object for all its files) and its name (the
        #: directory's key), not a joined copy of them (memory).
        self.head = path
        self.name = name
        #: Size and modification time as the walk saw them: the copy checks
        #: that the file is still so (None: no time to check).
        self.size = size
        self.mtime_ns = mtime_ns
        #: None: known to have no holes without looking; else the runs that
        #: hold data, found by extents() (a file whose allocation hinted at
        #: holes may still turn out to have none).
        self._extents = _NOT_LOOKED if sparse_hint else None

    @property
    def file_size(self) -> int:
        """The whole file's size as the walk saw it, which the copy checks
        (UNCHECKED_SIZE: not checked)."""
        return self.size

    @property
    def path(self) -> bytes:
        return self.head + self.name

    def extents(self) -> list[tuple[int, int]]:
        """The ``(offset, length)`` runs that hold data; the rest are holes.

        Found with SEEK_DATA/SEEK_HOLE, and only for files whose allocated
        size hinted at holes when they were walked.
        """
        if self._extents is None:
            return [(0, self.size)] if self.size else []
        if self._extents is _NOT_LOOKED:
            self._extents = _data_extents(self.path, self.size, self.offset)
        return self._extents

    @property
    def dense(self) -> bool:
        """Known to have no holes without looking."""
        return self._extents is None

    def open(self):
        """The file, positioned at the data (read at most ``size`` bytes)."""
        f = open(self.path, "rb", buffering=0)
        if self.offset:
            f.seek(self.offset)
        return f

    def __repr__(self):
        return f"{type(self).__name__}({self.path!r}, {self.size}, offset={self.offset})"


class HostSpan(HostData):
    """``size`` bytes from ``offset`` of a host file that holds more: an
    archive member, a spool.  The file's own size is not checked (other
    members may be appended to it meanwhile)."""

    __slots__ = ("offset",)

    file_size = UNCHECKED_SIZE

    def __init__(self, path: bytes, size: int, offset: int, sparse_hint: bool = False):
        # Set here, not through HostData.__init__: one call per archive member.
        self.head = path
        self.name = b""
        self.size = size
        self.mtime_ns = None
        self._extents = _NOT_LOOKED if sparse_hint else None
        self.offset = offset


class BytesData:
    """File data given as bytes (generated files, spec-file entries)."""

    __slots__ = ("data",)
    #: Bytes have no holes.
    dense = True

    def __init__(self, data: bytes):
        self.data = bytes(data)

    @property
    def size(self) -> int:
        return len(self.data)

    def extents(self) -> list[tuple[int, int]]:
        return [(0, len(self.data))] if self.data else []

    def __repr__(self):
        return f"BytesData({len(self.data)} bytes)"


def _data_extents(path: bytes, size: int, offset: int = 0) -> list[tuple[int, int]]:
    try:
        # Never blocking nor following: the file may have been replaced by
        # a fifo or a symlink since the walk.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError:
        # Reported with its path when the data is copied.
        return [(0, size)] if size else []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [(0, size)] if size else []  # as above: the copy says what changed
        return [(start - offset, n) for start, n in data_runs(fd, offset, size)]
    finally:
        os.close(fd)


def data_runs(fd: int, start: int, size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` runs of bytes ``start`` .. ``start + size``
    of the open file ``fd`` that hold data (SEEK_DATA/SEEK_HOLE); all of
    them where the file system cannot tell."""
    runs = []
    pos, end = start, start + size
    while pos < end:
        try:
            first = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                break
            return [(start, size)] if size else []
        last = min(os.lseek(fd, first, os.SEEK_HOLE), end)
        if last > first:
            runs.append((first, last - first))
        pos = last
    return runs


class Node:
    """One inode of the tree: type, mode, owner, times, rdev, target, data.

    Nodes compare and hash by identity: a hard link is the same node, and
    writers find them with the node as a key."""

    __slots__ = (
        "mode", "uid", "gid", "atime_ns", "mtime_ns", "ctime_ns",
        "rdev", "target", "data", "children", "origin",
    )

    def __init__(self, mode: int, uid: int = 0, gid: int = 0, mtime_ns: int = 0,
                 atime_ns: int | None = None, ctime_ns: int | None = None,
                 rdev: int = 0, target: bytes | None = None, data=None,
                 origin: str | None = None):
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.atime_ns = mtime_ns if atime_ns is None else atime_ns
        self.ctime_ns = mtime_ns if ctime_ns is None else ctime_ns
        self.rdev = rdev
        self.target = target
        self.data = data
        self.children = {} if S_IFMT(mode) == DIR else None
        #: Where the node came from (a host path or a layer name), for errors.
        self.origin = origin

    kind = property(lambda self: S_IFMT(self.mode))
    perm = property(lambda self: stat.S_IMODE(self.mode))

    @property
    def is_dir(self) -> bool:
        return S_IFMT(self.mode) == DIR

    @property
    def size(self) -> int:
        kind = S_IFMT(self.mode)
        if kind == REG:
            return self.data.size if self.data is not None else 0
        if kind == LNK:
            return len(self.target)
        return 0

    def copy_meta_from(self, other: "Node") -> None:
        """Take another node's metadata (a later layer's directory)."""
        self.mode = other.mode
        self.uid, self.gid = other.uid, other.gid
        self.atime_ns, self.mtime_ns, self.ctime_ns = other.atime_ns, other.mtime_ns, other.ctime_ns
        self.origin = other.origin

    def describe_origin(self) -> str:
        """Where the node came from, for error messages."""
        if self.origin:
            return self.origin
        if self.data is not None and hasattr(self.data, "path"):
            return os.fsdecode(self.data.path)
        return "a source directory"

    def __repr__(self):
        return f"<Node {KIND_NAMES.get(self.kind, '?')} {oct(self.perm)} {self.describe_origin()}>"


#: One name met by :meth:`Tree.walk`: its path, its node, the path of the
#: first name of the node when this one is a further hard link (else None),
#: and its depth below the root.  (collections.namedtuple: typing.NamedTuple
#: would cost every run the import of typing.)
WalkEntry = namedtuple("WalkEntry", "path node link_of depth")


_new_entry = tuple.__new__  # builds WalkEntry without a Python-level __init__ (hot path)


class WrittenSubtree:
    """What a walk yields, in place of a directory's node, for a subtree
    that another process writes into the image itself (see
    :meth:`rumpfs.hostwalk.HostStream.write_subtrees_with`): ``size`` bytes
    of image holding ``count`` members, the directory included, with
    ``data_bytes`` of file data.  The writer decides where they go and says
    so with :meth:`place`; only a writer that asked for subtrees meets one.
    ``writer`` is the object the writer made for the walker writing it."""

    __slots__ = ("size", "count", "data_bytes", "_place", "writer")

    def __init__(self, size: int, count: int, data_bytes: int, place, writer=None):
        self.size = size
        self.count = count
        self.data_bytes = data_bytes
        self._place = place
        self.writer = writer

    def place(self, offset: int, first_number: int) -> None:
        """The subtree starts at image ``offset``; its members are numbered
        (inode numbers) from ``first_number`` on, in walk order."""
        self._place(offset, first_number)


class TreeError(ValueError):
    """A tree operation that cannot be done (the message names the path)."""


def split_path(path: bytes | str) -> list[bytes]:
    if isinstance(path, str):
        path = os.fsencode(path)
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise TreeError(f"{display(path)}: '..' is not allowed in an image path")
    return parts


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def display(path: bytes) -> str:
    """A path as shown to people: absolute, undecodable bytes escaped."""
    if isinstance(path, str):
        path = os.fsencode(path)
    return "/" + path.lstrip(b"/").decode("utf-8", "backslashreplace")


class NameCounts(dict):
    """:meth:`Tree.name_counts`: ``id(node)`` -> names, holding only the
    nodes with more than one (a table of every node was the largest a
    writer kept of a large tree); any other node has one.  ``nodes``: how
    many nodes there are below the root."""

    __slots__ = ("nodes",)

    def __missing__(self, key: int) -> int:
        return 1


class Tree:
    """The directory tree to bake, rooted at a directory node."""

    def __init__(self, root: Node | None = None):
        self.root = root or Node(DIR | 0o755, origin="(root)")

    # -- lookup and edits -------------------------------------------------
    def lookup(self, path: bytes | str) -> Node | None:
        node = self.root
        for part in split_path(path):
            if node.children is None:
                return None
            node = node.children.get(part)
            if node is None:
                return None
        return node

    def mkdirs(self, path: bytes | str, template: Node | None = None) -> Node:
        """The directory at ``path``, creating missing parents.

        New directories take their metadata from ``template`` (mode 0755,
        owner 0:0 when none is given).  A non-directory in the way is an error.
        """
        node = self.root
        done = b""
        for part in split_path(path):
            done = join(done, part)
            child = node.children.get(part)
            if child is None:
                child = Node(DIR | 0o755, origin="(parent directory)")
                if template is not None:
                    child.copy_meta_from(template)
                    child.mode = DIR | (template.perm if template.is_dir else 0o755)
                node.children[part] = child
            elif not child.is_dir:
                raise TreeError(f"{display(done)}: not a directory (from {child.describe_origin()})")
            node = child
        return node

    def put(self, path: bytes | str, node: Node) -> None:
        """Place ``node`` at ``path``; later wins, directories merge."""
        parts = split_path(path)
        if not parts:
            if not node.is_dir:
                raise TreeError("/: the root must be a directory")
            merge_dir(self.root, node)
            return
        for part in parts:
            if len(part) > NAME_MAX:
                raise TreeError(f"{display(path)}: name is {len(part)} bytes, longer than {NAME_MAX}")
        parent = self.mkdirs(b"/".join(parts[:-1]))
        place(parent, parts[-1], node)

    def remove(self, path: bytes | str) -> bool:
        parts = split_path(path)
        if not parts:
            raise TreeError("/: the root cannot be removed")
        parent = self.lookup(b"/".join(parts[:-1]))
        if parent is None or parent.children is None:
            return False
        return parent.children.pop(parts[-1], None) is not None

    def glob(self, pattern: bytes | str) -> list[bytes]:
        """Image paths matching a pattern, in walk order, each once.

        Shell globs per name (``*``, ``?``, ``[...]``; ``*`` never crosses
        ``/``), plus gitignore's ``**``: a whole path component ``**``
        matches zero or more directories, so ``/usr/lib/**/__pycache__``
        finds ``/usr/lib/__pycache__`` and every one below it, and
        ``/opt/**`` everything inside ``/opt``.  A ``**`` inside a name
        (``a**b``) is an ordinary ``*``.
        """
        parts = split_path(pattern)
        found: dict[bytes, None] = {}
        # (index of the next component, path, node); a set keeps two routes
        # through ** to the same place from doing the work twice.
        todo = [(0, b"", self.root)]
        seen = set()
        while todo:
            i, path, node = todo.pop()
            if (i, path) in seen:
                continue
            seen.add((i, path))
            if i == len(parts):
                found[path] = None
                continue
            part = parts[i]
            if node.children is None:
                continue
            if part == GLOBSTAR:
                if i + 1 == len(parts):
                    # A trailing ** is everything inside, not the directory itself.
                    todo.extend((i + 1, join(path, name), child)
                                for name, child in node.children.items())
                else:
                    todo.append((i + 1, path, node))  # zero directories
                todo.extend((i, join(path, name), child)
                            for name, child in node.children.items() if child.is_dir)
                continue
            if not any(c in part for c in b"*?["):
                child = node.children.get(part)
                if child is not None:
                    todo.append((i + 1, join(path, part), child))
                continue
            from fnmatch import fnmatchcase  # imported here: only patterns need it
            todo.extend((i + 1, join(path, name), child)
                        for name, child in node.children.items() if fnmatchcase(name, part))
        return sorted(found, key=_walk_order)

    # -- traversal ----------------------------------------------------------
    def walk(self, counts: NameCounts | None = None) -> Iterator[WalkEntry]:
        """Every name, root first, each directory before its contents,
        names in byte order; the result does not depend on insertion order.
        ``counts``: this tree's :meth:`name_counts`, if the caller has them."""
        # The first name of each node with several: only those are kept (a
        # path for every file was most of a large tree's walk).
        linked = self.name_counts() if counts is None else counts
        first_name: dict[int, bytes] = {}
        yield _new_entry(WalkEntry, (b"", self.root, None, 0))
        # Depth first with an iterator per open directory: a name costs one
        # step of a sorted list's iterator (this runs once per entry).
        stack = []
        it = iter(sorted(self.root.children.items()))
        prefix = b""
        depth = 1
        while True:
            for name, node in it:
                path = prefix + name
                children = node.children
                if children is None:
                    link_of = None
                    key = id(node)
                    if key in linked:
                        link_of = first_name.get(key)
                        if link_of is None:
                            first_name[key] = path
                    yield _new_entry(WalkEntry, (path, node, link_of, depth))
                    continue
                yield _new_entry(WalkEntry, (path, node, None, depth))
                if children:
                    stack.append((it, prefix, depth))
                    it = iter(sorted(children.items()))
                    prefix = path + b"/"
                    depth += 1
                    break
            else:
                if not stack:
                    return
                it, prefix, depth = stack.pop()

    def iter_nodes(self, unique: bool = True) -> Iterator[Node]:
        """Every node (no paths, no order): the cheap traversal.

        With ``unique=False`` a hard-linked node comes once per name, which
        is cheaper and harmless for idempotent work."""
        seen: set[int] = set()
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            for child in node.children.values():
                if child.children is not None:
                    stack.append(child)
                elif not unique:
                    yield child
                elif id(child) not in seen:
                    seen.add(id(child))
                    yield child


    def name_counts(self) -> NameCounts:
        """Names per non-directory node, keyed by ``id(node)``: its link count."""
        counts = NameCounts()
        seen = set()  # the nodes themselves: no int object per id (memory)
        stack = [self.root]
        while stack:
            node = stack.pop()
            for child in node.children.values():
                if child in seen:
                    counts[id(child)] += 1  # a second name: 1 + 1
                else:
                    seen.add(child)
                    if child.children is not None:
                        stack.append(child)
        counts.nodes = len(seen)
        return counts

    def count(self) -> int:
        """Number of names, the root included."""
        total = 1
        stack = [self.root]
        while stack:
            node = stack.pop()
            total += len(node.children)
            stack.extend(c for c in node.children.values() if c.children is not None)
        return total


#: The path component that matches any number of directories in patterns.
GLOBSTAR = b"**"


def _walk_order(path: bytes) -> list[bytes]:
    """Sort key putting paths in :meth:`Tree.walk` order (parents first)."""
    return path.split(b"/")


def place(parent: Node, name: bytes, node: Node) -> None:
    old = parent.children.get(name)
    if old is not None and old.is_dir and node.is_dir and old is not node:
        merge_dir(old, node)
    else:
        parent.children[name] = node


def merge_dir(into: Node, other: Node) -> None:
    """Lay directory ``other`` over ``into``: its metadata and entries win."""
    into.copy_meta_from(other)
    for name, child in other.children.items():
        place(into, name, child)
