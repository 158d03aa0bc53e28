"""What a newcomer sees around ``make run`` and ``switchboard call``: one line per
problem, never a traceback. No Ray, no emulators: the parts that would start them are
replaced by ones that fail the test if they are reached, and the API by httpx's mock
transport (or by nothing listening at all)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
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
from serve.call_command import STILL_LIVE, follow_call
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
        ) -> AsyncGenerator[dict[str, object], None]:
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
    opened = 0

    async def events() -> AsyncIterator[dict[str, object]]:
        nonlocal opened
        opened += 1
        yield {"type": "call.status", "status": "ringing"}
        try:
            raise ConnectionClosedError(None, None)
        except ConnectionClosedError as exc:  # as the client words it
            raise ApiError(None, f"event stream broke: {exc}") from exc

    fake_api(monkeypatch, placed, events)
    err = StringIO()
    with pytest.raises(ApiError) as info:
        await follow_call(
            PUBLIC, "tok", "+15551234567", "hi", out=StringIO(), err=err, backoff_s=(0, 0)
        )
    message = str(info.value)
    assert message.startswith(f"the server went away during call {CALL_ID} (event stream broke: ")
    assert "the call's state is unknown" in message
    assert opened == 3  # followed again twice first: a replica may have gone, not the server
    assert err.getvalue().count(f"following call {CALL_ID} again in 0 s") == 2


# The events of one call as the server sends them: each stamped, as the hub does.
LIVE: dict[str, object] = {
    "type": "call.status",
    "status": "in-progress",
    "at": "2025-01-01T00:00:01+00:00",
}
HELLO: dict[str, object] = {
    "type": "transcript.caller",
    "text": "Hello?",
    "at": "2025-01-01T00:00:02+00:00",
}
REPLY: dict[str, object] = {
    "type": "transcript.agent_done",
    "item_id": "a1",
    "text": "Hi, this is Ava.",
    "at": "2025-01-01T00:00:03+00:00",
}
DONE: dict[str, object] = {
    "type": "call.status",
    "status": "completed",
    "at": "2025-01-01T00:00:04+00:00",
}
ENDED: dict[str, object] = {
    "type": "call.ended",
    "reason": "caller hung up",
    "at": "2025-01-01T00:00:05+00:00",
}
DROPPED: dict[str, object] = {
    "type": "subscription.dropped",
    "reason": "subscriber too slow: 256 events were waiting",
}


def detail_json(status: str) -> dict[str, object]:
    usage = dict.fromkeys(
        (
            "total_tokens",
            "input_tokens",
            "output_tokens",
            "input_audio_tokens",
            "input_text_tokens",
            "input_cached_tokens",
            "output_audio_tokens",
            "output_text_tokens",
        ),
        0,
    )
    detail = {"timeline": [], "transcript": [], "usage": usage, "cost_usd": "0.01"}
    return call_json() | {"status": status} | detail


def answering(*statuses: str) -> Callable[[httpx.Request], httpx.Response]:
    """The API: ``POST /calls`` places the call; each ``GET`` of it has the next status."""
    left = list(statuses)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return placed(request)
        assert (request.method, request.url.path) == ("GET", f"/calls/{CALL_ID}")
        return httpx.Response(200, json=detail_json(left.pop(0)))

    return answer


def streams(*each: list[dict[str, object]]) -> Events:
    """The call's event streams, one list of events per connection, each then ending."""
    left = list(each)

    async def events() -> AsyncIterator[dict[str, object]]:
        for event in left.pop(0):
            yield event

    return events


