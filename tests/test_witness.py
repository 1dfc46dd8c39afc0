"""The witness: durable slot claims before a vote leaves, so it never votes two blocks at a slot."""

from __future__ import annotations

from pathlib import Path

from tests.ledgerkit import Net
from wallet.witness import SqliteClaims, Witness


def test_claims_survive_reopening_and_refuse_another_block_at_a_claimed_slot(
    tmp_path: Path,
) -> None:
    path = tmp_path / "claims.db"
    claims = SqliteClaims(path)
    net, dev = b"n" * 32, b"d" * 32
    assert claims.claim(net, dev, [(0, b"a" * 32), (1, b"b" * 32)])
    claims.close()
    again = SqliteClaims(path)
    assert again.last(net, dev) == (1, b"b" * 32)
    assert not again.claim(net, dev, [(2, b"c" * 32), (1, b"x" * 32)])
    assert again.last(net, dev) == (1, b"b" * 32), "a refused claim claims nothing"
    assert again.claim(net, dev, [(1, b"b" * 32), (2, b"c" * 32)])


def test_witness_votes_the_latest_valid_block_once_and_covers_the_chain(tmp_path: Path) -> None:
    net = Net(witnesses=1, quorum=1)
    acc = net.account(1)
    led = net.ledger()
    iss = net.issue(led, acc[0], 500)
    led.add([iss])
    w = Witness(net.witness_keys[0], SqliteClaims(tmp_path / "c.db"))
    votes = w.vote(led)
    assert {v.device for v in votes} == {net.mint.pk, acc[0].pk}
    led.add(votes)
    assert led.status[iss.id].final
    assert w.vote(led) == [], "nothing new to vote"


def test_witness_never_votes_the_other_side_of_a_fork_it_voted(tmp_path: Path) -> None:
    net = Net(witnesses=1, quorum=1)
    acc = net.account(2)
    led = net.ledger()
    net.fund(led, acc[0], 100)
    head = led.tip(acc[0].pk)
    assert head is not None
    left = net.send(head, acc[0], acc[1], 10)
    right = net.send(head, acc[0], acc[1], 20)
    claims = SqliteClaims(tmp_path / "c.db")
    w = Witness(net.witness_keys[0], claims)
    led.add([left])
    first = w.vote(led, [acc[0].pk])
    assert [v.block_id for v in first] == [left.id]
    # A replica that sees only the other side: the same witness (same claim table) refuses.
    other = net.ledger()
    other.add([e for e in led.blocks.values() if e.id != left.id])
    other.add([v for v in led.votes.values()])
    other.add([right])
    assert w.vote(other, [acc[0].pk]) == []


def test_a_lost_claim_table_is_rebuilt_from_the_witness_own_votes_in_the_set(
    tmp_path: Path,
) -> None:
    net = Net(witnesses=1, quorum=1)
    acc = net.account(2)
    led = net.ledger()
    net.fund(led, acc[0], 100)
    head = led.tip(acc[0].pk)
    assert head is not None
    left = net.send(head, acc[0], acc[1], 10)
    led.add([left])
    led.add(Witness(net.witness_keys[0], SqliteClaims(tmp_path / "a.db")).vote(led))
    # Restarted with an empty claim table, seeing the fork's other side only.
    right = net.send(head, acc[0], acc[1], 20)
    led.add([right])
    fresh = Witness(net.witness_keys[0], SqliteClaims(tmp_path / "b.db"))
    assert all(v.block_id != right.id for v in fresh.vote(led))
    assert fresh.claims.last(net.id, acc[0].pk) == (left.seq, left.id)
