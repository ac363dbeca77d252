"""The defender in the admin: bans (list, filters, actions, manual bans, delete)
and the safelist/blocklist, their audit records and their permissions."""

import datetime
import ftplib
import html
import json
import re
import time

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from ftpadmin.resources import AuditEventResource
from ftpserver_core.models import AuditEvent, Ban, NetworkRule

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
BANS = reverse("admin:ftpserver_core_ban_changelist")
ADD = reverse("admin:ftpserver_core_ban_add")
RULES = reverse("admin:ftpserver_core_networkrule_changelist")
ADD_RULE = reverse("admin:ftpserver_core_networkrule_add")
AUDIT = reverse("admin:ftpserver_core_auditevent_changelist")


def change_url(obj):
    name = obj._meta.model_name
    return reverse(f"admin:ftpserver_core_{name}_change", args=[obj.pk])


def delete_url(obj):
    name = obj._meta.model_name
    return reverse(f"admin:ftpserver_core_{name}_delete", args=[obj.pk])


@pytest.fixture
def bans(db):
    """Five bans: active, expired, lifted, permanent, an IPv6 /64."""
    now = timezone.now()

    def ban(network, **fields):
        return Ban.objects.create(network=network, **fields)

    return {
        "active": ban(
            "203.0.113.7/32",
            reason="failed_logins",
            created_by="ftp1",
            created_at=now - HOUR,
            expires_at=now + HOUR,
            offence=2,
            score=16,
            note="password guessing from a VPS",
        ),
        "expired": ban(
            "198.51.100.9/32",
            reason="no_login",
            created_by="ftp2",
            created_at=now - 2 * DAY,
            expires_at=now - DAY,
            score=15,
        ),
        "lifted": ban(
            "192.0.2.0/24",
            reason="manual",
            created_by="boss",
            created_at=now - 3 * DAY,
            expires_at=now + DAY,
            lifted_at=now - DAY,
            lifted_by="boss",
            note="partner office, unblocked",
        ),
        "permanent": ban(
            "198.51.100.0/24",
            reason="manual",
            created_by="boss",
            created_at=now - 4 * DAY,
            expires_at=None,
            note="scanner network",
        ),
        "ipv6": ban(
            "2001:db8:0:1::/64",
            reason="abuse",
            created_by="ftp1",
            created_at=datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.UTC),
            expires_at=now + HOUR,
            score=18,
        ),
    }


def ids(response):
    assert response.status_code == 200, response.status_code
    return {obj.pk for obj in response.context["cl"].result_list}


def pks(bans, *names):
    return {bans[name].pk for name in names}


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def act(client, action, objs, path=BANS, **extra):
    return client.post(
        path,
        {
            "action": action,
            "_selected_action": [obj.pk for obj in objs],
            "index": "0",
            **extra,
        },
        follow=True,
    )


def table(response):
    """The changelist's rows: one {column: text} per row."""
    rows = []
    result_list = response.content.decode().split('id="result_list"', 1)[1]
    body = result_list.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = re.findall(
            r'<t[dh] class="field-([\w]+)[^"]*">(.*?)</t[dh]>', row, re.S
        )
        rows.append(
            {
                name: html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
                for name, text in cells
            }
        )
    return rows


def form_errors(response):
    """The change form's errors: {field or None: [messages]}."""
    assert response.status_code == 200, response.status_code
    form = response.context["adminform"].form
    return {
        None if key == "__all__" else key: list(value)
        for key, value in form.errors.items()
    }


def action_names(response):
    form = response.context["action_form"]
    if form is None:
        return []
    return [name for name, _ in form.fields["action"].choices if name]


# The list ---------------------------------------------------------------------


