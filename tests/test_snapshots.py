"""Snapshot tests of the app's main screens (pytest-textual-snapshot), each at 80×24 and
160×48, in the dark and the light theme.

Each test opens ``TallyApp`` headless over a copy of one wallet home, goes to a screen
as a person would (keys pressed), and compares an SVG screenshot with the one kept in
``tests/__snapshots__/test_snapshots/``. A screen that changed on purpose needs its
snapshots written again, then looked at (open the SVGs in a browser) and committed::

    .venv/bin/python -m pytest tests/test_snapshots.py --snapshot-update
    .venv/bin/python -m pytest tests/test_snapshots.py -k pay   # or only some of them

A failing run writes ``snapshot_report.html`` (in the current directory) with the old
and the new screenshot side by side.

What makes the screenshots the same on every run and every machine:

- **Keys.** Wallet code makes its keys with ``nacl.signing.SigningKey.generate()``
  (``wallet.wallet``, and ``tests.clikit.api_network`` for the issuer). While the
  wallets are built, ``generate`` is replaced by a seeded one: the n-th key made is
  ``SigningKey(sha256(SEED + n))``. Ed25519 signatures are deterministic, so the same
  keys and the same blocks give the same block ids, addresses and QR codes. No payment
  is made with a memo (a memo is sealed with a random ephemeral key).
- **Time.** The ledger stamps each entry's ``seen`` with ``time.time()`` in
  ``wallet.ledger`` (and a pairing with ``wallet.wallet``'s); both modules' ``time`` is
  replaced by a clock the builder sets by hand for each step, and ``TZ=UTC`` (with
  ``time.tzset``) makes ``local_minute`` the same everywhere. The Header shows no clock.
- **Request ids.** The Request screen asks ``WalletService.request`` without an id
  (``os.urandom``): the service under test has ``request`` bound with a fixed
  ``request_id``, so the ``tally:`` URI and its QR code are fixed.
- **Nothing in the background.** No relay or peer is remembered (so the app never
  syncs), the network has no witnesses (q = 0, ``api_network``), and
  ``TALLY_PASSPHRASE`` is set, so the idle-lock check never adds " · locked" to the
  sub-title a second into the run. Inputs stop blinking (their cursor stays shown: a
  blink every 0.5 s would depend on how fast the machine is), and notifications are
  cleared before the screenshot (none is expected on these screens).
- **Paths.** The first-run screen with no wallet names its home: it is given a fixed
  path that is never created.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input

import tui.screens.takings
import wallet.ledger
import wallet.reconcile
import wallet.takings
import wallet.wallet
from tests.clikit import PASSPHRASE, api_fund, api_network, api_wallets
from tui.app import TallyApp
from tui.screens.devices import DevicesScreen
from tui.screens.first_run import WelcomeScreen
from tui.screens.frauds import FraudsScreen
from tui.screens.history import HistoryScreen
from tui.screens.home import HomeScreen
from tui.screens.modals import ConfirmScreen
from tui.screens.pay import PayScreen
from tui.screens.request import RequestScreen
from tui.screens.settings import SettingsScreen
from tui.screens.takings import TakingsScreen
from tui.service import WalletService
from wallet.address import Address, parse_address
from wallet.settings import Settings
from wallet.wallet import Wallet

SEED = b"tallystick snapshot tests "
"""What the seeded keys are derived from."""
REQUEST_ID = bytes.fromhex("5eed5eed00c0ffee")
"""The id of the request the Request screen makes."""
T0 = 1_741_939_200
"""2025-03-14 08:00 UTC: the builder's clock starts here."""
NO_WALLET_HOME = Path("/home/ada/.local/share/tally")
"""The home the first-run screen names when no wallet exists (never created)."""
SIZES = {"80x24": (80, 24), "160x48": (160, 48)}
THEMES = {"dark": "textual-dark", "light": "textual-light"}


