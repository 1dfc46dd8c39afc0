"""Reconciliation (DESIGN §5): a merchant's takings per till and per day, with totals
per status, refunds netted, requests matched, and for each refused taking its evidence
(the fraud proof, or the revoke beside the payment).

One report, built here, serves every face: ``tally takings`` (JSON, CSV, lines), the
daily close (``tally takings close``, a Z-report) and the app's till mode. A till
reports its own takings with the decisions it made; the merchant's main device reports
its tills from the ledger alone (``Takings.at_till``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wallet.encoding import Kind, id_text, key_text
from wallet.errors import WalletError
from wallet.floor import REFUSED, TAKING_STATES, Exposure, Limits
from wallet.ledger import CONFLICTED, INVALID, Ledger
from wallet.takings import Request, Taking, local_day, match

if TYPE_CHECKING:
    from wallet.wallet import Wallet

FORK = "fork"
REVOKE = "revoke"
EQUIVOCATION = "witness equivocation"
INVALID_EVIDENCE = "invalid"


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a taking was refused, as anyone can check it: the two signed blocks at one
    slot of the payer's device (a fork; a revoke beside the payment; a witness's
    equivocation), or the rule the payment breaks."""

    kind: str
    device: bytes
    seq: int
    blocks: tuple[bytes, ...] = ()
    reason: str = ""

    def doc(self) -> dict[str, Any]:
        """For ``--json`` and the CSV."""
        return {"kind": self.kind, "device": key_text(self.device), "seq": self.seq,
                "blocks": [id_text(b) for b in self.blocks], "reason": self.reason}

    def text(self, id_chars: int | None = None) -> str:
        """One line: what it is and the blocks it stands on (their ids cut to
        ``id_chars`` where a screen is narrow)."""
        if self.kind == INVALID_EVIDENCE:
            return f"invalid: {self.reason} (payment at seq {self.seq})"
        return (f"{self.kind} at seq {self.seq}: "
                + " vs ".join(id_text(b)[:id_chars] for b in self.blocks))


def evidence(led: Ledger, k: Taking) -> Evidence | None:
    """The evidence for a refused taking (None if its payment is not held here)."""
    b = led.blocks.get(k.id)
    st = led.status.get(k.id)
    if b is None or st is None:
        return None
    if st.state == INVALID:
        return Evidence(INVALID_EVIDENCE, b.device, b.seq, (b.id,), st.reason)
    if st.state != CONFLICTED:
        return None
    below = [p for p in led.frauds_of(b.device) if p.seq <= b.seq]
    if not below:
        return Evidence(FORK, b.device, b.seq, (b.id,), st.reason)
    proof = max(below, key=lambda p: p.seq)
    kinds = {led.blocks[i].kind for i in proof.block_ids if i in led.blocks}
    kind = EQUIVOCATION if proof.equivocation else REVOKE if Kind.REVOKE in kinds else FORK
    return Evidence(kind, proof.device, proof.seq, proof.block_ids, st.reason)


@dataclass
class TillTakings:
    """One till's takings in a report."""

    till: bytes
    label: str
    this: bool
    """The device reporting: its own decisions, limits and write-offs."""
    rows: list[Taking]
    totals: dict[str, int] = field(default_factory=dict)
    """Minor units per state."""
    days: dict[str, dict[str, int]] = field(default_factory=dict)
    """Minor units per state, per local day."""

    def __post_init__(self) -> None:
        self.totals, self.days = totals_by_day(self.rows)

    @property
    def exposure(self) -> int:
        """What this till has at risk, from its rows (for the device reporting, its
        exposure proper is ``TakingsReport.exposure``, which also ages them out with no
        witnesses)."""
        return sum(k.amount for k in self.rows if k.exposed)


