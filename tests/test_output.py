"""The output path: copies by worker processes, and what happens when they fail."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys

import pytest
from conftest import ROOT, leftovers, run_rumpfs
from ffs_testlib import dissect_records
from treecompare import assert_same, normalized, scan_host

from rumpfs.output import PARALLEL_MIN_JOBS


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    """More files than the in-process copy threshold, of every small size, and
    some above a block (FFS full blocks) and above the placeholder limit."""
    top = tmp_path_factory.mktemp("many") / "tree"
    rnd = random.Random(7)
    for i in range(PARALLEL_MIN_JOBS * 3):
        d = top / f"d{i % 17}"
        d.mkdir(parents=True, exist_ok=True)
        size = rnd.choice((0, 1, 3, 511, 4096, 9000, 20000, 70000)) if i % 50 else 300_000
        (d / f"f{i}").write_bytes(rnd.randbytes(size))
    return top


def test_cpio_with_worker_copies_reads_back_with_bsdtar(many_files, tmp_path):
    out = tmp_path / "many.cpio"
    run_rumpfs("pack", "--no-stubetc", many_files, "-o", out)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(out)], cwd=dest, check=True)
    expected, actual = normalized(scan_host(many_files)), scan_host(dest)
    expected[b""]["mtime"] = actual[b""]["mtime"] = None
    assert_same(expected, actual)


def test_ffs_with_worker_copies_reads_back_with_dissect(many_files, tmp_path):
    out = tmp_path / "many.img"
    run_rumpfs("pack", "--no-stubetc", "--format", "ffs", many_files, "-o", out)
    keys = ("type", "mode", "uid", "gid", "size", "nlink", "mtime", "sha256")
    assert_same(normalized(scan_host(many_files)), dissect_records(out), keys=keys)


def _pack_with_a_file_changed(many_files, tmp_path, victim, change: str):
    """Pack ``many_files`` to cpio; ``change`` (a statement on ``victim``, a
    bytes path) runs when the victim's copy is handed over (the tree may
    still be being listed), so a worker meets the changed file."""
    code = (
        "import os, sys, runpy\n"
        "import rumpfs.output as o\n"
        "real = o.Copier.add\n"
        "def add(self, jobs, *rest):\n"
        "    victim = os.environ['RUMPFS_TEST_SWAP'].encode()\n"
        "    if any(j[0].path == victim for j in jobs) and os.path.isfile(victim):\n"
        f"        {change}\n"
        "    return real(self, jobs, *rest)\n"
        "o.Copier.add = add\n"
        "sys.argv = ['rumpfs'] + sys.argv[1:]\n"
        "runpy.run_module('rumpfs', run_name='__main__')\n")
    out = tmp_path / "fail.cpio"
    proc = subprocess.run(
        [sys.executable, "-c", code, "pack", "--no-stubetc", str(many_files), "-o", str(out)],
        capture_output=True, env=dict(os.environ, RUMPFS_TEST_SWAP=str(victim),
                                      PYTHONPATH=str(os.path.dirname(os.path.dirname(__file__)))))
    return proc, out


def _assert_failed_cleanly(proc, out, tmp_path, message: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err == f"rumpfs: error: {message}\n"
    assert not out.exists() and leftovers(tmp_path) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps, "a copy worker outlived the failed pack"


def test_worker_error_is_reported_and_nothing_is_left(many_files, tmp_path):
    """A file that vanishes after the walk: the worker's error reaches the
    user, no output is written and no worker process survives."""
    victim = many_files / f"d{3000 % 17}" / "f3000"
    assert victim.exists()
    proc, out = _pack_with_a_file_changed(many_files, tmp_path, victim,
                                          "os.rename(victim, victim + b'.gone')")
    os.rename(str(victim) + ".gone", victim)
    _assert_failed_cleanly(proc, out, tmp_path, f"{victim}: cannot read: No such file or directory")


@pytest.mark.parametrize("sizes", [(1000, 64 << 10), (64 << 10, 8 << 20)],
                         ids=["gathered", "copy_file_range"])
def test_file_shrunk_before_its_copy_is_reported(many_files, tmp_path, sizes):
    """A file shorter than when it was listed, small (gathered with its
    neighbours into one write) or not (copied by its data runs): the exact
    error, nothing left."""
    low, high = sizes
    victim = next(p for p in sorted((many_files / "d5").iterdir())
                  if low < p.stat().st_size <= high)
    size = victim.stat().st_size
    saved = victim.read_bytes()
    try:
        proc, out = _pack_with_a_file_changed(many_files, tmp_path, victim,
                                              "os.truncate(victim, 10)")
    finally:
        victim.write_bytes(saved)
    _assert_failed_cleanly(proc, out, tmp_path,
                           f"{victim}: changed while being packed (size {size} -> 10)")


def test_small_trees_copy_without_workers(tmp_path, monkeypatch):
    """Below the threshold no process is forked (checked through the API)."""
    from rumpfs.output import ImageSink
    from rumpfs.tree import HostData
    forks = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
    src = tmp_path / "f"
    src.write_bytes(b"x" * 10000)
    fd = os.open(tmp_path / "o", os.O_RDWR | os.O_CREAT)
    sink = ImageSink(fd)
    sink.copy_at(HostData(os.fsencode(src), 10000), 100)
    sink.finish(20000)
    assert sink.copier.procs == [] and forks == []
    os.close(fd)
    data = (tmp_path / "o").read_bytes()
    assert data[100:10100] == b"x" * 10000 and len(data) == 20000


def test_large_copies_are_cut_into_pieces(tmp_path):
    """A file larger than PIECE_BYTES is copied in pieces (at offsets that
    are not piece-aligned), byte for byte, with workers and without."""
    from rumpfs.output import PIECE_BYTES, ImageSink
    from rumpfs.tree import HostData
    rnd = random.Random(11)
    src = tmp_path / "big"
    payload = rnd.randbytes(2 * PIECE_BYTES + 12345)
    src.write_bytes(payload)
    data = HostData(os.fsencode(src), len(payload))
    for workers in (0, 2):
        out = tmp_path / f"o{workers}"
        fd = os.open(out, os.O_RDWR | os.O_CREAT)
        sink = ImageSink(fd, base=7, workers=workers)
        sink.copy_at(data, 1001, 3, len(payload) - 3)
        if workers == 0:  # nothing is handed over: the pieces wait in the queue
            assert [job[1:] for job in sink.copier.ready] == [
                (3, 1001, PIECE_BYTES), (3 + PIECE_BYTES, 1001 + PIECE_BYTES, PIECE_BYTES),
                (3 + 2 * PIECE_BYTES, 1001 + 2 * PIECE_BYTES, 12342)]
        sink.finish(1001 + len(payload))
        os.close(fd)
        image = out.read_bytes()
        assert image[7 + 1001:7 + 1001 + len(payload) - 3] == payload[3:]
        assert image[:7 + 1001] == bytes(7 + 1001)


def _copy_with_two_workers(tmp_path, sizes: list, seed: int) -> tuple:
    """Copy files of ``sizes`` into an image through one Copier batch of two
    workers; returns (bytes the first worker copied, bytes the second
    copied), from each worker's own byte counter, after checking every copy."""
    import io

    from rumpfs.output import ImageSink, Progress
    from rumpfs.tree import HostData
    rnd = random.Random(seed)
    jobs, payloads, offset = [], [], 0
    for k, size in enumerate(sizes):
        src = tmp_path / f"f{k}"
        payloads.append(rnd.randbytes(size))
        src.write_bytes(payloads[-1])
        jobs.append((HostData(os.fsencode(src), size), 0, offset, size))
        offset += size + 7
    progress = Progress(None, enabled=True, stream=io.StringIO())
    fd = os.open(tmp_path / "image", os.O_RDWR | os.O_CREAT)
    try:
        sink = ImageSink(fd, progress=progress, workers=2)
        sink.copier.start()
        sink.copier.add(jobs)
        sink.finish(offset)
    finally:
        os.close(fd)
        progress.close()
    image = (tmp_path / "image").read_bytes()
    for (data, _src, dst, size), payload in zip(jobs, payloads):
        assert image[dst:dst + size] == payload, data.path
    return progress._counts[0], progress._counts[1]


