"""The call shell over in-memory sockets: no network, no sleeps."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from actors import call_shell
from actors.call_shell import CallShell
from switchboard.bridge import CallBridge
from switchboard.call_actions import (
    Action,
    CallerTurnTranscribed,
    FinishCall,
    HangupRequested,
    ProblemNoted,
    RenewSession,
    RunTool,
)
from switchboard.call_policy import PolicyConfig
from switchboard.errors import RealtimeServiceError, SocketClosed
from switchboard.session_config import SessionConfig

STREAM = "MZ" + "1" * 32


class MemorySocket:
    """``paused`` makes ``try_send`` refuse, as a socket whose peer is not keeping up."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.arrived = asyncio.Condition()
        self.closed_with: tuple[int, str] | None = None
        self.paused = False
        self.sent_directly = 0
        self.taken = 0
        self.sendable = asyncio.Event()  # clear it to hold a send mid-way
        self.sendable.set()
        self._notifying: set[asyncio.Future[None]] = set()

    def try_send(self, text: str) -> bool:
        if self.paused or self.closed_with is not None:
            return False
        self.sent.append(json.loads(text))
        self.sent_directly += 1
        self._notifying.add(asyncio.ensure_future(self._notify()))
        return True

    async def _notify(self) -> None:
        async with self.arrived:
            self.arrived.notify_all()

    async def send(self, text: str) -> None:
        await self.sendable.wait()
        if self.closed_with is not None:
            raise SocketClosed(*self.closed_with)
        async with self.arrived:
            self.sent.append(json.loads(text))
            self.arrived.notify_all()

    async def recv(self) -> str | bytes:
        text = await self.inbox.get()
        if text is None:
            raise SocketClosed(1000, "peer closed")
        self.taken += 1  # the shell handles it before its next await
        self._notifying.add(asyncio.ensure_future(self._notify()))
        return text

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = (code, reason)
        self.inbox.put_nowait(None)

    def of_type(self, value: str, key: str = "type") -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get(key) == value]

    async def wait_until(self, predicate: Any, timeout: float = 5.0) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(predicate), timeout)

    async def wait_for(self, key: str, value: str) -> dict[str, Any]:
        await self.wait_until(lambda: bool(self.of_type(value, key)))
        return self.of_type(value, key)[0]


class Hooks:
    def __init__(self, tool_output: str = '{"ok": true}', fail_tool: bool = False) -> None:
        self.recorded: list[Action] = []
        self.hangups: list[str] = []
        self.tool_calls: list[tuple[str, str]] = []
        self.tool_output = tool_output
        self.fail_tool = fail_tool
        self.changed = asyncio.Event()
        self.opened: list[MemorySocket] = []  # Realtime sockets of renewed sessions
        self.may_open = asyncio.Event()
        self.may_open.set()
        self.open_error: Exception | None = None

    async def run_tool(self, name: str, arguments: str) -> str:
        self.tool_calls.append((name, arguments))
        if self.fail_tool:
            raise RuntimeError("backend down")
        return self.tool_output

    async def end_call(self, reason: str) -> None:
        self.hangups.append(reason)
        self.changed.set()

    async def open_realtime(self) -> MemorySocket:
        await self.may_open.wait()
        if self.open_error is not None:
            raise self.open_error
        self.opened.append(MemorySocket())
        self.changed.set()
        return self.opened[-1]

    def record(self, action: Action, now: float) -> None:
        self.recorded.append(action)
        self.changed.set()

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


def server_event(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, "event_id": "ev", **fields})


SESSION_UPDATED = server_event(
    "session.updated",
    session={
        "type": "realtime",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
        },
    },
)
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM,
        "start": {
            "streamSid": STREAM,
            "accountSid": "AC" + "2" * 32,
            "callSid": "CA" + "3" * 32,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
)


def response(status: str, rid: str) -> str:
    kind = "response.created" if status == "in_progress" else "response.done"
    return server_event(
        kind, response={"id": rid, "object": "realtime.response", "status": status, "output": []}
    )


