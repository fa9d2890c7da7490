"""Deterministic benchmark corpora, generated outside the repository.

Every corpus is built from fixed seeds with fixed modes and times
(2024-01-01 00:00 UTC), so two machines benchmark the same bytes:

``etc``        about 15 small /etc-style files.
``stdlib``     this interpreter's standard library, without site-packages
               and ``__pycache__``: a real-world tree.
``small100k``  100,000 files of 0-4 KiB in a 3-level fan-out
               (``dNN/sNN/fN``: 100 ``sNN`` per ``dNN``, 10 files per leaf);
               ``small10k`` and ``small1k`` are its first 10% and 1%.
``large``      about 2 GiB: 1 GiB random, 512 MiB of written zeros, a
               512 MiB sparse file with four 1 MiB extents, a small text.
``deep``       a 200-level directory chain, 5,000 symlinks of five kinds,
               1,000 extra hard-link names.
``debian``     a real tree: a fixed list of Debian packages at pinned
               versions (``DEBIAN_PACKAGES``), fetched with ``apt-get
               download`` into a cache and unpacked with ``dpkg-deb -x``;
               a pinned version the archive no longer has is replaced by
               its candidate, and the corpus's JSON says so.
``small1m``    1,000,000 files, the same shape as small100k (opt-in: only
               with ``--corpus small1m`` or ``--scale``).
``wide1m``     1,000,000 files of the same sizes, 100 per leaf directory:
               10,101 directories, which an ISO 9660 path table can number
               (small1m's 101,001 are more than its 65,535); ISO's million
               in ``--scale``.

``NAME.tar`` beside a corpus (``ensure_tar``) is the same tree as a GNU tar
archive, the input of the tar-layer rows.

``--quick`` corpora are smaller versions under ``<root>/quick``.  A corpus
is generated into ``NAME.tmp`` and renamed when complete; ``NAME.json``
beside it records its counts and its generator version, so a corpus is
rebuilt only when the generator changed.

    python -m bench.corpora [--quick] [--root DIR] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import sysconfig

#: Bump when a generator changes what it writes.
VERSION = 1
#: Every file, directory and symlink gets this mtime/atime: 2024-01-01 UTC.
FIXED_TIME = 1704067200
SEED = 20240101
MiB = 1 << 20
GiB = 1 << 30
CHUNK = 16 * MiB


def default_root() -> str:
    return os.environ.get("RUMPFS_CORPORA") or "/tmp/rumpfs-corpora"


# -- helpers ---------------------------------------------------------------------


def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _fix_times(top: str) -> None:
    """Fixed times everywhere, symlinks included, directories last."""
    times = (FIXED_TIME, FIXED_TIME)
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), times, follow_symlinks=False)
        os.utime(dirpath, times)


def scan(top: str) -> dict:
    """Counts of a generated corpus (what the targets are per-file and per-byte of)."""
    names = dirs = symlinks = files = 0
    payload = allocated = 0
    seen = set()
    for dirpath, dirnames, filenames in os.walk(top):
        dirs += 1
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            st = os.lstat(os.path.join(dirpath, name))
            names += 1
            if stat.S_ISLNK(st.st_mode):
                symlinks += 1
            elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                files += 1
                payload += st.st_size
                allocated += st.st_blocks * 512
    return {"entries": names + dirs, "files": files, "dirs": dirs, "symlinks": symlinks,
            "hardlink_names": names - files - symlinks, "payload_bytes": payload,
            "payload_allocated": allocated}


# -- generators --------------------------------------------------------------------


ETC_FILES = {
    "hostname": b"rumpfs-bench\n",
    "hosts": b"127.0.0.1\tlocalhost\n::1\t\tlocalhost\n10.0.2.15\trumpfs-bench\n",
    "resolv.conf": b"nameserver 10.0.2.3\nsearch example.org\n",
    "shells": b"/bin/sh\n/bin/ksh\n/rescue/sh\n",
    "motd": b"Welcome to a rumpfs benchmark image.\n",
    "fstab": b"/dev/ld0a / ffs ro 1 1\nkernfs /kern kernfs rw\nptyfs /dev/pts ptyfs rw\n",
    "group": b"wheel:*:0:root\ndaemon:*:1:daemon\nnogroup:*:39:\nnobody:*:39:\n",
    "passwd": b"root:*:0:0:Charlie &:/root:/bin/sh\n"
              b"daemon:*:1:1:The devil himself:/:/sbin/nologin\n"
              b"nobody:*:32767:39:Unprivileged user:/nonexistent:/sbin/nologin\n",
    "master.passwd": b"root:*:0:0::0:0:Charlie &:/root:/bin/sh\n"
                     b"daemon:*:1:1::0:0:The devil himself:/:/sbin/nologin\n"
                     b"nobody:*:32767:39::0:0:Unprivileged user:/nonexistent:/sbin/nologin\n",
    "nsswitch.conf": b"group: files\nhosts: files dns\npasswd: files\n",
    "rc.conf": b"rc_configured=YES\nhostname=rumpfs-bench\nsshd=NO\n",
    "ttys": b"console\t\"/usr/libexec/getty default\"\tvt100\ton secure\n",
    "profile": b"export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nexport PS1='$ '\n",
    "inetd.conf": b"# nothing enabled\n",
}


def gen_etc(dest: str, quick: bool) -> None:
    os.mkdir(dest)
    for name, data in ETC_FILES.items():
        _write(os.path.join(dest, name), data, 0o600 if name == "master.passwd" else 0o644)
    # An /etc/services of about 12 KiB, the largest file of a small /etc.
    rng = random.Random(SEED)
    lines, size = [], 0
    port = 1
    while size < 12 * 1024:
        port += rng.randrange(1, 40)
        line = f"svc{port:05d}\t\t{port}/tcp\t\t# generated service {port}\n"
        lines.append(line)
        size += len(line)
    _write(os.path.join(dest, "services"), "".join(lines).encode())


def stdlib_source() -> str:
    return sysconfig.get_paths()["stdlib"]


#: Subdirectories the quick stdlib keeps (plus the top-level modules).
QUICK_STDLIB_DIRS = ("json", "email", "asyncio", "xml", "importlib")


def gen_stdlib(dest: str, quick: bool) -> None:
    src = stdlib_source()
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        dirnames[:] = sorted(d for d in dirnames
                             if d not in ("site-packages", "__pycache__", "dist-packages"))
        if quick and rel == ".":
            dirnames[:] = [d for d in dirnames if d in QUICK_STDLIB_DIRS]
        target = dest if rel == "." else os.path.join(dest, rel)
        os.makedirs(target, exist_ok=True)
        os.chmod(target, 0o755)
        for name in sorted(filenames):
            s = os.path.join(dirpath, name)
            d = os.path.join(target, name)
            st = os.lstat(s)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISREG(st.st_mode):
                shutil.copyfile(s, d)
                os.chmod(d, 0o755 if st.st_mode & 0o111 else 0o644)


def _text_blob(rng: random.Random) -> bytes:
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(2, 10)))
             for _ in range(500)]
    out = bytearray()
    while len(out) < 64 * 1024:
        line = b" ".join(rng.choice(words) for _ in range(rng.randrange(3, 14)))
        out += line + b"\n"
    return bytes(out)


def gen_small(dest: str, nfiles: int, per_leaf: int = 10) -> None:
    """``nfiles`` files of 0-4096 bytes: ``dNN/sNN/fN.{txt,bin}``, ``per_leaf``
    per leaf (100 leaves per ``dNN``).

    One generator walks the files in a fixed order, so a smaller corpus is a
    prefix of a larger one (small10k is the first tenth of small100k).
    """
    rng = random.Random(SEED)
    text = _text_blob(rng)
    os.mkdir(dest)
    index = 0
    for top in range(-(-nfiles // (100 * per_leaf))):
        tdir = os.path.join(dest, f"d{top:02d}")
        os.mkdir(tdir)
        for sub in range(100):
            sdir = os.path.join(tdir, f"s{sub:02d}")
            os.mkdir(sdir)
            for f in range(per_leaf):
                if index >= nfiles:
                    break
                size = rng.randrange(0, 4097)
                if index % 2 == 0:
                    off = rng.randrange(0, len(text) - 4096)
                    _write(os.path.join(sdir, f"f{f}.txt"), text[off:off + size])
                else:
                    _write(os.path.join(sdir, f"f{f}.bin"), rng.randbytes(size))
                index += 1


def gen_large(dest: str, quick: bool) -> None:
    """Random data, written zeros, a sparse file with a few extents, a text file."""
    scale = 16 if quick else 1
    rng = random.Random(SEED)
    os.mkdir(dest)
    with open(os.path.join(dest, "random.bin"), "wb") as f:
        for _ in range(GiB // scale // CHUNK):
            f.write(rng.randbytes(CHUNK))
    zeros = bytes(CHUNK)
    with open(os.path.join(dest, "zeros.bin"), "wb") as f:
        for _ in range(GiB // 2 // scale // CHUNK):
            f.write(zeros)
    sparse_size = GiB // 2 // scale
    with open(os.path.join(dest, "sparse.bin"), "wb") as f:
        f.truncate(sparse_size)
        extent = MiB // scale
        for off in (0, sparse_size // 5, sparse_size * 3 // 5, sparse_size - extent):
            f.seek(off)
            f.write(rng.randbytes(extent))
    _write(os.path.join(dest, "README.txt"),
           b"large corpus: random.bin (random), zeros.bin (written zeros),\n"
           b"sparse.bin (holes with four data extents).\n" * 20)
    for name in ("random.bin", "zeros.bin", "sparse.bin"):
        os.chmod(os.path.join(dest, name), 0o644)


def gen_deep(dest: str, quick: bool) -> None:
    """Depth, symlinks and hard links: the metadata-heavy corner cases."""
    rng = random.Random(SEED)
    os.mkdir(dest)
    # A 200-level chain with a small file at every level.
    chain = os.path.join(dest, "chain")
    os.mkdir(chain)
    level = chain
    levels = []
    for i in range(200):
        level = os.path.join(level, f"c{i:03d}")
        os.mkdir(level)
        levels.append(os.path.relpath(level, dest))
        _write(os.path.join(level, "level.txt"), f"level {i}\n".encode())
    files = os.path.join(dest, "files")
    os.mkdir(files)
    nfiles = 71
    for i in range(nfiles):
        _write(os.path.join(files, f"f{i:02d}"), rng.randbytes(rng.randrange(1, 3000)))
    # 1,000 further names for those files.
    links = os.path.join(dest, "links")
    os.mkdir(links)
    for i in range(1000):
        os.link(os.path.join(files, f"f{i % nfiles:02d}"), os.path.join(links, f"h{i:04d}"))
    # 5,000 symlinks: to files, absolute dangling, to directories, dangling, long.
    sym = os.path.join(dest, "sym")
    os.mkdir(sym)
    for i in range(1000):
        os.symlink(f"../files/f{i % nfiles:02d}", os.path.join(sym, f"file{i:04d}"))
        os.symlink(f"/nonexistent/abs/{i}", os.path.join(sym, f"abs{i:04d}"))
        os.symlink("../" + levels[i % len(levels)], os.path.join(sym, f"dir{i:04d}"))
        os.symlink(f"../missing/{i}", os.path.join(sym, f"dangling{i:04d}"))
        length = rng.randrange(126, 247)
        target = ("long/" * 60)[:length - 5] + f"{i:04d}x"
        os.symlink(target, os.path.join(sym, f"long{i:04d}"))
    for i in range(4):
        os.mkdir(os.path.join(dest, f"empty{i}"))


#: The real-tree corpus: Debian bookworm packages at the versions of 2026-12-04
#: (about 280 MB unpacked): headers (libc6-dev, linux-libc-dev, libstdc++,
#: boost), Python and Perl libraries, locales, zoneinfo, man pages (with
#: their .so links), and icon themes (symlink farms).
DEBIAN_PACKAGES = (
    ("libc6-dev", "2.36-9+deb12u14"),
    ("linux-libc-dev", "6.1.192-3"),
    ("libpython3.11-stdlib", "3.11.2-6+deb12u9"),
    ("perl-modules-5.36", "5.36.0-7+deb12u4"),
    ("locales", "2.36-9+deb12u14"),
    ("tzdata", "2026f-0+deb12u1"),
    ("manpages", "6.03-2"),
    ("manpages-dev", "6.03-2"),
    ("adwaita-icon-theme", "43-1"),
    ("hicolor-icon-theme", "0.17-2"),
    ("breeze-icon-theme", "4:5.103.0-1"),
    ("libboost1.74-dev", "1.74.0+ds1-21"),
    ("libstdc++-12-dev", "12.2.0-14+deb12u1"),
)


def _run(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True)


def fetch_debian(cache: str, log=None) -> tuple[list[str], list[str]]:
    """The .deb files of DEBIAN_PACKAGES in ``cache`` (downloaded once), and a
    note for each package whose pinned version the archive no longer offers."""
    os.makedirs(cache, exist_ok=True)
    debs, fallbacks = [], []
    for name, version in DEBIAN_PACKAGES:
        # apt-get download names files NAME_VERSION_ARCH.deb with the epoch's ':' as %3a.
        pinned = [f for f in os.listdir(cache)
                  if f.startswith(f"{name}_{version.replace(':', '%3a')}_") and f.endswith(".deb")]
        if not pinned:
            if log:
                log(f"apt-get download {name}={version}")
            proc = _run(["apt-get", "download", f"{name}={version}"], cwd=cache)
            if proc.returncode == 0:
                pinned = [f for f in os.listdir(cache)
                          if f.startswith(f"{name}_{version.replace(':', '%3a')}_") and f.endswith(".deb")]
        if pinned:
            debs.append(os.path.join(cache, sorted(pinned)[0]))
            continue
        # The pinned version is gone (a point release replaced it): take the candidate.
        before = set(os.listdir(cache))
        proc = _run(["apt-get", "download", name], cwd=cache)
        got = sorted(f for f in set(os.listdir(cache)) - before if f.endswith(".deb"))
        if proc.returncode != 0 or not got:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise SystemExit(f"bench: cannot download Debian package {name} "
                             f"({lines[-1] if lines else 'apt-get download failed'})")
        debs.append(os.path.join(cache, got[0]))
        fallbacks.append(f"{name} {version} is gone from the archive: used {got[0]}")
    return debs, fallbacks


def gen_debian(dest: str, quick: bool, root: str, log=None) -> dict:
    """The real tree: every package of DEBIAN_PACKAGES unpacked into ``dest``.

    Files keep the times and modes their packages give them; directories,
    which the unpacking of later packages touches, get the fixed time."""
    debs, fallbacks = fetch_debian(os.path.join(root, "debian-debs"), log)
    os.mkdir(dest)
    for deb in debs:
        proc = _run(["dpkg-deb", "-x", deb, dest])
        if proc.returncode != 0:
            raise SystemExit(f"bench: dpkg-deb -x {deb} failed: {proc.stderr.strip()}")
    for dirpath, _, _ in os.walk(dest):
        os.utime(dirpath, (FIXED_TIME, FIXED_TIME))
    return {"packages": [os.path.basename(d) for d in debs], "fallbacks": fallbacks}


GENERATORS = {
    "etc": lambda d, q: gen_etc(d, q),
    "stdlib": lambda d, q: gen_stdlib(d, q),
    "deep": lambda d, q: gen_deep(d, q),
    "small1k": lambda d, q: gen_small(d, 1000),
    "small10k": lambda d, q: gen_small(d, 10_000),
    "small100k": lambda d, q: gen_small(d, 100_000),
    "small1m": lambda d, q: gen_small(d, 1_000_000),
    "wide1m": lambda d, q: gen_small(d, 1_000_000, per_leaf=100),
    "large": lambda d, q: gen_large(d, q),
    "debian": None,  # gen_debian: it needs the root (for its .deb cache) and returns notes
}

FULL = ("etc", "stdlib", "deep", "small10k", "small100k", "large", "debian")
QUICK = ("etc", "stdlib", "deep", "small1k", "small10k", "large")
#: The scaling section (--scale): small trees of one shape, 10k to 1M files,
#: with etc for each tool's fixed cost, and wide1m for ISO's million.
SCALE = ("etc", "small10k", "small100k", "small1m", "wide1m")


def corpus_root(root: str | None, quick: bool) -> str:
    root = root or default_root()
    return os.path.join(root, "quick") if quick else root


def ensure(name: str, root: str | None = None, quick: bool = False, log=None) -> tuple[str, dict]:
    """The path of corpus ``name`` (generated if missing or stale) and its counts."""
    base = corpus_root(root, quick)
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, name)
    meta_path = path + ".json"
    stamp = {"version": VERSION, "quick": quick,
             "source": stdlib_source() if name == "stdlib" else
             [list(p) for p in DEBIAN_PACKAGES] if name == "debian" else None}
    if os.path.isdir(path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("stamp") == stamp:
            return path, meta
    if log:
        log(f"generating corpus {name} in {path}")
    tmp = path + ".tmp"
    for stale in (tmp, path):
        if os.path.lexists(stale):
            shutil.rmtree(stale)
    old_umask = os.umask(0o022)
    extra = {}
    try:
        if name == "debian":
            extra = gen_debian(tmp, quick, base, log)
        else:
            GENERATORS[name](tmp, quick)
    finally:
        os.umask(old_umask)
    os.chmod(tmp, 0o755)
    if name != "debian":
        _fix_times(tmp)
    os.rename(tmp, path)
    meta = scan(path)
    meta.update(extra)
    meta["stamp"] = stamp
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    return path, meta


def ensure_tar(name: str, path: str) -> str:
    """``NAME.tar`` beside the corpus: the tree as a GNU tar archive (sorted
    names, numeric owners), made once; the tar layer's input."""
    tar = path + ".tar"
    if os.path.exists(tar) and os.path.getmtime(tar) >= os.path.getmtime(path + ".json"):
        return tar
    proc = _run(["tar", "--sort=name", "--format=gnu", "--numeric-owner", "-C", path,
                 "-cf", tar + ".tmp", "."])
    if proc.returncode != 0:
        raise SystemExit(f"bench: cannot make {tar}: {proc.stderr.strip()}")
    os.rename(tar + ".tmp", tar)
    return tar


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.corpora", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help=f"corpora (default: all of {', '.join(FULL)})")
    p.add_argument("--quick", action="store_true", help="the small versions for a smoke run")
    p.add_argument("--root", help="where corpora live (default $RUMPFS_CORPORA or /tmp/rumpfs-corpora)")
    args = p.parse_args(argv)
    for name in args.names or (QUICK if args.quick else FULL):
        if name not in GENERATORS:
            p.error(f"{name}: unknown corpus (known: {', '.join(GENERATORS)})")
        path, meta = ensure(name, args.root, args.quick, log=lambda m: print(m, file=sys.stderr))
        for note in meta.get("fallbacks", ()):
            print(f"{name}: {note}", file=sys.stderr)
        print(f"{name}\t{path}\t{meta['entries']} entries\t{meta['payload_bytes']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
