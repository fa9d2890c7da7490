"""What :mod:`rumpfs.api` calls for outputs named ``.o``, ``.S``/``.s`` and ``.c``.

``resolve_target`` runs before the tree is built (the image's byte order is
the target's) and checks every object option, so a bad ``--template`` or
``--name`` fails before any work.  ``write`` then writes the container:

* ``elf``: the image streams straight into the object at its final offset.
* ``asm``: the image goes to ``OUT.img`` beside ``OUT`` (renamed into place
  atomically, before ``OUT`` itself), and ``OUT`` ``.incbin``\\ s it by its
  base name; assemble in that directory or pass ``-Wa,-I,DIR`` (for ``.S``
  ``-DRUMPFS_IMAGE_FILE='"path"'`` also works).
* ``c``: the image goes to an anonymous temporary file beside ``OUT`` and
  is streamed out as a C array.
"""

from __future__ import annotations

import os

from ..errors import RumpfsError
from ..output import AtomicOutput, ImageSink
from . import component as C
from . import targets as T
from . import writer


def resolve_target(container_options: dict) -> T.Target:
    """The target of ``--target``/``--like``/``--float-abi`` (default: the host).

    Also checks the other object options now, before any image is written.
    """
    target = C.resolve_target(container_options)
    C.resolve(container_options, "raw", target=target)
    return target


def component_for(opts, fmt_name: str, target: T.Target | None = None) -> C.Component:
    return C.resolve(opts.container_options, fmt_name, target=target,
                     config=getattr(opts, "config", None) is not None,
                     compressed=bool(_compression(opts)))


def _compression(opts) -> str | None:
    comp = getattr(opts, "compress", None)
    if comp == "none":
        return None
    if comp is None:
        return None
    return comp


def write(kind: str, out: AtomicOutput, write_image, fmt_name: str, target: T.Target,
          opts, tree=None) -> int:
    """Write container ``kind`` ('elf', 'asm' or 'c') into ``out``; return the image size."""
    comp = component_for(opts, fmt_name, target)
    return write_component(kind, out, write_image, comp)


def write_component(kind: str, out: AtomicOutput, write_image, comp: C.Component) -> int:
    if kind == "elf":
        return writer.write_object(out.fd, comp, write_image, out.path)
    if kind == "asm":
        from . import asm
        image_path = out.path + ".img"
        with AtomicOutput(image_path) as img:
            size = write_image(ImageSink(img.fd, 0))
        text = asm.render(comp, os.path.basename(image_path), size,
                          preprocessed=out.path.endswith(".S"))
        os.write(out.fd, text.encode("utf-8"))
        return size
    if kind == "c":
        import tempfile  # only here: a few ms of start-up every other output would pay

        from . import csrc
        directory = os.path.dirname(os.path.abspath(out.path))
        with tempfile.TemporaryFile(dir=directory, prefix=".rumpfs-image.") as tmp:
            size = write_image(ImageSink(tmp.fileno(), 0))
            csrc.write(out.fd, comp, tmp.fileno(), size, out.path)
        return size
    raise RumpfsError(f"unknown container kind {kind!r}")
