"""/v1/catalog/nodes and /v1/catalog/node/<name>; `?near` sorting and `?peer` for every catalog read.

Written from api-docs/catalog ("List Nodes", "Retrieve Map of Services for a Node"):

* `?near=<node>` sorts by estimated round-trip time from that node, `_agent` being the agent's own;
  here a node's "coordinate" is a position on a line (`emu.coordinates`), the distance their
  difference; a node without one sorts after those with one, in the order it had (Consul's
  `sortNodesByDistanceFrom` also leaves the order alone when the source node has no coordinate).
* `?peer=<name>`: what was imported from that cluster peer. The emulator has no peers: nothing.
* ACLs: a node needs node:read, its services service:read; what is dropped sets the
  filtered-by-ACLs header (agent/consul/acl.go, `filterNodes`, `filterNodeServices`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .server import Server
from .util import Response, one


class NodeEndpoints:
    """Mixed into ConsulEmulator."""

    def _near(self, query, items: list[Any], node_of: Callable[[Any], str]) -> list[Any]:
        near = one(query, "near")
        if not near:
            return items
        source = self._state.node_name if near == "_agent" else near
        if source not in self.coordinates:
            return items
        origin = self.coordinates[source]

        def distance(item: Any) -> float:
            position = self.coordinates.get(node_of(item))
            return abs(position - origin) if position is not None else float("inf")

        return sorted(items, key=distance)  # stable: ties keep their order

    def _catalog_nodes(self, server: Server, method: str, query, body: bytes) -> Response:
        state, access = self._state, self._access()

        def build(index: int) -> Response:
            nodes = [] if one(query, "peer") else [state.nodes[n] for n in sorted(state.nodes)]
            visible = [self._node_view(n) for n in nodes if access.can("node", n["Node"])]
            response = self._json(self._near(query, visible, lambda n: n["Node"]), query, index=index)
            response.headers.update(access.filtered_header(len(visible) < len(nodes)))
            return response

        return self._blocking(server, query, lambda: max(1, state.catalog_index), build)

    def _catalog_node(self, server: Server, method: str, query, body: bytes, node: str) -> Response:
        state, access = self._state, self._access()

        def build(index: int) -> Response:
            found = None if one(query, "peer") else state.nodes.get(node)
            if found is None:
                return self._json(None, query, index=index)
            if not access.can("node", node):
                response = self._json(None, query, index=index)
                response.headers.update(access.filtered_header(True))
                return response
            services = [svc for (n, _sid), svc in sorted(state.services.items()) if n == node]
            shown = {svc["ID"]: self._service_view(svc) for svc in services if access.can("service", svc["Service"])}
            response = self._json({"Node": self._node_view(found), "Services": shown}, query, index=index)
            response.headers.update(access.filtered_header(len(shown) < len(services)))
            return response

        return self._blocking(server, query, lambda: max(1, state.catalog_index), build)
