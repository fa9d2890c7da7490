"""The progress line: bytes copied by forked workers count, once, as they go."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
import threading

import pytest
from conftest import ROOT

from rumpfs import output
from rumpfs.output import GATHER_FILE_MAX, PIECE_BYTES, Copier, ImageSink, Progress
from rumpfs.tree import HostData

MiB = 1 << 20


class _Stream(io.StringIO):
    def isatty(self) -> bool:
        return False


# -- through the command line ---------------------------------------------------

#: Each copy_file_range of the copy workers waits (they inherit the patch), so
#: that copying FILES pieces of DATA takes about two seconds on any machine.
FILES = 24
DATA = 2 * MiB
_SLOW_PACK = (
    "import os, runpy, sys, time\n"
    "import rumpfs.output as o\n"
    "o.LOG_SECONDS = 0.2\n"  # a line in a log every 0.2 s rather than 5
    f"pause = 2.0 * min(len(os.sched_getaffinity(0)), 4) / {FILES}\n"  # the Copier's default workers
    "real = os.copy_file_range\n"
    "def slow(*args):\n"
    "    time.sleep(pause)\n"
    "    return real(*args)\n"
    "os.copy_file_range = slow\n"
    "sys.argv = ['rumpfs'] + sys.argv[1:]\n"
    "runpy.run_module('rumpfs', run_name='__main__')\n")


@pytest.mark.parametrize("name", [
    # The copy workers forked by api.pack before the tree is made.
    "out.cpio",
    # The image goes to a file of its own: workers forked by its writer.
    "out.S",
])
def test_progress_moves_while_workers_copy(tmp_path, name):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(FILES):
        with open(src / f"f{i:02}", "wb") as f:
            f.truncate(DATA)  # sparse but for a first byte: one copy_file_range each
            f.write(b"x")
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-c", _SLOW_PACK, "pack", "--progress", "--no-stubetc", "-f", "cpio",
         str(src), "-o", str(out)],
        capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    # stderr is a pipe here, not a terminal: plain lines.
    assert "\r" not in err and err.endswith("\n")
    lines = err.splitlines()
    label = re.escape(f"rumpfs: {name}: ")
    assert re.fullmatch(label + r"(\d+) MiB, done", lines[-1]), err
    final = int(re.fullmatch(label + r"(\d+) MiB, done", lines[-1]).group(1))
    assert final == FILES * DATA // MiB
    shown = [re.fullmatch(label + r"(\d+) MiB of \d+ MiB \(\d+%\)"
                          r"(?:, [\d.]+ MiB/s(?:, \d+:\d\d left)?)?", line)
             for line in lines[:-1]]
    assert all(shown), err
    values = [int(m.group(1)) for m in shown]
    assert values == sorted(values), err
    # The line moved while the workers copied: not only 0 and then the end.
    assert len({v for v in values if 0 < v < final}) >= 2, err


# -- counting --------------------------------------------------------------------

def _host_files(tmp_path, sizes) -> list:
    rnd = random.Random(3)
    datas = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}"
        path.write_bytes(rnd.randbytes(size))
        datas.append(HostData(os.fsencode(path), size))
    return datas


#: Small files (gathered into one write), large ones (copy_file_range), one
#: cut into pieces.
SIZES = [1, 511, 4096, 9000, GATHER_FILE_MAX, 70000, 300_000] * 20 + [PIECE_BYTES + 12345]


@pytest.mark.parametrize("when", ["before", "after"])
def test_worker_bytes_are_counted_once(tmp_path, when):
    """Every data byte counts exactly once, whether the workers report it
    (the progress existed when they were forked) or the copier does when
    it reaps them (it did not), across a wait and the final finish."""
    datas = _host_files(tmp_path, SIZES)
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT)
    progress = Progress(1, "t", enabled=True, stream=_Stream())
    try:
        copier = Copier(fd, workers=2, progress=progress if when == "before" else None)
        copier.start()
        sink = ImageSink(fd, 0, progress)
        sink.use_copier(copier)
        assert copier.reporting == [when == "before"] * 2
        pos = 0
        half = len(datas) // 2
        for data in datas[:half]:
            sink.copy_at(data, pos)
            pos += data.size
        sink.wait_for_copies()
        assert progress.done == sum(d.size for d in datas[:half])
        for data in datas[half:]:
            sink.copy_at(data, pos)
            pos += data.size
        sink.finish(pos)
        assert progress.done == sum(SIZES)
    finally:
        progress.close()
        os.close(fd)
    image = (tmp_path / "out").read_bytes()
    assert image == b"".join((tmp_path / f"f{i}").read_bytes() for i in range(len(SIZES)))


def test_holes_left_unwritten_count_as_done(tmp_path):
    """The holes of a large sparse file are not copied, but the progress
    still ends at the file's size, and the image reads zeros there."""
    size = 3 * PIECE_BYTES
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(PIECE_BYTES)
        f.write(b"x" * 4096)
    data = HostData(os.fsencode(path), size, sparse_hint=True)
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT)
    progress = Progress(1, "t", enabled=True, stream=_Stream())
    try:
        sink = ImageSink(fd, 0, progress, workers=0)
        sink.copy_at(data, 100)
        sink.finish(100 + size)
        assert progress.done == size
    finally:
        progress.close()
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == bytes(100) + path.read_bytes()


