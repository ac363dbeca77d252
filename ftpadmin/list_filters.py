"""List filters of the audit trail, the accounts and the live sessions."""

from django.contrib import admin
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils.translation import gettext_lazy as _

from ftpserver_core.models import FTPUserGroup


class GroupListFilter(admin.SimpleListFilter):
    """The FTP groups by name (the audit rows keep the name the group had)."""

    title = _("group")
    parameter_name = "group"

    def lookups(self, request, model_admin):
        # From the groups table: a DISTINCT over the audit table would read
        # every row of it.
        names = FTPUserGroup.objects.order_by("name").values_list("name", flat=True)
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(group=self.value())
        return queryset


class ChosenValueFilter(admin.SimpleListFilter):
    """A filter shown only while a value is chosen, by a link in the table.

    It lists no choices of its own (there may be millions of sessions), but
    shows the chosen value and lets "Clear all filters" remove it.
    """

    def lookups(self, request, model_admin):
        return [(self.value(), self.value())] if self.value() else []

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class SessionListFilter(ChosenValueFilter):
    title = _("session")
    parameter_name = "session_id"


class UserListFilter(ChosenValueFilter):
    title = _("user")
    parameter_name = "username"


# --- quota usage of the accounts' list -------------------------------------------


def annotate_quota(queryset):
    """Add each account's usage and effective quota (its own, else its group's).

    ``quota_used``/``files_used``: what the server counted (0 before it
    did); ``quota_limit``/``files_limit``: None when there is no quota. One
    LEFT JOIN each to the usage and the group: no query per row.
    """
    return queryset.annotate(
        quota_used=Coalesce(F("quota_usage__bytes"), Value(0)),
        files_used=Coalesce(F("quota_usage__files"), Value(0)),
        quota_limit=Coalesce(F("quota_bytes"), F("group__quota_bytes")),
        files_limit=Coalesce(F("quota_files"), F("group__quota_files")),
    )


#: Percent of a quota from which the list and the filter warn.
QUOTA_WARNING_PERCENT = 90


def _at_least(used, limit, percent):
    """``used >= limit * percent / 100`` in whole numbers (no float rounding)."""
    return Q(
        **{
            f"{limit}__isnull": False,
            f"{used}_x100__gte": F(limit) * percent,
        }
    )


class QuotaUsageFilter(admin.SimpleListFilter):
    """Accounts by how full their quota is (bytes or files, whichever is fuller)."""

    title = _("quota usage")
    parameter_name = "quota"

    def lookups(self, request, model_admin):
        return [
            ("over90", _("Over %(percent)d%%") % {"percent": QUOTA_WARNING_PERCENT}),
            ("over", _("Over quota")),
            ("within", _("Within quota")),
            ("none", _("No quota")),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if "quota_used" not in queryset.query.annotations:
            queryset = annotate_quota(queryset)
        queryset = queryset.annotate(
            quota_used_x100=F("quota_used") * 100,
            files_used_x100=F("files_used") * 100,
        )
        percent = {"over90": QUOTA_WARNING_PERCENT, "over": 100}.get(value)
        if percent is not None:
            return queryset.filter(
                _at_least("quota_used", "quota_limit", percent)
                | _at_least("files_used", "files_limit", percent)
            )
        if value == "within":
            return queryset.filter(
                Q(quota_limit__isnull=False) | Q(files_limit__isnull=False)
            ).exclude(
                _at_least("quota_used", "quota_limit", 100)
                | _at_least("files_used", "files_limit", 100)
            )
        if value == "none":
            return queryset.filter(quota_limit__isnull=True, files_limit__isnull=True)
        return queryset
