"""Where the time of ``rumpfs pack`` goes, phase by phase, in one process.

    python -m bench.profile CORPUS_DIR [--format ffs|ffs2|cpio] [--rounds N] [--cprofile N]

Phases, each as CPU seconds (this process and its waited-for worker
processes) and wall seconds, the
median of ``--rounds`` runs on a warm cache, and per entry:

* ``import``: importing the command line, the API and the format's writer
  (what every ``rumpfs`` process pays before doing anything);
* ``host walk``: the source layers (scandir + lstat + one Node per entry);
* ``policy``: the reproducibility pass over every node;
* ``write``: the format writer, file data included, into a scratch file.

``--cprofile N`` adds the N most expensive functions (own time) of the
write phase under cProfile (which inflates Python-heavy code about 2x).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time


def _clock():
    """CPU of this process and of its waited-for children (writers may use
    worker processes), and wall time."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ru.ru_utime + ru.ru_stime, time.perf_counter()


def _since(start):
    cpu, wall = _clock()
    return cpu - start[0], wall - start[1]


def profile_once(corpus: str, fmt_name: str, scratch: str, prof: cProfile.Profile | None = None) -> dict:
    phases = {}
    t = _clock()
    import rumpfs.cli  # noqa: F401  (what the command line imports)
    from rumpfs import formats
    from rumpfs.output import Copier, ImageSink
    from rumpfs.sources import HostDirectory, Policy, apply_policy
    from rumpfs.tree import Tree
    fmt = formats.get(fmt_name)
    phases["import"] = _since(t)

    # As rumpfs.api.pack does: no collector passes over the growing tree, and
    # the copy workers forked before the tree exists.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        copier = Copier(fd)
        copier.start()
        policy = Policy()
        t = _clock()
        tree = Tree()
        HostDirectory(corpus).apply(tree, policy)
        phases["host walk"] = _since(t)

        t = _clock()
        apply_policy(tree, policy)
        phases["policy"] = _since(t)

        t = _clock()
        if prof:
            prof.enable()
        sink = ImageSink(fd, 0, None)
        sink.use_copier(copier)
        size = fmt.write(tree, sink, formats.WriteOptions(byteorder=sys.byteorder))
        sink.finish(size)
        if prof:
            prof.disable()
        phases["write"] = _since(t)
    finally:
        copier.abort()
        os.close(fd)
        os.unlink(scratch)
        if gc_was_enabled:
            gc.enable()
    phases["_entries"] = tree.count()
    return phases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", metavar="CORPUS_DIR")
    p.add_argument("--format", default="cpio", help="image format (default cpio)")
    p.add_argument("--rounds", type=int, default=3, help="runs (default 3)")
    p.add_argument("--cprofile", type=int, default=0, metavar="N",
                   help="show the N functions with the most own time in the write phase")
    args = p.parse_args(argv)

    results = []
    scratch_dir = os.environ.get("RUMPFS_BENCH_WORK") or tempfile.gettempdir()
    os.makedirs(scratch_dir, exist_ok=True)
    scratch = os.path.join(scratch_dir, f"profile.{os.getpid()}.img")
    for _ in range(args.rounds):
        # The imports are only paid once per process: measure them in the first round.
        results.append(profile_once(args.corpus, args.format, scratch))
    entries = results[0]["_entries"]
    print(f"{args.corpus}: rumpfs {args.format}, {entries} entries, median of {args.rounds} "
          f"(import: first round only)")
    print(f"{'phase':12} {'cpu s':>8} {'wall s':>8} {'cpu us/entry':>13}")
    total_cpu = total_wall = 0.0
    for phase in ("import", "host walk", "policy", "write"):
        runs = results[:1] if phase == "import" else results
        cpu = statistics.median(r[phase][0] for r in runs)
        wall = statistics.median(r[phase][1] for r in runs)
        total_cpu += cpu
        total_wall += wall
        print(f"{phase:12} {cpu:8.3f} {wall:8.3f} {cpu / entries * 1e6:13.2f}")
    print(f"{'total':12} {total_cpu:8.3f} {total_wall:8.3f} {total_cpu / entries * 1e6:13.2f}")
    if args.cprofile:
        prof = cProfile.Profile()
        profile_once(args.corpus, args.format, scratch, prof)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.cprofile)
        text = buf.getvalue()
        print(text[text.find("   ncalls"):].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
