"""ls, cat, extract, info and progress on cpio images."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import IS_ROOT, run_rumpfs
from treecompare import assert_same, normalized, scan_host


@pytest.fixture(scope="module")
def image(fixture_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "root.cpio.zst"
    run_rumpfs("pack", "--no-stubetc", fixture_tree, "-o", out)
    return out


def test_cat_gives_the_exact_bytes(image, fixture_tree):
    for rel in ("big.bin", "sparse.bin", "hard/c", "empty"):
        got = run_rumpfs("cat", image, "/" + rel).stdout
        assert hashlib.sha256(got).digest() == hashlib.sha256((fixture_tree / rel).read_bytes()).digest()


def test_cat_errors(image):
    res = run_rumpfs("cat", image, "/nope", check=False)
    assert res.returncode == 1 and res.err == "rumpfs: error: /nope: not in the image\n"
    res = run_rumpfs("cat", image, "/bin", check=False)
    assert res.err == f"rumpfs: error: /bin: not a regular file in {image}\n"


@pytest.mark.skipif(not IS_ROOT, reason="devices and owners need root")
def test_extract_recreates_the_tree(image, fixture_tree, tmp_path):
    run_rumpfs("extract", image, tmp_path / "x")
    expected = normalized(scan_host(fixture_tree))
    # A socket cannot be recreated from an archive (it needs a listening process).
    assert_same(expected, scan_host(tmp_path / "x"), ignore=(b"dev/sock",))


def test_ls_json_and_info(image, fixture_tree):
    rows = [json.loads(line) for line in run_rumpfs("ls", "--json", image).out.splitlines()]
    assert len(rows) == len(scan_host(fixture_tree))
    big = next(r for r in rows if r["path"] == "/big.bin")
    assert big["size"] == 5_000_000 and big["mode"] == "0644" and big["type"] == "file"
    info = json.loads(run_rumpfs("info", "--json", image).out)
    assert info["container"] == {"compression": "zstd", "compressed_size": image.stat().st_size}
    assert info["image"]["format"] == "cpio" and info["image"]["entries"] == len(rows)


def test_not_an_image(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 4096)
    res = run_rumpfs("ls", junk, check=False)
    assert res.returncode == 1
    assert res.err.startswith(f"rumpfs: error: {junk}: not an image rumpfs can read")
    res = run_rumpfs("ls", tmp_path / "missing.img", check=False)
    assert res.err == f"rumpfs: error: {tmp_path / 'missing.img'}: no such file\n"


def test_truncated_archive_is_reported(fixture_tree, tmp_path):
    whole = tmp_path / "whole.cpio"
    run_rumpfs("pack", "--no-stubetc", fixture_tree, "-o", whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.cpio"
    cut.write_bytes(data[: len(data) // 2])
    res = run_rumpfs("ls", cut, check=False)
    assert res.returncode == 1
    assert res.err.startswith(f"rumpfs: error: {cut}: truncated cpio archive: ")


def test_progress_on_request(fixture_tree, tmp_path):
    res = run_rumpfs("pack", "--progress", "--no-stubetc", fixture_tree, "-o", tmp_path / "p.cpio")
    assert "rumpfs: p.cpio:" in res.err and "MiB" in res.err
    quiet = run_rumpfs("pack", "--no-stubetc", fixture_tree, "-o", tmp_path / "q.cpio")
    assert quiet.err == ""
