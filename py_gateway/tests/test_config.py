"""Settings: defaults from the design brief, validation, secrets kept out of sight."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nuell_gateway.config import Settings
from tests.conftest import TEST_JWT_KEYS

BASE = {"DATABASE_URL": "postgresql://u@h/db", "jwt_keys": TEST_JWT_KEYS}


def test_defaults_match_the_documented_ports_and_owasp_minimums() -> None:
    settings = Settings.model_validate(BASE)
    assert settings.gateway_addr == "127.0.0.1:50051"
    assert settings.compute_target == "127.0.0.1:50052"
    assert (settings.argon2_memory_kib, settings.argon2_time_cost) == (19456, 2)
    assert settings.access_token_ttl_seconds == 1800


def test_secrets_never_show() -> None:
    settings = Settings.model_validate(
        {"DATABASE_URL": "postgresql://u:topsecret@h/db", "jwt_keys": "a:" + "q" * 40}
    )
    for text in (repr(settings), str(settings.model_dump())):
        assert "topsecret" not in text
        assert "q" * 40 not in text
    assert settings.sqlalchemy_url.drivername == "postgresql+psycopg"


def test_mail_defaults_and_smtp_urls() -> None:
    settings = Settings.model_validate(BASE)
    assert settings.require_email_verification
    assert settings.smtp_server is None  # mails wait in the outbox
    assert Settings.model_validate({**BASE, "smtp_url": ""}).smtp_server is None
    assert settings.default_locale == "en"
    assert (settings.mail_throttle_seconds, settings.mail_throttle_per_hour) == (60, 5)
    assert (
        settings.verify_email_ttl_seconds,
        settings.reset_password_ttl_seconds,
        settings.change_email_ttl_seconds,
    ) == (86400, 1800, 3600)
    plain = Settings.model_validate({**BASE, "smtp_url": "smtp://127.0.0.1:1025"}).smtp_server
    assert plain is not None
    assert (plain.host, plain.port, plain.implicit_tls, plain.username) == (
        "127.0.0.1",
        1025,
        False,
        None,
    )
    secure = Settings.model_validate(
        {**BASE, "smtp_url": "smtps://mailer:p%40ss-topsecret@smtp.example.com:465"}
    )
    server = secure.smtp_server
    assert server is not None
    assert (server.host, server.port, server.implicit_tls) == ("smtp.example.com", 465, True)
    assert (server.username, server.password) == ("mailer", "p@ss-topsecret")
    assert "topsecret" not in repr(secure)


def test_signing_keys_keep_their_order() -> None:
    settings = Settings.model_validate(BASE)
    assert list(settings.signing_keys) == ["k2026", "k2025"]


@pytest.mark.parametrize(
    "bad",
    [
        {"DATABASE_URL": "sqlite:///x.db"},
        {"gateway_addr": "no-port"},
        {"shutdown_grace_seconds": 0},
        {"db_pool_size": 0},
        {"log_level": "LOUD"},
        {"jwt_keys": "short:tooshort"},
        {"jwt_keys": "no-separator" + "x" * 40},
        {"jwt_keys": "a:" + "x" * 40 + ",a:" + "y" * 40},
        {"argon2_memory_kib": 8192},
        {"argon2_time_cost": 1},
        {"smtp_url": "http://mail.example:25"},
        {"smtp_url": "smtp://mail.example"},
        {"smtp_url": "smtp://mail.example:notaport"},
        {"smtp_url": "smtps://user:" + "x" * 40 + "@:465"},
        {"default_locale": "fr"},
        {"public_url": "ftp://nuell.example"},
        {"mail_max_attempts": 0},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({**BASE, **bad})
    assert "x" * 40 not in str(caught.value.errors(include_input=False))
