"""`kubernetes`: the pod's service account token, re-read at every login (the kubelet rotates it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from confsync.sources.vault.auth.base import Method, Request
from confsync.sources.vault.life import read_file

if TYPE_CHECKING:
    from confsync.sources.vault.options import AuthOptions

K8S_JWT = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class Kubernetes(Method):
    uses = frozenset({"role", "jwt_file", "mount"})
    mount = "kubernetes"

    @classmethod
    def problem(cls, options: AuthOptions) -> str | None:
        return None if options.role else "auth method 'kubernetes' needs role"

    def request(self) -> Request:
        jwt = read_file(self.options.jwt_file or K8S_JWT, "jwt_file")
        return Request(self.login_path(), {"role": self.options.role, "jwt": jwt}, (jwt,))
