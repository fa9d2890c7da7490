"""Reading FAT12/16/32 images (long names preferred over short ones), and
checking them as fsck.fat does: FAT chains in range and ending, no cluster
in two chains, chain lengths matching file sizes, no lost clusters.
Every count, size and offset is checked before it is used."""

from __future__ import annotations

import calendar
import stat
import struct

from ...errors import RumpfsError
from ...tree import join
from .. import Entry, ImageReader, show
from .layout import (
    ATTR_DIRECTORY,
    ATTR_LONG_NAME,
    ATTR_READ_ONLY,
    ATTR_VOLUME_ID,
    BPB,
    DIR_ENTRY,
    DIR_ENTRY_SIZE,
    FIRST_CLUSTER,
    LFN_ENTRY,
    MAX_CLUSTERS,
    NT_LOWER_BASE,
    NT_LOWER_EXT,
    SECTOR,
)

NS = 1_000_000_000
_CHUNK = 1 << 20
#: BS_jmpBoot .. BPB_TotSec32, what every FAT type's boot sector starts with.
_BPB = BPB
_DELETED = 0xE5
_VALID_SECTOR_SIZES = (512, 1024, 2048, 4096)


def looks_like_fat(boot: bytes) -> bool:
    f = _BPB.unpack_from(boot)
    bps, spc, reserved, nfats = f[2], f[3], f[4], f[5]
    return (bps in _VALID_SECTOR_SIZES and spc and spc & (spc - 1) == 0 and reserved >= 1
            and nfats >= 1 and boot[0] in (0xEB, 0xE9))


def _date_time(date: int, tm: int) -> int:
    year, month, day = 1980 + (date >> 9), (date >> 5) & 0xF, date & 0x1F
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return 0
    return calendar.timegm((year, month, day, tm >> 11, (tm >> 5) & 0x3F, (tm & 0x1F) * 2))


