"""The terminal wallet app: ``tally`` with no sub-command opens it.

A face over the wallet service (``tui.service``): the screens read and sign through
it, and every event it sends (a status changing, a payment arriving, a fork seen) is
passed to the screen on top and shown as a notification when a person should see it.
A home with no wallet, or a wallet with no device yet, opens on first run (join a
network, create, restore or pair an account, or start the demo).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import App, SystemCommand
from textual.message import Message
from textual.screen import Screen

from sync.client import Down, Linked, Problem, Progress, Synced, SyncEvent
from tui.screens.devices import DevicesScreen
from tui.screens.first_run import WelcomeScreen
from tui.screens.frauds import FraudsScreen
from tui.screens.history import HistoryScreen
from tui.screens.home import HomeScreen
from tui.screens.pay import PayScreen
from tui.screens.request import RequestScreen
from tui.screens.settings import SettingsScreen
from tui.screens.takings import TakingsScreen
from tui.service import (
    ForkSeen,
    PaymentArrived,
    PaymentFinal,
    ServiceEvent,
    WalletService,
    passphrase_in_env,
)
from wallet.collector import tune_for_long_run
from wallet.errors import TallyError

if TYPE_CHECKING:
    from tui.live_demo import LiveDemo

LOCK_CHECK_S = 1.0
"""How often the app looks whether the keys were locked for idleness (seconds)."""
NOTICES_PER_BATCH_MAX = 3
"""Payments and forks told one notice each in a batch of events; more are summed up."""


class EventsWaiting(Message):
    """The service's events wait to be shown (posted once for each batch)."""


