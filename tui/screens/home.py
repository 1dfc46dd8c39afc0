"""Home: what the account holds, per device, and where this wallet syncs."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from wallet.encoding import short


class HomeScreen(Screen):
    """The account's spendable and incoming money, and each device's share."""

    CSS_PATH = "home.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("p", "app.pay", "Pay"),
        Binding("r", "app.request", "Request"),
        Binding("h", "app.history", "History"),
        Binding("f", "app.frauds", "Frauds"),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="account")
        yield Static("Devices", classes="heading")
        yield DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        yield Static(id="links")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#devices", DataTable)
        table.add_columns("device", "label", "spendable", "incoming", "to claim")
        self.refresh_balances()

    def refresh_balances(self) -> None:
        """Read the balances again (after a commit)."""
        svc = self.app.service  # type: ignore[attr-defined]
        total = svc.account_balance()
        self.query_one("#account", Static).update(
            f"[b]{svc.money(total.spendable)}[/b] spendable    "
            f"{svc.money(total.incoming)} incoming (not final yet)")
        table = self.query_one("#devices", DataTable)
        table.clear()
        for key, label, bal, this in svc.devices():
            table.add_row(short(key) + ("  (this one)" if this else ""), label,
                          svc.money(bal.spendable), svc.money(bal.incoming),
                          svc.money(bal.to_claim))
        links = svc.wallet.links()
        self.query_one("#links", Static).update(
            "[b reverse] OFFLINE [/] no relay or peer yet: this wallet works offline"
            if not links else "syncs with: " + ", ".join(sorted(links)))
