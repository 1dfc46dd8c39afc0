"""One network the relay serves: its ledger, its port, its subscribers and its witness.

The ledger lives in the store's tables for the network (``RelayStore.tables``), so a
restarted relay opens it in O(1) and reads only what its work touches. New entries from
a peer pass the protocol's gate, join the ledger in the store's transaction (counted
against their device's daily quota; the issuer's devices, which mint, have none: over
it, nothing of the batch is stored), and are fanned out to
every other subscriber as item rows encoded once. The relay commits the writes of an
event-loop pass together (``on_stored`` tells it there is something to commit) and then
calls ``cursor_moved``: every subscriber gets a cursor, which for the sender is the
acknowledgement. With a witness key listed in the genesis, the relay then votes in
batches: ``Witness.vote`` claims each slot durably before a vote is signed, and the
votes are stored and fanned out to every subscriber, the sender too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from nacl.signing import SigningKey

from server.errors import LimitExceeded
from server.store import RelayStore
from server.telemetry import Telemetry
from sync.port import ReplicaPort, make_cursor, read_cursor
from sync.protocol import Connection, ItemRow, item_rows
from wallet.encoding import Block, Entry, Genesis, Kind, Vote
from wallet.ledger import Ledger
from wallet.replica import Replica
from wallet.witness import Witness

VOTE_DELAY_S = 0.02  # gather entries this long before voting, so votes come in batches
WITNESS_SEEN_KEY = "witness_seen"
PEER_CURSOR_PREFIX = "cursor:"  # + the peer's key in hex: where its store stood for us
"""The network meta key of the row up to which the witness adopted its own votes."""


class Subscriber(Protocol):
    """A live conversation the network fans entries out to (a session, a peer link)."""

    conn: Connection

    def deliver(self, rows: list[ItemRow]) -> None:
        """New entries for the peer, as item rows."""

    def cursor_moved(self) -> None:
        """The store's durable position moved: send the peer a cursor."""


def utc_day(now: float | None = None) -> str:
    """The UTC day (YYYY-MM-DD) quotas are counted in."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class RelayPort(ReplicaPort):
    """The served network as ``sync.protocol.Port``: cursors are store positions.

    Everything but the cursors is the shared replica port of ``sync.port`` (digest,
    gate, buckets, bodies); it reads ``replica`` and ``genesis``.
    """

    def __init__(self, net: ServedNetwork) -> None:
        self.net = net
        self.genesis = net.genesis
        self.replica = net.replica

    def cursor(self) -> bytes:
        """Where the store stands now."""
        store, network = self.net.store, self.net.network
        return make_cursor(store.store_id(network), store.high_water(network))

    def entries_since(self, cursor: bytes) -> Iterator[list[bytes]] | None:
        """Entries stored after the cursor, in chunks; None for another store's cursor."""
        store, network = self.net.store, self.net.network
        pos = read_cursor(cursor, store.store_id(network)) if cursor else 0
        if pos is None or pos > store.high_water(network):
            return None
        return self.net.store.bodies_after(self.net.network, pos)


