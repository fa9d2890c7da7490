"""The db 1.85 hash writer, judged by glibc's copy of the db 1.85 library.

``libdb1-compat`` (Debian) is the 4.4BSD hash code NetBSD's libc also
descends from; loaded with ctypes it reads our files (``get``, ``seq``),
writes reference files from the same pairs, and updates ours in place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

import pytest

from rumpfs.errors import RumpfsError
from rumpfs.etc import db185

# -- the oracle -------------------------------------------------------------------

R_FIRST, R_NEXT, R_NOOVERWRITE = 3, 7, 8
DB_HASH = 1
LORDER = {"little": 1234, "big": 4321}


class DBT(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class HASHINFO(ctypes.Structure):
    _fields_ = [("bsize", ctypes.c_uint), ("ffactor", ctypes.c_uint), ("nelem", ctypes.c_uint),
                ("cachesize", ctypes.c_uint), ("hash", ctypes.c_void_p), ("lorder", ctypes.c_int)]


class DB(ctypes.Structure):
    pass


_PDB = ctypes.POINTER(DB)
_PDBT = ctypes.POINTER(DBT)
_fn = ctypes.CFUNCTYPE
DB._fields_ = [
    ("type", ctypes.c_int),
    ("close", _fn(ctypes.c_int, _PDB)),
    ("delete", _fn(ctypes.c_int, _PDB, _PDBT, ctypes.c_uint)),
    ("get", _fn(ctypes.c_int, _PDB, _PDBT, _PDBT, ctypes.c_uint)),
    ("put", _fn(ctypes.c_int, _PDB, _PDBT, _PDBT, ctypes.c_uint)),
    ("seq", _fn(ctypes.c_int, _PDB, _PDBT, _PDBT, ctypes.c_uint)),
    ("sync", _fn(ctypes.c_int, _PDB, ctypes.c_uint)),
    ("internal", ctypes.c_void_p),
    ("fd", _fn(ctypes.c_int, _PDB)),
]


def _load():
    for name in ("libdb1.so.2", "/lib/libdb1.so.2", "/usr/lib/x86_64-linux-gnu/libdb1.so.2"):
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        lib.dbopen.restype = _PDB
        lib.dbopen.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_void_p]
        return lib
    return None


LIBDB1 = _load()
#: A missing libdb1 is a failure naming libdb1-compat (conftest.libdb1_installed).
needs_libdb1 = pytest.mark.usefixtures("libdb1_installed")


def _dbt(data: bytes):
    buf = ctypes.create_string_buffer(data, len(data))
    return DBT(ctypes.cast(buf, ctypes.c_void_p), len(data)), buf


class Libdb1:
    """A db opened through glibc's db 1.85."""

    def __init__(self, path, flags=os.O_RDONLY, lorder=None, bsize=4096, ffactor=32, nelem=256):
        info = None
        if lorder:
            info = HASHINFO(bsize, ffactor, nelem, 2 << 20, None, LORDER[lorder])
        self.db = LIBDB1.dbopen(os.fsencode(path), flags, 0o644, DB_HASH,
                                ctypes.byref(info) if info else None)
        if not self.db:
            raise OSError(ctypes.get_errno(), f"dbopen {path}")

    def get(self, key: bytes) -> bytes | None:
        k, _keep = _dbt(key)
        d = DBT()
        rc = self.db.contents.get(self.db, ctypes.byref(k), ctypes.byref(d), 0)
        assert rc in (0, 1), rc
        return ctypes.string_at(d.data, d.size) if rc == 0 else None

    def put(self, key: bytes, data: bytes) -> None:
        k, _kk = _dbt(key)
        d, _dk = _dbt(data)
        assert self.db.contents.put(self.db, ctypes.byref(k), ctypes.byref(d), R_NOOVERWRITE) == 0

    def delete(self, key: bytes) -> None:
        k, _keep = _dbt(key)
        assert self.db.contents.delete(self.db, ctypes.byref(k), 0) == 0

    def items(self) -> list[tuple[bytes, bytes]]:
        out = []
        k, d = DBT(), DBT()
        flag = R_FIRST
        while True:
            rc = self.db.contents.seq(self.db, ctypes.byref(k), ctypes.byref(d), flag)
            assert rc in (0, 1), rc
            if rc == 1:
                return out
            out.append((ctypes.string_at(k.data, k.size), ctypes.string_at(d.data, d.size)))
            flag = R_NEXT

    def close(self) -> None:
        assert self.db.contents.close(self.db) == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def libdb1_write(path, pairs, byteorder, **hashinfo) -> bytes:
    """The file libdb1 writes for these pairs, as pwd_mkdb configures it
    (or with the given bsize, ffactor, nelem)."""
    with Libdb1(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, lorder=byteorder, **hashinfo) as db:
        for key, data in pairs:
            db.put(key, data)
    return open(path, "rb").read()


