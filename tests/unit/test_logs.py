"""LOG_LEVEL reaches Switchboard's own loggers, and only those."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from switchboard.logs import OUR_LOGGERS, configure_logging


@pytest.fixture(autouse=True)
def restore_levels() -> Iterator[None]:
    names = [*OUR_LOGGERS, "ray", "uvicorn"]
    before = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def test_our_loggers_take_the_level_and_others_keep_theirs() -> None:
    theirs = {name: logging.getLogger(name).level for name in ("ray", "uvicorn")}
    configure_logging("DEBUG")
    assert all(logging.getLogger(name).level == logging.DEBUG for name in OUR_LOGGERS)
    assert logging.getLogger("actors.call_actor").isEnabledFor(logging.DEBUG)
    assert {name: logging.getLogger(name).level for name in theirs} == theirs  # untouched
    configure_logging("WARNING")
    assert not logging.getLogger("serve.media_edge").isEnabledFor(logging.INFO)


def test_a_process_without_logging_gets_our_lines_on_stderr_and_no_one_elses() -> None:
    script = (
        "import logging\n"
        "from switchboard.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "logging.getLogger('serve.local').info('ours at info')\n"
        "logging.getLogger('somelib').info('theirs at info')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "INFO serve.local: ours at info" in done.stderr
    assert "theirs" not in done.stderr
