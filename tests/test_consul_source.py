"""The `consul` source, against the in-process Consul emulator (tests/consul_emulator/).

End to end through the real CLI for what a user sees (files, reloads, exit codes, logs), and
in-process against the source itself for the client's behaviour (requests made, threads, timings).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from confsync.config import load
from confsync.errors import ConfigError
from confsync.sources import ABSENT, Dep, Missing
from confsync.sources.consul import ConsulOptions, ConsulSource, parse_address
from tests.consul_emulator import ConsulEmulator, consul_emulator
from tests.helpers import Daemon, confsync, wait_until

pytestmark = pytest.mark.consul

TOKEN = "s3cret-acl-token-value"
NO_ENV = {"CONSUL_HTTP_TOKEN": "", "CONSUL_HTTP_ADDR": "", "CONSUL_HTTP_TOKEN_FILE": ""}


@pytest.fixture
def emu() -> Iterator[ConsulEmulator]:
    with consul_emulator() as emulator:
        yield emulator


def put(emu: ConsulEmulator, key: str, value: str, token: str | None = None) -> None:
    """A KV write; lone surrogates in `value` stand for raw bytes (not UTF-8)."""
    headers = {"X-Consul-Token": token} if token else {}
    body = value.encode("utf-8", "surrogateescape")
    # A long timeout: `emu.delay` holds writes too.
    assert httpx.put(f"{emu.addr}/v1/kv/{key}", content=body, headers=headers, timeout=30).json() is True


def register(emu: ConsulEmulator, node: str, address: str, sid: str, port: int, tags: list[str],
             status: str = "passing", service_address: str = "") -> None:
    body = {"Node": node, "Address": address,
            "Service": {"ID": sid, "Service": "web", "Tags": tags, "Port": port, "Address": service_address,
                        "Meta": {"zone": "a"}},
            "Check": {"CheckID": f"check-{sid}", "Name": "http", "Status": status, "ServiceID": sid}}
    assert httpx.put(f"{emu.addr}/v1/catalog/register", json=body).status_code == 200


def config(emu: ConsulEmulator, templates: dict[str, str], source: str = "", reloaders: str = "",
           extra: str = "") -> str:
    lines = [f"sources:\n  consul:\n    type: consul\n    address: {emu.addr}\n    wait: 1s\n{source}",
             "templates:"]
    for name in templates:
        lines.append(f"  - {{source: {name}, destination: out/{name.removesuffix('.j2')}{extra}}}")
    return "\n".join(lines) + "\n" + reloaders


# -- end to end ----------------------------------------------------------------------------------


def test_kv_change_is_written_and_reloads_the_app(project, tmp_path, emu, signal_app):
    put(emu, "app/db/host", "db1")
    put(emu, "app/db/port", "5432")
    put(emu, "app/feature/x", "on")
    template = ("host={{ consul.key('app/db/host') }}\nport={{ consul.key('/app/db/port/') }}\n"
                "user={{ consul.key('app/db/user', default='app') }}\n"
                "{% for k, v in consul.tree('app/feature') | dictsort %}{{ k }}={{ v }}\n{% endfor %}"
                "dirs={{ consul.ls('app') | join(',') }}\n")
    cfg = project(config(emu, {"app.conf.j2": template}, extra=", reload: app",
                         reloaders="reloaders:\n  app: {pid_file: app.pid}\n"), {"app.conf.j2": template})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        daemon.wait_event("reloaded", reloader="app")
        assert signal_app.wait_signal() == "HUP"
        assert out.read_text() == "host=db1\nport=5432\nuser=app\nx=on\ndirs=db,feature\n"
        put(emu, "app/db/host", "db2")
        assert daemon.wait_event("written")["changed"] == ["consul.key('app/db/host')"]
        daemon.wait_event("reloaded", reloader="app")
        assert signal_app.wait_signal() == "HUP"
        assert out.read_text().startswith("host=db2\n")
        put(emu, "app/feature/y", "off")
        daemon.wait_event("written")
        assert "x=on\ny=off\n" in out.read_text()
    assert daemon.proc.returncode == 0


def test_services_health_and_tag_filters(project, tmp_path, emu):
    template = ("{% for s in consul.service('web') %}up {{ s.node }} {{ s.address }}:{{ s.port }}"
                " {{ s.meta.zone }}\n{% endfor %}"
                "{% for s in consul.service('web', tag='canary', passing=False) %}canary {{ s.id }}\n{% endfor %}"
                "services={{ consul.services() | dictsort | map('first') | join(',') }}\n")
    cfg = project(config(emu, {"up.conf.j2": template}), {"up.conf.j2": template})
    out = tmp_path / "out/up.conf"
    register(emu, "n1", "10.0.0.1", "web1", 80, ["stable"])
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        daemon.wait_event("written")
        assert out.read_text() == "up n1 10.0.0.1:80 a\nservices=consul,web\n"
        # Each change reaches several polls (the two service() calls, services()), which may
        # answer in separate renders: wait for the file to settle on the expected text.
        def settles_on(text: str) -> None:
            wait_until(lambda: out.read_text() == text, what=f"{out} to read {text!r}; log:\n{daemon.log()}")

        # A second instance, with its own service address (preferred over the node's).
        register(emu, "n2", "10.0.0.2", "web2", 81, ["canary"], service_address="10.9.9.9")
        settles_on("up n1 10.0.0.1:80 a\nup n2 10.9.9.9:81 a\ncanary web2\nservices=consul,web\n")
        # Its check fails: gone from the passing list, still there when passing=False.
        register(emu, "n2", "10.0.0.2", "web2", 81, ["canary"], status="critical", service_address="10.9.9.9")
        settles_on("up n1 10.0.0.1:80 a\ncanary web2\nservices=consul,web\n")
        # Deregistration.
        httpx.put(f"{emu.addr}/v1/catalog/deregister", json={"Node": "n1"})
        settles_on("canary web2\nservices=consul,web\n")


def test_one_blocking_query_for_all_kv_deps_and_one_per_service(project, tmp_path, emu):
    put(emu, "shared/v", "1")
    register(emu, "n1", "10.0.0.1", "web1", 80, [])
    templates = {f"t{i}.j2": "{{ consul.key('shared/v') }}-{{ consul.tree('shared') | length }}-"
                             "{{ consul.ls('shared') | join(',') }}-{{ consul.service('web') | length }}"
                 for i in range(8)}
    cfg = project(config(emu, templates), templates)
    emu.reset_counters()
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        for _ in templates:
            daemon.wait_event("written")
        assert emu.wait_for_blocked(2)
        # key, tree and ls on shared/: one recursive poll of "shared/"; service('web'): its own.
        assert emu.blocked_queries == 2
        kv_paths = {p for p in emu.request_count if p.startswith("/v1/kv/")}
        assert kv_paths == {"/v1/kv/shared/"}, emu.request_count
        kv_requests = emu.request_count["/v1/kv/shared/"]
        assert kv_requests <= 3  # first read, a blocking query, maybe a timeout
        assert emu.request_count["/v1/health/service/web"] <= 3
        put(emu, "shared/v", "2")
        for _ in templates:
            daemon.wait_event("written")
        assert all((tmp_path / f"out/t{i}").read_text() == "2-1-v-1" for i in range(8))
        assert emu.request_count["/v1/kv/shared/"] - kv_requests <= 3  # the reply, a new poll, a timeout


def test_100_templates_of_10_keys_share_one_poll(project, tmp_path, emu):
    templates = {}
    with httpx.Client(base_url=emu.addr) as http:  # one connection for the 1000 writes
        for i in range(100):
            for j in range(10):
                assert http.put(f"/v1/kv/apps/t{i}/k{j}", content=f"{i}.{j}").json() is True
    for i in range(100):
        templates[f"t{i}.j2"] = "".join(f"{{{{ consul.key('apps/t{i}/k{j}') }}}}," for j in range(10))
    cfg = project(config(emu, templates), templates)
    expected = {i: "".join(f"{i}.{j}," for j in range(10)) for i in range(100)}

    # once: a single read answers all 1000 keys, even when every request takes 50 ms.
    emu.delay = 0.05
    emu.reset_counters()
    result = confsync("once", "-c", str(cfg), **NO_ENV)
    assert result.returncode == 0, result.stderr
    assert all((tmp_path / f"out/t{i}").read_text() == expected[i] for i in range(100))
    assert emu.request_count["/v1/kv/apps/"] <= 2, emu.request_count  # 1000 keys, 1 read (+ maybe a poll)
    emu.delay = 0
    for i in range(100):
        (tmp_path / f"out/t{i}").unlink()

    # The daemon: one parked poll for all 1000 keys; a change renders only its template.
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        for _ in templates:
            daemon.wait_event("written")
        assert emu.wait_for_blocked(1)
        emu.reset_counters()
        put(emu, "apps/t42/k7", "new")
        assert daemon.wait_event("written")["template"].endswith("out/t42")
        assert (tmp_path / "out/t42").read_text() == expected[42].replace("42.7", "new")
        # Idle (`wait: 1s`): only the one poll comes back, once a second or so.
        wait_until(lambda: emu.blocked_queries == 1, what="the poll to be parked again")
        emu.reset_counters()
        time.sleep(2)
        idle = dict(emu.request_count)
        wait_until(lambda: emu.blocked_queries == 1, what="the one poll parked again")  # never more than one
    assert set(idle) <= {"/v1/kv/apps/"} and sum(idle.values()) <= 4, idle
    written = [line for line in daemon.lines if '"event": "written"' in line]
    assert len(written) == 101, daemon.log()  # 100 at start, then t42 alone


def test_unchanged_data_renders_nothing_and_idle_costs_only_long_polls(project, tmp_path, emu):
    put(emu, "a", "A")
    put(emu, "b", "B")
    templates = {"a.j2": "{{ consul.key('a') }}", "b.j2": "{{ consul.key('b') }}"}
    cfg = project(config(emu, templates), templates)
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        daemon.wait_event("written")
        daemon.wait_event("written")
        # a and b have no folder in common: a poll each, not one of the whole store.
        assert emu.wait_for_blocked(2)
        # Same value again: a's index moves, its data does not. An unrelated key wakes no poll.
        before = emu.request_count["/v1/kv/a"]
        put(emu, "a", "A")
        put(emu, "unrelated", "x")
        wait_until(lambda: emu.request_count["/v1/kv/a"] >= before + 2 and emu.blocked_queries == 2,
                   what="the poll to be parked again")
        # Idle: over 3 s with `wait: 1s`, each poll comes back ~3 times with the same index.
        emu.reset_counters()
        time.sleep(3)
        idle = dict(emu.request_count)
        put(emu, "b", "B2")  # a sentinel: the next write must be b's
        assert daemon.wait_event("written")["template"].endswith("out/b")
    assert sum(idle.values()) <= 10 and set(idle) <= {"/v1/kv/a", "/v1/kv/b"}, idle
    written = [json.loads(line)["template"] for line in daemon.lines if '"event": "written"' in line]
    assert sorted(Path(t).name for t in written) == ["a", "b", "b"], daemon.log()


def test_consul_restart_keeps_the_file_then_renders_new_changes(project, tmp_path, emu):
    put(emu, "v", "1")
    templates = {"v.j2": "v={{ consul.key('v') }}"}
    cfg = project(config(emu, templates), templates)
    out = tmp_path / "out/v"
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        daemon.wait_event("written")
        emu.wait_for_blocked(1)
        emu.stop()
        down = daemon.wait_event("source_down", source="consul")
        assert "cannot reach Consul" in down["message"]
        assert out.read_text() == "v=1"
        emu.start()
        put(emu, "v", "2")
        daemon.wait_event("source_up", source="consul")
        daemon.wait_event("written")
        assert out.read_text() == "v=2"


def test_index_going_backwards_restarts_and_missing_key_keeps_the_file(project, tmp_path, emu):
    put(emu, "x/y", "1")
    templates = {"v.j2": "v={{ consul.key('x/y') }}"}
    cfg = project(config(emu, templates), templates)
    out = tmp_path / "out/v"
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        daemon.wait_event("written")
        for i in range(2, 6):
            put(emu, "other", str(i))  # move the index well past 1
        emu.reset()  # Consul lost its data: the index goes backwards, the key is gone
        daemon.wait_event("consul_index_reset")
        daemon.wait_event("waiting")
        assert out.read_text() == "v=1"  # no garbage: the template waits for its key
        put(emu, "x/y", "fresh")
        daemon.wait_event("written")
        assert out.read_text() == "v=fresh"


def test_failing_consul_is_backed_off_then_recovers(project, tmp_path, emu):
    put(emu, "v", "1")
    templates = {"v.j2": "{{ consul.key('v') }}"}
    cfg = project(config(emu, templates), templates)
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        daemon.wait_event("written")
        emu.fail_with = 500
        daemon.wait_event("source_down", source="consul")
        emu.reset_counters()
        time.sleep(4)  # a window to count requests in
        during = emu.requests_total
        emu.fail_with = None
        daemon.wait_event("source_up", source="consul", timeout=40)
        put(emu, "v", "2")
        daemon.wait_event("written")
    # Without back-off the 100 ms rate limit alone would allow ~40; exponential back-off: a handful.
    assert 1 <= during <= 8, during
    assert (tmp_path / "out/v").read_text() == "2"
    down = [json.loads(line) for line in daemon.lines if '"source_down"' in line]
    assert len(down) == 1 and "Consul answered 500" in down[0]["message"]


def test_a_consul_slower_than_the_timeout_is_down_until_it_answers_again(project, tmp_path, emu):
    put(emu, "v", "1")
    templates = {"v.j2": "{{ consul.key('v') }}"}
    cfg = project(config(emu, templates, source="    timeout: 300ms\n"), templates)
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        daemon.wait_event("written")
        emu.delay = 5.0  # past wait (1s) + wait/16 + timeout (300ms)
        put(emu, "v", "2")  # the write itself is not delayed; answers to confsync are
        down = daemon.wait_event("source_down", source="consul")
        assert "tim" in down["message"].lower()
        assert (tmp_path / "out/v").read_text() == "1"  # the last good file stays
        emu.delay = 0
        daemon.wait_event("source_up", source="consul", timeout=40)
        daemon.wait_event("written")
        assert (tmp_path / "out/v").read_text() == "2"  # nothing lost once the fault clears


def test_init_names_the_missing_key_and_exits_3(project, tmp_path, emu):
    put(emu, "present", "yes")
    templates = {"v.j2": "{{ consul.key('present') }} {{ consul.key('absent/key') }}"}
    cfg = project(config(emu, templates), templates)
    result = confsync("init", "-c", str(cfg), "--timeout", "1s", **NO_ENV)
    assert result.returncode == 3, result.stderr
    assert "consul.key('absent/key') does not exist" in result.stderr
    assert not (tmp_path / "out/v").exists()


def test_acl_token_from_file_env_and_rotation(project, tmp_path):
    with consul_emulator(token=TOKEN) as emu:
        put(emu, "secret/v", "1", token=TOKEN)
        templates = {"v.j2": "{{ consul.key('secret/v') }}"}
        token_file = tmp_path / "token"
        cfg = project(config(emu, templates, source="    token_file: token\n"), templates)
        out = tmp_path / "out/v"

        # No token: Consul hides the key from the anonymous token (a recursive read is filtered,
        # not refused); with a default-deny policy that is missing data, named, not "absent".
        no_token = project(config(emu, templates), templates, name="plain.yaml")
        result = confsync("init", "-c", str(no_token), "--timeout", "1s", **NO_ENV)
        assert result.returncode == 3
        assert "consul.key('secret/v') hidden by ACLs" in result.stderr
        assert "no ACL token is configured" in result.stderr

        # The token from CONSUL_HTTP_TOKEN.
        result = confsync("once", "-c", str(no_token), **{**NO_ENV, "CONSUL_HTTP_TOKEN": TOKEN})
        assert result.returncode == 0, result.stderr
        assert out.read_text() == "1"

        # A wrong token in the file: Consul does not know it, the source is down; a rotated
        # (rewritten) file is picked up without a restart.
        token_file.write_text("wrong-token\n")
        with Daemon("-c", str(cfg), **NO_ENV) as daemon:
            down = daemon.wait_event("source_down", source="consul")
            assert "ACL not found" in down["message"]
            put(emu, "secret/v", "2", token=TOKEN)
            token_file.write_text(TOKEN + "\n")
            daemon.wait_event("source_up", source="consul", timeout=40)
            daemon.wait_event("written")
            assert out.read_text() == "2"
        assert TOKEN not in daemon.log() and TOKEN not in result.stderr


def test_once_with_100_templates_reads_once(project, tmp_path, emu):
    templates = {}
    for i in range(100):
        put(emu, f"many/k{i}", str(i))
        templates[f"t{i}.j2"] = f"{{{{ consul.key('many/k{i}') }}}}"
    cfg = project(config(emu, templates).replace("wait: 1s", "wait: 1m"), templates)
    emu.delay = 0.05  # every read takes 50 ms: one after another, 100 reads would take 5 s
    emu.reset_counters()
    result = confsync("once", "-c", str(cfg), **NO_ENV)
    assert result.returncode == 0, result.stderr
    assert all((tmp_path / f"out/t{i}").read_text() == str(i) for i in range(100))
    assert emu.requests_to("/v1/kv/many/") <= 2  # one read for all, perhaps one blocking query


def test_stop_does_not_wait_for_parked_long_polls(project, tmp_path, emu):
    put(emu, "v", "1")
    templates = {f"t{i}.j2": f"{{{{ consul.key('v') }}}}{{{{ consul.key('k{i}', default='') }}}}" for i in range(5)}
    cfg = project(config(emu, templates).replace("wait: 1s", "wait: 5m"), templates)
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        for _ in templates:
            daemon.wait_event("written")
        assert emu.wait_for_blocked(1)
        started = time.monotonic()
        assert daemon.stop() == 0
        took = time.monotonic() - started
    assert took < 60, took  # not the 5 minutes of the parked poll (a loaded machine is slow)


def test_config_errors_name_the_field(project, emu):
    templates = {"v.j2": "x"}
    bad_wait = project(config(emu, templates).replace("wait: 1s", "wait: 11m"), templates)
    result = confsync("check", "-c", str(bad_wait))
    assert result.returncode == 2 and "sources.consul" in result.stderr and "10m" in result.stderr
    bad = project(config(emu, templates, source="    consistency: fast\n"), templates, name="c2.yaml")
    result = confsync("check", "-c", str(bad))
    assert result.returncode == 2 and "sources.consul.consistency" in result.stderr
    with pytest.raises(ConfigError, match="address"):
        load(project("sources:\n  c: {type: consul, address: 'unix:///run/consul.sock'}\n", name="c3.yaml"))


# -- the source in process -------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.values: dict[Dep, Any] = {}
        self.updates: list[tuple[Dep, Any]] = []
        self.status: list[tuple[bool, str]] = []
        self.changed = asyncio.Event()

    def update(self, dep: Dep, value: Any) -> None:
        self.values[dep] = value
        self.updates.append((dep, value))
        self.changed.set()

    def source_status(self, source: str, up: bool, reason: str = "") -> None:
        self.status.append((up, reason))

    async def wait_for(self, predicate: Any, timeout: float = 10) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)


def dep(kind: str, path: str, **params: Any) -> Dep:
    return Dep("consul", kind, path, tuple(sorted(params.items())))


async def test_values_are_plain_and_unwatch_stops_pushing(emu):
    put(emu, "t/a", "1")
    put(emu, "t/d/b", "2")
    put(emu, "t/d/", "")  # a folder marker: not a value
    put(emu, "t/empty", "")
    put(emu, "t/bin", "\udcff")
    sink = Sink()
    source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=30), sink)
    await source.start()
    deps = [dep("key", "t/a"), dep("key", "t/empty"), dep("key", "nope"), dep("key", "t/bin"), dep("ls", "t"),
            dep("tree", "t/d"), dep("tree", "nothing"), dep("ls", "nothing"), dep("key", "")]
    for d in deps:
        source.watch(d)
    await sink.wait_for(lambda: len(sink.values) == len(deps))
    assert sink.values[dep("key", "t/a")] == "1"
    assert sink.values[dep("key", "t/empty")] == ""
    assert sink.values[dep("key", "nope")] is ABSENT
    assert isinstance(sink.values[dep("key", "t/bin")], Missing)
    assert sink.values[dep("ls", "t")] == ["a", "bin", "d", "empty"]
    assert sink.values[dep("tree", "t/d")] == {"b": "2"}
    assert sink.values[dep("tree", "nothing")] == {} and sink.values[dep("ls", "nothing")] == []
    assert sink.values[dep("key", "")] == Missing("key() needs a name")
    # Keys "nope", "nothing/…" and "t/…" have no folder in common: a poll per top-level folder.
    assert await asyncio.to_thread(emu.wait_for_blocked, 3)
    assert emu.blocked_queries == 3 and len(source._busy) == 3
    assert {p for p in emu.request_count if p.startswith("/v1/kv/") and emu.request_count[p]} <= {
        "/v1/kv/t/", "/v1/kv/nope", "/v1/kv/nothing/",
        "/v1/kv/t/a", "/v1/kv/t/d/b", "/v1/kv/t/d/", "/v1/kv/t/empty", "/v1/kv/t/bin"}  # + our PUTs
    # unwatch: no more pushes for it; the others still follow changes.
    source.unwatch(dep("key", "t/a"))
    pushed = len(sink.updates)
    polls = emu.request_count["/v1/kv/t/"]
    put(emu, "t/a", "changed")
    put(emu, "t/new", "x")
    await sink.wait_for(lambda: sink.values[dep("ls", "t")] == ["a", "bin", "d", "empty", "new"])
    assert sink.updates[pushed:] == [(dep("ls", "t"), ["a", "bin", "d", "empty", "new"])]  # only what changed
    assert emu.request_count["/v1/kv/t/"] > polls
    started = time.monotonic()
    await source.close()
    assert time.monotonic() - started < 15  # not the 30 s wait of the parked poll
    assert sink.values[dep("key", "t/a")] == "1"
    await poll(lambda: not [t for t in threading.enumerate() if t.name.startswith("consul-consul")])


async def test_a_watch_outside_the_prefix_widens_it_and_misses_nothing(emu):
    put(emu, "app/one/a", "1")
    put(emu, "app/two/b", "2")
    put(emu, "other/c", "3")
    sink = Sink()
    source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=30), sink)
    await source.start()
    try:
        source.watch(dep("key", "app/one/a"))
        source.watch(dep("tree", "app/one"))
        await sink.wait_for(lambda: len(sink.values) == 2)
        assert await asyncio.to_thread(emu.wait_for_blocked, 1)
        assert emu.request_count["/v1/kv/app/one/"] >= 1 and not emu.request_count["/v1/kv/app/"]
        # A write while the prefix widens to "app/": the new poll starts with a plain read.
        put(emu, "app/one/a", "1b")
        source.watch(dep("ls", "app/two"))
        await sink.wait_for(lambda: sink.values.get(dep("ls", "app/two")) == ["b"]
                            and sink.values[dep("key", "app/one/a")] == "1b")
        # The old poll's socket was shut: one request in flight (the emulator's side of the old
        # one stays parked until its wait ends, unaware of it).
        await poll(lambda: emu.request_count["/v1/kv/app/"] >= 2 and len(source._busy) == 1)
        # Another top-level folder gets a poll of its own; the values already pushed are not pushed again.
        pushed = len(sink.updates)
        source.watch(dep("key", "other/c"))
        await sink.wait_for(lambda: dep("key", "other/c") in sink.values)
        assert sink.updates[pushed:] == [(dep("key", "other/c"), "3")]
        await poll(lambda: emu.request_count["/v1/kv/other/"] >= 2 and len(source._busy) == 2)
        assert not emu.request_count["/v1/kv/"]
        # A dep under the prefix is answered at once, from the last reply: no request.
        requests = emu.requests_total
        source.watch(dep("key", "app/two/missing"))
        source.watch(dep("tree", "app/two"))
        assert sink.values[dep("key", "app/two/missing")] is ABSENT
        assert sink.values[dep("tree", "app/two")] == {"b": "2"}
        assert emu.requests_total == requests
        # A change: only the one value it changes is pushed.
        pushed = len(sink.updates)
        put(emu, "app/two/b", "2b")
        await sink.wait_for(lambda: sink.values[dep("tree", "app/two")] == {"b": "2b"})
        assert sink.updates[pushed:] == [(dep("tree", "app/two"), {"b": "2b"})]
    finally:
        await source.close()


async def poll(predicate: Any, timeout: float = 10) -> None:
    """For conditions no event announces (the emulator's counters, threads ending)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


class _SpinningConsul(ThreadingHTTPServer):
    """A broken Consul: answers every read at once with the same index (0), never blocking."""

    def __init__(self) -> None:
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                self.requests += 1
                body = json.dumps([{"Key": "k", "Value": "dg==", "ModifyIndex": 0}]).encode()
                handler.send_response(200)
                handler.send_header("X-Consul-Index", "0")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


async def test_a_server_that_never_blocks_cannot_make_us_spin():
    server = _SpinningConsul()
    sink = Sink()
    source = ConsulSource("consul", ConsulOptions(address=f"127.0.0.1:{server.server_address[1]}", wait=60), sink)
    await source.start()
    source.watch(dep("key", "k"))
    await asyncio.sleep(3)
    await source.close()
    server.shutdown()
    server.server_close()
    assert sink.values == {dep("key", "k"): "v"}
    # 100 ms between requests at least, doubling while nothing changes: ~7 in 3 s, not thousands.
    assert 3 <= server.requests <= 10, server.requests


def test_addresses_and_environment(monkeypatch):
    assert parse_address("10.0.0.1:8500") == ("http", "10.0.0.1", 8500)
    assert parse_address("https://consul.example") == ("https", "consul.example", 8501)
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    assert parse_address("consul:8501") == ("https", "consul", 8501)
    with pytest.raises(ValueError):
        parse_address("http://host:port")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "http://10.1.2.3:9500")
    assert ConsulSource("c", ConsulOptions(), Sink()).addr == "http://10.1.2.3:9500"
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "unix:///x")
    with pytest.raises(ConfigError, match="CONSUL_HTTP_ADDR"):
        ConsulSource("c", ConsulOptions(), Sink())


