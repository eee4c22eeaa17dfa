"""The ``pbxguard`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pbxguard import __version__
from pbxguard.adapters.clock import SystemClock
from pbxguard.adapters.logs import configure_logging
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import Settings, load_settings
from pbxguard.domain.evaluate import CallAttempt, evaluate
from pbxguard.errors import ConfigError, PbxGuardError, PolicyError
from pbxguard.verdicts import decision_as_dict, decision_as_text

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbxguard",
        description="电话管理制度执行守护 — enforce telephone regulations on live Asterisk calls.",
    )
    parser.add_argument("--version", action="version", version=f"pbxguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the guard beside a PBX (the daemon)")
    run.add_argument("--config", help="settings file (TOML); PBXGUARD_* variables override it")

    check = sub.add_parser("check", help="show the verdict the guard would give for one call")
    check.add_argument("--from", dest="extension", required=True, metavar="EXT")
    check.add_argument("number", metavar="NUMBER")
    check.add_argument("--at", help="ISO time of the call (site time if no offset; default now)")
    check.add_argument("--config", help="settings file naming the site policy")
    check.add_argument("--policy", help="policy file (overrides the one in --config)")
    check.add_argument("--json", action="store_true", help="print JSON for scripts")

    ledger = sub.add_parser("ledger", help="list offences in the fine ledger")
    ledger.add_argument("--config")
    ledger.add_argument("--person")
    ledger.add_argument("--department")
    ledger.add_argument("--month", help="YYYY-MM, in the site's timezone")
    ledger.add_argument("--rule")
    ledger.add_argument("--format", choices=["table", "csv", "json"], default="table")

    policy = sub.add_parser("policy", help="policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    validate = policy_sub.add_parser("validate", help="check a policy file and say what is wrong")
    validate.add_argument("file")

    demo = sub.add_parser("demo", help="a first look: a simulated PBX plays a working day")
    demo.add_argument("--speed", type=float, default=40.0, help="replay speed (0: no pauses)")
    demo.add_argument("--mode", choices=["enforce", "monitor"], default="enforce")
    demo.add_argument("--ledger", help="ledger database URL (default: a new SQLite file)")
    demo.add_argument("--json-logs", action="store_true", help="show the guard's logs as JSON")
    return parser


def _policy_for(settings: Settings | None, explicit: str | None) -> LoadedPolicy:
    path = explicit or (settings.policy if settings else None)
    return load_policy(path)


def _parse_at(text: str | None, loaded: LoadedPolicy) -> datetime:
    if text is None:
        return SystemClock().now()
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--at {text!r} is not an ISO date-time (2026-11-23T09:30)") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=loaded.policy.timezone)
    return at


def cmd_check(args: argparse.Namespace) -> int:
    """Print the verdict for one call; exit 0 when allowed, 1 when not."""
    settings = load_settings(args.config) if args.config else None
    loaded = _policy_for(settings, args.policy)
    at = _parse_at(args.at, loaded)
    decision = evaluate(CallAttempt(args.extension, args.number), loaded.policy, now=at)
    if args.json:
        data = decision_as_dict(decision, loaded.policy)
        data["at"] = at.isoformat()
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(decision_as_text(decision, loaded.policy))
    return EXIT_OK if decision.allowed else EXIT_DENIED


def cmd_policy_validate(args: argparse.Namespace) -> int:
    """Validate a policy file and summarise it."""
    loaded = load_policy(Path(args.file))
    policy = loaded.policy
    print(f"OK 有效: {args.file}")
    print(f"  site {policy.site} · {policy.timezone.key} · mode {policy.mode.value}")
    print(
        f"  {len(policy.rules)} rules, {len(policy.roles)} roles, {len(policy.people)} people, "
        f"{len(policy.lines)} lines · version {policy.version}"
    )
    print(f"  sources: {', '.join(loaded.sources)}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    configure_logging(json=getattr(args, "json_logs", None) or None)
    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command == "policy":
            return cmd_policy_validate(args)
        from pbxguard.app import commands

        if args.command == "run":
            return asyncio.run(commands.run(args))
        if args.command == "demo":
            return asyncio.run(commands.demo(args))
        if args.command == "ledger":
            return asyncio.run(commands.ledger(args))
    except PolicyError as exc:
        print(f"策略文件无效 invalid policy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"配置错误 configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PbxGuardError as exc:
        print(f"错误 error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
