"""Mutation testing of the writers with mutmut 2.5 (``pip install 'mutmut<3'``).

mutmut mutates the source in place, so each run works in its own copy of the
committed tree (tests spawn ``python -m rumpfs`` from the copy's root)::

    python scripts/mutation.py cpio            # copy HEAD to /tmp/rumpfs-mut-cpio, run
    python scripts/mutation.py ffs --results   # the survivors of the last run

The runner of each module is a fast selection of that writer's independent
judges (``-x``: a mutant is killed at the first failing test); the whole
default suite kills at least as many.  The FFS run mutates only the inode,
directory, cylinder-group and superblock code (``SCOPE``): the copy gets a
``mutmut_config.py`` whose ``pre_mutation`` hook skips every other line (the
skipped mutants are counted apart by mutmut, not as killed); the same hook
with ``--sample N`` tests one mutant in N, chosen by a hash of its line's text
and its index on the line, so the same sample on every run.  Runs go under
``nice -n 10``; run one at a time, and stop one by its process group (the
command it prints): mutmut's worker process outlives a killed mutmut and
goes on mutating the copy.  Do not run ``mutmut results`` while a run is
going: it re-reads the file mutmut has mutated and corrupts the cache
(``--status`` reads the cache alone).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PYTEST = "python -m pytest -x -q -n 0 -p no:cacheprovider -p no:randomly"

#: A pytest plugin for the runner: it keeps only the chosen tests (KEEP:
#: whole files and node ids), and makes every failing exit status 1.  The
#: choice is made here, not by node ids on the command line: a mutant that
#: breaks an import would make pytest refuse such an id ("found no
#: collectors", status 4, before any hook can change it).
RUNNER_PLUGIN = """\
KEEP = {keep!r}


