"""``pbxguard run`` as a real process beside the test PBX, and the CLI commands around it.

The daemon runs exactly as a site runs it (``pbxguard run --config FILE``) with a settings
file written for the test site: its AMI connection goes through the tier's proxy, its FastAGI
server listens where the dialplan's ``PBXGUARD_AGI`` points, and its ledger is a fresh SQLite
file. Its JSON log lines (stderr is not a terminal) are read as they come so a test can wait
for one. A test can stop it (SIGTERM), kill it (SIGKILL), or stall it (SIGSTOP/SIGCONT).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tomllib
from collections.abc import Callable
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from tests.support.cli import run_pbxguard_process as run_pbxguard
from tests.support.pbx import processes

PBXGUARD = Path(sys.executable).with_name("pbxguard")
REFERENCE_POLICY = Path(str(resources.files("pbxguard.policies").joinpath("reference-site.toml")))
WAIT = 20.0
LogLine = dict[str, Any]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


#: People the tier adds for two of its bypass phones (2999 stays missing from the directory).
BYPASS_PEOPLE = {
    "2998": ("bypass-2998", "旁路测试甲 Bypass A"),
    "2997": ("bypass-2997", "旁路测试乙 Bypass B"),
}


def write_test_policy(
    path: Path,
    *,
    today: date,
    occupancy_grace: int,
    pin_classes: tuple[str, ...],
    site_name: str | None = None,
) -> Path:
    """Write a site policy that extends the reference site with what the tier needs.

    - ``pin_classes``: the classes a caller may unlock with an authorization code (the
      reference site has none), so the dialplan's PIN route can be exercised.
    - ``site_name``: the ``[site] name`` (the reference site's when not given).
    - The reference site's people, and a staff member for each of ``BYPASS_PEOPLE``.
    - A special period (like Golden Week) around ``today``: the duty phones' DT-1 standby then
      runs around the clock, so the tier's result does not depend on the hour it runs.
    - The reference site's lines with the alarm phone's occupancy grace shortened to
      ``occupancy_grace`` seconds (lists replace whole, so every line is repeated here).
    """
    reference = tomllib.loads(REFERENCE_POLICY.read_text("utf-8"))
    out = [
        "# The real-PBX tier's site policy: the reference site, plus what the tier needs.",
        "schema = 1",
        f"extends = {_toml_value(str(REFERENCE_POLICY))}",
        "",
        "[authorization]",
        f"pin_classes = {_toml_value(list(pin_classes))}",
        "",
        "[[calendar.periods]]",
        'name = "测试值守期 test standby period"',
        f"first = {today - timedelta(days=1)}",
        f"last = {today + timedelta(days=1)}",
    ]
    if site_name is not None:
        out[3:3] = ["[site]", f"name = {_toml_value(site_name)}", ""]
    people = [dict(person) for person in reference["people"]]
    people += [
        {
            "id": person_id,
            "name": name,
            "department": "测试部",
            "role": "staff",
            "extensions": [ext],
        }
        for ext, (person_id, name) in BYPASS_PEOPLE.items()
    ]
    for person in people:
        out += ["", "[[people]]", *(f"{k} = {_toml_value(v)}" for k, v in person.items())]
    for line in reference["lines"]:
        fields = dict(line)
        if "occupancy_grace" in fields:
            fields["occupancy_grace"] = occupancy_grace
        out += ["", "[[lines]]", *(f"{k} = {_toml_value(v)}" for k, v in fields.items())]
    path.write_text("\n".join(out) + "\n", "utf-8")
    return path


def write_settings(
    path: Path,
    *,
    policy: Path,
    ami_port: int,
    ami_secret: str,
    agi_port: int,
    workdir: Path,
    ledger_url: str | None = None,
) -> Path:
    """Write ``pbxguard.toml`` for one daemon run; its ledger lives in ``workdir``.

    ``ledger_url`` names another ledger (a PostgreSQL that several guards share).
    """
    url = ledger_url or "sqlite:///" + str(workdir / "ledger.sqlite3")
    path.write_text(
        f"policy = {_toml_value(str(policy))}\n"
        'log_level = "debug"\n'
        f"state_dir = {_toml_value(str(workdir / 'state'))}\n"
        "[ami]\n"
        'host = "127.0.0.1"\n'
        f"port = {ami_port}\n"
        'username = "pbxguard"\n'
        f"secret = {_toml_value(ami_secret)}\n"
        "ping_interval = 2\n"
        "ping_timeout = 2\n"
        "[agi]\n"
        'host = "127.0.0.1"\n'
        f"port = {agi_port}\n"
        "[ledger]\n"
        f"url = {_toml_value(url)}\n",
        "utf-8",
    )
    return path


class PbxGuardProcess:
    """One ``pbxguard run`` process and its settings file."""

    def __init__(self, settings: Path, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.logs: list[LogLine] = []
        self.raw_stderr: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.stalled = False

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    async def start(self, *, ready: bool = True) -> None:
        """Start the daemon and wait until it serves FastAGI and has resynced over AMI.

        With ``ready=False`` it returns as soon as the process runs.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PBXGUARD_")}
        self._process = await asyncio.create_subprocess_exec(
            str(PBXGUARD),
            "run",
            "--config",
            str(self.settings),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
            preexec_fn=processes.die_with_parent,
        )
        processes.started(self._process.pid)
        self._reader = asyncio.create_task(self._read_logs())
        if ready:
            await self.wait_for_log("fastagi.listening")
            await self.wait_for_log("resync done")

    async def _read_logs(self) -> None:
        process = self._process
        assert process is not None
        assert process.stderr is not None
        with (self.workdir / "pbxguard.log").open("a", encoding="utf-8") as copy:
            while line := await process.stderr.readline():
                text = line.decode("utf-8", "replace").rstrip("\n")
                copy.write(text + "\n")
                self.raw_stderr.append(text)
                if text.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        self.logs.append(json.loads(text))
                self._changed.set()
                self._changed = asyncio.Event()
        self._changed.set()

    def logged(self, event: str, match: Callable[[LogLine], bool] | None = None) -> list[LogLine]:
        """Log lines of one event (and matching ``match``), oldest first."""
        return [
            line
            for line in self.logs
            if line.get("event") == event and (match is None or match(line))
        ]

    async def wait_for_log(
        self,
        event: str,
        match: Callable[[LogLine], bool] | None = None,
        *,
        count: int = 1,
        within: float = WAIT,
    ) -> LogLine:
        """Wait for the ``count``-th log line of ``event`` (matching ``match``); return it."""
        async with asyncio.timeout(within):
            while True:
                found = self.logged(event, match)
                if len(found) >= count:
                    return found[count - 1]
                if self._reader is not None and self._reader.done():
                    raise RuntimeError(
                        f"pbxguard exited ({self.returncode}) before logging {event!r}: "
                        + "\n".join(self.raw_stderr[-20:])
                    )
                changed = self._changed
                await changed.wait()

    def stall(self) -> None:
        """SIGSTOP: the process keeps its sockets, the kernel keeps accepting, nothing answers."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGSTOP)
        self.stalled = True

    def resume(self) -> None:
        """SIGCONT after :meth:`stall`."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
        self.stalled = False

    def kill(self) -> None:
        """SIGKILL: gone at once, nothing flushed."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
        self.stalled = False

    async def stop(self, within: float = WAIT) -> int:
        """SIGTERM (after SIGCONT if stalled) and wait; SIGKILL if it does not stop in time."""
        process = self._process
        if process is None:
            return 0
        if process.returncode is None:
            if self.stalled:
                self.resume()
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(within):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL)
                await process.wait()
        processes.reaped(process.pid)
        if self._reader is not None:
            await self._reader
        assert process.returncode is not None
        return process.returncode

    async def wait_exited(self, within: float = WAIT) -> int:
        """Wait for the process to end by itself (after :meth:`kill`)."""
        assert self._process is not None
        async with asyncio.timeout(within):
            await self._process.wait()
        processes.reaped(self._process.pid)
        if self._reader is not None:
            await self._reader
        assert self._process.returncode is not None
        return self._process.returncode

    async def command(self, *args: str) -> str:
        """Run another pbxguard command against the same settings; return its stdout.

        Raises:
            AssertionError: the command failed (its stderr is in the message).
        """
        done = await run_pbxguard(self.settings, *args)
        assert done.returncode == 0, f"pbxguard {' '.join(args)}: {done.stderr}"
        return done.stdout

    async def ledger(self) -> list[dict[str, Any]]:
        """The offences in the ledger, read with ``pbxguard ledger --format json``."""
        rows: list[dict[str, Any]] = json.loads(await self.command("ledger", "--format", "json"))
        return rows

    async def wait_for_offences(
        self, match: Callable[[dict[str, Any]], bool], count: int = 1, within: float = WAIT
    ) -> list[dict[str, Any]]:
        """Read the ledger until ``count`` offences match (the ledger has no event to wait on)."""
        async with asyncio.timeout(within):
            while True:
                rows = [row for row in await self.ledger() if match(row)]
                if len(rows) >= count:
                    return rows
                await asyncio.sleep(0.5)
