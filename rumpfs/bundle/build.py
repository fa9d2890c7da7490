"""Build a bundle: detect the kernel, place the loader, write the output kind (see the package doc)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field

from ..errors import RumpfsError
from ..etc import config as rumprun_config
from ..output import AtomicOutput
from . import disk, fat, gpt, grub, iso, loader
from .kernel import KernelInfo, detect

#: Output name ending -> kind.
OUTPUT_KINDS = {".iso": "iso", ".img": "raw", ".raw": "raw", ".vhd": "vhd", ".tar.gz": "gce"}

#: Paths in the image (ISO 9660 level 1 names, lower case as isolinux.cfg writes them).
KERNEL_PATH = "/kernel"
LINUX_PATH = "/vmlinuz"
ROOT_PATH = "/root.img"
INITRD_PATH = "/initrd.img"
CONFIG_PATH = "/json.cfg"
#: rumprun reads its configuration from the file this names.
ROOTFSCFG = "_RUMPRUN_ROOTFSCFG"
LABEL = "bundle"
#: The EFI system partition image in the ISO, and GRUB's place in it.
ESP_PATH = "/efiboot.img"
EFI_BOOT_FILE = "/EFI/BOOT/BOOTX64.EFI"
VOLUME_PREFIX = "RUMPFS_"
HASH_CHUNK = 1 << 20
#: The largest file of a bundle: one ISO 9660 extent (a 32-bit length).
MAX_FILE_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class Module:
    """A Multiboot module: a host file and the arguments of its string."""
    path: str
    args: str = ""

    @classmethod
    def parse(cls, text: str) -> "Module":
        """``FILE`` or ``FILE=ARGS``."""
        path, sep, args = text.partition("=")
        return cls(path, args)


@dataclass
class BundleResult:
    output: str
    kind: str
    kernel: KernelInfo
    size: int = 0
    #: (string, host path) of each Multiboot module, in order.
    modules: list = field(default_factory=list)
    #: "cmdline", "file" or None; and why, for -v.
    config_delivery: str | None = None
    config_reason: str = ""
    uefi: bool = False
    #: GRUB's config (--uefi).
    grub_cfg: str = ""

    def describe(self) -> list[str]:
        kind = f"{self.kind} (BIOS and UEFI)" if self.uefi else self.kind
        lines = [f"{self.output}: {kind}, {self.kernel.describe()}, "
                 f"{len(self.modules)} module(s), {self.size} bytes"]
        if self.config_delivery == "cmdline":
            lines.append(f"{self.output}: config on the kernel command line ({self.config_reason})")
        elif self.config_delivery == "file":
            lines.append(f"{self.output}: config as module {CONFIG_PATH}, named by "
                         f"{ROOTFSCFG}={CONFIG_PATH} ({self.config_reason})")
        return lines


def output_kind(output: str) -> str:
    for suffix, kind in OUTPUT_KINDS.items():
        if output.endswith(suffix):
            return kind
    raise RumpfsError(f"{output}: unknown output kind; name it "
                      f"{', '.join('*' + s for s in OUTPUT_KINDS)}")


def _check_readable(path: str, what: str) -> None:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise RumpfsError(f"{path}: cannot read {what}: {e.strerror}") from None
    if not os.path.isfile(path):
        raise RumpfsError(f"{path}: {what} is not a regular file")
    if size == 0:
        # Measured: mboot.c32 stops at "Loading ... failed!" on an empty file.
        raise RumpfsError(f"{path}: empty {what}; the loaders cannot load an empty file")
    if size > MAX_FILE_SIZE:
        raise RumpfsError(f"{path}: {what} of {size} bytes, larger than {MAX_FILE_SIZE} "
                          f"(one ISO 9660 extent, and 32-bit Multiboot memory)")


def _check_survives(text: str, what: str) -> None:
    if not loader.survives_isolinux(text):
        raise RumpfsError(f"{what}: {text!r} would not arrive intact through ISOLINUX "
                          f"(runs of blanks, control characters or a '{loader.MBOOT_SEPARATOR}' word)")


def _digest(paths, texts) -> bytes:
    """SHA-256 of every input, which the volume ID, disk signature and VHD
    unique ID are derived from."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
        h.update(b"\0")
    for text in texts:
        h.update(text.encode() + b"\0")
    return h.digest()


