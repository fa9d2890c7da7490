"""Writing ISO 9660 images with Rock Ridge and Joliet from the tree.

The image, sector by sector::

    0-15   system area (zeros)
    16     primary volume descriptor (ISO 9660 level 3 names, Rock Ridge)
    17     supplementary volume descriptor (Joliet, UCS-2 level 3)
    18     volume descriptor set terminator
    19...  path tables: ISO L and M, Joliet L and M
           ISO directories, breadth first (path table order), each followed
           by its continuation areas (Rock Ridge entries that did not fit)
           Joliet directories, same order
           file data, in walk order, each file on a sector boundary

Everything but the file data is laid out in memory first (record lengths do
not depend on locations), then written directory by directory; the data is
copied from the source files by the sink's copy workers, holes left holes.

Choices:

* Rock Ridge carries the real names (up to 255 bytes, in NM entries split as
  needed), modes, owners, link counts and file serial numbers (PX, RRIP
  1.12), modification/access/change times (TF), symlinks (SL), devices
  (PN).  Hard links share one data extent and one serial number.
* ISO 9660 names are level 3: upper-case d-characters, ``NAME.EXT;1`` of at
  most 30 characters, made unique in their directory by a ``~N`` suffix.
* Joliet holds directories and regular files only (it has no other types),
  names as UCS-2 cut to 64 characters, made unique the same way.
* Directories deeper than 8 levels stay where they are (as ``xorriso -as
  mkisofs -R`` and ``mkisofs -D`` write them): Linux, libisofs,
  libarchive and pycdlib read them; no RR_MOVED relocation.
* Files of 4 GiB and more are cut into extents of ``EXTENT_MAX`` bytes,
  one directory record each (multi-extent, level 3).
* Every date is the tree's (the time policy); the volume dates are the root
  directory's time.  Nothing random, nothing of the build host.
"""

from __future__ import annotations

import functools
from array import array
from itertools import accumulate
from operator import sub

from ...errors import RumpfsError
from ...output import BATCH_JOBS
from ...tree import BLK, CHR, LNK, REG, HostData, display, join
from .layout import (
    CE_SIZE,
    DIR_RECORD,
    EXTENT_MAX,
    FLAG_DIRECTORY,
    FLAG_MULTI_EXTENT,
    ISO_DIR_ID_MAX,
    ISO_FILE_ID_MAX,
    JOLIET_ESCAPE,
    JOLIET_NAME_MAX,
    NM_CONTINUE,
    NM_HEAD,
    PATH_RECORD_L,
    PATH_RECORD_M,
    PX_SIZE,
    RECORD_FIXED,
    RECORD_MAX,
    RRIP_DESCRIPTOR,
    RRIP_ID,
    RRIP_SOURCE,
    SECTOR,
    SL_CONTINUE,
    SL_CURRENT,
    SL_PARENT,
    SL_ROOT,
    SP_CHECK,
    SUSP_ENTRY_MAX,
    SUSP_HEADER,
    SUSP_VERSION,
    SYMLINK_TARGET_MAX,
    SYSTEM_AREA_SECTORS,
    TERMINATOR,
    TF_FLAGS,
    TF_SIZE,
    VD_PRIMARY,
    VD_SUPPLEMENTARY,
    VOLUME_DESCRIPTOR,
    both,
    both32,
    record_date,
    volume_date,
)

NS = 1_000_000_000
#: IsoLayout.rec_files of a record that is not a regular file's.
NO_FILE = -1
#: Names in a tree whose identifiers are kept as one string, not as bytes
#: objects (memory, for a little more time per name).
STRINGS_AFTER = 250_000
#: Path table records name their parent by a 16-bit number.
MAX_DIRECTORIES = 0xFFFF
#: The volume space size is a 32-bit count of sectors (8 TiB).
MAX_SECTORS = 0xFFFFFFFF
DEFAULT_LABEL = "RUMPFS"
LABEL_MAX = 32
JOLIET_LABEL_MAX = 16
_IFMT = 0o170000  # stat.S_IFMT's mask
#: Directories (and their continuation areas) go out in writes of about
#: this many bytes.
DIR_RUN_BYTES = 1 << 20
_D_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
#: bytes.translate table: what a Joliet name cannot hold becomes "_".  These
#: are ASCII, never part of a longer UTF-8 sequence: replacing them before
#: decoding is replacing them after (and costs a tenth of str.translate).
_JOLIET_TABLE = bytes(0x5F if c in b"*/:;?\\" else c for c in range(256))


# -- System Use entries --------------------------------------------------------------
def _entry(sig: bytes, body: bytes) -> bytes:
    return SUSP_HEADER.pack(sig, 4 + len(body), SUSP_VERSION) + body


def _px(mode: int, nlink: int, uid: int, gid: int, serial: int) -> bytes:
    return _px_head(mode, nlink, uid, gid) + both32(serial)


