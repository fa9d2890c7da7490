"""The quick parser of ``rumpfs pack`` (rumpfs.cli.parse_pack_quickly).

Whenever it answers, it answers what argparse would; everything else (help,
errors, unusual forms) goes to argparse unchanged; and a pack with ordinary
arguments loads neither argparse nor re.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from rumpfs import cli

SLOW_MODULES = ("argparse", "re", "enum", "gettext")


@pytest.fixture(scope="module")
def parser():
    return cli.build_parser()


@pytest.fixture(scope="module")
def declared():
    """The recorded pack options: the declaration both parsers are built from."""
    recorder = cli.ArgumentRecorder()
    cli.add_pack_arguments(recorder)
    return [d for d in recorder.arguments if d.option_strings]


def argparse_values(parser, argv) -> dict | None:
    """vars() of argparse's result, or None when argparse refuses argv."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(parser.parse_args(argv))
        except SystemExit:
            return None


def quick_values(argv) -> dict | None:
    args = cli.parse_pack_quickly(argv)
    return None if args is None else vars(args)


# -- equivalence ---------------------------------------------------------------------

def sample_values(declared) -> list[str]:
    """Values for an option: good ones, and some its type or choices refuse."""
    if declared.choices is not None:
        return [*declared.choices, "bogus"]
    if declared.type is int:
        return ["0", "9", "nine"]
    if declared.type is cli.parse_timestamp:
        return ["1700000000", "2020-01-01T00:00:00Z", "2020-01-01", "yesterday"]
    if declared.type is not None:  # --align
        return ["4096", "0x1000", "big"]
    return ["x", "a b", "dir/file.txt", "k=v", "", "pack"]


def option_words(rng, declared) -> list[str]:
    """One use of an option, in any spelling argparse accepts (and a few it
    does not: the quick parser must leave those to it)."""
    flag = rng.choice(declared.option_strings)
    if not declared.takes_value():
        return [flag]
    value = rng.choice(sample_values(declared))
    if flag.startswith("--") and rng.random() < 0.4:
        return [f"{flag}={value}"]
    return [flag, value]


def random_argv(rng, declared) -> list[str]:
    options = []
    for _ in range(rng.randrange(0, 7)):
        options.append(option_words(rng, rng.choice(declared)))
    if rng.random() < 0.95:  # -o is required: sometimes left out
        options.append([rng.choice(["-o", "--output"]), rng.choice(["out.cpio", "root.o", "x.img"])])
    if rng.random() < 0.3:  # an append option repeated
        appended = [d for d in declared if d.kind == "append"]
        options += [option_words(rng, rng.choice(appended)) for _ in range(3)]
    rng.shuffle(options)
    sources = [rng.choice(["src", "rootfs/", "www:/var/www", "a b", "pack"])
               for _ in range(rng.randrange(0, 4))]
    if rng.random() < 0.8:  # the sources together, before, between or after the options
        at = rng.randrange(0, len(options) + 1)
        options.insert(at, sources)
    else:  # the sources spread among the options
        for word in sources:
            options.insert(rng.randrange(0, len(options) + 1), [word])
    return ["pack"] + [word for words in options for word in words]


def test_quick_parser_agrees_with_argparse(parser, declared):
    rng = random.Random(20261122)
    accepted = 0
    used = set()
    for _ in range(4000):
        argv = random_argv(rng, declared)
        quick = quick_values(argv)
        if quick is None:
            continue
        assert quick == argparse_values(parser, argv), argv
        accepted += 1
        used.update(word.partition("=")[0] for word in argv if word.startswith("-"))
    # It must actually answer: for most command lines, and with every option.
    assert accepted > 1000
    assert used == {flag for d in declared for flag in d.option_strings}


def test_every_option_alone_in_both_spellings(parser, declared):
    for d in declared:
        for flag in d.option_strings:
            for value in sample_values(d) if d.takes_value() else [None]:
                if value is None:
                    forms = [[flag]]
                else:
                    forms = [[flag, value]] + ([[f"{flag}={value}"]] if flag.startswith("--") else [])
                for words in forms:
                    for argv in (["pack", "src", *words, "-o", "out"],
                                 ["pack", *words, "-o", "out", "src", "other"]):
                        quick = quick_values(argv)
                        if quick is not None:
                            assert quick == argparse_values(parser, argv), argv


def declare_examples(p):
    """Declarations the pack options do not have (yet), as argparse takes them."""
    p.add_argument("words", nargs="*")
    p.set_defaults(level="5")  # before the argument: becomes its default
    p.add_argument("--level", type=int)
    p.add_argument("--size", type=int, default="7")  # argparse converts a string default
    p.add_argument("-q", "--quiet", dest="loud", action="store_false")
    group = p.add_argument_group("group").add_mutually_exclusive_group()
    group.add_argument("--on", dest="switch", action="store_true", default=None)
    group.add_argument("--off", dest="switch", action="store_false")
    p.add_argument("--tag", action="append", choices=["a", "b"])
    p.add_argument("--name", default="x")
    p.set_defaults(func=len, name="y")  # after: changes the argument's default


