"""Admin pages of the defender: bans, and the safelist and blocklist.

Every FTP server process polls the Ban and NetworkRule tables about once a
second (``ftpserver_core.defender.store``): a ban or a blocklist entry saved
here refuses the address with 421 and closes its open sessions within a
second or so; a lifted ban lets it in again as soon. The servers find what
changed by ``Ban.changed_at``, so a ban ends by being lifted (a save), never
by being deleted: a deleted row is only noticed at a server's next full
reload. Only bans that are over may be deleted.

This admin is HTTP: nothing here refuses or lets in a web client.
"""

import datetime
import ipaddress

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.utils import timezone
from django.utils.formats import localize
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from ftpserver_core import signals
from ftpserver_core.conf import settings as ftp_settings
from ftpserver_core.defender.addresses import parse
from ftpserver_core.models import Ban, NetworkRule, normalize_network

#: The durations offered when banning by hand, in seconds ("permanent": none).
DURATIONS = [
    ("3600", _("1 hour")),
    ("86400", _("1 day")),
    ("604800", _("1 week")),
    ("2592000", _("30 days")),
    ("permanent", _("permanent")),
]
EXTENSION = datetime.timedelta(days=1)

DELETE_HELP = _(
    "Only bans that are over (lifted or expired) can be deleted: lift an "
    "active ban first. The FTP servers notice a lifted ban within a second; a "
    "deleted one only at their next full reload."
)


def when(value):
    """A datetime as the admin shows it, or "never"."""
    if value is None:
        return gettext("never")
    return localize(timezone.localtime(value))


def _network(value):
    return ipaddress.ip_network(value, strict=False)


def overlapping(network, others):
    """Return the entries of ``others`` (CIDR strings) that overlap ``network``."""
    mine = _network(network)
    found = []
    for other in others:
        try:
            theirs = _network(other)
        except ValueError:
            continue  # a bad FTPSERVER_DEFENDER_SAFELIST entry is for the checks
        if theirs.version == mine.version and theirs.overlaps(mine):
            found.append(str(theirs))
    return found


def normalize_field(form):
    """Clean ``form``'s network field to its normalised network.

    Normalised in the form rather than only by the model's clean(): the
    checks of the form compare normalised networks, and a bad value is
    reported once (the model reports it from its validator and again from
    clean()). A network written with host bits (203.0.113.7/24) is widened
    to its network (203.0.113.0/24): ``form.widened_from`` keeps what was
    typed, for a warning.
    """
    text = str(form.cleaned_data["network"]).strip()
    network = normalize_network(text)
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        form.widened_from = text
    return network


def warn_widened(request, form, network):
    typed = getattr(form, "widened_from", None)
    if typed:
        messages.warning(
            request,
            gettext(
                "%(typed)s has host bits set: saved as the whole network %(network)s."
            )
            % {"typed": typed, "network": network},
        )


def safelisted_networks():
    """The safelist: FTPSERVER_DEFENDER_SAFELIST and the admin's entries."""
    configured = list(ftp_settings.DEFENDER_SAFELIST or ())
    rules = NetworkRule.objects.filter(kind=NetworkRule.Kind.SAFELIST)
    return configured + list(rules.values_list("network", flat=True))


def warn_own_address(request, network, what):
    """Warn when the admin's own address (as this request came) is in ``network``.

    Only a warning: the admin is HTTP, which the defender never refuses; the
    user's FTP clients from the same address would be. Behind a reverse
    proxy REMOTE_ADDR is the proxy's address.
    """
    address = parse(request.META.get("REMOTE_ADDR", ""))
    if address is None:
        return
    net = _network(network)
    if address.version == net.version and address in net:
        messages.warning(
            request,
            gettext(
                "Your own address %(address)s is in %(network)s: this admin "
                "still works (the defender guards FTP, not HTTP), but %(what)s "
                "your FTP connections from it."
            )
            % {"address": address, "network": network, "what": what},
        )


# --- bans ---------------------------------------------------------------------


class BanStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [
            ("active", _("Active")),
            ("expired", _("Expired")),
            ("lifted", _("Lifted")),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        match self.value():
            case "active":
                return queryset.active(now)
            case "expired":
                return queryset.filter(lifted_at__isnull=True, expires_at__lte=now)
            case "lifted":
                return queryset.filter(lifted_at__isnull=False)
        return queryset


class BanOriginFilter(admin.SimpleListFilter):
    """Automatic bans (a server decided) or manual ones (an admin user did)."""

    title = _("origin")
    parameter_name = "origin"

    def lookups(self, request, model_admin):
        return [
            ("automatic", _("Automatic (by a server)")),
            ("manual", _("Manual (in the admin)")),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "automatic":
                return queryset.exclude(reason=Ban.Reason.MANUAL)
            case "manual":
                return queryset.filter(reason=Ban.Reason.MANUAL)
        return queryset


class BanAddForm(forms.ModelForm):
    """Ban by hand: a network, for a duration or until a time, with a note."""

    duration = forms.ChoiceField(
        label=_("duration"),
        choices=DURATIONS,
        initial="86400",
        help_text=_("From now. Ignored when “expires at” is filled in."),
    )

    class Meta:
        model = Ban
        fields = ["network", "duration", "expires_at", "note"]
        help_texts = {
            "expires_at": _(
                "Optional: the exact end of the ban, instead of the duration."
            ),
        }

    #: Seconds the ban lasts from now (None: permanent), set by clean().
    duration_seconds = None

    def clean_network(self):
        return normalize_field(self)

    def clean(self):
        cleaned = super().clean()
        now = timezone.now()
        if "expires_at" not in self.errors and "duration" not in self.errors:
            expires_at = cleaned.get("expires_at")
            if expires_at is not None:
                if expires_at <= now:
                    self.add_error(
                        "expires_at",
                        forms.ValidationError(
                            _("%(time)s is past: the ban would never apply."),
                            code="expires_in_past",
                            params={"time": when(expires_at)},
                        ),
                    )
                else:
                    self.duration_seconds = round((expires_at - now).total_seconds())
            elif cleaned.get("duration") == "permanent":
                self.duration_seconds = None
            elif cleaned.get("duration"):
                self.duration_seconds = int(cleaned["duration"])
                cleaned["expires_at"] = now + datetime.timedelta(
                    seconds=self.duration_seconds
                )
        network = cleaned.get("network")
        if network:
            # One active ban per network: the servers keep one ban per
            # network in memory, so a second row would race with the first.
            existing = Ban.objects.active(now).filter(network=network).first()
            if existing is not None:
                self.add_error(
                    "network",
                    forms.ValidationError(
                        _(
                            "%(network)s is already banned (until %(until)s); "
                            "extend that ban or make it permanent instead."
                        ),
                        code="already_banned",
                        params={"network": network, "until": when(existing.expires_at)},
                    ),
                )
        return cleaned


@admin.register(Ban)
class BanAdmin(admin.ModelAdmin):
    list_display = [
        "network",
        "reason",
        "status",
        "created_at",
        "expires",
        "offence",
        "score",
        "created_by",
        "lifted_by",
    ]
    list_filter = [BanStatusFilter, "reason", BanOriginFilter, "created_by"]
    search_fields = ["network", "note"]
    search_help_text = _("Address or network (part of it), or a word of the note.")
    date_hierarchy = "created_at"
    actions = ["lift_bans", "extend_bans", "make_permanent"]
    add_form = BanAddForm
    add_fieldsets = [
        (
            None,
            {
                "description": _(
                    "The FTP servers refuse the network within a second or so "
                    "and close its open sessions. A single address is banned "
                    "as its /32 (IPv4) or /128 (IPv6); an IPv6 client controls "
                    "its whole /64, which automatic bans cover."
                ),
                "fields": ["network", "duration", "expires_at", "note"],
            },
        ),
    ]
    fieldsets = [
        (
            None,
            {
                "description": DELETE_HELP,
                "fields": ["network", "reason", "status", "note"],
            },
        ),
        (
            _("Duration"),
            {"fields": ["created_at", "expires_at", "lifted_at", "lifted_by"]},
        ),
        (
            _("Origin"),
            {"fields": ["created_by", "offence", "score", "changed_at"]},
        ),
    ]
    change_list_template = "admin/ftpserver_core/ban/change_list.html"

    # --- the list

    @admin.display(description=_("status"))
    def status(self, obj):
        if obj.lifted_at is not None:
            return gettext("lifted")
        if obj.is_active():
            return gettext("active")
        return gettext("expired")

    @admin.display(
        description=_("expires at"), ordering="expires_at", empty_value=_("never")
    )
    def expires(self, obj):
        return obj.expires_at

    # --- the add and change pages

    def get_fieldsets(self, request, obj=None):
        # As Django's UserAdmin: the add page has its own fields.
        if obj is None:
            return self.add_fieldsets
        return super().get_fieldsets(request, obj)

    def get_form(self, request, obj=None, **kwargs):
        # The add page picks a duration; a saved ban is edited by the
        # fieldsets above less the read-only fields (note and expiry only).
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        # A saved ban keeps where it applies and where it came from: only its
        # note and, until it is lifted, its expiry change. A lifted ban is
        # over; banning again is a new ban.
        if obj is None:
            return []
        editable = {"note"} if obj.lifted_at is not None else {"note", "expires_at"}
        fields = [f for name, opts in self.fieldsets for f in opts["fields"]]
        return [f for f in fields if f not in editable]

    def save_model(self, request, obj, form, change):
        # A ban made here is manual and its maker is the admin user; on add
        # the ban signal records the 'ban' audit event (receivers._banned).
        username = request.user.get_username()
        if not change:
            obj.reason = Ban.Reason.MANUAL
            obj.created_by = username
            obj.created_at = timezone.now()
        super().save_model(request, obj, form, change)
        if change:
            return
        signals.dispatch(
            signals.ftp_address_banned,
            Ban,
            network=obj.network,
            reason=Ban.Reason.MANUAL.value,
            remote_ip=None,
            expires_at=obj.expires_at,
            duration=form.duration_seconds,
            offence=obj.offence,
            score=None,
            by=username,
        )
        warn_widened(request, form, obj.network)
        for entry in overlapping(obj.network, safelisted_networks()):
            messages.warning(
                request,
                gettext(
                    "%(network)s overlaps the safelist entry %(entry)s: the "
                    "ban refuses it all the same (the safelist only keeps "
                    "addresses from being banned automatically)."
                )
                % {"network": obj.network, "entry": entry},
            )
        warn_own_address(request, obj.network, gettext("the ban refuses"))

    # --- deleting

    def has_delete_permission(self, request, obj=None):
        # An active ban is lifted, not deleted: the servers see a lift at
        # their next poll (changed_at moves) but a deleted row only at their
        # next full reload. The change page then offers no Delete link.
        if obj is not None and obj.is_active():
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        # "Delete selected bans" needs the model's delete permission only.
        # Django's collector then asks has_delete_permission of each ban and,
        # for an active one, says the user lacks the permission to delete
        # bans; they are reported as protected instead, which makes the
        # confirmation page refuse with the right reason
        # (ban/delete_selected_confirmation.html) and the POST delete nothing.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(
            objs, request
        )
        now = timezone.now()
        active = [str(ban) for ban in objs if ban.is_active(now)]
        if active:
            perms_needed = perms_needed - {self.opts.verbose_name}
            protected = [*protected, *active]
        return deleted, counts, perms_needed, protected

    # --- actions

    def _log_bulk_change(self, request, bans, message):
        if bans:
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=bans,
                action_flag=CHANGE,
                change_message=message,
            )

    def _report(self, request, done, selected, message, skipped_message):
        if done:
            self.message_user(request, message % {"count": len(done)}, messages.SUCCESS)
        skipped = selected - len(done)
        if skipped:
            self.message_user(
                request, skipped_message % {"count": skipped}, messages.WARNING
            )

    @admin.action(description=_("Lift selected bans"), permissions=["change"])
    def lift_bans(self, request, queryset):
        now = timezone.now()
        username = request.user.get_username()
        lifted = []
        for ban in queryset.active(now):
            ban.lifted_at = now
            ban.lifted_by = username[:150]
            # changed_at is what the servers poll for.
            ban.save(update_fields=["lifted_at", "lifted_by", "changed_at"])
            lifted.append(ban)
            signals.dispatch(
                signals.ftp_address_unbanned,
                Ban,
                network=ban.network,
                reason=ban.reason,
                by=username,
                ban=ban,
            )
        self._log_bulk_change(request, lifted, gettext("Lifted."))
        self._report(
            request,
            lifted,
            queryset.count(),
            ngettext(
                "Lifted %(count)d ban; the FTP servers accept the address again "
                "within a second or so.",
                "Lifted %(count)d bans; the FTP servers accept the addresses "
                "again within a second or so.",
                len(lifted),
            ),
            ngettext(
                "%(count)d selected ban was not active (lifted or expired already).",
                "%(count)d selected bans were not active (lifted or expired already).",
                queryset.count() - len(lifted),
            ),
        )

    def _set_expiry(self, request, queryset, new_expiry):
        """Give each active, expiring ban of ``queryset`` ``new_expiry(ban)``."""
        now = timezone.now()
        changed = []
        for ban in queryset.active(now).filter(expires_at__isnull=False):
            ban.expires_at = new_expiry(ban)
            ban.save(update_fields=["expires_at", "changed_at"])
            changed.append(ban)
        field = str(self.opts.get_field("expires_at").verbose_name)
        self._log_bulk_change(request, changed, [{"changed": {"fields": [field]}}])
        return changed

    @admin.action(
        description=_("Extend selected bans by 1 day"), permissions=["change"]
    )
    def extend_bans(self, request, queryset):
        changed = self._set_expiry(
            request, queryset, lambda ban: ban.expires_at + EXTENSION
        )
        self._report(
            request,
            changed,
            queryset.count(),
            ngettext(
                "Extended %(count)d ban by 1 day.",
                "Extended %(count)d bans by 1 day.",
                len(changed),
            ),
            ngettext(
                "%(count)d selected ban was left as it was: permanent, lifted "
                "or expired.",
                "%(count)d selected bans were left as they were: permanent, "
                "lifted or expired.",
                queryset.count() - len(changed),
            ),
        )

    @admin.action(description=_("Make selected bans permanent"), permissions=["change"])
    def make_permanent(self, request, queryset):
        changed = self._set_expiry(request, queryset, lambda ban: None)
        self._report(
            request,
            changed,
            queryset.count(),
            ngettext(
                "Made %(count)d ban permanent.",
                "Made %(count)d bans permanent.",
                len(changed),
            ),
            ngettext(
                "%(count)d selected ban was left as it was: permanent already, "
                "lifted or expired.",
                "%(count)d selected bans were left as they were: permanent "
                "already, lifted or expired.",
                queryset.count() - len(changed),
            ),
        )


