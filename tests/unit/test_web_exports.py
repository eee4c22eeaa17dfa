"""The console's CSV export, written in chunks, reads back as one CSV file."""

from __future__ import annotations

import csv
import io

from pbxguard.entrypoints.render import OFFENCE_EXPORT_COLUMNS, headers
from pbxguard.entrypoints.web.exports import csv_chunks


def test_chunks_join_into_one_file_with_one_header_and_every_row() -> None:
    keys = [key for key, _, _ in OFFENCE_EXPORT_COLUMNS]
    rows = [
        {key: f'{n}, "张伟"\n{key}' if key == "detail_zh" else f"{key}-{n}" for key in keys}
        for n in range(1234)
    ]
    data = b"".join(csv_chunks(rows)).decode("utf-8")
    assert data.startswith("\ufeff")
    read = list(csv.reader(io.StringIO(data.removeprefix("\ufeff"))))
    assert read[0] == headers(OFFENCE_EXPORT_COLUMNS)
    assert len(read) == 1 + len(rows)
    assert read[1:] == [[row[key] for key in keys] for row in rows]
