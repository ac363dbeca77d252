"""Repeat logins answered from memory: no database query, no worker thread.

A scanner or a camera logs in once per file. After a login that Django's
ModelBackend verified, the server keeps (for ``FTPSERVER_CREDENTIAL_CACHE_TTL``
seconds) a keyed digest of the password and the account's resolved policy.
The next login with the same password is then answered on the IO loop at
once, when all of this holds:

- the state thread has validated the cache within the last few rounds: each
  round it rebuilds, in two queries, the policy of every account in the
  cache from the database (account, user, group, home, rules) and drops
  each entry whose policy, password or ``is_active`` is no longer what it
  holds, however the change was made (a form, ``update()``, raw SQL);
  entries unused for ``IDLE`` seconds are dropped rather than validated;
  while the database does not answer, no login is answered from memory;
- the policy lets the login in now (enabled, not expired, TLS, networks);
- the account has no session limit (whose check needs the database) and the
  per-address limit admits it from memory.

A save or a delete made in this process (model signals) clears the cache at
once; a change made elsewhere (the admin of another process, ``update()``,
raw SQL) applies to logins within about a round (a second). Sessions
already open are ended by the state layer as before. Only users verified by ModelBackend are cached (an LDAP
backend is asked every time).
"""

import hashlib
import hmac
import secrets
import threading
import time
import weakref
from dataclasses import dataclass

from .conf import settings
from .credentials import MAX_ENTRIES, cacheable
from .policy import password_stamp

# Rounds of the state thread a validation stays good for: past it (the
# database is slow or down) logins go to the database again.
FRESH_ROUNDS = 3
# Seconds an entry may go unused before it is dropped (not validated again).
IDLE = 60.0


@dataclass(slots=True)
class _Entry:
    user_id: object
    stamp: str  # password_stamp() of the stored hash the password matched
    digest: bytes
    policy: object
    verified_at: float
    used_at: float


# The caches of this process's servers: a save or a delete made in this
# process (the admin of an embedded server, a management command, a test)
# clears them at once instead of at the next round.
_caches = weakref.WeakSet()


def clear_all():
    """Forget every login cached by this process's servers."""
    for cache in list(_caches):
        cache.clear()


class LoginCache:
    """Per-server cache of verified logins, kept valid by the state thread."""

    def __init__(self):
        # A per-process key: the digests are useless outside this process.
        self._key = secrets.token_bytes(32)
        self._entries = {}
        self._lock = threading.Lock()
        self._validated_at = None
        # Bumped at every clear: a login that loaded its policy before a
        # clear must not store it after (it may be what changed).
        self.generation = 0
        _caches.add(self)
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
            used_at=time.monotonic(),
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
        entry.used_at = now
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
        """Drop entries the database no longer agrees with; mark the cache validated."""
        now = time.monotonic()
        with self._lock:
            for username, entry in list(self._entries.items()):
                if now - entry.used_at > IDLE:
                    del self._entries[username]
            cached = {entry.user_id: entry.policy for entry in self._entries.values()}
            generation = self.generation
        current = _current_policies(cached) if cached else {}
        with self._lock:
            if generation == self.generation:
                for username, entry in list(self._entries.items()):
                    if current.get(entry.user_id) != entry.policy:
                        del self._entries[username]
        self._validated_at = now


def _current_policies(cached):
    """Rebuild the policies of ``cached`` users' accounts from the database.

    Two queries whatever their number. A user whose account is gone,
    disabled as a Django user, or whose home is now refused maps to None.
    """
    import dataclasses

    from django.db.models import Q

    from .models import DirectoryRule, FTPUserAccount
    from .policy import LoginRefused, resolve_policy

    accounts = list(
        FTPUserAccount.objects.select_related(
            "user", "group__home_directory", "home_directory"
        ).filter(user_id__in=list(cached))
    )
    owners = Q(account__in=[a.pk for a in accounts])
    groups = {a.group_id for a in accounts if a.group_id}
    homes = {a.home_directory_id for a in accounts if a.home_directory_id}
    homes |= {a.group.home_directory_id for a in accounts if a.group_id}
    homes.discard(None)
    if groups:
        owners |= Q(group__in=groups)
    if homes:
        owners |= Q(home_directory__in=homes)
    rules = list(DirectoryRule.objects.filter(owners)) if accounts else []
    current = {}
    for account in accounts:
        if not getattr(account.user, "is_active", True):
            continue
        group = account.group
        home_dir = account.home_directory or (group.home_directory if group else None)
        own = [
            rule
            for rule in rules
            if rule.account_id == account.pk
            or (group is not None and rule.group_id == group.pk)
            or (home_dir is not None and rule.home_directory_id == home_dir.pk)
        ]
        try:
            policy = resolve_policy(account, own)
        except LoginRefused:
            continue
        current[account.user_id] = dataclasses.replace(
            policy, password_stamp=password_stamp(account.user.password)
        )
    return current
