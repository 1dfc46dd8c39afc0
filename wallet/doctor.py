"""``tally doctor``: rebuild the ledger's state from the entries alone and compare.

The store keeps, beside each entry, everything the rules derive from the set
(``wallet.ledger_tables``). The doctor re-verifies every stored entry's signatures,
feeds the entries to a fresh ``Ledger`` over a scratch database, and compares what it
derived with what is stored: the same set, and for every entry and device the same
derived state (statuses, cover bits, main chains and their bookings, what is open, the
running totals, fork slots) and the same balances. Any difference is a bug (or a damaged
file); the report names each one.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wallet.encoding import Genesis, id_text, key_text
from wallet.ledger import Ledger
from wallet.ledger_tables import LedgerTables
from wallet.store import Store

REBUILD_BATCH = 20_000
"""Entries verified and merged per batch of the rebuild."""
DIFFERENCES_SHOWN_MAX = 50
"""How many differences a report lists (it counts them all)."""

# The derived columns compared. Left out on purpose: ``item`` (which of two entries with
# colliding Yjs item ids holds the item depends on arrival order, by design), ``seen``
# and the display columns (``amount``, ``peer``), and ``tail_done`` (a cursor of work).
ENTRY_COLUMNS = ("state", "reason", "final", "cover", "main", "cf", "ci", "sent", "open")
DEVICE_COLUMNS = ("account", "label", "issuing", "nblocks", "frontier", "cert_top",
                  "tot_final", "tot_incoming", "tot_sent", "forks")


@dataclass
class DoctorReport:
    """What the doctor found: ``differences`` is empty when all is well."""

    entries: int
    integrity: str
    differences: list[str] = field(default_factory=list)
    count: int = 0
    """How many differences there are (``differences`` lists the first ones)."""

    @property
    def ok(self) -> bool:
        """True when the file is sound and the stored state equals the rebuild."""
        return self.integrity == "ok" and self.count == 0

    def note(self, text: str) -> None:
        """Record one difference."""
        self.count += 1
        if len(self.differences) < DIFFERENCES_SHOWN_MAX:
            self.differences.append(text)


def examine(store: Store, genesis: Genesis, *,
            progress: Callable[[int, int], None] | None = None) -> DoctorReport:
    """Rebuild the state of ``store`` in a scratch database and compare (read only).

    Raises ``EncodingError`` naming an entry whose signature fails."""
    from wallet.wallet import verify_bodies  # wallet imports this module's neighbours

    total = store.count()
    report = DoctorReport(total, store.integrity_check())
    with tempfile.TemporaryDirectory(prefix="tally-doctor-") as tmp:
        scratch = Path(tmp) / "rebuild.db"
        conn = sqlite3.connect(str(scratch), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        rebuilt = Ledger(genesis, LedgerTables(conn))
        done = 0
        for batch in store.bodies(REBUILD_BATCH):
            rebuilt.add(verify_bodies(batch))
            done += len(batch)
            if progress:
                progress(done, total)
        stored = Ledger(genesis, store.tables)
        store.conn.execute("ATTACH DATABASE ? AS rebuilt", (str(scratch),))
        try:
            _compare_rows(store.conn, report)
            _compare_balances(stored, rebuilt, store.conn, report)
        finally:
            store.conn.execute("DETACH DATABASE rebuilt")
        conn.close()
    return report


def _differs(cols: tuple[str, ...]) -> str:
    return " OR ".join(f"a.{c} IS NOT b.{c}" for c in cols)


def _compare_rows(conn: sqlite3.Connection, report: DoctorReport) -> None:
    for (i,) in conn.execute("SELECT id FROM main.entries EXCEPT SELECT id FROM rebuilt.entries"):
        report.note(f"entry {id_text(bytes(i))[:16]}… is stored but was not rebuilt")
    for (i,) in conn.execute("SELECT id FROM rebuilt.entries EXCEPT SELECT id FROM main.entries"):
        report.note(f"entry {id_text(bytes(i))[:16]}… was rebuilt but is not stored")
    for (i, seq), what in _column_differences(conn, "entries", "id", "a.id, a.seq",
                                               ENTRY_COLUMNS):
        report.note(f"entry {id_text(bytes(i))[:16]}… (seq {seq}): {what}")
    for (k,), what in _column_differences(conn, "devices", "key", "a.key", DEVICE_COLUMNS):
        report.note(f"device {key_text(bytes(k))[:8]}…: {what}")
    for (b,) in conn.execute(
            "SELECT bucket FROM (SELECT bucket, sum FROM main.buckets EXCEPT "
            "SELECT bucket, sum FROM rebuilt.buckets) UNION SELECT bucket FROM "
            "(SELECT bucket, sum FROM rebuilt.buckets EXCEPT SELECT bucket, sum FROM "
            "main.buckets)"):
        report.note(f"digest bucket {b} differs")


def _column_differences(conn: sqlite3.Connection, table: str, key: str, head: str,
                        cols: tuple[str, ...]) -> Iterator[tuple[tuple, str]]:
    """Rows of ``table`` whose ``cols`` differ between the store and the rebuild (joined
    on ``key``): the ``head`` columns, and what differs, in words."""
    pairs = ", ".join(f"a.{c}, b.{c}" for c in cols)
    n_head = head.count(",") + 1
    rows = conn.execute(f"SELECT {head}, {pairs} FROM main.{table} a JOIN rebuilt.{table} b "
                        f"ON a.{key} = b.{key} WHERE {_differs(cols)}")
    for row in rows:
        vals = row[n_head:]
        what = [f"{c} {_show(vals[2 * n])} stored, {_show(vals[2 * n + 1])} rebuilt"
                for n, c in enumerate(cols) if vals[2 * n] != vals[2 * n + 1]]
        yield tuple(row[:n_head]), "; ".join(what)


def _compare_balances(stored: Ledger, rebuilt: Ledger, conn: sqlite3.Connection,
                      report: DoctorReport) -> None:
    for (k,) in conn.execute("SELECT key FROM rebuilt.devices WHERE nblocks > 0 "
                             "OR key IN (SELECT key FROM main.devices)"):
        key = bytes(k)
        a, b = stored.balance(key), rebuilt.balance(key)
        if a != b:
            report.note(f"device {key_text(key)[:8]}…: balance {a} stored, {b} rebuilt")


def _show(v: object) -> str:
    if isinstance(v, bytes):
        return key_text(v)[:8] + "…"
    return repr(v)
