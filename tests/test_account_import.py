"""Bulk import and export of FTP accounts (CSV and XLSX) through the admin."""

import csv
import datetime
import ftplib
import html
import io

import openpyxl
import pytest
import tablib
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from ftpadmin.resources import FTPUserAccountResource
from ftpserver_core.models import FTPUserAccount, FTPUserGroup, HomeDirectory

from .conftest import PASSWORD

User = get_user_model()
IMPORT = reverse("admin:ftpserver_core_ftpuseraccount_import")
PROCESS = reverse("admin:ftpserver_core_ftpuseraccount_process_import")
EXPORT = reverse("admin:ftpserver_core_ftpuseraccount_export")
COLUMNS = [
    "username",
    "email",
    "group",
    "home_directory",
    "permission",
    "is_enabled",
    "expires_at",
    "require_tls",
    "max_sessions",
    "allowed_networks",
    "quota_bytes",
    "quota_files",
    "max_upload_size",
    "upload_rate",
    "download_rate",
    "password",
]
CSV_FORMAT, XLSX_FORMAT = "0", "1"
PLAIN = "Plain-Passw0rd!"


@pytest.fixture
def world(db, tmp_path):
    class World:
        root = tmp_path / "homes"
        home = HomeDirectory.objects.create(path=str(root / "{username}"))
        shared = HomeDirectory.objects.create(path=str(tmp_path / "shared"))
        staff = FTPUserGroup.objects.create(
            name="staff", permission="elr", home_directory=home
        )
        guests = FTPUserGroup.objects.create(name="guests", home_directory=home)

    return World


def row(**values):
    """A file row as a dict: every column, blank unless given."""
    return {column: values.get(column, "") for column in COLUMNS}


def csv_bytes(*rows, columns=COLUMNS):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def xlsx_bytes(*rows):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(COLUMNS)
    for values in rows:
        sheet.append([values.get(column) for column in COLUMNS])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def preview(client, content, file_format=CSV_FORMAT, name=None):
    name = name or ("accounts.xlsx" if file_format == XLSX_FORMAT else "accounts.csv")
    return client.post(
        IMPORT,
        {"format": file_format, "import_file": SimpleUploadedFile(name, content)},
    )


def confirm(client, response):
    assert response.status_code == 200, response.status_code
    form = response.context.get("confirm_form")
    assert form is not None, row_errors(response)
    return client.post(PROCESS, form.initial, follow=True)


def row_errors(response):
    """{row number: {column: [messages]}} of the preview's invalid rows."""
    result = response.context["result"]
    return {r.number: r.field_specific_errors for r in result.invalid_rows}


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def counts():
    return User.objects.count(), FTPUserAccount.objects.count()


THREE = [
    row(
        username="alice",
        email="alice@example.com",
        group="staff",
        password=PLAIN,
        max_sessions="2",
    ),
    row(
        username="bob",
        group="guests",
        home_directory="HOME",
        permission="elrw",
        is_enabled="0",
        expires_at="2030-01-01T10:00:00+00:00",
        require_tls="1",
        allowed_networks="192.0.2.0/24 2001:db8::/32",
        password=PLAIN,
    ),
    row(username="carol", group="staff", password=PLAIN),
]


def three(world, **changes):
    """THREE with the shared home's path filled in and ``changes`` in row 2."""
    rows = [dict(r) for r in THREE]
    rows[1]["home_directory"] = world.shared.path
    rows[1].update(changes)
    return rows


# Preview and confirm ----------------------------------------------------------


def test_the_dry_run_creates_nothing(admin_client, world):
    before = counts()
    response = preview(admin_client, csv_bytes(*three(world)))
    assert response.context["confirm_form"] is not None
    result = response.context["result"]
    assert not result.has_errors() and not result.has_validation_errors()
    assert [r.import_type for r in result.valid_rows()] == ["new"] * 3
    assert counts() == before
    page = response.content.decode()
    assert "Confirm import" in page
    assert PLAIN not in page


def test_confirm_creates_users_and_accounts(admin_client, world):
    response = confirm(admin_client, preview(admin_client, csv_bytes(*three(world))))
    assert messages_of(response) == [
        "Import finished: 3 new, 0 updated, 0 deleted and 0 skipped FTP accounts."
    ]
    alice, bob, carol = (
        FTPUserAccount.objects.select_related("user").get(user__username=name)
        for name in ("alice", "bob", "carol")
    )
    assert alice.user.email == "alice@example.com"
    assert (alice.group, alice.max_sessions, alice.is_enabled) == (world.staff, 2, True)
    assert bob.group == world.guests
    assert bob.home_directory == world.shared
    assert bob.permission == "elrw"
    assert bob.is_enabled is False
    assert bob.expires_at == datetime.datetime(2030, 1, 1, 10, tzinfo=datetime.UTC)
    assert bob.require_tls is True
    assert bob.allowed_networks == "192.0.2.0/24 2001:db8::/32"
    assert carol.require_tls is None and carol.max_sessions is None
    for account in (alice, bob, carol):
        assert account.user.password != PLAIN
        assert account.user.password.startswith("md5$")
        assert account.user.check_password(PLAIN)


