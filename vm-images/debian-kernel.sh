#!/bin/sh
# Fetch (once) a Debian kernel and its modules from apt, without installing it:
#
#   vm-images/debian-kernel.sh FLAVOUR OUT_DIR      (FLAVOUR: amd64, arm64, ...)
#
# Leaves OUT_DIR/vmlinuz and OUT_DIR/lib/modules/<version>/.
set -eu
flavour=$1 out=$2
meta=linux-image-$flavour
kernel_package() {
	apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n 1
}
pkg=$(kernel_package)
if [ -z "$pkg" ]; then
	# A fresh machine may have no package lists yet.
	apt-get update -qq >/dev/null 2>&1 || true
	pkg=$(kernel_package)
fi
[ -n "$pkg" ] || { echo "debian-kernel: apt knows no $meta (apt-get update failed?)" >&2; exit 1; }
if [ -f "$out/done" ] && [ "$(cat "$out/done")" = "$pkg" ]; then
	echo "kernel $out: up to date ($pkg)"
	exit 0
fi
rm -rf "$out"
mkdir -p "$out/deb"
(cd "$out/deb" && apt-get download "$pkg" >/dev/null)
dpkg-deb -x "$out"/deb/*.deb "$out/tree"
cp "$out"/tree/boot/vmlinuz-* "$out/vmlinuz"
mkdir -p "$out/lib"
mv "$out/tree/lib/modules" "$out/lib/modules"
rm -rf "$out/tree" "$out/deb"
echo "$pkg" >"$out/done"
echo "kernel $out: $pkg"
