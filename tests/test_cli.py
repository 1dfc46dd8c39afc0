"""End-to-end flows of the ``tally`` command (DESIGN §9), each command a real process.

Wallets live in tmp_path with real SQLite files; bundles (files) carry entries between
them. Most flows run on one module-wide q = 0 network (payments are final at once); one
flow runs on a network with a witness that votes in-process on a hub wallet.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tests.clikit import (
    PASSPHRASE,
    Home,
    api_fund,
    api_wallets,
    carry,
    check_failed,
    check_ok,
    fail,
    new_wallets,
    ok,
    one_json,
    run,
    run_many,
    store_snapshot,
    tally_env,
    tj,
)
from tui.cli import build_parser
from wallet import keys as keyfiles
from wallet.address import Address, PaymentRequest, parse_address, parse_request
from wallet.encoding import id_from_text, key_from_text, key_text
from wallet.ledger import ACCEPTED_WORD
from wallet.pairing import make_pairing_request
from wallet.wallet import Wallet
from wallet.witness import SqliteClaims, Witness

ACC = ACCEPTED_WORD  # what a valid block reads on a network with no witnesses

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Net:
    """The module's q = 0 network: the issuer's home and the genesis file."""

    issuer: Path
    genesis: Path
    network: str
    address: str


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    d = tmp_path_factory.mktemp("net")
    doc = tj(d / "issuer", "network", "create", "Corner Shop", "--currency", "eur",
             "--decimals", "2", "--floor-payment", "40", "--floor-account", "80",
             "--floor-till", "900", "--settle-period", "3600", "--out", d / "shop.genesis")
    assert doc["quorum"] == 0 and doc["witnesses"] == []
    assert Path(doc["genesis_file"]) == d / "shop.genesis"
    return Net(d / "issuer", d / "shop.genesis", doc["network"], doc["address"])


def _somebody(net: Net) -> str:
    """An address on ``net`` of a device no wallet here holds (a payee we never hear from)."""
    return Address.of(id_from_text(net.network), bytes(SigningKey.generate().verify_key),
                      bytes(SigningKey.generate().verify_key)).text()


def _history(home: Path, *args: object) -> list[dict]:
    return tj(home, "history", "--limit", "1000", *args)["history"]


# ------------------------------------------------------------------ network
def test_network_create_show_and_join(net: Net, tmp_path: Path) -> None:
    shown = tj(net.issuer, "network", "show")
    assert shown == {
        "network": net.network, "name": "Corner Shop", "currency": "EUR", "decimals": 2,
        "issuer": shown["issuer"], "witnesses": [], "quorum": 0, "floor_payment": 4000,
        "floor_account": 8000, "floor_till": 90000, "settle_period_s": 3600,
    }
    # The issuing device's open is signed by the issuer key: its "account" is the issuer.
    assert tj(net.issuer, "address")["account"] == shown["issuer"]

    home = tmp_path / "w"
    assert tj(home, "network", "join", net.genesis) == {"network": net.network,
                                                         "name": "Corner Shop"}
    assert tj(home, "network", "show") == shown
    assert "Corner Shop" in ok(home, "network", "show")
    assert "run `tally init`" in fail(home, "address")
    assert "already holds a wallet" in fail(home, "network", "join", net.genesis)
    assert "already holds a wallet" in fail(net.issuer, "network", "create", "X",
                                            "--currency", "EUR")

    # A file that is not a genesis, or a genesis whose signature was tampered with,
    # creates no wallet.
    junk = tmp_path / "junk.genesis"
    junk.write_text("hello\n")
    assert "genesis" in fail(tmp_path / "j1", "network", "join", junk)
    forged = tmp_path / "forged.genesis"
    raw = bytearray(net.genesis.read_bytes())
    raw[-1] ^= 1
    forged.write_bytes(bytes(raw))
    assert "signature" in fail(tmp_path / "j2", "network", "join", forged)
    assert "cannot read" in fail(tmp_path / "j3", "network", "join", tmp_path / "nope")
    for h in ("j1", "j2", "j3"):
        assert not (tmp_path / h / "wallet.db").exists()


def test_network_create_with_witnesses(tmp_path: Path) -> None:
    keys = [SigningKey.generate() for _ in range(4)]
    files = []
    for i, k in enumerate(keys[:2]):
        f = tmp_path / f"w{i}.key"
        keyfiles.save_key(f, k, PASSPHRASE, kind="witness", limits=keyfiles.FAST_INSECURE)
        files.append(f)
    texts = [key_text(bytes(k.verify_key)) for k in keys]
    wargs = ["--witness", files[0], "--witness", files[1], "--witness", texts[2],
             "--witness", texts[3]]

    # 4 witnesses: quorum proposed 3 (f = 1: 2f + 1), keys from files and from text.
    home = tmp_path / "four"
    doc = tj(home, "network", "create", "Town", "--currency", "EUR", *wargs)
    assert doc["quorum"] == 3 and doc["witnesses"] == texts
    assert Path(doc["genesis_file"]) == home / "network.genesis"
    shown = tj(home, "network", "show")
    assert shown["witnesses"] == texts and shown["quorum"] == 3

    # A quorum under which two quorums might not share a witness is refused, with
    # what to use instead, and nothing is created.
    bad = tmp_path / "bad"
    msg = fail(bad, "network", "create", "Town", "--currency", "EUR", *wargs, "--quorum", "2")
    assert "quorum 2 of 4" in msg and "2q > N" in msg and "try 3" in msg
    msg = fail(bad, "network", "create", "Town", "--currency", "EUR", *wargs, "--quorum", "5")
    assert "quorum 5 of 4" in msg
    msg = fail(bad, "network", "create", "Town", "--currency", "EUR", "--quorum", "1")
    assert "use quorum 0" in msg
    assert "no such key file, and not a 52-character public key" in fail(
        bad, "network", "create", "Town", "--currency", "EUR",
                                 "--witness", "not-a-key")
    cases = [
        (["--witness", texts[0], "--witness", texts[0]], "listed twice"),
        (["--decimals", "-1"], "--decimals -1: give 0 to 18"),
        (["--decimals", "19"], "--decimals 19: give 0 to 18"),
        (["--settle-period", "-5"], "--settle-period -5: give 0 or more"),
        (["--floor-till", "0"], "--floor-till: amount '0' must be more than 0"),
        (["--decimals", "0", "--floor-payment", "1.5"], "--floor-payment: amount '1.5' has"),
        (["--currency", "euro1"], "currency"),
    ]
    procs = run_many([(bad, "network", "create", "Town", "--currency", "EUR", *args)
                      for args, _ in cases])
    for (args, want), p in zip(cases, procs, strict=True):
        assert want in check_failed(p), args
    assert not bad.exists()

    one = tj(tmp_path / "one", "network", "create", "Hamlet", "--currency", "EUR",
             "--witness", texts[0])
    assert one["quorum"] == 1


# ------------------------------------------------------------------ identity
def key_record(home: Path, kind: str) -> tuple[str, bytes] | None:
    """The kind and public key of a wallet's encrypted key record, or None."""
    import json

    w = Wallet.open(home)
    try:
        data = w.store.get_meta(f"key.{kind}")
    finally:
        w.close()
    if data is None:
        return None
    doc = json.loads(data)
    return doc["kind"], key_from_text(doc["public"])


