"""What the relay must keep (DESIGN §7): each network's ledger, genesis records, witness
claims, quotas.

``RelayStore`` is the interface; ``SqliteRelayStore`` keeps it in SQLite files: a main
file (the networks served and the relay's small values, a peer's cursor say) and, beside
it in ``<db>.networks/``, one file per network holding that network's ledger tables
(``wallet.ledger_tables``: the entries and their derived state, so a restarted relay
reads nothing but what its work touches), its witness claims and its device quotas.
It is written so that PostgreSQL can implement it later: every write is idempotent by
id, claims sit under a unique key (network, device, slot), and every method is one
transaction -- or, between ``begin_group`` and ``commit_group``, one savepoint of a
group commit: the relay gathers the writes of one event-loop pass and makes them durable
with one commit per file touched, and only then acknowledges them. Positions are each
network's row numbers; the relay hands them out in resume cursors, prefixed with the
network file's identity (``store_id``), and only durable ones (``high_water``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.errors import QuotaExceeded, StoreError
from wallet.encoding import VOTE_WITNESS_AT, Kind, parse_entry, parse_genesis
from wallet.ledger import Ledger
from wallet.ledger_tables import LedgerTables
from wallet.store import CACHE_KIB
from wallet.witness import CLAIMS_SCHEMA, sqlite_claim, sqlite_last_claim

SCHEMA_VERSION = 2
"""2: one file per network with its ledger tables; 1: every entry in the main file."""
CHUNK_ENTRIES = 5_000
"""Entries read or written at a time (a cold catch-up's chunk, a migration's batch)."""
CHECKPOINT_EVERY_S = 1.0
"""How often the background thread checkpoints each file's write-ahead log."""

_MAIN_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS networks (network BLOB PRIMARY KEY, genesis BLOB NOT NULL)",
]
_NETWORK_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    CLAIMS_SCHEMA,
    "CREATE TABLE IF NOT EXISTS quota (device BLOB NOT NULL, day TEXT NOT NULL, "
    "count INTEGER NOT NULL, PRIMARY KEY (device, day)) WITHOUT ROWID",
]
_V1_TABLES = ("entries", "claims", "quota")


class RelayStore(Protocol):
    """The relay's durable state; also a ``wallet.witness.ClaimTable``."""

    def genesis_records(self) -> list[bytes]:
        """The signed genesis of every network served before."""

    def add_network(self, genesis: bytes, network: bytes) -> None:
        """Remember a network (idempotent) and make its ledger's home."""

    def tables(self, network: bytes) -> LedgerTables:
        """The network's ledger tables (a ``Ledger`` over them opens in O(1))."""

    def store_id(self, network: bytes) -> bytes:
        """The identity the network's cursors carry (new when its file is new)."""

    def writing(self, network: bytes, charges: dict[bytes, int], *, day: str,
                quota: int | None) -> contextlib.AbstractContextManager[None]:
        """A write to the network's tables (the body adds entries to its ledger) that
        first counts ``charges`` (blocks per device) against the daily quota: raises
        ``QuotaExceeded`` before the body runs when one goes over; whatever fails
        leaves nothing of it stored."""

    def begin_group(self) -> None:
        """Writes from now until ``commit_group`` are one transaction per file."""

    def commit_group(self) -> None:
        """Make the group's writes durable; ``high_water`` moves only now."""

    def bodies_after(self, network: bytes, pos: int) -> Iterator[list[bytes]]:
        """The network's entries stored after position ``pos``, in chunks."""

    def high_water(self, network: bytes) -> int:
        """The network's last durable position (0 when empty): what cursors may name."""

    def count(self, network: bytes) -> int:
        """How many entries of the network are stored."""

    def last(self, network: bytes, device: bytes) -> tuple[int, bytes] | None:
        """The highest claimed slot at the device and its block id, or None."""

    def claim(self, network: bytes, device: bytes, slots: list[tuple[int, bytes]]) -> bool:
        """Claim all the slots atomically; False (and nothing claimed) if one is taken."""

    def unvoted_claims(self, network: bytes, witness: bytes) -> list[tuple[bytes, int, bytes]]:
        """The highest claim at each device with no vote of ``witness`` for it stored:
        (device, slot, block id) -- what a crash cut off between a claim and its vote."""

    def to_vote(self, network: bytes) -> list[bytes]:
        """The devices whose valid chain runs past this witness's claims, or that hold
        a fork (on start: what arrived and was never voted)."""

    def get_meta(self, key: str, network: bytes | None = None) -> bytes | None:
        """A small value the relay keeps (the network's, when given), or None."""

    def set_meta(self, key: str, value: bytes, network: bytes | None = None) -> None:
        """Keep a small value under ``key`` (in the network's file, when given: it
        commits with that network's entries)."""

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


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database (0 when it has none yet)."""
    if not _has_table(conn, "meta"):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def networks_dir(db: Path) -> Path:
    """Where the per-network files of the relay database ``db`` live."""
    return Path(str(db) + ".networks")


def network_path(db: Path, network: bytes) -> Path:
    """The file holding one network's ledger."""
    return networks_dir(db) / f"{network.hex()}.sqlite"


