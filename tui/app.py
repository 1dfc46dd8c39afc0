"""The terminal wallet app: ``tally`` with no sub-command opens it.

A face over the wallet service (``tui.service``): the screens read and sign through
it, and every event it sends (a status changing, a payment arriving, a fork seen) is
passed to the screen on top and shown as a notification when a person should see it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from textual.app import App, SystemCommand
from textual.screen import Screen

from sync.client import Claimed, Down, Linked, Problem, Progress, Synced, SyncEvent
from tui.screens.devices import DevicesScreen
from tui.screens.frauds import FraudsScreen
from tui.screens.history import HistoryScreen
from tui.screens.home import HomeScreen
from tui.screens.pay import PayScreen
from tui.screens.request import RequestScreen
from tui.service import (
    ForkSeen,
    PaymentArrived,
    ServiceEvent,
    WalletService,
    passphrase_in_env,
)
from wallet.errors import TallyError


class TallyApp(App):
    """The wallet app over one wallet service."""

    TITLE = "Tallystick"

    def __init__(self, service: WalletService) -> None:
        super().__init__()
        self.service = service
        self.sub_title = f"{service.wallet.genesis.name} · {service.wallet.genesis.currency}"
        self.syncing = False
        self.link_states: dict[str, str] = {}  # URL → what its link is doing
        service.subscribe(self._from_service)

    def on_mount(self) -> None:
        self.push_screen(HomeScreen())
        self.start_sync()

    # ------------------------------------------------------------------ sync
    def start_sync(self) -> None:
        """Sync in the background with the wallet's relays and peers, once the keys can
        be had without asking (unlocked, or a passphrase in the environment)."""
        if self.syncing or not self.service.wallet.links():
            return
        if self.service.locked and not passphrase_in_env():
            return  # the first payment asks for it, and starts sync then
        self.syncing = True
        self.run_worker(self._sync(), group="sync", exclusive=True)

    async def _sync(self) -> None:
        try:
            await self.service.sync_forever(on_event=self._sync_event)
        except TallyError as exc:
            self.notify(f"sync stopped: {exc}", severity="error")
        finally:
            self.syncing = False

    def _sync_event(self, e: SyncEvent) -> None:
        """A sync event (on this loop): the links' states on Home."""
        now = time.strftime("%H:%M")
        if isinstance(e, Linked):
            self.link_states[e.url] = "connected, catching up"
        elif isinstance(e, Progress):
            self.link_states[e.url] = f"syncing: {e.received} entries received"
        elif isinstance(e, Synced):
            self.link_states[e.url] = f"in sync ({e.count} entries)"
        elif isinstance(e, Down):
            self.link_states[e.url] = f"offline since {now}: {e.reason}"
        elif isinstance(e, Claimed):
            self.notify(f"claimed {self.service.money(e.amount or 0)}: {e.status}")
        elif isinstance(e, Problem):
            self.notify(e.reason, severity="warning")
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen):
                screen.refresh_links()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette (ctrl+p) offers every action of the app, then Textual's own."""
        yield SystemCommand("Pay", "Pay an address or a tally: request", self.action_pay)
        yield SystemCommand("Request", "Ask for a payment: a tally: URI and QR code",
                            self.action_request)
        yield SystemCommand("History", "Every block, with its status", self.action_history)
        yield SystemCommand("Devices", "Each device's share; move money between them",
                            self.action_devices)
        yield SystemCommand("Frauds", "The fraud proofs held", self.action_frauds)
        yield SystemCommand("Lock", "Lock the keys now (the next signing asks again)",
                            self.service.lock)
        yield from super().get_system_commands(screen)

    def action_pay(self) -> None:
        """Open the pay form."""
        self.push_screen(PayScreen())

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

    def _from_service(self, event: ServiceEvent) -> None:
        # Commits happen on worker threads too: the UI is touched on its own thread.
        if threading.get_ident() == self._thread_id:
            self._show(event)
        else:
            self.call_from_thread(self._show, event)

    def _show(self, event: ServiceEvent) -> None:
        self.service.wallet.refresh()  # take in what the wallet thread committed
        if isinstance(event, PaymentArrived | ForkSeen):
            self.notify(self.service.describe(event),
                        severity="warning" if isinstance(event, ForkSeen) else "information")
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen):
                screen.refresh_balances()
            handler = getattr(screen, "on_service_event", None)
            if handler is not None:
                handler(event)
