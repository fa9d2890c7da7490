"""The hybrid ISO of a bundle: ISO 9660 + El Torito (pycdlib), booted by
ISOLINUX, with the isohybrid MBR written here so the same bytes boot as a
hard disk.

El Torito ("El Torito" Bootable CD-ROM Format Specification 1.0): the boot
record volume descriptor, a catalog whose default entry loads 4 sectors of
``isolinux.bin`` with no emulation.  ISOLINUX needs the boot info table
patched into its copy (pycdlib's ``boot_info_table``); booted as a disk it
finds itself through the MBR below.

The isohybrid MBR (syslinux's isohybrid, utils/isohybrid.c, as a format):
the boot code of ``isohdpfx.bin`` (bytes 0-431), the LBA of isolinux.bin in
512-byte sectors at 432, the disk signature at 440, partition 1 active, type
0x17, from sector 0 over the whole image, which is padded to a whole number
of cylinders of 64 heads x 32 sectors (1 MiB).
"""

from __future__ import annotations

import contextlib
import io
import os
import time as _time
from dataclasses import dataclass

import pycdlib
from construct import Array, Bytes, Const, Int8ul, Int32ul, Padding, Struct

from . import gpt

SECTOR = 512
ISO_BLOCK = 2048
#: isolinux.bin is loaded as 4 virtual (512-byte) sectors, as ISOLINUX expects.
ELTORITO_LOAD_SECTORS = 4
HEADS = 64
SECTORS_PER_TRACK = 32
CYLINDER = HEADS * SECTORS_PER_TRACK * SECTOR
MBR_CODE_SIZE = 432
PARTITION_ACTIVE = 0x80
#: isohybrid's partition type (0x17: "hidden NTFS/IFS", as isohybrid writes).
ISOHYBRID_PART_TYPE = 0x17
CHS_MAX_CYLINDER = 1023
EFI_SYSTEM_PART_TYPE = 0xEF
#: El Torito platform ID of UEFI.
PLATFORM_EFI = 0xEF

PartitionEntry = Struct(
    "status" / Int8ul,
    "chs_first" / Bytes(3),
    "type" / Int8ul,
    "chs_last" / Bytes(3),
    "lba_first" / Int32ul,
    "sectors" / Int32ul,
)

IsohybridMbr = Struct(
    "boot_code" / Bytes(MBR_CODE_SIZE),
    "isolinux_lba" / Int32ul,        # 432: isolinux.bin's LBA in 512-byte sectors
    Padding(4),                      # 436: its upper 32 bits
    "disk_signature" / Int32ul,      # 440
    Padding(2),                      # 444
    "partitions" / Array(4, PartitionEntry),
    "boot_signature" / Const(b"\x55\xaa"),
)


def chs(lba: int) -> bytes:
    """A partition entry's CHS address of ``lba`` (capped as CHS must be)."""
    cylinder, rest = divmod(lba, HEADS * SECTORS_PER_TRACK)
    head, sector = divmod(rest, SECTORS_PER_TRACK)
    if cylinder > CHS_MAX_CYLINDER:
        cylinder, head, sector = CHS_MAX_CYLINDER, HEADS - 1, SECTORS_PER_TRACK - 1
    sector += 1
    return bytes((head, sector | (cylinder >> 8) << 6, cylinder & 0xFF))


def _partition(status: int, kind: int, first: int, sectors: int) -> dict:
    return dict(status=status, chs_first=chs(first), type=kind, chs_last=chs(first + sectors - 1),
                lba_first=first, sectors=sectors)