# --- the safelist and the blocklist -----------------------------------------------


class NetworkRuleForm(forms.ModelForm):
    class Meta:
        model = NetworkRule
        fields = ["network", "kind", "note"]

    def clean_network(self):
        # Normalised before the (network, kind) uniqueness check, so
        # 203.0.113.7 and 203.0.113.7/32 are the same entry.
        return normalize_field(self)


@admin.register(NetworkRule)
class NetworkRuleAdmin(admin.ModelAdmin):
    form = NetworkRuleForm
    list_display = ["network", "kind", "note", "created_at"]
    list_filter = ["kind"]
    search_fields = ["network", "note"]
    search_help_text = _("Address or network (part of it), or a word of the note.")
    fields = ["network", "kind", "note", "created_at", "changed_at"]
    readonly_fields = ["created_at", "changed_at"]

    def save_model(self, request, obj, form, change):
        # Conflicts are allowed (an operator may mean them) but said: the
        # blocklist wins over the safelist, and a safelist entry does not
        # lift the bans already made.
        super().save_model(request, obj, form, change)
        warn_widened(request, form, obj.network)
        if obj.kind == NetworkRule.Kind.BLOCKLIST:
            for entry in overlapping(obj.network, safelisted_networks()):
                messages.warning(
                    request,
                    gettext(
                        "The blocklisted %(network)s overlaps the safelist "
                        "entry %(entry)s: the blocklist wins, those addresses "
                        "are refused."
                    )
                    % {"network": obj.network, "entry": entry},
                )
            warn_own_address(request, obj.network, gettext("the blocklist refuses"))
            return
        blocklist = NetworkRule.objects.filter(kind=NetworkRule.Kind.BLOCKLIST)
        for entry in overlapping(
            obj.network, blocklist.values_list("network", flat=True)
        ):
            messages.warning(
                request,
                gettext(
                    "The safelisted %(network)s overlaps the blocklist entry "
                    "%(entry)s: the blocklist wins, those addresses are refused."
                )
                % {"network": obj.network, "entry": entry},
            )
        bans = overlapping(
            obj.network, Ban.objects.active().values_list("network", flat=True)
        )
        if bans:
            messages.warning(
                request,
                ngettext(
                    "%(count)d active ban overlaps %(network)s (%(bans)s): the "
                    "safelist prevents new bans, lift this one in Bans.",
                    "%(count)d active bans overlap %(network)s (%(bans)s): the "
                    "safelist prevents new bans, lift these in Bans.",
                    len(bans),
                )
                % {"count": len(bans), "network": obj.network, "bans": ", ".join(bans)},
            )
