"""Small modal screens: a yes-or-no confirmation and the passphrase prompt."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class ConfirmScreen(ModalScreen[bool]):
    """A question; Enter or ``y`` says yes, Escape or ``n`` no."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("enter,y", "answer(True)", "Yes"),
        Binding("escape,n", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, id="question")
            yield Static("[b]Enter[/b] or [b]y[/b]: yes    [b]Escape[/b] or [b]n[/b]: no",
                         classes="hint")

    def action_answer(self, yes: bool) -> None:
        """Close with the answer."""
        self.dismiss(yes)


class PassphraseScreen(ModalScreen[str | None]):
    """Asks for the passphrase that unlocks the keys (Escape: none)."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, problem: str = "") -> None:
        super().__init__()
        self.problem = problem

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("The passphrase unlocks this wallet's keys.")
            yield Input(password=True, placeholder="passphrase", id="passphrase")
            yield Static(self.problem, id="problem", classes="problem")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: the passphrase typed."""
        self.dismiss(event.value or None)

    def action_cancel(self) -> None:
        """Escape: no passphrase."""
        self.dismiss(None)
