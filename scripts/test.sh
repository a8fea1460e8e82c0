#!/usr/bin/env bash
# Full check of the ftpfs tree: installs what is missing (idempotent), then
# cargo fmt --check, cargo clippy (warnings are errors) and cargo test.
# Works on a fresh Debian 12 machine that has the Rust toolchain, python3
# and pip; must run as root (or with sudo) for apt, useradd and FUSE mounts.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

section "Installing dependencies"
install_deps
install_extra_servers
ensure_rust_components

section "Ensuring vsftpd test user '$FTP_TEST_USER'"
ensure_ftp_user
info "ok"

section "Toolchain"
cargo --version
rustc --version
python3 -c 'import pyftpdlib, sys; print("python", sys.version.split()[0], "pyftpdlib", pyftpdlib.__ver__)'
/usr/sbin/vsftpd -v 0>&1 2>&1 | head -n1 || true  # vsftpd prints its version on fd 0

section "cargo fmt --check"
cargo fmt --check

section "cargo clippy --all-targets --features testing -- -D warnings"
cargo clippy --all-targets --features testing -- -D warnings

section "Installing external test suites (pjdfstest, fsx)"
install_test_tools

section "cargo test --all-targets --features testing"
cargo test --all-targets --features testing

section "All checks passed"
