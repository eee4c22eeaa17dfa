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
import functools
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from pbxguard.adapters.ami import AmiClient, AmiTiming
from pbxguard.adapters.clock import SystemClock
from pbxguard.adapters.dnd_file import DndStore, NumberFile
from pbxguard.adapters.emergency_desk import MailDesk, QueuedDesk, Retry, WebhookDesk
from pbxguard.adapters.fastagi import FastAgiServer
from pbxguard.adapters.journal import Journal
from pbxguard.adapters.ledger import (
    ApprovalBook,
    CallLog,
    CodeBook,
    FactJournal,
    LedgerDatabase,
    LedgerWriter,
    LockBook,
    OffenceBook,
    RegisterBook,
)
from pbxguard.adapters.ledger.console import (
    ApprovalRequestBook,
    AuditTrail,
    DecisionCounts,
    SignOffBook,
    UserBook,
)
from pbxguard.adapters.ledger.spend import SpendLedger
from pbxguard.adapters.ledger.writer import (
    SET_ASIDE,
    decode_fact,
    read_set_aside,
    replay_set_aside,
)
from pbxguard.adapters.ledger.writer_process import ProcessLedgerWriter
from pbxguard.adapters.mqtt import BrokerLink, BrokerSettings
from pbxguard.adapters.mqtt_notifier import MqttNotifier, NoBroker
from pbxguard.adapters.passwords import Argon2Passwords
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.rota_file import RotaFile
from pbxguard.adapters.settings import Settings
from pbxguard.app.console import Console, PolicyStatus
from pbxguard.app.guard import Guard
from pbxguard.app.overview import GuardCounters, GuardHealth, LineState, LiveView, NoLiveView
from pbxguard.app.ports import Clock, EmergencyDesk, Notifier, RotaStore
from pbxguard.app.predial import PreDialGate
from pbxguard.app.quota import QuotaWatch
from pbxguard.app.register_watch import RegisterWatch
from pbxguard.domain.budgets import SpendLine
from pbxguard.domain.call_events import OpenCut
from pbxguard.domain.effects import RaiseAlert
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.policy import CodeLimits, Policy
from pbxguard.domain.records import (
    CallSummary,
    CodeFailure,
    Lock,
    OffenceFact,
    OffenceOutcome,
    Outcome,
)
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
    writer: LedgerWriter | ProcessLedgerWriter
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
    quota_watch: QuotaWatch
    dnd_store: DndStore
    locks: LockBook
    spend: SpendLedger
    dnd: NumberFile | None = None
    dnd_stamp: tuple[int, int] | None = None
    emergency_desks: list[QueuedDesk] = field(default_factory=list)
    open_cuts_unread: bool = False
    spend_ready: bool = True


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


@dataclass(slots=True)
class _JournalShare:
    """Facts in the journal that may not be in the database yet (read in one pass)."""

    #: Hangups ordered, and the keys of the offences whose calls' endings were learnt.
    cuts: list[OpenCut] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)
    calls: list[CallSummary] = field(default_factory=list)
    locks: list[Lock] = field(default_factory=list)


def _read_journal(journal: Journal) -> _JournalShare:
    """Return the hangups, call endings, calls and locks the journal holds."""
    found = _JournalShare()
    cursor = None
    while True:
        entries, cursor = journal.read(cursor, 5000)
        if not entries:
            return found
        for entry in entries:
            try:
                fact = decode_fact(entry.data)
            except ValueError:
                continue
            if isinstance(fact, OffenceFact) and fact.draft.outcome is Outcome.CUT_ORDERED:
                call = fact.draft.call
                found.cuts.append(
                    OpenCut(
                        fact.draft.key,
                        call.linkedid if call else "",
                        fact.draft.rule_id,
                        fact.draft.at,
                    )
                )
            elif isinstance(fact, OffenceOutcome):
                found.ended.add(fact.key)
            elif isinstance(fact, CallSummary):
                found.calls.append(fact)
            elif isinstance(fact, Lock):
                found.locks.append(fact)


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
    journal: _JournalShare, offences: OffenceBook, clock: Clock
) -> tuple[list[OpenCut], bool]:
    """Return the hangups an earlier run ordered whose calls' endings were never learnt.

    The second value says whether the ledger's share could be read; when it could not (the
    database is down), only the journal's are returned and the daemon reads the ledger's once
    it answers (`pbxguard.entrypoints.daemon`).
    """
    cuts = list(journal.cuts)
    read = True
    try:
        cuts.extend(stored_open_cuts(offences, clock))
    except LedgerError as error:
        log.warning(
            "could not read open hangups from the ledger; reading them once it answers",
            error=str(error),
        )
        read = False
    unique = {cut.key: cut for cut in cuts if cut.key not in journal.ended}
    return list(unique.values()), read


