"""The consul source's catalog and Connect functions (consul-template parity, issue 15), against the
emulator: in process for the values and the requests, through the CLI for what a user sees."""

from __future__ import annotations

import asyncio
import datetime
import stat
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from confsync.sources import Dep, Missing
from confsync.sources.consul import ConsulFunctions, ConsulOptions, ConsulSource
from tests.consul_emulator import ConsulEmulator, consul_emulator
from tests.consul_emulator.acl import Policy
from tests.helpers import Daemon, confsync, wait_until
from tests.test_consul_source import NO_ENV, Sink, config, poll

pytestmark = pytest.mark.consul


@pytest.fixture
def emu() -> Iterator[ConsulEmulator]:
    with consul_emulator() as emulator:
        yield emulator


def calls(*exprs: str) -> list[Dep]:
    """The dependencies template calls make, as the renderer would record them."""
    deps: list[Dep] = []
    consul = ConsulFunctions("consul", lambda dep, default: deps.append(dep))
    for expr in exprs:
        eval(expr, {"consul": consul})  # noqa: S307 - the test's own literals
    return deps


def instance(emu: ConsulEmulator, node: str, sid: str, checks: list[tuple[str, str]], *, service: str = "web",
             tags: tuple[str, ...] = ("v1",), address: str = "10.0.0.1") -> None:
    body = {"Node": node, "Address": address, "TaggedAddresses": {"wan": "203.0.113.1"}, "NodeMeta": {"rack": "r1"},
            "Service": {"ID": sid, "Service": service, "Tags": list(tags), "Port": 80, "Meta": {"v": "2"},
                        "Weights": {"Passing": 5, "Warning": 1},
                        "TaggedAddresses": {"lan": {"Address": "10.1.0.1", "Port": 81}}},
            "Checks": [{"CheckID": cid, "Name": cid, "Status": status, "ServiceID": sid} for cid, status in checks]}
    assert httpx.put(f"{emu.addr}/v1/catalog/register", json=body).status_code == 200


async def values(emu: ConsulEmulator, deps: list[Dep], **options: Any) -> tuple[dict[Dep, Any], Sink]:
    """Every dependency's first value, from one source."""
    sink = Sink()
    source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=30, **options), sink)
    await source.start()
    try:
        for d in deps:
            source.watch(d)
        await sink.wait_for(lambda: all(d in sink.values for d in deps))
        return dict(sink.values), sink
    finally:
        await source.close()


def test_calls_become_canonical_dependencies():
    same = calls("consul.service('web', state=['warning', 'passing'], tag=['b', 'a'])",
                 "consul.service('web', tag=('a', 'b'), state=('passing', 'warning'))")
    assert same[0] == same[1]
    assert calls("consul.service('web', passing=False)") == calls("consul.service('web', state='any')")
    assert calls("consul.service('web')") == calls("consul.service('web', state='passing')")
    for bad, error in [("consul.service('web', state=['any', 'passing'])", ValueError),
                       ("consul.service('web', state='healthy')", ValueError),
                       ("consul.service('web', state='any', passing=True)", TypeError),
                       ("consul.service('web', tag=3)", TypeError),
                       ("consul.service('web', dc='')", ValueError),
                       ("consul.nodes(near='a\\nb')", ValueError)]:
        with pytest.raises(error):
            calls(bad)


