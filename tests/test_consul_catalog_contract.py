"""Contract tests for the catalog and Connect reads behind consul.service/node/nodes/datacenters/
ca_roots/ca_leaf: against the emulator, and against a real Consul when CONSUL_HTTP_ADDR is set
(see test_consul_contract.py). Behaviours from https://developer.hashicorp.com/consul/api-docs
(health, catalog, agent/connect) and agent/http_ce.go for Consul CE's refusals.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import consul
import httpx
import pytest

from tests.consul_emulator import ConsulEmulator
from tests.consul_emulator.acl import Policy
from tests.consul_fixtures import ConsulTarget
from tests.test_consul_contract import LONG_WAIT, ensure_parked, index_of

pytestmark = pytest.mark.consul


def _instance(scratch, http: httpx.Client, node: str, service: str, sid: str, checks: list[tuple[str, str]],
              **extra) -> None:
    scratch.register(http, {
        "Node": node, "Address": "192.0.2.20", "TaggedAddresses": {"wan": "198.51.100.20"},
        "NodeMeta": {"rack": "r1"},
        "Service": {"ID": sid, "Service": service, "Tags": ["b", "a"], "Port": 7000, "Meta": {"v": "2"},
                    "Weights": {"Passing": 3, "Warning": 1},
                    "TaggedAddresses": {"lan": {"Address": "10.1.1.1", "Port": 7001}}, **extra},
        "Checks": [{"CheckID": cid, "Name": cid, "Status": status, "ServiceID": sid} for cid, status in checks],
    })


def test_health_entries_carry_every_field_a_template_reads(consul_http: httpx.Client, catalog_scratch) -> None:
    svc, node = catalog_scratch.name("full"), catalog_scratch.name("n")
    _instance(catalog_scratch, consul_http, node, svc, "full-1", [("c1", "warning")])
    [entry] = consul_http.get(f"/v1/health/service/{svc}").json()
    n, s = entry["Node"], entry["Service"]
    assert (n["Node"], n["Address"], n["TaggedAddresses"]["wan"], n["Meta"]) == (node, "192.0.2.20", "198.51.100.20",
                                                                                 {"rack": "r1"})
    assert isinstance(n["ID"], str) and n["Datacenter"]
    assert (s["ID"], s["Service"], sorted(s["Tags"]), s["Port"], s["Meta"]) == ("full-1", svc, ["a", "b"], 7000,
                                                                                 {"v": "2"})
    assert s["Weights"] == {"Passing": 3, "Warning": 1}
    assert s["TaggedAddresses"]["lan"] == {"Address": "10.1.1.1", "Port": 7001}
    assert [(c["CheckID"], c["Status"], c["ServiceName"]) for c in entry["Checks"]] == [("c1", "warning", svc)]


def test_passing_drops_warning_and_maintenance_instances(consul_http: httpx.Client, catalog_scratch) -> None:
    """?passing keeps only all-passing instances; the other states are the client's to filter, from
    the checks (a maintenance check is a critical check with a reserved ID: api/agent.go)."""
    svc = catalog_scratch.name("states")
    for state, checks in [("passing", [("p", "passing")]), ("warning", [("w", "warning")]),
                          ("critical", [("c", "critical")]),
                          ("maint", [("p2", "passing"), (f"_service_maintenance:{svc}-maint", "critical")])]:
        _instance(catalog_scratch, consul_http, catalog_scratch.name(state), svc, f"{svc}-{state}", checks)
    every = consul_http.get(f"/v1/health/service/{svc}").json()
    assert sorted(e["Service"]["ID"] for e in every) == sorted(f"{svc}-{s}" for s in
                                                               ("passing", "warning", "critical", "maint"))
    passing = consul_http.get(f"/v1/health/service/{svc}", params={"passing": "1"}).json()
    assert [e["Service"]["ID"] for e in passing] == [f"{svc}-passing"]


def test_dc_near_and_peer_per_call(consul_http: httpx.Client, catalog_scratch) -> None:
    svc = catalog_scratch.name("scoped")
    _instance(catalog_scratch, consul_http, catalog_scratch.name("n1"), svc, f"{svc}-1", [("c", "passing")])
    _instance(catalog_scratch, consul_http, catalog_scratch.name("n2"), svc, f"{svc}-2", [("c", "passing")])
    dc = consul_http.get("/v1/agent/self").json()["Config"]["Datacenter"]
    assert dc in consul_http.get("/v1/catalog/datacenters").json()
    assert len(consul_http.get(f"/v1/health/service/{svc}", params={"dc": dc}).json()) == 2
    unknown = consul_http.get(f"/v1/health/service/{svc}", params={"dc": "no-such-dc"})
    assert unknown.status_code == 500 and "No path to datacenter" in unknown.text
    # ?near sorts (by round-trip time) but keeps the same instances
    near = consul_http.get(f"/v1/health/service/{svc}", params={"near": "_agent"}).json()
    assert sorted(e["Service"]["ID"] for e in near) == [f"{svc}-1", f"{svc}-2"]
    # a peer that imported nothing (none here): no instances, not an error
    peered = consul_http.get(f"/v1/health/service/{svc}", params={"peer": "no-such-peer"})
    assert peered.status_code == 200 and peered.json() == []


def test_health_connect_lists_the_proxies_and_native_instances(consul_http: httpx.Client,
                                                                catalog_scratch) -> None:
    svc = catalog_scratch.name("mesh")
    node = catalog_scratch.name("n")
    _instance(catalog_scratch, consul_http, node, svc, f"{svc}-plain", [("c1", "passing")])
    _instance(catalog_scratch, consul_http, node, svc, f"{svc}-native", [("c2", "passing")],
              Connect={"Native": True})
    _instance(catalog_scratch, consul_http, node, f"{svc}-sidecar-proxy", f"{svc}-proxy", [("c3", "passing")],
              Kind="connect-proxy", Proxy={"DestinationServiceName": svc})
    connect = consul_http.get(f"/v1/health/connect/{svc}").json()
    assert sorted(e["Service"]["ID"] for e in connect) == [f"{svc}-native", f"{svc}-proxy"]
    [proxy] = [e["Service"] for e in connect if e["Service"]["ID"] == f"{svc}-proxy"]
    assert proxy["Kind"] == "connect-proxy" and proxy["Proxy"]["DestinationServiceName"] == svc
    plain = consul_http.get(f"/v1/health/service/{svc}").json()
    assert sorted(e["Service"]["ID"] for e in plain) == [f"{svc}-native", f"{svc}-plain"]


@pytest.mark.parametrize("param", ["ns", "partition"])
def test_namespace_and_partition_are_enterprise_only(consul_http: httpx.Client, param: str) -> None:
    """Consul CE refuses them, even "default" (agent/http_ce.go); Consul Enterprise answers."""
    for path in ("/v1/health/service/consul", "/v1/kv/x", "/v1/catalog/services"):
        resp = consul_http.get(path, params={param: "team-a"})
        if resp.status_code == 400:
            assert "Consul Enterprise feature" in resp.text and f'"{param}"' in resp.text
        else:
            assert resp.status_code in (200, 404), resp.text  # an Enterprise server


def test_service_names_with_slash_question_mark_and_unicode(consul_http: httpx.Client, consul_client: consul.Consul,
                                                            catalog_scratch) -> None:
    """Consul takes the rest of the path as the name; py-consul quotes all but '/' and ':'."""
    for base in ("a/b", "we?b", "wéb-☃"):
        svc = catalog_scratch.name(base)
        _instance(catalog_scratch, consul_http, catalog_scratch.name("n"), svc, f"id-{len(base)}", [("c", "passing")])
        _, entries = consul_client.health.service(svc)
        assert [e["Service"]["Service"] for e in entries] == [svc]
        assert svc in consul_client.catalog.services()[1]


def test_nodes_and_node_with_its_services(consul_http: httpx.Client, consul_target: ConsulTarget,
                                          catalog_scratch) -> None:
    node, svc = catalog_scratch.name("nodes"), catalog_scratch.name("s")
    _instance(catalog_scratch, consul_http, node, svc, "s-1", [("c", "passing")])
    resp = consul_http.get("/v1/catalog/nodes")
    index = index_of(resp)
    [mine] = [n for n in resp.json() if n["Node"] == node]
    assert (mine["Address"], mine["TaggedAddresses"]["wan"], mine["Meta"]) == ("192.0.2.20", "198.51.100.20",
                                                                               {"rack": "r1"})
    detail = consul_http.get(f"/v1/catalog/node/{node}").json()
    assert detail["Node"]["Node"] == node and detail["Node"]["Meta"] == {"rack": "r1"}
    assert detail["Services"]["s-1"]["Service"] == svc and detail["Services"]["s-1"]["Port"] == 7000
    missing = consul_http.get(f"/v1/catalog/node/{catalog_scratch.name('nobody')}")
    assert missing.status_code == 200 and missing.json() is None
    # a blocking read of the nodes wakes when one joins
    other = catalog_scratch.name("joins")
    with consul_target.http() as watcher, ThreadPoolExecutor(1) as pool:
        fut = pool.submit(watcher.get, "/v1/catalog/nodes", params={"index": index, "wait": LONG_WAIT})
        ensure_parked(consul_target, fut)
        _instance(catalog_scratch, consul_http, other, svc, "s-2", [("c", "passing")])
        assert other in [n["Node"] for n in fut.result(timeout=15).json()]


def test_nodes_hidden_by_acls_are_filtered_and_flagged(acl_target: ConsulTarget, catalog_scratch) -> None:
    if acl_target.emulator is None:
        pytest.skip("needs a token with node rules: the emulator's")
    emu: ConsulEmulator = acl_target.emulator
    node = catalog_scratch.name("secret-node")
    with acl_target.http() as authed:
        _instance(catalog_scratch, authed, node, catalog_scratch.name("s"), "s-1", [("c", "passing")])
    emu.tokens["nodes-token"] = Policy(node={"consul-": "read"})  # not the confsync-test- nodes
    with acl_target.http(token="nodes-token") as limited:
        resp = limited.get("/v1/catalog/nodes")
        assert node not in [n["Node"] for n in resp.json()]
        assert resp.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        hidden = limited.get(f"/v1/catalog/node/{node}")
        assert hidden.json() is None and hidden.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        # a leaf certificate needs service:write on the service
        assert limited.get("/v1/agent/connect/ca/leaf/web").status_code == 403


def test_connect_roots_and_a_leaf_that_blocks_until_renewed(consul_http: httpx.Client,
                                                            consul_target: ConsulTarget) -> None:
    roots = consul_http.get("/v1/agent/connect/ca/roots")
    assert roots.status_code == 200, roots.text
    body = roots.json()
    [active] = [r for r in body["Roots"] if r["Active"]]
    assert active["ID"] == body["ActiveRootID"] and active["RootCert"].startswith("-----BEGIN CERTIFICATE-----")
    assert body["TrustDomain"].endswith(".consul")
    leaf = consul_http.get("/v1/agent/connect/ca/leaf/confsync-test-web")
    assert leaf.status_code == 200, leaf.text
    cert = leaf.json()
    assert cert["CertPEM"].startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" in cert["PrivateKeyPEM"]
    assert cert["Service"] == "confsync-test-web" and cert["ServiceURI"].endswith("/svc/confsync-test-web")
    assert cert["ValidAfter"] < cert["ValidBefore"]
    # the same index again parks: the certificate stays until the agent renews it
    with consul_target.http() as watcher, ThreadPoolExecutor(1) as pool:
        fut = pool.submit(watcher.get, "/v1/agent/connect/ca/leaf/confsync-test-web",
                          params={"index": index_of(leaf), "wait": "1s"})
        ensure_parked(consul_target, fut)
        again = fut.result(timeout=15)
    assert again.json()["SerialNumber"] == cert["SerialNumber"]
