"""/healthz, /readyz, /metrics and JSON logs, through the real daemon over HTTP."""

from __future__ import annotations

import hashlib
import json
import socket

import httpx

from tests.helpers import Daemon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CONFIG = """
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf, reload: app}
reloaders:
  app: {command: ["true"]}
"""


def test_endpoints_follow_the_daemon(project, tmp_path):
    cfg = project(CONFIG, {"t.j2": "{{ kv.key('db/host') }}"})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}") as daemon:
        daemon.wait_event("listening")
        assert httpx.get(f"{base}/healthz").status_code == 200
        waiting = httpx.get(f"{base}/readyz")
        assert waiting.status_code == 503
        assert waiting.json() == {"ready": False, "waiting": {
            str(tmp_path / "out/app.conf"): {"kv.key('db/host')": "does not exist"}},
            "stale": {}, "max_stale_for_ready": 300.0}

        (tmp_path / "data/db").mkdir()
        (tmp_path / "data/db/host").write_text("db1")
        written = daemon.wait_event("written")
        daemon.wait_event("reloaded")
        assert written["sha256"] == hashlib.sha256(b"db1").hexdigest()
        assert written["changed"] == ["kv.key('db/host')"] and written["template"].endswith("app.conf")
        assert httpx.get(f"{base}/readyz").json() == {"ready": True, "waiting": {}, "stale": {},
                                                       "max_stale_for_ready": 300.0}

        metrics = httpx.get(f"{base}/metrics").text
        dest = str(tmp_path / "out/app.conf")
        for line in (f'confsync_renders_total{{template="{dest}"}} 1.0',
                     'confsync_reloads_total{reloader="app"} 1.0',
                     'confsync_reload_failures_total{reloader="app"} 0.0',
                     'confsync_source_up{source="kv"} 1.0',
                     'confsync_watched_keys{source="kv"} 1.0',
                     f'confsync_propagation_delay_seconds_count{{template="{dest}"}} 1.0',
                     f'confsync_write_duration_seconds_count{{template="{dest}"}} 1.0'):
            assert line in metrics, line
        assert "confsync_seconds_since_last_sync" in metrics
        assert "db1" not in metrics  # labels never carry values
        assert httpx.get(f"{base}/nope").status_code == 404

    for line in daemon.lines:
        entry = json.loads(line)
        assert {"time", "level", "event", "message"} <= entry.keys()
        assert "db1" not in line


def test_listen_in_use_is_a_clear_error(project):
    cfg = project(CONFIG, {"t.j2": "x"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}")
        assert daemon.proc.wait(timeout=20) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in daemon.log()
