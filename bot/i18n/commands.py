"""The slash commands in every language: discord.py asks a `Translator` for each name, description,
option and choice when it builds the payload it syncs, and Discord shows each member their own.

Entries are found by where the text is, so the command definitions need no keys of their own:
`command.<qualified name, dots for spaces>.description`, `command.<command>.<option>.name` /
`.description`, and `choice.<value>`. The English text is the default Discord shows any other
locale; `en(key)` reads it for the decorators.

The commands' own names are translated too (`command.<path>.name`: `/imagine` is `/bild` to a German
member); the English name stays each command's default and what the README uses, and a message
that mentions a command names it as that message's language does.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where
from discord.app_commands.translator import TranslationContextTypes

from bot.i18n import DEFAULT, LOCALES, has, resolve, t

# The Discord locale each catalogue is synced as (Discord has no bare "es" or "pt").
DISCORD_LOCALES: dict[str, discord.Locale] = {
    "en-US": discord.Locale.american_english,
    "de": discord.Locale.german,
    "fr": discord.Locale.french,
    "es-ES": discord.Locale.spain_spanish,
    "pt-BR": discord.Locale.brazil_portuguese,
    "ja": discord.Locale.japanese,
    "ru": discord.Locale.russian,
}
assert set(DISCORD_LOCALES) == set(LOCALES)


def en(key: str) -> str:
    return t(DEFAULT, key)


def described(command: str, options: tuple[str, ...]) -> dict[str, str]:
    """The English descriptions of a command's options, for `app_commands.describe`."""
    return {option: en(f"command.{command}.{option}.description") for option in options}


def _path(command: object) -> str:
    return str(getattr(command, "qualified_name", "")).replace(" ", ".")


def command_key(context: TranslationContextTypes) -> str | None:
    """The catalogue entry for one text of a command, from where discord.py says it is."""
    data = context.data
    if context.location in (Where.command_name, Where.group_name):
        return f"command.{_path(data)}.name"
    if context.location in (Where.command_description, Where.group_description):
        return f"command.{_path(data)}.description"
    if context.location in (Where.parameter_name, Where.parameter_description):
        suffix = "name" if context.location is Where.parameter_name else "description"
        command = getattr(data, "command", None)
        return f"command.{_path(command)}.{getattr(data, 'name', '')}.{suffix}"
    if context.location is Where.choice_name:
        return f"choice.{getattr(data, 'value', '')}"
    return None


class CatalogueTranslator(app_commands.Translator):
    """Reads the catalogue for each Discord locale that has one of its own (or shares a language
    with one: `es-419` gets `es-ES`). Other locales get Discord's default, the English text."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: TranslationContextTypes,
    ) -> str | None:
        code = resolve(locale)
        key = command_key(context)
        if code == DEFAULT or key is None or not has(key):
            return None
        return t(code, key)
