"""Issue 12, items 1-5: no payment goes astray. Each finding is made again the way it was
first made, with real ``tally`` processes (and a real ``tally-relay``), and shows the new
behaviour: refused with its reason and nothing stored changed, or the right figures.

Set-up that is not the subject (joining, funding) goes through the Wallet API the
command line uses (``tests.clikit.api_wallets``, ``api_fund``): much cheaper.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sync.errors import CloseCode
from sync.port import MemoryPort
from tests.clikit import (
    PASSPHRASE,
    Home,
    api_fund,
    api_wallets,
    carry,
    check_failed,
    check_ok,
    fail,
    ok,
    one_json,
    run,
    run_many,
    store_snapshot,
    tally_env,
    tj,
)
from tests.test_relay import Client, relay_command, relay_env, start_relay, stored_count
from tests.test_relay_hostile import addressed, send_raw, update_of
from wallet.address import PaymentRequest, parse_address
from wallet.bundle import write_bundle
from wallet.encoding import (
    OPEN_UNSIGNED,
    Block,
    Kind,
    id_from_text,
    key_text,
    parse_genesis,
    short,
)
from wallet.ledger import ACCEPTED_WORD, Ledger
from wallet.pairing import parse_pairing_request
from wallet.wallet import Wallet

ACC = ACCEPTED_WORD  # what a valid block reads on a network with no witnesses

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Network:
    """A q = 0 network made with ``tally network create``: issuer home, genesis, names."""

    issuer: Path
    genesis: Path
    name: str
    id: str  # as `tally network show` prints it
    address: str  # the issuing device's

    @property
    def short(self) -> str:
        """The network id's start, as errors print it (the check an address carries)."""
        return self.id[:8]


@dataclass(frozen=True)
class Nets:
    a: Network
    b: Network


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Nets:
    d = tmp_path_factory.mktemp("nets")
    made = []
    procs = run_many([(d / f"issuer-{n}", "network", "create", f"Net {n.upper()}", "--currency",
                       "EUR", "--out", d / f"{n}.genesis", "--json") for n in ("a", "b")])
    for n, p in zip(("a", "b"), procs, strict=True):
        check_ok(p)
        doc = one_json(p.stdout)
        assert doc["quorum"] == 0 and doc["witnesses"] == []
        made.append(Network(d / f"issuer-{n}", d / f"{n}.genesis", f"Net {n.upper()}",
                            doc["network"], doc["address"]))
    a, b = made
    assert a.id != b.id and a.short != b.short
    # `network show` starts with the name and the id, which errors name by its start.
    assert ok(a.issuer, "network", "show").splitlines()[0].split() == ["Net", "A", a.id]
    return Nets(a, b)


def _history(home: Path, *args: object) -> list[dict]:
    return tj(home, "history", "--limit", "1000", *args)["history"]


def _minor(bal: dict) -> dict[str, int]:
    """The account's figures of ``balance --json``, in minor units."""
    return {k: bal[f"{k}_minor"] for k in ("spendable", "incoming", "moving", "to_claim",
                                            "total")}


def _by_label(bal: dict) -> dict[str, tuple[int, int, int, int]]:
    """Each device's (spendable, incoming, moving, to_claim) in ``balance --json``."""
    return {d["label"]: (d["spendable_minor"], d["incoming_minor"], d["moving_minor"],
                         d["to_claim_minor"]) for d in bal["devices"]}


