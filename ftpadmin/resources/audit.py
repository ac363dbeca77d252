"""The audit trail as CSV, XLSX and JSON (export only)."""

from django.utils.translation import gettext_lazy as _
from import_export import fields, resources, widgets

from ftpserver_core.models import AuditEvent

from .widgets import IsoDateTimeWidget


def _native(widget_class):
    # Numbers and booleans stay numbers and booleans: JSON gets 1234, not
    # "1,234", and CSV gets the plain digits of the size in bytes.
    return widget_class(coerce_to_string=False)


class AuditEventResource(resources.ModelResource):
    """Every column of an audit record; export only."""

    id = fields.Field(
        attribute="id", column_name="id", widget=_native(widgets.IntegerWidget)
    )
    time = fields.Field(
        attribute="time", column_name="time", widget=IsoDateTimeWidget()
    )
    # The raw id: following the loose foreign key would cost a query per row,
    # and fail for deleted accounts.
    account_id = fields.Field(
        attribute="account_id",
        column_name="account_id",
        widget=_native(widgets.IntegerWidget),
    )
    remote_port = fields.Field(
        attribute="remote_port",
        column_name="remote_port",
        widget=_native(widgets.IntegerWidget),
    )
    size = fields.Field(
        attribute="size", column_name="size", widget=_native(widgets.IntegerWidget)
    )
    duration = fields.Field(
        attribute="duration",
        column_name="duration",
        widget=_native(widgets.FloatWidget),
    )
    success = fields.Field(
        attribute="success",
        column_name="success",
        widget=_native(widgets.BooleanWidget),
    )
    tls = fields.Field(
        attribute="tls", column_name="tls", widget=_native(widgets.BooleanWidget)
    )

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
        )
        export_order = fields
        chunk_size = 2000

    def import_data(self, *args, **kwargs):
        # Audit records are evidence: only the FTP server writes them.
        raise NotImplementedError("AuditEventResource is export only.")
