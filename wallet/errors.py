"""One exception hierarchy for the ledger core; every message says what was wrong."""

from __future__ import annotations


class TallyError(Exception):
    """Base of every error the wallet raises on purpose; its message is for a person."""


class EncodingError(TallyError):
    """Bytes that are not a well-formed entry, genesis, request or key file."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


class BadEntry(TallyError):
    """An entry refused before storage, with a reason code and the entry id when known."""

    def __init__(self, reason: str, detail: str, entry_id: str | None = None) -> None:
        where = f"entry {entry_id}: " if entry_id else ""
        super().__init__(f"{where}{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.entry_id = entry_id


class GateRefused(TallyError):
    """A CRDT update refused whole by the gate; nothing of it was applied or stored."""

    def __init__(self, reason: str, detail: str, entry_id: str | None = None) -> None:
        where = f" (entry {entry_id})" if entry_id else ""
        super().__init__(f"update refused{where}: {reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.entry_id = entry_id


class KeyFileError(TallyError):
    """A key file that is missing, malformed, or that the passphrase does not open."""


class BadPhrase(TallyError):
    """A recovery phrase with an unknown word, a wrong length or a failed checksum."""


class BundleError(TallyError):
    """A payment bundle that is truncated, corrupt, oversized, or of another network."""


class WalletError(TallyError):
    """A wallet command that cannot be carried out as asked (no funds, no key, ...)."""
