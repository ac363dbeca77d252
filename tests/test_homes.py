"""Where a home directory may be (issue 10, A): the template validator, the
admin, the check at login on the real path, and real FTP logins.

Rows saved before the validators knew better are made with ``objects.create``,
which runs no validator: the login check must refuse them on its own.
"""

import ftplib
import os

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse

from ftpserver_core.models import (
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
    validate_path_template,
    validate_rule_path,
)
from ftpserver_core.policy import LoginRefused, load_policy

from .conftest import PASSWORD

HOME_ADD = reverse("admin:ftpserver_core_homedirectory_add")


def refusal(value):
    with pytest.raises(ValidationError) as info:
        validate_path_template(value)
    (message,) = info.value.messages
    assert repr(value) in message, message
    return info.value.code, message


# --- the template validator


@pytest.mark.parametrize(
    ("value", "code", "says"),
    [
        ("/", "unsafe_home", "is the root directory /; expected a directory such"),
        ("/etc", "unsafe_home", "is the system directory '/etc'; expected a data"),
        ("/etc/ftp/{username}", "unsafe_home", "inside the system directory '/etc'"),
        ("/var/{username}", "unsafe_home", "inside the system directory '/var'"),
        ("/var/lib/{username}", "unsafe_home", "inside the system directory '/var'"),
        ("/usr/local/ftp", "unsafe_home", "inside the system directory '/usr'"),
        ("/proc/self/root", "unsafe_home", "inside the system directory '/proc'"),
        ("/root/{username}", "unsafe_home", "inside the system directory '/root'"),
        ("/lib64/ftp", "unsafe_home", "inside the system directory '/lib64'"),
        # A user named "etc" would get /etc.
        ("/{username}", "unsafe_home", "is directly under /; expected a directory"),
        ("/{group}/{username}", "unsafe_home", "is directly under /"),
        ("/srv", "unsafe_home", "is directly under /"),
        ("/srv/{username}/../../..", "not_normalised", "has a '..' component"),
        ("/srv/./ftp", "not_normalised", "has a '.' component"),
        ("/srv//ftp", "not_normalised", "has an empty component (// or a trailing"),
        ("/srv/ftp/", "not_normalised", "has an empty component"),
        (
            "/srv/{username.__class__.__mro__}",
            "invalid_template",
            "Path '/srv/{username.__class__.__mro__}' has "
            "{username.__class__.__mro__}, which reads an attribute or an item of "
            "a placeholder; expected the plain {username} or {group}.",
        ),
        ("/srv/{username[0]}", "invalid_template", "reads an attribute or an item"),
        (
            "/srv/{username!r}",
            "invalid_template",
            "Path '/srv/{username!r}' has {username!r}, with a conversion (!r); "
            "expected the plain {username}.",
        ),
        (
            "/srv/{username:>300}",
            "invalid_template",
            "has {username:>300}, with a format spec (:>300); expected the plain",
        ),
        # An empty group padded with dots would be "..".
        ("/srv/ftp/{group:.>2}/x", "invalid_template", "with a format spec (:.>2)"),
        ("/srv/{username:{group}}", "invalid_template", "with a format spec"),
        (
            "/srv/{user}",
            "invalid_template",
            "Path '/srv/{user}' has an unknown placeholder {user}; expected "
            "{username} or {group}.",
        ),
        (
            "/srv/{",
            "invalid_template",
            "Path '/srv/{' is not a valid template (Single '{' encountered in format "
            "string); expected {username} and {group} as placeholders and any other "
            "brace doubled ({{ or }}).",
        ),
        (
            "/srv/x{username}",
            "partial_placeholder",
            "has a placeholder inside a component ('x{username}'); expected "
            "{username} or {group} as a whole component",
        ),
        ("/srv/{username}.d", "partial_placeholder", "('{username}.d')"),
        ("/srv/{group}{username}", "partial_placeholder", "('{group}{username}')"),
    ],
)
def test_unsafe_home_templates_are_refused(value, code, says):
    refused_code, message = refusal(value)
    assert refused_code == code, message
    assert says in message


@pytest.mark.parametrize(
    "value",
    [
        "/srv/ftp",
        "/srv/ftp/{username}",
        "/srv/{group}/{username}",
        "/srv/{username}/incoming",
        "/home/{username}",
        "/data/ftp/{group}",
        "/mnt/storage/{username}",
        "/var/ftp",
        "/var/ftp/{username}",
        "/opt/ftp/{username}",
        "/srv/{{literal}}/{username}",
    ],
)
def test_data_directories_are_accepted(value):
    validate_path_template(value)


