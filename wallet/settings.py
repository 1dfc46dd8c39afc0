"""A person's settings of a wallet home: how long unlocked keys stay held, the theme.

Kept as one JSON meta record in the wallet's store (the relays and peers are their own
record, ``Wallet.links``), read whole and written whole; a record that does not parse
or holds values out of bounds is refused with what is wrong, never half-applied.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from wallet.durations import parse_duration_s
from wallet.errors import WalletError

SETTINGS_META = "settings"
"""The meta record holding the settings (JSON)."""

IDLE_LOCK_S_DEFAULT = 300
"""How long unlocked keys stay held without use, unless the person chose (seconds)."""
IDLE_LOCK_S_MIN = 10
"""The shortest idle lock time a person may set (seconds)."""
IDLE_LOCK_S_MAX = 24 * 3600
"""The longest idle lock time a person may set (seconds): keys are never held forever."""

THEMES = ("textual-dark", "textual-light")
"""The app's themes a person chooses between (Textual's names)."""


@dataclass(frozen=True)
class Settings:
    """What a person set for this wallet home."""

    idle_lock_s: int = IDLE_LOCK_S_DEFAULT
    theme: str = THEMES[0]

    def __post_init__(self) -> None:
        if (not isinstance(self.idle_lock_s, int) or isinstance(self.idle_lock_s, bool)
                or not IDLE_LOCK_S_MIN <= self.idle_lock_s <= IDLE_LOCK_S_MAX):
            raise WalletError(f"idle lock time must be whole seconds from {IDLE_LOCK_S_MIN} "
                              f"to {IDLE_LOCK_S_MAX}, not {self.idle_lock_s!r}")
        if self.theme not in THEMES:
            raise WalletError(f"theme must be one of {', '.join(THEMES)}, not {self.theme!r}")

    def to_json(self) -> str:
        """The record as stored."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> Settings:
        """The settings a stored record holds (the defaults when there is none)."""
        if raw is None:
            return cls()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise WalletError(f"the stored settings are not JSON ({exc}); save them "
                              "again in Settings") from exc
        if not isinstance(doc, dict):
            raise WalletError("the stored settings are not a JSON object; save them again")
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def parse_idle_lock(text: str) -> int:
    """An idle lock time as a person types it: seconds, or a duration (``90s``, ``5m``,
    ``1h``)."""
    seconds = parse_duration_s(text)
    if seconds is None:
        raise WalletError(f"idle lock time {text!r}: give seconds or a duration like 90s, "
                          "5m or 1h")
    Settings(idle_lock_s=seconds)  # checks the bounds, with the message
    return seconds
