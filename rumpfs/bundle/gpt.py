"""A GUID partition table over a hybrid ISO (``--uefi`` disks): the EFI
system partition image inside the ISO becomes GPT partition 1, so UEFI
firmware that insists on GPT boots it; BIOS still runs the isohybrid MBR's
code, which loads isolinux.bin by the LBA it holds, not by a partition.

Layout as UEFI 2.10 section 5.3 gives it: the protective MBR entry (type
0xEE, from LBA 1 to the end), the header at LBA 1 and its 128 entries at
LBA 2-33 (inside the ISO's unused 32 KiB system area), the backup entries
and header in the last 33 sectors.
"""

from __future__ import annotations

import uuid
import zlib

from construct import Bytes, Const, Int32ul, Int64ul, Padding, Struct

SECTOR = 512
GPT_ENTRIES = 128
GPT_ENTRY_SIZE = 128
ENTRY_SECTORS = GPT_ENTRIES * GPT_ENTRY_SIZE // SECTOR
HEADER_LBA = 1
ENTRIES_LBA = 2
#: Sectors the backup table needs at the end of the disk: entries and header.
BACKUP_SECTORS = ENTRY_SECTORS + 1
GPT_REVISION = 0x00010000
GPT_HEADER_SIZE = 92
PROTECTIVE_TYPE = 0xEE
EFI_SYSTEM = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")

GptHeader = Struct(
    "signature" / Const(b"EFI PART"),
    "revision" / Int32ul,
    "header_size" / Int32ul,
    "header_crc32" / Int32ul,
    Padding(4),
    "my_lba" / Int64ul,
    "alternate_lba" / Int64ul,
    "first_usable_lba" / Int64ul,
    "last_usable_lba" / Int64ul,
    "disk_guid" / Bytes(16),
    "partition_entry_lba" / Int64ul,
    "number_of_partition_entries" / Int32ul,
    "size_of_partition_entry" / Int32ul,
    "partition_entry_array_crc32" / Int32ul,
)

GptEntry = Struct(
    "partition_type_guid" / Bytes(16),
    "unique_partition_guid" / Bytes(16),
    "starting_lba" / Int64ul,
    "ending_lba" / Int64ul,             # inclusive
    "attributes" / Int64ul,
    "partition_name" / Bytes(72),       # UTF-16LE
)


def guid_from(digest: bytes) -> uuid.UUID:
    """A version 4-shaped GUID from 16 bytes of a content digest."""
    return uuid.UUID(bytes=digest[:16], version=4)


def _header(my_lba, alternate_lba, entries_lba, first, last, disk_guid, entries_crc) -> bytes:
    fields = dict(revision=GPT_REVISION, header_size=GPT_HEADER_SIZE, header_crc32=0, my_lba=my_lba,
                  alternate_lba=alternate_lba, first_usable_lba=first, last_usable_lba=last,
                  disk_guid=disk_guid.bytes_le, partition_entry_lba=entries_lba,
                  number_of_partition_entries=GPT_ENTRIES, size_of_partition_entry=GPT_ENTRY_SIZE,
                  partition_entry_array_crc32=entries_crc)
    fields["header_crc32"] = zlib.crc32(GptHeader.build(fields))
    return GptHeader.build(fields).ljust(SECTOR, b"\0")


def write_gpt(out, disk_sectors: int, esp: tuple[int, int], disk_guid: uuid.UUID,
              esp_guid: uuid.UUID) -> None:
    """Write both GPT copies into ``out`` (a disk of ``disk_sectors``); ``esp``
    is (first sector, sectors) of the EFI system partition."""
    last_lba = disk_sectors - 1
    first_usable = ENTRIES_LBA + ENTRY_SECTORS
    last_usable = last_lba - BACKUP_SECTORS
    entry = GptEntry.build(dict(partition_type_guid=EFI_SYSTEM.bytes_le,
                                unique_partition_guid=esp_guid.bytes_le,
                                starting_lba=esp[0], ending_lba=esp[0] + esp[1] - 1, attributes=0,
                                partition_name="EFI system partition".encode("utf-16-le").ljust(72, b"\0")))
    entries = entry.ljust(GPT_ENTRIES * GPT_ENTRY_SIZE, b"\0")
    crc = zlib.crc32(entries)
    backup_entries_lba = last_lba - ENTRY_SECTORS
    out.seek(HEADER_LBA * SECTOR)
    out.write(_header(HEADER_LBA, last_lba, ENTRIES_LBA, first_usable, last_usable, disk_guid, crc))
    out.write(entries)
    out.seek(backup_entries_lba * SECTOR)
    out.write(entries)
    out.write(_header(last_lba, HEADER_LBA, backup_entries_lba, first_usable, last_usable, disk_guid, crc))
