"""Durations as a person types them: ``90s``, ``30m``, ``2h``, ``7d``, or bare seconds."""

from __future__ import annotations

DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
"""Seconds in each unit a duration may carry."""


def parse_duration_s(text: str) -> int | None:
    """The seconds ``text`` names (``90s``, ``30m``, ``2h``, ``7d``; a bare number is
    seconds), or None when it is not a duration at all."""
    t = text.strip().lower()
    unit = t[-1:] if t[-1:] in DURATION_UNITS_S else "s"
    number = t[:-1] if t[-1:] in DURATION_UNITS_S else t
    if not number.isdigit():
        return None
    return int(number) * DURATION_UNITS_S[unit]


def duration_text(seconds: int) -> str:
    """Seconds as the largest whole unit reads them (``5m``, ``90s``, ``1h``)."""
    for unit, size in sorted(DURATION_UNITS_S.items(), key=lambda u: -u[1]):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
