#!/usr/bin/env bash
# Demo: serve a small sample website over FTP (pyftpdlib), mount it with
# ftpfs and look at it with ordinary tools. Cleans up after itself (also on
# failure) and exits non-zero if any step fails.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

WORK=""
MNT=""
FTPFS_PID=""
FTPSERVER_PID=""

cleanup() {
    local rc=$?
    set +e
    # Keep cleaning up even if our output pipe is gone (e.g. `demo.sh | head`).
    trap '' PIPE
    if [[ -n "$MNT" ]] && is_mounted "$MNT"; then
        info "cleanup: unmounting $MNT"
        unmount "$MNT"
    fi
    if [[ -n "$FTPFS_PID" ]] && kill -0 "$FTPFS_PID" 2>/dev/null; then
        # ftpfs -f exits once unmounted; give it a moment, then insist.
        for _ in $(seq 50); do
            kill -0 "$FTPFS_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$FTPFS_PID" 2>/dev/null; then
            info "cleanup: stopping ftpfs ($FTPFS_PID)"
            kill "$FTPFS_PID" 2>/dev/null
            sleep 1
            kill -9 "$FTPFS_PID" 2>/dev/null
        fi
        wait "$FTPFS_PID" 2>/dev/null
    fi
    if [[ -n "$FTPSERVER_PID" ]] && kill -0 "$FTPSERVER_PID" 2>/dev/null; then
        info "cleanup: stopping FTP server ($FTPSERVER_PID)"
        kill "$FTPSERVER_PID" 2>/dev/null
        wait "$FTPSERVER_PID" 2>/dev/null
    fi
    if ((rc != 0)) && [[ -n "$WORK" ]]; then
        if [[ -s "$WORK/ftpfs.log" ]]; then
            printf '\n--- last lines of the ftpfs log ---\n' >&2
            tail -n 40 "$WORK/ftpfs.log" >&2
        fi
        if [[ -s "$WORK/ftpserver.log" ]]; then
            printf '\n--- last lines of the FTP server log ---\n' >&2
            tail -n 20 "$WORK/ftpserver.log" >&2
        fi
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        # Never delete through a mount that is still there.
        if [[ -n "$MNT" ]] && is_mounted "$MNT"; then
            warn "$MNT is still mounted; leaving $WORK in place"
        else
            rm -rf -- "$WORK"
        fi
    fi
    if ((rc == 0)); then
        section "Demo finished successfully"
    else
        printf '\n%sDemo FAILED (exit code %d)%s\n' "$_c_red" "$rc" "$_c_off" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section "Installing dependencies (only what is missing)"
install_deps "${FTPFS_DEMO_PACKAGES[@]}"

section "Building ftpfs (release)"
run cargo build --release
FTPFS_BIN="$PWD/target/release/ftpfs"
[[ -x "$FTPFS_BIN" ]] || die "$FTPFS_BIN was not built"

section "Creating a sample website"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ftpfs-demo.XXXXXX")"
SITE="$WORK/site"
MNT="$WORK/mnt"
mkdir -p "$SITE/css" "$SITE/images" "$SITE/data" "$MNT"
cat >"$SITE/index.html" <<'HTML'
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ftpfs demo</title>
  <link rel="stylesheet" href="css/style.css">
</head>
<body>
  <img src="images/logo.svg" alt="logo">
  <h1>Hello from an FTP server, mounted with ftpfs!</h1>
</body>
</html>
HTML
cat >"$SITE/css/style.css" <<'CSS'
body { font-family: sans-serif; margin: 2em auto; max-width: 40em; }
h1 { color: #2a6; }
CSS
cat >"$SITE/images/logo.svg" <<'SVG'
<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">
  <circle cx="32" cy="32" r="28" fill="#2a6"/>
</svg>
SVG
head -c $((5 * 1024 * 1024)) /dev/urandom >"$SITE/data/archive.bin"
printf 'A file whose name contains spaces.\n' >"$SITE/release notes 2024.txt"
printf 'Options -Indexes\n' >"$SITE/.htaccess"
info "sample site in $SITE:"
(cd "$SITE" && find . -type f -printf '  %p (%s bytes)\n' | sort)

section "Starting the FTP server (pyftpdlib)"
DEMO_USER="demo"
DEMO_PASSWORD="demo-$RANDOM$RANDOM"
start_ftpserver "$SITE" "$WORK/ftpserver.log" \
    --user "$DEMO_USER" --password "$DEMO_PASSWORD" --cmdlog "$WORK/commands.log"
URL="ftp://$DEMO_USER@127.0.0.1:$FTPSERVER_PORT/"
info "FTP server pid $FTPSERVER_PID listening on 127.0.0.1:$FTPSERVER_PORT"

section "Mounting $URL on $MNT"
info "\$ FTPFS_PASSWORD=**** $FTPFS_BIN -f $URL $MNT &"
FTPFS_PASSWORD="$DEMO_PASSWORD" RUST_LOG="${RUST_LOG:-ftpfs=info}" \
    "$FTPFS_BIN" -f "$URL" "$MNT" >"$WORK/ftpfs.log" 2>&1 </dev/null &
FTPFS_PID=$!
wait_for_mount "$MNT" 20 "$FTPFS_PID" || die "ftpfs did not mount $MNT"
grep -F " $MNT " /proc/self/mountinfo | sed 's/^/  mountinfo: /' || true

section "Browsing the mounted site"
run ls -la "$MNT"
run ls -l "$MNT/css"
run cat "$MNT/index.html"
run cat "$MNT/release notes 2024.txt"
run cat "$MNT/.htaccess"
run cmp "$SITE/data/archive.bin" "$MNT/data/archive.bin"
info "5 MiB data file: identical through the mount"
run stat "$MNT/index.html"
run stat "$MNT/data/archive.bin"
run du -sh "$MNT"

section "Unmounting"
run fusermount3 -u "$MNT"
for _ in $(seq 100); do
    kill -0 "$FTPFS_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$FTPFS_PID" 2>/dev/null; then
    die "ftpfs is still running 10 s after unmount"
fi
ftpfs_rc=0
wait "$FTPFS_PID" || ftpfs_rc=$?
FTPFS_PID=""
info "ftpfs exited with status $ftpfs_rc"
((ftpfs_rc == 0)) || die "ftpfs exited with status $ftpfs_rc"

section "What the FTP server saw"
info "$(wc -l <"$WORK/commands.log") FTP commands; by verb:"
awk '{print $1}' "$WORK/commands.log" | sort | uniq -c | sort -rn | sed 's/^/  /'
