"""Quotas in the accounts admin: the usage bars, the "Quota usage" filter,
the sizes typed with units on the account and group forms."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ftpserver_core.models import FTPUserAccount, FTPUserGroup, QuotaUsage

LIST = reverse("admin:ftpserver_core_ftpuseraccount_changelist")
MiB = 1024 * 1024


def account(name, group=None, used=None, files=0, **fields):
    user = get_user_model().objects.create_user(name, password="x")
    obj = FTPUserAccount.objects.create(user=user, group=group, **fields)
    if used is not None:
        QuotaUsage.objects.create(account=obj, bytes=used, files=files)
    return obj


@pytest.fixture
def world(db):
    limited = FTPUserGroup.objects.create(name="limited", quota_bytes=100 * MiB)
    return {
        # Its own quota: 3.5 MiB of 10 MiB.
        "own": account("own", used=int(3.5 * MiB), quota_bytes=10 * MiB),
        # The group's quota, 95 % used.
        "inherits": account("inherits", group=limited, used=95 * MiB),
        # Its own quota overrides the group's: over it.
        "over": account("over", group=limited, used=12 * MiB, quota_bytes=10 * MiB),
        # Files only: 9 of 10.
        "files": account("files", used=MiB, files=9, quota_files=10),
        # No quota, something counted.
        "free": account("free", used=5 * MiB),
        # No quota, never counted.
        "new": account("new"),
    }


def cells(response):
    """{username: the quota cell's HTML} of the list."""
    assert response.status_code == 200
    html = response.content.decode()
    found = re.findall(
        r'class="field-username"><a [^>]*>([^<]+)</a>.*?class="field-quota">(.*?)</td>',
        html,
        re.DOTALL,
    )
    assert len(found) == len(response.context["cl"].result_list)
    return dict(found)


def usernames(response):
    assert response.status_code == 200
    return sorted(a.user.username for a in response.context["cl"].result_list)


def test_the_usage_bars(admin_client, world):
    shown = cells(admin_client.get(LIST))
    assert "3.5\xa0MB of 10.0\xa0MB (35%)" in shown["own"]
    assert 'class="ftp-quota ftp-quota-ok"' in shown["own"]
    assert 'value="35"' in shown["own"]
    assert "95.0\xa0MB of 100.0\xa0MB (95%)" in shown["inherits"]
    assert "ftp-quota-high" in shown["inherits"]
    assert "12.0\xa0MB of 10.0\xa0MB (120%)" in shown["over"]
    assert "ftp-quota-over" in shown["over"] and 'value="100"' in shown["over"]
    assert "9 of 10 files (90%)" in shown["files"]
    assert "ftp-quota-high" in shown["files"]
    assert "5.0\xa0MB, no quota" in shown["free"]
    assert shown["new"] == "-"


def test_the_list_has_no_query_per_row(admin_client, world):
    with CaptureQueriesContext(connection) as few:
        admin_client.get(LIST)
    group = FTPUserGroup.objects.get(name="limited")
    for i in range(10):
        account(f"more{i}", group=group, used=i * MiB)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LIST)
    assert len(response.context["cl"].result_list) == 16
    assert len(many.captured_queries) == len(few.captured_queries)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("over90", ["files", "inherits", "over"]),
        ("over", ["over"]),
        ("within", ["files", "inherits", "own"]),
        ("none", ["free", "new"]),
    ],
)
def test_the_quota_usage_filter(admin_client, world, value, expected):
    assert usernames(admin_client.get(LIST, {"quota": value})) == expected


def test_the_filter_moves_with_the_usage(admin_client, world):
    # 89.9 % is under the mark, 90 % on it.
    QuotaUsage.objects.filter(account=world["own"]).update(bytes=int(8.99 * MiB))
    assert "own" not in usernames(admin_client.get(LIST, {"quota": "over90"}))
    QuotaUsage.objects.filter(account=world["own"]).update(bytes=9 * MiB)
    assert "own" in usernames(admin_client.get(LIST, {"quota": "over90"}))
    # The group's quota raised: "inherits" is back under the mark.
    FTPUserGroup.objects.filter(name="limited").update(quota_bytes=1000 * MiB)
    assert "inherits" not in usernames(admin_client.get(LIST, {"quota": "over90"}))


def test_the_list_sorts_by_usage(admin_client, world):
    column = admin_client.get(LIST).context["cl"].list_display.index("quota")
    response = admin_client.get(LIST, {"o": f"-{column}"})
    names = [a.user.username for a in response.context["cl"].result_list]
    assert names[0] == "inherits" and names[-1] == "new"


