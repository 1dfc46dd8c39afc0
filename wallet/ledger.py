"""Validation (DESIGN §3–4): statuses and balances as one deterministic function of the set.

``Ledger`` holds a network's entries in memory and keeps, incrementally, every block's
status, every device's balances, certificates, forks and fraud proofs. Entries reach it
already parsed and signature-checked (the gate and ``parse_entry`` do that); what it
decides needs the rest of the set.

How it stays incremental. For each device it keeps a *main chain*: the path from its
open through the device's tree of blocks (linked by ``prev``) that takes, at each slot,
the only child, or at a fork the single certified child (with ``q`` = 0, the single
account-signed revoke). Blocks off the main chain are conflicted (or pending, when they
hang from a missing block). Along the main chain it keeps a *frontier*: every block
before it is valid; the block at it is pending or invalid, and every later block shares
that state with reason ``prev``. Running totals of final credits, incoming credits and
sends over the valid prefix make rule 3 O(1) per block, so merging k entries costs O(k)
plus the statuses that change. Credit changes travel from a send to the receives that
claim it through a worklist of dirty devices; the claim graph follows hashes, so it has
no cycles and the worklist reaches the one fixpoint whatever the order of arrival.

Whether a receive holds depends on blocks present only, never on statuses (rule 4): a
claim of a payment to a revoked sibling holds through a revoke naming the claimer whose
chain below is present and does not claim it (``_below``, cached once complete); the
revoke's status prices the credit. A revoke's credit is its device's totals, so its
claimers are re-priced whenever that device is refreshed.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from wallet.crdt import item_client_id
from wallet.encoding import Block, Entry, Genesis, Kind, Vote
from wallet.ledger_tables import (
    DEVICE_CACHE_BLOCKS_MAX,
    SET_CACHE_MAX,
    STATUS_CACHE_MAX,
    LedgerTables,
    _trim,
    transaction,
)

CHECK = os.environ.get("TALLY_CHECK") == "1"
"""Assert the ledger's invariants after every batch (tests set it; ``TALLY_CHECK=1``)."""

E = TypeVar("E", Block, Vote)
V = TypeVar("V")

PENDING = "pending"
VALID = "valid"
INVALID = "invalid"
CONFLICTED = "conflicted"
STATE_CODES = {PENDING: 0, VALID: 1, INVALID: 2, CONFLICTED: 3}
"""How a state is stored (``entries.state``)."""
STATE_NAMES = {v: k for k, v in STATE_CODES.items()}

# Reason codes, named after DESIGN's wording.
R_PREV = "prev"  # prev (or an ancestor) is missing, pending, invalid or conflicted
R_FUNDS = "funds"  # rule 3: enough only with credits not final yet
R_OVERSPEND = "overspend"  # rule 3: not enough even with incoming credits
R_CLAIM_MISSING = "claim_missing"  # the claimed send is not in the set yet
R_REVOKE_MISSING = "revoke_missing"  # claims a send to another device, no revoke names us
R_NOT_ADDRESSED = "not_addressed"  # the claimed entry is not a payment/revoke to this device
R_DOUBLE_CLAIM = "double_claim"  # claimed earlier in this chain (or by the revoked device)
R_ISSUE_NOT_ISSUER = "issue_not_issuer"  # an issue outside the issuing device's chain
R_AFTER_REVOKE = "after_revoke"  # a block after a revoke
R_REVOKE_ACCOUNT = "revoke_account"  # a revoke not signed by the device's account
R_REVOKE_ISSUER = "revoke_issuer"  # the issuing device cannot be revoked
R_BAD_PREV = "bad_prev"  # prev is present but is not this device's block at seq-1
R_LOST = "lost"  # the other side of the fork is certified
R_DISPUTED = "disputed"  # a fork with no side certified
R_EQUIVOCATION = "equivocation"  # a witness-equivocation proof covers this slot


# What people see (DESIGN §3, §5): on a network with no witnesses (q = 0) nothing is ever
# final, so a valid block reads "accepted, no witness" there, in every output.
FINAL_WORD = "final"
VALID_WORD = "valid"
ACCEPTED_WORD = "accepted, no witness"
STATUS_WORDS = (FINAL_WORD, VALID_WORD, ACCEPTED_WORD, PENDING, INVALID, "lost", "disputed")
"""Every word a status reads as; ``status_word`` gives exactly one of them."""


def status_word(state: str, reason: str, final: bool, witnessed: bool) -> str:
    """The one word a status reads as. ``witnessed`` is False on a network with q = 0,
    where ``final`` means valid (rule 3) but is never shown as final to anyone."""
    if state == VALID:
        if not witnessed:
            return ACCEPTED_WORD
        return FINAL_WORD if final else VALID_WORD
    if state == CONFLICTED:
        return R_LOST if reason == R_LOST else R_DISPUTED
    return state


class LedgerInvariantBroken(AssertionError):
    """A promise of DESIGN §3 does not hold in the ledger's state: a bug, named."""


@dataclass(frozen=True, slots=True)
class Status:
    """A block's status: state, reason code (empty when valid) and finality.

    ``final`` is finality as the rules use it (with q = 0 it means valid); ``witnessed``
    is False on a network with no witnesses, where no status ever reads as final.
    """

    state: str
    reason: str = ""
    final: bool = False
    witnessed: bool = True

    @property
    def label(self) -> str:
        """One word for people: final, valid, accepted (no witness), pending, invalid, lost
        or disputed."""
        return status_word(self.state, self.reason, self.final, self.witnessed)

    @property
    def shown_final(self) -> bool:
        """Final as people and scripts are told: certified by witnesses, never with q = 0."""
        return self.final and self.witnessed and self.state == VALID


def _many(conn: sqlite3.Connection, sql: str, rows: list) -> None:
    """``executemany``, skipped when there is nothing to write (it costs a statement)."""
    if rows:
        conn.executemany(sql, rows)


def status_row(st: Status | None) -> tuple[int | None, str | None, int | None]:
    """A status as its three stored columns (state, reason, final)."""
    if st is None:
        return None, None, None
    return STATE_CODES[st.state], st.reason or None, int(st.final)


S_VALID = Status(VALID)
S_FINAL = Status(VALID, "", True)
S_ACCEPTED = Status(VALID, "", True, witnessed=False)
"""A valid block on a network with no witnesses: final for rule 3, never shown as final."""


@dataclass(frozen=True, slots=True)
class StatusChange:
    """An event: a block's status changed (``old`` is None when the block is new)."""

    block_id: bytes
    device: bytes
    seq: int
    kind: Kind
    old: Status | None
    new: Status


@dataclass(frozen=True, slots=True)
class Balance:
    """A device's balances in minor units (DESIGN §3).

    ``moving`` is money a sibling device of its account sent it (a move, a revoke's
    balance) and ``to_claim`` money other accounts sent it, that no receive claims yet:
    counted here, and nowhere else, so a move never makes money vanish from the total
    (what so waits at a revoked device is counted at the sibling that claims it).
    """

    spendable: int
    incoming: int
    moving: int = 0
    to_claim: int = 0

    @property
    def total(self) -> int:
        """Everything the device holds or has coming: spendable + incoming + unclaimed."""
        return self.spendable + self.incoming + self.moving + self.to_claim

    def __add__(self, other: Balance) -> Balance:
        return Balance(self.spendable + other.spendable, self.incoming + other.incoming,
                       self.moving + other.moving, self.to_claim + other.to_claim)


