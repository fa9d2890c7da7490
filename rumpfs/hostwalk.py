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

A writer that can lay out a subtree on its own (a cpio archive: a subtree is
one stretch of it) may have the walkers write the subtrees too: a walker lists
a whole subtree, tells this process how long its stretch is, is told where it
goes, and writes it.  This process then only places stretches, and the
per-file work (lstat, open, read, write) is shared by the walkers.
"""

from __future__ import annotations

import marshal
import os
import struct
import sys
from operator import length_hint

from .errors import RumpfsError
from .output import grow_pipe, usable_cores
from .tree import (
    DIR,
    IFMT,
    LNK,
    NAME_MAX,
    REG,
    HostData,
    Node,
    Tree,
    WalkEntry,
    WrittenSubtree,
    _new_entry,
)

#: Walker processes for a large tree (the cores this process may use, at most this).
MAX_WALKERS = 2
#: This process lists the first entries itself, breadth first; only a tree
#: with more than this many is shared (forking walkers costs more than
#: they save on a small tree) ...
SHARE_AFTER_ENTRIES = 4096
#: ... and only while there are at least this many directories per walker
#: left to list.
SUBTREES_PER_WALKER = 2
#: A tree with this many directories waiting to be listed is shared before
#: its entry count says so (:func:`walk_host_dir`): each of them costs a
#: getdents and its entries' lstat, together more than forking the walkers.
#: (small10k: shared after 310 entries instead of 4,096, its packs 5-8 ms
#: sooner; trees that never queue so many are walked as before.)
SHARE_AT_QUEUED_DIRS = 256
#: A subtree of more entries than this is not written apart: its records go
#: to this process, whose copy workers share its files, instead of one
#: walker writing it alone while the other has nothing left (a root's
#: usr/share can hold most of the tree).
WRITTEN_APART_MAX = 8192
#: Entries a walker gathers before sending them: few enough that this
#: process makes nodes of one batch while the walkers list the next, and
#: has little left to do once they end (4,096: small10k's walk 3 ms longer).
BATCH_ENTRIES = 1024
#: Bytes read from a walker's pipe at a time.
READ_SIZE = 1 << 20
#: A message on a walker's pipe: its length, then ``marshal`` data.
_LENGTH = struct.Struct("<I")
#: The last message of a walker that failed: ("error", message).
_ERROR = "error"
#: Where a walker's subtree goes: image offset, first inode number.
_PLACE = struct.Struct("<QQ")
#: A task on the walkers' shared task pipe: the subtrees ``start`` to ``end``.
_TASK = struct.Struct("<II")
#: Tasks on that pipe at most: they fill one page, which every pipe holds
#: (the tasks are all written before the walkers start).
MAX_TASKS = 4096 // _TASK.size


#: st_ino -> [(st_dev, warn)] of files the walk leaves out: the output being
#: written and its temporary file, when they are inside a source tree
#: (see :class:`rumpfs.output.AtomicOutput`).  Looked up by inode first: one
#: dict test per entry, and only while there is something to leave out.
_LEFT_OUT: dict = {}


def leave_out(dev: int, ino: int, warn: bool) -> tuple:
    """Leave the file ``(dev, ino)`` out of every walk until
    :func:`stop_leaving_out` is called with what this returns; when met, it is
    reported with a warning if ``warn`` (an old output, not our temporary
    file), as bsdtar says "Can't add archive to itself"."""
    entry = (dev, warn)
    _LEFT_OUT.setdefault(ino, []).append(entry)
    return ino, entry


def stop_leaving_out(token: tuple) -> None:
    ino, entry = token
    entries = _LEFT_OUT.get(ino, [])
    if entry in entries:
        entries.remove(entry)
    if not entries:
        _LEFT_OUT.pop(ino, None)


def _left_out(path: bytes, st) -> bool:
    for dev, warn in _LEFT_OUT[st.st_ino]:
        if dev == st.st_dev:
            if warn:
                print(f"rumpfs: warning: {os.fsdecode(path)}: the output is not packed "
                      "into itself", file=sys.stderr)
            return True
    return False


def list_directory(path: bytes) -> list:
    """The entries of one host directory, as tuples
    ``(name, st_mode, uid, gid, size, sparse, mtime_ns, rdev, link_key,
    target)``: ``sparse`` when the allocated size hints at holes, ``link_key``
    ``(st_dev, st_ino)`` for a non-directory with more than one name (else
    None), ``target`` the symlink's target (else None).  Not the atime and
    ctime: the nodes take the mtime for both (see :func:`.sources.settle_times`)."""
    out = []
    append = out.append
    left_out = _LEFT_OUT
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
            if left_out and st.st_ino in left_out and _left_out(entry.path, st):
                continue
            mode = st.st_mode
            kind = mode & IFMT
            size = st.st_size
            append((name, mode, st.st_uid, st.st_gid, size, st.st_blocks * 512 < size,
                    st.st_mtime_ns, st.st_rdev,
                    (st.st_dev, st.st_ino) if st.st_nlink > 1 and kind != DIR else None,
                    os.readlink(entry.path) if kind == LNK else None))
    return out


class _Builder:
    """Turns listed entries into nodes under their directory nodes."""

    def __init__(self, keep_owner: bool):
        self.keep_owner = keep_owner
        #: (st_dev, st_ino) -> node, for hard links.
        self.links: dict = {}
        #: id() of those nodes.
        self.linked_ids: set = set()
        self.count = 0
        self.modes: dict = {}

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
        modes = self.modes
        for name, mode, uid, gid, size, sparse, mtime, rdev, key, target in entries:
            mode = modes.setdefault(mode, mode)  # one int object per mode (memory)
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
            node.mtime_ns = node.atime_ns = node.ctime_ns = mtime
            node.rdev = rdev
            node.origin = None
            node.children = None
            node.target = target
            node.data = None
            kind = mode & IFMT
            if kind == REG:
                node.data = HostData(prefix, size, sparse, mtime, name)
            elif kind == DIR:
                node.children = {}
                subdirs.append((prefix + name, node))
            if key is not None:
                links[key] = node
                self.linked_ids.add(id(node))
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
        walkers = min(usable_cores(), MAX_WALKERS) if hasattr(os, "fork") else 0
    build = _Builder(keep_owner)
    # Breadth first, until the tree proves large and has subtrees to share.
    queue = [(top, root)]
    head = 0
    while head < len(queue):
        queued = len(queue) - head
        if (walkers >= 2 and queued >= SUBTREES_PER_WALKER * walkers
                and (build.count > SHARE_AFTER_ENTRIES or queued >= SHARE_AT_QUEUED_DIRS)):
            _share(queue[head:], build, walkers)
            break
        dirpath, dirnode = queue[head]
        head += 1
        queue += build.add(dirpath, dirnode, list_directory(dirpath))
    return build.count


def holds_hard_links(top: bytes) -> bool:
    """Whether anything but a directory below the host directory ``top``
    has more than one name."""
    todo = [top]
    while todo:
        dirpath = todo.pop()
        prefix = _prefix(dirpath)
        for name, mode, *_fields, link_key, _target in list_directory(dirpath):
            if link_key is not None:
                return True
            if mode & IFMT == DIR:
                todo.append(prefix + name)
    return False


class HostStream:
    """One host directory as the whole tree, listed while it is walked.

    For a writer that can start before the tree is complete: a cpio member's
    offset depends only on the members before it, so its data can be copying
    while the rest of the tree is still being listed.  :meth:`walk` yields
    what :meth:`Tree.walk <rumpfs.tree.Tree.walk>` of the finished tree
    yields, in the same order, listing each directory just before its entry
    (whose link count needs its subdirectories).  ``tree`` (whose root is
    filled) is complete once the walk has ended.

    ``settle(nodes)`` is called with each directory's entries once they are
    nodes (the reproducibility policy).  ``grafts`` (name -> node, subtrees
    built and settled beforehand: the default and generated /etc) take the
    place of the top directory's entries of those names, or join them; what
    is inside them is never listed from the host.  A large tree is shared
    with walker processes as :func:`walk_host_dir` shares it: the
    directories not listed yet are dealt out in walk order, and their
    records are taken as the walk reaches them.
    """

    def __init__(self, top: bytes, tree, keep_owner: bool, settle, walkers: int | None = None,
                 grafts: dict | None = None):
        self.top = top
        self.tree = tree
        self.settle = settle
        self.grafts = grafts or {}
        #: id() of every directory inside the grafts (walked, not listed).
        self._grafted = {id(node) for graft in self.grafts.values() if graft.children is not None
                         for node in Tree(graft).iter_nodes(unique=False) if node.children is not None}
        if walkers is None:
            walkers = min(usable_cores(), MAX_WALKERS) if hasattr(os, "fork") else 0
        self.walkers = walkers
        self.build = _Builder(keep_owner)
        self.ended = False
        #: Called once the whole tree is listed.
        self.when_listed = None
        self._team: _Walkers | None = None
        self._listed: dict = {}  # host path -> entries, from the walkers, not used yet
        self._checked = 0  # entry count at the last look for subtrees to share
        self._written = 0  # subtrees written by walkers
        self._make_writer = None
        self._writers: list = []  # made by _make_writer, one per walker
        #: Names and file data bytes in subtrees written by walkers (not in ``tree``).
        self.elsewhere_count = 0
        self.elsewhere_bytes = 0

    def write_subtrees_with(self, make_writer) -> None:
        """Let walkers write the subtrees they list: ``make_writer()`` (called
        here, once per walker, before it is forked) gives an object with
        ``layout(path, walk)`` -- for the subtree named ``path`` in the image
        and its :meth:`Tree.walk <rumpfs.tree.Tree.walk>` (paths relative to
        it), None if it cannot be written apart, else a plan with ``size``,
        ``count`` and ``data_bytes`` -- and ``write(plan, offset,
        first_number)``, which runs in the walker -- and
        ``close_unused(in_walker, own)``, called in this process and in each
        walker once the walker ``own`` is forked (a writer's own pipe ends:
        see :class:`rumpfs.formats.cpio.writer.SubtreeWriter`).  Such a subtree is not
        added to ``tree``: the walk yields a
        :class:`~rumpfs.tree.WrittenSubtree` for it.  A subtree holding a hard
        link is never written apart (its link counts depend on other names)."""
        self._make_writer = make_writer

    def name_counts(self):
        """Names per node, as :meth:`Tree.name_counts`; while the walk goes on,
        a node met under several host names counts 0 (its count is known
        only at the end), any other 1."""
        if self.ended:
            return self.tree.name_counts()
        return _CountsSoFar(self.build.linked_ids)

    def count(self) -> int:
        # A written subtree's directory is in ``tree`` too, without its contents.
        return self.tree.count() + self.elsewhere_count - self._written

    def walk(self):
        build = self.build
        settle = self.settle
        entries_of = self._entries
        root = self.tree.root
        grafted = self._grafted
        first_name: dict = {}
        try:
            build.add(self.top, root, entries_of(self.top))
            root.children.update(self.grafts)
            settle(root.children.values())
            yield _new_entry(WalkEntry, (b"", root, None, 0))
            # As Tree.walk: an iterator per open directory, here with the
            # sorted list it runs over (to find the directories still to come).
            stack = []
            items = sorted(root.children.items())
            it = iter(items)
            prefix = b""
            host = _prefix(self.top)
            depth = 1
            while True:
                for name, node in it:
                    path = prefix + name
                    children = node.children
                    if children is None:
                        key = id(node)
                        link_of = first_name.get(key)
                        if link_of is None:
                            first_name[key] = path
                        yield _new_entry(WalkEntry, (path, node, link_of, depth))
                        continue
                    dirpath = host + name
                    if id(node) not in grafted:
                        if (self._team is None and self.walkers >= 2
                                and build.count - self._checked > SHARE_AFTER_ENTRIES):
                            self._checked = build.count
                            self._share_rest(dirpath, node, items, it, host, stack)
                        entries = entries_of(dirpath)
                        if entries.__class__ is tuple:
                            yield _new_entry(WalkEntry, (path, self._written_subtree(entries), None, depth))
                            continue
                        build.add(dirpath, node, entries)
                        settle(children.values())
                    yield _new_entry(WalkEntry, (path, node, None, depth))
                    if children:
                        stack.append((items, it, prefix, host, depth))
                        items = sorted(children.items())
                        it = iter(items)
                        prefix = path + b"/"
                        host = dirpath + b"/"
                        depth += 1
                        break
                else:
                    if not stack:
                        break
                    items, it, prefix, host, depth = stack.pop()
            if self._team is not None:
                self._team.finish()  # the walkers' subtrees are written
            self.ended = True
            if self.when_listed is not None:
                self.when_listed()
        finally:
            if self._team is not None:
                self._team.close()
                self._team = None

    def _entries(self, dirpath: bytes) -> list:
        if self._team is None:
            return list_directory(dirpath)
        listed = self._listed
        while dirpath not in listed:
            records = self._team.receive()
            if not records:  # pragma: no cover - every directory to come was dealt out
                raise RumpfsError(f"{os.fsdecode(dirpath)}: no directory walker listed it")
            listed.update(records)
        return listed.pop(dirpath)

    def _written_subtree(self, plan: tuple) -> WrittenSubtree:
        walker, size, count, data_bytes = plan
        self.elsewhere_count += count
        self.elsewhere_bytes += data_bytes
        self._written += 1
        team = self._team
        return WrittenSubtree(size, count, data_bytes,
                              lambda offset, number: team.place(walker, offset, number),
                              self._writers[walker])

    def _share_rest(self, dirpath: bytes, node: Node, items: list, it, host: bytes,
                    stack: list) -> None:
        """Deal the directories not listed yet (``dirpath``, then those after
        it in each open directory, innermost first) out to walkers, if there
        are enough of them."""
        rest = [(dirpath, node)]
        frames = [(items, it, host)] + [(f[0], f[1], f[3]) for f in reversed(stack)]
        for items_, it_, host_ in frames:
            left = length_hint(it_)
            rest += [(host_ + n, c) for n, c in items_[len(items_) - left:]
                     if c.children is not None and id(c) not in self._grafted]
        if len(rest) < SUBTREES_PER_WALKER * self.walkers:
            return
        if self._make_writer is None:
            self._team = _Walkers([path for path, _node in rest], self.walkers)
        else:
            writers = self._writers = [self._make_writer() for _ in range(self.walkers)]
            self._team = _Walkers(rest, self.walkers,
                                  _SubtreeJob(writers, self.build.keep_owner, self.settle,
                                              len(_prefix(self.top))))


class _CountsSoFar:
    """:meth:`HostStream.name_counts` during the walk."""

    __slots__ = ("linked",)

    def __init__(self, linked: set):
        self.linked = linked

    def __getitem__(self, key: int) -> int:
        return 0 if key in self.linked else 1


def _share(subtrees: list, build: _Builder, walkers: int) -> None:
    """List ``subtrees`` (``(host path, node)``) in walker processes and add
    what they send."""
    nodes = dict(subtrees)  # host path -> directory node not yet filled
    team = _Walkers([path for path, _node in subtrees], walkers)
    try:
        while True:
            records = team.receive()
            if not records:
                break
            for dirpath, entries in records:
                for sub in build.add(dirpath, nodes.pop(dirpath), entries):
                    nodes[sub[0]] = sub[1]
    finally:
        team.close()


class _SubtreeJob:
    """What a walker needs to write subtrees: its writer (one per walker),
    how nodes are made (owners, the reproducibility policy) and how many
    leading bytes of a host path are not part of its image path."""

    __slots__ = ("writers", "keep_owner", "settle", "cut")

    def __init__(self, writers: list, keep_owner: bool, settle, cut: int):
        self.writers = writers
        self.keep_owner = keep_owner
        self.settle = settle
        self.cut = cut


class _Walkers:
    """Walker processes listing the subtrees under ``paths``, taken in
    order as each walker becomes free (subtrees differ in size: dealt out
    in turn, one walker could be left with the larger half).  With a
    ``job``, ``paths`` holds ``(host path, node)`` and the walkers write the
    subtrees they can (:func:`_subtree_walker`)."""

    def __init__(self, paths: list, walkers: int, job: _SubtreeJob | None = None):
        #: read end of a walker's pipe -> [pid, bytes received not yet parsed]
        self.procs: dict = {}
        #: write end of each walker's pipe for placements (with a job)
        self.replies: list = []
        tasks = _deal(len(paths))
        try:
            for k in range(walkers):
                r, w = os.pipe()
                # A walker lists on while this process makes nodes of its
                # last batch (a default pipe holds a sixth of one).
                grow_pipe(w)
                reply_r, reply_w = os.pipe() if job is not None else (-1, -1)
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the walker
                    os.close(r)
                    for other in [*self.procs, *self.replies, reply_w]:
                        if other >= 0:
                            os.close(other)
                    if job is None:
                        _walker(_taken(paths, tasks), w)
                    else:
                        for j, writer in enumerate(job.writers):
                            writer.close_unused(True, j == k)
                        _subtree_walker(_taken(paths, tasks), w, reply_r, k, job)
                os.close(w)
                if reply_r >= 0:
                    os.close(reply_r)
                if job is not None:
                    job.writers[k].close_unused(False)
                self.procs[r] = [pid, bytearray()]
                self.replies.append(reply_w)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(tasks)

    def place(self, walker: int, offset: int, number: int) -> None:
        """Tell ``walker`` where its subtree goes (it waits for this)."""
        view = memoryview(_PLACE.pack(offset, number))
        while view:
            view = view[os.write(self.replies[walker], view):]

    def finish(self) -> None:
        """Wait for every walker to end (the last subtrees being written);
        a walker's error is raised here."""
        while self.receive():  # pragma: no cover - every record was asked for
            pass

    def receive(self) -> list:
        """The next records ``(host path, entries)`` from any walker, in the
        order each walker sent them; ``[]`` once every walker has ended.
        A walker's error is raised here, with the walker's message."""
        import select

        records: list = []
        procs = self.procs
        while procs and not records:
            ready, _, _ = select.select(list(procs), [], [])
            for fd in ready:
                chunk = os.read(fd, READ_SIZE)
                pid, pending = procs[fd]
                if not chunk:
                    os.close(fd)
                    del procs[fd]
                    _, status = os.waitpid(pid, 0)
                    if status:
                        raise RumpfsError(f"directory walker ended with status {status}")
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
                        raise RumpfsError(message[1])
                    records += message
                del pending[:pos]
        return records

    def close(self) -> None:
        """End every walker still running (after an error, or early)."""
        for fd, (pid, _pending) in self.procs.items():
            os.close(fd)
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.procs = {}
        for fd in self.replies:
            if fd >= 0:
                os.close(fd)
        self.replies = []


