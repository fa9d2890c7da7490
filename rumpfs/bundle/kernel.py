"""What kind of kernel a file is: a Multiboot 1 kernel or a Linux bzImage.

Multiboot 1 (the Multiboot Specification 0.6.96, section 3.1): the header is
32-bit aligned within the first 8192 bytes of the file; ``magic``, ``flags``
and ``checksum`` sum to zero modulo 2**32.  rumprun's x86 ``hw`` kernels are
ELF32 or ELF64 files carrying it; without ELF, the loader needs the header's
address fields (flags bit 16).

Linux x86 boot protocol (Documentation/arch/x86/boot.rst): the real-mode
header at 0x1F1; ``boot_flag`` 0xAA55 at 0x1FE, ``header`` "HdrS" at 0x202 and
the protocol ``version`` at 0x206.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Padding, Struct

from ..errors import RumpfsError

MULTIBOOT_MAGIC = 0x1BADB002
#: The header must lie entirely within this many bytes from the file's start.
MULTIBOOT_SEARCH = 8192
MULTIBOOT_ALIGN = 4
#: Flags bit 16: the header carries load addresses (a kernel that is not ELF).
MULTIBOOT_AOUT_KLUDGE = 1 << 16

MultibootHeader = Struct(
    "magic" / Int32ul,
    "flags" / Int32ul,
    "checksum" / Int32ul,
)

#: The part of the Linux real-mode kernel header that identifies a bzImage.
LINUX_HEADER_OFFSET = 0x1F1
LinuxSetupHeader = Struct(
    Padding(0x1FE - LINUX_HEADER_OFFSET),  # setup_sects ... root_dev
    "boot_flag" / Int16ul,           # 0x1FE: 0xAA55
    Padding(2),                      # 0x200: jump
    "header" / Bytes(4),             # 0x202: "HdrS"
    "version" / Int16ul,             # 0x206: boot protocol version
)
LINUX_BOOT_FLAG = 0xAA55
LINUX_HDRS = b"HdrS"
#: bzImage (loaded high) needs boot protocol 2.00 or later.
LINUX_MIN_VERSION = 0x0200

ELF_MAGIC = b"\x7fELF"
ELF_CLASSES = {1: "ELF32", 2: "ELF64"}
ElfIdent = Struct(
    "magic" / Const(ELF_MAGIC),
    "ei_class" / Int8ul,
    Padding(11),                     # data, version, OS ABI, padding
    "e_type" / Int16ul,
    "e_machine" / Int16ul,
)
ELF_MACHINES = {3: "i386", 62: "x86-64", 40: "ARM", 183: "AArch64", 243: "RISC-V"}

#: Magic numbers of files people pass by mistake, for the error message.
OTHER_MAGICS = (
    (b"\x1f\x8b", "gzip data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"070701", "a cpio archive"),
    (b"070702", "a cpio archive"),
    (b"MZ", "a PE/COFF executable"),
    (b"#!", "a script"),
)


@dataclass(frozen=True)
class KernelInfo:
    path: str
    #: "multiboot" or "linux"
    kind: str
    #: Multiboot: header offset and flags; Linux: the boot protocol version.
    offset: int = 0
    flags: int = 0
    version: int = 0
    #: "ELF32 i386" and the like, or "" when not ELF.
    elf: str = ""

    def describe(self) -> str:
        if self.kind == "multiboot":
            what = self.elf or "a.out kludge"
            return f"Multiboot 1 kernel ({what}, header at {self.offset:#x})"
        return f"Linux bzImage (boot protocol {self.version >> 8}.{self.version & 0xFF:02d})"


def _elf_description(head: bytes) -> str:
    if len(head) < ElfIdent.sizeof() or not head.startswith(ELF_MAGIC):
        return ""
    ident = ElfIdent.parse(head)
    cls = ELF_CLASSES.get(ident.ei_class, f"ELF class {ident.ei_class}")
    machine = ELF_MACHINES.get(ident.e_machine, f"machine {ident.e_machine}")
    return f"{cls} {machine}"


def find_multiboot(head: bytes) -> tuple[int, int] | None:
    """(offset, flags) of the first valid Multiboot 1 header in ``head``."""
    limit = min(len(head), MULTIBOOT_SEARCH) - MultibootHeader.sizeof()
    for offset in range(0, limit + 1, MULTIBOOT_ALIGN):
        h = MultibootHeader.parse(head[offset:offset + MultibootHeader.sizeof()])
        if h.magic == MULTIBOOT_MAGIC and (h.magic + h.flags + h.checksum) % (1 << 32) == 0:
            return offset, h.flags
    return None


def _linux_version(head: bytes) -> int | None:
    end = LINUX_HEADER_OFFSET + LinuxSetupHeader.sizeof()
    if len(head) < end:
        return None
    h = LinuxSetupHeader.parse(head[LINUX_HEADER_OFFSET:end])
    if h.boot_flag != LINUX_BOOT_FLAG or h.header != LINUX_HDRS:
        return None
    return h.version


def _what_it_is(head: bytes, size: int) -> str:
    if size == 0:
        return "an empty file"
    elf = _elf_description(head)
    if elf:
        return f"an {elf} file without a Multiboot header in its first {MULTIBOOT_SEARCH} bytes"
    for magic, name in OTHER_MAGICS:
        if head.startswith(magic):
            return name
    return f"{size} bytes starting {head[:8].hex(' ')}"


def detect(path: str) -> KernelInfo:
    """The kind of kernel ``path`` is, or a one-line :class:`RumpfsError`."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(MULTIBOOT_SEARCH)
    except OSError as e:
        raise RumpfsError(f"{path}: cannot read kernel: {e.strerror}") from None
    found = find_multiboot(head)
    elf = _elf_description(head)
    if found is not None:
        offset, flags = found
        if not elf and not flags & MULTIBOOT_AOUT_KLUDGE:
            raise RumpfsError(f"{path}: has a Multiboot header at {offset:#x} but is not ELF "
                              f"and gives no load addresses (flags bit 16)")
        return KernelInfo(path, "multiboot", offset=offset, flags=flags, elf=elf)
    version = _linux_version(head)
    if version is not None:
        if version < LINUX_MIN_VERSION:
            raise RumpfsError(f"{path}: Linux kernel with boot protocol {version >> 8}.{version & 0xFF:02d}, "
                              f"not a bzImage (needs {LINUX_MIN_VERSION >> 8}.00 or later)")
        return KernelInfo(path, "linux", version=version)
    raise RumpfsError(f"{path}: not a Multiboot kernel or a Linux bzImage: {_what_it_is(head, size)}")