def test_large_copies_go_to_one_worker(tmp_path):
    """Writes into one file take its lock in turn, so a second worker would
    copy large files no sooner and only spend CPU waiting: every copy over
    GATHER_FILE_MAX goes to the first worker.  Here the large files are
    more work than all the small ones, so the second worker gets every
    small file."""
    from rumpfs.output import GATHER_FILE_MAX
    sizes = [GATHER_FILE_MAX + 1 + 4096 * k if k % 5 == 0 else 1000 + k for k in range(60)]
    large = sum(size for size in sizes if size > GATHER_FILE_MAX)
    small = sum(sizes) - large
    first, second = _copy_with_two_workers(tmp_path, sizes, 3)
    assert (first, second) == (large, small)


def test_small_copies_even_out_the_workers_work(tmp_path):
    """The small files are shared so that each worker ends up with about the
    same work: the one copying a large file gets fewer of them (an equal
    share of the small files would leave the second worker idle while the
    first copies the large file and half the rest)."""
    from rumpfs.output import GATHER_FILE_MAX, JOB_COST_BYTES, PIECE_BYTES
    large_size = PIECE_BYTES // 2
    sizes = [large_size] + [8000] * 300
    assert large_size > GATHER_FILE_MAX
    small = sum(sizes[1:])
    first, second = _copy_with_two_workers(tmp_path, sizes, 4)
    assert first + second == large_size + small
    # Work in bytes plus JOB_COST_BYTES per file: each worker's half of it.
    half = (large_size + JOB_COST_BYTES + 300 * (8000 + JOB_COST_BYTES)) / 2
    second_files = second // 8000
    assert abs(second_files * (8000 + JOB_COST_BYTES) - half) <= 8000 + JOB_COST_BYTES
    assert second > 0.7 * small  # an equal share would be half


def test_cpio_member_larger_than_a_piece_reads_back_with_gnu_cpio(tmp_path):
    """The copy of a member writes its header too; a file cut into pieces
    carries it on its first piece only.  GNU cpio must read every byte back."""
    from rumpfs.output import PIECE_BYTES
    rnd = random.Random(5)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-small").write_bytes(rnd.randbytes(1001))
    (src / "b-big").write_bytes(rnd.randbytes(2 * PIECE_BYTES + 3))
    (src / "c-small").write_bytes(rnd.randbytes(70001))
    out = tmp_path / "big.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "-o", out)
    dest = tmp_path / "x"
    dest.mkdir()
    with open(out, "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet"], stdin=f, cwd=dest, check=True)
    for name in ("a-small", "b-big", "c-small"):
        assert (dest / name).read_bytes() == (src / name).read_bytes(), name


