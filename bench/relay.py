"""Relay benchmark: ``tally-relay`` (witness on, q = 1) against ``pycrdt.websocket``.

    python bench/relay.py [--payments N] [--subscribers S] [--cold-entries C]
                          [--writers W] [--rate R] [--paced-s T] [--profile-relay FILE]
                          [--stalls FILE]

One run, one client harness (this process, one asyncio loop), each server in its own
process on loopback:

- ``tally-relay`` with a witness key of the network (quorum 1 of 1), every limit opened
  wide (rates, quota, queue) so that only its own work bounds it;
- pycrdt's own server (``pycrdt.websocket.WebsocketServer`` behind a ``websockets``
  server, one room), which is given the very same entries as plain map inserts (the
  same canonical Yjs updates: one item an entry under the root map, keyed by the entry's
  id) and validates nothing.

The workload: ``W`` writer devices (funded by the mint, each paying a shop device, one
payment a message) and ``S`` subscribed devices. Signed entries are generated once and
cached under ``bench/out/``.

Phases, each against both servers:

1. Unpaced. Each writer keeps up to ``--window`` messages unacknowledged (tally: the
   relay's Ack, sent once they are durably stored; pycrdt: the room's echo of the
   sender's own update, which it broadcasts to every client) and sends as fast as
   the server takes them. A delivery is one writer's block (votes not counted)
   reaching one subscriber, however framed. Prints entries per second in (to the
   last acknowledgement), deliveries per second out (to the last delivery), the
   harness's CPU and the server process's CPU.
2. Paced. ``--rate`` payments a second offered (spread over the writers) for
   ``--paced-s`` seconds, ``--paced-runs`` times against tally-relay (``p99_ms`` is
   the worst run's: one run's tail is noise) and once against pycrdt. Latency runs
   from the writer's socket write to a probe subscriber having the entry in its doc:
   for tally, a full device (``sync.protocol.Connection`` over a ``MemoryPort``: gate,
   signature, ledger); for pycrdt a ``pycrdt.Doc`` that applies the update. The
   lightweight subscribers' receive latency is printed too.
3. Cold. A relay whose database holds ``C`` entries (a q = 1 network from
   ``bench/ingest.py``'s generator, put straight into the relay's store, cached) is
   started; a new device (``Wallet.join`` + ``WalletPort``) syncs it, timed from the
   connect until the digests agree (InSync) with everything stored in its SQLite store,
   against the one-core raw ``VerifyKey.verify`` time of those entries. ``wire_ratio``
   is the websocket payload bytes it received over the entries' signed bytes.

Subscribers are lightweight: each proves its device key and catches up through a real
``sync.protocol.Connection`` (tally) until InSync, then a minimal decoder reads every
message it receives (``sync.messages.decode`` and ``wallet.crdt.decode_update`` for
tally; pycrdt's framing and the same ``decode_update`` for pycrdt) and counts the entry
items each carries: 50 full ports verifying every entry would bound the harness, not
the servers, on two cores. Every delivery is still an item of a real message received.

The last line is ``deliveries_per_s=… pycrdt_deliveries_per_s=… vs_pycrdt=… p99_ms=…
cold_sync_vs_verify=… wire_ratio=…``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from nacl.signing import SigningKey  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from sync.messages import ROLE_DEVICE, Ack, Close, Update, decode, encode  # noqa: E402
from sync.port import MemoryPort, WalletPort  # noqa: E402
from sync.protocol import Closed, Connection, InSync, Received  # noqa: E402
from wallet import keys as keyfiles  # noqa: E402
from wallet.crdt import decode_update, encode_items, item_client_id  # noqa: E402
from wallet.encoding import (  # noqa: E402
    Block,
    Genesis,
    Kind,
    Policy,
    device_signature,
    entry_hash,
    id_text,
    parse_entry,
    parse_genesis,
)
from wallet.ledger import Ledger  # noqa: E402

OUT = HERE / "out"
PASSPHRASE = "bench passphrase"  # throwaway keys under bench/out
MAX_BYTES = 8 << 20
MAX_ENTRIES = 20_000
ROOM = "/bench"


def log(msg: str) -> None:
    """Progress, on stderr."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- workload
