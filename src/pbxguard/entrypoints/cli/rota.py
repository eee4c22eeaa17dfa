"""``pbxguard rota``: who is on duty on the shared lines, and changing it."""

from __future__ import annotations

import argparse
from datetime import time

from pbxguard.adapters.rota_file import RotaFile
from pbxguard.app.rota import change_rota, day_of_duty
from pbxguard.domain.calendars import TimeWindow, Weekday
from pbxguard.domain.rota import DatedShift, Shift, WeeklyShift
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.render import render_table
from pbxguard.errors import ConfigError


def _hours(text: str) -> TimeWindow:
    try:
        start, end = text.split("-")
        first = time.fromisoformat(start)
        last = time(0, 0) if end == "24:00" else time.fromisoformat(end)
    except ValueError as exc:
        raise ConfigError(f"--hours {text!r} is not HH:MM-HH:MM") from exc
    return TimeWindow(first, last)


def _shift(args: argparse.Namespace, context: CliContext) -> Shift:
    if args.weekday is not None:
        if args.hours is None:
            raise ConfigError("a weekly shift needs --hours HH:MM-HH:MM")
        return WeeklyShift(args.line, args.person, Weekday(args.weekday - 1), _hours(args.hours))
    if args.start is None or args.end is None:
        raise ConfigError("a dated shift needs --start and --end (or --weekday and --hours)")
    return DatedShift(
        args.line,
        args.person,
        context.parse_time(args.start, "--start"),
        context.parse_time(args.end, "--end"),
    )


def cmd_rota(args: argparse.Namespace) -> int:
    """Show or change the rota."""
    context = CliContext(args.config, policy_file=args.policy, rota_may_be_missing=True)
    loaded = context.loaded
    if args.rota_command == "show":
        return _show(context, args)
    store = RotaFile(loaded.rota_file) if loaded.rota_file is not None else None
    shift = _shift(args, context)
    change_rota(store, loaded.policy, shift, add=args.rota_command == "add")
    verb = "已添加 added" if args.rota_command == "add" else "已删除 removed"
    print(f"{verb}: {shift.line} {shift.person} → {loaded.rota_file}")
    return 0


def _show(context: CliContext, args: argparse.Namespace) -> int:
    zone = context.zone
    day = (
        (context.parse_time(args.date, "--date") if args.date else context.now())
        .astimezone(zone)
        .date()
    )
    slots = day_of_duty(context.policy, day, line=args.line)
    print(f"值班表 duty rota · {day.isoformat()}")
    if not slots:
        print("没有排班 — no shifts.")
        return 0
    rows = [
        {
            "line": slot.line,
            "start": slot.start.astimezone(zone).strftime("%H:%M"),
            "end": slot.end.astimezone(zone).strftime("%H:%M"),
            "person": slot.person_name or slot.person_id or "无人 nobody",
        }
        for slot in slots
    ]
    columns = (
        ("line", "线路", "line"),
        ("start", "开始", "from"),
        ("end", "结束", "to"),
        ("person", "值班人", "on duty"),
    )
    print(render_table(rows, columns))
    return 0
