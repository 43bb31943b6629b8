"""A small Consul HTTP API emulator for tests (standard library only).

Written from the official Consul HTTP API documentation:

* KV store ............ https://developer.hashicorp.com/consul/api-docs/kv
* Blocking queries .... https://developer.hashicorp.com/consul/api-docs/features/blocking
* Consistency modes ... https://developer.hashicorp.com/consul/api-docs/features/consistency
* Health .............. https://developer.hashicorp.com/consul/api-docs/health
* Catalog ............. https://developer.hashicorp.com/consul/api-docs/catalog
* Agent services ...... https://developer.hashicorp.com/consul/api-docs/agent/service
* Connect CA .......... https://developer.hashicorp.com/consul/api-docs/agent/connect
* Status .............. https://developer.hashicorp.com/consul/api-docs/status
* Authentication ...... https://developer.hashicorp.com/consul/api-docs/api-structure

It implements only what a config-sync client needs (see docs/consul-emulator.md
for the exact scope and the known deviations from a real Consul).

Usage in-process::

    with consul_emulator(token=None) as emu:
        client = consul.Consul(host="127.0.0.1", port=emu.port)
        ...
        emu.stop(); emu.start()   # restart on the same port, state kept
        emu.reset()               # wipe state: Consul "lost" its data
        emu.delay = 0.5           # every response delayed by 0.5 s
        emu.fail_with = 500       # every request answered with HTTP 500
        emu.request_count["/v1/kv/foo"]

Standalone::

    python -m tests.consul_emulator --port 8500 [--token SECRET]
"""

from .emulator import ConsulEmulator, consul_emulator
from .util import THREAD_PREFIX, parse_go_duration

__all__ = ["THREAD_PREFIX", "ConsulEmulator", "consul_emulator", "parse_go_duration"]
