"""Connect's CA as the local agent serves it (api-docs/agent/connect): `GET /v1/agent/connect/ca/roots`
and `GET /v1/agent/connect/ca/leaf/<service>`, both blocking queries.

The CA is made at the first Connect request: an EC P-256 root, self-signed, for a random trust
domain `<uuid>.consul`. A leaf certificate is issued per service with `leaf_ttl` of validity and
the SPIFFE ID `spiffe://<trust domain>/ns/default/dc/dc1/svc/<service>` as its URI SAN; the agent
renews it at a random point between 60 % and 90 % of its life, which moves the index its blocking
query waits on. A leaf needs `service:write` on the service, as in Consul; the roots need no grant.

Certificates are made with `cryptography` (a test dependency), imported only when Connect is used.
"""

from __future__ import annotations

import datetime
import hashlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .server import Server
from .util import DATACENTER, Response


def _go_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


@dataclass
class _CA:
    key: Any
    cert: Any
    trust_domain: str
    index: int
    leaves: dict[str, dict[str, Any]] = field(default_factory=dict)  # service → its leaf


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(index: int) -> _CA:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    trust_domain = f"{uuid.uuid4()}.consul"
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("Consul CA 7")).issuer_name(_name("Consul CA 7"))
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return _CA(key, cert, trust_domain, index)


class ConnectEndpoints:
    """Mixed into ConsulEmulator."""

    def _ca(self) -> _CA:
        if self._connect is None:
            self._connect = _make_ca(self._state.next_index())
        ca: _CA = self._connect
        return ca

    def _connect_roots(self, server: Server, method: str, query, body: bytes) -> Response:
        from cryptography.hazmat.primitives import hashes, serialization

        def build(index: int) -> Response:
            ca = self._ca()
            cert = ca.cert
            root_id = _colon_hex(cert.fingerprint(hashes.SHA1()))
            key_id = _colon_hex(hashlib.sha256(cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()[:20])
            root = {"ID": root_id, "Name": "Consul CA Primary Cert", "SerialNumber": cert.serial_number,
                    "SigningKeyID": key_id, "ExternalTrustDomain": ca.trust_domain.split(".")[0],
                    "NotBefore": _go_time(cert.not_valid_before_utc), "NotAfter": _go_time(cert.not_valid_after_utc),
                    "RootCert": cert.public_bytes(serialization.Encoding.PEM).decode(), "IntermediateCerts": None,
                    "Active": True, "PrivateKeyType": "ec", "PrivateKeyBits": 256,
                    "CreateIndex": ca.index, "ModifyIndex": ca.index}
            return self._json({"ActiveRootID": root_id, "TrustDomain": ca.trust_domain, "Roots": [root]}, query,
                              index=index)

        with self._state.cond:
            self._ca()
        return self._blocking(server, query, lambda: self._ca().index, build)

    def _connect_leaf(self, server: Server, method: str, query, body: bytes, service: str) -> Response:
        self._access().require("service", service, "write")

        def leaf() -> dict[str, Any]:
            ca = self._ca()
            current = ca.leaves.get(service)
            if current is None or time.monotonic() >= current["renew_at"]:
                current = ca.leaves[service] = self._issue(ca, service)
            return current

        return self._blocking(server, query, lambda: leaf()["index"], lambda index: self._json(leaf()["json"], query,
                              index=index), wake=lambda: leaf()["renew_at"])

    def _issue(self, ca: _CA, service: str) -> dict[str, Any]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        index = self._state.next_index()
        key = ec.generate_private_key(ec.SECP256R1())
        uri = f"spiffe://{ca.trust_domain}/ns/default/dc/{DATACENTER}/svc/{service}"
        issued, now = time.monotonic(), datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        expires = now + datetime.timedelta(seconds=self.leaf_ttl)  # an X.509 time: whole seconds
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder().subject_name(_name(service)).issuer_name(ca.cert.subject)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(now - datetime.timedelta(minutes=1))
                .not_valid_after(expires)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
                .sign(ca.key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        body = {"SerialNumber": _colon_hex(serial.to_bytes(20, "big").lstrip(b"\0")),
                "CertPEM": cert.public_bytes(serialization.Encoding.PEM).decode(), "PrivateKeyPEM": key_pem,
                "Service": service, "ServiceURI": uri, "ValidAfter": _go_time(cert.not_valid_before_utc),
                "ValidBefore": _go_time(expires),
                "CreateIndex": index, "ModifyIndex": index}
        life = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()  # what is left of it
        return {"index": index, "json": body, "renew_at": issued + life * random.uniform(0.6, 0.9)}
