"""import-export widgets whose errors quote the bad value and say what was expected."""

import datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from import_export import widgets


def text(value):
    """Return a cell as text: XLSX hands numbers over as int or float."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


class IsoDateTimeWidget(widgets.DateTimeWidget):
    """Render a datetime as ISO 8601 with its UTC offset, in every format.

    XLSX cannot hold a time zone, so the default drops it there; a string
    keeps the instant unambiguous in all three formats alike. On import it
    reads ISO 8601 (with or without an offset; without one, the time is in
    ``TIME_ZONE``), Django's ``DATETIME_INPUT_FORMATS`` and spreadsheet dates.
    """

    def render(self, value, obj=None, **kwargs):
        if value is None:
            return ""
        if timezone.is_aware(value):
            value = timezone.localtime(value)
        return value.isoformat()

    def clean(self, value, row=None, **kwargs):
        if isinstance(value, datetime.datetime):
            parsed = value
        elif isinstance(value, datetime.date):
            parsed = datetime.datetime.combine(value, datetime.time())
        else:
            raw = text(value)
            if not raw:
                return None
            try:
                parsed = parse_datetime(raw)
            except ValueError:
                parsed = None
            if parsed is None:
                try:
                    return super().clean(raw, row, **kwargs)
                except ValueError:
                    raise ValueError(
                        _(
                            "%(value)r is not a date and time; expected ISO 8601 "
                            "such as 2026-03-14T12:00:00+00:00 or 2026-03-14 12:00."
                        )
                        % {"value": raw}
                    ) from None
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed)
        return parsed


class LocalDateTimeWidget(IsoDateTimeWidget):
    """Export a datetime as a datetime in the current time zone (``TIME_ZONE``).

    The format writes it: ISO 8601 with its offset in CSV and JSON, a
    date-time cell in XLSX (see ``ftpadmin.formats``).
    """

    def render(self, value, obj=None, **kwargs):
        if value is None:
            return None
        if timezone.is_aware(value):
            return timezone.localtime(value)
        return value


class StrictBooleanWidget(widgets.BooleanWidget):
    """A boolean that refuses what it does not know (the default reads "yes" as False)."""

    TRUE_TEXT = {"1", "true", "yes", "y", "on"}
    FALSE_TEXT = {"0", "false", "no", "n", "off"}

    def clean(self, value, row=None, **kwargs):
        if isinstance(value, bool):
            return value
        raw = text(value)
        if raw.lower() in ("", "none", "null"):
            return None
        if raw.lower() in self.TRUE_TEXT:
            return True
        if raw.lower() in self.FALSE_TEXT:
            return False
        raise ValueError(
            _("%(value)r is not a yes/no value; expected 1, 0, true, false, yes or no.")
            % {"value": raw}
        )


class CountWidget(widgets.IntegerWidget):
    """A whole number of at least 0, or blank."""

    def clean(self, value, row=None, **kwargs):
        raw = text(value)
        if not raw:
            return None
        try:
            number = int(raw)
        except ValueError:
            raise ValueError(
                _("%(value)r is not a whole number; expected e.g. 5, or blank.")
                % {"value": raw}
            ) from None
        if number < 0:
            raise ValueError(
                _("%(value)r is negative; expected a whole number of 0 or more.")
                % {"value": raw}
            )
        return number


class TextWidget(widgets.CharWidget):
    """Text, with numbers from XLSX cells turned back into their digits."""

    def clean(self, value, row=None, **kwargs):
        return text(value)


class LookupWidget(widgets.ForeignKeyWidget):
    """A foreign key found by a unique field; an unknown value is a row error.

    The default raises ``DoesNotExist``, which import-export reports as a
    crash with a traceback instead of a validation error of the row.
    """

    def __init__(self, model, field, *, expected, **kwargs):
        super().__init__(model, field, **kwargs)
        self.expected = expected

    def clean(self, value, row=None, **kwargs):
        raw = text(value)
        if not raw:
            return None
        try:
            return self.get_queryset(raw, row).get(**{self.field: raw})
        except self.model.DoesNotExist:
            raise ValueError(
                _("Unknown %(what)s %(value)r; expected %(expected)s.")
                % {
                    "what": self.model._meta.verbose_name,
                    "value": raw,
                    "expected": self.expected,
                }
            ) from None

    def render(self, value, obj=None, **kwargs):
        if value is None:
            return ""
        return getattr(value, self.field)