@pytest.mark.parametrize("fmt", ["newc", "crc"])
def test_holes_of_a_large_sparse_file_are_not_copied(tmp_path, fmt):
    """A cpio archive has no holes, but its file may: the holes of a sparse
    member larger than a piece are left unwritten (the archive reads zeros
    there), the first data run starting after one.  GNU cpio and bsdtar
    read every byte back (crc: with its checksum), and the archive holds
    about the data, not the holes, on disk."""
    from rumpfs.output import PIECE_BYTES
    rnd = random.Random(9)
    src = tmp_path / "src"
    src.mkdir()
    size = 3 * PIECE_BYTES
    runs = [(PIECE_BYTES + 4096, 1 << 20), (size - 5000, 5000)]
    with open(src / "sparse.bin", "wb") as f:
        f.truncate(size)
        for offset, length in runs:
            f.seek(offset)
            f.write(rnd.randbytes(length))
    (src / "small").write_bytes(b"after the holes\n")
    if os.stat(src / "sparse.bin").st_blocks * 512 >= size // 2:
        pytest.skip("the file system here does not keep holes")
    out = tmp_path / "sparse.cpio"
    run_rumpfs("pack", "--no-stubetc", "--format", "cpio", "--cpio-variant", fmt, src, "-o", out)
    assert os.stat(out).st_blocks * 512 < sum(n for _, n in runs) + (1 << 20)
    for tool in (["cpio", "-idm", "--quiet"], ["bsdtar", "-xf", "-"]):
        dest = tmp_path / tool[0]
        dest.mkdir()
        with open(out, "rb") as f:
            subprocess.run(tool, stdin=f, cwd=dest, check=True)
        for name in ("sparse.bin", "small"):
            assert (dest / name).read_bytes() == (src / name).read_bytes(), (tool[0], name)


def test_copies_that_own_units_are_joined_across_small_gaps_only(tmp_path):
    """With copies_own_units(1024), a worker writes the gap between two copies
    less than a unit apart as zeros (they are the copies' own), and never
    touches a gap of a unit or more (another writer's bytes)."""
    from rumpfs.output import ImageSink
    from rumpfs.tree import HostData
    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 40)
    image = tmp_path / "image"
    image.write_bytes(b"\xff" * 16384)
    fd = os.open(image, os.O_RDWR)
    try:
        sink = ImageSink(fd, workers=1)
        sink.copier.start()
        sink.copies_own_units(1024)
        data = HostData(os.fsencode(src), 10240)
        sink.copier.add([(data, 0, 0, 100),        # gap of 924 bytes: zeros
                         (data, 100, 1024, 3000),   # gap of 4096 - 4024 = 72: zeros
                         (data, 3100, 4096, 500),   # gap of 1024 + 404: left alone
                         (data, 3600, 6144, 10)])
        sink.finish(16384)
    finally:
        os.close(fd)
    got = image.read_bytes()
    want = bytearray(b"\xff" * 16384)
    payload = src.read_bytes()
    want[0:1024] = payload[0:100] + bytes(924)
    want[1024:4096] = payload[100:3100] + bytes(72)
    want[4096:4596] = payload[3100:3600]
    want[6144:6154] = payload[3600:3610]
    assert got == bytes(want)


def test_small_gaps_are_zeros_where_the_gather_buffer_fills(tmp_path):
    """More small copies than one gathering buffer holds (GATHER_BYTES), each
    a small gap after the last: every gap is written as zeros, the one where
    the buffer is full included, and the copies land where they belong."""
    from rumpfs.output import GATHER_BYTES, GATHER_FILE_MAX, ImageSink
    from rumpfs.tree import HostData
    unit, stride = 1024, GATHER_FILE_MAX
    length = stride - unit // 2
    count = GATHER_BYTES // stride + 3
    src = tmp_path / "src"
    src.write_bytes(random.Random(5).randbytes(length * count))
    size = stride * count
    image = tmp_path / "image"
    image.write_bytes(b"\xff" * size)
    fd = os.open(image, os.O_RDWR)
    try:
        sink = ImageSink(fd, workers=1)
        sink.copier.start()
        sink.copies_own_units(unit)
        data = HostData(os.fsencode(src), length * count)
        sink.copier.add([(data, k * length, k * stride, length) for k in range(count)])
        sink.finish(size)
    finally:
        os.close(fd)
    got = image.read_bytes()
    payload = src.read_bytes()
    for k in range(count):
        piece = got[k * stride:(k + 1) * stride]
        assert piece[:length] == payload[k * length:(k + 1) * length], k
        want_gap = bytes(stride - length) if k < count - 1 else b"\xff" * (stride - length)
        assert piece[length:] == want_gap, k


def test_a_large_copy_leaves_the_source_holes_unwritten(tmp_path):
    """A file above the gathering size is copied by its data runs: the image
    reads the same bytes, holds about the data on disk, and the counter
    hears of every byte, holes included."""
    from rumpfs.output import GATHER_FILE_MAX, StretchWriter
    from rumpfs.tree import HostData
    size = 40 * GATHER_FILE_MAX
    src = tmp_path / "sparse"
    with open(src, "wb") as f:
        f.truncate(size)
        f.seek(7 * GATHER_FILE_MAX + 5)
        f.write(random.Random(2).randbytes(3 * GATHER_FILE_MAX))
    if os.stat(src).st_blocks * 512 >= size // 2:
        pytest.skip("the file system here does not keep holes")

    class Counter:
        done = 0

        def advance(self, n):
            self.done += n

    counter = Counter()
    image = tmp_path / "image"
    fd = os.open(image, os.O_RDWR | os.O_CREAT)
    try:
        out = StretchWriter(fd, 4096, counter)
        out.put(b"head")
        out.copy(HostData(os.fsencode(src), size), size)
        out.close()
    finally:
        os.close(fd)
    os.truncate(image, 4096 + 4 + size)  # the image's length is the sink's to set (finish)
    assert image.read_bytes() == bytes(4096) + b"head" + src.read_bytes()
    assert os.stat(image).st_blocks * 512 < 4 * GATHER_FILE_MAX + 64 * 1024
    assert counter.done == size


