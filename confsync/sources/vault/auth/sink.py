"""The token sink: the current token in a file for the application (Vault Agent's `sink "file"`),
written with confsync's atomic writer after every login and renewal.

With `wrap_ttl`, the file holds instead the `wrap_info` JSON of a response-wrapping token whose
unwrap (`sys/wrapping/unwrap`, once) yields the token: what Vault Agent's sink writes too. Each
write wraps anew, so the file changes at every renewal.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from confsync.errors import WriteError
from confsync.sources.vault.errors import Refused
from confsync.sources.vault.life import part
from confsync.write import Target, clear_foreign, write

if TYPE_CHECKING:
    from confsync.sources.vault.auth.base import Vault
    from confsync.sources.vault.options import SinkOptions


async def write_token(sink: SinkOptions, vault: Vault, token: str) -> bool:
    """Put `token` (or its wrapping) at the sink; True when the file changed. Refused when it cannot."""
    text = token
    if sink.wrap_ttl:
        body = await vault.call(vault.client.adapter.post, "/v1/sys/wrapping/wrap", json={"token": token},
                                wrap_ttl=f"{sink.wrap_ttl:.0f}s", redact=(token,))
        text = json.dumps(part(body, "wrap_info"))
    clear_foreign(sink.path)  # the file is confsync's: never given to whoever made the one there
    try:
        # A directory that is a symlink is refused (the writer never trusts a symlinked root): in
        # a shared volume it could send the token anywhere.
        return await write(Target(sink.path, perms=sink.mode, create_dirs=False, secret=True),
                           text.encode()) is not None
    except WriteError as exc:
        raise Refused(f"token sink: {exc.message}") from None