async def live_call(hooks: Hooks, **config: Any) -> tuple[CallShell, MemorySocket, MemorySocket]:
    bridge = CallBridge(PolicyConfig(session=SessionConfig(instructions="Test."), **config))
    shell = CallShell(bridge, hooks, call_id="c1")
    realtime, twilio = MemorySocket(), MemorySocket()
    shell.start_realtime(realtime)
    await realtime.wait_for("type", "session.update")
    shell.attach_twilio(twilio)
    twilio.inbox.put_nowait(START)
    realtime.inbox.put_nowait(SESSION_UPDATED)
    await realtime.wait_for("type", "response.create")
    return shell, realtime, twilio


async def test_audio_flows_both_ways_and_notices_are_recorded() -> None:
    hooks = Hooks()
    shell, realtime, twilio = await live_call(hooks)
    payload = base64.b64encode(b"\x7f" * 160).decode()
    twilio.inbox.put_nowait(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "2",
                "streamSid": STREAM,
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
            }
        )
    )
    append = await realtime.wait_for("type", "input_audio_buffer.append")
    assert append["audio"] == payload
    realtime.inbox.put_nowait(response("in_progress", "r1"))
    realtime.inbox.put_nowait(
        server_event(
            "response.output_audio.delta",
            response_id="r1",
            item_id="item_1",
            output_index=0,
            content_index=0,
            delta=base64.b64encode(b"\x10" * 320).decode(),
        )
    )
    media = await twilio.wait_for("event", "media")
    assert base64.b64decode(media["media"]["payload"]) == b"\x10" * 320  # one message
    await twilio.wait_for("event", "mark")
    realtime.inbox.put_nowait(
        server_event(
            "conversation.item.input_audio_transcription.completed",
            item_id="u1",
            content_index=0,
            transcript="Hello there",
            usage={"type": "duration", "seconds": 1.0},
        )
    )
    await hooks.until(lambda: CallerTurnTranscribed("u1", "Hello there") in hooks.recorded)
    await shell.close()


async def test_tools_run_through_the_hooks_and_failures_reach_the_model() -> None:
    hooks = Hooks(fail_tool=True)
    shell, realtime, _ = await live_call(hooks)
    realtime.inbox.put_nowait(response("in_progress", "r1"))
    realtime.inbox.put_nowait(
        server_event(
            "response.function_call_arguments.done",
            response_id="r1",
            item_id="f1",
            output_index=0,
            call_id="call_1",
            name="lookup",
            arguments="{}",
        )
    )
    realtime.inbox.put_nowait(response("completed", "r1"))
    item = await realtime.wait_for("type", "conversation.item.create")
    assert hooks.tool_calls == [("lookup", "{}")]
    assert item["item"]["call_id"] == "call_1"
    assert "RuntimeError: backend down" in item["item"]["output"]
    assert any(isinstance(a, RunTool) for a in hooks.recorded)
    await shell.close()


async def test_hangup_request_goes_to_the_rest_hook_and_finishes() -> None:
    hooks = Hooks()
    shell, _, _ = await live_call(hooks)
    shell.feed(HangupRequested("api"))
    await asyncio.wait_for(shell.finished.wait(), 5)
    await hooks.until(lambda: hooks.hangups == ["api"])
    assert shell.finish_reason == "api"
    await shell.close()


async def test_a_lost_model_socket_is_replaced_and_the_call_goes_on() -> None:
    hooks = Hooks()
    shell, realtime, twilio = await live_call(hooks)
    realtime.inbox.put_nowait(None)  # the connection dropped
    await hooks.until(lambda: len(hooks.opened) == 1)
    new = hooks.opened[0]
    await new.wait_for("type", "session.update")
    twilio.inbox.put_nowait(media(1, b"\x01" * 160))
    await new.wait_for("type", "input_audio_buffer.append")
    assert not shell.finished.is_set() and hooks.hangups == []
    await shell.close()


