"""The benchmark's FFS floor (bench/ffsfloor.py) does the work it claims.

``floor:py-ffs`` stands beside the one-core FFS rows of issue 22.2 as the
least an FFS packer in Python spends; it only bounds rumpfs from below if
it really lists, numbers, packs and copies everything.  Its inode table and
directories are decoded here with offsets written out from NetBSD's
sys/ufs/ufs/dinode.h and dir.h, and compared with the source tree as the
OS reports it.
"""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The floor's geometry and where its inode table starts (the test's own copy).
FSIZE, BSIZE, INODES_AT = 1024, 8192, 4 * 8192
#: struct ufs1_dinode: 128 bytes; di_mode, di_nlink at 0; di_size at 8;
#: di_mtime at 24; di_db[12] at 40; di_ib[3] at 88; di_blocks at 104;
#: di_uid, di_gid at 112.
DINODE1 = struct.Struct("<Hh4xQ8xi12x12i3i4xi4xII8x")
ROOTINO, DIRBLKSIZ = 2, 512


def inode(image: bytes, ino: int) -> dict:
    (mode, nlink, size, mtime, *ptrs, blocks, uid, gid) = DINODE1.unpack_from(
        image, INODES_AT + ino * DINODE1.size)
    return dict(mode=mode, nlink=nlink, size=size, mtime=mtime, db=ptrs[:12], ptrs=ptrs,
                blocks=blocks, uid=uid, gid=gid)


def data(image: bytes, ino_: dict) -> bytes:
    """A file's bytes: the floor places each file's blocks one after another
    (direct pointers only, so a larger file is read on from its first)."""
    first, size = ino_["db"][0], ino_["size"]
    used = [a for a in ino_["db"] if a]
    assert used == [first + k * BSIZE // FSIZE for k in range(min(-(-size // BSIZE), 12))]
    return image[first * FSIZE:first * FSIZE + size]


def entries(image: bytes, dir_ino: dict) -> list:
    """(name, inode) of a directory, in on-disk order; every chunk's records
    must end exactly at its DIRBLKSIZ boundary."""
    raw = data(image, dir_ino)
    assert len(raw) % DIRBLKSIZ == 0
    out, at = [], 0
    while at < len(raw):
        ino, reclen, _type, namlen = struct.unpack_from("<IHBB", raw, at)
        assert reclen >= 8 + namlen and (at % DIRBLKSIZ) + reclen <= DIRBLKSIZ
        out.append((raw[at + 8:at + 8 + namlen], ino))
        at += reclen
    return out


def test_ffs_floor_holds_every_entry_of_the_tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    sizes = {"empty": 0, "one": 1, "frag": FSIZE, "tail": 5000, "blocks": 3 * BSIZE + 17}
    for name, size in sizes.items():
        (src / name).write_bytes(bytes((i * 7 + len(name)) % 251 for i in range(size)))
    (src / "sub" / "deeper" / "f").write_bytes(b"deep\n")
    os.link(src / "tail", src / "sub" / "hardlink")
    os.symlink("short/target", src / "short")
    os.symlink("t" * 200, src / "long")
    # Larger than the floor gathers (1 MiB): a file, and a directory of 5,000 long names.
    (src / "big").write_bytes(os.urandom(3 << 19))
    (src / "wide").mkdir()
    for k in range(5000):
        (src / "wide" / f"{k:05d}{'n' * 200}").touch()
    out = tmp_path / "floor.img"

    proc = subprocess.run([sys.executable, "-m", "bench.ffsfloor", str(src), str(out)],
                          cwd=REPO, capture_output=True, text=True, check=True)

    host = {}
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            host[os.path.relpath(path, src).encode()] = path
    assert int(proc.stdout) == len(host) + 1  # the top too
    image = out.read_bytes()
    seen = set()

    def visit(dir_ino: int, prefix: bytes) -> None:
        listed = entries(image, inode(image, dir_ino))
        assert listed[:2] == [(b".", dir_ino), (b"..", listed[1][1])]
        names = [n for n, _ in listed[2:]]
        assert names == sorted(names)
        for name, ino in listed[2:]:
            rel = prefix + name
            seen.add(rel)
            st = os.lstat(host[rel])
            got = inode(image, ino)
            assert (got["mode"], got["uid"], got["gid"]) == (st.st_mode, st.st_uid, st.st_gid), rel
            assert (got["nlink"], got["mtime"]) == (st.st_nlink, int(st.st_mtime)), rel
            if stat.S_ISDIR(st.st_mode):
                visit(ino, rel + b"/")
            elif stat.S_ISLNK(st.st_mode):
                target = os.fsencode(os.readlink(host[rel]))
                inline = struct.pack("<15i", *got["ptrs"])[:len(target)]
                assert (inline if len(target) < 60 else data(image, got)) == target, rel
            else:
                with open(host[rel], "rb") as f:
                    assert data(image, got) == f.read(), rel
                assert got["blocks"] == -(-st.st_size // FSIZE) * (FSIZE // 512), rel

    visit(ROOTINO, b"")
    assert seen == set(host)
    # A hard link's two names are one inode.
    root = dict(entries(image, inode(image, ROOTINO)))
    sub = dict(entries(image, inode(image, root[b"sub"])))
    assert sub[b"hardlink"] == root[b"tail"]