def isohybrid_mbr(boot_code: bytes, isolinux_lba: int, signature: int, size: int,
                  esp: tuple[int, int] | None = None) -> bytes:
    """``esp``: (first sector, sectors) of the EFI system partition image
    inside the ISO, listed as partition 2 (type 0xEF) for UEFI disk boots."""
    empty = dict(status=0, chs_first=bytes(3), type=0, chs_last=bytes(3), lba_first=0, sectors=0)
    parts = [_partition(PARTITION_ACTIVE, ISOHYBRID_PART_TYPE, 0, size // SECTOR)]
    if esp is not None:
        parts.append(_partition(0, EFI_SYSTEM_PART_TYPE, *esp))
    return IsohybridMbr.build(dict(
        boot_code=boot_code[:MBR_CODE_SIZE],
        isolinux_lba=isolinux_lba * (ISO_BLOCK // SECTOR),
        disk_signature=signature,
        partitions=parts + [empty] * (4 - len(parts)),
    ))


def protective_mbr(boot_code: bytes, isolinux_lba: int, signature: int, size: int) -> bytes:
    """The isohybrid MBR's code with GPT's protective entry (type 0xEE from
    LBA 1 over the disk) as its only partition."""
    empty = dict(status=0, chs_first=bytes(3), type=0, chs_last=bytes(3), lba_first=0, sectors=0)
    sectors = min(size // SECTOR - 1, 0xFFFFFFFF)
    return IsohybridMbr.build(dict(
        boot_code=boot_code[:MBR_CODE_SIZE],
        isolinux_lba=isolinux_lba * (ISO_BLOCK // SECTOR),
        disk_signature=signature,
        partitions=[_partition(0, gpt.PROTECTIVE_TYPE, 1, sectors)] + [empty] * 3,
    ))


class _Clock:
    """The ``time`` module as pycdlib sees it while a bundle is written: every
    date is the bundle's epoch, in UTC, so the same input gives the same bytes."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def time(self) -> float:
        return float(self.epoch)

    def localtime(self, t=None):
        return _time.gmtime(self.epoch if t is None else t)

    def __getattr__(self, name):
        return getattr(_time, name)


#: pycdlib's modules that read the clock.
_PYCDLIB_CLOCK_USERS = ("pycdlib.pycdlib", "pycdlib.headervd", "pycdlib.dates", "pycdlib.utils")


@contextlib.contextmanager
def fixed_clock(epoch: int):
    import importlib
    modules = [importlib.import_module(name) for name in _PYCDLIB_CLOCK_USERS]
    saved = [m.time for m in modules]
    clock = _Clock(epoch)
    for m in modules:
        m.time = clock
    try:
        yield
    finally:
        for m, t in zip(modules, saved):
            m.time = t


@dataclass(frozen=True)
class IsoFile:
    """A file of the ISO: its ISO 9660 path and a host path or bytes."""
    iso_path: str
    source: str | bytes


def iso_name(path: str) -> str:
    """'/isolinux/mboot.c32' -> '/ISOLINUX/MBOOT.C32;1' (ISO 9660 level 1)."""
    return path.upper() + ";1"


def write_hybrid_iso(out, files: list[IsoFile], dirs: list[str], boot_file: str, mbr_code: bytes,
                     volume_id: str, signature: int, epoch: int, efi_image: str | None = None,
                     gpt_guids: tuple | None = None) -> int:
    """Write the ISO to the binary file ``out`` (at 0); returns its size.
    ``efi_image``: the ISO path of an EFI system partition image, booted by
    a second El Torito entry (platform 0xEF) and listed in the MBR, or, with
    ``gpt_guids`` (disk GUID, partition GUID), in a GPT behind a protective
    MBR entry."""
    with contextlib.ExitStack() as stack, fixed_clock(epoch):
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=1, vol_ident=volume_id, sys_ident="")
        for d in dirs:
            iso.add_directory(iso_name(d)[:-2])
        for f in files:
            if isinstance(f.source, bytes):
                fp, length = io.BytesIO(f.source), len(f.source)
            else:
                fp = stack.enter_context(open(f.source, "rb"))
                length = os.fstat(fp.fileno()).st_size
            iso.add_fp(fp, length, iso_name(f.iso_path))
        boot_dir = os.path.dirname(boot_file)
        iso.add_eltorito(iso_name(boot_file), bootcatfile=iso_name(f"{boot_dir}/boot.cat"),
                         boot_load_size=ELTORITO_LOAD_SECTORS, boot_info_table=True)
        esp = None
        if efi_image is not None:
            iso.add_eltorito(iso_name(efi_image), efi=True, platform_id=PLATFORM_EFI)
        iso.write_fp(out)
        boot_lba = iso.get_record(iso_path=iso_name(boot_file)).extent_location()
        if efi_image is not None:
            record = iso.get_record(iso_path=iso_name(efi_image))
            esp = (record.extent_location() * (ISO_BLOCK // SECTOR), -(-record.get_data_length() // SECTOR))
    size = out.seek(0, os.SEEK_END)
    backup = gpt.BACKUP_SECTORS * SECTOR if gpt_guids else 0
    padded = -(-(size + backup) // CYLINDER) * CYLINDER
    out.truncate(padded)
    out.seek(0)
    if gpt_guids:
        out.write(protective_mbr(mbr_code, boot_lba, signature, padded))
        gpt.write_gpt(out, padded // SECTOR, esp, *gpt_guids)
    else:
        out.write(isohybrid_mbr(mbr_code, boot_lba, signature, padded, esp))
    return padded
