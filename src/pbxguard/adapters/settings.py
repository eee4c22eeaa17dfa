"""Settings: a TOML file, overridden by ``PBXGUARD_*`` environment variables.

Nested keys use a double underscore: ``PBXGUARD_AMI__SECRET`` overrides ``[ami] secret``.
Secrets are `SecretStr` and never printed.

Where state lives: everything pbxguard writes (the SQLite ledger by default, the write-ahead
journal, the MQTT outbox) goes under ``state_dir``: the setting, else ``$STATE_DIRECTORY`` (set
by systemd's ``StateDirectory=``), else ``$XDG_STATE_HOME/pbxguard`` (``~/.local/state/pbxguard``).
Never the working directory. Relative paths in a settings file are relative to that file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pbxguard.adapters.validation_text import describe
from pbxguard.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AmiSettings(_Section):
    """Where the Asterisk Manager Interface is and how to log in."""

    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = "pbxguard"
    secret: SecretStr = SecretStr("")
    ping_interval: float = Field(default=10.0, gt=0)
    ping_timeout: float = Field(default=5.0, gt=0)
    action_timeout: float = Field(default=5.0, gt=0)


class AgiSettings(_Section):
    """The FastAGI server the dialplan asks before dialling."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    deadline: float = Field(default=1.5, gt=0, le=10)
    # Connections open at once; one more is answered "failure" at once (the dialplan's fail
    # mode). Half of the 1,024 descriptors systemd gives a service by default.
    max_connections: int = Field(default=512, ge=1, le=1_000_000)


class LedgerSettings(_Section):
    """The fine ledger database.

    ``url`` defaults to an SQLite file in the state directory. On PostgreSQL the daemon should
    connect as a role that may only INSERT and SELECT; ``owner_url`` (a role that owns the
    tables) is used for ``pbxguard ledger migrate``, which grants ``writer_role`` just that.
    """

    url: str = ""
    owner_url: SecretStr = SecretStr("")
    writer_role: str = ""
    busy_timeout: float = Field(default=5.0, gt=0, le=60)
    # Where the ledger writer runs: a process of its own (off the event loop's interpreter, the
    # default) or a thread of the daemon (docs/decisions/0019).
    writer: Literal["process", "thread"] = "process"


class JournalSettings(_Section):
    """The write-ahead journal in front of the ledger (the spool for database outages).

    ``sync``: ``group`` makes appends durable in group commits by a thread of their own (a
    power cut may lose the last milliseconds; a crash of pbxguard loses nothing); ``always``
    fsyncs every append before the guard acts (slower); ``none`` leaves it to the kernel.
    """

    sync: Literal["group", "always", "none"] = "group"
    segment_mb: int = Field(default=16, ge=1, le=1024)
    batch: int = Field(default=500, ge=1, le=100_000)


class MqttSettings(_Section):
    """The MQTT broker for decisions, offences and alerts (optional)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    spool: str = ""


class ConsoleSettings(_Section):
    """The audit and approval console (a browser UI and a JSON API), off by default.

    It listens on loopback unless told otherwise; put a TLS reverse proxy in front of it for
    other machines (docs/console.md). ``secure_cookies``: ``auto`` marks the session cookie
    Secure when the request came over HTTPS (as the proxy at ``trusted_proxies`` reports it),
    ``always``/``never`` force it. ``staff``: whether staff accounts may sign in.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    session_hours: float = Field(default=8.0, gt=0, le=24 * 14)
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    trusted_proxies: str = "127.0.0.1"
    staff: bool = True


class DndSettings(_Section):
    """The do-not-disturb lists (DND-1): where imports put them, how often the daemon looks."""

    dir: str = ""  # default: <state_dir>/dnd
    check_interval: float = Field(default=5.0, gt=0, le=3600)


class WebhookSettings(_Section):
    """An HTTP endpoint that receives every emergency notice as a JSON POST (optional)."""

    url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    # Sent as "Authorization: Bearer <token>" when set (PBXGUARD_EMERGENCY__WEBHOOK__TOKEN).
    token: SecretStr = SecretStr("")
    timeout: float = Field(default=5.0, gt=0, le=60)


