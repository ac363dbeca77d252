"""The credential cache: repeat logins skip the password hash, changes apply at once."""

import ftplib
import threading

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import override_settings

from ftpserver_core.models import FTPUserAccount

from .conftest import PASSWORD
from .test_authorizers import wait_until_validated


class CountingHasher(MD5PasswordHasher):
    """Django's MD5 hasher, counting how often a password is verified."""

    algorithm = "counting_md5"
    verified = 0
    lock = threading.Lock()

    def verify(self, password, encoded):
        with self.lock:
            type(self).verified += 1
        return super().verify(password, encoded)


HASHERS = ["tests.test_credentials.CountingHasher"]


@pytest.fixture
def counting(settings):
    settings.PASSWORD_HASHERS = HASHERS
    CountingHasher.verified = 0
    return CountingHasher


def login(live, username, password=PASSWORD):
    ftp = live.client()
    try:
        ftp.login(username, password)
    finally:
        ftp.close()


def test_repeat_logins_verify_the_password_once(ftp_server, make_account, counting):
    make_account("alice")
    live = ftp_server()
    for _ in range(5):
        login(live, "alice")
    assert counting.verified == 1


@override_settings(FTPSERVER_CREDENTIAL_CACHE_TTL=0)
def test_cache_off_verifies_every_login(ftp_server, make_account, counting):
    make_account("alice")
    live = ftp_server()
    for _ in range(3):
        login(live, "alice")
    assert counting.verified == 3


def test_wrong_password_is_never_served_from_the_cache(
    ftp_server, make_account, counting
):
    make_account("alice")
    live = ftp_server()
    login(live, "alice")
    with pytest.raises(ftplib.error_perm, match="530"):
        login(live, "alice", "not-the-password")
    login(live, "alice")
    assert counting.verified == 2  # the good one once, the bad one once


def test_password_change_invalidates_within_a_round(ftp_server, make_account, counting):
    """The repeat logins answered from memory (logincache.py) see the change
    at the state thread's next round."""
    account = make_account("alice")
    live = ftp_server()
    login(live, "alice")
    user = account.user
    user.set_password("a-new-password")
    user.save()
    wait_until_validated(live)
    with pytest.raises(ftplib.error_perm, match="530"):
        login(live, "alice")
    login(live, "alice", "a-new-password")


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"is_enabled": False}, "account_disabled"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "account_expired"),
    ],
)
def test_disabled_or_expired_account_refused_despite_cache(
    ftp_server, make_account, counting, recorder, change, reason
):
    account = make_account("alice")
    live = ftp_server()
    login(live, "alice")
    FTPUserAccount.objects.filter(pk=account.pk).update(**change)
    wait_until_validated(live)  # see test_password_change_invalidates_within_a_round
    with pytest.raises(ftplib.error_perm, match="530"):
        login(live, "alice")
    assert recorder.wait_for("ftp_login_failed")[-1]["reason"] == reason
    assert counting.verified == 1  # served from the cache, refused all the same


def test_inactive_user_refused_despite_cache(
    ftp_server, make_account, counting, recorder
):
    account = make_account("alice")
    live = ftp_server()
    login(live, "alice")
    account.user.is_active = False
    account.user.save()
    wait_until_validated(live)  # see test_password_change_invalidates_within_a_round
    with pytest.raises(ftplib.error_perm, match="530"):
        login(live, "alice")
    assert recorder.wait_for("ftp_login_failed")[-1]["reason"] == "inactive_user"


def test_other_backends_are_not_cached(ftp_server, make_account, counting):
    make_account("alice")
    backend = "tests.test_credentials.ModelBackendLookalike"
    with override_settings(AUTHENTICATION_BACKENDS=[backend]):
        live = ftp_server()
        for _ in range(3):
            login(live, "alice")
    assert counting.verified == 3


class ModelBackendLookalike:
    """A backend that is not ModelBackend (as an LDAP backend would be)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        from django.contrib.auth import get_user_model

        user = get_user_model()._default_manager.filter(username=username).first()
        if user is not None and user.check_password(password):
            return user
        return None

    def get_user(self, user_id):
        return None
