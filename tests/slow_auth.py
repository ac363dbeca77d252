"""An authentication backend that takes its time and counts its calls.

It stands in for a slow password hash (or LDAP server) where a test needs the
login queue to be deterministic: each call sleeps ``SlowBackend.delay``.
"""

import threading
import time

from django.contrib.auth.backends import ModelBackend


class SlowBackend(ModelBackend):
    delay = 0.5
    calls = []
    _lock = threading.Lock()

    def authenticate(self, request, username=None, password=None, **kwargs):
        with self._lock:
            SlowBackend.calls.append(username)
        time.sleep(self.delay)
        return super().authenticate(
            request, username=username, password=password, **kwargs
        )

    @classmethod
    def reset(cls, delay=0.5):
        with cls._lock:
            cls.calls = []
        cls.delay = delay
