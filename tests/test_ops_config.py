"""The operations settings: one HTTP address under its new and old names, log format, low balance."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings

KEYS = {"_env_file": None, "discord_token": "d" * 24, "wavespeed_api_key": "w" * 24}


def test_the_http_server_defaults_to_every_interface_on_8080():
    settings = load_settings(**KEYS)
    assert settings.listen == ("0.0.0.0", 8080)
    assert (settings.log_format, settings.low_balance_usd, settings.balance_check_minutes) == ("plain", 5.0, 10.0)


def test_webhook_host_and_port_still_work_from_the_environment(monkeypatch):
    monkeypatch.setenv("WEBHOOK_HOST", "127.0.0.1")
    monkeypatch.setenv("WEBHOOK_PORT", "9000")
    assert load_settings(**KEYS).listen == ("127.0.0.1", 9000)
    monkeypatch.setenv("HTTP_PORT", "9000")  # both names, one value: fine
    assert load_settings(**KEYS).listen == ("127.0.0.1", 9000)


def test_both_names_with_different_values_are_refused(monkeypatch):
    monkeypatch.setenv("HTTP_PORT", "8081")
    monkeypatch.setenv("WEBHOOK_PORT", "9000")
    with pytest.raises(ConfigError, match="HTTP_PORT and WEBHOOK_PORT differ: set only HTTP_PORT"):
        load_settings(**KEYS)


def test_log_format_is_plain_or_json():
    assert load_settings(**KEYS, log_format="JSON").log_format == "json"
    with pytest.raises(ConfigError, match="LOG_FORMAT is invalid"):
        load_settings(**KEYS, log_format="xml")
