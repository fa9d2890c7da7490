"""Build the Multiboot test kernel and boot bundles under qemu.

The kernel (kernel.c, boot.S, linker.ld) prints on COM1 what its loader
handed it: the command line, and each module's length, SHA-256 and string;
then it leaves qemu through the isa-debug-exit device.  :func:`boot` runs
qemu until the kernel's report ends, a loader stops at its prompt
(ISOLINUX's ``boot:``, GRUB's ``grub>``: a refused or missing
configuration) or cannot read a sector, or the firmware or isolinux.bin
gives up (a bundle it cannot read); :func:`expected` computes, from the
bundle's inputs alone, what the report must say.

Two consoles are read: COM1 (what ISOLINUX's ``SERIAL`` directive and the
kernel print) and the text screen, which SeaBIOS mirrors to COM2 when told
to by its ``etc/sercon-port`` fw_cfg file: isolinux.bin's own messages
("Failed to load ldlinux.c32", "Boot failed: press a key to retry...") come
before any config is read, so they only ever reach the screen.
"""

from __future__ import annotations

import hashlib
import os
import re
import selectors
import shutil
import subprocess
import tempfile
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
#: SeaBIOS's serial console ("sercon"): the I/O port its text screen is
#: mirrored to, a little-endian integer fw_cfg file.  COM2, so that the
#: screen's copy of what ISOLINUX also prints on COM1 does not interleave
#: with it.
SERCON_FILE = "etc/sercon-port"
COM2_PORT = 0x2F8
SERCON_PORT_BYTES = COM2_PORT.to_bytes(2, "little")
KERNEL_EXIT_STATUS = 1
BEGIN = b"@@BUNDLE-BEGIN@@"
END = b"@@BUNDLE-END@@\n"
#: Where ISOLINUX waits when it will not boot the entry (e.g. "cmdline too long").
LOADER_PROMPT = b"boot: "
#: GRUB's shell, where it lands (on COM1 under OVMF) when its config is not
#: found or fails.
GRUB_PROMPT = b"grub> "
#: What the screen says when nothing more will happen without a key press:
#: isolinux.bin could not load ldlinux.c32 (or another part of itself), or
#: SeaBIOS found nothing it could boot.
FIRMWARE_STOPS = (b"Boot failed: press a key to retry", b"No bootable device")
#: ISOLINUX's line (on COM1) for a sector it could not read through INT 13h,
#: the EDD (LBA) call or, as a disk, the older CHS one; a bundle whose
#: sectors are all there never shows one.  After it ISOLINUX may retry,
#: go on with what it has or hang: the boot has failed either way.
LOADER_READ_ERROR = re.compile(rb"(?:CHS|EDD): Error [0-9a-f]{4} reading sector \d+[^\n]*\n")
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
    #: The text screen (SeaBIOS, isolinux.bin, ISOLINUX), as mirrored to COM2.
    screen: bytes = b""
    #: qemu's own messages.
    stderr: bytes = b""

    @property
    def screen_text(self) -> bytes:
        return screen_text(self.screen)

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
    collect COM1 and the screen until qemu exits, the loader prompts or the
    firmware gives up; ``timeout`` (seconds of silence) is a safety net."""
    with tempfile.TemporaryDirectory(prefix="rumpfs-boot-") as scratch:
        sercon = Path(scratch) / "sercon-port"
        sercon.write_bytes(SERCON_PORT_BYTES)
        screen_r, screen_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [*QEMU_BASE, "-fw_cfg", f"name={SERCON_FILE},file={sercon}",
                 "-serial", f"file:/dev/fd/{screen_w}", *extra, *drive_args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(screen_w,))
        finally:
            os.close(screen_w)
        with os.fdopen(screen_r, "rb", buffering=0) as screen_pipe:
            return _collect(proc, screen_pipe, timeout)


def _collect(proc, screen_pipe, timeout: float) -> Boot:
    streams = {proc.stdout: b"", screen_pipe: b"", proc.stderr: b""}
    try:
        with selectors.DefaultSelector() as sel:
            for stream in streams:
                sel.register(stream, selectors.EVENT_READ)
            while sel.get_map():
                ready = sel.select(timeout)
                if not ready:
                    raise AssertionError(
                        f"qemu: nothing on COM1 or the screen for {timeout} s; COM1 so far:\n"
                        f"{streams[proc.stdout][-2000:].decode('latin-1')}\nthe screen:\n"
                        f"{streams[screen_pipe][-2000:].decode('latin-1')}")
                for key, _ in ready:
                    chunk = os.read(key.fileobj.fileno(), 65536)
                    if chunk:
                        streams[key.fileobj] += chunk
                    else:
                        sel.unregister(key.fileobj)
                if _finished(streams[proc.stdout], streams[screen_pipe]):
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return Boot(streams[proc.stdout], proc.returncode, streams[screen_pipe], streams[proc.stderr])


#: SeaBIOS's serial console moves the cursor where the text goes, even in
#: the middle of a word: ESC c, CSI sequences (cursor moves, modes) and, to
#: reach column 0, a carriage return without a line feed.  The characters
#: themselves come in the order they were written.
CURSOR_MOVES = re.compile(rb"\x1bc|\x1b\[[0-9;?=]*[A-Za-z]|\r(?!\n)")


def screen_text(screen: bytes) -> bytes:
    """The text of a console that moves its cursor: the characters in the
    order they were written, without the moves."""
    return CURSOR_MOVES.sub(b"", screen)


def _finished(serial: bytes, screen: bytes) -> bool:
    """Nothing more will come, or nothing more is needed: the loader waits
    at its prompt, could not read a sector, or the firmware or isolinux.bin
    gave up.  (After its report the kernel exits qemu itself, and that exit
    status is part of the result: wait for EOF.)"""
    if END in serial:
        return False
    if serial.rstrip().endswith(LOADER_PROMPT.rstrip()) or LOADER_READ_ERROR.search(serial):
        return True
    if screen_text(serial).rstrip().endswith(GRUB_PROMPT.rstrip()):
        return True
    text = screen_text(screen)
    return any(stop in text for stop in FIRMWARE_STOPS)


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
