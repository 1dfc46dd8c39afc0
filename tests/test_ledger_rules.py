"""Every rule of DESIGN §2–4 and every reason code of wallet.ledger, one scenario each."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from tests.ledgerkit import Device, Net, Witness, entries, keygen, pk
from wallet import ledger as L
from wallet.encoding import Block, Kind, Vote
from wallet.ledger import (
    CONFLICTED,
    INVALID,
    PENDING,
    VALID,
    Balance,
    Ledger,
)


def check(led: Ledger, b: Block, state: str, reason: str | None = None, final: bool | None = None):
    st = led.status.get(b.id)
    assert st is not None, f"no status for {b.kind.name} seq {b.seq}"
    assert st.state == state, f"{b.kind.name} seq {b.seq}: {st}"
    if reason is not None:
        assert st.reason == reason, f"{b.kind.name} seq {b.seq}: {st}"
    if final is not None:
        assert st.final == final, f"{b.kind.name} seq {b.seq}: {st}"


def valid(led, b, final=None):
    check(led, b, VALID, "", final)


def bal(led: Ledger, dev: Device) -> tuple[int, int]:
    b = led.balance(dev.pk)
    return b.spendable, b.incoming


def fresh_agrees(net: Net, led: Ledger, seed: int | None = None) -> None:
    """A fresh Ledger fed the same set in shuffled batches computes the same."""
    if seed is None:
        for seed in range(8):
            fresh_agrees(net, led, seed)
        return
    es = entries(led)
    rng = random.Random(seed)
    rng.shuffle(es)
    other = Ledger(net.genesis)
    while es:
        k = rng.randint(1, len(es))
        other.add(es[:k])
        es = es[k:]
    assert other.status == led.status
    for d in led.devices:
        assert other.balance(d) == led.balance(d)
    assert sorted(map(repr, other.fraud_proofs())) == sorted(map(repr, led.fraud_proofs()))


# ---------------------------------------------------------------------- rule 1–2
def test_open_signed_by_its_account_is_valid():
    net = Net()
    a = net.account(2)
    led = net.ledger()
    for ob in net.opens:
        valid(led, ob, final=False)
    assert led.account_devices(a.pk) == sorted([a[0].pk, a[1].pk])


def test_block_whose_device_open_is_missing_is_pending_prev():
    net = Net()
    a = net.account()
    led = net.ledger()
    fund = net.fund(led, a[0], 100)
    other = net.ledger(fund, opens=False)
    other.add([net.mint.open])
    check(other, fund[-1], PENDING, L.R_PREV)
    other.add([a[0].open])
    valid(other, fund[-1])


def test_block_whose_prev_is_missing_is_pending_prev():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    fund = net.fund(led, a[0], 100)
    s1 = net.send(led, a[0], b[0], 10)
    s2 = net.send(s1, a[0], b[0], 10)
    led.add([s2])
    check(led, s2, PENDING, L.R_PREV)
    led.add([s1])
    valid(led, s1)
    valid(led, s2)
    assert fund


def test_prev_that_is_not_the_devices_block_below_is_invalid_bad_prev():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    # prev names another device's block at seq-1
    wrong_dev = Block(
        Kind.SEND,
        net.id,
        a[0].pk,
        1,
        b[0].open.id,
        to_account=b[0].account,
        to_device=b[0].pk,
        amount=1,
    ).signed(a[0].key)
    # prev names this device's block, but two slots below
    tip = led.tip(a[0].pk)
    wrong_seq = Block(
        Kind.SEND,
        net.id,
        a[0].pk,
        tip.seq + 2,
        tip.id,
        to_account=b[0].account,
        to_device=b[0].pk,
        amount=1,
    ).signed(a[0].key)
    led.add([wrong_dev, wrong_seq])
    check(led, wrong_dev, INVALID, L.R_BAD_PREV)
    check(led, wrong_seq, INVALID, L.R_BAD_PREV)
    assert led.fraud_proofs() == []
    assert bal(led, a[0]) == (100, 0)


def test_block_after_a_pending_or_invalid_block_shares_its_state_with_reason_prev():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100, final=False)
    pend = net.send(led, a[0], b[0], 60)  # only incoming would fund it
    after = net.receive(pend, a[0], net.issue(led, a[0], 5))
    led.add([pend, after])
    check(led, pend, PENDING, L.R_FUNDS)
    check(led, after, PENDING, L.R_PREV)
    net2 = Net()
    c, d = net2.account(), net2.account()
    led2 = net2.ledger()
    net2.fund(led2, c[0], 10)
    bad = net2.send(led2, c[0], d[0], 60)
    after2 = net2.send(bad, c[0], d[0], 1)
    led2.add([after2, bad])
    check(led2, bad, INVALID, L.R_OVERSPEND)
    check(led2, after2, INVALID, L.R_PREV)


def test_an_open_without_the_devices_signature_is_refused_open_unsigned():
    """A stranger can sign an open naming anyone's device key with its own account key,
    but not the device's signature over (network, account, device, label): such an open
    never reaches the set, so it can neither take the device nor block it."""
    import dataclasses

    from wallet.encoding import OPEN_UNSIGNED, EncodingError, parse_entry

    net = Net()
    a = net.account()
    stranger = keygen()
    for device_sig in (bytes(64), a[0].open.device_sig):  # none, or the real one reused
        body = dataclasses.replace(a[0].open, account=pk(stranger), device_sig=device_sig).body()
        with pytest.raises(EncodingError, match=OPEN_UNSIGNED):
            parse_entry(body + stranger.sign(body).signature)
    # the label is under the device's signature too
    body = dataclasses.replace(a[0].open, label="evil").body()
    with pytest.raises(EncodingError, match=OPEN_UNSIGNED):
        parse_entry(body + a.key.sign(body).signature)


def test_two_device_signed_opens_of_one_device_are_a_fork_a_certificate_decides():
    """A device that signed pairing requests for two accounts, both answered, has two
    opens at slot 0: a fork like any other, disputed until one side is certified."""
    net = Net(witnesses=1)
    a, s = net.account(), net.account()
    other = net.open_block(s.key, a[0].key, "other")
    led = net.ledger(other)
    check(led, a[0].open, CONFLICTED, L.R_DISPUTED)
    check(led, other, CONFLICTED, L.R_DISPUTED)
    assert [p.seq for p in led.fraud_proofs()] == [0]
    led.add([net.vote(a[0].open)])
    valid(led, a[0].open, final=True)
    check(led, other, CONFLICTED, L.R_LOST)
    fresh_agrees(net, led)


def test_a_strangers_revoke_is_invalid_revoke_account_and_does_not_fork_the_device():
    net = Net()
    a, s = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    tip = led.tip(a[0].pk)
    stolen = net.revoke(tip, a[0], s[0], account_key=s.key)
    own = net.send(tip, a[0], s[0], 10)
    led.add([stolen, own])
    check(led, stolen, INVALID, L.R_REVOKE_ACCOUNT)
    valid(led, own)
    assert led.fraud_proofs() == []
    assert led.votable(a[0].pk, None) == own
    # its credit is nothing, whoever claims it
    rc = net.receive(led, s[0], stolen)
    led.add([rc])
    valid(led, rc)
    assert bal(led, s[0]) == (0, 0)
    fresh_agrees(net, led)


def test_an_issue_outside_the_issuing_device_is_invalid_issue_not_issuer():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    fake = net.send(led, a[0], b[0], 5, kind=Kind.ISSUE)
    led.add([fake])
    check(led, fake, INVALID, L.R_ISSUE_NOT_ISSUER)


def test_finality_excuses_rule_3_only():
    """A certificate makes an unfunded send valid (the replica may lack votes), never a
    block after a revoke or an issue outside the mint: nothing a replica lacks decides
    those (it takes witnesses beyond the tolerated to certify one)."""
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    fake = net.send(led, a[0], b[0], 5, kind=Kind.ISSUE)
    led.add([fake, *net.votes(fake)])
    check(led, fake, INVALID, L.R_ISSUE_NOT_ISSUER)
    led2 = net.ledger()
    net.fund(led2, a[0], 100)
    rv = net.revoke(led2, a[0], a[1])
    after = net.send(rv, a[0], b[0], 10)
    led2.add([rv, after, *net.votes(after)])
    valid(led2, rv, final=True)
    check(led2, after, INVALID, L.R_AFTER_REVOKE)
    assert bal(led2, a[0]) == (0, 0)
    rc = net.receive(led2, a[1], rv)
    led2.add([rc])
    assert bal(led2, a[1]) == (100, 0)


def test_the_issuing_device_is_exempt_from_funding():
    net = Net()
    a = net.account()
    led = net.ledger()
    iss = net.issue(led, a[0], 10**12)
    led.add([iss])
    valid(led, iss)
    assert bal(led, net.mint) == (-(10**12), 0)


def test_the_issuing_device_cannot_be_revoked_revoke_issuer():
    net = Net()
    k = keygen()
    mint2 = Device(k, net.issuer, net.open_block(net.issuer, k, "m2"))
    led = net.ledger(mint2.open)
    rv = net.revoke(led, net.mint, mint2)
    led.add([rv])
    check(led, rv, INVALID, L.R_REVOKE_ISSUER)


def test_entries_of_another_network_or_votes_of_strangers_are_refused():
    net, other = Net(), Net()
    a = net.account()
    led = net.ledger()
    with pytest.raises(ValueError):
        led.add([other.mint.open])
    with pytest.raises(ValueError):
        led.add([net.vote(a[0].open, keygen())])
    assert len(led) == len(net.opens)
    # a refused batch changes nothing: its good entries are not half-held
    iss = net.issue(led, a[0], 5)
    with pytest.raises(ValueError):
        led.add([iss, net.vote(iss), other.mint.open])
    assert iss.id not in led and len(led) == len(net.opens)
    led.add([iss])
    valid(led, iss)


# ------------------------------------------------------------------------ rule 3
def test_send_funded_by_final_credits_is_valid():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    s = net.send(led, a[0], b[0], 100)
    led.add([s])
    valid(led, s, final=False)
    assert bal(led, a[0]) == (0, 0)


def test_send_is_pending_when_only_incoming_credits_would_fund_it():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 30)  # a vote covers every block below: final first
    iss_entries = net.fund(led, a[0], 100, final=False)
    s = net.send(led, a[0], b[0], 50)
    led.add([s])
    check(led, s, PENDING, L.R_FUNDS)
    assert bal(led, a[0]) == (30, 100)
    led.add(net.votes(iss_entries[0]))
    valid(led, s)
    assert bal(led, a[0]) == (80, 0)


def test_send_beyond_final_and_incoming_credits_is_invalid_overspend():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 30)
    net.fund(led, a[0], 100, final=False)
    s = net.send(led, a[0], b[0], 131)
    led.add([s])
    check(led, s, INVALID, L.R_OVERSPEND)
    assert bal(led, a[0]) == (30, 100)


def test_pending_send_is_invalid_overspend_once_its_credit_is_conflicted():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    iss_entries = net.fund(led, a[0], 100, final=False)
    s = net.send(led, a[0], b[0], 50)
    led.add([s])
    check(led, s, PENDING, L.R_FUNDS)
    # the mint's key is cloned: a second block at the issue's slot
    iss = iss_entries[0]
    twin = net.issue(led.blocks[iss.prev], b[0], 7)
    led.add([twin])
    check(led, iss, CONFLICTED, L.R_DISPUTED)
    check(led, s, INVALID, L.R_OVERSPEND)
    assert bal(led, a[0]) == (0, 0)
    fresh_agrees(net, led)


def test_a_final_block_counts_as_valid_whatever_rule_3_gives():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100, final=False)
    s = net.send(led, a[0], b[0], 100)
    led.add([s])
    check(led, s, PENDING, L.R_FUNDS)
    # a replica lacking the votes that funded it, but holding the send's own certificate
    led.add(net.votes(s))
    valid(led, s, final=True)
    assert bal(led, a[0]) == (-100, 100)


def test_q0_final_means_valid():
    net = Net(witnesses=0)
    a, b = net.account(), net.account()
    led = net.ledger()
    fund = net.fund(led, a[0], 100)
    s = net.send(led, a[0], b[0], 40)
    led.add([s])
    for x in [*fund, s, *net.opens]:
        valid(led, x, final=True)
    assert bal(led, a[0]) == (60, 0)
    assert led.votable(a[0].pk, None) is None


# ------------------------------------------------------------------------ rule 4
def test_receive_claiming_a_send_twice_is_invalid_double_claim():
    net = Net()
    a = net.account()
    led = net.ledger()
    fund = net.fund(led, a[0], 100)
    again = net.receive(led, a[0], fund[0])
    led.add([again])
    check(led, again, INVALID, L.R_DOUBLE_CLAIM)
    assert bal(led, a[0]) == (100, 0)


def test_finality_never_excuses_a_double_claim():
    net = Net()
    a = net.account()
    led = net.ledger()
    fund = net.fund(led, a[0], 100)
    again = net.receive(led, a[0], fund[0])
    led.add([again, *net.votes(again)])
    check(led, again, INVALID, L.R_DOUBLE_CLAIM)
    assert bal(led, a[0]) == (100, 0)


def test_receive_of_a_send_not_in_the_set_is_pending_claim_missing():
    net = Net()
    a = net.account()
    led = net.ledger()
    iss = net.issue(led, a[0], 100)
    rc = net.receive(led, a[0], iss)
    led.add([rc])
    check(led, rc, PENDING, L.R_CLAIM_MISSING)
    led.add([iss])
    valid(led, rc)
    assert bal(led, a[0]) == (0, 100)


def test_receive_of_a_send_to_a_sibling_is_pending_revoke_missing():
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    iss = net.issue(led, a[1], 100)
    rc = net.receive(led, a[0], iss)
    led.add([iss, rc])
    check(led, rc, PENDING, L.R_REVOKE_MISSING)
    # a device of another account can never claim it
    rb = net.receive(led, b[0], iss)
    led.add([rb])
    check(led, rb, INVALID, L.R_NOT_ADDRESSED)


def test_receive_of_a_block_that_is_no_payment_is_invalid_not_addressed():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    fund = net.fund(led, b[0], 100)
    r1 = net.receive(led, a[0], b[0].open)
    led.add([r1])
    check(led, r1, INVALID, L.R_NOT_ADDRESSED)
    led2 = net.ledger(fund)
    r2 = net.receive(led2, a[0], fund[-1])  # a receive
    led2.add([r2])
    check(led2, r2, INVALID, L.R_NOT_ADDRESSED)
    led3 = net.ledger(fund)
    r3 = net.receive(led3, a[0], fund[1].id)  # a vote's id
    led3.add([r3])
    check(led3, r3, INVALID, L.R_NOT_ADDRESSED)


def test_receive_of_a_send_naming_another_account_is_invalid_not_addressed():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    wrong = Device(a[0].key, b.key, a[0].open)  # right device, wrong account
    iss = net.issue(led, wrong, 100)
    rc = net.receive(led, a[0], iss)
    led.add([iss, rc])
    check(led, rc, INVALID, L.R_NOT_ADDRESSED)


def test_receive_of_a_revoke_naming_another_device_is_invalid_not_addressed():
    net = Net()
    a = net.account(3)
    led = net.ledger()
    rv = net.revoke(led, a[0], a[1])
    rc = net.receive(led, a[2], rv)
    led.add([rv, rc])
    check(led, rc, INVALID, L.R_NOT_ADDRESSED)


def test_receive_status_never_depends_on_the_claimed_send_status():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 10, final=False)
    pend = net.send(led, a[0], b[0], 10)  # pending: funded by incoming only
    led.add([pend])
    check(led, pend, PENDING, L.R_FUNDS)
    bad = net.send(pend, a[0], b[0], 1000)  # pending too (reason prev)
    r1 = net.receive(led, b[0], pend)
    led.add([r1])
    valid(led, r1)
    assert bal(led, b[0]) == (0, 10)
    led.add([bad])
    r2 = net.receive(led, b[0], bad)
    led.add([r2])
    valid(led, r2)
    # the funding is conflicted: the send turns invalid, the receive stays valid at zero
    fund_iss = led.blocks[led.blocks[led.blocks[pend.prev].id].claim]
    led.add([net.issue(led.blocks[fund_iss.prev], b[0], 1)])
    check(led, pend, INVALID, L.R_OVERSPEND)
    valid(led, r1)
    valid(led, r2)
    assert bal(led, b[0]) == (0, 0)
    fresh_agrees(net, led)


def test_credit_is_final_when_the_send_is_final_incoming_while_valid_zero_once_conflicted():
    net = Net(witnesses=3)  # q = 2
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    s = net.send(led, a[0], b[0], 60)
    rc = net.receive(led, b[0], s)
    led.add([s, rc])
    assert bal(led, b[0]) == (0, 60)
    led.add([net.vote(s, 0)])
    assert bal(led, b[0]) == (0, 60)
    led.add([net.vote(s, 1)])
    assert bal(led, b[0]) == (60, 0)
    valid(led, rc)
    # another replica where a's clone forks the send before any certificate
    led2 = net.ledger([x for x in entries(led) if not isinstance(x, Vote) or x.block_id != s.id])
    twin = net.send(led.blocks[s.prev], a[0], b[0], 61)
    led2.add([twin])
    check(led2, s, CONFLICTED, L.R_DISPUTED)
    valid(led2, rc)
    assert bal(led2, b[0]) == (0, 0)


# -------------------------------------------------------------- votes, finality
def test_vote_covers_every_block_below_it():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100, final=False)
    s1 = net.send(led, a[0], b[0], 10)
    s2 = net.send(s1, a[0], b[0], 10)
    led.add([s1, s2])
    check(led, s1, PENDING, L.R_FUNDS)
    led.add(net.votes(s2))
    for bid in led.chain(a[0].pk):
        assert led.certified(bid)
        assert led.status[bid].final
    assert not led.status[led.chain(net.mint.pk)[-1]].final  # the issue is not covered
    assert bal(led, a[0]) == (-20, 100)


def test_vote_counts_only_if_its_block_id_device_and_seq_match():
    net = Net()
    a = net.account()
    led = net.ledger()
    fund = net.fund(led, a[0], 100, final=False)
    iss = fund[0]
    w = net.witness_keys[0]
    bad_seq = Vote(net.id, iss.device, iss.seq + 1, iss.id, pk(w)).signed(w)
    bad_dev = Vote(net.id, a[0].pk, iss.seq, iss.id, pk(w)).signed(w)
    led.add([bad_seq, bad_dev])
    assert not led.certified(iss.id)
    assert bal(led, a[0]) == (0, 100)
    led.add([net.vote(iss)])
    assert led.certified(iss.id)


def test_a_vote_stored_before_its_block_counts_when_the_block_arrives():
    net = Net()
    a = net.account()
    led = net.ledger()
    iss = net.issue(led, a[0], 100)
    led.add(net.votes(iss))
    assert led.votes and not led.certified(iss.id)
    led.add([iss])
    assert led.certified(iss.id)
    valid(led, iss, final=True)


def test_a_certificate_needs_q_distinct_witnesses():
    net = Net(witnesses=3)
    a = net.account()
    led = net.ledger()
    iss1 = net.issue(led, a[0], 1)
    iss2 = net.issue(iss1, a[0], 2)
    led.add([iss1, iss2, net.vote(iss1, 0), net.vote(iss2, 0)])
    assert not led.certified(iss1.id)
    led.add([net.vote(iss2, 2)])
    assert led.certified(iss1.id) and led.certified(iss2.id)


def test_a_certified_block_is_final_only_once_the_chain_below_is_present():
    net = Net()
    a = net.account()
    led = net.ledger()
    iss1 = net.issue(led, a[0], 1)
    iss2 = net.issue(iss1, a[0], 2)
    led.add([iss2, *net.votes(iss2)])
    check(led, iss2, PENDING, L.R_PREV, final=False)
    led.add([iss1])
    valid(led, iss1, final=True)
    valid(led, iss2, final=True)


# ----------------------------------------------------------------------- forks
def _forked(net: Net, q_votes_a=(), q_votes_b=()):
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    base = led.tip(a[0].pk)
    x = net.send(base, a[0], b[0], 10)
    x2 = net.send(x, a[0], b[0], 10)
    y = net.send(base, a[0], b[0], 20)  # the clone
    y2 = net.send(y, a[0], b[0], 20)
    led.add([x, x2, y, y2])
    led.add([net.vote(x, w) for w in q_votes_a] + [net.vote(y, w) for w in q_votes_b])
    return SimpleNamespace(led=led, a=a, base=base, x=x, x2=x2, y=y, y2=y2)


def test_fork_with_no_side_certified_is_disputed_on_both_sides():
    net = Net()
    f = _forked(net)
    led, a, base, x, x2, y, y2 = f.led, f.a, f.base, f.x, f.x2, f.y, f.y2
    for blk in (x, x2, y, y2):
        check(led, blk, CONFLICTED, L.R_DISPUTED)
        assert led.status[blk.id].label == "disputed"
    valid(led, base)
    assert bal(led, a[0]) == (100, 0)
    (fp,) = led.fraud_proofs()
    assert (fp.device, fp.seq, set(fp.block_ids), fp.equivocation) == (
        a[0].pk,
        x.seq,
        {x.id, y.id},
        False,
    )
    fresh_agrees(net, led)


def test_fork_with_one_side_certified_loses_the_other():
    net = Net()
    f = _forked(net)
    led, a, _base, x, x2, y, y2 = f.led, f.a, f.base, f.x, f.x2, f.y, f.y2
    led.add(net.votes(x))
    valid(led, x, final=True)
    valid(led, x2, final=False)
    check(led, y, CONFLICTED, L.R_LOST)
    check(led, y2, CONFLICTED, L.R_LOST)  # lost from n on
    assert led.status[y2.id].label == "lost"
    assert bal(led, a[0]) == (80, 0)
    assert len(led.fraud_proofs()) == 1
    fresh_agrees(net, led)


def test_two_certified_blocks_at_one_slot_are_an_equivocation_proof():
    net = Net(witnesses=3)  # q = 2; witness 1 votes both sides
    f = _forked(net, q_votes_a=(0, 1), q_votes_b=(1, 2))
    led, a, base, x, x2, y, y2 = f.led, f.a, f.base, f.x, f.x2, f.y, f.y2
    (fp,) = led.fraud_proofs()
    assert fp.equivocation and fp.seq == x.seq and set(fp.block_ids) == {x.id, y.id}
    for blk in (x, x2, y, y2):
        check(led, blk, CONFLICTED, L.R_EQUIVOCATION)
    valid(led, base, final=True)
    assert bal(led, a[0]) == (100, 0)
    fresh_agrees(net, led)


def test_votes_that_diverge_without_two_certificates_change_no_status():
    net = Net(witnesses=3)
    f = _forked(net, q_votes_a=(0,), q_votes_b=(1,))
    led, _a, _base, x, x2, y, y2 = f.led, f.a, f.base, f.x, f.x2, f.y, f.y2
    for blk in (x, x2, y, y2):
        check(led, blk, CONFLICTED, L.R_DISPUTED)
    assert not led.fraud_proofs()[0].equivocation
    # a certificate arriving later decides it
    led.add([net.vote(y2, 2)])
    check(led, x, CONFLICTED, L.R_LOST)
    valid(led, y, final=True)
    valid(led, y2, final=False)
    fresh_agrees(net, led)


def test_q0_fork_conflicts_both_sides_and_takes_back_what_it_funded():
    net = Net(witnesses=0)
    a, b, c = net.account(), net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    base = led.tip(a[0].pk)
    s = net.send(base, a[0], b[0], 100)
    rc = net.receive(led, b[0], s)
    led.add([s, rc])
    s2 = net.send(led, b[0], c[0], 100)
    rc2 = net.receive(led, c[0], s2)
    led.add([s2, rc2])
    valid(led, s2, final=True)
    assert bal(led, c[0]) == (100, 0)
    clone = net.send(base, a[0], c[0], 100)
    led.add([clone])
    check(led, s, CONFLICTED, L.R_DISPUTED)
    check(led, clone, CONFLICTED, L.R_DISPUTED)
    valid(led, rc)
    check(led, s2, INVALID, L.R_OVERSPEND)
    assert bal(led, b[0]) == (0, 0)
    assert bal(led, c[0]) == (0, 0)
    assert bal(led, a[0]) == (100, 0)
    fresh_agrees(net, led)


def test_q0_revoke_beats_device_block_at_same_slot():
    net = Net(witnesses=0)
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    base = led.tip(a[0].pk)
    s = net.send(base, a[0], b[0], 30)
    after = net.send(s, a[0], b[0], 30)
    rv = net.revoke(base, a[0], a[1])
    led.add([s, after, rv])
    valid(led, rv, final=True)
    check(led, s, CONFLICTED, L.R_LOST)
    check(led, after, CONFLICTED, L.R_LOST)
    rc = net.receive(led, a[1], rv)
    led.add([rc])
    assert bal(led, a[0]) == (0, 0)
    assert bal(led, a[1]) == (100, 0)
    assert len(led.fraud_proofs()) == 1
    fresh_agrees(net, led)


def test_q0_two_revokes_at_one_slot_are_disputed():
    net = Net(witnesses=0)
    a = net.account(3)
    led = net.ledger()
    net.fund(led, a[0], 100)
    base = led.tip(a[0].pk)
    r1 = net.revoke(base, a[0], a[1])
    r2 = net.revoke(base, a[0], a[2])
    c1 = net.receive(led, a[1], r1)
    c2 = net.receive(led, a[2], r2)
    led.add([r1, r2, c1, c2])
    check(led, r1, CONFLICTED, L.R_DISPUTED)
    check(led, r2, CONFLICTED, L.R_DISPUTED)
    assert bal(led, a[0]) == (100, 0)
    assert bal(led, a[1]) == bal(led, a[2]) == (0, 0)
    fresh_agrees(net, led)


def test_every_replica_holding_both_sides_shows_the_fraud_proof():
    net = Net()
    f = _forked(net)
    led, a, _base, x, x2, y, y2 = f.led, f.a, f.base, f.x, f.x2, f.y, f.y2
    for order in ([x, y], [y, x]):
        forks = {x.id, y.id, x2.id, y2.id}
        other = net.ledger([e for e in entries(led) if e.id not in forks])
        for blk in order:
            other.add([blk])
        assert [(p.device, p.seq) for p in other.fraud_proofs()] == [(a[0].pk, x.seq)]
        assert other.forked(a[0].pk)


# ----------------------------------------------------------------------- revoke
def test_revoke_passes_the_balance_to_the_sibling_and_leaves_the_device_at_zero():
    net = Net()
    a = net.account(2)
    led = net.ledger()
    net.fund(led, a[0], 100)
    rv = net.revoke(led, a[0], a[1])
    led.add([rv])
    assert bal(led, a[0]) == (0, 0)
    rc = net.receive(led, a[1], rv)
    led.add([rc])
    assert bal(led, a[1]) == (0, 100)
    led.add(net.votes(rv))
    assert bal(led, a[1]) == (100, 0)
    assert led.account_balance(a.pk) == Balance(100, 0)


def test_a_block_after_a_revoke_is_invalid_after_revoke():
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    rv = net.revoke(led, a[0], a[1])
    after = net.send(rv, a[0], b[0], 10)
    led.add([rv, after])
    check(led, after, INVALID, L.R_AFTER_REVOKE)
    assert bal(led, a[0]) == (0, 0)


def test_revoke_credit_final_incoming_and_zero():
    """Final part once the revoke is final; incoming credits final once both the revoke
    and their own send are final; all of it zero once the revoke is lost."""
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, a[0], 300)
    pending_fund = net.fund(led, a[0], 200, final=False)
    base = led.tip(a[0].pk)
    rv = net.revoke(base, a[0], a[1])
    rc = net.receive(led, a[1], rv)
    led.add([rv, rc])
    assert bal(led, a[0]) == (0, 0)
    assert bal(led, a[1]) == (0, 500)
    led.add(net.votes(rv))
    assert bal(led, a[1]) == (300, 200)
    led.add(net.votes(pending_fund[0]))
    assert bal(led, a[1]) == (500, 0)
    # another replica: the device's own block at the revoke's slot is certified
    led2 = net.ledger([e for e in entries(led) if not isinstance(e, Vote) or e.block_id != rv.id])
    race = net.send(base, a[0], b[0], 50)
    led2.add([race, *net.votes(race)])
    check(led2, rv, CONFLICTED, L.R_LOST)
    valid(led2, rc)
    assert bal(led2, a[1]) == (0, 0)
    assert bal(led2, a[0]) == (450, 0)
    fresh_agrees(net, led2)


def test_revoke_credit_is_nothing_while_the_chain_below_the_revoke_is_missing():
    """The credit is the revoked device's balance after s: until blocks 0..s are present,
    what the device's main chain holds is no measure of it."""
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    spend = net.send(led, a[0], b[0], 100)
    rv = net.revoke(spend, a[0], a[1])
    rc = net.receive(led, a[1], rv)
    led.add([rv, rc])
    check(led, rv, PENDING, L.R_PREV)
    valid(led, rc)
    assert bal(led, a[1]) == (0, 0)
    led.add([spend])
    valid(led, rv)
    assert bal(led, a[1]) == (0, 0)
    assert bal(led, a[0]) == (0, 0)
    fresh_agrees(net, led)


