"""The Python API build systems call; the command line is a thin layer over it.

>>> from rumpfs.api import pack
>>> pack(["rootfs/"], "root.cpio.gz")          # doctest: +SKIP

``pack`` builds the tree from layers (stubetc, host directories, removals),
makes it reproducible, generates what /etc needs, and writes one image --
bare, compressed, or wrapped in a linkable object -- atomically.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import sys
from dataclasses import dataclass, field

from . import formats
from .errors import OptionError, RumpfsError
from .hostwalk import HostStream, holds_hard_links
from .output import AtomicOutput, Copier, ImageSink, Progress, StreamSink
from .sources import (
    ETC,
    HostDirectory,
    Layer,
    Policy,
    Remove,
    StubEtc,
    apply_policy,
    build_tree,
    settle_times,
    stubetc_layer,
)
from .tree import Tree, split_path

#: Output suffixes that ask for a container around the image.
CONTAINER_SUFFIXES = {".o": "elf", ".S": "asm", ".s": "asm", ".c": "c"}

#: What each container is, for messages.
CONTAINER_NAMES = {"elf": "an ELF object", "asm": "an assembly file", "c": "a C file"}

#: Image format inside a container when none is named.
DEFAULT_CONTAINER_FORMAT = "ffs"


@dataclass
class PackOptions:
    """Everything ``rumpfs pack`` can be told, with the command line's defaults.

    ``PackOptions(format="ffs", remove=["/etc/motd"])``; an unknown keyword is
    a TypeError, and :func:`choose_format` refuses unknown keys in
    ``format_options`` and ``container_options`` and contradictions
    (docs/options.md).
    """

    format: str | None = None
    stubetc: bool = True
    remove: list = field(default_factory=list)
    #: Spec files (gen_init_cpio list format + meta lines), after the directories.
    spec: list = field(default_factory=list)
    keep_owner: bool = False
    timestamp: int | None = None
    compress: str | None = None
    compress_level: int | None = None
    #: Threads that compress (None: $RUMPFS_COMPRESS_WORKERS, else the cores
    #: this process may run on); the output is the same for any count.
    compress_workers: int | None = None
    #: 'little' or 'big'; None: the container target's, else the host's.
    byteorder: str | None = None
    #: Options of the image format (FFS sizes and so on), by name.
    format_options: dict = field(default_factory=dict)
    #: Options of the container (target, template, name, ...), by name.
    container_options: dict = field(default_factory=dict)
    #: Generate pwd.db/spwd.db/passwd from master.passwd.
    pwdb: bool = True
    #: A rumprun JSON launch configuration to bake in.
    config: str | None = None
    progress: bool | None = None
    #: Extra layers applied after the host directories (API users).
    layers: list = field(default_factory=list)
    #: An mtree(5) spec applied after the spec files (rumpfs.mtree) ...
    mtree: str | None = None
    #: ... and whether only the entries it lists are kept (makefs -x).
    mtree_only: bool = False
    #: Write a Make rule naming every input here (rumpfs.depfile).
    depfile: str | None = None
    #: Find the inputs for PackResult.inputs even without a depfile (--json).
    list_inputs: bool = False
    #: OS/ARCH[/VARIANT] picked from a multi-platform container image;
    #: None: linux and the object's target (the build host's without one).
    platform: str | None = None


@dataclass
class PackResult:
    """What :func:`pack` wrote."""

    output: str
    format: str
    container: str | None
    image_size: int
    entries: int
    #: Files written besides ``output`` (``-o root.S`` writes ``root.S.img``).
    side_outputs: list = field(default_factory=list)
    #: Every file and directory the pack read (what the depfile names).
    inputs: list = field(default_factory=list)
    compression: str | None = None
    #: The warnings given while packing.
    warnings: list = field(default_factory=list)
    #: What each container image layer's config says to run
    #: (:class:`rumpfs.oci.ImageConfig`: user, entrypoint, cmd, env, working_dir).
    images: list = field(default_factory=list)

    def to_json(self) -> dict:
        """What ``rumpfs pack --json`` prints."""
        return {"output": self.output, "side_outputs": self.side_outputs, "format": self.format,
                "compression": self.compression, "container": self.container,
                "image_size": self.image_size,
                "output_size": os.stat(self.output).st_size, "entries": self.entries,
                "warnings": self.warnings, "inputs": self.inputs,
                "images": [image.as_json() for image in self.images]}


def make_layers(sources, opts: PackOptions, target=None) -> list[Layer]:
    layers: list[Layer] = [stubetc_layer()] if opts.stubetc else []
    platform = opts.platform
    if platform is None and target is not None:
        platform = f"linux/{target.name}"
    for src in sources:
        # A SRC that is a file is a tar or cpio archive (rumpfs.archives).
        layers.append(src if isinstance(src, Layer) else source_layer(os.fspath(src), platform))
    if opts.spec:
        from .spec import SpecFile  # spec files (rumpfs.spec), like mtree below
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
    """(image format, compression) from the options and the output's name.

    Checks every option before any work: unknown option names, values out
    of range, and options that contradict each other or the output name
    (the rules are listed in docs/options.md) raise :class:`OptionError`.
    """
    co = opts.container_options
    _check_keys("container_options", co, _container_keys())
    container = container_of(output)
    if not container:
        given = [k for k in _container_keys() if co.get(k) is not None]
        if given:
            raise OptionError(f"{_flag(given[0])}: only for an object output "
                              f"({', '.join(CONTAINER_SUFFIXES)}), not {output}")
    if opts.byteorder not in (None, "little", "big"):
        raise OptionError(f"byteorder {opts.byteorder!r}: must be 'little' or 'big'")

    name, fmt = _named_format(opts)
    if container:
        name = _format_for_template(name, fmt, co.get("template"))
    else:
        suffix_format, _ = formats.from_suffix(output)
        if name is None:
            if suffix_format is None:
                raise OptionError(f"{output}: cannot tell the image format from the name; "
                                  f"give --format ({', '.join(formats.names())})")
            name = suffix_format
        elif (suffix_format is not None and _family(name) != _family(suffix_format)
              and not (output.endswith(GENERIC_DISK_SUFFIX) and _family(name) != "cpio")):
            raise OptionError(f"--format {opts.format}: contradicts the output name {output} "
                              f"({suffix_format})")
    fmt = _format(name)
    comp = _compression(output, opts, container, fmt.name)

    _check_keys("format_options", opts.format_options, _format_keys())
    for key in opts.format_options:
        if key not in fmt.option_names:
            raise OptionError(f"{_flag(key)}: not an option of {fmt.name} images")
    requested = fmt.check_options(opts.format_options)
    if requested is not None:
        _check_room(output, *requested)
    return fmt.name, comp


def _flag(key: str) -> str:
    """The command-line option of an API option name."""
    return "--" + key.replace("_", "-")


def _check_keys(what: str, options: dict, known) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OptionError(f"{what}: unknown option(s) {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(sorted(known))})")


def _container_keys() -> tuple[str, ...]:
    from .elf.cli import OPTION_KEYS
    return OPTION_KEYS


def _format_keys() -> set[str]:
    return {key for fmt in formats.available() for key in fmt.option_names}


def _format(name: str):
    try:
        return formats.get(name)
    except RumpfsError as e:
        raise OptionError(str(e)) from None


#: A disk image's name: FFS by default, and any file system named by --format
#: (fat, iso...) fits it too; only a cpio archive contradicts it.
GENERIC_DISK_SUFFIX = ".img"


def _family(name: str) -> str:
    """FFS UFS1 and UFS2 share the .img name."""
    fmt = _format(name).name
    return "ffs" if fmt.startswith("ffs") else fmt


def _named_format(opts: PackOptions):
    """The format --format or --image-format names (they must agree), or (None, None)."""
    image_format = opts.container_options.get("image_format")
    if opts.format is not None and image_format is not None:
        if _format(opts.format).name != _format(image_format).name:
            raise OptionError(f"--format {opts.format}: contradicts --image-format {image_format}")
    name = opts.format if opts.format is not None else image_format
    return name, (None if name is None else _format(name))


def _format_for_template(name: str | None, fmt, template: str | None) -> str:
    """The image format inside an object: the one named, which the
    template's kernel must read, else the template's default."""
    from .elf import templates
    tmpl = templates.resolve(template)
    if name is None:
        return tmpl.formats[0] if tmpl.formats else DEFAULT_CONTAINER_FORMAT
    if tmpl.formats and fmt.name not in tmpl.formats:
        raise OptionError(f"--template {template}: its kernel reads {' or '.join(tmpl.formats)} "
                          f"images, not {fmt.name}")
    return name


def _compression(output: str, opts: PackOptions, container, fmt_name: str) -> str | None:
    _, suffix_comp = (None, None) if container else formats.from_suffix(output)
    comp = opts.compress
    if suffix_comp is not None:
        if comp is not None and comp != suffix_comp:
            raise OptionError(f"--compress {comp}: contradicts the output name {output} "
                              f"({suffix_comp})")
        comp = suffix_comp
    elif comp not in (None, "none") and not container and output.lower().endswith(".cpio"):
        raise OptionError(f"--compress {comp}: contradicts the output name {output} "
                          f"(an uncompressed cpio; name it {output}{_SUFFIX_OF.get(comp, '')})")
    if comp == "none":
        comp = None
    level = opts.compress_level
    if not comp:
        if level is not None:
            raise OptionError(f"--compress-level {level}: nothing is compressed "
                              f"(give --compress or a compressed output name)")
        return None
    from .compress import LEVELS, default_workers  # only here: it imports construct
    if comp not in LEVELS:
        raise OptionError(f"--compress {comp}: unknown (known: {', '.join(LEVELS)}, none)")
    if fmt_name != "cpio":
        raise OptionError(f"--compress {comp}: only cpio images are compressed "
                          f"(the format is {fmt_name})")
    if level is not None:
        low, high = LEVELS[comp]
        if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
            raise OptionError(f"--compress-level {level}: {comp} levels are {low} to {high}")
    workers = opts.compress_workers
    if workers is None:
        default_workers()  # a bad $RUMPFS_COMPRESS_WORKERS is refused before anything is written
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise OptionError(f"compress_workers={workers!r}: not a number of threads (at least 1)")
    return comp


#: Compression -> the output suffix that names it.
_SUFFIX_OF = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst", "lz4": ".lz4"}


def _check_room(output: str, flag: str, size: int) -> None:
    """Refuse at once an image size the output's file system cannot hold
    (ext4 stops at 16 TiB), rather than after writing the metadata."""
    import tempfile  # only here: a few ms of every run's start-up otherwise

    directory = os.path.dirname(os.path.abspath(output))
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".rumpfs-size.") as probe:
            os.truncate(probe.fileno(), size)
    except OSError as e:
        if e.errno == errno.EFBIG:
            raise OptionError(f"{flag}: {size} bytes is more than a file in {directory} can hold "
                              f"(EFBIG)") from None
        # Anything else (no such directory, no permission) is the output's own error, later.


def prepare_tree(layers: list[Layer], opts: PackOptions, byteorder: str, policy: Policy) -> Tree:
    """Layers applied, policy applied, /etc completed: the tree to write."""
    tree = build_tree(layers, policy)
    finish_etc(tree, opts, byteorder, policy)
    return tree


def listed_while_written(layers: list[Layer], opts: PackOptions, byteorder: str,
                         policy: Policy) -> HostStream | None:
    """The tree as a :class:`HostStream` when it is one host directory (after
    the default /etc, if any), which a format that can write it while it is
    being listed then writes as it goes; None when the layers need the whole
    tree first.

    /etc is built beforehand as the whole tree would have it (the default
    /etc, the source's own etc laid over it, the generated files) and
    grafted into the stream.  A source whose etc is not a directory, or
    holds a hard link (which may join a name outside it), takes the whole
    tree."""
    *defaults, source = layers
    if (type(source) is not HostDirectory or split_path(source.dest)
            or any(type(layer) is not StubEtc for layer in defaults)):
        return None
    own_etc = os.path.join(source.path, os.fsdecode(ETC.lstrip(b"/")))
    try:
        st = os.lstat(own_etc)
    except FileNotFoundError:
        st = None
    except OSError:
        return None  # the whole tree's walk says what is wrong
    if st is not None and (not stat.S_ISDIR(st.st_mode) or holds_hard_links(os.fsencode(own_etc))):
        return None
    etc = Tree()
    etc_layers = [*defaults, HostDirectory(own_etc, ETC)] if st else defaults
    for layer in etc_layers:
        layer.apply(etc, policy)
    for layer in etc_layers:
        layer.settle(etc)
    apply_policy(etc, policy)
    finish_etc(etc, opts, byteorder, policy)
    tree = Tree()
    tree.root.copy_meta_from(source.root_node(policy.keep_owner))
    settle_times((tree.root,), policy)
    return HostStream(os.fsencode(source.path), tree, policy.keep_owner,
                      lambda nodes: settle_times(nodes, policy), grafts=etc.root.children)


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
    images: list = []
    try:
        size, count = _pack_into(output, sources, opts, fmt, fmt_name, comp, container, target,
                                 byteorder, progress, inputs, images)
    except BaseException:
        progress.close(finished=False)  # the error goes on a line of its own
        raise
    progress.close()
    side = [output + ".img"] if container == "asm" else []
    if opts.depfile:
        from .depfile import write_depfile
        write_depfile(os.fspath(opts.depfile), [output, *side], inputs)
    return PackResult(output, fmt_name, container, size, count, side_outputs=side, inputs=inputs,
                      compression=comp, warnings=WARNINGS[warned:], images=images)


def _pack_into(output: str, sources, opts: PackOptions, fmt, fmt_name: str, comp, container,
               target, byteorder: str, progress: Progress, inputs: list,
               images: list) -> tuple[int, int]:
    """(image size, entries) of the image written to ``output``; ``inputs``
    gets every file and directory read (rumpfs.depfile), ``images`` the
    config of every container image layer (rumpfs.oci.ImageConfig)."""
    what = CONTAINER_NAMES[container] if container else f"{_article(fmt_name)} {fmt_name} image"
    with AtomicOutput(output, sequential=container is None and fmt.sequential, what=what) as out:
        copier = None
        if not comp and container in (None, "elf") and not out.streaming:
            # The image goes straight into OUT: its copy workers are forked
            # now, from a process that does not hold the tree yet.
            copier = Copier(out.fd, progress=progress)
            copier.start()
        layers = []
        try:
            policy = Policy.from_environment(opts.keep_owner, opts.timestamp)
            layers = make_layers(sources, opts, target)
            tree = None
            if container is None and fmt.writes_while_listed:
                tree = listed_while_written(layers, opts, byteorder, policy)
            if tree is None:
                tree = prepare_tree(layers, opts, byteorder, policy)
            images += [layer.image_config() for layer in layers if hasattr(layer, "image_config")]
            if opts.depfile or opts.list_inputs:
                from .depfile import pack_inputs
                inputs += pack_inputs(layers, opts, tree)
            return _write(tree, out, fmt, fmt_name, comp, container, target, byteorder,
                          opts, copier, progress)
        except BaseException:
            if copier is not None:
                copier.abort()
            raise
        finally:
            # Spools can be as large as an archive's contents: gone with the
            # pack, not when a reference cycle is next collected.
            for layer in layers:
                layer.close()


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
                with CompressingSink(sink, comp, opts.compress_level, opts.compress_workers) as csink:
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
        size = write_image(StreamSink(out.fd, progress) if out.streaming
                           else ImageSink(out.fd, 0, progress))
    return size, entries[-1]


def _article(name: str) -> str:
    """'an ffs image', 'a cpio image': format names are read letter by letter
    (F, I for ISO) or as words."""
    return "an" if name.startswith(("ffs", "iso")) else "a"


def _data_bytes(tree: Tree) -> int:
    return max(1, sum(n.size for n in tree.iter_nodes() if n.data is not None))


def open_image(path: str, offset: int | None = None):
    """A reader for an image file, a compressed cpio, or an object holding one."""
    from .inspect import open_image as _open
    return _open(path, offset)