class FatReader(ImageReader):
    format_name = "fat"

    def __init__(self, f, offset: int = 0, size: int | None = None):
        self.f = f
        self.offset = offset
        self.size = size
        self.name = getattr(f, "name", "image")
        boot = self._read(0, SECTOR)
        if not looks_like_fat(boot):
            raise RumpfsError(f"{self.name}: not a FAT boot sector")
        (_, _, self.bps, self.spc, self.reserved, self.nfats, self.root_entries, tot16, _,
         fat16, _, _, _, tot32) = _BPB.unpack_from(boot)
        self.total = tot16 or tot32
        fat_sectors = fat16 or struct.unpack_from("<I", boot, 36)[0]
        self.fat_sectors = fat_sectors
        root_sectors = -(-self.root_entries * DIR_ENTRY_SIZE // self.bps)
        self.root_start = self.reserved + self.nfats * fat_sectors
        self.data_start = self.root_start + root_sectors
        if self.total * self.bps > size or self.data_start >= self.total:
            raise RumpfsError(f"{self.name}: FAT image of {self.total} sectors does not fit "
                              f"the {size}-byte file")
        self.clusters = (self.total - self.data_start) // self.spc
        self.fat = 12 if self.clusters <= MAX_CLUSTERS[12] else 16 if \
            self.clusters <= MAX_CLUSTERS[16] else 32
        self.root_cluster = struct.unpack_from("<I", boot, 44)[0] if self.fat == 32 else 0
        self.label = boot[71 if self.fat == 32 else 43:][:11].rstrip(b" ").decode(
            "ascii", "replace")
        self.cluster_bytes = self.spc * self.bps
        self._table = self._load_fat()
        self._entries = None
        self._chains: dict[bytes, tuple[int, int]] = {}
        self.problems: list[str] = []

    def _read(self, pos: int, length: int) -> bytes:
        return self.read_exact(pos, length, "FAT")

    def _load_fat(self) -> list[int]:
        raw = self._read(self.reserved * self.bps, self.fat_sectors * self.bps)
        count = self.clusters + FIRST_CLUSTER
        if self.fat == 32:
            need = count * 4
            if len(raw) < need:
                raise RumpfsError(f"{self.name}: FAT too small for {self.clusters} clusters")
            return [v & 0x0FFFFFFF for v in struct.unpack_from(f"<{count}I", raw)]
        if self.fat == 16:
            if len(raw) < count * 2:
                raise RumpfsError(f"{self.name}: FAT too small for {self.clusters} clusters")
            return list(struct.unpack_from(f"<{count}H", raw))
        if len(raw) < (count * 3 + 1) // 2:
            raise RumpfsError(f"{self.name}: FAT too small for {self.clusters} clusters")
        out = []
        for n in range(count):
            i = n * 3 // 2
            v = raw[i] | (raw[i + 1] << 8)
            out.append(v >> 4 if n % 2 else v & 0xFFF)
        return out

    def _is_end(self, v: int) -> bool:
        return v >= {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}[self.fat]

    def chain(self, first: int) -> list[int]:
        out, seen, c = [], set(), first
        while True:
            if not FIRST_CLUSTER <= c < self.clusters + FIRST_CLUSTER:
                raise RumpfsError(f"{self.name}: cluster {c} out of range in a FAT chain")
            if c in seen:
                raise RumpfsError(f"{self.name}: FAT chain from cluster {first} loops")
            seen.add(c)
            out.append(c)
            v = self._table[c]
            if self._is_end(v):
                return out
            c = v

    def _cluster_pos(self, c: int) -> int:
        return (self.data_start + (c - FIRST_CLUSTER) * self.spc) * self.bps

    def _dir_data(self, first: int) -> bytes:
        if first == 0:
            if self.fat == 32:
                first = self.root_cluster
            else:
                return self._read(self.root_start * self.bps, self.root_entries * DIR_ENTRY_SIZE)
        return b"".join(self._read(self._cluster_pos(c), self.cluster_bytes)
                        for c in self.chain(first))

    def _dir(self, first: int):
        data = self._dir_data(first)
        lfn: list[tuple[int, bytes]] = []
        for pos in range(0, len(data) - DIR_ENTRY_SIZE + 1, DIR_ENTRY_SIZE):
            raw = data[pos:pos + DIR_ENTRY_SIZE]
            if raw[0] == 0:
                return
            if raw[0] == _DELETED:
                lfn = []
                continue
            if raw[11] & 0x3F == ATTR_LONG_NAME:
                f = LFN_ENTRY.unpack(raw)
                lfn.append((f[0] & 0x1F, f[1] + f[5] + f[7]))
                continue
            f = DIR_ENTRY.unpack(raw)
            if f[1] & ATTR_VOLUME_ID or raw[:11] in (b".          ", b"..         "):
                lfn = []
                continue
            if lfn:
                units = b"".join(part for _, part in sorted(lfn))
                end = len(units)
                for i in range(0, len(units), 2):
                    if units[i:i + 2] == b"\0\0":
                        end = i
                        break
                name = units[:end].decode("utf-16-le", "replace").encode("utf-8")
            else:
                base, ext = raw[:8].rstrip(b" "), raw[8:11].rstrip(b" ")
                # Windows NT's case flags: an all-lower-case base or extension.
                if f[2] & NT_LOWER_BASE:
                    base = base.lower()
                if f[2] & NT_LOWER_EXT:
                    ext = ext.lower()
                name = base + (b"." + ext if ext else b"")
            lfn = []
            yield name, f

    def entries(self):
        if self._entries is None:
            self._entries = list(self._walk())
        return iter(self._entries)

    def _walk(self):
        yield Entry(b"", stat.S_IFDIR | 0o755, nlink=2)
        stack = [(b"", 0, 0)]
        while stack:
            path, first, depth = stack.pop()
            if depth > 1000:
                raise RumpfsError(f"{self.name}: directories nested too deep (a loop?)")
            subdirs = []
            names: set[bytes] = set()
            for name, f in self._dir(first):
                if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
                    # It cannot be a path: ls, cat and extract would name another file.
                    raise self.error(f"/{show(path)}: directory entry {show(name)!r} is not "
                                     "a file name")
                folded = name.upper()
                if folded in names:
                    self.problems.append(f"/{show(join(path, name))}: a second entry of that "
                                         "name (FAT names ignore case) in its directory")
                names.add(folded)
                attr, size = f[1], f[11]
                cluster = (f[7] << 16) | f[10]
                mtime = _date_time(f[9], f[8]) * NS
                p = join(path, name)
                if attr & ATTR_DIRECTORY:
                    yield Entry(p, stat.S_IFDIR | 0o755, size=0, mtime_ns=mtime, nlink=2)
                    if cluster:
                        subdirs.append((p, cluster, depth + 1))
                    continue
                perm = 0o444 if attr & ATTR_READ_ONLY else 0o644
                self._chains[p] = (cluster, size)
                yield Entry(p, stat.S_IFREG | perm, size=size, mtime_ns=mtime)
            stack.extend(reversed(subdirs))

    def read(self, entry: Entry):
        first, size = self._chains.get(entry.path, (0, 0))
        if not size:
            return
        left = size
        for c in self.chain(first):
            n = min(self.cluster_bytes, left)
            yield self._read(self._cluster_pos(c), n)
            left -= n
            if not left:
                return
        raise RumpfsError(f"{self.name}: /{entry.path.decode(errors='replace')}: FAT chain "
                          f"shorter than the file's {size} bytes")

    def info(self) -> dict:
        return {"format": "fat", "fat_type": f"FAT{self.fat}", "label": self.label,
                "clusters": self.clusters, "cluster_bytes": self.cluster_bytes,
                "image_bytes": self.total * self.bps}

    def _problem(self, error: RumpfsError) -> str:
        """An error as a problem of check, which names the file itself."""
        message, head = str(error), f"{self.name}: "
        return message[len(head):] if message.startswith(head) else message

    def check(self) -> list[str]:
        problems = []
        owner: dict[int, bytes] = {}

        def claim(path: bytes, chain: list[int]) -> None:
            for c in chain:
                if c in owner:
                    problems.append(f"/{path.decode(errors='replace')}: cluster {c} also in "
                                    f"/{owner[c].decode(errors='replace')}")
                owner[c] = path
        try:
            entries = list(self.entries())
            problems += self.problems
            if self.fat == 32:
                claim(b"", self.chain(self.root_cluster))
            for e in entries:
                if stat.S_ISDIR(e.mode) and e.path:
                    continue
                first, size = self._chains.get(e.path, (0, 0))
                if first:
                    chain = self.chain(first)
                    want = -(-size // self.cluster_bytes)
                    if len(chain) != want:
                        problems.append(f"/{e.path.decode(errors='replace')}: {len(chain)} "
                                        f"clusters for {size} bytes (want {want})")
                    claim(e.path, chain)
                elif size:
                    problems.append(f"/{e.path.decode(errors='replace')}: {size} bytes and no "
                                    "cluster")
            stack = [(b"", 0)]
            while stack:
                path, first = stack.pop()
                for name, f in self._dir(first):
                    if f[1] & ATTR_DIRECTORY:
                        cluster = (f[7] << 16) | f[10]
                        p = join(path, name)
                        if not cluster:
                            problems.append(f"/{p.decode(errors='replace')}: directory without "
                                            "a cluster")
                            continue
                        claim(p, self.chain(cluster))
                        stack.append((p, cluster))
        except RumpfsError as e:
            return problems + [self._problem(e)]
        lost = sum(1 for c in range(FIRST_CLUSTER, self.clusters + FIRST_CLUSTER)
                   if self._table[c] and c not in owner)
        if lost:
            problems.append(f"{lost} clusters in use by no file or directory")
        return problems