def test_init_prints_phrase_and_address(net: Net, tmp_path: Path) -> None:
    home = tmp_path / "a"
    tj(home, "network", "join", net.genesis)
    doc = tj(home, "init", "--label", "phone")
    assert set(doc) == {"address", "phrase"}
    words = doc["phrase"].split()
    assert len(words) == 24
    addr = parse_address(doc["address"])
    account = SigningKey(keyfiles.seed_from_phrase(doc["phrase"]))
    assert bytes(account.verify_key) == addr.account
    assert key_record(home, "account") == ("account", addr.account)
    assert key_record(home, "device") == ("device", addr.device)
    raw = (home / "wallet.db").read_bytes()  # the secret never sits in the store in the clear
    assert bytes(account) not in raw and bytes(account).hex().encode() not in raw

    assert tj(home, "address") == {"address": doc["address"],
                                   "account": key_text(addr.account),
                                   "device": key_text(addr.device)}
    assert ok(home, "address").strip() == doc["address"]
    devs = tj(home, "devices", "list")["devices"]
    assert [(d["label"], d["this"]) for d in devs] == [("phone", True)]
    assert "already has a device" in fail(home, "init")
    assert "no wallet in" in fail(tmp_path / "empty", "init")

    # For people, init prints the phrase on a line of its own.
    other = tmp_path / "b"
    tj(other, "network", "join", net.genesis)
    text = ok(other, "init")
    lines = [ln.strip() for ln in text.splitlines()]
    assert lines[0].startswith("address: tly2")
    phrase = next(ln for ln in lines if len(ln.split()) == 24)
    assert keyfiles.seed_from_phrase(phrase)


def test_request_uri_parses(net: Net, tmp_path: Path) -> None:
    (w,) = api_wallets(net.genesis, tmp_path / "shop")
    before = int(time.time())
    doc = tj(w.path, "request", "12.50", "--memo", "coffee & cake", "--expires", "600",
             "--id", "0a1b2c")
    req = parse_request(doc["request"])
    assert req.network == id_from_text(net.network)
    assert req.address == parse_address(w.address)
    assert (req.amount, req.memo, req.request_id) == (1250, "coffee & cake", b"\x0a\x1b\x2c")
    assert before + 600 <= req.expires <= int(time.time()) + 600
    assert (doc["amount_minor"], doc["request_id"], doc["expires"]) == (1250, "0a1b2c", req.expires)

    plain = parse_request(ok(w.path, "request", "3").strip())
    assert plain.amount == 300 and len(plain.request_id) == 8 and plain.expires == 0

    assert "3 decimals" in fail(w.path, "request", "12.345")
    assert "more than 0" in fail(w.path, "request", "0")
    assert "not a decimal number" in fail(w.path, "request", "1e3")
    assert "not hex" in fail(w.path, "request", "1", "--id", "zz")
    assert "at most 32" in fail(w.path, "request", "1", "--id", "ab" * 33)