class Clock:
    """Stands in for the ``time`` module of the wallet modules that stamp entries:
    ``time()`` is what the builder set; everything else is the real module's."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def at(self, minutes: int) -> None:
        """Set the clock ``minutes`` past ``T0``."""
        self.now = float(T0 + 60 * minutes)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def seeded_generate() -> Callable[..., SigningKey]:
    """A stand-in for ``SigningKey.generate``: the n-th call gives the n-th key of
    ``SEED``."""
    n = 0

    def generate(cls: type[SigningKey]) -> SigningKey:
        nonlocal n
        n += 1
        return cls(hashlib.sha256(SEED + str(n).encode()).digest())

    return generate


@dataclass(frozen=True)
class World:
    """The wallet homes built once for the module (copied for each test)."""

    root: Path
    alice: Path  # the wallet the app opens: two devices, history, a fraud proof
    joined: Path  # on the network, with no account yet (first run's second step)
    bob_address: str  # whom Pay pays


def carry(src: Path, dst: Path, to: Address) -> None:
    """Bring what ``src`` holds for ``to`` into ``dst``."""
    s = Wallet.open(src)
    try:
        bodies = s.bodies(s.export_ids(to))
    finally:
        s.close()
    d = Wallet.open(dst)
    try:
        d.ingest_bodies(bodies)
    finally:
        d.close()


def pay(src: Path, to: Address, minor: int) -> None:
    """Sign a payment (no memo: a sealed memo is random)."""
    w = Wallet.open(src)
    try:
        w.pay(to, minor, PASSPHRASE)
    finally:
        w.close()


def receive(home: Path) -> None:
    w = Wallet.open(home)
    try:
        w.receive(PASSPHRASE)
    finally:
        w.close()


def build(root: Path, clock: Clock) -> World:
    """A q = 0 network "Snapshot" (EUR) and Alice's wallet as the screens show it: a
    phone paired to her account with money moved to it, a payment to Bob, one from
    Bob claimed, and two payments from Mallory's cloned device (a fork)."""
    clock.at(0)
    g = api_network(root, "Snapshot")
    clock.at(5)
    alice, bob, mallory = api_wallets(root / "g", root / "alice", root / "bob",
                                      root / "mallory")
    clock.at(10)
    api_fund(root / "issuer", alice, 100_00)
    api_fund(root / "issuer", bob, 20_00)
    api_fund(root / "issuer", mallory, 10_00)
    a_addr, b_addr = parse_address(alice.address), parse_address(bob.address)

    clock.at(20)  # a phone joins Alice's account
    phone = Wallet.join(root / "phone", g.raw)
    try:
        request = phone.pair_request(PASSPHRASE, a_addr, label="phone")
        phone_device = phone.device
    finally:
        phone.close()
    assert phone_device is not None
    a = Wallet.open(alice.path)
    try:
        a.pair_add(request, PASSPHRASE)
    finally:
        a.close()

    clock.at(30)
    pay(alice.path, b_addr, 12_50)
    clock.at(45)
    pay(bob.path, a_addr, 3_00)
    carry(bob.path, alice.path, a_addr)
    receive(alice.path)
    clock.at(60)
    pay(alice.path, Address(a_addr.network_check, a_addr.account, phone_device), 20_00)

    clock.at(75)  # Mallory's disk cloned: the same device pays Alice twice at one slot
    clone = root / "mallory-clone"
    shutil.copytree(mallory.path, clone)
    pay(mallory.path, a_addr, 1_00)
    pay(clone, a_addr, 2_00)
    carry(mallory.path, alice.path, a_addr)
    carry(clone, alice.path, a_addr)

    clock.at(90)
    Wallet.join(root / "joined", g.raw).close()
    return World(root, alice.path, root / "joined", bob.address)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The homes, built with seeded keys and a set clock; the clock (and ``TZ=UTC``,
    and ``TALLY_PASSPHRASE``) stay for the module's tests."""
    clock = Clock(T0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "UTC")
        mp.setenv("TALLY_PASSPHRASE", PASSPHRASE)
        time.tzset()
        for module in (wallet.ledger, wallet.wallet, wallet.takings, wallet.reconcile,
                       tui.screens.takings):
            mp.setattr(module, "time", clock)
        with pytest.MonkeyPatch.context() as keys:
            keys.setattr(SigningKey, "generate", classmethod(seeded_generate()))
            built = build(tmp_path_factory.mktemp("snapshot-world"), clock)
        clock.at(120)  # what the app may commit while it runs
        yield built
    time.tzset()  # back to the machine's zone


