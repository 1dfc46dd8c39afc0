"""The relay's I/O layer: an asyncio websockets server driving ``sync.protocol.Connection``.

Each websocket is one ``Session``: its messages are checked against the relay's limits
(message size, rate per device and per address) and fed whole to a server-side
``Connection``, which gates every update before the network stores it; what the
connection has to say is queued to a writer task, so fanning entries out to a slow
subscriber never blocks anyone else (a subscriber whose queue overflows is closed, and
resumes from its cursor). ``GET /healthz`` and ``GET /metrics`` are answered on the same
port. ``Relay.run`` serves until SIGTERM or SIGINT, then closes every conversation with
``CloseCode.SHUTDOWN`` and exits cleanly; SIGHUP reloads the TLS certificate and reopens
the log file, and never stops it.
"""

from __future__ import annotations

import asyncio
import gc
import http
import json
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from server.errors import RelayError
from server.network import VOTE_DELAY_S, ServedNetwork
from server.outbox import Outbox
from server.peering import link_forever
from server.store import RelayStore
from server.telemetry import Telemetry
from server.tls import ServerTls
from sync.errors import CloseCode
from sync.messages import ROLE_DEVICE, ROLE_NODE, Close, Hello, encode
from sync.protocol import (
    CATCH_UP_WINDOW_BYTES,
    MAX_MESSAGE_BYTES,
    Closed,
    Connection,
    CursorReceived,
    ItemRow,
    Port,
    Ready,
    Received,
)
from wallet.encoding import Genesis, id_text, key_text, parse_genesis, short
from wallet.errors import EncodingError


@dataclass
class Limits:
    """Every limit the relay enforces, with safe defaults.

    ``message_bytes_max``: the largest message read (bigger ones close with TOO_BIG).
    ``connections_max``: open websockets at once (more are closed with OVERLOADED);
    ``connections_per_address_max`` the same for one IP address.
    ``device_rate``/``device_burst``: messages a second a device may send, sustained and
    in a burst; ``address_rate``/``address_burst`` the same for one IP address, whatever
    its devices. ``quota_per_day``: blocks stored per device per UTC day (None: no
    quota). ``queue_messages_max``: protocol messages, ``queue_entries_max``: fanned-out
    entries, waiting for one slow subscriber (past either, it is closed OVERLOADED).
    ``networks_max``: networks an ``--open`` relay takes on. ``handshake_s``: how long a
    connection may take to finish its handshake before it is closed.
    ``catch_up_window_bytes``: how much of a catch-up one session reads from the store
    ahead of what its socket took (the memory a cold client costs).
    """

    message_bytes_max: int = MAX_MESSAGE_BYTES
    connections_max: int = 1000
    connections_per_address_max: int = 100
    device_rate: float = 50.0
    device_burst: float = 200.0
    address_rate: float = 200.0
    address_burst: float = 800.0
    quota_per_day: int | None = 10_000
    queue_messages_max: int = 1000
    queue_entries_max: int = 100_000
    networks_max: int = 1000
    handshake_s: float = 10.0
    catch_up_window_bytes: int = CATCH_UP_WINDOW_BYTES