def test_revoke_credit_of_an_incoming_credit_whose_send_is_conflicted_is_zero():
    net = Net()
    a = net.account(2)
    led = net.ledger()
    net.fund(led, a[0], 300)
    pf = net.fund(led, a[0], 200, final=False)
    rv = net.revoke(led, a[0], a[1])
    rc = net.receive(led, a[1], rv)
    led.add([rv, rc, *net.votes(rv)])
    assert bal(led, a[1]) == (300, 200)
    led.add([net.issue(led.blocks[pf[0].prev], a[1], 9)])  # the mint forks
    assert bal(led, a[1]) == (300, 0)
    fresh_agrees(net, led)


def test_sibling_claims_a_send_addressed_to_the_revoked_device():
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, b[0], 100)
    s = net.send(led, b[0], a[0], 70)
    led.add([s, *net.votes(s)])
    rv = net.revoke(led, a[0], a[1])
    rc = net.receive(led, a[1], s)
    led.add([rc])
    check(led, rc, PENDING, L.R_REVOKE_MISSING)
    led.add([rv])
    valid(led, rc)
    assert bal(led, a[1]) == (0, 70)  # incoming until the revoke is final
    led.add(net.votes(rv))
    assert bal(led, a[1]) == (70, 0)
    assert [u.id for u in led.unclaimed_to(a[0].pk)] == [s.id]
    assert [u.id for u in led.unclaimed_to(a[1].pk)] == [rv.id]
    fresh_agrees(net, led)


