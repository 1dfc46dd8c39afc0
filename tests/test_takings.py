"""A till's takings (DESIGN §5, issue 15), with the real `tally` command for what a
merchant runs: floor limits set lower on a till (never over the network's), each
payment decided provisional or held as it arrives with its reason in numbers, kept
with the payment in one transaction, where each stands as statuses change (a forked
payer's payment refused), the exposure against each limit, and a write-off.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.clikit import (
    PASSPHRASE,
    api_fund,
    api_network,
    api_wallets,
    check_failed,
    ok,
    run,
    tj,
)
from wallet.address import parse_address, parse_request
from wallet.encoding import id_from_text, id_text, key_text
from wallet.floor import HELD, PROVISIONAL, REFUSED
from wallet.keys import FAST_INSECURE
from wallet.takings import CSV_COLUMNS, Request, match
from wallet.wallet import Wallet

ROOT = Path(__file__).resolve().parent.parent


def pay_to_till(payer: Path, till: Path, minor: int) -> None:
    """``payer`` pays the till, and the till takes the payment in (a bundle)."""
    to = Wallet.open(till)
    w = Wallet.open(payer)
    try:
        address = to.address()
        w.pay(address, minor, PASSPHRASE)
        to.ingest_bodies(w.bodies(w.export_ids(address)))
    finally:
        w.close()
        to.close()


def pair_device(tmp_path: Path, holder: Path, holder_address: str, label: str) -> Path:
    """A new device of the account whose key ``holder`` holds, paired and opened (the
    entries carried by hand); its home."""
    home = tmp_path / f"paired-{label}"
    new = Wallet.join(home, (tmp_path / "g").read_bytes())
    w = Wallet.open(holder)
    try:
        request = new.pair_request(PASSPHRASE, parse_address(holder_address), label=label,
                                   limits=FAST_INSECURE)
        w.pair_add(request, PASSPHRASE)
        new.ingest_bodies(w.bodies(w.export_ids(None)))
    finally:
        w.close()
        new.close()
    return home


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TALLY_PASSPHRASE", PASSPHRASE)
    api_network(tmp_path, "shop")  # floors: 50.00 a payment, 100.00 an account, 1000.00
    alice, bob, till = api_wallets(tmp_path / "g", tmp_path / "alice", tmp_path / "bob",
                                   tmp_path / "till")
    api_fund(tmp_path / "issuer", alice, 10_000)
    api_fund(tmp_path / "issuer", bob, 10_000)
    return alice, bob, till


def test_takings_are_decided_against_the_floor_limits_and_said_in_numbers(shop) -> None:  # type: ignore[no-untyped-def]
    alice, bob, till = shop
    doc = tj(till.path, "till", "limits", "--payment", "30.00", "--account", "40.00",
             "--till", "2000.00")
    assert doc["limits"] == {"currency": "EUR", "payment": "30.00", "payment_minor": 3000,
                             "account": "40.00", "account_minor": 4000,
                             "till": "1000.00", "till_minor": 100_000}, \
        "a till's floor is never over the network's"
    tj(till.path, "till", "limits", "--till", "50.00")

    pay_to_till(alice.path, till.path, 2000)   # provisional: 20.00
    pay_to_till(alice.path, till.path, 3500)   # held: over 30.00 a payment
    pay_to_till(alice.path, till.path, 2500)   # held: 20.00 + 25.00 over 40.00 an account
    pay_to_till(bob.path, till.path, 1500)     # provisional: till 35.00
    pay_to_till(bob.path, till.path, 2000)     # held: till 35.00 + 20.00 over 50.00

    doc = tj(till.path, "takings")
    rows = doc["takings"]
    assert [(k["amount_minor"], k["state"]) for k in rows] == [
        (2000, PROVISIONAL), (3500, HELD), (2500, HELD), (1500, PROVISIONAL), (2000, HELD)]
    assert rows[1]["reason"] == ("held: 35.00 EUR is over the floor per payment 30.00 EUR; "
                                 "taken once final")
    assert rows[2]["reason"].startswith("held: payer account ")
    assert "has 20.00 EUR not final here; with this 25.00 EUR that is over the floor " \
           "per account 40.00 EUR" in rows[2]["reason"]
    assert rows[4]["reason"].startswith("held: this till has 35.00 EUR not final; with "
                                        "this 20.00 EUR")
    assert doc["totals"]["provisional"] == 3500 and doc["totals"]["held"] == 8000
    assert doc["exposure"]["total_minor"] == 3500
    assert sum(doc["totals"].values()) == sum(k["amount_minor"] for k in rows)

    again = tj(till.path, "takings", "--status", "held")
    assert [k["amount_minor"] for k in again["takings"]] == [3500, 2500, 2000]
    assert "only a refused taking can be written off; this one is provisional" in \
        check_failed(run(till.path, "takings", "write-off", rows[0]["id"]))
    assert "not a payment id" in check_failed(run(till.path, "takings", "write-off", "x"))
    assert "give a date" in check_failed(run(till.path, "takings", "--since", "May"))


def test_a_cloned_payers_forked_payment_is_refused_and_can_be_written_off(
        shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, _, till = shop
    clone = tmp_path / "clone"
    shutil.copytree(alice.path, clone)  # a copied disk: the same device key twice
    pay_to_till(alice.path, till.path, 1000)
    pay_to_till(clone, till.path, 1200)  # the same slot: a fork
    doc = tj(till.path, "takings")
    states = {k["amount_minor"]: k for k in doc["takings"]}
    assert states[1000]["decision"] == PROVISIONAL and states[1000]["state"] == REFUSED
    assert states[1200]["state"] == REFUSED  # q = 0: both sides of a fork are refused
    assert doc["exposure"]["total_minor"] == 1000, "the one taken provisionally is at risk"
    out = tj(till.path, "takings", "write-off", states[1000]["id"])
    assert out["amount_minor"] == 1000
    assert tj(till.path, "takings")["exposure"]["total_minor"] == 0
    assert "written off before" in check_failed(
        run(till.path, "takings", "write-off", states[1000]["id"]))


def test_a_move_between_an_accounts_own_devices_is_no_taking(shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, _, _ = shop
    laptop = pair_device(tmp_path, alice.path, alice.address, "laptop")
    lw = Wallet.open(laptop)
    aw = Wallet.open(alice.path)
    try:
        aw.pay(lw.address(), 500, PASSPHRASE)  # a move: escrow for the laptop
        lw.ingest_bodies(aw.bodies(aw.export_ids(lw.address())))
        assert lw.ledger.balance(lw.device or b"").moving == 500
    finally:
        aw.close()
        lw.close()
    assert tj(laptop, "takings")["takings"] == []


def test_with_no_witnesses_takings_leave_the_exposure_after_the_settle_period(shop) -> None:  # type: ignore[no-untyped-def]
    alice, bob, till = shop
    pay_to_till(alice.path, till.path, 1000)
    pay_to_till(bob.path, till.path, 700)
    w = Wallet.open(till.path)
    try:
        now = time.time()
        assert w.takings.exposure(now).total == 1700
        settle = w.genesis.policy.settle_period_s  # 3600 s on this network
        later = w.takings.exposure(now + settle + 1)
        assert later.total == 0 and later.by_account == {}, "no fork seen: settled"
        assert [k.state for k in w.takings.rows()] == [PROVISIONAL, PROVISIONAL], \
            "never final with no witnesses"
    finally:
        w.close()


def test_requests_are_matched_to_the_takings_that_name_them(shop) -> None:  # type: ignore[no-untyped-def]
    alice, bob, till = shop
    tj(till.path, "till", "limits", "--payment", "20.00")
    uris = {}
    for rid, amount in (("a1", "10.00"), ("a2", "10.00"), ("a3", "5.00"), ("a4", "3.00"),
                        ("a5", "4.00")):
        uris[rid] = tj(till.path, "request", amount, "--id", rid, "--memo", rid)["request"]
    req = parse_request(uris["a1"])
    assert req.floor_payment == 2000 and req.floor_account == 0, \
        "a request carries the till's floors where lower than the network's"

    def pay(payer: Path, rid: str, minor: int, again: bool = False) -> None:
        to = Wallet.open(till.path)
        w = Wallet.open(payer)
        try:
            r = parse_request(uris[rid])
            w.pay(r.address, minor, PASSPHRASE, request=r, again=again)
            to.ingest_bodies(w.bodies(w.export_ids(r.address)))
        finally:
            w.close()
            to.close()

    pay(alice.path, "a1", 1000)
    pay(bob.path, "a2", 600)
    pay(alice.path, "a3", 700)
    pay(bob.path, "a4", 300)
    pay(bob.path, "a4", 300, again=True)
    doc = tj(till.path, "takings")
    got = {r["request_id"]: (r["match"], r["paid_minor"]) for r in doc["requests"]}
    assert got == {"a1": ("paid", 1000), "a2": ("underpaid", 600), "a3": ("overpaid", 700),
                   "a4": ("paid twice", 600), "a5": ("unpaid", 0)}
    assert [k["request_id"] for k in doc["takings"]] == ["a1", "a2", "a3", "a4", "a4"]


def test_an_unpaid_request_past_its_expiry_reads_expired() -> None:
    r = Request(b"\x01", 500, "tea", expires=1000, made_at=900)
    assert match(r, [], now=999) == ("unpaid", 0)
    assert match(r, [], now=1000) == ("expired", 0)
    never = Request(b"\x02", 500, "", expires=0, made_at=900)
    assert match(never, [], now=10**10) == ("unpaid", 0)


def test_the_csv_has_its_documented_columns_and_adds_up_to_the_json(
        shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, bob, till = shop
    tj(till.path, "till", "limits", "--payment", "30.00")
    clone = tmp_path / "clone"
    shutil.copytree(alice.path, clone)
    pay_to_till(alice.path, till.path, 1250)
    pay_to_till(bob.path, till.path, 3100)  # held: over 30.00 a payment
    pay_to_till(clone, till.path, 700)  # the same slot as alice's: both refused
    out = tmp_path / "takings.csv"
    doc = tj(till.path, "takings", "--csv", out)
    assert doc["csv_rows"] == 3
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    documented = (ROOT / "docs" / "takings.md").read_text()
    assert tuple(rows[0]) == CSV_COLUMNS
    assert all(f"| `{c}` |" in documented for c in CSV_COLUMNS), "each column documented"
    assert [k["state"] for k in doc["takings"]] == [REFUSED, HELD, REFUSED]
    for row, k in zip(rows, doc["takings"], strict=True):
        same = ("till", "payer_account", "payer_device", "state", "decision", "reason",
                "status_reason", "amount")
        assert {c: row[c] for c in same} == {c: k[c] for c in same}
        assert (row["payment_id"], int(row["amount_minor"]), row["currency"]) == (
            k["id"], k["amount_minor"], "EUR")
        assert row["request_id"] == (k["request_id"] or "")
        assert row["written_off"] == str(int(k["written_off"]))
        assert row["day"] == time.strftime("%Y-%m-%d", time.localtime(k["taken_at"]))
        assert row["taken_at"] == time.strftime("%Y-%m-%dT%H:%M:%S",
                                                time.localtime(k["taken_at"]))
        ev = k["evidence"]
        if k["state"] == REFUSED:
            assert ev["kind"] == "fork" and k["id"] in ev["blocks"]
            assert row["evidence"] == f"fork at seq {ev['seq']}: " + " vs ".join(
                ev["blocks"])
        else:
            assert ev is None and row["evidence"] == ""
    by_state: dict[str, int] = {}
    for row in rows:
        by_state[row["state"]] = by_state.get(row["state"], 0) + int(row["amount_minor"])
    assert by_state == {s: v for s, v in doc["totals"].items() if v}
    (day,) = doc["days"].values()
    assert day == doc["totals"]


def test_till_mode_in_the_app_shows_todays_takings_the_exposure_and_writes_off(
        shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from textual.widgets import DataTable, Label

    from tests.test_app import settle, text
    from tui.app import TallyApp
    from tui.screens.modals import ConfirmScreen
    from tui.screens.takings import TakingsScreen
    from tui.service import WalletService

    alice, bob, till = shop
    tj(till.path, "till", "limits", "--payment", "30.00")
    clone = tmp_path / "clone"
    shutil.copytree(alice.path, clone)
    pay_to_till(alice.path, till.path, 1000)   # provisional, then refused (a fork)
    pay_to_till(bob.path, till.path, 3100)     # held: over 30.00

    async def go() -> None:
        app = TallyApp(WalletService.open(till.path))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("t")
            screen = app.screen
            assert isinstance(screen, TakingsScreen)
            assert "provisional 10.00 EUR" in text(app, "#totals")
            assert "held 31.00 EUR" in text(app, "#totals")
            till_gauge = str(screen.query_one("#label-till", Label).render())
            assert "10.00 EUR of 1000.00 EUR" in till_gauge
            table = screen.query_one("#takings", DataTable)
            assert table.row_count == 2
            w = Wallet.open(clone)
            try:  # the clone pays the till from the same slot: a fork arrives live
                to = Wallet.open(till.path)
                address = to.address()
                to.close()
                w.pay(address, 1200, PASSPHRASE)
                bodies = w.bodies(w.export_ids(address))
            finally:
                w.close()
            app.service.wallet.ingest_bodies(bodies)
            await settle(pilot, lambda: table.row_count == 3, "the clone's payment")
            assert "refused" in text(app, "#totals")
            statuses = [table.get_row_at(i)[3] for i in range(table.row_count)]
            table.move_cursor(row=statuses.index("held"))
            await pilot.press("w")
            await pilot.press("y")
            await settle(pilot, lambda: "only a refused" in text(app, "#said"), "refused")
            first_refused = [i for i, s in enumerate(statuses) if s == "refused"]
            table.move_cursor(row=first_refused[-1])  # the oldest: alice's 10.00
            await pilot.press("w")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await settle(pilot, lambda: "wrote off 10.00 EUR" in text(app, "#said"),
                         "written off")
            till_gauge = str(screen.query_one("#label-till", Label).render())
            assert "0.00 EUR of 1000.00 EUR" in till_gauge
        app.service.close()

    asyncio.run(go())


def test_sweep_moves_a_tills_final_takings_to_the_merchants_main_device(
        shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, _, merchant = shop
    till = pair_device(tmp_path, merchant.path, merchant.address, "till")
    assert "nothing final to sweep" in ok(till, "sweep")
    pay_to_till(alice.path, till, 1800)
    tj(till, "receive")
    doc = tj(till, "sweep")
    assert doc["amount_minor"] == 1800 and doc["to"] == key_text(
        parse_address(merchant.address).device)
    assert tj(till, "balance")["spendable_minor"] == 0
    alone = tmp_path / "alone"
    api_wallets(tmp_path / "g", alone)
    assert "no other device to sweep to" in check_failed(run(alone, "sweep"))


def test_a_refund_sends_back_part_or_all_of_a_taking_never_more(shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, _, till = shop
    pay_to_till(alice.path, till.path, 2000)
    tj(till.path, "receive")
    pid = tj(till.path, "takings")["takings"][0]["id"]
    doc = tj(till.path, "refund", pid, "5.00")
    assert (doc["amount_minor"], doc["left_minor"]) == (500, 1500)
    assert "of which 15.00 is left to refund; not 16.00" in check_failed(
        run(till.path, "refund", pid, "16.00"))
    doc = tj(till.path, "refund", pid)  # all that is left
    assert (doc["amount_minor"], doc["left_minor"]) == (1500, 0)
    assert "left to refund" in check_failed(run(till.path, "refund", pid))
    report = tj(till.path, "takings")
    assert report["takings"][0]["refunded_minor"] == 2000
    assert report["refunded"] == 2000 and report["net"] == 0
    w = Wallet.open(till.path)  # the refunds name the payment on the chain
    try:
        refunds = [w.ledger.blocks[i] for i in w.ledger.chain(w.device or b"")
                   if w.ledger.blocks[i].kind.name == "SEND"]
        assert [(b.amount, b.request_id) for b in refunds] == [
            (500, id_from_text(pid)), (1500, id_from_text(pid))]
        a = Wallet.open(alice.path)
        try:
            a.ingest_bodies(w.bodies(w.export_ids(parse_address(alice.address))))
            a.receive(PASSPHRASE)
            assert a.ledger.balance(parse_address(alice.address).device).spendable == 10_000
        finally:
            a.close()
    finally:
        w.close()
    clone = tmp_path / "clone"
    shutil.copytree(alice.path, clone)
    pay_to_till(alice.path, till.path, 300)
    pay_to_till(clone, till.path, 400)
    refused = [k["id"] for k in tj(till.path, "takings")["takings"]
               if k["state"] == "refused"]
    assert "nothing to refund" in check_failed(run(till.path, "refund", refused[0]))


def test_reports_over_more_ids_than_sqlite_binds_at_once() -> None:
    import sqlite3

    from wallet.takings import SCHEMA, SQL_IDS_MAX, Takings

    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    n = 2 * SQL_IDS_MAX + 7
    for i in range(n):
        pid, rid = i.to_bytes(32, "big"), i.to_bytes(8, "big")
        conn.execute("INSERT INTO takings VALUES (?, ?, ?, 100, ?, ?, 'provisional', '', 0, 0, "
                     "1, '', 1)", (pid, b"d", b"a", rid, 1000 + i))
        conn.execute("INSERT INTO requests VALUES (?, 100, '', 0, ?)", (rid, 1000 + i))
    conn.execute("INSERT INTO refunds VALUES (?, ?, 40, 2000)", (b"r", (5).to_bytes(32, "big")))
    t = Takings(conn, witnessed=True, settle_period_s=60)
    every = t.rows()
    assert len(every) == n and all(k.state == "final" for k in every)
    assert len(t.rows(ids=[k.id for k in every])) == n
    assert len(t.naming(r.id for r in t.requests())) == n
    assert t.refunds_of(k.id for k in every) == {(5).to_bytes(32, "big"): 40}
    assert t.exposure().total == 0, "final takings are not at risk"


def test_a_provisional_taking_leaves_the_exposure_when_a_late_vote_makes_it_final(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nacl.signing import SigningKey

    from wallet.encoding import Genesis, Policy, Vote

    monkeypatch.setenv("TALLY_PASSPHRASE", PASSPHRASE)
    witness, issuer = SigningKey.generate(), SigningKey.generate()
    genesis = Genesis("late", "EUR", 2, bytes(issuer.verify_key),
                      (bytes(witness.verify_key),), 1,
                      Policy(5000, 10000, 100000, 3600)).signed(issuer)

    def vote(block_id: bytes, w: Wallet) -> bytes:
        b = w.ledger.blocks[block_id]
        body = Vote(genesis.network_id, b.device, b.seq, b.id,
                    bytes(witness.verify_key)).body()
        return body + witness.sign(body).signature

    mint = Wallet.create_network(tmp_path / "mint", genesis, issuer, PASSPHRASE,
                                 limits=FAST_INSECURE)
    alice, till = (Wallet.join(tmp_path / n, genesis.raw) for n in ("alice", "till"))
    try:
        for w in (alice, till):
            w.init(PASSPHRASE, limits=FAST_INSECURE)
        issue, _ = mint.pay(alice.address(), 10_000, PASSPHRASE)
        alice.ingest_bodies(mint.bodies(mint.export_ids(alice.address())))
        alice.ingest_bodies([vote(issue.id, alice)])
        ((claim, _),) = alice.receive(PASSPHRASE)
        alice.ingest_bodies([vote(claim.id, alice)])
        paid, _ = alice.pay(till.address(), 2000, PASSPHRASE)
        till.ingest_bodies(alice.bodies(alice.export_ids(till.address())))
        (k,) = till.takings.rows()
        assert (k.decision, k.state) == (PROVISIONAL, PROVISIONAL)
        assert till.takings.exposure().total == 2000, "at risk until final"
        till.ingest_bodies([vote(paid.id, till)])  # the witness votes it, later
        (k,) = till.takings.rows()
        assert k.state == "final" and not k.exposed
        assert till.takings.exposure().total == 0, "final: nothing at risk"
    finally:
        for w in (mint, alice, till):
            w.close()


def test_the_payer_is_told_before_signing_that_the_till_will_hold_a_payment(shop) -> None:  # type: ignore[no-untyped-def]
    alice, _, till = shop
    tj(till.path, "till", "limits", "--payment", "10.00")
    uri = tj(till.path, "request", "12.00", "--id", "b1")["request"]
    p = run(alice.path, "pay", uri, "--yes", "--json")
    assert p.returncode == 0, p.stderr
    assert ("note: the till will hold this payment until it is final: 12.00 EUR is over "
            "its floor per payment 10.00 EUR") in p.stderr
    assert json.loads(p.stdout)["till_holds"].startswith("the till will hold")
    small = run(alice.path, "pay", till.address, "9.00", "--yes", "--json")
    assert json.loads(small.stdout)["till_holds"] is None and "will hold" not in small.stderr
    big = run(alice.path, "pay", till.address, "51.00", "--yes", "--json")  # the network's
    assert "over its floor per payment 50.00 EUR" in big.stderr


def test_a_report_tells_what_changed_since_the_last_one(shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, bob, till = shop
    clone = tmp_path / "clone"
    shutil.copytree(alice.path, clone)
    pay_to_till(alice.path, till.path, 1000)
    first = tj(till.path, "takings")["changed"]
    assert [(c["was"], c["now"]) for c in first] == [(None, PROVISIONAL)], "new"
    assert tj(till.path, "takings")["changed"] == [], "nothing moved since"
    pay_to_till(bob.path, till.path, 500)
    pay_to_till(clone, till.path, 700)  # forks alice's: refused
    doc = tj(till.path, "takings")
    amount = {k["id"]: k["amount_minor"] for k in doc["takings"]}
    assert sorted((amount[c["id"]], c["was"], c["now"]) for c in doc["changed"]) == [
        (500, None, PROVISIONAL), (700, None, REFUSED), (1000, PROVISIONAL, REFUSED)]
    moved = tj(till.path, "takings", "--status", "refused")
    assert "changed" not in moved, "a status picked out is no report"
    assert tj(till.path, "takings")["changed"] == []


def test_a_payment_id_that_starts_with_a_dash_is_taken_as_an_id(shop) -> None:  # type: ignore[no-untyped-def]
    _, _, till = shop
    dashed = "-" + "A" * 42  # base64url: ids may start with "-"
    said = check_failed(run(till.path, "takings", "write-off", dashed))
    assert "no taking has that id here" in said, said  # parsed as an id, not an option
    said = check_failed(run(till.path, "refund", dashed, "1.00"))
    assert "no taking has that id here" in said, said


def test_with_no_witnesses_a_held_payment_turns_provisional_once_the_limits_admit_it(
        shop) -> None:  # type: ignore[no-untyped-def]
    """q = 0: nothing is ever certified, so a held send is taken (turns provisional,
    and the till claims it) once it is valid here and the limits admit it."""
    alice, bob, till = shop
    tj(till.path, "till", "limits", "--till", "50.00")
    pay_to_till(alice.path, till.path, 4000)  # provisional: till 40.00
    w = Wallet.open(bob.path)
    to = Wallet.open(till.path)
    try:
        paid, _ = w.pay(to.address(), 500, PASSPHRASE)
        everything = w.export_ids(to.address())
        chain = w.ledger.chain(w.device or b"")  # bob's chain, not the issue funding it
        to.ingest_bodies(w.bodies(chain))  # pending here: what funds it is missing
        [k] = [k for k in to.takings.rows() if k.id == paid.id]
        assert (k.decision, k.state) == (HELD, HELD) and "not valid here yet" in k.reason
        assert to.receive(PASSPHRASE) == [] or all(
            b.claim != paid.id for b, _ in to.receive(PASSPHRASE)), "held: not claimed"
        to.ingest_bodies(w.bodies(everything))  # what funds it: valid, and 45.00 ≤ 50.00
        [k] = [k for k in to.takings.rows() if k.id == paid.id]
        assert (k.decision, k.state) == (PROVISIONAL, PROVISIONAL), k
        assert k.reason.startswith("provisional: 5.00 EUR ≤ 50.00 EUR a payment")
        assert paid.id in {b.claim for b, _ in to.receive(PASSPHRASE)}, "taken: claimed"

        big, _ = w.pay(to.address(), 1000, PASSPHRASE)  # held: till 45.00 + 10.00 > 50.00
        to.ingest_bodies(w.bodies(w.export_ids(to.address())))
        assert to.takings.rows(ids=[big.id])[0].decision == HELD
        assert big.id not in {b.claim for b, _ in to.receive(PASSPHRASE)}
        later = time.time() + to.genesis.policy.settle_period_s + 1  # the rest settled
        with to.store.transaction():
            turned = to.takings.redecide_held(to.till_limits(), money=str, name=str,
                                              now=later)
        assert [t.id for t in turned] == [big.id]
        k = to.takings.rows(ids=[big.id])[0]
        assert (k.decision, k.taken_at) == (PROVISIONAL, int(later)), \
            "its settle period runs from when it was taken"
    finally:
        w.close()
        to.close()


def test_a_payment_that_came_before_its_payers_open_is_decided_when_the_open_comes(
        shop) -> None:  # type: ignore[no-untyped-def]
    alice, _, till = shop
    w = Wallet.open(alice.path)
    to = Wallet.open(till.path)
    try:
        paid, _ = w.pay(to.address(), 700, PASSPHRASE)
        to.ingest_bodies(w.bodies([paid.id]))  # whose device this is, the till can't know
        assert to.takings.rows() == []
        to.ingest_bodies(w.bodies(w.export_ids(to.address())))
        [k] = to.takings.rows()
        assert (k.id, k.decision, k.amount) == (paid.id, PROVISIONAL, 700)
        to.ingest_bodies(w.bodies(w.export_ids(to.address())))  # again: decided once
        assert len(to.takings.rows()) == 1
    finally:
        w.close()
        to.close()


def test_till_mode_refunds_the_highlighted_taking_and_nets_it(shop) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from textual.widgets import DataTable, Input

    from tests.test_app import settle, text
    from tui.app import TallyApp
    from tui.screens.modals import AskScreen
    from tui.service import WalletService

    alice, _, till = shop
    pay_to_till(alice.path, till.path, 2000)
    tj(till.path, "receive")  # taken and claimed: with no witnesses, spendable here

    async def go() -> None:
        app = TallyApp(WalletService.open(till.path))
        async with app.run_test(size=(110, 30)) as pilot:
            await pilot.press("t")
            table = app.screen.query_one("#takings", DataTable)
            assert table.row_count == 1
            await pilot.press("r")
            ask = app.screen
            assert isinstance(ask, AskScreen) and "20.00 EUR left" in ask.question
            field = ask.query_one("#answer", Input)
            assert field.value == "20.00", "all that is left, by default"
            field.value = "25.00"
            await pilot.press("enter")
            await settle(pilot, lambda: "left to refund" in text(app, "#said"), "refused")
            await pilot.press("r")
            app.screen.query_one("#answer", Input).value = "5.00"
            await pilot.press("enter")
            await settle(pilot, lambda: "refunded 5.00 EUR" in text(app, "#said"), "refund")
            assert "refunded 5.00 EUR   net 15.00 EUR" in text(app, "#totals")
            assert "(refunded 5.00 EUR)" in str(table.get_row_at(0)[3])
        app.service.close()

    asyncio.run(go())
    w = Wallet.open(till.path)
    try:
        [k] = w.takings.rows()
        assert w.takings.refunded(k.id) == 500
    finally:
        w.close()


def test_a_store_made_before_takings_kept_statuses_gets_them_on_opening(shop) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    alice, _, till = shop
    pay_to_till(alice.path, till.path, 900)
    before = tj(till.path, "takings")["takings"]
    conn = sqlite3.connect(till.path / "wallet.db")
    conn.executescript(  # the table as an older store made it
        "CREATE TABLE old AS SELECT id, payer_device, payer_account, amount, request_id, "
        "taken_at, decision, reason, written_off, open FROM takings; DROP TABLE takings; "
        "ALTER TABLE old RENAME TO takings;")
    conn.close()
    assert tj(till.path, "takings")["takings"] == before
    assert tj(till.path, "doctor")["ok"]
    conn = sqlite3.connect(till.path / "wallet.db")
    conn.execute("UPDATE takings SET status_state = 3")  # a copy gone wrong
    conn.commit()
    conn.close()
    p = run(till.path, "doctor")
    assert p.returncode != 0 and "status kept as (3, None, 1), the entry has (1, None, 1)" in \
        p.stdout


def test_a_payment_beside_its_devices_revoke_is_refused_with_the_revoke_as_evidence(
        shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """q = 0: the account's revoke beats the device's block at the same slot, so a
    payment the revoked device signed there is refused, and the revoke is its evidence."""
    alice, _, till = shop
    phone = pair_device(tmp_path, alice.path, alice.address, "phone")
    pw, aw = Wallet.open(phone), Wallet.open(alice.path)
    try:
        aw.pay(pw.address(), 3000, PASSPHRASE)  # escrow for the phone
        pw.ingest_bodies(aw.bodies(aw.export_ids(pw.address())))
        pw.receive(PASSPHRASE)
        aw.ingest_bodies(pw.bodies(pw.export_ids(None)))  # alice sees the phone's claim
        phone_device = pw.device or b""
        revoke, _ = aw.revoke(phone_device, aw.device or b"", PASSPHRASE)  # phone "lost"
    finally:
        pw.close()
        aw.close()
    pay_to_till(phone, till.path, 1000)  # the phone pays at the revoke's slot
    to, aw = Wallet.open(till.path), Wallet.open(alice.path)
    try:
        to.ingest_bodies(aw.bodies(aw.export_ids(to.address())) + aw.bodies([revoke.id]))
    finally:
        to.close()
        aw.close()
    [k] = tj(till.path, "takings")["takings"]
    assert (k["state"], k["decision"]) == (REFUSED, PROVISIONAL)
    ev = k["evidence"]
    assert ev["kind"] == "revoke" and set(ev["blocks"]) == {k["id"], id_text(revoke.id)}
    assert ev["device"] == key_text(phone_device)


def test_till_mode_on_the_merchants_main_device_shows_each_tills_takings(
        shop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from textual.widgets import DataTable

    from tests.test_app import settle, text
    from tui.app import TallyApp
    from tui.service import WalletService

    alice, bob, main = shop
    main_address = tj(main.path, "address")["address"]
    tills = [pair_device(tmp_path, main.path, main_address, n) for n in ("north", "south")]
    pay_to_till(alice.path, tills[0], 1100)
    pay_to_till(bob.path, tills[1], 2200)
    for t in tills:
        tj(t, "receive")  # taken: claimed
        w, m = Wallet.open(t), Wallet.open(main.path)
        try:
            m.ingest_bodies(w.bodies(w.export_ids(None)))
        finally:
            w.close()
            m.close()

    async def go() -> None:
        app = TallyApp(WalletService.open(main.path))
        async with app.run_test(size=(110, 30)) as pilot:
            await pilot.press("t")
            table = app.screen.query_one("#takings", DataTable)
            await settle(pilot, lambda: table.row_count == 2, "both tills' takings")
            froms = sorted(str(table.get_row_at(i)[1]).split(" ← ")[0] for i in range(2))
            assert froms == ["north", "south"]
            assert "provisional 33.00 EUR" in text(app, "#totals")
        app.service.close()

    asyncio.run(go())
