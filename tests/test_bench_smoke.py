"""The benchmark keeps working: its measuring, its corpora, and a --quick smoke run.

The measuring tests are fast and run by default; the smoke run (corpora,
every tool, the table, the targets) is marked slow and runs in CI.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys

import pytest

from bench import corpora
from bench.run import measure

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_digest(top: str) -> str:
    """Names, modes, times, link targets and contents of a tree, hashed (sorted walk)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            h.update(os.path.relpath(path, top).encode() + b"\0")
            h.update(f"{st.st_mode:o} {st.st_mtime_ns} {st.st_size}".encode())
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def test_measure_reports_failure_with_last_stderr_line(tmp_path):
    run = measure(["sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3"], None, 30)
    assert not run.ok
    assert run.note == "rc 3: the real reason"


def test_measure_kills_on_timeout():
    run = measure(["sleep", "30"], None, 0.5)
    assert not run.ok
    assert run.note.startswith("TIMEOUT")
    assert run.wall < 10


def test_measure_peak_rss_is_the_tools_not_the_runners():
    # The runner is a big Python process; a tiny tool must not inherit its figure.
    small = measure(["true"], None, 30)
    assert small.ok and small.rss_kib < 8 * 1024
    big = measure([sys.executable, "-c", "b = bytearray(100 << 20); b[::4096] = b'x' * len(b[::4096])"],
                  None, 60)
    assert big.ok and 100 * 1024 < big.rss_kib < 200 * 1024


def test_measure_sizes_and_removes_the_output(tmp_path):
    out = str(tmp_path / "out.bin")
    run = measure(["sh", "-c", f"head -c 100000 /dev/zero > {out}; truncate -s 1000000 {out}"], out, 30)
    assert run.ok, run.note
    assert run.out_bytes == 1_000_000
    assert 100_000 <= run.out_alloc < 1_000_000  # the truncated tail is a hole
    assert run.cpu >= 0 and run.wall > 0
    measure(["true"], out, 30)  # a run that writes nothing: the old output is gone first
    assert not os.path.exists(out)


def test_measure_missing_output_is_a_failure(tmp_path):
    run = measure(["true"], str(tmp_path / "never"), 30)
    assert not run.ok and run.note == "no output file"


def test_corpora_are_deterministic(tmp_path):
    a, meta_a = corpora.ensure("small1k", str(tmp_path / "a"), quick=True)
    b, meta_b = corpora.ensure("small1k", str(tmp_path / "b"), quick=True)
    assert tree_digest(a) == tree_digest(b)
    assert meta_a == meta_b
    assert meta_a["files"] == 1000 and meta_a["dirs"] == 1 + 1 + 100
    # A second ensure reuses the corpus instead of regenerating it.
    mtime = os.stat(a + ".json").st_mtime_ns
    corpora.ensure("small1k", str(tmp_path / "a"), quick=True)
    assert os.stat(a + ".json").st_mtime_ns == mtime


def test_deep_corpus_shape(tmp_path):
    path, meta = corpora.ensure("deep", str(tmp_path), quick=True)
    assert meta["symlinks"] == 5000
    assert meta["hardlink_names"] == 1000
    depth = max(dirpath.count(os.sep) for dirpath, _, _ in os.walk(path)) - path.count(os.sep)
    assert depth == 201  # chain/ plus 200 levels
    longest = max(len(os.readlink(os.path.join(path, "sym", n)))
                  for n in os.listdir(os.path.join(path, "sym")) if n.startswith("long"))
    assert 126 <= longest <= 246


