"""Disk containers around a bundle's raw disk: Azure's fixed VHD and GCE's
``disk.raw`` tar.gz.

VHD (Microsoft "Virtual Hard Disk Image Format Specification" 1.0): a fixed
disk is the raw disk followed by a 512-byte big-endian footer.
"""

from __future__ import annotations

import gzip

from construct import Bytes, Const, Int8ub, Int16ub, Int32ub, Int64ub, Padding, Struct

from .gnutar import write_sparse_member

VHD_FOOTER_SIZE = 512
VHD_COOKIE = b"conectix"
#: Features: bit 1 "reserved" must always be set.
VHD_FEATURES_RESERVED = 0x00000002
VHD_VERSION = 0x00010000
#: A fixed disk has no dynamic header.
VHD_NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
VHD_DISK_FIXED = 2
#: VHD timestamps count seconds from 2000-01-01 00:00:00 UTC.
VHD_EPOCH = 946684800
VHD_CREATOR_APP = b"rmfs"
VHD_CREATOR_VERSION = 0x00010000
VHD_CREATOR_HOST = b"Wi2k"
#: Azure wants the virtual size to be a whole number of MiB.
AZURE_ALIGN = 1 << 20
SECTOR = 512

VhdFooter = Struct(
    "cookie" / Const(VHD_COOKIE),
    "features" / Int32ub,
    "file_format_version" / Int32ub,
    "data_offset" / Int64ub,
    "timestamp" / Int32ub,
    "creator_application" / Bytes(4),
    "creator_version" / Int32ub,
    "creator_host_os" / Bytes(4),
    "original_size" / Int64ub,
    "current_size" / Int64ub,
    "cylinders" / Int16ub,
    "heads" / Int8ub,
    "sectors_per_track" / Int8ub,
    "disk_type" / Int32ub,
    "checksum" / Int32ub,
    "unique_id" / Bytes(16),
    "saved_state" / Int8ub,
    Padding(427),
)


def vhd_geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) as the VHD specification's
    appendix computes them from the disk size."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cyl_heads = total // spt
    else:
        spt = 17
        cyl_heads = total // spt
        heads = max((cyl_heads + 1023) // 1024, 4)
        if cyl_heads >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cyl_heads = total // spt
        if cyl_heads >= heads * 1024:
            spt, heads = 63, 16
            cyl_heads = total // spt
    return cyl_heads // heads, heads, spt


def vhd_footer(size: int, epoch: int, unique_id: bytes) -> bytes:
    cylinders, heads, spt = vhd_geometry(size)
    fields = dict(
        features=VHD_FEATURES_RESERVED, file_format_version=VHD_VERSION,
        data_offset=VHD_NO_DATA_OFFSET, timestamp=max(epoch - VHD_EPOCH, 0),
        creator_application=VHD_CREATOR_APP, creator_version=VHD_CREATOR_VERSION,
        creator_host_os=VHD_CREATOR_HOST, original_size=size, current_size=size,
        cylinders=cylinders, heads=heads, sectors_per_track=spt, disk_type=VHD_DISK_FIXED,
        checksum=0, unique_id=unique_id, saved_state=0)
    blank = VhdFooter.build(fields)
    fields["checksum"] = ~sum(blank) & 0xFFFFFFFF
    return VhdFooter.build(fields)


def append_vhd_footer(out, size: int, epoch: int, unique_id: bytes) -> int:
    """Pad the raw disk in ``out`` to a whole MiB and append the footer."""
    padded = -(-size // AZURE_ALIGN) * AZURE_ALIGN
    out.truncate(padded)
    out.seek(padded)
    out.write(vhd_footer(padded, epoch, unique_id))
    return padded + VHD_FOOTER_SIZE


#: GCE's image import: exactly one member with this name.
GCE_MEMBER = "disk.raw"


def write_gce_tar_gz(out, raw, size: int, epoch: int) -> None:
    """GCE's import format: a gzip'd GNU tar with the raw disk (the binary
    file ``raw``, ``size`` bytes) as the sparse member ``disk.raw``, as
    ``tar --format=oldgnu -Sczf`` makes it: its zeros are not stored."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=epoch) as gz:
        write_sparse_member(gz, GCE_MEMBER, raw, size, epoch)
