"""Scores of misbehaviour in a sliding window, bounded in memory."""

import collections


class ScoreBoard:
    """Points per key (an address network or a user name) over ``window`` seconds.

    Loop-thread only. At most ``max_keys`` keys are kept: past it the key
    idle the longest is forgotten, so a flood of fresh addresses cannot grow
    the memory without bound.
    """

    def __init__(self, window, max_keys=100_000):
        self.window = window
        self.max_keys = max_keys
        self._keys = collections.OrderedDict()  # key -> deque of (time, points)

    def add(self, key, points, now):
        """Add ``points`` to ``key``; return its total within the window."""
        events = self._keys.get(key)
        if events is None:
            events = self._keys[key] = collections.deque()
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        events.append((now, points))
        return self._total(events, now)

    def total(self, key, now):
        """Return ``key``'s points within the window."""
        events = self._keys.get(key)
        return 0 if events is None else self._total(events, now)

    def _total(self, events, now):
        horizon = now - self.window
        while events and events[0][0] <= horizon:
            events.popleft()
        return sum(points for _, points in events)

    def reset(self, key):
        """Forget ``key`` (after a ban: the ban is the punishment)."""
        self._keys.pop(key, None)

    def __len__(self):
        return len(self._keys)
