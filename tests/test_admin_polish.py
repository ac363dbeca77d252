"""Admin polish (issue 13): the site-level files, the inherit labels, sizes, import errors.

The standalone suite's index override, branding and favicon come from the
top-level templates/ and static/ (TEMPLATES' DIRS, STATICFILES_DIRS), never
from the ftpadmin app: a host project that installs ftpadmin keeps Django's
admin index, and opts in to the dashboard with ftpadmin/admin_index.html.
"""

import re
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.template import engines
from django.urls import reverse

from ftpserver_core.models import FTPUserAccount, FTPUserGroup, HomeDirectory

from .test_account_import import csv_bytes, preview, row_errors, three, world  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent
User = get_user_model()


def html_of(client, path):
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.content.decode()


def host_templates(settings):
    """The suite's TEMPLATES without its DIRS: what a host project has."""
    return [{**engine, "DIRS": []} for engine in settings.TEMPLATES]


# View site, branding, favicon --------------------------------------------------


def test_no_view_site_link_and_the_bare_address_leads_to_the_admin(admin_client):
    html = html_of(admin_client, reverse("admin:index"))
    assert "View site" not in html
    assert 'href="/"' not in html
    response = admin_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")


def test_branding_and_favicon_on_every_admin_page(admin_client, client):
    favicon = re.compile(
        r'<link rel="icon" href="/static/favicon\.svg" type="image/svg\+xml"'
    )
    for html in (
        html_of(client, reverse("admin:login")),
        html_of(admin_client, reverse("admin:index")),
        html_of(
            admin_client, reverse("admin:ftpserver_core_ftpuseraccount_changelist")
        ),
        html_of(admin_client, reverse("admin:ftpserver_core_ftpuseraccount_add")),
    ):
        assert favicon.search(html), html[:2000]
        assert "FTP server administration</a>" in html
        assert 'class="site-mark" src="/static/favicon.svg"' in html
    assert "<title>Log in | FTP server admin</title>" in html_of(
        client, reverse("admin:login")
    )


def test_the_site_files_come_from_the_top_level_folders():
    # The favicon and branding from static/ (STATICFILES_DIRS), none from an app.
    for name in ("favicon.svg", "branding.css"):
        assert Path(finders.find(name)) == REPO_ROOT / "static" / name
    svg = (REPO_ROOT / "static" / "favicon.svg").read_text()
    assert svg.startswith("<svg") and 'viewBox="0 0 32 32"' in svg
    # The index override from templates/ (DIRS), not from ftpadmin/templates/.
    engine = engines["django"]
    origin = engine.get_template("admin/index.html").template.origin.name
    assert Path(origin) == REPO_ROOT / "templates" / "admin" / "index.html"
    assert not (REPO_ROOT / "ftpadmin" / "templates" / "admin" / "index.html").exists()
    assert not (
        REPO_ROOT / "ftpadmin" / "templates" / "admin" / "base_site.html"
    ).exists()


def test_a_host_project_keeps_its_own_admin_index(admin_client, settings):
    """ftpadmin installed (before django.contrib.admin), no suite DIRS: Django's index."""
    settings.TEMPLATES = host_templates(settings)
    settings.ROOT_URLCONF = "tests.project_urls"
    html = html_of(admin_client, "/backoffice/")
    assert "Site administration" in html
    assert 'id="ftpadmin-dashboard"' not in html
    assert 'id="ftpadmin-reports"' not in html
    assert "ftpadmin/dashboard.css" not in html
    assert "favicon.svg" not in html and "site-mark" not in html
    # The FTP models are there all the same: ftpadmin's admin is installed.
    assert "/backoffice/ftpserver_core/ftpuseraccount/" in html


