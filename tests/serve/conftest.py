"""Fixtures shared by the ingress tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from switchboard.store import CallStore


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    """A SQLite store in the test's own directory (a module may override it)."""
    opened = await CallStore.open(f"sqlite:///{tmp_path}/calls.db")
    try:
        yield opened
    finally:
        await opened.close()
