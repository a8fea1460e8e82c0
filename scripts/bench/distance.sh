# shellcheck shell=bash
# Issue 14's rows, sourced by scripts/bench.sh (they use its helpers: timed,
# record, mount_fs, umount_fs, lftp_run...). Run once per bench, after the sets:
#   - vsftpd at DELAY_MS: rsync -a no-op of SMALL_N files after a remount
#     (against lftp mirror -R --only-newer), and find / du -s of a tree of
#     WALK_DIRS x WALK_FILES (against lftp find / du and rclone lsf -R / size);
#   - pyftpdlib pacing each data connection to 4 MiB/s: a PACED_MIB read
#     (against curl, lftp pget -n 4 and rclone mount).

# start_proxy_at PORT DELAY_MS: a proxy listening on PORT (sets PROXY_PID).
start_proxy_at() {
    local port=$1 delay=$2 out="$LOGDIR/proxy-at-$1-$2.out" i
    : >"$out"
    "$PROXY_BIN" --upstream "127.0.0.1:$UPSTREAM" --listen-port "$port" --delay-ms "$delay" \
        </dev/null >"$out" 2>>"$LOGDIR/proxy.log" &
    PROXY_PID=$!
    CHILD_PIDS+=("$PROXY_PID")
    for i in $(seq 150); do
        grep -q '^READY' "$out" && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.1
    done
    warn "ftp_proxy on port $port did not start"
    stop_pid "$PROXY_PID"
    return 1
}

# The rsync no-op after a remount: the first rsync (and lftp's first mirror)
# through a 0 ms proxy on port P, the timed ones through a DELAY_MS proxy on
# the same P, so that ftpfs sees the same server (its remembered times are
# kept per user, host, port and path).
distance_rsync_remount() {
    local port mnt="$WORK/mnt/remount" src="$WORK/local/$SMALL_DIR_FOR_REMOUNT"
    port=$(free_port)
    start_proxy_at "$port" 0 || return
    PORT=$port
    if mount_fs ftpfs "$mnt"; then
        timed "$TO_SMALL" rsync -a "$src/" "$mnt/w/remount/"
        umount_fs ftpfs "$mnt"
    fi
    lftp_run "$TO_SMALL" "mirror -R $src w/remount-lftp"
    stop_pid "$PROXY_PID"
    PROXY_PID=""
    start_proxy_at "$port" "$DELAY_MS" || return
    if mount_fs ftpfs "$mnt"; then
        CUR_SMALL=$SMALL_DIR_FOR_REMOUNT CUR_SMALL_N=$SMALL_N \
            rsync_again rsync_remount ftpfs "$mnt/w/remount/"
        umount_fs ftpfs "$mnt"
    else
        record_mount_failure ftpfs rsync_remount
    fi
    lftp_run "$TO_SMALL" "mirror -R --only-newer $src w/remount-lftp"
    record_step rsync_remount raw "$SMALL_N"
    stop_pid "$PROXY_PID"
    PROXY_PID=""
}

# find and du -s of the walk tree, each on a fresh mount (nothing cached).
distance_walk() {
    local port mnt="$WORK/mnt/walk" n=$((WALK_DIRS * WALK_FILES)) wl
    port=$(free_port)
    start_proxy_at "$port" "$DELAY_MS" || return
    PORT=$port
    for wl in walk_find walk_du; do
        if ! mount_fs ftpfs "$mnt"; then
            record_mount_failure ftpfs "$wl"
            continue
        fi
        if [[ "$wl" == walk_find ]]; then
            timed "$TO_WALK" find "$mnt/walk" -type f
            local found
            found=$(grep -c '^/' "$T_LOG" || true)
            if ((T_RC == 0 && found != n)); then
                record "$wl" ftpfs error "$T_SECS" "$n" "found $found files"
            else
                record_step "$wl" ftpfs "$n"
            fi
        else
            timed "$TO_WALK" du -s "$mnt/walk"
            record_step "$wl" ftpfs "$n"
        fi
        umount_fs ftpfs "$mnt"
    done
    lftp_run "$TO_WALK" "find walk"
    record_step walk_find raw "$n" "lftp find"
    lftp_run "$TO_WALK" "du -s walk"
    record_step walk_du raw "$n" "lftp du -s"
    local remote=":ftp,host=127.0.0.1,port=$PORT,user=$USER_NAME,pass=$RCLONE_PASS:walk"
    timed "$TO_WALK" env RCLONE_CONFIG="$WORK/rclone.conf" rclone lsf -R "$remote"
    record_step walk_find rclone "$n" "rclone lsf -R (default 4 checkers)"
    timed "$TO_WALK" env RCLONE_CONFIG="$WORK/rclone.conf" rclone size "$remote"
    record_step walk_du rclone "$n" "rclone size"
    stop_pid "$PROXY_PID"
    PROXY_PID=""
}

