"""Run by tests/test_precompile.py in a fresh interpreter (``python -S``, so
no site hook has imported anything yet): run ``rumpfs pack DIR -o x.o`` (the
default /etc layer on, so the password databases are generated too) through
the command line, note which modules that imported, then write objects,
assembly and C for a few targets, templates and options, and print as JSON
the modules and a digest of every output.

    python -S tests/object_probe.py fresh|stale|unreadable TREE OUTDIR

``stale`` spoils the SOURCE_CRC32 of the ELF, registry and db 1.85 generated
modules first, ``unreadable`` makes every layout's own source unreadable:
both must fall back to construct and write the same bytes.  The caller sets
SOURCE_DATE_EPOCH so the outputs do not depend on the tree's times.
"""

from __future__ import annotations

import json
import os
import sys
import zlib

#: Modules ``rumpfs pack DIR -o x.o`` must not import (each costs 5-55 ms of start-up).
#: dataclasses is not among them since issue 18.6: the options (rumpfs.api's
#: PackOptions, the ELF templates) are dataclasses; the writers still import
#: none (tests/precompile_probe.py).
SLOW = ("construct", "typing", "tempfile", "pathlib")

#: The generated modules of the object and /etc writers, by layout module.
GENERATED = {"rumpfs.elf.layout": "rumpfs.elf._compiled",
             "rumpfs.elf.registry": "rumpfs.elf._compiled_registry",
             "rumpfs.etc.db185": "rumpfs.etc._compiled_db185"}

#: (output name, extra arguments) written after the measured run.
OUTPUTS = (
    ("i386.o", ["--target", "i386"]),
    ("aarch64_be.o", ["--target", "aarch64_be", "--writable"]),
    ("ppc.o", ["--target", "ppc", "--template", "objcopy", "--name", "data"]),
    ("mips.o", ["--target", "mips", "--template", "freebsd-mfs"]),
    ("mips64.o", ["--target", "mips64", "--mount-point", "/srv"]),
    ("mips64el.o", ["--target", "mips64el", "--no-registry"]),
    ("s390x.o", ["--target", "s390x", "--template", "unikraft-einitrd"]),
    ("riscv32.o", ["--target", "riscv32", "--float-abi", "soft", "--image-format", "cpio",
                   "--template", "linux-initramfs", "--registry"]),
    ("x86_64-ffs2.o", ["--target", "x86_64", "-f", "ffs2", "--align", "64"]),
    ("sparc64.S", ["--target", "sparc64"]),
    ("ppc64.c", ["--target", "ppc64", "--template", "objcopy"]),
    ("loongarch64.s", ["--target", "loongarch64"]),
)


def digest(path: str) -> list:
    with open(path, "rb") as f:
        data = f.read()
    return [len(data), zlib.crc32(data)]


def main(mode: str, tree: str, outdir: str) -> None:
    preloaded = [name for name in SLOW if name in sys.modules]
    if mode == "stale":
        import importlib

        for generated in GENERATED.values():
            importlib.import_module(generated).SOURCE_CRC32 ^= 1
    elif mode == "unreadable":
        import rumpfs.formats.precompile as precompile
        precompile.source_digest = lambda path: None

    from rumpfs.cli import main as rumpfs

    first = os.path.join(outdir, "x.o")
    if rumpfs(["pack", tree, "-o", first]) != 0:
        raise SystemExit("rumpfs pack failed")
    imported = sorted(sys.modules)

    outputs = {"x.o": digest(first)}
    for name, args in OUTPUTS:
        path = os.path.join(outdir, name)
        if rumpfs(["pack", tree, "-o", path, *args]) != 0:
            raise SystemExit(f"rumpfs pack {name} failed")
        outputs[name] = digest(path)
        if name.endswith((".S", ".s")):
            outputs[name + ".img"] = digest(path + ".img")
    wrapped = os.path.join(outdir, "wrapped.o")
    if rumpfs(["wrap", first, "-o", wrapped, "--target", "arm", "--name", "again"]) != 0:
        raise SystemExit("rumpfs wrap failed")
    outputs["wrapped.o"] = digest(wrapped)

    import importlib

    print(json.dumps({
        "preloaded": preloaded,
        "imported": imported,
        "slow_imported": [name for name in SLOW if name in imported],
        "generated": {layout: importlib.import_module(layout)._generated() is not None
                      for layout in GENERATED},
        "outputs": outputs,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
