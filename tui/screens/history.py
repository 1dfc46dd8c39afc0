"""History: every block of the account, newest first, in a view that stays fast at
100,000 rows and more.

The view is a ``ScrollView`` over the Line API (``render_line``): only the lines on
screen are drawn, and rows are read from the store a page at a time (keyset paging by
the store's position) as the view scrolls toward the end of what it has read. A status
filter starts the reading over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Header, Select

from wallet.store import STATUS_FILTERS, HistoryRow

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

    def render_line(self, y: int) -> Strip:
        """One line on screen: the row at that height of the scrolled view."""
        top = int(self.scroll_offset.y)
        index = top + y
        if not self.done and len(self.rows) < top + self.size.height:
            self._read_more(top + self.size.height)  # what the screen shows, a page at a time
        if index >= len(self.rows):
            return Strip.blank(self.size.width)
        style = Style(reverse=True) if index == int(self.scroll_offset.y) and self.has_focus \
            else Style()
        text = self._line(self.rows[index])[: self.size.width].ljust(self.size.width)
        return Strip([Segment(text, style)])


class HistoryScreen(Screen):
    """History with a status filter."""

    CSS_PATH = "history.tcss"
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Select([(s, s) for s in STATUS_FILTERS], prompt="every status", id="status")
        svc = self.app.service  # type: ignore[attr-defined]
        yield HistoryView(self._read, svc.history_line)
        yield Footer()

    def _read(self, before: int | None, limit: int) -> list[HistoryRow]:
        svc = self.app.service  # type: ignore[attr-defined]
        status = self.query_one("#status", Select).value
        return svc.history(before=before, limit=limit,
                           status=status if isinstance(status, str) else None)

    def on_mount(self) -> None:
        self.query_one(HistoryView).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        """A new filter: read from the newest again."""
        self.query_one(HistoryView).restart()
