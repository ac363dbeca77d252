"""List filters of the audit trail's changelist."""

from django.contrib import admin
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
