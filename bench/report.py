"""Results → Markdown tables (bench/results/latest.md) and the marked section of docs/performance.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ORDER = ("files", "etcd", "zookeeper", "consul", "vault")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines + [""]


def _sources(section: dict[str, Any]) -> list[str]:
    return [s for s in ORDER if s in section] + sorted(s for s in section if s not in ORDER)


def _pair(stats: dict[str, Any] | None, a: str = "p50_ms", b: str = "p95_ms") -> str:
    if not stats or not stats.get("n"):
        return "–"
    return f"{_fmt(stats[a])} / {_fmt(stats[b])}"


def latency_table(section: dict[str, Any]) -> list[str]:
    rows = []
    for source in _sources(section):
        r = section[source]
        f = r["file"]
        rows.append([source, _pair(r.get("floor")), _pair(f), _fmt(f["p99_ms"]), _fmt(f["max_ms"]),
                     _pair(r["signal"]), _pair(r["http"]),
                     f'{f["misses"]} / {r["signal"]["misses"]} / {r["http"]["misses"]}',
                     f'{r["writes"]} × {r["spacing_ms"]} ms'])
    head = ["source", "floor p50 / p95", "file p50 / p95", "file p99", "file max", "SIGHUP p50 / p95",
            "HTTP reload p50 / p95", "misses (file / sig / http)", "writes"]
    return ["### Propagation latency (ms after the write was acknowledged)", "", *_table(head, rows)]


def footprint_table(section: dict[str, Any]) -> list[str]:
    rows = []
    for source in _sources(section):
        for _size, r in sorted(section[source].items(), key=lambda kv: int(kv[0])):
            rows.append([source, f'{r["templates"]} × 10', _fmt(r["rss_mib"]), _fmt(r["cpu_pct"], 3),
                         _fmt(r["wakeups_per_s"], 1), r["threads"], r["fds"], r["backend_connections"],
                         _fmt(r["first_render_s"], 2), f'{r["window_s"]:g} s'])
    head = ["source", "templates × keys", "RSS MiB", "CPU % of a core", "wake-ups/s", "threads", "fds",
            "conns to backend", "first render s", "window"]
    return ["### Idle footprint (`confsync run`, after the first render)", "", *_table(head, rows)]


def startup_table(section: dict[str, Any]) -> list[str]:
    base = section.get("baseline", {})
    lines = ["### Cold start (wall time of the whole process, median)", ""]
    if base:
        lines += [f'Python alone: {_fmt(base["python_ms"])} ms; `import asyncio`: '
                  f'{_fmt(base["python_asyncio_ms"])} ms; `confsync --help`: {_fmt(base["cli_help_ms"])} ms.', ""]
    rows = []
    for source in _sources({k: v for k, v in section.items() if k != "baseline"}):
        r = section[source]
        one, hundred = r.get("1", {}), r.get("100", {})
        imports = one.get("imports", {})
        rows.append([source, _fmt(one.get("once_ms")), _fmt(hundred.get("once_ms")), _fmt(one.get("init_ms")),
                     _fmt(hundred.get("init_ms")), _fmt(one.get("once_cold_ms")), _fmt(hundred.get("once_cold_ms")),
                     imports.get("modules", "–"), ", ".join(imports.get("other_backend_clients", [])) or "none"])
    head = ["source", "once, 1 template ms", "once, 100 templates ms", "init, 1 ms", "init, 100 ms",
            "once, no template cache, 1 ms", "… 100 ms", "modules imported", "other backends' clients imported"]
    return lines + _table(head, rows)


def scale_table(section: dict[str, Any]) -> list[str]:
    rows = []
    for source in _sources(section):
        r = section[source]
        for size in sorted((k for k in r if k.isdigit()), key=int):
            s = r[size]
            rows.append([source, f'{s["templates"]} ({s["keys"]} keys)', _pair(s), _fmt(s["max_ms"]), s["misses"],
                         _fmt(s["renders_per_change"], 2), _fmt(s["rss_mib"]), _fmt(s["first_render_s"], 2)])
        rows.append([source, "ratio of p50s", _fmt(r.get("ratio_p50"), 2), "", "", "", "", ""])
    head = ["source", "templates", "change → file p50 / p95 ms", "max ms", "misses", "renders per change",
            "RSS MiB", "first render s"]
    return ["### Scale: one key of 10,000 changes", "", *_table(head, rows)]


def load_table(section: dict[str, Any]) -> list[str]:
    rows = []
    for source in _sources(section):
        r = section[source]
        counts = sorted((k for k in r if k.isdigit()), key=int)
        cells = [source, r.get("counter", ""), _fmt(r["baseline_rps"], 3)]
        for count in counts:
            c = r[count]
            cells.append(f'{count} process(es): {_fmt(c["rps"], 3)} ({_fmt(c["rps_per_process"], 4)} each)')
        cells += ["–"] * (2 - len(counts)) + [f'{r["window_s"]:g} s']
        rows.append(cells[:5] + cells[-1:])
    head = ["source", "counter", "baseline req/s", "1 idle confsync, req/s", "many idle confsync, req/s", "window"]
    return ["### Backend load of idle confsync processes (baseline subtracted)", "", *_table(head, rows)]


# -- targets --------------------------------------------------------------------------------


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


Check = tuple[str, tuple[str, ...], float, str]  # name, path in the results, limit, unit
TARGETS: list[Check] = [
    ("etcd: change → file p50", ("latency", "etcd", "file", "p50_ms"), 4.0, "ms"),
    ("etcd: change → file p95", ("latency", "etcd", "file", "p95_ms"), 8.0, "ms"),
    ("ZooKeeper: change → file p50", ("latency", "zookeeper", "file", "p50_ms"), 8.0, "ms"),
    ("files: change → file p50", ("latency", "files", "file", "p50_ms"), 5.0, "ms"),
    *[(f"{s}: idle CPU, 100 templates", ("footprint", s, "100", "cpu_pct"), 0.05, "% of a core") for s in ORDER],
    *[(f"{s}: idle RSS, 1 template", ("footprint", s, "1", "rss_mib"), 35.0, "MiB") for s in ORDER],
    *[(f"{s}: idle RSS, 100 templates", ("footprint", s, "100", "rss_mib"), 46.0, "MiB") for s in ORDER],
    ("etcd: once, 100 templates", ("startup", "etcd", "100", "once_ms"), 150.0, "ms"),
    ("ZooKeeper: once, 100 templates", ("startup", "zookeeper", "100", "once_ms"), 400.0, "ms"),
    *[(f"{s}: one-of-1,000 change vs one-of-one (p50 ratio)", ("scale", s, "ratio_p50"), 1.5, "×") for s in ORDER],
    ("etcd: requests by an idle confsync", ("load", "etcd", "1", "rps"), 0.01, "req/s"),
]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, path, limit, unit in TARGETS:
        value = _get(results, *path)
        if value is None:
            continue
        rows.append({"target": name, "limit": limit, "unit": unit, "value": value, "met": value <= limit})
    return rows


def targets_table(results: dict[str, Any]) -> list[str]:
    rows = [[t["target"], f'≤ {t["limit"]:g} {t["unit"]}', f'{_fmt(t["value"], 3)} {t["unit"]}',
             "met" if t["met"] else f'**missed** ({t["value"] / t["limit"]:.1f}×)' if t["limit"] else "**missed**"]
            for t in targets(results)]
    return ["### Targets", "", *_table(["target", "limit", "measured", ""], rows)]


def markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    lines = [f'Measured {machine.get("date", "?")} on {machine.get("description", "?")}.', ""]
    for name, build in (("latency", latency_table), ("footprint", footprint_table), ("startup", startup_table),
                        ("scale", scale_table), ("load", load_table)):
        if results.get(name):
            lines += build(results[name])
    lines += targets_table(results)
    detector = results.get("detector")
    if detector:
        lines += [f'Detector: {detector["method"]}; its own delay (rename → seen) p50 {_fmt(detector["p50_ms"], 3)}'
                  f' ms, p99 {_fmt(detector["p99_ms"], 3)} ms.', ""]
    if results.get("skipped"):
        lines += ["Not measured: " + "; ".join(f"{k} ({v})" for k, v in sorted(results["skipped"].items())) + ".", ""]
    return "\n".join(lines)


def update_docs(path: Path, text: str) -> bool:
    """Replace what lies between the bench markers in `path`; False if the markers are missing."""
    if not path.exists():
        return False
    doc = path.read_text()
    if START not in doc or END not in doc:
        return False
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n\n{text.rstrip()}\n\n{END}{tail}")
    return True
