"""The vault source's state file (issue 14 items 3 and 4), through the CLI against a real OpenBao
and a real PostgreSQL: a certificate outlives a restart, an init container's token and database
credential pass to the sidecar (one role in PostgreSQL, one lease), and revoke_on_shutdown leaves
none. A state file that cannot be used is a warning naming it, and a fresh start."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Daemon, confsync, wait_until
from tests.servers import OpenBaoServer, PostgresServer, _postgres_bindir, openbao_server, postgres_server
from tests.test_vault import assert_no_leak, config, database_engine, events, lease_ttls, root_client, root_env, seed

pytestmark = pytest.mark.vault

CERT = ("{% set c = vault.secret('pki/issue/long', common_name='a.example', alt_names='SANS') %}"
        "{{ c.serial_number }}\n{{ c.certificate }}\n{{ c.private_key }}\n")
SEALED = b"confsync-vault-state aes-256-gcm 1\n"


def state_config(server: OpenBaoServer, templates: dict[str, str], *extra: str, auth: str = "",
                 state: bool = True) -> str:
    """config() with a state file (`extra`: more lines of the vault source)."""
    lines = ["    state_file: state/vault.state"] * state + [f"    {line}" for line in extra]
    head, _, tail = config(server, templates, auth=auth).partition("templates:")
    return head + "\n".join(lines) + "\ntemplates:" + tail


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBaoServer]:
    with openbao_server() as server:
        seed(server)
        yield server


@pytest.fixture(scope="module")
def long_role(bao) -> str:
    root_client(bao).write_data("pki/roles/long", data={
        "allowed_domains": "example", "allow_subdomains": True, "ttl": "10m", "max_ttl": "1h",
        "key_type": "ec", "key_bits": 256})
    return "long"


@pytest.fixture
def cert_project(bao, long_role, project, tmp_path) -> Callable[..., Path]:
    (tmp_path / "state").mkdir()

    def make(sans: str = "b.example", *extra: str) -> Path:
        return project(state_config(bao, {"cert.pem.j2": "out/cert.pem"}, *extra),
                       {"cert.pem.j2": CERT.replace("SANS", sans)})

    return make


def serial_of(server: OpenBaoServer, cfg: Path, **env: str) -> tuple[str, str]:
    """`confsync once`: the certificate's serial number, and what confsync logged."""
    result = confsync("once", "-c", str(cfg), "--timeout", "20s", **root_env(server), **env)
    assert result.returncode == 0, result.stderr
    return (cfg.parent / "out/cert.pem").read_text().split("\n")[0], result.stderr


def test_certificate_is_reused_across_runs_for_the_same_request_only(bao, cert_project, tmp_path):
    cfg = cert_project()
    first, _ = serial_of(bao, cfg)
    again, log = serial_of(bao, cfg)
    assert again == first, "a second start issued a new certificate"
    assert "taken over from the state file" in log
    state = tmp_path / "state/vault.state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    doc = json.loads(state.read_text())
    [held] = doc["secrets"]
    assert held["path"] == "pki/issue/long" and held["fields"]["serial_number"] == first
    assert held["fields"]["private_key"] in (tmp_path / "out/cert.pem").read_text()

    other, _ = serial_of(bao, cert_project("c.example"))  # other SANs: another request
    assert other != first

    # Near its end (less than the 10–15% refetch margin left), a certificate is issued anew.
    doc = json.loads(state.read_text())
    for held in doc["secrets"]:
        held["expires_at"] = time.time() + 0.1 * held["term"]
    state.write_text(json.dumps(doc))
    renewed, log = serial_of(bao, cert_project("c.example"))
    assert renewed not in (first, other), log
    assert "taken over" not in log


@pytest.fixture(scope="module")
def made_states(bao, long_role, tmp_path_factory) -> dict[str, bytes]:
    """A good state file, plain and sealed, holding a certificate: what each bad case starts from."""
    made = {}
    for kind, extra in (("plain", ()), ("sealed", ("state_key_env: STATE_KEY",))):
        root = tmp_path_factory.mktemp(kind)
        (root / "state").mkdir()
        (root / "cert.pem.j2").write_text(CERT.replace("SANS", "b.example"))
        cfg = root / "confsync.yaml"
        cfg.write_text(state_config(bao, {"cert.pem.j2": "out/cert.pem"}, *extra))
        serial_of(bao, cfg, STATE_KEY="k" * 40)
        made[kind] = (root / "state/vault.state").read_bytes()
    return made


def _flip(data: bytes) -> bytes:
    at = len(data) - 10
    return data[:at] + (b"A" if data[at:at + 1] != b"A" else b"B") + data[at + 1:]


def _foreign(data: bytes) -> bytes:
    doc = json.loads(data)
    doc["address"] = "http://127.0.0.1:1"
    return json.dumps(doc).encode()


