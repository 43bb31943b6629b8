"""The `vault` source: secrets from HashiCorp Vault (or OpenBao, its API-compatible fork) via hvac.

Templates see `vault.secret(path, **params)`: the secret's fields as a mapping. KV
secrets (v1, or v2 with its `data.data` unwrapped; the version comes from the mount, asked once per
mount at `sys/internal/ui/mounts/<path>`) are re-read every `static_secret_interval`. Any other path
is read, or written with `params` for engines that issue credentials on a write (`pki/issue/web`).
`vault.list(path)` is the sorted key names under a path (KV v2: under `metadata/`), re-read like KV.
Logging in is the `auth` package's (one class per method), and so is the token sink.

Three clocks run on the event loop, each in its own task; hvac blocks, so every request runs in a
worker thread of the source's own small pool (not the loop's default one: `close()` must be able to
let go of a request stuck on a dead server):
- the token: renewed at 2/3 of its TTL; when a renewal can no longer extend it (max TTL) or fails,
  a new login. A login pushes nothing: templates that read only KV secrets do not re-render.
- each leased secret: renewed at 2/3 of its lease while renewal extends it; once it cannot (max TTL
  reached, not renewable, or a PKI certificate with only an `expiration`), fetched anew at 85–90% of
  what is left, and pushed. Vault revokes the leases a token created when that token expires, so a
  new login also fetches anew the leased secrets obtained with the old token.
- each KV secret: re-read every `static_secret_interval`; an unchanged value is dropped by the runner.

Messages carry paths, HTTP statuses and Vault's own error text: never a token, a secret ID, a JWT, a password
or a secret's value, and never hvac's exception text (it holds request URLs and bodies).
"""

from confsync.sources.vault.options import AuthOptions, TLSOptions, VaultFunctions, VaultOptions
from confsync.sources.vault.source import VaultSource

__all__ = ["AuthOptions", "TLSOptions", "VaultFunctions", "VaultOptions", "VaultSource"]
