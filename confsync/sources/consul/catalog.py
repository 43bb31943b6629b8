"""The catalog's reads: which endpoint each catalog dependency asks, and the plain dicts and lists
templates get from its reply.

Field names are consul-template's (HealthService, Node, NodeDetail, CatalogSnippet) in snake case,
every one a template can touch. Lists are sorted as consul-template sorts them (instances by node
then id, nodes by name then address), except with `near`, whose order is Consul's (by round-trip time).
"""

from __future__ import annotations

from typing import Any

from confsync.sources import ABSENT, Dep

# The checks Consul adds for maintenance mode (api/agent.go, NodeMaint and ServiceMaintPrefix).
NODE_MAINT, SERVICE_MAINT = "_node_maintenance", "_service_maintenance:"


def request(dep: Dep, node_name: str) -> tuple[str, list[tuple[str, str]]]:
    """The path and the query of a catalog dependency (`node_name`: a node() without a name)."""
    args = dict(dep.params)
    params: list[tuple[str, str]] = [(k, args[k]) for k in ("dc", "ns", "partition", "peer", "near") if k in args]
    # The name goes into the path as it is: py-consul quotes all but "/" and ":", and Consul takes the
    # whole rest of the path as the name (agent/health_endpoint.go), so "a/b" is the service "a/b".
    if dep.kind == "service":
        if args.get("state", ("passing",)) == ("passing",):
            params.append(("passing", "1"))  # the others are filtered here, on the aggregated status
        params += [("tag", t) for t in args.get("tag", ())]
        return f"/v1/health/{'connect' if args.get('connect') else 'service'}/{dep.path}", params
    if dep.kind == "node":
        return f"/v1/catalog/node/{dep.path or node_name}", params
    return {"services": "/v1/catalog/services", "nodes": "/v1/catalog/nodes",
            "datacenters": "/v1/catalog/datacenters"}[dep.kind], params


def value(dep: Dep, data: Any) -> Any:
    if dep.kind == "service":
        wanted = dict(dep.params).get("state", ("passing",))
        instances = [_instance(e) for e in data or []]
        instances = [i for i in instances if "any" in wanted or i["status"] in wanted]
        return instances if "near" in dict(dep.params) else sorted(instances, key=lambda i: (i["node"], i["id"]))
    if dep.kind == "services":
        return {name: sorted(tags or []) for name, tags in sorted((data or {}).items())}
    if dep.kind == "nodes":
        nodes = [_node(n) for n in data or []]
        return nodes if "near" in dict(dep.params) else sorted(nodes, key=lambda n: (n["node"], n["address"]))
    if dep.kind == "node":
        if not data or not data.get("Node"):
            return ABSENT
        services = [_node_service(s) for s in (data.get("Services") or {}).values()]
        return {"node": _node(data["Node"]), "services": sorted(services, key=lambda s: (s["name"], s["id"]))}
    return sorted(data or [])  # datacenters


def status(checks: list[dict[str, Any]]) -> str:
    """The aggregated status of an instance's checks (api.HealthChecks.AggregatedStatus): maintenance,
    then critical, warning, passing; no check at all is passing; an unknown status is ""."""
    seen = set()
    for check in checks:
        cid = check.get("CheckID") or ""
        if cid == NODE_MAINT or cid.startswith(SERVICE_MAINT):
            seen.add("maintenance")
        elif check.get("Status") in ("passing", "warning", "critical"):
            seen.add(check["Status"])
        else:
            return ""
    return next((s for s in ("maintenance", "critical", "warning") if s in seen), "passing")


def _instance(entry: dict[str, Any]) -> dict[str, Any]:
    node, svc = entry.get("Node") or {}, entry.get("Service") or {}
    checks = list(entry.get("Checks") or [])
    return {
        "node": node.get("Node") or "",
        "node_id": node.get("ID") or "",
        "node_address": node.get("Address") or "",
        "node_datacenter": node.get("Datacenter") or "",
        "node_tagged_addresses": dict(node.get("TaggedAddresses") or {}),
        "node_meta": dict(node.get("Meta") or {}),
        "address": svc.get("Address") or node.get("Address") or "",
        "port": svc.get("Port") or 0,
        "id": svc.get("ID") or "",
        "name": svc.get("Service") or "",
        "tags": sorted(svc.get("Tags") or []),
        "meta": dict(svc.get("Meta") or {}),
        "tagged_addresses": {k: {"address": (v or {}).get("Address") or "", "port": (v or {}).get("Port") or 0}
                             for k, v in (svc.get("TaggedAddresses") or {}).items()},
        "weights": {"passing": (svc.get("Weights") or {}).get("Passing", 1),
                    "warning": (svc.get("Weights") or {}).get("Warning", 1)},
        "namespace": svc.get("Namespace") or "",
        "partition": svc.get("Partition") or node.get("Partition") or "",
        "peer": svc.get("PeerName") or node.get("PeerName") or "",
        "status": status(checks),
        "checks": [_check(c) for c in checks],
    }


def _check(check: dict[str, Any]) -> dict[str, Any]:
    return {"node": check.get("Node") or "", "check_id": check.get("CheckID") or "", "name": check.get("Name") or "",
            "status": check.get("Status") or "", "notes": check.get("Notes") or "", "output": check.get("Output") or "",
            "service_id": check.get("ServiceID") or "", "service_name": check.get("ServiceName") or "",
            "service_tags": list(check.get("ServiceTags") or []), "type": check.get("Type") or ""}


def _node(node: dict[str, Any]) -> dict[str, Any]:
    return {"id": node.get("ID") or "", "node": node.get("Node") or "", "address": node.get("Address") or "",
            "datacenter": node.get("Datacenter") or "", "tagged_addresses": dict(node.get("TaggedAddresses") or {}),
            "meta": dict(node.get("Meta") or {}), "partition": node.get("Partition") or ""}


def _node_service(svc: dict[str, Any]) -> dict[str, Any]:
    return {"id": svc.get("ID") or "", "name": svc.get("Service") or "", "tags": sorted(svc.get("Tags") or []),
            "meta": dict(svc.get("Meta") or {}), "port": svc.get("Port") or 0, "address": svc.get("Address") or "",
            "namespace": svc.get("Namespace") or ""}