def test_the_list_shows_the_columns(admin_client, bans):
    response = admin_client.get(BANS)
    assert ids(response) == pks(bans, *bans)
    page = response.content.decode()
    for header in (
        "Address or network",
        "Reason",
        "Status",
        "Banned at",
        "Expires at",
        "Offence",
        "Score",
        "Banned by",
        "Lifted by",
    ):
        assert f">{header}<" in page or f">{header}</a>" in page, header
    rows = {row["network"]: row for row in table(response)}
    assert set(rows) == {ban.network for ban in bans.values()}
    assert rows["203.0.113.7/32"]["status"] == "active"
    assert rows["198.51.100.9/32"]["status"] == "expired"
    assert rows["192.0.2.0/24"]["status"] == "lifted"
    assert rows["198.51.100.0/24"]["expires"] == "never"
    assert rows["203.0.113.7/32"]["reason"] == "failed logins"
    assert rows["203.0.113.7/32"]["offence"] == "2"
    assert rows["203.0.113.7/32"]["score"] == "16"
    assert rows["203.0.113.7/32"]["created_by"] == "ftp1"
    assert rows["192.0.2.0/24"]["lifted_by"] == "boss"
    assert rows["203.0.113.7/32"]["lifted_by"] == "-"
    # The help text: lift, then delete.
    assert "Only bans that are over (lifted or expired) can be" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=active", ["active", "permanent", "ipv6"]),
        ("status=expired", ["expired"]),
        ("status=lifted", ["lifted"]),
        ("reason__exact=failed_logins", ["active"]),
        ("reason__exact=manual", ["lifted", "permanent"]),
        ("origin=manual", ["lifted", "permanent"]),
        ("origin=automatic", ["active", "expired", "ipv6"]),
        ("created_by=ftp1", ["active", "ipv6"]),
        ("created_at__year=2025", ["ipv6"]),
        ("q=203.0.113.7", ["active"]),
        ("q=198.51.100", ["expired", "permanent"]),
        ("q=2001:db8:0:1", ["ipv6"]),
        ("q=scanner", ["permanent"]),
        ("q=VPS", ["active"]),
        ("status=active&origin=manual", ["permanent"]),
    ],
)
def test_filters_and_search(admin_client, bans, query, expected):
    assert ids(admin_client.get(f"{BANS}?{query}")) == pks(bans, *expected)


def test_the_status_filter_counts_expiry_as_of_now(admin_client, bans):
    active = bans["active"]
    Ban.objects.filter(pk=active.pk).update(expires_at=timezone.now())
    assert active.pk not in ids(admin_client.get(f"{BANS}?status=active"))
    assert active.pk in ids(admin_client.get(f"{BANS}?status=expired"))


# The actions -----------------------------------------------------------------------


def test_lift_records_who_moves_changed_at_and_audits(admin_client, bans):
    chosen = [bans["active"], bans["ipv6"], bans["lifted"], bans["expired"]]
    before = {ban.pk: ban.changed_at for ban in chosen}
    response = act(admin_client, "lift_bans", chosen)
    assert messages_of(response) == [
        "Lifted 2 bans; the FTP servers accept the addresses again within a "
        "second or so.",
        "2 selected bans were not active (lifted or expired already).",
    ]
    for name in ("active", "ipv6"):
        ban = Ban.objects.get(pk=bans[name].pk)
        assert ban.lifted_at is not None
        assert ban.lifted_by == "admin"
        assert ban.changed_at > before[ban.pk]
        assert not ban.is_active()
    # What was over already is left as it was.
    lifted = Ban.objects.get(pk=bans["lifted"].pk)
    assert (lifted.lifted_at, lifted.lifted_by) == (
        bans["lifted"].lifted_at,
        "boss",
    )
    expired = Ban.objects.get(pk=bans["expired"].pk)
    assert expired.lifted_at is None and expired.changed_at == before[expired.pk]
    # One 'unban' record per ban lifted, made by the admin user.
    records = AuditEvent.objects.filter(event="unban").order_by("network")
    assert [(r.network, r.reason, r.username) for r in records] == [
        ("2001:db8:0:1::/64", "abuse", "admin"),
        ("203.0.113.7/32", "failed_logins", "admin"),
    ]
    assert all(r.remote_ip is None for r in records)
    assert LogEntry.objects.filter(object_id=str(bans["active"].pk)).exists()
    assert Ban.objects.active().count() == 1  # the permanent one


