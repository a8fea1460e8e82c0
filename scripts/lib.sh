#!/usr/bin/env bash
# Shared shell functions for scripts/test.sh and scripts/demo.sh.
# Source it:  . "$(dirname "$0")/lib.sh"
#
# Functions:
#   section TITLE            print a section header
#   info MSG / warn MSG / die MSG
#   run CMD...               print the command, then run it
#   as_root CMD...           run as root (directly, or via sudo)
#   install_deps             idempotently install system packages + pyftpdlib
#   ensure_rust_components   rustfmt + clippy (via rustup, if missing)
#   install_test_tools       pjdfstest + fsx from crates.io (cargo install
#                            --locked, only if missing); puts ~/.cargo/bin on PATH
#   ensure_ftp_user          system user ftpfstest / ftpfstest-pw for vsftpd
#   is_mounted DIR           true if DIR is a mount point (/proc/self/mountinfo)
#   wait_for_mount DIR [SECS] [PID]   poll until DIR is mounted (default 20 s);
#                            fails early if PID (e.g. ftpfs) exits first
#   unmount DIR              fusermount3 -u DIR, falling back to umount -l
#   start_ftpserver ROOT LOG [ARGS...]  start scripts/ftpserver.py on a free
#                            port; sets FTPSERVER_PID and FTPSERVER_PORT

# Not setting shell options here: the sourcing script decides (set -euo pipefail).

FTPFS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FTP_TEST_USER="ftpfstest"
FTP_TEST_PASSWORD="ftpfstest-pw"
# Debian packages the tests and the demo need (checked one by one, only the
# missing ones are installed).
FTPFS_APT_PACKAGES=(fuse3 vsftpd lftp rsync curl ca-certificates openssl git vim procps util-linux passwd man-db zsh fish)
# What scripts/demo.sh needs, no more.
FTPFS_DEMO_PACKAGES=(fuse3 procps util-linux)

if [[ -t 1 ]]; then
    _c_bold=$'\e[1m' _c_blue=$'\e[34m' _c_yellow=$'\e[33m' _c_red=$'\e[31m' _c_off=$'\e[0m'
else
    _c_bold='' _c_blue='' _c_yellow='' _c_red='' _c_off=''
fi

section() {
    printf '\n%s%s==> %s%s\n' "$_c_bold" "$_c_blue" "$*" "$_c_off"
}

info() {
    printf '%s\n' "$*"
}

warn() {
    printf '%swarning:%s %s\n' "$_c_yellow" "$_c_off" "$*" >&2
}

die() {
    printf '%serror:%s %s\n' "$_c_red" "$_c_off" "$*" >&2
    exit 1
}

# Print a command (shell-quoted) and run it.
run() {
    printf '%s$%s' "$_c_bold" "$_c_off"
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

_pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

_apt_lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null 2>&1 ||
        compgen -G '/var/lib/apt/lists/*_Packages.*' >/dev/null 2>&1
}

_apt_install() {
    local -a env=(env DEBIAN_FRONTEND=noninteractive)
    # Another apt or dpkg (unattended-upgrades...) may hold the lock: wait for it.
    local -a apt=(apt-get -o "DPkg::Lock::Timeout=${FTPFS_APT_LOCK_TIMEOUT:-600}")
    if ! _apt_lists_present; then
        info "apt package lists missing: running apt-get update"
        as_root "${env[@]}" "${apt[@]}" update -qq
    fi
    if ! as_root "${env[@]}" "${apt[@]}" install -y -qq --no-install-recommends "$@"; then
        # Stale lists (404s) are the usual reason: refresh once and retry.
        info "apt-get install failed: running apt-get update and retrying"
        as_root "${env[@]}" "${apt[@]}" update -qq
        as_root "${env[@]}" "${apt[@]}" install -y -qq --no-install-recommends "$@"
    fi
}

_python_has_pyftpdlib() {
    python3 -c 'import pyftpdlib' >/dev/null 2>&1
}

