"""Pytest fixtures for code that talks to Consul.

By default every fixture points at an in-process ``ConsulEmulator``; when
``CONSUL_HTTP_ADDR`` is set they point at that real Consul instead (and
``CONSUL_HTTP_TOKEN``, if set, is sent with every request).  Everything a test
creates lives under a unique KV prefix / unique node and service names and is
removed afterwards, so the suite is safe to run against a shared dev agent.

Wire into a conftest with ``pytest_plugins = ["consul_fixtures"]`` (or import
the fixtures into a test module).  Loaded as a plugin, this module also
registers the ``consul`` marker.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import consul
import httpx
import pytest

try:
    from consul_emulator import THREAD_PREFIX, ConsulEmulator, consul_emulator
except ImportError:  # imported as part of a ``tests`` package
    from tests.consul_emulator import THREAD_PREFIX, ConsulEmulator, consul_emulator

__all__ = [
    "ConsulTarget",
    "CatalogScratch",
    "real_consul_addr",
    "emulator_threads",
    "consul_target",
    "consul_addr",
    "consul_client",
    "consul_http",
    "kv_prefix",
    "catalog_scratch",
    "acl_target",
]

_DEFAULT: Any = object()
ACL_TEST_TOKEN = "confsync-emulator-acl-token"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "consul: talks to Consul (the emulator, or CONSUL_HTTP_ADDR if set)")


def real_consul_addr() -> str | None:
    """The real Consul to test against (``CONSUL_HTTP_ADDR``), normalised to a URL, or None."""
    addr = os.environ.get("CONSUL_HTTP_ADDR", "").strip()
    if not addr:
        return None
    if "://" not in addr:
        scheme = "https" if os.environ.get("CONSUL_HTTP_SSL", "").lower() == "true" else "http"
        addr = f"{scheme}://{addr}"
    return addr.rstrip("/")


def emulator_threads(port: int | None = None) -> list[threading.Thread]:
    """Live threads started by emulators (optionally only the one on ``port``)."""
    prefix = THREAD_PREFIX if port is None else f"{THREAD_PREFIX}-{port}-"
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


@dataclass
class ConsulTarget:
    """Where the tests talk to: an emulator or a real Consul."""

    addr: str
    token: str | None = None
    emulator: ConsulEmulator | None = None

    @property
    def is_real(self) -> bool:
        return self.emulator is None

    def client(self, token: str | None = _DEFAULT, **kwargs: Any) -> consul.Consul:
        """A py-consul client.  (py-consul lets CONSUL_HTTP_TOKEN override an
        explicit token, so the token is set after construction.)"""
        url = urlsplit(self.addr)
        c = consul.Consul(host=url.hostname, port=url.port, scheme=url.scheme, **kwargs)
        c.token = self.token if token is _DEFAULT else token
        return c

    def http(self, token: str | None = _DEFAULT, timeout: float = 30.0) -> httpx.Client:
        """A raw httpx client with ``base_url`` set and the token header (if any)."""
        tok = self.token if token is _DEFAULT else token
        headers = {"X-Consul-Token": tok} if tok else {}
        return httpx.Client(base_url=self.addr, headers=headers, timeout=timeout)


@pytest.fixture(scope="session")
def consul_target() -> Iterator[ConsulTarget]:
    addr = real_consul_addr()
    if addr:
        yield ConsulTarget(addr, os.environ.get("CONSUL_HTTP_TOKEN") or None)
        return
    with consul_emulator() as emu:
        port = emu.port
        yield ConsulTarget(emu.addr, None, emu)
    leftover = emulator_threads(port)
    assert not leftover, f"consul emulator left threads running: {leftover}"


@pytest.fixture
def consul_addr(consul_target: ConsulTarget) -> str:
    """``http://host:port`` of the emulator, or of ``CONSUL_HTTP_ADDR`` when set."""
    return consul_target.addr


@pytest.fixture
def consul_client(consul_target: ConsulTarget) -> Iterator[consul.Consul]:
    client = consul_target.client()
    yield client
    client.http.session.close()


@pytest.fixture
def consul_http(consul_target: ConsulTarget) -> Iterator[httpx.Client]:
    with consul_target.http() as client:
        yield client


@pytest.fixture
def kv_prefix(consul_target: ConsulTarget) -> Iterator[str]:
    """A unique KV prefix (ending in "/"), deleted recursively afterwards."""
    prefix = f"confsync-test/{uuid.uuid4().hex}/"
    yield prefix
    with consul_target.http() as http:
        http.delete(f"/v1/kv/{prefix}", params={"recurse": ""})


@dataclass
class CatalogScratch:
    """Unique node/service names for one test; registered nodes are removed afterwards."""

    target: ConsulTarget
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    nodes: set[str] = field(default_factory=set)

    def name(self, base: str) -> str:
        return f"confsync-test-{base}-{self.tag}"

    def register(self, http: httpx.Client, payload: dict[str, Any]) -> None:
        self.nodes.add(payload["Node"])
        resp = http.put("/v1/catalog/register", json=payload)
        assert resp.status_code == 200, resp.text

    def cleanup(self) -> None:
        with self.target.http() as http:
            for node in sorted(self.nodes):
                http.put("/v1/catalog/deregister", json={"Node": node})


@pytest.fixture
def catalog_scratch(consul_target: ConsulTarget) -> Iterator[CatalogScratch]:
    scratch = CatalogScratch(consul_target)
    yield scratch
    scratch.cleanup()


@pytest.fixture
def acl_target(consul_target: ConsulTarget) -> Iterator[ConsulTarget]:
    """A Consul that enforces ACLs: a fresh emulator created with a token, or the
    real Consul when ``CONSUL_HTTP_TOKEN`` is set (skipped otherwise, since we
    cannot know that the real agent has ACLs enabled)."""
    if consul_target.is_real:
        if not consul_target.token:
            pytest.skip("set CONSUL_HTTP_TOKEN to run ACL tests against a real Consul")
        yield consul_target
        return
    with consul_emulator(token=ACL_TEST_TOKEN) as emu:
        yield ConsulTarget(emu.addr, emu.token, emu)
