"""Entry point: build the settings and the shared resources once, run the bot, shut down cleanly.

`python -m bot` runs the bot; `python -m bot check` checks the settings and the services and exits
(`bot.ops.check`). Start-up runs in this order, so that a host can see what it waits for:

1. the HTTP server (metrics, health, readiness, the webhook), at once and until the very end;
2. the database, then Discord's REST API (the token), then WaveSpeed (the key, the balance): a
   failure that may pass is retried with backoff, one line per attempt (`bot.ops.startup`); one
   that will not is one line naming the cause and what to do, and exit status 1;
3. the Discord client, which connects to the gateway and starts taking jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

import aiohttp
import discord
import yarl
from aiohttp import web

from bot.app import ImagineBot
from bot.config import ConfigError, Settings, load_settings
from bot.httpserver import quiet_accept_errors
from bot.i18n import resolve
from bot.logs import setup_logging
from bot.metrics import LoopLagMonitor
from bot.ops.balance import BalanceWatch
from bot.ops.health import Readiness
from bot.ops.prometheus import PrometheusMetrics
from bot.ops.server import OpsServer
from bot.ops.startup import StartupError, Stopped, check_discord, check_wavespeed, open_database, retrying
from bot.runtime import tune_garbage_collector
from bot.storage.base import PUSH, Storage
from bot.tasks import create_task
from bot.wavespeed import webhook
from bot.wavespeed.client import WaveSpeedClient
from bot.wavespeed.models import Prediction

log = logging.getLogger(__name__)


def point_discord_at(settings: Settings) -> None:
    """Send every REST call (interaction webhooks included) and the gateway to the configured URLs."""
    discord.http.Route.BASE = settings.discord_api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


class _Pushes:
    """Where a verified push goes: the database, once it is open (until then WaveSpeed is told to
    come back; polling is the safety net anyway)."""

    storage: Storage | None = None

    async def record(self, prediction: Prediction) -> None:
        if self.storage is None:
            raise web.HTTPServiceUnavailable(text="starting")
        if prediction.is_final:  # for whichever process runs the job (maybe another one)
            await self.storage.record_push(prediction.id, prediction.model_dump_json())


async def serve(
    settings: Settings, *, stop: asyncio.Event | None = None, on_listening: Callable[[int], None] | None = None
) -> None:
    """Run until `stop` is set (SIGTERM/SIGINT in production) or the Discord connection ends.
    `on_listening` is told the HTTP server's port (useful with HTTP_PORT=0)."""
    stop = stop or asyncio.Event()
    point_discord_at(settings)
    metrics = PrometheusMetrics(price_per_image=settings.price_per_image)
    readiness = Readiness()
    pushes = _Pushes()
    secret = settings.wavespeed_webhook_secret
    receiver = webhook.WebhookReceiver(pushes.record, secret) if settings.webhook_url and secret else None
    host, port = settings.listen
    server = OpsServer(host=host, port=port, metrics=metrics, readiness=readiness, webhook=receiver)
    lag = LoopLagMonitor(on_sample=metrics.loop_lag)
    lag.start()
    try:
        try:
            await server.start()
        except OSError as error:  # the port is taken (another bot?), or the address is not this host's
            raise StartupError(
                f"cannot listen on {host}:{port} ({os.strerror(error.errno) if error.errno else error}): "
                "set HTTP_PORT to a free port"
            ) from None
        if on_listening is not None:
            on_listening(server.port)
        await _run(settings, stop, metrics, readiness, server, pushes)
    except Stopped:
        log.info("stopped before start-up finished")
    finally:
        await lag.stop()
        await server.close()


async def _run(
    settings: Settings,
    stop: asyncio.Event,
    metrics: PrometheusMetrics,
    readiness: Readiness,
    server: OpsServer,
    pushes: _Pushes,
) -> None:
    def waiting(what: str) -> None:
        readiness.waiting_for = what

    # A sync submit holds its connection for the whole generation: room for every job in flight.
    connections = 100 + (settings.max_concurrent_jobs if settings.wavespeed_sync_mode else 0)
    connector = aiohttp.TCPConnector(limit=connections, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector) as session:
        waiting("opening the database")
        storage = await retrying(lambda: open_database(settings), stop=stop, on_wait=waiting)
        async with contextlib.aclosing(storage):
            readiness.storage = pushes.storage = storage
            server.refresh = lambda: _count_queue(storage, metrics)
            push = f"{settings.webhook_url}{webhook.PATH}" if settings.webhook_url else None
            wavespeed = WaveSpeedClient(
                session,
                api_key=settings.wavespeed_api_key,
                base_url=settings.wavespeed_base_url,
                webhook_url=push,
                sync_mode=settings.wavespeed_sync_mode,
                poll_interval=settings.poll_interval_seconds,
                first_poll=settings.first_poll_seconds,
                metrics=metrics,
            )
            waiting("checking the Discord token")
            await retrying(lambda: check_discord(session, settings), stop=stop, on_wait=waiting)
            waiting("checking the WaveSpeed key")
            base = settings.wavespeed_base_url
            dollars = await retrying(lambda: check_wavespeed(wavespeed, base), stop=stop, on_wait=waiting)
            watch = BalanceWatch(
                wavespeed.balance,
                threshold=settings.low_balance_usd,
                interval=settings.balance_check_minutes * 60,
                price=settings.price_per_image,
                metrics=metrics,
            )
            if dollars is not None:
                watch.record(dollars)
            storage.listen(lambda channel, payload: _on_push(storage, wavespeed, channel, payload))
            bot = ImagineBot(storage=storage, wavespeed=wavespeed, settings=settings, metrics=metrics, balance=watch)
            metrics.watch(bot)
            readiness.gateway, readiness.jobs = bot, bot.runner
            waiting("connecting to Discord's gateway")
            await _run_bot(bot, wavespeed, settings, stop, watch, readiness)


