"""A till's takings, kept in its store: the decision made on each payment to this
device when it first arrived (provisional or held, with the reason), beside the
entries whose statuses say where each taking stands now.

The decision is the one thing that cannot be derived again later: it depends on what
this replica held at the moment the payment arrived. It is written in the same
transaction as the payment, so a crash never leaves a payment without its decision.
Everything else (final, disputed, refused) follows from the payment's status, of which
each taking keeps a copy (``status_*``), written by the same ingest transaction that
changes the status: a month's report reads this table alone, not 100,000 rows scattered
through the ledger's entries. ``differences`` checks the copies against the entries
(``tally doctor``), and ``refresh_statuses`` remakes them after a rebuild.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from wallet.encoding import Block, Kind, id_text, key_text
from wallet.errors import WalletError
from wallet.floor import (
    DISPUTED,
    FINAL,
    HELD,
    PROVISIONAL,
    REFUSED,
    Decision,
    Exposure,
    Limits,
    decide,
)
from wallet.ledger import R_DISPUTED, STATE_CODES, VALID, Status, status_row
from wallet.ledger_tables import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS takings (
    id BLOB PRIMARY KEY,          -- the payment (a send to this device)
    payer_device BLOB NOT NULL,
    payer_account BLOB NOT NULL,
    amount INTEGER NOT NULL,      -- minor units
    request_id BLOB,
    taken_at INTEGER NOT NULL,    -- Unix time it arrived here
    decision TEXT NOT NULL,       -- provisional or held
    reason TEXT NOT NULL,         -- the decision in numbers
    written_off INTEGER NOT NULL DEFAULT 0,
    open INTEGER NOT NULL DEFAULT 0, -- 1 while at risk: provisional, not final, not written off
    status_state INTEGER,         -- a copy of the payment's entries.state, .reason, .final
    status_reason TEXT,
    status_final INTEGER
);
CREATE INDEX IF NOT EXISTS takings_taken_at ON takings(taken_at);
CREATE INDEX IF NOT EXISTS takings_open ON takings(payer_account) WHERE open = 1;
CREATE INDEX IF NOT EXISTS takings_request ON takings(request_id);
CREATE TABLE IF NOT EXISTS refunds (
    id BLOB PRIMARY KEY,          -- the refund (a send back to the payer)
    payment_id BLOB NOT NULL,     -- the taking it refunds
    amount INTEGER NOT NULL,
    made_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_payment ON refunds(payment_id);
CREATE TABLE IF NOT EXISTS reported (
    id BLOB PRIMARY KEY,          -- a taking not final when last reported
    state TEXT NOT NULL           -- where it stood then
);
CREATE TABLE IF NOT EXISTS closes (
    n INTEGER PRIMARY KEY,        -- the Z-report's number, 1, 2, … per wallet
    day TEXT NOT NULL,            -- the local day it closes
    made_at INTEGER NOT NULL,
    report TEXT NOT NULL          -- the report as printed (JSON)
);
CREATE TABLE IF NOT EXISTS requests (
    id BLOB PRIMARY KEY,          -- the request id the payment names
    amount INTEGER NOT NULL,      -- minor units
    memo TEXT NOT NULL,
    expires INTEGER NOT NULL,     -- Unix time; 0: never
    made_at INTEGER NOT NULL
);
"""

REPORTED_UPTO_META = "takings.reported_upto"
"""The last arrival a report showed: takings after it are new to the next report."""
SPAN_SCAN_SHARE = 4
"""A span holding more than 1/4 of the takings is read by scanning the table."""
SQL_IDS_MAX = 500
"""Ids bound in one SQL statement at most (SQLite limits a statement's parameters)."""

PAID = "paid"
UNDERPAID = "underpaid"
OVERPAID = "overpaid"
UNPAID = "unpaid"
EXPIRED = "expired"
PAID_TWICE = "paid twice"
MATCHES = (PAID, UNDERPAID, OVERPAID, UNPAID, EXPIRED, PAID_TWICE)
"""How a payment request stands against the takings that name it."""

_VALID = STATE_CODES[VALID]
_INVALID = STATE_CODES["invalid"]
_CONFLICTED = STATE_CODES["conflicted"]


