"""The composition root: build every part of a running pbxguard from settings and a clock.

Wiring only: plain constructor calls, in the order the parts depend on each other. Nothing here
decides anything about calls or fines; `pbxguard.entrypoints.daemon` runs what this builds.

Start-up refuses to begin rather than run in a state where it could lose offences: the state
directory must be writable, the journal must open, the FastAGI port must be free. The database
may be down (the journal spools until it is back), but a schema it cannot bring up to date is
reported at once.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import structlog

from pbxguard.adapters.ami import AmiClient, AmiTiming
from pbxguard.adapters.clock import SystemClock
from pbxguard.adapters.fastagi import FastAgiServer
from pbxguard.adapters.journal import Journal
from pbxguard.adapters.ledger import (
    ApprovalBook,
    CodeBook,
    FactJournal,
    LedgerDatabase,
    LedgerWriter,
    OffenceBook,
    RegisterBook,
)
from pbxguard.adapters.ledger.writer import decode_fact
from pbxguard.adapters.mqtt import BrokerLink, BrokerSettings
from pbxguard.adapters.mqtt_notifier import MqttNotifier, NoBroker
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import Settings
from pbxguard.app.guard import Guard
from pbxguard.app.ports import Clock, Notifier
from pbxguard.app.predial import PreDialGate
from pbxguard.app.register_watch import RegisterWatch
from pbxguard.domain.call_events import OpenCut
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.policy import CodeLimits
from pbxguard.domain.records import CodeFailure, OffenceFact, OffenceOutcome, Outcome
from pbxguard.errors import (
    ConfigError,
    JournalError,
    LedgerError,
    LedgerUnavailable,
    PbxGuardError,
)

log = structlog.get_logger(__name__)

#: How far back a restart looks for hangups it ordered whose ending it never learnt.
OPEN_CUTS_LOOK_BACK = timedelta(hours=24)


@dataclass(slots=True)
class Parts:
    """Every long-lived part of a running pbxguard."""

    settings: Settings
    loaded: LoadedPolicy
    clock: Clock
    database: LedgerDatabase
    journal: Journal
    writer: LedgerWriter
    guard: Guard
    ami: AmiClient
    agi: FastAgiServer | None
    gate: PreDialGate | None
    link: BrokerLink | None
    notifier: Notifier
    approvals: ApprovalBook
    codes: CodeBook
    offences: OffenceBook
    register_watch: RegisterWatch
    schema_ready: bool = False
    open_cuts_unread: bool = False
    notes: list[str] = field(default_factory=list)


def prepare_state_dir(path: Path) -> Path:
    """Create the state directory and prove it writable (a file written, synced and removed).

    Raises:
        ConfigError: it cannot be created or written; a guard that could lose offences does
            not start.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        try:
            os.write(fd, b"pbxguard")
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
    except OSError as error:
        raise ConfigError(
            f"状态目录不可写 — the state directory {path} is not writable "
            f"({error.strerror or error}): pbxguard will not run where it could lose offences; "
            "set state_dir (or STATE_DIRECTORY) to a directory it may write"
        ) from error
    return path


def open_ledger(settings: Settings, site: str, *, migrate: bool) -> tuple[LedgerDatabase, bool]:
    """Open the ledger and bring its schema up to date when this role may.

    Returns the database and whether its schema is known to be current (False when the database
    is down: the writer checks again before its first write).

    Raises:
        LedgerError: the URL is unusable, or the schema is behind and cannot be migrated here.
    """
    database = LedgerDatabase.open(
        settings.ledger_url, site=site, busy_timeout=settings.ledger.busy_timeout
    )
    try:
        bring_up_to_date(database, settings, migrate=migrate)
    except LedgerUnavailable as error:
        log.warning(
            "ledger unavailable at start-up; the journal keeps every fact", error=str(error)
        )
        return database, False
    except LedgerError:
        database.close()
        raise
    return database, True