async def test_model_socket_loss_hangs_up_when_no_new_one_opens() -> None:
    hooks = Hooks()
    hooks.open_error = OSError("network unreachable")
    shell, realtime, twilio = await live_call(hooks, realtime_reconnect_budget_s=0.5)
    realtime.inbox.put_nowait(None)  # the service went away, and stays away
    await asyncio.wait_for(shell.finished.wait(), 5)
    await hooks.until(lambda: hooks.hangups == ["realtime_closed"])
    renewals = [a for a in hooks.recorded if isinstance(a, RenewSession)]
    assert len(renewals) >= 2  # tried again after a back-off, until the budget ran out
    fatal = [a for a in hooks.recorded if isinstance(a, ProblemNoted) and a.fatal]
    assert len(fatal) == 1 and "network unreachable" in fatal[0].message
    await shell.close()
    assert twilio.closed_with is not None


async def test_a_renewed_session_refused_for_its_key_hangs_up_without_trying_again() -> None:
    # The service took the upgrade, then refused the session (error invalid_api_key, close
    # 3000): connect_realtime raises that close. Another try would be refused the same way.
    hooks = Hooks()
    hooks.open_error = RealtimeServiceError(
        "cannot open the Realtime session: the service refused the session",
        3000,
        "invalid_request_error.invalid_api_key",
    )
    shell, realtime, twilio = await live_call(hooks, realtime_reconnect_budget_s=60.0)
    realtime.inbox.put_nowait(None)  # the connection dropped
    await asyncio.wait_for(shell.finished.wait(), 5)
    await hooks.until(lambda: hooks.hangups == ["realtime_invalid_api_key"])
    renewals = [a for a in hooks.recorded if isinstance(a, RenewSession)]
    assert len(renewals) == 1  # the one try that was refused: no back-off, no second
    fatal = [a for a in hooks.recorded if isinstance(a, ProblemNoted) and a.fatal]
    assert [(a.source, a.reason) for a in fatal] == [("realtime", "invalid_api_key")]
    assert "OpenAI API key is invalid" in fatal[0].message
    assert FinishCall("realtime_invalid_api_key") in hooks.recorded
    await shell.close()
    assert twilio.closed_with is not None


