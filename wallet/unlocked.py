"""Keys decrypted once and held in memory until locked again.

Every key of a wallet home is sealed with Argon2id (``wallet.keys``), which costs a
noticeable fraction of a second by design. A long-running face (the app, ``tally
sync``) unlocks the keys once with the passphrase and signs with them until the person
locks the wallet or leaves it idle longer than the time they chose; then the keys are
dropped and the next signing asks for the passphrase again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nacl.signing import SigningKey


class UnlockedKeys:
    """Decrypted keys by kind (``device``, ``account``, ``witness``), dropped after
    ``idle_lock_s`` seconds without use (never, when None)."""

    def __init__(self, idle_lock_s: float | None = 300.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if idle_lock_s is not None and idle_lock_s <= 0:
            raise ValueError(f"idle lock time must be positive, not {idle_lock_s}")
        self.idle_lock_s = idle_lock_s
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._used = clock()

    @property
    def locked(self) -> bool:
        """True when no key is held (never unlocked, locked, or idle too long)."""
        self._expire()
        return not self._keys

    def get(self, kind: str) -> SigningKey | None:
        """The key of that kind if it is held; a use that keeps the keys unlocked."""
        self._expire()
        key = self._keys.get(kind)
        if key is not None:
            self._used = self._clock()
        return key

    def put(self, kind: str, key: SigningKey) -> None:
        """Hold a key just decrypted."""
        self._expire()
        self._keys[kind] = key
        self._used = self._clock()

    def lock(self) -> None:
        """Drop every key now."""
        self._keys.clear()

    def idle_s(self) -> float:
        """Seconds since a key was last used or put."""
        return self._clock() - self._used

    def _expire(self) -> None:
        if self._keys and self.idle_lock_s is not None and self.idle_s() > self.idle_lock_s:
            self.lock()
