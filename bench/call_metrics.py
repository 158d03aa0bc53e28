"""One call's timings, from the two emulators' records (records in, numbers out).

Clocks. The Twilio emulator stamps a stream's messages in ms since the callee
answered (the *call clock*); the Realtime emulator stamps frames with its loop's
``time()``. Each emulator runs in a process of its own (``sim.processes``), and
both loops' ``time()`` is ``time.monotonic()``, one clock for every process of the
machine; the call clock's zero is the ``answered`` transition's loop time, so every
stamp converts exactly: ``answered_at + t_ms / 1000``. What each stamp means:

- phone, sent: after ``ws.send`` handed the frame to the socket;
- phone, received: when the phone's reader got the frame;
- model, client frame: when the emulator's reader got it;
- model, server frame: when the emulator generated it (its writer task sends it
  right after, on the same loop).

Matching. Caller audio: the bridge forwards each phone frame's payload unchanged,
one append per frame, in order; appends are matched to phone frames in order, by
payload (silence frames are identical, order tells them apart). Model audio: the
bridge cuts each item's deltas into 20 ms frames, in order; an item is found in the
byte stream the phone received by its first 100 ms, then each delta sits at its
offset in the item; a delta whose bytes are not there was dropped (after a barge-in).
"""

from __future__ import annotations

import base64
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

import orjson

from sim.realtime.records import SessionRecord
from sim.twilio.calls import CallEvent
from sim.twilio.recording import CallRecord

__all__ = [
    "CallTimings",
    "ModelLog",
    "PhoneLog",
    "Reply",
    "call_timings",
    "caller_to_model",
    "model_log",
    "model_to_caller",
    "phone_log",
    "underruns_ms",
]

BYTES_PER_S = 8000  # 8 kHz mu-law
PROBE_BYTES = 800  # an item's first 100 ms: unique within one call's audio
LOOKAHEAD = 250  # phone frames an append may skip past (frames not forwarded: 5 s)


@dataclass(frozen=True, slots=True)
class PhoneLog:
    answered_at: float
    sent_media: list[tuple[float, str]]  # (loop time, base64 payload)
    received_media: list[tuple[float, bytes]]
    clears: list[float]
    stream_start: float | None
    stream_end: float | None


@dataclass(frozen=True, slots=True)
class ModelLog:
    appends: list[tuple[float, str]]  # (loop time, base64 audio)
    deltas: list[tuple[float, str, bytes]]  # (loop time, item id, audio)
    speech_started: list[float]
    first_response_created: float | None
    first_audio_ms: float | None  # greeting: response.created -> first delta (the model's time)


@dataclass(frozen=True, slots=True)
class Reply:
    """One item's audio as the phone received it."""

    arrivals: list[tuple[float, int]]  # (loop time, bytes) of each frame at the phone
    sent: list[float]  # when the model generated each delta that reached the phone


@dataclass(frozen=True, slots=True)
class CallTimings:
    setup_ms: float | None  # answer -> first agent frame at the phone
    model_first_audio_ms: float | None  # of which the (emulated) model's time to first audio
    connect_ms: float | None  # answer -> stream started (the phone's `start`)
    start_to_create_ms: float | None  # `start` sent -> greeting's response.create at the model
    caller_to_model_ms: list[float]
    caller_unmatched: int
    model_to_caller_ms: list[float]
    replies: list[Reply]
    replies_lost: int  # stopped short at the phone with no barge-in to explain it
    barge_in_ms: list[float]
    stream_window: tuple[float, float] | None


def phone_log(call: CallRecord) -> PhoneLog | None:
    answered = next((t.at for t in call.transitions if t.event is CallEvent.ANSWERED), None)
    stream = call.stream
    if answered is None or stream is None:
        return None
    sent: list[tuple[float, str]] = []
    received: list[tuple[float, bytes]] = []
    clears: list[float] = []
    for message in stream.messages:
        data = orjson.loads(message.text)
        t = answered + message.t_ms / 1000
        match data.get("event"), message.direction:
            case "media", "sent":
                sent.append((t, data["media"]["payload"]))
            case "media", "received":
                received.append((t, base64.b64decode(data["media"]["payload"])))
            case "clear", "received":
                clears.append(t)

    def loop_time(ms: float | None) -> float | None:
        return None if ms is None else answered + ms / 1000

    return PhoneLog(
        answered, sent, received, clears, loop_time(stream.started_ms), loop_time(stream.ended_ms)
    )


def model_log(session: SessionRecord) -> ModelLog:
    appends: list[tuple[float, str]] = []
    deltas: list[tuple[float, str, bytes]] = []
    speech: list[float] = []
    for frame in session.frames:
        event = frame.event
        if event is None:
            continue
        match frame.direction, event.get("type"):
            case "client", "input_audio_buffer.append":
                appends.append((frame.t, event["audio"]))
            case "server", "response.output_audio.delta":
                deltas.append((frame.t, event["item_id"], base64.b64decode(event["delta"])))
            case "server", "input_audio_buffer.speech_started":
                speech.append(frame.t)
    first = session.responses[0] if session.responses else None
    audio_ms = None
    if first is not None and first.first_audio_at is not None:
        audio_ms = (first.first_audio_at - first.created_at) * 1000
    created = None if first is None else first.created_at
    return ModelLog(appends, deltas, speech, created, audio_ms)


