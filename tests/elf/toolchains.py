"""Test-side knowledge of the toolchains that judge the ELF writer.

Each rumpfs target maps to the Debian cross gcc that writes objects for it
(the oracle for the header), the qemu-user that runs its programs, and the
linkers that support it.  None of this is used by rumpfs itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from conftest import require_tool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HEADER_DIR = ROOT / "rumpfs" / "data"
WALK_C = HERE / "walk.c"


@dataclass
class Toolchain:
    target: str
    gcc: str
    cflags: tuple = ()
    #: qemu-user binary; None for the host; "" when programs cannot run (no libc).
    qemu: str | None = ""
    linkers: tuple = ("bfd",)
    rumpfs_args: tuple = ()
    sysroot: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return shutil.which(self.gcc) is not None

    @property
    def package(self) -> str:
        """The Debian package of the compiler (scripts/apt-test-packages.txt)."""
        return "gcc" if self.gcc == "gcc" else "gcc-" + self.gcc[:-len("-gcc")]

    def require(self, run=False) -> None:
        """Fail, naming the Debian package, when the compiler (or qemu-user) is missing."""
        require_tool(self.gcc, self.package)
        if run and self.qemu:
            require_tool(self.qemu, "qemu-user")

    @property
    def runnable(self) -> bool:
        return self.available and (self.qemu is None or bool(self.qemu and shutil.which(self.qemu)))

    def run_cmd(self, exe) -> list[str]:
        if self.qemu is None:
            return [str(exe)]
        return [self.qemu, "-L", self.sysroot, str(exe)]


def _tc(target, triple, cflags=(), qemu="", linkers=("bfd",), rumpfs_args=()):
    gcc = "gcc" if triple is None else f"{triple}-gcc"
    return Toolchain(target, gcc, tuple(cflags), qemu, linkers, tuple(rumpfs_args),
                     sysroot=f"/usr/{triple}" if triple else "/")


_ALL3 = ("bfd", "gold", "lld")
_GOLD = ("bfd", "gold")

TOOLCHAINS = {tc.target + ("-soft" if "soft" in tc.rumpfs_args else ""): tc for tc in [
    _tc("x86_64", None, qemu=None, linkers=_ALL3),
    _tc("i386", "i686-linux-gnu", qemu="qemu-i386", linkers=_ALL3),
    _tc("aarch64", "aarch64-linux-gnu", qemu="qemu-aarch64", linkers=_ALL3),
    _tc("aarch64_be", "aarch64-linux-gnu", cflags=("-mbig-endian",)),
    _tc("arm", "arm-linux-gnueabihf", qemu="qemu-arm", linkers=_ALL3,
        rumpfs_args=("--float-abi", "hard")),
    _tc("arm", "arm-linux-gnueabi", qemu="qemu-arm", linkers=_ALL3,
        rumpfs_args=("--float-abi", "soft")),
    _tc("riscv64", "riscv64-linux-gnu", qemu="qemu-riscv64"),
    _tc("riscv32", "riscv64-linux-gnu", cflags=("-march=rv32gc", "-mabi=ilp32d")),
    _tc("ppc64le", "powerpc64le-linux-gnu", qemu="qemu-ppc64le", linkers=_ALL3),
    _tc("ppc64", "powerpc64-linux-gnu", qemu="qemu-ppc64", linkers=_GOLD),
    _tc("ppc", "powerpc-linux-gnu", qemu="qemu-ppc", linkers=_ALL3),
    _tc("mips", "mips-linux-gnu", qemu="qemu-mips", linkers=_ALL3),
    _tc("mipsel", "mipsel-linux-gnu", qemu="qemu-mipsel", linkers=_ALL3),
    _tc("mips64el", "mips64el-linux-gnuabi64", qemu="qemu-mips64el", linkers=_ALL3),
    _tc("mips64", "mips64el-linux-gnuabi64", cflags=("-EB",)),
    _tc("s390x", "s390x-linux-gnu", qemu="qemu-s390x", linkers=_GOLD),
    _tc("sparc64", "sparc64-linux-gnu", qemu="qemu-sparc64", linkers=_GOLD),
]}


def lld_dir(tmp: Path) -> Path:
    """A -B directory whose ``ld`` is ld.lld (cross gcc 12 has no --ld-path)."""
    d = tmp / "lld-bin"
    d.mkdir(exist_ok=True)
    link = d / "ld"
    if not link.exists():
        link.symlink_to(shutil.which("ld.lld"))
    return d


def linker_flags(linker: str, tmp: Path) -> list[str]:
    if linker == "bfd":
        return ["-fuse-ld=bfd"]
    if linker == "gold":
        return ["-fuse-ld=gold"]
    if linker == "lld":
        return ["-B", str(lld_dir(tmp))]
    raise ValueError(linker)


LINKER_PACKAGES = {"bfd": ("ld.bfd", "binutils"), "gold": ("ld.gold", "binutils"), "lld": ("ld.lld", "lld")}


def require_linker(linker: str) -> None:
    require_tool(*LINKER_PACKAGES[linker])


def have_linker(linker: str) -> bool:
    return shutil.which({"bfd": "ld.bfd", "gold": "ld.gold", "lld": "ld.lld"}[linker]) is not None


def run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def link_walker(tc: Toolchain, objects, exe: Path, *, linker="bfd", pie=True,
                static=False, comps=("root",), sources=()) -> str:
    """Compile walk.c with ``objects``; return the compiler/linker's stderr (warnings)."""
    cmd = [tc.gcc, *tc.cflags, "-Wall", "-Wextra", "-Wl,--fatal-warnings",
           "-I", HEADER_DIR, *linker_flags(linker, exe.parent)]
    if static:
        cmd += ["-static-pie"] if pie else ["-static"]
    else:
        cmd += ["-pie", "-fPIE"] if pie else ["-no-pie", "-fno-PIE"]
    for i, name in enumerate(comps, 1):
        cmd.append(f"-DCOMP{i}={name}")
    cmd += [*sources, WALK_C, *objects, "-o", exe]
    return run(cmd, cwd=exe.parent).stderr


def run_walker(tc: Toolchain, exe: Path) -> dict:
    """Run the walker (under qemu-user when cross) and parse what it printed."""
    out = run(tc.run_cmd(exe)).stdout.splitlines()
    result = {"records": {}, "symbols": {}, "count": None}
    it = iter(out)
    for line in it:
        words = line.split()
        if words[0] == "record":
            fields = dict(w.split("=", 1) for w in words[2:])
            result["records"][words[1]] = (fields, bytes.fromhex(next(it)))
        elif words[0] == "symbols":
            fields = dict(w.split("=", 1) for w in words[2:])
            result["symbols"][words[1]] = (fields, bytes.fromhex(next(it)))
        elif words[0] == "records":
            result["count"] = int(words[1])
    return result


def readelf_header(path) -> dict:
    """Class, data, OS/ABI, machine and flags as binutils readelf prints them."""
    out = run(["readelf", "-h", path]).stdout
    want = {"Class", "Data", "OS/ABI", "ABI Version", "Machine", "Flags", "Type"}
    info = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key in want:
            info[key] = value.strip()
    return info


def readelf_clean(path) -> str:
    """readelf -a -W (and llvm-readelf) stderr: empty when nothing is wrong."""
    errs = run(["readelf", "-a", "-W", path]).stderr
    if shutil.which("llvm-readelf"):
        errs += run(["llvm-readelf", "-a", path]).stderr
    return errs


def rumpfs_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


PYTHON = sys.executable