# ------------------------------------------------------------------ payments
def test_issue_bundle_receive_balance(net: Net, tmp_path: Path) -> None:
    (alice,) = new_wallets(net.genesis, tmp_path / "alice")
    issued = tj(net.issuer, "issue", "--yes", alice.address, "100")
    assert (issued["amount_minor"], issued["status"], issued["final"]) == (10000, ACC, False)
    assert (issued["amount"], issued["currency"]) == ("100.00", "EUR")
    assert tj(alice.path, "balance")["spendable_minor"] == 0

    f = tmp_path / "issue.bundle"
    exported = tj(net.issuer, "bundle", "export", f, "--for", alice.address)
    assert exported["entries"] >= 2 and exported["bytes"] == f.stat().st_size
    text = ok(alice.path, "bundle", "import", f)
    assert f"imported {exported['entries']} new of {exported['entries']} entries" in text
    assert "100.00 EUR waits to be claimed here: `tally receive`" in text
    # Imported but not claimed yet: not spendable until it receives, but in the total.
    bal = tj(alice.path, "balance")
    assert (bal["spendable_minor"], bal["incoming_minor"]) == (0, 0)
    assert (bal["to_claim_minor"], bal["total_minor"]) == (10000, 10000)

    got = tj(alice.path, "receive")["received"]
    assert [(r["claims"], r["amount_minor"], r["status"]) for r in got] == [
        (issued["id"], 10000, ACC)
    ]
    bal = tj(alice.path, "balance")
    assert (bal["spendable_minor"], bal["incoming_minor"], bal["currency"], bal["decimals"]) == (
        10000, 0, "EUR", 2)
    assert [d["spendable_minor"] for d in bal["devices"]] == [10000]
    assert "spendable 100.00 EUR" in ok(alice.path, "balance")
    assert tj(alice.path, "receive") == {"received": [], "refused": []}
    assert ok(alice.path, "receive").strip() == "nothing to receive"
    assert [(h["kind"], h["status"]) for h in _history(alice.path)] == [
        ("receive", ACC), ("open", ACC)]
    # Importing twice is not an error a script should stop on: nothing new, exit 0.
    assert "nothing new" in ok(alice.path, "bundle", "import", f)
    assert tj(alice.path, "bundle", "import", f)["new"] == 0
    assert "only the wallet that created the network" in fail(
        alice.path, "issue", "--yes", alice.address, "1")


def test_pay_address_and_request(net: Net, tmp_path: Path) -> None:
    alice, bob = api_wallets(net.genesis, tmp_path / "alice", tmp_path / "bob")
    api_fund(net.issuer, alice, 10000)

    by_address = tj(alice.path, "pay", "--yes", bob.address, "12.50", "--memo", "lunch")
    assert (by_address["amount_minor"], by_address["status"]) == (1250, ACC)
    uri = tj(bob.path, "request", "7.25", "--memo", "for the cake", "--id", "beef")["request"]
    assert "asks for 7.25 EUR, not 7.30 EUR" in fail(alice.path, "pay", "--yes", uri, "7.30")
    by_request = tj(alice.path, "pay", "--yes", uri)
    assert (by_request["amount_minor"], by_request["status"]) == (725, ACC)

    net_id = id_from_text(net.network)
    b = parse_address(bob.address)
    elsewhere = PaymentRequest(bytes(32), Address.of(bytes(32), b.account, b.device), 100).uri()
    assert "for another network (AAAAAAAA…)" in fail(alice.path, "pay", "--yes", elsewhere)
    mangled = PaymentRequest(bytes(32), b, 100).uri()
    assert "tampered with or mangled" in fail(alice.path, "pay", "--yes", mangled)
    expired = PaymentRequest(net_id, parse_address(bob.address), 100, b"\x01", 1000).uri()
    assert "expired" in fail(alice.path, "pay", "--yes", expired)
    typo = bob.address[:-3] + ("a" if bob.address[-3] != "a" else "b") + bob.address[-2:]
    assert "checksum" in fail(alice.path, "pay", "--yes", typo, "1")
    assert "give an AMOUNT" in fail(alice.path, "pay", "--yes", bob.address)
    assert "this device" in fail(alice.path, "pay", "--yes", alice.address, "1")
    assert "memo is 465 bytes; at most 464" in fail(alice.path, "pay", "--yes", bob.address, "1",
                                                      "--memo", "x" * 465)

    carry(alice.path, bob.path, tmp_path / "pay.bundle", for_address=bob.address)
    got = tj(bob.path, "receive")["received"]
    assert sorted((r["claims"], r["amount_minor"], r["status"]) for r in got) == sorted(
        [(by_address["id"], 1250, ACC), (by_request["id"], 725, ACC)])
    assert tj(bob.path, "balance")["spendable_minor"] == 1975
    assert tj(alice.path, "balance")["spendable_minor"] == 10000 - 1975

    # The memos are sealed to bob, and the request id rides in the send.
    w = Wallet.open(bob.path)
    try:
        send1 = w.ledger.blocks[id_from_text(by_address["id"])]
        send2 = w.ledger.blocks[id_from_text(by_request["id"])]
        assert w.memo(send1, PASSPHRASE) == "lunch"
        assert w.memo(send2, PASSPHRASE) == "for the cake"
        assert send2.request_id == bytes.fromhex("beef") and send1.request_id == b""
        assert b"lunch" not in send1.raw
    finally:
        w.close()