def restored_locks(
    book: LockBook, journal_locks: list[Lock], policy: Policy, clock: Clock
) -> list[Lock]:
    """Return the locks in force: the ledger's, and the journal's not yet written there."""
    now = clock.now()
    found = {lock.id: lock for lock in journal_locks if lock.until > now}
    try:
        for lock in book.active(now, site=policy.site):
            found[lock.id] = lock
        lifted = book.lifted(list(found))
    except LedgerError as error:
        log.warning("could not read the locks in force from the ledger", error=str(error))
        lifted = frozenset()
    return [lock for lock in found.values() if lock.id not in lifted]


def starting_spend(spend: SpendLedger) -> list[SpendLine] | None:
    """Return the month's spend before this run, or None when the ledger cannot say yet."""
    try:
        return spend.before_start()
    except LedgerError as error:
        log.error(
            "budgets start without the month's spend: the ledger could not be read; "
            "trying again while running",
            error=str(error),
        )
        return None


def recent_code_failures(codes: CodeBook, limits: CodeLimits, clock: Clock) -> list[CodeFailure]:
    """Return the wrong codes that can still count or still hold a lock (window + lockout).

    A lock set by a failure at ``t`` lasts until ``t + lockout``; the failures that set it
    reach back ``window`` before that. Replaying them in order rebuilds both the counts and
    the locks still in force.
    """
    try:
        return codes.failures(since=clock.now() - limits.window - limits.lockout)
    except LedgerError as error:
        log.warning("could not read recent wrong codes from the ledger", error=str(error))
        return []


def emergency_desks(settings: Settings, timezone: ZoneInfo) -> list[QueuedDesk]:
    """Build the webhook and e-mail channels to the security desk the settings ask for."""
    config = settings.emergency
    retry = Retry(config.attempts, config.backoff_min, max(config.backoff_max, config.backoff_min))
    desks: list[QueuedDesk] = []
    if config.webhook.url:
        desks.append(
            WebhookDesk(
                config.webhook.url,
                timezone,
                token=config.webhook.token.get_secret_value(),
                timeout=config.webhook.timeout,
                retry=retry,
            )
        )
    mail = config.mail
    if mail.host:
        desks.append(
            MailDesk(
                mail.host,
                timezone,
                port=mail.port,
                sender=mail.sender,
                to=mail.to,
                username=mail.username,
                password=mail.password.get_secret_value(),
                security=mail.security,
                timeout=mail.timeout,
                retry=retry,
            )
        )
    return desks