class ServedNetwork:
    """A network's ledger over the relay store, its subscribers and its witness."""

    def __init__(
        self,
        store: RelayStore,
        genesis: Genesis,
        *,
        telemetry: Telemetry,
        witness_key: SigningKey | None = None,
        quota_per_day: int | None = None,
        vote_delay_s: float = VOTE_DELAY_S,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.network = genesis.network_id
        self.telemetry = telemetry
        self.quota_per_day = quota_per_day
        self.vote_delay_s = vote_delay_s
        # Without a relay to gather commits, every write is durable at once.
        self.on_stored = on_stored or self.cursor_moved
        tables = store.tables(self.network)
        self.ledger = Ledger(genesis, tables)
        self.issuing: set[bytes] = {  # the issuer's devices: no quota (they mint)
            bytes(k) for (k,) in tables.conn.execute("SELECT key FROM devices WHERE issuing = 1")
        }
        self.replica = Replica(self.ledger, commit=self._commit)
        self.port = RelayPort(self)
        # Insertion-ordered (a dict, not a set hashed by address): fan-out goes to the
        # subscribers in the same order in every run, so a simulation's seed replays it.
        self.subscribers: dict[Subscriber, None] = {}
        self.witness: Witness | None = None
        if witness_key is not None and bytes(witness_key.verify_key) in genesis.witnesses:
            self.witness = Witness(witness_key, store)
            seen = store.get_meta(WITNESS_SEEN_KEY, self.network)
            self.witness.resume(self.ledger, int(seen) if seen else 0)
        self.refusal: LimitExceeded | None = None  # set when a commit went over a limit
        self._touched: set[bytes] = set()
        self._vote_timer: asyncio.TimerHandle | None = None
        self._recover = False

    # ------------------------------------------------------------- cursors
    def peer_cursor(self, peer: bytes) -> bytes:
        """The cursor a peer (device or node, by key) last gave us, or b"": with it the
        peer sends only what it stored since, and we send it no state vector (which
        costs ~9 bytes an entry of the whole network)."""
        return self.store.get_meta(PEER_CURSOR_PREFIX + peer.hex(), self.network) or b""

    def keep_peer_cursor(self, peer: bytes, cursor: bytes) -> None:
        """Keep a peer's cursor; in a group it commits with the entries it stands for
        (they arrived before it), so it is never durable ahead of them."""
        self.store.set_meta(PEER_CURSOR_PREFIX + peer.hex(), cursor, self.network)

    # ------------------------------------------------------------- storing
    def _note_issuing(self, entries: list[Entry]) -> None:
        issuer = self.genesis.issuer
        self.issuing.update(e.device for e in entries
                            if isinstance(e, Block) and e.kind == Kind.OPEN and e.account == issuer)

    def _quota_device(self, e: Entry) -> bytes:
        """The device an entry counts against: a block's, unless the issuer's; none for
        a vote."""
        if not isinstance(e, Block) or e.device in self.issuing:
            return b""
        return e.device

    def _store(self, entries: list[Entry], *, quota: int | None) -> list[Entry]:
        new = [e for e in entries if e.id not in self.ledger]
        if not new:
            return []
        self._note_issuing(new)  # an open signed by the issuer: only the issuer can sign it
        charges: dict[bytes, int] = {}
        for e in new:
            device = self._quota_device(e)
            if device:
                charges[device] = charges.get(device, 0) + 1
        try:
            with self.store.writing(self.network, charges, day=utc_day(), quota=quota):
                changes = self.ledger.add(new)
        except LimitExceeded as exc:
            self.refusal = exc
            raise
        self._touched.update(e.device for e in new)
        self._touched.update(c.device for c in changes)
        self.telemetry.count("tally_relay_entries_stored", len(new))
        self.on_stored()
        return new

    def _commit(self, entries: list[Entry]) -> None:
        """The replica's commit: entries from a peer, durable before they count."""
        new = self._store(entries, quota=self.quota_per_day)
        self.telemetry.count("tally_relay_entries_in_total", len(new))

    def add_local(self, entries: list[Entry]) -> list[Entry]:
        """Entries made here (votes): stored, added, and fanned out to every subscriber."""
        new = self._store(entries, quota=None)
        if new:
            self.replica.digest_value()  # the Doc and digest catch up with the ledger
            self.fan_out(new, origin=None)
        return new

    # ------------------------------------------------------------- fan-out
    def accepted(self, entries: Iterable[Entry], origin: Subscriber) -> None:
        """New entries from ``origin``: fan them out, vote soon (the ack is the cursor
        that follows their commit)."""
        self.fan_out(list(entries), origin=origin)
        self.schedule_votes()

    def fan_out(self, entries: list[Entry], origin: Subscriber | None) -> None:
        """Hand entries to every live subscriber but ``origin``."""
        if not entries:
            return
        rows = item_rows(entries, self.replica.item_bits)
        sent = 0
        for sub in list(self.subscribers):
            if sub is origin or not sub.conn.live:
                continue
            sub.deliver(rows)
            sent += 1
        if sent:
            self.telemetry.count("tally_relay_entries_out_total", len(entries) * sent)

    def cursor_moved(self) -> None:
        """Tell every subscriber the store's durable position moved."""
        for sub in list(self.subscribers):
            sub.cursor_moved()

    # ------------------------------------------------------------- witness
    def schedule_votes(self) -> None:
        """Vote soon for the devices touched since the last batch (when a witness)."""
        if self.witness is None or not self._touched or self._vote_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._vote_timer = loop.call_later(self.vote_delay_s, self._vote_batch)

    def _vote_batch(self) -> None:
        try:
            self.vote_now()
        except Exception as exc:  # the store failed: log it; the claims made still bind
            self._vote_timer = None
            self._recover = True  # sign the claimed votes again next time
            self.telemetry.log("error", where="witness", network=self.genesis.name,
                               error=f"{type(exc).__name__}: {exc}")

    def vote_all_soon(self) -> None:
        """Vote soon for every device (on start: entries stored but not voted yet)."""
        if self.witness is not None:
            self._touched.update(self.store.to_vote(self.network))
            self.schedule_votes()

    def vote_now(self) -> list[Vote]:
        """Claim, sign, store and fan out the votes the witness rule allows now."""
        self._vote_timer = None
        if self.witness is None or not self._touched:
            return []
        devices, self._touched = self._touched, set()
        if self._recover:
            self._recover = False
            self.fan_out(self.recover_votes(), origin=None)
        votes = self.witness.vote(self.ledger, devices=devices)
        self.store.set_meta(WITNESS_SEEN_KEY, b"%d" % self.witness.position(self.ledger),
                            self.network)
        if votes:
            self.telemetry.count("tally_relay_votes_total", len(votes))
            self.add_local(list(votes))
            self.telemetry.log("votes", network=self.genesis.name, count=len(votes))
        if self._touched:  # votes turned blocks final: their devices may be votable now
            with contextlib.suppress(RuntimeError):  # no running loop: a synchronous caller
                self.schedule_votes()
        return votes

    def recover_votes(self) -> list[Vote]:
        """Re-sign votes claimed before a crash that never reached the store.

        Ed25519 is deterministic, so the vote is the one that would have left: the slot
        was claimed for that block, and voting it again cannot double-vote.
        """
        if self.witness is None:
            return []
        me = self.witness.public
        out = []
        for device, slot, block in self.store.unvoted_claims(self.network, me):
            if block in self.ledger.blocks:
                out.append(Vote(self.network, device, slot, block, me).signed(self.witness.key))
        if out:
            self._store(list(out), quota=None)
        return out

    def cancel(self) -> None:
        """Stop a pending vote batch (shutdown); the claims already made stay binding."""
        if self._vote_timer is not None:
            self._vote_timer.cancel()
            self._vote_timer = None
