"""ACLs as Consul applies them to reads: a single resource is refused (403), a list is filtered.

Consul resolves the token first: an unknown one is 403 "ACL not found" (acl.ErrNotFound, answered
as 403 by agent/http.go). A read of one KV key needs key:read on it, else 403 "Permission denied"
(agent/consul/kvs_endpoint.go, `Get`). A read of many things drops, silently, what the token may
not read (agent/consul/acl.go, `filterDirEnt`, `filterCheckServiceNodes` — which needs node:read
*and* service:read —, `filterServices`) and sets QueryMeta.ResultsFilteredByACLs, sent as
`X-Consul-Results-Filtered-By-ACLs: true` since Consul 1.11 — but only when a token was presented
(agent/consul/rpc.go, `maskResultsFilteredByACLs`). With `acl.enable_key_list_policy` a recursive
read needs key:list on the prefix, else 403 (kvs_endpoint.go, `List`/`ListKeys`).

Rules are matched as `key_prefix` / `service_prefix` / `node_prefix` rules are: the longest
matching prefix wins; no match falls back to the default policy, `deny` here
(acl/policy_authorizer.go). Levels order as Consul's: deny < read < list < write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .util import ApiError

LEVELS = {"deny": 0, "read": 1, "list": 2, "write": 3}
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"  # Consul's built-in anonymous token


@dataclass
class Policy:
    """One token's rules: resource kind ("key", "service", "node") → {prefix: level}."""

    key: dict[str, str] = field(default_factory=dict)
    service: dict[str, str] = field(default_factory=dict)
    node: dict[str, str] = field(default_factory=dict)

    def level(self, kind: str, name: str) -> int:
        rules: dict[str, str] = getattr(self, kind)
        best = max((p for p in rules if name.startswith(p)), key=len, default=None)
        return LEVELS[rules[best]] if best is not None else 0


MANAGEMENT = Policy(key={"": "write"}, service={"": "write"}, node={"": "write"})


@dataclass
class Access:
    """What the current request may do. `policy` None: ACLs are disabled."""

    policy: Policy | None = None
    token: str = ""  # the secret presented; "" = the anonymous token
    list_policy: bool = False  # acl.enable_key_list_policy
    accessor: str = ANONYMOUS_ACCESSOR

    def can(self, kind: str, name: str, level: str = "read") -> bool:
        return self.policy is None or self.policy.level(kind, name) >= LEVELS[level]

    def require(self, kind: str, name: str, level: str = "read") -> None:
        if not self.can(kind, name, level):
            # The text of Consul >= 1.11 (acl/errors.go, PermissionDeniedByACL).
            raise ApiError(403, f"Permission denied: token with AccessorID '{self.accessor}' lacks permission "
                                f"'{kind}:{level}' on \"{name}\"")

    def filtered_header(self, dropped: bool) -> dict[str, str]:
        """The header Consul sets when it dropped entries, masked for the anonymous token."""
        return {"X-Consul-Results-Filtered-By-ACLs": "true"} if dropped and self.token else {}
