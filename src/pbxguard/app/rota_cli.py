"""``pbxguard rota``: who is on duty on the shared lines, and changing it.

The rota lives in the CSV file the policy names (``[rota] file = "rota.csv"``); this command
reads and rewrites that file (atomically). A running daemon notices the change and reloads
its policy within seconds.
"""

from __future__ import annotations

import argparse
from datetime import datetime, time, timedelta

from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.rota_file import load_rota, save_rota
from pbxguard.adapters.settings import load_settings
from pbxguard.app.reports import render_table
from pbxguard.domain.calendars import TimeWindow, Weekday
from pbxguard.domain.rota import DatedShift, Rota, Shift, WeeklyShift
from pbxguard.errors import ConfigError


def _loaded(args: argparse.Namespace) -> LoadedPolicy:
    settings = load_settings(args.config) if args.config else None
    return load_policy(
        args.policy or (settings.policy if settings else None), rota_may_be_missing=True
    )


def _at(text: str | None, loaded: LoadedPolicy) -> datetime:
    tz = loaded.policy.timezone
    if text is None:
        return datetime.now(tz)
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not an ISO date-time (2026-11-23T08:00)") from exc
    return value if value.tzinfo else value.replace(tzinfo=tz)


def _hours(text: str) -> TimeWindow:
    try:
        start, end = text.split("-")
        first = time.fromisoformat(start)
        last = time(0, 0) if end == "24:00" else time.fromisoformat(end)
    except ValueError as exc:
        raise ConfigError(f"--hours {text!r} is not HH:MM-HH:MM") from exc
    return TimeWindow(first, last)


def _shift(args: argparse.Namespace, loaded: LoadedPolicy) -> Shift:
    if args.person not in loaded.policy.people:
        raise ConfigError(f"no person {args.person!r} in the policy's directory")
    if args.weekday is not None:
        if args.hours is None:
            raise ConfigError("a weekly shift needs --hours HH:MM-HH:MM")
        return WeeklyShift(args.line, args.person, Weekday(args.weekday - 1), _hours(args.hours))
    if args.start is None or args.end is None:
        raise ConfigError("a dated shift needs --start and --end (or --weekday and --hours)")
    return DatedShift(args.line, args.person, _at(args.start, loaded), _at(args.end, loaded))


def _editable(loaded: LoadedPolicy) -> Rota:
    if loaded.rota_file is None:
        raise ConfigError(
            'the policy keeps no rota file: add [rota] file = "rota.csv" to the policy '
            "to manage the rota from the command line"
        )
    if not loaded.rota_file.exists():
        return Rota(loaded.policy.timezone)
    return load_rota(loaded.rota_file, loaded.policy.timezone)


def cmd_rota(args: argparse.Namespace) -> int:
    """Show or change the rota."""
    loaded = _loaded(args)
    if args.rota_command == "show":
        return _show(args, loaded)
    rota = _editable(loaded)
    shift = _shift(args, loaded)
    if args.rota_command == "add":
        rota = rota.with_shift(shift)
        verb = "已添加 added"
    else:
        rota = rota.without_shift(shift)
        verb = "已删除 removed"
    assert loaded.rota_file is not None
    save_rota(rota, loaded.rota_file)
    print(f"{verb}: {shift.line} {shift.person} → {loaded.rota_file}")
    return 0


def _show(args: argparse.Namespace, loaded: LoadedPolicy) -> int:
    policy = loaded.policy
    rota = policy.rota or Rota(policy.timezone)
    day = _at(args.date, loaded).date() if args.date else datetime.now(policy.timezone).date()
    start = datetime.combine(day, time(0, 0), tzinfo=policy.timezone)
    end = start + timedelta(days=1)
    lines = [args.line] if args.line else list(rota.lines)
    rows = []
    for line in lines:
        for period in rota.timeline(line, start, end):
            person = policy.people.get(period.person or "")
            rows.append(
                {
                    "line": line,
                    "start": period.start.astimezone(policy.timezone).strftime("%H:%M"),
                    "end": period.end.astimezone(policy.timezone).strftime("%H:%M"),
                    "person": person.name if person else (period.person or "无人 nobody"),
                }
            )
    print(f"值班表 duty rota · {day.isoformat()}")
    if not rows:
        print("没有排班 — no shifts.")
        return 0
    print(
        render_table(
            rows,
            (
                ("line", "线路", "line"),
                ("start", "开始", "from"),
                ("end", "结束", "to"),
                ("person", "值班人", "on duty"),
            ),
        )
    )
    return 0
