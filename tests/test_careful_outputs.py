"""Issue 12, items 6–10 and "smaller things": what a careful person reads, checked the way
the findings were made, through real ``tally`` and ``tally-relay`` processes.

Two module-wide networks: ``town`` has one witness whose key a real ``tally-relay
--witness-key`` holds (payments turn final there), with payers funded by issues the
witness made final; ``shop`` has no witness (q = 0), for what needs no votes. Set-up that
is not the subject of a test (funding, pairing) goes through the Wallet API in-process.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.clikit import (
    PASSPHRASE,
    Home,
    api_fund,
    api_wallets,
    carry,
    command,
    fail,
    ok,
    store_snapshot,
    tally_env,
    tj,
)
from tests.test_relay import Relay, relay_command, relay_env, self_signed, start_relay
from tests.test_sync_client import free_port
from wallet.address import parse_address
from wallet.bundle import write_bundle
from wallet.encoding import Block, Kind, id_text, key_text
from wallet.keys import FAST_INSECURE
from wallet.wallet import Wallet

pytestmark = pytest.mark.slow

FUNDED_MINOR = 2000  # what each town payer is issued (20.00 EUR), final
TOWN_PAYERS = ("six", "eight", "nine", "single")
SHORT = r"[a-z2-7]{8}"  # the short form of a key people are shown, before its "…"
DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d"


def money(amount: str, minor: int, currency: str = "EUR") -> dict[str, Any]:
    """The three fields every JSON amount has."""
    return {"amount": amount, "amount_minor": minor, "currency": currency}


def amount_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("amount", "amount_minor", "currency")}


def history(home: Path, *args: object) -> list[dict[str, Any]]:
    return tj(home, "history", "--limit", "1000", *args)["history"]


def rows_by_ref(text: str) -> dict[int, str]:
    """History's text rows, by the ref each starts with."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\d+) ", line)
        if m:
            out[int(m[1])] = line
    return out


def device_of(address: str) -> str:
    return key_text(parse_address(address).device)


def api_pair(holder: Home, genesis: Path, home: Path, label: str) -> str:
    """Pair a new device at ``home`` with the holder's account (its open is signed at
    the holder); the new device's key."""
    new = Wallet.join(home, genesis.read_bytes())
    try:
        text = new.pair_request(PASSPHRASE, parse_address(holder.address), label=label,
                                limits=FAST_INSECURE)
        device = new.device
    finally:
        new.close()
    w = Wallet.open(holder.path)
    try:
        w.pair_add(text, PASSPHRASE)
    finally:
        w.close()
    assert device is not None
    return key_text(device)


def api_carry(src: Path, dst: Path) -> None:
    """Every entry of one home into another (set-up, in-process)."""
    a = Wallet.open(src)
    try:
        bodies = a.bodies(a.export_ids())
    finally:
        a.close()
    b = Wallet.open(dst)
    try:
        b.ingest_bodies(bodies)
    finally:
        b.close()


