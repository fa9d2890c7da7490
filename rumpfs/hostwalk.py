"""Reading a host directory tree into nodes, on both cores when it is large.

Listing a tree costs a ``getdents`` per directory and an ``lstat`` per entry,
and making its :class:`~rumpfs.tree.Node` about as much again.  On a tree
of many small files that is most of a pack, and one process does it at a
time.  So once the first levels show enough directories, the rest is split
between *walker* processes: each lists its share of the subtrees and sends
the entries back, a batch at a time, as ``marshal`` records; this process
turns them into nodes while the walkers go on listing.

A walker lists with the same function as this process does, so errors read
the same whichever process met them.  The walkers are forked before the tree
is large (cheap) and end before the walk returns.
"""

from __future__ import annotations

import marshal
import os
import struct

from .errors import RumpfsError
from .tree import DIR, IFMT, LNK, NAME_MAX, REG, HostData, Node

#: Walker processes for a large tree (the machine's cores, at most this).
MAX_WALKERS = 2
#: This process lists the first entries itself, breadth first; only a tree
#: with more than this many is shared (forking walkers costs more than
#: they save on a small tree) ...
SHARE_AFTER_ENTRIES = 4096
#: ... and only while there are at least this many directories per walker
#: left to list.
SUBTREES_PER_WALKER = 2
#: Entries a walker gathers before sending them.
BATCH_ENTRIES = 4096
#: Bytes read from a walker's pipe at a time.
READ_SIZE = 1 << 20
#: A message on a walker's pipe: its length, then ``marshal`` data.
_LENGTH = struct.Struct("<I")
#: The last message of a walker that failed: ("error", message).
_ERROR = "error"


def list_directory(path: bytes) -> list:
    """The entries of one host directory, as tuples
    ``(name, st_mode, uid, gid, size, sparse, mtime_ns, atime_ns, ctime_ns,
    rdev, link_key, target)``: ``sparse`` when the allocated size hints at
    holes, ``link_key`` ``(st_dev, st_ino)`` for a non-directory with more
    than one name (else None), ``target`` the symlink's target (else None)."""
    out = []
    append = out.append
    try:
        it = os.scandir(path)
    except OSError as e:
        raise RumpfsError(f"{os.fsdecode(path)}: cannot read directory: {e.strerror}") from None
    with it:
        for entry in it:
            name = entry.name
            if len(name) > NAME_MAX:
                raise RumpfsError(f"{os.fsdecode(entry.path)}: name is {len(name)} bytes, "
                                  f"longer than {NAME_MAX}")
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            kind = mode & IFMT
            size = st.st_size
            append((name, mode, st.st_uid, st.st_gid, size, st.st_blocks * 512 < size,
                    st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns, st.st_rdev,
                    (st.st_dev, st.st_ino) if st.st_nlink > 1 and kind != DIR else None,
                    os.readlink(entry.path) if kind == LNK else None))
    return out


class _Builder:
    """Turns listed entries into nodes under their directory nodes."""

    def __init__(self, keep_owner: bool):
        self.keep_owner = keep_owner
        #: (st_dev, st_ino) -> node, for hard links.
        self.links: dict = {}
        self.count = 0

    def add(self, dirpath: bytes, dirnode: Node, entries: list) -> list:
        """Add ``entries`` of the host directory ``dirpath`` to ``dirnode``;
        returns the ``(host path, node)`` of its subdirectories."""
        children = dirnode.children
        links = self.links
        keep_owner = self.keep_owner
        new = Node.__new__
        prefix = _prefix(dirpath)
        subdirs = []
        self.count += len(entries)
        for name, mode, uid, gid, size, sparse, mtime, atime, ctime, rdev, key, target in entries:
            if key is not None:
                node = links.get(key)
                if node is not None:
                    children[name] = node
                    continue
            # Filled field by field: this runs once per host entry.
            node = new(Node)
            node.mode = mode
            if keep_owner:
                node.uid = uid
                node.gid = gid
            else:
                node.uid = node.gid = 0
            node.mtime_ns = mtime
            node.atime_ns = atime
            node.ctime_ns = ctime
            node.rdev = rdev
            node.origin = None
            node.children = None
            node.target = target
            node.data = None
            kind = mode & IFMT
            if kind == REG:
                node.data = HostData(prefix + name, size, sparse)
            elif kind == DIR:
                node.children = {}
                subdirs.append((prefix + name, node))
            if key is not None:
                links[key] = node
            children[name] = node
        return subdirs


