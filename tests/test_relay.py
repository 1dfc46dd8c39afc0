"""tally-relay in real processes on loopback: serving, fan-out, witness votes, restart and
resume, a SIGKILL while entries stream in, /healthz and /metrics, the command line.

Clients are written here: websockets' asyncio client driving
``sync.protocol.Connection(client=True, role=ROLE_DEVICE)`` over a ``MemoryPort``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.errors import QuotaExceeded, StoreError
from server.network import ServedNetwork
from server.relay import Limits, RelayConfig, Session, TokenBucket
from server.relay import Relay as RelayServer
from server.store import SqliteRelayStore, network_path, networks_dir
from server.telemetry import Telemetry
from sync.errors import CloseCode
from sync.messages import ROLE_DEVICE, Close, Want, decode
from sync.port import MemoryPort
from sync.protocol import Acked, Closed, CursorReceived, Event, InSync, Received
from sync.protocol import Connection as SyncConnection
from tests.ledgerkit import Device, Net
from wallet import keys as keyfiles
from wallet.encoding import Block, Entry, Vote, key_text, parse_entry
from wallet.ledger import Ledger

pytestmark = pytest.mark.slow

PASSPHRASE = "relay test passphrase"
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def relay_env() -> dict[str, str]:
    """The environment a test relay runs in: a passphrase and the fast test KDF."""
    env = dict(os.environ)
    env.update(TALLY_PASSPHRASE=PASSPHRASE, TALLY_INSECURE_FAST_KDF="1",
               PYTHONPATH=str(ROOT))
    return env


def relay_command(*args: object) -> list[str]:
    """``tally-relay`` with arguments (the console script, else the module)."""
    exe = BIN / "tally-relay"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]
    return [*head, *(str(a) for a in args)]


# ------------------------------------------------------------------- the relay process
@dataclass
class Relay:
    """A running ``tally-relay`` subprocess; ``log`` is its stderr, one JSON per line."""

    proc: subprocess.Popen[bytes]
    db: Path
    log: Path
    port: int = 0
    tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str, str]:
        base = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        with urllib.request.urlopen(base + path, timeout=5, context=self.tls) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()

    def health(self) -> dict:
        return json.loads(self.get("/healthz")[2])

    def metric(self, name: str) -> float:
        for line in self.get("/metrics")[2].splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def events(self, event: str | None = None) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if event is None or doc.get("event") == event:
                out.append(doc)
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout_s)


def start_relay(tmp: Path, *args: object, db: Path | None = None, name: str = "relay",
                tls: ssl.SSLContext | None = None, listen: str = "127.0.0.1:0",
                log_file: Path | None = None) -> Relay:
    """Start ``tally-relay --db … --listen LISTEN ARGS`` and wait until it is healthy.

    With ``log_file`` the relay logs there (``--log-file``), and ``Relay.log`` is it."""
    db = db or tmp / f"{name}.db"
    stderr = tmp / f"{name}-{time.monotonic_ns()}.log"
    more = ("--log-file", log_file) if log_file is not None else ()
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            relay_command("--db", db, "--listen", listen, *more, *args),
            stdout=subprocess.DEVNULL, stderr=err, env=relay_env(), cwd=tmp,
        )
    log = log_file or stderr
    r = Relay(proc, db, log, tls=tls)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tally-relay exited {proc.returncode}: "
                                 f"{stderr.read_text()}")
        if not log.exists():
            time.sleep(0.05)
            continue
        listening = r.events("listening")
        if listening:
            r.port = listening[-1]["port"]
            try:
                if r.get("/healthz")[0] == 200:
                    return r
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    said = log.read_text() if log.exists() else ""
    raise AssertionError(f"tally-relay did not come up: {said}{stderr.read_text()}")


def network_files(db: Path) -> list[Path]:
    """The per-network ledger files of a relay database."""
    return sorted(networks_dir(db).glob("*.sqlite"))


def read_network(db: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` over every network file of a relay database (read-only, beside
    the running relay)."""
    out: list[tuple] = []
    for path in network_files(db):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            out.extend(conn.execute(sql).fetchall())
        finally:
            conn.close()
    return out


def stored_count(db: Path) -> int:
    """Entries in a relay database (read-only, beside the running relay)."""
    return sum(n for (n,) in read_network(db, "SELECT count(*) FROM entries"))


def stored_entries(db: Path) -> list[Entry]:
    """Every entry in a relay database."""
    return [parse_entry(bytes(b)) for (b,) in read_network(db, "SELECT body FROM entries")]


@dataclass
class Network:
    """A test network (ledgerkit ``Net``), its genesis file and its witness key file."""

    net: Net
    genesis: Path
    witness_key: Path | None


def make_network(tmp: Path, witnesses: int = 1, name: str = "test") -> Network:
    """A network with ``witnesses`` witnesses (quorum 1 of 1 by default), on disk."""
    net = Net(witnesses=witnesses, quorum=min(witnesses, 1), name=name)
    genesis = tmp / f"{name}.genesis"
    genesis.write_bytes(net.genesis.raw)
    wk = None
    if witnesses:
        wk = tmp / f"{name}.witness.key"
        keyfiles.save_key(wk, net.witness_keys[0], PASSPHRASE, kind="witness",
                          limits=keyfiles.FAST_INSECURE)
    return Network(net, genesis, wk)


