"""What a bundle holds, read back from the image: loader, kernel, modules,
config, UEFI, partition table (for ``rumpfs info`` on a bundle); and
whether the file still holds all that its own tables say it does (for
``rumpfs check`` and ``info``).

Reads the ISO 9660 volume at the start of a .iso/.img/.raw/.vhd with
pycdlib (descriptors and directories only), isolinux.cfg as
:mod:`rumpfs.bundle.loader` writes it, and the El Torito catalog.

A truncated bundle is worth catching here, before anything boots it:
loaders react to the missing sectors in ways that range from a clear
message to a silent hang (see docs/bundle.md, "A truncated bundle").
"""

from __future__ import annotations

import io
import os

import pycdlib

from ..errors import RumpfsError
from ..formats.iso import layout as iso_layout
from . import gpt, loader
from .disk import VHD_COOKIE, VHD_FOOTER_SIZE, VhdFooter
from .iso import ISO_BLOCK, PLATFORM_EFI, SECTOR, IsohybridMbr, iso_name

ISOLINUX_CFG = f"/{loader.ISOLINUX_DIR}/isolinux.cfg"
ISO_MAGIC_OFFSET = 0x8001
ISO_MAGIC = b"CD001"
#: isolinux.bin carries its banner ("ISOLINUX 6.04 ...") in its first sectors.
BANNER = b"ISOLINUX "


#: The ISO's system area: the MBR and GPT live there, not the file system.
SYSTEM_AREA = 16 * 2048
#: Where the primary volume descriptor is (ECMA-119 8.4: sector 16).
PVD_OFFSET = 16 * ISO_BLOCK
#: An MBR entry's length when the disk is too large for 32 bits (the
#: protective entry of a GPT says "to the end" with it).
MBR_MAX_SECTORS = 0xFFFFFFFF


def _read_at(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


def _disk_size(f, size: int) -> tuple[int, list[str]]:
    """The raw disk's size (the file's, less a VHD footer) and what the
    footer, if there is one, says against it."""
    tail = _read_at(f, size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE) if size >= VHD_FOOTER_SIZE else b""
    if not tail.startswith(VHD_COOKIE):
        return size, []
    disk = size - VHD_FOOTER_SIZE
    footer = VhdFooter.parse(tail)
    if footer.current_size != disk:
        return disk, [f"VHD footer gives a disk of {footer.current_size} bytes, "
                      f"the file holds {disk} before the footer"]
    return disk, []


def disk_problems(f, size: int) -> list[str]:
    """What a bootable disk's own tables (a VHD footer, the MBR's partitions,
    the GPT's backup header) say lies past the end of the file ``f`` of
    ``size`` bytes: the signs of a truncated bundle, one line each."""
    disk, problems = _disk_size(f, size)
    if disk % SECTOR:
        problems.append(f"disk of {disk} bytes, not a whole number of {SECTOR}-byte sectors: truncated")
    mbr = _read_at(f, 0, IsohybridMbr.sizeof())
    if len(mbr) < IsohybridMbr.sizeof() or mbr[-2:] != b"\x55\xaa":
        return problems
    for number, part in enumerate(IsohybridMbr.parse(mbr).partitions, 1):
        if part.type == 0 or part.sectors == MBR_MAX_SECTORS:
            continue
        end = (part.lba_first + part.sectors) * SECTOR
        if end > disk:
            problems.append(f"MBR partition {number} (type {part.type:#04x}) ends at byte {end}, "
                            f"past the disk's end at {disk}: truncated")
    header = _read_at(f, gpt.HEADER_LBA * SECTOR, gpt.GptHeader.sizeof())
    if header.startswith(b"EFI PART") and len(header) == gpt.GptHeader.sizeof():
        backup = gpt.GptHeader.parse(header).alternate_lba * SECTOR
        if backup + SECTOR > disk:
            problems.append(f"GPT backup header at byte {backup} is past the disk's end at {disk}: "
                            f"truncated")
        elif not _read_at(f, backup, 8) == b"EFI PART":
            problems.append(f"no GPT backup header at byte {backup}, where the primary header says")
    return problems


def truncation(f, size: int) -> str | None:
    """The first sign that the bundle in ``f`` lost its end: the ISO 9660
    volume's size, then :func:`disk_problems`; None if there is none."""
    disk, _ = _disk_size(f, size)
    pvd = _read_at(f, PVD_OFFSET, iso_layout.VolumeDescriptor.sizeof())
    if len(pvd) == iso_layout.VolumeDescriptor.sizeof() and pvd[1:6] == ISO_MAGIC:
        volume = iso_layout.VolumeDescriptor.parse(pvd).volume_space_size.le * ISO_BLOCK
        if volume > disk:
            return f"ISO 9660 volume of {volume} bytes, past the disk's end at {disk}: truncated"
    problems = disk_problems(f, size)
    return problems[0] if problems else None


class _VolumeOnly(io.RawIOBase):
    """The image with its system area read as zeros: pycdlib judges an MBR
    it finds there by isohybrid's rules, which a GPT's protective MBR does
    not follow, and the volume does not need it."""

    def __init__(self, f):
        self.f = f

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=os.SEEK_SET):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()

    def readinto(self, buf):
        start = self.f.tell()
        n = self.f.readinto(buf)
        if start < SYSTEM_AREA and n:
            end = min(n, SYSTEM_AREA - start)
            buf[:end] = bytes(end)
        return n


