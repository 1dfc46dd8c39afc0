"""Floor limits bound a merchant's loss, whatever happens (DESIGN §5, issue 15): honest
payers and a payer whose device was cloned pay two tills of one merchant offline, in
any amounts, and the replicas sync in any order. At every step each till's exposure
(and so its loss to refused payments) stays within its limits per payment, per payer
account and per till; the merchant's loss within the sum over its tills; every refused
taking carries its evidence; and an honest payer's payment is never refused.

Real wallets (their SQLite stores, the decision hook in the ingest's transaction), on a
network with no witnesses, where a fork refuses both sides (the harshest case for a
till: nothing is ever final and both sides of every fork are lost), and on one with a
witness (q = 1) that any party may meet between payments, where the side the witness
saw first turns final and the other is refused.
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
from nacl.signing import SigningKey

from tests.clikit import PASSPHRASE, api_fund, api_network, api_wallets
from tests.test_takings import pair_device
from wallet.encoding import Genesis, Policy
from wallet.errors import TallyError
from wallet.floor import HELD, PROVISIONAL, REFUSED, Limits
from wallet.keys import FAST_INSECURE
from wallet.reconcile import FORK, evidence
from wallet.wallet import Wallet
from wallet.witness import SqliteClaims, Witness

PAYERS = ("honest1", "honest2", "cloned", "clone")
"""The payers: two honest, one whose disk was copied (``clone`` signs as it)."""
TILLS = ("till1", "till2")
LIMITS = {"till1": Limits(3000, 5000, 8000), "till2": Limits(2000, 4000, 6000)}
"""Each till's floor limits (lower than the network's), in minor units."""
FUNDS = 10_000
"""What each payer holds, final, before the day starts."""


@dataclass
class Shop:
    """The template: a merchant with two tills and funded payers, copied per example;
    with a witness (q = 1) when ``witness`` holds its key."""

    root: Path
    witness: SigningKey | None = None


def _witnessed_network(root: Path, key: SigningKey) -> None:
    """Like ``api_network``, with one witness and q = 1."""
    issuer = SigningKey.generate()
    g = Genesis("prop-w", "EUR", 2, bytes(issuer.verify_key), (bytes(key.verify_key),), 1,
                Policy(5000, 10000, 100000, 3600)).signed(issuer)
    Wallet.create_network(root / "issuer", g, issuer, PASSPHRASE,
                          limits=FAST_INSECURE).close()
    (root / "g").write_bytes(g.raw)
    Wallet.join(root / "witness", g.raw).close()


def _vote_round(shop: Shop, witness: Wallet, claims: SqliteClaims) -> None:
    """The witness votes what it may now, and keeps its votes."""
    assert shop.witness is not None
    votes = Witness(shop.witness, claims).vote(witness.ledger)
    if votes:
        witness.ingest(votes)


def _make_shop(root: Path, witness: SigningKey | None) -> Shop:
    shop = Shop(root, witness)
    if witness is None:
        api_network(root, "prop")
    else:
        _witnessed_network(root, witness)
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
    if witness is not None:  # the funding turns final: through the witness and back
        opened = {n: Wallet.open(root / n) for n in ("witness", "issuer", *TILLS,
                                                      "honest1", "honest2", "cloned")}
        claims = SqliteClaims(root / "claims.db")
        try:
            for n, w in opened.items():
                if n != "witness":
                    _carry(w, opened["witness"])
            _vote_round(shop, opened["witness"], claims)
            for n, w in opened.items():
                if n != "witness":
                    _carry(opened["witness"], w)
            for n in ("honest1", "honest2", "cloned"):
                w = opened[n]
                assert w.ledger.balance(w.device or b"").spendable == FUNDS, "final"
        finally:
            claims.close()
            for w in opened.values():
                w.close()
    shutil.copytree(root / "cloned", root / "clone")  # a copied disk
    return shop


@pytest.fixture(scope="module", params=["no witness", "one witness"])
def shop(request: pytest.FixtureRequest) -> Iterator[Shop]:
    root = Path(tempfile.mkdtemp(prefix="tally-tills-"))
    try:
        yield _make_shop(root, SigningKey.generate() if request.param == "one witness"
                         else None)
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
        st.tuples(st.just("witness"), st.sampled_from(PARTIES)),
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
    claims = None
    try:
        for name in PARTIES:
            shutil.copytree(shop.root / name, work / name)
            opened[name] = Wallet.open(work / name)
        if shop.witness is not None:
            shutil.copytree(shop.root / "witness", work / "witness")
            shutil.copy(shop.root / "claims.db", work / "claims.db")
            witness = Wallet.open(work / "witness")
            claims = SqliteClaims(work / "claims.db")
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
            elif step[0] == "witness":
                if shop.witness is None or claims is None:
                    continue  # no witness on this network
                _carry(opened[step[1]], witness)
                _vote_round(shop, witness, claims)
                _carry(witness, opened[step[1]])
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
        if claims is not None:
            claims.close()
            witness.close()
        for w in opened.values():
            w.close()
        shutil.rmtree(work, ignore_errors=True)
