#!/usr/bin/env bash
# Run Sai's whole test suite: formatting, clippy, doc tests, then every test
# with cargo-nextest (last, so its summary is the final line).
#
# Works on a fresh Debian machine that has only the Rust toolchain: it
# installs what the tests need first (cargo-nextest, the apt packages listed
# below), each only when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# ---------------------------------------------------------------------------
# apt packages the tests need. EXTEND THIS LIST (one package per line, with
# the reason) when a test starts to need a system tool.
APT_PACKAGES=(
	git # gix spawns git-upload-pack for local fetches (sai-builder tests)
	curl # hooks/sai-notify posts the notification (sai e2e tests)
	openssl # hooks/sai-notify signs and base64-encodes it (sai e2e tests)
)
# ---------------------------------------------------------------------------

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	else
		sudo "$@"
	fi
}

install_apt_packages() {
	if ! command -v dpkg-query >/dev/null 2>&1; then
		echo "test.sh: not a Debian system; make sure these are installed: ${APT_PACKAGES[*]}" >&2
		return 0
	fi
	local missing=() pkg
	for pkg in "${APT_PACKAGES[@]}"; do
		if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
			missing+=("$pkg")
		fi
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		echo "test.sh: installing apt packages: ${missing[*]}"
		as_root apt-get update
		as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends "${missing[@]}"
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

step() {
	echo
	echo "==> $*"
	"$@"
}

install_apt_packages
install_rust_tools

step cargo fmt --all -- --check
step cargo clippy --workspace --all-targets --locked -- -D warnings
step cargo test --doc --workspace --locked
# Last: its summary ("N tests run: N passed") is what CI reads.
step cargo nextest run --workspace --locked --no-fail-fast --profile ci
