"""End to end through the real CLI against real etcd (3.4, the gateway's /v3 paths) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confsync.sources import ABSENT, Dep, Missing
from confsync.sources import etcd as etcd_source
from tests.helpers import Daemon, confsync, wait_until
from tests.servers import EtcdServer, etcd_cluster, etcd_server, free_ports

pytestmark = pytest.mark.etcd

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


def put_many(url: str, items: dict[str, str]) -> None:
    """Write many keys in few transactions (etcd allows 128 operations in one by default)."""
    pairs = list(items.items())
    for i in range(0, len(pairs), 128):
        call(url, "/v3/kv/txn", {"success": [{"request_put": {"key": _b64(k), "value": _b64(v)}}
                                             for k, v in pairs[i:i + 128]]})


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
    # Long enough for etcd's first answer on a loaded machine: then the key is known absent.
    result = confsync("init", "-c", str(cfg), "--timeout", "3s")
    assert result.returncode == 3, result.stderr
    assert "etcd.key('db/host') does not exist" in result.stderr
    assert not (tmp_path / "out/app.conf").exists()

    put(etcd.url, f"{prefix}/db/host", "db1")
    result = confsync("init", "-c", str(cfg), "--timeout", "5s")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "host=db1\nport=5432\n"


def test_tree_ls_and_prefix(etcd, prefix, project, tmp_path):
    put_many(etcd.url, {
        **{f"{prefix}/{k}": v for k, v in {"a/x": "1", "a/y/z": "2", "a/y/w": "3", "b": "4", "a//odd": "5"}.items()},
        f"{prefix}x/a/x": "not ours",  # shares the bytes of the prefix, not its "/"
        f"{prefix[1:]}/bare": "no leading slash",
    })
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
    put_many(etcd.url, {f"{prefix}/svc{i}/k{j}": f"{i}.{j}" for i in range(100) for j in range(10)})
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


# -- in-process: the pieces, and the paths the CLI cannot reach cheaply ----------------------------------


def dep(kind: str, path: str) -> Dep:
    return Dep("etcd", kind, path)


def test_key_mapping_and_ranges():
    base = etcd_source.prefix_bytes
    assert [base(p) for p in ("/app", "/app/", "/", "", "app")] == [b"/app/", b"/app/", b"/", b"", b"app/"]
    rng = etcd_source.key_range
    assert rng(b"/app/", dep("key", "db/host")) == etcd_source.KeyRange(b"/app/db/host", exact=True)
    assert rng(b"/app/", dep("tree", "db")) == etcd_source.KeyRange(b"/app/db/", exact=False)
    assert rng(b"/app/", dep("ls", "")) == etcd_source.KeyRange(b"/app/", exact=False)
    assert rng(b"/app/", dep("key", "")) is None and rng(b"", dep("secret", "x")) is None
    assert etcd_source.prefix_end(b"/a") == b"/b"
    assert etcd_source.prefix_end(b"a\xff\xff") == b"b" and etcd_source.prefix_end(b"\xff") == b"\0"
    assert etcd_source.KeyRange(b"", exact=False).body() == {"key": "AA==", "range_end": "AA=="}  # everything

    KR = etcd_source.KeyRange
    keys = [KR(b"/app/db/host", True), KR(b"/app/db/port", True)]
    assert etcd_source.span(keys, cut=False) == KR(b"/app/db/", False)
    assert etcd_source.span(keys[:1], cut=False) == keys[0]  # one key: read just it
    assert etcd_source.span(keys[:1], cut=True) == KR(b"/app/db/", False)  # watch its folder
    assert etcd_source.span([KR(b"/app/db/host", True), KR(b"/app/dbx/", False)], cut=True) == KR(b"/app/", False)
    assert etcd_source.covers(KR(b"/app/", False), KR(b"/app/db/host", True))
    assert not etcd_source.covers(KR(b"/app/db/", False), KR(b"/app/cache/", False))


def test_values_from_the_mirror():
    mirror = {b"/a/x": b"1", b"/a/y/z": b"2", b"/a//odd": b"3", b"/ab": b"no", b"/a/bad": b"\xff"}
    tree, ls = dep("tree", "a"), dep("ls", "a")
    rng = etcd_source.KeyRange(b"/a/", exact=False)
    assert isinstance(etcd_source.value_of(tree, rng, mirror), Missing)  # one value is not text
    del mirror[b"/a/bad"]
    assert etcd_source.value_of(tree, rng, mirror) == {"/odd": "3", "x": "1", "y/z": "2"}
    assert etcd_source.value_of(ls, rng, mirror) == ["x", "y"]
    key = etcd_source.KeyRange(b"/a/x", exact=True)
    assert etcd_source.value_of(dep("key", "a/x"), key, mirror) == "1"
    assert etcd_source.value_of(dep("key", "a/x"), key, {}) is ABSENT


class Recorder:
    """A Sink that remembers the last value of each dependency."""

    def __init__(self) -> None:
        self.values: dict[Dep, object] = {}
        self.status: list[tuple[bool, str]] = []
        self.changed = asyncio.Event()

    def update(self, dep: Dep, value: object) -> None:
        self.values[dep] = value
        self.changed.set()

    def source_status(self, source: str, up: bool, reason: str = "") -> None:
        self.status.append((up, reason))

    async def wait_for(self, expected: dict[Dep, object]) -> None:
        async with asyncio.timeout(10):
            while any(self.values.get(d) != v for d, v in expected.items()):
                self.changed.clear()
                await self.changed.wait()


async def test_too_many_keys_under_the_common_prefix_read_range_by_range(etcd, prefix, monkeypatch):
    put_many(etcd.url, {f"{prefix}/{s}/{i}": f"{s}{i}" for s in "abc" for i in range(3)})
    monkeypatch.setattr(etcd_source.source, "READ_LIMIT", 4)
    sink = Recorder()
    source = etcd_source.EtcdSource("etcd", etcd_source.EtcdOptions(endpoints=(etcd.url,), prefix=prefix), sink)
    before = metrics(etcd.url)["range"]
    await source.start()
    deps = {dep("key", "a/1"): "a1", dep("tree", "b"): {"0": "b0", "1": "b1", "2": "b2"},
            dep("ls", ""): ["a", "b", "c"], dep("key", "c/9"): ABSENT}
    for d in deps:
        source.watch(d)
    source.watch(dep("key", ""))
    await sink.wait_for({**deps, dep("key", ""): Missing("an empty key names nothing")})
    assert metrics(etcd.url)["range"] - before == 1 + 4  # the batched read said "more": one per range
    put(etcd.url, f"{prefix}/c/9", "late")
    await sink.wait_for({dep("key", "c/9"): "late"})
    await source.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running
    assert sink.status == [(True, "")]


# -- TLS: an etcd that requires client certificates ------------------------------------------------------


def _certificates(folder: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (EC, fast)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=confsync test CA")
    # etcd's gateway dials etcd's own gRPC port with the server certificate: it must allow clientAuth too.
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        (folder / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")


@contextlib.contextmanager
def tls_etcd(folder: Path) -> Iterator[str]:
    client_port, peer_port = free_ports(2)
    url, peer = f"https://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    with open(folder / "etcd.log", "wb") as log:
        proc = subprocess.Popen(
            ["etcd", "--name", "tls", "--data-dir", str(folder / "data"), "--listen-client-urls", url,
             "--advertise-client-urls", url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"tls={peer}", "--cert-file", "server.pem", "--key-file", "server.key",
             "--client-cert-auth", "--trusted-ca-file", "ca.pem"],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        context.load_cert_chain(folder / "client.pem", folder / "client.key")

        def healthy() -> bool:
            assert proc.poll() is None, (folder / "etcd.log").read_text()[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/health", verify=context, trust_env=False).json()["health"] == "true"
            return False

        wait_until(healthy, timeout=60, what="etcd with TLS")
        httpx.post(url + "/v3/kv/put", json={"key": _b64("/s/db/host"), "value": _b64("secure")},
                   verify=context, trust_env=False).raise_for_status()
        yield url
    finally:
        proc.kill()
        proc.wait()


def test_tls_with_client_certificate(project, tmp_path):
    _certificates(tmp_path)
    with tls_etcd(tmp_path) as url:
        tls = ", tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client.key}"
        cfg = project(one_template([url], "/s", extra=tls), {"app.conf.j2": TEMPLATE})
        result = confsync("once", "-c", str(cfg))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out/app.conf").read_text() == "host=secure\nport=5432\n"

        # Without the client certificate etcd refuses us: reported, not fatal.
        cfg = project(one_template([url], "/s", extra=", tls: {ca_file: ca.pem}"), {"app.conf.j2": TEMPLATE},
                      name="nocert.yaml")
        result = confsync("once", "-c", str(cfg), "--timeout", "1s")
        assert result.returncode == 3 and "source unavailable" in result.stderr, result.stderr

        cfg = project(one_template([url], "/s", extra=", tls: {ca_file: nothere.pem}"), {"app.conf.j2": TEMPLATE},
                      name="noca.yaml")
        result = confsync("once", "-c", str(cfg))
        assert result.returncode == 2 and "sources.etcd.tls:" in result.stderr, result.stderr


def test_username_without_password_is_a_config_error(project):
    cfg = project(one_template(["http://127.0.0.1:1"], "/app", extra=", username: app"), {"app.conf.j2": TEMPLATE})
    result = confsync("once", "-c", str(cfg), ETCDCTL_PASSWORD="", ETCDCTL_USER="")
    assert result.returncode == 2
    assert "sources.etcd: username is set but no password" in result.stderr