def test_lift_sends_the_unbanned_signal(admin_client, bans, recorder):
    act(admin_client, "lift_bans", [bans["active"]])
    (sent,) = recorder.of("ftp_address_unbanned")
    assert sent["network"] == "203.0.113.7/32"
    assert sent["reason"] == "failed_logins"
    assert sent["by"] == "admin"
    assert sent["ban"].pk == bans["active"].pk
    assert recorder.of("ftp_address_banned") == []


def test_extend_by_a_day(admin_client, bans):
    chosen = [bans["active"], bans["permanent"], bans["expired"], bans["lifted"]]
    response = act(admin_client, "extend_bans", chosen)
    assert messages_of(response) == [
        "Extended 1 ban by 1 day.",
        "3 selected bans were left as they were: permanent, lifted or expired.",
    ]
    active = Ban.objects.get(pk=bans["active"].pk)
    assert active.expires_at == bans["active"].expires_at + DAY
    assert active.changed_at > bans["active"].changed_at
    for name in ("permanent", "expired", "lifted"):
        ban = Ban.objects.get(pk=bans[name].pk)
        assert (ban.expires_at, ban.changed_at) == (
            bans[name].expires_at,
            bans[name].changed_at,
        ), name
    assert not AuditEvent.objects.exists()


def test_make_permanent(admin_client, bans):
    chosen = [bans["active"], bans["ipv6"], bans["expired"]]
    response = act(admin_client, "make_permanent", chosen)
    assert messages_of(response) == [
        "Made 2 bans permanent.",
        "1 selected ban was left as it was: permanent already, lifted or expired.",
    ]
    assert Ban.objects.get(pk=bans["active"].pk).expires_at is None
    assert Ban.objects.get(pk=bans["ipv6"].pk).expires_at is None
    assert Ban.objects.get(pk=bans["expired"].pk).expires_at is not None
    rows = table(admin_client.get(f"{BANS}?status=active"))
    assert [row["expires"] for row in rows] == ["never"] * 3


# Banning by hand ---------------------------------------------------------------------


def add_ban(client, **fields):
    data = {
        "network": "203.0.113.50",
        "duration": "86400",
        "expires_at_0": "",
        "expires_at_1": "",
        "note": "",
    }
    return client.post(ADD, data | fields)


def test_the_add_page_asks_network_duration_expiry_and_note(admin_client, db):
    page = admin_client.get(ADD).content.decode()
    for name in ("network", "duration", "expires_at_0", "expires_at_1", "note"):
        assert f'name="{name}"' in page, name
    for name in ("reason", "created_by", "lifted_at", "offence", "score"):
        assert f'name="{name}"' not in page, name
    for label in ("1 hour", "1 day", "1 week", "30 days", "permanent"):
        assert f">{label}</option>" in page, label
    assert '<option value="86400" selected>1 day</option>' in page


def test_a_manual_ban_is_normalised_timed_and_audited(admin_client, db, recorder):
    before = timezone.now()
    response = add_ban(admin_client, network=" 203.0.113.7 ", note="by hand")
    assert response.status_code == 302, form_errors(response)
    after = timezone.now()
    ban = Ban.objects.get()
    assert ban.network == "203.0.113.7/32"
    assert ban.reason == "manual"
    assert ban.created_by == "admin"
    assert ban.note == "by hand"
    assert (ban.offence, ban.score, ban.lifted_at) == (1, None, None)
    assert before + DAY <= ban.expires_at <= after + DAY
    assert ban.is_active()
    record = AuditEvent.objects.get()
    assert (record.event, record.network, record.reason, record.username) == (
        "ban",
        "203.0.113.7/32",
        "manual",
        "admin",
    )
    assert record.remote_ip is None
    assert record.duration == 86400
    (sent,) = recorder.of("ftp_address_banned")
    assert sent == {
        "signal": sent["signal"],
        "network": "203.0.113.7/32",
        "reason": "manual",
        "remote_ip": None,
        "expires_at": ban.expires_at,
        "duration": 86400,
        "offence": 1,
        "score": None,
        "by": "admin",
    }


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("3600", 3600), ("604800", 7 * 86400), ("2592000", 30 * 86400)],
)
def test_each_duration(admin_client, db, duration, seconds):
    before = timezone.now()
    response = add_ban(admin_client, duration=duration)
    assert response.status_code == 302, form_errors(response)
    ban = Ban.objects.get()
    delta = (ban.expires_at - before).total_seconds()
    assert seconds <= delta < seconds + 5
    assert AuditEvent.objects.get().duration == seconds