def bring_up_to_date(database: LedgerDatabase, settings: Settings, *, migrate: bool) -> None:
    """Migrate the schema when this role may; then insist that it is current.

    A role that may only append (the daemon's, on PostgreSQL) cannot migrate: the schema must
    then already be current (``pbxguard ledger migrate`` as the owner).

    Raises:
        LedgerUnavailable: the database is down.
        LedgerError: the schema is not current and cannot be made so here.
    """
    if migrate and database.revision() != database.head_revision():
        try:
            database.migrate(grant_to=settings.ledger.writer_role)
        except LedgerUnavailable:
            raise
        except LedgerError as error:
            log.info("this role cannot migrate the ledger; checking its schema", error=str(error))
    database.require_current()


def _journal_open_cuts(journal: Journal) -> tuple[list[OpenCut], set[str]]:
    """Return hangups ordered in facts not yet in the database, and the offence keys ended."""
    cuts: list[OpenCut] = []
    ended: set[str] = set()
    cursor = None
    while True:
        entries, cursor = journal.read(cursor, 5000)
        if not entries:
            return cuts, ended
        for entry in entries:
            try:
                fact = decode_fact(entry.data)
            except ValueError:
                continue
            if isinstance(fact, OffenceFact) and fact.draft.outcome is Outcome.CUT_ORDERED:
                call = fact.draft.call
                cuts.append(
                    OpenCut(
                        fact.draft.key,
                        call.linkedid if call else "",
                        fact.draft.rule_id,
                        fact.draft.at,
                    )
                )
            elif isinstance(fact, OffenceOutcome):
                ended.add(fact.key)


def stored_open_cuts(offences: OffenceBook, clock: Clock) -> list[OpenCut]:
    """Return the hangups the ledger holds as ordered whose calls' endings it never learnt.

    Raises:
        LedgerError: the ledger cannot be read.
    """
    return [
        OpenCut(entry.key, entry.call.linkedid if entry.call else "", entry.rule_id, entry.at)
        for entry in offences.open_cuts(clock.now() - OPEN_CUTS_LOOK_BACK)
    ]


def restored_cuts(
    journal: Journal, offences: OffenceBook, clock: Clock
) -> tuple[list[OpenCut], bool]:
    """Return the hangups an earlier run ordered whose calls' endings were never learnt.

    The second value says whether the ledger's share could be read; when it could not (the
    database is down), only the journal's are returned and the daemon reads the ledger's once
    it answers (`pbxguard.entrypoints.daemon`).
    """
    cuts, ended = _journal_open_cuts(journal)
    read = True
    try:
        cuts.extend(stored_open_cuts(offences, clock))
    except LedgerError as error:
        log.warning(
            "could not read open hangups from the ledger; reading them once it answers",
            error=str(error),
        )
        read = False
    unique = {cut.key: cut for cut in cuts if cut.key not in ended}
    return list(unique.values()), read


def recent_code_failures(codes: CodeBook, limits: CodeLimits, clock: Clock) -> list[CodeFailure]:
    """Return the wrong codes inside the lockout window (to rebuild the guessing count)."""
    try:
        return codes.failures(since=clock.now() - limits.window)
    except LedgerError as error:
        log.warning("could not read recent wrong codes from the ledger", error=str(error))
        return []