# --- the forms ---------------------------------------------------------------


def change_data(obj, **fields):
    data = {
        "group": obj.group_id or "",
        "home_directory": "",
        "permission": "",
        "is_enabled": "on",
        "expires_at": "",
        "require_tls": "unknown",
        "max_sessions": "",
        "allowed_networks": "",
        "quota_bytes": "",
        "quota_files": "",
        "max_upload_size": "",
        "upload_rate": "",
        "download_rate": "",
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
        "_save": "Save",
    }
    data.update(fields)
    return data


def test_sizes_are_typed_with_units(admin_client, world):
    obj = world["new"]
    change = reverse("admin:ftpserver_core_ftpuseraccount_change", args=[obj.pk])
    response = admin_client.post(
        change,
        change_data(
            obj,
            quota_bytes="10 MiB",
            quota_files="5000",
            max_upload_size="1.5G",
            upload_rate="500K",
            download_rate="2097152",
        ),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    obj.refresh_from_db()
    assert (
        obj.quota_bytes,
        obj.quota_files,
        obj.max_upload_size,
        obj.upload_rate,
        obj.download_rate,
    ) == (10 * MiB, 5000, 1536 * MiB, 500 * 1024, 2 * MiB)
    # Shown back with the unit, in the "Quota and bandwidth" fieldset; the
    # lists' units (filesizeformat's: an MB is 1024 x 1024 bytes).
    html = admin_client.get(change).content.decode()
    assert "Quota and bandwidth" in html
    assert 'name="quota_bytes" value="10 MB"' in html
    assert 'name="max_upload_size" value="1536 MB"' in html
    assert 'name="download_rate" value="2 MB"' in html
    assert "Blank: the group" in html


def test_a_bad_size_says_what_was_expected(admin_client, world):
    obj = world["new"]
    change = reverse("admin:ftpserver_core_ftpuseraccount_change", args=[obj.pk])
    response = admin_client.post(change, change_data(obj, quota_bytes="ten megs"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["quota_bytes"] == [
        "'ten megs' is not a size; expected a size such as 1048576, 500 KB, "
        "10 MB or 2 GB, or blank."
    ]
    response = admin_client.post(change, change_data(obj, upload_rate="-5"))
    assert "upload_rate" in response.context["adminform"].form.errors
    obj.refresh_from_db()
    assert obj.quota_bytes is None and obj.upload_rate is None


def test_the_group_form_takes_units_too(admin_client, world):
    group = FTPUserGroup.objects.get(name="limited")
    change = reverse("admin:ftpserver_core_ftpusergroup_change", args=[group.pk])
    response = admin_client.post(
        change,
        {
            "name": "limited",
            "permission": "elr",
            "home_directory": "",
            "description": "",
            "require_tls": "unknown",
            "max_sessions": "",
            "allowed_networks": "",
            "quota_bytes": "2 GiB",
            "quota_files": "",
            "max_upload_size": "",
            "upload_rate": "1 MiB",
            "download_rate": "",
            "rules-TOTAL_FORMS": "0",
            "rules-INITIAL_FORMS": "0",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    group.refresh_from_db()
    assert (group.quota_bytes, group.upload_rate) == (2048 * MiB, MiB)


def test_import_and_export_carry_the_quota_columns(world):
    import tablib

    from ftpadmin.resources import FTPUserAccountResource

    data = tablib.Dataset(
        headers=["username", "quota_bytes", "quota_files", "upload_rate"]
    )
    data.append(["own", "2048", "", "1024"])
    result = FTPUserAccountResource().import_data(data, dry_run=False)
    assert not result.has_errors() and not result.has_validation_errors()
    obj = FTPUserAccount.objects.get(user__username="own")
    assert (obj.quota_bytes, obj.quota_files, obj.upload_rate) == (2048, None, 1024)
    exported = FTPUserAccountResource().export(FTPUserAccount.objects.filter(pk=obj.pk))
    row = dict(zip(exported.headers, exported[0], strict=True))
    assert (row["quota_bytes"], row["upload_rate"], row["download_rate"]) == (
        "2048",
        "1024",
        "",
    )
    bad = tablib.Dataset(headers=["username", "quota_bytes"])
    bad.append(["own", "10 MiB"])
    result = FTPUserAccountResource().import_data(bad, dry_run=True)
    assert result.has_validation_errors() or result.has_errors()
