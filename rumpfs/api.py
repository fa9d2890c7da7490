"""The Python API build systems call; the command line is a thin layer over it.

>>> from rumpfs.api import pack
>>> pack(["rootfs/"], "root.cpio.gz")          # doctest: +SKIP

``pack`` builds the tree from layers (stubetc, host directories, removals),
makes it reproducible, generates what /etc needs, and writes one image --
bare, compressed, or wrapped in a linkable object -- atomically.
"""

from __future__ import annotations

import gc
import os
import sys

from . import formats
from .errors import RumpfsError
from .hostwalk import HostStream
from .output import AtomicOutput, Copier, ImageSink, Progress
from .sources import HostDirectory, Layer, Policy, Remove, build_tree, settle_times, stubetc_layer
from .spec import SpecFile
from .tree import Tree, split_path

#: Output suffixes that ask for a container around the image.
CONTAINER_SUFFIXES = {".o": "elf", ".S": "asm", ".s": "asm", ".c": "c"}

#: Image format inside a container when none is named.
DEFAULT_CONTAINER_FORMAT = "ffs"


class PackOptions:
    """Everything ``rumpfs pack`` can be told, with the command line's defaults.

    ``PackOptions(format="ffs", remove=["/etc/motd"])``: keyword arguments
    name the attributes below; any other name is an error.  (A plain class:
    importing dataclasses would cost every run more than packing a small tree.)
    """

    #: Attribute -> default; a callable default makes a fresh value per instance.
    DEFAULTS = {
        "format": None,
        "stubetc": True,
        "remove": list,
        #: Spec files (gen_init_cpio list format + meta lines), after the directories.
        "spec": list,
        "keep_owner": False,
        "timestamp": None,
        "compress": None,
        "compress_level": None,
        #: 'little' or 'big'; None: the container target's, else the host's.
        "byteorder": None,
        #: Options of the image format (FFS sizes and so on), by name.
        "format_options": dict,
        #: Options of the container (target, template, name, ...), by name.
        "container_options": dict,
        #: Generate pwd.db/spwd.db/passwd from master.passwd.
        "pwdb": True,
        #: A rumprun JSON launch configuration to bake in.
        "config": None,
        "progress": None,
        #: Extra layers applied after the host directories (API users).
        "layers": list,
        #: An mtree(5) spec applied after the spec files (rumpfs.mtree) ...
        "mtree": None,
        #: ... and whether only the entries it lists are kept (makefs -x).
        "mtree_only": False,
        #: Write a Make rule naming every input here (rumpfs.depfile).
        "depfile": None,
        #: Find the inputs for PackResult.inputs even without a depfile (--json).
        "list_inputs": False,
        #: OS/ARCH[/VARIANT] picked from a multi-platform container image;
        #: None: linux and the object's target (the build host's without one).
        "platform": None,
    }

    def __init__(self, **options):
        unknown = options.keys() - self.DEFAULTS.keys()
        if unknown:
            raise TypeError(f"PackOptions: unknown option(s) {', '.join(sorted(unknown))}")
        for name, default in self.DEFAULTS.items():
            if name in options:
                value = options[name]
            else:
                value = default() if callable(default) else default
            setattr(self, name, value)

    def __repr__(self):
        return "PackOptions(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.DEFAULTS) + ")"


class PackResult:
    """What :func:`pack` wrote."""

    __slots__ = ("output", "format", "container", "image_size", "entries", "side_outputs",
                 "inputs", "compression", "warnings")

    def __init__(self, output: str, format: str, container: str | None, image_size: int,
                 entries: int, side_outputs=(), inputs=(), compression: str | None = None,
                 warnings=()):
        self.output = output
        self.format = format
        self.container = container
        self.image_size = image_size
        self.entries = entries
        #: Files written besides ``output`` (``-o root.S`` writes ``root.S.img``).
        self.side_outputs = list(side_outputs)
        #: Every file and directory the pack read (what the depfile names).
        self.inputs = list(inputs)
        self.compression = compression
        #: The warnings printed while packing.
        self.warnings = list(warnings)

    def to_json(self) -> dict:
        """What ``rumpfs pack --json`` prints."""
        return {"output": self.output, "side_outputs": self.side_outputs, "format": self.format,
                "compression": self.compression, "container": self.container,
                "image_size": self.image_size,
                "output_size": os.stat(self.output).st_size, "entries": self.entries,
                "warnings": self.warnings, "inputs": self.inputs}

    def __repr__(self):
        return "PackResult(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def make_layers(sources, opts: PackOptions, target=None) -> list[Layer]:
    layers: list[Layer] = [stubetc_layer()] if opts.stubetc else []
    platform = opts.platform
    if platform is None and target is not None:
        platform = f"linux/{target.name}"
    for src in sources:
        # A SRC that is a file is a tar or cpio archive (rumpfs.archives).
        layers.append(src if isinstance(src, Layer) else source_layer(os.fspath(src), platform))
    layers.extend(SpecFile(s) for s in opts.spec)
    if opts.mtree:
        from .mtree import MtreeSpec
        layers.append(MtreeSpec(os.fspath(opts.mtree), opts.mtree_only))
    layers.extend(opts.layers)
    layers.extend(Remove(p) for p in opts.remove)
    return layers


