"""Spec files: create entries and set owners or modes without root.

The format is the Linux kernel's ``gen_init_cpio`` list format (see
usr/gen_init_cpio.c), one entry per line, ``#`` starting a comment::

    file  <name> <location> <mode> <uid> <gid> [<hard link> ...]
    dir   <name> <mode> <uid> <gid>
    nod   <name> <mode> <uid> <gid> <b|c> <major> <minor>
    slink <name> <target> <mode> <uid> <gid>
    pipe  <name> <mode> <uid> <gid>
    sock  <name> <mode> <uid> <gid>

plus one line of rumpfs's own, to change entries that other layers made::

    meta  <pattern> [mode=<octal>] [uid=<n>] [gid=<n>] [mtime=<seconds>]

``<location>`` is relative to the spec file's directory; ``${VAR}`` in it is
expanded from the environment, as gen_init_cpio does.  ``meta`` patterns are
shell globs over image paths (``*`` does not cross ``/``, a ``**`` component
crosses any number of directories: see :meth:`rumpfs.tree.Tree.glob`); a
pattern that matches nothing is an error, since a silent no-op hides a typo.

Times: a ``file`` line's entry has its source file's time, as a host file
has; every other entry the spec creates (and a parent directory a line
creates) has the spec file's own modification time, where gen_init_cpio
would use the current time.  Both then follow the same policy as host files:
clamped to SOURCE_DATE_EPOCH, or set by ``--timestamp``.  ``meta mtime=``
sets a time explicitly (clamped the same way).
"""

from __future__ import annotations

import os
import stat

from .errors import RumpfsError
from .sources import Layer
from .tree import DEVICE_PART_MAX, DIR, ID_MAX, HostData, Node, Tree, TreeError

_KINDS = {
    "dir": (stat.S_IFDIR, 4),
    "pipe": (stat.S_IFIFO, 4),
    "sock": (stat.S_IFSOCK, 4),
}
_META_KEYS = ("mode", "uid", "gid", "mtime")
#: Largest meta mtime= (seconds whose nanoseconds fit a signed 64-bit time).
MTIME_MAX = ((1 << 63) - 1) // 1_000_000_000


def _int(text: str, base: int, where: str, what: str, limit: int = ID_MAX) -> int:
    try:
        value = int(text, base)
    except ValueError:
        raise RumpfsError(f"{where}: {what} {text!r} is not a number") from None
    if value < 0:
        raise RumpfsError(f"{where}: {what} {text!r} is negative")
    if value > limit:
        raise RumpfsError(f"{where}: {what} {text} is more than {limit}")
    return value


def _mode(text: str, where: str) -> int:
    value = _int(text, 8, where, "mode")
    if value > 0o7777:
        raise RumpfsError(f"{where}: mode {text!r} has bits beyond 07777")
    return value


