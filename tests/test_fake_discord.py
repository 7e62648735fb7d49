"""The fake Discord against the real discord.py: login, gateway, command sync and interaction responses.

These tests keep the fake honest: if discord.py (2.7) can log in, sync, receive an interaction (a slash
command, a button or select click, a modal submit) and respond, update, edit, follow up and send through
it, the shapes it answers with are the ones discord.py parses, and the errors it answers with are the
ones discord.py raises on.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import walk_components

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
Script = Callable[[discord.Interaction], Awaitable[None]]


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_url)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url))
    yield server
    await server.close()


class Bot:
    """A real `discord.Client` and `CommandTree` with one /imagine command whose body a test supplies;
    the `Counter` buttons, the `Picker` select and the `PromptModal` run that body too."""

    running: ClassVar[dict[discord.Client, Bot]] = {}

    def __init__(self) -> None:
        self.client = discord.Client(intents=discord.Intents.none())
        self.client.add_dynamic_items(Counter)
        self.tree = app_commands.CommandTree(self.client)
        self.script: Script | None = None
        self.outcomes: asyncio.Queue[tuple[dict[str, Any], Exception | None]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        Bot.running[self.client] = self

        @self.tree.command(name="imagine", description="Imagine a picture")
        @app_commands.describe(prompt="What to draw", count="How many", scale="Guidance", style="The look")
        @app_commands.choices(
            style=[app_commands.Choice(name="Photo", value="photo"), app_commands.Choice(name="Sketch", value="sketch")]
        )
        async def imagine(
            interaction: discord.Interaction,
            prompt: str,
            count: app_commands.Range[int, 1, 4] = 1,
            scale: app_commands.Range[float, 1.0, 10.0] = 3.5,
            style: app_commands.Choice[str] | None = None,
        ) -> None:
            args = {"prompt": prompt, "count": count, "scale": scale, "style": style.value if style else None}
            await self.handle(interaction, args)

    @classmethod
    async def body(cls, interaction: discord.Interaction, args: dict[str, Any]) -> None:
        await cls.running[interaction.client].handle(interaction, args)

    async def handle(self, interaction: discord.Interaction, args: dict[str, Any]) -> None:
        """Run the test's script for this interaction; its outcome goes to `outcomes` with `args`."""
        try:
            assert self.script is not None
            await self.script(interaction)
        except Exception as error:
            await self.outcomes.put((args, error))
        else:
            await self.outcomes.put((args, None))

    async def start(self, fake: FakeDiscord) -> None:
        fake.identified.clear()
        self.task = asyncio.create_task(self.client.start(fake.token))
        identified = asyncio.create_task(fake.identified.wait())
        await asyncio.wait({self.task, identified}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not identified.done():
            identified.cancel()
            if self.task.done():
                self.task.result()
            raise AssertionError("the client did not identify")

    async def run(self, fake: FakeDiscord, script: Script, payload: dict[str, Any], **dispatch: Any):
        """Dispatch `payload` and wait for the command body (`script`) to finish: (arguments, error)."""
        self.script = script
        await fake.dispatch_interaction(payload, **dispatch)
        return await asyncio.wait_for(self.outcomes.get(), 5)

    async def close(self) -> None:
        Bot.running.pop(self.client, None)
        await self.client.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)


