"""The host walk shared between walker processes on a large tree.

A tree of more than SHARE_AFTER_ENTRIES entries is listed by forked
walkers; what they send must make exactly the tree one process makes, and
GNU cpio must extract an archive of it that matches the source file by file.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import sys
import threading
import time

import pytest
from conftest import IS_ROOT, run_rumpfs
from treecompare import assert_same, scan_host

from rumpfs import hostwalk, output
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
    _fail_listing(monkeypatch, big_tree / "d33" / "inner")
    with pytest.raises(RumpfsError) as err:
        _walk(big_tree, 2)
    assert str(err.value) == f"{big_tree / 'd33' / 'inner'}: cannot read directory: Permission denied"
    assert _children() == []


def _fail_listing(monkeypatch, bad) -> None:
    """Listing ``bad`` fails as an unreadable directory does."""
    bad = os.fsencode(bad)
    real = hostwalk.list_directory

    def failing(path):
        if path == bad:
            raise RumpfsError(f"{os.fsdecode(path)}: cannot read directory: Permission denied")
        return real(path)

    monkeypatch.setattr(hostwalk, "list_directory", failing)


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


# -- the tree listed while it is written (HostStream) ---------------------------

def _stream(top, walkers: int, policy=None):
    from rumpfs.sources import Policy, settle_times
    policy = policy or Policy()
    tree = Tree()
    return hostwalk.HostStream(os.fsencode(top), tree, policy.keep_owner,
                               lambda nodes: settle_times(nodes, policy), walkers=walkers)


def _finished(top, policy=None) -> Tree:
    from rumpfs.sources import HostDirectory, Policy, build_tree
    return build_tree([HostDirectory(os.fspath(top))], policy or Policy())


def _entry_fields(entries) -> list:
    out = []
    for path, n, link_of, depth in entries:
        # A hard-linked file may be read through another of its host names.
        data = None if n.data is None else (os.stat(n.data.path).st_ino, n.data.size)
        out.append((path, link_of, depth, n.mode, n.uid, n.gid, n.mtime_ns, n.ctime_ns,
                    n.rdev, n.target, data))
    return out


def _count_listings_here(monkeypatch) -> list:
    """The directories this process lists from now on (walkers fork with the
    counting function too, but their calls are not seen here)."""
    listed = []
    real = hostwalk.list_directory

    def counting(path):
        listed.append(path)
        return real(path)

    monkeypatch.setattr(hostwalk, "list_directory", counting)
    return listed


@pytest.mark.parametrize("walkers,share_after", [(0, 4096), (2, 4096), (2, 50)])
def test_streamed_walk_yields_what_the_finished_tree_walks(big_tree, monkeypatch, walkers,
                                                           share_after):
    """Same names, order, link_of, depths and node fields as Tree.walk of the
    tree built from the whole directory; the link counts are final at the end."""
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", share_after)
    from rumpfs.sources import Policy
    policy = Policy(keep_owner=False, clamp=1_600_000_000)
    finished = _finished(big_tree, policy)
    stream = _stream(big_tree, walkers, policy)
    # The root's own metadata is the caller's (api.listed_while_written).
    stream.tree.root.copy_meta_from(finished.root)
    during = stream.name_counts()
    streamed = list(stream.walk())
    assert stream.ended
    # One hard-linked node in big_tree (d00/inner/f1): counted 0 while walking.
    linked = stream.tree.lookup(b"d00/inner/f1")
    assert during[id(linked)] == 0
    assert during[id(stream.tree.lookup(b"d00/inner/f2"))] == 1
    assert _entry_fields(streamed) == _entry_fields(finished.walk())
    counts = stream.name_counts()
    assert counts[id(linked)] == 3
    assert stream.count() == finished.count()
    assert _children() == []


def test_streamed_walk_shares_with_walkers(big_tree, monkeypatch):
    """Past the threshold, the directories still to come are listed by walkers."""
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", 50)
    listed_here = _count_listings_here(monkeypatch)
    stream = _stream(big_tree, 2)
    walk = stream.walk()
    for _ in range(300):
        next(walk)
    # Walkers fork with the patched function, but their calls are not seen here.
    local = len(listed_here)
    list(walk)
    assert len(listed_here) == local < len([d for d, _s, _f in os.walk(big_tree)])


@pytest.mark.parametrize("cores, forks", [({0}, False), ({0, 1}, True)])
def test_walkers_by_the_cores_this_process_may_use(big_tree, monkeypatch, cores, forks):
    """Pinned to one core (taskset, a cpuset) on a larger machine, the walk
    and the copies fork no second walker; on two they do."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(cores))
    forked = []
    real_fork = os.fork

    def fork():
        forked.append(True)
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    expected = _snapshot(_walk(big_tree, 0)[1])
    root = Node(DIR | 0o755)
    hostwalk.walk_host_dir(os.fsencode(big_tree), root)
    assert _snapshot(root) == expected
    assert bool(forked) == forks
    assert output.Copier(-1).workers == len(cores)
    streamed = [e.path for e in _stream(big_tree, None).walk()]
    assert streamed == [e.path for e in Tree(root).walk()]
    assert len(forked) == (4 if forks else 0)