def test_a_row_updates_an_existing_account_and_keeps_its_password(admin_client, world):
    alice = FTPUserAccount.objects.create(
        user=User.objects.create_user("alice", password=PASSWORD),
        group=world.staff,
        is_enabled=False,
        max_sessions=4,
    )
    content = csv_bytes(row(username="alice", group="guests", permission="elrw"))
    response = confirm(admin_client, preview(admin_client, content))
    assert "0 new, 1 updated" in messages_of(response)[0]
    alice.refresh_from_db()
    assert (alice.group, alice.permission) == (world.guests, "elrw")
    # A blank is_enabled keeps the flag; other blank columns mean "none".
    assert (alice.is_enabled, alice.max_sessions) == (False, None)
    alice.user.refresh_from_db()
    assert alice.user.check_password(PASSWORD)


def test_a_row_gives_an_existing_user_an_account(admin_client, world):
    user = User.objects.create_user("frank", password=PASSWORD)
    content = csv_bytes(row(username="frank", group="staff"))
    confirm(admin_client, preview(admin_client, content))
    assert FTPUserAccount.objects.get(user=user).group == world.staff
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert User.objects.count() == 2  # frank and admin, nobody new


# Errors -----------------------------------------------------------------------


def test_one_bad_row_shows_its_error_and_nothing_is_imported_until_fixed(
    admin_client, world
):
    before = counts()
    response = preview(admin_client, csv_bytes(*three(world, group="contractors")))
    assert response.context.get("confirm_form") is None
    assert row_errors(response) == {
        2: {
            "group": [
                "Unknown FTP group 'contractors'; expected the name of an FTP group."
            ]
        }
    }
    page = html.unescape(response.content.decode())
    assert "Some rows failed to validate" in page
    assert "Unknown FTP group 'contractors'" in page
    assert "<td>2 </td>" in page  # the row number
    assert counts() == before
    # Fixed, the same file imports all three.
    response = confirm(admin_client, preview(admin_client, csv_bytes(*three(world))))
    assert "3 new" in messages_of(response)[0]
    assert counts() == (before[0] + 3, before[1] + 3)


@pytest.mark.parametrize(
    ("changes", "column", "message"),
    [
        (
            {"home_directory": "/srv/nowhere"},
            "home_directory",
            "Unknown home directory '/srv/nowhere'; expected the path of a home "
            "directory.",
        ),
        # No home directory has an unsafe path (the validators see to it), so
        # such a path is an unknown one, an error of its row, not a crash.
        (
            {"home_directory": "/"},
            "home_directory",
            "Unknown home directory '/'; expected the path of a home directory.",
        ),
        (
            {"home_directory": "/srv/{username.__class__.__mro__}"},
            "home_directory",
            "Unknown home directory '/srv/{username.__class__.__mro__}'; expected "
            "the path of a home directory.",
        ),
        (
            {"permission": "elrz"},
            "permission",
            "Unknown permission letter(s) 'z' in 'elrz'; expected letters from "
            "elradfmwMT.",
        ),
        (
            {"permission": "elre"},
            "permission",
            "Permission 'elre' repeats a letter.",
        ),
        (
            {"allowed_networks": "192.0.2.0/24 intranet"},
            "allowed_networks",
            "'intranet' is not an IP network; expected e.g. 192.0.2.0/24 or "
            "2001:db8::/32.",
        ),
        (
            {"is_enabled": "maybe"},
            "is_enabled",
            "'maybe' is not a yes/no value; expected 1, 0, true, false, yes or no.",
        ),
        (
            {"require_tls": "sometimes"},
            "require_tls",
            "'sometimes' is not a yes/no value; expected 1, 0, true, false, yes or no.",
        ),
        (
            {"expires_at": "next week"},
            "expires_at",
            "'next week' is not a date and time; expected ISO 8601 such as "
            "2026-03-14T12:00:00+00:00 or 2026-03-14 12:00.",
        ),
        (
            {"max_sessions": "many"},
            "max_sessions",
            "'many' is not a whole number; expected e.g. 5, or blank.",
        ),
        (
            {"max_sessions": "-1"},
            "max_sessions",
            "'-1' is negative; expected a whole number of 0 or more.",
        ),
        (
            {"username": ""},
            "username",
            "A username is required.",
        ),
        (
            {"username": "bad name!"},
            "username",
            "Username 'bad name!' is not valid: Enter a valid username. This value "
            "may contain only letters, numbers, and @/./+/-/_ characters.",
        ),
        (
            {"username": "ADMIN"},
            "username",
            "Username 'ADMIN' differs only in case from the existing user 'admin'; "
            "expected that exact name or another one.",
        ),
        (
            {"email": "not-an-address"},
            "email",
            "'not-an-address' is not an email address; expected e.g. "
            "alice@example.com.",
        ),
        (
            {"password": ""},
            "password",
            "A password is required for the new user 'bob'; expected a Django "
            "password hash or a plain-text password.",
        ),
        (
            {"password": "md5$only-a-salt"},
            "password",
            "The md5 password hash is malformed; expected a whole hash as Django "
            "stores it, or a plain-text password.",
        ),
        (
            {"password": "scrypt$16384$c2FsdA$aGFzaA=="},
            "password",
            "This looks like a password hash of algorithm 'scrypt', which "
            "PASSWORD_HASHERS does not list; expected a hash of a listed algorithm, "
            "or a plain-text password.",
        ),
    ],
)
def test_row_errors_quote_the_value(admin_client, world, changes, column, message):
    before = counts()
    response = preview(admin_client, csv_bytes(*three(world, **changes)))
    errors = row_errors(response)
    assert list(errors) == [2], errors
    assert errors[2][column] == [message]
    assert message in html.unescape(response.content.decode())
    assert response.context.get("confirm_form") is None
    assert counts() == before


