"""A small FAT16 image holding a few files: the EFI system partition of a
``--uefi`` bundle (``/EFI/BOOT/BOOTX64.EFI``).

Layout as the FAT specification (Microsoft, "FAT: General Overview of
On-Disk Format" 1.03) gives it: the boot sector with its BPB, two FATs, the
fixed root directory, then the clusters.  The FAT type follows from the
cluster count alone, so the image always has at least 4085 clusters (FAT16;
UEFI firmware rejects a FAT whose type and cluster count disagree).
Reproducible: every date is the bundle's epoch, the volume ID is given.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Struct

SECTOR = 512
RESERVED_SECTORS = 1
NUM_FATS = 2
ROOT_ENTRIES = 512
DIR_ENTRY = 32
MEDIA_FIXED = 0xF8
FAT16_MIN_CLUSTERS = 4085
FAT16_MAX_CLUSTERS = 65524
FAT16_EOC = 0xFFFF
#: FAT[0] holds the media byte, FAT[1] the end-of-chain mark; data clusters start at 2.
FIRST_CLUSTER = 2
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
EXTENDED_BOOT_SIGNATURE = 0x29
DRIVE_HARD_DISK = 0x80
FAT_EPOCH_YEAR = 1980
COPY_CHUNK = 1 << 20

BootSector = Struct(
    "jump" / Const(b"\xeb\x3c\x90"),
    "oem_name" / Bytes(8),
    "bytes_per_sector" / Int16ul,
    "sectors_per_cluster" / Int8ul,
    "reserved_sectors" / Int16ul,
    "num_fats" / Int8ul,
    "root_entries" / Int16ul,
    "total_sectors_16" / Int16ul,
    "media" / Int8ul,
    "fat_size_16" / Int16ul,
    "sectors_per_track" / Int16ul,
    "num_heads" / Int16ul,
    "hidden_sectors" / Int32ul,
    "total_sectors_32" / Int32ul,
    "drive_number" / Int8ul,
    "reserved1" / Int8ul,
    "boot_signature" / Int8ul,
    "volume_id" / Int32ul,
    "volume_label" / Bytes(11),
    "fs_type" / Bytes(8),
    "boot_code" / Bytes(448),
    "signature" / Const(b"\x55\xaa"),
)

DirEntry = Struct(
    "name" / Bytes(11),
    "attr" / Int8ul,
    "nt_reserved" / Int8ul,
    "create_time_tenth" / Int8ul,
    "create_time" / Int16ul,
    "create_date" / Int16ul,
    "access_date" / Int16ul,
    "first_cluster_hi" / Int16ul,
    "write_time" / Int16ul,
    "write_date" / Int16ul,
    "first_cluster_lo" / Int16ul,
    "size" / Int32ul,
)


def short_name(name: str) -> bytes:
    """'BOOTX64.EFI' -> b'BOOTX64 EFI' (8.3, upper case; the names here are fixed)."""
    base, _, ext = name.upper().partition(".")
    if name in (".", ".."):
        base, ext = name, ""
    return base.ljust(8).encode() + ext.ljust(3).encode()


def fat_datetime(epoch: int) -> tuple[int, int]:
    t = time.gmtime(epoch)
    if t.tm_year < FAT_EPOCH_YEAR:
        return (0 << 9) | (1 << 5) | 1, 0
    date = ((t.tm_year - FAT_EPOCH_YEAR) << 9) | (t.tm_mon << 5) | t.tm_mday
    return date, (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)


@dataclass
class _Node:
    name: str
    source: str | None = None             # host file; None for a directory
    children: list = field(default_factory=list)
    size: int = 0
    cluster: int = 0
    clusters: int = 0


def _entry(name: str, attr: int, cluster: int, size: int, date: int, tm: int) -> bytes:
    return DirEntry.build(dict(name=short_name(name), attr=attr, nt_reserved=0, create_time_tenth=0,
                               create_time=tm, create_date=date, access_date=date, first_cluster_hi=0,
                               write_time=tm, write_date=date, first_cluster_lo=cluster, size=size))


#: The boot sector's label when the root directory has no volume label entry.
NO_LABEL = b"NO NAME    "


def write_fat16(out, files: dict[str, str], volume_id: int, epoch: int) -> int:
    """Write a FAT16 image of ``files`` ({"/EFI/BOOT/BOOTX64.EFI": host path})
    to the binary file ``out`` at its current position; returns its size."""
    root = _Node("")
    for image_path, host in sorted(files.items()):
        *dirs, leaf = image_path.strip("/").split("/")
        parent = root
        for d in dirs:
            found = next((c for c in parent.children if c.name == d and c.source is None), None)
            if found is None:
                found = _Node(d)
                parent.children.append(found)
            parent = found
        parent.children.append(_Node(leaf, host, size=os.path.getsize(host)))

    def walk(node):
        for child in node.children:
            yield child
            if child.source is None:
                yield from walk(child)

    nodes = list(walk(root))
    for spc in (1, 2, 4, 8, 16, 32, 64):
        cluster_bytes = spc * SECTOR
        for n in nodes:
            content = n.size if n.source else (len(n.children) + 2) * DIR_ENTRY
            n.clusters = max(1, -(-content // cluster_bytes)) if n.source is None or n.size else 0
        needed = sum(n.clusters for n in nodes)
        if needed <= FAT16_MAX_CLUSTERS:
            break
    count = max(needed, FAT16_MIN_CLUSTERS)
    fat_sectors = -(-(count + FIRST_CLUSTER) * 2 // SECTOR)
    root_sectors = ROOT_ENTRIES * DIR_ENTRY // SECTOR
    data_start = RESERVED_SECTORS + NUM_FATS * fat_sectors + root_sectors
    total = data_start + count * spc
    date, tm = fat_datetime(epoch)

    fat = [MEDIA_FIXED | 0xFF00, FAT16_EOC] + [0] * count
    next_cluster = FIRST_CLUSTER
    for n in nodes:
        if n.clusters:
            n.cluster = next_cluster
            for c in range(next_cluster, next_cluster + n.clusters - 1):
                fat[c] = c + 1
            fat[next_cluster + n.clusters - 1] = FAT16_EOC
            next_cluster += n.clusters

    def listing(node, parent_cluster):
        entries = []
        if node is not root:
            entries += [_entry(".", ATTR_DIRECTORY, node.cluster, 0, date, tm),
                        _entry("..", ATTR_DIRECTORY, parent_cluster, 0, date, tm)]
        for c in node.children:
            attr = ATTR_ARCHIVE if c.source else ATTR_DIRECTORY
            entries.append(_entry(c.name, attr, c.cluster, c.size if c.source else 0, date, tm))
        return b"".join(entries)

    start = out.tell()
    boot = BootSector.build(dict(
        oem_name=b"RUMPFS  ", bytes_per_sector=SECTOR, sectors_per_cluster=spc,
        reserved_sectors=RESERVED_SECTORS, num_fats=NUM_FATS, root_entries=ROOT_ENTRIES,
        total_sectors_16=total if total < 0x10000 else 0, media=MEDIA_FIXED, fat_size_16=fat_sectors,
        sectors_per_track=32, num_heads=64, hidden_sectors=0,
        total_sectors_32=total if total >= 0x10000 else 0, drive_number=DRIVE_HARD_DISK, reserved1=0,
        boot_signature=EXTENDED_BOOT_SIGNATURE, volume_id=volume_id,
        volume_label=NO_LABEL, fs_type=b"FAT16   ", boot_code=bytes(448)))
    out.write(boot)
    fat_bytes = b"".join(v.to_bytes(2, "little") for v in fat).ljust(fat_sectors * SECTOR, b"\0")
    for _ in range(NUM_FATS):
        out.write(fat_bytes)
    out.write(listing(root, 0).ljust(root_sectors * SECTOR, b"\0"))
    cluster_bytes = spc * SECTOR

    def write_dirs(node, parent_cluster):
        for c in node.children:
            if c.source is None:
                out.seek(start + (data_start + (c.cluster - FIRST_CLUSTER) * spc) * SECTOR)
                out.write(listing(c, parent_cluster).ljust(c.clusters * cluster_bytes, b"\0"))
                write_dirs(c, c.cluster)
            elif c.size:
                out.seek(start + (data_start + (c.cluster - FIRST_CLUSTER) * spc) * SECTOR)
                with open(c.source, "rb") as f:
                    while chunk := f.read(COPY_CHUNK):
                        out.write(chunk)

    write_dirs(root, 0)
    out.seek(start + total * SECTOR)
    out.truncate()
    return total * SECTOR