# -- where the output goes ---------------------------------------------------------

def _small_tree(top) -> None:
    rnd = random.Random(17)
    (top / "sub").mkdir(parents=True)
    (top / "a").write_bytes(b"hello\n")
    (top / "sub" / "b").write_bytes(rnd.randbytes(100_000))
    (top / "sub" / "empty").write_bytes(b"")
    os.symlink("a", top / "link")


def _extract_with(tool: list, archive: bytes, dest) -> None:
    dest.mkdir()
    subprocess.run(tool, input=archive, cwd=dest, check=True, capture_output=True)


def _assert_holds(src, dest) -> None:
    expected, actual = normalized(scan_host(src)), scan_host(dest)
    for records in (expected, actual):
        for r in records.values():
            if r["type"] in ("dir", "symlink"):
                r["mtime"] = None  # GNU cpio sets neither after filling a directory
    assert_same(expected, actual)


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_dash_writes_the_archive_to_stdout(tmp_path, compress):
    """-o - streams the cpio archive (compressed or not) to standard output:
    GNU cpio reads it back file by file, and no file named '-' appears."""
    src = tmp_path / "src"
    _small_tree(src)
    args = ["pack", "--no-stubetc", "--format", "cpio", src, "-o", "-"]
    if compress:
        args += ["--compress", compress]
    res = run_rumpfs(*args, cwd=tmp_path)
    assert res.err == ""
    data = res.stdout
    if compress:
        data = subprocess.run(["gzip", "-dc"], input=data, capture_output=True, check=True).stdout
    _extract_with(["cpio", "-idm", "--quiet"], data, tmp_path / "x")
    _assert_holds(src, tmp_path / "x")
    assert sorted(os.listdir(tmp_path)) == ["src", "x"]


def test_stdout_stream_of_many_files_is_the_file_archive(tmp_path):
    """The stream (written in order, without copy workers) holds the same
    bytes as the archive written into a file (by copy workers, in batches),
    which bsdtar reads back."""
    src = tmp_path / "src"
    rnd = random.Random(23)
    for i in range(400):
        d = src / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(rnd.randbytes(rnd.choice((0, 1, 511, 4096, 70000))))
    out = tmp_path / "many.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "-o", out)
    streamed = run_rumpfs("pack", "--no-stubetc", "-f", "cpio", src, "-o", "-").stdout
    assert streamed == out.read_bytes()
    _extract_with(["bsdtar", "-xpf", "-"], streamed, tmp_path / "x")
    expected, actual = normalized(scan_host(src)), scan_host(tmp_path / "x")
    expected[b""]["mtime"] = actual[b""]["mtime"] = None
    assert_same(expected, actual)


def test_fifo_output_is_written_as_it_is(tmp_path):
    """A fifo named by -o is opened and written, not replaced: a reader on
    the other end gets an archive GNU cpio reads, and the fifo stays one."""
    import threading
    src = tmp_path / "src"
    _small_tree(src)
    fifo = tmp_path / "out.cpio"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    try:
        res = run_rumpfs("pack", "--no-stubetc", src, "-o", fifo, check=False)
    finally:
        if reader.is_alive() and not got:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let a waiting reader end
        reader.join()
    assert res.returncode == 0, res.err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    _extract_with(["cpio", "-idm", "--quiet"], got[0], tmp_path / "x")
    _assert_holds(src, tmp_path / "x")


def test_dev_null_takes_a_cpio_archive(tmp_path):
    src = tmp_path / "src"
    _small_tree(src)
    before = os.stat("/dev/null")
    res = run_rumpfs("pack", "--no-stubetc", "--format", "cpio", "--compress", "gzip", src,
                     "-o", "/dev/null")
    assert res.err == ""
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino


def _assert_refused(res, line: str) -> None:
    assert res.returncode == 1
    assert res.err == f"rumpfs: error: {line}\n"
    assert res.stdout == b""


@pytest.mark.parametrize("name,what", [("out.img", "an ffs image"),
                                       ("out.o", "an ELF object")])
def test_seekable_formats_refuse_a_fifo(tmp_path, name, what):
    """Nothing opens the fifo (a writer would wait for a reader): the error
    comes first, and the fifo stays."""
    src = tmp_path / "src"
    _small_tree(src)
    fifo = tmp_path / name
    os.mkfifo(fifo)
    res = run_rumpfs("pack", "--no-stubetc", src, "-o", fifo, check=False)
    _assert_refused(res, f"{fifo}: {what} needs a seekable output (a regular file)")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("output", ["/dev/stdout", "-"])
def test_ffs_refuses_stdout(tmp_path, output):
    """/dev/stdout (a symlink to this process's pipe) and - are streams:
    an FFS image is refused there with one line, and /dev/stdout stays."""
    src = tmp_path / "src"
    _small_tree(src)
    res = run_rumpfs("pack", "--no-stubetc", "--format", "ffs", src, "-o", output, check=False)
    _assert_refused(res, f"{output}: an ffs image needs a seekable output (a regular file)")
    assert stat.S_ISLNK(os.lstat("/dev/stdout").st_mode)


def test_cpio_to_dev_stdout_follows_the_link_to_the_pipe(tmp_path):
    src = tmp_path / "src"
    _small_tree(src)
    res = run_rumpfs("pack", "--no-stubetc", "--format", "cpio", src, "-o", "/dev/stdout")
    _extract_with(["cpio", "-idm", "--quiet"], res.stdout, tmp_path / "x")
    _assert_holds(src, tmp_path / "x")
    assert stat.S_ISLNK(os.lstat("/dev/stdout").st_mode)


