"""Replicas converge through y-sync plus digest reconciliation, even when item ids collide.

DESIGN §6: 53-bit item ids collide (and a payer can grind a collision), and y-sync never
carries one side of a collision to a replica holding the other. With the slice narrowed
to 10 bits and a few hundred entries, collisions are common; every replica must still end
with the same set (digests agree), the same statuses, and every fork's fraud proof.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ledgerkit import Net
from wallet.encoding import Block, Vote
from wallet.ledger import Ledger
from wallet.replica import Replica, sync_pair


def scenario(seed: int) -> tuple[Net, list[Block | Vote]]:
    """A few hundred entries: issues, payments, receives, votes, and a cloned device."""
    rng = random.Random(seed)
    net = Net(witnesses=1, quorum=1, rng=rng)
    accounts = [net.account(2) for _ in range(3)]
    devices = [d for a in accounts for d in a.devices]
    god = net.ledger()
    made: list[Block | Vote] = []

    def add(*es: Block | Vote) -> None:
        god.add(es)
        made.extend(es)

    for d in devices:
        iss = net.issue(god, d, 10_000)
        add(iss, *net.votes(iss))
        add(net.receive(god, d, iss))
    for _ in range(90):
        src, dst = rng.sample(devices, 2)
        if god.balance(src.pk).spendable >= 10:
            s = net.send(god, src, dst, rng.randint(1, 10))
            add(s, *net.votes(s))
            add(net.receive(god, dst, s))
    # A cloned device: a second block at a slot its chain already used.
    victim = devices[0]
    tip = god.tip(victim.pk)
    assert tip is not None
    below = god.blocks[tip.prev]
    clone = net.send(below, victim, devices[1], 1, request_id=b"clone")  # never the same block
    add(clone)
    return net, made


def replica(net: Net) -> Replica:
    return Replica(net.ledger(), item_bits=10)


def statuses(led: Ledger) -> dict[bytes, object]:
    return dict(led.status)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32), parts=st.integers(2, 4), order_seed=st.integers(0, 2**32))
def test_replicas_converge_with_ten_bit_item_ids(seed: int, parts: int, order_seed: int) -> None:
    net, made = scenario(seed)
    rng = random.Random(order_seed)
    reps = [replica(net) for _ in range(parts)]
    # Each replica learns a random part of the set, in a random order, in batches.
    shuffled = made[:]
    rng.shuffle(shuffled)
    for i, e in enumerate(shuffled):
        reps[i % parts].ledger.add([e])
    collisions = sum(len(r.outside) for r in reps)
    # Random pairwise syncs, then a ring so that everything reaches everyone.
    for _ in range(parts * 2):
        a, b = rng.sample(reps, 2)
        sync_pair(a, b)
    for _ in range(2):
        for a, b in zip(reps, reps[1:] + reps[:1], strict=True):
            sync_pair(a, b)
    want = {e.id for e in made} | {o.id for o in net.opens}
    for r in reps:
        assert r.ids() == want
        assert r.digest_value() == reps[0].digest_value()
        assert statuses(r.ledger) == statuses(reps[0].ledger)
        assert r.ledger.fraud_proofs(), "every replica shows the clone's fork"
    fresh = net.ledger(made)
    assert statuses(fresh) == statuses(reps[0].ledger)
    assert collisions + sum(len(r.outside) for r in reps) > 0, "10 bits must collide"


def test_y_sync_alone_misses_a_collision_that_reconciliation_brings() -> None:
    from wallet.crdt import item_client_id

    net, made = scenario(7)
    a, b = replica(net), replica(net)
    a.ledger.add(made)
    assert a.outside, "10-bit item ids collide at this size"
    opens = {o.id for o in net.opens}
    lone, in_doc = next(
        (e, owner)
        for e in a.outside.values()
        if (owner := a.item_owner(item_client_id(e.id, 10))) not in opens
    )
    assert in_doc is not None and in_doc != lone.id
    # b holds the entry that lost the item id in a; a's Doc holds the winner.
    b.ledger.add([lone])
    b.apply_update(a.update_since(b.state_vector()))
    assert in_doc not in b.ledger, "y-sync skips a client id the peer already has"
    assert a.digest_value() != b.digest_value()
    sync_pair(a, b)
    assert in_doc in b.ledger
    assert a.ids() == b.ids()
    assert a.digest_value() == b.digest_value()


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32), bits=st.sampled_from([6, 10, 53]),
       known=st.floats(0, 1))
def test_the_doc_view_from_the_tables_is_what_pycrdt_writes(seed: int, bits: int,
                                                             known: float) -> None:
    """The state vector and the updates a replica encodes from its tables are byte for
    byte those of a pycrdt Doc holding the same items (decoded state vectors: yrs writes
    them in hash-map order), for a peer that holds nothing and for one that holds part."""
    from wallet.crdt import LedgerDoc, decode_state_vector

    net, made = scenario(seed % 50)
    rep = Replica(net.ledger(), item_bits=bits)
    blocks = [e for e in made if isinstance(e, Block)]
    votes = [e for e in made if isinstance(e, Vote)]
    rep.ledger.add(blocks)
    rep.ledger.add(votes)
    doc = LedgerDoc(item_bits=bits)
    doc.insert([*net.opens, *blocks])  # the opens came first, in net.ledger()
    doc.insert(votes)
    assert decode_state_vector(rep.state_vector()) == decode_state_vector(doc.state_vector())
    assert rep.update_since(b"\x00") == doc.update_since(b"\x00")
    rng = random.Random(seed)
    part = LedgerDoc(item_bits=bits)
    part.insert([e for e in [*net.opens, *made] if rng.random() < known])
    sv = part.state_vector()
    assert rep.update_since(sv) == doc.update_since(sv)
    assert set(rep.outside) == {e.id for e in [*net.opens, *made]} - set(doc.entry_ids())