def test_recorder_parses_other_declarations_like_argparse():
    import argparse
    parser = argparse.ArgumentParser(prog="example")
    declare_examples(parser)
    recorder = cli.ArgumentRecorder()
    declare_examples(recorder)
    words = ["w", "--level", "3", "--size=9", "-q", "--quiet", "--on", "--off", "--tag", "a",
             "--tag=b", "--tag", "c", "--name", "n", "--level=x"]
    rng = random.Random(7)
    accepted = 0
    for _ in range(2000):
        args = rng.sample(words, rng.randrange(0, 6))
        values = recorder.parse(args)
        if values is not None:
            assert values == argparse_values(parser, args), args
            accepted += 1
    assert accepted > 200
    assert recorder.parse([]) == {"words": [], "level": 5, "size": 7, "loud": True,
                                  "switch": None, "tag": None, "name": "y", "func": len}


@pytest.mark.parametrize("kw", [
    {"action": "count"}, {"nargs": "+"}, {"action": "store_const", "const": 1},
    {"default": "==SUPPRESS=="}, {"action": "store", "const": 3}, {"type": "int"},
], ids=repr)
def test_declarations_it_does_not_know_leave_everything_to_argparse(kw):
    recorder = cli.ArgumentRecorder()
    recorder.add_argument("words", nargs="*")
    recorder.add_argument("--other", action="store_true")
    recorder.add_argument("--new", **kw)
    assert recorder.parse(["--other", "w"]) is None


COMMON = [
    ["pack", "--no-stubetc", "--no-progress", "--format", "cpio", "DIR", "-o", "OUT"],
    ["pack", "DIR", "-o", "root.o"],
    ["pack", "DIR", "-o", "root.o", "--target", "aarch64"],
    ["pack", "a", "b:/x", "--remove", "/etc/motd", "--spec", "s.txt", "-o", "root.img"],
    ["pack", "rootfs/", "www/:/var/www", "--remove", "/etc/motd", "-o", "root.img"],
    ["pack", "-o", "root.cpio.gz", "rootfs/"],
    ["pack", "-o", "x.cpio", "a", "b"],
    ["pack", "a", "b", "-o", "x.cpio"],
    ["pack", "-o", "x.cpio"],
    ["pack", "--output=x.cpio", "--format=cpio", "--compress=zstd", "--compress-level=3", "src"],
    ["pack", "--timestamp", "2020-01-01T00:00:00Z", "-o", "a.cpio"],
    ["pack", "--timestamp", "0", "--keep-owner", "-v", "src", "-o", "a.img", "--size", "64m"],
    ["pack", "src", "-o", "x.o", "--align", "0x1000", "--no-registry", "--writable", "--name", "root"],
    ["pack", "src", "-o", "x.cpio", "--cpio-variant", "crc", "--no-pwdb", "--config", "c.json"],
    ["pack", "--progress", "--endian", "big", "-f", "ffs2", "src", "-o", "x.img", "--label", "ROOT"],
    ["pack", "--remove", "a", "--remove", "b", "--spec", "s1", "--spec", "s2", "src", "-o", "x"],
]


@pytest.mark.parametrize("argv", COMMON, ids=" ".join)
def test_common_command_lines_are_parsed_quickly(parser, argv):
    quick = quick_values(argv)
    assert quick is not None
    assert quick == argparse_values(parser, argv)
    assert quick["func"] is cli.cmd_pack


# -- fallback to argparse --------------------------------------------------------------