def taking_state(decision: str, state: int | None, reason: str, final: bool,
                 witnessed: bool) -> str:
    """Where a taking stands, from its decision and its payment's status (DESIGN §5):
    final once certified; refused when invalid or on the losing side of a fork (with
    no witnesses, on either side); disputed while a fork is undecided; else as it was
    taken, provisional or held."""
    if state == _VALID and final and witnessed:
        return FINAL
    if state == _INVALID:
        return REFUSED
    if state == _CONFLICTED:
        return DISPUTED if witnessed and reason == R_DISPUTED else REFUSED
    return decision


class Taking(NamedTuple):
    """One payment to this till, with its decision and where it stands now (a named
    tuple: a month's report builds 100,000 of them, and a frozen dataclass costs four
    times as much to make)."""

    id: bytes
    payer_device: bytes
    payer_account: bytes
    amount: int
    request_id: bytes | None
    taken_at: int
    decision: str
    reason: str
    written_off: bool
    state: str
    status_reason: str
    """The payment's own status reason (``lost``, ``disputed``, ``overspend``…)."""
    arrival: int = 0
    """Its place in the order takings arrived here (1, 2, …)."""
    till: bytes = b""
    """The till it paid (the device reporting, or a sibling till of its account)."""

    @property
    def exposed(self) -> bool:
        """True while it counts in the exposure: taken provisionally, not final, not
        written off."""
        return (self.decision == PROVISIONAL and self.state != FINAL
                and not self.written_off)


@dataclass(frozen=True, slots=True)
class Request:
    """A payment request this till made."""

    id: bytes
    amount: int
    memo: str
    expires: int
    made_at: int


def match(request: Request, takings: list[Taking], now: float) -> tuple[str, int]:
    """How a request stands, and what was paid toward it: the takings naming it that
    are not refused (DESIGN §5: matched to payment requests)."""
    paying = [k for k in takings if k.request_id == request.id and k.state != REFUSED]
    paid = sum(k.amount for k in paying)
    if len(paying) >= 2 and all(k.amount == request.amount for k in paying):
        return PAID_TWICE, paid
    if paid == request.amount:
        return PAID, paid
    if paid > request.amount:
        return OVERPAID, paid
    if paid:
        return UNDERPAID, paid
    if request.expires and request.expires <= now:
        return EXPIRED, 0
    return UNPAID, 0


def _span(column: str, since: int | None, until: int | None) -> tuple[list[str], list]:
    """SQL conditions (and their arguments) keeping ``since <= column < until``."""
    where: list[str] = ["1"]
    args: list = []
    if since is not None:
        where.append(f"{column} >= ?")
        args.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        args.append(until)
    return where, args


