"""Validation (DESIGN §3–4): statuses and balances as one deterministic function of the set.

``Ledger`` holds a network's entries in memory and keeps, incrementally, every block's
status, every device's balances, certificates, forks and fraud proofs. Entries reach it
already parsed and signature-checked (the gate and ``parse_entry`` do that); what it
decides needs the rest of the set.

How it stays incremental. For each device it keeps a *main chain*: the path from its
open through the device's tree of blocks (linked by ``prev``) that takes, at each slot,
the only child, or at a fork the single certified child (with ``q`` = 0, the single
account-signed revoke). Blocks off the main chain are conflicted (or pending, when they
hang from a missing block). Along the main chain it keeps a *frontier*: every block
before it is valid; the block at it is pending or invalid, and every later block shares
that state with reason ``prev``. Running totals of final credits, incoming credits and
sends over the valid prefix make rule 3 O(1) per block, so merging k entries costs O(k)
plus the statuses that change. Credit changes travel from a send to the receives that
claim it through a worklist of dirty devices; the claim graph follows hashes, so it has
no cycles and the worklist reaches the one fixpoint whatever the order of arrival.

Whether a receive holds depends on blocks present only, never on statuses (rule 4): a
claim of a payment to a revoked sibling holds through a revoke naming the claimer whose
chain below is present and does not claim it (``_below``, cached once complete); the
revoke's status prices the credit. A revoke's credit is its device's totals, so its
claimers are re-priced whenever that device is refreshed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from wallet.encoding import Block, Genesis, Kind, Vote

PENDING = "pending"
VALID = "valid"
INVALID = "invalid"
CONFLICTED = "conflicted"

# Reason codes, named after DESIGN's wording.
R_PREV = "prev"  # prev (or an ancestor) is missing, pending, invalid or conflicted
R_FUNDS = "funds"  # rule 3: enough only with credits not final yet
R_OVERSPEND = "overspend"  # rule 3: not enough even with incoming credits
R_CLAIM_MISSING = "claim_missing"  # the claimed send is not in the set yet
R_REVOKE_MISSING = "revoke_missing"  # claims a send to another device, no revoke names us
R_NOT_ADDRESSED = "not_addressed"  # the claimed entry is not a payment/revoke to this device
R_DOUBLE_CLAIM = "double_claim"  # claimed earlier in this chain (or by the revoked device)
R_ISSUE_NOT_ISSUER = "issue_not_issuer"  # an issue outside the issuing device's chain
R_AFTER_REVOKE = "after_revoke"  # a block after a revoke
R_REVOKE_ACCOUNT = "revoke_account"  # a revoke not signed by the device's account
R_REVOKE_ISSUER = "revoke_issuer"  # the issuing device cannot be revoked
R_BAD_PREV = "bad_prev"  # prev is present but is not this device's block at seq-1
R_LOST = "lost"  # the other side of the fork is certified
R_DISPUTED = "disputed"  # a fork with no side certified
R_EQUIVOCATION = "equivocation"  # a witness-equivocation proof covers this slot


# What people see (DESIGN §3, §5): on a network with no witnesses (q = 0) nothing is ever
# final, so a valid block reads "accepted, no witness" there, in every output.
FINAL_WORD = "final"
VALID_WORD = "valid"
ACCEPTED_WORD = "accepted, no witness"
STATUS_WORDS = (FINAL_WORD, VALID_WORD, ACCEPTED_WORD, PENDING, INVALID, "lost", "disputed")
"""Every word a status reads as; ``status_word`` gives exactly one of them."""


def status_word(state: str, reason: str, final: bool, witnessed: bool) -> str:
    """The one word a status reads as. ``witnessed`` is False on a network with q = 0,
    where ``final`` means valid (rule 3) but is never shown as final to anyone."""
    if state == VALID:
        if not witnessed:
            return ACCEPTED_WORD
        return FINAL_WORD if final else VALID_WORD
    if state == CONFLICTED:
        return R_LOST if reason == R_LOST else R_DISPUTED
    return state


@dataclass(frozen=True, slots=True)
class Status:
    """A block's status: state, reason code (empty when valid) and finality.

    ``final`` is finality as the rules use it (with q = 0 it means valid); ``witnessed``
    is False on a network with no witnesses, where no status ever reads as final.
    """

    state: str
    reason: str = ""
    final: bool = False
    witnessed: bool = True

    @property
    def label(self) -> str:
        """One word for people: final, valid, accepted (no witness), pending, invalid, lost
        or disputed."""
        return status_word(self.state, self.reason, self.final, self.witnessed)

    @property
    def shown_final(self) -> bool:
        """Final as people and scripts are told: certified by witnesses, never with q = 0."""
        return self.final and self.witnessed and self.state == VALID


S_VALID = Status(VALID)
S_FINAL = Status(VALID, "", True)
S_ACCEPTED = Status(VALID, "", True, witnessed=False)
"""A valid block on a network with no witnesses: final for rule 3, never shown as final."""


@dataclass(frozen=True, slots=True)
class StatusChange:
    """An event: a block's status changed (``old`` is None when the block is new)."""

    block_id: bytes
    device: bytes
    seq: int
    kind: Kind
    old: Status | None
    new: Status


