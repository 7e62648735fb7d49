"""Logging set-up: the bot's own lines at LOG_LEVEL, third-party libraries' lines at most at
LOG_LEVEL_LIBRARIES, and the secrets and interaction tokens scrubbed from every line written.

The scrubbing is a second line of defence: the bot never logs a secret on purpose, but libraries
log URLs (an interaction's token is part of its webhook URL), request payloads and gateway events
at DEBUG, and an exception's text can quote a request.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType

REDACTED = "[redacted]"
# No real credential is this short (Discord bot tokens are ~70 characters, API keys 30+). A shorter
# "secret" could only be scrubbed out of ordinary words, so config refuses one and the redactor
# ignores one.
MIN_SECRET_LENGTH = 12
# Every logger under this name is the bot's own; every other one belongs to a library.
BOT_LOGGER = "bot"

# Characters a secret or token is made of; a secret only counts where it is not glued to more of them.
_ALNUM = "A-Za-z0-9"
# Where an interaction token shows up in library lines:
#   - webhook URLs, /webhooks/<application id>/<token>/messages/@original, and the callback URL
#     /interactions/<interaction id>/<token>/callback (discord.py logs both, at DEBUG and in errors);
#   - a `token` field (gateway events are logged as dicts at DEBUG); the value must be long, so
#     "token: None" or "token=abc" stay as they are;
#   - anywhere else (an SQL parameter, say): Discord's interaction tokens are base64 of
#     "interaction:<id>:...", so they all begin with the same 16 characters.
_TOKENS = re.compile(
    r"(?P<url>/(?:webhooks|interactions)/\d+/)[^/\s?#'\"<>]+"
    rf"|(?P<key>(?<![{_ALNUM}])(?:[A-Za-z]+_)?(?i:token)[\"']?\s*[:=]\s*[\"']?)[{_ALNUM}_\-.]{{16,}}"
    r"|aW50ZXJhY3Rpb246[A-Za-z0-9_\-.=]*"
)


def _token_replacement(match: re.Match[str]) -> str:
    return (match.group("url") or match.group("key") or "") + REDACTED


class Redactor:
    """Replaces the configured secrets and every interaction token in a text.

    A secret is replaced only as a whole token: where the characters on both sides are not letters
    or digits. So a secret inside a URL (`?key=<secret>&`, `/<secret>/`), a header (`Bearer <secret>`)
    or an exception's message (`'<secret>'`) goes, while a string that merely contains it (a short
    secret "P" inside "PyNaCl") is left alone. Secrets under MIN_SECRET_LENGTH are ignored: they
    cannot be real, and as whole words they would still rewrite ordinary text ("a" in "a job").
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        usable = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._secrets = (
            re.compile(rf"(?<![{_ALNUM}])(?:{'|'.join(map(re.escape, usable))})(?![{_ALNUM}])") if usable else None
        )

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        return _TOKENS.sub(_token_replacement, text)


# The job a log line is about, for every line written by the task that runs it (a context variable:
# each asyncio task has its own copy). JSON lines carry these as fields.
JOB_FIELDS = ("job_id", "guild_id", "prediction_id")
_job: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar("imagine_job", default=None)


def job_context(*, job_id: int, guild_id: int | None, prediction_id: str | None) -> None:
    """From now on, in this task (and the tasks it starts), log lines are about this job."""
    _job.set({"job_id": job_id, "guild_id": guild_id, "prediction_id": prediction_id})


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts the whole line (tracebacks included) before it is written."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the job's ids when the
    line is about a job (`job_context`, or `extra={"job_id": ...}`), and the traceback if any. Every
    text is redacted before it is encoded."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        for name, value in (_job.get() or {}).items():
            if value is not None:
                line[name] = value
        for name in JOB_FIELDS:  # an explicit `extra` wins over the task's job
            if (value := record.__dict__.get(name)) is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self._redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class OneLineReconnects(logging.Filter):
    """discord.py logs each gateway reconnect attempt at ERROR with the whole traceback of why the
    connection dropped (a network blip is 30 lines). Here it is one line with the cause's kind and
    text; the traceback stays only when the host asked for library DEBUG lines."""

    def __init__(self, *, keep_traceback: bool) -> None:
        super().__init__()
        self._keep = keep_traceback

    def filter(self, record: logging.LogRecord) -> bool:
        if self._keep or not record.exc_info or not record.name.startswith("discord."):
            return True
        if not str(record.msg).startswith("Attempting a reconnect"):
            return True
        error = record.exc_info[1]
        record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
        record.args, record.exc_info, record.exc_text = None, None, None
        return True


def level_number(name: str) -> int:
    return logging.getLevelNamesMapping()[name.upper()]


def setup_logging(level: str, secrets: Iterable[str], *, libraries: str = "INFO", fmt: str = "plain") -> None:
    """One redacting handler on stderr. The bot's loggers use `level`; a library's line must pass
    both `level` and `libraries`, so LOG_LEVEL=DEBUG gives the bot's own debug lines without
    aiosqlite's SQL parameters (prompts) or discord.py's gateway events, and LOG_LEVEL=WARNING still
    quiets everything. An uncaught exception goes through the same handler, not straight to stderr.
    `fmt` is `plain` (one readable line) or `json` (one JSON object per line)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(secrets))
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", secrets))
    handler.addFilter(OneLineReconnects(keep_traceback=level_number(libraries) <= logging.DEBUG))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level_number(level), level_number(libraries)))
    logging.getLogger(BOT_LOGGER).setLevel(level_number(level))
    sys.excepthook = _log_uncaught
    logging.getLogger(__name__).debug("log levels: the bot at %s, libraries at %s", level, libraries)


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """The default hook prints the traceback unredacted, and an error's text may quote a request."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    logging.getLogger(BOT_LOGGER).critical("the bot stopped on an unexpected error", exc_info=(kind, error, tb))