@pytest.mark.parametrize("ending", ["closed", "dropped"])
async def test_a_stream_that_ends_mid_call_is_followed_again_without_repeating_a_line(
    monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    # A replica shut down (its feed closed, 1001), or the hub dropped a slow viewer: the
    # call goes on in its actor. The next stream replays the call's recent events first.
    first = [LIVE, HELLO] + ([DROPPED] if ending == "dropped" else [])
    fake_api(
        monkeypatch,
        answering("in-progress", "completed"),
        streams(first, [LIVE, HELLO, REPLY, DONE, ENDED]),
    )
    out, err = StringIO(), StringIO()
    code = await follow_call(PUBLIC, "tok", "+15551234567", "hi", out=out, err=err, backoff_s=(0,))
    assert code == 0
    assert out.getvalue().splitlines() == [
        f"call {CALL_ID} to +15551234567: queued",
        "status: in-progress",
        "caller: Hello?",
        "agent:  Hi, this is Ava.",
        "status: completed",
        "ended:  caller hung up",
        "final status: completed, cost ~$0.01",
    ]
    dropped = [
        "switchboard: the server dropped this viewer: subscriber too slow: 256 events were waiting"
    ]
    assert err.getvalue().splitlines() == (dropped if ending == "dropped" else []) + [
        "switchboard: the event stream ended while the call is in-progress; "
        f"following call {CALL_ID} again in 0 s"
    ]


async def test_a_live_call_that_cannot_be_followed_again_says_how_to_hang_it_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every stream ends at once with nothing new (replicas going away one after another).
    api = answering("in-progress", "in-progress", "in-progress")
    fake_api(monkeypatch, api, streams([LIVE], [LIVE], [LIVE]))
    out, err = StringIO(), StringIO()
    code = await follow_call(
        PUBLIC, "tok", "+15551234567", "hi", out=out, err=err, backoff_s=(0, 0)
    )
    assert code == STILL_LIVE
    assert out.getvalue().splitlines() == [
        f"call {CALL_ID} to +15551234567: queued",
        "status: in-progress",
    ]  # no "final status": it has none yet
    assert err.getvalue().splitlines()[-1] == (
        f"switchboard: stopped following: its event stream keeps ending; call {CALL_ID} is "
        f"still live: hang it up with `switchboard hangup {CALL_ID}` "
        f"(or POST /calls/{CALL_ID}/hangup with the API token)"
    )


async def test_new_events_after_following_again_give_the_next_ending_its_own_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One try each time, yet three endings: each stream after the first brought news.
    api = answering("in-progress", "in-progress", "in-progress", "completed")
    events = streams([LIVE], [LIVE, HELLO], [HELLO, REPLY], [REPLY, DONE, ENDED])
    fake_api(monkeypatch, api, events)
    err = StringIO()
    code = await follow_call(
        PUBLIC, "tok", "+15551234567", "hi", out=StringIO(), err=err, backoff_s=(0,)
    )
    assert code == 0
    assert err.getvalue().count("following call") == 3


async def hang_forever() -> None:
    await asyncio.Event().wait()


async def test_the_grace_after_a_final_status_is_not_started_again_by_later_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Level meters keep coming after Twilio's final word: the grace runs from that word.
    async def events() -> AsyncIterator[dict[str, object]]:
        yield LIVE
        yield {"type": "call.status", "status": "completed", "applied": True}
        for n in itertools.count():  # each well within the grace of the one before
            await asyncio.sleep(0.01)
            yield {"type": "levels", "at": f"t{n}", "caller": 0.1, "agent": 0.0}

    fake_api(monkeypatch, answering("completed"), events)
    code = await asyncio.wait_for(
        follow_call(PUBLIC, "tok", "+15551234567", "hi", out=StringIO(), grace_s=0.1), 10
    )
    assert code == 0


async def test_a_final_status_with_no_call_ended_ends_the_call_after_a_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reconciler settles a call no actor serves: a call.status, no call.ended follows.
    settled: dict[str, object] = {
        "type": "call.status",
        "status": "failed",
        "applied": True,
        "source": "settling",
        "reason": "abandoned",
        "message": "no call actor serves it",
        "fatal": True,
    }

    async def events() -> AsyncIterator[dict[str, object]]:
        yield LIVE
        yield settled
        await hang_forever()  # the stream stays open: nothing more comes
        yield {}  # pragma: no cover

    fake_api(monkeypatch, answering("failed"), events)
    out = StringIO()
    code = await follow_call(PUBLIC, "tok", "+15551234567", "hi", out=out, grace_s=0)
    assert code == 1
    assert out.getvalue().splitlines()[1:] == [
        "status: in-progress",
        "status: failed (no call actor serves it)",
        "final status: failed, cost ~$0.01",
    ]


async def test_call_ended_within_the_grace_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    async def events() -> AsyncIterator[dict[str, object]]:
        yield DONE
        yield ENDED
        await hang_forever()  # not read: the call is over
        yield {}  # pragma: no cover

    fake_api(monkeypatch, answering("completed"), events)
    out = StringIO()
    assert await follow_call(PUBLIC, "tok", "+15551234567", "hi", out=out, grace_s=3600) == 0
    assert out.getvalue().splitlines()[1:] == [
        "status: completed",
        "ended:  caller hung up",
        "final status: completed, cost ~$0.01",
    ]


def raising(signum: int, frame: object) -> None:
    """A SIGINT handler that raises KeyboardInterrupt where it lands: Ray's, once an
    earlier test in this process started a cluster. Python's own handler, as in a
    terminal, makes asyncio.run cancel the main task instead."""
    raise KeyboardInterrupt


@pytest.fixture
def sigint_restored() -> Iterator[None]:
    """SIGINT's handler as it was before the test, whichever one the test installed."""
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("handler", "last", "said"),
    [
        ("python", "in-progress", "is still live"),
        ("other", "in-progress", "is still live"),
        ("python", "failed", "has ended"),  # a final status: its call.ended may never come
        ("other", "failed", "has ended"),
    ],
)
def test_ctrl_c_during_a_call_says_whether_it_is_still_live_and_how_to_hang_it_up(
    cli_env: None,
    sigint_restored: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    handler: str,
    last: str,
    said: str,
) -> None:
    async def events() -> AsyncIterator[dict[str, object]]:
        yield {"type": "call.status", "status": last}
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it
        await asyncio.sleep(30)
        raise AssertionError("Ctrl-C did not stop following the call")
        yield {}  # pragma: no cover

    fake_api(monkeypatch, placed, events)
    monkeypatch.setattr(serve.call_command, "ENDED_GRACE_S", 3600.0)  # Ctrl-C comes first
    signal.signal(signal.SIGINT, signal.default_int_handler if handler == "python" else raising)
    assert main(["call", "+15551234567", "hi"]) == 130
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [
        f"call {CALL_ID} to +15551234567: queued",
        f"status: {last}",
    ]
    if said == "has ended":
        assert printed.err == f"switchboard: interrupted; call {CALL_ID} has ended\n"
    else:
        assert printed.err == (
            f"switchboard: interrupted; call {CALL_ID} is still live: hang it up with "
            f"`switchboard hangup {CALL_ID}` (or POST /calls/{CALL_ID}/hangup with the API "
            "token)\n"
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


@pytest.mark.parametrize("handler", ["python", "other"])
def test_ctrl_c_during_a_hangup_says_it_may_have_been_requested(
    cli_env: None,
    sigint_restored: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    handler: str,
) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the API is asked
        await asyncio.sleep(30)
        raise AssertionError("Ctrl-C did not stop the hang-up")

    fake_api(monkeypatch, answer)  # type: ignore[arg-type]  # MockTransport awaits it
    signal.signal(signal.SIGINT, signal.default_int_handler if handler == "python" else raising)
    assert main(["hangup", CALL_ID]) == 130
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == (
        f"switchboard: interrupted; the hang-up of call {CALL_ID} may have been requested "
        f"(GET /calls/{CALL_ID} tells whether it has ended)\n"
    )


@pytest.mark.parametrize("command", [["call", "+15551234567", "hi"], ["hangup", CALL_ID]])
def test_a_url_with_a_port_past_65535_is_one_line_not_a_traceback(
    cli_env: None, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    url = "http://127.0.0.1:99999"
    assert main([*command, "--url", url]) == 2
    assert capsys.readouterr().err == (
        f"switchboard: {url!r}: 99999 is not a port number (1-65535)\n"
    )
