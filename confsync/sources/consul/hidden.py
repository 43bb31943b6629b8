"""Answers that may hide entries: Consul drops from a list what the token may not read, silently
(agent/consul/acl.go), and says so only to a real token (`X-Consul-Results-Filtered-By-ACLs`,
Consul >= 1.11); to the anonymous token it says nothing. An empty answer that may be such a
filtering is missing data, never an empty config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confsync.sources import ABSENT, Dep
from confsync.sources.consul.client import Answer
from confsync.sources.consul.kv import Snapshot

ACL_HIDDEN = "hidden by ACLs"

# What each kind of read needs to see everything (api-docs/api-structure, ACLs of each endpoint).
_GRANTS = {
    "kv": "key:read on the keys",
    "services": "service:read on the services",
    "nodes": "node:read on the nodes",
    "node": "node:read on the node and service:read on its services",
}


@dataclass(frozen=True)
class View:
    """A KV poll's answer as its dependencies see it."""

    value: Snapshot
    hidden: str | None


def hidden(dep: Dep, answer: Answer, token: str | None) -> str | None:
    """Why an empty part of `answer` may be entries hidden by ACLs rather than absent: with no token
    and a default-deny policy an empty answer proves nothing either."""
    grant = _GRANTS.get(dep.kind, f"service:read on {dep.path!r} and node:read on its nodes")
    if answer.filtered:
        return f"{ACL_HIDDEN}: Consul left out of its answer entries the token may not read (grant {grant})"
    if token is None and answer.deny_by_default:
        return (f"{ACL_HIDDEN}?: no ACL token is configured and Consul's default ACL policy is deny, so Consul "
                f"hides from the anonymous token what it may not read (set token_file or CONSUL_HTTP_TOKEN, "
                f"or grant the anonymous token {grant})")
    return None


def empty(value: Any) -> bool:
    """Nothing a template could use: an absent key, an empty folder, no instances, no services."""
    return value is ABSENT or value in ({}, [])
