"""Settings for several processes: which database, which shards, and what stays secret."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings

KEYS = {"_env_file": None, "discord_token": "d" * 24, "wavespeed_api_key": "w" * 24}


@pytest.mark.parametrize(
    "url", ["sqlite:///data/bot.db", "postgresql://bot@db:5432/imagine", "postgres://bot:pw@db/imagine"]
)
def test_sqlite_and_postgresql_urls_are_accepted(url):
    assert load_settings(**KEYS, database_url=url).database_url == url


def test_another_database_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match=r"DATABASE_URL is invalid: .*sqlite:///.*postgresql://"):
        load_settings(**KEYS, database_url="mysql://bot@db/imagine")


def test_the_database_password_is_scrubbed_from_logs():
    settings = load_settings(**KEYS, database_url="postgresql://bot:a-long-database-password@db/imagine")
    assert "a-long-database-password" in settings.secrets()


def test_empty_shard_settings_mean_one_process_runs_every_shard():
    settings = load_settings(**KEYS, shard_count="", shard_ids="")
    assert settings.shard_count is None and settings.shard_ids == () and settings.runs_shard_zero


def test_each_process_names_its_shards_and_only_shard_zero_syncs_commands():
    first = load_settings(**KEYS, shard_count="4", shard_ids="0,1")
    second = load_settings(**KEYS, shard_count="4", shard_ids="2, 3")
    assert (first.shard_ids, second.shard_ids) == ((0, 1), (2, 3))
    assert first.runs_shard_zero and not second.runs_shard_zero


@pytest.mark.parametrize(
    ("count", "ids", "says"),
    [("", "1", "SHARD_IDS needs SHARD_COUNT"), ("2", "0,2", "from 0 to SHARD_COUNT - 1"), ("0", "", "SHARD_COUNT")],
)
def test_inconsistent_shards_are_refused_at_start_up(count, ids, says):
    with pytest.raises(ConfigError, match=says):
        load_settings(**KEYS, shard_count=count, shard_ids=ids)
