"""Run by tests/test_precompile.py in a fresh interpreter (``python -S``, so
no site hook has imported anything yet): import the FFS and cpio writers,
write a small tree in every writer configuration, and print as JSON which
modules that imported and a digest of each image.

    python -S tests/precompile_probe.py fresh|stale|unreadable

``stale`` spoils the generated modules' SOURCE_CRC32 first, ``unreadable``
makes the layouts' own source unreadable: both must fall back to construct
and write the same bytes.  The ISO 9660 and FAT writers are among them.

    python -S tests/precompile_probe.py pack OUTPUT ARGS...

runs ``rumpfs pack ARGS... -o OUTPUT`` through the command line instead and
prints which of the slow modules that imported.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
import zlib

#: Modules the writers must not import (each costs 15-55 ms of start-up).
SLOW = ("construct", "dataclasses", "typing")

#: Modules the writers import that other parts of rumpfs own: imported before
#: the measurement, so only what the writers add is judged.
SHARED = ("rumpfs", "rumpfs.errors", "rumpfs.tree", "rumpfs.output", "rumpfs.formats")

#: format name, byte order, extra options
CONFIGS = (
    ("ffs", "little", {}),
    ("ffs", "big", {}),
    ("ffs2", "little", {"label": "probe"}),
    ("ffs2", "big", {}),
    ("cpio", "little", {}),
    ("cpio", "little", {"cpio_variant": "crc"}),
    ("iso", "little", {}),
    ("iso", "little", {"label": "probe"}),
    ("fat", "little", {"fat_skip_special": True}),
    ("fat", "little", {"fat_skip_special": True, "fat_type": 16, "label": "PROBE"}),
    ("fat", "little", {"fat_skip_special": True, "fat_type": 32}),
)

#: Layouts of the writers above with a generated module, by name in the output.
LAYOUT_MODULES = {"ffs": "rumpfs.formats.ffs.layout", "cpio": "rumpfs.formats.cpio.layout",
                  "iso": "rumpfs.formats.iso.layout", "fat": "rumpfs.formats.fat.layout"}


def small_tree():
    from rumpfs.tree import BytesData, Node, Tree

    t = 1704164645_123456789
    tree = Tree()
    tree.root.mtime_ns = t
    tree.mkdirs("etc").mtime_ns = t
    tree.put("etc/motd", Node(stat.S_IFREG | 0o644, mtime_ns=t, data=BytesData(b"hello\n")))
    big = Node(stat.S_IFREG | 0o755, uid=1000, gid=100, mtime_ns=t,
               data=BytesData(bytes(range(256)) * 400))
    tree.put("bin/big", big)
    tree.put("bin/hard", big)
    tree.put("bin/sh", Node(stat.S_IFLNK | 0o777, mtime_ns=t, target=b"big"))
    tree.put("bin/long", Node(stat.S_IFLNK | 0o777, mtime_ns=t, target=b"/x" * 100))
    tree.put("dev/null", Node(stat.S_IFCHR | 0o666, mtime_ns=t, rdev=os.makedev(2, 2)))
    tree.put("empty", Node(stat.S_IFREG | 0o600, mtime_ns=t, data=BytesData(b"")))
    return tree


def main(mode: str) -> None:
    for name in SHARED:
        __import__(name)
    preloaded = [name for name in SLOW if name in sys.modules]
    before = set(sys.modules)

    if mode == "stale":
        import importlib

        import rumpfs.formats.precompile as precompile
        for layout in LAYOUT_MODULES.values():
            importlib.import_module(precompile.generated_name(layout)).SOURCE_CRC32 ^= 1
    elif mode == "unreadable":
        import rumpfs.formats.precompile as precompile
        precompile.source_digest = lambda path: None

    import rumpfs.formats.cpio.writer  # noqa: F401
    import rumpfs.formats.fat.writer  # noqa: F401
    import rumpfs.formats.ffs.writer  # noqa: F401
    import rumpfs.formats.iso.writer  # noqa: F401
    from rumpfs import formats
    from rumpfs.output import ImageSink

    tree = small_tree()
    images = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, order, extra in CONFIGS:
            path = os.path.join(tmp, "image")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                sink = ImageSink(fd)
                size = formats.get(name).write(tree, sink, formats.WriteOptions(order, dict(extra)))
                sink.finish(size)
            finally:
                os.close(fd)
            with open(path, "rb") as f:
                raw = f.read()
            images[f"{name} {order} {sorted(extra.items())}"] = [len(raw), zlib.crc32(raw)]

    from rumpfs.formats.cpio import layout as cpio_layout
    from rumpfs.formats.fat import layout as fat_layout
    from rumpfs.formats.ffs import layout as ffs_layout
    from rumpfs.formats.iso import layout as iso_layout
    print(json.dumps({
        "preloaded": preloaded,
        "imported": sorted(set(sys.modules) - before),
        "slow_imported": [name for name in SLOW if name in set(sys.modules) - before],
        "ffs_generated": ffs_layout._generated() is not None,
        "cpio_generated": cpio_layout._GENERATED is not None,
        "iso_generated": iso_layout._GENERATED is not None,
        "fat_generated": fat_layout._GENERATED is not None,
        "cpio_fields": list(cpio_layout.FIELDS),
        "cpio_sizes": [cpio_layout.FIELD_WIDTH, cpio_layout.MAGIC_SIZE, cpio_layout.HEADER_SIZE],
        "ffs_numbers": [ffs_layout.SIZEOF_FS, ffs_layout.FS_MAGIC_OFFSET, ffs_layout.SIZEOF_CSUM],
        "images": images,
    }))


def pack(output: str, args: list[str]) -> None:
    """``rumpfs pack ARGS -o OUTPUT`` as the command line runs it."""
    preloaded = [name for name in SLOW if name in sys.modules]
    from rumpfs.cli import main as rumpfs

    status = rumpfs(["pack", *args, "-o", output])
    print(json.dumps({
        "status": status,
        "preloaded": preloaded,
        "slow_imported": [name for name in SLOW if name in sys.modules],
    }))


if __name__ == "__main__":
    if sys.argv[1] == "pack":
        pack(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1])
