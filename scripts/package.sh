#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installed from crates.io when
# missing), from [package.metadata.deb] in Cargo.toml: the ftpfs binary, the
# man page, bash/zsh/fish completions, mount.fuse.ftpfs (for fstab and
# `mount -t fuse.ftpfs`), and README.md and SEMANTICS.md as docs; it depends on
# fuse3. Prints the path of the .deb on its last line.
#
#   scripts/package.sh                      # -> target/debian/ftpfs_VERSION_ARCH.deb
#   sudo apt install ./target/debian/ftpfs_*.deb    (or: sudo dpkg -i ...)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

FTPFS_CARGO_TOOLS=(cargo-deb)
install_test_tools
out="target/debian"
rm -f "$out"/ftpfs_*.deb
run cargo deb --output "$out" >&2
deb="$(ls -t "$out"/ftpfs_*.deb | head -n1)"
[[ -f "$deb" ]] || die "cargo deb made no package in $out"
info "built $deb"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\):/  \1:/p' >&2
echo "$deb"
