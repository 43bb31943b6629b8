"""The emulator's state store: KV, nodes, services, checks, and the indexes blocking queries wait on."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from .util import DATACENTER, ApiError


class State:
    """Everything a Consul server would keep in its raft-backed state store.

    All access happens with ``cond`` held; every write calls ``notify_all`` so
    that blocking queries re-evaluate their resource index.
    """

    def __init__(self, node_name: str, node_address: str) -> None:
        self.cond = threading.Condition()
        self.node_name = node_name
        self.node_address = node_address
        self.node_id = str(uuid.uuid4())
        self.blocked = 0
        with self.cond:
            self.wipe()

    # -- lifecycle ---------------------------------------------------------- #

    def wipe(self) -> None:
        self.index = 0  # the raft index: +1 for every write request applied
        self.kv: dict[str, dict[str, Any]] = {}
        self.kv_tombstones: dict[str, int] = {}  # key -> index of the delete
        self.kv_table_index = 0
        self.nodes: dict[str, dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}  # (node, service id)
        self.checks: dict[tuple[str, str], dict[str, Any]] = {}  # (node, check id)
        self.service_index: dict[str, int] = {}  # service name -> last change to its instances/health
        self.services_table_index = 0  # last change to any service registration
        self.connect_proxies: dict[str, str] = {}  # proxy service name → the service it fronts (kept)
        self.catalog_index = 0  # last change to anything in the catalog
        self._bootstrap()

    def _bootstrap(self) -> None:
        # A real server registers itself: its node (with the serfHealth check)
        # and the "consul" service.  This is the first raft entry.
        self.register(
            {
                "ID": self.node_id,
                "Node": self.node_name,
                "Address": self.node_address,
                "Service": {"ID": "consul", "Service": "consul", "Port": 8300},
                "Checks": [
                    {
                        "CheckID": "serfHealth",
                        "Name": "Serf Health Status",
                        "Status": "passing",
                        "Output": "Agent alive and reachable",
                    }
                ],
            }
        )

    def next_index(self) -> int:
        self.index += 1
        self.cond.notify_all()
        return self.index

    # -- KV ----------------------------------------------------------------- #

    def kv_put(self, key: str, value: bytes, flags: int, cas: int | None) -> bool:
        idx = self.next_index()
        existing = self.kv.get(key)
        if cas is not None:
            if cas == 0 and existing is not None:
                return False
            if cas != 0 and (existing is None or existing["ModifyIndex"] != cas):
                return False
        self.kv[key] = {
            "CreateIndex": existing["CreateIndex"] if existing else idx,
            "ModifyIndex": idx,
            "LockIndex": existing["LockIndex"] if existing else 0,
            "Flags": flags,
            "Value": value,
            "Session": existing["Session"] if existing else "",
        }
        self.kv_tombstones.pop(key, None)
        self.kv_table_index = idx
        return True

    def _kv_remove(self, key: str, idx: int) -> None:
        del self.kv[key]
        self.kv_tombstones[key] = idx
        self.kv_table_index = idx

    def kv_delete(self, key: str, recurse: bool, cas: int | None) -> bool:
        idx = self.next_index()
        if recurse:
            for k in [k for k in self.kv if k.startswith(key)]:
                self._kv_remove(k, idx)
            return True
        existing = self.kv.get(key)
        if cas is not None:
            # "Unlike PUT, the index must be greater than 0 for Consul to take
            # any action: a 0 index will not delete the key."
            if existing is None:
                return True
            if cas == 0 or existing["ModifyIndex"] != cas:
                return False
        if existing is not None:
            self._kv_remove(key, idx)
        return True

    def kv_watch_index(self, key: str, prefix: bool) -> int:
        """Index of the last write that affected this (key | prefix) result.

        Deletes are remembered as tombstones, so removing the entry with the
        highest ModifyIndex still moves the index forward (until tombstones
        are reaped -- see ``ConsulEmulator.reap_tombstones``).
        """
        if not prefix:
            entry = self.kv.get(key)
            return entry["ModifyIndex"] if entry else self.kv_tombstones.get(key, 0)
        best = 0
        for k, e in self.kv.items():
            if k.startswith(key) and e["ModifyIndex"] > best:
                best = e["ModifyIndex"]
        for k, i in self.kv_tombstones.items():
            if k.startswith(key) and i > best:
                best = i
        return best

    # -- catalog ------------------------------------------------------------ #

    def _touch_node_services(self, node: str, idx: int) -> None:
        for (n, _sid), svc in self.services.items():
            if n == node:
                self.service_index[svc["Service"]] = idx

    def register(self, payload: dict[str, Any]) -> None:
        """Apply a /catalog/register body (already field-normalised)."""
        node_name = payload["Node"]
        svc_def = payload.get("Service")
        for chk in payload.get("Checks") or []:
            sid = chk.get("ServiceID") or ""
            if sid and (node_name, sid) not in self.services and not (svc_def and svc_def["ID"] == sid):
                raise ApiError(500, "Missing service registration")
        idx = self.next_index()
        changed_names: set[str] = set()
        node_changed = False
        services_changed = False

        node = self.nodes.get(node_name)
        if node is None or not payload.get("SkipNodeUpdate"):
            new_node = {
                "ID": payload.get("ID") or (node["ID"] if node else ""),
                "Node": node_name,
                "Address": payload["Address"] if payload.get("Address") else (node["Address"] if node else ""),
                "Datacenter": DATACENTER,
                "TaggedAddresses": payload.get("TaggedAddresses") or {},
                "Meta": payload.get("NodeMeta") or {},
            }
            if node is None or {k: node[k] for k in new_node} != new_node:
                new_node["CreateIndex"] = node["CreateIndex"] if node else idx
                new_node["ModifyIndex"] = idx
                self.nodes[node_name] = new_node
                node_changed = True

        if svc_def is not None:
            sid = svc_def["ID"]
            old = self.services.get((node_name, sid))
            new = {
                "ID": sid,
                "Service": svc_def["Service"],
                "Tags": svc_def.get("Tags") or [],
                "Address": svc_def.get("Address") or "",
                "Meta": svc_def.get("Meta") or {},
                "Port": svc_def.get("Port") or 0,
                "Weights": svc_def.get("Weights") or {"Passing": 1, "Warning": 1},
                "EnableTagOverride": bool(svc_def.get("EnableTagOverride")),
                "TaggedAddresses": svc_def.get("TaggedAddresses") or {},
                "Kind": svc_def.get("Kind") or "",
                "Proxy": svc_def.get("Proxy") or {},
                "Connect": svc_def.get("Connect") or {},
            }
            destination = new["Proxy"].get("DestinationServiceName") if new["Kind"] == "connect-proxy" else None
            if destination:
                self.connect_proxies[new["Service"]] = destination
            if old is None or {k: old[k] for k in new} != new:
                new["CreateIndex"] = old["CreateIndex"] if old else idx
                new["ModifyIndex"] = idx
                self.services[(node_name, sid)] = new
                services_changed = True
                changed_names.add(new["Service"])
                if old is not None:
                    changed_names.add(old["Service"])
                    # keep ServiceName/ServiceTags of its checks in step
                    for c in self.checks.values():
                        if c["Node"] == node_name and c["ServiceID"] == sid:
                            c["ServiceName"], c["ServiceTags"] = new["Service"], list(new["Tags"])
                            c["ModifyIndex"] = idx

        for chk in payload.get("Checks") or []:
            service_id = chk.get("ServiceID") or ""
            svc = self.services.get((node_name, service_id)) if service_id else None
            old = self.checks.get((node_name, chk["CheckID"]))
            new = {
                "Node": node_name,
                "CheckID": chk["CheckID"],
                "Name": chk.get("Name") or chk["CheckID"],
                "Status": chk.get("Status") or "critical",
                "Notes": chk.get("Notes") or "",
                "Output": chk.get("Output") or "",
                "ServiceID": service_id,
                "ServiceName": svc["Service"] if svc else "",
                "ServiceTags": list(svc["Tags"]) if svc else [],
                "Type": chk.get("Type") or "",
                "Definition": chk.get("Definition") or {},
            }
            if old is None or {k: old[k] for k in new} != new:
                new["CreateIndex"] = old["CreateIndex"] if old else idx
                new["ModifyIndex"] = idx
                self.checks[(node_name, chk["CheckID"])] = new
                if svc is not None:
                    changed_names.add(svc["Service"])
                else:
                    node_changed = True  # a node-level check affects every service on the node
                if old is not None and old["ServiceID"] and old["ServiceID"] != service_id:
                    old_svc = self.services.get((node_name, old["ServiceID"]))
                    if old_svc:
                        changed_names.add(old_svc["Service"])

        self._record_catalog_change(idx, node_name, node_changed, services_changed, changed_names)

    def _record_catalog_change(
        self, idx: int, node_name: str, node_changed: bool, services_changed: bool, names: set[str]
    ) -> None:
        if node_changed:
            self._touch_node_services(node_name, idx)
        for name in names:
            self.service_index[name] = idx
        if services_changed:
            self.services_table_index = idx
        if node_changed or services_changed or names:
            self.catalog_index = idx

    def deregister(self, node_name: str, service_id: str | None, check_id: str | None) -> None:
        idx = self.next_index()
        if node_name not in self.nodes:
            return
        names: set[str] = set()
        node_changed = services_changed = False
        if service_id:
            svc = self.services.pop((node_name, service_id), None)
            if svc is not None:
                services_changed = True
                names.add(svc["Service"])
                for key in [k for k, c in self.checks.items() if k[0] == node_name and c["ServiceID"] == service_id]:
                    del self.checks[key]
        elif check_id:
            chk = self.checks.pop((node_name, check_id), None)
            if chk is not None:
                if chk["ServiceID"]:
                    svc = self.services.get((node_name, chk["ServiceID"]))
                    if svc:
                        names.add(svc["Service"])
                else:
                    node_changed = True
        else:
            self._touch_node_services(node_name, idx)
            for key in [k for k in self.services if k[0] == node_name]:
                names.add(self.services.pop(key)["Service"])
                services_changed = True
            for key in [k for k in self.checks if k[0] == node_name]:
                del self.checks[key]
            del self.nodes[node_name]
            self.catalog_index = idx
        self._record_catalog_change(idx, node_name, node_changed, services_changed, names)

    def update_check(self, node_name: str, check_id: str, status: str, output: str | None) -> bool:
        chk = self.checks.get((node_name, check_id))
        if chk is None:
            return False
        idx = self.next_index()
        new_output = chk["Output"] if output is None else output
        if chk["Status"] == status and chk["Output"] == new_output:
            return True
        chk["Status"], chk["Output"], chk["ModifyIndex"] = status, new_output, idx
        names: set[str] = set()
        if chk["ServiceID"]:
            svc = self.services.get((node_name, chk["ServiceID"]))
            if svc:
                names.add(svc["Service"])
        self._record_catalog_change(idx, node_name, not chk["ServiceID"], False, names)
        return True

    # -- catalog views ------------------------------------------------------ #

    @staticmethod
    def _has_tags(svc: dict[str, Any], tags: list[str]) -> bool:
        # Multiple ?tag= are AND-ed; Consul compares tags case-insensitively.
        have = {t.lower() for t in svc["Tags"]}
        return all(t.lower() in have for t in tags)

    def service_instances(self, name: str, tags: list[str], connect: bool = False) -> list[tuple[dict, dict]]:
        """The instances of `name`; with `connect`, what serves it over Connect: its sidecar proxies
        (Kind connect-proxy, Proxy.DestinationServiceName) and its Connect-native instances."""
        out = []
        for (node_name, _sid), svc in sorted(self.services.items()):
            if connect:
                serves = (svc["Kind"] == "connect-proxy" and svc["Proxy"].get("DestinationServiceName") == name) or (
                    svc["Service"] == name and svc["Connect"].get("Native"))
            else:
                serves = svc["Service"] == name
            if serves and self._has_tags(svc, tags):
                out.append((self.nodes[node_name], svc))
        return out

    def checks_by_node(self) -> dict[str, list[dict[str, Any]]]:
        """Every node's checks, in check ID order (one pass, for a health read of many instances)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for (n, _cid), c in sorted(self.checks.items()):
            out.setdefault(n, []).append(c)
        return out

    def service_report_index(self, name: str, connect: bool = False) -> int:
        """X-Consul-Index for one service: the last change to its instances or
        their health (with `connect`, also to its proxies'); for a service never
        seen, the last catalog change."""
        names = [name] + ([p for p, d in self.connect_proxies.items() if d == name] if connect else [])
        watch = max(self.service_index.get(n, 0) for n in names)
        return watch if watch > 0 else max(1, self.catalog_index)