@pytest.mark.parametrize("share_after", [4096, 50])
def test_unreadable_directory_in_a_streamed_walk(big_tree, monkeypatch, share_after):
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", share_after)
    _fail_listing(monkeypatch, big_tree / "d33" / "inner")
    with pytest.raises(RumpfsError) as err:
        list(_stream(big_tree, 2).walk())
    assert str(err.value) == f"{big_tree / 'd33' / 'inner'}: cannot read directory: Permission denied"
    assert _children() == []


def test_a_streamed_walk_left_early_ends_its_walkers(big_tree, monkeypatch):
    """A writer that fails mid-walk closes the walk: no walker is left."""
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", 50)
    walk = _stream(big_tree, 2).walk()
    for _ in range(500):
        next(walk)
    assert _children() != []  # the walkers are running
    walk.close()
    assert _children() == []


def _etc_case(top, case: str):
    """A copy of ``top`` whose etc is as ``case`` says; True if the tree
    should still be written while listed."""
    etc = top / "etc"
    if case == "no etc":
        return True
    if case == "symlinked etc":  # the image holds the symlink: no default /etc below it
        etc.symlink_to("usr/etc")
        return False
    if case == "etc hard-linked outside":  # the link joins a name outside /etc
        etc.mkdir()
        os.link(top / "d00" / "inner" / "f2", etc / "motd")
        return False
    etc.mkdir()
    (etc / "hosts").write_text("127.0.0.1 own\n")  # replaces the default's
    (etc / "sub").mkdir()
    (etc / "sub" / "x").write_text("x\n")
    if case == "own passwd":  # the default account files step aside
        (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        (etc / "group").write_text("root:x:0:\n")
    elif case == "own master.passwd":  # the databases are generated from it
        (etc / "master.passwd").write_text("root:*:0:0::0:0:Charlie &:/root:/bin/sh\n")
        (etc / "group").write_text("wheel:*:0:root\n")
    return True


@pytest.mark.parametrize("case", ["no etc", "own etc", "own passwd", "own master.passwd",
                                  "symlinked etc", "etc hard-linked outside"])
@pytest.mark.parametrize("stubetc", [True, False])
def test_streamed_cpio_equals_the_whole_tree_cpio(big_tree, tmp_path, monkeypatch, case, stubetc):
    """The archive written while the tree is listed is byte for byte the one
    written from the finished tree (hard links, devices, long names), with
    the default /etc, the source's own etc over it and the files generated
    in it (the databases, --config) grafted in."""
    from rumpfs import api
    top = tmp_path / "src"
    _copy(big_tree, top)
    streams = _etc_case(top, case)
    config = tmp_path / "config.json"
    config.write_text('{"hostname": "h"}')
    opts = dict(stubetc=stubetc, progress=False, config=config if case == "own etc" else None)
    streamed = tmp_path / "streamed.cpio"
    whole = tmp_path / "whole.cpio"
    made = []
    real = api.listed_while_written
    with monkeypatch.context() as m:
        m.setattr(api, "listed_while_written", lambda *a: made.append(real(*a)) or made[-1])
        api.pack([top], streamed, **opts)
    assert (made[0] is not None) == streams
    with monkeypatch.context() as m:
        m.setattr(api, "listed_while_written", lambda *a: None)
        api.pack([top], whole, **opts)
    assert streamed.read_bytes() == whole.read_bytes()
    names = subprocess.run(["bsdtar", "-tf", str(streamed)], capture_output=True, check=True,
                           text=True).stdout.split()
    if case == "own master.passwd":
        assert {"etc/pwd.db", "etc/spwd.db", "etc/passwd"} <= set(names)
    if stubetc and case != "symlinked etc":
        assert "etc/services" in names
    if case == "own etc":
        assert "etc/rumprun.json" in names


def test_own_master_passwd_still_makes_the_databases(fixture_tree, tmp_path):
    """A single source directory with etc/master.passwd is not written while
    listed: /etc/pwd.db and /etc/passwd must be generated (bsdtar lists them)."""
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "master.passwd").write_text(
        "root:*:0:0::0:0:Charlie &:/root:/bin/sh\n")
    (src / "etc" / "group").write_text("wheel:*:0:root\n")
    out = tmp_path / "o.cpio"
    run_rumpfs("pack", "--no-stubetc", src, "-o", out)
    names = subprocess.run(["bsdtar", "-tf", str(out)], capture_output=True, check=True,
                           text=True).stdout.split()
    assert {"./etc/pwd.db", "./etc/spwd.db", "./etc/passwd"} <= set(names) or \
        {"etc/pwd.db", "etc/spwd.db", "etc/passwd"} <= set(names), names