async def test_state_sets_tags_fields_and_near(emu):
    instance(emu, "n1", "ok", [("c", "passing")], tags=("v1", "canary"))
    instance(emu, "n2", "warn", [("c", "warning")])
    instance(emu, "n3", "down", [("c", "critical")])
    instance(emu, "n4", "maint", [("c", "passing"), ("_service_maintenance:maint", "critical")])
    emu.coordinates.update({"consul-emulator": 0, "n1": 9, "n2": 1, "n3": 5})
    deps = calls("consul.service('web')", "consul.service('web', state=['passing', 'warning'])",
                 "consul.service('web', state='any')", "consul.service('web', state=['critical', 'maintenance'])",
                 "consul.service('web', tag=['canary', 'V1'], state='any')",
                 "consul.service('web', state='any', near='_agent')", "consul.service('web', dc='dc1')")
    got, _ = await values(emu, deps)
    ids = [[i["id"] for i in got[d]] for d in deps]
    assert ids == [["ok"], ["ok", "warn"], ["ok", "warn", "down", "maint"], ["down", "maint"], ["ok"],
                   ["warn", "down", "ok", "maint"],  # by distance from the agent; no coordinate: last
                   ["ok"]]
    assert [i["status"] for i in got[deps[2]]] == ["passing", "warning", "critical", "maintenance"]
    ok = got[deps[0]][0]
    assert {k: ok[k] for k in ok if k != "checks"} == {
        "node": "n1", "node_id": "", "node_address": "10.0.0.1", "node_datacenter": "dc1",
        "node_tagged_addresses": {"wan": "203.0.113.1"}, "node_meta": {"rack": "r1"}, "address": "10.0.0.1",
        "port": 80, "id": "ok", "name": "web", "tags": ["canary", "v1"], "meta": {"v": "2"},
        "tagged_addresses": {"lan": {"address": "10.1.0.1", "port": 81}}, "weights": {"passing": 5, "warning": 1},
        "namespace": "", "partition": "", "peer": "", "status": "passing"}
    assert [(c["check_id"], c["status"], c["service_name"]) for c in ok["checks"]] == [("c", "passing", "web")]


async def test_connect_follows_the_sidecar_proxies(emu):
    """consul-template's `connect "web"`: the proxies (and native instances) that serve web over
    Connect; a proxy's health change reaches the value through the blocking query."""
    instance(emu, "n1", "web-1", [("c", "passing")])
    proxy = {"Node": "n1", "Address": "10.0.0.1", "SkipNodeUpdate": True,
             "Service": {"ID": "web-1-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
                         "Proxy": {"DestinationServiceName": "web"}},
             "Check": {"CheckID": "proxy", "Status": "passing", "ServiceID": "web-1-proxy"}}
    assert httpx.put(f"{emu.addr}/v1/catalog/register", json=proxy).status_code == 200
    [d] = calls("consul.service('web', connect=True)")
    sink = Sink()
    source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=30), sink)
    await source.start()
    try:
        source.watch(d)
        await sink.wait_for(lambda: d in sink.values)
        assert [(i["id"], i["port"]) for i in sink.values[d]] == [("web-1-proxy", 21000)]
        assert await asyncio.to_thread(emu.wait_for_blocked, 1)
        proxy["Check"]["Status"] = "critical"
        assert httpx.put(f"{emu.addr}/v1/catalog/register", json=proxy).status_code == 200
        await sink.wait_for(lambda: sink.values[d] == [])
    finally:
        await source.close()


async def test_nodes_node_datacenters_and_services_in_scope(emu):
    instance(emu, "n1", "web-1", [("c", "passing")])
    emu.coordinates.update({"n1": 0, "consul-emulator": 3})
    deps = calls("consul.nodes()", "consul.nodes(near='n1')", "consul.node('n1')", "consul.node()",
                 "consul.node('ghost')", "consul.datacenters()", "consul.services(dc='dc1')",
                 "consul.services(peer='elsewhere')")
    got, _ = await values(emu, deps)
    assert [n["node"] for n in got[deps[0]]] == ["consul-emulator", "n1"]
    assert [n["node"] for n in got[deps[1]]] == ["n1", "consul-emulator"]
    n1 = got[deps[2]]
    assert n1["node"] == {"id": "", "node": "n1", "address": "10.0.0.1", "datacenter": "dc1",
                          "tagged_addresses": {"wan": "203.0.113.1"}, "meta": {"rack": "r1"}, "partition": ""}
    assert n1["services"] == [{"id": "web-1", "name": "web", "tags": ["v1"], "meta": {"v": "2"}, "port": 80,
                               "address": "", "namespace": ""}]
    assert got[deps[3]]["node"]["node"] == "consul-emulator"  # the local agent's
    assert got[deps[4]] == Missing("does not exist")
    assert got[deps[5]] == ["dc1"]
    assert got[deps[6]] == {"consul": [], "web": ["v1"]}
    assert got[deps[7]] == {}