# ---------------------------------------------------------------------------- a client
@dataclass
class Client:
    """A device talking to the relay: a ``Connection`` over a websocket and a MemoryPort."""

    port: MemoryPort
    key: SigningKey
    open_entry: bytes = b""
    cursor: bytes = b""
    events: list[Event] = field(default_factory=list)
    cursors: list[bytes] = field(default_factory=list)  # every cursor received
    wants: list[Want] = field(default_factory=list)  # every Want the relay sent
    acked: int = 0  # entry messages the relay acknowledged
    closed: Closed | None = None
    ws: ClientConnection | None = None
    conn: SyncConnection | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    in_sync: bool = False

    @property
    def ledger(self) -> Ledger:
        return self.port.replica.ledger

    async def connect(self, url: str, tls: ssl.SSLContext | None = None) -> None:
        self.ws = await connect(url, max_size=None, ssl=tls)
        self.conn = SyncConnection(client=True, key=self.key, role=ROLE_DEVICE, port=self.port,
                                   open_entry=self.open_entry, cursor=self.cursor)
        self.closed = None
        self.conn.initiate()
        await self.flush()
        self._reader = asyncio.create_task(self._read())

    async def flush(self) -> None:
        assert self.conn is not None and self.ws is not None
        for m in self.conn.data_to_send():
            try:
                await self.ws.send(m)
            except ConnectionClosed:
                return

    async def _read(self) -> None:
        assert self.ws is not None and self.conn is not None
        try:
            async for data in self.ws:
                assert isinstance(data, bytes)
                if data[0] == 3:  # a Want
                    want = decode(data, max_bytes=len(data), max_entries=0)
                    assert isinstance(want, Want)
                    self.wants.append(want)
                self.conn.receive_data(data)
                for ev in self.conn.events_received():
                    self.events.append(ev)
                    if isinstance(ev, CursorReceived):
                        self.cursor = ev.cursor
                        self.cursors.append(ev.cursor)
                    if isinstance(ev, Acked):
                        self.acked = ev.count
                    if isinstance(ev, Closed):
                        self.closed = ev
                    if isinstance(ev, InSync):
                        self.in_sync = True
                await self.flush()
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self._changed.set()

    async def wait(self, pred: Callable[[], bool], timeout_s: float = 10, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or pred}; "
                                     f"closed={self.closed}")
            self._changed.clear()
            if pred():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def ready(self) -> None:
        await self.wait(lambda: self.conn is not None and self.conn.live, what="handshake")

    async def send(self, entries: Iterable[Entry]) -> None:
        """Entries made by this device: stored locally, sent as a live update."""
        entries = list(entries)
        self.port.add_local(entries)
        assert self.conn is not None
        self.conn.send_entries(entries)
        await self.flush()

    async def send_acked(self, entries: Iterable[Entry], timeout_s: float = 10) -> None:
        """Send, and wait for the relay's Ack of the messages (or the end)."""
        await self.send(entries)
        assert self.conn is not None
        sent = self.conn.entry_messages_sent
        await self.wait(lambda: self.acked >= sent or self.closed is not None, timeout_s,
                        "an acknowledgement")

    def has(self, entry_id: bytes) -> bool:
        return entry_id in self.ledger

    def final(self, block: Block) -> bool:
        st = self.ledger.status.get(block.id)
        return st is not None and st.final

    def received(self) -> list[Entry]:
        return [e for ev in self.events if isinstance(ev, Received) for e in ev.entries]

    async def close(self) -> None:
        if self.conn is not None and self.conn.state != "closed":
            self.conn.close()
            await self.flush()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def device_client(net: Net, dev: Device, *entries: Entry) -> Client:
    """A client for ``dev`` whose replica holds ``entries`` (its open, say)."""
    led = Ledger(net.genesis)
    led.add([dev.open, *entries])
    return Client(MemoryPort(led), dev.key, open_entry=dev.open.raw)


async def connected(url: str, client: Client, tls: ssl.SSLContext | None = None) -> Client:
    await client.connect(url, tls)
    await client.ready()
    return client


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- tests
def test_serves_fans_out_and_witnesses_then_resumes_after_a_restart(tmp_path: Path) -> None:
    nw = make_network(tmp_path)
    net = nw.net
    alice, bob = net.account(label="alice"), net.account(label="bob")
    relay = start_relay(tmp_path, "--network", nw.genesis, "--witness-key", nw.witness_key)

    async def first() -> bytes:
        watcher = await connected(relay.url, device_client(net, bob[0]))
        mint = await connected(relay.url, device_client(net, net.mint))
        await mint.send_acked([alice[0].open, bob[0].open])
        iss = net.issue(mint.ledger, alice[0], 500)
        await mint.send_acked([iss])
        # the watcher sees the issue fanned out, and the witness's vote turn it final
        await watcher.wait(lambda: watcher.final(iss), what="the issue final at the watcher")
        await mint.wait(lambda: mint.final(iss), what="the vote back at the sender")
        # alice connects later: catch-up brings her the issue and its vote
        a = await connected(relay.url, device_client(net, alice[0]))
        await a.wait(lambda: a.final(iss), what="alice caught up")
        rc = net.receive(a.ledger, alice[0], iss)
        await a.send_acked([rc])
        pay = net.send(a.ledger, alice[0], bob[0], 200)
        await a.wait(lambda: a.ledger.status[rc.id].final, what="alice's receive final")
        await a.send_acked([pay])
        await watcher.wait(lambda: watcher.final(pay), what="the payment final at bob")
        assert watcher.ledger.balance(bob[0].pk).incoming == 0
        assert watcher.ledger.status[pay.id].label == "final"
        cursor = watcher.cursor
        for c in (watcher, mint, a):
            await c.close()
        return cursor

    cursor = run(first())  # type: ignore[misc]
    health = relay.health()
    assert health["status"] == "ok" and health["networks"] == 1
    stored = stored_count(relay.db)
    assert health["entries"] == stored >= 5 + 3  # 3 opens, 3 blocks, their votes
    assert relay.metric("tally_relay_votes_total") >= 3
    assert relay.metric("tally_relay_entries_in_total") == 6
    assert relay.metric("tally_relay_entries_out_total") > 0
    assert relay.stop() == 0  # SIGTERM: a clean exit
    assert relay.events("stopped")

    # restart on the same database: everything is there, and a cursor resumes
    relay = start_relay(tmp_path, "--network", nw.genesis, "--witness-key", nw.witness_key,
                        db=relay.db)
    assert relay.health()["entries"] == stored

    # bob's replica is emptied of what came after his cursor, to see the catch-up carry it
    async def second_resume() -> None:
        mint = device_client(net, net.mint)
        mint.port.add_local(stored_entries(relay.db))
        mint = await connected(relay.url, mint)
        iss2 = net.issue(mint.ledger, bob[0], 70)
        await mint.send_acked([iss2])
        await mint.wait(lambda: mint.final(iss2), what="the second issue final")
        await mint.close()
        before = [e for e in stored_entries(relay.db) if e.id not in (iss2.id,)
                  and not (isinstance(e, Vote) and e.block_id == iss2.id)]
        watcher = device_client(net, bob[0])
        watcher.port.add_local(before)
        watcher.cursor = cursor
        await connected(relay.url, watcher)
        await watcher.wait(lambda: watcher.final(iss2), what="resumed catch-up")
        got = watcher.received()
        assert {e.id for e in got} >= {iss2.id}
        assert len(got) <= 3, "a resumed client gets only what is new since its cursor"
        assert watcher.closed is None
        await watcher.close()

    run(second_resume())
    assert relay.stop() == 0


