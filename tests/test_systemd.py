"""examples/systemd/confsync.service, exercised the way the suite can (no systemd here): its
ExecStart= started as systemd would, ExecReload= run against $MAINPID, KillSignal= for the stop."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys

from tests.helpers import DEADLINE, ROOT, Daemon, wait_until

UNIT = ROOT / "examples/systemd/confsync.service"


def service() -> dict[str, str]:
    section, values = "", {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            values[key] = value
    return values


def exec_start(tmp_path, config) -> list[str]:
    """ExecStart= with the install paths moved into tmp_path, and confsync run from this checkout."""
    argv = shlex.split(service()["ExecStart"])
    assert argv[0] == "/usr/local/bin/confsync"
    paths = {"/etc/confsync/confsync.yaml": str(config),
             "/run/confsync/confsync.pid": str(tmp_path / "run/confsync/confsync.pid")}
    return [sys.executable, "-m", "confsync", *(paths.get(a, a) for a in argv[1:])]


def test_the_unit_starts_reloads_and_stops_confsync(tmp_path):
    unit = service()
    assert unit["Type"] in ("exec", "simple", "notify")
    (tmp_path / "run" / unit["RuntimeDirectory"]).mkdir(parents=True)  # systemd creates it
    (tmp_path / "data").mkdir()
    (tmp_path / "data/v").write_text("1")
    (tmp_path / "a.j2").write_text("a={{ kv.key('v') }}\n")
    (tmp_path / "b.j2").write_text("b={{ kv.key('v') }}\n")
    config = tmp_path / "confsync.yaml"
    config.write_text("sources:\n  kv: {type: files, root: ./data}\n"
                      "templates:\n  - {source: a.j2, destination: out/a.conf}\n")
    env = dict(e.split("=", 1) for e in shlex.split(unit.get("Environment", "")))
    with Daemon(argv=exec_start(tmp_path, config), cwd=tmp_path, **env) as daemon:
        daemon.wait_event("written")
        pid_file = tmp_path / unit["PIDFile"].replace("/run/", "run/")
        assert pid_file.read_text().strip() == str(daemon.proc.pid)  # PIDFile= agrees with $MAINPID
        config.write_text(config.read_text() + "  - {source: b.j2, destination: out/b.conf}\n")
        reload = shlex.split(unit["ExecReload"].replace("$MAINPID", str(daemon.proc.pid)))
        subprocess.run(reload, check=True, timeout=DEADLINE)  # `systemctl reload confsync`
        daemon.wait_event("config_reloaded")
        wait_until(lambda: (tmp_path / "out/b.conf").exists(), what="the template the reload added")
        assert daemon.stop(getattr(signal, unit["KillSignal"])) == 0  # `systemctl stop confsync`
    assert not pid_file.exists()


def test_a_config_error_is_the_exit_status_that_prevents_restarts(tmp_path):
    (tmp_path / "run/confsync").mkdir(parents=True)
    config = tmp_path / "confsync.yaml"
    config.write_text("templates: [\n")
    result = subprocess.run(exec_start(tmp_path, config), capture_output=True, text=True, timeout=60)
    assert str(result.returncode) in service()["RestartPreventExitStatus"].split()
    assert "Traceback" not in result.stderr