def test_overspend_is_refused_and_changes_nothing(net: Net, tmp_path: Path) -> None:
    (alice,) = api_wallets(net.genesis, tmp_path / "alice")
    api_fund(net.issuer, alice, 1000)
    payee = _somebody(net)
    before = (_history(alice.path), store_snapshot(alice.path))

    p = run(alice.path, "pay", "--yes", payee, "10.01")
    msg = check_failed(p)
    assert "spendable 10.00" in msg and "need 10.01" in msg
    p = run(alice.path, "pay", "--yes", payee, "10.01", "--json")
    assert "spendable 10.00" in check_failed(p, as_json=True)
    assert "wrong passphrase" in fail(alice.path, "pay", "--yes", payee, "1",
                                      env=tally_env(TALLY_PASSPHRASE="not it"))
    assert "more than 0" in fail(alice.path, "pay", "--yes", payee, "0")
    assert (_history(alice.path), store_snapshot(alice.path)) == before

    # Exactly the spendable balance is fine; after it, one cent more is not.
    assert tj(alice.path, "pay", "--yes", payee, "10.00")["status"] == ACC
    assert tj(alice.path, "balance")["spendable_minor"] == 0
    assert "spendable 0.00, need 0.01" in fail(alice.path, "pay", "--yes", payee, "0.01")
    assert store_snapshot(alice.path)["entries"] == before[1]["entries"] + 1


def test_history_paging_and_status_filter(net: Net, tmp_path: Path) -> None:
    (alice,) = api_wallets(net.genesis, tmp_path / "alice")
    api_fund(net.issuer, alice, 10000)
    payee = parse_address(_somebody(net))
    w = Wallet.open(alice.path)
    try:
        for i in range(5):
            w.pay(payee, 100 + i, PASSPHRASE)
    finally:
        w.close()
    full = tj(alice.path, "history")
    rows = full["history"]
    assert [r["seq"] for r in rows] == [6, 5, 4, 3, 2, 1, 0]
    assert [r["kind"] for r in rows] == ["send"] * 5 + ["receive", "open"]
    assert [r["amount_minor"] for r in rows[:5]] == [104, 103, 102, 101, 100]
    assert full["next_before"] is None

    pages, before = [], None
    while True:
        args = ["--limit", "3"] + (["--before", str(before)] if before is not None else [])
        page = tj(alice.path, "history", *args)
        assert len(page["history"]) <= 3
        pages.append([r["seq"] for r in page["history"]])
        before = page["next_before"]
        if before is None or not page["history"]:
            break
        assert before == page["history"][-1]["ref"]
    assert pages[:3] == [[6, 5, 4], [3, 2, 1], [0]]
    assert all(p == [] for p in pages[3:])

    # q = 0: every valid block reads "accepted, no witness"; none is final or valid.
    assert len(_history(alice.path, "--status", "accepted")) == 7
    assert len(_history(alice.path, "--status", "not-final")) == 7
    for s in ("pending", "disputed", "final", "valid"):
        assert _history(alice.path, "--status", s) == []
    assert [r["seq"] for r in tj(alice.path, "history", "--status", "accepted", "--limit",
                                 "2")["history"]] == [6, 5]
    assert "give 1 or more" in fail(alice.path, "history", "--limit", "0")
    assert len(ok(alice.path, "history").splitlines()) == 7


