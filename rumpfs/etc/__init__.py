"""Generated /etc content: password databases and the launch configuration.

:func:`finish` runs once every layer and the reproducibility policy are
applied.  From the final ``/etc/master.passwd`` it generates what NetBSD's
``pwd_mkdb`` would: ``/etc/pwd.db`` and ``/etc/spwd.db`` (Berkeley DB 1.85
hash files in the target's byte order, see :mod:`rumpfs.etc.db185`) and the
V7 ``/etc/passwd``, after checking the file against ``/etc/group``.  With
``--config`` it also places the rumprun JSON configuration at
:data:`rumpfs.etc.config.CONFIG_PATH`.
"""

from __future__ import annotations

import os
import stat

from ..errors import RumpfsError
from ..tree import REG, BytesData, Node, Tree, TreeError, display

# The generators (config, db185, passwd) are imported by the functions that
# use them: the command line imports this package on every run to add its
# options, and most trees have no master.passwd.

#: The files the databases are generated from (image paths).
MASTER_PASSWD = "/etc/master.passwd"
GROUP = "/etc/group"
#: Generated files: image path -> permission bits.
PWD_DB = ("etc/pwd.db", 0o644)
SPWD_DB = ("etc/spwd.db", 0o600)
PASSWD = ("etc/passwd", 0o644)
MASTER_PASSWD_MODE = 0o600
CONFIG_MODE = 0o644


def read_node(node: Node, path: str) -> bytes:
    """The whole content of a regular file of the tree (small /etc files)."""
    data = node.data
    if data is None:
        return b""
    if isinstance(data, BytesData):
        return data.data
    try:
        with data.open() as f:
            return f.read(data.size) if data.offset else f.read()
    except OSError as e:
        raise RumpfsError(f"{path}: cannot read {os.fsdecode(data.path)}: {e.strerror}") from None


def _regular(tree: Tree, path: str) -> Node | None:
    node = tree.lookup(path)
    if node is None:
        return None
    if stat.S_IFMT(node.mode) != REG:
        raise RumpfsError(f"{display(path)}: not a regular file in the image (from {node.origin})")
    return node


def _generated(data: bytes, perm: int, like: Node, origin: str) -> Node:
    return Node(REG | perm, 0, 0, like.mtime_ns, atime_ns=like.atime_ns, ctime_ns=like.ctime_ns,
                data=BytesData(data), origin=origin)


def generate_pwdb(tree: Tree, byteorder: str) -> bool:
    """pwd.db, spwd.db and passwd from /etc/master.passwd; False if there is none."""
    master = _regular(tree, MASTER_PASSWD)
    if master is None:
        return False
    from . import db185, passwd  # only now: most trees have no master.passwd

    users = passwd.parse_master_passwd(read_node(master, MASTER_PASSWD))
    group_node = _regular(tree, GROUP)
    groups = None
    if group_node is not None:
        groups = passwd.parse_group(read_node(group_node, GROUP))
    passwd.check_groups(users, groups)

    origin = "generated from /etc/master.passwd"
    for (path, perm), secure in ((PWD_DB, False), (SPWD_DB, True)):
        data = db185.build(passwd.db_pairs(users, byteorder, secure), byteorder)
        tree.put(path, _generated(data, perm, master, origin))
    tree.put(PASSWD[0], _generated(passwd.passwd_file(users), PASSWD[1], master, origin))
    master.mode = REG | MASTER_PASSWD_MODE
    master.uid = master.gid = 0
    return True


def place_config(tree: Tree, path: str, policy) -> None:
    """The validated configuration file at CONFIG_PATH, timed like any host file."""
    from ..sources import apply_policy
    from . import config as _config

    data = _config.load(path)
    st = os.stat(path)
    node = Node(REG | CONFIG_MODE, 0, 0, st.st_mtime_ns, data=BytesData(data),
                origin=f"--config {path}")
    # The same reproducibility rules as every other file (times clamped or set).
    holder = Tree()
    holder.root.children[b"config"] = node
    apply_policy(holder, policy)
    node.uid = node.gid = 0
    tree.put(_config.CONFIG_PATH, node)


def finish(tree, opts, byteorder: str, policy) -> None:
    """Complete /etc once every layer is applied (called by ``rumpfs.api``)."""
    try:
        if getattr(opts, "config", None) is not None:
            place_config(tree, opts.config, policy)
        if getattr(opts, "pwdb", True):
            generate_pwdb(tree, byteorder)
    except TreeError as e:      # e.g. /etc is not a directory in the image
        raise RumpfsError(str(e)) from None