@override_settings(FTPSERVER_HOME_ROOTS=["/srv/ftp", "/var/lib/ftpadmin/homes"])
@pytest.mark.parametrize(
    "value",
    [
        "/srv/ftp",
        "/srv/ftp/{username}",
        "/srv/ftp/{group}/{username}",
        # A root chosen by the operator may be a service's directory in /var.
        "/var/lib/ftpadmin/homes/{username}",
    ],
)
def test_homes_inside_the_roots_are_accepted(value):
    validate_path_template(value)


@override_settings(FTPSERVER_HOME_ROOTS=["/srv/ftp", "/var/lib/ftpadmin/homes"])
@pytest.mark.parametrize(
    "value",
    [
        "/srv/{username}",
        "/srv/ftpx/{username}",  # a name that starts like the root
        "/home/{username}",
        "/etc/{username}",
        "/var/lib/{username}",
    ],
)
def test_homes_outside_the_roots_are_refused(value):
    code, message = refusal(value)
    assert code == "outside_home_roots"
    assert (
        "is outside FTPSERVER_HOME_ROOTS ['/srv/ftp', '/var/lib/ftpadmin/homes']; "
        "expected a directory inside one of them." in message
    )


@override_settings(FTPSERVER_HOME_ROOTS=["/srv/ftp/username"])
def test_a_placeholder_is_no_directory_name():
    # /srv/ftp/{username} renders to /srv/ftp/username for one user only.
    assert refusal("/srv/ftp/{username}")[0] == "outside_home_roots"


@pytest.mark.parametrize(
    "value",
    ["{group:.>2}", "pub/{username!r}", "{username.__class__}", "in/{username:>9}"],
)
def test_rule_paths_refuse_format_tricks(value):
    with pytest.raises(ValidationError) as info:
        validate_rule_path(value)
    assert info.value.code == "invalid_template"
    assert repr(value) in info.value.messages[0]