@dataclass(frozen=True, slots=True)
class FraudProof:
    """Two signed blocks at one slot of a device: anyone can verify it."""

    device: bytes
    seq: int
    block_ids: tuple[bytes, ...]
    equivocation: bool


_NO_LOW = 1 << 62


class _Device:
    """What the ledger keeps per device; see the module docstring.

    Loaded from the tables when first needed (``_Devices``); ``low`` is the lowest main
    chain index whose booking (main, cf, ci, sent) changed since the last flush, and
    ``dropped`` the blocks that left the main chain since then.
    """

    __slots__ = (
        "account",
        "batch_low",
        "block_ids",
        "cert_top",
        "cf",
        "ci",
        "claimed",
        "dropped",
        "fork_slots",
        "frontier",
        "index",
        "issuing",
        "key",
        "label",
        "low",
        "main",
        "revokes",
        "roots",
        "saved",
        "sent",
        "tail_done",
        "tot_final",
        "tot_incoming",
        "tot_sent",
    )

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.account: bytes | None = None
        self.label = ""
        self.issuing = False
        self.block_ids: set[bytes] = set()
        self.roots: list[bytes] = []
        self.main: list[bytes] = []
        self.index: dict[bytes, int] = {}
        self.frontier = 0
        self.cert_top = -1
        self.cf: list[int] = []
        self.ci: list[int] = []
        self.sent: list[int] = []
        self.tot_final = 0
        self.tot_incoming = 0
        self.tot_sent = 0
        self.claimed: dict[bytes, int] = {}
        self.fork_slots: set[int] = set()
        self.revokes: list[bytes] = []
        self.tail_done = 0
        self.low = _NO_LOW
        self.batch_low = _NO_LOW  # ``low`` at the last flush: what the checks look at
        self.dropped: list[bytes] = []
        self.saved: tuple = ()

    def scalars(self) -> tuple:
        """What the device's row holds (compared at a flush to write only changes)."""
        return (self.account, self.label, int(self.issuing), len(self.block_ids),
                self.frontier, self.cert_top, self.tail_done, self.tot_final,
                self.tot_incoming, self.tot_sent,
                ",".join(map(str, sorted(self.fork_slots))) or None)

    def touch(self, i: int) -> None:
        """Main chain index ``i`` (and what follows) changed: write it at the flush."""
        if i < self.low:
            self.low = i


_DEVICE_COLS = ("account, label, issuing, nblocks, frontier, cert_top, tail_done, tot_final, "
                "tot_incoming, tot_sent, forks")


