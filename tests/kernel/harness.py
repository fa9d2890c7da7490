"""Boot Debian's Linux kernel under qemu and read what it sees in our images.

The kernel is the judge here: it unpacks our cpio archives as its initramfs
and mounts our FFS images with its ufs driver (read-only; ``ufstype=44bsd``
for UFS1 of either byte order, ``ufstype=ufs2`` for UFS2, whose superblock
Linux looks for at 65536 only).

Pieces, all from Debian packages:

* the kernel: ``linux-image-<KABI>-amd64-unsigned``, pinned in
  ``tests/kernel/KERNEL_VERSION``, fetched with ``apt-get download`` and
  unpacked with ``dpkg-deb -x`` by ``scripts/setup-test-kernel.sh`` into
  ``$RUMPFS_KERNEL_CACHE`` (default ``~/.cache/rumpfs-test-kernel``);
* ``qemu-system-x86_64`` with TCG (``RUMPFS_QEMU_ACCEL`` may name another
  accelerator), the console on the first serial port, results on the second;
* busybox-static, packed with the guest scripts of ``tests/kernel/guest`` and
  the modules the kernel needs into a helper archive by GNU cpio.  The helper
  keeps everything under ``/.rumpfs-test`` and is started with ``rdinit=``;
  the archive under test is concatenated after it (the kernel unpacks
  concatenated archives, compressed or not, in order into the same root).

What the guest prints is described in ``guest/lib.sh``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import treecompare

HERE = Path(__file__).resolve().parent
GUEST = HERE / "guest"
PIN_FILE = HERE / "KERNEL_VERSION"
BUSYBOX = Path(os.environ.get("RUMPFS_BUSYBOX", "/bin/busybox"))
QEMU = os.environ.get("RUMPFS_QEMU", "qemu-system-x86_64")

#: Where the helper lives inside the initramfs (see guest/init).
HELPER_DIR = ".rumpfs-test"
RDINIT = f"/{HELPER_DIR}/init"

#: Kernel modules each kind of boot loads; dependencies are added and ordered.
DISK_MODULES = ("virtio_pci", "virtio_blk", "ufs")
#: ... and for ISO 9660 and FAT disks (vfat's names in UTF-8, FAT's 8.3 in
#: cp437, and the ascii charset Debian's vfat loads by default).
OTHER_FS_MODULES = ("virtio_pci", "virtio_blk", "isofs", "vfat", "nls_utf8", "nls_cp437",
                    "nls_ascii")

#: Default limit for one boot, in seconds (TCG on a shared machine is slow).
DEFAULT_TIMEOUT = 300

#: syslog levels KERN_EMERG..KERN_ERR: any such kernel message fails a boot.
ERROR_LEVELS = range(0, 4)

#: The kernel command line.  ``no_timer_check``: under TCG the IO-APIC timer
#: check races the emulated 8254 and sometimes logs "..MP-BIOS bug: 8254 timer
#: not connected to IO-APIC" at KERN_ERR; the parameter skips that probe.
KERNEL_CMDLINE = f"console=ttyS0 rdinit={RDINIT} panic=-1 oops=panic no_timer_check"

#: Error-level messages a TCG guest prints about its emulated hardware, never
#: about what we test.  Each must match a whole message; keep the list short.
BENIGN_KERNEL_ERRORS = re.compile(
    r"\.\.MP-BIOS bug: 8254 timer not connected to IO-APIC"
)

#: Console lines that fail a boot whatever their level (also seen when the
#: guest dies before it can dump the ring buffer).
CONSOLE_FAILURES = re.compile(
    r"I/O error|(UFS-fs|ufs:) (error|warning|panic)|Kernel panic|BUG: |Oops|general protection"
    r"|Call Trace|Initramfs unpacking failed|junk in compressed archive|invalid magic"
)

MARKER = re.compile(rb"^@@RUMPFS-(BEGIN|END) (.*?)@@$")

#: Guest disks, in the order qemu attaches them (virtio-blk).
DISK_NAMES = [f"vd{chr(ord('a') + i)}" for i in range(26)]


class KernelMissing(Exception):
    """The pinned kernel is not in the cache (run the setup script)."""


class BootError(AssertionError):
    """The guest did not report what it should have, or the kernel complained."""


def read_pin(path: Path = PIN_FILE) -> dict[str, str]:
    """KEY=VALUE pairs of the pin file (KABI, DEB)."""
    pin = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            pin[key.strip()] = value.strip()
    return pin


def kernel_package(kabi: str) -> str:
    return f"linux-image-{kabi}-amd64-unsigned"


def cache_dir() -> Path:
    return Path(os.environ.get("RUMPFS_KERNEL_CACHE") or Path.home() / ".cache" / "rumpfs-test-kernel")


@dataclass
class Kernel:
    """An unpacked Debian kernel package: image and modules."""

    root: Path
    release: str
    #: Which package and version, and how it was chosen (for the logs).
    description: str = ""
    #: Module name -> .ko path, filled on first use.
    _index: dict | None = field(default=None, repr=False, compare=False)

    @classmethod
    def chosen(cls, pin_file: Path = PIN_FILE, cache: Path | None = None) -> "Kernel":
        """The pinned kernel if it is unpacked, else the one the setup script
        selected when Debian no longer offered the pin (see its ``selected``)."""
        cache = cache or cache_dir()
        pin = read_pin(pin_file)
        candidates = [(pin, "pinned")]
        selected = cache / "selected"
        if selected.exists():
            candidates.append((read_pin(selected), "selected by scripts/setup-test-kernel.sh"))
        for chosen, how in candidates:
            root = cache / f"{kernel_package(chosen['KABI'])}_{chosen['DEB']}"
            if (root / ".complete").exists():
                return cls(root, f"{chosen['KABI']}-amd64", f"{root.name} ({how})")
        raise KernelMissing(f"{kernel_package(pin['KABI'])} {pin['DEB']} is not unpacked in "
                            f"{cache}: run scripts/setup-test-kernel.sh")

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release

    def module_path(self, name: str) -> Path:
        """The .ko of a module; names match with '-' and '_' alike."""
        if self._index is None:
            self._index = {p.name[:-3].replace("-", "_"): p
                           for p in (self.modules / "kernel").rglob("*.ko")}
        try:
            return self._index[name.replace("-", "_")]
        except KeyError:
            raise KernelMissing(f"module {name} not found under {self.modules}") from None

    def module_order(self, names) -> list[str]:
        """``names`` with their dependencies, each after what it needs.

        The package has no modules.dep (depmod runs at install time), so the
        ``depends=`` string of each module's .modinfo section is read.
        """
        order: list[str] = []

        def visit(name, stack=()):
            name = name.replace("-", "_")
            if name in order:
                return
            if name in stack:
                raise ValueError(f"module dependency cycle: {' -> '.join(stack + (name,))}")
            for dep in module_depends(self.module_path(name)):
                visit(dep, stack + (name,))
            order.append(name)

        for n in names:
            visit(n)
        return order


def module_depends(path: Path) -> list[str]:
    """The ``depends=`` list of a kernel module's .modinfo strings."""
    data = path.read_bytes()
    # .modinfo holds NUL-terminated "key=value" strings; the key is unique.
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    if not m:
        return []
    return [d.decode() for d in m.group(1).split(b",") if d]


