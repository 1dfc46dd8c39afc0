"""History: every block of the account, newest first, in a view that stays fast at
100,000 rows and more.

The view is a ``ScrollView`` over the Line API (``render_line``): only the lines on
screen are drawn, and rows are read from the store a page at a time (keyset paging by
the store's position) as the view scrolls toward the end of what it has read. Filters
(status, kind, counterparty; applied as they change) start the reading over. The
highlighted row is the top one: Enter shows its detail (votes; the fraud proof of a
refused or disputed payment), ``c`` copies its id, ``a`` its counterparty's address,
and ``e`` exports every row the filters keep to a CSV file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Header, Input, Select

from tui.screens.modals import AskScreen, TextScreen
from tui.service import HistoryFilter
from wallet.encoding import Kind, id_text
from wallet.errors import TallyError
from wallet.store import STATUS_FILTERS, HistoryRow

KIND_FILTERS = ("send", "receive", "issue", "revoke", "open")
"""The block kinds the kind filter offers."""

PAGE_ROWS = 200
"""Rows read from the store at a time."""


class HistoryView(ScrollView, can_focus=True):
    """The account's history, one line a block, read on demand."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("up", "scroll_up", "Up", show=False),
        Binding("down", "scroll_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
    ]

    def __init__(self, read: Callable[[int | None, int], list[HistoryRow]],
                 line: Callable[[HistoryRow], str]) -> None:
        """``read(before, limit)`` gives the next rows; ``line(row)`` their text."""
        super().__init__()
        self._read = read
        self._line = line
        self.rows: list[HistoryRow] = []
        self.done = False
        self.pages_read = 0

    def restart(self) -> None:
        """Forget what was read (a new filter): read from the newest again."""
        self.rows, self.done, self.pages_read = [], False, 0
        self.scroll_to(y=0, animate=False)
        self._read_more(self.size.height or PAGE_ROWS)

    def on_mount(self) -> None:
        self._read_more(1)  # the first page; the rest as the view needs it

    def _read_more(self, upto: int) -> None:
        while not self.done and len(self.rows) < upto:
            before = self.rows[-1].ref if self.rows else None
            page = self._read(before, PAGE_ROWS)
            self.pages_read += 1
            self.rows.extend(page)
            self.done = len(page) < PAGE_ROWS
        self.virtual_size = Size(self.size.width, len(self.rows) + (0 if self.done else 1))

    @property
    def highlighted(self) -> HistoryRow | None:
        """The row at the top of the view (the one Enter, ``c`` and ``a`` act on)."""
        index = int(self.scroll_offset.y)
        return self.rows[index] if index < len(self.rows) else None

    def render_line(self, y: int) -> Strip:
        """One line on screen: the row at that height of the scrolled view."""
        top = int(self.scroll_offset.y)
        index = top + y
        if not self.done and len(self.rows) < top + self.size.height:
            self._read_more(top + self.size.height)  # what the screen shows, a page at a time
        base = self.rich_style  # the theme's colours, light or dark
        if index >= len(self.rows):
            return Strip.blank(self.size.width, base)
        style = base + Style(reverse=True) if index == int(self.scroll_offset.y) \
            and self.has_focus else base
        text = self._line(self.rows[index])[: self.size.width].ljust(self.size.width)
        return Strip([Segment(text, style)])


class HistoryScreen(Screen):
    """History with live filters, a detail view, copying and CSV export."""

    CSS_PATH = "history.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("enter", "detail", "Detail"),
        Binding("c", "copy_id", "Copy id"),
        Binding("a", "copy_address", "Copy address"),
        Binding("e", "export", "Export CSV"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filters"):
            yield Select([(s, s) for s in STATUS_FILTERS], prompt="every status", id="status")
            yield Select([(k, k) for k in KIND_FILTERS], prompt="every kind", id="kind")
            yield Input(placeholder="who: label, key, address", id="counterparty")
        svc = self.app.service  # type: ignore[attr-defined]
        yield HistoryView(self._read, svc.history_line)
        yield Footer(compact=True)

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.app.service  # type: ignore[attr-defined]

    def current_filter(self) -> HistoryFilter:
        """What the filters ask for now."""
        status = self.query_one("#status", Select).value
        kind = self.query_one("#kind", Select).value
        return HistoryFilter(
            status=status if isinstance(status, str) else None,
            kinds=(Kind[kind.upper()],) if isinstance(kind, str) else (),
            counterparty=self.query_one("#counterparty", Input).value.strip())

    def _read(self, before: int | None, limit: int) -> list[HistoryRow]:
        try:
            return self.service.history(before=before, limit=limit,
                                        where=self.current_filter())
        except TallyError as exc:  # a counterparty that is no address or key
            self.notify(str(exc), severity="warning")
            return []

    def on_mount(self) -> None:
        self.query_one(HistoryView).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        """A new filter: read from the newest again."""
        self.query_one(HistoryView).restart()

    def on_input_changed(self, event: Input.Changed) -> None:
        """The counterparty typed: filter as it is typed."""
        self.query_one(HistoryView).restart()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the counterparty: back to the rows."""
        self.query_one(HistoryView).focus()

    def action_detail(self) -> None:
        """The highlighted row in full: votes, and the fraud proof of a refused or
        disputed payment."""
        row = self.query_one(HistoryView).highlighted
        if row is not None:
            self.app.push_screen(TextScreen(self.service.detail(row), copy=id_text(row.id)))

    def action_copy_id(self) -> None:
        """Copy the highlighted block's id."""
        row = self.query_one(HistoryView).highlighted
        if row is not None:
            self.app.copy_to_clipboard(id_text(row.id))
            self.notify(f"copied the id {id_text(row.id)}")

    def action_copy_address(self) -> None:
        """Copy the address of the highlighted row's counterparty (or its device)."""
        row = self.query_one(HistoryView).highlighted
        if row is None:
            return
        address = self.service.counterparty_address(row)
        if address is None:
            self.notify("no other party's address is known for that row", severity="warning")
            return
        text = address.text()
        self.app.copy_to_clipboard(text)
        self.notify(f"copied the address {text[:16]}…")

    def action_export(self) -> None:
        """Ask where, then write every row the filters keep as CSV."""
        default = str(Path.home() / "tally-history.csv")
        self.app.push_screen(AskScreen("Export the filtered history to this CSV file:",
                                       value=default),
                             lambda path: self._export(Path(path).expanduser(),
                                                       self.current_filter())
                             if path else None)

    @work(thread=True, exclusive=True, group="export")
    def _export(self, path: Path, where: HistoryFilter) -> None:
        """Write the CSV off the event loop, saying how far it got."""
        def progress(rows: int) -> None:
            if rows and rows % 10_000 == 0:
                self.app.call_from_thread(self.notify, f"exported {rows} rows…")

        try:
            n = self.service.export_history_csv(path, where, progress)
        except (TallyError, OSError) as exc:
            self.app.call_from_thread(self.notify, f"export failed: {exc}", severity="error")
            return
        self.app.call_from_thread(self.notify, f"exported {n} rows to {path}")
