"""The read-only admin of the audit trail."""

import ipaddress
import re

from django.contrib import admin
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext_lazy as _
from import_export.admin import ExportActionMixin
from import_export.formats.base_formats import JSON

from ftpadmin.export_forms import LabelledFieldsExportForm
from ftpadmin.formats import CSV, XLSX, ExcelCSV
from ftpadmin.list_filters import GroupListFilter, SessionListFilter, UserListFilter
from ftpadmin.paginators import CappedCountPaginator
from ftpadmin.resources import AuditEventResource
from ftpserver_core.models import AuditEvent, normalize_network

# Part of an IPv4 or IPv6 address: hex digits with a dot or a colon.
_PARTIAL_IP = re.compile(r"[0-9A-Fa-f]*[.:][0-9A-Fa-f.:]*")
# The records that carry a network.
_BAN_EVENTS = [AuditEvent.Event.BAN, AuditEvent.Event.UNBAN]


@admin.register(AuditEvent)
class AuditEventAdmin(ExportActionMixin, admin.ModelAdmin):
    """The audit trail, read only: written by the FTP server, never by hand."""

    list_display = [
        "time",
        "event",
        "user",
        "remote_ip",
        "path_display",
        "size",
        "result",
        "session",
    ]
    list_filter = [
        "event",
        "success",
        "tls",
        GroupListFilter,
        UserListFilter,
        SessionListFilter,
    ]
    # What the search box searches; get_search_results says how.
    search_fields = ["username", "remote_ip", "ftp_path"]
    search_help_text = _(
        "User name, client IP or path (part of it; case-sensitive). A whole IP "
        "address finds that client's records; a network (198.51.100.0/24, "
        "203.0.113.7/32) finds its bans and lifted bans."
    )
    date_hierarchy = "time"
    # Sorting a million rows by any other column reads them all (1.7 s on
    # SQLite); the time index gives any page of either order at once.
    sortable_by = ["time"]
    # No relation is displayed (the account is shown by its username), so
    # there is nothing to join and no query per row.
    list_select_related = False
    list_per_page = 100
    readonly_fields = ["session_records"]
    # Fast at a million rows: count at most CappedCountPaginator.cap rows, no
    # unfiltered COUNT(*), no facet counts; the date drill-down is computed by
    # index seeks in the change_list.html below.
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    change_list_template = "admin/ftpserver_core/auditevent/change_list.html"

    resource_classes = [AuditEventResource]
    export_formats = [CSV, ExcelCSV, XLSX, JSON]
    export_form_class = LabelledFieldsExportForm
    show_change_form_export = False
    #: Exports build the whole file in memory; past this many rows the
    #: streaming CSV of the transfers report is the way.
    export_max_rows = 100_000

    def get_search_results(self, request, queryset, search_term):
        # Django would compare UPPER(column) LIKE '%term%' on three columns of
        # every row: seconds at a million rows. Here a whole IP address uses
        # the (remote_ip, time) index; other terms match inside the user name
        # or the path with a plain LIKE (both are case-sensitive names), and
        # inside the client IP only when they look like part of an address.
        for term in smart_split(search_term):
            if term[:1] in ('"', "'") and term[0] == term[-1]:
                term = unescape_string_literal(term)
            try:
                match = Q(remote_ip=str(ipaddress.ip_address(term)))
            except ValueError:
                match = Q(username__contains=term) | Q(ftp_path__contains=term)
                if _PARTIAL_IP.fullmatch(term):
                    match |= Q(remote_ip__contains=term)
                elif "/" in term:
                    # A network (198.51.100.0/24) finds its ban records too.
                    # Not a whole address: OR-ing the (remote_ip, time) index
                    # with another would sort all of a client's records.
                    try:
                        network = normalize_network(term)
                    except ValidationError:
                        pass
                    else:
                        match |= Q(event__in=_BAN_EVENTS, network=network)
            queryset = queryset.filter(match)
        return queryset, False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_export_permission(self, request):
        # import-export allows any staff user by default; the audit trail is
        # for those who may view it.
        return self.has_view_permission(request)

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj):
        # Django's markup without a template render per row, which costs a
        # third of the page at 100 rows.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" '
            'aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            format_html(_("Select this object for an action - {}"), obj),
        )

    # The links in the table are relative ("?session_id=..."): they stay on
    # this changelist, and cost no reverse() per row.

    @admin.display(description=_("user"))
    def user(self, obj):
        if not obj.username:
            return None
        return format_html(
            '<a href="?{}">{}</a>', urlencode({"username": obj.username}), obj.username
        )

    @admin.display(description=_("path"))
    def path_display(self, obj):
        if obj.ftp_path_to:
            return format_html("{} &rarr; {}", obj.ftp_path, obj.ftp_path_to)
        return obj.ftp_path or None

    @admin.display(description=_("result"))
    def result(self, obj):
        if obj.network:
            # A ban or a lifted ban: the network, and why it was banned.
            if obj.reason:
                return f"{obj.network}: {obj.reason}"
            return obj.network
        if obj.success:
            return _("ok")
        return obj.reason or _("failed")

    @admin.display(description=_("session"))
    def session(self, obj):
        if not obj.session_id:
            return None
        return format_html(
            '<a href="?{}" title="{}">{}</a>',
            urlencode({"session_id": obj.session_id}),
            _("All records of this session"),
            obj.session_id[:8],
        )

    @admin.display(description=_("session"))
    def session_records(self, obj):
        if not obj.session_id:
            return None
        url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        return format_html(
            '<a href="{}?{}">{}</a>',
            url,
            urlencode({"session_id": obj.session_id}),
            _("All records of session %(session)s") % {"session": obj.session_id},
        )

    def get_export_data(self, file_format, request, queryset, **kwargs):
        # export_action shows a ValueError as a message on the export form.
        if queryset[: self.export_max_rows + 1].count() > self.export_max_rows:
            raise ValueError(
                _(
                    "More than %(limit)s audit events match; narrow the filters, "
                    "or use the CSV export of the transfers report, which streams."
                )
                % {"limit": f"{self.export_max_rows:,}"}
            )
        return super().get_export_data(file_format, request, queryset, **kwargs)

    def export_admin_action(self, request, queryset):
        # "Select all" across pages would put every pk in the export form;
        # the changelist's filters describe the same rows in a few bytes.
        if request.POST.get("select_across") == "1":
            url = reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_export",
                current_app=self.admin_site.name,
            )
            query = request.GET.urlencode()
            return HttpResponseRedirect(f"{url}?{query}" if query else url)
        return super().export_admin_action(request, queryset)

    def get_valid_export_item_pks(self, request):
        # The default lists every pk of the table to validate the selection;
        # only the posted pks that this user may see need checking.
        posted = [
            pk for pk in request.POST.getlist("export_items") if str(pk).isdigit()
        ]
        return (
            self.get_queryset(request)
            .filter(pk__in=posted)
            .values_list("pk", flat=True)
        )
