"""The daemon as a process against the simulated PBX, with faults injected on purpose.

A `FaultRun` starts a `SimulatedPbx` replaying rounds of recorded calls (every entry a call of
its own, ``fresh_ids``) and ``pbxguard run`` as a child process, injects faults at seeded random
moments (the count of events the PBX has delivered is the clock), lets everything settle, stops
the daemon cleanly, and judges the three promises (`Tally`) from the ledger as
``pbxguard ledger --format json`` prints it and from what the PBX knows: which channels it
showed a session, which were answered, which a ``Hangup`` action ended.

The seed is printed with the figures; ``PBXGUARD_FAULT_SEED=<seed>`` replays a run's choices
(the daemon's own timing still varies from run to run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from pbxguard.adapters.ledger import CallLog, LedgerDatabase, OffenceBook
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.records import CallSummary, Outcome
from pbxguard.simulator.ami_server import SimulatedPbx, back_to_back
from tests.support.postgres import PostgresCluster

SECRET = "fault-injection-secret"
SEED_ENV = "PBXGUARD_FAULT_SEED"
PBXGUARD = (sys.executable, "-m", "pbxguard")
REFERENCE = str(resources.files("pbxguard.policies").joinpath("reference-site.toml"))
SITE = "reference"
#: The longest anything here waits for a thing that must happen; never reached when all is well.
PATIENCE = 90.0


@dataclass(frozen=True, slots=True)
class Expected:
    """The offence a call must leave in the ledger: its rule, who answers for it, the number."""

    rule: str
    person_id: str
    number: str


#: What the regulations make of each call in the captures, by (caller's extension, dialled):
#: an offence, or None for a call that must be left alone (emergency or allowed).
ORACLE: dict[tuple[str, str], Expected | None] = {
    ("2002", "16812345678"): Expected("PR-1", "staff-2002", "16812345678"),
    ("2001", "00441632960123"): Expected("LD-2", "staff-2001", "00441632960123"),
    ("2001", "01087654321"): Expected("LD-2", "staff-2001", "01087654321"),
    ("2001", "0085223456789"): Expected("LD-2", "staff-2001", "0085223456789"),
    # The alarm line used for an ordinary call: the guard on duty answers for it (000 L1103).
    ("8000", "13800138000"): Expected("EM-1", "guard-li", "13800138000"),
    ("8000", "110"): None,
    ("8000", "119"): None,
    ("9001", "01087654321"): None,
    ("2003", "02112345678"): None,
}
EMERGENCY_NUMBERS = frozenset({"110", "119", "120", "122", "112"})
#: One round: every forbidden call shape, an emergency call, and five calls at once (one of
#: them to 119) whose events interleave.
ROUND = (
    "staff-premium-168",
    "staff-international-answered",
    "staff-domestic-long-distance",
    "hk-call-cut-by-ami-hangup",
    "guardroom-misuse-mobile",
    "guardroom-emergency-110",
    "burst-mixed-calls",
)


def fault_seed() -> int:
    """Return the seed of this run: ``PBXGUARD_FAULT_SEED`` or a fresh one."""
    given = os.environ.get(SEED_ENV)
    if given:
        return int(given)
    return random.SystemRandom().randrange(2**32)


# --- the calls of the playlist ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One call of the playlist as replayed: its ids, its outbound leg, what it must give."""

    entry: int
    recording: str
    linkedid: str
    trunk: str
    caller: str
    number: str
    channels: frozenset[str]
    expected: Expected | None

    @property
    def forbidden(self) -> bool:
        return self.expected is not None

    @property
    def emergency(self) -> bool:
        return self.number in EMERGENCY_NUMBERS


