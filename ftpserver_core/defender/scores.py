"""Scores of misbehaviour in a sliding window, bounded in memory."""

import collections

# A key's window is kept as this many buckets: memory per key is bounded
# whatever the rate of events (a sprayed user name gets millions).
BUCKETS = 30


class ScoreBoard:
    """Points per key (an address network or a user name) over ``window`` seconds.

    Loop-thread only. Points are summed in ``BUCKETS`` buckets per window
    (an event may count up to one bucket's width longer than the window). At
    most ``max_keys`` keys are kept: past it the key idle the longest is
    forgotten, so a flood of fresh addresses cannot grow the memory without
    bound.
    """

    def __init__(self, window, max_keys=100_000):
        self.window = window
        self.width = window / BUCKETS
        self.max_keys = max_keys
        # key -> deque of [bucket start, points]
        self._keys = collections.OrderedDict()

    def add(self, key, points, now):
        """Add ``points`` to ``key``; return its total within the window."""
        buckets = self._keys.get(key)
        if buckets is None:
            buckets = self._keys[key] = collections.deque()
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        start = now - now % self.width if self.width else now
        if buckets and buckets[-1][0] == start:
            buckets[-1][1] += points
        else:
            buckets.append([start, points])
        return self._total(buckets, now)

    def total(self, key, now):
        """Return ``key``'s points within the window."""
        buckets = self._keys.get(key)
        return 0 if buckets is None else self._total(buckets, now)

    def _total(self, buckets, now):
        horizon = now - self.window - self.width
        while buckets and buckets[0][0] <= horizon:
            buckets.popleft()
        return sum(points for _, points in buckets)

    def reset(self, key):
        """Forget ``key`` (after a ban: the ban is the punishment)."""
        self._keys.pop(key, None)

    def __len__(self):
        return len(self._keys)
