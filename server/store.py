"""What the relay must keep (DESIGN §7): entries, genesis records, witness claims, quotas.

``RelayStore`` is the interface; ``SqliteRelayStore`` keeps it all in one SQLite file.
It is written so that PostgreSQL can implement it later: every write is idempotent by
id, claims sit under a unique key (network, device, slot), and every method is one
transaction -- or, between ``begin_group`` and ``commit_group``, one savepoint of a
group commit: the relay gathers the writes of one event-loop pass and makes them durable
with one commit (one fsync), and only then acknowledges them. Positions (``pos``) are
the store's insertion order; the relay hands them out in resume cursors, prefixed with
the store's identity (``store_id``), and only durable ones (``high_water``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.errors import QuotaExceeded, StoreError
from wallet.witness import sqlite_claim, sqlite_last_claim

SCHEMA_VERSION = 1
CHUNK_ENTRIES = 5_000
CHECKPOINT_EVERY_S = 1.0

_SCHEMA_V1 = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS networks (network BLOB PRIMARY KEY, genesis BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (pos INTEGER PRIMARY KEY AUTOINCREMENT, "
    "network BLOB NOT NULL, id BLOB NOT NULL, body BLOB NOT NULL, UNIQUE (network, id))",
    "CREATE INDEX IF NOT EXISTS entries_by_network ON entries (network, pos)",
    "CREATE TABLE IF NOT EXISTS claims (network BLOB NOT NULL, device BLOB NOT NULL, "
    "slot INTEGER NOT NULL, block BLOB NOT NULL, PRIMARY KEY (network, device, slot))",
    "CREATE TABLE IF NOT EXISTS quota (network BLOB NOT NULL, device BLOB NOT NULL, "
    "day TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (network, device, day))",
]


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to store: its id, its signed bytes, and the device it counts against
    (a block's device; empty for a vote, which no device's quota pays for)."""

    id: bytes
    body: bytes
    device: bytes = b""


