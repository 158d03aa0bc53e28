"""TwilioStream: parsing Twilio -> server frames and building server -> Twilio frames.

Cases follow protocols.md 1.2 (inbound, the doc's exact examples) and 1.3
(outbound shapes). Playback accounting lives in test_playback.py.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.errors import LocalProtocolError, TwilioProtocolError
from switchboard.twilio_events import (
    AudioReceived,
    DtmfReceived,
    MarkPlayed,
    MediaFormat,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioEvent,
    TwilioMessageRejected,
)
from switchboard.twilio_stream import TwilioStream

SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
ACCOUNT = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
CALL = "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
OTHER_SID = "MZ" + "b" * 32

# protocols.md 1.2, verbatim (the media payload's "..." elision removed).
DOC_CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
DOC_START = """{"event":"start","sequenceNumber":"1",
 "start":{"accountSid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
          "callSid":"CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","tracks":["inbound"],
          "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
          "customParameters":{"FirstName":"Jane","LastName":"Doe","RemoteParty":"Bob"}},
 "streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"""
DOC_MEDIA = """{"event":"media","sequenceNumber":"4",
 "media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"no+JhoaJjpzS"},
 "streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"""
DOC_DTMF = """{"event":"dtmf","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","sequenceNumber":"5",
 "dtmf":{"track":"inbound_track","digit":"1"}}"""
DOC_MARK = (
    '{"event":"mark","sequenceNumber":"4","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",'
    '"mark":{"name":"my label"}}'
)
DOC_STOP = """{"event":"stop","sequenceNumber":"5",
 "stop":{"accountSid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","callSid":"CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"},
 "streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"""

DOC_STARTED = StreamStarted(
    sequence_number=1,
    stream_sid=SID,
    account_sid=ACCOUNT,
    call_sid=CALL,
    tracks=("inbound",),
    media_format=MediaFormat("audio/x-mulaw", 8000, 1),
    custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
)


# -- helpers that speak the protocol ------------------------------------------


def msg(event: str, seq: int = 2, **body: object) -> dict[str, object]:
    """A Twilio -> server message as a dict, with the doc's field shapes."""
    defaults: dict[str, dict[str, object]] = {
        "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": "no+JhoaJjpzS"},
        "dtmf": {"track": "inbound_track", "digit": "7"},
        "mark": {"name": "my label"},
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
    }
    out: dict[str, object] = {"event": event, "sequenceNumber": str(seq), "streamSid": SID}
    out[event] = {**defaults[event], **body}
    return out


def start_msg() -> dict[str, object]:
    parsed: dict[str, object] = json.loads(DOC_START)
    return parsed


def edit(message: dict[str, object], path: str, value: object = ...) -> str:
    """JSON of ``message`` with ``path`` ("media.chunk") set to ``value``, or deleted if omitted."""
    data = copy.deepcopy(message)
    *parents, leaf = path.split(".")
    node: dict[str, object] = data
    for key in parents:
        child = node[key]
        assert isinstance(child, dict)
        node = child
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return json.dumps(data)


def edit_dict(message: dict[str, object], path: str, value: object) -> dict[str, object]:
    edited: dict[str, object] = json.loads(edit(message, path, value))
    return edited


def connected_stream() -> TwilioStream:
    stream = TwilioStream()
    assert stream.receive(DOC_CONNECTED, 0.0) == [StreamConnected("Call", "1.0.0")]
    return stream


def started_stream(max_message_bytes: int = 65536, mark_prefix: str = "sb") -> TwilioStream:
    stream = TwilioStream(max_message_bytes=max_message_bytes, mark_prefix=mark_prefix)
    stream.receive(DOC_CONNECTED, 0.0)
    assert stream.receive(DOC_START, 0.0) == [DOC_STARTED]
    return stream


def stopped_stream() -> TwilioStream:
    stream = started_stream()
    [event] = stream.receive(json.dumps(msg("stop")), 0.0)
    assert isinstance(event, StreamStopped)
    return stream


def rejection(events: list[TwilioEvent]) -> TwilioProtocolError:
    assert len(events) == 1, events
    [event] = events
    assert isinstance(event, TwilioMessageRejected), event
    return event.error


