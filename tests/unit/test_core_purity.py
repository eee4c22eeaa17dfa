"""The pure core (domain, protocol) does no I/O and knows nothing of the shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
FORBIDDEN = (
    "asyncio",
    "socket",
    "sqlalchemy",
    "psycopg",
    "aiomqtt",
    "structlog",
    "threading",
    "pbxguard.app",
    "pbxguard.adapters",
    "pbxguard.entrypoints",
    "pbxguard.bootstrap",
    "pbxguard.simulator",
)

_IMPORT_THE_CORE = """
import importlib, pkgutil, sys
import pbxguard.domain, pbxguard.protocol
for package in (pbxguard.domain, pbxguard.protocol):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print("\\n".join(sorted(sys.modules)))
"""


def _is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_importing_the_core_imports_no_io_or_shell_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_THE_CORE],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    modules = set(result.stdout.split())
    assert "pbxguard.domain.evaluate" in modules
    assert "pbxguard.domain.calls" in modules
    assert sorted(m for m in modules if _is_forbidden(m)) == []


def test_the_check_itself_sees_a_forbidden_import() -> None:
    """The subprocess check would notice an adapter dragged in by the core."""
    script = _IMPORT_THE_CORE.replace("import pbxguard.domain,", "import pbxguard.adapters, ")
    script = script.replace("(pbxguard.domain, pbxguard.protocol)", "(pbxguard.protocol,)")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert any(_is_forbidden(m) for m in result.stdout.split())


def test_import_linter_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout
    assert "0 broken" in result.stdout