def _open_network(path: Path) -> sqlite3.Connection:
    """Open (making it if new) a network file with its schema and identity."""
    path.parent.mkdir(exist_ok=True)
    conn = _connect(path)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    # Pages the rules read again and again (a device's chain, the id index) stay cached.
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql in _NETWORK_SCHEMA:
            conn.execute(sql)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (os.urandom(16),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        conn.close()
        raise
    return conn


def migrate(path: Path | str, progress: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Create or upgrade the schema of the database at ``path``: (version before, after).

    From version 1, each network's entries move to its own file, where its ledger
    derives their state once (``progress`` hears how far it got); claims and quotas go
    with them, and the main file keeps only the networks and the relay's small values.
    Cursors handed out before name the old positions, so clients resume with a digest
    sync once. Interrupted, it can run again: it redoes only what did not finish.
    """
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
            for sql in _MAIN_SCHEMA:
                conn.execute(sql)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if _has_table(conn, "entries"):
            _move_v1_networks(conn, path, progress or (lambda _: None))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                     (SCHEMA_VERSION,))
    except sqlite3.Error as exc:
        raise StoreError(f"cannot migrate the relay database {path}: {exc}") from exc
    finally:
        conn.close()
    return before, SCHEMA_VERSION


def _move_v1_networks(conn: sqlite3.Connection, path: Path,
                      progress: Callable[[str], None]) -> None:
    """Version 1 → 2: replay each network's entries into its own file (idempotent:
    the ledger skips what it holds), copy its claims and quotas, then drop the old
    tables."""
    for network, raw in conn.execute("SELECT network, genesis FROM networks").fetchall():
        network = bytes(network)
        genesis = parse_genesis(bytes(raw))
        net = _open_network(network_path(path, network))
        try:
            ledger = Ledger(genesis, LedgerTables(net))
            total = conn.execute("SELECT count(*) FROM entries WHERE network = ?",
                                 (network,)).fetchone()[0]
            at, done = 0, 0
            while True:
                rows = conn.execute(
                    "SELECT pos, body FROM entries WHERE network = ? AND pos > ? "
                    "ORDER BY pos LIMIT ?", (network, at, CHUNK_ENTRIES)).fetchall()
                if not rows:
                    break
                ledger.add([parse_entry(bytes(b), verify=False) for _, b in rows])
                at, done = rows[-1][0], done + len(rows)
                progress(f"{genesis.name}: {done}/{total} entries")
            net.execute("BEGIN IMMEDIATE")
            net.executemany("INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?)", conn.execute(
                "SELECT network, device, slot, block FROM claims WHERE network = ?",
                (network,)).fetchall())
            net.executemany("INSERT OR REPLACE INTO quota VALUES (?, ?, ?)", conn.execute(
                "SELECT device, day, count FROM quota WHERE network = ?",
                (network,)).fetchall())
            net.execute("COMMIT")
        finally:
            net.close()
    conn.execute("BEGIN IMMEDIATE")
    for table in _V1_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute("COMMIT")
    conn.execute("VACUUM")


@dataclass
class _Network:
    """One network's file: its connection, tables, identity and durable position."""

    conn: sqlite3.Connection
    tables: LedgerTables
    store_id: bytes
    durable: int


class SqliteRelayStore:
    """A ``RelayStore`` in SQLite files (WAL, ``synchronous=FULL``: a commit that
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
            self.conn.close()
            raise StoreError(f"{self.path} is not a relay database: {exc}") from exc
        if version != SCHEMA_VERSION:
            self.conn.close()
            raise StoreError(f"the relay database {self.path} has schema version {version}, "
                             f"this tally-relay needs {SCHEMA_VERSION}: run "
                             f"`tally-relay migrate --db {self.path}`")
        self.in_group = False
        self.abandoned = False
        self.nets: dict[bytes, _Network] = {}
        # Commits never checkpoint the WAL themselves (a checkpoint copies and fsyncs
        # the database file: tens of milliseconds a commit would wait): a thread with
        # its own connections does it in the background, without blocking writers.
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True,
                                              name="relay-wal-checkpoint")
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conns: dict[Path, sqlite3.Connection] = {}
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_EVERY_S):
                paths = [self.path, *(network_path(self.path, n) for n in list(self.nets))]
                for p in paths:
                    c = conns.get(p)
                    if c is None:
                        c = conns[p] = sqlite3.connect(str(p), isolation_level=None,
                                                       check_same_thread=False)
                        c.execute("PRAGMA busy_timeout=1000")
                    try:
                        c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    except sqlite3.Error:
                        continue  # busy or locked: the next round tries again
        finally:
            for c in conns.values():
                c.close()

    # -------------------------------------------------------------- networks
    def genesis_records(self) -> list[bytes]:
        """The signed genesis of every network served before."""
        return [bytes(r[0]) for r in self.conn.execute("SELECT genesis FROM networks")]

    def add_network(self, genesis: bytes, network: bytes) -> None:
        """Remember a network (idempotent) and open its file."""
        if not self.conn.execute("SELECT 1 FROM networks WHERE network = ?",
                                 (network,)).fetchone():
            self._main_write("INSERT OR IGNORE INTO networks VALUES (?, ?)", (network, genesis))
        self._net(network)

    def _net(self, network: bytes) -> _Network:
        net = self.nets.get(network)
        if net is None:
            if self.abandoned:
                raise StoreError("the relay store was closed as by a crash")
            try:
                conn = _open_network(network_path(self.path, network))
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot open the ledger of network {network.hex()[:16]} "
                                 f"beside {self.path}: {exc}") from exc
            sid = bytes(conn.execute("SELECT value FROM meta WHERE key = 'store_id'")
                        .fetchone()[0])
            tables = LedgerTables(conn)
            net = self.nets[network] = _Network(conn, tables, sid, tables.high_water())
        return net

    def tables(self, network: bytes) -> LedgerTables:
        """The network's ledger tables (a ``Ledger`` over them opens in O(1))."""
        return self._net(network).tables

    def store_id(self, network: bytes) -> bytes:
        """The identity the network's cursors carry (new when its file is new)."""
        return self._net(network).store_id

    # ----------------------------------------------------------- group commit
    def begin_group(self) -> None:
        """Writes from now until ``commit_group`` are one transaction per file touched
        (each begun at its first write)."""
        self.in_group = True

    def _begin(self, conn: sqlite3.Connection) -> None:
        if self.in_group and not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")

    def commit_group(self) -> None:
        """Make the group's writes durable (one fsync a file); ``high_water`` moves only
        now. The network files commit before the main file, so a peer's cursor is never
        durable ahead of the entries it stands for.

        On failure what was not committed is rolled back and the error raised: it was
        never acknowledged, and the relay must stop (its ledgers' caches hold writes the
        disk lacks).
        """
        if not self.in_group:
            return
        self.in_group = False
        try:
            for net in self.nets.values():
                if net.conn.in_transaction:
                    net.conn.execute("COMMIT")
                    net.durable = net.tables.high_water()
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")
        except sqlite3.Error:
            for c in (*(n.conn for n in self.nets.values()), self.conn):
                if c.in_transaction:
                    c.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def writing(self, network: bytes, charges: dict[bytes, int], *, day: str,
                quota: int | None) -> Iterator[None]:
        """A write to the network's tables that first counts ``charges`` (blocks per
        device) against the quota for ``day``: ``QuotaExceeded`` before the body runs
        when one goes over; whatever fails leaves nothing of it stored. In a group it
        is a savepoint of the group's transaction, else its own transaction."""
        net = self._net(network)
        c = net.conn
        self._begin(c)
        grouped = c.in_transaction
        c.execute("SAVEPOINT relay_write" if grouped else "BEGIN IMMEDIATE")
        try:
            for device, n in charges.items():
                row = c.execute("SELECT count FROM quota WHERE device = ? AND day = ?",
                                (device, day)).fetchone()
                used = row[0] if row else 0
                if quota is not None and used + n > quota:
                    raise QuotaExceeded(device, used, n, quota)
                c.execute("INSERT OR REPLACE INTO quota VALUES (?, ?, ?)",
                          (device, day, used + n))
            if charges:
                c.execute("DELETE FROM quota WHERE day < ?", (day,))
            yield
        except BaseException:
            if grouped:
                c.execute("ROLLBACK TO relay_write")
                c.execute("RELEASE relay_write")
            else:
                c.execute("ROLLBACK")
            raise
        c.execute("RELEASE relay_write" if grouped else "COMMIT")
        if not grouped:
            net.durable = net.tables.high_water()

    # --------------------------------------------------------------- entries
    def bodies_after(self, network: bytes, pos: int) -> Iterator[list[bytes]]:
        """The network's entries stored after position ``pos`` and up to the last
        position of now (a group's too), in chunks, each read when asked for (writes
        meanwhile do not disturb)."""
        return self._net(network).tables.bodies_after(pos, CHUNK_ENTRIES)

    def high_water(self, network: bytes) -> int:
        """The network's last durable position (0 when empty): what cursors may name."""
        return self._net(network).durable

    def count(self, network: bytes) -> int:
        """How many entries of the network are stored (its ledger's and this count
        agree after every batch)."""
        return self._net(network).tables.count

    # ---------------------------------------------------------------- claims
    def last(self, network: bytes, device: bytes) -> tuple[int, bytes] | None:
        """The highest claimed slot at the device and its block id, or None."""
        return sqlite_last_claim(self._net(network).conn, network, device)

    def claim(self, network: bytes, device: bytes, slots: list[tuple[int, bytes]]) -> bool:
        """Claim all the slots atomically and durably; False (and nothing claimed) if one
        is taken. An open group is committed first: a claim is its own transaction."""
        self.commit_group()
        return sqlite_claim(self._net(network).conn, network, device, slots)

    def unvoted_claims(self, network: bytes, witness: bytes) -> list[tuple[bytes, int, bytes]]:
        """The highest claim at each device with no vote of ``witness`` for it stored:
        (device, slot, block id). One query, an index probe a device."""
        rows = self._net(network).conn.execute(
            "SELECT c.device, c.slot, c.block FROM claims c JOIN (SELECT device, max(slot) s "
            "FROM claims GROUP BY device) m ON c.device = m.device AND c.slot = m.s "
            "WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.target = c.block "
            f"AND e.kind = {int(Kind.VOTE)} AND e.seq = c.slot "
            "AND substr(e.body, ?, 32) = ?)",
            (VOTE_WITNESS_AT + 1, witness),
        ).fetchall()
        return [(bytes(d), s, bytes(b)) for d, s, b in rows]

    def to_vote(self, network: bytes) -> list[bytes]:
        """The devices whose valid chain runs past this witness's claims, or that hold
        a fork (one query over the devices, no device loaded)."""
        rows = self._net(network).conn.execute(
            "SELECT d.key FROM devices d LEFT JOIN (SELECT device, max(slot) s FROM claims "
            "GROUP BY device) m ON m.device = d.key "
            "WHERE d.frontier - 1 > coalesce(m.s, -1) OR d.forks IS NOT NULL")
        return [bytes(k) for (k,) in rows]

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, network: bytes | None = None) -> bytes | None:
        """A small value the relay keeps (the network's, when given), or None."""
        c = self.conn if network is None else self._net(network).conn
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def set_meta(self, key: str, value: bytes, network: bytes | None = None) -> None:
        """Keep a small value under ``key`` (in the network's file when given: in a
        group it commits with that network's entries)."""
        if network is None:
            self._main_write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        else:
            c = self._net(network).conn
            self._begin(c)
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _main_write(self, sql: str, args: tuple) -> None:
        self._begin(self.conn)
        self.conn.execute(sql, args)

    def abandon(self) -> None:
        """Close as a crash would: what the open group wrote is not committed (a
        simulation's crash; the next open finds what the last commit left)."""
        self._stop_checkpoints.set()
        self._checkpointer.join()
        for c in (*(n.conn for n in self.nets.values()), self.conn):
            if c.in_transaction:
                c.execute("ROLLBACK")
            c.close()
        self.nets = {}
        self.in_group = False
        self.abandoned = True  # (a use after this is a bug: ``_net`` refuses it)

    def close(self) -> None:
        """Commit an open group, stop the checkpoints, checkpoint once, close the files."""
        self._stop_checkpoints.set()
        self._checkpointer.join()
        self.commit_group()
        for c in (*(n.conn for n in self.nets.values()), self.conn):
            with contextlib.suppress(sqlite3.Error):
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            c.close()
        self.nets = {}
