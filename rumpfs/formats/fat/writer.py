"""Writing FAT12/16/32 images from the tree.

* The FAT type follows from the cluster count, as the specification says
  (fewer than 4085 clusters: FAT12; fewer than 65525: FAT16; else FAT32).
  By default every type and cluster size up to 32 KiB is tried and the
  smallest image wins (ties: the smaller cluster); ``--fat-type`` keeps one
  type (padding the image up to the type's least cluster count), ``--size``
  fixes the image size.
* Long names are VFAT (UTF-16) entries; every name also gets a short 8.3
  name, the name itself when it is a valid upper-case 8.3 name, else
  ``BASE~N.EXT``, N counting up in name order: deterministic and unique.
  Names FAT cannot tell apart (differing only in case) are an error.
* Times: the modification time in FAT's 2-second resolution, UTC, clamped
  to 1980-2107; creation = modification, access date = its date.
* Owners and modes are not kept (FAT has none); a file without the owner's
  write bit gets the read-only attribute.  Hard links become copies.
  Symlinks, devices, FIFOs and sockets are refused, or left out with
  ``--fat-skip-special`` (one warning per kind).
* Objects are laid out in walk order, each in contiguous clusters: the FAT
  is a run of chains.  The volume ID is derived from the root's time.
"""

from __future__ import annotations

import functools
import stat
import sys
import time
from array import array
from collections import Counter

from ...errors import RumpfsError
from ...output import BATCH_JOBS
from ...tree import KIND_NAMES, REG, HostData, display, join
from .layout import (
    ATTR_ARCHIVE,
    ATTR_DIRECTORY,
    ATTR_LONG_NAME,
    ATTR_READ_ONLY,
    ATTR_VOLUME_ID,
    BACKUP_BOOT_SECTOR,
    BOOT_SECTOR,
    BOOT_SIGNATURE,
    DIR_ENTRY,
    DIR_ENTRY_SIZE,
    DRIVE_NUMBER,
    EOC,
    EXT_BOOT_SIGNATURE,
    FILE_SIZE_MAX,
    FIRST_CLUSTER,
    FSINFO,
    FSINFO_SECTOR,
    FSINFO_UNKNOWN,
    HEADS,
    JUMP_FAT16,
    JUMP_FAT32,
    LFN_CHARS,
    LFN_ENTRY,
    LFN_FORBIDDEN,
    LFN_LAST,
    LFN_MAX,
    MAX_CLUSTER_BYTES,
    MAX_CLUSTERS,
    MAX_DIR_ENTRIES,
    MAX_ROOT_ENTRIES,
    MEDIA_FIXED,
    MIN_CLUSTERS,
    NT_LOWER_BASE,
    NT_LOWER_EXT,
    NUM_FATS,
    OEM_NAME,
    RESERVED_SECTORS,
    SECTOR,
    SECTORS_PER_TRACK,
    SHORT_EXTRA,
    fat_date,
    fat_time,
    short_name_checksum,
)

NS = 1_000_000_000
#: BPB_TotSec32 is 32 bits: 2 TiB of 512-byte sectors.
MAX_SECTORS = 0xFFFFFFFF
SKIP_OPTION = "--fat-skip-special"
_SHORT_OK = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + SHORT_EXTRA)
_IFMT = 0o170000  # stat.S_IFMT's mask
_DOT, _DOTDOT = b".".ljust(11), b"..".ljust(11)
_ARCHIVE_READ_ONLY = ATTR_ARCHIVE | ATTR_READ_ONLY
#: Directories go out in writes of about this many bytes.
DIR_RUN_BYTES = 1 << 20
_FIRST_SECOND = 315532800  # 1980-01-01 00:00:00 UTC
_LAST_SECOND = 4354819198  # 2107-12-31 23:59:58 UTC


def parse_size(text) -> int:
    if isinstance(text, int):
        return text
    s = str(text).strip().lower()
    mult = 1
    if s and s[-1] in "kmgt":
        mult = 1024 ** ("kmgt".index(s[-1]) + 1)
        s = s[:-1]
    try:
        value = int(s)
    except ValueError:
        raise RumpfsError(f"--size {text}: not a size (bytes, or with a k/m/g/t suffix)") from None
    return value * mult


