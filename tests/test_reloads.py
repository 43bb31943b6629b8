"""Reloads against hostile peers and careless settings (issue 10): bad values are refused when the
config loads, a reload that fails or hangs never stops or stalls the daemon, and nothing a reload
or a check prints reaches the logs of a secret-bearing template."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import Daemon, confsync, wait_until
from tests.test_observe import free_port

ONE = """
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf, reload: app}
reloaders:
  app: %s
"""


@pytest.mark.parametrize("reloader, field, says", [
    ('{url: "http://127.0.0.1:99999/"}', "reloaders.app.url", "Port out of range"),
    ('{url: "http://[::1"}', "reloaders.app.url", "Invalid IPv6 URL"),
    ('{url: "ftp://host/"}', "reloaders.app.url", "https://"),
    ('{url: "http://h/", method: "Ü"}', "reloaders.app.method", "expected an HTTP method"),
    ('{url: "http://h/", method: "GET /x"}', "reloaders.app.method", "expected an HTTP method"),
    ('{url: "http://h/", timeout: 0s}', "reloaders.app.timeout", "more than 0"),
    ('{url: "http://h/", retries: -1}', "reloaders.app.retries", "from 0"),
    ('{pid_file: app.pid, signal: SIG_DFL}', "reloaders.app.signal", "unknown signal"),
    ('{command: [sh, "a\\0b"]}', "reloaders.app", "NUL"),
])
def test_check_refuses_a_bad_reloader_value_naming_its_field(project, reloader, field, says):
    cfg = project(ONE % reloader, {"t.j2": "x"})
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{field}: " in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr


def make_fifo(path):
    os.mkfifo(path)


@pytest.mark.parametrize("plant", [
    lambda p: p.write_text("3000000000\n"),
    lambda p: p.write_text("-1"),
    lambda p: p.symlink_to("/dev/zero"),
    make_fifo,
], ids=["overflow", "negative", "dev-zero", "fifo"])
def test_a_pid_file_without_a_pid_fails_the_reload_not_the_daemon(project, tmp_path, plant):
    plant(tmp_path / "app.pid")
    cfg = project(ONE % "{pid_file: app.pid}", {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"})
    with Daemon("-c", str(cfg), cwd=tmp_path) as daemon:
        failure = daemon.wait_event("reload_failed")
        assert "app.pid" in failure["message"]
        (tmp_path / "data/v").write_text("2")
        daemon.wait_event("reload_failed")
        assert (tmp_path / "out/app.conf").read_text() == "2"
    assert daemon.proc.returncode == 0 and "Traceback" not in daemon.log()


class Dribbler:
    """An HTTP peer that answers one byte every 0.5 s, forever: each read is quick, the whole never ends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/-/reload"
        self.closed_by_client = threading.Event()
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not self.stopping.wait(0.5):
                    conn.sendall(b"x")
            except OSError:
                self.closed_by_client.set()

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()


@pytest.fixture
def dribbler() -> Iterator[Dribbler]:
    server = Dribbler()
    yield server
    server.stop()


def test_a_dribbling_http_reload_ends_at_its_timeout_as_a_total(project, tmp_path, dribbler):
    cfg = project(ONE % f'{{url: "{dribbler.url}", timeout: 2s, retries: 1}}', {"t.j2": "x"})
    with Daemon("-c", str(cfg), cwd=tmp_path) as daemon:
        failure = daemon.wait_event("reload_failed")
        assert "not done after 2s" in failure["message"]
        assert dribbler.closed_by_client.wait(20)


def test_a_slow_reload_stalls_neither_renders_nor_other_reloaders(project, tmp_path):
    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: slow.j2, destination: out/slow.conf, reload: slow}
  - {source: fast.j2, destination: out/fast.conf, reload: fast}
reloaders:
  slow: {command: "touch slow-started; while [ ! -e go ]; do sleep 0.05; done", timeout: 1h}
  fast: {command: "cat out/fast.conf >> fast-reloads"}