class FlakyHooks(Hooks):
    """The Realtime service refuses the first ``refusals`` connections (a short outage)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.tried_at: list[float] = []

    async def open_realtime(self) -> MemorySocket:
        self.tried_at.append(asyncio.get_running_loop().time())
        if len(self.tried_at) <= self.refusals:
            raise OSError("connection refused")
        return await super().open_realtime()


async def test_a_short_realtime_outage_is_waited_out_with_back_off() -> None:
    hooks = FlakyHooks(refusals=3)  # more failed tries than the two reconnects a call has
    shell, realtime, twilio = await live_call(hooks)
    realtime.inbox.put_nowait(None)  # the connection dropped
    await hooks.until(lambda: len(hooks.opened) == 1)
    new = hooks.opened[0]
    await new.wait_for("type", "session.update")
    twilio.inbox.put_nowait(media(1, b"\x01" * 160))
    await new.wait_for("type", "input_audio_buffer.append")
    assert not shell.finished.is_set() and hooks.hangups == []
    # Spaced by the back-off (at least half of 0.25 s, 0.5 s, 1 s), not back to back.
    gaps = [b - a for a, b in zip(hooks.tried_at, hooks.tried_at[1:], strict=False)]
    assert len(gaps) == 3 and all(gap >= 0.125 * 2**n for n, gap in enumerate(gaps))
    await shell.close()


class SilentHooks(Hooks):
    """The Realtime service takes connections and never answers (a black hole)."""

    async def open_realtime(self) -> MemorySocket:
        await asyncio.Event().wait()  # until the shell gives up on it
        raise AssertionError("unreachable")


async def test_a_session_that_never_connects_ends_the_call_within_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each try may wait only for what is left of the budget: the shell's own limit (made
    # an hour here) must not stretch the silence the caller hears past it.
    monkeypatch.setattr(call_shell, "REOPEN_TIMEOUT_S", 3600.0)
    hooks = SilentHooks()
    shell, realtime, _ = await live_call(hooks, realtime_reconnect_budget_s=0.3)
    realtime.inbox.put_nowait(None)  # the connection dropped
    await asyncio.wait_for(shell.finished.wait(), 60)  # a bound, not a measure
    assert FinishCall("realtime_closed") in hooks.recorded


async def test_a_stream_with_a_wrong_token_is_closed_with_1008() -> None:
    # A web call's browser learns from the close code why its socket ended (1008: policy
    # violation); the Realtime socket is closed normally.
    hooks = Hooks()
    bridge = CallBridge(
        PolicyConfig(session=SessionConfig(instructions="Test."), stream_token="the-right-one")
    )
    shell = CallShell(bridge, hooks, call_id="c1")
    realtime, twilio = MemorySocket(), MemorySocket()
    shell.start_realtime(realtime)
    shell.attach_twilio(twilio)
    start = json.loads(START)
    start["start"]["customParameters"] = {"token": "a-wrong-one"}
    twilio.inbox.put_nowait(json.dumps(start))
    await asyncio.wait_for(shell.finished.wait(), 5)
    await shell.close()
    assert twilio.closed_with == (1008, "stream_refused")
    assert realtime.closed_with == (1000, "stream_refused")


async def test_a_call_ended_by_a_hang_up_closes_the_stream_with_1000() -> None:
    hooks = Hooks()
    shell, realtime, twilio = await live_call(hooks)
    shell.feed(HangupRequested("api"))
    await asyncio.wait_for(shell.finished.wait(), 5)
    await shell.close()
    assert twilio.closed_with == (1000, "api")
    assert realtime.closed_with == (1000, "api")


async def test_stream_end_finishes_without_rest_hangup() -> None:
    hooks = Hooks()
    shell, _, twilio = await live_call(hooks)
    twilio.inbox.put_nowait(None)
    await asyncio.wait_for(shell.finished.wait(), 5)
    assert FinishCall("twilio_closed") in hooks.recorded
    assert hooks.hangups == []
    await shell.close()


async def test_deadlines_fire_from_the_timer() -> None:
    hooks = Hooks()
    shell, realtime, _ = await live_call(hooks, caller_silence_s=0.05)
    realtime.inbox.put_nowait(response("in_progress", "r1"))
    realtime.inbox.put_nowait(response("completed", "r1"))  # idle: the silence clock runs
    await realtime.wait_until(lambda: len(realtime.of_type("response.create")) == 2)
    assert "still there" in realtime.of_type("response.create")[1]["response"]["instructions"]
    await shell.close()


@pytest.mark.parametrize("garbage", ["not json", "[]", '{"type": 7}'])
async def test_garbage_from_the_model_is_recorded_not_fatal(garbage: str) -> None:
    hooks = Hooks()
    shell, realtime, _ = await live_call(hooks)
    realtime.inbox.put_nowait(garbage)
    await hooks.until(lambda: any(type(a).__name__ == "ProblemNoted" for a in hooks.recorded))
    assert not shell.finished.is_set()
    await shell.close()


async def test_messages_keep_their_order_when_the_socket_stops_keeping_up() -> None:
    bridge = CallBridge(PolicyConfig(session=SessionConfig(instructions="x")))
    realtime = MemorySocket()
    realtime.paused = True  # the first messages must wait for the writer task
    shell = CallShell(bridge, Hooks(), call_id="c1")
    shell.start_realtime(realtime)  # session.update, queued
    realtime.paused = False
    for n in range(3):
        bridge.realtime.add_user_text(f"note {n}")
        shell._dispatch([])  # what every event does: flush the cores' output
    await realtime.wait_until(lambda: len(realtime.sent) == 4)
    assert [m["type"] for m in realtime.sent] == ["session.update"] + [
        "conversation.item.create"
    ] * 3
    texts = [m["item"]["content"][0]["text"] for m in realtime.sent[1:]]
    assert texts == ["note 0", "note 1", "note 2"]
    # Once the queue is drained, messages go straight out again.
    bridge.realtime.add_user_text("note 3")
    shell._dispatch([])
    assert (
        realtime.sent_directly >= 1 and realtime.sent[-1]["item"]["content"][0]["text"] == "note 3"
    )
    await shell.close()


EXPIRED = server_event(
    "error",
    error={
        "type": "invalid_request_error",
        "code": "session_expired",
        "message": "Your session hit the maximum duration of 60 minutes.",
    },
)


def media(n: int, payload: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(n + 1),
            "streamSid": STREAM,
            "media": {
                "track": "inbound",
                "chunk": str(n),
                "timestamp": str(20 * n),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


async def test_an_expired_session_is_replaced_and_audio_meanwhile_waits_for_it() -> None:
    hooks = Hooks()
    shell, old, twilio = await live_call(hooks)
    hooks.may_open.clear()  # hold the new connection open until the audio is queued
    old.inbox.put_nowait(EXPIRED)
    await hooks.until(lambda: any(isinstance(a, RenewSession) for a in hooks.recorded))
    assert old.closed_with == (1000, "session renewed")
    twilio.inbox.put_nowait(media(1, b"\x01" * 160))
    twilio.inbox.put_nowait(media(2, b"\x02" * 160))
    await twilio.wait_until(lambda: twilio.taken == 3)  # `start` and both frames
    hooks.may_open.set()
    await hooks.until(lambda: len(hooks.opened) == 1)
    new = hooks.opened[0]
    await new.wait_until(lambda: len(new.of_type("input_audio_buffer.append")) == 2)
    # None of the greeting reached the caller: no note that the call goes on, and the
    # greeting is asked for afresh once the new session is configured.
    assert new.sent[0]["type"] == "session.update"
    assert not new.of_type("conversation.item.create") and not new.of_type("response.create")
    new.inbox.put_nowait(SESSION_UPDATED)
    create = await new.wait_for("type", "response.create")
    assert "Test." in create["response"]["instructions"]
    appends = new.of_type("input_audio_buffer.append")
    assert [base64.b64decode(m["audio"]) for m in appends] == [b"\x01" * 160, b"\x02" * 160]
    assert not old.of_type("input_audio_buffer.append")
    assert hooks.hangups == [] and not shell.finished.is_set()
    await shell.close()
    assert new.closed_with is not None


async def test_a_renewal_does_not_wait_for_an_old_session_that_never_answers_its_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A session renewed because it was lost or stuck may never answer the close: the new
    # one opens meanwhile (the caller would hear the wait as silence), and the shell's
    # close gives the old close up.
    hooks = Hooks()
    shell, old, _ = await live_call(hooks)
    closing, given_up = asyncio.Event(), asyncio.Event()

    async def never_answered(code: int = 1000, reason: str = "") -> None:
        old.closed_with = (code, reason)
        closing.set()
        try:
            await asyncio.get_running_loop().create_future()  # no answer, ever
        except asyncio.CancelledError:
            given_up.set()
            raise

    monkeypatch.setattr(old, "close", never_answered)
    old.inbox.put_nowait(EXPIRED)
    await hooks.until(lambda: len(hooks.opened) == 1)
    assert closing.is_set() and not given_up.is_set()  # opened with the old close pending
    assert old.closed_with == (1000, "session renewed")
    new = hooks.opened[0]
    await new.wait_for("type", "session.update")
    await shell.close()
    assert given_up.is_set() and new.closed_with is not None


async def test_a_renewed_session_that_cannot_connect_ends_the_call() -> None:
    hooks = Hooks()
    hooks.open_error = OSError("connection refused")
    shell, old, _ = await live_call(hooks, realtime_reconnect_budget_s=0.5)
    old.inbox.put_nowait(EXPIRED)
    await asyncio.wait_for(shell.finished.wait(), 5)
    await hooks.until(lambda: hooks.hangups == ["realtime_closed"])
    problems = [a for a in hooks.recorded if isinstance(a, ProblemNoted) and a.fatal]
    assert "connection refused" in problems[0].message
    await shell.close()


class SlowFirstHooks(Hooks):
    """The first renewed session's connection hangs until ``fail_first``, then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0
        self.fail_first = asyncio.Event()

    async def open_realtime(self) -> MemorySocket:
        self.tries += 1
        self.changed.set()
        if self.tries == 1:
            await self.fail_first.wait()
            raise OSError("connection refused")
        return await super().open_realtime()


