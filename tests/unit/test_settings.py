from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from switchboard.cli import main
from switchboard.errors import ConfigError
from switchboard.settings import Settings, load_settings, redact_url

SECRET = "tok_7f3a9c-very-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_FROM_NUMBER",
        "OPENAI_API_KEY",
        "SWITCHBOARD_API_TOKEN",
        "DATABASE_URL",
        "PORT",
        "LOG_LEVEL",
        "PUBLIC_URL",
        "OPENAI_BASE_URL",
        "TWILIO_API_BASE_URL",
        "TWILIO_WEBHOOK_SHARED_KEYS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_without_credentials() -> None:
    settings = load_settings(None)
    assert not settings.has_twilio_credentials
    assert not settings.has_openai_credentials
    assert settings.database_url.startswith("sqlite:///")


def test_reads_environment_and_normalises_phone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "a" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+1 (415) 555-2671")
    settings = load_settings(None)
    assert settings.has_twilio_credentials
    assert settings.twilio_from_number == "+14155552671"
    assert settings.twilio_auth_token is not None
    assert settings.twilio_auth_token.get_secret_value() == SECRET


def test_reads_dotenv_file(tmp_path: Path) -> None:
    env = tmp_path / "custom.env"
    env.write_text(f"OPENAI_API_KEY={SECRET}\nPORT=9001\n")
    settings = load_settings(env)
    assert settings.has_openai_credentials
    assert settings.port == 9001


def test_secrets_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", SECRET)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db/switchboard")
    settings = load_settings(None)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_settings_are_frozen() -> None:
    settings = load_settings(None)
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("PORT", "70000", "PORT"),
        ("TWILIO_ACCOUNT_SID", "not-a-sid", "TWILIO_ACCOUNT_SID"),
        ("TWILIO_FROM_NUMBER", "12", "TWILIO_FROM_NUMBER"),
        ("TWILIO_FROM_NUMBER", "+1 555", "TWILIO_FROM_NUMBER"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL"),
        ("PUBLIC_URL", "not a url", "PUBLIC_URL"),
        ("PUBLIC_URL", "https://calls.example.com/?x=1", "PUBLIC_URL"),
        ("PUBLIC_URL", "https://calls.example.com/#top", "PUBLIC_URL"),
        ("PUBLIC_URL", "https://:pw-secret@calls.example.com", "PUBLIC_URL"),
        ("PUBLIC_URL", "https://user:pw-secret@calls.example.com", "PUBLIC_URL"),
        ("PUBLIC_URL", "https://user@calls.example.com", "PUBLIC_URL"),
        ("OPENAI_BASE_URL", "https://user:pw-secret@proxy.example/v1", "OPENAI_BASE_URL"),
        ("OPENAI_BASE_URL", "https://:pw-secret@proxy.example/v1", "OPENAI_BASE_URL"),
        ("TWILIO_API_BASE_URL", "https://user:pw-secret@api.example", "TWILIO_API_BASE_URL"),
        ("TWILIO_API_BASE_URL", "https://:pw-secret@api.example", "TWILIO_API_BASE_URL"),
        ("OPENAI_SESSION_MAX_S", "0", "OPENAI_SESSION_MAX_S"),
        ("OPENAI_SESSION_RENEW_MARGIN_S", "3600", "OPENAI_SESSION_RENEW_MARGIN_S"),
        ("OPENAI_SESSION_RENEW_MARGIN_S", "0", "OPENAI_SESSION_RENEW_MARGIN_S"),
        ("TWILIO_ACCOUNT_SID", "AC" + "a" * 32 + "/Calls", "TWILIO_ACCOUNT_SID"),
        ("RECORDER_SHARDS", "0", "RECORDER_SHARDS"),  # calls are shared out modulo this
        ("RECORDER_SHARDS", "65", "RECORDER_SHARDS"),
        ("WARM_CALL_ACTORS", "-1", "WARM_CALL_ACTORS"),
        ("MAX_CALL_DURATION_S", "0", "MAX_CALL_DURATION_S"),
        ("CALLER_SILENCE_TIMEOUT_S", "0", "CALLER_SILENCE_TIMEOUT_S"),
        ("CALLER_SILENCE_TIMEOUT_S", "inf", "CALLER_SILENCE_TIMEOUT_S"),
    ],
)
def test_bad_values_name_the_setting_not_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named) as info:
        load_settings(None)
    assert value not in str(info.value) or len(value) < 3


def test_log_level_is_read_in_any_case_and_stored_as_logging_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")  # logging.setLevel("debug") would raise
    assert load_settings(None).log_level == "DEBUG"


def test_cli_settings_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db/switchboard")
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "TWILIO_AUTH_TOKEN=(set)" in out
    assert "DATABASE_URL=postgresql://app:***@db/switchboard" in out