@pytest.mark.parametrize("fmt", ["cpio", "ffs"])
def test_profile_reports_every_phase(tmp_path, capsys, monkeypatch, fmt):
    from bench import profile

    path, meta = corpora.ensure("etc", str(tmp_path), quick=True)
    monkeypatch.setenv("RUMPFS_BENCH_WORK", str(tmp_path))
    assert profile.main([path, "--format", fmt, "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{meta['entries']} entries" in out
    for phase in ("import", "host walk", "policy", "write", "total"):
        assert any(line.startswith(phase) for line in out.splitlines()), phase
    assert not [n for n in os.listdir(tmp_path) if n.startswith("profile.")]  # scratch image removed


@pytest.mark.slow
def test_quick_benchmark_smoke(tmp_path):
    """The whole --quick run works, reference tools succeed, each target gets a verdict."""
    env = dict(os.environ, RUMPFS_CORPORA=str(tmp_path / "corpora"))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--quiet", "--corpus", "etc,deep,small1k,large",
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--timeout", "120"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "out" / "results.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    by = {(r["corpus"], r["tool"]): r for r in rows}
    for corpus in ("etc", "deep", "small1k", "large"):
        for tool in ("bsdtar-newc", "cpio-gnu-newc", "objcopy", "floor:cat>1file"):
            assert by[(corpus, tool)]["status"] == "ok", by[(corpus, tool)]
        # makefs's own sizing fails on etc and deep: the rerun with -s must work.
        assert by[(corpus, "makefs-ffs1")]["status"] in ("ok", "ok*")
        for tool in ("rumpfs-ffs", "rumpfs-ffs2", "rumpfs-cpio", "rumpfs-wrap"):
            assert by[(corpus, tool)]["status"] in ("ok", "FAIL")
    assert by[("etc", "makefs-ffs1")]["status"] == "ok*"
    # The Python copy floor wrote every file's bytes, in one file.
    r = by[("small1k", "floor:py-copy")]
    assert r["status"] == "ok" and int(r["out_bytes"]) == int(r["payload_bytes"]) > 0, r
    assert ("etc", "floor:py-copy") not in by
    # Sizes the runner reports are the files the tools wrote: bsdtar's newc
    # archive of the tree is within 10% + 2 KiB per entry of the payload.
    r = by[("large", "bsdtar-newc")]
    assert int(r["payload_bytes"]) <= int(r["out_bytes"]) < int(r["payload_bytes"]) * 1.1 + 2048 * int(
        r["entries"])
    md = (tmp_path / "out" / "results.md").read_text()
    assert "### Targets" in md
    verdicts = [line for line in proc.stdout.splitlines()
                if line.startswith(("held", "NOT held", "n/a"))]
    assert len(verdicts) >= 8


@pytest.mark.slow
def test_failing_rumpfs_is_reported_not_fatal(tmp_path):
    env = dict(os.environ, RUMPFS_CORPORA=str(tmp_path / "corpora"))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--quiet", "--corpus", "etc",
         "--tool", "rumpfs-*,bsdtar-newc", "--rumpfs", "sh -c 'echo broken on purpose >&2; exit 9' x",
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "out" / "results.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    rumpfs_rows = [r for r in rows if r["tool"].startswith("rumpfs-")]
    assert rumpfs_rows and all(r["status"] == "FAIL" for r in rumpfs_rows)
    assert all("rc 9: broken on purpose" in r["note"] for r in rumpfs_rows)
    assert "NOT held" in proc.stdout


def test_update_docs_replaces_only_the_results_section(tmp_path):
    from bench.run import update_docs

    doc = tmp_path / "benchmark.md"
    doc.write_text("# Benchmark\n\nMethod text.\n\n## Latest results\n\nold table\n")
    update_docs(str(doc), "## rumpfs benchmark, today\n\n### etc\n\n| a | b |\n")
    text = doc.read_text()
    assert text.startswith("# Benchmark\n\nMethod text.\n\n## Latest results\n\n")
    assert "old table" not in text
    assert "### rumpfs benchmark, today" in text and "#### etc" in text
    update_docs(str(doc), "## again\n")  # idempotent: one results section
    assert doc.read_text().count("## Latest results") == 1


def test_scaling_fixed_cost_is_the_fastest_etc_run():
    """One slow etc run (or several) must not read as rumpfs slowing down
    with size: the fixed cost is etc's least wall, not its median."""
    from bench.run import Bench, Cell, Run, Tool

    tool = Tool("rumpfs-cpio", "cpio", lambda ctx, out: [])
    bench = Bench.__new__(Bench)
    etc_walls = [0.24, 0.25, 0.04, 0.26, 0.23]  # median 0.24
    bench.cells = {("etc", tool.name): Cell("etc", tool, [Run(True, w, w / 2, 1) for w in etc_walls])}
    small = Cell("small10k", tool, [Run(True, 0.262, 0.3, 1)])
    big = Cell("small100k", tool, [Run(True, 1.24, 1.8, 1)])
    pa, pb, fixed_wall, (ca, cb) = bench.per_entry(tool.name, small, big, 11011, 110101)
    assert fixed_wall == 0.04
    assert pa == pytest.approx((0.262 - 0.04) / 11011 * 1e6)
    assert pb == pytest.approx((1.24 - 0.04) / 110101 * 1e6)
    assert ca == pytest.approx((0.3 - 0.02) / 11011 * 1e6)
    assert pb / pa < 1.2  # with the median (0.24 s) it would read 5.4x


def test_a_missing_ffs_reader_is_named_once_not_per_row(monkeypatch):
    """Without dissect.ffs the benchmark says why FFS images are not read
    back, instead of a ModuleNotFoundError in every FFS row."""
    import importlib.util

    from bench.run import ffs_reader_missing
    assert ffs_reader_missing() is None  # the test dependencies are installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert ffs_reader_missing() == (f"dissect.ffs is not installed for {sys.executable} "
                                    "(make test-deps installs it)")


# -- the rows of issues 19.6, 21.6 and 22: command lines, FAIL cells, spread, targets ------------


def fake_ctx(tmp_path, corpus="stdlib", **kw):
    from bench.run import Ctx

    meta = {"entries": 110, "files": 100, "dirs": 10, "symlinks": 0, "payload_bytes": 1 << 20}
    return Ctx(corpus, str(tmp_path / "corpus dir"), meta, str(tmp_path), rumpfs=["RUMPFS"],
               tar=str(tmp_path / "corpus.tar"), **kw)


def by_name():
    from bench.run import tools

    return {t.name: t for t in tools()}


def test_compressed_rows_compare_the_same_level_with_the_standard_tools(tmp_path):
    t = by_name()
    ctx = fake_ctx(tmp_path)
    for suffix, method, level, ref, pipe in (("gz", "gzip", "6", "pigz-6", "pigz -6 -c"),
                                             ("zst", "zstd", "3", "zstd-3-T0", "zstd -3 -T0 -q -c"),
                                             ("xz", "xz", "6", "xz-6-T0", "xz -T0 -6 -c"),
                                             ("lz4", "lz4", "9", "lz4-l-9", "lz4 -l -9 -q -c")):
        mine = t[f"rumpfs-cpio-{suffix}"]
        argv = mine.argv(ctx, "OUT")
        assert argv[:2] == ["RUMPFS", "pack"] and argv[-2:] == ["-o", "OUT"]
        assert argv[argv.index("--compress") + 1] == method
        assert argv[argv.index("--compress-level") + 1] == level
        assert mine.refs == (ref,)
        script = t[ref].argv(ctx, "OUT")[-1]
        assert f"bsdtar --format newc -cf - -C '{ctx.path}' . | {pipe} > OUT" in script
        assert t[ref].requires == ("bsdtar", pipe.split()[0])


def test_iso_fat_and_tar_rows_command_lines(tmp_path):
    from bench.run import mkfs_fat_argv

    t = by_name()
    ctx = fake_ctx(tmp_path)
    assert t["xorriso-iso"].argv(ctx, "O") == ["xorriso", "-as", "mkisofs", "-R", "-J", "-quiet", "-o", "O",
                                               ctx.path]
    assert t["genisoimage-iso"].argv(ctx, "O") == ["genisoimage", "-R", "-J", "-quiet", "-o", "O", ctx.path]
    assert t["rumpfs-iso"].refs == ("xorriso-iso", "genisoimage-iso")
    # The tar rows read CORPUS.tar; their references are the directory packs.
    assert t["rumpfs-tar-ffs"].argv(ctx, "O")[-3:] == [ctx.tar, "-o", "O"]
    assert t["rumpfs-tar-ffs"].refs[0] == "rumpfs-ffs" and t["rumpfs-tar-cpio"].refs[0] == "rumpfs-cpio"
    assert t["bsdtar-tar2newc"].argv(ctx, "O") == ["bsdtar", "--format", "newc", "-cf", "O", f"@{ctx.tar}"]
    assert all(t[n].needs_tar for n in ("rumpfs-tar-ffs", "rumpfs-tar-cpio", "bsdtar-tar2newc", "erofs-tar"))
    # FAT: at the geometry rumpfs chose.
    ctx.fat = {"bytes": 300 * 1024 * 1024 + 512, "type": 32, "sector": 512, "cluster_sectors": 8,
               "root_entries": 0}
    script = mkfs_fat_argv(ctx, "O")[-1]
    assert "mkfs.fat -C -F 32 -S 512 -s 8 O 307201 " in script
    assert f"mcopy -s -m -Q -i O '{ctx.path}'/* ::/" in script
    ctx.fat = {"bytes": 8 << 20, "type": 16, "sector": 512, "cluster_sectors": 4, "root_entries": 512}
    assert "-F 16 -S 512 -s 4 -r 512 O 8192 " in mkfs_fat_argv(ctx, "O")[-1]


@pytest.mark.parametrize("fat_type, cluster_kib, size_mib", [(12, 2, 4), (16, 2, 64), (32, 1, 300)])
def test_fat_geometry_reads_what_mkfs_fat_made(tmp_path, fat_type, cluster_kib, size_mib):
    """The FAT reference copies rumpfs's geometry from its boot sector: read
    back here from images mkfs.fat (not us) made with known parameters."""
    from bench.run import fat_geometry

    img = tmp_path / "x.fat"
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(img)], check=True)
    subprocess.run(["mkfs.fat", "-F", str(fat_type), "-s", str(cluster_kib * 2), str(img)], check=True,
                   capture_output=True)
    g = fat_geometry(str(img))
    assert g == {"bytes": size_mib << 20, "type": fat_type, "sector": 512, "cluster_sectors": cluster_kib * 2,
                 "root_entries": 0 if fat_type == 32 else 512}