def test_a_permanent_manual_ban(admin_client, db):
    response = add_ban(admin_client, network="2001:db8::/48", duration="permanent")
    assert response.status_code == 302, form_errors(response)
    ban = Ban.objects.get()
    assert (ban.network, ban.expires_at) == ("2001:db8::/48", None)
    assert AuditEvent.objects.get().duration is None
    assert [row["expires"] for row in table(admin_client.get(BANS))] == ["never"]


def test_an_explicit_expiry_wins_over_the_duration(admin_client, db):
    response = add_ban(
        admin_client, duration="3600", expires_at_0="2099-01-02", expires_at_1="03:04"
    )
    assert response.status_code == 302, form_errors(response)
    ban = Ban.objects.get()
    assert ban.expires_at == datetime.datetime(2099, 1, 2, 3, 4, tzinfo=datetime.UTC)
    duration = AuditEvent.objects.get().duration
    expected = (ban.expires_at - timezone.now()).total_seconds()
    assert abs(duration - expected) < 5


def test_a_past_expiry_is_refused(admin_client, db):
    response = add_ban(admin_client, expires_at_0="2020-01-01", expires_at_1="00:00")
    errors = form_errors(response)
    assert list(errors) == ["expires_at"]
    assert "the ban would never apply" in errors["expires_at"][0]
    assert not Ban.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_bad_network_is_refused_once_and_quoted(admin_client, db, recorder):
    response = add_ban(admin_client, network="203.0.113.300")
    errors = form_errors(response)
    assert errors == {
        "network": [
            "'203.0.113.300' is not an IP address or network; expected e.g. "
            "203.0.113.7, 198.51.100.0/24 or 2001:db8::/64."
        ]
    }
    page = html.unescape(response.content.decode())
    assert page.count("'203.0.113.300' is not an IP address") == 1
    assert not Ban.objects.exists()
    assert not AuditEvent.objects.exists()
    assert recorder.of("ftp_address_banned") == []


def test_host_bits_widen_the_network_with_a_warning(admin_client, db):
    response = add_ban(admin_client, network="203.0.113.7/24")
    assert response.status_code == 302, form_errors(response)
    assert Ban.objects.get().network == "203.0.113.0/24"
    assert messages_of(admin_client.get(response["Location"]))[:-1] == [
        "203.0.113.7/24 has host bits set: saved as the whole network 203.0.113.0/24."
    ]
    response = add_rule(admin_client, "2001:db8::1/64", follow=True)
    assert NetworkRule.objects.get().network == "2001:db8::/64"
    assert messages_of(response)[:-1] == [
        "2001:db8::1/64 has host bits set: saved as the whole network 2001:db8::/64."
    ]
    # A plain address or a proper network says nothing more.
    response = add_ban(admin_client, network="2001:db8::1")
    assert Ban.objects.filter(network="2001:db8::1/128").exists()
    assert len(messages_of(admin_client.get(response["Location"]))) == 1


def test_a_network_already_banned_is_refused(admin_client, bans):
    # 203.0.113.7 is the active ban's 203.0.113.7/32.
    response = add_ban(admin_client, network="203.0.113.7")
    errors = form_errors(response)
    assert list(errors) == ["network"]
    assert errors["network"][0].startswith("203.0.113.7/32 is already banned (until ")
    # Over bans do not count: the expired and the lifted network may be banned.
    for network in ("198.51.100.9", "192.0.2.0/24"):
        assert add_ban(admin_client, network=network).status_code == 302
    assert Ban.objects.active().count() == 5


