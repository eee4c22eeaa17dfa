"""What every command needs: the settings, the site's policy, the ledger, the time.

Commands that only read (listings, reports, verification) open the ledger read-only and never
migrate it: an auditor can point them at a read-only copy. Commands that record something open
it for writing and bring a new or older schema up to date first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from pbxguard.adapters.clock import SystemClock
from pbxguard.adapters.ledger import LedgerDatabase
from pbxguard.adapters.ledger.database import sync_url
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import Settings, load_settings
from pbxguard.domain.policy import Policy
from pbxguard.errors import ConfigError


class CliContext:
    """Settings, policy and ledger for one command, loaded when first needed."""

    def __init__(
        self,
        config: str | None,
        *,
        policy_file: str | None = None,
        rota_may_be_missing: bool = False,
    ) -> None:
        self._config = config
        self._policy_file = policy_file
        self._rota_may_be_missing = rota_may_be_missing
        self.clock = SystemClock()

    @cached_property
    def settings(self) -> Settings:
        """The settings file (or the defaults), with the environment's overrides."""
        return load_settings(self._config)

    @cached_property
    def loaded(self) -> LoadedPolicy:
        """The site's policy (the default bundle when none is configured)."""
        path = self._policy_file or self.settings.policy
        return load_policy(path, rota_may_be_missing=self._rota_may_be_missing)

    @property
    def policy(self) -> Policy:
        """The site's policy."""
        return self.loaded.policy

    @property
    def zone(self) -> ZoneInfo:
        """The site's timezone."""
        return self.policy.timezone

    def now(self) -> datetime:
        """The current time."""
        return self.clock.now()

    def parse_time(self, text: str, option: str) -> datetime:
        """Parse an ISO date-time; one without an offset is in the site's timezone.

        Raises:
            ConfigError: not an ISO date-time.
        """
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ConfigError(
                f"{option} 不是 ISO 时间 — {option} {text!r} is not an ISO date-time "
                "(2026-11-23T09:30)"
            ) from exc
        return value if value.tzinfo is not None else value.replace(tzinfo=self.zone)

    def _missing_sqlite(self) -> bool:
        url = sync_url(self.settings.ledger_url)
        return url.get_backend_name() == "sqlite" and not Path(str(url.database)).exists()

    @contextmanager
    def reading(self) -> Iterator[LedgerDatabase | None]:
        """Open the ledger read-only (None when no ledger was ever created here)."""
        if self._missing_sqlite():
            yield None
            return
        database = LedgerDatabase.open(
            self.settings.ledger_url, site=self.policy.site, read_only=True
        )
        try:
            database.require_current()
            yield database
        finally:
            database.close()

    @contextmanager
    def writing(self) -> Iterator[LedgerDatabase]:
        """Open the ledger to record something, creating or updating its schema first."""
        settings = self.settings
        if self._missing_sqlite():
            Path(str(sync_url(settings.ledger_url).database)).parent.mkdir(
                parents=True, exist_ok=True
            )
        database = LedgerDatabase.open(
            settings.ledger_url, site=self.policy.site, busy_timeout=settings.ledger.busy_timeout
        )
        try:
            if database.revision() != database.head_revision():
                database.migrate(grant_to=settings.ledger.writer_role)
            yield database
        finally:
            database.close()
