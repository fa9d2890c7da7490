"""A seeded mutation fuzzer for the archives ``rumpfs pack`` takes as sources.

Build pipelines pack tar and cpio archives they did not write: whatever the
bytes, ``pack`` must either write the image or stop with one line (naming
the archive and member, or the image entry a writer cannot store), never
raise anything else, hang or run out of memory.  Seeds: ustar, GNU (long
names, a sparse member, GNU tar's own) and pax tar archives with every kind
of member, newc and odc cpio archives (GNU cpio's), and the ustar archive
compressed with gzip, zstd, xz and bzip2 (mutated inside or outside).
Mutations are those of :mod:`fuzz_readers` (truncation, bit flips, splices,
inserted and deleted bytes, cpio header fields) plus tar header fields
(numbers in octal, base-256 and garbage; type flags; names and link names
without their NUL), most with the header checksum made right again so
that the reader goes past it.  Each mutant is packed in a forked process
with a time limit and a capped address space; mutants are a pure function
of (kind, seed, index)::

    python tests/fuzz_sources.py --mutants 2000 --seed 1
    python tests/fuzz_sources.py --replay gnu:1:1234
"""

from __future__ import annotations

import argparse
import bz2
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

from fuzz_readers import _cpio_fields, _mutate_bytes  # noqa: E402

from rumpfs import api, compress  # noqa: E402
from rumpfs.errors import RumpfsError  # noqa: E402

#: Address-space cap of the process that packs one mutant.
MEMORY_LIMIT = 1 << 30
#: Seconds one mutant may take.
TIME_LIMIT = 20
BLOCK = 512
#: ustar header fields: name -> (offset, width).
TAR_FIELDS = {"name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8),
              "size": (124, 12), "mtime": (136, 12), "chksum": (148, 8), "typeflag": (156, 1),
              "linkname": (157, 100), "magic": (257, 6), "version": (263, 2),
              "devmajor": (329, 8), "devminor": (337, 8), "prefix": (345, 155)}
NUMBER_FIELDS = ("mode", "uid", "gid", "size", "mtime", "devmajor", "devminor")
TEXT_FIELDS = ("name", "linkname", "prefix", "magic")
TYPEFLAGS = b"01234567LKxgSVMDZ\0"
#: Compressed kinds: the ustar seed compressed with this method, and its suffix.
#: (The methods pack reads sources in: docs/inputs.md.)
COMPRESSED = {"tgz": ("gzip", ".tar.gz"), "tzst": ("zstd", ".tar.zst"), "txz": ("xz", ".tar.xz"),
              "tbz2": ("bzip2", ".tar.bz2")}
KINDS = ("ustar", "gnu", "gnu-tar", "pax", "newc", "odc", *COMPRESSED)


