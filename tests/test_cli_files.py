"""End to end through the real CLI on the embedded `files` source."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys

import pytest

from tests.helpers import Daemon, SignalApp, cli_env, confsync

TEMPLATE = 'host={{ kv.key("db/host") }}\nport={{ kv.key("db/port", default="5432") }}\n'


def config(reload: str = "", reloaders: str = "", extra: str = "") -> str:
    return f"""
sources:
  kv: {{type: files, root: ./data}}
templates:
  - source: app.conf.j2
    destination: out/app.conf
{reload}{extra}
{reloaders}
"""


def test_once_renders_and_reports_success(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "host=db1\nport=5432\n"
    assert oct((tmp_path / "out/app.conf").stat().st_mode & 0o777) == oct(0o644)


def test_once_dry_run_writes_nothing_and_diff_shows_change(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    (tmp_path / "data/db/host").write_text("db2")
    result = confsync("once", "-c", str(cfg), "--dry-run", "--diff")
    assert result.returncode == 0, result.stderr
    assert "-host=db1" in result.stdout and "+host=db2" in result.stdout
    assert (tmp_path / "out/app.conf").read_text() == "host=db1\nport=5432\n"


def test_init_names_missing_key_and_exits_3(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": TEMPLATE})
    result = confsync("init", "-c", str(cfg), "--timeout", "300ms")
    assert result.returncode == 3
    assert "kv.key('db/host') does not exist" in result.stderr
    assert "app.conf.j2" in result.stderr
    assert not (tmp_path / "out/app.conf").exists()


def test_init_succeeds_once_the_key_exists(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": TEMPLATE}, {"db/host": "db1", "db/port": "6000"})
    result = confsync("init", "-c", str(cfg), "--timeout", "5s")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "host=db1\nport=6000\n"


def test_template_error_names_file_and_line_and_keeps_good_file(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": "ok\n{{ kv.key('db/host') | nosuchfilter }}\n"},
                  {"db/host": "db1"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode in (1, 2)
    assert "app.conf.j2:2" in result.stderr and "nosuchfilter" in result.stderr

    good = project(config(), {"app.conf.j2": "a={{ kv.key('db/host') }}\n{{ 1 / (kv.key('n') | int) }}\n"},
                   {"db/host": "db1", "n": "1"})
    assert confsync("once", "-c", str(good)).returncode == 0
    before = (tmp_path / "out/app.conf").read_text()
    (tmp_path / "data/n").write_text("0")
    result = confsync("once", "-c", str(good))
    assert result.returncode == 1
    assert "app.conf.j2:2" in result.stderr and "ZeroDivisionError" in result.stderr
    assert (tmp_path / "out/app.conf").read_text() == before


def test_check_validates_without_writing(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": TEMPLATE})
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "app.conf.j2").write_text("{% if %}")
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2 and "app.conf.j2:1: syntax error" in result.stderr


def test_config_error_exits_2_naming_the_field(project):
    cfg = project(config(reload="    reload: ap\n", reloaders="reloaders:\n  app: {command: [\"true\"]}\n"),
                  {"app.conf.j2": TEMPLATE})
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2
    assert "templates[0].reload: unknown reloader 'ap'" in result.stderr
    assert str(cfg) in result.stderr


def test_run_renders_changes_and_reloads_by_signal(project, tmp_path, signal_app):
    cfg = project(config(reload="    reload: app\n", reloaders="reloaders:\n  app: {pid_file: app.pid}\n"),
                  {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("reloaded", reloader="app")
        assert signal_app.wait_signal() == "HUP"
        assert out.read_text() == "host=db1\nport=5432\n"

        (tmp_path / "data/db/host").write_text("db2")
        daemon.wait_event("reloaded", reloader="app")
        assert signal_app.wait_signal() == "HUP"
        assert out.read_text() == "host=db1\nport=5432\n".replace("db1", "db2")

        # An unrelated file changes: no render, no reload.
        (tmp_path / "data/unrelated").write_text("x")
        (tmp_path / "data/db/port").write_text("7000")
        daemon.wait_event("reloaded", reloader="app")
        assert out.read_text() == "host=db2\nport=7000\n"
        assert signal_app.wait_signal() == "HUP"
        with pytest.raises(queue.Empty):
            signal_app.signals.get_nowait()
    assert daemon.proc.returncode == 0


def test_run_signals_processes_found_by_name(project, tmp_path):
    exe = tmp_path / "fakeapp-x1"  # the command name the kernel reports is the executable's
    os.symlink(os.path.realpath(sys.executable), exe)
    apps = [SignalApp(tmp_path / f"app{i}.pid", str(exe)) for i in range(2)]
    try:
        cfg = project(config(reload="    reload: app\n", reloaders="reloaders:\n  app: {process: fakeapp-x1}\n"),
                      {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
        assert confsync("once", "-c", str(cfg)).returncode == 0
        assert [app.wait_signal() for app in apps] == ["HUP", "HUP"]
        (tmp_path / "data/db/host").write_text("db2")
        cfg.write_text(cfg.read_text().replace("fakeapp-x1", "no-such-app"))
        result = confsync("once", "-c", str(cfg))
        assert result.returncode == 1 and "no process named 'no-such-app'" in result.stderr
    finally:
        for app in apps:
            app.stop()


def test_run_reloads_over_http_once_for_several_templates(project, tmp_path, reload_server):
    cfg = project(f"""