async def test_a_renewal_that_fails_after_a_newer_one_replaced_it_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first try hangs; the caller's audio piles up for it until the shell gives that
    # session up and the policy renews again, and the newer session connects. The first
    # try failing afterwards is no news about the session the call now uses.
    monkeypatch.setattr(call_shell, "MAX_UNSENT", 3)
    hooks = SlowFirstHooks()
    shell, old, twilio = await live_call(hooks)
    running = set(shell._tasks)
    old.inbox.put_nowait(EXPIRED)
    await hooks.until(lambda: hooks.tries == 1)
    [first_try] = [  # the task opening the first renewed session
        t for t in shell._tasks - running if t.get_coro().__name__ == "_reopen_realtime"
    ]
    for n in range(1, 6):  # more than may wait for a session that has not connected
        twilio.inbox.put_nowait(media(n, bytes([n]) * 160))
    await hooks.until(lambda: len(hooks.opened) == 1)  # the second try, after a back-off
    new = hooks.opened[0]
    await new.wait_for("type", "session.update")
    before = list(hooks.recorded)
    hooks.fail_first.set()
    await asyncio.wait_for(first_try, 5)
    after = hooks.recorded[len(before) :]
    assert not [a for a in after if isinstance(a, ProblemNoted | RenewSession)], after
    assert sum(isinstance(a, RenewSession) for a in hooks.recorded) == 2
    assert new.closed_with is None and not shell.finished.is_set() and hooks.hangups == []
    await shell.close()


