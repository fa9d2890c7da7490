"""Helpers shared by the FFS reader and checker tests.

Images come from NetBSD's makefs (Debian package ``makefs``), which nobody on
this project wrote; dissect.ffs (PyPI) is the independent reader of every
image, of either byte order (``dissect_records``, the one dissect judge of
the tests), and ``recount_summaries`` recounts every free count from the
cylinder-group maps.  Patching helpers find their offsets through
``rumpfs.formats.ffs.layout`` so corruption tests hit exactly one field.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess

import pytest
import treecompare as tc
from conftest import require_module, require_tool

from rumpfs.formats.ffs import layout as L
from rumpfs.formats.ffs.reader import FfsReader

HAVE_MAKEFS = shutil.which("makefs") is not None
#: Session fixtures are imported by two test modules; build them once.
_CACHE: dict = {}

#: A missing makefs is a failure naming its Debian package (conftest.makefs_tool).
needs_makefs = pytest.mark.usefixtures("makefs_tool")


def makefs(image, tree, *opts, version=1, endian=None, size=None, minsize="1m"):
    """Run Debian's makefs: ``opts`` go to ``-o`` (bsize=..., fsize=...)."""
    cmd = ["makefs", "-t", "ffs"]
    if endian:
        cmd += ["-B", endian]
    if size:
        cmd += ["-s", size]
    elif minsize:
        cmd += ["-M", minsize]
    o = [f"version={version}", *opts]
    cmd += ["-o", ",".join(o), os.fspath(image), os.fspath(tree)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}"
    return image


def open_reader(path) -> FfsReader:
    f = open(path, "rb")
    return FfsReader(f, 0, os.fstat(f.fileno()).st_size)


def reader_records(path) -> dict:
    r = open_reader(path)
    try:
        return tc.from_entries(r.entries(), r.read)
    finally:
        r.f.close()


# --- the shared dissect.ffs judge ---------------------------------------------------

_DISSECT: dict = {}


def dissect_module(byteorder: str = "little"):
    """dissect.ffs's reader module for one byte order.

    dissect.ffs parses every on-disk structure through one cstruct instance
    (``dissect.ffs.c_ffs.c_ffs``, little-endian); for big-endian images the
    same module is loaded a second time with that instance rebuilt from
    dissect's own definitions as big-endian.  Its code and struct layouts
    stay dissect's: only the byte order differs.
    """
    if byteorder not in _DISSECT:
        ffs_mod = require_module("dissect.ffs.ffs", "dissect.ffs")
        if byteorder == "little":
            _DISSECT[byteorder] = ffs_mod
        else:
            import importlib.util

            from dissect.cstruct import cstruct
            from dissect.ffs import c_ffs as c_ffs_mod
            spec = importlib.util.find_spec("dissect.ffs.ffs")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mod.c_ffs = cstruct(endian=">").load(c_ffs_mod.ffs_def)
            _DISSECT[byteorder] = mod
    return _DISSECT[byteorder]


def dissect_open(f, byteorder: str | None = None):
    """dissect.ffs's FFS object for an open image; ``byteorder=None`` tries
    little-endian, then big-endian (so the judge names the order it read)."""
    orders = [byteorder] if byteorder else ["little", "big"]
    for order in orders:
        mod = dissect_module(order)
        try:
            fs = mod.FFS(f)
        except mod.Error:
            continue
        fs.byteorder, fs.module = order, mod
        return fs
    raise AssertionError(f"dissect.ffs finds no {byteorder or 'FFS'} superblock in {f.name}")


def dissect_records(path, byteorder: str | None = None) -> dict:
    """The image as dissect.ffs sees it, in treecompare records."""
    import hashlib

    out = {}
    with open(path, "rb") as f:
        fs = dissect_open(f, byteorder)
        stack = [(b"", fs.root)]
        while stack:
            rel, node = stack.pop()
            din = node.inode
            mode = din.di_mode
            kind = stat.S_IFMT(mode)
            t = tc.TYPES.get(kind, "unknown")
            target = digest = rdev = None
            if t == "symlink":
                target = os.fsencode(node.link)
            elif t == "file":
                h = hashlib.sha256()
                fh = node.open()
                while True:
                    chunk = fh.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                digest = h.hexdigest()
            elif t in ("chardev", "blockdev"):
                rdev = netbsd_rdev(din.di_db[0])
            out[rel] = tc.record(t, mode, din.di_uid, din.di_gid, din.di_size, din.di_nlink,
                                 din.di_mtime, target, rdev, digest)
            if t == "dir":
                for name, child in node.listdir().items():
                    if name in (".", ".."):
                        continue
                    if child.inum == 0:
                        continue
                    b = os.fsencode(name)
                    stack.append((rel + b"/" + b if rel else b, child))
    return out


def netbsd_rdev(raw: int):
    """(major, minor) from NetBSD's dev_t encoding (sys/types.h major/minor)."""
    raw &= 0xFFFFFFFF
    return (raw >> 8) & 0xFFF, (raw & 0xFF) | ((raw >> 12) & 0xFFF00)