@dataclass(frozen=True, slots=True)
class Balance:
    """A device's balances in minor units (DESIGN §3).

    ``moving`` is money a sibling device of its account sent it (a move, a revoke's
    balance) and ``to_claim`` money other accounts sent it, that no receive claims yet:
    counted here, and nowhere else, so a move never makes money vanish from the total
    (what so waits at a revoked device is counted at the sibling that claims it).
    """

    spendable: int
    incoming: int
    moving: int = 0
    to_claim: int = 0

    @property
    def total(self) -> int:
        """Everything the device holds or has coming: spendable + incoming + unclaimed."""
        return self.spendable + self.incoming + self.moving + self.to_claim

    def __add__(self, other: Balance) -> Balance:
        return Balance(self.spendable + other.spendable, self.incoming + other.incoming,
                       self.moving + other.moving, self.to_claim + other.to_claim)


@dataclass(frozen=True, slots=True)
class FraudProof:
    """Two signed blocks at one slot of a device: anyone can verify it."""

    device: bytes
    seq: int
    block_ids: tuple[bytes, ...]
    equivocation: bool


class _Device:
    """What the ledger keeps per device; see the module docstring."""

    __slots__ = (
        "account",
        "block_ids",
        "cert_top",
        "cf",
        "ci",
        "claimed",
        "fork_slots",
        "frontier",
        "index",
        "issuing",
        "key",
        "main",
        "revokes",
        "roots",
        "sent",
        "tail_done",
        "tot_final",
        "tot_incoming",
        "tot_sent",
    )

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.account: bytes | None = None
        self.issuing = False
        self.block_ids: set[bytes] = set()
        self.roots: list[bytes] = []
        self.main: list[bytes] = []
        self.index: dict[bytes, int] = {}
        self.frontier = 0
        self.cert_top = -1
        self.cf: list[int] = []
        self.ci: list[int] = []
        self.sent: list[int] = []
        self.tot_final = 0
        self.tot_incoming = 0
        self.tot_sent = 0
        self.claimed: dict[bytes, int] = {}
        self.fork_slots: set[int] = set()
        self.revokes: list[bytes] = []
        self.tail_done = 0


