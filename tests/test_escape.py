"""Hostile archives and images: ``rumpfs extract`` never writes outside its
target, whatever the image says.

Each cpio case is written here member by member from the newc spec (and a
few by bsdtar itself), then extracted by bsdtar (libarchive, the reference:
it refuses '..', extraction through symlinks...) and by rumpfs into sibling
directories of a tmp dir that also holds a sentinel "outside" tree.  rumpfs
must refuse at least what bsdtar refuses (it creates no path bsdtar did not,
and fails when bsdtar fails), leave everything outside its target
byte-identical, and say exactly the expected lines.  FFS cases are images
rumpfs wrote with one directory entry name patched; dissect.ffs confirms the
patched name is what an independent reader sees.
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
from dataclasses import dataclass, field

import pytest
from conftest import run_rumpfs
from treecompare import scan_host

from rumpfs.errors import RumpfsError
from rumpfs.extract import extract
from rumpfs.formats.cpio.reader import CpioReader

# cpio newc (SVR4 "new ASCII"): magic then 13 fields of 8 hex digits, the
# name with its NUL, padding to 4 bytes, the data, padding to 4 bytes.
NEWC_MAGIC = b"070701"
ALIGN = 4
TRAILER = "TRAILER!!!"
REG, DIR, LNK = 0o100644, 0o040755, 0o120777


def newc_member(name, mode, data=b"", ino=0, nlink=1) -> bytes:
    name = os.fsencode(name) if isinstance(name, str) else name
    data = os.fsencode(data) if isinstance(data, str) else data
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
    head = NEWC_MAGIC + b"".join(b"%08X" % v for v in fields) + name + b"\0"
    head += bytes(-len(head) % ALIGN)
    return head + data + bytes(-len(data) % ALIGN)


def newc(members) -> bytes:
    return b"".join(newc_member(*m) for m in members) + newc_member(TRAILER, 0)


@dataclass
class Case:
    id: str
    #: (name, mode, data, ino, nlink); "{OUT}" in a name or data is the sentinel tree.
    members: list
    #: stderr lines of rumpfs after "rumpfs: ", the last one with {ARCHIVE}.
    lines: list
    #: Set up in both targets before extraction: name -> symlink target.
    pre_symlinks: dict = field(default_factory=dict)
    #: Relative paths that must be in the rumpfs target afterwards.
    expect: tuple = ()
    #: Paths whose data rumpfs keeps and bsdtar loses.
    more_data: tuple = ()


def _delayed(n: int) -> str:
    return f"error: {{ARCHIVE}}: {n} entr{'y' if n == 1 else 'ies'} not extracted (see the warnings above)"


CASES = [
    Case("dotdot", [("../escape", REG, "x")],
         ["warning: ../escape: path contains '..'; not extracted", _delayed(1)]),
    Case("dotdot-middle", [("a", DIR), ("a/../../x", REG, "x")],
         ["warning: a/../../x: path contains '..'; not extracted", _delayed(1)], expect=("a",)),
    Case("dotdot-deep", [("../../../../../../../../rootesc", REG, "x")],
         ["warning: ../../../../../../../../rootesc: path contains '..'; not extracted",
          _delayed(1)]),
    Case("dot-dotdot", [("./../x", REG, "x")],
         ["warning: ../x: path contains '..'; not extracted", _delayed(1)]),
    Case("dotdot-dir", [("a/..", DIR)],
         ["warning: a/..: path contains '..'; not extracted", _delayed(1)]),
    # Undecodable bytes and control characters are escaped: still one line.
    Case("dotdot-latin1", [(b"../caf\xe9", REG, "x")],
         ["warning: ../caf\\xe9: path contains '..'; not extracted", _delayed(1)]),
    Case("dotdot-newline", [(b"a\nb/../../x", REG, "x")],
         ["warning: a\\x0ab/../../x: path contains '..'; not extracted", _delayed(1)]),
    Case("absolute", [("/abs/name", REG, "x")], [], expect=("abs/name",)),
    Case("symlink-abs-then-through", [("d", LNK, "{OUT}/dir"), ("d/pwned", REG, "x")],
         ["warning: d/pwned: cannot extract through symlink d; not extracted", _delayed(1)],
         expect=("d",)),
    Case("symlink-up-then-through", [("up", LNK, ".."), ("up/x", REG, "x")],
         ["warning: up/x: cannot extract through symlink up; not extracted", _delayed(1)]),
    Case("symlink-self-then-through", [("self", LNK, "."), ("self/x", REG, "x")],
         ["warning: self/x: cannot extract through symlink self; not extracted", _delayed(1)]),
    Case("symlink-chain", [("a", LNK, "b"), ("b", LNK, "{OUT}/dir"), ("a/pwned", REG, "x")],
         ["warning: a/pwned: cannot extract through symlink a; not extracted", _delayed(1)]),
    Case("symlink-deep-through", [("s", DIR), ("s/l", LNK, "{OUT}"), ("s/l/dir/pwned", REG, "x")],
         ["warning: s/l/dir/pwned: cannot extract through symlink s/l; not extracted",
          _delayed(1)]),
    Case("hardlink-first-outside", [("../hl_outside", REG, "", 5, 2), ("b", REG, "data", 5, 2)],
         ["warning: ../hl_outside: path contains '..'; not extracted",
          "warning: b: hard link to ../hl_outside, which was not extracted; not extracted",
          _delayed(2)]),
    Case("hardlink-second-outside", [("a", REG, "", 6, 2), ("../hl2", REG, "data", 6, 2)],
         ["warning: ../hl2: path contains '..'; not extracted", _delayed(1)], expect=("a",),
         # bsdtar extracts "a" empty: the data came with the name it refused.
         more_data=("a",)),
    Case("hardlink-data-through-symlink",
         [("s", LNK, "{OUT}/f"), ("x", REG, "", 7, 2), ("s", REG, "PWN", 7, 2)], [],
         expect=("s", "x")),
    Case("symlink-leaf-then-file", [("l", LNK, "{OUT}/f"), ("l", REG, "PWN")], [], expect=("l",)),
    Case("symlink-dotdot-target-then-file", [("l", LNK, "../../outside/f"), ("l", REG, "PWN")],
         [], expect=("l",)),
    Case("preexisting-symlink-dir", [("etc/passwd", REG, "PWN")],
         ["warning: etc/passwd: cannot extract through symlink etc; not extracted", _delayed(1)],
         pre_symlinks={"etc": "{OUT}/dir"}),
    # With an entry for the directory itself, the symlink is replaced (bsdtar too).
    Case("preexisting-symlink-dir-entry", [("etc", DIR), ("etc/passwd", REG, "PWN")], [],
         pre_symlinks={"etc": "{OUT}/dir"}, expect=("etc/passwd",)),
    Case("preexisting-symlink-hardlink-name", [("a", REG, "", 8, 2), ("t", REG, "PWN", 8, 2)],
         [], pre_symlinks={"t": "{OUT}/f"}, expect=("a", "t")),
    Case("preexisting-symlink-leaf", [("motd", REG, "PWN")], [],
         pre_symlinks={"motd": "{OUT}/f"}, expect=("motd",)),
    Case("preexisting-symlink-root-name", [("keep", REG, "PWN")], [],
         pre_symlinks={"keep": "{OUT}/dir/keep"}, expect=("keep",)),
    # A NUL inside a name whose size says it goes on: the archive is corrupt,
    # and the reader refuses it before anything is extracted.
    Case("nul-in-name", [(b"a\0b", REG, "x")],
         ["error: {ARCHIVE}: corrupt cpio name at offset 110: 'a\\x00b' has a NUL byte inside"]),
    Case("file-then-dir", [("a", REG, "x"), ("a", DIR), ("a/b", REG, "y")], [],
         expect=("a", "a/b")),
    Case("dir-then-file", [("a", DIR), ("a/b", REG, "y"), ("a", REG, "x")],
         ["warning: a: cannot replace a directory that is not empty; not extracted", _delayed(1)],
         expect=("a/b",)),
    Case("symlink-then-dir", [("d", LNK, "{OUT}/dir"), ("d", DIR), ("d/x", REG, "y")], [],
         expect=("d", "d/x")),
    Case("missing-parents", [("p/q/r", REG, "x"), ("p/s", REG, "y")], [],
         expect=("p/q/r", "p/s")),
    Case("duplicate-file", [("a", REG, "one"), ("a", REG, "two")], [], expect=("a",)),
    Case("file-then-parent-file", [("a", REG, "x"), ("a/b", REG, "y")],
         ["warning: a/b: a is not a directory; not extracted", _delayed(1)], expect=("a",)),
    Case("root-is-symlink", [(".", LNK, "{OUT}/dir"), ("x", REG, "y")],
         ["warning: .: the root of the image is not a directory; not extracted", _delayed(1)],
         expect=("x",)),
]


def _fill(value, out):
    if isinstance(value, str):
        return value.replace("{OUT}", os.fspath(out))
    return value


def _arena(tmp_path):
    """tmp_path/outside: a sentinel tree a naive extractor would change."""
    out = tmp_path / "outside"
    (out / "dir").mkdir(parents=True)
    (out / "f").write_bytes(b"original\n")
    (out / "dir" / "keep").write_bytes(b"keep me\n")
    return out


def _snapshot(tmp_path, *targets):
    """Every name under tmp_path but the targets: type, mode, size, times,
    inode and contents (a symlink's target)."""
    snap: dict = {}
    for root, dirs, files in os.walk(tmp_path):
        if root == os.fspath(tmp_path):
            dirs[:] = [d for d in dirs if d not in targets]
            files = [f for f in files if f not in targets]
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = f.read()
            else:
                content = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            snap[os.path.relpath(path, tmp_path)] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                                     st.st_ino, content)
    snap["/rootesc"] = os.path.lexists("/rootesc")
    return snap