# -- subtrees written by the walkers themselves (cpio) ------------------------------

#: Entries listed here before the walkers take over, in the tests below.
EARLY_SHARE = 10


@pytest.fixture(scope="module")
def edge_tree(tmp_path_factory):
    """Top directories s0..s7 of every kind of member: files of every size
    class (empty, gathered into one write, copied apart, larger than the
    gather buffer, sparse), symlinks short and long, 255-byte, non-ASCII and
    non-UTF-8 names, a deep chain, a fifo, a device and other owners (root).
    s6 holds a time cpio cannot store and s7 a hard link: those two are
    written by this process, the others by the walkers."""
    top = tmp_path_factory.mktemp("edges") / "tree"
    rnd = random.Random(11)
    for d in range(8):
        sub = top / f"s{d}"
        sub.mkdir(parents=True)
        for f in range(12):
            (sub / f"f{f:02}").write_bytes(rnd.randbytes(rnd.choice((0, 1, 5, 4095, 70_000))))
    (top / "s1" / "big").write_bytes(rnd.randbytes(3 << 20))
    with open(top / "s2" / "sparse", "wb") as f:
        f.seek(2 << 20)
        f.write(b"end")
    (top / "s3" / ("n" * 255)).write_bytes(b"long name")
    (top / "s3" / "grüße-名前").write_bytes(b"utf-8 name")
    (top / "s3" / os.fsdecode(b"latin1-\xe9")).write_bytes(b"not utf-8")
    os.symlink("t", top / "s4" / "short")
    os.symlink("x" * 1000, top / "s4" / "long")
    chain = top / "s5"
    for i in range(40):
        chain = chain / f"c{i}"
    chain.mkdir(parents=True)
    (chain / "leaf").write_bytes(b"deep")
    os.mkfifo(top / "s5" / "fifo")
    if IS_ROOT:
        os.mknod(top / "s4" / "null", stat.S_IFCHR | 0o640, os.makedev(1, 3))
        os.chown(top / "s3" / "f01", 1234, 5678)
        os.chown(top / "s4", 99, 98)
    os.utime(top / "s6" / "f03", ns=(-5 * 10**9, -5 * 10**9))
    os.link(top / "s7" / "f00", top / "s7" / "f00-link")
    return top


def _count_written(monkeypatch) -> list:
    """The subtrees the walk yields as written by walkers (a list that fills)."""
    written = []
    real = hostwalk.HostStream._written_subtree

    def counting(self, plan):
        written.append(plan)
        return real(self, plan)

    monkeypatch.setattr(hostwalk.HostStream, "_written_subtree", counting)
    return written


