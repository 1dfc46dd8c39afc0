"""``tally serve``: a device (a till) that payers sync with directly, over websockets.

The till answers with the same protocol as a relay, as the server side: it proves its
own device key (role device), serves only its own network (a hello for another gets
``WRONG_NETWORK``), resumes each payer from the cursor it gave that payer's device last
time (store meta ``cursor:<device key>``), claims payments to it at once, and pushes its
own new entries (those claims, and anything signed by another ``tally`` on this home) to
every connected peer. It keeps running until ``stop()`` (a signal in the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from functools import partial

from websockets.asyncio.server import ServerConnection, serve

from sync.client import STOP_GRACE_S, Down, PeerResult, Problem, SyncEvent, WalletSync
from sync.errors import CloseCode
from sync.messages import Hello
from sync.transport import Link, LinkDown, websocket_options
from wallet.encoding import key_text
from wallet.errors import WalletError
from wallet.wallet import Wallet

CONNECTIONS_MAX = 64
"""Peers served at once; more are turned away with ``CloseCode.OVERLOADED``."""
RESULTS_KEPT_SESSIONS = 1_000
"""Peer sessions whose ``PeerResult`` a ``Listener`` keeps in ``results`` (the most
recent ones): a till serving payers for months must not grow without end. A session's
failure is also reported as its event when it happens."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a host and a port number."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise WalletError(f"--listen {text!r}: give HOST:PORT, like 0.0.0.0:8765")
    return host, int(port_text)


class Listener(WalletSync):
    """Serves this wallet's network to peers that connect (``tally serve``)."""

    def __init__(
        self,
        wallet: Wallet,
        passphrase: str,
        *,
        host: str,
        port: int,
        on_event: Callable[[SyncEvent], None] | None = None,
        connections_max: int = CONNECTIONS_MAX,
        **kw: float,
    ) -> None:
        super().__init__(wallet, passphrase, on_event=on_event, **kw)
        self.host = host
        self.port_number = port
        self.connections_max = connections_max
        self.results: deque[PeerResult] = deque(maxlen=RESULTS_KEPT_SESSIONS)
        """The most recent sessions, oldest first (``RESULTS_KEPT_SESSIONS``)."""
        self.url: str | None = None
        self._active = 0

    @property
    def active(self) -> int:
        """Peer sessions in progress (from a peer's hello to the end of its session)."""
        return self._active

    async def run(self, ready: Callable[[str], None] | None = None) -> list[PeerResult]:
        """Listen until ``stop()``; ``ready`` gets the URL once the socket is bound.
        Returns the sessions kept in ``results`` (at most ``RESULTS_KEPT_SESSIONS``)."""
        try:
            with self.pushing_on_commits():  # what this wallet commits goes out at once
                async with serve(self.serve_one, self.host, self.port_number,
                                 **websocket_options()) as server:
                    bound = server.sockets[0].getsockname()
                    host = f"[{self.host}]" if ":" in self.host else self.host
                    self.url = f"ws://{host}:{bound[1]}"
                    self.claim_soon()  # payments that came in while it was not listening
                    if ready is not None:
                        ready(self.url)
                    await self.stopping.wait()
                    # Each session closes with SHUTDOWN and its claims pushed, before the
                    # server cuts what is left (close code 1001).
                    deadline = asyncio.get_running_loop().time() + STOP_GRACE_S
                    while self._active and asyncio.get_running_loop().time() < deadline:
                        await asyncio.sleep(0.02)
        except OSError as exc:
            raise WalletError(f"cannot listen on {self.host}:{self.port_number}: "
                              f"{exc.strerror or exc}") from exc
        finally:
            await self.claims_done()
        return list(self.results)

    async def serve_one(self, ws: ServerConnection) -> None:
        """One peer, from its hello to the end of the conversation (what `run` serves
        each websocket with; a simulation hands it its own)."""
        remote = ws.remote_address
        name = f"{remote[0]}:{remote[1]}" if remote else "peer"
        result = PeerResult(name)
        cursor_key: list[str] = []

        def check_peer(h: Hello) -> tuple[CloseCode, str] | None:
            """(On the worker, at the peer's hello) resume from its last cursor."""
            key = f"cursor:{key_text(h.key)}"
            cursor_key.append(key)
            conn.cursor_from_peer = self.wallet.store.get_meta(key) or b""
            return None

        conn = await self.offload(partial(self.connection, client=False,
                                          check_peer=check_peer))
        link = Link(ws, conn, offload=self.offload)
        refusal = None
        if self.stopping.is_set():  # a peer that connects while the till stops
            refusal = (CloseCode.SHUTDOWN, "this till is stopping; reconnect later")
        elif self._active >= self.connections_max:
            refusal = (CloseCode.OVERLOADED, f"this till serves {self.connections_max} "
                       "peers at once; try again soon")
        if refusal is not None:
            await link.call(lambda c, r=refusal: c.close(*r))
            with contextlib.suppress(Exception):
                await link.run(_ignore)
            return
        self._active += 1
        self.results.append(result)
        try:
            closed = await self.session(link, name, result,
                                        cursor_key=lambda: cursor_key[0] if cursor_key else None,
                                        stop_code=CloseCode.SHUTDOWN)
            if closed.code != CloseCode.DONE:
                who = "closed" if closed.by_peer else "was closed"
                result.error = f"{closed.reason} ({who})"
                self.on_event(Down(name, f"{name}: {result.error}", None))
        except LinkDown as exc:
            result.error = str(exc)
            self.on_event(Down(name, f"{name}: {exc}", None))
        except Exception as exc:  # never die on what one peer does
            result.error = f"{type(exc).__name__}: {exc}"
            self.on_event(Problem(f"{name}: {result.error}"))
        finally:
            self._active -= 1


async def _ignore(events: object) -> None:
    """Events of a conversation turned away."""
    await asyncio.sleep(0)
