"""The `zookeeper` source: a znode's path is a key, its data (UTF-8) the value.

kazoo speaks the protocol on its own threads; everything it reports (replies, watch events,
connection states) is queued and handed to the event loop in one batch (`_post` → `_drain`), and
all state below lives on the loop. ZooKeeper watches fire once, so every event is answered with a
new read that also sets the next watch (read-then-watch in one request: nothing slips between).

What is kept is a mirror of the watched znodes: their data and their children. A dependency's
value is computed from the mirror, and pushed only when no read that concerns it is in flight,
so a tree is never delivered half-read.

kazoo drops every watch when the connection drops (it does not replay them with SetWatches), and a
session expiry drops them on the server too; either way, on reconnection everything watched is
read again with fresh watches, which also catches the changes made meanwhile. While disconnected
nothing is pushed: the runner keeps the last-known values.
"""

from confsync.sources.zookeeper.options import ZooKeeperAuth, ZooKeeperOptions
from confsync.sources.zookeeper.source import ZooKeeperSource

__all__ = ["ZooKeeperAuth", "ZooKeeperOptions", "ZooKeeperSource"]