async def _run_bot(
    bot: ImagineBot,
    wavespeed: WaveSpeedClient,
    settings: Settings,
    stop: asyncio.Event,
    watch: BalanceWatch,
    readiness: Readiness,
) -> None:
    async with bot:
        bot_task = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()), name="discord")
        stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
        watching = create_task(_watch_balance(bot, watch), name="balance-watch")
        try:
            await asyncio.wait({bot_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
            watching.cancel()
            # New interactions are refused politely while in-flight jobs get the grace period (and
            # /readyz says "draining"); what is still running then is paused and resumes on the next start.
            log.info("shutting down: %d job(s) in flight", bot.runner.active)
            await bot.runner.close(grace=settings.shutdown_grace_seconds)
            await bot.close()
            await bot.storage.release_leases()  # another process may take over at once
            readiness.storage = None
            readiness.waiting_for = "shutting down"
            log.info("WaveSpeed API calls: %s", dict(wavespeed.calls))
            if bot_task.done() and not bot_task.cancelled():
                bot_task.result()  # re-raise a login or connection failure
            else:
                bot_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bot_task


async def _watch_balance(bot: ImagineBot, watch: BalanceWatch) -> None:
    """Once connected (the servers known): read the balance every interval, warn moderators if low."""
    await bot.wait_until_ready()
    await watch.run(
        lambda reading: watch.warn_moderators(
            reading,
            [g.id for g in bot.guilds],
            storage=bot.storage,
            settings=bot.guild_settings,
            modlog=bot.modlog,
            locales={g.id: resolve(g.preferred_locale) for g in bot.guilds},  # the moderation log's language
        )
    )


async def _count_queue(storage: Storage, metrics: PrometheusMetrics) -> None:
    """The shared line's figures, read at each scrape (every process's jobs: the database's view)."""
    waiting = len(await storage.waiting())
    metrics.queue(waiting=waiting, running=await storage.running_count())


def _on_push(storage: Storage, wavespeed: WaveSpeedClient, channel: str, payload: str) -> None:
    """A pushed result was recorded (by this process or another): hand it to a waiting job here."""
    if channel == PUSH and wavespeed.waiting_for(payload):
        create_task(_hand_over(storage, wavespeed, payload), name="pushed-result")


async def _hand_over(storage: Storage, wavespeed: WaveSpeedClient, prediction_id: str) -> None:
    body = await storage.pushed(prediction_id)
    if body is not None:
        wavespeed.push(Prediction.model_validate_json(body))


async def _serve_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)  # out of file descriptors: one line a minute, not one per failed accept
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop=stop)


USAGE = "usage: python -m bot          run the bot\n       python -m bot check    check the settings and services"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["check"]:
        from bot.ops.check import run_check

        raise SystemExit(run_check())
    if args:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(
        settings.log_level, settings.secrets(), libraries=settings.log_level_libraries, fmt=settings.log_format
    )
    tune_garbage_collector()
    try:
        asyncio.run(_serve_until_signalled(settings))
    except StartupError as error:
        log.error("cannot start: %s", error)
        raise SystemExit(1) from None
    except discord.LoginFailure:
        log.error("cannot start: Discord refused DISCORD_TOKEN: copy the bot token again from the Developer Portal.")
        raise SystemExit(1) from None
    except discord.PrivilegedIntentsRequired:
        log.error("cannot start: Discord refused the gateway intents this bot asked for.")
        raise SystemExit(1) from None
    except (aiohttp.ClientError, discord.GatewayNotFound, discord.DiscordServerError) as error:
        log.error("stopped: lost Discord during start-up (%s); start the bot again", type(error).__name__)
        raise SystemExit(1) from None
    log.info("stopped")
