"""The filters of the transfers report (django-filter)."""

import datetime

import django_filters
from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ftpserver_core.models import AuditEvent, FTPUserGroup

Event = AuditEvent.Event
UPLOADS = (Event.UPLOAD, Event.UPLOAD_INCOMPLETE)
DOWNLOADS = (Event.DOWNLOAD, Event.DOWNLOAD_INCOMPLETE)
COMPLETE = (Event.UPLOAD, Event.DOWNLOAD)
INCOMPLETE = (Event.UPLOAD_INCOMPLETE, Event.DOWNLOAD_INCOMPLETE)

DIRECTIONS = [("upload", _("upload")), ("download", _("download"))]
STATUSES = [("complete", _("complete")), ("incomplete", _("incomplete"))]
_EVENTS = {
    "upload": UPLOADS,
    "download": DOWNLOADS,
    "complete": COMPLETE,
    "incomplete": INCOMPLETE,
}


def transfers():
    """Return every transfer record: uploads and downloads, complete or not."""
    return AuditEvent.objects.filter(event__in=AuditEvent.TRANSFERS)


def start_of_day(day):
    """Return midnight at the start of ``day`` in the current time zone."""
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


def group_choices():
    # From the groups table, not a DISTINCT over the audit table.
    return [
        (name, name)
        for name in FTPUserGroup.objects.order_by("name").values_list("name", flat=True)
    ]


class IPAddressFilter(django_filters.Filter):
    """An exact client IP, validated before it reaches the database."""

    field_class = forms.GenericIPAddressField


class TransferFilterSet(django_filters.FilterSet):
    date_from = django_filters.DateFilter(
        label=_("From (date)"),
        method="filter_date_from",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    date_to = django_filters.DateFilter(
        label=_("To (date, inclusive)"),
        method="filter_date_to",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    user = django_filters.CharFilter(field_name="username", label=_("User"))
    group = django_filters.ChoiceFilter(
        field_name="group", choices=group_choices, label=_("Group")
    )
    direction = django_filters.ChoiceFilter(
        choices=DIRECTIONS, method="filter_events", label=_("Direction")
    )
    status = django_filters.ChoiceFilter(
        choices=STATUSES, method="filter_events", label=_("Complete")
    )
    ip = IPAddressFilter(field_name="remote_ip", label=_("Client IP"))
    path = django_filters.CharFilter(
        field_name="ftp_path", lookup_expr="icontains", label=_("Path contains")
    )
    size_min = django_filters.NumberFilter(
        field_name="size", lookup_expr="gte", label=_("Size from (bytes)"), min_value=0
    )
    size_max = django_filters.NumberFilter(
        field_name="size", lookup_expr="lte", label=_("Size to (bytes)"), min_value=0
    )

    class Meta:
        model = AuditEvent
        fields = []

    def filter_date_from(self, queryset, name, value):
        return queryset.filter(time__gte=start_of_day(value))

    def filter_date_to(self, queryset, name, value):
        return queryset.filter(
            time__lt=start_of_day(value + datetime.timedelta(days=1))
        )

    def filter_events(self, queryset, name, value):
        return queryset.filter(event__in=_EVENTS[value])