def test_the_relay_keeps_each_devices_cursor_and_resumes_it_without_a_state_vector(
    tmp_path: Path,
) -> None:
    nw = make_network(tmp_path, witnesses=0)
    net = nw.net
    alice = net.account(label="alice")
    relay = start_relay(tmp_path, "--network", nw.genesis)
    port = device_client(net, net.mint).port  # the mint's store, across sessions
    iss = net.issue(port.replica.ledger, alice[0], 500)

    async def session(relay: Relay, c: Client, *entries: Entry) -> None:
        await connected(relay.url, c)
        if entries:
            await c.send_acked(entries)
        await c.wait(lambda: c.in_sync, what="in sync")
        await c.close()
        c.in_sync = False

    async def go(relay: Relay, first: bool) -> None:
        mint = Client(port, net.mint.key, open_entry=net.mint.open.raw)
        if first:
            await session(relay, mint, alice[0].open, iss)
            (want,) = mint.wants
            assert want.cursor == b"", "a device the relay never met has no cursor"
            assert want.state_vector, "so the relay offers its state vector"
        await session(relay, mint)
        want = mint.wants[-1]
        assert want.cursor == mint.port.cursor(), "the cursor the device gave last time"
        assert want.state_vector == b"", "no state vector when a cursor suffices"
        assert not [e for e in mint.received() if e.id == iss.id]

    run(go(relay, first=True))
    assert relay.stop() == 0
    relay = start_relay(tmp_path, "--network", nw.genesis, db=relay.db)  # kept on disk
    run(go(relay, first=False))
    assert relay.stop() == 0


def test_sigkill_while_entries_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    nw = make_network(tmp_path)
    net = nw.net
    alice = net.account(label="alice")
    relay = start_relay(tmp_path, "--network", nw.genesis, "--witness-key", nw.witness_key,
                        "--vote-delay", "0.001")
    acked: list[bytes] = []
    sent: list[Block] = []
    ack_positions: list[int] = []

    async def reconnect() -> Client:
        mint = device_client(net, net.mint, *sent)
        mint.port.add_local(stored_entries(relay.db))
        await connected(relay.url, mint)
        await mint.wait(lambda: mint.in_sync, what="catch-up")
        mint.cursors.clear()
        return mint

    async def until_killed() -> None:
        """Send issues one after another, each once the previous one was acknowledged,
        while a timer SIGKILLs the relay at an arbitrary instant. Any acknowledgement
        after sending k covers k: everything before it was acknowledged already, so k
        (as an update, or again as reconciliation entries) is the only new entry offered.
        """
        mint = await reconnect()
        await mint.send_acked([alice[0].open])
        killer = threading.Timer(random.uniform(0.2, 0.4), os.kill,
                                 (relay.proc.pid, signal.SIGKILL))
        killer.start()
        while len(sent) < 2000:
            iss = net.issue(mint.ledger, alice[0], 1 + len(sent))
            sent.append(iss)
            try:
                await mint.send_acked([iss], timeout_s=2)
            except AssertionError:
                break
            if mint.closed is not None or mint._reader is None or mint._reader.done():
                break
            acked.append(iss.id)
        killer.join()
        ack_positions.extend(struct.unpack(">Q", c[-8:])[0] for c in mint.cursors)
        await mint.close()

    async def stop_and_wait(count: int) -> None:
        mint = await reconnect()
        for _ in range(count):
            iss = net.issue(mint.ledger, alice[0], 1 + len(sent))
            sent.append(iss)
            await mint.send_acked([iss], timeout_s=5)
            assert mint.closed is None
            acked.append(iss.id)
        await mint.close()

    run(until_killed())
    relay.proc.wait(10)
    assert len(acked) >= 10, "the relay died before it acknowledged much"
    # what the restarted relay holds (it recovers the database as any writer would)
    relay = start_relay(tmp_path, "--network", nw.genesis, "--witness-key", nw.witness_key,
                        db=relay.db)
    ((high,),) = read_network(relay.db, "SELECT coalesce(max(ref), 0) FROM entries")
    # every position the relay handed out in a cursor survived the kill
    assert max(ack_positions) <= high, (ack_positions[-5:], high)
    ids = {e.id for e in stored_entries(relay.db)}
    lost = [i for i, b in enumerate(sent) if b.id in set(acked) - ids]
    assert not lost, (f"acknowledged entries lost: {lost} of {len(sent)}; last cursors "
                      f"{ack_positions[-5:]}, high-water {high}")
    run(stop_and_wait(5))
    entries = stored_entries(relay.db)
    ids = {e.id for e in entries}
    assert set(acked) <= ids
    # no slot voted twice: the witness's votes at the mint all lie on its one chain
    votes = [e for e in entries if isinstance(e, Vote)]
    by_slot: dict[tuple[bytes, int], set[bytes]] = {}
    for v in votes:
        by_slot.setdefault((v.device, v.seq), set()).add(v.block_id)
    assert all(len(b) == 1 for b in by_slot.values()), "a slot was voted twice"
    chain = {e.id for e in entries if isinstance(e, Block)}
    assert all(v.block_id in chain for v in votes)
    claims = {(bytes(d), s): bytes(b) for d, s, b in
              read_network(relay.db, "SELECT device, slot, block FROM claims")}
    assert all(claims[(v.device, v.seq)] == v.block_id for v in votes), "a vote unclaimed"

    async def last_final() -> None:
        w = await connected(relay.url, device_client(net, alice[0]))
        await w.wait(lambda: w.final(sent[-1]) if sent[-1].id in ids else True,
                     what="the newest issue final after the restart")
        await w.close()

    run(last_final())
    assert relay.stop() == 0


