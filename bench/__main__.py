"""`python -m bench`: start the real backends, run confsync as real processes, write the figures.

    python -m bench                       # everything, full length (about 20 minutes)
    python -m bench --quick               # few iterations, short windows (about 2 minutes)
    python -m bench --only files,etcd     # these sources only
    python -m bench --figures latency,startup

Results go to bench/results/latest.json (merged: a partial run updates only what it measured) and
latest.md; the section between the bench markers in docs/performance.md is rewritten from them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.servers and tests.consul_emulator start the backends

from bench import footprint, inotify, latency, load, project, report, scale, startup  # noqa: E402
from bench.backends import BACKENDS, Unavailable, running  # noqa: E402
from bench.stats import summary  # noqa: E402

FIGURES = ("latency", "footprint", "startup", "scale", "load")
DEFAULT_OUT = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "performance.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations and short windows")
    parser.add_argument("--only", default=",".join(BACKENDS), help="sources, comma-separated")
    parser.add_argument("--figures", default=",".join(FIGURES), help="figures, comma-separated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--writes", type=int, help="latency: writes per source (default 200, quick 20)")
    parser.add_argument("--window", type=float, help="footprint and load: seconds (default 60, quick 3)")
    parser.add_argument("--runs", type=int, help="startup: runs per figure (default 10, quick 3)")
    parser.add_argument("--scale-templates", type=int, default=1000, help="scale: templates (10 keys each)")
    parser.add_argument("--load-processes", type=int, default=50, help="load: the larger process count")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter confsync runs under (its environment's packages are what it imports)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    args.figures = [f for f in args.figures.split(",") if f]
    for name in args.only:
        if name not in BACKENDS:
            parser.error(f"unknown source {name!r} (known: {', '.join(BACKENDS)})")
    for name in args.figures:
        if name not in FIGURES:
            parser.error(f"unknown figure {name!r} (known: {', '.join(FIGURES)})")
    quick = args.quick
    args.writes = args.writes or (20 if quick else 200)
    args.window = args.window or (3.0 if quick else 60.0)
    args.runs = args.runs or (3 if quick else 10)
    args.changes = 10 if quick else 50
    args.settle = 0.5 if quick else 3.0
    return args


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def _installed(python: str, names: tuple[str, ...]) -> list[str]:
    code = ("import importlib.util, sys; "
            "print(' '.join(n for n in sys.argv[1:] if importlib.util.find_spec(n)))")
    out = subprocess.run([python, "-c", code, *names], capture_output=True, text=True)
    return out.stdout.split()


def machine(workdir: Path) -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(workdir)], capture_output=True, text=True).stdout.strip()
    info = {
        "nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(), "kernel": platform.release(), "workdir_fs": fs,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "etcd": _version(["etcd", "--version"]) if shutil.which("etcd") else None,
        "confsync_python": project.PYTHON,
        # Installed, these get imported by others (httpx imports click and rich for its CLI).
        "optional_heavy_packages": _installed(project.PYTHON, ("typer", "click", "rich", "pydantic", "pygments")),
        # Other work on the machine skews every figure: the load average says how much there was.
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    heavy = info["optional_heavy_packages"]
    env_note = f"also holds {', '.join(heavy)}" if heavy else "holds only its runtime dependencies"
    info["description"] = (f'{info["nproc"]} × {cpu}, {info["ram_gib"]} GiB RAM, Linux {info["kernel"]}, '
                           f'Python {info["python"]}, work files on {fs}; confsync\'s environment {env_note}; '
                           f'load average at start {" ".join(info["loadavg_start"])}')
    return info


def _load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (FileNotFoundError, ValueError):
        return {}


def _record(results: dict[str, Any], figure: str, source: str, value: Any) -> None:
    if value is not None:
        results.setdefault(figure, {})[source] = value


def run_source(name: str, args: argparse.Namespace, results: dict[str, Any], workdir: Path) -> None:
    try:
        context = running(name)
        backend = context.__enter__()
    except Unavailable as exc:
        results.setdefault("skipped", {})[name] = str(exc)
        print(f"[bench] {name}: skipped ({exc})", flush=True)
        return
    results.get("skipped", {}).pop(name, None)
    try:
        for figure in args.figures:
            started = time.monotonic()
            print(f"[bench] {name}: {figure}…", flush=True)
            work = workdir / name / figure
            work.mkdir(parents=True, exist_ok=True)
            if figure == "latency":
                _record(results, "latency", name, latency.measure(backend, work, args.writes, 0.1))
            elif figure == "footprint":
                _record(results, "footprint", name, footprint.measure(backend, work, args.window, args.settle))
            elif figure == "startup":
                _record(results, "startup", name, startup.measure(backend, work, args.runs))
            elif figure == "scale" and name in ("files", "etcd"):
                _record(results, "scale", name, scale.measure(backend, work, args.changes, 0.1,
                                                              big=100 if args.quick else args.scale_templates))
            elif figure == "load":
                counts = (1, 5) if args.quick else (1, args.load_processes)
                _record(results, "load", name, load.measure(backend, work, args.window, args.settle, counts))
            print(f"[bench] {name}: {figure} done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        context.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    project.PYTHON = args.python
    project.compile_confsync()
    args.out.mkdir(parents=True, exist_ok=True)
    latest = args.out / "latest.json"
    results = _load(latest)
    failed = False
    with tempfile.TemporaryDirectory(prefix="confsync-bench-") as tmp:
        workdir = Path(tmp)
        results["machine"] = machine(workdir)
        results["quick"] = args.quick
        delays = inotify.resolution(50 if args.quick else 500)
        results["detector"] = {"method": "inotify (IN_MOVED_TO) on the destination directory, read by a "
                                         "thread blocked in poll(2) in the harness", **summary(delays)}
        if "startup" in args.figures:
            results.setdefault("startup", {})["baseline"] = startup.baseline(args.runs)
        for name in args.only:
            try:
                run_source(name, args, results, workdir)
            except Exception:
                failed = True
                traceback.print_exc()
                results.setdefault("errors", {})[name] = traceback.format_exc(limit=3)
            else:
                results.get("errors", {}).pop(name, None)
    results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["targets"] = report.targets(results)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    text = json.dumps(results, indent=1, sort_keys=True)
    (args.out / f"run-{stamp}.json").write_text(text)
    latest.write_text(text)
    table = report.markdown(results)
    (args.out / "latest.md").write_text(table)
    if args.out == DEFAULT_OUT and not args.no_docs and report.update_docs(DOCS, table):
        print(f"[bench] updated {DOCS.relative_to(ROOT)}", flush=True)
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
