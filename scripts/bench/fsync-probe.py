#!/usr/bin/env python3
"""The disk's floor for one durable push: the latency of one small write
followed by fdatasync (what a sqlite WAL commit with synchronous=FULL costs),
in the directory given (default: $TMPDIR or /tmp). Prints p50/p95/max.

    scripts/bench/fsync-probe.py [dir] [samples] [append|overwrite]

`append` grows the file at every write (a fresh WAL: the size changes, so
the journal commits too); `overwrite` writes over frames already allocated
(a WAL reused after a checkpoint: data only).
"""
import os, sys, tempfile, time

d = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
mode = sys.argv[3] if len(sys.argv) > 3 else "append"
frame = b"f" * 24 + b"p" * 4096  # one WAL frame: 24-byte header + 4 KiB page
with tempfile.NamedTemporaryFile(dir=d, prefix="fsync-probe-") as f:
    fd = f.fileno()
    if mode == "overwrite":
        os.write(fd, frame * n)
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        os.write(fd, frame)
        os.fdatasync(fd)
        samples.append((time.perf_counter() - t0) * 1000)
samples.sort()
pct = lambda p: samples[round((len(samples) - 1) * p)]
print(f"| write of one 4 KiB WAL frame ({mode}) + fdatasync, {d}, n={n}: p50 / p95 / max | "
      f"{pct(0.5):.2f} / {pct(0.95):.2f} / {samples[-1]:.2f} ms |")
