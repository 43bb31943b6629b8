"""`confsync exec` (issue 13) with a real app: tests/exec_app.py records its start (environment,
process group, config file), and every signal it receives, one JSON line each. Tests wait for those
lines or for confsync's log events, never for time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from confsync.config import ExecConfig
from confsync.supervise import Supervisor
from tests.helpers import Daemon, confsync, wait_until
from tests.servers import free_port, openbao_server
from tests.test_vault import put, root_env

APP = Path(__file__).with_name("exec_app.py")
PASSWORD = "s3cret-pw-1"
TEMPLATE = 'host={{ kv.key("db/host") }}\n'


def config(exec_extra: str = "", top: str = "", env: str = "") -> str:
    return """
sources:
  kv: {type: files, root: ./data}
  sec: {type: files, root: ./secrets, secret: true}
templates:
  - {source: app.conf.j2, destination: out/app.conf, reload: exec}
exec:
  env:
    DB_HOST: "{{ kv.key('db/host') }}"
    DB_PASSWORD: "{{ sec.key('db/password') }}"
""" + env + exec_extra + top


class Record:
    """What the app wrote: one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def starts(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["event"] == "start"]

    def signals(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["event"] == "signal" and e["name"] == name]

    def wait(self, what: str, predicate: Any) -> dict[str, Any]:
        return wait_until(lambda: next((e for e in self.entries() if predicate(e)), None), what=what)

    def wait_start(self, n: int = 1) -> dict[str, Any]:
        wait_until(lambda: len(self.starts()) >= n, what=f"start #{n} of the app")
        return self.starts()[n - 1]

    def wait_signal(self, name: str, n: int = 1) -> dict[str, Any]:
        wait_until(lambda: len(self.signals(name)) >= n, what=f"{name} #{n} at the app")
        return self.signals(name)[n - 1]


