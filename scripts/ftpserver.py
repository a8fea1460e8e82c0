#!/usr/bin/env python3
"""Small pyftpdlib-based FTP server used by the ftpfs tests and demo.

Usage:
    ftpserver.py --root DIR [--port N] [--host 127.0.0.1]
                 [--user U --password P] [--cmdlog FILE]
                 [--no-mlsd] [--single-thread] [--auth-failed-delay SECS]
                 [--quiet] [--watch-stdin]

Prints "READY <port>" on stdout (flushed) once it is listening.

Without --user the server only allows anonymous, read-only logins.
With --user the user gets full permissions ("elradfmwMT").
--cmdlog FILE appends every received command line to FILE, one per line,
with the PASS argument masked as "PASS ****".
--no-mlsd removes MLSD/MLST from the supported commands and from FEAT, so
clients have to fall back to LIST.
--watch-stdin makes the server exit when its stdin reaches EOF (useful for
test harnesses: the server dies together with its parent).
"""

import argparse
import logging
import os
import signal
import sys
import threading

try:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
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
        "--quiet", action="store_true", help="only log warnings and errors"
    )
    p.add_argument(
        "--watch-stdin", action="store_true", help="exit when stdin reaches EOF"
    )
    args = p.parse_args(argv)
    if args.password and not args.user:
        p.error("--password needs --user")
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

    class Handler(FTPHandler):
        proto_cmds = proto
        banner = "ftpfs test server (pyftpdlib) ready."
        auth_failed_timeout = args.auth_failed_delay

        def pre_process_command(self, line, cmd, arg):
            if cmdlog is not None:
                cmdlog.write(mask(line))
            return super().pre_process_command(line, cmd, arg)

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
