"""The simulated network: websockets that are queues, with faults.

A ``SimNetwork`` stands where the operating system's sockets stood. A node's
``connector`` is what ``SyncClient(connect=…)`` opens websockets with; a server (a
relay's ``handler``) is registered under its URL and gets the other end of each
connection, exactly as ``websockets.serve`` would hand it one. Each end offers what the
real code uses of a websockets connection (``send``, ``recv``, ``async for``,
``close``, ``remote_address``, ``transport.abort``) and raises websockets' own
``ConnectionClosed``, so the client and the relay run unchanged.

Every message is delivered after a simulated latency, in order, unless a fault says
otherwise: dropped (a connection that loses a message is as good as dead, so the link
is cut soon after, as TCP would), duplicated, delayed past the next one (reordered),
or cut mid-conversation; a partition cuts every link across it and refuses new ones.
Each delivery is one *step* of the simulation.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

from sim.hostile import REFUSAL_OWED, Hostile
from sim.wire import WireWatch
from sync.messages import MESSAGE_KINDS

LATENCY_S = (0.001, 0.03)
"""A message's one-way delay, uniform in this range (simulated seconds)."""
CONNECT_S = 0.005
"""How long opening a connection takes."""


@dataclass
class Faults:
    """How often each fault strikes, drawn per seed (swarm testing: some runs calm, some
    storms). Rates are per message delivered, except where said."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    cut: float = 0.0
    delay: float = 0.0
    """A message held for up to ``delay_max_s`` (in order: the link just stalls)."""
    delay_max_s: float = 2.0

    @classmethod
    def draw(cls, rng: random.Random) -> Faults:
        """A seed's own mix: each fault on or off, at its own rate."""
        def rate(hi: float) -> float:
            return rng.uniform(0, hi) if rng.random() < 0.5 else 0.0
        return cls(drop=rate(0.01), duplicate=rate(0.01), reorder=rate(0.01),
                   cut=rate(0.01), delay=rate(0.05), delay_max_s=rng.uniform(0.1, 3.0))

    def none(self) -> bool:
        """True when no fault is on."""
        return not (self.drop or self.duplicate or self.reorder or self.cut or self.delay)


@dataclass
class Stats:
    """What the network did."""

    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    cut: int = 0
    refused: int = 0
    connections: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class SimSocket:
    """One end of a simulated websocket connection."""

    def __init__(self, link: SimLink, side: int, remote: tuple[str, int]) -> None:
        self.link = link
        self.side = side
        self.remote_address = remote
        self.inbox: deque[bytes] = deque()
        self._wake: asyncio.Event = asyncio.Event()
        self.closed: ConnectionClosed | None = None
        self.transport = _Transport(self)

    # ---------------------------------------------------------- websockets' API
    async def send(self, message: bytes) -> None:
        """Hand one message to the network."""
        if self.closed is not None:
            raise self.closed
        self.link.net.transmit(self.link, self.side, bytes(message))

    async def recv(self) -> bytes:
        """The next message; raises ``ConnectionClosed`` once the connection ended."""
        while not self.inbox:
            if self.closed is not None:
                raise self.closed
            self._wake.clear()
            await self._wake.wait()
        return self.inbox.popleft()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosedOK:
                return

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection: the peer gets what was sent before, then the close."""
        if self.closed is None:
            self.link.net.close_link(self.link, self.side, code, reason)

    # ---------------------------------------------------------- the network's side
    def deliver(self, message: bytes) -> None:
        self.inbox.append(message)
        self._wake.set()

    def end(self, exc: ConnectionClosed) -> None:
        if self.closed is None:
            self.closed = exc
        self._wake.set()


class _Transport:
    def __init__(self, sock: SimSocket) -> None:
        self.sock = sock

    def abort(self) -> None:
        """Drop the connection at once (what the relay does to a peer that hangs)."""
        self.sock.link.net.cut(self.sock.link, "aborted")


@dataclass
class SimLink:
    """One connection: two ends, and when each direction's last message lands."""

    net: SimNetwork
    client: str
    server: str
    ends: list[SimSocket] = field(default_factory=list)
    last_at: list[float] = field(default_factory=lambda: [0.0, 0.0])
    alive: bool = True
    n: int = 0
    """Its number in the run (1, 2, …)."""


Handler = Callable[[SimSocket], Awaitable[None]]


