"""A hostile peer: what it does to the messages it sends, and what the relay must do.

The hostile node is an ordinary wallet whose outgoing messages the network tampers
with, sometimes. Some tampering has a known answer: an update carrying a delete set, an
entry whose signature no longer verifies, a message over the relay's size limit must
each be refused whole, the conversation closed with the reason, nothing of it stored or
acknowledged. Others (a byte flipped anywhere, a message replayed from an earlier
conversation) may or may not be refused, but must never crash the relay or break a
promise. ``tamper`` returns the message to send and whether a refusal is owed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sim.wire import decoded, update_items
from sync.messages import Entries, SyncStep2, Update, encode

TAMPERINGS = ("delete_set", "bad_signature", "oversized", "flip", "replay")
"""What a hostile peer does to a message (the first three owe a refusal)."""
REFUSAL_OWED = frozenset({"delete_set", "bad_signature", "oversized"})
ENTRY_MESSAGE_TYPES = frozenset(encode(m)[:1] for m in (
    Entries(()), SyncStep2(b""), Update(b"")))
"""The first bytes of the messages that carry entries."""
ENTRY_MESSAGE_BIAS = 4
"""How much likelier a message carrying entries is tampered with than another."""
SIM_MESSAGE_BYTES_MAX = 256 << 10
"""The relays' message size limit in a simulation (an oversized message is built
past it: small enough to build often)."""


def _varuint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@dataclass
class Hostile:
    """One hostile node's tampering: how often, and what it sent before (to replay)."""

    rate: float
    sent: list[bytes] = field(default_factory=list)

    def tamper(self, message: bytes, rng: random.Random) -> tuple[bytes, str | None]:
        """The message to send instead, and which tampering (None: sent as it was)."""
        self.sent.append(message)
        if len(self.sent) > 200:
            del self.sent[:100]
        carries_entries = message[:1] in ENTRY_MESSAGE_TYPES  # what a hostile peer aims at
        if rng.random() >= self.rate * (ENTRY_MESSAGE_BIAS if carries_entries else 1):
            return message, None
        for how in rng.sample(TAMPERINGS, len(TAMPERINGS)):  # the first that applies
            out = _tampered(how, message, rng, self.sent)
            if out is not None:
                return out, how
        return message, None


def _tampered(how: str, message: bytes, rng: random.Random, sent: list[bytes]) -> bytes | None:
    """``message`` tampered with ``how``; None when that does not apply to it."""
    if how == "flip":
        b = bytearray(message)
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if how == "replay":
        return rng.choice(sent)
    if how == "oversized":
        return message + bytes(SIM_MESSAGE_BYTES_MAX + 1 - len(message) + 1)
    m = decoded(message)
    if (how == "delete_set" and isinstance(m, Update | SyncStep2)
            and m.update.endswith(b"\x00")):
        items = update_items(m.update)
        if not items:
            return None
        # delete the first item it carries: one client, one range, clock 0, length 1
        deletes = _varuint(1) + _varuint(items[0].client) + _varuint(1) + _varuint(0) + \
            _varuint(1)
        update = m.update[:-1] + deletes
        return encode(Update(update) if isinstance(m, Update) else SyncStep2(update, m.cursor))
    if how == "bad_signature":
        if isinstance(m, Entries) and m.bodies:
            bodies = list(m.bodies)
            k = rng.randrange(len(bodies))
            bodies[k] = bodies[k][:-1] + bytes([bodies[k][-1] ^ 1])
            return encode(Entries(tuple(bodies), m.last, m.cursor))
        if isinstance(m, Update):
            items = update_items(m.update)
            if not items:
                return None
            value = items[0].value
            at = m.update.find(value) + len(value) - 1
            u = bytearray(m.update)
            u[at] ^= 1
            return encode(Update(bytes(u)))
    return None
