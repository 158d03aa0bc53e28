"""The I/O shell around one call's ``CallBridge``: read, feed, flush, dispatch.

The shell owns two text sockets (Twilio's media stream and the Realtime
session) and the clock. Each socket has one reader task, which feeds the
bridge, and one writer task, which drains a queue, so a slow peer never
blocks the other side. A timer task sleeps until the bridge's next deadline.
The shell has no protocol logic: everything it does is in answer to an action
from the bridge. What only the application can do (run a tool, hang up
through the REST API, store and publish notices) goes through ``CallHooks``.

Lifecycle: ``start_realtime`` as soon as the model socket is open (while the
phone still rings), ``attach_twilio`` when the media stream connects; the
call is over when ``finished`` is set (the stream stopped, or the policy
ended the call), after which ``close`` releases everything. On
``RenewSession`` the shell drops the Realtime socket for a new one from
``CallHooks.open_realtime`` (the old one closes meanwhile, not first); what the
bridge sends meanwhile waits in the new socket's queue (at most the connect
timeout's worth of caller audio). One that fails to open is reported to the
bridge as ``RealtimeClosed``: the policy says when to try again (a
``RenewSession`` at its deadline) or ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Protocol

from switchboard.bridge import CallBridge
from switchboard.call_actions import (
    Action,
    FinishCall,
    HangUp,
    ProblemNoted,
    RealtimeClosed,
    RenewSession,
    RunTool,
    ShellEvent,
    ToolFinished,
    TwilioClosed,
)
from switchboard.errors import RealtimeServiceError, SocketClosed

__all__ = ["CallHooks", "CallShell", "TextSocket"]

log = logging.getLogger(__name__)
TOOL_TIMEOUT_S = 30.0
# A renewed Realtime session that has not connected by then (or by the end of the policy's
# reconnect budget, if sooner) failed to open: the policy tries again or hangs up.
REOPEN_TIMEOUT_S = 10.0
# Messages waiting for a peer that does not read (connected, its window shut): about 30 s
# of audio either way. Past it the peer counts as gone, so no queue grows without end.
MAX_UNSENT = 1500


class TextSocket(Protocol):
    """A WebSocket carrying text frames; ``recv`` raises ``SocketClosed`` at the end."""

    async def send(self, text: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    def try_send(self, text: str) -> bool:
        """Send now if that cannot block (the socket is open and keeping up); else False."""
        ...


class CallHooks(Protocol):
    """What the application does for the shell."""

    async def run_tool(self, name: str, arguments: str) -> str: ...

    async def end_call(self, reason: str) -> None: ...

    async def open_realtime(self) -> TextSocket:
        """A new, open Realtime socket (for a renewed session)."""
        ...

    def record(self, action: Action, now: float) -> None:
        """Store and publish an action (notices, tool runs, hang-ups); must not block."""


class CallShell:
    def __init__(
        self,
        bridge: CallBridge,
        hooks: CallHooks,
        *,
        call_id: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bridge = bridge
        self.hooks = hooks
        self.clock = clock
        self.log = logging.LoggerAdapter(log, {"call_id": call_id})
        self.finished = asyncio.Event()
        self.finish_reason: str | None = None
        self.finish_code = 1000
        self._to_twilio: asyncio.Queue[str] = asyncio.Queue()
        self._to_realtime: asyncio.Queue[str] = asyncio.Queue()
        self._unsent = {id(self._to_twilio): 0, id(self._to_realtime): 0}
        self._wake = asyncio.Event()
        self._armed: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._realtime: TextSocket | None = None
        self._realtime_tasks: list[asyncio.Task[None]] = []
        self._twilio: TextSocket | None = None

    # -- lifecycle -------------------------------------------------------

    def start_realtime(self, socket: TextSocket) -> None:
        """Configure the session now, so the greeting is ready when the phone answers."""
        self._use_realtime(socket)
        self._spawn(self._timer())
        self._dispatch(self.bridge.open(self.clock()))

    def _use_realtime(self, socket: TextSocket) -> None:
        self._realtime = socket
        self._realtime_tasks = [
            self._spawn(self._read(socket, self.bridge.receive_realtime, RealtimeClosed)),
            self._spawn(self._write(socket, self._to_realtime)),
        ]

    def attach_twilio(self, socket: TextSocket) -> None:
        self._twilio = socket
        self._spawn(self._read(socket, self.bridge.receive_twilio, TwilioClosed))
        self._spawn(self._write(socket, self._to_twilio))

    def feed(self, event: ShellEvent) -> None:
        """Hand the bridge an application event (a hang-up asked through the API...)."""
        self._dispatch(self.bridge.handle(event, self.clock()))

    async def close(self) -> None:
        """Flush what is queued, close both sockets and stop every task."""
        for queue in (self._to_realtime, self._to_twilio):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.join(), timeout=1.0)
        reason = self.finish_reason or "call ended"
        for socket, code in ((self._realtime, 1000), (self._twilio, self.finish_code)):
            if socket is not None:
                with contextlib.suppress(SocketClosed, OSError):
                    await socket.close(code, reason)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- tasks -----------------------------------------------------------

    async def _read(
        self,
        socket: TextSocket,
        receive: Callable[[str | bytes, float], list[Action]],
        closed: type[RealtimeClosed] | type[TwilioClosed],
    ) -> None:
        try:
            while True:
                text = await socket.recv()
                self._dispatch(receive(text, self.clock()))
        except SocketClosed as exc:
            self._dispatch(self.bridge.handle(closed(exc.code, exc.reason), self.clock()))

    async def _write(self, socket: TextSocket, queue: asyncio.Queue[str]) -> None:
        while True:
            text = await queue.get()
            try:
                await socket.send(text)
            except SocketClosed:
                pass  # the reader sees the close and tells the bridge
            finally:
                self._unsent[id(queue)] -= 1
                queue.task_done()

    async def _timer(self) -> None:
        while not self.finished.is_set():
            deadline = self._armed = self.bridge.next_deadline
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                self._dispatch(self.bridge.tick(self.clock()))

    def _renew_realtime(self, open_within_s: float | None) -> None:
        """Retire the Realtime socket; queue for a new one, opened in the background
        within ``open_within_s`` (and ``REOPEN_TIMEOUT_S``)."""
        old, tasks = self._realtime, self._realtime_tasks
        self._realtime, self._realtime_tasks = None, []
        for task in tasks:
            task.cancel()  # the old session's reader must not report its close
        # The old queue's count stays: its writer, cancelled mid-send, still settles it.
        self._to_realtime = asyncio.Queue()
        self._unsent[id(self._to_realtime)] = 0
        timeout = (
            REOPEN_TIMEOUT_S if open_within_s is None else min(REOPEN_TIMEOUT_S, open_within_s)
        )
        if old is not None:
            # Closed beside the new session's open, not before it: a session renewed
            # because it was lost or stuck may never answer its close, and the caller
            # would hear that wait as silence; a planned renewal gains nothing by it
            # either. A task of the shell's: its close cancels it, which drops the socket.
            self._spawn(self._retire_realtime(old))
        self._spawn(self._reopen_realtime(self._to_realtime, max(timeout, 0.0)))

    async def _retire_realtime(self, old: TextSocket) -> None:
        with contextlib.suppress(SocketClosed, OSError):
            await old.close(1000, "session renewed")

    async def _reopen_realtime(self, queue: asyncio.Queue[str], timeout: float) -> None:
        try:
            socket = await asyncio.wait_for(self.hooks.open_realtime(), timeout)
        except Exception as exc:  # the policy tries again after a back-off, or gives up
            if self.finished.is_set() or queue is not self._to_realtime:
                return  # the call ended, or a later renewal replaced this one
            self.log.warning("renewed Realtime session failed to open: %s", type(exc).__name__)
            if isinstance(exc, RealtimeServiceError) and exc.close_code is not None:
                # Its close as the service sent it: the policy reads whether it refused
                # the session for good (a bad key) or trying again may help.
                closed = RealtimeClosed(exc.close_code, exc.close_reason)
            else:
                reason = f"could not open a renewed session: {type(exc).__name__}: {exc}"
                closed = RealtimeClosed(None, reason)
            self._dispatch(self.bridge.handle(closed, self.clock()))
            return
        if self.finished.is_set() or queue is not self._to_realtime:
            with contextlib.suppress(SocketClosed, OSError):
                await socket.close(1000, "call ended")
            return
        self._use_realtime(socket)

    async def _run_tool(self, action: RunTool) -> None:
        try:
            output = await asyncio.wait_for(
                self.hooks.run_tool(action.name, action.arguments), TOOL_TIMEOUT_S
            )
        except Exception as exc:  # a tool's failure is the model's to hear, not a crash
            self.log.warning("tool %s failed: %s", action.name, type(exc).__name__)
            output = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        self.feed(ToolFinished(action.call_id, output))

    # -- dispatch --------------------------------------------------------

    def _dispatch(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is RenewSession:  # before the flush: it is the new session's data
                self._renew_realtime(action.open_within_s)
        for text in self.bridge.realtime_data_to_send():
            self._send(self._realtime, self._to_realtime, text)
        for text in self.bridge.twilio_data_to_send():
            self._send(self._twilio, self._to_twilio, text)
        now = self.clock()
        for action in actions:
            self.hooks.record(action, now)
            match action:
                case RunTool():
                    self._spawn(self._run_tool(action))
                case HangUp(reason):
                    self._spawn(self.hooks.end_call(reason))
                case FinishCall(reason, close_code) if not self.finished.is_set():
                    self.finish_reason, self.finish_code = reason, close_code
                    self.finished.set()
                case _:
                    pass
        if self.bridge.next_deadline != self._armed:
            self._wake.set()

    def _send(self, socket: TextSocket | None, queue: asyncio.Queue[str], text: str) -> None:
        # Straight out when nothing is queued before it and the socket keeps up (no task
        # switch: most messages); else in order through the writer task.
        unsent = self._unsent[id(queue)]
        if unsent == 0 and socket is not None and socket.try_send(text):
            return
        if unsent >= MAX_UNSENT:
            if unsent == MAX_UNSENT:  # once: the bridge hears of it a single time
                self._unsent[id(queue)] += 1
                self._peer_stuck(queue)
            return  # dropped: the peer is treated as gone
        self._unsent[id(queue)] += 1
        queue.put_nowait(text)

    def _peer_stuck(self, queue: asyncio.Queue[str]) -> None:
        reason = f"the peer read nothing while {MAX_UNSENT} messages waited for it"
        realtime = queue is self._to_realtime
        self.log.warning("%s socket not reading: %s", "Realtime" if realtime else "Twilio", reason)
        event = RealtimeClosed(None, reason) if realtime else TwilioClosed(None, reason)
        source = "realtime" if realtime else "twilio"
        self.hooks.record(ProblemNoted(source, "not_reading", reason), self.clock())
        # Soon, not now: this runs inside a dispatch, whose own actions come first.
        asyncio.get_running_loop().call_soon(self.feed, event)

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("call task failed", exc_info=task.exception())
