"""pwd.db / spwd.db / passwd generation at pack time, and bad master.passwd input.

The databases are read back with glibc's db 1.85 (libdb1-compat) and the
records decoded here with struct, following NetBSD's pwd_mkdb layout; the
image is unpacked by bsdtar.
"""

from __future__ import annotations

import os
import stat
import struct
import subprocess

import pytest
from conftest import ROOT, leftovers, run_rumpfs
from test_etc_db185 import Libdb1, needs_libdb1

from rumpfs.errors import RumpfsError
from rumpfs.etc import passwd

HASH = "$2a$08$Sz8bHqQnfp3wL2Gx0PZ7EeF2v0qVh5oW6wYzV3mC9b1kHdQyRtE6u"


def decode(record: bytes, byteorder: str) -> dict:
    """NetBSD pwd_mkdb record: strings inline, u32 ids, i64 times, u32 flags."""
    e = "<" if byteorder == "little" else ">"
    name, pw, rest = record.split(b"\0", 2)
    uid, gid, change = struct.unpack_from(e + "IIq", rest)
    cls, gecos, home, shell, tail = rest[16:].split(b"\0", 4)
    expire, flags = struct.unpack(e + "qI", tail)
    return dict(name=name, passwd=pw, uid=uid, gid=gid, change=change, cls=cls, gecos=gecos,
                dir=home, shell=shell, expire=expire, flags=flags)


def expected_fields(line: bytes) -> dict:
    f = line.split(b":")
    return dict(name=f[0], passwd=f[1], uid=int(f[2]), gid=int(f[3]), cls=f[4],
                change=int(f[5] or 0), expire=int(f[6] or 0), gecos=f[7], dir=f[8], shell=f[9],
                flags=(0 if f[5] else 4) | (0 if f[6] else 8))


def check_db(path, master: bytes, byteorder: str, secure: bool):
    """Every key resolves, every record is its master.passwd line, nothing else is there."""
    e = "<" if byteorder == "little" else ">"
    lines = master.rstrip(b"\n").split(b"\n")
    with Libdb1(path) as db:
        assert db.get(b"VERSION\0") == struct.pack(e + "I", 1)
        for number, line in enumerate(lines, 1):
            want = expected_fields(line)
            if not secure:
                want["passwd"] = b"*"
            by_name = db.get(b"1" + want["name"])
            assert by_name is not None, want["name"]
            assert decode(by_name, byteorder) == want
            assert db.get(b"2" + struct.pack(e + "I", number)) == by_name
            assert db.get(b"3" + struct.pack(e + "I", want["uid"])) == by_name
        assert db.get(b"2" + struct.pack(e + "I", len(lines) + 1)) is None
        assert len(db.items()) == 1 + 3 * len(lines)


def unpack(image, dest):
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(image), "-C", str(dest)], check=True)
    return dest


# -- end to end -------------------------------------------------------------------

@needs_libdb1
@pytest.mark.parametrize("endian", ["little", "big"])
def test_default_stubetc_databases(tmp_path, endian):
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--endian", endian, "-o", out)
    etc = unpack(out, tmp_path / "x") / "etc"
    master = (ROOT / "stubetc" / "master.passwd").read_bytes()
    assert (etc / "master.passwd").read_bytes() == master
    check_db(etc / "pwd.db", master, endian, secure=False)
    check_db(etc / "spwd.db", master, endian, secure=True)
    modes = {n: stat.S_IMODE(os.lstat(etc / n).st_mode) for n in
             ("pwd.db", "spwd.db", "passwd", "master.passwd", "group")}
    assert modes == {"pwd.db": 0o644, "spwd.db": 0o600, "passwd": 0o644,
                     "master.passwd": 0o600, "group": 0o644}
    # passwd is the V7 file: seven fields, no hashes.
    for line, mline in zip((etc / "passwd").read_bytes().splitlines(), master.splitlines()):
        f, m = line.split(b":"), mline.split(b":")
        assert f == [m[0], b"*", m[2], m[3], m[7], m[8], m[9]]


