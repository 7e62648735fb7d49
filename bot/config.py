"""Settings: one pydantic-settings class read from the environment and `.env`, built once in `main()`."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.limits import Access, Limits
from bot.logs import MIN_SECRET_LENGTH
from bot.wavespeed.schedule import FLOOR as POLL_FLOOR

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["plain", "json"]
DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT = "0.0.0.0", 8080


class Settings(BaseSettings):
    """Every setting the bot reads. Names are a contract: `.env.example` documents each one."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_token: SecretStr = Field(min_length=1)
    wavespeed_api_key: SecretStr = Field(min_length=1)

    wavespeed_base_url: str = "https://api.wavespeed.ai"
    wavespeed_model: str = "wavespeed-ai/flux-kontext-pro/text-to-image"
    wavespeed_edit_model: str = "wavespeed-ai/flux-kontext-pro"
    wavespeed_multi_model: str = "wavespeed-ai/flux-kontext-pro/multi"

    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"

    # Push (optional): WaveSpeed posts finished predictions to WEBHOOK_URL + /wavespeed/webhook.
    webhook_url: str | None = None
    wavespeed_webhook_secret: SecretStr | None = None
    # The one HTTP server (metrics, health, the webhook): HTTP_HOST/HTTP_PORT, or their older names
    # WEBHOOK_HOST/WEBHOOK_PORT; resolved into http_host/http_port (0: any free port).
    http_host: str | None = None
    http_port: int | None = Field(default=None, ge=0, le=65535)
    webhook_host: str | None = None
    webhook_port: int | None = Field(default=None, ge=0, le=65535)
    # Sync (optional, without a public address): each submit waits for its finished prediction.
    wavespeed_sync_mode: bool = False
    # Tuning (rarely changed; the tests shrink them): the result-poll rhythm and the first poll until
    # the bot has learned how long predictions take (never below the schedule's 0.25 s floor: every
    # poll is a request on the host's key), and the least time between two edits of one placeholder.
    poll_interval_seconds: float = Field(default=0.8, ge=POLL_FLOOR, le=60)
    first_poll_seconds: float = Field(default=2.0, ge=POLL_FLOOR, le=60)
    progress_interval_seconds: float = Field(default=1.5, ge=0.05, le=60)

    # sqlite:///path (one process, the default) or postgresql://user@host:port/db (several processes).
    database_url: str = "sqlite:///data/bot.db"
    # How long a process's claim on its jobs lasts without renewal: a process that dies is taken
    # over by another within about this long (PostgreSQL; one SQLite process adopts all at start).
    lease_seconds: float = Field(default=10.0, ge=1, le=600)
    discord_guild_ids: Annotated[tuple[int, ...], NoDecode] = ()
    # Sharding across processes: SHARD_COUNT shards in all, SHARD_IDS run here (empty: discord.py
    # asks Discord how many and runs them all in this process).
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: Annotated[tuple[int, ...], NoDecode] = ()

    job_timeout_seconds: float = Field(default=600.0, gt=0, le=3600)
    max_concurrent_jobs: int = Field(default=3, ge=1, le=1000)
    # Downloaded images held at once while results are delivered (bot.jobs.memory), in MiB.
    delivery_memory_mb: int = Field(default=64, ge=8, le=4096)
    # Docker's `stop` waits 10 s before SIGKILL: finish within that by default.
    shutdown_grace_seconds: float = Field(default=8.0, ge=0, le=600)
    job_retention_days: float = Field(default=30.0, gt=0, le=3650)

    # Cost control, in images; 0 turns a limit off.
    user_max_active_images: int = Field(default=8, ge=0)
    user_window_images: int = Field(default=20, ge=0)
    user_window_minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)
    guild_daily_images: int = Field(default=200, ge=0)
    global_daily_images: int = Field(default=1000, ge=0)
    price_per_image: float = Field(default=0.04, ge=0)
    allowed_guild_ids: Annotated[tuple[int, ...], NoDecode] = ()
    allowed_user_ids: Annotated[tuple[int, ...], NoDecode] = ()
    allow_dms: bool = False
    log_level: LogLevel = "INFO"
    # Third-party loggers (discord.py, aiosqlite, aiohttp, asyncio) stop here even when LOG_LEVEL is
    # more verbose: at DEBUG they print every SQL parameter (prompts) and every gateway event.
    log_level_libraries: LogLevel = "INFO"
    # `json`: one JSON object per line (job, guild and prediction ids as fields), for a log collector.
    log_format: LogFormat = "plain"
    # Below this many dollars on the WaveSpeed account the bot warns (log, moderation logs); 0 = never.
    low_balance_usd: float = Field(default=5.0, ge=0)
    balance_check_minutes: float = Field(default=10.0, gt=0, le=24 * 60)

    @field_validator("wavespeed_base_url", "discord_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Settings:
        if self.webhook_url and not self.wavespeed_webhook_secret:
            raise ValueError("WEBHOOK_URL needs WAVESPEED_WEBHOOK_SECRET to check WaveSpeed's signatures")
        if self.webhook_url and self.wavespeed_sync_mode:
            raise ValueError("choose one of WEBHOOK_URL (push) and WAVESPEED_SYNC_MODE, not both")
        return self

    @model_validator(mode="after")
    def _one_http_address(self) -> Settings:
        """HTTP_HOST/HTTP_PORT, else the older WEBHOOK_HOST/WEBHOOK_PORT, else 0.0.0.0:8080. Both
        names with different values is a mistake worth stopping for: which one was meant?"""
        for new, old, default in (
            ("http_host", "webhook_host", DEFAULT_HTTP_HOST),
            ("http_port", "webhook_port", DEFAULT_HTTP_PORT),
        ):
            value, alias = getattr(self, new), getattr(self, old)
            if value is not None and alias is not None and value != alias:
                raise ValueError(f"{new.upper()} and {old.upper()} differ: set only {new.upper()}")
            setattr(self, new, value if value is not None else alias if alias is not None else default)
        return self

    @property
    def listen(self) -> tuple[str, int]:
        """Where the HTTP server listens (host, port)."""
        assert self.http_host is not None and self.http_port is not None  # resolved by _one_http_address
        return self.http_host, self.http_port

    @model_validator(mode="after")
    def _secrets_long_enough(self) -> Settings:
        """A key this short is a typo or a placeholder, never a real credential, and the log
        redactor would have to scrub it out of ordinary words ("P" out of "PyNaCl"): refuse it, in
        one line naming every such setting and never its value. (Empty is "missing", reported by
        the fields themselves; an empty webhook secret means push is off.)"""
        values = {
            "DISCORD_TOKEN": self.discord_token,
            "WAVESPEED_API_KEY": self.wavespeed_api_key,
            "WAVESPEED_WEBHOOK_SECRET": self.wavespeed_webhook_secret,
        }
        short = [name for name, value in values.items() if value and len(value) < MIN_SECRET_LENGTH]
        if short:
            raise ValueError(
                f"{' and '.join(short)} {'is' if len(short) == 1 else 'are'} too short to be real "
                f"(under {MIN_SECRET_LENGTH} characters): copy the whole value again"
            )
        return self

    @field_validator("discord_gateway_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("use sqlite:///path/to/file.db or postgresql://user@host:port/database")
        return value

    @model_validator(mode="after")
    def _shards(self) -> Settings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the number of shards in all processes together)")
        if self.shard_count is not None and any(not 0 <= i < self.shard_count for i in self.shard_ids):
            raise ValueError("every SHARD_IDS value must be from 0 to SHARD_COUNT - 1")
        return self

    @property
    def runs_shard_zero(self) -> bool:
        """This process runs shard 0 (or every shard): it alone syncs the commands."""
        return not self.shard_ids or 0 in self.shard_ids

    @field_validator("discord_guild_ids", "allowed_guild_ids", "allowed_user_ids", "shard_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("shard_count", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", "log_level_libraries", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("http_host", "http_port", "webhook_host", "webhook_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def limits(self) -> Limits:
        return Limits(
            user_active_images=self.user_max_active_images,
            user_window_images=self.user_window_images,
            user_window_seconds=self.user_window_minutes * 60,
            guild_daily_images=self.guild_daily_images,
            global_daily_images=self.global_daily_images,
        )

    @property
    def access(self) -> Access:
        return Access(frozenset(self.allowed_guild_ids), frozenset(self.allowed_user_ids), self.allow_dms)

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in a log line, a message or an exception."""
        webhook = self.wavespeed_webhook_secret.get_secret_value() if self.wavespeed_webhook_secret else ""
        # The HMAC key is the webhook secret without its `whsec_` prefix: scrub both forms.
        values = (
            self.discord_token.get_secret_value(),
            self.wavespeed_api_key.get_secret_value(),
            webhook,
            webhook.strip().removeprefix("whsec_"),
            urlsplit(self.database_url).password or "",
        )
        return tuple(dict.fromkeys(s for s in values if s))


class ConfigError(Exception):
    """A setting is missing or invalid. The message names the setting and never repeats its value."""


def describe_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in item["loc"]).upper() or "settings"
        reason = "is required" if item["type"] == "missing" else f"is invalid: {item['msg']}"
        lines.append(f"  {name} {reason}")
    return "Configuration error (set these in the environment or in .env):\n" + "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(describe_errors(error)) from None
