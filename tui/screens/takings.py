"""Takings (till mode): today's payments to this till (on the merchant's main device,
to each till of the account), live, each with where it stands
(and for a refused one, its evidence), totals per status, refunds and net, the exposure
against each floor limit as a gauge; refund and write-off from the list."""

from __future__ import annotations

import time
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, ProgressBar, Static

from tui.screens.modals import AskScreen, ConfirmScreen
from wallet import reconcile
from wallet.encoding import id_from_text, id_text, short
from wallet.errors import TallyError
from wallet.floor import HELD, PROVISIONAL
from wallet.takings import local_day

GAUGES = ("payment", "account", "till")
"""The floor limits shown as gauges."""


class TakingsScreen(Screen):
    """Today's takings, live; ``r`` refunds the highlighted one, ``w`` writes off the
    highlighted refused one."""

    CSS_PATH = "takings.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("r", "refund", "Refund"),
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
        rep = reconcile.build(w, since=start)  # a till's own; on a main device, its tills'
        several = len(rep.tills) > 1
        names = {t.till: t.label or short(t.till) + "…" for t in rep.tills}
        rows = rep.rows
        refunded = sum(rep.refunded.values())
        self.query_one("#totals", Static).update(
            f"[b]Today[/b] ({today}): " + "   ".join(
                f"{s} {svc.money(v)}" for s, v in rep.totals.items())
            + (f"\nrefunded {svc.money(refunded)}   net {svc.money(rep.net)}"
               if refunded else ""))
        exposure, limits = rep.exposure, rep.limits
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
            why = (rep.evidence[k.id].text(10) if k.id in rep.evidence
                   else k.reason if k.state in (HELD, PROVISIONAL) else k.status_reason)
            back = rep.refunded.get(k.id, 0)
            table.add_row(time.strftime("%H:%M", time.localtime(k.taken_at)),
                          (f"{names[k.till]} ← " if several else "")
                          + short(k.payer_account) + "…", svc.money(k.amount),
                          k.state + (" (written off)" if k.written_off else "")
                          + (f" (refunded {svc.money(back)})" if back else ""), why,
                          key=id_text(k.id))
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def _say(self, text: str) -> None:
        self.query_one("#said", Static).update(text)

    def _highlighted(self) -> str | None:
        """The id of the highlighted taking (None when the list is empty)."""
        table = self.query_one("#takings", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        assert key is not None
        return key

    def action_refund(self) -> None:
        """Refund the highlighted taking: all that is left, or the amount typed."""
        key = self._highlighted()
        if key is None:
            self._say("no taking to refund")
            return
        svc = self.app.service  # type: ignore[attr-defined]
        left = svc.refundable(id_from_text(key))
        if left <= 0:
            self._say("nothing left to refund of that taking")
            return
        self.app.push_screen(
            AskScreen(f"Refund how much of this taking? ({svc.money(left)} left; Enter "
                      "sends it back to the payer, Escape cancels)",
                      value=svc.amount_text(left)),
            lambda amount: self._refund(key, amount) if amount else None)

    @work(thread=True, exclusive=True, group="takings")
    def _refund(self, key: str, amount: str) -> None:
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            block, st = svc.refund(id_from_text(key), amount)
        except TallyError as exc:
            self.app.call_from_thread(self._say, str(exc))
            return
        self.app.call_from_thread(
            self._say, f"refunded {svc.money(block.amount)}: {st.label} (it goes out with "
                       "the next sync)")
        self.app.call_from_thread(self.refresh_takings)

    def action_write_off(self) -> None:
        """Write off the highlighted refused taking (it leaves the exposure)."""
        key = self._highlighted()
        if key is None:
            self._say("no taking to write off")
            return
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
