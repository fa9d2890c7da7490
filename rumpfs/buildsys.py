"""Options for build systems: mtree specs, depfiles, JSON, the C header's place.

A :mod:`rumpfs.cli` extension: ``add_pack_arguments`` declares ``--mtree``,
``--mtree-only``, ``--depfile`` and ``--json`` on ``rumpfs pack``,
``pack_options`` hands them to :class:`rumpfs.api.PackOptions`; the work is
in :mod:`rumpfs.mtree`, :mod:`rumpfs.depfile` and ``PackResult.to_json``.
"""

from __future__ import annotations

import os
import sys


def include_dir() -> str:
    """The directory holding ``rumpfs_images.h`` (for ``-I``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def add_pack_arguments(p) -> None:
    group = p.add_argument_group("inputs and build systems")
    group.add_argument("--mtree", metavar="FILE",
                       help="NetBSD mtree(5) spec (as makefs -F): sets types, modes, owners "
                            "(uname/gname from the image's /etc), times, links; creates listed "
                            "directories, symlinks, devices and fifos the sources lack")
    group.add_argument("--mtree-only", action="store_true",
                       help="keep only the entries the --mtree spec lists (makefs -x)")
    group.add_argument("--depfile", metavar="FILE",
                       help="write a Make rule 'OUT: every file and directory read' "
                            "(for make, ninja, cmake DEPFILE, meson depfile:)")
    group.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                       help="image of a multi-platform oci: source (default: linux and the "
                            "object's target, else the build host's)")
    group.add_argument("--json", action="store_true",
                       help="print one JSON object: output, format, sizes, entries, "
                            "warnings, inputs")


def pack_options(args, opts) -> None:
    if args.mtree_only and not args.mtree:
        from .errors import RumpfsError
        raise RumpfsError("--mtree-only needs --mtree FILE")
    opts.mtree = args.mtree
    opts.mtree_only = args.mtree_only
    opts.depfile = args.depfile
    opts.list_inputs = args.json
    opts.platform = args.platform


def print_pack_json(result) -> None:
    import json  # here: json imports re, which a plain pack does without
    print(json.dumps(result.to_json()))


def check_json(image: str, format_name: str, problems: list) -> dict:
    """What ``rumpfs check --json`` prints."""
    return {"image": image, "format": format_name, "clean": not problems,
            "problems": [str(p) for p in problems], "size": os.stat(image).st_size}


def print_check_json(image: str, format_name: str, problems: list) -> int:
    import json
    print(json.dumps(check_json(image, format_name, problems)))
    return 1 if problems else 0


def print_include_dir_action():
    """An argparse action for ``rumpfs --print-include-dir`` (like --version)."""
    import argparse

    class PrintIncludeDir(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(include_dir())
            sys.exit(0)

    return PrintIncludeDir
