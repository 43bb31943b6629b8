"""What templates see of the consul source: `consul.key/tree/ls` (the KV store), the catalog
(`service`, `services`, `node`, `nodes`, `datacenters`) and Connect (`ca_roots`, `ca_leaf`), each call
one `Dep` whose parameters are checked here, so that a typo is a template error naming the call."""

from __future__ import annotations

from typing import Any

from confsync.sources import ABSENT, Dep, Functions

# consul-template's health filters (dependency/health_service.go): an instance's status is the
# aggregate of its checks (api.HealthChecks.AggregatedStatus); "any" keeps every instance.
STATES = ("passing", "warning", "critical", "maintenance")
# The per-call scope parameters, as consul-template's `@dc`, `~near`, `?ns=`, `?partition=`, `?peer=`.
SCOPE = ("dc", "ns", "partition", "peer")
CATALOG_KINDS = ("service", "services", "node", "nodes", "datacenters")
CONNECT_KINDS = ("ca_roots", "ca_leaf")


class ConsulFunctions(Functions):
    """`consul.key/tree/ls` read the KV store; the others the catalog and Connect's CA."""

    def key(self, path: str, default: Any = ABSENT, dc: str | None = None, ns: str | None = None,
            partition: str | None = None) -> Any:
        """A KV value; `dc`, `ns`, `partition` read another datacenter's (namespace's, partition's)
        store, as consul-template's `key "path@dc"` and `?ns=` / `?partition=`."""
        return self._lookup(self._dep("key", path, **self._scope("key", dc=dc, ns=ns, partition=partition)), default)

    def tree(self, prefix: str = "", dc: str | None = None, ns: str | None = None,
             partition: str | None = None) -> Any:
        return self._lookup(self._dep("tree", prefix, **self._scope("tree", dc=dc, ns=ns, partition=partition)),
                            ABSENT)

    def ls(self, prefix: str = "", dc: str | None = None, ns: str | None = None, partition: str | None = None) -> Any:
        return self._lookup(self._dep("ls", prefix, **self._scope("ls", dc=dc, ns=ns, partition=partition)), ABSENT)

    def service(self, name: str, tag: str | list[str] | None = None, state: str | list[str] | None = None,
                passing: bool | None = None, near: str | None = None, dc: str | None = None, ns: str | None = None,
                partition: str | None = None, peer: str | None = None, connect: bool = False) -> Any:
        """The instances of a service, each a dict of every field of consul-template's HealthService;
        with `connect`, what serves it over Connect (its sidecar proxies, its native instances), as
        consul-template's `connect "name"`."""
        states = _states(self._source, state, passing)
        tags = _tags(self._source, tag)
        scope: dict[str, Any] = self._scope("service", dc=dc, ns=ns, partition=partition, peer=peer, near=near)
        if connect:
            scope["connect"] = True
        if tags:
            scope["tag"] = tags
        if states != ("passing",):  # the default stays out of the dependency's name in messages
            scope["state"] = states
        return self._lookup(self._dep("service", name, **scope), ABSENT)

    def services(self, dc: str | None = None, ns: str | None = None, partition: str | None = None,
                 peer: str | None = None) -> Any:
        """Every service of the datacenter → its tags."""
        scope = self._scope("services", dc=dc, ns=ns, partition=partition, peer=peer)
        return self._lookup(Dep(self._source, "services", "", tuple(sorted(scope.items()))), ABSENT)

    def node(self, name: str = "", dc: str | None = None, partition: str | None = None,
             peer: str | None = None, default: Any = ABSENT) -> Any:
        """A node and its services; the local agent's node when no name is given."""
        scope = self._scope("node", dc=dc, partition=partition, peer=peer)
        dep = Dep(self._source, "node", self._dep("node", name).path, tuple(sorted(scope.items())))
        return self._lookup(dep, default)

    def nodes(self, near: str | None = None, dc: str | None = None, partition: str | None = None,
              peer: str | None = None) -> Any:
        """Every node of the datacenter."""
        scope = self._scope("nodes", dc=dc, partition=partition, peer=peer, near=near)
        return self._lookup(Dep(self._source, "nodes", "", tuple(sorted(scope.items()))), ABSENT)

    def datacenters(self) -> Any:
        """The names of the known datacenters, sorted."""
        return self._lookup(Dep(self._source, "datacenters", ""), ABSENT)

    def ca_roots(self) -> Any:
        """Connect's CA root certificates."""
        return self._lookup(Dep(self._source, "ca_roots", ""), ABSENT)

    def ca_leaf(self, service: str) -> Any:
        """A Connect leaf certificate (and its private key) for `service`, renewed by the agent."""
        return self._lookup(self._dep("ca_leaf", service), ABSENT)

    def _scope(self, kind: str, **params: Any) -> dict[str, str]:
        scope = {k: v for k, v in params.items() if v is not None}
        for k, v in scope.items():
            if not isinstance(v, str) or not v or any(ord(c) < 32 or c == "\x7f" for c in v):
                raise ValueError(f"{self._source}.{kind}(): {k} must be a non-empty string without control "
                                 f"characters, got {v!r}")
        return scope


def _states(source: str, state: str | list[str] | None, passing: bool | None) -> tuple[str, ...]:
    """`state=` (one or several of STATES, or "any") or the older `passing=` → a sorted tuple."""
    if state is not None and passing is not None:
        raise TypeError(f"{source}.service(): give state= or passing=, not both")
    if state is None:
        return ("any",) if passing is False else ("passing",)
    states = [state] if isinstance(state, str) else state
    if not isinstance(states, (list, tuple)) or not states or not all(isinstance(s, str) for s in states):
        raise TypeError(f"{source}.service(): state= expects a state or a list of states")
    unknown = sorted(set(states) - {*STATES, "any"})
    if unknown:
        raise ValueError(f"{source}.service(): unknown state {unknown[0]!r} (known: {', '.join(STATES)}, any)")
    if "any" in states and len(set(states)) > 1:
        raise ValueError(f"{source}.service(): 'any' cannot be combined with other states")
    return tuple(sorted(set(states)))


def _tags(source: str, tag: str | list[str] | None) -> tuple[str, ...]:
    """One tag or several (Consul ANDs them); sorted, so that the same filter is one watch."""
    tags = [] if tag is None else [tag] if isinstance(tag, str) else tag
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) and t for t in tags):
        raise TypeError(f"{source}.service() expects tag to be a string or a list of strings, got {tag!r}")
    return tuple(sorted(set(tags)))


def bad_dep(dep: Dep) -> str | None:
    """Why the consul source cannot serve `dep` (a name it cannot look up), or None."""
    if dep.kind not in ("key", "tree", "ls", *CATALOG_KINDS, *CONNECT_KINDS):
        return f"the consul source has no {dep.kind}()"
    if dep.kind in ("key", "service", "ca_leaf") and not dep.path:
        return f"{dep.kind}() needs a name"
    if any(ord(c) < 32 or c == "\x7f" for c in dep.path):
        return "the name contains a control character"
    return None