def calls_of(pbx: SimulatedPbx) -> list[Call]:
    """Find every outbound call of the playlist (its DialBegin to a ``Local/…@pstn`` leg)."""
    calls: list[Call] = []
    for index, recording in enumerate(pbx.recordings):
        channels: dict[str, set[str]] = {}
        for item in recording.events:
            linkedid, channel = item.message.get("Linkedid"), item.message.get("Channel")
            if linkedid and channel:
                channels.setdefault(linkedid, set()).add(channel)
        for item in recording.events:
            message = item.message
            dest = message.get("DestChannel") or ""
            if message.event != "DialBegin" or not dest.startswith("Local/"):
                continue
            linkedid = message.get("Linkedid") or ""
            caller = message.get("CallerIDNum") or ""
            number = (message.get("DialString") or "").split("@", 1)[0]
            if (caller, number) not in ORACLE:
                raise AssertionError(f"no expectation for {caller} dialling {number}")
            calls.append(
                Call(
                    entry=index,
                    recording=recording.name,
                    linkedid=linkedid,
                    trunk=dest,
                    caller=caller,
                    number=number,
                    channels=frozenset(channels.get(linkedid, ())),
                    expected=ORACLE[caller, number],
                )
            )
    return calls


# --- the figures --------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """What one run did and what the ledger and the PBX say about the three promises."""

    scenario: str
    seed: int
    calls: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    daemon_starts: int = 0
    daemon_exits: int = 0
    unseen: int = 0
    other_rows: int = 0
    expected: int = 0
    recorded: int = 0
    lost: int = 0
    doubled: int = 0
    misattributed: int = 0
    misdated: int = 0
    overstated: int = 0
    left_running: int = 0
    false_stopped: int = 0
    unsettled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    emergency_touched: int = 0
    allowed_touched: int = 0
    reactions: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(n for kind, n in self.faults.items() if kind.startswith("kill"))

    @property
    def drops(self) -> int:
        return sum(n for kind, n in self.faults.items() if kind.startswith(("drop", "half")))

    @property
    def broken(self) -> int:
        """How many times a promise was broken (0 when all three held)."""
        return (
            self.lost
            + self.doubled
            + self.misattributed
            + self.misdated
            + self.overstated
            + self.left_running
            + self.false_stopped
            + self.emergency_touched
            + self.allowed_touched
        )

    def fault_text(self) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"


ROWS: tuple[tuple[str, str], ...] = (
    ("calls", "calls played"),
    ("kills", "kill -9 of the daemon"),
    ("drops", "AMI connections broken"),
    ("pg_stops", "PostgreSQL stops"),
    ("locks", "SQLite locked by another process"),
    ("daemon_starts", "daemon starts"),
    ("daemon_exits", "daemon exits nobody caused"),
    ("unseen", "forbidden calls the guard never saw dialling"),
    ("other_rows", "rows not about a call (standby rules)"),
    ("expected", "offences expected"),
    ("recorded", "offences recorded"),
    ("lost", "offences lost"),
    ("doubled", "offences doubled"),
    ("misattributed", "offences misattributed"),
    ("misdated", "offences priced out of turn"),
    ("overstated", "talk times longer than the PBX's"),
    ("left_running", "forbidden calls left running"),
    ("false_stopped", "rows falsely saying stopped (offences, calls)"),
    ("unsettled", "rows still 'hangup ordered'"),
    ("hung_up", "  rows 'hung up' (before any answer)"),
    ("not_stopped", "  rows 'not stopped' (answered first)"),
    ("unobserved", "  rows 'ended unobserved'"),
    ("emergency_touched", "emergency calls touched"),
    ("allowed_touched", "allowed calls touched"),
)


def figure(tally: Tally, key: str) -> int:
    """Return one figure of the table."""
    if key == "pg_stops":
        return sum(n for kind, n in tally.faults.items() if kind.startswith("pg"))
    if key == "locks":
        return sum(n for kind, n in tally.faults.items() if kind.startswith("lock"))
    if key in ("hung_up", "not_stopped", "unobserved"):
        return tally.outcomes[key]
    value = getattr(tally, key)
    assert isinstance(value, int)
    return value