@pytest.mark.parametrize("target", ["existing", "dangling"])
def test_symlink_output_is_refused_and_untouched(tmp_path, target):
    src = tmp_path / "src"
    _small_tree(src)
    pointed = tmp_path / "old.cpio"
    if target == "existing":
        pointed.write_bytes(b"precious")
    link = tmp_path / "out.cpio"
    os.symlink(pointed.name, link)
    res = run_rumpfs("pack", "--no-stubetc", src, "-o", link, check=False)
    _assert_refused(res, f"{link}: output is a symlink; it is not replaced "
                         "(name the file it points to)")
    assert os.readlink(link) == pointed.name
    assert (pointed.read_bytes() == b"precious") if target == "existing" else not pointed.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["src", link.name]
                                                  + ([pointed.name] if target == "existing" else []))


def test_socket_output_is_refused(tmp_path):
    import socket
    src = tmp_path / "src"
    _small_tree(src)
    path = tmp_path / "out.cpio"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        res = run_rumpfs("pack", "--no-stubetc", src, "-o", path, check=False)
    _assert_refused(res, f"{path}: output is a socket; it is not replaced")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def _members(image) -> list[str]:
    """The names in a cpio archive (bsdtar) or an FFS image (dissect.ffs)."""
    if str(image).endswith(".img"):
        return sorted(os.fsdecode(p) or "." for p in dissect_records(image))
    return subprocess.run(["bsdtar", "-tf", str(image)], capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.parametrize("name", ["in.cpio", "in.img"])
def test_output_inside_the_source_is_not_packed(tmp_path, name):
    """The first run's output is unnamed while written (never in the walk);
    the next run meets the old output in the tree and leaves it out with a
    warning (bsdtar: "Can't add archive to itself"), as it does a hard link
    to it.  bsdtar lists the members."""
    src = tmp_path / "src"
    _small_tree(src)
    out = src / name
    first = run_rumpfs("pack", "--no-stubetc", src, "-o", out)
    assert first.err == ""
    listing = _members(out)
    assert name not in listing and "sub/b" in listing
    os.link(out, src / "sub" / "hardlink")
    second = run_rumpfs("pack", "--no-stubetc", src, "-o", out)
    assert sorted(second.err.splitlines()) == sorted(
        f"rumpfs: warning: {p}: the output is not packed into itself"
        for p in (out, src / "sub" / "hardlink"))
    assert _members(out) == listing


def test_named_temporary_file_inside_the_source_is_not_packed(tmp_path, monkeypatch):
    """Where there is no O_TMPFILE, the named .part file is in the walk's
    way: it is left out, silently (it is not a file of the user's)."""
    from rumpfs import api, output
    monkeypatch.setattr(output, "_O_TMPFILE", 0)
    seen = []
    real = output._create_temporary
    monkeypatch.setattr(output, "_create_temporary",
                        lambda *a: seen.append(real(*a)) or seen[-1])
    src = tmp_path / "src"
    _small_tree(src)
    api.pack([src], src / "in.cpio", stubetc=False, progress=False)
    assert len(seen) == 1 and os.path.dirname(seen[0][1]) == str(src)
    assert _members(src / "in.cpio") == [".", "a", "link", "sub", "sub/b", "sub/empty"]
    assert leftovers(src) == []


def test_existing_output_is_replaced_by_a_new_file(tmp_path):
    """Replacing is atomic: the old file keeps its inode (someone who has it
    open still reads the old bytes) and the new one gets the umask's mode."""
    src = tmp_path / "src"
    _small_tree(src)
    out = tmp_path / "out.cpio"
    out.write_bytes(b"precious")
    os.chmod(out, 0o600)
    with open(out, "rb") as old:
        run_rumpfs("pack", "--no-stubetc", src, "-o", out)
        assert old.read() == b"precious"
        assert os.fstat(old.fileno()).st_ino != os.stat(out).st_ino
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~mask
    assert sorted(os.listdir(tmp_path)) == ["out.cpio", "src"]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename"])
def test_replacing_swaps_names_instead_of_renaming_over(tmp_path, monkeypatch, exchange):
    """An old output is replaced by exchanging names (renameat2
    RENAME_EXCHANGE), not by a rename over it: ext4 would start the
    writeback of the whole new image inside that rename.  Either way the
    new inode ends under the name, the old one keeps its bytes for whoever
    has it open, and no temporary name is left; without the exchange
    (another kernel or file system) a rename does it."""
    from rumpfs import api, output
    calls = []
    real = output._exchange
    monkeypatch.setattr(output, "_exchange",
                        lambda *a: calls.append(a) or (exchange and real(*a)))
    src = tmp_path / "src"
    _small_tree(src)
    out = tmp_path / "out.cpio"
    out.write_bytes(b"precious")
    with open(out, "rb") as old:
        api.pack([src], out, stubetc=False, progress=False)
        assert old.read() == b"precious"
        assert os.fstat(old.fileno()).st_ino != os.stat(out).st_ino
    assert len(calls) == 1 and calls[0][2] == "out.cpio"
    assert calls[0][1].startswith(".out.cpio.") and calls[0][1].endswith(".part")
    assert sorted(os.listdir(tmp_path)) == ["out.cpio", "src"]
    assert _members(out) == [".", "a", "link", "sub", "sub/b", "sub/empty"]


def test_exchange_swaps_two_names(tmp_path):
    """renameat2 RENAME_EXCHANGE is there on this Linux and file system (or
    the pack would fall back to the rename that costs the writeback)."""
    from rumpfs import output
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert output._exchange(fd, "a", "b")
        assert not output._exchange(fd, "a", "missing")
    finally:
        os.close(fd)
    assert (tmp_path / "a").read_bytes() == b"B" and (tmp_path / "b").read_bytes() == b"A"


# -- signals in the middle of a pack -----------------------------------------------

#: Runs the CLI with a hook before a source is opened for its copy: for the
#: file named "block", it says so on the fd RUMPFS_TEST_READY, then opens a
#: fifo no one will ever write (blocks until a signal).  Forked copy workers
#: inherit the hook.  RUMPFS_TEST_NO_TMPFILE: as on a file system without
#: O_TMPFILE.  SIGINT and SIGHUP as a terminal's job has them (a runner in
#: the background may hand them down ignored).
_BLOCKING_PACK = (
    "import os, runpy, signal, sys\n"
    "import rumpfs.output as o\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
    "if os.environ.get('RUMPFS_TEST_NO_TMPFILE'):\n"
    "    o._O_TMPFILE = 0\n"
    "real = o._open_path\n"
    "def blocking(path, *rest):\n"
    "    if path.endswith(b'/block'):\n"
    "        os.write(int(os.environ['RUMPFS_TEST_READY']), b'!')\n"
    "        os.open(os.environ['RUMPFS_TEST_FIFO'], os.O_RDONLY)\n"
    "    return real(path, *rest)\n"
    "o._open_path = blocking\n"
    "sys.argv = ['rumpfs'] + sys.argv[1:]\n"
    "runpy.run_module('rumpfs', run_name='__main__')\n")


@pytest.mark.parametrize("signum,tmpfile", [
    (signal.SIGKILL, True), (signal.SIGHUP, True), (signal.SIGTERM, True), (signal.SIGINT, True),
    (signal.SIGHUP, False), (signal.SIGTERM, False), (signal.SIGINT, False)],
    ids=["SIGKILL", "SIGHUP", "SIGTERM", "SIGINT", "SIGHUP-named", "SIGTERM-named",
         "SIGINT-named"])
def test_signal_mid_pack_leaves_nothing(tmp_path, signum, tmpfile):
    """The pack is stopped while it copies (deterministically: the copy of
    one file waits on a fifo).  The output being written has no name
    (O_TMPFILE), so even SIGKILL leaves nothing; the old output is intact.
    Without O_TMPFILE the named temporary file is removed on SIGHUP,
    SIGTERM and SIGINT."""
    _signal_mid_pack(tmp_path, signum, tmpfile, "out.cpio")


@pytest.mark.parametrize("name,signum", [("out.cpio.zst", signal.SIGINT),
                                         ("out.cpio.gz", signal.SIGTERM)])
def test_signal_mid_compressed_pack_leaves_nothing(tmp_path, name, signum):
    """The same while a compressed archive is written in order (the reading
    thread and the compressor's threads are running)."""
    _signal_mid_pack(tmp_path, signum, True, name)


def _signal_mid_pack(tmp_path, signum, tmpfile: bool, name: str) -> None:
    src = tmp_path / "src"
    _small_tree(src)
    (src / "block").write_bytes(b"x" * 5000)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / name
    out.write_bytes(b"precious")
    os.mkfifo(tmp_path / "never")
    ready_r, ready_w = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(ROOT), RUMPFS_TEST_READY=str(ready_w),
               RUMPFS_TEST_FIFO=str(tmp_path / "never"))
    if not tmpfile:
        env["RUMPFS_TEST_NO_TMPFILE"] = "1"
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKING_PACK, "pack", "--no-stubetc",
                             str(src), "-o", str(out)], env=env, stderr=subprocess.PIPE,
                            pass_fds=(ready_w,), start_new_session=True)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"!", proc.communicate()[1]
        beside = sorted(os.listdir(outdir))
        assert beside == [name] if tmpfile else len(leftovers(outdir)) == 1, beside
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        os.close(ready_r)
        # A copy worker still waiting on the fifo (SIGKILL or SIGHUP left it:
        # a real copy would end and write into the unnamed file).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    err = proc.stderr.read()
    proc.stderr.close()
    if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert proc.returncode == 128 + signum  # 130, 143, 129: as a shell reports them
        assert err == b"rumpfs: interrupted; no output written\n"
    else:
        assert proc.returncode == -signum
    assert os.listdir(outdir) == [name]
    assert out.read_bytes() == b"precious"


