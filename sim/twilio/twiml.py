"""TwiML for voice, parsed into the verbs the emulator acts on (protocols.md 1.1).

``parse_twiml(text)`` returns a ``Document`` (a tuple of frozen verb
dataclasses) or raises ``TwimlError`` with Twilio's error code: 12100 when
the text is not XML or its root is not ``<Response>``. Verbs the emulator
does not act on become ``Unsupported`` and are skipped with a warning
(Twilio's 12200 "schema validation warning"), as Twilio skips unknown nouns.
``StreamSpec.oversized_parameters()`` names the ``<Parameter>``s at or over
the size limit (name + value under 500 characters, protocols.md 1.1).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

__all__ = [
    "MAX_PARAMETER_CHARS",
    "Connect",
    "Dial",
    "Document",
    "Hangup",
    "Pause",
    "Play",
    "Redirect",
    "Say",
    "StartStream",
    "StreamSpec",
    "TwimlError",
    "Unsupported",
    "Verb",
    "parse_twiml",
]

DOCUMENT_PARSE_FAILURE = 12100
SCHEMA_WARNING = 12200
MAX_PARAMETER_CHARS = 500  # "combined name + value length must be under 500 characters"


class TwimlError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Play:
    url: str
    digits: str = ""
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Pause:
    length_s: float = 1.0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    url: str
    name: str = ""
    track: str = "inbound_track"
    status_callback: str = ""
    status_callback_method: str = "POST"
    parameters: tuple[tuple[str, str], ...] = ()

    def oversized_parameters(self) -> list[str]:
        """Names of the ``<Parameter>``s whose name + value is not under the limit."""
        return [n for n, v in self.parameters if len(n) + len(v) >= MAX_PARAMETER_CHARS]


@dataclass(frozen=True, slots=True)
class Connect:
    stream: StreamSpec | None
    action: str = ""
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class StartStream:
    """``<Start><Stream>``: a unidirectional fork, not emulated (only logged)."""

    stream: StreamSpec | None


@dataclass(frozen=True, slots=True)
class Dial:
    target: str
    action: str = ""
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Hangup:
    """``<Hangup>``, or ``<Reject>`` (``reject``: its reason, ``rejected`` or ``busy``)."""

    reject: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Unsupported:
    tag: str


Verb = Say | Play | Pause | Connect | StartStream | Dial | Hangup | Redirect | Unsupported
Document = tuple[Verb, ...]


def parse_twiml(text: str) -> Document:
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        raise TwimlError(DOCUMENT_PARSE_FAILURE, f"Document parse failure: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(
            DOCUMENT_PARSE_FAILURE, f"Document parse failure: root is <{root.tag}>, not <Response>"
        )
    return tuple(_verb(el) for el in root)


def _verb(el: ET.Element) -> Verb:
    a = el.attrib
    match el.tag:
        case "Say":
            return Say(text="".join(el.itertext()).strip(), loop=_int(a.get("loop"), 1))
        case "Play":
            return Play(
                url=(el.text or "").strip(), digits=a.get("digits", ""), loop=_int(a.get("loop"), 1)
            )
        case "Pause":
            return Pause(length_s=float(_int(a.get("length"), 1)))
        case "Connect":
            return Connect(
                stream=_stream(el), action=a.get("action", ""), method=a.get("method", "POST")
            )
        case "Start":
            return StartStream(stream=_stream(el))
        case "Dial":
            target = (el.text or "").strip() or " ".join((child.text or "").strip() for child in el)
            return Dial(target=target, action=a.get("action", ""), method=a.get("method", "POST"))
        case "Hangup":
            return Hangup()
        case "Reject":
            reason = a.get("reason", "rejected")
            return Hangup(reject=reason if reason in ("rejected", "busy") else "rejected")
        case "Redirect":
            return Redirect(url=(el.text or "").strip(), method=a.get("method", "POST"))
        case tag:
            return Unsupported(tag)


def _stream(el: ET.Element) -> StreamSpec | None:
    node = el.find("Stream")
    if node is None:
        return None
    a = node.attrib
    params = tuple(
        (p.attrib.get("name", ""), p.attrib.get("value", "")) for p in node.findall("Parameter")
    )
    return StreamSpec(
        url=a.get("url", ""),
        name=a.get("name", ""),
        track=a.get("track", "inbound_track"),
        status_callback=a.get("statusCallback", ""),
        status_callback_method=a.get("statusCallbackMethod", "POST"),
        parameters=params,
    )


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return max(0, int(value))
    except ValueError:
        return default