def percentile(values: Sequence[float], share: float) -> float:
    """Return the value below which ``share`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def table(tallies: Sequence[Tally]) -> list[str]:
    """Render tallies side by side, one column per run."""
    width = max(len(label) for _, label in ROWS)
    columns = [max(len(t.scenario), 8) for t in tallies]
    names = "  ".join(t.scenario.rjust(w) for t, w in zip(tallies, columns, strict=True))
    lines = [" " * width + "  " + names]
    for key, label in ROWS:
        cells = "  ".join(
            str(figure(t, key)).rjust(w) for t, w in zip(tallies, columns, strict=True)
        )
        lines.append(f"{label:<{width}}  {cells}")
    reactions = []
    for tally, w in zip(tallies, columns, strict=True):
        if tally.reactions:
            p50 = percentile(tally.reactions, 0.5) * 1000
            p99 = percentile(tally.reactions, 0.99) * 1000
            reactions.append(f"{p50:.0f}/{p99:.0f}".rjust(w))
        else:
            reactions.append("-".rjust(w))
    lines.append(f"{'DialBegin→Hangup p50/p99 ms':<{width}}  " + "  ".join(reactions))
    for tally in tallies:
        lines.append(f"{tally.scenario}: seed {tally.seed}; faults: {tally.fault_text()}")
        lines.extend(f"  {problem}" for problem in tally.problems)
    return lines


REPORTS: list[Tally] = []
"""Every tally of this pytest session, for the terminal summary (tests/faults/conftest.py)."""


# --- the daemon ---------------------------------------------------------------------------------


class DaemonProcess:
    """``pbxguard run`` as a child process: started, killed, stopped, restarted when it exits."""

    def __init__(self, config: Path, logs: Path) -> None:
        self._config = config
        self._logs = logs
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.unexpected_exits: list[str] = []
        self._watch: asyncio.Task[None] | None = None

    @property
    def log_files(self) -> list[Path]:
        return sorted(self._logs.glob("daemon-*.log"))

    async def start(self) -> None:
        self.starts += 1
        log = (self._logs / f"daemon-{self.starts:03d}.log").open("wb")
        with log:
            self.process = await asyncio.create_subprocess_exec(
                *PBXGUARD,
                "run",
                "--config",
                str(self._config),
                env={**os.environ, "PBXGUARD_AMI__SECRET": SECRET},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        self._watch = asyncio.create_task(self._restart_on_exit(self.process))

    async def _restart_on_exit(self, process: asyncio.subprocess.Process) -> None:
        """Do what systemd's Restart=on-failure does; note it, for nobody asked for it."""
        status = await process.wait()
        log = self.log_files[-1]
        tail = " | ".join(log.read_text("utf-8", errors="replace").splitlines()[-3:])
        self.unexpected_exits.append(f"{log.name} exited with {status}: {tail}")
        if len(self.unexpected_exits) < 10:
            await self.start()

    async def _forget_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def kill(self) -> None:
        """SIGKILL the daemon (its own PID) and wait for it to be gone."""
        await self._forget_watch()
        process = self.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def stop(self) -> bool:
        """SIGTERM the daemon; return whether it said the ledger was drained."""
        await self._forget_watch()
        process = self.process
        if process is None:
            return True
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(PATIENCE):
                await process.wait()
        for line in reversed(self.log_lines(self.log_files[-1])):
            if line.get("event") == "pbxguard stopped":
                return bool(line.get("ledger_drained"))
        return False

    @staticmethod
    def log_lines(path: Path) -> list[dict[str, Any]]:
        lines = []
        for raw in path.read_text("utf-8", errors="replace").splitlines():
            if raw.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(raw))
        return lines


# --- a run --------------------------------------------------------------------------------------

LOCKER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