def test_a_username_twice_in_the_file_is_an_error_of_both_rows(admin_client, world):
    rows = [*three(world), row(username="alice", group="guests", password=PLAIN)]
    errors = row_errors(preview(admin_client, csv_bytes(*rows)))
    assert errors == {
        1: {
            "username": [
                "Username 'alice' is also in row(s) 4; expected each username once "
                "in the file."
            ]
        },
        4: {
            "username": [
                "Username 'alice' is also in row(s) 1; expected each username once "
                "in the file."
            ]
        },
    }


def test_a_bad_row_reports_every_problem(admin_client, world):
    bad = three(world, group="nope", permission="xyz", max_sessions="lots")
    errors = row_errors(preview(admin_client, csv_bytes(*bad)))
    assert set(errors[2]) == {"group", "permission", "max_sessions"}


def test_plain_passwords_are_validated_and_masked(admin_client, world, settings):
    settings.AUTH_PASSWORD_VALIDATORS = [
        {
            "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
            "OPTIONS": {"min_length": 12},
        }
    ]
    response = preview(admin_client, csv_bytes(*three(world, password="Sh0rt!")))
    assert row_errors(response) == {
        2: {
            "password": [
                "The password of row 2 is too weak: This password is too short. It "
                "must contain at least 12 characters."
            ]
        }
    }
    page = response.content.decode()
    assert "Sh0rt!" not in page
    assert PLAIN not in page
    assert "********" in page


def test_a_password_hash_is_stored_as_it_is(admin_client, world):
    hashed = make_password("from-the-old-server")
    rows = three(world, password=hashed)
    confirm(admin_client, preview(admin_client, csv_bytes(*rows)))
    bob = User.objects.get(username="bob")
    assert bob.password == hashed
    assert bob.check_password("from-the-old-server")
    assert User.objects.get(username="alice").check_password(PLAIN)


def test_the_confirm_step_is_all_or_nothing_too(admin_client, world):
    response = preview(admin_client, csv_bytes(*three(world)))
    before = counts()
    # Between the preview and the confirmation, the guests group goes away.
    FTPUserGroup.objects.filter(name="guests").delete()
    response = confirm(admin_client, response)
    assert response.redirect_chain[-1][0] == IMPORT
    assert messages_of(response) == [
        "Nothing was imported. Row 2, group: Unknown FTP group 'guests'; expected "
        "the name of an FTP group."
    ]
    assert counts() == before


