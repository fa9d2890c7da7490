"""The build-system examples (examples/make, ninja, cmake, meson) rebuild
from rumpfs's depfile exactly when they should.

Each example is copied with examples/hello (the tree) and examples/c; the
build tool itself judges: a second build says it has no work, a changed or
added file of the tree packs and links again, a file beside the tree does
not.  Times are set explicitly (never waited for): the tree starts in 2001,
and a change is stamped one nanosecond after the object it must outdate.
The program built is run and lists the image; the image holds the change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_rumpfs

EXAMPLES = ROOT / "examples"
PAST_NS = 978_307_200 * 10**9  # 2001-01-01


@pytest.fixture
def env(tmp_path):
    """PATH with a ``rumpfs`` that runs this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "rumpfs"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m rumpfs "$@"\n')
    wrapper.chmod(0o755)
    out = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out.pop("SOURCE_DATE_EPOCH", None)
    out.pop("MAKEFLAGS", None)
    return out


def copy_example(tmp_path, name) -> Path:
    top = tmp_path / "examples"
    for part in (name, "c", "hello"):
        shutil.copytree(EXAMPLES / part, top / part, symlinks=True)
    for path in [top / "hello", *(top / "hello").rglob("*")]:
        os.utime(path, ns=(PAST_NS, PAST_NS))
    return top


class Tool:
    """How one example is configured, built and told up to date."""

    def __init__(self, name, build_dir, configure, build, up_to_date):
        self.name = name
        self.build_dir = build_dir
        self.configure = configure
        self.build = build
        self.up_to_date = up_to_date


TOOLS = {
    "make": Tool("make", ".", [], ["make"], "'list_images' is up to date."),
    "ninja": Tool("ninja", ".", [], ["ninja"], "ninja: no work to do."),
    "cmake": Tool("cmake", "build", [["cmake", "-S", ".", "-B", "build", "-G", "Ninja"]],
                  ["cmake", "--build", "build"], "ninja: no work to do."),
    "meson": Tool("meson", "build", [["meson", "setup", "build"]],
                  ["meson", "compile", "-C", "build"], "ninja: no work to do."),
}


def run(cmd, cwd, env) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def stamp_after(path: Path, reference: Path) -> None:
    """Make ``path`` newer than ``reference`` by one nanosecond."""
    t = os.stat(reference).st_mtime_ns + 1
    os.utime(path, ns=(t, t))


# CMake and Meson configure for seconds: with the slow tests.
@pytest.mark.parametrize("name", ["make", "ninja",
                                  pytest.param("cmake", marks=pytest.mark.slow),
                                  pytest.param("meson", marks=pytest.mark.slow)])
def test_example_rebuilds_exactly_when_the_tree_changes(tmp_path, env, name):
    tool = TOOLS[name]
    top = copy_example(tmp_path, name)
    here = top / name
    for cmd in tool.configure:
        run(cmd, here, env)
    build = here / tool.build_dir
    obj, program = build / "root.o", build / "list_images"

    first = run(tool.build, here, env)
    assert tool.up_to_date not in first
    listing = run([str(program)], here, env)
    assert listing.startswith("root ") and " ffs1 " in listing
    assert tool.up_to_date in run(tool.build, here, env)

    # A file beside the tree is no input.
    (top / "NOTES").write_text("not packed\n")
    stamp_after(top / "NOTES", obj)
    assert tool.up_to_date in run(tool.build, here, env)

    # A changed file packs and links again, once.
    page = top / "hello" / "www" / "index.html"
    page.write_text("<p>changed</p>\n")
    stamp_after(page, obj)
    assert tool.up_to_date not in run(tool.build, here, env)
    assert run_rumpfs("cat", obj, "/www/index.html").out == "<p>changed</p>\n"
    assert tool.up_to_date in run(tool.build, here, env)

    # So does an added file (its directory changed).
    added = top / "hello" / "www" / "new.txt"
    added.write_text("new\n")
    stamp_after(added, obj)
    stamp_after(added.parent, obj)
    assert tool.up_to_date not in run(tool.build, here, env)
    assert run_rumpfs("cat", obj, "/www/new.txt").out == "new\n"
    assert tool.up_to_date in run(tool.build, here, env)
