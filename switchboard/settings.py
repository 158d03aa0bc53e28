"""Settings, read once from the environment and an optional ``.env`` file.

``load_settings()`` is called at the composition root (the CLI, the Serve
app); everything below it receives the values it needs, never the whole
object. Secrets are ``SecretStr``: they never appear in ``repr``, logs or
error messages, and are read with ``.get_secret_value()`` only where they are
sent to the service that owns them.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.errors import ConfigError

__all__ = ["Settings", "is_secret_param", "load_settings", "redact_url"]


class Settings(BaseSettings):
    """Every setting Switchboard reads. Field names map to upper-case env vars."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        # `TWILIO_AUTH_TOKEN=` (a blank line in .env, an empty key in a secret) is unset,
        # never an empty secret: an empty key would let anyone compute a valid signature.
        env_ignore_empty=True,
    )

    twilio_account_sid: str | None = Field(default=None, pattern=r"^AC[0-9a-fA-F]{32}$")
    twilio_auth_token: SecretStr | None = None
    # Webhooks a Webhook Rule covers are signed with a SharedKey, not the auth token
    # (protocols.md 1.6): "KEYID:secret" pairs, comma separated, the id as the
    # X-Twilio-Webhooks-Signature-Settings header names it.
    twilio_webhook_shared_keys: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_api_base_url: AnyHttpUrl | None = None

    openai_api_key: SecretStr | None = None
    openai_base_url: AnyHttpUrl | None = None
    openai_realtime_model: str = "gpt-realtime"
    # A Realtime session lasts at most this long; a longer call moves to a fresh one
    # from the margin before it (protocols.md 3.7).
    openai_session_max_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    openai_session_renew_margin_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)

    public_url: AnyHttpUrl | None = None
    switchboard_api_token: SecretStr | None = None
    # repr=False: a PostgreSQL URL can carry a password.
    database_url: str = Field(default="sqlite:///switchboard.db", repr=False)
    # Recorder actors; each call's reports go to one, chosen by its id. More than one
    # pays off with PostgreSQL (SQLite takes one writer at a time, whoever asks).
    recorder_shards: int = Field(default=1, ge=1, le=64)
    # Call actors kept started and waiting: a call takes one at once (a cold start is
    # ~0.8 s); each holds a call slot and ~0.9% of a core while it waits.
    warm_call_actors: int = Field(default=2, ge=0, le=1000)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_call_duration_s: float = Field(default=1800.0, gt=0, allow_inf_nan=False)
    caller_silence_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    log_level: str = "INFO"

    @field_validator("twilio_from_number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import phonenumbers  # deferred: only needed when the setting is present

        try:
            parsed = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"must be an E.164 number such as +15551234567: {exc}") from exc
        if not phonenumbers.is_possible_number(parsed):
            raise ValueError("is not a possible phone number")
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    @field_validator("twilio_auth_token", "openai_api_key")
    @classmethod
    def _usable_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Sent in HTTP headers (the Twilio one is an HMAC key): visible ASCII, no blanks.
        if value is not None and not _visible_ascii(value.get_secret_value()):
            raise ValueError("must be non-empty visible ASCII, without spaces")
        return value

    @field_validator("switchboard_api_token")
    @classmethod
    def _usable_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        # One token, or several separated by commas (spaces around them are ignored).
        if value is not None:
            tokens = [t.strip() for t in value.get_secret_value().split(",")]
            if not any(tokens) or not all(_visible_ascii(t) for t in tokens if t):
                raise ValueError("must be tokens of visible ASCII, separated by commas")
        return value

    @field_validator("twilio_webhook_shared_keys")
    @classmethod
    def _usable_shared_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _shared_keys(value)  # raises, naming no secret
        return value

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        # Webhook and media URLs are built by appending paths: nothing may follow the path.
        # Nor may user info precede the host: Twilio would be handed it in every URL.
        if value is not None and (value.query or value.fragment or _has_user_info(value)):
            raise ValueError("must be a plain base URL (no user:password@, query or fragment)")
        return value

    @field_validator("openai_base_url", "twilio_api_base_url")
    @classmethod
    def _no_user_info(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        # Both services authenticate with headers; a password here would show in repr.
        if value is not None and _has_user_info(value):
            raise ValueError("must not carry user info (user:password@); the key goes in headers")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _renewal_fits(self) -> Settings:
        if self.openai_session_renew_margin_s >= self.openai_session_max_s:
            raise ValueError(
                "OPENAI_SESSION_RENEW_MARGIN_S must be shorter than OPENAI_SESSION_MAX_S"
            )
        return self

    @property
    def has_twilio_credentials(self) -> bool:
        return self.twilio_account_sid is not None and self.twilio_auth_token is not None

    @property
    def has_openai_credentials(self) -> bool:
        return self.openai_api_key is not None

    @property
    def webhook_shared_keys(self) -> dict[str, SecretStr]:
        """``TWILIO_WEBHOOK_SHARED_KEYS`` by key id (none when unset)."""
        value = self.twilio_webhook_shared_keys
        return {} if value is None else _shared_keys(value)


def _shared_keys(value: SecretStr) -> dict[str, SecretStr]:
    keys: dict[str, SecretStr] = {}
    for pair in value.get_secret_value().split(","):
        key_id, colon, secret = pair.strip().partition(":")
        # The id is a header's, up to "," or "="; the secret an HMAC key, as the token.
        if not colon or not _visible_ascii(key_id) or "=" in key_id:
            raise ValueError('must be "KEYID:secret" pairs separated by commas')
        if not _visible_ascii(secret):
            raise ValueError(f"the secret of key {key_id} must be non-empty visible ASCII")
        if key_id in keys:
            raise ValueError(f"names key {key_id} twice")
        keys[key_id] = SecretStr(secret)
    return keys


def _visible_ascii(text: str) -> bool:
    return bool(text) and all("!" <= c <= "~" for c in text)


def _has_user_info(url: AnyHttpUrl) -> bool:
    # "https://:pw@host" has a password and no username.
    return url.username is not None or url.password is not None


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read the settings; a bad value raises ``ConfigError`` naming the variable.

    The error never echoes the offending value, since it may be a secret.
    """
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except UnicodeDecodeError as exc:
        problem = f"{exc.reason} at byte {exc.start}"
        raise ConfigError(f"{env_file} is not UTF-8 text ({problem})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {env_file}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None


SECRET_PARAMS = ("password", "secret", "token", "key")  # in a URL's query: hidden
WEB_SCHEMES = ("http", "https", "ws", "wss")  # read as RFC 3986 (httpx, the media sockets)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def redact_url(url: str) -> str:
    """``url`` with its password (``user:password@``) and secret-looking query values
    (``?password=``, which libpq accepts too) replaced by ``***``. Never raises.

    Each URL is read the way the code that uses it reads it: a web URL as RFC 3986
    does, any other (``DATABASE_URL``) as SQLAlchemy does, which takes a password
    with ``/``, ``[`` or ``]`` in it that ``urlsplit`` refuses or misplaces. A URL
    neither reads is hidden whole, keeping only its scheme: ``postgresql://***``.
    """
    scheme = _SCHEME.match(url)
    if scheme is None and "@" in url:
        return "***"  # no scheme to go by: whatever precedes the '@' may be a password
    if scheme is not None and scheme.group(1).lower() not in WEB_SCHEMES:
        shown = _redact_database_url(url)
    else:
        shown = _redact_web_url(url)
    if shown is not None:
        return shown
    return "***" if scheme is None else f"{scheme.group(1)}://***"


def is_secret_param(name: str) -> bool:
    """Whether a URL's query parameter ``name`` holds a secret (``password=``...)."""
    return any(word in name.lower() for word in SECRET_PARAMS)


def _hidden(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, "***" if is_secret_param(k) else v) for k, v in params]


def _redact_web_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:  # a broken [IPv6] host, or a '[' or ']' in the password
        return None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{host}"
    params = parse_qsl(parts.query, keep_blank_values=True)
    hidden = _hidden(params)
    if netloc == parts.netloc and hidden == params:
        return url  # as given (urlunsplit would drop an empty netloc's "//")
    try:  # quoting fails on the lone surrogates os.environ makes of bytes not UTF-8
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(hidden, safe="*")))
    except UnicodeError:
        return None


def _redact_database_url(url: str) -> str | None:
    # Deferred: only the CLI and the store read database URLs (a call actor never does).
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # no URL at all, or a port that is no number
        return None
    params = [
        (key, value)
        for key, values in parsed.query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    hidden = _hidden(params)
    if parsed.password is None and hidden == params:
        return url  # as given (rendering would turn sqlite:///:memory: into %3Amemory%3A)
    try:  # quoting fails on the lone surrogates os.environ makes of bytes not UTF-8
        shown = parsed.set(query={}).render_as_string(hide_password=True)
        return f"{shown}?{urlencode(hidden, safe='*')}" if hidden else shown
    except UnicodeError:
        return None
