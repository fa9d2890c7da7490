"""Reading cpio newc / crc archives (ours and anyone's), on the same layout."""

from __future__ import annotations

import os
import stat
import string

from ...tree import PATH_MAX, make_rdev
from .. import Entry, ImageReader, file_name, show
from .layout import ALIGNMENT, CRC_MAGIC, HEADER_SIZE, MAGIC_SIZE, MAGICS, TRAILER_NAME, pad, parse_header
from .writer import byte_sum

_CHUNK = 1 << 20
#: The only bytes of a header's numeric fields (cpio(5): 8 hexadecimal digits each).
_HEX_DIGITS = string.hexdigits.encode()
#: Longest member name read (Linux PATH_MAX, the kernel's initramfs limit).
MAX_NAME = PATH_MAX


_show = show


class _Member:
    __slots__ = ("entry", "data_offset", "size", "check", "header_offset", "name",
                 "own_size")


class CpioReader(ImageReader):
    """Index of the members of an archive at ``offset`` in ``f``."""

    format_name = "cpio"
    #: A decompressing stream (rumpfs.inspect) measures itself only on
    #: demand: the index is then made in the one pass that reads it.
    _stream = None

    def __init__(self, f, offset: int = 0, size: int | None = None):
        self.f = f
        self.name = file_name(f)
        self.offset = offset
        if hasattr(f, "holds"):
            self._stream = f
        if self._stream is not None:
            size = self._stream.UNKNOWN_SIZE - offset
        self.size = os.fstat(f.fileno()).st_size - offset if size is None else size
        self.members: list[_Member] = []
        self.variant = None
        self.trailer_at = None
        self._scan()
        if self._stream is not None:
            self.size = self._stream.measure() - offset

    def _holds(self, end: int) -> bool:
        """Whether the archive has ``end`` bytes."""
        if self._stream is not None:
            return self._stream.holds(self.offset + end)
        return end <= self.size

    def _archive_size(self) -> int:
        if self._stream is not None:
            return self._stream.measure() - self.offset
        return self.size

    def _read(self, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos``, short at the end of the archive (never more
        than the archive holds is asked of the file)."""
        n = min(n, self.size - pos)
        if n <= 0 or pos < 0:
            return b""
        self.f.seek(self.offset + pos)
        return self.f.read(n)

    def _scan(self) -> None:
        pos = 0
        first_of: dict[tuple, _Member] = {}
        while True:
            head = self._read(pos, HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                raise self.error(f"truncated cpio archive: header at offset {pos} is cut short "
                                 f"(no {TRAILER_NAME.decode()} member)")
            magic = head[:MAGIC_SIZE]
            if magic not in MAGICS.values():
                raise self.error(f"not a cpio newc/crc header at offset {pos} (magic {magic!r})")
            if head[MAGIC_SIZE:].translate(None, _HEX_DIGITS):
                # int(x, 16) would also take signs, spaces and 0x.
                raise self.error(f"corrupt cpio header at offset {pos}: not hexadecimal")
            h = parse_header(head)
            self.variant = self.variant or ("crc" if magic == CRC_MAGIC else "newc")
            namesize = h["c_namesize"]
            if not 0 < namesize <= MAX_NAME + 1:
                raise self.error(f"cpio header at offset {pos}: c_namesize {namesize} out of "
                                 f"range 1..{MAX_NAME + 1}")
            name = self._read(pos + HEADER_SIZE, namesize)
            if len(name) < namesize:
                raise self.error(f"truncated cpio archive: the name at offset "
                                 f"{pos + HEADER_SIZE} needs {namesize} bytes, the archive "
                                 f"has {self._archive_size()}")
            if name[-1:] != b"\0":
                raise self.error(f"corrupt cpio name at offset {pos + HEADER_SIZE}: "
                                 f"not NUL-terminated")
            name = name[:-1]
            if b"\0" in name:
                raise self.error(f"corrupt cpio name at offset {pos + HEADER_SIZE}: "
                                 f"'{_show(name)}' has a NUL byte inside")
            data_offset = pos + HEADER_SIZE + namesize
            data_offset += pad(data_offset)
            filesize = h["c_filesize"]
            if name == TRAILER_NAME:
                self.trailer_at = pos
                break
            if not self._holds(data_offset + filesize):
                raise self.error(f"truncated cpio archive: {_show(name)} "
                                 f"needs {filesize} bytes at offset {data_offset}, "
                                 f"the archive has {self._archive_size()}")
            mode = h["c_mode"]
            m = _Member()
            m.header_offset = pos
            m.data_offset = data_offset
            m.size = filesize
            m.check = h["c_check"]
            path = name
            while path.startswith(b"./"):
                path = path[2:]
            path = path.strip(b"/")
            if path == b".":
                path = b""
            target = None
            if stat.S_ISLNK(mode):
                if filesize > MAX_NAME:
                    raise self.error(f"{_show(name)}: symlink target of {filesize} bytes "
                                     f"(at most {MAX_NAME})")
                target = self._read(data_offset, filesize)
                if b"\0" in target:
                    raise self.error(f"{_show(name)}: symlink target '{_show(target)}' "
                                     f"has a NUL byte")
            entry = Entry(path=path, mode=mode, uid=h["c_uid"], gid=h["c_gid"], size=filesize,
                          mtime_ns=h["c_mtime"] * 1_000_000_000, nlink=h["c_nlink"],
                          target=target, rdev=self._makedev(name, h),
                          ino=h["c_ino"])
            m.name = name
            m.own_size = filesize
            if h["c_nlink"] > 1 and not stat.S_ISDIR(mode):
                key = (h["c_ino"], h["c_devmajor"], h["c_devminor"])
                first = first_of.get(key)
                if first is None:
                    first_of[key] = m
                else:
                    entry.link_of = first.entry.path
                    # The data may sit on any of the names; every name shows it.
                    if filesize and not first.size:
                        first.size = filesize
                        first.data_offset = data_offset
                        first.entry.size = filesize
                    m.data_offset, m.size = first.data_offset, first.size
                    entry.size = first.size
            m.entry = entry
            self.members.append(m)
            pos = data_offset + filesize
            pos += pad(pos)
        self._by_entry = {id(m.entry): m for m in self.members}

    def entries(self):
        for m in self.members:
            yield m.entry

    def _member(self, entry: Entry) -> _Member:
        m = self._by_entry.get(id(entry))
        if m is not None:
            return m
        for m in self.members:
            if m.entry.path == entry.path:
                return m
        raise self.error(f"/{_show(entry.path)}: not in the archive")

    def read(self, entry: Entry):
        m = self._member(entry)
        left, pos = m.size, m.data_offset
        while left:
            chunk = self._read(pos, min(left, _CHUNK))
            if not chunk:
                raise self.error(f"truncated cpio archive at offset {pos}")
            pos += len(chunk)
            left -= len(chunk)
            yield chunk

    def info(self) -> dict:
        return {
            "format": "cpio",
            "variant": self.variant,
            "entries": len(self.members),
            "data_bytes": sum(m.size for m in self.members if m.entry.link_of is None
                              and stat.S_ISREG(m.entry.mode)),
            "trailer_offset": self.trailer_at,
        }

    def check(self) -> list[str]:
        """Structure, then checksums: what ``ls``, ``cat`` and ``extract``
        rely on.  (Headers, name termination, sizes within the archive and
        the trailer are checked while the archive is indexed.)"""
        problems = []
        kinds: dict[bytes, int] = {}
        groups: dict[int, list] = {}
        for m in self.members:
            e = m.entry
            where = f"/{_show(e.path)}"
            kind = stat.S_IFMT(e.mode)
            if kind not in _KINDS:
                problems.append(f"{where}: unknown file type {kind:#o} in c_mode {e.mode:#o}")
            parts = e.path.split(b"/")
            if b".." in parts or (e.path and b"" in parts):
                problems.append(f"{where}: name {m.name!r} has '..' or empty components")
            if m.header_offset % ALIGNMENT:
                problems.append(f"{where}: header at offset {m.header_offset} is not "
                                f"{ALIGNMENT}-byte aligned")
            if e.mode > _MODE_MAX:
                problems.append(f"{where}: c_mode {e.mode:#o} has bits beyond the file type "
                                f"and permissions")
            if kind in (stat.S_IFCHR, stat.S_IFBLK):
                major, minor = os.major(e.rdev), os.minor(e.rdev)
                if major >> LINUX_MAJOR_BITS or minor >> LINUX_MINOR_BITS:
                    problems.append(f"{where}: device number {major}, {minor} is beyond what "
                                    f"Linux holds (major < {1 << LINUX_MAJOR_BITS}, "
                                    f"minor < {1 << LINUX_MINOR_BITS})")
            if kind not in (stat.S_IFREG, stat.S_IFLNK) and m.size:
                problems.append(f"{where}: {_KINDS.get(kind, 'entry')} with c_filesize "
                                f"{m.size} (expected 0)")
            if kind == stat.S_IFLNK and not e.target:
                problems.append(f"{where}: symlink with an empty target")
            if not e.path and kind != stat.S_IFDIR:
                problems.append(f"/: the root member {m.name!r} is a "
                                f"{_KINDS.get(kind, 'entry')}, not a directory")
            if e.path in kinds:
                problems.append(f"{where}: duplicate member")
            elif e.path:
                parent = e.path.rpartition(b"/")[0]
                pkind = kinds.get(parent) if parent else stat.S_IFDIR
                if pkind is None:
                    problems.append(f"{where}: its directory /{_show(parent)} is not an "
                                    f"earlier member")
                elif pkind != stat.S_IFDIR:
                    problems.append(f"{where}: its parent /{_show(parent)} is not a directory")
            kinds.setdefault(e.path, kind)
            if e.nlink > 1 and kind != stat.S_IFDIR:
                groups.setdefault(m.header_offset if e.link_of is None else
                                  self._member_named(e.link_of).header_offset, []).append(m)
            if self.variant == "crc" and kind == stat.S_IFREG and m.size and e.link_of is None:
                total = 0
                for chunk in self.read(e):
                    total += byte_sum(chunk)
                if total & 0xFFFFFFFF != m.check:
                    problems.append(f"{where}: checksum {total & 0xFFFFFFFF:08X} does not match "
                                    f"header {m.check:08X}")
        for group in groups.values():
            first = group[0].entry
            for m in group[1:]:
                if m.entry.mode != first.mode:
                    problems.append(f"/{_show(m.entry.path)}: hard link to /{_show(first.path)} "
                                    f"with another mode ({m.entry.mode:#o}, {first.mode:#o})")
            with_data = [m for m in group if m.own_size]
            if len(with_data) > 1:
                problems.append(f"/{_show(first.path)}: {len(with_data)} names of one hard-linked "
                                f"file carry data (at most one may)")
        return problems

    def _makedev(self, name: bytes, h: dict) -> int:
        try:
            return make_rdev(h["c_rdevmajor"], h["c_rdevminor"])
        except ValueError as e:
            raise self.error(f"{_show(name)}: {e}") from None

    def _member_named(self, path: bytes) -> _Member:
        for m in self.members:
            if m.entry.path == path:
                return m
        raise self.error(f"/{_show(path)}: not in the archive")


#: c_mode holds st_mode: file type and permission bits, nothing above.
_MODE_MAX = 0o177777
#: The Linux kernel's dev_t (MINORBITS in include/linux/kdev_t.h): what an
#: initramfs device can be.
LINUX_MAJOR_BITS = 12
LINUX_MINOR_BITS = 20

_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
          stat.S_IFCHR: "character device", stat.S_IFBLK: "block device", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket"}


def probe(f, offset: int, size: int) -> bool:
    if size < MAGIC_SIZE:
        return False
    f.seek(offset)
    return f.read(MAGIC_SIZE) in MAGICS.values()


__all__ = ["CpioReader", "probe"]
