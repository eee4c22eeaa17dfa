"""The ``pbxguard`` command: parse, run one command, turn errors into one line and a status.

Exit statuses: 0 done (or the call is allowed, for ``check``), 1 the call is not allowed (or
the ledger's chain is broken, for ``ledger verify``), 2 a usage error, 3 anything pbxguard
refused (a configuration or start-up problem, or a request the regulations or the data do not
allow; the message says which), 130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from pbxguard.adapters.logs import configure_logging
from pbxguard.entrypoints.cli.parser import build_parser
from pbxguard.errors import ConfigError, PbxGuardError, PolicyError, RequestError

EXIT_USAGE = 2
EXIT_CONFIG = 3


def _dispatch(args: object) -> int:
    # Imported per command: `check` must start quickly, without the ledger's database stack.
    command = getattr(args, "command", None)
    if command == "check":
        from pbxguard.entrypoints.cli.check import cmd_check  # noqa: PLC0415

        return cmd_check(args)  # type: ignore[arg-type]
    if command == "policy":
        from pbxguard.entrypoints.cli.check import cmd_policy_validate  # noqa: PLC0415

        return cmd_policy_validate(args)  # type: ignore[arg-type]
    if command == "rota":
        from pbxguard.entrypoints.cli.rota import cmd_rota  # noqa: PLC0415

        return cmd_rota(args)  # type: ignore[arg-type]
    if command == "ledger":
        from pbxguard.entrypoints.cli.ledger import cmd_ledger  # noqa: PLC0415

        return cmd_ledger(args)  # type: ignore[arg-type]
    if command in ("approve", "code"):
        from pbxguard.entrypoints.cli.approvals import cmd_approve, cmd_code  # noqa: PLC0415

        return (cmd_approve if command == "approve" else cmd_code)(args)  # type: ignore[arg-type]
    if command == "lock":
        from pbxguard.entrypoints.cli.locks import cmd_lock  # noqa: PLC0415

        return cmd_lock(args)  # type: ignore[arg-type]
    if command == "register":
        from pbxguard.entrypoints.cli.register import cmd_register  # noqa: PLC0415

        return cmd_register(args)  # type: ignore[arg-type]
    if command == "init":
        from pbxguard.entrypoints.cli.init import cmd_init  # noqa: PLC0415

        return cmd_init(args)  # type: ignore[arg-type]
    if command in ("console", "user"):
        from pbxguard.entrypoints.cli.console import cmd_console, cmd_user  # noqa: PLC0415

        return (cmd_console if command == "console" else cmd_user)(args)  # type: ignore[arg-type]
    if command == "dnd":
        from pbxguard.entrypoints.cli.dnd import cmd_dnd  # noqa: PLC0415

        return cmd_dnd(args)  # type: ignore[arg-type]
    if command == "quota":
        from pbxguard.entrypoints.cli.quota import cmd_quota  # noqa: PLC0415

        return cmd_quota(args)  # type: ignore[arg-type]
    if command == "replay":
        from pbxguard.entrypoints.cli.replay import cmd_replay  # noqa: PLC0415

        return cmd_replay(args)  # type: ignore[arg-type]
    if command == "run":
        from pbxguard.entrypoints.cli.run import cmd_run  # noqa: PLC0415

        return cmd_run(args)  # type: ignore[arg-type]
    if command == "demo":
        from pbxguard.entrypoints.demo import demo  # noqa: PLC0415

        return asyncio.run(demo(args))  # type: ignore[arg-type]
    return EXIT_USAGE


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
