"""The streaming ELF relocatable-object writer.

File layout (offsets grow downwards)::

    0        Elf{32,64}_Ehdr                 written last, once sizes are known
    base     image section                   the image, streamed in place by the
             [trailer] [pad] [size word]     format writer; base = the alignment
             size section (when separate)
             rumpfs_images                   one registry record
             .rel(a).rumpfs_images           the record's pointer to the image
             .note.GNU-stack                 empty: the object needs no executable stack
             .symtab  .strtab  .shstrtab
             section header table

The image goes straight from the format writer into the object at its final
offset (``ImageSink(fd, base)``), so memory never grows with the image; only
the few hundred bytes around it are built in memory.  Nothing depends on time
or on the host, so the same input gives the same bytes.
"""

from __future__ import annotations

from ..errors import RumpfsError
from ..output import ImageSink, pwrite_all
from . import layout as L
from . import registry
from .component import Component


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


class Section:
    """One section of the object being written (a plain class, not a
    dataclass: that module alone costs more start-up than writing a small
    object).  Sections compare by identity; ``index`` is set once the
    section table is complete."""

    __slots__ = ("name", "sh_type", "flags", "data", "size", "offset", "align", "link", "info",
                 "entsize", "index")

    def __init__(self, name: str, sh_type: int, flags: int = 0, data: bytes = b"",
                 align: int = 1, info: int = 0, entsize: int = 0):
        self.name = name
        self.sh_type = sh_type
        self.flags = flags
        self.data = data
        self.size = None  # set when the contents are written elsewhere (the image)
        self.offset = 0
        self.align = align
        self.link = 0
        self.info = info
        self.entsize = entsize

    @property
    def sh_size(self) -> int:
        return len(self.data) if self.size is None else self.size


class StringTable:
    """An ELF string table: offset 0 is the empty string; equal names share bytes."""

    def __init__(self):
        self.data = bytearray(b"\0")
        self._index: dict[str, int] = {"": 0}

    def add(self, name: str) -> int:
        if name not in self._index:
            self._index[name] = len(self.data)
            self.data += name.encode("utf-8") + b"\0"
        return self._index[name]


def image_base(comp: Component) -> int:
    """Where the image starts in the object file: aligned like the section."""
    ehdr_size = L.fast(comp.target.elfclass, comp.target.byteorder).Ehdr.size
    return align_up(ehdr_size, comp.template.align)


def write_object(fd: int, comp: Component, write_image, path: str) -> int:
    """Write the object into ``fd``; ``write_image(sink)`` returns the image size."""
    base = image_base(comp)
    sink = ImageSink(fd, base)
    size = write_image(sink)
    _write_rest(fd, comp, base, size, path)
    return size