def test_sibling_claim_of_a_send_to_the_revoked_device_is_zero_once_the_revoke_is_lost():
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, b[0], 100)
    s = net.send(led, b[0], a[0], 70)
    led.add([s, *net.votes(s)])
    base = led.tip(a[0].pk)
    rv = net.revoke(base, a[0], a[1])
    rc = net.receive(led, a[1], s)
    led.add([rv, rc])
    valid(led, rc)
    iss = net.issue(led, a[0], 5)
    race = net.receive(base, a[0], iss)  # the device's own block at the revoke's slot
    led.add([iss, race, *net.votes(race)])
    check(led, rv, CONFLICTED, L.R_LOST)
    valid(led, rc)  # its own status never depends on the revoke's: only its credit
    assert bal(led, a[1]) == (0, 0)
    fresh_agrees(net, led)


def test_sibling_cannot_claim_a_send_the_revoked_device_claimed_double_claim():
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, b[0], 100)
    s = net.send(led, b[0], a[0], 70)
    own = net.receive(led, a[0], s)
    led.add([s, own])
    rv = net.revoke(led, a[0], a[1])
    rc = net.receive(led, a[1], s)
    led.add([rv, rc])
    check(led, rc, INVALID, L.R_DOUBLE_CLAIM)
    rc2 = net.receive(rc, a[1], rv)
    led.add([rc2])
    check(led, rc2, INVALID, L.R_PREV)
    fresh_agrees(net, led)


