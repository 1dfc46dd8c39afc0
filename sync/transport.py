"""Drives one sans-I/O ``Connection`` over one websockets connection (asyncio).

This is plumbing only: every decision is the protocol's (``sync.protocol``). A ``Link``
feeds each binary message it reads to ``receive_data``, writes everything
``data_to_send`` hands back, in order, and returns the events of each step to its
caller. The protocol's work (gate, verification, the store) can run off the event loop
through ``offload`` (one worker thread per wallet, so the store is used by one thread at
a time), which keeps websockets' keepalive answered during a long catch-up.

Limits, each a named parameter with a safe default:

- ``MAX_MESSAGE_BYTES``: the largest message read; websockets refuses bigger ones
  (close 1009) before the protocol sees them. It is the protocol's own limit.
- ``QUEUE_MESSAGES_MAX`` and ``QUEUE_BYTES_MAX``: what may wait to be written to a peer
  that reads too slowly. A step that would take the queue past either while earlier
  messages still wait ends the conversation with ``CloseCode.OVERLOADED`` rather than
  growing without bound (an empty queue takes one whole step: the protocol bounds it).
  This side's own pushes wait for room instead (``Link.writable``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from websockets.asyncio.connection import Connection as WebSocket
from websockets.exceptions import ConnectionClosed as WebSocketClosed

from sync.errors import CloseCode, SyncError
from sync.protocol import MAX_MESSAGE_BYTES, Closed, Connection, Event

QUEUE_MESSAGES_MAX = 1024
QUEUE_BYTES_MAX = 64 << 20
FLUSH_TIMEOUT_S = 10.0

T = TypeVar("T")
Offload = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a function (the protocol's work) somewhere and awaits its result."""


async def inline(fn: Callable[[], T]) -> T:
    """The default ``Offload``: run on the event loop itself."""
    return fn()


def websocket_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Options for ``websockets.asyncio.client.connect`` and ``…server.serve``.

    ``max_queue`` bounds the messages websockets buffers before we read them; the
    protocol's messages are already compressed entries, so no per-message deflate.
    """
    return {"max_size": max_message_bytes, "max_queue": 16, "compression": None}


class LinkDown(SyncError):
    """The websocket connection ended without the protocol's ``Close``."""


