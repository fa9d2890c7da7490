"""Finding the image inside an ELF object: ``rumpfs ls|cat|info|check root.o``.

The image is found through the registry record (section ``rumpfs_images``,
its pointer resolved through the relocation that fills it), or else through
the start/end/size symbols of a known template, which also finds images in
objects made by ``objcopy -I binary`` or by the kernels' own ``.incbin``
files.  Only relocatable objects are read: in a linked kernel the image
addresses are virtual and the records are not relocations any more.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import RumpfsError
from . import layout as L
from . import registry, templates
from .targets import MACHINE_NAMES, _by_machine

_TYPE_NAMES = {L.SHT_NULL: "NULL", L.SHT_PROGBITS: "PROGBITS", L.SHT_SYMTAB: "SYMTAB",
               L.SHT_STRTAB: "STRTAB", L.SHT_RELA: "RELA", L.SHT_REL: "REL",
               L.SHT_NOBITS: "NOBITS"}
_STT = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE"}
_STB = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK"}
_STV = {v: k for k, v in L.VISIBILITIES.items()}


@dataclass
class SectionInfo:
    index: int
    name: str
    sh_type: int
    flags: int
    offset: int
    size: int
    align: int
    link: int
    info: int
    entsize: int


@dataclass
class SymbolInfo:
    name: str
    value: int
    size: int
    bind: int
    typ: int
    visibility: int
    shndx: int


@dataclass
class Image:
    """One image found in the object: where its bytes are, and how it was found."""

    offset: int
    size: int
    name: str
    found_by: str
    record: dict | None = None


@dataclass
class ElfObject:
    path: str
    elfclass: int
    byteorder: str
    machine: int
    flags: int
    osabi: int
    e_type: int
    sections: list = field(default_factory=list)
    symbols: list = field(default_factory=list)
    images: list = field(default_factory=list)
    file_size: int = 0

    # What rumpfs.inspect wants: the first image.
    @property
    def offset(self) -> int:
        return self.images[0].offset

    @property
    def size(self) -> int:
        return self.images[0].size

    def describe(self) -> dict:
        target = _by_machine(self.machine, self.elfclass, self.byteorder)
        return {
            "target": {
                "name": target.name if target and target.flags == self.flags else
                (f"{target.name} (other flags)" if target else "unknown"),
                "class": f"ELF{32 * self.elfclass}",
                "byteorder": self.byteorder,
                "machine": MACHINE_NAMES.get(self.machine, str(self.machine)),
                "e_flags": f"{self.flags:#x}",
                "osabi": self.osabi,
            },
            "sections": [{"index": s.index, "name": s.name,
                          "type": _TYPE_NAMES.get(s.sh_type, f"{s.sh_type:#x}"),
                          "flags": _flag_letters(s.flags), "offset": s.offset,
                          "size": s.size, "align": s.align}
                         for s in self.sections if s.index],
            "symbols": [{"name": y.name, "value": y.value, "size": y.size,
                         "type": _STT.get(y.typ, str(y.typ)), "bind": _STB.get(y.bind, str(y.bind)),
                         "visibility": _STV.get(y.visibility, str(y.visibility)),
                         "section": self._section_name(y.shndx)}
                        for y in self.symbols if y.name],
            "descriptors": [dict(im.record, offset=im.offset) for im in self.images if im.record],
            "images": [{"name": im.name, "offset": im.offset, "size": im.size,
                        "found_by": im.found_by} for im in self.images],
        }

    def _section_name(self, shndx: int) -> str:
        if shndx == L.SHN_ABS:
            return "ABS"
        if 0 < shndx < len(self.sections):
            return self.sections[shndx].name
        return "UNDEF" if shndx == 0 else str(shndx)


def _flag_letters(flags: int) -> str:
    return "".join(c for bit, c in ((L.SHF_WRITE, "W"), (L.SHF_ALLOC, "A"),
                                    (L.SHF_EXECINSTR, "X"), (L.SHF_INFO_LINK, "I"))
                   if flags & bit)


#: Where ri_name starts in a registry record: after the pointer, which takes
#: 8 bytes for both word sizes (a 32-bit pointer is padded).
_RI_NAME_OFFSET = registry.IMAGE_POINTER_OFFSET + 8


def _read(f, offset: int, size: int, what: str = "ELF header") -> bytes:
    """``size`` bytes at ``offset``, which must lie inside the file: offsets
    and sizes come from the file and are checked before anything is read."""
    path = getattr(f, "name", "object")
    end = f.seek(0, os.SEEK_END)
    if offset < 0 or size < 0 or offset + size > end:
        raise RumpfsError(f"{path}: {what} at offset {offset}, {size} bytes, is beyond the "
                          f"end of the file ({end} bytes)")
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise RumpfsError(f"{path}: truncated ELF file")
    return data


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else None].decode("utf-8", "replace")


def parse(f, path: str = "object") -> ElfObject:
    """Sections, symbols and images of the ELF file open as ``f``."""
    ident = _read(f, 0, L.EI_NIDENT)
    if not ident.startswith(L.ELFMAG):
        raise RumpfsError(f"{path}: not an ELF file")
    elfclass, data = ident[4], ident[5]
    if elfclass not in (L.ELFCLASS32, L.ELFCLASS64) or data not in (L.ELFDATA2LSB, L.ELFDATA2MSB):
        raise RumpfsError(f"{path}: unknown ELF class or byte order")
    byteorder = "little" if data == L.ELFDATA2LSB else "big"
    lay = L.layouts(elfclass, byteorder)
    eh = lay.Ehdr.parse(_read(f, 0, lay.Ehdr.sizeof()))
    obj = ElfObject(path, elfclass, byteorder, eh.e_machine, eh.e_flags, eh.e_ident.EI_OSABI,
                    eh.e_type, file_size=f.seek(0, os.SEEK_END))
    file_size = f.seek(0, os.SEEK_END)
    n = lay.Shdr.sizeof()
    if eh.e_shoff == 0 or eh.e_shnum == 0 or eh.e_shoff + eh.e_shnum * n > file_size:
        raise RumpfsError(f"{path}: ELF file without a readable section header table")
    if eh.e_shentsize != n:
        raise RumpfsError(f"{path}: e_shentsize {eh.e_shentsize}, expected {n}")
    raw = _read(f, eh.e_shoff, eh.e_shnum * n, "section header table")
    shdrs = [lay.Shdr.parse(raw[i * n:(i + 1) * n]) for i in range(eh.e_shnum)]
    if eh.e_shstrndx >= len(shdrs):
        raise RumpfsError(f"{path}: bad section name table index {eh.e_shstrndx}")
    shs = shdrs[eh.e_shstrndx]
    names = _read(f, shs.sh_offset, shs.sh_size, "section name table")
    for i, s in enumerate(shdrs):
        obj.sections.append(SectionInfo(i, _cstr(names, s.sh_name), s.sh_type, s.sh_flags,
                                        s.sh_offset, s.sh_size, s.sh_addralign, s.sh_link,
                                        s.sh_info, s.sh_entsize))
    symtab = next((s for s in obj.sections if s.sh_type == L.SHT_SYMTAB), None)
    if symtab is not None:
        if not 0 < symtab.link < len(obj.sections):
            raise RumpfsError(f"{path}: symbol table's string table index {symtab.link} "
                              f"out of range 1..{len(obj.sections) - 1}")
        strs = obj.sections[symtab.link]
        strtab = _read(f, strs.offset, strs.size, "string table")
        raw = _read(f, symtab.offset, symtab.size, "symbol table")
        m = lay.Sym.sizeof()
        for i in range(symtab.size // m):
            y = lay.Sym.parse(raw[i * m:(i + 1) * m])
            obj.symbols.append(SymbolInfo(_cstr(strtab, y.st_name), y.st_value, y.st_size,
                                          y.st_info >> 4, y.st_info & 0xF, y.st_other & 3,
                                          y.st_shndx))
    if obj.e_type == L.ET_REL:
        obj.images = _from_registry(f, obj, lay) or _from_symbols(f, obj)
    return obj


def _from_registry(f, obj: ElfObject, lay) -> list:
    reg = next((s for s in obj.sections if s.name == registry.SECTION), None)
    if reg is None or not obj.symbols:
        return []
    data = _read(f, reg.offset, reg.size, f"section {registry.SECTION}")
    relocs = {}
    mips64 = obj.machine == L.EM_MIPS and obj.elfclass == L.ELFCLASS64
    for rs in obj.sections:
        if rs.sh_type not in (L.SHT_REL, L.SHT_RELA) or rs.info != reg.index:
            continue
        if mips64:
            st = lay.MipsRela64
        else:
            st = lay.Rela if rs.sh_type == L.SHT_RELA else lay.Rel
        raw = _read(f, rs.offset, rs.size, f"relocation section {rs.name}")
        m = st.sizeof()
        for i in range(rs.size // m):
            r = st.parse(raw[i * m:(i + 1) * m])
            sym = r.r_sym if mips64 else L.r_sym(obj.elfclass, r.r_info)
            relocs[r.r_offset] = (sym, getattr(r, "r_addend", None))
    bits = 32 * obj.elfclass
    images = []
    for start in range(0, reg.size - registry.RECORD_SIZE + 1, registry.RECORD_SIZE):
        raw_name = data[start + _RI_NAME_OFFSET:start + _RI_NAME_OFFSET + registry.NAME_LEN]
        try:
            raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise RumpfsError(f"{obj.path}: registry record at byte {start} of "
                              f"{registry.SECTION}: ri_name {raw_name.rstrip(bytes(1))!r} "
                              f"is not UTF-8") from None
        rec = registry.parse(data[start:start + registry.RECORD_SIZE], bits, obj.byteorder)
        if rec is None:
            continue
        found = relocs.get(start + registry.IMAGE_POINTER_OFFSET)
        if found is None or found[0] >= len(obj.symbols):
            continue
        sym = obj.symbols[found[0]]
        addend = rec.ri_image if found[1] is None else found[1]
        if not 0 < sym.shndx < len(obj.sections):
            continue
        sec = obj.sections[sym.shndx]
        offset = sec.offset + sym.value + addend
        _inside(obj, sec, offset, rec.ri_size, f"registry record {rec.ri_name!r}")
        images.append(Image(offset, rec.ri_size, rec.ri_name, "registry",
                            registry.describe(rec)))
    return images


def _inside(obj: ElfObject, sec: SectionInfo, offset: int, size: int, what: str) -> None:
    """The image's bytes must lie in its section, and the section in the file."""
    if offset < sec.offset or size < 0 or offset + size > sec.offset + sec.size:
        raise RumpfsError(f"{obj.path}: {what} ({size} bytes at offset {offset}) is outside "
                          f"section {sec.name} ({sec.size} bytes at offset {sec.offset})")
    if sec.sh_type == L.SHT_NOBITS or offset + size > obj.file_size:
        raise RumpfsError(f"{obj.path}: {what}: section {sec.name} has no bytes in the file")


