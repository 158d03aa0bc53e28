"""What a newcomer sees around ``make run`` and ``switchboard call``: one line per
problem, never a traceback. No Ray, no emulators: the parts that would start them are
replaced by ones that fail the test if they are reached, and the API by httpx's mock
transport (or by nothing listening at all)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosedError

import serve.call_command
import serve.runner
from serve.call_command import follow_call
from serve.client import ApiError, SwitchboardClient, _message
from serve.local import bind_public, free_port
from serve.runner import banner, run_server, token_source
from serve.schemas import CallCreate
from switchboard.cli import main
from switchboard.errors import ConfigError
from switchboard.settings import Settings

CREDENTIALS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY")
PUBLIC = "http://127.0.0.1:8000"
CALL_ID = "CAfeed"


def settings(**values: Any) -> Settings:
    """Settings from ``values`` alone: no credentials unless given."""
    given: dict[str, Any] = dict.fromkeys(
        ("twilio_account_sid", "twilio_auth_token", "openai_api_key")
    )
    return Settings(_env_file=None, **(given | values))  # type: ignore[call-arg]


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port on loopback that something already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        yield int(taken.getsockname()[1])


def must_not_start(*args: object, **kwargs: object) -> Any:
    raise AssertionError("started something although the port was taken")


# -- make run, a second time ----------------------------------------------------------


def test_a_port_in_use_is_a_config_error_that_says_so(occupied: int) -> None:
    with pytest.raises(ConfigError) as info:
        bind_public("127.0.0.1", occupied)
    assert str(info.value) == (
        f"port {occupied} on 127.0.0.1 is in use: is Switchboard already running? "
        "Set PORT to use another"
    )


def test_a_free_port_is_bound_and_listening() -> None:
    port = free_port()
    with bind_public("127.0.0.1", port) as listener:
        assert listener.getsockname()[1] == port
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # accepted into the backlog: it listens


async def test_run_checks_the_port_before_it_starts_the_emulators_or_ray(
    occupied: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve.runner, "demo_services", must_not_start)
    monkeypatch.setattr(serve.runner, "local_stack", must_not_start)
    config = settings(port=occupied, host="127.0.0.1", switchboard_api_token="tok")
    with pytest.raises(ConfigError, match=f"port {occupied} on 127.0.0.1 is in use"):
        await run_server(config, StringIO(), tmp_path / ".env")


@pytest.mark.parametrize(
    ("public_url", "twilio_base", "refused"),
    [
        ("http://calls.example.com", None, True),  # real Twilio streams only over wss
        ("https://calls.example.com", None, False),
        ("http://127.0.0.1:8000", "http://127.0.0.1:9000", False),  # an emulator: its choice
    ],
)
async def test_live_mode_wants_an_https_public_url_for_real_twilio(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    public_url: str,
    twilio_base: str | None,
    refused: bool,
) -> None:
    monkeypatch.setattr(serve.runner, "demo_services", must_not_start)
    monkeypatch.setattr(serve.runner, "local_stack", must_not_start)
    monkeypatch.setattr(serve.runner, "bind_public", must_not_start)  # got this far: allowed
    config = settings(
        switchboard_api_token="tok",
        public_url=public_url,
        twilio_api_base_url=twilio_base,
        twilio_account_sid="AC" + "1" * 32,
        twilio_auth_token="secret",
        twilio_from_number="+15005550006",
        openai_api_key="sk-x",
    )
    expected = "PUBLIC_URL must be https" if refused else "started something"
    with pytest.raises((ConfigError, AssertionError), match=expected):
        await run_server(config, StringIO(), tmp_path / ".env")


def test_make_run_on_a_taken_port_prints_one_line(
    occupied: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORT", str(occupied))
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", "tok")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # restored afterwards
    monkeypatch.setattr("switchboard.cli.configure_logging", lambda level: None)
    monkeypatch.setattr(serve.runner, "demo_services", must_not_start)
    monkeypatch.setattr(serve.runner, "local_stack", must_not_start)
    assert main(["run"]) == 2
    printed = capsys.readouterr()
    assert printed.err == (
        f"switchboard: port {occupied} on 127.0.0.1 is in use: is Switchboard already "
        "running? Set PORT to use another\n"
    )


# -- the make run banner ----------------------------------------------------------------


def test_the_banner_names_the_web_console_and_where_its_token_is() -> None:
    text = banner(
        settings(),
        demo=True,
        public_url=PUBLIC,
        dashboard_url="http://127.0.0.1:8265",
        token_from="SWITCHBOARD_API_TOKEN in .env",
    )
    lines = text.splitlines()
    console = next(line for line in lines if line.strip().startswith("Web console"))
    assert console == (
        f"  Web console        {PUBLIC}/  "
        "(sign in with the API token: SWITCHBOARD_API_TOKEN in .env)"
    )
    # In the style of the lines around it: values in one column.
    api = next(line for line in lines if line.strip().startswith("API and webhooks"))
    assert api.index(PUBLIC) == console.index(PUBLIC) == 21
    assert lines[-1] == "Press Ctrl-C to stop."


def test_the_demo_banner_says_the_model_plays_the_scripted_conversation() -> None:
    text = banner(settings(), demo=True, public_url=PUBLIC, dashboard_url=None, token_from="t")
    assert "demo: Twilio and OpenAI are emulated" in text
    assert "the emulated model plays the scripted demo conversation" in text
    assert "(sim/scenarios/demo.yaml), whatever the instruction says" in text
    assert "Credentials" not in text  # none set: nothing ignored to speak of


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            {"openai_api_key": "sk-real"},
            "OPENAI_API_KEY is set but TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not:",
        ),
        (
            {"twilio_account_sid": "AC" + "1" * 32, "openai_api_key": "sk-real"},
            "TWILIO_ACCOUNT_SID and OPENAI_API_KEY are set but TWILIO_AUTH_TOKEN is not:",
        ),
    ],
)
def test_the_demo_banner_names_missing_credentials_when_some_are_set(
    given: dict[str, str], said: str
) -> None:
    text = banner(
        settings(**given), demo=True, public_url=PUBLIC, dashboard_url=None, token_from="t"
    )
    credentials = [line.strip() for line in text.splitlines()]
    at = credentials.index(f"Credentials        {said}")
    assert "both services are emulated" in credentials[at + 1]
    assert "not used" in credentials[at + 1]


def test_the_live_banner_has_no_demo_notes() -> None:
    live = settings(
        twilio_account_sid="AC" + "1" * 32, twilio_auth_token="t", openai_api_key="sk-real"
    )
    text = banner(live, demo=False, public_url=PUBLIC, dashboard_url=None, token_from="t")
    assert "live Twilio and OpenAI" in text
    assert "demo" not in text.lower().replace("demo:", "")
    assert "Credentials" not in text


def test_the_token_is_said_to_come_from_the_environment_or_the_env_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", "tok")
    assert token_source(Path(".env")) == "SWITCHBOARD_API_TOKEN in the environment"
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN")
    assert token_source(Path(".env")) == "SWITCHBOARD_API_TOKEN in .env"


# -- switchboard call ---------------------------------------------------------------


def validation_body(**fields: object) -> dict[str, object]:
    """The 422 the API answers for this request body: FastAPI's shape, the schema's words."""
    with pytest.raises(ValidationError) as info:
        CallCreate.model_validate(fields)
    return {
        "detail": [
            {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]}
            for e in info.value.errors(include_url=False)
        ]
    }


def test_a_validation_message_names_its_field_once() -> None:
    def said(body: dict[str, object]) -> str:
        return _message(httpx.Response(422, json=body))[0]

    body = validation_body(to="5551234567", instruction="hi")
    assert said(body) == (
        "HTTP 422: to must start with + and the country code (E.164), such as +15551234567"
    )
    two = validation_body(to="+15551234567", instruction="hi", max_duration_s=0)
    assert said(two) == "HTTP 422: max_duration_s: Input should be greater than or equal to 1"
    assert said({"detail": "unknown call id 'x'"}) == "HTTP 422: unknown call id 'x'"


def call_json(call_id: str = CALL_ID) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "id": call_id,
        "direction": "outbound",
        "to": "+15551234567",
        "from": "+15005550006",
        "instruction": "hi",
        "voice": None,
        "greeting": None,
        "metadata": {},
        "max_duration_s": None,
        "status": "queued",
        "twilio_sid": None,
        "created_at": now,
        "updated_at": now,
        "answered_at": None,
        "ended_at": None,
        "duration_s": None,
    }


Events = Callable[[], AsyncIterator[dict[str, object]]]


def fake_api(
    monkeypatch: pytest.MonkeyPatch,
    answer: Callable[[httpx.Request], httpx.Response],
    events: Events | None = None,
) -> None:
    """``switchboard call``'s client, answered by ``answer``; its event stream ``events``."""

    class Client(SwitchboardClient):
        def __init__(self, base_url: str, token: str, **options: Any) -> None:
            super().__init__(base_url, token, transport=httpx.MockTransport(answer), **options)

        async def stream_events(
            self, call_id: str | None = None
        ) -> AsyncIterator[dict[str, object]]:
            assert events is not None
            async for event in events():
                yield event

    monkeypatch.setattr(serve.call_command, "SwitchboardClient", Client)


