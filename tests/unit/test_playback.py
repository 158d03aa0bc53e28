"""Playback accounting: marks, acks, interpolation, clear (protocols.md 1.3, 6.1, 6.2).

Driven through ``TwilioStream`` with a fake Twilio peer that echoes marks, plus
a few direct ``PlaybackTracker`` checks and a property test against an
emulated Twilio playout buffer. Times are seconds; audio plays at 8000 bytes/s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.playback import MarkEcho, OutstandingMark, PlaybackTracker
from switchboard.twilio_events import MarkPlayed, PlaybackAcknowledged, TwilioEvent
from switchboard.twilio_stream import TwilioStream

SID = "MZ" + "0" * 32
START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": SID,
    "start": {
        "streamSid": SID,
        "accountSid": "AC" + "0" * 32,
        "callSid": "CA" + "0" * 32,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {},
    },
}


def Ack(item_id: str, played: int, empty: bool = False) -> PlaybackAcknowledged:
    return PlaybackAcknowledged(item_id, played, empty)


@dataclass
class FakeTwilio:
    """The Twilio side of one stream: starts it and echoes marks by name."""

    stream: TwilioStream = field(default_factory=TwilioStream)
    seq: int = 1
    marks_sent: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stream.receive(json.dumps(START), 0.0)

    def play(self, item_id: str, nbytes: int, now: float, *, mark: bool = True) -> None:
        """The bridge sends ``nbytes`` of ``item_id``; remember the marks that went out."""
        self.stream.send_audio(item_id, b"\xff" * nbytes, now, mark=mark)
        self.collect()

    def collect(self) -> None:
        for text in self.stream.data_to_send():
            frame = json.loads(text)
            if frame["event"] == "mark":
                self.marks_sent.append(frame["mark"]["name"])

    def echo(self, name: str, now: float) -> tuple[bool, list[PlaybackAcknowledged]]:
        """Twilio echoes mark ``name``; return (flushed, acknowledgements that followed)."""
        self.seq += 1
        frame = {"event": "mark", "sequenceNumber": str(self.seq), "streamSid": SID}
        events: list[TwilioEvent] = self.stream.receive(
            json.dumps({**frame, "mark": {"name": name}}), now
        )
        first, *rest = events
        assert isinstance(first, MarkPlayed) and first.mark_name == name, events
        assert first.sequence_number == self.seq and first.stream_sid == SID
        assert all(isinstance(e, PlaybackAcknowledged) for e in rest), events
        return first.flushed, rest  # type: ignore[return-value]

    def played(self, item_id: str, now: float | None = None) -> int:
        return self.stream.played_bytes(item_id, now)


def test_marks_acked_in_order() -> None:
    twilio = FakeTwilio()
    for i in range(3):
        twilio.play("A", 800, 10.0 + i * 0.01)
    assert twilio.marks_sent == ["sb:1", "sb:2", "sb:3"]
    assert (twilio.stream.buffered_bytes, twilio.stream.is_playing) == (2400, True)
    assert twilio.echo("sb:1", 10.1) == (False, [Ack("A", 800)])
    assert twilio.echo("sb:2", 10.2) == (False, [Ack("A", 1600)])
    assert twilio.played("A") == 1600
    assert twilio.stream.buffered_bytes == 800
    assert twilio.echo("sb:3", 10.3) == (False, [Ack("A", 2400, empty=True)])
    assert (twilio.played("A"), twilio.stream.buffered_bytes) == (2400, 0)
    assert not twilio.stream.is_playing


# One 1600-byte (200 ms) chunk at 10.0 with mark sb:1, a second at 10.05 with sb:2.
@pytest.mark.parametrize(
    ("now", "played"),
    [
        (9.0, 0),  # before anything was sent
        (10.0, 0),
        (10.05, 400),
        (10.1, 800),
        (10.15, 1200),
        (10.2, 1600),  # exactly at sb:1
        (10.3, 1600),  # sb:1 not echoed yet: never past it
        (99.0, 1600),
    ],
)
def test_interpolation_before_any_echo(now: float, played: int) -> None:
    twilio = FakeTwilio()
    twilio.play("A", 1600, 10.0)
    twilio.play("A", 1600, 10.05)
    assert twilio.played("A", now) == played
    assert twilio.played("A") == 0  # acknowledged playback only


@pytest.mark.parametrize(
    ("echo_at", "now", "played"),
    [
        (10.2, 10.2, 1600),
        (10.2, 10.25, 2000),
        (10.2, 10.3, 2400),
        (10.2, 10.4, 3200),  # sb:2's end == all bytes sent
        (10.2, 11.0, 3200),
        (10.5, 10.55, 2000),  # a late echo re-anchors the clock at the echo
        (10.5, 10.5, 1600),
        (10.5, 10.45, 1600),  # never below what was acknowledged
    ],
)
def test_interpolation_after_an_echo(echo_at: float, now: float, played: int) -> None:
    twilio = FakeTwilio()
    twilio.play("A", 1600, 10.0)
    twilio.play("A", 1600, 10.05)
    assert twilio.echo("sb:1", echo_at) == (False, [Ack("A", 1600)])
    assert twilio.played("A", now) == played


def test_interpolation_waits_for_audio_sent_late() -> None:
    """Audio that arrives after the buffer drained starts playing when it arrives."""
    twilio = FakeTwilio()
    twilio.play("A", 800, 1.0, mark=False)  # plays 1.0 .. 1.1
    twilio.play("A", 800, 2.0, mark=False)  # plays 2.0 .. 2.1
    assert [twilio.played("A", t) for t in (1.05, 1.5, 2.0, 2.05, 3.0)] == [
        400,
        800,
        800,
        1200,
        1600,
    ]
    # Unmarked audio is never acknowledged, so it stays "buffered".
    assert (twilio.played("A"), twilio.stream.buffered_bytes) == (0, 1600)


def test_clear_with_marks_outstanding() -> None:
    twilio = FakeTwilio()
    for i in range(3):
        twilio.play("A", 800, 5.0 + i * 0.01)
    assert twilio.echo("sb:1", 5.1) == (False, [Ack("A", 800)])
    twilio.stream.clear(5.15)
    assert [json.loads(t) for t in twilio.stream.data_to_send()] == [
        {"event": "clear", "streamSid": SID}
    ]
    assert (twilio.stream.buffered_bytes, twilio.stream.is_playing) == (0, False)
    # Twilio sends the flushed marks back at once: proof of nothing.
    assert twilio.echo("sb:2", 5.16) == (True, [])
    assert twilio.echo("sb:3", 5.16) == (True, [])
    assert twilio.played("A") == 800
    # With a time, the estimate stops where the clear cut playback: 5.1 + 50 ms.
    assert twilio.played("A", 5.15) == 1200
    assert twilio.played("A", 60.0) == 1200
    assert twilio.stream.sent_bytes("A") == 2400


def test_clear_with_nothing_buffered() -> None:
    twilio = FakeTwilio()
    twilio.stream.clear(1.0)
    assert [json.loads(t) for t in twilio.stream.data_to_send()] == [
        {"event": "clear", "streamSid": SID}
    ]
    assert (twilio.played("A"), twilio.played("A", 2.0), twilio.stream.buffered_bytes) == (0, 0, 0)
    twilio.play("A", 800, 2.0)
    assert twilio.echo("sb:1", 2.1) == (False, [Ack("A", 800, empty=True)])


def test_marks_after_a_clear_are_normal_again() -> None:
    twilio = FakeTwilio()
    twilio.play("A", 800, 1.0)
    twilio.stream.clear(1.05)
    twilio.play("B", 800, 1.06)
    twilio.play("B", 800, 1.07)
    assert twilio.echo("sb:1", 1.06) == (True, [])
    assert twilio.played("B", 1.1) == 320  # B started when it was sent, at 1.06
    assert twilio.echo("sb:2", 1.16) == (False, [Ack("B", 800)])
    assert twilio.echo("sb:3", 1.26) == (False, [Ack("B", 1600, empty=True)])
    assert (twilio.played("A"), twilio.played("A", 9.0)) == (0, 400)


def test_two_items_back_to_back() -> None:
    twilio = FakeTwilio()
    twilio.play("A", 800, 0.0)  # plays 0.0 .. 0.1
    twilio.play("B", 800, 0.01)  # queued behind A: plays 0.1 .. 0.2
    # B cannot have started while A's mark is outstanding, whatever the clock says.
    assert (twilio.played("A", 0.15), twilio.played("B", 0.15)) == (800, 0)
    assert twilio.echo("sb:1", 0.1) == (False, [Ack("A", 800)])
    assert (twilio.played("A", 0.15), twilio.played("B", 0.15)) == (800, 400)
    assert twilio.echo("sb:2", 0.2) == (False, [Ack("B", 800, empty=True)])
    assert (twilio.played("A"), twilio.played("B")) == (800, 800)


def test_back_to_back_items_without_marks_play_in_order() -> None:
    twilio = FakeTwilio()
    twilio.play("A", 800, 0.0, mark=False)
    twilio.play("B", 800, 0.01, mark=False)
    assert [twilio.played("B", t) for t in (0.05, 0.1, 0.15, 0.5)] == [0, 0, 400, 800]
    assert twilio.played("A", 0.05) == 400


def test_out_of_order_echo_implies_earlier_marks_played() -> None:
    twilio = FakeTwilio()
    for i in range(3):
        twilio.play("A", 800, i * 0.01)
    assert twilio.echo("sb:2", 0.2) == (False, [Ack("A", 1600)])
    # sb:1 was retired by sb:2: its late echo is news of nothing.
    assert twilio.echo("sb:1", 0.21) == (False, [])
    assert twilio.played("A") == 1600
    assert twilio.echo("sb:3", 0.3) == (False, [Ack("A", 2400, empty=True)])


def test_out_of_order_echo_across_items_acknowledges_both() -> None:
    twilio = FakeTwilio()
    twilio.play("A", 800, 0.0)
    twilio.play("B", 400, 0.0)
    assert twilio.echo("sb:2", 0.15) == (False, [Ack("A", 800, True), Ack("B", 400, True)])


def test_unknown_mark_names_are_reported_only() -> None:
    twilio = FakeTwilio()
    twilio.play("A", 800, 0.0)
    assert twilio.echo("my label", 0.05) == (False, [])
    assert twilio.echo("sb:99", 0.05) == (False, [])
    assert (twilio.played("A"), twilio.stream.buffered_bytes) == (0, 800)


def test_free_form_mark_is_proof_of_what_played_before_it() -> None:
    twilio = FakeTwilio()
    twilio.play("A", 800, 0.0, mark=False)
    twilio.stream.send_mark("greeting done")
    twilio.collect()
    assert twilio.echo("greeting done", 0.1) == (False, [Ack("A", 800, empty=True)])
    # Sent with nothing buffered, it moves nothing, even when its echo is late
    # and audio sent meanwhile is already playing (from 0.15, not from the echo).
    twilio.stream.send_mark("idle")
    twilio.play("A", 800, 0.15, mark=False)
    assert twilio.echo("idle", 0.2) == (False, [])
    assert twilio.played("A", 0.2) == 800 + 400


def test_clear_flushes_free_form_marks_even_with_repeated_names() -> None:
    twilio = FakeTwilio()
    twilio.play("A", 800, 0.0)
    twilio.stream.send_mark("x")
    twilio.stream.send_mark("x")
    twilio.stream.clear(0.05)
    twilio.stream.send_mark("x")  # after the clear: a normal mark again
    assert [twilio.echo(name, 0.06) for name in ("sb:1", "x", "x", "x")] == [(True, [])] * 3 + [
        (False, [])
    ]
    assert twilio.played("A") == 0


def test_played_bytes_of_an_unknown_item_is_zero() -> None:
    twilio = FakeTwilio()
    assert (twilio.played("nope"), twilio.played("nope", 5.0)) == (0, 0)


def test_tracker_records_outstanding_marks() -> None:
    tracker = PlaybackTracker()
    assert tracker.audio_sent("A", 160, 1.0) == 160
    assert tracker.audio_sent("A", 160, 1.5) == 320  # too late to merge: its own segment
    tracker.mark_sent("sb:1", "A", 1.5)
    tracker.mark_sent("free")
    tracker.mark_sent("odd", "never-sent", 2.0)
    assert tracker.played_bytes("A", 1.51) == 160 + 80
    assert list(tracker.outstanding_marks) == [
        OutstandingMark("sb:1", "A", 320, 320, 1.5),
        OutstandingMark("free", None, 0, 320, None),
        OutstandingMark("odd", "never-sent", 0, 320, 2.0),
    ]
    assert tracker.mark_echoed("free", 2.0) == MarkEcho(
        known=True, flushed=False, acknowledged=(Ack("A", 320, empty=True),)
    )
    assert list(tracker.outstanding_marks) == [OutstandingMark("odd", "never-sent", 0, 320, 2.0)]
    assert tracker.mark_echoed("nope", 2.0) == MarkEcho(known=False, flushed=False)


# -- property: against an emulated Twilio playout buffer (protocols.md 1.4) -------

STEPS = st.lists(
    st.tuples(
        st.integers(0, 150),  # ms since the previous step
        st.one_of(
            st.tuples(st.just("send"), st.sampled_from("AB"), st.integers(1, 2000), st.booleans()),
            st.tuples(st.just("clear")),
            st.tuples(st.just("query"), st.sampled_from("AB")),
        ),
    ),
    max_size=25,
)


@dataclass
class Frame:
    item: str
    item_start: int
    start: float
    end: float

    def offset_at(self, now: float) -> int:
        """Item offset this frame has reached at ``now`` (-1 if it has not started)."""
        if now <= self.start or self.end <= self.start:
            return -1  # not started yet, or flushed before it started
        return self.item_start + int((min(now, self.end) - self.start) * 8000 + 1e-6)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_interpolation_matches_an_emulated_twilio_with_instant_echoes(
    steps: list[tuple[int, tuple[object, ...]]],
) -> None:
    twilio = FakeTwilio()
    frames: list[Frame] = []
    echoes: list[tuple[float, str]] = []  # (time Twilio reaches the mark, name)
    drained_at = 0.0
    sent = {"A": 0, "B": 0}
    now_ms = 1000

    def deliver_echoes(now: float) -> None:
        while echoes and echoes[0][0] <= now:
            at, name = echoes.pop(0)
            flushed, _ = twilio.echo(name, at)
            assert not flushed

    for delay, action in steps:
        now_ms += delay
        now = now_ms / 1000
        deliver_echoes(now)
        match action:
            case ("send", str(item), int(nbytes), bool(mark)):
                start = max(drained_at, now)
                drained_at = start + nbytes / 8000
                frames.append(Frame(item, sent[item], start, drained_at))
                sent[item] += nbytes
                twilio.play(item, nbytes, now, mark=mark)
                if mark:
                    echoes.append((drained_at, twilio.marks_sent[-1]))
            case ("clear",):
                for frame in frames:
                    frame.end = min(frame.end, max(frame.start, now))
                drained_at = now
                twilio.stream.clear(now)
                for _, name in echoes:
                    assert twilio.echo(name, now) == (True, [])
                echoes.clear()
            case ("query", str(item)):
                truth = max([f.offset_at(now) for f in frames if f.item == item] + [0])
                estimate = twilio.played(item, now)
                assert abs(estimate - truth) <= 1, (item, now, estimate, truth)
                assert twilio.played(item) <= estimate <= twilio.stream.sent_bytes(item)
    assert twilio.stream.sent_bytes("A") == sent["A"]
    assert twilio.stream.buffered_bytes >= 0