class _Devices:
    """Device key → ``_Device``, loaded from the tables on demand, kept in a bounded
    cache (by blocks held) between batches."""

    def __init__(self, tables: LedgerTables) -> None:
        self.t = tables
        self._cache: dict[bytes, _Device] = {}
        self._weight = 0

    def get(self, key: bytes) -> _Device | None:
        """The device, or None when no block of it is held."""
        d = self._cache.get(key)
        if d is None:
            d = self._load(key)
            if d is not None:
                self._cache[key] = d
                self._weight += len(d.block_ids)
        return d

    def __getitem__(self, key: bytes) -> _Device:
        d = self.get(key)
        if d is None:
            raise KeyError(key)
        return d

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    def account_of(self, key: bytes) -> bytes | None:
        """The account of the device's main open (None without one), without loading
        the device when it is not in memory."""
        d = self._cache.get(key)
        if d is not None:
            return d.account
        row = self.t.conn.execute("SELECT account FROM devices WHERE key = ?",
                                  (key,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def create(self, key: bytes) -> _Device:
        """A new device (its first block arrives), with its row made."""
        self.t.ref(key)
        d = self._cache[key] = _Device(key)
        d.saved = d.scalars()
        return d

    def keys(self) -> list[bytes]:
        """Every device with a block held (O(devices): tests and audits)."""
        rows = self.t.conn.execute("SELECT key FROM devices WHERE nblocks > 0")
        out = {bytes(k) for (k,) in rows}
        out.update(k for k, d in self._cache.items() if d.block_ids)
        return sorted(out)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def items(self) -> Iterator[tuple[bytes, _Device]]:
        """(key, device) for every device (O(devices))."""
        for k in self.keys():
            yield k, self[k]

    def values(self) -> Iterator[_Device]:
        """Every device (O(devices))."""
        for k in self.keys():
            yield self[k]

    def loaded(self) -> list[_Device]:
        """The devices in memory now."""
        return list(self._cache.values())

    def _load(self, key: bytes) -> _Device | None:
        t = self.t
        ref = t.dev_refs.get(key)
        if ref is None:
            return None
        row = t.conn.execute(f"SELECT {_DEVICE_COLS} FROM devices WHERE ref = ?",
                             (ref,)).fetchone()
        if row is None or not row[3]:
            return None
        d = _Device(key)
        acct, label, issuing, _, d.frontier, d.cert_top, d.tail_done, d.tot_final, \
            d.tot_incoming, d.tot_sent, forks = row
        d.account = bytes(acct) if acct is not None else None
        d.label = label or ""
        d.issuing = bool(issuing)
        d.fork_slots = {int(s) for s in forks.split(",")} if forks else set()
        main: list[tuple[int, bytes, int, int, int]] = []
        revoke = int(Kind.REVOKE)
        receive = int(Kind.RECEIVE)
        rows = t.conn.execute(
            "SELECT id, seq, kind, main, cf, ci, sent, target FROM entries "
            "WHERE dev = ? AND kind != ? ORDER BY ref", (ref, int(Kind.VOTE)))
        claims = []
        for i, seq, kind, on_main, cf, ci, sent, target in rows:
            bid = bytes(i)
            d.block_ids.add(bid)
            if seq == 0:
                d.roots.append(bid)
            if kind == revoke:
                d.revokes.append(bid)
            if on_main:
                main.append((seq, bid, cf or 0, ci or 0, sent or 0))
                if kind == receive and seq < d.frontier:
                    claims.append((bytes(target), seq))
        main.sort()
        for n, (seq, bid, cf, ci, sent) in enumerate(main):
            assert seq == n, f"device {key.hex()[:16]}: main chain has a gap at {n}"
            d.main.append(bid)
            d.index[bid] = n
            d.cf.append(cf)
            d.ci.append(ci)
            d.sent.append(sent)
        d.claimed = dict(claims)
        d.saved = d.scalars()
        return d

    def flush(self, booked: dict[bytes, tuple]) -> None:
        """Write changed device rows; put each changed main-chain booking in ``booked``
        (id → (main, cf, ci, sent)) for the entry rows."""
        t = self.t
        rows = []
        for d in self._cache.values():
            d.batch_low = d.low
            if d.low != _NO_LOW:
                for i in range(d.low, len(d.main)):
                    booked[d.main[i]] = (1, d.cf[i], d.ci[i], d.sent[i])
                d.low = _NO_LOW
            for bid in d.dropped:
                if bid not in d.index:
                    booked[bid] = (None, None, None, None)
            d.dropped = []
            now = d.scalars()
            if now != d.saved:
                rows.append((*now, t.ref(d.key)))
                self._weight += now[3] - (d.saved[3] if d.saved else 0)
                d.saved = now
        _many(t.conn,
            "UPDATE devices SET account = ?, label = ?, issuing = ?, nblocks = ?, "
            "frontier = ?, cert_top = ?, tail_done = ?, tot_final = ?, tot_incoming = ?, "
            "tot_sent = ?, forks = ? WHERE ref = ?", rows)

    def trim(self) -> None:
        """Bound the devices held after a flush (all of them are clean then)."""
        if self._weight > DEVICE_CACHE_BLOCKS_MAX:
            for k in list(self._cache):
                self._weight -= len(self._cache.pop(k).block_ids)
                if self._weight <= DEVICE_CACHE_BLOCKS_MAX // 2:
                    break

    def forget(self) -> None:
        """Drop every loaded device (after a rollback)."""
        self._cache, self._weight = {}, 0


class _Entries(Mapping[bytes, E]):
    """The held blocks (or votes) by id, read from the tables on demand."""

    def __init__(self, tables: LedgerTables, vote: bool) -> None:
        self.t = tables
        self.vote = vote

    def get(self, key: bytes, default: object = None):  # type: ignore[override]
        """The entry, or ``default``."""
        e = self.t.entry(key)
        if e is None or (e.kind == Kind.VOTE) != self.vote:
            return default
        return e

    def __getitem__(self, key: bytes) -> E:
        e = self.get(key)
        if e is None:
            raise KeyError(key)
        return e

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.t.all_ids(vote=self.vote))

    def __len__(self) -> int:
        return self.t.count_of(self.vote)

    def values(self) -> Iterator[E]:  # type: ignore[override]
        """Every held entry of this kind (O(n): tests and audits)."""
        return self.t.scan(self.vote)  # type: ignore[return-value]


class _Column(Mapping[bytes, V]):
    """A per-entry derived value (a status, cover bits) read from the entry rows on
    demand, cached, and written back by the flush."""

    def __init__(self, tables: LedgerTables, read: Callable[[bytes], V | None]) -> None:
        self.t = tables
        self._read = read
        self._cache: dict[bytes, V | None] = {}
        self.dirty: dict[bytes, V] = {}

    def get(self, key: bytes, default: V | None = None) -> V | None:
        """The value, or ``default`` when none is set."""
        if key in self._cache:
            v = self._cache[key]
        else:
            v = self._cache[key] = None if key in self.t.fresh else self._read(key)
        return default if v is None else v

    def __getitem__(self, key: bytes) -> V:
        v = self.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    def __setitem__(self, key: bytes, value: V) -> None:
        self._cache[key] = value
        self.dirty[key] = value

    def __iter__(self) -> Iterator[bytes]:
        """Every block with a value (O(n): tests and audits)."""
        for i in self.t.all_ids(vote=False):
            if self.get(i) is not None:
                yield i

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def trim(self) -> None:
        """Forget the batch's writes (flushed) and bound the cache."""
        self.dirty = {}
        _trim(self._cache, STATUS_CACHE_MAX)

    def forget(self) -> None:
        """Drop everything held in memory (after a rollback)."""
        self._cache, self.dirty = {}, {}


class Arrivals(Sequence[Entry]):
    """Every entry in the order it was added, read from the tables: lets a follower
    (the witness, a port's log) take only what is new, O(new), however large the set."""

    def __init__(self, tables: LedgerTables) -> None:
        self.t = tables

    def __len__(self) -> int:
        return self.t.count

    def since(self, start: int) -> list[Entry]:
        """The entries added after the first ``start``."""
        rows = self.t.conn.execute("SELECT body FROM entries WHERE ref > ? ORDER BY ref",
                                   (start,))
        out = [self.t.entry_from(bytes(b)) for (b,) in rows]
        stored = self.t.count - len(self.t.fresh)
        out.extend(list(self.t.fresh.values())[max(0, start - stored):])
        return out

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            assert step == 1, "arrivals slice with a step"
            return self.since(start)[: stop - start]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self.since(i)[0]


class Ledger:
    """A network's set of entries with every status and balance derived from it.

    The set and its derived state live in ``LedgerTables`` (a wallet's store, or a
    private in-memory database when none is given): opening a ledger reads nothing but
    its count, and each query reads what it needs. ``add`` writes the batch and its
    consequences in one transaction (the caller's, when one is open).
    """

    def __init__(self, genesis: Genesis, tables: LedgerTables | None = None) -> None:
        self.genesis = genesis
        self.network = genesis.network_id
        self.quorum = genesis.quorum
        self.witness_bit = {w: 1 << i for i, w in enumerate(genesis.witnesses)}
        t = self.tables = tables if tables is not None else LedgerTables.memory()
        self.blocks: _Entries[Block] = _Entries(t, vote=False)
        self.votes: _Entries[Vote] = _Entries(t, vote=True)
        self.arrivals = Arrivals(t)
        witnessed = self.quorum > 0
        statuses: dict[tuple, Status] = {}

        def read_status(bid: bytes) -> Status | None:
            row = t.conn.execute("SELECT state, reason, final FROM entries WHERE id = ?",
                                 (bid,)).fetchone()
            if row is None or row[0] is None:
                return None
            st = statuses.get(row)
            if st is None:
                state = STATE_NAMES[row[0]]
                st = statuses[row] = Status(state, row[1] or "", bool(row[2]),
                                            witnessed or state != VALID)
            return st

        def read_cover(bid: bytes) -> int | None:
            row = t.conn.execute("SELECT cover FROM entries WHERE id = ?", (bid,)).fetchone()
            return None if row is None else row[0]

        self.status: _Column[Status] = _Column(t, read_status)
        self.cover: _Column[int] = _Column(t, read_cover)
        self.devices = _Devices(t)
        self._claimers = t.claimers
        self._votes_for = t.votes_for
        self._at_slot = t.at_slot
        self._waiting = t.waiting
        self._routed = t.routed
        self._unclaimed = t.unclaimed
        self._revokes_to = t.revokes_to
        self._below_cache: dict[bytes, frozenset[bytes] | bool] = {}
        self._below_new: dict[bytes, frozenset[bytes] | bool] = {}
        self._dirty: dict[bytes, int] = {}
        self._changes: list[StatusChange] = []
        self._refreshed: set[bytes] = set()

    # ------------------------------------------------------------------ adding
    def __contains__(self, entry_id: bytes) -> bool:
        return self.tables.has(entry_id)

    def __len__(self) -> int:
        return self.tables.count

    def held(self, ids: Iterable[bytes]) -> set[bytes]:
        """Which of ``ids`` the set holds (in few reads)."""
        return self.tables.held(ids)

    def add(self, entries: Iterable[Entry]) -> list[StatusChange]:
        """Merge entries (parsed and signature-checked); return the status changes.

        A batch holding an entry of another network, or a vote by a key outside the
        genesis, raises ValueError and changes nothing. The batch and everything it
        changes are written in one transaction (the caller's, if one is open): a failure
        rolls it back and the ledger reads the tables afresh.
        """
        batch: dict[bytes, Entry] = {}
        for e in entries:
            if e.id in batch:
                continue
            if e.network != self.network:
                raise ValueError("entry of another network reached the ledger")
            if isinstance(e, Vote) and e.witness not in self.witness_bit:
                raise ValueError("vote by a key outside the genesis reached the ledger")
            batch[e.id] = e
        held = self.tables.held(batch)
        fresh = {i: e for i, e in batch.items() if i not in held}
        if not fresh:
            return []
        t = self.tables
        try:
            with transaction(t.conn):
                t.fresh = fresh
                new_blocks: list[Block] = []
                new_votes: list[Vote] = []
                for e in fresh.values():
                    if isinstance(e, Vote):
                        new_votes.append(e)
                    else:
                        new_blocks.append(e)
                new_blocks.sort(key=lambda b: b.seq)
                for b in new_blocks:
                    self._add_block(b)
                for v in new_votes:
                    self._add_vote(v)
                self._run()
                self._flush()
        except BaseException:
            self._forget()
            raise
        changes, self._changes = self._changes, []
        touched, self._refreshed = self._refreshed, set()
        if CHECK:
            self.check_invariants(touched, changes)
        return changes

    def _forget(self) -> None:
        """Drop everything held in memory: the tables are the truth again."""
        self.tables.forget()
        self.devices.forget()
        self.status.forget()
        self.cover.forget()
        self._below_cache, self._below_new = {}, {}
        self._dirty, self._changes, self._refreshed = {}, [], set()

    def _device(self, key: bytes) -> _Device:
        d = self.devices.get(key)
        if d is None:
            d = self.devices.create(key)
        return d

    def _mark(self, device: bytes, from_index: int = 1 << 62) -> None:
        cur = self._dirty.get(device)
        if cur is None or from_index < cur:
            self._dirty[device] = from_index

    def _add_block(self, b: Block) -> None:
        d = self._device(b.device)
        d.block_ids.add(b.id)
        if b.seq == 0:
            self._at_slot.add((b.device, 0), b.id)
            d.roots.append(b.id)
            if len(d.roots) > 1:
                d.fork_slots.add(0)
        else:
            self._at_slot.add((b.device, b.seq), b.id)
            siblings = self._children(b.prev)
            if len(siblings) > 1:
                d.fork_slots.add(b.seq)
        if len(self._children(b.id)) > 1:
            d.fork_slots.add(b.seq + 1)
        if b.kind == Kind.REVOKE:
            d.revokes.append(b.id)
            self._revokes_to.add(b.to_device, b.id)
            for waiter in self._waiting.pop(b.device):
                self._mark(waiter)
        if b.kind == Kind.RECEIVE:
            self._claimers.add(b.claim, b.id)
        elif b.kind in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
            self._unclaimed.add(b.to_device, b.id)
        for waiter in self._waiting.pop(b.id):
            self._mark(waiter)
        bits = 0
        for vid in sorted(self._votes_for.get(b.id)):
            bits |= self._vote_bit(self.votes[vid], b)
        for c in self._children(b.id):
            bits |= self.cover.get(c, 0)
        self.cover[b.id] = 0
        self._spread(b.id, bits)
        self._mark(b.device)

    def _add_vote(self, v: Vote) -> None:
        self._votes_for.add(v.block_id, v.id)
        b = self.blocks.get(v.block_id)
        if b is not None:
            self._spread(b.id, self._vote_bit(v, b))

    def _vote_bit(self, v: Vote, b: Block) -> int:
        """A vote counts only if its block id, device and seq all match."""
        if v.device != b.device or v.seq != b.seq:
            return 0
        return self.witness_bit[v.witness]

    def _spread(self, block_id: bytes, bits: int) -> None:
        """Add witness bits to a block and every block below it (a vote covers them)."""
        bid: bytes | None = block_id
        touched = None
        while bid is not None and bits:
            have = self.cover.get(bid)
            if have is None:
                break
            new = bits & ~have
            if not new:
                break
            self.cover[bid] = have | new
            b = self.blocks[bid]
            touched = b.device
            bits = new
            p = self.blocks.get(b.prev) if b.seq else None
            bid = p.id if p is not None and p.device == b.device and p.seq == b.seq - 1 else None
        if touched is not None:
            self._mark(touched)

    def _children(self, block_id: bytes) -> list[bytes]:
        """Blocks naming ``block_id`` as prev that sit at the next slot of its device."""
        p = self.blocks.get(block_id)
        if p is None:
            return []
        kids = self._at_slot.get((p.device, p.seq + 1))
        return sorted(c for c in kids if self.blocks[c].prev == block_id)

    # ------------------------------------------------------------- certificates
    def certified(self, block_id: bytes) -> bool:
        """Votes of at least q distinct witnesses cover the block (never, with q = 0)."""
        return self.quorum > 0 and self.cover.get(block_id, 0).bit_count() >= self.quorum

    def _tree_children(self, d: _Device, block_id: bytes) -> list[bytes]:
        """Children that compete for the next slot: a revoke by a stranger does not."""
        out = []
        for c in self._children(block_id):
            cb = self.blocks[c]
            if cb.kind == Kind.REVOKE and cb.account != d.account:
                continue
            out.append(c)
        return out

    def _candidates(self, d: _Device, slot: int) -> list[bytes]:
        if slot == 0:
            return list(d.roots)
        return self._tree_children(d, d.main[slot - 1])

    def _decide(self, d: _Device, slot: int, cands: list[bytes]) -> tuple[bytes | None, str]:
        """Which candidate the main chain takes at a slot, or why none (a reason code)."""
        if len(cands) == 1:
            return cands[0], ""
        cert = [c for c in cands if self.certified(c)]
        if len(cert) >= 2:
            return None, R_EQUIVOCATION
        if len(cert) == 1:
            return cert[0], R_LOST
        # Every open carries its device's signature (the gate refuses one without), so
        # two opens at slot 0 are a fork like any other: the device key signed both.
        if self.quorum == 0:
            revokes = [c for c in cands if self.blocks[c].kind == Kind.REVOKE]
            if len(revokes) == 1:
                return revokes[0], R_LOST
        return None, R_DISPUTED

    # ---------------------------------------------------------------- fixpoint
    def _run(self) -> None:
        guard = 0
        while self._dirty:
            key, from_index = self._dirty.popitem()
            self._refresh(self.devices[key], from_index)
            guard += 1
            assert guard < 10_000_000, "validator did not reach a fixpoint"

    def _refresh(self, d: _Device, from_index: int) -> None:
        self._refreshed.add(d.key)
        self._settle_main(d)
        if from_index < d.frontier:
            self._rewind(d, from_index)
        self._advance(d)
        self._offmain(d)
        # A revoke's credit is d's balance: re-price its claimers whenever d was looked at
        # (d's totals may also have moved before this refresh, by _recredit_claimers).
        for rid in d.revokes:
            self._recredit_claimers(rid)

    def _settle_main(self, d: _Device) -> None:
        """Re-decide forks and extend the main chain as far as it is decided."""
        for slot in sorted(d.fork_slots):
            if slot >= len(d.main):
                break
            chosen, _ = self._decide(d, slot, self._candidates(d, slot))
            if chosen != d.main[slot]:
                self._truncate(d, slot)
                break
        while True:
            slot = len(d.main)
            if slot == 0:
                d.account = None
                d.label = ""
            cands = self._candidates(d, slot)
            if not cands:
                break
            chosen, _ = self._decide(d, slot, cands)
            if chosen is None:
                break
            if slot == 0:
                ob = self.blocks[chosen]
                d.account = ob.account
                d.issuing = ob.account == self.genesis.issuer
                d.label = ob.label
            d.touch(slot)
            d.index[chosen] = slot
            d.main.append(chosen)
            d.cf.append(0)
            d.ci.append(0)
            d.sent.append(0)
        top = d.cert_top
        while top + 1 < len(d.main) and self.certified(d.main[top + 1]):
            top += 1
        for i in range(d.cert_top + 1, min(top + 1, d.frontier)):
            self._set(d.main[i], S_FINAL)
        d.cert_top = top

    def _truncate(self, d: _Device, slot: int) -> None:
        self._rewind(d, slot)
        for bid in d.main[slot:]:
            del d.index[bid]
        d.dropped.extend(d.main[slot:])
        d.touch(slot)
        del d.main[slot:], d.cf[slot:], d.ci[slot:], d.sent[slot:]
        d.cert_top = min(d.cert_top, slot - 1)
        d.tail_done = min(d.tail_done, slot)

    def _rewind(self, d: _Device, to: int) -> None:
        """Take blocks to..frontier-1 out of the valid prefix, to be evaluated again."""
        to = max(to, 0)
        if to < d.frontier:
            d.touch(to)
        for i in range(d.frontier - 1, to - 1, -1):
            d.tot_final -= d.cf[i]
            d.tot_incoming -= d.ci[i]
            d.tot_sent -= d.sent[i]
            d.cf[i] = d.ci[i] = d.sent[i] = 0
            b = self.blocks[d.main[i]]
            if b.kind == Kind.RECEIVE and d.claimed.get(b.claim) == i:
                del d.claimed[b.claim]
        d.frontier = min(d.frontier, to)

    def _advance(self, d: _Device) -> None:
        """Evaluate the main chain from the frontier on; stop at the first non-valid block."""
        n = len(d.main)
        while d.frontier < n:
            i = d.frontier
            st = self._evaluate(d, i)
            unchanged = self.status.get(d.main[i]) == st
            self._set(d.main[i], st)
            if st.state != VALID:
                inherited = Status(st.state, R_PREV)
                for j in range(max(i + 1, d.tail_done) if unchanged else i + 1, n):
                    self._set(d.main[j], inherited)
                d.tail_done = n
                return
            d.frontier = i + 1
        d.tail_done = n

    def _evaluate(self, d: _Device, i: int) -> Status:
        """Rules 1–4 for main-chain block i, every block before it being valid.

        On a valid result it books the block's credit or send into the running totals.
        """
        b = self.blocks[d.main[i]]
        final = i <= d.cert_top
        # Finality excuses rule 3 only (a replica may lack votes its voters saw); these
        # rules read nothing a replica can lack, so a certificate never overrides them.
        if i > 0 and self.blocks[d.main[i - 1]].kind == Kind.REVOKE:
            return Status(INVALID, R_AFTER_REVOKE)
        k = b.kind
        if k == Kind.ISSUE and not d.issuing:
            return Status(INVALID, R_ISSUE_NOT_ISSUER)
        if k == Kind.REVOKE and d.issuing:
            return Status(INVALID, R_REVOKE_ISSUER)
        if k in (Kind.SEND, Kind.ISSUE):
            if not (final or d.issuing):
                spendable = d.tot_final - d.tot_sent
                if spendable < b.amount:
                    if spendable + d.tot_incoming >= b.amount:
                        return Status(PENDING, R_FUNDS)
                    return Status(INVALID, R_OVERSPEND)
            d.sent[i] = b.amount
            d.touch(i)
            d.tot_sent += b.amount
        elif k == Kind.RECEIVE:
            st = self._check_claim(d, b, i)
            if st is not None:
                return st
            d.claimed[b.claim] = i
            cf, ci = self._credit(d, b)
            d.cf[i], d.ci[i] = cf, ci
            d.touch(i)
            d.tot_final += cf
            d.tot_incoming += ci
        if self.quorum == 0:
            return S_ACCEPTED
        return S_FINAL if final else S_VALID

    def _check_claim(self, d: _Device, r: Block, i: int) -> Status | None:
        """Rule 4, or None when the claim holds; finality never excuses a double claim."""
        s = self.blocks.get(r.claim)
        if s is None:
            if r.claim in self.votes:
                return Status(INVALID, R_NOT_ADDRESSED)
            self._waiting.add(r.claim, d.key)
            return Status(PENDING, R_CLAIM_MISSING)
        if s.kind not in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
            return Status(INVALID, R_NOT_ADDRESSED)
        if d.claimed.get(r.claim, i) < i:
            return Status(INVALID, R_DOUBLE_CLAIM)
        if s.to_device == d.key:
            if s.to_account != d.account:
                return Status(INVALID, R_NOT_ADDRESSED)
            return None
        if s.kind == Kind.REVOKE or s.to_account != d.account:
            return Status(INVALID, R_NOT_ADDRESSED)
        # A payment to a sibling x: claimable through a revoke of x naming d whose
        # chain below (x's blocks 0..s) does not claim it. Whether it holds depends only
        # on blocks present, never on statuses: the revoke's status prices the credit.
        self._routed.add((s.to_device, d.key), r.id)
        self._waiting.add(s.to_device, d.key)  # another revoke may route it
        waiting = found = False
        for rid in self._routes(s.to_device, d):
            below = self._below(rid, d.key)
            if below is None:
                waiting = True
            elif below is not False:
                if r.claim not in below:
                    return None
                found = True
        if waiting:
            return Status(PENDING, R_PREV)
        if found:
            return Status(INVALID, R_DOUBLE_CLAIM)
        return Status(PENDING, R_REVOKE_MISSING)

    def _routes(self, x_key: bytes, d: _Device) -> list[bytes]:
        """The revokes of device x that name d and are signed by d's account."""
        x = self.devices.get(x_key)
        if x is None:
            return []
        return [
            rid
            for rid in x.revokes
            if (rb := self.blocks[rid]).to_device == d.key and rb.account == d.account
        ]

    def _below(self, rid: bytes, waiter: bytes | None = None) -> frozenset[bytes] | bool | None:
        """What the chain below a revoke claims, once all of it is present (cached).

        None while a block of it is missing (``waiter`` is woken when it arrives);
        False when the revoke routes nothing: its chain is broken or its open is not
        signed by the revoke's account.
        """
        got = self._below_cache.get(rid)
        if got is None:
            got = self._below_new.get(rid)
        if got is None:
            row = self.tables.conn.execute("SELECT claims FROM below WHERE rid = ?",
                                           (rid,)).fetchone()
            if row is not None:
                raw = row[0]
                got = self._below_cache[rid] = False if raw is None else frozenset(
                    bytes(raw[i : i + 32]) for i in range(0, len(raw), 32))
        if got is not None:
            return got
        rb = self.blocks[rid]
        claims: set[bytes] = set()
        cur = rb
        out: frozenset[bytes] | bool
        while cur.seq:
            p = self.blocks.get(cur.prev)
            if p is None:
                if waiter is not None:
                    self._waiting.add(cur.prev, waiter)
                return None
            if p.device != cur.device or p.seq != cur.seq - 1:
                cur = rb
                break
            if p.kind == Kind.RECEIVE:
                claims.add(p.claim)
            cur = p
        out = frozenset(claims) if cur.seq == 0 and cur.account == rb.account else False
        self._below_new[rid] = out
        return out

    # ------------------------------------------------------------------ credits
    def _credit(self, d: _Device, r: Block) -> tuple[int, int]:
        """A valid receive's credit as (final, incoming) minor units."""
        s = self.blocks[r.claim]
        if s.kind == Kind.REVOKE:
            return self._revoke_credit(s)
        st = self.status.get(s.id)
        if st is None or st.state in (INVALID, CONFLICTED):
            return 0, 0
        send_final = st.final
        if s.to_device != d.key:
            # routed by a revoke: the best of the revokes that route it prices it
            best = 0
            for rid in self._routes(s.to_device, d):
                below = self._below(rid)
                rst = self.status.get(rid)
                if below is None or below is False or r.claim in below or rst is None:
                    continue
                if rst.state in (VALID, PENDING):
                    best = max(best, 2 if rst.final else 1)
            if best == 0:
                return 0, 0
            send_final = send_final and best == 2
        return (s.amount, 0) if send_final else (0, s.amount)

    def _revoke_credit(self, v: Block) -> tuple[int, int]:
        st = self.status.get(v.id)
        x = self.devices[v.device]
        if st is None or st.state in (INVALID, CONFLICTED) or v.id not in x.index:
            return 0, 0  # lost, invalid, or its chain below is missing: x's totals are not it
        balance_final = x.tot_final - x.tot_sent
        if st.final:
            return balance_final, x.tot_incoming
        return 0, balance_final + x.tot_incoming

    def _recredit_claimers(self, entry_id: bytes) -> None:
        """An entry's status or value changed: re-price the receives that claim it
        (for a revoke, also the receives it routes to its sibling)."""
        rids = set(self._claimers.get(entry_id))
        b = self.blocks.get(entry_id)
        if b is not None and b.kind == Kind.REVOKE:
            rids |= self._routed.get((b.device, b.to_device))
        for rid in rids:
            r = self.blocks[rid]
            e = self.devices[r.device]
            i = e.index.get(rid)
            if i is None:
                continue
            if i >= e.frontier:
                if i == e.frontier:
                    self._mark(e.key)
                continue
            cf, ci = self._credit(e, r)
            if (cf, ci) == (e.cf[i], e.ci[i]):
                continue
            decreased = cf < e.cf[i] or cf + ci < e.cf[i] + e.ci[i]
            e.tot_final += cf - e.cf[i]
            e.tot_incoming += ci - e.ci[i]
            e.cf[i], e.ci[i] = cf, ci
            e.touch(i)
            self._mark(e.key, i + 1 if decreased else 1 << 62)

    # ------------------------------------------------------------ off the chain
    def _offmain(self, d: _Device) -> None:
        """Statuses of d's blocks that are not on its main chain."""
        if len(d.block_ids) == len(d.main):
            return
        memo: dict[bytes, Status] = {}
        for bid in sorted(d.block_ids - d.index.keys(), key=lambda x: self.blocks[x].seq):
            self._set(bid, self._offmain_status(d, bid, memo))

    def _offmain_status(self, d: _Device, bid: bytes, memo: dict[bytes, Status]) -> Status:
        if bid in memo:
            return memo[bid]
        b = self.blocks[bid]
        st: Status
        if b.seq == 0:
            st = self._rejected(d, 0, bid)
        else:
            p = self.blocks.get(b.prev)
            if p is None:
                st = Status(PENDING, R_PREV)
            elif p.device != b.device or p.seq != b.seq - 1:
                st = Status(INVALID, R_BAD_PREV)
            elif b.kind == Kind.REVOKE and d.account is not None and b.account != d.account:
                st = Status(INVALID, R_REVOKE_ACCOUNT)
            elif p.id in d.index:
                pst = self.status[p.id]
                if pst.state != VALID:
                    st = Status(pst.state, R_PREV if pst.state != CONFLICTED else pst.reason)
                else:
                    st = self._rejected(d, b.seq, bid)
            else:
                pst = self._offmain_status(d, p.id, memo)
                st = pst if pst.state == CONFLICTED else Status(pst.state, R_PREV)
        memo[bid] = st
        return st

    def _rejected(self, d: _Device, slot: int, bid: bytes) -> Status:
        """The status of a candidate the main chain did not take at a slot."""
        if slot == 0 and d.account is None and len(d.roots) == 1:
            return Status(PENDING, R_PREV)
        cands = self._candidates(d, slot) if slot <= len(d.main) else []
        if bid not in cands:
            return Status(PENDING, R_PREV)
        _, why = self._decide(d, slot, cands)
        return Status(CONFLICTED, why or R_DISPUTED)

    def _set(self, bid: bytes, st: Status) -> None:
        old = self.status.get(bid)
        if old == st:
            return
        self.status[bid] = st
        b = self.blocks[bid]
        self._changes.append(StatusChange(bid, b.device, b.seq, b.kind, old, st))
        if b.kind in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
            self._recredit_claimers(bid)
        elif b.kind == Kind.RECEIVE:
            was = old is not None and old.state == VALID
            if (st.state == VALID) != was:
                claimed = self.blocks[b.claim]  # a receive is valid only with its claim here
                if st.state == VALID:
                    self._unclaimed.discard(claimed.to_device, claimed.id)
                elif not self._validly_claimed(claimed.id):
                    self._unclaimed.add(claimed.to_device, claimed.id)

    def _validly_claimed(self, entry_id: bytes) -> bool:
        """True when some valid receive claims the entry."""
        return any(self.status[r].state == VALID for r in self._claimers.get(entry_id)
                   if r in self.status)

    def _flush(self) -> None:
        """Write the batch: its rows with their derived state, every changed row and
        device, the indexes' changes, the digest buckets."""
        t = self.tables
        conn = t.conn
        for ix in t.indexes:
            ix.flush()
        booked: dict[bytes, tuple] = {}
        self.devices.flush(booked)
        opens = t.open_changes
        statuses = self.status.dirty
        covers = self.cover.dirty
        now = int(time.time())
        taken: set[int] = set()
        bits = t.item_bits
        items: dict[bytes, int | None] = {}
        fresh = t.fresh
        for e in [*(e for e in fresh.values() if e.kind != Kind.VOTE),
                  *(e for e in fresh.values() if e.kind == Kind.VOTE)]:
            client = item_client_id(e.id, bits)
            if client in taken or t.item_owner(client) is not None:
                items[e.id] = None
            else:
                taken.add(client)
                items[e.id] = client
        rows = []
        for e in fresh.values():
            st = statuses.pop(e.id, None)
            main, cf, ci, sent = booked.pop(e.id, (None, None, None, None))
            amount, peer, target = self._display(e)
            rows.append((
                e.id, e.raw, int(e.kind), t.ref(e.device), e.seq, amount, peer, target,
                items[e.id], *status_row(st), covers.pop(e.id, None), main, cf, ci, sent,
                opens.pop(e.id, None), now))
        _many(conn,
            "INSERT INTO entries(id, body, kind, dev, seq, amount, peer, target, item, "
            "state, reason, final, cover, main, cf, ci, sent, open, seen) "
            "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        _many(conn, "UPDATE entries SET state = ?, reason = ?, final = ? WHERE id = ?",
                         [(*status_row(st), bid) for bid, st in statuses.items()])
        _many(conn, "UPDATE entries SET cover = ? WHERE id = ?",
                         [(c, bid) for bid, c in covers.items()])
        _many(conn, "UPDATE entries SET main = ?, cf = ?, ci = ?, sent = ? WHERE id = ?",
                         [(*b, bid) for bid, b in booked.items()])
        _many(conn, "UPDATE entries SET open = ? WHERE id = ?",
                         [(o, bid) for bid, o in opens.items()])
        _many(conn, "INSERT OR REPLACE INTO below(rid, claims) VALUES(?, ?)",
                         [(rid, None if v is False else b"".join(sorted(v)))
                          for rid, v in self._below_new.items()])
        t.add_to_buckets(fresh)
        t.count += len(fresh)
        for e in fresh.values():
            t.keep(e)
        t.fresh = {}
        t.open_changes = {}
        self._below_cache.update(self._below_new)
        self._below_new = {}
        _trim(self._below_cache, SET_CACHE_MAX)
        self.status.trim()
        self.cover.trim()
        self.devices.trim()
        t.trim()

    def _display(self, e: Entry) -> tuple[int | None, int | None, bytes | None]:
        """A new row's amount, counterparty and target as history shows them: a
        receive shows what it claims and from whom, a revoke what it passes on."""
        t = self.tables
        if isinstance(e, Vote):
            return None, None, e.block_id
        if e.kind in (Kind.SEND, Kind.ISSUE):
            return e.amount, t.ref(e.to_device), None
        if e.kind == Kind.REVOKE:
            return self.revoke_value(e.id), t.ref(e.to_device), None
        if e.kind == Kind.RECEIVE:
            c = self.blocks.get(e.claim)
            if c is None or c.kind not in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
                return None, None, e.claim
            value = c.amount if c.kind != Kind.REVOKE else self.revoke_value(c.id)
            return value, t.ref(c.device), e.claim
        return None, None, None

    # -------------------------------------------------------------- invariants
    def check_invariants(self, devices: Iterable[bytes],
                         changes: Iterable[StatusChange] = ()) -> None:
        """Assert what DESIGN §3 promises, for the given devices and changed blocks
        (run after every batch when ``CHECK`` is on): no device but the issuing one
        spends below zero; the running totals are the sums of what the valid prefix
        booked, and each valid receive booked the credit the rules give its claim now;
        every valid or pending payment is claimed by a valid receive or open (in flight).
        Raises ``LedgerInvariantBroken`` naming the device and the entries."""
        for key in devices:
            d = self.devices[key]
            f = d.frontier
            where = f"device {key.hex()[:16]}"
            # Finality excuses rule 3 (a replica may lack credits the voters saw): only
            # a device whose valid prefix holds no certified send, and no revoke's
            # balance that such a send made negative, must stay above zero.
            excused = any(d.sent[: min(f, d.cert_top + 1)]) or any(c < 0 for c in d.cf[:f])
            if not d.issuing and d.tot_final - d.tot_sent < 0 and not excused:
                raise LedgerInvariantBroken(
                    f"{where}: spendable {d.tot_final - d.tot_sent} below zero at "
                    f"{d.main[f - 1].hex()[:16] if f else 'its open'}")
            sums = (sum(d.cf[:f]), sum(d.ci[:f]), sum(d.sent[:f]))
            if sums != (d.tot_final, d.tot_incoming, d.tot_sent):
                raise LedgerInvariantBroken(
                    f"{where}: totals {(d.tot_final, d.tot_incoming, d.tot_sent)} are not "
                    f"the sums {sums} of the {f} valid blocks")
            if any(d.cf[f:]) or any(d.ci[f:]) or any(d.sent[f:]):
                raise LedgerInvariantBroken(f"{where}: blocks past the frontier {f} booked")
            for i in range(min(d.batch_low, f), f):  # what this batch booked
                b = self.blocks[d.main[i]]
                if b.kind == Kind.RECEIVE and (d.cf[i], d.ci[i]) != self._credit(d, b):
                    raise LedgerInvariantBroken(
                        f"{where}: receive {b.id.hex()[:16]} booked {(d.cf[i], d.ci[i])}, "
                        f"its claim {b.claim.hex()[:16]} is worth {self._credit(d, b)}")
        for c in changes:
            if c.kind not in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
                continue
            b = self.blocks[c.block_id]
            claimed = self._validly_claimed(b.id)
            open_ = b.id in self._unclaimed.get(b.to_device)
            if claimed == open_:
                raise LedgerInvariantBroken(
                    f"payment {b.id.hex()[:16]} of device {b.device.hex()[:16]} is "
                    + ("claimed by a valid receive and still open" if claimed
                       else "neither claimed by a valid receive nor open"))

    # ----------------------------------------------------------------- queries
    def balance(self, device: bytes) -> Balance:
        """A device's balances (zero for an unknown device); see ``Balance``.

        What waits unclaimed at a device retired by a valid revoke is counted at the
        revoke's sibling, the one device that can claim it (DESIGN §4)."""
        moving, to_claim = self._passed_on(device) if self._revokes_to.get(device) else (0, 0)
        d = self.devices.get(device)
        if d is not None and self._revoked_head(d) is not None:
            return Balance(0, 0, moving, to_claim)  # a valid revoke passed it all on
        own_moving, own_to_claim = self._unclaimed_value(device)
        moving, to_claim = moving + own_moving, to_claim + own_to_claim
        if d is None:
            return Balance(0, 0, moving, to_claim)
        return Balance(d.tot_final - d.tot_sent, d.tot_incoming, moving, to_claim)

    def _revoked_head(self, d: _Device) -> Block | None:
        """The valid revoke that ends the device's main chain, or None."""
        if d.frontier:
            head = self.blocks[d.main[d.frontier - 1]]
            if head.kind == Kind.REVOKE:
                return head
        return None

    def _passed_on(self, device: bytes) -> tuple[int, int]:
        """(moving, to claim) waiting unclaimed at the devices whose valid revoke names
        this one: this device claims it."""
        moving = to_claim = 0
        for rid in self._revokes_to.get(device):
            x = self.devices[self.blocks[rid].device]
            head = self._revoked_head(x)
            if head is not None and head.id == rid:
                m, c = self._unclaimed_value(x.key)
                moving, to_claim = moving + m, to_claim + c
        return moving, to_claim

    def _unclaimed_value(self, device: bytes) -> tuple[int, int]:
        """(moving, to claim): what valid payments and revokes addressed to the device
        that no valid receive claims are worth, from its own account and from others.

        Only valid ones: a pending send is still in its sender's spendable balance."""
        moving = to_claim = 0
        d = self.devices.get(device)
        account = d.account if d is not None else None
        for pid in self._unclaimed.get(device):
            st = self.status.get(pid)
            if st is None or st.state != VALID:
                continue
            p = self.blocks[pid]
            if p.kind == Kind.REVOKE:
                moving += sum(self._revoke_credit(p))
                continue
            sender = self.devices.account_of(p.device)
            if account is not None and sender == account:
                moving += p.amount
            else:
                to_claim += p.amount
        return moving, to_claim

    def revoke_value(self, revoke_id: bytes) -> int:
        """What a revoke passes to its sibling (final and incoming parts together)."""
        return sum(self._revoke_credit(self.blocks[revoke_id]))

    def account_devices(self, account: bytes) -> list[bytes]:
        """The devices whose main open names this account, ordered by key."""
        rows = self.tables.conn.execute(
            "SELECT key FROM devices WHERE account = ? AND nblocks > 0", (account,))
        keys = {bytes(k) for (k,) in rows}
        keys.update(d.key for d in self.devices.loaded() if d.account == account)
        return sorted(k for k in keys if (d := self.devices.get(k)) and d.account == account)

    def payments_to(self, device: bytes, states: Iterable[str] | None = None) -> list[Block]:
        """The sends and issues addressed to the device (of these states, when given),
        read through the counterparty index: what it costs follows their number."""
        t = self.tables
        ids = t.ids_where("peer = ? AND kind IN (?, ?)",
                          (t.dev_refs.get(device, -1), int(Kind.SEND), int(Kind.ISSUE)))
        keep = set(states) if states is not None else None
        out = []
        for b in t.entries(list(ids)).values():
            st = self.status.get(b.id)
            if keep is None or (st is not None and st.state in keep):
                out.append(b)
        out.sort(key=lambda b: (b.device, b.seq))
        return out

    def payment_ids_to(self, device: bytes) -> list[bytes]:
        """The ids of the sends and issues addressed to the device (none parsed)."""
        t = self.tables
        return list(t.ids_where("peer = ? AND kind IN (?, ?)",
                                (t.dev_refs.get(device, -1), int(Kind.SEND), int(Kind.ISSUE))))

    def revoke_ids_naming(self, device: bytes) -> list[bytes]:
        """The ids of the revokes that name the device as their sibling."""
        return sorted(self._revokes_to.get(device))

    def top_block_ids(self, devices: Iterable[bytes]) -> list[bytes]:
        """For each device holding blocks, the id of a block at its highest slot (read
        from the tables; no chain loaded)."""
        t = self.tables
        out = []
        for d in devices:
            ref = t.dev_refs.get(d)
            row = None if ref is None else t.conn.execute(
                "SELECT id FROM entries WHERE dev = ? AND kind != ? ORDER BY seq DESC LIMIT 1",
                (ref, int(Kind.VOTE))).fetchone()
            if row is not None:
                out.append(bytes(row[0]))
        return out

    def votes_on(self, block_id: bytes) -> list[bytes]:
        """The ids of the votes held for a block (read through the vote index)."""
        return sorted(self._votes_for.get(block_id))

    def revokes_naming(self, device: bytes) -> list[Block]:
        """The revokes that name the device as the sibling to pass their balance to."""
        return sorted(self.tables.entries(self._revokes_to.get(device)).values(),
                      key=lambda b: (b.device, b.seq))

    def opened_devices(self) -> list[tuple[bytes, bytes, str]]:
        """(key, account, label) of every device with a main open (one read, no device
        loaded)."""
        rows = self.tables.conn.execute(
            "SELECT key, account, label FROM devices WHERE account IS NOT NULL AND nblocks > 0")
        return [(bytes(k), bytes(a), lbl or "") for k, a, lbl in rows]

    def account_balance(self, account: bytes) -> Balance:
        """The sum of the balances of the account's devices."""
        total = Balance(0, 0)
        for k in self.account_devices(account):
            total = total + self.balance(k)
        return total

    def chain(self, device: bytes) -> list[bytes]:
        """The device's main chain, open first."""
        d = self.devices.get(device)
        return list(d.main) if d else []

    def head(self, device: bytes) -> Block | None:
        """The last valid block of the device's main chain, the one to build on."""
        d = self.devices.get(device)
        if d is None or d.frontier == 0:
            return None
        return self.blocks[d.main[d.frontier - 1]]

    def tip(self, device: bytes) -> Block | None:
        """The last block of the device's main chain, valid or not."""
        d = self.devices.get(device)
        return self.blocks[d.main[-1]] if d and d.main else None

    def fraud_proofs(self) -> list[FraudProof]:
        """Every fork held: two or more signed blocks competing for one slot."""
        out: list[FraudProof] = []
        for key in self.forked_devices():
            out.extend(self._device_frauds(key))
        return out

    def forked_devices(self) -> list[bytes]:
        """The devices with two blocks or more at one slot (read from the tables)."""
        rows = self.tables.conn.execute("SELECT key FROM devices WHERE forks IS NOT NULL")
        keys = {bytes(k) for (k,) in rows}
        keys.update(d.key for d in self.devices.loaded() if d.fork_slots)
        return sorted(keys)

    def frauds_of(self, device: bytes) -> list[FraudProof]:
        """The fraud proofs held against one device, by slot."""
        return self._device_frauds(device)

    def _device_frauds(self, key: bytes) -> list[FraudProof]:
        d = self.devices.get(key)
        out: list[FraudProof] = []
        if d is not None:
            for slot in sorted(d.fork_slots):
                groups: list[list[bytes]] = []
                if slot == 0:
                    groups.append(list(d.roots))
                else:
                    seen: dict[bytes, list[bytes]] = defaultdict(list)
                    for bid in sorted(self._at_slot.get((d.key, slot - 1))):
                        kids = self._tree_children(d, bid)
                        if len(kids) > 1:
                            seen[bid] = kids
                    groups.extend(seen.values())
                for g in groups:
                    cert = sum(1 for c in g if self.certified(c))
                    out.append(FraudProof(d.key, slot, tuple(sorted(g)), cert >= 2))
        return out

    def unclaimed_to(self, device: bytes) -> list[Block]:
        """Valid or pending payments and revokes addressed to the device that its main
        chain does not claim.

        Read from the index of payments no valid receive claims; only at a revoked
        device can a sibling's receive have claimed one, so only there are all the
        payments to it read."""
        t = self.tables
        ref = t.dev_refs.get(device, -1)
        d = self.devices.get(device)
        ids = set(self._unclaimed.get(device))
        if d is not None and d.revokes:
            ids |= set(t.ids_where("peer = ? AND kind IN (?, ?, ?)", (
                ref, int(Kind.SEND), int(Kind.ISSUE), int(Kind.REVOKE))))
        out = []
        for b in t.entries(ids).values():
            st = self.status.get(b.id)
            if st is None or st.state not in (VALID, PENDING):
                continue
            if t.conn.execute("SELECT 1 FROM entries WHERE target = ? AND dev = ? AND main = 1 "
                              "AND kind = ?", (b.id, ref, int(Kind.RECEIVE))).fetchone():
                continue
            out.append(b)
        out.sort(key=lambda b: (b.device, b.seq))
        return out

    def votable(self, device: bytes, last_voted: tuple[int, bytes] | None) -> Block | None:
        """The witness rule (DESIGN §3): the block a witness may vote at a device, or None.

        ``last_voted`` is the witness's highest claimed slot at the device and the block
        it claimed there (None if none). The answer is the last valid block of the main
        chain when it extends that block; with a fraud proof at the device, only a revoke
        at a slot past ``last_voted``. The caller claims every slot the vote covers
        durably before the vote leaves it.
        """
        d = self.devices.get(device)
        if d is None or self.quorum == 0:
            return None
        last_slot = -1 if last_voted is None else last_voted[0]
        if last_voted is not None and (
            last_slot >= len(d.main) or d.main[last_slot] != last_voted[1]
        ):
            return None  # it voted another branch, or the chain below is missing
        if self.forked(device):
            return self._votable_revoke(d, last_slot)
        top = d.frontier - 1
        if top <= last_slot:
            return None
        return self.blocks[d.main[top]]

    def forked(self, device: bytes) -> bool:
        """True when the set holds a fraud proof against the device."""
        return any(p.device == device for p in self._device_frauds(device))

    def _votable_revoke(self, d: _Device, last_voted: int) -> Block | None:
        for rid in d.revokes:
            rb = self.blocks[rid]
            if rb.seq <= last_voted or rb.account != d.account:
                continue
            i = d.index.get(rb.prev)
            if i is not None and i < d.frontier and i == rb.seq - 1:
                return rb
        return None
