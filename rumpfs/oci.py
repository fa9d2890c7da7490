"""Container images as layers: ``oci:DIR[:REF]`` and ``docker-archive:FILE``.

An OCI image layout (``index.json``, ``blobs/sha256/...``) or a ``docker
save`` tar is one layer of the pack: the image's own layers are applied in
order, each read like a tar layer (rumpfs.archives: no extraction, data
copied from the blob), with OCI whiteouts: ``.wh.NAME`` deletes NAME from
the layers below, ``.wh..wh..opq`` empties its directory of what the layers
below put there.  Every blob is checked against its sha256 digest before it
is used (docker-archive layers against the config's ``rootfs.diff_ids``).

``REF`` picks a manifest of the layout by its
``org.opencontainers.image.ref.name`` annotation; it is required when there
are several.  A multi-platform index picks the build host's platform
(linux/amd64 on x86_64).  What the image config says to run (user, entry
point, command, environment, working directory) is the layer's
:meth:`ImageLayer.image_config`, an :class:`ImageConfig`: ``pack -v``
prints it, ``PackResult.images`` and ``pack --json`` carry it, for
``--config``-style generation later.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tarfile
from dataclasses import dataclass, field

from .archives import ArchiveLayer, ArchiveReader, graft, overlay
from .errors import RumpfsError
from .tree import Tree

REF_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
#: Python's machine names -> OCI architectures.
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386",
                 "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
HASH_CHUNK = 1 << 20
#: Largest JSON document of an image read (manifests and configs are a few KiB).
JSON_MAX = 16 << 20


def _kind(value) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    return _KIND_NAMES.get(type(value), "a number")


_KIND_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number"}


def image_layer(spec: str, dest: bytes = b"", platform: str | None = None) -> "ImageLayer":
    if spec.startswith("oci:"):
        location, ref = spec[len("oci:"):], None
        head, sep, tail = location.rpartition(":")
        if sep and head and "/" not in tail and not os.path.exists(location):
            location, ref = head, tail
        return OciLayout(location, ref, dest, platform)
    return DockerArchive(spec[len("docker-archive:"):], dest)


@dataclass
class ImageConfig:
    """What a container image's config says to run: its ``config`` object
    (OCI image-spec config.md, and Docker's image JSON alike) -- ``User``,
    ``Entrypoint``, ``Cmd``, ``Env`` (``NAME=VALUE`` strings) and
    ``WorkingDir``; None (or empty) where the image says nothing."""

    #: The layer as given on the command line (``oci:DIR:REF``, ``docker-archive:FILE``).
    source: str
    user: str | None = None
    entrypoint: list | None = None
    cmd: list | None = None
    env: list = field(default_factory=list)
    working_dir: str | None = None
    #: The whole ``config`` object (ExposedPorts, Labels, StopSignal...).
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, source: str, config: dict) -> "ImageConfig":
        def text(key):
            value = config.get(key)
            return value if isinstance(value, str) and value != "" else None

        def words(key):
            value = config.get(key)
            return [str(v) for v in value] if isinstance(value, list) else None

        return cls(source, text("User"), words("Entrypoint"), words("Cmd"), words("Env") or [],
                   text("WorkingDir"), config)

    def as_json(self) -> dict:
        """What ``pack --json`` shows under ``images``."""
        return {"source": self.source, "user": self.user, "entrypoint": self.entrypoint,
                "cmd": self.cmd, "env": self.env, "working_dir": self.working_dir}

    def lines(self) -> list[str]:
        """What ``pack -v`` prints: one line per setting the image has
        (entry point and command as JSON arrays, the exec form)."""
        out = []
        for label, value in (("user", self.user), ("entrypoint", self.entrypoint),
                             ("cmd", self.cmd), ("working directory", self.working_dir)):
            if value is not None:
                shown = value if isinstance(value, str) else json.dumps(value)
                out.append(f"{self.source}: {label}: {shown}")
        out += [f"{self.source}: env: {item}" for item in self.env]
        return out


class ImageLayer(ArchiveLayer):
    """The layers of a container image, applied in order with whiteouts."""

    FIELDS = ("path", "dest")

    def __init__(self, path: str, dest: bytes = b""):
        super().__init__(path, dest)
        self.spools: list = []
        #: The image config's "config" object (User, Entrypoint, Env, WorkingDir, ...).
        self.config: dict = {}

    def error(self, message: str) -> RumpfsError:
        return RumpfsError(f"{self.label}: {message}")

    def get(self, obj, key: str, kind, what: str, default=None):
        """``obj[key]`` of JSON the image holds, checked to be a ``kind``
        (``default`` when missing or null): any other shape is an error
        naming ``what``."""
        if not isinstance(obj, dict):
            raise self.error(f"{what}: {_kind(obj)} where an object belongs")
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise self.error(f"{what}: {key} is {_kind(value)}, not {_KIND_NAMES[kind]}")
        return value

    def array(self, obj, key: str, item_kind, what: str) -> list:
        """``obj[key]``: an array of ``item_kind`` values (empty when missing)."""
        items = self.get(obj, key, list, what, [])
        for k, item in enumerate(items):
            if not isinstance(item, item_kind):
                raise self.error(f"{what}: {key}[{k}] is {_kind(item)}, "
                                 f"not {_KIND_NAMES[item_kind]}")
        return items

    def image_settings(self, config, what: str) -> dict:
        """The ``config`` object of an image config (``{}`` when it has none)."""
        return self.get(config, "config", dict, what, {})

    def image_config(self) -> ImageConfig:
        """What the image's config says to run (once the layer is applied)."""
        return ImageConfig.from_config(self.label, self.config)

    def layers(self):  # pragma: no cover - interface
        """(file, start, length, expected sha256 or None, label) of each layer, bottom first."""
        raise NotImplementedError

    def apply(self, tree: Tree, policy=None) -> None:
        image = Tree()
        for path, start, length, digest, label in self.layers():
            if digest is not None:
                self.check_digest(path, start, length, digest, label)
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                reader = ArchiveReader(path, f, st, start, length, whiteouts=True,
                                       label=f"{self.label}: {label}")
                try:
                    layer_tree = reader.read()
                finally:
                    if reader.spool is not None:
                        self.spools.append(reader.spool)
            for directory in reader.opaque:
                node = image.lookup(directory)
                if node is not None and node.is_dir:
                    node.children.clear()
            for gone in reader.whiteouts:
                image.remove(gone)
            overlay(image.root, layer_tree.root)
        graft(tree, self.dest, image.root, self.label)

    def close(self) -> None:
        super().close()
        for spool in self.spools:
            spool.remove()

    def check_digest(self, path: str, start: int, length: int, digest: str, label: str) -> None:
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256":
            raise self.error(f"{label}: digest {digest}: only sha256 is checked")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            pos, end = start, start + length
            while pos < end:
                chunk = os.pread(f.fileno(), min(HASH_CHUNK, end - pos), pos)
                if not chunk:
                    raise self.error(f"{label}: truncated ({pos - start} of {length} bytes)")
                h.update(chunk)
                pos += len(chunk)
        if h.hexdigest() != expected:
            raise self.error(f"{label}: sha256 is {h.hexdigest()}, the image says {expected}")


class OciLayout(ImageLayer):
    """``oci:DIR[:REF]``: an OCI image layout directory."""

    def __init__(self, path: str, ref: str | None, dest: bytes = b"", platform: str | None = None):
        super().__init__(path, dest)
        self.ref = ref
        #: OS/ARCH[/VARIANT]; ARCH may be a machine name (x86_64, aarch64).
        self.platform = platform
        self.label = f"oci:{path}" + (f":{ref}" if ref else "")

    def describe(self) -> str:
        return self.label

    def blob(self, descriptor: dict, what: str) -> tuple[str, int, str]:
        digest = self.get(descriptor, "digest", str, what, "")
        declared = self.get(descriptor, "size", int, what)
        algorithm, _, hexdigest = digest.partition(":")
        if not hexdigest or "/" in hexdigest or hexdigest.startswith("."):
            raise self.error(f"{what}: bad digest {digest!r}")
        path = os.path.join(self.path, "blobs", algorithm, hexdigest)
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise self.error(f"{what}: blob {digest}: {e.strerror}") from None
        if declared is not None and declared != size:
            raise self.error(f"{what}: blob {digest} is {size} bytes, the image says {declared}")
        self.inputs.append(path)
        return path, size, digest

    def json_blob(self, descriptor: dict, what: str) -> dict:
        path, size, digest = self.blob(descriptor, what)
        self.check_digest(path, 0, size, digest, what)
        return self.read_json(path, what)

    def read_json(self, path: str, what: str) -> dict:
        try:
            with open(path, "rb") as f:
                return json.load(f)
        except OSError as e:
            raise self.error(f"{what}: {e.strerror}") from None
        except ValueError as e:
            raise self.error(f"{what}: not JSON: {e}") from None

    def manifest(self) -> dict:
        index_path = os.path.join(self.path, "index.json")
        self.inputs = [index_path]
        index = self.read_json(index_path, "index.json")
        manifests = self.array(index, "manifests", dict, "index.json")

        def ref(m):
            annotations = self.get(m, "annotations", dict, "index.json", {})
            return self.get(annotations, REF_ANNOTATION, str, "index.json")

        if self.ref is not None:
            chosen = [m for m in manifests if ref(m) == self.ref]
            if not chosen:
                refs = sorted(ref(m) or "?" for m in manifests)
                raise self.error(f"no manifest named {self.ref!r} (the layout has: {', '.join(refs)})")
        else:
            chosen = manifests
        if len(chosen) != 1:
            refs = sorted(ref(m) or "?" for m in chosen)
            raise self.error(f"{len(chosen)} manifests: name one as oci:DIR:REF "
                             f"({', '.join(refs) or 'none'})")
        descriptor = chosen[0]
        document = self.json_blob(descriptor, "manifest")
        if (self.get(descriptor, "mediaType", str, "index.json") in INDEX_TYPES
                or self.get(document, "mediaType", str, "manifest") in INDEX_TYPES):
            descriptor = self.platform_manifest(document)
            document = self.json_blob(descriptor, "manifest")
        return document

    def platform_manifest(self, index: dict) -> dict:
        wanted = self.platform or f"linux/{platform.machine()}"
        parts = wanted.split("/")
        if len(parts) not in (2, 3):
            raise self.error(f"platform {wanted!r}: not OS/ARCH[/VARIANT]")
        os_name, arch = parts[0], ARCHITECTURES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else None
        manifests = self.array(index, "manifests", dict, "index")

        def platform_of(m) -> tuple:
            p = self.get(m, "platform", dict, "index", {})
            return tuple(self.get(p, key, str, "index") for key in ("os", "architecture", "variant"))

        platforms = list(map(platform_of, manifests))
        found = [m for m, p in zip(manifests, platforms)
                 if p[:2] == (os_name, arch) and (variant is None or p[2] == variant)]
        if not found:
            have = sorted("/".join(v for v in (p[0] or "?", p[1] or "?", p[2]) if v)
                          for p in platforms)
            shown = "/".join(p for p in (os_name, arch, variant) if p)
            raise self.error(f"no {shown} image in the index (it has: {', '.join(have)}; "
                             f"choose with --platform)")
        return found[0]

    def layers(self):
        manifest = self.manifest()
        config = self.json_blob(self.get(manifest, "config", dict, "manifest", {}), "config")
        self.config = self.image_settings(config, "config")
        out = []
        for k, descriptor in enumerate(self.array(manifest, "layers", dict, "manifest")):
            label = f"layer {k}"
            path, size, digest = self.blob(descriptor, label)
            out.append((path, 0, size, digest, label))
        return out


class DockerArchive(ImageLayer):
    """``docker-archive:FILE``: the tar ``docker save`` writes."""

    def __init__(self, path: str, dest: bytes = b""):
        super().__init__(path, dest)
        self.label = f"docker-archive:{path}"

    def describe(self) -> str:
        return self.label

    def layers(self):
        try:
            archive = tarfile.open(self.path, "r:")
        except (OSError, tarfile.TarError) as e:
            raise self.error(f"not a readable tar: {e}") from None
        with archive:
            members = {os.path.normpath(m.name): m for m in archive.getmembers() if m.isfile()}

            def read(name: str, what: str) -> bytes:
                member = members.get(os.path.normpath(name))
                if member is None:
                    raise self.error(f"{what}: no member {name!r}")
                if member.size > JSON_MAX:
                    raise self.error(f"{what}: {member.size} bytes (at most {JSON_MAX})")
                return archive.extractfile(member).read()

            def read_json(name: str, what: str):
                data = read(name, what)
                try:
                    return json.loads(data)
                except ValueError as e:
                    raise self.error(f"{what}: not JSON: {e}") from None

            manifest = read_json("manifest.json", "manifest.json")
            if not isinstance(manifest, list):
                raise self.error(f"manifest.json: {_kind(manifest)}, not an array of images")
            if len(manifest) != 1:
                raise self.error(f"manifest.json lists {len(manifest)} images; one is read")
            entry = manifest[0]
            config_name = self.get(entry, "Config", str, "manifest.json", "")
            config_bytes = read(config_name, "config")
            # The config's name is its digest (sha256 hex, .json or a blob path).
            named = os.path.basename(config_name).removesuffix(".json")
            if len(named) == 64 and hashlib.sha256(config_bytes).hexdigest() != named:
                raise self.error(f"config {config_name}: sha256 is "
                                 f"{hashlib.sha256(config_bytes).hexdigest()}, its name says {named}")
            try:
                config = json.loads(config_bytes)
            except ValueError as e:
                raise self.error(f"config: not JSON: {e}") from None
            self.config = self.image_settings(config, "config")
            diff_ids = self.array(self.get(config, "rootfs", dict, "config", {}), "diff_ids", str,
                                  "config")
            names = self.array(entry, "Layers", str, "manifest.json")
            if len(diff_ids) != len(names):
                raise self.error(f"{len(names)} layers but {len(diff_ids)} diff_ids in the config")
            out = []
            for k, (name, diff_id) in enumerate(zip(names, diff_ids)):
                member = members.get(os.path.normpath(name))
                if member is None:
                    raise self.error(f"layer {k}: no member {name!r}")
                label = f"layer {k} ({name})"
                # diff_ids are digests of the uncompressed layer tar, which docker save stores.
                out.append((self.path, member.offset_data, member.size, diff_id, label))
            return out