# -- the helper initramfs --------------------------------------------------

def build_helper(dest: Path, kernel: Kernel, plan: str, modules=DISK_MODULES) -> Path:
    """Write the helper archive (newc, made by GNU cpio) to ``dest``.

    ``plan`` is the shell text the guest's init runs: calls of ``load``,
    ``list_initramfs``, ``list_disk``, ``switch_into`` (see guest/init).
    Module loading is prepended, so plans only say what to look at.
    """
    stage = dest.with_suffix(".d")
    if stage.exists():
        shutil.rmtree(stage)
    top = stage / HELPER_DIR
    for sub in ("bin", "dev", "proc", "mnt", "modules", "newroot"):
        (top / sub).mkdir(parents=True)
    shutil.copyfile(BUSYBOX, top / "bin" / "busybox")
    os.chmod(top / "bin" / "busybox", 0o755)
    shutil.copyfile(GUEST / "init", top / "init")
    os.chmod(top / "init", 0o755)
    shutil.copyfile(GUEST / "lib.sh", top / "lib.sh")
    order = kernel.module_order(modules)
    for name in order:
        shutil.copyfile(kernel.module_path(name), top / "modules" / f"{name}.ko")
    (top / "plan").write_text(f"load {' '.join(order)}\n{plan}\n")
    names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    with open(dest, "wb") as out:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"],
                       input="\n".join(names).encode() + b"\n", stdout=out, cwd=stage, check=True)
    shutil.rmtree(stage)
    return dest


