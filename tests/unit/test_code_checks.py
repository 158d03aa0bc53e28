"""The project's own lint and type checks, run by ``make test`` so that CI refuses a
change they refuse (``make lint`` and ``make typecheck`` run the same commands)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("switchboard", "actors", "serve", "agent", "sim", "bench")

CHECKS = {
    "ruff check": ("ruff", "check", "--no-cache", "."),
    "ruff format": ("ruff", "format", "--check", "--no-cache", "."),
    "mypy": ("mypy", *PACKAGES),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_code_passes(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *CHECKS[name]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}{result.stderr}"
