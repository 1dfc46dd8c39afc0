"""The durable store (DESIGN §6): SQLite through sqlite-utils, each entry's bytes once.

Tables:

- ``entries``: one row per entry (block or vote): its id, its signed bytes, and the
  columns derived from them that queries need — kind, device, seq, amount, counterparty —
  plus the derived status (state, reason, final) kept in step with the validator.
  ``seen`` is the local time the entry was first stored (what a till shows as "taken").
  ``claim`` is, for a receive, the id it claims (so history can tell which payments
  addressed to this wallet are still unclaimed).
- ``devices``: each device key once, with its account and its balances as last derived
  (spendable, incoming, moving, to claim), so ``balance`` answers without the ledger.
- ``meta``: small key/value records (the genesis, this wallet's keys' public halves).
- ``memos``: memos in the clear, by payment id: what this wallet wrote into its own
  sends, and what it opened of sends to it (a sealed memo opens only with the device
  key, so history shows what was opened when the key was unlocked).

Everything but ``body`` is derived and can be rebuilt from the bodies. Writes go in one
transaction per command (WAL, ``synchronous=FULL``): a crash at any instant leaves the
last committed state, and a command reports success only after its commit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from wallet.encoding import PAYMENT_KINDS, Entry, Kind, Vote, parse_entry
from wallet.ledger import (
    ACCEPTED_WORD,
    CONFLICTED,
    INVALID,
    PENDING,
    VALID,
    Balance,
    Status,
    StatusChange,
    status_word,
)

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 2
"""2: ``entries.claim``, ``devices.moving``/``to_claim``, ``memos``."""
CACHE_KIB = 64 << 10
STATE_CODES = {PENDING: 0, VALID: 1, INVALID: 2, CONFLICTED: 3}
STATE_NAMES = {v: k for k, v in STATE_CODES.items()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    ref INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    account BLOB,
    label TEXT,
    spendable INTEGER NOT NULL DEFAULT 0,
    incoming INTEGER NOT NULL DEFAULT 0,
    moving INTEGER NOT NULL DEFAULT 0,
    to_claim INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS entries (
    ref INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL,
    kind INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    amount INTEGER,
    peer INTEGER,
    state INTEGER,
    reason TEXT,
    final INTEGER,
    seen INTEGER NOT NULL,
    claim BLOB
);
CREATE INDEX IF NOT EXISTS entries_dev ON entries (dev, ref);
CREATE TABLE IF NOT EXISTS memos (id BLOB PRIMARY KEY, memo TEXT NOT NULL);
"""

