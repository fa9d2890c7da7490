"""The BIOS loader of a bundle: ISOLINUX and mboot.c32, from Debian's files.

No installer runs: the files are copied into the image and the boot info
table and the isohybrid MBR are written by :mod:`rumpfs.bundle.iso`.  This
module finds the files and writes ``isolinux.cfg``.

mboot.c32's syntax (syslinux com32/mboot): ``APPEND KERNEL ARGS --- MODULE
ARGS --- MODULE ARGS``; the kernel's Multiboot command line is the kernel
path and its arguments, each module's string its path and arguments.  Before
mboot.c32 sees it, ISOLINUX's config parser collapses runs of blanks into one
space, and it refuses a KERNEL name plus APPEND text longer than
:data:`ISOLINUX_CMDLINE_MAX` bytes (measured with syslinux 6.04: it stops at
``boot:`` with "cmdline too long").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import RumpfsError

#: file name -> (Debian directory, Debian package)
ISOLINUX_FILES = {
    "isolinux.bin": ("/usr/lib/ISOLINUX", "isolinux"),
    "isohdpfx.bin": ("/usr/lib/ISOLINUX", "isolinux"),
    "ldlinux.c32": ("/usr/lib/syslinux/modules/bios", "syslinux-common"),
    "libcom32.c32": ("/usr/lib/syslinux/modules/bios", "syslinux-common"),
    "mboot.c32": ("/usr/lib/syslinux/modules/bios", "syslinux-common"),
}

#: The directory ISOLINUX searches first for isolinux.cfg and its modules.
ISOLINUX_DIR = "isolinux"
MBOOT = "mboot.c32"
#: mboot.c32's separator between the kernel and each module.
MBOOT_SEPARATOR = "---"
#: Longest KERNEL name + " " + APPEND text ISOLINUX boots.
ISOLINUX_CMDLINE_MAX = 2047
#: ISOLINUX also talks on COM1 (cloud consoles are serial ports).
SERIAL_BAUD = 115200
#: The signature isohybrid looks for in isolinux.bin (offset 0x40): a build
#: of ISOLINUX that can boot from a hard disk.
ISOHYBRID_SIGNATURE_OFFSET = 0x40
ISOHYBRID_SIGNATURE = bytes.fromhex("fbc07870")


@dataclass(frozen=True)
class Loader:
    """Paths of the ISOLINUX files, by name."""
    files: dict

    def path(self, name: str) -> str:
        return self.files[name]


def find_isolinux(loader_dir: str | None = None) -> Loader:
    """Every ISOLINUX file, from ``loader_dir`` or Debian's directories; a
    missing one is an error naming the package that ships it."""
    files = {}
    for name, (debian_dir, package) in ISOLINUX_FILES.items():
        path = os.path.join(loader_dir or debian_dir, name)
        if not os.path.isfile(path):
            if loader_dir:
                raise RumpfsError(f"{path}: missing from --loader-dir "
                                  f"(the Debian package {package} ships {name})")
            raise RumpfsError(f"{path}: missing; install the Debian package {package} "
                              f"(or give --loader-dir)")
        files[name] = path
    with open(files["isolinux.bin"], "rb") as f:
        f.seek(ISOHYBRID_SIGNATURE_OFFSET)
        if f.read(len(ISOHYBRID_SIGNATURE)) != ISOHYBRID_SIGNATURE:
            raise RumpfsError(f"{files['isolinux.bin']}: not an isohybrid-capable isolinux.bin (no "
                              f"signature {ISOHYBRID_SIGNATURE.hex()} at {ISOHYBRID_SIGNATURE_OFFSET:#x})")
    return Loader(files)


def survives_isolinux(text: str) -> bool:
    """Does ``text`` reach the kernel unchanged through isolinux.cfg and
    mboot.c32?  Not if it has blanks that collapse, line breaks or other
    control characters, or a word mboot.c32 takes for its separator."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return False
    if "  " in text or text != text.strip(" "):
        return False
    return MBOOT_SEPARATOR not in text.split(" ")


def mboot_append(kernel: str, kernel_args: str, modules) -> str:
    """The APPEND line: ``modules`` is a list of (path, args)."""
    parts = [words(kernel, kernel_args)]
    for path, args in modules:
        parts.append(words(path, args))
    return f" {MBOOT_SEPARATOR} ".join(parts)


def words(path: str, args: str) -> str:
    return f"{path} {args}" if args else path


def isolinux_cfg(label: str, kernel: str, append: str) -> str:
    """The whole isolinux.cfg: one entry, booted at once."""
    return (f"SERIAL 0 {SERIAL_BAUD}\n"
            f"DEFAULT {label}\n"
            f"PROMPT 0\n"
            f"TIMEOUT 0\n"
            f"LABEL {label}\n"
            f"  KERNEL {kernel}\n"
            f"  APPEND {append}\n")


def check_cmdline(kernel: str, append: str, what: str) -> None:
    length = len(kernel.encode()) + 1 + len(append.encode())
    if length > ISOLINUX_CMDLINE_MAX:
        raise RumpfsError(f"{what}: KERNEL and APPEND of isolinux.cfg are {length} bytes, "
                          f"over ISOLINUX's limit of {ISOLINUX_CMDLINE_MAX}")
