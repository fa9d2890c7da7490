"""Section templates: where the image goes in the object and what it is called.

A :class:`Template` names the image section (a read-only one and, for kernels
that mount the image read-write in place, a writable one), its alignment, the
start/end/size symbols, their visibility, optional trailing bytes, and whether
the object carries a registry record.  ``{name}`` in any name stands for the
component name (``--name``), so several components link into one binary
without clashes.

Built-in templates mirror what kernels already expect (see docs/elf.md);
user templates come from a TOML file (``--template FILE``)::

    [template]
    base = "rumpfs"                       # optional: start from a built-in
    section = ".rodata.mykernel.{name}"
    writable_section = ".data.mykernel.{name}"
    align = 4096
    start = "mykernel_{name}_start"
    end = "mykernel_{name}_end"
    size = "mykernel_{name}_size"
    size_section = ".rodata.mykernel.{name}.size"
    visibility = "hidden"
    trailer = [0]
    registry = true
    formats = ["cpio"]                    # what the kernel reads, default first
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass

from ..errors import RumpfsError
from . import layout as L

#: The registry section: a C identifier, so GNU ld and lld define
#: ``__start_rumpfs_images`` / ``__stop_rumpfs_images`` around it.
REGISTRY_SECTION = "rumpfs_images"

#: Longest component name (the registry record holds it NUL-terminated in 32 bytes).
NAME_MAX = 31
DEFAULT_NAME = "root"
DEFAULT_ALIGN = 4096
#: Largest alignment accepted (1 GiB; beyond that the object is mostly padding).
MAX_ALIGN = 1 << 30

# The characters names may use (C identifiers, and what GNU as takes unquoted).
_IDENT_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
#: Characters a section name may use (GNU as accepts these unquoted).
_SECTION_CHARS = _IDENT_CHARS | frozenset(".$-")
_SECTION_MAX = 200

#: Section names that belong to code, the toolchain or the ELF format itself:
#: exact names, and prefixes (the name itself or the name followed by '.').
_RESERVED_EXACT = {".init", ".fini", ".interp", ".dynamic", ".dynsym", ".dynstr", ".hash",
                   ".symtab", ".strtab", ".shstrtab", ".symtab_shndx", ".comment",
                   ".stab", ".stabstr", ".group", ".got", ".plt", ".bss", ".sbss", ".tbss",
                   ".tdata", ".text", ".opd", ".toc", ".ARM.attributes", ".gnu.attributes",
                   ".reginfo", ".MIPS.abiflags", ".riscv.attributes", REGISTRY_SECTION}
_RESERVED_PREFIXES = (".text.", ".bss.", ".sbss.", ".tbss.", ".tdata.", ".rel.", ".rela.",
                      ".rel", ".note", ".debug", ".zdebug", ".gnu.", ".got.", ".plt.",
                      ".eh_frame", ".gcc_except_table", ".init_array", ".fini_array",
                      ".preinit_array", ".ctors", ".dtors", ".ARM.", ".MIPS.", ".llvm",
                      ".stack")
_WRITABLE_PREFIXES = (".data", ".sdata", ".ldata")
_READONLY_PREFIXES = (".rodata", ".srodata", ".lrodata")


@dataclass(frozen=True)
class Template:
    """Names and layout of the image section and its symbols (``{name}`` substituted)."""

    name: str
    section: str
    start: str
    writable_section: str | None = None
    end: str | None = None
    size: str | None = None
    #: Section of the size object; None: right after the image in its own section.
    size_section: str | None = None
    align: int = DEFAULT_ALIGN
    visibility: str = "default"
    trailer: bytes = b""
    registry: bool = True
    description: str = ""
    #: The image formats the kernel this template serves reads, the default
    #: first; empty: any (FFS by default).
    formats: tuple[str, ...] = ()

    def replace(self, **changes) -> Template:
        return dataclasses.replace(self, **changes)

    def for_component(self, name: str, where: str | None = None) -> Template:
        """The template with ``{name}`` replaced, checked."""
        check_name(name)

        def sub(text):
            return None if text is None else text.replace("{name}", name)

        t = self.replace(section=sub(self.section), writable_section=sub(self.writable_section),
                         start=sub(self.start), end=sub(self.end), size=sub(self.size),
                         size_section=sub(self.size_section))
        t.validate(where)
        return t

    def image_section(self, writable: bool) -> str:
        if not writable:
            return self.section
        if self.writable_section is None:
            raise RumpfsError(f"--writable: template {self.name!r} has no writable section")
        return self.writable_section

    def validate(self, where: str | None = None) -> None:
        """Raise on missing or contradictory fields (names already substituted)."""
        pre = f"{where}: template" if where else f"template {self.name!r}"
        if self.visibility not in L.VISIBILITIES:
            raise RumpfsError(f"{pre}: visibility {self.visibility!r} is not one of "
                              f"{', '.join(L.VISIBILITIES)}")
        if self.align < 1 or self.align & (self.align - 1) or self.align > MAX_ALIGN:
            raise RumpfsError(f"{pre}: align {self.align} is not a power of two "
                              f"between 1 and {MAX_ALIGN}")
        check_section(self.section, writable=False, where=pre)
        if self.writable_section is not None:
            check_section(self.writable_section, writable=True, where=pre)
        if self.size_section is not None:
            if self.size is None:
                raise RumpfsError(f"{pre}: size_section {self.size_section!r} is given "
                                  f"but there is no size symbol")
            check_section(self.size_section, writable=False, where=pre)
            if self.size_section in (self.section, self.writable_section):
                raise RumpfsError(f"{pre}: size_section {self.size_section!r} is the image "
                                  f"section; leave it out to put the size after the image")
        symbols = [s for s in (self.start, self.end, self.size) if s is not None]
        for s in symbols:
            if "{" not in s and not is_c_identifier(s):
                raise RumpfsError(f"{pre}: symbol {s!r} is not a C identifier")
        if len(set(symbols)) != len(symbols):
            raise RumpfsError(f"{pre}: start, end and size symbols must differ "
                              f"(got {', '.join(symbols)})")
        if len(self.trailer) > 4096:
            raise RumpfsError(f"{pre}: trailer of {len(self.trailer)} bytes is longer "
                              f"than 4096 bytes")


def is_c_identifier(text: str) -> bool:
    """ASCII letters, digits and _, not starting with a digit."""
    return bool(text) and text[0] in _IDENT_START and _IDENT_CHARS.issuperset(text)


def check_name(name: str) -> None:
    if not is_c_identifier(name) or len(name) > NAME_MAX:
        raise RumpfsError(f"--name {name!r}: not a C identifier of at most {NAME_MAX} "
                          f"characters (letters, digits, _; not starting with a digit)")


def check_section(section: str, writable: bool, where: str = "template") -> None:
    """Refuse section names that belong to others or contradict the flags."""
    if "{" in section:
        section = section.replace("{name}", "x")
    if not section or len(section) > _SECTION_MAX or not _SECTION_CHARS.issuperset(section):
        raise RumpfsError(f"{where}: section name {section!r} is not allowed: use at most "
                          f"{_SECTION_MAX} letters, digits and . _ $ -")
    if section in _RESERVED_EXACT or any(section == p.rstrip(".") or section.startswith(p)
                                         for p in _RESERVED_PREFIXES):
        raise RumpfsError(f"{where}: section name {section!r} is not allowed: it is "
                          f"reserved for code, the toolchain or the ELF format")
    kind, other = ("writable", _READONLY_PREFIXES) if writable else ("read-only", _WRITABLE_PREFIXES)
    for p in other:
        if section == p or section.startswith(p + "."):
            raise RumpfsError(f"{where}: section name {section!r} contradicts its flags: a "
                              f"{kind} section may not be named {p}*")


BUILTIN = {
    "rumpfs": Template(
        name="rumpfs", section=".rodata.rumpfs.{name}", writable_section=".data.rumpfs.{name}",
        start="rumpfs_{name}_start", end="rumpfs_{name}_end", size="rumpfs_{name}_size",
        size_section=".rodata.rumpfs.{name}.size",
        description="rumpfs default: .rodata.rumpfs.NAME (or .data.rumpfs.NAME), "
                    "rumpfs_NAME_start/_end/_size"),
    "objcopy": Template(
        name="objcopy", section=".rodata.{name}", writable_section=".data.{name}",
        start="_binary_{name}_start", end="_binary_{name}_end", size="_binary_{name}_size",
        size_section=".rodata.{name}.size",
        description="the symbols objcopy -I binary makes (_size as a data object)"),
    "linux-initramfs": Template(
        name="linux-initramfs", section=".init.ramfs", start="__initramfs_start",
        size="__initramfs_size", size_section=".init.ramfs.info", align=4, registry=False,
        formats=("cpio",),
        description="Linux built-in initramfs (usr/initramfs_data.S): .init.ramfs, "
                    "__initramfs_size in .init.ramfs.info"),
    "unikraft-einitrd": Template(
        name="unikraft-einitrd", section=".rodata", writable_section=".data",
        start="vfscore_einitrd_start", end="vfscore_einitrd_end", align=16, trailer=b"\0",
        formats=("cpio",),
        description="Unikraft vfscore embedded initrd (lib/vfscore/einitrd.S)"),
    "freebsd-mfs": Template(
        name="freebsd-mfs", section="mfs", writable_section="mfs", start="mfs_root",
        end="mfs_root_end", size="__mfs_root_size", formats=("ffs", "ffs2"),
        description="FreeBSD MFS_IMAGE (sys/conf/kern.post.mk): section mfs"),
}

_FIELD_TYPES = {"section": str, "writable_section": str, "start": str, "end": str,
                "size": str, "size_section": str, "align": int, "visibility": str,
                "registry": bool, "description": str, "name": str}
_TOML_KEYS = sorted(set(_FIELD_TYPES) | {"trailer", "base", "formats"})


def _toml_loads(text: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - older Pythons
        import tomli as tomllib
    return tomllib.loads(text)


def load(path: str) -> Template:
    """A user template from a TOML file (see the module docstring and docs/elf.md)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise RumpfsError(f"--template {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RumpfsError(f"--template {path}: cannot read: {e}") from None
    try:
        doc = _toml_loads(text)
    except ValueError as e:
        raise RumpfsError(f"{path}: not valid TOML: {e}") from None
    table = doc.get("template")
    if not isinstance(table, dict) or set(doc) != {"template"}:
        raise RumpfsError(f"{path}: template: the file must hold one [template] table")
    pre = f"{path}: template"
    for key in table:
        if key not in _TOML_KEYS:
            raise RumpfsError(f"{pre}: unknown field {key!r} (known: {', '.join(_TOML_KEYS)})")
    values: dict = {}
    base = table.get("base")
    if base is not None:
        if base not in BUILTIN:
            raise RumpfsError(f"{pre}: base {base!r} is not a built-in template "
                              f"({', '.join(BUILTIN)})")
        values = {f.name: getattr(BUILTIN[base], f.name) for f in dataclasses.fields(Template)}
    for key, typ in _FIELD_TYPES.items():
        if key in table:
            value = table[key]
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                raise RumpfsError(f"{pre}: field {key!r} must be a {typ.__name__}")
            values[key] = value
    if "trailer" in table:
        values["trailer"] = _trailer(table["trailer"], pre)
    if "formats" in table:
        values["formats"] = _formats(table["formats"], pre)
    for key in ("section", "start"):
        if not values.get(key):
            raise RumpfsError(f"{pre}: missing field {key!r}")
    values.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    t = Template(**values)
    # Names are checked with a placeholder name now, and again once --name is known.
    t.for_component("x", where=path)
    return t


def _trailer(value, pre: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool)
                                       and 0 <= b <= 255 for b in value):
        return bytes(value)
    raise RumpfsError(f"{pre}: field 'trailer' must be a string or a list of byte values")


def _formats(value, pre: str) -> tuple[str, ...]:
    from .. import formats
    known = formats.names()
    if not isinstance(value, list) or not all(isinstance(f, str) and f in known for f in value):
        raise RumpfsError(f"{pre}: field 'formats' must be a list of image formats "
                          f"({', '.join(known)})")
    return tuple(value)


def resolve(template: str | None = None) -> Template:
    """A built-in template by name, or a user template from a ``.toml`` path."""
    if template is None:
        return BUILTIN["rumpfs"]
    if template in BUILTIN:
        return BUILTIN[template]
    if template.endswith(".toml") or os.sep in template or os.path.exists(template):
        return load(template)
    raise RumpfsError(f"unknown template {template!r} (built in: {', '.join(BUILTIN)}; "
                      f"or a .toml file)")
