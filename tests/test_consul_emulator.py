"""Tests of the emulator's own test hooks (restart, reset, fault injection,
request counters, CLI) and of emulator-only edge cases.  Unlike
test_consul_contract.py these never run against a real Consul."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import consul
import httpx
import pytest

try:
    from consul_emulator import ConsulEmulator, consul_emulator, parse_go_duration
    from consul_fixtures import emulator_threads
except ImportError:  # imported as part of a ``tests`` package
    from tests.consul_emulator import ConsulEmulator, consul_emulator, parse_go_duration
    from tests.consul_fixtures import emulator_threads

pytestmark = pytest.mark.consul

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def emu() -> Iterator[ConsulEmulator]:
    with consul_emulator(jitter=False) as e:
        port = e.port
        yield e
    assert not emulator_threads(port)


@pytest.fixture
def http(emu: ConsulEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.addr, timeout=30) as client:
        yield client


def index_of(resp: httpx.Response) -> int:
    return int(resp.headers["X-Consul-Index"])


def test_parse_go_duration() -> None:
    assert parse_go_duration("10s") == 10
    assert parse_go_duration("5m") == 300
    assert parse_go_duration("1m30s") == 90
    assert parse_go_duration("250ms") == pytest.approx(0.25)
    assert parse_go_duration("1.5h") == 5400
    assert parse_go_duration("0") == 0
    for bad in ("10", "", "s", "5 m", "1d"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def test_stop_then_start_keeps_state_on_the_same_port(emu: ConsulEmulator, http: httpx.Client) -> None:
    addr = emu.addr
    http.put("/v1/kv/keep", content=b"me")
    index = emu.index
    emu.stop()
    assert not emu.running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{addr}/v1/kv/keep", timeout=2)
    emu.start()
    assert emu.addr == addr
    resp = httpx.get(f"{addr}/v1/kv/keep", params={"raw": ""})
    assert resp.content == b"me"
    assert emu.index == index


def test_reset_wipes_state_and_the_index_goes_backwards(emu: ConsulEmulator, http: httpx.Client) -> None:
    for i in range(5):
        http.put(f"/v1/kv/k{i}", content=b"v")
    before = index_of(http.get("/v1/kv/k4"))
    emu.reset()
    resp = http.get("/v1/kv/k4")
    assert resp.status_code == 404
    assert 1 <= index_of(resp) < before
    _, services = consul.Consul(port=emu.port).catalog.services()
    assert services == {"consul": []}


def test_blocked_query_sees_the_index_go_backwards_after_reset(
    emu: ConsulEmulator, http: httpx.Client
) -> None:
    http.put("/v1/kv/a", content=b"1")
    http.put("/v1/kv/a", content=b"2")
    index = index_of(http.get("/v1/kv/a"))
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(http.get, "/v1/kv/a", params={"index": index, "wait": "300ms"})
        assert emu.wait_for_blocked(1)
        emu.reset()
        resp = fut.result(timeout=5)
    # after state loss the client sees the index go backwards and must reset to 0
    assert resp.status_code == 404
    assert index_of(resp) < index


def test_stop_drops_in_flight_long_polls_and_idle_connections(emu: ConsulEmulator) -> None:
    port = emu.port
    idle = httpx.Client(base_url=emu.addr, timeout=30)
    idle.get("/v1/status/leader")  # leaves a keep-alive connection parked on the server
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(httpx.get, f"{emu.addr}/v1/kv/x", params={"index": 1, "wait": "5m"}, timeout=30)
        assert emu.wait_for_blocked(1)
        start = time.monotonic()
        emu.stop()
        assert time.monotonic() - start < 3
        with pytest.raises(httpx.TransportError):
            fut.result(timeout=5)
    idle.close()
    assert not emulator_threads(port)


def test_fail_with_and_delay(emu: ConsulEmulator, http: httpx.Client) -> None:
    client = consul.Consul(port=emu.port)
    emu.fail_with = 500
    assert http.get("/v1/status/leader").status_code == 500
    with pytest.raises(consul.ConsulException):
        client.kv.get("anything")
    emu.fail_with = 503
    assert http.put("/v1/kv/x", content=b"1").status_code == 503
    emu.fail_with = None
    assert client.kv.get("x")[1] is None  # the failed write was not applied

    emu.delay = 0.3
    start = time.monotonic()
    assert http.get("/v1/status/leader").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_request_count_is_per_path(emu: ConsulEmulator, http: httpx.Client) -> None:
    emu.reset_counters()
    http.put("/v1/kv/a", content=b"1")
    http.get("/v1/kv/a", params={"index": 0})
    http.get("/v1/kv/a?raw")
    http.get("/v1/health/service/web", params={"passing": ""})
    emu.fail_with = 500
    http.get("/v1/kv/b")  # failed requests are load too
    emu.fail_with = None
    assert emu.request_count["/v1/kv/a"] == 3
    assert emu.request_count["/v1/kv/b"] == 1
    assert emu.requests_to("/v1/kv/") == 4
    assert emu.requests_total == 5
    emu.reset_counters()
    assert emu.requests_total == 0


def test_blocking_query_is_not_woken_by_unrelated_writes(emu: ConsulEmulator, http: httpx.Client) -> None:
    http.put("/v1/kv/watched", content=b"1")
    index = index_of(http.get("/v1/kv/watched"))
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(http.get, "/v1/kv/watched", params={"index": index, "wait": "10s"})
        assert emu.wait_for_blocked(1)
        http.put("/v1/kv/watched-not", content=b"x")  # same prefix, different key
        http.put("/v1/kv/other", content=b"x")
        assert emu.wait_for_blocked(1) and not fut.done()
        http.put("/v1/kv/watched", content=b"2")
        resp = fut.result(timeout=5)
    assert resp.json()[0]["Value"] == "Mg=="  # base64("2"): woke for the watched key only
    assert emu.request_count["/v1/kv/watched"] == 4  # put, get, one blocking get, put


def test_blocking_wait_parameter_and_jitter(emu: ConsulEmulator, http: httpx.Client) -> None:
    http.put("/v1/kv/k", content=b"v")
    index = index_of(http.get("/v1/kv/k"))
    start = time.monotonic()
    resp = http.get("/v1/kv/k", params={"index": index, "wait": "200ms"})
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 1
    assert index_of(resp) == index
    assert resp.headers["X-Consul-Effective-Consistency"] == "leader"
    emu.jitter = True
    start = time.monotonic()
    http.get("/v1/kv/k", params={"index": index, "wait": "160ms"})
    assert 0.16 <= time.monotonic() - start < 0.16 + 0.01 + 0.5


def test_reaping_tombstones_can_move_a_prefix_index_backwards(emu: ConsulEmulator, http: httpx.Client) -> None:
    http.put("/v1/kv/p/a", content=b"1")
    http.put("/v1/kv/p/b", content=b"2")
    http.delete("/v1/kv/p/b")
    after_delete = index_of(http.get("/v1/kv/p/", params={"recurse": ""}))
    emu.reap_tombstones()
    after_reap = index_of(http.get("/v1/kv/p/", params={"recurse": ""}))
    assert after_reap < after_delete  # the documented "index goes backwards" case


def test_bad_requests(emu: ConsulEmulator, http: httpx.Client) -> None:
    assert http.get("/v1/kv/k", params={"index": 1, "wait": "10"}).status_code == 400
    assert http.get("/v1/kv/k", params={"index": "abc"}).status_code == 400
    assert http.get("/v1/kv/k", params={"stale": "", "consistent": ""}).status_code == 400
    assert http.put("/v1/kv/", content=b"x").status_code == 400
    assert http.put("/v1/kv/big", content=b"x" * (512 * 1024 + 1)).status_code == 413
    assert http.post("/v1/kv/k", content=b"x").status_code == 405
    assert http.get("/v1/nope").status_code == 404
    assert http.put("/v1/catalog/register", json={"Node": "n"}).status_code == 400
    assert http.put("/v1/catalog/register", content=b"{not json").status_code == 400
    resp = http.put("/v1/kv/k", params={"acquire": "some-session"}, content=b"x")
    assert resp.status_code == 500 and "session" in resp.text


def test_stale_read_and_no_leader(emu: ConsulEmulator, http: httpx.Client) -> None:
    resp = http.get("/v1/kv/k", params={"stale": ""})
    assert resp.headers["X-Consul-Effective-Consistency"] == "stale"
    emu.rpc_hold_timeout = 0.2
    emu.leader = ""
    assert http.get("/v1/status/leader").json() == ""
    resp = http.get("/v1/kv/k")
    assert resp.status_code == 500 and "No cluster leader" in resp.text
    assert http.put("/v1/kv/k", content=b"x").status_code == 500
    resp = http.get("/v1/kv/k", params={"stale": ""})
    assert resp.status_code == 404
    assert resp.headers["X-Consul-KnownLeader"] == "false"


def test_an_election_holds_requests_and_leader_loss_fails_queries_in_flight(
        emu: ConsulEmulator, http: httpx.Client) -> None:
    """rpc.go `forwardRequestToLeader`: without a leader a request waits up to rpc_hold_timeout for
    one; an election inside that window answers it normally."""
    http.put("/v1/kv/k", content=b"v")
    index = index_of(http.get("/v1/kv/k"))
    with ThreadPoolExecutor(2) as pool:
        parked = pool.submit(http.get, "/v1/kv/k", params={"index": index, "wait": "30s"})
        assert emu.wait_for_blocked(1)
        emu.leader = ""  # the leader is lost: the query it was serving fails
        resp = parked.result(timeout=10)
        assert resp.status_code == 500
        held = pool.submit(http.get, "/v1/kv/k")
        time.sleep(0.3)  # the request is being held (there is no event to wait for from outside)
        assert not held.done()
        emu.leader = "127.0.0.1:8301"  # elected within rpc_hold_timeout (7 s)
        assert held.result(timeout=10).status_code == 200


def test_stale_reads_report_the_followers_last_contact(emu: ConsulEmulator, http: httpx.Client) -> None:
    emu.last_contact = 3.5
    assert http.get("/v1/kv/k", params={"stale": ""}).headers["X-Consul-LastContact"] == "3500"
    assert http.get("/v1/kv/k").headers["X-Consul-LastContact"] == "0"


def test_agent_service_registration_and_ttl_check(emu: ConsulEmulator) -> None:
    c = consul.Consul(port=emu.port)
    assert c.agent.service.register("api", service_id="api-1", port=8080, tags=["v2"], check=consul.Check.ttl("10s"))
    _, entries = c.health.service("api")
    assert [ch["Status"] for ch in entries[0]["Checks"]] == ["passing", "critical"]  # serfHealth, TTL check
    assert c.health.service("api", passing=True)[1] == []
    assert c.agent.check.ttl_pass("service:api-1", notes="ok")
    _, entries = c.health.service("api", passing=True)
    assert entries[0]["Service"]["Port"] == 8080
    assert c.agent.check.ttl_warn("service:api-1")
    assert c.health.service("api", passing=True)[1] == []
    assert c.agent.service.deregister("api-1")
    assert c.agent.service.deregister("api-1")  # no-op when absent
    assert c.health.service("api")[1] == []
    assert "api" not in c.catalog.services()[1]


def test_catalog_accepts_case_insensitive_json_and_service_lookup(emu: ConsulEmulator, http: httpx.Client) -> None:
    body = {"node": "n1", "address": "10.0.0.1", "service": {"service": "db", "tags": ["Primary"], "port": 5432}}
    assert http.put("/v1/catalog/register", json=body).json() is True
    nodes = http.get("/v1/catalog/service/db", params={"tag": "primary"}).json()  # tags match case-insensitively
    assert [(n["Node"], n["ServiceID"], n["ServicePort"]) for n in nodes] == [("n1", "db", 5432)]
    resp = http.put("/v1/catalog/register", json={**body, "Datacenter": "dc9"})
    assert resp.status_code == 500 and "No path to datacenter" in resp.text


def test_node_check_affects_every_service_on_the_node(emu: ConsulEmulator, http: httpx.Client) -> None:
    http.put("/v1/catalog/register", json={"Node": "n1", "Address": "10.0.0.1",
                                           "Service": {"Service": "web"},
                                           "Check": {"CheckID": "node-ok", "Name": "node", "Status": "passing"}})
    index = index_of(http.get("/v1/health/service/web", params={"passing": ""}))
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(http.get, "/v1/health/service/web", params={"passing": "", "index": index, "wait": "10s"})
        assert emu.wait_for_blocked(1)
        http.put("/v1/catalog/register", json={"Node": "n1", "Address": "10.0.0.1",
                                               "Check": {"CheckID": "node-ok", "Name": "node", "Status": "critical"}})
        resp = fut.result(timeout=5)
    assert resp.json() == []
    assert index_of(resp) > index


def test_standalone_cli() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.consul_emulator", "--port", "0", "--token", "cli-token"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("consul emulator listening on http://127.0.0.1:")
        addr = line.split()[-1]
        assert httpx.get(f"{addr}/v1/status/leader").json() == "127.0.0.1:8300"
        assert httpx.get(f"{addr}/v1/kv/x").status_code == 403
        assert httpx.get(f"{addr}/v1/kv/x", headers={"X-Consul-Token": "cli-token"}).status_code == 404
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