# Install what is missing of the given apt packages (default: everything the
# tests need), and pyftpdlib (idempotent, quiet when everything is there).
install_deps() {
    command -v dpkg-query >/dev/null 2>&1 || die "install_deps supports Debian/Ubuntu (apt) only"
    command -v python3 >/dev/null 2>&1 || die "python3 is required"
    local -a wanted=("$@")
    ((${#wanted[@]})) || wanted=("${FTPFS_APT_PACKAGES[@]}")

    local -a missing=()
    local pkg
    for pkg in "${wanted[@]}"; do
        _pkg_installed "$pkg" || missing+=("$pkg")
    done
    # pip is only needed if pyftpdlib is missing and python3 has no pip.
    if ! _python_has_pyftpdlib && ! python3 -m pip --version >/dev/null 2>&1; then
        _pkg_installed python3-pip || missing+=(python3-pip)
    fi
    if ((${#missing[@]})); then
        info "installing missing packages: ${missing[*]}"
        _apt_install "${missing[@]}"
    else
        info "system packages: all present"
    fi

    if _python_has_pyftpdlib; then
        info "pyftpdlib: present"
    else
        info "installing pyftpdlib with pip"
        local -a pip=(python3 -m pip install --quiet --disable-pip-version-check)
        local -a pip_root=()
        # Install system-wide (as root) unless python3 is a user-owned install
        # such as pyenv/venv.
        if [[ ! -w "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" ]]; then
            pip_root=(as_root)
        fi
        "${pip_root[@]}" "${pip[@]}" pyftpdlib ||
            "${pip_root[@]}" "${pip[@]}" --break-system-packages pyftpdlib ||
            _apt_install python3-pyftpdlib ||
            die "could not install pyftpdlib"
        hash -r
        _python_has_pyftpdlib || die "pyftpdlib installed but 'import pyftpdlib' still fails"
    fi

    if [[ ! -e /dev/fuse ]]; then
        as_root modprobe fuse >/dev/null 2>&1 || true
        [[ -e /dev/fuse ]] || warn "/dev/fuse does not exist: FUSE mounts will fail (container without --device /dev/fuse?)"
    fi
}

# rustfmt and clippy, if rustup is available and they are missing.
ensure_rust_components() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"
    local -a comps=()
    cargo fmt --version >/dev/null 2>&1 || comps+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || comps+=(clippy)
    if ((${#comps[@]})); then
        command -v rustup >/dev/null 2>&1 || die "missing ${comps[*]} and no rustup to install them"
        run rustup component add "${comps[@]}"
    fi
}

# Tools from crates.io: the external suites of tests/external.rs, and cargo-deb
# for scripts/package.sh (tests/package.rs).
FTPFS_CARGO_TOOLS=(pjdfstest fsx cargo-deb)

# Put cargo's bin directory (where `cargo install` puts binaries) on PATH.
_ensure_cargo_bin_on_path() {
    local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    case ":$PATH:" in
        *":$cargo_bin:"*) ;;
        *) export PATH="$cargo_bin:$PATH" ;;
    esac
}

# pjdfstest and fsx (idempotent: `cargo install --locked` only for the
# missing ones). A build takes a few minutes the first time.
install_test_tools() {
    _ensure_cargo_bin_on_path
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"
    local tool
    for tool in "${FTPFS_CARGO_TOOLS[@]}"; do
        if command -v "$tool" >/dev/null 2>&1; then
            info "$tool: present ($(command -v "$tool"))"
        else
            info "installing $tool from crates.io (takes a few minutes)"
            run cargo install --locked "$tool" || die "cargo install --locked $tool failed"
            hash -r
            command -v "$tool" >/dev/null 2>&1 || die "$tool installed but not found on PATH ($PATH)"
        fi
    done
}

# System user for vsftpd local logins (idempotent).
ensure_ftp_user() {
    if ! id "$FTP_TEST_USER" >/dev/null 2>&1; then
        info "creating user $FTP_TEST_USER"
        as_root useradd --create-home --shell /bin/bash "$FTP_TEST_USER"
    fi
    printf '%s:%s\n' "$FTP_TEST_USER" "$FTP_TEST_PASSWORD" | as_root chpasswd
    # vsftpd's PAM stack (pam_listfile) refuses users listed in /etc/ftpusers,
    # and pam_shells wants a shell listed in /etc/shells.
    if [[ -f /etc/ftpusers ]] && grep -qx "$FTP_TEST_USER" /etc/ftpusers; then
        as_root sed -i "/^${FTP_TEST_USER}\$/d" /etc/ftpusers
    fi
    if [[ -f /etc/shells ]] && ! grep -qx /bin/bash /etc/shells; then
        echo /bin/bash | as_root tee -a /etc/shells >/dev/null
    fi
    as_root mkdir -p /var/run/vsftpd/empty
}

# Undo the octal escapes used in /proc/self/mountinfo (\040 = space, ...).
_mountinfo_unescape() {
    printf '%b' "${1//\\/\\0}"
}

is_mounted() {
    local dir mp
    dir="$(realpath -m -- "$1")"
    while read -r _ _ _ _ mp _; do
        [[ "$(_mountinfo_unescape "$mp")" == "$dir" ]] && return 0
    done </proc/self/mountinfo
    return 1
}

wait_for_mount() {
    local dir="$1" timeout="${2:-20}" pid="${3:-}"
    local deadline=$((SECONDS + timeout))
    while ! is_mounted "$dir"; do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            warn "process $pid exited before $dir was mounted"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            warn "$dir not mounted after ${timeout}s"
            return 1
        fi
        sleep 0.1
    done
}

unmount() {
    local dir="$1"
    is_mounted "$dir" || return 0
    fusermount3 -u -- "$dir" 2>/dev/null || as_root umount -l -- "$dir" 2>/dev/null || true
    ! is_mounted "$dir"
}

# start_ftpserver ROOT LOGFILE [extra ftpserver.py args...]
# Starts scripts/ftpserver.py in the background on a free port and waits for
# its "READY <port>" line. Sets FTPSERVER_PID and FTPSERVER_PORT.
start_ftpserver() {
    local root="$1" log="$2"
    shift 2
    local out="${log}.out"
    : >"$out"
    python3 "$FTPFS_REPO_ROOT/scripts/ftpserver.py" --host 127.0.0.1 --port 0 \
        --root "$root" "$@" >"$out" 2>"$log" &
    FTPSERVER_PID=$!
    FTPSERVER_PORT=""
    local deadline=$((SECONDS + 15))
    while [[ -z "$FTPSERVER_PORT" ]]; do
        FTPSERVER_PORT="$(sed -n 's/^READY \([0-9][0-9]*\)$/\1/p' "$out" 2>/dev/null | head -n1)"
        [[ -n "$FTPSERVER_PORT" ]] && break
        if ! kill -0 "$FTPSERVER_PID" 2>/dev/null || ((SECONDS >= deadline)); then
            warn "ftpserver.py did not start:"
            cat "$log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}

# Extra FTP servers for tests/matrix.rs. pure-ftpd and proftpd conflict with
# vsftpd as Debian packages, so they are not installed: their .debs are
# downloaded (apt-get download) and unpacked (dpkg -x) into private
# directories under $FTPFS_EXTRA_SERVERS_DIR. Only their shared libraries
# that do not conflict are installed normally. Idempotent: a server that is
# already unpacked (its binary exists and runs) is skipped.
FTPFS_EXTRA_SERVERS_DIR="${FTPFS_EXTRA_SERVERS_DIR:-/opt/ftpfs-test-servers}"
# Runtime libraries of the unpacked binaries (see `ldd`).
FTPFS_EXTRA_SERVER_LIBS=(libhiredis0.14 libmemcached11 libmemcachedutil2 libsodium23 libcap2 libpam0g libssl3 libpcre2-posix3)

# _unpack_debs NAME BINARY PKG...: download PKG... and unpack them into
# $FTPFS_EXTRA_SERVERS_DIR/NAME unless NAME/BINARY already exists.
_unpack_debs() {
    local name="$1" bin="$2"
    shift 2
    local dest="$FTPFS_EXTRA_SERVERS_DIR/$name"
    if [[ -e "$dest/$bin" ]]; then
        info "$name: present ($dest/$bin)"
        return 0
    fi
    info "unpacking $name (${*}) into $dest"
    local tmp
    tmp="$(mktemp -d)"
    chmod 755 "$tmp" # apt-get download runs as _apt
    if ! (cd "$tmp" && as_root apt-get download "$@" >/dev/null); then
        info "apt-get download failed: running apt-get update and retrying"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        (cd "$tmp" && as_root apt-get download "$@" >/dev/null) || {
            rm -rf "$tmp"
            die "apt-get download $* failed"
        }
    fi
    as_root mkdir -p "$dest.partial"
    local deb
    for deb in "$tmp"/*.deb; do
        as_root dpkg -x "$deb" "$dest.partial"
    done
    as_root rm -rf "$tmp" "$dest"
    as_root mv "$dest.partial" "$dest"
    [[ -e "$dest/$bin" ]] || die "$name: $dest/$bin missing after unpacking"
}

install_extra_servers() {
    local -a missing=()
    local pkg
    for pkg in "${FTPFS_EXTRA_SERVER_LIBS[@]}"; do
        _pkg_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        info "installing libraries for the extra FTP servers: ${missing[*]}"
        _apt_install "${missing[@]}"
    fi
    _unpack_debs pure-ftpd usr/sbin/pure-ftpd pure-ftpd pure-ftpd-common
    # mod_tls (for tests/tls.rs) is in proftpd-mod-crypto; it marks a complete unpack.
    _unpack_debs proftpd usr/lib/proftpd/mod_tls.so proftpd-core proftpd-mod-crypto
    local bin
    for bin in pure-ftpd/usr/sbin/pure-ftpd proftpd/usr/sbin/proftpd proftpd/usr/lib/proftpd/mod_tls.so; do
        if ldd "$FTPFS_EXTRA_SERVERS_DIR/$bin" | grep -q 'not found'; then
            ldd "$FTPFS_EXTRA_SERVERS_DIR/$bin" | grep 'not found' >&2
            die "$bin: missing shared libraries"
        fi
    done
    "$FTPFS_EXTRA_SERVERS_DIR/proftpd/usr/sbin/proftpd" -v 2>&1 | head -n1 || true
    "$FTPFS_EXTRA_SERVERS_DIR/pure-ftpd/usr/sbin/pure-ftpd" --help 2>&1 | head -n1 || true
}
