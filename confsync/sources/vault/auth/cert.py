"""`cert`: the TLS client certificate (the source's `tls.cert_file` and `tls.key_file`) is the
credential; the request carries only the certificate role's name, if one is set."""

from __future__ import annotations

from confsync.sources.vault.auth.base import Method, Request


class Cert(Method):
    uses = frozenset({"role", "mount"})
    mount = "cert"

    def request(self) -> Request:
        body = {"name": self.options.role} if self.options.role else {}
        return Request(self.login_path(), body, ())