sources:
  kv: {{type: files, root: ./data}}
templates:
  - {{source: a.j2, destination: out/a, reload: web}}
  - {{source: b.j2, destination: out/b, reload: [web]}}
reloaders:
  web: {{url: "{reload_server.url}", method: POST}}
""", {"a.j2": "{{ kv.key('v') }}a", "b.j2": "{{ kv.key('v') }}b"}, {"v": "1"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("reloaded", reloader="web")
        assert reload_server.requests.get(timeout=5) == ("POST", "/-/reload")
        (tmp_path / "data/v").write_text("2")
        daemon.wait_event("reloaded", reloader="web")
        assert (tmp_path / "out/a").read_text() == "2a" and (tmp_path / "out/b").read_text() == "2b"
        assert reload_server.requests.get(timeout=5) == ("POST", "/-/reload")
        assert reload_server.requests.empty()  # two templates changed together: one reload


def test_failed_reload_is_logged_and_daemon_keeps_running(project, tmp_path, reload_server):
    reload_server.status = 500
    cfg = project(config(reload="    reload: web\n",
                         reloaders=f'reloaders:\n  web: {{url: "{reload_server.url}", retries: 2}}\n'),
                  {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    with Daemon("-c", str(cfg)) as daemon:
        failure = daemon.wait_event("reload_failed", reloader="web")
        assert "answered 500" in failure["message"]
        assert reload_server.requests.qsize() == 2  # retried, then gave up
        reload_server.status = 204
        (tmp_path / "data/db/host").write_text("db2")
        daemon.wait_event("reloaded", reloader="web")
    assert daemon.proc.returncode == 0


def test_only_what_the_last_render_used_is_watched(project, tmp_path):
    template = "{% if kv.key('mode') == 'a' %}{{ kv.key('a') }}{% else %}{{ kv.key('b') }}{% endif %}"
    cfg = project(config(), {"app.conf.j2": template}, {"mode": "a", "a": "A1", "b": "B1"})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        (tmp_path / "data/mode").write_text("b")  # b becomes a dependency, a stops being one
        assert daemon.wait_event("written")["changed"] == ["kv.key('b')", "kv.key('mode')"]
        assert out.read_text() == "B1"
        (tmp_path / "data/a").write_text("A2")
        (tmp_path / "data/b").write_text("B2")
        # The next render is b's: the change to a re-rendered nothing.
        assert daemon.wait_event("written")["changed"] == ["kv.key('b')"]
        assert out.read_text() == "B2"
    renders = [json.loads(line)["changed"] for line in daemon.lines if '"event": "rendered"' in line]
    assert renders[1:] == [["kv.key('b')", "kv.key('mode')"], ["kv.key('b')"]]  # a re-rendered nothing


def test_a_value_that_looks_like_a_template_is_not_evaluated(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": "{{ kv.key('a') }}"}, {"a": "{{ 7 * 7 }}{% raw %}x"})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    assert (tmp_path / "out/app.conf").read_text() == "{{ 7 * 7 }}{% raw %}x"


def test_wait_coalesces_a_burst_into_one_write(project, tmp_path):
    cfg = project(config(extra="    wait: {min: 300ms, max: 3s}\n"), {"app.conf.j2": "{{ kv.tree('') | to_json }}"},
                  {"k0": "0"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        for i in range(1, 6):
            (tmp_path / f"data/k{i}").write_text(str(i))
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == \
            '{"k0": "0", "k1": "1", "k2": "2", "k3": "3", "k4": "4", "k5": "5"}'
    writes = [line for line in daemon.lines if '"written"' in line]
    assert len(writes) == 2, daemon.log()


def test_env_and_filters(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": "{{ env('MY_VAR') }} {{ 'hi' | b64encode }} "
                                            "{{ ('{\"a\": [1]}' | from_json).a | to_json }} "
                                            "{{ {'b': 1} | to_yaml }}"})
    result = confsync("once", "-c", str(cfg), MY_VAR="hello")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "hello aGk= [1] b: 1\n"


def test_perms_and_backup(project, tmp_path):
    cfg = project(config(extra='    perms: "0640"\n    backup: true\n'), {"app.conf.j2": "{{ kv.key('v') }}"},
                  {"v": "1"})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out/app.conf"
    assert out.stat().st_mode & 0o777 == 0o640
    (tmp_path / "data/v").write_text("2")
    assert confsync("once", "-c", str(cfg)).returncode == 0
    assert out.read_text() == "2"
    assert (tmp_path / "out/app.conf.bak").read_text() == "1"
    assert (tmp_path / "out/app.conf.bak").stat().st_mode & 0o777 == 0o640


def test_check_command_failure_keeps_live_file(project, tmp_path):
    cfg = project(config(extra='    check: "grep -q good {staged}"\n'), {"app.conf.j2": "{{ kv.key('v') }}"},
                  {"v": "good"})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    (tmp_path / "data/v").write_text("bad")
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1
    assert "check failed (exit 1)" in result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "good"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["app.conf"]  # no staged file left


def test_sigterm_exits_zero(project, tmp_path):
    cfg = project(config(), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    daemon = Daemon("-c", str(cfg))
    daemon.wait_event("written")
    assert daemon.stop() == 0
    daemon.wait_event("stopped")


def test_env_overrides_log_format(project):
    cfg = project(config(), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    result = confsync("once", "-c", str(cfg), CONFSYNC_LOG_FORMAT="json")
    assert result.returncode == 0
    assert result.stderr.lstrip().startswith("{")



def test_once_diff_into_a_pipe_closed_early_still_writes_every_file(project, tmp_path):
    """`once --diff | head -1`: the EPIPE of the second diff crashed the render loop; once waited out
    its --timeout, then failed with 'BrokenPipeError' and the second file unwritten."""
    lines = "{% for i in range(20000) %}line {{ i }} {{ kv.key('db/host') }}\\n{% endfor %}"
    cfg = project("sources:\n  kv: {type: files, root: ./data}\ntemplates:\n"
                  + "".join(f"  - {{contents: \"{lines}\", destination: out/{n}.conf}}\n" for n in "ab"),
                  data={"db/host": "db1"})
    proc = subprocess.Popen([sys.executable, "-m", "confsync", "once", "-c", str(cfg), "--diff", "--timeout", "5s"],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout and proc.stdout.readline().startswith("--- ")
        proc.stdout.close()  # as `head -1` does
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr
    assert "BrokenPipe" not in stderr and "Traceback" not in stderr
    for name in "ab":
        assert (tmp_path / f"out/{name}.conf").read_text().count("db1\n") == 20000


def test_once_diff_to_a_full_disk_fails_at_once_naming_the_error(project, tmp_path):
    """A crash of the render loop (here: --diff to /dev/full) left once waiting out its --timeout."""
    cfg = project(config(), {"app.conf.j2": TEMPLATE}, {"db/host": "db1"})
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "confsync", "once", "-c", str(cfg), "--diff", "--timeout", "60s"],
                              env=cli_env(), stdout=full, stderr=subprocess.PIPE, text=True, timeout=20)
    assert proc.returncode == 1 and "No space left on device" in proc.stderr, proc.stderr
