#!/usr/bin/env bash
# Regenerates the reference files shipped in the repository from the ftpfs
# binary: the man page docs/ftpfs.1 and the shell completions in completions/.
# tests/reference.rs fails when they differ from what the binary prints, so
# run this after changing the command line or the -o options.
#   scripts/gen-reference.sh
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build --quiet --bin ftpfs
bin="${CARGO_TARGET_DIR:-target}/debug/ftpfs"

mkdir -p docs completions
"$bin" man >docs/ftpfs.1
"$bin" completions bash >completions/ftpfs.bash
"$bin" completions zsh >completions/_ftpfs
"$bin" completions fish >completions/ftpfs.fish
echo "wrote docs/ftpfs.1 completions/ftpfs.bash completions/_ftpfs completions/ftpfs.fish"