def test_rows_run_on_their_corpora_with_quick_stand_ins():
    from bench.run import runs_on

    t = by_name()
    assert runs_on(t["rumpfs-ffs"], "deep", quick=False)
    assert runs_on(t["rumpfs-cpio-gz"], "small100k", quick=False)
    assert not runs_on(t["rumpfs-cpio-gz"], "small10k", quick=False)
    assert not runs_on(t["rumpfs-cpio-gz"], "small10k", quick=True)  # the smoke run keeps to stdlib
    assert runs_on(t["rumpfs-iso"], "small1k", quick=True)  # small1k stands for small10k
    assert not runs_on(t["rumpfs-iso"], "small1k", quick=False)
    assert runs_on(t["rumpfs-iso"], "wide1m", quick=False)  # ISO's million
    assert not runs_on(t["rumpfs-iso"], "small1m", quick=False)  # too many directories for ISO
    assert not runs_on(t["rumpfs-ffs"], "wide1m", quick=False)
    assert runs_on(t["rumpfs-fat"], "small1m", quick=False)
    assert runs_on(t["rumpfs-tar-ffs"], "debian", quick=False)
    assert not runs_on(t["rumpfs-tar-ffs"], "deep", quick=False)


def test_tool_and_corpus_selection():
    import argparse

    from bench.run import SCALE_TOOLS, corpus_names, select_tools

    names = [t.name for t in select_tools("rumpfs-cpio-*,pigz*")]
    assert names == ["rumpfs-cpio-gz", "pigz-6", "rumpfs-cpio-zst", "rumpfs-cpio-xz", "rumpfs-cpio-lz4"]
    assert [t.name for t in select_tools(None, scale=True)] == list(SCALE_TOOLS)
    args = argparse.Namespace(corpus=None, scale=True, quick=False)
    assert corpus_names(args) == ["etc", "small10k", "small100k", "small1m", "wide1m"]
    args.scale = False
    assert "debian" in corpus_names(args) and "small1m" not in corpus_names(args)
    args.corpus = "stdlib,small100k"
    assert corpus_names(args) == ["stdlib", "small100k"]


