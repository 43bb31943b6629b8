"""End to end through the real CLI against real etcd (3.4, the gateway's /v3 paths) on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Daemon, confsync, wait_until
from tests.servers import EtcdServer, etcd_cluster, etcd_server

_names = itertools.count()


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with etcd_server() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix per test: tests share one server."""
    return f"/t{next(_names)}"


# -- talking to etcd directly (what an operator's etcdctl would do) --------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def call(url: str, path: str, body: dict, token: str | None = None) -> dict:
    """One request; retried while etcd answers 5xx (a cluster electing a new leader)."""
    headers = {"Authorization": token} if token else {}

    def attempt() -> httpx.Response | None:
        reply = httpx.post(url + path, json=body, headers=headers, timeout=10, trust_env=False)
        return None if reply.status_code >= 500 else reply

    reply = wait_until(attempt, what=f"etcd to accept {path}")
    reply.raise_for_status()
    return reply.json()


def put(url: str, key: str, value: str, token: str | None = None) -> int:
    """Write a key; returns the revision of the write (acknowledged once this returns)."""
    return int(call(url, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, token)["header"]["revision"])


def delete(url: str, key: str) -> None:
    call(url, "/v3/kv/deleterange", {"key": _b64(key)})


def compact(url: str) -> int:
    revision = int(call(url, "/v3/kv/range", {"key": _b64("x"), "count_only": True})["header"]["revision"])
    call(url, "/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def metrics(url: str) -> dict[str, float]:
    """Requests the server has started (Range, Watch) and its live watch streams and watchers."""
    text = httpx.get(url + "/metrics", timeout=10, trust_env=False).text
    found = {}
    for name, pattern in {
        "range": r'^grpc_server_started_total\{grpc_method="Range".*\} (\S+)$',
        "watch": r'^grpc_server_started_total\{grpc_method="Watch",grpc_service="etcdserverpb.Watch".*\} (\S+)$',
        "streams": r"^etcd_debugging_mvcc_watch_stream_total (\S+)$",
        "watchers": r"^etcd_debugging_mvcc_watcher_total (\S+)$",
    }.items():
        found[name] = float(re.search(pattern, text, re.M).group(1))
    return found


def source(endpoints: list[str], prefix: str, extra: str = "") -> str:
    urls = ", ".join(f'"{u}"' for u in endpoints)
    return f"sources:\n  etcd: {{type: etcd, endpoints: [{urls}], prefix: {prefix}{extra}}}\n"


TEMPLATE = 'host={{ etcd.key("db/host") }}\nport={{ etcd.key("db/port", default="5432") }}\n'


def one_template(endpoints: list[str], prefix: str, reload: str = "", extra: str = "") -> str:
    return source(endpoints, prefix, extra) + f"""templates:
  - source: app.conf.j2
    destination: out/app.conf
{reload}"""


def watches(daemon: Daemon, count: int = 1) -> list[str]:
    """The messages of the first `count` watch streams opened (logged in any order with renders)."""
    def found() -> list[str]:
        return [json.loads(line)["message"] for line in list(daemon.lines) if '"etcd_watch"' in line]
    return wait_until(lambda: len(found()) >= count and found(), what=f"{count} watch(es)")


# -- a TCP proxy that can cut confsync off from a running etcd ---------------------------------------


class Proxy:
    """Forwards 127.0.0.1:port to etcd; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target: str) -> None:
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.listener.close()
        self.cut()


# -- the tests -------------------------------------------------------------------------------------------


def test_a_change_is_rendered_and_reloads_over_one_watch_stream(etcd, prefix, project, tmp_path, signal_app):
    put(etcd.url, f"{prefix}/db/host", "db1")
    cfg = project(one_template([etcd.url], prefix, reload="    reload: app\n")
                  + "reloaders:\n  app: {pid_file: app.pid}\n", {"app.conf.j2": TEMPLATE})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("reloaded", reloader="app")
        assert signal_app.wait_signal() == "HUP"
        assert out.read_text() == "host=db1\nport=5432\n"
        watches(daemon)

        # Two keys, one stream, one watcher (etcd multiplexes; we span both keys with one range).
        before = metrics(etcd.url)
        assert (before["streams"], before["watchers"]) == (1, 1)

        put(etcd.url, f"{prefix}/db/port", "6000")
        daemon.wait_event("reloaded", reloader="app")
        assert signal_app.wait_signal() == "HUP"
        assert out.read_text() == "host=db1\nport=6000\n"

        put(etcd.url, f"{prefix}/db/host", "db2")
        put(etcd.url, f"{prefix}/unrelated", "x")  # under the watched span, used by no template
        daemon.wait_event("reloaded", reloader="app")
        assert out.read_text() == "host=db2\nport=6000\n"

        # An idle confsync asks nothing: only its watch stream is open.
        after = metrics(etcd.url)
        assert after["range"] == before["range"] and after["watch"] == before["watch"], (before, after)
    assert daemon.proc.returncode == 0
    assert metrics(etcd.url)["streams"] == 0  # closed on exit


def test_server_killed_and_restarted(etcd, prefix, project, tmp_path):
    put(etcd.url, f"{prefix}/db/host", "db1")
    cfg = project(one_template([etcd.url], prefix), {"app.conf.j2": TEMPLATE})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        watches(daemon)
        etcd.kill()
        down = daemon.wait_event("source_down", source="etcd")
        assert "127.0.0.1" in down["message"]
        assert out.read_text() == "host=db1\nport=5432\n"  # the last good content stays

        etcd.start()
        put(etcd.url, f"{prefix}/db/host", "db2")  # likely before confsync is back: must not be lost
        daemon.wait_event("source_up", source="etcd")
        wait_until(lambda: out.read_text() == "host=db2\nport=5432\n", what="the change made while down")
        put(etcd.url, f"{prefix}/db/port", "7000")  # and one just after
        wait_until(lambda: out.read_text() == "host=db2\nport=7000\n", what="the change made after")
    assert daemon.proc.returncode == 0


def test_resume_from_last_revision_then_after_compaction(etcd, prefix, project, tmp_path):
    proxy = Proxy(etcd.url)
    try:
        put(etcd.url, f"{prefix}/db/host", "db1")
        put(etcd.url, f"{prefix}/db/port", "1")
        tree = "{{ etcd.tree('db') | to_json }}"
        cfg = project(source([proxy.url], prefix) + "templates:\n  - {source: t.j2, destination: out/t}\n",
                      {"t.j2": tree})
        out = tmp_path / "out/t"
        with Daemon("-c", str(cfg)) as daemon:
            daemon.wait_event("written")
            watches(daemon)

            # Cut off while changes happen: resumed from the last revision seen, none lost.
            proxy.cut()
            daemon.wait_event("source_down", source="etcd")
            put(etcd.url, f"{prefix}/db/host", "db2")
            put(etcd.url, f"{prefix}/db/user", "u")
            proxy.restore()
            daemon.wait_event("source_up", source="etcd")
            wait_until(lambda: out.read_text() == '{"host": "db2", "port": "1", "user": "u"}', what="resume")

            # Cut off while changes happen and the history is compacted: everything re-read.
            proxy.cut()
            daemon.wait_event("source_down", source="etcd")
            put(etcd.url, f"{prefix}/db/host", "db3")
            delete(etcd.url, f"{prefix}/db/user")
            put(etcd.url, f"{prefix}/db/port", "2")
            compact(etcd.url)
            proxy.restore()
            daemon.wait_event("etcd_resync", source="etcd")
            wait_until(lambda: out.read_text() == '{"host": "db3", "port": "2"}', what="the re-read")
        assert sum('"etcd_resync"' in line for line in daemon.lines) == 1, daemon.log()
    finally:
        proxy.close()


def test_cluster_member_in_use_dies(project, tmp_path):
    with etcd_cluster(3) as cluster:
        urls = cluster.urls
        put(urls[1], "/c/db/host", "db1")
        cfg = project(one_template(urls, "/c"), {"app.conf.j2": TEMPLATE})
        out = tmp_path / "out/app.conf"
        with Daemon("-c", str(cfg)) as daemon:
            daemon.wait_event("written")
            assert urls[0] in watches(daemon)[0]  # the first endpoint is the one in use

            cluster.members[0].kill()
            put(urls[1], "/c/db/host", "db2")  # while confsync may still be moving: not lost
            daemon.wait_event("written")
            assert out.read_text() == "host=db2\nport=5432\n"
            put(urls[2], "/c/db/port", "7000")
            daemon.wait_event("written")
            assert out.read_text() == "host=db2\nport=7000\n"
            assert any(u in message for u in urls[1:] for message in watches(daemon, 2)[1:])
        assert daemon.proc.returncode == 0


def test_init_names_the_missing_key_then_succeeds(etcd, prefix, project, tmp_path):
    cfg = project(one_template([etcd.url], prefix), {"app.conf.j2": TEMPLATE})
    result = confsync("init", "-c", str(cfg), "--timeout", "500ms")
    assert result.returncode == 3, result.stderr
    assert "etcd.key('db/host') does not exist" in result.stderr
    assert not (tmp_path / "out/app.conf").exists()

    put(etcd.url, f"{prefix}/db/host", "db1")
    result = confsync("init", "-c", str(cfg), "--timeout", "5s")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "host=db1\nport=5432\n"


def test_tree_ls_and_prefix(etcd, prefix, project, tmp_path):
    for key, value in {"a/x": "1", "a/y/z": "2", "a/y/w": "3", "b": "4", "a//odd": "5"}.items():
        put(etcd.url, f"{prefix}/{key}", value)
    put(etcd.url, f"{prefix}x/a/x", "not ours")  # shares the bytes of the prefix, not its "/"
    put(etcd.url, f"{prefix[1:]}/bare", "no leading slash")
    template = ("{{ etcd.tree('a') | to_json }}|{{ etcd.ls('') | to_json }}|{{ etcd.ls('a') | to_json }}|"
                "{{ etcd.tree('none') | to_json }}|{{ etcd.ls('none') | to_json }}|{{ etcd.key('/a/x/') }}")
    cfg = project(source([etcd.url], prefix) + "templates:\n  - {source: t.j2, destination: out/t}\n",
                  {"t.j2": template})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    assert (tmp_path / "out/t").read_text() == (
        '{"/odd": "5", "x": "1", "y/w": "3", "y/z": "2"}|["a", "b"]|["x", "y"]|{}|[]|1')

    # With a trailing "/" the prefix means the same; "" reads keys as written, "/" adds one "/".
    for spelled, tpl in ((f"{prefix}/", "{{ etcd.key('b') }}"),
                         ('""', f"{{{{ etcd.key('{prefix[1:]}/bare') }}}}"),
                         ("/", f"{{{{ etcd.key('{prefix[1:]}/b') }}}}")):
        cfg = project(source([etcd.url], spelled) + "templates:\n  - {source: t.j2, destination: out/t}\n",
                      {"t.j2": tpl})
        result = confsync("once", "-c", str(cfg))
        assert result.returncode == 0, (spelled, result.stderr)
        assert (tmp_path / "out/t").read_text() in ("4", "no leading slash"), spelled


def test_once_with_many_templates_reads_in_one_request(etcd, prefix, project, tmp_path):
    for i in range(100):
        for j in range(10):
            put(etcd.url, f"{prefix}/svc{i}/k{j}", f"{i}.{j}")
    templates = {f"t{i}.j2": "".join(f"{{{{ etcd.key('svc{i}/k{j}') }}}}," for j in range(10))
                 for i in range(100)}
    cfg = project(source([etcd.url], prefix) + "templates:\n" + "".join(
        f"  - {{source: t{i}.j2, destination: out/t{i}}}\n" for i in range(100)), templates)
    before = metrics(etcd.url)
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    after = metrics(etcd.url)
    assert after["range"] - before["range"] == 1  # 1000 keys of 100 templates: one range read
    assert after["watch"] - before["watch"] <= 1
    assert (tmp_path / "out/t42").read_text() == "".join(f"42.{j}," for j in range(10))


def test_a_key_used_later_outside_the_watched_span(etcd, prefix, project, tmp_path):
    put(etcd.url, f"{prefix}/w/mode", "a")
    put(etcd.url, f"{prefix}/x/value", "1")
    template = "{% if etcd.key('w/mode') == 'b' %}{{ etcd.key('x/value') }}{% else %}off{% endif %}"
    cfg = project(source([etcd.url], prefix) + "templates:\n  - {source: t.j2, destination: out/t}\n",
                  {"t.j2": template})
    out = tmp_path / "out/t"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        assert out.read_text() == "off"
        assert f"'{prefix}/w/'" in watches(daemon)[0]
        put(etcd.url, f"{prefix}/w/mode", "b")
        daemon.wait_event("written")
        assert out.read_text() == "1"
        assert f"'{prefix}/'" in watches(daemon, 2)[1]  # reopened, wider
        put(etcd.url, f"{prefix}/x/value", "2")
        daemon.wait_event("written")
        assert out.read_text() == "2"
        assert metrics(etcd.url)["streams"] == 1


def test_username_password_and_reauthentication(project, tmp_path):
    with etcd_server() as server:
        root = "root-secret-pw"
        app = "app-secret-pw"
        for path, body in (("/v3/auth/user/add", {"name": "root", "password": root}),
                           ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/v3/auth/role/add", {"name": "reader"}),
                           ("/v3/auth/role/grant", {"name": "reader", "perm": {
                               "permType": "READ", "key": _b64("/app/"), "range_end": _b64("/app0")}}),
                           ("/v3/auth/user/add", {"name": "app", "password": app}),
                           ("/v3/auth/user/grant", {"user": "app", "role": "reader"}),
                           ("/v3/auth/enable", {})):
            call(server.url, path, body)
        token = call(server.url, "/v3/auth/authenticate", {"name": "root", "password": root})["token"]
        put(server.url, "/app/db/host", "db1", token)
        (tmp_path / "pw").write_text(app + "\n")
        proxy = Proxy(server.url)
        cfg = project(one_template([proxy.url], "/app", extra=", username: app, password_file: pw"),
                      {"app.conf.j2": TEMPLATE})
        out = tmp_path / "out/app.conf"
        try:
            with Daemon("-c", str(cfg)) as daemon:
                daemon.wait_event("written")
                assert out.read_text() == "host=db1\nport=5432\n"
                watches(daemon)
                # Turning auth off and on forgets every token: confsync must authenticate again.
                proxy.cut()
                daemon.wait_event("source_down", source="etcd")
                call(server.url, "/v3/auth/disable", {}, token)
                call(server.url, "/v3/auth/enable", {})
                token = call(server.url, "/v3/auth/authenticate", {"name": "root", "password": root})["token"]
                put(server.url, "/app/db/host", "db2", token)
                proxy.restore()
                daemon.wait_event("source_up", source="etcd")
                wait_until(lambda: out.read_text() == "host=db2\nport=5432\n", what="the change after re-auth")
        finally:
            proxy.close()
        assert sum('"etcd_authenticated"' in line for line in daemon.lines) == 2, daemon.log()
        assert app not in daemon.log() and root not in daemon.log()

        # A wrong password: reported (without the password), never written.
        (tmp_path / "pw").write_text("wrong-secret-pw")
        cfg = project(one_template([server.url], "/app", extra=", username: app, password_file: pw"),
                      {"app.conf.j2": TEMPLATE})
        result = confsync("once", "-c", str(cfg), "--timeout", "1s")
        assert result.returncode == 3
        assert "authentication failed" in result.stderr and "wrong-secret-pw" not in result.stderr


def test_endpoints_default_from_etcdctl_endpoints(etcd, prefix, project, tmp_path):
    put(etcd.url, f"{prefix}/db/host", "db1")
    cfg = project(f"sources:\n  etcd: {{type: etcd, prefix: {prefix}}}\n"
                  "templates:\n  - {source: app.conf.j2, destination: out/app.conf}\n", {"app.conf.j2": TEMPLATE})
    bare = etcd.url.removeprefix("http://")
    result = confsync("once", "-c", str(cfg), ETCDCTL_ENDPOINTS=f"http://127.0.0.1:1,{bare}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "host=db1\nport=5432\n"


def test_unreachable_etcd_is_reported_not_fatal(project, tmp_path):
    cfg = project(one_template(["http://127.0.0.1:1"], "/app"), {"app.conf.j2": TEMPLATE})
    started = time.monotonic()
    result = confsync("once", "-c", str(cfg), "--timeout", "1s")
    assert result.returncode == 3
    assert "source unavailable" in result.stderr and "127.0.0.1:1" in result.stderr
    assert time.monotonic() - started < 10
