#!/usr/bin/env python3
"""Turn the raw results of scripts/bench.sh into a markdown report.

    report.py WORKDIR > benchmarks.md

WORKDIR holds (all tab-separated, written by bench.sh):
  results.tsv  set, workload, label, contender, status, seconds, amount, unit, note
  sets.tsv     set, server, delay_ms, status, note
  meta.tsv     key, value        (machine, versions, sizes, options)
  notes.txt    free-form lines for the "Problems and observations" section
"""

import math
import os
import re
import sys

CONTENDERS = [
    ("raw", "raw (curl / lftp)"),
    ("ftpfs", "ftpfs"),
    ("rclone", "rclone mount (default VFS)"),
    ("rclone-writes", "rclone mount --vfs-cache-mode writes"),
]
RATE_UNITS = {"MiB": "MiB/s", "files": "files/s", "entries": "entries/s", "reads": "reads/s"}
WL_ORDER = ["read_cold", "read_warm", "write", "small_out", "small_in", "ls_cold",
            "ls_warm", "ls_during_upload", "rsync_noop", "rsync_fresh", "randread",
            "wb_cp_close", "wb_cp_async", "wb_tar_close", "wb_tar_async",
            "wb_write_close", "wb_write_async", "rsync_remount", "walk_find", "walk_du",
            "paced_read", "paced_read_pget", "peak_rss"]
RTT_S = 0.040  # 20 ms per direction


def read_tsv(path, ncols):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t")
            cols += [""] * (ncols - len(cols))
            rows.append(cols[:ncols])
    return rows


class Result:
    def __init__(self, row):
        (self.set, self.wl, self.label, self.cont, self.status, secs, amount,
         self.unit, self.note) = row
        self.secs = float(secs) if secs else None
        self.amount = float(amount) if amount else None

    @property
    def ok(self):
        return self.status == "ok" and self.secs is not None

    def rate(self):
        if not self.ok or self.secs <= 0 or self.amount is None:
            return None
        if self.unit == "MiB":
            return self.amount / 1048576 / self.secs
        return self.amount / self.secs


def fmt_secs(s):
    if s < 0.1:
        return f"{s * 1000:.1f} ms"
    if s < 10:
        return f"{s:.2f} s"
    return f"{s:.1f} s"


def fmt_rate(r, unit):
    u = RATE_UNITS.get(unit, unit + "/s")
    if r >= 100:
        return f"{r:,.0f} {u}"
    if r >= 10:
        return f"{r:.1f} {u}"
    return f"{r:.2f} {u}"


def cell(res, raw):
    if res is None:
        return "—"
    if res.unit == "KiB":  # peak RSS
        if not res.ok and res.amount is None:
            return res.status
        return f"{res.amount / 1024:.1f} MiB"
    if not res.ok:
        txt = res.status
        if res.note:
            txt += f" ({res.note})"
        return txt
    parts = [fmt_secs(res.secs)]
    r = res.rate()
    if r is not None:
        parts.append(fmt_rate(r, res.unit))
    if raw is not None and raw is not res and raw.ok and raw.secs > 0 and res.secs > 0:
        parts.append(f"**{raw.secs / res.secs:.2f}×** raw")
    txt = " · ".join(parts)
    if res.note:
        txt += f" <br>_{res.note}_"
    return txt


def speed_vs(a, b):
    """How many times faster a is than b (b.secs / a.secs)."""
    if a is None or b is None or not a.ok or not b.ok or a.secs <= 0:
        return None
    return b.secs / a.secs


def verdict(ok, text):
    if ok is None:
        return "n/a (" + text + ")"
    return ("**met**" if ok else "**missed**") + f" ({text})"


