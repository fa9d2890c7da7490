"""Depfiles: a Make rule naming everything a pack read (``--depfile FILE``).

``root.o: stubetc/etc stubetc/etc/group ... rootfs rootfs/bin rootfs/bin/sh``

Make, Ninja (``depfile =``, ``deps = gcc``), CMake (``add_custom_command``
``DEPFILE``) and Meson (``custom_target(depfile:)``) read it as they read
``gcc -MD`` output, so the object is built again when any input changes.
Every directory of a source is listed, as well as every file: adding or
removing a file changes its directory's time, which triggers the rebuild.
Names are escaped as gcc does: a space or tab gets a backslash (and the
backslashes before it are doubled), ``$`` is ``$$``, ``#`` is ``\\#``; a
``:`` gets a backslash too, which GNU make and Ninja both read back.
Symlinks, devices and FIFOs are not listed (Make would follow a symlink, and
a dangling one would be "no rule to make target").
"""

from __future__ import annotations

import os
import stat

from .tree import Tree


def pack_inputs(layers, opts, tree) -> list[str]:
    """Every file and directory the layers read, in layer order, once each."""
    from .sources import HostDirectory
    from .spec import SpecFile
    out: dict[str, None] = {}
    spools = set()

    def add(path) -> None:
        out.setdefault(os.path.normpath(os.fsdecode(path)), None)

    for layer in layers:
        if isinstance(layer, HostDirectory):
            _walk(layer.path, add)
        elif isinstance(layer, SpecFile):
            add(layer.path)
        elif getattr(layer, "spool", None) is not None:  # an archive's (rumpfs.archives)
            spools.add(layer.spool.path)
        for path in getattr(layer, "inputs", ()):
            add(path)
    if isinstance(tree, Tree):
        # Files that spec lines (``file NAME LOCATION``) and mtree contents= named.
        for node in tree.iter_nodes():
            path = getattr(node.data, "path", None)
            if path is not None and path not in spools and not getattr(node.data, "offset", 0):
                add(path)
    if opts.config:
        add(os.fspath(opts.config))
    template = opts.container_options.get("template")
    if template and os.path.isfile(template):
        add(template)
    return list(out)


def _walk(top: str, add) -> None:
    """``top`` (followed if a symlink, as the layer does), its directories
    and regular files."""
    add(top)
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue  # the pack itself reported it, or will
        for entry in entries:
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                add(entry.path)
                stack.append(entry.path)
            elif stat.S_ISREG(mode):
                add(entry.path)


def escape(name: str) -> str:
    """A file name as gcc -MD writes it into a Make rule."""
    out = []
    slashes = 0
    for c in name:
        if c == "\\":
            slashes += 1
            out.append(c)
            continue
        if c in " \t":
            out.append("\\" * slashes + "\\")
        elif c == "$":
            out.append("$")
        elif c in "#:":
            out.append("\\")
        slashes = 0
        out.append(c)
    return "".join(out)


def rule(targets, inputs) -> str:
    """``TARGETS: INPUTS`` with one input per continued line.  Make cannot
    name a file with a newline: such inputs are left out with a warning."""
    from .sources import warn
    head = " ".join(escape(t) for t in targets) + ":"
    lines = [head]
    for name in inputs:
        if "\n" in name:
            warn(f"{name!r}: a name with a newline cannot be written in a depfile; left out")
        else:
            lines.append(escape(name))
    return " \\\n ".join(lines) + "\n"


def write_depfile(path: str, targets, inputs) -> None:
    """Write the rule atomically (a build tool never reads half of it)."""
    from .output import AtomicOutput
    text = rule(targets, inputs).encode("utf-8", "surrogateescape")
    with AtomicOutput(path) as out:
        view = memoryview(text)
        while view:
            view = view[os.write(out.fd, view):]