# ------------------------------------------------------------------ 1. across networks
def test_1_paying_across_networks_is_refused_naming_both(nets: Nets, tmp_path: Path) -> None:
    a, b = nets.a, nets.b
    (alice,) = api_wallets(a.genesis, tmp_path / "alice")
    (bob,) = api_wallets(b.genesis, tmp_path / "bob")
    api_fund(a.issuer, alice, 10000)
    assert parse_address(bob.address).network_text() == b.short  # B's check, in the address
    before = store_snapshot(alice.path), store_snapshot(a.issuer)

    # The finding: an address made on network B, paid from a wallet of network A.
    msg = fail(alice.path, "pay", bob.address, "1.00", "--yes")
    assert msg == (f"that address is of another network ({b.short}…); this wallet is on "
                   f"{a.name} ({a.short}…): money sent there could never be claimed. Ask for "
                   "an address made on this network")
    p = run(alice.path, "pay", bob.address, "1.00", "--yes", "--json")
    assert check_failed(p, as_json=True) == msg
    assert fail(a.issuer, "issue", "--yes", bob.address, "1.00") == msg
    # A request of network B: refused likewise.
    uri = tj(bob.path, "request", "2.00", "--memo", "x")["request"]
    assert fail(alice.path, "pay", "--yes", uri) == (
        f"that payment request is for another network ({b.short}…); this wallet is on "
        f"{a.name} ({a.short}…)")
    # A cut address and an old-format one say so, not "not base32".
    cut = fail(alice.path, "pay", "--yes", bob.address[:60], "1.00")
    assert cut == "address: cut short: 60 of 123 characters; copy all of it"
    old = "tly1" + bob.address[4:]
    assert fail(alice.path, "pay", "--yes", old, "1.00") == (
        f"address: {old[:12]!r}… is an old-format address that does not name its network; "
        "ask the payee for a new one (`tally address`)")
    assert (store_snapshot(alice.path), store_snapshot(a.issuer)) == before

    # A device of network A whose open this replica lacks: without --yes (stdin is not a
    # terminal) refused, saying it cannot know the device yet; with --yes, signed.
    (carol,) = api_wallets(a.genesis, tmp_path / "carol")
    device = parse_address(carol.address).device
    why = (f"device {short(device)}… has no open in this wallet yet, so it cannot know the "
           "device (sync with its relay first, and it will); pass --yes to go on anyway")
    assert fail(alice.path, "pay", carol.address, "1.00") == why
    assert check_failed(run(alice.path, "pay", carol.address, "1.00", "--json"),
                        as_json=True) == why
    assert store_snapshot(alice.path) == before[0]
    paid = tj(alice.path, "pay", carol.address, "1.00", "--yes")
    assert (paid["to"], paid["to_device"], paid["amount_minor"], paid["status"]) == (
        carol.address, key_text(device), 100, ACC)
    assert store_snapshot(alice.path)["entries"] == before[0]["entries"] + 1
    # A device this replica knows (the issuer's open came with the funds): no question.
    known = tj(alice.path, "pay", a.address, "0.50")
    assert (known["to"], known["amount_minor"], known["seq"]) == (a.address, 50, 3)
    assert tj(alice.path, "balance")["spendable_minor"] == 10000 - 150


