"""Linkable containers for images: ELF relocatable objects, assembly and C sources.

``rumpfs pack dir/ -o root.o`` goes through :mod:`rumpfs.elf.container`;
``rumpfs wrap IMAGE -o root.o`` (and :func:`wrap`) wraps an image that exists.
See docs/elf.md for targets, templates and the registry record.
"""

from __future__ import annotations

import os

from ..errors import RumpfsError

#: Output suffix -> container kind.
KINDS = {".o": "elf", ".S": "asm", ".s": "asm", ".c": "c"}


def wrap(image: str, output: str, *, target: str | None = None, like: str | None = None,
         float_abi: str | None = None, template: str | None = None, name: str | None = None,
         mount_point: str | None = None, writable: bool = False,
         image_format: str | None = None, align: int | None = None,
         registry: bool | None = None) -> int:
    """Wrap the existing image file ``image`` into ``output`` (.o, .S/.s or .c).

    The image format recorded in the registry is ``image_format``, else the one
    rumpfs detects, else 'raw'.  Returns the image size.
    """
    from ..output import AtomicOutput
    from ..tree import HostData
    from . import component, container

    image = os.fspath(image)
    output = os.fspath(output)
    kind = KINDS.get(os.path.splitext(output)[1])
    if kind is None:
        raise RumpfsError(f"{output}: the output of wrap must end in "
                          f"{', '.join(KINDS)}")
    options = dict(target=target, like=like, float_abi=float_abi, template=template,
                   name=name, mount_point=mount_point, writable=writable, align=align,
                   registry=registry)
    tgt = component.resolve_target(options)
    try:
        st = os.stat(image)
    except FileNotFoundError:
        raise RumpfsError(f"{image}: no such file") from None
    except OSError as e:
        raise RumpfsError(f"{image}: cannot read: {e.strerror}") from None
    if not os.path.isfile(image):
        raise RumpfsError(f"{image}: not a regular file")
    try:
        os.close(os.open(image, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as e:
        raise RumpfsError(f"{image}: cannot read: {e.strerror}") from None
    fmt_name, compressed = (image_format, False) if image_format else _detect(image)
    comp = component.resolve(options, fmt_name, target=tgt, compressed=compressed)
    size = st.st_size

    def write_image(sink) -> int:
        sink.copy_at(HostData(os.fsencode(image), size), 0, 0, size)
        sink.finish(size)
        return size

    with AtomicOutput(output) as out:
        return container.write_component(kind, out, write_image, comp)


def _detect(image: str) -> tuple[str, bool]:
    """(format name, compressed) of an image file; ('raw', False) when unknown."""
    from .. import compress, formats
    with open(image, "rb") as f:
        head = f.read(16)
        if compress.sniff(head):
            return "cpio", True
        try:
            return formats.detect(f).name, False
        except (RumpfsError, OSError, ValueError):
            return "raw", False
