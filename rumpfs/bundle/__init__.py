"""``rumpfs bundle``: a bootable machine image from a kernel, its root and its
configuration (issue 20).

>>> from rumpfs.bundle.build import bundle
>>> bundle("app.bin", "app.iso", root="root.ffs", config="cfg.json")   # doctest: +SKIP

A Multiboot 1 kernel boots through ISOLINUX + mboot.c32 with the root image
and each module as Multiboot modules, in order; a Linux bzImage boots with
the root as its initrd.  The output kind comes from the output's name:
``.iso`` (hybrid: CD or disk), ``.img``/``.raw`` (the same bytes, a bootable
MBR disk), ``.vhd`` (Azure's fixed VHD), ``.tar.gz`` (GCE's ``disk.raw``).
"""

# The package imports nothing by itself: `rumpfs pack` registers the bundle
# subcommand (rumpfs.bundle.cli) without loading the writers.
