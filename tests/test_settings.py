"""One typed settings object: each variable parsed by its type, malformed ones refused by name,
secrets never repeated."""

import pytest

from personalization_pipeline.cli import main
from personalization_pipeline.settings import Settings, SettingsError

SECRET = "s3cr3t-token-value"


def test_unset_or_empty_variables_keep_the_defaults():
    settings = Settings.from_env({"REDIS_KEY_PREFIX": "", "WAREHOUSE_PATH": "  "})
    assert settings == Settings()
    assert settings.redis.prefix == ""
    assert settings.automation.sensor_interval_seconds == 1800


def test_each_variable_is_parsed_by_its_type():
    settings = Settings.from_env(
        {
            "REDIS_CLUSTER_MODE": "false",
            "PREVIEW_PERSONAL_DATA": "Yes",
            "REDIS_SOCKET_TIMEOUT": "2.5",
            "EVENTS_STREAM_SHARDS": "8",
            "PROFILE_MEMBERSHIP_STATUSES": "gold, silver,,",
            "EVENTS_WRITE_KEYS": "k1,k2",
            "SYNC_MEMORY_LIMIT": "512MB",
        }
    )
    # "false" is False: reflection by annotation used to make any non-empty string True.
    assert settings.redis.cluster_mode is False
    assert settings.preview_personal_data is True
    assert settings.redis.socket_timeout == 2.5
    assert settings.events.streams().shards == 8
    assert settings.rules.membership_statuses == ("gold", "silver")
    assert settings.events.write_keys == ("k1", "k2")
    assert settings.warehouse.sync_memory_limit == "512MB"


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("EVENTS_STREAM_SHARDS", "four", "EVENTS_STREAM_SHARDS must be a whole number"),
        ("REDIS_SOCKET_TIMEOUT", "30s", "REDIS_SOCKET_TIMEOUT must be a number"),
        ("REDIS_CLUSTER_MODE", "maybe", "REDIS_CLUSTER_MODE must be true or false"),
        ("SENSOR_INTERVAL_SECONDS", "30", "below the 60-second minimum"),
    ],
)
def test_a_malformed_variable_is_refused_by_name(variable, value, complaint):
    with pytest.raises(
        SettingsError if variable == "SENSOR_INTERVAL_SECONDS" else ValueError
    ) as refused:
        Settings.from_env({variable: value})
    assert complaint in str(refused.value)


def test_settings_listing_and_errors_never_show_a_secret(monkeypatch, capsys):
    monkeypatch.setenv("EVENTS_WRITE_KEYS", SECRET)
    monkeypatch.setenv("REDIS_URL", f"redis://app:{SECRET}@127.0.0.1:6390/0")
    monkeypatch.setenv("REDIS_KEY_PREFIX", "shop")
    main(["settings"])
    listing = capsys.readouterr().out
    assert SECRET not in listing
    assert "REDIS_KEY_PREFIX" in listing and "shop" in listing
    assert "EVENTS_WRITE_KEYS" in listing and "(set, hidden)" in listing

    monkeypatch.setenv("EVENTS_STREAM_SHARDS", SECRET)
    with pytest.raises(SystemExit) as refused:
        main(["settings"])
    assert "EVENTS_STREAM_SHARDS" in str(refused.value)
    # A number setting is not a secret, but the secret ones around it stay out of the message.
    assert f"redis://app:{SECRET}" not in str(refused.value)


def test_every_setting_is_documented_in_env_example_and_the_readme():
    from tests.conftest import REPO_ROOT

    example = (REPO_ROOT / ".env.example").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    variables = [variable for variable, _ in Settings().listing()]
    assert [v for v in variables if f"{v}=" not in example] == []
    assert [v for v in variables if f"`{v}`" not in readme] == []