class SpecFile(Layer):
    """A spec file applied as a layer."""

    FIELDS = ("path",)

    def __init__(self, path: str):
        self.path = path

    def describe(self) -> str:
        return f"spec {self.path}"

    def apply(self, tree: Tree, policy=None) -> None:
        try:
            with open(self.path, "rb") as f:
                # The time of the entries the spec makes up (see the module doc).
                self.mtime_ns = os.fstat(f.fileno()).st_mtime_ns
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise RumpfsError(f"{self.path}: spec file does not exist") from None
        except OSError as e:
            raise RumpfsError(f"{self.path}: cannot read spec file: {e.strerror}") from None
        base = os.path.dirname(os.path.abspath(self.path))
        for number, raw in enumerate(lines, 1):
            line = raw.split(b"#", 1)[0].strip()
            if not line:
                continue
            where = f"{self.path}:{number}"
            try:
                self._line(tree, line.split(), where, base)
            except TreeError as e:
                raise RumpfsError(f"{where}: {e}") from None

    def _line(self, tree: Tree, words: list[bytes], where: str, base: str) -> None:
        kind = words[0].decode("ascii", "replace")
        if kind != "meta" and len(words) > 1:
            # Missing parents are made as the spec's directories: 0755, 0:0, its time.
            parents = words[1].rstrip(b"/").rpartition(b"/")[0]
            tree.mkdirs(parents, Node(DIR | 0o755, mtime_ns=self.mtime_ns, origin=where))
        args = [w.decode("utf-8", "surrogateescape") for w in words[1:]]
        name = words[1] if len(words) > 1 else b""
        if kind == "meta":
            self._meta(tree, words[1:], where)
            return

        def need(n: int, usage: str) -> None:
            if len(args) < n:
                raise RumpfsError(f"{where}: '{kind}' needs {usage}")

        if kind == "file":
            need(5, "<name> <location> <mode> <uid> <gid>")
            location = os.path.join(base, os.path.expandvars(args[1]))
            if "\0" in location:
                raise RumpfsError(f"{where}: the file's location has a NUL byte")
            try:
                st = os.stat(location)
            except OSError as e:
                raise RumpfsError(f"{where}: {location}: {e.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                raise RumpfsError(f"{where}: {location}: not a regular file")
            node = Node(stat.S_IFREG | _mode(args[2], where), _int(args[3], 10, where, "uid"),
                        _int(args[4], 10, where, "gid"), st.st_mtime_ns,
                        data=HostData(os.fsencode(location), st.st_size,
                                      st.st_blocks * 512 < st.st_size),
                        origin=where)
            tree.put(name, node)
            for link in words[6:]:
                tree.mkdirs(link.rstrip(b"/").rpartition(b"/")[0],
                            Node(DIR | 0o755, mtime_ns=self.mtime_ns, origin=where))
                tree.put(link, node)
        elif kind in _KINDS:
            ftype, n = _KINDS[kind]
            need(n, "<name> <mode> <uid> <gid>")
            tree.put(name, Node(ftype | _mode(args[1], where), _int(args[2], 10, where, "uid"),
                                _int(args[3], 10, where, "gid"), self.mtime_ns, origin=where))
        elif kind == "nod":
            need(7, "<name> <mode> <uid> <gid> <b|c> <major> <minor>")
            if args[4] not in ("b", "c"):
                raise RumpfsError(f"{where}: device type {args[4]!r} is neither 'b' nor 'c'")
            ftype = stat.S_IFBLK if args[4] == "b" else stat.S_IFCHR
            rdev = os.makedev(_int(args[5], 10, where, "major", DEVICE_PART_MAX),
                              _int(args[6], 10, where, "minor", DEVICE_PART_MAX))
            tree.put(name, Node(ftype | _mode(args[1], where), _int(args[2], 10, where, "uid"),
                                _int(args[3], 10, where, "gid"), self.mtime_ns, rdev=rdev,
                                origin=where))
        elif kind == "slink":
            need(5, "<name> <target> <mode> <uid> <gid>")
            tree.put(name, Node(stat.S_IFLNK | _mode(args[2], where), _int(args[3], 10, where, "uid"),
                                _int(args[4], 10, where, "gid"), self.mtime_ns, target=words[2],
                                origin=where))
        else:
            raise RumpfsError(f"{where}: unknown entry type {kind!r} "
                              f"(file, dir, nod, slink, pipe, sock, meta)")

    def _meta(self, tree: Tree, words: list[bytes], where: str) -> None:
        if not words:
            raise RumpfsError(f"{where}: 'meta' needs <pattern> and key=value settings")
        pattern, settings = words[0], {}
        for word in words[1:]:
            key, sep, value = word.decode("ascii", "replace").partition("=")
            if not sep or key not in _META_KEYS:
                raise RumpfsError(f"{where}: unknown setting {word.decode('ascii', 'replace')!r} "
                                  f"(known: {', '.join(k + '=' for k in _META_KEYS)})")
            settings[key] = (_mode(value, where) if key == "mode" else
                             _int(value, 10, where, key, MTIME_MAX if key == "mtime" else ID_MAX))
        paths = tree.glob(pattern)
        if not paths:
            raise RumpfsError(f"{where}: meta {pattern.decode('utf-8', 'replace')}: "
                              f"matches nothing in the image")
        for path in paths:
            node = tree.lookup(path)
            if "mode" in settings:
                node.mode = stat.S_IFMT(node.mode) | settings["mode"]
            if "uid" in settings:
                node.uid = settings["uid"]
            if "gid" in settings:
                node.gid = settings["gid"]
            if "mtime" in settings:
                node.mtime_ns = settings["mtime"] * 1_000_000_000