def make_tree(root: str, long_names: bool = True) -> None:
    """Files of several sizes, a sparse one, directories, a symlink, a hard
    link, a fifo, non-ASCII names and (``long_names``) names past ustar's."""
    os.makedirs(os.path.join(root, "d", "e"))
    for name, size in (("empty", 0), ("small", 100), ("d/block", 512), ("d/e/big", 70_000)):
        with open(os.path.join(root, name), "wb") as f:
            f.write(bytes(range(256)) * (size // 256) + bytes(size % 256))
    os.symlink("d/e/big", os.path.join(root, "link"))
    os.link(os.path.join(root, "small"), os.path.join(root, "d", "hard"))
    os.mkfifo(os.path.join(root, "fifo"))
    if long_names:
        long_dir = os.path.join(root, "l" * 90)
        os.mkdir(long_dir)
        with open(os.path.join(long_dir, "n" * 120 + ".txt"), "wb") as f:
            f.write(b"long name\n")
    with open(os.path.join(root, "h\u00e9llo-\u65e5\u672c.txt"), "wb") as f:
        f.write(b"hello\n")
    with open(os.path.join(root, "sparse"), "wb") as f:
        f.seek(200_000)
        f.write(b"end")


def _tar(tree: str, out: str, fmt: int) -> None:
    with tarfile.open(out, "w", format=fmt) as tar:
        tar.add(tree, arcname=".")
        dev = tarfile.TarInfo("./dev/console")
        dev.type, dev.devmajor, dev.devminor, dev.mode = tarfile.CHRTYPE, 5, 1, 0o600
        tar.addfile(dev)


def build_seeds(directory: str) -> dict[str, str]:
    """kind -> the path of its valid archive."""
    tree, short = os.path.join(directory, "tree"), os.path.join(directory, "short")
    make_tree(tree)
    make_tree(short, long_names=False)  # ustar holds no longer names
    seeds = {}
    for kind, fmt in (("ustar", tarfile.USTAR_FORMAT), ("gnu", tarfile.GNU_FORMAT),
                      ("pax", tarfile.PAX_FORMAT)):
        seeds[kind] = os.path.join(directory, kind + ".tar")
        _tar(short if kind == "ustar" else tree, seeds[kind], fmt)
    seeds["gnu-tar"] = os.path.join(directory, "gnu-sparse.tar")
    subprocess.run(["tar", "--format=gnu", "--sparse", "-cf", seeds["gnu-tar"], "-C", tree, "."],
                   check=True)
    names = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    for kind in ("newc", "odc"):
        seeds[kind] = os.path.join(directory, kind + ".cpio")
        with open(seeds[kind], "wb") as f:
            subprocess.run(["cpio", "-o", "-H", kind, "--quiet"], cwd=tree, input=names,
                           stdout=f, check=True)
    with open(seeds["ustar"], "rb") as f:
        plain = f.read()
    for kind, (method, suffix) in COMPRESSED.items():
        seeds[kind] = os.path.join(directory, "ustar" + suffix)
        with open(seeds[kind], "wb") as f:
            f.write(_compress(method, plain))
    return seeds


def _compress(method: str, data: bytes) -> bytes:
    if method == "bzip2":  # read by pack, never written
        return bz2.compress(data)
    comp = compress.compressor(method)
    return comp.compress(data) + comp.flush()


def _decompress(method: str, data: bytes) -> bytes:
    if method == "bzip2":
        return bz2.decompress(data)
    return compress.decompressor(method).decompress(data)


def suffix_of(kind: str) -> str:
    """The file name ending pack knows ``kind``'s mutants by."""
    if kind in COMPRESSED:
        return COMPRESSED[kind][1]
    return ".cpio" if kind in ("newc", "odc") else ".tar"


def tar_headers(data: bytes) -> list[int]:
    """Offsets of the header blocks of a tar archive (extension headers too)."""
    heads, pos = [], 0
    while pos + BLOCK <= len(data) and data[pos:pos + BLOCK].strip(b"\0"):
        heads.append(pos)
        raw = data[pos + 124:pos + 136]
        try:
            size = int(raw.rstrip(b"\0 ") or b"0", 8)
        except ValueError:
            break
        pos += BLOCK + -(-size // BLOCK) * BLOCK
    return heads


def _fix_chksum(buf: bytearray, head: int) -> None:
    block = bytearray(buf[head:head + BLOCK])
    block[148:156] = b" " * 8
    buf[head + 148:head + 156] = b"%06o\0 " % sum(block)


def _set_tar_field(rng: random.Random, buf: bytearray, head: int) -> str:
    name = rng.choice(list(TAR_FIELDS))
    off, width = TAR_FIELDS[name]
    at = head + off
    if name in NUMBER_FIELDS:
        top = (1 << (3 * (width - 1))) - 1
        value = rng.choice([0, 1, 7, 0o777, 0o7777, top, top + 1, 1 << 31, (1 << 32) - 1,
                            1 << 33, 1 << 40, 1 << 63, rng.randrange(1 << 36)])
        form = rng.random()
        if form < 0.5 and value <= top:
            raw = b"%0*o\0" % (width - 1, value)
        elif form < 0.8:  # base-256: a high bit, then big-endian (GNU, star)
            sign = rng.choice((0x80, 0xFF))
            raw = bytes((sign,)) + (value % (1 << (8 * (width - 1)))).to_bytes(width - 1, "big")
        else:
            raw = rng.choice([b" " * width, b"\0" * width, b"9" * width, b"-1".ljust(width, b"\0"),
                              b"0x10".ljust(width, b"\0"), b"\x80" * width])
        buf[at:at + width] = raw[:width]
        what = f"{name}={value} ({'octal' if form < 0.5 else 'base-256' if form < 0.8 else 'junk'})"
    elif name == "typeflag":
        buf[at] = rng.choice(TYPEFLAGS)
        what = f"typeflag={chr(buf[at])!r}"
    elif name in TEXT_FIELDS:
        junk = rng.choice([b"../../x", b"/etc/passwd", b"x" * width, b"\xff\xfe", b"a\0b",
                           b"./", b"..", b""])
        buf[at:at + width] = junk[:width].ljust(width, b"\0")
        what = f"{name}={junk[:20]!r}"
    else:
        buf[at:at + width] = bytes(rng.randrange(256) for _ in range(width))
        what = f"{name} random"
    if rng.random() < 0.9:
        _fix_chksum(buf, head)
    return f"header@{head}: {what}"


def mutant(kind: str, data: bytes, run_seed: int, index: int) -> tuple[bytes, list[str]]:
    """The mutant number ``index`` of ``kind``'s seed: a pure function."""
    rng = random.Random(f"source:{kind}:{run_seed}:{index}")
    if kind in COMPRESSED:
        method = COMPRESSED[kind][0]
        inner = bytearray(_decompress(method, data))
        if rng.random() < 0.7:
            done = _mutate_tar(rng, inner)
            return _compress(method, bytes(inner)), ["inner: " + d for d in done]
        buf = bytearray(data)
        done = _mutate_bytes(rng, buf, [], [])
        return bytes(buf), done
    buf = bytearray(data)
    if kind in ("newc", "odc"):
        done = _mutate_bytes(rng, buf, _cpio_fields(data, 0) if kind == "newc" else [], [])
    else:
        done = _mutate_tar(rng, buf)
    return bytes(buf), done


def _mutate_tar(rng: random.Random, buf: bytearray) -> list[str]:
    heads = tar_headers(bytes(buf))
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        head = rng.choice(heads) if heads else len(buf)
        if head + BLOCK <= len(buf) and rng.random() < 0.6:  # (an earlier cut may have taken it)
            done.append(_set_tar_field(rng, buf, head))
        else:
            done += _mutate_bytes(rng, buf, [], [])
    return done


def pack_mutant(path: str, out: str, fmt: str = "cpio") -> tuple[str, str]:
    """Pack ``path`` into a ``fmt`` image in a forked process: ("ok" |
    "error" | "failure", detail)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        result = "failure:no result"
        try:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
            signal.alarm(TIME_LIMIT)
            api.pack([path], out, format=fmt, stubetc=False, progress=False)
            result = "ok:"
        except RumpfsError as e:
            result = "error:" + str(e)
        except BaseException:
            result = "failure:" + traceback.format_exc()
        os.write(w, result.encode("utf-8", "backslashreplace")[:1 << 15])
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reply = f.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return "failure", "hang (time limit)" if sig == signal.SIGALRM else f"killed by signal {sig}"
    outcome, _, detail = reply.partition(":")
    if outcome == "error" and ("\n" in detail or not detail):
        return "failure", f"error not one line: {detail!r}"
    return outcome, detail


def run(kinds=KINDS, mutants: int = 100, run_seed: int = 0, workdir: str | None = None) -> dict:
    """Pack ``mutants`` mutants of each kind; returns counts and the failures."""
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="rumpfs-fuzz-sources-")
    try:
        seeds = build_seeds(os.path.join(workdir, "seeds"))
        counts = {"ok": 0, "error": 0, "failure": 0}
        failures = []
        for kind in kinds:
            with open(seeds[kind], "rb") as f:
                data = f.read()
            for index in range(mutants):
                blob, done = mutant(kind, data, run_seed, index)
                path = os.path.join(workdir, f"m{index % 10}{suffix_of(kind)}")
                with open(path, "wb") as f:
                    f.write(blob)
                # Mostly cpio (the cheapest writer); every fourth an FFS image,
                # whose writer asks more of the tree (sparse data, link counts).
                fmt = "ffs" if index % 4 == 3 else "cpio"
                outcome, detail = pack_mutant(path, os.path.join(workdir, "out." + fmt), fmt)
                counts[outcome] += 1
                if outcome == "failure":
                    failures.append((f"{kind}:{run_seed}:{index}", done, detail))
        return {"counts": counts, "failures": failures}
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mutants", type=int, default=100, help="mutants per kind (default 100)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--kind", action="append", choices=KINDS, help="kinds (default: all)")
    p.add_argument("--replay", metavar="KIND:SEED:INDEX", help="pack one mutant and say how it went")
    args = p.parse_args(argv)
    if args.replay:
        kind, seed, index = args.replay.split(":")
        with tempfile.TemporaryDirectory() as work:
            seeds = build_seeds(os.path.join(work, "seeds"))
            with open(seeds[kind], "rb") as f:
                blob, done = mutant(kind, f.read(), int(seed), int(index))
            path = os.path.join(work, "mutant" + suffix_of(kind))
            with open(path, "wb") as f:
                f.write(blob)
            print("; ".join(done))
            fmt = "ffs" if int(index) % 4 == 3 else "cpio"
            print(*pack_mutant(path, os.path.join(work, "out." + fmt), fmt))
        return 0
    result = run(args.kind or KINDS, args.mutants, args.seed)
    print(result["counts"])
    for name, done, detail in result["failures"]:
        print(f"FAIL {name}: {'; '.join(done)}\n{detail}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