class SimNetwork:
    """Every simulated connection between the world's nodes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random,
                 on_step: Callable[[str, str], None], watch: WireWatch | None = None
                 ) -> None:
        self.loop = loop
        self.rng = rng
        self.on_step = on_step
        self.watch = watch
        self.faults = Faults()
        self.stats = Stats()
        self.servers: dict[str, tuple[str, Handler]] = {}  # url → (node, handler)
        self.links: list[SimLink] = []
        self.apart: set[frozenset[str]] = set()  # pairs of nodes that cannot talk
        self.down: set[str] = set()  # nodes crashed or stopped
        self.tasks: dict[asyncio.Task[None], str] = {}  # a server's handlers → its node
        self.hostile: dict[str, Hostile] = {}  # node → its tampering (client side)
        self.tampered: dict[str, int] = {}  # tampering → how often
        self._addresses: dict[str, int] = {}

    # ---------------------------------------------------------- servers
    def serve(self, url: str, node: str, handler: Handler) -> None:
        """Accept connections to ``url`` with ``handler`` (the relay's)."""
        self.servers[url] = (node, handler)

    def address(self, node: str) -> tuple[str, int]:
        """A node's made-up IP address (what the relay's per-address limits see)."""
        n = self._addresses.setdefault(node, len(self._addresses) + 1)
        return (f"10.0.{n // 250}.{n % 250 + 1}", 40_000 + n)

    # ---------------------------------------------------------- connecting
    def connector(self, node: str) -> Callable[..., Any]:
        """``connect(url, **options)`` for ``node``, as websockets' ``connect`` is used:
        an async context manager giving the client's end."""
        @asynccontextmanager
        async def connect(url: str, **_: Any) -> AsyncIterator[SimSocket]:
            await asyncio.sleep(CONNECT_S)
            target = self.servers.get(url)
            if (target is None or node in self.down or target[0] in self.down
                    or frozenset((node, target[0])) in self.apart):
                self.stats.refused += 1
                raise ConnectionRefusedError(111, f"{url} is unreachable")
            server, handler = target
            link = SimLink(self, node, server, n=self.stats.connections + 1)
            link.ends = [SimSocket(link, 0, self.address(server)),
                         SimSocket(link, 1, self.address(node))]
            self.links.append(link)
            self.stats.connections += 1
            task = self.loop.create_task(self._serve(handler, link.ends[1]))
            self.tasks[task] = server
            task.add_done_callback(lambda t: self.tasks.pop(t, None))
            try:
                yield link.ends[0]
            finally:
                if link.alive:
                    self.close_link(link, 0, 1000, "")
        return connect

    async def _serve(self, handler: Handler, end: SimSocket) -> None:
        await handler(end)
        if end.link.alive:
            self.close_link(end.link, 1, 1000, "")

    # ---------------------------------------------------------- carrying
    def transmit(self, link: SimLink, side: int, message: bytes) -> None:
        """One message from ``side`` of ``link`` toward the other end, with faults."""
        if not link.alive:
            return
        how = None
        if side == 0 and link.client in self.hostile:
            message, how = self.hostile[link.client].tamper(message, self.rng)
            if how is not None:
                self.tampered[how] = self.tampered.get(how, 0) + 1
        if self.watch is not None:  # side 1 is the server's end
            self.watch.sent(link.n, link.server, side == 1, message)
        f, rng = self.faults, self.rng
        if f.drop and rng.random() < f.drop:
            self.stats.dropped += 1
            self.loop.call_later(rng.uniform(*LATENCY_S), self.cut, link, "lost a message")
            return
        at = self.loop.time() + rng.uniform(*LATENCY_S)
        if f.delay and rng.random() < f.delay:
            self.stats.delayed += 1
            at += rng.uniform(0, f.delay_max_s)
        reorder = f.reorder and rng.random() < f.reorder
        if reorder:
            self.stats.reordered += 1  # lands whenever it lands, not after the last one
        else:
            at = max(at, link.last_at[side])
            link.last_at[side] = at
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        self.stats.duplicated += copies - 1
        for _ in range(copies):
            self.loop.call_at(at, self._land, link, 1 - side, message, how in REFUSAL_OWED)
        if f.cut and rng.random() < f.cut:
            self.loop.call_at(at + rng.uniform(0, 0.05), self.cut, link, "cut")

    def _land(self, link: SimLink, side: int, message: bytes, owed: bool = False) -> None:
        if not link.alive:
            return
        self.stats.delivered += 1
        if self.watch is not None:
            self.watch.landed(link.n, link.server, side == 1, message, refusal_owed=owed)
        link.ends[side].deliver(message)
        self.on_step(MESSAGE_KINDS.get(message[0], "unknown") if message else "empty",
                     link.server if side == 1 else link.client)

    def close_link(self, link: SimLink, side: int, code: int, reason: str) -> None:
        """A clean close from ``side``: the other end gets it after what is in flight."""
        if not link.alive:
            return
        at = max(self.loop.time() + LATENCY_S[0], link.last_at[side])
        link.ends[side].end(ConnectionClosedOK(None, Close(code, reason))
                            if code == 1000 else
                            ConnectionClosedError(None, Close(code, reason)))

        def land() -> None:
            frame = Close(code, reason)
            other = link.ends[1 - side]
            other.end(ConnectionClosedOK(frame, None) if code == 1000
                      else ConnectionClosedError(frame, None))
            self._forget(link)
        self.loop.call_at(at, land)

    def cut(self, link: SimLink, why: str) -> None:
        """The connection drops with no close (a cable pulled, a process gone)."""
        if not link.alive:
            return
        self.stats.cut += 1
        for end in link.ends:
            end.end(ConnectionClosedError(None, None))
        self._forget(link)

    def _forget(self, link: SimLink) -> None:
        link.alive = False
        if link in self.links:
            self.links.remove(link)

    # ---------------------------------------------------------- partitions, crashes
    def isolate(self, node: str) -> None:
        """A node goes down: every link it has is cut, new ones refused."""
        self.down.add(node)
        for link in list(self.links):
            if node in (link.client, link.server):
                self.cut(link, f"{node} went down")
        for task, server in list(self.tasks.items()):  # its handlers die with it
            if server == node:
                task.cancel()

    def revive(self, node: str) -> None:
        """A node is reachable again."""
        self.down.discard(node)

    def partition(self, side_a: set[str], side_b: set[str]) -> None:
        """No node of ``side_a`` can talk with one of ``side_b`` until ``heal``."""
        for a in side_a:
            for b in side_b:
                self.apart.add(frozenset((a, b)))
        for link in list(self.links):
            if frozenset((link.client, link.server)) in self.apart:
                self.cut(link, "partitioned")

    def heal(self) -> None:
        """Every partition heals."""
        self.apart.clear()
