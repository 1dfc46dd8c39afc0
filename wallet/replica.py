"""A replica: a ledger seen as a Yjs Doc, with its gate and its entry-set digest (DESIGN §6).

The ledger's tables are the truth and hold everything the Doc view needs: each entry's
``item`` column is the Yjs client id of its item when the entry holds it (the ledger
assigns it in each batch: blocks in arrival order, then votes, so replicas route item-id
collisions alike), and the digest buckets give the entry-set digest. The state vector
and the update a peer lacks are encoded straight from those rows, byte for byte what
yrs would write for the same items (``wallet.crdt``), so no pycrdt Doc is ever built
and a replica of any size costs only what a question reads. Updates from outside go
through the gate, are validated and committed by ``commit`` (``Wallet.ingest`` for a
wallet, ``Ledger.add`` for a bare ledger). Entries whose item id another entry holds
live outside the Doc view and travel by reconciliation: peers compare digests and send
each other the raw entries the other lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from wallet.crdt import (
    ITEM_ID_BITS,
    Gate,
    decode_state_vector,
    encode_state_vector,
    item_section,
    join_sorted_sections,
)
from wallet.encoding import Entry, id_text, parse_entry
from wallet.errors import BadEntry, EncodingError
from wallet.ledger import Ledger

UPDATE_ROWS_CHUNK = 5_000
"""Rows read at a time when an update is encoded from the tables."""


class Replica:
    """One network's entries as a Doc view, a digest and a gate, over a ``Ledger``."""

    def __init__(
        self,
        ledger: Ledger | Callable[[], Ledger],
        *,
        commit: Callable[[list[Entry]], object] | None = None,
        item_bits: int = ITEM_ID_BITS,
        max_update_bytes: int = 4 << 20,
        max_entries: int = 20_000,
    ) -> None:
        self._get = ledger if callable(ledger) else (lambda: ledger)
        self._commit = commit or (lambda entries: self.ledger.add(entries))
        first = self._get()
        self.gate = Gate(
            first.network,
            frozenset(first.genesis.witnesses),
            item_bits=item_bits,
            max_update_bytes=max_update_bytes,
            max_entries=max_entries,
        )
        self.item_bits = item_bits
        first.tables.use_item_bits(item_bits)

    @property
    def ledger(self) -> Ledger:
        """The ledger (its owner may replace it: a wallet reopened, a store rebuilt)."""
        led = self._get()
        if led.tables.item_bits != self.item_bits:
            led.tables.use_item_bits(self.item_bits)
        return led

    def item_owner(self, client: int) -> bytes | None:
        """The id of the entry holding item id ``client``, if any."""
        return self.ledger.tables.item_owner(client)

    @property
    def outside(self) -> dict[bytes, Entry]:
        """The entries whose item id another entry holds (O(their number))."""
        return self.ledger.tables.without_item()

    def digest_value(self) -> bytes:
        """The entry-set digest: the sum of all entry ids, mod 2^256 (kept by the
        ledger's tables: reading it costs no pass over the set)."""
        return self.ledger.tables.digest()

    # ------------------------------------------------------------ from outside
    def apply_update(self, update: bytes) -> list[Entry]:
        """Gate, validate and commit an update.

        Raises ``GateRefused`` (nothing stored) for a bad update. Returns the new
        entries.
        """
        led = self.ledger
        result = self.gate.check(update, held=led.__contains__,
                                 item_owner=led.tables.item_owner)
        if not result.entries:
            return []
        self._commit(result.entries)
        return result.entries

    def add_raw(self, bodies: Iterable[bytes]) -> list[Entry]:
        """Reconciliation: verify raw entries of this network and commit the new ones."""
        fresh: list[Entry] = []
        led = self.ledger
        for body in bodies:
            try:
                e = parse_entry(body)
            except EncodingError as exc:
                raise BadEntry("bad_entry", exc.reason) from None
            if e.network != led.network:
                raise BadEntry("wrong_network", "an entry of another network")
            if e.kind.name == "VOTE" and e.signer not in self.gate.witnesses:
                raise BadEntry("unknown_witness", "a vote by a key that is not a witness")
            if e.id not in led:
                fresh.append(e)
        if fresh:
            self._commit(fresh)
        return fresh

    # --------------------------------------------------------------- to outside
    def state_vector(self) -> bytes:
        """The Doc's state vector: clock 1 for every item held (O(items))."""
        return encode_state_vector(self.ledger.tables.item_clients())

    def update_since(self, state_vector: bytes) -> bytes:
        """What a peer with this state vector lacks, as one canonical update."""
        return join_sorted_sections(self.sections_since(state_vector))

    def sections_since(self, state_vector: bytes) -> Iterator[tuple[int, bytes]]:
        """The item sections a peer with this state vector lacks, clients in descending
        order (the order of a canonical update), read from the tables a chunk at a time.

        The state vector is checked strictly first (``EncodingError`` if malformed)."""
        have = decode_state_vector(state_vector) if state_vector else {}
        for client, entry_id, body in self.ledger.tables.items_descending(UPDATE_ROWS_CHUNK):
            if have.get(client, 0) < 1:
                yield client, item_section(client, id_text(entry_id), body)

    def ids(self) -> set[bytes]:
        """Every entry id held (O(n): tests and audits)."""
        led = self.ledger
        return set(led.blocks) | set(led.votes)

    def bodies(self, ids: Iterable[bytes]) -> list[bytes]:
        """The signed bytes of held entries, each after what it depends on
        (``bundle.dependency_order``)."""
        from wallet.bundle import dependency_order

        found = self.ledger.tables.entries(list(ids))
        return [e.raw for e in dependency_order(found.values())]


def sync_pair(a: Replica, b: Replica) -> tuple[int, int]:
    """Bring two in-memory replicas to the same set: y-sync, then digest reconciliation.

    The reference for what the sans-I/O sync protocol does over a wire. Returns how many
    entries travelled by y-sync and by reconciliation.
    """
    by_doc = len(b.apply_update(a.update_since(b.state_vector())))
    by_doc += len(a.apply_update(b.update_since(a.state_vector())))
    by_raw = 0
    if a.digest_value() != b.digest_value():
        a_ids, b_ids = a.ids(), b.ids()
        by_raw += len(b.add_raw(a.bodies(a_ids - b_ids)))
        by_raw += len(a.add_raw(b.bodies(b_ids - a_ids)))
    return by_doc, by_raw
