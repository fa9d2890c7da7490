"""The preflight check names the package of a missing tool, and every package
it names is one the project's own files install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import preflight

ROOT = Path(__file__).resolve().parent.parent


def _apt_packages() -> set[str]:
    text = (ROOT / "scripts" / "apt-test-packages.txt").read_text()
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


def _pyproject_requirements() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    return {re.split(r"[<>=;\[ ]", m)[0].lower() for m in re.findall(r'^\s+"([^"]+)",', text, re.M)}


def test_every_debian_package_named_is_installed_by_the_project():
    named = set(preflight.COMMANDS.values()) | set(preflight.LIBRARIES.values())
    named |= set(preflight.toolchain_commands().values()) | {preflight.MULTIARCH_PACKAGE}
    assert named - _apt_packages() == set()


def test_every_python_module_named_is_in_the_test_extra_or_dependencies():
    assert {d.lower() for d in preflight.MODULES.values()} - _pyproject_requirements() == set()


def test_cross_compilers_map_to_debian_packages():
    cmds = preflight.toolchain_commands()
    assert cmds["aarch64-linux-gnu-gcc"] == "gcc-aarch64-linux-gnu"
    assert cmds["qemu-s390x"] == "qemu-user"


def test_a_missing_tool_is_named_with_its_package(tmp_path):
    """With bsdtar and lz4 gone from PATH, the check names both packages."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    every = {**preflight.COMMANDS, **preflight.toolchain_commands(), "ldconfig": ""}
    for command in every:
        found = shutil.which(command)
        if found and command not in ("bsdtar", "lz4"):
            (bin_dir / command).symlink_to(found)
    env = dict(os.environ, PATH=str(bin_dir))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "preflight.py")],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("2 thing(s) the tests need are missing; run 'make test-deps'")
    assert sorted(lines[1:]) == ["  bsdtar: Debian package libarchive-tools", "  lz4: Debian package lz4"]

