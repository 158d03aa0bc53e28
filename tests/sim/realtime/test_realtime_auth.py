"""The emulator's answers to a missing or wrong key, as data (sim/realtime/auth.py)."""

from __future__ import annotations

import pytest

from sim.realtime.auth import auth_error, session_refusal

KEY = "sk-the-right-key-1234"


@pytest.mark.parametrize("header", [f"Bearer {KEY}", f"bearer  {KEY} "])
def test_the_right_key_is_accepted(header: str) -> None:
    assert session_refusal(header, KEY) is None
    assert auth_error(header, KEY) is None


def test_any_key_is_accepted_when_none_is_configured() -> None:
    assert session_refusal("Bearer anything", None) is None


def test_a_wrong_key_refuses_the_session_in_band_with_close_3000() -> None:
    refusal = session_refusal("Bearer sk-not-the-key-9876", KEY)
    assert refusal is not None
    assert (refusal.type, refusal.code) == ("invalid_request_error", "invalid_api_key")
    assert refusal.close == (3000, "invalid_request_error.invalid_api_key")
    assert refusal.message == (
        "Incorrect API key provided: sk-************9876. You can find your API key at"
        " https://platform.openai.com/account/api-keys."
    )
    assert refusal.to_error()["code"] == "invalid_api_key"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", f"Basic {KEY}", KEY])
def test_no_bearer_token_refuses_the_session_with_no_code(header: str | None) -> None:
    refusal = session_refusal(header, KEY)
    assert refusal is not None
    assert refusal.code is None
    assert refusal.message == "Missing bearer or basic authentication in header"
    assert refusal.close == (3000, "invalid_request_error")


def test_the_http_endpoints_keep_their_401_bodies() -> None:
    wrong = auth_error("Bearer sk-not-the-key-9876", KEY)
    assert wrong is not None and wrong["error"]["code"] == "invalid_api_key"
    missing = auth_error(None, KEY)
    assert missing is not None and missing["error"]["code"] is None
    assert missing["error"]["message"].startswith("You didn't provide an API key.")
