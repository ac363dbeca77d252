"""Bandwidth limits per account, shared by its sessions on every process and node.

An account's ``upload_rate`` / ``download_rate`` (bytes/s) holds for all its
transfers together. Each process keeps one token bucket per account and
direction on its IO loop, which its sessions' data channels draw from: a
channel moves a chunk, pays for it, and when the bucket is in debt it is
taken off the loop until the debt is paid (``dtp.DataChannelMixin``).

Across processes and nodes the limit is split by transfers: this process's
share is ``limit * local / (local + others)``, where ``others`` is how many
transfers of the account and direction the other live processes published.
The shared-state thread publishes this process's counts when they change
and, while a limited transfer runs here, reads everyone's each round; so a
transfer starting or ending elsewhere is reflected within about a poll
interval (``FTPSERVER_STATE_POLL_INTERVAL``), one here at once. An account
without limits costs nothing: no bucket, no publishing, no reading.
"""

import threading

from pyftpdlib.ioloop import timer

from .conf import settings

__all__ = ["Bandwidth", "Bucket", "key_for"]

UP, DOWN = "up", "down"

# Seconds of an account's rate one read or send moves at most: pauses stay
# short and even. Bounded by pyftpdlib's buffer sizes and a floor below
# which the system calls would cost more than the pauses save.
CHUNK_SECONDS = 0.1
MIN_CHUNK = 1024
MAX_CHUNK = 65536


def key_for(policy):
    """Return the key whose limit ``policy``'s transfers share.

    The policy's ``bandwidth_key`` if it has one, else its account; a
    session without an account (anonymous) shares its user name's: every
    anonymous session draws from one limit.
    """
    key = getattr(policy, "bandwidth_key", None)
    if key is None:
        key = policy.account_id
    return key if key is not None else policy.username


class Bucket:
    """One key's allowance in one direction in this process, shared by its channels.

    Channels pay after moving a chunk; :meth:`spend` returns how long the
    payer must wait for the bucket to be out of debt. Waiters are thus served
    in the order they paid, each at most one chunk past the rate.
    """

    __slots__ = (
        "owner",
        "key",
        "direction",
        "limit",
        "burst",
        "channels",
        "others",
        "rate",
        "tokens",
        "stamp",
    )

    def __init__(self, owner, key, direction, limit, burst, others=0):
        self.owner = owner
        self.key = key
        self.direction = direction
        self.limit = limit
        self.burst = burst
        self.channels = 0
        self.others = others
        self.rate = float(limit)
        self.stamp = timer()
        self.tokens = self.rate * burst

    def __repr__(self):
        return (
            f"<Bucket {self.key!r} {self.direction} {self.rate:.0f}/{self.limit} B/s "
            f"{self.channels}+{self.others} transfers>"
        )

    def _refill(self, now):
        self.tokens = min(
            self.rate * self.burst, self.tokens + (now - self.stamp) * self.rate
        )
        self.stamp = now

    def spend(self, nbytes):
        """Pay for ``nbytes`` moved; return the seconds to wait (0: none)."""
        now = timer()
        self._refill(now)
        self.tokens -= nbytes
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def retune(self):
        """Set this process's rate from its share of the transfers."""
        self._refill(timer())  # what was earned so far, at the old rate
        local = max(1, self.channels)
        self.rate = max(1.0, self.limit * local / (local + self.others))

    def chunk_size(self):
        """Return the most bytes a channel should move at once."""
        return max(MIN_CHUNK, min(MAX_CHUNK, int(self.limit * CHUNK_SECONDS)))


class Bandwidth:
    """A server's limited transfers: buckets on the loop, shares through the state.

    ``acquire``/``release`` run on the IO loop; ``sync`` in the shared-state
    thread (a participant of :class:`~ftpserver_core.state.SharedState`).
    """

    def __init__(self, server, burst=None):
        self.server = server
        self.burst = settings.BANDWIDTH_BURST if burst is None else burst
        # The loop's: (key, direction) -> Bucket, and the last known number of
        # the other processes' transfers (kept while idle: a transfer
        # starting again assumes they still run until the next answer).
        self._buckets = {}
        self._others = {}
        # key -> {"up": n, "down": n}, written on the loop, read by the thread.
        self._lock = threading.Lock()
        self._counts = {}
        self._published = {}

    # --- on the loop

    def limit_for(self, handler, receive):
        """Return the bucket a transfer of ``handler``'s session draws from, or None."""
        policy = getattr(handler, "policy", None)
        if policy is None:
            return None
        limit = policy.upload_rate if receive else policy.download_rate
        if not limit:
            return None
        return self.acquire(key_for(policy), UP if receive else DOWN, limit)

    def acquire(self, key, direction, limit):
        """Count a transfer of ``key`` in ``direction``; return its bucket."""
        slot = (key, direction)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = Bucket(
                self, key, direction, limit, self.burst, self._others.get(slot, 0)
            )
        else:
            # The newest login's limit (an admin may have changed it).
            bucket.limit = limit
        bucket.channels += 1
        bucket.retune()
        self._count(key, direction, 1)
        return bucket

    def release(self, bucket):
        """Uncount a transfer that ended."""
        bucket.channels -= 1
        if bucket.channels > 0:
            bucket.retune()
        # An idle bucket stays: its tokens say what was used lately (starting
        # a transfer again is no way around the rate); apply() drops it once full.
        self._count(bucket.key, bucket.direction, -1)

    def _count(self, key, direction, delta):
        with self._lock:
            counts = self._counts.setdefault(key, {})
            n = counts.get(direction, 0) + delta
            if n > 0:
                counts[direction] = n
            else:
                counts.pop(direction, None)
                if not counts:
                    del self._counts[key]

    def apply(self, others):
        """Take the other processes' counts ``{(key, direction): n}`` (loop)."""
        self._others.update(others)
        now = timer()
        for slot, bucket in list(self._buckets.items()):
            if slot in others and bucket.others != others[slot]:
                bucket.others = others[slot]
                bucket.retune()
            elif bucket.channels <= 0 and now - bucket.stamp > self.burst:
                del self._buckets[slot]

    # --- in the shared-state thread

    def sync(self, state):
        """Publish this process's counts if changed; read everyone's while needed."""
        with self._lock:
            counts = {key: dict(dirs) for key, dirs in self._counts.items()}
        process = state.process
        if process is None:
            return
        if counts != self._published:
            state.backend.publish_transfers(process, counts)
            self._published = counts
        if not counts or not state.backend.shared:
            return
        totals = state.backend.transfer_counts()
        others = {}
        for key, mine in counts.items():
            total = totals.get(key)
            if total is None:
                total = totals.get(str(key), {})
            for direction, n in mine.items():
                others[(key, direction)] = max(0, total.get(direction, 0) - n)
        self.server.call_on_loop(self.apply, others)