class Ledger:
    """A network's set of entries with every status and balance derived from it."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.network = genesis.network_id
        self.quorum = genesis.quorum
        self.witness_bit = {w: 1 << i for i, w in enumerate(genesis.witnesses)}
        self.blocks: dict[bytes, Block] = {}
        self.votes: dict[bytes, Vote] = {}
        # Every entry in the order it was added: lets a follower (the replica's Doc, the
        # witness) take only what is new, O(new), however large the set.
        self.arrivals: list[Block | Vote] = []
        self.status: dict[bytes, Status] = {}
        self.cover: dict[bytes, int] = {}
        self.devices: dict[bytes, _Device] = {}
        self._by_prev: defaultdict[bytes, list[bytes]] = defaultdict(list)
        self._votes_for: defaultdict[bytes, list[bytes]] = defaultdict(list)
        self._claimers: defaultdict[bytes, set[bytes]] = defaultdict(set)
        self._waiting: defaultdict[bytes, set[bytes]] = defaultdict(set)
        self._routed: defaultdict[tuple[bytes, bytes], set[bytes]] = defaultdict(set)
        self._below_cache: dict[bytes, frozenset[bytes] | bool] = {}
        # Payments and revokes by recipient device that no valid receive claims yet.
        self._unclaimed: defaultdict[bytes, set[bytes]] = defaultdict(set)
        # Revokes by the sibling they name (whatever their status).
        self._revokes_to: defaultdict[bytes, set[bytes]] = defaultdict(set)
        self._dirty: dict[bytes, int] = {}
        self._changes: list[StatusChange] = []

    # ------------------------------------------------------------------ adding
    def __contains__(self, entry_id: bytes) -> bool:
        return entry_id in self.blocks or entry_id in self.votes

    def __len__(self) -> int:
        return len(self.blocks) + len(self.votes)

    def add(self, entries: Iterable[Block | Vote]) -> list[StatusChange]:
        """Merge entries (parsed and signature-checked); return the status changes.

        A batch holding an entry of another network, or a vote by a key outside the
        genesis, raises ValueError and changes nothing.
        """
        fresh: dict[bytes, Block | Vote] = {}
        for e in entries:
            if e.id in self.blocks or e.id in self.votes:
                continue
            if e.network != self.network:
                raise ValueError("entry of another network reached the ledger")
            if isinstance(e, Vote) and e.witness not in self.witness_bit:
                raise ValueError("vote by a key outside the genesis reached the ledger")
            fresh[e.id] = e
        new_blocks: list[Block] = []
        new_votes: list[Vote] = []
        self.arrivals.extend(fresh.values())
        for e in fresh.values():
            if isinstance(e, Vote):
                self.votes[e.id] = e
                new_votes.append(e)
            else:
                self.blocks[e.id] = e
                new_blocks.append(e)
        new_blocks.sort(key=lambda b: b.seq)
        for b in new_blocks:
            self._add_block(b)
        for v in new_votes:
            self._add_vote(v)
        self._run()
        changes, self._changes = self._changes, []
        return changes

    def _device(self, key: bytes) -> _Device:
        d = self.devices.get(key)
        if d is None:
            d = self.devices[key] = _Device(key)
        return d

    def _mark(self, device: bytes, from_index: int = 1 << 62) -> None:
        cur = self._dirty.get(device)
        if cur is None or from_index < cur:
            self._dirty[device] = from_index

    def _add_block(self, b: Block) -> None:
        d = self._device(b.device)
        d.block_ids.add(b.id)
        if b.seq == 0:
            d.roots.append(b.id)
            if len(d.roots) > 1:
                d.fork_slots.add(0)
        else:
            self._by_prev[b.prev].append(b.id)
            siblings = self._children(b.prev)
            if len(siblings) > 1:
                d.fork_slots.add(b.seq)
        if len(self._children(b.id)) > 1:
            d.fork_slots.add(b.seq + 1)
        if b.kind == Kind.REVOKE:
            d.revokes.append(b.id)
            self._revokes_to[b.to_device].add(b.id)
            for waiter in self._waiting.pop(b.device, ()):
                self._mark(waiter)
        if b.kind == Kind.RECEIVE:
            self._claimers[b.claim].add(b.id)
        elif b.kind in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
            self._unclaimed[b.to_device].add(b.id)
        for waiter in self._waiting.pop(b.id, ()):
            self._mark(waiter)
        bits = 0
        for vid in self._votes_for.get(b.id, ()):
            bits |= self._vote_bit(self.votes[vid], b)
        for c in self._children(b.id):
            bits |= self.cover.get(c, 0)
        self.cover[b.id] = 0
        self._spread(b.id, bits)
        self._mark(b.device)

    def _add_vote(self, v: Vote) -> None:
        self._votes_for[v.block_id].append(v.id)
        b = self.blocks.get(v.block_id)
        if b is not None:
            self._spread(b.id, self._vote_bit(v, b))

    def _vote_bit(self, v: Vote, b: Block) -> int:
        """A vote counts only if its block id, device and seq all match."""
        if v.device != b.device or v.seq != b.seq:
            return 0
        return self.witness_bit[v.witness]

    def _spread(self, block_id: bytes, bits: int) -> None:
        """Add witness bits to a block and every block below it (a vote covers them)."""
        bid: bytes | None = block_id
        touched = None
        while bid is not None and bits:
            have = self.cover.get(bid)
            if have is None:
                break
            new = bits & ~have
            if not new:
                break
            self.cover[bid] = have | new
            b = self.blocks[bid]
            touched = b.device
            bits = new
            p = self.blocks.get(b.prev) if b.seq else None
            bid = p.id if p is not None and p.device == b.device and p.seq == b.seq - 1 else None
        if touched is not None:
            self._mark(touched)

    def _children(self, block_id: bytes) -> list[bytes]:
        """Blocks naming ``block_id`` as prev that sit at the next slot of its device."""
        kids = self._by_prev.get(block_id)
        if not kids:
            return []
        p = self.blocks.get(block_id)
        if p is None:
            return []
        return [
            c for c in kids if (cb := self.blocks[c]).device == p.device and cb.seq == p.seq + 1
        ]

    # ------------------------------------------------------------- certificates
    def certified(self, block_id: bytes) -> bool:
        """Votes of at least q distinct witnesses cover the block (never, with q = 0)."""
        return self.quorum > 0 and self.cover.get(block_id, 0).bit_count() >= self.quorum

    def _tree_children(self, d: _Device, block_id: bytes) -> list[bytes]:
        """Children that compete for the next slot: a revoke by a stranger does not."""
        out = []
        for c in self._children(block_id):
            cb = self.blocks[c]
            if cb.kind == Kind.REVOKE and cb.account != d.account:
                continue
            out.append(c)
        return out

    def _candidates(self, d: _Device, slot: int) -> list[bytes]:
        if slot == 0:
            return list(d.roots)
        return self._tree_children(d, d.main[slot - 1])

    def _decide(self, d: _Device, slot: int, cands: list[bytes]) -> tuple[bytes | None, str]:
        """Which candidate the main chain takes at a slot, or why none (a reason code)."""
        if len(cands) == 1:
            return cands[0], ""
        cert = [c for c in cands if self.certified(c)]
        if len(cert) >= 2:
            return None, R_EQUIVOCATION
        if len(cert) == 1:
            return cert[0], R_LOST
        # Every open carries its device's signature (the gate refuses one without), so
        # two opens at slot 0 are a fork like any other: the device key signed both.
        if self.quorum == 0:
            revokes = [c for c in cands if self.blocks[c].kind == Kind.REVOKE]
            if len(revokes) == 1:
                return revokes[0], R_LOST
        return None, R_DISPUTED

    # ---------------------------------------------------------------- fixpoint
    def _run(self) -> None:
        guard = 0
        while self._dirty:
            key, from_index = self._dirty.popitem()
            self._refresh(self.devices[key], from_index)
            guard += 1
            assert guard < 10_000_000, "validator did not reach a fixpoint"

    def _refresh(self, d: _Device, from_index: int) -> None:
        self._settle_main(d)
        if from_index < d.frontier:
            self._rewind(d, from_index)
        self._advance(d)
        self._offmain(d)
        # A revoke's credit is d's balance: re-price its claimers whenever d was looked at
        # (d's totals may also have moved before this refresh, by _recredit_claimers).
        for rid in d.revokes:
            self._recredit_claimers(rid)

    def _settle_main(self, d: _Device) -> None:
        """Re-decide forks and extend the main chain as far as it is decided."""
        for slot in sorted(d.fork_slots):
            if slot >= len(d.main):
                break
            chosen, _ = self._decide(d, slot, self._candidates(d, slot))
            if chosen != d.main[slot]:
                self._truncate(d, slot)
                break
        while True:
            slot = len(d.main)
            if slot == 0:
                d.account = None
            cands = self._candidates(d, slot)
            if not cands:
                break
            chosen, _ = self._decide(d, slot, cands)
            if chosen is None:
                break
            if slot == 0:
                ob = self.blocks[chosen]
                d.account = ob.account
                d.issuing = ob.account == self.genesis.issuer
            d.index[chosen] = slot
            d.main.append(chosen)
            d.cf.append(0)
            d.ci.append(0)
            d.sent.append(0)
        top = d.cert_top
        while top + 1 < len(d.main) and self.certified(d.main[top + 1]):
            top += 1
        for i in range(d.cert_top + 1, min(top + 1, d.frontier)):
            self._set(d.main[i], S_FINAL)
        d.cert_top = top

    def _truncate(self, d: _Device, slot: int) -> None:
        self._rewind(d, slot)
        for bid in d.main[slot:]:
            del d.index[bid]
        del d.main[slot:], d.cf[slot:], d.ci[slot:], d.sent[slot:]
        d.cert_top = min(d.cert_top, slot - 1)
        d.tail_done = min(d.tail_done, slot)

    def _rewind(self, d: _Device, to: int) -> None:
        """Take blocks to..frontier-1 out of the valid prefix, to be evaluated again."""
        to = max(to, 0)
        for i in range(d.frontier - 1, to - 1, -1):
            d.tot_final -= d.cf[i]
            d.tot_incoming -= d.ci[i]
            d.tot_sent -= d.sent[i]
            d.cf[i] = d.ci[i] = d.sent[i] = 0
            b = self.blocks[d.main[i]]
            if b.kind == Kind.RECEIVE and d.claimed.get(b.claim) == i:
                del d.claimed[b.claim]
        d.frontier = min(d.frontier, to)

    def _advance(self, d: _Device) -> None:
        """Evaluate the main chain from the frontier on; stop at the first non-valid block."""
        n = len(d.main)
        while d.frontier < n:
            i = d.frontier
            st = self._evaluate(d, i)
            unchanged = self.status.get(d.main[i]) == st
            self._set(d.main[i], st)
            if st.state != VALID:
                inherited = Status(st.state, R_PREV)
                for j in range(max(i + 1, d.tail_done) if unchanged else i + 1, n):
                    self._set(d.main[j], inherited)
                d.tail_done = n
                return
            d.frontier = i + 1
        d.tail_done = n

    def _evaluate(self, d: _Device, i: int) -> Status:
        """Rules 1–4 for main-chain block i, every block before it being valid.

        On a valid result it books the block's credit or send into the running totals.
        """
        b = self.blocks[d.main[i]]
        final = i <= d.cert_top
        # Finality excuses rule 3 only (a replica may lack votes its voters saw); these
        # rules read nothing a replica can lack, so a certificate never overrides them.
        if i > 0 and self.blocks[d.main[i - 1]].kind == Kind.REVOKE:
            return Status(INVALID, R_AFTER_REVOKE)
        k = b.kind
        if k == Kind.ISSUE and not d.issuing:
            return Status(INVALID, R_ISSUE_NOT_ISSUER)
        if k == Kind.REVOKE and d.issuing:
            return Status(INVALID, R_REVOKE_ISSUER)
        if k in (Kind.SEND, Kind.ISSUE):
            if not (final or d.issuing):
                spendable = d.tot_final - d.tot_sent
                if spendable < b.amount:
                    if spendable + d.tot_incoming >= b.amount:
                        return Status(PENDING, R_FUNDS)
                    return Status(INVALID, R_OVERSPEND)
            d.sent[i] = b.amount
            d.tot_sent += b.amount
        elif k == Kind.RECEIVE:
            st = self._check_claim(d, b, i)
            if st is not None:
                return st
            d.claimed[b.claim] = i
            cf, ci = self._credit(d, b)
            d.cf[i], d.ci[i] = cf, ci
            d.tot_final += cf
            d.tot_incoming += ci
        if self.quorum == 0:
            return S_ACCEPTED
        return S_FINAL if final else S_VALID

    def _check_claim(self, d: _Device, r: Block, i: int) -> Status | None:
        """Rule 4, or None when the claim holds; finality never excuses a double claim."""
        s = self.blocks.get(r.claim)
        if s is None:
            if r.claim in self.votes:
                return Status(INVALID, R_NOT_ADDRESSED)
            self._waiting[r.claim].add(d.key)
            return Status(PENDING, R_CLAIM_MISSING)
        if s.kind not in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
            return Status(INVALID, R_NOT_ADDRESSED)
        if d.claimed.get(r.claim, i) < i:
            return Status(INVALID, R_DOUBLE_CLAIM)
        if s.to_device == d.key:
            if s.to_account != d.account:
                return Status(INVALID, R_NOT_ADDRESSED)
            return None
        if s.kind == Kind.REVOKE or s.to_account != d.account:
            return Status(INVALID, R_NOT_ADDRESSED)
        # A payment to a sibling x: claimable through a revoke of x naming d whose
        # chain below (x's blocks 0..s) does not claim it. Whether it holds depends only
        # on blocks present, never on statuses: the revoke's status prices the credit.
        self._routed[(s.to_device, d.key)].add(r.id)
        self._waiting[s.to_device].add(d.key)  # another revoke may route it
        waiting = found = False
        for rid in self._routes(s.to_device, d):
            below = self._below(rid, d.key)
            if below is None:
                waiting = True
            elif below is not False:
                if r.claim not in below:
                    return None
                found = True
        if waiting:
            return Status(PENDING, R_PREV)
        if found:
            return Status(INVALID, R_DOUBLE_CLAIM)
        return Status(PENDING, R_REVOKE_MISSING)

    def _routes(self, x_key: bytes, d: _Device) -> list[bytes]:
        """The revokes of device x that name d and are signed by d's account."""
        x = self.devices.get(x_key)
        if x is None:
            return []
        return [
            rid
            for rid in x.revokes
            if (rb := self.blocks[rid]).to_device == d.key and rb.account == d.account
        ]

    def _below(self, rid: bytes, waiter: bytes | None = None) -> frozenset[bytes] | bool | None:
        """What the chain below a revoke claims, once all of it is present (cached).

        None while a block of it is missing (``waiter`` is woken when it arrives);
        False when the revoke routes nothing: its chain is broken or its open is not
        signed by the revoke's account.
        """
        got = self._below_cache.get(rid)
        if got is not None:
            return got
        rb = self.blocks[rid]
        claims: set[bytes] = set()
        cur = rb
        out: frozenset[bytes] | bool
        while cur.seq:
            p = self.blocks.get(cur.prev)
            if p is None:
                if waiter is not None:
                    self._waiting[cur.prev].add(waiter)
                return None
            if p.device != cur.device or p.seq != cur.seq - 1:
                cur = rb
                break
            if p.kind == Kind.RECEIVE:
                claims.add(p.claim)
            cur = p
        out = frozenset(claims) if cur.seq == 0 and cur.account == rb.account else False
        self._below_cache[rid] = out
        return out

    # ------------------------------------------------------------------ credits
    def _credit(self, d: _Device, r: Block) -> tuple[int, int]:
        """A valid receive's credit as (final, incoming) minor units."""
        s = self.blocks[r.claim]
        if s.kind == Kind.REVOKE:
            return self._revoke_credit(s)
        st = self.status.get(s.id)
        if st is None or st.state in (INVALID, CONFLICTED):
            return 0, 0
        send_final = st.final
        if s.to_device != d.key:
            # routed by a revoke: the best of the revokes that route it prices it
            best = 0
            for rid in self._routes(s.to_device, d):
                below = self._below(rid)
                rst = self.status.get(rid)
                if below is None or below is False or r.claim in below or rst is None:
                    continue
                if rst.state in (VALID, PENDING):
                    best = max(best, 2 if rst.final else 1)
            if best == 0:
                return 0, 0
            send_final = send_final and best == 2
        return (s.amount, 0) if send_final else (0, s.amount)

    def _revoke_credit(self, v: Block) -> tuple[int, int]:
        st = self.status.get(v.id)
        x = self.devices[v.device]
        if st is None or st.state in (INVALID, CONFLICTED) or v.id not in x.index:
            return 0, 0  # lost, invalid, or its chain below is missing: x's totals are not it
        balance_final = x.tot_final - x.tot_sent
        if st.final:
            return balance_final, x.tot_incoming
        return 0, balance_final + x.tot_incoming

    def _recredit_claimers(self, entry_id: bytes) -> None:
        """An entry's status or value changed: re-price the receives that claim it
        (for a revoke, also the receives it routes to its sibling)."""
        rids = set(self._claimers.get(entry_id, ()))
        b = self.blocks.get(entry_id)
        if b is not None and b.kind == Kind.REVOKE:
            rids |= self._routed.get((b.device, b.to_device), set())
        for rid in rids:
            r = self.blocks[rid]
            e = self.devices[r.device]
            i = e.index.get(rid)
            if i is None:
                continue
            if i >= e.frontier:
                if i == e.frontier:
                    self._mark(e.key)
                continue
            cf, ci = self._credit(e, r)
            if (cf, ci) == (e.cf[i], e.ci[i]):
                continue
            decreased = cf < e.cf[i] or cf + ci < e.cf[i] + e.ci[i]
            e.tot_final += cf - e.cf[i]
            e.tot_incoming += ci - e.ci[i]
            e.cf[i], e.ci[i] = cf, ci
            self._mark(e.key, i + 1 if decreased else 1 << 62)

    # ------------------------------------------------------------ off the chain
    def _offmain(self, d: _Device) -> None:
        """Statuses of d's blocks that are not on its main chain."""
        if len(d.block_ids) == len(d.main):
            return
        memo: dict[bytes, Status] = {}
        for bid in sorted(d.block_ids - d.index.keys(), key=lambda x: self.blocks[x].seq):
            self._set(bid, self._offmain_status(d, bid, memo))

    def _offmain_status(self, d: _Device, bid: bytes, memo: dict[bytes, Status]) -> Status:
        if bid in memo:
            return memo[bid]
        b = self.blocks[bid]
        st: Status
        if b.seq == 0:
            st = self._rejected(d, 0, bid)
        else:
            p = self.blocks.get(b.prev)
            if p is None:
                st = Status(PENDING, R_PREV)
            elif p.device != b.device or p.seq != b.seq - 1:
                st = Status(INVALID, R_BAD_PREV)
            elif b.kind == Kind.REVOKE and d.account is not None and b.account != d.account:
                st = Status(INVALID, R_REVOKE_ACCOUNT)
            elif p.id in d.index:
                pst = self.status[p.id]
                if pst.state != VALID:
                    st = Status(pst.state, R_PREV if pst.state != CONFLICTED else pst.reason)
                else:
                    st = self._rejected(d, b.seq, bid)
            else:
                pst = self._offmain_status(d, p.id, memo)
                st = pst if pst.state == CONFLICTED else Status(pst.state, R_PREV)
        memo[bid] = st
        return st

    def _rejected(self, d: _Device, slot: int, bid: bytes) -> Status:
        """The status of a candidate the main chain did not take at a slot."""
        if slot == 0 and d.account is None and len(d.roots) == 1:
            return Status(PENDING, R_PREV)
        cands = self._candidates(d, slot) if slot <= len(d.main) else []
        if bid not in cands:
            return Status(PENDING, R_PREV)
        _, why = self._decide(d, slot, cands)
        return Status(CONFLICTED, why or R_DISPUTED)

    def _set(self, bid: bytes, st: Status) -> None:
        old = self.status.get(bid)
        if old == st:
            return
        self.status[bid] = st
        b = self.blocks[bid]
        self._changes.append(StatusChange(bid, b.device, b.seq, b.kind, old, st))
        if b.kind in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
            self._recredit_claimers(bid)
        elif b.kind == Kind.RECEIVE:
            was = old is not None and old.state == VALID
            if (st.state == VALID) != was:
                claimed = self.blocks[b.claim]  # a receive is valid only with its claim here
                if st.state == VALID:
                    self._unclaimed[claimed.to_device].discard(claimed.id)
                elif not self._validly_claimed(claimed.id):
                    self._unclaimed[claimed.to_device].add(claimed.id)

    def _validly_claimed(self, entry_id: bytes) -> bool:
        """True when some valid receive claims the entry."""
        return any(self.status[r].state == VALID for r in self._claimers.get(entry_id, ())
                   if r in self.status)

    # ----------------------------------------------------------------- queries
    def balance(self, device: bytes) -> Balance:
        """A device's balances (zero for an unknown device); see ``Balance``.

        What waits unclaimed at a device retired by a valid revoke is counted at the
        revoke's sibling, the one device that can claim it (DESIGN §4)."""
        moving, to_claim = self._passed_on(device) if device in self._revokes_to else (0, 0)
        d = self.devices.get(device)
        if d is not None and self._revoked_head(d) is not None:
            return Balance(0, 0, moving, to_claim)  # a valid revoke passed it all on
        own_moving, own_to_claim = self._unclaimed_value(device)
        moving, to_claim = moving + own_moving, to_claim + own_to_claim
        if d is None:
            return Balance(0, 0, moving, to_claim)
        return Balance(d.tot_final - d.tot_sent, d.tot_incoming, moving, to_claim)

    def _revoked_head(self, d: _Device) -> Block | None:
        """The valid revoke that ends the device's main chain, or None."""
        if d.frontier:
            head = self.blocks[d.main[d.frontier - 1]]
            if head.kind == Kind.REVOKE:
                return head
        return None

    def _passed_on(self, device: bytes) -> tuple[int, int]:
        """(moving, to claim) waiting unclaimed at the devices whose valid revoke names
        this one: this device claims it."""
        moving = to_claim = 0
        for rid in self._revokes_to.get(device, ()):
            x = self.devices[self.blocks[rid].device]
            head = self._revoked_head(x)
            if head is not None and head.id == rid:
                m, c = self._unclaimed_value(x.key)
                moving, to_claim = moving + m, to_claim + c
        return moving, to_claim

    def _unclaimed_value(self, device: bytes) -> tuple[int, int]:
        """(moving, to claim): what valid payments and revokes addressed to the device
        that no valid receive claims are worth, from its own account and from others.

        Only valid ones: a pending send is still in its sender's spendable balance."""
        moving = to_claim = 0
        d = self.devices.get(device)
        account = d.account if d is not None else None
        for pid in self._unclaimed.get(device, ()):
            st = self.status.get(pid)
            if st is None or st.state != VALID:
                continue
            p = self.blocks[pid]
            if p.kind == Kind.REVOKE:
                moving += sum(self._revoke_credit(p))
                continue
            sender = self.devices[p.device].account
            if account is not None and sender == account:
                moving += p.amount
            else:
                to_claim += p.amount
        return moving, to_claim

    def revoke_value(self, revoke_id: bytes) -> int:
        """What a revoke passes to its sibling (final and incoming parts together)."""
        return sum(self._revoke_credit(self.blocks[revoke_id]))

    def account_devices(self, account: bytes) -> list[bytes]:
        """The devices whose main open names this account, ordered by key."""
        return sorted(k for k, d in self.devices.items() if d.account == account)

    def account_balance(self, account: bytes) -> Balance:
        """The sum of the balances of the account's devices."""
        total = Balance(0, 0)
        for k in self.account_devices(account):
            total = total + self.balance(k)
        return total

    def chain(self, device: bytes) -> list[bytes]:
        """The device's main chain, open first."""
        d = self.devices.get(device)
        return list(d.main) if d else []

    def head(self, device: bytes) -> Block | None:
        """The last valid block of the device's main chain, the one to build on."""
        d = self.devices.get(device)
        if d is None or d.frontier == 0:
            return None
        return self.blocks[d.main[d.frontier - 1]]

    def tip(self, device: bytes) -> Block | None:
        """The last block of the device's main chain, valid or not."""
        d = self.devices.get(device)
        return self.blocks[d.main[-1]] if d and d.main else None

    def fraud_proofs(self) -> list[FraudProof]:
        """Every fork held: two or more signed blocks competing for one slot."""
        out: list[FraudProof] = []
        for key in self.devices:
            out.extend(self._device_frauds(key))
        return out

    def _device_frauds(self, key: bytes) -> list[FraudProof]:
        d = self.devices.get(key)
        out: list[FraudProof] = []
        if d is not None:
            for slot in sorted(d.fork_slots):
                groups: list[list[bytes]] = []
                if slot == 0:
                    groups.append(list(d.roots))
                else:
                    seen: dict[bytes, list[bytes]] = defaultdict(list)
                    for bid in d.block_ids:
                        b = self.blocks[bid]
                        if b.seq == slot - 1:
                            kids = self._tree_children(d, bid)
                            if len(kids) > 1:
                                seen[bid] = kids
                    groups.extend(seen.values())
                for g in groups:
                    cert = sum(1 for c in g if self.certified(c))
                    out.append(FraudProof(d.key, slot, tuple(sorted(g)), cert >= 2))
        return out

    def unclaimed_to(self, device: bytes) -> list[Block]:
        """Payments and revokes addressed to the device that its chain has not claimed."""
        d = self.devices.get(device)
        claimed = set(d.claimed) if d else set()
        if d:
            for bid in d.main:
                b = self.blocks[bid]
                if b.kind == Kind.RECEIVE:
                    claimed.add(b.claim)
        out = []
        for b in self.blocks.values():
            if b.kind in (Kind.SEND, Kind.ISSUE, Kind.REVOKE) and b.to_device == device:
                st = self.status.get(b.id)
                if b.id not in claimed and st is not None and st.state in (VALID, PENDING):
                    out.append(b)
        out.sort(key=lambda b: (b.device, b.seq))
        return out

    def votable(self, device: bytes, last_voted: tuple[int, bytes] | None) -> Block | None:
        """The witness rule (DESIGN §3): the block a witness may vote at a device, or None.

        ``last_voted`` is the witness's highest claimed slot at the device and the block
        it claimed there (None if none). The answer is the last valid block of the main
        chain when it extends that block; with a fraud proof at the device, only a revoke
        at a slot past ``last_voted``. The caller claims every slot the vote covers
        durably before the vote leaves it.
        """
        d = self.devices.get(device)
        if d is None or self.quorum == 0:
            return None
        last_slot = -1 if last_voted is None else last_voted[0]
        if last_voted is not None and (
            last_slot >= len(d.main) or d.main[last_slot] != last_voted[1]
        ):
            return None  # it voted another branch, or the chain below is missing
        if self.forked(device):
            return self._votable_revoke(d, last_slot)
        top = d.frontier - 1
        if top <= last_slot:
            return None
        return self.blocks[d.main[top]]

    def forked(self, device: bytes) -> bool:
        """True when the set holds a fraud proof against the device."""
        return any(p.device == device for p in self._device_frauds(device))

    def _votable_revoke(self, d: _Device, last_voted: int) -> Block | None:
        for rid in d.revokes:
            rb = self.blocks[rid]
            if rb.seq <= last_voted or rb.account != d.account:
                continue
            i = d.index.get(rb.prev)
            if i is not None and i < d.frontier and i == rb.seq - 1:
                return rb
        return None
