"""Figure 1: propagation latency, write acknowledged → destination file → reload delivered.

One template holding one key, two reloaders (a SIGHUP to a child process, then an HTTP POST to a
server in that same child). Writes are spaced so each one is measured on its own; a write whose
value never reaches the file (or whose reload never arrives) within the timeout is a miss. The
same writes are also timed to a bare client's watch (the floor: what the backend itself allows).
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.backends import ROOT, Backend
from bench.inotify import DirWatcher
from bench.project import Confsync, Project, key
from bench.stats import summary

WARMUP = 3  # writes made and not counted: the first reload imports its client, and so on


class Receiver:
    """bench/receiver.py as a child: the app that gets reloaded, timestamping what it receives."""

    def __init__(self, pid_file: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.receiver", str(pid_file)], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout
        self.port = int(self.proc.stdout.readline().split()[1])
        self.queues: dict[str, queue.Queue[float]] = {"HUP": queue.Queue(), "HTTP": queue.Queue()}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            kind, when = line.split()
            self.queues[kind].put(float(when))

    def wait(self, kind: str, after: float, timeout: float) -> float | None:
        """The first `kind` event at or after `after`, waiting up to `timeout`."""
        end = time.monotonic() + timeout
        while (remaining := end - time.monotonic()) > 0:
            try:
                when = self.queues[kind].get(timeout=remaining)
            except queue.Empty:
                return None
            if when >= after:
                return when
        return None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _paced(writes: int, spacing: float) -> Any:
    start = time.monotonic()
    for i in range(writes):
        delay = start + i * spacing - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i


def floor(backend: Backend, writes: int, spacing: float) -> dict[str, Any] | None:
    name = "bench/floor/k"
    backend.put(name, "floor-init")
    watch = backend.floor(name)
    if watch is None:
        return None
    delays, misses = [], 0
    try:
        for i in _paced(writes + WARMUP, spacing):
            value = f"floor-{i}"
            acked = backend.put(name, value)
            seen = watch.wait_for(value, 1.0)
            if i < WARMUP:
                continue
            if seen is None:
                misses += 1
            else:
                delays.append(seen - acked)
    finally:
        watch.close()
    return {"method": backend.floor_method, **summary(delays, misses)}


POLL_INTERVAL = 1.0  # for a source that polls (Vault): its interval in this figure
POLL_WRITES = 50  # …and at most this many writes: each takes 1.3 intervals, and the spread is the interval's


def measure(backend: Backend, workdir: Path, writes: int, spacing: float) -> dict[str, Any]:
    spacing = max(spacing, backend.spacing)
    if backend.notifies:
        return _measure(backend, workdir, writes, spacing, 1.0)
    default, backend.interval = backend.interval, POLL_INTERVAL
    try:
        return _measure(backend, workdir, min(writes, POLL_WRITES), max(spacing, POLL_INTERVAL * 1.3),
                        POLL_INTERVAL * 3)
    finally:
        backend.interval = default


def _measure(backend: Backend, workdir: Path, writes: int, spacing: float, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = {"writes": writes, "spacing_ms": round(spacing * 1000), "warmup": WARMUP,
                              "floor": floor(backend, writes, spacing)}
    receiver = Receiver(workdir / "app.pid")
    project = Project(workdir / "latency", backend, templates=1, keys=1, reloaders={
        "sig": f"{{pid_file: {workdir / 'app.pid'}, signal: SIGHUP}}",
        "http": f'{{url: "http://127.0.0.1:{receiver.port}/reload", method: POST}}',
    })
    project.seed()
    daemon = Confsync(project)
    watcher = None
    delays: dict[str, list[float]] = {"file": [], "signal": [], "http": []}
    misses = dict.fromkeys(delays, 0)
    try:
        daemon.wait_written()
        project.out.mkdir(exist_ok=True)
        watcher = DirWatcher(project.out, {project.destination(0).name})
        for i in _paced(writes + WARMUP, spacing):
            value = f"v{i + 1}"
            acked = backend.put(key(0, 0), value)
            project.values[key(0, 0)] = value
            seen = watcher.wait_for(project.destination(0).name, project.text(0), timeout)
            signalled = receiver.wait("HUP", acked, 1.0 if seen else 0.05)
            posted = receiver.wait("HTTP", acked, 1.0 if seen else 0.05)
            if i < WARMUP:
                continue
            for kind, when in (("file", seen), ("signal", signalled), ("http", posted)):
                if when is None:
                    misses[kind] += 1
                else:
                    delays[kind].append(when - acked)
    finally:
        if watcher:
            watcher.close()
        daemon.stop()
        receiver.stop()
    for kind in delays:
        result[kind] = summary(delays[kind], misses[kind])
    return result
