"""Bundles and catch-ups list every entry after what it depends on (issue 12, item 11).

``dependency_order`` (wallet/bundle.py) is checked against a naive reference: the
smallest entry by (seq, id) whose dependencies at hand are all listed goes next. Sets
come from ledgerkit: devices, issues, sends, receives (some routed through a revoke),
revokes, forks and votes; any subset, in any order. The end-to-end test is the reported
finding through the real ``tally`` command: a receive at seq 1 claiming an issue at
seq 5 of the mint, which a sort by seq alone wrote first.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.clikit import new_wallets, tj
from tests.ledgerkit import Device, Net
from wallet.bundle import (
    check_dependency_order,
    dependency_faults,
    dependency_order,
    read_bundle,
)
from wallet.encoding import ZERO_ID, Block, Entry, Kind, Vote, id_from_text, parse_entry
from wallet.errors import BundleError


# ----------------------------------------------------------- the reference
def reference_deps(e: Entry, held: dict[bytes, Entry]) -> set[bytes]:
    """What ``e`` depends on among ``held`` (by id), written from the issue's words."""
    if isinstance(e, Vote):
        return {e.block_id} & held.keys()
    out: set[bytes] = set()
    if e.seq:
        out |= {e.prev} & held.keys()
        out |= {i for i, x in held.items()
                if isinstance(x, Block) and x.device == e.device and x.seq == 0}
    if e.kind == Kind.RECEIVE and e.claim in held:
        out.add(e.claim)
        c = held[e.claim]
        if isinstance(c, Block) and c.to_device != e.device:
            out |= {i for i, x in held.items() if isinstance(x, Block)
                    and x.kind == Kind.REVOKE and x.device == c.to_device
                    and x.to_device == e.device}
    return out


def reference_order(entries: list[Entry]) -> list[bytes]:
    """The naive O(n²) order: the smallest (seq, id) whose dependencies are all out; an
    entry given more than once (two identical votes, say) is listed that many times."""
    held = {e.id: e for e in entries}
    times = Counter(e.id for e in entries)
    deps = {i: reference_deps(e, held) for i, e in held.items()}
    out: list[bytes] = []
    listed: set[bytes] = set()
    while len(out) < len(held):
        free = [i for i in held if i not in listed and deps[i] <= listed]
        assert free, "the generated set has a dependency cycle"
        nxt = min(free, key=lambda i: (held[i].seq, i))
        out.append(nxt)
        listed.add(nxt)
    return [i for i in out for _ in range(times[i])]


def ids(entries: list[Entry]) -> list[bytes]:
    return [e.id for e in entries]


# ------------------------------------------------------------- generated sets
OPS = ("issue", "send", "receive", "receive", "revoke", "fork", "vote", "device")


class World:
    """A network grown one operation at a time; every entry names only older ones, and
    a device is revoked at most once, so the set has no dependency cycle."""

    def __init__(self, seed: int) -> None:
        self.net = Net(witnesses=3, rng=random.Random(seed))
        self.accounts = [self.net.account(devices=2) for _ in range(2)]
        self.tip: dict[bytes, Block] = {}
        self.blocks: list[Block] = []
        self.votes: list[Vote] = []
        self.revoked: dict[bytes, Block] = {}  # device -> its revoke
        for d in [self.net.mint, *self.users()]:
            self.tip[d.pk] = d.open

    def users(self) -> list[Device]:
        return [d for a in self.accounts for d in a.devices]

    def live(self) -> list[Device]:
        return [d for d in self.users() if d.pk not in self.revoked]

    def entries(self) -> list[Entry]:
        return [*self.net.opens, *self.blocks, *self.votes]

    def _add(self, dev: Device, b: Block, *, tip: bool = True) -> None:
        self.blocks.append(b)
        if tip:
            self.tip[dev.pk] = b

    def step(self, op: str, a: int, b: int) -> None:
        net, live, users = self.net, self.live(), self.users()
        if op == "issue" and live:
            to = live[a % len(live)]
            self._add(net.mint, net.issue(self.tip[net.mint.pk], to, 1 + b % 500))
        elif op == "send" and live:
            payer = live[a % len(live)]
            payees = [d for d in users if d is not payer]
            self._add(payer, net.send(self.tip[payer.pk], payer, payees[b % len(payees)], 1))
        elif op == "receive" and live:
            dev = live[a % len(live)]
            routed = {e for e, r in self.revoked.items() if r.to_device == dev.pk}
            claims = [x for x in self.blocks if x.kind in (Kind.SEND, Kind.ISSUE, Kind.REVOKE)
                      and (x.to_device == dev.pk or x.to_device in routed)]
            if claims:
                self._add(dev, net.receive(self.tip[dev.pk], dev, claims[b % len(claims)]))
        elif op == "revoke":
            pairs = [(d, s) for acc in self.accounts for d in acc.devices for s in acc.devices
                     if d is not s and d.pk not in self.revoked]
            if pairs:
                dev, sibling = pairs[(a + b) % len(pairs)]
                rv = net.revoke(self.tip[dev.pk], dev, sibling)
                self._add(dev, rv)
                self.revoked[dev.pk] = rv
        elif op == "fork":
            chain = [x for x in self.blocks if x.device in {d.pk for d in users}]
            if chain:
                at = chain[a % len(chain)]  # a second block on top of it: a fork
                dev = next(d for d in users if d.pk == at.device)
                payees = [d for d in users if d is not dev]
                self._add(dev, net.send(at, dev, payees[b % len(payees)], 2), tip=False)
        elif op == "vote" and self.blocks:
            block = self.blocks[a % len(self.blocks)]
            self.votes.append(net.vote(block, b % 3))
        elif op == "device":
            dev = net.device(self.accounts[a % 2])
            self.tip[dev.pk] = dev.open


