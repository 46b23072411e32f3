#!/usr/bin/env bash
# Static, stripped, optimised release binaries (cargo profile
# `release-static`, see CONTRIBUTING.md "Static binaries").
#
#   scripts/build-static.sh [TRIPLE] [CRATE...]
#
# Default: sai-builder for x86_64-unknown-linux-gnu. For aarch64 the Debian
# cross toolchain (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross) links it.
# Output: target/<triple>/release-static/<crate>; sizes are printed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
triple=${1:-x86_64-unknown-linux-gnu}
shift || true
crates=("${@:-sai-builder}")
arch=${triple%%-*}
if [ "$arch" != "$(uname -m)" ]; then
	upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
	export "CARGO_TARGET_${upper}_LINKER=${arch}-linux-gnu-gcc"
fi
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
start=$SECONDS
# --target keeps RUSTFLAGS away from build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build --locked --profile release-static --target "$triple" "${args[@]}"
echo "built in $((SECONDS - start))s"
for c in "${crates[@]}"; do
	f=${CARGO_TARGET_DIR:-target}/$triple/release-static/$c
	printf '%s %s bytes\n' "$f" "$(stat -c %s "$f")"
	file "$f" 2>/dev/null || true
done