def test_witness_makes_payments_final(tmp_path: Path) -> None:
    wkey = SigningKey.generate()
    keyfiles.save_key(tmp_path / "witness.key", wkey, PASSPHRASE, kind="witness",
                      limits=keyfiles.FAST_INSECURE)
    issuer = tmp_path / "issuer"
    doc = tj(issuer, "network", "create", "Town", "--currency", "EUR",
             "--witness", key_text(bytes(wkey.verify_key)))
    assert doc["quorum"] == 1
    genesis = Path(doc["genesis_file"])
    hub = tmp_path / "hub"
    tj(hub, "network", "join", genesis)
    alice, bob = api_wallets(genesis, tmp_path / "alice", tmp_path / "bob")
    n = iter(range(1000))

    def bundle() -> Path:
        return tmp_path / f"b{next(n)}.bundle"

    def witness_round(*homes: Path) -> None:
        """Carry each home to the hub, let the witness vote there, carry the hub back."""
        for h in homes:
            tj(h, "bundle", "export", f := bundle())
            p = run(hub, "bundle", "import", f)
            assert p.returncode == 0 or "replayed" in p.stderr, p.stderr
        w = Wallet.open(hub)
        try:
            key = keyfiles.load_key(tmp_path / "witness.key", PASSPHRASE, kind="witness")
            claims = SqliteClaims(hub / "claims.db")
            votes = Witness(key, claims).vote(w.ledger)
            claims.close()
            assert votes
            w.ingest(votes)
        finally:
            w.close()
        tj(hub, "bundle", "export", f := bundle())
        for h in homes:
            tj(h, "bundle", "import", f)

    issued = tj(issuer, "issue", "--yes", alice.address, "100")
    assert (issued["status"], issued["final"]) == ("valid", False)
    carry(issuer, alice.path, bundle(), for_address=alice.address)
    (got,) = tj(alice.path, "receive")["received"]
    assert got["status"] == "valid"
    bal = tj(alice.path, "balance")
    assert (bal["spendable_minor"], bal["incoming_minor"]) == (0, 10000)  # incoming until final
    msg = fail(alice.path, "pay", "--yes", bob.address, "1")
    assert "spendable 0.00, need 1.00" in msg and "100.00 more is incoming" in msg

    witness_round(issuer, alice.path)
    assert {r["status"] for r in _history(alice.path)} == {"final"}
    assert {r["status"] for r in _history(issuer)} == {"final"}
    bal = tj(alice.path, "balance")
    assert (bal["spendable_minor"], bal["incoming_minor"]) == (10000, 0)

    paid = tj(alice.path, "pay", "--yes", bob.address, "12.50")
    assert (paid["status"], paid["final"]) == ("valid", False)
    # --status final leaves out the send that is valid but not final yet; valid (the
    # state) includes both.
    assert paid["id"] not in [r["id"] for r in _history(alice.path, "--status", "final")]
    assert paid["id"] in [r["id"] for r in _history(alice.path, "--status", "valid")]

    witness_round(alice.path, bob.path)
    hist = _history(alice.path)
    assert [r["status"] for r in hist if r["id"] == paid["id"]] == ["final"]
    (got,) = tj(bob.path, "receive")["received"]
    assert got["claims"] == paid["id"]
    bal = tj(bob.path, "balance")
    assert (bal["spendable_minor"], bal["incoming_minor"]) == (1250, 0)  # the send is final
    assert [r["status"] for r in _history(bob.path)] == ["valid", "final"]
    witness_round(bob.path)
    assert [r["status"] for r in _history(bob.path)] == ["final", "final"]
    assert tj(alice.path, "balance")["spendable_minor"] == 10000 - 1250


def test_concurrent_commands_on_one_home_never_fork(net: Net, tmp_path: Path) -> None:
    """Commands started together on one home take turns: each pay gets its own slot,
    each payment is claimed once, and the stored state is the whole set's."""
    alice, bob = api_wallets(net.genesis, tmp_path / "alice", tmp_path / "bob")
    api_fund(net.issuer, alice, 1000)
    amounts = [1, 2, 3, 4, 5, 6]
    procs = run_many([(alice.path, "pay", "--yes", bob.address, f"0.0{a}", "--json")
                      for a in amounts])
    for p in procs:
        check_ok(p)
    docs = [one_json(p.stdout) for p in procs]
    assert sorted(d["seq"] for d in docs) == [2, 3, 4, 5, 6, 7]
    assert {d["status"] for d in docs} == {ACC}
    assert tj(alice.path, "frauds") == {"frauds": []}
    assert {r["status"] for r in _history(alice.path)} == {ACC}
    assert tj(alice.path, "balance")["spendable_minor"] == 1000 - sum(amounts)

    carry(alice.path, bob.path, tmp_path / "pay.bundle")
    procs = run_many([(bob.path, "receive", "--json")] * 3)
    for p in procs:
        check_ok(p)
    got = [r for p in procs for r in one_json(p.stdout)["received"]]
    assert sorted(r["amount_minor"] for r in got) == amounts  # each claimed exactly once
    assert {r["status"] for r in _history(bob.path)} == {ACC}
    assert tj(bob.path, "balance")["spendable_minor"] == sum(amounts)


# ------------------------------------------------------------------ devices
def _pair(holder: Home, genesis: Path, home: Path, label: str) -> Home:
    """Pair a new device at ``home`` with the holder's account; bring it its open."""
    tj(home, "network", "join", genesis)
    req = tj(home, "devices", "pair", holder.address, "--label", label)
    assert "waits for its open" in fail(home, "address")
    assert "no open yet" in fail(home, "pay", "--yes", holder.address, "1")
    added = tj(holder.path, "devices", "add", req["request"])
    assert (added["device"], added["label"]) == (req["device"], label)
    carry(holder.path, home, home.parent / f"{label}-open.bundle")
    addr = tj(home, "address")
    assert addr["device"] == req["device"]
    assert parse_address(addr["address"]).account == parse_address(holder.address).account
    return Home(home, addr["address"])


