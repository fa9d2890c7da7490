"""The rumprun launch configuration baked into the image (``--config FILE.json``).

rumprun reads a JSON object (``doc/config.md`` and
``lib/librumprun_base/config.c`` of rumprun).  Given
``_RUMPRUN_ROOTFSCFG=/etc/rumprun.json`` on its command line it takes the
configuration from that file of the root filesystem instead of the command
line; rumpfs puts it there, at :data:`CONFIG_PATH`.

Checked here, so a mistake shows at pack time rather than as ``errx`` at boot:
UTF-8, JSON syntax (line and column), at most 64 KiB (rumprun's
``CFGMAXSIZE``), no duplicate keys, and the known keys with their shapes::

    cmdline   string                      (command line of the first program)
    rc        [ {bin: string, argv: [string...], runmode: "&" | "|"} ... ]
    env       {NAME: string ...}
    hostname  string
    blk       {DEV: {type: "etfs" | "vnd", path: string}}  (vnd DEVs are vndN)
    mount     {MOUNTPOINT: {source: "blk" | "kernfs" | "tmpfs", path: string,
                            options: {size: "N[kMG]"}}}
    net       {interfaces: {IF: {create: bool, addrs: [ADDR...]}},
               gateways: [{type: "inet" | "inet6", addr: string}...],
               dns: {nameservers: [<= 3 strings], search: [<= 6 strings]}}
    ADDR      {type: "inet", method: "dhcp" | "static", addr: "a.b.c.d/len"}
              {type: "inet6", method: "auto" | "dhcp" | "static", addr: "x::y/len"}

The file is stored byte for byte as given.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re

from ..errors import RumpfsError

#: Where the configuration goes in the image.
CONFIG_PATH = "/etc/rumprun.json"
#: rumprun refuses larger files (``CFGMAXSIZE``).
CFGMAXSIZE = 64 * 1024
#: rumprun's resolver limits (``MAXNS``, ``MAXDNSRCH``).
MAXNS = 3
MAXDNSRCH = 6

TOP_KEYS = ("cmdline", "rc", "env", "hostname", "blk", "mount", "net")


class _Pairs(list):
    """A JSON object as its list of (key, value) pairs, duplicates kept."""


def _type_name(value) -> str:
    if isinstance(value, _Pairs):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return "a number"


class _Checker:
    def __init__(self, path: str):
        self.path = path

    def fail(self, where: str, message: str):
        raise RumpfsError(f"{self.path}: {where or 'top level'}: {message}")

    def expect(self, value, kind, where: str):
        ok = {
            "object": isinstance(value, _Pairs),
            "array": isinstance(value, list) and not isinstance(value, _Pairs),
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
        }[kind]
        if not ok:
            self.fail(where, f"expected {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                             f"got {_type_name(value)}")
        return value

    def fields(self, value, where: str, allowed: dict, required=()) -> dict:
        """An object's members, each checked by ``allowed[key](value, where)``."""
        self.expect(value, "object", where)
        seen = {}
        for key, member in value:
            inner = f"{where}.{key}" if where else key
            if key in seen:
                self.fail(inner, "duplicate key")
            if key not in allowed:
                self.fail(inner, f"unknown key (known: {', '.join(allowed)})")
            allowed[key](member, inner)
            seen[key] = member
        for key in required:
            if key not in seen:
                self.fail(where, f"missing {key!r}")
        return seen

    def string(self, value, where):
        return self.expect(value, "string", where)

    def strings(self, value, where, limit=None):
        self.expect(value, "array", where)
        for i, item in enumerate(value):
            self.string(item, f"{where}[{i}]")
        if limit is not None and len(value) > limit:
            self.fail(where, f"{len(value)} entries, at most {limit}")

    def choice(self, options):
        def check(value, where):
            self.string(value, where)
            if value not in options:
                self.fail(where, f"{value!r} is not one of {', '.join(map(repr, options))}")
        return check

    def mapping(self, value, where, check_member):
        self.expect(value, "object", where)
        seen = set()
        for key, member in value:
            inner = f"{where}.{key}" if where else key
            if key in seen:
                self.fail(inner, "duplicate key")
            seen.add(key)
            check_member(key, member, inner)

    # -- sections ------------------------------------------------------------
    def rc(self, value, where):
        self.expect(value, "array", where)
        for i, entry in enumerate(value):
            self.fields(entry, f"{where}[{i}]", {
                "bin": self.string,
                "argv": self.strings,
                "runmode": self.choice(("&", "|")),
            }, required=("bin",))
        if value and dict(value[-1]).get("runmode") == "|":
            self.fail(f"{where}[{len(value) - 1}].runmode", "the last program cannot pipe its output")

    def env(self, value, where):
        def member(name, item, inner):
            if not name or "=" in name:
                self.fail(inner, "an environment variable name is not empty and has no '='")
            self.string(item, inner)
        self.mapping(value, where, member)

    def blk(self, value, where):
        def member(dev, item, inner):
            got = self.fields(item, inner, {"type": self.choice(("etfs", "vnd")),
                                            "path": self.string}, required=("type", "path"))
            if got["type"] == "vnd" and not re.fullmatch(r"vnd[0-9]+", dev):
                self.fail(inner, "a vnd device is named vnd<unit>, e.g. vnd0")
        self.mapping(value, where, member)

    def mount(self, value, where):
        def size(item, inner):
            self.string(item, inner)
            if not re.fullmatch(r"[0-9]+[bBkKmMgGtT]?", item):
                self.fail(inner, f"{item!r} is not a size such as 1M, 512k or 2G")

        def member(mountpoint, item, inner):
            if not mountpoint.startswith("/"):
                self.fail(inner, "a mount point is an absolute path")
            got = self.fields(item, inner, {
                "source": self.choice(("blk", "kernfs", "tmpfs")),
                "path": self.string,
                "options": lambda v, w: self.fields(v, w, {"size": size}),
            }, required=("source",))
            if got["source"] == "blk" and "path" not in got:
                self.fail(inner, "missing 'path' (the block device) for source 'blk'")
        self.mapping(value, where, member)

    def address(self, value, where):
        got = self.fields(value, where, {
            "type": self.choice(("inet", "inet6")),
            "method": self.string,
            "addr": self.string,
        }, required=("type", "method"))
        methods = {"inet": ("dhcp", "static"), "inet6": ("auto", "dhcp", "static")}[got["type"]]
        self.choice(methods)(got["method"], f"{where}.method")
        if got["method"] == "static":
            if "addr" not in got:
                self.fail(where, "missing 'addr' for method 'static'")
            self.cidr(got["addr"], f"{where}.addr", got["type"])

    def cidr(self, text, where, family):
        if "/" not in text:
            self.fail(where, f"{text!r}: give the address with its prefix length, e.g. 10.0.0.2/24")
        try:
            net = ipaddress.ip_interface(text)
        except ValueError:
            self.fail(where, f"{text!r} is not an address/prefix")
        if (net.version == 4) != (family == "inet"):
            self.fail(where, f"{text!r} is not an {'IPv4' if family == 'inet' else 'IPv6'} address")

    def net(self, value, where):
        def interface(name, item, inner):
            got = self.fields(item, inner, {
                "create": lambda v, w: self.expect(v, "boolean", w),
                "addrs": lambda v, w: self.expect(v, "array", w),
            })
            for i, addr in enumerate(got.get("addrs", [])):
                self.address(addr, f"{inner}.addrs[{i}]")

        def gateway(item, inner):
            got = self.fields(item, inner, {"type": self.choice(("inet", "inet6")),
                                            "addr": self.string}, required=("type", "addr"))
            try:
                ip = ipaddress.ip_address(got["addr"])
            except ValueError:
                self.fail(f"{inner}.addr", f"{got['addr']!r} is not an IP address")
            if (ip.version == 4) != (got["type"] == "inet"):
                self.fail(f"{inner}.addr", f"{got['addr']!r} does not match type {got['type']!r}")

        def gateways(v, w):
            self.expect(v, "array", w)
            for i, item in enumerate(v):
                gateway(item, f"{w}[{i}]")

        self.fields(value, where, {
            "interfaces": lambda v, w: self.mapping(v, w, interface),
            "gateways": gateways,
            "dns": lambda v, w: self.fields(v, w, {
                "nameservers": lambda x, y: self.strings(x, y, MAXNS),
                "search": lambda x, y: self.strings(x, y, MAXDNSRCH),
            }),
        })


