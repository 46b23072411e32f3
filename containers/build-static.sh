#!/bin/sh
# Build statically linked Sai binaries for containers and VM images:
#
#   containers/build-static.sh [-p CRATE]...   (default: every daemon)
#
# Output: target/x86_64-unknown-linux-gnu/static/. glibc's static libc.a has
# no symbol versions, but the libc crate links the termios speed functions
# by versioned name (cfsetspeed@GLIBC_2.2.5, for the glibc 2.42 ABI change);
# --defsym points those names at the plain symbols.
set -eu
cd "$(dirname "$0")/.."
flags="-C target-feature=+crt-static"
for f in cfgetispeed cfgetospeed cfsetispeed cfsetospeed cfsetspeed; do
	flags="$flags -C link-arg=-Wl,--defsym=\"$f@GLIBC_2.2.5\"=$f"
done
[ $# -gt 0 ] || set -- -p sai-builder -p sai-device -p sai-expect -p sai-server
RUSTFLAGS=$flags exec cargo build --locked --profile static --target x86_64-unknown-linux-gnu "$@"
