"""Export formats safe for text that FTP clients chose (file and user names)."""

import io

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
