"""Contract tests: the Consul HTTP API behaviours a blocking-query client relies on.

They run against the in-process emulator by default and against a real Consul
when ``CONSUL_HTTP_ADDR`` is set (``CONSUL_HTTP_TOKEN`` is used if present), so
the emulator can be checked against the real thing with the same tests:

    CONSUL_HTTP_ADDR=127.0.0.1:8500 pytest tests/test_consul_contract.py

Behaviours are taken from https://developer.hashicorp.com/consul/api-docs
(kv, features/blocking, health, catalog, api-structure).
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import consul
import httpx
import pytest

try:
    from consul_fixtures import (  # noqa: F401 - fixtures are used by name
        ConsulTarget,
        acl_target,
        catalog_scratch,
        consul_addr,
        consul_client,
        consul_http,
        consul_target,
        kv_prefix,
    )
except ImportError:  # imported as part of a ``tests`` package
    from tests.consul_fixtures import (  # noqa: F401
        ConsulTarget,
        acl_target,
        catalog_scratch,
        consul_addr,
        consul_client,
        consul_http,
        consul_target,
        kv_prefix,
    )

pytestmark = pytest.mark.consul

LONG_WAIT = "10s"  # for queries that must return *early*; a failure shows up as a ~10 s hang
SHORT_WAIT = "1s"  # for the one test that waits the full timeout


def index_of(resp: httpx.Response) -> int:
    return int(resp.headers["X-Consul-Index"])


def ensure_parked(target: ConsulTarget, fut: Future) -> None:
    """Make sure a blocking query is parked on the server before we write.

    With the emulator this is exact (it counts parked queries).  Against a
    real Consul we can only check the query has not returned yet."""
    if target.emulator is not None:
        assert target.emulator.wait_for_blocked(1, timeout=5), "blocking query never parked"
    else:
        done, _ = wait([fut], timeout=0.3)
        assert not done, "blocking query returned without a change"
    assert not fut.done(), "blocking query returned without a change"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


# --------------------------------------------------------------------------- #
# KV basics
# --------------------------------------------------------------------------- #


def test_put_get_delete(consul_client: consul.Consul, kv_prefix: str) -> None:
    key = kv_prefix + "app/config.yaml"
    assert consul_client.kv.put(key, "port: 8080\n") is True

    index, entry = consul_client.kv.get(key)
    assert entry["Key"] == key
    assert entry["Value"] == b"port: 8080\n"
    assert entry["Flags"] == 0
    assert entry["LockIndex"] == 0
    assert entry["CreateIndex"] == entry["ModifyIndex"] > 0
    # the X-Consul-Index of a single-key read is that key's ModifyIndex
    assert int(index) == entry["ModifyIndex"]

    assert consul_client.kv.delete(key) is True
    index_after, entry_after = consul_client.kv.get(key)
    assert entry_after is None
    assert int(index_after) > int(index)


def test_flags_and_empty_value_round_trip(consul_client: consul.Consul, kv_prefix: str) -> None:
    assert consul_client.kv.put(kv_prefix + "flagged", "x", flags=42) is True
    assert consul_client.kv.get(kv_prefix + "flagged")[1]["Flags"] == 42

    assert consul_client.kv.put(kv_prefix + "empty", None) is True
    _, entry = consul_client.kv.get(kv_prefix + "empty")
    assert entry is not None and entry["Value"] is None


def test_missing_key_is_404_with_an_index(consul_http: httpx.Client, kv_prefix: str) -> None:
    resp = consul_http.get(f"/v1/kv/{kv_prefix}does-not-exist")
    assert resp.status_code == 404
    # blocking clients need an index to wait on even when the key is absent
    assert index_of(resp) >= 1
    assert resp.headers["X-Consul-KnownLeader"] == "true"
    assert "X-Consul-LastContact" in resp.headers


def test_missing_key_via_client_returns_index_and_none(consul_client: consul.Consul, kv_prefix: str) -> None:
    index, entry = consul_client.kv.get(kv_prefix + "nope")
    assert entry is None
    assert int(index) >= 1


def test_recurse_returns_sorted_entries_under_prefix(consul_client: consul.Consul, kv_prefix: str) -> None:
    for key, value in [("b", "2"), ("a", "1"), ("dir/c", "3")]:
        consul_client.kv.put(kv_prefix + key, value)
    consul_client.kv.put(kv_prefix.rstrip("/") + "-sibling", "not under the prefix")
    try:
        index, entries = consul_client.kv.get(kv_prefix, recurse=True)
        assert [e["Key"] for e in entries] == [kv_prefix + "a", kv_prefix + "b", kv_prefix + "dir/c"]
        assert [e["Value"] for e in entries] == [b"1", b"2", b"3"]
        # "the returned X-Consul-Index corresponds to the latest ModifyIndex within the prefix"
        assert int(index) == max(e["ModifyIndex"] for e in entries)
    finally:
        consul_client.kv.delete(kv_prefix.rstrip("/") + "-sibling")


def test_recurse_on_empty_prefix_is_404(consul_http: httpx.Client, kv_prefix: str) -> None:
    resp = consul_http.get(f"/v1/kv/{kv_prefix}", params={"recurse": ""})
    assert resp.status_code == 404
    assert index_of(resp) >= 1


def test_keys_with_and_without_separator(consul_client: consul.Consul, kv_prefix: str) -> None:
    for key in ("top", "dir/one", "dir/two", "dir/sub/three"):
        consul_client.kv.put(kv_prefix + key, "v")
    _, keys = consul_client.kv.get(kv_prefix, keys=True)
    assert keys == [kv_prefix + k for k in ("dir/one", "dir/sub/three", "dir/two", "top")]
    _, keys = consul_client.kv.get(kv_prefix, keys=True, separator="/")
    assert keys == [kv_prefix + "dir/", kv_prefix + "top"]


def test_raw_returns_the_bytes_verbatim(consul_addr: str, consul_target: ConsulTarget, kv_prefix: str) -> None:
    blob = b"\x00\xffnot json\n"
    with consul_target.http() as http:
        assert http.put(f"/v1/kv/{kv_prefix}blob", content=blob).json() is True
        resp = http.get(f"{consul_addr}/v1/kv/{kv_prefix}blob", params={"raw": ""})
    assert resp.status_code == 200
    assert resp.content == blob
    assert not resp.headers["Content-Type"].startswith("application/json")
    assert index_of(resp) >= 1


def test_every_write_advances_the_index(consul_client: consul.Consul, kv_prefix: str) -> None:
    key = kv_prefix + "k"
    consul_client.kv.put(key, "same")
    index1, first = consul_client.kv.get(key)
    consul_client.kv.put(key, "same")  # idempotent write: data unchanged, index moves
    index2, second = consul_client.kv.get(key)
    assert int(index2) > int(index1)
    assert second["ModifyIndex"] > first["ModifyIndex"]
    assert second["CreateIndex"] == first["CreateIndex"]
    assert second["Value"] == first["Value"]


def test_delete_recurse_removes_only_the_prefix(consul_client: consul.Consul, kv_prefix: str) -> None:
    for key in ("app/a", "app/b", "apple", "other"):
        consul_client.kv.put(kv_prefix + key, "v")
    assert consul_client.kv.delete(kv_prefix + "app/", recurse=True) is True
    _, keys = consul_client.kv.get(kv_prefix, keys=True)
    assert keys == [kv_prefix + "apple", kv_prefix + "other"]


# --------------------------------------------------------------------------- #
# Check-and-set
# --------------------------------------------------------------------------- #


def test_cas_put(consul_client: consul.Consul, kv_prefix: str) -> None:
    key = kv_prefix + "lock"
    assert consul_client.kv.put(key, "first", cas=0) is True  # 0: create only if absent
    assert consul_client.kv.put(key, "second", cas=0) is False
    _, entry = consul_client.kv.get(key)
    assert entry["Value"] == b"first"

    stale = entry["ModifyIndex"] - 1
    assert consul_client.kv.put(key, "stale", cas=stale) is False
    assert consul_client.kv.put(key, "third", cas=entry["ModifyIndex"]) is True
    _, entry2 = consul_client.kv.get(key)
    assert entry2["Value"] == b"third"
    assert entry2["ModifyIndex"] > entry["ModifyIndex"]
    # the old index is now stale
    assert consul_client.kv.put(key, "again", cas=entry["ModifyIndex"]) is False


def test_cas_delete(consul_client: consul.Consul, kv_prefix: str) -> None:
    key = kv_prefix + "cas-delete"
    consul_client.kv.put(key, "v")
    _, entry = consul_client.kv.get(key)
    assert consul_client.kv.delete(key, cas=0) is False  # "a 0 index will not delete the key"
    assert consul_client.kv.delete(key, cas=entry["ModifyIndex"] + 1000) is False
    assert consul_client.kv.get(key)[1] is not None
    assert consul_client.kv.delete(key, cas=entry["ModifyIndex"]) is True
    assert consul_client.kv.get(key)[1] is None


# --------------------------------------------------------------------------- #
# Blocking queries
# --------------------------------------------------------------------------- #


def test_blocking_query_with_stale_index_returns_at_once(consul_client: consul.Consul, kv_prefix: str) -> None:
    key = kv_prefix + "k"
    consul_client.kv.put(key, "v1")
    old_index, _ = consul_client.kv.get(key)
    consul_client.kv.put(key, "v2")

    (index, entry), elapsed = timed(lambda: consul_client.kv.get(key, index=old_index, wait=LONG_WAIT))
    assert elapsed < 5
    assert entry["Value"] == b"v2"
    assert int(index) > int(old_index)


def test_blocking_query_returns_soon_after_a_concurrent_write(
    consul_target: ConsulTarget, consul_client: consul.Consul, kv_prefix: str
) -> None:
    key = kv_prefix + "watched"
    consul_client.kv.put(key, "before")
    index, _ = consul_client.kv.get(key)

    watcher = consul_target.client()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(watcher.kv.get, key, index=index, wait=LONG_WAIT)
            ensure_parked(consul_target, fut)
            written_at = time.monotonic()
            assert consul_client.kv.put(key, "after") is True
            new_index, entry = fut.result(timeout=15)
            latency = time.monotonic() - written_at
    finally:
        watcher.http.session.close()
    assert entry["Value"] == b"after"
    assert int(new_index) > int(index)
    assert latency < 5, f"blocking query took {latency:.2f}s to see the write"


def test_blocking_query_without_change_returns_after_wait_with_same_index(
    consul_client: consul.Consul, kv_prefix: str
) -> None:
    key = kv_prefix + "quiet"
    consul_client.kv.put(key, "v")
    index, entry = consul_client.kv.get(key)

    (index2, entry2), elapsed = timed(lambda: consul_client.kv.get(key, index=index, wait=SHORT_WAIT))
    # waits the full 1 s (+ at most 1/16 s jitter), then answers with unchanged data
    assert 0.95 <= elapsed < 1.0 + 1.0 / 16 + 1.5
    assert index2 == index
    assert entry2 == entry


def test_blocking_query_on_missing_key_wakes_when_it_is_created(
    consul_target: ConsulTarget, consul_client: consul.Consul, kv_prefix: str
) -> None:
    key = kv_prefix + "later"
    index, entry = consul_client.kv.get(key)
    assert entry is None
    with consul_target.http() as http, ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(http.get, f"/v1/kv/{key}", params={"index": index, "wait": LONG_WAIT})
        ensure_parked(consul_target, fut)
        consul_client.kv.put(key, "created")
        resp = fut.result(timeout=15)
    assert resp.status_code == 200
    assert index_of(resp) > int(index)
    assert base64.b64decode(resp.json()[0]["Value"]) == b"created"


def test_blocking_query_on_missing_key_with_older_index_returns_at_once(
    consul_client: consul.Consul, kv_prefix: str
) -> None:
    consul_client.kv.put(kv_prefix + "sibling", "v")  # make sure some KV write has happened
    index, entry = consul_client.kv.get(kv_prefix + "absent")
    assert entry is None and int(index) >= 2
    # the X-Consul-Index served for the absent key is what the server compares against
    (index2, entry2), elapsed = timed(
        lambda: consul_client.kv.get(kv_prefix + "absent", index=int(index) - 1, wait=LONG_WAIT)
    )
    assert elapsed < 5
    assert entry2 is None
    assert int(index2) >= int(index)


def test_recurse_blocking_query_wakes_on_delete_under_prefix(
    consul_target: ConsulTarget, consul_client: consul.Consul, kv_prefix: str
) -> None:
    consul_client.kv.put(kv_prefix + "a", "1")
    consul_client.kv.put(kv_prefix + "b", "2")  # highest ModifyIndex in the prefix
    index, entries = consul_client.kv.get(kv_prefix, recurse=True)
    assert len(entries) == 2

    watcher = consul_target.client()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(watcher.kv.get, kv_prefix, index=index, recurse=True, wait=LONG_WAIT)
            ensure_parked(consul_target, fut)
            consul_client.kv.delete(kv_prefix + "b")
            new_index, new_entries = fut.result(timeout=15)
    finally:
        watcher.http.session.close()
    assert [e["Key"] for e in new_entries] == [kv_prefix + "a"]
    # the delete is a change within the prefix; its index is newer than any ModifyIndex left
    assert int(new_index) > int(index)


def test_invalid_datacenter_is_500_no_path(consul_http: httpx.Client, kv_prefix: str) -> None:
    resp = consul_http.get(f"/v1/kv/{kv_prefix}x", params={"dc": f"no-such-dc-{uuid.uuid4().hex[:6]}"})
    assert resp.status_code == 500
    assert "No path to datacenter" in resp.text


def test_status_leader_names_a_leader(consul_client: consul.Consul) -> None:
    leader = consul_client.status.leader()
    assert isinstance(leader, str) and ":" in leader


# --------------------------------------------------------------------------- #
# ACL
# --------------------------------------------------------------------------- #


def test_acl_token_is_required_when_acls_are_enabled(acl_target: ConsulTarget, kv_prefix: str) -> None:
    token = acl_target.token
    assert token
    path = f"/v1/kv/{kv_prefix}guarded"
    with acl_target.http() as authed:
        assert authed.put(path, content=b"s3cret").json() is True
        assert authed.get(path).status_code == 200

    with acl_target.http(token=None) as anon:
        resp = anon.get(path)
        assert resp.status_code == 403
        assert "Permission denied" in resp.text
        assert anon.put(path, content=b"x").status_code == 403

        resp = anon.get(path, headers={"X-Consul-Token": str(uuid.uuid4())})
        assert resp.status_code == 403
        assert "ACL not found" in resp.text

        # the other documented ways of presenting the token
        assert anon.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert anon.get(path, params={"token": token}).status_code == 200

    anonymous = acl_target.client(token=None)
    authorised = acl_target.client(token=token)
    try:
        with pytest.raises(consul.ACLPermissionDenied):
            anonymous.kv.get(kv_prefix + "guarded")
        assert authorised.kv.get(kv_prefix + "guarded")[1]["Value"] == b"s3cret"
    finally:
        authorised.kv.delete(kv_prefix, recurse=True)
        anonymous.http.session.close()
        authorised.http.session.close()


# --------------------------------------------------------------------------- #
# Catalog / health
# --------------------------------------------------------------------------- #


def _register_instance(scratch, http, node: str, service: str, tags: list[str], status: str, port: int) -> None:
    scratch.register(
        http,
        {
            "Node": node,
            "Address": "192.0.2.10",
            "Service": {"ID": f"{service}-{port}", "Service": service, "Tags": tags, "Port": port,
                        "Meta": {"version": "1"}},
            "Check": {"CheckID": f"{service}-{port}-check", "Name": "probe", "Status": status,
                      "ServiceID": f"{service}-{port}"},
        },
    )


def test_health_service_structure_and_passing_and_tag_filters(
    consul_http: httpx.Client, consul_client: consul.Consul, catalog_scratch
) -> None:
    svc = catalog_scratch.name("web")
    node1, node2 = catalog_scratch.name("n1"), catalog_scratch.name("n2")
    _register_instance(catalog_scratch, consul_http, node1, svc, ["primary", "v1"], "passing", 8001)
    _register_instance(catalog_scratch, consul_http, node2, svc, ["v1"], "critical", 8002)

    index, entries = consul_client.health.service(svc)
    assert int(index) >= 1
    assert sorted(e["Node"]["Node"] for e in entries) == [node1, node2]
    by_node = {e["Node"]["Node"]: e for e in entries}
    first = by_node[node1]
    assert set(first) >= {"Node", "Service", "Checks"}
    assert first["Node"]["Address"] == "192.0.2.10"
    assert first["Service"]["Service"] == svc
    assert first["Service"]["ID"] == f"{svc}-8001"
    assert first["Service"]["Port"] == 8001
    assert first["Service"]["Tags"] == ["primary", "v1"]
    assert first["Service"]["Meta"] == {"version": "1"}
    assert [(c["CheckID"], c["Status"], c["ServiceID"]) for c in first["Checks"]] == [
        (f"{svc}-8001-check", "passing", f"{svc}-8001")
    ]

    _, passing = consul_client.health.service(svc, passing=True)
    assert [e["Node"]["Node"] for e in passing] == [node1]

    _, tagged = consul_client.health.service(svc, tag="v1")
    assert len(tagged) == 2
    _, tagged = consul_client.health.service(svc, tag=["primary", "v1"])  # multiple tags are AND-ed
    assert [e["Node"]["Node"] for e in tagged] == [node1]
    _, tagged = consul_client.health.service(svc, tag=["primary", "missing"])
    assert tagged == []

    _, unknown = consul_client.health.service(catalog_scratch.name("nobody"))
    assert unknown == []


def test_health_blocking_query_wakes_on_check_status_change(
    consul_target: ConsulTarget, consul_http: httpx.Client, consul_client: consul.Consul, catalog_scratch
) -> None:
    svc = catalog_scratch.name("api")
    node = catalog_scratch.name("n")
    _register_instance(catalog_scratch, consul_http, node, svc, [], "passing", 9000)
    index, entries = consul_client.health.service(svc, passing=True)
    assert len(entries) == 1

    watcher = consul_target.client()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(watcher.health.service, svc, index=index, wait=LONG_WAIT, passing=True)
            ensure_parked(consul_target, fut)
            _register_instance(catalog_scratch, consul_http, node, svc, [], "critical", 9000)
            new_index, new_entries = fut.result(timeout=15)
    finally:
        watcher.http.session.close()
    assert new_entries == []
    assert int(new_index) > int(index)


def test_catalog_services_lists_tags_and_follows_deregistration(
    consul_target: ConsulTarget, consul_http: httpx.Client, consul_client: consul.Consul, catalog_scratch
) -> None:
    svc = catalog_scratch.name("db")
    node1, node2 = catalog_scratch.name("n1"), catalog_scratch.name("n2")
    _, services = consul_client.catalog.services()
    assert svc not in services

    _register_instance(catalog_scratch, consul_http, node1, svc, ["primary"], "passing", 5432)
    _register_instance(catalog_scratch, consul_http, node2, svc, ["replica"], "passing", 5433)
    index, services = consul_client.catalog.services()
    assert sorted(services[svc]) == ["primary", "replica"]  # union of the instances' tags, any order

    # a blocking catalog/services query sees the service disappear; the
    # index covers the whole catalog, so keep waiting past unrelated changes
    watcher = consul_target.client()
    deadline = time.monotonic() + 15
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(watcher.catalog.services, index=index, wait=LONG_WAIT)
            ensure_parked(consul_target, fut)
            for node in (node1, node2):
                assert consul_client.catalog.deregister(node) is True
            new_index, services = fut.result(timeout=15)
            while svc in services and time.monotonic() < deadline:
                new_index, services = watcher.catalog.services(index=new_index, wait=LONG_WAIT)
    finally:
        watcher.http.session.close()
    assert svc not in services
    assert int(new_index) > int(index)


# --------------------------------------------------------------------------- #
# Issue 17: ACL filtering, capped waits, index reset, root ?keys, ?passing
# --------------------------------------------------------------------------- #


def test_anonymous_folder_read_is_filtered_not_refused(acl_target: ConsulTarget, kv_prefix: str) -> None:
    """agent/consul/acl.go `filterDirEnt`: a recursive read drops what the token may not read (here,
    everything: default deny) and answers 404, not 403; the filtered-by-ACLs header is masked for the
    anonymous token (rpc.go `maskResultsFilteredByACLs`). One key is refused (kvs_endpoint.go `Get`)."""
    with acl_target.http() as authed:
        assert authed.put(f"/v1/kv/{kv_prefix}folder/a", content=b"1").json() is True
    with acl_target.http(token=None) as anon:
        resp = anon.get(f"/v1/kv/{kv_prefix}folder/", params={"recurse": ""})
        assert resp.status_code == 404, resp.text
        assert "X-Consul-Results-Filtered-By-ACLs" not in resp.headers
        assert int(resp.headers["X-Consul-Index"]) >= 1
        assert anon.get(f"/v1/kv/{kv_prefix}folder/a").status_code == 403


def test_anonymous_health_read_is_empty_not_refused(acl_target: ConsulTarget, catalog_scratch) -> None:
    """acl.go `filterCheckServiceNodes` needs node:read and service:read: the anonymous token of a
    default-deny cluster gets [] with 200, not 403."""
    service, node = catalog_scratch.name("hidden"), catalog_scratch.name("node")
    with acl_target.http() as authed:
        _register_instance(catalog_scratch, authed, node, service, [], "passing", 8080)
        assert len(authed.get(f"/v1/health/service/{service}").json()) == 1
    with acl_target.http(token=None) as anon:
        resp = anon.get(f"/v1/health/service/{service}")
        assert resp.status_code == 200 and resp.json() == []
        assert "X-Consul-Results-Filtered-By-ACLs" not in resp.headers


def _max_query_time(target: ConsulTarget) -> float | None:
    """The server's cap on ?wait: set on the emulator; read from CONSUL_MAX_QUERY_TIME (seconds) for
    a real Consul (the agent's `limits { max_query_time = "1s" }`), else skipped."""
    if target.emulator is not None:
        target.emulator.max_query_time = 1.0
        return 1.0
    value = os.environ.get("CONSUL_MAX_QUERY_TIME")
    return float(value) if value else None


def test_a_wait_beyond_max_query_time_is_capped_and_answers_the_same_index(
        consul_target: ConsulTarget, consul_http: httpx.Client, kv_prefix: str) -> None:
    """rpc.go `RPCQueryTimeout`: the wait is cut to max_query_time (plus jitter), and the reply does
    not say so: same index, unchanged data — not an early reply of a misbehaving server."""
    cap = _max_query_time(consul_target)
    if cap is None or cap > 30:
        pytest.skip("set CONSUL_MAX_QUERY_TIME to the agent's limits.max_query_time (at most 30 s)")
    try:
        consul_http.put(f"/v1/kv/{kv_prefix}capped", content=b"v")
        index = index_of(consul_http.get(f"/v1/kv/{kv_prefix}capped"))
        resp, took = timed(lambda: consul_http.get(f"/v1/kv/{kv_prefix}capped",
                                                   params={"index": index, "wait": "60s"}, timeout=90))
        assert index_of(resp) == index
        assert took < 60  # answered at the cap, well before the wait asked for
    finally:
        if consul_target.emulator is not None:
            consul_target.emulator.max_query_time = 600.0


def test_an_index_ahead_of_the_server_waits_then_answers_a_lower_index(
        consul_http: httpx.Client, kv_prefix: str) -> None:
    """After a snapshot restore or a data loss the index a client holds is ahead of the server's: the
    blocking query waits its wait out and answers the lower index — the client's cue to reset to 0
    (features/blocking.mdx, "Implementation details")."""
    consul_http.put(f"/v1/kv/{kv_prefix}reset", content=b"v")
    index = index_of(consul_http.get(f"/v1/kv/{kv_prefix}reset"))
    resp = consul_http.get(f"/v1/kv/{kv_prefix}reset", params={"index": index + 1_000_000, "wait": SHORT_WAIT})
    assert resp.status_code == 200 and index_of(resp) < index + 1_000_000


def test_root_keys_answers_a_list(consul_http: httpx.Client) -> None:
    """kvs_endpoint.go `KVSGetKeys`: no 404 for the root, an empty list at worst."""
    resp = consul_http.get("/v1/kv/", params={"keys": ""})
    assert resp.status_code == 200 and isinstance(resp.json(), list)


def test_passing_is_a_boolean_and_tags_are_anded_case_insensitively(consul_http: httpx.Client, catalog_scratch) -> None:
    """health_endpoint.go: ?passing is parsed as a boolean (?passing=false filters nothing); several
    ?tag= must all match, compared case-insensitively (state/catalog.go `serviceTagsFilter`)."""
    service = catalog_scratch.name("bool")
    _register_instance(catalog_scratch, consul_http, catalog_scratch.name("n1"), service, ["Blue", "v2"], "passing", 1)
    _register_instance(catalog_scratch, consul_http, catalog_scratch.name("n2"), service, ["blue"], "critical", 2)
    path = f"/v1/health/service/{service}"
    assert len(consul_http.get(path, params={"passing": "false"}).json()) == 2
    assert len(consul_http.get(path, params={"passing": ""}).json()) == 1
    assert consul_http.get(path, params={"passing": "maybe"}).status_code == 400
    both = consul_http.get(path, params=[("tag", "blue"), ("tag", "V2")]).json()
    assert [e["Service"]["Port"] for e in both] == [1]