def source_layer(spec: str, platform: str | None = None) -> Layer:
    """The layer of a SRC argument: a host directory, or a tar or cpio
    archive when it names a file (``X:/dest`` grafts either)."""
    layer = HostDirectory.parse(spec)
    kind, sep, rest = spec.partition(":")
    # oci:DIR[:REF][:/dest], docker-archive:FILE[:/dest] (unless a directory
    # of that name is meant: oci:/dest grafts ./oci when it exists).
    if sep and kind in ("oci", "docker-archive") and not os.path.exists(layer.path):
        from .oci import image_layer  # container images (rumpfs.oci)
        layer = HostDirectory.parse(rest)
        return image_layer(f"{kind}:{layer.path}", layer.dest, platform)
    if os.path.isfile(layer.path):
        from .archives import ArchiveLayer  # tarfile and friends only when needed
        return ArchiveLayer(layer.path, layer.dest)
    return layer


def container_of(output: str) -> str | None:
    return CONTAINER_SUFFIXES.get(os.path.splitext(output)[1])


def choose_format(output: str, opts: PackOptions) -> tuple[str, str | None]:
    """(image format, compression) from the options or the output's name."""
    suffix_format, suffix_comp = formats.from_suffix(output)
    name = opts.format
    if name is None:
        if container_of(output):
            name = opts.container_options.get("image_format") or DEFAULT_CONTAINER_FORMAT
        elif suffix_format:
            name = suffix_format
        else:
            raise RumpfsError(f"{output}: cannot tell the image format from the name; "
                              f"give --format ({', '.join(formats.names())})")
    fmt = formats.get(name)
    comp = opts.compress if opts.compress is not None else suffix_comp
    if comp == "none":
        comp = None
    if comp and fmt.name != "cpio":
        raise RumpfsError(f"--compress {comp}: only cpio images are compressed "
                          f"(the format is {fmt.name})")
    return fmt.name, comp


def prepare_tree(layers: list[Layer], opts: PackOptions, byteorder: str, policy: Policy) -> Tree:
    """Layers applied, policy applied, /etc completed: the tree to write."""
    tree = build_tree(layers, policy)
    finish_etc(tree, opts, byteorder, policy)
    return tree


def listed_while_written(layers: list[Layer], opts: PackOptions, policy: Policy) -> HostStream | None:
    """The tree as a :class:`HostStream` when it is exactly one host
    directory, which a format that can write it while it is being listed
    then writes as it goes; None when layers, /etc work or anything else
    needs the whole tree first."""
    if len(layers) != 1 or type(layers[0]) is not HostDirectory or split_path(layers[0].dest):
        return None
    source = layers[0]
    from . import etc
    if etc.finish_would_change(source.path, opts):
        return None
    tree = Tree()
    tree.root.copy_meta_from(source.root_node(policy.keep_owner))
    settle_times((tree.root,), policy)
    return HostStream(os.fsencode(source.path), tree, policy.keep_owner,
                      lambda nodes: settle_times(nodes, policy))


def finish_etc(tree: Tree, opts: PackOptions, byteorder: str, policy: Policy) -> None:
    """Generated /etc content (password databases, launch config)."""
    from . import etc
    etc.finish(tree, opts, byteorder, policy)


def pack(sources, output: str, opts: PackOptions | None = None, **kw) -> PackResult:
    """Bake ``sources`` into ``output``; keyword arguments fill :class:`PackOptions`."""
    opts = opts or PackOptions(**kw)
    # One object per entry and nothing cyclic: the collector's passes over a
    # large tree cost more than building it.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _pack(sources, output, opts)
    finally:
        if enabled:
            gc.enable()


