"""Reading ISO 9660 images: the Rock Ridge view when the image has one,
else plain ISO 9660 names.  Every count, size and offset is checked against
the image before it is used."""

from __future__ import annotations

import os
import stat
import struct

from ...errors import RumpfsError
from ...tree import join
from .. import Entry, ImageReader, file_name, show
from .layout import (
    DIR_RECORD,
    FLAG_DIRECTORY,
    FLAG_MULTI_EXTENT,
    SECTOR,
    STANDARD_ID,
    SYSTEM_AREA_SECTORS,
    VD_PRIMARY,
    VD_TERMINATOR,
)

NS = 1_000_000_000
_CHUNK = 1 << 20
#: Descriptors read before giving up on a terminator.
_MAX_DESCRIPTORS = 64
#: Continuation areas followed per record before calling it a loop.
_MAX_CONTINUATIONS = 64
#: A device number Linux can make (mknod) has a 12-bit major, a 20-bit minor.
LINUX_MAJOR_BITS = 12
LINUX_MINOR_BITS = 20
#: The file types Rock Ridge's PX mode may give (RRIP 4.1.1).
_KINDS = frozenset((stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK,
                    stat.S_IFIFO, stat.S_IFSOCK))


def name_problem(name: bytes) -> str | None:
    """Why ``name`` cannot be one component of a path, or None."""
    if name in (b"", b".", b".."):
        return f"name {show(name)!r} is not a file name"
    if b"/" in name or b"\0" in name:
        return f"name {show(name)!r} holds a '/' or a NUL byte"
    return None


def _record_seconds(b: bytes) -> int:
    import calendar
    year, month, day, hour, minute, second, offset = struct.unpack("<6Bb", b)
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return 0
    return calendar.timegm((1900 + year, month, day, hour, minute, second)) - offset * 15 * 60


class _Rec:
    __slots__ = ("name", "extent", "size", "flags", "date", "susp", "where")


