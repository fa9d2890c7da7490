"""rumpfs benchmark: deterministic corpora and a side-by-side runner.

``python -m bench`` (or ``make bench``) generates the corpora outside the
repository (``$RUMPFS_CORPORA``, default ``/tmp/rumpfs-corpora``), runs
rumpfs and the reference tools (makefs, GNU cpio, bsdtar, objcopy) on each,
interleaved, and prints a markdown table, a TSV and the targets of issue 7
as HELD / NOT HELD.  ``--quick`` is the smoke run on small corpora.
"""
