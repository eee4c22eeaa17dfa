"""Suite-wide settings: Hypothesis profiles, and logging left as each test found it.

The property tests and fuzzers run with the ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names
another one: a fixed budget of examples per test and no per-example deadline (the machines that
run the suite are shared, and a slow example is not a failure). ``bench/fuzz_long.py`` runs the
fuzzers with a much larger budget.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    print_blob=True,
    # Generating inputs slows down with the machine's load; that says nothing about the code.
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", parent=settings.get_profile("ci"), max_examples=20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo a `configure_logging` by a command run in-process, for the tests that follow.

    `pbxguard.entrypoints.cli.main` configures structlog for the process (a level filter, a
    renderer), as it must for a user; a test that runs it must not change what later tests'
    log captures see.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