def _pattern(text: str):
    return re.compile(re.escape(text).replace(re.escape("{name}"), r"(?P<name>\w+?)") + r"\Z")


def _from_symbols(f, obj: ElfObject) -> list:
    """Images named by a known template's start symbol (and end or size symbol)."""
    by_name = {y.name: y for y in obj.symbols if y.name and y.bind != L.STB_LOCAL}
    images = []
    for tmpl in templates.BUILTIN.values():
        pat = _pattern(tmpl.start)
        for y in list(by_name.values()):
            m = pat.match(y.name)
            if not m or not 0 < y.shndx < len(obj.sections):
                continue
            comp = m.groupdict().get("name") or tmpl.name

            end, size_sym = (by_name.get(f.replace("{name}", comp)) if f else None
                             for f in (tmpl.end, tmpl.size))
            if end is not None and end.shndx == y.shndx:
                size = end.value - y.value
            elif size_sym is not None and size_sym.shndx == L.SHN_ABS:
                size = size_sym.value
            elif size_sym is not None and 0 < size_sym.shndx < len(obj.sections):
                sec = obj.sections[size_sym.shndx]
                word = 4 * obj.elfclass
                size = int.from_bytes(_read(f, sec.offset + size_sym.value, word,
                                            f"size symbol {size_sym.name}"), obj.byteorder)
            elif y.size:
                size = y.size
            else:
                continue
            sec = obj.sections[y.shndx]
            _inside(obj, sec, sec.offset + y.value, size, f"image {comp!r} of symbol {y.name}")
            images.append(Image(sec.offset + y.value, size, comp, f"symbols ({tmpl.name})"))
    return images


def locate_image(f, path: str) -> ElfObject:
    """The object ``f`` with at least one image found in it (``.offset``/``.size``)."""
    obj = parse(f, path)
    if obj.e_type != L.ET_REL:
        raise RumpfsError(f"{path}: not a relocatable object (ELF type {obj.e_type}); "
                          f"rumpfs reads images in .o files")
    if not obj.images:
        raise RumpfsError(f"{path}: no image found (no {registry.SECTION} record and no "
                          f"start symbol of a known template)")
    return obj


def open_object(path: str) -> ElfObject:
    from ..inspect import _open_file  # a FIFO must not block, a directory is refused
    with _open_file(path) as f:
        return parse(f, path)