async def test_tls_options_reach_the_client(tmp_path, monkeypatch):
    monkeypatch.delenv("CONSUL_CACERT", raising=False)
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    options = load_options(tmp_path, "address: https://127.0.0.1:1\n    tls: {ca_file: ca.pem, cert_file: c.pem, "
                                     "key_file: k.pem}\n    datacenter: dc1\n    consistency: stale\n")
    source = ConsulSource("consul", options, Sink())
    await source.start()
    http = source._client.http
    assert (http.base_uri, http.verify, http.cert) == ("https://127.0.0.1:1", str(ca), (str(cert), str(key)))
    from confsync.sources.consul.client import _request
    assert _request(source._client, options, dep("kv", "k"), True, None, "")[1][:2] == [("dc", "dc1"), ("stale", "")]
    assert ("stale", "") not in _request(source._client, options, dep("kv", "k"), False, None, "")[1]  # past max_stale
    await source.close()
    monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", "false")
    source = ConsulSource("consul", load_options(tmp_path, "address: https://127.0.0.1:1\n"), Sink())
    await source.start()
    assert source._client.http.verify is False
    await source.close()


def load_options(tmp_path: Path, body: str) -> ConsulOptions:
    path = tmp_path / "opts.yaml"
    (tmp_path / "t.j2").write_text("x")
    path.write_text(f"sources:\n  consul:\n    type: consul\n    {body}\n"
                    "templates:\n  - {source: t.j2, destination: out/t}\n")
    return load(path).sources["consul"].options


