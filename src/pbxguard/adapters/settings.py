"""Settings: a TOML file, overridden by ``PBXGUARD_*`` environment variables.

Nested keys use a double underscore: ``PBXGUARD_AMI__SECRET`` overrides ``[ami] secret``.
Secrets are `SecretStr` and never printed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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
    """The fine ledger database and its spool for outages."""

    url: str = "sqlite+aiosqlite:///pbxguard.sqlite3"
    spool: str = "pbxguard-ledger.spool"


class MqttSettings(_Section):
    """The MQTT broker for decisions, offences and alerts (optional)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    spool: str = "pbxguard-mqtt.spool"


class Settings(BaseSettings):
    """Everything the daemon needs to run."""

    model_config = SettingsConfigDict(
        env_prefix="PBXGUARD_", env_nested_delimiter="__", extra="forbid"
    )

    policy: str | None = None
    log_level: str = "info"
    ami: AmiSettings = AmiSettings()
    agi: AgiSettings = AgiSettings()
    ledger: LedgerSettings = LedgerSettings()
    mqtt: MqttSettings = MqttSettings()

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
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path or 'settings'}: {where}: {first['msg']}") from exc
    if base is not None and settings.policy and not Path(settings.policy).is_absolute():
        settings = settings.model_copy(update={"policy": str(base / settings.policy)})
    return settings
