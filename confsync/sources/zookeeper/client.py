"""kazoo, kept quiet and stopped off the event loop."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("confsync.sources.zookeeper")  # the source's own: kazoo_logger follows its level


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
