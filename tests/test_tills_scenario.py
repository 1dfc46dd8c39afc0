"""A merchant's day, with real processes (issue 15's scenario): two tills of one
merchant account take payments with no relay reachable, three payers over ``tally
serve`` and one by bundle; one payer's device was cloned and the clone pays the second
till the same money; a payment over the floor per payment is held; the first till
refunds part of a payment from its float, offline. Then everything syncs through a
witness relay (a real ``tally-relay --witness-key``), and the takings, on each till and
on the merchant's main device, show what became final, the clone's payment refused with
a fraud proof every party holds, totals to the cent, requests matched, the refund
netted, and no balance anywhere below zero.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.clikit import Home, new_wallets, ok, run, tj
from tests.test_relay import relay_command, relay_env, start_relay
from tests.test_sync_client import Proc, serve
from wallet.floor import FINAL, HELD, PROVISIONAL, REFUSED

FLOORS = ("--floor-payment", "50.00", "--floor-account", "100.00", "--floor-till",
          "1000.00")


def _device_of(home: Path) -> str:
    return tj(home, "address")["device"]


def _pair(main: Path, genesis: Path, till: Path, account_address: str, label: str) -> str:
    """A till device of the merchant's account, paired with the real commands; its
    address."""
    tj(till, "network", "join", genesis)
    request = tj(till, "devices", "pair", account_address, "--label", label)["request"]
    tj(main, "devices", "add", request)
    tj(main, "bundle", "export", main / "open.bundle")
    tj(till, "bundle", "import", main / "open.bundle")
    return tj(till, "address")["address"]


def _sync(home: Path, url: str) -> dict[str, Any]:
    return tj(home, "sync", "--relay", url, "--once")


def _by_payer(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["payer_account"]: k for k in doc["takings"]}


def test_a_merchants_day_offline_then_reconciled_through_a_witness_relay(
        tmp_path: Path, procs: list[Proc]) -> None:
    key_file = tmp_path / "witness.key"
    made = subprocess.run(relay_command("keygen", key_file, "--kind", "witness"),
                          env=relay_env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert made.returncode == 0, made.stderr
    issuer = tmp_path / "issuer"
    genesis = Path(tj(issuer, "network", "create", "Market", "--currency", "EUR",
                      "--witness", key_file, *FLOORS)["genesis_file"])
    relay = start_relay(tmp_path, "--network", genesis, "--witness-key", key_file)
    try:
        alice, bob, carol, dave, merchant = new_wallets(
            genesis, *(tmp_path / n for n in ("alice", "bob", "carol", "dave", "merchant")))
        account = tj(merchant.path, "address")["account"]
        till1 = Home(tmp_path / "till1")
        till2 = Home(tmp_path / "till2")
        till1.address = _pair(merchant.path, genesis, till1.path, merchant.address, "till1")
        till2.address = _pair(merchant.path, genesis, till2.path, merchant.address, "till2")

        # Funding, online: final money for the payers, and a float on the first till.
        for who, amount in ((alice, "100.00"), (bob, "200.00"), (carol, "40.00"),
                            (dave, "60.00"), (till1, "20.00")):
            tj(issuer, "issue", "--yes", who.address, amount)
        _sync(issuer, relay.url)
        for who in (alice, bob, carol, dave, till1, till2, merchant):
            _sync(who.path, relay.url)
        assert tj(carol.path, "balance")["spendable_minor"] == 4000
        assert tj(till1.path, "balance")["spendable_minor"] == 2000

        # Carol's disk is cloned: the copy signs with her device key.
        clone = Home(tmp_path / "carol-clone", carol.address)
        shutil.copytree(carol.path, clone.path)

        # ---- offline: the tills reach no relay; payers come to them.
        coffee = tj(till1.path, "request", "12.50", "--memo", "coffee")
        bike = tj(till1.path, "request", "80.00", "--memo", "bike")
        unpaid = tj(till1.path, "request", "5.00", "--memo", "nobody")
        _, url1 = serve(procs, till1.path)
        _, url2 = serve(procs, till2.path)

        paid = tj(alice.path, "pay", "--yes", coffee["request"])
        tj(alice.path, "sync", "--peer", url1, "--once")
        warned = run(bob.path, "pay", "--yes", bike["request"], "--json")
        assert warned.returncode == 0, warned.stderr
        assert ("the till will hold this payment until it is final: 80.00 EUR is over its "
                "floor per payment 50.00 EUR") in warned.stderr
        tj(bob.path, "sync", "--peer", url1, "--once")
        carols = tj(carol.path, "pay", "--yes", till1.address, "30.00")
        tj(carol.path, "sync", "--peer", url1, "--once")
        clones = tj(clone.path, "pay", "--yes", till2.address, "30.00")
        assert clones["id"] != carols["id"]  # the same slot of one device: a fork
        tj(clone.path, "sync", "--peer", url2, "--once")
        daves = tj(dave.path, "pay", "--yes", till1.address, "25.00")
        tj(dave.path, "bundle", "export", tmp_path / "dave.bundle", "--for", till1.address)
        tj(till1.path, "bundle", "import", tmp_path / "dave.bundle")
        tj(till1.path, "receive")
        # The till's signed receipt goes back the same way.
        tj(till1.path, "bundle", "export", tmp_path / "receipt.bundle", "--for", dave.address)
        back = tj(dave.path, "bundle", "import", tmp_path / "receipt.bundle")
        assert [(r["payment"], r["amount_minor"]) for r in back["receipts"]] == [
            (daves["id"], 2500)]

        offline = _by_payer(tj(till1.path, "takings", "--status", "provisional"))
        assert {k["id"] for k in offline.values()} == {paid["id"], carols["id"], daves["id"]}
        [held] = tj(till1.path, "takings", "--status", "held")["takings"]
        assert held["amount_minor"] == 8000 and "over the floor per payment 50.00" in \
            held["reason"]
        [took] = tj(till2.path, "takings")["takings"]
        assert (took["id"], took["state"]) == (clones["id"], PROVISIONAL)
        # A refund of part of the coffee, from the till's float, offline.
        refund = tj(till1.path, "refund", paid["id"], "2.50")
        assert (refund["amount_minor"], refund["left_minor"]) == (250, 1000)
        for p in procs:
            assert p.stop()[0] == 0

        # ---- online: everything syncs through the witness relay. Carol's own payment
        # reaches the witness first (through the first till), so the clone's loses.
        for _ in range(2):
            for who in (till1, till2, alice, bob, carol, clone, dave, merchant):
                _sync(who.path, relay.url)

        doc = tj(till1.path, "takings")
        rows = {k["id"]: k for k in doc["takings"]}
        assert {i: (k["state"], k["decision"]) for i, k in rows.items()} == {
            paid["id"]: (FINAL, PROVISIONAL), held["id"]: (FINAL, HELD),
            carols["id"]: (FINAL, PROVISIONAL), daves["id"]: (FINAL, PROVISIONAL)}
        assert doc["totals"] == {"held": 0, "provisional": 0, "final": 1250 + 8000 + 3000
                                 + 2500, "disputed": 0, "refused": 0}
        assert sum(doc["totals"].values()) == sum(k["amount_minor"] for k in rows.values())
        assert (doc["refunded"], doc["net"]) == (250, 14750 - 250)
        assert rows[paid["id"]]["refunded_minor"] == 250
        assert {r["memo"]: r["match"] for r in doc["requests"]} == {
            "coffee": "paid", "bike": "paid", "nobody": "unpaid"}
        assert doc["exposure"]["total_minor"] == 0
        assert unpaid["request_id"] in {r["request_id"] for r in doc["requests"]}

        lost = tj(till2.path, "takings")
        [k] = lost["takings"]
        assert (k["id"], k["state"], k["status_reason"]) == (clones["id"], REFUSED, "lost")
        ev = k["evidence"]
        assert ev["kind"] == "fork" and set(ev["blocks"]) == {carols["id"], clones["id"]}
        assert lost["exposure"]["total_minor"] == 3000, "refused: at risk until written off"
        proof = {"device": ev["device"], "seq": ev["seq"], "blocks": sorted(ev["blocks"])}
        for who in (alice, bob, carol, clone, dave, till1, till2, merchant):
            held_here = [{"device": p["device"], "seq": p["seq"], "blocks": sorted(p["blocks"])}
                         for p in tj(who.path, "frauds")["frauds"]]
            assert proof in held_here, f"{who.path.name} holds the fraud proof"
        tj(till2.path, "takings", "write-off", clones["id"])
        assert tj(till2.path, "takings")["exposure"]["total_minor"] == 0

        # The merchant's main device reconciles both tills from the ledger alone.
        main = tj(merchant.path, "takings")
        tills = {t["label"]: t for t in main["tills"]}
        assert tills["till1"]["totals"]["final"] == 14750
        assert tills["till2"]["totals"]["refused"] == 3000
        by_id = {k["id"]: k for k in main["takings"]}
        assert by_id[clones["id"]]["evidence"]["kind"] == "fork"
        assert by_id[held["id"]]["state"] == FINAL
        one = tj(merchant.path, "takings", "--till", "till2")
        assert [k["id"] for k in one["takings"]] == [clones["id"]]
        z = tj(merchant.path, "takings", "close")
        assert z["z"] == 1 and z["totals"]["final"] == 14750
        assert {t["label"]: t["counts"]["final"] for t in z["tills"]} == {
            "till1": 4, "till2": 0}

        # The sweep moves the first till's final money to the main device.
        swept = tj(till1.path, "sweep", "--to", _device_of(merchant.path))
        assert swept["amount_minor"] == 2000 - 250 + 14750
        for who in (till1, merchant):
            _sync(who.path, relay.url)

        # No balance anywhere below zero.
        for who in (alice, bob, carol, clone, dave, till1, till2, merchant):
            for d in tj(who.path, "devices", "list")["devices"]:
                assert d["spendable"] >= 0, (who.path.name, d)
        assert account == tj(till1.path, "address")["account"]
        assert "till1" in ok(merchant.path, "takings")
    finally:
        assert relay.stop() == 0
