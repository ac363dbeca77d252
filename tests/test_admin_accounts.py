"""The accounts side of the admin: lists, the one-form creation, passwords,
the user page inline, the effective policy, actions and permissions."""

import datetime
import ftplib
import html
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from ftpserver_core.models import (
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
)
from ftpserver_core.policy import LoginRefused, resolve_policy

from .conftest import PASSWORD
from .test_authorizers import wait_until_validated

User = get_user_model()
CHANGELIST = reverse("admin:ftpserver_core_ftpuseraccount_changelist")
ADD = reverse("admin:ftpserver_core_ftpuseraccount_add")
GROUPS = reverse("admin:ftpserver_core_ftpusergroup_changelist")
HOMES = reverse("admin:ftpserver_core_homedirectory_changelist")
NEW_PASSWORD = "An0ther-Passw0rd!"
NOW = timezone.now()


def change_url(account):
    return reverse("admin:ftpserver_core_ftpuseraccount_change", args=[account.pk])


def password_url(account):
    return reverse("admin:ftpserver_core_ftpuseraccount_password", args=[account.pk])


class World:
    """Two groups sharing a home template, and accounts made on demand."""

    def __init__(self, tmp_path):
        self.root = tmp_path / "homes"
        self.home = HomeDirectory.objects.create(path=str(self.root / "{username}"))
        self.staff = FTPUserGroup.objects.create(
            name="staff", permission="elr", home_directory=self.home
        )
        self.guests = FTPUserGroup.objects.create(
            name="guests", permission="elradfmw", home_directory=self.home
        )

    def account(self, username, password=PASSWORD, **fields):
        user = User.objects.create_user(username=username, password=password)
        fields.setdefault("group", self.staff)
        return FTPUserAccount.objects.create(user=user, **fields)


@pytest.fixture
def world(db, tmp_path):
    return World(tmp_path)


@pytest.fixture
def accounts(world):
    """Five accounts covering the filters."""
    return {
        "alice": world.account("alice", last_login_ip="192.0.2.10"),
        "bob": world.account(
            "bob", group=world.guests, is_enabled=False, permission="elrw"
        ),
        "carol": world.account(
            "carol",
            expires_at=NOW - datetime.timedelta(days=1),
            last_login_ip="198.51.100.7",
        ),
        "dave": world.account(
            "dave", group=world.guests, expires_at=NOW + datetime.timedelta(days=3)
        ),
        "erin": world.account(
            "erin",
            group=None,
            require_tls=True,
            expires_at=NOW + datetime.timedelta(days=30),
        ),
    }


def names(response):
    assert response.status_code == 200, response.status_code
    return [a.user.username for a in response.context["cl"].result_list]


def ftp_login(server, username, password=PASSWORD):
    """Log in over FTP; return the reply to PASS, or the error's text."""
    ftp = server.client()
    try:
        return ftp.login(username, password)
    except ftplib.error_perm as exc:
        return str(exc)
    finally:
        ftp.close()


def staff_client_with(client, *codenames, username="clerk"):
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    client.user = user
    return client


# The lists --------------------------------------------------------------------


def test_account_list_shows_the_columns(admin_client, accounts, world):
    world.account("nohome", group=None)  # no home anywhere: refused at login
    response = admin_client.get(CHANGELIST)
    assert names(response) == ["alice", "bob", "carol", "dave", "erin", "nohome"]
    html_ = response.content.decode()
    for header in (
        "Username",
        "Group",
        "Effective permission",
        "Enabled",
        "Expires at",
        # Time and address in one column since the list fits 1280 px.
        "Last FTP login",
    ):
        assert f">{header}</a>" in html_ or f">{header}<" in html_, header
    # Effective permission: the account's own, or the group's (inherited),
    # or the settings' default, as resolve_policy computes it.
    assert '<td class="field-effective_permission">elrw</td>' in html_
    assert 'elr <span class="quiet">(inherited)</span>' in html_
    assert "login refused: home_unavailable" in html_
    assert "192.0.2.10" in html_


