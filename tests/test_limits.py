"""Limits and access as pure functions: which limit refuses (as data), its words, and when the member
can go again."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.limits import Access, Limits, Usage, check, next_utc_midnight, window_frees_at
from bot.refusals import Refused
from bot.render import refusal_text

NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC).timestamp()
LIMITS = Limits(
    user_active_images=4, user_window_images=6, user_window_seconds=3600, guild_daily_images=10, global_daily_images=20
)


def usage(active=0, window=(), guild=0, total=0) -> Usage:
    return Usage(user_active=active, user_window=tuple(window), guild_today=guild, global_today=total)


def test_a_request_within_every_limit_goes_ahead():
    assert check(LIMITS, usage(active=2, window=[(NOW - 60, 2)], guild=5, total=5), 2, now=NOW, in_guild=True) is None


@pytest.mark.parametrize(
    ("state", "images", "limit", "says"),
    [
        (usage(active=3), 2, "USER_MAX_ACTIVE_IMAGES", "3 images queued or in progress"),
        (usage(window=[(NOW - 3000, 4), (NOW - 600, 2)]), 1, "USER_WINDOW_IMAGES", "6 images in the last hour"),
        (usage(guild=9), 2, "GUILD_DAILY_IMAGES", "used 9 of its 10 images"),
        (usage(total=20), 1, "GLOBAL_DAILY_IMAGES", "daily budget of 20 images"),
    ],
)
def test_each_limit_refuses_by_name(state, images, limit, says):
    refusal = check(LIMITS, state, images, now=NOW, in_guild=True)
    assert refusal is not None and refusal.reason.value == limit and says in refusal_text(refusal)
    assert refusal_text(refusal).endswith("Nothing was sent to the image service.")


def test_the_window_says_when_enough_has_aged_out():
    state = usage(window=[(NOW - 3000, 4), (NOW - 600, 2)])
    # One more image needs the 4-image job to age out: 3000 s ago + 1 h = 600 s from now.
    assert window_frees_at(LIMITS, state, 1) == NOW + 600
    refusal = check(LIMITS, state, 1, now=NOW, in_guild=True)
    assert refusal is not None and refusal.at == NOW + 600 and f"<t:{int(NOW + 600)}:R>" in refusal_text(refusal)
    assert window_frees_at(LIMITS, state, 7) is None  # more than the limit itself: never


def test_daily_budgets_reset_at_utc_midnight_and_skip_dms_for_the_server_budget():
    assert next_utc_midnight(NOW) == datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    refusal = check(LIMITS, usage(guild=10), 1, now=NOW, in_guild=True)
    assert refusal is not None and f"<t:{int(next_utc_midnight(NOW))}:R>" in refusal_text(refusal)
    assert check(LIMITS, usage(guild=10), 1, now=NOW, in_guild=False) is None


def test_zero_turns_a_limit_off():
    off = Limits(0, 0, 3600, 0, 0)
    assert check(off, usage(active=100, window=[(NOW, 100)], guild=1000, total=1000), 4, now=NOW, in_guild=True) is None


def test_access_lists_and_dms():
    open_access = Access()
    assert open_access.refusal(guild_id=1, user_id=2) is None
    dm = open_access.refusal(guild_id=None, user_id=2)
    assert dm is not None and dm.reason is Refused.DMS_OFF and "Nothing was sent" not in refusal_text(dm)
    assert Access(allow_dms=True).refusal(guild_id=None, user_id=2) is None
    gated = Access(guild_ids=frozenset({1}), user_ids=frozenset({2}))
    assert gated.refusal(guild_id=1, user_id=2) is None
    wrong_guild, wrong_user = gated.refusal(guild_id=9, user_id=2), gated.refusal(guild_id=1, user_id=3)
    assert wrong_guild is not None and wrong_guild.reason is Refused.GUILD_NOT_ALLOWED
    assert wrong_user is not None and wrong_user.reason is Refused.USER_NOT_ALLOWED