@needs_libdb1
def test_user_layer_replaces_master_passwd(tmp_path):
    layer = tmp_path / "layer" / "etc"
    layer.mkdir(parents=True)
    users = [b"root:%s:0:0::0:0:Root:/root:/bin/sh" % HASH.encode(),
             b"www:$6$salt$hashhashhash:80:80:web:1700000000:1800000000:Web server:/var/www:/sbin/nologin"]
    users += [b"u%04d:$1$x$%04d:%d:100::::User %d:/home/u%04d:/bin/sh" % (i, i, 2000 + i, i, i)
              for i in range(1000)]
    master = b"\n".join(users) + b"\n"
    (layer / "master.passwd").write_bytes(master)
    (layer / "group").write_bytes(b"wheel:*:0:root\nwww:*:80:\nusers:*:100:\n")
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--endian", "big", str(tmp_path / "layer"), "-o", out)
    etc = unpack(out, tmp_path / "x") / "etc"
    check_db(etc / "spwd.db", master, "big", secure=True)
    check_db(etc / "pwd.db", master, "big", secure=False)
    with Libdb1(etc / "spwd.db") as db:
        assert decode(db.get(b"1root"), "big")["passwd"] == HASH.encode()
    with Libdb1(etc / "pwd.db") as db:
        assert decode(db.get(b"1root"), "big")["passwd"] == b"*"
    assert (etc / "pwd.db").stat().st_size > 10 * 4096      # buckets were split


def test_no_pwdb_and_no_master_passwd(tmp_path):
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--no-pwdb", "-o", out)
    names = set(os.listdir(unpack(out, tmp_path / "x") / "etc"))
    assert "master.passwd" in names and not names & {"pwd.db", "spwd.db", "passwd"}
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    out2 = tmp_path / "b.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "-o", out2)
    assert sorted(os.listdir(unpack(out2, tmp_path / "y"))) == ["f"]


def test_reproducible(tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    run_rumpfs("pack", "-o", tmp_path / "a.cpio", env=env)
    run_rumpfs("pack", "-o", tmp_path / "b.cpio", env=env)
    assert (tmp_path / "a.cpio").read_bytes() == (tmp_path / "b.cpio").read_bytes()


# -- bad input through the CLI ----------------------------------------------------

STUB_GROUP = (ROOT / "stubetc" / "group").read_bytes()


def bad_pack(tmp_path, master: bytes, group: bytes | None = STUB_GROUP):
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "master.passwd").write_bytes(master)
    args = ["pack", layer, "-o", tmp_path / "out" / "a.cpio"]
    if group is not None:
        (layer / "etc" / "group").write_bytes(group)
    else:
        args.insert(1, "--no-stubetc")
    (tmp_path / "out").mkdir()
    res = run_rumpfs(*args, check=False)
    assert res.returncode == 1
    assert os.listdir(tmp_path / "out") == [] and not leftovers(tmp_path / "out")
    assert res.err.count("\n") == 1
    return res.err.rstrip("\n")


OK1 = b"root:*:0:0::0:0:Root:/root:/bin/sh\n"


