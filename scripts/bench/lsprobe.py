#!/usr/bin/env python3
"""`ls -l` latency while a large upload runs, for scripts/bench.sh.

    lsprobe.py SRC DST [--server-file PATH] [--every SECS] [--probe-limit SECS]

Starts `cp SRC DST` and, until it has exited and (with --server-file) PATH on
the server's disk has the size of SRC, runs `ls -l` of DST's directory every
--every seconds (default 0.1), each under --probe-limit seconds (default 60;
a probe that hits it counts as that long). Prints one line:

    WORST MEDIAN PROBES CP_SECS UPLOAD_SECS

(seconds; UPLOAD_SECS is until the file was complete on the server). Exits 1
if cp failed, 2 if no probe ran, 3 if a probe failed. If the file never
becomes complete on the server, the caller's timeout ends the wait.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time


def probe(directory, limit):
    """Seconds one `ls -l DIR` took, and whether it succeeded."""
    t0 = time.monotonic()
    try:
        ok = subprocess.run(
            ["ls", "-l", "--", directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=limit,
        ).returncode == 0
    except subprocess.TimeoutExpired:
        return limit, False
    return time.monotonic() - t0, ok


def complete(path, size):
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--server-file")
    p.add_argument("--every", type=float, default=0.1)
    p.add_argument("--probe-limit", type=float, default=60.0)
    a = p.parse_args()

    size = os.stat(a.src).st_size
    directory = os.path.dirname(os.path.abspath(a.dst))
    t0 = time.monotonic()
    cp = subprocess.Popen(["cp", "--", a.src, a.dst])
    cp_secs = None
    times, failed = [], 0
    while True:
        if cp_secs is None and cp.poll() is not None:
            cp_secs = time.monotonic() - t0
            if cp.returncode != 0:
                print(f"cp failed with status {cp.returncode}", file=sys.stderr)
                return 1
        if cp_secs is not None and (
            a.server_file is None or complete(a.server_file, size)
        ):
            break
        secs, ok = probe(directory, a.probe_limit)
        times.append(secs)
        failed += not ok
        time.sleep(a.every)
    upload_secs = time.monotonic() - t0
    if not times:
        print("the upload ended before the first probe", file=sys.stderr)
        return 2
    print(
        f"{max(times):.3f} {statistics.median(times):.3f} {len(times)} "
        f"{cp_secs:.3f} {upload_secs:.3f}"
    )
    if failed:
        print(f"{failed} of {len(times)} ls -l failed", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
