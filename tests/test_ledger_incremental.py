"""Merging k new entries costs O(k + statuses that change), never O(size of the ledger).

Counted, not timed: the number of rule evaluations and status writes a merge makes.
"""

from __future__ import annotations

import pytest

from tests.ledgerkit import Net
from wallet.ledger import Ledger


class Counting(Ledger):
    """A Ledger that counts its rule evaluations."""

    evaluations = 0

    def _evaluate(self, d, i):  # type: ignore[no-untyped-def]
        Counting.evaluations += 1
        return super()._evaluate(d, i)


def grown(n: int) -> tuple[Net, Counting, list]:
    net = Net(witnesses=1, quorum=1)
    payer, payee = net.account(1), net.account(1)
    led = Counting(net.genesis)
    led.add(net.opens)
    net.fund(led, payer[0], 10 * n)
    for _ in range(n):
        s = net.send(led, payer[0], payee[0], 1)
        led.add([s, *net.votes(s)])
        led.add([net.receive(led, payee[0], s)])
    return net, led, [payer[0], payee[0]]


@pytest.mark.parametrize("n", [50, 1000])
def test_one_more_payment_costs_the_same_whatever_the_ledger_size(n: int) -> None:
    net, led, (payer, payee) = grown(n)
    Counting.evaluations = 0
    s = net.send(led, payer, payee, 1)
    changes = led.add([s])
    changes += led.add(net.votes(s))
    changes += led.add([net.receive(led, payee, s)])
    assert Counting.evaluations <= 4
    assert len(changes) <= 4


def test_a_vote_covering_k_blocks_costs_in_proportion_to_k() -> None:
    net = Net(witnesses=1, quorum=1)
    payer, payee = net.account(1), net.account(1)
    led = Counting(net.genesis)
    led.add(net.opens)
    net.fund(led, payer[0], 10_000)
    sends = []
    for _ in range(300):
        s = net.send(led, payer[0], payee[0], 1)
        led.add([s])
        sends.append(s)
    Counting.evaluations = 0
    changes = led.add([net.vote(sends[-1])])
    assert all(led.status[s.id].final for s in sends)
    # the 300 sends, and the open and the receive below them, turn final
    assert len([c for c in changes if c.device == payer[0].pk]) == 302
    assert Counting.evaluations <= 5, "turning final re-evaluates nothing already valid"