def test_cli_reports_bad_settings_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "0")
    assert main(["settings"]) == 2
    assert "PORT" in capsys.readouterr().err


def test_cli_rejects_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///switchboard.db", "sqlite:///switchboard.db"),
        ("postgresql://u:p@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:p:q@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h/db?user=u&password=p", "postgresql://h/db?user=u&password=***"),
        ("https://u:p@proxy.example/v1?api_key=k", "https://u:***@proxy.example/v1?api_key=***"),
        # SQLAlchemy reads these passwords; urlsplit refuses '[' and ends the host at '/'.
        ("postgresql+psycopg://sb:p[ss@db/sb", "postgresql+psycopg://sb:***@db/sb"),
        ("postgresql://sb:p]ss@[::1]:5432/sb", "postgresql://sb:***@[::1]:5432/sb"),
        ("postgresql://sb:p/ss@db/sb", "postgresql://sb:***@db/sb"),
        (
            "postgresql://u:p@h/db?password=a&password=b",
            "postgresql://u:***@h/db?password=***&password=***",
        ),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        # Neither parser reads it: hidden whole, but for the scheme.
        ("postgresql://sb:pw@db:port/sb", "postgresql://***"),
        ("postgresql://sb:pw@[::1/sb", "postgresql://***"),
        ("https://u:p[ss@proxy.example/v1", "https://***"),
        ("u:p[ss@db/sb", "***"),
        # A lone surrogate (os.environ's reading of bytes not UTF-8) cannot be quoted.
        ("https://u:p@proxy.example/v1?q=\ud800", "https://***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_cli_settings_masks_a_password_urlsplit_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # '[' in the password: SQLAlchemy opens it, urlsplit raises "Invalid IPv6 URL".
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql+psycopg://sb:p[ss-secret@db/sb\n")
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "p[ss-secret" not in out
    assert "DATABASE_URL=postgresql+psycopg://sb:***@db/sb" in out


@pytest.mark.parametrize("name", ["OPENAI_BASE_URL", "TWILIO_API_BASE_URL", "PUBLIC_URL"])
def test_a_url_with_user_info_is_refused_so_it_never_reaches_repr(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    for userinfo in (f"user:{SECRET}", f":{SECRET}"):
        monkeypatch.setenv(name, f"https://{userinfo}@example.com/v1")
        with pytest.raises(ConfigError, match=rf"{name}: .*user:password@") as info:
            load_settings(None)
        assert SECRET not in str(info.value)


@pytest.mark.parametrize("name", ["TWILIO_AUTH_TOKEN", "OPENAI_API_KEY", "SWITCHBOARD_API_TOKEN"])
def test_a_blank_secret_is_unset_and_an_unusable_one_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # An empty HMAC key would let anyone sign a webhook.
    monkeypatch.setenv(name, "")
    assert getattr(load_settings(None), name.lower()) is None
    for unusable in ("two words", "tökén"):
        monkeypatch.setenv(name, unusable)
        with pytest.raises(ConfigError, match=name):
            load_settings(None)
    with pytest.raises(ValidationError):
        Settings(**{name.lower(): ""})


@pytest.mark.parametrize("name", ["MAX_CALL_DURATION_S", "OPENAI_SESSION_MAX_S"])
def test_an_endless_limit_is_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    for endless in ("inf", "nan"):
        monkeypatch.setenv(name, endless)
        with pytest.raises(ConfigError, match=name):
            load_settings(None)


def test_a_dotenv_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"LOG_LEVEL=\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"\.env is not UTF-8"):
        load_settings(env)


def test_webhook_shared_keys_are_read_by_id_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_settings(None).webhook_shared_keys == {}
    monkeypatch.setenv("TWILIO_WEBHOOK_SHARED_KEYS", f"KS1:{SECRET}, KS2:a:b")
    settings = load_settings(None)
    keys = {k: v.get_secret_value() for k, v in settings.webhook_shared_keys.items()}
    assert keys == {"KS1": SECRET, "KS2": "a:b"}
    assert SECRET not in repr(settings)
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and "TWILIO_WEBHOOK_SHARED_KEYS=(set)" in out


@pytest.mark.parametrize(
    "value", [SECRET, f"KS1:{SECRET},", f":{SECRET}", "KS1:", f"KS1:{SECRET},KS1:x", "KS1:a b"]
)
def test_unusable_webhook_shared_keys_are_refused_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TWILIO_WEBHOOK_SHARED_KEYS", value)
    with pytest.raises(ConfigError, match="TWILIO_WEBHOOK_SHARED_KEYS") as raised:
        load_settings(None)
    assert SECRET not in str(raised.value)
