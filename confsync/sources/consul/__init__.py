"""The `consul` source: Consul's KV store and service catalog, followed with blocking queries.

Changes are followed with long polls ("blocking queries", https://developer.hashicorp.com/consul/
api-docs/features/blocking): a read with `index` = the last `X-Consul-Index` and a `wait`, which
Consul holds until the resource changes or the wait ends.

All KV dependencies (key, tree, ls) share ONE poll: a recursive read of the longest common prefix
of the paths they need, cut back to a "/" boundary (the whole store if nothing better), and each
dependency's value is derived from that one reply; only values that changed are pushed. One poll
per dependency would cost a thread and a TCP connection each, and a Consul agent accepts only 200
connections per client IP by default (`limits.http_max_conns_per_client`). A watch outside the
prefix widens it: the poll restarts with a plain read, which is current by definition, so nothing
is missed. Each service dependency keeps its own poll (distinct endpoints).

The docs' implementation rules are followed: an index that goes backwards restarts the loop at 0,
an index below 1 is taken as 1, a reply with an unchanged index pushes nothing, and requests are
rate-limited so that a server answering at once cannot make us spin.

py-consul is blocking (requests), so each request runs in a worker thread of a dedicated pool,
one thread per poll in flight (1 + the number of services); the loop thread gets the result
through `run_in_executor`, which hands it over with `call_soon_threadsafe`. A parked long poll
cannot be cancelled from Python, so `unwatch`, a widening and `close` shut down the socket it
waits on: the thread returns at once.

Modules: `options` (config and environment), `functions` (what templates call), `source` (the
polls' loops), `kv` (the one KV poll's prefix and the values derived from it), `catalog` and
`connect` (their endpoints and the values templates get), `hidden` (answers ACLs may have
filtered), `client` (requests in worker threads, errors mapped).
"""

from confsync.sources.consul.functions import ConsulFunctions
from confsync.sources.consul.options import ConsulOptions, ConsulTLS, parse_address
from confsync.sources.consul.source import ConsulSource

__all__ = ["ConsulFunctions", "ConsulOptions", "ConsulSource", "ConsulTLS", "parse_address"]
