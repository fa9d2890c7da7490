"""Berkeley DB 1.85 hash files, the format of NetBSD's /etc/pwd.db and spwd.db.

NetBSD libc looks users up with ``dbopen(DB_HASH)`` (4.4BSD ``lib/libc/db/hash``,
``hash.h`` and ``hash_page.c`` describe the layout); ``pwd_mkdb`` creates the
files with ``bsize`` 4096, ``ffactor`` 32 and ``nelem`` 256.  A file is:

* page 0, the header (``HASHHDR``), always big-endian; its ``lorder`` field
  (1234 or 4321) gives the byte order of everything else;
* one page per bucket.  Bucket ``b`` lives at page
  ``b + hdrpages + spares[log2(b + 1) - 1]``: overflow pages allocated while
  the table had ``2**s`` buckets sit between bucket ``2**s - 1`` and bucket
  ``2**s``, and ``spares[s]`` counts them, cumulatively;
* overflow pages, named by a 16-bit address ``split << 11 | offset``, at page
  ``bucket_page(2**split - 1) + offset``; the first one (split ``l2``,
  offset 1) is the bitmap of overflow pages in use.

A page starts with a table of 16-bit words ``[n, key0, data0, key1, data1, ...,
free, offset]``: ``n`` entries, then the free byte count and the lowest used
offset.  Keys and data are packed from the end of the page downwards, each
key directly above its data, so lengths follow from neighbouring offsets.  A
pair ``(address, OVFLPAGE)`` ending the table chains an overflow page.

The table grows by linear hashing: a bucket is split whenever the keys per
bucket exceed ``ffactor``; a key goes to ``hash & high_mask``, or to
``hash & low_mask`` when that bucket does not exist yet.  This writer knows
every pair beforehand, so it sizes the table once for the final key count,
places each pair in its bucket in insertion order and chains overflow pages
where a bucket's pairs do not fit one page.  The pages are those ``dbopen``
builds one insertion at a time whenever no bucket overflowed on the way
(only the free areas, which dbopen leaves uninitialised, and the
``last_freed`` search hint differ), and ``dbopen`` can keep updating the file.

The structures are declared below with construct (``HASHHDR``,
:func:`page_table`, :func:`bitmap_page`), but importing this module does not
import construct (35-55 ms, more than writing the databases): the
declarations are made when first used, and the writer packs with ``struct``
forms described by ``_compiled_db185.py``, generated from them by
``python -m rumpfs.formats.precompile`` (:mod:`rumpfs.formats.precompile`)
as long as it was generated from this very source; otherwise the
descriptions are derived from construct.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from ..errors import RumpfsError

#: ``HASHMAGIC`` and ``HASHVERSION`` of hash.h.
HASHMAGIC = 0x061561
HASHVERSION = 2
#: ``lorder`` values: the byte order as the digits of ``BYTE_ORDER``.
LORDER = {"little": 1234, "big": 4321}
#: Spare points and bitmap slots in the header (``NCACHED``).
NCACHED = 32
#: The header records ``hash(CHARKEY)`` so a reader can tell its hash function is ours.
CHARKEY = b"%$sniglet^&\0"
#: ``DEF_SEGSIZE``, ``DEF_SEGSIZE_SHIFT``, ``DEF_DIRSIZE``: the in-memory bucket directory.
DEF_SEGSIZE = 256
DEF_SEGSIZE_SHIFT = 8
DEF_DIRSIZE = 256
#: The header occupies at least this many bytes (``MINHDRSIZE``).
MINHDRSIZE = 512
#: Overflow address: split point in the high bits, page offset in the low 11.
SPLITSHIFT = 11
SPLITMASK = (1 << SPLITSHIFT) - 1
#: The data slot of a table pair that chains an overflow page.
OVFLPAGE = 0
#: Bytes of one table word; a pair costs two, the page's n/free/offset three.
WORD = 2
PAIR_WORDS = 2
PAGE_META_WORDS = 3
#: Room kept on every page for a later overflow link (``OVFLSIZE``).
OVFLSIZE = 2 * WORD
#: Bits per bitmap word, and a bitmap word with every page in use.
BITS_PER_MAP = 32
ALL_SET = 0xFFFFFFFF

#: pwd_mkdb's ``HASHINFO``.
PWD_BSIZE = 4096
PWD_FFACTOR = 32
PWD_NELEM = 256

# construct is imported by the functions that declare, not by the module:
# the writer gets by without it (see the module docstring).


@lru_cache(maxsize=None)
def _hashhdr():
    """``HASHHDR``: hash.h, written in network byte order whatever ``lorder`` says."""
    from construct import Array, Int16ub, Int32sb, Int32ub, Struct

    return Struct(
        "magic" / Int32sb,
        "version" / Int32sb,
        "lorder" / Int32ub,
        "bsize" / Int32sb,
        "bshift" / Int32sb,
        "dsize" / Int32sb,
        "ssize" / Int32sb,
        "sshift" / Int32sb,
        "ovfl_point" / Int32sb,
        "last_freed" / Int32sb,
        "max_bucket" / Int32sb,
        "high_mask" / Int32sb,
        "low_mask" / Int32sb,
        "ffactor" / Int32sb,
        "nkeys" / Int32sb,
        "hdrpages" / Int32sb,
        "h_charkey" / Int32ub,
        "spares" / Array(NCACHED, Int32sb),
        "bitmaps" / Array(NCACHED, Int16ub),
    )


def __getattr__(name: str):
    # HASHHDR: declared on first use.
    if name != "HASHHDR":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _hashhdr()


def page_table(byteorder: str):
    """The word table at the start of a bucket or overflow page (construct)."""
    from construct import Array, Int16ub, Int16ul, Struct, this

    u16 = Int16ul if byteorder == "little" else Int16ub
    return Struct(
        "n" / u16,
        "entries" / Array(this.n, u16),
        "free" / u16,
        "offset" / u16,
    )


def bitmap_page(byteorder: str, bsize: int):
    """An overflow bitmap page: bit ``p - 1`` set when overflow page ``p`` is in
    use (construct)."""
    from construct import Array, Int32ub, Int32ul

    return Array(bsize // 4, Int32ul if byteorder == "little" else Int32ub)


# -- precompiled forms ------------------------------------------------------------


def precompile() -> dict:
    """What ``python -m rumpfs.formats.precompile`` writes into
    ``_compiled_db185.py`` (imports construct): ``HASHHDR``'s description
    (``struct`` format without byte order, field tree, size) and byte order;
    the page table's words in order as ``(name, format character, name of
    the field holding the count, or None)``; the bitmap's word format."""
    from construct import Array, FormatField

    from ..formats.precompile import byteorder_of, describe, unwrap

    def word(con, where: str) -> str:
        con = unwrap(con)
        if not isinstance(con, FormatField):  # pragma: no cover
            raise TypeError(f"{where}: not an integer field")
        return con.fmtstr[1:]

    header = _hashhdr()
    fmt, fields = describe(header)
    # The words of one byte order: the other differs only in the prefix
    # (tests/test_precompile.py packs both against construct).
    words = []
    declared = page_table("little").subcons
    for i, sc in enumerate(declared):
        inner = unwrap(sc)
        if isinstance(inner, Array):
            # The count is an expression of an earlier field (this.n):
            # find which by giving each earlier field a distinct value.
            probe = {d.name: 1000 + j for j, d in enumerate(declared[:i])}
            count = inner.count(probe) if callable(inner.count) else None
            counted = next((k for k, v in probe.items() if v == count), None)
            if counted is None:  # pragma: no cover
                raise TypeError(f"page table {sc.name}: count is not an earlier field")
            words.append((sc.name, word(inner.subcon, sc.name), counted))
        else:
            words.append((sc.name, word(inner, sc.name), None))
    return {
        "HASHHDR": (fmt, fields, header.sizeof()),
        "HASHHDR_BYTEORDER": byteorder_of(header),
        "PAGE_TABLE": tuple(words),
        "BITMAP_WORD": word(bitmap_page("little", PWD_BSIZE).subcon, "bitmap"),
    }