#: Deepest nesting of arrays and objects accepted: a rumprun configuration
#: needs 4 levels, and json's decoder recurses once per level.
MAX_DEPTH = 32


def _check_depth(text: str, path: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before the decoder recurses into it."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise RumpfsError(f"{path}: arrays and objects nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def validate(data: bytes, path: str) -> None:
    """Raise :class:`RumpfsError` naming the first problem of a configuration."""
    if len(data) > CFGMAXSIZE:
        raise RumpfsError(f"{path}: {len(data)} bytes, larger than rumprun's limit of {CFGMAXSIZE}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RumpfsError(f"{path}: not UTF-8 (byte {e.start})") from None
    _check_depth(text, path)
    try:
        doc = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as e:
        raise RumpfsError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    check = _Checker(path)
    if not isinstance(doc, _Pairs):
        raise RumpfsError(f"{path}: the configuration is a JSON object {{...}}, "
                          f"not {_type_name(doc)}")
    check.fields(doc, "", {
        "cmdline": check.string,
        "rc": check.rc,
        "env": check.env,
        "hostname": check.string,
        "blk": check.blk,
        "mount": check.mount,
        "net": check.net,
    })


def load(path: str) -> bytes:
    """The configuration file's bytes, validated."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > CFGMAXSIZE:
                raise RumpfsError(f"{path}: {size} bytes, larger than rumprun's limit of {CFGMAXSIZE}")
            data = f.read()
    except OSError as e:
        raise RumpfsError(f"{path}: cannot read configuration: {e.strerror}") from None
    validate(data, path)
    return data
