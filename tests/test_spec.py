"""Spec files: entries and owners without root, checked by bsdtar's listing."""

from __future__ import annotations

import subprocess

from conftest import leftovers, run_rumpfs
from test_cpio import newc_headers  # the headers at the specification's offsets
from test_pack import cat, listing  # libarchive's view of a cpio archive


def test_spec_creates_devices_links_and_owners(tmp_path):
    (tmp_path / "init.sh").write_text("#!/bin/sh\necho hi\n")
    src = tmp_path / "src"
    (src / "var" / "www").mkdir(parents=True)
    (src / "var" / "www" / "index.html").write_text("hi\n")
    spec = tmp_path / "root.spec"
    spec.write_text(
        "# devices without root\n"
        "dir /dev 0755 0 0\n"
        "nod /dev/console 0600 0 5 c 5 1\n"
        "nod /dev/vda 0660 0 6 b 254 0\n"
        "pipe /run/fifo 0620 0 0\n"
        "sock /run/sock 0755 0 0\n"
        "slink /bin/sh busybox 0777 0 0\n"
        "file /init init.sh 0755 0 0 /sbin/init\n"
        "meta /var/www uid=33 gid=33\n"
        "meta /var/www/* uid=33 gid=33 mode=0640\n")
    out = tmp_path / "root.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "--spec", spec, "-o", out)
    # bsdtar, not our reader, is the judge.
    text = subprocess.run(["bsdtar", "-tvf", str(out)], capture_output=True, check=True).stdout.decode()
    lines = {ln.split()[-1] if "->" not in ln and " link to " not in ln else ln.split()[-3]: ln
             for ln in text.splitlines()}
    console = lines["dev/console"]
    assert console.startswith("crw-------") and " 5,1 " in console.replace(", ", ",")
    assert lines["dev/vda"].startswith("brw-rw----")
    assert lines["run/fifo"].startswith("prw--w----")
    assert lines["bin/sh"].startswith("lrwxrwxrwx") and text.count("bin/sh -> busybox") == 1
    assert "sbin/init link to init" in text
    assert lines["var/www/index.html"].split()[2:4] == ["33", "33"]
    assert lines["var/www/index.html"].startswith("-rw-r-----")
    names = listing(out)
    assert names["/run/sock"]["type"] == "socket"
    headers = newc_headers(out.read_bytes())
    assert headers[b"init"]["c_nlink"] == headers[b"sbin/init"]["c_nlink"] == 2
    assert headers[b"init"]["c_ino"] == headers[b"sbin/init"]["c_ino"]
    assert cat(out, "/sbin/init") == b"#!/bin/sh\necho hi\n"


def _spec_fails(tmp_path, text):
    spec = tmp_path / "bad.spec"
    spec.write_text(text)
    out = tmp_path / "out.cpio"
    res = run_rumpfs("pack", "--no-stubetc", "--spec", spec, "-o", out, check=False)
    assert res.returncode == 1
    assert not out.exists() and leftovers(tmp_path) == []
    return res.err.strip().replace(str(spec), "SPEC")


def test_spec_errors_name_file_and_line(tmp_path):
    assert _spec_fails(tmp_path, "dir /a 0755 0 0\nfrob /x\n") == (
        "rumpfs: error: SPEC:2: unknown entry type 'frob' (file, dir, nod, slink, pipe, sock, meta)")
    assert _spec_fails(tmp_path, "nod /dev/x 0600 0 0 q 1 2\n") == (
        "rumpfs: error: SPEC:1: device type 'q' is neither 'b' nor 'c'")
    assert _spec_fails(tmp_path, "dir /a 0999 0 0\n") == "rumpfs: error: SPEC:1: mode '0999' is not a number"
    assert _spec_fails(tmp_path, "meta /nothing uid=1\n") == (
        "rumpfs: error: SPEC:1: meta /nothing: matches nothing in the image")
    assert _spec_fails(tmp_path, "dir /a 0755 0 0\nmeta /a colour=red\n") == (
        "rumpfs: error: SPEC:2: unknown setting 'colour=red' (known: mode=, uid=, gid=, mtime=)")
    assert _spec_fails(tmp_path, "file /x missing.bin 0644 0 0\n").startswith(
        "rumpfs: error: SPEC:1: ")
    assert _spec_fails(tmp_path, "slink /a\n") == (
        "rumpfs: error: SPEC:1: 'slink' needs <name> <target> <mode> <uid> <gid>")


def test_missing_spec_file(tmp_path):
    res = run_rumpfs("pack", "--spec", tmp_path / "nope.spec", "-o", tmp_path / "o.cpio", check=False)
    assert res.err == f"rumpfs: error: {tmp_path / 'nope.spec'}: spec file does not exist\n"
