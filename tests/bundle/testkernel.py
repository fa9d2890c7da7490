"""Build the Multiboot test kernel and boot bundles under qemu.

The kernel (kernel.c, boot.S, linker.ld) prints on COM1 what its loader
handed it: the command line, and each module's length, SHA-256 and string;
then it leaves qemu through the isa-debug-exit device.  :func:`boot` runs
qemu until the kernel's report ends or the loader stops at its ``boot:``
prompt (a refused configuration), and :func:`expected` computes, from the
bundle's inputs alone, what the report must say.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ("boot.S", "kernel.c")
CROSS_CC = "i686-linux-gnu-gcc"
CFLAGS = ["-O2", "-ffreestanding", "-nostdlib", "-fno-pic", "-static", "-fno-stack-protector",
          "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments",
          f"-Wl,-T,{HERE / 'linker.ld'}"]

QEMU = os.environ.get("RUMPFS_QEMU", "qemu-system-x86_64")
#: qemu exits with (code << 1) | 1 when the kernel writes code to isa-debug-exit.
DEBUG_EXIT = ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
QEMU_BASE = [QEMU, "-m", "64", "-display", "none", "-serial", "stdio", "-monitor", "none",
             "-nic", "none", "-no-reboot", *DEBUG_EXIT]
KERNEL_EXIT_STATUS = 1
BEGIN = b"@@BUNDLE-BEGIN@@"
END = b"@@BUNDLE-END@@\n"
#: Where ISOLINUX waits when it will not boot the entry (e.g. "cmdline too long").
LOADER_PROMPT = b"boot: "
#: A safety limit only: a good boot takes a few seconds under TCG.
BOOT_TIMEOUT = 120
MULTIBOOT_LOADER_MAGIC = "2badb002"


def compiler() -> list[str]:
    if shutil.which(CROSS_CC):
        return [CROSS_CC, "-m32"]
    return ["gcc", "-m32"]


def build(dest: Path) -> Path:
    """Compile the test kernel into ``dest`` (an ELF32 Multiboot kernel)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "testkernel.elf"
    subprocess.run([*compiler(), *CFLAGS, "-o", str(out), *(str(HERE / s) for s in SOURCES)],
                   check=True, capture_output=True)
    return out


@dataclass
class Report:
    """What the test kernel printed."""
    magic: str = ""
    cmdline: bytes = b""
    #: (length, sha256 hex, string) per module, in order.
    modules: list = field(default_factory=list)


@dataclass
class Boot:
    serial: bytes
    returncode: int | None

    @property
    def report(self) -> Report:
        return parse(self.serial)


def parse(serial: bytes) -> Report:
    """The report between the markers; AssertionError with the console's tail if none."""
    start = serial.rfind(BEGIN)
    end = serial.find(END, start)
    if start < 0 or end < 0:
        raise AssertionError(f"no test kernel report on the serial console; it ends with:\n"
                             f"{serial[-2000:].decode('latin-1')}")
    lines = serial[start + len(BEGIN):end].strip(b"\r\n").split(b"\n")
    report = Report()
    count = None
    for line in lines:
        line = line.rstrip(b"\r")
        key, _, rest = line.partition(b" ")
        if key == b"magic":
            report.magic = rest.decode()
        elif key == b"cmdline":
            report.cmdline = rest
        elif key == b"modules":
            count = int(rest)
        elif key == b"module":
            _index, length, digest, string = (rest.split(b" ", 3) + [b""])[:4]
            report.modules.append((int(length), digest.decode(), string))
        else:
            raise AssertionError(f"unexpected line from the test kernel: {line!r}")
    assert count == len(report.modules), f"kernel said {count} modules, listed {len(report.modules)}"
    return report


def boot(*drive_args: str, timeout: float = BOOT_TIMEOUT, extra=()) -> Boot:
    """Boot qemu with ``drive_args`` (``-cdrom X`` or ``-drive ...``) and
    collect the serial console until qemu exits or the loader prompts."""
    proc = subprocess.Popen([*QEMU_BASE, *extra, *drive_args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    serial = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                if not sel.select(timeout):
                    raise AssertionError(f"qemu: nothing on the console for {timeout} s; so far:\n"
                                         f"{serial[-2000:].decode('latin-1')}")
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                serial += chunk
                # After the report the kernel exits qemu itself (EOF): its
                # exit status is part of the result.  At the loader's prompt
                # nothing more comes.
                if END not in serial and serial.rstrip().endswith(LOADER_PROMPT.rstrip()):
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    return Boot(serial, proc.returncode)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expected(cmdline: bytes, modules) -> Report:
    """The report the kernel must print: ``modules`` is (host file, string)."""
    return Report(MULTIBOOT_LOADER_MAGIC, cmdline,
                  [(os.path.getsize(p), sha256_file(p), s) for p, s in modules])
