"""Sources: one module per backend behind one small interface, and a lazy registry.

A source is told which dependencies to watch (`watch`/`unwatch`) and pushes what it learns to its
`Sink`: the current value as soon as it knows it, then every change. It never renders anything itself.
All `Sink` calls happen on the event loop's thread; a source whose client blocks runs it in worker
threads and hands results over with `loop.call_soon_threadsafe`.

Module import must stay cheap: a backend's client library is imported inside the source's
`start()`, so an unused backend costs nothing at start-up.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

# type name → "module:Class", imported only when a source of that type is configured.
REGISTRY = {
    "files": "confsync.sources.files:FilesSource",
    "etcd": "confsync.sources.etcd:EtcdSource",
    "zookeeper": "confsync.sources.zookeeper:ZooKeeperSource",
    "consul": "confsync.sources.consul:ConsulSource",
    "vault": "confsync.sources.vault:VaultSource",
}

# type name → (the client library's module, the extra that installs it, its distribution): checked
# when a config is loaded, so a missing one is a config error naming the extra, not a traceback.
CLIENTS = {
    "consul": ("consul", "consul", "py-consul"),
    "vault": ("hvac", "vault", "hvac"),
    "zookeeper": ("kazoo", "zookeeper", "kazoo"),
}


def missing_client(type_name: str) -> str | None:
    import importlib.util

    if type_name not in CLIENTS:
        return None
    module, extra, _ = CLIENTS[type_name]
    try:
        if importlib.util.find_spec(module) is not None:
            return None
    except ImportError:  # a broken install: as good as none
        pass
    return f"the {type_name} source needs {module}, which is not installed: pip install 'confsync[{extra}]'"


@dataclass(frozen=True)
class Dep:
    """One thing a template asked for: `kind` is the template function (key, tree, ls, secret…)."""

    source: str
    kind: str
    path: str
    params: tuple[tuple[str, Any], ...] = ()
    # Parameter values are hidden wherever the dependency is named (logs, errors, /readyz): a
    # template may build them from a secret, e.g. vault.secret('transit/encrypt/k', plaintext=…).
    secret_params: bool = False

    def __str__(self) -> str:
        shown = (lambda v: "<redacted>") if self.secret_params else repr
        args = [repr(self.path)] + [f"{k}={shown(v)}" for k, v in self.params]
        return f"{self.source}.{self.kind}({', '.join(args)})"


@dataclass(frozen=True)
class Missing:
    """A value a source could not provide, with the reason (never containing a secret)."""

    reason: str


ABSENT = Missing("does not exist")


class Sink(Protocol):
    def update(self, dep: Dep, value: Any) -> None:
        """The current value of `dep` (a `Missing` when there is none). Repeats are harmless."""

    def source_status(self, source: str, up: bool, reason: str = "") -> None:
        """The backend became reachable (up) or not; values already known are kept either way."""


class Source(Protocol):
    Options: ClassVar[type]  # a frozen dataclass: the source's config keys, checked by config.py
    functions: ClassVar[type[Functions]]
    secret: bool  # values are secrets: files 0600 by default, redacted from diffs and errors

    def __init__(self, name: str, options: Any, sink: Sink) -> None: ...

    async def start(self) -> None:
        """Connect (or prepare to); must not fail because the backend is down: report it instead.
        ValueError: options it cannot use (a key file it cannot read), a config error."""

    def watch(self, dep: Dep) -> None:
        """Begin delivering `dep`'s value and its changes to the sink."""

    def unwatch(self, dep: Dep) -> None:
        """Stop: no template uses `dep` any more."""

    async def close(self) -> None: ...

    # Optional: `async def shutdown(self) -> None`, called before close() when `run` or `exec` stop
    # for good (not at a config reload, nor in `init`/`once`): give back what only this process
    # needed (the vault source's revoke_on_shutdown).


class Functions:
    """What a template sees as the source's name: one method per kind of request.

    Each call becomes a `Dep`; `lookup` (the renderer's) records it as used and answers from the
    store of last-known values. Attributes starting with `_` are invisible to the sandbox.
    """

    def __init__(self, source: str, lookup: Any) -> None:
        self._source = source
        self._lookup = lookup

    def _dep(self, kind: str, path: str, **params: Any) -> Dep:
        if not isinstance(path, str):
            raise TypeError(f"{self._source}.{kind}() expects a string path, got {type(path).__name__}")
        problem = path_problem(path)
        if problem:  # a template error (exit 1), not data that never arrives (exit 3): issue 11 item 10
            raise ValueError(f"{self._source}.{kind}({path!r}): {problem}")
        return Dep(self._source, kind, path.strip("/"), tuple(sorted(params.items())))

    def key(self, path: str, default: Any = ABSENT) -> Any:
        return self._lookup(self._dep("key", path), default)

    def tree(self, prefix: str = "") -> Any:
        return self._lookup(self._dep("tree", prefix), ABSENT)

    def ls(self, prefix: str = "") -> Any:
        return self._lookup(self._dep("ls", prefix), ABSENT)


def path_problem(path: str) -> str | None:
    """What makes a key name malformed for every backend (ZooKeeper and the files source refuse
    `.` and `..` segments; in Consul or etcd such a key is surely a typo), or None."""
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "malformed key name: holds a control character"
    if any(part in (".", "..") for part in path.split("/")):
        return "malformed key name: '.' and '..' are not key names"
    return None


class _AnyField(dict[str, Any]):
    """A mapping not known yet: every field reads as "", so `vault.secret('a').password` does not
    end the render pass (StrictUndefined) before the template's other requests are discovered."""

    def __missing__(self, key: str) -> str:
        return ""


# What a template gets for a kind while its value is not known yet: rendering goes on with it so
# that one pass discovers as many dependencies as it can; the output is then thrown away.
PLACEHOLDERS: dict[str, Any] = {"key": "", "tree": _AnyField(), "ls": [], "list": [], "secret": _AnyField(),
                                "service": [], "services": _AnyField(), "node": _AnyField(), "nodes": [],
                                "datacenters": [], "ca_roots": [], "ca_leaf": _AnyField()}


def is_secret(source: Any, dep: Dep) -> bool:
    """Does `dep`'s value hold a secret: every value of a secret source, or a kind the source
    names in `secret_kinds` (Consul's Connect leaf certificate carries its private key)."""
    return bool(getattr(source, "secret", False)) or dep.kind in getattr(source, "secret_kinds", ())


def source_class(type_name: Any) -> Any:
    if type_name not in REGISTRY:
        raise LookupError(f"unknown source type {type_name!r} (known: {', '.join(REGISTRY)})")
    module, _, cls = REGISTRY[type_name].partition(":")
    return getattr(importlib.import_module(module), cls)
