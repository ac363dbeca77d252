"""The audit trail as CSV, CSV (Excel), XLSX and JSON (export only)."""

from django.utils.translation import gettext_lazy as _
from import_export import fields, resources, widgets

from ftpserver_core.models import AuditEvent

from .labels import VerboseLabelsMixin
from .widgets import LocalDateTimeWidget


def _native(name, widget_class):
    """Return the column ``name`` as a number or boolean, not as text.

    JSON gets 1234, not "1,234", and CSV the plain digits of a size in bytes.
    """
    return fields.Field(
        attribute=name,
        column_name=name,
        widget=widget_class(coerce_to_string=False),
    )


class AuditEventResource(VerboseLabelsMixin, resources.ModelResource):
    """Every column of an audit record; export only.

    Times are datetimes in ``TIME_ZONE``: ISO 8601 in CSV and JSON, date-time
    cells in XLSX. Columns are labelled with the fields' verbose names.
    """

    labels = {"id": _("ID"), "account_id": _("Account ID")}

    id = _native("id", widgets.IntegerWidget)
    time = fields.Field(
        attribute="time", column_name="time", widget=LocalDateTimeWidget()
    )
    # The raw id: following the loose foreign key would cost a query per row,
    # and fail for deleted accounts.
    account_id = _native("account_id", widgets.IntegerWidget)
    remote_port = _native("remote_port", widgets.IntegerWidget)
    size = _native("size", widgets.IntegerWidget)
    duration = _native("duration", widgets.FloatWidget)
    success = _native("success", widgets.BooleanWidget)
    tls = _native("tls", widgets.BooleanWidget)

    class Meta:
        model = AuditEvent
        name = _("Audit events (all columns)")
        fields = (
            "id",
            "time",
            "event",
            "username",
            "account_id",
            "group",
            "remote_ip",
            "remote_port",
            "session_id",
            "ftp_path",
            "path",
            "ftp_path_to",
            "path_to",
            "size",
            "duration",
            "success",
            "reason",
            "tls",
            "node",
            "sha256",
            "network",
        )
        export_order = fields
        chunk_size = 2000

    def import_data(self, *args, **kwargs):
        # Audit records are evidence: only the FTP server writes them.
        raise NotImplementedError("AuditEventResource is export only.")
