"""Figure 3: cold start — `confsync once` and `confsync init`, 1 and 100 templates × 10 keys.

Each run is a fresh process from fork to exit, with the destinations deleted first (so every run
renders and writes everything); the median of `runs` is reported. Runs start with the compiled
templates in confsync's cache (a first run fills it), and again with the cache off. The interpreter's own start-up
and the import of the CLI are measured the same way, so the table shows what is Python's floor.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench import project as projects
from bench.backends import Backend
from bench.project import Project, env, run_once
from bench.stats import median

SIZES = (1, 100)
# Client libraries a backend's process should not import unless that backend is configured.
BACKEND_MODULES = {"zookeeper": "kazoo", "consul": "consul", "vault": "hvac", "etcd": "etcd3"}


def _timed(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(argv, env=env(), capture_output=True, check=True)
        times.append(time.monotonic() - start)
    return round(median(times) * 1000, 1)


def baseline(runs: int) -> dict[str, float]:
    """Python's floor on this machine: the interpreter alone, and the CLI's --help (imports only)."""
    return {
        "python_ms": _timed([projects.PYTHON, "-c", "pass"], runs),
        "python_asyncio_ms": _timed([projects.PYTHON, "-c", "import asyncio"], runs),
        "cli_help_ms": _timed([projects.PYTHON, "-m", "confsync", "--help"], runs),
    }


def imports(project: Project) -> dict[str, Any]:
    """What `confsync once` imports (python -X importtime): module count and the costliest ones."""
    project.clear()
    result = subprocess.run([projects.PYTHON, "-X", "importtime", "-m", "confsync", "once", "-c", str(project.config)],
                            cwd=project.directory, env=env(), capture_output=True, text=True, check=True)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line.replace("import time:", "").split("|")
        rows.append((name.strip(), int(self_us), int(cumulative_us)))
    top = {name: round(cum / 1000, 1) for name, _, cum in rows if "." not in name}
    loaded = {name.split(".")[0] for name, _, _ in rows}
    return {
        "modules": len(rows),
        "import_ms": round(sum(s for _, s, _ in rows) / 1000, 1),
        "top_level_ms": dict(sorted(top.items(), key=lambda kv: -kv[1])[:12]),
        "other_backend_clients": sorted(m for b, m in BACKEND_MODULES.items()
                                        if m in loaded and b != project.backend.name),
    }


def measure(backend: Backend, workdir: Path, runs: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for size in SIZES:
        project = Project(workdir / f"startup-{size}", backend, templates=size)
        project.seed()
        row: dict[str, Any] = {"templates": size, "keys": size * 10}
        run_once(project)  # compiles the templates into the cache: the runs below start warm
        for label, command, extra in (("once", "once", {}), ("init", "init", {}),
                                      ("once_cold", "once", {"CONFSYNC_TEMPLATE_CACHE": "off"})):
            times = []
            for _ in range(runs):
                project.clear()
                times.append(run_once(project, command, **extra))
            if not project.all_written():
                raise RuntimeError(f"confsync {command} did not write every destination")
            row[f"{label}_ms"] = round(median(times) * 1000, 1)
            row[f"{label}_min_ms"] = round(min(times) * 1000, 1)
        if size == 1:
            row["imports"] = imports(project)
        result[str(size)] = row
    return result
