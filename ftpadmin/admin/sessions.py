"""The live sessions page: who is logged in, on which server, doing what.

Every FTP server process writes its sessions' details here each round of
its state thread (``ftpserver_core.state``, about once a second), so the
list is at most a round old; the page reloads itself every few seconds. A
session whose process stopped heartbeating for ``FTPSERVER_STATE_EXPIRY``
seconds is shown as lost; a live server removes it a minute later.

"Disconnect" asks the holding process to end the session (within a poll
interval; sooner on PostgreSQL, pushed by NOTIFY): its client gets 421.
Disconnecting needs the change permission on live sessions; the view
permission shows the list. Banning the address too needs the permission to
add bans.
"""

import datetime

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.db.models import (
    BooleanField,
    Case,
    DateTimeField,
    ExpressionWrapper,
    Q,
    Value,
    When,
)
from django.db.models.functions import Now
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from ftpserver_core import signals
from ftpserver_core.conf import settings as ftp_settings
from ftpserver_core.defender.addresses import address_key
from ftpserver_core.models import Ban, FTPUserGroup, LiveSession
from ftpserver_core.state import get_backend

#: How long a ban made by "Disconnect and ban the address" lasts (the ban's
#: page can extend it or make it permanent).
BAN_DURATION = datetime.timedelta(days=1)
#: Seconds between two reloads of the list.
REFRESH_SECONDS = 5


def lost_condition():
    """Rows whose process has not heartbeated for FTPSERVER_STATE_EXPIRY seconds.

    Judged by the database's clock, as the servers judge it: a web server
    whose clock differs agrees with them.
    """
    expiry = datetime.timedelta(seconds=ftp_settings.STATE_EXPIRY)
    deadline = ExpressionWrapper(Now() - Value(expiry), output_field=DateTimeField())
    return Q(process__heartbeat_at__lt=deadline)


class SessionStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [
            ("live", _("Live")),
            ("lost", _("Lost (its server stopped answering)")),
            ("kicked", _("Disconnect requested")),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "live":
                return queryset.exclude(lost_condition())
            case "lost":
                return queryset.filter(lost_condition())
            case "kicked":
                return queryset.exclude(kick_reason="")
        return queryset


class SessionGroupFilter(admin.SimpleListFilter):
    """The account's FTP group (sessions of deleted accounts have none)."""

    title = _("group")
    parameter_name = "group"

    def lookups(self, request, model_admin):
        groups = FTPUserGroup.objects.order_by("name").values_list("pk", "name")
        return [(str(pk), name) for pk, name in groups]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(account__group_id=self.value())
        return queryset


@admin.register(LiveSession)
class LiveSessionAdmin(admin.ModelAdmin):
    list_display = [
        "username",
        "remote_ip",
        "server",
        "tls",
        "connected_at",
        "last_command_shown",
        "transfer_shown",
        "status",
    ]
    list_display_links = ["username"]
    list_filter = [
        SessionStatusFilter,
        "process__node",
        "tls",
        SessionGroupFilter,
    ]
    list_select_related = ["process"]
    search_fields = ["username", "remote_ip"]
    search_help_text = _("Username or client IP address (part of it).")
    ordering = ["-connected_at"]
    actions = ["disconnect", "disconnect_and_ban"]
    list_per_page = 100
    change_list_template = "admin/ftpserver_core/livesession/change_list.html"
    fields = [
        "username",
        "account",
        "remote_ip",
        "address_key",
        "tls",
        "server",
        "connected_at",
        "last_command",
        "last_command_at",
        "transfer",
        "transfer_bytes",
        "status",
        "kick_reason",
        "kick_by",
    ]
    readonly_fields = fields

    class Media:
        css = {"all": ["ftpadmin/live_sessions.css"]}
        js = ["ftpadmin/live_sessions.js"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                lost=Case(
                    When(lost_condition(), then=Value(True)),
                    default=Value(False),
                    output_field=BooleanField(),
                )
            )
        )

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "refresh_seconds": REFRESH_SECONDS,
            "state_backend": ftp_settings.STATE_BACKEND,
            "expiry": ftp_settings.STATE_EXPIRY,
        }
        return super().changelist_view(request, extra_context)

    # --- permissions: a view of the servers' state, never edited here

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # The change permission is the permission to disconnect (the
        # actions); a session's own page is read-only for everyone.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        # A row is the server's: deleting it would not end the session.
        return False

    def has_ban_permission(self, request):
        """Disconnect (change live sessions) and add bans."""
        return super().has_change_permission(request) and request.user.has_perm(
            f"{Ban._meta.app_label}.add_{Ban._meta.model_name}"
        )

    # --- the list

    @admin.display(description=_("server"), ordering="process__node")
    def server(self, obj):
        return str(obj.process)

    @admin.display(description=_("last command"), ordering="last_command_at")
    def last_command_shown(self, obj):
        if not obj.last_command:
            return "-"
        if obj.last_command_at is None:
            return obj.last_command
        return format_html(
            '{} <span class="quiet" title="{}">({})</span>',
            obj.last_command,
            obj.last_command_at.isoformat(),
            gettext("%(time)s ago") % {"time": timesince(obj.last_command_at)},
        )

    @admin.display(description=_("current transfer"), ordering="transfer_bytes")
    def transfer_shown(self, obj):
        if not obj.transfer:
            return "-"
        return format_html(
            '{} <span class="ftp-transfer-bytes">{}</span>',
            obj.transfer,
            filesizeformat(obj.transfer_bytes),
        )

    @admin.display(description=_("status"), ordering="process__heartbeat_at")
    def status(self, obj):
        if getattr(obj, "lost", False):
            return format_html(
                '<span class="ftp-session-lost" title="{}">{}</span>',
                gettext(
                    "Its server has not answered for %(seconds)g s; the session "
                    "is removed once a live server notices."
                )
                % {"seconds": ftp_settings.STATE_EXPIRY},
                gettext("lost"),
            )
        if obj.kick_reason:
            return format_html(
                '<span class="ftp-session-kicked">{}</span>',
                gettext("disconnecting (%(reason)s, by %(by)s)")
                % {"reason": obj.kick_reason, "by": obj.kick_by or "-"},
            )
        return format_html('<span class="ftp-session-live">{}</span>', gettext("live"))

    # --- actions

    @admin.action(description=_("Disconnect selected sessions"), permissions=["change"])
    def disconnect(self, request, queryset):
        count = get_backend().request_kick(
            "admin",
            by=request.user.get_username(),
            pk__in=list(queryset.values_list("pk", flat=True)),
        )
        self._report_kicks(request, queryset, count)

    @admin.action(
        description=_("Disconnect selected sessions and ban their addresses (1 day)"),
        permissions=["ban"],
    )
    def disconnect_and_ban(self, request, queryset):
        username = request.user.get_username()
        now = timezone.now()
        # One ban per network: the address, or an IPv6 client's /64.
        networks = {}
        for ip in queryset.values_list("remote_ip", flat=True):
            networks.setdefault(address_key(ip), ip)
        networks.pop(None, None)
        already = set(
            Ban.objects.active(now)
            .filter(network__in=list(networks))
            .values_list("network", flat=True)
        )
        bans = []
        for network, ip in networks.items():
            if network in already:
                continue
            ban = Ban.objects.create(
                network=network,
                reason=Ban.Reason.MANUAL,
                created_by=username[:255],
                created_at=now,
                expires_at=now + BAN_DURATION,
                note=gettext("Banned from the live sessions (client %(ip)s).")
                % {"ip": ip},
            )
            bans.append(ban)
            # As the ban admin does: the 'ban' audit event.
            signals.dispatch(
                signals.ftp_address_banned,
                Ban,
                network=network,
                reason=Ban.Reason.MANUAL.value,
                remote_ip=None,
                expires_at=ban.expires_at,
                duration=int(BAN_DURATION.total_seconds()),
                offence=ban.offence,
                score=None,
                by=username,
            )
        if bans:
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=bans,
                action_flag=ADDITION,
                change_message=gettext("Banned from the live sessions."),
            )
            self.message_user(
                request,
                ngettext(
                    "Banned %(count)d address for 1 day: %(networks)s.",
                    "Banned %(count)d addresses for 1 day: %(networks)s.",
                    len(bans),
                )
                % {
                    "count": len(bans),
                    "networks": ", ".join(sorted(ban.network for ban in bans)),
                },
                messages.SUCCESS,
            )
        if already:
            self.message_user(
                request,
                ngettext(
                    "%(count)d address was banned already: %(networks)s.",
                    "%(count)d addresses were banned already: %(networks)s.",
                    len(already),
                )
                % {"count": len(already), "networks": ", ".join(sorted(already))},
                messages.INFO,
            )
        # Every session from the banned networks, not only those selected:
        # the ban refuses them all the same.
        count = get_backend().request_kick(
            "banned", by=username, address_key__in=list(networks)
        )
        self._report_kicks(request, queryset, count)

    def _report_kicks(self, request, queryset, count):
        if count:
            self.message_user(
                request,
                ngettext(
                    "Disconnecting %(count)d session; its client gets 421 within "
                    "a second or so.",
                    "Disconnecting %(count)d sessions; their clients get 421 "
                    "within a second or so.",
                    count,
                )
                % {"count": count},
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request,
                gettext(
                    "No session to disconnect: the selected ones ended or are "
                    "being disconnected already."
                ),
                messages.WARNING,
            )
