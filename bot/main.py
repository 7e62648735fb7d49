"""Entry point: build the settings and the shared resources once, run the bot, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import aiohttp
import discord
import yarl

from bot.app import ImagineBot
from bot.config import ConfigError, Settings, load_settings
from bot.httpserver import quiet_accept_errors
from bot.logs import setup_logging
from bot.metrics import LoopLagMonitor
from bot.runtime import tune_garbage_collector
from bot.storage import open_storage
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


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (SIGTERM/SIGINT in production) or the Discord connection ends."""
    stop = stop or asyncio.Event()
    point_discord_at(settings)
    # A sync submit holds its connection for the whole generation: room for every job in flight.
    connections = 100 + (settings.max_concurrent_jobs if settings.wavespeed_sync_mode else 0)
    connector = aiohttp.TCPConnector(limit=connections, ttl_dns_cache=300)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        contextlib.aclosing(await open_storage(settings.database_url, lease_seconds=settings.lease_seconds)) as storage,
    ):
        push = f"{settings.webhook_url}{webhook.PATH}" if settings.webhook_url else None
        wavespeed = WaveSpeedClient(
            session,
            api_key=settings.wavespeed_api_key,
            base_url=settings.wavespeed_base_url,
            webhook_url=push,
            sync_mode=settings.wavespeed_sync_mode,
            poll_interval=settings.poll_interval_seconds,
            first_poll=settings.first_poll_seconds,
        )
        storage.listen(lambda channel, payload: _on_push(storage, wavespeed, channel, payload))

        async def record(prediction: Prediction) -> None:
            """A verified push, for whichever process runs the job (maybe another one)."""
            if prediction.is_final:
                await storage.record_push(prediction.id, prediction.model_dump_json())

        receiver = None
        if push and settings.wavespeed_webhook_secret is not None:
            receiver = webhook.WebhookServer(
                record,
                settings.wavespeed_webhook_secret,
                host=settings.webhook_host,
                port=settings.webhook_port,
            )
        bot = ImagineBot(storage=storage, wavespeed=wavespeed, settings=settings)
        lag = LoopLagMonitor()
        lag.start()
        async with bot:
            if receiver is not None:
                await receiver.start()
            bot_task = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()), name="discord")
            stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
            try:
                await asyncio.wait({bot_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_task.cancel()
                # New interactions are refused politely while in-flight jobs get the grace period;
                # what is still running then is paused and resumes on the next start.
                log.info("shutting down: %d job(s) in flight", bot.runner.active)
                await bot.runner.close(grace=settings.shutdown_grace_seconds)
                await bot.close()
                await storage.release_leases()  # another process may take over at once
                await lag.stop()
                if receiver is not None:
                    await receiver.close()
                log.info("WaveSpeed API calls: %s", dict(wavespeed.calls))
                if bot_task.done() and not bot_task.cancelled():
                    bot_task.result()  # re-raise a login or connection failure
                else:
                    bot_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await bot_task


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


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(settings.log_level, settings.secrets(), libraries=settings.log_level_libraries)
    tune_garbage_collector()
    try:
        asyncio.run(_serve_until_signalled(settings))
    except discord.LoginFailure:
        log.error("Discord refused DISCORD_TOKEN. Copy the bot token again from the Developer Portal.")
        raise SystemExit(1) from None
    except discord.PrivilegedIntentsRequired:
        log.error("Discord refused the gateway intents this bot asked for.")
        raise SystemExit(1) from None
    log.info("stopped")
