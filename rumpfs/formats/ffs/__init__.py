"""NetBSD FFS images: UFS1 (``ffs``, also ``ffs1``/``ufs1``) and UFS2 (``ffs2``).

The writer (:mod:`.writer`, sized by :mod:`.geometry`) makes the smallest
image that holds the tree unless told otherwise; the reader and the
fsck-grade checker live in :mod:`.reader` and :mod:`.check`.  Both versions
share one set of command-line options (added once, by the ``ffs`` format).
"""

from __future__ import annotations

from ...errors import OptionError, RumpfsError
from .. import ImageFormat, WriteOptions

#: Command-line option -> key in WriteOptions.extra (and PackOptions.format_options).
_OPTIONS = (
    ("--size", "size", "SIZE", "exact image size (bytes, or with k/m/g suffix; FFS and FAT)"),
    ("--min-size", "min_size", "SIZE", "make the image at least this large"),
    ("--max-size", "max_size", "SIZE", "fail when the tree needs a larger image"),
    ("--free-space", "free_space", "N[%]", "extra free space: bytes, or percent of the data"),
    ("--free-inodes", "free_inodes", "N[%]", "extra free inodes: a count, or percent of the tree's"),
    ("--block-size", "block_size", "BYTES", "block size, 4096 to 65536 (default 8192)"),
    ("--frag-size", "frag_size", "BYTES", "fragment size (default block size / 8)"),
    ("--density", "density", "BYTES", "at least one inode per BYTES of image"),
    ("--minfree", "minfree", "PERCENT", "space reserved for root, recorded in the superblock "
                                        "(default 5; the image is sized without it)"),
    ("--label", "label", "NAME", "volume label (UFS2, ISO 9660 and FAT)"),
)


#: Options other formats take too (they list them in their option_names).
_SHARED_KEYS = ("size", "label")

#: Largest --free-space / --free-inodes percentage (of the tree's data or inodes).
MAX_PERCENT = 10000
#: Most inodes an image can number: d_ino and di_ino numbers are 32-bit.
MAX_INODES = 0xFFFFFFFF
#: The --optimization choices (fs_optim FS_OPTTIME, FS_OPTSPACE).
OPTIMIZATIONS = ("time", "space")
#: Options that are sizes in bytes, with a k/m/g/t suffix.
_SIZE_KEYS = ("size", "min_size", "max_size", "free_space", "density")
#: The options that make the image at least that large.
_GROWING_KEYS = ("size", "min_size", "free_space")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _percent(value, flag: str) -> float | None:
    """The number of a 'N%' value, checked; None when the value is not a percentage."""
    if not isinstance(value, str) or not value.strip().endswith("%"):
        return None
    text = value.strip()[:-1]
    try:
        pct = float(text)
    except ValueError:
        raise OptionError(f"{flag} {value}: not a percentage") from None
    if not 0 <= pct <= MAX_PERCENT:  # also refuses nan and inf
        raise OptionError(f"{flag} {value}: must be from 0% to {MAX_PERCENT}%")
    return pct


def largest_image(p) -> int:
    """Bytes of the largest image the writer makes with parameters ``p``: its
    cylinder-group count limit, and UFS1's 32-bit fragment numbers."""
    from . import geometry as G
    frags = (G.MAX_NCG - 1) * p.max_fpg(p.inopb)
    if not p.ufs2:
        frags = min(frags, G.UFS1_MAX_FRAGS)
    return frags * p.fsize


class FfsFormat(ImageFormat):
    def __init__(self, name, suffixes, ufs2, description):
        self.name = name
        self.suffixes = suffixes
        self.ufs2 = ufs2
        self.description = description

    option_names = tuple(key for _f, key, _m, _t in _OPTIONS) + ("optimization",)

    def add_arguments(self, parser) -> None:
        # Only the ffs format adds them: the same options serve ffs2.
        if self.ufs2:
            return
        for flag, key, metavar, text in _OPTIONS:
            prefix = "" if key in _SHARED_KEYS else "FFS: "
            parser.add_argument(flag, dest="ffs_" + key, metavar=metavar, help=prefix + text)
        parser.add_argument("--optimization", dest="ffs_optimization", choices=OPTIMIZATIONS,
                            help="FFS: allocation preference recorded in the superblock")

    def options(self, args) -> dict:
        out = {}
        for _flag, key, _m, _t in _OPTIONS + (("", "optimization", "", ""),):
            value = getattr(args, "ffs_" + key, None)
            if value is not None:
                out[key] = value
        return out

    def check_options(self, options: dict):
        try:
            return self._check_options(options)
        except OptionError:
            raise
        except RumpfsError as e:  # from geometry's parsers: the same words, found early
            raise OptionError(str(e)) from None

    def _check_options(self, options: dict):
        from . import geometry as G
        from . import layout as L

        def amount(key):
            value = options.get(key)
            return None if value is None else G.parse_amount(value, _flag(key))

        bsize = amount("block_size")
        if bsize is not None and not (L.MINBSIZE <= bsize <= L.MAXBSIZE and bsize & (bsize - 1) == 0):
            raise OptionError(f"--block-size {options['block_size']}: must be a power of two "
                              f"from {L.MINBSIZE} to {L.MAXBSIZE}")
        p = G.Params(self.ufs2, bsize, amount("frag_size"))
        largest = largest_image(p)
        version = "UFS2" if self.ufs2 else "UFS1"
        asked = None
        for key in _SIZE_KEYS:
            value = options.get(key)
            if value is None or (key == "free_space" and _percent(value, _flag(key)) is not None):
                continue
            n = amount(key)
            if n > largest:
                hint = "" if self.ufs2 else "; use --format ffs2 or a larger --block-size"
                raise OptionError(f"{_flag(key)} {value}: more than the largest {version} image "
                                  f"rumpfs makes, {largest} bytes ({p.describe()}){hint}")
            if key == "density" and n < p.fsize:
                raise OptionError(f"--density {value}: must be at least the fragment size {p.fsize}")
            if key in _GROWING_KEYS and (asked is None or n > asked[1]):
                asked = (_flag(key), n)
        inodes = options.get("free_inodes")
        if inodes is not None and _percent(inodes, "--free-inodes") is None:
            if amount("free_inodes") > MAX_INODES:
                raise OptionError(f"--free-inodes {inodes}: more than {MAX_INODES} inodes "
                                  f"(32-bit inode numbers)")
        minfree = amount("minfree")
        if minfree is not None and not 0 <= minfree <= 99:
            raise OptionError(f"--minfree {options['minfree']}: must be 0 to 99 (percent)")
        optim = options.get("optimization")
        if optim is not None and optim not in OPTIMIZATIONS:
            raise OptionError(f"--optimization {optim}: must be {' or '.join(OPTIMIZATIONS)}")
        label = options.get("label")
        if label:
            raw = label.encode() if isinstance(label, str) else label
            if not self.ufs2:
                raise OptionError("--label: only UFS2 (--format ffs2) has a volume label")
            if len(raw) >= L.MAXVOLLEN or b"\0" in raw:
                raise OptionError(f"--label {label}: {len(raw)} bytes, at most "
                                  f"{L.MAXVOLLEN - 1} and no NUL")
        return asked

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
