"""One network the relay serves: its ledger, its port, its subscribers and its witness.

The ledger is rebuilt from the store on start without re-verifying (every entry was
verified before it was stored). New entries from a peer pass the protocol's gate, are
written to the store (counted against their device's daily quota; the issuer's
devices, which mint, have none) and only then join the ledger, and are fanned out to
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
from server.store import NewEntry, RelayStore
from server.telemetry import Telemetry
from sync.port import ReplicaPort, make_cursor, read_cursor
from sync.protocol import Connection, ItemRow, item_rows
from wallet.encoding import Block, Entry, Genesis, Kind, Vote, parse_entry
from wallet.ledger import Ledger
from wallet.replica import Replica
from wallet.witness import Witness

VOTE_DELAY_S = 0.02  # gather entries this long before voting, so votes come in batches


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
        return make_cursor(self.net.store.store_id, self.net.store.high_water())

    def entries_since(self, cursor: bytes) -> Iterator[list[bytes]] | None:
        """Entries stored after the cursor, in chunks; None for another store's cursor."""
        pos = read_cursor(cursor, self.net.store.store_id) if cursor else 0
        if pos is None or pos > self.net.store.high_water():
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
        self.ledger = Ledger(genesis)
        for chunk in store.entries(self.network):
            self.ledger.add([parse_entry(b, verify=False) for b in chunk])
        self.issuing: set[bytes] = set()  # the issuer's devices: no quota (it mints)
        self._note_issuing(self.ledger.blocks.values())
        self.replica = Replica(self.ledger, commit=self._commit)
        self.port = RelayPort(self)
        self.subscribers: set[Subscriber] = set()
        self.witness: Witness | None = None
        if witness_key is not None and bytes(witness_key.verify_key) in genesis.witnesses:
            self.witness = Witness(witness_key, store)
        self.refusal: LimitExceeded | None = None  # set when a commit went over a limit
        self._touched: set[bytes] = set()
        self._vote_timer: asyncio.TimerHandle | None = None
        self._recover = False

    # ------------------------------------------------------------- storing
    def _note_issuing(self, entries: Iterable[Entry]) -> None:
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
        rows = [NewEntry(e.id, e.raw, self._quota_device(e)) for e in new]
        try:
            self.store.add_entries(self.network, rows, day=utc_day(), quota=quota)
        except LimitExceeded as exc:
            self.refusal = exc
            raise
        changes = self.ledger.add(new)
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
            self._touched.update(self.ledger.devices)
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
        have = {(v.device, v.seq, v.block_id) for v in self.ledger.votes.values()
                if v.witness == me}
        out = []
        for device, slot, block in self.store.claims(self.network):
            if (device, slot, block) in have or block not in self.ledger.blocks:
                continue
            out.append(Vote(self.network, device, slot, block, me).signed(self.witness.key))
        if out:
            self._store(list(out), quota=None)
        return out

    def cancel(self) -> None:
        """Stop a pending vote batch (shutdown); the claims already made stay binding."""
        if self._vote_timer is not None:
            self._vote_timer.cancel()
            self._vote_timer = None