def test_a_host_project_opts_in_to_the_dashboard(admin_client, settings, monkeypatch):
    settings.TEMPLATES = host_templates(settings)
    settings.ROOT_URLCONF = "tests.project_urls"
    monkeypatch.setattr(admin.site, "index_template", "ftpadmin/admin_index.html")
    html = html_of(admin_client, "/backoffice/")
    assert 'id="ftpadmin-dashboard"' in html
    assert "ftpadmin/dashboard.css" in html
    assert 'href="/backoffice/ftp/transfers/"' in html
    assert "favicon.svg" not in html  # the suite's branding stays the suite's


# "Inherit from group" rather than "Unknown" -----------------------------------


def options(html, name):
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', html, re.S)
    assert select, name
    return re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select[1])


@pytest.fixture
def accounts(db, tmp_path):
    home = HomeDirectory.objects.create(path=str(tmp_path / "{username}"))
    tls = FTPUserGroup.objects.create(name="tls", home_directory=home, require_tls=True)
    plain = FTPUserGroup.objects.create(name="plain", home_directory=home)
    made = {}
    for name, group, require_tls in (
        ("inherits", tls, None),
        ("forced", plain, True),
        ("relaxed", tls, False),
    ):
        user = User.objects.create_user(name, password="x")
        made[name] = FTPUserAccount.objects.create(
            user=user, group=group, require_tls=require_tls
        )
    return {"tls": tls, "plain": plain, **made}


def test_the_account_forms_say_inherit_from_group(admin_client, accounts):
    expected = [("unknown", "Inherit from group"), ("true", "Yes"), ("false", "No")]
    add = html_of(admin_client, reverse("admin:ftpserver_core_ftpuseraccount_add"))
    assert options(add, "require_tls") == expected
    change = html_of(
        admin_client,
        reverse(
            "admin:ftpserver_core_ftpuseraccount_change", args=[accounts["inherits"].pk]
        ),
    )
    assert options(change, "require_tls") == expected
    assert re.search(r'<option value="unknown" selected>Inherit from group', change)
    assert ">Unknown<" not in add and ">Unknown<" not in change
    # The inline on the Django user's page too.
    user_page = html_of(
        admin_client,
        reverse("admin:auth_user_change", args=[accounts["inherits"].user_id]),
    )
    assert options(user_page, "ftp_account-0-require_tls") == expected


def test_the_group_form_says_server_default(admin_client, accounts):
    html = html_of(
        admin_client,
        reverse(
            "admin:ftpserver_core_ftpusergroup_change", args=[accounts["plain"].pk]
        ),
    )
    assert options(html, "require_tls") == [
        ("unknown", "Server default"),
        ("true", "Yes"),
        ("false", "No"),
    ]
    assert re.search(r'<option value="unknown" selected>Server default', html)


