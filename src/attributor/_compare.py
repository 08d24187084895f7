"""Describe how two nested settings dicts differ, for refusal messages."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["differences"]


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``[(dotted_key, "stored X, asked Y"), ...]`` for every leaf that differs, sorted by key."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append((f"{prefix}{key}", f"stored {_short(a)}, asked {_short(b)}"))
    return found


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
