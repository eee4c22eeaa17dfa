"""The ``pbxguard`` command: parse, run one command, turn errors into one line and a status.

Exit statuses: 0 done (or the call is allowed, for ``check``), 1 the call is not allowed (or
the ledger's chain is broken, for ``ledger verify``), 2 a usage error, 3 anything pbxguard
refused (a configuration or start-up problem, or a request the regulations or the data do not
allow; the message says which), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from pbxguard.adapters.logs import configure_logging
from pbxguard.entrypoints.cli.parser import build_parser
from pbxguard.errors import ConfigError, PbxGuardError, PolicyError, RequestError

EXIT_USAGE = 2
EXIT_CONFIG = 3


#: command -> (module, function). A command's module is imported only when it runs: `check`
#: must start quickly, without the ledger's database stack.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("pbxguard.entrypoints.cli.init", "cmd_init"),
    "run": ("pbxguard.entrypoints.cli.run", "cmd_run"),
    "check": ("pbxguard.entrypoints.cli.check", "cmd_check"),
    "policy": ("pbxguard.entrypoints.cli.check", "cmd_policy_validate"),
    "ledger": ("pbxguard.entrypoints.cli.ledger", "cmd_ledger"),
    "approve": ("pbxguard.entrypoints.cli.approvals", "cmd_approve"),
    "code": ("pbxguard.entrypoints.cli.approvals", "cmd_code"),
    "lock": ("pbxguard.entrypoints.cli.locks", "cmd_lock"),
    "register": ("pbxguard.entrypoints.cli.register", "cmd_register"),
    "rota": ("pbxguard.entrypoints.cli.rota", "cmd_rota"),
    "console": ("pbxguard.entrypoints.cli.console", "cmd_console"),
    "user": ("pbxguard.entrypoints.cli.console", "cmd_user"),
    "dnd": ("pbxguard.entrypoints.cli.dnd", "cmd_dnd"),
    "quota": ("pbxguard.entrypoints.cli.quota", "cmd_quota"),
    "replay": ("pbxguard.entrypoints.cli.replay", "cmd_replay"),
}


def _dispatch(args: argparse.Namespace) -> int:
    command = getattr(args, "command", None)
    if command == "demo":
        from pbxguard.entrypoints.demo import demo  # noqa: PLC0415 - imported when it runs

        return asyncio.run(demo(args))
    if command not in COMMANDS:
        return EXIT_USAGE
    module, function = COMMANDS[command]
    run: Callable[[argparse.Namespace], int] = getattr(import_module(module), function)
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(json=getattr(args, "json_logs", None) or None)
    try:
        return _dispatch(args)
    except PolicyError as exc:
        print(f"策略文件无效 invalid policy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"配置错误 configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RequestError as exc:
        print(f"请求被拒绝 refused: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PbxGuardError as exc:
        print(f"错误 error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
