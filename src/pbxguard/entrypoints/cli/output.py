"""Where a command's report goes: the screen, or a file named by ``--output``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

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