def test_banning_the_safelist_or_ones_own_address_warns(admin_client, db):
    # The test client comes from 127.0.0.1, which the test settings safelist.
    NetworkRule.objects.create(network="10.1.0.0/16", kind="safelist")
    response = admin_client.post(
        ADD,
        {"network": "127.0.0.0/8", "duration": "3600", "note": ""},
        follow=True,
    )
    assert messages_of(response)[:-1] == [
        "127.0.0.0/8 overlaps the safelist entry 127.0.0.1/32: the ban refuses "
        "it all the same (the safelist only keeps addresses from being banned "
        "automatically).",
        "Your own address 127.0.0.1 is in 127.0.0.0/8: this admin still works "
        "(the defender guards FTP, not HTTP), but the ban refuses your FTP "
        "connections from it.",
    ]
    response = add_ban(admin_client, network="10.1.2.3")
    assert response.status_code == 302
    response = admin_client.get(response["Location"])
    assert [m for m in messages_of(response) if "safelist entry" in m] == [
        "10.1.2.3/32 overlaps the safelist entry 10.1.0.0/16: the ban refuses it "
        "all the same (the safelist only keeps addresses from being banned "
        "automatically)."
    ]
    assert Ban.objects.count() == 2


# Changing and deleting ----------------------------------------------------------------


def test_only_the_note_and_the_expiry_can_be_changed(admin_client, bans):
    ban = bans["active"]
    page = admin_client.get(change_url(ban)).content.decode()
    assert 'name="note"' in page
    assert 'name="expires_at_0"' in page
    for name in ("network", "reason", "created_by", "offence", "score", "lifted_at"):
        assert f'name="{name}"' not in page, name
    assert "203.0.113.7/32" in page  # shown, read only
    response = admin_client.post(
        change_url(ban),
        {
            "network": "0.0.0.0/0",
            "reason": "abuse",
            "created_by": "mallory",
            "note": "still guessing",
            "expires_at_0": "2099-01-01",
            "expires_at_1": "00:00",
        },
    )
    assert response.status_code == 302
    saved = Ban.objects.get(pk=ban.pk)
    assert (saved.network, saved.reason, saved.created_by) == (
        "203.0.113.7/32",
        "failed_logins",
        "ftp1",
    )
    assert saved.note == "still guessing"
    assert saved.expires_at == datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC)
    assert saved.changed_at > ban.changed_at
    assert not AuditEvent.objects.exists()  # an edit is no new ban


def test_a_lifted_ban_keeps_its_expiry(admin_client, bans):
    page = admin_client.get(change_url(bans["lifted"])).content.decode()
    assert 'name="note"' in page
    assert 'name="expires_at_0"' not in page


def test_an_active_ban_cannot_be_deleted(admin_client, bans):
    for name in ("active", "permanent"):
        ban = bans[name]
        page = admin_client.get(change_url(ban)).content.decode()
        assert delete_url(ban) not in page
        assert "lift an active ban first" in page
        assert admin_client.get(delete_url(ban)).status_code == 403
        response = admin_client.post(delete_url(ban), {"post": "yes"})
        assert response.status_code == 403
        assert Ban.objects.filter(pk=ban.pk).exists()


def test_a_ban_that_is_over_can_be_deleted(admin_client, bans):
    for name in ("expired", "lifted"):
        ban = bans[name]
        assert delete_url(ban) in admin_client.get(change_url(ban)).content.decode()
        response = admin_client.post(delete_url(ban), {"post": "yes"})
        assert response.status_code == 302
        assert not Ban.objects.filter(pk=ban.pk).exists()


def test_delete_selected_refuses_a_selection_with_active_bans(admin_client, bans):
    chosen = [bans["active"], bans["expired"], bans["lifted"]]
    response = act(admin_client, "delete_selected", chosen)
    page = html.unescape(response.content.decode())
    assert "Active bans cannot be deleted: lift them first" in page
    assert "203.0.113.7/32 (failed logins)" in page
    assert "Yes, I’m sure" not in page
    response = act(admin_client, "delete_selected", chosen, post="yes")
    assert Ban.objects.count() == len(bans)
    # Without the active one, the bans that are over go.
    response = act(admin_client, "delete_selected", chosen[1:], post="yes")
    assert messages_of(response) == ["Successfully deleted 2 bans."]
    assert set(Ban.objects.values_list("pk", flat=True)) == pks(
        bans, "active", "permanent", "ipv6"
    )