@lru_cache(maxsize=None)
def _generated():
    """``_compiled_db185``, generated from this module, if it was generated
    from this very source; else None (construct derives)."""
    from ..formats.precompile import load

    return load(__name__, globals().get("__file__"))


@lru_cache(maxsize=None)
def _facts() -> dict:
    generated = _generated()
    return vars(generated) if generated is not None else precompile()


_PREFIX = {"little": "<", "big": ">"}


@lru_cache(maxsize=None)
def fast_header():
    """``HASHHDR`` as a precompiled ``struct`` form
    (:class:`~rumpfs.formats.ffs.layout.FastStruct`)."""
    from ..formats.ffs.layout import FastStruct

    fmt, fields, size = _facts()["HASHHDR"]
    packer = FastStruct(fmt, fields, _facts()["HASHHDR_BYTEORDER"])
    if packer.size != size:  # pragma: no cover - the generator derived both
        raise AssertionError(f"HASHHDR: struct size {packer.size} != {size}")
    return packer


def pack_page_table(byteorder: str, values: dict) -> bytes:
    """:func:`page_table` built from ``values`` (``entries`` a list; the
    count field is its length), with ``struct``."""
    fmt = [_PREFIX[byteorder]]
    flat = []
    for name, char, counted in _facts()["PAGE_TABLE"]:
        if counted is None:
            fmt.append(char)
            flat.append(values[name])
        else:
            items = values[name]
            if values.get(counted, len(items)) != len(items):
                raise ValueError(f"page table: {counted} {values[counted]} != {len(items)} {name}")
            fmt.append(f"{len(items)}{char}")
            flat.extend(items)
    return struct.pack("".join(fmt), *flat)


