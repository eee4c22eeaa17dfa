"""The command line's grammar: every command, option and help text (and nothing else)."""

from __future__ import annotations

import argparse
from typing import Any

from pbxguard import __version__
from pbxguard.domain.numbers import LONG_DISTANCE_CLASSES

APPROVABLE_CLASSES = tuple(sorted(c.value for c in LONG_DISTANCE_CLASSES))
EXPORT_FORMATS = ("table", "csv", "json", "xlsx")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``pbxguard`` command."""
    parser = argparse.ArgumentParser(
        prog="pbxguard",
        description="电话管理制度执行守护 — enforce telephone regulations on live Asterisk calls.",
    )
    parser.add_argument("--version", action="version", version=f"pbxguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser(
        "init",
        help="write the files a new site needs (settings, policy, rota) into a directory",
        description="新站点初始化 — write pbxguard.toml, site-policy.toml and rota.csv into DIR, "
        "ready to adapt (the same files as examples/site/ in the source).",
    )
    init.add_argument("directory", metavar="DIR", help="where to write them (created if needed)")
    init.add_argument("--site", help="the site's name (default: example)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")

    run = sub.add_parser("run", help="run the guard beside a PBX (the daemon)")
    run.add_argument("--config", help="settings file (TOML); PBXGUARD_* variables override it")

    check = sub.add_parser("check", help="show the verdict the guard would give for one call")
    check.add_argument("--from", dest="extension", required=True, metavar="EXT")
    check.add_argument("number", metavar="NUMBER")
    check.add_argument("--at", help="ISO time of the call (site time if no offset; default now)")
    check.add_argument("--config", help="settings file naming the site policy")
    check.add_argument("--policy", help="policy file (overrides the one in --config)")
    check.add_argument("--json", action="store_true", help="print JSON for scripts")

    _add_ledger(sub)

    _add_approve(sub)
    _add_code(sub)
    _add_register(sub)
    _add_rota(sub)
    _add_console(sub)
    _add_dnd(sub)
    _add_quota(sub)
    _add_replay(sub)
    _add_lock(sub)

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


def _add_approve(sub: Any) -> None:
    approve = sub.add_parser("approve", help="prior approvals for long-distance calls (LD-1, LD-5)")
    actions = approve.add_subparsers(dest="approve_command", required=True, metavar="ACTION")
    grant = actions.add_parser(
        "grant",
        help="let a person dial a class or prefix within a window",
        description="Times without an offset are in the site's timezone.",
    )
    grant.add_argument("--person", required=True, metavar="P", help="who may dial (person id)")
    grant.add_argument("--by", required=True, metavar="APPROVER", help="the approver's person id")
    scope = grant.add_mutually_exclusive_group(required=True)
    scope.add_argument("--class", dest="number_class", choices=APPROVABLE_CLASSES)
    scope.add_argument("--prefix", metavar="DIGITS", help="a number prefix (00852, 010, +44)")
    grant.add_argument("--from", dest="valid_from", required=True, metavar="ISO")
    grant.add_argument("--until", dest="valid_until", required=True, metavar="ISO")
    grant.add_argument("--calls", type=int, metavar="N", help="how many calls (default: any)")
    grant.add_argument(
        "--reason", default="", metavar="TEXT", help="联络事项: what the calls are for"
    )
    grant.add_argument("--config", help="settings file naming the ledger and the policy")
    listing = actions.add_parser("list", help="list approvals and where they stand")
    listing.add_argument("--person", metavar="P")
    listing.add_argument(
        "--all", action="store_true", help="include expired, used-up and revoked approvals"
    )
    listing.add_argument("--config")
    revoke = actions.add_parser("revoke", help="withdraw an approval")
    revoke.add_argument("id", metavar="ID")
    revoke.add_argument("--by", required=True, metavar="APPROVER")
    revoke.add_argument("--reason", required=True, metavar="TEXT")
    revoke.add_argument("--config")


def _add_code(sub: Any) -> None:
    code = sub.add_parser("code", help="authorization codes callers type at the phone")
    actions = code.add_subparsers(dest="code_command", required=True, metavar="ACTION")
    issue = actions.add_parser(
        "issue",
        help="issue a code; a generated one is printed once",
        description="Only a hash of the code is stored; a generated code is shown once.",
    )
    issue.add_argument("--person", required=True, metavar="P", help="the code's owner")
    issue.add_argument("--one-time", action="store_true", help="the code works for one call")
    issue.add_argument("--expires", metavar="ISO", help="when it stops working (site time)")
    issue.add_argument("--by", required=True, metavar="WHO", help="who issues it")
    issue.add_argument("--code", metavar="DIGITS", help="use these digits instead of random ones")
    issue.add_argument("--config")
    listing = actions.add_parser("list", help="list the codes issued (never their digits)")
    listing.add_argument("--person", metavar="P")
    listing.add_argument("--config")
    revoke = actions.add_parser("revoke", help="withdraw a code at once")
    revoke.add_argument("id", type=int, metavar="ID", help="the code's 编号 in `code list`")
    revoke.add_argument("--by", required=True, metavar="WHO")
    revoke.add_argument("--reason", required=True, metavar="TEXT")
    revoke.add_argument("--config")


def _add_register(sub: Any) -> None:
    register = sub.add_parser(
        "register",
        help="the long-distance register (长话登记表, LD-4)",
        description="Print the month's long-distance register, or fill an entry in.",
    )
    register.add_argument("--month", help="YYYY-MM in the site's timezone (default: this month)")
    register.add_argument("--format", choices=EXPORT_FORMATS, default="table")
    register.add_argument(
        "--output", metavar="FILE", help="write to FILE (xlsx default: register-MONTH.xlsx)"
    )
    register.add_argument("--config")
    actions = register.add_subparsers(dest="register_command", metavar="ACTION")
    fill = actions.add_parser("fill", help="write the subject and outcome into an entry")
    fill.add_argument("id", type=int, metavar="ID", help="the entry's 编号 in the register")
    fill.add_argument("--subject", required=True, metavar="TEXT", help="联络事项")
    fill.add_argument("--outcome", required=True, metavar="TEXT", help="交涉结果")
    fill.add_argument("--by", required=True, metavar="WHO")
    fill.add_argument("--callee-name", default="", metavar="NAME", help="受话人")
    # SUPPRESS keeps a --config given before `fill` from being reset by the sub-parser.
    fill.add_argument("--config", default=argparse.SUPPRESS)


def _add_rota(sub: Any) -> None:
    rota = sub.add_parser(
        "rota",
        help="who is on duty on the shared lines (值班表), and changing it",
        description="Show the duty rota for a day, or add and remove shifts in the rota file "
        "the policy names ([rota] file). A running daemon reloads it within seconds.",
    )
    actions = rota.add_subparsers(dest="rota_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="who holds each line over one day")
    show.add_argument("--line", help="one rota line (guard_room, hotline, dispatch ...)")
    show.add_argument("--date", help="the day, YYYY-MM-DD (default: today)")
    for name, helptext in (("add", "add a shift"), ("remove", "remove a shift")):
        change = actions.add_parser(name, help=helptext)
        change.add_argument("--line", required=True)
        change.add_argument("--person", required=True, help="a person id from the policy")
        change.add_argument("--start", help="dated shift: ISO start (site time if no offset)")
        change.add_argument("--end", help="dated shift: ISO end")
        change.add_argument("--weekday", type=int, choices=range(1, 8), help="weekly: 1=Monday")
        change.add_argument("--hours", help="weekly shift: HH:MM-HH:MM (24:00 for midnight)")
    for parser in (show, *(actions.choices[n] for n in ("add", "remove"))):
        parser.add_argument("--config", help="settings file naming the site policy")
        parser.add_argument("--policy", help="policy file (overrides the one in --config)")


def _add_lock(sub: Any) -> None:
    lock = sub.add_parser(
        "lock",
        help="velocity locks: extensions (or the site) stopped after too many calls too fast",
        description="A lock stops an extension's (or the site's) dear outside calls for a while "
        "after a burst of attempts. A running daemon picks up a lift within seconds.",
    )
    actions = lock.add_subparsers(dest="lock_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the locks in force (--all: every lock)")
    listing.add_argument("--all", action="store_true", help="include ended and lifted locks")
    listing.add_argument("--extension", metavar="EXT", help="one extension's locks")
    listing.add_argument("--config")
    lift = actions.add_parser("lift", help="end a lock early (the ledger keeps who and why)")
    lift.add_argument("id", metavar="ID", help="the lock's 编号 in `lock list` (or its full id)")
    lift.add_argument("--by", required=True, metavar="WHO")
    lift.add_argument("--reason", required=True, metavar="TEXT")
    lift.add_argument("--config")


def _add_ledger(sub: Any) -> None:
    ledger = sub.add_parser(
        "ledger",
        help="the fine ledger: list offences, verify the chain, migrate",
        description="List offences (罚款台账), or act on the ledger itself. Listing opens the "
        "ledger read-only and never changes it.",
    )
    ledger.add_argument("--config")
    ledger.add_argument("--person")
    ledger.add_argument("--department")
    ledger.add_argument("--month", help="YYYY-MM, in the site's timezone")
    ledger.add_argument("--rule")
    ledger.add_argument("--outcome", help="refused, hung_up, not_stopped, monitored, ...")
    ledger.add_argument("--site", help="one site's offences (several PBXes, one ledger)")
    ledger.add_argument("--format", choices=EXPORT_FORMATS, default="table")
    ledger.add_argument("--output", metavar="FILE", help="write to FILE instead of the screen")
    actions = ledger.add_subparsers(dest="ledger_command", metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="walk the hash chain of every table; exit 1 at the first tampered entry",
    )
    verify.add_argument("--config", default=argparse.SUPPRESS)
    verify.add_argument("--json", action="store_true", help="print JSON for scripts")
    migrate = actions.add_parser(
        "migrate", help="bring the ledger's schema up to date (as the database owner)"
    )
    migrate.add_argument("--config", default=argparse.SUPPRESS)
    aside = actions.add_parser(
        "set-aside", help="show the journal entries the database refused, or replay them"
    )
    aside.add_argument("--config", default=argparse.SUPPRESS)
    aside.add_argument("--replay", action="store_true", help="try writing them again")
    adjust = actions.add_parser(
        "adjust", help="waive an offence, or record an appeal and its decision (never a deletion)"
    )
    adjust.add_argument("id", type=int, metavar="ID", help="the offence's 编号")
    adjust.add_argument(
        "--kind",
        required=True,
        choices=["waiver", "appeal", "appeal_allowed", "appeal_dismissed"],
    )
    adjust.add_argument("--by", required=True, metavar="WHO")
    adjust.add_argument("--reason", required=True, metavar="TEXT")
    adjust.add_argument("--config", default=argparse.SUPPRESS)
    costs = actions.add_parser(
        "costs",
        help="what the month's outbound calls cost, per department, person, class and country",
        description="Call accounting: every outbound call priced from the tariff, summed for "
        "the month in the site's timezone (a call counts in the month it started).",
    )
    # SUPPRESS keeps the values given before `costs` (pbxguard ledger --month … costs).
    costs.add_argument("--config", default=argparse.SUPPRESS)
    costs.add_argument("--month", default=argparse.SUPPRESS, help="YYYY-MM (default: this month)")
    costs.add_argument("--site", default=argparse.SUPPRESS, help="one site's calls")
    costs.add_argument("--format", choices=EXPORT_FORMATS, default=argparse.SUPPRESS)
    costs.add_argument("--output", metavar="FILE", default=argparse.SUPPRESS)


CONSOLE_ROLES = (
    "administrator", "auditor", "general_manager", "department_head", "duty_lead", "staff",
)  # fmt: skip


def _add_console(sub: Any) -> None:
    console = sub.add_parser(
        "console",
        help="the audit and approval console over the ledger (browser UI and JSON API)",
        description="Serve the console over the ledger the settings name, without the guard "
        "(for auditors). Inside the daemon it runs when [console] enabled = true.",
    )
    console.add_argument("--config", help="settings file naming the ledger and the policy")
    console.add_argument("--host", help="address to listen on (default [console] host)")
    console.add_argument("--port", type=int, help="port (default [console] port)")
    user = sub.add_parser("user", help="console accounts: add, list, disable, passwd, role")
    actions = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="create an account (the password is read from the terminal or stdin)",
    )
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=CONSOLE_ROLES)
    add.add_argument("--person", help="the policy's person id (department heads and staff)")
    add.add_argument("--name", help="display name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    listing = actions.add_parser("list", help="list the accounts")
    passwd = actions.add_parser("passwd", help="set an account's password")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    disable = actions.add_parser("disable", help="stop an account from signing in")
    disable.add_argument("username")
    enable = actions.add_parser("enable", help="let a disabled account sign in again")
    enable.add_argument("username")
    role = actions.add_parser("role", help="give an account another role")
    role.add_argument("username")
    role.add_argument("--role", required=True, choices=CONSOLE_ROLES)
    role.add_argument("--person", help="the policy's person id")
    for parser in (add, listing, passwd, disable, enable, role):
        parser.add_argument("--config", help="settings file naming the ledger and the policy")


def _add_dnd(sub: Any) -> None:
    dnd = sub.add_parser(
        "dnd",
        help="the do-not-disturb list promotion lines may not call (DND-1)",
        description="Import the site's do-not-disturb list (免打扰名单), see the one in force, "
        "look a number up. A running pbxguard takes a new list up within seconds.",
    )
    actions = dnd.add_subparsers(dest="dnd_command", required=True, metavar="ACTION")
    imported = actions.add_parser(
        "import",
        help="build a new list from a text file and put it in force",
        description="One number a line (a CSV's first column; # starts a comment), in any "
        "form the site dials or writes it: 13800138000, +86 138 0013 8000, 021-6234 5678.",
    )
    imported.add_argument("file", metavar="FILE")
    imported.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the valid lines even when some hold no number (they are listed)",
    )
    status = actions.add_parser("status", help="show the list in force")
    lookup = actions.add_parser(
        "lookup", help="tell whether a number is on the list (exit 0 yes, 1 no)"
    )
    lookup.add_argument("number", metavar="NUMBER")
    for parser in (imported, status, lookup):
        parser.add_argument("--config", help="settings file (the lists live in the state dir)")


def _add_quota(sub: Any) -> None:
    quota = sub.add_parser(
        "quota",
        help="the telesales quota of a day (QU-1): effective calls and fines",
        description="Effective calls of every telesales person on one day, what the quota "
        "asked for, and the fine the ledger holds for it (the daemon records it after the "
        "day). Opens the ledger read-only.",
    )
    quota.add_argument("--day", required=True, metavar="YYYY-MM-DD", help="the day, site time")
    quota.add_argument("--config", help="settings file naming the ledger and the policy")
    quota.add_argument("--format", choices=("table", "csv", "json"), default="table")


def _add_replay(sub: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help="what if: judge a month's recorded calls under a candidate policy",
        description="Judge every call the ledger recorded in a month again, under a "
        "candidate policy, and report the calls that would now be refused or allowed and the "
        "fines that would change, by rule and department. Reads the ledger, never writes it.",
    )
    replay.add_argument("--policy", required=True, metavar="FILE", help="the candidate policy")
    replay.add_argument("--month", required=True, metavar="YYYY-MM", help="site time")
    replay.add_argument("--config", help="settings file naming the ledger (and today's policy)")
    replay.add_argument("--format", choices=("table", "csv", "json"), default="table")
    replay.add_argument("--output", metavar="FILE", help="write to FILE instead of the screen")
