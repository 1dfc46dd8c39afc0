"""Frauds: the fraud proofs held, each explained in words."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from tui.service import ForkSeen
from wallet.encoding import id_text


class FraudsScreen(Screen):
    """Every fork held: who signed twice, at which slot, and what it means."""

    CSS_PATH = "frauds.tcss"
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="proofs")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_proofs()

    def refresh_proofs(self) -> None:
        """Read the proofs again."""
        svc = self.app.service  # type: ignore[attr-defined]
        box = self.query_one("#proofs", VerticalScroll)
        box.remove_children()
        proofs = svc.frauds()
        if not proofs:
            box.mount(Static("No fraud proofs: no device has signed two blocks at one slot.",
                             classes="none"))
        for p in proofs:
            box.mount(Static(svc.explain(p) + "\n" + "\n".join(
                f"  block {id_text(i)}" for i in p.block_ids), classes="proof"))

    def on_service_events(self, events: list[object]) -> None:
        """A new fork seen: show it."""
        if any(isinstance(e, ForkSeen) for e in events):
            self.refresh_proofs()
