"""master.passwd and group parsing, and pwd_mkdb's database records.

``master.passwd(5)`` lines have ten fields::

    name:password:uid:gid:class:change:expire:gecos:home_dir:shell

NetBSD's ``pwd_mkdb`` stores each entry three times, under ``'1' + name``,
``'2' + line number`` and ``'3' + uid`` (integers as 32 bits in the
database's byte order), plus ``"VERSION\\0"`` holding 1 (64-bit ``time_t``).
The record is the ``struct passwd`` with its strings inline::

    name\\0 passwd\\0 uid:u32 gid:u32 change:i64 class\\0 gecos\\0 dir\\0 shell\\0
    expire:i64 flags:u32

``passwd`` is ``*`` in pwd.db (readable by all) and the real hash in spwd.db;
``flags`` marks fields left empty (``_PASSWORD_NOCHG`` ...).  libc finds entry
``n`` under ``'2' + n`` while enumerating, and stops at the first gap, so the
file may hold no comment or blank line (pwd_mkdb refuses them as well).

``group(5)`` lines have four fields, ``name:password:gid:members``; libc reads
that file as text, so it only needs to be well formed and to define every
user's primary group.
"""

from __future__ import annotations

import struct

from ..errors import RumpfsError
from ..record import Record
from ..tree import ID_MAX
from . import GROUP, MASTER_PASSWD  # the source files, declared by the package

#: Key prefixes (``_PW_KEYBYNAME``, ``_PW_KEYBYNUM``, ``_PW_KEYBYUID`` of pwd.h).
KEYBYNAME = b"1"
KEYBYNUM = b"2"
KEYBYUID = b"3"
#: ``VERSION`` record: 1 means change/expire are 64-bit (NetBSD >= 6).
VERSION_KEY = b"VERSION\0"
PWD_VERSION = 1
#: The password pwd.db shows instead of the hash.
INSECURE_PASSWD = b"*"
#: Flags for fields left empty (pwd.h).
PASSWORD_NOUID = 0x01
PASSWORD_NOGID = 0x02
PASSWORD_NOCHG = 0x04
PASSWORD_NOEXP = 0x08
#: Limits: pwd_mkdb reads lines into a LINE_MAX buffer; NetBSD LOGIN_NAME_MAX is
#: 17 with the NUL; uid_t and gid_t are 32-bit unsigned.
LINE_MAX = 2048
LOGIN_NAME_MAX = 16
MASTER_FIELDS = 10
GROUP_FIELDS = 4


class User(Record):
    """One master.passwd entry."""

    __slots__ = ("line", "name", "passwd", "uid", "gid", "pw_class", "change", "expire",
                 "gecos", "dir", "shell", "flags")

    def __init__(self, line: int, name: bytes, passwd: bytes, uid: int, gid: int,
                 pw_class: bytes, change: int, expire: int, gecos: bytes, dir: bytes,
                 shell: bytes, flags: int = 0):
        self.line = line
        self.name = name
        self.passwd = passwd
        self.uid = uid
        self.gid = gid
        self.pw_class = pw_class
        self.change = change
        self.expire = expire
        self.gecos = gecos
        self.dir = dir
        self.shell = shell
        self.flags = flags


class Group(Record):
    """One group entry."""

    __slots__ = ("line", "name", "passwd", "gid", "members")

    def __init__(self, line: int, name: bytes, passwd: bytes, gid: int, members: list):
        self.line = line
        self.name = name
        self.passwd = passwd
        self.gid = gid
        self.members = members


