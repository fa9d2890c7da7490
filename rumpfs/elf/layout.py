"""ELF on-disk structures, declared once with construct, for both classes and byte orders.

Field names follow the System V ABI (gABI) ``<elf.h>``: ``Elf32_Ehdr`` /
``Elf64_Ehdr``, ``Elf*_Shdr``, ``Elf*_Sym``, ``Elf*_Rel``, ``Elf*_Rela``.
:func:`layouts` returns the set for one (class, byte order); the writer
builds with it and the reader parses with it.

MIPS64 (n64) is the one ABI whose relocation records do not use the
generic ``r_info``: its ``Elf64_Mips_Rela`` splits the 8 bytes into
``r_sym`` (32 bits), ``r_ssym`` and three 8-bit types (MIPS64 ELF ABI
supplement, "Relocation Entry"); it is declared here too.

Importing this module does not import construct (35-55 ms, more than
writing a small object): :func:`layouts` and ``Elf_Ident`` declare the
construct Structs when first used (the reader parses with them), and the
writer packs with :func:`fast`, ``struct`` forms described by
``_compiled.py``, generated from these declarations by
``python -m rumpfs.formats.precompile`` (:mod:`rumpfs.formats.precompile`),
as long as it was generated from this very source; otherwise the
descriptions are derived from construct, as before.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

# -- e_ident ------------------------------------------------------------------
ELFMAG = b"\x7fELF"
EI_NIDENT = 16
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
EV_CURRENT = 1

ELFOSABI_NONE = 0
ELFOSABI_GNU = 3
ELFOSABI_FREEBSD = 9

# -- e_type -------------------------------------------------------------------
ET_REL = 1

# -- e_machine (the ones rumpfs has targets for) ------------------------------------
EM_SPARC = 2
EM_386 = 3
EM_MIPS = 8
EM_PPC = 20
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_SPARCV9 = 43
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258

# -- special section indexes --------------------------------------------------------
SHN_UNDEF = 0
SHN_ABS = 0xFFF1

# -- sh_type ----------------------------------------------------------------------
SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9

# -- sh_flags ----------------------------------------------------------------------
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
SHF_INFO_LINK = 0x40

# -- symbols ----------------------------------------------------------------------
STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2
STT_NOTYPE = 0
STT_OBJECT = 1
STT_SECTION = 3
STT_FILE = 4
STV_DEFAULT = 0
STV_INTERNAL = 1
STV_HIDDEN = 2
STV_PROTECTED = 3

VISIBILITIES = {"default": STV_DEFAULT, "internal": STV_INTERNAL,
                "hidden": STV_HIDDEN, "protected": STV_PROTECTED}


def st_info(bind: int, typ: int) -> int:
    """ELF32_ST_INFO / ELF64_ST_INFO (the same in both classes)."""
    return (bind << 4) | (typ & 0xF)


def r_info(elfclass: int, sym: int, typ: int) -> int:
    """ELF32_R_INFO / ELF64_R_INFO."""
    return (sym << 8 | (typ & 0xFF)) if elfclass == ELFCLASS32 else (sym << 32 | (typ & 0xFFFFFFFF))


def r_sym(elfclass: int, info: int) -> int:
    return info >> 8 if elfclass == ELFCLASS32 else info >> 32


def r_type(elfclass: int, info: int) -> int:
    return info & 0xFF if elfclass == ELFCLASS32 else info & 0xFFFFFFFF


# construct is imported by the functions that declare, not by the module:
# the writer gets by without it (see the module docstring).


def _ints() -> dict:
    """(byte order, bits) -> construct integer field; negative bits: signed."""
    from construct import (
        Int8ul,
        Int16sb,
        Int16sl,
        Int16ub,
        Int16ul,
        Int32sb,
        Int32sl,
        Int32ub,
        Int32ul,
        Int64sb,
        Int64sl,
        Int64ub,
        Int64ul,
    )

    return {
        ("little", 8): Int8ul, ("big", 8): Int8ul,
        ("little", 16): Int16ul, ("big", 16): Int16ub,
        ("little", 32): Int32ul, ("big", 32): Int32ub,
        ("little", 64): Int64ul, ("big", 64): Int64ub,
        ("little", -32): Int32sl, ("big", -32): Int32sb,
        ("little", -64): Int64sl, ("big", -64): Int64sb,
        ("little", -16): Int16sl, ("big", -16): Int16sb,
    }


@lru_cache(maxsize=None)
def _elf_ident():
    """e_ident, identical in both classes (gABI "ELF Identification")."""
    from construct import Bytes, Const, Int8ul, Struct

    return Struct(
        "EI_MAG" / Const(ELFMAG),
        "EI_CLASS" / Int8ul,
        "EI_DATA" / Int8ul,
        "EI_VERSION" / Int8ul,
        "EI_OSABI" / Int8ul,
        "EI_ABIVERSION" / Int8ul,
        "EI_PAD" / Bytes(7),
    )


def __getattr__(name: str):
    # Elf_Ident: declared on first use.
    if name != "Elf_Ident":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _elf_ident()


@lru_cache(maxsize=None)
def layouts(elfclass: int, byteorder: str) -> SimpleNamespace:
    """Ehdr, Shdr, Sym, Rel, Rela (and MipsRela64) for one class and byte
    order, as construct Structs (imports construct; the writer uses :func:`fast`)."""
    from construct import Int8ul, Struct

    bits64 = elfclass == ELFCLASS64
    ints = _ints()

    def u(bits):
        return ints[(byteorder, bits)]

    half, word = u(16), u(32)
    addr = off = xword = u(64) if bits64 else u(32)
    sxword = u(-64) if bits64 else u(-32)

    ehdr = Struct(
        "e_ident" / _elf_ident(),
        "e_type" / half,
        "e_machine" / half,
        "e_version" / word,
        "e_entry" / addr,
        "e_phoff" / off,
        "e_shoff" / off,
        "e_flags" / word,
        "e_ehsize" / half,
        "e_phentsize" / half,
        "e_phnum" / half,
        "e_shentsize" / half,
        "e_shnum" / half,
        "e_shstrndx" / half,
    )
    shdr = Struct(
        "sh_name" / word,
        "sh_type" / word,
        "sh_flags" / xword,
        "sh_addr" / addr,
        "sh_offset" / off,
        "sh_size" / xword,
        "sh_link" / word,
        "sh_info" / word,
        "sh_addralign" / xword,
        "sh_entsize" / xword,
    )
    if bits64:
        # Elf64_Sym puts st_info/st_other/st_shndx before the value.
        sym = Struct(
            "st_name" / word,
            "st_info" / Int8ul,
            "st_other" / Int8ul,
            "st_shndx" / half,
            "st_value" / addr,
            "st_size" / xword,
        )
    else:
        sym = Struct(
            "st_name" / word,
            "st_value" / addr,
            "st_size" / word,
            "st_info" / Int8ul,
            "st_other" / Int8ul,
            "st_shndx" / half,
        )
    rel = Struct("r_offset" / addr, "r_info" / xword)
    rela = Struct("r_offset" / addr, "r_info" / xword, "r_addend" / sxword)
    # MIPS64 ELF ABI supplement: r_info is four separate fields.
    mips_rela64 = Struct(
        "r_offset" / addr,
        "r_sym" / word,
        "r_ssym" / Int8ul,
        "r_type3" / Int8ul,
        "r_type2" / Int8ul,
        "r_type" / Int8ul,
        "r_addend" / sxword,
    )
    return SimpleNamespace(elfclass=elfclass, byteorder=byteorder, Ehdr=ehdr, Shdr=shdr,
                           Sym=sym, Rel=rel, Rela=rela, MipsRela64=mips_rela64,
                           word_size=8 if bits64 else 4)


#: The structures :func:`layouts` declares and :func:`fast` precompiles.
STRUCT_NAMES = ("Ehdr", "Shdr", "Sym", "Rel", "Rela", "MipsRela64")


def precompile() -> dict:
    """What ``python -m rumpfs.formats.precompile`` writes into
    ``_compiled.py`` (imports construct): per ELF class, each structure's
    description (``struct`` format without byte order, field tree, size),
    the same in both byte orders."""
    from ..formats.precompile import describe

    structs = {}
    for elfclass in (ELFCLASS32, ELFCLASS64):
        little, big = layouts(elfclass, "little"), layouts(elfclass, "big")
        per_class = {}
        for name in STRUCT_NAMES:
            fmt, fields = describe(getattr(little, name))
            if describe(getattr(big, name)) != (fmt, fields):  # pragma: no cover
                raise AssertionError(f"{name}: the byte orders differ beyond the prefix")
            per_class[name] = (fmt, fields, getattr(little, name).sizeof())
        structs[elfclass] = per_class
    return {"STRUCTS": structs}


@lru_cache(maxsize=None)
def _generated():
    """``_compiled``, the descriptions generated from these declarations, if
    it was generated from this very source; else None (construct derives)."""
    from ..formats.precompile import load

    return load(__name__, globals().get("__file__"))


@lru_cache(maxsize=None)
def _descriptions() -> dict:
    generated = _generated()
    return generated.STRUCTS if generated is not None else precompile()["STRUCTS"]


@lru_cache(maxsize=None)
def fast(elfclass: int, byteorder: str) -> SimpleNamespace:
    """The structures of :func:`layouts` as precompiled ``struct`` forms
    (:class:`~rumpfs.formats.ffs.layout.FastStruct`: ``.size``,
    ``.pack_dict(dict)``, ``.unpack_dict(buf)``), without construct while
    ``_compiled.py`` is current."""
    from ..formats.ffs.layout import FastStruct

    out = SimpleNamespace(elfclass=elfclass, byteorder=byteorder,
                          word_size=8 if elfclass == ELFCLASS64 else 4)
    for name, (fmt, fields, size) in _descriptions()[elfclass].items():
        packer = FastStruct(fmt, fields, byteorder)
        if packer.size != size:  # pragma: no cover - the generator derived both
            raise AssertionError(f"{name}: struct size {packer.size} != {size}")
        setattr(out, name, packer)
    return out


def ident(elfclass: int, byteorder: str, osabi: int = ELFOSABI_NONE, abiversion: int = 0) -> dict:
    return dict(EI_CLASS=elfclass,
                EI_DATA=ELFDATA2LSB if byteorder == "little" else ELFDATA2MSB,
                EI_VERSION=EV_CURRENT, EI_OSABI=osabi, EI_ABIVERSION=abiversion,
                EI_PAD=bytes(7))
