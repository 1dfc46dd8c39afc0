"""What another replica needs to judge some blocks as we do: their closure.

DESIGN §3 says what a block depends on: its chain below (rule 2, and a block is final
only when the chain below it is present), its device's opens, the send, issue or revoke
a receive claims (rule 4: it must be present, final or not), the revokes that route a
claim addressed to a revoked sibling, and votes. So the closure is transitive: a
payment carries the history of the money that funded it. And so that what is final
here is final there, a shipped block comes with the votes on it and with the blocks
above it that votes sit on (a vote covers everything below its block).

It is gathered a device at a time, in SQL over the ledger tables: what is shipped of a
device is every block of it up to a slot, so each round reads, per device whose slot
rose, the claims of its receives in the new range and the highest voted block above,
and nothing is parsed until the end. The cost follows what is shipped, with no
per-block round trip.
"""

from __future__ import annotations

from collections.abc import Iterable

from wallet.encoding import Entry, Kind, parse_entry
from wallet.ledger import Ledger
from wallet.ledger_tables import SQL_VARS_MAX

_RECEIVE, _REVOKE, _VOTE = int(Kind.RECEIVE), int(Kind.REVOKE), int(Kind.VOTE)


class _Closure:
    """Per device (by its row number in the tables): the highest slot shipped."""

    def __init__(self, led: Ledger) -> None:
        self.conn = led.tables.conn
        self.top: dict[int, int] = {}  # device ref → highest shipped seq
        self.done: dict[int, int] = {}  # device ref → seq up to which claims were read
        self.dirty: set[int] = set()

    def _ship(self, dev: int, seq: int) -> None:
        if seq > self.top.get(dev, -1):
            self.top[dev] = seq
            self.dirty.add(dev)

    def add(self, ids: list[bytes]) -> None:
        """Ship these blocks (and so every block of their devices below them)."""
        for n in range(0, len(ids), SQL_VARS_MAX):
            part = ids[n : n + SQL_VARS_MAX]
            for dev, seq, kind in self.conn.execute(
                    f"SELECT dev, seq, kind FROM entries WHERE id IN "
                    f"({','.join('?' * len(part))})", part):
                if kind != _VOTE:
                    self._ship(dev, seq)

    def settle(self, dev: int) -> list[bytes]:
        """One device's new range: the blocks above it that votes sit on (shipped at
        once), and the claims of its receives (returned, to ship next)."""
        c = self.conn
        (voted,) = c.execute(
            "SELECT max(b.seq) FROM entries b WHERE b.dev = ? AND b.seq > ? AND b.kind != ? "
            "AND EXISTS (SELECT 1 FROM entries v WHERE v.target = b.id AND v.kind = ?)",
            (dev, self.top[dev], _VOTE, _VOTE)).fetchone()
        if voted is not None:
            self.top[dev] = voted
        lo, hi = self.done.get(dev, -1), self.top[dev]
        self.done[dev] = hi
        claims = [bytes(t) for (t,) in c.execute(
            "SELECT target FROM entries WHERE dev = ? AND seq > ? AND seq <= ? AND kind = ?",
            (dev, lo, hi, _RECEIVE))]
        # A claim addressed to another device is routed by that device's revokes.
        routed: set[int] = set()
        for n in range(0, len(claims), SQL_VARS_MAX):
            part = claims[n : n + SQL_VARS_MAX]
            routed.update(p for (p,) in c.execute(
                f"SELECT peer FROM entries WHERE id IN ({','.join('?' * len(part))}) "
                f"AND peer IS NOT NULL AND peer != ?", [*part, dev]))
        for e in routed:
            claims.extend(bytes(i) for (i,) in c.execute(
                "SELECT id FROM entries WHERE dev = ? AND kind = ?", (e, _REVOKE)))
        return claims

    def bodies(self) -> list[bytes]:
        """The signed bytes of every shipped block and of the votes on them."""
        c = self.conn
        out: list[bytes] = []
        for dev, top in self.top.items():
            out.extend(bytes(b) for (b,) in c.execute(
                "SELECT body FROM entries WHERE dev = ? AND seq <= ? AND kind != ?",
                (dev, top, _VOTE)))
            out.extend(bytes(b) for (b,) in c.execute(
                "SELECT v.body FROM entries b JOIN entries v ON v.target = b.id "
                "WHERE b.dev = ? AND b.seq <= ? AND b.kind != ? AND v.kind = ?",
                (dev, top, _VOTE, _VOTE)))
        return out


def closure(led: Ledger, roots: Iterable[bytes]) -> list[Entry]:
    """The blocks ``roots`` and everything they depend on (see the module docstring),
    each entry after what it depends on."""
    from wallet.bundle import dependency_order

    c = _Closure(led)
    todo = list(roots)
    while todo:
        c.add(todo)
        todo = []
        while c.dirty:
            todo.extend(c.settle(c.dirty.pop()))
    return dependency_order(parse_entry(b, verify=False) for b in c.bodies())
