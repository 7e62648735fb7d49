"""`python -m bot check`: the settings, then the real services, without starting the bot.

One line per check, `✓` or `✗` (or `-` for what does not apply), each `✗` saying what to do; the
exit status is 1 if any check failed. What is checked:
- the settings (the same validation as start-up);
- Discord accepts the token (`GET /users/@me`, `GET /applications/@me`: the bot user and the
  application id);
- for each server in DISCORD_GUILD_IDS and ALLOWED_GUILD_IDS: the bot is in it and its roles give
  it the permissions it needs (server-wide: a channel's own overrides can still take them away);
  for DISCORD_GUILD_IDS also that it was invited with `applications.commands`;
- WaveSpeed accepts the key (`GET /api/v3/balance`), and the balance;
- the database opens and is migrated (this creates and migrates it, as start-up would);
- with push on, the webhook secret has WaveSpeed's form.
Every line goes through the log redactor as well: no token, key, secret or password is printed.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.config import ConfigError, Settings, load_settings
from bot.logs import Redactor
from bot.ops.startup import StartupError, Unavailable, open_database
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.errors import AuthenticationError, WaveSpeedError
from bot.wavespeed.webhook import PREFIX

TIMEOUT = aiohttp.ClientTimeout(total=10.0)
ADMINISTRATOR = 1 << 3
# What the bot needs in every channel where /imagine is used (README: the invite's 117760).
NEEDED = {
    "View Channels": 1 << 10,
    "Send Messages": 1 << 11,
    "Embed Links": 1 << 14,
    "Attach Files": 1 << 15,
    "Read Message History": 1 << 16,
}
INVITE = "https://discord.com/oauth2/authorize?client_id={app}&scope=bot+applications.commands&permissions=117760"
_SECRET_FORM = re.compile(r"[A-Za-z0-9+/=_-]{16,}")


@dataclass
class Report:
    print: Callable[[str], None]
    failed: int = 0

    def ok(self, what: str, found: str) -> None:
        self.print(f"✓ {what}: {found}")

    def bad(self, what: str, problem: str) -> None:
        self.failed += 1
        self.print(f"✗ {what}: {problem}")

    def skip(self, what: str, why: str) -> None:
        self.print(f"- {what}: {why}")


class Discord:
    """Just enough REST for the checks: GET with the bot token, the answer's status and JSON."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session, self._base = session, settings.discord_api_url
        self._headers = {"Authorization": f"Bot {settings.discord_token.get_secret_value()}"}

    async def get(self, path: str) -> tuple[int, Any]:
        async with self._session.get(self._base + path, headers=self._headers, timeout=TIMEOUT) as answer:
            body = await answer.json(content_type=None) if answer.content_type == "application/json" else None
            return answer.status, body


async def check(settings: Settings, report: Report) -> None:
    async with aiohttp.ClientSession() as session:
        bot_id, app_id = await _token(Discord(session, settings), settings, report)
        await _servers(Discord(session, settings), settings, report, bot_id, app_id)
        await _wavespeed(session, settings, report)
    await _database(settings, report)
    _webhook(settings, report)


async def _token(discord: Discord, settings: Settings, report: Report) -> tuple[int | None, int | None]:
    try:
        status, me = await discord.get("/users/@me")
        app_status, app = await discord.get("/applications/@me")
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        report.bad(
            "Discord",
            f"cannot reach {settings.discord_api_url} ({type(error).__name__}): check the network and DISCORD_API_URL",
        )
        return None, None
    if status == 401:
        report.bad("Discord token", "refused: copy the bot token again (Developer Portal > Bot > Reset Token)")
        return None, None
    if status != 200 or app_status != 200 or not isinstance(me, dict) or not isinstance(app, dict):
        report.bad("Discord token", f"unexpected answer (HTTP {status}/{app_status}): check DISCORD_API_URL")
        return None, None
    report.ok("Discord token", f"accepted: bot {me.get('username')} (id {me.get('id')}), application {app.get('id')}")
    return int(me["id"]), int(app["id"])


