"""One conversation's outgoing side, written to its websocket by one task.

Three things wait to be sent, and the writer sends them in this order each time the
socket is ready:

1. **Fan-out.** A network hands every subscriber the item rows of new entries
   (``sync.protocol.item_rows``: each entry's Yjs item, encoded once for all
   subscribers). Whatever piled up while the socket was busy goes out as few ``Update``
   messages as the peer's limits allow, so batches grow by themselves under load and a
   delivery costs a few bytes copied, not a message.
2. **Protocol messages** (the handshake, catch-up, digests, a ``Close``), in order. A
   catch-up streams: once its window is written, ``refill`` has the connection read
   the next one from the store.
3. **A Cursor**, when the store's durable position moved: one, whatever the number of
   commits, sent only once nothing fanned out before it is still waiting and no
   catch-up is still streaming, so a peer that resumes from it misses nothing. (What a
   peer sent is acknowledged by an ``Ack``, a protocol message.)

A peer that reads too slowly is not waited for: ``deliver`` and ``put`` return False
past the limits, and the owner closes the conversation (the peer resumes from its
last cursor).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from websockets.exceptions import ConnectionClosed

from sync.messages import Cursor, encode
from sync.protocol import Connection, ItemRow


class Socket(Protocol):
    """What the writer needs of a websocket."""

    async def send(self, message: bytes) -> None:
        """Send one binary message."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the websocket."""


class Outbox:
    """What one conversation has to send, and the task that writes it."""

    def __init__(
        self,
        conn: Connection,
        ws: Socket,
        *,
        cursor: Callable[[], bytes],
        rows_max: int,
        messages_max: int,
        refill: Callable[[], None] | None = None,
    ) -> None:
        self.conn = conn
        self.refill = refill
        self.ws = ws
        self.cursor = cursor
        self.rows_max = rows_max
        self.messages_max = messages_max
        self.close_code = 1000
        self.close_reason = ""
        self._rows: list[ItemRow] = []
        self._messages: list[bytes] = []
        self._cursor_due = False
        self._ending = False
        self._wake = asyncio.Event()
        self.sent_messages = 0

    @property
    def waiting(self) -> int:
        """Messages and fanned-out entries waiting to be written."""
        return len(self._messages) + len(self._rows)

    def put(self, messages: Iterable[bytes]) -> bool:
        """Queue protocol messages; False when more than ``messages_max`` are waiting."""
        self._messages.extend(messages)
        self._wake.set()
        return len(self._messages) <= self.messages_max

    def deliver(self, rows: list[ItemRow]) -> bool:
        """Queue fanned-out entries; False when more than ``rows_max`` are waiting."""
        if self._ending:
            return True
        self._rows.extend(rows)
        self._wake.set()
        return len(self._rows) <= self.rows_max

    def cursor_moved(self) -> None:
        """The store's durable position moved: send the peer a cursor soon."""
        if not self._ending:
            self._cursor_due = True
            self._wake.set()

    def drop(self) -> None:
        """Forget everything waiting (a peer that fell too far behind)."""
        self._rows.clear()
        self._messages.clear()
        self._cursor_due = False

    def end(self, code: int = 1000, reason: str = "") -> None:
        """Send what is queued, then close the websocket with ``code`` and ``reason``."""
        if not self._ending:
            self._ending = True
            self.close_code = code
            self.close_reason = reason.encode()[:120].decode("utf-8", "ignore")
            self._wake.set()

    async def run(self) -> None:
        """The writer: until ``end``, send what waits; then close the websocket."""
        ws = self.ws
        try:
            while True:
                streaming = self.conn.streaming
                if not (self._rows or self._messages or self._ending
                        or (self._cursor_due and not streaming)
                        or (streaming and self.refill is not None)):
                    self._wake.clear()
                    await self._wake.wait()
                if self._rows:
                    rows, self._rows = self._rows, []
                    if self.conn.live:
                        for update in self.conn.update_payloads(rows):
                            await ws.send(self.conn.encode_update(update))
                            self.sent_messages += 1
                if self._messages:
                    messages, self._messages = self._messages, []
                    for m in messages:
                        await ws.send(m)
                        self.sent_messages += 1
                    continue
                if self._rows:
                    continue
                if self.conn.streaming and self.refill is not None and not self._ending:
                    self.refill()  # the catch-up's next window, read from the store
                    if self._messages or self._ending:
                        continue
                if self._cursor_due and not self.conn.streaming:
                    self._cursor_due = False
                    if self.conn.live:
                        await ws.send(encode(Cursor(self.cursor())))
                        self.sent_messages += 1
                    continue
                if self._ending:
                    break
            await ws.close(self.close_code, self.close_reason)
        except ConnectionClosed:
            return