def test_a_tool_that_cannot_run_here_is_a_fail_cell_saying_why():
    from bench.run import Tool, why_unavailable

    missing = Tool("x", "cpio", lambda ctx, out: [], requires=("sh", "no-such-program-here"))
    assert why_unavailable(missing) == ("no-such-program-here is not installed (Debian package "
                                        "no-such-program-here; scripts/apt-bench-packages.txt)")
    old = Tool("y", "erofs", lambda ctx, out: [], requires=("sh",), unavailable=lambda: "too old")
    assert why_unavailable(old) == "too old"
    assert why_unavailable(Tool("z", "cpio", lambda ctx, out: [], requires=("sh",))) is None


def test_every_command_is_run_again_on_one_core(tmp_path, monkeypatch):
    """run_cell measures the command, then the same argv under taskset -c 0."""
    from bench import run as runmod

    calls = []

    def fake_measure(argv, output, timeout, env=None, cwd=None):
        calls.append(argv)
        return runmod.Run(True, 2.0 if argv[0] == "taskset" else 1.0, 1.5, 1000, 10, 10)

    monkeypatch.setattr(runmod, "measure", fake_measure)
    bench = runmod.Bench.__new__(runmod.Bench)
    bench.one_core, bench.one_core_globs, bench.work, bench.timeout = True, ["bsdtar*"], str(tmp_path), 5
    bench.env, bench.code = {}, str(tmp_path)
    bench.args = type("A", (), {"quiet": True, "no_verify": True})()
    tool = runmod.Tool("bsdtar-newc", "cpio", lambda ctx, out: ["bsdtar", "-cf", out], ".cpio")
    cell = runmod.Cell("stdlib", tool)
    bench.run_cell(cell, fake_ctx(tmp_path), first=True)
    out = str(tmp_path / "stdlib.bsdtar-newc.cpio")
    assert calls == [["bsdtar", "-cf", out], ["taskset", "-c", "0", "bsdtar", "-cf", out]]
    assert cell.wall == 1.0 and cell.wall1 == 2.0
    calls.clear()  # a tool --one-core does not name runs once
    other = runmod.Cell("stdlib", runmod.Tool("rumpfs-cpio", "cpio", lambda ctx, out: ["r", out], ".cpio"))
    bench.run_cell(other, fake_ctx(tmp_path), first=False)
    assert len(calls) == 1 and other.runs1 == []


def walls(*ws, one=()):
    from bench.run import Run

    return [Run(True, w, w, 1000, 100, 100) for w in ws], [Run(True, w, w, 1000, 100, 100) for w in one]


