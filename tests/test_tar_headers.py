"""A tar layer's headers are read by a child process while rumpfs builds the
tree (rumpfs.archives.ArchiveReader.read_tar_forked, after the first
IN_PROCESS_MEMBERS), or in one process when only one core is there
(``taskset -c 0``).  Both give the same image,
byte for byte, and that image holds what the archive holds: Python's
tarfile reads the archive, libarchive the image, and the two are compared
entry by entry (type, mode, owner, size, time, target, content).  The
archives are long enough for several batches from the child, and hand over
to ``tarfile`` halfway (a global pax header), also while a gzip'd archive
is still being decompressed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT, Result
from test_cpio import libarchive_records
from treecompare import ALL_KEYS, assert_same, record

from rumpfs.archives import IN_PROCESS_MEMBERS

#: Members the child reads: more than its first batches hold (64, 128, 256, ...).
FILES = IN_PROCESS_MEMBERS + 420
#: The member before which a global pax header hands the rest to tarfile.
GLOBAL_AT = IN_PROCESS_MEMBERS + 300


def build_tar(fmt: int, global_header: bool = True) -> bytes:
    """An archive of directories, files of 0-1000 bytes, long names (GNU
    'L' or pax 'x' members), UTF-8 names, a large uid, hard links, symlinks,
    a fifo and a device,
    in no particular order; a global pax header before member GLOBAL_AT."""
    rng = random.Random(21)
    # The top owned by root: GNU cpio does not change the "." it extracts into.
    members = [_info("./", tarfile.DIRTYPE, mode=0o755, gid=0)]
    members += [_info(f"d{k:02d}", tarfile.DIRTYPE, mode=0o750 + k % 8) for k in range(20)]
    files = []
    for k in range(FILES):
        name = f"d{k % 20:02d}/f{k:04d}" + ("-" + "n" * 120 if k % 50 == 7 else "")
        if k % 50 == 9:
            name += "-ÿé"  # a header that is not ASCII (GNU) or a pax path
        data = rng.randbytes(rng.randrange(1000))
        info = _info(name, tarfile.REGTYPE, mode=0o644 if k % 3 else 0o755, data=data,
                     uid=3_000_000 if k == 11 else k % 7)
        files.append(name)
        members.append(info)
    members += [_info(f"d{k:02d}/hard{k}", tarfile.LNKTYPE, linkname=files[k * 13])
                for k in range(0, 20, 3)]
    members += [_info(f"d{k:02d}/sym{k}", tarfile.SYMTYPE, linkname=f"../d{(k + 1) % 20:02d}")
                for k in range(0, 20, 4)]
    members.append(_info("d05/fifo", tarfile.FIFOTYPE, mode=0o600))
    device = _info("d07/tty", tarfile.CHRTYPE, mode=0o620)
    device[0].devmajor, device[0].devminor = 4, 300
    members.append(device)
    # Directories first, the rest shuffled (hard links after their targets).
    body = members[21:21 + FILES]
    rng.shuffle(body)
    members = members[:21] + body + members[21 + FILES:]
    out = bytearray()
    for n, (info, data) in enumerate(members):
        if global_header and n == GLOBAL_AT:
            out += tarfile.TarInfo.create_pax_global_header({"uid": "77"})
        out += info.tobuf(fmt, "utf-8", "surrogateescape")
        if data:
            out += data + bytes(-len(data) % tarfile.BLOCKSIZE)
    return bytes(out + bytes(2 * tarfile.BLOCKSIZE))


def _info(name: str, type_: bytes, mode: int = 0o644, data: bytes = b"", uid: int = 0,
          gid: int | None = None, linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid = type_, mode, uid
    info.gid = 100 + uid % 3 if gid is None else gid
    info.size = len(data)
    info.mtime = 1_600_000_000 + len(name) * 1000 + len(data)
    info.linkname = linkname
    return info, data


def pack(*args, one_core: bool = False, check: bool = True) -> Result:
    """``rumpfs pack --no-stubetc ARGS``; ``one_core``: under ``taskset -c 0``,
    where rumpfs reads the headers in one process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SOURCE_DATE_EPOCH", None)
    cmd = [sys.executable, "-m", "rumpfs", "pack", "--no-stubetc", *map(str, args)]
    proc = subprocess.run(["taskset", "-c", "0", *cmd] if one_core else cmd, env=env,
                          capture_output=True)
    res = Result(proc)
    assert not check or proc.returncode == 0, res.err
    return res


