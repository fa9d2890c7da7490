"""Paths inside an image: the PATH arguments of ls/cat/extract, subtrees, and
symlinks resolved within the image's root (never on the host)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from .errors import RumpfsError
from .formats import Entry, ImageReader
from .tree import display

#: Symlinks followed in one lookup before giving up, as Linux (MAXSYMLINKS)
#: and NetBSD do.
MAX_SYMLINKS = 40


def components(path: bytes | str) -> list[bytes]:
    """The names of a path, without empty and ``.`` components (``..`` stays)."""
    if isinstance(path, str):
        path = os.fsencode(path)
    return [c for c in path.split(b"/") if c not in (b"", b".")]


def normalize(path: bytes | str) -> bytes:
    """A path as readers name entries: relative to the root, ``b""`` for it."""
    return b"/".join(components(path))


class Selection:
    """The subtrees named by PATH arguments (none: the whole image)."""

    def __init__(self, paths: Iterable[bytes | str] = ()):
        self.paths = [normalize(p) for p in paths]

    def __bool__(self) -> bool:
        return bool(self.paths)

    def matches(self, path: bytes) -> bool:
        if not self.paths:
            return True
        path = normalize(path)
        return any(p == b"" or path == p or path.startswith(p + b"/") for p in self.paths)

    def check(self, reader: ImageReader) -> None:
        """One-line error for the first PATH that names nothing in the image,
        before anything is listed or written."""
        missing = [p for p in self.paths if p]
        if not missing:
            return
        left = set(missing)
        for e in reader.entries():
            left.discard(normalize(e.path))
            if not left:
                return
        first = next(p for p in missing if p in left)
        raise RumpfsError(f"{display(first)}: not in the image")


def resolve(reader: ImageReader, path: bytes | str) -> Entry:
    """The entry ``path`` names, following symlinks (in every component, the
    last one included) inside the image: an absolute target starts again at
    the image's root, ``..`` never climbs above it (that is an error, like a
    target that is missing or a loop of more than MAX_SYMLINKS links)."""
    index: dict[bytes, Entry] = {}
    implied: set[bytes] = set()  # parents an archive holds no entry for
    for e in reader.entries():
        key = normalize(e.path)
        index[key] = e
        while b"/" in key:
            key = key.rsplit(b"/", 1)[0]
            if key in implied:
                break
            implied.add(key)
    todo = components(path)
    done: list[bytes] = []
    followed = 0
    last_link = None
    while todo:
        name = todo.pop(0)
        if name == b"..":
            if not done:
                where = f"symlink {display(last_link)}" if last_link is not None else "the path"
                raise RumpfsError(f"{display(normalize(path))}: {where} leaves the image")
            done.pop()
            continue
        here = b"/".join(done + [name])
        e = index.get(here)
        if e is None and here in implied:
            e = Entry(path=here, mode=stat.S_IFDIR | 0o755)
            index[here] = e
        if e is None:
            if last_link is None:
                raise RumpfsError(f"{display(normalize(path))}: not in the image")
            raise RumpfsError(f"{display(normalize(path))}: symlink target {display(here)} "
                              f"is not in the image")
        if e.kind == stat.S_IFLNK:
            followed += 1
            if followed > MAX_SYMLINKS:
                raise RumpfsError(f"{display(normalize(path))}: too many levels of symbolic links "
                                  f"(more than {MAX_SYMLINKS})")
            target = e.target or b""
            if target.startswith(b"/"):
                done = []
            todo = components(target) + todo
            last_link = here
            continue
        if todo and e.kind != stat.S_IFDIR:
            raise RumpfsError(f"{display(normalize(path))}: {display(here)} is not a directory")
        done.append(name)
    found = index.get(b"/".join(done))
    if found is None:  # an image without a root entry (a cpio may have none)
        raise RumpfsError(f"{display(normalize(path))}: not in the image")
    return found


__all__ = ["MAX_SYMLINKS", "Selection", "components", "normalize", "resolve"]
