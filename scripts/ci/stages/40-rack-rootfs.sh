# Rack images (issue 13): build once per CI run what the rack tests share.
# * the static Sai binaries (cargo profile `static`, crt-static),
# * the Debian root filesystem of crates/sai/tests/data/rack-ci.json
#   (debootstrap --variant=minbase; podman, nspawn and qemu builders share it),
# * the Debian kernel for the qemu builder.
# Everything lands under target/ (target/rack/), so a rerun reuses it.
stage_main() {
	local t0=$SECONDS t
	scripts/build-static.sh --profile static -p sai-builder -p sai-device -p sai-expect -p sai-server
	echo "rack: static binaries in $((SECONDS - t0))s"
	t=$SECONDS
	cargo build --locked -p sai
	# Build only the root filesystem and kernel here (no podman/VM images:
	# the tests build those and time them).
	local rack=crates/sai/tests/data/rack-ci.json
	target/debug/sai rack build --prepare "$rack" --out target/rack/ci-render
	echo "rack: root filesystem and kernel in $((SECONDS - t))s"
	du -sh target/rack/rootfs/* target/rack/kernel-* 2>/dev/null || true
}
