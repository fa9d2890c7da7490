"""Layer habits: a symlinked source directory, ``**`` patterns, spec times.

Judged by GNU cpio and bsdtar (extraction and ``-tv`` listings) and by
dissect.ffs, compared with the source tree or with paths worked out here
without rumpfs's pattern code.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from conftest import IS_ROOT, run_rumpfs
from ffs_testlib import dissect_records
from treecompare import assert_same, normalized, scan_host

needs_root = pytest.mark.skipif(not IS_ROOT, reason="extraction keeps owners only as root")
SDE = 1_700_000_000          # 2023-11-14 22:13:20 UTC
SPEC_TIME = 1_600_000_000    # 2020-09-13 12:26:40 UTC
OLD = 1_500_000_000


def bsdtar_extract(archive, dest):
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(archive)], cwd=dest, check=True)
    return dest


def no_dir_times(records):
    # Extractors set a directory's time before filling it (the kernel bumps it).
    return {p: dict(r, mtime=None) if r["type"] == "dir" else r for p, r in records.items()}


# -- a symlinked source directory (a Nix ``result`` link) ----------------------

@pytest.fixture
def result_link(tmp_path):
    store = tmp_path / "store" / "abc-app"
    (store / "share" / "doc").mkdir(parents=True)
    (store / "share" / "doc" / "README").write_text("app\n")
    (store / "bin").mkdir()
    (store / "bin" / "app").write_text("#!/bin/sh\n")
    (store / "bin" / "app").chmod(0o755)
    (store / "doc").symlink_to("share/doc")       # inside: stays a symlink
    (store / "elsewhere").symlink_to(tmp_path)    # never followed
    store.chmod(0o750)
    link = tmp_path / "result"
    link.symlink_to(store)
    return link, store


@needs_root
@pytest.mark.parametrize("extra", [[], ["--no-stubetc"]])
def test_symlinked_source_is_followed_at_the_top_only(result_link, tmp_path, extra):
    link, store = result_link
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", *extra, link, "-o", out)
    actual = scan_host(bsdtar_extract(out, tmp_path / "x"))
    if not extra:  # the default /etc is not what this test is about
        actual = {p: r for p, r in actual.items() if p != b"etc" and not p.startswith(b"etc/")}
        actual[b""]["nlink"] -= 1
    expected = normalized(scan_host(store))
    assert expected[b""]["mode"] == 0o750  # the directory's own metadata, not the link's
    assert expected[b"doc"]["type"] == expected[b"elsewhere"]["type"] == "symlink"
    expected[b""]["mtime"] = actual[b""]["mtime"] = None  # bsdtar leaves "." alone
    assert_same(no_dir_times(expected), no_dir_times(actual))


def test_symlinked_source_grafted_into_ffs(result_link, tmp_path):
    link, store = result_link
    out = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", f"{link}:/opt/app", "-o", out, "--endian", "little")
    actual = dissect_records(out)
    grafted = {p.removeprefix(b"opt/app/") if p != b"opt/app" else b"": r
               for p, r in actual.items() if p == b"opt/app" or p.startswith(b"opt/app/")}
    assert_same(normalized(scan_host(store)), grafted)


def test_dangling_source_link_is_one_line(tmp_path):
    link = tmp_path / "result"
    link.symlink_to("nix/store/gone")
    out = tmp_path / "r.cpio"
    res = run_rumpfs("pack", link, "-o", out, check=False)
    assert res.returncode == 1
    assert res.err == (f"rumpfs: error: {link}: source is a symlink to 'nix/store/gone', "
                       "which does not exist\n")
    assert not out.exists()


def test_source_link_to_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    link = tmp_path / "result"
    link.symlink_to("file")
    res = run_rumpfs("pack", link, "-o", tmp_path / "r.cpio", check=False)
    # A file is read as a tar or cpio archive (rumpfs.archives); this one is neither.
    assert (res.returncode, res.err) == (1, f"rumpfs: error: {link}: source is neither a "
                                            f"directory nor a tar or cpio archive\n")


# -- ``**`` in --remove and spec meta -------------------------------------------

PYCACHE_TREE = [
    "usr/lib/__pycache__/a.pyc",
    "usr/lib/keep.py",
    "usr/lib/python3/__pycache__/b.pyc",
    "usr/lib/python3/x/y/__pycache__/c.pyc",
    "usr/lib/python3/x/y/z.py",
    "usr/lib/python3/x/not__pycache__/d.pyc",
    "usr/share/__pycache__/e.pyc",
    "opt/tool/bin/t",
]


@pytest.fixture
def pycache_tree(tmp_path):
    top = tmp_path / "src"
    for rel in PYCACHE_TREE:
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(rel + "\n")
    return top


def without(records, drop) -> dict:
    return {p: r for p, r in records.items() if not drop(p.decode())}


def _nlinks_fixed(records) -> dict:
    """Directory link counts recomputed for a pruned record set."""
    out = {p: dict(r) for p, r in records.items()}
    for p, r in out.items():
        if r["type"] == "dir":
            prefix = p + b"/" if p else b""
            r["nlink"] = 2 + sum(1 for q, s in out.items() if s["type"] == "dir" and q
                                 and q.startswith(prefix) and b"/" not in q[len(prefix):])
    return out


@needs_root
@pytest.mark.parametrize("pattern,drop", [
    # Zero or more directories, as gitignore's **.
    ("/usr/lib/**/__pycache__",
     lambda p: p.startswith("usr/lib/") and "__pycache__" in p.split("/")),
    # * never crosses /: only the __pycache__ one level below /usr.
    ("/usr/*/__pycache__",
     lambda p: p.split("/")[:3] in (["usr", "lib", "__pycache__"], ["usr", "share", "__pycache__"])),
    # A trailing ** is everything inside, not the directory itself.
    ("/opt/**", lambda p: p.startswith("opt/")),
    # A leading ** matches at any depth from the root.
    ("**/*.pyc", lambda p: p.endswith(".pyc")),
    # ** inside a name is a plain *.
    ("/usr/l**/__pycache__", lambda p: p.startswith("usr/lib/__pycache__")),
])
def test_remove_globstar(pycache_tree, tmp_path, pattern, drop):
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", "--no-stubetc", pycache_tree, "--remove", pattern, "-o", out)
    dest = tmp_path / "x"
    dest.mkdir()
    with open(out, "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet"], stdin=f, cwd=dest, check=True)
    expected = _nlinks_fixed(without(normalized(scan_host(pycache_tree)), drop))
    assert_same(no_dir_times(expected), no_dir_times(scan_host(dest)))


def test_meta_globstar(pycache_tree, tmp_path):
    spec = tmp_path / "meta.spec"
    spec.write_text("meta /usr/lib/**/*.pyc mode=0600 uid=33 gid=33\n")
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", "--no-stubetc", pycache_tree, "--spec", spec, "-o", out)
    listing = subprocess.run(["bsdtar", "-tvf", str(out), "--numeric-owner"], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    changed = {line.split()[-1] for line in listing if line.startswith("-rw------- ")
               and line.split()[2:4] == ["33", "33"]}
    assert changed == {"usr/lib/__pycache__/a.pyc", "usr/lib/python3/__pycache__/b.pyc",
                       "usr/lib/python3/x/y/__pycache__/c.pyc",
                       "usr/lib/python3/x/not__pycache__/d.pyc"}


# -- spec entries follow the host files' time policy ----------------------------

SPEC = """\
dir   /data 0755 0 0
nod   /dev/console 0600 0 0 c 5 1
slink /bin/sh busybox 0777 0 0
pipe  /run/initctl 0600 0 0
sock  /run/sock 0755 0 0
file  /etc/motd motd.txt 0644 0 0
"""
SPEC_ENTRIES = ["data", "dev", "dev/console", "bin", "bin/sh", "run", "run/initctl", "run/sock",
                "etc", "etc/motd"]


@pytest.fixture
def spec_tree(tmp_path):
    top = tmp_path / "src"
    top.mkdir()
    (top / "hello").write_text("hi\n")
    os.utime(top / "hello", (OLD, OLD))
    os.utime(top, (OLD, OLD))
    spec = tmp_path / "root.spec"
    spec.write_text(SPEC)
    (tmp_path / "motd.txt").write_text("welcome\n")
    return top, spec


def bsdtar_times(archive) -> dict[str, str]:
    """name -> the date bsdtar -tv shows (in UTC)."""
    env = dict(os.environ, TZ="UTC")
    lines = subprocess.run(["bsdtar", "-tvf", str(archive)], capture_output=True, text=True,
                           check=True, env=env).stdout.splitlines()
    out = {}
    for line in lines:
        words = line.split()
        name = words[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]
        out[name.removeprefix("./")] = " ".join(words[-4:-1] if " -> " not in line
                                                else line.split(" -> ")[0].split()[-4:-1])
    return out


def gnu_cpio_times(archive) -> dict[str, str]:
    env = dict(os.environ, TZ="UTC")
    with open(archive, "rb") as f:
        lines = subprocess.run(["cpio", "-itv", "--quiet"], stdin=f, capture_output=True,
                               text=True, check=True, env=env).stdout.splitlines()
    out = {}
    for line in lines:
        head = line.split(" -> ")[0].split()
        out[head[-1]] = " ".join(head[-4:-1])
    return out


@pytest.mark.parametrize("lister", [bsdtar_times, gnu_cpio_times])
def test_spec_entries_clamped_to_source_date_epoch(spec_tree, tmp_path, lister):
    """The spec file is newer than SOURCE_DATE_EPOCH (it was just written):
    everything it made takes SOURCE_DATE_EPOCH, as a new host file does;
    an old host file keeps its own time.  (Before: 1970 for all but file.)"""
    top, spec = spec_tree
    os.utime(tmp_path / "motd.txt", (SDE + 5, SDE + 5))
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", "--no-stubetc", top, "--spec", spec, "-o", out,
               env={"SOURCE_DATE_EPOCH": str(SDE)})
    times = lister(out)
    for name in SPEC_ENTRIES:
        assert times[name] == "Nov 14 2023", (name, times[name])
    assert times["hello"] == "Jul 14 2017"


def test_spec_entries_take_the_spec_files_time(spec_tree, tmp_path):
    """Without SOURCE_DATE_EPOCH a spec entry has the spec file's time (its
    source), as a host file has its own; GNU cpio restores it on extraction."""
    top, spec = spec_tree
    os.utime(spec, (SPEC_TIME, SPEC_TIME))
    os.utime(tmp_path / "motd.txt", (OLD, OLD))
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", "--no-stubetc", top, "--spec", spec, "-o", out)
    times = gnu_cpio_times(out)
    for name in SPEC_ENTRIES:
        want = "Jul 14 2017" if name == "etc/motd" else "Sep 13 2020"
        assert times[name] == want, (name, times[name])
    if IS_ROOT:
        dest = tmp_path / "x"
        dest.mkdir()
        with open(out, "rb") as f:
            subprocess.run(["cpio", "-idm", "--quiet"], stdin=f, cwd=dest, check=True)
        st = os.lstat(dest / "dev" / "console")
        assert stat.S_ISCHR(st.st_mode) and int(st.st_mtime) == SPEC_TIME
        assert int(os.lstat(dest / "run" / "initctl").st_mtime) == SPEC_TIME


def test_spec_entries_in_ffs_clamped(spec_tree, tmp_path):
    top, spec = spec_tree
    out = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", top, "--spec", spec, "-o", out, "--endian", "little",
               env={"SOURCE_DATE_EPOCH": str(SDE)})
    records = dissect_records(out)
    for name in SPEC_ENTRIES:
        assert records[name.encode()]["mtime"] == SDE, name
    assert records[b"hello"]["mtime"] == OLD
    assert records[b"dev/console"]["rdev"] == (5, 1)


def test_timestamp_sets_spec_entries(spec_tree, tmp_path):
    top, spec = spec_tree
    out = tmp_path / "r.cpio"
    run_rumpfs("pack", "--no-stubetc", top, "--spec", spec, "-o", out, "--timestamp", str(OLD))
    times = bsdtar_times(out)
    assert {times[n] for n in SPEC_ENTRIES + ["hello"]} == {"Jul 14 2017"}
