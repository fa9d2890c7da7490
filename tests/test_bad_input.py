"""A catalogue of bad inputs: options, specs, configs, sources and outputs.

Each row runs the command line twice: once where the output does not exist
and once over an existing output.  Both times the exit status is 1, stderr
is exactly the one expected line (no traceback, no usage dump), nothing is
written (no output, no temporary file), and the existing output keeps its
bytes.  The expected lines are written out here, not taken from the code.
docs/options.md states the rules these rows follow.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile

import pytest
from conftest import ROOT, run_rumpfs

#: What an existing output holds before each failed run.
OLD = b"an older output\n"

TARGETS = ("x86_64, i386, aarch64, aarch64_be, arm, riscv64, riscv32, ppc64le, ppc64, ppc, mips, "
           "mipsel, mips64el, mips64, s390x, sparc64, loongarch64")
WRAP_FORMATS = "raw, ffs, ffs1, ufs1, ffs2, ufs2, cpio, newc, iso, iso9660, cd9660, fat"
NAME_RULE = "not a C identifier of at most 31 characters (letters, digits, _; not starting with a digit)"
NO_COMPRESSION = "nothing is compressed (give --compress or a compressed output name)"
OBJECTS = "only for an object output (.o, .S, .s, .c)"

# (id, output name, arguments, the error line after "rumpfs: error: ").
# In arguments and messages {src} is a source directory, {d} the directory
# of the inputs below, {out} the output path.
ROWS = [
    # -- the parser's own errors --------------------------------------------------------
    ("no-output", None, ["pack", "{src}"],
     "the following arguments are required: -o/--output (see rumpfs pack --help)"),
    ("unknown-option", "x.img", ["pack", "{src}", "--bogus"],
     "unrecognized arguments: --bogus (see rumpfs pack --help)"),
    ("words-after-options", "x.img", ["pack", "{src}", "--no-pwdb", "more"],
     "unrecognized arguments: more (see rumpfs pack --help)"),
    ("level-not-a-number", "x.cpio.gz", ["pack", "{src}", "--compress-level", "high"],
     "argument --compress-level: invalid int value: 'high' (see rumpfs pack --help)"),
    ("progress-both-ways", "x.img", ["pack", "{src}", "--progress", "--no-progress"],
     "argument --no-progress: not allowed with argument --progress (see rumpfs pack --help)"),
    ("quiet-and-verbose", "x.img", ["pack", "{src}", "-q", "-v"],
     "argument -v/--verbose: not allowed with argument -q/--quiet (see rumpfs pack --help)"),
    ("timestamp-words", "x.img", ["pack", "{src}", "--timestamp", "yesterday"],
     "argument --timestamp: 'yesterday': give seconds since the epoch or an ISO 8601 date "
     "(see rumpfs pack --help)"),
    ("timestamp-too-late", "x.img", ["pack", "{src}", "--timestamp", "99999999999"],
     "argument --timestamp: 99999999999: must be from 0 (1970) to 9223372036 (see rumpfs pack --help)"),
    ("timestamp-negative", "x.img", ["pack", "{src}", "--timestamp", "-1"],
     "argument --timestamp: -1: must be from 0 (1970) to 9223372036 (see rumpfs pack --help)"),
    ("endian-middle", "x.img", ["pack", "{src}", "--endian", "middle"],
     "argument --endian: 'middle': give big, be, 4321, little, le, 1234 (see rumpfs pack --help)"),
    ("align-words", "x.o", ["pack", "{src}", "--align", "big"],
     "argument --align: 'big': not a number (see rumpfs pack --help)"),
    ("wrap-format-bogus", "w.o", ["wrap", "{d}/image.cpio", "--format", "bogus"],
     f"argument --format: 'bogus': give {WRAP_FORMATS} (see rumpfs wrap --help)"),
    ("no-command", None, [], "the following arguments are required: COMMAND (see rumpfs --help)"),

    # -- format, output name, --image-format, --compress, template ---------------------------
    ("format-unknown", "x.img", ["pack", "{src}", "--format", "zip"],
     "unknown image format 'zip' (known: cpio, fat, ffs, ffs2, iso)"),
    ("name-says-nothing", "x", ["pack", "{src}"],
     "{out}: cannot tell the image format from the name; give --format (cpio, fat, ffs, ffs2, iso)"),
    ("format-vs-image-format", "x.o", ["pack", "{src}", "--format", "cpio", "--image-format", "ffs"],
     "--format cpio: contradicts --image-format ffs"),
    ("image-format-for-an-image", "x.img", ["pack", "{src}", "--image-format", "cpio"],
     f"--image-format: {OBJECTS}, not {{out}}"),
    ("format-ffs-vs-cpio-name", "x.cpio", ["pack", "{src}", "--format", "ffs"],
     "--format ffs: contradicts the output name {out} (cpio)"),
    ("format-cpio-vs-img-name", "x.img", ["pack", "{src}", "--format", "cpio"],
     "--format cpio: contradicts the output name {out} (ffs)"),
    ("format-iso-vs-fat-name", "x.fat", ["pack", "{src}", "--format", "iso"],
     "--format iso: contradicts the output name {out} (fat)"),
    ("format-ffs2-vs-cpio-xz-name", "x.cpio.xz", ["pack", "{src}", "--format", "ffs2"],
     "--format ffs2: contradicts the output name {out} (cpio)"),
    ("compress-vs-gz-name", "x.cpio.gz", ["pack", "{src}", "--compress", "xz"],
     "--compress xz: contradicts the output name {out} (gzip)"),
    ("compress-none-vs-gz-name", "x.cpio.gz", ["pack", "{src}", "--compress", "none"],
     "--compress none: contradicts the output name {out} (gzip)"),
    ("compress-vs-plain-cpio-name", "x.cpio", ["pack", "{src}", "--compress", "zstd"],
     "--compress zstd: contradicts the output name {out} (an uncompressed cpio; name it {out}.zst)"),
    ("compress-ffs", "x.img", ["pack", "{src}", "--compress", "gzip"],
     "--compress gzip: only cpio images are compressed (the format is ffs)"),
    ("compress-ffs-in-object", "x.o", ["pack", "{src}", "--compress", "lz4"],
     "--compress lz4: only cpio images are compressed (the format is ffs)"),
    ("level-without-compression", "x.cpio", ["pack", "{src}", "--compress-level", "5"],
     f"--compress-level 5: {NO_COMPRESSION}"),
    ("level-gzip-99", "x.cpio.gz", ["pack", "{src}", "--compress-level", "99"],
     "--compress-level 99: gzip levels are 1 to 9"),
    ("level-gzip-0", "x.cpio.gz", ["pack", "{src}", "--compress-level", "0"],
     "--compress-level 0: gzip levels are 1 to 9"),
    ("level-gzip-negative", "x.cpio.gz", ["pack", "{src}", "--compress-level", "-5"],
     "--compress-level -5: gzip levels are 1 to 9"),
    ("level-xz-10", "x.cpio.xz", ["pack", "{src}", "--compress-level", "10"],
     "--compress-level 10: xz levels are 0 to 9"),
    ("level-zstd-23", "x.cpio.zst", ["pack", "{src}", "--compress-level", "23"],
     "--compress-level 23: zstd levels are 1 to 22"),
    ("level-lz4-13", "x.cpio.lz4", ["pack", "{src}", "--compress-level", "13"],
     "--compress-level 13: lz4 levels are 1 to 12"),
    ("initramfs-ffs", "x.o", ["pack", "{src}", "--template", "linux-initramfs", "--format", "ffs"],
     "--template linux-initramfs: its kernel reads cpio images, not ffs"),
    ("einitrd-ffs2", "x.o", ["pack", "{src}", "--template", "unikraft-einitrd", "--image-format", "ffs2"],
     "--template unikraft-einitrd: its kernel reads cpio images, not ffs2"),
    ("freebsd-mfs-cpio", "x.o", ["pack", "{src}", "--template", "freebsd-mfs", "--image-format", "cpio"],
     "--template freebsd-mfs: its kernel reads ffs or ffs2 images, not cpio"),
    ("toml-template-formats", "x.o", ["pack", "{src}", "--template", "{d}/cpio-only.toml", "-f", "ffs"],
     "--template {d}/cpio-only.toml: its kernel reads cpio images, not ffs"),
    ("target-for-cpio", "x.cpio", ["pack", "{src}", "--target", "aarch64"],
     f"--target: {OBJECTS}, not {{out}}"),
    ("template-for-img", "x.img", ["pack", "{src}", "--template", "rumpfs"],
     f"--template: {OBJECTS}, not {{out}}"),
    ("ffs-option-for-cpio", "x.cpio", ["pack", "{src}", "--size", "1m"],
     "--size: not an option of cpio images"),
    ("ffs-option-for-cpio-in-object", "x.o", ["pack", "{src}", "-f", "cpio", "--block-size", "8192"],
     "--block-size: not an option of cpio images"),
    ("cpio-option-for-ffs", "x.img", ["pack", "{src}", "--cpio-variant", "crc"],
     "--cpio-variant: not an option of ffs images"),

    # -- FFS numbers -------------------------------------------------------------------------
    ("size-1e999", "x.img", ["pack", "{src}", "--size", "1.e999"], "--size 1.e999: not a finite size"),
    ("size-negative", "x.img", ["pack", "{src}", "--size", "-5"], "--size -5: must not be negative"),
    ("size-words", "x.img", ["pack", "{src}", "--size", "lots"],
     "--size lots: not a size (bytes, or with a k/m/g/t suffix)"),
    ("size-20t-ufs1", "x.img", ["pack", "{src}", "--size", "20t"],
     "--size 20t: more than the largest UFS1 image rumpfs makes, 2199023254528 bytes (UFS1, "
     "8192-byte blocks, 1024-byte fragments); use --format ffs2 or a larger --block-size"),
    ("size-100t-ufs2", "x.img", ["pack", "{src}", "--size", "100t", "--format", "ffs2"],
     "--size 100t: more than the largest UFS2 image rumpfs makes, 60893988249600 bytes (UFS2, "
     "8192-byte blocks, 1024-byte fragments)"),
    ("min-size-inf", "x.img", ["pack", "{src}", "--min-size", "1.0e999"],
     "--min-size 1.0e999: not a finite size"),
    ("max-size-words", "x.img", ["pack", "{src}", "--max-size", "3x"],
     "--max-size 3x: not a size (bytes, or with a k/m/g/t suffix)"),
    ("free-space-nan", "x.img", ["pack", "{src}", "--free-space", "nan%"],
     "--free-space nan%: must be from 0% to 10000%"),
    ("free-space-inf", "x.img", ["pack", "{src}", "--free-space", "inf%"],
     "--free-space inf%: must be from 0% to 10000%"),
    ("free-space-negative", "x.img", ["pack", "{src}", "--free-space=-1%"],
     "--free-space -1%: must be from 0% to 10000%"),
    ("free-space-20000pc", "x.img", ["pack", "{src}", "--free-space", "20000%"],
     "--free-space 20000%: must be from 0% to 10000%"),
    ("free-space-words", "x.img", ["pack", "{src}", "--free-space", "lots%"],
     "--free-space lots%: not a percentage"),
    ("free-inodes-1e999", "x.img", ["pack", "{src}", "--free-inodes", "1e999%"],
     "--free-inodes 1e999%: must be from 0% to 10000%"),
    ("free-inodes-count", "x.img", ["pack", "{src}", "--free-inodes", "5000000000"],
     "--free-inodes 5000000000: more than 4294967295 inodes (32-bit inode numbers)"),
    ("block-size-0", "x.img", ["pack", "{src}", "--block-size", "0"],
     "--block-size 0: must be a power of two from 4096 to 65536"),
    ("block-size-5000", "x.img", ["pack", "{src}", "--block-size", "5000"],
     "--block-size 5000: must be a power of two from 4096 to 65536"),
    ("block-size-128k", "x.img", ["pack", "{src}", "--block-size", "128k"],
     "--block-size 128k: must be a power of two from 4096 to 65536"),
    ("frag-size-100", "x.img", ["pack", "{src}", "--frag-size", "100"],
     "--frag-size 100: must be a power of two from 1024 to 8192 "
     "(block size 8192, at most 8 fragments a block)"),
    ("density-10", "x.img", ["pack", "{src}", "--density", "10"],
     "--density 10: must be at least the fragment size 1024"),
    ("minfree-100", "x.img", ["pack", "{src}", "--minfree", "100"],
     "--minfree 100: must be 0 to 99 (percent)"),
    ("label-ufs1", "x.img", ["pack", "{src}", "--label", "ROOT"],
     "--label: only UFS2 (--format ffs2) has a volume label"),
    ("label-long", "x.img", ["pack", "{src}", "-f", "ffs2", "--label", "L" * 40],
     f"--label {'L' * 40}: 40 bytes, at most 31 and no NUL"),

    # -- object options ----------------------------------------------------------------------
    ("target-vax", "x.o", ["pack", "{src}", "--target", "vax"], f"unknown target 'vax' (known: {TARGETS})"),
    ("name-digit", "x.o", ["pack", "{src}", "--name", "1st"], f"--name '1st': {NAME_RULE}"),
    ("name-in-asm", "x.S", ["pack", "{src}", "--name", "my.root"], f"--name 'my.root': {NAME_RULE}"),
    ("mount-point-relative", "x.o", ["pack", "{src}", "--mount-point", "srv"],
     "--mount-point 'srv': must be an absolute path"),
    ("template-unknown", "x.o", ["pack", "{src}", "--template", "netbsd"],
     "unknown template 'netbsd' (built in: rumpfs, objcopy, linux-initramfs, unikraft-einitrd, "
     "freebsd-mfs; or a .toml file)"),
    ("template-missing-file", "x.o", ["pack", "{src}", "--template", "{d}/none.toml"],
     "--template {d}/none.toml: no such file"),
    ("align-3", "x.o", ["pack", "{src}", "--align", "3"],
     "template 'rumpfs': align 3 is not a power of two between 1 and 1073741824"),
    ("writable-initramfs", "x.o", ["pack", "{src}", "--template", "linux-initramfs", "--writable"],
     "--writable: template 'linux-initramfs' has no writable section"),
    ("target-and-like", "x.o", ["pack", "{src}", "--target", "arm", "--like", "{d}/image.cpio"],
     "--target and --like exclude each other: give one"),
    ("wrap-format-vs-template", "w.o", ["wrap", "{d}/image.cpio", "--template", "linux-initramfs",
                                        "--format", "ufs2"],
     "--template linux-initramfs: its kernel reads cpio images, not ufs2"),
    ("wrap-output-name", "w.img", ["wrap", "{d}/image.cpio"],
     "{out}: the output of wrap must end in .o, .S, .s, .c"),
    ("wrap-missing-image", "w.o", ["wrap", "{d}/missing.img"], "{d}/missing.img: no such file"),

    # -- spec files --------------------------------------------------------------------------
    ("spec-major", "x.cpio", ["pack", "{src}", "--spec", "{d}/major.spec"],
     "{d}/major.spec:1: major 99999999999 is more than 2147483647"),
    ("spec-major-32-bit", "x.cpio", ["pack", "{src}", "--spec", "{d}/major32.spec"],
     "{d}/major32.spec:1: major 4294967295 is more than 2147483647"),
    ("spec-minor", "x.img", ["pack", "{src}", "--spec", "{d}/minor.spec"],
     "{d}/minor.spec:1: minor 4294967296 is more than 2147483647"),
    # Device numbers os.makedev cannot take (before Python 3.13: a C int).
    ("mtree-device-major", "x.cpio", ["pack", "{src}", "--mtree", "{d}/major.mtree"],
     "{d}/major.mtree:2: device=linux,4294967295,1: device number 4294967295, 1 is beyond "
     "what this host can hold (major and minor at most 2147483647)"),
    ("mtree-device-negative", "x.cpio", ["pack", "{src}", "--mtree", "{d}/negative.mtree"],
     "{d}/negative.mtree:2: device=linux,-1,1: device number -1, 1 is beyond what this host "
     "can hold (major and minor at most 2147483647)"),
    ("tar-device-major", "x.cpio", ["pack", "{d}/device.tar"],
     "{d}/device.tar: member dev/big: device number 1099511627776, 1 is beyond what this host "
     "can hold (major and minor at most 2147483647)"),
    ("cpio-device-major", "x.img", ["pack", "{d}/device.cpio"],
     "{d}/device.cpio: member dev/big: device number 4294967295, 1 is beyond what this host "
     "can hold (major and minor at most 2147483647)"),
    # Archive headers whose numbers would make a reader allocate, seek or
    # loop without end (found by tests/fuzz_sources.py).
    ("spec-nul-location", "x.cpio", ["pack", "{src}", "--spec", "{d}/nul.spec"],
     "{d}/nul.spec:1: the file's location has a NUL byte"),
    ("mtree-nul-contents", "x.cpio", ["pack", "{src}", "--mtree", "{d}/nul.mtree"],
     "{d}/nul.mtree:2: ./b: contents= has a NUL byte"),
    ("tar-negative-size", "x.cpio", ["pack", "{d}/negative.tar"],
     "{d}/negative.tar: offset 0: tar header with a negative size (-1)"),
    ("tar-size-past-the-end", "x.cpio", ["pack", "{d}/past.tar"],
     "{d}/past.tar: member f: truncated: its data ends past the archive's 1536 bytes"),
    ("tar-uid", "x.cpio", ["pack", "{d}/uid.tar"],
     "{d}/uid.tar: member f: uid 1099511627776 is outside 0..4294967295"),
    ("tar-huge-pax-header", "x.cpio", ["pack", "{d}/pax.tar"],
     "{d}/pax.tar: offset 0: extended header of 2097152 bytes (at most 1048576)"),
    ("cpio-signed-size", "x.cpio", ["pack", "{d}/signed.cpio"],
     "{d}/signed.cpio: offset 0: bad cpio header (a field is not hexadecimal)"),
    ("cpio-huge-name", "x.cpio", ["pack", "{d}/name.cpio"],
     "{d}/name.cpio: offset 0: cpio name of 4294967294 bytes (1 to 4096)"),
    ("cpio-huge-symlink", "x.cpio", ["pack", "{d}/symlink.cpio"],
     "{d}/symlink.cpio: member l: symlink target of 4294967295 bytes (at most 4096)"),
    ("spec-uid-cpio", "x.cpio", ["pack", "{src}", "--spec", "{d}/uid.spec"],
     "{d}/uid.spec:1: uid 99999999999 is more than 4294967295"),
    ("spec-gid-ffs", "x.img", ["pack", "{src}", "--spec", "{d}/gid.spec"],
     "{d}/gid.spec:2: gid 4294967296 is more than 4294967295"),
    ("spec-meta-mtime", "x.cpio", ["pack", "{src}", "--spec", "{d}/mtime.spec"],
     "{d}/mtime.spec:1: mtime 99999999999999 is more than 9223372036"),
    ("spec-negative-uid", "x.cpio", ["pack", "{src}", "--spec", "{d}/negative.spec"],
     "{d}/negative.spec:1: uid '-1' is negative"),
    ("spec-unknown-type", "x.cpio", ["pack", "{src}", "--spec", "{d}/blob.spec"],
     "{d}/blob.spec:1: unknown entry type 'blob' (file, dir, nod, slink, pipe, sock, meta)"),
    ("spec-missing", "x.cpio", ["pack", "{src}", "--spec", "{d}/none.spec"],
     "{d}/none.spec: spec file does not exist"),

    # -- --config ------------------------------------------------------------------------------
    ("config-nested", "x.cpio", ["pack", "{src}", "--config", "{d}/nested.json"],
     "{d}/nested.json: arrays and objects nested deeper than 32 levels"),
    ("config-not-json", "x.cpio", ["pack", "{src}", "--config", "{d}/words.json"],
     "{d}/words.json:1:1: invalid JSON: Expecting value"),
    ("config-array", "x.cpio", ["pack", "{src}", "--config", "{d}/array.json"],
     "{d}/array.json: the configuration is a JSON object {{...}}, not an array"),
    ("config-missing", "x.cpio", ["pack", "{src}", "--config", "{d}/none.json"],
     "{d}/none.json: cannot read configuration: No such file or directory"),

    # -- sources and outputs ---------------------------------------------------------------------
    ("source-missing", "x.cpio", ["pack", "{d}/nowhere"], "{d}/nowhere: source does not exist"),
    ("source-is-a-text-file", "x.cpio", ["pack", "{d}/words.json"],
     "{d}/words.json: source is neither a directory nor a tar or cpio archive"),
    ("source-is-a-cut-cpio", "x.cpio", ["pack", "{d}/image.cpio"],
     "{d}/image.cpio: offset 0: cpio name of 0 bytes (1 to 4096)"),
    ("nothing-to-pack", "x.cpio", ["pack", "--no-stubetc"],
     "nothing to pack: give a source directory or drop --no-stubetc"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The source tree and the bad input files the rows name."""
    d = tmp_path_factory.mktemp("inputs")
    src = d / "src"
    src.mkdir()
    (src / "hello").write_text("hello\n")
    files = {
        "image.cpio": "070701" + "0" * 104,
        "major.spec": "nod /dev/x 0600 0 0 c 99999999999 1\n",
        "minor.spec": "nod /dev/x 0600 0 0 b 1 4294967296\n",
        "major32.spec": "nod /dev/x 0600 0 0 c 4294967295 1\n",
        "major.mtree": "#mtree\n./x type=char mode=0600 device=linux,4294967295,1\n",
        "negative.mtree": "#mtree\n./x type=char mode=0600 device=linux,-1,1\n",
        "nul.spec": "file /f {src}/hello\0 0644 0 0\n",
        "nul.mtree": "#mtree\n./b type=file contents=x\\000y\n",
        "uid.spec": "dir /d 0755 99999999999 0\n",
        "gid.spec": "# owners\npipe /p 0644 0 4294967296\n",
        "mtime.spec": "meta /hello mtime=99999999999999\n",
        "negative.spec": "dir /d 0755 -1 0\n",
        "blob.spec": "blob /b\n",
        "nested.json": "[" * 30000,
        "words.json": "launch it\n",
        "array.json": "[]\n",
        "cpio-only.toml": '[template]\nbase = "rumpfs"\nformats = ["cpio"]\n',
    }
    for name, text in files.items():
        (d / name).write_text(text.replace("{src}", str(src)))
    # A character device whose major takes GNU tar's base-256 form.
    big = tarfile.TarInfo("dev/big")
    big.type, big.devmajor, big.devminor = tarfile.CHRTYPE, 1 << 40, 1
    with tarfile.open(d / "device.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(big)
    # A newc archive of one character device, major 0xFFFFFFFF (the field's largest).
    (d / "device.cpio").write_bytes(_newc(b"dev/big", stat.S_IFCHR | 0o600, rdev=(0xFFFFFFFF, 1))
                                    + _newc(b"TRAILER!!!", 0))
    # int() takes "-0000001" as hexadecimal; cpio does not.
    signed = bytearray(_newc(b"f", stat.S_IFREG | 0o644))
    signed[6 + 8 * 6:6 + 8 * 7] = b"-0000001"  # c_filesize
    (d / "signed.cpio").write_bytes(signed)
    (d / "name.cpio").write_bytes(_newc(b"f", stat.S_IFREG | 0o644, namesize=0xFFFFFFFE))
    with open(d / "symlink.cpio", "wb") as f:  # sparse: its 4 GiB "target" all hole
        f.write(_newc(b"l", stat.S_IFLNK | 0o777, filesize=0xFFFFFFFF))
        f.truncate(f.tell() + 0xFFFFFFFF + 3)
        f.seek(0, os.SEEK_END)
        f.write(_newc(b"TRAILER!!!", 0))
    end = bytes(1024)  # the end-of-archive blocks
    (d / "negative.tar").write_bytes(_ustar(b"f", size=b"\xff" * 12) + end)
    (d / "past.tar").write_bytes(_ustar(b"f", size=b"\x80" + (1 << 80).to_bytes(11, "big")) + end)
    (d / "uid.tar").write_bytes(_ustar(b"f", uid=b"\x80" + (1 << 40).to_bytes(7, "big")) + end)
    (d / "pax.tar").write_bytes(_ustar(b"./PaxHeaders/f", typeflag=b"x",
                                       size=b"%011o\0" % (2 << 20)) + end)
    return d


def _newc(name: bytes, mode: int, rdev=(0, 0), filesize: int = 0,
          namesize: int | None = None) -> bytes:
    """One newc member, its data not there (the header's fields as the format lists them)."""
    namesize = len(name) + 1 if namesize is None else namesize
    fields = [0, mode, 0, 0, 1, 0, filesize, 0, 0, *rdev, namesize, 0]
    head = b"070701" + b"".join(b"%08X" % value for value in fields) + name + b"\0"
    return head + bytes(-len(head) % 4)


def _ustar(name: bytes, typeflag: bytes = b"0", size: bytes = b"%011o\0" % 0,
           uid: bytes = b"0000000\0") -> bytes:
    """One ustar header block with these raw fields, its checksum right."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = uid
    block[116:124] = b"0000000\0"
    block[124:136] = size
    block[136:148] = b"%011o\0" % 1_700_000_000
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _fill(text: str, inputs, out) -> str:
    return text.format(src=inputs / "src", d=inputs, out=out)


#: Runs rumpfs.cli.main (what ``python -m rumpfs`` runs) in a fresh
#: interpreter twice: without the output, then over an older output, and
#: reports what the test checks: exit statuses, stderr and the directory.
#: One interpreter for both runs halves the start-up cost of the catalogue.
DRIVER = """
import json, os, sys
from rumpfs.cli import main

work, out, argv = sys.argv[1], sys.argv[2] or None, sys.argv[3:]

def run():
    try:
        status = main(list(argv))
    except SystemExit as e:
        status = e.code
    sys.stderr.write("\\0")
    sys.stderr.flush()
    return status

report = {"listing": [sorted(os.listdir(work))]}
report["status"] = [run()]
report["listing"].append(sorted(os.listdir(work)))
if out:
    with open(out, "wb") as f:
        f.write(%r)
    report["listing"].append(sorted(os.listdir(work)))
    report["status"].append(run())
    report["listing"].append(sorted(os.listdir(work)))
    with open(out, "rb") as f:
        report["old"] = f.read().decode()
print(json.dumps(report))
""" % OLD


@pytest.mark.parametrize("name,out_name,args,message", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input(name, out_name, args, message, inputs, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    out = work / out_name if out_name else None
    argv = [_fill(a, inputs, out) for a in args] + (["-o", str(out)] if out else [])
    expected = f"rumpfs: error: {_fill(message, inputs, out)}\n"

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SOURCE_DATE_EPOCH", None)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(work), str(out or ""), *argv],
                          env=env, cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    errors = proc.stderr.split("\0")[:-1]
    runs = 2 if out else 1
    assert report["status"] == [1] * runs
    # Exactly the one expected line each time: no traceback, no usage dump.
    assert errors == [expected] * runs
    # Nothing written: no output, no temporary file.
    assert report["listing"][0] == report["listing"][1] == []
    if out:
        # Over an existing output: the old bytes stay, nothing else appears.
        assert report["listing"][2] == report["listing"][3] == [out.name]
        assert report["old"] == OLD.decode()


def test_catalogue_is_large_enough():
    assert len(ROWS) >= 60
    assert len({row[0] for row in ROWS}) == len(ROWS)


def _efbig(directory, size: int) -> bool:
    with tempfile.TemporaryFile(dir=directory) as probe:
        try:
            os.truncate(probe.fileno(), size)
        except OSError as e:
            return e.errno == errno.EFBIG
    return False


def test_a_size_the_file_system_cannot_hold_fails_at_once(inputs, tmp_path):
    """--size 20t is within what the UFS2 writer makes, but ext4 files stop
    at 16 TiB: the error comes before any work, not after minutes and GBs."""
    size = 20 << 40
    if not _efbig(tmp_path, size):
        pytest.skip("this file system holds a 20 TiB file")
    out = tmp_path / "x.img"
    res = run_rumpfs("pack", inputs / "src", "--format", "ffs2", "--size", "20t", "-o", out,
                     check=False)
    assert res.returncode == 1
    assert res.err == (f"rumpfs: error: --size: {size} bytes is more than a file in {tmp_path} "
                       f"can hold (EFBIG)\n")
    assert os.listdir(tmp_path) == []


def test_wrap_of_an_image_it_cannot_read(inputs, tmp_path):
    """A permission-denied image is one line naming it (it was a
    PermissionError traceback), with or without --format."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop CAP_DAC_OVERRIDE")
    image = tmp_path / "locked.cpio"
    image.write_bytes((inputs / "image.cpio").read_bytes())
    image.chmod(0)
    for extra in ([], ["--format", "cpio"]):
        res = run_rumpfs("wrap", image, *extra, "-o", tmp_path / "w.o", check=False,
                         no_dac=True)
        assert res.returncode == 1
        assert res.err == f"rumpfs: error: {image}: cannot read: Permission denied\n"
    assert sorted(os.listdir(tmp_path)) == ["locked.cpio"]


