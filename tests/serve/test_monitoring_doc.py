"""monitoring/README.md names the end reasons the code gives, as the code spells them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_end_reasons_listed_are_the_ones_the_code_gives() -> None:
    readme = (ROOT / "monitoring" / "README.md").read_text(encoding="utf-8")
    [row] = [line for line in readme.splitlines() if "`switchboard_calls_ended_total`" in line]
    meaning = row.split("|")[4]
    # The named ones; `realtime_*` stands for a family.
    reasons = re.findall(r"`([a-z_-]+)`", meaning)
    assert "max_duration" in reasons  # the row is read as meant
    code = "".join(
        path.read_text(encoding="utf-8")
        for folder in ("switchboard", "actors")
        for path in sorted((ROOT / folder).rglob("*.py"))
    )
    assert [r for r in reasons if f'"{r}"' not in code] == []
