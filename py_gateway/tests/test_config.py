"""Settings: defaults from the design brief, validation, secrets kept out of sight."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nuell_gateway.config import Settings


def test_defaults_match_the_documented_ports() -> None:
    settings = Settings.model_validate({"DATABASE_URL": "postgresql://u@h/db"})
    assert settings.gateway_addr == "127.0.0.1:50051"
    assert settings.compute_target == "127.0.0.1:50052"


def test_the_database_password_never_shows() -> None:
    settings = Settings.model_validate({"DATABASE_URL": "postgresql://u:topsecret@h/db"})
    assert "topsecret" not in repr(settings)
    assert "topsecret" not in str(settings.model_dump())
    assert settings.sqlalchemy_url.drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    "bad",
    [
        {"DATABASE_URL": "sqlite:///x.db"},
        {"DATABASE_URL": "postgresql://u@h/db", "gateway_addr": "no-port"},
        {"DATABASE_URL": "postgresql://u@h/db", "shutdown_grace_seconds": 0},
        {"DATABASE_URL": "postgresql://u@h/db", "db_pool_size": 0},
        {"DATABASE_URL": "postgresql://u@h/db", "log_level": "LOUD"},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(bad)
