"""``pbxguard console`` (the console over a ledger, for auditors) and ``pbxguard user``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from pbxguard.adapters.ledger.console import UserBook
from pbxguard.adapters.passwords import Argon2Passwords
from pbxguard.app.access import NewUser, add_user, change_password, change_role, set_disabled
from pbxguard.bootstrap import build_console
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.daemon import install_stop_signals
from pbxguard.entrypoints.render import render_table
from pbxguard.entrypoints.web import ConsoleServer, create_app
from pbxguard.errors import RequestError

#: Who the ledger records as having made an account from the command line.
COMMAND_LINE = "command-line"


def cmd_console(args: argparse.Namespace) -> int:
    """Serve the console over the ledger the settings name, until SIGTERM or SIGINT."""
    context = CliContext(args.config)
    settings = context.settings.console
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port

    async def serve() -> None:
        with context.writing() as database:
            loaded = context.loaded
            console = build_console(context.settings, database, lambda: loaded, context.clock)
            server = ConsoleServer(
                create_app(console, settings),
                host=host,
                port=port,
                trusted_proxies=settings.trusted_proxies,
            )
            bound = server.bind()
            print(f"控制台 console: http://{bound[0]}:{bound[1]}/ (Ctrl-C stops it)", flush=True)
            stop = asyncio.Event()
            install_stop_signals(stop)
            task = asyncio.create_task(server.serve())
            await stop.wait()
            await server.close()
            task.cancel()

    asyncio.run(serve())
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("密码 password: ")
    if getpass.getpass("再输一次 again: ") != first:
        raise RequestError("两次密码不一致 — the passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    """Run ``pbxguard user add|list|disable|enable|passwd|role``."""
    context = CliContext(args.config)
    action = args.user_command
    now = context.now()
    with context.writing() as database:
        users = UserBook(database)
        hasher = Argon2Passwords()
        if action == "list":
            rows = [
                {
                    "username": u.username,
                    "role": u.role.value,
                    "person": u.person_id or "-",
                    "name": u.display_name or "-",
                    "state": "停用 disabled" if u.disabled else "启用 enabled",
                }
                for u in users.all()
            ]
            if not rows:
                print("没有账户 — no console accounts yet: `pbxguard user add`")
                return 0
            columns = (
                ("username", "账户", "account"),
                ("role", "角色", "role"),
                ("person", "人员", "person"),
                ("name", "姓名", "name"),
                ("state", "状态", "state"),
            )
            print(render_table(rows, columns))
            return 0
        if action == "add":
            user = add_user(
                users,
                hasher,
                context.policy,
                NewUser(
                    args.username, _password(args), args.role, args.person or "", args.name or ""
                ),
                by=COMMAND_LINE,
                now=now,
            )
            print(f"已创建账户 account created: {user.username} ({user.role.value})")
        elif action == "passwd":
            change_password(users, hasher, args.username, _password(args), by=COMMAND_LINE, now=now)
            print(f"密码已更改 password changed: {args.username}")
        elif action in ("disable", "enable"):
            set_disabled(
                users, args.username, disabled=action == "disable", by=COMMAND_LINE, now=now
            )
            print(
                f"{'已停用 disabled' if action == 'disable' else '已启用 enabled'}: {args.username}"
            )
        else:
            change_role(
                users,
                context.policy,
                args.username,
                args.role,
                person_id=args.person or "",
                by=COMMAND_LINE,
                now=now,
            )
            print(f"角色已更改 role changed: {args.username} → {args.role}")
    return 0