def targets_for(server, delay, get, run_rss_kib):
    """[(workload, target text, verdict text)] for one set."""
    out = []
    f = lambda wl: get(wl, "ftpfs")  # noqa: E731
    raw = lambda wl: get(wl, "raw")  # noqa: E731
    rcl = lambda wl: get(wl, "rclone")  # noqa: E731

    def latency_target(wl, limit, text):
        r = f(wl)
        ok = r.secs < limit if r is not None and r.ok else None
        out.append((wl, text,
                    verdict(ok, "n/a" if ok is None else fmt_secs(r.secs))))

    def ratio_target(wl, name, minimum):
        s = speed_vs(f(wl), raw(wl))
        out.append((wl, f"≥ {minimum:g}× {name} throughput",
                    verdict(None if s is None else s >= minimum,
                            "n/a" if s is None else f"{s:.2f}×")))

    if server == "vsftpd" and delay == 0:
        ratio_target("read_cold", "curl", 0.9)
        ratio_target("write", "curl -T", 0.8)
        for wl in ("small_out", "small_in"):
            s = speed_vs(raw(wl), f(wl))  # ftpfs time / lftp time
            out.append((wl, "≤ 1.3× lftp mirror time",
                        verdict(None if s is None else s <= 1.3,
                                "n/a" if s is None else f"{s:.2f}× lftp time")))
            s = speed_vs(f(wl), rcl(wl))
            out.append((wl, "≥ 3× faster than rclone (default)",
                        verdict(None if s is None else s >= 3,
                                "n/a" if s is None else f"{s:.2f}× faster")))
        s = speed_vs(raw("ls_cold"), f("ls_cold"))
        out.append(("ls_cold", "≤ 1.5× raw listing time",
                    verdict(None if s is None else s <= 1.5,
                            "n/a" if s is None else f"{s:.2f}× raw time")))
        latency_target("ls_warm", 0.050, "< 50 ms")
        latency_target("ls_during_upload", 0.5, "< 0.5 s")
        latency_target("rsync_noop", 2.0, "< 2 s")
        ok = run_rss_kib <= 64 * 1024 if run_rss_kib else None
        out.append(("peak_rss", "≤ 64 MiB (max over the whole run)",
                    verdict(ok, "n/a" if ok is None else f"{run_rss_kib / 1024:.1f} MiB")))
    elif server == "vsftpd" and delay == 20:
        ratio_target("read_cold", "curl (same proxy)", 0.8)
        latency_target("ls_during_upload", 0.5, "< 0.5 s")
        for wl in ("small_out", "small_in"):
            s = speed_vs(f(wl), rcl(wl))
            out.append((wl, "≥ 2× faster than rclone (default)",
                        verdict(None if s is None else s >= 2,
                                "n/a" if s is None else f"{s:.2f}× faster")))
        r = f("ls_cold")
        if r is not None and r.ok:
            rtts = r.secs / RTT_S
            out.append(("ls_cold", "≤ 5 round trips (RTT 40 ms)",
                        verdict(rtts <= 5, f"{rtts:.1f} RTT")))
        else:
            out.append(("ls_cold", "≤ 5 round trips (RTT 40 ms)", verdict(None, "n/a")))
    out.extend(writeback_targets(server, delay, get))
    if server == "distance":
        out.extend(distance_targets(get))
    return out


def distance_targets(get):
    """Issue #14's targets: remount rsync, tree walk, paced read."""
    out = []
    f, raw = get("rsync_remount", "ftpfs"), get("rsync_remount", "raw")
    noop = f is not None and f.ok and "not a no-op" not in (f.note or "")
    s = speed_vs(raw, f)
    ok = None if f is None or not f.ok else noop and s is not None and s <= 1.0
    out.append(("rsync_remount", "sends nothing, no slower than lftp mirror -R --only-newer",
                verdict(ok, "n/a" if s is None else
                        f"{'no-op' if noop else 'NOT a no-op'}, {s:.2f}× lftp time")))
    s = speed_vs(get("walk_find", "ftpfs"), get("walk_find", "raw"))
    out.append(("walk_find", "≥ 3× faster than lftp find",
                verdict(None if s is None else s >= 3, "n/a" if s is None else f"{s:.2f}×")))
    s = speed_vs(get("paced_read", "ftpfs"), get("paced_read", "raw"))
    out.append(("paced_read", "≥ 3.5× faster than curl",
                verdict(None if s is None else s >= 3.5, "n/a" if s is None else f"{s:.2f}×")))
    s = speed_vs(get("paced_read_pget", "raw"), get("paced_read_pget", "ftpfs"))
    out.append(("paced_read_pget", "no slower than lftp pget -n 4",
                verdict(None if s is None else s <= 1.0,
                        "n/a" if s is None else f"{s:.2f}× pget time")))
    return out


