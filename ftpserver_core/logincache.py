"""Repeat logins answered from memory: no database query, no worker thread.

A scanner or a camera logs in once per file. After a login that Django's
ModelBackend verified, the server keeps (for ``FTPSERVER_CREDENTIAL_CACHE_TTL``
seconds) a keyed digest of the password and the account's resolved policy.
The next login with the same password is then answered on the IO loop at
once, when all of this holds:

- the state thread has validated the cache within the last few rounds: each
  round it drops everything when any account, group, home directory or
  directory rule changed anywhere (their ``changed_at``/``updated_at`` and
  counts), and drops the entry of a user whose password or ``is_active``
  changed; while the database does not answer, no login is answered from
  memory;
- the policy lets the login in now (enabled, not expired, TLS, networks);
- the account has no session limit (whose check needs the database) and the
  per-address limit admits it from memory.

So an admin's change applies to logins within about a round (a second), not
only "at the next login"; sessions already open are ended by the state
layer as before. Only users verified by ModelBackend are cached (an LDAP
backend is asked every time).
"""

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from .conf import settings
from .credentials import MAX_ENTRIES, cacheable
from .policy import password_stamp

# Rounds of the state thread a validation stays good for: past it (the
# database is slow or down) logins go to the database again.
FRESH_ROUNDS = 3


@dataclass(slots=True)
class _Entry:
    user_id: object
    stamp: str  # password_stamp() of the stored hash the password matched
    digest: bytes
    policy: object
    verified_at: float


class LoginCache:
    """Per-server cache of verified logins, kept valid by the state thread."""

    def __init__(self):
        # A per-process key: the digests are useless outside this process.
        self._key = secrets.token_bytes(32)
        self._entries = {}
        self._lock = threading.Lock()
        self._validated_at = None
        self._stamp = None
        # Bumped at every clear: a login that loaded its policy before a
        # clear must not store it after (it may be what changed).
        self.generation = 0
        self.poll_interval = settings.STATE_POLL_INTERVAL

    def _digest(self, user_id, stamp, password):
        message = f"{user_id}\0{stamp}\0{password}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    # --- from a login thread

    def remember(self, username, user, password, policy, generation, trusted=False):
        """Keep a login ModelBackend just verified (and the policy it loaded).

        ``generation``: the cache's, read before the policy was loaded;
        ``trusted``: the credential cache vouched (it holds ModelBackend's only).
        """
        if not settings.CREDENTIAL_CACHE_TTL or not (trusted or cacheable(user)):
            return
        stamp = password_stamp(user.password)
        entry = _Entry(
            user_id=user.pk,
            stamp=stamp,
            digest=self._digest(user.pk, stamp, password),
            policy=policy,
            verified_at=time.monotonic(),
        )
        with self._lock:
            if generation != self.generation:
                return
            self._entries.pop(username, None)
            self._entries[username] = entry
            while len(self._entries) > MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]

    # --- on the loop

    def lookup(self, username, password):
        """Return the policy of a login answerable from memory, or None."""
        ttl = settings.CREDENTIAL_CACHE_TTL
        validated = self._validated_at
        now = time.monotonic()
        if not ttl or validated is None:
            return None
        if now - validated > FRESH_ROUNDS * max(self.poll_interval, 1.0):
            return None
        entry = self._entries.get(username)
        if entry is None:
            return None
        if now - entry.verified_at > ttl:
            with self._lock:
                if self._entries.get(username) is entry:
                    del self._entries[username]
            return None
        if not hmac.compare_digest(
            entry.digest, self._digest(entry.user_id, entry.stamp, password)
        ):
            return None
        return entry.policy

    def forget(self, username):
        with self._lock:
            self._entries.pop(username, None)

    def clear(self):
        with self._lock:
            self._entries.clear()
            self.generation += 1

    # --- the state thread (a participant)

    def sync(self, state=None):
        """Drop what changed in the database; mark the cache validated."""
        stamp = _global_stamp()
        if stamp != self._stamp:
            self.clear()
            self._stamp = stamp
        with self._lock:
            users = {entry.user_id for entry in self._entries.values()}
        if users:
            self._drop_changed_users(users)
        self._validated_at = time.monotonic()

    def _drop_changed_users(self, users):
        from django.contrib.auth import get_user_model

        user_model = get_user_model()
        fields = {f.name for f in user_model._meta.concrete_fields}
        columns = ["pk", "password"] + (["is_active"] if "is_active" in fields else [])
        rows = user_model._default_manager.filter(pk__in=users).values_list(*columns)
        current = {}
        for row in rows:
            active = row[2] if len(row) > 2 else True
            current[row[0]] = password_stamp(row[1]) if active else None
        with self._lock:
            for username, entry in list(self._entries.items()):
                if current.get(entry.user_id) != entry.stamp:
                    del self._entries[username]


def _global_stamp():
    """Counts and newest changes of the tables a policy is built from."""
    from django.db.models import Count, Max

    from .models import DirectoryRule, FTPUserAccount, FTPUserGroup, HomeDirectory

    stamp = []
    for model, field in (
        (FTPUserAccount, "updated_at"),
        (FTPUserGroup, "changed_at"),
        (HomeDirectory, "changed_at"),
        (DirectoryRule, "changed_at"),
    ):
        row = model.objects.aggregate(n=Count("pk"), last=Max(field))
        stamp.append((row["n"], row["last"]))
    return tuple(stamp)
