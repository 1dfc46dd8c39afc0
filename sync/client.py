"""``tally sync``: a wallet keeps in sync with relays and peers over websockets.

``SyncClient`` runs one task per URL. Each connects with the device key (role device,
the device's ``open`` in the hello), resumes from the cursor that peer gave it last time
(store meta ``cursor:<url>``), catches up both ways, then stays live: it pushes every
entry its store gains (signed here, by another ``tally`` process on the same home, or
claimed automatically) and takes what the peer pushes. When a link drops it reconnects
with exponential backoff and full jitter, so work done offline goes out when the link
returns. With ``once`` it returns when every URL is in sync or has failed.

``WalletSync`` is what the client and the till's listener (``sync.listener``) share:
the worker thread that owns the wallet's store, the automatic claim of payments to this
device, and one live ``session`` per link.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from sync.errors import CloseCode
from sync.messages import ROLE_DEVICE, ROLES
from sync.port import WalletPort, make_cursor
from sync.protocol import (
    CaughtUp,
    Closed,
    Connection,
    CursorReceived,
    Event,
    InSync,
    Ready,
    Received,
)
from sync.transport import Link, LinkDown, Offload, websocket_options
from wallet.encoding import Block, Entry, Kind, entry_hash, key_text, parse_entry
from wallet.errors import TallyError, WalletError
from wallet.wallet import Wallet, error_text

POLL_S = 0.5
"""How often a live session looks for rows another process wrote to the store (SQLite
tells no other process of a commit). What this process commits on the wallet — a
payment the app signs, entries a peer sent — is pushed at once: the client subscribes
to the wallet's commits."""
PUSH_ROWS_MAX = 20_000
"""Rows read and sent in one round of pushing."""
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 30.0
"""Reconnect delays: uniform in [0, min(cap, base·2^attempt)] (full jitter)."""
STOP_GRACE_S = 3.0
"""On stop, how long a link may take to close before it is cut."""
OPEN_TIMEOUT_S = 10.0
"""How long a websocket connection may take to open."""
HELLO_TIMEOUT_S = 10.0
"""How long a peer may take to finish the hello once connected."""
SETTLE_TIMEOUT_S = 30.0
"""With ``once``: how long after the catch-up the two sets may still differ."""
WATCH_S = 0.5
VOTES_TIMEOUT_S = 10.0
"""With ``once``: how long to wait, once in sync with a witness, for its votes on what
this device signed (so a person does not see "valid" and have to sync again)."""
CLAIMABLE = (Kind.SEND, Kind.ISSUE, Kind.REVOKE)
CLAIMED_KEPT_CLAIMS = 10_000
"""Automatic claims a ``WalletSync`` keeps in ``claimed`` (the most recent ones, a few
MB at most): a till that runs for months must not grow without end. Every claim is also
reported as its ``Claimed`` event when it happens; the summary ``tally sync`` and
``tally serve`` print at the end lists only the claims kept."""


# ------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class Linked:
    """A peer proved its key; the catch-up starts."""

    url: str
    peer_key: bytes
    role: str


@dataclass(frozen=True, slots=True)
class Progress:
    """Entries received so far in a catch-up."""

    url: str
    received: int


@dataclass(frozen=True, slots=True)
class Synced:
    """Both sides hold the same set of ``count`` entries."""

    url: str
    count: int
    received: int


@dataclass(frozen=True, slots=True)
class Pushed:
    """New local entries went out live."""

    url: str
    count: int


@dataclass(frozen=True, slots=True)
class AwaitingVotes:
    """In sync with a witness; waiting (at most ``timeout_s``) for its votes on the
    ``blocks`` of this device that are valid but not final yet."""

    url: str
    blocks: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class VotesIn:
    """The wait for votes ended: ``waiting`` blocks of this device are still not final."""

    url: str
    waiting: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """A payment to this device was claimed automatically."""

    block_id: bytes
    claims: bytes
    amount: int | None
    payer: bytes
    status: str


@dataclass(frozen=True, slots=True)
class Down:
    """A link failed or dropped, ``reason`` naming the peer; ``retry_s`` until the next
    attempt (None: no retry)."""

    url: str
    reason: str
    retry_s: float | None


@dataclass(frozen=True, slots=True)
class Problem:
    """Something went wrong here that sync goes on without (e.g. a claim refused)."""

    reason: str