def placed(request: httpx.Request) -> httpx.Response:
    assert (request.method, request.url.path) == ("POST", "/calls")
    return httpx.Response(201, json=call_json())


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", "tok")


def test_call_refused_as_invalid_prints_the_problem_without_repeating_the_field(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = validation_body(to="5551234567", instruction="hi")
    fake_api(monkeypatch, lambda request: httpx.Response(422, json=body))
    assert main(["call", "5551234567", "hi"]) == 2
    assert capsys.readouterr().err == (
        "switchboard: HTTP 422: to must start with + and the country code (E.164), "
        "such as +15551234567\n"
    )


async def test_a_server_that_is_not_running_is_named_with_how_to_start_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ApiError) as info:
        await follow_call(url, "tok", "+15551234567", "hi")
    assert str(info.value).startswith(f"cannot reach Switchboard at {url}: ")
    assert str(info.value).endswith("(is it running? start it with `make run`)")


async def test_a_stream_broken_mid_call_says_the_server_went_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def events() -> AsyncIterator[dict[str, object]]:
        yield {"type": "call.status", "status": "ringing"}
        try:
            raise ConnectionClosedError(None, None)
        except ConnectionClosedError as exc:  # as the client words it
            raise ApiError(None, f"event stream broke: {exc}") from exc

    fake_api(monkeypatch, placed, events)
    with pytest.raises(ApiError) as info:
        await follow_call(PUBLIC, "tok", "+15551234567", "hi", out=StringIO())
    message = str(info.value)
    assert message.startswith(f"the server went away during call {CALL_ID} (event stream broke: ")
    assert "the call's state is unknown" in message