def _tree(top):
    recs = scan_host(top)
    recs.pop(b"")
    return recs


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cpio_escape(case, tmp_path):
    out = _arena(tmp_path)
    archive = tmp_path / "hostile.cpio"
    members = [tuple(_fill(v, out) for v in m) for m in case.members]
    archive.write_bytes(newc(members))
    for name in ("x_bsdtar", "x_rumpfs"):
        (tmp_path / name).mkdir()
        for link, target in case.pre_symlinks.items():
            os.symlink(_fill(target, out), tmp_path / name / link)
    before = _snapshot(tmp_path, "x_bsdtar", "x_rumpfs")

    ref = subprocess.run(["bsdtar", "-xf", archive], cwd=tmp_path / "x_bsdtar",
                         capture_output=True)
    assert _snapshot(tmp_path, "x_bsdtar", "x_rumpfs") == before, "bsdtar escaped"
    res = run_rumpfs("extract", archive, tmp_path / "x_rumpfs", check=False)
    assert _snapshot(tmp_path, "x_bsdtar", "x_rumpfs") == before

    want = [f"rumpfs: {line}".replace("{ARCHIVE}", os.fspath(archive)) for line in case.lines]
    assert res.err.splitlines() == want
    assert res.returncode == (1 if case.lines else 0)
    if ref.returncode != 0:
        assert res.returncode != 0, f"bsdtar refused: {ref.stderr!r}"
    ours, theirs = _tree(tmp_path / "x_rumpfs"), _tree(tmp_path / "x_bsdtar")
    assert set(ours) <= set(theirs), "rumpfs made paths bsdtar refused"
    for path, rec in ours.items():
        other = theirs[path]
        if os.fsdecode(path) in case.more_data:
            assert rec["type"] == other["type"] and other["size"] == 0 and rec["size"] > 0
            continue
        assert (rec["type"], rec["sha256"], rec["target"]) == \
            (other["type"], other["sha256"], other["target"]), path
    assert {os.fsencode(p) for p in case.expect} <= set(ours)


