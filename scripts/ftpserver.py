#!/usr/bin/env python3
"""Small pyftpdlib-based FTP server used by the ftpfs tests and demo.

Usage:
    ftpserver.py --root DIR [--port N] [--host 127.0.0.1]
                 [--user U --password P] [--cmdlog FILE]
                 [--no-mlsd] [--single-thread] [--auth-failed-delay SECS]
                 [--max-upload BYTES] [--refuse-stor]
                 [--throttle BYTES_PER_SEC] [--max-cons-per-ip N]
                 [--idle-timeout SECS] [--garbage-list MODE]
                 [--dos-list] [--quiet] [--watch-stdin]

Prints "READY <port>" on stdout (flushed) once it is listening.

Without --user the server only allows anonymous, read-only logins.
With --user the user gets full permissions ("elradfmwMT").
--cmdlog FILE appends every received command line to FILE, one per line,
with the PASS argument masked as "PASS ****".
--no-mlsd removes MLSD/MLST from the supported commands and from FEAT, so
clients have to fall back to LIST.
--max-upload BYTES simulates a full disk or a quota: an upload (STOR, APPE,
STOU) that would make the file larger than BYTES bytes is aborted as soon as
the data passes the limit: the server closes the data connection, removes
what the transfer wrote (a new or overwritten file is deleted, an appended or
restarted one is cut back to its old size) and replies
"552 Exceeded storage allocation.". Uploads within the limit are unaffected.
--throttle BYTES_PER_SEC paces every data connection (downloads, uploads
and listings alike) to BYTES_PER_SEC from its first byte on: after n bytes
the connection waits until n / BYTES_PER_SEC seconds have passed since the
first one (pyftpdlib's own ThrottledDTPHandler lets the first second of
every connection through at full speed). Combines with --max-upload.
--max-cons-per-ip N allows N control connections per client address; the
next one is greeted with "421 Too many connections from the same IP
address." and closed (a server that only lets a client have N sessions).
--refuse-stor answers every STOR, APPE and STOU with "553 Permission denied."
before any data is transferred (nothing is created); everything else works.
--idle-timeout SECS closes a control connection that sent no command for
SECS seconds, with "421 Control connection timed out." (pyftpdlib's default
is 300), like vsftpd's idle_session_timeout.
--garbage-list MODE answers LIST, MLSD and NLST of any directory whose name
starts with "garbage" with nonsense (other directories list normally):
  data          a "successful" listing (150 ... 226) of malformed lines: absurd
                sizes and dates, lines without facts or codes, duplicate names,
                names with "/", "." and "..", invalid UTF-8, a 200 KB line;
  reply         a reply line without a code ("xyz garbage") and no transfer;
  unterminated  a multi-line "150-" reply that never ends (the client must
                time out).
--dos-list imitates a DOS/IIS-style server: LIST answers with lines like
  "01-15-24  10:30AM       <DIR>          name" and
  "01-15-24  02:05PM                 1234 name" (no permissions, owners,
  seconds or symlinks; directories and files only), and MLSD/MLST, MFMT,
  SIZE and SITE CHMOD are removed from FEAT/HELP and answered with
  "500 Command not understood.".
--watch-stdin makes the server exit when its stdin reaches EOF (useful for
test harnesses: the server dies together with its parent).
"""

import argparse
import logging
import os
import signal
import stat
import sys
import threading
import time

try:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import DTPHandler, FTPHandler
    from pyftpdlib.servers import FTPServer, ThreadedFTPServer
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        "ftpserver.py: pyftpdlib is not installed "
        "(pip install pyftpdlib, or run scripts/lib.sh install_deps)\n"
    )
    sys.exit(2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument(
        "--port", type=int, default=0, help="port to bind (0 = pick a free one)"
    )
    p.add_argument("--root", required=True, help="directory to serve")
    p.add_argument("--user", help="user name (default: anonymous, read-only)")
    p.add_argument("--password", default="", help="password for --user")
    p.add_argument("--cmdlog", help="append received FTP commands to this file")
    p.add_argument(
        "--no-mlsd", action="store_true", help="disable MLSD/MLST (and their FEAT)"
    )
    p.add_argument(
        "--single-thread",
        action="store_true",
        help="use the single-threaded async FTPServer instead of ThreadedFTPServer",
    )
    p.add_argument(
        "--auth-failed-delay",
        type=float,
        default=3.0,
        metavar="SECS",
        help="delay before replying to a failed login (pyftpdlib default: 3)",
    )
    p.add_argument(
        "--max-upload",
        type=int,
        metavar="BYTES",
        help="abort any STOR/APPE/STOU that would make the file larger than "
        "BYTES with '552 Exceeded storage allocation.' and remove what it "
        "wrote (simulates a full disk or a quota)",
    )
    p.add_argument(
        "--throttle",
        type=int,
        metavar="BYTES_PER_SEC",
        help="pace every data connection (both directions) to BYTES_PER_SEC "
        "from its first byte",
    )
    p.add_argument(
        "--max-cons-per-ip",
        type=int,
        metavar="N",
        help="allow N control connections per client address; answer the "
        "next one with 421",
    )
    p.add_argument(
        "--refuse-stor",
        action="store_true",
        help="answer every STOR/APPE/STOU with '553 Permission denied.' "
        "before any data connection is used",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECS",
        help="close control connections idle for SECS seconds with 421 "
        "(pyftpdlib's default: 300)",
    )
    p.add_argument(
        "--garbage-list",
        choices=GARBAGE_MODES,
        metavar="MODE",
        help="answer LIST/MLSD/NLST of directories named garbage* with "
        "nonsense: " + ", ".join(GARBAGE_MODES),
    )
    p.add_argument(
        "--dos-list",
        action="store_true",
        help="DOS/IIS-style LIST lines; no MLSD/MLST, MFMT, SIZE, SITE CHMOD",
    )
    p.add_argument(
        "--quiet", action="store_true", help="only log warnings and errors"
    )
    p.add_argument(
        "--watch-stdin", action="store_true", help="exit when stdin reaches EOF"
    )
    args = p.parse_args(argv)
    if args.password and not args.user:
        p.error("--password needs --user")
    if args.max_upload is not None and args.max_upload < 0:
        p.error("--max-upload must be >= 0")
    if args.throttle is not None and args.throttle <= 0:
        p.error("--throttle must be > 0")
    if args.max_cons_per_ip is not None and args.max_cons_per_ip <= 0:
        p.error("--max-cons-per-ip must be > 0")
    if not os.path.isdir(args.root):
        p.error(f"--root {args.root!r} is not a directory")
    return args


class CommandLog:
    """Thread-safe, line-flushed append-only log of received commands."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._fh = open(path, "a", encoding="utf-8", errors="replace")

    def write(self, line):
        # Never let a control character break the one-command-per-line format.
        line = line.replace("\r", "\\r").replace("\n", "\\n")
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()


def mask(line):
    cmd = line.split(" ", 1)[0]
    if cmd.upper() == "PASS":
        return f"{cmd} ****"
    return line


QUOTA_REPLY = "552 Exceeded storage allocation."

GARBAGE_MODES = ("data", "reply", "unterminated")

# Nonsense common to every listing format.
_GARBAGE_COMMON = [
    b"xyz garbage",
    b"",
    b"   ",
    b"\x00\x01\x02 binary \xff\xfe junk",
    b"name-with-invalid-utf8-\xff\xc3\x28",
    b"A" * 200_000,
]

# MLSD-style nonsense (RFC 3659 facts with absurd values).
GARBAGE_MLSD = [
    b"type=file;size=99999999999999999999999;modify=99999999999999; huge",
    b"type=file;size=18446744073709551615;modify=20991231235959; maxsize",
    b"type=file;size=9223372036854775808;modify=00000000000000; over-i64",
    b"type=file;size=-5;modify=abc; negative",
    b"type=file;size=12abc;modify=2020; letters",
    b"type=dir;size=0;modify=20200101000000; dup",
    b"type=file;size=3;modify=20200101000000; dup",
    b"type=file;size=1; with/slash",
    b"type=file;size=1; ..",
    b"type=cdir; .",
    b"type=file;size=1; ",
    b"type=OS.unix=slink:; emptylink",
    b"type=file;unix.mode=99999999999;size=1; badmode",
    b"type=file;unix.mode=0o7777777;size=1; bigmode",
    b"type=" + b"x" * 5000 + b"; longtype",
    b"size=5 nofactsemicolon",
    b"=;=;=; eqs",
    b";;;; semis",
    b"type=file;size=10;modify=20200101000000; sane-mlsd.txt",
]

# LIST-style nonsense (ls -l and DOS formats with absurd values).
GARBAGE_LIST = [
    b"total 99999999999999999999",
    b"-rw-r--r--   1 owner group 99999999999999999999999 Jan 01  2020 huge",
    b"-rw-r--r--   1 owner group 18446744073709551615 Dec 31 23:59 maxsize",
    b"-rw-r--r--   1 owner group 9223372036854775808 Dec 31  2020 over-i64",
    b"-rw-r--r--   1 owner group -5 Jan 01  2020 negative",
    b"drwxr-xr-x   1 owner group 0 Foo 99 99:99 baddate",
    b"drwxr-xr-x   1 owner group 0 Jan 01  2020 dup",
    b"-rw-r--r--   1 owner group 3 Jan 01  2020 dup",
    b"-rw-r--r--   1 owner group 1 Jan 01  2020 with/slash",
    b"-rw-r--r--   1 owner group 1 Jan 01  2020 ..",
    b"-rw-r--r--   1 owner group 1 Jan 01  2020 ",
    b"lrwxrwxrwx   1 owner group 1 Jan 01  2020 emptylink -> ",
    b"?????????? ? ? ? ? ? ? ? weird",
    b"99-99-99  99:99PM       <DIR>          dosdir",
    b"01-01-20  01:00AM  99999999999999999999999 doshuge",
    b"-rw-r--r--   1 owner group 10 Jan 01  2020 sane-list.txt",
]


def garbage_listing(cmd):
    lines = GARBAGE_MLSD if cmd == "MLSD" else GARBAGE_LIST
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i < len(_GARBAGE_COMMON):
            out.append(_GARBAGE_COMMON[i])
    # One line ends with a bare LF, one with CR only (not a line end at all).
    return b"\r\n".join(out) + b"\nlf-only-end\rcr-inside\r\n"
REFUSE_REPLY = "553 Permission denied."

# Commands a DOS/IIS-style server (--dos-list) does not have.
DOS_MISSING_CMDS = ("MLSD", "MLST", "MFMT", "SIZE", "SITE CHMOD")


class DosListFS(AbstractedFS):
    """LIST in the DOS/IIS format (MM-DD-YY  HH:MMAM <DIR>|size name)."""

    def format_list(self, basedir, listing, ignore_err=True):
        for name in listing:
            path = os.path.join(basedir, name)
            try:
                try:
                    st = self.stat(path)  # IIS shows what a link points to
                except OSError:
                    st = self.lstat(path)
            except OSError:
                if ignore_err:
                    continue
                raise
            if self.cmd_channel.use_gmt_times:
                t = time.gmtime(st.st_mtime)
            else:
                t = time.localtime(st.st_mtime)
            date = time.strftime("%m-%d-%y  %I:%M%p", t)
            if stat.S_ISDIR(st.st_mode):
                line = f"{date}       <DIR>          {name}"
            else:
                line = f"{date} {st.st_size:>20} {name}"
            yield (line + "\r\n").encode(
                self.cmd_channel.encoding, self.cmd_channel.unicode_errors
            )


def make_quota_dtp_handler(max_upload, base=DTPHandler):
    """A DTPHandler that aborts uploads growing a file beyond max_upload."""

    class QuotaDTPHandler(base):
        def recv(self, buffer_size):
            chunk = super().recv(buffer_size)
            fobj = self.file_obj
            if not chunk or not self.receive or fobj is None or fobj.closed:
                return chunk
            try:
                end = fobj.tell() + len(chunk)
            except (OSError, ValueError):
                return chunk
            if end <= max_upload:
                return chunk
            self._abort_over_quota(end)
            # handle_read treats b"" as the end of the transfer; the channel
            # is already closed and the 552 sent.
            return b""

        def _abort_over_quota(self, end):
            fobj = self.file_obj
            path = fobj.name
            # What ftp_STOR saw before the transfer (None for STOU).
            info = getattr(self.cmd_channel, "_ftpfs_upload", None)
            self.cmd_channel._ftpfs_upload = None
            logging.info(
                "max-upload: aborting upload of %s at %d > %d bytes",
                path,
                end,
                max_upload,
            )
            try:
                fobj.close()
            except OSError:
                pass
            # Undo the transfer before replying, so that a client listing
            # right after the 552 never sees the partial data.
            try:
                if info and info["path"] == path and info["keep_old"]:
                    os.truncate(path, info["size"])
                else:
                    os.remove(path)
            except OSError as err:
                logging.warning("max-upload: cleaning up %s: %s", path, err)
            self._resp = (QUOTA_REPLY, logging.info)
            self.close()

    return QuotaDTPHandler


def make_paced_dtp_handler(rate, base=DTPHandler):
    """A DTPHandler that moves at most rate bytes per second, counted from
    the connection's first byte: once n bytes have gone through, the channel
    leaves the IO loop until n / rate seconds have passed since that byte.
    The IO loop is not blocked, so this also works with --single-thread."""

    # Small chunks keep the pace smooth (about 50 steps per second).
    chunk = max(1, min(65536, rate // 50))

    class PacedDTPHandler(base):
        ac_in_buffer_size = chunk
        ac_out_buffer_size = chunk

        def __init__(self, sock, cmd_channel):
            self._pace_start = None
            self._pace_bytes = 0
            self._pace_timer = None
            super().__init__(sock, cmd_channel)

        def use_sendfile(self):
            # sendfile() would bypass send() and with it the pacing.
            return False

        def recv(self, buffer_size):
            data = super().recv(min(buffer_size, chunk))
            self._pace(len(data))
            return data

        def send(self, data):
            sent = super().send(data[:chunk])
            self._pace(sent)
            return sent

        def _pace(self, n):
            if n <= 0 or self._closed:
                return
            now = time.monotonic()
            if self._pace_start is None:
                self._pace_start = now
            self._pace_bytes += n
            wait = self._pace_start + self._pace_bytes / rate - now
            if wait <= 0:
                return
            events = self.ioloop.READ if self.receive else self.ioloop.WRITE

            def wake():
                self._pace_timer = None
                if not self._closed:
                    self.add_channel(events=events)

            self.del_channel()
            self._pace_timer = self.ioloop.call_later(
                wait, wake, _errback=self.handle_error
            )

        def close(self):
            if self._pace_timer is not None and not self._pace_timer.cancelled:
                self._pace_timer.cancel()
            self._pace_timer = None
            super().close()

    return PacedDTPHandler


def make_handler(args):
    authorizer = DummyAuthorizer()
    root = os.path.abspath(args.root)
    if args.user:
        authorizer.add_user(args.user, args.password, root, perm="elradfmwMT")
    else:
        authorizer.add_anonymous(root)  # default perm "elr": read-only

    cmdlog = CommandLog(args.cmdlog) if args.cmdlog else None

    proto = dict(FTPHandler.proto_cmds)
    if args.no_mlsd:
        proto.pop("MLSD", None)
        proto.pop("MLST", None)
    if args.dos_list:
        for cmd in DOS_MISSING_CMDS:
            proto.pop(cmd, None)

    class Handler(FTPHandler):
        proto_cmds = proto
        banner = "ftpfs test server (pyftpdlib) ready."
        auth_failed_timeout = args.auth_failed_delay
        if args.idle_timeout is not None:
            timeout = args.idle_timeout

        def _garbage(self, path, cmd):
            """Answers a listing of a garbage* directory per --garbage-list;
            returns False when the directory gets a normal listing."""
            if not args.garbage_list:
                return False
            name = os.path.basename(os.path.normpath(path))
            if not name.startswith("garbage"):
                return False
            logging.info("garbage-list: %s %s (%s)", cmd, path, args.garbage_list)
            if args.garbage_list == "reply":
                self.respond("xyz garbage")
            elif args.garbage_list == "unterminated":
                self.push("150-Here comes the listing\r\n")
                self.push(" never\r\n ending\r\n")
            else:
                self.push_dtp_data(garbage_listing(cmd), cmd=cmd)
            return True

        def ftp_LIST(self, path):
            if self._garbage(path, "LIST"):
                return path
            return super().ftp_LIST(path)

        def ftp_NLST(self, path):
            if self._garbage(path, "NLST"):
                return path
            return super().ftp_NLST(path)

        def ftp_MLSD(self, path):
            if self._garbage(path, "MLSD"):
                return path
            return super().ftp_MLSD(path)

        def pre_process_command(self, line, cmd, arg):
            if cmdlog is not None:
                cmdlog.write(mask(line))
            return super().pre_process_command(line, cmd, arg)

        # APPE calls ftp_STOR(file, mode="a"); REST + STOR opens with "r+".
        def ftp_STOR(self, file, mode="w"):
            if args.refuse_stor:
                self.respond(REFUSE_REPLY)
                return None
            if args.max_upload is not None:
                existed = os.path.isfile(file)
                self._ftpfs_upload = {
                    "path": file,
                    # APPE or a restarted STOR keeps the old bytes: on abort
                    # cut the file back; otherwise delete it.
                    "keep_old": existed
                    and (mode == "a" or bool(self._restart_position)),
                    "size": os.path.getsize(file) if existed else 0,
                }
            return super().ftp_STOR(file, mode)

        def ftp_STOU(self, line):
            if args.refuse_stor:
                self.respond(REFUSE_REPLY)
                return None
            self._ftpfs_upload = None
            return super().ftp_STOU(line)

    if args.dos_list:
        Handler.abstracted_fs = DosListFS
        Handler.banner = "Microsoft FTP Service (ftpfs test server, DOS-style LIST)"
    if args.max_upload is not None:
        Handler.dtp_handler = make_quota_dtp_handler(args.max_upload)
    if args.throttle is not None:
        # Outermost, so that the bytes the quota handler passes are paced.
        Handler.dtp_handler = make_paced_dtp_handler(
            args.throttle, base=Handler.dtp_handler
        )
    Handler.authorizer = authorizer
    return Handler


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="[%(asctime)s] %(levelname)s %(message)s",
        stream=sys.stderr,
    )

    handler = make_handler(args)
    server_cls = FTPServer if args.single_thread else ThreadedFTPServer
    server = server_cls((args.host, args.port), handler)
    if args.max_cons_per_ip is not None:
        server.max_cons_per_ip = args.max_cons_per_ip
    port = server.socket.getsockname()[1]

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)

    if args.watch_stdin:

        def watch():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except Exception:
                pass
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()

    print(f"READY {port}", flush=True)
    try:
        server.serve_forever(handle_exit=True)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
