"""/v1/kv: reads (single key, recursive, keys, raw) as blocking queries; PUT and DELETE with CAS."""

from __future__ import annotations

import base64
from typing import Any

from .server import Server
from .util import MAX_VALUE_SIZE, ApiError, Response, flag, one


class KVEndpoints:
    """Mixed into ConsulEmulator: the /v1/kv handlers."""

    @staticmethod
    def _kv_view(key: str, e: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {
            "CreateIndex": e["CreateIndex"],
            "ModifyIndex": e["ModifyIndex"],
            "LockIndex": e["LockIndex"],
            "Key": key,
            "Flags": e["Flags"],
            "Value": base64.b64encode(e["Value"]).decode() if e["Value"] else None,
        }
        if e["Session"]:
            view["Session"] = e["Session"]
        return view

    def _kv(self, server: Server, method: str, query, body: bytes, key: str) -> Response:
        if method == "GET":
            return self._kv_get(server, query, key)
        for name in ("acquire", "release"):
            session = one(query, name)
            if session:
                raise ApiError(500, f'invalid session "{session}" (consul emulator: sessions are not implemented)')
        if method == "PUT":
            return self._kv_put(query, body, key)
        return self._kv_delete(query, key)

    def _kv_get(self, server: Server, query, key: str) -> Response:
        keys_only = flag(query, "keys")
        recurse = flag(query, "recurse") or keys_only
        raw = flag(query, "raw") and not recurse
        separator = one(query, "separator") or ""
        state = self._state

        def current_index() -> int:
            # The last write affecting this key/prefix; for a key or prefix
            # with no history, the index of the last KV write anywhere (so,
            # as in Consul, such queries may also wake for unrelated writes).
            watch = state.kv_watch_index(key, recurse)
            return watch if watch > 0 else max(1, state.kv_table_index)

        access = self._access()
        if not recurse:
            access.require("key", key)  # kvs_endpoint.go `Get`: one key is refused, not filtered
        elif access.list_policy:
            access.require("key", key, "list")  # with enable_key_list_policy (kvs_endpoint.go `List`)

        def build(index: int) -> Response:
            if not recurse:
                entry = state.kv.get(key)
                if entry is None:
                    return Response(404, b"", None, {"X-Consul-Index": str(index)})
                if raw:
                    return Response(
                        200,
                        entry["Value"],
                        "text/plain",
                        {"X-Consul-Index": str(index), "X-Content-Type-Options": "nosniff"},
                    )
                return self._json([self._kv_view(key, entry)], query, index=index)
            under = sorted(k for k in state.kv if k.startswith(key))
            # acl.go `filterDirEnt`: what the token may not read is dropped, silently.
            matched = [k for k in under if access.can("key", k)]
            acl_headers = access.filtered_header(len(matched) < len(under))
            if keys_only:
                listed: list[str] = []
                seen: set[str] = set()
                for k in matched:
                    if separator:
                        rest = k[len(key):]
                        cut = rest.find(separator)
                        if cut >= 0:
                            k = key + rest[: cut + len(separator)]
                    if k not in seen:
                        seen.add(k)
                        listed.append(k)
                if not listed and key:  # kvs_endpoint.go `KVSGetKeys`: the root answers [] rather than 404
                    return Response(404, b"", None, {"X-Consul-Index": str(index), **acl_headers})
                response = self._json(listed, query, index=index)
            elif not matched:
                return Response(404, b"", None, {"X-Consul-Index": str(index), **acl_headers})
            else:
                response = self._json([self._kv_view(k, state.kv[k]) for k in matched], query, index=index)
            response.headers.update(acl_headers)
            return response

        return self._blocking(server, query, current_index, build)

    @staticmethod
    def _uint_param(query, name: str) -> int | None:
        raw = one(query, name)
        if raw is None:
            return None
        try:
            value = int(raw)
            if value < 0 or value >= 2**64:
                raise ValueError
        except ValueError:
            raise ApiError(400, f"Invalid {name} index" if name == "cas" else f"Invalid {name}") from None
        return value

    def _kv_put(self, query, body: bytes, key: str) -> Response:
        if not key:
            raise ApiError(400, "Missing key name")
        self._access().require("key", key, "write")
        if len(body) > MAX_VALUE_SIZE:
            raise ApiError(413, f"Request body({len(body)} bytes) too large, max size: {MAX_VALUE_SIZE} bytes.")
        flags = self._uint_param(query, "flags") or 0
        cas = self._uint_param(query, "cas")
        with self._state.cond:
            ok = self._state.kv_put(key, body, flags, cas)
        return self._json(ok, query)

    def _kv_delete(self, query, key: str) -> Response:
        recurse = flag(query, "recurse")
        if not key and not recurse:
            raise ApiError(400, "Missing key name")
        self._access().require("key", key, "write")
        cas = None if recurse else self._uint_param(query, "cas")
        with self._state.cond:
            ok = self._state.kv_delete(key, recurse, cas)
        return self._json(ok, query)
