"""A closure carries what its blocks depend on: a replica fed nothing else judges every
block in it as the replica it came from does.

``wallet.closure`` gathers, a device at a time in SQL, the blocks to ship and everything
they depend on (DESIGN §3: chains below, opens, claims, the revokes that route a claim,
votes, and the voted blocks above that make a shipped block final). The property: for
a random network (the worlds of ``test_ledger_reopen``: payments, clones, revokes,
thieves, evil witnesses) and random roots, a fresh ledger fed only the closure holds the
roots, gives every block in the closure the status and cover the source gives it (and a
device whose whole chain is shipped its balance), and the closure lists each entry
after what it depends on.
"""

from __future__ import annotations

import itertools
import random

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.test_ledger_reopen import World, worlds
from wallet.bundle import check_dependency_order
from wallet.closure import ClosureState, closure, grow
from wallet.encoding import Block, Kind, parse_entry
from wallet.ledger import Ledger


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), pick=st.integers(0, 2**32 - 1), share=st.floats(0.0, 0.3))
def test_a_ledger_fed_only_a_closure_judges_its_blocks_as_the_source(
        world: World, pick: int, share: float) -> None:
    note(world.label)
    source = Ledger(world.genesis)
    source.add(world.entries)
    blocks = [b for b in world.blocks if b.id in source]
    rng = random.Random(pick)
    roots = [b.id for b in rng.sample(blocks, max(1, int(len(blocks) * share)))]
    shipped = closure(source, roots)
    check_dependency_order(shipped)
    ids = [e.id for e in shipped]
    assert len(ids) == len(set(ids)), "an entry shipped twice"
    assert set(roots) <= set(ids)
    fresh = Ledger(world.genesis)
    fresh.add(shipped)
    for e in shipped:
        if isinstance(e, Block):
            assert fresh.status[e.id] == source.status[e.id], (Kind(e.kind).name, e.seq)
            assert fresh.cover.get(e.id) == source.cover.get(e.id)
    for dev in {e.device for e in shipped if isinstance(e, Block)}:
        tip = fresh.tip(dev)
        if tip is not None and all(b in fresh for b in source.chain(dev)):
            # (what others sent it and it has not claimed is not its chain's: to_claim)
            a, b = fresh.balance(dev), source.balance(dev)
            assert (a.spendable, a.incoming) == (b.spendable, b.incoming), "a whole chain"


def test_a_closure_ships_the_history_of_the_money() -> None:
    from tests.test_ledger_reopen import scenario_world

    world = scenario_world(7)
    source = Ledger(world.genesis)
    source.add(world.entries)
    payment = max((b for b in world.blocks if b.kind == Kind.SEND), key=lambda b: b.seq)
    got = {e.id for e in closure(source, [payment.id])}
    chain = source.chain(payment.device)[: payment.seq + 1]
    assert set(chain) <= got, "the chain below the payment"
    receives = [source.blocks[i] for i in chain if source.blocks[i].kind == Kind.RECEIVE]
    assert {r.claim for r in receives} <= got, "the sends that funded it"
    assert all(v in got for i in chain for v in source.votes_on(i)), "and their votes"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), pick=st.integers(0, 2**32 - 1), share=st.floats(0.0, 0.3),
       cuts=st.lists(st.floats(0.0, 1.0), max_size=6))
def test_a_closure_grown_batch_by_batch_is_the_closure_computed_afresh(
        world: World, pick: int, share: float, cuts: list[float]) -> None:
    """``wallet.closure.grow`` from the state of an earlier set gives exactly what the
    fresh closure adds: entries that filled gaps, fork sides, late votes, new routes."""
    note(world.label)
    rng = random.Random(pick)
    entries = list(world.entries)
    rng.shuffle(entries)  # gaps, late votes, forks found late: the cases grow must see
    at = sorted({0, len(entries), *(int(c * len(entries)) for c in cuts)})
    chosen = [b.id for b in rng.sample(world.blocks, max(1, int(len(world.blocks) * share)))]
    led = Ledger(world.genesis)
    state, shipped = ClosureState(), set()
    for lo, hi in itertools.pairwise(at):
        led.add(entries[lo:hi])
        roots = [i for i in chosen if i in led]
        state, bodies = grow(led.tables.conn, state, roots)
        got = {parse_entry(b, verify=False).id for b in bodies}
        assert len(got) == len(bodies), "an entry returned twice"
        assert not got & shipped, "an entry shipped before was returned again"
        shipped |= got
        assert shipped == {e.id for e in closure(led, roots)}, f"after entries {lo}..{hi}"
