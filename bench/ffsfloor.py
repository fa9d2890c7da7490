"""The floor of an FFS packer in Python, in one process:

    python -m bench.ffsfloor DIR OUT

What any packer of a reproducible UFS1 image must do per entry, and nothing
more: list the tree into columns (scandir, lstat, readlink), number the
inodes, pack every directory's entries sorted by name into DIRBLKSIZ
chunks, place every file's data in fragments, one after another, pack the
inode table from columns (rumpfs's own ``ufs1_dinode`` and ``direct``
declarations, packed as its writer packs them), and copy every file's
bytes into place, small files gathered into large writes.

OUT is not a file system: no superblock, cylinder groups, bitmaps,
indirect blocks or free-space policy, no check that a file changed while
it was read, no layering, progress or errors beyond what Python raises.
A benchmark row of this (``floor:py-ffs``) bounds from below what the FFS
writer can reach on one core (issue 22.2); prints the entry count.
"""

from __future__ import annotations

import os
import stat
import sys
from itertools import chain

from rumpfs.formats.ffs import layout as L

BSIZE, FSIZE = 8192, 1024
#: Bytes gathered before one write, and the largest file gathered.
GATHER_BYTES = 1 << 20
#: Where the inode table starts (the boot block and superblock before it).
INODES_AT = 4 * BSIZE
FRAG = BSIZE // FSIZE
SECTORS_PER_FRAG = FSIZE // L.DEV_BSIZE
#: The block pointers of an inode, where a short symlink's target lives.
POINTERS = [f"di_db[{k}]" for k in range(L.UFS_NDADDR)] + [f"di_ib[{k}]" for k in range(L.UFS_NIADDR)]
ZEROS = bytes(L.DIRBLKSIZ)
#: A directory entry's bytes by name length (UFS_DIRECTSIZ), and what follows its name.
RECLEN = [L.UFS_DIRECTSIZ(n) for n in range(L.FFS_MAXNAMLEN + 1)]
NAME_PAD = [bytes(RECLEN[n] - L.DIRECT_HEADER_SIZE - n) for n in range(L.FFS_MAXNAMLEN + 1)]


class Tree:
    """The listed tree, one list per attribute; entry 0 is the top."""

    def __init__(self, top: bytes):
        st = os.lstat(top)
        self.path, self.name, self.parent = [top], [b"."], [0]
        self.mode, self.uid, self.gid = [st.st_mode], [st.st_uid], [st.st_gid]
        self.size, self.mtime, self.nlink = [0], [st.st_mtime_ns], [st.st_nlink]
        self.children = {0: []}  # directory -> its entries
        self.first_link = {}     # (st_dev, st_ino) -> entry, of files with more than one link
        self.alias = {}          # entry -> the entry whose inode it shares
        self.target = {}         # symlink entry -> its target
        self._walk()

    def _walk(self) -> None:
        lstat, readlink = os.lstat, os.readlink
        path, name, parent = self.path, self.name, self.parent
        mode, uid, gid = self.mode, self.uid, self.gid
        size, mtime, nlink = self.size, self.mtime, self.nlink
        stack = [0]
        while stack:
            d = stack.pop()
            kids = self.children[d]
            with os.scandir(path[d]) as it:
                for entry in it:
                    p = entry.path
                    st = lstat(p)
                    i = len(path)
                    path.append(p)
                    name.append(entry.name)
                    parent.append(d)
                    kids.append(i)
                    m = st.st_mode
                    mode.append(m)
                    uid.append(st.st_uid)
                    gid.append(st.st_gid)
                    size.append(st.st_size)
                    mtime.append(st.st_mtime_ns)
                    nlink.append(st.st_nlink)
                    if stat.S_ISDIR(m):
                        self.children[i] = []
                        stack.append(i)
                    elif stat.S_ISLNK(m):
                        self.target[i] = readlink(p)
                    elif st.st_nlink > 1:
                        first = self.first_link.setdefault((st.st_dev, st.st_ino), i)
                        if first != i:
                            self.alias[i] = first


def directory_blocks(tree: Tree, inode: list) -> dict:
    """Directory entry -> its entries packed, sorted by name, in DIRBLKSIZ chunks."""
    header = L.LITTLE.fast("direct").struct.pack
    name, mode, parent = tree.name, tree.mode, tree.parent
    dtype_of = {m: L.IFTODT(m) for m in set(mode)}
    blocks = {}
    for d, kids in tree.children.items():
        kids.sort(key=name.__getitem__)
        parts = []
        used = at = 0  # bytes used in this chunk; where the last header is in parts
        last = None
        entries = chain(((inode[d], L.DT_DIR, b"."), (inode[parent[d]], L.DT_DIR, b"..")),
                        ((inode[k], dtype_of[mode[k]], name[k]) for k in kids))
        for ino, dtype, n in entries:
            namlen = len(n)
            reclen = RECLEN[namlen]
            if used + reclen > L.DIRBLKSIZ:
                # An entry never crosses a chunk: the last one in each takes its rest.
                parts[at] = header(last[0], last[1] + L.DIRBLKSIZ - used, last[2], last[3])
                parts.append(ZEROS[:L.DIRBLKSIZ - used])
                used = 0
            at = len(parts)
            last = (ino, reclen, dtype, namlen)
            parts += (header(*last), n, NAME_PAD[namlen])
            used += reclen
        parts[at] = header(last[0], last[1] + L.DIRBLKSIZ - used, last[2], last[3])
        parts.append(ZEROS[:L.DIRBLKSIZ - used])
        blocks[d] = b"".join(parts)
    return blocks