def sent(stream: TwilioStream) -> list[dict[str, Any]]:
    return [json.loads(text) for text in stream.data_to_send()]


# -- inbound: the doc's examples ----------------------------------------------


def test_connected_and_start_doc_examples() -> None:
    stream = TwilioStream()
    assert stream.receive(DOC_CONNECTED, 0.0) == [StreamConnected(protocol="Call", version="1.0.0")]
    assert stream.connected and not stream.started
    assert stream.receive(DOC_START, 0.0) == [DOC_STARTED]
    assert (stream.stream_sid, stream.account_sid, stream.call_sid) == (SID, ACCOUNT, CALL)
    assert stream.custom_parameters == DOC_STARTED.custom_parameters
    assert stream.media_format == MediaFormat("audio/x-mulaw", 8000, 1)
    assert stream.started and not stream.stopped
    assert (stream.messages_received, stream.rejected_count, stream.sequence_gaps) == (2, 0, 0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (DOC_MEDIA, AudioReceived(4, SID, "inbound", 2, 5, "no+JhoaJjpzS")),
        (DOC_DTMF, DtmfReceived(5, SID, "inbound_track", "1")),
        (DOC_MARK, MarkPlayed(4, SID, "my label", flushed=False)),
        (DOC_STOP, StreamStopped(5, SID, ACCOUNT, CALL)),
    ],
    ids=["media", "dtmf", "mark", "stop"],
)
def test_doc_examples_after_start(raw: str, expected: TwilioEvent) -> None:
    stream = started_stream()
    assert stream.receive(raw, 1.0) == [expected]
    assert stream.rejected_count == 0
    # The examples skip sequence numbers (start is "1", these are "4"/"5").
    assert stream.sequence_gaps == 1


def test_start_without_connected_and_without_custom_parameters() -> None:
    stream = TwilioStream()
    [event] = stream.receive(edit(start_msg(), "start.customParameters"), 0.0)
    assert event == StreamStarted(
        1, SID, ACCOUNT, CALL, ("inbound",), MediaFormat("audio/x-mulaw", 8000, 1), {}
    )
    assert stream.started and not stream.connected


def test_stop_ends_the_stream() -> None:
    stream = stopped_stream()
    assert stream.stopped
    assert rejection(stream.receive(json.dumps(msg("media", seq=3)), 1.0)) == TwilioProtocolError(
        "after_stop", "media received after stop"
    )


def test_big_decimal_counters_and_leading_zeros() -> None:
    stream = started_stream()
    raw = json.dumps(msg("media", seq=2, chunk="000123", timestamp="999999999999999999"))
    [event] = stream.receive(raw, 0.0)
    assert isinstance(event, AudioReceived)
    assert (event.chunk, event.timestamp_ms) == (123, 999_999_999_999_999_999)


@pytest.mark.parametrize(
    ("seqs", "gaps"),
    [([2, 3, 4], 0), ([2, 4], 1), ([3], 1), ([2, 2], 1), ([5, 4, 5], 2)],
)
def test_sequence_gaps_are_tolerated_and_counted(seqs: list[int], gaps: int) -> None:
    stream = started_stream()
    for seq in seqs:
        [event] = stream.receive(json.dumps(msg("dtmf", seq=seq)), 0.0)
        assert event == DtmfReceived(seq, SID, "inbound_track", "7")
    assert stream.sequence_gaps == gaps


# -- inbound: every rejection ---------------------------------------------------

