#!/usr/bin/env bash
# Builds the Debian package: the release binary, its completions and man page, and the deploy
# files, with cargo-deb (metadata in Cargo.toml). Prints the .deb's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
cargo build --release --locked --bin chain-co
out=target/completions
mkdir -p "$out"
./target/release/chain-co completions bash > "$out/chain-co.bash"
./target/release/chain-co completions zsh > "$out/_chain-co"
./target/release/chain-co completions fish > "$out/chain-co.fish"
./target/release/chain-co man | gzip -9n > "$out/chain-co.1.gz"
cargo deb --no-build --locked --output target/debian/ 2>&1 | tail -n 1
