"""Totals of the transfers report: files and bytes up and down, per user."""

from django.db.models import Count, Q, Sum

from ftpadmin.filters import DOWNLOADS, INCOMPLETE, UPLOADS

KEYS = ("files_up", "bytes_up", "files_down", "bytes_down", "incomplete")


def per_user_totals(queryset):
    """Return the totals of each user in ``queryset``, in one GROUP BY query."""
    up, down = Q(event__in=UPLOADS), Q(event__in=DOWNLOADS)
    return list(
        queryset.order_by("username")
        .values("username")
        .annotate(
            files_up=Count("pk", filter=up),
            bytes_up=Sum("size", filter=up, default=0),
            files_down=Count("pk", filter=down),
            bytes_down=Sum("size", filter=down, default=0),
            incomplete=Count("pk", filter=Q(event__in=INCOMPLETE)),
        )
    )


def overall_totals(rows):
    """Add up the per-user rows (no second query); ``files`` counts both ways."""
    totals = {key: sum(row[key] for row in rows) for key in KEYS}
    totals["files"] = totals["files_up"] + totals["files_down"]
    return totals
