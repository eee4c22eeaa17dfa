"""The streaming Excel writer: what it writes, openpyxl reads back as meant."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from pbxguard.entrypoints import xlsx


def written(rows: list[tuple[list[object], int]], **options: object) -> io.BytesIO:
    out = io.BytesIO()
    settings: dict[str, object] = {"sheet_name": "罚款台账 2026-11", "widths": [12, 40]}
    settings.update(options)
    with xlsx.workbook(out, **settings) as sheet:  # type: ignore[arg-type]
        for values, style in rows:
            sheet.append(values, style)
    out.seek(0)
    return out


def test_every_kind_of_value_reads_back_as_written() -> None:
    # Excel cells hold wall-clock times without a zone: reports convert to the site's first.
    moment = datetime(2026, 11, 23, 9, 33, 4)  # noqa: DTZ001
    book = load_workbook(
        written(
            [
                (
                    [
                        "张伟 <a&b>",
                        7,
                        2.5,
                        Decimal("500.00"),
                        True,
                        moment,
                        timedelta(minutes=3, seconds=7),
                        None,
                        "",
                        "after gaps",
                    ],
                    xlsx.PLAIN,
                )
            ]
        )
    )
    row = [cell.value for cell in book.active[1]]
    assert row[:7] == ["张伟 <a&b>", 7, 2.5, 500, True, moment, timedelta(minutes=3, seconds=7)]
    assert row[7:] == [None, None, "after gaps"]
    assert book.active["F1"].number_format == "yyyy-mm-dd hh:mm:ss"
    assert book.active["G1"].number_format == "[h]:mm:ss"


@pytest.mark.parametrize(
    "moment",
    [datetime(2026, 1, 1), datetime(2026, 12, 31, 23, 59, 59)],  # noqa: DTZ001 - wall-clock cells
)
def test_date_times_keep_their_second(moment: datetime) -> None:
    book = load_workbook(written([([moment], xlsx.PLAIN)]))
    assert book.active["A1"].value == moment


def test_characters_xml_cannot_carry_become_replacement_characters() -> None:
    book = load_workbook(written([(["caller\x01name\x1f\ttab\nline"], xlsx.PLAIN)]))
    assert book.active["A1"].value == "caller\ufffdname\ufffd\ttab\nline"


def test_title_header_widths_and_frozen_rows_are_laid_out() -> None:
    columns = 30
    book = load_workbook(
        written(
            [
                (["长话登记表 Long-distance register"], xlsx.TITLE),
                ([f"标题 {n}" for n in range(columns)], xlsx.BOLD),
                (list(range(columns)), xlsx.PLAIN),
            ],
            sheet_name="x" * 40,
            widths=[12] * 9 + [40] + [12] * (columns - 10),
            frozen_rows=2,
        )
    )
    sheet = book.active
    assert sheet.title == "x" * 31
    assert sheet["A1"].font.bold
    assert sheet["A1"].font.sz == 14
    assert all(cell.font.bold for cell in sheet[2])
    assert not sheet["A3"].font.bold
    assert sheet["AD3"].value == columns - 1
    assert sheet.freeze_panes == "A3"
    assert sheet.column_dimensions["J"].width == 40
    assert sheet.column_dimensions["A"].width == 12


def test_a_sheet_of_many_rows_streams_through_in_order() -> None:
    rows = [([n, f"行 {n}"], xlsx.PLAIN) for n in range(5_000)]
    book = load_workbook(written(rows), read_only=True)
    values = list(book.active.iter_rows(values_only=True))
    assert values == [(n, f"行 {n}") for n in range(5_000)]


def test_column_letters_go_on_past_z() -> None:
    assert [xlsx.column_letter(i) for i in (0, 25, 26, 51, 52, 701, 702)] == [
        "A",
        "Z",
        "AA",
        "AZ",
        "BA",
        "ZZ",
        "AAA",
    ]
