"""Print the fault runs' figures at the end of the session, passed or failed."""

from __future__ import annotations

import pytest

from tests.faults.harness import REPORTS, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what was injected and how the three promises held, one column per run."""
    if not REPORTS:
        return
    terminalreporter.section("faults injected and the three promises")
    for line in table(REPORTS):
        terminalreporter.write_line(line)