@dataclass
class Workload:
    """A q = 1 network: setup entries (opens, issues, receives) and each writer's
    payments, in chain order."""

    genesis: bytes
    witness_seed: bytes
    writer_seeds: list[bytes]
    writer_opens: list[bytes]
    setup: list[bytes]
    payments: list[list[bytes]]  # per writer


def _signed(block: Block, key: SigningKey) -> bytes:
    body = block.body()
    return body + key.sign(body).signature


def generate_live(per_writer: int, writers: int, seed: int) -> Workload:
    """Sign the workload (not timed)."""
    rng = random.Random(seed)

    def key() -> SigningKey:
        return SigningKey(rng.randbytes(32))

    issuer, witness = key(), key()
    genesis = Genesis(
        "relaybench", "EUR", 2, bytes(issuer.verify_key), (bytes(witness.verify_key),), 1,
        Policy(1, 1, 1, 86_400),
    ).signed(issuer)
    net = genesis.network_id
    setup: list[bytes] = []

    def open_(dev: SigningKey, acct: SigningKey, label: str) -> bytes:
        raw = _signed(Block(Kind.OPEN, net, bytes(dev.verify_key), 0,
                            account=bytes(acct.verify_key), label=label,
                            device_sig=device_signature(dev, net, bytes(acct.verify_key),
                                                        label)), acct)
        setup.append(raw)
        return raw

    mint = key()
    mint_prev = entry_hash(open_(mint, issuer, "mint"))
    shop_acct, shop = key(), key()
    open_(shop, shop_acct, "shop")
    wkeys = [(key(), key()) for _ in range(writers)]  # (account, device)
    opens = [open_(d, a, f"writer-{i}") for i, (a, d) in enumerate(wkeys)]
    amount = 10 * per_writer + 1000
    payments: list[list[bytes]] = []
    for i, (a, d) in enumerate(wkeys):
        iss = _signed(Block(Kind.ISSUE, net, bytes(mint.verify_key), i + 1, mint_prev,
                            to_account=bytes(a.verify_key), to_device=bytes(d.verify_key),
                            amount=amount), mint)
        mint_prev = entry_hash(iss)
        setup.append(iss)
        rc = _signed(Block(Kind.RECEIVE, net, bytes(d.verify_key), 1, entry_hash(opens[i]),
                           claim=entry_hash(iss)), d)
        setup.append(rc)
        prev, seq, mine = entry_hash(rc), 1, []
        for _ in range(per_writer):
            seq += 1
            raw = _signed(Block(Kind.SEND, net, bytes(d.verify_key), seq, prev,
                                to_account=bytes(shop_acct.verify_key),
                                to_device=bytes(shop.verify_key),
                                amount=rng.randrange(1, 10)), d)
            prev = entry_hash(raw)
            mine.append(raw)
        payments.append(mine)
    return Workload(genesis.raw, bytes(witness), [bytes(d) for _, d in wkeys], opens,
                    setup, payments)


def cached_live(per_writer: int, writers: int, seed: int) -> Workload:
    """The workload, generated on first use and cached under bench/out/."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"relay-live-{writers}x{per_writer}-s{seed}.json"
    if path.exists():
        m = json.loads(path.read_text())
        log(f"using cached {path.relative_to(ROOT)}")
        return Workload(
            bytes.fromhex(m["genesis"]), bytes.fromhex(m["witness_seed"]),
            [bytes.fromhex(x) for x in m["writer_seeds"]],
            [bytes.fromhex(x) for x in m["writer_opens"]],
            [bytes.fromhex(x) for x in m["setup"]],
            [[bytes.fromhex(x) for x in w] for w in m["payments"]],
        )
    log(f"signing {writers} x {per_writer} payments…")
    t0 = time.perf_counter()
    w = generate_live(per_writer, writers, seed)
    path.write_text(json.dumps({
        "genesis": w.genesis.hex(), "witness_seed": w.witness_seed.hex(),
        "writer_seeds": [x.hex() for x in w.writer_seeds],
        "writer_opens": [x.hex() for x in w.writer_opens],
        "setup": [x.hex() for x in w.setup],
        "payments": [[x.hex() for x in p] for p in w.payments],
    }))
    log(f"signed in {time.perf_counter() - t0:.1f} s")
    return w


def item(raw: bytes) -> tuple[int, str, bytes]:
    """The canonical Yjs map item of an entry: (client id, key, value)."""
    eid = entry_hash(raw)
    return item_client_id(eid), id_text(eid), raw


def tally_update(raws: list[bytes]) -> bytes:
    """A live Update message of tally's protocol."""
    return encode(Update(encode_items([item(r) for r in raws])))


