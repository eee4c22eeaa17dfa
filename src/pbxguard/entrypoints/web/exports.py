"""Ledger exports streamed to the browser: CSV (UTF-8 with a BOM) and Excel.

CSV goes out in chunks as the offences are read, so an export of a year holds one chunk in
memory. Excel is written by pbxguard's streaming writer (`pbxguard.entrypoints.xlsx`) into a
spooled temporary file, then streamed from it (a workbook is a zip: its directory comes last).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from pbxguard.entrypoints.render import OFFENCE_EXPORT_COLUMNS, write_csv, write_xlsx

_CHUNK_ROWS = 500
_READ = 64 * 1024


def csv_chunks(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Yield the CSV export: the BOM and bilingual header first, then rows in chunks."""
    buffer = io.StringIO()
    write_csv([], OFFENCE_EXPORT_COLUMNS, buffer, bom=True)
    yield buffer.getvalue().encode("utf-8")
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= _CHUNK_ROWS:
            yield _rows_bytes(chunk)
            chunk = []
    if chunk:
        yield _rows_bytes(chunk)


def _rows_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    write_csv(rows, OFFENCE_EXPORT_COLUMNS, buffer, bom=False, header=False)
    return buffer.getvalue().encode("utf-8")


def xlsx_chunks(rows: Iterable[dict[str, Any]], *, title: str, sheet: str) -> Iterator[bytes]:
    """Yield the Excel export, written to a spooled file first (the zip ends with its directory)."""
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        write_xlsx(rows, OFFENCE_EXPORT_COLUMNS, spool, title=title, sheet_name=sheet)
        spool.seek(0)
        while block := spool.read(_READ):
            yield block
