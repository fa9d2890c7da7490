"""File-by-file comparison of trees, as the tests' common judge.

``scan_host(path)`` describes a directory of the host (a source tree, or what
an independent tool extracted from our image) as ``{path: record}``, where a
path is ``bytes`` relative to the top (``b""`` is the top itself) and a record
is a plain dict: type, mode (permission bits with setuid/setgid/sticky), uid,
gid, size, nlink, mtime (seconds), target, rdev ((major, minor) or None) and
sha256 (regular files).  ``assert_same`` names every difference.
"""

from __future__ import annotations

import hashlib
import os
import stat

TYPES = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}

#: Fields compared by default.
ALL_KEYS = ("type", "mode", "uid", "gid", "size", "nlink", "mtime", "target", "rdev", "sha256")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def record(type_: str, mode: int, uid=0, gid=0, size=0, nlink=1, mtime=0,
           target: bytes | None = None, rdev=None, sha256=None) -> dict:
    return {"type": type_, "mode": stat.S_IMODE(mode), "uid": uid, "gid": gid,
            "size": size if type_ in ("file", "symlink") else 0, "nlink": nlink,
            "mtime": mtime, "target": target, "rdev": rdev, "sha256": sha256}


def scan_host(top) -> dict[bytes, dict]:
    top = os.fsencode(top)
    out: dict[bytes, dict] = {b"": _rec(top)}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, top)
            out[rel] = _rec(full)
    return out


def _rec(path: bytes) -> dict:
    st = os.lstat(path)
    t = TYPES[stat.S_IFMT(st.st_mode)]
    target = os.readlink(path) if t == "symlink" else None
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if t in ("chardev", "blockdev") else None
    digest = sha256_file(path) if t == "file" else None
    return record(t, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink,
                  st.st_mtime_ns // 1_000_000_000, target, rdev, digest)


def from_entries(entries, read=None) -> dict[bytes, dict]:
    """Records from ``rumpfs.formats.Entry`` objects (``read(entry)`` yields data)."""
    out = {}
    for e in entries:
        t = TYPES.get(stat.S_IFMT(e.mode), "unknown")
        digest = None
        if t == "file" and read is not None:
            h = hashlib.sha256()
            for chunk in read(e):
                h.update(chunk)
            digest = h.hexdigest()
        rdev = (os.major(e.rdev), os.minor(e.rdev)) if t in ("chardev", "blockdev") else None
        out[e.path] = record(t, e.mode, e.uid, e.gid, e.size, e.nlink,
                             e.mtime_ns // 1_000_000_000, e.target, rdev, digest)
    return out


def normalized(expected: dict, uid=0, gid=0, mtime=None) -> dict:
    """What rumpfs makes of a host tree by default: owners 0:0, optional time."""
    out = {}
    for p, r in expected.items():
        r = dict(r)
        if uid is not None:
            r["uid"] = uid
        if gid is not None:
            r["gid"] = gid
        if mtime is not None:
            r["mtime"] = mtime
        out[p] = r
    return out


def differences(expected: dict, actual: dict, keys=ALL_KEYS, ignore=()) -> list[str]:
    out = []
    show = lambda p: "/" + p.decode("utf-8", "backslashreplace")  # noqa: E731
    for p in sorted(set(expected) | set(actual)):
        if p in ignore:
            continue
        if p not in actual:
            out.append(f"{show(p)}: missing (expected {expected[p]['type']})")
            continue
        if p not in expected:
            out.append(f"{show(p)}: unexpected {actual[p]['type']}")
            continue
        for k in keys:
            a, b = expected[p].get(k), actual[p].get(k)
            if k == "mode" and a is not None and b is not None:
                a, b = oct(a), oct(b)
            if a != b:
                out.append(f"{show(p)}: {k} expected {a!r}, got {b!r}")
    return out


def assert_same(expected: dict, actual: dict, keys=ALL_KEYS, ignore=()) -> None:
    diffs = differences(expected, actual, keys, ignore)
    if diffs:
        more = f"\n... and {len(diffs) - 60} more" if len(diffs) > 60 else ""
        raise AssertionError(f"{len(diffs)} difference(s):\n" + "\n".join(diffs[:60]) + more)