def _read(iso, path: str, image: str) -> bytes:
    out = io.BytesIO()
    try:
        iso.get_file_from_iso_fp(out, iso_path=iso_name(path))
    except pycdlib.pycdlibexception.PyCdlibException:
        raise RumpfsError(f"{image}: not a bundle (no {path})") from None
    return out.getvalue()


def _size(iso, path: str) -> int | None:
    try:
        return iso.get_record(iso_path=iso_name(path)).get_data_length()
    except pycdlib.pycdlibexception.PyCdlibException:
        return None


def describe(path: str) -> dict:
    """A JSON-able description of the bundle ``path``."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise RumpfsError(f"{path}: cannot read bundle: {e.strerror}") from None
    with f:
        f.seek(ISO_MAGIC_OFFSET)
        if f.read(len(ISO_MAGIC)) != ISO_MAGIC:
            raise RumpfsError(f"{path}: not a bundle (no ISO 9660 volume at the start)")
        size = f.seek(0, os.SEEK_END)
        f.seek(size - VHD_FOOTER_SIZE)
        container = "vhd" if f.read(len(VHD_COOKIE)) == VHD_COOKIE else "raw"
        f.seek(gpt.HEADER_LBA * gpt.SECTOR)
        table = "gpt" if f.read(8) == b"EFI PART" else "mbr"
        iso = pycdlib.PyCdlib()
        try:
            iso.open_fp(_VolumeOnly(f))
        except pycdlib.pycdlibexception.PyCdlibException as e:
            raise RumpfsError(f"{path}: unreadable ISO 9660 volume: {e}") from None
        cfg = _read(iso, ISOLINUX_CFG, path).decode(errors="replace")
        lines = dict(line.strip().split(" ", 1) for line in cfg.splitlines() if " " in line.strip())
        boot = _read(iso, f"/{loader.ISOLINUX_DIR}/isolinux.bin", path)[:4096]
        at = boot.find(BANNER)
        banner = boot[at:boot.find(b" ", at + len(BANNER))].decode() if at >= 0 else "ISOLINUX"
        catalog = iso.eltorito_boot_catalog
        uefi = bool(catalog and any(s.platform_id == PLATFORM_EFI for s in catalog.sections))
        info = {"path": path, "container": container, "partition_table": table,
                "loader": banner + (" + GRUB (UEFI)" if uefi else ""), "uefi": uefi}
        kernel, append = lines.get("KERNEL", ""), lines.get("APPEND", "")
        if kernel == loader.MBOOT:
            parts = append.split(f" {loader.MBOOT_SEPARATOR} ")
            kpath, _, kargs = parts[0].partition(" ")
            info["kernel"] = {"kind": "multiboot", "path": kpath, "size": _size(iso, kpath), "cmdline": kargs}
            info["modules"] = [{"string": p, "size": _size(iso, p.partition(" ")[0])} for p in parts[1:]]
            marker = "_RUMPRUN_ROOTFSCFG="
            cfg_path = next((w[len(marker):] for w in kargs.split(" ") if w.startswith(marker)), None)
            if cfg_path:
                info["config"] = {"delivery": "file", "path": cfg_path,
                                  "text": _read(iso, cfg_path, path).decode(errors="replace")}
            elif "{" in kargs:
                info["config"] = {"delivery": "cmdline", "text": kargs[kargs.index("{"):]}
        else:
            words = append.split(" ")
            initrd = next((w.partition("=")[2] for w in words if w.startswith("initrd=")), None)
            info["kernel"] = {"kind": "linux", "path": kernel, "size": _size(iso, kernel),
                              "cmdline": " ".join(w for w in words if not w.startswith("initrd="))}
            info["modules"] = [{"string": initrd, "size": _size(iso, initrd)}] if initrd else []
        iso.close()
    return info
