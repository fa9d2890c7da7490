"""The cross matrix: objects for every target Debian has a cross gcc for, linked
by that gcc (GNU ld, ld.gold and ld.lld where they support the target; PIE,
non-PIE and static) into a program that walks the registry, run under
qemu-user, its output compared with the raw image bytes.  Also the .S and .c
outputs built by the cross gcc, and --like from two cross compilers.

Slow (about two minutes on two cores): ``make test-slow``.
"""

from __future__ import annotations

import os

import pytest
from conftest import run_rumpfs
from elf import toolchains as TC

pytestmark = pytest.mark.slow

RUNNABLE = [k for k, tc in TC.TOOLCHAINS.items() if tc.qemu != ""]
MATRIX = [(k, ld, pie) for k in RUNNABLE for ld in TC.TOOLCHAINS[k].linkers
          for pie in ("pie", "nopie")] + [(k, "bfd", "static") for k in RUNNABLE
                                          if k != "x86_64"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    one, two = d / "one.img", d / "two.img"
    one.write_bytes(os.urandom(20011))
    two.write_bytes(os.urandom(777))
    return one, two


def _need(tc):
    tc.require(run=True)


def _check(got, one, two):
    assert got["count"] == 2
    assert got["records"]["one"][1] == one.read_bytes()
    assert got["records"]["two"][1] == two.read_bytes()
    assert got["records"]["two"][0]["mount"] == "/srv"
    assert got["symbols"]["one"][1] == one.read_bytes()
    assert got["symbols"]["two"][1] == two.read_bytes()
    assert got["symbols"]["one"][0]["span"] == str(one.stat().st_size)


@pytest.mark.parametrize("key,linker,mode", MATRIX)
def test_cross_program_finds_both_images(key, linker, mode, images, tmp_path):
    tc = TC.TOOLCHAINS[key]
    _need(tc)
    TC.require_linker(linker)
    one, two = images
    run_rumpfs("wrap", one, "-o", tmp_path / "one.o", "--target", tc.target, "--name", "one",
               *tc.rumpfs_args)
    run_rumpfs("wrap", two, "-o", tmp_path / "two.o", "--target", tc.target, "--name", "two",
               "--mount-point", "/srv", "--writable", *tc.rumpfs_args)
    exe = tmp_path / "walk"
    warnings = TC.link_walker(tc, [tmp_path / "one.o", tmp_path / "two.o"], exe,
                              linker=linker, pie=(mode == "pie"), static=(mode == "static"),
                              comps=("one", "two"))
    assert warnings == ""
    _check(TC.run_walker(tc, exe), one, two)


@pytest.mark.parametrize("key", RUNNABLE)
def test_cross_asm_and_c_outputs(key, images, tmp_path):
    tc = TC.TOOLCHAINS[key]
    _need(tc)
    one, two = images
    run_rumpfs("wrap", one, "-o", tmp_path / "one.S", "--target", tc.target, "--name", "one",
               *tc.rumpfs_args)
    run_rumpfs("wrap", two, "-o", tmp_path / "two.c", "--target", tc.target, "--name", "two",
               "--mount-point", "/srv", *tc.rumpfs_args)
    exe = tmp_path / "walk"
    warnings = TC.link_walker(tc, [], exe, comps=("one", "two"),
                              sources=[tmp_path / "one.S", tmp_path / "two.c"])
    assert warnings == ""
    _check(TC.run_walker(tc, exe), one, two)
    # The .S assembled by the cross gcc: same header as the object rumpfs writes.
    TC.run([tc.gcc, *tc.cflags, "-c", tmp_path / "one.S", "-o", tmp_path / "as.o"], cwd=tmp_path)
    run_rumpfs("wrap", one, "-o", tmp_path / "ours.o", "--target", tc.target, "--name", "one",
               *tc.rumpfs_args)
    ours, theirs = TC.readelf_header(tmp_path / "ours.o"), TC.readelf_header(tmp_path / "as.o")
    assert ours == theirs


@pytest.mark.parametrize("key", ["aarch64", "mips"])
def test_cross_like_links_and_runs(key, images, tmp_path):
    """--like an object of the program being built: no --target needed."""
    tc = TC.TOOLCHAINS[key]
    _need(tc)
    one, two = images
    (tmp_path / "k.c").write_text("int kernel_thing = 1;\n")
    TC.run([tc.gcc, "-c", tmp_path / "k.c", "-o", tmp_path / "k.o"])
    run_rumpfs("wrap", one, "-o", tmp_path / "one.o", "--like", tmp_path / "k.o", "--name", "one")
    run_rumpfs("wrap", two, "-o", tmp_path / "two.o", "--like", tmp_path / "k.o", "--name", "two",
               "--mount-point", "/srv")
    exe = tmp_path / "walk"
    assert TC.link_walker(tc, [tmp_path / "one.o", tmp_path / "two.o", tmp_path / "k.o"], exe,
                          comps=("one", "two")) == ""
    _check(TC.run_walker(tc, exe), one, two)


@pytest.mark.parametrize("key", ["mips", "s390x", "arm-soft"])
def test_cross_pack_cpio(key, tmp_path):
    """pack straight into an object for a (big-endian / soft-float) target."""
    tc = TC.TOOLCHAINS[key]
    _need(tc)
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "motd").write_text("hello from rumpfs\n")
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    run_rumpfs("pack", src, "-o", tmp_path / "root.o", "--image-format", "cpio",
               "--target", tc.target, *tc.rumpfs_args, env=env)
    # /etc/pwd.db is in the target's byte order: the bare image must be too.
    endian = "big" if key in ("mips", "s390x") else "little"
    run_rumpfs("pack", src, "-o", tmp_path / "root.cpio", "--endian", endian, env=env)
    exe = tmp_path / "walk"
    assert TC.link_walker(tc, [tmp_path / "root.o"], exe, comps=("root",)) == ""
    got = TC.run_walker(tc, exe)
    assert got["records"]["root"][1] == (tmp_path / "root.cpio").read_bytes()
    assert got["records"]["root"][0]["format"] == "3"
