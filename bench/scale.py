"""Figure 4: 1,000 templates over 10,000 keys. One key changes: how long until its destination is
written, against the same change when there is a single template; and how many templates were
re-rendered for it (from /metrics: only the affected one should be)."""

from __future__ import annotations

import http.client
import random
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.backends import Backend
from bench.inotify import DirWatcher
from bench.project import Confsync, Project, key
from bench.stats import summary
from tests.servers import free_port


def _renders(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in body.splitlines()
               if line.startswith("confsync_renders_total{"))


def _one(backend: Backend, workdir: Path, templates: int, changes: int, spacing: float) -> dict[str, Any]:
    project = Project(workdir / f"scale-{templates}", backend, templates=templates)
    seed_start = time.monotonic()
    project.seed()
    seeded = time.monotonic() - seed_start
    port = free_port()
    daemon = Confsync(project, "--listen", f"127.0.0.1:{port}")
    rng = random.Random(templates)
    watcher = None
    try:
        first = daemon.wait_written(timeout=600)
        sample = procs.sample(daemon.pid)
        renders_before = _renders(port)
        watcher = DirWatcher(project.out, None)
        delays, misses = [], 0
        start = time.monotonic()
        for n in range(changes):
            delay = start + n * spacing - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            j, i = rng.randrange(templates), rng.randrange(project.keys)
            value = f"c{n}"
            acked = backend.put(key(j, i), value)
            project.values[key(j, i)] = value
            seen = watcher.wait_for(project.destination(j).name, project.text(j), 2.0)
            if seen is None:
                misses += 1
            else:
                delays.append(seen - acked)
        renders = _renders(port) - renders_before
        after = procs.sample(daemon.pid)
    finally:
        if watcher:
            watcher.close()
        daemon.stop()
    return {"templates": templates, "keys": templates * project.keys, "seed_s": round(seeded, 2),
            "first_render_s": round(first, 2), "rss_mib_idle": round(sample.rss_kib / 1024, 1),
            "rss_mib": round(after.rss_kib / 1024, 1), "renders_per_change": round(renders / changes, 2),
            **summary(delays, misses)}


def measure(backend: Backend, workdir: Path, changes: int, spacing: float, big: int = 1000) -> dict[str, Any]:
    small = _one(backend, workdir, 1, changes, spacing)
    large = _one(backend, workdir, big, changes, spacing)
    return {"1": small, str(big): large,
            "ratio_p50": round(large["p50_ms"] / small["p50_ms"], 2) if small["p50_ms"] else None}