def test_account_list_costs_the_same_queries_for_more_rows(admin_client, world):
    world.account("a1")
    with CaptureQueriesContext(connection) as one:
        assert admin_client.get(CHANGELIST).status_code == 200
    for i in range(2, 8):
        world.account(f"a{i}", group=world.guests if i % 2 else world.staff)
    with CaptureQueriesContext(connection) as seven:
        assert len(names(admin_client.get(CHANGELIST))) == 7
    assert len(seven) == len(one)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("is_enabled__exact=0", ["bob"]),
        ("is_enabled__exact=1", ["alice", "carol", "dave", "erin"]),
        ("expiry=expired", ["carol"]),
        ("expiry=active", ["alice", "bob", "dave", "erin"]),
        ("expiry=soon", ["dave"]),
        ("expiry=never", ["alice", "bob"]),
        ("require_tls__exact=1", ["erin"]),
        ("group__isnull=True", ["erin"]),
        ("q=car", ["carol"]),
        ("q=guests", ["bob", "dave"]),
        ("q=198.51.100", ["carol"]),
        ("q=nobody", []),
        ("is_enabled__exact=1&q=guests", ["dave"]),
        ("o=-1", ["erin", "dave", "carol", "bob", "alice"]),
    ],
)
def test_account_filters_search_and_ordering(admin_client, accounts, query, expected):
    assert names(admin_client.get(f"{CHANGELIST}?{query}")) == expected


def test_group_filter(admin_client, accounts, world):
    url = f"{CHANGELIST}?group__id__exact={world.guests.pk}"
    assert names(admin_client.get(url)) == ["bob", "dave"]


def test_group_list_counts_accounts_without_a_query_per_row(
    admin_client, accounts, world
):
    with CaptureQueriesContext(connection) as two_groups:
        response = admin_client.get(GROUPS)
    counts = {g.name: g.account_count for g in response.context["cl"].result_list}
    assert counts == {"guests": 2, "staff": 2}
    assert f'?group__id__exact={world.guests.pk}">2</a>' in response.content.decode()
    for i in range(5):
        FTPUserGroup.objects.create(name=f"extra{i}", home_directory=world.home)
    with CaptureQueriesContext(connection) as seven_groups:
        assert admin_client.get(GROUPS).status_code == 200
    assert len(seven_groups) == len(two_groups)


def test_home_directory_admin_edits_its_rules(admin_client, world):
    url = reverse("admin:ftpserver_core_homedirectory_change", args=[world.home.pk])
    response = admin_client.post(
        url,
        {
            "path": world.home.path,
            "name": "homes",
            "create_on_login": "on",
            "description": "",
            "rules-TOTAL_FORMS": "1",
            "rules-INITIAL_FORMS": "0",
            "rules-0-path": "pub",
            "rules-0-permission": "elr",
            "rules-0-recursive": "on",
        },
    )
    assert response.status_code == 302, response.context["adminform"].errors
    (rule,) = world.home.rules.all()
    assert (rule.path, rule.permission, rule.recursive) == ("pub", "elr", True)
    assert names_of(admin_client.get(HOMES + "?q=homes")) == [world.home.pk]


def names_of(response):
    return [obj.pk for obj in response.context["cl"].result_list]


# The one-form creation ---------------------------------------------------------


def add_data(**overrides):
    data = {
        "existing_user": "",
        "new_username": "",
        "email": "",
        "password1": "",
        "password2": "",
        "group": "",
        "home_directory": "",
        "permission": "",
        "is_enabled": "on",
        "expires_at_0": "",
        "expires_at_1": "",
        "require_tls": "unknown",
        "max_sessions": "",
        "allowed_networks": "",
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
    }
    return data | overrides


def errors_of(response):
    """Every error of the add form: {field or None: [messages]}."""
    assert response.status_code == 200, response.status_code
    form = response.context["adminform"].form
    return {
        None if key == "__all__" else key: list(value)
        for key, value in form.errors.items()
    }


