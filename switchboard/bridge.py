"""One call's sans-I/O bridge: both protocol cores and the policy, wired.

The shell (a call actor, a test, the benchmark) owns two sockets and a
clock and does only this::

    bridge = CallBridge(policy_config)
    actions = bridge.open(now)                     # once the Realtime socket is up
    actions = bridge.receive_twilio(text, now)     # every Twilio frame
    actions = bridge.receive_realtime(text, now)   # every Realtime frame
    actions = bridge.handle(ToolFinished(...), now)
    actions = bridge.tick(now)                     # at bridge.next_deadline
    twilio_ws.send(bridge.twilio_data_to_send()); realtime_ws.send(bridge.realtime_data_to_send())

Commands addressed to a core are applied here; what comes back to the shell
are the commands only it can carry out (``RunTool``, ``HangUp``,
``FinishCall``, ``RenewSession``) and the notices for the call record.
``RenewSession`` is also the bridge's: it starts a new Realtime core, and the
shell must then send ``realtime_data_to_send()`` on a new socket.
"""

from __future__ import annotations

from switchboard.call_actions import (
    Action,
    AddUserText,
    CancelResponse,
    ClearPlayback,
    ConfigureSession,
    CreateResponse,
    ForwardCallerAudio,
    PlayAgentAudio,
    RenewSession,
    SeedConversation,
    SendFunctionOutput,
    ShellEvent,
    TruncateItem,
)
from switchboard.call_policy import CallPhase, CallPolicy, PolicyConfig
from switchboard.realtime_session import RealtimeSession
from switchboard.twilio_stream import TwilioStream

__all__ = ["FRAMES_PER_MESSAGE", "CallBridge"]

FRAMES_PER_MESSAGE = 5  # 100 ms of agent audio per media message and mark


class CallBridge:
    def __init__(self, config: PolicyConfig) -> None:
        self.twilio = TwilioStream()
        self.realtime = RealtimeSession()
        self.policy = CallPolicy(config, playback=self.twilio)

    @property
    def phase(self) -> CallPhase:
        return self.policy.phase

    @property
    def next_deadline(self) -> float | None:
        return self.policy.next_deadline

    def open(self, now: float) -> list[Action]:
        return self._apply(self.policy.begin(now), now)

    def receive_twilio(self, text: str | bytes, now: float) -> list[Action]:
        out: list[Action] = []
        for event in self.twilio.receive(text, now):
            out += self._apply(self.policy.handle(event, now), now)
        return out

    def receive_realtime(self, text: str | bytes, now: float) -> list[Action]:
        out: list[Action] = []
        for event in self.realtime.receive(text, now):
            out += self._apply(self.policy.handle(event, now), now)
        return out

    def handle(self, event: ShellEvent, now: float) -> list[Action]:
        return self._apply(self.policy.handle(event, now), now)

    def tick(self, now: float) -> list[Action]:
        return self._apply(self.policy.tick(now), now)

    def twilio_data_to_send(self) -> list[str]:
        return self.twilio.data_to_send()

    def realtime_data_to_send(self) -> list[str]:
        return self.realtime.data_to_send()

    def _apply(self, actions: list[Action], now: float) -> list[Action]:
        """Carry out core commands; return what only the shell can do."""
        rest: list[Action] = []
        for action in actions:
            match action:
                case ForwardCallerAudio(payload):
                    self.realtime.append_audio(payload)
                case PlayAgentAudio(item_id, frames):
                    # Whole frames, up to FRAMES_PER_MESSAGE in one media message and
                    # one mark: a fifth of the messages, and interpolation between
                    # echoes keeps the played offset exact to the byte.
                    for at in range(0, len(frames), FRAMES_PER_MESSAGE):
                        chunk = b"".join(frames[at : at + FRAMES_PER_MESSAGE])
                        self.twilio.send_audio(item_id, chunk, now)
                case ClearPlayback():
                    self.twilio.clear(now)
                case TruncateItem(item_id, audio_end_ms):
                    self.realtime.truncate(item_id, audio_end_ms)
                case CancelResponse():
                    self.realtime.cancel_response()
                case CreateResponse(instructions):
                    self.realtime.create_response(instructions)
                case AddUserText(text):
                    self.realtime.add_user_text(text)
                case SendFunctionOutput(call_id, output):
                    self.realtime.send_function_output(call_id, output)
                case ConfigureSession(config):
                    self.realtime.configure(config)
                case RenewSession():
                    # A fresh core for the fresh socket: what follows goes to the new session.
                    self.realtime = RealtimeSession()
                    rest.append(action)
                case SeedConversation(note, turns):
                    self.realtime.add_system_text(note)
                    for role, text in turns:
                        self.realtime.add_history(role, text)
                case _:
                    rest.append(action)
        return rest