@pytest.mark.parametrize("master, message", [
    (OK1 + b"daemon:*:1:1:0:0:x:/:/sbin/nologin\n",
     "/etc/master.passwd:2: 9 fields, expected 10 "
     "(name:password:uid:gid:class:change:expire:gecos:home:shell)"),
    (OK1 + b"svc:*:1000:0::0:0:a:/:/bin/sh\nother:*:1000:0::0:0:b:/:/bin/sh\n",
     "/etc/master.passwd:3: duplicate uid 1000 (also on line 2)"),
    (OK1 + b"svc:*:1000:0::0:0:a:/:/bin/sh\nsvc:*:1001:0::0:0:b:/:/bin/sh\n",
     "/etc/master.passwd:3: duplicate user name 'svc' (also on line 2)"),
    (OK1 + b"svc:*:1000:4242::0:0:a:/:/bin/sh\n",
     "/etc/master.passwd:2: gid 4242 of user 'svc' is not defined in /etc/group"),
    (OK1 + b"svc:*:10x:0::0:0:a:/:/bin/sh\n",
     "/etc/master.passwd:2: uid '10x' is not a number"),
    (OK1 + b"svc:*:4294967296:0::0:0:a:/:/bin/sh\n",
     "/etc/master.passwd:2: uid 4294967296 is out of range (0..4294967295)"),
    (OK1 + b"# a comment\n",
     "/etc/master.passwd:2: comment line (every line must be a user entry; "
     "libc and pwd_mkdb have no comments in this file)"),
    (OK1 + b"\n" + OK1.replace(b"root", b"x"),
     "/etc/master.passwd:2: empty line (every line must be a user entry)"),
    (b"root:*:5:0::0:0:Root:/root:/bin/sh\n",
     "/etc/master.passwd:1: root has uid 5; root's uid must be 0"),
    (OK1 + b"averyveryverylongname:*:7:0::0:0:a:/:/bin/sh\n",
     "/etc/master.passwd:2: user name 'averyveryverylongname' is 21 bytes, longer than 16"),
    (OK1 + b"x:*:7:0::0:0:" + b"g" * 2100 + b":/:/bin/sh\n",
     "/etc/master.passwd:2: line is 2123 bytes, longer than 2047"),
    (OK1 + b"+nis:*:7:0::0:0:a:/:/bin/sh\n",
     "/etc/master.passwd:2: NIS entry '+nis' is not supported"),
], ids=["fields", "dup-uid", "dup-name", "unknown-gid", "bad-uid", "uid-range", "comment",
        "empty-line", "root-uid", "long-name", "long-line", "nis"])
def test_bad_master_passwd(tmp_path, master, message):
    assert bad_pack(tmp_path, master) == f"rumpfs: error: {message}"


def test_group_missing(tmp_path):
    assert bad_pack(tmp_path, OK1, group=None) == (
        "rumpfs: error: /etc/master.passwd:1: gid 0 of user 'root' is not defined in "
        "/etc/group (the image has no /etc/group)")


def test_bad_group_line(tmp_path):
    assert bad_pack(tmp_path, OK1, group=b"wheel:*:0:root\nstaff:*:20\n") == (
        "rumpfs: error: /etc/group:2: 3 fields, expected 4 (name:password:gid:members)")


# -- units ----------------------------------------------------------------------------

def test_empty_fields_set_flags():
    (user,) = passwd.parse_master_passwd(b"a:*:1:2:::::/:\n")
    assert (user.change, user.expire, user.flags) == (0, 0, passwd.PASSWORD_NOCHG | passwd.PASSWORD_NOEXP)


def test_missing_final_newline_and_negative_change():
    (user,) = passwd.parse_master_passwd(b"a:*:1:2::-1:0:g:/:/bin/sh")
    assert user.change == -1 and user.flags == passwd.PASSWORD_NOEXP * 0


def test_record_round_trip():
    (user,) = passwd.parse_master_passwd(b"n\xc3\xa9:h:70000:3:cls:5:6:G:/d:/s\n")
    for order in ("little", "big"):
        rec = passwd.encode_record(user, b"h", order)
        assert decode(rec, order) == expected_fields(b"n\xc3\xa9:h:70000:3:cls:5:6:G:/d:/s")
        assert passwd.decode_record(rec, order)["uid"] == 70000


def test_no_uid():
    with pytest.raises(RumpfsError, match=r"^/etc/master.passwd:1: user 'a' has no uid$"):
        passwd.parse_master_passwd(b"a:*::2::0:0:g:/:/bin/sh\n")
