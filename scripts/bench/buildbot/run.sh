#!/usr/bin/env bash
# Buildbot's worker CPU per trivial build, side by side with Sai's
# `cargo bench -p sai-builder --bench daemon` (section 4). See README.md.
#
#   scripts/bench/buildbot/run.sh            # 1 warm-up + 60 builds
#   BUILDBOT_N=5 scripts/bench/buildbot/run.sh   # smoke run
#
# Installs the pinned Buildbot (requirements.txt) into
# ${XDG_CACHE_HOME:-$HOME/.cache}/sai-bench/buildbot-<version> when missing
# or stale, runs bench.py in a fresh temp dir and removes it; every process
# started is stopped on exit, whatever the exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=4.3.0
venv=${XDG_CACHE_HOME:-$HOME/.cache}/sai-bench/buildbot-$version
n=${BUILDBOT_N:-60}
# The distribution's interpreter by default (optimised build, what a
# Debian user of Buildbot runs); PYTHON=... to use another.
python=${PYTHON:-/usr/bin/python3}
[[ -x $python ]] || python=$(command -v python3)

if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    echo "installing Buildbot $version into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
        -r "$here/requirements.txt"
    # Written last: its presence means the install finished.
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sai-bench-buildbot.XXXXXX")
driver=
# shellcheck disable=SC2317 # reached through the trap
cleanup() {
    local pid
    if [[ -n $driver ]]; then kill "$driver" 2>/dev/null || true; fi
    if [[ -f $tmp/pids ]]; then
        # Each daemon leads its own process group (bench.py starts it in a
        # new session): stop the group, then make sure.
        while read -r pid; do
            kill -TERM -- "-$pid" 2>/dev/null || true
        done <"$tmp/pids"
        sleep 0.5
        while read -r pid; do
            kill -KILL -- "-$pid" 2>/dev/null || true
        done <"$tmp/pids"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background and waited for, so that a signal runs the trap at once.
"$venv/bin/python" "$here/bench.py" "$venv" "$tmp" "$n" &
driver=$!
status=0
wait "$driver" || status=$?
driver=
if ((status != 0)); then
    echo "buildbot bench failed ($status); master log tail:" >&2
    tail -n 30 "$tmp/master/twistd.log" >&2 2>/dev/null || true
fi
exit "$status"