class IsoReader(ImageReader):
    format_name = "iso"

    def __init__(self, f, offset: int = 0, size: int | None = None):
        self.f = f
        self.name = file_name(f)
        self.offset = offset
        self.size = size
        self.sectors = size // SECTOR
        self.problems: list[str] = []
        self._entries = None
        self._extents: dict[bytes, list] = {}
        self._pvd()

    def _read(self, sector: int, length: int, off: int = 0) -> bytes:
        return self.read_exact(sector * SECTOR + off, length, "ISO 9660")

    def _pvd(self) -> None:
        for i in range(_MAX_DESCRIPTORS):
            vd = self._read(SYSTEM_AREA_SECTORS + i, SECTOR)
            if vd[1:6] != STANDARD_ID:
                break
            if vd[0] == VD_PRIMARY:
                self.vd = vd
                self.root = self._parse(vd[156:190], 0)
                self.volume_id = vd[40:72].rstrip(b" ").decode("ascii", "replace")
                self.volume_sectors = struct.unpack_from("<I", vd, 80)[0]
                self.pt_size = struct.unpack_from("<I", vd, 132)[0]
                self.pt_l = struct.unpack_from("<I", vd, 140)[0]
                self.pt_m = struct.unpack_from(">I", vd, 148)[0]
                return
            if vd[0] == VD_TERMINATOR:
                break
        raise RumpfsError(f"{file_name(self.f)}: no ISO 9660 primary volume "
                          "descriptor")

    def _parse(self, raw: bytes, where: int) -> _Rec:
        if len(raw) < DIR_RECORD.size:
            raise RumpfsError(f"{file_name(self.f)}: ISO 9660 directory record at byte {where}: "
                              "too short")
        f = DIR_RECORD.unpack_from(raw)
        length, extent, size, date, flags, name_len = f[0], f[2], f[4], f[6], f[7], f[12]
        if DIR_RECORD.size + name_len > length or length > len(raw):
            raise RumpfsError(f"{file_name(self.f)}: ISO 9660 directory record at byte {where}: "
                              f"name of {name_len} bytes does not fit its length {length}")
        r = _Rec()
        r.name = raw[33:33 + name_len]
        r.extent, r.size, r.flags, r.date, r.where = extent, size, flags, date, where
        start = 33 + name_len + (1 - name_len % 2)
        r.susp = raw[start:length]
        return r

    def _records(self, d: _Rec):
        sectors = -(-d.size // SECTOR)
        for s in range(sectors):
            block = self._read(d.extent + s, SECTOR)
            pos = 0
            while pos < SECTOR:
                length = block[pos]
                if length == 0:
                    break
                yield self._parse(block[pos:pos + length], (d.extent + s) * SECTOR + pos)
                pos += length

    def _susp(self, data: bytes) -> list[tuple[bytes, bytes]]:
        out = []
        hops = 0
        while data:
            pos, ce = 0, None
            while pos + 4 <= len(data):
                sig, length = data[pos:pos + 2], data[pos + 2]
                if length < 4 or pos + length > len(data):
                    break
                body = data[pos + 4:pos + length]
                if sig == b"CE" and len(body) >= 24:
                    ce = struct.unpack_from("<I", body, 0)[0], struct.unpack_from(
                        "<I", body, 8)[0], struct.unpack_from("<I", body, 16)[0]
                elif sig == b"ST":
                    break
                else:
                    out.append((sig, body))
                pos += length
            data = b""
            if ce is not None:
                hops += 1
                if hops > _MAX_CONTINUATIONS:
                    raise RumpfsError(f"{file_name(self.f)}: ISO 9660: continuation areas loop")
                sector, off, length = ce
                data = self._read(sector, length, off)
        return out

    def _entry(self, path: bytes, rec: _Rec, susp) -> tuple[Entry, bytes]:
        mode = (stat.S_IFDIR | 0o555) if rec.flags & FLAG_DIRECTORY else (stat.S_IFREG | 0o444)
        uid = gid = rdev = ino = 0
        nlink = 1
        mtime = _record_seconds(rec.date)
        name, target, parts = b"", None, []
        for sig, body in susp:
            if sig == b"PX" and len(body) >= 32:
                mode, nlink, uid, gid = (struct.unpack_from("<I", body, i)[0] for i in (0, 8, 16, 24))
                if len(body) >= 40:
                    ino = struct.unpack_from("<I", body, 32)[0]
            elif sig == b"NM" and body:
                name += body[1:]
            elif sig == b"TF" and body and body[0] & 0x02 and not body[0] & 0x80:
                start = 1 + (7 if body[0] & 0x01 else 0)
                if len(body) >= start + 7:
                    mtime = _record_seconds(body[start:start + 7])
            elif sig == b"PN" and len(body) >= 16:
                rdev = (struct.unpack_from("<I", body, 0)[0] << 32) | struct.unpack_from(
                    "<I", body, 8)[0]
            elif sig == b"SL" and body:
                parts.append(body[1:])
        if parts:
            target = _sl_target(b"".join(parts))
        size = rec.size if stat.S_ISREG(mode) else len(target) if target is not None else 0
        e = Entry(path, mode, uid, gid, size, mtime * NS, nlink, target, rdev, ino)
        return e, name

    def entries(self):
        if self._entries is None:
            self._entries = list(self._walk())
        return iter(self._entries)

    def _walk(self):
        root_susp = self._susp(self.root.susp) if self.root.susp else []
        first = next(self._records(self.root), None)
        if first is not None:
            root_susp = self._susp(first.susp)
        self.rock_ridge = any(sig == b"SP" for sig, _ in root_susp)
        root, _ = self._entry(b"", self.root, root_susp)
        if not stat.S_ISDIR(root.mode):
            self.problems.append(f"/: the root directory's Rock Ridge mode {root.mode:#o} is "
                                 "not a directory's")
        yield root
        stack = [(b"", self.root, 0)]
        seen_dirs = {self.root.extent}
        self.dir_extents = seen_dirs
        first_of: dict[int, bytes] = {}
        while stack:
            path, d, depth = stack.pop()
            subdirs = []
            pending = None
            names: set[bytes] = set()
            for i, rec in enumerate(self._records(d)):
                if i < 2:
                    continue
                if pending is not None:
                    pending[1].append(rec)
                    if not rec.flags & FLAG_MULTI_EXTENT:
                        self._finish(pending)
                        pending = None
                    continue
                susp = self._susp(rec.susp) if self.rock_ridge else []
                entry, rr_name = self._entry(b"", rec, susp)
                name = rr_name or _plain_name(rec.name)
                why = name_problem(name)
                if why is not None:
                    # It cannot be a path: ls, cat and extract would name another file.
                    raise self.error(f"ISO 9660 directory record at byte {rec.where} in "
                                     f"/{show(path)}: {why}")
                entry.path = join(path, name)
                self._entry_problems(entry, rec, name in names)
                names.add(name)
                if stat.S_ISDIR(entry.mode) or rec.flags & FLAG_DIRECTORY:
                    if rec.extent in seen_dirs:
                        self.problems.append(f"/{entry.path.decode(errors='replace')}: directory "
                                             "extent used twice")
                        continue
                    seen_dirs.add(rec.extent)
                    subdirs.append((entry.path, rec, depth + 1))
                elif stat.S_ISREG(entry.mode):
                    if rec.flags & FLAG_MULTI_EXTENT:
                        pending = (entry, [rec])
                    else:
                        self._finish((entry, [rec]))
                    if entry.ino and entry.nlink > 1:
                        entry.link_of = first_of.get(entry.ino)
                        first_of.setdefault(entry.ino, entry.path)
                yield entry
            stack.extend(reversed(subdirs))

    def _entry_problems(self, entry: Entry, rec: _Rec, duplicate: bool) -> None:
        """What would keep ``entry`` from being extracted as the image means it."""
        where = f"/{show(entry.path)}"
        kind = stat.S_IFMT(entry.mode)
        if duplicate:
            self.problems.append(f"{where}: a second entry of that name in its directory")
        if kind not in _KINDS:
            self.problems.append(f"{where}: unknown file type {kind:#o} in Rock Ridge mode "
                                 f"{entry.mode:#o}")
        elif (kind == stat.S_IFDIR) != bool(rec.flags & FLAG_DIRECTORY):
            self.problems.append(f"{where}: Rock Ridge mode {entry.mode:#o} and the directory "
                                 f"flag ({rec.flags:#x}) disagree")
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            major, minor = os.major(entry.rdev), os.minor(entry.rdev)
            if major >> LINUX_MAJOR_BITS or minor >> LINUX_MINOR_BITS:
                self.problems.append(f"{where}: device number {major}, {minor} in PN is beyond "
                                     f"what Linux holds (major < {1 << LINUX_MAJOR_BITS}, "
                                     f"minor < {1 << LINUX_MINOR_BITS})")
        if kind == stat.S_IFLNK and (not entry.target or b"\0" in entry.target):
            self.problems.append(f"{where}: symlink target is empty or holds a NUL byte")

    def _finish(self, pending) -> None:
        entry, recs = pending
        entry.size = sum(r.size for r in recs)
        for r in recs:
            if r.size and r.extent * SECTOR + r.size > self.size:
                self.problems.append(f"/{entry.path.decode(errors='replace')}: extent at sector "
                                     f"{r.extent} ends past the image")
        self._extents[entry.path] = [(r.extent, r.size) for r in recs]

    def read(self, entry: Entry):
        for extent, size in self._extents.get(entry.path, []):
            done = 0
            while done < size:
                n = min(_CHUNK, size - done)
                yield self._read(extent, n, done)
                done += n

    def info(self) -> dict:
        list(self.entries())
        return {"format": "iso", "volume_id": self.volume_id,
                "sectors": self.volume_sectors, "rock_ridge": self.rock_ridge,
                "image_bytes": self.volume_sectors * SECTOR}

    def _problem(self, error: RumpfsError) -> str:
        """An error as a problem of check, which names the file itself."""
        message, head = str(error), f"{self.name}: "
        return message[len(head):] if message.startswith(head) else message

    def check(self) -> list[str]:
        """Directory records and extents inside the image, the path table
        naming the same directories as the tree."""
        problems = []
        try:
            list(self.entries())
        except RumpfsError as e:
            return [self._problem(e)]
        problems += self.problems
        if self.volume_sectors * SECTOR > self.size:
            problems.append(f"volume of {self.volume_sectors} sectors is larger than the image")
        try:
            little = self._path_table(self.pt_l, "<")
            big = self._path_table(self.pt_m, ">")
        except RumpfsError as e:
            return problems + [self._problem(e)]
        if little != big:
            problems.append("the L and M path tables differ")
        listed = [extent for extent, _parent in little]
        if sorted(listed) != sorted(self.dir_extents):
            problems.append(f"path table lists {len(listed)} directories at sectors that are "
                            f"not those of the tree's {len(self.dir_extents)} directories")
        for number, (_extent, parent) in enumerate(little, 1):
            if not 1 <= parent <= number:
                problems.append(f"path table record {number}: parent {parent} does not come "
                                "before it")
                break
        return problems

    def _path_table(self, sector: int, order: str) -> list[tuple[int, int]]:
        """(extent, parent number) of each path table record."""
        table = self._read(sector, self.pt_size)
        fmt = struct.Struct(order + "BBIH")
        out, pos = [], 0
        while pos + fmt.size <= len(table):
            name_len, _ext, extent, parent = fmt.unpack_from(table, pos)
            if name_len == 0:
                raise RumpfsError(f"{file_name(self.f)}: path table record {len(out) + 1}: empty name")
            out.append((extent, parent))
            pos += fmt.size + name_len + name_len % 2
        return out


def _plain_name(ident: bytes) -> bytes:
    name = ident.split(b";")[0]
    return name[:-1] if name.endswith(b".") else name


def _sl_target(data: bytes) -> bytes:
    out, pos, current, first = [], 0, b"", True
    while pos + 2 <= len(data):
        flags, length = data[pos], data[pos + 1]
        content = data[pos + 2:pos + 2 + length]
        pos += 2 + length
        if flags & 0x08:
            out.append(b"")
            continue
        if flags & 0x02:
            content = b"."
        elif flags & 0x04:
            content = b".."
        current += content
        if not flags & 0x01:
            out.append(current)
            current = b""
        first = False
    if out == [b""]:
        return b"/"
    del first
    return b"/".join(out)