SyncEvent = Linked | Progress | Synced | Pushed | Claimed | Down | Problem


@dataclass(slots=True)
class PeerResult:
    """What happened with one URL."""

    url: str
    kind: str = "peer"
    in_sync: bool = False
    error: str | None = None
    received: int = 0
    pushed: int = 0
    peer_key: bytes = b""

    def doc(self) -> dict[str, Any]:
        """As JSON."""
        return {"url": self.url, "kind": self.kind, "in_sync": self.in_sync, "error": self.error,
                "received": self.received, "pushed": self.pushed,
                "peer": key_text(self.peer_key) if self.peer_key else None}


@dataclass(slots=True)
class _Session:
    """One live conversation's bookkeeping."""

    name: str
    sent_pos: int
    result: PeerResult
    live: bool = False
    caught_up: bool = False
    caught_up_at: float = 0.0
    from_peer: set[bytes] = field(default_factory=set)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    witness: bytes = b""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    pushing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while rows are read and sent: the push loop and the session's own steps
    push one at a time, so no row goes out twice and ``sent_pos`` only moves on."""


@dataclass(frozen=True, slots=True)
class _Failure:
    """Why an attempt failed; ``permanent``: trying again cannot help."""

    reason: str
    permanent: bool = False


def backoff_s(attempt: int, *, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S,
              rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base·2^attempt)]."""
    assert attempt >= 0
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 32)))
    return (rng or random).uniform(0, ceiling)


