#!/usr/bin/env python3
"""Test data for scripts/bench.sh.

    gendata.py files DIR COUNT SIZE [--random] [--prefix P]

Creates DIR with COUNT files named P00000... of SIZE bytes each (random bytes
with --random, else a short text), all with the same whole-second mtime
(FTP servers keep whole seconds only, so a tree copied with `rsync -a` can
compare equal afterwards).
"""

import argparse
import os
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["files"])
    p.add_argument("dir")
    p.add_argument("count", type=int)
    p.add_argument("size", type=int)
    p.add_argument("--random", action="store_true")
    p.add_argument("--prefix", default="f")
    a = p.parse_args()

    os.makedirs(a.dir, exist_ok=True)
    mtime = int(time.time()) - 3600
    width = max(5, len(str(a.count)))
    for i in range(a.count):
        path = os.path.join(a.dir, f"{a.prefix}{i:0{width}d}")
        if a.random:
            data = os.urandom(a.size)
        else:
            data = (f"entry {i}\n" * (a.size // 8 + 1)).encode()[: a.size]
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (mtime, mtime))
    os.utime(a.dir, (mtime, mtime))


if __name__ == "__main__":
    main()
