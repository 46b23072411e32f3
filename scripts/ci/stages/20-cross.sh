# shellcheck shell=bash
# The builder and its helpers everywhere the rack builds (issue 17):
#
# 1. `cargo check` (no linking) of sai-core, sai-builder, sai-device,
#    sai-expect and sai-jig for Windows, macOS (Intel and M1), FreeBSD,
#    NetBSD and illumos (x86_64-pc-solaris has no prebuilt standard library
#    for this toolchain; illumos is the Solaris-family target that has one).
#    sai-builder's TLS (rustls with ring) compiles C for its target: mingw-w64
#    for Windows; for the others clang with `-nostdlibinc -ffreestanding
#    -DRING_CORE_NOSTDLIBINC` (how ring itself builds for targets without a
#    sysroot: its C then needs only clang's freestanding headers), plus,
#    for macOS, a stand-in for the SDK's TargetConditionals.h
#    (scripts/ci/cross-include/apple/). Checked, not linked: nothing built
#    this way runs.
# 2. The static release sai-builder the rack's aarch64 machines run
#    (issue 17): built as they get it (scripts/build-static.sh: profile
#    release-static, crt-static, non-PIE), checked with `file` to be a
#    static, non-PIE executable and run under qemu-aarch64 (`--version`,
#    `--help`). Its own target dir
#    (target/cross/static): the RUSTFLAGS differ from every other build.
# 3. The sai-core and sai-builder suites built for aarch64 and for
#    big-endian s390x Linux and run under qemu-user: protocol frames with
#    their golden wire bytes, saifile expansion, and the builder's daemon
#    tests, where the emulated `sai-builder` (started through
#    SAI_TEST_RUNNER) checks out real git repositories and runs shell steps
#    for the native x86_64 `sai-server` (SAI_TEST_SERVER_BIN) on loopback.
#
# The emulated suites run with nextest (the target runner is qemu), which
# prints every test's duration.
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
# Left out of the emulated runs unless SAI_CROSS_FULL=1: a third of their
# test time (measured in BENCHMARKS.md) spent on what does not depend on the
# architecture and runs natively in the final stage: reconnect and restart
# timing of the builder daemon, and randomised parser inputs. Frames, saifile
# expansion (the whole corpus), git checkouts, steps, TLS and real tasks
# against the x86_64 server all stay.
# The two /proc fallback tests simulate a confined systemd unit with
# unshare and setpriv, which a multi-threaded qemu-user process cannot
# enter (EINVAL); they run natively in the final nextest stage.
CROSS_RUN_SKIP='binary(daemon_restart) | binary(daemon_reconnect) | binary(saifile_proptest) | binary(config_robustness) | test(where_no_fresh_proc_can_be_mounted_the_probe_falls_back_to_a_shared_proc) | test(a_builder_that_cannot_mount_a_fresh_proc_warns_and_still_isolates_files)'

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
		# -ffreestanding: clang's own x86 intrinsics headers then skip
		# mm_malloc.h, which would want the target's stdlib.h.
		local flags="-nostdlibinc -ffreestanding -DRING_CORE_NOSTDLIBINC=1"
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

	cross_timed "static release sai-builder aarch64 (build, file, qemu-aarch64 --version/--help)" \
		env CARGO_TARGET_DIR=target/cross/static \
		scripts/build-static.sh --target aarch64-unknown-linux-gnu --smoke

	# The x86_64 sai-server of the emulated builder tests, built as the
	# final nextest run builds it (same command, same features), so that
	# build is done once: the later nextest-build stage finds it fresh.
	cross_timed "build the native workspace tests (and sai-server)" \
		cargo nextest run --workspace --locked --profile ci --no-run
	for t in "${CROSS_RUN_TARGETS[@]}"; do
		(
			cross_run_env "$t"
			export CARGO_TARGET_DIR=target/cross/run
			local run=(cargo nextest run --locked --cargo-profile cross --target "$t"
				-p sai-core -p sai-builder --profile ci)
			cross_timed "build sai-core + sai-builder tests $t" "${run[@]}" --no-run
			# Most of the builder's daemon tests wait (for a server, a
			# reconnect, a step): four at a time keep two cores busy under
			# emulation. nextest prints each test's duration.
			local filter=()
			[ "${SAI_CROSS_FULL:-0}" = 1 ] || filter=(-E "not ($CROSS_RUN_SKIP)")
			cross_timed "run sai-core + sai-builder tests under qemu-${t%%-*}" "${run[@]}" \
				--test-threads 4 --no-fail-fast "${filter[@]}"
		)
	done
}