def os_reason(exc: OSError) -> str:
    """What went wrong with a connection, for people (asyncio's texts name no cause)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = (getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
               or exc.strerror or exc)
        return (f"TLS: {why}".lower() + " (a relay with a self-signed certificate? trust "
                "it with --ca FILE)")
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {getattr(exc, 'reason', None) or exc.strerror or exc}".lower()
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})".lower()
    if isinstance(exc, ConnectionError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc.strerror or exc)


def tls_context(ca: Path | str | None = None) -> ssl.SSLContext:
    """The TLS context for ``wss://`` URLs: the system's trust store, and also ``ca`` when
    given (a PEM file of CA certificates, or a relay's own self-signed certificate).
    Host names are checked as usual. Raises ``WalletError`` when ``ca`` cannot be read or
    holds no certificate."""
    ctx = ssl.create_default_context()
    if ca is None:
        return ctx
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca))
    except ssl.SSLError as exc:
        raise WalletError(
            f"{ca} holds no certificate to trust: --ca takes a PEM file of CA certificates, "
            f"or the relay's own certificate ({getattr(exc, 'reason', None) or exc})"
        ) from exc
    except OSError as exc:
        raise WalletError(f"cannot read the CA file {ca}: {exc.strerror or exc}") from exc
    return ctx


def check_url(url: str) -> str:
    """A websocket URL, or a WalletError saying what one looks like."""
    if not url.startswith(("ws://", "wss://")) or len(url) <= len("wss://"):
        raise WalletError(f"{url!r} is not a websocket URL: give ws://HOST:PORT or wss://HOST")
    return url


class WalletSync:
    """A wallet's side of sync, shared by the client and the listener.

    Every use of the wallet runs on one worker thread (``offload``), one call at a
    time, so the event loop stays free for the sockets and the store is never used by
    two threads at once.
    """

    def __init__(
        self,
        wallet: Wallet,
        passphrase: str,
        *,
        on_event: Callable[[SyncEvent], None] | None = None,
        poll_s: float = POLL_S,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        settle_timeout_s: float = SETTLE_TIMEOUT_S,
        votes_timeout_s: float = VOTES_TIMEOUT_S,
        pool: ThreadPoolExecutor | None = None,
        offload: Offload | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``pool``: the one thread the wallet is used on, when its owner has one (the
        wallet service's); else this makes its own. ``offload``: how to run the wallet's
        work instead (a simulation runs it inline, on its one thread). ``rng``: the
        randomness of hellos and backoff (a simulation seeds it)."""
        if wallet.device is None:
            raise WalletError("this wallet has no device yet: run `tally init`")
        self.wallet = wallet
        self.passphrase = passphrase
        self.on_event = on_event or (lambda e: None)
        self.poll_s = poll_s
        self.hello_timeout_s = hello_timeout_s
        self.settle_timeout_s = settle_timeout_s
        self.votes_timeout_s = votes_timeout_s
        self.device: bytes = wallet.device
        self.key: SigningKey = wallet.load_key("device", passphrase)
        if bytes(self.key.verify_key) != self.device:
            raise WalletError("the device key does not match this wallet")
        self.port = WalletPort(wallet)
        self._offload = offload
        self.rng = rng
        self._own_pool = pool is None and offload is None
        self._pool = pool or (None if offload is not None else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="wallet"))
        self._claiming: asyncio.Task[None] | None = None
        self._claim_again = False
        self._moved = asyncio.Event()
        self.stopping = asyncio.Event()
        self.claimed: deque[Claimed] = deque(maxlen=CLAIMED_KEPT_CLAIMS)
        """The most recent automatic claims, oldest first (``CLAIMED_KEPT_CLAIMS``)."""

    def _own_open(self) -> bytes:
        """(On the worker) this device's open, for the hello; empty while it has none
        (a paired device whose open has not come yet)."""
        led = self.wallet.ledger
        d = led.devices.get(self.device)
        first = led.blocks.get(d.main[0]) if d is not None and d.main else None
        if first is not None and first.kind == Kind.OPEN:
            return first.raw
        for b in led.blocks.values():
            if b.kind == Kind.OPEN and b.device == self.device:
                return b.raw
        return b""

    @contextlib.contextmanager
    def pushing_on_commits(self) -> Iterator[None]:
        """(On the event loop) while in it, every commit of this wallet (a payment the
        app signs, entries a peer sent) wakes the sessions' pushes at once."""
        loop = asyncio.get_running_loop()

        def committed(changes: object) -> None:  # on the wallet's thread
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._moved.set)

        self.wallet.subscribe(committed)
        try:
            yield
        finally:
            self.wallet.unsubscribe(committed)

    async def offload(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the wallet's worker thread (or the owner's ``offload``)."""
        if self._offload is not None:
            return await self._offload(fn)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def shutdown(self) -> None:
        """Stop the worker thread (after the last session), unless it is the owner's."""
        if self._own_pool and self._pool is not None:
            self._pool.shutdown(wait=True)

    def stop(self) -> None:
        """Ask every session to end (a signal, or the caller is done)."""
        self.stopping.set()

    # ------------------------------------------------------------ claims
    def _for_me(self, entries: tuple[Entry, ...] | list[Entry]) -> bool:
        return any(isinstance(e, Block) and e.kind in CLAIMABLE and e.to_device == self.device
                   for e in entries)

    def claim_soon(self) -> None:
        """Claim what is addressed to this device (again, if a claim is running)."""
        if self._claiming is not None and not self._claiming.done():
            self._claim_again = True
            return
        self._claiming = asyncio.create_task(self._claim(), name="sync-claim")

    async def claims_done(self) -> None:
        """Wait for a running claim to finish."""
        while self._claiming is not None and not self._claiming.done():
            await asyncio.shield(self._claiming)

    async def _claim(self) -> None:
        while True:
            self._claim_again = False
            try:
                done = await self.offload(self._receive)
            except TallyError as exc:
                self.on_event(Problem(f"payments to this device wait: {error_text(exc)}"))
                return
            for c in done:
                self.claimed.append(c)
                self.on_event(c)
            if done:
                self._moved.set()
            if not self._claim_again:
                return

    def _receive(self) -> list[Claimed]:
        out = []
        for block, st in self.wallet.receive(self.passphrase):
            led = self.wallet.ledger
            paid = led.blocks[block.claim]
            amount = paid.amount if paid.kind != Kind.REVOKE else led.revoke_value(paid.id)
            out.append(Claimed(block.id, paid.id, amount, paid.device, st.label))
        return out

    # ------------------------------------------------------------ sessions
    def connection(self, *, client: bool, cursor: bytes = b"", **kw: Any) -> Connection:
        """(On the worker) a protocol connection as this device, over this wallet's
        port, with the device's open as the store has it now."""
        if self.rng is not None:
            kw.setdefault("random_bytes", self.rng.randbytes)
        return Connection(client=client, key=self.key, role=ROLE_DEVICE, port=self.port,
                          open_entry=self._own_open(), cursor=cursor, **kw)

    async def session(self, link: Link, name: str, result: PeerResult, *,
                      cursor_key: Callable[[], str | None], once: bool = False,
                      stop_code: CloseCode = CloseCode.DONE) -> Closed:
        """Run one conversation to its end: catch up, then push and take live updates.

        ``cursor_key`` names the meta record where the peer's cursors are kept (None
        while it is not known). With ``once`` the conversation ends, once in sync and
        with this side's claims pushed, with a normal close.
        """
        start = await self.offload(self._start_position)
        s = _Session(name, start, result)

        async def handle(events: list[Event]) -> None:
            for e in events:
                await self._on_event(s, e, cursor_key)

        pusher = asyncio.create_task(self._push_loop(link, s), name="sync-push")
        ender = asyncio.create_task(self._end_when_done(link, s, once, stop_code),
                                    name="sync-end")
        try:
            return await link.run(handle)
        finally:
            for t in (pusher, ender):
                t.cancel()
            for t in (pusher, ender):
                with contextlib.suppress(BaseException):
                    await t

    def _start_position(self) -> int:
        """(On the worker) where a session's pushes start: every row up to it is in the
        ledger the catch-up answers from, rows other processes wrote included (read the
        position first, then take their rows in, so none falls in between)."""
        start = self.wallet.store.high_water()
        self.wallet.refresh()
        return start

    async def _on_event(self, s: _Session, e: Event, cursor_key: Callable[[], str | None]
                        ) -> None:
        if isinstance(e, Ready):
            s.result.peer_key = e.peer_key
            s.witness = e.witness
            self.on_event(Linked(s.name, e.peer_key, ROLES.get(e.role, f"role {e.role}")))
        elif isinstance(e, Received):
            s.arrived.set()
            s.result.received += len(e.entries)
            s.from_peer.update(x.id for x in e.entries)
            if not s.caught_up:
                self.on_event(Progress(s.name, s.result.received))
            if self._for_me(e.entries):
                self.claim_soon()
        elif isinstance(e, CursorReceived):
            key = cursor_key()
            if key is not None:
                await self.offload(
                    lambda k=key, c=e.cursor: self.wallet.store.set_meta(k, c))
        elif isinstance(e, CaughtUp):
            # Live from here, not only once in sync: a side whose digest moved during
            # the catch-up (a claim) never hears InSync, and its news must still go out.
            s.caught_up = True
            s.caught_up_at = asyncio.get_running_loop().time()
            s.live = True
            self._moved.set()
        elif isinstance(e, InSync):
            s.result.in_sync = True
            s.synced.set()
            self.on_event(Synced(s.name, e.count, s.result.received))

    async def _end_when_done(self, link: Link, s: _Session, once: bool,
                             stop_code: CloseCode) -> None:
        """End the conversation when asked to stop, and with ``once`` when in sync.

        Also the watchdog: a peer that has not finished its hello after
        ``hello_timeout_s``, or (``once``) is caught up but not in sync after
        ``settle_timeout_s``, is given up on.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop = asyncio.create_task(self.stopping.wait())
        synced = asyncio.create_task(s.synced.wait())
        try:
            while True:
                done, _ = await asyncio.wait({stop, synced} if once else {stop},
                                             timeout=WATCH_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if done:
                    break
                now = loop.time()
                problem = None
                if not s.result.peer_key and now - started > self.hello_timeout_s:
                    problem = f"no hello within {self.hello_timeout_s:g} s"
                elif once and s.caught_up_at and now - s.caught_up_at > self.settle_timeout_s:
                    problem = (f"caught up, but the entry sets still differ after "
                               f"{self.settle_timeout_s:g} s")
                if problem is not None:
                    await link.call(lambda c, p=problem: c.close(CloseCode.PROTOCOL, p))
                    return
        finally:
            stop.cancel()
            synced.cancel()
        if s.live:
            await self.claims_done()
            await self._push(link, s)  # the claims (and anything new) go out first
            if once and s.witness and not self.stopping.is_set():
                await self._await_votes(link, s)
        if self.stopping.is_set():
            await link.call(lambda c: c.close(stop_code, "stopping"))
        else:
            await link.call(lambda c: c.close(CloseCode.DONE, "in sync"))

    async def _await_votes(self, link: Link, s: _Session) -> None:
        """Wait, up to ``votes_timeout_s``, until this device's valid blocks are final:
        the witness votes what it received; its votes come back as live updates."""
        loop = asyncio.get_running_loop()
        waiting = await self.offload(self.wallet.unfinal_own)
        if not waiting:
            return
        self.on_event(AwaitingVotes(s.name, waiting, self.votes_timeout_s))
        deadline = loop.time() + self.votes_timeout_s
        while waiting and loop.time() < deadline and not self.stopping.is_set():
            s.arrived.clear()
            with contextlib.suppress(TimeoutError):  # (not wait_for: see _push_loop)
                async with asyncio.timeout(min(WATCH_S, deadline - loop.time())):
                    await s.arrived.wait()
            await self.claims_done()
            await self._push(link, s)  # a claim of a payment the votes made final
            waiting = await self.offload(self.wallet.unfinal_own)
        self.on_event(VotesIn(s.name, waiting))

    async def _push_loop(self, link: Link, s: _Session) -> None:
        while True:
            # Not ``wait_for``: in Python 3.11 it can swallow a cancellation that lands
            # as the event fires, and this loop then outlives its session, whose end
            # waits for it forever (the simulation found it: seed 4, tills on).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._moved.wait()
            self._moved.clear()
            if s.live:
                await self._push(link, s)

    async def _push(self, link: Link, s: _Session) -> None:
        """Send the rows the store gained since what this session sent, in rounds of
        at most ``PUSH_ROWS_MAX``, each once the link's queue has room."""
        async with s.pushing:
            await self._push_rows(link, s)

    async def _push_rows(self, link: Link, s: _Session) -> None:
        while True:
            # Between the link's steps: entries the peer just sent are committed only
            # once their Received is handled (in ``from_peer``), so none echoes back.
            got = await link.exclusive(
                lambda: self._new_rows(s.sent_pos, frozenset(s.from_peer)))
            if got is None:
                return
            todo, pos, echoed, mine = got
            if mine:
                self.claim_soon()
            s.from_peer.difference_update(echoed)
            if todo:
                await link.writable()
                cursor = make_cursor(self.port.store_id, pos)
                await link.call(lambda c, t=todo, k=cursor: c.send_entries(t, cursor=k))
                s.result.pushed += len(todo)
                self.on_event(Pushed(s.name, len(todo)))
            s.sent_pos = pos
            if link.closed is not None:
                return

    def _new_rows(self, after: int, peer_ids: frozenset[bytes]
                  ) -> tuple[list[Entry], int, set[bytes], bool] | None:
        """(On the worker) the store's rows after ``after``, up to ``PUSH_ROWS_MAX``:
        those not from this peer as entries, the position reached, the ids that came
        from the peer, and whether any row is a payment to this device.

        Rows are numbered without gaps (the store never deletes), so the position is
        ``after`` plus the rows read; were there gaps, rows would only be sent twice.
        Rows another process wrote (another ``tally`` on this home) are merged into
        this process's ledger first — ``ingest`` of entries the store holds only
        refreshes it — so digests and claims see them.
        """
        store = self.wallet.store
        if store.high_water() <= after:
            return None
        bodies = next(iter(store.bodies_after(after, PUSH_ROWS_MAX)), [])
        if not bodies:
            return None
        entries: list[Entry] = []
        echoed: set[bytes] = set()
        for body in bodies:
            i = entry_hash(body)
            if i in peer_ids:
                echoed.add(i)
            else:
                entries.append(parse_entry(body, verify=False))
        led = self.wallet.ledger
        unknown = [e for e in entries if e.id not in led]
        if unknown:
            self.wallet.ingest(unknown)
        return entries, after + len(bodies), echoed, self._for_me(unknown)