def test_spread_and_flag():
    from bench.run import Cell, Tool, fmt_spread

    tool = Tool("rumpfs-ffs", "ffs1", lambda ctx, out: [])
    runs, runs1 = walls(1.0, 1.31, 1.2, one=(2.0, 2.6))
    c = Cell("stdlib", tool, runs=runs, runs1=runs1)
    assert c.spread() == (1.0, 1.31) and c.flagged()
    assert c.spread("wall", True) == (2.0, 2.6) and not c.flagged(True)  # exactly 1.3x is not over
    assert fmt_spread(c) == "1.2 (1-1.31)!"
    assert fmt_spread(c, True) == "2.3 (2-2.6)"
    one, _ = walls(5.0)
    assert not Cell("stdlib", tool, runs=one).flagged()  # one round: no spread to judge
    assert fmt_spread(Cell("stdlib", tool, runs=one)) == "5"


def fake_bench(quick=False):
    import datetime

    from bench.run import Bench

    bench = Bench.__new__(Bench)
    bench.quick, bench.one_core, bench.cells, bench.rev = quick, True, {}, "abc1234"
    bench.started = datetime.datetime(2026, 12, 5, 1, 0, tzinfo=datetime.timezone.utc)
    bench.load_before = (0.5, 0.5, 0.5)
    bench.venv, bench.rumpfs = None, ["rumpfs"]
    bench.args = type("A", (), {"rumpfs": None, "corpora": None})()
    bench.corpus_names = ["etc", "stdlib", "small10k", "small100k", "debian"]
    bench.metas = {c: {"entries": n, "files": n, "dirs": 1, "symlinks": 0, "payload_bytes": n * 1000}
                   for c, n in (("etc", 16), ("stdlib", 2624), ("small10k", 11011), ("small100k", 110101),
                                ("debian", 47904))}
    return bench


def put(bench, corpus, name, wall, wall1=None, out_bytes=100, rss_kib=10_000):
    from bench.run import Cell, Run, tools

    tool = {t.name: t for t in tools()}[name]
    runs = [Run(True, wall, wall, rss_kib, out_bytes, out_bytes)]
    runs1 = [Run(True, wall1, wall1, rss_kib, out_bytes, out_bytes)] if wall1 else []
    bench.cells[(corpus, name)] = Cell(corpus, tool, runs=runs, runs1=runs1)


def test_targets_of_issues_19_21_22_are_judged_from_the_cells():
    bench = fake_bench()
    for corpus in ("stdlib", "small100k"):
        put(bench, corpus, "rumpfs-cpio-gz", 0.9)
        put(bench, corpus, "pigz-6", 1.0)
        put(bench, corpus, "rumpfs-cpio-zst", 1.1 if corpus == "small100k" else 0.5)  # one corpus over
        put(bench, corpus, "zstd-3-T0", 1.0)
        put(bench, corpus, "rumpfs-cpio", 1.0)
        put(bench, corpus, "rumpfs-tar-cpio", 1.2)   # 0.83x the speed: held
        put(bench, corpus, "rumpfs-ffs", 1.0, 2.0)
        put(bench, corpus, "rumpfs-tar-ffs", 1.3)    # 0.77x the speed: not held
    for corpus in ("small100k", "debian"):
        put(bench, corpus, "rumpfs-ffs", 1.1, 1.5)
        put(bench, corpus, "makefs-ffs1", 2.0, 2.0)  # all cores 0.55x held, one core 0.75x held
        put(bench, corpus, "rumpfs-ffs2", 1.3, 1.7)
        put(bench, corpus, "makefs-ffs2", 2.0, 2.0)  # 0.65x: not held; one core 0.85x: not held
        put(bench, corpus, "floor:py-copy", 0.5, 1.7)  # one core: 0.85x makefs, over the target
        put(bench, corpus, "floor:py-ffs", 0.9, 1.9)
    for corpus in ("stdlib", "small10k", "small100k"):
        put(bench, corpus, "rumpfs-iso", 1.0, out_bytes=100)
        put(bench, corpus, "xorriso-iso", 2.0, out_bytes=101)
        put(bench, corpus, "genisoimage-iso", 0.9 if corpus == "small10k" else 1.5, out_bytes=100)
        put(bench, corpus, "rumpfs-fat", 1.0)
        put(bench, corpus, "mkfs.fat+mcopy", 1.1)
    by = {t: (h, f) for t, h, f in bench.targets()}

    def verdict(prefix):
        (match,) = [v for t, v in by.items() if t.startswith(prefix)]
        return match

    assert verdict("#22.1 compressed: rumpfs-cpio-gz")[0] is True
    held, fig = verdict("#22.1 compressed: rumpfs-cpio-zst")
    assert held is False and "small100k: rumpfs-cpio-zst 1.1 s vs zstd-3-T0 1 s = 1.10x" in fig
    assert verdict("#22.1 compressed: rumpfs-cpio-xz")[0] is None  # not run
    assert verdict("#22.2 FFS one core: rumpfs-ffs ")[0] is True
    (ffs_all,) = [v for t, v in by.items() if t.startswith("#22.2 FFS all cores") and "rumpfs-ffs wall" in t]
    assert ffs_all[0] is True and "small100k: rumpfs-ffs 1.1 s vs makefs-ffs1 2 s = 0.55x" in ffs_all[1]
    assert verdict("#22.2 FFS one core: rumpfs-ffs2")[0] is False
    # The Python floors are shown beside each one-core figure (their one-core times).
    assert ("small100k: rumpfs-ffs 1.5 s vs makefs-ffs1 2 s = 0.75x [floor:py-copy 1.7 s = 0.85x]"
            " [floor:py-ffs 1.9 s = 0.95x]" in verdict("#22.2 FFS one core: rumpfs-ffs ")[1])
    assert "floor" not in ffs_all[1]
    (ffs2_all,) = [v for t, v in by.items() if t.startswith("#22.2 FFS all cores") and "ffs2" in t]
    assert ffs2_all[0] is False and "0.65x" in ffs2_all[1]
    held, fig = verdict("#19.6 ISO: rumpfs-iso wall")
    assert held is False and "small10k: rumpfs-iso 1 s vs genisoimage-iso 0.9 s = 1.11x" in fig
    assert "genisoimage-iso 1.5 s = 0.67x (cpu 0.67x) [floor:py-copy 0.5 s = 0.33x]" in fig
    assert "= 1.11x (cpu 1.11x);" in fig  # no floor run on small10k
    assert verdict("#19.6 ISO: rumpfs-iso image")[0] is True  # 100 <= 100 and 101
    assert verdict("#19.6 FAT: rumpfs-fat wall")[0] is True
    assert verdict("#21.6 tar layer: rumpfs-tar-cpio")[0] is True
    assert verdict("#21.6 tar layer: rumpfs-tar-ffs")[0] is False
    assert verdict("#22.4 spread")[0] is None  # one round each: nothing to judge


