"""LOG_FORMAT=json from the real process, and the low-balance warning (log, moderation log, /usage)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import discord

from tests.botprocess import BotProcess, fake_env
from tests.fakes import discord_payloads as p
from tests.fakes.discord import FakeDiscord
from tests.fakes.wavespeed import FakeWaveSpeed
from tests.helpers import admin, answered, embeds_text, wait_final_edit, wait_until

PROMPT = "a lighthouse knitted from fog"
LOG_CHANNEL = 1310000000000000900
MANAGER = discord.Permissions(manage_guild=True).value


async def test_json_lines_parse_and_carry_the_job_guild_and_prediction(
    tmp_path, database_url, discord_fake: FakeDiscord, wavespeed: FakeWaveSpeed
):
    env = fake_env(discord_fake, wavespeed, DATABASE_URL=database_url, LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    bot = BotProcess(discord_fake, env, tmp_path)
    try:
        await bot.start()
        payload = discord_fake.interaction("imagine", {"prompt": PROMPT})
        await discord_fake.dispatch_interaction(payload)
        assert (await wait_final_edit(discord_fake, payload["token"])).files
        assert await bot.terminate() == 0
    finally:
        await bot.cleanup()
    text = bot.log()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object

    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    [prediction_id] = wavespeed.predictions
    [submitted] = [line for line in lines if line["message"].startswith("job 1 submitted")]
    about_job = {"job_id": 1, "guild_id": discord_fake.guild_id, "prediction_id": prediction_id}
    assert submitted["level"] == "INFO" and submitted["logger"] == "bot.jobs.runner"
    assert {k: submitted[k] for k in about_job} == about_job
    [delivered] = [line for line in lines if line["message"].startswith("job 1 delivered")]
    assert {k: delivered[k] for k in about_job} == about_job
    [housekeeping] = [line for line in lines if line["message"].startswith("usage: 0 image(s) today")]
    assert "job_id" not in housekeeping  # a line about no job carries no job
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", submitted["time"])
    for secret in (payload["token"], discord_fake.token, wavespeed.api_key, PROMPT):
        assert secret not in text


def guild_create(fake: FakeDiscord) -> dict[str, Any]:
    guild = fake.guild(fake.guild_id)
    guild.update(
        unavailable=False, member_count=1, large=False, joined_at=p.now_iso(), channels=[], threads=[],
        members=[], voice_states=[], presences=[], stage_instances=[], guild_scheduled_events=[],
    )  # fmt: skip
    return guild


async def test_a_low_balance_is_told_once_a_day_in_the_log_and_the_moderation_log(
    start_bot, wavespeed: FakeWaveSpeed, log_lines
):
    wavespeed.balance = 3.25
    bot = await start_bot(low_balance_usd=10, balance_check_minutes=0.005)  # a read every 0.3 s
    fake: FakeDiscord = bot.discord
    await admin(fake, "log-channel", channel=("channel", LOG_CHANNEL))
    await fake.dispatch("GUILD_CREATE", guild_create(fake))  # the servers this process serves

    def warnings() -> list[Any]:
        return fake.requests.matching(
            lambda r: (
                r.method == "POST" and r.path == f"/channels/{LOG_CHANNEL}/messages" and "balance" in embeds_text(r)
            )
        )

    [warning] = (await fake.requests.wait_for(lambda r: r in warnings(), timeout=15))[:1]
    assert "**$3.25** left (about 81 images at $0.04 each)" in embeds_text(warning)
    assert "below the host's warning level of $10.00" in embeds_text(warning)
    assert warning.json["allowed_mentions"] == {"parse": []}
    reads = len(wavespeed.balance_reads())
    await wait_until(lambda: len(wavespeed.balance_reads()) >= reads + 3)  # three more checks, still low
    assert len(warnings()) == 1  # once a day, not once a check
    logged = [line for line in log_lines() if "WaveSpeed balance is $3.25, below LOW_BALANCE_USD ($10.00)" in line]
    assert len(logged) == 1

    # /usage: managers see the balance, and that it is low; members do not.
    member = fake.interaction("usage", {})
    manager = fake.interaction("usage", {}, member_permissions=MANAGER)
    for payload in (member, manager):
        await fake.dispatch_interaction(payload)
    assert "WaveSpeed balance" not in embeds_text(await answered(fake, member))
    shown = embeds_text(await answered(fake, manager))
    assert "WaveSpeed balance (the bot's account): $3.25 ⚠️ **low**" in shown


def test_a_gateway_reconnect_is_one_line_unless_library_debug_is_asked_for(capsys):
    from bot.logs import setup_logging
    from tests.test_logs import logging_restored

    def reconnect_attempt() -> str:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as error:  # as discord.py's shard logs it
            logging.getLogger("discord.shard").error(
                "Attempting a reconnect for shard ID %s in %.2fs", 0, 1.5, exc_info=error
            )
        return str(capsys.readouterr().err)

    with logging_restored():
        setup_logging("INFO", [], libraries="INFO")
        [line] = reconnect_attempt().splitlines()
        assert line.endswith(
            "ERROR   discord.shard: Attempting a reconnect for shard ID 0 in 1.50s "
            "(ConnectionResetError: [Errno 104] Connection reset by peer)"
        )
        setup_logging("INFO", [], libraries="DEBUG")
        assert "Traceback" in reconnect_attempt()
