"""``LOG_LEVEL`` for Switchboard's own loggers, in whichever process they run.

Every process calls ``configure_logging`` once at start: the CLI's (``switchboard
run``, ``edge``), and each Ray actor's (a call actor, the recorder, the pool, the
ingress), since Ray starts workers with its own logging set up. Only our loggers
take the level: Ray's, uvicorn's and the SDKs' keep theirs.
"""

from __future__ import annotations

import logging

__all__ = ["OUR_LOGGERS", "configure_logging"]

OUR_LOGGERS = ("switchboard", "actors", "serve", "sim", "agent")  # our packages' names
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Set ``level`` (a validated ``LOG_LEVEL``) on our loggers. A process with no
    logging set up (the CLI's) also gets one handler to stderr; a Ray worker keeps
    Ray's, which write its log files."""
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not logging.getLogger().handlers:
        logging.basicConfig(format=FORMAT)  # the root stays at WARNING: others stay quiet
