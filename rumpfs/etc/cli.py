"""Command-line options of the /etc work: --no-pwdb, --config, ``rumpfs stubetc``."""

from __future__ import annotations

import argparse
import contextlib
import os

from ..errors import RumpfsError

STUBETC_EPILOG = """\
The files are the default /etc that every pack starts from (unless
--no-stubetc).  Edit them, then pack the directory as a layer grafted at
/etc, e.g.:

  rumpfs stubetc myetc/
  echo 'www:*:80:80::0:0:Web server:/nonexistent:/sbin/nologin' >> myetc/master.passwd
  echo 'www:*:80:' >> myetc/group
  rumpfs pack rootfs/ myetc/:/etc -o root.img

pwd.db, spwd.db and passwd are generated from master.passwd at pack time.
"""


def add_pack_arguments(parser) -> None:
    group = parser.add_argument_group("/etc options")
    group.add_argument("--no-pwdb", dest="pwdb", action="store_false",
                       help="do not generate /etc/pwd.db, /etc/spwd.db and /etc/passwd "
                            "from /etc/master.passwd")
    group.add_argument("--config", metavar="FILE.json",
                       help="validate a rumprun JSON launch configuration and store it "
                            "as /etc/rumprun.json")


def pack_options(args, opts) -> None:
    opts.pwdb = getattr(args, "pwdb", True)
    opts.config = getattr(args, "config", None)


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "stubetc", help="write the default /etc out to a directory, to edit and pack as a layer",
        description="Write the default /etc (stubetc) into DIR.", epilog=STUBETC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", metavar="DIR", help="directory to create or fill")
    p.add_argument("--force", action="store_true", help="overwrite files that exist in DIR")
    p.set_defaults(func=cmd_stubetc)


def write_stubetc(directory: str, force: bool = False) -> list[str]:
    """Copy the default /etc into ``directory``; returns the names written."""
    # Imported here: the parser imports this module on every run.
    import shutil

    from ..sources import stubetc_path
    from . import MASTER_PASSWD

    src = stubetc_path()
    names = sorted(e.name for e in os.scandir(src) if e.is_file())
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise RumpfsError(f"{directory}: exists and is not a directory")
    if not force:
        for name in names:
            if os.path.lexists(os.path.join(directory, name)):
                raise RumpfsError(f"{os.path.join(directory, name)}: already exists "
                                  f"(give --force to overwrite)")
    dest = directory
    try:
        os.makedirs(directory, exist_ok=True)
        secret = os.path.basename(MASTER_PASSWD)
        for name in names:
            dest = os.path.join(directory, name)
            try:
                shutil.copyfile(os.path.join(src, name), dest)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(dest)  # no half-written file stays
                raise
            os.chmod(dest, 0o600 if name == secret else 0o644)
    except OSError as e:
        # A full, read-only or forbidden target: one line naming the path.
        raise RumpfsError(f"{dest}: {e.strerror}") from None
    return names


def cmd_stubetc(args) -> int:
    write_stubetc(args.directory, args.force)
    return 0
