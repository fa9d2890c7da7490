"""mtree specifications (NetBSD mtree(5)) as ``makefs -F`` reads them.

``--mtree FILE`` applies a spec after the sources and spec files: an entry
that the sources have takes the spec's type-checked metadata (``mode``,
``uid``/``uname``, ``gid``/``gname``, ``time``, ``link``); an entry they
lack is created when it is a directory, symlink, device or FIFO (a regular
file with ``contents=`` is read from that host file); a missing regular
file is an error.  ``--mtree-only`` then drops every entry the spec does not
list (``makefs -x``).

Both layouts are read: the hierarchical one ``mtree -c`` writes (names
relative to the current directory, ``..`` goes up) and the full-path one of
NetBSD's METALOG (``./usr/bin/ls type=file uname=root mode=0555``).
``/set`` and ``/unset`` set defaults; names and link targets are vis(3)
encoded.  ``uname``/``gname`` are looked up in the tree's ``/etc/passwd``
(or ``master.passwd``) and ``/etc/group``; ``flags`` are not kept (FFS
flags are not written) and are noted once.  Other keywords (``size``,
digests, ``optional``, ``nochange``...) are accepted and not checked.
"""

from __future__ import annotations

import os
import stat
import sys

from .errors import RumpfsError
from .sources import Layer
from .tree import (
    BLK,
    CHR,
    DIR,
    FIFO,
    ID_MAX,
    LNK,
    REG,
    HostData,
    Node,
    Tree,
    TreeError,
    join,
    make_rdev,
    split_path,
)

#: mtree type keyword -> file type bits.
TYPES = {"file": REG, "dir": DIR, "link": LNK, "char": CHR, "block": BLK, "fifo": FIFO,
         "socket": stat.S_IFSOCK}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
#: vis(3) C-style escapes.
VIS_ESCAPES = {"s": " ", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "a": "\a", "v": "\v",
               "f": "\f", "E": "\033", "\\": "\\", "0": "\0", " ": " ", "#": "#", "$": "$"}


def unvis(text: str) -> bytes:
    """Decode a vis(3)-encoded word (octal \\ooo, C-style, \\M- and \\^ forms)."""
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        c = raw[i]
        if c != 0x5C or i + 1 == len(raw):  # not a backslash
            out.append(c)
            i += 1
            continue
        nxt = chr(raw[i + 1])
        octal = raw[i + 1:i + 4]
        if len(octal) == 3 and all(0x30 <= b <= 0x37 for b in octal):
            out.append(int(octal, 8) & 0xFF)
            i += 4
        elif nxt == "M" and raw[i + 2:i + 3] == b"-" and i + 3 < len(raw):
            out.append(raw[i + 3] | 0x80)
            i += 4
        elif nxt == "M" and raw[i + 2:i + 3] == b"^" and i + 3 < len(raw):
            out.append((raw[i + 3] & 0x1F) | 0x80 if raw[i + 3] != 0x3F else 0xFF)
            i += 4
        elif nxt == "^" and i + 2 < len(raw):
            out.append(raw[i + 2] & 0x1F if raw[i + 2] != 0x3F else 0x7F)
            i += 3
        elif nxt in VIS_ESCAPES:
            out += VIS_ESCAPES[nxt].encode()
            i += 2
        else:
            out.append(raw[i + 1])
            i += 2
    return bytes(out)


class MtreeEntry:
    __slots__ = ("path", "keywords", "where")

    def __init__(self, path: bytes, keywords: dict, where: str):
        self.path = path
        self.keywords = keywords
        self.where = where


