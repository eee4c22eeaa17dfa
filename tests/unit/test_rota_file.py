"""The rota CSV file: both shapes, Chinese headers, round trips, errors with line numbers."""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.rota_file import load_rota, rota_to_csv, save_rota
from pbxguard.domain.calendars import TimeWindow, Weekday
from pbxguard.domain.rota import DatedShift, Rota, WeeklyShift
from pbxguard.errors import ConfigError, PolicyError

SHANGHAI = ZoneInfo("Asia/Shanghai")


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def write(tmp_path: Path, text: str, name: str = "rota.csv", *, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8-sig" if bom else "utf-8"))
    return path


def test_dated_shifts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "line,person,start,end\n"
        "hotline,zhao,2026-10-01 22:00,2026-10-02 06:00\n"
        "hotline,qian,2026-10-02T06:00+08:00,2026-10-01T23:00Z\n",
    )
    rota = load_rota(path, SHANGHAI)
    assert rota.dated == (
        DatedShift("hotline", "zhao", sh(2026, 10, 1, 22), sh(2026, 10, 2, 6)),
        DatedShift("hotline", "qian", sh(2026, 10, 2, 6), sh(2026, 10, 2, 7)),
    )
    assert rota.on_duty("hotline", sh(2026, 10, 2, 3)) == "zhao"
    assert rota.dated[0].start.tzinfo is SHANGHAI


def test_weekly_shifts_with_chinese_headers_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "线路,值班人,星期,开始,结束\n"
        "guard_room,wang,周一,08:00,20:00\n"
        "guard_room,li,星期一,20:00,08:00\n"
        "guard_room,li,7,08:00,24:00\n"
        "guard_room,sun,Sat,08:00:00,08:00\n",
        bom=True,
    )
    rota = load_rota(path, SHANGHAI)
    assert rota.weekly == (
        WeeklyShift("guard_room", "wang", Weekday.MONDAY, TimeWindow(time(8), time(20))),
        WeeklyShift("guard_room", "li", Weekday.MONDAY, TimeWindow(time(20), time(8))),
        WeeklyShift("guard_room", "li", Weekday.SUNDAY, TimeWindow(time(8), time(0))),
        WeeklyShift("guard_room", "sun", Weekday.SATURDAY, TimeWindow(time(8), time(8))),
    )
    # Monday 23 November 2026, night shift into Tuesday.
    assert rota.on_duty("guard_room", sh(2026, 11, 24, 7)) == "li"


def test_one_file_holds_both_shapes_and_later_rows_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "line,person,weekday,start,end\n"
        "# the usual pattern\n"
        "guard_room,wang,Mon,08:00,20:00\n"
        "\n"
        "guard_room,chen,,2026-11-23 12:00,2026-11-23 14:00\n"
        "guard_room,zhou,,2026-11-23 13:00,2026-11-23 14:00\n",
    )
    rota = load_rota(path, SHANGHAI)
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 9)) == "wang"
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 12)) == "chen"
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 13)) == "zhou"


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    rota = (
        Rota(SHANGHAI)
        .with_shift(
            WeeklyShift("guard_room", "王伟", Weekday.SUNDAY, TimeWindow(time(20), time(8)))
        )
        .with_shift(
            WeeklyShift("hotline", "li", Weekday.FRIDAY, TimeWindow(time(8, 30, 15), time(0)))
        )
        .with_shift(DatedShift("hotline", "zhao", sh(2026, 10, 1, 22), sh(2026, 10, 2, 6)))
    )
    path = tmp_path / "rota.csv"
    save_rota(rota, path)
    assert load_rota(path, SHANGHAI) == rota
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert "2026-10-01T22:00+08:00" in rota_to_csv(rota)
    dated_only = Rota(SHANGHAI, rota.dated)
    save_rota(dated_only, path)
    assert path.read_text(encoding="utf-8-sig").splitlines()[0] == "line,person,start,end"
    assert load_rota(path, SHANGHAI) == dated_only
    assert [p.name for p in tmp_path.iterdir()] == ["rota.csv"]


def test_save_keeps_the_file_mode(tmp_path: Path) -> None:
    path = write(tmp_path, "line,person,start,end\n")
    path.chmod(0o640)
    save_rota(Rota(SHANGHAI), path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_save_into_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        save_rota(Rota(SHANGHAI), tmp_path / "missing" / "rota.csv")


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("", 1, "empty"),
        ("line,person,begin,end\n", 1, "unknown column 'begin'"),
        ("line,person,start\n", 1, "missing column"),
        ("line,person,start,end,start\n", 1, "appears twice"),
        ("line,person,start,end\nhotline,a,2026-10-01 08:00\n", 2, "expected 4 fields"),
        (
            "line,person,start,end\nhotline,a,2026-10-01 08:00,2026-10-01 09:00\n"
            "hotline,b,2026-10-32 08:00,2026-11-01 09:00\n",
            3,
            "bad start",
        ),
        (
            "line,person,start,end\n#comment\n\nhotline,a,2026-10-01 08:00,2026-10-01 07:00\n",
            4,
            "before it starts",
        ),
        ("line,person,start,end\nhotline,,2026-10-01 08:00,2026-10-01 09:00\n", 2, "person"),
        ("line,person,weekday,start,end\nhotline,a,0,08:00,09:00\n", 2, "1-7"),
        ("line,person,weekday,start,end\nhotline,a,Funday,08:00,09:00\n", 2, "Funday"),
        ("line,person,weekday,start,end\nhotline,a,Mon,8am,09:00\n", 2, "bad start time"),
        ("line,person,weekday,start,end\nhotline,a,Mon,08:00,24:30\n", 2, "bad end time"),
        ("line,person,weekday,start,end\nhotline,a,Mon,08:00+08:00,09:00\n", 2, "offset"),
        ("line,person,start,end\nhot line,a,2026-10-01 08:00,2026-10-01 09:00\n", 2, "line"),
        ('line,person,start,end\n"hotline,a,2026-10-01 08:00,2026-10-01 09:00\n', 2, "fields"),
    ],
)
def test_errors_name_the_file_and_the_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_rota(path, SHANGHAI)
    assert caught.value.path == str(path)
    assert caught.value.line == line
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rota.csv"
    path.write_bytes("line,person,start,end\nhotline,张伟,x,y\n".encode("gbk"))
    with pytest.raises(PolicyError, match="UTF-8") as caught:
        load_rota(path, SHANGHAI)
    assert caught.value.line == 2


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read") as caught:
        load_rota(tmp_path / "nope.csv", SHANGHAI)
    assert caught.value.path == str(tmp_path / "nope.csv")
