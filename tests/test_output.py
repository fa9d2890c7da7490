"""The output path: copies by worker processes, and what happens when they fail."""

from __future__ import annotations

import os
import random
import subprocess

import pytest
from conftest import leftovers, run_rumpfs
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
        ["python3", "-c", code, "pack", "--no-stubetc", str(many_files), "-o", str(out)],
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
                           f"{victim}: file changed while it was read (expected {size} bytes)")


def test_small_trees_copy_without_workers(tmp_path):
    """Below the threshold no process is forked (checked through the API)."""
    from rumpfs.output import ImageSink
    from rumpfs.tree import HostData
    src = tmp_path / "f"
    src.write_bytes(b"x" * 10000)
    fd = os.open(tmp_path / "o", os.O_RDWR | os.O_CREAT)
    sink = ImageSink(fd)
    sink.copy_at(HostData(os.fsencode(src), 10000), 100)
    sink.finish(20000)
    assert sink.copier.procs == [] and sink.copier.turn == 0
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


def test_large_copies_go_to_one_worker_small_ones_to_all(tmp_path):
    """Writes into one file take its lock in turn, so a second worker would
    copy large files no sooner and only spend CPU waiting: every copy over
    GATHER_FILE_MAX goes to the first worker, while the small files are
    shared (their opens and reads overlap).  Each worker's own byte counter
    tells who copied what."""
    import io

    from rumpfs.output import GATHER_FILE_MAX, ImageSink, Progress
    from rumpfs.tree import HostData
    rnd = random.Random(3)
    sizes = [GATHER_FILE_MAX + 1 + 4096 * k if k % 5 == 0 else 1000 + k for k in range(60)]
    jobs, payloads, offset = [], [], 0
    for k, size in enumerate(sizes):
        src = tmp_path / f"f{k}"
        payloads.append(rnd.randbytes(size))
        src.write_bytes(payloads[-1])
        jobs.append((HostData(os.fsencode(src), size), 0, offset, size))
        offset += size + 7
    large = sum(size for size in sizes if size > GATHER_FILE_MAX)
    small = sum(sizes) - large
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
    first, second = progress._counts[0], progress._counts[1]
    assert first + second == large + small
    assert first >= large and 0 < second <= small
    image = (tmp_path / "image").read_bytes()
    for (data, _src, dst, size), payload in zip(jobs, payloads):
        assert image[dst:dst + size] == payload, data.path


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