def parse(path: str) -> list[MtreeEntry]:
    """The entries of a spec, each with its keywords (``/set`` defaults merged)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise RumpfsError(f"{path}: cannot read mtree spec: {e.strerror}") from None
    entries = []
    defaults: dict = {}
    cwd: list[bytes] = []  # the hierarchical layout's current directory
    pending = ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        head, rest = words[0], words[1:]
        if head == "/set":
            defaults.update(_keywords(rest, where))
            continue
        if head == "/unset":
            for key in rest:
                if key == "all":
                    defaults.clear()
                defaults.pop(key, None)
            continue
        if head.startswith("/"):
            raise RumpfsError(f"{where}: unknown special command {head}")
        if head == "..":
            if not cwd:
                raise RumpfsError(f"{where}: '..' above the top of the spec")
            cwd.pop()
            continue
        name = unvis(head)
        keywords = dict(defaults)
        keywords.update(_keywords(rest, where))
        if b"/" in name:  # a full path from the top
            try:
                parts = split_path(name)
            except TreeError as e:
                raise RumpfsError(f"{where}: {e}") from None
            entries.append(MtreeEntry(b"/".join(parts), keywords, where))
            continue
        if name == b"..":
            raise RumpfsError(f"{where}: '..' with keywords")
        if name == b"." and not cwd:
            entries.append(MtreeEntry(b"", keywords, where))
            cwd.append(b"")  # the top: a '..' may close it
            continue
        full = join(b"/".join(p for p in cwd if p), name)
        entries.append(MtreeEntry(full, keywords, where))
        if keywords.get("type") == "dir":
            cwd.append(name)
    return entries


def _keywords(words: list[str], where: str) -> dict:
    out = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep and key not in ("optional", "nochange", "ignore"):
            raise RumpfsError(f"{where}: keyword {word!r} has no value")
        out[key] = value
    return out


class MtreeSpec(Layer):
    """An mtree spec applied as a layer (``--mtree``), optionally keeping
    only what it lists (``--mtree-only``)."""

    FIELDS = ("path", "only")

    def __init__(self, path: str, only: bool = False):
        self.path = path
        self.only = only
        self.inputs = [path]

    def describe(self) -> str:
        return f"mtree {self.path}" + (" (only its entries)" if self.only else "")

    def apply(self, tree: Tree, policy=None) -> None:
        entries = parse(self.path)
        self.mtime_ns = os.stat(self.path).st_mtime_ns
        names = _Names(tree)
        noted = False
        listed = {b""}
        for entry in entries:
            kw = entry.keywords
            if "flags" in kw and kw["flags"] not in ("", "none") and not noted:
                print(f"rumpfs: note: {self.path}: file flags (flags=) are not kept in the image",
                      file=sys.stderr)
                noted = True
            try:
                self._entry(tree, entry, names)
            except TreeError as e:
                raise RumpfsError(f"{entry.where}: {e}") from None
            parts = entry.path.split(b"/") if entry.path else []
            listed.update(b"/".join(parts[:k]) for k in range(len(parts) + 1))
        if self.only:
            _keep_only(tree.root, b"", listed)

    def _entry(self, tree: Tree, entry: MtreeEntry, names: "_Names") -> None:
        kw, where, path = entry.keywords, entry.where, entry.path
        shown = "./" + path.decode("utf-8", "backslashreplace") if path else "."
        type_name = kw.get("type", "file")
        kind = TYPES.get(type_name)
        if kind is None:
            raise RumpfsError(f"{where}: {shown}: unknown type {type_name!r}")
        node = tree.lookup(path)
        if node is None:
            node = self._create(tree, entry, kind, shown)
        elif node.kind != kind:
            raise RumpfsError(f"{where}: {shown}: type {type_name} in the spec, "
                              f"{TYPE_NAMES.get(node.kind, '?')} in the sources "
                              f"(from {node.describe_origin()})")
        if "mode" in kw:
            node.mode = kind | _number(kw["mode"], 8, where, "mode", 0o7777)
        if "uid" in kw:
            node.uid = _number(kw["uid"], 10, where, "uid", ID_MAX)
        elif "uname" in kw:
            node.uid = names.uid(kw["uname"], where)
        if "gid" in kw:
            node.gid = _number(kw["gid"], 10, where, "gid", ID_MAX)
        elif "gname" in kw:
            node.gid = names.gid(kw["gname"], where)
        if "time" in kw:
            node.mtime_ns = node.atime_ns = node.ctime_ns = _time(kw["time"], where)
        if kind == LNK and "link" in kw:
            node.target = unvis(kw["link"])
        if kind in (CHR, BLK) and "device" in kw:
            node.rdev = _device(kw["device"], where)

    def _create(self, tree: Tree, entry: MtreeEntry, kind: int, shown: str) -> Node:
        kw, where = entry.keywords, entry.where
        node = Node(kind | (0o755 if kind == DIR else 0o644), mtime_ns=self.mtime_ns, origin=where)
        if kind == REG:
            contents = kw.get("contents")
            if contents is None:
                raise RumpfsError(f"{where}: {shown}: regular file in the spec is not in the sources "
                                  f"(and has no contents=)")
            location = os.path.join(os.path.dirname(os.path.abspath(self.path)), unvis(contents).decode(
                "utf-8", "surrogateescape"))
            if "\0" in location:
                raise RumpfsError(f"{where}: {shown}: contents= has a NUL byte")
            try:
                st = os.stat(location)
            except OSError as e:
                raise RumpfsError(f"{where}: {shown}: contents {location}: {e.strerror}") from None
            node.data = HostData(os.fsencode(location), st.st_size, st.st_blocks * 512 < st.st_size)
            self.inputs.append(location)
        elif kind == LNK:
            if "link" not in kw:
                raise RumpfsError(f"{where}: {shown}: symlink in the spec has no link=")
            node.target = unvis(kw["link"])
        elif kind in (CHR, BLK) and "device" not in kw:
            raise RumpfsError(f"{where}: {shown}: device in the spec has no device=")
        parts = split_path(entry.path)
        tree.mkdirs(b"/".join(parts[:-1]), Node(DIR | 0o755, mtime_ns=self.mtime_ns, origin=where))
        tree.put(entry.path, node)
        return node


def _keep_only(directory: Node, path: bytes, listed: set) -> None:
    for name in list(directory.children):
        child_path = join(path, name)
        if child_path not in listed:
            del directory.children[name]
        elif directory.children[name].is_dir:
            _keep_only(directory.children[name], child_path, listed)


class _Names:
    """User and group names of the tree's /etc, read when first needed."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self.users: dict | None = None
        self.groups: dict | None = None

    def _table(self, files) -> dict:
        from .etc import read_node
        for name in files:
            node = self.tree.lookup(name)
            if node is not None and node.kind == REG:
                out = {}
                for line in read_node(node, "/" + name).decode("utf-8", "replace").splitlines():
                    fields = line.split(":")
                    if len(fields) >= 3 and fields[2].isdigit() and not line.startswith("#"):
                        out.setdefault(fields[0], int(fields[2]))
                return out
        return {}

    def uid(self, name: str, where: str) -> int:
        if self.users is None:
            self.users = self._table(("etc/passwd", "etc/master.passwd"))
        if name not in self.users:
            raise RumpfsError(f"{where}: uname={name}: no such user in the image's /etc/passwd")
        return self.users[name]

    def gid(self, name: str, where: str) -> int:
        if self.groups is None:
            self.groups = self._table(("etc/group",))
        if name not in self.groups:
            raise RumpfsError(f"{where}: gname={name}: no such group in the image's /etc/group")
        return self.groups[name]