def test_devices_pair_move_and_revoke(net: Net, tmp_path: Path) -> None:
    (alice,) = api_wallets(net.genesis, tmp_path / "alice")
    api_fund(net.issuer, alice, 10000)
    account = parse_address(alice.address).account
    other = make_pairing_request(bytes(32), account, SigningKey.generate(), "x").to_text()
    assert "network" in fail(alice.path, "devices", "add", other)
    tab = _pair(alice, net.genesis, tmp_path / "tab", "tablet")
    devs = tj(alice.path, "devices", "list")["devices"]
    assert sorted((d["label"], d["this"]) for d in devs) == [("main", True), ("tablet", False)]

    # Move escrow to the tablet; it receives and can pay; and back again.
    assert tj(alice.path, "move", "20", "--to", "tablet")["status"] == ACC
    carry(alice.path, tab.path, tmp_path / "m1.bundle")
    (got,) = tj(tab.path, "receive")["received"]
    assert got["amount_minor"] == 2000
    bal = tj(tab.path, "balance")
    assert bal["spendable_minor"] == 10000  # the account, as the tablet knows it
    assert {d["label"]: d["spendable_minor"] for d in bal["devices"]} == {"main": 8000,
                                                                    "tablet": 2000}
    tj(tab.path, "pay", "--yes", _somebody(net), "3")
    tj(tab.path, "move", "5", "--to", "main")
    carry(tab.path, alice.path, tmp_path / "m2.bundle")
    (got,) = tj(alice.path, "receive")["received"]
    assert got["amount_minor"] == 500
    bal = tj(alice.path, "balance")
    assert {d["label"]: d["spendable_minor"] for d in bal["devices"]} == {"main": 8500,
                                                                    "tablet": 1200}
    mine = {r["device"] for r in _history(alice.path, "--device", "main")}
    every = {r["device"] for r in _history(alice.path)}
    assert every == {r["device"] for r in _history(alice.path, "--all")}
    assert mine == {key_text(parse_address(alice.address).device)}
    assert every == mine | {key_text(parse_address(tab.address).device)}

    # The tablet holds no account key: it cannot revoke its siblings.
    assert "no account key" in fail(tab.path, "devices", "revoke", "main")
    assert "sibling, not to itself" in fail(alice.path, "devices", "revoke", "main")
    assert "no device of this account matches" in fail(alice.path, "devices", "revoke", "zz")

    rv = tj(alice.path, "devices", "revoke", "tablet")
    assert rv["device"] == key_text(parse_address(tab.address).device)
    assert rv["to"] == key_text(parse_address(alice.address).device)
    assert rv["status"] == ACC
    (got,) = tj(alice.path, "receive")["received"]
    assert got["claims"] == rv["id"]
    bal = tj(alice.path, "balance")
    assert {d["label"]: d["spendable_minor"] for d in bal["devices"]} == {"main": 9700, "tablet": 0}
    assert bal["spendable_minor"] == 10000 - 300  # only what went to somebody else left
    assert "already revoked" in fail(alice.path, "devices", "revoke", "tablet")

    carry(alice.path, tab.path, tmp_path / "m3.bundle")
    assert "revoked" in fail(tab.path, "pay", "--yes", _somebody(net), "0.01")


def test_revoke_passes_payments_the_device_never_claimed(net: Net, tmp_path: Path) -> None:
    """DESIGN §4: the sibling may claim what was sent to the revoked device and not claimed."""
    (alice,) = api_wallets(net.genesis, tmp_path / "alice")
    api_fund(net.issuer, alice, 5000)
    _pair(alice, net.genesis, tmp_path / "tab", "lost")
    moved = tj(alice.path, "move", "20", "--to", "lost")
    # The tablet is lost before it ever received the move.
    rv = tj(alice.path, "devices", "revoke", "lost")
    got = tj(alice.path, "receive")["received"]
    assert sorted(r["claims"] for r in got) == sorted([rv["id"], moved["id"]])
    assert {r["status"] for r in got} == {ACC}
    assert tj(alice.path, "balance")["spendable_minor"] == 5000
    assert tj(alice.path, "receive") == {"received": [], "refused": []}


def test_restore_makes_a_new_device(net: Net, tmp_path: Path) -> None:
    (dave,) = api_wallets(net.genesis, tmp_path / "dave")
    api_fund(net.issuer, dave, 3000)
    old = parse_address(dave.address)

    homes = [tmp_path / f"r{i}" for i in range(3)]
    for p in run_many([(h, "network", "join", net.genesis) for h in homes]):
        check_ok(p)
    r0 = tj(homes[0], "restore", env=tally_env(TALLY_PHRASE=dave.phrase))
    new = parse_address(r0["address"])
    assert new.account == old.account and new.device != old.device
    assert key_record(homes[0], "account")[1] == old.account
    assert key_record(homes[0], "device")[1] == new.device
    # From stdin when TALLY_PHRASE is unset: yet another new device.
    r1 = tj(homes[1], "restore", stdin=dave.phrase + "\n")
    assert parse_address(r1["address"]).device not in (old.device, new.device)
    # A phrase with one word swapped fails its checksum and makes no key.
    words = dave.phrase.split()
    words[0], words[1] = words[1], words[0]
    if words == dave.phrase.split():
        words[0] = "zoo" if words[0] != "zoo" else "abandon"
    msg = fail(homes[2], "restore", env=tally_env(TALLY_PHRASE=" ".join(words)))
    assert "checksum failed" in msg
    assert key_record(homes[2], "device") is None
    assert "run `tally init`" in fail(homes[2], "address")

    # The restored device gets the history back and revokes the device it cannot reach.
    carry(dave.path, homes[0], tmp_path / "hist.bundle")
    devs = tj(homes[0], "devices", "list")["devices"]
    assert sorted(d["device"] for d in devs) == sorted([key_text(old.device),
                                                        key_text(new.device)])
    tj(homes[0], "devices", "revoke", key_text(old.device)[:12])
    tj(homes[0], "receive")
    bal = tj(homes[0], "balance")
    assert {d["device"]: d["spendable_minor"] for d in bal["devices"]} == {
        key_text(old.device): 0, key_text(new.device): 3000}