@pytest.mark.parametrize(("fmt", "compression", "global_header"), [
    (tarfile.GNU_FORMAT, None, True),
    (tarfile.PAX_FORMAT, "gzip", True),
    (tarfile.GNU_FORMAT, "gzip", False),
], ids=["gnu", "pax-gzip", "gnu-gzip-to-the-end"])
def test_headers_read_by_a_child_give_the_same_image(tmp_path, fmt, compression, global_header):
    """The child hands over how far the decompressor got: where tarfile
    takes over (a global header) or at the end of the archive."""
    data = build_tar(fmt, global_header)
    archive = tmp_path / "a.tar"
    archive.write_bytes(data)
    source = archive
    if compression:
        source = tmp_path / "a.tar.gz"
        source.write_bytes(gzip.compress(data, 1))
    for k in (0, 1):
        pack(source, "-o", tmp_path / f"r{k}.cpio", one_core=bool(k))
    assert (tmp_path / "r0.cpio").read_bytes() == (tmp_path / "r1.cpio").read_bytes()

    # What Python's tarfile reads from the archive is what libarchive reads
    # from the image (extracting thousands of files would take seconds).
    expected, actual = tarfile_records(archive), libarchive_records(tmp_path / "r0.cpio")
    assert len(expected) == FILES + 21 + 7 + 5 + 2
    # The global header's uid reached the members after it (tarfile read them).
    assert sorted({r["uid"] for r in expected.values() if r["type"] == "file"}) == \
        [0, 1, 2, 3, 4, 5, 6, *[77] * global_header, 3_000_000]
    assert_same(expected, actual, keys=[key for key in ALL_KEYS if key != "nlink"])


def tarfile_records(archive) -> dict:
    """The archive as Python's tarfile reads it (hard links as their targets)."""
    out = {}
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
             tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "chardev"}
    with tarfile.open(archive) as t:
        for info in t:
            path = os.fsencode(info.name).removeprefix(b"./").rstrip(b"/")
            path = b"" if path == b"." else path
            if info.islnk():
                out[path] = dict(out[os.fsencode(info.linkname)])
                continue
            digest = (hashlib.sha256(t.extractfile(info).read()).hexdigest() if info.isreg()
                      else None)
            target = os.fsencode(info.linkname) if info.issym() else None
            size = len(target) if target is not None else info.size
            out[path] = record(kinds[info.type], info.mode, info.uid, info.gid, size, 1,
                               int(info.mtime), target,
                               (info.devmajor, info.devminor) if info.ischr() else None, digest)
    return out


def _many(count: int) -> bytes:
    out = bytearray()
    for k in range(count):
        info, data = _info(f"f{k:04d}", tarfile.REGTYPE, data=b"%d" % k)
        out += info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE)
    return bytes(out)


@pytest.mark.parametrize("one_core", [False, True], ids=["child", "one-core"])
def test_the_first_bad_member_is_the_error_and_nothing_is_written(tmp_path, one_core):
    """Members and errors come from the child in the archive's order: a
    member refused while the tree is built (a '..', 300 members into the
    child's share) is the error, not the damaged header the child met after it; a damaged
    header after hundreds of good members is one line too."""
    bad_name = _info("a/../../x", tarfile.REGTYPE, data=b"x")
    damaged = bytearray(_info("later", tarfile.REGTYPE)[0].tobuf(tarfile.GNU_FORMAT))
    damaged[0:1] = b"L"  # the checksum no longer matches
    damaged_utf8 = bytearray(_info("lätér", tarfile.REGTYPE)[0].tobuf(tarfile.GNU_FORMAT))
    damaged_utf8[0:1] = b"L"  # a block that is not ASCII: its sum is found by halves
    out = tmp_path / "r.cpio"
    out.write_bytes(b"old")
    good = _many(IN_PROCESS_MEMBERS + 300)
    cases = [
        (good + bad_name[0].tobuf(tarfile.GNU_FORMAT) + b"x".ljust(512, b"\0")
         + bytes(damaged) + bytes(1024), "member a/../../x: '..' in the name"),
        (good + bytes(damaged) + bytes(1024),
         f"offset {len(good)}: bad tar header (checksum mismatch)"),
        (good + bytes(damaged_utf8) + bytes(1024),
         f"offset {len(good)}: bad tar header (checksum mismatch)"),
    ]
    for data, line in cases:
        archive = tmp_path / "bad.tar"
        archive.write_bytes(data)
        res = pack(archive, "-o", out, one_core=one_core, check=False)
        assert (res.returncode, res.err) == (1, f"rumpfs: error: {archive}: {line}\n")
        assert out.read_bytes() == b"old"
        assert sorted(os.listdir(tmp_path)) == ["bad.tar", "r.cpio"]
