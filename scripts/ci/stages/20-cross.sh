# shellcheck shell=bash
# The builder and its helpers everywhere the rack builds (issue 17):
#
# 1. `cargo check` (no linking) of sai-core, sai-device, sai-expect and
#    sai-jig for Windows, macOS (Intel and M1), FreeBSD, NetBSD and illumos
#    (x86_64-pc-solaris has no prebuilt standard library for this
#    toolchain; illumos is the Solaris-family target that has one), and of
#    sai-builder for Windows. sai-builder's TLS (rustls with ring) compiles
#    C for its target: only Windows has a cross C compiler here (mingw-w64);
#    for macOS there is no SDK and for the BSDs and illumos no sysroot.
# 2. The sai-core suite (protocol frames with their golden wire bytes,
#    saifile expansion) built for aarch64 and for big-endian s390x Linux and
#    run under qemu-user.
#
# Checks share target/cross/check and the emulated runs target/cross/run:
# cargo keeps each target's artifacts in its own <triple>/ directory there,
# and the host-side proc macros and build scripts are built once instead of
# once per target. Each part prints its duration.

CROSS_CHECK_TARGETS=(
	x86_64-pc-windows-gnu
	x86_64-apple-darwin
	aarch64-apple-darwin
	x86_64-unknown-freebsd
	x86_64-unknown-netbsd
	x86_64-unknown-illumos
)
CROSS_BUILDER_CHECK_TARGETS=(
	x86_64-pc-windows-gnu
)
CROSS_RUN_TARGETS=(
	aarch64-unknown-linux-gnu
	s390x-unknown-linux-gnu
)
CROSS_CRATES=(-p sai-core -p sai-device -p sai-expect -p sai-jig)

cross_timed() {
	local what=$1
	shift
	local start=$SECONDS
	"$@"
	echo "==> [cross] $what: $((SECONDS - start))s"
}

cross_env() {
	local target=$1 upper arch
	upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
	arch=${target%%-*}
	export "CARGO_TARGET_${upper}_LINKER=${arch}-linux-gnu-gcc"
	export "CARGO_TARGET_${upper}_RUNNER=qemu-${arch}"
	export QEMU_LD_PREFIX=/usr/${arch}-linux-gnu
	# The tests start the builder binary themselves: through qemu too.
	export SAI_TEST_RUNNER=qemu-${arch}
}

stage_main() {
	local installed t
	installed=$(rustup target list --installed)
	for t in "${CROSS_CHECK_TARGETS[@]}" "${CROSS_RUN_TARGETS[@]}"; do
		grep -qx "$t" <<<"$installed" || rustup target add "$t"
	done

	for t in "${CROSS_CHECK_TARGETS[@]}"; do
		cross_timed "check $t" env CARGO_TARGET_DIR=target/cross/check \
			cargo check --locked --quiet --target "$t" "${CROSS_CRATES[@]}" --lib --bins
	done
	for t in "${CROSS_BUILDER_CHECK_TARGETS[@]}"; do
		cross_timed "check sai-builder $t" env CARGO_TARGET_DIR=target/cross/check \
			cargo check --locked --quiet --target "$t" -p sai-builder --lib --bins
	done

	for t in "${CROSS_RUN_TARGETS[@]}"; do
		(
			cross_env "$t"
			export CARGO_TARGET_DIR=target/cross/run
			cross_timed "build sai-core tests $t" cargo test --locked --quiet --profile cross --target "$t" \
				-p sai-core --tests --lib --no-run
			cross_timed "run sai-core tests under qemu-${t%%-*}" cargo test --locked --quiet --profile cross \
				--target "$t" -p sai-core --tests --lib
		)
	done
}
