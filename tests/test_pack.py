"""rumpfs pack: layers, reproducibility, atomic output and bad input.

The cpio outputs (plain or compressed) are read back by libarchive, the
library of bsdtar, never by rumpfs's own reader: ``listing`` and ``cat``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import IS_ROOT, ROOT, leftovers, require_module, run_rumpfs
from treecompare import assert_same, normalized, scan_host

libarchive = require_module("libarchive", "libarchive-c")
_ffi = libarchive.ffi
_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
          stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def _show(raw: bytes) -> str:
    """A member name as "/path", non-UTF-8 bytes as \\xNN (as ``rumpfs ls`` shows them)."""
    raw = raw.removeprefix(b".").removeprefix(b"/") if raw != b"." else b""
    return "/" + raw.decode("utf-8", "backslashreplace")


def _members(image):
    """(path, entry fields, data) of every member, as libarchive reads them."""
    with libarchive.file_reader(str(image)) as reader:
        for e in reader:
            p = e._entry_p
            hardlink = _ffi.entry_hardlink(p)
            target = _ffi.entry_symlink(p) if e.issym else None
            fields = {"type": _KINDS[stat.S_IFMT(e.mode)], "mode": "%04o" % stat.S_IMODE(e.mode),
                      "uid": e.uid, "gid": e.gid, "mtime": int(e.mtime), "size": e.size,
                      "target": target.decode("utf-8", "backslashreplace") if target else None,
                      "hardlink": _show(hardlink) if hardlink else None}
            yield _show(_ffi.entry_pathname(p)), fields, b"".join(e.get_blocks())


def listing(image) -> dict:
    return {path: dict(fields, path=path) for path, fields, _ in _members(image)}


def cat(image, path) -> bytes:
    """A member's data; a later name of a hard link has its first name's."""
    data, links = {}, {}
    for name, fields, body in _members(image):
        data[name] = body
        if fields["hardlink"]:
            links[name] = fields["hardlink"]
    return data[links.get(path, path)]


# -- layers -------------------------------------------------------------------

def test_stubetc_is_the_first_layer(tmp_path):
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "-o", out)
    names = listing(out)
    assert "/etc" in names
    stub = ROOT / "stubetc"
    for name in os.listdir(stub):
        assert f"/etc/{name}" in names


def test_no_stubetc(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "-o", out)
    assert sorted(listing(out)) == ["/", "/f"]


def test_later_layers_win_and_directories_merge(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one / "etc", two / "etc"):
        d.mkdir(parents=True)
    (one / "etc" / "motd").write_text("first\n")
    (one / "etc" / "keep").write_text("kept\n")
    (two / "etc" / "motd").write_text("second\n")
    os.chmod(two / "etc", 0o700)
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--no-stubetc", one, two, "-o", out)
    names = listing(out)
    assert cat(out, "/etc/motd") == b"second\n"
    assert cat(out, "/etc/keep") == b"kept\n"
    assert names["/etc"]["mode"] == "0700"


def test_user_layer_overrides_a_default_file(tmp_path):
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hosts").write_text("10.0.0.1 mine\n")
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", src, "-o", out)
    assert cat(out, "/etc/hosts") == b"10.0.0.1 mine\n"


def test_graft_directory_at_a_path(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hi\n")
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--no-stubetc", f"{www}:/var/www", "-o", out)
    names = listing(out)
    assert {"/var", "/var/www", "/var/www/index.html"} <= set(names)
    assert cat(out, "/var/www/index.html") == b"hi\n"


def test_remove_a_default_file_and_globs(tmp_path):
    src = tmp_path / "src"
    (src / "logs").mkdir(parents=True)
    for n in ("a.log", "b.log", "c.txt"):
        (src / "logs" / n).write_text(n)
    out = tmp_path / "a.cpio"
    res = run_rumpfs("pack", src, "--remove", "/etc/hosts", "--remove", "logs/*.log", "-o", out)
    names = listing(out)
    assert "/etc/hosts" not in names
    assert "/etc" in names
    assert "/logs/c.txt" in names and "/logs/a.log" not in names and "/logs/b.log" not in names
    assert res.err == ""


def test_layers_grafts_and_removals_file_by_file(tmp_path):
    """Two layers, a graft and removals, extracted by GNU cpio and compared
    file by file with the tree the test builds by the same rules (later
    layers win, directories merge, grafts create their parents 0755)."""
    one, two, www = tmp_path / "one", tmp_path / "two", tmp_path / "www"
    for d in (one / "etc", one / "logs", two / "etc", www / "img"):
        d.mkdir(parents=True)
    (one / "etc" / "motd").write_text("first\n")
    (one / "etc" / "keep").write_text("kept\n")
    (one / "etc" / "drop").write_text("dropped\n")
    for n in ("a.log", "b.log", "c.txt"):
        (one / "logs" / n).write_text(n)
    (two / "etc" / "motd").write_text("second\n")
    os.symlink("motd", two / "etc" / "motd.link")
    os.chmod(two / "etc", 0o700)
    (www / "index.html").write_text("hi\n")
    (www / "img" / "logo").write_bytes(bytes(range(256)) * 40)
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--no-stubetc", one, two, f"{www}:/srv/www", "--remove", "/etc/drop",
               "--remove", "logs/*.log", "-o", out)

    want = tmp_path / "want"
    shutil.copytree(one, want, symlinks=True)
    shutil.copytree(two, want, symlinks=True, dirs_exist_ok=True)
    (want / "srv").mkdir(mode=0o755)
    shutil.copytree(www, want / "srv" / "www", symlinks=True)
    for gone in ("etc/drop", "logs/a.log", "logs/b.log"):
        (want / gone).unlink()
    shutil.copystat(two / "etc", want / "etc")

    got = tmp_path / "got"
    got.mkdir()
    with open(out, "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet"], stdin=f, cwd=got, check=True)
    keys = ("type", "mode", "size", "nlink", "target", "sha256")
    # GNU cpio sets a directory's time before it fills it; file times must hold.
    expected, actual = normalized(scan_host(want)), scan_host(got)
    assert_same(expected, actual, keys=keys + (("uid", "gid") if IS_ROOT else ()))
    assert {p: r["mtime"] for p, r in expected.items() if r["type"] == "file"} == \
        {p: r["mtime"] for p, r in actual.items() if r["type"] == "file"}


def test_remove_matching_nothing_warns(tmp_path):
    out = tmp_path / "a.cpio"
    res = run_rumpfs("pack", "--remove", "/no/such/*", "-o", out)
    assert res.err == "rumpfs: warning: --remove /no/such/*: matches nothing in the image\n"
    assert out.exists()


def test_symlinks_are_not_followed_and_specials_kept(fixture_tree, tmp_path):
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--no-stubetc", fixture_tree, "-o", out)
    names = listing(out)
    assert names["/links/dir"]["type"] == "symlink"
    assert names["/links/dir"]["target"] == "../deep"
    assert names["/dev/fifo"]["type"] == "fifo"
    assert names["/dev/sock"]["type"] == "socket"
    assert names["/tmp"]["mode"] == "1777"
    assert names["/bin/setuid"]["mode"] == "4755"
    assert "/caf\\xe9-latin1" in names


def test_python_api(fixture_tree, tmp_path):
    sys.path.insert(0, str(ROOT))
    from rumpfs.api import pack
    result = pack([fixture_tree], tmp_path / "api.cpio", stubetc=False, timestamp=86400)
    assert result.format == "cpio"
    assert result.entries == len(listing(tmp_path / "api.cpio"))
    assert {e["mtime"] for e in listing(tmp_path / "api.cpio").values()} == {86400}


# -- reproducibility ---------------------------------------------------------------------

def _copy_tree(make_fixture_tree, dest, reverse, umask, mtime_ns):
    sys.path.insert(0, str(ROOT / "fixtures"))
    import make_tree
    old = os.umask(umask)
    try:
        make_fixture_tree(dest, reverse=reverse)
    finally:
        os.umask(old)
    make_tree.set_times(os.fsencode(dest), mtime_ns)


@pytest.mark.parametrize("suffix", ["cpio", "cpio.gz", "cpio.xz", "cpio.zst", "cpio.lz4"])
def test_reproducible_across_order_umask_and_host_times(make_fixture_tree, tmp_path, suffix):
    a, b = tmp_path / "a", tmp_path / "b"
    _copy_tree(make_fixture_tree, a, False, 0o022, 1_800_000_000_000_000_000)
    _copy_tree(make_fixture_tree, b, True, 0o077, 1_900_000_000_123_456_789)
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    run_rumpfs("pack", a, "-o", tmp_path / f"a.{suffix}", env=env)
    run_rumpfs("pack", b, "-o", tmp_path / f"b.{suffix}", env=env)
    assert (tmp_path / f"a.{suffix}").read_bytes() == (tmp_path / f"b.{suffix}").read_bytes()
    assert {e["mtime"] for e in listing(tmp_path / f"a.{suffix}").values()} == {1700000000}


def test_source_date_epoch_clamps_but_keeps_older_times(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "old").write_text("o")
    (src / "new").write_text("n")
    os.utime(src / "old", (1000, 1000))
    os.utime(src / "new", (2_000_000_000, 2_000_000_000))
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "-o", out, env={"SOURCE_DATE_EPOCH": "1600000000"})
    names = listing(out)
    assert names["/old"]["mtime"] == 1000
    assert names["/new"]["mtime"] == 1600000000


def test_timestamp_option_accepts_iso_dates(tmp_path):
    out = tmp_path / "a.cpio"
    run_rumpfs("pack", "--timestamp", "2020-01-01T00:00:00Z", "-o", out)
    assert {e["mtime"] for e in listing(out).values()} == {1577836800}


# -- bad input: one line naming the path and the reason, exit 1, no output ----------------

def _fails(tmp_path, *args, out_name="out.cpio", no_dac=False):
    out = tmp_path / out_name
    res = run_rumpfs("pack", *args, "-o", out, check=False, no_dac=no_dac)
    assert res.returncode == 1, res
    assert len(res.err.splitlines()) == 1, res.err
    assert not out.exists()
    assert leftovers(tmp_path) == []
    return res.err.strip()


def test_error_source_missing(tmp_path):
    err = _fails(tmp_path, tmp_path / "nope")
    assert err == f"rumpfs: error: {tmp_path / 'nope'}: source does not exist"


def test_error_output_directory_missing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    res = run_rumpfs("pack", src, "-o", tmp_path / "no" / "dir" / "x.cpio", check=False)
    assert res.returncode == 1
    assert res.err.strip() == (f"rumpfs: error: {tmp_path / 'no' / 'dir' / 'x.cpio'}: "
                               f"output directory {tmp_path / 'no' / 'dir'} does not exist")


def test_error_unreadable_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret").write_text("x")
    os.chmod(src / "secret", 0)
    # Root reads everything: run it without the capabilities that allow that.
    err = _fails(tmp_path, "--no-stubetc", src, no_dac=IS_ROOT)
    assert err == f"rumpfs: error: {src / 'secret'}: cannot read: Permission denied"


def test_error_file_too_large_for_newc(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.truncate(5 << 30)  # sparse: costs nothing
    err = _fails(tmp_path, "--no-stubetc", src)
    assert err == ("rumpfs: error: /huge: file is 5368709120 bytes; a cpio newc archive stores at "
                   "most 4294967295 bytes per file (32-bit size field): use an FFS image")


def test_error_graft_target_not_a_directory(tmp_path):
    base, src = tmp_path / "base", tmp_path / "src"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    src.mkdir()
    err = _fails(tmp_path, base, f"{src}:/etc/hosts")
    assert err == (f"rumpfs: error: {src}: graft target /etc/hosts is not a directory "
                   f"in the image (from {base / 'etc' / 'hosts'})")


def test_error_source_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    # A file is read as a tar or cpio archive (rumpfs.archives).
    assert _fails(tmp_path, f) == (f"rumpfs: error: {f}: source is neither a directory "
                                   f"nor a tar or cpio archive")


def test_error_unknown_format(tmp_path):
    err = _fails(tmp_path, "--format", "zip", out_name="x.zip")
    assert err.startswith("rumpfs: error: unknown image format 'zip' (known: ")


def test_failed_pack_leaves_existing_output_untouched(tmp_path):
    out = tmp_path / "out.cpio"
    out.write_bytes(b"precious")
    res = run_rumpfs("pack", tmp_path / "nope", "-o", out, check=False)
    assert res.returncode == 1
    assert out.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []
