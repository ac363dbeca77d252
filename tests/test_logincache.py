"""Repeat logins answered from memory, and every change that must end that."""

import ftplib
import time

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from ftpserver_core.models import DirectoryRule, FTPUserAccount, FTPUserGroup

from .conftest import PASSWORD
from .test_authorizers import query_counter, wait_until_validated  # noqa: F401, F811


def quick(live, username="alice", password=PASSWORD):
    """Log in after a validation round; return (reply or error, queries asked)."""
    wait_until_validated(live)
    ftp = live.client()
    try:
        return ftp.login(username, password), ftp
    except ftplib.error_perm as exc:
        ftp.close()
        return str(exc), None


def logins(live):
    return live.server.handler.authorizer.logins


def test_a_repeat_login_asks_no_query_and_runs_on_the_loop(
    live_ftp,
    make_account,
    query_counter,  # noqa: F811
):
    make_account("alice")
    wait_until_validated(live_ftp)  # the first round sets the baseline
    live_ftp.client("alice").quit()  # hashed, loaded, remembered
    before = query_counter.count()
    for _ in range(5):
        reply, ftp = quick(live_ftp)
        assert reply.startswith("230")
        ftp.voidcmd("NOOP")
        ftp.quit()
    assert query_counter.count() == before


def test_a_wrong_password_is_never_answered_from_memory(live_ftp, make_account):
    make_account("alice")
    wait_until_validated(live_ftp)
    live_ftp.client("alice").quit()
    reply, _ = quick(live_ftp, password="wrong")
    assert reply.startswith("530")


@pytest.mark.parametrize(
    "change",
    [
        "disable_by_save",
        "disable_by_update",
        "expire",
        "password",
        "inactive_user",
        "group_rule",
    ],
)
def test_a_change_in_the_database_applies_to_the_next_login_within_a_round(
    live_ftp, make_account, change
):
    account = make_account("alice", group="staff")
    wait_until_validated(live_ftp)
    live_ftp.client("alice").quit()
    assert logins(live_ftp).lookup("alice", PASSWORD) is not None
    user = account.user
    if change == "disable_by_save":
        account.is_enabled = False
        account.save()
    elif change == "disable_by_update":
        # The admin's bulk action: update() stamps updated_at itself.
        FTPUserAccount.objects.filter(pk=account.pk).update(
            is_enabled=False, updated_at=timezone.now()
        )
    elif change == "expire":
        account.expires_at = timezone.now()
        account.save()
    elif change == "password":
        user.set_password("An0ther-Passw0rd")
        user.save()
    elif change == "inactive_user":
        get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    elif change == "group_rule":
        DirectoryRule.objects.create(
            group=FTPUserGroup.objects.get(name="staff"),
            path="ro",
            permission="elr",
        )
    reply, ftp = quick(live_ftp)
    if change == "group_rule":
        assert reply.startswith("230")
        policy = ftp and live_ftp.server.sessions
        rules = [h.policy.rules for h in list(policy) if getattr(h, "policy", None)]
        assert any(r.template == "ro" for rs in rules for r in rs), rules
        ftp.quit()
    else:
        assert reply.startswith("530"), reply


def test_no_login_from_memory_while_the_database_is_not_validated(
    live_ftp,
    make_account,
    query_counter,  # noqa: F811
):
    """A state thread that cannot reach the database stops validating: logins
    go to the database (and fail there if it is down)."""
    make_account("alice")
    live_ftp.client("alice").quit()
    cache = logins(live_ftp)
    wait_until_validated(live_ftp)
    cache._validated_at = time.monotonic() - 3600
    before = query_counter.count()
    ftp = live_ftp.client("alice")  # asked from the database
    assert query_counter.count() > before
    ftp.quit()


def test_an_account_with_a_session_limit_is_always_checked_in_the_database(
    live_ftp,
    make_account,
    query_counter,  # noqa: F811
):
    make_account("alice", max_sessions=5)
    live_ftp.client("alice").quit()
    wait_until_validated(live_ftp)
    before = query_counter.count()
    live_ftp.client("alice").quit()
    assert query_counter.count() > before


def test_the_cache_is_off_with_the_credential_cache(
    ftp_server,
    make_account,
    settings,
    query_counter,  # noqa: F811
):
    settings.FTPSERVER_CREDENTIAL_CACHE_TTL = 0
    live = ftp_server()
    make_account("alice")
    live.client("alice").quit()
    wait_until_validated(live)
    before = query_counter.count()
    live.client("alice").quit()
    assert query_counter.count() > before


def test_a_save_in_this_process_applies_at_once(live_ftp, make_account):
    """Model signals clear this process's caches; other processes see the
    change at their next round."""
    account = make_account("alice")
    wait_until_validated(live_ftp)
    live_ftp.client("alice").quit()
    assert logins(live_ftp).lookup("alice", PASSWORD) is not None
    account.is_enabled = False
    account.save()
    assert logins(live_ftp).lookup("alice", PASSWORD) is None
    with pytest.raises(ftplib.error_perm, match="^530"):
        live_ftp.client("alice")