def pack(top: bytes, out: int) -> int:
    tree = Tree(top)
    count = len(tree.path)
    # Inode numbers in walk order from the root's; a hard link names its
    # first name's inode (its own row in the table stays unused).
    inode = list(range(L.UFS_ROOTINO, L.UFS_ROOTINO + count))
    for i, first in tree.alias.items():
        inode[i] = inode[first]
    dirs = directory_blocks(tree, inode)
    size = tree.size
    for d, blob in dirs.items():
        size[d] = len(blob)
    short_links = {i: t for i, t in tree.target.items() if len(t) < L.MAXSYMLINKLEN_UFS1}
    long_links = {i: t for i, t in tree.target.items() if i not in short_links}
    columns = {name: [0] * count for name in POINTERS}
    blocks = [0] * count
    placed = []  # (entry, byte offset) of every entry with data, in image order
    first_block = columns[POINTERS[0]]
    no_data = tree.alias.keys() | short_links.keys()
    frag = -(-(INODES_AT + (count + L.UFS_ROOTINO) * L.DINODE1_SIZE) // BSIZE) * FRAG
    for i, s in enumerate(size):
        if not s or i in no_data:
            continue
        frags = -(-s // FSIZE)
        first_block[i] = frag
        if frags > FRAG:
            for k in range(1, min(-(-frags // FRAG), L.UFS_NDADDR)):
                columns[POINTERS[k]][i] = frag + k * FRAG
        placed.append((i, frag * FSIZE))
        blocks[i] = frags * SECTORS_PER_FRAG
        frag += frags
    for i, target in short_links.items():
        for name, word in zip(POINTERS, memoryview(target.ljust(L.MAXSYMLINKLEN_UFS1, b"\0")).cast("i")):
            columns[name][i] = word
    seconds = [t // 1_000_000_000 for t in tree.mtime]
    columns.update({"di_mode": tree.mode, "di_nlink": tree.nlink, "di_size": size,
                    "di_atime": seconds, "di_mtime": seconds, "di_ctime": seconds,
                    "di_blocks": blocks, "di_uid": tree.uid, "di_gid": tree.gid})
    table = L.LITTLE.fast("ufs1_dinode").pack_columns(columns, count)
    os.pwrite(out, table, INODES_AT + L.UFS_ROOTINO * L.DINODE1_SIZE)
    copy(tree, placed, {**dirs, **long_links}, out)
    return count


def copy(tree: Tree, placed: list, in_memory: dict, out: int) -> None:
    """Every placed entry's bytes at its offset: small files read into one
    buffer that is written whenever the next piece does not follow on."""
    buf = bytearray(GATHER_BYTES)
    view = memoryview(buf)
    filled = start = 0
    path, size = tree.path, tree.size
    for i, offset in placed:
        s = size[i]
        padded = -(-s // FSIZE) * FSIZE
        if filled and (offset != start + filled or filled + padded > GATHER_BYTES):
            os.pwrite(out, view[:filled], start)
            filled = 0
        if not filled:
            start = offset
        data = in_memory.get(i)
        if padded > GATHER_BYTES:  # too large to gather: written on its own (flushed above)
            if data is None:
                _copy_large(path[i], s, out, offset)
            else:
                os.pwrite(out, data, offset)
            continue
        if data is not None:
            view[filled:filled + s] = data
        else:
            fd = os.open(path[i], os.O_RDONLY)
            try:
                os.preadv(fd, [view[filled:filled + s]], 0)
            finally:
                os.close(fd)
        view[filled + s:filled + padded] = bytes(padded - s)
        filled += padded
    if filled:
        os.pwrite(out, view[:filled], start)


def _copy_large(path: bytes, size: int, out: int, offset: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < size:
            n = os.copy_file_range(fd, out, size - done, done, offset + done)
            if not n:
                break
            done += n
    finally:
        os.close(fd)


def main(argv: list) -> None:
    out = os.open(argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        print(pack(os.fsencode(argv[0]), out))
    finally:
        os.close(out)
    sys.stdout.flush()
    os._exit(0)  # the least: the columns are not freed one object at a time


if __name__ == "__main__":
    main(sys.argv[1:])
