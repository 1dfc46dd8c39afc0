"""What the wire says: the entries each relay acknowledged, read off the messages as
they land, whatever the implementation under test believes.

A relay acknowledges a client's entry messages (``Entries``, ``SyncStep2``, ``Update``)
with ``Ack(count)``: the first ``count`` it received in that conversation are durable.
``WireWatch`` keeps, per connection, the entry ids of each entry message the server end
received, in the order it received them, and on each ``Ack`` the server end sends, notes
those ids as acknowledged by that relay. After the relay crashes and restarts, every one
of them must be in its store.

A witness claims each slot a vote covers durably before the vote leaves it. So every
vote by a relay's witness key that leaves the relay is noted too: after a restart, the
relay's claim table must still hold each of those slots; and an honest witness never
sends votes for two blocks at one slot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from sync.errors import CloseCode, ProtocolViolation
from sync.messages import (
    Ack,
    Buckets,
    Close,
    Entries,
    Message,
    SyncStep2,
    Update,
    Want,
    decode,
    encode,
)
from sync.protocol import MAX_ENTRIES_PER_MESSAGE, MAX_MESSAGE_BYTES
from wallet.crdt import DecodedItem, decode_update
from wallet.encoding import Vote, entry_hash, parse_entry
from wallet.errors import GateRefused

CLOSE_TYPE = encode(Close(0, ""))[:1]
"""The first byte of a ``Close`` message."""


def decoded(message: bytes) -> Message | None:
    """A message as any peer decodes it (None: not one)."""
    try:
        return decode(message, max_bytes=MAX_MESSAGE_BYTES, max_entries=MAX_ENTRIES_PER_MESSAGE)
    except ProtocolViolation:
        return None


def update_items(update: bytes) -> list[DecodedItem] | None:
    """The items of a Yjs update, as the gate reads them (None: the gate refuses it)."""
    try:
        return decode_update(update, max_bytes=MAX_MESSAGE_BYTES,
                             max_items=MAX_ENTRIES_PER_MESSAGE)
    except GateRefused:
        return None


def message_bodies(message: bytes) -> list[bytes] | None:
    """The signed entries an entry message carries (None: not an entry message, or one
    its receiver refuses whole)."""
    m = decoded(message)
    if isinstance(m, Entries):
        return list(m.bodies)
    if isinstance(m, SyncStep2 | Update):
        items = update_items(m.update)
        return None if items is None else [i.value for i in items]
    return None


def entry_ids(message: bytes) -> list[bytes] | None:
    """The ids of the entries an entry message carries (None: it counts for nothing)."""
    found = message_bodies(message)
    return None if found is None else [entry_hash(b) for b in found]


def path_of(message: bytes) -> str | None:
    """The protocol path a message shows: how a catch-up starts (a cursor, or a state
    vector), a bulk catch-up, a reconciliation of digests, or a close and its code."""
    m = decoded(message)
    if m is None:
        return "undecodable"
    if isinstance(m, Want):
        return "want:cursor" if m.cursor else "want:state_vector"
    if isinstance(m, Entries):
        return "entries:bulk" if m.last else "entries:reconcile"
    if isinstance(m, Buckets):
        return "reconcile:buckets"
    if isinstance(m, Close):
        try:
            return f"close:{CloseCode(m.code).name.lower()}"
        except ValueError:
            return f"close:{m.code}"
    return None


def ack_count(message: bytes) -> int | None:
    """The count of an ``Ack`` (None for any other message)."""
    m = decoded(message)
    return m.count if isinstance(m, Ack) else None


class WireWatch:
    """Entries acknowledged, per relay node (see the module docstring)."""

    def __init__(self, witnesses: dict[str, bytes],
                 reached: Callable[[str], None] = lambda path: None) -> None:
        self.witnesses = witnesses  # relay node → its witness key
        self.reached = reached  # notes a protocol path the wire shows
        self.received: dict[int, list[list[bytes]]] = defaultdict(list)  # link → messages
        self.acked: dict[str, set[bytes]] = defaultdict(set)  # relay node → entry ids
        self.voted: dict[str, dict[bytes, int]] = defaultdict(dict)  # relay → device → slot
        self.slots: dict[str, dict[tuple[bytes, int], bytes]] = defaultdict(dict)
        """Each vote a relay's witness sent: (device, seq) → block."""
        self.dishonest: set[str] = set()  # relays whose witness may vote twice
        self.owed: dict[int, int] = {}  # link → entry messages before the one to refuse
        self.broken: list[str] = []  # promises the wire shows broken

    def landed(self, link_id: int, server: str, to_server: bool, message: bytes, *,
               refusal_owed: bool = False) -> None:
        """A message reached one end of connection ``link_id`` (whose server is
        ``server``); ``refusal_owed``: a tampered one the server must refuse."""
        if refusal_owed and to_server:
            self.owed.setdefault(link_id, len(self.received[link_id]))
            return
        self._paths(message)
        if to_server:
            ids = entry_ids(message)
            if ids is not None:
                self.received[link_id].append(ids)
            return

    def _paths(self, message: bytes) -> None:
        path = path_of(message)
        if path is not None:
            self.reached(path)

    def sent(self, link_id: int, server: str, from_server: bool, message: bytes) -> None:
        """A message left one end: an ``Ack`` from the server acknowledges."""
        if not from_server:
            return
        if message[:1] == CLOSE_TYPE:
            self.owed.pop(link_id, None)  # refused (or ended): what was owed is paid
            return
        count = ack_count(message)
        if count is not None and count > self.owed.get(link_id, count):
            self.broken.append(f"{server} acknowledged a tampered message it had to refuse "
                               f"(Ack {count}, {self.owed[link_id]} good ones before it)")
        if count is not None:
            for ids in self.received[link_id][:count]:
                self.acked[server].update(ids)
            return
        mine = self.witnesses.get(server)
        if mine is None:
            return
        for body in message_bodies(message) or []:
            e = parse_entry(body, verify=False)
            if isinstance(e, Vote) and e.witness == mine:
                voted = self.voted[server]
                voted[e.device] = max(voted.get(e.device, -1), e.seq)
                slot = (e.device, e.seq)
                before = self.slots[server].setdefault(slot, e.block_id)
                if before != e.block_id and server not in self.dishonest:
                    self.broken.append(f"{server}'s witness voted two blocks at one slot "
                                       f"(seq {e.seq})")