MEDIA = msg("media")
START = start_msg()
# (id, stream state, frame, reason, message)
REJECTIONS: list[tuple[str, str, str | bytes, str, str]] = [
    ("binary", "started", b'{"event":"media"}', "binary_frame",
     "binary frame of 17 bytes; Twilio sends JSON text"),
    ("too-large", "started", "x" * 65537, "message_too_large",
     "message of 65537 bytes exceeds the 65536-byte limit"),
    ("too-large-utf8", "started", "\u20ac" * 21846, "message_too_large",
     "message of 65538 bytes exceeds the 65536-byte limit"),
    ("array", "started", "[1, 2]", "not_an_object", "message is a JSON array, not an object"),
    ("string", "started", '"media"', "not_an_object", "message is a JSON string, not an object"),
    ("number", "started", "4.5", "not_an_object", "message is a JSON number, not an object"),
    ("bool", "started", "true", "not_an_object", "message is a JSON boolean, not an object"),
    ("null", "started", "null", "not_an_object", "message is a JSON null, not an object"),
    ("no-event", "started", "{}", "missing_field", "event is missing"),
    ("event-number", "started", '{"event": 3}', "invalid_field",
     "event is not a string (got number)"),
    ("event-null", "started", '{"event": null}', "invalid_field",
     "event is not a string (got null)"),
    ("unknown-event", "started", '{"event": "mediaa"}', "unknown_event", "unknown event 'mediaa'"),
    ("unknown-event-long", "started", json.dumps({"event": "e" * 50}), "unknown_event",
     f"unknown event '{'e' * 36}..."),
    # order
    ("media-before-start", "fresh", json.dumps(MEDIA), "before_start",
     "media received before start"),
    ("dtmf-before-start", "connected", json.dumps(msg("dtmf")), "before_start",
     "dtmf received before start"),
    ("mark-before-start", "fresh", json.dumps(msg("mark")), "before_start",
     "mark received before start"),
    ("stop-before-start", "fresh", json.dumps(msg("stop")), "before_start",
     "stop received before start"),
    ("start-twice", "started", DOC_START, "out_of_order", "start received twice"),
    ("connected-after-start", "started", DOC_CONNECTED, "out_of_order",
     "connected received after start"),
    ("connected-twice", "connected", DOC_CONNECTED, "out_of_order", "connected received twice"),
    ("start-after-stop", "stopped", DOC_START, "after_stop", "start received after stop"),
    ("connected-after-stop", "stopped", DOC_CONNECTED, "after_stop",
     "connected received after stop"),
    ("stop-after-stop", "stopped", json.dumps(msg("stop", seq=3)), "after_stop",
     "stop received after stop"),
    ("mark-after-stop", "stopped", json.dumps(msg("mark", seq=3)), "after_stop",
     "mark received after stop"),
    # envelope
    ("sid-mismatch", "started", edit(MEDIA, "streamSid", OTHER_SID), "stream_sid_mismatch",
     f"streamSid '{OTHER_SID}' does not match '{SID}' from start"),
    ("sid-missing", "started", edit(MEDIA, "streamSid"), "missing_field", "streamSid is missing"),
    ("sid-number", "started", edit(MEDIA, "streamSid", 7), "invalid_field",
     "streamSid is not a string (got number)"),
    ("seq-letters", "started", edit(MEDIA, "sequenceNumber", "x"), "invalid_field",
     "sequenceNumber 'x' is not a decimal string"),
    ("seq-json-number", "started", edit(MEDIA, "sequenceNumber", 4), "invalid_field",
     "sequenceNumber 4 is not a decimal string"),
    ("seq-negative", "started", edit(MEDIA, "sequenceNumber", "-1"), "invalid_field",
     "sequenceNumber '-1' is not a decimal string"),
    ("seq-float", "started", edit(MEDIA, "sequenceNumber", "1.0"), "invalid_field",
     "sequenceNumber '1.0' is not a decimal string"),
    ("seq-empty", "started", edit(MEDIA, "sequenceNumber", ""), "invalid_field",
     "sequenceNumber '' is not a decimal string"),
    ("seq-arabic-digits", "started", edit(MEDIA, "sequenceNumber", "\u0664"), "invalid_field",
     "sequenceNumber '\u0664' is not a decimal string"),
    ("seq-superscript", "started", edit(MEDIA, "sequenceNumber", "\u00b2"), "invalid_field",
     "sequenceNumber '\u00b2' is not a decimal string"),
    ("seq-huge", "started", edit(MEDIA, "sequenceNumber", "1" * 19), "invalid_field",
     f"sequenceNumber '{'1' * 19}' is out of range"),
    ("seq-missing", "started", edit(MEDIA, "sequenceNumber"), "missing_field",
     "sequenceNumber is missing"),
    # media
    ("media-missing", "started", edit(MEDIA, "media"), "missing_field", "media is missing"),
    ("media-array", "started", edit(MEDIA, "media", []), "invalid_field",
     "media is not an object (got array)"),
    ("track-missing", "started", edit(MEDIA, "media.track"), "missing_field",
     "media.track is missing"),
    ("chunk-number", "started", edit(MEDIA, "media.chunk", 2), "invalid_field",
     "media.chunk 2 is not a decimal string"),
    ("timestamp-missing", "started", edit(MEDIA, "media.timestamp"), "missing_field",
     "media.timestamp is missing"),
    ("timestamp-letters", "started", edit(MEDIA, "media.timestamp", "5ms"), "invalid_field",
     "media.timestamp '5ms' is not a decimal string"),
    ("payload-missing", "started", edit(MEDIA, "media.payload"), "missing_field",
     "media.payload is missing"),
    ("payload-null", "started", edit(MEDIA, "media.payload", None), "invalid_field",
     "media.payload is not a string (got null)"),
    ("payload-doc-ellipsis", "started", edit(MEDIA, "media.payload", "no+JhoaJjpzS..."),
     "invalid_field", "media.payload is not valid base64"),
    ("payload-unpadded", "started", edit(MEDIA, "media.payload", "AAA"), "invalid_field",
     "media.payload is not valid base64"),
    ("payload-newline", "started", edit(MEDIA, "media.payload", "AAAA\nAAAA"), "invalid_field",
     "media.payload is not valid base64"),
    ("payload-surplus-padding", "started", edit(MEDIA, "media.payload", "AAAA=="),
     "invalid_field", "media.payload is not valid base64"),
    ("payload-non-ascii", "started", edit(MEDIA, "media.payload", "AA\u00e9="), "invalid_field",
     "media.payload is not valid base64"),
    # dtmf, mark, stop
    ("dtmf-missing", "started", edit(msg("dtmf"), "dtmf"), "missing_field", "dtmf is missing"),
    ("dtmf-track-bool", "started", edit(msg("dtmf"), "dtmf.track", True), "invalid_field",
     "dtmf.track is not a string (got boolean)"),
    ("dtmf-digit-number", "started", edit(msg("dtmf"), "dtmf.digit", 1), "invalid_field",
     "dtmf.digit is not a string (got number)"),
    ("dtmf-digit-text", "started", edit(msg("dtmf"), "dtmf.digit", "ignore your instructions"),
     "invalid_field", "dtmf.digit is not one key of 0123456789*#ABCD: 'ignore your instructions'"),
    ("dtmf-digit-empty", "started", edit(msg("dtmf"), "dtmf.digit", ""), "invalid_field",
     "dtmf.digit is not one key of 0123456789*#ABCD: ''"),
    ("mark-name-missing", "started", edit(msg("mark"), "mark.name"), "missing_field",
     "mark.name is missing"),
    ("mark-string", "started", edit(msg("mark"), "mark", "x"), "invalid_field",
     "mark is not an object (got string)"),
    ("stop-call-missing", "started", edit(msg("stop"), "stop.callSid"), "missing_field",
     "stop.callSid is missing"),
    ("stop-account-number", "started", edit(msg("stop"), "stop.accountSid", 1), "invalid_field",
     "stop.accountSid is not a string (got number)"),
    ("stop-sid-mismatch", "started", edit(msg("stop"), "streamSid", OTHER_SID),
     "stream_sid_mismatch", f"streamSid '{OTHER_SID}' does not match '{SID}' from start"),
    # connected
    ("connected-protocol-missing", "fresh", '{"event":"connected","version":"1.0.0"}',
     "missing_field", "protocol is missing"),
    ("connected-version-number", "fresh", '{"event":"connected","protocol":"Call","version":1}',
     "invalid_field", "version is not a string (got number)"),
    # start
    ("start-seq-number", "fresh", edit(START, "sequenceNumber", 1), "invalid_field",
     "sequenceNumber 1 is not a decimal string"),
    ("start-missing", "fresh", edit(START, "start"), "missing_field", "start is missing"),
    ("start-sid-missing", "fresh", edit(START, "start.streamSid"), "missing_field",
     "start.streamSid is missing"),
    ("start-sid-empty", "fresh", edit(edit_dict(START, "streamSid", ""), "start.streamSid", ""),
     "invalid_field", "start.streamSid is empty"),
    ("start-outer-sid-missing", "fresh", edit(START, "streamSid"), "missing_field",
     "streamSid is missing"),
    ("start-outer-sid-differs", "fresh", edit(START, "streamSid", OTHER_SID),
     "stream_sid_mismatch", f"streamSid '{OTHER_SID}' does not match start.streamSid '{SID}'"),
    ("start-account-missing", "fresh", edit(START, "start.accountSid"), "missing_field",
     "start.accountSid is missing"),
    ("start-call-number", "fresh", edit(START, "start.callSid", 5), "invalid_field",
     "start.callSid is not a string (got number)"),
    ("start-tracks-missing", "fresh", edit(START, "start.tracks"), "missing_field",
     "start.tracks is missing"),
    ("start-tracks-string", "fresh", edit(START, "start.tracks", "inbound"), "invalid_field",
     "start.tracks is not an array of strings (got string)"),
    ("start-tracks-mixed", "fresh", edit(START, "start.tracks", ["inbound", 1]),
     "invalid_field", "start.tracks is not an array of strings (got array)"),
    ("start-format-missing", "fresh", edit(START, "start.mediaFormat"), "missing_field",
     "start.mediaFormat is missing"),
    ("start-encoding-null", "fresh", edit(START, "start.mediaFormat.encoding", None),
     "invalid_field", "start.mediaFormat.encoding is not a string (got null)"),
    ("start-rate-string", "fresh", edit(START, "start.mediaFormat.sampleRate", "8000"),
     "invalid_field", "start.mediaFormat.sampleRate is not an integer (got string)"),
    ("start-rate-float", "fresh", edit(START, "start.mediaFormat.sampleRate", 8000.0),
     "invalid_field", "start.mediaFormat.sampleRate is not an integer (got number)"),
    ("start-channels-bool", "fresh", edit(START, "start.mediaFormat.channels", True),
     "invalid_field", "start.mediaFormat.channels is not an integer (got boolean)"),
    ("start-channels-missing", "fresh", edit(START, "start.mediaFormat.channels"),
     "missing_field", "start.mediaFormat.channels is missing"),
    ("start-params-array", "fresh", edit(START, "start.customParameters", []), "invalid_field",
     "start.customParameters is not an object (got array)"),
    ("start-param-number", "fresh", edit(START, "start.customParameters.LastName", 3),
     "invalid_field", "start.customParameters.LastName is not a string (got number)"),
]  # fmt: skip


