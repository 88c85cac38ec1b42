#!/usr/bin/env bash
# Generate what the .deb ships besides the binary — the man page and the completion
# scripts — by running the built binary, into <target dir>/assets/ (where the `assets` of
# [package.metadata.deb] in Cargo.toml point).
#
#   cargo build --locked --release && packaging/assets.sh && cargo deb --no-build
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
bin=${1:-$target_dir/x86_64-unknown-linux-gnu/release/dockmaster}
out=$target_dir/assets

[ -x "$bin" ] || { echo "assets: no $bin; run \`cargo build --locked --release\` first" >&2; exit 1; }
mkdir -p "$out"
"$bin" man > "$out/dockmaster.1"
"$bin" completions bash > "$out/dockmaster.bash"
"$bin" completions zsh > "$out/_dockmaster"
"$bin" completions fish > "$out/dockmaster.fish"
echo "assets: $(ls "$out" | tr '\n' ' ')in $out" >&2
