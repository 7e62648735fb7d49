"""What reaches the log: secrets and interaction tokens never do, ordinary words are never rewritten,
and libraries stay at INFO (no SQL parameters, no gateway events) unless the host asks for more."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bot.config import ConfigError, load_settings
from bot.logs import REDACTED, RedactingFormatter, Redactor, setup_logging
from tests import dbread
from tests.botprocess import BotProcess, fake_env
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import random_token
from tests.fakes.wavespeed import FakeWaveSpeed
from tests.helpers import wait_final_edit

API_KEY = "ws-live-3f9a0c1d2e4b5a6978"
BOT_TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GhIjKl.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab"


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """setup_logging rewires the process's root logger: put pytest's back after the test body."""
    root, own = logging.getLogger(), logging.getLogger("bot")
    handlers, root_level, own_level, hook = root.handlers[:], root.level, own.level, sys.excepthook
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        own.setLevel(own_level)
        sys.excepthook = hook


# --- the redaction rule -------------------------------------------------------------------------


def test_a_short_secret_rewrites_no_ordinary_word():
    """A one-character key used to turn "PyNaCl" into "P[redacted]NaCl"."""
    redact = Redactor(["P", "a", "job"])
    text = "PyNaCl is not installed, voice will NOT be supported; a job P ran"
    assert redact(text) == text


def test_a_secret_is_redacted_as_a_whole_token_wherever_it_stands():
    redact = Redactor([API_KEY, BOT_TOKEN])
    for text in (
        f"GET https://api.example.com/v1/items?key={API_KEY}&page=2",
        f"https://proxy.example.com/{API_KEY}/predictions",
        f"ClientResponseError: 401, headers={{'Authorization': 'Bearer {API_KEY}'}}",
        f"LoginFailure('Improper token has been passed: {BOT_TOKEN}')",
        f"token {BOT_TOKEN}.",  # a sentence's full stop is not part of it
        f"{API_KEY}\n{BOT_TOKEN}",
    ):
        scrubbed = redact(text)
        assert API_KEY not in scrubbed and BOT_TOKEN not in scrubbed and REDACTED in scrubbed, text
    # Only whole tokens: a longer word that merely contains a secret is another string.
    assert redact(f"x{API_KEY}9") == f"x{API_KEY}9"


def test_tracebacks_are_redacted_too():
    formatter = RedactingFormatter("%(message)s", [API_KEY])
    try:
        raise RuntimeError(f"the proxy answered 403 to Bearer {API_KEY}")
    except RuntimeError:
        record = logging.LogRecord("bot.x", logging.ERROR, __file__, 1, "submit failed", None, sys.exc_info())
    line = formatter.format(record)
    assert "Traceback" in line and "RuntimeError" in line and API_KEY not in line


def test_interaction_tokens_are_redacted_in_urls_fields_and_sql_parameters():
    token, other = random_token(), "Xy7_webhook-token-with-no-known-prefix_0123456789"
    redact = Redactor([])
    cases = {
        f"POST https://discord.com/api/v10/interactions/1234567890/{token}/callback has returned 204": (
            f"/interactions/1234567890/{REDACTED}/callback"
        ),
        f"PATCH https://discord.com/api/v10/webhooks/99/{token}/messages/@original": (
            f"/webhooks/99/{REDACTED}/messages/@original"
        ),
        f"URL('http://127.0.0.1:5000/api/webhooks/99/{other}?wait=true')": f"/webhooks/99/{REDACTED}?wait=true",
        f"WebSocket Event: {{'t': 'INTERACTION_CREATE', 'd': {{'token': '{token}', 'id': '1'}}}}": (
            f"'token': '{REDACTED}'"
        ),
        f'{{"interaction_token": "{other}"}}': f'"interaction_token": "{REDACTED}"',
        f"executing partial(<execute>, 'INSERT INTO jobs ...', (1, '{token}', 2))": f"(1, '{REDACTED}', 2)",
    }
    for text, expected in cases.items():
        scrubbed = redact(text)
        assert token not in scrubbed and other not in scrubbed and expected in scrubbed, scrubbed
    # Shapes without a token in them stay as they are.
    for text in ("token: None", "token=abc", "tokens=3", "GET /webhooks/99", "job 12 delivered"):
        assert redact(text) == text


# --- settings -----------------------------------------------------------------------------------


def test_config_refuses_secrets_too_short_to_be_real_without_repeating_them():
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None, discord_token="Qz7", wavespeed_api_key="Kx9w")
    message = str(refused.value)
    assert "DISCORD_TOKEN and WAVESPEED_API_KEY are too short" in message
    assert "Qz7" not in message and "Kx9w" not in message

    with pytest.raises(ConfigError, match="WAVESPEED_WEBHOOK_SECRET is too short"):
        load_settings(
            _env_file=None,
            discord_token=BOT_TOKEN,
            wavespeed_api_key=API_KEY,
            webhook_url="https://bot.example.com",
            wavespeed_webhook_secret="s3cr3t",
        )
    # Real-looking values pass; an empty webhook secret is "no push", as in .env.example.
    settings = load_settings(
        _env_file=None, discord_token=BOT_TOKEN, wavespeed_api_key=API_KEY, wavespeed_webhook_secret=""
    )
    assert settings.secrets() == (BOT_TOKEN, API_KEY)


def test_log_level_libraries_defaults_to_info_and_takes_the_log_level_names():
    base = {"_env_file": None, "discord_token": BOT_TOKEN, "wavespeed_api_key": API_KEY}
    assert load_settings(**base).log_level_libraries == "INFO"
    assert load_settings(**base, log_level_libraries="debug").log_level_libraries == "DEBUG"
    with pytest.raises(ConfigError, match="LOG_LEVEL_LIBRARIES is invalid"):
        load_settings(**base, log_level_libraries="LOUD")


# --- levels and the handler ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "libraries", "bot_lowest", "library_lowest"),
    [
        ("DEBUG", "INFO", logging.DEBUG, logging.INFO),  # the bot's debug lines only
        ("DEBUG", "DEBUG", logging.DEBUG, logging.DEBUG),  # everything, when asked for
        ("INFO", "WARNING", logging.INFO, logging.WARNING),  # discord.py's INFO chatter off
        ("WARNING", "INFO", logging.WARNING, logging.WARNING),  # a line must pass LOG_LEVEL too
    ],
)
def test_libraries_log_at_the_quieter_of_their_level_and_log_level(level, libraries, bot_lowest, library_lowest):
    def lowest(name: str) -> int:
        return min(n for n in (10, 20, 30, 40) if logging.getLogger(name).isEnabledFor(n))

    with logging_restored():
        setup_logging(level, [], libraries=libraries)
        assert lowest("bot.jobs.runner") == lowest("bot") == bot_lowest
        for name in ("discord.http", "discord.gateway", "discord.webhook.async_", "aiosqlite", "aiohttp", "asyncio"):
            assert lowest(name) == library_lowest, name


def test_every_line_and_an_uncaught_error_go_through_the_redactor(capsys):
    token = random_token()
    with logging_restored():
        setup_logging("DEBUG", [API_KEY], libraries="INFO")
        logging.getLogger("discord.webhook.async_").info("POST /interactions/5/%s/callback failed", token)
        logging.getLogger("bot.jobs.runner").debug("retrying with Bearer %s", API_KEY)
        logging.getLogger("aiosqlite").debug("executing INSERT (%r,)", token)  # below LOG_LEVEL_LIBRARIES
        try:
            raise ValueError(f"https://discord.com/api/webhooks/1/{token} said no ({API_KEY})")
        except ValueError:
            sys.excepthook(*sys.exc_info())  # what the interpreter does with an error main() let through
    err = capsys.readouterr().err
    assert f"/interactions/5/{REDACTED}/callback" in err and f"Bearer {REDACTED}" in err
    assert "executing INSERT" not in err
    assert "CRITICAL bot: the bot stopped on an unexpected error" in err and "ValueError" in err
    assert token not in err and API_KEY not in err


# --- the real bot process -----------------------------------------------------------------------

PROMPT = "a teal walrus reading tax law by candlelight"
LIBRARY_DEBUG = re.compile(r"^\S+ \S+ DEBUG +(?=\S)(?!bot[.:])", re.MULTILINE)
# The storage's own debug line at start-up, on each backend.
STORAGE_DEBUG = {
    "sqlite": "DEBUG   bot.storage.sqlite: database",
    "postgresql": "DEBUG   bot.storage.postgres: PostgreSQL storage open",
}


def backend(bot: BotProcess) -> str:
    return "sqlite" if dbread.is_sqlite(bot.env["DATABASE_URL"]) else "postgresql"


@pytest.fixture
async def bot(
    tmp_path, database_url: str, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
) -> AsyncIterator[BotProcess]:
    env = fake_env(discord_fake, wavespeed, DATABASE_URL=database_url, LOG_LEVEL="DEBUG")
    process = BotProcess(discord_fake, env, tmp_path)
    yield process
    await process.cleanup()


async def run_one_job(bot: BotProcess, discord_fake: FakeDiscord) -> tuple[dict[str, Any], str]:
    """Start the bot, run one /imagine to its result, stop it; returns the interaction and the log."""
    await bot.start()
    payload = discord_fake.interaction("imagine", {"prompt": PROMPT})
    await discord_fake.dispatch_interaction(payload)
    final = await wait_final_edit(discord_fake, payload["token"])
    assert final.files
    assert await bot.terminate() == 0
    return payload, bot.log()


async def test_a_debug_log_of_a_real_job_holds_no_token_no_prompt_and_no_library_lines(bot, discord_fake, wavespeed):
    payload, log = await run_one_job(bot, discord_fake)

    for secret in (payload["token"], PROMPT, discord_fake.token, wavespeed.api_key):
        assert secret not in log
    assert not LIBRARY_DEBUG.search(log)  # no aiosqlite statements, no gateway events
    assert "DEBUG   bot.logs: log levels: the bot at DEBUG, libraries at INFO" in log
    assert STORAGE_DEBUG[backend(bot)] in log  # the bot's own debug lines are there
    assert "INFO    bot.jobs.runner: job 1 submitted" in log


async def test_library_debug_shows_library_lines_but_never_a_token(bot, discord_fake, wavespeed):
    bot.env["LOG_LEVEL_LIBRARIES"] = "DEBUG"
    payload, log = await run_one_job(bot, discord_fake)

    for secret in (payload["token"], discord_fake.token, wavespeed.api_key):
        assert secret not in log
    assert re.search(r"DEBUG +discord\.gateway: ", log)
    if backend(bot) == "sqlite":  # asyncpg writes no statements, whatever its level
        assert re.search(r"DEBUG +aiosqlite: executing", log)
    # discord.py logs the callback and webhook URLs, which carry the token: the URL stays, the token goes.
    assert f"/interactions/{payload['id']}/{REDACTED}/callback" in log
    assert f"/webhooks/{discord_fake.application_id}/{REDACTED}/messages/" in log
    # Why libraries stay at INFO by default: at DEBUG they write every SQL parameter, prompts included.
    assert PROMPT in log