def test_inherit_is_saved_as_blank(admin_client, accounts):
    account = accounts["forced"]
    change = reverse("admin:ftpserver_core_ftpuseraccount_change", args=[account.pk])
    form = admin_client.get(change).context["adminform"].form
    data = {
        name: "" if value is None else value
        for name, value in form.initial.items()
        if name in form.fields
    }
    data.update(
        {
            "group": account.group_id,
            "require_tls": "unknown",
            "is_enabled": "on",
            "expires_at_0": "",
            "expires_at_1": "",
            "rules-TOTAL_FORMS": "0",
            "rules-INITIAL_FORMS": "0",
        }
    )
    data = {k: v for k, v in data.items() if v is not None and k != "expires_at"}
    if not account.is_enabled:
        data.pop("is_enabled")
    response = admin_client.post(change, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    account.refresh_from_db()
    assert account.require_tls is None


def filter_links(html, title):
    block = re.search(
        rf"<summary>\s*By {title}\s*</summary>\s*<ul>(.*?)</ul>", html, re.S | re.I
    )
    assert block, title
    return [
        (href.replace("&amp;", "&"), text.strip())
        for href, text in re.findall(r'<a href="([^"]*)"[^>]*>([^<]*)</a>', block[1])
    ]


def test_the_lists_filter_and_show_inherit(admin_client, accounts):
    changelist = reverse("admin:ftpserver_core_ftpuseraccount_changelist")
    links = filter_links(html_of(admin_client, changelist), "require TLS")
    assert [text for _, text in links] == ["All", "Yes", "No", "Inherit from group"]
    inherit = dict((text, href) for href, text in links)["Inherit from group"]
    assert "require_tls__isnull=True" in inherit
    shown = admin_client.get(changelist + inherit).context["cl"].result_list
    assert [a.user.username for a in shown] == ["inherits"]
    # With facets, the count follows the label.
    links = filter_links(
        html_of(admin_client, changelist + "?_facets=True"), "require TLS"
    )
    assert links[-1][1] == "Inherit from group (1)"

    groups = reverse("admin:ftpserver_core_ftpusergroup_changelist")
    html = html_of(admin_client, groups)
    links = filter_links(html, "require TLS")
    assert [text for _, text in links] == ["All", "Yes", "No", "Server default"]
    rows = dict(
        re.findall(
            r'<th class="field-name"><a [^>]*>([^<]*)</a></th>.*?'
            r'<td class="field-tls_required">([^<]*)</td>',
            html,
            re.S,
        )
    )
    assert rows == {"plain": "Server default", "tls": "Yes"}


# One size convention: filesizeformat's --------------------------------------


def test_forms_show_sizes_in_the_lists_units(admin_client, accounts):
    account = accounts["inherits"]
    FTPUserAccount.objects.filter(pk=account.pk).update(
        quota_bytes=10 * 1024 * 1024, upload_rate=512 * 1024
    )
    html = html_of(
        admin_client,
        reverse("admin:ftpserver_core_ftpuseraccount_change", args=[account.pk]),
    )
    assert 'name="quota_bytes" value="10 MB"' in html
    assert 'name="upload_rate" value="512 KB"' in html
    # KiB and MiB only where the help says they are read too.
    assert not re.search(r"\d\s*(KiB|MiB|GiB)", html)
    # The list says the same: "0 bytes of 10.0 MB".
    changelist = html_of(
        admin_client, reverse("admin:ftpserver_core_ftpuseraccount_changelist")
    )
    assert "of 10.0\xa0MB" in changelist


# Import: every error of a row at once -----------------------------------------


STRICT = [
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    }
]
SHORT = (
    "The password of row 2 is too weak: This password is too short. It must "
    "contain at least 12 characters."
)


def test_a_bad_group_and_a_short_password_are_shown_at_once(
    admin_client,
    world,  # noqa: F811
    settings,
):
    settings.AUTH_PASSWORD_VALIDATORS = STRICT
    response = preview(
        admin_client, csv_bytes(*three(world, group="nope", password="Sh0rt!"))
    )
    assert row_errors(response) == {
        2: {
            "group": ["Unknown FTP group 'nope'; expected the name of an FTP group."],
            "password": [SHORT],
        }
    }
    page = response.content.decode()
    assert "Unknown FTP group" in page and "too short" in page
    assert "Sh0rt!" not in page


def test_a_bad_username_does_not_hide_the_other_errors(
    admin_client,
    world,  # noqa: F811
    settings,
):
    settings.AUTH_PASSWORD_VALIDATORS = STRICT
    bad = three(
        world,
        username="bad name!",
        email="not-an-email",
        group="nope",
        password="Sh0rt!",
    )
    errors = row_errors(preview(admin_client, csv_bytes(*bad)))[2]
    assert set(errors) == {"username", "email", "group", "password"}
    assert errors["password"] == [SHORT]
    # A username twice in the file: both rows still show their password's error.
    twice = three(world, username="alice", password="Sh0rt!")
    errors = row_errors(preview(admin_client, csv_bytes(*twice)))
    assert set(errors[2]) == {"username", "password"}
    assert set(errors[1]) == {"username"}  # its password is long enough
    assert User.objects.filter(username__in=["alice", "bad name!"]).count() == 0