def check_cpio(path: Path) -> int:
    """Have GNU cpio read the whole archive (decompressed by the stock tools).

    The kernel unpacks a truncated archive without a word, so this is what
    catches one.  Returns the number of entries; raises with cpio's message.
    """
    name = path.name
    decompress = None
    for suffix, cmd in ((".gz", ["gzip", "-dc"]), (".xz", ["xz", "-dc"]),
                        (".zst", ["zstd", "-dcq"]), (".lz4", ["lz4", "-dcq"])):
        if name.endswith(suffix):
            decompress = cmd
    if decompress:
        dec = subprocess.run(decompress + [str(path)], capture_output=True)
        if dec.returncode != 0:
            raise BootError(f"{path}: {decompress[0]} cannot decompress it: "
                            f"{dec.stderr.decode(errors='replace').strip()}")
        data = dec.stdout
    else:
        data = path.read_bytes()
    proc = subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True)
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0 or err:
        raise BootError(f"{path}: GNU cpio rejects the archive: {err or f'exit status {proc.returncode}'}")
    return proc.stdout.count(b"\n")


def initrd_with(dest: Path, helper: Path, archive: Path | None) -> Path:
    """The initrd of a boot: the helper, then the archive under test.

    The archive is read by GNU cpio first; a bad one never reaches the kernel.
    """
    if archive is not None:
        check_cpio(archive)
    return concatenate(dest, [helper] + ([archive] if archive is not None else []))


def concatenate(dest: Path, parts) -> Path:
    """One initrd of several archives; each part starts 4-byte aligned."""
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
            out.write(b"\0" * (-out.tell() % 4))
    return dest


# -- booting ---------------------------------------------------------------

@dataclass
class Disk:
    """An image attached as a virtio disk, and how the guest should mount it."""

    path: Path
    ufstype: str = "44bsd"


@dataclass
class Section:
    label: str
    status: str
    lines: list = field(default_factory=list)


@dataclass
class Boot:
    """What one boot left behind: the console log and the result sections."""

    console: str
    sections: dict
    log_dir: Path
    seconds: float
    returncode: int | None

    def section(self, label: str) -> Section:
        if label not in self.sections:
            raise BootError(f"no section {label!r} in the guest's results "
                            f"(have {sorted(self.sections)}); logs in {self.log_dir}")
        return self.sections[label]

    def listing(self, label: str) -> dict:
        sec = self.section(label)
        if sec.status != "rc=0":
            raise BootError(f"section {label!r} ended with {sec.status}; logs in {self.log_dir}")
        return parse_listing(sec.lines, label)

    def kernel_errors(self) -> list[str]:
        """Kernel messages at error level or worse from the guest's dmesg."""
        sec = self.sections.get("dmesg")
        return kernel_errors(sec.lines if sec else [])

    def problems(self) -> list[str]:
        """Everything that fails a boot regardless of what is compared."""
        out = []
        if self.returncode is None:
            out.append("qemu timed out")
        if "done" not in self.sections:
            out.append("the guest did not reach the end of its plan")
        if "dmesg" not in self.sections:
            out.append("the guest did not report the kernel log")
        for label, sec in self.sections.items():
            if label.startswith(("mount-failed", "error")):
                text = "; ".join(line.decode(errors="replace") for line in sec.lines)
                out.append(f"{label}: {text}")
            elif sec.status != "rc=0":
                out.append(f"section {label!r} ended with {sec.status}")
        out += [f"kernel error: {m}" for m in self.kernel_errors()]
        out += [f"console: {line}" for line in console_failures(self.console)]
        return out

    def assert_clean(self) -> None:
        problems = self.problems()
        if problems:
            raise BootError(f"{len(problems)} problem(s) in the boot (logs in {self.log_dir}):\n"
                            + "\n".join(problems[:40]))