@pytest.mark.parametrize("policy", ["default", "keep-owner", "timestamp", "source-date-epoch"])
def test_walkers_write_subtrees_byte_for_byte(edge_tree, tmp_path, monkeypatch, capsys, policy):
    """Subtrees the walkers write are the bytes this process writes from the
    whole tree; the subtrees with a hard link or an out-of-range time are
    left to this process."""
    from rumpfs import api
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    opts = {"stubetc": False, "progress": False, "keep_owner": policy == "keep-owner"}
    if policy == "timestamp":
        opts["timestamp"] = 1_500_000_000
    if policy == "source-date-epoch":
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    written = _count_written(monkeypatch)
    streamed, whole = tmp_path / "streamed.cpio", tmp_path / "whole.cpio"
    api.pack([edge_tree], streamed, **opts)
    # --timestamp moves the time before 1970 into cpio's range.
    assert len(written) == (6 if policy == "timestamp" else 5)
    assert sum(p[2] for p in written) > 60
    with monkeypatch.context() as m:
        m.setattr(api, "listed_while_written", lambda *a: None)
        api.pack([edge_tree], whole, **opts)
    assert streamed.read_bytes() == whole.read_bytes()
    assert _children() == []


#: Decompressing tools, by output suffix.
DECOMPRESS = {".cpio.gz": ["gzip", "-dc"], ".cpio.zst": ["zstd", "-qdc"],
              ".cpio.lz4": ["lz4", "-qdc"], ".cpio.xz": ["xz", "-dc"]}


@pytest.mark.parametrize("suffix", sorted(DECOMPRESS))
def test_walkers_write_subtrees_through_pipes(edge_tree, tmp_path, monkeypatch, suffix):
    """A compressed archive takes its bytes in order: the walkers' subtrees
    come through pipes, and what follows a hard link whose count is known
    only at the end waits in a file to be corrected.  The tool decompresses
    the archive the file sink writes, and the bytes are the same as when
    the whole tree is listed first."""
    from rumpfs import api
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    written = _count_written(monkeypatch)
    plain, streamed, whole = (tmp_path / "plain.cpio", tmp_path / f"streamed{suffix}",
                              tmp_path / f"whole{suffix}")
    api.pack([edge_tree], plain, stubetc=False, progress=False)
    del written[:]
    api.pack([edge_tree], streamed, stubetc=False, progress=False)
    assert len(written) == 5
    decompressed = subprocess.run([*DECOMPRESS[suffix], str(streamed)], capture_output=True,
                                  check=True).stdout
    assert decompressed == plain.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(api, "listed_while_written", lambda *a: None)
        api.pack([edge_tree], whole, stubetc=False, progress=False)
    assert streamed.read_bytes() == whole.read_bytes()
    assert _children() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("rumpfs-")]


@pytest.mark.parametrize("suffix", [".cpio", ".cpio.zst"])
def test_a_large_subtree_is_left_to_this_process(edge_tree, tmp_path, monkeypatch, suffix):
    """A subtree of more than WRITTEN_APART_MAX entries (s5's 40-level chain)
    goes to this process as records, the rest of it sent as it is listed;
    the bytes are still those of the whole tree."""
    from rumpfs import api
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    monkeypatch.setattr(hostwalk, "WRITTEN_APART_MAX", 20)
    written = _count_written(monkeypatch)
    streamed, whole = tmp_path / f"streamed{suffix}", tmp_path / f"whole{suffix}"
    api.pack([edge_tree], streamed, stubetc=False, progress=False)
    # s1-s4: s0 is listed here before the walkers start, s5 is over the
    # limit, s6 and s7 are never written apart (edge_tree).
    assert len(written) == 4
    assert all(p[2] <= 20 for p in written)
    with monkeypatch.context() as m:
        m.setattr(api, "listed_while_written", lambda *a: None)
        api.pack([edge_tree], whole, stubetc=False, progress=False)
    assert streamed.read_bytes() == whole.read_bytes()
    assert _children() == []


def test_walkers_write_subtrees_to_standard_output(edge_tree, tmp_path, monkeypatch):
    """Output that cannot seek (``-o -``) takes the pipes' way too."""
    from rumpfs import api
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    written = _count_written(monkeypatch)
    plain, piped = tmp_path / "plain.cpio", tmp_path / "piped.cpio"
    api.pack([edge_tree], plain, stubetc=False, progress=False)
    del written[:]
    saved = os.dup(1)
    with open(piped, "wb") as f:
        reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=f)
    try:
        os.dup2(reader.stdin.fileno(), 1)  # standard output is a pipe
        reader.stdin.close()
        api.pack([edge_tree], "-", stubetc=False, progress=False, format="cpio")
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert reader.wait() == 0
    assert len(written) == 5
    assert piped.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize("suffix", [".cpio", ".cpio.zst"])
