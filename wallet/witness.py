"""The witness (DESIGN §3): vote by the validator's rule, claiming every slot first.

A witness votes a device's latest valid block, in batches: one vote covers every earlier
slot of its branch. Before a vote leaves it, the witness durably claims each slot the
vote covers for its block, in a ``ClaimTable``; a slot already claimed for another block
refuses the vote, so no crash or restart can make it vote two blocks at one slot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from nacl.signing import SigningKey

from wallet.encoding import Vote
from wallet.ledger import Ledger


class ClaimTable(Protocol):
    """Durable claims keyed (network, device, slot) → block id (PostgreSQL can implement it)."""

    def last(self, network: bytes, device: bytes) -> tuple[int, bytes] | None:
        """The highest claimed slot at the device and its block id, or None."""

    def claim(self, network: bytes, device: bytes, slots: list[tuple[int, bytes]]) -> bool:
        """Claim all the slots atomically; False (and nothing claimed) if one is taken."""


CLAIMS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS claims (network BLOB NOT NULL, device BLOB NOT NULL, "
    "slot INTEGER NOT NULL, block BLOB NOT NULL, PRIMARY KEY (network, device, slot))"
)


def sqlite_last_claim(
    conn: sqlite3.Connection, network: bytes, device: bytes
) -> tuple[int, bytes] | None:
    """The highest claimed slot at a device in a ``claims`` table, or None."""
    row = conn.execute(
        "SELECT slot, block FROM claims WHERE network = ? AND device = ? "
        "ORDER BY slot DESC LIMIT 1",
        (network, device),
    ).fetchone()
    return (row[0], bytes(row[1])) if row else None


def sqlite_claim(
    conn: sqlite3.Connection, network: bytes, device: bytes, slots: list[tuple[int, bytes]]
) -> bool:
    """Claim slots in a ``claims`` table in one transaction; False, claiming nothing, if
    one is already claimed for another block. ``conn`` is in autocommit mode."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for slot, block in slots:
            row = conn.execute(
                "SELECT block FROM claims WHERE network = ? AND device = ? AND slot = ?",
                (network, device, slot),
            ).fetchone()
            if row is not None and bytes(row[0]) != block:
                conn.execute("ROLLBACK")
                return False
            if row is None:
                conn.execute("INSERT INTO claims VALUES (?, ?, ?, ?)",
                             (network, device, slot, block))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


class SqliteClaims:
    """A ClaimTable in a SQLite file, committed with ``synchronous=FULL``."""

    def __init__(self, path: Path | str) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(CLAIMS_SCHEMA)

    def last(self, network: bytes, device: bytes) -> tuple[int, bytes] | None:
        """The highest claimed slot at the device and its block id, or None."""
        return sqlite_last_claim(self.conn, network, device)

    def claim(self, network: bytes, device: bytes, slots: list[tuple[int, bytes]]) -> bool:
        """Claim all the slots atomically; False (and nothing claimed) if one is taken."""
        return sqlite_claim(self.conn, network, device, slots)

    def close(self) -> None:
        """Close the file."""
        self.conn.close()


class Witness:
    """Signs votes for a network's ledger under the witness rule."""

    def __init__(self, key: SigningKey, claims: ClaimTable) -> None:
        self.key = key
        self.public = bytes(key.verify_key)
        self.claims = claims
        self._adopted: tuple[Ledger | None, int] = (None, 0)  # rows of a ledger looked at
        self._orphans: list[tuple[int, Vote]] = []  # votes of ours, block not here yet

    def vote(self, ledger: Ledger, devices: Iterable[bytes] | None = None) -> list[Vote]:
        """Claim and sign the votes the rule allows now, at most one per device."""
        if self.public not in ledger.witness_bit:
            return []
        net = ledger.network
        self._adopt_own_votes(ledger)
        out = []
        for device in sorted(devices if devices is not None else ledger.devices):
            last = self.claims.last(net, device)
            block = ledger.votable(device, last)
            if block is None:
                continue
            chain = ledger.chain(device)
            first = 0 if last is None else last[0] + 1
            if first > block.seq and not ledger.forked(device):
                continue
            if ledger.forked(device):
                slots = [(block.seq, block.id)]
            else:
                slots = [(s, chain[s]) for s in range(first, block.seq + 1)]
            if not self.claims.claim(net, device, slots):
                continue
            out.append(Vote(net, device, block.seq, block.id, self.public).signed(self.key))
        return out

    def resume(self, ledger: Ledger, position: int) -> None:
        """Start adopting own votes after row ``position`` of ``ledger`` (a ``position``
        kept from before: the rows up to it were looked at then)."""
        self._adopted, self._orphans = (ledger, position), []

    def position(self, ledger: Ledger) -> int:
        """The row of ``ledger`` up to which every vote of ours was adopted: what to
        keep for ``resume`` (a vote still waiting for its block keeps it back)."""
        seen, at = self._adopted
        if seen is not ledger:
            return 0
        return min([at, *(row - 1 for row, _ in self._orphans)])

    def _adopt_own_votes(self, ledger: Ledger) -> None:
        """Votes of ours found in the set bind us: claim what they cover (lost claims).

        Looks at each vote once (per ledger): ours among the rows added since the last
        call (found in SQL by the key), and votes of ours still waiting for their block.
        """
        seen, start = self._adopted
        if seen is not ledger:
            start, self._orphans = 0, []
        fresh = [*self._orphans, *ledger.tables.votes_by(self.public, start)]
        self._adopted = (ledger, max(start, ledger.tables.high_water()))
        self._orphans = []
        for row, v in fresh:
            assert isinstance(v, Vote) and v.witness == self.public
            if v.block_id not in ledger.blocks:
                self._orphans.append((row, v))  # binds us once its block is here
                continue
            last = self.claims.last(ledger.network, v.device)
            if last is not None and last[0] >= v.seq:
                continue
            chain = ledger.chain(v.device)
            if v.seq < len(chain) and chain[v.seq] == v.block_id:
                first = 0 if last is None else last[0] + 1
                slots = [(s, chain[s]) for s in range(first, v.seq + 1)]
            else:
                slots = [(v.seq, v.block_id)]
            self.claims.claim(ledger.network, v.device, slots)