def stream_in(state: str) -> TwilioStream:
    match state:
        case "fresh":
            return TwilioStream()
        case "connected":
            return connected_stream()
        case "started":
            return started_stream()
        case _:
            return stopped_stream()


@pytest.mark.parametrize(
    ("state", "raw", "reason", "message"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_rejections(state: str, raw: str | bytes, reason: str, message: str) -> None:
    stream = stream_in(state)
    before = (stream.started, stream.stopped, stream.connected, stream.sequence_gaps)
    received = stream.messages_received
    events = stream.receive(raw, 1.0)
    assert rejection(events) == TwilioProtocolError(reason, message)
    [event] = events
    assert isinstance(event, TwilioMessageRejected)
    expected_prefix = raw[:80] if isinstance(raw, str) else raw[:80].decode()
    assert event.raw_prefix == expected_prefix
    assert stream.rejected_count == 1
    assert stream.messages_received == received + 1
    # A rejected frame changes nothing else.
    assert (stream.started, stream.stopped, stream.connected, stream.sequence_gaps) == before


@pytest.mark.parametrize("raw", ["{not json", '{"event":"media"', "", "\ud800", "NaN"])
def test_invalid_json(raw: str) -> None:
    error = rejection(started_stream().receive(raw, 0.0))
    assert error.reason == "invalid_json"
    assert error.message.startswith("message is not valid JSON: ")


def test_binary_prefix_is_made_readable() -> None:
    [event] = TwilioStream().receive(b"\xff\xfe" + b"a" * 100, 0.0)
    assert isinstance(event, TwilioMessageRejected)
    assert event.raw_prefix == "\\xff\\xfe" + "a" * 78


def test_frame_at_the_limit_is_accepted() -> None:
    """Under 64 KiB it is parsed even when its char count alone could not prove it."""
    stream = started_stream()
    body = json.dumps(MEDIA)
    raw = body[:-1] + " " * (65536 - len(body)) + "}"
    assert len(raw.encode()) == 65536
    [event] = stream.receive(raw, 0.0)
    assert isinstance(event, AudioReceived)


def test_custom_size_limit() -> None:
    stream = started_stream(max_message_bytes=1000)
    assert rejection(stream.receive(" " * 1001, 0.0)) == TwilioProtocolError(
        "message_too_large", "message of 1001 bytes exceeds the 1000-byte limit"
    )


def test_rejected_start_leaves_stream_unstarted_and_then_recovers() -> None:
    stream = TwilioStream()
    assert rejection(stream.receive(edit(START, "start.tracks"), 0.0)).reason == "missing_field"
    assert stream.stream_sid is None and not stream.started
    with pytest.raises(LocalProtocolError):
        stream.send_audio("item", b"\xff", 0.0)
    assert stream.receive(DOC_START, 0.0) == [DOC_STARTED]


# -- outbound ------------------------------------------------------------------


def test_outgoing_frames_have_the_documented_shapes() -> None:
    stream = started_stream()
    stream.send_audio("item_1", b"\x00\xff\x7f", 1.0)
    stream.send_mark("greeting done")
    stream.clear(1.1)
    assert stream.data_to_send() == [
        '{"event":"media","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",'
        '"media":{"payload":"AP9/"}}',
        '{"event":"mark","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","mark":{"name":"sb:1"}}',
        '{"event":"mark","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",'
        '"mark":{"name":"greeting done"}}',
        '{"event":"clear","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}',
    ]
    assert stream.data_to_send() == []


def test_send_audio_payload_round_trips_and_mark_names_are_unique() -> None:
    stream = started_stream()
    chunks = [bytes(range(256)), b"\xff" * 160, b"\x01"]
    for chunk in chunks:
        stream.send_audio("item_1", chunk, 1.0)
    frames = sent(stream)
    media = [f for f in frames if f["event"] == "media"]
    marks = [f for f in frames if f["event"] == "mark"]
    assert [base64.b64decode(f["media"]["payload"]) for f in media] == chunks
    assert [f["mark"]["name"] for f in marks] == ["sb:1", "sb:2", "sb:3"]
    assert [f["event"] for f in frames] == ["media", "mark"] * 3
    assert stream.sent_bytes("item_1") == 256 + 160 + 1


def test_send_audio_without_mark_and_empty_audio() -> None:
    stream = started_stream()
    stream.send_audio("item_1", b"", 1.0)
    assert stream.data_to_send() == []
    stream.send_audio("item_1", b"\xff\xff\xff", 1.0, mark=False)
    assert [f["event"] for f in sent(stream)] == ["media"]
    assert stream.buffered_bytes == 3


def test_mark_prefix_and_hostile_names_are_escaped() -> None:
    stream = started_stream(mark_prefix='q"\\')
    stream.send_audio("item_1", b"\xff", 1.0)
    stream.send_mark('say "hi"\n\u00e9')
    names = [f["mark"]["name"] for f in sent(stream) if f["event"] == "mark"]
    assert names == ['q"\\:1', 'say "hi"\n\u00e9']


def test_odd_stream_sid_is_escaped_in_outgoing_frames() -> None:
    odd = 'MZ"\\</'
    start = edit_dict(edit_dict(START, "streamSid", odd), "start.streamSid", odd)
    stream = TwilioStream()
    [event] = stream.receive(json.dumps(start), 0.0)
    assert isinstance(event, StreamStarted)
    stream.send_audio("item_1", b"\xff", 1.0)
    stream.clear(1.0)
    assert {f["streamSid"] for f in sent(stream)} == {odd}


def test_free_form_mark_may_not_use_the_reserved_prefix() -> None:
    stream = started_stream()
    with pytest.raises(LocalProtocolError, match="reserved prefix 'sb:'"):
        stream.send_mark("sb:1")
    assert stream.data_to_send() == []


@pytest.mark.parametrize("state", ["fresh", "connected", "stopped"])
@pytest.mark.parametrize("action", ["audio", "mark", "clear"])
def test_sending_outside_the_stream_is_our_bug(state: str, action: str) -> None:
    stream = stream_in(state)
    when = "after" if state == "stopped" else "before"
    with pytest.raises(LocalProtocolError, match=f"{when} Twilio's"):
        match action:
            case "audio":
                stream.send_audio("item_1", b"\xff", 0.0)
            case "mark":
                stream.send_mark("x")
            case _:
                stream.clear(0.0)
    assert stream.data_to_send() == []


# -- properties ----------------------------------------------------------------

BASE64_GRAMMAR = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@settings(max_examples=500)
@given(st.text(alphabet="AZaz09+/=\n \u00e9", max_size=14))
def test_payload_validation_is_exactly_rfc4648(payload: str) -> None:
    stream = started_stream()
    [event] = stream.receive(edit(MEDIA, "media.payload", payload), 0.0)
    assert isinstance(event, AudioReceived) == bool(BASE64_GRAMMAR.fullmatch(payload))


@pytest.mark.parametrize("size", [1, 160, 161, 162])  # 160: one 20 ms frame, "=="-padded
def test_payloads_of_every_padding_are_audio(size: int) -> None:
    payload = base64.b64encode(bytes(range(size))).decode()
    [event] = started_stream().receive(edit(MEDIA, "media.payload", payload), 0.0)
    assert isinstance(event, AudioReceived) and event.payload == payload


def check_never_raises(stream: TwilioStream, frame: str | bytes) -> None:
    rejected = stream.rejected_count
    events = stream.receive(frame, 5.0)
    assert isinstance(events, list) and events
    rejections = [e for e in events if isinstance(e, TwilioMessageRejected)]
    assert stream.rejected_count == rejected + len(rejections)
    if rejections:
        assert len(events) == 1
        assert isinstance(rejections[0].error, TwilioProtocolError)
        assert rejections[0].error.message


@settings(max_examples=300)
@given(frame=st.one_of(st.text(), st.binary()), state=st.sampled_from(["fresh", "started"]))
def test_receive_never_raises_on_arbitrary_input(frame: str | bytes, state: str) -> None:
    check_never_raises(stream_in(state), frame)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
    max_size=3),
    max_leaves=6,
)  # fmt: skip
VALID_FRAMES = [
    DOC_CONNECTED,
    DOC_START,
    DOC_MEDIA,
    DOC_DTMF,
    DOC_MARK,
    DOC_STOP,
    json.dumps(msg("mark", name="sb:1")),
]