def test_gnu_cpio_extracts_subtrees_written_by_walkers(edge_tree, tmp_path, monkeypatch, suffix):
    from rumpfs import api
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    written = _count_written(monkeypatch)
    out = tmp_path / f"edges{suffix}"
    api.pack([edge_tree], out, stubetc=False, progress=False, keep_owner=True)
    assert len(written) == 5
    if suffix in DECOMPRESS:
        archive = tmp_path / "edges.cpio"
        with open(archive, "wb") as f:
            subprocess.run([*DECOMPRESS[suffix], str(out)], stdout=f, check=True)
        out = archive
    dest = tmp_path / "x"
    dest.mkdir()
    with open(out, "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet"], stdin=f, cwd=dest, check=True,
                       stderr=subprocess.DEVNULL)  # the clamped time's warning
    expected = scan_host(edge_tree)
    actual = scan_host(dest)
    # GNU cpio sets a directory's time before filling it and never a symlink's;
    # the time before 1970 is stored clamped to 0.
    expected[b"s6/f03"]["mtime"] = 0
    for records in (expected, actual):
        for r in records.values():
            if r["type"] in ("dir", "symlink"):
                r["mtime"] = None
    assert_same(expected, actual)


@pytest.mark.parametrize("suffix", [".cpio", ".cpio.zst"])
@pytest.mark.parametrize("change,message", [
    ("truncate", "{victim}: changed while being packed (size 70000 -> 10)"),
    ("remove", "{victim}: cannot read: No such file or directory"),
])
def test_walker_write_error_is_reported_and_nothing_is_left(edge_tree, tmp_path, monkeypatch,
                                                           change, message, suffix):
    """A file that changes between a walker's listing and its writing: the
    exact error, no output, no process left."""
    from rumpfs import api
    from rumpfs.formats.cpio import writer as cpio_writer
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    work = tmp_path / "tree"
    _copy(edge_tree, work)
    victim = next(p for p in sorted((work / "s2").iterdir()) if p.stat().st_size == 70_000)
    real = cpio_writer.SubtreeWriter.write

    def changing(self, plan, *rest):
        if any(m[0] == b"s2" for m in plan.members):
            if change == "truncate":
                os.truncate(victim, 10)
            else:
                os.unlink(victim)
        return real(self, plan, *rest)

    monkeypatch.setattr(cpio_writer.SubtreeWriter, "write", changing)
    out = tmp_path / f"o{suffix}"
    with pytest.raises(RumpfsError) as err:
        api.pack([work], out, stubetc=False, progress=False)
    assert str(err.value) == message.format(victim=victim)
    assert not out.exists() and [n for n in os.listdir(tmp_path) if n.endswith(".part")] == []
    assert _children() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("rumpfs-")]


class _FullFile:
    """A temporary file on a full disk: every write fails as a full
    $TMPDIR fails it."""

    def __init__(self, *args, **kwargs):
        self.file = open(os.devnull, "w+b")

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)


@pytest.mark.parametrize("tmpdir,message", [
    ("missing", "cannot write a temporary file in {tmpdir}: No such file or directory"),
    ("full", "cannot write a temporary file in {tmpdir}: No space left on device"),
])
def test_hold_file_that_cannot_be_written_is_an_output_error(edge_tree, tmp_path, monkeypatch,
                                                            tmpdir, message):
    """What follows a hard link waits in a temporary file (in $TMPDIR) to
    be corrected: a $TMPDIR that is missing or full is the exact one-line
    error, with no output, no process and no thread left."""
    import tempfile

    from rumpfs import api
    monkeypatch.setattr(hostwalk, "SHARE_AFTER_ENTRIES", EARLY_SHARE)
    if tmpdir == "missing":
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    else:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        monkeypatch.setattr(tempfile, "TemporaryFile", _FullFile)
    out = tmp_path / "o.cpio.zst"
    with pytest.raises(RumpfsError) as err:
        api.pack([edge_tree], out, stubetc=False, progress=False)
    assert str(err.value) == f"{out}: {message.format(tmpdir=tempfile.gettempdir())}"
    assert not out.exists() and [n for n in os.listdir(tmp_path) if n.endswith(".part")] == []
    assert _children() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("rumpfs-")]