@pytest.mark.parametrize("names, lines", [
    (["-s", ",^,../,", "victim"], ["warning: ../victim: path contains '..'; not extracted"]),
    (["-s", ",^,a/../../,", "victim"],
     ["warning: a/../../victim: path contains '..'; not extracted"]),
], ids=["dotdot", "dotdot-middle"])
def test_bsdtar_made_escape(names, lines, tmp_path):
    """Archives bsdtar itself writes with hostile names (-s rewrites them)."""
    out = _arena(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim").write_bytes(b"PWN")
    archive = tmp_path / "made.cpio"
    subprocess.run(["bsdtar", "--format", "newc", "-cf", archive, *names], cwd=src, check=True)
    (tmp_path / "deep" / "x").mkdir(parents=True)
    before = _snapshot(tmp_path, "deep")
    res = run_rumpfs("extract", archive, tmp_path / "deep" / "x", check=False)
    assert _snapshot(tmp_path, "deep") == before
    assert os.listdir(tmp_path / "deep") == ["x"] and os.listdir(tmp_path / "deep" / "x") == []
    assert res.returncode == 1
    assert res.err.splitlines() == [f"rumpfs: {line}" for line in lines] + \
        [f"rumpfs: error: {archive}: 1 entry not extracted (see the warnings above)"]
    assert (out / "f").read_bytes() == b"original\n"


# --- FFS ----------------------------------------------------------------------


def _patched_ffs(tmp_path, build, renames, options=()):
    """An image rumpfs wrote of the tree ``build`` makes, with directory
    entry names replaced by same-length ones (each old name occurs once)."""
    src = tmp_path / "src"
    src.mkdir()
    build(src)
    image = tmp_path / "image.img"
    run_rumpfs("pack", "--no-stubetc", *options, src, "-o", image)
    data = image.read_bytes()
    for old, new in renames:
        assert len(old) == len(new) and data.count(old) == 1, old
        data = data.replace(old, new)
    image.write_bytes(data)
    return image


def _dissect_names(image) -> set[str]:
    from dissect.ffs import FFS
    with open(image, "rb") as f:
        return {n for n in FFS(f).root.listdir() if n not in (".", "..")}


def _file(name, data=b"PWN"):
    def build(src):
        (src / name).write_bytes(data)
    return build


def _ffs_hardlinks(src):
    (src / "HLA").write_bytes(b"PWN")
    os.link(src / "HLA", src / "HLB")


def _ffs_dup(first):
    def build(src):
        (src / first).mkdir()
        (src / first / "pwned").write_bytes(b"PWN")
        os.symlink(os.fspath(src.parent / "outside" / "dir"), src / "dd")
    return build


#: A name with a '/' cannot stand in an FFS directory: the reader refuses such an
#: image as corrupt (one error line, nothing outside touched), where a name
#: that is only '..' or a duplicate is left to extract's rules.
FFS_CASES = [
    ("dotdot", _file("EEEEEEE"), [(b"EEEEEEE", b"../../x")], ["../../x"],
     ["error: {IMAGE}: corrupt directory entry at byte 24: name '../../x' has a '/' or a NUL byte"], ()),
    ("dotdot-deep", _file("R" * 31), [(b"R" * 31, b"../../../../../../../../rootesc")],
     ["../../../../../../../../rootesc"],
     ["error: {IMAGE}: corrupt directory entry at byte 24: "
      "name '../../../../../../../../rootesc' has a '/' or a NUL byte"], ()),
    ("slash-dotdot", _file("QQQQQQQQQ"), [(b"QQQQQQQQQ", b"a/../../y")], ["a/../../y"],
     ["error: {IMAGE}: corrupt directory entry at byte 24: name 'a/../../y' has a '/' or a NUL byte"], ()),
    ("hardlink-first-dotdot", _ffs_hardlinks, [(b"HLA", b"../")], ["../", "HLB"],
     ["error: {IMAGE}: corrupt directory entry at byte 24: name '../' has a '/' or a NUL byte"], ()),
    # The directory sorts first: then the symlink replaces it and its file
    # would go through the symlink.
    ("dup-dir-then-symlink", _ffs_dup("dc"), [(b"\x02dc\0", b"\x02dd\0")], ["dd"],
     ["warning: dd/pwned: cannot extract through symlink dd; not extracted"], ()),
    # The symlink sorts first: the directory replaces it.
    ("dup-symlink-then-dir", _ffs_dup("de"), [(b"\x02de\0", b"\x02dd\0")], ["dd"], [],
     ("dd/pwned",)),
]


#: UFS1 and UFS2 little-endian (dissect.ffs reads them), UFS1 big-endian.
FFS_VARIANTS = {"ufs1": (), "ufs2": ("--format", "ffs2"), "ufs1-be": ("--endian", "big")}


@pytest.mark.parametrize("variant", FFS_VARIANTS)
@pytest.mark.parametrize("build, renames, names, lines, expect",
                         [c[1:] for c in FFS_CASES], ids=[c[0] for c in FFS_CASES])
def test_ffs_escape(build, renames, names, lines, expect, variant, tmp_path):
    out = _arena(tmp_path)
    image = _patched_ffs(tmp_path, build, renames, FFS_VARIANTS[variant])
    if not variant.endswith("-be"):
        assert set(names) <= _dissect_names(image)
    before = _snapshot(tmp_path, "x", "src")
    res = run_rumpfs("extract", image, tmp_path / "x", check=False)
    assert _snapshot(tmp_path, "x", "src") == before
    assert (out / "f").read_bytes() == b"original\n"
    want = [f"rumpfs: {line}".replace("{IMAGE}", os.fspath(image)) for line in lines]
    if lines and not lines[0].startswith("error:"):
        n = len(lines)
        want.append(f"rumpfs: error: {image}: {n} entr{'y' if n == 1 else 'ies'} not extracted "
                    f"(see the warnings above)")
    assert res.err.splitlines() == want
    assert res.returncode == (1 if lines else 0)
    got = _tree(tmp_path / "x")
    for path in expect:
        assert got[os.fsencode(path)]["sha256"] is not None


# --- seeded random hostile archives -------------------------------------------


def _random_archive(rng, out) -> list:
    """Members drawn from names and targets that climb, loop and point out."""
    parts = ["a", "b", "..", ".", "", "c"]
    targets = ["..", ".", "a", "a/b", "../..", os.fspath(out), os.fspath(out / "f"),
               os.fspath(out / "dir"), "b/../.."]  # all within tmp_path, even if followed
    members = []
    for _ in range(rng.randint(1, 12)):
        name = "/".join(rng.choice(parts) for _ in range(rng.randint(1, 4)))
        kind = rng.random()
        ino = rng.randint(1, 4)
        if kind < 0.35:
            members.append((name or ".", REG, rng.choice(["", "PWN"]), ino, rng.randint(1, 3)))
        elif kind < 0.6:
            members.append((name or ".", DIR))
        elif kind < 0.9:
            members.append((name or ".", LNK, rng.choice(targets)))
        else:
            members.append((name or ".", 0o010644, "", ino))  # FIFO
    return members


@pytest.mark.parametrize("seed, count", [
    (1717, 300),
    pytest.param(18, 10_000, marks=pytest.mark.slow),
])
def test_random_hostile_archives_stay_inside(seed, count, tmp_path):
    """Seeded archives, extracted in process into the same target in turn
    (so earlier ones leave symlinks behind): nothing outside changes, and
    the only exception is the one-line error."""
    rng = random.Random(seed)
    out = _arena(tmp_path)
    target = tmp_path / "deep" / "x"
    target.mkdir(parents=True)
    archive = tmp_path / "r.cpio"
    before = None
    for trial in range(count):
        archive.write_bytes(newc(_random_archive(rng, out)))
        if before is None:
            before = _snapshot(tmp_path, "deep", "r.cpio")
        warnings: list[str] = []
        with open(archive, "rb") as f:
            try:
                extract(CpioReader(f), os.fspath(target), warn=warnings.append)
            except RumpfsError as e:
                assert "not extracted" in str(e) and warnings, trial
        assert all("\n" not in w for w in warnings)
        after = _snapshot(tmp_path, "deep", "r.cpio")
        assert after == before, trial
        assert os.listdir(tmp_path / "deep") == ["x"], trial