async def test_unknown_dc_and_enterprise_scopes_are_missing_data_not_an_outage(emu):
    instance(emu, "n1", "web-1", [("c", "passing")])
    deps = calls("consul.service('web', dc='mars')", "consul.service('web', ns='team-a')",
                 "consul.nodes(partition='p1')", "consul.service('web')")
    got, sink = await values(emu, deps)
    assert got[deps[0]] == Missing("Consul knows no datacenter 'mars' (No path to datacenter)")
    assert isinstance(got[deps[1]], Missing) and "Namespaces are a Consul Enterprise feature" in got[deps[1]].reason
    assert isinstance(got[deps[2]], Missing) and "Partitions are a Consul Enterprise feature" in got[deps[2]].reason
    assert [i["id"] for i in got[deps[3]]] == ["web-1"]
    assert sink.status == []  # never reported down


async def test_the_source_namespace_and_partition_ride_on_kv_and_catalog_reads(emu):
    """Consul CE refuses both: each read that carries one is this dependency's missing data, which
    shows it was sent; the datacenters (not scoped by either) are still read."""
    deps = [Dep("consul", "key", "app/x"), *calls("consul.service('web')", "consul.datacenters()")]
    got, sink = await values(emu, deps, namespace="team-a")
    assert all('"ns" - Namespaces' in got[d].reason for d in deps[:2])
    assert got[deps[2]] == ["dc1"]
    got, sink = await values(emu, deps, partition="p1")
    assert all('"partition" - Partitions' in got[d].reason for d in deps[:2])
    assert sink.status == []


async def test_kv_calls_with_their_own_dc_namespace_or_partition_are_polls_apart(emu):
    """consul-template's `key "k@dc"`, `?ns=`, `?partition=`: a scope of its own, one poll per scope
    and folder; a root tree() in one scope does not swallow the other scope's polls."""
    with httpx.Client(base_url=emu.addr) as http:
        http.put("/v1/kv/app/a", content=b"1")
        http.put("/v1/kv/app/b", content=b"2")
    deps = calls("consul.key('app/a')", "consul.key('app/a', dc='dc1')", "consul.tree('', dc='dc1')",
                 "consul.key('app/a', dc='mars')", "consul.ls('app', ns='team-a')", "consul.key('app/b', dc='dc1')")
    got, _ = await values(emu, deps)
    assert [got[d] for d in (deps[0], deps[1], deps[5])] == ["1", "1", "2"]
    assert got[deps[2]] == {"app/a": "1", "app/b": "2"}
    assert got[deps[3]] == Missing("Consul knows no datacenter 'mars' (No path to datacenter)")
    assert '"ns" - Namespaces are a Consul Enterprise feature' in got[deps[4]].reason
    assert emu.request_count["/v1/kv/app/"] >= 1 and emu.request_count["/v1/kv/"] >= 1  # default scope, dc1 root


HUGE = 2000


async def test_hostile_names_and_a_huge_catalog(emu):
    names = ["a/b", "we?b", "wéb-☃"]
    for i, name in enumerate(names):
        instance(emu, f"h{i}", f"id-{i}", [("c", "passing")], service=name)
    body = [{"Node": f"big-{i:05d}", "Address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
             "Service": {"ID": f"big-{i}", "Service": "big", "Port": 80},
             "Check": {"CheckID": "c", "Status": "passing", "ServiceID": f"big-{i}"}} for i in range(HUGE)]
    with httpx.Client(base_url=emu.addr) as http:
        for b in body:
            http.put("/v1/catalog/register", json=b)
    deps = calls(*(f"consul.service({n!r})" for n in names), "consul.service('big')")
    started = time.monotonic()
    got, _ = await values(emu, deps)
    took = time.monotonic() - started
    assert [[i["name"] for i in got[d]] for d in deps[:3]] == [[n] for n in names]
    assert len(got[deps[3]]) == HUGE and got[deps[3]][0]["node"] == "big-00000"
    assert took < 10, f"{HUGE} instances took {took:.1f}s"


