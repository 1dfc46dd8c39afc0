"""Pay: an address or a ``tally:`` request, an amount checked as it is typed, a
confirmation, then the payment's status, live."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Static

from tui.screens.modals import ConfirmScreen, PassphraseScreen
from tui.service import Payee, StatusChanged, passphrase_in_env
from wallet.encoding import Block, id_text, short
from wallet.errors import TallyError
from wallet.ledger import Status


class PayScreen(Screen):
    """The pay form: Tab moves from field to field, Enter submits."""

    CSS_PATH = "pay.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+o", "ask_sibling", "Ask a sibling device"),
    ]

    def __init__(self, to: str = "") -> None:
        """The form, with ``to`` filled in when given (a request to pay)."""
        super().__init__()
        self.paid: Block | None = None
        self._to = to
        self.shortfall: tuple[bytes, str, int] | None = None  # what a sibling could move

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="form"):
            yield Label("To (an address, or a tally: request)")
            yield Input(placeholder="tly… or tally:…", id="to")
            yield Label("Amount")
            yield Input(placeholder="12.50", id="amount")
            yield Label("Memo (sealed: only the payee reads it)")
            yield Input(placeholder="optional", id="memo")
            yield Static(id="problem", classes="problem")
            yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        if self._to:  # as if pasted: a request fills amount and memo
            self.query_one("#to", Input).value = self._to
            self.query_one("#amount", Input).focus()

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.app.service  # type: ignore[attr-defined]

    def _value(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value.strip()

    def on_input_changed(self, event: Input.Changed) -> None:
        """Check what is typed as it is typed; a request fills amount and memo."""
        if event.input.id == "to" and event.value.strip().startswith("tally:"):
            try:
                payee = self.service.payee(event.value)
            except TallyError as exc:
                self._say_problem(str(exc))
                return
            req = payee.request
            self.query_one("#amount", Input).value = self.service.amount_text(payee.amount)
            if req is not None and req.memo:
                self.query_one("#memo", Input).value = req.memo
        self._say_problem(self._problem() or "")

    def _problem(self) -> str | None:
        to, amount = self._value("to"), self._value("amount")
        self.shortfall = None
        if not to:
            return None  # nothing typed yet: nothing to say
        problem = self.service.amount_problem(amount) if amount else None
        if problem is None:
            return None
        return f"amount: {problem}" + self._sibling_offer(amount)

    def _sibling_offer(self, amount: str) -> str:
        """When a sibling device holds enough: offer to ask it for the shortfall."""
        try:
            minor = self.service.amount(amount)
        except TallyError:
            return ""
        self.shortfall = self.service.sibling_to_ask(minor)
        if self.shortfall is None:
            return ""
        _, label, short_by = self.shortfall
        return (f"\n{label or 'a sibling device'} holds enough: [b]ctrl+o[/b] asks it to "
                f"move {self.service.money(short_by)} here first (a request it pays)")

    def action_ask_sibling(self) -> None:
        """A request for the shortfall, for the sibling device to pay (a move here)."""
        if self.shortfall is None:
            self._say_problem("this device can pay that itself, or no sibling holds enough")
            return
        from tui.screens.request import RequestScreen

        short_by = self.shortfall[2]
        here = next((label for _, label, _, mine in self.service.devices() if mine), "")
        self.app.push_screen(RequestScreen(self.service.amount_text(short_by),
                                           f"move to {here or 'my other device'}"))

    def _say_problem(self, text: str) -> None:
        self.query_one("#problem", Static).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter, in any field: check the whole form and ask to confirm."""
        try:
            payee = self.service.payee(self._value("to"), self._value("amount") or None)
            self.service.wallet.check_address(payee.address)
        except TallyError as exc:
            self._say_problem(str(exc))
            return
        problem = self.service.spend_problem(payee.amount)
        if problem:
            self._say_problem(f"amount: {problem}"
                              + self._sibling_offer(self.service.amount_text(payee.amount)))
            return
        memo = self._value("memo") or None
        self.app.push_screen(ConfirmScreen(self._question(payee, memo)),
                             lambda yes: self._confirmed(payee, memo) if yes else None)

    def _question(self, payee: Payee, memo: str | None) -> str:
        svc = self.service
        lines = [f"Pay [b]{svc.money(payee.amount)}[/b] to {short(payee.address.device)}…?"]
        if memo:
            lines.append(f"memo: {memo}")
        held = svc.hold_warning(payee)
        if held:
            lines.append(f"[b]{held}[/b]")
        req = payee.request
        if req is not None and (req.floor_payment or req.floor_account or req.floor_till):
            lines.append("the till takes it offline within its limits: "
                         f"{svc.money(req.floor_payment)} a payment, "
                         f"{svc.money(req.floor_account)} per account, "
                         f"{svc.money(req.floor_till)} in all")
        return "\n".join(lines)

    def _confirmed(self, payee: Payee, memo: str | None) -> None:
        if self.service.locked and not passphrase_in_env():
            self.app.push_screen(PassphraseScreen(),
                                 lambda p: self._pay(payee, memo, p) if p else None)
        else:
            self._pay(payee, memo, None)

    @work(thread=True, exclusive=True)
    def _pay(self, payee: Payee, memo: str | None, passphrase: str | None) -> None:
        """Sign off the event loop (decrypting the key is slow by design)."""
        try:
            if passphrase is not None:
                self.service.unlock(passphrase)
            block, st = self.service.pay(payee, memo=memo)
        except TallyError as exc:
            self.app.call_from_thread(self._say_problem, str(exc))
            return
        self.app.call_from_thread(self._show_paid, block, st)

    def _show_paid(self, block: Block, st: Status) -> None:
        self.paid = block
        self._say_problem("")
        self.app.start_sync()  # type: ignore[attr-defined]  # the keys are unlocked now
        self._show_status(st)
        self.app.notify(f"paid {self.service.money(block.amount)}")

    def _show_status(self, st: Status) -> None:
        assert self.paid is not None
        self.query_one("#status", Static).update(
            f"payment {id_text(self.paid.id)}: [b]{st.label}[/b]")

    def on_service_events(self, events: list[object]) -> None:
        """The payment's status as it changes (the app passes each batch of events)."""
        for event in events:
            if (self.paid is not None and isinstance(event, StatusChanged)
                    and event.change.block_id == self.paid.id):
                self._show_status(event.change.new)