def test_sibling_claim_waits_for_the_revoked_chain_below_the_revoke():
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, b[0], 100)
    s = net.send(led, b[0], a[0], 70)
    led.add([s])
    own = net.receive(led, a[0], s)
    rv = net.revoke(own, a[0], a[1])
    rc = net.receive(led, a[1], s)
    led.add([rv, rc])  # the revoke's chain below is missing: the claim may be a double
    check(led, rc, PENDING)
    led.add([own])
    check(led, rc, INVALID, L.R_DOUBLE_CLAIM)
    fresh_agrees(net, led)


def test_a_revoke_naming_another_sibling_does_not_route_a_claim():
    net = Net()
    a, b = net.account(3), net.account()
    led = net.ledger()
    net.fund(led, b[0], 100)
    s = net.send(led, b[0], a[0], 70)
    rv = net.revoke(led, a[0], a[1])
    rc = net.receive(led, a[2], s)
    led.add([s, rv, rc])
    check(led, rc, PENDING, L.R_REVOKE_MISSING)


def test_claiming_a_revoke_twice_is_invalid_double_claim():
    net = Net()
    a = net.account(2)
    led = net.ledger()
    net.fund(led, a[0], 100)
    rv = net.revoke(led, a[0], a[1])
    r1 = net.receive(led, a[1], rv)
    r2 = net.receive(r1, a[1], rv)
    led.add([rv, r1, r2])
    check(led, r2, INVALID, L.R_DOUBLE_CLAIM)
    assert bal(led, a[1]) == (0, 100)


