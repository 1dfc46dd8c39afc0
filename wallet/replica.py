"""A replica: a ledger with its CRDT Doc, its gate and its entry-set digest (DESIGN §6).

The ledger (and, for a wallet, the store) is the truth; the digest and the Doc are
derived from it and catch up lazily from the ledger's arrivals: the digest whenever it
is read, the Doc only when a gate check or a state vector needs it, so a wallet that
never syncs never builds one and a bulk catch-up (raw entries) never waits for it.
Updates from outside go through the gate, are validated and committed by ``commit``
(``Wallet.ingest`` for a wallet, ``Ledger.add`` for a bare ledger), and only then
applied to the Doc. Entries whose item id another entry holds live outside the Doc and
travel by reconciliation: peers compare digests and send each other the raw entries the other lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from wallet.crdt import ITEM_ID_BITS, EntryDigest, Gate, LedgerDoc, item_client_id
from wallet.encoding import Entry, Kind, parse_entry
from wallet.errors import BadEntry, EncodingError
from wallet.ledger import Ledger


class Replica:
    """One network's entries as a Doc, a digest and a gate, over a ``Ledger``."""

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
        self._current: Ledger = self._get()
        self._commit = commit or (lambda entries: self.ledger.add(entries))
        first = self._current
        self.gate = Gate(
            first.network,
            frozenset(first.genesis.witnesses),
            item_bits=item_bits,
            max_update_bytes=max_update_bytes,
            max_entries=max_entries,
        )
        self.item_bits = item_bits
        self._doc: LedgerDoc | None = None
        self.digest = EntryDigest()
        self.outside: dict[bytes, Entry] = {}
        self._owner: dict[int, bytes] = {}  # item id -> the entry holding it
        self._for_doc: list[Entry] = []  # item owners the Doc has not taken in yet
        self._seen = 0  # how many of the ledger's arrivals were taken in

    @property
    def ledger(self) -> Ledger:
        """The ledger; when its owner rebuilt it, the Doc and digest start over from it."""
        led = self._get()
        if led is not self._current:
            self._current = led
            self._doc = None
            self.digest = EntryDigest()
            self.outside = {}
            self._owner = {}
            self._for_doc = []
            self._seen = 0
        return led

    @property
    def doc(self) -> LedgerDoc:
        """The Doc, caught up with every entry the ledger holds (built on first use)."""
        self._catch_up()
        if self._doc is None:
            self._doc = LedgerDoc(self.item_bits)
        if self._for_doc:
            todo, self._for_doc = self._for_doc, []
            for e in self._doc.insert(todo):  # none: their item ids are theirs
                self.outside[e.id] = e
        return self._doc

    def _catch_up(self) -> None:
        """Take in what the ledger gained: the digest, and who holds each item id.

        Cheap (no Doc work): the Doc takes the item owners in only when it is needed (a
        state vector, a y-sync answer), so a bulk catch-up and live updates, which the
        gate checks against this index, never wait for it. Dependencies first (blocks in
        arrival order, then votes) so every replica routes item-id collisions alike
        whenever it learns entries in the same batches.
        """
        led = self.ledger
        if self._seen == len(led.arrivals):
            return
        fresh = led.arrivals[self._seen :]
        self._seen = len(led.arrivals)
        bits = self.item_bits
        owner = self._owner
        for group in ([e for e in fresh if e.kind != Kind.VOTE],
                      [e for e in fresh if e.kind == Kind.VOTE]):
            for e in group:
                self.digest.add(e.id)
                client = item_client_id(e.id, bits)
                if client in owner:
                    self.outside[e.id] = e
                else:
                    owner[client] = e.id
                    self._for_doc.append(e)

    def item_owner(self, client: int) -> bytes | None:
        """The id of the entry holding item id ``client``, if any."""
        self._catch_up()
        return self._owner.get(client)

    def digest_value(self) -> bytes:
        """The entry-set digest: the sum of all entry ids, mod 2^256 (kept by the
        ledger's tables: reading it costs no pass over the set)."""
        return self.ledger.tables.digest()

    # ------------------------------------------------------------ from outside
    def apply_update(self, update: bytes) -> list[Entry]:
        """Gate, validate and commit an update, then apply it to the Doc.

        Raises ``GateRefused`` (nothing applied, nothing stored) for a bad update.
        Returns the new entries.
        """
        self._catch_up()
        result = self.gate.check(update, held=self.ledger.__contains__,
                                 item_owner=self._owner.get)
        if not result.entries:
            return []
        self._commit(result.entries)
        self._catch_up()
        return result.entries

    def add_raw(self, bodies: Iterable[bytes]) -> list[Entry]:
        """Reconciliation: verify raw entries of this network and commit the new ones."""
        fresh: list[Entry] = []
        for body in bodies:
            try:
                e = parse_entry(body)
            except EncodingError as exc:
                raise BadEntry("bad_entry", exc.reason) from None
            if e.network != self.ledger.network:
                raise BadEntry("wrong_network", "an entry of another network")
            if e.kind.name == "VOTE" and e.signer not in self.gate.witnesses:
                raise BadEntry("unknown_witness", "a vote by a key that is not a witness")
            if e.id not in self.ledger:
                fresh.append(e)
        if fresh:
            self._commit(fresh)
            self._catch_up()
        return fresh

    # --------------------------------------------------------------- to outside
    def state_vector(self) -> bytes:
        """The Doc's state vector."""
        return self.doc.state_vector()

    def update_since(self, state_vector: bytes) -> bytes:
        """What a peer with this state vector lacks from the Doc."""
        return self.doc.update_since(state_vector)

    def ids(self) -> set[bytes]:
        """Every entry id held (in the Doc or outside it)."""
        return set(self.ledger.blocks) | set(self.ledger.votes)

    def bodies(self, ids: Iterable[bytes]) -> list[bytes]:
        """The signed bytes of held entries, each after what it depends on
        (``bundle.dependency_order``)."""
        from wallet.bundle import dependency_order

        led = self.ledger
        found = [led.blocks.get(i) or led.votes.get(i) for i in ids]
        return [e.raw for e in dependency_order(e for e in found if e is not None)]


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
