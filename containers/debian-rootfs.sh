#!/bin/sh
# Make (once) a Debian root filesystem for rack builders from Debian packages
# only: debootstrap --variant=minbase plus the given packages. No registry.
#
#   containers/debian-rootfs.sh SUITE DEBIAN_ARCH OUT_DIR [PACKAGE...]
#
# OUT_DIR/rootfs is the tree (shared by podman, nspawn and qemu images) and
# OUT_DIR/rootfs.tar its tarball for `podman import`. OUT_DIR/done records
# the inputs; when it matches, nothing is rebuilt.
set -eu
suite=$1 arch=$2 out=$3
shift 3
packages=$(printf '%s\n' "$@" | sort -u | tr '\n' ',' | sed 's/,$//')
want="suite=$suite arch=$arch packages=$packages"
if [ -f "$out/done" ] && [ "$(cat "$out/done")" = "$want" ]; then
	echo "rootfs $out: up to date ($want)"
	exit 0
fi
rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)
include=
[ -n "$packages" ] && include="--include=$packages"
mirror=${SAI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# shellcheck disable=SC2086
debootstrap --variant=minbase --arch="$arch" $include "$suite" "$out/rootfs" "$mirror" >"$out/debootstrap.log" 2>&1 || {
	tail -n 30 "$out/debootstrap.log" >&2
	exit 1
}
# Keep the image small and reproducible enough: no apt lists or caches.
rm -rf "$out/rootfs/var/cache/apt/archives"/*.deb "$out/rootfs/var/lib/apt/lists"/*
mkdir -p "$out/rootfs/home/sai" "$out/rootfs/etc/sai/builder" "$out/rootfs/etc/sai/devices"
echo "sai-builder" >"$out/rootfs/etc/hostname"
tar -C "$out/rootfs" --numeric-owner -cf "$out/rootfs.tar" .
echo "$want" >"$out/done"
echo "rootfs $out: built in $(($(date +%s) - start))s, $(du -sh "$out/rootfs" | cut -f1)"
