"""Read and write the duty rota as a CSV file an administrator can edit in a spreadsheet.

Two row shapes, told apart by the header:

- ``line,person,start,end``: dated shifts, ISO 8601 datetimes
  (``2026-10-01 08:00`` or ``2026-10-01T08:00+08:00``; without an offset the site's
  timezone applies);
- ``line,person,weekday,start,end``: weekly shifts, weekday ``1``-``7`` (1 is Monday), an
  English name (``Mon``, ``Monday``) or a Chinese one (``周一``, ``星期一``), and wall-clock
  times (``08:00``; ``24:00`` ends at midnight). In this shape a row with an empty weekday
  is a dated shift, so one file can hold both.

Headers may be Chinese (线路, 值班人, 星期, 开始, 结束). Rows are read in order and later rows
win over earlier ones (see `pbxguard.domain.rota`). Blank rows and rows whose first cell
starts with ``#`` are skipped. Files are UTF-8, with or without the byte-order mark Excel
writes; files are written with it so Excel shows Chinese names correctly.

Every problem is a `PolicyError` carrying the file, the 1-based line and what is wrong.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from pbxguard.domain.calendars import TimeWindow, Weekday
from pbxguard.domain.rota import DatedShift, Rota, WeeklyShift
from pbxguard.errors import ConfigError, PolicyError

_COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "line": ("line", "线路", "岗位", "电话", "值班电话"),
    "person": ("person", "值班人", "值班人员", "人员", "员工", "工号"),
    "weekday": ("weekday", "星期", "周几"),
    "start": ("start", "开始", "开始时间"),
    "end": ("end", "结束", "结束时间"),
}
_ALIASES = {alias.casefold(): column for column, names in _COLUMN_NAMES.items() for alias in names}

_ENGLISH_DAYS: dict[Weekday, tuple[str, ...]] = {
    Weekday.MONDAY: ("mon", "monday"),
    Weekday.TUESDAY: ("tue", "tuesday"),
    Weekday.WEDNESDAY: ("wed", "wednesday"),
    Weekday.THURSDAY: ("thu", "thursday"),
    Weekday.FRIDAY: ("fri", "friday"),
    Weekday.SATURDAY: ("sat", "saturday"),
    Weekday.SUNDAY: ("sun", "sunday"),
}
_CHINESE_DAYS: dict[Weekday, tuple[str, ...]] = {
    Weekday.MONDAY: ("一",),
    Weekday.TUESDAY: ("二",),
    Weekday.WEDNESDAY: ("三",),
    Weekday.THURSDAY: ("四",),
    Weekday.FRIDAY: ("五",),
    Weekday.SATURDAY: ("六",),
    Weekday.SUNDAY: ("日", "天"),
}
_WEEKDAY_NAMES: dict[str, Weekday] = {
    **{name: day for day, names in _ENGLISH_DAYS.items() for name in names},
    **{
        prefix + name: day
        for day, names in _CHINESE_DAYS.items()
        for name in names
        for prefix in ("周", "星期", "礼拜")
    },
}
_SHORT_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class _Rows:
    """The rows of one rota file, with their line numbers, for error messages."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.reader = csv.reader(io.StringIO(text, newline=""))

    def error(self, problem: str, line: int | None = None) -> PolicyError:
        return PolicyError(problem, path=self.path, line=line)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read the rota file: {exc.strerror}", path=str(path)) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError(
            "not UTF-8 text (save the file as 'CSV UTF-8')", path=str(path), line=line
        ) from exc


def _columns(rows: _Rows, header: Sequence[str], line: int) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = _ALIASES.get(cell.strip().casefold())
        if name is None:
            accepted = ", ".join(names[0] for names in _COLUMN_NAMES.values())
            raise rows.error(f"unknown column {cell.strip()!r}; columns are {accepted}", line)
        if name in columns:
            raise rows.error(f"column {name!r} appears twice", line)
        columns[name] = index
    missing = [c for c in ("line", "person", "start", "end") if c not in columns]
    if missing:
        raise rows.error(f"missing column(s): {', '.join(missing)}", line)
    return columns


def _parse_datetime(text: str, tz: ZoneInfo) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=tz)
    return value.astimezone(tz)


def _parse_time(text: str, *, end: bool) -> time:
    if end and text in ("24:00", "24:00:00"):
        return time(0)
    value = time.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError("a weekly shift takes wall-clock times without an offset")
    return value


def _parse_weekday(text: str) -> Weekday:
    if text.isdigit():
        number = int(text)
        if 1 <= number <= 7:
            return Weekday(number - 1)
        raise ValueError(f"weekday {text!r} is not 1-7 (1 is Monday, 7 is Sunday)")
    day = _WEEKDAY_NAMES.get(text.casefold())
    if day is None:
        raise ValueError(f"unknown weekday {text!r}; use 1-7 (1 is Monday), Mon-Sun or 周一-周日")
    return day


