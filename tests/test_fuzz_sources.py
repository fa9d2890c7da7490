"""The source-archive fuzzer of tests/fuzz_sources.py: a short fixed-seed run
in the default suite, a longer one in the slow suite, and tests that the
fuzzer notices what it is meant to notice."""

from __future__ import annotations

import os
import time

import fuzz_sources as F
import pytest

from rumpfs import api
from rumpfs.errors import RumpfsError

#: Mutants per kind (10 kinds) of the default suite's run: about 13 s.
QUICK = int(os.environ.get("FUZZ_QUICK", 40))


def _assert_no_failures(result: dict) -> None:
    assert not result["failures"], "\n".join(
        f"{name}: {'; '.join(done)}\n{detail[-800:]}" for name, done, detail in result["failures"][:10])


def test_quick_source_fuzz(tmp_path):
    result = F.run(mutants=QUICK, run_seed=0, workdir=str(tmp_path))
    counts = result["counts"]
    assert sum(counts.values()) == QUICK * len(F.KINDS)
    # Mutants that still pack and mutants that are refused: both sides are tried.
    assert counts["ok"] > QUICK and counts["error"] > QUICK
    _assert_no_failures(result)


@pytest.mark.slow
def test_long_source_fuzz(tmp_path):
    _assert_no_failures(F.run(mutants=1000, run_seed=1, workdir=str(tmp_path)))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return F.build_seeds(str(tmp_path_factory.mktemp("seeds")))


def test_seeds_pack_and_the_mutator_finds_their_headers(seeds, tmp_path):
    for kind, path in seeds.items():
        assert F.pack_mutant(path, str(tmp_path / "out.cpio")) == ("ok", ""), kind
        if kind in ("ustar", "gnu", "gnu-tar", "pax"):
            with open(path, "rb") as f:
                assert len(F.tar_headers(f.read())) > 10, kind


def test_source_mutants_replay_exactly(seeds):
    for kind in F.KINDS:
        with open(seeds[kind], "rb") as f:
            data = f.read()
        a = F.mutant(kind, data, 7, 123)
        assert a == F.mutant(kind, data, 7, 123) and a[0] != data, kind


def _outcome(monkeypatch, seeds, tmp_path, pack) -> tuple[str, str]:
    monkeypatch.setattr(api, "pack", pack)
    return F.pack_mutant(seeds["ustar"], str(tmp_path / "out.cpio"))


def test_a_crash_is_a_failure(seeds, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise ValueError("a reader's own exception")
    outcome, detail = _outcome(monkeypatch, seeds, tmp_path, crash)
    assert outcome == "failure" and "ValueError: a reader's own exception" in detail


def test_an_error_of_two_lines_is_a_failure(seeds, tmp_path, monkeypatch):
    def two_lines(*args, **kwargs):
        raise RumpfsError("first\nsecond")
    assert _outcome(monkeypatch, seeds, tmp_path, two_lines) == (
        "failure", "error not one line: 'first\\nsecond'")


def test_a_hang_is_a_failure(seeds, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "TIME_LIMIT", 1)
    assert _outcome(monkeypatch, seeds, tmp_path, lambda *a, **k: time.sleep(30)) == (
        "failure", "hang (time limit)")


def test_running_out_of_memory_is_a_failure(seeds, tmp_path, monkeypatch):
    def hungry(*args, **kwargs):
        return bytearray(2 * F.MEMORY_LIMIT)
    outcome, detail = _outcome(monkeypatch, seeds, tmp_path, hungry)
    assert outcome == "failure" and "MemoryError" in detail
