"""The targets rumpfs writes objects for: ELF class, byte order, machine, flags.

Each :class:`Target` says what the target's own gcc puts in the header of an
object compiled from an empty C file (``EI_CLASS``, ``EI_DATA``,
``e_machine``, ``e_flags``, ``EI_OSABI``), and which relocation stores an
absolute data pointer (the registry record points at the image) and whether
that ABI uses ``.rel`` (addend in place) or ``.rela`` sections.

The e_flags values come from the processor ABI supplements (ARM AAELF
``EF_ARM_EABI_VER5``/``EF_ARM_ABI_FLOAT_*``, RISC-V psABI ``EF_RISCV_RVC``
and ``EF_RISCV_FLOAT_ABI_*``, LoongArch ``EF_LARCH_*``, MIPS ``EF_MIPS_*``,
PowerPC64 ELFv2 ``e_flags`` 2) and are checked in the test suite against
objects the Debian cross compilers write.

``--like OBJECT`` skips the table: class, byte order, machine, flags and OS
ABI are copied from an object of the kernel being built.
"""

from __future__ import annotations

import os

from ..errors import RumpfsError
from . import layout as L
from .frozen import Frozen

# ARM (AAELF): EABI version 5 in the top byte, float ABI bits.
EF_ARM_EABI_VER5 = 0x05000000
EF_ARM_ABI_FLOAT_SOFT = 0x00000200
EF_ARM_ABI_FLOAT_HARD = 0x00000400
# RISC-V psABI.
EF_RISCV_RVC = 0x0001
EF_RISCV_FLOAT_ABI_SOFT = 0x0000
EF_RISCV_FLOAT_ABI_SINGLE = 0x0002
EF_RISCV_FLOAT_ABI_DOUBLE = 0x0004
EF_RISCV_FLOAT_ABI_QUAD = 0x0006
# LoongArch ELF psABI: base ABI in the low bits, object ABI version 1.
EF_LARCH_ABI_SOFT_FLOAT = 0x1
EF_LARCH_ABI_SINGLE_FLOAT = 0x2
EF_LARCH_ABI_DOUBLE_FLOAT = 0x3
EF_LARCH_OBJABI_V1 = 0x40
# MIPS: what gcc's default (-mabicalls, PIC) writes.
EF_MIPS_NOREORDER = 0x00000001
EF_MIPS_PIC = 0x00000002
EF_MIPS_CPIC = 0x00000004
EF_MIPS_ABI_O32 = 0x00001000
EF_MIPS_ARCH_32R2 = 0x70000000
EF_MIPS_ARCH_64R2 = 0x80000000
# PowerPC64: ELF ABI version in e_flags (1: ELFv1 function descriptors, 2: ELFv2).
EF_PPC64_ABI_V2 = 2
# SPARC V9 memory model: Linux gcc marks objects relaxed (RMO).
EF_SPARCV9_RMO = 0x2
# PowerPC (32-bit): gcc's default -fPIC objects are "relocatable-lib".
EF_PPC_RELOCATABLE_LIB = 0x8000

# Relocations that store an absolute data address of the word size.
R_386_32 = 1
R_X86_64_64 = 1
R_ARM_ABS32 = 2
R_AARCH64_ABS64 = 257
R_RISCV_32 = 1
R_RISCV_64 = 2
R_PPC_ADDR32 = 1
R_PPC64_ADDR64 = 38
R_MIPS_32 = 2
R_MIPS_64 = 18
R_390_64 = 22
R_SPARC_64 = 32
R_LARCH_64 = 2