def boot(kernel: Kernel, initrd: Path, disks=(), log_dir: Path | None = None,
         timeout: float | None = None, memory_mb: int = 768) -> Boot:
    """Boot ``kernel`` with ``initrd`` and the disks; return what the guest said.

    ``log_dir`` receives console.log (kernel and init output), results.log
    (the second serial port) and qemu.cmd.
    """
    log_dir = Path(log_dir or initrd.parent)
    log_dir.mkdir(parents=True, exist_ok=True)
    console = log_dir / "console.log"
    results = log_dir / "results.log"
    timeout = timeout or float(os.environ.get("RUMPFS_KERNEL_TIMEOUT", DEFAULT_TIMEOUT))
    accel = os.environ.get("RUMPFS_QEMU_ACCEL", "tcg")
    cmd = [
        QEMU, "-accel", accel, "-cpu", "max", "-m", str(memory_mb), "-smp", "1",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(kernel.image), "-initrd", str(initrd),
        "-append", KERNEL_CMDLINE,
        "-serial", f"file:{console}", "-serial", f"file:{results}",
    ]
    for i, disk in enumerate(disks):
        cmd += ["-drive", f"file={disk.path},format=raw,if=virtio,readonly=on,index={i}"]
    (log_dir / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    (log_dir / "kernel").write_text(f"{kernel.description or kernel.root}\n")
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        rc = proc.returncode
        if proc.stderr:
            (log_dir / "qemu.stderr").write_bytes(proc.stderr)
        if rc != 0:
            raise BootError(f"qemu exited with {rc}: {proc.stderr.decode(errors='replace').strip()}"
                            f" (logs in {log_dir})")
    except subprocess.TimeoutExpired:
        rc = None
    seconds = time.monotonic() - start
    text = console.read_bytes().decode("utf-8", "replace") if console.exists() else ""
    raw = results.read_bytes() if results.exists() else b""
    return Boot(text, parse_sections(raw, log_dir), log_dir, seconds, rc)


def load_boot(log_dir: Path) -> Boot:
    """A finished boot from the logs it left (see :func:`boot_once`)."""
    state = json.loads((log_dir / "boot.json").read_text())
    console = (log_dir / "console.log").read_bytes().decode("utf-8", "replace")
    raw = (log_dir / "results.log").read_bytes()
    return Boot(console, parse_sections(raw, log_dir), log_dir, state["seconds"], state["returncode"])


def boot_once(kernel: Kernel, work: Path, prepare) -> Boot:
    """Boot once per test session, however many test processes ask.

    ``prepare(work)`` makes the inputs in ``work`` and returns (initrd,
    disks).  pytest-xdist workers share ``work``'s parent; a lock file lets
    the first one boot while the others wait and then read its logs.
    """
    work.parent.mkdir(parents=True, exist_ok=True)
    log_dir = work / "logs"
    with open(work.parent / f"{work.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (log_dir / "boot.json").exists():
            return load_boot(log_dir)
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        initrd, disks = prepare(work)
        result = boot(kernel, initrd, disks, log_dir=log_dir)
        (log_dir / "boot.json").write_text(json.dumps({
            "seconds": result.seconds, "returncode": result.returncode}))
        return result


# -- parsing what the guest printed ----------------------------------------

def parse_sections(raw: bytes, where="the results") -> dict[str, Section]:
    """Split the results port's output into labelled sections.

    A section whose end marker never came (the guest died, the port was
    cut) is not returned, so a half listing can never pass for a whole one.
    """
    sections: dict[str, Section] = {}
    current: Section | None = None
    for line in raw.replace(b"\r", b"").split(b"\n"):
        m = MARKER.match(line)
        if m and m.group(1) == b"BEGIN":
            current = Section(m.group(2).decode(errors="replace"), "")
        elif m:
            label, _, status = m.group(2).decode(errors="replace").rpartition(" ")
            if current is None or label != current.label:
                raise BootError(f"end of section {label!r} without its beginning in {where}")
            if label in sections:
                raise BootError(f"section {label!r} reported twice in {where}")
            current.status = status
            sections[label] = current
            current = None
        elif current is not None:
            current.lines.append(line)
    return sections


def parse_listing(lines, label="listing") -> dict[bytes, dict]:
    """A listing section (see guest/lib.sh) as treecompare records by path."""
    try:
        stream = bytes.fromhex("".join(line.decode("ascii").strip() for line in lines))
    except ValueError:
        raise BootError(f"{label}: the listing is not hex") from None
    fields = stream.split(b"\0")
    if fields[-1] != b"" or len(fields) % 3 != 1:
        raise BootError(f"{label}: the listing does not end with a whole record")
    out: dict[bytes, dict] = {}
    for i in range(0, len(fields) - 1, 3):
        head, path, target = fields[i:i + 3]
        f = head.decode("ascii", "replace").split(" ")
        if f[0] != "E" or len(f) != 10:
            raise BootError(f"{label}: malformed record {head!r} for {path!r}")
        try:
            mode, uid, gid, size, nlink = int(f[1], 16), int(f[2]), int(f[3]), int(f[4]), int(f[5])
            major, minor, mtime = int(f[6], 16), int(f[7], 16), int(f[8])
        except ValueError:
            raise BootError(f"{label}: malformed record {head!r} for {path!r}") from None
        kind = treecompare.TYPES.get(stat.S_IFMT(mode), "unknown")
        rdev = (major, minor) if kind in ("chardev", "blockdev") else None
        if path in out:
            raise BootError(f"{label}: {path!r} listed twice")
        out[path] = treecompare.record(kind, mode, uid, gid, size, nlink, mtime,
                                       target if kind == "symlink" else None, rdev,
                                       None if f[9] == "-" else f[9])
    if b"" not in out:
        raise BootError(f"{label}: the listing has no root entry (cut short?)")
    return out


def kernel_errors(dmesg_lines) -> list[str]:
    """Messages of ``dmesg -r`` at KERN_ERR or worse (facility 0, the kernel),
    less the known-benign ones of emulated hardware."""
    out = []
    for line in dmesg_lines:
        m = re.match(rb"<(\d+)>((?:\[ *[0-9.]+\] )?(.*))", line)
        if not m or int(m.group(1)) not in ERROR_LEVELS:
            continue
        if BENIGN_KERNEL_ERRORS.fullmatch(m.group(3).decode(errors="replace").strip()):
            continue
        out.append(m.group(2).decode(errors="replace").strip())
    return out


def console_failures(console: str) -> list[str]:
    return [line.strip() for line in console.splitlines() if CONSOLE_FAILURES.search(line)]


def compare(expected: dict, actual: dict, keys=treecompare.ALL_KEYS, ignore=(), what="listing") -> None:
    """Raise naming every difference between the source tree and a listing."""
    diffs = treecompare.differences(expected, actual, keys, ignore)
    if diffs:
        more = f"\n... and {len(diffs) - 60} more" if len(diffs) > 60 else ""
        raise AssertionError(f"{what}: {len(diffs)} difference(s) from the source tree:\n"
                             + "\n".join(diffs[:60]) + more)


# -- what the kernel adds to an initramfs ----------------------------------

#: Entries of the kernel's built-in initramfs (usr/default_cpio_list, used
#: when CONFIG_INITRAMFS_SOURCE is empty, as in Debian), unpacked before the
#: initrd: path -> (type, permission bits, rdev).
KERNEL_BUILTIN = {
    b"dev": ("dir", 0o755, None),
    b"dev/console": ("chardev", 0o600, (5, 1)),
    b"root": ("dir", 0o700, None),
}


def initramfs_view(listing: dict, expected: dict) -> dict:
    """The initramfs listing as our archive alone made it.

    Drops what the kernel's built-in archive adds and our tree does not have
    (checking that it is exactly that), and takes the helper's directory and
    those extra directories out of the root's link count.
    """
    view = dict(listing)
    extra_subdirs = 1  # /.rumpfs-test, pruned from the listing
    for path, (kind, mode, rdev) in KERNEL_BUILTIN.items():
        if path in expected or path not in view:
            continue
        rec = view.pop(path)
        if (rec["type"], rec["mode"], rec["rdev"]) != (kind, mode, rdev):
            raise AssertionError(f"/{path.decode()}: not the kernel's built-in entry: {rec}")
        if kind == "dir" and b"/" not in path:
            extra_subdirs += 1
    root = dict(view[b""])
    root["nlink"] -= extra_subdirs
    view[b""] = root
    return view


def flip_byte_in(image: Path, needle: bytes, delta: int = 7) -> int:
    """Invert one byte of the only copy of ``needle`` in ``image``; its offset.

    Used to corrupt one file's data and see the comparison catch it.
    """
    data = image.read_bytes()
    first = data.find(needle)
    if first < 0 or data.find(needle, first + 1) >= 0:
        raise AssertionError(f"{image}: the data to corrupt is not there exactly once")
    offset = first + delta
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(bytes([data[offset] ^ 0xFF]))
    return offset
