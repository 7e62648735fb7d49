"""Push's configuration (the webhook itself: tests/test_webhook.py; the poll schedule: tests/test_poll_schedule.py)."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings


def test_a_webhook_url_needs_the_secret(tmp_path):
    with pytest.raises(ConfigError, match="WEBHOOK_URL needs WAVESPEED_WEBHOOK_SECRET"):
        load_settings(_env_file=None, discord_token="t", wavespeed_api_key="k", webhook_url="https://bot.example.com")
