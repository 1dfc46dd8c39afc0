"""Takings (till mode): today's payments to this till, each with where it stands,
totals per status, the exposure against each floor limit as a gauge, and write-off of
a refused taking from the list."""

from __future__ import annotations

import time
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, ProgressBar, Static

from tui.screens.modals import ConfirmScreen
from wallet.encoding import id_from_text, id_text, short
from wallet.errors import TallyError
from wallet.floor import TAKING_STATES
from wallet.takings import local_day

GAUGES = ("payment", "account", "till")
"""The floor limits shown as gauges."""


class TakingsScreen(Screen):
    """Today's takings, live; ``w`` writes off the highlighted refused one."""

    CSS_PATH = "takings.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("w", "write_off", "Write off"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="totals")
        with Vertical(id="gauges"):
            for name in GAUGES:
                with Horizontal(classes="gauge"):
                    yield Label(id=f"label-{name}")
                    yield ProgressBar(id=f"gauge-{name}", show_eta=False)
        yield DataTable(id="takings", cursor_type="row", zebra_stripes=True)
        yield Static(id="said")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#takings", DataTable)
        table.add_columns("time", "from", "amount", "status", "why")
        self.refresh_takings()
        table.focus()

    def refresh_takings(self) -> None:
        """Read today's takings, totals and exposure again."""
        svc = self.app.service  # type: ignore[attr-defined]
        w = svc.wallet
        today = local_day(int(time.time()))
        start = int(time.mktime(time.strptime(today, "%Y-%m-%d")))
        rows = w.takings.rows(since=start)
        totals = dict.fromkeys(TAKING_STATES, 0)
        for k in rows:
            totals[k.state] += k.amount
        self.query_one("#totals", Static).update(
            f"[b]Today[/b] ({today}): " + "   ".join(
                f"{s} {svc.money(v)}" for s, v in totals.items()))
        exposure, limits = w.takings.exposure(), w.till_limits()
        biggest = max((k.amount for k in rows if k.exposed), default=0)
        worst_account = max(exposure.by_account.values(), default=0)
        for name, used, limit in (("payment", biggest, limits.payment),
                                  ("account", worst_account, limits.account),
                                  ("till", exposure.total, limits.till)):
            self.query_one(f"#label-{name}", Label).update(
                f"per {name:<8} {svc.money(used):>12} of {svc.money(limit)}")
            self.query_one(f"#gauge-{name}", ProgressBar).update(
                total=max(limit, 1), progress=min(used, max(limit, 1)))
        table = self.query_one("#takings", DataTable)
        row = table.cursor_row
        table.clear()
        for k in reversed(rows):  # newest first
            why = k.reason if k.state in ("held", "provisional") else k.status_reason
            table.add_row(time.strftime("%H:%M", time.localtime(k.taken_at)),
                          short(k.payer_account) + "…", svc.money(k.amount),
                          k.state + (" (written off)" if k.written_off else ""), why,
                          key=id_text(k.id))
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def _say(self, text: str) -> None:
        self.query_one("#said", Static).update(text)

    def action_write_off(self) -> None:
        """Write off the highlighted refused taking (it leaves the exposure)."""
        table = self.query_one("#takings", DataTable)
        if not table.row_count:
            self._say("no taking to write off")
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        assert key is not None
        self.app.push_screen(
            ConfirmScreen("Write this taking off? It leaves the exposure: the loss is "
                          "booked."), lambda yes: self._write_off(key) if yes else None)

    @work(thread=True, exclusive=True, group="takings")
    def _write_off(self, key: str) -> None:
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            k = svc.write_off(id_from_text(key))
        except TallyError as exc:
            self.app.call_from_thread(self._say, str(exc))
            return
        self.app.call_from_thread(self._say, f"wrote off {svc.money(k.amount)}")
        self.app.call_from_thread(self.refresh_takings)

    def on_service_events(self, events: list[object]) -> None:
        """Payments arrived or changed: read them again."""
        self.refresh_takings()
