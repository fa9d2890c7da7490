"""Compressed cpio written on several threads (rumpfs/compress.py, docs/compression.md).

The judges are the standard tools: gzip, xz, zstd and lz4 decompress what
rumpfs wrote, GNU cpio and bsdtar read the archive inside, and the result is
compared file by file with the source tree.  The outputs must be the same
bytes whatever the number of threads; small blocks
($RUMPFS_COMPRESS_BLOCK_SIZE) make many blocks out of a small tree.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import run_rumpfs
from treecompare import assert_same, normalized, scan_host

from rumpfs import compress, compress_layout
from rumpfs.api import PackOptions, pack
from rumpfs.errors import OptionError, RumpfsError

SUFFIX = {"gzip": "gz", "xz": "xz", "zstd": "zst", "lz4": "lz4"}
#: Each method's own command-line tool, which decompresses to standard output.
DECOMPRESS = {"gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"], "zstd": ["zstd", "-dcq"],
              "lz4": ["lz4", "-dcq"]}
#: Small blocks: a tree of a few hundred KiB makes tens of them.
SMALL_BLOCK = 16 << 10
WORKER_COUNTS = (1, 2, 16)
MTIME = 1_600_000_000


def text(rng: random.Random, size: int) -> bytes:
    """Compressible bytes: words repeated at random, as in source code."""
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 9)))
             for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + rng.choice((b" ", b" ", b"\n", b"(", b"): "))
    return bytes(out[:size])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """About 400 KiB: text, random bytes (incompressible blocks), a file
    repeated far apart, empty files, a symlink and a hard link."""
    top = tmp_path_factory.mktemp("compress") / "src"
    rng = random.Random(22)
    repeated = rng.randbytes(20_000)
    for d in range(4):
        sub = top / f"dir{d}" / "sub"
        sub.mkdir(parents=True)
        for f in range(6):
            (sub / f"text{f}.py").write_bytes(text(rng, rng.randint(1, 30_000)))
        (top / f"dir{d}" / "random.bin").write_bytes(rng.randbytes(rng.randint(1, 40_000)))
        (top / f"dir{d}" / "repeated").write_bytes(repeated)
        (top / f"dir{d}" / "empty").write_bytes(b"")
    (top / "link").symlink_to("dir0/sub/text0.py")
    os.link(top / "dir1" / "random.bin", top / "hardlink")
    for path in [*top.rglob("*"), top]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    return top


def packed(source: Path, out: Path, method: str, workers: int, block: int | None = SMALL_BLOCK,
           *extra) -> bytes:
    env = {compress.WORKERS_ENV: str(workers)}
    if block is not None:
        env[compress.BLOCK_SIZE_ENV] = str(block)
    run_rumpfs("pack", "--no-stubetc", "--no-progress", *extra, source, "-o", out, env=env)
    return out.read_bytes()


def decompressed_by_tool(method: str, path: Path) -> bytes:
    return subprocess.run([*DECOMPRESS[method], str(path)], capture_output=True, check=True).stdout


def expected_records(source: Path) -> dict:
    # Owners become 0:0; GNU cpio sets no time on directories (it fills them
    # after) and symlinks, the root is the extraction directory.
    records = normalized(scan_host(source))
    return {p: dict(r, mtime=None) if r["type"] in ("dir", "symlink") else r
            for p, r in records.items()}


def extracted(records: dict) -> dict:
    return {p: dict(r, mtime=None) if r["type"] in ("dir", "symlink") else r
            for p, r in records.items()}


@pytest.mark.parametrize("method", compress.METHODS)
def test_same_bytes_on_any_number_of_threads_and_read_by_the_standard_tools(source, tmp_path, method):
    outputs = {w: packed(source, tmp_path / f"w{w}.cpio.{SUFFIX[method]}", method, w)
               for w in WORKER_COUNTS}
    assert outputs[1] == outputs[2] == outputs[16]

    # The method's own tool decompresses it; GNU cpio extracts what it gave.
    path = tmp_path / f"w2.cpio.{SUFFIX[method]}"
    archive = decompressed_by_tool(method, path)
    dest = tmp_path / "gnu-cpio"
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--numeric-uid-gid"], input=archive, cwd=dest,
                   check=True, capture_output=True)
    keys = ("type", "mode", "size", "nlink", "mtime", "target", "sha256")
    assert_same(expected_records(source), extracted(scan_host(dest)), keys=keys)

    # libarchive reads the compressed file with its own decompressors.
    dest = tmp_path / "bsdtar"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(path), "--numeric-owner"], cwd=dest, check=True)
    assert_same(expected_records(source), extracted(scan_host(dest)), keys=keys)

    # And the archive is the one written uncompressed.
    plain = tmp_path / "plain.cpio"
    run_rumpfs("pack", "--no-stubetc", "--no-progress", source, "-o", plain)
    assert archive == plain.read_bytes()
    if method != "zstd":  # zstd ignores the block size (its own threads cut the jobs)
        assert len(archive) > 10 * SMALL_BLOCK

    # rumpfs's own readers read it too.
    run_rumpfs("check", path)
    assert run_rumpfs("cat", path, "/dir3/sub/text5.py").stdout == \
        (source / "dir3" / "sub" / "text5.py").read_bytes()


@pytest.mark.parametrize("method", compress.METHODS)
def test_the_blocks_do_not_depend_on_how_the_data_is_written(tmp_path, method, monkeypatch):
    """The writer's pieces (large and small, across block boundaries) and
    the thread count leave the output alone; compressor() makes the same."""
    monkeypatch.setenv(compress.BLOCK_SIZE_ENV, str(SMALL_BLOCK))
    rng = random.Random(7)
    data = text(rng, 150_000) + rng.randbytes(50_000) + text(rng, 100_000)
    ways = {1: [data], 2: [data[i:i + 1] for i in range(5000)] + list(pieces(data[5000:], 9973)),
            16: list(pieces(data, 4099)), 3: list(pieces(data, SMALL_BLOCK))}
    outputs = []
    for workers, writes in ways.items():
        sink = _MemorySink()
        with compress.CompressingSink(sink, method, workers=workers) as csink:
            for piece in writes:
                csink.write(piece)
            csink.finish()
        outputs.append(bytes(sink.data))
    comp = compress.compressor(method)
    outputs.append(comp.compress(data[:77_777]) + comp.compress(data[77_777:]) + comp.flush())
    assert all(out == outputs[0] for out in outputs)
    path = tmp_path / f"data.{SUFFIX[method]}"
    path.write_bytes(outputs[0])
    assert decompressed_by_tool(method, path) == data


def pieces(data: bytes, size: int):
    for at in range(0, len(data), size):
        yield data[at:at + size]


class _MemorySink:
    """What CompressingSink writes into (an ImageSink's sequential part)."""

    progress = None

    def __init__(self):
        self.data = bytearray()

    def write(self, data) -> None:
        self.data += data

    def tell(self) -> int:
        return len(self.data)

    def finish(self, size: int) -> None:
        assert size == len(self.data)


@pytest.mark.parametrize("level,xfl", [(1, 4), (6, 0), (9, 2)])
def test_gzip_header_and_trailer_at_the_rfc_1952_offsets(source, tmp_path, level, xfl):
    out = tmp_path / "root.cpio.gz"
    raw = packed(source, out, "gzip", 2, SMALL_BLOCK, "--compress-level", str(level))
    # Header: ID1 ID2 CM FLG MTIME(4) XFL OS.
    assert raw[0:2] == b"\x1f\x8b"
    assert raw[2] == 8, "CM is not deflate"
    assert raw[3] == 0, "FLG: no text flag, header CRC, extra field, name or comment"
    assert raw[4:8] == bytes(4), "MTIME is not 0"
    assert raw[8] == xfl
    assert raw[9] == 3, "OS is not Unix"
    plain = decompressed_by_tool("gzip", out)
    # Trailer: CRC32 and ISIZE of the uncompressed data, little-endian.
    assert raw[-8:-4] == zlib.crc32(plain).to_bytes(4, "little")
    assert raw[-4:] == (len(plain) % 2**32).to_bytes(4, "little")
    # One member: after it, nothing (a decoder of gzip members, not ours).
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert d.decompress(raw) == plain
    assert d.eof and d.unused_data == b""


def test_gzip_blocks_see_the_data_before_them(tmp_path, monkeypatch):
    """Each block is primed with the 32 KiB before it: a 20 KB random piece
    repeated every 20 KB compresses to about one copy, not one per block."""
    monkeypatch.setenv(compress.BLOCK_SIZE_ENV, str(SMALL_BLOCK))
    piece = random.Random(3).randbytes(20_000)
    data = piece * 50  # 1 MB, 61 blocks
    comp = compress.compressor("gzip")
    out = comp.compress(data) + comp.flush()
    assert len(out) < 2 * len(piece)
    path = tmp_path / "x.gz"
    path.write_bytes(out)
    assert decompressed_by_tool("gzip", path) == data


def stdlib_sources(limit: int) -> bytes:
    """Real text: the Python standard library's sources, in name order."""
    top = Path(os.__file__).parent
    out = bytearray()
    for path in sorted(top.glob("*.py")):
        out += path.read_bytes()
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def test_gzip_ratio_within_one_percent_of_gzip_6(tmp_path):
    data = stdlib_sources(3 << 20)  # three default blocks
    assert len(data) == 3 << 20
    comp = compress.compressor("gzip")
    ours = comp.compress(data) + comp.flush()
    theirs = subprocess.run(["gzip", "-6", "-c", "-n"], input=data, capture_output=True,
                            check=True).stdout
    assert len(ours) <= 1.01 * len(theirs), (len(ours), len(theirs))
    path = tmp_path / "x.gz"
    path.write_bytes(ours)
    assert decompressed_by_tool("gzip", path) == data


def test_xz_stream_of_blocks_as_xz_lists_it(source, tmp_path):
    out = tmp_path / "root.cpio.xz"
    packed(source, out, "xz", 2)
    plain = decompressed_by_tool("xz", out)
    # xz --robot --list: one stream, CRC32, and a block per SMALL_BLOCK bytes.
    listing = subprocess.run(["xz", "--robot", "--list", "-vv", str(out)], capture_output=True,
                             check=True, text=True).stdout.splitlines()
    streams = [line.split("\t") for line in listing if line.startswith("stream\t")]
    blocks = [line.split("\t") for line in listing if line.startswith("block\t")]
    assert len(streams) == 1
    assert streams[0][8] == "CRC32"
    assert len(blocks) == -(-len(plain) // SMALL_BLOCK)
    sizes = [int(b[7]) for b in blocks]  # uncompressed size of each block
    assert sizes[:-1] == [SMALL_BLOCK] * (len(sizes) - 1)
    assert sum(sizes) == len(plain)
    assert all(b[9] == "CRC32" and b[12] == "cu" and b[15] == "--lzma2=dict=8MiB" for b in blocks)
    subprocess.run(["xz", "-t", str(out)], check=True)


#: Deflating a sample on this CPU and on a CPU model qemu-user emulates
#: (levels 1, 6 and 9, blocks primed with the window before them).
_DEFLATE_SAMPLE = (
    "import hashlib, os, random, sys\n"
    "from rumpfs import compress\n"
    "data = open(sys.argv[1], 'rb').read()\n"
    "h = hashlib.sha256()\n"
    "for level in (1, 6, 9):\n"
    "    c = compress.compressor('gzip', level)\n"
    "    h.update(c.compress(data) + c.flush())\n"
    "print(h.hexdigest())\n")


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ["qemu64", "Haswell"])
def test_gzip_bytes_do_not_depend_on_the_cpu(tmp_path, monkeypatch, cpu):
    """zlib-ng picks SSE2, SSE4.2, AVX2 or AVX-512 code when it starts: the
    same data deflated on a CPU model with SSE2 only (qemu64) or AVX2 and
    no AVX-512 (Haswell) gives the same bytes as on this machine."""
    sample = tmp_path / "sample"
    sample.write_bytes(stdlib_sources(1 << 20) + random.Random(5).randbytes(128 << 10))
    monkeypatch.setenv(compress.BLOCK_SIZE_ENV, str(SMALL_BLOCK))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    native = subprocess.run([sys.executable, "-c", _DEFLATE_SAMPLE, str(sample)], env=env,
                            capture_output=True, text=True, check=True).stdout
    emulated = subprocess.run(["qemu-x86_64", "-cpu", cpu, sys.executable, "-c", _DEFLATE_SAMPLE,
                               str(sample)], env=env, capture_output=True, text=True, check=True,
                              timeout=600).stdout
    assert len(native) == 65 and emulated == native


def test_default_xz_blocks_are_three_dictionaries():
    # What xz -T0 -6 cuts (xz(1): --block-size).
    assert compress._XzBlocks(6, None).block_size == 24 << 20
    assert compress._XzBlocks(0, None).block_size == 1 << 20
    assert [compress.lzma2_dict_code(d) for d in compress.XZ_PRESET_DICT] == \
        [12, 16, 18, 20, 20, 22, 22, 24, 26, 28]  # what xz -lvv shows as dict=256KiB ... 64MiB


def _big_file_tree(tmp_path) -> Path:
    """A 200 MB file (sparse: zeros compress fast)."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big", "wb") as f:
        f.truncate(200 << 20)
    return src


def _pack_peak_kib(src: Path, out: Path) -> int:
    """Peak RSS of packing ``src`` into ``out`` on two compressing threads."""
    # VmHWM: this process's peak (ru_maxrss would count the forking parent's).
    script = ("import re, sys\n"
              "from rumpfs.cli import main\n"
              "rc = main(sys.argv[1:])\n"
              "print(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read())[1])\n"
              "sys.exit(rc)\n")
    env = dict(os.environ, **{compress.WORKERS_ENV: "2"})
    proc = subprocess.run([sys.executable, "-c", script, "pack", "--no-stubetc", "--no-progress",
                           str(src), "-o", str(out)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


@pytest.mark.parametrize("method", ["gzip", "lz4", "zstd"])
def test_memory_stays_bounded_on_a_large_file(tmp_path, method):
    """The file is never held in memory, and what the compressors hold
    stays within the memory target."""
    src = _big_file_tree(tmp_path)
    out = tmp_path / f"big.cpio.{SUFFIX[method]}"
    peak_kib = _pack_peak_kib(src, out)
    # Issue 22.5: 60 MiB + 0.5 KiB per entry (140 MB with no bound on gzip).
    assert peak_kib < 60 << 10, f"peak RSS {peak_kib} KiB"
    size = sum(len(c) for c in _chunks(subprocess.Popen([*DECOMPRESS[method], str(out)],
                                                        stdout=subprocess.PIPE)))
    assert size >= 200 << 20


def test_xz_memory_near_xz_itself(tmp_path):
    """Two LZMA2 encoders at -6 take about 94 MiB each, in rumpfs as in
    ``xz -T2``, so 60 MiB cannot hold; what rumpfs adds is its blocks in
    flight, no more than one queued beside those being compressed (two
    per thread took 1.6x xz's peak)."""
    src = _big_file_tree(tmp_path)
    peak_kib = _pack_peak_kib(src, tmp_path / "big.cpio.xz")
    archive = tmp_path / "big.cpio"
    run_rumpfs("pack", "--no-stubetc", "--no-progress", str(src), "-o", str(archive))
    xz = subprocess.Popen(["xz", "-T2", "-6", "-c", str(archive)], stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(xz.pid, 0)
    xz.returncode = os.waitstatus_to_exitcode(status)
    assert xz.returncode == 0
    xz_kib = usage.ru_maxrss
    assert peak_kib < 1.5 * xz_kib, f"peak RSS {peak_kib} KiB, xz -T2 {xz_kib} KiB"


def _chunks(proc):
    while chunk := proc.stdout.read(1 << 20):
        yield chunk
    assert proc.wait() == 0


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_bad_worker_count_is_refused(source, tmp_path, value):
    out = tmp_path / "root.cpio.gz"
    res = run_rumpfs("pack", "--no-stubetc", source, "-o", out, env={compress.WORKERS_ENV: value},
                     check=False)
    assert res.returncode == 1
    assert res.err == (f"rumpfs: error: {compress.WORKERS_ENV}={value}: not a number of threads "
                       "(at least 1)\n")
    assert not out.exists()


def test_bad_block_size_is_refused(source, tmp_path):
    out = tmp_path / "root.cpio.xz"
    res = run_rumpfs("pack", "--no-stubetc", source, "-o", out,
                     env={compress.BLOCK_SIZE_ENV: "100"}, check=False)
    assert res.returncode == 1
    assert res.err == (f"rumpfs: error: {compress.BLOCK_SIZE_ENV}=100: not a block size in bytes "
                       f"(at least {compress.MIN_BLOCK_SIZE})\n")
    assert not out.exists()


def test_api_worker_count(source, tmp_path):
    with pytest.raises(OptionError, match=r"compress_workers=0: not a number of threads"):
        pack([str(source)], str(tmp_path / "x.cpio.gz"), PackOptions(stubetc=False, compress_workers=0))
    outputs = []
    for workers in (1, 5):
        out = tmp_path / f"w{workers}.cpio.lz4"
        pack([str(source)], str(out), PackOptions(stubetc=False, compress_workers=workers))
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert decompressed_by_tool("lz4", tmp_path / "w5.cpio.lz4")[:6] == b"070701"


def test_a_failing_write_stops_the_threads(source, tmp_path, monkeypatch):
    """An error while blocks are being compressed: the error, no output, and
    no thread left running."""
    import threading

    monkeypatch.setenv(compress.BLOCK_SIZE_ENV, str(SMALL_BLOCK))
    monkeypatch.setenv(compress.WORKERS_ENV, "4")
    real = compress.CompressingSink.write
    calls = []

    def failing(self, data):
        calls.append(1)
        if len(calls) == 5:
            raise RumpfsError("stop here")
        return real(self, data)

    monkeypatch.setattr(compress.CompressingSink, "write", failing)
    monkeypatch.setattr("rumpfs.formats.cpio.writer.SMALL_FILE", 0)  # every file is copied
    out = tmp_path / "root.cpio.gz"
    with pytest.raises(RumpfsError, match="stop here"):
        pack([str(source)], str(out), PackOptions(stubetc=False))
    assert len(calls) >= 5
    assert not out.exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("rumpfs-")]


@pytest.mark.parametrize("name,values", [
    ("GZIP_HEADER", {"mtime": 0x12345678, "xfl": 2, "os": 3}),
    ("GZIP_TRAILER", {"crc32": 0xDEADBEEF, "isize": 77}),
    ("LZ4_LEGACY_HEADER", {}),
    ("LZ4_LEGACY_BLOCK", {"compressed_size": 0x01020304}),
])
def test_fixed_framing_packs_as_its_declaration(name, values):
    """What the writer packs with struct is what construct builds and parses."""
    declared = getattr(compress_layout, name)
    packed = compress_layout.PACKED[name]
    raw = packed.build(values)
    assert raw == declared.build(values)
    parsed = declared.parse(raw)
    assert vars(packed.parse(raw)) == {k: v for k, v in parsed.items() if not k.startswith("_")}


def test_gzip_lz4_and_zstd_writers_do_not_import_construct():
    # construct costs 20-35 ms of start-up: only xz (slow anyway) pays it.
    script = ("import sys\n"
              "from rumpfs import compress\n"
              "for method in ('gzip', 'lz4', 'zstd'):\n"
              "    c = compress.compressor(method)\n"
              "    c.compress(b'data' * 1000)\n"
              "    c.flush()\n"
              "print('construct' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"


def test_finished_zstd_streams_free_their_context():
    """A zstd stream's context (a thread, megabytes of buffers) goes when
    the stream is finished, not when some later garbage collection finds
    the sink's reference cycle: 300 streams one after another fit in
    512 MiB of address space (the fuzzer's workers run under such a limit;
    they ran out after a few dozen)."""
    script = (
        "import os, resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))\n"
        "from rumpfs import compress\n"
        "data = os.urandom(50000) * 4\n"
        "for _ in range(300):\n"
        "    c = compress.compressor('zstd')\n"
        "    assert c.compress(data) + c.flush()\n"
        "print('done')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr[-300:]) == (0, "done\n", "")