class Counter(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"test:btn:(?P<n>\d+)"):
    """A persistent button that keeps its state in its custom_id."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Clicked {n}", custom_id=f"test:btn:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Counter:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await Bot.body(interaction, {"n": self.n})


def counter(n: int) -> discord.ui.View:
    return discord.ui.View(timeout=None).add_item(Counter(n))


class Picker(discord.ui.View):
    @discord.ui.select(
        custom_id="test:pick", max_values=2, options=[discord.SelectOption(label=v, value=v) for v in "abc"]
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[Picker]) -> None:
        await Bot.body(interaction, {"values": select.values})


class PromptModal(discord.ui.Modal, title="Change the prompt"):
    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(label="Prompt", custom_id="test:prompt")
    notes: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="Notes", custom_id="test:notes", style=discord.TextStyle.paragraph, required=False
    )

    def __init__(self) -> None:
        super().__init__(custom_id="test:modal", timeout=30)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await Bot.body(interaction, {"prompt": self.prompt.value, "notes": self.notes.value})


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[Bot]:
    harness = Bot()
    yield harness
    await harness.close()


async def raw(fake: FakeDiscord, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """A request without discord.py: (status, parsed JSON or None)."""
    async with aiohttp.ClientSession() as session, session.request(method, fake.api_url + path, **kwargs) as resp:
        return resp.status, await resp.json() if resp.content_type == "application/json" else None


async def http_error(awaitable: Awaitable[Any]) -> discord.HTTPException:
    with pytest.raises(discord.HTTPException) as caught:
        await awaitable
    return caught.value


def png(name: str = "out.png", size: int | None = None) -> discord.File:
    return discord.File(io.BytesIO(PNG if size is None else b"\0" * size), name)


async def test_login_gateway_and_command_sync_echo_ids(fake, bot):
    await bot.start(fake)
    assert bot.client.user is not None and bot.client.user.id == fake.bot_user_id
    assert bot.client.application_id == fake.application_id and fake.identify_count == 1
    seen = {(r.method, r.path, r.status) for r in fake.requests}
    assert {("GET", "/users/@me", 200), ("GET", "/oauth2/applications/@me", 200)} <= seen
    assert all(r.headers.get("Authorization") == f"Bot {fake.token}" for r in fake.requests)

    [synced] = await bot.tree.sync()
    assert synced.id == int(fake.commands[None][0]["id"]) and synced.name == "imagine"
    [put] = fake.requests.matching(lambda r: r.method == "PUT")
    assert put.path == f"/applications/{fake.application_id}/commands" and put.status == 200
    options = {o.name: o for o in synced.options}
    assert [o.type for o in options.values()] == [
        discord.AppCommandOptionType.string,
        discord.AppCommandOptionType.integer,
        discord.AppCommandOptionType.number,
        discord.AppCommandOptionType.string,
    ]
    assert [c.value for c in options["style"].choices] == ["photo", "sketch"]
    assert [c.id for c in await bot.tree.sync()] == [synced.id]  # unchanged commands keep their ids
    assert [c.id for c in await bot.tree.fetch_commands()] == [synced.id]

    guild = discord.Object(fake.guild_id)
    bot.tree.copy_global_to(guild=guild)
    [in_guild] = await bot.tree.sync(guild=guild)
    assert in_guild.id != synced.id and in_guild.guild_id == fake.guild_id
    assert fake.commands[fake.guild_id][0]["guild_id"] == str(fake.guild_id)
    assert fake.interaction("imagine", {"prompt": "x"})["data"]["id"] == str(in_guild.id)  # guild command wins


async def test_gateway_handshake_reconnects_and_refuses_a_wrong_token(fake, bot):
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
        hello = await ws.receive_json(timeout=5)
        assert (hello["op"], hello["d"]["heartbeat_interval"]) == (10, 41250)
        await ws.send_json({"op": 1, "d": None})
        assert (await ws.receive_json(timeout=5))["op"] == 11
        await ws.send_json({"op": 6, "d": {"token": fake.token, "session_id": "x", "seq": 1}})
        assert await ws.receive_json(timeout=5) == {"op": 9, "d": False, "s": None, "t": None}
        await ws.send_json({"op": 2, "d": {"token": "wrong"}})
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4004
    assert fake.identify_count == 0 and not fake.identified.is_set()

    await bot.start(fake)
    await bot.close()
    second = Bot()
    try:
        await second.start(fake)
        assert fake.identify_count == 2 and second.client.user is not None
    finally:
        await second.close()

    refused = discord.Client(intents=discord.Intents.none())
    with pytest.raises(discord.LoginFailure):
        await refused.login("not-the-token")
    await refused.close()
    assert await raw(fake, "GET", "/users/@me") == (401, {"code": 0, "message": "401: Unauthorized"})


async def test_interaction_response_edit_follow_up_and_nonce_send(fake, bot):
    await bot.start(fake)
    await bot.tree.sync()
    sent: dict[str, Any] = {}

    async def script(interaction: discord.Interaction) -> None:
        sent["seen"] = (interaction.guild_id, interaction.user.id, interaction.filesize_limit, interaction.permissions)
        await interaction.response.send_message("Queued", embed=discord.Embed(title="Queued"))
        sent["edited"] = await interaction.edit_original_response(content="Done", attachments=[png()])
        sent["followup"] = await interaction.followup.send("Details", ephemeral=True, wait=True)
        channel = interaction.channel
        assert isinstance(channel, discord.TextChannel)
        sent["first"] = await channel.send("result", nonce=424242, file=png("again.png"))
        sent["second"] = await channel.send("result", nonce=424242, file=png("again.png"))

    options = {"prompt": "a fox", "count": 3, "scale": 2.5, "style": "sketch"}
    payload = fake.interaction("imagine", options)
    assert [o["type"] for o in payload["data"]["options"]] == [3, 4, 10, 3]
    args, error = await bot.run(fake, script, payload)
    assert error is None and args == options
    guild_id, user_id, filesize_limit, permissions = sent["seen"]
    assert (guild_id, user_id, filesize_limit) == (fake.guild_id, fake.user_id, 10 * 1024 * 1024)
    assert permissions.send_messages and permissions.attach_files and not permissions.manage_messages
    token = payload["token"]

    [callback] = fake.requests.matching(lambda r: r.path.endswith("/callback"))
    assert callback.path == f"/interactions/{payload['id']}/{token}/callback" and callback.status == 200
    assert callback.json["type"] == 4 and callback.json["data"]["content"] == "Queued"
    [edit] = fake.requests.matching(lambda r: r.method == "PATCH")
    assert edit.path == f"/webhooks/{fake.application_id}/{token}/messages/@original"
    assert edit.json["attachments"] == [{"id": 0, "filename": "out.png"}]
    assert [(f.field, f.filename, f.size, f.data) for f in edit.files] == [("files[0]", "out.png", len(PNG), PNG)]

    original = fake.original(token)
    assert original is not None and original["content"] == "Done" and original["embeds"][0]["title"] == "Queued"
    [attachment] = original["attachments"]
    assert (attachment["filename"], attachment["size"], attachment["content_type"]) == (
        "out.png",
        len(PNG),
        "image/png",
    )
    assert sent["edited"].attachments[0].url == attachment["url"]
    assert await sent["edited"].attachments[0].read() == PNG  # served by the fake, like the CDN

    followup = fake.messages[sent["followup"].id]
    assert followup["flags"] & 64 and followup["interaction_metadata"]["original_response_message_id"] == original["id"]
    posts = fake.requests.matching(lambda r: r.method == "POST" and r.path == f"/channels/{fake.channel_id}/messages")
    assert [r.status for r in posts] == [200, 200] and posts[0].json["enforce_nonce"] is True
    assert sent["first"].id == sent["second"].id
    [message] = fake.channel_messages(fake.channel_id)
    assert message["nonce"] == "424242" and [a["filename"] for a in message["attachments"]] == ["again.png"]


async def test_deferred_dm_response_becomes_the_first_follow_up(fake, bot):
    await bot.start(fake)

    async def script(interaction: discord.Interaction) -> None:
        assert isinstance(interaction.channel, discord.DMChannel) and interaction.guild_id is None
        callback = await interaction.response.defer(ephemeral=True, thinking=True)
        assert callback is not None and callback.is_thinking() and callback.is_ephemeral()
        await interaction.followup.send("finally", file=png())

    payload = fake.interaction("imagine", {"prompt": "slow"}, guild_id=None)  # in the bot's DMs
    assert "user" in payload and "member" not in payload and payload["context"] == 1
    _, error = await bot.run(fake, script, payload)
    assert error is None
    original = fake.original(payload["token"])
    assert original is not None and original["content"] == "finally" and original["flags"] == 64  # no longer loading
    assert [a["filename"] for a in original["attachments"]] == ["out.png"]


async def test_limits_are_refused_like_discord(fake, bot):
    await bot.start(fake)
    errors: dict[str, discord.HTTPException] = {}

    async def script(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("Queued")
        errors["file"] = await http_error(interaction.edit_original_response(attachments=[png(size=1025)]))
        errors["count"] = await http_error(interaction.followup.send(files=[png(f"{i}.png") for i in range(11)]))
        errors["content"] = await http_error(interaction.followup.send("x" * 2001))
        errors["embeds"] = await http_error(
            interaction.followup.send(embeds=[discord.Embed(description="y" * 4000) for _ in range(2)])
        )
        channel = interaction.client.get_partial_messageable(fake.channel_id)
        errors["channel file"] = await http_error(channel.send(file=png(size=10 * 1024 * 1024 + 1)))
        big = [png(f"{i}.png", size=9 * 1024 * 1024) for i in range(3)]
        errors["body"] = await http_error(channel.send(files=big))

    _, error = await bot.run(fake, script, fake.interaction("imagine", {"prompt": "x"}, attachment_size_limit=1024))
    assert error is None
    codes = {name: (e.status, e.code) for name, e in errors.items()}
    assert codes == {
        "file": (413, 40005),
        "count": (400, 30015),
        "content": (400, 50035),
        "embeds": (400, 50035),
        "channel file": (413, 40005),
        "body": (413, 40005),
    }
    assert [r.status for r in fake.requests if r.files] == [413, 400, 413, 413]


async def test_dead_tokens_late_callbacks_and_double_acknowledgements(fake, bot):
    await bot.start(fake)
    seen: list[discord.HTTPException] = []

    async def expire_then_edit(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("Queued")
        fake.expire_token(interaction.token)
        seen.append(await http_error(interaction.edit_original_response(content="late")))

    async def follow_up(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("Queued")
        seen.append(await http_error(interaction.followup.send("too late")))

    async def respond(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("Queued")

    await bot.run(fake, expire_then_edit, fake.interaction("imagine", {"prompt": "a"}))
    old = discord.utils.utcnow() - timedelta(minutes=15, seconds=1)  # its token is past 15 minutes
    await bot.run(fake, follow_up, fake.interaction("imagine", {"prompt": "b"}, created_at=old))
    assert [(e.status, e.code) for e in seen] == [(401, 50027), (401, 50027)]

    late = fake.interaction("imagine", {"prompt": "c"})
    _, error = await bot.run(fake, respond, late, backdate=3.5)  # as if dispatched 3.5 s ago
    assert isinstance(error, discord.NotFound) and error.code == 10062

    payload = fake.interaction("imagine", {"prompt": "d"})
    _, error = await bot.run(fake, respond, payload)
    assert error is None
    again = await raw(fake, "POST", f"/interactions/{payload['id']}/{payload['token']}/callback", json={"type": 5})
    assert again == (400, {"code": 40060, "message": "Interaction has already been acknowledged."})
    unknown = await raw(fake, "GET", f"/webhooks/{fake.application_id}/no-such-token/messages/@original")
    assert unknown == (404, {"code": 10015, "message": "Unknown Webhook"})


async def test_channel_permissions_dms_unknown_messages_and_rate_limits(fake, bot):
    await bot.start(fake)
    channel = bot.client.get_partial_messageable(fake.channel_id)
    first = await channel.send("one", file=png())
    edited = await first.edit(content="two")
    assert edited.content == "two" and [a.filename for a in edited.attachments] == ["out.png"]  # attachments stay
    gone = await http_error(channel.fetch_message(1))
    assert (gone.status, gone.code) == (404, 10008)

    fake.rate_limit_next("POST", f"/channels/{fake.channel_id}/", retry_after=0.05)
    await channel.send("after a 429")
    limited = fake.requests.matching(lambda r: r.path == f"/channels/{fake.channel_id}/messages")
    assert [r.status for r in limited][-2:] == [429, 200]

    fake.forbidden_channels.add(fake.channel_id)
    refused = await http_error(channel.send("nope"))
    assert isinstance(refused, discord.Forbidden) and refused.code == 50013
    dm = await bot.client.create_dm(discord.Object(555))
    await dm.send("by DM", file=png())
    [opened] = fake.requests.matching(lambda r: r.path == "/users/@me/channels")
    assert opened.json == {"recipient_id": 555}
    assert [m["content"] for m in fake.channel_messages(dm.id)] == ["by DM"]


async def test_buttons_update_defer_and_open_a_modal_whose_submit_updates_the_message(fake, bot):
    await bot.start(fake)
    seen: dict[str, Any] = {}

    async def post_buttons(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("Pick", view=counter(1))

    async def update(interaction: discord.Interaction) -> None:
        assert interaction.message is not None and interaction.type is discord.InteractionType.component
        seen["clicked"] = (interaction.message.id, interaction.data, interaction.user.id, interaction.permissions)
        seen["updated"] = await interaction.response.edit_message(content="Clicked", view=counter(2))

    command = fake.interaction("imagine", {"prompt": "x"})
    await bot.run(fake, post_buttons, command)
    message = fake.original(command["token"])
    assert message is not None
    message_id = int(message["id"])
    click = fake.component_interaction("test:btn:1", fake.messages[message_id], user_id=42)
    assert click["type"] == 3 and click["message"] == message and click["member"]["user"]["id"] == "42"
    assert {"app_permissions", "attachment_size_limit", "entitlements", "context", "guild_locale"} <= click.keys()
    args, error = await bot.run(fake, update, click)
    assert error is None and args == {"n": 1}
    assert seen["clicked"][:3] == (message_id, {"custom_id": "test:btn:1", "component_type": 2}, 42)
    assert seen["clicked"][3].send_messages and seen["updated"].message_id == message_id
    assert seen["updated"].resource.content == "Clicked"
    assert fake.requests.matching(lambda r: r.path.endswith("/callback"))[-1].json["type"] == 7
    stored = fake.messages[message_id]  # updated in place, the only message there is
    assert list(fake.messages) == [message_id] and stored["content"] == "Clicked" and stored["edited_timestamp"]
    assert [c["custom_id"] for c in walk_components(stored["components"]) if c["type"] == 2] == ["test:btn:2"]

    async def defer_then_edit(interaction: discord.Interaction) -> None:
        deferred = await interaction.response.defer()  # DEFERRED_UPDATE_MESSAGE for a component
        assert deferred is not None and deferred.resource is None
        await interaction.edit_original_response(content="Edited later")  # edits the clicked message
        seen["followup"] = await interaction.followup.send("More", wait=True)

    click = fake.component_interaction("test:btn:2", message_id)
    args, error = await bot.run(fake, defer_then_edit, click)
    assert error is None and args == {"n": 2} and fake.original(click["token"]) is fake.messages[message_id]
    assert fake.requests.matching(lambda r: r.path.endswith("/callback"))[-1].json == {"type": 6}
    assert fake.messages[message_id]["content"] == "Edited later"
    followup = fake.messages[seen["followup"].id]
    assert followup["type"] == 19 and followup["interaction_metadata"]["interacted_message_id"] == str(message_id)
    assert seen["followup"].interaction_metadata.interacted_message_id == message_id

    async def open_modal(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(PromptModal())

    async def submitted(interaction: discord.Interaction) -> None:
        seen["modal again"] = await http_error(interaction.response.send_modal(PromptModal()))
        await interaction.response.edit_message(content="Submitted")
        seen["thanks"] = await interaction.followup.send("Thanks", ephemeral=True, wait=True)

    click = fake.component_interaction("test:btn:2", message_id)
    _, error = await bot.run(fake, open_modal, click)
    assert error is None and fake.original(click["token"]) is None
    [modal] = fake.modals
    assert (modal["token"], modal["custom_id"], modal["title"]) == (click["token"], "test:modal", "Change the prompt")
    assert [c["custom_id"] for c in walk_components(modal["components"]) if c["type"] == 4] == [
        "test:prompt",
        "test:notes",
    ]
    fields = {"test:prompt": "a red fox", "test:notes": ""}
    submit = fake.modal_submit("test:modal", fields, message=fake.messages[message_id])
    assert [row["components"][0]["value"] for row in submit["data"]["components"]] == ["a red fox", ""]
    args, error = await bot.run(fake, submitted, submit)
    assert error is None and args == {"prompt": "a red fox", "notes": ""}
    assert (seen["modal again"].status, seen["modal again"].code) == (400, 50035)  # no modal in answer to a modal
    assert fake.messages[message_id]["content"] == "Submitted"
    assert seen["thanks"].interaction_metadata.modal_interaction.id == int(click["id"])


async def test_a_select_answered_with_a_new_message_and_clicks_no_user_could_make(fake, bot):
    await bot.start(fake)

    async def post_picker(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("Choose", view=Picker())

    async def answer(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("You chose", ephemeral=True)

    command = fake.interaction("imagine", {"prompt": "x"})
    await bot.run(fake, post_picker, command)
    picker = fake.original(command["token"])
    assert picker is not None
    for custom_id, kind, values in [("test:pick", 3, ["z"]), ("test:pick", 3, list("abc")), ("test:pick", 2, None)]:
        with pytest.raises(ValueError):
            fake.component_interaction(custom_id, picker, component_type=kind, values=values)
    with pytest.raises(ValueError):
        fake.component_interaction("test:btn:1", picker)

    choice = fake.component_interaction("test:pick", picker, component_type=3, values=["a", "c"])
    assert choice["data"] == {"custom_id": "test:pick", "component_type": 3, "values": ["a", "c"]}
    args, error = await bot.run(fake, answer, choice)
    assert error is None and args == {"values": ["a", "c"]}
    reply = fake.original(choice["token"])
    assert reply is not None and reply["id"] != picker["id"] and reply["flags"] == 64 and picker["content"] == "Choose"
    assert reply["interaction_metadata"]["type"] == 3 and "name" not in reply["interaction_metadata"]


async def test_component_errors_are_the_ones_commands_get(fake, bot):
    await bot.start(fake)
    channel = bot.client.get_partial_messageable(fake.channel_id)
    posted, kept = await channel.send("Pick", view=counter(1)), await channel.send("Pick", view=counter(1))

    async def update(interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content="Updated")

    async def defer(interaction: discord.Interaction) -> None:
        await interaction.response.defer()

    async def nothing(interaction: discord.Interaction) -> None:
        pass

    gone = fake.component_interaction("test:btn:1", posted.id)
    await posted.delete()
    _, error = await bot.run(fake, update, gone)
    assert isinstance(error, discord.NotFound) and error.code == 10008  # Unknown Message
    _, error = await bot.run(fake, update, fake.component_interaction("test:btn:1", kept.id), backdate=3.5)
    assert isinstance(error, discord.NotFound) and error.code == 10062  # Unknown interaction
    click = fake.component_interaction("test:btn:1", kept.id)
    _, error = await bot.run(fake, defer, click)
    assert error is None
    url = f"/interactions/{click['id']}/{click['token']}/callback"
    again = await raw(fake, "POST", url, json={"type": 7, "data": {"content": "twice"}})
    assert again == (400, {"code": 40060, "message": "Interaction has already been acknowledged."})
    assert (await raw(fake, "POST", url.replace(click["id"], "1"), json={"type": 6}))[0] == 404
    assert fake.messages[kept.id]["content"] == "Pick"

    click = fake.component_interaction("test:btn:1", kept.id)
    await bot.run(fake, nothing, click)
    url = f"/interactions/{click['id']}/{click['token']}/callback?with_response=true"
    row = {"type": 1, "components": [{"type": 4, "custom_id": "t", "label": "T", "style": 1}]}
    status, body = await raw(fake, "POST", url, json={"type": 9, "data": {"custom_id": "m", "components": [row]}})
    assert (status, body["errors"]["data"]["title"]["_errors"][0]["code"]) == (400, "BASE_TYPE_REQUIRED")
    six_rows = {"custom_id": "m", "title": "Too long", "components": [row] * 6}
    status, body = await raw(fake, "POST", url, json={"type": 9, "data": six_rows})
    assert (status, body["errors"]["data"]["components"]["_errors"][0]["code"]) == (400, "BASE_TYPE_BAD_LENGTH")
    assert fake.modals == []
    assert await raw(fake, "POST", url, json={"type": 6}) == (
        200,
        {"interaction": {"id": click["id"], "type": 3}, "resource": {"type": 6}},
    )

    command = fake.interaction("imagine", {"prompt": "x"})
    await bot.run(fake, nothing, command)
    url = f"/interactions/{command['id']}/{command['token']}/callback"
    status, body = await raw(fake, "POST", url, json={"type": 7, "data": {"content": "no message to update"}})
    assert (status, body["code"]) == (400, 50035)
    assert body["errors"]["type"]["_errors"][0]["message"] == "Value must be one of {4, 5, 9, 10, 12}."
