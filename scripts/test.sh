#!/usr/bin/env bash
# Run Sai's whole test suite: formatting, clippy, doc tests, rustdoc warnings, the extra stages
# (cross-target checks, image builds, Nix evaluation...), then every test with
# cargo-nextest (last, so its summary is the final line CI prints).
#
# Works on a fresh Debian machine that has only the Rust toolchain: it
# installs what the tests need first (cargo-nextest, the apt packages listed
# in scripts/ci/packages/*.list), each only when missing.
#
# Layout, so that each area adds its needs without touching this file:
# * scripts/ci/packages/<area>.list: one apt package per line, `# why` after
#   it; a line `PACKAGE @bookworm-backports` installs from backports.
# * scripts/ci/stages/NN-<name>.sh: sourced in order before the final
#   nextest run; each defines a function `stage_main`. Their durations are
#   printed at the end with the others.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export SAI_CI_ROOT=$ROOT

STAGE_TIMES=()

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	else
		sudo "$@"
	fi
}

# Stage runner: prints a header, runs the command, records its duration.
step() {
	local name=$1
	shift
	echo
	echo "==> [$name] $*"
	local start=$SECONDS
	"$@"
	local took=$((SECONDS - start))
	STAGE_TIMES+=("$(printf '%5ds  %s' "$took" "$name")")
	echo "==> [$name] done in ${took}s"
}

print_stage_times() {
	echo
	echo "==> stage durations"
	printf '%s\n' "${STAGE_TIMES[@]}"
}

install_apt_packages() {
	if ! command -v dpkg-query >/dev/null 2>&1; then
		echo "test.sh: not a Debian system; install what scripts/ci/packages/*.list names" >&2
		return 0
	fi
	local main=() backports=() line pkg suite
	while read -r line; do
		line=${line%%#*}
		read -r pkg suite <<<"$line" || true
		[ -n "${pkg:-}" ] || continue
		if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
			continue
		fi
		if [ "${suite:-}" = "@bookworm-backports" ]; then
			backports+=("$pkg")
		else
			main+=("$pkg")
		fi
	done < <(cat scripts/ci/packages/*.list)
	if [ "${#main[@]}" -eq 0 ] && [ "${#backports[@]}" -eq 0 ]; then
		return 0
	fi
	if [ "${#backports[@]}" -gt 0 ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
		echo "test.sh: adding bookworm-backports to apt's sources"
		as_root tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	fi
	echo "test.sh: installing apt packages: ${main[*]} ${backports[*]}"
	as_root apt-get update
	if [ "${#main[@]}" -gt 0 ]; then
		as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends "${main[@]}"
	fi
	if [ "${#backports[@]}" -gt 0 ]; then
		as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends -t bookworm-backports "${backports[@]}"
	fi
}

install_rust_tools() {
	local component
	for component in rustfmt clippy; do
		if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
			if command -v rustup >/dev/null 2>&1; then
				rustup component add "$component"
			else
				echo "test.sh: cargo ${component/rustfmt/fmt} is missing and rustup is not available" >&2
				exit 1
			fi
		fi
	done
	if ! cargo nextest --version >/dev/null 2>&1; then
		echo "test.sh: installing cargo-nextest"
		cargo install --locked cargo-nextest
	fi
}

run_stage_file() {
	# shellcheck disable=SC1090
	(
		source "$1"
		stage_main
	)
}

step apt install_apt_packages
step rust-tools install_rust_tools
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
step doc-tests cargo test --doc --workspace --locked
# Broken intra-doc links and stray HTML in doc comments (they become
# schema descriptions and --help text too) fail here, not in a reader's browser.
step rustdoc env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked
for stage in scripts/ci/stages/*.sh; do
	[ -e "$stage" ] || continue
	name=$(basename "$stage" .sh)
	step "$name" run_stage_file "$stage"
done
# Build every test binary before running them, so the build's duration is
# its own stage and the run's is the tests' alone.
step nextest-build cargo nextest run --workspace --locked --profile ci --no-run
print_stage_times
# Last: its summary ("N tests run: N passed") is what CI reads.
echo
echo "==> [nextest] cargo nextest run --workspace --locked --no-fail-fast --profile ci"
cargo nextest run --workspace --locked --no-fail-fast --profile ci
