"""The ledger's state on disk: entries and everything derived from them, in SQLite.

``LedgerTables`` is where a ``Ledger`` keeps the set and its derived state, so that a
command on a big wallet (or a relay restarted on a big network) reads only what its
work touches. It holds:

- ``entries``: one row per entry: id, signed bytes, the columns the rules index by
  (kind, device, seq, counterparty, ``target`` = what a receive claims or a vote votes),
  and the derived state: status (state, reason, final), witness ``cover`` bits, whether
  the block is on its device's main chain with its booked credit (``cf``, ``ci``) and
  send, whether a payment is ``open`` (no valid receive claims it), and ``item``, the
  Yjs client id of the entry's item when the entry holds it (DESIGN §6).
- ``devices``: each device once, with its frontier, running totals, certified top and
  fork slots, and its main open's account and label.
- ``waits``, ``routes``, ``below``: the validator's worklist edges and caches that are
  not a function of single rows (who waits for an entry to arrive, which receives a
  revoke routes, what the chain below a revoke claims).
- ``buckets``: the entry-set digest by first id byte (the digest is their sum).

Reads go through bounded in-memory caches; everything a ``Ledger.add`` changes is held
in memory and written by ``flush`` in the caller's transaction, so the state on disk is
always that of a whole committed batch. Everything here is derived from ``body`` and
can be rebuilt from the bodies alone (``Ledger.rebuild_into``, ``tally doctor``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Generic, TypeVar

from wallet.crdt import CLIENT_ID_LIMIT, ITEM_ID_BITS, item_client_id
from wallet.encoding import VOTE_WITNESS_AT, Entry, Kind, entry_hash, parse_entry

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    ref INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    account BLOB,
    label TEXT,
    issuing INTEGER NOT NULL DEFAULT 0,
    nblocks INTEGER NOT NULL DEFAULT 0,
    frontier INTEGER NOT NULL DEFAULT 0,
    cert_top INTEGER NOT NULL DEFAULT -1,
    tail_done INTEGER NOT NULL DEFAULT 0,
    tot_final INTEGER NOT NULL DEFAULT 0,
    tot_incoming INTEGER NOT NULL DEFAULT 0,
    tot_sent INTEGER NOT NULL DEFAULT 0,
    forks TEXT
);
CREATE INDEX IF NOT EXISTS devices_account ON devices (account) WHERE account IS NOT NULL;
CREATE INDEX IF NOT EXISTS devices_forked ON devices (ref) WHERE forks IS NOT NULL;
CREATE TABLE IF NOT EXISTS entries (
    ref INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL,
    kind INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    amount INTEGER,
    peer INTEGER,
    target BLOB,
    item INTEGER,
    state INTEGER,
    reason TEXT,
    final INTEGER,
    cover INTEGER,
    main INTEGER,
    cf INTEGER,
    ci INTEGER,
    sent INTEGER,
    open INTEGER,
    seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_dev ON entries (dev, seq);
CREATE INDEX IF NOT EXISTS entries_peer ON entries (peer, ref) WHERE peer IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_target ON entries (target) WHERE target IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_item ON entries (item) WHERE item IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_open ON entries (peer) WHERE open = 1;
CREATE TABLE IF NOT EXISTS waits (target BLOB NOT NULL, device BLOB NOT NULL,
    PRIMARY KEY (target, device)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routes (x BLOB NOT NULL, d BLOB NOT NULL, rid BLOB NOT NULL,
    PRIMARY KEY (x, d, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS below (rid BLOB PRIMARY KEY, claims BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (bucket INTEGER PRIMARY KEY, sum BLOB NOT NULL);
"""
"""The tables (the wallet's ``Store`` adds ``meta`` and ``memos`` beside them)."""

DERIVED_TABLES = ("waits", "routes", "below", "buckets")
"""Tables holding nothing but derived state (the rebuild drops and refills them)."""

ENTRY_CACHE_MAX = 20_000
"""Parsed entries kept in memory between batches (about 1 KiB each)."""
STATUS_CACHE_MAX = 200_000
"""Block statuses (and cover bits) kept in memory between batches."""
DEVICE_CACHE_BLOCKS_MAX = 200_000
"""Devices kept loaded between batches, counted by their blocks (~250 bytes a block)."""
SET_CACHE_MAX = 50_000
"""Keys of each index (claimers, children, waits, …) kept in memory between batches."""
SQL_VARS_MAX = 500
"""The most values bound in one ``IN (…)`` query."""