def test_the_kv_prefix_is_the_common_folder():
    from confsync.sources.consul.kv import need, poll_prefix

    def prefix(*deps: Dep) -> str:
        return poll_prefix(need(d) for d in deps)

    assert prefix(dep("key", "apps/web/port")) == "apps/web/"
    assert prefix(dep("key", "apps/web/port"), dep("tree", "apps/db")) == "apps/"
    assert prefix(dep("key", "apps/web/port"), dep("key", "apps/webx/port")) == "apps/"  # a folder, not "apps/web"
    assert prefix(dep("tree", "apps"), dep("ls", "apps")) == "apps/"
    assert prefix(dep("key", "apps"), dep("tree", "apps")) == "apps"  # the key "apps" and the folder under it
    assert prefix(dep("key", "a")) == "a" and prefix(dep("tree", "")) == ""


async def test_kv_hidden_from_the_anonymous_token_is_missing_data_and_a_grant_recovers(monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    monkeypatch.delenv("CONSUL_HTTP_TOKEN_FILE", raising=False)
    with consul_emulator(token=TOKEN) as emu:
        put(emu, "app/a", "1", token=TOKEN)
        put(emu, "app/d/b", "2", token=TOKEN)
        sink = Sink()
        source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=30), sink)
        await source.start()
        try:
            deps = [dep("key", "app/a"), dep("tree", "app/d"), dep("ls", "app")]
            for d in deps:
                source.watch(d)
            await sink.wait_for(lambda: len(sink.values) == 3)
            # Consul answered 404 (filtered, and no header for the anonymous token): not "absent",
            # not {} nor [] — missing, naming the ACL cause; and not "down".
            assert all(isinstance(sink.values[d], Missing) and "hidden by ACLs" in sink.values[d].reason
                       for d in deps), sink.values
            assert sink.status == []
            monkeypatch.setenv("CONSUL_HTTP_TOKEN", TOKEN)  # a grant: picked up at the next retry (1–2 s)
            await sink.wait_for(lambda: sink.values[dep("ls", "app")] == ["a", "d"])
            assert sink.values[dep("key", "app/a")] == "1" and sink.values[dep("tree", "app/d")] == {"b": "2"}
        finally:
            await source.close()


