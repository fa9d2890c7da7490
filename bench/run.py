"""Run rumpfs and the reference tools side by side and check the targets of issues 7, 19.6, 21.6, 22.

For every corpus, every tool runs as a subprocess, interleaved (A B C A B C
...) on a warm page cache.  Each run is measured from the outside:

* wall time with ``time.perf_counter`` around spawn and ``wait4``;
* CPU time, user + system, of the whole process tree: ``wait4`` reports
  the child's own usage plus that of every descendant it waited for;
* peak RSS: ``wait4``'s ``ru_maxrss``, the largest single process of the tree;
* output size, apparent (``st_size``) and allocated (``st_blocks * 512``).

A tool that fails is a ``FAIL`` cell with the last line of its stderr; the
run goes on.  makefs sizes images with a heuristic that fails on some
trees: the runner reports that and reruns it with an explicit ``-s`` and
``-o density`` to get a time anyway (cells marked ``*``).

Each command then runs again under ``taskset -c 0`` (one core); cells show
the median with the min-max over the rounds, and flag a row whose slowest
round exceeds MAX_SPREAD times its fastest.

rumpfs runs as a user has it: a copy of the checkout taken at the start is
pip-installed into a fresh venv and run as that venv's ``rumpfs`` script
(``--live``: ``python -m rumpfs`` from the checkout; ``--rumpfs CMD``: CMD).
rumpfs is run only through its CLI, so the writers can change freely.

    python -m bench [--quick] [--scale] [--corpus NAME,...] [--tool GLOB,...] [--reps N]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import fnmatch
import io
import json
import mmap
import os
import platform
import shlex
import shutil
import signal
import site
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from . import corpora

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
KiB = 1 << 10

# -- targets (issue 7) ------------------------------------------------------------------

#: rumpfs FFS wall time over makefs's, and cpio over bsdtar's, on the file-heavy corpora.
MAX_WALL_RATIO = 1.0
#: Throughput on ``large`` relative to copying all file data into one file.
MIN_LARGE_THROUGHPUT = 0.8
#: ``rumpfs wrap`` wall time over objcopy's on the large image.
MAX_WRAP_RATIO = 0.5
#: Peak RSS of ``rumpfs wrap`` whatever the image size, in KiB.
MAX_WRAP_RSS_KIB = 64 * 1024
#: Peak RSS while packing: this base plus ``PACK_RSS_PER_ENTRY_KIB`` per entry, in KiB.
PACK_RSS_BASE_KIB = 60 * 1024
PACK_RSS_PER_ENTRY_KIB = 1
#: "Independent of the bytes": packing ``large`` may take at most this much more than ``etc``.
MAX_RSS_GROWTH_WITH_BYTES_KIB = 16 * 1024
#: Time per file may grow at most this much from the 10k to the 100k corpus.
MAX_SCALING = 1.2

# -- targets of issues 19.6, 21.6 and 22 ----------------------------------------------------------

#: Compressed cpio wall time over bsdtar piped into the standard compressor (22.1).
MAX_COMPRESSED_RATIO = 1.0
#: FFS wall time over makefs's, on one core and on all cores (22.2).
MAX_FFS_ONE_CORE_RATIO = 0.8
MAX_FFS_ALL_CORES_RATIO = 0.6
#: A row whose slowest round exceeds its fastest by more than this is flagged (22.4).
MAX_SPREAD = 1.3
#: Peak RSS of every pack: this base plus this much per entry, in KiB (22.5).
SCALE_RSS_BASE_KIB = 60 * 1024
SCALE_RSS_PER_ENTRY_KIB = 0.5
#: ISO and FAT wall time over the faster reference (19.6).
MAX_ISO_FAT_RATIO = 1.0
#: A tar layer packs at least this fraction of the speed of the same tree as a directory (21.6).
MIN_TAR_SPEED = 0.8
#: The least any Python packer does (one process): list every entry, read
#: every file and write it into one file; shown beside the 19.6 and 22.2 rows.
PY_COPY_FLOOR = "floor:py-copy"
#: The least an FFS packer in Python does (bench/ffsfloor.py); beside the 22.2 rows.
PY_FFS_FLOOR = "floor:py-ffs"


#: GNU time, for the peak RSS of the tool alone (``%M``); without it, wait4's figure.
TIME = shutil.which("time", path="/usr/bin:/bin")


#: Rounds when every tool took less than FAST_RUN_S in the first; one round when all took over SLOW_RUN_S.
FAST_REPS = 7
FAST_RUN_S = 1.0
SLOW_RUN_S = 150.0


def default_work() -> str:
    return os.environ.get("RUMPFS_BENCH_WORK") or "/tmp/rumpfs-bench-work"


# -- measuring one command -----------------------------------------------------------------


@dataclass
class Run:
    ok: bool
    wall: float
    cpu: float
    rss_kib: int
    out_bytes: int | None = None
    out_alloc: int | None = None
    note: str = ""


def measure(argv: list[str], output: str | None, timeout: float, env=None, cwd=None) -> Run:
    """Run ``argv`` once and measure it and its output file (if any): a
    previous output of that name is removed first; run_cell removes this one."""
    if output and os.path.lexists(output):
        os.unlink(output)
    # A child forked from this (large) Python process would report this
    # process's RSS as its own peak; /usr/bin/time is small and forks the tool.
    rss_file = None
    if TIME and os.access(TIME, os.X_OK):
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss.")
        os.close(fd)
        argv = [TIME, "-q", "-f", "%M", "-o", rss_file, *argv]
    with tempfile.TemporaryFile() as errf:
        # Every run starts with no dirty data of earlier runs waiting to be
        # written back: otherwise the kernel's writeback of one tool's
        # hundreds of MiB is charged to whichever tool runs next.
        os.sync()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errf, env=env, cwd=cwd, start_new_session=True)
        timed_out = []

        def kill():
            timed_out.append(True)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            kill()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read()
    rss = ru.ru_maxrss
    if rss_file:
        try:
            with open(rss_file) as f:
                rss = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
        os.unlink(rss_file)
    run = Run(proc.returncode == 0 and not timed_out, wall, ru.ru_utime + ru.ru_stime, rss)
    if timed_out:
        run.note = f"TIMEOUT after {timeout:.0f} s"
    elif not run.ok:
        lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
        run.note = f"rc {proc.returncode}: " + (lines[-1] if lines else "(no stderr)")
    if output and os.path.exists(output):
        st = os.stat(output)
        run.out_bytes, run.out_alloc = st.st_size, st.st_blocks * 512
    elif run.ok and output:
        run.ok, run.note = False, "no output file"
    return run


#: Before a corpus's rounds, memory of this many times its payload is
#: touched (see touch_memory): about what its largest output and a pack's
#: peak take together.
TOUCH_PAYLOADS = 2


def touch_memory(size: int) -> None:
    """Write one byte in each page of ``size`` bytes of fresh memory, then
    free it.  In a VM whose balloon reports free pages to the host
    (virtio-balloon free page reporting, as this machine's Firecracker
    does), the host takes back what the guest freed, and the guest's next
    use of each page faults in the host too.  Without this, the first round
    after other work (the outputs of other corpora deleted, a cache
    dropped) paid for that: an FFS of small1m took 13.8-15 s, 12-15 s of it
    system time, where the next rounds took 9.4-10.5 s."""
    if size < mmap.PAGESIZE:
        return
    with mmap.mmap(-1, size) as m:
        for offset in range(0, size, mmap.PAGESIZE):
            m[offset] = 1


def meminfo(field: str) -> int:
    """A /proc/meminfo field in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def available_memory() -> int:
    return meminfo("MemAvailable")


# -- the tools -------------------------------------------------------------------------------


@dataclass
class Ctx:
    corpus: str
    path: str
    meta: dict
    work: str
    wrap_input: str | None = None
    rumpfs: list[str] = field(default_factory=list)
    #: The interpreter of the Python floor: the one rumpfs runs on.
    python: str = sys.executable
    #: The corpus as a tar archive (the tar-layer rows), when one of them runs.
    tar: str | None = None
    #: The geometry of rumpfs's FAT image of this corpus (``fat_geometry``), for the reference.
    fat: dict | None = None


@dataclass
class Tool:
    name: str
    #: What the tool produces: ffs1, ffs2, cpio, elf, floor.
    group: str
    argv: Callable[[Ctx, str], list[str]]
    suffix: str = ".out"
    is_rumpfs: bool = False
    #: Names of the tools this one's ratios are against (rumpfs rows only).
    refs: tuple = ()
    #: Other argument lists to try when the first fails (makefs's own sizing).
    fallbacks: Callable[[Ctx, str], list[list[str]]] | None = None
    #: Only on corpora where this holds.
    when: Callable[[Ctx], bool] = lambda ctx: True
    #: The corpora this tool runs on (None: all); in --quick, small10k stands for small100k.
    only: tuple | None = None
    #: In --quick, these instead (when the stand-ins would make the smoke run too long).
    only_quick: tuple | None = None
    #: Programs it needs: a missing one makes a FAIL cell naming its Debian package.
    requires: tuple = ()
    #: Why it cannot run on this machine (e.g. a program too old), or None.
    unavailable: Callable[[], str | None] | None = None
    #: Called with the output of its first successful run, before the output is removed.
    after: Callable[[Ctx, str], None] | None = None
    #: How ``bench.verify`` reads the output back (default: the group).
    verify: tuple = ()
    #: Reads the corpus as a tar archive (``Ctx.tar``).
    needs_tar: bool = False


def sh(script: str) -> list[str]:
    return ["bash", "-c", "set -o pipefail; " + script]


def q(s: str) -> str:
    return shlex.quote(s)


def ffs_reader_missing() -> str | None:
    """Why this Python cannot read FFS images back (dissect.ffs, a test
    dependency, missing), or None."""
    import importlib.util
    try:
        if importlib.util.find_spec("dissect.ffs") is not None:
            return None
    except ImportError:  # no "dissect" package at all
        pass
    return f"dissect.ffs is not installed for {sys.executable} (make test-deps installs it)"


