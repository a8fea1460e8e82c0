#!/usr/bin/env python3
"""Random 4 KiB reads for scripts/bench.sh.

    randread.py gen COUNT FILE_SIZE SEED      print COUNT block-aligned offsets
    randread.py read OFFSETS FILE [--verify LOCAL] [--limit N]
        read 4 KiB at each offset of OFFSETS (one per line) with pread on a
        freshly opened FILE; print the seconds the reads took (open included).
        --verify compares every block with the same offset of LOCAL afterwards
        (not timed) and exits 3 on a mismatch.
    randread.py curlcfg OFFSETS URL USERPASS [--limit N] [--extra LINE]...
        print a curl config (-K) with one ranged request per offset,
        separated by `next`, so that one curl process makes every request;
        each --extra line (e.g. `ssl-reqd`) goes into every request.
"""

import argparse
import os
import random
import sys
import time

BLOCK = 4096


def read_offsets(path, limit):
    with open(path, encoding="ascii") as f:
        offs = [int(line) for line in f if line.strip()]
    return offs[:limit] if limit else offs


def cmd_gen(a):
    rng = random.Random(a.seed)
    blocks = a.size // BLOCK
    for _ in range(a.count):
        print(rng.randrange(blocks) * BLOCK)


def cmd_read(a):
    offs = read_offsets(a.offsets, a.limit)
    got = []
    t0 = time.perf_counter()
    fd = os.open(a.file, os.O_RDONLY)
    try:
        for off in offs:
            got.append(os.pread(fd, BLOCK, off))
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t0
    print(f"{elapsed:.3f}")
    if a.verify:
        with open(a.verify, "rb") as f:
            for off, data in zip(offs, got):
                f.seek(off)
                if f.read(BLOCK) != data:
                    sys.stderr.write(f"randread: wrong data at offset {off}\n")
                    sys.exit(3)


def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_curlcfg(a):
    offs = read_offsets(a.offsets, a.limit)
    blocks = []
    for off in offs:
        blocks.append(
            "\n".join(
                [
                    f"url = {q(a.url)}",
                    f"user = {q(a.userpass)}",
                    f"range = {off}-{off + BLOCK - 1}",
                    'output = "/dev/null"',
                    "silent",
                    "show-error",
                    "fail",
                ]
                + (a.extra or [])
            )
        )
    print("\nnext\n".join(blocks))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("count", type=int)
    g.add_argument("size", type=int)
    g.add_argument("seed", type=int)
    r = sub.add_parser("read")
    r.add_argument("offsets")
    r.add_argument("file")
    r.add_argument("--verify")
    r.add_argument("--limit", type=int, default=0)
    c = sub.add_parser("curlcfg")
    c.add_argument("offsets")
    c.add_argument("url")
    c.add_argument("userpass")
    c.add_argument("--limit", type=int, default=0)
    c.add_argument("--extra", action="append")
    a = p.parse_args()
    {"gen": cmd_gen, "read": cmd_read, "curlcfg": cmd_curlcfg}[a.cmd](a)


if __name__ == "__main__":
    main()
