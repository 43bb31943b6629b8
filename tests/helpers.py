"""Run the real CLI as a subprocess, and the small real peers tests need (an app that counts
signals, an HTTP server that counts reloads). Waiting is always on an event, never a fixed sleep."""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 20.0


def build_ctrender(directory: Path) -> Path:
    """Build tests/gotemplate/ (Go's text/template with consul-template's functions) into
    `directory`: standard library only, so no module download; the build cache stays in there too."""
    import shutil

    go = shutil.which("go")
    assert go, "Go is needed (Debian's golang-go, installed by scripts/test-deps.sh)"
    binary = directory / "ctrender"
    env = {**os.environ, "GOCACHE": str(directory / "gocache"), "GOPATH": str(directory / "gopath"),
           "GO111MODULE": "off", "GOFLAGS": ""}
    sources = sorted(str(p) for p in (ROOT / "tests" / "gotemplate").glob("*.go"))
    subprocess.run([go, "build", "-o", str(binary), *sources],
                   check=True, env=env, timeout=300)
    return binary


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFSYNC_")}
    env["PYTHONPATH"] = str(ROOT)  # the checkout under test, wherever the venv's install points
    env.update(extra)
    return env


def confsync(*args: str, cwd: Path | None = None, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "confsync", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


class Daemon:
    """`confsync run` (or `mode`) as a real process with JSON logs read line by line on a thread;
    `prefix` runs it under another command (`unshare …`)."""

    def __init__(self, *args: str, cwd: Path | None = None, mode: str = "run", prefix: tuple[str, ...] = (),
                 argv: list[str] | None = None, max_fds: int | None = None, **env: str) -> None:
        """`argv`: the whole command line instead (its logs must be JSON: CONFSYNC_LOG_FORMAT=json)."""
        def limit_fds() -> None:
            if max_fds is not None:  # RLIMIT_NOFILE, as a container runtime may set it
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))

        self.proc = subprocess.Popen(
            argv or [*prefix, sys.executable, "-m", "confsync", mode, "--log-format", "json", "--log-level", "debug",
                     *args],
            cwd=cwd, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=limit_fds,
        )
        self.lines: list[str] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.lines.append(line)
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"event": "raw", "message": line})
        self.events.put({"event": "eof"})

    def wait_event(self, event: str, timeout: float = DEADLINE, **fields: Any) -> dict[str, Any]:
        """The next log entry with this event (and fields); earlier others are skipped."""
        end = time.monotonic() + timeout
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event} {fields} within {timeout}s; log:\n{self.log()}")
            try:
                entry = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if entry.get("event") == "eof" and event != "eof":
                raise AssertionError(f"confsync exited ({self.proc.poll()}) before {event}; log:\n{self.log()}")
            if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                return entry

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_SIGNAL_APP = textwrap.dedent("""
    import os, signal, sys, time
    signal.signal(signal.SIGHUP, lambda *_: print("HUP", time.time(), flush=True))
    with open(sys.argv[1], "w") as fh:
        fh.write(str(os.getpid()))
    print("ready", flush=True)
    while True:
        signal.pause()
""")


class SignalApp:
    """A real child process that reports every SIGHUP it receives on its stdout."""

    def __init__(self, pid_file: Path, executable: str = sys.executable) -> None:
        self.proc = subprocess.Popen([executable, "-c", _SIGNAL_APP, str(pid_file)],
                                     stdout=subprocess.PIPE, text=True)
        self.signals: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.signals.get(timeout=DEADLINE) == "ready"

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.signals.put(line.split()[0])

    def wait_signal(self, timeout: float = DEADLINE) -> str:
        return self.signals.get(timeout=timeout)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class ReloadServer:
    """A local HTTP server standing in for an app's reload endpoint; `status` is what it answers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: queue.Queue[tuple[str, str]] = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                outer.requests.put((self.command, self.path))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = do_PUT = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/-/reload"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """For state that no event announces (a file's content seen by another process)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def documented_security_context() -> dict[str, Any]:
    """docs/kubernetes.md's recommended security context (the yaml block under its "Security
    context" heading), pod-level and container-level fields merged: what the image test runs with
    and what every example pod must have."""
    import re

    import yaml

    section = (ROOT / "docs" / "kubernetes.md").read_text().split("## Security context", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "docs/kubernetes.md: no yaml block under 'Security context'"
    doc = yaml.safe_load(block.group(1))
    return {**doc["securityContext"], **doc["containers"][0]["securityContext"]}


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    """The daemon's /readyz on 127.0.0.1:port: its status and its JSON body, 503 or not."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metrics_text(port: int) -> str:
    """The daemon's /metrics on 127.0.0.1:port."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())
