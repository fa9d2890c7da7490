"""Reading cpio newc / crc archives (ours and anyone's), on the same layout."""

from __future__ import annotations

import os
import stat

from ...errors import RumpfsError
from .. import Entry, ImageReader
from .layout import CRC_MAGIC, HEADER_SIZE, MAGIC_SIZE, MAGICS, TRAILER_NAME, pad, parse_header
from .writer import byte_sum

_CHUNK = 1 << 20


class _Member:
    __slots__ = ("entry", "data_offset", "size", "check", "header_offset")


class CpioReader(ImageReader):
    """Index of the members of an archive at ``offset`` in ``f``."""

    format_name = "cpio"

    def __init__(self, f, offset: int = 0, size: int | None = None):
        self.f = f
        self.offset = offset
        self.size = os.fstat(f.fileno()).st_size - offset if size is None else size
        self.members: list[_Member] = []
        self.variant = None
        self.trailer_at = None
        self._scan()

    def _read(self, pos: int, n: int) -> bytes:
        self.f.seek(self.offset + pos)
        return self.f.read(n)

    def _scan(self) -> None:
        pos = 0
        first_of: dict[tuple, _Member] = {}
        while True:
            head = self._read(pos, HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                raise RumpfsError(f"truncated cpio archive: header at offset {pos} is cut short "
                                  f"(no {TRAILER_NAME.decode()} member)")
            magic = head[:MAGIC_SIZE]
            if magic not in MAGICS.values():
                raise RumpfsError(f"not a cpio newc/crc header at offset {pos} (magic {magic!r})")
            try:
                h = parse_header(head)
            except ValueError:
                raise RumpfsError(f"corrupt cpio header at offset {pos}: not hexadecimal") from None
            self.variant = self.variant or ("crc" if magic == CRC_MAGIC else "newc")
            namesize = h["c_namesize"]
            name = self._read(pos + HEADER_SIZE, namesize)
            if len(name) < namesize or not namesize or name[-1:] != b"\0":
                raise RumpfsError(f"truncated or corrupt cpio name at offset {pos + HEADER_SIZE}")
            name = name[:-1]
            data_offset = pos + HEADER_SIZE + namesize
            data_offset += pad(data_offset)
            filesize = h["c_filesize"]
            if name == TRAILER_NAME:
                self.trailer_at = pos
                break
            if data_offset + filesize > self.size:
                raise RumpfsError(f"truncated cpio archive: {name.decode('utf-8', 'replace')} "
                                  f"needs {filesize} bytes at offset {data_offset}, "
                                  f"the archive has {self.size}")
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
                target = self._read(data_offset, filesize)
            entry = Entry(path=path, mode=mode, uid=h["c_uid"], gid=h["c_gid"], size=filesize,
                          mtime_ns=h["c_mtime"] * 1_000_000_000, nlink=h["c_nlink"],
                          target=target, rdev=os.makedev(h["c_rdevmajor"], h["c_rdevminor"]),
                          ino=h["c_ino"])
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
        raise RumpfsError(f"{entry.path!r}: not in the archive")

    def read(self, entry: Entry):
        m = self._member(entry)
        left, pos = m.size, m.data_offset
        while left:
            chunk = self._read(pos, min(left, _CHUNK))
            if not chunk:
                raise RumpfsError(f"truncated cpio archive at offset {pos}")
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
        problems = []
        seen = set()
        for m in self.members:
            e = m.entry
            if e.path in seen:
                problems.append(f"/{e.path.decode('utf-8', 'replace')}: duplicate member")
            seen.add(e.path)
            if self.variant == "crc" and stat.S_ISREG(e.mode) and m.size and e.link_of is None:
                total = 0
                for chunk in self.read(e):
                    total += byte_sum(chunk)
                if total & 0xFFFFFFFF != m.check:
                    problems.append(f"/{e.path.decode('utf-8', 'replace')}: checksum "
                                    f"{total & 0xFFFFFFFF:08X} does not match header {m.check:08X}")
        return problems


def probe(f, offset: int, size: int) -> bool:
    f.seek(offset)
    return f.read(MAGIC_SIZE) in MAGICS.values()


__all__ = ["CpioReader", "probe"]