DIGEST_MOD = 1 << 256
VOTE = int(Kind.VOTE)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any exception); inside an open
    transaction, a savepoint of it, so a failed batch undoes only itself."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT ledger_batch")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO ledger_batch")
            conn.execute("RELEASE ledger_batch")
            raise
        conn.execute("RELEASE ledger_batch")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _trim(cache: dict, cap: int) -> None:
    """Drop the oldest half of a cache that grew past ``cap`` (insertion order)."""
    if len(cache) > cap:
        for k in list(cache)[: len(cache) - cap // 2]:
            del cache[k]


class SetIndex(Generic[K]):
    """A key → set-of-ids index read from SQL on demand, cached, with what the current
    batch added held in memory until ``flush`` (when the rows are written).

    ``persist`` (optional) writes the adds and removals of a batch; without it the index
    is derived from ``entries`` rows, which the flush writes.
    """

    def __init__(
        self,
        load: Callable[[K], Iterable[bytes]],
        persist: Callable[[dict[K, set[bytes]], dict[K, set[bytes]]], None] | None = None,
    ) -> None:
        self._load = load
        self._persist = persist
        self._cache: dict[K, set[bytes]] = {}
        self._added: dict[K, set[bytes]] = {}
        self._removed: dict[K, set[bytes]] = {}

    def get(self, key: K) -> set[bytes]:
        """The ids under ``key`` (a live set: do not mutate it, use ``add``/``discard``)."""
        got = self._cache.get(key)
        if got is None:
            got = set(self._load(key))
            if self._persist is None:
                got |= self._added.get(key, set())
            got -= self._removed.get(key, set())
            self._cache[key] = got
        return got

    def __contains__(self, key: K) -> bool:
        return bool(self.get(key))

    def add(self, key: K, value: bytes) -> None:
        """Add ``value`` under ``key``."""
        self.get(key).add(value)
        self._added.setdefault(key, set()).add(value)
        rem = self._removed.get(key)
        if rem:
            rem.discard(value)

    def discard(self, key: K, value: bytes) -> None:
        """Remove ``value`` from under ``key`` (persisted indexes only)."""
        assert self._persist is not None, "derived indexes only grow"
        s = self.get(key)
        if value in s:
            s.discard(value)
            self._removed.setdefault(key, set()).add(value)
            add = self._added.get(key)
            if add:
                add.discard(value)

    def pop(self, key: K) -> set[bytes]:
        """Remove and return every id under ``key``."""
        s = set(self.get(key))
        for v in s:
            self.discard(key, v)
        return s

    def flush(self) -> None:
        """Write the batch's changes (persisted indexes); forget the batch."""
        if self._persist is not None and (self._added or self._removed):
            self._persist(self._added, self._removed)
        self._added, self._removed = {}, {}
        _trim(self._cache, SET_CACHE_MAX)

    def forget(self) -> None:
        """Drop everything held in memory (after a rollback)."""
        self._cache, self._added, self._removed = {}, {}, {}


class LedgerTables:
    """The SQLite side of a ``Ledger``: rows, point reads, cached indexes, the flush."""

    def __init__(self, conn: sqlite3.Connection, *, item_bits: int = ITEM_ID_BITS,
                 schema_made: bool = False) -> None:
        self.conn = conn
        self.item_bits = item_bits
        """How many bits of an entry id make its Yjs item's client id (``item``)."""
        if not schema_made:
            conn.executescript(SCHEMA)
        self.dev_refs: dict[bytes, int] = {
            bytes(k): r for r, k in conn.execute("SELECT ref, key FROM devices")
        }
        self.dev_keys: dict[int, bytes] = {r: k for k, r in self.dev_refs.items()}
        self.fresh: dict[bytes, Entry] = {}
        self._entries: dict[bytes, Entry] = {}
        self.count = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        q = conn.execute
        self.claimers: SetIndex[bytes] = SetIndex(
            lambda k: self.ids_where("target = ? AND kind = ?", (k, int(Kind.RECEIVE))))
        self.votes_for: SetIndex[bytes] = SetIndex(
            lambda k: self.ids_where("target = ? AND kind = ?", (k, int(Kind.VOTE))))
        self.at_slot: SetIndex[tuple[bytes, int]] = SetIndex(
            lambda k: self.ids_where("dev = ? AND seq = ? AND kind != ?",
                                (self.dev_refs.get(k[0], -1), k[1], int(Kind.VOTE))))
        self.revokes_to: SetIndex[bytes] = SetIndex(
            lambda k: self.ids_where("peer = ? AND kind = ?",
                                (self.dev_refs.get(k, -1), int(Kind.REVOKE))))
        self.unclaimed: SetIndex[bytes] = SetIndex(
            lambda k: self.ids_where("peer = ? AND open = 1", (self.dev_refs.get(k, -1),)),
            self._persist_open)
        self.waiting: SetIndex[bytes] = SetIndex(
            lambda k: (bytes(r[0]) for r in q("SELECT device FROM waits WHERE target = ?", (k,))),
            self._persist_waits)
        self.routed: SetIndex[tuple[bytes, bytes]] = SetIndex(
            lambda k: (bytes(r[0]) for r in q("SELECT rid FROM routes WHERE x = ? AND d = ?", k)),
            self._persist_routes)
        self.indexes = (self.claimers, self.votes_for, self.at_slot, self.revokes_to,
                        self.unclaimed, self.waiting, self.routed)
        self.open_changes: dict[bytes, int | None] = {}

    _template: sqlite3.Connection | None = None

    @classmethod
    def memory(cls) -> LedgerTables:
        """Tables in a private in-memory database (a ledger with no store); copied from
        a template, which is ten times faster than making the schema."""
        if LedgerTables._template is None:
            tpl = sqlite3.connect(":memory:", check_same_thread=False)
            tpl.executescript(SCHEMA)
            LedgerTables._template = tpl
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        LedgerTables._template.backup(conn)
        return cls(conn, schema_made=True)

    # ------------------------------------------------------------- reading
    def ids_where(self, where: str, args: tuple) -> Iterator[bytes]:
        for (i,) in self.conn.execute(f"SELECT id FROM entries WHERE {where}", args):
            yield bytes(i)

    def entry(self, entry_id: bytes) -> Entry | None:
        """A held entry by id (parsed from its stored bytes on first use), or None."""
        e = self.fresh.get(entry_id) or self._entries.get(entry_id)
        if e is None:
            row = self.conn.execute("SELECT body FROM entries WHERE id = ?",
                                    (entry_id,)).fetchone()
            if row is None:
                return None
            e = self._entries[entry_id] = parse_entry(bytes(row[0]), verify=False)
        return e

    def entries(self, ids: Iterable[bytes]) -> dict[bytes, Entry]:
        """Several held entries by id (missing ones left out), in few queries."""
        out: dict[bytes, Entry] = {}
        todo = []
        for i in ids:
            e = self.fresh.get(i) or self._entries.get(i)
            if e is not None:
                out[i] = e
            else:
                todo.append(i)
        for (body,) in self._where_id_in("body", todo):
            e = parse_entry(bytes(body), verify=False)
            out[e.id] = self._entries[e.id] = e
        return out

    def _where_id_in(self, column: str, ids: list[bytes]) -> Iterator[tuple]:
        """``SELECT column FROM entries WHERE id IN ids``, a bounded chunk at a time."""
        for n in range(0, len(ids), SQL_VARS_MAX):
            part = ids[n : n + SQL_VARS_MAX]
            yield from self.conn.execute(
                f"SELECT {column} FROM entries WHERE id IN ({','.join('?' * len(part))})", part)

    def entry_from(self, body: bytes) -> Entry:
        """A stored entry parsed from its bytes (through the cache)."""
        i = entry_hash(body)
        e = self._entries.get(i)
        if e is None:
            e = self._entries[i] = parse_entry(body, verify=False)
        return e

    def keep(self, e: Entry) -> None:
        """Put an entry just stored in the cache."""
        self._entries[e.id] = e

    def item_owner(self, client: int) -> bytes | None:
        """The id of the stored entry holding Yjs item id ``client``, if any."""
        row = self.conn.execute("SELECT id FROM entries WHERE item = ?", (client,)).fetchone()
        return bytes(row[0]) if row else None

    def high_water(self) -> int:
        """The highest stored row number (0 when empty): a position for cursors."""
        return self.conn.execute("SELECT coalesce(max(ref), 0) FROM entries").fetchone()[0]

    def bodies_after(self, ref: int, chunk: int, upto: int | None = None
                     ) -> Iterator[list[bytes]]:
        """The signed bytes of the rows after ``ref`` (up to ``upto``: by default the
        last row of the moment of the call), in storage order, ``chunk`` rows at a time,
        each chunk read when it is asked for (writes in between do not disturb the walk,
        and rows added after the call are not in it)."""
        top = self.high_water() if upto is None else upto

        def chunks() -> Iterator[list[bytes]]:
            at = ref
            while at < top:
                rows = self.conn.execute(
                    "SELECT ref, body FROM entries WHERE ref > ? AND ref <= ? ORDER BY ref "
                    "LIMIT ?", (at, top, chunk)).fetchall()
                if not rows:
                    return
                yield [bytes(b) for _, b in rows]
                at = rows[-1][0]

        return chunks()

    def bucket_ids(self, bucket: int) -> list[bytes]:
        """The held ids whose first byte is ``bucket``, sorted (a range of the id index)."""
        lo = bytes((bucket,))
        if bucket == 255:
            rows = self.conn.execute("SELECT id FROM entries WHERE id >= ? ORDER BY id", (lo,))
        else:
            rows = self.conn.execute("SELECT id FROM entries WHERE id >= ? AND id < ? "
                                     "ORDER BY id", (lo, bytes((bucket + 1,))))
        return [bytes(i) for (i,) in rows]

    def item_clients(self) -> Iterator[int]:
        """The Yjs client id of every item held (the Doc's state vector, unordered)."""
        for (c,) in self.conn.execute("SELECT item FROM entries WHERE item IS NOT NULL"):
            yield c

    def items_descending(self, chunk: int) -> Iterator[tuple[int, bytes, bytes]]:
        """``(client, id, body)`` of every item held, clients in descending order (the
        order of a canonical update), read ``chunk`` rows at a time."""
        below = CLIENT_ID_LIMIT
        while True:
            rows = self.conn.execute(
                "SELECT item, id, body FROM entries WHERE item IS NOT NULL AND item < ? "
                "ORDER BY item DESC LIMIT ?", (below, chunk)).fetchall()
            if not rows:
                return
            for c, i, b in rows:
                yield c, bytes(i), bytes(b)
            below = rows[-1][0]

    def without_item(self) -> dict[bytes, Entry]:
        """The entries whose item id another entry holds, by id (O(their number))."""
        return {e.id: e for e in (self.entry_from(bytes(b)) for (b,) in self.conn.execute(
            "SELECT body FROM entries WHERE item IS NULL"))}

    def use_item_bits(self, bits: int) -> None:
        """Give items ``bits``-bit client ids (tests that force collisions use few): the
        ``item`` column is derived again over the whole set, blocks in arrival order
        then votes, as each batch assigns them. O(n) when the width changes."""
        if bits == self.item_bits:
            return
        assert not self.fresh, "item ids re-derived in the middle of a batch"
        taken: set[int] = set()
        rows: list[tuple[int | None, int]] = []
        for vote in (False, True):
            op = "=" if vote else "!="
            for ref, i in self.conn.execute(
                    f"SELECT ref, id FROM entries WHERE kind {op} {VOTE} ORDER BY ref"):
                c = item_client_id(bytes(i), bits)
                rows.append((None if c in taken else c, ref))
                taken.add(c)
        with transaction(self.conn):
            self.conn.executemany("UPDATE entries SET item = ? WHERE ref = ?", rows)
        self.item_bits = bits

    def votes_by(self, witness: bytes, after: int) -> list[tuple[int, Entry]]:
        """``(row, vote)`` of the stored votes signed by ``witness`` in rows after
        ``after``, in row order (the key is matched in the bytes: nothing else parsed)."""
        rows = self.conn.execute(
            f"SELECT ref, body FROM entries WHERE ref > ? AND kind = {VOTE} "
            "AND substr(body, ?, 32) = ? ORDER BY ref", (after, VOTE_WITNESS_AT + 1, witness))
        return [(ref, self.entry_from(bytes(b))) for ref, b in rows]

    def has(self, entry_id: bytes) -> bool:
        """True when the entry is held (stored, or new in this batch)."""
        if entry_id in self.fresh or entry_id in self._entries:
            return True
        return self.conn.execute("SELECT 1 FROM entries WHERE id = ?",
                                 (entry_id,)).fetchone() is not None

    def held(self, ids: Iterable[bytes]) -> set[bytes]:
        """Which of ``ids`` are held, in few queries."""
        out = set()
        todo = []
        for i in ids:
            if i in self.fresh or i in self._entries:
                out.add(i)
            else:
                todo.append(i)
        out.update(bytes(r[0]) for r in self._where_id_in("id", todo))
        return out

    def scan(self, kind_is_vote: bool | None = None) -> Iterator[Entry]:
        """Every stored entry in arrival order, then this batch's (O(n): tests, audits)."""
        cond = "" if kind_is_vote is None else (f"WHERE kind = {VOTE}" if kind_is_vote
                                                 else f"WHERE kind != {VOTE}")
        cur = self.conn.execute(f"SELECT id, body FROM entries {cond} ORDER BY ref")
        cache = self._entries
        while rows := cur.fetchmany(5000):
            for i, body in rows:
                e = cache.get(i)
                if e is None:
                    e = parse_entry(bytes(body), verify=False)
                    if len(cache) < ENTRY_CACHE_MAX:
                        cache[e.id] = e
                yield e
        for e in list(self.fresh.values()):
            if kind_is_vote is None or (e.kind == Kind.VOTE) == kind_is_vote:
                yield e

    def count_of(self, vote: bool) -> int:
        """How many blocks (or votes) are held, stored and new."""
        op = "=" if vote else "!="
        n = self.conn.execute(f"SELECT count(*) FROM entries WHERE kind {op} {VOTE}").fetchone()[0]
        return n + sum(1 for e in self.fresh.values() if (e.kind == Kind.VOTE) == vote)

    def all_ids(self, vote: bool) -> list[bytes]:
        """Every held block id (or vote id), stored then new (O(n): tests and audits)."""
        op = "=" if vote else "!="
        out = [bytes(i) for (i,) in self.conn.execute(
            f"SELECT id FROM entries WHERE kind {op} {VOTE} ORDER BY ref")]
        out.extend(i for i, e in self.fresh.items() if (e.kind == Kind.VOTE) == vote)
        return out

    def ref(self, key: bytes) -> int:
        """The row number of a device key, made on first use (inside a transaction)."""
        r = self.dev_refs.get(key)
        if r is None:
            cur = self.conn.execute("INSERT INTO devices(key) VALUES(?)", (key,))
            r = self.dev_refs[key] = int(cur.lastrowid or 0)
            self.dev_keys[r] = key
        return r

    # ------------------------------------------------------------ writing
    def _persist_open(self, added: dict, removed: dict) -> None:
        for ids in added.values():
            for i in ids:
                self.open_changes[i] = 1
        for ids in removed.values():
            for i in ids:
                self.open_changes[i] = None

    def _persist_waits(self, added: dict, removed: dict) -> None:
        c = self.conn
        c.executemany("INSERT OR IGNORE INTO waits(target, device) VALUES(?, ?)",
                      [(k, v) for k, vs in added.items() for v in vs])
        c.executemany("DELETE FROM waits WHERE target = ? AND device = ?",
                      [(k, v) for k, vs in removed.items() for v in vs])

    def _persist_routes(self, added: dict, removed: dict) -> None:
        assert not any(removed.values()), "routes only grow"
        self.conn.executemany("INSERT OR IGNORE INTO routes(x, d, rid) VALUES(?, ?, ?)",
                              [(k[0], k[1], v) for k, vs in added.items() for v in vs])

    def forget(self) -> None:
        """Drop every cache and the batch (after a rollback): reads go to SQL again."""
        self.fresh = {}
        self._entries = {}
        self.open_changes = {}
        for ix in self.indexes:
            ix.forget()
        self.dev_refs = {bytes(k): r for r, k in self.conn.execute("SELECT ref, key FROM devices")}
        self.dev_keys = {r: k for k, r in self.dev_refs.items()}
        self.count = self.conn.execute("SELECT count(*) FROM entries").fetchone()[0]

    def trim(self) -> None:
        """Bound the entry cache after a flush."""
        _trim(self._entries, ENTRY_CACHE_MAX)

    # ------------------------------------------------------------- digests
    def bucket_sums(self) -> list[int]:
        """The 256 bucket sums (of the ids whose first byte is 0, 1, … 255), as ints."""
        sums = [0] * 256
        for b, s in self.conn.execute("SELECT bucket, sum FROM buckets"):
            sums[b] = int.from_bytes(s, "big")
        return sums

    def digest(self) -> bytes:
        """The entry-set digest: the sum of all held ids mod 2^256 (of the buckets)."""
        return (sum(self.bucket_sums()) % DIGEST_MOD).to_bytes(32, "big")

    def add_to_buckets(self, ids: Iterable[bytes]) -> None:
        """Add ids to the bucket sums (their rows are new in this transaction)."""
        add: dict[int, int] = {}
        for i in ids:
            add[i[0]] = (add.get(i[0], 0) + int.from_bytes(i, "big")) % DIGEST_MOD
        if not add:
            return
        have = dict(self.conn.execute(
            f"SELECT bucket, sum FROM buckets WHERE bucket IN ({','.join('?' * len(add))})",
            list(add)))
        self.conn.executemany(
            "INSERT OR REPLACE INTO buckets(bucket, sum) VALUES(?, ?)",
            [(b, ((int.from_bytes(have[b], "big") if b in have else 0) + v)
              .__mod__(DIGEST_MOD).to_bytes(32, "big")) for b, v in add.items()])
