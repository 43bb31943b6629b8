"""/v1/health, /v1/catalog, /v1/agent and /v1/status handlers."""

from __future__ import annotations

import json
from typing import Any

from .server import Server
from .util import (
    DATACENTER,
    HEALTH_STATES,
    ApiError,
    Response,
    bool_param,
    expect,
    fields,
    one,
    str_list,
    str_map,
    weights,
)


class CatalogEndpoints:
    """Mixed into ConsulEmulator: the catalog, health, agent and status handlers."""

    @staticmethod
    def _node_view(node: dict[str, Any]) -> dict[str, Any]:
        return {k: node[k] for k in ("ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta",
                                     "CreateIndex", "ModifyIndex")}

    @staticmethod
    def _service_view(svc: dict[str, Any]) -> dict[str, Any]:
        view = {k: svc[k] for k in ("ID", "Service", "Tags", "Address", "Meta", "Port", "Weights",
                                    "EnableTagOverride", "CreateIndex", "ModifyIndex")}
        for key in ("TaggedAddresses", "Kind", "Proxy", "Connect"):
            if svc[key]:
                view[key] = svc[key]
        return view

    def _health_connect(self, server: Server, method: str, query, body: bytes, name: str) -> Response:
        return self._health_service(server, method, query, body, name, connect=True)

    def _health_service(self, server: Server, method: str, query, body: bytes, name: str,
                        connect: bool = False) -> Response:
        tags = [t for t in query.get("tag", []) if t]
        passing = bool_param(query, "passing")
        state = self._state
        access = self._access()

        def build(index: int) -> Response:
            entries = []
            instances = [] if one(query, "peer") else state.service_instances(name, tags, connect)
            # acl.go `filterCheckServiceNodes`: an instance is kept only with node:read on its node AND
            # service:read on the service; the rest are dropped, silently ([] rather than 403).
            visible = [(n, s) for n, s in instances if access.can("node", n["Node"]) and access.can("service", name)]
            by_node = state.checks_by_node()
            for node, svc in visible:
                checks = [dict(c) for c in by_node.get(node["Node"], []) if c["ServiceID"] in ("", svc["ID"])]
                # "?passing ... return only nodes with all checks in the passing state"
                if passing and any(c["Status"] != "passing" for c in checks):
                    continue
                entries.append({"Node": self._node_view(node), "Service": self._service_view(svc), "Checks": checks})
            response = self._json(self._near(query, entries, lambda e: e["Node"]["Node"]), query, index=index)
            response.headers.update(access.filtered_header(len(visible) < len(instances)))
            return response

        return self._blocking(server, query, lambda: state.service_report_index(name, connect), build)

    def _catalog_service(self, server: Server, method: str, query, body: bytes, name: str) -> Response:
        tags = [t for t in query.get("tag", []) if t]
        state = self._state
        access = self._access()

        def build(index: int) -> Response:
            entries = []
            instances = state.service_instances(name, tags)
            visible = [(n, s) for n, s in instances if access.can("node", n["Node"]) and access.can("service", name)]
            for node, svc in visible:
                entries.append(
                    {
                        "ID": node["ID"],
                        "Node": node["Node"],
                        "Address": node["Address"],
                        "Datacenter": node["Datacenter"],
                        "TaggedAddresses": node["TaggedAddresses"],
                        "NodeMeta": node["Meta"],
                        "ServiceID": svc["ID"],
                        "ServiceName": svc["Service"],
                        "ServiceTags": svc["Tags"],
                        "ServiceAddress": svc["Address"],
                        "ServiceTaggedAddresses": svc["TaggedAddresses"],
                        "ServiceWeights": svc["Weights"],
                        "ServiceMeta": svc["Meta"],
                        "ServicePort": svc["Port"],
                        "ServiceEnableTagOverride": svc["EnableTagOverride"],
                        "CreateIndex": svc["CreateIndex"],
                        "ModifyIndex": svc["ModifyIndex"],
                    }
                )
            response = self._json(entries, query, index=index)
            response.headers.update(access.filtered_header(len(visible) < len(instances)))
            return response

        return self._blocking(server, query, lambda: state.service_report_index(name), build)

    def _catalog_services(self, server: Server, method: str, query, body: bytes) -> Response:
        state = self._state
        access = self._access()

        def build(index: int) -> Response:
            tags: dict[str, set[str]] = {}
            for svc in [] if one(query, "peer") else state.services.values():
                tags.setdefault(svc["Service"], set()).update(svc["Tags"])
            # acl.go `filterServices`: the services the token may not read are left out.
            payload = {name: sorted(tags[name]) for name in sorted(tags) if access.can("service", name)}
            response = self._json(payload, query, index=index)
            response.headers.update(access.filtered_header(len(payload) < len(tags)))
            return response

        return self._blocking(server, query, lambda: max(1, state.services_table_index), build)

    def _catalog_datacenters(self, server: Server, method: str, query, body: bytes) -> Response:
        return self._json([DATACENTER], query)

    # -- /v1/catalog writes ------------------------------------------------- #

    @staticmethod
    def _decode(body: bytes) -> Any:
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError as err:
            raise ApiError(400, f"Request decode failed: {err}") from None

    @staticmethod
    def _check_dc(value: Any) -> None:
        if value and value != DATACENTER:
            raise ApiError(500, "No path to datacenter")

    _CHECK_FIELDS = ("Node", "CheckID", "ID", "Name", "Status", "Notes", "Output", "ServiceID", "Type", "Definition")

    def _normalise_check(self, raw: Any, *, snake: bool) -> dict[str, Any]:
        chk = fields(raw, self._CHECK_FIELDS, snake=snake, what="Check")
        chk["CheckID"] = expect(chk.get("CheckID") or chk.pop("ID", None), str, "CheckID", "")
        status = expect(chk.get("Status"), str, "Status", "")
        if status and status not in HEALTH_STATES:
            raise ApiError(400, f'Invalid check status: "{status}"')
        return chk

    def _catalog_register(self, server: Server, method: str, query, body: bytes) -> Response:
        self._access().require("node", self._state.node_name, "write")  # writes: a simplification
        payload = fields(
            self._decode(body),
            ("ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta", "Service", "Check", "Checks",
             "SkipNodeUpdate"),
        )
        self._check_dc(payload.get("Datacenter"))
        node = expect(payload.get("Node"), str, "Node", "")
        if not node:
            raise ApiError(400, "Must provide node")
        address = expect(payload.get("Address"), str, "Address", "")
        if not address and not payload.get("SkipNodeUpdate"):
            raise ApiError(400, "Must provide address")
        reg: dict[str, Any] = {
            "ID": expect(payload.get("ID"), str, "ID", ""),
            "Node": node,
            "Address": address,
            "TaggedAddresses": str_map(payload.get("TaggedAddresses"), "TaggedAddresses"),
            "NodeMeta": str_map(payload.get("NodeMeta"), "NodeMeta"),
            "SkipNodeUpdate": bool(payload.get("SkipNodeUpdate")),
        }
        if payload.get("Service") is not None:
            svc = fields(
                payload["Service"],
                ("ID", "Service", "Tags", "Address", "Meta", "Port", "Weights", "EnableTagOverride",
                 "TaggedAddresses", "Kind", "Proxy", "Connect"),
                what="Service",
            )
            name = expect(svc.get("Service"), str, "Service.Service", "")
            if not name:
                raise ApiError(400, "Must provide service name")
            reg["Service"] = {
                "ID": expect(svc.get("ID"), str, "Service.ID", "") or name,
                "Service": name,
                "Tags": str_list(svc.get("Tags"), "Service.Tags"),
                "Address": expect(svc.get("Address"), str, "Service.Address", ""),
                "Meta": str_map(svc.get("Meta"), "Service.Meta"),
                "Port": expect(svc.get("Port"), int, "Service.Port", 0),
                "Weights": weights(svc.get("Weights")),
                "EnableTagOverride": bool(svc.get("EnableTagOverride")),
                "TaggedAddresses": expect(svc.get("TaggedAddresses"), dict, "Service.TaggedAddresses", {}),
                "Kind": expect(svc.get("Kind"), str, "Service.Kind", ""),
                "Proxy": expect(svc.get("Proxy"), dict, "Service.Proxy", {}),
                "Connect": expect(svc.get("Connect"), dict, "Service.Connect", {}),
            }
        checks = []
        if payload.get("Check") is not None:
            checks.append(payload["Check"])
        checks.extend(expect(payload.get("Checks"), list, "Checks", []))
        reg["Checks"] = []
        for raw in checks:
            chk = self._normalise_check(raw, snake=False)
            chk["CheckID"] = chk["CheckID"] or expect(chk.get("Name"), str, "Name", "")
            if not chk["CheckID"]:
                raise ApiError(400, "Must provide check ID or name")
            if chk.get("Node") and chk["Node"] != node:
                raise ApiError(400, "Check node does not match node")
            reg["Checks"].append(chk)
        with self._state.cond:
            self._state.register(reg)
        return self._json(True, query)

    def _catalog_deregister(self, server: Server, method: str, query, body: bytes) -> Response:
        self._access().require("node", self._state.node_name, "write")  # writes: a simplification
        payload = fields(self._decode(body), ("Node", "Datacenter", "ServiceID", "CheckID"))
        self._check_dc(payload.get("Datacenter"))
        node = expect(payload.get("Node"), str, "Node", "")
        if not node:
            raise ApiError(400, "Must provide node")
        with self._state.cond:
            self._state.deregister(
                node,
                expect(payload.get("ServiceID"), str, "ServiceID", "") or None,
                expect(payload.get("CheckID"), str, "CheckID", "") or None,
            )
        return self._json(True, query)

    # -- /v1/agent (registers on the emulator's own node, synchronously) ---- #

    def _agent_service_register(self, server: Server, method: str, query, body: bytes) -> Response:
        self._access().require("node", self._state.node_name, "write")  # writes: a simplification
        svc = fields(
            self._decode(body),
            ("ID", "Name", "Tags", "Address", "Meta", "Port", "Weights", "EnableTagOverride", "TaggedAddresses",
             "Check", "Checks"),
            snake=True,
        )
        name = expect(svc.get("Name"), str, "Name", "")
        if not name:
            raise ApiError(400, "Missing service name")
        sid = expect(svc.get("ID"), str, "ID", "") or name
        raw_checks = ([svc["Check"]] if svc.get("Check") else []) + expect(svc.get("Checks"), list, "Checks", [])
        checks = []
        for i, raw in enumerate(raw_checks, start=1):
            chk = self._normalise_check(raw, snake=True)
            if not chk["CheckID"]:
                chk["CheckID"] = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{i}"
            chk.setdefault("Name", f"Service '{name}' check")
            chk["ServiceID"] = sid
            checks.append(chk)
        state = self._state
        reg = {
            "Node": state.node_name,
            "Address": state.node_address,
            "SkipNodeUpdate": True,
            "Service": {
                "ID": sid,
                "Service": name,
                "Tags": str_list(svc.get("Tags"), "Tags"),
                "Address": expect(svc.get("Address"), str, "Address", ""),
                "Meta": str_map(svc.get("Meta"), "Meta"),
                "Port": expect(svc.get("Port"), int, "Port", 0),
                "Weights": weights(svc.get("Weights"), snake=True),
                "EnableTagOverride": bool(svc.get("EnableTagOverride")),
                "TaggedAddresses": expect(svc.get("TaggedAddresses"), dict, "TaggedAddresses", {}),
            },
            "Checks": checks,
        }
        with state.cond:
            if "replace-existing-checks" in query:
                keep = {c["CheckID"] for c in checks}
                for (n, cid), c in list(state.checks.items()):
                    if n == state.node_name and c["ServiceID"] == sid and cid not in keep:
                        state.deregister(n, None, cid)
            state.register(reg)
        return Response(200, b"", None)

    def _agent_service_deregister(self, server: Server, method: str, query, body: bytes, sid: str) -> Response:
        self._access().require("node", self._state.node_name, "write")  # writes: a simplification
        # "If the service does not exist, no action is taken."
        state = self._state
        with state.cond:
            if (state.node_name, sid) in state.services:
                state.deregister(state.node_name, sid, None)
        return Response(200, b"", None)

    def _agent_check(self, server: Server, method: str, query, body: bytes, op: str, cid: str) -> Response:
        self._access().require("node", self._state.node_name, "write")  # writes: a simplification
        if op == "update":
            upd = fields(self._decode(body), ("Status", "Output"))
            status = expect(upd.get("Status"), str, "Status", "")
            if status not in HEALTH_STATES:
                raise ApiError(400, f'Invalid check status: "{status}"')
            output = expect(upd.get("Output"), str, "Output", "")
        else:
            status = {"pass": "passing", "warn": "warning", "fail": "critical"}[op]
            output = one(query, "note") or ""
        state = self._state
        with state.cond:
            if not state.update_check(state.node_name, cid, status, output):
                raise ApiError(404, f'Unknown check ID "{cid}". '
                               "Ensure that the check ID is passed, not the check name.")
        return Response(200, b"", None)

    def _agent_self(self, server: Server, method: str, query, body: bytes) -> Response:
        self._access().require("node", self._state.node_name)  # agent:read, approximately
        state = self._state
        return self._json(
            {
                "Config": {
                    "Datacenter": DATACENTER,
                    "NodeName": state.node_name,
                    "NodeID": state.node_id,
                    "Server": True,
                    "Version": "emulator",
                },
                "Member": {"Name": state.node_name, "Addr": state.node_address, "Port": 8301, "Status": 1},
            },
            query,
        )

    # -- /v1/status --------------------------------------------------------- #

    def _status_leader(self, server: Server, method: str, query, body: bytes) -> Response:
        return self._json(self.leader or "", query)

    def _status_peers(self, server: Server, method: str, query, body: bytes) -> Response:
        return self._json([self.leader] if self.leader else [], query)