# kind → (the good file it starts from, how it is spoiled, what the warning says)
BAD = {
    "garbage": ("plain", lambda d: b"\x00\xff not json", "not a confsync state file (not JSON)"),
    "deep": ("plain", lambda d: b"[" * 200_000, "not a confsync state file (not JSON)"),
    "foreign": ("plain", _foreign, "written for another address"),
    "altered": ("sealed", _flip, "cannot be decrypted with the state key (another key, or altered)"),
    "unsealed": ("plain", lambda d: d, "not encrypted, while a state key is set"),
    "symlink": ("plain", lambda d: d, "a symbolic link (never followed)"),
    "writable": ("plain", lambda d: d, "others may write it (mode 0666)"),
    "owner": ("plain", lambda d: d, "owned by uid 65534, not by confsync's (0)"),
}


@pytest.mark.parametrize("kind", BAD)
def test_a_state_file_that_cannot_be_used_is_a_warning_and_a_fresh_start(bao, cert_project, made_states, tmp_path,
                                                                        kind):
    start, spoil, says = BAD[kind]
    if kind == "owner" and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    sealed = kind in ("altered", "unsealed")
    cfg = cert_project("b.example", *(["state_key_env: STATE_KEY"] if sealed else []))
    state = tmp_path / "state/vault.state"
    data = spoil(made_states[start])
    if kind == "symlink":
        (tmp_path / "elsewhere").write_bytes(data)
        state.symlink_to(tmp_path / "elsewhere")
    else:
        state.write_bytes(data)
        os.chmod(state, 0o666 if kind == "writable" else 0o600)
        if kind == "owner":  # as root the writer keeps a file's owner: not this one's, who could read the token
            os.chown(state, 65534, 65534)
    held = json.loads(made_states["plain"])["secrets"][0]["fields"]
    serial, log = serial_of(bao, cfg, STATE_KEY="k" * 40)
    assert f"state_file {state}: {says}: starting fresh" in log
    assert serial != held["serial_number"]
    assert_no_leak(log, held["private_key"], bao.root_token)
    # Replaced by a good file of its own (a symlink itself, not what it points to).
    assert not state.is_symlink() and stat.S_IMODE(state.stat().st_mode) == 0o600
    assert state.stat().st_uid == os.geteuid()
    assert state.read_bytes().startswith(SEALED) == sealed
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_bytes() == data


def test_state_options_are_checked(bao, cert_project, tmp_path):
    cfg = cert_project("b.example", "state_key_file: missing.key")
    result = confsync("once", "-c", str(cfg), "--timeout", "5s", **root_env(bao))
    assert result.returncode == 2
    assert f"sources.vault: cannot start: cannot read state_key_file {tmp_path / 'missing.key'}" in result.stderr
    os.mkfifo(tmp_path / "fifo.key")  # the start waited for a writer for ever, deaf to SIGTERM
    fifo = cert_project("b.example", "state_key_file: fifo.key")
    result = confsync("once", "-c", str(fifo), "--timeout", "5s", **root_env(bao))
    assert result.returncode == 2
    assert f"cannot read state_key_file {tmp_path / 'fifo.key'}: not a regular file" in result.stderr
    short = cert_project("b.example", "state_key_env: STATE_KEY")
    result = confsync("once", "-c", str(short), "--timeout", "5s", STATE_KEY="short", **root_env(bao))
    assert result.returncode == 2 and "must be at least 32 characters" in result.stderr
    assert "state_key_env STATE_KEY: the key" in result.stderr and "short" not in result.stderr
    result = confsync("once", "-c", str(short), "--timeout", "5s", **root_env(bao))
    assert result.returncode == 2 and "state_key_env STATE_KEY: the variable is not set" in result.stderr
    cfg.write_text(cfg.read_text().replace("    state_file: state/vault.state\n", ""))
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2 and "state_key_file and state_key_env encrypt state_file" in result.stderr


# -- init → run: one set of credentials per pod -------------------------------------------------


@pytest.fixture(scope="module")
def pod_database(bao) -> Iterator[PostgresServer]:
    """The database engine on its own PostgreSQL, role `pod` (1m leases): nothing else makes roles there."""
    with postgres_server() as pg:
        database_engine(bao, pg, "pod", default_ttl="1m", max_ttl="10m")
        yield pg


def roles(pg: PostgresServer) -> int:
    """Login roles the database engine made (its names start with v-)."""
    done = subprocess.run([str(_postgres_bindir() / "psql"), "-X", "-At", "-d", pg.dsn, "-c",
                           "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'"],
                          capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if not k.startswith("PG")})
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.fixture(scope="module")
def pod_login(bao) -> str:
    """An AppRole whose 1m tokens may read database/creds/pod: its `auth:` setting."""
    client = root_client(bao)
    client.sys.create_or_update_policy("pod", 'path "database/creds/pod" { capabilities = ["read"] }\n'
                                              'path "secret/data/pod" { capabilities = ["read"] }')
    client.write_data("secret/data/pod", data={"data": {"name": "pod"}})
    client.write_data("auth/approle/role/pod", data={"token_policies": "pod", "token_ttl": "1m",
                                                     "bind_secret_id": False, "secret_id_bound_cidrs": "127.0.0.1/32"})
    return f"{{method: approle, role_id: {client.read('auth/approle/role/pod/role-id')['data']['role_id']}}}"


