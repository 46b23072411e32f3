#!/bin/bash
# SAI_SERVER_BIN wrapper: run the real server under strace (not its token subcommand).
case "$1" in token) exec "$REAL_SERVER" "$@";; esac
exec strace -f -ttt -T -y -o "${STRACE_OUT:-/tmp/srv.trace}" ${STRACE_ARGS} "$REAL_SERVER" "$@"