class MailSettings(_Section):
    """The SMTP server that e-mails every emergency notice to the security desk (optional)."""

    host: str = ""
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = ""
    to: list[str] = []
    username: str = ""
    password: SecretStr = SecretStr("")
    security: Literal["none", "starttls", "tls"] = "none"
    timeout: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _addressed(self) -> MailSettings:
        if self.host and (not self.sender or not self.to):
            raise ValueError("an SMTP host needs a sender and at least one address in `to`")
        return self


class EmergencySettings(_Section):
    """How emergency calls reach the security desk besides MQTT: a webhook, e-mail.

    A delivery that fails is tried again with jittered exponential backoff, ``attempts`` times
    in all, then given up (and logged): a desk that is down never holds anything up.
    """

    webhook: WebhookSettings = WebhookSettings()
    mail: MailSettings = MailSettings()
    attempts: int = Field(default=6, ge=1, le=100)
    backoff_min: float = Field(default=1.0, gt=0, le=3600)
    backoff_max: float = Field(default=60.0, gt=0, le=3600)


class Settings(BaseSettings):
    """Everything the daemon needs to run."""

    model_config = SettingsConfigDict(
        env_prefix="PBXGUARD_", env_nested_delimiter="__", extra="forbid"
    )

    policy: str | None = None
    log_level: str = "info"
    state_dir: str = ""
    ami: AmiSettings = AmiSettings()
    agi: AgiSettings = AgiSettings()
    ledger: LedgerSettings = LedgerSettings()
    journal: JournalSettings = JournalSettings()
    mqtt: MqttSettings = MqttSettings()
    console: ConsoleSettings = ConsoleSettings()
    dnd: DndSettings = DndSettings()
    emergency: EmergencySettings = EmergencySettings()

    @property
    def state_path(self) -> Path:
        """Where pbxguard keeps what it writes (see the module docstring)."""
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    @property
    def ledger_url(self) -> str:
        """The ledger's database URL (an SQLite file in the state directory by default)."""
        return self.ledger.url or f"sqlite:///{self.state_path / 'ledger.sqlite3'}"

    @property
    def journal_path(self) -> Path:
        """The write-ahead journal's directory."""
        return self.state_path / "journal"

    @property
    def dnd_path(self) -> Path:
        """Where the do-not-disturb lists are kept."""
        return Path(self.dnd.dir) if self.dnd.dir else self.state_path / "dnd"

    @property
    def mqtt_spool_path(self) -> Path:
        """Where MQTT messages wait while the broker is away."""
        return Path(self.mqtt.spool) if self.mqtt.spool else self.state_path / "mqtt-outbox"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Let the environment override the file (init values come from the file)."""
        return env_settings, init_settings


def default_state_dir() -> Path:
    """Return the state directory when none is configured."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "pbxguard"


def _anchored(value: str, base: Path) -> str:
    return value if not value or Path(value).is_absolute() else str(base / value)


def _anchored_url(url: str, base: Path) -> str:
    for scheme in ("sqlite:///", "sqlite+aiosqlite:///"):
        if url.startswith(scheme):
            path = url[len(scheme) :]
            if path and not path.startswith("/"):
                return f"{scheme}{base / path}"
    return url


def load_settings(path: str | Path | None) -> Settings:
    """Read settings from ``path`` (or defaults) and the environment.

    Raises:
        ConfigError: the file is missing, not TOML, or holds an invalid value.
    """
    data: dict[str, Any] = {}
    base: Path | None = None
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text("utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{file}: settings file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        base = file.parent
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path or 'settings'}: {describe(exc.errors()[0])}") from exc
    if base is not None:
        # Relative paths in a settings file mean "next to this file", wherever pbxguard runs.
        settings = settings.model_copy(
            update={
                "policy": _anchored(settings.policy or "", base) or None,
                "state_dir": _anchored(settings.state_dir, base),
                "ledger": settings.ledger.model_copy(
                    update={"url": _anchored_url(settings.ledger.url, base)}
                ),
                "mqtt": settings.mqtt.model_copy(
                    update={"spool": _anchored(settings.mqtt.spool, base)}
                ),
                "dnd": settings.dnd.model_copy(update={"dir": _anchored(settings.dnd.dir, base)}),
            }
        )
    return settings
