"""Executes a call's TwiML once it is answered (protocols.md 1.1, 1.4, 1.5, 2.2).

``TwimlExecutor.run(source)`` loads the document (inline ``Twiml``, or a
signed fetch of ``Url`` with the voice request parameters, ``AnsweredBy``
after synchronous AMD, and ``FallbackUrl`` on failure) and acts on each verb:
``<Say>``/``<Play>`` play a tone stand-in for their duration into what the
callee hears, ``<Pause>`` waits, ``<Dial>`` is connected then ended,
``<Redirect>`` and ``<Connect action>`` continue with the fetched document,
``<Hangup>``/``<Reject>`` end it, and ``<Connect><Stream>`` runs a ``Phone``
until the app closes the socket (then the next verb runs) or the task is
cancelled (the call ended or was redirected: the phone sends ``stop``).
Documents that cannot be fetched or parsed raise ``TwimlError`` (11200,
12100); verbs not emulated are skipped with a 12200 warning, and a ``<Stream
url>`` query string (dropped) or an oversized ``<Parameter>`` (still passed)
gets one too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit, urlunsplit

from .callbacks import stream_status_params, voice_params
from .caller import CallerScript, Utterance, beep, dtmf_utterance
from .media import StreamWriter
from .phone import Phone, StreamConnectError
from .recording import StreamRecord
from .twiml import (
    MAX_PARAMETER_CHARS,
    SCHEMA_WARNING,
    Connect,
    Dial,
    Document,
    Hangup,
    Pause,
    Play,
    Redirect,
    Say,
    StartStream,
    StreamSpec,
    TwimlError,
    Unsupported,
    parse_twiml,
)
from .wire import new_sid, sign, utc_now

if TYPE_CHECKING:
    from .session import CallSession

__all__ = ["DocSource", "TwimlExecutor", "say_audio"]

HTTP_RETRIEVAL_FAILURE = 11200
STREAM_URL_SCHEME = 31922
DIAL_S = 1.0  # a <Dial> is "connected, then ended" this long after it starts


@dataclass(frozen=True, slots=True)
class DocSource:
    twiml: str | None = None
    url: str | None = None
    method: str = "POST"


def say_audio(text: str) -> bytes:
    """A stand-in for text-to-speech: a 440 Hz tone about as long as the words."""
    ms = min(8000, max(400, 60 * len(text)))
    return beep(440.0, ms, amplitude=0.2)


class TwimlExecutor:
    def __init__(self, session: CallSession, machine_audio: bytes) -> None:
        self.session = session
        self.machine_audio = machine_audio  # a voicemail's greeting and beep, from the answer
        self.turns = session.exchange.caller_turns()  # shared by every stream of the call
        self.phone: Phone | None = None
        self.pending: list[Utterance] = []  # injected before a stream runs
        self._doc_url: str | None = None

    def inject(self, utterance: Utterance) -> None:
        if self.phone is not None:
            self.phone.script.inject(utterance)
        else:
            self.pending.append(utterance)

    async def load(self, source: DocSource, extra: dict[str, str] | None = None) -> Document:
        if source.url is None:
            self._doc_url = None
            return parse_twiml(source.twiml or "")
        url = source.url
        if self._doc_url is not None:
            url = urljoin(self._doc_url, url)
        rec = self.session.record
        params = voice_params(rec, rec.status.value)
        if self.session.amd is not None and rec.answered_by is not None:
            params["AnsweredBy"] = rec.answered_by
            params["MachineDetectionDuration"] = str(self.session.amd.duration_ms)
        params.update(extra or {})
        webhooks = self.session.exchange.webhooks
        text, why = await webhooks.fetch_twiml(rec, url, params, source.method)
        fallback = rec.param("FallbackUrl")
        if text is None and fallback and source is self.session.source:
            self.session.notify(HTTP_RETRIEVAL_FAILURE, f"HTTP retrieval failure: {url}: {why}")
            params.update(ErrorCode=str(HTTP_RETRIEVAL_FAILURE), ErrorUrl=url)
            method = rec.param("FallbackMethod") or "POST"
            url, (text, why) = fallback, await webhooks.fetch_twiml(rec, fallback, params, method)
        if text is None:
            raise TwimlError(HTTP_RETRIEVAL_FAILURE, f"HTTP retrieval failure: {url}: {why}")
        self._doc_url = url
        return parse_twiml(text)

    async def run(self, source: DocSource, document: Document | None = None) -> None:
        """Execute a document to its end (return) or an application error (``TwimlError``);
        ``document``: ``source`` already loaded (an inbound call's, fetched while ringing)."""
        verbs = list(document if document is not None else await self.load(source))
        while verbs:
            verb = verbs.pop(0)
            match verb:
                case Say(text=text, loop=loop):
                    for _ in range(loop or 100):
                        await self._play_local(say_audio(text), "say")
                case Play(digits=digits, loop=loop) if digits:
                    await self._play_local(dtmf_utterance(digits).audio, "play")
                case Play(loop=loop):
                    for _ in range(loop or 100):
                        await self._play_local(beep(660.0, 1000, amplitude=0.2), "play")
                case Pause(length_s=length):
                    await asyncio.sleep(length)
                case Connect(stream=None):
                    self.session.notify(
                        12200, "<Connect> without <Stream> is not emulated", "warning"
                    )
                case Connect(stream=spec, action=action, method=method):
                    assert spec is not None
                    await self._stream(spec)
                    if action:
                        verbs = list(await self.load(DocSource(url=action, method=method)))
                case StartStream():
                    self.session.notify(
                        12200, "<Start><Stream> (unidirectional) is not emulated", "warning"
                    )
                case Dial(action=action, method=method):
                    await asyncio.sleep(DIAL_S)
                    if action:
                        extra = {
                            "DialCallStatus": "completed",
                            "DialCallDuration": str(int(DIAL_S)),
                        }
                        source = DocSource(url=action, method=method)
                        verbs = list(await self.load(source, extra))
                case Hangup():
                    return
                case Redirect(url=url, method=method):
                    verbs = list(await self.load(DocSource(url=url, method=method)))
                case Unsupported(tag=tag):
                    self.session.notify(12200, f"<{tag}> is not emulated; skipped", "warning")

    async def _play_local(self, audio: bytes, source: str) -> None:
        self.session.record.heard.add_item(self.session.call_ms(), audio, source, source)
        await asyncio.sleep(len(audio) / 8000)

    # -- <Connect><Stream> ---------------------------------------------------------------

    async def _stream(self, spec: StreamSpec) -> None:
        config, rec = self.session.exchange.config, self.session.record
        parts = urlsplit(spec.url)
        stream_sid = new_sid("MZ")
        url = spec.url
        if parts.query:
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
            # "url does not support query string parameters": Twilio drops them
            self.session.notify(12200, f"<Stream url> query string dropped: {spec.url}", "warning")
        for name in spec.oversized_parameters():
            # protocols.md 1.1 gives the limit, not what Twilio does past it: warn, and
            # still pass the parameter, so an app that relies on it is flagged, not broken.
            self.session.notify(
                SCHEMA_WARNING,
                f"<Parameter name={name[:40]!r}>: name + value is not under "
                f"{MAX_PARAMETER_CHARS} characters",
                "warning",
            )
        custom = {name: value for name, value in spec.parameters}
        stream = StreamRecord(stream_sid, url, spec.name, custom)
        rec.streams.append(stream)
        if not config.ws_allowed(parts.scheme, parts.hostname):
            message = f"Stream - WebSocket - URL Schema Not Supported: {spec.url}"
            self._stream_failed(spec, stream, STREAM_URL_SCHEME, message)
            return
        script = CallerScript(self.turns, self.session.exchange.load_clip, config.dtmf_audio)
        for utterance in self.pending:
            script.inject(utterance)
        self.pending.clear()
        loop = asyncio.get_running_loop()
        assert self.session.answered_at is not None
        phone = Phone(
            url=url,
            signature=sign(config.auth_token, url, {}),
            writer=StreamWriter(stream_sid, rec.account_sid, rec.sid),
            record=stream,
            script=script,
            heard=rec.heard,
            clock=self.session.exchange.clock,
            stats=self.session.exchange.stats,
            journal=self.session.exchange.journal,
            call_sid=rec.sid,
            answered_at=self.session.answered_at,
            custom_parameters=custom,
            on_hangup=lambda: self.session.hang_up(loop.time(), "caller"),
            on_change=self._on_stream_change(spec, stream),
            record_frames=config.record_frames,
            prelude=self.machine_audio,
        )
        self.phone = phone
        try:
            await phone.run()
            self._stream_status(spec, stream, "stream-stopped")
        except StreamConnectError as exc:
            self._stream_failed(spec, stream, exc.code, exc.message)
        except asyncio.CancelledError:
            if stream.started_ms is not None:
                self._stream_status(spec, stream, "stream-stopped")
            raise
        finally:
            self.phone = None
            self.session.exchange.changed()

    def _on_stream_change(self, spec: StreamSpec, stream: StreamRecord) -> Callable[[], None]:
        started = False

        def changed() -> None:
            nonlocal started
            if not started and stream.started_ms is not None:
                started = True
                self._stream_status(spec, stream, "stream-started")
            self.session.exchange.changed()

        return changed

    def _stream_failed(
        self, spec: StreamSpec, stream: StreamRecord, code: int, message: str
    ) -> None:
        stream.end_reason, stream.error_code = "error", code
        stream.ended_ms = self.session.call_ms()
        self.session.notify(code, message)
        self._stream_status(spec, stream, "stream-error", message)

    def _stream_status(
        self, spec: StreamSpec, stream: StreamRecord, event: str, error: str | None = None
    ) -> None:
        if not spec.status_callback:
            return
        rec, webhooks = self.session.record, self.session.exchange.webhooks
        params = stream_status_params(rec, stream.stream_sid, spec.name, event, error, utc_now())
        url, method = spec.status_callback, spec.status_callback_method
        self.session.lane.submit(
            lambda: webhooks.request("stream-status", rec, url, params, method)
        )
