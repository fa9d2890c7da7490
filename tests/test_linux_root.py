"""A Linux (Debian-style) root packs with default options, its /etc untouched.

The user's account files (passwd, group, shadow, gshadow; no master.passwd)
make the default /etc's account files step aside: no NetBSD users, no
generated databases, nothing written over the user's files.  Every format is
judged by a tool nobody here wrote -- GNU cpio and bsdtar extract the
archives, dissect.ffs reads the FFS images (bare and taken out of the object
by objcopy) -- and compared file by file with the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import IS_ROOT, run_rumpfs
from ffs_testlib import dissect_records
from treecompare import assert_same, normalized, scan_host

from rumpfs.sources import stubetc_path

needs_root = pytest.mark.skipif(not IS_ROOT, reason="extraction keeps owners only as root")

# What Debian 12's base-files, base-passwd, netbase and login packages write
# (shortened lists, the same shapes).
PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
man:x:12:
mail:x:8:
www-data:x:33:
shadow:x:42:
utmp:x:43:
staff:x:50:
users:x:100:
nogroup:x:65534:
"""
SHADOW = """\
root:*:19683:0:99999:7:::
daemon:*:19683:0:99999:7:::
bin:*:19683:0:99999:7:::
sys:*:19683:0:99999:7:::
sync:*:19683:0:99999:7:::
man:*:19683:0:99999:7:::
mail:*:19683:0:99999:7:::
www-data:*:19683:0:99999:7:::
_apt:*:19683:0:99999:7:::
nobody:*:19683:0:99999:7:::
"""
GSHADOW = "".join(f"{line.split(':')[0]}:*::\n" for line in GROUP.splitlines())
FILES = {
    "etc/passwd": (PASSWD, 0o644),
    "etc/passwd-": (PASSWD, 0o644),
    "etc/group": (GROUP, 0o644),
    "etc/shadow": (SHADOW, 0o640),
    "etc/gshadow": (GSHADOW, 0o640),
    "etc/hostname": ("debian\n", 0o644),
    "etc/hosts": ("127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n\n"
                  "::1     localhost ip6-localhost ip6-loopback\n", 0o644),
    "etc/timezone": ("Etc/UTC\n", 0o644),
    "etc/debian_version": ("12.5\n", 0o644),
    "etc/fstab": ("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n", 0o644),
    "etc/shells": ("# /etc/shells: valid login shells\n/bin/sh\n/usr/bin/sh\n"
                   "/bin/bash\n/usr/bin/bash\n", 0o644),
    "etc/nsswitch.conf": ("passwd:         files\ngroup:          files\nshadow:         files\n"
                          "gshadow:        files\n\nhosts:          files dns\n", 0o644),
    "etc/services": ("tcpmux\t\t1/tcp\t\t\t\t# TCP port service multiplexer\n"
                     "ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol\n", 0o644),
    "etc/login.defs": ("MAIL_DIR        /var/mail\nUID_MIN                  1000\n", 0o644),
    "etc/skel/.bashrc": ("# ~/.bashrc: executed by bash(1) for non-login shells.\n", 0o644),
    "etc/apt/sources.list.d/debian.sources": (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\n", 0o644),
    "usr/lib/os-release": ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n', 0o644),
    "usr/bin/dash": ("#!fake dash\n", 0o755),
}
SYMLINKS = {
    "etc/os-release": "../usr/lib/os-release",
    "etc/localtime": "/usr/share/zoneinfo/Etc/UTC",
    "etc/resolv.conf": "../run/systemd/resolve/stub-resolv.conf",
    "bin": "usr/bin",
    "usr/bin/sh": "dash",
}
#: The default /etc's account files, which a Linux /etc must not get.
STUB_ACCOUNT_FILES = ("master.passwd", "group")
#: Generated from master.passwd: never in a Linux root.
GENERATED = ("master.passwd", "pwd.db", "spwd.db")


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory):
    top = tmp_path_factory.mktemp("debian") / "rootfs"
    for rel, (text, mode) in FILES.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    for rel, target in SYMLINKS.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    (top / "root").mkdir(mode=0o700)
    (top / "root").chmod(0o700)
    # Fixed times, older than any SOURCE_DATE_EPOCH a test sets.
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in dirnames + filenames + [""]:
            os.utime(os.path.join(dirpath, name), (1_700_000_000, 1_700_000_000),
                     follow_symlinks=False)
    return top


