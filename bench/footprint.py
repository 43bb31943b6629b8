"""Figure 2: an idle `confsync run` — memory, CPU, wake-ups, threads, descriptors, connections.

Both sizes (1 template and 100 templates, × 10 keys each) run side by side: idle processes do not
disturb each other, and the window is long (60 s) so that a few milliseconds of CPU show.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.backends import Backend
from bench.project import Confsync, Project

SIZES = (1, 100)


def measure(backend: Backend, workdir: Path, window: float, settle: float) -> dict[str, Any]:
    daemons = {}
    try:
        for size in SIZES:
            project = Project(workdir / f"footprint-{size}", backend, templates=size)
            project.seed()
            daemons[size] = Confsync(project)
        ready = {size: daemon.wait_written() for size, daemon in daemons.items()}
        time.sleep(settle)  # let the first renders' garbage and reconnect timers settle
        before = {size: procs.sample(d.pid) for size, d in daemons.items()}
        start = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - start
        result = {}
        for size, daemon in daemons.items():
            after = procs.sample(daemon.pid)
            b = before[size]
            result[str(size)] = {
                "templates": size, "keys": size * 10, "window_s": round(elapsed, 1),
                "first_render_s": round(ready[size], 3),
                "rss_mib": round(after.rss_kib / 1024, 1),
                "cpu_pct": round((after.cpu_ns - b.cpu_ns) / 1e9 / elapsed * 100, 4),
                "cpu_pct_ticks": round((after.ticks - b.ticks) / procs.CLK_TCK / elapsed * 100, 3),
                "wakeups_per_s": round((after.switches - b.switches) / elapsed, 2),
                "threads": after.threads,
                "fds": procs.fd_count(daemon.pid),
                "backend_connections": procs.connections(daemon.pid, backend.ports()) if backend.ports() else 0,
                "tcp_connections": procs.connections(daemon.pid),
            }
        return result
    finally:
        for daemon in daemons.values():
            daemon.stop()