def test_add_page_offers_users_without_an_account(admin_client, accounts):
    User.objects.create_user("frank")
    response = admin_client.get(ADD)
    field = response.context["adminform"].form["existing_user"]
    offered = {label for value, label in field.field.widget.choices if value}
    assert offered == {"admin", "frank"}
    html_ = response.content.decode()
    for name in ("new_username", "password1", "password2", "group", "max_sessions"):
        assert f'name="{name}"' in html_, name


def test_add_creates_a_new_user_and_its_account(admin_client, world):
    response = admin_client.post(
        ADD,
        add_data(
            new_username="frank",
            email="frank@example.com",
            password1=NEW_PASSWORD,
            password2=NEW_PASSWORD,
            group=world.guests.pk,
            permission="elr",
            max_sessions="2",
            allowed_networks="192.0.2.0/24",
        ),
    )
    assert response.status_code == 302, errors_of(response)
    account = FTPUserAccount.objects.get(user__username="frank")
    user = account.user
    assert user.check_password(NEW_PASSWORD)
    assert user.password.startswith("md5$")  # hashed by Django's hasher
    assert user.email == "frank@example.com"
    assert (account.group, account.permission, account.max_sessions) == (
        world.guests,
        "elr",
        2,
    )
    assert account.allowed_networks == "192.0.2.0/24"
    assert LogEntry.objects.filter(object_id=str(account.pk)).count() == 1


def test_add_for_an_existing_user_keeps_or_sets_their_password(admin_client, world):
    keep = User.objects.create_user("keep", password=PASSWORD)
    reset = User.objects.create_user("reset", password=PASSWORD)
    assert (
        admin_client.post(
            ADD, add_data(existing_user=keep.pk, group=world.staff.pk)
        ).status_code
        == 302
    )
    assert (
        admin_client.post(
            ADD,
            add_data(
                existing_user=reset.pk,
                group=world.staff.pk,
                password1=NEW_PASSWORD,
                password2=NEW_PASSWORD,
            ),
        ).status_code
        == 302
    )
    keep.refresh_from_db()
    reset.refresh_from_db()
    assert keep.check_password(PASSWORD)
    assert reset.check_password(NEW_PASSWORD)
    assert FTPUserAccount.objects.filter(user__in=[keep, reset]).count() == 2


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"existing_user": "EXISTING", "new_username": "frank"},
            None,
            "Pick an existing user or type a new username, not both "
            "(got 'loner' and 'frank').",
        ),
        (
            {},
            None,
            "Pick an existing user or type a username for a new user; both are blank.",
        ),
        (
            {"new_username": "alice"},
            "new_username",
            "The username 'alice' is taken (by 'alice'); pick that user under "
            "Existing user, or type another username.",
        ),
        (
            {"new_username": "ALICE"},
            "new_username",
            "The username 'ALICE' is taken (by 'alice')",
        ),
        (
            {"new_username": "bad name!"},
            "new_username",
            "Username 'bad name!' is not valid: Enter a valid username.",
        ),
        (
            {"new_username": "frank", "password2": "different-Passw0rd"},
            "password2",
            "The two password fields didn’t match.",
        ),
        (
            {"new_username": "frank", "password2": ""},
            "password2",
            "Type the same password again, to confirm it.",
        ),
        (
            {"new_username": "frank", "password1": "", "password2": ""},
            "password1",
            "The new user 'frank' needs a password.",
        ),
        (
            {"existing_user": "ALICE_PK"},
            "existing_user",
            "User 'alice' already has an FTP account; edit that account instead, "
            "or pick another user.",
        ),
        (
            {"existing_user": "EXISTING", "email": "x@example.com"},
            "email",
            "An email address is for a new user; 'loner' keeps theirs",
        ),
        (
            {"new_username": "frank", "permission": "elrz"},
            "permission",
            "Unknown permission letter(s) 'z' in 'elrz'; expected letters from "
            "elradfmwMT.",
        ),
        (
            {"new_username": "frank", "allowed_networks": "10.0.0.0/8 nonsense"},
            "allowed_networks",
            "'nonsense' is not an IP network",
        ),
    ],
)
def test_add_form_errors(admin_client, accounts, data, field, message):
    loner = User.objects.create_user("loner", password=PASSWORD)
    data = dict(data)
    for key, value in data.items():
        if value == "EXISTING":
            data[key] = loner.pk
        elif value == "ALICE_PK":
            data[key] = accounts["alice"].user_id
    data.setdefault("password1", NEW_PASSWORD)
    data.setdefault("password2", NEW_PASSWORD)
    users_before = User.objects.count()
    accounts_before = FTPUserAccount.objects.count()
    response = admin_client.post(ADD, add_data(**data))
    errors = errors_of(response)
    assert field in errors, errors
    assert any(message in error for error in errors[field]), errors
    assert (User.objects.count(), FTPUserAccount.objects.count()) == (
        users_before,
        accounts_before,
    )
    assert "Please correct the error" in response.content.decode()


