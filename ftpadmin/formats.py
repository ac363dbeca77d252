"""Export formats safe for text that FTP clients chose (file and user names).

Plain CSV and JSON are for scripts: the columns' names as headers, times in
ISO 8601 with their UTC offset. CSV (Excel) and XLSX are for people: the
columns' labels as headers (when the resource gives them, see
``ftpadmin.resources.labels``); CSV (Excel) starts with a UTF-8 byte order
mark, XLSX holds times as date-time cells.
"""

import datetime
import io

import tablib
from django.utils import timezone
from import_export.formats import base_formats

# Control characters that the XLSX format cannot hold.
_ILLEGAL = str.maketrans(
    {c: "\N{REPLACEMENT CHARACTER}" for c in [*range(0x00, 0x09), 0x0B, 0x0C]}
    | {c: "\N{REPLACEMENT CHARACTER}" for c in range(0x0E, 0x20)}
)


# How XLSX date-time cells show: sortable, and the same in every locale.
DATETIME_NUMBER_FORMAT = "yyyy-mm-dd hh:mm:ss"
# Wide enough for that format: a narrower column shows "#####" in Excel.
_DATETIME_WIDTH = 20


def headers_for_people(dataset):
    """Return the labels of ``dataset``'s columns, or their names if it has none.

    A resource's ``export`` sets ``dataset.labels`` (the fields' verbose
    names, in the order of ``dataset.headers``).
    """
    labels = getattr(dataset, "labels", None)
    headers = list(dataset.headers or ())
    if labels and len(labels) == len(headers):
        return [str(label) for label in labels]
    return [str(header) for header in headers]


class XLSX(base_formats.XLSX):
    """XLSX whose text cells are always text, never formulas, and times are times.

    tablib hands every value to openpyxl, which turns a string starting with
    ``=`` into a formula: a file uploaded as ``=HYPERLINK("https://...")``
    would run in the spreadsheet of whoever opens the export. Here strings
    are written as strings, unchanged (control characters, which XLSX cannot
    hold, become U+FFFD).

    A datetime becomes a date-time cell, so that a spreadsheet sorts and
    filters by it. XLSX cannot hold a time zone: an aware datetime is
    written as the wall-clock time of the current time zone (``TIME_ZONE``).
    """

    def export_data(self, dataset, **kwargs):
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.utils import get_column_letter

        book = Workbook(write_only=True)
        sheet = book.create_sheet(title=dataset.title or "Sheet1")
        tz = timezone.get_current_timezone()

        def cell(value):
            if isinstance(value, datetime.datetime):
                if timezone.is_aware(value):
                    value = timezone.make_naive(value, tz)
                moment = WriteOnlyCell(sheet, value)
                moment.number_format = DATETIME_NUMBER_FORMAT
                return moment
            if not isinstance(value, str):
                return value
            text = WriteOnlyCell(sheet, value.translate(_ILLEGAL))
            text.data_type = "s"
            return text

        # A write-only sheet takes column widths before its first row.
        if len(dataset):
            for index, value in enumerate(dataset[0], 1):
                if isinstance(value, datetime.datetime):
                    letter = get_column_letter(index)
                    sheet.column_dimensions[letter].width = _DATETIME_WIDTH
        sheet.append([cell(header) for header in headers_for_people(dataset)])
        for row in dataset:
            sheet.append([cell(value) for value in row])
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()


# What a spreadsheet reads as the start of a formula (OWASP's CSV injection
# list): = + - @, and tab or carriage return before one of them.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """Return ``value`` so that a spreadsheet shows it, never runs it.

    A text that a spreadsheet would read as a formula gets a leading
    apostrophe, which Excel and LibreOffice show as text (anyone can choose a
    failed login's username: ``=HYPERLINK(...)`` would otherwise run in the
    admin's spreadsheet). Other values are returned unchanged.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _text(value):
    """Return ``value`` as CSV writes it: a datetime in ISO 8601 with its offset."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return spreadsheet_safe(value)


class CSV(base_formats.CSV):
    """CSV whose text cells never start a spreadsheet formula.

    django-import-export's own option (IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT)
    only drops a leading ``=``: ``+``, ``-`` and ``@`` start formulas too.
    Headers are the columns' names; datetimes are written in ISO 8601.
    """

    def headers(self, dataset):
        return dataset.headers

    def export_data(self, dataset, **kwargs):
        safe = tablib.Dataset(headers=self.headers(dataset), title=dataset.title)
        for row in dataset:
            safe.append([_text(value) for value in row])
        # By tablib's name of the format: get_title() is the label on the form.
        return safe.export("csv", **kwargs)


# What Excel reads as "this file is UTF-8"; without it, Excel reads a CSV in
# the system's ANSI code page and shows "résumé" as "rÃ©sumÃ©".
BOM = "\ufeff"


class ExcelCSV(CSV):
    """CSV for Excel: a UTF-8 byte order mark, and the columns' labels as headers.

    A separate choice rather than a BOM in every CSV: Python's csv module,
    ``cut``, ``awk`` and many import scripts read the BOM as part of the
    first header's name.
    """

    def get_title(self):
        return "csv (Excel)"

    def headers(self, dataset):
        return headers_for_people(dataset)

    def export_data(self, dataset, **kwargs):
        return BOM + super().export_data(dataset, **kwargs)