# ------------------------------------------------------------------ 2. pairing
def test_2_pairing_refuses_each_request_it_must_with_its_reason(nets: Nets,
                                                                tmp_path: Path) -> None:
    a, b = nets.a, nets.b
    alice, mallory = api_wallets(a.genesis, tmp_path / "alice", tmp_path / "mallory")
    alice_account = parse_address(alice.address).account
    laptop = tmp_path / "laptop"
    stranger = tmp_path / "stranger"
    elsewhere = tmp_path / "elsewhere"
    for p in run_many([(laptop, "network", "join", a.genesis),
                       (stranger, "network", "join", a.genesis),
                       (elsewhere, "network", "join", b.genesis)]):
        check_ok(p)

    # A lost request is printed again: the same request, the same device.
    first = tj(laptop, "devices", "pair", alice.address, "--label", "laptop")
    text = ok(laptop, "devices", "pair", alice.address, "--label", "laptop")
    assert text.splitlines()[0] == first["request"]
    assert f"check that it shows device {first['device'][:8]}…; lost it? run this again" in text
    again = tj(laptop, "devices", "pair", alice.address, "--label", "laptop")
    assert again == first == {"request": first["request"], "device": first["device"],
                              "account": key_text(alice_account)}
    req = parse_pairing_request(first["request"], id_from_text(a.id))
    assert (req.account, key_text(req.device), req.label) == (alice_account, first["device"],
                                                            "laptop")
    # … and a device asks to join one account only, of its own network.
    assert "already asked to join account" in fail(laptop, "devices", "pair", mallory.address)
    assert fail(laptop, "devices", "pair", b.address) == (
        f"that address is of network {b.short}…, this wallet is on {a.name} ({a.short}…): "
        "ask for an address made on this network")
    assert tj(laptop, "devices", "pair", alice.address) == first

    # Requests alice must refuse, stored nothing changed: one made for mallory's account,
    # one of network B.
    for_mallory = tj(stranger, "devices", "pair", mallory.address)["request"]
    of_b = tj(elsewhere, "devices", "pair", b.address)["request"]
    before = store_snapshot(alice.path)
    mallory_account = parse_address(mallory.address).account
    assert fail(alice.path, "devices", "add", for_mallory) == (
        f"this pairing request asks to join account {short(mallory_account)}…, not this "
        f"wallet's account {short(alice_account)}…: it was made for someone else")
    assert fail(alice.path, "devices", "add", of_b) == (
        f"pairing request: made for another network ({b.short}…); this wallet is on "
        f"{a.short}…")
    assert store_snapshot(alice.path) == before

    # Added once; the same request again: already added, nothing changes.
    added = tj(alice.path, "devices", "add", first["request"])
    assert (added["device"], added["label"]) == (first["device"], "laptop")
    once = store_snapshot(alice.path)
    assert once["entries"] == before["entries"] + 1
    msg = fail(alice.path, "devices", "add", first["request"])
    assert msg.startswith("this pairing request was already added on ")
    assert msg.endswith(f": device {first['device'][:8]}… is open; nothing to do")
    assert store_snapshot(alice.path) == once

    # Another holder of the same account (restored from the phrase) that holds the
    # laptop's open: already open. Once it holds the revoke too: revoked, for good.
    holder2 = tmp_path / "holder2"
    tj(holder2, "network", "join", a.genesis)
    tj(holder2, "restore", env=tally_env(TALLY_PHRASE=alice.phrase))
    carry(alice.path, laptop, tmp_path / "open.bundle")
    assert tj(laptop, "address")["device"] == first["device"]
    carry(alice.path, holder2, tmp_path / "h1.bundle")
    snap = store_snapshot(holder2)
    assert fail(holder2, "devices", "add", first["request"]) == (
        f"device {first['device'][:8]}… is already open")
    assert store_snapshot(holder2) == snap
    rv = tj(alice.path, "devices", "revoke", "laptop")
    assert (rv["device"], rv["status"]) == (first["device"], ACC)
    carry(alice.path, holder2, tmp_path / "h2.bundle")
    snap = store_snapshot(holder2)
    assert fail(holder2, "devices", "add", first["request"]) == (
        f"device {first['device'][:8]}… was revoked; a revoked device never comes back: pair "
        "the new install afresh (`tally devices pair` on an empty --home)")
    assert store_snapshot(holder2) == snap


def _forged_opens(mallory: Path, victim_request: str, network: bytes) -> list[bytes]:
    """Opens of the victim's device under mallory's account, signed by mallory's account
    key: with no device signature, and with the victim's own one (made for alice)."""
    w = Wallet.open(mallory)
    try:
        key = w.load_key("account", PASSPHRASE)
    finally:
        w.close()
    req = parse_pairing_request(victim_request, network)
    out = []
    for device_sig in (bytes(64), req.signature):
        body = Block(Kind.OPEN, network, req.device, 0, account=bytes(key.verify_key),
                     label=req.label, device_sig=device_sig).body()
        out.append(body + key.sign(body).signature)
    return out