def test_counters_of_forked_children_add_up():
    progress = Progress(None, "t", enabled=True, stream=_Stream())
    try:
        counters = [progress.worker_counter() for _ in range(8)]
        progress.advance(5)
        pids = []
        for k, counter in enumerate(counters):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 0
                try:
                    for _ in range(1000):
                        counter.add(k + 1)
                    counter.add(1 << 40)  # more than 32 bits
                except BaseException:  # noqa: B036 - any failure, as the exit status
                    code = 1
                os._exit(code)
            pids.append(pid)
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
        assert progress.done == 5 + sum(1000 * (k + 1) for k in range(8)) + 8 * (1 << 40)
        progress.done += 3  # other code may set it: it stays the sum
        assert progress.done == 8 + sum(1000 * (k + 1) for k in range(8)) + 8 * (1 << 40)
    finally:
        progress.close()


def test_slots_run_out_into_none():
    progress = Progress(None, "t", enabled=True, stream=_Stream())
    try:
        counters = []
        while (counter := progress.worker_counter()) is not None:
            counters.append(counter)
        assert len(counters) >= 16
        assert len({c._slot for c in counters}) == len(counters)
    finally:
        progress.close()


def test_disabled_progress_has_no_thread_and_no_shared_memory(tmp_path, monkeypatch):
    import mmap
    made = []
    real_mmap, real_start = mmap.mmap, threading.Thread.start
    monkeypatch.setattr(mmap, "mmap", lambda *a, **k: made.append("mmap") or real_mmap(*a, **k))
    monkeypatch.setattr(threading.Thread, "start",
                        lambda self: made.append("thread") or real_start(self))
    # The patches see what an enabled progress makes ...
    enabled = Progress(10, "t", enabled=True, stream=_Stream())
    enabled.close()
    assert made == ["mmap", "thread"] and not enabled._thread.is_alive()
    made.clear()
    # ... and a disabled one makes neither, nor do the copies it counts.
    stream = _Stream()
    progress = Progress(10, "t", enabled=False, stream=stream)
    assert progress.worker_counter() is None
    datas = _host_files(tmp_path, [70000] * 8)
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT)
    try:
        sink = ImageSink(fd, 0, progress, workers=2)
        sink.copier.start()
        assert sink.copier.reporting == [False, False]
        for k, data in enumerate(datas):
            sink.copy_at(data, k * 70000)
        sink.finish(8 * 70000)
    finally:
        os.close(fd)
    progress.close()
    assert made == []
    assert progress.done == 8 * 70000
    assert stream.getvalue() == ""


def test_the_line_moves_while_this_process_waits():
    """Nothing advances here: the redraw thread shows what a child reported."""
    stream = _Stream()
    ticks = iter(range(1, 1 << 30))  # a second later at every look: always due
    progress = Progress(4 * MiB, "t", enabled=True, stream=stream, terminal=True,
                        clock=lambda: next(ticks))
    try:
        counter = progress.worker_counter()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            counter.add(3 * MiB)
            os._exit(0)
        os.waitpid(pid, 0)
        for _ in range(50):
            if "\rt: 3 MiB of 4 MiB (75%)" in stream.getvalue():
                break
            threading.Event().wait(0.1)
        assert "\rt: 3 MiB of 4 MiB (75%)" in stream.getvalue()
    finally:
        progress.close()
    assert re.search(r"\rt: 3 MiB, done *\n$", stream.getvalue())
    assert not progress._thread.is_alive()


def test_redraws_are_spaced(monkeypatch):
    """advance() and the thread together draw at most once per REDRAW_SECONDS."""
    clock = [1000.0]
    monkeypatch.setattr(output.time, "monotonic", lambda: clock[0])  # the default clock
    stream = _Stream()
    progress = Progress(None, "t", enabled=True, stream=stream, terminal=True)
    progress._stop.set()  # only advance() draws here
    progress._thread.join()
    try:
        progress.advance(MiB)
        progress.advance(MiB)
        clock[0] += 0.1
        progress.advance(MiB)
        assert stream.getvalue() == "\rt: 1 MiB"
        clock[0] += output.REDRAW_SECONDS
        progress.advance(MiB)
        assert stream.getvalue() == "\rt: 1 MiB\rt: 4 MiB, 6.7 MiB/s"
    finally:
        progress.close()


