"""The default /etc: every file parsed by its own rules, and ``rumpfs stubetc``."""

from __future__ import annotations

import ipaddress
import os
import re
import stat

import pytest
from conftest import ROOT, run_rumpfs
from test_etc_db185 import needs_libdb1
from test_etc_passwd import check_db, unpack

from rumpfs.etc import passwd

STUB = ROOT / "stubetc"


def entries(name):
    """Non-comment, non-blank lines split into fields."""
    for line in (STUB / name).read_text("ascii").splitlines():
        line = line.split("#", 1)[0]
        if line.strip():
            yield line.split()


def test_expected_files():
    assert sorted(os.listdir(STUB)) == ["group", "hosts", "master.passwd", "networks",
                                        "nsswitch.conf", "protocols", "resolv.conf",
                                        "services", "shells"]


def test_nsswitch_syntax():
    # nsswitch.conf(5): "database: source [status=action] ..."; NetBSD's databases and sources.
    databases = {"group", "group_compat", "hosts", "netgroup", "networks", "passwd",
                 "passwd_compat", "shells"}
    sources = {"files", "dns", "nis", "compat", "multicast_dns", "mdnsd"}
    seen = set()
    for line in (STUB / "nsswitch.conf").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z_]+):\s+(.*)", line)
        assert m, line
        db, rest = m.groups()
        assert db in databases and db not in seen
        seen.add(db)
        for src in re.sub(r"\[[^\]]*\]", "", rest).split():
            assert src in sources, line
    assert {"passwd", "group", "hosts"} <= seen


def test_services_well_formed_and_unique():
    names, ports = set(), set()
    for fields in entries("services"):
        name, port_proto, *aliases = fields
        port, proto = port_proto.split("/")
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), name
        assert port.isdigit() and 0 <= int(port) <= 65535
        assert proto in ("tcp", "udp", "sctp")
        for alias in aliases:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", alias), alias
        assert (name, proto) not in names, fields
        assert (int(port), proto) not in ports, fields
        names.add((name, proto))
        ports.add((int(port), proto))
    # What network servers look up.
    for name, port in (("http", 80), ("https", 443), ("ssh", 22), ("domain", 53), ("mysql", 3306)):
        assert (port, "tcp") in ports and (name, "tcp") in names


def test_protocols_well_formed_and_unique():
    numbers = {}
    for fields in entries("protocols"):
        name, number, *aliases = fields
        assert re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", name, re.I), name
        assert number.isdigit() and 0 <= int(number) <= 255
        assert name not in numbers
        numbers[name] = int(number)
    assert numbers["ip"] == 0 and numbers["icmp"] == 1 and numbers["tcp"] == 6
    assert numbers["udp"] == 17 and numbers["ipv6-icmp"] == 58


def test_hosts_and_resolv_conf():
    hosts = [(ipaddress.ip_address(f[0]), f[1:]) for f in entries("hosts")]
    assert sorted(str(a) for a, _ in hosts) == ["127.0.0.1", "::1"]
    assert all("localhost" in names for _, names in hosts)
    # resolv.conf: comments only, and they say a nameserver must be configured.
    text = (STUB / "resolv.conf").read_text()
    assert all(line.startswith("#") for line in text.splitlines() if line.strip())
    assert "nameserver" in text


def test_accounts():
    users = passwd.parse_master_passwd((STUB / "master.passwd").read_bytes())
    groups = passwd.parse_group((STUB / "group").read_bytes())
    passwd.check_groups(users, groups)
    by_name = {u.name: u for u in users}
    assert by_name[b"root"].uid == 0 and by_name[b"daemon"].uid == 1
    svc = by_name[b"service"]
    assert (svc.uid, svc.gid, svc.shell) == (1000, 1000, b"/sbin/nologin")
    gids = {g.name: g.gid for g in groups}
    assert gids[b"wheel"] == 0 and gids[b"service"] == 1000 and gids[b"nobody"] == 39
    assert all(u.passwd == b"*" for u in users)      # no login possible by default


def test_shells_and_networks():
    assert [f[0] for f in entries("shells")] == ["/bin/sh", "/bin/csh", "/bin/ksh"]
    assert ["loopback", "127"] in list(entries("networks"))


def test_stubetc_command(tmp_path):
    dest = tmp_path / "myetc"
    run_rumpfs("stubetc", dest)
    for name in os.listdir(STUB):
        assert (dest / name).read_bytes() == (STUB / name).read_bytes()
    assert stat.S_IMODE((dest / "master.passwd").stat().st_mode) == 0o600
    res = run_rumpfs("stubetc", dest, check=False)
    assert res.returncode == 1
    assert res.err == (f"rumpfs: error: {dest / 'group'}: already exists "
                       f"(give --force to overwrite)\n")
    (dest / "hosts").write_text("changed")
    run_rumpfs("stubetc", "--force", dest)
    assert (dest / "hosts").read_bytes() == (STUB / "hosts").read_bytes()


@needs_libdb1
@pytest.mark.parametrize("endian", ["little", "big"])
def test_edited_copy_packs_as_a_layer(tmp_path, endian):
    """The edited master.passwd becomes pwd.db and spwd.db in the image's byte
    order: bsdtar unpacks them, glibc's db 1.85 (libdb1) reads every record
    and key, each compared with its master.passwd line parsed in the test."""
    dest = tmp_path / "myetc"
    run_rumpfs("stubetc", dest)
    with open(dest / "master.passwd", "a") as f:
        f.write("www:*:80:80::0:0:Web server:/nonexistent:/sbin/nologin\n")
    with open(dest / "group", "a") as f:
        f.write("www:*:80:\n")
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--endian", endian, f"{dest}:/etc", "-o", out)
    etc = unpack(out, tmp_path / "x") / "etc"
    master = (dest / "master.passwd").read_bytes()
    assert master.endswith(b"www:*:80:80::0:0:Web server:/nonexistent:/sbin/nologin\n")
    assert (etc / "master.passwd").read_bytes() == master
    check_db(etc / "pwd.db", master, endian, secure=False)
    check_db(etc / "spwd.db", master, endian, secure=True)
