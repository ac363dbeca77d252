"""An in-memory cache of verified passwords, so repeat logins skip the hash.

Django's PBKDF2 costs about 0.45 s of CPU per check. A scanner that logs in
every few seconds would pay it each time; with the cache, a login whose
password was verified in the last ``FTPSERVER_CREDENTIAL_CACHE_TTL`` seconds
costs one keyed SHA-256. An entry is bound to the user's stored password
hash, so a password change invalidates it at once; disabled, expired and
inactive accounts are checked from the database at every login regardless.
Only users verified by Django's ModelBackend are cached; other backends
(LDAP...) are asked every time.
"""

import hashlib
import hmac
import secrets
import threading
import time

from django.contrib.auth.backends import ModelBackend
from django.utils.module_loading import import_string

from .conf import settings

MAX_ENTRIES = 10_000


class CredentialCache:
    """Remember (user, password) pairs that Django verified recently."""

    def __init__(self):
        # A per-process key: the digests are useless outside this process.
        self._key = secrets.token_bytes(32)
        self._entries = {}
        self._lock = threading.Lock()

    def _digest(self, user, password):
        message = f"{user.pk}\0{user.password}\0{password}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def verify(self, user, password):
        """Return True if ``password`` was verified for ``user`` recently."""
        ttl = settings.CREDENTIAL_CACHE_TTL
        if not ttl:
            return False
        with self._lock:
            entry = self._entries.get(user.pk)
        if entry is None:
            return False
        digest, verified_at = entry
        if time.monotonic() - verified_at > ttl:
            self.forget(user)
            return False
        return hmac.compare_digest(digest, self._digest(user, password))

    def remember(self, user, password):
        """Cache a password that Django's ModelBackend just verified."""
        if not settings.CREDENTIAL_CACHE_TTL or not cacheable(user):
            return
        digest = self._digest(user, password)
        with self._lock:
            self._entries.pop(user.pk, None)
            self._entries[user.pk] = (digest, time.monotonic())
            while len(self._entries) > MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]

    def forget(self, user):
        """Drop ``user``'s entry."""
        with self._lock:
            self._entries.pop(user.pk, None)

    def clear(self):
        """Drop every entry."""
        with self._lock:
            self._entries.clear()


def cacheable(user):
    """Return True for users verified by ModelBackend with a usable password."""
    backend = getattr(user, "backend", None)
    if not backend or not user.has_usable_password():
        return False
    try:
        return issubclass(import_string(backend), ModelBackend)
    except ImportError:
        return False
