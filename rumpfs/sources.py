"""Layered sources: what goes into the tree, applied in order, later wins.

The layers are the default ``/etc`` (stubetc), the user's host directories
(optionally grafted at a path inside the image), and removals.  Once every
layer is applied, each layer may settle what it left (:meth:`Layer.settle`:
the default ``/etc`` takes its account files back when the user brought
their own), and :func:`apply_policy` makes the tree reproducible: owners
0:0 unless asked to keep them, times clamped to SOURCE_DATE_EPOCH or set by
``--timestamp``.
"""

from __future__ import annotations

import os
import stat
import sys

from .errors import RumpfsError
from .hostwalk import walk_host_dir
from .tree import DIR, REG, HostData, Node, Tree, TreeError, display, split_path


class Layer:
    """Something that changes the tree when applied.

    Layers are plain classes (not dataclasses: that module alone would cost
    every run more start-up than packing a small tree); ``FIELDS`` names
    the attributes that make two layers equal.
    """

    FIELDS: tuple = ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.FIELDS)

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{getattr(self, f)!r}" for f in self.FIELDS) + ")"

    def apply(self, tree: Tree, policy: "Policy | None" = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def settle(self, tree: Tree) -> None:
        """Called once every layer is applied, before the policy."""

    def close(self) -> None:
        """Called once the image is written, or the pack failed: let go of
        what the layer kept for the copies (an archive's spool file)."""


class HostDirectory(Layer):
    """A directory of the build host, laid over the image at ``dest``."""

    FIELDS = ("path", "dest")

    def __init__(self, path: str, dest: bytes = b""):
        self.path = path
        self.dest = dest

    @classmethod
    def parse(cls, spec: str) -> "HostDirectory":
        """``DIR`` or ``DIR:/dest`` (a ``:`` followed by ``/`` grafts)."""
        host, sep, dest = spec.rpartition(":/")
        if sep and host:
            return cls(host, os.fsencode("/" + dest))
        return cls(spec)

    def describe(self) -> str:
        return f"{self.path}" + (f" -> {display(self.dest)}" if self.dest.strip(b"/") else "")

    def root_node(self, keep_owner: bool) -> Node:
        """The node of the source directory itself, its entries not listed yet.

        A symlink given as the source (a Nix ``result`` link) is followed:
        the directory it names is the layer, with that directory's metadata.
        Symlinks inside the directory are never followed.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if os.path.islink(self.path):
                raise RumpfsError(f"{self.path}: source is a symlink to "
                                  f"{os.readlink(self.path)!r}, which does not exist") from None
            raise RumpfsError(f"{self.path}: source does not exist") from None
        except OSError as e:
            raise RumpfsError(f"{self.path}: cannot read source: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise RumpfsError(f"{self.path}: source is not a directory")
        root = node_from_stat(os.fsencode(self.path), st)
        if not keep_owner:
            root.uid = root.gid = 0
        return root

    def apply(self, tree: Tree, policy: "Policy | None" = None) -> None:
        keep_owner = policy.keep_owner if policy is not None else True
        root = self.root_node(keep_owner)
        walk_host_dir(os.fsencode(self.path), root, keep_owner)
        try:
            dest = split_path(self.dest)
            if dest:
                existing = tree.lookup(b"/".join(dest))
                if existing is not None and not existing.is_dir:
                    raise RumpfsError(f"{self.path}: graft target {display(self.dest)} "
                                      f"is not a directory in the image (from {existing.describe_origin()})")
                tree.mkdirs(b"/".join(dest[:-1]))
            tree.put(b"/".join(dest), root)
        except TreeError as e:
            raise RumpfsError(f"{self.path}: {e}") from None


class Remove(Layer):
    """Remove every path matching a glob pattern (``--remove``)."""

    FIELDS = ("pattern",)

    def __init__(self, pattern: str):
        self.pattern = pattern

    def describe(self) -> str:
        return f"remove {self.pattern}"

    def apply(self, tree: Tree, policy: "Policy | None" = None) -> None:
        try:
            paths = tree.glob(self.pattern)
        except TreeError as e:
            raise RumpfsError(str(e)) from None
        if not paths:
            warn(f"--remove {self.pattern}: matches nothing in the image")
        for path in paths:
            if not split_path(path):
                raise RumpfsError(f"--remove {self.pattern}: the root cannot be removed")
            tree.remove(path)


def stubetc_path() -> str:
    """The default /etc tree shipped with the package."""
    here = os.path.dirname(os.path.realpath(__file__))
    for candidate in (os.path.join(here, "stubetc"), os.path.join(os.path.dirname(here), "stubetc")):
        if os.path.isdir(candidate):
            return candidate
    raise RumpfsError("the default /etc (stubetc) is missing from this installation")


#: Where the default /etc goes (the files generated at the end go there too).
ETC = b"/etc"


def stubetc_layer() -> HostDirectory:
    return StubEtc(stubetc_path(), ETC)


#: The default /etc's account files: left out when the user's layers bring
#: account files of their own (a Linux-style /etc) but no master.passwd.
STUB_ACCOUNT_FILES = (b"master.passwd", b"group")
#: Files of a user's layers that make the default account files step aside.
USER_ACCOUNT_FILES = (b"passwd", b"group", b"shadow", b"gshadow", b"pwd.db", b"spwd.db")
MASTER_PASSWD = b"master.passwd"


class StubEtc(HostDirectory):
    """The default minimal /etc; owners are always 0:0 whoever installed it.

    It is the first layer, so every later layer replaces its files by name.
    Its account files are a set: when the final tree holds a user's
    ``passwd``, ``group``, ``shadow``, ``gshadow``, ``pwd.db`` or
    ``spwd.db`` and no user's ``master.passwd``, the default
    ``master.passwd`` and ``group`` are taken out again (:meth:`settle`), so
    no database is generated over the user's files and the user's groups
    are not checked against NetBSD's users.
    """

    def __init__(self, path: str, dest: bytes = b""):
        super().__init__(path, dest)
        #: name -> the node this layer placed in /etc, to tell it from a user's.
        self.placed: dict[bytes, Node] = {}

    def describe(self) -> str:
        return "default /etc (stubetc)"

    def apply(self, tree: Tree, policy: "Policy | None" = None) -> None:
        before = tree.lookup(self.dest)
        super().apply(tree, policy)
        etc = tree.lookup(self.dest)
        self.placed = {name: etc.children[name] for name in STUB_ACCOUNT_FILES
                       if name in etc.children}
        for node in Tree(etc).iter_nodes():
            node.uid = node.gid = 0
            if node.is_dir:
                node.mode = DIR | 0o755
            elif stat.S_IFMT(node.mode) == REG:
                node.mode = REG | 0o644
        if before is None:
            etc.origin = "stubetc"

    def settle(self, tree: Tree) -> None:
        etc = tree.lookup(self.dest)
        if etc is None or not etc.is_dir:
            return
        children = etc.children

        def users(name: bytes) -> bool:
            node = children.get(name)
            return node is not None and node is not self.placed.get(name)

        if users(MASTER_PASSWD) or not any(users(name) for name in USER_ACCOUNT_FILES):
            return
        for name, node in self.placed.items():
            if children.get(name) is node:
                del children[name]


#: Set by ``-q``/``--quiet``: warnings are not printed.
QUIET = False
#: Every warning of this process, in order (``pack --json`` reports them, even with -q).
WARNINGS: list[str] = []


def warn(message: str) -> None:
    WARNINGS.append(message)
    if not QUIET:
        print(f"rumpfs: warning: {message}", file=sys.stderr)


def node_from_stat(path: bytes, st: os.stat_result, target: bytes | None = None) -> Node:
    kind = stat.S_IFMT(st.st_mode)
    data = None
    if kind == REG:
        data = HostData(path, st.st_size, sparse_hint=st.st_blocks * 512 < st.st_size,
                        mtime_ns=st.st_mtime_ns)
    return Node(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_atime_ns,
                st.st_ctime_ns, st.st_rdev, target, data, os.fsdecode(path))


class Policy:
    """What makes the output reproducible."""

    __slots__ = ("keep_owner", "timestamp", "clamp")

    def __init__(self, keep_owner: bool = False, timestamp: int | None = None,
                 clamp: int | None = None):
        self.keep_owner = keep_owner
        #: Set every time to this (seconds since the epoch), ``--timestamp``.
        self.timestamp = timestamp
        #: Clamp times to this (SOURCE_DATE_EPOCH).
        self.clamp = clamp

    @classmethod
    def from_environment(cls, keep_owner: bool = False, timestamp: int | None = None,
                         environ=os.environ) -> "Policy":
        clamp = None
        sde = environ.get("SOURCE_DATE_EPOCH")
        if sde is not None and sde.strip() != "":
            try:
                clamp = int(sde)
            except ValueError:
                raise RumpfsError(f"SOURCE_DATE_EPOCH={sde!r}: not a whole number of seconds") from None
            if clamp < 0:
                raise RumpfsError(f"SOURCE_DATE_EPOCH={sde!r}: negative")
        return cls(keep_owner, timestamp, clamp)


def apply_policy(tree: Tree, policy: Policy) -> None:
    """Times: set (--timestamp) or clamped (SOURCE_DATE_EPOCH); owners were
    settled by the layers (host owners only with --keep-owner)."""
    settle_times(tree.iter_nodes(unique=False), policy)


def settle_times(nodes, policy: Policy) -> None:
    """:func:`apply_policy`'s times for some nodes (a tree listed while it
    is written settles each directory's entries as they come)."""
    fixed = None if policy.timestamp is None else policy.timestamp * 1_000_000_000
    clamp = None if policy.clamp is None else policy.clamp * 1_000_000_000
    for node in nodes:
        if fixed is not None:
            node.mtime_ns = fixed
        elif clamp is not None and node.mtime_ns > clamp:
            node.mtime_ns = clamp
        # atime and ctime say who touched the host tree when, not what it holds.
        node.atime_ns = node.ctime_ns = node.mtime_ns


def build_tree(layers: list[Layer], policy: Policy | None = None) -> Tree:
    """Apply the layers in order and then the reproducibility policy."""
    policy = policy or Policy()
    tree = Tree()
    for layer in layers:
        layer.apply(tree, policy)
    for layer in layers:
        layer.settle(tree)
    apply_policy(tree, policy)
    return tree