def totals_by_day(rows: list[Taking]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Totals per state, in all and per local day (minor units)."""
    days: dict[str, dict[str, int]] = {}
    by_minute: dict[int, dict[str, int]] = {}  # one local-time lookup a minute, not a row
    for k in rows:
        minute = k.taken_at // 60
        day = by_minute.get(minute)
        if day is None:
            when = local_day(k.taken_at)
            day = days.get(when)
            if day is None:
                day = days[when] = dict.fromkeys(TAKING_STATES, 0)
            by_minute[minute] = day
        day[k.state] += k.amount
    totals: dict[str, int] = dict.fromkeys(TAKING_STATES, 0)
    for day in days.values():
        for state, v in day.items():
            totals[state] += v
    return totals, days


@dataclass
class TakingsReport:
    """What ``tally takings`` shows: per till, per day, totals, refunds, requests."""

    tills: list[TillTakings]
    refunded: dict[bytes, int]
    """Minor units sent back by refunds, per taking that has any."""
    evidence: dict[bytes, Evidence]
    """For each refused taking shown."""
    requests: list[tuple[Request, str, int]]
    """Each request made in the span: how it stands, and what was paid toward it."""
    exposure: Exposure
    """This device's exposure now (as a till)."""
    limits: Limits
    changed: list[tuple[Taking, str | None]] = field(default_factory=list)
    """Takings new or moved since the last report (with where each stood then)."""

    @property
    def rows(self) -> list[Taking]:
        """Every taking shown, till by till."""
        return [k for t in self.tills for k in t.rows]

    @property
    def totals(self) -> dict[str, int]:
        """Minor units per state, over every till shown."""
        out = dict.fromkeys(TAKING_STATES, 0)
        for t in self.tills:
            for state, v in t.totals.items():
                out[state] += v
        return out

    @property
    def net(self) -> int:
        """The takings not refused, less what refunds sent back (minor units)."""
        kept = sum(v for st, v in self.totals.items() if st != REFUSED)
        return kept - sum(self.refunded.values())


ALL_TILLS = b"all"
"""``till=ALL_TILLS``: every till of the account this replica knows of."""


def build(w: Wallet, *, since: int | None = None, until: int | None = None,
          till: bytes | None = None, status: str | None = None,
          remember: bool = False, now: float | None = None) -> TakingsReport:
    """The report of a span (``until`` exclusive): of one till; of every till of the
    account this replica knows of (``ALL_TILLS``, this device's own takings first); by
    default, of this device when it is a till, else of every till (the merchant's main
    device). ``remember``: this report becomes the last one (``changed`` tells what
    moved since the one before)."""
    me, account = w.device or b"", w.account or b""
    labels = dict(w.store.account_labels(account)) if account else {}
    if till is None:
        till = me if w.takings.any() else ALL_TILLS
    tills: list[TillTakings] = []
    for key in [me, *sorted(set(labels) - {me})] if till == ALL_TILLS else [till]:
        if key == me:
            rows = w.takings.rows(since=since, until=until)
        else:
            if key not in labels:
                raise WalletError(f"device {key_text(key)[:12]}… is no device of this "
                                  "account (`tally devices list` shows them)")
            rows = w.takings.at_till(key, account, since=since, until=until)
        if status:
            rows = [k for k in rows if k.state == status]
        if rows or till != ALL_TILLS or (key == me and w.takings.any()):
            tills.append(TillTakings(key, labels.get(key, ""), key == me, rows))
    shown = [k for t in tills for k in t.rows]
    changed = w.takings.changed_since_report(shown) if remember and not status else []
    refunded = w.takings.refunds_of(k.id for k in shown)
    led = w.ledger
    proofs = {k.id: e for k in shown if k.state == REFUSED
              and (e := evidence(led, k)) is not None}
    t = time.time() if now is None else now
    requests = w.takings.requests(since=since, until=until)
    naming = w.takings.naming(r.id for r in requests)
    matched = [(r, *match(r, naming, t)) for r in requests]
    return TakingsReport(tills, refunded, proofs, matched, w.takings.exposure(t),
                         w.till_limits(), changed)

