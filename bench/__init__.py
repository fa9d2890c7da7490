"""rumpfs benchmark: deterministic corpora and a side-by-side runner.

``python -m bench`` (or ``make bench``) generates the corpora outside the
repository (``$RUMPFS_CORPORA``, default ``/tmp/rumpfs-corpora``), runs
rumpfs and the reference tools (makefs, GNU cpio, bsdtar, pigz, zstd, xz,
lz4, xorriso, genisoimage, mkfs.fat + mcopy, mkfs.erofs, objcopy) on each,
interleaved, on all cores and on one, and prints a markdown table, a TSV
and the targets of issues 7, 19.6, 21.6 and 22 as held / NOT held.
``--quick`` is the smoke run on small corpora; ``--scale`` the scaling
section up to a million files.
"""