def returned_after(res):
    """The command's own time from a write-back row's note ("returned after X s")."""
    if res is None or not res.ok:
        return None
    m = re.search(r"returned after ([0-9.]+) s", res.note or "")
    return float(m.group(1)) if m else None


def big_write_targets(get):
    """A big sequential write is no slower in async mode: to return, and to land."""
    close, asyn = get("wb_write_close", "ftpfs"), get("wb_write_async", "ftpfs")
    rc, ra = returned_after(close), returned_after(asyn)
    ok = None if rc is None or ra is None else ra <= rc * 1.1
    out = [("wb_write_async", "big write returns no later than in close mode (10% noise)",
            verdict(ok, "n/a" if ok is None else f"{ra:.2f} s vs {rc:.2f} s"))]
    s = speed_vs(close, asyn)
    out.append(("wb_write_async", "big write on the server no later than in close mode (10% noise)",
                verdict(None if s is None else s <= 1.1,
                        "n/a" if s is None else f"{s:.2f}× close mode's time")))
    return out


def writeback_targets(server, delay, get):
    """Issue #13's targets: async against close mode, lftp and rclone writes."""
    out = []
    if server not in ("vsftpd", "pyftpdlib"):
        return out
    out += big_write_targets(get)
    if delay == 0:
        s = speed_vs(get("small_in", "raw"), get("small_in", "ftpfs"))
        out.append(("small_in", "≤ 1.0× lftp mirror -R -P1 time (close mode)",
                    verdict(None if s is None else s <= 1.0,
                            "n/a" if s is None else f"{s:.2f}× lftp time")))
        return out
    close, asyn = get("wb_cp_close", "ftpfs"), get("wb_cp_async", "ftpfs")
    rc, ra = returned_after(close), returned_after(asyn)
    ok = None if rc is None or ra is None or ra <= 0 else rc / ra >= 10
    out.append(("wb_cp_async", "cp returns ≥ 10× sooner than in close mode",
                verdict(ok, "n/a" if ok is None else f"{rc / ra:.1f}× sooner")))
    s = speed_vs(asyn, close)
    out.append(("wb_cp_async", "on the server ≥ 4× sooner than in close mode",
                verdict(None if s is None else s >= 4, "n/a" if s is None else f"{s:.2f}×")))
    s = speed_vs(get("wb_cp_async", "raw"), asyn)
    out.append(("wb_cp_async", "on the server no later than lftp mirror -R --parallel",
                verdict(None if s is None else s <= 1.0,
                        "n/a" if s is None else f"{s:.2f}× lftp time")))
    s = speed_vs(asyn, get("wb_cp_async", "rclone-writes"))
    out.append(("wb_cp_async", "on the server sooner than rclone --vfs-cache-mode writes",
                verdict(None if s is None else s > 1.0,
                        "n/a" if s is None else f"{s:.2f}× faster")))
    return out


