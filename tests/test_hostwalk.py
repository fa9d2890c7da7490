"""The host walk shared between walker processes on a large tree.

A tree of more than SHARE_AFTER_ENTRIES entries is listed by forked
walkers; what they send must make exactly the tree one process makes, and
GNU cpio must extract an archive of it that matches the source file by file.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import IS_ROOT, run_rumpfs
from treecompare import assert_same, scan_host

from rumpfs import hostwalk
from rumpfs.errors import RumpfsError
from rumpfs.tree import DIR, Node, Tree

#: Directories and files per directory of the generated tree: well over
#: hostwalk.SHARE_AFTER_ENTRIES, so the walk is shared.
DIRS, FILES = 40, 150


@pytest.fixture(scope="module")
def big_tree(fixture_tree, tmp_path_factory):
    top = tmp_path_factory.mktemp("bigwalk") / "tree"
    top.mkdir()
    _copy(fixture_tree, top / "fixture")
    for d in range(DIRS):
        sub = top / f"d{d:02}" / "inner"
        sub.mkdir(parents=True)
        for f in range(FILES):
            (sub / f"f{f}").write_bytes(b"%d/%d\n" % (d, f) * (f % 7))
    # Hard links across subtrees that different walkers list.
    os.link(top / "d00" / "inner" / "f1", top / "d39" / "inner" / "link-to-d00")
    os.link(top / "d00" / "inner" / "f1", top / "d20" / "link-to-d00")
    os.symlink("../d00/inner/f2", top / "d31" / "sym")
    assert DIRS * FILES > hostwalk.SHARE_AFTER_ENTRIES
    return top


def _copy(src, dest) -> None:
    # cp -a keeps hard links, devices, fifos and sockets (shutil.copytree does not).
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)


def _snapshot(root: Node) -> list:
    """Every name with its node's fields; hard links as the first name's path.
    (Not atime: listing a directory may update it between two walks.)"""
    out = []
    for e in Tree(root).walk():
        n = e.node
        data = None if n.data is None else (n.data.size, n.data.extents())
        out.append((e.path, e.link_of, n.mode, n.uid, n.gid, n.mtime_ns, n.ctime_ns,
                    n.rdev, n.target, data))
    return out


def _walk(top, walkers: int, keep_owner: bool = True) -> tuple[int, Node]:
    root = Node(DIR | 0o755)
    count = hostwalk.walk_host_dir(os.fsencode(top), root, keep_owner, walkers=walkers)
    return count, root


@pytest.mark.parametrize("keep_owner", [True, False])
def test_shared_walk_makes_the_same_tree_as_one_process(big_tree, keep_owner):
    count1, alone = _walk(big_tree, 0, keep_owner)
    count2, shared = _walk(big_tree, 2, keep_owner)
    expected_entries = sum(len(dirs) + len(files) for _r, dirs, files in os.walk(big_tree))
    assert count1 == count2 == expected_entries
    assert _snapshot(shared) == _snapshot(alone)


def test_shared_walk_keeps_hard_links_one_node(big_tree):
    _count, root = _walk(big_tree, 2)
    first = root.children[b"d00"].children[b"inner"].children[b"f1"]
    assert root.children[b"d39"].children[b"inner"].children[b"link-to-d00"] is first
    assert root.children[b"d20"].children[b"link-to-d00"] is first


@pytest.mark.skipif(not IS_ROOT, reason="extracting owners and devices needs root")
def test_gnu_cpio_extracts_a_tree_walked_in_parallel(big_tree, tmp_path):
    out = tmp_path / "big.cpio"
    run_rumpfs("pack", "--no-stubetc", "--keep-owner", big_tree, "-o", out)
    dest = tmp_path / "x"
    dest.mkdir()
    with open(out, "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet"], stdin=f, cwd=dest, check=True)
    expected = scan_host(big_tree)
    actual = scan_host(dest)
    # GNU cpio sets a directory's time before filling it and never a symlink's.
    for records in (expected, actual):
        for r in records.values():
            if r["type"] in ("dir", "symlink"):
                r["mtime"] = None
    assert_same(expected, actual)


def test_unreadable_directory_inside_a_shared_walk(big_tree, tmp_path, monkeypatch):
    """A walker's error reaches the caller with the path, and no walker is left."""
    bad = os.fsencode(big_tree / "d33" / "inner")
    real = hostwalk.list_directory

    def failing(path):
        if path == bad:
            raise RumpfsError(f"{os.fsdecode(path)}: cannot read directory: Permission denied")
        return real(path)

    monkeypatch.setattr(hostwalk, "list_directory", failing)
    with pytest.raises(RumpfsError) as err:
        _walk(big_tree, 2)
    assert str(err.value) == f"{big_tree / 'd33' / 'inner'}: cannot read directory: Permission denied"
    assert _children() == []


def _children() -> list[int]:
    """Processes this one forked that still exist."""
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                found.append(int(pid))
    return found


def test_unreadable_directory_error_from_the_command_line(big_tree, tmp_path):
    """Through `rumpfs pack`, without root's override: the exact one-line error, no output."""
    src = tmp_path / "src"
    _copy(big_tree, src)
    locked = src / "d35" / "inner"
    os.chmod(locked, 0)
    try:
        out = tmp_path / "o.cpio"
        res = run_rumpfs("pack", "--no-stubetc", src, "-o", out, check=False, no_dac=IS_ROOT)
    finally:
        os.chmod(locked, 0o755)
    assert res.returncode == 1
    assert res.err == f"rumpfs: error: {locked}: cannot read directory: Permission denied\n"
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.endswith(".part")]


@pytest.mark.parametrize("walkers", [0, 2])
def test_source_given_with_a_trailing_slash(big_tree, walkers):
    """Host paths (kept for the copies and for messages) are joined the way
    os.scandir joins them: no doubled slash after a SRC/ argument."""
    root = Node(DIR | 0o755)
    hostwalk.walk_host_dir(os.fsencode(big_tree) + b"/", root, walkers=walkers)
    f = root.children[b"d07"].children[b"inner"].children[b"f3"]
    assert f.data.path == os.fsencode(big_tree) + b"/d07/inner/f3"