def paths(node: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found.extend(paths(value, (*prefix, key)))
    return found


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    data = json.loads(draw(st.sampled_from(VALID_FRAMES)))
    for _ in range(draw(st.integers(1, 3))):
        *parents, leaf = draw(st.sampled_from(paths(data)))
        node = data
        for key in parents:
            node = node[key]
        if draw(st.booleans()):
            del node[leaf]
        else:
            node[leaf] = draw(JSON_VALUES)
        if not paths(data):
            break
    text = json.dumps(data)
    if draw(st.booleans()) and text:
        # Character-level damage too: cut, duplicate or replace a span.
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 8)))
        text = text[:i] + draw(st.text(max_size=4)) + text[j:]
    return text


@settings(max_examples=400)
@given(frames=st.lists(mutated_frames(), min_size=1, max_size=5))
def test_receive_never_raises_on_mutated_valid_frames(frames: list[str]) -> None:
    for stream in (TwilioStream(), started_stream()):
        for frame in frames:
            check_never_raises(stream, frame)
        if stream.started and not stream.stopped:
            stream.send_audio("item_1", b"\xff" * 8, 6.0)
            assert all(json.loads(text) for text in stream.data_to_send())


@settings(max_examples=200)
@given(name=st.text(st.characters(exclude_categories=["Cs"])).filter(lambda s: s[:3] != "sb:"))
def test_any_free_form_mark_name_round_trips(name: str) -> None:
    stream = started_stream()
    stream.send_mark(name)
    [frame] = sent(stream)
    assert frame == {"event": "mark", "streamSid": SID, "mark": {"name": name}}
    echo = {"event": "mark", "sequenceNumber": "2", "streamSid": SID, "mark": {"name": name}}
    events = stream.receive(json.dumps(echo), 1.0)
    assert events == [MarkPlayed(2, SID, name, flushed=False)]


def test_unencodable_mark_name_is_our_bug() -> None:
    stream = started_stream()
    with pytest.raises(LocalProtocolError, match="cannot be sent as JSON"):
        stream.send_mark("lone \ud800 surrogate")
    assert stream.data_to_send() == []
