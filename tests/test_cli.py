"""The command line and the options: templates carry what their kernel reads,
makefs's --endian spellings, -q, compression levels at their limits, the
entry point, and unknown option names in the Python API.

The judges are tools nobody here wrote: objcopy and readelf take the
section out of the object, GNU cpio and bsdtar read the archive, gzip/xz/
zstd/lz4 decompress it, file(1) reads the FFS superblock's byte order,
dissect.ffs reads FFS.  (The bad inputs are in tests/test_bad_input.py.)
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest
from conftest import ROOT, require_tool, run_rumpfs
from treecompare import assert_same, normalized, scan_host

from rumpfs import api

#: The Debian package of each compressor a test runs.
TOOL_PACKAGES = {"gzip": "gzip", "xz": "xz-utils", "zstd": "zstd", "lz4": "lz4"}

EPOCH = "1700000000"


@pytest.fixture
def src(tmp_path):
    """A small tree: a file, a directory with a file, a symlink."""
    top = tmp_path / "src"
    (top / "bin").mkdir(parents=True)
    (top / "bin" / "init").write_bytes(b"#!/bin/sh\necho booted\n" * 50)
    (top / "bin" / "init").chmod(0o755)
    (top / "hello").write_text("hello\n")
    (top / "sh").symlink_to("bin/init")
    for path in (top / "bin" / "init", top / "hello", top / "sh", top / "bin", top):
        os.utime(path, (1600000000, 1600000000), follow_symlinks=False)
    return top


def pack(*args):
    return run_rumpfs("pack", "--no-stubetc", "--no-progress", *args, env={"SOURCE_DATE_EPOCH": EPOCH})


def section(obj, name, dest):
    """The bytes of section ``name`` of ``obj``, as objcopy takes them out."""
    subprocess.run(["objcopy", "-O", "binary", f"--only-section={name}", obj, dest], check=True)
    return dest.read_bytes()


def extracted_by_gnu_cpio(archive: bytes, dest) -> dict:
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=archive,
                   cwd=dest, check=True, capture_output=True)
    return scan_host(dest)


def without_dir_mtimes(records):
    # GNU cpio sets a directory's time before it fills it, so the kernel bumps
    # it, and it never sets a symlink's time (as in tests/test_cpio.py).
    return {p: dict(r, mtime=None) if r["type"] in ("dir", "symlink") else r
            for p, r in records.items()}


def assert_holds(src, extracted):
    """``extracted`` (what GNU cpio made of the archive) is ``src``, file by file."""
    expected = without_dir_mtimes(normalized(scan_host(src)))
    actual = without_dir_mtimes(extracted)
    if os.geteuid() != 0:  # GNU cpio run by a user cannot give files to uid 0
        for r in list(expected.values()) + list(actual.values()):
            r["uid"] = r["gid"] = None
    assert_same(expected, actual)


# -- templates carry what their kernel reads -------------------------------------------------

def test_linux_initramfs_template_holds_a_cpio_archive(src, tmp_path):
    obj = tmp_path / "initramfs.o"
    res = pack(src, "-o", obj, "--template", "linux-initramfs", "-v")
    assert res.out.startswith(f"{obj}: cpio in elf, 5 entries, image ")
    symbols = subprocess.run(["readelf", "-sW", obj], capture_output=True, text=True,
                             check=True).stdout
    assert "__initramfs_start" in symbols and "__initramfs_size" in symbols
    archive = section(obj, ".init.ramfs", tmp_path / "ramfs.bin")
    assert archive.startswith(b"070701")
    assert_holds(src, extracted_by_gnu_cpio(archive, tmp_path / "out"))


@pytest.mark.parametrize("method,tool", [("gzip", "gzip"), ("xz", "xz"), ("zstd", "zstd"),
                                         ("lz4", "lz4")])
def test_linux_initramfs_template_compresses_when_asked(src, tmp_path, method, tool):
    require_tool(tool, TOOL_PACKAGES[tool])
    obj = tmp_path / "initramfs.o"
    res = pack(src, "-o", obj, "--template", "linux-initramfs", "--compress", method, "-v")
    assert res.out.startswith(f"{obj}: cpio in elf, 5 entries, image ")
    packed = section(obj, ".init.ramfs", tmp_path / "ramfs.bin")
    archive = subprocess.run([tool, "-dc"], input=packed, capture_output=True, check=True).stdout
    assert_holds(src, extracted_by_gnu_cpio(archive, tmp_path / "out"))


@pytest.mark.parametrize("method", ["gzip", "lz4"])
def test_rumpfs_reads_an_object_holding_a_compressed_cpio(src, tmp_path, method):
    obj = tmp_path / "initramfs.o"
    pack(src, "-o", obj, "--template", "linux-initramfs", "--compress", method)
    assert run_rumpfs("cat", obj, "hello").stdout == (src / "hello").read_bytes()
    assert run_rumpfs("check", obj).out == f"{obj}: cpio: clean\n"
    assert "format: cpio" in run_rumpfs("info", obj).out
    listed = run_rumpfs("ls", obj).out.splitlines()
    assert sorted(line.split()[-1] for line in listed if "->" not in line) == \
        ["/", "/bin", "/bin/init", "/hello"]
    run_rumpfs("extract", obj, tmp_path / "out")
    expected = normalized(scan_host(src))
    actual = scan_host(tmp_path / "out")
    expected[b""]["mtime"] = actual[b""]["mtime"] = None  # the target directory's own
    if os.geteuid() != 0:
        for r in list(expected.values()) + list(actual.values()):
            r["uid"] = r["gid"] = None
    assert_same(expected, actual)


def test_unikraft_einitrd_template_holds_a_cpio_archive(src, tmp_path):
    obj = tmp_path / "einitrd.o"
    res = pack(src, "-o", obj, "--template", "unikraft-einitrd", "-v")
    assert res.out.startswith(f"{obj}: cpio in elf, 5 entries, image ")
    data = section(obj, ".rodata", tmp_path / "rodata.bin")
    listing = subprocess.run(["bsdtar", "-tf", "-"], input=data, capture_output=True,
                             check=True).stdout.decode().split()
    assert sorted(listing) == [".", "bin", "bin/init", "hello", "sh"]


def test_freebsd_mfs_template_holds_ffs(src, tmp_path):
    from ffs_testlib import dissect_records
    obj = tmp_path / "mfs.o"
    res = pack(src, "-o", obj, "--template", "freebsd-mfs", "-v")
    assert res.out.startswith(f"{obj}: ffs in elf, 5 entries, image ")
    image = tmp_path / "mfs.img"
    section(obj, "mfs", image)
    assert_same(normalized(scan_host(src)), dissect_records(image))


def test_a_toml_template_names_the_formats_its_kernel_reads(src, tmp_path):
    toml = tmp_path / "initrd.toml"
    toml.write_text('[template]\nbase = "rumpfs"\nformats = ["cpio"]\n')
    obj = tmp_path / "x.o"
    res = pack(src, "-o", obj, "--template", toml, "-v")
    assert res.out.startswith(f"{obj}: cpio in elf, ")
    assert section(obj, ".rodata.rumpfs.root", tmp_path / "img.bin").startswith(b"070701")


# -- other options ---------------------------------------------------------------------------

@pytest.mark.parametrize("spelling,order", [("big", "big"), ("be", "big"), ("4321", "big"),
                                            ("little", "little"), ("le", "little"),
                                            ("1234", "little"), ("BE", "big")])
def test_endian_takes_makefs_spellings(src, tmp_path, spelling, order):
    image = tmp_path / "x.img"
    pack(src, "-o", image, "--endian", spelling)
    described = subprocess.run(["file", "-b", image], capture_output=True, text=True,
                               check=True).stdout
    assert "Unix Fast File system" in described and f"({order}-endian)" in described


def test_quiet_silences_warnings_and_changes_no_byte(src, tmp_path):
    loud, quiet = tmp_path / "loud.cpio", tmp_path / "quiet.cpio"
    res = pack(src, "-o", loud, "--remove", "/nothing/here")
    assert res.err == "rumpfs: warning: --remove /nothing/here: matches nothing in the image\n"
    res = pack(src, "-o", quiet, "--remove", "/nothing/here", "-q")
    assert res.err == ""
    assert quiet.read_bytes() == loud.read_bytes()


@pytest.mark.parametrize("method,level,tool", [
    ("gzip", 1, "gzip"), ("gzip", 9, "gzip"), ("xz", 0, "xz"), ("xz", 9, "xz"),
    ("zstd", 1, "zstd"), ("zstd", 22, "zstd"), ("lz4", 1, "lz4"), ("lz4", 12, "lz4")])
def test_compression_levels_at_their_limits(src, tmp_path, method, level, tool):
    require_tool(tool, TOOL_PACKAGES[tool])
    suffix = {"gzip": "gz", "xz": "xz", "zstd": "zst", "lz4": "lz4"}[method]
    out = tmp_path / f"x.cpio.{suffix}"
    pack(src, "-o", out, "--compress-level", str(level))
    archive = subprocess.run([tool, "-dc", out], capture_output=True, check=True).stdout
    assert_holds(src, extracted_by_gnu_cpio(archive, tmp_path / "out"))


def test_wrap_records_a_format_named_in_any_case(src, tmp_path):
    image = tmp_path / "x.cpio"
    pack(src, "-o", image)
    obj = tmp_path / "w.o"
    run_rumpfs("wrap", image, "-o", obj, "--format", "NEWC")
    assert "cpio" in run_rumpfs("info", obj).out


def test_help_and_version(tmp_path):
    res = run_rumpfs("pack", "--help")
    assert res.out.startswith("usage: rumpfs pack [SRC ...] -o OUT [options]\n")
    assert "-q, --quiet" in res.out and "--endian ORDER" in res.out
    assert run_rumpfs("--version").out.startswith("rumpfs ")


def test_the_rumpfs_command_is_an_entry_point():
    try:
        scripts = importlib.metadata.entry_points(group="console_scripts")
    except TypeError:  # pragma: no cover - Python 3.9
        scripts = importlib.metadata.entry_points().get("console_scripts", [])
    ours = [e for e in scripts if e.name == "rumpfs"]
    assert ours, "rumpfs is not installed as a package: run pip install -e '.[test]' (make test-deps)"
    assert ours[0].value == "rumpfs.cli:main"
    script = os.path.join(os.path.dirname(sys.executable), "rumpfs")
    if os.path.exists(script):
        proc = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
        assert proc.stdout.startswith("rumpfs ")


# -- the Python API refuses option names it does not know -------------------------------------

def test_api_unknown_container_option(src, tmp_path):
    out = tmp_path / "x.o"
    with pytest.raises(ValueError, match="container_options: unknown option\\(s\\) 'targte'"):
        api.pack([src], out, container_options={"targte": "aarch64"})
    assert os.listdir(tmp_path) == ["src"]


def test_api_unknown_format_option(src, tmp_path):
    with pytest.raises(ValueError, match="format_options: unknown option\\(s\\) 'sise'"):
        api.pack([src], tmp_path / "x.img", format_options={"sise": "1m"})
    assert os.listdir(tmp_path) == ["src"]


def test_api_unknown_pack_option(src, tmp_path):
    with pytest.raises(TypeError, match="stubtec"):
        api.pack([src], tmp_path / "x.img", stubtec=False)
    assert os.listdir(tmp_path) == ["src"]


def test_api_contradiction_is_a_value_error(src, tmp_path):
    with pytest.raises(ValueError, match="--compress xz: contradicts the output name"):
        api.pack([src], tmp_path / "x.cpio.gz", compress="xz")
    assert os.listdir(tmp_path) == ["src"]


def test_help_names_every_default_etc_file():
    """pack --help says which /etc files are defaults: exactly those in stubetc/."""
    import re
    text = " ".join(run_rumpfs("pack", "--help").out.split())
    listed = re.search(r"the default /etc holds (.*?) and the account files (.*?)\. ", text)
    assert listed, text
    names = set(listed.group(1).split(", ")) | set(listed.group(2).split(" and "))
    assert names == set(os.listdir(ROOT / "stubetc"))
