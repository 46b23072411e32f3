"""Buildbot side of Sai's builder-CPU comparison (issue #10, item 3).

Run by run.sh with the venv's Python: `bench.py <venv> <empty dir> <n>`.
Creates a master (sqlite) and one worker in <dir>, both on 127.0.0.1 only,
runs 1 warm-up build and then <n> trivial builds one at a time, each
triggered by a POST to the `base` change hook, and prints a table in the
format of crates/sai-builder/benches/daemon.rs, section 4.

Every process it starts gets its pid written to <dir>/pids (run.sh's trap
kills them too) and is stopped before it returns.
"""

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from importlib import metadata

# The same step as Sai's bench: bash's own clock, first thing.
STEP = 'echo "MA""RK=${EPOCHREALTIME/./}000"'
# /proc/<pid>/stat times are in USER_HZ ticks, 100 a second.
TICK_MS = 10.0
HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    """(own utime+stime, reaped children's cutime+cstime) in ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime..cstime are fields 14..17.
    utime, stime, cutime, cstime = (int(v) for v in rest[11:15])
    return utime + stime, cutime + cstime


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def pct(sorted_values, p):
    return sorted_values[round((len(sorted_values) - 1) * p)]


class Api:
    """The master's REST API over one keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.requests = 0

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                self.requests += 1
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.status >= 400:
                    raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:300]!r}")
                return data
            except (http.client.HTTPException, ConnectionError):
                # The master closed the keep-alive connection: once more, fresh.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path):
        return json.loads(self.request("GET", "/api/v2/" + path))

    def push(self, revision):
        """A push of one new revision to `main`, as a hook would send it."""
        form = urllib.parse.urlencode(
            {
                "repository": "https://example.invalid/bench.git",
                "project": "bench",
                "branch": "main",
                "revision": revision,
                "author": "bench <bench@example.invalid>",
                "comments": "trivial",
            }
        )
        self.request(
            "POST",
            "/change_hook/base",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )


