"""The durable store (DESIGN §6): one network's entries and derived state in one SQLite file.

The entries and everything the rules derive from them (statuses, main chains, running
totals, the claim and vote indexes) live in the tables of ``wallet.ledger_tables``,
written by the ``Ledger`` in the same transaction as the entries. Beside them:

- ``meta``: small key/value records (the genesis, this wallet's keys' public halves,
  ``schema`` = ``SCHEMA_VERSION``).
- ``memos``: memos in the clear, by payment id: what this wallet wrote into its own
  sends, and what it opened of sends to it (a sealed memo opens only with the device
  key, so history shows what was opened when the key was unlocked).

``entries.seen`` is the local time the entry was first stored (what a till shows as
"taken"). Writes go in one transaction per command (WAL, ``synchronous=FULL``): a crash
at any instant leaves the last committed state, and a command reports success only after
its commit. A store of an older schema is rebuilt from its bodies when opened
(``needs_rebuild``, ``Wallet.open``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from wallet.encoding import Entry, Kind, parse_entry
from wallet.ledger import (
    ACCEPTED_WORD,
    CONFLICTED,
    INVALID,
    PENDING,
    STATE_NAMES,
    VALID,
    status_word,
)
from wallet.ledger_tables import LedgerTables, transaction
from wallet.takings import SCHEMA as TAKINGS_SCHEMA
from wallet.takings import add_status_columns as takings_add_status
from wallet.takings import refresh_statuses as takings_refresh_statuses

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 3
"""3: the ledger's derived state in tables (``wallet.ledger_tables``); 2: ``claim``,
balances by device, ``memos``; 1: entries and statuses."""
CACHE_KIB = 64 << 10
"""SQLite's page cache, in KiB (allocated only as used)."""
OLD_SUFFIX = "_v2"
"""Tables of an older schema are renamed with this suffix until the rebuild copies them."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS memos (id BLOB PRIMARY KEY, memo TEXT NOT NULL);
""" + TAKINGS_SCHEMA


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
    credit: str = ""
    """For a receive: where its credit stands, by the claimed payment's status
    (DESIGN §3 rule 4): ``final``, ``incoming`` (not final yet) or ``refused``
    (conflicted or invalid), and with no witnesses (q = 0) ``accepted`` where the
    payment is valid; empty for other kinds or a claim not held."""

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
        takings_add_status(conn)
        self.needs_rebuild = self._set_old_aside()
        self.tables = LedgerTables(conn)
        """The ledger's tables (the entries and their derived state)."""
        if self.get_meta("schema") is None and not self.needs_rebuild:
            self.set_meta("schema", str(SCHEMA_VERSION))

    def _set_old_aside(self) -> bool:
        """An older store (schema 1 or 2): rename its entries and devices out of the
        way; ``rebuild_from_old`` refills the new tables from them. True when it did."""
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(entries)")}
        if not cols or "target" in cols:
            return bool(self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = ?", ("entries" + OLD_SUFFIX,)
            ).fetchone())
        with self.transaction():
            for t in ("entries", "devices"):
                self.conn.execute(f"ALTER TABLE {t} RENAME TO {t}{OLD_SUFFIX}")
            for (name,) in self.conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN "
                    f"('entries{OLD_SUFFIX}', 'devices{OLD_SUFFIX}') AND sql IS NOT NULL"
            ).fetchall():
                self.conn.execute(f"DROP INDEX {name}")
        return True

    def old_bodies(self, batch: int = 5000) -> Iterator[list[bytes]]:
        """The bodies of an older store set aside (``needs_rebuild``), in storage order."""
        cur = self.conn.execute(f"SELECT body FROM entries{OLD_SUFFIX} ORDER BY ref")
        while rows := cur.fetchmany(batch):
            yield [bytes(r[0]) for r in rows]

    def finish_rebuild(self) -> None:
        """After the old bodies went through the ledger: keep their first-seen times
        and drop the old tables (in the caller's transaction)."""
        self.conn.execute(
            f"UPDATE entries SET seen = (SELECT o.seen FROM entries{OLD_SUFFIX} o "
            "WHERE o.id = entries.id) WHERE id IN (SELECT id FROM entries" + OLD_SUFFIX + ")")
        takings_refresh_statuses(self.conn)  # the statuses were computed anew
        self.conn.execute(f"DROP TABLE entries{OLD_SUFFIX}")
        self.conn.execute(f"DROP TABLE devices{OLD_SUFFIX}")
        self._put_metas({"schema": str(SCHEMA_VERSION)})
        self.needs_rebuild = False

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
        """Write several meta records in one transaction (the caller's, if open)."""
        with self.transaction():
            self._put_metas(records)

    def _put_metas(self, records: dict[str, bytes | str]) -> None:
        self.conn.executemany(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, v.encode() if isinstance(v, str) else v) for k, v in records.items()],
        )

    # ---------------------------------------------------------- transactions
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception; a savepoint inside one."""
        return transaction(self.conn)

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
        return self.tables.high_water()

    def bodies_after(self, ref: int, batch: int = 5000) -> Iterator[list[bytes]]:
        """The signed bytes of rows after ``ref``, in storage order, in batches."""
        return self.tables.bodies_after(ref, batch)

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

    def account_labels(self, account: bytes) -> list[tuple[bytes, str]]:
        """The account's devices (those whose main open names it) with their labels."""
        rows = self.conn.execute(
            "SELECT key, label FROM devices WHERE account = ? AND nblocks > 0 ORDER BY key",
            (account,))
        return [(bytes(k), lbl or "") for k, lbl in rows]

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
        peers: Iterable[bytes] | None = None,
        witnessed: bool = True,
    ) -> list[HistoryRow]:
        """Blocks of the given devices, and payments to them from others that none of
        their valid receives claims, newest first, ``limit`` at a time.

        Page with ``before`` (the ``ref`` of the last row of the previous page); filter
        with ``status``: one word of ``STATUS_FILTERS``; with ``kinds``; with ``peers``,
        the counterparty devices (a row is kept when it pays or claims from one of them,
        or one of them is its author). ``witnessed`` is False on a
        network with no witnesses (q = 0), where valid blocks read "accepted, no witness".
        """
        dev_refs = self.tables.dev_refs
        refs = [dev_refs[k] for k in devices if k in dev_refs]
        if not refs:
            return []
        marks = ",".join("?" * len(refs))
        payments = ",".join(str(int(k)) for k in (Kind.SEND, Kind.ISSUE, Kind.REVOKE))
        incoming = (
            f"(e.peer IN ({marks}) AND e.kind IN ({payments}) AND e.dev NOT IN ({marks}) "
            f"AND NOT EXISTS (SELECT 1 FROM entries r WHERE r.target = e.id AND r.kind = "
            f"{int(Kind.RECEIVE)} AND r.state = 1 AND r.dev IN ({marks})))"
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
        if peers is not None:
            peer_refs = [dev_refs[k] for k in peers if k in dev_refs]
            if not peer_refs:
                return []
            pm = ",".join("?" * len(peer_refs))
            where.append(f"(e.peer IN ({pm}) OR e.dev IN ({pm}))")
            args += peer_refs + peer_refs
        if status:
            where.append(status_sql(status, witnessed))
        sql = (
            "SELECT e.ref, e.id, e.kind, d.key, e.seq, e.amount, p.key, e.state, e.reason, "
            f"e.final, e.seen, e.body, e.target, e.dev NOT IN ({marks}), "
            "c.amount, c.state, c.final "
            "FROM entries e JOIN devices d ON d.ref = e.dev "
            "LEFT JOIN devices p ON p.ref = e.peer "
            f"LEFT JOIN entries c ON c.id = e.target AND e.kind = {int(Kind.RECEIVE)} "
            f"WHERE {' AND '.join(where)} ORDER BY e.ref DESC LIMIT ?"
        )
        args = [*refs, *args, limit]
        rows = [
            HistoryRow(
                ref, bytes(i), Kind(k), bytes(dk), seq,
                amt if amt is not None or k != Kind.RECEIVE else c_amt,
                bytes(pk) if pk is not None else None,
                STATE_NAMES.get(st, PENDING) if st is not None else PENDING,
                reason or "", bool(fin), seen, witnessed, bool(inc), bytes(body),
                None, bytes(claim) if claim is not None else None,
                _credit(k, c_st, c_fin, witnessed),
            )
            for ref, i, k, dk, seq, amt, pk, st, reason, fin, seen, body, claim, inc,
            c_amt, c_st, c_fin in self.conn.execute(sql, args)
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


def _credit(kind: int, claimed_state: int | None, claimed_final: int | None,
            witnessed: bool) -> str:
    """Where a receive's credit stands, from the status of the payment it claims."""
    if kind != Kind.RECEIVE or claimed_state is None:
        return ""
    state = STATE_NAMES.get(claimed_state, PENDING)
    if state in (CONFLICTED, INVALID):
        return "refused"
    if not witnessed:
        return "accepted" if state == VALID else "incoming"
    return "final" if claimed_final else "incoming"


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


