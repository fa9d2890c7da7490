"""The UEFI loader of a ``--uefi`` bundle: a standalone GRUB EFI image.

Only ``grub-mkstandalone`` (Debian's grub-common, with the modules of
grub-efi-amd64-bin) makes one, so it runs once and the image is cached,
keyed by GRUB's version and what is asked of it.  The image's embedded
config finds the bundle's ISO 9660 volume by its config file and reads it:
one image serves every bundle.

GRUB 2's ``multiboot`` and ``module`` drop the file name from the command
line and strings they pass, backslash-escape ``\\ " '`` and quote words with
blanks.  The bundle's grub.cfg therefore names each file twice (``multiboot
/kernel /kernel ARGS``) so the kernel sees the same strings as under
ISOLINUX, quotes each word, and refuses words with those characters.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile

from ..errors import RumpfsError

MKSTANDALONE = "grub-mkstandalone"
GRUB_COMMON = "grub-common"
EFI_MODULES_DIR = "/usr/lib/grub/x86_64-efi"
GRUB_EFI_PACKAGE = "grub-efi-amd64-bin"
#: Modules built into the image (and nothing else: no fonts, locales, themes).
MODULES = ("multiboot", "linux", "iso9660", "part_msdos", "part_gpt", "fat", "search", "search_fs_file",
           "configfile", "normal", "serial", "terminal", "echo", "gzio")
#: Where the bundle's grub.cfg is on the ISO (ISO 9660 level 1 names).
BUNDLE_CFG = "/grub/bundle.cfg"
EMBEDDED_CFG = (f"search --no-floppy --set=root --file {BUNDLE_CFG}\n"
                f"configfile {BUNDLE_CFG}\n")
#: Characters GRUB escapes on the way to the kernel.
GRUB_ESCAPED = "\\\"'"


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rumpfs", "grub-efi")


def _version() -> str:
    if shutil.which(MKSTANDALONE) is None:
        raise RumpfsError(f"{MKSTANDALONE}: not found; install the Debian package {GRUB_COMMON} "
                          f"(--uefi makes its GRUB EFI image with it)")
    if not os.path.isfile(os.path.join(EFI_MODULES_DIR, "multiboot.mod")):
        raise RumpfsError(f"{EFI_MODULES_DIR}/multiboot.mod: missing; install the Debian package "
                          f"{GRUB_EFI_PACKAGE}")
    out = subprocess.run([MKSTANDALONE, "--version"], capture_output=True, text=True)
    with open(os.path.join(EFI_MODULES_DIR, "multiboot.mod"), "rb") as f:
        module_hash = hashlib.sha256(f.read()).hexdigest()
    return out.stdout.strip() + "\n" + module_hash


def standalone_image() -> str:
    """The path of the cached GRUB EFI image, made first if need be."""
    key = hashlib.sha256("\n".join([_version(), " ".join(MODULES), EMBEDDED_CFG]).encode()).hexdigest()
    directory = cache_dir()
    path = os.path.join(directory, f"bootx64-{key[:16]}.efi")
    if os.path.isfile(path):
        return path
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as work:
        cfg = os.path.join(work, "embedded.cfg")
        with open(cfg, "w") as f:
            f.write(EMBEDDED_CFG)
        image = os.path.join(work, "bootx64.efi")
        modules = " ".join(MODULES)
        proc = subprocess.run([MKSTANDALONE, "-O", "x86_64-efi", f"--install-modules={modules}",
                               f"--modules={modules}", "--locales=", "--fonts=", "--themes=",
                               "-o", image, f"boot/grub/grub.cfg={cfg}"],
                              capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": "0"})
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise RumpfsError(f"{MKSTANDALONE}: cannot make the GRUB EFI image: {last}")
        os.replace(image, path)
    return path


def check_words(text: str, what: str) -> None:
    bad = sorted({c for c in text if c in GRUB_ESCAPED})
    if bad:
        raise RumpfsError(f"{what}: {text!r} would not arrive intact through GRUB (--uefi): "
                          f"it escapes {' '.join(bad)}")


def _quoted(words: str) -> str:
    return " ".join(f"'{w}'" for w in words.split(" ") if w)


def linux_cfg(kernel: str, kernel_args: str, initrd: str | None) -> str:
    """grub.cfg booting a Linux ``kernel`` (GRUB puts BOOT_IMAGE=KERNEL first
    on its command line) with ``initrd``."""
    lines = ["set timeout=0", f"linux {kernel} {_quoted(kernel_args)}".rstrip()]
    if initrd:
        lines.append(f"initrd {initrd}")
    lines.append("boot")
    return "\n".join(lines) + "\n"


def grub_cfg(kernel: str, kernel_args: str, modules) -> str:
    """grub.cfg booting ``kernel`` with ``modules`` [(path, args)] at once."""
    lines = ["set timeout=0",
             f"multiboot {kernel} {_quoted(f'{kernel} {kernel_args}'.strip())}"]
    for path, args in modules:
        lines.append(f"module --nounzip {path} {_quoted(f'{path} {args}'.strip())}")
    lines.append("boot")
    return "\n".join(lines) + "\n"