# Indexes on columns that schema 1 lacked: made once the columns exist.
_INDEXES = """
CREATE INDEX IF NOT EXISTS entries_peer ON entries (peer, ref) WHERE peer IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_claim ON entries (claim) WHERE claim IS NOT NULL;
"""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One block as history shows it; amounts in minor units."""

    ref: int
    id: bytes
    kind: Kind
    device: bytes
    seq: int
    amount: int | None
    peer: bytes | None
    state: str
    reason: str
    final: bool
    seen: int
    witnessed: bool = True
    incoming: bool = False
    """True for a payment addressed to the devices shown, from outside them, that no
    valid receive of theirs claims (yet): what a merchant must see, refused ones too."""
    body: bytes = b""
    memo: str | None = None
    claim: bytes | None = None

    @property
    def status(self) -> str:
        """One word (``ledger.STATUS_WORDS``): final, valid, accepted, no witness, …"""
        return status_word(self.state, self.reason, self.final, self.witnessed)


class Store:
    """One network's entries and derived state in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        # Up to 64 MiB of page cache (allocated only as used): a bulk merge inserts ids in
        # random order into the id index, which thrashes SQLite's default 2 MiB cache.
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.conn = conn
        conn.executescript(_SCHEMA)
        self._migrate()
        conn.executescript(_INDEXES)
        self._dev_refs: dict[bytes, int] = {
            bytes(k): r for r, k in conn.execute("SELECT ref, key FROM devices")
        }
        self._balances: dict[bytes, Balance] = {}

    def _migrate(self) -> None:
        """Bring a schema-1 store up to date: add the new columns, fill ``claim``."""
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(devices)")}
        ecols = {r[1] for r in self.conn.execute("PRAGMA table_info(entries)")}
        if "moving" in cols and "claim" in ecols:
            return
        with self.transaction():
            for name in ("moving", "to_claim"):
                if name not in cols:
                    self.conn.execute(
                        f"ALTER TABLE devices ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")
            if "claim" not in ecols:
                self.conn.execute("ALTER TABLE entries ADD COLUMN claim BLOB")
                rows = self.conn.execute(
                    "SELECT ref, body FROM entries WHERE kind = ?", (int(Kind.RECEIVE),))
                self.conn.executemany(
                    "UPDATE entries SET claim = ? WHERE ref = ?",
                    [(parse_entry(bytes(b), verify=False).claim, r) for r, b in rows.fetchall()])

    @property
    def db(self) -> sqlite_utils.Database:
        """The sqlite-utils view of the connection. Imported on first use: importing
        sqlite-utils takes longer than the rest of a ``tally`` command's start."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def close(self) -> None:
        """Close the database."""
        self.conn.close()

    # --------------------------------------------------------------- meta
    def get_meta(self, key: str) -> bytes | None:
        """A meta record, or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def set_meta(self, key: str, value: bytes | str) -> None:
        """Write a meta record in its own transaction."""
        self.set_metas({key: value})

    def set_metas(self, records: dict[str, bytes | str]) -> None:
        """Write several meta records in one transaction."""
        with self.transaction():
            self._put_metas(records)

    def _put_metas(self, records: dict[str, bytes | str]) -> None:
        self.conn.executemany(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, v.encode() if isinstance(v, str) else v) for k, v in records.items()],
        )

    # ---------------------------------------------------------- transactions
    def transaction(self) -> _Txn:
        """A context manager: BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception."""
        return _Txn(self.conn)

    def _dev_ref(self, key: bytes) -> int:
        ref = self._dev_refs.get(key)
        if ref is None:
            cur = self.conn.execute("INSERT INTO devices(key) VALUES(?)", (key,))
            ref = self._dev_refs[key] = int(cur.lastrowid or 0)
        return ref

    def _reload_refs(self) -> None:
        self._dev_refs = {bytes(k): r for r, k in self.conn.execute("SELECT ref, key FROM devices")}
        self._balances.clear()

    def save(
        self,
        entries: Iterable[Entry],
        changes: Iterable[StatusChange],
        balances: dict[bytes, Balance] | None = None,
        accounts: dict[bytes, tuple[bytes | None, str]] | None = None,
        meta: dict[str, bytes | str] | None = None,
        claimed: dict[bytes, tuple[int | None, bytes]] | None = None,
        revoked: dict[bytes, int] | None = None,
    ) -> None:
        """Store new entries, status changes, balances (and meta records) in one transaction.

        ``claimed`` maps the ids that new receives claim to (amount, sender device), so a
        receive's row shows what it received and from whom; ``revoked`` maps new revokes
        to the balance each passes on, so its row shows that amount.
        """
        try:
            self._save(entries, changes, balances, accounts, meta or {}, claimed or {},
                       revoked or {})
        except BaseException:
            self._reload_refs()  # refs made inside the rolled-back transaction are gone
            raise

    def _save(
        self,
        entries: Iterable[Entry],
        changes: Iterable[StatusChange],
        balances: dict[bytes, Balance] | None,
        accounts: dict[bytes, tuple[bytes | None, str]] | None,
        meta: dict[str, bytes | str],
        claimed: dict[bytes, tuple[int | None, bytes]],
        revoked: dict[bytes, int],
    ) -> None:
        now = int(time.time())
        # A new entry is written with its latest status in the same row: one pass over
        # the id index rather than an insert and then an update per block.
        latest: dict[bytes, Status] = {}
        for c in changes:
            latest[c.block_id] = c.new
        pending: dict[bytes, Status] = {}
        with self.transaction():
            self._put_metas(meta)
            rows = []
            refs = self._dev_refs
            for e in entries:
                dev = refs.get(e.device) or self._dev_ref(e.device)
                state = reason = final = claim = None
                if isinstance(e, Vote):
                    peer = amount = None
                else:
                    claim = e.claim if e.kind == Kind.RECEIVE else None
                    to = e.to_device
                    amount = e.amount if e.kind in PAYMENT_KINDS else revoked.get(e.id)
                    if e.kind == Kind.RECEIVE and e.claim in claimed:
                        amount, to = claimed[e.claim]  # what it claims, and from whom
                    peer = (refs.get(to) or self._dev_ref(to)) if to else None
                    st = latest.pop(e.id, None)
                    if st is not None:
                        pending[e.id] = st
                        state, reason, final = (
                            STATE_CODES[st.state], st.reason or None, int(st.final)
                        )
                rows.append((e.id, e.raw, int(e.kind), dev, e.seq, amount, peer, state, reason,
                             final, now, claim))
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO entries(id, body, kind, dev, seq, amount, peer, state, "
                "reason, final, seen, claim) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if self.conn.total_changes - before != len(rows):
                latest.update(pending)  # some were already stored: update those rows too
            self.conn.executemany(
                "UPDATE entries SET state = ?, reason = ?, final = ? WHERE id = ?",
                [
                    (STATE_CODES[st.state], st.reason or None, int(st.final), bid)
                    for bid, st in latest.items()
                ],
            )
            for key, (account, label) in (accounts or {}).items():
                self._dev_ref(key)
                self.conn.execute(
                    "UPDATE devices SET account = ?, label = ? WHERE key = ?", (account, label, key)
                )
            if balances:
                todo = [(b.spendable, b.incoming, b.moving, b.to_claim, k)
                        for k, b in balances.items() if self._balances.get(k) != b]
                for k in balances:
                    self._dev_ref(k)
                self.conn.executemany(
                    "UPDATE devices SET spendable = ?, incoming = ?, moving = ?, to_claim = ? "
                    "WHERE key = ?", todo
                )
                self._balances.update(balances)

    # -------------------------------------------------------------- reading
    def count(self) -> int:
        """How many entries the store holds."""
        return self.conn.execute("SELECT count(*) FROM entries").fetchone()[0]

    def has(self, entry_id: bytes) -> bool:
        """True when the entry is stored."""
        return (
            self.conn.execute("SELECT 1 FROM entries WHERE id = ?", (entry_id,)).fetchone()
            is not None
        )

    def high_water(self) -> int:
        """The highest row number: a position for resume cursors."""
        return self.conn.execute("SELECT coalesce(max(ref), 0) FROM entries").fetchone()[0]

    def bodies_after(self, ref: int, batch: int = 5000) -> Iterator[list[bytes]]:
        """The signed bytes of rows after ``ref``, in storage order, in batches."""
        cur = self.conn.execute("SELECT body FROM entries WHERE ref > ? ORDER BY ref", (ref,))
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            yield [bytes(r[0]) for r in rows]

    def bodies(self, batch: int = 5000) -> Iterator[list[bytes]]:
        """Every entry's signed bytes in storage order, in batches."""
        cur = self.conn.execute("SELECT body FROM entries ORDER BY ref")
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            yield [bytes(r[0]) for r in rows]

    def load_entries(self) -> Iterator[Entry]:
        """Every stored entry, parsed without re-verifying its signature."""
        for batch in self.bodies():
            for body in batch:
                yield parse_entry(body, verify=False)

    def balances(self, devices: Iterable[bytes]) -> dict[bytes, Balance]:
        """The stored balances of the given devices (zero for unknown ones)."""
        out = {}
        for k in devices:
            row = self.conn.execute(
                "SELECT spendable, incoming, moving, to_claim FROM devices WHERE key = ?", (k,)
            ).fetchone()
            out[k] = Balance(*row) if row else Balance(0, 0)
        return out

    def account_devices(self, account: bytes) -> list[tuple[bytes, str, Balance]]:
        """The account's known devices with their labels and stored balances."""
        rows = self.conn.execute(
            "SELECT key, label, spendable, incoming, moving, to_claim FROM devices "
            "WHERE account = ? ORDER BY key",
            (account,),
        )
        return [(bytes(k), lbl or "", Balance(s, i, m, c)) for k, lbl, s, i, m, c in rows]

    # --------------------------------------------------------------- memos
    def put_memo(self, payment_id: bytes, memo: str) -> None:
        """Remember a payment's memo in the clear (written or opened by this wallet)."""
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO memos(id, memo) VALUES(?, ?)",
                              (payment_id, memo))

    def memos(self, payment_ids: Iterable[bytes]) -> dict[bytes, str]:
        """The memos known for these payments."""
        ids = list(payment_ids)
        if not ids:
            return {}
        rows = self.conn.execute(
            f"SELECT id, memo FROM memos WHERE id IN ({','.join('?' * len(ids))})", ids)
        return {bytes(i): m for i, m in rows}

    def history(
        self,
        devices: Iterable[bytes],
        *,
        limit: int = 50,
        before: int | None = None,
        status: str | None = None,
        kinds: Iterable[Kind] | None = None,
        witnessed: bool = True,
    ) -> list[HistoryRow]:
        """Blocks of the given devices, and payments to them from others that none of
        their valid receives claims, newest first, ``limit`` at a time.

        Page with ``before`` (the ``ref`` of the last row of the previous page); filter
        with ``status``: one word of ``STATUS_FILTERS``. ``witnessed`` is False on a
        network with no witnesses (q = 0), where valid blocks read "accepted, no witness".
        """
        refs = [self._dev_refs[k] for k in devices if k in self._dev_refs]
        if not refs:
            return []
        marks = ",".join("?" * len(refs))
        payments = ",".join(str(int(k)) for k in (Kind.SEND, Kind.ISSUE, Kind.REVOKE))
        incoming = (
            f"(e.peer IN ({marks}) AND e.kind IN ({payments}) AND e.dev NOT IN ({marks}) "
            "AND NOT EXISTS (SELECT 1 FROM entries r WHERE r.claim = e.id AND r.state = 1 "
            f"AND r.dev IN ({marks})))"
        )
        where = [f"(e.dev IN ({marks}) OR {incoming})", "e.kind != ?"]
        args: list = [*refs, *refs, *refs, *refs, int(Kind.VOTE)]
        if before is not None:
            where.append("e.ref < ?")
            args.append(before)
        if kinds:
            ks = [int(k) for k in kinds]
            where.append(f"e.kind IN ({','.join('?' * len(ks))})")
            args += ks
        if status:
            where.append(status_sql(status, witnessed))
        sql = (
            "SELECT e.ref, e.id, e.kind, d.key, e.seq, e.amount, p.key, e.state, e.reason, "
            f"e.final, e.seen, e.body, e.claim, e.dev NOT IN ({marks}) "
            "FROM entries e JOIN devices d ON d.ref = e.dev "
            "LEFT JOIN devices p ON p.ref = e.peer "
            f"WHERE {' AND '.join(where)} ORDER BY e.ref DESC LIMIT ?"
        )
        args = [*refs, *args, limit]
        rows = [
            HistoryRow(
                ref, bytes(i), Kind(k), bytes(dk), seq, amt,
                bytes(pk) if pk is not None else None,
                STATE_NAMES.get(st, PENDING) if st is not None else PENDING,
                reason or "", bool(fin), seen, witnessed, bool(inc), bytes(body),
                None, bytes(claim) if claim is not None else None,
            )
            for ref, i, k, dk, seq, amt, pk, st, reason, fin, seen, body, claim, inc
            in self.conn.execute(sql, args)
        ]
        memos = self.memos({r.claim or r.id for r in rows})
        return [replace(r, memo=memos.get(r.claim or r.id)) for r in rows]

    def bodies_of(self, ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The signed bytes of the given stored entries, by id."""
        out = {}
        for i in ids:
            row = self.conn.execute("SELECT body FROM entries WHERE id = ?", (i,)).fetchone()
            if row:
                out[i] = bytes(row[0])
        return out

    def integrity_check(self) -> str:
        """SQLite's own integrity check: ``ok`` when the file is sound."""
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (for measuring its size)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


_STATUS_SQL = {
    "final": "e.state = 1 AND e.final = 1",
    "valid": "e.state = 1 AND e.final = 0",
    "pending": "(e.state = 0 OR e.state IS NULL)",
    "invalid": "e.state = 2",
    "lost": "e.state = 3 AND e.reason = 'lost'",
    "disputed": "e.state = 3 AND e.reason != 'lost'",
    # groups of words
    "not-final": "NOT (e.state = 1 AND e.final = 1)",
    "conflicted": "e.state = 3",
}
ACCEPTED_FILTER = "accepted"
STATUS_FILTERS = (*_STATUS_SQL, ACCEPTED_FILTER)
"""What ``history --status`` takes: each status word (``accepted`` for "accepted, no
witness"), and two groups: ``not-final`` and ``conflicted`` (lost or disputed)."""
_NOTHING = "0"


def status_sql(word: str, witnessed: bool) -> str:
    """The SQL condition on ``entries e`` that selects exactly the rows that read as
    ``word`` (``STATUS_FILTERS``); on a network with no witnesses valid rows read
    "accepted, no witness", never final or valid."""
    if word in (ACCEPTED_FILTER, ACCEPTED_WORD):
        return _NOTHING if witnessed else "e.state = 1"
    if word not in _STATUS_SQL:
        raise ValueError(f"unknown status filter {word!r}")
    if not witnessed and word in ("final", "valid"):
        return _NOTHING
    if not witnessed and word == "not-final":
        return "1"
    return _STATUS_SQL[word]


class _Txn:
    """BEGIN IMMEDIATE … COMMIT; ROLLBACK when the body raises."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