async def _servers(
    discord: Discord, settings: Settings, report: Report, bot_id: int | None, app_id: int | None
) -> None:
    guilds = sorted(set(settings.discord_guild_ids) | set(settings.allowed_guild_ids))
    if not guilds:
        report.skip("servers", "none named in DISCORD_GUILD_IDS or ALLOWED_GUILD_IDS, so none checked")
        return
    if bot_id is None or app_id is None:
        report.skip("servers", "not checked without a working token")
        return
    for guild_id in guilds:
        what = f"server {guild_id}"
        try:
            status, guild = await discord.get(f"/guilds/{guild_id}")
            if status in (403, 404):
                report.bad(what, f"the bot is not in this server: invite it with {INVITE.format(app=app_id)}")
                continue
            _, member = await discord.get(f"/guilds/{guild_id}/members/{bot_id}")
            scope = 200
            if guild_id in settings.discord_guild_ids:
                scope, _ = await discord.get(f"/applications/{app_id}/guilds/{guild_id}/commands")
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            report.bad(what, f"cannot reach Discord ({type(error).__name__})")
            continue
        if not isinstance(guild, dict) or not isinstance(member, dict):
            report.bad(what, f"unexpected answer from Discord (HTTP {status})")
            continue
        missing = [name for name, bit in NEEDED.items() if not _permissions(guild, member, bot_id) & bit]
        if missing:
            report.bad(
                what,
                f"the bot is missing {', '.join(missing)}: give its role these permissions (Server Settings > Roles)",
            )
        elif scope == 403:
            report.bad(
                what,
                f"the bot may not add commands here (invited without applications.commands): invite it again "
                f"with {INVITE.format(app=app_id)}",
            )
        else:
            report.ok(what, f"the bot is in {guild.get('name')!r} with {', '.join(NEEDED)} (server-wide)")


def _permissions(guild: dict[str, Any], member: dict[str, Any], user_id: int) -> int:
    """The member's server-wide permissions: @everyone's and each of its roles', all for the owner
    or an administrator (Discord's rule before channel overrides)."""
    if str(guild.get("owner_id")) == str(user_id):
        return -1
    roles = {str(r["id"]): int(r.get("permissions", 0)) for r in guild.get("roles", [])}
    bits = roles.get(str(guild.get("id")), 0)
    for role in member.get("roles", []):
        bits |= roles.get(str(role), 0)
    return -1 if bits & ADMINISTRATOR else bits


async def _wavespeed(session: aiohttp.ClientSession, settings: Settings, report: Report) -> None:
    client = WaveSpeedClient(session, api_key=settings.wavespeed_api_key, base_url=settings.wavespeed_base_url)
    try:
        dollars = await client.balance(seconds=10.0)
    except AuthenticationError:
        report.bad("WaveSpeed key", "refused: copy the key again (wavespeed.ai > Access Keys)")
        return
    except WaveSpeedError as error:
        report.bad("WaveSpeed", f"no answer from {settings.wavespeed_base_url} ({error}): check WAVESPEED_BASE_URL")
        return
    low = settings.low_balance_usd
    note = f", below LOW_BALANCE_USD (${low:,.2f}): top it up" if low and dollars < low else ""
    report.ok("WaveSpeed key", f"accepted, balance ${dollars:,.2f}{note}")


async def _database(settings: Settings, report: Report) -> None:
    try:
        storage = await open_database(settings)
    except (StartupError, Unavailable) as error:
        report.bad("database", str(error))
        return
    try:
        version = await storage.schema_version()
        report.ok("database", f"{storage.backend} opened and migrated (schema version {version})")
    finally:
        await storage.close()


def _webhook(settings: Settings, report: Report) -> None:
    if not settings.webhook_url:
        report.skip("webhook", "push is off (WEBHOOK_URL is empty): the bot polls")
        return
    secret = settings.wavespeed_webhook_secret.get_secret_value() if settings.wavespeed_webhook_secret else ""
    key = secret.strip().removeprefix(PREFIX)
    if not _SECRET_FORM.fullmatch(key):
        report.bad(
            "webhook secret",
            "not WaveSpeed's form (whsec_ and letters, digits, + / = _ -): copy it again (GET /api/v3/webhook/secret)",
        )
        return
    where = "" if settings.webhook_url.startswith("https://") else " (http: use https behind a proxy)"
    report.ok("webhook", f"pushes to {settings.webhook_url}/wavespeed/webhook{where}, secret of the right form")


def run_check(out: Callable[[str], None] | None = None) -> int:
    """The whole check; returns the exit status (0 all good, 1 something failed, 2 bad settings)."""
    write = out or (lambda line: print(line, flush=True))
    try:
        settings = load_settings()
    except ConfigError as error:
        write("✗ settings: " + str(error).replace("\n", "\n  "))
        return 2
    redact = Redactor(settings.secrets())
    report = Report(lambda line: write(redact(line)))
    report.ok("settings", "valid")
    asyncio.run(check(settings, report))
    write("all checks passed" if not report.failed else f"{report.failed} check(s) failed")
    return 1 if report.failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_check())
