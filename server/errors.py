"""The relay's errors; every message says what was wrong and, where it can, what to do."""

from __future__ import annotations

from sync.errors import CloseCode
from wallet.encoding import short
from wallet.errors import TallyError


class RelayError(TallyError):
    """Base of the relay's errors: a configuration or start-up problem a person can fix."""


class StoreError(RelayError):
    """The relay database cannot be opened, created or migrated."""


class LimitExceeded(TallyError):
    """A peer went over one of the relay's limits; ``code`` is the close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class QuotaExceeded(LimitExceeded):
    """A device would store more entries today than the relay's daily quota allows."""

    def __init__(self, device: bytes, used: int, adding: int, quota: int) -> None:
        super().__init__(
            CloseCode.QUOTA,
            f"device {short(device)}… is over its quota of {quota} entries a day "
            f"({used} stored today, {adding} more offered); try again tomorrow",
        )
        self.device = device