class FaultRun:
    """A simulated PBX, the daemon beside it, and the faults a scenario injects."""

    def __init__(
        self,
        scenario: str,
        tmp_path: Path,
        *,
        rounds: int,
        seed: int,
        speed: float = 0.05,
        postgres: PostgresCluster | None = None,
    ) -> None:
        self.tally = Tally(scenario, seed)
        self.rng = random.Random(seed)
        self._tmp = tmp_path
        self._postgres = postgres
        # The phones register first, as on a working site (the alarm phone must be reachable).
        names = ["register-and-qualify"]
        names += [name for _ in range(rounds) for name in self.rng.sample(ROUND, len(ROUND))]
        # The PBX's clock runs from now, as a PBX beside the guard does.
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        entries = back_to_back(names, start=start, gap=timedelta(seconds=1), fresh_ids=True)
        # The replay runs twenty times faster than the calls did, a restarted daemon does not:
        # the PBX holds still until it has caught up (its resync ends with PJSIPShowContacts).
        self.pbx = SimulatedPbx(
            entries, secret=SECRET, speed=speed, caught_up_after="PJSIPShowContacts"
        )
        self.calls = calls_of(self.pbx)
        self.tally.calls = len(self.calls)
        if postgres is not None:
            self.ledger_url = postgres.url(postgres.create_database())
        else:
            self.ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        self.config = tmp_path / "pbxguard.toml"
        self.daemon = DaemonProcess(self.config, tmp_path)
        self._lockers: list[asyncio.subprocess.Process] = []
        # Forbidden calls end early (they are cut): about 60 % of the recorded events go out.
        # Faults are spread over the first half of that, to leave room for the slow ones.
        self._budget = sum(len(r.events) for r in self.pbx.recordings) * 3 // 10

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FaultRun]:
        """Start the PBX and the daemon; afterwards leave no process behind."""
        async with self.pbx:
            self.config.write_text(
                f'policy = "{REFERENCE}"\n'
                'log_level = "info"\n'
                f'state_dir = "{self._tmp / "state"}"\n'
                "[ami]\n"
                f"port = {self.pbx.port}\n"
                "ping_interval = 1\n"
                "ping_timeout = 1\n"
                "[agi]\n"
                "enabled = false\n"
                "[ledger]\n"
                f'url = "{self.ledger_url}"\n',
                encoding="utf-8",
            )
            try:
                await self.daemon.start()
                async with asyncio.timeout(PATIENCE):
                    await self.pbx.wait_for_logins(1)
                yield self
            finally:
                await self.daemon.kill()
                for locker in self._lockers:
                    if locker.returncode is None:
                        locker.kill()
                    await locker.wait()
                self.tally.daemon_starts = self.daemon.starts
                self.tally.daemon_exits = len(self.daemon.unexpected_exits)
                self.tally.problems.extend(self.daemon.unexpected_exits)
                REPORTS.append(self.tally)

    # -- the clock of the faults --------------------------------------------------------------

    def spacing(self, remaining: int) -> int:
        """A random number of events before the next fault, ``remaining`` faults to go."""
        mean = max((self._budget - self.pbx.events_sent) // (remaining + 1), 8)
        return self.rng.randint(mean // 2, mean * 3 // 2)

    async def _first(self, *waits: Any) -> bool:
        """Wait for the first of ``waits``; False when it was the end of the playlist."""
        finished = asyncio.ensure_future(self.pbx.finished())
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            async with asyncio.timeout(PATIENCE):
                done, _ = await asyncio.wait(
                    [finished, *tasks], return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for task in [finished, *tasks]:
                task.cancel()
            await asyncio.gather(finished, *tasks, return_exceptions=True)
        return any(t in done for t in tasks)

    async def after_events(self, count: int) -> bool:
        """Wait until ``count`` more events were delivered; False if the playlist ended first."""
        return await self._first(self.pbx.wait_for_events_sent(self.pbx.events_sent + count))

    async def next_hangup(self) -> bool:
        """Wait for the next Hangup action; False if the playlist ended first."""
        count = len(self.pbx.actions_named("Hangup")) + 1
        return await self._first(self.pbx.wait_for_action("Hangup", count))

    async def reconnected(self) -> None:
        """Wait until the guard logged in again (or the playlist ended)."""
        await self._first(self.pbx.wait_for_logins(self.pbx.logins + 1))

    # -- faults -------------------------------------------------------------------------------

    async def inject(self, plan: Iterable[str]) -> None:
        """Inject the faults of ``plan`` in order, each a random number of events later."""
        plan = list(plan)
        for done, kind in enumerate(plan):
            if not await self.after_events(self.spacing(len(plan) - done)):
                return
            await self.apply(kind)

    def note(self, what: str) -> None:
        """Write down what was done when, for a post-mortem next to the daemon's logs."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with (self._tmp / "faults.log").open("a", encoding="utf-8") as log:
            log.write(f"{stamp} events_sent={self.pbx.events_sent} {what}\n")

    async def apply(self, kind: str) -> None:
        """Inject one fault now (some wait for their moment: the next Hangup, a restart)."""
        self.note(f"fault {kind}")
        match kind:
            case "kill":
                await self.kill()
            case "kill-at-hangup":
                if await self.next_hangup():
                    await self.kill(kind=kind)
            case "kill-starting":
                await self.kill()
                # Again while it imports, migrates, restores, logs in or resyncs.
                await asyncio.sleep(self.rng.uniform(0.05, 1.5))
                await self.kill(kind="kill-starting")
            case "drop":
                self.pbx.drop_connections(lost_while_away=self.rng.randint(0, 30))
                self.tally.faults[kind] += 1
                await self.reconnected()
            case "drop-at-hangup-lost" | "drop-at-hangup-done":
                logins = self.pbx.logins
                self.pbx.drop_at_next_hangup(
                    carried_out=kind.endswith("done"), lost_while_away=self.rng.randint(0, 30)
                )
                if await self._first(self.pbx.wait_for_logins(logins + 1)):
                    self.tally.faults[kind] += 1
            case "half-open":
                self.pbx.make_half_open()
                self.tally.faults[kind] += 1
                await self.reconnected()
            case "pg-fast" | "pg-immediate":
                await self.postgres_outage(kind, kind.removeprefix("pg-"))
            case "pg-immediate-kill":
                await self.postgres_outage(kind, "immediate", kill=True)
            case "pg-down-restart-after-cut":
                await self.restart_without_database_after_unseen_cut(kind)
            case "lock" | "lock-kill":
                # Shorter and longer than the ledger's busy_timeout (5 s), calls going on.
                locker = await self.lock_sqlite(kind, self.rng.uniform(2.0, 8.0))
                if kind == "lock-kill":
                    await self.kill()
                async with asyncio.timeout(PATIENCE):
                    await locker.wait()
            case _:
                raise AssertionError(f"no fault named {kind!r}")

    async def kill(self, *, kind: str = "kill") -> None:
        """kill -9 the daemon and start it again at once (as systemd would)."""
        await self.daemon.kill()
        self.note(f"killed daemon {self.daemon.starts}")
        self.tally.faults[kind] += 1
        await self.daemon.start()

    async def postgres_outage(self, kind: str, mode: str, *, kill: bool = False) -> None:
        """Stop PostgreSQL (``fast`` or ``immediate``) for a while of calls, then start it."""
        cluster = self._postgres
        assert cluster is not None, "a PostgreSQL fault needs a PostgreSQL ledger"
        await asyncio.to_thread(cluster.stop, mode)
        self.tally.faults[kind] += 1
        try:
            await self.after_events(self.rng.randint(40, 160))
            if kill:
                await self.kill()
                await self.after_events(self.rng.randint(20, 120))
        finally:
            await asyncio.to_thread(cluster.start)

    async def restart_without_database_after_unseen_cut(self, kind: str) -> None:
        """Die between a hangup and its news; start again while PostgreSQL is down.

        The next Hangup is carried out as the connection breaks, so the daemon does not hear
        how the call ended; it is killed (once its offence is in the ledger, before it could
        reconnect) and starts again with the database stopped, so it can read only the
        journal at start-up.
        """
        cluster = self._postgres
        assert cluster is not None, "a PostgreSQL fault needs a PostgreSQL ledger"
        count = len(self.pbx.actions_named("Hangup")) + 1
        self.pbx.drop_at_next_hangup(carried_out=True)
        if not await self._first(self.pbx.wait_for_action("Hangup", count)):
            return
        channel = self.pbx.actions_named("Hangup")[count - 1].message.get("Channel")
        linkedid = next((c.linkedid for c in self.calls if c.trunk == channel), "")
        # The writer is quick, the reconnection waits at least 0.25 s: kill in between.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                while not await asyncio.to_thread(self._stored, linkedid):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        await self.daemon.kill()
        self.tally.faults["kill"] += 1
        self.note(f"killed daemon {self.daemon.starts} after the unseen cut of {channel}")
        await asyncio.to_thread(cluster.stop, "immediate")
        self.tally.faults[kind] += 1
        try:
            await self.daemon.start()
            await self.after_events(self.rng.randint(60, 200))
        finally:
            await asyncio.to_thread(cluster.start)

    def _stored(self, linkedid: str) -> bool:
        with self._database() as database:
            return any(
                e.call is not None and e.call.linkedid == linkedid
                for e in OffenceBook(database).offences()
            )

    async def lock_sqlite(self, kind: str, seconds: float) -> asyncio.subprocess.Process:
        """Have another process hold the SQLite ledger with BEGIN EXCLUSIVE for ``seconds``."""
        path = self.ledger_url.removeprefix("sqlite:///")
        locker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LOCKER,
            path,
            f"{seconds:.2f}",
            stdout=asyncio.subprocess.PIPE,
        )
        self._lockers.append(locker)
        assert locker.stdout is not None
        async with asyncio.timeout(PATIENCE):
            assert await locker.stdout.readline() == b"locked\n"
        self.tally.faults[kind] += 1
        return locker

    async def faults_over(self) -> None:
        """Let every fault end: the lock holders let go, the database is up."""
        async with asyncio.timeout(PATIENCE):
            for locker in self._lockers:
                await locker.wait()
        if self._postgres is not None and not self._postgres.running:
            await asyncio.to_thread(self._postgres.start)

    # -- the end ------------------------------------------------------------------------------

    async def finish(self) -> Tally:
        """Let the replay end and the ledger settle, stop the daemon, read the ledger, judge."""
        async with asyncio.timeout(PATIENCE * 2):
            await self.pbx.finished()
        await self.faults_over()
        await self.ledger_settled()
        drained = await self.daemon.stop()
        for _ in range(3):
            if drained:
                break
            # What a stop could not write waits in the journal for the next start.
            await self.daemon.start()
            async with asyncio.timeout(PATIENCE):
                await self.pbx.wait_for_logins(self.pbx.logins + 1)
            drained = await self.daemon.stop()
        if not drained:
            self.tally.problems.append("the journal was never drained into the ledger")
        rows = await self.ledger_rows()
        self.judge(rows)
        entries, calls = await asyncio.to_thread(self._books)
        self.judge_prices(entries)
        self.judge_call_records(calls)
        return self.tally

    def _books(self) -> tuple[list[OffenceEntry], list[CallSummary]]:
        with self._database() as database:
            return OffenceBook(database).offences(), CallLog(database).calls()

    def judge_call_records(self, records: Sequence[CallSummary]) -> None:
        """The call log too never says "hung up" for a call Asterisk answered."""
        trunks = {c.linkedid: c.trunk for c in self.calls}
        answered = self.pbx.answered_channels
        for record in records:
            trunk = trunks.get(record.call.linkedid)
            if record.outcome == Outcome.HUNG_UP.value and trunk in answered:
                self.tally.false_stopped += 1
                self.tally.problems.append(f"call record says hung up, was answered: {record}")

    def _database(self) -> LedgerDatabase:
        return LedgerDatabase.open(self.ledger_url, site=SITE, read_only=True)

    def seen(self, call: Call) -> bool:
        """Whether the guard was shown this call dialling: its DialBegin, or a listing."""
        return call.trunk in self.pbx.dial_shown_at or call.trunk in self.pbx.listed_channels

    async def ledger_settled(self) -> None:
        """Wait (bounded) until every forbidden call seen has its offence and its ending."""
        wanted = {c.linkedid for c in self.calls if c.forbidden and self.seen(c)}

        def settled() -> bool:
            with self._database() as database:
                ended = {
                    e.call.linkedid
                    for e in OffenceBook(database).offences()
                    if e.call is not None and e.final_outcome is not Outcome.CUT_ORDERED
                }
            return wanted <= ended

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PATIENCE / 3):
                # The ledger is another process's database: there is no event to wait on.
                while not await asyncio.to_thread(settled):  # noqa: ASYNC110
                    await asyncio.sleep(0.25)

    async def ledger_rows(self) -> list[dict[str, Any]]:
        """The ledger as ``pbxguard ledger --format json`` prints it."""
        process = await asyncio.create_subprocess_exec(
            *PBXGUARD,
            "ledger",
            "--config",
            str(self.config),
            "--format",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(PATIENCE):
            out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    def judge_prices(self, entries: Sequence[OffenceEntry]) -> None:
        """Check what each offence was priced on: its rung of the ladder and its talk time.

        An offence is priced from the person's earlier offences under its ladder, so its rung
        is one more than the number of them dated before it (the test's offences all fall in
        one window). A talk time is never longer than Asterisk's, answer to hangup.
        """
        tally = self.tally
        trunks = {c.linkedid: c.trunk for c in self.calls}
        ladders: dict[tuple[str, str], list[OffenceEntry]] = {}
        for entry in entries:
            if entry.call is None or entry.call.linkedid not in trunks:
                continue
            ladders.setdefault((entry.person_id, entry.ladder), []).append(entry)
            talked = self.pbx.talk_time(trunks[entry.call.linkedid])
            if entry.ending is None or entry.ending.talk_time <= timedelta(0):
                continue
            if talked is None or entry.ending.talk_time > talked + timedelta(milliseconds=1):
                tally.overstated += 1
                tally.problems.append(
                    f"talk time {entry.ending.talk_time} in the ledger, {talked} on the PBX: "
                    f"{entry.key}"
                )
        for ladder in ladders.values():
            for entry in ladder:
                earlier = sum(1 for other in ladder if other.at < entry.at)
                if entry.escalation_step != earlier + 1:
                    tally.misdated += 1
                    tally.problems.append(
                        f"priced as offence {entry.escalation_step}, is offence {earlier + 1} "
                        f"of {entry.person_id} under {entry.ladder}: {entry.key} at "
                        f"{entry.at.isoformat()}"
                    )

    def judge(self, rows: Sequence[dict[str, Any]]) -> None:
        """Count, from the ledger and the PBX, how the three promises held."""
        tally, pbx = self.tally, self.pbx
        answered = pbx.answered_channels
        hung_up = set(pbx.hung_up)
        hangups = pbx.actions_named("Hangup")
        targeted = {a.message.get("Channel") or "" for a in hangups}
        by_call: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_call.setdefault(row["linkedid"], []).append(row)
        known = {c.linkedid for c in self.calls}
        call_rules = {e.rule for e in ORACLE.values() if e is not None}
        for row in rows:
            if not row["linkedid"] and row["rule"] not in call_rules:
                tally.other_rows += 1  # reachability of the duty phones: not a call's offence
            elif row["linkedid"] not in known:
                tally.misattributed += 1
                tally.problems.append(f"a row for no call of the playlist: {row}")
        for call in self.calls:
            mine = by_call.get(call.linkedid, [])
            touched = bool(targeted & call.channels) or bool(mine)
            if call.expected is None:
                if touched and call.emergency:
                    tally.emergency_touched += 1
                    tally.problems.append(f"emergency call touched: {call}, rows {mine}")
                elif touched:
                    tally.allowed_touched += 1
                    tally.problems.append(f"allowed call touched: {call}, rows {mine}")
                continue
            if not self.seen(call):
                # Dialled and gone while the guard was away: nothing told it of the call.
                tally.unseen += 1
                continue
            tally.expected += 1
            if not mine:
                tally.lost += 1
                tally.problems.append(f"offence lost: {call}")
                continue
            tally.recorded += 1
            tally.doubled += len(mine) - 1
            if len(mine) > 1:
                tally.problems.append(f"offence doubled: {call}: {mine}")
            for row in mine:
                got = Expected(row["rule"], row["person_id"], row["number"])
                if got != call.expected:
                    tally.misattributed += 1
                    tally.problems.append(f"misattributed: {call}: {got}")
                outcome = row["outcome_code"]
                tally.outcomes[outcome] += 1
                if outcome == Outcome.CUT_ORDERED.value:
                    tally.unsettled += 1
                    tally.problems.append(f"ending never learnt: {call}")
                if call.trunk in answered and outcome in ("hung_up", "cut_ordered"):
                    tally.false_stopped += 1
                    tally.problems.append(f"says stopped, was answered: {call}: {outcome}")
                if call.trunk not in answered and outcome == "not_stopped":
                    tally.problems.append(f"says not stopped, was never answered: {call}")
            if call.trunk in answered and call.trunk not in hung_up:
                tally.left_running += 1
                tally.problems.append(f"left running: {call}")
            dialled = pbx.dial_shown_at.get(call.trunk)
            if dialled is not None:
                after = [
                    h.at
                    for h in hangups
                    if h.message.get("Channel") == call.trunk and h.at >= dialled
                ]
                if after:
                    tally.reactions.append(min(after) - dialled)