""", {"slow.j2": "{{ kv.key('s') }}", "fast.j2": "{{ kv.key('f') }}\n"}, {"s": "1", "f": "1"})
    with Daemon("-c", str(cfg), cwd=tmp_path) as daemon:
        fast_reloads = tmp_path / "fast-reloads"
        wait_until((tmp_path / "slow-started").exists, what="the slow reload to start")
        wait_until(lambda: fast_reloads.exists() and fast_reloads.read_text() == "1\n", what="the first fast reload")
        (tmp_path / "data/f").write_text("2")
        wait_until(lambda: fast_reloads.read_text() == "1\n2\n", what="two fast reloads")
        assert (tmp_path / "out/fast.conf").read_text() == "2\n"
        (tmp_path / "go").touch()
        daemon.wait_event("reloaded", reloader="slow")


def test_a_change_during_a_reload_gives_exactly_one_more(project, tmp_path):
    """At most one reload in flight per reloader; writes meanwhile ride on one more after it."""
    cfg = project(ONE % '{command: "cat out/app.conf >> seen; while [ ! -e go ]; do sleep 0.05; done; rm go"}',
                  {"t.j2": "{{ kv.key('v') }}\n"}, {"v": "1"})
    with Daemon("-c", str(cfg), cwd=tmp_path) as daemon:
        wait_until(lambda: (tmp_path / "seen").exists(), what="the first reload to start")
        for n in (2, 3, 4):
            (tmp_path / "data/v").write_text(str(n))
            daemon.wait_event("written")
        (tmp_path / "go").touch()
        daemon.wait_event("reloaded")
        wait_until(lambda: (tmp_path / "seen").read_text() == "1\n4\n", what="exactly one more reload")
        (tmp_path / "go").touch()
        daemon.wait_event("reloaded")
    assert (tmp_path / "seen").read_text() == "1\n4\n"


def test_once_delivers_a_reload_whatever_its_splay(project, tmp_path, reload_server):
    cfg = project(ONE % f'{{url: "{reload_server.url}", splay: 1h}}', {"t.j2": "x"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert reload_server.requests.qsize() == 1


def test_once_fails_when_a_reload_is_still_running_at_its_timeout(project, tmp_path):
    cfg = project(ONE % '{command: "echo $$ > reload.pid; exec sleep 600", timeout: 1h}', {"t.j2": "x"})
    result = confsync("once", "-c", str(cfg), "--timeout", "2s", cwd=tmp_path)
    assert result.returncode == 1
    assert "reload app not delivered" in result.stderr and "Traceback" not in result.stderr
    pid = int((tmp_path / "reload.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed with its process group, not left behind


@pytest.fixture
def background_jobs(tmp_path) -> Iterator[None]:
    """Background jobs that reload and check commands start append their PIDs to `jobs`."""
    (tmp_path / "jobs").touch()
    yield
    for pid in (tmp_path / "jobs").read_text().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def test_a_reload_that_starts_a_background_job_succeeds_and_keeps_the_file(project, tmp_path, background_jobs):
    cfg = project(ONE % '{command: "sleep 600 & echo $! >> jobs; echo started", timeout: 3s}',
                  {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"})
    cfg.write_text(cfg.read_text().replace("reload: app}", "reload: app, rollback: true}"))
    with Daemon("-c", str(cfg), cwd=tmp_path) as daemon:
        daemon.wait_event("reloaded")
        (tmp_path / "data/v").write_text("2")
        daemon.wait_event("reloaded")
        assert (tmp_path / "out/app.conf").read_text() == "2"
    assert "reload_failed" not in daemon.log()


def test_a_check_that_starts_a_background_job_passes(project, tmp_path, background_jobs):
    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf, check: "sleep 600 & echo $! >> jobs; true"}
""", {"t.j2": "x"})
    result = confsync("once", "-c", str(cfg), cwd=tmp_path, timeout=40)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "x"


# Secrets of every awkward size: too short for any redaction to find, and a multi-line PEM.
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
       "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\n")
SECRETS = {"one": "~", "three": "Q7z", "long": "Zx9" + "kL3mN8pQ2rS7tV4wY6" * 3 + "Hj7bU9k", "pem": PEM}
assert [len(SECRETS[k]) for k in ("one", "three", "long")] == [1, 3, 64]


def forms(secret: str) -> list[str]:
    """The secret as it could leak: whole, transformed, or a line or a slice of it."""
    found = [secret, secret.upper(), base64.b64encode(secret.encode()).decode()]
    if len(secret) > 8:
        found += [secret[2:20], secret[-16:]]
    if "\n" in secret:
        found += [line for line in secret.splitlines() if "PRIVATE KEY" not in line]
    return found