def expected_records(top) -> dict:
    """The source tree with owners 0:0, plus the default /etc files the user
    lacks (0644, 0:0), but none of the default account files."""
    expected = normalized(scan_host(top))
    stub = stubetc_path()
    stub_records = scan_host(stub)
    user_etc = set(os.listdir(top / "etc"))
    for name in sorted(os.listdir(stub)):
        if name in user_etc or name in STUB_ACCOUNT_FILES:
            continue
        rec = dict(stub_records[os.fsencode(name)], uid=0, gid=0, mode=0o644)
        expected[b"etc/" + os.fsencode(name)] = rec
    assert expected[b"etc/networks"]["type"] == "file"  # a default the user lacks
    return expected


def without_times(records, kinds=("dir", "symlink")):
    # GNU cpio and libarchive set a directory's time before filling it (the
    # kernel bumps it) and GNU cpio never sets a symlink's time.
    return {p: dict(r, mtime=None) if r["type"] in kinds else r for p, r in records.items()}


def check_etc_bytes(top, records) -> None:
    """Every file of the user's /etc is there with the same bytes; nothing
    generated, no default account file."""
    for rel in FILES:
        if rel.startswith("etc/"):
            got = records.get(os.fsencode(rel))
            assert got is not None, rel
            assert got["sha256"] is not None and got["size"] == len(FILES[rel][0].encode())
    for name in GENERATED:
        assert b"etc/" + name.encode() not in records


@pytest.mark.parametrize("tool,name", [("cpio", "root.cpio"), ("bsdtar", "root.cpio.gz")])
@needs_root
def test_linux_root_cpio_extracted(debian_root, tmp_path, tool, name):
    out = tmp_path / name
    run_rumpfs("pack", debian_root, "-o", out)
    dest = tmp_path / "x"
    dest.mkdir()
    if tool == "cpio":
        with open(out, "rb") as f:
            subprocess.run(["cpio", "-idm", "--quiet"], stdin=f, cwd=dest, check=True)
    else:
        subprocess.run(["bsdtar", "-xpf", str(out)], cwd=dest, check=True)
    actual = scan_host(dest)
    expected = expected_records(debian_root)
    assert_same(without_times(expected), without_times(actual))
    check_etc_bytes(debian_root, actual)


@pytest.mark.parametrize("fmt", ["ffs", "ffs2"])
def test_linux_root_ffs_read_by_dissect(debian_root, tmp_path, fmt):
    out = tmp_path / "root.img"
    run_rumpfs("pack", debian_root, "-o", out, "--format", fmt, "--endian", "little")
    actual = dissect_records(out)
    assert_same(expected_records(debian_root), actual)
    check_etc_bytes(debian_root, actual)


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="objcopy (binutils) not installed")
def test_linux_root_object_read_by_dissect(debian_root, tmp_path):
    obj = tmp_path / "root.o"
    run_rumpfs("pack", debian_root, "-o", obj, "--target", "x86_64")
    image = tmp_path / "root.img"
    subprocess.run(["objcopy", "-O", "binary", "--only-section", ".rodata.rumpfs.root",
                    str(obj), str(image)], check=True)
    actual = dissect_records(image)
    assert_same(expected_records(debian_root), actual)
    check_etc_bytes(debian_root, actual)


