"""Export formats safe for text that FTP clients chose (file and user names)."""

import io

import tablib
from import_export.formats import base_formats

# Control characters that the XLSX format cannot hold.
_ILLEGAL = str.maketrans(
    {c: "\N{REPLACEMENT CHARACTER}" for c in [*range(0x00, 0x09), 0x0B, 0x0C]}
    | {c: "\N{REPLACEMENT CHARACTER}" for c in range(0x0E, 0x20)}
)


class XLSX(base_formats.XLSX):
    """XLSX whose text cells are always text, never formulas.

    tablib hands every value to openpyxl, which turns a string starting with
    ``=`` into a formula: a file uploaded as ``=HYPERLINK("https://...")``
    would run in the spreadsheet of whoever opens the export. Here strings
    are written as strings, unchanged (control characters, which XLSX cannot
    hold, become U+FFFD).
    """

    def export_data(self, dataset, **kwargs):
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell

        book = Workbook(write_only=True)
        sheet = book.create_sheet(title=dataset.title or "Sheet1")

        def cell(value):
            if not isinstance(value, str):
                return value
            text = WriteOnlyCell(sheet, value.translate(_ILLEGAL))
            text.data_type = "s"
            return text

        sheet.append([cell(str(header)) for header in dataset.headers or ()])
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


class CSV(base_formats.CSV):
    """CSV whose text cells never start a spreadsheet formula.

    django-import-export's own option (IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT)
    only drops a leading ``=``: ``+``, ``-`` and ``@`` start formulas too.
    """

    def export_data(self, dataset, **kwargs):
        safe = tablib.Dataset(headers=dataset.headers, title=dataset.title)
        for row in dataset:
            safe.append([spreadsheet_safe(value) for value in row])
        return super().export_data(safe, **kwargs)