# ------------------------------------------------------------------------- networks
@dataclass
class Town:
    """A witnessed network (quorum 1 of 1) and the relay that holds its witness key."""

    issuer: Path
    genesis: Path
    network: str
    relay: Relay
    keygen_printed: str  # what `tally-relay keygen --kind witness` printed
    payers: dict[str, Home]


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Town]:
    d = tmp_path_factory.mktemp("town")
    key = d / "witness.key"
    p = subprocess.run(relay_command("keygen", key, "--kind", "witness"), env=relay_env(),
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    doc = tj(d / "issuer", "network", "create", "Town", "--currency", "EUR", "--witness", key)
    assert doc["quorum"] == 1
    genesis = Path(doc["genesis_file"])
    relay = start_relay(d, "--network", genesis, "--witness-key", key)
    try:
        payers = dict(zip(TOWN_PAYERS, api_wallets(genesis, *(d / n for n in TOWN_PAYERS)),
                          strict=True))
        iw = Wallet.open(d / "issuer")
        try:
            for h in payers.values():
                iw.pay(parse_address(h.address), FUNDED_MINOR, PASSPHRASE)
        finally:
            iw.close()
        # The issues go to the relay, and this waits for the witness to make them final.
        out = ok(d / "issuer", "sync", "--relay", relay.url, "--once")
        assert "the witness voted: this device's blocks are final" in out, out
        yield Town(d / "issuer", genesis, doc["network"], relay, p.stdout.strip(), payers)
    finally:
        relay.stop()


@dataclass
class Shop:
    """A network with no witness (q = 0): its issuer, genesis, id and issuer's address."""

    issuer: Path
    genesis: Path
    network: str
    address: str


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    d = tmp_path_factory.mktemp("shop")
    doc = tj(d / "issuer", "network", "create", "Shop", "--currency", "EUR")
    return Shop(d / "issuer", Path(doc["genesis_file"]), doc["network"], doc["address"])


def claim_funds(town: Town, name: str) -> tuple[Home, str]:
    """A town payer's first sync (it claims its issue, and the witness votes); its output."""
    payer = town.payers[name]
    out = ok(payer.path, "sync", "--relay", town.relay.url, "--once")
    bal = tj(payer.path, "balance")
    assert (bal["spendable_minor"], bal["incoming_minor"]) == (FUNDED_MINOR, 0), (out, bal)
    return payer, out


# ------------------------------------------------------------------------- 6
def test_6_one_text_form_for_each_kind_of_key_and_id(town: Town, shop: Shop,
                                                     tmp_path: Path) -> None:
    relay = town.relay
    health = relay.health()
    shown = tj(town.issuer, "network", "show")
    # The witness key: keygen, /healthz and the genesis (network show) print one text.
    assert re.fullmatch(r"[a-z2-7]{52}", town.keygen_printed), town.keygen_printed
    assert health["witness_key"] == town.keygen_printed
    assert shown["witnesses"] == [town.keygen_printed]

    # The relay's node key: the short form `tally sync` prints starts /healthz's, and a
    # client's --json names the same key as /healthz.
    (till,) = api_wallets(town.genesis, tmp_path / "till", label="till")
    doc = tj(till.path, "sync", "--relay", relay.url, "--once")
    assert doc["peers"][0]["peer"] == health["node_key"]
    payer, out = claim_funds(town, "six")
    m = re.search(rf"^connected to {re.escape(relay.url)} \(node ({SHORT})…\)$", out, re.M)
    assert m, out
    assert health["node_key"].startswith(m[1])
    assert re.fullmatch(r"[a-z2-7]{52}", health["node_key"])

    # The network id: a pairing error for another network shows the start of what
    # `network show` prints, for both networks.
    assert ok(town.issuer, "network", "show").splitlines()[0] == f"Town  {town.network}"
    stray = tmp_path / "stray"
    ok(stray, "network", "join", shop.genesis)
    request = tj(stray, "devices", "pair", shop.address, "--label", "stray")["request"]
    before = store_snapshot(payer.path)
    msg = fail(payer.path, "devices", "add", request)
    m = re.fullmatch(r"pairing request: made for another network \((\S{8})…\); this wallet "
                     r"is on (\S{8})…", msg)
    assert m, msg
    assert ok(stray, "network", "show").splitlines()[0] == f"Shop  {shop.network}"
    assert (m[1], m[2]) == (shop.network[:8], town.network[:8])
    assert store_snapshot(payer.path) == before

    # The short device id people see is a payee, with or without its "…": no --yes,
    # since the payer knows the till (its open came through the relay).
    till_device = device_of(till.address)
    out = ok(payer.path, "pay", till.address, "1.00")
    m = re.match(rf"paid 1\.00 EUR to ({SHORT})…: valid \(id ", out)
    assert m, out
    assert till_device.startswith(m[1])
    for form, amount, minor in ((m[1] + "…", "2.00", 200), (m[1], "3.00", 300)):
        paid = tj(payer.path, "pay", form, amount)
        assert (paid["to"], paid["to_device"]) == (till.address, till_device)
        assert amount_of(paid) == money(amount, minor)

    # And a sibling device, by the short form `balance` shows, for move --to and revoke.
    tablet = api_pair(payer, town.genesis, tmp_path / "tablet", "tablet")
    m = re.search(rf"^  ({SHORT})… tablet ", ok(payer.path, "balance"), re.M)
    assert m and tablet.startswith(m[1])
    moved = tj(payer.path, "move", "4.00", "--to", m[1] + "…")
    assert (moved["to"], moved["amount_minor"], moved["status"]) == (tablet, 400, "valid")
    revoked = tj(payer.path, "devices", "revoke", m[1])
    assert (revoked["device"], revoked["to"]) == (tablet, device_of(payer.address))
    assert tj(payer.path, "balance")["total_minor"] == FUNDED_MINOR - 600  # moved, not spent


# ------------------------------------------------------------------------- 7
def test_7_json_amounts_are_decimal_strings_with_minor_units_and_currency(
        shop: Shop, tmp_path: Path) -> None:
    alice, bob = api_wallets(shop.genesis, tmp_path / "alice", tmp_path / "bob")
    api_fund(shop.issuer, alice, 5000)
    req = tj(bob.path, "request", "12.50", "--id", "0a1b2c")
    assert amount_of(req) == money("12.50", 1250) and req["request_id"] == "0a1b2c"

    paid = tj(alice.path, "pay", "--yes", req["request"])
    assert amount_of(paid) == money("12.50", 1250)
    assert (paid["to"], paid["to_device"]) == (bob.address, device_of(bob.address))
    assert paid["request_id"] == "0a1b2c"
    [row] = [r for r in history(alice.path) if r["id"] == paid["id"]]
    assert amount_of(row) == money("12.50", 1250)

    carry(alice.path, bob.path, tmp_path / "pay.bundle")
    waiting = tj(bob.path, "balance")
    assert {k: waiting[k] for k in ("to_claim", "to_claim_minor", "total", "total_minor")} == {
        "to_claim": "12.50", "to_claim_minor": 1250, "total": "12.50", "total_minor": 1250}
    [got] = tj(bob.path, "receive")["received"]
    assert amount_of(got) == money("12.50", 1250) and got["claims"] == paid["id"]
    bal = tj(bob.path, "balance")
    figures = {"spendable": ("12.50", 1250), "incoming": ("0.00", 0), "moving": ("0.00", 0),
               "to_claim": ("0.00", 0), "total": ("12.50", 1250)}
    expected = {"currency": "EUR"}
    for name, (text, minor) in figures.items():
        expected |= {name: text, f"{name}_minor": minor}
    assert {k: bal[k] for k in expected} == expected
    [dev] = bal["devices"]
    assert {k: dev[k] for k in expected} == expected
    [row] = [r for r in history(bob.path) if r["kind"] == "receive"]
    assert amount_of(row) == money("12.50", 1250)

    api_pair(alice, shop.genesis, tmp_path / "tablet", "tablet")
    moved = tj(alice.path, "move", "2.50", "--to", "tablet")
    assert amount_of(moved) == money("2.50", 250)
    bal = tj(alice.path, "balance")
    assert {k: bal[k] for k in ("spendable", "moving", "total", "total_minor")} == {
        "spendable": "35.00", "moving": "2.50", "total": "37.50", "total_minor": 3750}


# ------------------------------------------------------------------------- 8
def test_8_history_a_person_can_read(shop: Shop, tmp_path: Path) -> None:
    alice, bob = api_wallets(shop.genesis, tmp_path / "alice", tmp_path / "bob",
                             label="phone")
    api_fund(shop.issuer, alice, 5000)
    alice_short, bob_short = device_of(alice.address)[:8], device_of(bob.address)[:8]
    uri = tj(bob.path, "request", "12.50", "--memo", "two coffees", "--id", "0a1b2c")["request"]
    paid = tj(alice.path, "pay", "--yes", uri)

    # The sender reads the memo, the request id and the date.
    [row] = [r for r in history(alice.path) if r["id"] == paid["id"]]
    assert (row["memo"], row["request_id"]) == ("two coffees", "0a1b2c")
    assert row["date"] == time.strftime("%Y-%m-%d %H:%M", time.localtime(row["seen"]))
    line = rows_by_ref(ok(alice.path, "history"))[row["ref"]]
    assert re.fullmatch(rf"\s*{row['ref']} {row['date']} send +12\.50 EUR → {bob_short}… +"
                        r"accepted, no witness  “two coffees”  request 0a1b2c", line), line

    # The recipient: before receive, the payment from the payer, with its request id;
    # after, the receive with the memo and the request id of what it claims.
    carry(alice.path, bob.path, tmp_path / "pay.bundle")
    [row] = [r for r in history(bob.path) if r["unclaimed"]]
    assert (row["id"], row["request_id"]) == (paid["id"], "0a1b2c")
    line = rows_by_ref(ok(bob.path, "history"))[row["ref"]]
    assert re.fullmatch(rf"\s*{row['ref']} {DATE} payment +12\.50 EUR ← {alice_short}… +"
                        r"accepted, no witness  request 0a1b2c  \(not claimed yet\)",
                        line), line
    ok(bob.path, "receive")
    [row] = [r for r in history(bob.path) if r["kind"] == "receive"]
    assert (row["claims"], row["memo"], row["request_id"]) == (paid["id"], "two coffees",
                                                               "0a1b2c")
    line = rows_by_ref(ok(bob.path, "history"))[row["ref"]]
    assert re.fullmatch(rf"\s*{row['ref']} {DATE} receive +12\.50 EUR ← {alice_short}… +"
                        r"accepted, no witness  “two coffees”  request 0a1b2c", line), line

    # Several devices: each row names its device by label.
    tablet = api_pair(alice, shop.genesis, tmp_path / "tablet", "tablet")
    moved = tj(alice.path, "move", "5.00", "--to", "tablet")
    api_carry(alice.path, tmp_path / "tablet")
    tw = Wallet.open(tmp_path / "tablet")
    try:
        assert len(tw.receive(PASSPHRASE)) == 1
    finally:
        tw.close()
    api_carry(tmp_path / "tablet", alice.path)
    rows = history(alice.path)
    assert {r["device_label"] for r in rows} == {"phone", "tablet"}
    text = rows_by_ref(ok(alice.path, "history", "--limit", "1000"))
    assert sorted(text) == sorted(r["ref"] for r in rows)
    for r in rows:
        assert re.match(rf"\s*{r['ref']} {r['date']} {r['device_label']} +{r['kind']} ",
                        text[r["ref"]]), text[r["ref"]]
    [row] = [r for r in rows if r["id"] == moved["id"]]
    assert row["device"] == device_of(alice.address)
    [row] = [r for r in rows if r["kind"] == "receive" and r["device"] == tablet]
    assert (row["claims"], row["amount_minor"]) == (moved["id"], 500)

    # A revoke's row shows the amount it passes.
    revoked = tj(alice.path, "devices", "revoke", "tablet")
    [row] = [r for r in history(alice.path) if r["id"] == revoked["id"]]
    assert (row["kind"], row["device"]) == ("revoke", tablet)
    assert amount_of(row) == money("5.00", 500)
    line = rows_by_ref(ok(alice.path, "history"))[row["ref"]]
    assert re.match(rf"\s*{row['ref']} {DATE} tablet +revoke +5\.00 EUR → {alice_short}… ",
                    line), line

    # The ref a row starts with is what --before takes.
    refs = [r["ref"] for r in history(alice.path)]
    assert len(refs) >= 7
    page = ok(alice.path, "history", "--limit", "3").splitlines()
    assert list(rows_by_ref("\n".join(page))) == refs[:3]
    assert page[-1] == f"more: tally history --before {refs[2]}"
    nxt = tj(alice.path, "history", "--limit", "3", "--before", refs[2])
    assert [r["ref"] for r in nxt["history"]] == refs[3:6]
    assert nxt["next_before"] == refs[5]


def test_8_status_selects_exactly_one_status(town: Town) -> None:
    payer, _ = claim_funds(town, "eight")
    before = history(payer.path)
    assert before and {r["status"] for r in before} == {"final"}
    paid = tj(payer.path, "pay", device_of(tj(town.issuer, "address")["address"]), "1.50")
    assert (paid["status"], paid["final"]) == ("valid", False)
    assert [r["id"] for r in history(payer.path, "--status", "valid")] == [paid["id"]]
    assert [r["id"] for r in history(payer.path, "--status", "final")] == [
        r["id"] for r in before]
    assert [r["id"] for r in history(payer.path, "--status", "not-final")] == [paid["id"]]
    assert history(payer.path, "--status", "accepted") == []  # a witnessed network
    lines = ok(payer.path, "history", "--status", "valid").splitlines()
    assert len(lines) == 1 and lines[0].rstrip().endswith(" valid"), lines
    assert "1.50 EUR" in lines[0]


def test_8_after_a_restore_history_is_the_accounts(shop: Shop, tmp_path: Path) -> None:
    dave, carol = api_wallets(shop.genesis, tmp_path / "dave", tmp_path / "carol")
    api_fund(shop.issuer, dave, 3000)
    tj(dave.path, "pay", "--yes", carol.address, "4.00", "--memo", "rent")
    old = history(dave.path)
    assert sorted(r["kind"] for r in old) == ["open", "receive", "send"]

    new = tmp_path / "new"
    ok(new, "network", "join", shop.genesis)
    restored = tj(new, "restore", stdin=dave.phrase + "\n")
    new_device = device_of(restored["address"])
    [mine] = history(new)
    assert (mine["kind"], mine["device"]) == ("open", new_device)
    carry(dave.path, new, tmp_path / "old.bundle")
    rows = history(new)
    assert {r["id"] for r in rows} == {r["id"] for r in old} | {mine["id"]}
    assert {r["device_label"] for r in rows} == {"main", "restored"}
    [send] = [r for r in rows if r["kind"] == "send"]
    assert amount_of(send) == money("4.00", 400) and send["device"] == device_of(dave.address)
    assert tj(new, "balance")["total_minor"] == 2600


# ------------------------------------------------------------------------- 9
def test_9_relays_are_remembered_and_sync_once_waits_for_the_votes(town: Town) -> None:
    url = town.relay.url
    payer, _ = claim_funds(town, "nine")  # sync --relay URL --once
    assert ok(payer.path, "relays", "list") == f"relay {url}\n"
    assert tj(payer.path, "relays", "list") == {"links": [{"url": url, "kind": "relay"}]}

    # An unreachable URL is not remembered.
    nowhere = f"ws://127.0.0.1:{free_port()}"
    msg = fail(payer.path, "sync", "--relay", nowhere, "--once")
    assert msg.startswith(f"cannot reach {nowhere}: connection refused"), msg
    assert tj(payer.path, "relays", "list") == {"links": [{"url": url, "kind": "relay"}]}

    # Plain `sync --once` uses the remembered relay, and waits for the witness's vote on
    # the payment, saying how long at most: one sync leaves it final.
    issuer_device = device_of(tj(town.issuer, "address")["address"])
    paid = tj(payer.path, "pay", issuer_device, "2.00")
    assert paid["status"] == "valid"
    out = ok(payer.path, "sync", "--once")
    assert f"connected to {url} (node " in out
    assert ("waiting up to 10 s for the witness to vote 1 block of this device…\n"
            "the witness voted: this device's blocks are final\n") in out, out
    [row] = [r for r in history(payer.path) if r["id"] == paid["id"]]
    assert (row["status"], row["final"]) == ("final", True)
    assert tj(payer.path, "balance")["spendable_minor"] == FUNDED_MINOR - 200

    # relays remove: then plain sync has nothing to sync with, and says what to give.
    assert ok(payer.path, "relays", "remove", url) == f"forgot {url}\n"
    assert tj(payer.path, "relays", "list") == {"links": []}
    assert "none remembered" in ok(payer.path, "relays", "list")
    msg = fail(payer.path, "sync", "--once")
    assert msg.startswith("nothing to sync with: give --relay URL or --peer URL"), msg
    assert fail(payer.path, "relays", "remove", url) == (
        f"{url} is not a remembered relay or peer (remembered: none)")


# ------------------------------------------------------------------------- 10
def test_10_a_merchant_sees_a_refused_payment_and_why(shop: Shop, tmp_path: Path) -> None:
    payer, till = api_wallets(shop.genesis, tmp_path / "payer", tmp_path / "till")
    api_fund(shop.issuer, payer, 5000)
    to = parse_address(till.address)
    # An overspending send to the till, signed with the payer's key outside its wallet
    # (which would refuse it), carried with the payer's chain in a bundle.
    w = Wallet.open(payer.path)
    try:
        key = w.load_key("device", PASSPHRASE)
        head = w.ledger.head(w.device or b"")
        assert head is not None
        bad = Block(Kind.SEND, w.network, w.device or b"", head.seq + 1, head.id,
                    to_account=to.account, to_device=to.device, amount=8000).signed(key)
        write_bundle(tmp_path / "bad.bundle", w.network,
                     [*w.bodies(w.export_ids()), bad.raw])
    finally:
        w.close()
    out = ok(till.path, "bundle", "import", tmp_path / "bad.bundle")
    assert out.startswith("imported "), out

    [row] = history(till.path, "--status", "invalid")
    assert (row["id"], row["kind"], row["status"], row["reason"]) == (
        id_text(bad.id), "send", "invalid", "overspend")
    assert row["device"] == device_of(payer.address) and row["unclaimed"] is True
    assert amount_of(row) == money("80.00", 8000)
    assert [r["id"] for r in history(till.path) if r["unclaimed"]] == [row["id"]]
    line = rows_by_ref(ok(till.path, "history", "--status", "invalid"))[row["ref"]]
    assert re.fullmatch(rf"\s*{row['ref']} {DATE} payment +80\.00 EUR ← "
                        rf"{device_of(payer.address)[:8]}… +invalid \(overspend\)", line), line

    # receive claims nothing, names the refused payment, and changes nothing.
    before = store_snapshot(till.path)
    assert ok(till.path, "receive") == (
        "nothing to receive\n"
        "1 payment to this device was refused (overspend): "
        "`tally history --status invalid` lists it\n")
    doc = tj(till.path, "receive")
    assert doc["received"] == []
    assert doc["refused"] == [{"id": row["id"], "from": device_of(payer.address),
                               **money("80.00", 8000), "reason": "overspend"}]
    assert store_snapshot(till.path) == before
    assert tj(till.path, "balance")["total_minor"] == 0


# ------------------------------------------------------------------------- smaller things
def test_network_join_lists_every_next_step(shop: Shop, tmp_path: Path) -> None:
    out = ok(tmp_path / "w", "network", "join", shop.genesis)
    first, *steps = out.splitlines()
    assert first == f"joined network Shop ({shop.network}); next, one of:"
    assert [s.split("`")[1] for s in steps] == ["tally init", "tally restore",
                                                "tally devices pair ADDRESS"]


def test_restore_from_dev_null_says_how_to_give_the_phrase(shop: Shop, tmp_path: Path) -> None:
    home = tmp_path / "w"
    ok(home, "network", "join", shop.genesis)
    before = store_snapshot(home)
    p = subprocess.run(command(home, "restore"), env=tally_env(), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60, check=False)
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr == ("tally: error: no recovery phrase given: type it at the prompt, pipe "
                        "it in (`tally restore < phrase.txt`), or set TALLY_PHRASE\n")
    assert store_snapshot(home) == before
    assert "run `tally init`" in fail(home, "address")


def test_request_qr_in_json_and_as_an_svg_file(shop: Shop, tmp_path: Path) -> None:
    import segno

    (w,) = api_wallets(shop.genesis, tmp_path / "w")
    svg = tmp_path / "req.svg"
    doc = tj(w.path, "request", "3.00", "--id", "beef", "--qr", "--qr-file", svg)
    uri = doc["request"]
    assert uri.startswith(f"tally:{w.address}?") and "&amount=300&id=beef" in uri
    drawn = segno.make(uri, error="m")
    assert doc["qr_text"] and set(doc["qr_text"]) <= set("█▀▄ \n")
    assert doc["qr_text"].count("\n") == (drawn.symbol_size(scale=1, border=4)[1] + 1) // 2
    assert doc["qr_file"] == str(svg)
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    expected = tmp_path / "expected.svg"
    drawn.save(str(expected), scale=8, border=2)
    assert svg.read_bytes() == expected.read_bytes()  # the QR code of that very request
    out = ok(w.path, "request", "3.00", "--id", "beef", "--qr-file", tmp_path / "b.svg")
    assert out == f"{uri}\nQR code written to {tmp_path / 'b.svg'}\n"


def test_sync_counts_one_new_entry_in_the_singular(town: Town) -> None:
    _, out = claim_funds(town, "single")
    url = re.escape(town.relay.url)
    assert re.search(rf"^sent 1 new entry to {url}$", out, re.M), out
    assert re.search(rf"^in sync with {url}: \d+ entries \(\d+ new\)$", out, re.M), out
    assert "1 new entries" not in out


def test_a_truncated_address_is_said_to_be_cut_short(shop: Shop, tmp_path: Path) -> None:
    payer, payee = api_wallets(shop.genesis, tmp_path / "payer", tmp_path / "payee")
    api_fund(shop.issuer, payer, 500)
    before = store_snapshot(payer.path)
    assert fail(payer.path, "pay", "--yes", payee.address[:70], "1.00") == (
        "address: cut short: 70 of 123 characters; copy all of it")
    assert store_snapshot(payer.path) == before


def test_witness_naming_no_file_says_no_such_key_file(tmp_path: Path) -> None:
    home = tmp_path / "w"
    msg = fail(home, "network", "create", "X", "--currency", "EUR", "--witness", "nosuchfile")
    assert msg.startswith("--witness nosuchfile: no such key file, and not a 52-character "
                          "public key"), msg
    assert not (home / "wallet.db").exists()


def test_importing_a_bundle_again_says_nothing_new_and_exits_0(shop: Shop,
                                                                tmp_path: Path) -> None:
    (w,) = api_wallets(shop.genesis, tmp_path / "w")
    bundle = tmp_path / "b.bundle"
    n = tj(shop.issuer, "bundle", "export", bundle)["entries"]
    assert tj(w.path, "bundle", "import", bundle)["new"] > 0
    before = store_snapshot(w.path)
    assert ok(w.path, "bundle", "import", bundle).splitlines()[0] == (
        f"nothing new: all {n} {'entry' if n == 1 else 'entries'} of {bundle} are already "
        "here (imported before)")
    doc = tj(w.path, "bundle", "import", bundle)
    assert (doc["entries"], doc["new"], doc["changes"]) == (n, 0, 0)
    assert store_snapshot(w.path) == before


def test_sync_with_ca_trusts_a_self_signed_relay(shop: Shop, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    relay = start_relay(tmp_path, "--network", shop.genesis, "--tls-cert", cert,
                        "--tls-key", key, tls=ssl.create_default_context(cafile=str(cert)))
    try:
        url = relay.url
        assert url.startswith("wss://127.0.0.1:")
        (w,) = api_wallets(shop.genesis, tmp_path / "w")
        env = tally_env(SSL_CERT_FILE=None, SSL_CERT_DIR=None)
        msg = fail(w.path, "sync", "--relay", url, "--once", env=env)
        assert msg.startswith(f"cannot reach {url}: tls: ") and "--ca FILE" in msg, msg
        assert tj(w.path, "relays", "list", env=env) == {"links": []}
        assert relay.health()["entries"] == 0

        out = ok(w.path, "sync", "--relay", url, "--once", "--ca", cert, env=env)
        assert f"connected to {url} (node {relay.health()['node_key'][:8]}…)" in out, out
        assert re.search(rf"^in sync with {re.escape(url)}: 1 entry \(0 new\)$", out, re.M), out
        assert relay.health()["entries"] == 1  # the wallet's open went through
    finally:
        relay.stop()
