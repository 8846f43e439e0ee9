"""The retention settings: defaults, read from the environment, nonsense refused."""

from __future__ import annotations

import pytest

from mailer.config import ConfigError, Settings
from mailer.services import retention


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.retention_body_days, settings.retention_days, settings.retention_batch) == (30, 365, 1000)
    assert retention.Policy.from_settings(settings) == retention.Policy(body_days=30, days=365, batch=1000)


def test_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"MAILER_RETENTION_BODY_DAYS": "7", "MAILER_RETENTION_DAYS": "90", "MAILER_RETENTION_BATCH": "250"}
    )
    assert retention.Policy.from_settings(settings) == retention.Policy(body_days=7, days=90, batch=250)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILER_RETENTION_BODY_DAYS": "0"}, "MAILER_RETENTION_BODY_DAYS must be between 1"),
        ({"MAILER_RETENTION_DAYS": "a year"}, "MAILER_RETENTION_DAYS must be a whole number"),
        ({"MAILER_RETENTION_BATCH": "0"}, "MAILER_RETENTION_BATCH must be between 1 and 100000"),
        ({"MAILER_RETENTION_DAYS": "20"}, "MAILER_RETENTION_BODY_DAYS (30) must not exceed MAILER_RETENTION_DAYS (20)"),
    ],
)
def test_nonsense_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert message in str(raised.value)