# ---------------------------------------------------------------- witness rule
def test_votable_offers_the_last_valid_block_extending_the_last_vote():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    s1 = net.send(led, a[0], b[0], 10)
    s2 = net.send(s1, a[0], b[0], 200)  # overspend: never votable
    led.add([s1, s2])
    assert led.votable(a[0].pk, None) == s1
    assert led.votable(a[0].pk, (s1.seq, s1.id)) is None
    rc_seq = s1.seq - 1
    assert led.votable(a[0].pk, (rc_seq, led.chain(a[0].pk)[rc_seq])) == s1
    assert led.votable(a[0].pk, (rc_seq, b[0].open.id)) is None  # another branch


def test_votable_never_offers_two_blocks_at_one_slot():
    net = Net(witnesses=3)
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    base = led.tip(a[0].pk)
    x = net.send(base, a[0], b[0], 10)
    led.add([x])
    w = Witness(net, 0)
    vx = w.vote(led, a[0].pk)
    assert vx is not None and vx.block_id == x.id
    led.add([vx])
    y = net.send(base, a[0], b[0], 20)
    led.add([y])
    assert led.forked(a[0].pk)
    assert w.vote(led, a[0].pk) is None
    assert led.votable(a[0].pk, None) is None
    # y certified by the two others: y's side is the main chain; w still refuses it
    led.add([net.vote(y, 1), net.vote(y, 2)])
    assert led.votable(a[0].pk, w.last_voted(a[0].pk)) is None
    # a revoke at a slot it has not voted: offered
    rv = net.revoke(y, a[0], a[1])
    led.add([rv])
    assert led.votable(a[0].pk, None) == rv
    assert w.vote(led, a[0].pk) is None  # its claim of x refuses a vote covering y


