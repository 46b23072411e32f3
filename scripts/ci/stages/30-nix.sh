# The Nix linters the Nix tests run (crates/sai/tests/nix_flake.rs):
# nixpkgs-fmt and deadnix, from crates.io, installed once and kept in
# ~/.cargo/bin (cache-friendly: nothing happens when they are there).
# Also prints what the Nix tests will use, so a CI log shows it.

stage_main() {
	local missing=()
	local tool
	for tool in nixpkgs-fmt deadnix; do
		if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/$tool" ]; then
			missing+=("$tool")
		fi
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		echo "30-nix: installing ${missing[*]} from crates.io"
		cargo install --locked "${missing[@]}"
	fi
	nix-instantiate --version
	if [ ! -f ../shared/nixpkgs-lib/lib/default.nix ]; then
		echo "30-nix: ../shared/nixpkgs-lib is missing; the Nix tests evaluate modules with it" >&2
		return 1
	fi
}
