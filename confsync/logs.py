"""Log set-up: readable lines by default, one JSON object per line with `--log-format json`.

Messages name templates, sources and keys, never a value: values may be secrets.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_FIELDS = ("event", "template", "source", "key", "reloader", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.name),
            "message": record.getMessage(),
        }
        for name in _FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        for name in ("sha256", "changed", "bytes", "templates", "passes"):  # to follow a render; the counts of once
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log connection details (and, at debug, request bodies): keep them quiet.
    for noisy in ("httpx", "httpcore", "kazoo", "urllib3", "hvac"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