def test_iso_and_fat_rows_show_the_ratio_beyond_each_tools_fixed_cost():
    """Beside the wall-time ratio, the #19.6 rows show it once each tool's
    fastest etc run is taken off both; without both etc runs, nothing."""
    bench = fake_bench()
    put(bench, "etc", "rumpfs-fat", 0.05)
    put(bench, "etc", "mkfs.fat+mcopy", 0.007)
    put(bench, "small10k", "rumpfs-fat", 0.128)
    put(bench, "small10k", "mkfs.fat+mcopy", 0.0984)
    put(bench, "etc", "rumpfs-iso", 0.05)
    put(bench, "stdlib", "rumpfs-iso", 0.118)
    put(bench, "stdlib", "genisoimage-iso", 0.111)
    by = {t: (h, f) for t, h, f in bench.targets()}
    ((fat_held, fat),) = [v for t, v in by.items() if t.startswith("#19.6 FAT: rumpfs-fat wall")]
    assert fat_held is False
    # (0.128 - 0.05) / (0.0984 - 0.007) = 0.853
    assert fat == ("small10k: rumpfs-fat 0.128 s vs mkfs.fat+mcopy 0.0984 s = 1.30x (cpu 1.30x) "
                   "[beyond the fixed cost (rumpfs-fat 0.05 s, mkfs.fat+mcopy 0.007 s on etc): 0.85x]")
    ((iso_held, iso),) = [v for t, v in by.items() if t.startswith("#19.6 ISO: rumpfs-iso wall")]
    assert iso_held is False
    assert iso == "stdlib: rumpfs-iso 0.118 s vs genisoimage-iso 0.111 s = 1.06x (cpu 1.06x)"