def load_rota(path: str | os.PathLike[str], tz: ZoneInfo) -> Rota:
    """Load a rota from a CSV file, shifts in file order.

    ``tz`` is the site's timezone: weekly shifts and datetimes without an offset use it.
    Any problem raises `PolicyError` naming the file and the line.
    """
    source = Path(path)
    rows = _Rows(str(source), _read_text(source))
    rota = Rota(tz)
    columns: dict[str, int] | None = None
    try:
        for record in rows.reader:
            line = rows.reader.line_num
            if not any(cell.strip() for cell in record) or record[0].lstrip().startswith("#"):
                continue
            if columns is None:
                columns = _columns(rows, record, line)
                continue
            if len(record) != len(columns):
                raise rows.error(f"expected {len(columns)} fields, found {len(record)}", line)
            cells = {name: record[index].strip() for name, index in columns.items()}
            rota = rota.with_shift(_shift(rows, cells, tz, line))
    except csv.Error as exc:
        raise rows.error(f"malformed CSV: {exc}", rows.reader.line_num) from exc
    if columns is None:
        raise rows.error("the file is empty: expected a header such as line,person,start,end", 1)
    return rota


def _shift(rows: _Rows, cells: dict[str, str], tz: ZoneInfo, line: int) -> DatedShift | WeeklyShift:
    for name in ("line", "person", "start", "end"):
        if not cells[name]:
            raise rows.error(f"{name} is empty", line)
    weekday = cells.get("weekday", "")
    try:
        if weekday:
            what = "weekday"
            day = _parse_weekday(weekday)
            what = "start time"
            start = _parse_time(cells["start"], end=False)
            what = "end time"
            end = _parse_time(cells["end"], end=True)
            return WeeklyShift(cells["line"], cells["person"], day, TimeWindow(start, end))
        what = "start"
        start_at = _parse_datetime(cells["start"], tz)
        what = "end"
        end_at = _parse_datetime(cells["end"], tz)
        what = "shift"
        return DatedShift(cells["line"], cells["person"], start_at, end_at)
    except ValueError as exc:
        raise rows.error(f"bad {what}: {exc}", line) from exc
    except ConfigError as exc:
        raise rows.error(str(exc), line) from exc


def _format_datetime(value: datetime, tz: ZoneInfo) -> str:
    local = value.astimezone(tz)
    spec = "minutes" if local.second == 0 and local.microsecond == 0 else "auto"
    return local.isoformat(timespec=spec)


def _format_time(value: time) -> str:
    spec = "minutes" if value.second == 0 and value.microsecond == 0 else "auto"
    return value.isoformat(timespec=spec)


def rota_to_csv(rota: Rota) -> str:
    """Render a rota as CSV text in the shape `load_rota` reads."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    if rota.weekly:
        writer.writerow(("line", "person", "weekday", "start", "end"))
        for w in rota.weekly:
            writer.writerow(
                (
                    w.line,
                    w.person,
                    _SHORT_NAMES[w.weekday],
                    _format_time(w.window.start),
                    _format_time(w.window.end),
                )
            )
        for d in rota.dated:
            writer.writerow(
                (
                    d.line,
                    d.person,
                    "",
                    _format_datetime(d.start, rota.tz),
                    _format_datetime(d.end, rota.tz),
                )
            )
    else:
        writer.writerow(("line", "person", "start", "end"))
        for d in rota.dated:
            writer.writerow(
                (
                    d.line,
                    d.person,
                    _format_datetime(d.start, rota.tz),
                    _format_datetime(d.end, rota.tz),
                )
            )
    return out.getvalue()


def save_rota(rota: Rota, path: str | os.PathLike[str]) -> None:
    """Write a rota to a CSV file, replacing it in one step (`ConfigError` if it cannot)."""
    target = Path(path)
    data = rota_to_csv(rota).encode("utf-8-sig")
    try:
        # Write beside the target and rename, so a reader never sees half a rota.
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as temp:
                temp.write(data)
                if target.exists():
                    os.fchmod(temp.fileno(), target.stat().st_mode & 0o7777)
            Path(temp_name).replace(target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write the rota: {exc.strerror or exc}") from exc


class RotaFile:
    """The rota CSV file the policy names, read and written whole (atomically)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        """The file."""
        return self._path

    def load(self, timezone: ZoneInfo) -> Rota:
        """Read the rota; a file not created yet is an empty rota."""
        if not self._path.exists():
            return Rota(timezone)
        return load_rota(self._path, timezone)

    def save(self, rota: Rota) -> None:
        """Write the rota."""
        save_rota(rota, self._path)
