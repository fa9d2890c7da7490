"""A seeded mutation fuzzer for every reader rumpfs has (issue 17).

It packs one small tree (files, directories, symlinks, a hard link, a sparse
file) into every kind of image rumpfs writes -- FFS UFS1/UFS2 in both byte
orders, cpio newc/crc, gzip/xz/zstd/lz4-compressed cpio, and images inside
ELF objects -- then mutates each image (truncation, byte flips, splices,
inserted and deleted bytes, and field-aware changes of the sizes, counts
and offsets that the readers trust: FFS superblock, cylinder group, inode
and directory entry fields, cpio header fields, ELF header, section,
symbol, relocation and registry fields) and runs every reader operation on
the mutant in a worker process: info, ls (every line), cat (every regular
file), check and extract (into a temporary directory).

A mutant fails when an operation raises anything but a one-line
:class:`rumpfs.errors.RumpfsError` naming the file, runs out of its time
budget (a hang), runs out of memory (the worker's address space is capped),
streams more bytes than the image can hold, or when ``check`` calls it clean
and ``ls``/``cat`` then fail ("check is the gate").  Mutants are a pure
function of (kind, seed, index), so a failure replays exactly::

    python tests/fuzz_readers.py --mutants 2000 --seed 1 --out /tmp/fuzz
    python tests/fuzz_readers.py --replay ffs1-le:1:1234

Failures are saved under ``--out`` (failures.jsonl plus the mutant bytes).
Extract-only failures (extraction itself, not reading) are reported apart:
another part of the project hardens extract.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from rumpfs import api, compress, inspect  # noqa: E402
from rumpfs.errors import RumpfsError  # noqa: E402

#: Address-space cap of a worker (RLIMIT_AS): the issue's bound is 256 MiB of
#: reader memory for an image up to 10 MB; the interpreter and its modules
#: take the rest.
MEMORY_LIMIT = 512 << 20
#: Seconds one mutant may take in a worker before it counts as a hang.
TIME_LIMIT = 10
#: A reader that streams more than this many bytes of one file counts as
#: unbounded (the seed files are a few hundred KiB at most, sparse ones
#: included).
CAT_LIMIT = 64 << 20

#: The kinds of image fuzzed: name -> (output suffix, PackOptions keywords).
KINDS = {
    "ffs1-le": (".img", {"format": "ffs", "byteorder": "little"}),
    "ffs1-be": (".img", {"format": "ffs", "byteorder": "big"}),
    "ffs2-le": (".img", {"format": "ffs2", "byteorder": "little"}),
    "ffs2-be": (".img", {"format": "ffs2", "byteorder": "big"}),
    "newc": (".cpio", {}),
    "crc": (".cpio", {"format_options": {"cpio_variant": "crc"}}),
    "gzip": (".cpio.gz", {}),
    "xz": (".cpio.xz", {}),
    "zstd": (".cpio.zst", {}),
    "lz4": (".cpio.lz4", {}),
    "elf-ffs1": (".o", {"container_options": {"target": "x86_64"}}),
    "elf-ffs2-be": (".o", {"format": "ffs2", "container_options": {"target": "ppc64"}}),
    "elf-newc": (".o", {"format": "cpio", "container_options": {"target": "riscv32"}}),
    "elf-crc-be": (".o", {"format": "cpio", "format_options": {"cpio_variant": "crc"},
                          "container_options": {"target": "mips"}}),
    "elf-gzip": (".o", {"format": "cpio", "compress": "gzip",
                        "container_options": {"target": "aarch64"}}),
    "elf-zstd-be": (".o", {"format": "cpio", "compress": "zstd",
                           "container_options": {"target": "s390x"}}),
    "iso": (".iso", {}),
    "fat": (".fat", {"format_options": {"fat_skip_special": True}}),
    "fat16": (".fat", {"format_options": {"fat_skip_special": True, "fat_type": 16}}),
    "fat32": (".fat", {"format_options": {"fat_skip_special": True, "fat_type": 32}}),
}

#: Kinds whose mutations know no fields (only flips, truncation, splices).
BLIND_KINDS = ()

#: How many times the ISO volume descriptors' and the FAT boot sector's
#: fields are listed among the fields to aim at (see _fat_fields).
HEADER_WEIGHT = 8

#: Every time in the seed images.
SEED_TIME = 1_700_000_000

COMPRESSED = {"gzip": "gzip", "xz": "xz", "zstd": "zstd", "lz4": "lz4"}


# --- the seed tree and images -------------------------------------------------


def make_tree(root: str) -> None:
    """Files, directories, symlinks (fast and slow), a hard link, a sparse file."""
    os.makedirs(os.path.join(root, "etc", "deep", "er"))
    os.makedirs(os.path.join(root, "empty"))
    for i, size in enumerate((0, 1, 511, 4096, 9000, 70000)):
        with open(os.path.join(root, "etc", f"f{i}"), "wb") as f:
            f.write(bytes((j * 7 + i) & 0xFF for j in range(size)))
    with open(os.path.join(root, "etc", "deep", "er", "leaf"), "wb") as f:
        f.write(b"leaf\n")
    os.link(os.path.join(root, "etc", "f2"), os.path.join(root, "hardlink"))
    os.symlink("etc/f1", os.path.join(root, "short"))
    os.symlink("/" + "/".join(["long-target"] * 12), os.path.join(root, "long"))
    with open(os.path.join(root, "sparse"), "wb") as f:
        f.write(b"head")
        f.seek(300_000)
        f.write(b"tail")
    stamp = SEED_TIME
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (stamp, stamp), follow_symlinks=False)


#: Names that need FAT long-name entries and Rock Ridge NM / Joliet names
#: longer than ISO 9660's own (a second layer of the FAT and ISO seeds).
LONG_NAMES = ("A Long File Name.txt", "MiXed Case.Data", "h\u00e9llo-\u65e5\u672c.txt",
              "n" * 100 + ".longer")
#: The kinds whose seed has that layer too.
NAMED_KINDS = ("iso", "fat", "fat16", "fat32")


def make_names_tree(root: str) -> None:
    """A directory of files with long, mixed-case and non-ASCII names."""
    os.makedirs(os.path.join(root, "Long Directory Name"))
    for i, name in enumerate(LONG_NAMES):
        with open(os.path.join(root, "Long Directory Name", name), "wb") as f:
            f.write(name.encode() * (i + 1))
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (SEED_TIME, SEED_TIME))


SPEC = """\
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
nod /dev/sda 0660 0 6 b 8 0
pipe /dev/initctl 0600 0 0
meta /etc/f3 uid=1000 gid=100 mode=4755
"""


def build_seeds(directory: str) -> dict[str, str]:
    """Pack the seed tree into every kind; returns kind -> path."""
    tree = os.path.join(directory, "tree")
    if not os.path.isdir(tree):
        make_tree(tree)
    names = os.path.join(directory, "names")
    if not os.path.isdir(names):
        make_names_tree(names)
    # Devices, a fifo and owners, which need no root through a spec file.
    spec = os.path.join(directory, "tree.spec")
    with open(spec, "w") as f:
        f.write(SPEC)
    out = {}
    for kind, (suffix, options) in KINDS.items():
        path = os.path.join(directory, kind + suffix)
        if not os.path.exists(path):
            # A fixed time, not SOURCE_DATE_EPOCH: this runs inside test
            # processes, whose environment later tests rely on.
            sources = [tree, names] if kind in NAMED_KINDS else [tree]
            api.pack(sources, path, api.PackOptions(stubetc=False, pwdb=False, spec=[spec],
                                                   timestamp=SEED_TIME, **options))
        out[kind] = path
    return out


# --- fields the readers trust -------------------------------------------------


def _struct_fields(con) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of the fixed-size fields of a construct Struct."""
    out, off = {}, 0
    for sc in con.subcons:
        size = sc.sizeof()
        if sc.name:
            out[sc.name] = (off, size)
        off += size
    return out


