"""Authenticate FTP logins through Django auth and load each session's policy.

``DjangoAuthorizer.login()`` calls ``django.contrib.auth.authenticate()``, so
every backend in ``AUTHENTICATION_BACKENDS`` (LDAP included) works. It hashes
a password and queries the database, so the handler runs it in a worker
thread, never on the IO loop. Once a session is logged in, its
:class:`~ftpserver_core.policy.SessionPolicy` takes over as its authorizer.
"""

import logging
import threading

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.hashers import make_password
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)
from django.utils import timezone

from .conf import settings
from .credentials import CredentialCache
from .models import FTPUserAccount
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
    """pyftpdlib authorizer over Django auth, with per-account session counts."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sessions = {}
        self.credentials = CredentialCache()

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

    def login(self, username, password, remote_ip, tls):
        """Return ``(policy, None)`` for a good login, else ``(None, reason)``.

        Runs in a worker thread. Never raises: a database that fails becomes
        the reason ``database_unavailable``, other errors ``server_error``;
        both are logged.
        """
        close_old_connections()
        try:
            try:
                reused = connection.connection is not None
                policy = self._login(username, password, remote_ip, tls)
            except (InterfaceError, OperationalError):
                if not reused:
                    raise
                # A kept connection (CONN_MAX_AGE) the database closed since
                # the last login, with no health check to notice: once more
                # on a new one.
                connection.close()
                policy = self._login(username, password, remote_ip, tls)
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

    def _login(self, username, password, remote_ip, tls):
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
        if not self.open_session(policy):
            raise LoginRefused("too_many_sessions", f"limit {policy.max_sessions}")
        try:
            FTPUserAccount.objects.filter(pk=policy.account_id).update(
                last_login_at=timezone.now(), last_login_ip=remote_ip or None
            )
        except Exception:
            self.close_session(policy)
            raise
        return policy

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

    # --- session limits (shared by the worker threads and the loop)

    def open_session(self, policy):
        """Count a new session of the account; False when its limit is reached."""
        with self._lock:
            count = self._sessions.get(policy.account_id, 0)
            if policy.max_sessions is not None and count >= policy.max_sessions:
                return False
            self._sessions[policy.account_id] = count + 1
            return True

    def close_session(self, policy):
        """Forget one session of the account."""
        with self._lock:
            count = self._sessions.get(policy.account_id, 0) - 1
            if count > 0:
                self._sessions[policy.account_id] = count
            else:
                self._sessions.pop(policy.account_id, None)

    def session_count(self, account_id):
        """Return how many sessions the account has open on this server."""
        with self._lock:
            return self._sessions.get(account_id, 0)

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