def grown(seed: int, ops: list[tuple[str, int, int]]) -> list[Entry]:
    """The entries of a World grown from ``seed`` by ``ops``."""
    w = World(seed)
    for op, a, b in ops:
        w.step(op, a, b)
    return w.entries()


@st.composite
def worlds(draw: st.DrawFn) -> list[Entry]:
    seed = draw(st.integers(0, 2**32))
    ops = draw(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 999),
                                  st.integers(0, 999)), max_size=45))
    return grown(seed, ops)


# Found by the test below: two forks of one block to one payee are the same block, given
# twice (at #4 and #12 once shuffled); a send built on it (#11) sits between the copies.
# The checker rightly counts the first copy; the reference counted the last one.
TWO_FORKS_ALIKE = grown(0, [("issue", 0, 0)] * 5 + [("send", 0, 0), ("fork", 0, 0),
                            ("fork", 0, 0), ("issue", 0, 0), ("fork", 1, 0)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), entries=worlds())
def test_dependency_order_of_any_subset_in_any_order(data: st.DataObject,
                                                     entries: list[Entry]) -> None:
    drop = data.draw(st.sets(st.integers(0, len(entries) - 1), max_size=len(entries) // 3))
    kept = [e for i, e in enumerate(entries) if i not in drop]
    shuffled = data.draw(st.permutations(kept))

    out = dependency_order(shuffled)
    assert sorted(ids(out)) == sorted(ids(kept))  # a permutation of the input
    assert dependency_faults(out) == []
    check_dependency_order(out)
    check_dependency_order([e.raw for e in out])
    # The same list whatever the input order, and the reference's list.
    assert ids(out) == ids(dependency_order(kept)) == ids(dependency_order(kept[::-1]))
    assert ids(out) == reference_order(kept)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=worlds(), seed=st.integers(0, 2**32),
       twice=st.lists(st.integers(0, 10**6), max_size=4))
@example(entries=TWO_FORKS_ALIKE, seed=0, twice=[])
def test_dependency_faults_sees_what_the_reference_sees(entries: list[Entry], seed: int,
                                                        twice: list[int]) -> None:
    """The checker tests rely on agrees with the reference on random (bad) orders, some
    entries given twice (opens and revokes too). An entry is at hand from its first copy
    on, so a dependency counts where it is first listed."""
    order = [*entries, *(entries[i % len(entries)] for i in twice)]
    random.Random(seed).shuffle(order)
    held = {e.id: e for e in order}
    pos: dict[bytes, int] = {}
    for p, e in enumerate(order):
        pos.setdefault(e.id, p)
    late: dict[int, int] = {}  # entry -> the latest of its dependencies listed after it
    for p, e in enumerate(order):
        for d in reference_deps(e, held):
            if pos[d] > p:
                late[p] = max(late.get(p, 0), pos[d])
    # The checker names, per entry and kind of dependency, the latest one listed.
    seen: dict[int, int] = {}
    for p, q, _ in dependency_faults(order):
        seen[p] = max(seen.get(p, 0), q)
    assert late == seen


# --------------------------------------------------------- each dependency
@pytest.fixture
def net() -> Net:
    return Net(witnesses=1, rng=random.Random(7))


def _both_ways(first: Entry, then: Entry, *beside: Entry) -> None:
    """``then`` depends on ``first`` (given ``beside``, listed ahead of both): the checker
    refuses the reverse, and the order puts it right."""
    assert dependency_faults([*beside, first, then]) == []
    assert dependency_faults([*beside, then, first]) != []
    with pytest.raises(BundleError, match="out of dependency order"):
        check_dependency_order([x.raw for x in (*beside, then, first)])
    out = dependency_order([then, first, *beside])
    assert out.index(first) < out.index(then)


def test_prev_open_claim_vote(net: Net) -> None:
    alice = net.account()
    a = alice[0]
    iss = [net.issue(None, a, 10 + k) for k in range(5)]  # the mint at seq 1..5
    rc = net.receive(a.open, a, iss[4])  # alice at seq 1 claims seq 5
    assert (rc.seq, iss[4].seq) == (1, 5)
    _both_ways(iss[4], rc)  # the claim: a seq sort gets this one wrong
    _both_ways(iss[3], iss[4])  # prev
    _both_ways(a.open, rc)  # the device's open
    _both_ways(iss[4], net.vote(iss[4]))  # the block a vote names
    everything = [*iss, rc, net.vote(rc), a.open, net.mint.open]
    by_seq = sorted(everything, key=lambda e: e.seq)  # what export_ids used to do
    assert by_seq.index(rc) < by_seq.index(iss[4])
    out = dependency_order(everything[::-1])
    check_dependency_order(out)
    assert ids(out) == reference_order(everything)


def test_a_claim_routed_by_a_revoke(net: Net) -> None:
    acc = net.account(devices=2)
    old, new = acc[0], acc[1]
    iss = net.issue(None, old, 100)  # paid to the device that is revoked next
    rv = net.revoke(old.open, old, new)
    rc = net.receive(new.open, new, iss)  # the sibling claims it through the revoke
    _both_ways(rv, rc, iss)  # the revoke routes the claim only if the claim is at hand
    out = dependency_order([rc, iss, rv, new.open, old.open])
    assert out.index(rv) < out.index(rc) and out.index(iss) < out.index(rc)
    # Without the revoke at hand, the receive needs only its claim and its chain.
    assert ids(dependency_order([rc, iss])) == [iss.id, rc.id]


def test_a_forked_open_and_two_routing_revokes(net: Net) -> None:
    acc = net.account(devices=2)
    d, sib = acc[0], acc[1]
    clone = net.open_block(acc.key, d.key, "clone")  # a second open of d: a fork at 0
    s = net.send(d.open, d, sib, 5)
    _both_ways(clone, s)
    iss = net.issue(None, d, 9)
    r1 = net.revoke(s, d, sib)
    r2 = net.revoke(clone, d, sib)  # another revoke at another slot, same route
    rc = net.receive(sib.open, sib, iss)
    out = dependency_order([rc, r2, r1, iss, s, clone, d.open, sib.open])
    assert max(out.index(r1), out.index(r2), out.index(iss)) < out.index(rc)
    assert dependency_faults(out) == []


def test_a_cycle_through_a_routing_revoke_gives_up_that_edge_only(net: Net) -> None:
    """A hostile set: d claims a payment routed by a revoke of e whose own chain claims
    a send d made after that receive. Nothing can come first without breaking an edge;
    the routing one is given up, every other dependency holds."""
    acc = net.account(devices=2)
    d, e = acc[0], acc[1]
    pay = net.issue(None, e, 50)
    rc = net.receive(d.open, d, pay)  # d/1, routed by the revoke below
    send = net.send(rc, d, e, 1)  # d/2
    got = net.receive(e.open, e, send)  # e/1
    rv = net.revoke(got, e, d)  # e/2, names d
    every = [pay, rc, send, got, rv, d.open, e.open, net.mint.open, net.vote(rv)]
    outs = [dependency_order(p) for p in (every, every[::-1], sorted(every, key=lambda x: x.id))]
    assert ids(outs[0]) == ids(outs[1]) == ids(outs[2])
    faults = dependency_faults(outs[0])
    assert [(outs[0][p], outs[0][q], what) for p, q, what in faults] == [
        (rc, rv, "the revoke that routes it")]


def test_an_entry_given_twice_is_listed_twice(net: Net) -> None:
    a = net.account()[0]
    iss = net.issue(None, a, 1)
    rc = net.receive(a.open, a, iss)
    out = dependency_order([rc, iss, rc, a.open, net.mint.open])
    assert len(out) == 5 and out.count(rc) == 2 and out.index(iss) < out.index(rc)
    assert out[out.index(rc) + 1] is rc


def test_a_dependency_given_twice_counts_where_first_listed(net: Net) -> None:
    """A copy listed later takes nothing back: the receiver has the entry from its first
    copy on, whether it is a prev, an open, a claim or a routing revoke."""
    acc = net.account(devices=2)
    d, sib = acc[0], acc[1]
    s = net.send(d.open, d, sib, 5)
    iss = net.issue(None, d, 9)
    rv = net.revoke(s, d, sib)
    rc = net.receive(sib.open, sib, iss)
    o = net.mint.open
    assert dependency_faults([d.open, s, d.open]) == []  # the open
    assert dependency_faults([d.open, s, rv, s]) == []  # the prev
    assert dependency_faults([o, iss, d.open, s, sib.open, rc, iss]) == []  # the claim
    assert dependency_faults([o, iss, d.open, s, rv, sib.open, rc, rv]) == []  # the route
    check_dependency_order([x.raw for x in (d.open, s, rv, sib.open, o, iss, rc, rv, d.open)])
    # A second open of its own, listed after it, is still one it waits for.
    clone = net.open_block(acc.key, d.key, "clone")
    assert dependency_faults([d.open, s, d.open, clone]) == [(1, 3, "its device's open")]
    # And the test's own case: the send on a block given twice, between the copies.
    order = list(TWO_FORKS_ALIKE)
    random.Random(0).shuffle(order)
    assert order[4].id == order[12].id and order[11].prev == order[4].id
    assert not [f for f in dependency_faults(order) if f[0] == 11]


def test_entries_it_does_not_hold_are_ignored(net: Net) -> None:
    a = net.account()[0]
    iss = [net.issue(None, a, 1 + k) for k in range(3)]
    rc = net.receive(a.open, a, iss[2])
    vote = net.vote(iss[0])
    out = dependency_order([rc, iss[2], vote])  # no opens, no prev, no voted block here
    assert out == [vote, iss[2], rc]  # (seq 1, seq 3, then seq 1 once its claim is out)
    assert dependency_faults(out) == []
    assert dependency_order([]) == []


def _fake_chain(n: int) -> list[Block]:
    """A long chain of unsigned blocks with made-up ids (the order reads only fields)."""
    dev, net_id, prev, out = os.urandom(32), bytes(32), ZERO_ID, []
    for s in range(n):
        kind = Kind.OPEN if s == 0 else Kind.SEND
        b = Block(kind, net_id, dev, s, prev, to_device=b"" if s == 0 else bytes(32),
                  id=os.urandom(32))
        out.append(b)
        prev = b.id
    return out


def test_a_long_chain_without_recursion() -> None:
    chain = _fake_chain(120_000)
    assert dependency_order(chain[::-1]) == chain
    assert dependency_faults(chain) == []
    assert len(dependency_faults(chain[::-1])) == 2 * (len(chain) - 1)  # prev and open


# ----------------------------------------------------------- end to end
@pytest.mark.slow
def test_bundle_for_a_payee_lists_the_issue_before_the_receive_claiming_it(
        tmp_path: Path) -> None:
    """The reported finding through the real command: the mint issues at seq 1..4 to
    Bob and at seq 5 to Alice; Alice's receive of it is her seq 1; she pays Bob and
    exports a bundle for him. A sort by seq put the receive before the issue."""
    issuer = tmp_path / "issuer"
    doc = tj(issuer, "network", "create", "Town", "--currency", "EUR",
             "--out", tmp_path / "town.genesis")
    network = id_from_text(doc["network"])
    alice, bob = new_wallets(tmp_path / "town.genesis", tmp_path / "alice", tmp_path / "bob")
    for _ in range(4):
        tj(issuer, "issue", "--yes", bob.address, "1")
    issued = tj(issuer, "issue", "--yes", alice.address, "100")
    tj(issuer, "bundle", "export", tmp_path / "to-alice.bundle", "--for", alice.address)
    tj(alice.path, "bundle", "import", tmp_path / "to-alice.bundle")
    (got,) = tj(alice.path, "receive")["received"]
    assert got["claims"] == issued["id"]
    tj(alice.path, "pay", "--yes", bob.address, "2.50")

    f = tmp_path / "for-bob.bundle"
    tj(alice.path, "bundle", "export", f, "--for", bob.address)
    bodies = read_bundle(f, network)
    entries = [parse_entry(b) for b in bodies]
    issue = next(e for e in entries if e.id == id_from_text(issued["id"]))
    receive = next(e for e in entries if e.kind == Kind.RECEIVE and e.claim == issue.id)
    assert (issue.seq, receive.seq) == (5, 1)  # the shape of the finding
    at_issue, at_receive = entries.index(issue), entries.index(receive)
    assert at_issue < at_receive, (
        f"the bundle lists the receive (#{at_receive}) before the issue it claims (#{at_issue})")
    check_dependency_order(bodies)
    assert dependency_faults(entries) == []

    # And the bundle does its job: Bob merges it and claims Alice's payment (and the
    # mint's four issues to him, which it carries too).
    tj(bob.path, "bundle", "import", f)
    got = sorted(r["amount_minor"] for r in tj(bob.path, "receive")["received"])
    assert got == [100, 100, 100, 100, 250]
