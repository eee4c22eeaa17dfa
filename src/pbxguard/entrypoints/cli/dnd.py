"""``pbxguard dnd``: import the site's do-not-disturb list, see which one is in force, look up."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pbxguard.adapters.dnd_file import DndStore, ImportReport
from pbxguard.domain.dnd import dnd_number
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.errors import ConfigError, RequestError

EXIT_NOT_LISTED = 1


def cmd_dnd(args: argparse.Namespace) -> int:
    """Run ``pbxguard dnd import|status|lookup``."""
    context = CliContext(args.config)
    store = DndStore(context.settings.dnd_path)
    if args.dnd_command == "import":
        return _import(context, store, args)
    if args.dnd_command == "lookup":
        return _lookup(context, store, args.number)
    return _status(store)


def _import(context: CliContext, store: DndStore, args: argparse.Namespace) -> int:
    source = Path(args.file)
    started = time.perf_counter()
    try:
        with source.open(encoding="utf-8-sig", errors="strict", newline="") as lines:
            report = store.import_lines(
                lines,
                context.policy.classifier,
                skip_invalid=args.skip_invalid,
                now=context.now(),
            )
    except FileNotFoundError as error:
        raise ConfigError(f"{source}: 文件不存在 file not found") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{source}: 不是 UTF-8 文本 not UTF-8 text ({error.reason})") from error
    except OSError as error:
        raise ConfigError(f"{source}: 无法读取 cannot read: {error.strerror or error}") from error
    seconds = time.perf_counter() - started
    if report.info is None:
        _print_problems(source, report)
        raise RequestError(
            f"{source}: {report.invalid} 行不是可列入的号码 lines hold no number that can be "
            "listed; nothing was changed (fix them, or use --skip-invalid)"
        )
    if report.invalid:
        _print_problems(source, report)
    info = report.info
    print(
        f"已导入并启用 imported and in force: {info.name}\n"
        f"  {report.lines} 行 lines, {report.numbers} 个号码 numbers, "
        f"{info.count} 个不重复 unique, {report.invalid} 行跳过 skipped · {seconds:.1f} s"
    )
    print(f"  SHA-256 {info.digest}")
    print("  运行中的 pbxguard 将在几秒内启用 — a running pbxguard takes it up within seconds")
    return 0


def _print_problems(source: Path, report: ImportReport) -> None:
    for line, text, why in report.problems:
        print(f"{source}:{line}: {text!r}: {why}", file=sys.stderr)
    more = report.invalid - len(report.problems)
    if more > 0:
        print(f"… 另有 {more} 行 and {more} more lines", file=sys.stderr)


def _status(store: DndStore) -> int:
    numbers = store.open_current()
    if numbers is None:
        print(f"没有免打扰名单 — no do-not-disturb list in {store.directory}")
        return 0
    try:
        info = numbers.info
        print(f"免打扰名单 do-not-disturb list in force: {info.name}")
        print(f"  {info.count} 个号码 numbers · {info.size} bytes · {store.directory}")
        print(f"  生成于 built {info.built_at.isoformat()} · SHA-256 {info.digest}")
    finally:
        numbers.close()
    return 0


def _lookup(context: CliContext, store: DndStore, number: str) -> int:
    policy = context.policy
    found = policy.classifier.classify(number, with_access_code=False)
    canonical = dnd_number(found, policy.plan)
    if canonical is None:
        raise RequestError(
            f"{number!r} 不是可列入名单的号码 — not a number a list can hold "
            f"({found.number_class.value}: {found.reason})"
        )
    numbers = store.open_current()
    listed = numbers is not None and canonical in numbers
    if numbers is not None:
        numbers.close()
    if listed:
        print(f"{canonical}: 在免打扰名单中 on the do-not-disturb list")
        return 0
    print(f"{canonical}: 不在名单中 not on the list")
    return EXIT_NOT_LISTED
