"""Every setting is documented in .env.example (as ``TRADING_<NAME>``, set or commented out)."""

from __future__ import annotations

import re
from pathlib import Path

from trading_pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_env_example() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*TRADING_([A-Z0-9_]+)=", text, re.M))
    fields = {name.upper() for name in Settings.model_fields}
    assert not fields - listed, f"settings missing from .env.example: {sorted(fields - listed)}"
    assert not listed - fields, f".env.example lists settings that do not exist: {sorted(listed - fields)}"
