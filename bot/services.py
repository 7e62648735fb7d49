"""What button callbacks reach through `interaction.client`: the bot's shared services."""

from __future__ import annotations

from typing import Protocol, cast

import discord

from bot.jobs.admission import Admission
from bot.jobs.dispatcher import Dispatcher
from bot.metrics import Metrics
from bot.moderation.log import ModLog
from bot.moderation.settings import GuildSettingsStore
from bot.storage.base import Storage


class Services(Protocol):
    admission: Admission
    dispatcher: Dispatcher
    storage: Storage
    guild_settings: GuildSettingsStore
    modlog: ModLog
    metrics: Metrics


def services(interaction: discord.Interaction) -> Services:
    return cast(Services, interaction.client)
