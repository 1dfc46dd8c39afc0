"""A till's floor limits (DESIGN §5), as pure arithmetic: each decision says why in
numbers, and whatever payments arrive and however they turn out, the exposure (and so
what refused payments can cost) stays within the limits per payment, per payer account
and per till."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.encoding import Policy
from wallet.errors import WalletError
from wallet.floor import (
    FINAL,
    HELD,
    PROVISIONAL,
    REFUSED,
    Exposed,
    Exposure,
    Limits,
    decide,
)


def money(minor: int) -> str:
    return f"{minor / 100:.2f}"


def name(account: bytes) -> str:
    return account.hex()[:4] + "…"


LIMITS = Limits(payment=5000, account=10000, till=20000)


def test_each_decision_says_why_in_numbers() -> None:
    a, b = b"\xaa" * 32, b"\xbb" * 32
    exposure = Exposure.of([Exposed(a, 8000), Exposed(b, 9000)])
    kw = {"exposure": exposure, "limits": LIMITS, "money": money, "name": name}
    assert decide(100, a, valid_here=False, **kw).reason.startswith(
        "held: not valid here yet")
    over = decide(5001, b"\xcc" * 32, valid_here=True, **kw)
    assert (over.state, over.reason) == (
        HELD, "held: 50.01 is over the floor per payment 50.00; taken once final")
    account = decide(2500, a, valid_here=True, **kw)
    assert account.reason == ("held: payer account aaaa… has 80.00 not final here; with "
                              "this 25.00 that is over the floor per account 100.00; "
                              "taken once final")
    till = decide(3500, b"\xcc" * 32, valid_here=True, **kw)
    assert till.reason.startswith("held: this till has 170.00 not final; with this 35.00")
    ok = decide(2000, a, valid_here=True, **kw)
    assert ok.provisional and ok.reason == (
        "provisional: 20.00 ≤ 50.00 a payment; payer account aaaa… 100.00 ≤ 100.00; "
        "till 190.00 ≤ 200.00")


def test_limits_come_from_the_policy_and_a_merchant_only_lowers_them() -> None:
    net = Limits.of(Policy(5000, 10000, 100000, 86400))
    assert net == Limits(5000, 10000, 100000)
    assert net.lowered(Limits(9999, 2000, 3000)) == Limits(5000, 2000, 3000)
    for bad in (-1, 1.5, True):
        try:
            Limits(bad, 1, 1)  # type: ignore[arg-type]
        except WalletError as exc:
            assert "floor per payment" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5),              # payer account
                          st.integers(1, 12000),          # amount
                          st.booleans(),                  # valid here
                          st.sampled_from([FINAL, REFUSED, PROVISIONAL]),  # its fate
                          st.booleans()),                 # written off, if refused
                max_size=60),
       st.builds(Limits, st.integers(0, 8000), st.integers(0, 15000), st.integers(0, 30000)))
def test_whatever_arrives_the_loss_stays_within_the_limits(payments, limits) -> None:  # type: ignore[no-untyped-def]
    """Payments arrive one by one; each is decided against the exposure of the takings
    before it; a provisional one then turns final (leaves the exposure), refused (stays
    until written off) or stays provisional. At every step the exposure, and so the
    refused money not written off, is within each limit."""
    exposed: list[Exposed] = []
    refused: list[Exposed] = []
    for acct, amount, valid, fate, written_off in payments:
        account = bytes([acct]) * 32
        d = decide(amount, account, valid_here=valid, exposure=Exposure.of(exposed),
                   limits=limits, money=money, name=name)
        if d.provisional:
            assert valid and amount <= limits.payment
            taking = Exposed(account, amount)
            if fate == REFUSED:
                refused.append(taking)
                if not written_off:
                    exposed.append(taking)
            elif fate == PROVISIONAL:
                exposed.append(taking)
        exposure = Exposure.of(exposed)
        assert exposure.total <= limits.till
        assert all(v <= limits.account for v in exposure.by_account.values())
        loss = Exposure.of(t for t in refused if t in exposed)
        assert loss.total <= limits.till
        assert all(v <= limits.account for v in loss.by_account.values())
