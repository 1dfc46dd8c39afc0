"""The app's flows beyond paying, driven headless by Textual's Pilot over real wallet
homes: first run (join a network, create an account only once three words of its
recovery phrase are typed back, restore, pair), Settings saved in the home, the keys
locked after the idle time, pairing and revoking in Devices, the history's filters,
detail, copying and CSV export, a refused payment's fraud proof in its detail, and the
offer to ask a sibling device for the money this one lacks.
"""

from __future__ import annotations

import asyncio
import csv
import shutil
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from textual.widgets import DataTable, Input, OptionList, Select

from tests.clikit import PASSPHRASE, api_fund, api_network, api_wallets
from tests.test_app import settle, text
from tui.app import TallyApp
from tui.screens.devices import DevicesScreen
from tui.screens.first_run import (
    AccountFormScreen,
    PairRequestScreen,
    PhraseScreen,
    WelcomeScreen,
)
from tui.screens.history import HistoryScreen, HistoryView
from tui.screens.home import HomeScreen
from tui.screens.modals import AskScreen, ConfirmScreen, PassphraseScreen, TextScreen
from tui.screens.pay import PayScreen
from tui.screens.request import RequestScreen
from tui.screens.settings import SettingsScreen
from tui.service import WalletService, new_recovery_phrase
from wallet import keys as keyfiles
from wallet.address import parse_address
from wallet.encoding import Kind, id_text, short
from wallet.unlocked import UnlockedKeys
from wallet.wallet import Wallet


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A q = 0 network; alice funded with 100.00 EUR, bob with nothing."""
    monkeypatch.setenv("TALLY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv(keyfiles.FAST_KDF_ENV, "1")
    api_network(tmp_path, "flows")
    alice, bob = api_wallets(tmp_path / "g", tmp_path / "alice", tmp_path / "bob")
    api_fund(tmp_path / "issuer", alice, 10_000)
    return alice, bob


async def choose(pilot, key: str) -> None:  # type: ignore[no-untyped-def]
    """Pick the first-run choice with that id."""
    options = pilot.app.screen.query_one("#choices", OptionList)
    ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
    options.highlighted = ids.index(key)
    await pilot.press("enter")
    await pilot.pause()


def test_first_run_joins_then_creates_an_account_once_the_phrase_is_typed_back(
        net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TALLY_PASSPHRASE")  # the person chooses one in the form
    home = tmp_path / "newcomer"

    async def go() -> None:
        app = TallyApp(None, home=home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, WelcomeScreen)
            assert "no wallet" in text(app, "#intro")
            await choose(pilot, "join")
            assert isinstance(app.screen, AskScreen)
            await pilot.press(*str(tmp_path / "nowhere.genesis"), "enter")
            await pilot.pause()
            assert "cannot read the genesis file" in text(app, "#problem")
            assert not Wallet.exists(home), "a failed join stores nothing"
            await choose(pilot, "join")
            await pilot.press(*str(tmp_path / "g"), "enter")
            await pilot.pause()
            assert "This wallet is on flows" in text(app, "#intro")
            await choose(pilot, "create")
            assert isinstance(app.screen, AccountFormScreen)
            await pilot.press("tab", *"secret one", "tab", *"secret two", "enter")
            await pilot.pause()
            assert "differ" in text(app, "#problem")
            app.screen.query_one("#again", Input).value = "secret one"
            await pilot.press("enter")
            await pilot.pause()
            phrase_screen = app.screen
            assert isinstance(phrase_screen, PhraseScreen)
            words = phrase_screen.phrase.split()
            assert "Write these 24 words down" in text(app, "#words")
            await pilot.press("enter")  # written down: hide them, ask three back
            await pilot.pause()
            assert not phrase_screen.query_one("#words").display
            first, *rest = phrase_screen.asked
            await pilot.press(*"wrong", *(["tab"] * 1))
            for i in rest:
                phrase_screen.query_one(f"#word{i}", Input).value = words[i]
            await pilot.press("enter")
            await pilot.pause()
            assert f"word {first + 1} is not wrong" in text(app, "#problem")
            assert Wallet.open(home).device is None, "nothing stored before the check"
            phrase_screen.query_one(f"#word{first}", Input).value = words[first]
            phrase_screen.query_one(f"#word{first}", Input).focus()
            await pilot.press("enter")
            await settle(pilot, lambda: isinstance(app.screen, HomeScreen), "Home")
            assert "0.00 EUR spendable" in text(app, "#account")
            return phrase_screen.phrase

    phrase = asyncio.run(go())
    w = Wallet.open(home)
    try:
        seed = keyfiles.seed_from_phrase(phrase)
        assert w.account == bytes(SigningKey(seed).verify_key), "the phrase restores it"
        assert w.device is not None and w.status(w.ledger.chain(w.device)[0]) is not None
        w.unlock("secret one", UnlockedKeys(), ("device",))  # sealed with that passphrase
    finally:
        w.close()


def test_first_run_restores_an_account_as_a_new_device(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phrase = new_recovery_phrase()
    home = tmp_path / "restored"
    Wallet.join(home, (tmp_path / "g").read_bytes()).close()

    async def go() -> None:
        app = TallyApp(WalletService.open(home))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await choose(pilot, "restore")
            assert not app.screen.query("#passphrase"), \
                "TALLY_PASSPHRASE is set: no passphrase asked"
            await pilot.press(*"not a phrase", "enter")
            await settle(pilot, lambda: "word" in text(app, "#problem")
                         or "phrase" in text(app, "#problem"), "the phrase refused")
            assert Wallet.open(home).device is None
            app.screen.query_one("#phrase", Input).value = phrase
            await pilot.press("enter")
            await settle(pilot, lambda: isinstance(app.screen, HomeScreen), "Home")
        app.service.close()

    asyncio.run(go())
    w = Wallet.open(home)
    try:
        assert w.account == bytes(SigningKey(keyfiles.seed_from_phrase(phrase)).verify_key)
    finally:
        w.close()


def test_a_restored_account_offers_to_revoke_the_devices_still_open(
        net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, _ = net
    home = tmp_path / "alice-again"
    w = Wallet.join(home, (tmp_path / "g").read_bytes())
    a = Wallet.open(alice.path)
    try:
        w.restore(alice.phrase, PASSPHRASE, label="restored", limits=keyfiles.FAST_INSECURE)
        w.ingest_bodies(a.bodies(a.export_ids(None)))  # what sync would bring back
    finally:
        a.close()
        w.close()

    async def go() -> None:
        app = TallyApp(WalletService.open(home))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            assert "still has 1 other device(s) open (main)" in text(app, "#hint")
            await pilot.press("d")
            table = app.screen.query_one("#devices", DataTable)
            labels = [table.get_row_at(i)[1] for i in range(table.row_count)]
            table.move_cursor(row=labels.index("main"))
            await pilot.press("v", "y")
            await settle(pilot, lambda: "revoked" in text(app, "#said"), "revoked")
            await pilot.press("escape")
            await settle(pilot, lambda: text(app, "#hint") == "", "the offer gone")
        app.service.close()

    asyncio.run(go())


def test_pairing_a_new_device_then_revoking_it_in_devices(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, _ = net
    laptop = tmp_path / "laptop"
    Wallet.join(laptop, (tmp_path / "g").read_bytes()).close()

    async def pair() -> str:
        app = TallyApp(WalletService.open(laptop))
        async with app.run_test(size=(80, 30)) as pilot:
            await pilot.pause()
            await choose(pilot, "pair")
            app.screen.query_one("#label", Input).value = "laptop"
            await pilot.press(*alice.address, "enter")
            await settle(pilot, lambda: isinstance(app.screen, PairRequestScreen),
                         "the pairing request")
            request = app.screen.request_text
            assert request in text(app, "#request")
            assert any(c in text(app, "#qr") for c in "█▀▄"), "the request as a QR code"
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, HomeScreen), "the device waits on Home"
        app.service.close()
        return request

    request = asyncio.run(pair())

    async def add_and_revoke() -> None:
        app = TallyApp(WalletService.open(alice.path))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("d")
            assert isinstance(app.screen, DevicesScreen)
            await pilot.press("a")
            assert isinstance(app.screen, AskScreen)
            await pilot.press(*"tally-pair:garbage", "enter")
            await settle(pilot, lambda: text(app, "#said") != "", "the refusal")
            assert "pair" in text(app, "#said").lower()
            await pilot.press("a")
            app.screen.query_one("#answer", Input).value = request
            await pilot.press("enter")
            await settle(pilot, lambda: "added device" in text(app, "#said"), "added")
            table = app.screen.query_one("#devices", DataTable)
            await settle(pilot, lambda: table.row_count == 2, "two devices")
            labels = [table.get_row_at(i)[1] for i in range(table.row_count)]
            table.move_cursor(row=labels.index("laptop"))
            await pilot.press("v")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await settle(pilot, lambda: "revoked" in text(app, "#said"), "revoked")
        app.service.close()

    asyncio.run(add_and_revoke())
    w = Wallet.open(alice.path)
    try:
        kinds = [r.kind for r in w.history(limit=100)]
        assert Kind.REVOKE in kinds and kinds.count(Kind.OPEN) == 2
    finally:
        w.close()


def test_settings_are_saved_in_the_home_and_the_keys_lock_after_the_idle_time(
        net, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    alice, bob = net
    now = [1000.0]

    async def go() -> None:
        keys = UnlockedKeys(60, clock=lambda: now[0])
        svc = WalletService(Wallet.open(alice.path), keys=keys)
        app = TallyApp(svc)
        async with app.run_test(size=(80, 30)) as pilot:
            await pilot.press("s")
            assert isinstance(app.screen, SettingsScreen)
            idle = app.screen.query_one("#idle", Input)
            assert idle.value == "5m"
            idle.value = "3s"
            await pilot.press("enter")
            await pilot.pause()
            assert "from 10 to 86400" in text(app, "#said")
            idle.value = "90s"
            await pilot.press("enter")
            await pilot.pause()
            assert "lock after 90s" in text(app, "#said") and keys.idle_lock_s == 90
            app.screen.query_one("#theme", Select).value = "textual-light"
            await pilot.pause()
            assert app.theme == "textual-light"
            url = app.screen.query_one("#url", Input)
            url.focus()
            await pilot.press(*"http://nope", "enter")
            await pilot.pause()
            assert "ws://" in text(app, "#said"), "not a websocket URL: refused"
            url.value = "ws://127.0.0.1:9"
            await pilot.press("enter")
            await pilot.pause()
            table = app.screen.query_one("#links", DataTable)
            assert table.row_count == 1
            table.focus()
            await pilot.press("x")
            await pilot.pause()
            assert table.row_count == 0 and "forgot" in text(app, "#said")
            await pilot.press("escape")

            monkeypatch.delenv("TALLY_PASSPHRASE")
            svc.unlock(PASSPHRASE)
            app._check_lock()
            assert not svc.locked
            now[0] += 91  # idle past the 90 s just saved
            app._check_lock()
            await pilot.pause()
            assert svc.locked and "locked" in app.sub_title
            assert any("locked after the idle time" in n.message for n in app._notifications)
            await pilot.press("p")
            app.screen.query_one("#to", Input).value = bob.address
            await pilot.press("tab", *"1", "enter", "y")
            await pilot.pause()
            assert isinstance(app.screen, PassphraseScreen), "locked: the passphrase asked"
        svc.close()

    asyncio.run(go())
    w = Wallet.open(alice.path)
    try:
        saved = w.settings()
        assert (saved.idle_lock_s, saved.theme) == (90, "textual-light")
        assert w.links() == {}
    finally:
        w.close()
    svc = WalletService.open(alice.path)
    try:
        assert svc.keys.idle_lock_s == 90, "a new service takes the saved idle time"
    finally:
        svc.close()


def test_history_filters_by_kind_and_counterparty_shows_detail_copies_and_exports(
        net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, bob = net
    carol, = api_wallets(tmp_path / "g", tmp_path / "carol")
    w = Wallet.open(alice.path)
    try:
        for i in range(3):
            w.pay(parse_address(bob.address), 100 + i, PASSPHRASE)
        w.pay(parse_address(carol.address), 500, PASSPHRASE, memo="for carol")
    finally:
        w.close()
    out = tmp_path / "export" / "history.csv"
    out.parent.mkdir()

    async def go() -> None:
        app = TallyApp(WalletService.open(alice.path))
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("h")
            screen = app.screen
            assert isinstance(screen, HistoryScreen)
            view = screen.query_one(HistoryView)
            await pilot.pause()
            assert len(view.rows) == 6  # open, receive of the funds, four sends
            screen.query_one("#kind", Select).value = "receive"
            await pilot.pause()
            assert [r.kind for r in view.rows] == [Kind.RECEIVE]
            screen.query_one("#kind", Select).clear()
            screen.query_one("#counterparty", Input).value = short(
                parse_address(bob.address).device)
            await pilot.pause()
            assert len(view.rows) == 3 and all(r.amount in (100, 101, 102) for r in view.rows)
            screen.query_one("#counterparty", Input).value = carol.address
            await pilot.pause()
            (row,) = view.rows
            assert row.amount == 500
            view.focus()
            await pilot.press("c")
            assert app.clipboard == id_text(row.id)
            await pilot.press("a")
            assert app.clipboard == carol.address
            await pilot.press("enter")
            assert isinstance(app.screen, TextScreen)
            detail = app.screen.text
            assert id_text(row.id) in detail and "5.00 EUR" in detail
            assert "for carol" in detail and "no witnesses" in detail
            await pilot.press("escape")
            screen.query_one("#counterparty", Input).value = short(
                parse_address(bob.address).device)
            await pilot.pause()
            view.focus()
            await pilot.press("e")
            assert isinstance(app.screen, AskScreen)
            app.screen.query_one("#answer", Input).value = str(out)
            await pilot.press("enter")
            await settle(pilot, lambda: out.exists(), "the CSV file")
        app.service.close()

    asyncio.run(go())
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["amount_minor"] for r in rows] == ["102", "101", "100"]
    assert {r["kind"] for r in rows} == {"send"} and rows[0]["amount"] == "1.02"
    assert all(r["counterparty"].startswith(short(parse_address(bob.address).device))
               for r in rows)


def test_a_refused_payment_shows_its_fraud_proof_in_the_detail(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, bob = net
    clone = tmp_path / "clone"
    shutil.copytree(alice.path, clone)  # a cloned disk: the same device key twice
    to = parse_address(bob.address)
    sides = []
    for home, minor in ((alice.path, 100), (clone, 200)):
        w = Wallet.open(home)
        try:
            w.pay(to, minor, PASSPHRASE)
            sides.append(w.bodies(w.export_ids(to)))
        finally:
            w.close()

    async def go() -> None:
        app = TallyApp(WalletService.open(bob.path))
        async with app.run_test(size=(120, 30)) as pilot:
            for side in sides:
                app.service.wallet.ingest_bodies(side)
            await pilot.press("h")
            screen = app.screen
            screen.query_one("#status", Select).value = "conflicted"
            await pilot.pause()
            view = screen.query_one(HistoryView)
            assert len(view.rows) == 2 and all(r.amount in (100, 200) for r in view.rows)
            view.focus()
            await pilot.press("enter")
            detail = app.screen.text
            assert "fraud" in detail and "signed 2 different blocks at slot 2" in detail
            assert all(id_text(r.id) in detail for r in view.rows), "both sides named"
        app.service.close()

    asyncio.run(go())


def test_pay_offers_to_ask_a_sibling_device_for_what_this_one_lacks(
        net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, bob = net
    laptop = tmp_path / "laptop"
    lw = Wallet.join(laptop, (tmp_path / "g").read_bytes())
    aw = Wallet.open(alice.path)
    try:
        request = lw.pair_request(PASSPHRASE, parse_address(alice.address), label="laptop",
                                  limits=keyfiles.FAST_INSECURE)
        aw.pair_add(request, PASSPHRASE)
        lw.ingest_bodies(aw.bodies(aw.export_ids(lw.address() if lw.account else None)))
    finally:
        aw.close()
        lw.close()

    async def go() -> None:
        app = TallyApp(WalletService.open(laptop))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("p")
            app.screen.query_one("#to", Input).value = bob.address
            await pilot.press("tab", *"30")
            await pilot.pause()
            problem = text(app, "#problem")
            assert "this device can spend 0.00 EUR" in problem
            assert "main holds enough" in problem and "30.00 EUR" in problem
            await pilot.press("ctrl+o")
            await pilot.pause()
            req = app.screen
            assert isinstance(req, RequestScreen)
            assert req.query_one("#amount", Input).value == "30.00"
            assert "move to laptop" in req.query_one("#memo", Input).value
            app.screen.query_one("#amount", Input).focus()
            await pilot.press("enter")
            await pilot.pause()
            assert req.request is not None and req.request.amount == 3000
            assert req.request.address.device == app.service.wallet.device
            await pilot.press("escape")
            assert isinstance(app.screen, PayScreen)
            app.screen.query_one("#amount", Input).value = "300"  # more than all: no offer
            await pilot.pause()
            assert "holds enough" not in text(app, "#problem")
        app.service.close()

    asyncio.run(go())


def test_many_payments_arriving_at_once_are_shown_once_and_summed_up(
        net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, bob = net
    api_fund(tmp_path / "issuer", bob, 5_000)
    w = Wallet.open(bob.path)
    try:
        for i in range(6):
            w.pay(parse_address(alice.address), 100 + i, PASSPHRASE)
        bodies = w.bodies(w.export_ids(parse_address(alice.address)))
    finally:
        w.close()

    async def go() -> None:
        app = TallyApp(WalletService.open(alice.path))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            home = app.screen
            assert isinstance(home, HomeScreen)
            redraws = []
            original = home.refresh_balances
            home.refresh_balances = lambda: (redraws.append(1), original())[1]  # type: ignore[method-assign]
            app.service.wallet.ingest_bodies(bodies)  # one commit: many events
            await settle(pilot, lambda: redraws, "Home redrawn")
            await pilot.pause()
            messages = [n.message for n in app._notifications]
            arrived = [m for m in messages if "arrived from" in m]
            assert len(arrived) == 3, messages
            assert any(m.startswith("3 more payments and forks came in") for m in messages)
            assert len(redraws) == 1, "one redraw for the whole batch"
            row = home.query_one("#devices", DataTable).get_row_at(0)
            assert row[-1] == "6.15 EUR", "the six payments, to claim, on Home"
        app.service.close()

    asyncio.run(go())