def test_no_error_path_shows_a_secret_or_anything_derived_from_it(project, tmp_path, reload_server):
    reload_server.status = 500
    failing = {  # each reaches a different error path, with the secrets in hand
        "upper.j2": '{{ {}[s.key("long") | upper] }}',
        "b64.j2": '{{ {}[s.key("three") | b64encode] }}',
        "slice.j2": '{{ {}[s.key("long")[2:20]] }}',
        "one.j2": '{{ {}[s.key("one")] }}',
        "pem.j2": '{{ s.key("pem").splitlines()[1] | b64decode }}',
        "json.j2": '{"k": {{ s.key("pem") }}}',
        "yaml.j2": 'k: {{ s.key("pem") }}\n  {{ s.key("three") }}: [',
        "check.j2": "{{ s.key('pem') }}{{ s.key('long') }}{{ s.key('three') }}{{ s.key('one') }}",
        "reload.j2": "{{ s.key('long') }}{{ s.key('one') }}",
    }
    cfg = project("""
sources:
  s: {type: files, root: ./data, secret: true}
  kv: {type: files, root: ./plain}
templates:
  - {source: upper.j2, destination: out/upper}
  - {source: b64.j2, destination: out/b64}
  - {source: slice.j2, destination: out/slice}
  - {source: one.j2, destination: out/one}
  - {source: pem.j2, destination: out/pem}
  - {source: json.j2, destination: out/json, format: json}
  - {source: yaml.j2, destination: out/yaml, format: yaml}
  - {source: check.j2, destination: out/check, check: "cat {staged}; exit 1"}
  - {source: reload.j2, destination: out/reload, reload: [cmd, web]}
  - {source: plain.j2, destination: out/plain, reload: [leaky]}
reloaders:
  cmd: {command: "cat out/reload; echo; cat data/pem; exit 3"}
  web: {url: "WEB_URL", retries: 1}
  leaky: {command: "cat data/long data/one; exit 4"}
""".replace("WEB_URL", reload_server.url), {**failing, "plain.j2": "{{ kv.key('v') }}"}, SECRETS)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/v").write_text("1")
    seen = []

    def run(*args: str) -> None:
        result = confsync(*args, "-c", str(cfg), "--log-level", "debug", cwd=tmp_path)
        seen.append(result.stdout + result.stderr)

    run("check")
    run("once", "--diff", "--dry-run")
    run("once", "--diff", "--log-format", "json")
    run("init")
    for written in ("reload", "plain"):  # the daemon writes them again, and reloads
        (tmp_path / "out" / written).unlink()
    port = free_port()
    with Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}", cwd=tmp_path) as daemon:
        failed: set[str] = set()
        while failed != {"cmd", "web", "leaky"}:
            failed.add(daemon.wait_event("reload_failed")["reloader"])
        seen.append(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        seen.append(httpx.get(f"http://127.0.0.1:{port}/readyz").text)
    seen.append(daemon.log())
    everything = "\n".join(seen)
    # Every path was taken, and says what failed and where.
    for expected in ("upper.j2:1: undefined", "b64.j2:1: undefined", "slice.j2:1: undefined",
                     "one.j2:1: undefined", "pem.j2:1: ",
                     "not valid json", "not valid yaml", "check failed (exit 1)", "command exited 3",
                     "answered 500", "command exited 4", "details withheld", "<redacted"):
        assert expected in everything, expected
    for name, secret in SECRETS.items():
        for form in forms(secret):
            assert form not in everything, f"{name} leaked as {form!r}"


def test_a_flood_of_idle_connections_cannot_starve_reads_and_writes(project, tmp_path):
    """1,100 idle connections once took every descriptor: the next key read failed with EMFILE."""
    port = free_port()
    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
""", {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"})
    idle: list[socket.socket] = []
    with Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}", cwd=tmp_path, max_fds=128) as daemon:
        daemon.wait_event("written")
        try:
            for _ in range(400):
                idle.append(socket.create_connection(("127.0.0.1", port)))
            (tmp_path / "data/v").write_text("2")
            daemon.wait_event("written")
            assert (tmp_path / "out/app.conf").read_text() == "2"
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, what="/healthz to answer again")
    assert [line for line in daemon.lines if "Traceback" in line] == []


def _get(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None