def _ffs_fields(data: bytes, base: int) -> list:
    import io

    from rumpfs.formats.ffs import layout as L
    from rumpfs.formats.ffs.reader import FfsReader
    f = io.BytesIO(data)
    f.fileno = lambda: (_ for _ in ()).throw(OSError("no fd"))  # pread falls back to seek/read
    r = FfsReader(f, base, len(data) - base)
    lay, bo = r.layout, r.byteorder
    fields = []
    sb = _struct_fields(lay.fs)
    for name in ("fs_sblkno", "fs_cblkno", "fs_iblkno", "fs_dblkno", "fs_ncg", "fs_bsize",
                 "fs_fsize", "fs_frag", "fs_ipg", "fs_fpg", "fs_inopb", "fs_nindir", "fs_sbsize",
                 "fs_cssize", "fs_cgsize", "fs_csaddr", "fs_size", "fs_dsize",
                 "fs_maxsymlinklen", "fs_old_cgoffset", "fs_old_cgmask", "fs_contigsumsize",
                 "fs_old_cpg", "fs_old_nrpos", "fs_maxfilesize", "fs_bshift", "fs_fshift",
                 "fs_fragshift", "fs_time", "fs_old_size", "fs_old_flags", "fs_flags"):
        if name in sb:
            off, size = sb[name]
            fields.append((base + r.sb.loc + off, size, bo, name))
    cg = _struct_fields(lay.cg)
    for c in range(r.ncg):
        at = base + (r.cgstart(c) + r.fs["fs_cblkno"]) * r.fsize
        for name in ("cg_magic", "cg_cgx", "cg_ndblk", "cg_iusedoff", "cg_freeoff",
                     "cg_nextfreeoff", "cg_clustersumoff", "cg_clusteroff", "cg_initediblk",
                     "cg_old_niblk", "cg_niblk"):
            if name in cg:
                off, size = cg[name]
                fields.append((at + off, size, bo, name))
    din = _struct_fields(r.dinode.con if hasattr(r.dinode, "con") else
                         (lay.ufs2_dinode if r.ufs2 else lay.ufs1_dinode))
    ptr = 8 if r.ufs2 else 4
    dir_ent = _struct_fields(lay.direct)
    for e in r.entries():
        at = base + r.inode_offset(e.ino)
        for name in ("di_mode", "di_nlink", "di_size", "di_blocks", "di_mtime", "di_mtimensec",
                     "di_uid"):
            off, size = din[name]
            fields.append((at + off, size, bo, name))
        for arr, n in (("di_db", L.UFS_NDADDR), ("di_ib", L.UFS_NIADDR)):
            off, _ = din[arr]
            for i in range(min(n, 4)):
                fields.append((at + off + i * ptr, ptr, bo, f"{arr}[{i}]"))
        if stat.S_ISDIR(e.mode):
            first = r.inode(e.ino)["di_db"][0]
            block = first * r.fsize
            pos = 0
            for _ in range(8):
                if pos + L.DIRECT_HEADER_SIZE > L.DIRBLKSIZ:
                    break
                d = r.direct.unpack_dict(data, base + block + pos)
                for name in ("d_ino", "d_reclen", "d_namlen", "d_type"):
                    off, size = dir_ent[name]
                    fields.append((base + block + pos + off, size, bo, name))
                if d["d_reclen"] <= 0:
                    break
                pos += d["d_reclen"]
    return fields


def _cpio_fields(data: bytes, base: int) -> list:
    from rumpfs.formats.cpio.layout import FIELDS, HEADER_SIZE, MAGIC_SIZE, TRAILER_NAME, pad
    fields = []
    pos = base
    while pos + HEADER_SIZE <= len(data):
        for i, name in enumerate(FIELDS):
            fields.append((pos + MAGIC_SIZE + 8 * i, 8, "hex", name))
        namesize = int(data[pos + MAGIC_SIZE + 8 * FIELDS.index("c_namesize"):][:8], 16)
        filesize = int(data[pos + MAGIC_SIZE + 8 * FIELDS.index("c_filesize"):][:8], 16)
        name = data[pos + HEADER_SIZE:pos + HEADER_SIZE + namesize - 1]
        fields.append((pos + HEADER_SIZE, namesize, "name", "name"))
        if name == TRAILER_NAME:
            break
        pos += HEADER_SIZE + namesize
        pos += pad(pos)
        pos += filesize
        pos += pad(pos)
    return fields