def test_cloned_device_fork_is_a_fraud_proof(net: Net, tmp_path: Path) -> None:
    (alice,) = api_wallets(net.genesis, tmp_path / "alice")
    api_fund(net.issuer, alice, 1000)
    clone = tmp_path / "clone"
    shutil.copytree(alice.path, clone)  # a cloned disk: the same device key twice
    payee = _somebody(net)
    one = tj(alice.path, "pay", "--yes", payee, "1")
    two = tj(clone, "pay", "--yes", payee, "2")
    assert one["seq"] == two["seq"] == 2 and one["id"] != two["id"]
    assert one["status"] == two["status"] == ACC  # each copy alone sees no fork

    carol = tmp_path / "carol"
    tj(carol, "network", "join", net.genesis)
    assert tj(carol, "frauds") == {"frauds": []}
    assert ok(carol, "frauds").strip() == "no fraud proofs"
    tj(alice.path, "bundle", "export", f1 := tmp_path / "one.bundle")
    tj(clone, "bundle", "export", f2 := tmp_path / "two.bundle")
    tj(carol, "bundle", "import", f1)
    assert tj(carol, "frauds") == {"frauds": []}
    tj(carol, "bundle", "import", f2)
    (proof,) = tj(carol, "frauds")["frauds"]
    device = key_text(parse_address(alice.address).device)
    assert sorted(proof.pop("blocks")) == sorted([one["id"], two["id"]])
    assert proof == {"device": device, "seq": 2, "equivocation": False}
    assert ok(carol, "frauds").startswith(f"fork: device {device[:8]}")

    # The original sees it too once it gets the clone's side: its send is disputed,
    # and it signs nothing more on a disputed chain.
    tj(alice.path, "bundle", "import", f2)
    (seen,) = tj(alice.path, "frauds")["frauds"]
    assert sorted(seen.pop("blocks")) == sorted([one["id"], two["id"]]) and seen == proof
    both = sorted([one["id"], two["id"]])
    assert sorted(r["id"] for r in _history(alice.path, "--status", "disputed")) == both
    assert sorted(r["id"] for r in _history(alice.path, "--status", "conflicted")) == both
    assert [r["kind"] for r in _history(alice.path, "--status", "accepted")] == ["receive",
                                                                                  "open"]
    before = store_snapshot(alice.path)
    assert "forked at seq 2" in fail(alice.path, "pay", "--yes", payee, "1")
    assert store_snapshot(alice.path) == before


# ------------------------------------------------------------------ every command
def _leaf_commands() -> set[str]:
    out: set[str] = set()

    def walk(p: argparse.ArgumentParser, prefix: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())
                if not action.required and prefix:  # `tally takings` runs alone too
                    out.add(prefix)
                return
        out.add(prefix)

    walk(build_parser(), "")
    return out | {""}  # `tally` alone: the app


def a_bundle(home: Path, *, b_addr: str, path: Path) -> Path:
    """A bundle of what ``home`` has for the payee at ``b_addr``."""
    tj(home, "bundle", "export", path, "--for", b_addr)
    return path