def build(
    settings: Settings,
    loaded: LoadedPolicy | None = None,
    *,
    clock: Clock | None = None,
    raise_on_auth_failure: bool = False,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Parts:
    """Build a pbxguard from its settings (and, for tests and the demo, a policy and a clock).

    Raises:
        PbxGuardError: a start-up problem, with a message naming the cause.
    """
    clock = clock or SystemClock()
    loaded = loaded or load_policy(settings.policy)
    policy = loaded.policy
    prepare_state_dir(settings.state_path)
    database, schema_ready = open_ledger(settings, policy.site, migrate=True)
    try:
        journal = Journal(
            settings.journal_path,
            sync=settings.journal.sync,
            segment_bytes=settings.journal.segment_mb * 1024 * 1024,
        ).open()
    except JournalError as error:
        database.close()
        raise ConfigError(str(error)) from error
    limits = policy.code_limits
    offences = OffenceBook(database)
    codes = CodeBook(database, min_digits=limits.min_digits)
    link: BrokerLink | None = None
    notifier: Notifier = NoBroker()
    if settings.mqtt.enabled:
        link = BrokerLink(
            BrokerSettings(
                host=settings.mqtt.host,
                port=settings.mqtt.port,
                site=policy.site,
                username=settings.mqtt.username or None,
                password=settings.mqtt.password.get_secret_value() or None,
                spool_path=settings.mqtt_spool_path,
            )
        )
        notifier = MqttNotifier(link, site=policy.site)
    pbx = _LateBoundPbx()
    open_cuts, open_cuts_read = restored_cuts(journal, offences, clock)
    guard = Guard(
        policy,
        loaded.channels,
        pbx=pbx,
        facts=FactJournal(journal),
        notifier=notifier,
        clock=clock,
        code_limits=limits,
        code_failures=recent_code_failures(codes, limits, clock),
        open_cuts=open_cuts,
    )
    event_loop = loop or asyncio.get_event_loop()

    def written(entries: list[OffenceEntry]) -> None:
        for entry in entries:
            notifier.offence_recorded(entry)

    def on_written(entries: list[OffenceEntry]) -> None:
        event_loop.call_soon_threadsafe(written, list(entries))

    def on_set_aside(message: str) -> None:
        event_loop.call_soon_threadsafe(guard.ledger_trouble, "set-aside", message)

    writer = LedgerWriter(
        journal,
        database,
        batch_size=settings.journal.batch,
        prepare=None
        if schema_ready
        else lambda: bring_up_to_date(database, settings, migrate=True),
        on_written=on_written,
        on_set_aside=on_set_aside,
    )
    ami = AmiClient(
        settings.ami.host,
        settings.ami.port,
        settings.ami.username,
        settings.ami.secret,
        sink=guard.on_ami_message,
        on_login=lambda client: guard.resync(client.send_list_action, client.send_action),
        on_disconnect=guard.on_connection_lost,
        timing=AmiTiming(
            ping_interval=settings.ami.ping_interval,
            ping_timeout=settings.ami.ping_timeout,
            action_timeout=settings.ami.action_timeout,
        ),
        raise_on_auth_failure=raise_on_auth_failure,
    )
    pbx.client = ami
    agi: FastAgiServer | None = None
    gate: PreDialGate | None = None
    if settings.agi.enabled:
        gate = PreDialGate(guard, codes, clock)
        agi = FastAgiServer(
            gate.routes,
            host=settings.agi.host,
            port=settings.agi.port,
            request_timeout=settings.agi.deadline,
            max_connections=settings.agi.max_connections,
        )
    register_watch = RegisterWatch(
        RegisterBook(database), offences, guard.carry_out, lambda: guard.policy, clock
    )
    return Parts(
        settings=settings,
        loaded=loaded,
        clock=clock,
        database=database,
        journal=journal,
        writer=writer,
        guard=guard,
        ami=ami,
        agi=agi,
        gate=gate,
        link=link,
        notifier=notifier,
        approvals=ApprovalBook(database),
        codes=codes,
        offences=offences,
        register_watch=register_watch,
        schema_ready=schema_ready,
        open_cuts_unread=not open_cuts_read,
    )


class _LateBoundPbx:
    """Hangs up through the AMI client once it exists (they refer to each other)."""

    client: AmiClient | None = None

    async def hangup(self, channel: str, cause: int = 21) -> None:
        if self.client is None:
            raise PbxGuardError("AMI client not ready")
        await self.client.hangup(channel, cause)
