"""Read an image back with a tool rumpfs did not write, for the benchmark notes.

    python -m bench.verify ffs IMAGE [SPARSE_PATH]   (dissect.ffs)
    python -m bench.verify cpio IMAGE [DECOMPRESSOR]  (bsdtar -t, after e.g. "zstd -dc")
    python -m bench.verify iso IMAGE                 (isoinfo -R -f)
    python -m bench.verify fat IMAGE                 (fsck.fat -n, then mdir -/ -b)
    python -m bench.verify elf OBJECT                (readelf -S)

Prints one JSON object: the entry count seen, and for ``ffs`` with a
``SPARSE_PATH`` the bytes that file's inode has allocated (``di_blocks``).
"""

from __future__ import annotations

import json
import subprocess
import sys


def ffs_entries(image: str, sparse: str | None = None) -> dict:
    from dissect.ffs import FFS

    with open(image, "rb") as fh:
        fs = FFS(fh)
        count = 1  # the root
        stack = [fs.get("/")]
        while stack:
            node = stack.pop()
            for name, child in node.listdir().items():
                if name in (".", ".."):
                    continue
                count += 1
                if child.is_dir():
                    stack.append(child)
        out = {"entries": count}
        if sparse:
            inode = fs.get(sparse)
            out["sparse_size"] = inode.size
            out["sparse_allocated"] = inode.inode.di_blocks * 512
    return out


def cpio_entries(image: str, decompressor: str | None = None) -> dict:
    if decompressor:
        # The standard tool decompresses, bsdtar reads the archive from the pipe.
        with open(image, "rb") as f:
            unpack = subprocess.Popen(decompressor.split(), stdin=f, stdout=subprocess.PIPE)
            proc = subprocess.run(["bsdtar", "-tf", "-"], stdin=unpack.stdout, capture_output=True)
            unpack.stdout.close()
            if unpack.wait() != 0 or proc.returncode != 0:
                raise SystemExit(f"{decompressor} | bsdtar -t failed: {proc.stderr.decode().strip()}")
    else:
        proc = subprocess.run(["bsdtar", "-tf", image], capture_output=True, check=True)
    names = [n for n in proc.stdout.split(b"\n") if n]
    # A leading "." (the root) is optional in an archive.
    return {"entries": len(names) + (0 if names and names[0] in (b".", b"./") else 1)}


def iso_entries(image: str) -> dict:
    """Every path under the root, Rock Ridge names (one per line), plus the root."""
    proc = subprocess.run(["isoinfo", "-R", "-f", "-i", image], capture_output=True, check=True)
    return {"entries": 1 + sum(1 for n in proc.stdout.split(b"\n") if n)}


def fat_entries(image: str) -> dict:
    """fsck.fat finds no fault, and mdir lists every path under the root."""
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    check = subprocess.run(["fsck.fat", "-n", image], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"fsck.fat -n: {check.stdout.strip().splitlines()[-1]}")
    proc = subprocess.run(["mdir", "-/", "-b", "-i", image, "::/"], capture_output=True, check=True, env=env)
    return {"entries": 1 + sum(1 for n in proc.stdout.split(b"\n") if n.strip())}


def elf_sections(obj: str) -> dict:
    proc = subprocess.run(["readelf", "-SW", obj], capture_output=True, check=True, text=True)
    return {"sections": sum(1 for line in proc.stdout.splitlines() if line.lstrip().startswith("["))}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    kind, image = argv[0], argv[1]
    if kind == "ffs":
        result = ffs_entries(image, argv[2] if len(argv) > 2 else None)
    elif kind == "cpio":
        result = cpio_entries(image, argv[2] if len(argv) > 2 else None)
    elif kind == "iso":
        result = iso_entries(image)
    elif kind == "fat":
        result = fat_entries(image)
    elif kind == "elf":
        result = elf_sections(image)
    else:
        raise SystemExit(f"unknown kind {kind}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