def bundle(kernel: str, output: str, *, root: str | None = None, modules=(), config: str | None = None,
           cmdline: str = "", loader_dir: str | None = None, epoch: int = 0,
           pack_options=None, uefi: bool = False, layers=()) -> BundleResult:
    """Write the bootable image ``output``; nothing is written on an error.

    ``root`` is an image file, or a directory packed first, with ``layers``
    (more sources of ``rumpfs pack``: directories, archives, grafts) over it,
    with ``pack_options`` (a :class:`rumpfs.api.PackOptions`; the format
    defaults to ffs for a Multiboot kernel, cpio for Linux); ``layers``
    alone are packed too.  ``uefi`` adds a GRUB EFI system partition.
    """
    kind = output_kind(output)
    info = detect(kernel)
    modules = [m if isinstance(m, Module) else Module.parse(m) for m in modules]
    layers = list(layers)
    if layers and root is not None and not os.path.isdir(root):
        raise RumpfsError(f"{root}: --layer adds to a root packed from sources: give --root a "
                          f"directory, or no --root, not an image")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(output)),
                                     prefix=f".{os.path.basename(output)}.") as scratch:
        if (root is not None and os.path.isdir(root)) or layers:
            root = _pack_root(([root] if root is not None else []) + layers, info, scratch, pack_options)
        return _bundle(kernel, info, kind, output, root, modules, config, cmdline, loader_dir, epoch,
                       scratch if uefi else None)


def _pack_root(sources: list, info: KernelInfo, scratch: str, pack_options) -> str:
    """Pack ``sources`` as ``rumpfs pack`` would (times clamped to
    SOURCE_DATE_EPOCH when set) into ``scratch``."""
    from .. import api
    opts = pack_options or api.PackOptions()
    if opts.format is None:
        opts.format = "ffs" if info.kind == "multiboot" else "cpio"
    opts.progress = False
    image = os.path.join(scratch, f"root.{opts.format}")
    api.pack(sources, image, opts)
    return image


def _bundle(kernel, info, kind, output, root, modules, config, cmdline, loader_dir, epoch,
            uefi_scratch) -> BundleResult:
    uefi = uefi_scratch is not None
    if root is not None:
        _check_readable(root, "root image")
    for m in modules:
        _check_readable(m.path, "module")
    if cmdline:
        _check_survives(cmdline, "--cmdline")
    for m in modules:
        if m.args:
            _check_survives(m.args, f"{m.path}: module arguments")
    if uefi:
        grub.check_words(cmdline, "--cmdline")
        for m in modules:
            grub.check_words(m.args, f"{m.path}: module arguments")
    result = BundleResult(output, kind, info, uefi=uefi)
    boot = loader.find_isolinux(loader_dir)
    grub_image = grub.standalone_image() if uefi else None

    files = [iso.IsoFile(f"/{loader.ISOLINUX_DIR}/{name}", boot.path(name))
             for name in ("isolinux.bin", "ldlinux.c32", "libcom32.c32", "mboot.c32")]
    if info.kind == "multiboot":
        append, extra = _multiboot_plan(info, result, root, modules, config, cmdline, uefi)
        cfg = loader.isolinux_cfg(LABEL, loader.MBOOT, append)
        files.append(iso.IsoFile(KERNEL_PATH, kernel))
        if root is not None:
            files.append(iso.IsoFile(ROOT_PATH, root))
        files += [iso.IsoFile(f"/mod{i}", m.path) for i, m in enumerate(modules, 1)]
        files += extra
    else:
        if modules or config:
            raise RumpfsError(f"{kernel}: a Linux bzImage takes --root (its initrd) and --cmdline; "
                              f"--module and --config are for Multiboot kernels")
        append = " ".join(([f"initrd={INITRD_PATH}"] if root else []) + ([cmdline] if cmdline else []))
        loader.check_cmdline(LINUX_PATH, append, kernel)
        cfg = loader.isolinux_cfg(LABEL, LINUX_PATH, append)
        files.append(iso.IsoFile(LINUX_PATH, kernel))
        if root is not None:
            files.append(iso.IsoFile(INITRD_PATH, root))
        if uefi:
            result.grub_cfg = grub.linux_cfg(LINUX_PATH, cmdline, INITRD_PATH if root else None)
    files.append(iso.IsoFile(f"/{loader.ISOLINUX_DIR}/isolinux.cfg", cfg.encode()))
    dirs = [f"/{loader.ISOLINUX_DIR}"]
    if uefi:
        dirs.append(os.path.dirname(grub.BUNDLE_CFG))
        files.append(iso.IsoFile(grub.BUNDLE_CFG, result.grub_cfg.encode()))

    digest = _digest([f.source for f in files if isinstance(f.source, str)],
                     [cfg] + [f.source.decode() for f in files if isinstance(f.source, bytes)])
    volume_id = VOLUME_PREFIX + digest[:8].hex().upper()
    signature = int.from_bytes(digest[8:12], "little")
    efi_image = gpt_guids = None
    if uefi and kind != "iso":
        # Disks for UEFI get a GPT; the .iso keeps the MBR (both boot under OVMF).
        gpt_guids = (gpt.guid_from(digest[16:32]), gpt.guid_from(digest[:16]))
    with open(boot.path("isohdpfx.bin"), "rb") as f:
        mbr_code = f.read(iso.MBR_CODE_SIZE)
    if len(mbr_code) < iso.MBR_CODE_SIZE:
        raise RumpfsError(f"{boot.path('isohdpfx.bin')}: {len(mbr_code)} bytes, "
                          f"shorter than the {iso.MBR_CODE_SIZE} bytes of MBR boot code")

    # Every file written goes beside the output, so a full disk is an error
    # about the output (AtomicOutput's one line), wherever it strikes.
    with AtomicOutput(output) as out:
        if uefi:
            esp = os.path.join(uefi_scratch, "efiboot.img")
            with open(esp, "w+b") as f:
                fat.write_fat16(f, {EFI_BOOT_FILE: grub_image}, int.from_bytes(digest[12:16], "little"),
                                epoch)
            files.append(iso.IsoFile(ESP_PATH, esp))
            efi_image = ESP_PATH
        if kind == "gce":
            # The raw disk first (its size goes into the tar header), beside the output.
            with tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(output))) as raw:
                size = iso.write_hybrid_iso(raw, files, dirs,
                                            f"/{loader.ISOLINUX_DIR}/isolinux.bin", mbr_code,
                                            volume_id, signature, epoch, efi_image, gpt_guids)
                disk.write_gce_tar_gz(out.file, raw, size, epoch)
            result.size = out.file.seek(0, os.SEEK_END)
        else:
            size = iso.write_hybrid_iso(out.file, files, dirs,
                                        f"/{loader.ISOLINUX_DIR}/isolinux.bin", mbr_code,
                                        volume_id, signature, epoch, efi_image, gpt_guids)
            if kind == "vhd":
                size = disk.append_vhd_footer(out.file, size, epoch, digest[16:32])
            result.size = size
    return result


