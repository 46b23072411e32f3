# shellcheck shell=bash
# The builder and its helpers everywhere the rack builds (issue 17):
#
# 1. `cargo check` (no linking) of sai-core, sai-builder, sai-device,
#    sai-expect and sai-jig for Windows, macOS (Intel and M1), FreeBSD,
#    NetBSD and illumos (x86_64-pc-solaris has no prebuilt standard library
#    for this toolchain; illumos is the Solaris-family target that has one).
#    sai-builder's TLS (rustls with ring) compiles C for its target: mingw-w64
#    for Windows; for the others clang with `-nostdlibinc` (ring's own way
#    of building without a target sysroot: its C needs only clang's
#    freestanding headers), plus, for macOS, a stand-in for the SDK's
#    TargetConditionals.h (scripts/ci/cross-include/apple/).
# 2. The sai-core and sai-builder suites built for aarch64 and for
#    big-endian s390x Linux and run under qemu-user: protocol frames with
#    their golden wire bytes, saifile expansion, and the builder's daemon
#    tests, where the emulated `sai-builder` (started through
#    SAI_TEST_RUNNER) checks out real git repositories and runs shell steps
#    for the native x86_64 `sai-server` (SAI_TEST_SERVER_BIN) on loopback.
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

cross_timed() {
	local what=$1
	shift
	local start=$SECONDS
	"$@"
	echo "==> [cross] $what: $((SECONDS - start))s"
}

# The C compiler for `-sys` crates (ring) when checking `target`.
cross_check_env() {
	local target=$1 under
	under=${target//-/_}
	case $target in
	*-windows-gnu) ;; # mingw-w64, found by the cc crate
	*)
		export "CC_${under}=clang"
		export "AR_${under}=llvm-ar"
		local flags="-nostdlibinc -DRING_CORE_NOSTDLIBINC=1"
		case $target in
		*-apple-darwin) flags+=" -I$SAI_CI_ROOT/scripts/ci/cross-include/apple" ;;
		esac
		export "CFLAGS_${under}=$flags"
		;;
	esac
}

# Linker and emulator for a test binary of `target`.
cross_run_env() {
	local target=$1 upper arch
	upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
	arch=${target%%-*}
	export "CARGO_TARGET_${upper}_LINKER=${arch}-linux-gnu-gcc"
	export "CARGO_TARGET_${upper}_RUNNER=qemu-${arch}"
	export QEMU_LD_PREFIX=/usr/${arch}-linux-gnu
	# The tests start the builder binary themselves: through qemu too...
	export SAI_TEST_RUNNER=qemu-${arch}
	# ...and the server it talks to natively (built below).
	export SAI_TEST_SERVER_BIN=$SAI_CI_ROOT/target/debug/sai-server
}

stage_main() {
	local installed t
	installed=$(rustup target list --installed)
	for t in "${CROSS_CHECK_TARGETS[@]}" "${CROSS_RUN_TARGETS[@]}"; do
		grep -qx "$t" <<<"$installed" || rustup target add "$t"
	done

	for t in "${CROSS_CHECK_TARGETS[@]}"; do
		(
			cross_check_env "$t"
			cross_timed "check $t" env CARGO_TARGET_DIR=target/cross/check \
				cargo check --locked --quiet --target "$t" "${CROSS_CRATES[@]}" --lib --bins
		)
	done

	# The x86_64 server of the emulated builder tests (target/debug, which
	# the final nextest run reuses).
	cross_timed "build native sai-server" cargo build --locked --quiet -p sai-server
	for t in "${CROSS_RUN_TARGETS[@]}"; do
		(
			cross_run_env "$t"
			export CARGO_TARGET_DIR=target/cross/run
			cross_timed "build sai-core + sai-builder tests $t" cargo test --locked --quiet --profile cross \
				--target "$t" -p sai-core -p sai-builder --tests --lib --no-run
			# One invocation for both crates: the same feature set as the
			# build above, so nothing is rebuilt.
			cross_timed "run sai-core + sai-builder tests under qemu-${t%%-*}" cargo test --locked --quiet \
				--profile cross --target "$t" -p sai-core -p sai-builder --tests --lib
		)
	done
}