def test_memory_and_scaling_targets_of_issue_22_5():
    bench = fake_bench()
    bench.corpus_names.append("small1m")
    bench.metas["small1m"] = {"entries": 1_100_101, "files": 1, "dirs": 1, "symlinks": 0, "payload_bytes": 1}
    # Fixed cost 0.1 s; 10 us per entry at 10k and 100k, 13 us at 1M: 1.3x, not flat.
    put(bench, "etc", "rumpfs-cpio", 0.1)
    for corpus in ("small10k", "small100k", "small1m"):
        n = bench.metas[corpus]["entries"]
        per = 13e-6 if corpus == "small1m" else 10e-6
        put(bench, corpus, "rumpfs-cpio", 0.1 + n * per, rss_kib=61_440 + n // 2)  # at the limit
    put(bench, "small1m", "rumpfs-ffs", 5.0, rss_kib=61_440 + 1_100_101 // 2 + 1)  # 1 KiB over
    by = {t: (h, f) for t, h, f in bench.targets()}
    (scaling,) = [v for t, v in by.items() if t.startswith("#22.5 scaling: rumpfs-cpio ")]
    assert scaling[0] is False and "10.0 -> 10.0 -> 13.0 us/entry = 1.30x" in scaling[1]
    (memory,) = [v for t, v in by.items() if t.startswith("#22.5 memory")]
    assert memory[0] is False and memory[1].startswith("over: small1m/rumpfs-ffs")
    md = bench.markdown(bench.targets())
    assert "### Scaling" in md and "| rumpfs-cpio | 10.0 us; " in md


def test_iso_scales_to_its_own_million():
    """ISO's scaling line ends on wide1m (small1m has more directories than
    an ISO 9660 path table numbers), shown in the small1m column."""
    bench = fake_bench()
    for name, entries in (("small1m", 1_101_001), ("wide1m", 1_010_101)):
        bench.corpus_names.append(name)
        bench.metas[name] = {"entries": entries, "files": 1, "dirs": 1, "symlinks": 0,
                             "payload_bytes": 1}
    put(bench, "etc", "rumpfs-iso", 0.1)
    for corpus in ("small10k", "small100k", "wide1m"):
        n = bench.metas[corpus]["entries"]
        put(bench, corpus, "rumpfs-iso", 0.1 + n * 10e-6, rss_kib=61_440 + n // 2 - 1)
    by = {t: (h, f) for t, h, f in bench.targets()}
    (scaling,) = [v for t, v in by.items() if t.startswith("#22.5 scaling: rumpfs-iso ")]
    (title,) = [t for t in by if t.startswith("#22.5 scaling: rumpfs-iso ")]
    assert "small10k -> wide1m" in title
    assert scaling[0] is True and "10.0 -> 10.0 -> 10.0 us/entry = 1.00x" in scaling[1]
    (memory,) = [v for t, v in by.items() if t.startswith("#22.5 memory")]
    assert memory[0] is True
    md = bench.markdown(bench.targets())
    assert "| rumpfs-iso | 10.0 us; " in md and "MiB (wide1m) | 1.00x |" in md


def test_spread_target_and_targets_table_header():
    bench = fake_bench()
    from bench.run import Run

    put(bench, "stdlib", "rumpfs-cpio", 1.0)
    bench.cells[("stdlib", "rumpfs-cpio")].runs.append(Run(True, 1.4, 1.4, 1000, 100, 100))
    put(bench, "stdlib", "bsdtar-newc", 1.0)
    bench.cells[("stdlib", "bsdtar-newc")].runs.append(Run(True, 1.5, 1.5, 1000, 100, 100))
    put(bench, "stdlib", "cpio-gnu-newc", 1.0)
    bench.cells[("stdlib", "cpio-gnu-newc")].runs.append(Run(True, 1.1, 1.1, 1000, 100, 100))
    targets = bench.targets()
    (spread,) = [(h, f) for t, h, f in targets if t.startswith("#22.4")]
    # A reference tool's jitter is reported, not judged.
    assert spread == (False, "1 flagged: stdlib/rumpfs-cpio 1-1.4 s; reference rows flagged "
                             "(not judged): stdlib/bsdtar-newc 1-1.5 s")
    md = bench.markdown(targets)
    assert (f"TARGETS of issues 7, 19.6, 21.6 and 22: 2026-12-05 01:00 UTC, commit abc1234; machine: "
            f"nproc {os.cpu_count()}, ") in md
    assert "| rumpfs-cpio | 2 | 1.2 (1-1.4)! |" in md
    assert "| bsdtar-newc | 2 | 1.25 (1-1.5)! |" in md
    assert "| cpio-gnu-newc | 2 | 1.05 (1-1.1) |" in md
    assert "| #22.4 spread: no rumpfs row's slowest round over 1.3x its fastest | NOT held |" in md
    bench.cells[("stdlib", "rumpfs-cpio")].runs[-1] = Run(True, 1.2, 1.2, 1000, 100, 100)
    (spread,) = [(h, f) for t, h, f in bench.targets() if t.startswith("#22.4")]
    assert spread[0] is True and spread[1].startswith("1 rumpfs rows of several rounds, none flagged")


def test_tar_of_a_corpus_holds_the_tree(tmp_path):
    """The tar layer's input: bsdtar lists every entry of the corpus in it."""
    path, meta = corpora.ensure("small1k", str(tmp_path), quick=True)
    tar = corpora.ensure_tar("small1k", path)
    names = subprocess.run(["bsdtar", "-tf", tar], capture_output=True, text=True, check=True).stdout.split()
    assert len(names) == meta["entries"]  # "./" and every path below it
    expected = {"./" + os.path.relpath(os.path.join(d, n), path)
                for d, dirs, files in os.walk(path) for n in dirs + files}
    assert {n.rstrip("/") for n in names} - {"."} == expected
    mtime = os.stat(tar).st_mtime_ns
    assert corpora.ensure_tar("small1k", path) == tar and os.stat(tar).st_mtime_ns == mtime  # made once


def test_debian_corpus_falls_back_to_the_candidate_and_says_so(tmp_path, monkeypatch):
    """A pinned version the archive lost is replaced by the candidate, and recorded."""
    monkeypatch.setattr(corpora, "DEBIAN_PACKAGES", (("pkg-a", "1.0"), ("pkg-b", "2:3.0-1")))
    cache = tmp_path / "debs"
    calls = []

    def fake_run(argv, cwd=None):
        calls.append(argv)
        spec = argv[-1]
        if spec == "pkg-a=1.0":
            (cache / "pkg-a_1.0_all.deb").write_bytes(b"a")
            return subprocess.CompletedProcess(argv, 0, "", "")
        if spec == "pkg-b":
            (cache / "pkg-b_2%3a3.1-1_amd64.deb").write_bytes(b"b")
            return subprocess.CompletedProcess(argv, 0, "", "")
        return subprocess.CompletedProcess(argv, 100, "", "E: Version '3.0-1' for 'pkg-b' was not found")

    monkeypatch.setattr(corpora, "_run", fake_run)
    debs, fallbacks = corpora.fetch_debian(str(cache))
    assert [os.path.basename(d) for d in debs] == ["pkg-a_1.0_all.deb", "pkg-b_2%3a3.1-1_amd64.deb"]
    assert fallbacks == ["pkg-b 2:3.0-1 is gone from the archive: used pkg-b_2%3a3.1-1_amd64.deb"]
    assert calls == [["apt-get", "download", "pkg-a=1.0"], ["apt-get", "download", "pkg-b=2:3.0-1"],
                     ["apt-get", "download", "pkg-b"]]
    calls.clear()
    (cache / "pkg-b_2%3a3.0-1_amd64.deb").write_bytes(b"b")  # cached pinned files are not fetched again
    debs, fallbacks = corpora.fetch_debian(str(cache))
    assert calls == [] and fallbacks == []


def test_a_target_without_its_figures_is_not_held_by_default():
    """A failed reference or a run without one-core figures is n/a, not held; a
    failed rumpfs row is NOT held."""
    from bench.run import Cell, Run

    bench = fake_bench()
    put(bench, "small100k", "rumpfs-ffs", 1.0)  # no one-core runs
    put(bench, "small100k", "makefs-ffs1", 2.0)
    put(bench, "debian", "rumpfs-ffs2", 1.0, 1.0)
    bench.cells[("debian", "makefs-ffs2")] = Cell("debian", by_name()["makefs-ffs2"],
                                                  failed=Run(False, 1, 1, 1, note="rc 1: makefs: bread"))
    by = {t: (h, f) for t, h, f in bench.targets()}
    (one,) = [v for t, v in by.items() if t.startswith("#22.2 FFS one core: rumpfs-ffs ")]
    assert one == (None, "small100k: no one-core runs (--one-core / --no-one-core), not judged")
    (ffs2,) = [v for t, v in by.items() if t.startswith("#22.2 FFS one core: rumpfs-ffs2")]
    assert ffs2 == (None, "debian: makefs-ffs2 FAIL, not judged")
    bench.cells[("small100k", "rumpfs-ffs")].failed = bench.cells[("debian", "makefs-ffs2")].failed
    by = {t: (h, f) for t, h, f in bench.targets()}
    (allcores,) = [v for t, v in by.items() if t.startswith("#22.2 FFS all cores") and "rumpfs-ffs wall" in t]
    assert allcores == (False, "small100k: rumpfs-ffs FAIL")


def test_touch_memory_faults_in_every_page():
    """Each page written once: at least a minor fault per 2 MiB (a huge page
    each, with transparent huge pages; a fault per page without); an mmap
    never written adds none."""
    import resource

    from bench.run import touch_memory

    size = 64 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch_memory(size)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before >= size // (2 << 20)


def test_warm_up_touches_twice_the_payload_within_half_the_free_memory(tmp_path, monkeypatch):
    from bench import run as runmod

    touched = []
    monkeypatch.setattr(runmod, "measure", lambda *a, **k: runmod.Run(True, 0.1, 0.1, 1000))
    monkeypatch.setattr(runmod, "touch_memory", touched.append)
    bench = runmod.Bench.__new__(runmod.Bench)
    bench.timeout = 5
    ctx = fake_ctx(tmp_path)
    ctx.meta = {"payload_bytes": 3 << 30}
    monkeypatch.setattr(runmod, "available_memory", lambda: 16 << 30)
    bench.warm_up(ctx)
    monkeypatch.setattr(runmod, "available_memory", lambda: 8 << 30)
    bench.warm_up(ctx)
    assert touched == [6 << 30, 4 << 30]