@dataclass
class RelayConfig:
    """How to run a relay (built by ``server.cli`` from its options)."""

    host: str
    port: int
    node_key: SigningKey
    genesis: list[Genesis] = field(default_factory=list)
    open: bool = False
    witness_key: SigningKey | None = None
    tls: ssl.SSLContext | None = None
    limits: Limits = field(default_factory=Limits)
    vote_delay_s: float = VOTE_DELAY_S
    peers: list[str] = field(default_factory=list)
    tls_files: ServerTls | None = None
    """Where ``tls`` comes from, to reload on SIGHUP (``tls`` is then its ``context``)."""
    clock: Callable[[], float] = time.monotonic
    """The clock the rate limits refill by (a simulation passes its own)."""

    def __post_init__(self) -> None:
        if self.tls_files is not None and self.tls is None:
            self.tls = self.tls_files.context


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take`` spends one if there is one."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def take(self, n: float = 1.0) -> bool:
        """Spend ``n`` tokens; False (nothing spent) when there are not enough."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    @property
    def full(self) -> bool:
        """True when the bucket has refilled (it can be forgotten)."""
        return self.tokens + (self.clock() - self.stamp) * self.rate >= self.burst


_CLOSE_TYPE = b"\x7f"
YIELD_EVERY = 32  # messages of one peer handled in a row before the others get a turn
CLOSE_TIMEOUT_S = 2.0  # how long a closing handshake may take before the socket is dropped


class Session:
    """One websocket conversation: a server ``Connection``, its limits and its outbox."""

    def __init__(self, relay: Relay, ws: ServerConnection) -> None:
        self.relay = relay
        self.ws = ws
        peer = ws.remote_address
        self.address = str(peer[0]) if peer else "?"
        self.network: ServedNetwork | None = None
        self.device = b""
        self.role = 0
        limits = relay.config.limits
        self.conn = Connection(
            client=False, key=relay.config.node_key, role=ROLE_NODE, resolve=self._resolve,
            witness_key=relay.config.witness_key,
            max_message_bytes=limits.message_bytes_max, defer_acks=True,
            catch_up_window_bytes=limits.catch_up_window_bytes,
        )
        self.outbox = Outbox(self.conn, ws, cursor=self._cursor,
                             rows_max=limits.queue_entries_max,
                             messages_max=limits.queue_messages_max, refill=self.next_window)
        self.writer = asyncio.create_task(self.outbox.run())
        self.ended = False
        self.close_code: int | None = None
        self.close_reason = ""

    def _cursor(self) -> bytes:
        assert self.network is not None
        return self.network.port.cursor()

    # ------------------------------------------------------------ reading
    def receive(self, data: bytes | str) -> None:
        """One message from the peer: limits, then the protocol, then what it caused."""
        if isinstance(data, str):
            self.close(CloseCode.PROTOCOL, "a text message; sync messages are binary")
            return
        limits = self.relay.config.limits
        if len(data) > limits.message_bytes_max:
            self.close(CloseCode.TOO_BIG, f"message of {len(data)} bytes, limit "
                       f"{limits.message_bytes_max}")
            return
        self.relay.telemetry.count("tally_relay_messages_in_total")
        problem = self.relay.rate_check(self)
        if problem is not None:
            self.close(CloseCode.RATE_LIMITED, problem)
            return
        net = self.network
        if net is not None:
            net.refusal = None
        self.relay.writing()
        self.conn.receive_data(data)
        if self.conn.unacknowledged:
            self.relay.to_ack[self] = None
        net = self.network
        refusal = None
        if net is not None:
            refusal, net.refusal = net.refusal, None
        if refusal is not None:
            # The protocol closed with REFUSED; the peer is told the limit's own code.
            out = [m for m in self.conn.data_to_send() if not m.startswith(_CLOSE_TYPE)]
            out.append(encode(Close(int(refusal.code), refusal.reason)))
            self.outbox.put(out)
            self._on_closed(int(refusal.code), refusal.reason)
        self._events()
        self.push()

    def _resolve(self, h: Hello) -> Port | tuple[CloseCode, str]:
        got = self.relay.network_for(h)
        if isinstance(got, tuple):
            return got
        self.network = got
        # Read before the proof is checked, but used only once it is (in Want).
        self.conn.cursor_from_peer = got.peer_cursor(h.key)
        return got.port

    def _events(self) -> None:
        for ev in self.conn.events_received():
            if isinstance(ev, Ready):
                self.device = ev.peer_key
                self.role = ev.role
                assert self.network is not None
                self.network.subscribers[self] = None
                self.relay.telemetry.log(
                    "ready", address=self.address, network=id_text(self.network.network),
                    role="device" if ev.role == ROLE_DEVICE else "node",
                    key=short(ev.peer_key), witness=short(ev.witness) if ev.witness else "")
            elif isinstance(ev, Received):
                assert self.network is not None
                self.network.accepted(ev.entries, origin=self)
            elif isinstance(ev, CursorReceived):
                assert self.network is not None
                self.network.keep_peer_cursor(self.device, ev.cursor)
            elif isinstance(ev, Closed):
                if ev.by_peer:
                    self._on_closed(ev.code, ev.reason, by_peer=True)
                elif self.close_code is None:
                    self._on_closed(ev.code, ev.reason)

    def _on_closed(self, code: int, reason: str, *, by_peer: bool = False) -> None:
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        try:
            name = CloseCode(code).name.lower()
        except ValueError:
            name = f"code_{code}"
        if not by_peer and code not in (CloseCode.DONE, CloseCode.SHUTDOWN):
            self.relay.telemetry.count("tally_relay_refusals_total", reason=name)
        self.relay.telemetry.log(
            "closed", address=self.address, by_peer=by_peer, code=name, reason=reason,
            key=short(self.device) if self.device else "")

    # ------------------------------------------------------------ writing
    def next_window(self) -> None:
        """The outbox wrote what it had: a streaming catch-up reads its next window."""
        self.conn.next_window()
        self.push()

    def push(self) -> None:
        """Queue what the connection has to send; end the session once it closed."""
        if self.ended:
            self.conn.data_to_send()
            return
        fits = self.outbox.put(self.conn.data_to_send())
        self._events()
        if self.conn.state == "closed":
            self._end()
        elif not fits:
            self.overloaded()

    def deliver(self, rows: list[ItemRow]) -> None:
        """Fan-out: new entries (their item rows) for this peer."""
        if not self.ended and not self.outbox.deliver(rows):
            self.overloaded()

    def cursor_moved(self) -> None:
        """The store's durable position moved: the peer gets a cursor (an ack) soon."""
        self.outbox.cursor_moved()

    def overloaded(self) -> None:
        """The peer reads too slowly: drop what waits for it and close the conversation."""
        self.outbox.drop()
        self.close(CloseCode.OVERLOADED, "too many messages queued for this peer (it "
                   "reads too slowly); reconnect and resume from the last cursor")

    def close(self, code: int, reason: str) -> None:
        """End the conversation, telling the peer why."""
        if self.ended:
            return
        self.conn.close(code, reason)
        self._on_closed(int(code), reason)
        self.push()

    def handshake_expired(self) -> None:
        """Close a connection that has not finished its handshake in time."""
        if not self.ended and self.conn.state not in ("ready", "closed"):
            limit = self.relay.config.limits.handshake_s
            self.close(CloseCode.PROTOCOL, f"no handshake within {limit:g} seconds")

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.detach()
            self.outbox.end(1000 if self.close_code in (None, 0) else 1008, self.close_reason)

    def detach(self) -> None:
        """Stop receiving fan-out."""
        if self.network is not None:
            self.network.subscribers.pop(self, None)

    async def finish(self, timeout_s: float = 5.0) -> None:
        """Wait for the writer to flush and close the websocket."""
        self._end()
        try:
            await asyncio.wait_for(self.writer, timeout_s)
        except (TimeoutError, ConnectionClosed):
            self.writer.cancel()
            self.ws.transport.abort()  # the peer does not answer the closing handshake


