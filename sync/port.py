"""Ports: the local replica as the sync protocol sees it (``sync.protocol.Port``).

``MemoryPort`` keeps a ledger in memory (tests, simulations); ``WalletPort`` is a
wallet's store, whose row numbers make the resume cursors. A cursor is the store's
16-byte identity followed by a position: a cursor from another store (or from a store
that was wiped and made again) is not ours, and the peer then catches up another way.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator

from wallet.crdt import ITEM_ID_BITS, EntryDigest
from wallet.encoding import Entry, Genesis, Kind, entry_hash
from wallet.ledger import Ledger
from wallet.replica import Replica
from wallet.wallet import Wallet

CHUNK = 5_000


def bucket_sums(ids: Iterable[bytes]) -> list[bytes]:
    """The digests of the 256 buckets of an id set (bucket = an id's first byte)."""
    sums = [EntryDigest() for _ in range(256)]
    for i in ids:
        sums[i[0]].add(i)
    return [d.value for d in sums]


def make_cursor(store_id: bytes, position: int) -> bytes:
    """A cursor: the store's identity and a position in it."""
    return store_id + struct.pack(">Q", position)


def read_cursor(cursor: bytes, store_id: bytes) -> int | None:
    """The position in a cursor of this store, or None when it is someone else's."""
    if len(cursor) != len(store_id) + 8 or not cursor.startswith(store_id):
        return None
    return struct.unpack(">Q", cursor[len(store_id) :])[0]


class ReplicaPort:
    """What both ports share: the replica (Doc, gate, digest) over a ledger."""

    replica: Replica
    genesis: Genesis

    @property
    def item_bits(self) -> int:
        """How many bits of an entry id make its Yjs item's client id."""
        return self.replica.item_bits

    def count(self) -> int:
        """How many entries are held."""
        return len(self.replica.ledger)

    def digest(self) -> bytes:
        """The entry-set digest."""
        return self.replica.digest_value()

    def state_vector(self) -> bytes:
        """The Doc's state vector."""
        return self.replica.state_vector()

    def update_since(self, state_vector: bytes) -> bytes:
        """The Yjs update a peer with this state vector lacks."""
        return self.replica.update_since(state_vector)

    def apply_update(self, update: bytes) -> list[Entry]:
        """Gate, validate and store an update."""
        return self.replica.apply_update(update)

    def add_raw(self, bodies: list[bytes]) -> list[Entry]:
        """Verify, validate and store raw entries (each once, however often sent).

        Bodies already held are dropped by their hash before anything is verified: a
        full catch-up over a store we mostly hold costs hashes, not signatures.
        """
        held = self.replica.ledger.__contains__
        fresh = [b for b in dict.fromkeys(bodies) if not held(entry_hash(b))]
        return self.replica.add_raw(fresh) if fresh else []

    def bucket_sums(self) -> list[bytes]:
        """The 256 bucket digests."""
        return [(v % (1 << 256)).to_bytes(32, "big")
                for v in self.replica.ledger.tables.bucket_sums()]

    def bucket_ids(self, bucket: int) -> list[bytes]:
        """The ids held in one bucket, sorted."""
        return self.replica.ledger.tables.bucket_ids(bucket)

    def bodies(self, ids: Iterable[bytes]) -> list[bytes]:
        """Signed bytes of held entries, dependencies first."""
        return self.replica.bodies(ids)


class MemoryPort(ReplicaPort):
    """A bare ledger as a port (tests, simulations): cursors are its row numbers."""

    def __init__(self, ledger: Ledger, *, item_bits: int = ITEM_ID_BITS) -> None:
        self.genesis = ledger.genesis
        self.store_id = os.urandom(16)
        self.replica = Replica(ledger, item_bits=item_bits)

    def add_local(self, entries: Iterable[Entry]) -> None:
        """Entries made here (signed by a local device or witness)."""
        self.replica.ledger.add(list(entries))

    def cursor(self) -> bytes:
        """Where the ledger stands: its highest row."""
        return make_cursor(self.store_id, self.replica.ledger.tables.high_water())

    def entries_since(self, cursor: bytes) -> Iterator[list[bytes]] | None:
        """Rows after the cursor, in chunks; None for a foreign cursor."""
        tables = self.replica.ledger.tables
        pos = read_cursor(cursor, self.store_id) if cursor else 0
        if pos is None or pos > tables.high_water():
            return None
        return tables.bodies_after(pos, CHUNK)


class WalletPort(ReplicaPort):
    """A wallet's store as a port; cursors are its row numbers."""

    def __init__(self, wallet: Wallet, *, item_bits: int = ITEM_ID_BITS) -> None:
        self.wallet = wallet
        self.genesis = wallet.genesis
        sid = wallet.store.get_meta("store_id")
        if sid is None:
            sid = os.urandom(16)
            wallet.store.set_meta("store_id", sid)
        self.store_id = sid
        self.replica = Replica(lambda: wallet.ledger, commit=wallet.ingest, item_bits=item_bits)

    def add_raw(self, bodies: list[bytes]) -> list[Entry]:
        """Verify raw entries on every core (``Wallet.ingest_bodies``), validate and
        store them; what is held already is dropped by its hash, unverified."""
        return list(self.wallet.ingest_bodies(bodies).entries)

    def cursor(self) -> bytes:
        """Where the store stands: its highest row."""
        return make_cursor(self.store_id, self.wallet.store.high_water())

    def entries_since(self, cursor: bytes) -> Iterator[list[bytes]] | None:
        """Rows after the cursor, in chunks; None for a foreign cursor."""
        pos = read_cursor(cursor, self.store_id) if cursor else 0
        if pos is None or pos > self.wallet.store.high_water():
            return None  # not ours, or past our end (a store copied back from a backup)
        return self.wallet.store.bodies_after(pos, CHUNK)


def is_vote(e: Entry) -> bool:
    """True for a witness vote."""
    return e.kind == Kind.VOTE
