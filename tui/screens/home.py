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
        Binding("d", "app.devices", "Devices"),
        Binding("f", "app.frauds", "Frauds"),
        Binding("s", "app.settings", "Settings"),
        Binding("t", "app.takings", "Takings", show=False),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="account")
        yield Static("Devices", classes="heading")
        yield DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        yield Static(id="hint")
        yield Static(id="links")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#devices", DataTable)
        table.add_columns("device", "label", "spendable", "incoming", "moving", "to claim")
        self.refresh_balances()

    def refresh_balances(self) -> None:
        """Read the balances again (after a commit)."""
        svc = self.app.service  # type: ignore[attr-defined]
        rows = svc.devices()
        total = svc.total(rows)
        moving = (f"    {svc.money(total.moving)} moving between its devices"
                  if total.moving else "")
        self.query_one("#account", Static).update(
            f"[b]{svc.money(total.spendable)}[/b] spendable    "
            f"{svc.money(total.incoming)} incoming (not final yet){moving}")
        table = self.query_one("#devices", DataTable)
        table.clear()
        for key, label, bal, this in rows:
            table.add_row(short(key) + ("  (this one)" if this else ""), label,
                          svc.money(bal.spendable), svc.money(bal.incoming),
                          svc.money(bal.moving), svc.money(bal.to_claim))
        self.query_one("#hint", Static).update(self._restored_hint())
        self.refresh_links()

    def _restored_hint(self) -> str:
        """After a restore: offer to revoke the devices of the account still open (a
        lost phone's money is safe once its chain is closed)."""
        w = self.app.service.wallet  # type: ignore[attr-defined]
        if not w.restored:
            return ""
        live = w.live_siblings()
        if not live:
            return ""
        names = ", ".join(label or short(k) for k, label in live)
        return (f"Restored: this account still has {len(live)} other device(s) open "
                f"({names}). Revoke the ones you lost: [b]d[/b], highlight one, [b]v[/b].")

    def refresh_links(self) -> None:
        """Each relay and peer with what its link is doing; offline shown plainly."""
        links = self.app.service.wallet.links()  # type: ignore[attr-defined]
        states = self.app.link_states  # type: ignore[attr-defined]
        if not links:
            text = "[b reverse] OFFLINE [/] no relay or peer yet: this wallet works offline"
        else:
            online = any(s.startswith(("connected", "syncing", "in sync"))
                         for s in states.values())
            head = "" if online else "[b reverse] OFFLINE [/] "
            text = head + "\n".join(f"{kind} {url}: {states.get(url, 'connecting…')}"
                                     for url, kind in sorted(links.items()))
        self.query_one("#links", Static).update(text)
