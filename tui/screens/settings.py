"""Settings: the relays and peers this wallet syncs with, how long unlocked keys stay
held without use, and the theme; all saved in the wallet home."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Select, Static

from wallet.durations import duration_text
from wallet.errors import TallyError
from wallet.settings import THEMES, parse_idle_lock


class SettingsScreen(Screen):
    """Enter in a field saves it; ``x`` forgets the highlighted relay or peer."""

    CSS_PATH = "settings.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("x", "forget", "Forget relay/peer"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def compose(self) -> ComposeResult:
        svc = self.app.service  # type: ignore[attr-defined]
        st = svc.settings()
        yield Header()
        with VerticalScroll(id="form"):
            yield Label("Lock the keys after this long unused (90s, 5m, 1h)")
            yield Input(value=duration_text(st.idle_lock_s), id="idle")
            yield Label("Theme")
            yield Select([(t.removeprefix("textual-"), t) for t in THEMES], value=st.theme,
                         allow_blank=False, id="theme")
            yield Static("Relays and peers this wallet syncs with", classes="heading")
            yield DataTable(id="links", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="add"):
                yield Input(placeholder="ws://… or wss://… (Enter adds it)", id="url")
                yield Select([("relay", "relay"), ("peer (a till)", "peer")], value="relay",
                             allow_blank=False, id="kind")
            yield Static(id="said")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#links", DataTable).add_columns("kind", "url")
        self.refresh_links()
        self.query_one("#idle", Input).focus()

    def refresh_links(self) -> None:
        """Read the remembered relays and peers again."""
        table = self.query_one("#links", DataTable)
        table.clear()
        for url, kind in sorted(self.app.service.wallet.links().items()):  # type: ignore[attr-defined]
            table.add_row(kind, url, key=url)

    def _say(self, text: str) -> None:
        self.query_one("#said", Static).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: save the idle time, or add the relay or peer typed."""
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            if event.input.id == "idle":
                seconds = parse_idle_lock(event.value)
                svc.save_settings(replace(svc.settings(), idle_lock_s=seconds))
                self._say(f"the keys lock after {duration_text(seconds)} unused")
            elif event.input.id == "url":
                kind = self.query_one("#kind", Select).value
                svc.add_link(event.value, str(kind))
                event.input.value = ""
                self.refresh_links()
                self.app.restart_sync()  # type: ignore[attr-defined]
                self._say(f"remembered {kind} {event.value.strip()}")
        except TallyError as exc:
            self._say(str(exc))

    def on_select_changed(self, event: Select.Changed) -> None:
        """A theme chosen: shown at once, and saved."""
        if event.select.id != "theme" or not isinstance(event.value, str):
            return
        svc = self.app.service  # type: ignore[attr-defined]
        if event.value == svc.settings().theme:
            return
        svc.save_settings(replace(svc.settings(), theme=event.value))
        self.app.theme = event.value
        self._say(f"theme: {event.value.removeprefix('textual-')}")

    def action_forget(self) -> None:
        """Forget the highlighted relay or peer."""
        table = self.query_one("#links", DataTable)
        if not table.row_count:
            self._say("no relay or peer to forget")
            return
        url = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        try:
            self.app.service.remove_link(url)  # type: ignore[attr-defined]
        except TallyError as exc:
            self._say(str(exc))
            return
        self.refresh_links()
        self.app.restart_sync()  # type: ignore[attr-defined]
        self._say(f"forgot {url}")
