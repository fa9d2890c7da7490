"""Shared fixtures: the generated fixture tree and a way to run the CLI."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The checkout itself (for ``bench``): plain ``pytest`` does not put the current
# directory on sys.path the way ``python -m pytest`` does.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import make_tree as _make_tree  # noqa: E402
import preflight  # noqa: E402

IS_ROOT = os.geteuid() == 0

#: What the tests assume of the environment they run in, whatever the caller's
#: holds: no SOURCE_DATE_EPOCH (tests that want one pass it), times shown in
#: UTC, a UTF-8 locale whose messages are the untranslated ones, and the
#: common umask (the fixture tree's modes are written through it).
TEST_ENV = {"TZ": "UTC", "LC_ALL": "C.UTF-8"}
CLEARED_ENV = ("SOURCE_DATE_EPOCH", "LANG", "LANGUAGE", "LC_CTYPE", "LC_MESSAGES", "LC_TIME")
TEST_UMASK = 0o022


def pytest_configure(config):
    # Before any fixture or collection, and inherited by the xdist workers and
    # every subprocess (rumpfs, cpio, bsdtar, makefs).
    for name in CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ.update(TEST_ENV)
    time.tzset()
    os.umask(TEST_UMASK)


@pytest.fixture(autouse=True)
def _clean_environment():
    """Each test starts from the environment of pytest_configure, whatever an
    earlier test in this process (or a module fixture's API call) set."""
    os.environ.pop("SOURCE_DATE_EPOCH", None)


def require_tool(tool: str, package: str) -> str:
    """The path of ``tool``; a missing tool the CI installs is a failure, not a skip."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: install the Debian package {package} "
                    "(scripts/apt-test-packages.txt)", pytrace=False)
    return path


def require_module(name: str, pypi: str):
    """Import ``name``; a missing test dependency is a failure naming the PyPI package."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.fail(f"cannot import {name} ({e}): install the PyPI package {pypi} "
                    "(pip install -e '.[test]')", pytrace=False)


def pytest_report_header(config):
    """Which kernel the slow kernel tests boot (pinned, or Debian's newer one)."""
    from kernel import harness
    try:
        return f"test kernel: {harness.Kernel.chosen().description}"
    except harness.KernelMissing as e:
        return f"test kernel: none ({e})"


def pytest_sessionstart(session):
    """Stop at once, naming the packages, when a tool the tests run is missing."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller has checked
    problems = preflight.missing()
    if problems:
        pytest.exit(preflight.report(problems), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def fixture_tree(tmp_path_factory) -> Path:
    """The standard fixture tree (devices only when running as root). Read-only!"""
    dest = tmp_path_factory.mktemp("fixture") / "tree"
    _make_tree.make_tree(dest)
    return dest


@pytest.fixture
def make_fixture_tree():
    """Create a fresh fixture tree at a path (``reverse=True`` for another order)."""
    return _make_tree.make_tree


class Result:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.err = proc.stderr.decode("utf-8", "replace")
        self.out = proc.stdout.decode("utf-8", "replace")

    def __repr__(self):
        return f"<rc={self.returncode} stderr={self.err!r}>"


def run_rumpfs(*args, env=None, check=True, cwd=None, input=None, no_dac=False) -> Result:
    """Run ``python -m rumpfs ARGS`` and return its result (check: rc 0 expected)."""
    full_env = dict(os.environ)
    full_env.pop("SOURCE_DATE_EPOCH", None)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    cmd = [sys.executable, "-m", "rumpfs", *map(os.fsdecode, args)]
    if no_dac:
        # Root without the capabilities that let it ignore file permissions.
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    proc = subprocess.run(cmd, env=full_env, capture_output=True, cwd=cwd, input=input)
    res = Result(proc)
    if check and proc.returncode != 0:
        raise AssertionError(f"rumpfs {' '.join(map(os.fsdecode, args))} failed: {res.err}")
    return res


@pytest.fixture
def rumpfs():
    return run_rumpfs


@contextlib.contextmanager
def gc_disabled():
    """No cyclic garbage collection while the block runs, as in api.pack;
    the collector's state is restored after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def leftovers(directory) -> list[str]:
    """Temporary files an interrupted write could leave beside the output."""
    return [n for n in os.listdir(directory) if n.endswith(".part")]


@pytest.fixture(scope="session")
def makefs_tool() -> str:
    return require_tool("makefs", "makefs")


@pytest.fixture(scope="session")
def libdb1_installed() -> None:
    import ctypes
    try:
        ctypes.CDLL("libdb1.so.2")
    except OSError as e:
        pytest.fail(f"libdb1.so.2 cannot be loaded ({e}): install the Debian package libdb1-compat",
                    pytrace=False)
