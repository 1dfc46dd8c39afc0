"""The terminal app, driven headless by Textual's Pilot over a real wallet home.

A funded wallet on a q = 0 network: Home shows the account's money and its devices
and says it is offline; ``p`` opens Pay, where the amount is checked as it is typed,
Tab moves between fields and Enter submits; the confirmation takes ``y`` or Enter, and
the payment is signed (in the store) with its status shown; a locked wallet with no
passphrase in the environment asks for one; a payment arriving is a notification; ``r``
makes a request, drawn as a URI and a QR code, that turns "paid" when it is paid; ``h``
reads the history a page at a time; ``f`` explains the fraud proofs as forks arrive.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static

from tests.clikit import (
    PASSPHRASE,
    api_fund,
    api_network,
    api_wallets,
    check_failed,
    command,
    ok,
    run,
    tally_env,
    tj,
)
from tests.test_relay import relay_command, relay_env, start_relay
from tests.test_sync_client import free_port
from tui.app import TallyApp
from tui.screens import history as history_mod
from tui.screens.history import HistoryView
from tui.screens.home import HomeScreen
from tui.screens.modals import ConfirmScreen, PassphraseScreen
from tui.screens.pay import PayScreen
from tui.screens.request import RequestScreen
from tui.service import WalletService
from wallet.address import PaymentRequest, parse_address, parse_request
from wallet.wallet import Wallet


@pytest.fixture
def funded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TALLY_PASSPHRASE", PASSPHRASE)
    api_network(tmp_path, "app")
    alice, bob = api_wallets(tmp_path / "g", tmp_path / "alice", tmp_path / "bob")
    api_fund(tmp_path / "issuer", alice, 10_000)
    return alice, bob


def text(app: TallyApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def settle(pilot, until, what: str, timeout_s: float = 10) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.05)):
        await pilot.pause()
        if until():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_home_shows_the_money_and_says_offline(funded) -> None:  # type: ignore[no-untyped-def]
    alice, _ = funded

    async def go() -> None:
        app = TallyApp(WalletService.open(alice.path))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, HomeScreen)
            assert "100.00 EUR spendable" in text(app, "#account")
            assert "OFFLINE" in text(app, "#links")
            assert app.screen.query_one("#devices", DataTable).row_count == 1
        app.service.close()

    asyncio.run(go())


def test_pay_checks_as_typed_confirms_and_pays(funded) -> None:  # type: ignore[no-untyped-def]
    alice, bob = funded

    async def go() -> None:
        app = TallyApp(WalletService.open(alice.path))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("p")
            assert isinstance(app.screen, PayScreen)
            app.screen.query_one("#to", Input).value = bob.address
            await pilot.press("tab", *"500")  # over this device's 100.00
            await pilot.pause()
            assert "this device can spend 100.00 EUR" in text(app, "#problem")
            amount = app.screen.query_one("#amount", Input)
            amount.value = ""
            await pilot.press(*"12.5", "tab", *"lunch", "enter")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            assert "12.50 EUR" in app.screen.question and "lunch" in app.screen.question
            await pilot.press("y")
            pay = app.screen
            assert isinstance(pay, PayScreen)
            await settle(pilot, lambda: pay.paid is not None, "the payment")
            assert "accepted, no witness" in text(app, "#status")
            await pilot.press("escape")
            assert "87.50 EUR spendable" in text(app, "#account")
        app.service.close()

    asyncio.run(go())
    w = Wallet.open(alice.path)
    try:
        paid = [r for r in w.history() if r.kind.name == "SEND"]
        assert [r.amount for r in paid] == [1250]
    finally:
        w.close()


def test_a_request_fills_the_form_and_a_locked_wallet_asks_for_the_passphrase(
        funded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    alice, bob = funded
    monkeypatch.delenv("TALLY_PASSPHRASE")
    to = parse_address(bob.address)

    async def go() -> None:
        app = TallyApp(WalletService.open(alice.path))
        req = PaymentRequest(app.service.wallet.network, to, 300, request_id=b"q" * 16,
                             memo="tea", floor_payment=500)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("p")
            app.screen.query_one("#to", Input).value = req.uri()
            await pilot.pause()
            assert app.screen.query_one("#amount", Input).value == "3.00"
            assert app.screen.query_one("#memo", Input).value == "tea"
            app.screen.query_one("#to", Input).focus()
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            assert "5.00 EUR a payment" in app.screen.question
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, PassphraseScreen)
            await pilot.press(*PASSPHRASE, "enter")
            pay = app.screen
            assert isinstance(pay, PayScreen)
            await settle(pilot, lambda: pay.paid is not None, "the payment")
            assert pay.paid is not None and pay.paid.request_id == b"q" * 16
            assert not app.service.locked, "unlocked once, for the next payments"
        app.service.close()

    asyncio.run(go())


def test_a_payment_arriving_is_a_notification(funded) -> None:  # type: ignore[no-untyped-def]
    alice, bob = funded

    async def go() -> None:
        app = TallyApp(WalletService.open(bob.path))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            a = Wallet.open(alice.path)
            try:
                to = parse_address(bob.address)
                a.pay(to, 700, PASSPHRASE)
                bodies = a.bodies(a.export_ids(to))
            finally:
                a.close()
            app.service.wallet.ingest_bodies(bodies)
            await pilot.pause()
            said = [n.message for n in app._notifications]
            assert any("7.00 EUR arrived from" in m for m in said), said
            table = app.screen.query_one("#devices", DataTable)
            assert "7.00 EUR" in [str(c) for c in table.get_row_at(0)], "its to-claim column"
        app.service.close()

    asyncio.run(go())


def test_a_request_shows_its_uri_and_qr_and_turns_paid(funded) -> None:  # type: ignore[no-untyped-def]
    alice, bob = funded

    async def go() -> None:
        app = TallyApp(WalletService.open(bob.path))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("r")
            screen = app.screen
            assert isinstance(screen, RequestScreen)
            await pilot.press(*"0", "enter")
            assert "must be more than 0" in text(app, "#problem")
            screen.query_one("#amount", Input).value = "7.00"
            await pilot.press("tab", *"tea", "enter")
            req = screen.request
            assert req is not None and (req.amount, req.memo) == (700, "tea")
            assert parse_request(text(app, "#uri")) == req
            assert text(app, "#qr").count("\n") >= 10, "a QR code, drawn"
            assert "waiting for 7.00 EUR" in text(app, "#state")
            a = Wallet.open(alice.path)
            try:
                got = parse_request(req.uri())
                a.pay(got.address, got.amount, PASSPHRASE, memo=got.memo, request=got)
                bodies = a.bodies(a.export_ids(got.address))
            finally:
                a.close()
            app.service.wallet.ingest_bodies(bodies)
            await pilot.pause()
            assert screen.paid and "paid" in text(app, "#state")
        app.service.close()

    asyncio.run(go())


def test_history_reads_pages_only_as_it_scrolls_and_filters(
        funded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    alice, bob = funded
    monkeypatch.setattr(history_mod, "PAGE_ROWS", 4)
    w = Wallet.open(alice.path)
    try:
        to = parse_address(bob.address)
        for i in range(30):
            w.pay(to, 100 + i, PASSPHRASE)
    finally:
        w.close()

    async def go() -> None:
        app = TallyApp(WalletService.open(alice.path))
        async with app.run_test(size=(100, 20)) as pilot:
            await pilot.press("h")
            await pilot.pause()
            view = app.screen.query_one(HistoryView)
            held = len(app.service.history(limit=1000))
            assert held == 32  # 30 sends, the receive of the funds, the open
            assert len(view.rows) < held, "only what the screen needs was read"
            assert "-1.29 EUR to" in view._line(view.rows[0]), "newest first"
            for _ in range(10):
                await pilot.press("pagedown")
            await pilot.pause()
            assert view.done and len(view.rows) == held
            assert view.pages_read == -(-held // 4) + (held % 4 == 0)
            await pilot.click("#status")
            select = app.screen.query_one("#status", Select)
            select.value = "final"  # nothing is final on a network without witnesses
            await pilot.pause()
            assert view.rows == [] and view.done
            select.value = "accepted"
            await pilot.pause()
            assert len(view.rows) > 0
        app.service.close()

    asyncio.run(go())


def test_frauds_explains_a_fork_as_it_arrives(funded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, bob = funded
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
        async with app.run_test(size=(100, 30)) as pilot:
            app.service.wallet.ingest_bodies(sides[0])
            await pilot.press("f")
            await pilot.pause()
            assert "No fraud proofs" in str(app.screen.query_one(".none", Static).render())
            app.service.wallet.ingest_bodies(sides[1])
            await pilot.pause()
            (shown,) = app.screen.query(".proof")
            said = str(shown.render())
            assert "signed 2 different blocks at slot 2" in said
            assert "both sides are refused" in said  # no witnesses on this network
            assert any("fraud proof" in n.message for n in app._notifications)
        app.service.close()

    asyncio.run(go())


def witnessed_network(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A network with one witness, made by real commands: the witness key file (for
    ``tally-relay --witness-key``) and the genesis file; the issuer in
    ``tmp_path/issuer``."""
    key = tmp_path / "witness.key"
    p = subprocess.run(relay_command("keygen", key, "--kind", "witness"), env=relay_env(),
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    genesis = Path(tj(tmp_path / "issuer", "network", "create", name, "--currency", "EUR",
                      "--witness", key)["genesis_file"])
    return key, genesis


def test_with_a_relay_the_app_syncs_and_a_payment_turns_final_live(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_PASSPHRASE", PASSPHRASE)
    key, genesis = witnessed_network(tmp_path, "Live")
    relay = start_relay(tmp_path, "--network", genesis, "--witness-key", key)
    try:
        alice, bob = api_wallets(genesis, tmp_path / "alice", tmp_path / "bob")
        tj(tmp_path / "issuer", "issue", alice.address, "50.00", "--yes")
        ok(tmp_path / "issuer", "sync", "--relay", relay.url, "--once")
        tj(alice.path, "relays", "add", relay.url)

        async def go() -> None:
            app = TallyApp(WalletService.open(alice.path))
            async with app.run_test(size=(100, 30)) as pilot:
                home = app.screen
                await settle(pilot, lambda: "50.00 EUR spendable" in text(app, "#account"),
                             "the issue claimed and final, by the background sync")
                assert "in sync" in text(app, "#links") and "OFFLINE" not in text(app, "#links")
                await pilot.press("p")
                app.screen.query_one("#to", Input).value = bob.address
                app.screen.query_one("#amount", Input).value = "2.00"
                app.screen.query_one("#to", Input).focus()
                await pilot.press("enter", "y")
                pay = app.screen
                assert isinstance(pay, PayScreen)
                await settle(pilot, lambda: "final" in text(app, "#status"),
                             "the payment final, the witness's vote synced in")
                assert isinstance(home, HomeScreen)
                assert "48.00 EUR spendable" in str(home.query_one("#account", Static).render())
            app.service.close()

        asyncio.run(go())
    finally:
        relay.stop()


def spendable_minor(app: TallyApp) -> int:
    """The account's spendable money on Home, in minor units."""
    head = text(app, "#account").split(" EUR spendable")[0].split()[-1]
    return int(head.replace(".", ""))


def test_the_live_demo_opens_funded_and_the_coffee_shop_pays_requests_and_pays_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tui import live_demo

    monkeypatch.setattr(live_demo, "SHOP_PAYS_EVERY_S", 1.0)
    monkeypatch.setattr(live_demo, "SHOP_ANSWERS_AFTER_S", 0.1)
    monkeypatch.setenv("TALLY_PASSPHRASE", live_demo.PASSPHRASE)  # restored afterwards
    demo = live_demo.LiveDemo(tmp_path / "demo")
    said: list[str] = []
    try:
        service = demo.start(say=said.append)
        assert demo.url.startswith("ws://127.0.0.1:") and len(said) == 2

        async def go() -> None:
            app = TallyApp(service)
            async with app.run_test(size=(100, 30)) as pilot:
                await settle(pilot, lambda: "in sync" in text(app, "#links"), "in sync")
                await settle(pilot, lambda: spendable_minor(app) > live_demo.FUNDS_MINOR,
                             "the shop paying back, claimed and final", timeout_s=30)
                await pilot.press("r", *"4.20", "enter")
                req = app.screen
                assert isinstance(req, RequestScreen) and req.request is not None
                await settle(pilot, lambda: req.paid, "the shop paying the request",
                             timeout_s=30)
                await settle(pilot, lambda: "(final)" in text(app, "#state"),
                             "the request's payment turning final", timeout_s=30)
                assert req.request.uri() in demo.answered
                await pilot.press("escape")
                app.demo = demo  # as the app's own demo: the palette offers a coffee
                await pilot.press("ctrl+p", *"buy a coffee", "enter")
                await settle(pilot, lambda: isinstance(app.screen, PayScreen),
                             "Pay, on the shop's request")
                pay = app.screen
                await settle(pilot, lambda: pay.query_one("#amount", Input).value == "3.50",
                             "the request's amount filled in")
                await pilot.press("enter", "y")
                await settle(pilot, lambda: pay.paid is not None, "the coffee paid")
                await settle(pilot, lambda: ": final" in text(app, "#status"),
                             "the coffee's payment final", timeout_s=30)
                app.demo = None  # stopped below, not by the app
        asyncio.run(go())
    finally:
        demo.stop()
        service.close()
    assert demo.relay is not None and demo.relay.poll() is not None, "the relay stopped"


def test_the_palette_offers_the_apps_actions(funded) -> None:  # type: ignore[no-untyped-def]
    alice, _ = funded

    async def go() -> None:
        app = TallyApp(WalletService.open(alice.path))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert titles[:8] == ["Pay", "Request", "History", "Devices", "Frauds", "Settings",
                                  "Takings", "Lock"]
            assert "Add a device" in titles and "Export history to CSV" in titles
            await pilot.press("ctrl+p")
            await pilot.press(*"History", "enter")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "HistoryScreen"
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await pilot.press(*"Add a device", "enter")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "AskScreen", "Devices, then its add"
            assert app.screen_stack[-2].__class__.__name__ == "DevicesScreen"
        app.service.close()

    asyncio.run(go())


def test_devices_shows_each_share_and_moves_money(funded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, _ = funded
    laptop = tmp_path / "laptop"
    tj(laptop, "network", "join", tmp_path / "g")
    req = tj(laptop, "devices", "pair", alice.address, "--label", "laptop")["request"]
    tj(alice.path, "devices", "add", req)

    async def go() -> None:
        app = TallyApp(WalletService.open(alice.path))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("d")
            await pilot.pause()
            table = app.screen.query_one("#devices", DataTable)
            assert table.row_count == 2
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(2)]
            other = next(i for i, r in enumerate(rows) if "this one" not in r[0])
            table.move_cursor(row=other)
            await pilot.press("m")
            await pilot.pause()
            await pilot.press(*"5.00", "enter")
            said = app.screen.query_one("#said", Static)
            await settle(pilot, lambda: "moved 5.00 EUR" in str(said.render()), "the move")
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(2)]
            mine = next(r for r in rows if "this one" in r[0])
            assert mine[2] == "95.00 EUR"
        app.service.close()

    asyncio.run(go())


def test_tally_web_serves_the_app_to_a_browser(funded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, _ = funded
    port = free_port()
    proc = subprocess.Popen(command(alice.path, "web", "--listen", f"127.0.0.1:{port}",
                                    "--json"),
                            env=tally_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        page = ""
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    page = r.read().decode()
                    break
            except OSError:
                time.sleep(0.05)
        assert "textual.js" in page and "Tallystick" in page, page[:300]
    finally:
        proc.terminate()
        proc.wait(10)
    said = proc.stdout.read() if proc.stdout else ""
    assert json.loads(said.splitlines()[0]) == {"url": f"http://127.0.0.1:{port}/"}, said
    missing = check_failed(run(tmp_path / "nowhere", "web", "--listen", "127.0.0.1:0"))
    assert "nowhere" in missing
    assert "give HOST:PORT" in check_failed(run(alice.path, "web", "--listen", "nope"))