def test_an_unfinished_progress_ends_its_line():
    stream = _Stream()
    progress = Progress(None, "x", enabled=True, stream=stream, terminal=True, clock=lambda: 5.0)
    progress.advance(3 * MiB)
    progress.close(finished=False)
    assert stream.getvalue() == "\rx: 3 MiB\n"


def test_an_unfinished_progress_in_a_log_adds_nothing():
    """Plain lines end themselves: the error that follows needs no newline."""
    stream = _Stream()
    clock = [0.0]
    progress = Progress(None, "x", enabled=True, stream=stream, clock=lambda: clock[0])
    clock[0] = output.LOG_SECONDS
    progress.advance(3 * MiB)
    progress.close(finished=False)
    assert stream.getvalue() == "x: 3 MiB, 0.6 MiB/s\n"


def test_a_failed_pack_leaves_the_error_its_own_line(tmp_path, capsys, monkeypatch):
    """The progress line of a pack that fails is ended (no 'done'), so the
    error printed next does not share it."""
    from rumpfs import api
    from rumpfs.errors import RumpfsError
    from rumpfs.formats.cpio import writer

    def failing(tree, out, variant="newc"):
        out.progress.advance(5 * MiB)
        raise RumpfsError("boom")

    monkeypatch.setattr(writer, "write_archive", failing)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(RumpfsError):
        api.pack([src], tmp_path / "o.cpio", stubetc=False, progress=True)
    err = capsys.readouterr().err
    assert re.fullmatch(r"\rrumpfs: o\.cpio: 5 MiB(, [\d.]+ MiB/s)?\n", err), err


# -- what the lines say --------------------------------------------------------------

def _quiet(progress: Progress) -> Progress:
    """Only advance() draws (no redraw thread): every line is the test's."""
    progress._stop.set()
    progress._thread.join()
    return progress


def test_log_lines_are_plain_and_periodic():
    """Not on a terminal: no \\r, a whole line every LOG_SECONDS (none at
    once), with the share, the rate and the time left; then the total."""
    clock = [100.0]
    stream = _Stream()
    progress = _quiet(Progress(100 * MiB, "t", enabled=True, stream=stream,
                               clock=lambda: clock[0]))
    progress.advance(10 * MiB)
    clock[0] += output.LOG_SECONDS - 0.1
    progress.advance(10 * MiB)
    assert stream.getvalue() == ""
    clock[0] += 0.1
    progress.advance(10 * MiB)  # 30 MiB in 5 s: 6 MiB/s, 70 MiB left: 12 s
    assert stream.getvalue() == "t: 30 MiB of 100 MiB (30%), 6.0 MiB/s, 0:12 left\n"
    clock[0] += 2
    progress.advance(40 * MiB)
    clock[0] += 3
    progress.advance(0)  # 70 MiB in 10 s: 7 MiB/s, 30 MiB left: 4 s
    progress.close()
    assert stream.getvalue() == ("t: 30 MiB of 100 MiB (30%), 6.0 MiB/s, 0:12 left\n"
                                 "t: 70 MiB of 100 MiB (70%), 7.0 MiB/s, 0:04 left\n"
                                 "t: 70 MiB, done\n")


def test_terminal_line_shows_rate_and_time_left_and_blanks_the_rest():
    clock = [0.0]
    stream = _Stream()
    progress = _quiet(Progress(3000 * MiB, "t", enabled=True, stream=stream, terminal=True,
                               clock=lambda: clock[0]))
    progress.advance(0)
    clock[0] = 1.0
    progress.advance(1 * MiB)  # 1 MiB/s: 2999 s left
    first = "\rt: 0 MiB of 3000 MiB (0%)"
    second = "\rt: 1 MiB of 3000 MiB (0%), 1.0 MiB/s, 49:59 left"
    assert stream.getvalue() == first + second
    clock[0] = 2.0
    progress.advance(2997 * MiB)  # 1499 MiB/s, 2 MiB left: 0 s
    third = "\rt: 2998 MiB of 3000 MiB (100%), 1499.0 MiB/s, 0:00 left"
    assert stream.getvalue() == first + second + third
    progress.close()
    done = "\rt: 2998 MiB, done"
    assert stream.getvalue() == first + second + third + done + " " * (len(third) - len(done)) + "\n"


@pytest.mark.parametrize("seconds,shown", [(0, "0:00"), (59.4, "0:59"), (61, "1:01"),
                                           (3599.6, "1:00:00"), (36000 + 62, "10:01:02")])
def test_time_left_reads_like_a_clock(seconds, shown):
    assert output._duration(seconds) == shown