class Target(Frozen):
    """What goes into an object's header for one target (immutable, compared
    by value, :meth:`replace` for a changed copy: :class:`~rumpfs.elf.frozen.Frozen`)."""

    __slots__ = ("name", "elfclass", "byteorder", "machine", "flags", "osabi", "abiversion",
                 "abs_reloc", "rela", "description", "float_abis", "float_abi")

    def __init__(self, name: str, elfclass: int, byteorder: str, machine: int, flags: int = 0,
                 osabi: int = L.ELFOSABI_NONE, abiversion: int = 0, abs_reloc: int = 0,
                 rela: bool = True, description: str = "", float_abis: tuple = (),
                 float_abi: str | None = None):
        init = object.__setattr__
        init(self, "name", name)
        init(self, "elfclass", elfclass)
        init(self, "byteorder", byteorder)
        init(self, "machine", machine)
        init(self, "flags", flags)
        init(self, "osabi", osabi)
        init(self, "abiversion", abiversion)
        # Relocation type of an absolute pointer of the word size.
        init(self, "abs_reloc", abs_reloc)
        # True where the ABI uses SHT_RELA, False for SHT_REL (addend in place).
        init(self, "rela", rela)
        init(self, "description", description)
        # Float ABI names this target accepts -> e_flags to use.
        init(self, "float_abis", float_abis)
        init(self, "float_abi", float_abi)

    @property
    def bits(self) -> int:
        return 64 if self.elfclass == L.ELFCLASS64 else 32

    @property
    def word_size(self) -> int:
        return self.bits // 8

    @property
    def mips64(self) -> bool:
        """MIPS64 n64 relocation records (Elf64_Mips_Rela)."""
        return self.machine == L.EM_MIPS and self.elfclass == L.ELFCLASS64

    def with_float_abi(self, abi: str) -> Target:
        table = dict(self.float_abis)
        if not table:
            raise RumpfsError(f"--float-abi {abi}: target {self.name} has no float ABI choice")
        if abi not in table:
            raise RumpfsError(f"--float-abi {abi}: target {self.name} takes "
                              f"{', '.join(table)}")
        return self.replace(flags=table[abi], float_abi=abi)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "class": f"ELF{self.bits}",
            "byteorder": self.byteorder,
            "machine": MACHINE_NAMES.get(self.machine, str(self.machine)),
            "e_machine": self.machine,
            "e_flags": f"{self.flags:#x}",
            "osabi": self.osabi,
        }


MACHINE_NAMES = {
    L.EM_386: "i386", L.EM_X86_64: "x86_64", L.EM_ARM: "arm", L.EM_AARCH64: "aarch64",
    L.EM_RISCV: "riscv", L.EM_PPC: "ppc", L.EM_PPC64: "ppc64", L.EM_MIPS: "mips",
    L.EM_S390: "s390", L.EM_SPARCV9: "sparcv9", L.EM_SPARC: "sparc",
    L.EM_LOONGARCH: "loongarch",
}

_E32, _E64 = L.ELFCLASS32, L.ELFCLASS64
# gcc leaves the float-ABI bits of e_flags clear for EABI5 (0x05000000 with
# both gnueabi and gnueabihf) and states the float ABI in .ARM.attributes.  A
# data-only object has no float ABI: like gcc's header and with no attributes
# it links into hard- and soft-float programs alike (tested with both).
_ARM_ABIS = (("hard", EF_ARM_EABI_VER5), ("soft", EF_ARM_EABI_VER5),
             ("softfp", EF_ARM_EABI_VER5))
_RISCV_ABIS = (("double", EF_RISCV_RVC | EF_RISCV_FLOAT_ABI_DOUBLE),
               ("soft", EF_RISCV_RVC | EF_RISCV_FLOAT_ABI_SOFT),
               ("single", EF_RISCV_RVC | EF_RISCV_FLOAT_ABI_SINGLE),
               ("quad", EF_RISCV_RVC | EF_RISCV_FLOAT_ABI_QUAD))
_LARCH_ABIS = (("double", EF_LARCH_OBJABI_V1 | EF_LARCH_ABI_DOUBLE_FLOAT),
               ("soft", EF_LARCH_OBJABI_V1 | EF_LARCH_ABI_SOFT_FLOAT),
               ("single", EF_LARCH_OBJABI_V1 | EF_LARCH_ABI_SINGLE_FLOAT))