def _deal(count: int) -> int:
    """The read end of a pipe holding the tasks that share out ``count``
    subtrees: runs of them, in order, at most :data:`MAX_TASKS`.  Every
    walker reads from it a task at a time (a pipe read takes whole tasks:
    they were written whole, before any read), until it is empty."""
    per = max(1, -(-count // MAX_TASKS))
    r, w = os.pipe()
    try:
        os.write(w, b"".join(_TASK.pack(k, min(k + per, count)) for k in range(0, count, per)))
    finally:
        os.close(w)
    return r


def _taken(items, tasks: int):
    """The ``items`` of the tasks this walker takes from the pipe ``tasks``
    (made by :func:`_deal`)."""
    while True:
        task = os.read(tasks, _TASK.size)
        if not task:
            return
        start, end = _TASK.unpack(task)
        yield from items[start:end]


def _walker(paths, out: int) -> None:  # pragma: no cover - runs in a walker
    """List the subtrees under ``paths`` depth first (a directory's record
    before those of its subdirectories) and send the records to ``out``."""
    with _Reporting(out):
        _list_and_send(paths, out)


def _list_and_send(paths, out: int) -> None:  # pragma: no cover - runs in a walker
    batch = []
    size = 0
    for top in paths:
        stack = [top]
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


def _subtree_walker(subtrees, out: int, reply: int, walker: int,
                    job: _SubtreeJob) -> None:  # pragma: no cover - runs in a walker
    """For each ``(host path, node)`` of ``subtrees``: list the whole subtree
    into nodes; if the writer can lay it out, send its plan ``(walker, size,
    count, data_bytes)`` as the directory's record, wait to be told where it
    goes and write it; else send the records of its directories, as
    :func:`_walker` does.  A subtree found to hold more than
    WRITTEN_APART_MAX entries is not listed to its end first: what is listed
    goes at once, and the rest as it is listed."""
    writer = job.writers[walker]
    settle = job.settle
    with _Reporting(out):
        for dirpath, node in subtrees:
            build = _Builder(job.keep_owner)
            listed = {}
            queue = [(dirpath, node)]
            while queue and build.count <= WRITTEN_APART_MAX:
                path, dirnode = queue.pop()
                entries = listed[path] = list_directory(path)
                queue += build.add(path, dirnode, entries)
                settle(dirnode.children.values())
            plan = None
            if not queue and not build.links:
                plan = writer.layout(dirpath[job.cut:], Tree(node).walk())
            if plan is None:
                _send(out, list(listed.items()))
                if queue:
                    del listed, build
                    _list_and_send([path for path, _node in queue], out)
                continue
            del listed
            _send(out, [(dirpath, (walker, plan.size, plan.count, plan.data_bytes))])
            placed = b""
            while len(placed) < _PLACE.size:
                chunk = os.read(reply, _PLACE.size - len(placed))
                if not chunk:  # this process ended the walk (an error)
                    raise RumpfsError("directory walker: the walk was abandoned")
                placed += chunk
            writer.write(plan, *_PLACE.unpack(placed))


class _Reporting:
    """Runs a walker's work: any error goes to ``out`` as its last message,
    and the process ends there (it never unwinds into the parent's code)."""

    def __init__(self, out: int):
        self.out = out

    def __enter__(self):
        return self

    def __exit__(self, exc_type, e, tb):  # pragma: no cover - runs in a walker
        code = 0
        if e is not None:
            message = str(e) if isinstance(e, RumpfsError) else f"directory walker failed: {e!r}"
            try:
                _send(self.out, (_ERROR, message))
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
