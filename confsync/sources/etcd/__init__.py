"""The `etcd` source: etcd v3 through its JSON gateway (plain HTTP with httpx), one watch stream.

Why plain HTTP: `etcd3gw` watches hang without an error when the server dies or the revision is
compacted; `etcd3` needs protobuf<3.21; the gateway (`/v3/kv/range`, `/v3/watch`) behaved correctly
on death, resume and compaction, and httpx is already a dependency (no gRPC stack to import).

Keys. etcd's keyspace is flat; "/" is only a convention, which we follow for `tree` and `ls`. With
`prefix: /app`, `key("db/host")` reads `/app/db/host`, `tree("db")` every key under `/app/db/`
(relative to it) and `ls("db")` their distinct first segments. The default prefix `/` gives
`/db/host`; `prefix: ""` gives the bare `db/host`.

One stream. etcd 3.4's gateway reads a `/v3/watch` request body to its end before it answers
(measured: a chunked `create_request` gets no reply until the body is closed), so a stream cannot
take new watches once it is open. We open ONE watch on the range spanning every watched key (their
common prefix, cut back to a "/") and filter events here; a dependency outside that span reopens
the stream, wider, from the revision already seen, so nothing is missed.

Consistency. `mirror` holds the watched keys exactly as they were at revision `rev`. Events are
applied in revision order; a new dependency is read at `rev` itself (events past `rev` wait in
the inbox meanwhile), so the mirror never mixes two moments. After a disconnect the watch resumes
at `rev + 1`; if that revision was compacted, everything is read again at the current revision.
"""

from confsync.sources.etcd.keys import KeyRange, covers, key_range, prefix_bytes, prefix_end, span, value_of
from confsync.sources.etcd.options import EtcdOptions, TlsOptions
from confsync.sources.etcd.source import EtcdSource

__all__ = ["EtcdOptions", "EtcdSource", "KeyRange", "TlsOptions", "covers", "key_range", "prefix_bytes",
           "prefix_end", "span", "value_of"]