# -- names -------------------------------------------------------------------------------
#: What a long name must not hold: ASCII characters, so they are found in
#: its UTF-8 bytes (bytes.translate, a tenth of the cost of str.translate
#: with a dict) ...
_LFN_DELETE_BYTES = LFN_FORBIDDEN.encode("ascii") + bytes(range(0x20))
#: ... and named in the error from its text.
_LFN_DELETE = frozenset(_LFN_DELETE_BYTES.decode("ascii"))


#: Bytes of UTF-16 one long-name entry holds.
_LFN_BYTES = 2 * LFN_CHARS


def _long_units(path: bytes, name: bytes, text: str) -> bytes:
    """The UTF-16 units of a name (``text``, decoded from ``name``) that
    needs long entries, or an error naming the path.  (A plain 8.3 name is
    checked by being one.)"""
    if len(name.translate(None, _LFN_DELETE_BYTES)) != len(name):
        bad = next(c for c in text if c in _LFN_DELETE)
        raise RumpfsError(f"{display(path)}: FAT names cannot hold {bad!r} "
                          f"(nor any of {LFN_FORBIDDEN} or control characters)")
    if text.endswith((".", " ")):
        raise RumpfsError(f"{display(path)}: FAT names cannot end with a dot or a space")
    units = text.encode("utf-16-le")
    if len(units) // 2 > LFN_MAX:
        raise RumpfsError(f"{display(path)}: name longer than {LFN_MAX} UTF-16 units, "
                          "the most a FAT long name holds")
    return units


#: Bytes a short name drops ("?" stays: it stands for a character that is
#: not ASCII, and becomes "_").
_SHORT_DROP = bytes(c for c in range(256) if c not in _SHORT_OK and c != ord("?"))


def _short_part(text: str, size: int) -> bytes:
    raw = text.upper().encode("ascii", "replace")
    return raw.translate(None, _SHORT_DROP)[:size].replace(b"?", b"_")


@functools.lru_cache(maxsize=4096)
def _plain_short(name: bytes) -> tuple[bytes, int] | None:
    """The 11-byte short name and its DIR_NTRes case flags when ``name`` is
    itself a valid 8.3 name whose base and extension are each all upper or
    all lower case (as Windows NT and mtools store ``readme.txt``: no long
    entries).  (Cached: a tree has many files of one name, ``__init__.py``.)"""
    if len(name) > 12 or not name.isascii():
        return None
    base, dot, ext = name.partition(b".")
    if b"." in ext or not base or len(base) > 8 or len(ext) > 3 or (dot and not ext):
        return None
    upper_base, upper_ext = base.upper(), ext.upper()
    if (upper_base + upper_ext).translate(None, _SHORT_DROP + b"?") != upper_base + upper_ext:
        return None
    flags = 0
    if base != upper_base:
        if base != base.lower():
            return None
        flags = NT_LOWER_BASE
    if ext != upper_ext:
        if ext != ext.lower():
            return None
        flags |= NT_LOWER_EXT
    return upper_base.ljust(8, b" ") + upper_ext.ljust(3, b" "), flags


def _generated_short(text: str, taken: set, counters: dict) -> bytes:
    """``BASE~N.EXT`` with the first N not taken; ``counters`` remembers
    where each base and extension stopped, so that thousands of names with
    one prefix cost one step each."""
    stem, dot, ext = text.lstrip(".").rpartition(".")
    if not dot:
        stem, ext = ext, ""
    base = _short_part(stem.replace(" ", "").replace(".", ""), 8) or b"_"
    ext11 = _short_part(ext.replace(" ", ""), 3).ljust(3, b" ")
    # Keyed by what the first nine candidates share: names that differ
    # only after six characters count on from one another.
    key = (base[:6], ext11)
    n = counters.get(key, 1)
    while True:
        tail = b"~%d" % n
        candidate = (base[:8 - len(tail)] + tail).ljust(8, b" ") + ext11
        n += 1
        if candidate not in taken:
            counters[key] = n
            return candidate