def read_all(path) -> dict:
    with Libdb1(path) as db:
        items = db.items()
    found = dict(items)
    assert len(found) == len(items), "seq returned a key twice"
    return found


def header(data: bytes) -> dict:
    """A few HASHHDR fields, read with struct (big-endian, hash.h offsets)."""
    names = ("magic", "version", "lorder", "bsize", "bshift", "dsize", "ssize", "sshift",
             "ovfl_point", "last_freed", "max_bucket", "high_mask", "low_mask", "ffactor",
             "nkeys", "hdrpages", "h_charkey")
    fields = dict(zip(names, struct.unpack_from(">17i", data)))
    fields["spares"] = struct.unpack_from(">32i", data, 68)
    return fields


def page_contents(data: bytes, byteorder: str, bsize=4096) -> dict:
    """page number -> (word table, packed pairs): what a page means, without
    the bytes of its free area (libdb1 leaves malloc garbage there)."""
    e = "<" if byteorder == "little" else ">"
    pages = {0: data[:260]}
    hdrpages = struct.unpack_from(">i", data, 60)[0]
    for number in range(hdrpages, len(data) // bsize):
        page = data[number * bsize:(number + 1) * bsize]
        if page == bytes(bsize):
            continue
        (n,) = struct.unpack_from(e + "H", page)
        if 2 * (n + 3) > bsize:          # the overflow bitmap
            pages[number] = page
            continue
        words = struct.unpack_from(e + f"{n + 3}H", page)
        pages[number] = (words, page[words[-1]:])
    return pages


def pairs_for(count: int, data_len: int = 60):
    for i in range(count):
        yield b"1user%05d" % i, (b"record of user %d;" % i).ljust(data_len, b".")


# -- tests ------------------------------------------------------------------------

def test_hash4_known_values():
    # h = h * 33 + c over the bytes, modulo 2**32.
    assert db185.hash4(b"") == 0
    assert db185.hash4(b"a") == 97
    assert db185.hash4(b"ab") == 97 * 33 + 98
    assert db185.hash4(b"\xff" * 10) == sum(255 * 33 ** i for i in range(10)) % 2 ** 32


@needs_libdb1
@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("count", [1, 20, 80])
def test_same_pages_as_libdb1_without_splits(tmp_path, byteorder, count):
    pairs = list(pairs_for(count))
    ours = db185.build(pairs, byteorder)
    ref = libdb1_write(tmp_path / "ref.db", pairs, byteorder)
    assert len(ours) == len(ref) == 10 * 4096   # header, 8 buckets, bitmap
    assert ours[:4096] == ref[:4096]
    assert page_contents(ours, byteorder) == page_contents(ref, byteorder)


@needs_libdb1
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_same_buckets_as_libdb1_after_splits(tmp_path, byteorder):
    # Small pairs: no bucket of the incremental build ever overflows.
    pairs = list(pairs_for(1500, data_len=20))
    ours = db185.build(pairs, byteorder)
    ref = libdb1_write(tmp_path / "ref.db", pairs, byteorder)
    ho, hr = header(ours), header(ref)
    assert ho["max_bucket"] > 7 and ho["max_bucket"] == hr["max_bucket"]
    for key in ("high_mask", "low_mask", "ovfl_point", "spares", "nkeys", "h_charkey", "lorder"):
        assert ho[key] == hr[key], key
    # Same pages (bucket contents in the same order), same file length.
    po, pr = page_contents(ours, byteorder), page_contents(ref, byteorder)
    del po[0], pr[0]    # last_freed, a search hint, differs
    assert po == pr
    assert without_last_freed(ours, 4096) == without_last_freed(ref, 4096)
    (tmp_path / "ours.db").write_bytes(ours)
    assert read_all(tmp_path / "ours.db") == dict(pairs)


def without_last_freed(data: bytes, bsize: int) -> bytes:
    """The header pages (HASHHDR, then zeros up to the first bucket) with
    last_freed, a search hint libdb1 moves as it goes, zeroed."""
    hdrpages = struct.unpack_from(">i", data, 60)[0]
    head = bytearray(data[:hdrpages * bsize])
    head[36:40] = bytes(4)
    return bytes(head)


@needs_libdb1
@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("bsize,ffactor,nelem,count", [
    (256, 2, 1, 300),       # a header of two pages (HASHHDR is 260 bytes)
    (512, 4, 1, 700),       # many splits from the smallest table
    (1024, 8, 5000, 900),   # a large first table
    (512, 4, 17, 300),      # nelem - 1 a multiple of ffactor: 5 buckets, so 8
])
def test_same_file_as_libdb1_for_other_hash_parameters(tmp_path, byteorder, bsize, ffactor,
                                                       nelem, count):
    """Another bsize, fill factor and first table size: every header field
    but last_freed and every page's table and pairs as libdb1 makes them
    (small pairs: no bucket of libdb1's step-by-step build overflows)."""
    pairs = [(b"k%d" % i, b"%d" % (i * 7)) for i in range(count)]
    hashinfo = dict(bsize=bsize, ffactor=ffactor, nelem=nelem)
    ours = db185.build(pairs, byteorder, **hashinfo)
    ref = libdb1_write(tmp_path / "ref.db", pairs, byteorder, **hashinfo)
    assert len(ours) == len(ref)
    assert without_last_freed(ours, bsize) == without_last_freed(ref, bsize)
    po, pr = page_contents(ours, byteorder, bsize), page_contents(ref, byteorder, bsize)
    assert po.keys() == pr.keys()
    for number in po:
        if number >= header(ours)["hdrpages"]:
            assert po[number] == pr[number], number
    (tmp_path / "ours.db").write_bytes(ours)
    with Libdb1(tmp_path / "ours.db") as db:
        assert dict(db.items()) == dict(pairs)


@needs_libdb1
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_overflow_pages_read_by_libdb1(tmp_path, byteorder):
    # 32 pairs of ~700 bytes per bucket: every bucket chains several pages.
    pairs = list(pairs_for(2000, data_len=700))
    ours = db185.build(pairs, byteorder)
    h = header(ours)
    assert h["spares"][h["ovfl_point"]] > 4 + 100, "expected many overflow pages"
    # Before libdb1 reads it (a bad marker can crash it): in hash.h a pair
    # whose data word is below REAL_KEY (4) is a marker; the only one a file
    # without big keys has is (address, OVFLPAGE = 0), last on its page.
    links = 0
    for number, content in page_contents(ours, byteorder).items():
        if number == 0 or isinstance(content, bytes):
            continue
        words = content[0]
        n = words[0]
        for i in range(1, n + 1, 2):
            if words[i + 1] < 4:
                assert words[i + 1] == 0 and i + 2 == n + 1, (number, words[i:i + 2])
                links += 1
    assert links > 100
    path = tmp_path / "ours.db"
    path.write_bytes(ours)
    assert read_all(path) == dict(pairs)
    with Libdb1(path) as db:
        for key, data in pairs[::37]:
            assert db.get(key) == data
        assert db.get(b"1nobody") is None


def overflow_bit(addr: int, spares) -> int:
    """The bitmap bit of the overflow page at ``addr`` (hash_page.c: the
    split point in the bits above SPLITSHIFT = 11, the page's offset in it
    below, counted on from the spares of the split point before)."""
    split, offset = addr >> 11, addr & 0x7FF
    return (spares[split - 1] if split else 0) + offset - 1


def overflow_links(data: bytes, byteorder: str, bsize: int) -> list[int]:
    """The overflow addresses the bucket and overflow pages link to (the
    (address, OVFLPAGE = 0) pair that ends a page's table)."""
    links = []
    for number, content in page_contents(data, byteorder, bsize).items():
        if number == 0 or isinstance(content, bytes):
            continue
        words = content[0]
        n = words[0]
        if n >= 2 and words[n] == 0 and words[n - 1] >= 4:
            links.append(words[n - 1])
    return links


def assert_overflow_bitmap(data: bytes, byteorder: str, bsize: int, ffactor: int,
                           nelem: int) -> int:
    """The overflow bitmap as hash_page.c keeps it: bit 0 (the bitmap page
    itself) and the bit of every linked overflow page set; of the l2 + 1
    pages reserved when the table was made (init_htab: l2 = log2 of the
    first bucket count) the unused ones clear; every later bit set (__ibitmap
    fills them, a writer allocates at the top).  Returns the pages in use.
    (Checked before libdb1 updates a file: a wrong bitmap can crash it.)"""
    h = header(data)
    bitmaps = struct.unpack_from(">32H", data, 68 + 32 * 4)
    assert bitmaps[1:] == (0,) * 31
    first_buckets = (nelem - 1) // ffactor + 1
    reserved = db185.log2_ceil(max(first_buckets, 2)) + 1
    in_use = {0} | {overflow_bit(a, h["spares"]) for a in overflow_links(data, byteorder, bsize)}
    # The bitmap page, by its own address.
    split, offset = bitmaps[0] >> 11, bitmaps[0] & 0x7FF
    first_bucket_of_split = (1 << split) - 1
    page = (first_bucket_of_split + h["hdrpages"]
            + (h["spares"][db185.log2_ceil(first_bucket_of_split + 1) - 1]
               if first_bucket_of_split else 0) + offset)
    words = struct.unpack_from(("<" if byteorder == "little" else ">") + f"{bsize // 4}I",
                               data, page * bsize)
    bits = [(w >> b) & 1 for w in words for b in range(32)]
    assert bits == [1 if i in in_use or i >= reserved else 0 for i in range(len(bits))]
    return len(in_use)


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("bsize, ffactor, nelem, count, data_len", [
    (4096, 32, 256, 2000, 700),     # pwd_mkdb's table, every bucket chained
    (256, 4, 1, 3000, 100),         # overflow pages at many split points
])
def test_overflow_bitmap_marks_the_pages_in_use(byteorder, bsize, ffactor, nelem, count,
                                                data_len):
    pairs = list(pairs_for(count, data_len))
    ours = db185.build(pairs, byteorder, bsize=bsize, ffactor=ffactor, nelem=nelem)
    assert assert_overflow_bitmap(ours, byteorder, bsize, ffactor, nelem) > 100


@needs_libdb1
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_libdb1_can_keep_updating_our_file(tmp_path, byteorder):
    """Header, spares and bitmap are consistent enough for a writer to go on."""
    pairs = list(pairs_for(600, data_len=300))
    path = tmp_path / "ours.db"
    path.write_bytes(db185.build(pairs, byteorder))
    assert_overflow_bitmap(path.read_bytes(), byteorder, 4096, 32, 256)
    more = [(b"2extra%05d" % i, b"x" * (i % 500)) for i in range(3000)]
    with Libdb1(path, os.O_RDWR) as db:
        for key, data in more:
            db.put(key, data)
        for key, _ in pairs[::3]:
            db.delete(key)
    expected = dict(pairs + more)
    for key, _ in pairs[::3]:
        del expected[key]
    assert read_all(path) == expected


def test_reproducible_and_byte_order():
    pairs = list(pairs_for(300))
    little = db185.build(pairs, "little")
    assert little == db185.build(pairs, "little")
    big = db185.build(pairs, "big")
    assert header(little)["lorder"] == 1234 and header(big)["lorder"] == 4321
    assert little[:4] == big[:4] == b"\x00\x06\x15\x61"   # the header is big-endian in both


def test_record_larger_than_a_page_is_refused():
    db = db185.HashFile("little")
    with pytest.raises(RumpfsError, match=r"^db record of 4083 bytes is larger than the 4082 "
                                          r"bytes one 4096-byte page holds$"):
        db.put(b"k", b"x" * 4082)
    db.put(b"k", b"x" * 4081)   # the largest that fits


@needs_libdb1
def test_many_fat_records_spread_over_more_buckets(tmp_path):
    """More overflow pages than one split point addresses: more buckets instead."""
    pairs = list(pairs_for(6000, data_len=2000))
    data = db185.build(pairs, "little")
    h = header(data)
    assert h["max_bucket"] + 1 > 6000 // 32
    path = tmp_path / "fat.db"
    path.write_bytes(data)
    assert read_all(path) == dict(pairs)


@needs_libdb1
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_small_pages_filled_to_the_last_pair(tmp_path, byteorder):
    """512-byte pages, 64 pairs per bucket of 14-byte pairs: every bucket
    chains pages filled as far as hash_page.c lets them (a pair only goes
    in while an overflow link still fits after it); libdb1 reads every pair
    and the page tables never run into the pairs."""
    pairs = [(b"k%05d" % i, b"v%03d" % (i % 1000)) for i in range(3000)]
    ours = db185.build(pairs, byteorder, bsize=512, ffactor=64, nelem=1)
    for number, content in page_contents(ours, byteorder, 512).items():
        if number and not isinstance(content, bytes):
            words, _ = content
            n, free, offset = words[0], words[-2], words[-1]
            assert free == offset - 2 * (n + 3) >= 0, number
    path = tmp_path / "small.db"
    path.write_bytes(ours)
    assert read_all(path) == dict(pairs)


@needs_libdb1
@pytest.mark.parametrize("count, grows", [(2048, False), (2049, True)])
def test_one_split_point_holds_2047_overflow_pages(tmp_path, count, grows):
    """Pairs of 156 bytes, one to a 256-byte page, in a table of two buckets
    that never splits (fill factor 65536): the bitmap and count - 2 pages
    of overflow.  An address keeps a page's offset in 11 bits, so 2047 of
    them fit the first split point; one more and the keys must spread over
    more buckets.  libdb1 reads every pair either way."""
    pairs = [(b"k%05d" % i, b"d" * 150) for i in range(count)]
    ours = db185.build(pairs, "little", bsize=256, ffactor=65536, nelem=1)
    h = header(ours)
    assert (h["max_bucket"] > 1) == grows, h["max_bucket"]
    if not grows:
        assert len(overflow_links(ours, "little", 256)) == count - 2
    path = tmp_path / "ours.db"
    path.write_bytes(ours)
    assert read_all(path) == dict(pairs)


def test_log2_ceil_is_the_db_codes_log2():
    """hash_log2.c's __log2: the smallest i with 2**i >= n (0 for 0 and 1)."""
    assert [db185.log2_ceil(n) for n in (0, 1, 2, 3, 4, 5, 8, 9, 1 << 20, (1 << 20) + 1)] == \
        [0, 0, 1, 2, 2, 3, 3, 4, 20, 21]


@needs_libdb1
@pytest.mark.parametrize("count", [263, 264, 265])
def test_split_at_the_insertion_that_passes_the_fill_factor(tmp_path, count):
    """pwd_mkdb's table starts with 8 buckets and splits when an insertion
    leaves more than 32 keys per bucket: the 264th key splits once, as in
    libdb1."""
    pairs = list(pairs_for(count, data_len=10))
    ours = db185.build(pairs, "little")
    ref = libdb1_write(tmp_path / "ref.db", pairs, "little")
    for key in ("max_bucket", "high_mask", "low_mask", "ovfl_point", "spares"):
        assert header(ours)[key] == header(ref)[key], key


@needs_libdb1
@pytest.mark.parametrize("count, dsize", [(70_000, 256), (131_300, 512)])
def test_directory_size_of_a_large_table(tmp_path, count, dsize):
    """dsize, the directory's segments (256 buckets each): a reader's
    hash_open allocates dsize of them and fills the first max_bucket / 256 +
    1, so it must be at least that; ours is the smallest power of two that
    is, and at least 256 (DEF_DIRSIZE): 35,000 buckets fit 256 segments,
    65,650 need 257, so 512.  (libdb1's own growth doubles it as a byte
    count, sizeof(SEGMENT *) * 2 * dsize: 4096 on a 64-bit writer, 2048 on a
    32-bit one; readers take any of these.)  libdb1 reads the keys back."""
    pairs = [(b"%d" % i, b"") for i in range(count)]
    ours = db185.build(pairs, "little", bsize=256, ffactor=1, nelem=1)
    ref = libdb1_write(tmp_path / "ref.db", pairs, "little", bsize=256, ffactor=1, nelem=1)
    h = header(ours)
    assert h["max_bucket"] == header(ref)["max_bucket"]
    assert h["dsize"] == dsize >= h["max_bucket"] // 256 + 1
    path = tmp_path / "ours.db"
    path.write_bytes(ours)
    with Libdb1(path) as db:
        for key, data in pairs[::997]:
            assert db.get(key) == data


def test_errors_say_what_is_wrong():
    db = db185.HashFile("little")
    db.put(b"k", b"v")
    with pytest.raises(ValueError) as err:
        db.put(b"k", b"w")
    assert str(err.value) == "duplicate key b'k'"
    with pytest.raises(ValueError) as err:
        db185.HashFile("middle")
    assert str(err.value) == "byte order 'middle': 'little' or 'big'"
    with pytest.raises(ValueError) as err:
        db185.pack_page_table("little", dict(n=3, entries=[1, 2], free=0, offset=0))
    assert str(err.value) == "page table: n 3 != 2 entries"
    with pytest.raises(AttributeError) as err:
        db185.NO_SUCH_NAME  # noqa: B018
    assert str(err.value) == "module 'rumpfs.etc.db185' has no attribute 'NO_SUCH_NAME'"


@needs_libdb1
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_pair_that_leaves_exactly_room_for_the_link_stays_on_its_page(tmp_path, byteorder):
    """hash_page.c puts a pair on a page while its two words, its bytes and
    an overflow link (OVFLSIZE, 4 bytes) still fit the free space: on a
    256-byte page (250 free) a pair needing 120 then one needing 126 leave
    exactly 4 bytes, so both stay on the bucket page, the page libdb1
    writes; one byte more and the second goes to an overflow page (where
    libdb1, adding pairs one at a time, would also split the table: not
    compared), and libdb1 reads both."""
    keys = [k for k in (b"key%03d" % i for i in range(200)) if db185.hash4(k) & 1 == 0]
    hashinfo = dict(bsize=256, ffactor=65536, nelem=1)
    for extra, pages in ((0, 1), (1, 2)):
        # need = 4 + key (6 bytes) + data
        pairs = [(keys[0], b"a" * (120 - 10)), (keys[1], b"b" * (126 - 10 + extra))]
        ours = db185.build(pairs, byteorder, **hashinfo)
        po = page_contents(ours, byteorder, 256)
        chained = [c for n, c in po.items() if n and not isinstance(c, bytes) and c[0][0]]
        assert len(chained) == pages
        if not extra:
            ref = libdb1_write(tmp_path / "ref.db", pairs, byteorder, **hashinfo)
            pr = page_contents(ref, byteorder, 256)
            for number in po:
                if number >= header(ours)["hdrpages"]:
                    assert po[number] == pr[number], number
        path = tmp_path / "ours.db"
        path.write_bytes(ours)
        assert read_all(path) == dict(pairs)
