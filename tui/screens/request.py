"""Request: an amount and a memo give a ``tally:`` URI and its QR code; the screen
turns to "paid" when the payment arrives."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Static

from tui.service import PaymentArrived, PaymentFinal
from wallet.address import PaymentRequest
from wallet.errors import TallyError


class RequestScreen(Screen):
    """Type an amount (and a memo), Enter: the request to show the payer."""

    CSS_PATH = "request.tcss"
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, amount: str = "", memo: str = "") -> None:
        """The form, filled with ``amount`` and ``memo`` when given (a request made for
        a sibling device to move money here)."""
        super().__init__()
        self.request: PaymentRequest | None = None
        self.paid = False
        self._filled = (amount, memo)

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():  # at 80×24 the QR code is below the form, scrolled to
            with Vertical(id="form"):
                yield Label("Amount")
                yield Input(self._filled[0], placeholder="12.50", id="amount")
                yield Label("Memo (the payment carries it back)")
                yield Input(self._filled[1], placeholder="optional", id="memo")
                yield Static(id="problem", classes="problem")
                yield Static(id="uri")
                yield Static(id="state")
            yield Static(id="qr")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#amount", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: make the request."""
        svc = self.app.service  # type: ignore[attr-defined]
        amount = self.query_one("#amount", Input).value.strip()
        memo = self.query_one("#memo", Input).value.strip()
        try:
            req = svc.request(amount, memo=memo)
        except TallyError as exc:
            self.query_one("#problem", Static).update(str(exc))
            return
        self.request, self.paid = req, False
        self.query_one("#problem", Static).update("")
        self.query_one("#uri", Static).update(req.uri())
        qr = self.query_one("#qr", Static)
        qr.update(svc.qr_text(req.uri()))
        box = self.query_one(VerticalScroll)
        box.focus()  # arrows scroll it: the state line, then the code, at the top
        state = self.query_one("#state", Static)
        self.call_after_refresh(
            lambda: box.scroll_to(y=state.virtual_region.y, animate=False))
        self.query_one("#state", Static).update(
            f"waiting for {svc.money(req.amount)} to be paid…")

    def on_service_events(self, events: list[object]) -> None:
        """A payment answering this request arrived, or turned final: say so."""
        for event in events:
            req = self.request
            if (req is None or not isinstance(event, PaymentArrived | PaymentFinal)
                    or event.block.request_id != req.request_id
                    or event.block.to_device != req.address.device):
                continue
            svc = self.app.service  # type: ignore[attr-defined]
            label = event.status.label if isinstance(event, PaymentArrived) else "final"
            self.paid = True
            self.query_one("#state", Static).update(
                f"[b]paid[/b]: {svc.money(event.block.amount)} ({label})")
