#!/usr/bin/env bash
# Statically linked, non-PIE Sai binaries (`-C target-feature=+crt-static
# -C relocation-model=static`), checked with `file` to be static and not
# position-independent and, with --smoke, run once (`--version`,
# `--help`; through qemu-user for another architecture).
#
#   scripts/build-static.sh [--profile P] [--target TRIPLE] [--smoke] [-p CRATE]... [-- RUSTC-ARG...]
#
# --profile release-static (default): optimised for size with fat LTO,
#     stripped: what the rack's real machines run (sizes in BENCHMARKS.md,
#     issues 17 and 10).
# --profile static: unoptimised, no debug info, quick to build: what CI puts
#     in container and VM images (scripts/ci/stages/40-rack-rootfs.sh).
# --target: default x86_64-unknown-linux-gnu; for another architecture the
#     Debian cross toolchain (gcc-<arch>-linux-gnu, libc6-dev-<arch>-cross)
#     links it.
# -p: default sai-builder.
# After --: arguments for the final rustc (e.g. `-C strip=none
#     -C link-arg=-Wl,-Map=FILE`, as scripts/bench/hot-code.sh uses).
#
# A crate with crates/<crate>/link/hot.ld (sai-builder) links its optimised
# binary with it (its build.rs): the functions it ran in a profile go first,
# together (`.text.hot`), so that an idle daemon keeps few pages of code
# resident (issue 10; scripts/bench/hot_code.py says why). For
# release-static this script fails if that section comes out at less than
# 40% of the code the list names: then the list has rotted (regenerate it
# with scripts/bench/hot-code.sh).
#
# Output: ${CARGO_TARGET_DIR:-target}/<triple>/<profile>/<crate>; the build
# time, each binary's size and `file` line are printed.
#
# glibc's static libc.a has no symbol versions, but the libc crate links the
# termios speed functions by versioned name (cfsetspeed@GLIBC_2.2.5 on
# x86_64, @GLIBC_2.17 on aarch64, for the glibc 2.42 ABI change); --defsym
# points those names at the plain symbols.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=release-static
triple=x86_64-unknown-linux-gnu
smoke=0
crates=()
while [ $# -gt 0 ]; do
	case $1 in
	--profile) profile=$2; shift 2 ;;
	--target) triple=$2; shift 2 ;;
	--smoke) smoke=1; shift ;;
	-p) crates+=("$2"); shift 2 ;;
	--) shift; break ;;
	*) echo "build-static.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
	esac
done
[ ${#crates[@]} -gt 0 ] || crates=(sai-builder)
arch=${triple%%-*}
case $arch in
x86_64) glibc_base=GLIBC_2.2.5 ;;
aarch64) glibc_base=GLIBC_2.17 ;;
*) glibc_base= ;;
esac
# Not position-independent (`relocation-model=static`): a static-pie
# binary relocates its pointer tables (`.data.rel.ro`, ~0.7 MiB for
# sai-builder) at start, which copies them into every process's private
# memory; at fixed addresses they stay clean, shared page cache (issue 10,
# the idle builder's RSS). The cost is no address randomisation of the
# executable itself (stacks, heap and mmaps are still randomised).
flags="-C target-feature=+crt-static -C relocation-model=static"
if [ -n "$glibc_base" ]; then
	for f in cfgetispeed cfgetospeed cfsetispeed cfsetospeed cfsetspeed; do
		flags="$flags -C link-arg=-Wl,--defsym=\"$f@$glibc_base\"=$f"
	done
fi
if [ "$arch" != "$(uname -m)" ]; then
	upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
	export "CARGO_TARGET_${upper}_LINKER=${arch}-linux-gnu-gcc"
fi
# The plain termios symbols must be linked for --defsym to name them, also
# in a binary that does not use termios: -u pulls them out of libc.a. Given
# to the final link only (cargo rustc), so that dependencies stay shared
# between crates.
link=()
if [ -n "$glibc_base" ]; then
	for f in cfgetispeed cfgetospeed cfsetispeed cfsetospeed cfsetspeed; do
		link+=(-C "link-arg=-Wl,--undefined=$f")
	done
fi
hot_script() {
	local f=$PWD/crates/$1/link/hot.ld
	[ "$profile" = release-static ] && [ -f "$f" ] && echo "$f"
	return 0
}
start=$SECONDS
for c in "${crates[@]}"; do
	# --target keeps RUSTFLAGS away from build scripts and proc macros.
	RUSTFLAGS=$flags cargo rustc --locked --profile "$profile" --target "$triple" \
		-p "$c" --bin "$c" -- "${link[@]}" "$@"
done
echo "build-static: $profile $triple ${crates[*]} built in $((SECONDS - start))s"
for c in "${crates[@]}"; do
	f=${CARGO_TARGET_DIR:-target}/$triple/$profile/$c
	desc=$(file -b "$f")
	printf 'build-static: %s %s bytes: %s\n' "$f" "$(stat -c %s "$f")" "$desc"
	case $desc in
	*"LSB executable"*"statically linked"*) ;;
	*) echo "build-static: $f is not a statically linked, non-PIE executable" >&2; exit 1 ;;
	esac
	h=$(hot_script "$c")
	if [ -n "$h" ]; then
		listed=$(sed -n 's/^ *[0-9]* input sections, \([0-9]*\) bytes.*/\1/p' "$h")
		placed=$(readelf -SW "$f" | sed -n 's/.* \.text\.hot  *[A-Z]*  *[0-9a-f]*  *[0-9a-f]*  *\([0-9a-f]*\) .*/\1/p')
		[ -z "$placed" ] || placed=$((16#$placed))
		echo "build-static: $c: .text.hot ${placed:-0} bytes of the ${listed} listed in $h"
		if [ -z "$placed" ] || [ $((placed * 100)) -lt $((listed * 40)) ]; then
			echo "build-static: $c: the hot-code list matches under 40% of its code: regenerate it (scripts/bench/hot-code.sh)" >&2
			exit 1
		fi
	fi
	if [ "$smoke" = 1 ]; then
		run=()
		[ "$arch" = "$(uname -m)" ] || run=("qemu-$arch")
		# Static: no QEMU_LD_PREFIX needed.
		"${run[@]}" "$f" --version
		"${run[@]}" "$f" --help >/dev/null
		echo "build-static: $c runs${run:+ under ${run[*]}} (--version, --help)"
	fi
done
