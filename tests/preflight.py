"""Is everything the tests run installed?  Names the package of what is not.

The tests call many programs nobody on this project wrote (they are the
judges); when one is missing, a test deep inside the suite would fail with
"No such file" or a skip would hide it.  This check runs before the suite
(tests/conftest.py) and at the end of ``make test-deps``, and says which
Debian or PyPI package to install.  Every package named here must be listed
in scripts/apt-test-packages.txt or pyproject.toml (tests/test_preflight.py
checks that), so a fresh machine gets it from the project's own files.

Run it by hand: ``python3 tests/preflight.py``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

#: Program a test runs -> the Debian package that installs it.
COMMANDS = {
    "cpio": "cpio",
    "bsdtar": "libarchive-tools",
    "makefs": "makefs",
    "readelf": "binutils",
    "objcopy": "binutils",
    "ld.bfd": "binutils",
    "ld.gold": "binutils",
    "ld.lld": "lld",
    "llvm-readelf": "llvm",
    "gcc": "gcc",
    "gzip": "gzip",
    "xz": "xz-utils",
    "zstd": "zstd",
    "lz4": "lz4",
    "busybox": "busybox-static",
    "qemu-system-x86_64": "qemu-system-x86",
    "dpkg-deb": "dpkg",
    "setpriv": "util-linux",
    "taskset": "util-linux",
    "file": "file",
    "xorriso": "xorriso",
    "isoinfo": "genisoimage",
    "isovfy": "genisoimage",
    "fsck.fat": "dosfstools",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "mdir": "mtools",
    "sfdisk": "fdisk",
    "qemu-img": "qemu-utils",
    "tar": "tar",
    "grub-mkstandalone": "grub-common",
    # archive layers, mtree specs, depfiles and build-system examples (issue 21)
    "bzip2": "bzip2",
    "mtree": "mtree-netbsd",
    "make": "make",
    "ninja": "ninja-build",
    "cmake": "cmake",
    "meson": "meson",
    "umoci": "umoci",
}

#: Shared libraries the tests load with ctypes -> their Debian package.
LIBRARIES = {
    "libdb1.so.2": "libdb1-compat",
    "libarchive.so.13": "libarchive13",
}

#: Python modules the tests import -> their PyPI distribution (the test extra).
MODULES = {
    "pytest": "pytest",
    "xdist": "pytest-xdist",
    "dissect.ffs": "dissect.ffs",
    "libarchive": "libarchive-c",
    "zstandard": "zstandard",
    "lz4": "lz4",
    "pycdlib": "pycdlib",
    "pyfatfs": "pyfatfs",
}

#: A target the host objcopy must know: tests take sections out of objects
#: for every target rumpfs writes, and Debian's plain binutils reads x86 only.
FOREIGN_BFD_TARGET = "elf32-powerpc"
MULTIARCH_PACKAGE = "binutils-multiarch"


def toolchain_commands() -> dict[str, str]:
    """The cross compilers and qemu-user programs of tests/elf/toolchains.py."""
    # Imported here: toolchains imports conftest, which imports this module.
    from elf.toolchains import TOOLCHAINS
    out = {}
    for tc in TOOLCHAINS.values():
        if tc.gcc != "gcc":
            out[tc.gcc] = "gcc-" + tc.gcc.removesuffix("-gcc")
        if tc.qemu:
            out[tc.qemu] = "qemu-user"
    return out


def _library_found(name: str) -> bool:
    # Where the tests look: the loader's path, then /lib (libdb1-compat puts
    # its library there, outside the loader's cache).
    for candidate in (name, f"/lib/{name}"):
        try:
            ctypes.CDLL(candidate)
            return True
        except OSError:
            pass
    return False


def _objcopy_targets() -> str:
    try:
        return subprocess.run(["objcopy", "--info"], capture_output=True, text=True).stdout
    except OSError:
        return ""


def missing() -> list[str]:
    """One line per missing piece: what is missing and which package brings it."""
    out = []
    for command, package in {**COMMANDS, **toolchain_commands()}.items():
        if shutil.which(command) is None:
            out.append(f"{command}: Debian package {package}")
    for library, package in LIBRARIES.items():
        if not _library_found(library):
            out.append(f"{library}: Debian package {package}")
    if shutil.which("objcopy") and FOREIGN_BFD_TARGET not in _objcopy_targets():
        out.append(f"objcopy that reads {FOREIGN_BFD_TARGET} objects: Debian package {MULTIARCH_PACKAGE}")
    for module, dist in MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            out.append(f"Python module {module}: PyPI package {dist} (pip install -e '.[test]')")
    return out


def report(problems: list[str]) -> str:
    return (f"{len(problems)} thing(s) the tests need are missing; "
            "run 'make test-deps' (scripts/install-test-deps.sh):\n"
            + "\n".join(f"  {p}" for p in problems))


def main() -> int:
    problems = missing()
    if problems:
        print(report(problems), file=sys.stderr)
        return 1
    print("test tools: all present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