@pytest.mark.parametrize("handler", ["python", "other"])
def test_ctrl_c_during_a_call_says_it_is_still_live_and_how_to_hang_it_up(
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    handler: str,
) -> None:
    # Python's own SIGINT handler (asyncio.run then cancels the call's task), as in a
    # terminal, or another one that raises KeyboardInterrupt where it lands (Ray's, once
    # an earlier test in this process started a cluster).
    def raising(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    async def events() -> AsyncIterator[dict[str, object]]:
        yield {"type": "call.status", "status": "in-progress"}
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it
        await asyncio.sleep(30)
        raise AssertionError("Ctrl-C did not stop following the call")
        yield {}  # pragma: no cover

    fake_api(monkeypatch, placed, events)
    previous = signal.signal(
        signal.SIGINT, signal.default_int_handler if handler == "python" else raising
    )
    try:
        assert main(["call", "+15551234567", "hi"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [
        f"call {CALL_ID} to +15551234567: queued",
        "status: in-progress",
    ]
    assert printed.err == (
        f"switchboard: interrupted; call {CALL_ID} is still live: hang it up with "
        f"`switchboard hangup {CALL_ID}` (or POST /calls/{CALL_ID}/hangup with the API token)\n"
    )


def test_hangup_asks_the_api_to_hang_up(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[tuple[str, str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append((request.method, request.url.path, request.headers.get("authorization")))
        return httpx.Response(202, json={"id": CALL_ID, "hangup": "requested"})

    fake_api(monkeypatch, answer)
    assert main(["hangup", CALL_ID]) == 0
    assert asked == [("POST", f"/calls/{CALL_ID}/hangup", "Bearer tok")]
    assert capsys.readouterr().out == f"hang-up requested for call {CALL_ID}\n"
