"""Connect's CA, read through the local agent: the roots, and a service's leaf certificate.

The agent keeps the leaf certificate renewed before it expires (and re-signed when the roots
rotate); its endpoint is a blocking query whose index moves when it does, so following it as any
other dependency re-fetches the certificate in time (api-docs/agent/connect, "Service Leaf
Certificate"). consul-template reads the same two endpoints (dependency/connect_ca.go, connect_leaf.go).
"""

from __future__ import annotations

from typing import Any

from confsync.sources import Dep


def request(dep: Dep) -> tuple[str, list[tuple[str, str]]]:
    if dep.kind == "ca_roots":
        return "/v1/agent/connect/ca/roots", []
    return f"/v1/agent/connect/ca/leaf/{dep.path}", []


def value(dep: Dep, data: Any) -> Any:
    data = data or {}
    if dep.kind == "ca_roots":
        return [_root(r, data.get("TrustDomain") or "") for r in data.get("Roots") or []]
    return {"service": data.get("Service") or "", "service_uri": data.get("ServiceURI") or "",
            "serial_number": data.get("SerialNumber") or "", "cert_pem": data.get("CertPEM") or "",
            "private_key_pem": data.get("PrivateKeyPEM") or "", "valid_after": data.get("ValidAfter") or "",
            "valid_before": data.get("ValidBefore") or ""}


def _root(root: dict[str, Any], trust_domain: str) -> dict[str, Any]:
    return {"id": root.get("ID") or "", "name": root.get("Name") or "", "serial_number": root.get("SerialNumber") or 0,
            "signing_key_id": root.get("SigningKeyID") or "", "not_before": root.get("NotBefore") or "",
            "not_after": root.get("NotAfter") or "", "root_cert": root.get("RootCert") or "",
            "intermediate_certs": list(root.get("IntermediateCerts") or []), "active": bool(root.get("Active")),
            "trust_domain": trust_domain}