_MIPS_O32 = EF_MIPS_ARCH_32R2 | EF_MIPS_ABI_O32 | EF_MIPS_CPIC | EF_MIPS_PIC
_MIPS_N64 = EF_MIPS_ARCH_64R2 | EF_MIPS_CPIC | EF_MIPS_PIC

_TABLE = [
    Target("x86_64", _E64, "little", L.EM_X86_64, 0, abs_reloc=R_X86_64_64,
           description="x86-64 (System V psABI)"),
    Target("i386", _E32, "little", L.EM_386, 0, abs_reloc=R_386_32, rela=False,
           description="IA-32 (i386 System V ABI)"),
    Target("aarch64", _E64, "little", L.EM_AARCH64, 0, abs_reloc=R_AARCH64_ABS64,
           description="AArch64 little-endian"),
    Target("aarch64_be", _E64, "big", L.EM_AARCH64, 0, abs_reloc=R_AARCH64_ABS64,
           description="AArch64 big-endian"),
    Target("arm", _E32, "little", L.EM_ARM, _ARM_ABIS[0][1], abs_reloc=R_ARM_ABS32, rela=False,
           float_abis=_ARM_ABIS, float_abi="hard", description="ARM EABI5 little-endian"),
    Target("riscv64", _E64, "little", L.EM_RISCV, _RISCV_ABIS[0][1], abs_reloc=R_RISCV_64,
           float_abis=_RISCV_ABIS, float_abi="double", description="RISC-V RV64 (lp64d)"),
    Target("riscv32", _E32, "little", L.EM_RISCV, _RISCV_ABIS[0][1], abs_reloc=R_RISCV_32,
           float_abis=_RISCV_ABIS, float_abi="double", description="RISC-V RV32 (ilp32d)"),
    Target("ppc64le", _E64, "little", L.EM_PPC64, EF_PPC64_ABI_V2, abs_reloc=R_PPC64_ADDR64,
           description="PowerPC64 little-endian, ELFv2"),
    Target("ppc64", _E64, "big", L.EM_PPC64, 0, abs_reloc=R_PPC64_ADDR64,
           description="PowerPC64 big-endian, ELFv1"),
    Target("ppc", _E32, "big", L.EM_PPC, EF_PPC_RELOCATABLE_LIB, abs_reloc=R_PPC_ADDR32,
           description="PowerPC 32-bit big-endian"),
    Target("mips", _E32, "big", L.EM_MIPS, _MIPS_O32, abs_reloc=R_MIPS_32, rela=False,
           description="MIPS32r2 big-endian, o32"),
    Target("mipsel", _E32, "little", L.EM_MIPS, _MIPS_O32, abs_reloc=R_MIPS_32, rela=False,
           description="MIPS32r2 little-endian, o32"),
    Target("mips64el", _E64, "little", L.EM_MIPS, _MIPS_N64, abs_reloc=R_MIPS_64,
           description="MIPS64r2 little-endian, n64"),
    Target("mips64", _E64, "big", L.EM_MIPS, _MIPS_N64, abs_reloc=R_MIPS_64,
           description="MIPS64r2 big-endian, n64"),
    Target("s390x", _E64, "big", L.EM_S390, 0, abs_reloc=R_390_64,
           description="IBM z/Architecture"),
    Target("sparc64", _E64, "big", L.EM_SPARCV9, EF_SPARCV9_RMO, abs_reloc=R_SPARC_64,
           description="SPARC V9 64-bit"),
    Target("loongarch64", _E64, "little", L.EM_LOONGARCH, _LARCH_ABIS[0][1],
           abs_reloc=R_LARCH_64, float_abis=_LARCH_ABIS, float_abi="double",
           description="LoongArch64 (lp64d, object ABI v1)"),
]

TARGETS = {t.name: t for t in _TABLE}