def open_do_not_disturb(store: DndStore) -> tuple[NumberFile | None, tuple[int, int] | None]:
    """Map the do-not-disturb list in force, and what tells when it is replaced.

    A list that cannot be read is logged and left out (promotion lines are then not checked
    against it) rather than keeping the guard from protecting everything else.
    """
    stamp = store.stamp()
    try:
        numbers = store.open_current()
    except PbxGuardError as error:
        log.error("do-not-disturb list not loaded", error=str(error))
        return None, stamp
    if numbers is not None:
        log.info("do-not-disturb list loaded", list=numbers.info.name, numbers=numbers.info.count)
    return numbers, stamp


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
        notifier = MqttNotifier(link, site=policy.site, timezone=policy.timezone)
    desks = emergency_desks(settings, policy.timezone)
    emergency: list[EmergencyDesk] = list(desks)
    if isinstance(notifier, MqttNotifier):
        emergency.insert(0, notifier)
    dnd_store = DndStore(settings.dnd_path)
    dnd, dnd_stamp = open_do_not_disturb(dnd_store)
    pbx = _LateBoundPbx()
    share = _read_journal(journal)
    open_cuts, open_cuts_read = restored_cuts(share, offences, clock)
    locks = LockBook(database)
    spend = SpendLedger(
        database,
        site=policy.site,
        timezone=policy.timezone,
        started_at=clock.now(),
        pending=share.calls,
    )
    spent = starting_spend(spend)
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
        emergency=emergency,
        dnd=dnd,
        warner=pbx,
        spend=spent or (),
        locks=restored_locks(locks, share.locks, policy, clock),
    )
    event_loop = loop or asyncio.get_event_loop()

    def written(entries: list[OffenceEntry]) -> None:
        for entry in entries:
            notifier.offence_recorded(entry)

    def on_written(entries: list[OffenceEntry]) -> None:
        event_loop.call_soon_threadsafe(written, list(entries))

    def on_set_aside(message: str) -> None:
        event_loop.call_soon_threadsafe(guard.ledger_trouble, "set-aside", message)

    writer = _ledger_writer(
        settings,
        journal,
        database,
        site=policy.site,
        schema_ready=schema_ready,
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
    quota_watch = QuotaWatch(
        CallLog(database),
        offences,
        guard.carry_out,
        lambda: guard.policy,
        clock,
        journal_pending=lambda: journal.pending,
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
        quota_watch=quota_watch,
        dnd_store=dnd_store,
        dnd=dnd,
        dnd_stamp=dnd_stamp,
        emergency_desks=desks,
        locks=locks,
        spend=spend,
        spend_ready=spent is not None,
        open_cuts_unread=not open_cuts_read,
    )


def _ledger_writer(
    settings: Settings,
    journal: Journal,
    database: LedgerDatabase,
    *,
    site: str,
    schema_ready: bool,
    on_written: Callable[[list[OffenceEntry]], None],
    on_set_aside: Callable[[str], None],
) -> LedgerWriter | ProcessLedgerWriter:
    """The ledger writer the settings ask for: a process of its own (default) or a thread."""
    if settings.ledger.writer == "thread":
        return LedgerWriter(
            journal,
            database,
            batch_size=settings.journal.batch,
            prepare=None
            if schema_ready
            else lambda: bring_up_to_date(database, settings, migrate=True),
            on_written=on_written,
            on_set_aside=on_set_aside,
        )
    return ProcessLedgerWriter(
        journal,
        settings.ledger_url,
        site=site,
        busy_timeout=settings.ledger.busy_timeout,
        batch_size=settings.journal.batch,
        prepare=None
        if schema_ready
        else functools.partial(bring_up_to_date, settings=settings, migrate=True),
        on_written=on_written,
        on_set_aside=on_set_aside,
        log_level=settings.log_level,
    )


class _LateBoundPbx:
    """Hangs up and warns through the AMI client once it exists (they refer to each other)."""

    client: AmiClient | None = None

    def _ready(self) -> AmiClient:
        if self.client is None:
            raise PbxGuardError("AMI client not ready")
        return self.client

    async def hangup(self, channel: str, cause: int = 21) -> None:
        await self._ready().hangup(channel, cause)

    async def warn(self, channel: str) -> None:
        """Warn a caller with a tone on their own channel (AMI ``PlayDTMF``)."""
        await self._ready().play_tone(channel)


# -- the console --------------------------------------------------------------------------------


class LiveParts:
    """The running guard as the console sees it (`pbxguard.app.overview.LiveView`)."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts

    def health(self) -> GuardHealth:
        """Return how the guard stands now."""
        parts = self._parts
        status = parts.writer.status
        agi = parts.agi
        listening: bool | None = None
        if agi is not None:
            try:
                agi.address  # noqa: B018 - raises until the server listens
                listening = True
            except ConfigError:
                listening = False
        return GuardHealth(
            live=True,
            ami_connected=parts.ami.connected,
            fastagi_listening=listening,
            ledger_writable=status.retrying_since is None,
            ledger_error=status.last_error if status.retrying_since is not None else "",
            journal_pending=parts.journal.pending,
            broker_connected=parts.link.connected if parts.link is not None else None,
        )

    def open_alerts(self) -> list[RaiseAlert]:
        """Return the alerts raised and not cleared."""
        return self._parts.guard.open_alerts()

    def lines(self) -> list[LineState]:
        """Return the protected phones (standby or duty lines) and their state since when."""
        guard = self._parts.guard
        found = []
        for line in sorted(guard.policy.lines.values(), key=lambda item: item.extension):
            if not (line.standby or line.duty_line):
                continue
            status = guard.endpoints.status(line.extension)
            found.append(
                LineState(
                    extension=line.extension,
                    name=line.name,
                    duty_line=line.duty_line,
                    availability=status.availability.value,
                    since=status.since,
                    device_state=status.device_state.value,
                )
            )
        return found

    def counters(self) -> GuardCounters:
        """Return the counters /metrics exposes."""
        parts = self._parts
        stats = parts.guard.stats
        latency = parts.agi.latency if parts.agi is not None else None
        return GuardCounters(
            decisions=dict(stats.decisions_by),
            hangups_sent=stats.hangups_sent,
            hangups_confirmed=stats.hangups_accepted,
            hangups_failed=stats.hangups_failed,
            ami_events=stats.events,
            ledger_written=parts.writer.status.written,
            ledger_set_aside=parts.writer.status.set_aside,
            journal_pending=parts.journal.pending,
            alerts_open=len(parts.guard.open_alerts()),
            fastagi_buckets=tuple(latency.buckets()) if latency is not None else (),
            fastagi_count=latency.count if latency is not None else 0,
            fastagi_sum=latency.total if latency is not None else 0.0,
        )


class SetAsideFile:
    """The journal's set-aside entries (`pbxguard.app.ports.SetAsidePort`)."""

    def __init__(self, path: Path, database: LedgerDatabase) -> None:
        self._path = path
        self._db = database

    def entries(self) -> list[dict[str, Any]]:
        """Return the entries set aside, oldest first (their error and when)."""
        return [
            {"seq": r.get("seq"), "at": r.get("at"), "error": r.get("error")}
            for r in read_set_aside(self._path)
        ]

    def replay(self) -> tuple[int, int]:
        """Try writing them again."""
        return replay_set_aside(self._path, self._db)


class PolicyWatch:
    """Which policy is in force and since when; what is wrong with its file now, if anything."""

    def __init__(self, settings: Settings, current: Callable[[], LoadedPolicy], clock: Clock):
        self._settings = settings
        self._current = current
        self._clock = clock
        self._seen: dict[str, datetime] = {}

    def status(self) -> PolicyStatus:
        """Return the policy's status (loading the file again to report its errors)."""
        loaded = self._current()
        version = loaded.policy.version
        since = self._seen.setdefault(version, self._clock.now())
        error = ""
        try:
            fresh = load_policy(self._settings.policy)
            if fresh.policy.version != version:
                error = f"文件已更改，尚未加载 — the file changed ({fresh.policy.version})"
        except PbxGuardError as exc:
            error = str(exc)
        return PolicyStatus(
            file=", ".join(loaded.sources), version=version, loaded_at=since, error=error
        )


def build_console(
    settings: Settings,
    database: LedgerDatabase,
    current: Callable[[], LoadedPolicy],
    clock: Clock,
    *,
    live: LiveView | None = None,
    approvals_changed: Callable[[], Awaitable[None]] | None = None,
) -> Console:
    """Build the console's parts over an open ledger (inside the daemon, or standalone)."""

    def rota_store() -> RotaStore | None:
        loaded = current()
        return RotaFile(loaded.rota_file) if loaded.rota_file is not None else None

    console = Console(
        policy=lambda: current().policy,
        clock=clock,
        users=UserBook(database),
        passwords=Argon2Passwords(),
        trail=AuditTrail(database),
        offences=OffenceBook(database),
        calls=CallLog(database),
        approvals=ApprovalBook(database),
        requests=ApprovalRequestBook(database),
        register=RegisterBook(database),
        signoffs=SignOffBook(database),
        decisions=DecisionCounts(database),
        live=live or NoLiveView(ledger_writable=not database.read_only),
        policy_status=PolicyWatch(settings, current, clock).status,
        set_aside=SetAsideFile(settings.journal_path / SET_ASIDE, database),
        rota_store=rota_store,
        staff_enabled=settings.console.staff,
    )
    if approvals_changed is not None:
        console.approvals_changed = approvals_changed
    return console