def test_open_relay_takes_any_network_and_healthz_metrics(tmp_path: Path) -> None:
    nw = make_network(tmp_path, witnesses=0, name="openly")
    net = nw.net
    relay = start_relay(tmp_path, "--open", name="open")
    status, ctype, body = relay.get("/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    for name in ("tally_relay_connections", "tally_relay_entries_in_total",
                 "tally_relay_entries_out_total", "tally_relay_refusals_total",
                 "tally_relay_votes_total"):
        assert f"# TYPE {name} " in body
    status, ctype, body = relay.get("/healthz")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body)["networks"] == 0

    async def go() -> None:
        c = device_client(net, net.mint)
        await connected(relay.url, c)
        alice = net.account(label="a")
        await c.send_acked([alice[0].open])
        await c.close()

    run(go())
    assert relay.health()["networks"] == 1 and relay.health()["entries"] == 2
    assert relay.metric("tally_relay_connections_total") == 1
    assert relay.stop() == 0
    # the network is remembered: a restarted --open relay serves it at once
    relay = start_relay(tmp_path, "--open", db=relay.db, name="open")
    assert relay.health()["networks"] == 1
    assert relay.stop() == 0


def test_command_line(tmp_path: Path) -> None:
    env = relay_env()
    db = tmp_path / "m.db"
    p = subprocess.run(relay_command("migrate", "--db", db), env=env, capture_output=True,
                       text=True)
    assert p.returncode == 0 and "schema version 0 → 2" in p.stdout
    p = subprocess.run(relay_command("migrate", "--db", db), env=env, capture_output=True,
                       text=True)
    assert p.returncode == 0 and "up to date" in p.stdout
    key = tmp_path / "w.key"
    p = subprocess.run(relay_command("keygen", key, "--kind", "witness"), env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0
    kind, public = keyfiles.read_key_info(key)
    assert kind == "witness" and key_text(public) == p.stdout.strip()
    p = subprocess.run(relay_command("keygen", key), env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "refusing to overwrite" in p.stderr
    bad = tmp_path / "bad.genesis"
    bad.write_bytes(b"nope")
    p = subprocess.run(relay_command("--db", db, "--listen", "127.0.0.1:0", "--network", bad),
                       env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "not a valid genesis file" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run(relay_command("--db", db, "--listen", "nowhere", "--open"),
                       env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "HOST:PORT" in p.stderr
    no_pass = {k: v for k, v in env.items() if k not in ("TALLY_PASSPHRASE",)}
    p = subprocess.run(relay_command("--db", db, "--listen", "127.0.0.1:0", "--open"),
                       env=no_pass, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 1 and "TALLY_PASSPHRASE" in p.stderr


def test_two_relays_peer_and_carry_entries_and_votes_both_ways(tmp_path: Path) -> None:
    nw = make_network(tmp_path)
    net = nw.net
    alice, bob = net.account(label="alice"), net.account(label="bob")
    a = start_relay(tmp_path, "--network", nw.genesis, "--witness-key", nw.witness_key,
                    name="a")
    b = start_relay(tmp_path, "--network", nw.genesis, "--peer", a.url, name="b")

    async def go() -> None:
        on_b = await connected(b.url, device_client(net, bob[0]))
        mint = await connected(a.url, device_client(net, net.mint))
        await mint.send_acked([alice[0].open, bob[0].open])
        iss = net.issue(mint.ledger, bob[0], 40)
        await mint.send_acked([iss])
        # relay a witnesses; relay b carries the issue and a's vote to bob
        await on_b.wait(lambda: on_b.final(iss), timeout_s=15, what="the issue final via b")
        rc = net.receive(on_b.ledger, bob[0], iss)
        await on_b.send_acked([rc])
        await mint.wait(lambda: mint.final(rc), timeout_s=15, what="bob's receive back at a")
        for c in (on_b, mint):
            await c.close()

    run(go())
    assert b.events("peer_ready")
    assert b.stop() == 0
    conn = sqlite3.connect(f"file:{b.db}?mode=ro", uri=True)
    (saved,) = conn.execute("SELECT value FROM meta WHERE key LIKE 'peer_cursor:%'").fetchone()
    conn.close()
    assert len(bytes(saved)) == 24  # a's cursor, kept for the next start

    async def meanwhile() -> Block:
        mint = device_client(net, net.mint)
        mint.port.add_local(stored_entries(a.db))
        await connected(a.url, mint)
        iss = net.issue(mint.ledger, bob[0], 5)
        await mint.send_acked([iss])
        await mint.close()
        return iss

    iss = run(meanwhile())
    b = start_relay(tmp_path, "--network", nw.genesis, "--peer", a.url, db=b.db, name="b")

    async def after() -> None:
        on_b = await connected(b.url, device_client(net, bob[0]))
        await on_b.wait(lambda: on_b.final(iss), timeout_s=15,  # type: ignore[arg-type]
                        what="the issue made while b was down, final via b")
        await on_b.close()

    run(after())
    assert a.stop() == 0 and b.stop() == 0


def self_signed(tmp: Path, name: str = "") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (``openssl``): the two files."""
    cert, key = tmp / f"{name}cert.pem", tmp / f"{name}key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN=localhost{name}",
         "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_wss_and_connection_limit_and_sigint(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(cafile=str(cert))
    nw = make_network(tmp_path, witnesses=0)
    net = nw.net
    relay = start_relay(tmp_path, "--network", nw.genesis, "--tls-cert", cert, "--tls-key", key,
                        "--max-connections", 2, tls=tls)
    assert relay.health()["status"] == "ok"

    async def go() -> None:
        one = await connected(relay.url, device_client(net, net.mint), tls)
        two = await connected(relay.url, device_client(net, net.account()[0]), tls)
        three = device_client(net, net.account()[0])
        await three.connect(relay.url, tls)
        await three.wait(lambda: three.closed is not None, what="the third one refused")
        assert three.closed is not None and three.closed.code == CloseCode.OVERLOADED
        assert "connections" in three.closed.reason
        await three.close()
        await one.send_acked([net.account(label="new")[0].open])
        relay.proc.send_signal(signal.SIGINT)
        for c in (one, two):
            await c.wait(lambda c=c: c.closed is not None, what="the shutdown close")
            assert c.closed is not None and c.closed.code == CloseCode.SHUTDOWN
            await c.close()

    run(go())
    assert relay.proc.wait(10) == 0
    assert relay.events("stopped")


def test_a_start_with_a_wrong_passphrase_leaves_nothing_behind(tmp_path: Path) -> None:
    """The witness key is opened before anything is written: a wrong passphrase is said,
    naming the key file, and leaves no node key (nor database) sealed with it; the next
    start with the right passphrase serves. A start that cannot bind its port leaves no
    node key either."""
    nw = make_network(tmp_path)
    assert nw.witness_key is not None
    db = tmp_path / "relay.db"
    node_key = tmp_path / "relay.node.key"
    before = sorted(p.name for p in tmp_path.iterdir())
    wrong = relay_env() | {"TALLY_PASSPHRASE": "not the relay passphrase"}
    p = subprocess.run(relay_command("--db", db, "--listen", "127.0.0.1:0", "--network",
                                     nw.genesis, "--witness-key", nw.witness_key),
                       env=wrong, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert f"wrong passphrase for the witness key in {nw.witness_key} " in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no key, no db, no temp

    with socket.socket() as taken:  # a port already in use: the start fails after the keys
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        p = subprocess.run(relay_command("--db", db, "--listen",
                                         f"127.0.0.1:{taken.getsockname()[1]}", "--network",
                                         nw.genesis, "--witness-key", nw.witness_key),
                           env=relay_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "cannot listen on" in p.stderr, p.stderr
    assert not node_key.exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

    relay = start_relay(tmp_path, "--network", nw.genesis, "--witness-key", nw.witness_key,
                        db=db)
    assert relay.health()["status"] == "ok"
    made = keyfiles.load_key(node_key, PASSPHRASE, kind="node")
    assert relay.health()["node_key"] == key_text(bytes(made.verify_key))
    assert stat.S_IMODE(node_key.stat().st_mode) == 0o600
    assert relay.stop() == 0
    again = start_relay(tmp_path, "--network", nw.genesis, "--witness-key", nw.witness_key,
                        db=db)
    assert again.health()["node_key"] == key_text(bytes(made.verify_key))  # kept, not remade
    assert again.stop() == 0


def served_cert_sha256(port: int) -> str:
    """SHA-256 (hex) of the certificate a fresh TLS connection to the relay is served,
    after checking the relay answers ``/healthz`` over it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # fingerprints are compared instead
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b'"status": "ok"' in answer, answer
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def pem_sha256(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def wait_for_event(relay: Relay, event: str, count: int, timeout_s: float = 10) -> list[dict]:
    """Wait until the relay's log holds ``count`` ``event`` events; them."""
    deadline = time.monotonic() + timeout_s
    while len(got := relay.events(event) if relay.log.exists() else []) < count:
        assert relay.proc.poll() is None, f"the relay exited {relay.proc.returncode}"
        assert time.monotonic() < deadline, f"no {event} event {count} in {relay.log}"
        time.sleep(0.05)
    return got


def test_sighup_reloads_the_certificate_and_reopens_the_log_file(tmp_path: Path) -> None:
    """SIGHUP after certbot and logrotate: new connections get the new certificate,
    events go to a new log file, open conversations go on, and nothing stops. A
    certificate that does not load keeps the old one served."""
    old_cert, old_key = self_signed(tmp_path, "old-")
    new_cert, new_key = self_signed(tmp_path, "new-")
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)
    tls = ssl.create_default_context(cafile=str(old_cert))
    tls.load_verify_locations(cafile=str(new_cert))
    nw = make_network(tmp_path, witnesses=0)
    net = nw.net
    log = tmp_path / "relay.log"
    relay = start_relay(tmp_path, "--network", nw.genesis, "--tls-cert", cert, "--tls-key", key,
                        tls=tls, log_file=log)
    assert served_cert_sha256(relay.port) == pem_sha256(old_cert)
    alice = net.account(label="alice")

    async def before() -> Client:
        mint = await connected(relay.url, device_client(net, net.mint), tls)
        await mint.send_acked([alice[0].open])
        return mint

    async def go() -> None:
        mint = await before()
        # certbot renews (files replaced whole), logrotate moves the log away, then HUP
        shutil.copy(new_cert, tmp_path / "staged-cert.pem")
        shutil.copy(new_key, tmp_path / "staged-key.pem")
        os.replace(tmp_path / "staged-cert.pem", cert)
        os.replace(tmp_path / "staged-key.pem", key)
        os.replace(log, tmp_path / "relay.log.1")
        relay.proc.send_signal(signal.SIGHUP)
        [done] = await asyncio.to_thread(wait_for_event, relay, "reloaded", 1)
        assert done["tls"] == "reloaded" and done["cert_sha256"] == pem_sha256(new_cert)
        assert done["log_file"] == str(log)
        assert await asyncio.to_thread(served_cert_sha256, relay.port) == pem_sha256(new_cert)
        # the conversation opened before goes on; a new one syncs what it sent since
        iss = net.issue(mint.ledger, alice[0], 30)
        await mint.send_acked([iss])
        watcher = await connected(relay.url, device_client(net, alice[0]), tls)
        await watcher.wait(lambda: watcher.has(iss.id), what="the issue sent after SIGHUP")
        assert mint.closed is None
        for c in (mint, watcher):
            await c.close()

    run(go())
    rotated = [json.loads(line)["event"] for line in
               (tmp_path / "relay.log.1").read_text().splitlines()]
    assert "listening" in rotated and "reloaded" not in rotated
    assert rotated.count("ready") == 1  # the mint's, before the rotation
    assert len(relay.events("ready")) == 1  # the watcher's, after it: in the new file

    cert.write_text("not a certificate\n")  # a botched renewal: refused, the old one kept
    relay.proc.send_signal(signal.SIGHUP)
    _, botched = wait_for_event(relay, "reloaded", 2)
    assert botched["tls"] == "kept the old certificate"
    assert any(e.get("where") == "reload" and str(cert) in e["error"]
               for e in relay.events("error"))
    assert served_cert_sha256(relay.port) == pem_sha256(new_cert)
    assert relay.health()["status"] == "ok"
    assert relay.stop() == 0


def test_sighup_without_tls_or_log_file_is_logged_and_changes_nothing(tmp_path: Path) -> None:
    nw = make_network(tmp_path, witnesses=0)
    net = nw.net
    relay = start_relay(tmp_path, "--network", nw.genesis)
    for n in (1, 2):  # twice: the handler stays installed
        relay.proc.send_signal(signal.SIGHUP)
        got = wait_for_event(relay, "reloaded", n)
    assert got[-1] == got[-1] | {"signal": "SIGHUP", "tls": "not served", "log_file": None}
    assert relay.health()["status"] == "ok"

    async def go() -> None:
        mint = await connected(relay.url, device_client(net, net.mint))
        opened = net.account(label="after")[0].open
        await mint.send_acked([opened])
        assert mint.closed is None and opened.id in {e.id for e in stored_entries(relay.db)}
        await mint.close()

    run(go())
    assert relay.stop() == 0


def test_address_rate_limit_and_handshake_timeout(tmp_path: Path) -> None:
    nw = make_network(tmp_path, witnesses=0)
    net = nw.net
    relay = start_relay(tmp_path, "--network", nw.genesis, "--address-rate", 1,
                        "--address-burst", 12, "--handshake-timeout", 0.5,
                        "--max-connections-per-address", 2)

    async def go() -> None:
        async with connect(relay.url) as one, connect(relay.url) as two:
            async with connect(relay.url) as three:
                msg = decode(await asyncio.wait_for(three.recv(), 5), max_bytes=1 << 16,
                             max_entries=1)
                assert isinstance(msg, Close) and msg.code == CloseCode.OVERLOADED
                assert "address 127.0.0.1 has 2 connections" in msg.reason
            for ws in (one, two):  # they said nothing: the handshake timeout ends them
                msg = decode(await asyncio.wait_for(ws.recv(), 5), max_bytes=1 << 16,
                             max_entries=1)
                assert isinstance(msg, Close) and msg.code == CloseCode.PROTOCOL
        async with connect(relay.url) as ws:  # says nothing
            data = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(data, bytes)
            msg = decode(data, max_bytes=1 << 16, max_entries=1)
            assert isinstance(msg, Close) and msg.code == CloseCode.PROTOCOL
            assert "no handshake within 0.5 seconds" in msg.reason
        c = await connected(relay.url, device_client(net, net.mint))
        assert c.ws is not None
        for _ in range(20):
            with contextlib.suppress(ConnectionClosed):
                await c.ws.send(b"\x0b\x00\x00")  # an empty Cursor
        await c.wait(lambda: c.closed is not None, what="the rate limit")
        assert c.closed is not None and c.closed.code == CloseCode.RATE_LIMITED
        assert "address 127.0.0.1" in c.closed.reason
        await c.close()

    run(go())
    assert relay.metric('tally_relay_refusals_total{reason="rate_limited"}') == 1
    assert relay.metric('tally_relay_refusals_total{reason="protocol"}') == 3
    assert relay.metric('tally_relay_refusals_total{reason="overloaded"}') == 1
    assert relay.stop() == 0


# ------------------------------------------------------------ in-process: store, buckets
def test_store_quota_refuses_a_batch_whole_and_claims_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="tally-relay migrate"):
        SqliteRelayStore(tmp_path / "none.db")
    net = Net(witnesses=0)
    s = SqliteRelayStore(tmp_path / "s.db", create=True)
    n, d = net.id, b"d" * 32
    s.add_network(net.genesis.raw, n)
    ledger = Ledger(net.genesis, s.tables(n))
    opens = [net.account(label=f"x{i}")[0].open for i in range(6)]
    day1, day2 = "2026-01-01", "2026-01-02"
    with s.writing(n, {d: 3}, day=day1, quota=4):
        ledger.add(opens[:3])
    with pytest.raises(QuotaExceeded, match="quota of 4"), s.writing(n, {d: 2}, day=day1,
                                                                     quota=4):
        ledger.add(opens[3:5])  # never runs: the charge is refused first
    assert s.count(n) == 3 and opens[3].id not in ledger
    with s.writing(n, {d: 2}, day=day2, quota=4):  # a new day
        ledger.add(opens[3:5])
    assert s.count(n) == 5
    with pytest.raises(RuntimeError), s.writing(n, {d: 2}, day=day2, quota=4):
        raise RuntimeError("the body failed")  # its charge is undone with it
    with s.writing(n, {d: 2}, day=day2, quota=4):  # so 2 + 2 still fit
        pass
    pos = s.high_water(n)
    with s.writing(n, {}, day=day2, quota=0):  # a vote's write charges no device
        ledger.add(opens[5:])
    assert [b for chunk in s.bodies_after(n, pos) for b in chunk] == [opens[5].raw]
    with s.writing(n, {}, day=day2, quota=None):  # idempotent by id
        ledger.add(opens[:1])
    assert s.count(n) == 6 == len(ledger)
    assert s.claim(n, d, [(0, b"a" * 32), (1, b"b" * 32)])
    assert not s.claim(n, d, [(1, b"x" * 32), (2, b"c" * 32)])  # 1 is taken: none claimed
    assert s.last(n, d) == (1, b"b" * 32)
    assert s.claim(n, d, [(1, b"b" * 32), (2, b"c" * 32)])
    assert s.unvoted_claims(n, b"w" * 32) == [(d, 2, b"c" * 32)]
    sid, high = s.store_id(n), s.high_water(n)
    s.close()
    again = SqliteRelayStore(tmp_path / "s.db")  # reopened: the same ledger, read lazily
    assert again.genesis_records() == [net.genesis.raw]
    assert (again.store_id(n), again.high_water(n), again.count(n)) == (sid, high, 6)
    reopened = Ledger(net.genesis, again.tables(n))
    assert all(reopened.status[o.id] == ledger.status[o.id] for o in opens)
    again.close()


def test_a_group_commit_is_durable_at_once_and_a_refusal_undoes_only_its_own_writes(
    tmp_path: Path,
) -> None:
    net = Net(witnesses=0)
    s = SqliteRelayStore(tmp_path / "g.db", create=True)
    n, d, day = net.id, b"d" * 32, "2026-01-01"
    s.add_network(net.genesis.raw, n)
    ledger = Ledger(net.genesis, s.tables(n))
    opens = [net.account(label=f"x{i}")[0].open for i in range(6)]
    with s.writing(n, {d: 1}, day=day, quota=3):
        ledger.add(opens[:1])
    durable = s.high_water(n)
    s.begin_group()
    with s.writing(n, {d: 2}, day=day, quota=3):
        ledger.add(opens[1:3])
    # visible to catch-up at once, but no cursor may name it before the commit
    assert s.high_water(n) == durable
    assert [b for c in s.bodies_after(n, durable) for b in c] == [o.raw for o in opens[1:3]]
    with pytest.raises(QuotaExceeded), s.writing(n, {d: 2}, day=day, quota=3):
        ledger.add(opens[3:5])  # over the quota: this batch only is undone
    assert s.count(n) == 3 and s.in_group
    other = sqlite3.connect(network_path(tmp_path / "g.db", n))  # a reader of what is durable
    main = sqlite3.connect(tmp_path / "g.db")
    assert other.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
    s.set_meta("peer_cursor:x", b"c1")  # a peer's cursor joins the group, committed last
    assert main.execute("SELECT count(*) FROM meta WHERE key = 'peer_cursor:x'"
                        ).fetchone()[0] == 0
    s.commit_group()
    assert other.execute("SELECT count(*) FROM entries").fetchone()[0] == 3
    assert main.execute("SELECT value FROM meta WHERE key = 'peer_cursor:x'"
                        ).fetchone()[0] == b"c1"
    assert s.high_water(n) == durable + 2 and not s.in_group
    # a claim is its own durable transaction: it commits an open group first
    s.begin_group()
    with s.writing(n, {d: 1}, day="2026-01-02", quota=3):
        ledger.add(opens[5:])
    assert s.claim(n, d, [(0, b"a" * 32)])
    assert other.execute("SELECT count(*) FROM entries").fetchone()[0] == 4
    assert other.execute("SELECT count(*) FROM claims").fetchone()[0] == 1
    assert s.high_water(n) == durable + 3
    other.close()
    main.close()
    s.close()


def test_token_bucket() -> None:
    now = [0.0]
    b = TokenBucket(2, 3, clock=lambda: now[0])
    assert all(b.take() for _ in range(3)) and not b.take()
    now[0] += 1.0
    assert b.take() and b.take() and not b.take()
    now[0] += 10
    assert b.full


def test_a_vote_claimed_before_a_crash_is_signed_again_identically(tmp_path: Path) -> None:
    net = Net(witnesses=1)
    alice = net.account(label="alice")
    store = SqliteRelayStore(tmp_path / "w.db", create=True)
    served = ServedNetwork(store, net.genesis, telemetry=Telemetry(io.StringIO()),
                           witness_key=net.witness_keys[0])
    led = net.ledger()
    iss = net.issue(led, alice[0], 10)
    served.add_local([*net.opens, iss])
    # the crash: the slots are claimed, the vote never reached the store
    chain = served.ledger.chain(net.mint.pk)
    assert store.claim(net.id, net.mint.pk, [(s, chain[s]) for s in range(len(chain))])
    voted = served.vote_now()  # the other devices' opens are voted; the mint's slots
    assert voted and all(v.device != net.mint.pk for v in voted)  # are claimed: bound
    again = ServedNetwork(store, net.genesis, telemetry=Telemetry(io.StringIO()),
                          witness_key=net.witness_keys[0])
    (vote,) = again.recover_votes()
    assert vote.raw == net.vote(iss).raw  # the very vote that would have left
    assert again.ledger.status[iss.id].final
    assert again.recover_votes() == []
    store.close()


class _StuckSocket:
    """A websocket whose peer stops reading once ``stuck``: every send then hangs."""

    remote_address = ("192.0.2.7", 40000)

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.stuck = False

    async def send(self, data: bytes) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.sent.append(data)

    async def close(self, *args: object) -> None:
        return None


async def _session_with_mint(relay: RelayServer, net: Net, port: MemoryPort
                             ) -> tuple[Session, _StuckSocket, SyncConnection]:
    """A relay session over a socket in memory, and the mint's connection at its other
    end, their handshake done through the session's writer."""
    sock = _StuckSocket()
    session = Session(relay, sock)  # type: ignore[arg-type]
    client = SyncConnection(client=True, key=net.mint.key, role=ROLE_DEVICE, port=port,
                            open_entry=net.mint.open.raw)
    client.initiate()
    for _ in range(4):
        for m in client.data_to_send():
            session.receive(m)
        for _ in range(3):
            await asyncio.sleep(0)
        while sock.sent:
            client.receive_data(sock.sent.pop(0))
    return session, sock, client


def test_a_subscriber_that_does_not_read_is_closed_overloaded(tmp_path: Path) -> None:
    net = Net(witnesses=0)
    store = SqliteRelayStore(tmp_path / "q.db", create=True)
    config = RelayConfig("127.0.0.1", 0, SigningKey.generate(), genesis=[net.genesis],
                         limits=Limits(queue_entries_max=5))
    relay = RelayServer(config, store, Telemetry(io.StringIO()))

    async def go() -> None:
        slow, sock, client = await _session_with_mint(relay, net, MemoryPort(net.ledger()))
        assert slow.conn.live and client.live
        sock.stuck = True  # the peer stops reading
        served = relay.networks[net.id]
        for i in range(10):
            served.add_local([net.account(label=f"x{i}")[0].open])
            await asyncio.sleep(0)
            if slow.ended:
                break
        assert slow.ended and slow.close_code == CloseCode.OVERLOADED
        assert "reads too slowly" in slow.close_reason
        assert slow not in served.subscribers
        slow.writer.cancel()

    run(go())
    assert relay.telemetry.get("tally_relay_refusals_total", reason="overloaded") == 1
    store.close()


class _GatedSocket:
    """A websocket whose sends wait while ``gate`` is clear (a peer not reading)."""

    remote_address = ("192.0.2.8", 40001)

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, data: bytes) -> None:
        await self.gate.wait()
        self.sent.append(data)

    async def close(self, *args: object) -> None:
        return None


def test_a_cold_catch_up_is_read_from_the_store_as_the_socket_takes_it(
    tmp_path: Path,
) -> None:
    net = Net(witnesses=0)
    store = SqliteRelayStore(tmp_path / "c.db", create=True)
    window = 8 << 10
    config = RelayConfig("127.0.0.1", 0, SigningKey.generate(), genesis=[net.genesis],
                         limits=Limits(catch_up_window_bytes=window, message_bytes_max=64 << 10))
    relay = RelayServer(config, store, Telemetry(io.StringIO()))
    served = relay.networks[net.id]
    served.add_local([net.account(label=f"x{i}")[0].open for i in range(400)])
    held = store.count(net.id)
    port = MemoryPort(net.ledger(opens=False))

    async def go() -> None:
        sock = _GatedSocket()
        session = Session(relay, sock)  # type: ignore[arg-type]
        client = SyncConnection(client=True, key=net.mint.key, role=ROLE_DEVICE, port=port,
                                open_entry=net.mint.open.raw, max_message_bytes=64 << 10)
        client.initiate()
        stalled = saw_stream = False
        for _ in range(200):
            for m in client.data_to_send():
                if m[0] == 3 and not stalled:  # the Want: the peer stops reading now
                    sock.gate.clear()
                    stalled = True
                session.receive(m)
            for _ in range(3):
                await asyncio.sleep(0)
            if stalled and not sock.gate.is_set():
                assert session.conn.streaming, "the catch-up was read whole"
                saw_stream = True
                queued = sum(map(len, session.outbox._messages))
                assert queued <= window + (32 << 10), f"{queued} bytes queued, stalled"
                sock.gate.set()  # it reads again
            while sock.sent:
                client.receive_data(sock.sent.pop(0))
            if any(isinstance(e, InSync) for e in client.events_received()):
                break
        assert saw_stream and port.count() == held
        await session.finish(1)

    run(go())
    store.close()


def test_fan_out_piles_up_into_one_update_then_one_cursor(tmp_path: Path) -> None:
    net = Net(witnesses=0)
    store = SqliteRelayStore(tmp_path / "f.db", create=True)
    config = RelayConfig("127.0.0.1", 0, SigningKey.generate(), genesis=[net.genesis])
    relay = RelayServer(config, store, Telemetry(io.StringIO()))
    port = MemoryPort(net.ledger())

    async def go() -> None:
        sub, sock, client = await _session_with_mint(relay, net, port)
        assert client.live
        served = relay.networks[net.id]
        opens = [net.account(label=f"x{i}")[0].open for i in range(5)]
        for o in opens:  # stored one by one, with no turn for the writer in between
            served.add_local([o])
        for _ in range(5):
            await asyncio.sleep(0)
        assert [m[0] for m in sock.sent] == [6, 11], "one Update, then one Cursor"
        client.events_received()
        for m in sock.sent:
            client.receive_data(m)
        assert all(o.id in port.replica.ledger for o in opens)
        (last,) = [e for e in client.events_received() if isinstance(e, CursorReceived)]
        assert last.cursor == served.port.cursor()
        await sub.finish(1)

    run(go())
    store.close()


def test_the_quota_counts_each_device_but_the_issuers(tmp_path: Path) -> None:
    net = Net(witnesses=0)
    alice, bob = net.account(label="alice"), net.account(label="bob")
    store = SqliteRelayStore(tmp_path / "q.db", create=True)
    served = ServedNetwork(store, net.genesis, telemetry=Telemetry(io.StringIO()),
                           quota_per_day=3)
    led = net.ledger()
    issues = []
    for i in range(5):  # the mint: over 3 a day, and no quota applies
        issues.append(net.issue(led, alice[0], 10 + i))
        led.add(issues[-1:])
    assert len(served.replica.add_raw([e.raw for e in [*net.opens, *issues]])) == 8
    blocks = []
    for iss in issues[:4]:  # alice: her open and 2 receives fit; 2 more go over
        blocks.append(net.receive(led, alice[0], iss))
        led.add(blocks[-1:])
    assert len(served.replica.add_raw([b.raw for b in blocks[:2]])) == 2
    before = store.count(net.id)
    with pytest.raises(QuotaExceeded, match="quota of 3 entries a day"):
        served.replica.add_raw([b.raw for b in blocks[2:]])
    assert store.count(net.id) == before and blocks[2].id not in served.ledger
    assert isinstance(served.refusal, QuotaExceeded)
    assert served.refusal.device == alice[0].pk and bob[0].pk not in served.issuing
    store.close()