def test_votable_offers_only_a_revoke_once_forked():
    net = Net()
    a, b = net.account(2), net.account()
    led = net.ledger()
    net.fund(led, a[0], 100)
    base = led.tip(a[0].pk)
    x = net.send(base, a[0], b[0], 10)
    y = net.send(base, a[0], b[0], 20)
    led.add([x, y])
    assert led.votable(a[0].pk, None) is None
    rv = net.revoke(base, a[0], a[1])  # races at the forked slot, disputed too
    led.add([rv])
    check(led, rv, CONFLICTED, L.R_DISPUTED)
    assert led.votable(a[0].pk, None) == rv
    top = (base.seq, base.id)
    assert led.votable(a[0].pk, top) == rv
    assert led.votable(a[0].pk, (rv.seq, x.id)) is None
    led.add(net.votes(rv))
    valid(led, rv, final=True)
    check(led, x, CONFLICTED, L.R_LOST)
    rc = net.receive(led, a[1], rv)
    led.add([rc])
    assert bal(led, a[1]) == (100, 0)


def test_votable_offers_nothing_with_q0():
    net = Net(witnesses=0)
    a = net.account()
    led = net.ledger()
    net.fund(led, a[0], 1)
    assert led.votable(a[0].pk, None) is None


# ------------------------------------------------------------------ balances
def test_account_balance_is_the_sum_over_its_devices():
    net = Net()
    a = net.account(2)
    led = net.ledger()
    net.fund(led, a[0], 100)
    net.fund(led, a[1], 50, final=False)
    mv = net.move(led, a[0], a[1], 30)
    rc = net.receive(led, a[1], mv)
    led.add([mv, rc])
    assert bal(led, a[0]) == (70, 0)
    assert bal(led, a[1]) == (0, 80)
    assert led.account_balance(a.pk) == Balance(70, 80)


