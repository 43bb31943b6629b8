"""Figure 5: the load idle confsync processes put on the backend, in requests per second.

The server's own counter is read before and after a quiet window, first with no confsync at all
(what the server and this harness do by themselves), then with 1 and with 50 idle processes, each
with one template × 10 keys. The baseline is subtracted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.backends import Backend
from bench.project import Confsync, Project

COUNTS = (1, 50)


def _rate(backend: Backend, window: float) -> float:
    before = backend.requests()
    start = time.monotonic()
    time.sleep(window)
    after = backend.requests()
    assert before is not None and after is not None
    return (after - before) / (time.monotonic() - start)


def measure(backend: Backend, workdir: Path, window: float, settle: float,
            counts: tuple[int, ...] = COUNTS) -> dict[str, Any] | None:
    if backend.requests() is None:
        return None
    baseline = _rate(backend, window)
    result: dict[str, Any] = {"window_s": window, "counter": backend.counter, "baseline_rps": round(baseline, 3)}
    for count in counts:
        daemons: list[Confsync] = []
        values: dict[str, str] = {}
        try:
            for n in range(count):  # all watch the same 10 keys, each writes its own file
                project = Project(workdir / f"load-{count}-{n}", backend, templates=1)
                if n == 0:
                    project.seed()
                    values = project.values
                project.values.update(values)
                daemons.append(Confsync(project))
            for daemon in daemons:
                daemon.wait_written(timeout=300)
            time.sleep(settle)
            rate = _rate(backend, window) - baseline
            result[str(count)] = {"processes": count, "rps": round(rate, 3),
                                  "rps_per_process": round(rate / count, 4)}
        finally:
            for daemon in daemons:
                daemon.stop()
    return result