def caller_to_model(
    sent: Sequence[tuple[float, str]], appends: Sequence[tuple[float, str]]
) -> tuple[list[float], int]:
    """Latency (ms) of each append after its phone frame, and how many matched none."""
    latencies: list[float] = []
    unmatched = next_frame = 0
    for t_append, audio in appends:
        window = range(next_frame, min(len(sent), next_frame + LOOKAHEAD))
        match = next((i for i in window if sent[i][1] == audio), None)
        if match is None:
            unmatched += 1
            continue
        latencies.append((t_append - sent[match][0]) * 1000)
        next_frame = match + 1
    return latencies, unmatched


def _items(deltas: Sequence[tuple[float, str, bytes]]) -> list[list[tuple[float, bytes]]]:
    """Deltas grouped by item, items in the order they began."""
    items: dict[str, list[tuple[float, bytes]]] = {}
    for t, item_id, audio in deltas:
        items.setdefault(item_id, []).append((t, audio))
    return list(items.values())


def model_to_caller(
    received: Sequence[tuple[float, bytes]], deltas: Sequence[tuple[float, str, bytes]]
) -> tuple[list[float], list[Reply], int]:
    """Latency (ms) from each delta to the phone's first frame of it, the replies, and how
    many replies stopped short while the phone still received audio after them: cut (a
    barge-in's ``clear`` explains one each) or lost. A reply the stream's end cut is not
    counted, nor one that never reached the phone (cancelled before a sound of it)."""
    stream = b"".join(audio for _, audio in received)
    starts = list(accumulate((len(audio) for _, audio in received), initial=0))[:-1]
    latencies: list[float] = []
    replies: list[Reply] = []
    cursor = short = 0
    for item in _items(deltas):
        at = stream.find(b"".join(audio for _, audio in item)[:PROBE_BYTES], cursor)
        if at < 0:
            continue  # nothing of this item reached the phone
        cursor, offset, end, sent = at + 1, 0, at, []
        for t, audio in item:
            pos = at + offset
            offset += len(audio)
            if pos >= len(stream) or stream[pos : pos + len(audio)] != audio[: len(stream) - pos]:
                # This delta and the rest were dropped (a barge-in) or never arrived.
                short += pos + len(audio) <= len(stream)
                break
            latencies.append((received[bisect_right(starts, pos) - 1][0] - t) * 1000)
            sent.append(t)
            end = pos + len(audio)
        first, last = bisect_right(starts, at) - 1, bisect_right(starts, end - 1) - 1
        arrivals = [(received[i][0], len(received[i][1])) for i in range(first, last + 1)]
        replies.append(Reply(arrivals, sent))
    return latencies, replies, short


def longest_gap_ms(times: Sequence[float]) -> float:
    return max((b - a for a, b in pairwise(times)), default=0.0) * 1000


def underruns_ms(arrivals: Sequence[tuple[float, int]]) -> list[float]:
    """Silences inside a reply for a playout that starts with its first frame (as the
    phone's does: no jitter buffer) and plays 8 bytes per ms while audio is buffered."""
    silences: list[float] = []
    play_end: float | None = None
    for t, size in arrivals:
        if play_end is not None and t > play_end:
            silences.append((t - play_end) * 1000)
        play_end = max(t, play_end if play_end is not None else t) + size / BYTES_PER_S
    return silences


def barge_in_ms(speech_started: Sequence[float], clears: Sequence[float]) -> list[float]:
    """For each ``clear`` at the phone: time since the model's last ``speech_started``."""
    reactions = []
    for t in clears:
        before = [s for s in speech_started if s <= t]
        if before:
            reactions.append((t - before[-1]) * 1000)
    return reactions


def call_timings(phone: PhoneLog, model: ModelLog) -> CallTimings:
    first = phone.received_media[0][0] if phone.received_media else None
    setup = None if first is None else (first - phone.answered_at) * 1000
    connect = start_to_create = None
    if phone.stream_start is not None:
        connect = (phone.stream_start - phone.answered_at) * 1000
        if model.first_response_created is not None:
            start_to_create = (model.first_response_created - phone.stream_start) * 1000
    to_model, unmatched = caller_to_model(phone.sent_media, model.appends)
    to_caller, replies, short = model_to_caller(phone.received_media, model.deltas)
    window = None
    if phone.stream_start is not None and phone.stream_end is not None:
        window = (phone.stream_start, phone.stream_end)
    return CallTimings(
        setup_ms=setup,
        model_first_audio_ms=model.first_audio_ms,
        connect_ms=connect,
        start_to_create_ms=start_to_create,
        caller_to_model_ms=to_model,
        caller_unmatched=unmatched,
        model_to_caller_ms=to_caller,
        replies=replies,
        replies_lost=max(0, short - len(phone.clears)),
        barge_in_ms=barge_in_ms(model.speech_started, phone.clears),
        stream_window=window,
    )
