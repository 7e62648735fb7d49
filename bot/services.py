"""What button callbacks reach through `interaction.client`: the bot's shared services."""

from __future__ import annotations

from typing import Protocol, cast

import discord

from bot.jobs.admission import Admission
from bot.jobs.runner import JobRunner
from bot.jobs.store import JobStore
from bot.moderation.log import ModLog
from bot.moderation.settings import GuildSettingsStore


class Services(Protocol):
    admission: Admission
    runner: JobRunner
    jobs: JobStore
    guild_settings: GuildSettingsStore
    modlog: ModLog


def services(interaction: discord.Interaction) -> Services:
    return cast(Services, interaction.client)
