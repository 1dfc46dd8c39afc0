"""Floor limits bound a merchant's loss, whatever happens (DESIGN §5, issue 15): honest
payers and a payer whose device was cloned pay two tills of one merchant offline, in
any amounts, and the replicas sync in any order. At every step each till's exposure
(and so its loss to refused payments) stays within its limits per payment, per payer
account and per till; the merchant's loss within the sum over its tills; every refused
taking carries its evidence; and an honest payer's payment is never refused.

Real wallets (their SQLite stores, the decision hook in the ingest's transaction) on a
network with no witnesses, where a fork refuses both sides: the harshest case for a
till, since nothing is ever final and both sides of every fork are lost.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.clikit import PASSPHRASE, api_fund, api_network, api_wallets
from tests.test_takings import pair_device
from wallet.errors import TallyError
from wallet.floor import HELD, PROVISIONAL, REFUSED, Limits
from wallet.reconcile import FORK, evidence
from wallet.wallet import Wallet

PAYERS = ("honest1", "honest2", "cloned", "clone")
"""The payers: two honest, one whose disk was copied (``clone`` signs as it)."""
TILLS = ("till1", "till2")
LIMITS = {"till1": Limits(3000, 5000, 8000), "till2": Limits(2000, 4000, 6000)}
"""Each till's floor limits (lower than the network's), in minor units."""
FUNDS = 10_000
"""What each payer holds, final, before the day starts."""


@dataclass
class Shop:
    """The template: a merchant with two tills and funded payers, copied per example."""

    root: Path


@pytest.fixture(scope="module")
def shop() -> Iterator[Shop]:
    root = Path(tempfile.mkdtemp(prefix="tally-tills-"))
    try:
        api_network(root, "prop")
        merchant, *payers = api_wallets(root / "g", root / "merchant", root / "honest1",
                                        root / "honest2", root / "cloned")
        for p in payers:
            api_fund(root / "issuer", p, FUNDS)
        for name in TILLS:
            shutil.move(pair_device(root, merchant.path, merchant.address, name), root / name)
            w = Wallet.open(root / name)
            try:
                w.set_till_limits(LIMITS[name])
            finally:
                w.close()
        shutil.copytree(root / "cloned", root / "clone")  # a copied disk
        yield Shop(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


PARTIES = PAYERS + TILLS
steps = st.lists(
    st.one_of(
        st.tuples(st.just("pay"), st.sampled_from((*PAYERS, "cloned", "clone")),
                  st.sampled_from(TILLS), st.integers(1, 4500)),
        st.tuples(st.just("pay"), st.sampled_from(PAYERS), st.sampled_from(TILLS),
                  st.integers(1, 4500)),
        st.tuples(st.just("sync"), st.sampled_from(PARTIES), st.sampled_from(PARTIES)),
    ),
    min_size=1, max_size=20)


def _carry(src: Wallet, dst: Wallet) -> None:
    """Everything ``src`` holds, to ``dst`` (a sync in one direction)."""
    dst.ingest_bodies(src.bodies(src.export_ids(None)))


def _check(tills: dict[str, Wallet], honest: set[bytes]) -> int:
    """The promises of DESIGN §5 at this instant; the merchant's loss (minor units)."""
    loss_all = 0
    for name, w in tills.items():
        lim = LIMITS[name]
        exposure = w.takings.exposure()
        assert exposure.total <= lim.till, (name, exposure)
        assert all(v <= lim.account for v in exposure.by_account.values()), (name, exposure)
        led = w.ledger
        loss = 0
        for k in w.takings.rows():
            if k.decision == PROVISIONAL:
                assert k.amount <= lim.payment, (name, k)
            if k.state != REFUSED:
                continue
            assert k.payer_device not in honest, f"an honest payment was refused: {k}"
            ev = evidence(led, k)
            assert ev is not None, k
            if k.status_reason in ("lost", "disputed"):
                # the fork at or below the payment's slot that takes it down
                assert ev.kind == FORK and len(ev.blocks) >= 2, ev
                assert ev.device == k.payer_device and ev.seq <= led.blocks[k.id].seq, ev
                assert all(b in led.blocks for b in ev.blocks), "the proof is held here"
            if k.decision == PROVISIONAL:
                loss += k.amount
        assert loss <= lim.till, (name, loss)
        loss_all += loss
    assert loss_all <= sum(lim.till for lim in LIMITS.values())
    return loss_all


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_a_tills_loss_stays_within_its_floor_limits_whatever_payers_and_clones_do(
        shop: Shop, plan: list[tuple]) -> None:
    work = Path(tempfile.mkdtemp(prefix="tally-tills-ex-"))
    opened: dict[str, Wallet] = {}
    try:
        for name in PARTIES:
            shutil.copytree(shop.root / name, work / name)
            opened[name] = Wallet.open(work / name)
        tills = {n: opened[n] for n in TILLS}
        honest = {opened[n].device or b"" for n in ("honest1", "honest2")}
        for step in plan:
            if step[0] == "pay":
                _, payer, till, minor = step
                w = opened[payer]
                if w.ledger.balance(w.device or b"").spendable < minor:
                    continue  # an honest wallet never signs what it cannot spend
                try:
                    w.pay(tills[till].address(), minor, PASSPHRASE)
                except TallyError as exc:  # a wallet that has seen its own fork
                    assert payer in ("cloned", "clone") and "forked" in str(exc), exc
                    continue
                _carry(w, tills[till])  # offline, straight to the till
            else:
                _, a, b = step
                if a != b:
                    try:
                        _carry(opened[a], opened[b])
                    except TallyError as exc:  # nothing a peer sends may fail a sync
                        raise AssertionError(f"sync {a} -> {b}: {exc}") from exc
            _check(tills, honest)
        for a in PARTIES:  # at last everyone meets everyone
            for b in PARTIES:
                if a != b:
                    _carry(opened[a], opened[b])
        loss = _check(tills, honest)
        event("a till lost money to a clone" if loss else "no loss")
        held = sum(1 for w in tills.values() for k in w.takings.rows() if k.decision == HELD)
        event("some payment held" if held else "none held")
        for w in opened.values():
            d = w.device or b""
            assert w.ledger.balance(d).spendable >= 0
    finally:
        for w in opened.values():
            w.close()
        shutil.rmtree(work, ignore_errors=True)