def test_2_an_open_without_the_device_signature_is_refused_by_tally_and_the_relay(
        nets: Nets, tmp_path: Path) -> None:
    """A stranger cannot open someone's device key under its own account (nor block a
    device that has not been opened yet): the open lacks the device's signature."""
    a = nets.a
    alice, mallory = api_wallets(a.genesis, tmp_path / "alice", tmp_path / "mallory")
    victim = tmp_path / "victim"
    tj(victim, "network", "join", a.genesis)
    request = tj(victim, "devices", "pair", alice.address, "--label", "phone")["request"]
    network = id_from_text(a.id)
    forged = _forged_opens(mallory.path, request, network)

    want = f"{OPEN_UNSIGNED}: the open of device "
    for i, raw in enumerate(forged):
        f = tmp_path / f"forged{i}.bundle"
        write_bundle(f, network, [raw])
        for home in (alice.path, victim):
            before = store_snapshot(home)
            msg = fail(home, "bundle", "import", f)
            assert msg.startswith(f"entry #0: {want}") and "lacks the device's own signature" \
                in msg, msg
            assert store_snapshot(home) == before

    # A real tally-relay refuses it too, and stores nothing of it.
    relay = start_relay(tmp_path, "--network", a.genesis)
    try:
        w = Wallet.open(mallory.path)
        try:
            key = w.load_key("device", PASSPHRASE)
            own_open = w.ledger.blocks[w.ledger.chain(w.device or b"")[0]]
        finally:
            w.close()

        async def attack(raw: bytes) -> tuple[int, str, int, int]:
            led = Ledger(parse_genesis(a.genesis.read_bytes()))
            led.add([own_open])
            bad = Client(MemoryPort(led), key, open_entry=own_open.raw)
            await bad.connect(relay.url)
            await bad.wait(lambda: bad.in_sync, what="mallory's catch-up")
            count = stored_count(relay.db)
            closed = await send_raw(bad, update_of(addressed(raw)))
            await bad.close()
            return closed.code, closed.reason, count, stored_count(relay.db)

        for raw in forged:
            code, reason, before, after = asyncio.run(attack(raw))
            assert code == CloseCode.REFUSED and want in reason, reason
            assert after == before
        # The device was not blocked: alice adds it, its real open reaches the relay, and
        # the device gets it from there.
        tj(alice.path, "devices", "add", request)
        tj(alice.path, "sync", "--relay", relay.url, "--once")
        tj(victim, "sync", "--relay", relay.url, "--once")
        assert parse_address(tj(victim, "address")["address"]).account == \
            parse_address(alice.address).account
    finally:
        assert relay.stop() == 0


# ------------------------------------------------------------------ 3. q = 0: never final
_NOT_FINAL_PHRASES = ("(not final yet)", "nothing here is ever final")


def _says_final(text: str) -> bool:
    """True when text for people calls something final (leaving out the phrases that
    say it is not)."""
    for phrase in _NOT_FINAL_PHRASES:
        text = text.replace(phrase, "")
    return re.search(r"\bfinal\b", text) is not None


def test_3_nothing_is_final_on_a_network_with_no_witnesses(nets: Nets, tmp_path: Path) -> None:
    a = nets.a
    alice, bob = api_wallets(a.genesis, tmp_path / "alice", tmp_path / "bob")
    api_fund(a.issuer, alice, 5000)
    paid = tj(alice.path, "pay", "--yes", bob.address, "12.50")
    assert (paid["status"], paid["state"], paid["final"]) == (ACC, "valid", False)
    text = ok(alice.path, "pay", "--yes", bob.address, "2.50")
    assert text.startswith("paid 2.50 EUR to ") and f": {ACC} (id " in text
    carry(alice.path, bob.path, tmp_path / "pay.bundle", for_address=bob.address)
    got = tj(bob.path, "receive")["received"]
    assert sorted((r["amount_minor"], r["status"], r["final"], r["payment_status"])
                  for r in got) == [(250, ACC, False, ACC), (1250, ACC, False, ACC)]
    texts = [text]
    for home in (alice.path, bob.path):
        rows = _history(home)
        assert {(r["status"], r["final"]) for r in rows} == {(ACC, False)}
        assert _history(home, "--status", "final") == []
        assert [r["id"] for r in _history(home, "--status", "accepted")] == [r["id"]
                                                                           for r in rows]
        bal = tj(home, "balance")
        assert bal["witnessed"] is False
        texts += [ok(home, "history"), ok(home, "balance")]
        assert "this network has no witnesses: nothing here is ever final" in texts[-1]
        assert ok(home, "history", "--status", "final").strip() == "no blocks"
    assert [r["kind"] for r in _history(bob.path)] == ["receive", "receive", "open"]
    assert tj(bob.path, "balance")["spendable_minor"] == 1500
    hist = ok(bob.path, "history")
    assert hist.count(ACC) == 3
    for t in texts:
        assert not _says_final(t), t
    # (the check itself can fail)
    assert _says_final("received 1.00 EUR: final") and not _says_final(
        "incoming 0.00 EUR (not final yet)")


