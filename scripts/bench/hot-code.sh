#!/usr/bin/env bash
# Regenerate crates/sai-builder/link/hot.ld: the code a deployed
# builder runs, found by running it through the daemon bench (plain and
# TLS, quick, and a full run with the 100 MB step) twice: under callgrind,
# which sees every instruction, and natively under `perf record`, which
# samples the variants picked for this CPU that valgrind's does not have
# (SHA-NI, AVX-512 string functions). hot_code.py lists the sections from
# the link map. Run it after changes that move much code (a new dependency,
# a reworked task path); build-static.sh says when the list has rotted.
# Needs valgrind and perf; takes ~15 minutes. SAI_BENCH_SERVER=<path> uses
# that server instead of building the static one.
#
#   scripts/bench/hot-code.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
triple=x86_64-unknown-linux-gnu
bin=${CARGO_TARGET_DIR:-target}/$triple/release-static
# Built unstripped and with its link map: input section names.
scripts/build-static.sh -p sai-builder -- -C strip=none "-C" "link-arg=-Wl,-Map=$work/map"
cp "$bin/sai-builder" "$work/sai-builder"
if [ -n "${SAI_BENCH_SERVER:-}" ]; then
	cp "$SAI_BENCH_SERVER" "$work/sai-server"
else
	scripts/build-static.sh -p sai-server
	cp "$bin/sai-server" "$work/sai-server"
fi
bench=$(cargo bench -p sai-builder --bench daemon --profile dev --no-run --message-format=json 2>/dev/null |
	sed -n 's/.*"executable":"\([^"]*daemon-[^"]*\)".*/\1/p' | tail -1)
cat > "$work/callgrind" <<WRAP
#!/bin/sh
exec valgrind --quiet --tool=callgrind --dump-instr=yes --compress-pos=no \\
	--callgrind-out-file=$work/profile.%p $work/sai-builder "\$@"
WRAP
cat > "$work/perf" <<WRAP
#!/bin/sh
exec perf record --quiet -e cpu-clock:u -F 20000 -o $work/perf.\$\$ -- $work/sai-builder "\$@"
WRAP
chmod +x "$work/callgrind" "$work/perf"
export SAI_TESTDATA=${SAI_TESTDATA:-$PWD/../shared/testdata}
run() {
	local wrapper=$1
	shift
	echo "hot-code: daemon bench under $wrapper $*"
	env "$@" SAI_BENCH_BUILDER="$work/$wrapper" SAI_BENCH_SERVER="$work/sai-server" \
		"$bench" --bench >"$work/bench.log" 2>&1 || { cat "$work/bench.log"; exit 1; }
}
for wrapper in callgrind perf; do
	run $wrapper SAI_BENCH_QUICK=1
	run $wrapper SAI_BENCH_QUICK=1 SAI_BENCH_TLS=1
	run $wrapper
done
for p in "$work"/perf.*; do
	perf script -i "$p" -F ip 2>/dev/null | awk '{ print "0x" $1 }' >"$work/profile.${p##*.}.perf"
done
python3 scripts/bench/hot_code.py "$work/map" "$work"/profile.* >"$work/hot.ld"
mv "$work/hot.ld" crates/sai-builder/link/hot.ld
echo "hot-code: wrote crates/sai-builder/link/hot.ld; rebuild with scripts/build-static.sh"