def test_stubetc_into_a_full_read_only_or_forbidden_target(tmp_path):
    """stubetc stops with one line naming the path (they were OSError
    tracebacks), and leaves no half-written file."""
    from test_extract import _in_tmpfs

    res = _in_tmpfs(tmp_path, "size=8k",
                    '"$PY" -m rumpfs stubetc "$MNT/e"; echo "rc=$?"; ls -A "$MNT/e"; '
                    'mount -o remount,ro "$MNT" && "$PY" -m rumpfs stubetc "$MNT/ro"; '
                    'echo "rc=$?"')
    mnt = tmp_path / "mnt"
    # group and hosts fit in 8 KiB; master.passwd is the one being written.
    assert res.stderr == (f"rumpfs: error: {mnt}/e/master.passwd: No space left on device\n"
                          f"rumpfs: error: {mnt}/ro: Read-only file system\n")
    assert res.stdout == "rc=1\ngroup\nhosts\nrc=1\n"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    res = run_rumpfs("stubetc", locked / "etc", check=False, no_dac=True)
    assert res.returncode == 1
    assert res.err == f"rumpfs: error: {locked}/etc: Permission denied\n"


@pytest.mark.parametrize("args", [["ls"], ["ls", "--json"], ["cat", "/hello"], ["check"],
                                  ["info"], ["info", "--json"]],
                         ids=["ls", "ls-json", "cat", "check", "info", "info-json"])
