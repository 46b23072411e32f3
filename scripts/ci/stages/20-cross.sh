# shellcheck shell=bash
# The builder and its helpers everywhere the rack builds (issue 17):
#
# 1. `cargo check` (no linking) of sai-core, sai-builder, sai-device,
#    sai-expect and sai-jig for Windows, macOS (Intel and M1), FreeBSD,
#    NetBSD and illumos. (x86_64-pc-solaris has no prebuilt standard
#    library for this toolchain; illumos is the Solaris-family target that
#    has one.)
# 2. The sai-core suite and the builder's suites that matter (its unit
#    tests, the step runner, containment, a task end to end, the daemon
#    against a real x86_64 sai-server on loopback) built for aarch64 and
#    for big-endian s390x Linux and run under qemu-user.
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
CROSS_RUN_TARGETS=(
	aarch64-unknown-linux-gnu
	s390x-unknown-linux-gnu
)
CROSS_CRATES=(-p sai-core -p sai-builder -p sai-device -p sai-expect -p sai-jig)
# The builder test binaries run under emulation.
CROSS_BUILDER_TESTS=(--lib --test step_runner --test containment --test task_flow --test daemon)

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

	# The x86_64 server the emulated builders talk to (shared with the final
	# nextest build: same target dir and profile).
	cross_timed "build x86_64 sai-server" cargo build --locked --quiet -p sai-server
	export SAI_TEST_SERVER_BIN=$PWD/target/debug/sai-server

	for t in "${CROSS_RUN_TARGETS[@]}"; do
		(
			cross_env "$t"
			export CARGO_TARGET_DIR=target/cross/run
			cross_timed "build tests $t" cargo test --locked --quiet --profile cross --target "$t" \
				-p sai-core --tests --lib --no-run
			cross_timed "build builder tests $t" cargo test --locked --quiet --profile cross --target "$t" \
				-p sai-builder "${CROSS_BUILDER_TESTS[@]}" --no-run
			cross_timed "run sai-core tests under qemu-${t%%-*}" cargo test --locked --quiet --profile cross \
				--target "$t" -p sai-core --tests --lib
			cross_timed "run sai-builder tests under qemu-${t%%-*}" cargo test --locked --quiet --profile cross \
				--target "$t" -p sai-builder "${CROSS_BUILDER_TESTS[@]}"
		)
	done
}
