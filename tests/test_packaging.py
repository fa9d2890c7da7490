"""The source distribution: it holds what building and installing need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_sdist_builds_a_package_with_stubetc_and_the_entry_point(tmp_path):
    """The sdist carries the top-level stubetc/ (setup.py copies it into the
    package as it builds) and declares the rumpfs entry point; built from the
    unpacked sdist, the package has its stubetc."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".test-logs"))
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys\nfrom setuptools import build_meta\nprint(build_meta.build_sdist(sys.argv[1]))",
         str(dist)], cwd=src, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sdist = dist / proc.stdout.split()[-1]
    top = sdist.name[:-len(".tar.gz")]
    with tarfile.open(sdist) as tar:
        members = {m.name[len(top) + 1:]: m for m in tar.getmembers() if m.name.startswith(top + "/")}
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    stubetc = sorted(os.listdir(ROOT / "stubetc"))
    assert stubetc
    for name in stubetc:
        assert f"stubetc/{name}" in members, f"stubetc/{name} missing from the sdist"
    entry_points = (tmp_path / top / "rumpfs.egg-info" / "entry_points.txt").read_text()
    assert "rumpfs = rumpfs.cli:main" in entry_points.splitlines()
    assert {"setup.py", "pyproject.toml", "rumpfs/data/rumpfs_images.h"} <= set(members)

    # What pip does with the sdist, short of the network: build the package.
    lib = tmp_path / "lib"
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
                          cwd=tmp_path / top, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(lib / "rumpfs" / "stubetc")) == stubetc
    for name in stubetc:
        assert (lib / "rumpfs" / "stubetc" / name).read_bytes() == (ROOT / "stubetc" / name).read_bytes()