def makefs_fallbacks(version: int):
    """``-s SIZE -o density=N`` attempts for when makefs's own estimate fails.

    The size allows every file its fragments, every entry an inode and
    1 KiB (makefs needs about that with 8K/1K blocks), and 25% slack; then
    twice and four times that.  makefs here cannot write images of 2 GiB
    or more, so no attempt is that large.
    """
    def attempts(ctx: Ctx, out: str) -> list[list[str]]:
        m = ctx.meta
        base = (m["payload_bytes"] + m["files"] * KiB + m["dirs"] * 2 * KiB
                + m["symlinks"] * 256 + m["entries"] * KiB)
        result = []
        for factor in (1, 2, 4):
            size = max(4 * MiB, int(base * 1.25 * factor) + 2 * MiB)
            size = (size + MiB - 1) // MiB * MiB
            if size >= 2 << 30:
                break
            density = max(1024, size // (m["entries"] * 2 + 64))
            result.append(makefs_argv(version, ctx, out, ["-s", str(size), "-o", f"density={density}"]))
        return result
    return attempts


def makefs_argv(version: int, ctx: Ctx, out: str, extra=()) -> list[str]:
    opts = ["-o", "version=2"] if version == 2 else []
    return ["makefs", "-t", "ffs", *opts, *extra, out, ctx.path]


#: Debian package of each program a row needs (scripts/apt-test-packages.txt and
#: scripts/apt-bench-packages.txt install them).
PACKAGES = {
    "pigz": "pigz", "zstd": "zstd", "xz": "xz-utils", "lz4": "lz4", "bsdtar": "libarchive-tools",
    "xorriso": "xorriso", "genisoimage": "genisoimage", "mkfs.fat": "dosfstools", "mcopy": "mtools",
    "mkfs.erofs": "erofs-utils", "makefs": "makefs", "cpio": "cpio", "objcopy": "binutils",
    "taskset": "util-linux", "tar": "tar",
}

#: Compressed cpio (issue 22.1): output suffix -> (rumpfs method, level, the reference row,
#: its compressor command line, the decompressor that reads rumpfs's output back).  Levels
#: are the references': pigz and xz default to 6, zstd to 3, and the kernel's build
#: compresses lz4 with ``lz4 -l -9``.  Each reference is ``bsdtar --format newc`` piped into it.
COMPRESSED = {
    "gz": ("gzip", 6, "pigz-6", "pigz -6 -c", "gzip -dc"),
    "zst": ("zstd", 3, "zstd-3-T0", "zstd -3 -T0 -q -c", "zstd -dc"),
    "xz": ("xz", 6, "xz-6-T0", "xz -T0 -6 -c", "xz -dc"),
    "lz4": ("lz4", 9, "lz4-l-9", "lz4 -l -9 -q -c", "lz4 -dc"),
}

#: Where the new rows of issues 19, 21 and 22 run (the corpora those issues name, the
#: real tree, and etc for the fixed cost of the scaling line); small1m only when asked.
ISO_FAT_CORPORA = ("etc", "stdlib", "small10k", "small100k", "debian", "small1m")
#: ISO's: not small1m, whose 101,001 directories an ISO 9660 path table
#: cannot number (rumpfs refuses it in one line), but wide1m.
ISO_CORPORA = ("etc", "stdlib", "small10k", "small100k", "debian")
#: The million files of ISO's scaling line, and the only tools run on it.
WIDE_CORPUS = "wide1m"
WIDE_TOOLS = ("rumpfs-iso",)
COMPRESSED_CORPORA = ("stdlib", "small100k", "debian")
TAR_CORPORA = ("stdlib", "small100k", "debian")
#: In --quick, the corpus that stands for a full one.
QUICK_STANDIN = {"small100k": "small10k", "small10k": "small1k"}


def erofs_tar_missing() -> str | None:
    """mkfs.erofs reads a tar only from erofs-utils 1.7 on (``--tar``)."""
    try:
        proc = subprocess.run(["mkfs.erofs", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None  # ``requires`` names the missing program
    if "--tar" in proc.stdout + proc.stderr:
        return None
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "erofs-utils"],
                             capture_output=True, text=True).stdout.strip() or "?"
    return f"this mkfs.erofs (erofs-utils {version}) has no --tar"


# -- FAT: the reference makes its image at the size and type rumpfs chose ----------------------

#: Fields of the FAT boot sector's BPB (Microsoft FAT specification), little-endian:
#: name -> (offset, struct format).
FAT_BPB = {
    "bytes_per_sector": (11, "<H"),
    "sectors_per_cluster": (13, "<B"),
    "reserved_sectors": (14, "<H"),
    "num_fats": (16, "<B"),
    "root_entries": (17, "<H"),
    "total_sectors16": (19, "<H"),
    "fat_size16": (22, "<H"),
    "total_sectors32": (32, "<I"),
    "fat_size32": (36, "<I"),
}
FAT12_MAX_CLUSTERS = 4084
FAT16_MAX_CLUSTERS = 65524
DIR_ENTRY_BYTES = 32


def fat_geometry(image: str) -> dict:
    """Size, FAT type and cluster size of a FAT image, read from its boot sector."""
    import struct
    with open(image, "rb") as f:
        boot = f.read(512)
    bpb = {k: struct.unpack_from(fmt, boot, off)[0] for k, (off, fmt) in FAT_BPB.items()}
    sectors = bpb["total_sectors16"] or bpb["total_sectors32"]
    fat_size = bpb["fat_size16"] or bpb["fat_size32"]
    root_sectors = -(-bpb["root_entries"] * DIR_ENTRY_BYTES // bpb["bytes_per_sector"])
    data = sectors - bpb["reserved_sectors"] - bpb["num_fats"] * fat_size - root_sectors
    clusters = data // bpb["sectors_per_cluster"]
    fat_type = (32 if bpb["fat_size16"] == 0 else 12 if clusters <= FAT12_MAX_CLUSTERS else 16)
    return {"bytes": os.path.getsize(image), "type": fat_type,
            "sector": bpb["bytes_per_sector"], "cluster_sectors": bpb["sectors_per_cluster"],
            "root_entries": bpb["root_entries"]}


def record_fat_geometry(ctx: Ctx, out: str) -> None:
    ctx.fat = fat_geometry(out)


def fat_estimate(meta: dict) -> dict:
    """A size for mkfs.fat when rumpfs made no image to copy it from: every file and
    directory rounded up to 4 KiB clusters, twice that room for the FATs and slack."""
    cluster = 4096
    data = meta["payload_bytes"] + (meta["files"] + meta["dirs"]) * cluster
    size = (int(data * 1.1) + 4 * MiB) // MiB * MiB
    clusters = size // cluster  # the FAT type follows from the cluster count
    fat_type = 12 if clusters <= FAT12_MAX_CLUSTERS else 16 if clusters <= FAT16_MAX_CLUSTERS else 32
    return {"bytes": size, "type": fat_type, "sector": 512, "cluster_sectors": cluster // 512,
            "root_entries": 0 if fat_type == 32 else 512, "estimated": True}


def mkfs_fat_argv(ctx: Ctx, out: str, geometry: dict | None = None) -> list[str]:
    """``mkfs.fat`` + ``mcopy -s`` at rumpfs's size, FAT type and cluster size."""
    g = geometry or ctx.fat or fat_estimate(ctx.meta)
    kib = -(-g["bytes"] // KiB)
    opts = f"-F {g['type']} -S {g['sector']} -s {g['cluster_sectors']}"
    if g["type"] != 32 and g["root_entries"]:
        opts += f" -r {g['root_entries']}"
    # mcopy: -m keeps the mtimes, -Q stops at the first error (its batch mode, -b, fails
    # here with "Streamcache allocation problem"); MTOOLS_SKIP_CHECK: no geometry complaint.
    return sh(f"shopt -s dotglob nullglob; mkfs.fat -C {opts} {q(out)} {kib} > /dev/null && "
              f"MTOOLS_SKIP_CHECK=1 mcopy -s -m -Q -i {q(out)} {q(ctx.path)}/* ::/")


def mkfs_fat_fallbacks(ctx: Ctx, out: str) -> list[list[str]]:
    """When mkfs.fat refuses rumpfs's size (too small for it: etc), or mcopy cannot fit
    the tree, an estimated size (cells marked ``*``)."""
    return [mkfs_fat_argv(ctx, out, fat_estimate(ctx.meta))]


def tools() -> list[Tool]:
    def rumpfs_pack(fmt, *extra, src=None):
        return lambda ctx, out: [*ctx.rumpfs, "pack", "--no-stubetc", "--no-progress",
                                 "--format", fmt, *extra, src(ctx) if src else ctx.path, "-o", out]

    table = [
        Tool("floor:cat>1file", "floor",
             lambda ctx, out: sh(f"find {q(ctx.path)} -type f -print0 | xargs -0 -r cat > {q(out)}")),
        Tool("floor:py-lstat", "floor",
             lambda ctx, out: [ctx.python, "-m", "bench.walkfloor", ctx.path], suffix=""),
        Tool(PY_COPY_FLOOR, "floor",
             lambda ctx, out: [ctx.python, "-m", "bench.walkfloor", ctx.path, "--copy", out],
             only=("stdlib", "small10k", "small100k", "debian")),
        Tool(PY_FFS_FLOOR, "floor",
             lambda ctx, out: [ctx.python, "-m", "bench.ffsfloor", ctx.path, out], ".img",
             only=("small100k", "debian")),
        Tool("rumpfs-ffs", "ffs1", rumpfs_pack("ffs"), ".img", True, ("makefs-ffs1",)),
        Tool("makefs-ffs1", "ffs1", lambda ctx, out: makefs_argv(1, ctx, out), ".img",
             fallbacks=makefs_fallbacks(1), requires=("makefs",)),
        Tool("rumpfs-ffs2", "ffs2", rumpfs_pack("ffs2"), ".img", True, ("makefs-ffs2",)),
        Tool("makefs-ffs2", "ffs2", lambda ctx, out: makefs_argv(2, ctx, out), ".img",
             fallbacks=makefs_fallbacks(2), requires=("makefs",)),
        Tool("rumpfs-cpio", "cpio", rumpfs_pack("cpio"), ".cpio", True,
             ("bsdtar-newc", "cpio-gnu-newc")),
        Tool("bsdtar-newc", "cpio",
             lambda ctx, out: ["bsdtar", "--format", "newc", "-cf", out, "-C", ctx.path, "."], ".cpio",
             requires=("bsdtar",)),
        Tool("cpio-gnu-newc", "cpio",
             lambda ctx, out: sh(f"cd {q(ctx.path)} && find . -print0 | LC_ALL=C sort -z | "
                                 f"cpio -o -H newc --reproducible --null --quiet > {q(out)}"), ".cpio",
             requires=("cpio",)),
    ]
    # Compressed cpio (issue 22.1) against bsdtar piped into the standard compressor.
    for suffix, (method, level, ref, compressor, decompressor) in COMPRESSED.items():
        program = compressor.split()[0]
        table += [
            Tool(f"rumpfs-cpio-{suffix}", f"cpio.{suffix}",
                 rumpfs_pack("cpio", "--compress", method, "--compress-level", str(level)),
                 f".cpio.{suffix}", True, (ref,), only=COMPRESSED_CORPORA, only_quick=("stdlib",),
                 verify=("cpio", decompressor)),
            Tool(ref, f"cpio.{suffix}",
                 lambda ctx, out, c=compressor: sh(f"bsdtar --format newc -cf - -C {q(ctx.path)} . | "
                                                   f"{c} > {q(out)}"),
                 f".cpio.{suffix}", only=COMPRESSED_CORPORA, only_quick=("stdlib",),
                 requires=("bsdtar", program)),
        ]
    table += [
        # ISO 9660 with Rock Ridge and Joliet (issue 19.6).
        Tool("rumpfs-iso", "iso", rumpfs_pack("iso"), ".iso", True, ("xorriso-iso", "genisoimage-iso"),
             only=ISO_CORPORA),
        Tool("xorriso-iso", "iso",
             lambda ctx, out: ["xorriso", "-as", "mkisofs", "-R", "-J", "-quiet", "-o", out, ctx.path],
             ".iso", only=ISO_CORPORA, requires=("xorriso",)),
        Tool("genisoimage-iso", "iso",
             lambda ctx, out: ["genisoimage", "-R", "-J", "-quiet", "-o", out, ctx.path],
             ".iso", only=ISO_CORPORA, requires=("genisoimage",)),
        # FAT (issue 19.6): the reference gets the size, type and cluster rumpfs chose.
        Tool("rumpfs-fat", "fat", rumpfs_pack("fat", "--fat-skip-special"), ".fat", True,
             ("mkfs.fat+mcopy",), only=ISO_FAT_CORPORA, after=record_fat_geometry),
        Tool("mkfs.fat+mcopy", "fat", mkfs_fat_argv, ".fat", only=ISO_FAT_CORPORA,
             requires=("mkfs.fat", "mcopy"), fallbacks=mkfs_fat_fallbacks),
        # The tar layer (issue 21.6): the same tree from a tar archive.
        Tool("rumpfs-tar-ffs", "ffs1", rumpfs_pack("ffs", src=lambda ctx: ctx.tar), ".img", True,
             ("rumpfs-ffs", "makefs-ffs1", "erofs-tar"), only=TAR_CORPORA, needs_tar=True),
        Tool("rumpfs-tar-cpio", "cpio", rumpfs_pack("cpio", src=lambda ctx: ctx.tar), ".cpio", True,
             ("rumpfs-cpio", "bsdtar-tar2newc"), only=TAR_CORPORA, needs_tar=True),
        Tool("bsdtar-tar2newc", "cpio",
             lambda ctx, out: ["bsdtar", "--format", "newc", "-cf", out, f"@{ctx.tar}"], ".cpio",
             only=TAR_CORPORA, requires=("bsdtar",), needs_tar=True),
        Tool("erofs-tar", "erofs",
             lambda ctx, out: ["mkfs.erofs", "--quiet", "--tar=f", out, ctx.tar], ".img",
             only=TAR_CORPORA, requires=("mkfs.erofs",), unavailable=erofs_tar_missing, needs_tar=True),
        Tool("rumpfs-wrap", "elf",
             lambda ctx, out: [*ctx.rumpfs, "wrap", ctx.wrap_input, "-o", out], ".o", True,
             ("objcopy",), when=lambda ctx: ctx.wrap_input is not None),
        Tool("objcopy", "elf",
             lambda ctx, out: ["objcopy", "-I", "binary", "-O", "elf64-x86-64", "-B", "i386:x86-64",
                               ctx.wrap_input, out], ".o",
             when=lambda ctx: ctx.wrap_input is not None, requires=("objcopy",)),
    ]
    return table


def runs_on(tool: Tool, corpus: str, quick: bool) -> bool:
    """Whether ``tool`` runs on ``corpus`` (its ``only`` list, with --quick's stand-ins)."""
    if corpus == WIDE_CORPUS:
        return tool.name in WIDE_TOOLS
    if quick and tool.only_quick is not None:
        return corpus in tool.only_quick
    if tool.only is None:
        return True
    only = set(tool.only)
    if quick:
        only |= {QUICK_STANDIN[c] for c in tool.only if c in QUICK_STANDIN}
    return corpus in only


def why_unavailable(tool: Tool) -> str | None:
    """Why ``tool`` cannot run here: a missing program (and its package), or ``unavailable``."""
    for program in tool.requires:
        if shutil.which(program) is None:
            return (f"{program} is not installed (Debian package {PACKAGES.get(program, program)}; "
                    f"scripts/apt-bench-packages.txt)")
    return tool.unavailable() if tool.unavailable else None


# -- results ----------------------------------------------------------------------------------


@dataclass
class Cell:
    corpus: str
    tool: Tool
    runs: list = field(default_factory=list)
    failed: Run | None = None
    #: makefs ran with our size (its own estimate failed): the figures are marked ``*``.
    starred: bool = False
    own_estimate_failure: str = ""
    argv: list | None = None
    verify: dict | None = None
    verify_note: str = ""
    #: The same command pinned to one core (``taskset -c 0``).
    runs1: list = field(default_factory=list)
    failed1: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.runs) and self.failed is None

    def _values(self, attr: str, one_core: bool = False) -> list:
        runs = self.runs1 if one_core else self.runs
        return [getattr(r, attr) for r in runs if getattr(r, attr) is not None]

    def median(self, attr: str, one_core: bool = False) -> float | None:
        vals = self._values(attr, one_core)
        return statistics.median(vals) if vals else None

    def least(self, attr: str, one_core: bool = False) -> float | None:
        vals = self._values(attr, one_core)
        return min(vals) if vals else None

    def spread(self, attr: str = "wall", one_core: bool = False) -> tuple | None:
        """(min, max) over the rounds, or None."""
        vals = self._values(attr, one_core)
        return (min(vals), max(vals)) if vals else None

    def flagged(self, one_core: bool = False) -> bool:
        """The slowest round took more than MAX_SPREAD times the fastest (issue 22.4)."""
        sp = self.spread("wall", one_core)
        return sp is not None and len(self._values("wall", one_core)) > 1 and sp[1] > MAX_SPREAD * sp[0]

    @property
    def wall(self):
        return self.median("wall")

    @property
    def cpu(self):
        return self.median("cpu")

    @property
    def wall1(self):
        return self.median("wall", True)

    @property
    def cpu1(self):
        return self.median("cpu", True)

    @property
    def rss_kib(self):
        return max((r.rss_kib for r in self.runs + self.runs1), default=None)

    @property
    def out_bytes(self):
        return self.runs[-1].out_bytes if self.runs else None

    @property
    def out_alloc(self):
        return self.runs[-1].out_alloc if self.runs else None

    @property
    def note(self) -> str:
        notes = []
        if self.failed is not None:
            notes.append(self.failed.note)
        if self.own_estimate_failure and self.tool.group == "fat":
            notes.append(f"at rumpfs's size: {self.own_estimate_failure}; rerun at an estimated size")
        elif self.own_estimate_failure:
            notes.append(f"own size estimate failed ({self.own_estimate_failure}); "
                         f"rerun with {' '.join(self.argv[3:-2])}")
        if self.failed1:
            notes.append(f"one core: {self.failed1}")
        if self.verify_note:
            notes.append(self.verify_note)
        return "; ".join(notes)


def fmt_num(x, digits=3) -> str:
    if x is None:
        return ""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def fmt_spread(cell: Cell, one_core: bool = False) -> str:
    """Median, the min-max over the rounds, and ``!`` when the row is flagged."""
    med = cell.median("wall", one_core)
    if med is None:
        return ""
    lo, hi = cell.spread("wall", one_core)
    text = fmt_num(med)
    if len(cell._values("wall", one_core)) > 1:
        text += f" ({fmt_num(lo)}-{fmt_num(hi)})"
    return text + ("!" if cell.flagged(one_core) else "")


def fmt_ratio(x) -> str:
    return "" if x is None else f"{x:.2f}x"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# -- the runner -------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        #: Every command (or those of --one-core GLOBS) runs a second time pinned to one core.
        self.one_core = not args.no_one_core and shutil.which("taskset") is not None
        self.one_core_globs = (args.one_core or "*").split(",")
        self.work = os.path.abspath(args.work or default_work())
        self.timeout = args.timeout or (180 if self.quick else 600)
        self.cells: dict[tuple[str, str], Cell] = {}
        #: Why FFS images are not read back (set by run()), or None.
        self.ffs_reader_missing: str | None = None
        self.metas: dict[str, dict] = {}
        self.corpus_names: list[str] = []
        os.makedirs(self.work, exist_ok=True)
        self.code = REPO if args.live else self.snapshot()
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.rev = self.revision()  # of what the snapshot holds: read now, not after the install
        self.env = dict(os.environ)
        self.env.pop("SOURCE_DATE_EPOCH", None)
        self.venv = None
        self.python = sys.executable
        if args.rumpfs or args.live:
            self.rumpfs = shlex.split(args.rumpfs) if args.rumpfs else [sys.executable, "-m", "rumpfs"]
            self.env["PYTHONPATH"] = self.code + (os.pathsep + self.env["PYTHONPATH"]
                                                  if self.env.get("PYTHONPATH") else "")
        else:
            # The installed rumpfs and nothing else: no copy of it on the path.
            self.env.pop("PYTHONPATH", None)
            self.venv = self.install()
            self.rumpfs = [os.path.join(self.venv, "bin", "rumpfs")]
            self.python = os.path.join(self.venv, "bin", "python")
        self.load_before = os.getloadavg()

    def snapshot(self) -> str:
        """A copy of rumpfs (and bench) taken now, so that edits made to the
        checkout while the benchmark runs do not change what it measures."""
        dest = os.path.join(self.work, "code")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in ("rumpfs", "bench", "stubetc", "bin"):
            if os.path.isdir(os.path.join(REPO, name)):
                shutil.copytree(os.path.join(REPO, name), os.path.join(dest, name), ignore=ignore)
        # What pip install needs besides the packages (README.md: the metadata's readme).
        for name in ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md"):
            if os.path.isfile(os.path.join(REPO, name)):
                shutil.copy2(os.path.join(REPO, name), os.path.join(dest, name))
        return dest

    def install(self) -> str:
        """A fresh venv with the snapshot pip-installed (not editable), as a user has
        rumpfs.  The runner's own interpreter may read .pth files that are not
        rumpfs's (an editable finder, a sandbox's certifi hook) and cost every
        Python start tens of ms; a venv does not read them.  And a bare copy of
        the sources has no .pyc: pip compiles them.  Made anew every run, so it
        holds this run's snapshot and nothing else."""
        venv = os.path.join(self.work, "venv")
        if os.path.exists(venv):
            shutil.rmtree(venv)
        python = os.path.join(venv, "bin", "python")
        self.log(f"installing the snapshot into a fresh venv, {venv}")
        start = time.perf_counter()
        for what, argv in (("creating the venv", [sys.executable, "-m", "venv", venv]),
                           ("pip install of the snapshot",
                            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                             self.code])):
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=self.env,
                                      cwd=self.work, timeout=900)
            except subprocess.TimeoutExpired:
                raise SystemExit(f"bench: {what} timed out ({' '.join(argv)})") from None
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
                raise SystemExit(f"bench: {what} failed (rc {proc.returncode}): {' '.join(argv)}\n"
                                 f"{tail}\nbench: --live runs the checkout instead, without installing it")
        self.check_venv(venv, python)
        self.log(f"installed in {time.perf_counter() - start:.1f} s")
        return venv

    def check_venv(self, venv: str, python: str) -> None:
        """Refuse to measure if the venv's Python imports rumpfs from elsewhere or
        sees the runner's site-packages (whose .pth files would run at start)."""
        probe = "import json, sys, rumpfs; print(json.dumps([rumpfs.__file__, sys.path]))"
        proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=self.env,
                              cwd=self.work, timeout=60)
        if proc.returncode != 0:
            raise SystemExit(f"bench: the venv cannot import rumpfs: {proc.stderr.strip()}")
        where, path = json.loads(proc.stdout)
        problems = []
        if not os.path.realpath(where).startswith(os.path.realpath(venv) + os.sep):
            problems.append(f"rumpfs comes from {where}")
        runner_sites = {os.path.realpath(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}
        leaked = [p for p in path if p and os.path.realpath(p) in runner_sites]
        if leaked:
            problems.append(f"the runner's site-packages are on its path: {', '.join(leaked)}")
        if problems:
            raise SystemExit(f"bench: the venv {venv} is not a clean install: {'; '.join(problems)}")

    def cleanup(self) -> None:
        """The venv is scratch, like the images: the next run makes a new one."""
        if self.venv and os.path.exists(self.venv):
            shutil.rmtree(self.venv)

    def how_rumpfs_ran(self) -> str:
        if self.args.rumpfs:
            return f"--rumpfs `{self.args.rumpfs}` (checkout at {self.rev})"
        if self.venv:
            return f"{self.rev} (snapshot, installed in a venv: {self.rumpfs[0]})"
        return f"{self.rev} (the checkout, --live: {sys.executable} -m rumpfs)"

    def revision(self) -> str:
        try:
            head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "rumpfs"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
        return (head or "?") + (" + uncommitted changes" if dirty else "")

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def selected_tools(self) -> list[Tool]:
        return select_tools(self.args.tool, self.args.scale)

    def reps_for(self, corpus: str) -> int:
        if corpus == "large" and self.args.large_reps:
            return self.args.large_reps
        return self.args.reps or (1 if self.quick else 3)

    def run(self) -> None:
        os.makedirs(self.work, exist_ok=True)
        self.ffs_reader_missing = None if self.args.no_verify else ffs_reader_missing()
        if self.ffs_reader_missing:
            self.log(f"FFS images will not be read back: {self.ffs_reader_missing}")
        names = corpus_names(self.args)
        for name in names:
            if name not in corpora.GENERATORS:
                raise SystemExit(f"bench: {name}: unknown corpus (known: {', '.join(corpora.GENERATORS)})")
        self.corpus_names = names
        for name in names:
            path, meta = corpora.ensure(name, self.args.corpora, self.quick, log=self.log)
            self.metas[name] = meta
            self.run_corpus(name, path, meta)

    def run_corpus(self, name: str, path: str, meta: dict) -> None:
        ctx = Ctx(name, path, meta, self.work, rumpfs=self.rumpfs, python=self.python)
        selected = self.selected_tools()
        if any(t.group == "elf" for t in selected):
            ctx.wrap_input = self.make_wrap_input(ctx)
        active = [t for t in selected if runs_on(t, name, self.quick) and t.when(ctx)]
        cells = {t.name: Cell(name, t) for t in active}
        for t in active:
            self.cells[(name, t.name)] = cells[t.name]
            why = why_unavailable(t)
            if why:
                cells[t.name].failed = Run(False, 0.0, 0.0, 0, note=why)
        if any(t.needs_tar and cells[t.name].failed is None for t in active):
            self.log(f"{name}: making {path}.tar")
            ctx.tar = corpora.ensure_tar(name, path)
        reps = self.reps_for(name)
        self.warm_up(ctx)
        try:
            rep = 0
            while rep < reps:
                self.log(f"{name}: round {rep + 1}/{reps}")
                for t in active:
                    cell = cells[t.name]
                    if cell.failed is not None:
                        continue
                    self.run_cell(cell, ctx, first=(rep == 0))
                rep += 1
                if rep == 1 and self.args.reps is None and not self.quick:
                    walls = [c.wall for c in cells.values() if c.wall is not None]
                    if walls and min(walls) > SLOW_RUN_S:
                        reps = 1  # one slow round is measurement enough
                    elif walls and max(walls) < FAST_RUN_S and name != "large":
                        reps = FAST_REPS  # short runs are noisy: take more of them
        finally:
            if ctx.wrap_input and os.path.exists(ctx.wrap_input):
                os.unlink(ctx.wrap_input)

    def warm_up(self, ctx: Ctx) -> None:
        """Read every file once, untimed: the page cache is warm for every tool, and
        the atime updates of a first read (relatime, fixed old atimes) are paid here."""
        tar = f"; cat {q(ctx.tar)} > /dev/null" if ctx.tar else ""  # the tar rows' input, too
        r = measure(sh(f"find {q(ctx.path)} -type f -print0 | xargs -0 -r cat > /dev/null{tar}"), None,
                    self.timeout)
        if not r.ok:
            self.log(f"{ctx.corpus}: warm-up failed: {r.note}")
        touch_memory(min(TOUCH_PAYLOADS * ctx.meta.get("payload_bytes", 0), available_memory() // 2))

    def make_wrap_input(self, ctx: Ctx) -> str | None:
        """The image both ELF wrappers wrap: a newc archive of the corpus made by bsdtar,
        so the wrap comparison does not depend on rumpfs's own writers."""
        out = os.path.join(self.work, f"{ctx.corpus}.wrap-input.cpio")
        r = measure(["bsdtar", "--format", "newc", "-cf", out, "-C", ctx.path, "."], None,
                    self.timeout)
        if not r.ok:
            self.log(f"{ctx.corpus}: cannot make the wrap input: {r.note}")
            return None
        return out

    def run_cell(self, cell: Cell, ctx: Ctx, first: bool) -> None:
        t = cell.tool
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in t.name)
        out = os.path.join(self.work, f"{ctx.corpus}.{safe}{t.suffix}")
        output = out if t.suffix else None
        if cell.argv is None:
            cell.argv = t.argv(ctx, out)
        run = measure(cell.argv, output, self.timeout, env=self.env, cwd=self.code)
        if not run.ok and not cell.runs and t.fallbacks and not cell.starred:
            first_failure = run.note
            for argv in t.fallbacks(ctx, out):
                run = measure(argv, output, self.timeout, env=self.env, cwd=self.code)
                if run.ok:
                    cell.argv, cell.starred = argv, True
                    cell.own_estimate_failure = first_failure
                    break
            else:
                run.note = first_failure + ("" if run.note == first_failure or not t.fallbacks(ctx, out)
                                            else f"; with -s: {run.note}")
        status = "ok" if run.ok else "FAIL"
        self.log(f"  {t.name:16} {status:4} wall {run.wall:8.3f} s  cpu {run.cpu:8.3f} s  "
                 f"rss {run.rss_kib / 1024:7.1f} MiB  out {fmt_num(run.out_bytes)} {run.note}")
        if not run.ok:
            cell.failed = run
        else:
            cell.runs.append(run)
            if len(cell.runs) == 1 and t.after and output:
                t.after(ctx, out)
            if first and t.is_rumpfs and output:
                self.verify(cell, ctx, out)
        if output and os.path.exists(output):
            os.unlink(output)
        if (run.ok and self.one_core and not cell.failed1
                and any(fnmatch.fnmatchcase(t.name, g) for g in self.one_core_globs)):
            # The same command on one core: what a user of a one-CPU VM or a
            # loaded build machine sees, and how much the parallel work helps.
            run1 = measure(["taskset", "-c", "0", *cell.argv], output, self.timeout,
                           env=self.env, cwd=self.code)
            self.log(f"  {t.name:16} {'ok' if run1.ok else 'FAIL':4} wall {run1.wall:8.3f} s  "
                     f"cpu {run1.cpu:8.3f} s  (one core) {run1.note}")
            if run1.ok:
                cell.runs1.append(run1)
            else:
                cell.failed1 = run1.note
            if output and os.path.exists(output):
                os.unlink(output)

    def verify(self, cell: Cell, ctx: Ctx, out: str) -> None:
        """Read rumpfs's output back with an independent reader (count of entries)."""
        group = cell.tool.group
        meta = ctx.meta
        if self.args.no_verify:
            return
        if group in ("ffs1", "ffs2"):
            if meta["entries"] > 20000:
                cell.verify_note = "not read back (too many entries for dissect.ffs in a benchmark)"
                return
            if self.ffs_reader_missing:
                cell.verify_note = f"not read back ({self.ffs_reader_missing})"
                return
            argv = [sys.executable, "-m", "bench.verify", "ffs", out]
            if ctx.corpus == "large":
                argv.append("/sparse.bin")
        elif cell.tool.verify:
            argv = [sys.executable, "-m", "bench.verify", cell.tool.verify[0], out, *cell.tool.verify[1:]]
        elif group == "cpio":
            argv = [sys.executable, "-m", "bench.verify", "cpio", out]
        elif group in ("iso", "fat"):
            argv = [sys.executable, "-m", "bench.verify", group, out]
        elif group == "elf":
            argv = [sys.executable, "-m", "bench.verify", "elf", out]
        else:
            return
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=self.code,
                                  timeout=self.timeout)
        except subprocess.TimeoutExpired:
            cell.verify_note = "read-back timed out"
            return
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            cell.verify_note = "read-back FAILED: " + (lines[-1] if lines else f"rc {proc.returncode}")
            return
        cell.verify = json.loads(proc.stdout)
        seen = cell.verify.get("entries")
        if seen is not None:
            expected = meta["entries"]
            if group == "fat":
                expected -= meta["symlinks"]  # --fat-skip-special leaves them out
            tag = "read back" if seen == expected else "read back MISMATCH"
            who = {"ffs1": "dissect.ffs", "ffs2": "dissect.ffs", "iso": "isoinfo -R -f",
                   "fat": "fsck.fat -n and mdir -/ -b"}.get(group, "bsdtar")
            cell.verify_note = f"{tag}: {who} sees {seen} of {expected} entries"

    # -- reporting ----------------------------------------------------------------------------

    def cell(self, corpus, tool) -> Cell | None:
        return self.cells.get((corpus, tool))

    def machine(self) -> dict:
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        total = meminfo("MemTotal")
        mem = f"{total / (1 << 30):.1f} GiB" if total else "?"

        def version(argv):
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                return (p.stdout or p.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.SubprocessError):
                return "?"

        return {
            "date": self.started.strftime("%Y-%m-%d %H:%M UTC"),
            "rumpfs": self.how_rumpfs_ran(),
            "cpu": f"{os.cpu_count()} x {cpu}",
            "memory": mem,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "makefs": version(["dpkg-query", "-W", "-f", "${Version}", "makefs"]),
            "cpio": version(["cpio", "--version"]),
            "bsdtar": version(["bsdtar", "--version"]),
            "objcopy": version(["objcopy", "--version"]),
            "other references (Debian)": ", ".join(
                f"{pkg} {version(['dpkg-query', '-W', '-f', '${Version}', pkg])}"
                for pkg in ("pigz", "zstd", "xz-utils", "lz4", "xorriso", "genisoimage", "dosfstools",
                            "mtools", "erofs-utils")),
            "load average": f"{self.load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after",
        }

    def rows(self):
        for corpus in self.corpus_names:
            for t in tools():
                c = self.cell(corpus, t.name)
                if c is not None:
                    yield c

    def ref_ratios(self, c: Cell) -> list[tuple[str, dict]]:
        out = []
        for ref in c.tool.refs:
            r = self.cell(c.corpus, ref)
            if r is None:
                continue
            both = c.ok and r.ok
            out.append((ref, {
                "wall": ratio(c.wall, r.wall) if both else None,
                "wall1": ratio(c.wall1, r.wall1) if both else None,
                "cpu": ratio(c.cpu, r.cpu) if both else None,
                "rss": ratio(c.rss_kib, r.rss_kib) if both else None,
                "size": ratio(c.out_bytes, r.out_bytes) if both else None,
            }))
        return out

    def tsv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n")
        w.writerow(["corpus", "tool", "status", "runs", "wall_s", "wall_min_s", "wall_max_s", "cpu_s",
                    "wall1_s", "wall1_min_s", "wall1_max_s", "cpu1_s", "flagged", "peak_rss_kib",
                    "out_bytes", "out_alloc_bytes", "payload_bytes", "entries", "ref", "wall_ratio",
                    "wall1_ratio", "cpu_ratio", "rss_ratio", "size_ratio", "note"])

        def num(x):
            return "" if x is None else f"{x:.4f}"

        for c in self.rows():
            m = self.metas[c.corpus]
            status = "ok*" if c.ok and c.starred else "ok" if c.ok else "FAIL"
            sp, sp1 = (c.spread() or (None, None)), (c.spread("wall", True) or (None, None))
            flagged = ",".join(k for k, f in (("all", c.flagged()), ("one", c.flagged(True))) if f)
            base = [c.corpus, c.tool.name, status, len(c.runs),
                    num(c.wall), num(sp[0]), num(sp[1]), num(c.cpu),
                    num(c.wall1), num(sp1[0]), num(sp1[1]), num(c.cpu1), flagged,
                    c.rss_kib if c.ok else "", c.out_bytes if c.ok and c.out_bytes is not None else "",
                    c.out_alloc if c.ok and c.out_alloc is not None else "",
                    m["payload_bytes"], m["entries"]]
            refs = self.ref_ratios(c) or [("", {})]
            for ref, rr in refs:
                w.writerow(base + [ref] + [("" if rr.get(k) is None else f"{rr[k]:.3f}")
                                           for k in ("wall", "wall1", "cpu", "rss", "size")] + [c.note])
        return buf.getvalue()

    def markdown(self, targets) -> str:
        out = []
        mach = self.machine()
        out.append(f"## rumpfs benchmark{' (quick)' if self.quick else ''}, {mach['date']}\n")
        out.append("| machine | |\n|---|---|")
        for k, v in mach.items():
            out.append(f"| {k} | {v} |")
        out.append("")
        one = ("; `1 core`: the same command under `taskset -c 0`" if self.one_core
               else "; one-core runs were off (--no-one-core)")
        out.append("Median of the runs (interleaved, warm cache), with the fastest and slowest round in "
                   f"brackets; `!`: the slowest round took more than {MAX_SPREAD}x the fastest{one}. "
                   "Peak RSS is the largest process, max over the runs. `*`: makefs with our "
                   "`-s`/`density` because its own estimate failed (mkfs.fat: a size we estimated). "
                   "Ratios are rumpfs / reference.\n")
        for corpus in self.corpus_names:
            for note in self.metas[corpus].get("fallbacks", ()):
                out.append(f"* {corpus}: {note}")
        if any(self.metas[c].get("fallbacks") for c in self.corpus_names):
            out.append("")
        out.extend(self.summary())
        for corpus in self.corpus_names:
            m = self.metas[corpus]
            out.append(f"### {corpus}: {m['entries']:,} entries, {m['files']:,} files, "
                       f"{m['payload_bytes'] / MiB:,.1f} MiB payload\n")
            out.append("| tool | runs | wall s | cpu s | 1 core: wall s | 1 core: cpu s | peak RSS MiB | "
                       "out MiB | alloc MiB | out/payload | vs reference: wall, 1 core, cpu, size |")
            out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            for t in tools():
                c = self.cell(corpus, t.name)
                if c is None:
                    continue
                star = "*" if c.starred else ""
                if not c.ok:
                    out.append(f"| {t.name} | {len(c.runs)} | FAIL | | | | | | | | {c.note} |")
                    continue
                vs = "; ".join(
                    f"{ref}: {fmt_ratio(rr['wall'])}, {fmt_ratio(rr['wall1'])}, {fmt_ratio(rr['cpu'])}, "
                    f"{fmt_ratio(rr['size'])}"
                    if rr["wall"] is not None else f"{ref}: FAIL"
                    for ref, rr in self.ref_ratios(c))
                extra = [x for x in (vs, c.note) if x]
                size = lambda b: "" if b is None else f"{b / MiB:,.2f}"
                out.append(
                    f"| {t.name} | {len(c.runs)} | {fmt_spread(c)}{star} | {fmt_num(c.cpu)}{star} | "
                    f"{fmt_spread(c, True)} | {fmt_num(c.cpu1)} | "
                    f"{c.rss_kib / 1024:.1f}{star} | {size(c.out_bytes)}{star} | {size(c.out_alloc)} | "
                    f"{fmt_num(ratio(c.out_bytes, m['payload_bytes']))} | {'; '.join(extra)} |")
            out.append("")
        scaling = self.scaling()
        if scaling:
            out.extend(scaling)
        out.append("### Targets\n")
        out.append(f"TARGETS of issues 7, 19.6, 21.6 and 22: {mach['date']}, commit {self.rev}; "
                   f"machine: nproc {os.cpu_count()}, {mach['cpu'].split(' x ', 1)[-1]}, "
                   f"kernel {mach['kernel']}.\n")
        if self.quick:
            out.append("Quick run: small corpora and one round, so the fixed start-up of a Python "
                       "process dominates and the verdicts are indicative only.\n")
        out.append("| target | result | figures |")
        out.append("|---|---|---|")
        for name, held, figures in targets:
            verdict = {True: "held", False: "NOT held", None: "n/a"}[held]
            out.append(f"| {name} | {verdict} | {figures} |")
        out.append("")
        return "\n".join(out)

    def summary(self) -> list[str]:
        """One line per rumpfs row and reference: wall ratio (one-core ratio) per corpus."""
        out = ["### Summary: rumpfs / reference, wall time (one core); image size\n",
               "| rumpfs vs | " + " | ".join(self.corpus_names) + " |",
               "|---|" + "---:|" * len(self.corpus_names)]
        for t in tools():
            for ref in t.refs:
                cells = []
                for corpus in self.corpus_names:
                    a, b = self.cell(corpus, t.name), self.cell(corpus, ref)
                    if a is None or b is None:
                        cells.append("")
                    elif not a.ok:
                        cells.append("FAIL")
                    elif not b.ok:
                        cells.append(f"{a.wall:.3g} s; ref FAIL")
                    else:
                        star = "*" if b.starred else ""
                        size = f"; {a.out_bytes / b.out_bytes:.2f}{star}" if t.group != "elf" else ""
                        one = f" ({fmt_ratio(ratio(a.wall1, b.wall1))})" if a.wall1 and b.wall1 else ""
                        cells.append(f"{a.wall / b.wall:.2f}{one}{size}")
                if any(cells):
                    out.append(f"| {t.name} vs {ref} | " + " | ".join(cells) + " |")
        out.append("")
        return out

    def scale_series(self, tool: str | None = None) -> list[str]:
        """The corpora of one shape this run has, smallest first (small1k ... small1m);
        for ``tool`` in WIDE_TOOLS, wide1m is its million."""
        series = [c for c in ("small1k", "small10k", "small100k", "small1m") if c in self.metas]
        if tool in WIDE_TOOLS and WIDE_CORPUS in self.metas:
            series = [c for c in series if c != "small1m"] + [WIDE_CORPUS]
        return series

    def scaling(self) -> list[str]:
        """Time per entry (beyond each tool's fixed cost on etc) and peak RSS against the
        limit, for every pack at each size of the small corpora (issue 22.5)."""
        series = self.scale_series()
        if WIDE_CORPUS in self.metas and "small1m" not in series:
            series.append(WIDE_CORPUS)
        if len(series) < 2:
            return []
        out = [f"### Scaling: wall us per entry beyond the fixed cost (etc's fastest run); "
               f"peak RSS MiB of limit {SCALE_RSS_BASE_KIB // 1024} MiB + {SCALE_RSS_PER_ENTRY_KIB} KiB "
               "per entry\n",
               "| tool | " + " | ".join(series) + f" | {series[-1]} / {series[0]} |",
               "|---|" + "---:|" * (len(series) + 1)]
        for t in tools():
            if t.group in ("floor", "elf"):
                continue
            # A tool whose million is wide1m has it in the small1m column.
            wide = t.name in WIDE_TOOLS and WIDE_CORPUS in self.metas
            columns = [WIDE_CORPUS if wide and c == "small1m" else c for c in series]
            cells = [self.cell(c, t.name) for c in columns]
            if sum(1 for c in cells if c is not None) < 2:
                continue
            row, per = [], []
            for head, corpus, c in zip(series, columns, cells):
                if c is None:
                    row.append("")
                elif not c.ok:
                    row.append("FAIL")
                else:
                    n = self.metas[corpus]["entries"]
                    us = self.per_entry_one(t.name, c, n)
                    per.append(us)
                    limit = SCALE_RSS_BASE_KIB + SCALE_RSS_PER_ENTRY_KIB * n
                    over = "!" if c.rss_kib > limit else ""
                    row.append(f"{us:.1f} us; {c.rss_kib / 1024:.0f}{over} of {limit / 1024:.0f} MiB"
                               + (f" ({corpus})" if corpus != head else ""))
            growth = fmt_ratio(per[-1] / per[0]) if len(per) > 1 and per[0] > 0 else ""
            out.append(f"| {t.name} | " + " | ".join(row) + f" | {growth} |")
        out.append("")
        return out

    def fixed_cost(self, tool: str, attr: str = "wall") -> float | None:
        """What ``tool`` takes whatever the tree (interpreter start, imports,
        teardown): its least ``attr`` on the tiny etc corpus; None without
        an etc run.

        The least of the etc runs, not their median: noise only ever adds
        to a run, and a fixed cost that is too high is taken off the 10k
        corpus's few hundred milliseconds ten times more than off the 100k
        corpus's, which reads as a tool that slows down with size."""
        fixed = self.cell("etc", tool)
        return fixed.least(attr) if fixed is not None and fixed.ok else None

    def per_entry_one(self, tool: str, c: Cell, n: int) -> float:
        return (c.wall - (self.fixed_cost(tool) or 0.0)) / n * 1e6

    # -- targets ------------------------------------------------------------------------------

    def targets(self) -> list[tuple[str, bool | None, str]]:
        res = []
        have = set(self.corpus_names)
        small_big = "small100k" if "small100k" in have else "small10k"  # the latter in --quick
        small_small = "small10k" if small_big == "small100k" else "small1k"
        heavy = [c for c in ("stdlib", small_big) if c in have]

        def wall_target(title, mine, ref):
            figures, held, held_cpu = [], True, True
            for corpus in heavy:
                a, b = self.cell(corpus, mine), self.cell(corpus, ref)
                if a is None or b is None:
                    continue
                if not a.ok:
                    held = held_cpu = False
                    figures.append(f"{corpus}: {mine} FAIL")
                    continue
                if not b.ok:
                    figures.append(f"{corpus}: {ref} FAIL")
                    continue
                r = a.wall / b.wall
                held &= r <= MAX_WALL_RATIO
                held_cpu &= a.cpu / b.cpu <= MAX_WALL_RATIO
                figures.append(f"{corpus}: {a.wall:.3g} s vs {b.wall:.3g} s = {r:.2f}x "
                               f"(cpu {fmt_ratio(ratio(a.cpu, b.cpu))})")
            if figures:
                # Wall time is the target; on a shared machine CPU time is the steadier witness.
                figures.append(f"on cpu time: {'HELD' if held_cpu else 'NOT HELD'}")
            res.append((title, held if figures else None, "; ".join(figures)))

        for mine, ref in (("rumpfs-ffs", "makefs-ffs1"), ("rumpfs-ffs2", "makefs-ffs2")):
            wall_target(f"FFS: {mine} wall <= {MAX_WALL_RATIO}x {ref} on stdlib and {small_big}", mine, ref)
        for mine, ref in (("rumpfs-ffs", "makefs-ffs1"), ("rumpfs-ffs2", "makefs-ffs2")):
            figures, held, fails = [], True, []
            for corpus in self.corpus_names:
                a, b = self.cell(corpus, mine), self.cell(corpus, ref)
                if a is None or b is None:
                    continue
                if not b.ok or b.starred:
                    fails.append(corpus)
                    ok = a.ok
                    held &= ok
                    figures.append(f"{corpus}: makefs {'FAIL' if not b.ok else 'own estimate failed'}, "
                                   f"rumpfs {'ok' if ok else 'FAIL'}")
                    continue
                if not a.ok:
                    held = False
                    figures.append(f"{corpus}: rumpfs FAIL")
                    continue
                r = a.out_bytes / b.out_bytes
                held &= r <= 1.0
                figures.append(f"{corpus}: {r:.2f}x")
            res.append((f"FFS: {mine} image size <= {ref}'s where makefs succeeds; success where it fails",
                        held if figures else None, "; ".join(figures)))
        wall_target(f"cpio: rumpfs-cpio wall <= {MAX_WALL_RATIO}x bsdtar on stdlib and {small_big}",
                    "rumpfs-cpio", "bsdtar-newc")

        # large: throughput against the copy floor, and sparseness.
        floor = self.cell("large", "floor:cat>1file")
        payload = self.metas.get("large", {}).get("payload_bytes")
        for mine in ("rumpfs-ffs", "rumpfs-ffs2", "rumpfs-cpio"):
            a = self.cell("large", mine)
            if a is None or floor is None:
                continue
            if not a.ok or not floor.ok:
                res.append((f"large: {mine} throughput >= {MIN_LARGE_THROUGHPUT}x the copy floor",
                            False if not a.ok else None, f"{mine} {'FAIL' if not a.ok else 'ok'}, "
                                                         f"floor {'ok' if floor.ok else 'FAIL'}"))
                continue
            r = floor.wall / a.wall
            res.append((f"large: {mine} throughput >= {MIN_LARGE_THROUGHPUT}x the copy floor",
                        r >= MIN_LARGE_THROUGHPUT,
                        f"{payload / a.wall / 1e6:.0f} MB/s vs floor {payload / floor.wall / 1e6:.0f} MB/s "
                        f"= {r:.2f}x (cpu {a.cpu:.2f} s vs {floor.cpu:.2f} s)"))
        for mine in ("rumpfs-ffs", "rumpfs-ffs2"):
            a = self.cell("large", mine)
            if a is None:
                continue
            if not a.ok:
                res.append((f"large: sparse file stays sparse in {mine}", False, "rumpfs FAIL"))
                continue
            v = a.verify or {}
            sparse_alloc = v.get("sparse_allocated")
            spath = os.path.join(corpora.corpus_root(self.args.corpora, self.quick), "large", "sparse.bin")
            host_alloc = os.stat(spath).st_blocks * 512 if os.path.exists(spath) else None
            if sparse_alloc is None or host_alloc is None:
                res.append((f"large: sparse file stays sparse in {mine}", None,
                            f"not read back ({a.verify_note or 'no dissect.ffs result'})"))
                continue
            # Allowed: the data extents rounded to whole blocks, plus indirect blocks.
            held = sparse_alloc <= host_alloc * 2 + 512 * KiB
            res.append((f"large: sparse file stays sparse in {mine}", held,
                        f"dissect.ffs: sparse.bin ({v.get('sparse_size', 0) / MiB:.0f} MiB) has "
                        f"{sparse_alloc / KiB:.0f} KiB allocated; on the host {host_alloc / KiB:.0f} KiB; "
                        f"image allocated {a.out_alloc / MiB:.0f} MiB of {a.out_bytes / MiB:.0f} MiB"))

        # ELF wrap.
        a, b = self.cell("large", "rumpfs-wrap"), self.cell("large", "objcopy")
        if a is not None and b is not None:
            if a.ok and b.ok:
                r = a.wall / b.wall
                res.append((f"ELF wrap: rumpfs wrap wall <= {MAX_WRAP_RATIO}x objcopy on the large image",
                            r <= MAX_WRAP_RATIO, f"{a.wall:.3g} s vs {b.wall:.3g} s = {r:.2f}x"))
            else:
                res.append((f"ELF wrap: rumpfs wrap wall <= {MAX_WRAP_RATIO}x objcopy on the large image",
                            False if not a.ok else None,
                            f"rumpfs-wrap {'ok' if a.ok else 'FAIL'}, objcopy {'ok' if b.ok else 'FAIL'}"))
        wraps = [self.cell(c, "rumpfs-wrap") for c in self.corpus_names]
        wraps = [w for w in wraps if w is not None]
        if wraps:
            held = all(w.ok and w.rss_kib <= MAX_WRAP_RSS_KIB for w in wraps)
            figures = ", ".join(f"{w.corpus} {w.rss_kib / 1024:.1f} MiB" if w.ok else f"{w.corpus} FAIL"
                                for w in wraps)
            res.append((f"ELF wrap: peak RSS <= {MAX_WRAP_RSS_KIB // 1024} MiB whatever the image size",
                        held, figures))

        # Memory while packing.
        packs = [c for c in self.rows() if c.tool.is_rumpfs and c.tool.group in ("ffs1", "ffs2", "cpio")]
        if packs:
            held, figures = True, []
            for c in packs:
                if not c.ok:
                    continue
                limit = PACK_RSS_BASE_KIB + PACK_RSS_PER_ENTRY_KIB * self.metas[c.corpus]["entries"]
                held &= c.rss_kib <= limit
                if c.rss_kib > limit or c.corpus in ("large", small_big, "etc"):
                    figures.append(f"{c.corpus}/{c.tool.name} {c.rss_kib / 1024:.1f} MiB "
                                   f"(limit {limit / 1024:.0f})")
            # Independent of the bytes: the 2 GiB corpus costs what the tiny one does.
            for mine in ("rumpfs-ffs", "rumpfs-ffs2", "rumpfs-cpio"):
                big, tiny = self.cell("large", mine), self.cell("etc", mine)
                if big is not None and tiny is not None and big.ok and tiny.ok:
                    grew = big.rss_kib - tiny.rss_kib
                    held &= grew <= MAX_RSS_GROWTH_WITH_BYTES_KIB
                    figures.append(f"{mine} large - etc = {grew / 1024:+.1f} MiB")
            res.append((f"memory: pack peak RSS <= {PACK_RSS_BASE_KIB // 1024} MiB + "
                        f"{PACK_RSS_PER_ENTRY_KIB} KiB per entry, independent of the bytes "
                        f"(large within {MAX_RSS_GROWTH_WITH_BYTES_KIB // 1024} MiB of etc)",
                        held if any(c.ok for c in packs) else None, ", ".join(figures)))

        # Scaling from the 10k to the 100k corpus (1k to 10k in --quick).
        for mine in ("rumpfs-ffs", "rumpfs-ffs2", "rumpfs-cpio"):
            a, b = self.cell(small_small, mine), self.cell(small_big, mine)
            if a is None or b is None:
                continue
            title = f"scaling: {mine} time per file {small_small} -> {small_big} within {MAX_SCALING}x"
            if not (a.ok and b.ok):
                res.append((title, False, "rumpfs FAIL"))
                continue
            na, nb = self.metas[small_small]["entries"], self.metas[small_big]["entries"]
            pa, pb, fixed_wall, cpu = self.per_entry(mine, a, b, na, nb)
            r = pb / pa if pa > 0 else float("inf")
            figures = (f"{pa:.1f} -> {pb:.1f} us/entry = {r:.2f}x beyond the fixed "
                       f"{fixed_wall:.3f} s (etc's fastest run; cpu {cpu[0]:.1f} -> {cpu[1]:.1f} us/entry; "
                       f"raw wall {a.wall / na * 1e6:.1f} -> {b.wall / nb * 1e6:.1f})")
            # The same measure for the reference tool, as context: it tells the
            # machine's own growth (page cache, memory) from rumpfs's.
            for ref in b.tool.refs[:1]:
                ra, rb = self.cell(small_small, ref), self.cell(small_big, ref)
                if ra is not None and rb is not None and ra.ok and rb.ok:
                    qa, qb, _, _ = self.per_entry(ref, ra, rb, na, nb)
                    if qa > 0:
                        figures += f"; {ref} on the same corpora: {qb / qa:.2f}x"
            res.append((title, r <= MAX_SCALING, figures))
        res = [(f"#7 {title}", held, figures) for title, held, figures in res]
        return res + self.targets_22() + self.targets_19() + self.targets_21()


    def standin(self, corpus: str) -> str:
        return QUICK_STANDIN.get(corpus, corpus) if self.quick else corpus

    def ratio_target(self, title: str, pairs, corpora_: tuple, limit: float, one_core: bool = False,
                     faster_of: bool = False, floors: tuple = (), beyond_fixed: bool = False):
        """One target: rumpfs row / reference row <= ``limit`` on each corpus.

        ``pairs`` is [(mine, ref), ...] checked together; with ``faster_of`` the
        reference of each corpus is the faster of the refs given.  Wall time on
        all cores, or under taskset -c 0 with ``one_core``.  Each of ``floors``
        (floor rows: what a packer in Python spends at the least, in one
        process) is shown beside, its time against the reference's; with
        ``beyond_fixed``, so is the ratio of the two once each tool's fixed
        cost is taken off (:meth:`_beyond_fixed_figure`)."""
        figures, verdicts = [], []
        wall = (lambda c: c.wall1) if one_core else (lambda c: c.wall)
        for corpus in dict.fromkeys(self.standin(c) for c in corpora_):
            for mine, refs in pairs:
                refs = refs if isinstance(refs, tuple) else (refs,)
                a = self.cell(corpus, mine)
                bs = [b for b in (self.cell(corpus, r) for r in refs) if b is not None]
                if a is None or not bs:
                    continue
                if not a.ok:
                    verdicts.append(False)
                    figures.append(f"{corpus}: {mine} FAIL")
                    continue
                ok_refs = [b for b in bs if b.ok]
                if not ok_refs:
                    figures.append(f"{corpus}: {'/'.join(refs)} FAIL, not judged")
                    continue
                timed = [b for b in ok_refs if wall(b) is not None]
                if wall(a) is None or not timed:
                    figures.append(f"{corpus}: no one-core runs (--one-core / --no-one-core), not judged")
                    continue
                b = min(timed, key=wall) if faster_of else timed[0]
                r = wall(a) / wall(b)
                verdicts.append(r <= limit)
                figures.append(f"{corpus}: {mine} {wall(a):.3g} s vs {b.tool.name} {wall(b):.3g} s = {r:.2f}x"
                               + (f" (cpu {fmt_ratio(ratio(a.cpu, b.cpu))})" if not one_core else "")
                               + "".join(self._floor_figure(corpus, f, wall, wall(b)) for f in floors)
                               + (self._beyond_fixed_figure(a, b) if beyond_fixed else ""))
        held = False if False in verdicts else True if verdicts else None
        return (title, held, "; ".join(figures) or "not run")

    def _beyond_fixed_figure(self, a, b) -> str:
        """Row ``a`` against row ``b`` (all cores) once each tool's fixed cost,
        its fastest run on etc (start-up, imports, teardown: what it takes on
        16 entries), is taken off both; shown, not judged."""
        fixed_a, fixed_b = self.fixed_cost(a.tool.name), self.fixed_cost(b.tool.name)
        if a.corpus == "etc" or fixed_a is None or fixed_b is None or b.wall <= fixed_b:
            return ""
        return (f" [beyond the fixed cost ({a.tool.name} {fixed_a:.3g} s, {b.tool.name} "
                f"{fixed_b:.3g} s on etc): {(a.wall - fixed_a) / (b.wall - fixed_b):.2f}x]")

    def targets_22(self) -> list:
        res = []
        for suffix, (_, _, ref, compressor, _) in COMPRESSED.items():
            res.append(self.ratio_target(
                f"#22.1 compressed: rumpfs-cpio-{suffix} wall <= {MAX_COMPRESSED_RATIO}x "
                f"bsdtar --format newc piped into `{compressor}` ({ref}) on stdlib and small100k",
                [(f"rumpfs-cpio-{suffix}", ref)], ("stdlib", "small100k"), MAX_COMPRESSED_RATIO))
        for mine, ref in (("rumpfs-ffs", "makefs-ffs1"), ("rumpfs-ffs2", "makefs-ffs2")):
            res.append(self.ratio_target(
                f"#22.2 FFS one core: {mine} wall <= {MAX_FFS_ONE_CORE_RATIO}x {ref} under taskset -c 0 "
                "on small100k and debian", [(mine, ref)], ("small100k", "debian"),
                MAX_FFS_ONE_CORE_RATIO, one_core=True, floors=(PY_COPY_FLOOR, PY_FFS_FLOOR)))
            res.append(self.ratio_target(
                f"#22.2 FFS all cores ({os.cpu_count()}): {mine} wall <= {MAX_FFS_ALL_CORES_RATIO}x {ref} "
                "on small100k and debian", [(mine, ref)], ("small100k", "debian"), MAX_FFS_ALL_CORES_RATIO))
        # 22.4: the spread of every row; rumpfs's rows are judged, the
        # reference tools' jitter is reported beside them.
        cells = [c for c in self.rows() if c.ok]

        def flagged(of_rumpfs: bool) -> list:
            return [f"{c.corpus}/{c.tool.name}{' (1 core)' if one else ''} "
                    f"{fmt_num(c.spread('wall', one)[0])}-{fmt_num(c.spread('wall', one)[1])} s"
                    for c in cells if c.tool.is_rumpfs == of_rumpfs
                    for one in (False, True) if c.flagged(one)]

        ours, theirs = flagged(True), flagged(False)
        multi = [c for c in cells if len(c.runs) > 1 and c.tool.is_rumpfs]
        note = (f"{len(ours)} flagged: " + ", ".join(ours) if ours
                else f"{len(multi)} rumpfs rows of several rounds, none flagged" if multi
                else "one round only")
        if theirs:
            note += f"; reference rows flagged (not judged): {', '.join(theirs)}"
        res.append((f"#22.4 spread: no rumpfs row's slowest round over {MAX_SPREAD}x its fastest",
                    (not ours) if multi else None, note))
        # 22.5: time per entry flat across the small corpora, and memory per entry.
        if len(self.scale_series()) >= 2:
            for t in tools():
                if not t.is_rumpfs or t.group in ("elf", "floor"):
                    continue
                cells = [(c, self.cell(c, t.name)) for c in self.scale_series(t.name)]
                cells = [(c, x) for c, x in cells if x is not None]
                if len(cells) < 2:
                    continue
                title = (f"#22.5 scaling: {t.name} time per entry {cells[0][0]} -> {cells[-1][0]} "
                         f"within {MAX_SCALING}x")
                if not all(x.ok for _, x in cells):
                    res.append((title, False, ", ".join(f"{c} FAIL" for c, x in cells if not x.ok)))
                    continue
                per = [(c, self.per_entry_one(t.name, x, self.metas[c]["entries"])) for c, x in cells]
                growth = max(us for _, us in per[1:]) / per[0][1] if per[0][1] > 0 else float("inf")
                fig = " -> ".join(f"{us:.1f}" for _, us in per) + f" us/entry = {growth:.2f}x"
                for ref in t.refs[:1]:
                    rc = [(c, self.cell(c, ref)) for c, _ in cells]
                    if all(x is not None and x.ok for _, x in rc):
                        rper = [self.per_entry_one(ref, x, self.metas[c]["entries"]) for c, x in rc]
                        if rper[0] > 0:
                            fig += (f"; {ref}: " + " -> ".join(f"{us:.1f}" for us in rper)
                                    + f" = {max(rper[1:]) / rper[0]:.2f}x")
                    elif any(x is not None and not x.ok for _, x in rc):
                        fig += f"; {ref} FAIL on " + ", ".join(c for c, x in rc if x is not None and not x.ok)
                res.append((title, growth <= MAX_SCALING, fig))
        packs = [c for c in self.rows() if c.ok and c.tool.group not in ("elf", "floor")]
        if packs:
            def limit(c):
                return SCALE_RSS_BASE_KIB + SCALE_RSS_PER_ENTRY_KIB * self.metas[c.corpus]["entries"]
            mine = [c for c in packs if c.tool.is_rumpfs]
            over = [c for c in mine if c.rss_kib > limit(c)]
            worst = max(mine, key=lambda c: c.rss_kib / limit(c), default=None)
            figs = [f"{c.corpus}/{c.tool.name} {c.rss_kib / 1024:.1f} of {limit(c) / 1024:.0f} MiB"
                    for c in (over or ([worst] if worst else []))]
            refs_over = [f"{c.corpus}/{c.tool.name} {c.rss_kib / 1024:.1f} of {limit(c) / 1024:.0f} MiB"
                         for c in packs if not c.tool.is_rumpfs and c.rss_kib > limit(c)]
            text = ("over: " if over else "highest: ") + ", ".join(figs)
            text += "; references over it: " + (", ".join(refs_over) if refs_over else "none")
            res.append((f"#22.5 memory: every pack's peak RSS <= {SCALE_RSS_BASE_KIB // 1024} MiB + "
                        f"{SCALE_RSS_PER_ENTRY_KIB} KiB per entry", (not over) if mine else None, text))
        return res

    def _floor_figure(self, corpus: str, floor: str, wall, ref_wall: float) -> str:
        f = self.cell(corpus, floor)
        if f is None or not f.ok or wall(f) is None:
            return ""
        return f" [{floor} {wall(f):.3g} s = {wall(f) / ref_wall:.2f}x]"

    def targets_19(self) -> list:
        corp = ("stdlib", "small10k", "small100k")
        res = [self.ratio_target(
            f"#19.6 ISO: rumpfs-iso wall <= {MAX_ISO_FAT_RATIO}x the faster of xorriso and genisoimage "
            "on stdlib, small10k and small100k",
            [("rumpfs-iso", ("xorriso-iso", "genisoimage-iso"))], corp, MAX_ISO_FAT_RATIO, faster_of=True,
            floors=(PY_COPY_FLOOR,), beyond_fixed=True)]
        figures, held, seen = [], True, False
        for corpus in dict.fromkeys(self.standin(c) for c in corp):
            a = self.cell(corpus, "rumpfs-iso")
            for ref in ("xorriso-iso", "genisoimage-iso"):
                b = self.cell(corpus, ref)
                if a is None or b is None:
                    continue
                seen = True
                if not a.ok or not b.ok:
                    held &= a.ok
                    figures.append(f"{corpus}: {'rumpfs-iso' if not a.ok else ref} FAIL")
                    continue
                r = a.out_bytes / b.out_bytes
                held &= r <= 1.0
                figures.append(f"{corpus}: {a.out_bytes / MiB:.1f} MiB vs {ref} {b.out_bytes / MiB:.1f} MiB "
                               f"= {r:.3f}x")
        res.append(("#19.6 ISO: rumpfs-iso image no larger than xorriso's and genisoimage's",
                    held if seen else None, "; ".join(figures) or "not run"))
        res.append(self.ratio_target(
            f"#19.6 FAT: rumpfs-fat wall <= {MAX_ISO_FAT_RATIO}x mkfs.fat + mcopy -s on stdlib, small10k "
            "and small100k", [("rumpfs-fat", "mkfs.fat+mcopy")], corp, MAX_ISO_FAT_RATIO,
            floors=(PY_COPY_FLOOR,), beyond_fixed=True))
        figures, held, seen = [], True, False
        for corpus in dict.fromkeys(self.standin(c) for c in corp):
            a, b = self.cell(corpus, "rumpfs-fat"), self.cell(corpus, "mkfs.fat+mcopy")
            if a is None or b is None:
                continue
            seen = True
            if not a.ok:
                held = False
                figures.append(f"{corpus}: rumpfs-fat FAIL")
                continue
            # The reference is made at rumpfs's size: where mcopy fits the tree in
            # it, the sizes are equal; where it cannot, rumpfs's image is smaller.
            figures.append(f"{corpus}: {a.out_bytes / MiB:.1f} MiB, "
                           + ("mcopy fits the tree in the same size" if b.ok and not b.starred
                              else f"mkfs.fat+mcopy: {b.note or 'FAIL'}"))
        res.append(("#19.6 FAT: rumpfs-fat image no larger (the reference is made at rumpfs's size, type "
                    "and cluster)", held if seen else None, "; ".join(figures) or "not run"))
        return res

    def targets_21(self) -> list:
        res = []
        for mine, ref in (("rumpfs-tar-ffs", "rumpfs-ffs"), ("rumpfs-tar-cpio", "rumpfs-cpio")):
            # Speed >= MIN_TAR_SPEED of the directory's: wall(tar) <= wall(dir) / MIN_TAR_SPEED.
            title, held, fig = self.ratio_target(
                f"#21.6 tar layer: {mine} at >= {MIN_TAR_SPEED}x the speed of {ref} from the directory "
                "on stdlib and small100k", [(mine, ref)], ("stdlib", "small100k"), 1 / MIN_TAR_SPEED)
            res.append((title, held, fig + (f" (time limit {1 / MIN_TAR_SPEED:.2f}x)" if held is not None
                                            else "")))
        return res

    def per_entry(self, tool: str, a, b, na: int, nb: int):
        """Wall us per entry on two corpora beyond the fixed cost
        (:meth:`fixed_cost`), the fixed wall, and the cpu us per entry the
        same way."""
        fixed_wall = self.fixed_cost(tool) or 0.0
        fixed_cpu = self.fixed_cost(tool, "cpu") or 0.0
        return ((a.wall - fixed_wall) / na * 1e6, (b.wall - fixed_wall) / nb * 1e6, fixed_wall,
                ((a.cpu - fixed_cpu) / na * 1e6, (b.cpu - fixed_cpu) / nb * 1e6))


DOCS_MARKER = "## Latest results"


def update_docs(path: str, md: str) -> None:
    """Replace what follows ``## Latest results`` in ``path`` with this run's tables."""
    with open(path) as f:
        text = f.read()
    head = text.split(DOCS_MARKER)[0].rstrip("\n")
    body = "\n".join("#" + line if line.startswith("##") else line for line in md.splitlines())
    with open(path, "w") as f:
        f.write(f"{head}\n\n{DOCS_MARKER}\n\n{body.strip()}\n")


#: The tools of the scaling section (--scale): each format and its reference.
SCALE_TOOLS = ("rumpfs-ffs", "makefs-ffs1", "rumpfs-ffs2", "makefs-ffs2", "rumpfs-cpio", "bsdtar-newc",
               "rumpfs-iso", "rumpfs-fat")


def select_tools(patterns: str | None, scale: bool = False) -> list[Tool]:
    """The tools whose names match one of the comma-separated globs (all by default;
    with --scale and no globs, SCALE_TOOLS)."""
    if patterns:
        pats = patterns.split(",")
    elif scale:
        pats = list(SCALE_TOOLS)
    else:
        pats = ["*"]
    return [t for t in tools() if any(fnmatch.fnmatchcase(t.name, p) for p in pats)]


def corpus_names(args) -> list[str]:
    if args.corpus:
        return args.corpus.split(",")
    if args.scale:
        return ["etc", "small1k", "small10k"] if args.quick else list(corpora.SCALE)
    return list(corpora.QUICK if args.quick else corpora.FULL)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="corpora: " + ", ".join(corpora.GENERATORS) + f" (default: {', '.join(corpora.FULL)}; "
               f"--quick: {', '.join(corpora.QUICK)}; --scale: {', '.join(corpora.SCALE)})\n"
               "tools: " + ", ".join(t.name for t in tools()) + "\n"
               "example: python -m bench --corpus stdlib,small100k --tool 'rumpfs-cpio-*,pigz*,zstd*'")
    p.add_argument("--quick", action="store_true", help="small corpora, one round: a smoke run")
    p.add_argument("--corpus", metavar="NAME,...",
                   help="corpora to run (default: all but small1m and wide1m, which are opt-in)")
    p.add_argument("--tool", metavar="GLOB,...", help="tools to run, by name glob (default: all)")
    p.add_argument("--scale", action="store_true",
                   help="the scaling section (issue 22.5): etc, small10k, small100k and small1m "
                        "(1,000,000 files, about 2 GiB, generated once) with each format and makefs, "
                        "and wide1m (the same files, 100 per directory) for ISO, which cannot hold "
                        "small1m's directories; three rounds each, as every corpus (one round "
                        "of a million files measures the page cache as much as the tool)")
    p.add_argument("--one-core", metavar="GLOB,...",
                   help="run only these tools a second time under taskset -c 0 (default: every tool)")
    p.add_argument("--no-one-core", action="store_true",
                   help="do not run any command a second time under taskset -c 0 (halves the run)")
    p.add_argument("--reps", type=int, help="rounds per corpus (default 3, --quick 1)")
    p.add_argument("--large-reps", type=int, help="rounds for the large corpus")
    p.add_argument("--timeout", type=float, help="seconds per command (default 600, --quick 180)")
    p.add_argument("--corpora", metavar="DIR",
                   help="corpus root (default $RUMPFS_CORPORA or /tmp/rumpfs-corpora)")
    p.add_argument("--work", metavar="DIR", help="scratch images (default $RUMPFS_BENCH_WORK or "
                                                 "/tmp/rumpfs-bench-work)")
    p.add_argument("--out", metavar="DIR", help="where results.md and results.tsv go (default: the work dir)")
    p.add_argument("--rumpfs", metavar="CMD", help="how to run rumpfs (default: the snapshot, "
                                                   "pip-installed in a fresh venv in the work dir)")
    p.add_argument("--no-verify", action="store_true", help="do not read rumpfs outputs back")
    p.add_argument("--live", action="store_true",
                   help="run rumpfs from the checkout itself, as this python -m rumpfs "
                        "(default: a copy taken at the start, installed in a fresh venv)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--docs", metavar="FILE", help="also put the tables under '## Latest results' "
                                                  "in FILE (docs/benchmark.md)")
    args = p.parse_args(argv)

    bench = Bench(args)
    try:
        bench.run()
    except KeyboardInterrupt:
        print("bench: interrupted; partial results follow", file=sys.stderr)
    finally:
        bench.cleanup()
    targets = bench.targets()
    md = bench.markdown(targets)
    tsv = bench.tsv()
    outdir = os.path.abspath(args.out or bench.work)
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(outdir, "results.tsv"), "w") as f:
        f.write(tsv)
    if args.docs:
        update_docs(args.docs, md)
    print(md)
    print("\n```tsv\n" + tsv + "```")
    for name, held, figures in targets:
        verdict = {True: "held", False: "NOT held", None: "n/a"}[held]
        print(f"{verdict:8}  {name}: {figures}")
    print(f"\nresults: {os.path.join(outdir, 'results.md')} and results.tsv", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