def test_linux_root_was_refused_before(debian_root, tmp_path):
    """The failure of issue 18: the default master.passwd's operator (gid 5)
    checked against the user's group file.  The user's tty group is gid 5
    here, so that check would pass -- and the user's passwd would be
    replaced: the image must hold the user's bytes."""
    out = tmp_path / "root.cpio"
    run_rumpfs("pack", debian_root, "-o", out)
    listing = subprocess.run(["bsdtar", "-tf", str(out)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "etc/passwd" in listing and "etc/master.passwd" not in listing
    assert "etc/pwd.db" not in listing and "etc/spwd.db" not in listing
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xf", str(out), "etc/passwd", "etc/group"], cwd=dest, check=True)
    assert (dest / "etc/passwd").read_text() == PASSWD
    assert (dest / "etc/group").read_text() == GROUP


def _tree_with(tmp_path, files: dict[str, str]):
    top = tmp_path / "src"
    for rel, text in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(text)
    return top


def _etc_listing(archive) -> set[str]:
    names = subprocess.run(["bsdtar", "-tf", str(archive)], capture_output=True, text=True,
                           check=True).stdout.split()
    return {n.removeprefix("./") for n in names if n.removeprefix("./").startswith("etc/")}


@pytest.mark.parametrize("account", ["passwd", "group", "shadow", "gshadow", "pwd.db"])
def test_any_user_account_file_drops_the_default_accounts(tmp_path, account):
    top = _tree_with(tmp_path, {f"etc/{account}": "x\n"})
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", top, "-o", out)
    etc = _etc_listing(out)
    assert f"etc/{account}" in etc
    assert {"etc/master.passwd", "etc/spwd.db"}.isdisjoint(etc)
    assert ("etc/group" in etc) == (account == "group")
    assert "etc/hosts" in etc and "etc/services" in etc  # the other defaults stay


def test_user_master_passwd_generates_as_before(tmp_path):
    """A user's master.passwd is the source of the databases and of passwd
    (pwd_mkdb's rule), checked against the default group file if the user
    has none."""
    master = "root:*:0:0::0:0:Charlie &:/root:/bin/sh\nwww:*:80:1::0:0:web:/var/www:/sbin/nologin\n"
    top = _tree_with(tmp_path, {"etc/master.passwd": master,
                                "etc/passwd": "user's own, replaced\n"})
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", top, "-o", out)
    etc = _etc_listing(out)
    assert {"etc/master.passwd", "etc/group", "etc/pwd.db", "etc/spwd.db", "etc/passwd"} <= etc
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xf", str(out), "etc/passwd", "etc/master.passwd"], cwd=dest,
                   check=True)
    assert (dest / "etc/master.passwd").read_text() == master
    assert (dest / "etc/passwd").read_text() == ("root:*:0:0:Charlie &:/root:/bin/sh\n"
                                                 "www:*:80:1:web:/var/www:/sbin/nologin\n")


def test_defaults_alone_still_generate(tmp_path):
    top = _tree_with(tmp_path, {"www/index.html": "hi\n"})
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", top, "-o", out)
    etc = _etc_listing(out)
    assert {"etc/master.passwd", "etc/group", "etc/pwd.db", "etc/spwd.db", "etc/passwd"} <= etc


def test_account_file_from_a_spec_counts(tmp_path):
    """A spec file's ``file`` line is a user's layer too."""
    top = _tree_with(tmp_path, {"www/index.html": "hi\n", "passwd.txt": PASSWD})
    spec = tmp_path / "root.spec"
    spec.write_text("file /etc/passwd src/passwd.txt 0644 0 0\n")
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", top, "--spec", spec, "-o", out)
    etc = _etc_listing(out)
    assert "etc/passwd" in etc
    assert {"etc/master.passwd", "etc/group", "etc/pwd.db", "etc/spwd.db"}.isdisjoint(etc)


def test_issue_18_root_packs_compressed(tmp_path):
    """The report of issue 18: a Linux group file without NetBSD's gid 5
    made ``rumpfs pack rootfs -o root.cpio.gz`` fail on the default
    master.passwd's operator."""
    top = _tree_with(tmp_path, {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
                                "etc/group": "root:x:0:\n",
                                "etc/shadow": "root:*:19683:0:99999:7:::\n"})
    out = tmp_path / "root.cpio.gz"
    res = run_rumpfs("pack", top, "-o", out, check=False)
    assert (res.returncode, res.err) == (0, "")
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xf", str(out)], cwd=dest, check=True)
    for name in ("passwd", "group", "shadow"):
        assert (dest / "etc" / name).read_bytes() == (top / "etc" / name).read_bytes()
    assert not (dest / "etc/master.passwd").exists()
