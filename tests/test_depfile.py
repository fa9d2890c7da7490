"""``--depfile``, ``pack --json``, ``check --json`` and ``--print-include-dir``.

gcc -MD judges the escaping (the same awkward names in both depfiles),
Ninja reads the depfile back (``ninja -t deps``) and find(1) says what it
must list; bsdtar counts the entries ``--json`` reports.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import IS_ROOT, ROOT, run_rumpfs
from ffs_testlib import Patcher

from rumpfs.depfile import escape

AWKWARD = ["sp ace.h", "dol$lar.h", "ha#sh.h", "back\\ slash.h", "two  spaces.h"]


def test_escaping_matches_gcc_md(tmp_path):
    for name in AWKWARD:
        (tmp_path / name).write_text("/* empty */\n")
    (tmp_path / "x.c").write_text("".join(f'#include "{n}"\n' for n in AWKWARD))
    subprocess.run(["gcc", "-MD", "-MF", "x.d", "-c", "x.c", "-o", "x.o"], cwd=tmp_path, check=True)
    gcc_rule = (tmp_path / "x.d").read_text()
    for name in AWKWARD:
        assert f" {escape(name)}" in gcc_rule, (name, escape(name), gcc_rule)


def ninja_deps(tmp_path, *pack_args) -> set[bytes]:
    """The inputs Ninja read from the depfile of a pack of ``pack_args``."""
    wrapper = tmp_path / "rumpfs.sh"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {os.sys.executable} -m rumpfs "$@"\n')
    wrapper.chmod(0o755)
    args = " ".join(str(a) for a in pack_args)
    (tmp_path / "build.ninja").write_text(
        "rule pack\n"
        f"  command = {wrapper} pack {args} -o $out --depfile $out.d\n"
        "  depfile = $out.d\n  deps = gcc\n"
        "build root.cpio: pack\n")
    subprocess.run(["ninja"], cwd=tmp_path, check=True, capture_output=True)
    text = subprocess.run(["ninja", "-t", "deps", "root.cpio"], cwd=tmp_path, check=True,
                          capture_output=True).stdout
    lines = text.splitlines()
    assert lines[0].startswith(b"root.cpio: #deps ")
    return {line.strip() for line in lines[1:] if line.strip()}


def find(*tops) -> set[bytes]:
    out = subprocess.run(["find", *map(str, tops), "(", "-type", "d", "-o", "-type", "f", ")",
                          "-print0"], check=True, capture_output=True).stdout
    return {os.path.normpath(p) for p in out.split(b"\0") if p}


@pytest.mark.skipif(not IS_ROOT, reason="the fixture's devices need root")
def test_depfile_names_every_directory_and_file(tmp_path, fixture_tree):
    spec = tmp_path / "extra.spec"
    payload = tmp_path / "payload:1.bin"
    payload.write_bytes(b"p" * 100)
    spec.write_text(f"file /opt/payload {payload.name} 0644 0 0\n")
    work = tmp_path / "w"
    work.mkdir()
    deps = ninja_deps(work, fixture_tree, "--spec", spec)
    # Symlinks, devices, fifos and sockets of the tree are not listed.
    expected = find(fixture_tree, ROOT / "stubetc") | {bytes(spec), bytes(payload)}
    assert deps == expected


def test_pack_json_and_side_output(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("f\n")
    out = tmp_path / "root.S"
    res = run_rumpfs("pack", "--no-stubetc", src, "-o", out, "--format", "cpio", "--json",
                     "--depfile", tmp_path / "root.d", "--remove", "/nothing")
    report = json.loads(res.out)
    image = tmp_path / "root.S.img"
    names = subprocess.run(["bsdtar", "-tf", str(image)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert report["output"] == str(out) and report["side_outputs"] == [str(image)]
    assert report["format"] == "cpio" and report["container"] == "asm"
    assert report["image_size"] == os.stat(image).st_size
    assert report["output_size"] == os.stat(out).st_size
    assert report["entries"] == len(names) == 3
    assert report["warnings"] == ["--remove /nothing: matches nothing in the image"]
    assert report["inputs"] == [str(src), str(src / "d"), str(src / "d" / "f")]
    assert (tmp_path / "root.d").read_text().startswith(f"{out} {image}: \\\n")


def test_verbose_names_the_side_output(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "root.S"
    res = run_rumpfs("pack", "--no-stubetc", src, "-o", out, "-v")
    assert res.out.splitlines()[1] == f"{out}.img: the image, which {out} includes"
    assert os.path.isfile(f"{out}.img")


def test_check_json(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 5000)
    img = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", src, "-o", img, "--endian", "little")
    good = run_rumpfs("check", img, "--json")
    assert json.loads(good.out) == {"image": str(img), "format": "ffs", "clean": True,
                                    "problems": [], "size": os.stat(img).st_size}
    # The superblock's free fragment total off by 3 (the checker recounts it).
    patcher = Patcher(img)
    off = patcher.sb_field("fs_cstotal.cs_nffree")
    want = patcher.get(off, "q")
    patcher.put(off, "q", want + 3)
    patcher.close()
    bad = run_rumpfs("check", img, "--json", check=False)
    report = json.loads(bad.out)
    assert bad.returncode == 1 and report["clean"] is False
    assert f"superblock: fs_cstotal.cs_nffree is {want + 3}, recomputed {want}" in report["problems"]


def test_print_include_dir(tmp_path):
    res = run_rumpfs("--print-include-dir")
    include = res.out.strip()
    assert os.path.isfile(os.path.join(include, "rumpfs_images.h"))
    # gcc finds the header there.
    (tmp_path / "t.c").write_text('#include "rumpfs_images.h"\nint main(void) { return 0; }\n')
    subprocess.run(["gcc", "-fsyntax-only", "-I", include, "t.c"], cwd=tmp_path, check=True)


def test_a_name_with_a_newline_is_left_out_with_a_warning(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_text("ok\n")
    (src / "two\nlines").write_text("x\n")
    out, dep = tmp_path / "r.cpio", tmp_path / "r.d"
    res = run_rumpfs("pack", "--no-stubetc", src, "-o", out, "--depfile", dep, "--json")
    bad = str(src / "two\nlines")
    assert res.err == (f"rumpfs: warning: {bad!r}: a name with a newline cannot be written "
                       f"in a depfile; left out\n")
    assert dep.read_text() == f"{out}: \\\n {src} \\\n {src / 'ok'}\n"
    assert json.loads(res.out)["warnings"] == [f"{bad!r}: a name with a newline cannot be "
                                               f"written in a depfile; left out"]