# A PACED_MIB read from pyftpdlib pacing each data connection to 4 MiB/s.
distance_paced_read() {
    local root="$WORK/paced-root" mnt="$WORK/mnt/paced" cont bytes=$((PACED_MIB * 1048576))
    mkdir -p "$root"
    head -c "$bytes" "$WORK/local/write.bin" >"$root/paced.bin" 2>/dev/null ||
        head -c "$bytes" /dev/urandom >"$root/paced.bin"
    chown -R "$USER_NAME:" "$root"
    start_ftpserver "$root" "$LOGDIR/pyftpdlib-paced.log" --user "$USER_NAME" --password "$USER_PW" \
        --quiet --throttle 4194304 || return
    local pid=$FTPSERVER_PID
    CHILD_PIDS+=("$pid")
    PORT=$FTPSERVER_PORT
    PROXY_PID="" # no proxy here: mount_fs must not restart one
    timed "$TO_PACED" curl -sS -o /dev/null "ftp://$USER_NAME:$USER_PW@127.0.0.1:$PORT/paced.bin"
    record_step paced_read raw "$bytes" "curl"
    rm -f "$WORK/paced-pget.bin"
    lftp_run "$TO_PACED" "pget -n 4 paced.bin -o $WORK/paced-pget.bin"
    record_step paced_read_pget raw "$bytes" "lftp pget -n 4"
    rm -f "$WORK/paced-pget.bin"
    for cont in ftpfs rclone; do
        [[ " $CONTENDERS " == *" $cont "* ]] || continue
        if ! mount_fs "$cont" "$mnt"; then
            record_mount_failure "$cont" paced_read paced_read_pget
            continue
        fi
        timed "$TO_PACED" dd if="$mnt/paced.bin" of=/dev/null bs=1M
        record_step paced_read "$cont" "$bytes"
        record_step paced_read_pget "$cont" "$bytes"
        umount_fs "$cont" "$mnt"
    done
    stop_pid "$pid"
}

run_distance() {
    SET="distance:$DELAY_MS"
    SET_TAG="distance-$DELAY_MS"
    declare -gA SET_RSS=()
    TLS=0
    section "Issue 14: at a distance ($DELAY_MS ms) and on a paced server"
    if [[ -z "$PROXY_BIN" || -z "$VSFTPD_PORT" ]]; then
        printf '%s\tdistance\t%s\tskipped\tno proxy or no vsftpd\n' "$SET" "$DELAY_MS" >>"$WORK/sets.tsv"
        return
    fi
    printf '%s\tdistance\t%s\tran\t%s\n' "$SET" "$DELAY_MS" \
        "vsftpd through the proxy for the remount and walk rows; pyftpdlib pacing each data connection to 4 MiB/s (no proxy) for the paced read" >>"$WORK/sets.tsv"
    local set_start=$SECONDS
    UPSTREAM=$VSFTPD_PORT
    mkdir -p "$ROOT/walk"
    local d
    for d in $(seq -w 1 "$WALK_DIRS"); do
        python3 "$BENCH_DIR/gendata.py" files "$ROOT/walk/d$d" "$WALK_FILES" 16 --prefix f
    done
    chown -R "$USER_NAME:" "$ROOT/walk"
    distance_rsync_remount
    distance_walk
    distance_paced_read
    SET_SECS["$SET"]=$((SECONDS - set_start))
    rm -rf "${ROOT:?}/walk" "${ROOT:?}/w/remount" "${ROOT:?}/w/remount-lftp"
}