def test_nohup_keeps_sighup_ignored(tmp_path, capsys):
    """SIGHUP stops a pack like SIGTERM, unless it was ignored (nohup)."""
    from rumpfs import cli
    saved = {n: signal.getsignal(n) for n in (signal.SIGHUP, signal.SIGTERM)}
    try:
        for before, after in ((signal.SIG_IGN, signal.SIG_IGN), (signal.SIG_DFL, cli._terminate)):
            signal.signal(signal.SIGHUP, before)
            assert cli.main(["ls", str(tmp_path / "none")]) == 1
            assert signal.getsignal(signal.SIGHUP) == after
    finally:
        for n, handler in saved.items():
            signal.signal(n, handler)


# -- sources that change while they are packed ---------------------------------------

#: Runs the CLI with RUMPFS_TEST_CHANGE (statements on ``victim``, a bytes
#: path) run once when the file RUMPFS_TEST_VICTIM is about to be opened for
#: its copy (after the walk saw it; in a copy worker, which inherits the
#: hook, or here), or with RUMPFS_TEST_DURING, once while it is being copied
#: (after the open, before the data runs are read), or with
#: RUMPFS_TEST_AT_LAYOUT, when the FFS layout looks for its holes.
_CHANGING_PACK = (
    "import os, runpy, sys\n"
    "import rumpfs.output as o\n"
    "import rumpfs.tree as t\n"
    "victim = os.environ['RUMPFS_TEST_VICTIM'].encode()\n"
    "change = os.environ['RUMPFS_TEST_CHANGE']\n"
    "done = []\n"
    "def run_once():\n"
    "    if not done:\n"
    "        done.append(1)\n"
    "        exec(change, {'os': os, 'victim': victim})\n"
    "real_open, real_runs = o._open_path, o.data_runs\n"
    "def opening(path, *rest):\n"
    "    if path == victim and not (os.environ.get('RUMPFS_TEST_DURING')\n"
    "                               or os.environ.get('RUMPFS_TEST_AT_LAYOUT')):\n"
    "        run_once()\n"
    "    return real_open(path, *rest)\n"
    "def copying(fd, *rest):\n"
    "    if os.environ.get('RUMPFS_TEST_DURING') and os.path.samestat(os.fstat(fd), os.stat(victim)):\n"
    "        run_once()\n"
    "    return real_runs(fd, *rest)\n"
    "o._open_path, o.data_runs = opening, copying\n"
    "real_extents = t._data_extents\n"
    "def laying_out(path, *rest):\n"
    "    if path == victim and os.environ.get('RUMPFS_TEST_AT_LAYOUT'):\n"
    "        run_once()\n"
    "    return real_extents(path, *rest)\n"
    "t._data_extents = laying_out\n"
    "sys.argv = ['rumpfs'] + sys.argv[1:]\n"
    "runpy.run_module('rumpfs', run_name='__main__')\n")

