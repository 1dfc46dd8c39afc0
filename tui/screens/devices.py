"""Devices: each device's share of the account; moving money between them; pairing a
new device (this device's address for it, its request added here) and revoking one."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.modals import AskScreen, ConfirmScreen, TextScreen
from wallet.encoding import Block, short
from wallet.errors import TallyError
from wallet.ledger import Status


class DevicesScreen(Screen):
    """The account's devices; ``m`` moves money to the highlighted one, ``n`` shows how
    a new device pairs, ``a`` adds one from its request, ``v`` revokes one."""

    CSS_PATH = "devices.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("m", "move", "Move here"),
        Binding("n", "new_device", "Pair new"),
        Binding("a", "add", "Add request"),
        Binding("v", "revoke", "Revoke"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        yield Static(id="said")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#devices", DataTable)
        table.add_columns("device", "label", "spendable", "incoming", "moving")
        self.refresh_devices()
        table.focus()

    def refresh_devices(self) -> None:
        """Read the devices' balances again."""
        svc = self.app.service  # type: ignore[attr-defined]
        table = self.query_one("#devices", DataTable)
        row = table.cursor_row
        table.clear()
        for key, label, bal, this in svc.devices():
            table.add_row(short(key) + ("  (this one)" if this else ""), label,
                          svc.money(bal.spendable), svc.money(bal.incoming),
                          svc.money(bal.moving), key=key.hex())
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def _highlighted(self) -> bytes | None:
        table = self.query_one("#devices", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return bytes.fromhex(key) if key else None

    def action_move(self) -> None:
        """Ask how much to move from this device to the highlighted one."""
        to = self._highlighted()
        svc = self.app.service  # type: ignore[attr-defined]
        if to is None or to == svc.wallet.device:
            self.query_one("#said", Static).update("highlight another device of the account")
            return
        self.app.push_screen(AskScreen(f"Move how much from this device to {short(to)}…?",
                                       placeholder="12.50"),
                             lambda amount: self._move(amount, to) if amount else None)

    @work(thread=True, exclusive=True, group="devices")
    def _move(self, amount: str, to: bytes) -> None:
        try:
            block, st = self.app.service.move(amount, to)  # type: ignore[attr-defined]
        except TallyError as exc:
            self.app.call_from_thread(self.query_one("#said", Static).update, str(exc))
            return
        self.app.call_from_thread(self._moved, block, st)

    def _moved(self, block: Block, st: Status) -> None:
        svc = self.app.service  # type: ignore[attr-defined]
        self.query_one("#said", Static).update(
            f"moved {svc.money(block.amount)} to {short(block.to_device)}…: {st.label}")

    def _say(self, text: str) -> None:
        self.query_one("#said", Static).update(text)

    def action_new_device(self) -> None:
        """How a new device joins: it pairs with this device's address (text and QR)."""
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            address = svc.wallet.address().text()
        except TallyError as exc:
            self._say(str(exc))
            return
        self.app.push_screen(TextScreen(
            "[b]Pair a new device.[/b] On the new device, open tally, join this network "
            "and choose [b]Pair with a device of an account I already have[/b], giving "
            "this address (or scan it). It shows a pairing request: add it here with "
            f"[b]a[/b].\n\n{address}\n\n{svc.qr_text(address)}", copy=address))

    def action_add(self) -> None:
        """Paste a new device's pairing request: sign its open (the account key)."""
        self.app.push_screen(AskScreen("Paste the new device's pairing request:",
                                       placeholder="tally-pair:…"),
                             lambda text: self._add(text) if text else None)

    @work(thread=True, exclusive=True, group="devices")
    def _add(self, text: str) -> None:
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            block = svc.add_device(text)
        except TallyError as exc:
            self.app.call_from_thread(self._say, str(exc))
            return
        self.app.call_from_thread(
            self._say, f"added device {short(block.device)}…: it is open once it syncs")
        self.app.call_from_thread(self.refresh_devices)

    def action_revoke(self) -> None:
        """Revoke the highlighted device (its balance passes to this one)."""
        dev = self._highlighted()
        svc = self.app.service  # type: ignore[attr-defined]
        if dev is None or dev == svc.wallet.device:
            self._say("highlight another device of the account to revoke it")
            return
        self.app.push_screen(
            ConfirmScreen(f"Revoke device {short(dev)}…? Its chain ends for good and its "
                          "money passes to this device (a lost or stolen device)."),
            lambda yes: self._revoke(dev) if yes else None)

    @work(thread=True, exclusive=True, group="devices")
    def _revoke(self, dev: bytes) -> None:
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            _, st = svc.revoke(dev)
        except TallyError as exc:
            self.app.call_from_thread(self._say, str(exc))
            return
        self.app.call_from_thread(self._say, f"revoked {short(dev)}…: {st.label}")

    def on_service_events(self, events: list[object]) -> None:
        """Balances changed: read them again."""
        self.refresh_devices()