# --- free counts recounted from the bitmaps ----------------------------------------------

#: NetBSD fs.h: fs_flags holds the flags (and the 64-bit fields are used) for UFS1 too.
FS_FLAGS_UPDATED = 0x80
CSUM_FIELDS = ("cs_ndir", "cs_nbfree", "cs_nifree", "cs_nffree")


def _bits(bitmap: bytes) -> str:
    """A cg map as "0"/"1" per bit, bit 0 of byte 0 (the first fragment or inode) first."""
    return format(int.from_bytes(bitmap, "little"), f"0{len(bitmap) * 8}b")[::-1]


def recount_summaries(path, byteorder: str | None = None) -> list[str]:
    """Every free count the image claims, against counts made here from its
    cylinder-group maps (inode map, free-fragment map, cluster map) and
    inode modes, through dissect.ffs's structs: each cg's cg_cs and
    cg_frsum, the csum array at fs_csaddr, and the superblock's totals.
    Returns the differences, one line each."""
    bad = []
    with open(path, "rb") as f:
        fs = dissect_open(f, byteorder)
        mod, sb = fs.module, fs.sb
        c = mod.c_ffs
        ufs1 = fs.version == 1
        updated = bool(sb.fs_flags & FS_FLAGS_UPDATED)
        csaddr = sb.fs_old_csaddr if ufs1 and not updated else sb.fs_csaddr
        if ufs1 and updated and sb.fs_old_csaddr != sb.fs_csaddr:
            bad.append(f"fs_old_csaddr {sb.fs_old_csaddr} != fs_csaddr {sb.fs_csaddr}")
        frag, fpg, ipg = sb.fs_frag, sb.fs_fpg, sb.fs_ipg
        total = dict.fromkeys(CSUM_FIELDS, 0)
        for cgx in range(sb.fs_ncg):
            group = mod.CylinderGroup(fs, cgx)
            cg = group.cg
            f.seek(group.offset)
            raw = f.read(sb.fs_cgsize)
            ndblk = cg.cg_ndblk
            assert 0 < ndblk <= fpg, (cgx, ndblk)
            free = _bits(raw[cg.cg_freeoff:cg.cg_freeoff + (fpg + 7) // 8])[:ndblk]
            iused = _bits(raw[cg.cg_iusedoff:cg.cg_iusedoff + (ipg + 7) // 8])[:ipg]
            whole = ndblk // frag * frag
            blocks = [free[i:i + frag] for i in range(0, whole, frag)]
            full = "1" * frag
            nbfree = blocks.count(full)
            # Free fragments outside free blocks, also in a last partial block.
            nffree = free.count("1") - nbfree * frag
            frsum = [0] * c.MAXFRAG
            for b in blocks:
                if b != full and "1" in b:
                    for run in b.split("0"):
                        if run:
                            frsum[len(run)] += 1
            if sb.fs_contigsumsize > 0:
                cluster = _bits(raw[cg.cg_clusteroff:cg.cg_clusteroff + (len(blocks) + 7) // 8])
                want = "".join("1" if b == full else "0" for b in blocks)
                if cluster[:len(blocks)] != want:
                    bad.append(f"cg {cgx}: cluster map is not the free map's whole blocks")
            ifree = iused.count("0")
            ndir = sum(stat.S_ISDIR(fs.inode(cgx * ipg + i).inode.di_mode)
                       for i, used in enumerate(iused) if used == "1")
            counted = dict(cs_ndir=ndir, cs_nbfree=nbfree, cs_nifree=ifree, cs_nffree=nffree)
            f.seek(csaddr * sb.fs_fsize + cgx * len(c.csum))
            array = c.csum(f)
            for k, v in counted.items():
                total[k] += v
                if getattr(cg.cg_cs, k) != v:
                    bad.append(f"cg {cgx}: cg_cs.{k} {getattr(cg.cg_cs, k)}, counted {v}")
                if getattr(array, k) != v:
                    bad.append(f"cg {cgx}: csum[{cgx}].{k} {getattr(array, k)}, counted {v}")
            if list(cg.cg_frsum)[1:frag] != frsum[1:frag]:
                bad.append(f"cg {cgx}: cg_frsum {list(cg.cg_frsum)[1:frag]}, counted {frsum[1:frag]}")
        totals = [("fs_cstotal", sb.fs_cstotal)] if not ufs1 or updated else []
        if ufs1:
            totals.append(("fs_old_cstotal", sb.fs_old_cstotal))
        for name, claimed in totals:
            for k, v in total.items():
                if getattr(claimed, k) != v:
                    bad.append(f"{name}.{k} {getattr(claimed, k)}, counted {v}")
    return bad


def host_records(tree, sockets=False) -> dict:
    """The source tree as makefs stores it (makefs leaves sockets out)."""
    recs = tc.scan_host(tree)
    if not sockets:
        recs = {p: r for p, r in recs.items() if r["type"] != "socket"}
    return recs


@pytest.fixture(scope="session")
def extra_tree(tmp_path_factory):
    """300 entries in one directory, a 20 MB file, symlinks around the limits."""
    if "extra_tree" in _CACHE:
        return _CACHE["extra_tree"]
    top = tmp_path_factory.mktemp("ffs-extra") / "tree"
    many = top / "many"
    many.mkdir(parents=True)
    for i in range(300):
        (many / f"entry-{i:03d}").write_bytes(b"%d\n" % i * (i % 7))
    with open(top / "big20", "wb") as f:
        block = bytes(range(256)) * 4096
        for i in range(20):
            f.write(bytes([i]) + block[1:])
    for n in (59, 60, 119, 120, 200):
        os.symlink("t" * n, top / f"link{n}")
    (top / "sub").mkdir()
    os.link(top / "big20", top / "sub" / "big20-again")
    _CACHE["extra_tree"] = top
    return top


def _variants():
    yield "ufs1-le", dict(version=1)
    yield "ufs2-le", dict(version=2)
    yield "ufs1-be", dict(version=1, endian="be")
    yield "ufs2-be", dict(version=2, endian="be")


@pytest.fixture(scope="session")
def makefs_images(tmp_path_factory, fixture_tree, extra_tree):
    """{name: (image, source tree)} for every makefs variant tested."""
    require_tool("makefs", "makefs")
    if "makefs_images" in _CACHE:
        return _CACHE["makefs_images"]
    d = tmp_path_factory.mktemp("ffs-makefs")
    out = {}
    for name, kw in _variants():
        out[f"fixture-{name}"] = (makefs(d / f"fixture-{name}.img", fixture_tree, **kw),
                                  fixture_tree)
    for bsize in (4096, 16384, 65536):
        for version in (1, 2):
            name = f"extra-ufs{version}-b{bsize}"
            out[name] = (makefs(d / f"{name}.img", extra_tree, f"bsize={bsize}",
                                f"fsize={bsize // 8}", version=version), extra_tree)
    out["extra-ufs1-be-b4096"] = (makefs(d / "extra-ufs1-be-b4096.img", extra_tree,
                                         "bsize=4096", "fsize=512", endian="be"), extra_tree)
    # Several cylinder groups.
    out["multicg-ufs1"] = (makefs(d / "multicg-ufs1.img", extra_tree, size="200m"), extra_tree)
    out["multicg-ufs2-be"] = (makefs(d / "multicg-ufs2-be.img", extra_tree, version=2,
                                     endian="be", size="64m"), extra_tree)
    _CACHE["makefs_images"] = out
    return out


IMAGE_NAMES = ([f"fixture-{n}" for n, _ in _variants()]
               + [f"extra-ufs{v}-b{b}" for b in (4096, 16384, 65536) for v in (1, 2)]
               + ["extra-ufs1-be-b4096", "multicg-ufs1", "multicg-ufs2-be"])


# --- patching -----------------------------------------------------------------


class Patcher:
    """Byte-exact edits of an FFS image, at offsets found through the layout."""

    def __init__(self, path):
        self.path = path
        self.r = open_reader(path)
        self.L = self.r.layout
        self.order = "<" if self.r.byteorder == "little" else ">"

    def close(self):
        self.r.f.close()

    def put(self, offset: int, fmt: str, value) -> None:
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(struct.pack(self.order + fmt, value))

    def get(self, offset: int, fmt: str):
        with open(self.path, "rb") as f:
            f.seek(offset)
            return struct.unpack(self.order + fmt, f.read(struct.calcsize(self.order + fmt)))[0]

    def add(self, offset: int, fmt: str, delta: int) -> int:
        v = self.get(offset, fmt) + delta
        self.put(offset, fmt, v)
        return v

    # offsets
    def ino(self, path: bytes) -> int:
        return self.r.find(path).ino

    def inode_field(self, ino: int, field: str) -> int:
        return self.r.inode_offset(ino) + L.offsetof(self.L.dinode(self.r.ufs2), field)

    def sb_field(self, field: str) -> int:
        return self.r.sb.loc + L.offsetof(self.L.fs, field)

    def cg_offset(self, c: int) -> int:
        return (self.r.cgstart(c) + self.r.fs["fs_cblkno"]) * self.r.fsize

    def cg_field(self, c: int, field: str) -> int:
        return self.cg_offset(c) + L.offsetof(self.L.cg, field)

    def sb_copy_field(self, c: int, field: str) -> int:
        return (self.r.cgstart(c) + self.r.fs["fs_sblkno"]) * self.r.fsize + \
            L.offsetof(self.L.fs, field)

    def dirent(self, dir_path: bytes, name: bytes) -> int:
        """Image offset of the entry ``name`` in directory ``dir_path``."""
        d = self.r.inode(self.r.find(dir_path).ino if dir_path else L.UFS_ROOTINO)
        for _ino, _t, n, pos in self.r.dir_entries(d):
            if n == name:
                lbn, within = divmod(pos, self.r.bsize)
                return d["di_db"][lbn] * self.r.fsize + within
        raise KeyError(name)

    def flip_bit(self, offset: int, bit: int) -> None:
        with open(self.path, "r+b") as f:
            f.seek(offset)
            b = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([b ^ (1 << bit)]))
