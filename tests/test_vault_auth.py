"""Vault auth methods (jwt, cert, userpass) and the token sink, through the CLI against one real
OpenBao dev server with a second, TLS listener; keys and certificates made here with openssl.

Every log is checked for the credentials and tokens it handled.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.helpers import Daemon, confsync
from tests.servers import OpenBaoServer, openbao_server
from tests.test_vault import assert_no_leak, put, root_client

POLICY = """
path "secret/data/auth*" { capabilities = ["read"] }
"""
ISSUER, AUDIENCE = "https://issuer.confsync.test", "confsync"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue_cert(d: Path, name: str, ca: str, cn: str, ext: str) -> None:
    """`name`.pem/.key: an EC certificate for `cn` signed by the CA `ca`.pem/.key."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(ext + "\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a server certificate for 127.0.0.1 and a client one; a stranger CA with its own
    client; an RSA key pair that signs JWTs, and another that Vault does not know."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "stranger-ca"):
        make_ca(d, ca)
    issue_cert(d, "server", "ca", "127.0.0.1", "subjectAltName=IP:127.0.0.1")
    issue_cert(d, "client", "ca", "confsync-client", "extendedKeyUsage=clientAuth")
    issue_cert(d, "stranger", "stranger-ca", "confsync-client", "extendedKeyUsage=clientAuth")
    for key in ("jwt", "rogue"):
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f"{key}.key", cwd=d)
        openssl("pkey", "-in", f"{key}.key", "-pubout", "-out", f"{key}.pub", cwd=d)
    return d


@pytest.fixture(scope="module")
def bao(pki: Path) -> Iterator[OpenBaoServer]:
    with openbao_server(tls=(pki / "server.pem", pki / "server.key")) as server:
        client = root_client(server)
        client.sys.create_or_update_policy("auth-app", POLICY)
        short = {"token_policies": "auth-app", "token_ttl": "2s", "token_max_ttl": "4s"}
        client.sys.enable_auth_method("jwt")
        client.write_data("auth/jwt/config", data={"jwt_validation_pubkeys": [(pki / "jwt.pub").read_text()],
                                                   "bound_issuer": ISSUER})
        client.write_data("auth/jwt/role/app", data={"role_type": "jwt", "user_claim": "sub",
                                                     "bound_audiences": AUDIENCE, **short})
        client.sys.enable_auth_method("userpass")
        client.sys.enable_auth_method("cert")
        client.write_data("auth/cert/certs/app", data={"certificate": (pki / "ca.pem").read_text(),
                                                       "allowed_common_names": "confsync-client",
                                                       "token_policies": "auth-app"})
        put(server, "auth-app", user="alice")
        yield server