class RelayStore(Protocol):
    """The relay's durable state; also a ``wallet.witness.ClaimTable``."""

    store_id: bytes

    def genesis_records(self) -> list[bytes]:
        """The signed genesis of every network served before."""

    def add_network(self, genesis: bytes, network: bytes) -> None:
        """Remember a network (idempotent)."""

    def add_entries(
        self, network: bytes, entries: list[NewEntry], *, day: str, quota: int | None
    ) -> None:
        """Store new entries in one transaction, counting blocks against their device's
        quota for ``day``; raise ``QuotaExceeded`` (nothing stored) when one goes over."""

    def begin_group(self) -> None:
        """Writes from now until ``commit_group`` are one transaction (idempotent)."""

    def commit_group(self) -> None:
        """Make the group's writes durable; ``high_water`` moves only now."""

    def entries(self, network: bytes) -> Iterator[list[bytes]]:
        """Every entry of the network in storage order, in chunks."""

    def bodies_after(self, network: bytes, pos: int) -> Iterator[list[bytes]]:
        """The entries of the network stored after position ``pos``, in chunks."""

    def high_water(self) -> int:
        """The last durable position (0 when empty): what cursors may name."""

    def count(self, network: bytes) -> int:
        """How many entries of the network are stored."""

    def last(self, network: bytes, device: bytes) -> tuple[int, bytes] | None:
        """The highest claimed slot at the device and its block id, or None."""

    def claim(self, network: bytes, device: bytes, slots: list[tuple[int, bytes]]) -> bool:
        """Claim all the slots atomically; False (and nothing claimed) if one is taken."""

    def claims(self, network: bytes) -> list[tuple[bytes, int, bytes]]:
        """The highest claim at each device: (device, slot, block id)."""

    def get_meta(self, key: str) -> bytes | None:
        """A small value the relay keeps (a peer's cursor, say), or None."""

    def set_meta(self, key: str, value: bytes) -> None:
        """Keep a small value under ``key``."""

    def close(self) -> None:
        """Release the store."""


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the relay database {path}: {exc}") from exc
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database (0 when it has none yet)."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(path: Path | str) -> tuple[int, int]:
    """Create or upgrade the schema of the database at ``path``: (version before, after)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise StoreError(f"cannot create the relay database {path}: "
                         f"directory {path.parent} does not exist")
    conn = _connect(path)
    try:
        before = schema_version(conn)
        if before > SCHEMA_VERSION:
            raise StoreError(f"the relay database {path} has schema version {before}, newer "
                             f"than this tally-relay ({SCHEMA_VERSION}); upgrade tally-relay")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in _SCHEMA_V1:
                conn.execute(sql)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                         (SCHEMA_VERSION,))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (os.urandom(16),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"cannot migrate the relay database {path}: {exc}") from exc
    finally:
        conn.close()
    return before, SCHEMA_VERSION


class SqliteRelayStore:
    """A ``RelayStore`` in one SQLite file (WAL, ``synchronous=FULL``: a commit that
    returned survives a crash of the process or the machine)."""

    def __init__(self, path: Path | str, *, create: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"no relay database at {self.path}: "
                                 f"run `tally-relay migrate --db {self.path}` first")
            migrate(self.path)
        self.conn = _connect(self.path)
        try:
            version = schema_version(self.conn)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path} is not a relay database: {exc}") from exc
        if version != SCHEMA_VERSION:
            self.conn.close()
            raise StoreError(f"the relay database {self.path} has schema version {version}, "
                             f"this tally-relay needs {SCHEMA_VERSION}: run "
                             f"`tally-relay migrate --db {self.path}`")
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        self.store_id: bytes = bytes(row[0])
        self.in_group = False
        self._durable = self._top()
        # Commits never checkpoint the WAL themselves (a checkpoint copies and fsyncs
        # the database file: tens of milliseconds a commit would wait): a thread with
        # its own connection does it in the background, without blocking writers.
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True,
                                              name="relay-wal-checkpoint")
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop_checkpoints.wait(CHECKPOINT_EVERY_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    continue  # busy or locked: the next round tries again
        finally:
            conn.close()

    # ----------------------------------------------------------- group commit
    def begin_group(self) -> None:
        """Writes from now until ``commit_group`` are one transaction (idempotent)."""
        if not self.in_group:
            self.conn.execute("BEGIN IMMEDIATE")
            self.in_group = True

    def commit_group(self) -> None:
        """Make the group's writes durable (one fsync); ``high_water`` moves only now.

        On failure the group is rolled back and the error raised: what it held was never
        acknowledged, and the relay must stop (its memory holds entries the disk lacks).
        """
        if not self.in_group:
            return
        self.in_group = False
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self._durable = self._top()

    def _top(self) -> int:
        return self.conn.execute("SELECT coalesce(max(pos), 0) FROM entries").fetchone()[0]

    # -------------------------------------------------------------- networks
    def genesis_records(self) -> list[bytes]:
        """The signed genesis of every network served before."""
        return [bytes(r[0]) for r in self.conn.execute("SELECT genesis FROM networks")]

    def add_network(self, genesis: bytes, network: bytes) -> None:
        """Remember a network (idempotent)."""
        self.conn.execute("INSERT OR IGNORE INTO networks VALUES (?, ?)", (network, genesis))

    # --------------------------------------------------------------- entries
    def add_entries(
        self, network: bytes, entries: list[NewEntry], *, day: str, quota: int | None
    ) -> None:
        """Store new entries in one transaction, counting blocks against their device's
        quota for ``day``; raise ``QuotaExceeded`` (nothing stored) when one goes over."""
        per_device: dict[bytes, int] = {}
        for e in entries:
            if e.device:
                per_device[e.device] = per_device.get(e.device, 0) + 1
        c = self.conn
        grouped = self.in_group
        c.execute("SAVEPOINT add_entries" if grouped else "BEGIN IMMEDIATE")
        try:
            for device, n in per_device.items():
                row = c.execute(
                    "SELECT count FROM quota WHERE network = ? AND device = ? AND day = ?",
                    (network, device, day),
                ).fetchone()
                used = row[0] if row else 0
                if quota is not None and used + n > quota:
                    raise QuotaExceeded(device, used, n, quota)
                c.execute("INSERT OR REPLACE INTO quota VALUES (?, ?, ?, ?)",
                          (network, device, day, used + n))
            c.executemany(
                "INSERT OR IGNORE INTO entries (network, id, body) VALUES (?, ?, ?)",
                [(network, e.id, e.body) for e in entries],
            )
            c.execute("DELETE FROM quota WHERE day < ?", (day,))
            c.execute("RELEASE add_entries" if grouped else "COMMIT")
        except BaseException:
            if grouped:
                c.execute("ROLLBACK TO add_entries")
                c.execute("RELEASE add_entries")
            else:
                c.execute("ROLLBACK")
            raise
        if not grouped:
            self._durable = self._top()

    def entries(self, network: bytes) -> Iterator[list[bytes]]:
        """Every entry of the network in storage order, in chunks."""
        return self.bodies_after(network, 0)

    def bodies_after(self, network: bytes, pos: int) -> Iterator[list[bytes]]:
        """The entries of the network stored after position ``pos`` and up to the last
        position of now (a group's too), in chunks, read lazily (writes meanwhile do not
        disturb)."""
        top = self._top()

        def chunks() -> Iterator[list[bytes]]:
            at = pos
            while True:
                rows = self.conn.execute(
                    "SELECT pos, body FROM entries WHERE network = ? AND pos > ? AND pos <= ? "
                    "ORDER BY pos LIMIT ?", (network, at, top, CHUNK_ENTRIES),
                ).fetchall()
                if not rows:
                    return
                yield [bytes(r[1]) for r in rows]
                at = rows[-1][0]

        return chunks()

    def high_water(self) -> int:
        """The last durable position (0 when empty): what cursors may name."""
        return self._durable

    def count(self, network: bytes) -> int:
        """How many entries of the network are stored."""
        return self.conn.execute(
            "SELECT count(*) FROM entries WHERE network = ?", (network,)
        ).fetchone()[0]

    # ---------------------------------------------------------------- claims
    def last(self, network: bytes, device: bytes) -> tuple[int, bytes] | None:
        """The highest claimed slot at the device and its block id, or None."""
        return sqlite_last_claim(self.conn, network, device)

    def claim(self, network: bytes, device: bytes, slots: list[tuple[int, bytes]]) -> bool:
        """Claim all the slots atomically and durably; False (and nothing claimed) if one
        is taken. An open group is committed first: a claim is its own transaction."""
        self.commit_group()
        return sqlite_claim(self.conn, network, device, slots)

    def claims(self, network: bytes) -> list[tuple[bytes, int, bytes]]:
        """The highest claim at each device: (device, slot, block id)."""
        rows = self.conn.execute(
            "SELECT c.device, c.slot, c.block FROM claims c JOIN (SELECT device, max(slot) s "
            "FROM claims WHERE network = ? GROUP BY device) m ON c.device = m.device "
            "AND c.slot = m.s WHERE c.network = ?",
            (network, network),
        ).fetchall()
        return [(bytes(d), s, bytes(b)) for d, s, b in rows]

    def get_meta(self, key: str) -> bytes | None:
        """A small value the relay keeps (a peer's cursor, say), or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def set_meta(self, key: str, value: bytes) -> None:
        """Keep a small value under ``key``."""
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        """Commit an open group, stop the checkpoints, checkpoint once, close the file."""
        self._stop_checkpoints.set()
        self._checkpointer.join()
        self.commit_group()
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        self.conn.close()