# The FTP servers follow ----------------------------------------------------------------


def ftp_greeting(server):
    client = ftplib.FTP(timeout=5)
    try:
        return client.connect(server.host, server.port)
    except ftplib.error_temp as refused:
        return str(refused)
    finally:
        client.close()


def wait_for_greeting(server, prefix, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        greeting = ftp_greeting(server)
        if greeting.startswith(prefix) or time.monotonic() > deadline:
            return greeting
        time.sleep(0.2)


def test_a_ban_made_and_lifted_here_is_enforced_by_the_server(admin_client, ftp_server):
    server = ftp_server()
    assert ftp_greeting(server).startswith("220")
    # The suite's FTP clients come from 127.0.0.1 (safelisted: never banned
    # automatically, but a manual ban refuses it all the same).
    assert add_ban(admin_client, network="127.0.0.1").status_code == 302
    assert wait_for_greeting(server, "421").startswith("421 Your address is banned")
    act(admin_client, "lift_bans", Ban.objects.all())
    assert wait_for_greeting(server, "220").startswith("220")


# The safelist and the blocklist ------------------------------------------------------------


def add_rule(client, network, kind="blocklist", note="", follow=False):
    return client.post(
        ADD_RULE, {"network": network, "kind": kind, "note": note}, follow=follow
    )


def test_rules_are_listed_filtered_and_searched(admin_client, db):
    safe = NetworkRule.objects.create(
        network="10.0.0.0/8", kind="safelist", note="office"
    )
    block = NetworkRule.objects.create(
        network="203.0.113.0/24", kind="blocklist", note="known scanners"
    )
    response = admin_client.get(RULES)
    assert ids(response) == {safe.pk, block.pk}
    page = response.content.decode()
    for header in ("Address or network", "List", "Note", "Created at"):
        assert f">{header}<" in page or f">{header}</a>" in page, header
    assert ids(admin_client.get(f"{RULES}?kind__exact=blocklist")) == {block.pk}
    assert ids(admin_client.get(f"{RULES}?kind__exact=safelist")) == {safe.pk}
    assert ids(admin_client.get(f"{RULES}?q=scanners")) == {block.pk}
    assert ids(admin_client.get(f"{RULES}?q=10.0")) == {safe.pk}


def test_a_rule_is_normalised(admin_client, db):
    response = add_rule(admin_client, "203.0.113.9", note="one host")
    assert response.status_code == 302, form_errors(response)
    rule = NetworkRule.objects.get()
    assert (rule.network, rule.kind, rule.note) == (
        "203.0.113.9/32",
        "blocklist",
        "one host",
    )
    # The same entry, written differently, is a duplicate.
    errors = form_errors(add_rule(admin_client, "203.0.113.9/32"))
    assert list(errors) == [None]
    assert "already exists" in errors[None][0]
    # On the other list it is a (warned) conflict, not a duplicate.
    assert add_rule(admin_client, "203.0.113.9", kind="safelist").status_code == 302


@pytest.mark.parametrize("value", ["not-a-network", "10.0.0.0/33", "::g"])
def test_a_bad_rule_network_is_a_form_error_quoting_it(admin_client, db, value):
    response = add_rule(admin_client, value)
    errors = form_errors(response)
    assert errors == {
        "network": [
            f"{value!r} is not an IP address or network; expected e.g. "
            "203.0.113.7, 198.51.100.0/24 or 2001:db8::/64."
        ]
    }
    assert not NetworkRule.objects.exists()


def test_blocklisting_the_safelist_or_ones_own_address_warns(admin_client, db):
    NetworkRule.objects.create(network="10.1.0.0/16", kind="safelist")
    response = add_rule(admin_client, "10.0.0.0/8", follow=True)
    assert messages_of(response)[:-1] == [
        "The blocklisted 10.0.0.0/8 overlaps the safelist entry 10.1.0.0/16: the "
        "blocklist wins, those addresses are refused."
    ]
    # 127.0.0.1: the test client's address, safelisted by the test settings.
    response = add_rule(admin_client, "127.0.0.0/24", follow=True)
    assert messages_of(response)[:-1] == [
        "The blocklisted 127.0.0.0/24 overlaps the safelist entry 127.0.0.1/32: "
        "the blocklist wins, those addresses are refused.",
        "Your own address 127.0.0.1 is in 127.0.0.0/24: this admin still works "
        "(the defender guards FTP, not HTTP), but the blocklist refuses your FTP "
        "connections from it.",
    ]
    # Elsewhere: nothing to say.
    response = add_rule(admin_client, "203.0.113.0/24", follow=True)
    assert len(messages_of(response)) == 1
    assert NetworkRule.objects.filter(kind="blocklist").count() == 3


def test_safelisting_a_blocklisted_or_banned_network_warns(admin_client, bans):
    NetworkRule.objects.create(network="203.0.113.0/28", kind="blocklist")
    response = add_rule(admin_client, "203.0.113.0/24", kind="safelist", follow=True)
    assert messages_of(response)[:-1] == [
        "The safelisted 203.0.113.0/24 overlaps the blocklist entry "
        "203.0.113.0/28: the blocklist wins, those addresses are refused.",
        "1 active ban overlaps 203.0.113.0/24 (203.0.113.7/32): the safelist "
        "prevents new bans, lift this one in Bans.",
    ]


def test_a_rule_change_is_checked_the_same_way(admin_client, db):
    rule = NetworkRule.objects.create(network="10.0.0.0/8", kind="safelist")
    response = admin_client.post(
        change_url(rule), {"network": "bogus", "kind": "safelist", "note": ""}
    )
    assert list(form_errors(response)) == ["network"]
    response = admin_client.post(
        change_url(rule),
        {"network": "127.0.0.1", "kind": "blocklist", "note": ""},
        follow=True,
    )
    assert any("Your own address 127.0.0.1" in m for m in messages_of(response))
    rule.refresh_from_db()
    assert (rule.network, rule.kind) == ("127.0.0.1/32", "blocklist")


# The audit trail shows ban records ------------------------------------------------------


def test_ban_records_show_their_network_in_the_audit_trail(admin_client, bans):
    add_ban(admin_client, network="203.0.113.99")
    act(admin_client, "lift_bans", [bans["active"]])
    AuditEvent.objects.create(
        time=timezone.now(),
        event="refused",
        success=False,
        reason="banned",
        remote_ip="203.0.113.7",
    )
    page = admin_client.get(AUDIT).content.decode()
    assert '<td class="field-result">203.0.113.99/32: manual</td>' in page
    assert '<td class="field-result">203.0.113.7/32: failed_logins</td>' in page
    assert '<td class="field-result">banned</td>' in page
    for label in ("ban", "ban lifted", "connection refused"):
        assert f'<td class="field-event">{label}</td>' in page, label
    ban = AuditEvent.objects.get(event="ban")
    detail = admin_client.get(change_url(ban)).content.decode()
    assert "Network:" in detail and "203.0.113.99/32" in detail


@pytest.mark.parametrize(
    ("term", "events"),
    [
        ("203.0.113.7", ["refused"]),  # a whole address: the client's records
        ("203.0.113.7/32", ["unban"]),  # a network: its ban records
        ("203.0.113.99/32", ["ban"]),
        ("2001:db8:0:1::5", ["ban6"]),  # an automatic ban keeps the client IP
        ("2001:db8:0:1::/64", ["ban6"]),
        ("2001:db8:0:1:0::/64", ["ban6"]),  # normalised
        ("/in", ["upload"]),  # a path, as before
    ],
)
def test_the_audit_search_finds_bans_by_address_and_network(
    admin_client, db, term, events
):
    now = timezone.now()
    records = {
        "ban": AuditEvent(time=now, event="ban", network="203.0.113.99/32"),
        "unban": AuditEvent(time=now, event="unban", network="203.0.113.7/32"),
        "ban6": AuditEvent(
            time=now,
            event="ban",
            network="2001:db8:0:1::/64",
            remote_ip="2001:db8:0:1::5",
        ),
        "refused": AuditEvent(
            time=now, event="refused", remote_ip="203.0.113.7", success=False
        ),
        "upload": AuditEvent(time=now, event="upload", ftp_path="/in/x"),
    }
    AuditEvent.objects.bulk_create(records.values())
    response = admin_client.get(AUDIT, {"q": term})
    found = {obj.pk for obj in response.context["cl"].result_list}
    assert found == {records[name].pk for name in events}


def test_the_audit_export_has_the_network(admin_client, db):
    add_ban(admin_client, network="203.0.113.99")
    fields = AuditEventResource().get_export_order()
    assert fields[-1] == "network"
    data = {"format": "3", "resource": "0"}  # JSON: CSV, CSV (Excel), XLSX, JSON
    data |= {f"auditeventresource_{name}": "on" for name in fields}
    response = admin_client.post(
        reverse("admin:ftpserver_core_auditevent_export"), data
    )
    assert response.status_code == 200
    (record,) = json.loads(response.content)
    assert (record["event"], record["network"]) == ("ban", "203.0.113.99/32")


# Permissions ------------------------------------------------------------------------------


@pytest.fixture
def staff(client, db):
    """A staff user holding exactly the given ftpserver_core permissions."""

    def login(*codenames):
        user = get_user_model().objects.create_user(
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


def test_staff_without_the_permissions_is_refused(staff, bans):
    client = staff()
    assert client.get(BANS).status_code == 403
    assert client.get(RULES).status_code == 403
    assert client.get(change_url(bans["active"])).status_code == 403
    index = client.get(reverse("admin:index")).content.decode()
    assert BANS not in index and RULES not in index


def test_view_only_sees_bans_but_no_action(staff, bans):
    client = staff("view_ban", "view_networkrule")
    response = client.get(BANS)
    assert ids(response) == pks(bans, *bans)
    assert action_names(response) == []
    page = response.content.decode()
    assert 'name="action"' not in page
    assert ADD not in page
    form = client.get(change_url(bans["expired"])).content.decode()
    assert 'name="_save"' not in form
    assert 'name="note"' not in form
    assert delete_url(bans["expired"]) not in form
    assert client.get(ADD).status_code == 403
    assert (
        client.post(ADD, {"network": "192.0.2.1", "duration": "3600"}).status_code
        == 403
    )
    assert client.get(delete_url(bans["expired"])).status_code == 403
    response = act(client, "lift_bans", [bans["active"]])
    assert Ban.objects.get(pk=bans["active"].pk).lifted_at is None
    assert not AuditEvent.objects.exists()
    assert client.get(RULES).status_code == 200
    assert client.get(ADD_RULE).status_code == 403


def test_change_permission_gives_the_actions_but_not_delete(staff, bans):
    client = staff("view_ban", "change_ban")
    response = client.get(BANS)
    assert action_names(response) == ["lift_bans", "extend_bans", "make_permanent"]
    assert client.get(ADD).status_code == 403
    act(client, "lift_bans", [bans["active"]])
    ban = Ban.objects.get(pk=bans["active"].pk)
    assert ban.lifted_by == "delegate"
    assert AuditEvent.objects.get(event="unban").username == "delegate"
    # Lifted, but deleting needs its own permission.
    assert client.get(delete_url(ban)).status_code == 403


def test_add_and_delete_permissions(staff, bans):
    client = staff("view_ban", "add_ban", "delete_ban")
    response = client.get(BANS)
    assert action_names(response) == ["delete_selected"]
    response = add_ban(client, network="192.0.2.77")
    assert response.status_code == 302
    assert Ban.objects.get(network="192.0.2.77/32").created_by == "delegate"
    assert client.post(delete_url(bans["active"]), {"post": "yes"}).status_code == 403
    response = client.post(delete_url(bans["expired"]), {"post": "yes"})
    assert response.status_code == 302
    assert not Ban.objects.filter(pk=bans["expired"].pk).exists()
