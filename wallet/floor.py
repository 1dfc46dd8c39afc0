"""A till's floor limits and exposure (DESIGN §5): what it may take while it cannot
reach a witness, and the decision on each payment, with its reason in numbers.

A till's *exposure* is its takings that are provisional, disputed, or refused and not
written off; with no witnesses (q = 0), a taking leaves it once the settle period has
passed with no fork seen. A send is taken **provisionally** only if it is valid (not
pending) in the till's replica and:

- per payment: its amount ≤ the limit;
- per payer account: the exposure to any device of that account, plus this, ≤ the limit;
- per till: the whole exposure, plus this, ≤ the limit.

Otherwise it is **held**: taken once final. So what a till can lose to refused payments
is bounded by its limits until the merchant writes a loss off. This module is pure
arithmetic over integers of minor units: the store keeps the decisions, the ledger the
statuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from wallet.encoding import Policy
from wallet.errors import WalletError

PROVISIONAL = "provisional"
HELD = "held"
FINAL = "final"
DISPUTED = "disputed"
REFUSED = "refused"
TAKING_STATES = (HELD, PROVISIONAL, FINAL, DISPUTED, REFUSED)
"""Where a taking stands: held or provisional, then final, disputed or refused."""
EXPOSED_STATES = frozenset({PROVISIONAL, DISPUTED, REFUSED})
"""The states whose takings count in the exposure (a refused one until written off)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A till's floor limits, in minor units."""

    payment: int
    account: int
    till: int

    def __post_init__(self) -> None:
        for name in ("payment", "account", "till"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise WalletError(f"floor per {name} must be whole minor units ≥ 0, "
                                  f"not {value!r}")

    @classmethod
    def of(cls, policy: Policy) -> Limits:
        """The network's defaults."""
        return cls(policy.floor_payment, policy.floor_account, policy.floor_till)

    def lowered(self, other: Limits) -> Limits:
        """These limits, each lowered to ``other``'s where that is lower (a merchant
        may lower a till's limits, never raise them over the network's)."""
        return Limits(min(self.payment, other.payment), min(self.account, other.account),
                      min(self.till, other.till))


@dataclass(frozen=True, slots=True)
class Exposed:
    """One taking as the exposure counts it."""

    payer_account: bytes
    amount: int


@dataclass
class Exposure:
    """A till's exposure: in all, and to each payer account."""

    total: int = 0
    by_account: dict[bytes, int] = field(default_factory=dict)

    @classmethod
    def of(cls, takings: Iterable[Exposed]) -> Exposure:
        """The exposure of these takings (those the caller found exposed)."""
        out = cls()
        for t in takings:
            out.add(t.payer_account, t.amount)
        return out

    def add(self, account: bytes, amount: int) -> None:
        """Count one more exposed taking."""
        assert amount > 0, amount
        self.total += amount
        self.by_account[account] = self.by_account.get(account, 0) + amount

    def to(self, account: bytes) -> int:
        """The exposure to one payer account."""
        return self.by_account.get(account, 0)


@dataclass(frozen=True, slots=True)
class Decision:
    """Provisional or held, and why, in numbers a merchant reads."""

    state: str
    reason: str

    @property
    def provisional(self) -> bool:
        """True when the payment was taken provisionally."""
        return self.state == PROVISIONAL


def decide(amount: int, payer_account: bytes, *, valid_here: bool, exposure: Exposure,
           limits: Limits, money: Callable[[int], str],
           name: Callable[[bytes], str]) -> Decision:
    """The decision on one incoming payment (DESIGN §5). ``valid_here``: the send is
    valid (not pending) in this replica; ``money`` writes minor units, ``name`` an
    account, for the reason."""
    assert amount > 0, amount
    if not valid_here:
        return Decision(HELD, "held: not valid here yet (what funds it is not final "
                              "here); taken once final")
    if amount > limits.payment:
        return Decision(HELD, f"held: {money(amount)} is over the floor per payment "
                              f"{money(limits.payment)}; taken once final")
    to_account = exposure.to(payer_account)
    if to_account + amount > limits.account:
        return Decision(HELD, f"held: payer account {name(payer_account)} has "
                              f"{money(to_account)} not final here; with this "
                              f"{money(amount)} that is over the floor per account "
                              f"{money(limits.account)}; taken once final")
    if exposure.total + amount > limits.till:
        return Decision(HELD, f"held: this till has {money(exposure.total)} not final; "
                              f"with this {money(amount)} that is over the floor per "
                              f"till {money(limits.till)}; taken once final")
    return Decision(PROVISIONAL,
                    f"provisional: {money(amount)} ≤ {money(limits.payment)} a payment; "
                    f"payer account {name(payer_account)} {money(to_account + amount)} ≤ "
                    f"{money(limits.account)}; till {money(exposure.total + amount)} ≤ "
                    f"{money(limits.till)}")