def test_add_form_runs_the_password_validators(admin_client, world, settings):
    settings.AUTH_PASSWORD_VALIDATORS = [
        {
            "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
            "OPTIONS": {"min_length": 12},
        },
        {
            "NAME": "django.contrib.auth.password_validation."
            "UserAttributeSimilarityValidator"
        },
    ]
    response = admin_client.post(
        ADD, add_data(new_username="frank", password1="short", password2="short")
    )
    assert any("too short" in e for e in errors_of(response)["password2"])
    response = admin_client.post(
        ADD,
        add_data(
            new_username="frankenstein1",
            password1="frankenstein1",
            password2="frankenstein1",
        ),
    )
    assert any("too similar" in e for e in errors_of(response)["password2"])
    assert not User.objects.filter(username__startswith="frank").exists()


def test_staff_user_password_needs_the_change_user_permission(client, world):
    boss = User.objects.create_user("boss", password=PASSWORD, is_staff=True)
    # A superuser gave boss an account; the clerk may change the account, not
    # boss's password.
    account = FTPUserAccount.objects.create(user=boss, group=world.staff)
    clerk = staff_client_with(
        client,
        "add_ftpuseraccount",
        "change_ftpuseraccount",
        "view_ftpuseraccount",
    )
    assert clerk.get(password_url(account)).status_code == 403
    clerk.user.user_permissions.add(Permission.objects.get(codename="change_user"))
    assert clerk.get(password_url(account)).status_code == 200


STAFF_ACCOUNT_ERROR = (
    "{!r} is a staff user or superuser: only a superuser may give them an FTP "
    "account, which would accept their admin password over FTP. Pick a user who "
    "is not staff, or ask a superuser."
)


def test_only_a_superuser_may_give_staff_an_ftp_account(client, admin_client, world):
    boss = User.objects.create_user("boss", password=PASSWORD, is_staff=True)
    chief = User.objects.create_superuser("chief", "chief@example.com", PASSWORD)
    User.objects.create_user("frank")
    # Even the permission to change users is not enough.
    clerk = staff_client_with(
        client, "add_ftpuseraccount", "change_ftpuseraccount", "change_user"
    )
    field = clerk.get(ADD).context["adminform"].form["existing_user"]
    offered = {label for value, label in field.field.widget.choices if value}
    assert offered == {"frank"}
    for user in (boss, chief):
        # A blank password keeps theirs: the admin password would log in.
        response = clerk.post(
            ADD, add_data(existing_user=user.pk, group=world.staff.pk)
        )
        assert errors_of(response) == {
            "existing_user": [STAFF_ACCOUNT_ERROR.format(user.username)]
        }
    assert not FTPUserAccount.objects.exists()

    field = admin_client.get(ADD).context["adminform"].form["existing_user"]
    offered = {label for value, label in field.field.widget.choices if value}
    assert offered == {"admin", "boss", "chief", "clerk", "frank"}
    response = admin_client.post(
        ADD, add_data(existing_user=boss.pk, group=world.staff.pk)
    )
    assert response.status_code == 302, errors_of(response)
    assert FTPUserAccount.objects.get().user == boss


