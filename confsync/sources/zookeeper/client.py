"""kazoo: made with our retry schedule and credential, kept quiet, and stopped off the event loop."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from confsync.sources.zookeeper.options import ZooKeeperAuth, ZooKeeperOptions

log = logging.getLogger("confsync.sources.zookeeper")  # the source's own: kazoo_logger follows its level


# kazoo's reconnection schedule: exponential from RETRY_FIRST up to RETRY_MAX, ±40% jitter.
RETRY_FIRST, RETRY_MAX = 0.1, 2.0


def new_client(options: ZooKeeperOptions, credential: str | None, closed: threading.Event) -> Any:
    from kazoo.client import KazooClient
    from kazoo.handlers.threading import SequentialThreadingHandler
    from kazoo.retry import KazooRetry

    # One sleep function for the handler and its retry (kazoo insists): an event's wait, so
    # close() cuts a reconnection back-off short instead of waiting it out.
    handler = SequentialThreadingHandler()
    handler.sleep_func = closed.wait
    retry = KazooRetry(max_tries=-1, delay=RETRY_FIRST, backoff=2, max_jitter=0.4, max_delay=RETRY_MAX,
                       sleep_func=closed.wait)
    hosts = options.hosts + (options.chroot or "")
    auth = [(options.auth.scheme, credential)] if options.auth and credential else None
    return KazooClient(hosts=hosts, timeout=options.session_timeout, handler=handler,
                       connection_retry=retry, auth_data=auth, logger=kazoo_logger())


def read_credential(auth: ZooKeeperAuth | None) -> tuple[str | None, str | None]:
    """("user:password", None), or (None, why not); (None, None) without auth."""
    if not auth:
        return None, None
    try:
        text = Path(auth.credential_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return None, f"cannot read auth.credential_file {auth.credential_file}: {why}"
    if ":" not in text:
        return None, f"auth.credential_file {auth.credential_file} must hold \"user:password\""
    return text, None


def kazoo_logger() -> logging.Logger:
    # kazoo warns at every failed reconnection attempt, which our source_down already says; at
    # debug it logs requests and replies, i.e. the credential and values: never below WARNING,
    # and WARNING only when confsync itself is at debug.
    kazoo_log = logging.getLogger(f"{log.name}.kazoo")
    kazoo_log.setLevel(logging.WARNING if log.isEnabledFor(logging.DEBUG) else logging.ERROR)
    return kazoo_log


def stop_client(client: Any) -> None:
    try:
        client.stop()
        client.close()
    except Exception as exc:  # kazoo gives up on a connection thread that would not end in time
        log.warning("a ZooKeeper client did not stop cleanly: %s", exc)