#: The victim's size: above GATHER_FILE_MAX, so that its copy reads data runs.
VICTIM_SIZE = 100_000


def _changing_pack(tmp_path, output: str, change: str, during: bool = False, args=(),
                   at_layout: bool = False, size: int = VICTIM_SIZE):
    src = tmp_path / "src"
    _small_tree(src)
    victim = src / "sub" / "b"
    os.truncate(victim, size)
    if at_layout:  # sparse, so that the FFS layout opens it to find the holes
        os.truncate(victim, 0)
        os.truncate(victim, VICTIM_SIZE)
        with open(victim, "r+b") as f:
            f.write(b"data")
    os.utime(victim, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    env = dict(os.environ, PYTHONPATH=str(ROOT), RUMPFS_TEST_VICTIM=str(victim),
               RUMPFS_TEST_CHANGE=change)
    if during:
        env["RUMPFS_TEST_DURING"] = "1"
    if at_layout:
        env["RUMPFS_TEST_AT_LAYOUT"] = "1"
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = subprocess.run([sys.executable, "-c", _CHANGING_PACK, "pack", "--no-stubetc", *args,
                           str(src), "-o", output], env=env, cwd=outdir, capture_output=True,
                          timeout=120)
    return proc, victim, outdir


CHANGES = {
    "grow": ("with open(victim, 'ab') as f: f.write(b'0123456789')",
             f"size {VICTIM_SIZE} -> {VICTIM_SIZE + 10}"),
    "shrink": ("os.truncate(victim, 10)", f"size {VICTIM_SIZE} -> 10"),
    # Same size, new bytes, a new time: only the time tells.
    "rewrite": ("with open(victim, 'r+b') as f: f.write(b'new bytes')\n"
                "os.utime(victim, ns=(1_600_000_001_500_000_000, 1_600_000_001_500_000_000))",
                "mtime 1600000000 -> 1600000001.5"),
    "fifo": ("os.unlink(victim); os.mkfifo(victim)", "now a fifo"),
    "symlink": ("os.unlink(victim); os.symlink('../a', victim)", "now a symlink"),
}


@pytest.mark.parametrize("output", ["out.cpio", "out.img"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_source_changed_before_its_copy_is_an_error(tmp_path, change, output):
    """Between the walk and the copy the file grows, shrinks, is rewritten
    with a new time, or becomes a fifo (which must not hang the copy) or a
    symlink: one line naming the file, status 1, nothing written."""
    statement, what = CHANGES[change]
    proc, victim, outdir = _changing_pack(tmp_path, output, statement)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.decode() == f"rumpfs: error: {victim}: changed while being packed ({what})\n"
    assert os.listdir(outdir) == []


@pytest.mark.parametrize("output,args", [("out.cpio.gz", ()), ("-", ("--format", "cpio"))],
                         ids=["compressed", "stdout"])
@pytest.mark.parametrize("change", ["grow", "fifo"])
def test_source_changed_before_a_sequential_copy_is_an_error(tmp_path, change, output, args):
    """The same through the sinks that read files in order (compressed,
    and a stream, where what went out before the error cannot be taken back)."""
    statement, what = CHANGES[change]
    proc, victim, outdir = _changing_pack(tmp_path, output, statement, args=args)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.decode() == f"rumpfs: error: {victim}: changed while being packed ({what})\n"
    assert os.listdir(outdir) == []


@pytest.mark.parametrize("output", ["out.cpio", "out.img"])
def test_source_that_grows_during_its_copy_is_an_error(tmp_path, output):
    """A file appended to after it was opened (its first bytes may already
    be in the image) is caught by the check after the copy."""
    proc, victim, outdir = _changing_pack(
        tmp_path, output, "with open(victim, 'ab') as f: f.write(b'more')", during=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.decode() == (f"rumpfs: error: {victim}: changed while being packed "
                                    f"(size {VICTIM_SIZE} -> {VICTIM_SIZE + 4})\n")
    assert os.listdir(outdir) == []


# -- a full, read-only or forbidden output directory -------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (mounting needs root): an output directory that fills up."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("name", ["out.cpio", "out.img", "out.cpio.gz", "out.o"])
def test_full_output_file_system_is_named(small_tmpfs, tmp_path, name):
    """ENOSPC, met by a copy worker (cpio, FFS, object) or by this process
    (compressed), is one line naming the output; the unnamed file is gone
    (the file system is as free as before)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(random.Random(1).randbytes(2 << 20))  # incompressible
    free = _free_bytes(small_tmpfs)
    out = small_tmpfs / name
    res = run_rumpfs("pack", "--no-stubetc", src, "-o", out, check=False)
    _assert_refused(res, f"{out}: cannot write: No space left on device")
    assert os.listdir(small_tmpfs) == [] and _free_bytes(small_tmpfs) == free


def test_full_output_file_system_with_many_workers_is_named(small_tmpfs, many_files):
    out = small_tmpfs / "many.cpio"
    res = run_rumpfs("pack", "--no-stubetc", many_files, "-o", out, check=False)
    _assert_refused(res, f"{out}: cannot write: No space left on device")
    assert os.listdir(small_tmpfs) == []


def test_read_only_output_file_system_is_named(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs: {proc.stderr.strip()}")
    try:
        src = tmp_path / "src"
        _small_tree(src)
        out = mnt / "out.cpio"
        res = run_rumpfs("pack", "--no-stubetc", src, "-o", out, check=False)
        _assert_refused(res, f"{out}: cannot create output: Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("existing", [False, True])
def test_forbidden_output_directory_is_named(tmp_path, existing):
    """A directory the user may not write (as root without the capability
    to override permissions, as conftest's no_dac runs it): one line, and an
    old output there unchanged."""
    src = tmp_path / "src"
    _small_tree(src)
    outdir = tmp_path / "locked"
    outdir.mkdir()
    out = outdir / "out.cpio"
    if existing:
        out.write_bytes(b"precious")
    os.chmod(outdir, 0o555)
    try:
        res = run_rumpfs("pack", "--no-stubetc", src, "-o", out, check=False, no_dac=True)
    finally:
        os.chmod(outdir, 0o755)
    _assert_refused(res, f"{out}: cannot create output: Permission denied")
    assert os.listdir(outdir) == (["out.cpio"] if existing else [])
    if existing:
        assert out.read_bytes() == b"precious"


def test_sparse_source_replaced_by_a_fifo_before_the_layout_does_not_hang(tmp_path):
    """The FFS layout opens a sparse file to find its holes: a fifo put in
    its place is not waited on, and the copy then says what changed."""
    proc, victim, outdir = _changing_pack(tmp_path, "out.img", CHANGES["fifo"][0], at_layout=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.decode() == f"rumpfs: error: {victim}: changed while being packed (now a fifo)\n"
    assert os.listdir(outdir) == []


def test_stdout_closed_is_one_line(tmp_path):
    src = tmp_path / "src"
    _small_tree(src)
    proc = subprocess.run([sys.executable, "-m", "rumpfs", "pack", "--no-stubetc", "-f", "cpio",
                           str(src), "-o", "-"], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          preexec_fn=lambda: os.close(1))
    assert proc.returncode == 1
    assert proc.stderr.decode() == ("rumpfs: error: -: cannot write to standard output: "
                                    "Bad file descriptor\n")


def test_stdout_reader_gone_ends_quietly(tmp_path):
    """A reader that went away (``| head -c 10``): the command ends as cat
    would, status 141 and no error line."""
    src = tmp_path / "src"
    _small_tree(src)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "rumpfs", "pack", "--no-stubetc", "-f", "cpio",
                               str(src), "-o", "-"], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, b"")


@pytest.mark.parametrize("kind", ["block device", "directory"])
def test_block_device_or_directory_output_is_refused(tmp_path, kind):
    src = tmp_path / "src"
    _small_tree(src)
    path = tmp_path / "out.cpio"
    if kind == "directory":
        path.mkdir()
    else:
        try:
            os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 200))
        except PermissionError:
            pytest.skip("making a block device node needs root")
    before = os.lstat(path)
    res = run_rumpfs("pack", "--no-stubetc", src, "-o", path, check=False)
    _assert_refused(res, f"{path}: output is a {kind}; it is not replaced")
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode,
                                                             before.st_rdev)


@pytest.mark.parametrize("named", [False, True], ids=["dash", "device"])
def test_a_terminal_is_refused(tmp_path, named):
    """An archive is no use on a screen (bsdtar refuses it too): standard
    output or a terminal's device named by -o (a pty here)."""
    import pty
    src = tmp_path / "src"
    _small_tree(src)
    controller, terminal = pty.openpty()
    output = os.ttyname(terminal) if named else "-"
    try:
        proc = subprocess.run([sys.executable, "-m", "rumpfs", "pack", "--no-stubetc", "-f", "cpio",
                               str(src), "-o", output], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=terminal, stderr=subprocess.PIPE)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"rumpfs: error: {output}: not writing a cpio image to a terminal\n"


@pytest.mark.parametrize("output", ["out.cpio", "out.img"])
@pytest.mark.parametrize("change,what", [("grow", "size 1000 -> 1010"), ("fifo", "now a fifo")])
def test_small_source_changed_before_its_gathered_copy_is_an_error(tmp_path, output, change,
                                                                   what):
    """A small file is read into a buffer gathered with its neighbours'
    (one preadv): the same checks, the same line."""
    proc, victim, outdir = _changing_pack(tmp_path, output, CHANGES[change][0], size=1000)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.decode() == f"rumpfs: error: {victim}: changed while being packed ({what})\n"
    assert os.listdir(outdir) == []