def _wide_tree(top, dirs: int):
    for d in range(dirs):
        sub = top / f"d{d:03}"
        sub.mkdir(parents=True)
        (sub / "a").write_bytes(b"a%d\n" % d)
        os.symlink("a", sub / "b")
    return top


@pytest.mark.parametrize("extra, shared", [(10, True), (-128, False)])
def test_many_directories_waiting_share_the_walk_early(tmp_path, monkeypatch, extra, shared):
    """A tree of many small directories is shared once SHARE_AT_QUEUED_DIRS
    of them wait to be listed, though it has fewer entries than
    SHARE_AFTER_ENTRIES; a tree of fewer is listed here alone.  Either way
    the tree is the one a single process makes."""
    dirs = hostwalk.SHARE_AT_QUEUED_DIRS + extra
    top = _wide_tree(tmp_path / "wide", dirs)
    assert 1 + 3 * dirs < hostwalk.SHARE_AFTER_ENTRIES
    expected = _snapshot(_walk(top, 0)[1])
    listed_here = _count_listings_here(monkeypatch)
    count, root = _walk(top, 2)
    assert count == 3 * dirs
    assert _snapshot(root) == expected
    assert (len(listed_here) < dirs) == shared
    assert _children() == []


def test_a_walker_held_up_leaves_the_other_subtrees_to_the_others(tmp_path, monkeypatch):
    """The walkers take the waiting subtrees as each becomes free: while one
    is held up in the first subtree, the other lists all the rest.  (Dealt
    out in turn, the held-up walker would also hold every second subtree,
    and the rest would wait for it: here, until it gives up waiting.)"""
    dirs = hostwalk.SHARE_AT_QUEUED_DIRS + 10
    top = _wide_tree(tmp_path / "wide", dirs)
    with os.scandir(top) as it:
        first = os.fsencode(next(it).path)  # the first subtree dealt out: listing order
    rest_listed = tmp_path / "rest-listed"
    gave_up = tmp_path / "gave-up"
    parent = os.getpid()
    real_list, real_add = hostwalk.list_directory, hostwalk._Builder.add
    added = []

    def held_up(path):
        if path == first and os.getpid() != parent:
            deadline = time.monotonic() + 5
            while not rest_listed.exists():
                if time.monotonic() > deadline:
                    gave_up.touch()
                    break
                time.sleep(0.01)
        return real_list(path)

    def adding(build, dirpath, dirnode, entries):
        added.append(dirpath)
        if len(added) == dirs:  # the top and every subtree but the first
            rest_listed.touch()
        return real_add(build, dirpath, dirnode, entries)

    monkeypatch.setattr(hostwalk, "list_directory", held_up)
    monkeypatch.setattr(hostwalk._Builder, "add", adding)
    expected = _snapshot(_walk(top, 0)[1])
    added.clear()
    rest_listed.unlink()
    count, root = _walk(top, 2)
    assert not gave_up.exists()
    assert added[-1] == first
    assert count == 3 * dirs
    assert _snapshot(root) == expected
    assert _children() == []


@pytest.mark.parametrize("count", [1, hostwalk.MAX_TASKS, 3 * hostwalk.MAX_TASKS + 1])
def test_walker_tasks_cover_every_subtree_once_in_order(count):
    """However many subtrees wait, the task pipe holds at most MAX_TASKS
    tasks (runs of subtrees), and taking them to the end gives each once."""
    import fcntl
    import termios

    tasks = hostwalk._deal(count)
    try:
        waiting = int.from_bytes(fcntl.ioctl(tasks, termios.FIONREAD, bytes(4)), sys.byteorder)
        taken = list(hostwalk._taken(range(count), tasks))
    finally:
        os.close(tasks)
    assert taken == list(range(count))
    assert 0 < waiting <= hostwalk.MAX_TASKS * hostwalk._TASK.size
