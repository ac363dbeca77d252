"""Authenticate FTP logins through Django auth and load each session's policy.

``DjangoAuthorizer.login()`` calls ``django.contrib.auth.authenticate()``, so
every backend in ``AUTHENTICATION_BACKENDS`` (LDAP included) works. It hashes
a password and queries the database, so the handler runs it in a worker
thread, never on the IO loop. Once a session is logged in, its
:class:`~ftpserver_core.policy.SessionPolicy` takes over as its authorizer.
"""

import dataclasses
import logging
import os
import secrets

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.hashers import make_password
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)

from . import anonymous
from .conf import settings
from .credentials import CredentialCache
from .defender.addresses import address_key
from .logincache import LoginCache
from .policy import LoginRefused, load_policy

logger = logging.getLogger(__name__)


# The detail of a refusal for a user name no account has.
UNKNOWN_USER = "unknown user"


def _schema_error(exc):
    """True for SQLite's OperationalError about the schema (migrations not run):
    a configuration error, not an unavailable database."""
    return "no such table" in str(exc) or "no such column" in str(exc)


class LoginOutcome(tuple):
    """``(policy, reason)`` of a login, plus whether the user name is unknown.

    A 2-tuple, as before; ``unknown_user`` is for the defender (an unknown
    name scores more than a wrong password) and never reaches the client.
    """

    unknown_user = False

    @classmethod
    def refused(cls, reason, unknown_user=False):
        outcome = cls((None, reason))
        outcome.unknown_user = unknown_user
        return outcome


class DjangoAuthorizer:
    """pyftpdlib authorizer over Django auth; sessions registered in the shared state.

    ``state`` is the server's :class:`~ftpserver_core.state.SharedState`;
    without one (an authorizer used on its own) sessions are counted in
    this object only.
    """

    def __init__(self, state=None, max_per_address=None):
        if state is None:
            from .state import SharedState
            from .state.memory import MemoryBackend

            # Nothing heartbeats here: sessions count until they close.
            state = SharedState(None, MemoryBackend(expiry=float("inf")), node="")
        self.state = state
        self.max_per_address = max_per_address
        self.credentials = CredentialCache()
        self.logins = LoginCache()

    def quick_login(self, username, password, remote_ip, tls, session):
        """Answer a repeat login from memory (on the loop); None: ask the database.

        Raise LoginRefused for a per-address limit (admission from memory).
        """
        policy = self.logins.lookup(username, password)
        if policy is None or policy.max_sessions is not None:
            return None
        if not self.state.backend.shared:
            return None  # the memory backend: its check is as cheap as any
        if policy.refusal(remote_ip, tls) is not None:
            return None  # the database path says why, and audits it
        if not os.path.isdir(policy.home):
            return None
        return self._register(policy, remote_ip, tls, session)

    def _cached_user(self, username, password):
        """Return the user if the cache vouches for this password, else None."""
        if not settings.CREDENTIAL_CACHE_TTL:
            return None
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            return None
        return user if self.credentials.verify(user, password) else None

    def login(self, username, password, remote_ip, tls, session=None):
        """Return ``(policy, None)`` for a good login, else ``(None, reason)``.

        ``session``: ``{"session_id", "connected_at"}`` of the handler, for
        its registration among the live sessions.

        Runs in a worker thread. Never raises: a database that fails becomes
        the reason ``database_unavailable``, other errors ``server_error``;
        both are logged.
        """
        close_old_connections()
        try:
            try:
                reused = connection.connection is not None
                policy = self._login(username, password, remote_ip, tls, session)
            except (InterfaceError, OperationalError):
                if not reused:
                    raise
                # A kept connection (CONN_MAX_AGE) the database closed since
                # the last login, with no health check to notice: once more
                # on a new one.
                connection.close()
                policy = self._login(username, password, remote_ip, tls, session)
        except LoginRefused as refused:
            logger.info(
                "FTP login refused for %r from %s: %s", username, remote_ip, refused
            )
            return LoginOutcome.refused(
                refused.reason, unknown_user=refused.detail == UNKNOWN_USER
            )
        except (InterfaceError, OperationalError) as exc:
            if _schema_error(exc):
                logger.exception("FTP login of %r from %s failed.", username, remote_ip)
                return None, "server_error"
            logger.error(
                "FTP login of %r from %s: the database is unavailable (%s).",
                username,
                remote_ip,
                exc,
            )
            return None, "database_unavailable"
        except Exception:
            logger.exception("FTP login of %r from %s failed.", username, remote_ip)
            return None, "server_error"
        finally:
            close_old_connections()
        return policy, None

    def _login(self, username, password, remote_ip, tls, session=None):
        generation = self.logins.generation
        if anonymous.claims(username):
            # No user, no password hash: the "password" is an e-mail address.
            policy = anonymous.build_policy(password)
            return self._register(policy, remote_ip, tls, session)
        user = self._cached_user(username, password)
        cached = user is not None
        if user is None:
            user = authenticate(None, username=username, password=password)
            if user is None:
                raise LoginRefused(*self._why_not(username))
        if not getattr(user, "is_active", True):
            raise LoginRefused("inactive_user")
        policy = load_policy(user)
        reason = policy.refusal(remote_ip, tls)
        if reason == "tls_required" and cached:
            # A refusal must take as long as a wrong password's (a hash), or
            # its timing would tell a right password sent in clear.
            make_password(password)
        if reason:
            raise LoginRefused(reason)
        if not cached:
            # Only now: a password sent in clear for an account that requires
            # TLS is never remembered.
            self.credentials.remember(user, password)
        policy.ensure_home()
        self.logins.remember(
            username, user, password, policy, generation, trusted=cached
        )
        return self._register(policy, remote_ip, tls, session)

    def _register(self, policy, remote_ip, tls, session):
        """Register the session of ``policy``; return the policy with its id."""
        session = session or {}
        session_id = session.get("session_id") or secrets.token_hex(8)
        # Atomic on every process and node sharing the state: the limits
        # are checked and the session registered in one transaction, which
        # also records the last login.
        self.state.open_session(
            policy,
            {
                "session_id": session_id,
                "remote_ip": remote_ip,
                "address_key": address_key(remote_ip),
                "tls": tls,
                "connected_at": session.get("connected_at"),
            },
            self.max_per_address,
        )
        return dataclasses.replace(policy, session_id=session_id)

    @staticmethod
    def _why_not(username):
        """Tell an inactive user from bad credentials (for the audit, not the client)."""
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            return "bad_credentials", UNKNOWN_USER
        if not getattr(user, "is_active", True):
            return ("inactive_user",)
        return ("bad_credentials",)

    # --- sessions

    def close_session(self, policy):
        """Forget the session ``policy`` was issued to (from any thread)."""
        if policy.session_id:
            self.state.session_closed(policy.session_id)

    def session_count(self, account_id):
        """Return how many live sessions the account has (every process)."""
        return self.state.count_sessions(account_id)

    # --- pyftpdlib authorizer interface, before login

    def has_user(self, username):
        return False

    def has_perm(self, username, perm, path=None):
        return False

    def get_perms(self, username):
        return ""

    def get_home_dir(self, username):
        raise LoginRefused("home_unavailable")

    def get_msg_login(self, username):
        return "Login successful."

    def get_msg_quit(self, username):
        return "Goodbye."

    def impersonate_user(self, username, password):
        """Do nothing: every session runs as the server's own OS user."""

    def terminate_impersonation(self, username):
        """Do nothing: every session runs as the server's own OS user."""