def _pack(sources, output: str, opts: PackOptions) -> PackResult:
    output = os.fspath(output)
    fmt_name, comp = choose_format(output, opts)
    fmt = formats.get(fmt_name)
    container = container_of(output)

    target = None
    if container:
        from .elf import container as elf_container
        target = elf_container.resolve_target(opts.container_options)
    byteorder = opts.byteorder or (target.byteorder if target else sys.byteorder)
    # Before the copy workers: they report their bytes through it.
    progress = Progress(0, f"rumpfs: {os.path.basename(output)}", enabled=opts.progress)
    from .sources import WARNINGS
    warned = len(WARNINGS)
    inputs: list = []
    try:
        size, count = _pack_into(output, sources, opts, fmt, fmt_name, comp, container, target,
                                 byteorder, progress, inputs)
    except BaseException:
        progress.close(finished=False)  # the error goes on a line of its own
        raise
    progress.close()
    side = [output + ".img"] if container == "asm" else []
    if opts.depfile:
        from .depfile import write_depfile
        write_depfile(os.fspath(opts.depfile), [output, *side], inputs)
    return PackResult(output, fmt_name, container, size, count, side, inputs, comp,
                      WARNINGS[warned:])


def _pack_into(output: str, sources, opts: PackOptions, fmt, fmt_name: str, comp, container,
               target, byteorder: str, progress: Progress, inputs: list) -> tuple[int, int]:
    """(image size, entries) of the image written to ``output``; ``inputs``
    gets every file and directory read (rumpfs.depfile)."""
    with AtomicOutput(output) as out:
        copier = None
        if not comp and container in (None, "elf"):
            # The image goes straight into OUT: its copy workers are forked
            # now, from a process that does not hold the tree yet.
            copier = Copier(out.fd, progress=progress)
            copier.start()
        try:
            policy = Policy.from_environment(opts.keep_owner, opts.timestamp)
            layers = make_layers(sources, opts, target)
            tree = None
            if copier is not None and container is None and fmt.writes_while_listed:
                tree = listed_while_written(layers, opts, policy)
            if tree is None:
                tree = prepare_tree(layers, opts, byteorder, policy)
            if opts.depfile or opts.list_inputs:
                from .depfile import pack_inputs
                inputs += pack_inputs(layers, opts, tree)
            return _write(tree, out, fmt, fmt_name, comp, container, target, byteorder,
                          opts, copier, progress)
        except BaseException:
            if copier is not None:
                copier.abort()
            raise


def _write(tree: Tree, out: AtomicOutput, fmt, fmt_name: str, comp, container, target,
           byteorder: str, opts: PackOptions, copier, progress: Progress) -> tuple[int, int]:
    """Write the image (in its container) into ``out``; returns the image
    size and the tree's entries (counted while the copy workers finish)."""
    entries = []
    if progress.enabled:
        if isinstance(tree, HostStream):
            progress.total = None  # the tree is not listed yet
            tree.when_listed = lambda: setattr(progress, "total",
                                               _data_bytes(tree.tree) + tree.elsewhere_bytes)
        else:
            progress.total = _data_bytes(tree)
    wopts = formats.WriteOptions(byteorder=byteorder, extra=dict(opts.format_options),
                                 progress=progress)

    def write_image(sink: ImageSink) -> int:
        if sink.progress is None:
            sink.progress = progress
            sink.copier.progress = progress
        if copier is not None and sink.fd == copier.fd:
            sink.use_copier(copier)
        try:
            if comp:
                from .compress import CompressingSink
                csink = CompressingSink(sink, comp, opts.compress_level)
                fmt.write(tree, csink, wopts)
                entries.append(tree.count())
                return csink.finish()
            size = fmt.write(tree, sink, wopts)
            entries.append(tree.count())
            sink.finish(size)
            return size
        except BaseException:
            sink.abort()  # no copy worker outlives a failed write
            raise

    if container:
        from .elf import container as elf_container
        size = elf_container.write(container, out, write_image, fmt_name, target, opts, tree)
    else:
        size = write_image(ImageSink(out.fd, 0, progress))
    return size, entries[-1]


def _data_bytes(tree: Tree) -> int:
    return max(1, sum(n.size for n in tree.iter_nodes() if n.data is not None))


def open_image(path: str, offset: int | None = None):
    """A reader for an image file, a compressed cpio, or an object holding one."""
    from .inspect import open_image as _open
    return _open(path, offset)