def _multiboot_plan(info, result, root, modules, config, cmdline, uefi):
    """The APPEND line of mboot.c32 and the extra files (the config)."""
    mods = []
    if root is not None:
        mods.append((ROOT_PATH, "", root))
    mods += [(f"/mod{i}", m.args, m.path) for i, m in enumerate(modules, 1)]
    extra = []
    kernel_args = cmdline
    if config is not None:
        data = rumprun_config.load(config)
        text = data.decode()
        inline = f"{cmdline} {text}" if cmdline else text
        trial = loader.mboot_append(KERNEL_PATH, inline, [(p, a) for p, a, _ in mods])
        fits = len(loader.MBOOT) + 1 + len(trial.encode()) <= loader.ISOLINUX_CMDLINE_MAX
        if loader.survives_isolinux(text) and fits and not uefi:
            kernel_args = inline
            result.config_delivery = "cmdline"
            result.config_reason = f"{len(data)} bytes, kept intact by ISOLINUX"
        else:
            arg = f"{ROOTFSCFG}={CONFIG_PATH}"
            kernel_args = f"{cmdline} {arg}" if cmdline else arg
            mods.append((CONFIG_PATH, "", config))
            extra.append(iso.IsoFile(CONFIG_PATH, data))
            result.config_delivery = "file"
            if uefi:
                result.config_reason = "GRUB (--uefi) would escape its quotes"
            elif not fits and loader.survives_isolinux(text):
                result.config_reason = "too long for ISOLINUX's command line"
            else:
                result.config_reason = "ISOLINUX would change its blanks or line breaks"
    append = loader.mboot_append(KERNEL_PATH, kernel_args, [(p, a) for p, a, _ in mods])
    loader.check_cmdline(loader.MBOOT, append, info.path)
    result.modules = [(loader.words(p, a), host) for p, a, host in mods]
    if uefi:
        result.grub_cfg = grub.grub_cfg(KERNEL_PATH, kernel_args, [(p, a) for p, a, _ in mods])
    return append, extra