def test_created_account_logs_in_over_ftp(admin_client, world, ftp_server):
    response = admin_client.post(
        ADD,
        add_data(
            new_username="frank",
            password1=NEW_PASSWORD,
            password2=NEW_PASSWORD,
            group=world.guests.pk,
        ),
    )
    assert response.status_code == 302, errors_of(response)
    server = ftp_server()
    assert ftp_login(server, "frank", NEW_PASSWORD).startswith("230")
    assert ftp_login(server, "frank", PASSWORD).startswith("530")
    assert (world.root / "frank").is_dir()  # the group's home, made at login


# The change page and the password page -----------------------------------------


def test_change_page_links_the_user_and_the_password_page(admin_client, accounts):
    alice = accounts["alice"]
    response = admin_client.get(change_url(alice))
    html_ = response.content.decode()
    assert f'href="{password_url(alice)}"' in html_
    user_url = reverse("admin:auth_user_change", args=[alice.user_id])
    assert f'<a href="{user_url}">alice</a>' in html_
    assert 'name="_save"' in html_


def test_password_page_changes_the_password(admin_client, accounts):
    alice = accounts["alice"]
    response = admin_client.get(password_url(alice))
    assert response.status_code == 200
    assert "Change password: alice" in response.content.decode()
    response = admin_client.post(
        password_url(alice),
        {"password1": NEW_PASSWORD, "password2": "typo", "set-password": "1"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["password2"]
    response = admin_client.post(
        password_url(alice),
        {
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
            "usable_password": "true",
            "set-password": "1",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == change_url(alice)
    alice.user.refresh_from_db()
    assert alice.user.check_password(NEW_PASSWORD)
    assert LogEntry.objects.filter(
        object_id=str(alice.pk), change_message__contains="password"
    ).exists()


def test_password_page_of_an_unknown_account_redirects(admin_client, db):
    url = reverse("admin:ftpserver_core_ftpuseraccount_password", args=[999])
    response = admin_client.get(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")


def test_new_password_works_over_ftp(admin_client, world, ftp_server):
    alice = world.account("alice")
    server = ftp_server()
    assert ftp_login(server, "alice").startswith("230")
    admin_client.post(
        password_url(alice),
        {
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
            "usable_password": "true",
            "set-password": "1",
        },
    )
    assert ftp_login(server, "alice", NEW_PASSWORD).startswith("230")
    assert ftp_login(server, "alice", PASSWORD).startswith("530")


# The user page ------------------------------------------------------------------


def inline_data(user, account, **overrides):
    prefix = "ftp_account"
    data = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
        f"{prefix}-TOTAL_FORMS": "1",
        f"{prefix}-INITIAL_FORMS": "1" if account else "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1",
        f"{prefix}-0-id": account.pk if account else "",
        f"{prefix}-0-user": user.pk,
        f"{prefix}-0-group": account.group_id if account else "",
        f"{prefix}-0-home_directory": "",
        f"{prefix}-0-permission": account.permission if account else "",
        f"{prefix}-0-is_enabled": "on",
        f"{prefix}-0-expires_at_0": "",
        f"{prefix}-0-expires_at_1": "",
        f"{prefix}-0-require_tls": "unknown",
        f"{prefix}-0-max_sessions": "",
        f"{prefix}-0-allowed_networks": "",
    }
    return data | {f"{prefix}-0-{key}": value for key, value in overrides.items()}


def test_user_page_shows_and_edits_the_ftp_account(admin_client, accounts, world):
    alice = accounts["alice"]
    url = reverse("admin:auth_user_change", args=[alice.user_id])
    response = admin_client.get(url)
    html_ = response.content.decode()
    assert "FTP account" in html_
    assert 'name="ftp_account-0-permission"' in html_
    assert change_url(alice) in html_  # show_change_link
    response = admin_client.post(
        url, inline_data(alice.user, alice, permission="elrw", group=world.guests.pk)
    )
    assert response.status_code == 302, response.context["inline_admin_formsets"]
    alice.refresh_from_db()
    assert (alice.permission, alice.group) == ("elrw", world.guests)


def test_user_page_adds_an_ftp_account(admin_client, world):
    user = User.objects.create_user("frank", password=PASSWORD)
    url = reverse("admin:auth_user_change", args=[user.pk])
    response = admin_client.post(url, inline_data(user, None, group=world.staff.pk))
    assert response.status_code == 302
    assert FTPUserAccount.objects.get(user=user).group == world.staff


def test_user_page_offers_no_ftp_account_for_staff_to_a_non_superuser(client, world):
    """The account form's rule on the user page: an admin who may change users
    and add FTP accounts still cannot put a staff user's password on FTP."""
    from django.contrib.auth.models import Permission

    manager = User.objects.create_user("manager", password=PASSWORD, is_staff=True)
    manager.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_user", "change_user", "add_ftpuseraccount"]
        )
    )
    client.force_login(manager)
    staff = User.objects.create_user("root2", password=PASSWORD, is_staff=True)
    plain = User.objects.create_user("frank", password=PASSWORD)
    url = reverse("admin:auth_user_change", args=[staff.pk])
    assert 'name="ftp_account-0-permission"' not in client.get(url).content.decode()
    client.post(url, inline_data(staff, None, group=world.staff.pk))
    assert not FTPUserAccount.objects.filter(user=staff).exists()
    # A user who is not staff: the inline is there.
    url = reverse("admin:auth_user_change", args=[plain.pk])
    page = client.get(url).content.decode()
    assert "ftp_account-TOTAL_FORMS" in page and "ftp_account-__prefix__" in page


# The effective policy -------------------------------------------------------------


def policy_shown(response):
    """The home, permission and rule rows the change page shows."""
    page = response.content.decode()
    home = re.search(r'<td class="policy-home">(.*?)</td>', page)
    permission = re.search(r'<td class="policy-permission">(.*?)</td>', page)
    rules = [
        tuple(html.unescape(cell) for cell in re.findall(r"<td>(.*?)</td>", row))
        for row in re.findall(r'<tr class="ftp-policy-rule">(.*?)</tr>', page)
    ]
    return (
        home and html.unescape(home.group(1)),
        permission and html.unescape(permission.group(1)),
        rules,
    )


def test_change_page_shows_what_resolve_policy_resolves(admin_client, world):
    alice = world.account("alice", permission="elradfmw")
    DirectoryRule.objects.create(home_directory=world.home, path="pub", permission="")
    DirectoryRule.objects.create(
        group=world.staff, path="pub", permission="elr", recursive=True
    )
    DirectoryRule.objects.create(
        account=alice, path="pub/{username}", permission="elrw"
    )
    DirectoryRule.objects.create(group=world.guests, path="other", permission="e")
    policy = resolve_policy(alice)
    home = str(world.root / "alice")
    expected_rules = [
        (f"{home}/pub/alice", "elrw", "no", "account", "pub/{username}"),
        (f"{home}/pub", "elr", "yes", "group", "pub"),
        (f"{home}/pub", "-", "no", "home", "pub"),
    ]
    # What resolve_policy says, and what it must say here.
    assert [
        (
            r.path,
            r.permission or "-",
            "yes" if r.recursive else "no",
            r.source,
            r.template,
        )
        for r in policy.rules
    ] == expected_rules
    shown = policy_shown(admin_client.get(change_url(alice)))
    assert shown == (policy.home, policy.permission, expected_rules)
    assert shown[:2] == (home, "elradfmw")


def test_change_page_shows_inherited_values_and_later_changes(
    admin_client, world, settings
):
    settings.FTPSERVER_DEFAULT_PERMISSION = "el"
    erin = world.account("erin", group=None, home_directory=world.home)
    assert policy_shown(admin_client.get(change_url(erin)))[:2] == (
        str(world.root / "erin"),
        "el",
    )
    erin.group = world.guests
    erin.save()
    assert policy_shown(admin_client.get(change_url(erin)))[1] == "elradfmw"


def test_change_page_shows_why_the_login_would_be_refused(admin_client, world):
    lost = world.account("lost", group=None)
    with pytest.raises(LoginRefused) as refused:
        resolve_policy(lost)
    response = admin_client.get(change_url(lost))
    page = response.content.decode()
    assert refused.value.reason == "home_unavailable"
    assert (
        "The server would refuse this account&#x27;s logins: <strong>"
        f"{refused.value.reason}</strong> ({refused.value.detail})" in page
    )
    assert policy_shown(response) == (None, None, [])


def test_change_page_says_disabled_and_expired(admin_client, world):
    gone = world.account(
        "gone", is_enabled=False, expires_at=NOW - datetime.timedelta(hours=1)
    )
    page = admin_client.get(change_url(gone)).content.decode()
    assert "Logins are refused now: <strong>account_disabled</strong>" in page
    assert "Logins are refused now: <strong>account_expired</strong>" in page


# Actions ----------------------------------------------------------------------------


def act(client, action, accounts, **extra):
    return client.post(
        CHANGELIST,
        {
            "action": action,
            "_selected_action": [a.pk for a in accounts],
            "index": "0",
            **extra,
        },
        follow=True,
    )


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def test_enable_and_disable_actions(admin_client, accounts):
    chosen = [accounts["alice"], accounts["carol"]]
    response = act(admin_client, "disable_accounts", chosen)
    assert messages_of(response) == [
        "Disabled 2 FTP accounts; they cannot log in from their next login."
    ]
    enabled = dict(FTPUserAccount.objects.values_list("user__username", "is_enabled"))
    assert enabled == {
        "alice": False,
        "bob": False,
        "carol": False,
        "dave": True,
        "erin": True,
    }
    response = act(admin_client, "enable_accounts", [accounts["bob"]])
    assert messages_of(response) == ["Enabled 1 FTP account."]
    assert FTPUserAccount.objects.get(pk=accounts["bob"].pk).is_enabled
    assert LogEntry.objects.filter(object_id=str(accounts["bob"].pk)).exists()


def test_disabled_account_cannot_log_in(admin_client, world, ftp_server):
    alice = world.account("alice")
    server = ftp_server()
    assert ftp_login(server, "alice").startswith("230")
    act(admin_client, "disable_accounts", [alice])
    # Repeat logins answered from memory see it at the next round.
    wait_until_validated(server)
    assert ftp_login(server, "alice").startswith("530")
    act(admin_client, "enable_accounts", [alice])
    assert ftp_login(server, "alice").startswith("230")


def test_set_expiry_asks_then_sets(admin_client, accounts):
    chosen = [accounts["alice"], accounts["bob"]]
    response = act(admin_client, "set_expiry", chosen)
    page = response.content.decode()
    assert response.templates[0].name.endswith("set_expiry.html")
    assert "Set the expiry of these 2 FTP accounts" in page
    assert 'name="expires_at_0"' in page
    assert page.count('name="_selected_action"') == 2

    apply = {"apply": "yes", "expires_at_0": "2030-12-31", "expires_at_1": "23:59"}
    response = act(admin_client, "set_expiry", chosen, **apply)
    expected = datetime.datetime(2030, 12, 31, 23, 59, tzinfo=datetime.UTC)
    assert messages_of(response) == [
        "Set the expiry of 2 FTP accounts: Dec. 31, 2030, 11:59 p.m."
    ]
    for account in chosen:
        account.refresh_from_db()
        assert account.expires_at == expected
    assert FTPUserAccount.objects.get(pk=accounts["dave"].pk).expires_at != expected

    response = act(
        admin_client,
        "set_expiry",
        [accounts["alice"]],
        apply="yes",
        expires_at_0="",
        expires_at_1="",
    )
    assert messages_of(response) == [
        "Cleared the expiry of 1 FTP account: it never expires."
    ]
    accounts["alice"].refresh_from_db()
    assert accounts["alice"].expires_at is None


def test_set_expiry_rejects_a_bad_date(admin_client, accounts):
    response = act(
        admin_client,
        "set_expiry",
        [accounts["alice"]],
        apply="yes",
        expires_at_0="2030-13-45",
        expires_at_1="10:00",
    )
    assert response.status_code == 200
    errors = response.context["form"].errors["expires_at"]
    assert errors == [
        "'2030-13-45 10:00' is not a date and time; expected a date such as "
        "2026-12-31 and a time such as 23:59, or both blank to clear the expiry."
    ]
    accounts["alice"].refresh_from_db()
    assert accounts["alice"].expires_at is None


def test_expired_account_cannot_log_in(admin_client, world, ftp_server):
    alice = world.account("alice")
    server = ftp_server()
    past = timezone.localtime(NOW - datetime.timedelta(minutes=5))
    act(
        admin_client,
        "set_expiry",
        [alice],
        apply="yes",
        expires_at_0=past.strftime("%Y-%m-%d"),
        expires_at_1=past.strftime("%H:%M:%S"),
    )
    assert ftp_login(server, "alice").startswith("530")


# Permissions -----------------------------------------------------------------------


def test_view_only_staff_sees_but_cannot_change(client, accounts, world):
    viewer = staff_client_with(client, "view_ftpuseraccount")
    alice = accounts["alice"]
    assert names(viewer.get(CHANGELIST)) == ["alice", "bob", "carol", "dave", "erin"]
    response = viewer.get(change_url(alice))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="_save"' not in page
    assert 'name="_continue"' not in page
    assert password_url(alice) not in page
    assert 'class="policy-home"' in page  # the effective policy is shown
    data = {"group": world.guests.pk, "permission": "elradfmw", "is_enabled": ""}
    assert viewer.post(change_url(alice), data).status_code == 403
    assert viewer.get(ADD).status_code == 403
    assert viewer.post(ADD, add_data(new_username="x")).status_code == 403
    assert viewer.get(password_url(alice)).status_code == 403
    assert (
        viewer.post(
            password_url(alice),
            {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
        ).status_code
        == 403
    )
    assert viewer.get(CHANGELIST).context["action_form"] is None  # no action
    act(viewer, "disable_accounts", [alice])
    alice.refresh_from_db()
    assert alice.is_enabled and alice.group == world.staff and alice.permission == ""
    assert alice.user.check_password(PASSWORD)
    import_url = reverse("admin:ftpserver_core_ftpuseraccount_import")
    assert viewer.get(import_url).status_code == 403
    assert (
        viewer.get(reverse("admin:ftpserver_core_ftpuseraccount_export")).status_code
        == 200
    )


def test_change_permission_gives_the_actions_and_the_password_page(client, accounts):
    clerk = staff_client_with(client, "view_ftpuseraccount", "change_ftpuseraccount")
    alice = accounts["alice"]
    actions = clerk.get(CHANGELIST).context["action_form"].fields["action"].choices
    assert [name for name, _ in actions] == [
        "",
        "enable_accounts",
        "disable_accounts",
        "set_expiry",
    ]
    assert password_url(alice) in clerk.get(change_url(alice)).content.decode()
    assert clerk.get(password_url(alice)).status_code == 200
    assert clerk.get(ADD).status_code == 403


def test_anonymous_is_sent_to_the_login_page(client, accounts):
    for url in (CHANGELIST, ADD, password_url(accounts["alice"])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