@pytest.fixture
def setup(project, tmp_path):
    """→ make(config text, *app args, extra confsync args) → (Daemon, Record); every daemon is stopped."""
    daemons: list[Daemon] = []

    def make(text: str, *app_args: str, args: tuple[str, ...] = (), prefix: tuple[str, ...] = (),
             password: str | None = PASSWORD) -> tuple[Daemon, Record]:
        cfg = project(text, {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
        if password is not None:
            write_secret(tmp_path, password)
        record = Record(tmp_path / "record.jsonl")
        daemon = Daemon("-c", str(cfg), *args, "--", *app_command(tmp_path, *app_args), mode="exec",
                        prefix=prefix, cwd=tmp_path)
        daemons.append(daemon)
        return daemon, record

    yield make
    for daemon in daemons:
        daemon.stop()


def app_command(tmp_path: Path, *app_args: str) -> list[str]:
    return [sys.executable, str(APP), str(tmp_path / "record.jsonl"), str(tmp_path / "out/app.conf"), *app_args]


def write_secret(tmp_path: Path, password: str) -> None:
    (tmp_path / "secrets/db").mkdir(parents=True, exist_ok=True)
    (tmp_path / "secrets/db/password").write_text(password)


def test_files_and_env_are_ready_before_the_app_starts(setup, tmp_path):
    daemon, record = setup(config())
    start = record.wait_start()
    assert start["config"] == "host=db1\n"  # read by the app as its first act
    assert start["env"]["DB_HOST"] == "db1" and start["env"]["DB_PASSWORD"] == PASSWORD
    assert start["env"]["PATH"] == os.environ["PATH"]  # the parent's environment, plus `env`
    # Its own process group, not confsync's.
    assert start["pgid"] == start["pid"] != os.getpgid(daemon.proc.pid)
    daemon.wait_event("exec_started")
    assert daemon.stop() == 0
    assert record.signals("SIGTERM")


def test_confsyncs_own_environment_is_unchanged(setup, tmp_path):
    """A reload command runs with confsync's environment: the app's `env` must not be in it."""
    probe = tmp_path / "probe.env"
    text = config(top=f"""
reloaders:
  probe: {{command: "env > {probe}"}}
""").replace("reload: exec}", "reload: [exec, probe]}")
    daemon, record = setup(text)
    record.wait_start()
    (tmp_path / "data/db/host").write_text("db2")
    record.wait_signal("SIGHUP")
    daemon.wait_event("reloaded", reloader="probe")
    daemon.wait_event("reloaded", reloader="probe")  # the one after the app started
    seen = probe.read_text()
    assert "DB_PASSWORD" not in seen and PASSWORD not in seen and "DB_HOST" not in seen


def test_a_burst_of_file_changes_sends_one_reload_signal(setup, tmp_path):
    text = config(top="wait: {min: 1s}\n").replace(
        "reload: exec}", "reload: exec}\n  - {source: app.conf.j2, destination: out/copy.conf, reload: [exec]}")
    daemon, record = setup(text)
    record.wait_start()
    for host in ("db2", "db3", "db4"):  # one burst, seen by two templates
        (tmp_path / "data/db/host").write_text(host)
    assert record.wait_signal("SIGHUP")["config"] == "host=db4\n"
    (tmp_path / "data/db/host").write_text("db5")
    assert record.wait_signal("SIGHUP", 2)["config"] == "host=db5\n"
    daemon.stop()
    assert [e["config"] for e in record.signals("SIGHUP")] == ["host=db4\n", "host=db5\n"]
    assert len(record.starts()) == 1  # a file change never restarts with a reload_signal


def test_an_env_change_restarts_the_app_once_with_the_new_value(setup, tmp_path):
    daemon, record = setup(config())
    first = record.wait_start()
    for password in ("s3cret-pw-2", "s3cret-pw-3"):  # one burst
        write_secret(tmp_path, password)
    second = record.wait_start(2)
    assert second["env"]["DB_PASSWORD"] == "s3cret-pw-3"
    assert second["pid"] != first["pid"]
    assert [e["pid"] for e in record.signals("SIGTERM")] == [first["pid"]]  # stopped with kill_signal
    assert not Path(f"/proc/{first['pid']}").exists() or _zombie_or_other(first["pid"], daemon.proc.pid)
    daemon.wait_event("exec_restarting")
    write_secret(tmp_path, "s3cret-pw-4")
    assert record.wait_start(3)["env"]["DB_PASSWORD"] == "s3cret-pw-4"
    daemon.stop()
    assert [s["env"]["DB_PASSWORD"] for s in record.starts()] == [PASSWORD, "s3cret-pw-3", "s3cret-pw-4"]


def _zombie_or_other(pid: int, parent: int) -> bool:
    """A PID that exists again belongs to another process (not confsync's child any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return int(stat[1]) != parent


def test_reload_signal_restart_restarts_for_file_changes_too(setup, tmp_path):
    daemon, record = setup(config(exec_extra="  reload_signal: restart\n"))
    record.wait_start()
    (tmp_path / "data/db/host").write_text("db2")
    second = record.wait_start(2)
    assert second["config"] == "host=db2\n" and second["env"]["DB_HOST"] == "db2"
    assert not record.signals("SIGHUP")


def test_sigterm_stops_the_app_gracefully_and_returns_its_status(setup):
    daemon, record = setup(config(), "--term-exit", "42")
    record.wait_start()
    daemon.wait_event("exec_started")
    assert daemon.stop(signal.SIGTERM) == 42
    assert record.signals("SIGTERM")
    daemon.wait_event("exec_stopped")


def test_sigint_stops_the_app_with_kill_signal(setup):
    daemon, record = setup(config(exec_extra="  kill_signal: SIGUSR2\n  kill_timeout: 500ms\n"), "--term-exit", "3")
    record.wait_start()
    daemon.wait_event("exec_started")
    daemon.proc.send_signal(signal.SIGINT)
    record.wait_signal("SIGUSR2")  # the app ignores USR2 (records it): then SIGKILL after kill_timeout
    assert daemon.proc.wait(timeout=30) == 128 + signal.SIGKILL


@pytest.mark.parametrize(("exit_arg", "status"), [("7", 7), ("0", 0), (str(-signal.SIGKILL), 128 + 9)])
def test_the_app_exiting_ends_confsync_with_its_status(setup, exit_arg, status):
    daemon, record = setup(config(), f"--exit={exit_arg}")
    assert daemon.proc.wait(timeout=30) == status
    assert len(record.starts()) == 1  # no restart loop
    daemon.wait_event("exec_exited")


def test_an_app_ignoring_sigterm_is_killed_after_kill_timeout(setup):
    daemon, record = setup(config(exec_extra="  kill_timeout: 500ms\n"), "--ignore-term")
    record.wait_start()
    daemon.wait_event("exec_started")
    assert daemon.stop() == 128 + signal.SIGKILL
    assert record.signals("SIGTERM")
    assert '"exec_killed"' in daemon.log()


def test_signals_are_forwarded_and_sighup_rereads_the_config(setup, tmp_path):
    daemon, record = setup(config())
    first = record.wait_start()
    daemon.wait_event("exec_started")
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGQUIT):
        daemon.proc.send_signal(sig)
        record.wait_signal(sig.name)
    # One env value added, one removed, one rewritten: one restart with exactly the new environment.
    text = config().replace("    DB_PASSWORD: \"{{ sec.key('db/password') }}\"\n",
                            "    REGION: eu-{{ kv.key('db/host') }}\n")
    (tmp_path / "confsync.yaml").write_text(text.replace("DB_HOST: \"{{", "DB_HOST: \"h-{{"))
    daemon.proc.send_signal(signal.SIGHUP)
    assert "~exec" in daemon.wait_event("config_reloaded")["changed"]
    second = record.wait_start(2)
    assert second["env"]["REGION"] == "eu-db1" and second["env"]["DB_HOST"] == "h-db1"
    assert "DB_PASSWORD" not in second["env"] and second["pid"] != first["pid"]
    assert not record.signals("SIGHUP")  # confsync's SIGHUP is its own
    # A config that cannot load is refused; the app runs on untouched.
    (tmp_path / "confsync.yaml").write_text(text.replace("kv.key", "kv.kye"))
    daemon.proc.send_signal(signal.SIGHUP)
    assert "kv.kye: no such function" in daemon.wait_event("config_reload_failed")["message"]
    assert daemon.proc.poll() is None and len(record.starts()) == 2
    assert daemon.stop() == 0
    assert PASSWORD not in daemon.log()


@pytest.mark.parametrize("after_dashes", [False, True])
def test_a_sighup_with_a_new_command_restarts_the_app_unless_given_after_dashes(project, tmp_path, after_dashes):
    def exec_config(status: str) -> str:
        return config(exec_extra=f"  command: {json.dumps(app_command(tmp_path, '--term-exit', status))}\n")

    cfg = project(exec_config("5"), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    write_secret(tmp_path, PASSWORD)
    record = Record(tmp_path / "record.jsonl")
    dashes = ("--", *app_command(tmp_path, "--term-exit", "4")) if after_dashes else ()
    with Daemon("-c", str(cfg), *dashes, mode="exec", cwd=tmp_path) as daemon:
        record.wait_start()
        daemon.wait_event("exec_started")
        cfg.write_text(exec_config("6"))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_event("config_reloaded")
        if not after_dashes:
            daemon.wait_event("exec_command_changed")
            record.wait_start(2)
            daemon.wait_event("exec_started")
        assert daemon.stop() == (4 if after_dashes else 6)
        assert len(record.starts()) == (1 if after_dashes else 2)


@pytest.mark.parametrize("sig", [signal.SIGABRT, signal.SIGXCPU])
def test_other_stop_signals_stop_the_app_too(setup, sig):
    daemon, record = setup(config(), "--term-exit", "9")
    record.wait_start()
    daemon.wait_event("exec_started")
    assert daemon.stop(sig) == 9
    assert record.signals("SIGTERM")


def test_missing_data_exits_3_naming_it_and_never_starts_the_app(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    result = confsync("exec", "-c", str(cfg), "--timeout", "500ms", "--", *app_command(tmp_path))
    assert result.returncode == 3, result.stderr
    assert "sec.key('db/password')" in result.stderr and "exec.env.DB_PASSWORD" in result.stderr
    assert not (tmp_path / "record.jsonl").exists()


def test_the_command_line_wins_over_exec_command(project, tmp_path):
    command = json.dumps(app_command(tmp_path, "--exit=5"))
    cfg = project(config(exec_extra=f"  command: {command}\n"), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    write_secret(tmp_path, PASSWORD)
    assert confsync("exec", "-c", str(cfg)).returncode == 5
    assert confsync("exec", "-c", str(cfg), "--", *app_command(tmp_path, "--exit=6")).returncode == 6


def test_a_command_that_cannot_run(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    write_secret(tmp_path, PASSWORD)
    result = confsync("exec", "-c", str(cfg), "--", str(tmp_path / "no-such-app"))
    assert result.returncode == 127 and "command not found" in result.stderr and "Traceback" not in result.stderr
    result = confsync("exec", "-c", str(cfg))
    assert result.returncode == 2 and "exec.command" in result.stderr


@pytest.mark.parametrize(("section", "message"), [
    ("exec: {reload_signal: SIGNOPE}", "exec: reload_signal: unknown signal 'SIGNOPE'"),
    ("exec: {kill_signal: restart}", "exec: kill_signal: unknown signal 'restart'"),
    ("exec: {kill_timeout: soon}", "exec.kill_timeout: expected a duration"),
    ("exec: {env: {'A=B': x}}", "exec: env: 'A=B' cannot be an environment variable name"),
    ("exec: {env: {A: 1}}", "exec.env.A: expected a string"),
    ("reloaders:\n  exec: {command: 'true'}", "reloaders.exec: the name 'exec' is reserved"),
])
def test_exec_config_errors_name_the_field(project, section, message):
    cfg = project(config().split("exec:")[0] + section + "\n", {"app.conf.j2": TEMPLATE})
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_secret_env_values_reach_no_log_line_error_or_metric(setup, project, tmp_path):
    port = free_port()
    daemon, record = setup(config(), args=("--listen", f"127.0.0.1:{port}"))
    record.wait_start()
    write_secret(tmp_path, "s3cret-pw-2")
    record.wait_start(2)
    metrics = _get(port, "/metrics")[1]
    daemon.stop()
    assert "exec.env.DB_PASSWORD" in metrics  # named, never shown
    for secret in (PASSWORD, "s3cret-pw-2"):
        assert secret not in metrics
        assert secret not in daemon.log()
    assert "exec.env.DB_PASSWORD changed" in daemon.log()
    # A failed render of a secret env value: the error names it and hides the value.
    bad = config().replace("{{ sec.key('db/password') }}", "{{ {}[sec.key('db/password')] }}")
    cfg = project(bad, {"app.conf.j2": TEMPLATE}, {"db/host": "db1"}, name="bad.yaml")
    result = confsync("exec", "-c", str(cfg), "--log-level", "debug", "--", *app_command(tmp_path))
    assert result.returncode == 1 and "exec.env.DB_PASSWORD" in result.stderr
    assert "s3cret" not in result.stderr


def test_healthz_and_readyz_report_the_app(setup, tmp_path):
    port = free_port()
    daemon, record = setup(config(exec_extra="  kill_timeout: 30s\n"), "--ignore-term", password=None,
                           args=("--listen", f"127.0.0.1:{port}", "--timeout", "60s"))
    wait_until(lambda: _ready(port).get("app") == "waiting", what="app waiting for its data")
    assert _get(port, "/healthz")[0] == 200
    write_secret(tmp_path, PASSWORD)
    record.wait_start()
    wait_until(lambda: _ready(port).get("ready") is True, what="ready")
    assert _ready(port)["app"] == "running" and "app: running" in _get(port, "/healthz")[1]
    write_secret(tmp_path, "s3cret-pw-2")  # a restart, held up by an app that ignores SIGTERM
    record.wait_signal("SIGTERM")
    state = _ready(port)
    assert state["app"] == "restarting" and state["ready"] is False
    assert _get(port, "/healthz")[0] == 200
    daemon.proc.send_signal(signal.SIGKILL)  # ends the test without waiting out kill_timeout
    daemon.proc.wait()
    for entry in record.starts():  # and the app, which SIGKILL to confsync leaves behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry["pid"], signal.SIGKILL)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _ready(port: int) -> dict[str, Any]:
    status, body = _get(port, "/readyz")
    return json.loads(body) if status else {}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_as_pid_1_it_reaps_the_orphans_the_app_leaves(setup, tmp_path):
    fifo = tmp_path / "orphan.fifo"
    os.mkfifo(fifo)
    daemon, record = setup(config(), "--orphan", str(fifo),
                           prefix=("unshare", "--pid", "--fork", "--mount-proc", "--kill-child"))
    start = record.wait_start()
    assert start["pid"] != 1  # confsync is PID 1 of the namespace
    orphan = wait_until(lambda: _find(str(fifo), "open(sys.argv[1])"), what="the orphan")
    inner = wait_until(lambda: _children(daemon.proc.pid), what="confsync inside unshare")[0]
    try:
        assert _stat(orphan)[1] == inner  # reparented to confsync, PID 1 inside
        with open(fifo, "w"):
            pass  # the orphan reads EOF and exits: a zombie until its parent reaps it
        wait_until(lambda: not Path(f"/proc/{orphan}").exists(), what="the orphan reaped")
    finally:
        os.kill(inner, signal.SIGTERM)  # unshare itself ignores SIGTERM
    assert daemon.proc.wait(timeout=30) == 0


def _find(*parts: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if all(p in cmdline for p in parts):
                return int(entry.name)
    return None


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _stat(pid: int) -> list[Any]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return [fields[0], int(fields[1])]


@pytest.mark.parametrize(("broken", "said"), [
    ("{{ kv.key('db/host') ", "exec.env.DB_HOST:1: syntax error"),
    ("{{ kvv.key('db/host') }}", "exec.env.DB_HOST:1: 'kvv' is undefined"),
    ("{{ kv.kye('db/host') }}", "exec.env.DB_HOST:1: kv.kye: no such function"),
])
def test_check_reads_exec_env_values_as_it_reads_templates(project, broken, said):
    cfg = project(config().replace("{{ kv.key('db/host') }}", broken), {"app.conf.j2": TEMPLATE})
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2 and said in result.stderr, result.stderr


def test_env_from_vault_restarts_on_a_new_secret_and_never_shows_it(tmp_path):
    """The issue's own example: an `env` value from a Vault secret, against a real OpenBao."""
    with openbao_server() as bao:
        put(bao, "app/db", password="vault-pw-1")
        (tmp_path / "app.conf.j2").write_text("static\n")
        cfg = tmp_path / "confsync.yaml"
        cfg.write_text(f"""
sources:
  vault: {{type: vault, address: "{bao.addr}", static_secret_interval: 500ms}}
templates:
  - {{source: app.conf.j2, destination: out/app.conf}}
exec:
  env:
    DB_PASSWORD: "{{{{ vault.secret('secret/app/db').password }}}}"
""")
        record = Record(tmp_path / "record.jsonl")
        with Daemon("-c", str(cfg), "--", *app_command(tmp_path), mode="exec", cwd=tmp_path,
                    **root_env(bao)) as daemon:
            daemon.wait_event("exec_started", timeout=60)
            assert record.wait_start()["env"]["DB_PASSWORD"] == "vault-pw-1"
            put(bao, "app/db", password="vault-pw-2")
            assert record.wait_start(2)["env"]["DB_PASSWORD"] == "vault-pw-2"
            assert daemon.stop() == 0
        for secret in ("vault-pw-1", "vault-pw-2", bao.root_token):
            assert secret not in daemon.log()


async def test_values_changed_back_before_the_restart_cause_none(tmp_path):
    app = Supervisor(ExecConfig(), app_command(tmp_path))
    app.set_env("A", "1")
    await app.start()
    record = Record(tmp_path / "record.jsonl")
    await asyncio.to_thread(record.wait_start)
    app.set_env("A", "2")  # opens the restart window...
    app.set_env("A", "1")  # ...and this closes it again
    assert app._restart_timer is not None
    app._restart_timer.cancel()
    app._begin_restart()  # the window ends now rather than in RESTART_DELAY
    assert app.state == "running" and app._restart is None
    assert await app.stop() == 0
    assert len(record.starts()) == 1