class Link:
    """One ``Connection`` driven over one websocket connection.

    ``run(handle)`` reads until the conversation ends and returns its ``Closed`` event;
    ``call(fn)`` runs ``fn(connection)`` (``send_entries``, ``close``…) from another
    task and returns the events it caused. Raises ``LinkDown`` when the socket drops.
    """

    def __init__(
        self,
        ws: WebSocket,
        conn: Connection,
        *,
        offload: Offload = inline,
        queue_messages_max: int = QUEUE_MESSAGES_MAX,
        queue_bytes_max: int = QUEUE_BYTES_MAX,
    ) -> None:
        self.ws = ws
        self.conn = conn
        self.offload = offload
        self.queue_messages_max = queue_messages_max
        self.queue_bytes_max = queue_bytes_max
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._roomy = asyncio.Event()
        self._roomy.set()
        self._closed: Closed | None = None
        self._lock = asyncio.Lock()  # one protocol step at a time, in order

    @property
    def closed(self) -> Closed | None:
        """How the conversation ended, once it has."""
        return self._closed

    async def call(self, fn: Callable[[Connection], object]) -> list[Event]:
        """Run ``fn`` on the connection, queue what it has to send; its events."""
        async with self._lock:
            return await self._step(fn)

    async def exclusive(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (offloaded like the protocol's steps) between two steps, never
        between a step that received entries and the handling of its events: what it
        reads of the store, the handler has already accounted for."""
        async with self._lock:
            return await self.offload(fn)

    async def _step(self, fn: Callable[[Connection], object]) -> list[Event]:
        """``call``, with the lock held by the caller."""
        conn = self.conn

        def step() -> tuple[list[bytes], list[Event]]:
            fn(conn)
            return conn.data_to_send(), conn.events_received()

        out, events = await self.offload(step)
        if not self._queue or self._fits(out):  # an idle queue takes one whole step
            self._enqueue(out)
        else:
            self._queue.clear()
            self._queued_bytes = 0

            def overloaded() -> tuple[list[bytes], list[Event]]:
                conn.close(CloseCode.OVERLOADED,
                           "the peer reads too slowly: too much queued for it")
                return conn.data_to_send(), conn.events_received()

            close_out, more = await self.offload(overloaded)
            self._enqueue(close_out)
            events = [*events, *more]
        for e in events:
            if isinstance(e, Closed) and self._closed is None:
                self._closed = e
                self._wake.set()  # the writer closes the socket once the queue is out
                self._roomy.set()
        return events

    async def writable(self) -> None:
        """Wait until at most half of the queue's limits are used (backpressure for
        this side's own pushes, so that they slow down rather than overload)."""
        while not self._has_room():
            self._roomy.clear()
            await self._roomy.wait()

    def _has_room(self) -> bool:
        return (len(self._queue) * 2 <= self.queue_messages_max
                and self._queued_bytes * 2 <= self.queue_bytes_max) or self._closed is not None

    def _fits(self, out: list[bytes]) -> bool:
        return (len(self._queue) + len(out) <= self.queue_messages_max
                and self._queued_bytes + sum(map(len, out)) <= self.queue_bytes_max)

    def _enqueue(self, out: list[bytes]) -> None:
        for data in out:
            self._queue.append(data)
            self._queued_bytes += len(data)
        if out:
            self._wake.set()

    async def _write(self) -> None:
        """Write queued messages in order; close the socket after the protocol's Close.
        A catch-up that streams is asked for its next window once the queue is out."""
        while True:
            while self._queue:
                data = self._queue.popleft()
                self._queued_bytes -= len(data)
                if self._has_room():
                    self._roomy.set()
                await self.ws.send(data)
            if self.conn.streaming and self._closed is None:
                await self.call(lambda c: c.next_window())  # read from the store now
                continue
            if self._closed is not None:
                await self.ws.close()
                return
            self._wake.clear()
            await self._wake.wait()

    async def run(self, handle: Callable[[list[Event]], Awaitable[None]]) -> Closed:
        """Start (a client speaks first), then feed every message until the end.

        ``handle`` gets the events of each step, in order. Returns the ``Closed`` event;
        raises ``LinkDown`` if the socket dropped first.
        """
        writer = asyncio.create_task(self._write(), name="sync-writer")
        recv: asyncio.Future[Any] | None = None
        try:
            if self.conn.client:
                async with self._lock:  # a step and the handling of its events, whole
                    await handle(await self._step(lambda c: c.initiate()))
            while self._closed is None:
                recv = asyncio.ensure_future(self.ws.recv())
                done, _ = await asyncio.wait({recv, writer}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    with contextlib.suppress(asyncio.CancelledError, WebSocketClosed):
                        await recv
                    writer.result()  # re-raise what stopped the writer
                    if self._closed is None:
                        raise LinkDown("the connection stopped writing")
                    break
                try:
                    data = recv.result()
                except WebSocketClosed as exc:
                    if self._closed is not None:  # we closed while it read
                        break
                    raise LinkDown(_close_text(exc)) from None
                async with self._lock:  # a step and the handling of its events, whole
                    if isinstance(data, str):
                        events = await self._step(lambda c: c.close(
                            CloseCode.PROTOCOL, "a text message; sync is binary"))
                    else:
                        events = await self._step(lambda c, d=data: c.receive_data(d))
                    await handle(events)
            assert self._closed is not None
            with contextlib.suppress(WebSocketClosed, TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), FLUSH_TIMEOUT_S)
            return self._closed
        except WebSocketClosed as exc:
            if self._closed is not None:
                return self._closed
            raise LinkDown(_close_text(exc)) from None
        finally:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            if recv is not None:  # a read still out (this task was cancelled): end it
                recv.cancel()     # here, not as "exception never retrieved" later
                with contextlib.suppress(BaseException):
                    await recv


def _close_text(exc: WebSocketClosed) -> str:
    """Why a websocket connection ended, for people."""
    sent, rcvd = exc.sent, exc.rcvd
    if sent is not None and sent.code == 1009:  # CloseCode.MESSAGE_TOO_BIG
        return f"the peer sent a message over the size limit ({sent.reason or 'too big'})"
    if rcvd is None:
        return "the connection dropped"
    reason = f": {rcvd.reason}" if rcvd.reason else ""
    return f"the peer closed the websocket (code {rcvd.code}{reason})"
