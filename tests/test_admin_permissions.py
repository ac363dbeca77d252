"""Delegated administration: what the admin shows and allows follows Django's
permissions (``django.contrib.auth`` ``Permission`` objects), and nothing else.
"""

import datetime
import ftplib

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from ftpserver_core.models import (
    AuditEvent,
    Ban,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
    NetworkRule,
)

INDEX = reverse("admin:index")
APP_INDEX = reverse("admin:app_list", args=["ftpserver_core"])
AUDIT = reverse("admin:ftpserver_core_auditevent_changelist")
REPORTS = [
    reverse("ftpadmin:transfers"),
    reverse("ftpadmin:transfers_csv"),
    reverse("ftpadmin:transfers_excel_csv"),
    reverse("ftpadmin:transfers_xferlog"),
]
ACCOUNT_PERMISSIONS = [
    f"{action}_{model}"
    for model in ("ftpuseraccount", "ftpusergroup", "homedirectory", "directoryrule")
    for action in ("view", "add", "change", "delete")
]
# Where each model's pages are, and a field its change form would edit.
MODELS = {
    "ftpuseraccount": "permission",
    "ftpusergroup": "permission",
    "homedirectory": "name",
}
SAVE_BUTTONS = ['name="_save"', 'name="_continue"', 'name="_addanother"']


@pytest.fixture
def objects(db, tmp_path):
    """A home directory, a group, an account, and an audit record of today."""
    home = HomeDirectory.objects.create(path=str(tmp_path / "{username}"), name="homes")
    group = FTPUserGroup.objects.create(
        name="staff", permission="elr", home_directory=home
    )
    user = get_user_model().objects.create_user("alice", password="x")
    account = FTPUserAccount.objects.create(user=user, group=group, permission="elr")
    event = AuditEvent.objects.create(
        time=timezone.now(), event="upload", username="alice", size=1024
    )
    return {
        "homedirectory": home,
        "ftpusergroup": group,
        "ftpuseraccount": account,
        "auditevent": event,
    }


@pytest.fixture
def login(client, db):
    """Log in a new staff user holding exactly the given permissions."""

    def login(*codenames, superuser=False):
        user_model = get_user_model()
        if superuser:
            user = user_model.objects.create_superuser("root", "root@example.com", "x")
        else:
            user = user_model.objects.create_user(
                "delegate", password="x", is_staff=True
            )
            perms = Permission.objects.filter(
                content_type__app_label="ftpserver_core", codename__in=codenames
            )
            assert perms.count() == len(codenames)
            user.user_permissions.set(perms)
        client.force_login(user)
        return client

    return login


def changelist(name):
    return reverse(f"admin:ftpserver_core_{name}_changelist")


def url(view, obj):
    """Return the change or delete page of ``obj``."""
    return reverse(f"admin:ftpserver_core_{obj._meta.model_name}_{view}", args=[obj.pk])


def page(client, path):
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.content.decode()


def assert_no_audit_trail(client, objects):
    """Not on the index, refused everywhere else."""
    html = page(client, INDEX)
    assert AUDIT not in html
    assert 'id="ftpadmin-dashboard"' not in html
    assert 'id="ftpadmin-reports"' not in html
    assert REPORTS[0] not in html
    assert client.get(AUDIT).status_code == 403
    assert client.get(url("change", objects["auditevent"])).status_code == 403
    for report in REPORTS:
        assert client.get(report).status_code == 403


def assert_audit_trail(client):
    html = page(client, INDEX)
    assert f'href="{AUDIT}"' in html
    assert 'id="ftpadmin-dashboard"' in html
    assert f'href="{REPORTS[0]}"' in html
    assert page(client, AUDIT)
    assert page(client, REPORTS[0])


# Staff without the audit permissions -------------------------------------------


def test_staff_without_any_permission_sees_no_ftp_page(login, objects):
    client = login()
    assert_no_audit_trail(client, objects)
    html = page(client, INDEX)
    assert APP_INDEX not in html
    assert "You don’t have permission to view or edit anything." in html
    assert client.get(APP_INDEX).status_code == 404  # no model of it to show
    for name in MODELS:
        assert client.get(changelist(name)).status_code == 403


