"""The floor of any Python packer: walk a tree with scandir and lstat every entry.

    python -m bench.walkfloor DIR   (prints the entry count)
"""

import os
import sys


def walk(top: bytes) -> int:
    count = 0
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = os.lstat(entry.path)
                count += 1
                if entry.is_dir(follow_symlinks=False) and st:
                    stack.append(entry.path)
    return count


if __name__ == "__main__":
    print(walk(os.fsencode(sys.argv[1])))