async def test_nodes_hidden_by_acls_are_missing_data(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "t")
    with consul_emulator(token="root") as emu:
        emu.tokens["t"] = Policy(node={"nobody": "read"}, service={"": "read"})
        got, _ = await values(emu, calls("consul.nodes()", "consul.node('consul-emulator')"))
    assert set(got.values()) == {Missing("hidden by ACLs: Consul left out of its answer entries the token may not "
                                         "read (grant node:read on the nodes)"),
                                 Missing("hidden by ACLs: Consul left out of its answer entries the token may not "
                                         "read (grant node:read on the node and service:read on its services)")}


@pytest.fixture
def short_leaf(emu):
    emu.leaf_ttl = 5.0
    return emu


def test_leaf_certificate_file_is_private_and_renewed_before_expiry(project, tmp_path, short_leaf):
    emu = short_leaf
    instance(emu, "n1", "web-1", [("c", "warning")])
    templates = {
        "leaf.pem.j2": "{% set c = consul.ca_leaf('web') %}{{ c.cert_pem }}{{ c.private_key_pem }}"
                       "# until {{ c.valid_before }}\n",
        "roots.pem.j2": "{% for r in consul.ca_roots() if r.active %}{{ r.root_cert }}{% endfor %}",
        "web.conf.j2": "{% for s in consul.service('web', state=['passing', 'warning']) %}{{ s.node }} {{ s.status }}"
                       " {{ s.weights.passing }} {{ s.node_meta.rack }}{% endfor %}\n"
                       "{{ consul.datacenters() | join(',') }} {{ consul.node('n1').services | length }}\n",
    }
    cfg = project(config(emu, templates), templates)
    out = tmp_path / "out"
    assert confsync("once", "-c", str(cfg), **NO_ENV).returncode == 0
    assert (out / "web.conf").read_text() == "n1 warning 5 r1\ndc1 1\n"
    assert (out / "roots.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE((out / "roots.pem").stat().st_mode) != 0o600
    assert stat.S_IMODE((out / "leaf.pem").stat().st_mode) == 0o600  # it holds the private key
    (out / "leaf.pem").unlink()
    with Daemon("-c", str(cfg), **NO_ENV) as daemon:
        leaf = out / "leaf.pem"
        wait_until(leaf.exists, what=f"{leaf}; log:\n{daemon.log()}")
        first = leaf.read_text()
        expires = datetime.datetime.fromisoformat(first.rsplit("# until ", 1)[1].strip().replace("Z", "+00:00"))
        wait_until(lambda: leaf.read_text() != first, timeout=emu.leaf_ttl,
                   what=f"the leaf certificate to be renewed; log:\n{daemon.log()}")
        assert datetime.datetime.now(datetime.UTC) < expires, "renewed only after the old certificate expired"
        assert "PRIVATE KEY" not in daemon.log()


async def test_datacenters_is_polled_not_blocked(emu):
    """/v1/catalog/datacenters is not a blocking query: read every min(wait, 15 s), with no warning."""
    sink = Sink()
    source = ConsulSource("consul", ConsulOptions(address=emu.addr, wait=1), sink)
    await source.start()
    started = time.monotonic()
    source.watch(Dep("consul", "datacenters", ""))
    await poll(lambda: emu.request_count["/v1/catalog/datacenters"] >= 3)
    elapsed = time.monotonic() - started
    await source.close()
    assert elapsed >= 1.8, f"three reads in {elapsed:.2f}s: not paced by wait"
    assert sink.values[Dep("consul", "datacenters", "")] == ["dc1"]
