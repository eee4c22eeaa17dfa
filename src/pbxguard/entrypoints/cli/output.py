"""Where a command's report goes: the screen, or a file named by ``--output``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pbxguard.entrypoints.render import Column, write_csv, write_json, write_xlsx
from pbxguard.errors import PbxGuardError


@contextmanager
def text_output(path: str | None) -> Iterator[IO[str]]:
    """Yield standard output, or the file ``path`` opened for UTF-8 text."""
    if path is None:
        yield sys.stdout
        return
    try:
        with Path(path).open("w", encoding="utf-8", newline="") as file:
            yield file
    except OSError as exc:
        raise PbxGuardError(
            f"无法写入 {path} — cannot write {path}: {exc.strerror or exc}"
        ) from exc


@contextmanager
def binary_output(path: Path) -> Iterator[IO[bytes]]:
    """Yield the file ``path`` opened for bytes."""
    try:
        with path.open("wb") as file:
            yield file
    except OSError as exc:
        raise PbxGuardError(
            f"无法写入 {path} — cannot write {path}: {exc.strerror or exc}"
        ) from exc


def export_report(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    args: argparse.Namespace,
    *,
    name: str,
    title: str,
    sheet_name: str,
    unit: str,
    cells: Mapping[str, Any] | None = None,
    footer: str | None = None,
) -> bool:
    """Write a report in the ``--format`` asked for; return False when it is a table to print.

    Excel goes to ``--output`` or ``<name>.xlsx``; CSV and JSON to ``--output`` or the screen,
    CSV with a byte-order mark only in a file (for Excel). A file written is reported with its
    count of ``unit`` ("条 offences").
    """
    if args.format == "xlsx":
        path = Path(args.output or f"{name}.xlsx")
        with binary_output(path) as out:
            count = write_xlsx(
                rows, columns, out, title=title, sheet_name=sheet_name, cells=cells, footer=footer
            )
        print(f"已写入 written: {path} ({count} {unit})")
        return True
    if args.format in ("csv", "json"):
        with text_output(args.output) as out:
            if args.format == "csv":
                count = write_csv(rows, columns, out, bom=args.output is not None)
            else:
                count = write_json(rows, out)
        if args.output:
            print(f"已写入 written: {args.output} ({count} {unit})")
        return True
    return False
