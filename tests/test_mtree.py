"""``--mtree`` specs, as makefs -F reads them.

The specs are written by NetBSD's own ``mtree -c`` (Debian mtree-netbsd)
from a tree that has the owners, modes, times, devices and links; rumpfs
packs a plain copy of its files with the spec; dissect.ffs reads the image
and must see the original tree, and ``mtree -f SPEC`` (verify mode) must find
the extracted cpio archive matching the spec.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import IS_ROOT, run_rumpfs
from ffs_testlib import dissect_records
from treecompare import assert_same, scan_host

needs_root = pytest.mark.skipif(not IS_ROOT, reason="the original tree's owners and devices need root")
KEYWORDS = "type,mode,uid,gid,time,link,device"
T = 1_650_000_000


@pytest.fixture
def original(tmp_path):
    """A tree with owners, modes, a device, a fifo, links, an awkward name."""
    top = tmp_path / "orig"
    (top / "bin").mkdir(parents=True)
    (top / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(3000))
    (top / "bin" / "tool").chmod(0o4755)
    (top / "etc").mkdir()
    (top / "etc" / "secret file").write_text("s3cret\n")
    (top / "etc" / "secret file").chmod(0o600)
    os.chown(top / "etc" / "secret file", 1000, 100)
    (top / "var" / "empty").mkdir(parents=True)
    (top / "var" / "empty").chmod(0o700)
    os.mknod(top / "null", 0o20666, os.makedev(1, 3))
    os.mkfifo(top / "fifo")
    (top / "sh").symlink_to("bin/tool")
    os.chown(top / "sh", 3, 7, follow_symlinks=False)
    for path in sorted(top.rglob("*"), reverse=True) + [top]:
        os.utime(path, ns=(T * 10**9 + 5,) * 2, follow_symlinks=False)
    return top


def plain_copy(original, dest):
    """Only the regular files, as an unprivileged build has them."""
    for path in original.rglob("*"):
        if path.is_file() and not path.is_symlink():
            target = dest / path.relative_to(original)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return dest


def mtree_spec(top, spec, keywords=KEYWORDS):
    text = subprocess.run(["mtree", "-c", "-p", str(top), "-k", keywords], check=True,
                          capture_output=True).stdout
    spec.write_bytes(text)
    return spec


@needs_root
def test_mtree_c_spec_restores_the_tree_in_ffs(original, tmp_path):
    spec = mtree_spec(original, tmp_path / "spec")
    src = plain_copy(original, tmp_path / "src")
    out = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", src, "--mtree", spec, "-o", out, "--endian", "little")
    assert_same(scan_host(original), dissect_records(out), ignore=())


@needs_root
def test_netbsd_mtree_verifies_the_extracted_cpio(original, tmp_path):
    # No times: extraction sets a directory's time before filling it (times
    # are checked in FFS above).
    spec = mtree_spec(original, tmp_path / "spec", KEYWORDS.replace(",time", ""))
    src = plain_copy(original, tmp_path / "src")
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "--mtree", spec, "-o", out)
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(out), "--numeric-owner"], cwd=x, check=True)
    check = subprocess.run(["mtree", "-p", str(x), "-f", str(spec)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_metalog_spec_resolves_names_from_the_image_etc(tmp_path):
    src = tmp_path / "src"
    (src / "usr" / "bin").mkdir(parents=True)
    (src / "usr" / "bin" / "ls").write_text("ls\n")
    (src / "usr" / "bin" / "extra").write_text("not in the spec\n")
    spec = tmp_path / "METALOG"
    spec.write_text(
        "#mtree v2.0\n"
        "./usr type=dir uname=root gname=wheel mode=0755\n"
        "./usr/bin type=dir uname=root gname=wheel mode=0755\n"
        "./usr/bin/ls type=file uname=bin gname=operator mode=0555 size=3 flags=schg\n"
        "./usr/bin/l\\040s type=link uname=root gname=wheel mode=0755 link=ls\n"
        "./dev type=dir mode=0755\n"
        "./dev/console type=char mode=0600 device=netbsd,0,0\n")
    out = tmp_path / "r.img"
    res = run_rumpfs("pack", src, "--mtree", spec, "-o", out, "--endian", "little")
    assert res.err == f"rumpfs: note: {spec}: file flags (flags=) are not kept in the image\n"
    rec = dissect_records(out)
    # stubetc: bin is uid 3, operator is gid 5 (in its master.passwd and group).
    assert (rec[b"usr/bin/ls"]["uid"], rec[b"usr/bin/ls"]["gid"], rec[b"usr/bin/ls"]["mode"]) == (3, 5, 0o555)
    assert rec[b"usr/bin/l s"]["target"] == b"ls"
    assert rec[b"dev/console"]["type"] == "chardev" and rec[b"dev/console"]["mode"] == 0o600
    assert b"usr/bin/extra" in rec

    only = tmp_path / "only.img"
    run_rumpfs("pack", src, "--mtree", spec, "--mtree-only", "-o", only, "--endian", "little")
    kept = set(dissect_records(only))
    # makefs -x: what the spec does not list is left out, /etc included.
    assert kept == {b"", b"usr", b"usr/bin", b"usr/bin/ls", b"usr/bin/l s", b"dev", b"dev/console"}


def test_missing_regular_file_is_an_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    spec = tmp_path / "spec"
    spec.write_text("/set type=file mode=0644\n.  type=dir\n    gone  size=10\n..\n")
    out = tmp_path / "r.cpio"
    res = run_rumpfs("pack", "--no-stubetc", src, "--mtree", spec, "-o", out, check=False)
    assert (res.returncode, res.err) == (1, f"rumpfs: error: {spec}:3: ./gone: regular file in the "
                                            f"spec is not in the sources (and has no contents=)\n")
    assert not out.exists()


def test_unknown_user_is_an_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    spec = tmp_path / "spec"
    spec.write_text("./ type=dir uname=nosuchuser\n")
    res = run_rumpfs("pack", src, "--mtree", spec, "-o", tmp_path / "r.cpio", check=False)
    assert (res.returncode, res.err) == (1, f"rumpfs: error: {spec}:1: uname=nosuchuser: no such "
                                            f"user in the image's /etc/passwd\n")