def main():
    work = sys.argv[1]
    results = [Result(r) for r in read_tsv(os.path.join(work, "results.tsv"), 9)]
    sets = read_tsv(os.path.join(work, "sets.tsv"), 5)
    meta = dict((k, v) for k, v in read_tsv(os.path.join(work, "meta.tsv"), 2))
    notes = []
    if os.path.exists(os.path.join(work, "notes.txt")):
        with open(os.path.join(work, "notes.txt"), encoding="utf-8") as f:
            notes = [ln.rstrip("\n") for ln in f if ln.strip()]

    by_key = {}
    order = {}
    for r in results:
        by_key[(r.set, r.wl, r.cont)] = r
        order.setdefault(r.set, [])
        if (r.wl, r.label) not in order[r.set]:
            order[r.set].append((r.wl, r.label))
    for s in order:
        order[s].sort(key=lambda wl: WL_ORDER.index(wl[0]) if wl[0] in WL_ORDER else 99)

    rss = [r.amount for r in results
           if r.wl == "peak_rss" and r.cont == "ftpfs" and r.amount]
    run_rss = max(rss) if rss else None

    p = []
    p.append("# Benchmarks: ftpfs vs rclone mount vs raw FTP clients\n")
    p.append(f"Generated by `scripts/bench.sh` on {meta.get('date', '?')}"
             f" in {meta.get('duration', '?')}"
             + (" — **quick smoke mode (BENCH_QUICK=1), small sizes; not representative**"
                if meta.get("quick") == "1" else "") + ". "
             "Re-run with `scripts/bench.sh` (root, Debian/Ubuntu; it installs what it "
             "needs and overwrites this file).\n")

    p.append("## Machine\n")
    p.append("| | |\n| --- | --- |")
    for key, label in [("cpu", "CPU"), ("cores", "cores"), ("ram", "RAM"),
                       ("kernel", "kernel"), ("os", "OS"), ("ftpfs", "ftpfs"),
                       ("vsftpd", "vsftpd"), ("pyftpdlib", "pyftpdlib"),
                       ("rclone", "rclone"), ("curl", "curl"), ("lftp", "lftp"),
                       ("rsync", "rsync"), ("proxy", "delay proxy")]:
        p.append(f"| {label} | {meta.get(key, '?')} |")
    p.append("")

    # Summary of targets.
    all_targets = []
    for set_name, server, delay, status, _note in sets:
        if status != "ran":
            continue
        get = lambda wl, c, s=set_name: by_key.get((s, wl, c))  # noqa: E731
        for wl, text, v in targets_for(server, int(delay), get, run_rss):
            all_targets.append((set_name, f"{server}, {delay} ms", wl, text, v))
    if all_targets:
        met = sum(1 for t in all_targets if t[4].startswith("**met**"))
        p.append("## Targets (ftpfs)\n")
        p.append(f"{met} of {len(all_targets)} targets met.\n")
        p.append("| server, delay | workload | target | met / missed |")
        p.append("| --- | --- | --- | --- |")
        labels = {(s, wl): label for s in order for wl, label in order[s]}
        for set_name, where, wl, text, v in all_targets:
            p.append(f"| {where} | {labels.get((set_name, wl), wl)} | {text} | {v} |")
        p.append("")

    p.append("## Results\n")
    p.append("Each cell: wall-clock time · rate · **speed relative to the raw client** "
             "(raw time ÷ this time: 1.00× is as fast as the raw client, higher is "
             "faster). The target columns are for ftpfs.\n")
    for set_name, server, delay, status, note in sets:
        p.append(f"### {server}, {delay} ms per direction"
                 + (f" (RTT {2 * int(delay)} ms, through the FTP-aware delay proxy)"
                    if int(delay) else "") + "\n")
        if status != "ran":
            p.append(f"_Skipped: {note}_\n")
            continue
        took = meta.get(f"secs:{set_name}")
        if took:
            note = (note + " " if note else "") + f"This set took {took} s."
        if note:
            p.append(f"_{note}_\n")
        get = lambda wl, c, s=set_name: by_key.get((s, wl, c))  # noqa: E731
        tmap = {}
        for wl, text, v in targets_for(server, int(delay), get, run_rss):
            tmap.setdefault(wl, []).append((text, v))
        has_targets = bool(tmap)
        head = "| workload | " + " | ".join(name for _, name in CONTENDERS)
        sep = "| --- |" + " --- |" * len(CONTENDERS)
        if has_targets:
            head += " | target (ftpfs) | met / missed"
            sep += " --- | --- |"
        p.append(head + " |")
        p.append(sep)
        for wl, label in order.get(set_name, []):
            raw = by_key.get((set_name, wl, "raw"))
            cells = [cell(by_key.get((set_name, wl, c)), raw) for c, _ in CONTENDERS]
            row = f"| {label} | " + " | ".join(cells)
            if has_targets:
                ts = tmap.get(wl, [])
                row += " | " + ("<br>".join(t for t, _ in ts) or "") + " | " + \
                    ("<br>".join(v for _, v in ts) or "")
            p.append(row + " |")
        p.append("")

    p.append("## How it was measured\n")
    for k in sorted((k for k in meta if k.startswith("how")), key=lambda k: int(k[3:])):
        p.append(f"- {meta[k]}")
    p.append("")
    if notes:
        p.append("## Problems and observations\n")
        for n in notes:
            p.append(f"- {n}")
        p.append("")
    sys.stdout.write("\n".join(p))


if __name__ == "__main__":
    main()