def copy_home(src: Path, dst: Path, theme: str) -> Path:
    """A copy of a wallet home, with ``theme`` saved as its setting (what the app
    applies when it opens)."""
    shutil.copytree(src, dst)
    w = Wallet.open(dst)
    try:
        w.save_settings(Settings(theme=theme))
    finally:
        w.close()
    return dst


async def still(pilot: Pilot[Any], theme: str) -> None:
    """Make what remains of the screen stand still: the theme applied, no cursor
    blinking, no notification."""
    app = pilot.app
    app.theme = theme
    for screen in app.screen_stack:
        for field in screen.query(Input):
            field.cursor_blink = False
    app.clear_notifications()
    await pilot.pause()


async def on_top(pilot: Pilot[Any], screen_type: type[Screen], what: str) -> None:
    """Wait (a little) until a screen of that type is on top."""
    for _ in range(100):
        if isinstance(pilot.app.screen, screen_type):
            await pilot.pause()
            return
        await pilot.pause(0.02)
    raise AssertionError(f"{what}: the screen on top is {type(pilot.app.screen).__name__}")


Steps = Callable[[Pilot[Any], World], Awaitable[None]]


def opens(key: str, screen_type: type[Screen]) -> Steps:
    """Steps that press ``key`` on Home and wait for the screen it opens."""
    async def steps(pilot: Pilot[Any], world: World) -> None:
        await on_top(pilot, HomeScreen, "Home")
        if key:
            await pilot.press(key)
            await on_top(pilot, screen_type, f"after {key!r}")

    return steps


async def pay_typed(pilot: Pilot[Any], world: World) -> None:
    """Pay with Bob's address, an amount and a memo typed."""
    await opens("p", PayScreen)(pilot, world)
    pilot.app.screen.query_one("#to", Input).value = world.bob_address  # as pasted
    await pilot.press("tab", *"12.50", "tab", *"lunch")


async def pay_confirm(pilot: Pilot[Any], world: World) -> None:
    """The same, then Enter: the confirmation question."""
    await pay_typed(pilot, world)
    await pilot.press("enter")
    await on_top(pilot, ConfirmScreen, "the confirmation")


async def request_made(pilot: Pilot[Any], world: World) -> None:
    """A request for 4.20 with a memo: its URI and QR code."""
    await opens("r", RequestScreen)(pilot, world)
    await pilot.press(*"4.20", "tab", *"coffee", "enter")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, RequestScreen) and screen.request is not None, \
        "no request was made"


async def welcome(pilot: Pilot[Any], world: World) -> None:
    await on_top(pilot, WelcomeScreen, "first run")


SCREENS: dict[str, tuple[str, Steps]] = {
    # name: (which app: "alice", "joined" or "none"; the steps to the screen)
    "home": ("alice", opens("", HomeScreen)),
    "pay": ("alice", pay_typed),
    "pay_confirm": ("alice", pay_confirm),
    "request": ("alice", request_made),
    "history": ("alice", opens("h", HistoryScreen)),
    "devices": ("alice", opens("d", DevicesScreen)),
    "frauds": ("alice", opens("f", FraudsScreen)),
    "settings": ("alice", opens("s", SettingsScreen)),
    "takings": ("alice", opens("t", TakingsScreen)),
    "welcome": ("none", welcome),
    "welcome_joined": ("joined", welcome),
}


@pytest.mark.parametrize("theme", list(THEMES))
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(screen: str, size: str, theme: str, world: World, tmp_path: Path,
                snap_compare: Callable[..., bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """One main screen at one size in one theme, as in its kept snapshot."""
    which, steps = SCREENS[screen]
    theme_name = THEMES[theme]
    service: WalletService | None = None
    if which == "none":
        app = TallyApp(None, home=NO_WALLET_HOME)
    else:
        home = copy_home(world.alice if which == "alice" else world.joined,
                         tmp_path / "home", theme_name)
        service = WalletService.open(home)
        monkeypatch.setattr(service, "request",
                            functools.partial(service.request, request_id=REQUEST_ID))
        app = TallyApp(service)

    async def run_before(pilot: Pilot[Any]) -> None:
        await steps(pilot, world)
        await still(pilot, theme_name)

    try:
        assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)
    finally:
        if service is not None:
            service.close()
    assert not os.path.exists(NO_WALLET_HOME)
