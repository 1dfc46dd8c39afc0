"""The terminal wallet app: ``tally`` with no sub-command opens it.

A face over the wallet service (``tui.service``): the screens read and sign through
it, and every event it sends (a status changing, a payment arriving, a fork seen) is
passed to the screen on top and shown as a notification when a person should see it.
"""

from __future__ import annotations

import threading

from textual.app import App

from tui.screens.frauds import FraudsScreen
from tui.screens.history import HistoryScreen
from tui.screens.home import HomeScreen
from tui.screens.pay import PayScreen
from tui.screens.request import RequestScreen
from tui.service import ForkSeen, PaymentArrived, ServiceEvent, WalletService


class TallyApp(App):
    """The wallet app over one wallet service."""

    TITLE = "Tallystick"

    def __init__(self, service: WalletService) -> None:
        super().__init__()
        self.service = service
        self.sub_title = f"{service.wallet.genesis.name} · {service.wallet.genesis.currency}"
        service.subscribe(self._from_service)

    def on_mount(self) -> None:
        self.push_screen(HomeScreen())

    def action_pay(self) -> None:
        """Open the pay form."""
        self.push_screen(PayScreen())

    def action_history(self) -> None:
        """Open the history."""
        self.push_screen(HistoryScreen())

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
        if isinstance(event, PaymentArrived | ForkSeen):
            self.notify(self.service.describe(event),
                        severity="warning" if isinstance(event, ForkSeen) else "information")
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen):
                screen.refresh_balances()
            handler = getattr(screen, "on_service_event", None)
            if handler is not None:
                handler(event)