def _write_rest(fd: int, comp: Component, base: int, size: int, path: str) -> None:
    t, tmpl = comp.target, comp.template
    lay = L.fast(t.elfclass, t.byteorder)
    word = t.word_size
    word_int = (lambda v: v.to_bytes(word, t.byteorder))

    # -- the image section and what follows the image in it -------------------------
    # Index 0 is the null section: a header of zeros (the gABI's SHN_UNDEF).
    sections: list[Section] = [Section("", L.SHT_NULL, align=0)]
    flags = L.SHF_ALLOC | (L.SHF_WRITE if comp.writable else 0)
    image = Section(comp.section, L.SHT_PROGBITS, flags, align=tmpl.align)
    image.offset = base
    sections.append(image)
    tail = bytearray(tmpl.trailer)
    size_in_image = tmpl.size is not None and tmpl.size_section is None
    if size_in_image:
        # The size word after the trailer, at the next word boundary.
        tail += bytes(align_up(size + len(tail), word) - size - len(tail))
        size_word_at = (image, size + len(tail))
        tail += word_int(size)
    image.size = size + len(tail)
    if tail:
        pwrite_all(fd, bytes(tail), base + size)
    pos = base + image.size

    if tmpl.size is not None and not size_in_image:
        size_sec = Section(tmpl.size_section, L.SHT_PROGBITS, L.SHF_ALLOC, word_int(size),
                           align=word)
        size_word_at = (size_sec, 0)
        sections.append(size_sec)

    reg = None
    if comp.registry:
        reg = Section(registry.SECTION, L.SHT_PROGBITS, L.SHF_ALLOC | L.SHF_WRITE,
                      registry.build(t.bits, t.byteorder, fmt=comp.fmt_code, flags=comp.flags,
                                     size=size, name=comp.name, mount_point=comp.mount_point),
                      align=registry.RECORD_ALIGN)
        sections.append(reg)

    # -- symbols: null, the image section (relocations point at it), globals ---------
    strtab = StringTable()
    syms = [dict(st_name=0, st_value=0, st_size=0, st_info=0, st_other=0, st_shndx=0)]
    section_sym = len(syms)
    syms.append(dict(st_name=0, st_value=0, st_size=0,
                     st_info=L.st_info(L.STB_LOCAL, L.STT_SECTION), st_other=0,
                     st_shndx=sections.index(image)))
    first_global = len(syms)
    other = L.VISIBILITIES[tmpl.visibility]

    def global_sym(name, sec, value, symsize, typ):
        syms.append(dict(st_name=strtab.add(name), st_value=value, st_size=symsize,
                         st_info=L.st_info(L.STB_GLOBAL, typ), st_other=other,
                         st_shndx=sections.index(sec)))

    global_sym(tmpl.start, image, 0, size, L.STT_OBJECT)
    if tmpl.end is not None:
        global_sym(tmpl.end, image, size, 0, L.STT_NOTYPE)
    if tmpl.size is not None:
        global_sym(tmpl.size, *size_word_at, word, L.STT_OBJECT)

    # -- the registry pointer's relocation -----------------------------------------------
    if reg is not None:
        reg_index = sections.index(reg)
        if t.mips64:
            rel = lay.MipsRela64.pack_dict(dict(
                r_offset=registry.IMAGE_POINTER_OFFSET, r_sym=section_sym, r_ssym=0,
                r_type3=0, r_type2=0, r_type=t.abs_reloc, r_addend=0))
            entsize = lay.MipsRela64.size
        elif t.rela:
            rel = lay.Rela.pack_dict(dict(r_offset=registry.IMAGE_POINTER_OFFSET,
                                          r_info=L.r_info(t.elfclass, section_sym, t.abs_reloc),
                                          r_addend=0))
            entsize = lay.Rela.size
        else:
            rel = lay.Rel.pack_dict(dict(r_offset=registry.IMAGE_POINTER_OFFSET,
                                         r_info=L.r_info(t.elfclass, section_sym, t.abs_reloc)))
            entsize = lay.Rel.size
        prefix = ".rela." if (t.rela or t.mips64) else ".rel."
        sections.append(Section(prefix + registry.SECTION,
                                L.SHT_RELA if (t.rela or t.mips64) else L.SHT_REL,
                                L.SHF_INFO_LINK, rel, align=word, info=reg_index,
                                entsize=entsize))
        rel_sec = sections[-1]
    else:
        rel_sec = None

    sections.append(Section(".note.GNU-stack", L.SHT_PROGBITS, 0, b""))
    symtab = Section(".symtab", L.SHT_SYMTAB, 0, align=word, info=first_global,
                     entsize=lay.Sym.size)
    strsec = Section(".strtab", L.SHT_STRTAB, 0)
    shstr = Section(".shstrtab", L.SHT_STRTAB, 0)
    sections += [symtab, strsec, shstr]
    for i, s in enumerate(sections):
        s.index = i
    symtab.link = strsec.index
    if rel_sec is not None:
        rel_sec.link = symtab.index
    symtab.data = b"".join(lay.Sym.pack_dict(s) for s in syms)
    strsec.data = bytes(strtab.data)
    shstrtab = StringTable()
    names = [shstrtab.add(s.name) for s in sections]
    shstr.data = bytes(shstrtab.data)

    # -- lay out the small sections after the image, then the header table ------------
    out = bytearray()
    for s in sections[2:]:  # after the null section and the image
        pos_aligned = align_up(pos + len(out), s.align)
        out += bytes(pos_aligned - pos - len(out))
        s.offset = pos_aligned
        out += s.data
    shoff = align_up(pos + len(out), word)
    out += bytes(shoff - pos - len(out))
    for s, name in zip(sections, names):
        out += lay.Shdr.pack_dict(dict(
            sh_name=name, sh_type=s.sh_type, sh_flags=s.flags, sh_addr=0,
            sh_offset=s.offset, sh_size=s.sh_size, sh_link=s.link, sh_info=s.info,
            sh_addralign=s.align, sh_entsize=s.entsize))
    if t.bits == 32 and pos + len(out) > 0xFFFFFFFF:
        raise RumpfsError(f"{path}: object of {pos + len(out)} bytes does not fit a 32-bit "
                          f"ELF object (limit 4 GiB)")
    pwrite_all(fd, bytes(out), pos)

    ehdr = lay.Ehdr.pack_dict(dict(
        e_ident=L.ident(t.elfclass, t.byteorder, t.osabi, t.abiversion),
        e_type=L.ET_REL, e_machine=t.machine, e_version=L.EV_CURRENT, e_entry=0,
        e_phoff=0, e_shoff=shoff, e_flags=t.flags, e_ehsize=lay.Ehdr.size,
        e_phentsize=0, e_phnum=0, e_shentsize=lay.Shdr.size, e_shnum=len(sections),
        e_shstrndx=shstr.index))
    # The gap between the header and the image stays zero (a hole when large).
    pwrite_all(fd, ehdr, 0)
