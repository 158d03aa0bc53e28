"""When a call's audio levels are worth telling its viewers.

The console's board shows who is speaking on each live call's card as two
level meters (the call view has none; a web call's bar measures its own audio
in the browser).
``CallLevels`` turns the call's two ``LevelMeter`` readings into
``LevelsMeasured`` notices, sparingly: at most one per ``interval_s``, and
only when a level moved by ``step_db`` or more since the last one, with
everything below ``floor_dbfs`` (line noise, the meters' -96 dBFS silence)
read as the floor. A quiet call sends nothing; a conversation sends about
four a second. Time is passed in.
"""

from __future__ import annotations

from switchboard.call_actions import LevelsMeasured

__all__ = ["CallLevels"]


class CallLevels:
    def __init__(
        self, *, interval_s: float = 0.25, step_db: float = 3.0, floor_dbfs: float = -60.0
    ) -> None:
        self.interval_s = interval_s
        self.step_db = step_db
        self.floor_dbfs = floor_dbfs
        self._sent = (floor_dbfs, floor_dbfs)
        self._due = 0.0

    def measure(self, caller_dbfs: float, agent_dbfs: float, now: float) -> LevelsMeasured | None:
        """The notice to send now, if any, for the meters' current readings."""
        if now < self._due:
            return None
        levels = (self._clamp(caller_dbfs), self._clamp(agent_dbfs))
        if all(abs(new - old) < self.step_db for new, old in zip(levels, self._sent, strict=True)):
            return None
        self._sent, self._due = levels, now + self.interval_s
        return LevelsMeasured(*levels)

    def _clamp(self, dbfs: float) -> float:
        return round(max(dbfs, self.floor_dbfs), 1)