def _lfn_entries(units: bytes, checksum: int) -> list[bytes]:
    """The long-name entries of a name given as UTF-16 units."""
    count = -(-len(units) // (2 * LFN_CHARS))
    padded = units + b"\0\0"
    padded = padded[:count * 2 * LFN_CHARS].ljust(count * 2 * LFN_CHARS, b"\xff")
    out = []
    for seq in range(count, 0, -1):  # stored last part first
        chunk = padded[(seq - 1) * 26:seq * 26]
        ordinal = seq | (LFN_LAST if seq == count else 0)
        out.append(LFN_ENTRY.pack(ordinal, chunk[:10], ATTR_LONG_NAME, 0, checksum,
                                  chunk[10:22], 0, chunk[22:26]))
    return out


# -- the model ------------------------------------------------------------------------------
class _Dir:
    """A directory of the image: its entries and where its clusters go.
    (Files are columns of FatLayout: a hundred thousand objects cost.)"""

    __slots__ = ("node", "path", "entries", "children", "first", "clusters", "parent",
                 "is_root", "first_file")

    def __init__(self, node, path: bytes, parent: int | None):
        self.node = node
        self.path = path
        #: The parent's index in FatLayout.dirs (None: the root).  An index,
        #: as the parent holds this _Dir in its children: a reference back
        #: would leave the layout and the tree to the cyclic garbage collector
        #: instead of freeing them with the layout.
        self.parent = parent
        #: Per entry in name order: (short11, NT case flags) of a file whose
        #: name is its own short name (most: one shared tuple per name), else
        #: (short11, NT case flags, UTF-16 long name or None, _Dir or None
        #: for a file).  The files are FatLayout's from ``first_file`` on,
        #: in this order: no number per file (memory).
        self.children = None
        self.first_file = 0
        self.entries = 0  # directory entries
        self.first = 0
        self.clusters = 0
        self.is_root = False


def _clamped(seconds: int) -> time.struct_time:
    return time.gmtime(max(_FIRST_SECOND, min(seconds, _LAST_SECOND)))


@functools.lru_cache(maxsize=4096)
def _date_time(seconds: int) -> tuple[int, int]:
    """(FAT date, FAT time) of a Unix time (cached: a tree has few distinct times)."""
    t = _clamped(seconds)
    return fat_date(t), fat_time(t)


class FatLayout:
    def __init__(self, tree, options: dict):
        self.tree = tree
        self.fat_type = options.get("fat_type")
        if self.fat_type is not None:
            self.fat_type = int(self.fat_type)
        self.size = parse_size(options["size"]) if options.get("size") is not None else None
        self.skip = bool(options.get("fat_skip_special"))
        label = options.get("label")
        self.label = None
        if label is not None:
            raw = label.upper().encode("ascii", "replace")
            if len(raw) > 11 or not raw or any(c not in _SHORT_OK and c != 0x20 for c in raw):
                raise RumpfsError(f"--label {label!r}: a FAT volume label is 1 to 11 of "
                                  "A-Z, 0-9, space and $%'-_@~`!(){}^#&")
            self.label = raw.ljust(11, b" ")
        self.dirs: list[_Dir] = []
        #: The files, in the order their clusters follow each other: nodes, sizes.
        self.files: list = []
        self.file_sizes: list[int] = []
        self.skipped: dict[int, int] = {}

    # -- pass 1: names and entry counts -------------------------------------------------
    def build(self) -> None:
        root = _Dir(self.tree.root, b"", None)
        root.is_root = True
        stack = [root]
        while stack:
            d = stack.pop()
            self.dirs.append(d)
            subdirs = self._build_dir(d, len(self.dirs) - 1)
            stack.extend(reversed(subdirs))
        for kind, count in sorted(self.skipped.items()):
            print(f"rumpfs: warning: {count} {KIND_NAMES[kind]} entr"
                  f"{'y' if count == 1 else 'ies'} left out of the FAT image ({SKIP_OPTION})",
                  file=sys.stderr)

    def _special(self, path: bytes, mode: int) -> None:
        """An entry FAT cannot hold: an error, or counted and left out."""
        kind = stat.S_IFMT(mode)
        if not self.skip:
            raise RumpfsError(f"{display(path)}: a FAT image cannot hold a "
                              f"{KIND_NAMES.get(kind, 'special file')}; give "
                              f"{SKIP_OPTION} to leave such entries out")
        self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def _build_dir(self, d: _Dir, index: int) -> list[_Dir]:
        """The entries of ``d`` (``dirs[index]``) in name order; its subdirectories.  Names
        that are their own short name (most, in a typical tree) are dealt
        with in the first loop; the others get ``~N`` names in the second,
        once every plain name of the directory is known."""
        children = d.children = []
        folded: dict[str, bytes] = {}
        taken: set[bytes] = set()
        entries = 0 if d.is_root else 2
        if d.is_root and self.label is not None:
            entries += 1
        files, sizes = self.files, self.file_sizes
        d.first_file = len(files)
        subdirs = []
        generated = []
        for name, child in sorted(d.node.children.items()):
            mode = child.mode
            is_dir = child.children is not None
            if not is_dir and mode & _IFMT != REG:
                self._special(join(d.path, name), mode)
                continue
            try:
                text = name.decode("utf-8")
            except UnicodeDecodeError:
                raise RumpfsError(f"{display(join(d.path, name))}: the name is not UTF-8; FAT "
                                  "long names are Unicode") from None
            key = text.upper()
            if key in folded:
                path = join(d.path, name)
                raise RumpfsError(f"{display(path)}: same name as {display(folded[key])} "
                                  "to FAT, whose names ignore case")
            folded[key] = name
            plain = _plain_short(name)
            if plain is None:
                units = _long_units(join(d.path, name), name, text)
                entries += -(-len(units) // _LFN_BYTES)
            if is_dir:
                ref = _Dir(child, join(d.path, name), index)
                subdirs.append(ref)
            else:
                size = child.data.size if child.data is not None else 0
                if size > FILE_SIZE_MAX:
                    raise RumpfsError(f"{display(join(d.path, name))}: file is {size} bytes; a "
                                      f"FAT file holds at most {FILE_SIZE_MAX} bytes (32-bit "
                                      "size field)")
                ref = None
                files.append(child)
                sizes.append(size)
            if plain is None:
                generated.append((len(children), text, units, ref))
                children.append(None)
                continue
            taken.add(plain[0])
            children.append(plain if ref is None else (*plain, None, ref))
        entries += len(children)
        counters: dict = {}
        for k, text, units, ref in generated:
            # After every plain name: a generated one never takes a real name.
            short = _generated_short(text, taken, counters)
            taken.add(short)
            children[k] = (short, 0, units, ref)
        if entries > MAX_DIR_ENTRIES:
            raise RumpfsError(f"{display(d.path)}: needs {entries} directory entries; a FAT "
                              f"directory holds at most {MAX_DIR_ENTRIES}")
        d.entries = entries
        return subdirs

    # -- pass 2: geometry ---------------------------------------------------------------
    def _all_clusters(self, cluster: int) -> int:
        """Clusters every directory and file takes with this cluster size.
        (Counted over the distinct entry counts and file sizes, which are
        far fewer than directories and files.)"""
        return (self._clusters_of(self.dir_bytes, cluster, 1)
                + self._clusters_of(self.size_counts, cluster, 0))

    def _needed(self, cluster: int, fat: int, everything: int) -> int | None:
        """Clusters the tree takes with this cluster size and FAT type, given
        what ``everything`` takes (:meth:`_all_clusters`), or None when the
        FAT12/16 root directory cannot hold the root's entries."""
        if fat == 32:
            return everything
        if self.dirs[0].entries > MAX_ROOT_ENTRIES:
            return None
        # FAT12/16 keep the root directory in its own area, not in clusters.
        return everything - self._root_clusters(cluster)

    def _root_clusters(self, cluster: int) -> int:
        """The clusters :meth:`_all_clusters` counts for the root directory."""
        return max(1, -(-self.dirs[0].entries * DIR_ENTRY_SIZE // cluster))

    @staticmethod
    def _clusters_of(counts: Counter, cluster: int, least: int) -> int:
        return sum(max(least, -(-size // cluster)) * n for size, n in counts.items())

    def _geometry(self, fat: int, spc: int, needed: int):
        """(total sectors, clusters, FAT sectors, root entries) or None."""
        reserved = RESERVED_SECTORS[fat]
        root_entries = 0
        if fat != 32:
            root_entries = max(16, -(-self.dirs[0].entries // 16) * 16)
        root_sectors = root_entries * DIR_ENTRY_SIZE // SECTOR
        if self.size is None:
            clusters = max(needed, MIN_CLUSTERS[fat])
            fat_sectors = self._fat_sectors(fat, clusters)
            total = reserved + NUM_FATS * fat_sectors + root_sectors + clusters * spc
        else:
            total = self.size // SECTOR
            avail = total - reserved - root_sectors
            if avail <= 0:
                return None
            # The most clusters whose FATs and data fit what is left.
            clusters = avail // spc
            while True:
                fit = (avail - NUM_FATS * self._fat_sectors(fat, clusters)) // spc
                if fit >= clusters:
                    break
                clusters = fit
            while (NUM_FATS * self._fat_sectors(fat, clusters + 1) + (clusters + 1) * spc
                   <= avail):
                clusters += 1
            fat_sectors = self._fat_sectors(fat, clusters)
            if clusters < needed:
                return None
        if not MIN_CLUSTERS[fat] <= clusters <= MAX_CLUSTERS[fat] or total > MAX_SECTORS:
            return None
        return total, clusters, fat_sectors, root_entries

    @staticmethod
    def _fat_sectors(fat: int, clusters: int) -> int:
        entries = clusters + FIRST_CLUSTER
        return -(-(entries * fat // 8 + (1 if fat == 12 else 0)) // SECTOR)

    def choose(self) -> None:
        self.size_counts = Counter(self.file_sizes)
        self.dir_bytes = Counter(d.entries * DIR_ENTRY_SIZE for d in self.dirs)
        types = (self.fat_type,) if self.fat_type else (12, 16, 32)
        best = None
        spc = 1
        while spc * SECTOR <= MAX_CLUSTER_BYTES:
            cluster = spc * SECTOR
            everything = self._all_clusters(cluster)
            # The clusters of everything but the root directory (which FAT12/16
            # keep apart) are a floor under any image with this cluster size,
            # and they only grow with it: none larger can do better.
            floor = (everything - self._root_clusters(cluster)) * spc
            if best is not None and floor >= best[0][0]:
                break
            for fat in types:
                needed = self._needed(cluster, fat, everything)
                if needed is None:
                    continue
                g = self._geometry(fat, spc, needed)
                if g is not None and (best is None or g[0] < best[0][0]):
                    best = (g, fat, spc)
            spc *= 2
        if best is None:
            what = f"FAT{self.fat_type}" if self.fat_type else "FAT12, FAT16 or FAT32"
            where = f" of {self.size} bytes" if self.size is not None else ""
            raise RumpfsError(f"the tree does not fit a {what} image{where} "
                              f"(cluster counts: FAT12 up to {MAX_CLUSTERS[12]}, FAT16 "
                              f"{MIN_CLUSTERS[16]}-{MAX_CLUSTERS[16]}, FAT32 from "
                              f"{MIN_CLUSTERS[32]})")
        (self.total, self.clusters, self.fat_sectors, self.root_entries), self.fat, self.spc = best
        self.cluster_bytes = self.spc * SECTOR
        reserved = RESERVED_SECTORS[self.fat]
        self.fat_start = reserved
        self.root_start = reserved + NUM_FATS * self.fat_sectors
        self.data_start = self.root_start + self.root_entries * DIR_ENTRY_SIZE // SECTOR

    # -- pass 3: clusters ------------------------------------------------------------------
    def allocate(self) -> None:
        """Directories (but a FAT12/16 root) then files, each in the next
        free clusters: ``self.ends`` lists the last cluster of each chain."""
        cluster_bytes = self.cluster_bytes
        nxt = FIRST_CLUSTER
        ends = array("I")
        for d in self.dirs:
            if d.is_root and self.fat != 32:
                continue
            d.clusters = max(1, -(-d.entries * DIR_ENTRY_SIZE // cluster_bytes))
            d.first = nxt
            nxt += d.clusters
            ends.append(nxt - 1)
        self.dirs_end = nxt
        firsts = self.file_first = array("I")  # clusters: 28 bits
        for size in self.file_sizes:
            if size:
                firsts.append(nxt)
                nxt += -(-size // cluster_bytes)
                ends.append(nxt - 1)
            else:
                firsts.append(0)
        self.used = nxt - FIRST_CLUSTER
        self.ends = ends

    def _offset(self, cluster: int) -> int:
        return (self.data_start + (cluster - FIRST_CLUSTER) * self.spc) * SECTOR

    # -- pass 4: bytes -------------------------------------------------------------------------
    def _directory(self, d: _Dir) -> bytes:
        pack, date_time = DIR_ENTRY.pack, _date_time
        out = []
        if d.is_root:
            if self.label is not None:
                t = _clamped(d.node.mtime_ns // NS)
                out.append(pack(self.label, ATTR_VOLUME_ID, 0, 0, 0, 0, 0, 0, fat_time(t),
                                fat_date(t), 0, 0))
        else:
            parent = self.dirs[d.parent]
            up = 0 if parent.is_root else parent.first
            for short, node, first in ((_DOT, d.node, d.first), (_DOTDOT, parent.node, up)):
                date, tm = date_time(node.mtime_ns // NS)
                out.append(pack(short, ATTR_DIRECTORY, 0, 0, tm, date, date, first >> 16, tm,
                                date, first & 0xFFFF, 0))
        files, sizes, firsts = self.files, self.file_sizes, self.file_first
        k = d.first_file
        for entry in d.children:
            if len(entry) == 2:
                (short, case), long_units, ref = entry, None, None
            else:
                short, case, long_units, ref = entry
                if long_units is not None:
                    out += _lfn_entries(long_units, short_name_checksum(short))
            if ref is not None:
                node, attr, first, size = ref.node, ATTR_DIRECTORY, ref.first, 0
            else:
                node, first, size = files[k], firsts[k], sizes[k]
                attr = ATTR_ARCHIVE if node.mode & stat.S_IWUSR else _ARCHIVE_READ_ONLY
                k += 1
            date, tm = date_time(node.mtime_ns // NS)
            out.append(pack(short, attr, case, 0, tm, date, date, first >> 16, tm, date,
                            first & 0xFFFF, size))
        return b"".join(out)

    def _fat_table(self) -> bytes:
        """Every chain runs through consecutive clusters: each entry points
        to the next cluster but at the chains' ends."""
        eoc = EOC[self.fat]
        count = self.clusters + FIRST_CLUSTER
        end = FIRST_CLUSTER + self.used
        entries = array("I", [(0x0FFFFF00 | MEDIA_FIXED) & eoc, eoc])
        entries.extend(range(FIRST_CLUSTER + 1, end + 1))
        for c in self.ends:
            entries[c] = eoc
        entries.frombytes(bytes(entries.itemsize * (count - end)))
        if self.fat == 32:
            data = entries.tobytes() if sys.byteorder == "little" else _swapped(entries)
        elif self.fat == 16:
            data = array("H", entries).tobytes() if sys.byteorder == "little" else \
                _swapped(array("H", entries))
        else:
            data = _pack12(entries)
        return data.ljust(self.fat_sectors * SECTOR, b"\0")

    def _volume_id(self) -> int:
        return (self.tree.root.mtime_ns // NS) & 0xFFFFFFFF

    def _boot_sector(self) -> bytes:
        fat32 = self.fat == 32
        total16 = self.total if self.total < 0x10000 and not fat32 else 0
        bpb = dict(BS_jmpBoot=JUMP_FAT32 if fat32 else JUMP_FAT16, BS_OEMName=OEM_NAME,
                   BPB_BytsPerSec=SECTOR, BPB_SecPerClus=self.spc,
                   BPB_RsvdSecCnt=RESERVED_SECTORS[self.fat], BPB_NumFATs=NUM_FATS,
                   BPB_RootEntCnt=self.root_entries, BPB_TotSec16=total16, BPB_Media=MEDIA_FIXED,
                   BPB_FATSz16=0 if fat32 else self.fat_sectors, BPB_SecPerTrk=SECTORS_PER_TRACK,
                   BPB_NumHeads=HEADS, BPB_HiddSec=0,
                   BPB_TotSec32=0 if total16 else self.total)
        ext = dict(BS_DrvNum=DRIVE_NUMBER, BS_Reserved1=0, BS_BootSig=EXT_BOOT_SIGNATURE,
                   BS_VolID=self._volume_id(), BS_VolLab=self.label or b"NO NAME    ",
                   BS_FilSysType=b"FAT%d   " % self.fat)
        fields = dict(bpb=bpb, ext=ext)
        if fat32:
            fields["fat32"] = dict(BPB_FATSz32=self.fat_sectors, BPB_ExtFlags=0, BPB_FSVer=0,
                                   BPB_RootClus=self.dirs[0].first, BPB_FSInfo=FSINFO_SECTOR,
                                   BPB_BkBootSec=BACKUP_BOOT_SECTOR, BPB_Reserved=bytes(12))
        head = BOOT_SECTOR[self.fat].pack_dict(fields)
        return head.ljust(SECTOR - len(BOOT_SIGNATURE), b"\0") + BOOT_SIGNATURE

    def _fsinfo(self) -> bytes:
        free = self.clusters - self.used
        nxt = FIRST_CLUSTER + self.used if free else FSINFO_UNKNOWN
        return FSINFO.pack_dict(dict(FSI_Reserved1=bytes(480), FSI_Free_Count=free,
                                 FSI_Nxt_Free=nxt, FSI_Reserved2=bytes(12)))

    def write(self, sink) -> int:
        # A cluster belongs to one file, zeros after its data: the copy
        # workers may join neighbouring files into one write.
        sink.copies_own_units(self.cluster_bytes)
        # The first copies go to the workers now: they copy while this
        # process lays out the directories (the rest follow every few).
        files = len(self.files)
        per_dir = -(-files // len(self.dirs))
        handed = self._hand_over(sink, 0, files // 4)
        boot = self._boot_sector()
        sink.pwrite(boot, 0)
        if self.fat == 32:
            fsinfo = self._fsinfo()
            sink.pwrite(fsinfo, FSINFO_SECTOR * SECTOR)
            sink.pwrite(boot + fsinfo, BACKUP_BOOT_SECTOR * SECTOR)
        table = self._fat_table()
        for i in range(NUM_FATS):
            sink.pwrite(table, (self.fat_start + i * self.fat_sectors) * SECTOR)
        del table
        # The directories lie one after the other: written in long runs.
        run, run_at, run_bytes = [], 0, 0
        for k, d in enumerate(self.dirs):
            data = self._directory(d)
            if d.is_root and self.fat != 32:
                sink.pwrite(data, self.root_start * SECTOR)
                continue
            if not run:
                run_at = self._offset(d.first)
            run.append(data.ljust(d.clusters * self.cluster_bytes, b"\0"))
            run_bytes += d.clusters * self.cluster_bytes
            if run_bytes >= DIR_RUN_BYTES:
                sink.pwrite(b"".join(run), run_at)
                run, run_bytes = [], 0
                handed = self._hand_over(sink, handed, (k + 1) * per_dir)
        if run:
            sink.pwrite(b"".join(run), run_at)
        self._hand_over(sink, handed, files)
        return self.total * SECTOR

    def _hand_over(self, sink, start: int, end: int) -> int:
        """Give the sink's workers the copies of files ``start`` to ``end``
        (in image order), a batch at a time: one copy_at per file costs more
        than laying out its entries.  (Data held in memory, not in a host
        file, is written here at once.)"""
        end = min(end, len(self.files))
        base, cluster_bytes, add = self.data_start * SECTOR, self.cluster_bytes, sink.copier.add
        for k in range(start, end, BATCH_JOBS):
            stop = min(k + BATCH_JOBS, end)
            jobs = []
            for node, size, first in zip(self.files[k:stop], self.file_sizes[k:stop],
                                         self.file_first[k:stop]):
                if not size:
                    continue
                data = node.data
                offset = base + (first - FIRST_CLUSTER) * cluster_bytes
                if isinstance(data, HostData):
                    jobs.append((data, 0, offset, size))
                else:
                    sink.pwrite(data.data[:size], offset)
            if jobs:
                add(jobs)
        return max(start, end)


def _swapped(a: array) -> bytes:
    a = array(a.typecode, a)
    a.byteswap()
    return a.tobytes()


def _pack12(entries) -> bytes:
    out = bytearray()
    for i in range(0, len(entries) - 1, 2):
        a, b = entries[i], entries[i + 1]
        out += bytes((a & 0xFF, (a >> 8) | ((b & 0xF) << 4), b >> 4))
    if len(entries) % 2:
        a = entries[-1]
        out += bytes((a & 0xFF, a >> 8))
    return bytes(out)


def write_image(tree, sink, options: dict) -> int:
    layout = FatLayout(tree, options)
    layout.build()
    layout.choose()
    layout.allocate()
    return layout.write(sink)