def test_init_hands_its_token_and_lease_to_run_which_revokes_them_at_shutdown(bao, pod_database, pod_login, project,
                                                                             tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state.key").write_text(os.urandom(32).hex())
    cfg = project(state_config(bao, {"db.conf.j2": "out/db.conf"}, "state_key_file: state.key",
                               "revoke_on_shutdown: true", auth=pod_login),
                  {"db.conf.j2": "{% set c = vault.secret('database/creds/pod') %}{{ c.username }} {{ c.password }}"})
    out, state = tmp_path / "out/db.conf", tmp_path / "state/vault.state"

    init = confsync("init", "-c", str(cfg), "--timeout", "20s")
    assert init.returncode == 0, init.stderr
    username, password = out.read_text().split()
    sealed = state.read_bytes()
    assert sealed.startswith(SEALED) and password.encode() not in sealed
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert roles(pod_database) == 1 and len(lease_ttls(bao, "database/creds/pod")) == 1
    written = out.stat().st_mtime_ns

    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("token_adopted")
        daemon.wait_event("secret_adopted")
        daemon.wait_event("rendered")
        assert out.read_text().split() == [username, password] and out.stat().st_mtime_ns == written
        assert roles(pod_database) == 1 and len(lease_ttls(bao, "database/creds/pod")) == 1
        assert daemon.stop() == 0
    assert not events(daemon, "logged_in") and not events(daemon, "written")
    assert "revoked the token and its 1 lease(s)" in daemon.wait_event("revoked")["message"]
    wait_until(lambda: roles(pod_database) == 0 and not lease_ttls(bao, "database/creds/pod"), timeout=10,
               what="the database role revoked")
    for log in (init.stderr, daemon.log()):
        assert_no_leak(log, password)


def test_run_revokes_each_lease_of_a_token_it_did_not_log_in_for(bao, pod_database, project, tmp_path):
    """VAULT_TOKEN is not confsync's to revoke: its leases are, one by one (no state file needed)."""
    cfg = project(state_config(bao, {"db.conf.j2": "out/db.conf"}, "revoke_on_shutdown: true", state=False),
                  {"db.conf.j2": "{{ vault.secret('database/creds/pod').username }}"})
    before = roles(pod_database)
    with Daemon("-c", str(cfg), **root_env(bao)) as daemon:
        daemon.wait_event("written")
        assert roles(pod_database) == before + 1
        assert daemon.stop() == 0
    assert daemon.wait_event("revoked")["message"] == "source vault: revoked 1 lease(s)"
    wait_until(lambda: roles(pod_database) == before, timeout=10, what="the database role revoked")
    assert root_client(bao).auth.token.lookup_self()["data"]["id"] == bao.root_token  # still valid


def test_a_planted_token_is_not_adopted(bao, pod_login, project, tmp_path):
    """A valid token put in the state file in place of the one its accessor names (here the root
    token: more policies) is refused; confsync logs in."""
    (tmp_path / "state").mkdir()
    cfg = project(state_config(bao, {"k.j2": "out/k"}, auth=pod_login),
                  {"k.j2": "{{ vault.secret('secret/pod').name }}"})
    state = tmp_path / "state/vault.state"
    assert confsync("once", "-c", str(cfg), "--timeout", "20s").returncode == 0
    doc = json.loads(state.read_text())
    assert doc["token"] and doc["accessor"]
    doc["token"] = bao.root_token
    state.write_text(json.dumps(doc))
    result = confsync("once", "-c", str(cfg), "--timeout", "20s", "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert f"state_file {state}: its token is not the one it names (altered?): logging in" in result.stderr
    assert "logged in (approle" in result.stderr
    assert json.loads(state.read_text())["token"] not in ("", bao.root_token)
    assert_no_leak(result.stderr, bao.root_token, doc["token"])


def test_a_file_the_source_writes_cannot_be_a_template_s_or_the_config(project, tmp_path):
    """state_file or the token sink also named as a template's destination (or as the config file):
    each write replaced the other's, a token rendered over or the state written where the app reads."""
    def check(vault: str, destination: str) -> str:
        cfg = project("sources:\n  vault:\n    type: vault\n    address: http://127.0.0.1:1\n" + vault
                      + f"templates:\n  - {{contents: x, destination: {destination}}}\n")
        result = confsync("check", "-c", str(cfg))
        assert result.returncode == 2, result.stderr
        return result.stderr

    assert f"templates[0].destination: {tmp_path}/out/app.conf is also sources.vault.state_file" in \
        check("    state_file: out/app.conf\n", "out/app.conf")
    assert f"templates[0].destination: {tmp_path}/run/token is also sources.vault.auth.sink.path" in \
        check("    auth: {method: token_file, token_file: t, sink: {path: run/token}}\n", "run/token")
    assert "sources.vault.state_file: is the config file itself" in check("    state_file: confsync.yaml\n", "out/x")
    assert "state_file and auth.sink.path name the same file" in check(
        "    state_file: run/token\n    auth: {method: token_file, token_file: t, sink: {path: run/token}}\n", "out/x")
