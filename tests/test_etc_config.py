"""--config: the rumprun JSON launch configuration, validated and baked in."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from conftest import leftovers, run_rumpfs

from rumpfs.errors import RumpfsError
from rumpfs.etc import config

#: The hw/x86 example of rumprun's doc/config.md, with its typos fixed.
EXAMPLE = {
    "net": {
        "interfaces": {"vioif0": {"addrs": [
            {"type": "inet", "method": "static", "addr": "10.0.120.10/24"}]}},
        "gateways": [{"type": "inet", "addr": "10.0.120.1"}],
        "dns": {"nameservers": ["10.0.120.1"], "search": ["example.org"]},
    },
    "mount": {
        "/etc": {"source": "blk", "path": "/dev/ld0a"},
        "/tmp": {"source": "tmpfs", "options": {"size": "1M"}},
        "/kern": {"source": "kernfs"},
    },
    "blk": {"vnd0": {"type": "vnd", "path": "/data.img"}, "xbd0": {"type": "etfs", "path": "blkfront:xvda"}},
    "rc": [{"bin": "mathopd", "argv": ["-n", "-t", "-f", "/data/mathopd.conf"]},
           {"bin": "logger", "runmode": "&"}],
    "env": {"FOO": "BAR", "BAZ": "QUUX"},
    "hostname": "www",
    "cmdline": "mathopd -n",
}


def test_example_is_valid_and_stored_verbatim(tmp_path):
    text = json.dumps(EXAMPLE, indent=3).encode() + b"\n"
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(text)
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--config", cfg, "-o", out)
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(out), "-C", str(x)], check=True)
    stored = x / "etc" / "rumprun.json"
    assert stored.read_bytes() == text
    assert stat.S_IMODE(stored.stat().st_mode) == 0o644


def test_config_without_stubetc(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cfg = tmp_path / "c.json"
    cfg.write_text('{"hostname": "h"}')
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--no-stubetc", "--config", cfg, src, "-o", out)
    listing = subprocess.run(["bsdtar", "-tf", str(out)], capture_output=True, check=True).stdout
    assert b"etc/rumprun.json" in listing.split()


def bad(tmp_path, text: str) -> str:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(text)
    outdir = tmp_path / "out"
    outdir.mkdir()
    res = run_rumpfs("pack", "--config", cfg, "-o", outdir / "a.cpio", check=False)
    assert res.returncode == 1
    assert os.listdir(outdir) == [] and not leftovers(outdir)
    assert res.err.count("\n") == 1
    return res.err.rstrip("\n").replace(str(cfg), "CFG")


def test_invalid_json(tmp_path):
    """The line, column and words of Python's json parser (its words and
    the column it blames changed in Python 3.13)."""
    doc = '{\n  "hostname": "a",\n  "env": {"A": "b",}\n}\n'
    with pytest.raises(json.JSONDecodeError) as parsed:
        json.loads(doc)
    e = parsed.value
    assert e.lineno == 3 and e.colno in (19, 20)  # the trailing comma, or what follows it
    assert bad(tmp_path, doc) == f"rumpfs: error: CFG:3:{e.colno}: invalid JSON: {e.msg}"


def test_unknown_key(tmp_path):
    assert bad(tmp_path, '{"hostname": "a", "hostnmae": "b"}') == (
        "rumpfs: error: CFG: hostnmae: unknown key "
        "(known: cmdline, rc, env, hostname, blk, mount, net)")


@pytest.mark.parametrize("doc, message", [
    ('[]', "the configuration is a JSON object {...}, not an array"),
    ('{"rc": [{"argv": []}]}', "rc[0]: missing 'bin'"),
    ('{"rc": [{"bin": "a", "argv": ["x", 3]}]}', "rc[0].argv[1]: expected a string, got a number"),
    ('{"rc": [{"bin": "a", "runmode": "|"}]}', "rc[0].runmode: the last program cannot pipe its output"),
    ('{"rc": [{"bin": "a", "runmode": "bg"}]}', "rc[0].runmode: 'bg' is not one of '&', '|'"),
    ('{"env": {"A": 1}}', "env.A: expected a string, got a number"),
    ('{"env": "A=b"}', "env: expected an object, got a string"),
    ('{"hostname": "a", "hostname": "b"}', "hostname: duplicate key"),
    ('{"blk": {"disk": {"type": "vnd", "path": "/x"}}}',
     "blk.disk: a vnd device is named vnd<unit>, e.g. vnd0"),
    ('{"mount": {"/d": {"source": "blk"}}}', "mount./d: missing 'path' (the block device) for source 'blk'"),
    ('{"mount": {"/t": {"source": "tmpfs", "options": {"size": "lots"}}}}',
     "mount./t.options.size: 'lots' is not a size such as 1M, 512k or 2G"),
    ('{"net": {"interfaces": {"vioif0": {"addrs": [{"type": "inet", "method": "static", '
     '"addr": "10.0.0.300/24"}]}}}}',
     "net.interfaces.vioif0.addrs[0].addr: '10.0.0.300/24' is not an address/prefix"),
    ('{"net": {"interfaces": {"vioif0": {"addrs": [{"type": "inet6", "method": "static", '
     '"addr": "10.0.0.3/24"}]}}}}',
     "net.interfaces.vioif0.addrs[0].addr: '10.0.0.3/24' is not an IPv6 address"),
    ('{"net": {"interfaces": {"vioif0": {"addrs": [{"type": "inet", "method": "auto"}]}}}}',
     "net.interfaces.vioif0.addrs[0].method: 'auto' is not one of 'dhcp', 'static'"),
    ('{"net": {"dns": {"nameservers": ["a", "b", "c", "d"]}}}', "net.dns.nameservers: 4 entries, at most 3"),
    ('{"net": {"gateways": [{"type": "inet", "addr": "fe80::1"}]}}',
     "net.gateways[0].addr: 'fe80::1' does not match type 'inet'"),
])
def test_shape_errors(doc, message):
    with pytest.raises(RumpfsError) as e:
        config.validate(doc.encode(), "c.json")
    assert str(e.value) == f"c.json: {message}"


def test_size_limit_and_encoding(tmp_path):
    with pytest.raises(RumpfsError, match=r"^c.json: not UTF-8 \(byte 14\)$"):
        config.validate(b'{"hostname": "\xff"}', "c.json")
    big = tmp_path / "big.json"
    big.write_text('{"cmdline": "' + "x" * config.CFGMAXSIZE + '"}')
    with pytest.raises(RumpfsError, match=r"big.json: 65551 bytes, larger than rumprun's limit of 65536$"):
        config.load(str(big))


def test_etc_not_a_directory(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "etc").symlink_to("usr/etc")
    cfg = tmp_path / "c.json"
    cfg.write_text('{"hostname": "h"}')
    outdir = tmp_path / "out"
    outdir.mkdir()
    res = run_rumpfs("pack", "--no-stubetc", "--config", cfg, src, "-o", outdir / "a.cpio",
                     check=False)
    assert res.returncode == 1 and res.err.startswith("rumpfs: error: /etc: not a directory")
    assert os.listdir(outdir) == []
