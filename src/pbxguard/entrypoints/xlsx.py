"""A streaming writer of one-sheet Excel workbooks (.xlsx), for the ledger's reports.

An .xlsx file is a zip of XML parts. The reports need little of the format: one sheet, text,
numbers, date-times and durations, a bold title and header, column widths and frozen header
rows. This writes just that, row by row, straight into the sheet's part as it is compressed:
memory stays flat and a cell costs about a microsecond, where a general library's cell objects
cost ten or more (a month of a large site's offences is a hundred thousand rows of seventeen
cells). `openpyxl` reads what this writes; the tests check it does.

Values: ``str`` as inline text (characters XML cannot carry, the C0 controls but tab and line
breaks, become U+FFFD rather than making the file unreadable), ``int``, ``float`` and
``Decimal`` as numbers, ``bool`` as TRUE/FALSE, a naive ``datetime`` as an Excel date-time
(``yyyy-mm-dd hh:mm:ss``), a ``timedelta`` as a duration (``[h]:mm:ss``), ``None`` and ``""``
as an empty cell. Date-times are counted from Excel's 1899-12-30 epoch, as Excel and openpyxl
count them.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import IO, Any, Final

#: Cell styles (indexes into the workbook's cellXfs below).
PLAIN: Final = 0
BOLD: Final = 1
TITLE: Final = 2
_DATETIME: Final = 3
_DURATION: Final = 4

# Excel counts naive local date-times; a report converts to the site's time before writing.
_EPOCH: Final = datetime(1899, 12, 30)  # noqa: DTZ001
_DAY: Final = 86400.0
_FLUSH_ROWS: Final = 512
_NEEDS_ESCAPE: Final = re.compile(r"[&<>\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ILLEGAL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

_CONTENT_TYPES = (
    _HEAD + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.'
    'openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.styles+xml"/></Types>'
)
_ROOT_RELS = (
    f'{_HEAD}<Relationships xmlns="{_PACKAGE_RELS}"><Relationship Id="rId1" '
    f'Type="{_RELS}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK_RELS = (
    f'{_HEAD}<Relationships xmlns="{_PACKAGE_RELS}">'
    f'<Relationship Id="rId1" Type="{_RELS}/worksheet" Target="worksheets/sheet1.xml"/>'
    f'<Relationship Id="rId2" Type="{_RELS}/styles" Target="styles.xml"/></Relationships>'
)
_STYLES = (
    f'{_HEAD}<styleSheet xmlns="{_MAIN}">'
    '<numFmts count="2"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/>'
    '<numFmt numFmtId="165" formatCode="[h]:mm:ss"/></numFmts>'
    '<fonts count="3"><font><sz val="11"/><name val="Calibri"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/></font>'
    '<font><b/><sz val="14"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
    "</cellStyleXfs>"
    '<cellXfs count="5">'
    '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    '<xf numFmtId="0" fontId="2" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    "</cellXfs>"
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


def _text(value: str) -> str:
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    value = _ILLEGAL.sub("\ufffd", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attribute(value: str) -> str:
    return _text(value).replace('"', "&quot;")


def column_letter(index: int) -> str:
    """Return the letters of column ``index`` (0 -> A, 25 -> Z, 26 -> AA)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def excel_serial(moment: datetime) -> float:
    """Return a naive date-time as Excel's serial day number (1899-12-30 is 0)."""
    delta = moment - _EPOCH
    return delta.days + (delta.seconds + delta.microseconds / 1e6) / _DAY


