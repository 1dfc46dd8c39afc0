"""The durable store (DESIGN §6): SQLite through sqlite-utils, each entry's bytes once.

Tables:

- ``entries``: one row per entry (block or vote): its id, its signed bytes, and the
  columns derived from them that queries need — kind, device, seq, amount, counterparty —
  plus the derived status (state, reason, final) kept in step with the validator.
  ``seen`` is the local time the entry was first stored (what a till shows as "taken").
- ``devices``: each device key once, with its account and its balances as last derived,
  so ``balance`` answers without rebuilding the ledger.
- ``meta``: small key/value records (the genesis, this wallet's keys' public halves).

Everything but ``body`` is derived and can be rebuilt from the bodies. Writes go in one
transaction per command (WAL, ``synchronous=FULL``): a crash at any instant leaves the
last committed state, and a command reports success only after its commit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wallet.encoding import PAYMENT_KINDS, Entry, Kind, Vote, parse_entry
from wallet.ledger import CONFLICTED, INVALID, PENDING, VALID, Balance, Status, StatusChange

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 1
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
    incoming INTEGER NOT NULL DEFAULT 0
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
    seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_dev ON entries (dev, ref);
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

    @property
    def status(self) -> str:
        """One word: final, valid, pending, invalid, lost or disputed."""
        if self.state == VALID:
            return "final" if self.final else "valid"
        if self.state == CONFLICTED:
            return "lost" if self.reason == "lost" else "disputed"
        return self.state


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
        self._dev_refs: dict[bytes, int] = {
            bytes(k): r for r, k in conn.execute("SELECT ref, key FROM devices")
        }
        self._balances: dict[bytes, Balance] = {}

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
    ) -> None:
        """Store new entries, status changes, balances (and meta records) in one transaction.

        ``claimed`` maps the ids that new receives claim to (amount, sender device), so a
        receive's row shows what it received and from whom.
        """
        try:
            self._save(entries, changes, balances, accounts, meta or {}, claimed or {})
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
                state = reason = final = None
                if isinstance(e, Vote):
                    peer = amount = None
                else:
                    to = e.to_device
                    amount = e.amount if e.kind in PAYMENT_KINDS else None
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
                             final, now))
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO entries(id, body, kind, dev, seq, amount, peer, state, "
                "reason, final, seen) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                todo = [(b.spendable, b.incoming, k) for k, b in balances.items()
                        if self._balances.get(k) != b]
                for k in balances:
                    self._dev_ref(k)
                self.conn.executemany(
                    "UPDATE devices SET spendable = ?, incoming = ? WHERE key = ?", todo
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

    def bodies_by_id(self, ids: Iterable[bytes]) -> list[bytes]:
        """The signed bytes of the given entries that are stored."""
        out = []
        for i in ids:
            row = self.conn.execute("SELECT body FROM entries WHERE id = ?", (i,)).fetchone()
            if row:
                out.append(bytes(row[0]))
        return out

    def balances(self, devices: Iterable[bytes]) -> dict[bytes, Balance]:
        """The stored balances of the given devices (zero for unknown ones)."""
        out = {}
        for k in devices:
            row = self.conn.execute(
                "SELECT spendable, incoming FROM devices WHERE key = ?", (k,)
            ).fetchone()
            out[k] = Balance(row[0], row[1]) if row else Balance(0, 0)
        return out

    def account_devices(self, account: bytes) -> list[tuple[bytes, str, Balance]]:
        """The account's known devices with their labels and stored balances."""
        rows = self.conn.execute(
            "SELECT key, label, spendable, incoming FROM devices WHERE account = ? ORDER BY key",
            (account,),
        )
        return [(bytes(k), lbl or "", Balance(s, i)) for k, lbl, s, i in rows]

    def history(
        self,
        devices: Iterable[bytes],
        *,
        limit: int = 50,
        before: int | None = None,
        status: str | None = None,
        kinds: Iterable[Kind] | None = None,
    ) -> list[HistoryRow]:
        """Blocks of the given devices, newest first, ``limit`` at a time.

        Page with ``before`` (the ``ref`` of the last row of the previous page); filter
        with ``status`` (final, valid, pending, invalid, lost, disputed, conflicted).
        """
        refs = [self._dev_refs[k] for k in devices if k in self._dev_refs]
        if not refs:
            return []
        where = [f"e.dev IN ({','.join('?' * len(refs))})", "e.kind != ?"]
        args: list = [*refs, int(Kind.VOTE)]
        if before is not None:
            where.append("e.ref < ?")
            args.append(before)
        if kinds:
            ks = [int(k) for k in kinds]
            where.append(f"e.kind IN ({','.join('?' * len(ks))})")
            args += ks
        if status:
            where.append(_STATUS_SQL[status])
        sql = (
            "SELECT e.ref, e.id, e.kind, d.key, e.seq, e.amount, p.key, e.state, e.reason, "
            "e.final, e.seen FROM entries e JOIN devices d ON d.ref = e.dev "
            "LEFT JOIN devices p ON p.ref = e.peer "
            f"WHERE {' AND '.join(where)} ORDER BY e.ref DESC LIMIT ?"
        )
        args.append(limit)
        return [
            HistoryRow(
                ref,
                bytes(i),
                Kind(k),
                bytes(dk),
                seq,
                amt,
                bytes(pk) if pk is not None else None,
                STATE_NAMES.get(st, PENDING) if st is not None else PENDING,
                reason or "",
                bool(fin),
                seen,
            )
            for ref, i, k, dk, seq, amt, pk, st, reason, fin, seen in self.conn.execute(sql, args)
        ]

    def integrity_check(self) -> str:
        """SQLite's own integrity check: ``ok`` when the file is sound."""
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (for measuring its size)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


_STATUS_SQL = {
    "final": "e.state = 1 AND e.final = 1",
    "valid": "e.state = 1",
    "pending": "(e.state = 0 OR e.state IS NULL)",
    "invalid": "e.state = 2",
    "conflicted": "e.state = 3",
    "lost": "e.state = 3 AND e.reason = 'lost'",
    "disputed": "e.state = 3 AND e.reason != 'lost'",
}
STATUS_FILTERS = tuple(_STATUS_SQL)


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