def test_standard_output_that_is_full(inputs, tmp_path, args):
    """What a reading command prints into a full standard output (here
    /dev/full, as a full disk under a redirection) is one line naming it
    (they were OSError tracebacks)."""
    image = tmp_path / "ok.cpio"
    run_rumpfs("pack", "--no-stubetc", inputs / "src", "-o", image)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "rumpfs", args[0], image, *args[1:]],
                              env=env, stdout=full, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 1
    assert proc.stderr == "rumpfs: error: standard output: No space left on device\n"


def test_a_name_that_is_not_utf8_is_shown_with_escapes(tmp_path):
    """Host names with bytes that are not UTF-8 print as \\xNN (they printed
    as \\udcNN, Python's surrogates for them); UTF-8 names print as they are."""
    for raw, shown in ((b"caf\xe9.img", "caf\\xe9.img"), ("café.img".encode(), "café.img")):
        missing = os.path.join(os.fsencode(tmp_path), raw)
        res = run_rumpfs("ls", missing, check=False)
        assert res.returncode == 1
        assert res.err == f"rumpfs: error: {tmp_path}/{shown}: no such file\n"
        res = run_rumpfs("pack", "--no-stubetc", missing, "-o", tmp_path / "x.cpio", check=False)
        assert res.returncode == 1 and res.err.count("\n") == 1
        assert f"{tmp_path}/{shown}" in res.err and "\\udc" not in res.err