def sign_jwt(key: Path, **claims: Any) -> str:
    """An RS256 JWT (RFC 7519) signed with openssl: header.payload.signature, base64url."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "app", "iat": now, "nbf": now - 5, "exp": now + 600, **claims}
    signing_input = f"{b64(json.dumps({'alg': 'RS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}"
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input.encode(),
                               check=True, capture_output=True, timeout=30).stdout
    return f"{signing_input}.{b64(signature)}"


def setup(project: Any, address: str, auth: str, tls: str = "") -> Path:
    """A config with one vault source and one template reading secret/auth-app into out/app.conf."""
    lines = ["sources:", "  vault:", "    type: vault", f"    address: {address}", f"    auth: {auth}"]
    if tls:
        lines.append(f"    tls: {tls}")
    lines += ["templates:", "  - {source: app.conf.j2, destination: out/app.conf}"]
    return project("\n".join(lines) + "\n",  # type: ignore[no-any-return]
                   {"app.conf.j2": "{{ vault.secret('secret/auth-app').user }}"})


def token_policies(server: OpenBaoServer, token: str) -> list[str]:
    return root_client(server).auth.token.lookup(token)["data"]["policies"]  # type: ignore[no-any-return]


def add_user(server: OpenBaoServer, password: str) -> str:
    name = f"user-{secrets.token_hex(3)}"
    root_client(server).write_data(f"auth/userpass/users/{name}", data={
        "password": password, "token_policies": "auth-app", "token_ttl": "2s", "token_max_ttl": "4s"})
    return name


# -- jwt ----------------------------------------------------------------------------------------


def test_jwt_login_renders_and_the_sink_holds_the_token_in_use(bao, pki, project, tmp_path):
    jwt = sign_jwt(pki / "jwt.key")
    (tmp_path / "id.jwt").write_text(jwt + "\n")
    (tmp_path / "run").mkdir()
    cfg = setup(project, bao.addr, "{method: jwt, role: app, jwt_file: id.jwt, sink: {path: run/token}}")
    result = confsync("once", "-c", str(cfg), "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "alice"
    assert "logged in (jwt; token ttl 2s, renewable)" in result.stderr
    sink = tmp_path / "run/token"
    token = sink.read_text()
    assert stat.S_IMODE(sink.stat().st_mode) == 0o600
    assert "auth-app" in token_policies(bao, token)  # the token confsync logged in with
    assert os.listdir(tmp_path / "run") == ["token"]  # no staged file left beside it
    assert_no_leak(result.stderr, jwt, token)


@pytest.mark.parametrize("case", ["missing", "unreadable", "fifo", "empty", "foreign key", "wrong audience"])
def test_jwt_that_cannot_log_in_is_named_never_shown(bao, pki, project, tmp_path, case):
    jwt = {"foreign key": sign_jwt(pki / "rogue.key"), "wrong audience": sign_jwt(pki / "jwt.key", aud="other")}
    token_file = tmp_path / "id.jwt"
    if case == "unreadable":  # a mode would not stop root: a directory cannot be read as a file
        token_file.mkdir()
    elif case == "fifo":  # a shell's <(…) or a shared volume: the open waited for a writer, deaf to SIGTERM
        os.mkfifo(token_file)
    elif case != "missing":
        token_file.write_text(jwt.get(case, ""))
    cfg = setup(project, bao.addr, "{method: jwt, role: app, jwt_file: id.jwt}")
    result = confsync("init", "-c", str(cfg), "--timeout", "1s")
    assert result.returncode == 3, result.stderr
    expected = {"missing": f"cannot read jwt_file {token_file}: No such file or directory",
                "unreadable": f"cannot read jwt_file {token_file}: Is a directory",
                "fifo": f"cannot read jwt_file {token_file}: not a regular file",
                "empty": f"jwt_file {token_file} is empty",
                "foreign key": "jwt login failed: refused (HTTP 400)",
                "wrong audience": "jwt login failed: refused (HTTP 400)"}[case]
    assert f"source unavailable: {expected}" in result.stderr
    assert not (tmp_path / "out/app.conf").exists()
    for value in jwt.values():
        assert_no_leak(result.stderr, value, value.split(".")[1], value.split(".")[2])


# -- userpass -----------------------------------------------------------------------------------


def test_userpass_wrong_password_names_the_method_never_the_password(bao, project, tmp_path):
    right, wrong = secrets.token_hex(12), secrets.token_hex(12)
    user = add_user(bao, right)
    cfg = setup(project, bao.addr, f"{{method: userpass, username: {user}, password_env: APP_VAULT_PASSWORD}}")
    result = confsync("init", "-c", str(cfg), "--timeout", "1s", APP_VAULT_PASSWORD=wrong)
    assert result.returncode == 3, result.stderr
    assert "source unavailable: userpass login failed: refused (HTTP 400): invalid username or password" \
        in result.stderr
    assert_no_leak(result.stderr, wrong, right)


def test_userpass_relogin_rewrites_the_sink_atomically(bao, project, tmp_path):
    password = secrets.token_hex(12)
    user = add_user(bao, password)
    (tmp_path / "password").write_text(password + "\n")
    (tmp_path / "run").mkdir()
    cfg = setup(project, bao.addr,
                f"{{method: userpass, username: {user}, password_file: password, sink: {{path: run/token}}}}")
    sink = tmp_path / "run/token"
    with Daemon("-c", str(cfg), "--log-level", "debug") as daemon:
        daemon.wait_event("token_sink_written")
        first, first_inode = sink.read_text(), sink.stat().st_ino
        daemon.wait_event("token_renewed")  # a renewal keeps the token: the file is left alone
        assert (sink.read_text(), sink.stat().st_ino) == (first, first_inode)
        daemon.wait_event("logged_in")  # tokens live at most 4s: a new login
        daemon.wait_event("token_sink_written")
        second = sink.read_text()
        assert second != first and sink.stat().st_ino != first_inode  # replaced by a rename
        assert "auth-app" in token_policies(bao, second)
        assert stat.S_IMODE(sink.stat().st_mode) == 0o600
        assert os.listdir(tmp_path / "run") == ["token"]
    assert (tmp_path / "out/app.conf").read_text() == "alice"
    assert_no_leak(daemon.log(), password, first, second)


# -- cert ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["client", "stranger"])
def test_cert_login_over_tls(bao, pki, project, tmp_path, client):
    tls = f"{{ca_file: {pki / 'ca.pem'}, cert_file: {pki / client}.pem, key_file: {pki / client}.key}}"
    cfg = setup(project, bao.tls_addr, "{method: cert, role: app}", tls=tls)
    result = confsync("init", "-c", str(cfg), "--timeout", "2s")
    if client == "client":
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out/app.conf").read_text() == "alice"
        assert "logged in (cert;" in result.stderr
    else:  # a certificate from a CA the cert role does not trust
        assert result.returncode == 3, result.stderr
        assert "source unavailable: cert login failed: refused (HTTP 400)" in result.stderr


# -- the sink -----------------------------------------------------------------------------------


def test_wrapped_sink_unwraps_once_to_the_token(bao, project, tmp_path):
    token = root_client(bao).auth.token.create(policies=["auth-app"], ttl="1h")["auth"]["client_token"]
    (tmp_path / "run").mkdir()
    cfg = setup(project, bao.addr, "{method: token, sink: {path: run/wrapped, wrap_ttl: 1m}}")
    result = confsync("once", "-c", str(cfg), VAULT_TOKEN=token)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "run/wrapped").read_text()
    assert token not in text
    wrap = json.loads(text)
    assert 0 < wrap["ttl"] <= 60 and wrap["creation_path"] == "sys/wrapping/wrap"
    unwrapped = hvac.Client(url=bao.addr, token=wrap["token"]).sys.unwrap()
    assert unwrapped["data"]["token"] == token
    with pytest.raises(hvac.exceptions.InvalidRequest):  # a wrapping token unwraps once
        hvac.Client(url=bao.addr, token=wrap["token"]).sys.unwrap()
    assert_no_leak(result.stderr, token, wrap["token"])


def test_a_sink_file_planted_by_another_user_is_replaced_by_one_of_confsync_s(bao, project, tmp_path):
    """As root the writer keeps the old file's owner: a `token` made in a shared volume by another
    user (or a symlink in its place) was given the token."""
    if os.geteuid() != 0:
        pytest.skip("only root gives files away")
    token = root_client(bao).auth.token.create(policies=["auth-app"], ttl="1h")["auth"]["client_token"]
    (tmp_path / "run").mkdir()
    planted = tmp_path / "run/token"
    planted.write_text("")
    os.chown(planted, 65534, 65534)
    (tmp_path / "victim").write_text("the victim's")
    os.symlink(tmp_path / "victim", tmp_path / "run/link")
    for name in ("token", "link"):
        cfg = setup(project, bao.addr, f"{{method: token, sink: {{path: run/{name}, mode: '0640'}}}}")
        result = confsync("once", "-c", str(cfg), VAULT_TOKEN=token)
        assert result.returncode == 0, result.stderr
        sink = tmp_path / "run" / name
        assert sink.read_text() == token and not sink.is_symlink()
        assert (sink.stat().st_uid, sink.stat().st_gid) == (os.geteuid(), os.getegid())
    assert (tmp_path / "victim").read_text() == "the victim's"


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.mark.parametrize("case", ["symlinked directory", "read-only directory"])
def test_sink_that_cannot_be_written_safely_keeps_the_source_down(bao, project, tmp_path, case):
    if case == "read-only directory" and os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only tmpfs")
    token = root_client(bao).auth.token.create(policies=["auth-app"], ttl="1h")["auth"]["client_token"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    if case == "symlinked directory":  # e.g. swapped in a shared volume by another container
        run.symlink_to(elsewhere)
    else:
        run.mkdir()
        mount("-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(run))
    try:
        cfg = setup(project, bao.addr, "{method: token, sink: {path: run/token}}")
        result = confsync("init", "-c", str(cfg), "--timeout", "1s", VAULT_TOKEN=token)
    finally:
        if case == "read-only directory":
            subprocess.run(["umount", "-l", str(run)], check=True)
    assert result.returncode == 3, result.stderr
    why = "outside the allowed roots" if case == "symlinked directory" else "Read-only file system"
    assert "source unavailable: token sink: " in result.stderr and why in result.stderr
    assert os.listdir(elsewhere) == [] and not (tmp_path / "out/app.conf").exists()
    assert_no_leak(result.stderr, token)


def test_auth_options_are_checked_when_the_config_is_loaded(project, tmp_path):
    sources = {
        "a": "{method: token, sink: {path: t, mode: '0644'}}",
        "b": "{method: cert}",
        "c": "{method: userpass, username: u, password_file: p, password_env: P}",
        "d": "{method: jwt, role: r}",
        "e": "{method: userpass, username: u, password_file: p, secret_id_file: s}",
    }
    text = "sources:\n" + "".join(f"  {n}: {{type: vault, auth: {a}}}\n" for n, a in sources.items())
    template = "".join(f"{{{{ {n}.secret('x') }}}}" for n in sources)
    cfg = project(text + "templates:\n  - {source: app.conf.j2, destination: out/app.conf}\n",
                  {"app.conf.j2": template})
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2, result.stderr
    for expected in ("sources.a.auth.sink: mode 0644 lets every user read the token",
                     "sources.b: auth method 'cert' logs in with the client certificate",
                     "sources.c.auth: auth method 'userpass' needs exactly one of password_file or password_env",
                     "sources.d.auth: auth method 'jwt' needs jwt_file",
                     "sources.e.auth: secret_id_file is not used by auth method 'userpass'"):
        assert expected in result.stderr, result.stderr