def pycrdt_update(raws: list[bytes]) -> bytes:
    """The same entries as a pycrdt SYNC_UPDATE message (plain map inserts)."""
    from pycrdt import create_update_message

    return create_update_message(encode_items([item(r) for r in raws]))


def pycrdt_items(msg: bytes) -> list[str]:
    """Keys of the entries a pycrdt message carries (an update, else none)."""
    from pycrdt import read_message

    if len(msg) < 3 or msg[0] != 0 or msg[1] != 2:
        return []
    update = read_message(msg[2:])
    return [i.key for i in decode_update(update, max_bytes=len(update), max_items=len(update))]


def tally_items(msg: bytes) -> tuple[object, list[str]]:
    """The decoded tally message and the keys of the entries it carries."""
    m = decode(msg, max_bytes=MAX_BYTES, max_entries=MAX_ENTRIES)
    if isinstance(m, Update):
        u = m.update
        return m, [i.key for i in decode_update(u, max_bytes=len(u), max_items=len(u))]
    return m, []


# --------------------------------------------------------------------------- servers
def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TALLY_PASSPHRASE=PASSPHRASE, TALLY_INSECURE_FAST_KDF="1",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


@dataclass
class Server:
    """A server process on loopback."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_tally(tmp: Path, genesis: Path, *, db: Path, witness_key: Path | None,
                profile: str | None, name: str, stalls: str | None = None) -> Server:
    """``tally-relay`` with every limit wide open; waits for /healthz."""
    args = ["--db", str(db), "--listen", "127.0.0.1:0", "--network", str(genesis),
            "--device-rate", "1e9", "--device-burst", "1e9", "--address-rate", "1e9",
            "--address-burst", "1e9", "--quota", "0", "--max-queue", "100000000",
            "--max-queue-entries", "100000000", "--max-connections", "10000",
            "--max-connections-per-address", "10000"]
    if witness_key is not None:
        args += ["--witness-key", str(witness_key)]
    head = [sys.executable]
    if profile:
        head += ["-m", "cProfile", "-o", profile]
    head += [str(HERE / "stallwatch.py"), stalls] if stalls else ["-m", "server.cli"]
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as err:
        proc = subprocess.Popen([*head, *args], stdout=subprocess.DEVNULL, stderr=err,
                                env=server_env(), cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tally-relay exited {proc.returncode}: {log_path.read_text()}")
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if doc.get("event") == "listening":
                    port = doc["port"]
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                    timeout=5) as r:
                            if r.status == 200:
                                return Server(name, proc, port, log_path)
                    except OSError:
                        pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"tally-relay did not come up: {log_path.read_text()}")


def start_pycrdt(tmp: Path) -> Server:
    """pycrdt's websocket server in its own process (this file with --serve-pycrdt)."""
    log_path = tmp / "pycrdt.log"
    with open(log_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--serve-pycrdt"],
                                stdout=subprocess.PIPE, stderr=err, env=server_env(), cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("port="):
        proc.kill()
        raise SystemExit(f"pycrdt server did not come up: {log_path.read_text()}")
    return Server("pycrdt", proc, int(line.split("=")[1]), log_path)


async def serve_pycrdt() -> None:
    """The pycrdt.websocket server: one room, no validation, no store."""
    from pycrdt.websocket import WebsocketServer
    from websockets.asyncio.server import serve

    class Channel:
        """websockets' ServerConnection as pycrdt's Channel."""

        def __init__(self, ws: object, path: str) -> None:
            self.ws = ws
            self._path = path

        @property
        def path(self) -> str:
            return self._path

        def __aiter__(self) -> Channel:
            return self

        async def __anext__(self) -> bytes:
            try:
                return await self.ws.recv()  # type: ignore[attr-defined]
            except ConnectionClosed:
                raise StopAsyncIteration from None

        async def send(self, message: bytes) -> None:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(message)  # type: ignore[attr-defined]

        async def recv(self) -> bytes:
            return await self.ws.recv()  # type: ignore[attr-defined]

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: stop.done() or stop.set_result(None))
    async with WebsocketServer(auto_clean_rooms=False) as yws:

        async def handler(ws: object) -> None:
            await yws.serve(Channel(ws, ws.request.path))  # type: ignore[attr-defined]

        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None,
                         max_queue=16) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"port={port}", flush=True)
            await stop


