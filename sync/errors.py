"""The sync package's errors and close codes; every message says what was wrong."""

from __future__ import annotations

from enum import IntEnum

from wallet.errors import TallyError


class CloseCode(IntEnum):
    """Why a conversation ended; sent in ``Close`` and shown to people with its reason."""

    DONE = 0  # a normal end
    PROTOCOL = 1  # a malformed or unexpected message
    VERSION = 2  # a protocol version this side does not speak
    WRONG_NETWORK = 3  # the other side is on another network
    UNKNOWN_NETWORK = 4  # a relay that does not serve this network
    BAD_PROOF = 5  # a key proof that does not verify
    REFUSED = 6  # an entry or update refused by the gate (reason names it)
    TOO_BIG = 7  # a message over the size limit
    RATE_LIMITED = 8  # too many messages or entries too fast
    QUOTA = 9  # a device over its entries-per-day quota
    SHUTDOWN = 10  # the relay is stopping
    BAD_OPEN = 11  # a device's open that does not verify or does not match its key
    OVERLOADED = 12  # too much work queued for this peer, or too many connections
    INTERNAL = 13  # a bug on this side; the other side did nothing wrong


class SyncError(TallyError):
    """Base of the sync package's errors."""


class ProtocolViolation(SyncError):
    """A message that does not parse, or comes when it must not."""


class ConnectionClosed(SyncError):
    """The conversation ended; ``code`` and ``reason`` say why."""

    def __init__(self, code: int, reason: str, *, by_peer: bool) -> None:
        who = "peer" if by_peer else "we"
        try:
            name = CloseCode(code).name.lower()
        except ValueError:
            name = f"code {code}"
        super().__init__(f"{who} closed: {name}: {reason}")
        self.code = code
        self.reason = reason
        self.by_peer = by_peer
