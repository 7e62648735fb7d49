"""The NSFW policy as a pure function: the one rule no setting can break."""

from __future__ import annotations

import pytest

from bot.jobs.outputs import OutputFile, OutputLink, PreparedOutputs
from bot.moderation.policy import apply_nsfw, nsfw_mode
from bot.moderation.settings import GuildSettings


def outputs() -> PreparedOutputs:
    files = [OutputFile(i, f"img_{i + 1}.png", b"x", spoiler=False) for i in range(2)]
    return PreparedOutputs(files=files, links=[OutputLink(2, "https://cdn/3.png", False)], flags=[True, False, True])


@pytest.mark.parametrize("mode", ["show", "spoiler"])
def test_a_flagged_image_is_never_plain_outside_an_age_restricted_channel(mode):
    shown = apply_nsfw(outputs(), mode, age_restricted=False)  # "show" here can only come from a forged call
    assert [f.spoiler for f in shown.files] == [True, False] and shown.links[0].spoiler
    assert not shown.shown_plainly


def test_withhold_drops_flagged_files_and_links_and_counts_them():
    shown = apply_nsfw(outputs(), "withhold", age_restricted=False)
    assert [f.filename for f in shown.files] == ["img_2.png"] and not shown.links and shown.withheld == [1, 3]


def test_show_in_an_age_restricted_channel_is_plain_and_said():
    shown = apply_nsfw(outputs(), "show", age_restricted=True)
    assert not any(f.spoiler for f in shown.files) and shown.shown_plainly


def test_the_mode_follows_the_channel_kind():
    settings = GuildSettings(nsfw_normal="withhold", nsfw_age_restricted="show")
    assert nsfw_mode(settings, age_restricted=False) == "withhold"
    assert nsfw_mode(settings, age_restricted=True) == "show"
    assert nsfw_mode(GuildSettings(), age_restricted=True) == "spoiler"
