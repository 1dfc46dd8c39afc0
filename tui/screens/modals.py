"""Small modal screens: a yes-or-no confirmation, a one-line question, the passphrase
prompt, and a long text to read (a block's detail)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
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


class AskScreen(ModalScreen[str | None]):
    """Asks one question: Enter gives what was typed, Escape nothing."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, *, placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question)
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: the answer typed."""
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Escape: none."""
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """A text to read (scrolls); Escape or Enter closes it, ``c`` copies ``copy``."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape,enter", "close", "Close"),
        Binding("c", "copy", "Copy the id"),
    ]

    def __init__(self, text: str, copy: str = "") -> None:
        super().__init__()
        self.text = text
        self.copy = copy

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Static(self.text, id="text")
            yield Static("[b]c[/b] copy the id    [b]Escape[/b] close", classes="hint")

    def action_copy(self) -> None:
        """Copy the text's id (what a person pastes elsewhere)."""
        if self.copy:
            self.app.copy_to_clipboard(self.copy)
            self.app.notify(f"copied {self.copy}")

    def action_close(self) -> None:
        """Close."""
        self.dismiss(None)
