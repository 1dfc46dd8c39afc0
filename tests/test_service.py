"""The wallet service: keys unlocked once, locked when idle, one stream of events.

A wallet on a real SQLite home (a q = 0 network): the service signs two payments and
a receive with one decryption of the device key; an idle lock (a fake clock) drops the
key, and the next signing asks for the passphrase again; a wrong passphrase holds
nothing; a payment from another wallet arriving by bundle is an event; a request's
amount and network are checked as the command line and the app both need.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clikit import PASSPHRASE, api_fund, api_network, api_wallets
from tui.service import PaymentArrived, StatusChanged, WalletService
from wallet import keys as keyfiles
from wallet.address import PaymentRequest, parse_address
from wallet.errors import KeyFileError, WalletError
from wallet.unlocked import UnlockedKeys
from wallet.wallet import Wallet


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def funded(tmp_path: Path):  # type: ignore[no-untyped-def]
    api_network(tmp_path, "svc")
    alice, bob = api_wallets(tmp_path / "g", tmp_path / "alice", tmp_path / "bob")
    api_fund(tmp_path / "issuer", alice, 10_000)
    return tmp_path, alice, bob


def counting_decrypts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = keyfiles.decrypt_secret

    def spy(data, passphrase, **kw):  # type: ignore[no-untyped-def]
        seen.append(kw.get("source", ""))
        return real(data, passphrase, **kw)

    monkeypatch.setattr(keyfiles, "decrypt_secret", spy)
    return seen


def test_keys_are_unlocked_once_and_locked_again_when_idle(
        funded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, alice, bob = funded
    decrypts = counting_decrypts(monkeypatch)
    asked: list[int] = []

    def passphrase() -> str:
        asked.append(1)
        return PASSPHRASE

    clock = Clock()
    svc = WalletService(Wallet.open(alice.path), passphrase=passphrase,
                        keys=UnlockedKeys(60, clock=clock))
    try:
        assert svc.locked
        svc.pay(svc.payee(bob.address, "1.00"))
        clock.now += 59
        svc.pay(svc.payee(bob.address, "2.00"))
        assert (len(asked), len(decrypts)) == (1, 1), "one passphrase, one Argon2id run"
        clock.now += 59  # used at +59: still unlocked
        assert not svc.locked
        clock.now += 61
        assert svc.locked, "idle longer than the lock time"
        svc.pay(svc.payee(bob.address, "3.00"))
        assert (len(asked), len(decrypts)) == (2, 2)
        svc.lock()
        assert svc.locked
        balance = svc.wallet.balance()[svc.wallet.device]  # type: ignore[index]
        assert balance.spendable == 10_000 - 600
    finally:
        svc.close()


def test_a_wrong_passphrase_holds_nothing(funded) -> None:  # type: ignore[no-untyped-def]
    _, alice, bob = funded
    svc = WalletService(Wallet.open(alice.path), passphrase=lambda: "not it")
    try:
        with pytest.raises(KeyFileError):
            svc.unlock()
        assert svc.locked and svc.wallet.unlocked is None
        with pytest.raises(KeyFileError):
            svc.pay(svc.payee(bob.address, "1.00"))
        assert svc.wallet.balance()[svc.wallet.device].spendable == 10_000  # type: ignore[index]
        assert svc.unlock(PASSPHRASE) == ["device", "account"]
        assert not svc.locked
    finally:
        svc.close()


def test_a_payment_arriving_is_an_event(funded) -> None:  # type: ignore[no-untyped-def]
    _, alice, bob = funded
    svc = WalletService.open(bob.path)
    events: list[object] = []
    svc.subscribe(events.append)
    a = Wallet.open(alice.path)
    try:
        to = parse_address(bob.address)
        paid, _ = a.pay(to, 250, PASSPHRASE, memo="lunch")
        svc.wallet.ingest_bodies(a.bodies(a.export_ids(to)))
    finally:
        a.close()
    try:
        arrived = [e for e in events if isinstance(e, PaymentArrived)]
        assert [e.block.id for e in arrived] == [paid.id]
        assert "2.50 EUR arrived from" in svc.describe(arrived[0])
        assert any(isinstance(e, StatusChanged) and e.change.block_id == paid.id
                   for e in events)
    finally:
        svc.close()


def test_a_request_gives_the_payee_and_is_checked(funded) -> None:  # type: ignore[no-untyped-def]
    _, alice, bob = funded
    svc = WalletService.open(alice.path, passphrase=lambda: PASSPHRASE)
    try:
        to = parse_address(bob.address)
        req = PaymentRequest(svc.wallet.network, to, 450, request_id=b"r" * 16,
                             memo="coffee")
        payee = svc.payee(req.uri())
        assert (payee.amount, payee.request) == (450, req)
        assert svc.payee(req.uri(), "4.50").amount == 450
        with pytest.raises(WalletError, match=r"the request asks for 4\.50 EUR, not 5\.00"):
            svc.payee(req.uri(), "5.00")
        with pytest.raises(WalletError, match="give an AMOUNT"):
            svc.payee(bob.address)
        block, _ = svc.pay(payee)
        assert (block.amount, block.to_device, block.request_id) == (450, to.device, b"r" * 16)
    finally:
        svc.close()
