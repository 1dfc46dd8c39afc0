"""Devices: each device's share of the account, and moving money between them."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from wallet.encoding import Block, short
from wallet.errors import TallyError
from wallet.ledger import Status


class AmountScreen(ModalScreen[str | None]):
    """Asks for an amount (Enter) or nothing (Escape)."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question)
            yield Input(placeholder="12.50", id="amount")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: the amount typed."""
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Escape: none."""
        self.dismiss(None)


class DevicesScreen(Screen):
    """The account's devices; ``m`` moves money to the highlighted one."""

    CSS_PATH = "devices.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("m", "move", "Move money here"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        yield Static(id="said")
        yield Footer()

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
        self.app.push_screen(AmountScreen(f"Move how much from this device to {short(to)}…?"),
                             lambda amount: self._move(amount, to) if amount else None)

    @work(thread=True, exclusive=True)
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

    def on_service_event(self, event: object) -> None:
        """Balances changed: read them again."""
        self.refresh_devices()
