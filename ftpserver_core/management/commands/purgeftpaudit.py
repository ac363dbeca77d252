import datetime
import re

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ftpserver_core.models import AuditEvent

_RELATIVE = re.compile(r"^(\d+)d$")


def parse_before(value):
    """Return an aware datetime from an ISO date/datetime or 'Nd' (N days ago)."""
    match = _RELATIVE.match(value.strip())
    moment = None
    try:
        if match:
            return timezone.now() - datetime.timedelta(days=int(match[1]))
        # Well-formed but impossible values (2024-02-30, 25:00) raise.
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is not None:
                moment = datetime.datetime.combine(day, datetime.time.min)
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise CommandError(
            f"--before {value!r} is not a date; expected YYYY-MM-DD, an ISO "
            "date-time such as 2026-01-31T12:00:00+00:00, or '90d' (90 days ago)."
        )
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


class Command(BaseCommand):
    help = "Delete audit records older than a date."

    def add_arguments(self, parser):
        parser.add_argument(
            "--before",
            required=True,
            help="Delete records before this time: YYYY-MM-DD, ISO date-time or Nd.",
        )
        parser.add_argument(
            "--yes", action="store_true", help="Do not ask for confirmation."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=10_000,
            help="Rows deleted per transaction (default 10000).",
        )

    def handle(self, *args, before, yes, batch_size, **options):
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, not {batch_size}.")
        cutoff = parse_before(before)
        old = AuditEvent.objects.filter(time__lt=cutoff)
        count = old.count()
        if not count:
            self.stdout.write(f"No audit records before {cutoff.isoformat()}.")
            return
        if not yes:
            if not options.get("interactive", True) or not self.stdin_isatty():
                raise CommandError(
                    f"{count} audit records before {cutoff.isoformat()} would be "
                    "deleted; add --yes to confirm without a prompt."
                )
            try:
                answer = input(
                    f"Delete {count} audit records before {cutoff.isoformat()}? [y/N] "
                )
            except EOFError:  # Ctrl-D: no
                answer = ""
                self.stdout.write("")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Nothing deleted.")
        deleted = 0
        while True:
            ids = list(old.order_by().values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            deleted += AuditEvent.objects.filter(pk__in=ids).delete()[0]
        self.stdout.write(
            f"Deleted {deleted} audit records before {cutoff.isoformat()}."
        )

    @staticmethod
    def stdin_isatty():
        import sys

        return sys.stdin.isatty()