def _number(text: str, base: int, where: str, what: str, limit: int) -> int:
    try:
        value = int(text, base)
    except ValueError:
        raise RumpfsError(f"{where}: {what}={text}: not a number") from None
    if not 0 <= value <= limit:
        raise RumpfsError(f"{where}: {what}={text}: out of range (at most {limit:#o})"
                          if base == 8 else f"{where}: {what}={text}: out of range (at most {limit})")
    return value


def _time(text: str, where: str) -> int:
    """``time=SECONDS.NANOSECONDS`` (mtree writes nanoseconds after the dot)."""
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise RumpfsError(f"{where}: time={text}: not SECONDS.NANOSECONDS")
    return int(whole) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def _device(text: str, where: str) -> int:
    """``device=NUMBER`` (a native dev_t) or ``device=FORMAT,MAJOR,MINOR``."""
    try:
        if "," in text:
            fields = text.split(",")
            if len(fields) != 3:
                raise ValueError
            major, minor = int(fields[1], 0), int(fields[2], 0)
        else:
            return int(text, 0)
    except ValueError:
        raise RumpfsError(f"{where}: device={text}: not NUMBER or FORMAT,MAJOR,MINOR") from None
    try:
        return make_rdev(major, minor)
    except ValueError as e:
        raise RumpfsError(f"{where}: device={text}: {e}") from None