# --- the admin uses the model's validators


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/", "Path '/' is the root directory /"),
        ("/etc", "Path '/etc' is the system directory '/etc'"),
        ("/srv/{username}/../../..", "has a '..' component"),
        ("/srv/{username.__class__.__mro__}", "reads an attribute or an item"),
        ("/srv/{username!r}", "with a conversion (!r)"),
        ("/srv/{username:>300}", "with a format spec (:>300)"),
    ],
)
def test_the_admin_refuses_unsafe_home_paths(admin_client, path, says):
    response = admin_client.post(
        HOME_ADD,
        {
            "path": path,
            "name": "",
            "create_on_login": "on",
            "description": "",
            "rules-TOTAL_FORMS": "0",
            "rules-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200, "saved"
    errors = response.context["adminform"].form.errors
    assert any(says in e for e in errors["path"]), errors
    assert not HomeDirectory.objects.exists()


# --- the check at login, on the real path


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "srv"
    path.mkdir()
    return os.path.realpath(path)


def legacy_account(username, home=None, group_home=None, password=None):
    """An account whose home rows skipped the validators (saved before them)."""
    user = get_user_model().objects.create_user(username, password=password)
    group = None
    if group_home is not None:
        group = FTPUserGroup.objects.create(
            name=f"{username}-group",
            home_directory=HomeDirectory.objects.create(path=group_home),
        )
    home_dir = HomeDirectory.objects.create(path=home) if home is not None else None
    return FTPUserAccount.objects.create(
        user=user, group=group, home_directory=home_dir
    )


def refused(account):
    with pytest.raises(LoginRefused) as info:
        load_policy(account.user)
    assert info.value.reason == "home_unavailable"
    return info.value.detail


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("home", "detail"),
    [
        ("/", "'/' is the root directory /"),
        ("/etc", "'/etc' is the system directory '/etc'"),
        ("/{username}", "'/alice' is directly under /"),
        ("/srv/{username}/../../..", "'/' is the root directory /"),
        ("/srv/{username.__class__.__mro__}", "reads an attribute or an item"),
        ("/srv/{username:>300}", "with a format spec (:>300)"),
    ],
)
def test_a_legacy_home_is_refused_at_login(home, detail):
    assert detail in refused(legacy_account("alice", group_home=home))


@pytest.mark.django_db
def test_a_home_reached_through_a_link_into_etc_is_refused(root):
    os.symlink("/etc", os.path.join(root, "alice"))
    account = legacy_account("alice", home=root + "/{username}")
    assert refused(account) == (
        "'/etc' is the system directory '/etc'; expected a data directory such "
        "as /srv/ftp, /home/ftp or /var/ftp, or one inside FTPSERVER_HOME_ROOTS"
    )


@pytest.mark.django_db
def test_a_legacy_rule_path_with_a_format_spec_is_refused(root):
    account = legacy_account("alice", home=root + "/{username}")
    # Padding the empty group with dots: "..", the home's parent.
    DirectoryRule.objects.create(account=account, path="{group:.>2}", permission="e")
    assert refused(account) == (
        "path template '{group:.>2}' has {group:.>2}, with a format spec (:.>2); "
        "expected the plain {group}"
    )


@pytest.mark.django_db
def test_home_roots_are_enforced_at_login(root, tmp_path):
    account = legacy_account("alice", home=root + "/{username}")
    elsewhere = str(tmp_path / "elsewhere")
    with override_settings(FTPSERVER_HOME_ROOTS=[elsewhere]):
        assert refused(account) == (
            f"{os.path.join(root, 'alice')!r} is outside FTPSERVER_HOME_ROOTS "
            f"[{elsewhere!r}]; expected a directory inside one of them"
        )
    with override_settings(FTPSERVER_HOME_ROOTS=[root]):
        assert load_policy(account.user).home == os.path.join(root, "alice")


@pytest.mark.django_db
def test_a_root_behind_a_link_counts_by_its_real_path(root, tmp_path):
    link = str(tmp_path / "ftp-link")
    os.symlink(root, link)
    account = legacy_account("alice", home=link + "/{username}")
    with override_settings(FTPSERVER_HOME_ROOTS=[link]):
        assert load_policy(account.user).home == os.path.join(root, "alice")


@pytest.mark.django_db
@pytest.mark.parametrize("roots", [["/"], "/", []])
def test_bad_home_roots_refuse_every_home(root, roots):
    # The system check reports them; a server whose checks were silenced
    # must not read ["/"] as "anywhere".
    account = legacy_account("alice", home=root + "/{username}")
    with override_settings(FTPSERVER_HOME_ROOTS=roots):
        assert "is outside FTPSERVER_HOME_ROOTS" in refused(account)


@pytest.mark.django_db
def test_a_home_swapped_for_a_link_after_the_check_is_refused(root, tmp_path):
    account = legacy_account("alice", home=root + "/{username}")
    policy = load_policy(account.user)
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", policy.home)
    with pytest.raises(LoginRefused) as info:
        policy.ensure_home()
    assert info.value.reason == "home_unavailable"
    assert info.value.detail == (
        f"{policy.home!r} became a link to {str(tmp_path / 'secret')!r} after it "
        "was checked"
    )


# --- real logins


def login_reply(server, username):
    ftp = server.client()
    try:
        return ftp.login(username, PASSWORD)
    except ftplib.error_perm as exc:
        return str(exc)
    finally:
        ftp.close()


def test_a_group_home_of_slash_serves_no_etc_over_ftp(ftp_server, recorder):
    # The attack of the issue: a group home of / and RETR /etc/shadow.
    legacy_account("mallory", group_home="/", password=PASSWORD)
    server = ftp_server()
    assert login_reply(server, "mallory").startswith("530")
    (failed,) = recorder.wait_for("ftp_login_failed")
    assert failed["reason"] == "home_unavailable"


def test_a_home_linked_into_etc_serves_nothing_over_ftp(ftp_server, recorder, tmp_path):
    homes = tmp_path / "homes"
    homes.mkdir()
    os.symlink("/etc", homes / "mallory")
    legacy_account("mallory", home=str(homes / "{username}"), password=PASSWORD)
    server = ftp_server()
    assert login_reply(server, "mallory").startswith("530")
    (failed,) = recorder.wait_for("ftp_login_failed")
    assert failed["reason"] == "home_unavailable"


def test_home_roots_over_ftp(ftp_server, tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    legacy_account("in", home=str(inside / "{username}"), password=PASSWORD)
    legacy_account("out", home=str(outside / "{username}"), password=PASSWORD)
    with override_settings(FTPSERVER_HOME_ROOTS=[str(inside)]):
        server = ftp_server()
        assert login_reply(server, "in").startswith("230")
        assert login_reply(server, "out").startswith("530")
    assert (inside / "in").is_dir()
    assert not (outside / "out").exists()


def test_a_named_root_deep_in_root_s_home_is_the_operator_s():
    from ftpserver_core.models.accounts import home_root_problem

    # A project checked out under /root keeps its data there (quickstart).
    assert home_root_problem("/root/project/var/ftp") is None
    assert home_root_problem("/var/lib/ftpadmin/homes") is None
    for shallow in ("/root", "/root/ftp", "/var/ftp2", "/etc/ftp/homes"):
        assert "system directory" in home_root_problem(shallow), shallow
