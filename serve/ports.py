"""The ports the ingress application talks through, and what ``build_app`` needs.

The ingress (``serve.api``) never touches Ray: everything live about a call
goes through :class:`CallControl` (``serve.control.RayCallControl`` implements
it with Ray call actors) and every live event through :class:`EventFeed` (in one process,
``serve.events.EventHub``). Tests pass fakes of both.

Event messages are plain JSON objects ``{"call_id", "type", "at", ...}``. A
feed ends a subscription it had to give up on (a subscriber too slow to keep
up) by yielding one last message of type :data:`SUBSCRIPTION_DROPPED` with a
``reason``; the WebSocket handler turns it into a close frame.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from switchboard.settings import Settings
from switchboard.store import CallRecord, CallStore

__all__ = [
    "SUBSCRIPTION_DROPPED",
    "AppDeps",
    "CallControl",
    "EventFeed",
    "WebCallTicket",
]

SUBSCRIPTION_DROPPED = "subscription.dropped"


@dataclass(frozen=True, slots=True)
class WebCallTicket:
    """What a browser needs to be a web call's phone (see ``CallControl.start_web``)."""

    media_url: str
    call_sid: str
    stream_token: str


class CallControl(Protocol):
    """What the ingress asks of the live call machinery."""

    async def place(self, call: CallRecord) -> None:
        """Reserve a call actor, open the model session and dial through Twilio.

        ``call`` is already in the store (status ``queued``). Raises a
        :class:`~switchboard.errors.ServiceError` subclass when the call cannot
        be placed (``TwilioServiceError`` carrying Twilio's ``code`` when Twilio
        refused); the ingress then records the call as failed.
        """
        ...

    async def hang_up(self, call_id: str, placing: bool = False) -> bool:
        """End a live call; ``False`` when the call is not live (nothing to end).
        ``placing``: the call's record says it is being placed (``queued``): it may
        have no actor yet, and is then refused one."""
        ...

    async def on_twilio_status(self, call_id: str, status: str, params: Mapping[str, str]) -> None:
        """A signed status callback arrived and was recorded in the store."""
        ...

    async def on_amd_result(
        self, call_id: str, answered_by: str, params: Mapping[str, str]
    ) -> None:
        """A signed asynchronous AMD callback arrived and was recorded."""
        ...

    async def answer_inbound(self, call: CallRecord, call_sid: str) -> str:
        """TwiML for an inbound call: ``<Connect><Stream>`` to the media URL."""
        ...

    async def start_web(self, call: CallRecord) -> WebCallTicket:
        """Reserve a call actor for a call whose phone is a browser: no Twilio dial.

        The browser opens ``media_url`` and speaks Media Streams with the
        ticket's CallSid and one-time token (the token is its credential: no
        Twilio signature). Raises a ``ServiceError`` when no actor can take it.
        """
        ...

    async def ready(self) -> bool:
        """Whether new calls can be placed now (actors, sessions); for ``/readyz``."""
        ...

    def noted(self, source: str, reason: str, fatal: bool) -> None:
        """Count a problem the ingress recorded itself, with no call actor to report it
        (an orphaned or abandoned call), with those the calls report: the problems
        metric, and the alert on fatal ones."""
        ...

    async def is_live(self, call_id: str) -> bool | None:
        """Whether a call actor serves the call now (to its end, wrap-up included) or is
        being found for it; None when that cannot be told now (running actors not all
        known yet, after a restart of what keeps them)."""
        ...

    async def carrier_status(self, call: CallRecord) -> str | None:
        """The call's status at Twilio now; None when Twilio has no such call (a web
        call, one never dialed). Raises a ``ServiceError`` when Twilio cannot say."""
        ...

    async def end_at_carrier(self, call: CallRecord) -> None:
        """Hang the call up at Twilio (no actor of ours is on it any more)."""
        ...


class EventFeed(Protocol):
    """Fan-out of live call events."""

    def subscribe(self, call_id: str | None) -> AsyncIterator[dict[str, object]]:
        """Events of one call (recent ones replayed first), or of every call for ``None``.

        Registration happens at the call, not at the first ``__anext__``, so
        nothing published after ``subscribe`` returns is missed. The iterator
        should have an ``aclose()``; the ingress calls it when the client goes.
        """
        ...

    def publish(self, call_id: str, event: dict[str, object]) -> None:
        """Deliver ``event`` (it must carry ``type``); never blocks, never awaits."""
        ...


@dataclass(frozen=True)
class AppDeps:
    settings: Settings
    store: CallStore
    control: CallControl
    events: EventFeed
    # Bearer tokens accepted by the call API and the event streams; at least one.
    api_tokens: tuple[str, ...]
