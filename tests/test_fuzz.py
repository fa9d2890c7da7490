"""The mutation fuzzer of tests/fuzz_readers.py: a short fixed-seed run in the
default suite, a longer one in the slow suite (``make fuzz`` for long runs),
and tests that the fuzzer itself notices what it is meant to notice."""

from __future__ import annotations

import os

import fuzz_readers as F
import pytest

from rumpfs.errors import RumpfsError
from rumpfs.formats.cpio.reader import CpioReader

#: Mutants per kind (20 kinds) of the default suite's run: a few seconds on 2 cores.
QUICK = int(os.environ.get("FUZZ_QUICK", 30))


def _assert_no_failures(summary: F.Summary) -> None:
    assert not summary.failures, summary.report() + "\n" + "\n".join(
        f"{f['kind']}:{f['seed']}:{f['index']} {f['op']}: {f['signature']}: {f['detail'][:200]}"
        for f in summary.failures[:20])


def test_quick_fuzz(tmp_path):
    summary = F.run(mutants=QUICK, run_seed=0, jobs=2, workdir=str(tmp_path / "w"),
                    out=str(tmp_path / "out"))
    assert sum(summary.mutants.values()) == QUICK * len(F.KINDS)
    # Some mutants are still images check calls clean (so the gate is tried).
    assert sum(summary.clean.values()) > QUICK
    _assert_no_failures(summary)


@pytest.mark.slow
def test_long_fuzz(tmp_path):
    summary = F.run(mutants=1000, run_seed=1, jobs=2, workdir=str(tmp_path / "w"),
                    out=str(tmp_path / "out"))
    _assert_no_failures(summary)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("seeds"))
    return workdir, F._load_seeds(workdir)


def test_mutants_replay_exactly(seeds):
    _, by_kind = seeds
    others = [s.data for s in by_kind.values()]
    for kind in ("ffs1-le", "gzip", "elf-newc"):
        a = F.mutant(by_kind[kind], 7, 123, others)
        b = F.mutant(by_kind[kind], 7, 123, others)
        assert a == b and a[0] != by_kind[kind].data


def test_seeds_are_clean_and_field_aware(seeds):
    """Unmutated, every kind reads and checks clean; and the mutator knows
    fields of each (superblock, headers, sections) to aim at."""
    workdir, by_kind = seeds
    for kind, seed in by_kind.items():
        path = os.path.join(workdir, f"seed-{kind}")
        with open(path, "wb") as f:
            f.write(seed.data)
        result = F.exercise(path, workdir)
        assert result["clean"] and not result["failures"], (kind, result)
        if kind not in F.BLIND_KINDS:
            assert len(seed.fields) > 20, kind


def test_a_crash_is_a_failure(seeds, monkeypatch):
    workdir, by_kind = seeds
    path = os.path.join(workdir, "newc.cpio")

    def broken(self):
        raise KeyError("boom")
        yield

    monkeypatch.setattr(CpioReader, "entries", broken)
    result = F.exercise(path, workdir)
    assert {f["op"] for f in result["failures"]} >= {"ls"}
    assert result["failures"][0]["signature"].startswith("KeyError at ")


def test_an_error_not_naming_the_file_is_a_failure(seeds, monkeypatch):
    workdir, _ = seeds
    path = os.path.join(workdir, "newc.cpio")

    def vague(self):
        raise RumpfsError("something is wrong")
        yield

    monkeypatch.setattr(CpioReader, "entries", vague)
    result = F.exercise(path, workdir)
    assert result["failures"][0]["signature"] == "message does not name the file in one line"


def test_check_is_the_gate(seeds, monkeypatch):
    """An image check calls clean that ls cannot read is a failure."""
    workdir, by_kind = seeds
    data = bytearray(by_kind["newc"].data)
    data[len(data) // 2:] = b""
    path = os.path.join(workdir, "cut.cpio")
    with open(path, "wb") as f:
        f.write(data)
    monkeypatch.setattr(CpioReader, "__init__", _lenient_init)
    monkeypatch.setattr(CpioReader, "check", lambda self: [])
    result = F.exercise(path, workdir)
    assert result["clean"]
    assert any(f["signature"] == "check calls it clean, cat fails" for f in result["failures"])


def _lenient_init(self, f, offset=0, size=None):
    # Index the archive as if it were whole: reading the cut data then fails.
    from rumpfs.formats import file_name
    self.f, self.name, self.offset = f, file_name(f), offset
    self.size = 1 << 40
    self.members, self.variant, self.trailer_at = [], None, None
    try:
        self._scan()
    except RumpfsError:
        pass
    self._by_entry = {id(m.entry): m for m in self.members}
    self.size = os.fstat(f.fileno()).st_size
