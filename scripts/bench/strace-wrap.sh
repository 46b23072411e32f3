#!/bin/bash
# SAI_SERVER_BIN wrapper: run the real server ($REAL_SERVER) under strace,
# writing the trace to $STRACE_OUT; its token subcommand runs untraced.
# strace 6.1 has no --kill-on-exit, so the ids of strace and the server are
# appended to $STRACE_OUT.pids for the caller to end them after the bench.
case " $* " in *" token "*) exec "$REAL_SERVER" "$@";; esac
out="${STRACE_OUT:-/tmp/srv.trace}"
strace -f -ttt -T -y -o "$out" ${STRACE_ARGS} "$REAL_SERVER" "$@" &
s=$!
for _ in 1 2 3 4 5 6 7 8 9 10; do
  c=$(pgrep -P "$s") && break
  sleep 0.1
done
echo "$s $c" >> "$out.pids"
wait "$s"