def pytest_collection_modifyitems(config, items):
    chosen, dropped = [], []
    for item in items:
        test = item.nodeid.split("[")[0]
        (chosen if test in KEEP or test.split("::")[0] in KEEP else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = chosen


def pytest_sessionfinish(session, exitstatus):
    if exitstatus not in (0, 1):
        session.exitstatus = 1
"""

MODULES = {
    "cpio": ("rumpfs/formats/cpio/writer.py", [
        "-k", "'not compressed_archives and not compress_option'",
        "tests/test_cpio.py", "tests/test_mutants_cpio.py",
        "tests/test_hostwalk.py::test_gnu_cpio_extracts_subtrees_written_by_walkers",
        "tests/test_output.py::test_cpio_with_worker_copies_reads_back_with_bsdtar",
        "tests/test_output.py::test_cpio_member_larger_than_a_piece_reads_back_with_gnu_cpio",
        "tests/test_pack.py::test_error_file_too_large_for_newc",
    ]),
    "db185": ("rumpfs/etc/db185.py", [
        "tests/test_etc_db185.py",
        # The derivation's values against the committed ones (not the
        # freshness check, which every mutant of the source fails).
        "tests/test_precompile.py::test_db185_generated_equals_construct",
    ]),
    "elf": ("rumpfs/elf/writer.py", [
        "tests/test_mutants_elf.py", "tests/test_elf.py",
        "-k", "'mutants_elf or header_matches or registry_section or readelf_reads or streams or error'",
    ]),
    "ffs": ("rumpfs/formats/ffs/writer.py", [
        "tests/test_mutants_ffs.py",
        "tests/test_ffs_write.py::test_fixture_tree_reads_back",
        "tests/test_ffs_write.py::test_big_endian",
        "tests/test_ffs_write.py::test_edges",
        "tests/test_ffs_write.py::test_several_cylinder_groups_auto",
        "tests/test_ffs_write.py::test_big_endian_several_groups_and_long_symlinks",
        "tests/test_ffs_write.py::test_superblock_options",
        "tests/test_ffs_write.py::test_largest_netbsd_device_number",
        "tests/test_ffs_write.py::test_superblock_time_is_the_newest_inode_time",
        "tests/test_ffs_write.py::test_atime_mtime_ctime_kept_apart",
        "tests/test_ffs_write.py::test_fast_and_slow_symlinks",
        "tests/test_ffs_write.py::test_csum_area_of_whole_blocks",
        "tests/test_ffs_write.py::test_bad_options",
        "tests/test_ffs_write.py::test_sparse_file_with_a_hole_first_and_a_tail_last",
        "tests/test_ffs_write.py::test_ufs1_time_limit",
    ]),
}

#: The FFS writer's functions under test (issue 16: inode, directory,
#: cylinder-group and superblock code); qualified names as ``ast`` sees them.
SCOPE = {
    "ffs": [
        # inodes
        "encode_rdev", "di_gens", "Writer._pointers", "Writer._inode_columns",
        "Writer._write_inodes", "_inline_struct",
        # directories
        "Plan._dir_size", "Plan.dir_bytes", "Plan._dir_bytes",
        # cylinder groups
        "Writer._summaries", "Writer._csum_bytes", "Writer._write_cgs", "_merge",
        "_CgState.__init__", "_bitmap",
        # superblock
        "Writer._fs_time", "Writer._superblock_options", "Writer.superblock",
        "Writer._write_superblocks",
    ],
}

CONFIG = '''\
"""Written by scripts/mutation.py: mutate only the lines of SCOPE's functions
(all when SCOPE is None), and of those one mutant in SAMPLE."""
import ast
import zlib

SCOPE = {scope!r}
SAMPLE = {sample!r}
PATH = {path!r}


def _lines():
    tree = ast.parse(open(PATH).read())
    keep = set()

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if name in SCOPE:
                    keep.update(range(child.lineno, child.end_lineno + 1))
                visit(child, name + ".")
    visit(tree, "")
    return keep


_KEEP = None


def pre_mutation(context):
    global _KEEP
    if SCOPE is not None:
        if _KEEP is None:
            _KEEP = _lines()
        # current_line_index counts from 0, ast's lines from 1.
        if context.current_line_index + 1 not in _KEEP:
            context.skip = True
            return
    # A stable sample: the mutant's line text and its index on that line.
    mid = context.mutation_id
    if SAMPLE > 1 and zlib.crc32(f"{{mid.line.strip()}}#{{mid.index}}".encode()) % SAMPLE:
        context.skip = True
'''


def status(dest: Path) -> int:
    """Counts by status and the survivors, read from ``.mutmut-cache`` read-only."""
    import sqlite3
    db = sqlite3.connect(f"file:{dest / '.mutmut-cache'}?mode=ro", uri=True)
    counts = dict(db.execute("select status, count(*) from Mutant group by status"))
    # "suspicious" is mutmut's name for a kill that took longer than the
    # baseline allows (the tests failed, slowly): a kill.
    killed = (counts.get("ok_killed", 0) + counts.get("bad_timeout", 0)
              + counts.get("ok_suspicious", 0))
    tested = killed + counts.get("bad_survived", 0)
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if tested:
        print(f"killed {killed} of {tested} tested ({100 * killed / tested:.1f} %; "
              f"timeouts and slow kills count as killed)")
    rows = db.execute('select m.id, l.line_number, m."index", l.line from Mutant m '
                      "join Line l on m.line = l.id where m.status = 'bad_survived' "
                      'order by l.line_number, m."index"')
    for mid, number, index, line in rows:
        print(f"{mid:5} {number + 1:5}:{index}   {line.strip()}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module", choices=sorted(MODULES))
    ap.add_argument("--dest", help="the copy to mutate (default /tmp/rumpfs-mut-MODULE)")
    ap.add_argument("--results", action="store_true", help="show the last run's survivors")
    ap.add_argument("--status", action="store_true",
                    help="count the mutants by status and list the survivors (line, text, "
                         "index on the line) from mutmut's cache; safe while a run goes")
    ap.add_argument("--keep", action="store_true",
                    help="keep mutmut's cache, refresh the files from HEAD (mutmut then "
                         "retests only the mutants not yet killed)")
    ap.add_argument("--sample", type=int, default=1, metavar="N",
                    help="test one mutant in N (a stable choice by line text and index); "
                         "the others are counted as skipped")
    args = ap.parse_args()
    path, tests = MODULES[args.module]
    dest = Path(args.dest or f"/tmp/rumpfs-mut-{args.module}")
    if args.results:
        return subprocess.call(["mutmut", "results"], cwd=dest)
    if args.status:
        return status(dest)
    if args.keep and dest.exists():
        # Fresh files (a stopped run leaves its mutant in place), the same
        # cache; no bytecode compiled from some earlier mutant.
        subprocess.run(f"git archive HEAD | tar -x -C {dest}", shell=True, cwd=ROOT, check=True)
        for cache in list(dest.rglob("__pycache__")):
            shutil.rmtree(cache)
    else:
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        subprocess.run(f"git archive HEAD | tar -x -C {dest}", shell=True, cwd=ROOT, check=True)
    options = [t for t in tests if t.startswith(("-", "'"))]
    keep = [t for t in tests if t not in options and (dest / t.split("::")[0]).exists()]
    files = list(dict.fromkeys(t.split("::")[0] for t in keep))
    runner = dest / "mutation-runner.sh"
    # mutmut counts only exit status 1 as a kill: a mutant that breaks the
    # module's import (pytest exits 2, a collection error) is caught as
    # surely, so the plugin makes any failing status 1.  (Not `|| exit 1` in
    # the script: pytest must stay the process mutmut kills on a timeout.)
    (dest / "mutation_runner_plugin.py").write_text(RUNNER_PLUGIN.format(keep=tuple(keep)))
    runner.write_text(f"#!/bin/sh\nexec {PYTEST} -p mutation_runner_plugin --basetemp={dest}.pt "
                      f"{' '.join(options + files)}\n")
    runner.chmod(0o755)
    (dest / "mutmut_config.py").write_text(
        CONFIG.format(scope=SCOPE.get(args.module), sample=args.sample, path=path))
    cmd = ["nice", "-n", "10", "mutmut", "run", "--paths-to-mutate", path,
           "--tests-dir", "tests/", "--runner", str(runner)]
    # Its own process group: mutmut's worker process outlives a killed
    # mutmut and goes on mutating the copy; stop a run with kill -- -PGID.
    proc = subprocess.Popen(cmd, cwd=dest, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
                            start_new_session=True)
    print(" ".join(cmd), f"(stop with: kill -- -{proc.pid})", file=sys.stderr)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