def test_staff_users_passwords_need_the_change_user_permission(client, world):
    boss = User.objects.create_user("boss", password=PASSWORD, is_staff=True)
    # A superuser gave boss an account; the clerk may update it, not boss's
    # password.
    FTPUserAccount.objects.create(user=boss, group=world.guests)
    clerk = User.objects.create_user("clerk", password="x", is_staff=True)
    clerk.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["add_ftpuseraccount", "change_ftpuseraccount"]
        )
    )
    client.force_login(clerk)
    content = csv_bytes(row(username="boss", group="staff", password=PLAIN))
    assert row_errors(preview(client, content)) == {
        1: {
            "password": [
                "'boss' is a staff user: setting the password or email of a staff "
                "user needs the permission to change users."
            ]
        }
    }
    # Without a password, the account is updated and boss keeps theirs.
    content = csv_bytes(row(username="boss", group="staff"))
    confirm(client, preview(client, content))
    boss.refresh_from_db()
    assert boss.check_password(PASSWORD)
    assert boss.ftp_account.group == world.staff


def test_only_a_superuser_may_give_staff_an_account(client, admin_client, world):
    # The attack: "root,,grpA" with a blank password keeps root's password, so
    # root's admin password would log in over FTP.
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    User.objects.create_user("boss", password=PASSWORD, is_staff=True)
    clerk = User.objects.create_user("clerk", password="x", is_staff=True)
    clerk.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["add_ftpuseraccount", "change_ftpuseraccount", "change_user"]
        )
    )
    client.force_login(clerk)
    content = csv_bytes(
        row(username="root", group="staff"),
        row(username="boss", group="staff", password=PLAIN),
        row(username="frank", group="staff", password=PLAIN),
    )
    before = counts()
    response = preview(client, content)
    message = (
        "{!r} is a staff user or superuser: only a superuser may give them an FTP "
        "account, which would accept their admin password over FTP. Pick a user "
        "who is not staff, or ask a superuser."
    )
    assert row_errors(response) == {
        1: {"username": [message.format("root")]},
        2: {"username": [message.format("boss")]},
    }
    assert message.format("root") in html.unescape(response.content.decode())
    assert counts() == before
    # A superuser may.
    response = confirm(admin_client, preview(admin_client, content))
    assert messages_of(response) == [
        "Import finished: 3 new, 0 updated, 0 deleted and 0 skipped FTP accounts."
    ]
    assert (
        FTPUserAccount.objects.filter(
            user__username__in=["root", "boss", "frank"]
        ).count()
        == 3
    )
    assert User.objects.get(username="root").check_password(PASSWORD)
    assert User.objects.get(username="boss").check_password(PLAIN)


def test_a_home_directory_saved_before_the_validators_is_a_row_error(
    admin_client, world
):
    HomeDirectory.objects.create(path="/")  # objects.create runs no validator
    before = counts()
    response = preview(admin_client, csv_bytes(*three(world, home_directory="/")))
    assert row_errors(response) == {
        2: {
            "home_directory": [
                "The home directory '/' may not be used: Path '/' is the root "
                "directory /; expected a directory such as /srv/ftp/{username}. Fix "
                "its path first, or pick another home directory."
            ]
        }
    }
    assert response.context.get("confirm_form") is None
    assert counts() == before


# XLSX ---------------------------------------------------------------------------


def test_xlsx_import_with_native_cells(admin_client, world):
    content = xlsx_bytes(
        {
            "username": 1234,
            "group": "staff",
            "is_enabled": True,
            "require_tls": False,
            "max_sessions": 3,
            "expires_at": datetime.datetime(2031, 5, 6, 7, 8),
            "password": PLAIN,
        },
        {"username": "dora", "group": "guests", "password": PLAIN},
    )
    response = confirm(admin_client, preview(admin_client, content, XLSX_FORMAT))
    assert "2 new" in messages_of(response)[0]
    numbered = FTPUserAccount.objects.get(user__username="1234")
    assert numbered.max_sessions == 3
    assert numbered.require_tls is False
    assert numbered.expires_at == datetime.datetime(
        2031, 5, 6, 7, 8, tzinfo=datetime.UTC
    )
    assert numbered.user.check_password(PLAIN)
    assert FTPUserAccount.objects.get(user__username="dora").group == world.guests


def test_xlsx_row_errors_too(admin_client, world):
    content = xlsx_bytes({"username": "dora", "group": "nobody", "password": PLAIN})
    assert row_errors(preview(admin_client, content, XLSX_FORMAT)) == {
        1: {"group": ["Unknown FTP group 'nobody'; expected the name of an FTP group."]}
    }


# Export ---------------------------------------------------------------------------


def export(client, file_format=CSV_FORMAT):
    data = {"format": file_format}
    data |= {f"ftpuseraccountresource_{name}": "on" for name in COLUMNS}
    response = client.post(EXPORT, data)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Disposition"].startswith("attachment;")
    return response