def _show(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def _lines(data: bytes, path: str, what: str):
    """(line number, line) for each line; blank and comment lines are errors."""
    text = data[:-1] if data.endswith(b"\n") else data
    if not text:
        return
    for number, line in enumerate(text.split(b"\n"), 1):
        where = f"{path}:{number}"
        if len(line) >= LINE_MAX:
            raise RumpfsError(f"{where}: line is {len(line)} bytes, longer than {LINE_MAX - 1}")
        if not line.strip():
            raise RumpfsError(f"{where}: empty line (every line must be {what})")
        if line.startswith(b"#"):
            raise RumpfsError(f"{where}: comment line (every line must be {what}; "
                              f"libc and pwd_mkdb have no comments in this file)")
        yield number, line


def _number(text: bytes, where: str, field: str, low: int, high: int) -> int:
    if not text.isdigit() and not (low < 0 and text[:1] == b"-" and text[1:].isdigit()):
        raise RumpfsError(f"{where}: {field} {_show(text)!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise RumpfsError(f"{where}: {field} {value} is out of range ({low}..{high})")
    return value


def parse_master_passwd(data: bytes, path: str = MASTER_PASSWD) -> list[User]:
    """Every entry, checked as pwd_mkdb's ``pw_scan`` does, plus duplicates."""
    users: list[User] = []
    names: dict[bytes, int] = {}
    uids: dict[int, int] = {}
    for number, line in _lines(data, path, "a user entry"):
        where = f"{path}:{number}"
        fields = line.split(b":")
        if len(fields) != MASTER_FIELDS:
            raise RumpfsError(f"{where}: {len(fields)} fields, expected {MASTER_FIELDS} "
                              f"(name:password:uid:gid:class:change:expire:gecos:home:shell)")
        name, passwd, uid, gid, pw_class, change, expire, gecos, home, shell = fields
        if not name:
            raise RumpfsError(f"{where}: empty user name")
        if name[:1] in (b"+", b"-"):
            raise RumpfsError(f"{where}: NIS entry {_show(name)!r} is not supported")
        if len(name) > LOGIN_NAME_MAX:
            raise RumpfsError(f"{where}: user name {_show(name)!r} is {len(name)} bytes, "
                              f"longer than {LOGIN_NAME_MAX}")
        if any(c <= 0x20 or c == 0x7F for c in name):
            raise RumpfsError(f"{where}: user name {_show(name)!r} contains a space "
                              f"or control character")
        if not uid:
            raise RumpfsError(f"{where}: user {_show(name)!r} has no uid")
        if not gid:
            raise RumpfsError(f"{where}: user {_show(name)!r} has no gid")
        user = User(
            line=number, name=name, passwd=passwd,
            uid=_number(uid, where, "uid", 0, ID_MAX),
            gid=_number(gid, where, "gid", 0, ID_MAX),
            pw_class=pw_class,
            change=_number(change, where, "change time", -(1 << 63), (1 << 63) - 1) if change else 0,
            expire=_number(expire, where, "expire time", -(1 << 63), (1 << 63) - 1) if expire else 0,
            gecos=gecos, dir=home, shell=shell,
            flags=(0 if change else PASSWORD_NOCHG) | (0 if expire else PASSWORD_NOEXP))
        if name == b"root" and user.uid != 0:
            raise RumpfsError(f"{where}: root has uid {user.uid}; root's uid must be 0")
        if name in names:
            raise RumpfsError(f"{where}: duplicate user name {_show(name)!r} "
                              f"(also on line {names[name]})")
        if user.uid in uids:
            raise RumpfsError(f"{where}: duplicate uid {user.uid} (also on line {uids[user.uid]})")
        names[name] = number
        uids[user.uid] = number
        users.append(user)
    return users


def parse_group(data: bytes, path: str = GROUP) -> list[Group]:
    groups: list[Group] = []
    names: dict[bytes, int] = {}
    for number, line in _lines(data, path, "a group entry"):
        where = f"{path}:{number}"
        fields = line.split(b":")
        if len(fields) != GROUP_FIELDS:
            raise RumpfsError(f"{where}: {len(fields)} fields, expected {GROUP_FIELDS} "
                              f"(name:password:gid:members)")
        name, passwd, gid, members = fields
        if not name:
            raise RumpfsError(f"{where}: empty group name")
        if name[:1] in (b"+", b"-"):
            raise RumpfsError(f"{where}: NIS entry {_show(name)!r} is not supported")
        if name in names:
            raise RumpfsError(f"{where}: duplicate group name {_show(name)!r} "
                              f"(also on line {names[name]})")
        names[name] = number
        groups.append(Group(number, name, passwd, _number(gid, where, "gid", 0, ID_MAX),
                            [m for m in members.split(b",") if m]))
    return groups


def check_groups(users: list[User], groups: list[Group] | None,
                 path: str = MASTER_PASSWD, group_path: str = GROUP) -> None:
    """Every user's primary gid must be a group (``None``: there is no group file)."""
    gids = {g.gid for g in groups or ()}
    for user in users:
        if user.gid not in gids:
            missing = "" if groups is not None else f" (the image has no {group_path})"
            raise RumpfsError(f"{path}:{user.line}: gid {user.gid} of user {_show(user.name)!r} "
                              f"is not defined in {group_path}{missing}")


# -- pwd_mkdb records ------------------------------------------------------------

def _ints(byteorder: str) -> tuple[str, str]:
    e = "<" if byteorder == "little" else ">"
    return e + "I", e + "q"


def encode_record(user: User, passwd: bytes, byteorder: str) -> bytes:
    """The data stored under each of the user's three keys."""
    u32, i64 = _ints(byteorder)
    return b"".join((
        user.name, b"\0", passwd, b"\0",
        struct.pack(u32, user.uid), struct.pack(u32, user.gid), struct.pack(i64, user.change),
        user.pw_class, b"\0", user.gecos, b"\0", user.dir, b"\0", user.shell, b"\0",
        struct.pack(i64, user.expire), struct.pack(u32, user.flags),
    ))


def decode_record(data: bytes, byteorder: str) -> dict:
    """The fields of a record (for tests and ``rumpfs cat``-style inspection)."""
    u32, i64 = _ints(byteorder)
    name, passwd, rest = data.split(b"\0", 2)
    uid, gid = struct.unpack_from(u32[0] + "II", rest)
    (change,) = struct.unpack_from(i64, rest, 8)
    pw_class, gecos, home, shell, tail = rest[16:].split(b"\0", 4)
    (expire,) = struct.unpack_from(i64, tail)
    (flags,) = struct.unpack_from(u32, tail, 8)
    if len(tail) != 12:
        raise ValueError(f"record has {len(tail) - 12} trailing bytes")
    return dict(name=name, passwd=passwd, uid=uid, gid=gid, change=change, pw_class=pw_class,
                gecos=gecos, dir=home, shell=shell, expire=expire, flags=flags)


def db_pairs(users: list[User], byteorder: str, secure: bool):
    """pwd_mkdb's key/data pairs, in its insertion order."""
    u32, _ = _ints(byteorder)
    yield VERSION_KEY, struct.pack(u32, PWD_VERSION)
    for user in users:
        record = encode_record(user, user.passwd if secure else INSECURE_PASSWD, byteorder)
        yield KEYBYNAME + user.name, record
        yield KEYBYNUM + struct.pack(u32, user.line), record
        yield KEYBYUID + struct.pack(u32, user.uid), record


def passwd_file(users: list[User]) -> bytes:
    """The V7-format /etc/passwd (``pwd_mkdb -p``): no hashes, no class or times."""
    return b"".join(
        b"%s:*:%d:%d:%s:%s:%s\n" % (u.name, u.uid, u.gid, u.gecos, u.dir, u.shell)
        for u in users)
