"""The promises a simulated world keeps, checked over every replica that is up.

The ledger asserts DESIGN §3's invariants itself after every batch (``CHECK``: no
device but the issuing one below zero, running totals equal to what the valid prefix
booked, every credit the one the rules give, every payment claimed or in flight). These
checks add what needs more than one replica, or the whole set:

- no spendable balance below zero, in any replica, for any device but the issuing one;
- no witness-equivocation proof (every witness of a simulated world is honest, so two
  certified blocks at one slot mean a witness voted twice);
- at each till, DESIGN §5: its exposure (so its loss) within its floor limits, nothing
  taken provisionally over the limit per payment, every refused taking with evidence;
- at every fork, the side a certificate (or, with no witnesses, a revoke) picks may
  stand and no other side is valid (it is conflicted, or shares its prev's status);
- at the end: replicas holding the same set agree on every status and balance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wallet.encoding import Kind, short
from wallet.floor import PROVISIONAL, REFUSED, Limits
from wallet.ledger import CONFLICTED, VALID, Ledger
from wallet.reconcile import evidence
from wallet.wallet import Wallet

if TYPE_CHECKING:
    from sim.world import World


def check_replica(name: str, led: Ledger) -> str | None:
    """The promises one replica keeps on its own; the first one broken, or None."""
    for key, d in led.devices.items():
        if d.issuing:
            continue
        spendable = led.balance(key).spendable
        if spendable < 0:
            return f"{name}: device {short(key)}… is at {spendable} spendable"
    for proof in led.fraud_proofs():
        if proof.equivocation:
            return (f"{name}: two certified blocks at device {short(proof.device)}… slot "
                    f"{proof.seq}: an honest witness voted twice")
        problem = check_fork(name, led, proof.block_ids)
        if problem is not None:
            return problem
    return None


def check_fork(name: str, led: Ledger, sides: tuple[bytes, ...]) -> str | None:
    """DESIGN §4 at one fork: the certified side wins and the others are lost; with none
    certified every side is disputed (with no witnesses, an account's revoke beats the
    device's block)."""
    certified = [b for b in sides if led.certified(b)]
    revokes = [b for b in sides if led.blocks[b].kind == Kind.REVOKE]
    if certified:
        winners = set(certified)
    elif led.genesis.quorum == 0 and len(revokes) == 1:
        winners = set(revokes)
    else:
        winners = set()
    for b in sides:
        st = led.status.get(b)
        if st is None:
            continue
        if b in winners and st.state == CONFLICTED:
            return f"{name}: block {short(b)}… won its fork, yet is conflicted"
        # (a losing side is conflicted, or shares what its prev is: pending, invalid)
        if b not in winners and st.state == VALID:
            return (f"{name}: block {short(b)}… at a fork is {st.label}, not conflicted "
                    f"({len(certified)} sides certified)")
    return None


def check_till(name: str, w: Wallet, limits: Limits) -> str | None:
    """DESIGN §5 at a till: its exposure within its floor limits (so its loss is), every
    provisional taking within the limit per payment, every refused one with evidence."""
    exposure = w.takings.exposure()
    if exposure.total > limits.till:
        return f"{name}: exposure {exposure.total} over its floor per till {limits.till}"
    for account, v in exposure.by_account.items():
        if v > limits.account:
            return (f"{name}: exposure {v} to account {short(account)}… over its floor per "
                    f"account {limits.account}")
    led = w.ledger
    for k in w.takings.rows():
        if k.decision == PROVISIONAL and k.amount > limits.payment:
            return f"{name}: took {k.amount} provisionally, over its floor per payment"
        if k.state == REFUSED and evidence(led, k) is None:
            return f"{name}: refused taking {short(k.id)}… has no evidence"
    return None


def statuses(led: Ledger) -> dict[bytes, tuple[str, str, bool]]:
    """Every block's status, as comparable values."""
    out = {}
    for bid in led.status:
        st = led.status[bid]
        out[bid] = (st.state, st.reason, st.final)
    return out


def check_world(world: World, *, final: bool = False) -> str | None:
    """Every replica's promises; at the end also that equal sets agree."""
    seen: dict[bytes, tuple[str, dict[bytes, tuple[str, str, bool]], dict[bytes, object]]] = {}
    from sim.world import TillNode

    for node in world.nodes():
        if isinstance(node, TillNode) and node.wallet is not None:
            problem = check_till(node.name, node.wallet, node.LIMITS)
            if problem is not None:
                return problem
        for led in node.ledgers():
            problem = check_replica(node.name, led)
            if problem is not None:
                return problem
            if not final:
                continue
            digest = node.digest()
            assert digest is not None
            mine = statuses(led)
            balances = {k: led.balance(k) for k in led.devices}
            if digest in seen:
                other, theirs, their_balances = seen[digest]
                if mine != theirs:
                    diff = sorted(k for k in mine.keys() | theirs.keys()
                                  if mine.get(k) != theirs.get(k))
                    return (f"{node.name} and {other} hold the same set but disagree on "
                            f"{len(diff)} statuses (first: block {short(diff[0])}…)")
                if balances != their_balances:
                    return f"{node.name} and {other} hold the same set but disagree on balances"
            else:
                seen[digest] = (node.name, mine, balances)
    return None