def test_json_on_every_command(tmp_path: Path) -> None:
    """Every command with --json prints exactly one JSON document and nothing else."""
    seen: set[str] = set()

    def j(home: Path | None, name: str, *args: object, **kw: object) -> dict:
        seen.add(name)
        doc = tj(home, *name.split(), *args, **kw)
        assert isinstance(doc, dict) and doc
        return doc

    iss, a, b, t, r = (tmp_path / n for n in ("iss", "a", "b", "t", "r"))
    g = Path(j(iss, "network create", "Json", "--currency", "EUR")["genesis_file"])
    j(iss, "network show")
    for h in (a, b, t, r):
        j(h, "network join", g)
    alice = j(a, "init")
    bob_addr = j(b, "init")["address"]
    j(a, "address")
    uri = j(b, "request", "1.50")["request"]
    j(iss, "issue", "--yes", alice["address"], "10")
    j(iss, "bundle export", tmp_path / "1.bundle")
    j(a, "bundle import", tmp_path / "1.bundle")
    j(a, "receive")
    j(a, "pay", "--yes", uri)
    j(a, "pay", "--yes", bob_addr, "1")
    j(a, "balance")
    j(a, "history")
    j(a, "frauds")
    j(b, "bundle import", a_bundle(a, b_addr=bob_addr, path=tmp_path / "2.bundle"))
    assert [k["amount_minor"] for k in j(b, "takings")["takings"]] == [150, 100]
    assert j(b, "till limits", "--payment", "5")["limits"]["payment_minor"] == 500
    z = j(b, "takings close")
    assert (z["z"], z["totals"]["provisional"], z["net"]) == (1, 250, 250)
    seen |= {"takings write-off", "sweep", "refund"}  # tills' commands: test_takings.py
    doc = j(a, "doctor")
    assert doc["ok"] and doc["differences"] == 0 and doc["entries"] > 0
    j(a, "relays add", "ws://127.0.0.1:9")
    assert j(a, "relays list")["links"] == [{"url": "ws://127.0.0.1:9", "kind": "relay"}]
    j(a, "relays remove", "ws://127.0.0.1:9")
    req = j(t, "devices pair", alice["address"])["request"]
    j(a, "devices add", req)
    j(a, "devices list")
    j(a, "move", "1", "--to", "device")
    j(a, "devices revoke", "device")
    j(r, "restore", env=tally_env(TALLY_PHRASE=alice["phrase"]))
    demo = j(None, "demo", "--dir", tmp_path / "demo")
    assert demo["payment_status"] == "final"
    # --json may come before the command too; TALLY_HOME stands for --home.
    doc = one_json(ok(None, "--json", "balance", env=tally_env(TALLY_HOME=str(a))))
    assert doc["spendable_minor"] == 1000 - 150 - 100 - 100
    # the app itself (no command) has no --json, and wants a terminal: errors that say so.
    p = run(a, "--json")
    assert "the app has no --json" in check_failed(p, as_json=True)
    assert "the app needs a terminal" in check_failed(run(a))
    seen.add("")
    seen |= {"sync", "serve"}  # need a peer: their --json is checked in test_sync_client.py
    seen.add("web")  # a server that runs until stopped: checked in test_app.py
    assert seen == _leaf_commands()


def test_errors_exit_nonzero_with_a_message(net: Net, tmp_path: Path) -> None:
    (w,) = api_wallets(net.genesis, tmp_path / "w")
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "wallet.db").write_bytes(b"this is not a database" * 100)
    before = store_snapshot(w.path)
    cases = [
        ((empty, "balance"), "no wallet in"),
        ((empty, "history"), "no wallet in"),
        ((broken, "balance"), "unusable"),
        ((w.path, "pay", "--yes", "garbage", "1"), "neither an address"),
        ((w.path, "pay", "--yes", "tally:garbage"), "does not start with tly2"),
        ((w.path, "bundle", "import", tmp_path / "missing.bundle"), "cannot read bundle"),
        ((w.path, "bundle", "import", tmp_path), "cannot read bundle"),
        ((w.path, "bundle", "export", tmp_path / "no" / "dir.bundle"), "cannot write bundle"),
        ((w.path, "bundle", "export", "x.bundle", "--for", "tly1zz"), "address"),
        ((w.path, "move", "1", "--to", "nobody"), "no device of this account matches"),
        ((w.path, "devices", "add", "tally-pair:junk"), "pairing"),
        ((w.path, "devices", "pair", w.address), "already has a device"),
        ((w.path, "restore"), "phrase"),
        ((tmp_path / "n", "network", "create", "N", "--currency", "EUR", "--out",
          tmp_path / "no" / "g.genesis"), "not a directory"),
    ]
    # Every case with --json (one JSON document on stdout, the line on stderr); a few
    # without (nothing on stdout).
    plain = cases[:4]
    procs = run_many([(*c, "--json") for c, _ in cases] + [c for c, _ in plain])
    for (c, want), p in zip(cases + plain, procs, strict=True):
        msg = check_failed(p, as_json="--json" in p.args)
        assert want in msg, (c, msg)
    assert not (tmp_path / "n").exists()
    # No passphrase to be had (no variable, stdin not a terminal).
    msg = fail(w.path, "pay", "--yes", _somebody(net), "1", env=tally_env(TALLY_PASSPHRASE=None))
    assert "no passphrase" in msg and "TALLY_PASSPHRASE" in msg
    assert store_snapshot(w.path) == before

    # A malformed command line: argparse's usage message and exit status 2.
    for args_ in [("history", "--status", "bogus"), ("pay",), ("frobnicate",)]:
        p = run(w.path, *args_)
        assert p.returncode == 2 and "error:" in p.stderr and "usage:" in p.stderr
        assert "Traceback" not in p.stderr


def test_demo_reports_final_statuses(tmp_path: Path) -> None:
    doc = tj(None, "demo")
    assert doc == {"alice_spendable": 8750, "bob_spendable": 1250,
                   "issue_status": "final", "payment_status": "final"}
    text = ok(None, "demo", "--dir", tmp_path / "d")
    assert "every payment is final" in text
    assert (tmp_path / "d" / "alice" / "wallet.db").exists()
