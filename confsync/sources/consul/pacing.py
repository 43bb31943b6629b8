"""How soon each poll may ask Consul again.

- consul-template's rate limit: at most one request per 100 ms per watch (watch/view.go,
  `rateLimiter`; consul-template#1279).
- A token bucket against churn: Consul's blocking-query guide warns that a busy resource wakes a
  query on every write, and advises clients to slow down (api-docs/features/blocking.mdx, "Rate
  limits"). A reply whose index moved but changed no watched value spends a token; with the bucket
  empty, the poll asks at most once per `CHURN_REFILL`. A reply that changes a value refills it.
- Early replies are judged against the wait the server applied: Consul caps `wait` at its
  `max_query_time` and answers with the same index, saying nothing (agent/consul/rpc.go,
  `RPCQueryTimeout`). A same-index reply held at least `MIN_HOLD` is taken as that cap; only one
  that came back sooner than half of the applied wait is a misbehaving server, whose polls then
  slow down exponentially.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

MIN_INTERVAL = 0.1
CHURN_BURST = 5.0  # replies that change nothing allowed in a row before slowing down
CHURN_REFILL = 1.0  # seconds per token: then at most one such reply a second
MIN_HOLD = 0.5  # a same-index reply held at least this long is the server's cap on waits


@dataclass
class Pace:
    """One poll's pacing state."""

    spins: int = 0  # early replies with nothing new, in a row
    refusals: int = 0  # refusals (403, 400) in a row
    tokens: float = CHURN_BURST
    refilled: float = field(default_factory=time.monotonic)

    def delay(self, wait: float) -> float:
        """Seconds between the start of the last request and the next one."""
        delay = MIN_INTERVAL
        if self.spins:
            delay = min(wait, MIN_INTERVAL * 2 ** self.spins)
        if self.refusals:
            delay = max(delay, random.uniform(0.5, 1.0) * min(wait, 2.0 ** self.refusals))
        self._refill()
        if self.tokens < 1:
            delay = max(delay, (1 - self.tokens) * CHURN_REFILL)
        return delay

    def churned(self) -> None:
        """The index moved but no watched value changed: spend a token."""
        self._refill()
        self.tokens -= 1

    def changed(self) -> None:
        self.tokens = CHURN_BURST

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(CHURN_BURST, self.tokens + (now - self.refilled) / CHURN_REFILL)
        self.refilled = now


@dataclass
class ServerWait:
    """What the server does with our `wait`, learned from same-index replies (per source)."""

    cap: float | None = None  # the last hold of a same-index reply of at least MIN_HOLD

    def early(self, held: float, wait: float) -> bool:
        """A same-index reply held `held` seconds for a requested `wait`: too early to be honest?"""
        if held >= MIN_HOLD:
            self.cap = held
            return False
        applied = min(wait, self.cap) if self.cap is not None else wait
        return held < applied / 2
