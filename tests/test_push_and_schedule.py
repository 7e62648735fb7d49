"""Push's configuration and the learned poll schedule (the webhook itself: tests/test_webhook.py)."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from bot.wavespeed.schedule import PollSchedule


def test_a_webhook_url_needs_the_secret(tmp_path):
    with pytest.raises(ConfigError, match="WEBHOOK_URL needs WAVESPEED_WEBHOOK_SECRET"):
        load_settings(_env_file=None, discord_token="t", wavespeed_api_key="k", webhook_url="https://bot.example.com")


def test_the_schedule_skips_the_time_in_which_few_predictions_finish():
    schedule = PollSchedule(interval=0.75, first_default=1.0)
    for seen in range(4):
        schedule.observe(seen, seen + 1.0)
    assert schedule.first_delay() == 1.0  # too few samples to guess from
    schedule = PollSchedule(interval=0.75, first_default=1.0)
    for tenth in range(20, 80, 3):  # inference times spread over 2-8 s
        schedule.observe(tenth / 10 - 0.375, tenth / 10 + 0.375)
    assert schedule.first_delay() == pytest.approx(2.6 - 0.375)  # the 10th percentile, less half a step
    assert schedule.next_delay() == 0.75