# --------------------------------------------------------------------------- clients
@dataclass
class Stats:
    """What one phase measured at the harness."""

    t0: float = 0.0
    deliveries: int = 0
    last_delivery: float = 0.0
    last_ack: float = 0.0
    acks: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)  # lightweight subscribers
    probe_latency: list[float] = field(default_factory=list)
    counting: bool = True
    payment_keys: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Client:
    """One websocket device of the harness (writer, subscriber or probe)."""

    def __init__(self, kind: str, server: str, stats_ref: Callable[[], Stats]) -> None:
        self.kind = kind  # "writer", "sub", "probe"
        self.server = server  # "tally" or "pycrdt"
        self.stats = stats_ref
        self.ws: ClientConnection | None = None
        self.conn: Connection | None = None
        self.received = 0  # payments seen (subscriber)
        self.window: asyncio.Semaphore | None = None
        self.own: set[str] = set()
        self.acked = 0  # tally: entry messages the relay acknowledged
        self.closed: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.in_sync = asyncio.Event()
        self.doc: object = None

    async def connect_tally(self, url: str, conn: Connection) -> None:
        self.ws = await connect(url, max_size=None, compression=None, max_queue=64)
        self.conn = conn
        conn.initiate()
        await self._flush()
        # The handshake and catch-up go through the real Connection.
        while not self.in_sync.is_set():
            data = await self.ws.recv()
            conn.receive_data(data)
            await self._flush()
            for ev in conn.events_received():
                if isinstance(ev, InSync):
                    self.in_sync.set()
                elif isinstance(ev, Closed):
                    raise SystemExit(f"{self.kind} refused by the relay: {ev.reason}")
        # The tail of the handshake (the relay's Digest, Cursor and the Ack of our
        # catch-up) too: the minimal decoder counts acknowledgements from here on.
        while True:
            try:
                data = await asyncio.wait_for(self.ws.recv(), 0.2)
            except TimeoutError:
                break
            conn.receive_data(data)
            await self._flush()
            conn.events_received()
        self.acked = conn.entry_messages_acked
        self.task = asyncio.create_task(self._read_tally())

    async def connect_pycrdt(self, url: str) -> None:
        self.ws = await connect(url + ROOM, max_size=None, compression=None, max_queue=64)
        if self.kind == "probe":
            from pycrdt import Doc

            self.doc = Doc()
        self.task = asyncio.create_task(self._read_pycrdt())

    async def _flush(self) -> None:
        assert self.conn is not None and self.ws is not None
        for m in self.conn.data_to_send():
            await self.ws.send(m)

    async def _read_tally(self) -> None:
        assert self.ws is not None
        full = self.kind == "probe"
        try:
            async for data in self.ws:
                now = time.perf_counter()
                st = self.stats()
                if full:
                    assert self.conn is not None
                    self.conn.receive_data(data)
                    await self._flush()
                    done = time.perf_counter()
                    for ev in self.conn.events_received():
                        if isinstance(ev, Received):
                            for e in ev.entries:
                                t = st.sent_at.get(id_text(e.id))
                                if t is not None:
                                    st.probe_latency.append(done - t)
                        elif isinstance(ev, Closed):
                            self.closed = ev.reason
                            log(f"tally probe closed: {ev.reason}")
                    continue
                msg, keys = tally_items(data)
                if self.kind == "writer":
                    if isinstance(msg, Ack) and msg.count > self.acked:
                        k, self.acked = msg.count - self.acked, msg.count
                        st.acks += k
                        st.last_ack = now
                        assert self.window is not None
                        for _ in range(k):
                            self.window.release()
                elif keys:
                    self._delivered(st, keys, now)
                if isinstance(msg, Close):
                    self.closed = msg.reason
                    log(f"tally {self.kind} closed by the relay: {msg.reason}")
                    break
        except ConnectionClosed:
            pass

    async def _read_pycrdt(self) -> None:
        assert self.ws is not None
        try:
            async for data in self.ws:
                now = time.perf_counter()
                st = self.stats()
                keys = pycrdt_items(data)
                if not keys:
                    continue
                if self.kind == "writer":
                    mine = sum(1 for k in keys if k in self.own)
                    if mine:
                        st.acks += 1
                        st.last_ack = now
                        assert self.window is not None
                        self.window.release()
                elif self.kind == "probe":
                    from pycrdt import read_message

                    self.doc.apply_update(read_message(data[2:]))  # type: ignore[attr-defined]
                    done = time.perf_counter()
                    for k in keys:
                        t = st.sent_at.get(k)
                        if t is not None:
                            st.probe_latency.append(done - t)
                else:
                    self._delivered(st, keys, now)
        except ConnectionClosed:
            pass

    def _delivered(self, st: Stats, keys: list[str], now: float) -> None:
        n = 0
        for k in keys:
            if k in st.payment_keys:
                n += 1
                t = st.sent_at.get(k)
                if t is not None and not st.counting:
                    st.latency.append(now - t)
        if n:
            self.received += n
            if st.counting:
                st.deliveries += n
                st.last_delivery = now
            st.changed.set()

    async def close(self) -> None:
        # Dropped, not closed: a server with a backlog would take its closing handshake
        # only after flushing every message queued for this client.
        if self.ws is not None:
            self.ws.transport.abort()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