FALLBACK = [
    [],
    ["--help"],
    ["--version"],
    ["pack", "-h"],
    ["pack", "--help"],
    ["pack", "src", "-o", "x", "--help"],
    ["pack", "--version"],
    ["pack", "src", "--bogus", "-o", "x"],
    ["pack", "src", "-o", "x", "-q"],
    ["pack", "src", "--out", "x"],  # abbreviations: argparse takes them
    ["pack", "src", "--outp=x"],
    ["pack", "src", "--no-stub", "-o", "x"],
    ["pack", "src", "--prog", "-o", "x"],
    ["pack", "src"],  # no -o
    ["pack"],
    ["pack", "-o"],
    ["pack", "src", "--remove"],
    ["pack", "-o", "x", "--compress-level", "high"],
    ["pack", "-o", "x", "--timestamp", "yesterday"],
    ["pack", "-o", "x.o", "--align", "big"],
    ["pack", "-o", "x", "--compress", "bzip2"],
    ["pack", "-o", "x", "--compress=bzip2"],
    ["pack", "-o", "x", "--cpio-variant", "odc"],
    ["pack", "-o", "x", "--endian", "middle"],
    ["pack", "-o", "x", "--optimization", "speed"],
    ["pack", "-o", "x", "--progress", "--no-progress"],
    ["pack", "-o", "x.o", "--no-registry", "--registry"],
    ["pack", "-o", "-x"],  # values starting with '-'
    ["pack", "-o", "x", "--compress-level", "-1"],
    ["pack", "-o", "x", "--compress-level=-1"],
    ["pack", "-o", "x", "-"],
    ["pack", "-o", "x", "--", "src"],
    ["pack", "--", "src", "-o", "x"],
    ["pack", "src", "-o", "x", "--"],
    ["pack", "a", "-o", "x", "b"],  # words on both sides of an option
    ["pack", "-o", "x", "a", "--keep-owner", "b"],
    ["pack", "a", "--keep-owner", "b", "-o", "x"],
    ["pack", "-ox", "src"],  # short options with attached values, combined flags
    ["pack", "-o=x", "src"],
    ["pack", "-vo", "x", "src"],
    ["pack", "--keep-owner=yes", "-o", "x"],
    ["pack", "--output=", "src"],
    ["pack", "--spec", "--remove", "x", "-o", "y"],
    ["pack", "-o", "x", "--format"],
    ["ls", "--help"],
    ["wrap", "img", "-o", "x.o"],
    ["stubetc", "dir"],
    ["--version", "pack", "-o", "x"],
    ["PACK", "-o", "x"],
]


@pytest.mark.parametrize("argv", FALLBACK, ids=lambda argv: " ".join(argv) or "(none)")
def test_unusual_command_lines_are_left_to_argparse(argv):
    assert cli.parse_pack_quickly(argv) is None


@pytest.fixture
def keep_sigterm():
    """main() sets a SIGTERM handler: put the test process's back."""
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)


def outcome(call, capsys):
    """(exit status, stdout, stderr) of a call that may exit like argparse."""
    try:
        status = call()
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize("argv", [a for a in FALLBACK if a[:1] in ([], ["pack"], ["--help"], ["--version"])],
                         ids=lambda argv: " ".join(argv) or "(none)")
def test_main_prints_what_argparse_prints(argv, capsys, monkeypatch, keep_sigterm):
    # Packing is not the point: record what cmd_pack gets instead.
    packed = []
    monkeypatch.setattr(cli, "cmd_pack", lambda args: packed.append(vars(args)) or 0)
    from_main = outcome(lambda: cli.main(argv), capsys)

    def from_argparse():
        args = cli.build_parser().parse_args(argv)
        packed.append(vars(args))
        return 0

    assert from_main == outcome(from_argparse, capsys)
    if packed:  # argparse took it: cmd_pack got argparse's arguments
        assert len(packed) == 2 and packed[0] == packed[1]
    else:  # help, version or an error
        assert from_main[1].startswith(("usage: rumpfs", "rumpfs ")) or from_main[2].startswith("usage:")


def test_main_uses_the_quick_parser(monkeypatch, keep_sigterm):
    packed = []
    monkeypatch.setattr(cli, "cmd_pack", lambda args: packed.append(args) or 0)
    monkeypatch.setattr(cli, "build_parser", lambda: pytest.fail("argparse was built"))
    assert cli.main(["pack", "src", "-o", "x.cpio", "--remove", "/etc/motd"]) == 0
    assert isinstance(packed[0], cli.Arguments)
    assert packed[0].remove == ["/etc/motd"] and packed[0].output == "x.cpio"


# -- start-up --------------------------------------------------------------------------

def imported_after_pack(tmp_path, *options) -> list[str]:
    """The SLOW_MODULES a ``rumpfs pack`` in a fresh interpreter imports."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "hello").write_text("hi\n")
    argv = ["pack", str(src), *options]
    code = ("import sys; from rumpfs.cli import main; "
            f"rc = main({argv!r}); "
            f"print(rc, sorted(m for m in {SLOW_MODULES!r} if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("SOURCE_DATE_EPOCH", None)
    # -S: the site-packages .pth files of some environments import re themselves.
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    rc, _, modules = proc.stdout.strip().partition(" ")
    assert rc == "0", proc
    return eval(modules)


@pytest.mark.parametrize("options", [
    ["--no-stubetc", "-o", "x.cpio"],
    ["--no-stubetc", "--no-progress", "--format", "cpio", "-o", "x.cpio"],
    ["--format", "ffs", "-o", "x.img"],
    ["-o", "root.o"],
], ids=" ".join)
def test_pack_imports_no_argparse_nor_re(tmp_path, options):
    assert imported_after_pack(tmp_path, *options) == []