def test_account_administrators_do_not_see_the_audit_trail(login, objects):
    """Full rights on accounts, groups and homes; none on the audit trail."""
    client = login(*ACCOUNT_PERMISSIONS)
    assert_no_audit_trail(client, objects)
    index = page(client, INDEX)
    app = page(client, APP_INDEX)
    for html in (index, app):
        assert f'href="{APP_INDEX}"' in html
        assert AUDIT not in html
        for name in MODELS:
            assert f'href="{changelist(name)}"' in html
    for name in MODELS:
        assert any(
            button in page(client, url("change", objects[name]))
            for button in SAVE_BUTTONS
        )


def test_audit_viewers_see_the_audit_trail_and_nothing_else(login, objects):
    client = login("view_auditevent")
    assert_audit_trail(client)
    assert page(client, url("change", objects["auditevent"]))
    index = page(client, INDEX)
    for name in MODELS:
        assert changelist(name) not in index
        assert client.get(changelist(name)).status_code == 403


# View-only delegates ------------------------------------------------------------


@pytest.fixture
def viewer(login):
    return login(
        "view_ftpuseraccount",
        "view_ftpusergroup",
        "view_homedirectory",
        "view_directoryrule",
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_view_only_sees_read_only_pages(viewer, objects, name):
    obj = objects[name]
    listed = page(viewer, changelist(name))
    assert url("change", obj) in listed
    assert reverse(f"admin:ftpserver_core_{name}_add") not in listed
    form = page(viewer, url("change", obj))
    for button in SAVE_BUTTONS:
        assert button not in form
    assert f'name="{MODELS[name]}"' not in form  # shown, not editable
    assert url("delete", obj) not in form


@pytest.mark.parametrize("name", list(MODELS))
def test_view_only_cannot_change_add_or_delete(viewer, objects, name):
    obj = objects[name]
    before = {
        field.attname: getattr(obj, field.attname)
        for field in obj._meta.concrete_fields
    }
    post = {MODELS[name]: "elradfmw" if MODELS[name] == "permission" else "renamed"}
    assert viewer.post(url("change", obj), post).status_code == 403
    assert viewer.post(url("delete", obj), {"post": "yes"}).status_code == 403
    assert viewer.get(url("delete", obj)).status_code == 403
    add = reverse(f"admin:ftpserver_core_{name}_add")
    assert viewer.get(add).status_code == 403
    assert viewer.post(add, post).status_code == 403
    obj.refresh_from_db()
    after = {
        field.attname: getattr(obj, field.attname)
        for field in obj._meta.concrete_fields
    }
    assert after == before
    assert type(obj).objects.count() == 1


def test_view_only_does_not_see_the_audit_trail_either(viewer, objects):
    assert_no_audit_trail(viewer, objects)


def test_view_only_rights_can_be_given_through_a_group(client, objects):
    """A django.contrib.auth Group carries the same permissions."""
    from django.contrib.auth.models import Group

    delegates = Group.objects.create(name="ftp delegates")
    delegates.permissions.set(
        Permission.objects.filter(codename__in=["view_ftpusergroup", "view_auditevent"])
    )
    user = get_user_model().objects.create_user("bob", password="x", is_staff=True)
    user.groups.add(delegates)
    client.force_login(user)
    group = objects["ftpusergroup"]
    assert_audit_trail(client)
    form = page(client, url("change", group))
    assert not any(button in form for button in SAVE_BUTTONS)
    assert client.post(url("delete", group), {"post": "yes"}).status_code == 403
    assert FTPUserGroup.objects.filter(pk=group.pk).exists()


# The superuser ------------------------------------------------------------------


def test_superuser_sees_and_may_do_everything(login, objects):
    client = login(superuser=True)
    assert_audit_trail(client)
    index = page(client, INDEX)
    for name in MODELS:
        assert f'href="{changelist(name)}"' in index
        add = reverse(f"admin:ftpserver_core_{name}_add")
        assert add in page(client, changelist(name))
        form = page(client, url("change", objects[name]))
        assert 'name="_save"' in form
        assert url("delete", objects[name]) in form
    # The audit trail stays read-only, even for a superuser.
    record = page(client, url("change", objects["auditevent"]))
    assert 'name="_save"' not in record
    # Deleting what may be deleted: an account, then its group.
    for name in ("ftpuseraccount", "ftpusergroup"):
        obj = objects[name]
        response = client.post(url("delete", obj), {"post": "yes"})
        assert response.status_code == 302
        assert not type(obj).objects.filter(pk=obj.pk).exists()


def test_the_dashboard_counts_todays_record_for_the_superuser(login, objects):
    client = login(superuser=True)
    html = page(client, INDEX)
    today = timezone.localdate()
    assert (
        f"{today:%a} {today.day} {today:%b %Y}: up 1.0\xa0KB, down 0\xa0bytes" in html
    )
    yesterday = today - datetime.timedelta(days=1)
    assert f"{yesterday:%a} {yesterday.day} {yesterday:%b %Y}: up 0\xa0bytes" in html


# Account administrators and the admins' passwords --------------------------------


def test_account_administrators_cannot_put_a_superuser_on_ftp(
    login, objects, ftp_server
):
    """Issue 10, B: only a superuser may give a staff user or superuser an FTP
    account, whose password would be their admin password."""
    admin_password = "Adm1n-Passw0rd!"
    root = get_user_model().objects.create_superuser(
        "root", "root@example.com", admin_password
    )
    client = login(*ACCOUNT_PERMISSIONS)
    refusal = (
        "'root' is a staff user or superuser: only a superuser may give them an FTP "
        "account, which would accept their admin password over FTP. Pick a user "
        "who is not staff, or ask a superuser."
    )
    # The add form does not offer root, and refuses root posted anyway.
    add = reverse("admin:ftpserver_core_ftpuseraccount_add")
    assert f'<option value="{root.pk}">' not in page(client, add)
    response = client.post(
        add,
        {
            "existing_user": root.pk,
            "group": objects["ftpusergroup"].pk,
            "is_enabled": "on",
            "require_tls": "unknown",
            "rules-TOTAL_FORMS": "0",
            "rules-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200, "the account was created"
    assert response.context["adminform"].form.errors == {"existing_user": [refusal]}
    # The import row of the issue: a blank password keeps root's.
    columns = (
        "username,email,group,home_directory,permission,is_enabled,expires_at,"
        "require_tls,max_sessions,allowed_networks,password"
    )
    response = client.post(
        reverse("admin:ftpserver_core_ftpuseraccount_import"),
        {
            "format": "0",
            "import_file": SimpleUploadedFile(
                "accounts.csv", f"{columns}\nroot,,staff,,,,,,,,\n".encode()
            ),
        },
    )
    assert response.status_code == 200
    result = response.context["result"]
    assert {r.number: r.field_specific_errors for r in result.invalid_rows} == {
        1: {"username": [refusal]}
    }
    assert response.context.get("confirm_form") is None
    assert not FTPUserAccount.objects.filter(user=root).exists()
    # So root's admin password does not log in over FTP.
    ftp = ftp_server().client()
    try:
        with pytest.raises(ftplib.error_perm, match="^530"):
            ftp.login("root", admin_password)
    finally:
        ftp.close()


# The defender: bans, the safelist and the blocklist --------------------------------

# Each defender model, and a field its change form would edit.
DEFENDER = {"ban": "note", "networkrule": "note"}
DEFENDER_PERMISSIONS = [
    f"{action}_{model}"
    for model in DEFENDER
    for action in ("view", "add", "change", "delete")
]


@pytest.fixture
def defender_objects(db):
    """An expired ban (which may be deleted), an active one and a rule."""
    now = timezone.now()
    return {
        "ban": Ban.objects.create(
            network="198.51.100.9/32",
            reason="no_login",
            created_by="ftp1",
            expires_at=now - datetime.timedelta(hours=1),
        ),
        "active": Ban.objects.create(
            network="203.0.113.7/32",
            reason="failed_logins",
            created_by="ftp1",
            expires_at=now + datetime.timedelta(hours=1),
        ),
        "networkrule": NetworkRule.objects.create(
            network="10.0.0.0/8", kind="safelist", note="office"
        ),
    }


def test_others_do_not_see_the_defender(login, objects, defender_objects):
    """Account administrators and audit viewers: no bans, no lists."""
    for perms in (ACCOUNT_PERMISSIONS, ["view_auditevent"]):
        client = login(*perms)
        index = page(client, INDEX)
        for name in DEFENDER:
            assert changelist(name) not in index
            assert client.get(changelist(name)).status_code == 403
            assert client.get(url("change", defender_objects[name])).status_code == 403
        client.logout()
        get_user_model().objects.filter(username="delegate").delete()


@pytest.mark.parametrize("name", list(DEFENDER))
def test_defender_view_only_sees_read_only_pages_and_no_action(
    login, defender_objects, name
):
    client = login("view_ban", "view_networkrule")
    obj = defender_objects[name]
    response = client.get(changelist(name))
    assert response.status_code == 200
    listed = response.content.decode()
    assert url("change", obj) in listed
    assert reverse(f"admin:ftpserver_core_{name}_add") not in listed
    assert response.context["action_form"] is None
    assert 'name="action"' not in listed
    form = page(client, url("change", obj))
    for button in SAVE_BUTTONS:
        assert button not in form
    assert f'name="{DEFENDER[name]}"' not in form
    assert url("delete", obj) not in form


@pytest.mark.parametrize("name", list(DEFENDER))
def test_defender_view_only_cannot_change_add_delete_or_act(
    login, defender_objects, name
):
    client = login("view_ban", "view_networkrule")
    obj = defender_objects[name]
    before = {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}
    post = {DEFENDER[name]: "changed", "network": "0.0.0.0/0"}
    assert client.post(url("change", obj), post).status_code == 403
    assert client.get(url("delete", obj)).status_code == 403
    assert client.post(url("delete", obj), {"post": "yes"}).status_code == 403
    add = reverse(f"admin:ftpserver_core_{name}_add")
    assert client.get(add).status_code == 403
    assert client.post(add, post | {"kind": "blocklist"}).status_code == 403
    actions = ["delete_selected", "lift_bans", "extend_bans", "make_permanent"]
    for action in actions:
        client.post(
            changelist(name),
            {
                "action": action,
                "_selected_action": [obj.pk],
                "index": "0",
                "post": "yes",
            },
        )
    obj.refresh_from_db()
    after = {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}
    assert after == before
    active = defender_objects["active"]
    active.refresh_from_db()
    assert active.lifted_at is None
    assert not AuditEvent.objects.filter(event__in=["ban", "unban"]).exists()


def test_defender_administrators_may_do_everything_but_delete_an_active_ban(
    login, defender_objects
):
    client = login(*DEFENDER_PERMISSIONS)
    index = page(client, INDEX)
    for name in DEFENDER:
        assert f'href="{changelist(name)}"' in index
        add = reverse(f"admin:ftpserver_core_{name}_add")
        assert add in page(client, changelist(name))
        form = page(client, url("change", defender_objects[name]))
        assert 'name="_save"' in form
        assert f'name="{DEFENDER[name]}"' in form
        assert url("delete", defender_objects[name]) in form
    active = defender_objects["active"]
    assert url("delete", active) not in page(client, url("change", active))
    assert client.post(url("delete", active), {"post": "yes"}).status_code == 403
    for name in DEFENDER:
        obj = defender_objects[name]
        assert client.post(url("delete", obj), {"post": "yes"}).status_code == 302
        assert not type(obj).objects.filter(pk=obj.pk).exists()
    assert Ban.objects.filter(pk=active.pk).exists()