class Rig:
    def __init__(self, venv, top):
        self.venv = venv
        self.top = top
        self.procs = []
        self.www_port = free_port()
        self.pb_port = free_port()
        while self.pb_port == self.www_port:
            self.pb_port = free_port()

    def tool(self, name):
        return os.path.join(self.venv, "bin", name)

    def run(self, *argv):
        out = subprocess.run(argv, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")

    def create(self):
        master = os.path.join(self.top, "master")
        worker = os.path.join(self.top, "worker")
        self.run(self.tool("buildbot"), "create-master", "--quiet", "--db", "sqlite:///state.sqlite", master)
        shutil.copy(os.path.join(HERE, "master.cfg"), os.path.join(master, "master.cfg"))
        password = os.urandom(12).hex()
        with open(os.path.join(master, "bench.json"), "w") as f:
            json.dump(
                {"www_port": self.www_port, "pb_port": self.pb_port, "worker_password": password, "step": STEP},
                f,
            )
        self.run(self.tool("buildbot"), "checkconfig", master)
        self.run(
            self.tool("buildbot-worker"),
            "create-worker",
            "--quiet",
            "--umask=0o22",
            worker,
            f"127.0.0.1:{self.pb_port}",
            "w1",
            password,
        )
        return master, worker

    def start(self, basedir, name):
        """twistd in the foreground: the pid measured is the daemon itself."""
        log = open(os.path.join(self.top, f"{name}.out"), "w")
        proc = subprocess.Popen(
            [self.tool("twistd"), "--nodaemon", "--no_save", "--pidfile=", "-y", "buildbot.tac"],
            cwd=basedir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        with open(os.path.join(self.top, "pids"), "a") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_ready(api, procs, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"pid {proc.pid} exited ({proc.returncode}) before the master was ready")
        try:
            workers = api.get("workers?name=w1")["workers"]
            if workers and workers[0]["connected_to"]:
                return
        except (OSError, RuntimeError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError("master/worker not ready in time (see master.out, worker.out, */twistd.log)")


class Finished:
    """Builds as they finish, pushed by the master as server-sent events
    (`/sse/listen/builds/*/finished`, one long-lived request): no polling,
    so waiting costs the master nothing per build and ends the moment the
    build does."""

    def __init__(self, port, timeout=120):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", "/sse/listen/builds/*/finished", headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise RuntimeError(f"/sse/listen: HTTP {self.resp.status}")
        # The master sends a handshake once the subscription is in place.
        self.next_data()

    def next_data(self):
        while True:
            line = self.resp.readline()
            if not line:
                raise RuntimeError("the master closed the event stream")
            if line.startswith(b"data: "):
                return line[len(b"data: ") :].strip()

    def wait(self, builderid, number):
        """Blocks until build <number> of the builder finishes; its id."""
        while True:
            build = json.loads(self.next_data())["message"]
            if build["builderid"] == builderid and build["number"] == number:
                if build["results"] != 0:
                    raise RuntimeError(f"build {number} ended with results {build['results']}")
                return build["buildid"]

    def close(self):
        self.conn.close()


def step_mark(api, buildid):
    """The step's own clock (ns), from its stdio log."""
    step = api.get(f"builds/{buildid}/steps?name=trivial")["steps"][0]
    log = api.get(f"steps/{step['stepid']}/logs?slug=stdio")["logs"][0]
    chunks = api.get(f"logs/{log['logid']}/contents")["logchunks"]
    text = "".join(c["content"] for c in chunks)
    m = re.search(r"MARK=(\d+)", text)
    if not m:
        raise RuntimeError(f"no MARK in build {buildid}'s log: {text!r}")
    return int(m.group(1))


def main():
    venv, top, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # A TERM (run.sh's trap, timeout) unwinds through `finally` like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rig = Rig(venv, top)
    try:
        master_dir, worker_dir = rig.create()
        master = rig.start(master_dir, "master")
        worker = rig.start(worker_dir, "worker")
        api = Api(rig.www_port)
        wait_ready(api, [master, worker])
        builderid = api.get("builders?name=trivial")["builders"][0]["builderid"]

        finished = Finished(rig.www_port)
        api.push("warm" + os.urandom(8).hex())
        finished.wait(builderid, 1)
        time.sleep(2)

        posted = []
        buildids = []
        requests0 = api.requests
        w0, m0 = cpu_ticks(worker.pid), cpu_ticks(master.pid)
        started = time.monotonic()
        for i in range(n):
            posted.append(time.time_ns())
            api.push(f"{i:08d}" + os.urandom(16).hex())
            buildids.append(finished.wait(builderid, i + 2))
        wall = time.monotonic() - started
        # The worker may still be tidying up the last build when the master
        # reports it finished: let that land in the window too (the warm-up
        # build's tail fell in the pause before it). Idle costs ~0 ticks.
        time.sleep(1)
        w1, m1 = cpu_ticks(worker.pid), cpu_ticks(master.pid)
        requests = api.requests - requests0
        finished.close()
        worker_rss = rss_mib(worker.pid)
        master_rss = rss_mib(master.pid)

        latencies = sorted((step_mark(api, b) - p) / 1e6 for b, p in zip(buildids, posted))
    finally:
        rig.stop()
        # All stopped: nothing left for run.sh's trap to kill.
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(top, "pids"))

    def per_build(a, b):
        return (b - a) * TICK_MS / n

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("buildbot", "buildbot-worker", "Twisted")
    )
    print(f"buildbot per-build benchmark ({versions}, Python {sys.version.split()[0]}; loopback; load average {load})")
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| hook POST -> step running (base change hook, new revision each, no checkout; n={n}), p50 / p95 "
        f"| {pct(latencies, 0.5):.2f} / {pct(latencies, 0.95):.2f} ms |"
    )
    for who, (own0, kids0), (own1, kids1) in (("worker", w0, w1), ("master", m0, m1)):
        print(
            f"| buildbot {who} CPU per trivial build, own + reaped children = total "
            f"| {per_build(own0, own1):.2f} + {per_build(kids0, kids1):.2f} = "
            f"{per_build(own0 + kids0, own1 + kids1):.2f} ms |"
        )
    print(f"| trivial builds, POST to build complete, one at a time | {n / wall:.1f} builds/s |")
    print(f"| HTTP requests per build (the hook POST; builds finished come over one SSE stream) | {requests / n:.1f} |")
    print(f"| RSS after the builds: worker / master | {worker_rss:.1f} / {master_rss:.1f} MiB |")
    print()


if __name__ == "__main__":
    main()