def _elf_fields(path: str) -> tuple[list, int, int]:
    """ELF fields, and (offset, size) of the first image."""
    from rumpfs.elf import layout as E
    from rumpfs.elf import reader as R
    from rumpfs.elf import registry
    with open(path, "rb") as f:
        obj = R.locate_image(f, path)
    bo = obj.byteorder
    lay = E.layouts(obj.elfclass, bo)
    fields = []
    eh = _struct_fields(lay.Ehdr)
    for name in ("e_shoff", "e_shnum", "e_shstrndx", "e_shentsize", "e_type"):
        off, size = eh[name]
        fields.append((off, size, bo, name))
    with open(path, "rb") as f:
        shoff = lay.Ehdr.parse(f.read(lay.Ehdr.sizeof())).e_shoff
    sh = _struct_fields(lay.Shdr)
    for s in obj.sections:
        at = shoff + s.index * lay.Shdr.sizeof()
        for name in ("sh_name", "sh_type", "sh_offset", "sh_size", "sh_link", "sh_info"):
            off, size = sh[name]
            fields.append((at + off, size, bo, name))
    symtab = next((s for s in obj.sections if s.sh_type == E.SHT_SYMTAB), None)
    if symtab is not None:
        sym = _struct_fields(lay.Sym)
        for i in range(symtab.size // lay.Sym.sizeof()):
            at = symtab.offset + i * lay.Sym.sizeof()
            for name in ("st_name", "st_value", "st_size", "st_shndx"):
                off, size = sym[name]
                fields.append((at + off, size, bo, name))
    for s in obj.sections:
        if s.sh_type in (E.SHT_REL, E.SHT_RELA):
            st = lay.Rela if s.sh_type == E.SHT_RELA else lay.Rel
            rel = _struct_fields(st)
            for i in range(s.size // st.sizeof()):
                for name, (off, size) in rel.items():
                    fields.append((s.offset + i * st.sizeof() + off, size, bo, name))
        if s.name == registry.SECTION:
            rec = _struct_fields(registry.record(32 * obj.elfclass, bo))
            for name, (off, size) in rec.items():
                enc = "name" if name in ("ri_name", "ri_mountpoint") else bo
                fields.append((s.offset + off, size, enc, name))
    return fields, obj.offset, obj.size


def _iso_fields(data: bytes) -> list:
    """Volume descriptors, path tables, directory records of the ISO 9660
    and Joliet trees, and every System Use (Rock Ridge) entry, continuation
    areas included, located through rumpfs.formats.iso.layout."""
    from rumpfs.formats.iso import layout as L
    vd_fields = _struct_fields(L.VolumeDescriptor)
    rec_fields = _struct_fields(L.DirectoryRecord)
    pt_fields = _struct_fields(L.PathTableRecord)
    sector = L.SECTOR
    fields = []

    def record(at: int, raw: bytes, susp: bool) -> None:
        for name in ("length", "ext_attr_length", "extent", "data_length", "flags",
                     "file_unit_size", "interleave_gap", "volume_sequence", "name_length"):
            off, size = rec_fields[name]
            enc = "both" if size in (4, 8) else "little"
            fields.append((at + off, size, enc, "dr." + name))
        name_len = raw[L.RECORD_FIXED - 1]
        if name_len:
            fields.append((at + L.RECORD_FIXED, name_len, "name", "dr.file_identifier"))
        if susp:
            start = L.RECORD_FIXED + name_len + (1 - name_len % 2)
            susp_entries(at + start, raw[start:raw[0]], 0)

    def susp_entries(at: int, area: bytes, hops: int) -> None:
        pos = 0
        head = L.SUSP_HEADER.size
        while pos + head <= len(area):
            sig, length, _version = L.SUSP_HEADER.unpack_from(area, pos)
            if length < head or pos + length > len(area):
                return
            tag = sig.decode("latin-1")
            fields.append((at + pos + 2, 1, "little", f"{tag}.length"))
            fields.append((at + pos, 2, "name", f"{tag}.signature"))
            body = at + pos + head
            if sig == b"CE" and length >= L.CE_SIZE:
                for i, name in enumerate(("block", "offset", "length")):
                    fields.append((body + 8 * i, 8, "both", f"CE.{name}"))
                block, off, size = (int.from_bytes(area[pos + head + 8 * i:][:4], "little")
                                    for i in range(3))
                if hops < 4 and block * sector + off + size <= len(data):
                    susp_entries(block * sector + off,
                                 data[block * sector + off:block * sector + off + size],
                                 hops + 1)
            elif sig == b"PX":
                for i, name in enumerate(("mode", "nlink", "uid", "gid", "serial")):
                    if head + 8 * (i + 1) <= length:
                        fields.append((body + 8 * i, 8, "both", f"PX.{name}"))
            elif sig == b"PN":
                fields.append((body, 8, "both", "PN.high"))
                fields.append((body + 8, 8, "both", "PN.low"))
            elif sig == b"TF":
                fields.append((body, 1, "little", "TF.flags"))
                if length > head + 1:
                    fields.append((body + 1, length - head - 1, "name", "TF.times"))
            elif sig == b"NM":
                fields.append((body, 1, "little", "NM.flags"))
                if length > head + 1:
                    fields.append((body + 1, length - head - 1, "name", "NM.name"))
            elif sig == b"SL":
                fields.append((body, 1, "little", "SL.flags"))
                comp = body + 1
                while comp + 2 <= at + pos + length:
                    fields.append((comp, 1, "little", "SL.component_flags"))
                    fields.append((comp + 1, 1, "little", "SL.component_length"))
                    comp += 2 + data[comp + 1]
            elif sig == b"SP":
                fields.append((body, 3, "name", "SP.check_and_skip"))
            pos += length

    def tree(root_at: int, susp: bool) -> None:
        seen = set()
        stack = [root_at]
        while stack:
            at = stack.pop()
            extent = int.from_bytes(data[at + rec_fields["extent"][0]:][:4], "little")
            size = int.from_bytes(data[at + rec_fields["data_length"][0]:][:4], "little")
            if extent in seen or extent * sector + size > len(data):
                continue
            seen.add(extent)
            for s in range(-(-size // sector)):
                pos = (extent + s) * sector
                end = pos + sector
                while pos < end and data[pos]:
                    raw = data[pos:pos + data[pos]]
                    record(pos, raw, susp)
                    name_len = raw[L.RECORD_FIXED - 1]
                    ident = raw[L.RECORD_FIXED:L.RECORD_FIXED + name_len]
                    if raw[rec_fields["flags"][0]] & L.FLAG_DIRECTORY and ident not in (b"\0", b"\1"):
                        stack.append(pos)
                    pos += raw[0]

    def path_table(location: int, size: int, order: str) -> None:
        pos, end = location * sector, location * sector + size
        while pos + L.PATH_RECORD_L.size <= min(end, len(data)):
            for name in ("name_length", "extent", "parent"):
                off, n = pt_fields[name]
                fields.append((pos + off, n, order, "pt." + name))
            name_len = data[pos]
            if not name_len:
                return
            pos += L.PATH_RECORD_L.size + name_len + name_len % 2

    for i in range(8):
        at = (L.SYSTEM_AREA_SECTORS + i) * sector
        kind = data[at]
        if data[at + 1:at + 6] != L.STANDARD_ID or kind == L.VD_TERMINATOR:
            break
        tag = "pvd" if kind == L.VD_PRIMARY else "svd"
        for name in ("type", "version", "volume_space_size", "volume_set_size",
                     "volume_sequence_number", "logical_block_size", "path_table_size",
                     "l_path_table", "l_path_table_optional", "m_path_table",
                     "m_path_table_optional", "file_structure_version"):
            off, size = vd_fields[name]
            enc = ("both" if size in (4, 8) else "big" if name.startswith("m_path")
                   else "little")
            # Listed HEADER_WEIGHT times (see _fat_fields).
            fields += [(at + off, size, enc, f"{tag}.{name}")] * HEADER_WEIGHT
        root_at = at + vd_fields["root_directory_record"][0]
        record(root_at, data[root_at:root_at + data[root_at]], False)
        tree(root_at, kind == L.VD_PRIMARY)
        pt_size = int.from_bytes(data[at + vd_fields["path_table_size"][0]:][:4], "little")
        path_table(int.from_bytes(data[at + vd_fields["l_path_table"][0]:][:4], "little"),
                   pt_size, "little")
        path_table(int.from_bytes(data[at + vd_fields["m_path_table"][0]:][:4], "big"),
                   pt_size, "big")
    return fields


def _fat_fields(data: bytes) -> list:
    """Boot sector (BPB), FSInfo, every directory entry (short and long
    name entries) and every FAT entry in use, located through
    rumpfs.formats.fat.layout; a FAT entry is ("fat", bits, ...) so that
    its mutations can make loops, free clusters in a chain and clusters out
    of range."""
    import io

    from rumpfs.formats.fat import layout as L
    from rumpfs.formats.fat.reader import FatReader
    f = io.BytesIO(data)
    f.name = "seed"
    r = FatReader(f, 0, len(data))
    boot = {sc.name: sc.subcon
            for sc in (L.BootSector32 if r.fat == 32 else L.BootSector16).subcons}
    bpb = _struct_fields(boot["bpb"])
    fields = [(off, size, "little", name) for name, (off, size) in bpb.items()
              if name not in ("BS_jmpBoot", "BS_OEMName")]
    ext_at = boot["bpb"].sizeof()
    if r.fat == 32:
        fat32 = boot["fat32"]
        for name, (off, size) in _struct_fields(fat32).items():
            if name != "BPB_Reserved":
                fields.append((ext_at + off, size, "little", name))
        ext_at += fat32.sizeof()
        for name, (off, size) in _struct_fields(L.FsInfo).items():
            if not name.startswith("FSI_Reserved"):
                fields.append((L.FSINFO_SECTOR * L.SECTOR + off, size, "little", name))
    ext = _struct_fields(boot["ext"])
    for name in ("BS_BootSig", "BS_VolLab", "BS_FilSysType"):
        off, size = ext[name]
        fields.append((ext_at + off, size, "name" if size > 4 else "little", name))
    # A few fields describe the whole volume, hundreds each entry: the
    # former are listed HEADER_WEIGHT times, so that they are aimed at too.
    fields *= HEADER_WEIGHT

    # FAT entries in use: where chains start and end, and every 16th in
    # between (the chains are long runs), in the first FAT, which readers
    # follow; the chains' ends in the others.
    count = r.clusters + L.FIRST_CLUSTER
    table = r._table
    used = [c for c in range(L.FIRST_CLUSTER, count) if table[c]]
    ends = [c for c in used if r._is_end(table[c])]
    starts = [c for c in used if table[c - 1] != c]
    picked = sorted(set(ends + starts + used[::16]))
    for copy in range(r.nfats):
        at = (r.reserved + copy * r.fat_sectors) * r.bps
        for c in picked if copy == 0 else ends:
            fields.append((at + c * r.fat // 8, 2 if r.fat == 12 else r.fat // 8,
                           ("fat", r.fat, c, count, used), f"FAT{copy}[{c}]"))

    # Directory entries, walking the tree from the root.
    dirent = _struct_fields(L.DirEntry)
    lfn = _struct_fields(L.LfnEntry)
    stack = [0]
    seen = set()
    while stack:
        first = stack.pop()
        if first == 0 and r.fat != 32:
            where = [r.root_start * r.bps + k * L.DIR_ENTRY_SIZE for k in range(r.root_entries)]
        else:
            chain = r.chain(first or r.root_cluster)
            where = [r._cluster_pos(c) + k
                     for c in chain for k in range(0, r.cluster_bytes, L.DIR_ENTRY_SIZE)]
        for at in where:
            raw = data[at:at + L.DIR_ENTRY_SIZE]
            if raw[0] == 0:
                break
            if raw[11] & 0x3F == L.ATTR_LONG_NAME:
                for name in ("LDIR_Ord", "LDIR_Attr", "LDIR_Type", "LDIR_Chksum",
                             "LDIR_FstClusLO"):
                    off, size = lfn[name]
                    fields.append((at + off, size, "little", name))
                for name in ("LDIR_Name1", "LDIR_Name2", "LDIR_Name3"):
                    off, size = lfn[name]
                    fields.append((at + off, size, "name", name))
                continue
            for name in ("DIR_Attr", "DIR_NTRes", "DIR_FstClusHI", "DIR_FstClusLO",
                         "DIR_FileSize", "DIR_WrtDate", "DIR_WrtTime"):
                off, size = dirent[name]
                fields.append((at + off, size, "little", name))
            off, size = dirent["DIR_Name"]
            fields.append((at + off, size, "name", "DIR_Name"))
            cluster = (int.from_bytes(raw[20:22], "little") << 16) | int.from_bytes(
                raw[26:28], "little")
            if (raw[11] & L.ATTR_DIRECTORY and raw[:2] != b". " and raw[:2] != b".."
                    and cluster and cluster not in seen):
                seen.add(cluster)
                stack.append(cluster)
    return fields


class Seed:
    """One valid image, and the fields of it the mutator aims at."""

    def __init__(self, kind: str, path: str):
        self.kind = kind
        with open(path, "rb") as f:
            self.data = f.read()
        self.method = COMPRESSED.get(kind)
        #: Uncompressed cpio of a compressed kind: mutated, then compressed again.
        self.inner = None
        fields = []
        if kind.startswith("elf"):
            fields, off, size = _elf_fields(path)
            image = self.data[off:off + size]
            if compress.sniff(image[:16]) is None:
                fields += (_ffs_fields(self.data, off) if "ffs" in kind
                           else _cpio_fields(self.data, off))
        elif kind.startswith("ffs"):
            fields = _ffs_fields(self.data, 0)
        elif self.method:
            dec = compress.decompressor(self.method)
            self.inner = dec.decompress(self.data)
            fields = _cpio_fields(self.inner, 0)
        elif kind in ("newc", "crc"):
            fields = _cpio_fields(self.data, 0)
        elif kind == "iso":
            fields = _iso_fields(self.data)
        elif kind.startswith("fat"):
            fields = _fat_fields(self.data)
        self.fields = fields


# --- mutations ------------------------------------------------------------------


def _interesting(rng: random.Random, old: int, size: int, image_size: int) -> int:
    top = (1 << (8 * size)) - 1
    choices = [0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x1000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 4_000_000, top, top - 1, top >> 1,
               (top >> 1) + 1, old + 1, old - 1, old * 2, old // 2, old << 8, old * 1000,
               old ^ (1 << rng.randrange(8 * size)), image_size, image_size + 1,
               image_size // 512, rng.randrange(top + 1)]
    return rng.choice(choices) & top


def _set_field(rng, buf: bytearray, field, image_size: int) -> str:
    off, size, enc, name = field
    if off + size > len(buf):
        return f"{name}@{off}: past the end"
    if enc == "name":
        choice = rng.randrange(4)
        if choice == 0:      # lose the terminating NUL
            buf[off + size - 1] = ord("A")
        elif choice == 1:    # invalid UTF-8 and path tricks
            junk = rng.choice([b"\xff\xfe", b"../", b"/", b"\0", b"..", b"a/../../"])
            n = min(len(junk), size)
            buf[off:off + n] = junk[:n]
        else:
            buf[off + rng.randrange(size)] = rng.randrange(256)
        return f"{name}@{off}: name bytes"
    if enc == "hex":
        raw = bytes(buf[off:off + size])
        old = int(raw, 16) if raw and not raw.translate(None, b"0123456789abcdefABCDEF") else 0
        if rng.random() < 0.1:
            new_bytes = rng.choice([b"0000000G", b"        ", b"-0000001", b"+0000001",
                                    b"0x000001", b"\0" * 8])
            buf[off:off + size] = new_bytes
            return f"{name}@{off}: {new_bytes!r}"
        new = _interesting(rng, old, 4, image_size)
        buf[off:off + size] = b"%08X" % new
        return f"{name}@{off}: {old} -> {new}"
    if isinstance(enc, tuple):
        return _set_fat_entry(rng, buf, field)
    if enc == "both":
        # Both halves alike (what a reader of either half sees), or only one.
        half = size // 2
        old = int.from_bytes(buf[off:off + half], "little")
        new = _interesting(rng, old, half, image_size)
        which = rng.choice(("both", "both", "little", "big"))
        if which != "big":
            buf[off:off + half] = new.to_bytes(half, "little")
        if which != "little":
            buf[off + half:off + size] = new.to_bytes(half, "big")
        return f"{name}@{off}: {old} -> {new} ({which})"
    old = int.from_bytes(buf[off:off + size], enc)
    new = _interesting(rng, old, size, image_size)
    buf[off:off + size] = new.to_bytes(size, enc)
    return f"{name}@{off}: {old} -> {new}"


def _set_fat_entry(rng, buf: bytearray, field) -> str:
    """A FAT entry made to loop (to itself or to a cluster before it),
    free in the middle of a chain, out of range, bad, reserved or the end
    early, or any other cluster in use."""
    off, size, (_, bits, cluster, count, used), name = field
    top = (1 << bits) - 1 if bits != 32 else 0x0FFFFFFF
    new = rng.choice([cluster, rng.choice(used), used[0], 0, 1, count, count + 1,
                      top - 8, top - 7, top, top + 1 if bits == 32 else top,
                      rng.randrange(top + 1), 0xFFFFFFFF if bits == 32 else top])
    if bits == 12:
        word = int.from_bytes(buf[off:off + 2], "little")
        if cluster % 2:
            old, word = word >> 4, (word & 0x000F) | ((new & 0xFFF) << 4)
        else:
            old, word = word & 0xFFF, (word & 0xF000) | (new & 0xFFF)
        buf[off:off + 2] = word.to_bytes(2, "little")
    else:
        old = int.from_bytes(buf[off:off + size], "little")
        buf[off:off + size] = (new & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    return f"{name}@{off}: {old} -> {new}"


def _mutate_bytes(rng: random.Random, buf: bytearray, fields: list, others: list) -> list[str]:
    """One to three mutations of ``buf`` in place; what was done, in words."""
    done = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        if not buf:
            break
        op = rng.random()
        if fields and op < 0.45:
            done.append(_set_field(rng, buf, rng.choice(fields), len(buf)))
        elif op < 0.60:
            n = rng.randint(1, 8)
            for _ in range(n):
                at = rng.randrange(len(buf))
                buf[at] ^= 1 << rng.randrange(8)
            done.append(f"flip {n} bits")
        elif op < 0.72:
            # Cut at a random place, or near a field (a header cut short).
            if fields and rng.random() < 0.5:
                at = max(0, rng.choice(fields)[0] + rng.randint(-4, 4))
            else:
                at = rng.randrange(len(buf))
            del buf[at:]
            done.append(f"truncate at {at}")
        elif op < 0.84:
            src = rng.choice(others) if others and rng.random() < 0.3 else bytes(buf)
            if not src:
                continue
            start = rng.randrange(len(src))
            n = min(rng.choice((4, 16, 64, 512, 4096)), len(src) - start)
            at = rng.randrange(len(buf))
            buf[at:at + n] = src[start:start + n]
            done.append(f"splice {n} bytes from {start} to {at}")
        elif op < 0.92:
            at = rng.randrange(len(buf))
            n = rng.choice((1, 3, 4, 512))
            buf[at:at] = bytes(rng.randrange(256) for _ in range(n))
            done.append(f"insert {n} bytes at {at}")
        else:
            at = rng.randrange(len(buf))
            n = rng.choice((1, 4, 110, 512))
            del buf[at:at + n]
            done.append(f"delete {n} bytes at {at}")
    return done


def mutant(seed: Seed, run_seed: int, index: int, others: list) -> tuple[bytes, list[str]]:
    """The mutant number ``index`` of ``seed`` in run ``run_seed``: a pure function."""
    rng = random.Random(f"{seed.kind}:{run_seed}:{index}")
    if seed.inner is not None and rng.random() < 0.6:
        buf = bytearray(seed.inner)
        done = _mutate_bytes(rng, buf, seed.fields, others)
        comp = compress.compressor(seed.method)
        return comp.compress(bytes(buf)) + comp.flush(), ["inner: " + d for d in done]
    buf = bytearray(seed.data)
    fields = seed.fields if seed.inner is None else []
    done = _mutate_bytes(rng, buf, fields, others)
    return buf, done


# --- running the readers on a mutant ---------------------------------------------


class _Timeout(BaseException):
    """Raised by the alarm: a BaseException, so no reader's handler eats it."""


def _on_alarm(signum, frame):
    raise _Timeout()


def _signature(exc: BaseException) -> str:
    """Exception type and the innermost rumpfs frame: what makes two crashes one."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    for fr in frames:
        if os.sep + "rumpfs" + os.sep in fr.filename:
            where = f"{os.path.relpath(fr.filename, ROOT)}:{fr.name}:{fr.lineno}"
    return f"{type(exc).__name__} at {where}"


def _in_extract(exc: BaseException) -> bool:
    """Whether the innermost rumpfs frame is extraction itself (rumpfs.inspect's
    extract or _set_meta), not a reader."""
    frames = [fr for fr in traceback.extract_tb(exc.__traceback__)
              if os.sep + "rumpfs" + os.sep in fr.filename]
    return bool(frames) and frames[-1].filename.endswith("inspect.py") and \
        frames[-1].name in ("extract", "_set_meta")


#: A hole's zeros as a reader streams them.
_ZEROS = bytes(1 << 20)


def _image_size(path: str) -> int:
    """Bytes of the image (decompressed when it is compressed)."""
    with open(path, "rb") as f:
        method = compress.sniff(f.read(16))
        f.seek(0)
        if not method:
            return os.path.getsize(path)
        try:
            return sum(len(piece) for piece in compress.decompressed(f, method))
        except compress.CorruptStream:
            return os.path.getsize(path)


def exercise(path: str, workdir: str) -> dict:
    """Every reader operation on ``path``; what each did and what failed."""
    name = os.path.basename(path)
    image_size = _image_size(path)
    failures, extract_failures = [], []
    status = {}

    def run(op, fn):
        try:
            fn()
        except RumpfsError as e:
            msg = str(e)
            status[op] = "error"
            if "\n" in msg or name not in msg:
                failures.append({"op": op, "signature": "message does not name the file "
                                 "in one line", "detail": msg})
            return
        except (_Timeout, KeyboardInterrupt):
            raise
        except BaseException as e:  # noqa: BLE001 - what the fuzzer is for
            status[op] = "fail"
            record = {"op": op, "signature": _signature(e), "detail": repr(e)[:300],
                      "traceback": traceback.format_exc()[-3000:]}
            if op == "extract" and _in_extract(e):
                extract_failures.append(record)
            else:
                failures.append(record)
            return
        status.setdefault(op, "ok")

    def info():
        json.dumps(inspect.describe(path), default=str)

    entries = []

    def ls():
        with inspect.open_image(path) as reader:
            for e in reader.entries():
                e.ls_line()
                json.dumps(e.as_json())
                entries.append(e)

    def cat():
        # Holes stream as zeros without reading (a sparse file may be far
        # larger than its image); the data read may not be.
        data_limit = 2 * image_size + (1 << 20)
        with inspect.open_image(path) as reader:
            for e in entries:
                if not stat.S_ISREG(e.mode):
                    continue
                total = data = 0
                for chunk in reader.read(reader.find(e.path)):
                    total += len(chunk)
                    if len(chunk) > len(_ZEROS) or chunk != _ZEROS[:len(chunk)]:
                        data += len(chunk)
                    if data > data_limit:
                        raise AssertionError(f"cat {e.path!r}: more than {data_limit} bytes "
                                             f"of data from a {image_size}-byte image")
                    if total > CAT_LIMIT:
                        break

    problems = []

    def check():
        with inspect.open_image(path) as reader:
            problems.extend(reader.check())
        for p in problems:
            if "\n" in p:
                raise AssertionError(f"check problem of several lines: {p!r}")

    def extract():
        if any(e.size > CAT_LIMIT for e in entries if stat.S_ISREG(e.mode)):
            status["extract"] = "skipped"  # a (claimed) sparse giant: not extracted
            return
        target = os.path.join(workdir, "x")
        shutil.rmtree(target, ignore_errors=True)
        try:
            with inspect.open_image(path) as reader:
                inspect.extract(reader, target)
        finally:
            shutil.rmtree(target, ignore_errors=True)

    run("info", info)
    run("ls", ls)
    if entries:
        run("cat", cat)
    run("check", check)
    if status.get("ls") == "ok":
        run("extract", extract)
    clean = status.get("check") == "ok" and not problems
    if clean:
        for op in ("ls", "cat", "extract"):
            if status.get(op) == "error":
                failures.append({"op": op, "signature": f"check calls it clean, {op} fails",
                                 "detail": ""})
    return {"failures": failures, "extract_failures": extract_failures, "clean": clean,
            "status": status}


# --- workers and the driver ----------------------------------------------------


def _worker(workdir: str, run_seed: int) -> None:
    """Read "kind index" lines, answer one JSON line each."""
    import warnings
    warnings.simplefilter("ignore")
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _on_alarm)
    seeds = _load_seeds(workdir)
    others = [s.data for s in seeds.values()]
    scratch = tempfile.mkdtemp(prefix="w", dir=workdir)
    path = os.path.join(scratch, "mutant.bin")
    for line in sys.stdin:
        kind, index = line.split()
        index = int(index)
        data, done = mutant(seeds[kind], run_seed, index, others)
        _write_sparse(path, data)
        signal.alarm(TIME_LIMIT)
        try:
            result = exercise(path, scratch)
        except _Timeout:
            result = {"failures": [{"op": "?", "signature": "hang",
                                    "detail": f"over {TIME_LIMIT} s",
                                    "traceback": traceback.format_exc()[-3000:]}],
                      "extract_failures": [], "clean": False}
        finally:
            signal.alarm(0)
        result.update(kind=kind, index=index, mutations=done,
                      rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def _write_sparse(path: str, data: bytes) -> None:
    """Write ``data`` with its trailing zeros as a hole (a FAT32 seed is
    33 MB, nearly all of it free clusters)."""
    end, step = len(data), len(_ZEROS)
    while end >= step and data[end - step:end] == _ZEROS:
        end -= step
    end = len(data[:end].rstrip(b"\0")) if end <= step else \
        end - step + len(data[end - step:end].rstrip(b"\0"))
    with open(path, "wb") as f:
        f.write(memoryview(data)[:end])
        f.truncate(len(data))


_SEEDS: dict = {}


def _load_seeds(workdir: str) -> dict:
    """kind -> Seed of the images in ``workdir`` (built there when missing)."""
    if workdir not in _SEEDS:
        _SEEDS[workdir] = {kind: Seed(kind, path)
                           for kind, path in sorted(build_seeds(workdir).items())}
    return _SEEDS[workdir]


class Summary:
    def __init__(self):
        self.mutants: dict[str, int] = {}
        self.clean: dict[str, int] = {}
        self.failures: list[dict] = []
        self.extract_failures: list[dict] = []
        self.hangs = 0
        self.peak_rss_kib = 0
        self.seconds = 0.0
        self.interrupted = False

    def signatures(self, which=None) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.failures if which is None else which:
            out[f["signature"]] = out.get(f["signature"], 0) + 1
        return out

    def report(self) -> str:
        lines = [("interrupted: " if self.interrupted else "") +
                 f"{sum(self.mutants.values())} mutants in {self.seconds:.0f} s, "
                 f"peak worker RSS {self.peak_rss_kib // 1024} MiB, "
                 f"{len(self.failures)} failures ({self.hangs} hangs), "
                 f"{len(self.extract_failures)} extract-only failures"]
        for kind in sorted(self.mutants):
            lines.append(f"  {kind:12} {self.mutants[kind]:7} mutants, "
                         f"{self.clean.get(kind, 0):6} called clean by check")
        for sig, n in sorted(self.signatures().items(), key=lambda x: -x[1]):
            lines.append(f"  FAIL {n:5}x {sig}")
        for sig, n in sorted(self.signatures(self.extract_failures).items(), key=lambda x: -x[1]):
            clean = sum(1 for f in self.extract_failures if f["signature"] == sig and f["clean"])
            lines.append(f"  EXTRACT {n:5}x {sig} ({clean} after a clean check)")
        return "\n".join(lines)


class _Worker:
    def __init__(self, workdir, run_seed):
        # Workers' warnings and deaths go to a log beside the seeds.
        self.log = open(os.path.join(workdir, "workers.log"), "a")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", workdir, "--seed",
             str(run_seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1, stderr=self.log)
        self.job = None
        self.started = 0.0

    def send(self, job):
        self.job = job
        self.started = time.monotonic()
        self.proc.stdin.write(f"{job[0]} {job[1]}\n")
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.log.close()


def run(kinds=None, mutants: int = 100, run_seed: int = 0, jobs: int = 2,
        workdir: str | None = None, out: str | None = None, progress=None,
        first: int = 0) -> Summary:
    """Fuzz ``mutants`` mutants of each kind, numbers ``first`` on, with
    ``jobs`` worker processes."""
    kinds = sorted(kinds or KINDS)
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="rumpfs-fuzz-")
    build_seeds(workdir)
    todo = [(k, i) for i in range(first, first + mutants) for k in kinds]
    todo.reverse()
    summary = Summary()
    start = time.monotonic()
    workers = []

    def _spawn():
        workers.append(_Worker(workdir, run_seed))
        return workers[-1]

    for _ in range(max(1, min(jobs, len(todo)))):
        _spawn()
    deadline = TIME_LIMIT * 3
    try:
        idle = list(workers)
        busy: dict = {}
        while todo or busy:
            while idle and todo:
                w = idle.pop()
                w.send(todo.pop())
                busy[w.proc.stdout.fileno()] = w
            ready, _, _ = select.select(list(busy), [], [], 1.0)
            now = time.monotonic()
            for fd in ready:
                w = busy.pop(fd)
                line = w.proc.stdout.readline()
                if line:
                    _record(summary, json.loads(line), run_seed, out, workdir)
                    idle.append(w)
                    continue
                rc = w.proc.wait()
                w.stop()  # its pipes and log: a run of many deaths must not run out of fds
                workers.remove(w)
                _record(summary, _lost(w.job, f"worker died (exit status {rc})"), run_seed,
                        out, workdir)
                idle.append(_spawn())
            for fd, w in list(busy.items()):
                if now - w.started > deadline:
                    busy.pop(fd)
                    w.stop()
                    workers.remove(w)
                    _record(summary, _lost(w.job, "hang"), run_seed, out, workdir)
                    idle.append(_spawn())
            if progress:
                progress(summary)
    except KeyboardInterrupt:
        # A long run stopped by hand still reports what it did.
        summary.interrupted = True
    finally:
        for w in workers:
            w.stop()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = time.monotonic() - start
    return summary


def _lost(job, why):
    return {"kind": job[0], "index": job[1], "mutations": [], "clean": False,
            "failures": [{"op": "?", "signature": why, "detail": ""}],
            "extract_failures": [], "rss_kib": 0}


def _record(summary: Summary, result: dict, run_seed: int, out: str | None, workdir: str):
    kind = result["kind"]
    summary.mutants[kind] = summary.mutants.get(kind, 0) + 1
    summary.clean[kind] = summary.clean.get(kind, 0) + bool(result["clean"])
    summary.peak_rss_kib = max(summary.peak_rss_kib, result["rss_kib"])
    where = {"kind": kind, "seed": run_seed, "index": result["index"],
             "mutations": result["mutations"]}
    for f in result["failures"]:
        if f["signature"] == "hang":
            summary.hangs += 1
        summary.failures.append(dict(where, **f))
    for f in result["extract_failures"]:
        summary.extract_failures.append(dict(where, clean=result["clean"], **f))
    if out and (result["failures"] or result["extract_failures"]):
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "failures.jsonl"), "a") as fh:
            for f in result["failures"] + result["extract_failures"]:
                fh.write(json.dumps(dict(where, clean=result["clean"], **f)) + "\n")
        seeds = _load_seeds(workdir)
        data, _ = mutant(seeds[kind], run_seed, result["index"], [s.data for s in seeds.values()])
        with open(os.path.join(out, f"{kind}-{run_seed}-{result['index']}.bin"), "wb") as fh:
            fh.write(data)


def replay(spec: str, workdir: str) -> dict:
    """Run one mutant, ``KIND:SEED:INDEX``, in this process."""
    kind, run_seed, index = spec.split(":")
    seeds = _load_seeds(workdir)
    data, done = mutant(seeds[kind], int(run_seed), int(index), [s.data for s in seeds.values()])
    path = os.path.join(workdir, f"{kind}-{run_seed}-{index}.bin")
    with open(path, "wb") as f:
        f.write(data)
    result = exercise(path, workdir)
    result.update(mutations=done, path=path)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mutants", type=int, default=int(os.environ.get("FUZZ_MUTANTS", 1000)),
                   help="mutants per kind (env FUZZ_MUTANTS)")
    p.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", 0)))
    p.add_argument("--first", type=int, default=0,
                   help="number of the first mutant (to go on with a run cut short)")
    p.add_argument("--jobs", type=int, default=int(os.environ.get("FUZZ_JOBS", 2)))
    p.add_argument("--kinds", default=os.environ.get("FUZZ_KINDS", ""),
                   help="comma-separated kinds (default all: " + ", ".join(KINDS) + ")")
    p.add_argument("--out", default=os.environ.get("FUZZ_OUT"),
                   help="directory for failing mutants and failures.jsonl")
    p.add_argument("--workdir", help="directory for the seed images (kept)")
    p.add_argument("--replay", metavar="KIND:SEED:INDEX")
    p.add_argument("--worker", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.seed)
        return 0
    if args.replay:
        workdir = args.workdir or tempfile.mkdtemp(prefix="rumpfs-fuzz-")
        result = replay(args.replay, workdir)
        for f in result["failures"] + result["extract_failures"]:
            print(f.get("traceback") or f["detail"])
        print(json.dumps({k: v for k, v in result.items()
                          if k not in ("failures", "extract_failures")}, indent=1))
        print(json.dumps([{k: v for k, v in f.items() if k != "traceback"}
                          for f in result["failures"] + result["extract_failures"]], indent=1))
        return 1 if result["failures"] else 0
    last = [0.0]

    def progress(summary):
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            print(f"... {sum(summary.mutants.values())} mutants, {len(summary.failures)} "
                  f"failures, peak RSS {summary.peak_rss_kib // 1024} MiB", flush=True)

    kinds = [k for k in args.kinds.split(",") if k] or None
    summary = run(kinds, args.mutants, args.seed, args.jobs, args.workdir, args.out, progress,
                  args.first)
    print(summary.report())
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
