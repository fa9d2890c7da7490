"""NetBSD FFS images: UFS1 (``ffs``, also ``ffs1``/``ufs1``) and UFS2 (``ffs2``).

The writer (:mod:`.writer`, sized by :mod:`.geometry`) makes the smallest
image that holds the tree unless told otherwise; the reader and the
fsck-grade checker live in :mod:`.reader` and :mod:`.check`.  Both versions
share one set of command-line options (added once, by the ``ffs`` format).
"""

from __future__ import annotations

from .. import ImageFormat, WriteOptions

#: Command-line option -> key in WriteOptions.extra (and PackOptions.format_options).
_OPTIONS = (
    ("--size", "size", "SIZE", "exact image size (bytes, or with k/m/g suffix)"),
    ("--min-size", "min_size", "SIZE", "make the image at least this large"),
    ("--max-size", "max_size", "SIZE", "fail when the tree needs a larger image"),
    ("--free-space", "free_space", "N[%]", "extra free space: bytes, or percent of the data"),
    ("--free-inodes", "free_inodes", "N[%]", "extra free inodes: a count, or percent of the tree's"),
    ("--block-size", "block_size", "BYTES", "block size, 4096 to 65536 (default 8192)"),
    ("--frag-size", "frag_size", "BYTES", "fragment size (default block size / 8)"),
    ("--density", "density", "BYTES", "at least one inode per BYTES of image"),
    ("--minfree", "minfree", "PERCENT", "space reserved for root, recorded in the superblock "
                                        "(default 5; the image is sized without it)"),
    ("--label", "label", "NAME", "volume label (UFS2 only)"),
)


class FfsFormat(ImageFormat):
    def __init__(self, name, suffixes, ufs2, description):
        self.name = name
        self.suffixes = suffixes
        self.ufs2 = ufs2
        self.description = description

    def add_arguments(self, parser) -> None:
        # Only the ffs format adds them: the same options serve ffs2.
        if self.ufs2:
            return
        for flag, key, metavar, text in _OPTIONS:
            parser.add_argument(flag, dest="ffs_" + key, metavar=metavar, help="FFS: " + text)
        parser.add_argument("--optimization", dest="ffs_optimization", choices=["time", "space"],
                            help="FFS: allocation preference recorded in the superblock")

    def options(self, args) -> dict:
        out = {}
        for _flag, key, _m, _t in _OPTIONS + (("", "optimization", "", ""),):
            value = getattr(args, "ffs_" + key, None)
            if value is not None:
                out[key] = value
        return out

    def write(self, tree, sink, options: WriteOptions) -> int:
        from .writer import write_image
        return write_image(tree, sink, options.byteorder, self.ufs2, options.extra,
                           options.progress)

    def probe(self, f, offset: int, size: int) -> bool:
        from .reader import probe_version
        want = 2 if self.ufs2 else 1
        return probe_version(f, offset, size) == want

    def open(self, f, offset: int, size: int):
        from .reader import FfsReader
        return FfsReader(f, offset, size)


FORMATS = {
    "ffs": FfsFormat("ffs", (".img", ".ffs"), False,
                     "NetBSD FFS, UFS1 (the rump kernel / rumprun root file system)"),
    "ffs2": FfsFormat("ffs2", (), True,
                      "NetBSD FFS, UFS2 (64-bit block numbers and times)"),
}
FORMAT = FORMATS["ffs"]
