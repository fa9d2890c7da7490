"""What an install without an optional library does: one line, no traceback.

zstandard and lz4 are plain dependencies (a plain ``pip install .`` writes and
reads every compression rumpfs offers); an install that lost one anyway (a
distribution's package split, ``pip install --no-deps``) must say which
package is missing, not crash.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import ROOT, run_rumpfs

BLOCKED = {
    "zstd": ("zstandard", "zstandard.py"),
    "lz4": ("lz4", "lz4/__init__.py"),
}


def _blocker(tmp_path, module_file):
    """A directory that shadows a module with one that cannot be imported."""
    d = tmp_path / "blocked"
    path = d / module_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("raise ImportError('blocked by the test')\n")
    return d


@pytest.mark.parametrize("method", sorted(BLOCKED))
def test_missing_compression_library_is_one_line(tmp_path, method):
    package, module_file = BLOCKED[method]
    env = {"PYTHONPATH": f"{_blocker(tmp_path, module_file)}:{ROOT}"}
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    suffix = {"zstd": "zst", "lz4": "lz4"}[method]
    expected = (f"rumpfs: error: {method} needs the Python package '{package}', "
                f"which is not installed (pip install {package})")

    out = tmp_path / f"root.cpio.{suffix}"
    res = run_rumpfs("pack", "--no-stubetc", src, "-o", out, env=env, check=False)
    assert (res.returncode, res.err.splitlines()) == (1, [expected])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "src"]

    # An archive compressed by the standard tool, read back without the library.
    plain = tmp_path / "root.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "-o", plain)
    tool = {"zstd": ["zstd", "-q"], "lz4": ["lz4", "-l", "-q"]}[method]
    subprocess.run([*tool, str(plain), str(out)], check=True)
    for command in ("ls", "info", "check"):
        res = run_rumpfs(command, out, env=env, check=False)
        assert (res.returncode, res.err.splitlines()) == (1, [expected]), command