async def test_renewal_while_a_send_to_the_old_session_is_under_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()
    shell, old, twilio = await live_call(hooks)
    old.paused, old.sendable = True, asyncio.Event()  # the writer task holds a send
    twilio.inbox.put_nowait(media(1, b"\x01" * 160))
    await twilio.wait_until(lambda: twilio.taken == 2)
    old.inbox.put_nowait(EXPIRED)
    await hooks.until(lambda: len(hooks.opened) == 1)
    new = hooks.opened[0]
    twilio.inbox.put_nowait(media(2, b"\x02" * 160))
    await new.wait_until(lambda: len(new.of_type("input_audio_buffer.append")) == 1)
    await shell.close()
    assert "call task failed" not in caplog.text


async def test_a_phone_that_stops_reading_does_not_grow_the_queue_without_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(call_shell, "MAX_UNSENT", 5)
    hooks = Hooks()
    shell, realtime, twilio = await live_call(hooks)
    twilio.paused = True  # connected, its window shut: nothing it is sent gets through
    twilio.sendable.clear()
    realtime.inbox.put_nowait(response("in_progress", "resp_1"))
    for n in range(20):  # the greeting's audio, far more than may wait
        realtime.inbox.put_nowait(
            server_event(
                "response.output_audio.delta",
                response_id="resp_1",
                item_id="item_1",
                output_index=0,
                content_index=0,
                delta=base64.b64encode(bytes([n]) * 800).decode(),
            )
        )
    await asyncio.wait_for(shell.finished.wait(), 5)
    assert shell._unsent[id(shell._to_twilio)] <= 6
    assert shell.finish_reason == "twilio_closed"
    [problem] = [a for a in hooks.recorded if isinstance(a, ProblemNoted)]
    assert (problem.source, problem.reason) == ("twilio", "not_reading")
    twilio.sendable.set()
    await shell.close()