def test_3_with_a_witness_the_same_payment_turns_final(tmp_path: Path) -> None:
    """The same payment on a network with a witness (a real tally-relay voting):
    valid, not final, until the votes; then final in history, JSON and balance."""
    key_file = tmp_path / "witness.key"
    made = subprocess.run(relay_command("keygen", key_file, "--kind", "witness"),
                          env=relay_env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert made.returncode == 0, made.stderr
    witness = made.stdout.strip()
    issuer = tmp_path / "issuer"
    doc = tj(issuer, "network", "create", "Town", "--currency", "EUR", "--witness", key_file)
    assert (doc["quorum"], doc["witnesses"]) == (1, [witness])
    genesis = Path(doc["genesis_file"])
    relay = start_relay(tmp_path, "--network", genesis, "--witness-key", key_file)
    try:
        assert relay.health()["witness_key"] == witness
        alice, bob = api_wallets(genesis, tmp_path / "alice", tmp_path / "bob")
        issued = tj(issuer, "issue", "--yes", alice.address, "20.00")
        assert (issued["status"], issued["final"]) == ("valid", False)
        tj(issuer, "sync", "--relay", relay.url, "--once")  # waits for the vote
        [row] = [r for r in _history(issuer) if r["id"] == issued["id"]]
        assert (row["status"], row["final"]) == ("final", True)
        tj(alice.path, "sync", "--relay", relay.url, "--once")  # claims it, waits for votes
        assert _minor(tj(alice.path, "balance"))["spendable"] == 2000

        paid = tj(alice.path, "pay", "--yes", bob.address, "12.50")
        assert (paid["status"], paid["state"], paid["final"]) == ("valid", "valid", False)
        assert paid["id"] not in [r["id"] for r in _history(alice.path, "--status", "final")]
        tj(alice.path, "sync", "--once")  # the relay it remembers; waits for the vote
        [row] = [r for r in _history(alice.path) if r["id"] == paid["id"]]
        assert (row["status"], row["final"]) == ("final", True)
        assert paid["id"] in [r["id"] for r in _history(alice.path, "--status", "final")]
        assert _history(alice.path, "--status", "accepted") == []

        synced = tj(bob.path, "sync", "--relay", relay.url, "--once")
        assert [(c["claims"], c["amount_minor"]) for c in synced["claimed"]] == [
            (paid["id"], 1250)]
        assert {(r["status"], r["final"]) for r in _history(bob.path)} == {("final", True)}
        bal = tj(bob.path, "balance")
        assert bal["witnessed"] is True
        assert (_minor(bal)["spendable"], _minor(bal)["incoming"]) == (1250, 0)
        assert "ever final" not in ok(bob.path, "balance")
    finally:
        assert relay.stop() == 0


# ------------------------------------------------------------------ 4. one request, once
def test_4_a_request_is_paid_once_unless_again_and_never_once_expired(nets: Nets,
                                                                      tmp_path: Path) -> None:
    a = nets.a
    alice, shop = api_wallets(a.genesis, tmp_path / "alice", tmp_path / "shop")
    api_fund(a.issuer, alice, 10000)
    t0 = int(time.time())
    req = tj(shop.path, "request", "2.00", "--memo", "x", "--expires", "10m")
    t1 = int(time.time())
    assert t0 + 600 <= req["expires"] <= t1 + 600
    first = tj(alice.path, "pay", "--yes", req["request"])
    assert (first["amount_minor"], first["request_id"], first["status"]) == (
        200, req["request_id"], ACC)

    before = store_snapshot(alice.path)
    msg = fail(alice.path, "pay", "--yes", req["request"])
    assert msg == (f"this request was paid already (1 time, payment {first['id']}): pass "
                   "--again to pay it once more")
    assert store_snapshot(alice.path) == before
    second = tj(alice.path, "pay", "--yes", req["request"], "--again")
    assert (second["amount_minor"], second["request_id"]) == (200, req["request_id"])
    assert second["id"] != first["id"]
    after = store_snapshot(alice.path)
    assert "paid already (2 times, payment " in fail(alice.path, "pay", "--yes", req["request"])
    assert store_snapshot(alice.path) == after
    # Another request of the same shop is another payment.
    other = tj(shop.path, "request", "2.00", "--memo", "x")["request"]
    assert tj(alice.path, "pay", "--yes", other)["amount_minor"] == 200
    assert tj(alice.path, "balance")["spendable_minor"] == 10000 - 600

    # An expired request is refused (--again or not), nothing signed.
    expires = int(time.time()) - 120
    old = PaymentRequest(id_from_text(a.id), parse_address(shop.address), 300, b"\x07",
                         expires, "late").uri()
    snap = store_snapshot(alice.path)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
    for extra in ((), ("--again",)):
        assert fail(alice.path, "pay", "--yes", old, *extra) == (
            f"the payment request expired on {when}: ask the payee for a new one")
    assert store_snapshot(alice.path) == snap

    # `request --expires` refuses a time that is not in the future.
    shop_snap = store_snapshot(shop.path)
    assert fail(shop.path, "request", "1", "--expires", "2020-01-01 10:00") == (
        "--expires 2020-01-01 10:00: that time is past (2020-01-01 10:00); give one in the "
        "future")
    assert fail(shop.path, "request", "1", "--expires", "0") == (
        "--expires 0: give a time in the future, like 30m")
    assert "give a duration (30m, 2h, 7d)" in fail(shop.path, "request", "1", "--expires",
                                                   "soon")
    assert store_snapshot(shop.path) == shop_snap
    # Durations and a local time give the right `expires`.
    durations = {"90s": 90, "30m": 1800, "2h": 7200, "7d": 604800, "45": 45}
    t0 = int(time.time())
    procs = run_many([(shop.path, "request", "1", "--expires", d, "--json") for d in durations])
    t1 = int(time.time())
    for (d, seconds), p in zip(durations.items(), procs, strict=True):
        check_ok(p)
        doc = one_json(p.stdout)
        assert t0 + seconds <= doc["expires"] <= t1 + seconds, d
        assert doc["expires_at"] == time.strftime("%Y-%m-%d %H:%M",
                                                  time.localtime(doc["expires"]))
        assert f"exp={doc['expires']}" in doc["request"]
    xmas = tj(shop.path, "request", "1", "--expires", "2099-12-24 18:00")
    assert xmas["expires"] == int(dt.datetime(2099, 12, 24, 18, 0).timestamp())
    assert xmas["expires_at"] == "2099-12-24 18:00"


# ------------------------------------------------------------------ 5. money in transit
def _pair(holder: Home, genesis: Path, home: Path, label: str) -> Home:
    """Pair a new device at ``home`` with the holder's account and bring it its open."""
    tj(home, "network", "join", genesis)
    req = tj(home, "devices", "pair", holder.address, "--label", label)
    tj(holder.path, "devices", "add", req["request"])
    carry(holder.path, home, home.parent / f"{label}-open.bundle")
    return Home(home, tj(home, "address")["address"])


def test_5_money_in_transit_stays_in_the_totals(nets: Nets, tmp_path: Path) -> None:
    a = nets.a
    (alice,) = api_wallets(a.genesis, tmp_path / "alice")
    api_fund(a.issuer, alice, 10000)
    laptop = _pair(alice, a.genesis, tmp_path / "laptop", "laptop")
    total = {"spendable": 10000, "incoming": 0, "moving": 0, "to_claim": 0, "total": 10000}
    assert _minor(tj(alice.path, "balance")) == total

    # The finding: move 41.00 to the laptop; the account showed 59.00 and 0 incoming.
    text = ok(alice.path, "move", "41.00", "--to", "laptop")
    assert text.splitlines()[1] == ("41.00 EUR waits to be claimed on laptop: `tally receive` "
                                    "or `tally sync` there claims it")
    bal = tj(alice.path, "balance")
    moving = {"spendable": 5900, "incoming": 0, "moving": 4100, "to_claim": 0, "total": 10000}
    assert _minor(bal) == moving
    assert _by_label(bal) == {"main": (5900, 0, 0, 0), "laptop": (0, 0, 4100, 0)}
    assert [(w["label"], w["amount_minor"], w["this"]) for w in bal["waiting"]] == [
        ("laptop", 4100, False)]
    shown = ok(alice.path, "balance")
    assert ("account: total 100.00 EUR = spendable 59.00 EUR + incoming 0.00 EUR (not final "
            "yet) + moving between its devices 41.00 EUR + to claim 0.00 EUR") in shown
    assert ("41.00 EUR waits to be claimed on laptop: `tally receive` or `tally sync` there "
            "claims it") in shown

    # Carried to the laptop: moving there too until it receives; then spendable there.
    carry(alice.path, laptop.path, tmp_path / "move.bundle")
    assert _minor(tj(laptop.path, "balance")) == moving
    (got,) = tj(laptop.path, "receive")["received"]
    assert got["amount_minor"] == 4100
    bal = tj(laptop.path, "balance")
    assert _minor(bal) == total
    assert _by_label(bal) == {"main": (5900, 0, 0, 0), "laptop": (4100, 0, 0, 0)}
    carry(laptop.path, alice.path, tmp_path / "back.bundle")
    assert _by_label(tj(alice.path, "balance")) == {"main": (5900, 0, 0, 0),
                                                   "laptop": (4100, 0, 0, 0)}

    # A second move the laptop never receives, then the laptop is revoked: its balance
    # and that move wait, on main (the sibling that claims them), in the total.
    tj(alice.path, "move", "5.00", "--to", "laptop")
    bal = tj(alice.path, "balance")
    assert _minor(bal) == {**total, "spendable": 9500, "moving": 500}
    assert _by_label(bal) == {"main": (5400, 0, 0, 0), "laptop": (4100, 0, 500, 0)}
    text = ok(alice.path, "devices", "revoke", "laptop")
    assert text.splitlines()[1] == ("46.00 EUR waits to be claimed here: `tally receive` or "
                                    "`tally sync` there claims it")
    bal = tj(alice.path, "balance")
    assert _minor(bal) == {**total, "spendable": 5400, "moving": 4600}
    assert _by_label(bal) == {"main": (5400, 0, 4600, 0), "laptop": (0, 0, 0, 0)}
    got = tj(alice.path, "receive")["received"]
    assert sorted((r["kind"], r["amount_minor"]) for r in got) == [("revoke", 4100),
                                                                   ("send", 500)]
    bal = tj(alice.path, "balance")
    assert _minor(bal) == total
    assert _by_label(bal) == {"main": (10000, 0, 0, 0), "laptop": (0, 0, 0, 0)}
    assert bal["waiting"] == []

    # A payment imported from a bundle waits to be claimed, and counts in the total.
    tj(a.issuer, "issue", "--yes", alice.address, "7.50")
    tj(a.issuer, "bundle", "export", f := tmp_path / "pay.bundle", "--for", alice.address)
    text = ok(alice.path, "bundle", "import", f)
    assert text.splitlines()[-1] == ("7.50 EUR waits to be claimed here: `tally receive` or "
                                     "`tally sync` there claims it")
    bal = tj(alice.path, "balance")
    assert _minor(bal) == {**total, "to_claim": 750, "total": 10750}
    assert _by_label(bal)["main"] == (10000, 0, 0, 750)
    assert "to claim 7.50 EUR" in ok(alice.path, "balance")
    (got,) = tj(alice.path, "receive")["received"]
    assert (got["kind"], got["amount_minor"]) == ("issue", 750)
    assert _minor(tj(alice.path, "balance")) == {**total, "spendable": 10750, "total": 10750}