class SheetWriter:
    """Rows of one sheet, written as they come (see `workbook`)."""

    def __init__(self, stream: IO[bytes], columns: int) -> None:
        self._stream = stream
        self._letters = [column_letter(i) for i in range(max(columns, 1))]
        self._row = 0
        self._pending: list[str] = []

    def append(self, values: Sequence[Any], style: int = PLAIN) -> None:
        """Write a row; ``style`` (PLAIN, BOLD, TITLE) applies to its text and numbers."""
        self._row += 1
        row = str(self._row)
        letters = self._letters
        styled = f' s="{style}"' if style else ""
        cells = []
        for index, value in enumerate(values):
            if value is None or value == "":
                continue
            while index >= len(letters):
                letters.append(column_letter(len(letters)))
            ref = letters[index] + row
            kind = type(value)
            if kind is str:
                cells.append(
                    f'<c r="{ref}" t="inlineStr"{styled}><is><t xml:space="preserve">'
                    f"{_text(value)}</t></is></c>"
                )
            elif kind is bool:
                cells.append(f'<c r="{ref}" t="b"{styled}><v>{int(value)}</v></c>')
            elif kind is int or kind is Decimal:
                cells.append(f'<c r="{ref}"{styled}><v>{value}</v></c>')
            elif kind is float:
                cells.append(f'<c r="{ref}"{styled}><v>{value!r}</v></c>')
            elif isinstance(value, datetime):
                cells.append(f'<c r="{ref}" s="{_DATETIME}"><v>{excel_serial(value)!r}</v></c>')
            elif isinstance(value, timedelta):
                days = value.total_seconds() / _DAY
                cells.append(f'<c r="{ref}" s="{_DURATION}"><v>{days!r}</v></c>')
            else:
                cells.append(
                    f'<c r="{ref}" t="inlineStr"{styled}><is><t xml:space="preserve">'
                    f"{_text(str(value))}</t></is></c>"
                )
        self._pending.append(f'<row r="{row}">{"".join(cells)}</row>')
        if len(self._pending) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Hand the rows written so far to the compressor."""
        if self._pending:
            self._stream.write("".join(self._pending).encode("utf-8"))
            self._pending.clear()


@contextmanager
def workbook(
    out: IO[bytes],
    *,
    sheet_name: str,
    widths: Sequence[float],
    frozen_rows: int = 0,
) -> Iterator[SheetWriter]:
    """Write a one-sheet workbook to ``out``; yield the sheet to append rows to.

    ``widths`` are the columns' widths in characters; the first ``frozen_rows`` rows stay in
    view when the sheet scrolls. Nothing is complete until the block ends.
    """
    name = sheet_name[:31]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as book:
        book.writestr("[Content_Types].xml", _CONTENT_TYPES)
        book.writestr("_rels/.rels", _ROOT_RELS)
        book.writestr(
            "xl/workbook.xml",
            f'{_HEAD}<workbook xmlns="{_MAIN}" xmlns:r="{_RELS}"><sheets>'
            f'<sheet name="{_attribute(name)}" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        book.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        book.writestr("xl/styles.xml", _STYLES)
        with book.open("xl/worksheets/sheet1.xml", "w") as stream:
            pane = ""
            if frozen_rows:
                top = f"A{frozen_rows + 1}"
                pane = (
                    f'<pane ySplit="{frozen_rows}" topLeftCell="{top}" activePane="bottomLeft"'
                    f' state="frozen"/><selection pane="bottomLeft" activeCell="{top}"'
                    f' sqref="{top}"/>'
                )
            columns = "".join(
                f'<col min="{i}" max="{i}" width="{width:g}" customWidth="1"/>'
                for i, width in enumerate(widths, start=1)
            )
            stream.write(
                (
                    f'{_HEAD}<worksheet xmlns="{_MAIN}" xmlns:r="{_RELS}">'
                    f'<sheetViews><sheetView workbookViewId="0">{pane}</sheetView></sheetViews>'
                    f'<sheetFormatPr defaultRowHeight="15"/>'
                    + (f"<cols>{columns}</cols>" if columns else "")
                    + "<sheetData>"
                ).encode("utf-8")
            )
            sheet = SheetWriter(stream, len(widths))
            yield sheet
            sheet.flush()
            stream.write(b"</sheetData></worksheet>")