def test_export_has_every_column_and_no_password(admin_client, world):
    confirm(admin_client, preview(admin_client, csv_bytes(*three(world))))
    records = list(csv.DictReader(io.StringIO(export(admin_client).content.decode())))
    assert [r["username"] for r in records] == ["alice", "bob", "carol"]
    assert list(records[0]) == COLUMNS
    assert {r["password"] for r in records} == {""}
    bob = records[1]
    assert bob == {
        "username": "bob",
        "email": "",
        "group": "guests",
        "home_directory": world.shared.path,
        "permission": "elrw",
        "is_enabled": "0",
        "expires_at": "2030-01-01T10:00:00+00:00",
        "require_tls": "1",
        "max_sessions": "",
        "allowed_networks": "192.0.2.0/24 2001:db8::/32",
        "quota_bytes": "",
        "quota_files": "",
        "max_upload_size": "",
        "upload_rate": "",
        "download_rate": "",
        "password": "",
    }
    assert records[0]["email"] == "alice@example.com"
    assert records[0]["max_sessions"] == "2"
    for user in User.objects.exclude(username="admin"):
        assert user.password not in export(admin_client).content.decode()


@pytest.mark.parametrize("file_format", [CSV_FORMAT, XLSX_FORMAT])
def test_an_export_reimports_cleanly(admin_client, world, file_format):
    confirm(admin_client, preview(admin_client, csv_bytes(*three(world))))
    before = list(
        FTPUserAccount.objects.order_by("pk").values(
            "group", "home_directory", "permission", "is_enabled", "expires_at"
        )
    )
    content = export(admin_client, file_format).content
    response = preview(admin_client, content, file_format)
    assert row_errors(response) == {}
    response = confirm(admin_client, response)
    assert messages_of(response) == [
        "Import finished: 0 new, 0 updated, 0 deleted and 3 skipped FTP accounts."
    ]
    after = list(
        FTPUserAccount.objects.order_by("pk").values(
            "group", "home_directory", "permission", "is_enabled", "expires_at"
        )
    )
    assert after == before
    for name in ("alice", "bob", "carol"):
        assert User.objects.get(username=name).check_password(PLAIN)


def test_xlsx_export_writes_text_cells(admin_client, world):
    confirm(admin_client, preview(admin_client, csv_bytes(*three(world))))
    sheet = openpyxl.load_workbook(
        io.BytesIO(export(admin_client, XLSX_FORMAT).content)
    ).active
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == COLUMNS
    assert rows[2][COLUMNS.index("username")] == "bob"
    assert rows[2][COLUMNS.index("password")] in (None, "")


# Permissions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codenames", "can_import", "can_export"),
    [
        (["view_ftpuseraccount"], False, True),
        (["add_ftpuseraccount"], False, False),
        # As in Django, the change permission implies the view permission.
        (["change_ftpuseraccount"], False, True),
        (["add_ftpuseraccount", "change_ftpuseraccount"], True, True),
    ],
)
def test_import_needs_add_and_change(client, world, codenames, can_import, can_export):
    user = User.objects.create_user("clerk", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    assert client.get(IMPORT).status_code == (200 if can_import else 403)
    response = preview(client, csv_bytes(*three(world)))
    assert response.status_code == (200 if can_import else 403)
    assert client.post(PROCESS, {}).status_code == (200 if can_import else 403)
    assert client.get(EXPORT).status_code == (200 if can_export else 403)


# The resource alone, and an FTP login -----------------------------------------------


def test_the_resource_dry_run_creates_nothing(world):
    dataset = tablib.Dataset(headers=COLUMNS)
    for values in three(world):
        dataset.append([values[c] for c in COLUMNS])
    result = FTPUserAccountResource().import_data(dataset, dry_run=True)
    assert not result.has_errors() and not result.has_validation_errors()
    assert counts() == (0, 0)
    result = FTPUserAccountResource().import_data(dataset, dry_run=False)
    assert counts() == (3, 3)


def test_an_imported_account_logs_in_over_ftp(admin_client, world, ftp_server):
    confirm(admin_client, preview(admin_client, csv_bytes(*three(world))))
    server = ftp_server()
    ftp = server.client()
    try:
        assert ftp.login("alice", PLAIN).startswith("230")
        assert ftp.pwd() == "/"
    finally:
        ftp.close()
    assert (world.root / "alice").is_dir()
    ftp = server.client()
    try:
        # bob is imported disabled.
        with pytest.raises(ftplib.error_perm, match="^530"):
            ftp.login("bob", PLAIN)
    finally:
        ftp.close()