class Relay:
    """The relay: its store, the networks it serves, its sessions and its limits."""

    def __init__(self, config: RelayConfig, store: RelayStore, telemetry: Telemetry) -> None:
        self.config = config
        self.store = store
        self.telemetry = telemetry
        self.networks: dict[bytes, ServedNetwork] = {}
        self.sessions: dict[Session, None] = {}  # (insertion-ordered: runs replay)
        self.address_buckets: dict[str, TokenBucket] = {}
        self.device_buckets: dict[bytes, TokenBucket] = {}
        self.server: Server | None = None
        self.port = config.port
        self.peer_tasks: list[asyncio.Task[None]] = []
        self._flush_pending = False
        self._acked: dict[bytes, int] = {}  # each network's durable position last told
        self.to_ack: dict[Session, None] = {}
        self.failure: BaseException | None = None
        self._stop: asyncio.Future[object] | None = None
        self.shut_down = False  # shutdown() released the store
        for g in config.genesis:
            self.add_network(g)
        for raw in store.genesis_records():  # networks a --open relay took on before
            g = parse_genesis(raw)
            if config.open and g.network_id not in self.networks:
                self.add_network(g)
        self.telemetry.set("tally_relay_entries_stored",
                           sum(len(n.ledger) for n in self.networks.values()))

    # ------------------------------------------------------------ networks
    def add_network(self, genesis: Genesis) -> ServedNetwork:
        """Serve a network (its entries loaded from the store)."""
        self.store.add_network(genesis.raw, genesis.network_id)
        net = ServedNetwork(
            self.store, genesis, telemetry=self.telemetry, witness_key=self.config.witness_key,
            quota_per_day=self.config.limits.quota_per_day, vote_delay_s=self.config.vote_delay_s,
            on_stored=self.stored,
        )
        self.networks[genesis.network_id] = net
        self._acked[genesis.network_id] = self.store.high_water(genesis.network_id)
        recovered = net.recover_votes()
        if self.server is not None:  # a network an --open relay takes on while running
            self._link(net)
        self.telemetry.set("tally_relay_networks", len(self.networks))
        self.telemetry.log("network", name=genesis.name, network=id_text(genesis.network_id),
                           entries=len(net.ledger), witness=net.witness is not None,
                           votes_recovered=len(recovered))
        return net

    def network_for(self, h: Hello) -> ServedNetwork | tuple[CloseCode, str]:
        """The network a client's hello asks for, or why it is refused."""
        net = self.networks.get(h.network)
        if net is not None:
            return net
        name = id_text(h.network)
        if not self.config.open:
            return CloseCode.UNKNOWN_NETWORK, f"this relay does not serve network {name}"
        if not h.genesis:
            return CloseCode.UNKNOWN_NETWORK, (
                f"this relay does not know network {name} yet: send its genesis in the hello")
        try:
            g = parse_genesis(h.genesis)
        except EncodingError as exc:
            return CloseCode.UNKNOWN_NETWORK, f"the genesis in the hello does not verify: {exc}"
        if g.network_id != h.network:
            return CloseCode.WRONG_NETWORK, f"the genesis in the hello is not network {name}'s"
        if len(self.networks) >= self.config.limits.networks_max:
            return CloseCode.OVERLOADED, (
                f"this relay serves {len(self.networks)} networks, its limit; try another")
        return self.add_network(g)

    # ------------------------------------------------------------ group commit
    def writing(self) -> None:
        """A message that may store entries is next: what it writes joins this loop
        pass's group commit."""
        self.store.begin_group()
        self._flush_soon()

    def stored(self) -> None:
        """Entries were written (in a group or on their own): acknowledge them soon."""
        self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a synchronous caller): flush now
                self.flush()

    def flush(self) -> None:
        """Commit the group, acknowledge what the peers sent (``Ack``), and send every
        subscriber a cursor if the durable position moved. A failed commit stops the
        relay: its memory holds entries its disk lacks, and a restart rebuilds from the
        disk."""
        self._flush_pending = False
        try:
            self.store.commit_group()
        except Exception as exc:
            self.telemetry.log("error", where="store", error=f"{type(exc).__name__}: {exc}")
            self.failure = exc
            if self._stop is not None and not self._stop.done():
                self._stop.set_result("store failure")
            return
        to_ack, self.to_ack = self.to_ack, {}
        for s in to_ack:
            s.conn.acknowledge()
            s.push()
        for network, net in self.networks.items():
            high = self.store.high_water(network)
            if high != self._acked.get(network):
                self._acked[network] = high
                net.cursor_moved()

    # ------------------------------------------------------------ limits
    def rate_check(self, s: Session) -> str | None:
        """Spend a token for one message of ``s``; the reason when it is over a rate."""
        lim = self.config.limits
        if len(self.address_buckets) > 10_000:
            self.address_buckets = {a: b for a, b in self.address_buckets.items() if not b.full}
        if len(self.device_buckets) > 10_000:
            self.device_buckets = {d: b for d, b in self.device_buckets.items() if not b.full}
        if s.device and s.role == ROLE_DEVICE:
            b = self.device_buckets.get(s.device)
            if b is None:
                b = self.device_buckets[s.device] = TokenBucket(
                    lim.device_rate, lim.device_burst, clock=self.config.clock)
            if not b.take():
                return (f"device {short(s.device)}… sent over {lim.device_rate:g} messages a "
                        f"second (burst {lim.device_burst:g}); slow down")
        b = self.address_buckets.get(s.address)
        if b is None:
            b = self.address_buckets[s.address] = TokenBucket(
                lim.address_rate, lim.address_burst, clock=self.config.clock)
        if not b.take():
            return (f"address {s.address} sent over {lim.address_rate:g} messages a second "
                    f"(burst {lim.address_burst:g}); slow down")
        return None

    # ------------------------------------------------------------ serving
    async def handler(self, ws: ServerConnection) -> None:
        """One websocket: a session until either side closes it."""
        s = Session(self, ws)
        lim = self.config.limits
        same = sum(1 for o in self.sessions if o.address == s.address)
        if len(self.sessions) >= lim.connections_max:
            s.close(CloseCode.OVERLOADED, f"this relay has {len(self.sessions)} connections, "
                    "its limit; try again later")
        elif same >= lim.connections_per_address_max:
            s.close(CloseCode.OVERLOADED, f"address {s.address} has {same} connections open, "
                    "the limit for one address; close some first")
        if s.ended:
            await s.finish()
            return
        self.sessions[s] = None
        timer = asyncio.get_running_loop().call_later(
            self.config.limits.handshake_s, s.handshake_expired)
        self.telemetry.count("tally_relay_connections_total")
        self.telemetry.set("tally_relay_connections", len(self.sessions))
        try:
            handled = 0
            async for data in ws:
                s.receive(data)
                if s.ended:
                    break
                handled += 1
                if handled % YIELD_EVERY == 0:
                    # A peer with a backlog must not hold the loop: let the group
                    # commit, the writers and the other peers run.
                    await asyncio.sleep(0)
            else:
                s._on_closed(CloseCode.DONE, "the websocket closed", by_peer=True)
        except ConnectionClosed:
            s._on_closed(CloseCode.DONE, "the websocket closed", by_peer=True)
        except Exception as exc:  # a bug here must not take the relay down
            self.telemetry.log("error", address=s.address, error=f"{type(exc).__name__}: {exc}")
            s.close(CloseCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            timer.cancel()
            s.detach()
            self.sessions.pop(s, None)
            self.telemetry.set("tally_relay_connections", len(self.sessions))
            await s.finish()

    def health(self) -> dict[str, object]:
        """What ``/healthz`` says."""
        return {
            "status": "ok",
            "networks": len(self.networks),
            "connections": len(self.sessions),
            "entries": sum(len(n.ledger) for n in self.networks.values()),
            "node_key": key_text(bytes(self.config.node_key.verify_key)),
            "witness_key": (key_text(bytes(self.config.witness_key.verify_key))
                            if self.config.witness_key else None),
        }

    async def process_request(self, connection: ServerConnection,
                              request: Request) -> Response | None:
        """Answer ``/healthz`` and ``/metrics`` over plain HTTP; anything else upgrades."""
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return _response(connection, http.HTTPStatus.OK, json.dumps(self.health()) + "\n",
                             "application/json")
        if path == "/metrics":
            return _response(connection, http.HTTPStatus.OK, self.telemetry.prometheus(),
                             "text/plain; version=0.0.4")
        return None

    async def run(self, stop: asyncio.Future[None] | None = None, *,
                  on_listening: Callable[[], None] | None = None) -> None:
        """Serve until ``stop`` (or SIGTERM/SIGINT), then shut down cleanly.

        Without ``stop``, SIGHUP calls ``reload``. ``on_listening`` runs once the port
        is bound, before the ``listening`` event and before any connection is served (a
        new node key is written then, once every check of the start has passed); if it
        raises, the relay stops listening and the error propagates.
        """
        loop = asyncio.get_running_loop()
        if stop is None:
            stop = loop.create_future()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, _set, stop, sig)
            if hasattr(signal, "SIGHUP"):
                loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._stop = stop
        keep_gc_pauses_short()
        lim = self.config.limits
        try:
            server = await serve(
                self.handler, self.config.host, self.config.port,
                process_request=self.process_request, ssl=self.config.tls,
                max_size=lim.message_bytes_max * 2 + 1024, server_header="tally-relay",
                close_timeout=CLOSE_TIMEOUT_S,
            )
        except OSError as exc:
            raise RelayError(f"cannot listen on {self.config.host}:{self.config.port}: "
                             f"{exc.strerror or exc}") from exc
        self.server = server
        sock = next(iter(server.sockets), None)
        self.port = sock.getsockname()[1] if sock else self.config.port
        if on_listening is not None:
            try:
                on_listening()
            except BaseException:
                server.close()
                await server.wait_closed()
                raise
        self.telemetry.log("listening", host=self.config.host, port=self.port,
                           tls=self.config.tls is not None, open=self.config.open,
                           networks=[id_text(n) for n in self.networks],
                           node_key=key_text(bytes(self.config.node_key.verify_key)))
        for net in self.networks.values():
            net.vote_all_soon()  # what arrived before a crash, unvoted, is voted now
        for net in self.networks.values():
            self._link(net)
        why = await stop
        self.telemetry.log("stopping", signal=str(why) if why else "")
        for t in self.peer_tasks:
            t.cancel()
        await asyncio.gather(*self.peer_tasks, return_exceptions=True)  # cursors kept
        await self.shutdown()

    def reload(self) -> dict[str, object]:
        """SIGHUP: reopen the log file (if the relay logs to one) and load the TLS
        certificate and key again (if it serves ``wss://``); what was done, also logged as
        one ``reloaded`` event. A file that does not load is logged as an ``error`` and
        changes nothing: the relay keeps serving as before, it never stops here."""
        done: dict[str, object] = {"signal": "SIGHUP"}
        try:
            path = self.telemetry.reopen()
            done["log_file"] = str(path) if path is not None else None
        except RelayError as exc:
            done["log_file"] = "kept the old one"
            self.telemetry.log("error", where="reload", error=str(exc),
                               message="still logging to the log file opened before")
        tls = self.config.tls_files
        if tls is None:
            done["tls"] = "not served" if self.config.tls is None else "not reloadable"
        else:
            try:
                done["cert_sha256"] = tls.reload()
                done["tls"] = "reloaded"
            except RelayError as exc:
                done["tls"] = "kept the old certificate"
                done["cert_sha256"] = tls.sha256
                self.telemetry.log("error", where="reload", error=str(exc),
                                   message="still serving the certificate loaded before")
        self.telemetry.log("reloaded", **done)
        return done

    async def shutdown(self) -> None:
        """Close every conversation with SHUTDOWN, stop listening, release the store."""
        for net in self.networks.values():
            net.cancel()
        sessions = list(self.sessions)
        for s in sessions:
            s.close(CloseCode.SHUTDOWN, "the relay is stopping; reconnect later")
        await asyncio.gather(*(s.finish(2.0) for s in sessions), return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.store.close()
        self.shut_down = True
        self.telemetry.log("stopped")

    def _link(self, net: ServedNetwork) -> None:
        """Keep a link to every ``--peer`` for this network."""
        for url in self.config.peers:
            self.peer_tasks.append(asyncio.create_task(link_forever(self, net, url)))


def keep_gc_pauses_short() -> None:
    """Keep Python's cyclic collector from pausing the relay for long.

    A relay holds every entry of its networks in memory, long-lived and nearly all freed
    by reference counting. A full collection scans every tracked object: at 100,000
    entries that is a pause of tens of milliseconds, straight into the delivery latency.
    So what survived a full collection is frozen (never scanned again) and the young
    generation is collected less often; later garbage is collected as before.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    if _refreeze not in gc.callbacks:
        gc.callbacks.append(_refreeze)


def _refreeze(phase: str, info: dict[str, int]) -> None:
    """After a full collection, freeze its survivors (see ``keep_gc_pauses_short``)."""
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def _set(fut: asyncio.Future[object], value: object) -> None:
    if not fut.done():
        fut.set_result(value)


def _response(connection: ServerConnection, status: http.HTTPStatus, body: str,
              content_type: str) -> Response:
    resp = connection.respond(status, body)
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = content_type
    return resp


def read_genesis_file(path: Path) -> Genesis:
    """A genesis file, checked; ``RelayError`` says what is wrong with it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RelayError(f"cannot read the genesis file {path}: {exc.strerror}") from exc
    try:
        return parse_genesis(data)
    except EncodingError as exc:
        raise RelayError(f"{path} is not a valid genesis file: {exc}") from exc