class Takings:
    """The takings table of one wallet's store."""

    def __init__(self, conn: sqlite3.Connection, *, witnessed: bool,
                 settle_period_s: int, device: bytes = b"") -> None:
        self.conn = conn
        self.device = device  # this till (its rows' ``till``)
        self.witnessed = witnessed
        self.settle_period_s = settle_period_s  # the table is made with the store's

    def any(self) -> bool:
        """True once this device has taken any payment (it is a till)."""
        return self.conn.execute("SELECT 1 FROM takings LIMIT 1").fetchone() is not None

    def rows(self, *, since: int | None = None, until: int | None = None,
             ids: Iterable[bytes] | None = None) -> list[Taking]:
        """Takings in the order they arrived, with where each stands now."""
        where, args = _span("t.taken_at", since, until)
        if ids is not None:
            wanted = list(ids)
            if len(wanted) > SQL_IDS_MAX:  # SQLite bounds a statement's parameters
                return [k for i in range(0, len(wanted), SQL_IDS_MAX)
                        for k in self.rows(since=since, until=until,
                                           ids=wanted[i:i + SQL_IDS_MAX])]
            where.append(f"t.id IN ({','.join('?' * len(wanted))})")
            args += wanted
        sql = ("SELECT t.id, t.payer_device, t.payer_account, t.amount, t.request_id, "
               "t.taken_at, t.decision, t.reason, t.written_off, t.status_state, "
               "t.status_reason, t.status_final, t.rowid "
               f"FROM takings t {self._span_index(since, until, ids)} "
               f"WHERE {' AND '.join(where)} ORDER BY t.rowid")  # as they arrived
        witnessed, me = self.witnessed, self.device  # (sqlite3 gives BLOBs as bytes)
        out = [Taking(i, pd, pa, amt, rq, at, dec, why, bool(off),
                      taking_state(dec, st, sr or "", bool(fin), witnessed), sr or "", n, me)
               for i, pd, pa, amt, rq, at, dec, why, off, st, sr, fin, n
               in self.conn.execute(sql, args)]
        return out

    def _span_index(self, since: int | None, until: int | None,
                    ids: Iterable[bytes] | None) -> str:
        """``NOT INDEXED`` when a span holds most takings (a month's report): reading the
        table in order beats the time index and a sort by arrival. (SQLite, with no
        statistics, takes a range on an index for selective.)"""
        if ids is not None or (since is None and until is None):
            return ""
        where, args = _span("taken_at", since, until)
        (inside,) = self.conn.execute(  # (counted on the index alone: milliseconds)
            f"SELECT count(*) FROM takings WHERE {' AND '.join(where)}", args).fetchone()
        (every,) = self.conn.execute("SELECT max(rowid) FROM takings").fetchone()
        return "NOT INDEXED" if every and inside * SPAN_SCAN_SHARE > every else ""

    def exposure(self, now: float | None = None) -> Exposure:
        """What the till has at risk: takings taken provisionally that are not final
        and not written off (provisional, disputed or refused); with no witnesses,
        refused ones and those younger than the settle period. Read from the takings
        kept ``open`` (``settle``), so it costs what is at risk, not the month."""
        t = time.time() if now is None else now
        young = "1" if self.witnessed else (
            f"(t.status_state IN ({_INVALID}, {_CONFLICTED}) "
            f"OR t.taken_at > {int(t - self.settle_period_s)})")
        sql = ("SELECT t.payer_account, SUM(t.amount) FROM takings t "
               f"WHERE t.open = 1 AND {young} GROUP BY t.payer_account")
        out = Exposure()
        for account, total in self.conn.execute(sql):
            out.add(bytes(account), total)
        return out

    def settle(self, changed: list[tuple[bytes, Status]]) -> None:
        """(In the ingest's transaction) takings whose payment's status changed: the
        status copied, and kept open while taken provisionally, not final and not
        written off. Ids that are no taking here match no row."""
        self.conn.executemany(
            f"UPDATE takings SET open = (decision = '{PROVISIONAL}' AND written_off = 0 "
            "AND NOT ?), status_state = ?, status_reason = ?, status_final = ? WHERE id = ?",
            [(int(st.shown_final), *status_row(st), pid) for pid, st in changed])

    def decide_new(self, payments: list[tuple[Block, bytes, Status]], limits: Limits,
                   money: Callable[[int], str], name: Callable[[bytes], str],
                   now: float | None = None) -> list[tuple[Block, Decision]]:
        """Decide, in the caller's transaction, on payments new here: (the send, its
        payer's account, its status here as the batch leaves it). Each is decided
        against the exposure of those before it, this batch's included (a payment final
        on arrival puts nothing at risk)."""
        if not payments:
            return []
        at = int(time.time() if now is None else now)
        exposure = self.exposure(at)
        known = self.known(b.id for b, *_ in payments)  # decided before: kept as decided
        out = []
        for block, account, status in payments:
            assert block.kind == Kind.SEND, block.kind
            if block.id in known:
                continue
            final = status.shown_final
            d = decide(block.amount, account, valid_here=status.state == VALID,
                       exposure=exposure, limits=limits, money=money, name=name)
            if d.provisional and not final:
                exposure.add(account, block.amount)
            self.conn.execute(
                "INSERT OR IGNORE INTO takings(id, payer_device, payer_account, amount, "
                "request_id, taken_at, decision, reason, open, status_state, status_reason, "
                "status_final) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (block.id, block.device, account, block.amount, block.request_id or None,
                 at, d.state, d.reason, int(d.provisional and not final),
                 *status_row(status)))
            out.append((block, d))
        return out

    def known(self, ids: Iterable[bytes]) -> set[bytes]:
        """Of these payment ids, those decided already."""
        wanted = list(ids)
        out: set[bytes] = set()
        for i in range(0, len(wanted), SQL_IDS_MAX):
            chunk = wanted[i:i + SQL_IDS_MAX]
            out.update(bytes(t) for (t,) in self.conn.execute(
                f"SELECT id FROM takings WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def remember_request(self, request_id: bytes, amount: int, memo: str,
                         expires: int, made_at: int) -> None:
        """Keep a request this till made, to match the payments that name it."""
        self.conn.execute(
            "INSERT OR IGNORE INTO requests(id, amount, memo, expires, made_at) "
            "VALUES (?, ?, ?, ?, ?)", (request_id, amount, memo, expires, made_at))

    def requests(self, *, since: int | None = None,
                 until: int | None = None) -> list[Request]:
        """The requests made in a span, oldest first."""
        where, args = _span("made_at", since, until)
        sql = (f"SELECT id, amount, memo, expires, made_at FROM requests "
               f"WHERE {' AND '.join(where)} ORDER BY made_at, rowid")
        return [Request(bytes(i), a, m, e, t) for i, a, m, e, t in
                self.conn.execute(sql, args)]

    def naming(self, request_ids: Iterable[bytes]) -> list[Taking]:
        """The takings that name any of these requests."""
        ids = list(request_ids)
        found: list[bytes] = []
        for i in range(0, len(ids), SQL_IDS_MAX):
            chunk = ids[i:i + SQL_IDS_MAX]
            found += [bytes(t) for (t,) in self.conn.execute(
                f"SELECT id FROM takings WHERE request_id IN ({','.join('?' * len(chunk))})",
                chunk)]
        return self.rows(ids=found) if found else []

    def record_refund(self, refund_id: bytes, payment_id: bytes, amount: int,
                      made_at: int) -> None:
        """(In the refund's transaction) note what a refund sends back."""
        assert amount > 0, amount
        self.conn.execute("INSERT INTO refunds(id, payment_id, amount, made_at) "
                          "VALUES (?, ?, ?, ?)", (refund_id, payment_id, amount, made_at))

    def refunded(self, payment_id: bytes) -> int:
        """What refunds sent back of one taking, in minor units."""
        (total,) = self.conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE payment_id = ?",
            (payment_id,)).fetchone()
        return int(total)

    def refunds_of(self, payment_ids: Iterable[bytes]) -> dict[bytes, int]:
        """What refunds sent back, by taking, for those of ``payment_ids`` with any
        (refunds are few: all are read, grouped, whatever the number of takings)."""
        wanted = set(payment_ids)
        rows = self.conn.execute(
            "SELECT payment_id, SUM(amount) FROM refunds GROUP BY payment_id")
        return {bytes(p): int(v) for p, v in rows if bytes(p) in wanted}

    def changed_since_report(self, rows: list[Taking]) -> list[tuple[Taking, str | None]]:
        """Of these takings, those that are new or stand elsewhere than at the last
        report, each with where it stood then (None: new since); then these rows become
        the last report. Only takings not final are remembered (a final one stays so but
        for a witness-equivocation proof), so this costs what is still moving. Each till
        keeps its own mark of the last arrival reported (``arrival`` counts per till)."""
        marks: dict[bytes, int] = {}
        for k in rows:
            if k.till not in marks:
                row = self.conn.execute("SELECT value FROM meta WHERE key = ?",
                                        (_upto_key(k.till, self.device),)).fetchone()
                marks[k.till] = int(row[0]) if row is not None else 0
        before = dict(self.conn.execute("SELECT id, state FROM reported"))
        out: list[tuple[Taking, str | None]] = []
        for k in rows:
            was = before.get(k.id)
            if was is None and k.arrival <= marks[k.till]:
                was = FINAL  # not remembered: it was final then
            if was != k.state:
                out.append((k, was))
        with transaction(self.conn):
            shown = {k.id for k in rows}
            self.conn.executemany("DELETE FROM reported WHERE id = ?",
                                  [(i,) for i in before if i in shown])
            self.conn.executemany("INSERT INTO reported(id, state) VALUES (?, ?)",
                                  [(k.id, k.state) for k in rows if k.state != FINAL])
            tops: dict[bytes, int] = dict(marks)
            for k in rows:
                tops[k.till] = max(tops[k.till], k.arrival)
            self.conn.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                "SET value = excluded.value",
                [(_upto_key(t, self.device), str(v)) for t, v in tops.items()])
        return out

    def at_till(self, till: bytes, account: bytes, *, since: int | None = None,
                until: int | None = None) -> list[Taking]:
        """The payments to a sibling till of this account, as this replica sees them
        (the merchant's main device reconciling its tills). The till's decision is read
        from its chain: a till claims a payment once it takes it (provisional at once,
        held once final), so one it claimed before it was final was provisional. Their
        time is when each reached this replica; ``arrival`` is their order here."""
        where, args = _span("e.seen", since, until)
        sql = ("SELECT e.id, d.key, d.account, e.amount, e.seen, e.state, e.reason, "
               "e.final, e.ref, e.body, EXISTS(SELECT 1 FROM entries r WHERE r.target = e.id "
               f"AND r.dev = t.ref AND r.main = 1 AND r.kind = {int(Kind.RECEIVE)}) "
               "FROM devices t JOIN entries e ON e.peer = t.ref "
               "JOIN devices d ON d.ref = e.dev "
               f"WHERE t.key = ? AND e.kind = {int(Kind.SEND)} AND d.account IS NOT ? "
               f"AND {' AND '.join(where)} ORDER BY e.ref")
        from wallet.encoding import parse_entry

        out = []
        for i, pd, pa, amt, at, st, sr, fin, ref, body, claimed in self.conn.execute(
                sql, [till, account, *args]):
            block = parse_entry(bytes(body))
            assert isinstance(block, Block), block
            decision = PROVISIONAL if claimed else HELD
            reason = ("taken at the till (claimed there)" if claimed else
                      "not claimed at the till: held, or not there yet")
            out.append(Taking(bytes(i), bytes(pd), bytes(pa), amt,
                              block.request_id or None, at, decision, reason, False,
                              taking_state(decision, st, sr or "", bool(fin),
                                           self.witnessed), sr or "", ref, till))
        return out

    def waiting_to_claim(self, ids: Iterable[bytes]) -> set[bytes]:
        """Of these payments, the takings held and not final yet: a till claims a
        payment only once it takes it, so its chain tells any replica which payments it
        took provisionally (``at_till``), and a receipt (its receive) means taken."""
        wanted = list(ids)
        out: set[bytes] = set()
        final = f"t.status_final = 1 AND t.status_state = {_VALID}" if self.witnessed else "0"
        for i in range(0, len(wanted), SQL_IDS_MAX):
            chunk = wanted[i:i + SQL_IDS_MAX]
            out.update(bytes(t) for (t,) in self.conn.execute(
                "SELECT t.id FROM takings t "
                f"WHERE t.decision = '{HELD}' AND NOT ({final}) "
                f"AND t.id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def redecide_held(self, limits: Limits, money: Callable[[int], str],
                      name: Callable[[bytes], str], now: float | None = None) -> list[Taking]:
        """(With no witnesses, in the caller's transaction) take the held payments that
        are valid here now and that the limits admit, oldest first: nothing is ever
        certified, so a held send turns provisional once the limits admit it (DESIGN
        §5). The takings turned provisional."""
        assert not self.witnessed
        at = int(time.time() if now is None else now)
        held = self.conn.execute(
            "SELECT t.id FROM takings t "
            f"WHERE t.decision = '{HELD}' AND t.status_state = {_VALID} ORDER BY t.rowid"
        ).fetchall()
        if not held:
            return []
        exposure = self.exposure(at)
        turned = []
        for k in self.rows(ids=[bytes(i) for (i,) in held]):
            d = decide(k.amount, k.payer_account, valid_here=True, exposure=exposure,
                       limits=limits, money=money, name=name)
            if not d.provisional:
                continue
            exposure.add(k.payer_account, k.amount)
            # its clock starts now: the settle period runs from when it was taken
            self.conn.execute("UPDATE takings SET decision = ?, reason = ?, open = 1, "
                              "taken_at = ? WHERE id = ?", (d.state, d.reason, at, k.id))
            turned.append(k)
        return turned

    def close(self, day: str, report: str, made_at: int) -> int:
        """Keep a daily close (a Z-report) as printed; its number."""
        cur = self.conn.execute("INSERT INTO closes(day, made_at, report) VALUES (?, ?, ?)",
                                (day, made_at, report))
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def closes(self, day: str) -> list[tuple[int, int]]:
        """The Z-reports made for a day before: (number, when)."""
        return [(n, t) for n, t in self.conn.execute(
            "SELECT n, made_at FROM closes WHERE day = ? ORDER BY n", (day,))]

    def write_off(self, payment_id: bytes) -> Taking:
        """Take a refused taking out of the exposure (the merchant books the loss);
        anything else is refused with why."""
        found = self.rows(ids=[payment_id])
        if not found:
            raise WalletError("no taking has that id here (`tally takings` lists them)")
        k = found[0]
        if k.state != REFUSED:
            raise WalletError(f"only a refused taking can be written off; this one is "
                              f"{k.state}")
        if k.written_off:
            raise WalletError("that taking was written off before")
        self.conn.execute("UPDATE takings SET written_off = 1, open = 0 WHERE id = ?",
                          (payment_id,))
        return k


CSV_COLUMNS = ("day", "taken_at", "till", "payment_id", "payer_account", "payer_device",
               "amount", "amount_minor", "currency", "request_id", "state", "decision",
               "reason", "status_reason", "written_off", "evidence")
"""The takings CSV's columns, in order (documented in ``docs/takings.md``)."""


def write_csv(path: Path, rows: list[Taking], *, currency: str,
              amount_text: Callable[[int], str], evidence: dict[bytes, str]) -> int:
    """Write takings as CSV (``CSV_COLUMNS``), renamed into place whole; the rows
    written. ``evidence``: the line that says why, for each refused taking."""
    import csv

    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for k in rows:
            out.writerow([
                local_day(k.taken_at), time.strftime("%Y-%m-%dT%H:%M:%S",
                                                     time.localtime(k.taken_at)),
                key_text(k.till), id_text(k.id), key_text(k.payer_account),
                key_text(k.payer_device), amount_text(k.amount), k.amount, currency,
                k.request_id.hex() if k.request_id else "", k.state, k.decision, k.reason,
                k.status_reason, int(k.written_off), evidence.get(k.id, "")])
    os.replace(tmp, path)
    return len(rows)


_COPY_DIFFERS = ("t.status_state IS NOT e.state OR t.status_reason IS NOT e.reason "
                 "OR t.status_final IS NOT e.final")


def refresh_statuses(conn: sqlite3.Connection) -> None:
    """(In the caller's transaction) copy each payment's status into its taking again
    (after the entries were rebuilt, or in a store made before the copies)."""
    conn.execute("UPDATE takings SET (status_state, status_reason, status_final) = "
                 "(SELECT e.state, e.reason, e.final FROM entries e WHERE e.id = takings.id)")


def add_status_columns(conn: sqlite3.Connection) -> None:
    """A store made before the takings kept their payments' statuses: add the columns
    and fill them."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(takings)")}
    if "status_state" not in cols:
        with transaction(conn):
            for col in ("status_state INTEGER", "status_reason TEXT", "status_final INTEGER"):
                conn.execute(f"ALTER TABLE takings ADD COLUMN {col}")
            if "state" in {r[1] for r in conn.execute("PRAGMA table_info(entries)")}:
                refresh_statuses(conn)  # (else the store's rebuild fills them)


def copy_differences(conn: sqlite3.Connection, ids: Iterable[bytes] | None = None
                     ) -> list[str]:
    """Takings whose status copy differs from their payment's entry (of ``ids``, or
    all): what ``tally doctor`` reports, and what TALLY_CHECK asserts after each batch."""
    sql = ("SELECT t.id, t.status_state, t.status_reason, t.status_final, e.state, "
           "e.reason, e.final FROM takings t LEFT JOIN entries e ON e.id = t.id "
           f"WHERE ({_COPY_DIFFERS})")
    wanted = None if ids is None else list(ids)
    rows = []
    if wanted is None:
        rows = conn.execute(sql).fetchall()
    else:
        for i in range(0, len(wanted), SQL_IDS_MAX):
            chunk = wanted[i:i + SQL_IDS_MAX]
            rows += conn.execute(sql + f" AND t.id IN ({','.join('?' * len(chunk))})",
                                 chunk).fetchall()
    return [f"taking {id_text(bytes(i))}: status kept as {(a, b, c)}, the entry has "
            f"{(d, e, f)}" for i, a, b, c, d, e, f in rows]


def _upto_key(till: bytes, own: bytes) -> str:
    """The meta key marking a till's last arrival reported."""
    return REPORTED_UPTO_META if till == own else f"{REPORTED_UPTO_META}.{till.hex()}"


def local_day(unix: int) -> str:
    """The local date of a Unix time (``2026-12-08``): takings are reported per day."""
    return time.strftime("%Y-%m-%d", time.localtime(unix))


__all__ = ["DISPUTED", "FINAL", "HELD", "PROVISIONAL", "REFUSED", "Taking", "Takings",
           "taking_state"]