def walk_host_dir(top: bytes, root: Node, keep_owner: bool = True,
                  walkers: int | None = None) -> int:
    """Fill ``root`` from the host directory ``top``; returns the entry count.

    Symlinks are never followed; hard links (same st_dev and st_ino) become
    one node under several names; devices, fifos and sockets stay what they
    are.  Owners become 0:0 unless ``keep_owner`` (later spec layers may set
    others).  ``walkers``: processes to share a large tree with (default:
    up to :data:`MAX_WALKERS`, one per core; 0 or 1 lists it here alone).
    """
    if walkers is None:
        walkers = min(os.cpu_count() or 1, MAX_WALKERS) if hasattr(os, "fork") else 0
    build = _Builder(keep_owner)
    # Breadth first, until the tree proves large and has subtrees to share.
    queue = [(top, root)]
    head = 0
    while head < len(queue):
        if (walkers >= 2 and build.count > SHARE_AFTER_ENTRIES
                and len(queue) - head >= SUBTREES_PER_WALKER * walkers):
            _share(queue[head:], build, walkers)
            break
        dirpath, dirnode = queue[head]
        head += 1
        queue += build.add(dirpath, dirnode, list_directory(dirpath))
    return build.count


def _share(subtrees: list, build: _Builder, walkers: int) -> None:
    """List ``subtrees`` (``(host path, node)``) in walker processes and add
    what they send."""
    import select

    nodes = dict(subtrees)  # host path -> directory node not yet filled
    procs = {}  # read end of a walker's pipe -> [pid, pending bytes]
    errors = []
    try:
        for k in range(walkers):
            share = [path for path, _node in subtrees[k::walkers]]
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the walker
                os.close(r)
                for other in procs:
                    os.close(other)
                _walker(share, w)
            os.close(w)
            procs[r] = [pid, bytearray()]
        while procs:
            ready, _, _ = select.select(list(procs), [], [])
            for fd in ready:
                chunk = os.read(fd, READ_SIZE)
                pid, pending = procs[fd]
                if not chunk:
                    os.close(fd)
                    del procs[fd]
                    _, status = os.waitpid(pid, 0)
                    if status and not errors:
                        errors.append(f"directory walker ended with status {status}")
                    continue
                pending += chunk
                pos = 0
                while len(pending) - pos >= _LENGTH.size:
                    (n,) = _LENGTH.unpack_from(pending, pos)
                    end = pos + _LENGTH.size + n
                    if len(pending) < end:
                        break
                    message = marshal.loads(pending[pos + _LENGTH.size:end])
                    pos = end
                    if message[0] == _ERROR:
                        errors.insert(0, message[1])
                        continue
                    for dirpath, entries in message:
                        for sub in build.add(dirpath, nodes.pop(dirpath), entries):
                            nodes[sub[0]] = sub[1]
                del pending[:pos]
    finally:
        for fd, (pid, _pending) in procs.items():
            os.close(fd)
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
    if errors:
        raise RumpfsError(errors[0])


def _walker(paths: list, out: int) -> None:  # pragma: no cover - runs in a walker
    """List the subtrees under ``paths`` depth first (a directory's record
    before those of its subdirectories) and send the records to ``out``."""
    code = 0
    try:
        batch = []
        size = 0
        stack = list(reversed(paths))
        while stack:
            dirpath = stack.pop()
            entries = list_directory(dirpath)
            batch.append((dirpath, entries))
            size += len(entries)
            prefix = _prefix(dirpath)
            stack += [prefix + e[0] for e in reversed(entries) if e[1] & IFMT == DIR]
            if size >= BATCH_ENTRIES:
                _send(out, batch)
                batch, size = [], 0
        if batch:
            _send(out, batch)
    except BaseException as e:  # noqa: B036 - report anything, never unwind into the parent's code
        message = str(e) if isinstance(e, RumpfsError) else f"directory walker failed: {e!r}"
        try:
            _send(out, (_ERROR, message))
        except OSError:
            pass
        code = 1
    os._exit(code)


def _prefix(dirpath: bytes) -> bytes:
    """What the names in ``dirpath`` are joined to (as os.scandir joins them)."""
    return dirpath if dirpath.endswith(b"/") else dirpath + b"/"


def _send(fd: int, message) -> None:
    data = marshal.dumps(message)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]
