"""Switchboard's one exception tree.

::

    SwitchboardError
    ├── ConfigError                 settings missing or malformed
    │   └── ScenarioError           an emulator scenario file that cannot be used
    ├── CodecError                  audio that cannot be decoded or framed
    ├── PeerProtocolError           the peer broke its protocol (we did nothing wrong)
    │   ├── TwilioProtocolError     a Twilio Media Streams frame we cannot accept
    │   └── RealtimeProtocolError   an OpenAI Realtime server event we cannot accept
    ├── LocalProtocolError          we asked a core for something its state forbids
    │   └── IllegalTransition       a state machine was fed an event its table forbids
    ├── StoreError                  the call store refused a request or its database failed
    │   └── StoreInputError         a value it refuses (sending it again cannot help)
    ├── ServiceError                a remote service answered with an error
    │   ├── TwilioServiceError
    │   └── RealtimeServiceError
    ├── CallCanceled                a call hung up while it was being placed, before the dial
    └── SocketClosed                a WebSocket peer went away (code and reason kept)

Cores never let a peer's bad input escape as an exception: they turn a
``PeerProtocolError`` into a typed ``…Rejected`` event and carry on, so the
call policy decides whether to ignore it or end the call. Foreign exceptions
(websockets, twilio, openai, sqlalchemy) are translated into this tree at one
boundary with ``raise X(...) from exc``.
"""

from __future__ import annotations

__all__ = [
    "CallCanceled",
    "CodecError",
    "ConfigError",
    "IllegalTransition",
    "LocalProtocolError",
    "PeerProtocolError",
    "RealtimeProtocolError",
    "RealtimeServiceError",
    "ScenarioError",
    "ServiceError",
    "SocketClosed",
    "StoreError",
    "StoreInputError",
    "SwitchboardError",
    "TwilioProtocolError",
    "TwilioServiceError",
]


class SwitchboardError(Exception):
    """Root of every error Switchboard raises on purpose."""


class ConfigError(SwitchboardError):
    """A setting is missing or malformed; the message names the setting."""


class ScenarioError(ConfigError):
    """An emulator scenario file is malformed; the message names the field."""


class CodecError(SwitchboardError):
    """Audio bytes that cannot be decoded, resampled or framed."""


class PeerProtocolError(SwitchboardError):
    """The remote peer sent something its protocol does not allow.

    ``reason`` is a short machine-readable code (``invalid_json``,
    ``missing_field``, ...); the message says in words what was wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and isinstance(other, PeerProtocolError)
            and (self.reason, self.message) == (other.reason, other.message)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.reason, self.message))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class TwilioProtocolError(PeerProtocolError):
    """A Twilio Media Streams frame that cannot be accepted."""


class RealtimeProtocolError(PeerProtocolError):
    """An OpenAI Realtime server event that cannot be accepted."""


class LocalProtocolError(SwitchboardError):
    """Our own code asked a core for something its current state forbids."""


class IllegalTransition(LocalProtocolError):
    """A state machine received an event its transition table does not allow."""

    def __init__(self, state: object, event: object) -> None:
        super().__init__(f"event {event!r} is not allowed in state {state!r}")
        self.state = state
        self.event = event


class StoreError(SwitchboardError):
    """The call store refused a request (unknown call id, bad value) or its database failed."""


class StoreInputError(StoreError):
    """The store refused a value (not its database failing): sending it again cannot help."""


class ServiceError(SwitchboardError):
    """A remote service (Twilio REST, OpenAI) answered with an error."""


class TwilioServiceError(ServiceError):
    """Twilio's REST API refused a request; ``code`` is Twilio's error code (21211...)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RealtimeServiceError(ServiceError):
    """The OpenAI Realtime service refused or closed the session.

    ``close_code`` and ``close_reason`` are the socket's close as the service sent it,
    when it refused the session after the upgrade (``3000``,
    ``invalid_request_error.invalid_api_key``): the call policy reads from them
    whether trying again can help.
    """

    def __init__(self, message: str, close_code: int | None = None, close_reason: str = "") -> None:
        super().__init__(message)
        self.close_code = close_code
        self.close_reason = close_reason

    def __reduce__(self) -> tuple[object, ...]:  # crosses Ray (pickled) whole
        return (type(self), (str(self), self.close_code, self.close_reason))


class CallCanceled(SwitchboardError):
    """The call was hung up while it was being placed (its actor starting or opening its
    session): it is not dialed, and it ends ``canceled``."""


class SocketClosed(SwitchboardError):
    """A WebSocket closed; shells translate their library's exception into this."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"socket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason
