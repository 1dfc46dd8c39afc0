"""Relay-to-relay peering (DESIGN §7): this relay as a client of another, role node.

For each network it serves, the relay keeps one websocket to each ``--peer URL``,
speaking the same sync protocol a device speaks, with its node key (and its witness
key, when it has one). The link is a subscriber of the network like any session:
entries accepted here are fanned out to the peer, and entries from the peer pass the
gate, are stored and fanned out to the local subscribers. A dropped link reconnects
with exponential backoff and resumes from the peer's last cursor. Entries bounce back
at most once: the gate drops entries already held, so nothing is fanned out again.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from server.outbox import Outbox
from sync.errors import CloseCode
from sync.messages import ROLE_NODE
from sync.protocol import Closed, Connection, CursorReceived, ItemRow, Ready, Received
from wallet.encoding import id_text, short

if TYPE_CHECKING:
    from server.network import ServedNetwork
    from server.relay import Relay

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
QUEUE_MESSAGES_MAX = 10_000
QUEUE_ENTRIES_MAX = 200_000


class PeerLink:
    """One conversation with a peer relay about one network (this side is the client)."""

    def __init__(self, relay: Relay, net: ServedNetwork, ws: ClientConnection,
                 cursor: bytes) -> None:
        self.relay = relay
        self.net = net
        self.ws = ws
        self.url = ""
        self.cursor = cursor
        self.ready = False
        self.conn = Connection(
            client=True, key=relay.config.node_key, role=ROLE_NODE, port=net.port,
            witness_key=relay.config.witness_key, cursor=cursor,
            max_message_bytes=relay.config.limits.message_bytes_max,
        )
        self.outbox = Outbox(self.conn, ws, cursor=net.port.cursor,
                             rows_max=QUEUE_ENTRIES_MAX, messages_max=QUEUE_MESSAGES_MAX,
                             refill=self.next_window)

    def next_window(self) -> None:
        """The outbox wrote what it had: a streaming catch-up reads its next window."""
        self.conn.next_window()
        self.push()

    def push(self) -> None:
        """Queue what the connection has to send; drop the link if the peer lags too far."""
        fits = self.outbox.put(self.conn.data_to_send())
        if self.conn.state == "closed":
            self.outbox.end()
        elif not fits:
            self._overloaded()

    def deliver(self, rows: list[ItemRow]) -> None:
        """Fan-out: new entries for the peer relay."""
        if not self.outbox.deliver(rows):
            self._overloaded()

    def cursor_moved(self) -> None:
        """The store's durable position moved: tell the peer relay."""
        self.outbox.cursor_moved()

    def _overloaded(self) -> None:
        self.outbox.drop()
        self.conn.close(CloseCode.OVERLOADED, "the peer reads too slowly")
        self.push()

    async def run(self) -> None:
        """Handshake, catch up both ways, then relay live entries until either side ends."""
        writer = asyncio.create_task(self.outbox.run())
        try:
            self.conn.initiate()
            self.push()
            async for data in self.ws:
                if isinstance(data, str):
                    data = data.encode()
                self.relay.writing()
                self.conn.receive_data(data)
                self._events()
                self.push()
                if self.conn.state == "closed":
                    break
        finally:
            self.net.subscribers.pop(self, None)
            self.outbox.end()
            try:
                await asyncio.wait_for(writer, 2.0)
            except (TimeoutError, ConnectionClosed):
                writer.cancel()

    def _events(self) -> None:
        tel = self.relay.telemetry
        for ev in self.conn.events_received():
            if isinstance(ev, Ready):
                self.ready = True
                self.net.subscribers[self] = None
                tel.log("peer_ready", url=self.url, network=id_text(self.net.network),
                        key=short(ev.peer_key), entries=ev.peer_count)
            elif isinstance(ev, Received):
                self.net.accepted(ev.entries, origin=self)
            elif isinstance(ev, CursorReceived):
                self.cursor = ev.cursor
            elif isinstance(ev, Closed):
                tel.log("peer_closed", url=self.url, network=id_text(self.net.network),
                        by_peer=ev.by_peer, code=_code_name(ev.code), reason=ev.reason)


def _code_name(code: int) -> str:
    try:
        return CloseCode(code).name.lower()
    except ValueError:
        return f"code_{code}"


async def link_forever(relay: Relay, net: ServedNetwork, url: str) -> None:
    """One network's link to one peer: connect, sync, and on any failure back off.

    The peer's last cursor is kept in the store, so a restarted relay resumes from it.
    """
    delay = BACKOFF_FIRST_S
    key = f"peer_cursor:{url}:{id_text(net.network)}"
    cursor = relay.store.get_meta(key) or b""
    tls = ssl.create_default_context() if url.startswith("wss://") else None
    while True:
        link: PeerLink | None = None
        try:
            async with connect(url, ssl=tls,
                               max_size=relay.config.limits.message_bytes_max * 2,
                               open_timeout=10, close_timeout=2) as ws:
                link = PeerLink(relay, net, ws, cursor)
                link.url = url
                await link.run()
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
            relay.telemetry.log("peer_unreachable", url=url, network=id_text(net.network),
                                error=f"{type(exc).__name__}: {exc}",
                                retry_s=round(delay, 2))
        except InvalidURI as exc:
            relay.telemetry.log("peer_bad_url", url=url, error=str(exc))
            return
        finally:
            if link is not None and link.cursor != cursor:
                cursor = link.cursor
                relay.store.set_meta(key, cursor)
        if link is not None and link.ready:
            delay = BACKOFF_FIRST_S
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, BACKOFF_MAX_S)
