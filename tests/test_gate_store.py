"""An update the gate refuses changes neither the Doc nor the store (DESIGN §6, §8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ledgerkit import Net
from wallet.crdt import encode_items, item_client_id
from wallet.encoding import id_text
from wallet.errors import GateRefused
from wallet.replica import Replica
from wallet.wallet import Wallet


def snapshot(w: Wallet, r: Replica) -> tuple[int, bytes, bytes, dict]:
    return (w.store.count(), r.digest_value(), r.update_since(b""), dict(w.ledger.status))


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    net = Net(witnesses=1, quorum=1)
    acc = net.account(2)
    w = Wallet.join(tmp_path / "w", net.genesis.raw)
    w.ingest(net.opens)
    rep = Replica(w.ledger, commit=w.ingest)
    src = net.ledger()
    iss = net.issue(src, acc[0], 100)
    return net, acc, w, rep, iss


def test_a_good_update_is_validated_stored_and_applied(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, w, rep, iss = setup
    update = encode_items([(item_client_id(iss.id), id_text(iss.id), iss.raw)])
    before = w.store.count()
    rep.apply_update(update)
    assert w.store.count() == before + 1
    assert iss.id in rep.ids()
    reopened = Wallet.open(w.home)
    assert reopened.ledger.status[iss.id] == w.ledger.status[iss.id]


ATTACKS = ["forged_signature", "trailing", "key_mismatch", "stranger_vote"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_refused_update_changes_nothing_stored(setup, attack: str) -> None:  # type: ignore[no-untyped-def]
    net, _, w, rep, iss = setup
    raw, key, client, tail = iss.raw, id_text(iss.id), item_client_id(iss.id), b""
    if attack == "forged_signature":
        from wallet.encoding import entry_hash

        raw = raw[:-1] + bytes([raw[-1] ^ 1])
        key, client = id_text(entry_hash(raw)), item_client_id(entry_hash(raw))
    elif attack == "trailing":
        tail = b"\x00"
    elif attack == "key_mismatch":
        key = id_text(bytes(32))
    elif attack == "stranger_vote":
        from nacl.signing import SigningKey

        v = net.vote(iss, SigningKey.generate())
        raw, key, client = v.raw, id_text(v.id), item_client_id(v.id)
    newcomer = net.account(1)[0].open  # a good entry not held yet: refused with the rest
    good = (item_client_id(newcomer.id), id_text(newcomer.id), newcomer.raw)
    update = encode_items([(client, key, raw), good]) + tail
    before = snapshot(w, rep)
    with pytest.raises(GateRefused) as err:
        rep.apply_update(update)
    assert err.value.reason
    assert snapshot(w, rep) == before
    assert Wallet.open(w.home).store.count() == before[0]
    assert newcomer.id not in w.ledger