def test_a_token_that_reads_too_little_never_makes_an_empty_config(project, tmp_path):
    """Issue 17: a token that may read only app/public/ and no service. Consul filters the reads
    instead of refusing them; init must exit 3 naming the ACL cause, not write zero upstreams."""
    from tests.consul_emulator.acl import Policy

    limited = "limited-token-value"
    with consul_emulator(token=TOKEN) as emu:
        emu.tokens[limited] = Policy(key={"app/public/": "read"})
        put(emu, "app/public/name", "shop", token=TOKEN)
        put(emu, "app/upstreams/u1", "10.0.0.1:80", token=TOKEN)
        with httpx.Client(base_url=emu.addr, headers={"X-Consul-Token": TOKEN}) as http:
            assert http.put("/v1/catalog/register", json={
                "Node": "n1", "Address": "10.0.0.9", "Service": {"ID": "web1", "Service": "web", "Port": 80},
                "Check": {"CheckID": "c", "Name": "c", "Status": "passing", "ServiceID": "web1"}}).status_code == 200
        template = ("{{ consul.key('app/public/name') }}\n"
                    "{% for k, v in consul.tree('app/upstreams').items() %}upstream {{ v }}\n{% endfor %}"
                    "{% for s in consul.service('web') %}server {{ s.address }}:{{ s.port }}\n{% endfor %}")
        templates = {"v.j2": template}
        token_file = tmp_path / "token"
        token_file.write_text(limited)
        cfg = project(config(emu, templates, source="    token_file: token\n"), templates)
        result = confsync("init", "-c", str(cfg), "--timeout", "2s", **NO_ENV)
        assert result.returncode == 3, result.stderr
        assert "consul.tree('app/upstreams') hidden by ACLs" in result.stderr
        assert "consul.service('web'" in result.stderr and "node:read" in result.stderr
        assert not (tmp_path / "out/v").exists()
        assert limited not in result.stderr

        # run: with a full token first, then the limited one; the file keeps its content, the log says why.
        token_file.write_text(TOKEN)
        with Daemon("-c", str(cfg), **NO_ENV) as daemon:
            daemon.wait_event("written")
            good = (tmp_path / "out/v").read_text()
            assert "upstream 10.0.0.1:80" in good and "server 10.0.0.9:80" in good
            token_file.write_text(limited)
            hidden = daemon.wait_event("consul_acl_hidden", timeout=60)
            assert "hidden by ACLs" in hidden["message"]
            assert (tmp_path / "out/v").read_text() == good
        assert TOKEN not in daemon.log() and limited not in daemon.log()
