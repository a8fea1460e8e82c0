#!/usr/bin/env python3
"""Summarise the errors in the client logs of a scripts/bench.sh run.

    logscan.py LOGDIR

Reads LOGDIR/{ftpfs,rclone,rclone-writes}-SERVER-DELAY.log and prints one
line per log that has errors: the most frequent messages (file names and
numbers folded) with their counts. Used for the report's "Problems and
observations" section.
"""

import collections
import glob
import os
import re
import sys

TS_RCLONE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")
TS_ENV = re.compile(r"^\[\S+ (\w+) +([\w:]+)\] ")


def fold(msg):
    msg = re.sub(r"ftp://[^\s:]+:\d+", "ftp://HOST", msg)
    msg = re.sub(r"(?<![\w:/])/[\w./-]+", "PATH", msg)
    msg = re.sub(r"\b[A-Za-z_.][\w.-]*/[\w./-]+", "PATH", msg)
    msg = re.sub(r"\b\.?f\d+\S*", "FILE", msg)
    msg = re.sub(r"\d+", "N", msg)
    return msg.strip()[:140]


def scan(path):
    name = os.path.basename(path)[:-4]
    counts = collections.Counter()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if name.startswith("rclone"):
                if not TS_RCLONE.match(line):
                    continue
                rest = TS_RCLONE.sub("", line)
                if not rest.startswith("ERROR"):
                    continue
                # "ERROR : object: message" -> message
                parts = rest.split(" : ", 1)
                msg = parts[1] if len(parts) > 1 else rest
                obj, _, tail = msg.partition(": ")
                if tail and not obj.startswith("ftp://"):
                    msg = tail
                counts[fold(msg)] += 1
                if "object not found" in msg and "object not found" not in fold(msg):
                    counts["object not found"] += 1
            else:
                m = TS_ENV.match(line)
                if not m:
                    continue
                level, module = m.groups()
                if level == "ERROR" or (level == "WARN" and module.startswith("ftpfs")):
                    counts[fold(TS_ENV.sub("", line))] += 1
    return name, counts


# Known messages and what they mean for the benchmark.
EXPLAIN = {
    "SetModTime is not supported": "rclone cannot set modification times on this "
    "server (no MFMT), so what it uploads keeps the upload time and `rsync -a` "
    "re-sends those files on every run",
    "object not found": "rclone could not find a file it had just written: its "
    "plain `LIST` does not show dot-files on vsftpd, which breaks rsync's hidden "
    "temporary files (`.name.XXXXXX`) in the default VFS mode",
}


def main():
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.log"))):
        base = os.path.basename(path)
        if not base.startswith(("ftpfs-", "rclone-")):
            continue
        name, counts = scan(path)
        if not counts:
            continue
        total = sum(counts.values())
        top = "; ".join(f"{n}× `{m}`" for m, n in counts.most_common(3))
        why = [text for key, text in EXPLAIN.items() if any(key in m for m in counts)]
        print(f"log of {name}: {total} error lines, most frequent: {top}"
              + "".join(f". Note: {w}" for w in why))


if __name__ == "__main__":
    main()
