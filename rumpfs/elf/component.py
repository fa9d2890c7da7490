"""One component: an image plus everything that says how it is linked.

:func:`resolve` turns the object options (``--target``, ``--template``,
``--name``, ``--writable``...) into a checked :class:`Component` before any
image byte is written, so bad options fail fast and leave nothing behind.
The ELF, assembly and C writers all take a Component.
"""

from __future__ import annotations

from ..errors import RumpfsError
from . import registry, templates
from . import targets as T
from .frozen import Frozen


class Component(Frozen):
    """A checked component (immutable, compared by value:
    :class:`~rumpfs.elf.frozen.Frozen`)."""

    __slots__ = ("target", "template", "name", "writable", "registry", "fmt_code", "flags",
                 "mount_point")

    def __init__(self, target: T.Target, template: templates.Template, name: str,
                 writable: bool, registry: bool, fmt_code: int, flags: int, mount_point: str):
        init = object.__setattr__
        init(self, "target", target)
        init(self, "template", template)  # {name} already substituted
        init(self, "name", name)
        init(self, "writable", writable)
        init(self, "registry", registry)
        init(self, "fmt_code", fmt_code)
        init(self, "flags", flags)
        init(self, "mount_point", mount_point)

    @property
    def section(self) -> str:
        return self.template.image_section(self.writable)


def resolve_target(options: dict) -> T.Target:
    return T.resolve(options.get("target"), options.get("like"), options.get("float_abi"))


def resolve(options: dict, fmt_name: str, *, config: bool = False, compressed: bool = False,
            target: T.Target | None = None) -> Component:
    """A checked Component from the container options dict."""
    target = target or resolve_target(options)
    name = options.get("name") or templates.DEFAULT_NAME
    base = templates.resolve(options.get("template"))
    if options.get("align") is not None:
        base = base.replace(align=int(options["align"]))
    tmpl = base.for_component(name)
    writable = bool(options.get("writable"))
    tmpl.image_section(writable)  # raises when the template has no writable section
    use_registry = options.get("registry")
    if use_registry is None:
        use_registry = tmpl.registry
    mount_point = options.get("mount_point") or "/"
    registry.check_mount_point(mount_point)
    flags = 0
    if writable:
        flags |= registry.IMG_WRITABLE
    if config:
        flags |= registry.IMG_CONFIG
    if compressed:
        flags |= registry.IMG_COMPRESSED
    if target.bits == 32 and tmpl.align > 1 << 28:
        raise RumpfsError(f"--align {tmpl.align}: too large for a 32-bit target")
    return Component(target=target, template=tmpl, name=name, writable=writable,
                     registry=bool(use_registry), fmt_code=registry.format_code(fmt_name),
                     flags=flags, mount_point=mount_point)