ALIASES = {
    "amd64": "x86_64", "x86-64": "x86_64", "x64": "x86_64",
    "i686": "i386", "i586": "i386", "x86": "i386",
    "arm64": "aarch64", "arm64be": "aarch64_be", "aarch64be": "aarch64_be",
    "armhf": ("arm", "hard"), "armel": ("arm", "soft"), "armv7": "arm",
    "powerpc64le": "ppc64le", "ppc64el": "ppc64le", "powerpc64": "ppc64",
    "powerpc": "ppc", "mips64le": "mips64el", "loong64": "loongarch64",
    "s390": "s390x",
}


def names() -> list[str]:
    return list(TARGETS)


def get(name: str, float_abi: str | None = None) -> Target:
    """The table's target ``name`` (or an alias), with an optional float ABI."""
    key = ALIASES.get(name.lower(), name.lower())
    implied_abi = None
    if isinstance(key, tuple):
        key, implied_abi = key
    target = TARGETS.get(key)
    if target is None:
        raise RumpfsError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
    abi = float_abi or implied_abi
    if abi:
        target = target.with_float_abi(abi)
    return target


def _host_machine() -> str:
    """``platform.machine()``: on POSIX the machine of ``uname``, without
    importing platform (a few ms of start-up)."""
    if hasattr(os, "uname"):
        return os.uname().machine
    import platform  # pragma: no cover - not POSIX

    return platform.machine()  # pragma: no cover


def host() -> Target:
    """The target of the machine rumpfs runs on."""
    machine = _host_machine().lower()
    try:
        return get(machine)
    except RumpfsError:
        raise RumpfsError(f"host machine {machine!r} has no built-in target; "
                          f"give --target ({', '.join(TARGETS)}) or --like OBJECT") from None


def _by_machine(machine: int, elfclass: int, byteorder: str) -> Target | None:
    for t in _TABLE:
        if t.machine == machine and t.elfclass == elfclass and t.byteorder == byteorder:
            return t
    for t in _TABLE:
        if t.machine == machine and t.elfclass == elfclass:
            return t
    return None


def like(path: str) -> Target:
    """A target copied from the header of an existing ELF object or executable."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        raise RumpfsError(f"--like {path}: no such file") from None
    except OSError as e:
        raise RumpfsError(f"--like {path}: cannot read: {e.strerror}") from None
    if len(head) < 52 or not head.startswith(L.ELFMAG):
        raise RumpfsError(f"--like {path}: not an ELF file")
    elfclass, data = head[4], head[5]
    if elfclass not in (L.ELFCLASS32, L.ELFCLASS64) or data not in (L.ELFDATA2LSB, L.ELFDATA2MSB):
        raise RumpfsError(f"--like {path}: unknown ELF class {elfclass} or data encoding {data}")
    byteorder = "little" if data == L.ELFDATA2LSB else "big"
    header = L.fast(elfclass, byteorder).Ehdr
    if len(head) < header.size:
        raise RumpfsError(f"--like {path}: truncated ELF header")
    ehdr = header.unpack_dict(head)
    base = _by_machine(ehdr["e_machine"], elfclass, byteorder)
    if base is None:
        raise RumpfsError(f"--like {path}: machine {ehdr['e_machine']} ({elfclass * 32}-bit) "
                          f"is not supported (known: {', '.join(TARGETS)})")
    return base.replace(name=f"{base.name} (like {os.path.basename(path)})",
                        byteorder=byteorder, flags=ehdr["e_flags"],
                        osabi=ehdr["e_ident"]["EI_OSABI"],
                        abiversion=ehdr["e_ident"]["EI_ABIVERSION"], float_abi=None)


def resolve(target: str | None = None, like_path: str | None = None,
            float_abi: str | None = None) -> Target:
    """``--target``/``--like``/``--float-abi`` to a :class:`Target` (default: the host)."""
    if target and like_path:
        raise RumpfsError("--target and --like exclude each other: give one")
    if like_path:
        if float_abi:
            raise RumpfsError("--float-abi does not apply with --like (the flags are copied)")
        return like(like_path)
    if target:
        return get(target, float_abi)
    t = host()
    return t.with_float_abi(float_abi) if float_abi else t