class SyncClient(WalletSync):
    """Keeps a wallet in sync with relays and peers (``tally sync``)."""

    def __init__(
        self,
        wallet: Wallet,
        passphrase: str,
        *,
        relays: list[str] | tuple[str, ...] = (),
        peers: list[str] | tuple[str, ...] = (),
        once: bool = False,
        on_event: Callable[[SyncEvent], None] | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        ca: Path | str | None = None,
        connect: Callable[..., Any] = connect,
        **kw: Any,
    ) -> None:
        """``ca``: a PEM file (CA certificates, or a relay's self-signed certificate)
        that ``wss://`` connections trust besides the system's store. ``connect``: how
        a websocket is opened (``websockets``'; a simulation passes its own network's)."""
        kinds = {check_url(u): "relay" for u in relays}
        kinds |= {check_url(u): "peer" for u in peers if u not in kinds}
        if not kinds:
            raise WalletError("nothing to sync with: give --relay URL or --peer URL")
        # A bad --ca file is said before the passphrase is tried; without wss:// URLs
        # no context is made (loading the system's store costs ~30 ms a start).
        tls = tls_context(ca) if ca or any(u.startswith("wss://") for u in kinds) else None
        super().__init__(wallet, passphrase, on_event=on_event, **kw)
        self.kinds = kinds
        self.urls = list(kinds)
        self.once = once
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.open_timeout_s = open_timeout_s
        self.tls = tls
        self.connect = connect

    async def run(self) -> list[PeerResult]:
        """Sync with every URL; with ``once`` return when each is in sync or failed,
        else run until ``stop()``. One result per URL, in order."""
        try:
            with self.pushing_on_commits():
                self.claim_soon()  # payments that came in by bundle or an earlier sync
                return list(await asyncio.gather(*(self._run_url(u) for u in self.urls)))
        finally:
            await self.claims_done()

    async def _run_url(self, url: str) -> PeerResult:
        result = PeerResult(url, self.kinds[url])
        attempt = 0
        while not self.stopping.is_set():
            failure = await self._attempt_or_stop(url, result)
            if failure is None:  # in sync (once) or asked to stop
                result.error = None
                return result
            error = result.error = failure.reason
            if result.peer_key:  # it answered: start the backoff over
                attempt = 0
            if self.once or failure.permanent:
                self.on_event(Down(url, error, None))
                return result
            delay = backoff_s(attempt, base_s=self.backoff_base_s, cap_s=self.backoff_cap_s,
                              rng=self.rng)
            attempt += 1
            self.on_event(Down(url, error, delay))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
        return result

    async def _attempt_or_stop(self, url: str, result: PeerResult) -> _Failure | None:
        """One attempt; on ``stop()`` it gets ``STOP_GRACE_S`` to close, then is cut
        (a connect that hangs, a peer that does not answer the close)."""
        attempt = asyncio.create_task(self._attempt(url, result))
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({attempt, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():
                done, _ = await asyncio.wait({attempt}, timeout=STOP_GRACE_S)
                if not done:
                    attempt.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await attempt
                    return None
            return attempt.result()
        finally:
            stop.cancel()

    async def _attempt(self, url: str, result: PeerResult) -> _Failure | None:
        """One connection; None when it ended well, else why."""
        cursor_key = f"cursor:{url}"
        result.peer_key = b""
        try:
            cursor = await self.offload(lambda: self.wallet.store.get_meta(cursor_key)) or b""
            tls = {"ssl": self.tls} if url.startswith("wss://") else {}
            async with self.connect(url, open_timeout=self.open_timeout_s, **tls,
                                    **websocket_options()) as ws:
                conn = await self.offload(partial(self.connection, client=True,
                                                  cursor=cursor))
                link = Link(ws, conn, offload=self.offload)
                closed = await self.session(link, url, result, cursor_key=lambda: cursor_key,
                                            once=self.once)
        except InvalidURI:
            return _Failure(f"{url} is not a websocket URL: give ws://HOST:PORT or wss://HOST",
                            permanent=True)
        except InvalidStatus as exc:
            return _Failure(f"{url} refused the websocket: HTTP {exc.response.status_code}")
        except InvalidHandshake as exc:
            return _Failure(f"{url} is not a sync server: {exc}")
        except TimeoutError:
            return _Failure(f"cannot reach {url}: no answer within {self.open_timeout_s:g} s")
        except OSError as exc:
            return _Failure(f"cannot reach {url}: {os_reason(exc)}")
        except LinkDown as exc:
            return _Failure(f"lost {url}: {exc}")
        if closed.code == CloseCode.DONE and (result.in_sync or self.stopping.is_set()):
            return None
        try:
            name = CloseCode(closed.code).name.lower().replace("_", " ")
        except ValueError:
            name = f"code {closed.code}"
        who = f"{url} refused" if closed.by_peer else f"gave up on {url}"
        return _Failure(f"{who}: {name}: {closed.reason}")