def device_conn(genesis: Genesis, key: SigningKey, open_raw: bytes = b"",
                entries: list[bytes] = ()) -> Connection:  # type: ignore[assignment]
    led = Ledger(genesis)
    if entries:
        led.add([parse_entry(b, verify=False) for b in entries])
    return Connection(client=True, key=key, role=ROLE_DEVICE, port=MemoryPort(led),
                      open_entry=open_raw)


@dataclass
class Result:
    """One server's figures."""

    name: str
    in_per_s: float = 0.0
    deliveries_per_s: float = 0.0
    deliveries: int = 0
    expected: int = 0
    harness_cpu: float = 0.0
    server_cpu: float = 0.0
    unpaced_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    sub_p50_ms: float = 0.0
    sub_p99_ms: float = 0.0
    paced_sent: int = 0
    probe_got: int = 0
    sub_got: int = 0
    paced_rate: float = 0.0


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def run_live(server: Server, kind: str, w: Workload, a: argparse.Namespace,
                   n_unpaced: int) -> Result:
    """Phases 1 and 2 against one server."""
    genesis = parse_genesis(w.genesis)
    stats = Stats()
    ref = lambda: stats  # noqa: E731
    res = Result(kind)
    key_of = [[item(r)[1] for r in p] for p in w.payments]
    stats.payment_keys = {k for ks in key_of for k in ks}
    make = tally_update if kind == "tally" else pycrdt_update

    async def join(c: Client, key: SigningKey | None = None, open_raw: bytes = b"",
                      entries: list[bytes] = ()) -> Client:  # type: ignore[assignment]
        if kind == "tally":
            await c.connect_tally(server.url, device_conn(
                genesis, key or SigningKey.generate(), open_raw, entries))
        else:
            await c.connect_pycrdt(server.url)
        return c

    log(f"[{kind}] connecting {a.subscribers} subscribers and {a.writers} writers…")
    subs = [await join(Client("sub", kind, ref)) for _ in range(a.subscribers)]
    writers = []
    for i in range(a.writers):
        c = await join(Client("writer", kind, ref), SigningKey(w.writer_seeds[i]),
                          w.writer_opens[i])
        c.own = set(key_of[i])
        writers.append(c)
    # Setup: opens, issues and receives, from the first writer, acknowledged.
    setup_keys = {item(r)[1] for r in w.setup}
    writers[0].own |= setup_keys
    writers[0].window = asyncio.Semaphore(0)
    await writers[0].ws.send(make(w.setup))  # type: ignore[union-attr]
    await asyncio.wait_for(writers[0].window.acquire(), 60)
    writers[0].own -= setup_keys
    await asyncio.sleep(0.5)  # the witness's votes on the setup go out
    stats.acks = 0

    # ---------------------------------------------------------------- unpaced
    msgs = [[make([r]) for r in p[:n_unpaced // a.writers]] for p in w.payments]
    n = sum(len(m) for m in msgs)
    res.expected = n * a.subscribers
    for c in writers:
        c.window = asyncio.Semaphore(a.window)

    async def write_all(i: int) -> None:
        c = writers[i]
        assert c.ws is not None and c.window is not None
        for j, m in enumerate(msgs[i]):
            await c.window.acquire()
            if c.closed:
                return
            stats.sent_at[key_of[i][j]] = time.perf_counter()
            await c.ws.send(m)

    log(f"[{kind}] unpaced: {n} payments to {a.subscribers} subscribers…")
    cpu0, scpu0 = time.process_time(), server.cpu()
    stats.t0 = t0 = time.perf_counter()
    await asyncio.gather(*(write_all(i) for i in range(a.writers)))
    deadline = time.perf_counter() + a.timeout
    while (sum(s.received for s in subs) < res.expected and time.perf_counter() < deadline
           and not any(s.closed for s in subs)):
        stats.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stats.changed.wait(), 5)
    while stats.acks < n and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    end = max(stats.last_delivery, stats.last_ack)
    res.unpaced_s = end - t0
    res.harness_cpu = (time.process_time() - cpu0) / res.unpaced_s
    res.server_cpu = (server.cpu() - scpu0) / res.unpaced_s
    res.deliveries = stats.deliveries
    res.in_per_s = stats.acks / max(1e-9, stats.last_ack - t0)
    res.deliveries_per_s = stats.deliveries / max(1e-9, stats.last_delivery - t0)
    log(f"[{kind}] unpaced: {stats.acks}/{n} acknowledged, {stats.deliveries}/"
        f"{res.expected} delivered in {res.unpaced_s:.2f} s")

    # ---------------------------------------------------------------- paced
    stats.counting = False
    await asyncio.sleep(0.5)
    probe = await join(Client("probe", kind, ref))
    log(f"[{kind}] probe connected (tally: caught up and in sync)")
    paced = [[make([r]) for r in p[n_unpaced // a.writers:]] for p in w.payments]
    per_writer = min(len(p) for p in paced)
    rate_w = a.rate / a.writers
    count = int(a.paced_s * rate_w)
    runs = a.paced_runs if kind == "tally" else 1  # pycrdt falls behind: once shows it
    runs = max(1, min(runs, per_writer // max(1, count)))
    count = min(per_writer, count)
    for c in writers:
        c.window = asyncio.Semaphore(10_000)

    async def pace(i: int, first: int) -> None:
        c = writers[i]
        assert c.ws is not None
        base = n_unpaced // a.writers + first
        start = time.perf_counter() + i / a.rate  # writers interleaved
        for j in range(count):
            wait = start + j / rate_w - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            stats.sent_at[key_of[i][base + j]] = time.perf_counter()
            await c.ws.send(paced[i][first + j])

    worst: tuple[float, ...] = ()
    for run in range(runs):
        stats.probe_latency.clear()
        stats.latency.clear()
        log(f"[{kind}] paced run {run + 1}/{runs}: {count * a.writers} payments at "
            f"{a.rate:g}/s… (from {time.time():.2f})")
        p0 = time.perf_counter()
        await asyncio.gather(*(pace(i, run * count) for i in range(a.writers)))
        res.paced_rate = count * a.writers / (time.perf_counter() - p0)
        res.paced_sent = count * a.writers
        deadline, seen, idle = time.perf_counter() + a.timeout, -1, time.perf_counter()
        while len(stats.probe_latency) < res.paced_sent and time.perf_counter() < deadline:
            if len(stats.probe_latency) != seen:
                seen, idle = len(stats.probe_latency), time.perf_counter()
            elif time.perf_counter() - idle > a.probe_idle_s:
                break  # nothing more arrives at the probe
            await asyncio.sleep(0.05)
        got = (pct(stats.probe_latency, 0.99), pct(stats.probe_latency, 0.5),
               pct(stats.latency, 0.5), pct(stats.latency, 0.99),
               len(stats.probe_latency), len(stats.latency))
        log(f"[{kind}] paced run {run + 1}: {got[4]}/{res.paced_sent} at the probe, "
            f"p50 {got[1]:.1f} ms p99 {got[0]:.1f} ms; subscribers p50 {got[2]:.1f} "
            f"p99 {got[3]:.1f} ms")
        if not worst or not got[0] <= worst[0]:  # NaN (nothing arrived) is the worst
            worst = got
        await asyncio.sleep(0.5)
    res.p99_ms, res.p50_ms, res.sub_p50_ms, res.sub_p99_ms, res.probe_got, res.sub_got = worst
    for c in [*subs, *writers, probe]:
        await c.close()
    return res


# --------------------------------------------------------------------------- cold
def cold_db(n_entries: int) -> tuple[bytes, list[bytes], Path]:
    """A relay database holding n entries (bench/ingest.py's network), cached."""
    from ingest import cached_bundle

    from server.store import SqliteRelayStore, networks_dir
    from wallet.bundle import read_bundle
    from wallet.encoding import parse_entry, parse_genesis
    from wallet.ledger import Ledger

    genesis_raw, _, bundle = cached_bundle(max(1, n_entries // 2), 1, False)
    network = entry_hash(genesis_raw)
    bodies = read_bundle(bundle, network)
    db = OUT / f"relay-cold-v2-{len(bodies)}.db"
    if not db.exists():
        log(f"filling {db.relative_to(ROOT)} with {len(bodies)} entries…")
        tmp = db.with_suffix(".tmp")
        shutil.rmtree(networks_dir(tmp), ignore_errors=True)
        for p in tmp.parent.glob(tmp.name + "*"):
            p.unlink()
        store = SqliteRelayStore(tmp, create=True)
        store.add_network(genesis_raw, network)
        ledger = Ledger(parse_genesis(genesis_raw), store.tables(network))
        for i in range(0, len(bodies), 5000):
            with store.writing(network, {}, day="2026-01-01", quota=None):
                ledger.add([parse_entry(b, verify=False) for b in bodies[i:i + 5000]])
        store.close()
        networks_dir(tmp).rename(networks_dir(db))
        tmp.rename(db)
    return genesis_raw, bodies, db


def copy_relay_db(src: Path, dst: Path) -> Path:
    """A scratch copy of a relay database: its main file and its network files."""
    from server.store import networks_dir

    shutil.rmtree(networks_dir(dst), ignore_errors=True)
    shutil.copyfile(src, dst)
    shutil.copytree(networks_dir(src), networks_dir(dst))
    return dst


async def cold_sync(url: str, genesis_raw: bytes, home: Path) -> tuple[float, int, int, bool]:
    """A new device syncs from the relay: (seconds, bytes received, entries stored,
    digests agreed)."""
    from wallet.wallet import Wallet

    shutil.rmtree(home, ignore_errors=True)
    wallet = Wallet.join(home, genesis_raw)
    port = WalletPort(wallet)
    conn = Connection(client=True, key=SigningKey.generate(), role=ROLE_DEVICE, port=port)
    got = 0
    agreed = False
    t0 = time.perf_counter()
    async with connect(url, max_size=None, compression=None) as ws:
        conn.initiate()
        for m in conn.data_to_send():
            await ws.send(m)
        while not agreed:
            data = await ws.recv()
            got += len(data)
            conn.receive_data(data)
            for m in conn.data_to_send():
                await ws.send(m)
            for ev in conn.events_received():
                if isinstance(ev, InSync):
                    agreed = True
                elif isinstance(ev, Closed):
                    raise SystemExit(f"cold sync closed: {ev.reason}")
        wall = time.perf_counter() - t0
        conn.close()
        for m in conn.data_to_send():
            await ws.send(m)
    stored = wallet.store.high_water()
    wallet.close()
    return wall, got, stored, agreed


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the last line on stdout carries the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--payments", type=int, default=20_000, help="unpaced payments")
    p.add_argument("--subscribers", type=int, default=50)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--cold-entries", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=500.0, help="paced payments a second")
    p.add_argument("--paced-s", type=float, default=10.0, help="seconds of paced load")
    p.add_argument("--paced-runs", type=int, default=3,
                   help="paced runs against tally-relay; p99_ms is the worst run's")
    p.add_argument("--window", type=int, default=16,
                   help="unacknowledged messages a writer may have out (unpaced)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a phase may take")
    p.add_argument("--probe-idle-s", type=float, default=60.0,
                   help="paced: stop waiting once the probe got nothing for this long")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", choices=("live", "cold", "tally-live"),
                   help="run one part only (tally-live: the live phases against tally-relay "
                        "alone, a diagnostic)")
    p.add_argument("--stalls", metavar="FILE",
                   help="run the live relay under bench/stallwatch.py, stacks to FILE")
    p.add_argument("--profile-relay", metavar="FILE",
                   help="run the live tally-relay under cProfile, writing FILE")
    p.add_argument("--serve-pycrdt", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_pycrdt:
        asyncio.run(serve_pycrdt())
        return 0

    # A SIGTERM unwinds like an error, so the servers started here are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "relay-run"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    per_writer = (-(-a.payments // a.writers)
                  + a.paced_runs * int(a.rate * a.paced_s / a.writers) + 1)
    results: dict[str, Result] = {}
    if a.only != "cold":
        w = cached_live(per_writer, a.writers, a.seed)
        gfile = tmp / "live.genesis"
        gfile.write_bytes(w.genesis)
        wkey = tmp / "live.witness.key"
        keyfiles.save_key(wkey, SigningKey(w.witness_seed), PASSPHRASE, kind="witness",
                          limits=keyfiles.FAST_INSECURE)
        n_unpaced = a.payments // a.writers * a.writers
        for kind in ("tally",) if a.only == "tally-live" else ("tally", "pycrdt"):
            if kind == "tally":
                srv = start_tally(tmp, gfile, db=tmp / "live.db", witness_key=wkey,
                                  profile=a.profile_relay, name="tally-live",
                                  stalls=a.stalls)
            else:
                srv = start_pycrdt(tmp)
            try:
                results[kind] = asyncio.run(run_live(srv, kind, w, a, n_unpaced))
            finally:
                srv.stop()
        for r in results.values():
            print(f"{r.name}: entries_in_per_s={r.in_per_s:.0f} "
                  f"deliveries_per_s={r.deliveries_per_s:.0f} delivered={r.deliveries}/"
                  f"{r.expected} unpaced_s={r.unpaced_s:.2f} harness_cpu={r.harness_cpu:.2f} "
                  f"server_cpu={r.server_cpu:.2f} paced_sent={r.paced_sent} "
                  f"paced_rate={r.paced_rate:.0f} probe_got={r.probe_got} "
                f"sub_got={r.sub_got} p50_ms={r.p50_ms:.1f} p99_ms={r.p99_ms:.1f} "
                  f"sub_p50_ms={r.sub_p50_ms:.1f} sub_p99_ms={r.sub_p99_ms:.1f}", flush=True)

    cold_ratio = wire = float("nan")
    if a.only != "live" and a.cold_entries > 0:
        from ingest import raw_verify_rate

        genesis_raw, bodies, db = cold_db(a.cold_entries)
        signed = sum(len(b) for b in bodies)
        gfile = tmp / "cold.genesis"
        gfile.write_bytes(genesis_raw)
        live_db = copy_relay_db(db, tmp / "cold.db")
        log("starting a relay on the filled database…")
        srv = start_tally(tmp, gfile, db=live_db, witness_key=None, profile=None,
                          name="tally-cold")
        try:
            log(f"cold sync of {len(bodies)} entries…")
            scpu0 = srv.cpu()
            wall, got, stored, agreed = asyncio.run(
                cold_sync(srv.url, genesis_raw, tmp / "cold-wallet"))
            scpu = srv.cpu() - scpu0
        finally:
            srv.stop()
        log("measuring raw signature verification (one core)…")
        verify_s = len(bodies) / raw_verify_rate(bodies)
        cold_ratio, wire = wall / verify_s, got / signed
        if stored != len(bodies):
            raise SystemExit(f"the cold sync stored {stored} of {len(bodies)} entries")
        print(f"cold: entries={len(bodies)} stored={stored} in_sync={agreed} sync_s={wall:.2f} "
              f"verify_s={verify_s:.2f} relay_cpu_s={scpu:.2f} received_bytes={got} "
              f"signed_bytes={signed}", flush=True)

    t, py = results.get("tally", Result("tally")), results.get("pycrdt", Result("pycrdt"))
    vs = t.deliveries_per_s / py.deliveries_per_s if py.deliveries_per_s else float("nan")
    print(f"deliveries_per_s={t.deliveries_per_s:.0f} "
          f"pycrdt_deliveries_per_s={py.deliveries_per_s:.0f} vs_pycrdt={vs:.2f} "
          f"p99_ms={t.p99_ms:.1f} cold_sync_vs_verify={cold_ratio:.2f} wire_ratio={wire:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