@functools.lru_cache(maxsize=4096)
def _px_head(mode: int, nlink: int, uid: int, gid: int) -> bytes:
    """PX up to the serial number (cached: few files differ in these)."""
    return SUSP_HEADER.pack(b"PX", PX_SIZE, SUSP_VERSION) + both32(mode) + both32(nlink) \
        + both32(uid) + both32(gid)


def _tf(node) -> bytes:
    return _tf_of(node.mtime_ns // NS, node.atime_ns // NS, node.ctime_ns // NS)


@functools.lru_cache(maxsize=4096)
def _tf_of(mtime: int, atime: int, ctime: int) -> bytes:
    return _entry(b"TF", bytes((TF_FLAGS,)) + record_date(mtime) + record_date(atime)
                  + record_date(ctime))


def _nm(name: bytes) -> list[bytes]:
    room = SUSP_ENTRY_MAX - NM_HEAD
    if len(name) <= room:  # nearly every name: one entry
        return [_entry(b"NM", b"\0" + name)]
    pieces = [name[i:i + room] for i in range(0, len(name), room)] or [b""]
    return [_entry(b"NM", bytes((NM_CONTINUE if i < len(pieces) - 1 else 0,)) + p)
            for i, p in enumerate(pieces)]


def _sl(target: bytes) -> list[bytes]:
    """SL entries for a symlink target (RRIP 4.1.3), long components split."""
    components = []
    if target.startswith(b"/"):
        components.append((SL_ROOT, b""))
    for part in target.split(b"/"):
        if part == b".":
            components.append((SL_CURRENT, b""))
        elif part == b"..":
            components.append((SL_PARENT, b""))
        elif part:
            components.append((0, part))
    entries, body, last_continues = [], b"", False
    room = SUSP_ENTRY_MAX - 5  # after the header and SL's flags byte
    for flags, content in components:
        while True:
            space = room - len(body) - 2
            if space < 1:
                entries.append((body, last_continues))
                body = b""
                continue
            chunk, content = content[:space], content[space:]
            more = bool(content)
            body += bytes((flags | (SL_CONTINUE if more else 0), len(chunk))) + chunk
            last_continues = more
            if not more:
                break
    entries.append((body, last_continues))
    return [_entry(b"SL", bytes((SL_CONTINUE if cont else 0,)) + b) for b, cont in entries]


def _pn(rdev: int) -> bytes:
    # The host's 64-bit dev_t in two halves, as mkisofs and libisofs write
    # it: Linux reads a high half of 0 as the 16-bit major/minor word.
    return _entry(b"PN", both32(rdev >> 32) + both32(rdev & 0xFFFFFFFF))


_SP = _entry(b"SP", SP_CHECK + b"\0")
#: File types whose records carry more than PX, TF and NM (SL, PN).
_MORE_ENTRIES = (LNK, CHR, BLK)
_ER = _entry(b"ER", bytes((len(RRIP_ID), len(RRIP_DESCRIPTOR), len(RRIP_SOURCE), 1))
             + RRIP_ID + RRIP_DESCRIPTOR + RRIP_SOURCE)


class _Piece:
    """A run of System Use entries in a continuation area (SUSP 5.1)."""

    __slots__ = ("data", "next", "sector", "offset")

    def __init__(self, data: bytes, nxt):
        self.data = data
        self.next = nxt
        self.sector = self.offset = 0

    @property
    def length(self) -> int:
        return len(self.data) + (CE_SIZE if self.next else 0)


def _ce(piece: _Piece) -> bytes:
    return _entry(b"CE", both32(piece.sector) + both32(piece.offset)
                  + both32(piece.length))


def _split_susp(entries: list[bytes], room: int):
    """(inline bytes, first continuation piece or None) for a record with
    ``room`` bytes of System Use space."""
    if sum(map(len, entries)) <= room:
        return b"".join(entries), None
    inline, i = b"", 0
    while i < len(entries) and len(inline) + len(entries[i]) <= room - CE_SIZE:
        inline += entries[i]
        i += 1
    pieces, body = [], b""
    for e in entries[i:]:
        if len(body) + len(e) > SECTOR - CE_SIZE:
            pieces.append(body)
            body = b""
        body += e
    pieces.append(body)
    nxt = None
    for data in reversed(pieces):
        nxt = _Piece(data, nxt)
    return inline, nxt


# -- names -----------------------------------------------------------------------------
#: bytes.translate table: d-characters stay, anything else becomes "_".
_D_TABLE = bytes(c if c in _D_CHARS else 0x5F for c in range(256))


def _d_chars(name: bytes) -> bytes:
    return name.upper().translate(_D_TABLE)


def _unique(candidate, taken: set, make):
    """``candidate``, or ``make(suffix)`` with the first ``~N`` not taken."""
    n = 1
    while candidate in taken:
        candidate = make(b"~%d" % n)
        n += 1
    taken.add(candidate)
    return candidate


def _iso_name(name: bytes, is_dir: bool, taken: set) -> tuple[bytes, tuple]:
    """(file identifier, sort key) of a level 3 name, unique in ``taken``."""
    if is_dir:
        base = _d_chars(name)[:ISO_DIR_ID_MAX] or b"_"

        def make(suffix):
            return base[:ISO_DIR_ID_MAX - len(suffix)] + suffix
        ident = _unique(base, taken, make)
        return ident, (ident.ljust(ISO_DIR_ID_MAX, b" "), b"")
    stem, dot, ext = name.rpartition(b".")
    if not dot or not stem:
        stem, ext = name, b""
    ext = _d_chars(ext)[:8]
    limit = ISO_FILE_ID_MAX - len(ext)
    base = _d_chars(stem)[:limit] or b"_"

    def make_file(suffix):
        return (base[:limit - len(suffix)] + suffix, ext)
    stem_id, ext_id = _unique((base, ext), taken, make_file)
    return stem_id + b"." + ext_id + b";1", (stem_id.ljust(ISO_FILE_ID_MAX, b" "),
                                             ext_id.ljust(8, b" "))


def _cut_units(data: bytes, size: int) -> bytes:
    """UTF-16 units cut to ``size`` bytes, never in a surrogate pair."""
    data = data[:size]
    if len(data) >= 2 and 0xD8 <= data[-2] <= 0xDB:  # half a surrogate pair
        data = data[:-2]
    return data


def _joliet_name(name: bytes, taken: set) -> bytes:
    units = name.translate(_JOLIET_TABLE).decode("utf-8", "replace").encode("utf-16-be")
    limit = JOLIET_NAME_MAX * 2
    base = _cut_units(units, limit)
    # Compared as Windows and Linux's Joliet do: case matters, exact units.
    return _unique(base, taken, lambda s: _cut_units(base, limit - 2 * len(s))
                   + s.decode().encode("utf-16-be"))


# -- the layout --------------------------------------------------------------------------
class _Dir:
    """A directory of the image: its records are ``first`` to ``end`` of
    the layout's record columns, its Joliet records ``jfirst`` to ``jend``
    of the Joliet ones (see :class:`IsoLayout`)."""

    __slots__ = ("node", "path", "parent", "number", "jnumber", "extent", "size",
                 "jextent", "jsize", "iso_id", "joliet_id", "pieces", "ce_sectors",
                 "dot_susp", "dot_piece", "dotdot_susp", "dotdot_piece",
                 "first", "end", "jfirst", "jend")

    def __init__(self, node, path, parent):
        self.node = node
        self.path = path
        #: None for the root (see :attr:`up`): a reference to itself would
        #: keep the layout and the tree for the cyclic garbage collector
        #: instead of freeing them with the layout.
        self.parent = parent
        self.number = self.jnumber = 0
        self.extent = self.size = self.jextent = self.jsize = 0
        #: Continuation areas of its records, in the sectors after its extent.
        self.pieces = []
        self.ce_sectors = 0
        #: Its identifiers in its parent (the path tables name it so).
        self.iso_id = self.joliet_id = b"\0"
        #: The "." and ".." records' System Use: bytes in the record, first piece.
        self.dot_susp = self.dotdot_susp = 0
        self.dot_piece = self.dotdot_piece = None
        self.first = self.end = self.jfirst = self.jend = 0

    @property
    def up(self) -> "_Dir":
        """The parent directory in the image; the root's is itself."""
        return self.parent or self


class _StringList(list):
    """Byte strings, a bytes object each: :class:`_Strings`'s interface."""

    __slots__ = ()

    def lengths(self, first: int, end: int):
        return map(len, self[first:end])

    def items(self, first: int, end: int):
        return self[first:end]


class _Strings:
    """A list of short byte strings kept as one string and their ends: a
    bytes object each would cost three times their bytes (for a large
    tree; a small one is faster as a :class:`_StringList`)."""

    __slots__ = ("data", "ends")

    def __init__(self):
        self.data = bytearray()
        self.ends = array("q", (0,))  # ends[i + 1] is where string i ends

    def __len__(self) -> int:
        return len(self.ends) - 1

    def extend(self, strings: list) -> None:
        self.data += b"".join(strings)
        ends = accumulate(map(len, strings), initial=self.ends[-1])
        next(ends)  # the start: the last string's end, already there
        self.ends.extend(ends)

    def lengths(self, first: int, end: int):
        """The lengths of strings ``first`` to ``end``."""
        ends = self.ends
        return map(sub, ends[first + 1:end + 1], ends[first:end])

    def items(self, first: int, end: int):
        """Strings ``first`` to ``end``."""
        data, ends = self.data, self.ends
        return map(data.__getitem__, map(slice, ends[first:end], ends[first + 1:end + 1]))


def _record_len(id_len: int, susp_len: int = 0) -> int:
    return RECORD_FIXED + id_len + (1 - id_len % 2) + susp_len


def _extent_count(size: int) -> int:
    return max(1, -(-size // EXTENT_MAX))


def _records_size(records) -> int:
    """Bytes of a directory extent holding records of these lengths
    (a record never crosses a sector boundary), in whole sectors."""
    pos = 0
    for n in records:
        if pos % SECTOR + n > SECTOR:
            pos += SECTOR - pos % SECTOR
        pos += n
    return max(SECTOR, -(-pos // SECTOR) * SECTOR)


class IsoLayout:
    def __init__(self, tree, label: str | None):
        self.tree = tree
        self.label = DEFAULT_LABEL if label is None else label
        if len(self.label) > LABEL_MAX or not self.label:
            raise RumpfsError(f"--label {self.label!r}: an ISO 9660 volume label is 1 to "
                              f"{LABEL_MAX} characters")
        counts = tree.name_counts()  # only link counts other than 1
        self.nlinks = counts
        strings = _Strings if counts.nodes > STRINGS_AFTER else _StringList
        self.serials: dict[int, int] = {}  # id(node) -> serial, of nodes met again
        self.last_serial = 0
        self.dirs: list[_Dir] = []
        self.jdirs: list[_Dir] = []
        self.files: list = []  # nodes with data, in order
        self.file_sizes: list[int] = []
        self.extents = array("I")  # first data sector, by file number (MAX_SECTORS)
        self.file_of: dict[int, int] = {}  # id(node) -> file number, of hard-linked nodes
        self._links: dict[int, int] = {}  # id(node) -> link count of a directory
        # Every record but "." and "..", a directory's after another's, each
        # directory's in ISO 9660 order: columns, not an object per record (a
        # million names: memory).  Identifier (record r's is rec_ids[at[r]:
        # at[r + 1]]: one string of them all, not a bytes object each), node,
        # name in the tree (its NM entry), System Use bytes kept in the
        # record, file number of a regular file (NO_FILE for anything else);
        # by record number, the _Dir of a directory and the first
        # continuation piece of a record that needs one.
        self.rec_ids = strings()
        self.rec_nodes: list = []
        self.rec_names: list[bytes] = []
        self.rec_susp = array("H")
        self.rec_files = array("i")
        self.rec_dirs: dict[int, _Dir] = {}
        self.rec_cont: dict[int, _Piece] = {}
        # The Joliet records in Joliet order: identifier, record number.
        self.jrec_ids = strings()
        self.jrec_of = array("I")
        #: Whether a file needs several extents (and so several records).
        self.multi_extent = False

    def _serial(self, node, nlink: int) -> int:
        """The node's PX serial number, counted in the order nodes are met;
        remembered only for those met again (directories, hard links): memory."""
        if nlink == 1 and node.children is None:
            self.last_serial += 1
            return self.last_serial
        serial = self.serials.get(id(node))
        if serial is None:
            self.last_serial += 1
            serial = self.serials[id(node)] = self.last_serial
        return serial

    def _susp(self, node, nlink: int, name: bytes | None, root: bool, serial: int) -> list[bytes]:
        """The System Use entries of a record of ``node``; the root's "."
        record starts with SP and ends with ER."""
        entries = [_SP] if root else []
        entries.append(_px(node.mode, nlink, node.uid, node.gid, serial))
        entries.append(_tf(node))
        if name is not None:
            entries.extend(_nm(name))
        kind = node.mode & _IFMT
        if kind == LNK:
            entries.extend(_sl(node.target))
        elif kind in (CHR, BLK):
            entries.append(_pn(node.rdev))
        if root:
            entries.append(_ER)
        return entries

    def _nlink(self, node) -> int:
        return (self._dir_links(node) if node.children is not None
                else self.nlinks.get(id(node), 1))

    def _split(self, node, name: bytes | None, id_len: int, root: bool, numbered: bool) -> tuple:
        """(inline bytes, first continuation piece or None) of a record's
        System Use entries; its PX serial number is counted only when
        ``numbered`` (the value does not change the length)."""
        nlink = self._nlink(node)
        serial = self._serial(node, nlink) if numbered else 0
        return _split_susp(self._susp(node, nlink, name, root, serial),
                           RECORD_MAX - _record_len(id_len))

    def _system_use(self, node, name: bytes | None, id_len: int, piece, susp_len: int,
                    root: bool = False) -> bytes:
        """A record's own System Use bytes, made again as :meth:`_place` laid
        them out, with the PX serial numbers counted in the order records
        are written."""
        if piece is None and not root and node.mode & _IFMT not in _MORE_ENTRIES:
            # All of them in the record, and only PX, TF and NM (nearly
            # every record): made directly, as _split would join them.
            nlink = self._nlink(node)
            inline = _px(node.mode, nlink, node.uid, node.gid, self._serial(node, nlink)) + _tf(node)
            if name is not None:
                inline += _entry(b"NM", b"\0" + name)
        else:
            inline, _ = self._split(node, name, id_len, root, True)
        if len(inline) != susp_len:  # pragma: no cover - laid out and written differently
            raise RumpfsError(f"{display(name or b'.')}: System Use of {len(inline)} bytes, "
                              f"laid out as {susp_len}")
        return inline

    def _place(self, d: _Dir, node, name: bytes | None, id_len: int,
               root: bool = False) -> tuple:
        """(System Use bytes in the record, first continuation piece or
        None) of a record of ``d``; its pieces join ``d``'s."""
        if not root and node.mode & _IFMT not in _MORE_ENTRIES:
            # PX, TF and one NM entry at most: their length alone tells
            # whether they fit in the record.
            length = PX_SIZE + TF_SIZE + (0 if name is None else NM_HEAD + len(name))
            if length <= RECORD_MAX - _record_len(id_len):
                return length, None
        inline, first = self._split(node, name, id_len, root, False)
        piece = first
        while piece is not None:
            d.pieces.append(piece)
            piece = piece.next
        return len(inline), first

    def build(self) -> None:
        root = _Dir(self.tree.root, b"", None)
        queue = [root]
        i = 0
        while i < len(queue):
            d = queue[i]
            i += 1
            d.number = i
            if i > MAX_DIRECTORIES:
                raise RumpfsError(f"{display(d.path)}: more than {MAX_DIRECTORIES} directories; "
                                  "ISO 9660 path tables number at most that many")
            self.dirs.append(d)
            queue.extend(self._build_dir(d))
        self._joliet_order(root)

    def _dir_links(self, node) -> int:
        """A directory's link count: 2 and one per subdirectory (cached by node)."""
        links = self._links.get(id(node))
        if links is None:
            links = self._links[id(node)] = 2 + sum(1 for c in node.children.values()
                                                   if c.children is not None)
        return links

    def _build_dir(self, d: _Dir) -> list[_Dir]:
        node = d.node
        d.dot_susp, d.dot_piece = self._place(d, node, None, 1, root=d.parent is None)
        d.dotdot_susp, d.dotdot_piece = self._place(d, d.up.node, None, 1)
        taken, jtaken = set(), set()
        # Made in the tree's name order (the order of the continuation
        # pieces), kept in ISO 9660 order; these lists live while the
        # directory is made.
        keys, ids, kids, names, susp, files_of = [], [], [], [], [], []
        pieces, subdirs, jids = {}, {}, []
        files, file_sizes, nlinks, file_of = self.files, self.file_sizes, self.nlinks, self.file_of
        for k, (name, child) in enumerate(sorted(node.children.items())):
            is_dir = child.children is not None
            iso_id, key = _iso_name(name, is_dir, taken)
            if child.target is not None and len(child.target) > SYMLINK_TARGET_MAX:
                raise RumpfsError(f"{display(join(d.path, name))}: symlink target of "
                                  f"{len(child.target)} bytes; ISO 9660 Rock Ridge readers "
                                  f"take at most {SYMLINK_TARGET_MAX} (libisofs)")
            is_reg = not is_dir and child.mode & _IFMT == REG
            number = NO_FILE
            if is_dir:
                sub = subdirs[k] = _Dir(child, join(d.path, name), d)
                sub.iso_id = iso_id
            elif is_reg:
                links = nlinks.get(id(child), 1)
                number = file_of.get(id(child)) if links > 1 else None
                if number is None:
                    number = len(files)
                    files.append(child)
                    size = child.data.size if child.data is not None else 0
                    file_sizes.append(size)
                    self.multi_extent |= size > EXTENT_MAX
                    if links > 1:
                        file_of[id(child)] = number
            length, piece = self._place(d, child, name, len(iso_id))
            if piece is not None:
                pieces[k] = piece
            if is_dir or is_reg:
                jid = _joliet_name(name, jtaken)
                jids.append((jid, k))
                if is_dir:
                    subdirs[k].joliet_id = jid
            keys.append(key)
            ids.append(iso_id)
            kids.append(child)
            names.append(name)
            susp.append(length)
            files_of.append(number)
        order = sorted(range(len(keys)), key=keys.__getitem__)
        base = d.first = len(self.rec_ids)
        d.end = base + len(order)
        number_of = [0] * len(order)  # tree order -> record number
        for i, k in enumerate(order):
            number_of[k] = base + i
        self.rec_ids.extend([ids[k] for k in order])
        self.rec_nodes += [kids[k] for k in order]
        self.rec_names += [names[k] for k in order]
        self.rec_susp.extend([susp[k] for k in order])
        self.rec_files.extend([files_of[k] for k in order])
        self.rec_dirs.update((number_of[k], sub) for k, sub in subdirs.items())
        self.rec_cont.update((number_of[k], piece) for k, piece in pieces.items())
        jids.sort()
        d.jfirst = len(self.jrec_ids)
        d.jend = d.jfirst + len(jids)
        self.jrec_ids.extend([jid for jid, _ in jids])
        self.jrec_of.extend([number_of[k] for _, k in jids])
        return [subdirs[k] for k in sorted(subdirs, key=number_of.__getitem__)]

    def _joliet_order(self, root: _Dir) -> None:
        queue = [root]
        rec_dirs = self.rec_dirs
        i = 0
        while i < len(queue):
            d = queue[i]
            i += 1
            d.jnumber = i
            self.jdirs.append(d)
            queue.extend(rec_dirs[r] for r in self.jrec_of[d.jfirst:d.jend] if r in rec_dirs)

    # -- sizes and places ------------------------------------------------------------
    def _iso_lengths(self, d: _Dir) -> list[int]:
        """The lengths of ``d``'s ISO 9660 records, in order (one record per
        extent of a multi-extent file)."""
        lengths = [_record_len(1, d.dot_susp + (CE_SIZE if d.dot_piece else 0)),
                   _record_len(1, d.dotdot_susp + (CE_SIZE if d.dotdot_piece else 0))]
        first, end = d.first, d.end
        susp = self.rec_susp[first:end]
        cont = self.rec_cont
        if cont:
            susp = [n + (CE_SIZE if r in cont else 0) for r, n in zip(range(first, end), susp)]
        lengths += map(_record_len, self.rec_ids.lengths(first, end), susp)
        return self._with_extents(lengths, 2, self.rec_files[first:end])

    def _joliet_lengths(self, d: _Dir) -> list[int]:
        lengths = [_record_len(1), _record_len(1)]
        lengths += map(_record_len, self.jrec_ids.lengths(d.jfirst, d.jend))
        files = self.rec_files
        return self._with_extents(lengths, 2, [files[r] for r in self.jrec_of[d.jfirst:d.jend]]
                                  if self.multi_extent else ())

    def _with_extents(self, lengths: list[int], skip: int, numbers) -> list[int]:
        """``lengths`` with the record of each file of several extents
        (``numbers``: the file numbers of the records after the first
        ``skip``) repeated once per extent."""
        if not self.multi_extent:
            return lengths
        out = lengths[:skip]
        file_sizes = self.file_sizes
        for n, number in zip(lengths[skip:], numbers):
            if number != NO_FILE and file_sizes[number] > EXTENT_MAX:
                out += [n] * _extent_count(file_sizes[number])
            else:
                out.append(n)
        return out

    def allocate(self) -> int:
        """Sectors of everything; returns the image size in sectors."""
        self.pt_size = sum(PATH_RECORD_L.size + len(d.iso_id) + len(d.iso_id) % 2
                           for d in self.dirs)
        self.jpt_size = sum(PATH_RECORD_L.size + len(d.joliet_id) + len(d.joliet_id) % 2 for d in self.jdirs)
        pt_sectors = -(-self.pt_size // SECTOR)
        jpt_sectors = -(-self.jpt_size // SECTOR)
        pos = SYSTEM_AREA_SECTORS + 3
        self.pt_l, self.pt_m = pos, pos + pt_sectors
        pos += 2 * pt_sectors
        self.jpt_l, self.jpt_m = pos, pos + jpt_sectors
        pos += 2 * jpt_sectors
        for d in self.dirs:
            # Continuation areas right after their directory: libarchive
            # reads the image front to back and takes them only there.
            d.size = _records_size(self._iso_lengths(d))
            d.extent = pos
            pos += d.size // SECTOR
            sector, offset = pos, 0
            for piece in d.pieces:
                if offset + piece.length > SECTOR:
                    sector += 1
                    offset = 0
                piece.sector, piece.offset = sector, offset
                offset += piece.length
            d.ce_sectors = sector + 1 - pos if d.pieces else 0
            pos += d.ce_sectors
        for d in self.jdirs:
            d.jsize = _records_size(self._joliet_lengths(d))
            d.jextent = pos
            pos += d.jsize // SECTOR
        self.data_start = pos
        extents = self.extents
        for size in self.file_sizes:
            extents.append(pos if size else 0)
            pos += -(-size // SECTOR)
        if pos > MAX_SECTORS:
            raise RumpfsError(f"the image needs {pos} sectors of {SECTOR} bytes; an ISO 9660 "
                              f"volume has at most {MAX_SECTORS} (32-bit volume space size)")
        self.sectors = pos
        return pos


    # -- bytes -------------------------------------------------------------------------
    def _record(self, ident: bytes, extent: int, size: int, flags: int, node,
                susp: bytes = b"", piece: _Piece | None = None) -> bytes:
        if piece is not None:
            susp += _ce(piece)
        id_len = len(ident)
        pad = b"" if id_len % 2 else b"\0"  # the System Use area starts at an even offset
        head = DIR_RECORD.pack(_record_len(id_len, len(susp)), 0, extent,
                               extent.to_bytes(4, "big"), size, size.to_bytes(4, "big"),
                               record_date(node.mtime_ns // NS), flags, 0, 0, 1, b"\0\1", id_len)
        return b"".join((head, ident, pad, susp))

    def _extent_records(self, ident: bytes, number: int, node, susp: bytes,
                        piece) -> list[bytes]:
        """The records of a file of several extents, all but the last flagged."""
        size = self.file_sizes[number]
        count = _extent_count(size)
        first = self.extents[number]
        return [self._record(ident, first + e * (EXTENT_MAX // SECTOR),
                             min(EXTENT_MAX, size - e * EXTENT_MAX),
                             FLAG_MULTI_EXTENT if e < count - 1 else 0, node, susp, piece)
                for e in range(count)]

    def _directory(self, d: _Dir, joliet: bool) -> bytes:
        p = d.up
        record = self._record
        nodes, numbers, dirs = self.rec_nodes, self.rec_files, self.rec_dirs
        file_sizes, extents = self.file_sizes, self.extents
        if joliet:
            records = [record(b"\0", d.jextent, d.jsize, FLAG_DIRECTORY, d.node),
                       record(b"\1", p.jextent, p.jsize, FLAG_DIRECTORY, p.node)]
            for ident, r in zip(self.jrec_ids.items(d.jfirst, d.jend),
                                self.jrec_of[d.jfirst:d.jend]):
                node = nodes[r]
                if node.children is not None:
                    sub = dirs[r]
                    records.append(record(ident, sub.jextent, sub.jsize, FLAG_DIRECTORY, node))
                    continue
                number = numbers[r]
                size = 0 if number == NO_FILE else file_sizes[number]
                if size > EXTENT_MAX:
                    records += self._extent_records(ident, number, node, b"", None)
                else:
                    records.append(record(ident, extents[number] if size else 0, size, 0, node))
            size = d.jsize
        else:
            records = [record(b"\0", d.extent, d.size, FLAG_DIRECTORY, d.node,
                              self._system_use(d.node, None, 1, d.dot_piece, d.dot_susp,
                                               root=p is d), d.dot_piece),
                       record(b"\1", p.extent, p.size, FLAG_DIRECTORY, p.node,
                              self._system_use(p.node, None, 1, d.dotdot_piece,
                                               d.dotdot_susp), d.dotdot_piece)]
            system_use, names, susps, cont = (self._system_use, self.rec_names, self.rec_susp,
                                              self.rec_cont)
            for r, ident in zip(range(d.first, d.end), self.rec_ids.items(d.first, d.end)):
                node = nodes[r]
                piece = cont.get(r) if cont else None
                susp = system_use(node, names[r], len(ident), piece, susps[r])
                if node.children is not None:
                    sub = dirs[r]
                    records.append(record(ident, sub.extent, sub.size, FLAG_DIRECTORY, node,
                                          susp, piece))
                    continue
                number = numbers[r]
                size = 0 if number == NO_FILE else file_sizes[number]
                if size > EXTENT_MAX:
                    records += self._extent_records(ident, number, node, susp, piece)
                else:
                    records.append(record(ident, extents[number] if size else 0, size, 0, node,
                                          susp, piece))
            size = d.size
        # A record never crosses a sector boundary (ECMA-119 6.8.1.1).
        out, pos, start = [], 0, 0
        for k, rec in enumerate(records):
            if pos % SECTOR + len(rec) > SECTOR:
                out += records[start:k]
                out.append(bytes(SECTOR - pos % SECTOR))
                pos += SECTOR - pos % SECTOR
                start = k
            pos += len(rec)
        out += records[start:]
        out.append(bytes(size - pos))
        return b"".join(out)

    def _path_table(self, dirs, joliet: bool, fmt) -> bytes:
        out = bytearray()
        for d in dirs:
            name = d.joliet_id if joliet else d.iso_id
            extent = d.jextent if joliet else d.extent
            parent = d.up.jnumber if joliet else d.up.number
            out += fmt.pack(len(name), 0, extent, parent) + name + b"\0" * (len(name) % 2)
        return bytes(out)

    def _descriptor(self, kind: int, root_record: bytes, pt_size: int, pt_l: int, pt_m: int,
                    joliet: bool) -> bytes:
        def text(value: str, size: int) -> bytes:
            # Unused text fields are spaces: UCS-2 ones in the Joliet descriptor.
            if joliet:
                return (value.encode("utf-16-be") + " ".encode("utf-16-be") * size)[:size]
            return value.encode("ascii").ljust(size, b" ")

        label = self.label
        volume_id = (text(label[:JOLIET_LABEL_MAX], 32) if joliet
                     else _d_chars(label.encode("utf-8", "replace")).ljust(32, b" "))
        when = self.tree.root.mtime_ns // NS
        return VOLUME_DESCRIPTOR.pack_dict(dict(
            type=kind, flags=0, system_id=text("", 32), volume_id=volume_id,
            volume_space_size=both(self.sectors, 4),
            escape_sequences=(JOLIET_ESCAPE if joliet else b"").ljust(32, b"\0"),
            volume_set_size=both(1, 2), volume_sequence_number=both(1, 2),
            logical_block_size=both(SECTOR, 2),
            path_table_size=both(pt_size, 4),
            # The M table's location is big-endian: a bytes slot of the format.
            l_path_table=pt_l, m_path_table=pt_m.to_bytes(4, "big"),
            root_directory_record=root_record,
            volume_set_id=text("", 128), publisher_id=text("", 128),
            preparer_id=text("", 128), application_id=text("", 128),
            copyright_file_id=text("", 37), abstract_file_id=text("", 37),
            bibliographic_file_id=text("", 37),
            creation_date=volume_date(when), modification_date=volume_date(when),
            expiration_date=volume_date(None), effective_date=volume_date(None),
            application_use=bytes(512)))

    def write(self, sink) -> int:
        # A file starts on a sector of its own, zeros after its data: the
        # copy workers may join neighbouring files into one write.  The
        # first copies go to them now, the rest while the directories are
        # laid out.
        sink.copies_own_units(SECTOR)
        files = len(self.files)
        per_dir = -(-files // (len(self.dirs) + len(self.jdirs)))
        handed = self._hand_over(sink, 0, files // 4)
        root = self.dirs[0]
        pvd = self._descriptor(VD_PRIMARY, self._record(b"\0", root.extent, root.size,
                                                        FLAG_DIRECTORY, root.node),
                               self.pt_size, self.pt_l, self.pt_m, False)
        svd = self._descriptor(VD_SUPPLEMENTARY, self._record(b"\0", root.jextent, root.jsize,
                                                              FLAG_DIRECTORY, root.node),
                               self.jpt_size, self.jpt_l, self.jpt_m, True)
        head = pvd + svd + TERMINATOR.pack_dict({})
        sink.pwrite(head, SYSTEM_AREA_SECTORS * SECTOR)
        for where, table in ((self.pt_l, self._path_table(self.dirs, False, PATH_RECORD_L)),
                             (self.pt_m, self._path_table(self.dirs, False, PATH_RECORD_M)),
                             (self.jpt_l, self._path_table(self.jdirs, True, PATH_RECORD_L)),
                             (self.jpt_m, self._path_table(self.jdirs, True, PATH_RECORD_M))):
            sink.pwrite(table, where * SECTOR)
        # Each tree's directories (and continuation areas) follow each
        # other: written in long runs.
        done = 0
        for joliet, dirs in ((False, self.dirs), (True, self.jdirs)):
            run, run_bytes = [], 0
            run_at = (dirs[0].jextent if joliet else dirs[0].extent) * SECTOR
            for d in dirs:
                run.append(self._directory(d, joliet))
                if not joliet and d.pieces:
                    run.append(self._continuations(d))
                run_bytes += (d.jsize if joliet else d.size + d.ce_sectors * SECTOR)
                done += 1
                if run_bytes >= DIR_RUN_BYTES:
                    sink.pwrite(b"".join(run), run_at)
                    run_at += run_bytes
                    run, run_bytes = [], 0
                    handed = self._hand_over(sink, handed, done * per_dir)
            if run:
                sink.pwrite(b"".join(run), run_at)
        self._hand_over(sink, handed, files)
        return self.sectors * SECTOR

    def _continuations(self, d: _Dir) -> bytes:
        """The sectors after ``d``'s extent holding its records' continuation areas."""
        area = bytearray(d.ce_sectors * SECTOR)
        first = d.extent + d.size // SECTOR
        for piece in d.pieces:
            start = (piece.sector - first) * SECTOR + piece.offset
            data = piece.data + (_ce(piece.next) if piece.next else b"")
            area[start:start + len(data)] = data
        return bytes(area)

    def _hand_over(self, sink, start: int, end: int) -> int:
        """Give the sink's workers the copies of files ``start`` to ``end``
        (in image order), a batch at a time: one copy_at per file costs more
        than laying out its record.  (Data held in memory, not in a host
        file, is written here at once.)"""
        end = min(end, len(self.files))
        extents, add = self.extents, sink.copier.add
        for k in range(start, end, BATCH_JOBS):
            jobs = []
            stop = min(k + BATCH_JOBS, end)
            for node, size, extent in zip(self.files[k:stop], self.file_sizes[k:stop],
                                          extents[k:stop]):
                if not size:
                    continue
                data = node.data
                if isinstance(data, HostData):
                    jobs.append((data, 0, extent * SECTOR, size))
                else:
                    sink.pwrite(data.data[:size], extent * SECTOR)
            if jobs:
                add(jobs)
        return max(start, end)


def write_image(tree, sink, options: dict) -> int:
    layout = IsoLayout(tree, options.get("label"))
    layout.build()
    layout.allocate()
    return layout.write(sink)