class TallyApp(App):
    """The wallet app over one wallet service (or, before a wallet exists at ``home``,
    first run)."""

    TITLE = "Tallystick"

    def __init__(self, service: WalletService | None, *, home: Path | None = None,
                 demo: bool = False, demo_dir: Path | None = None) -> None:
        """``demo``: start the live demo at once and work on its wallet (its files in
        ``demo_dir``, kept; else in a scratch directory removed at the end)."""
        super().__init__()
        if service is None and home is None:
            raise ValueError("the app needs a wallet service or a home to make one in")
        self.home = Path(home) if home is not None else service.wallet.home  # type: ignore[union-attr]
        self.service: WalletService = None  # type: ignore[assignment]  # set by attach
        self.syncing = False
        self.link_states: dict[str, str] = {}  # URL → what its link is doing
        self.demo: LiveDemo | None = None  # the live demo this app started, if any
        self._was_locked = True
        self._start_demo = demo
        self._demo_dir = demo_dir
        self._made: list[WalletService] = []  # services this app opened: it closes them
        self._pending: list[ServiceEvent | SyncEvent] = []  # events not shown yet
        self._pending_lock = threading.Lock()
        self._drain_posted = False
        if service is not None:
            self.attach(service)

    def run(self, *args: object, **kw: object) -> object:  # type: ignore[override]
        """Run the app for a person: the collector tuned for a long run first."""
        tune_for_long_run()
        return super().run(*args, **kw)  # type: ignore[arg-type]

    def attach(self, service: WalletService, *, owned: bool = False) -> None:
        """Work on this wallet service from now on (first run made it, or the demo:
        ``owned``, closed when the app ends)."""
        if owned:
            self._made.append(service)
        self.service = service
        g = service.wallet.genesis
        self.sub_title = f"{g.name} · {g.currency}"
        self.link_states = {}
        service.subscribe(self._from_service)
        self.theme = service.settings().theme

    def on_mount(self) -> None:
        self.set_interval(LOCK_CHECK_S, self._check_lock)
        if self._start_demo:
            self.start_demo()
        elif self.service is None or self.service.wallet.device is None:
            self.push_screen(WelcomeScreen())
        else:
            self.open_home()

    def open_home(self) -> None:
        """Home on top of nothing else (after first run), syncing."""
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.push_screen(HomeScreen())
        self.start_sync()

    def _check_lock(self) -> None:
        """Say so once when the keys were dropped after the idle time."""
        if self.service is None:
            return
        locked = self.service.locked
        if locked and not self._was_locked:
            self.notify("the keys were locked after the idle time; the next signing asks "
                        "for the passphrase", title="Locked")
        self._was_locked = locked
        base = self.sub_title.removesuffix(" · locked")
        self.sub_title = base + (" · locked" if locked and not passphrase_in_env() else "")

    # ------------------------------------------------------------------ demo
    def start_demo(self) -> None:
        """Make the live demo (a relay with a witness, a funded wallet, a coffee shop)
        off the event loop, then work on its wallet."""
        self.notify("starting the demo: a relay with a witness, a funded wallet…")
        self.run_worker(self._make_demo, thread=True, group="demo", exclusive=True)

    def _make_demo(self) -> None:
        import tempfile

        from tui.live_demo import LiveDemo

        if self._demo_dir is not None:
            demo = LiveDemo(self._demo_dir)
        else:
            demo = LiveDemo(Path(tempfile.mkdtemp(prefix="tally-demo-")), owns_dir=True)
        try:
            service = demo.start(say=lambda m: self.call_from_thread(self.notify, m))
        except (OSError, RuntimeError, TallyError) as exc:
            demo.stop()
            self.call_from_thread(self.notify, f"the demo did not start: {exc}",
                                  severity="error")
            return
        self.call_from_thread(self._demo_ready, demo, service)

    def _demo_ready(self, demo: LiveDemo, service: WalletService) -> None:
        self.demo = demo
        self.attach(service, owned=True)
        self.open_home()
        self.notify("The demo is live. ctrl+p → 'Demo: buy a coffee' pays the coffee "
                    "shop; r makes a request it pays.", title="Demo", timeout=15)

    def on_unmount(self) -> None:
        for service in self._made:
            service.close()
        if self.demo is not None:
            self.demo.stop()
            if self.demo.owns_dir:
                shutil.rmtree(self.demo.dir, ignore_errors=True)

    # ------------------------------------------------------------------ sync
    def start_sync(self) -> None:
        """Sync in the background with the wallet's relays and peers, once the keys can
        be had without asking (unlocked, or a passphrase in the environment)."""
        if (self.syncing or self.service is None or self.service.wallet.device is None
                or not self.service.wallet.links()):
            return
        if self.service.locked and not passphrase_in_env():
            return  # the first payment asks for it, and starts sync then
        self.syncing = True
        self.run_worker(self._sync(), group="sync", exclusive=True)

    def restart_sync(self) -> None:
        """The relays and peers changed: sync with the ones remembered now."""
        self.workers.cancel_group(self, "sync")
        self.syncing = False
        self.link_states = {}
        self.start_sync()

    async def _sync(self) -> None:
        try:
            await self.service.sync_forever()  # its events come through _from_service
        except TallyError as exc:
            self.notify(f"sync stopped: {exc}", severity="error")
        finally:
            self.syncing = False

    def _sync_event(self, e: SyncEvent) -> None:
        """A sync event: what its link is doing (Home shows it once per batch)."""
        now = time.strftime("%H:%M")
        if isinstance(e, Linked):
            self.link_states[e.url] = "connected, catching up"
        elif isinstance(e, Progress):
            self.link_states[e.url] = f"syncing: {e.received} entries received"
        elif isinstance(e, Synced):
            self.link_states[e.url] = f"in sync ({e.count} entries)"
        elif isinstance(e, Down):
            self.link_states[e.url] = f"offline since {now}: {e.reason}"
        elif isinstance(e, Problem):
            self.notify(e.reason, severity="warning")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette (ctrl+p) offers every action of the app, then Textual's own."""
        if self.service is None or self.service.wallet.device is None:
            yield from super().get_system_commands(screen)  # first run: nothing to act on
            return
        if self.demo is not None:
            yield SystemCommand("Demo: buy a coffee", "Pay the demo coffee shop's request",
                                self.action_buy_coffee)
        yield SystemCommand("Pay", "Pay an address or a tally: request", self.action_pay)
        yield SystemCommand("Request", "Ask for a payment: a tally: URI and QR code",
                            self.action_request)
        yield SystemCommand("History", "Every block, with its status", self.action_history)
        yield SystemCommand("Devices", "Each device's share; move money between them",
                            self.action_devices)
        yield SystemCommand("Frauds", "The fraud proofs held", self.action_frauds)
        yield SystemCommand("Settings", "Relays and peers, idle lock time, theme",
                            self.action_settings)
        yield SystemCommand("Takings", "Till mode: today's takings, exposure, write-off",
                            self.action_takings)
        yield SystemCommand("Lock", "Lock the keys now (the next signing asks again)",
                            self.service.lock)
        for title, help_text, screen_type, action in self.SCREEN_ACTIONS:
            yield SystemCommand(title, help_text,
                                lambda t=screen_type, a=action: self.open_and_run(t, a))
        yield from super().get_system_commands(screen)

    SCREEN_ACTIONS: ClassVar[list[tuple[str, str, type[Screen], str]]] = [
        ("Move money to another device", "Devices: highlight one, then m", DevicesScreen,
         ""),
        ("Pair a new device", "This device's address for the new one to pair with",
         DevicesScreen, "new_device"),
        ("Add a device", "Paste a new device's pairing request", DevicesScreen, "add"),
        ("Revoke a device", "Devices: highlight it, then v", DevicesScreen, ""),
        ("Export history to CSV", "Every row the history's filters keep", HistoryScreen,
         "export"),
    ]
    """Palette entries that open a screen and run one of its actions (or let the
    person pick the row first, when the action needs one)."""

    def open_and_run(self, screen_type: type[Screen], action: str) -> None:
        """Open a screen, then run one of its actions once it is mounted."""
        screen = screen_type()
        self.push_screen(screen)
        if action:
            self.call_after_refresh(screen.run_action, action)

    def action_pay(self) -> None:
        """Open the pay form."""
        self.push_screen(PayScreen())

    def action_buy_coffee(self) -> None:
        """(The demo) the coffee shop's till makes a request; open Pay on it."""
        if self.demo is None:
            return
        self.run_worker(self._coffee, thread=True, group="demo")

    def _coffee(self) -> None:
        assert self.demo is not None
        try:
            uri = self.demo.coffee_request()
        except (RuntimeError, OSError) as exc:
            self.call_from_thread(self.notify, f"the coffee shop is busy: {exc}",
                                  severity="warning")
            return
        self.call_from_thread(self.push_screen, PayScreen(uri))

    def action_history(self) -> None:
        """Open the history."""
        self.push_screen(HistoryScreen())

    def action_devices(self) -> None:
        """Open the devices."""
        self.push_screen(DevicesScreen())

    def action_frauds(self) -> None:
        """Open the fraud proofs."""
        self.push_screen(FraudsScreen())

    def action_request(self) -> None:
        """Open the request form."""
        self.push_screen(RequestScreen())

    def action_settings(self) -> None:
        """Open the settings."""
        self.push_screen(SettingsScreen())

    def action_takings(self) -> None:
        """Open the till's takings."""
        self.push_screen(TakingsScreen())

    def _from_service(self, event: ServiceEvent | SyncEvent) -> None:
        """(On any thread) an event of the service: kept, and shown with the others
        that came meanwhile. A sync of 20,000 entries sends as many events: the UI
        reads the wallet and redraws once per batch, never once per event, and the
        wallet thread never waits for the UI."""
        with self._pending_lock:
            self._pending.append(event)
            if self._drain_posted:
                return
            self._drain_posted = True
        self.post_message(EventsWaiting())  # thread-safe

    @on(EventsWaiting)
    def _show_waiting(self) -> None:
        with self._pending_lock:
            events, self._pending = self._pending, []
            self._drain_posted = False
        changed: list[ServiceEvent] = []
        for e in events:
            if isinstance(e, SyncEvent):
                self._sync_event(e)
            else:
                changed.append(e)
        if changed:
            self.service.wallet.refresh()  # take in what the wallet thread committed
            self._notify_payments(changed)
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen):
                if changed:
                    screen.refresh_balances()  # and the links
                else:
                    screen.refresh_links()
            handler = getattr(screen, "on_service_events", None)
            if changed and handler is not None:
                handler(changed)

    def _notify_payments(self, events: list[ServiceEvent]) -> None:
        """A notice for each payment arriving or turning final and each fork, up to a
        few; the rest summed up in one."""
        told = [e for e in events if isinstance(e, PaymentArrived | PaymentFinal | ForkSeen)]
        for e in told[:NOTICES_PER_BATCH_MAX]:
            self.notify(self.service.describe(e),
                        severity="warning" if isinstance(e, ForkSeen) else "information")
        if len(told) > NOTICES_PER_BATCH_MAX:
            self.notify(f"{len(told) - NOTICES_PER_BATCH_MAX} more payments and forks "
                        "came in: see History")