def test_unclaimed_to_lists_what_a_device_has_not_claimed():
    net = Net()
    a, b = net.account(), net.account()
    led = net.ledger()
    net.fund(led, b[0], 100)
    s1 = net.send(led, b[0], a[0], 10)
    s2 = net.send(s1, b[0], a[0], 1000)  # invalid: not listed
    led.add([s1, s2])
    assert [x.id for x in led.unclaimed_to(a[0].pk)] == [s1.id]
    led.add([net.receive(led, a[0], s1)])
    assert led.unclaimed_to(a[0].pk) == []


# --------------------------------------------------------------- determinism
def test_status_is_order_independent_on_a_fixed_scenario():
    net = Net(witnesses=3)
    a, b, c = net.account(2), net.account(), net.account()
    led = net.ledger()
    net.fund(led, a[0], 500)
    net.fund(led, c[0], 50)
    net.fund(led, b[0], 300, final=False)
    s1 = net.send(led, a[0], b[0], 100)
    r1 = net.receive(led, b[0], s1)
    led.add([s1, r1, *net.votes(s1)])
    s2 = net.send(led, b[0], c[0], 350)  # pending until the 300 is final
    base = led.tip(c[0].pk)
    c1 = net.send(base, c[0], a[0], 20)
    c2 = net.send(base, c[0], b[0], 30)  # c is cloned
    led.add([s2, c1, c2, net.vote(c2, 0), net.vote(c2, 1)])
    r2 = net.receive(led, a[0], c1)
    r3 = net.receive(led, b[0], c2)
    led.add([r2, r3])
    rv = net.revoke(led, a[0], a[1])
    r4 = net.receive(led, a[1], rv)
    sx = net.send(led, c[0], a[0], 5)  # to the revoked device
    led.add([rv, r4, sx])
    r5 = net.receive(led, a[1], sx)
    led.add([r5])
    bad = net.receive(led, a[1], rv)  # double claim
    led.add([bad, *net.votes(rv, [1, 2])])
    statuses = {led.status[x.id].state for x in led.blocks.values()}
    assert statuses == {VALID, PENDING, INVALID, CONFLICTED}
    for seed in range(25):
        fresh_agrees(net, led, seed)


def test_every_reason_code_has_a_scenario_here():
    """A new reason code in wallet.ledger needs a scenario in this file."""
    import inspect

    source = inspect.getsource(inspect.getmodule(test_every_reason_code_has_a_scenario_here))
    codes = [name for name in vars(L) if name.startswith("R_")]
    assert len(codes) == 15
    missing = [c for c in codes if source.count(f"L.{c}") < 1]
    assert not missing, missing