def pack_bitmap_page(byteorder: str, words: list) -> bytes:
    """:func:`bitmap_page` built from its words, with ``struct``."""
    return struct.pack(f"{_PREFIX[byteorder]}{len(words)}{_facts()['BITMAP_WORD']}", *words)


def hash4(data: bytes) -> int:
    """The default hash of db 1.85 (Torek's ``h = h * 33 + c``)."""
    h = 0
    for c in data:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


def log2_ceil(n: int) -> int:
    """Smallest ``i`` with ``2**i >= n`` (``__log2`` of the db code)."""
    return max(n - 1, 0).bit_length()


class HashFile:
    """A db 1.85 hash file built from key/data pairs, written at once.

    Keys must be unique (as ``put`` with ``R_NOOVERWRITE`` leaves them).
    """

    def __init__(self, byteorder: str, bsize: int = PWD_BSIZE,
                 ffactor: int = PWD_FFACTOR, nelem: int = PWD_NELEM):
        if byteorder not in LORDER:
            raise ValueError(f"byte order {byteorder!r}: 'little' or 'big'")
        self.byteorder = byteorder
        self.bshift = log2_ceil(bsize)
        self.bsize = 1 << self.bshift
        self.ffactor = ffactor
        self.nelem = nelem
        self.pairs: list[tuple[bytes, bytes]] = []
        self._keys: set[bytes] = set()

    # -- input ----------------------------------------------------------------
    @property
    def max_pair(self) -> int:
        """Largest key + data that fits one page (longer pairs need big-key pages)."""
        return self.bsize - PAGE_META_WORDS * WORD - PAIR_WORDS * WORD - OVFLSIZE

    def put(self, key: bytes, data: bytes) -> None:
        key, data = bytes(key), bytes(data)
        if key in self._keys:
            raise ValueError(f"duplicate key {key!r}")
        if len(key) + len(data) > self.max_pair:
            raise RumpfsError(f"db record of {len(key) + len(data)} bytes is larger than "
                              f"the {self.max_pair} bytes one {self.bsize}-byte page holds")
        self._keys.add(key)
        self.pairs.append((key, data))

    # -- table geometry -------------------------------------------------------
    def _initial_l2(self) -> int:
        """Split point of a new table: enough buckets for ``nelem`` (``init_htab``)."""
        buckets = (self.nelem - 1) // self.ffactor + 1
        return log2_ceil(max(buckets, 2))

    def _grown_max_bucket(self) -> int:
        """``max_bucket`` after inserting every pair: one split each time the
        keys per bucket exceed the fill factor."""
        max_bucket = (1 << self._initial_l2()) - 1
        for nkeys in range(1, len(self.pairs) + 1):
            if nkeys // (max_bucket + 1) > self.ffactor:
                max_bucket += 1
        return max_bucket

    def _masks(self, max_bucket: int) -> tuple[int, int]:
        """(low_mask, high_mask) as a table grown to ``max_bucket`` keeps them."""
        initial = (1 << self._initial_l2()) - 1
        if max_bucket == initial:
            return initial, (initial << 1) | 1
        high = (1 << max_bucket.bit_length()) - 1
        return high >> 1, high

    @staticmethod
    def bucket_of(key: bytes, max_bucket: int, low_mask: int, high_mask: int) -> int:
        bucket = hash4(key) & high_mask
        return bucket if bucket <= max_bucket else bucket & low_mask

    # -- layout -----------------------------------------------------------------
    def _chains(self, max_bucket: int, low_mask: int, high_mask: int) -> list[list[list]]:
        """Each bucket's pages, each page a list of pairs, in insertion order."""
        buckets: list[list] = [[] for _ in range(max_bucket + 1)]
        for pair in self.pairs:
            buckets[self.bucket_of(pair[0], max_bucket, low_mask, high_mask)].append(pair)
        empty_free = self.bsize - PAGE_META_WORDS * WORD
        chains = []
        for pairs in buckets:
            pages: list[list] = [[]]
            free = empty_free
            for key, data in pairs:
                need = PAIR_WORDS * WORD + len(key) + len(data)
                # A pair goes in only if an overflow link still fits after it.
                if need + OVFLSIZE > free:
                    pages.append([])
                    free = empty_free
                pages[-1].append((key, data))
                free -= need
            chains.append(pages)
        return chains

    def build(self) -> bytes:
        """The whole file."""
        l2 = self._initial_l2()
        reserved = l2 + 1       # overflow page numbers 1..l2+1 exist from the start
        max_bucket = self._grown_max_bucket()
        while True:
            low_mask, high_mask = self._masks(max_bucket)
            chains = self._chains(max_bucket, low_mask, high_mask)
            novfl = sum(len(pages) - 1 for pages in chains)
            ovfl_point = max(l2, log2_ceil(max_bucket + 1))
            base = reserved if ovfl_point > l2 else 0
            extra = max(0, novfl - (reserved - 1))
            if reserved + extra - base <= SPLITMASK:
                break
            # Too many overflow pages for one split point: spread the keys
            # over more buckets instead.
            max_bucket = 2 * max_bucket + 1

        spares = [0] * NCACHED
        for s in range(l2, max(ovfl_point, l2 + 1) + 1):
            spares[s] = reserved
        spares[ovfl_point] += extra

        hdrpages = -(-max(fast_header().size, MINHDRSIZE) // self.bsize)

        def bucket_page(b: int) -> int:
            return b + hdrpages + (spares[log2_ceil(b + 1) - 1] if b else 0)

        def split_of(number: int) -> tuple[int, int]:
            """(split point, offset) of overflow page ``number`` (1-based)."""
            for s in range(ovfl_point + 1):
                if number <= spares[s]:
                    return s, number - (spares[s - 1] if s else 0)
            raise AssertionError(number)

        def overflow_page(addr: int) -> int:
            split, offset = addr >> SPLITSHIFT, addr & SPLITMASK
            return bucket_page((1 << split) - 1) + offset

        # Overflow page numbers: first those reserved at creation, then new ones.
        # The pages reserved at creation start free, every other bit set
        # (``__ibitmap``); the bitmap page itself is number 1.
        clear_words = (reserved - 1) // BITS_PER_MAP + 1
        bitmap = [0] * clear_words + [ALL_SET] * (self.bsize // 4 - clear_words)
        bitmap[clear_words - 1] = (ALL_SET << (reserved % BITS_PER_MAP)) & ALL_SET
        next_number = 1

        def allocate() -> int:
            nonlocal next_number
            number = next_number
            next_number += 1
            bitmap[(number - 1) // BITS_PER_MAP] |= 1 << ((number - 1) % BITS_PER_MAP)
            split, offset = split_of(number)
            return (split << SPLITSHIFT) | offset

        bitmap_addr = allocate()
        # Buckets a split wrote are initialised pages even when empty; the
        # others were never written (a reader takes a zero page as empty).
        split = set()
        for new_bucket in range(1 << l2, max_bucket + 1):
            split.add(new_bucket)
            split.add(new_bucket & ((1 << (new_bucket.bit_length() - 1)) - 1))
        pages: dict[int, bytes] = {}
        for bucket, chain in enumerate(chains):
            if not chain[0] and bucket not in split:
                continue
            addrs = [allocate() for _ in chain[1:]]
            where = [bucket_page(bucket)] + [overflow_page(a) for a in addrs]
            for i, page_pairs in enumerate(chain):
                link = addrs[i] if i < len(addrs) else None
                pages[where[i]] = self._page(page_pairs, link)
        pages[overflow_page(bitmap_addr)] = pack_bitmap_page(self.byteorder, bitmap)

        header = fast_header().pack_dict(dict(
            magic=HASHMAGIC, version=HASHVERSION, lorder=LORDER[self.byteorder],
            bsize=self.bsize, bshift=self.bshift,
            dsize=max(DEF_DIRSIZE, 1 << log2_ceil((max_bucket + DEF_SEGSIZE) // DEF_SEGSIZE)),
            ssize=DEF_SEGSIZE, sshift=DEF_SEGSIZE_SHIFT,
            ovfl_point=ovfl_point, last_freed=2, max_bucket=max_bucket,
            high_mask=high_mask, low_mask=low_mask, ffactor=self.ffactor,
            nkeys=len(self.pairs), hdrpages=hdrpages, h_charkey=hash4(CHARKEY),
            spares=spares, bitmaps=[bitmap_addr]))  # the other NCACHED - 1 are 0
        pages[0] = header
        out = bytearray((max(pages) + 1) * self.bsize)
        for number, data in pages.items():
            out[number * self.bsize:number * self.bsize + len(data)] = data
        return bytes(out)

    def _page(self, pairs: list, link: int | None) -> bytes:
        """One bucket or overflow page: the word table, then pairs from the end."""
        page = bytearray(self.bsize)
        entries = []
        offset = self.bsize
        for key, data in pairs:
            offset -= len(key)
            page[offset:offset + len(key)] = key
            entries.append(offset)
            offset -= len(data)
            page[offset:offset + len(data)] = data
            entries.append(offset)
        if link is not None:
            entries += [link, OVFLPAGE]
        table = pack_page_table(self.byteorder, dict(
            n=len(entries), entries=entries,
            free=offset - (len(entries) + PAGE_META_WORDS) * WORD, offset=offset))
        page[:len(table)] = table
        return bytes(page)


def build(pairs, byteorder: str, **hashinfo) -> bytes:
    """A db 1.85 hash file holding ``pairs`` (an iterable of key, data)."""
    db = HashFile(byteorder, **hashinfo)
    for key, data in pairs:
        db.put(key, data)
    return db.build()
